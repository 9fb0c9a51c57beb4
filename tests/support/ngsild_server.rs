//! An NGSI-LD test broker: no Orion-LD or Stellio can run here, so this axum server on
//! 127.0.0.1 behaves like them in what twinrt relies on, and rejects what they reject.
//!
//! - `POST /ngsi-ld/v1/entityOperations/upsert`: 415 unless the content type is
//!   `application/json` or `application/ld+json`; with `application/json` a JSON-LD `Link`
//!   context header is required (stricter than the spec, which falls back to the core
//!   context: twinrt always sends one) and `@context` in a body is a 400; with
//!   `application/ld+json` every entity needs `@context` and a `Link` header is a 400 (no
//!   mixing, clause 6.3.5). A body that is not a non-empty JSON array: 400 ProblemDetails.
//!   Per entity: an id that is not a URI, a missing type, an id already seen in the request,
//!   an attribute that is not an NGSI-LD attribute (a bare keyValues value, a Property
//!   without `value`, a GeoProperty without GeoJSON, a bad `observedAt`), or a type refused
//!   with [`NgsiLdServer::reject_type`]: an error entry. Answers 201 with the created ids if
//!   all went through and some were new, 204 if all existed, 207 with a
//!   BatchOperationResult otherwise.
//! - `GET /ngsi-ld/v1/entities/{id}`, `GET /ngsi-ld/v1/types` (404 for an unknown tenant,
//!   like Orion-LD).
//! - Faults: [`NgsiLdServer::fail_next`] answers the next N requests with 500;
//!   [`NgsiLdServer::stop`] / [`NgsiLdServer::restart`] stop and resume listening on the
//!   same port (connections are closed).
//! - Records every request and, per entity id, every upsert that stored it (tenant, `seq`,
//!   `observedAt`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The `rel` of a JSON-LD context `Link` header.
pub const JSONLD_CONTEXT_REL: &str = "http://www.w3.org/ns/json-ld#context";
/// NGSI-LD problem types (clause 5.5.2).
pub const BAD_REQUEST_DATA: &str = "https://uri.etsi.org/ngsi-ld/errors/BadRequestData";
pub const INVALID_REQUEST: &str = "https://uri.etsi.org/ngsi-ld/errors/InvalidRequest";
pub const RESOURCE_NOT_FOUND: &str = "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound";
pub const INTERNAL_ERROR: &str = "https://uri.etsi.org/ngsi-ld/errors/InternalError";

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Header names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON (None if empty or not JSON).
    pub body: Option<Value>,
    pub status: u16,
    pub response: Option<Value>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

/// One successful upsert of one entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Upsert {
    pub tenant: Option<String>,
    pub entity_type: String,
    /// The `seq` Property's value, if any.
    pub seq: Option<u64>,
    /// The `observedAt` of the `seq` Property, if any.
    pub observed_at: Option<String>,
}

#[derive(Default)]
struct Inner {
    requests: Vec<RecordedRequest>,
    /// (tenant, entity id) -> the stored entity (normalized, without @context).
    entities: BTreeMap<(String, String), Value>,
    upserts: HashMap<String, Vec<Upsert>>,
    reject_type: Option<String>,
}

#[derive(Default)]
struct Shared {
    inner: Mutex<Inner>,
    fail_next: AtomicU32,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// The test broker. Stops on drop.
pub struct NgsiLdServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    running: Mutex<Option<Running>>,
}

pub fn problem(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Value {
    json!({"type": kind, "title": title, "status": status.as_u16(), "detail": detail.into()})
}

fn reply(status: StatusCode, body: Option<&Value>, tenant: Option<&str>) -> Response {
    let mut headers = HeaderMap::new();
    if let Some(t) = tenant.and_then(|t| t.parse().ok()) {
        headers.insert("NGSILD-Tenant", t);
    }
    match body {
        Some(b) => {
            headers.insert("content-type", axum::http::HeaderValue::from_static("application/json"));
            (status, headers, b.to_string()).into_response()
        }
        None => (status, headers).into_response(),
    }
}

/// Is `s` an absolute URI (`scheme:rest`, RFC 3986 scheme)?
pub fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else { return false };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
}

/// The context URI of a JSON-LD `Link` header, or why it is not one.
pub fn parse_link_context(link: &str) -> Result<String, String> {
    let link = link.trim();
    let rest = link.strip_prefix('<').ok_or("a Link header starts with <URI>")?;
    let (uri, params) = rest.split_once('>').ok_or("unclosed <URI> in the Link header")?;
    if !(uri.starts_with("http://") || uri.starts_with("https://")) || !is_uri(uri) {
        return Err(format!("the Link context {uri:?} is not an http(s) URI"));
    }
    let mut rel_ok = false;
    for p in params.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = p.split_once('=').ok_or_else(|| format!("bad Link parameter {p:?}"))?;
        let v = v.trim().trim_matches('"');
        match k.trim() {
            "rel" => rel_ok = v == JSONLD_CONTEXT_REL,
            "type" if v != "application/ld+json" => {
                return Err(format!("Link type must be application/ld+json, not {v:?}"))
            }
            _ => {}
        }
    }
    if !rel_ok {
        return Err(format!("the Link header's rel must be \"{JSONLD_CONTEXT_REL}\""));
    }
    Ok(uri.to_string())
}

fn is_date_time(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

/// Why an attribute is not a valid NGSI-LD attribute (None if it is).
fn attribute_problem(name: &str, attr: &Value) -> Option<String> {
    if let Value::Array(items) = attr {
        if items.is_empty() {
            return Some(format!("attribute {name}: empty array"));
        }
        return items.iter().find_map(|a| attribute_problem(name, a));
    }
    let Some(o) = attr.as_object() else {
        return Some(format!(
            "attribute {name}: {attr} is not an NGSI-LD attribute (keyValues form is not accepted here)"
        ));
    };
    let kind = o.get("type").and_then(Value::as_str);
    let value = o.get("value").filter(|v| !v.is_null());
    match kind {
        Some("Property") if value.is_none() => return Some(format!("attribute {name}: a Property needs a value")),
        Some("GeoProperty") => {
            let geo = value.and_then(Value::as_object);
            let ok = geo.is_some_and(|g| {
                g.get("type").is_some_and(Value::is_string) && g.get("coordinates").is_some_and(Value::is_array)
            });
            if !ok {
                return Some(format!("attribute {name}: a GeoProperty needs a GeoJSON geometry value"));
            }
        }
        Some("Relationship") if !o.get("object").is_some_and(|v| v.as_str().is_some_and(is_uri)) => {
            return Some(format!("attribute {name}: a Relationship needs an object URI"))
        }
        Some("Property" | "Relationship") => {}
        Some("LanguageProperty" | "VocabProperty" | "JsonProperty" | "ListProperty" | "ListRelationship") => {}
        Some(other) => return Some(format!("attribute {name}: unknown attribute type {other:?}")),
        None => return Some(format!("attribute {name}: no type")),
    }
    if let Some(at) = o.get("observedAt") {
        if !at.as_str().is_some_and(is_date_time) {
            return Some(format!("attribute {name}: observedAt {at} is not a date-time"));
        }
    }
    if let Some(u) = o.get("unitCode") {
        if !u.is_string() {
            return Some(format!("attribute {name}: unitCode must be a string"));
        }
    }
    None
}

/// Why an entity cannot be upserted (None if it can).
fn entity_problem(e: &Map<String, Value>, ld_json: bool, rejected_type: Option<&str>) -> Option<String> {
    let id = e.get("id").and_then(Value::as_str);
    if !id.is_some_and(is_uri) {
        return Some("the entity id must be a URI".into());
    }
    let ty = match e.get("type") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        Some(Value::Array(ts)) if !ts.is_empty() && ts.iter().all(|t| t.as_str().is_some_and(|s| !s.is_empty())) => {
            ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")
        }
        _ => return Some("the entity has no valid type".into()),
    };
    match (ld_json, e.get("@context")) {
        (true, None) => return Some("application/ld+json: @context missing in the entity".into()),
        (false, Some(_)) => {
            return Some("application/json: @context must come in the Link header, not the body".into())
        }
        _ => {}
    }
    if rejected_type == Some(ty.as_str()) {
        return Some(format!("entities of type {ty} are refused (test switch)"));
    }
    e.iter()
        .filter(|(k, _)| !matches!(k.as_str(), "id" | "type" | "@context" | "scope"))
        .find_map(|(k, v)| attribute_problem(k, v))
}

/// The keyValues (simplified) form of a stored normalized entity.
pub fn key_values(entity: &Value) -> Value {
    let Some(o) = entity.as_object() else { return entity.clone() };
    let mut out = Map::new();
    for (k, v) in o {
        let simple = match (k.as_str(), v) {
            ("id" | "type" | "@context" | "scope", _) => v.clone(),
            (_, Value::Object(a)) => match a.get("type").and_then(Value::as_str) {
                Some("Relationship") => a.get("object").cloned().unwrap_or(Value::Null),
                _ => match a.get("value") {
                    Some(Value::Object(d)) if d.get("@type").is_some() => {
                        d.get("@value").cloned().unwrap_or(Value::Null)
                    }
                    Some(val) => val.clone(),
                    None => Value::Null,
                },
            },
            _ => v.clone(),
        };
        out.insert(k.clone(), simple);
    }
    Value::Object(out)
}

struct Req {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Req {
    fn tenant(&self) -> Option<String> {
        self.headers.get("ngsild-tenant").and_then(|v| v.to_str().ok()).map(str::to_string)
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
}

impl Shared {
    fn record(&self, req: &Req, status: StatusCode, response: Option<&Value>) {
        let headers = req
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let rec = RecordedRequest {
            method: req.method.to_string(),
            path: req.uri.path().to_string(),
            query: req.uri.query().map(str::to_string),
            headers,
            body: serde_json::from_slice(&req.body).ok(),
            status: status.as_u16(),
            response: response.cloned(),
        };
        self.lock().requests.push(rec);
    }

    /// Answer, recording the exchange.
    fn answer(&self, req: &Req, status: StatusCode, body: Option<Value>) -> Response {
        self.record(req, status, body.as_ref());
        reply(status, body.as_ref(), req.tenant().as_deref())
    }

    /// The injected 500, if one is due.
    fn fault(&self, req: &Req) -> Option<Response> {
        let due = self.fail_next.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok();
        due.then(|| {
            let s = StatusCode::INTERNAL_SERVER_ERROR;
            self.answer(req, s, Some(problem(s, INTERNAL_ERROR, "Internal error", "fault injected by the test")))
        })
    }

    fn upsert(&self, req: Req) -> Response {
        if let Some(r) = self.fault(&req) {
            return r;
        }
        let bad = StatusCode::BAD_REQUEST;
        let ctype = req.header("content-type").unwrap_or_default();
        let media = ctype.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        let ld_json = match media.as_str() {
            "application/json" => false,
            "application/ld+json" => true,
            _ => {
                let s = StatusCode::UNSUPPORTED_MEDIA_TYPE;
                let detail = format!("unsupported content type {ctype:?}: use application/json or application/ld+json");
                return self.answer(&req, s, Some(problem(s, INVALID_REQUEST, "Unsupported Media Type", detail)));
            }
        };
        if let Some(accept) = req.header("accept") {
            let ok = accept.split(',').any(|a| {
                let a = a.split(';').next().unwrap_or_default().trim();
                matches!(a, "application/json" | "application/ld+json" | "application/*" | "*/*")
            });
            if !ok {
                let s = StatusCode::NOT_ACCEPTABLE;
                let detail = format!("cannot answer in {accept:?}");
                return self.answer(&req, s, Some(problem(s, INVALID_REQUEST, "Not Acceptable", detail)));
            }
        }
        let links: Vec<String> =
            req.headers.get_all("link").iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect();
        let context_problem = match (ld_json, links.as_slice()) {
            (true, []) => None,
            (true, _) => {
                Some("application/ld+json with a Link header: give the @context in one place only".to_string())
            }
            (false, []) => Some("application/json without a JSON-LD Link context header".to_string()),
            (false, [one]) => parse_link_context(one).err(),
            (false, _) => Some("more than one Link context header".to_string()),
        };
        if let Some(detail) = context_problem {
            return self.answer(&req, bad, Some(problem(bad, BAD_REQUEST_DATA, "Bad Request", detail)));
        }
        let doc: Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => {
                let detail = format!("the payload is not JSON: {e}");
                return self.answer(&req, bad, Some(problem(bad, INVALID_REQUEST, "Invalid Request", detail)));
            }
        };
        let entities = match doc.as_array() {
            Some(a) if !a.is_empty() => a,
            Some(_) => {
                return self.answer(&req, bad, Some(problem(bad, BAD_REQUEST_DATA, "Bad Request", "empty array")))
            }
            None => {
                let detail = "the payload of a batch upsert must be a JSON array of entities";
                return self.answer(&req, bad, Some(problem(bad, BAD_REQUEST_DATA, "Bad Request", detail)));
            }
        };
        let tenant = req.tenant();
        let tenant_key = tenant.clone().unwrap_or_default();
        let mut success = Vec::new();
        let mut created = Vec::new();
        let mut errors = Vec::new();
        let mut seen = BTreeSet::new();
        {
            let mut inner = self.lock();
            let rejected = inner.reject_type.clone();
            for (i, e) in entities.iter().enumerate() {
                let id = e.get("id").and_then(Value::as_str).filter(|s| is_uri(s)).map(str::to_string);
                let problem_text = match e.as_object() {
                    None => Some("an entity must be a JSON object".to_string()),
                    Some(o) => entity_problem(o, ld_json, rejected.as_deref()),
                }
                .or_else(|| {
                    let id = id.clone().unwrap_or_default();
                    (!seen.insert(id.clone())).then(|| format!("entity {id} appears twice in the batch"))
                });
                if let Some(detail) = problem_text {
                    let entity_id = id.unwrap_or_else(|| format!("urn:ngsi-ld:InvalidEntity:{i}"));
                    errors.push(
                        json!({"entityId": entity_id, "error": problem(bad, BAD_REQUEST_DATA, "Bad Request", detail)}),
                    );
                    continue;
                }
                let Some(id) = id else { continue };
                let mut stored = e.clone();
                if let Some(o) = stored.as_object_mut() {
                    o.remove("@context");
                }
                let ty = match &stored["type"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let up = Upsert {
                    tenant: tenant.clone(),
                    entity_type: ty,
                    seq: stored.get("seq").and_then(|s| s.get("value")).and_then(Value::as_u64),
                    observed_at: stored
                        .get("seq")
                        .and_then(|s| s.get("observedAt"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                };
                if inner.entities.insert((tenant_key.clone(), id.clone()), stored).is_none() {
                    created.push(id.clone());
                }
                inner.upserts.entry(id.clone()).or_default().push(up);
                success.push(id);
            }
        }
        if !errors.is_empty() {
            let body = json!({"success": success, "errors": errors});
            self.answer(&req, StatusCode::MULTI_STATUS, Some(body))
        } else if !created.is_empty() {
            self.answer(&req, StatusCode::CREATED, Some(json!(created)))
        } else {
            self.answer(&req, StatusCode::NO_CONTENT, None)
        }
    }

    fn tenant_known(&self, tenant: &Option<String>) -> bool {
        match tenant {
            None => true,
            Some(t) => self.lock().entities.keys().any(|(k, _)| k == t),
        }
    }

    fn unknown_tenant(&self, req: &Req) -> Option<Response> {
        let tenant = req.tenant();
        (!self.tenant_known(&tenant)).then(|| {
            let s = StatusCode::NOT_FOUND;
            let detail = format!("tenant {:?} does not exist", tenant.unwrap_or_default());
            self.answer(req, s, Some(problem(s, RESOURCE_NOT_FOUND, "Tenant not found", detail)))
        })
    }

    fn entity(&self, req: Req, id: String) -> Response {
        if let Some(r) = self.fault(&req).or_else(|| self.unknown_tenant(&req)) {
            return r;
        }
        let found = self.lock().entities.get(&(req.tenant().unwrap_or_default(), id.clone())).cloned();
        match found {
            Some(e) => self.answer(&req, StatusCode::OK, Some(e)),
            None => {
                let s = StatusCode::NOT_FOUND;
                self.answer(
                    &req,
                    s,
                    Some(problem(s, RESOURCE_NOT_FOUND, "Entity not found", format!("no entity {id}"))),
                )
            }
        }
    }

    fn types(&self, req: Req) -> Response {
        if let Some(r) = self.fault(&req).or_else(|| self.unknown_tenant(&req)) {
            return r;
        }
        let tenant = req.tenant().unwrap_or_default();
        let types: BTreeSet<String> = self
            .lock()
            .entities
            .iter()
            .filter(|((t, _), _)| *t == tenant)
            .filter_map(|(_, e)| e.get("type").and_then(Value::as_str).map(str::to_string))
            .collect();
        let body = json!({"id": "urn:ngsi-ld:EntityTypeList:twinrt-test", "type": "EntityTypeList", "typeList": types});
        self.answer(&req, StatusCode::OK, Some(body))
    }

    fn not_found(&self, req: Req) -> Response {
        let s = StatusCode::NOT_FOUND;
        let detail = format!("no such resource: {} {}", req.method, req.uri.path());
        self.answer(&req, s, Some(problem(s, RESOURCE_NOT_FOUND, "Not Found", detail)))
    }
}

fn app(shared: Arc<Shared>) -> Router {
    async fn upsert(
        State(s): State<Arc<Shared>>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        s.upsert(Req { method, uri, headers, body })
    }
    async fn entity(
        State(s): State<Arc<Shared>>,
        Path(id): Path<String>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
    ) -> Response {
        s.entity(Req { method, uri, headers, body: Bytes::new() }, id)
    }
    async fn types(State(s): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
        s.types(Req { method, uri, headers, body: Bytes::new() })
    }
    async fn fallback(
        State(s): State<Arc<Shared>>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        s.not_found(Req { method, uri, headers, body })
    }
    Router::new()
        .route("/ngsi-ld/v1/entityOperations/upsert", post(upsert))
        .route("/ngsi-ld/v1/entities/{id}", get(entity))
        .route("/ngsi-ld/v1/types", get(types))
        .fallback(fallback)
        .with_state(shared)
}

fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) -> Running {
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app(shared))
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Running { stop, task }
}

impl NgsiLdServer {
    /// Starts on a free port of 127.0.0.1 (inside a tokio runtime).
    pub async fn start() -> NgsiLdServer {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind 127.0.0.1:0 for the NGSI-LD test server");
        let addr = listener.local_addr().expect("local_addr of the NGSI-LD test server");
        let shared = Arc::new(Shared::default());
        let running = serve(listener, shared.clone());
        NgsiLdServer { addr, shared, running: Mutex::new(Some(running)) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (the base URL a sink is configured with).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answer the next `n` requests (any endpoint) with 500.
    pub fn fail_next(&self, n: u32) {
        self.shared.fail_next.store(n, Ordering::Release);
    }

    /// How many injected 500s are still to come.
    pub fn failures_pending(&self) -> u32 {
        self.shared.fail_next.load(Ordering::Acquire)
    }

    /// Refuse (per entity, in a 207) every entity of this type; None accepts all again.
    pub fn reject_type(&self, entity_type: Option<&str>) {
        self.shared.lock().reject_type = entity_type.map(str::to_string);
    }

    /// Stop listening and close every connection (the port refuses connections until
    /// [`NgsiLdServer::restart`]). Recorded state is kept.
    pub async fn stop(&self) {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(Running { stop, mut task }) = running {
            let _ = stop.send(());
            if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
                task.abort();
            }
        }
    }

    /// Listen again on the same port.
    pub async fn restart(&self) {
        self.stop().await;
        let mut last = None;
        for _ in 0..100 {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => {
                    *self.running.lock().unwrap_or_else(|p| p.into_inner()) = Some(serve(l, self.shared.clone()));
                    return;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(super::POLL_INTERVAL).await;
        }
        panic!("cannot listen again on {}: {last:?}", self.addr);
    }

    pub fn is_listening(&self) -> bool {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The upserts that stored entity `id`, in order.
    pub fn upserts(&self, id: &str) -> Vec<Upsert> {
        self.shared.lock().upserts.get(id).cloned().unwrap_or_default()
    }

    /// Total number of entity upserts stored.
    pub fn upsert_count(&self) -> usize {
        self.shared.lock().upserts.values().map(Vec::len).sum()
    }

    /// The stored entity (normalized, without @context).
    pub fn entity(&self, tenant: Option<&str>, id: &str) -> Option<Value> {
        self.shared.lock().entities.get(&(tenant.unwrap_or_default().to_string(), id.to_string())).cloned()
    }

    /// Every stored entity of a tenant.
    pub fn entities(&self, tenant: Option<&str>) -> Vec<Value> {
        let t = tenant.unwrap_or_default();
        self.shared.lock().entities.iter().filter(|((k, _), _)| k == t).map(|(_, e)| e.clone()).collect()
    }
}

impl Drop for NgsiLdServer {
    fn drop(&mut self) {
        if let Some(Running { stop, task }) = self.running.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(());
            task.abort();
        }
    }
}
