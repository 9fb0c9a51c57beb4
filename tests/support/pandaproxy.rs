//! A Redpanda HTTP Proxy (Pandaproxy) test server, following the Pandaproxy API document
//! (`shared/specs/redpanda-pandaproxy/pandaproxy-swagger2.assembled.json`, Kafka REST v2):
//! produce (`POST /topics/{topic}`), consumer groups (create, subscribe, fetch, commit,
//! delete), topic and broker listings, partition reads, readiness.
//!
//! Rules it enforces, as Pandaproxy does: request bodies must carry the operation's
//! content type (415 otherwise), `Accept` must admit what it answers (406), unknown
//! topics, groups and consumer instances are 404, bad JSON is 400, bad embedded data
//! (base64) is 422; every error body is `{"error_code", "message"}` (error codes in
//! Pandaproxy's style: 40401 topic, 40403 consumer instance, 40601, 41501, 42201...).
//!
//! State (topics' logs, groups' committed offsets, instances, the request log) lives in
//! memory across [`Pandaproxy::stop`] / [`Pandaproxy::start_again`] on the same port, as a
//! proxy in front of a cluster that stays up. Each topic has `partitions` partitions; a
//! keyed record goes to a partition by a hash of its key, in order. Instances of a group
//! each read from their own positions, starting at the group's committed offsets (no
//! rebalancing: tests run one consumer at a time).

// Handlers answer errors as ready-made responses.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

pub const KAFKA_V2: &str = "application/vnd.kafka.v2+json";
pub const BINARY_V2: &str = "application/vnd.kafka.binary.v2+json";
pub const JSON_V2: &str = "application/vnd.kafka.json.v2+json";

/// Every route served: (method, path as the API document writes it).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/brokers"),
    ("GET", "/topics"),
    ("POST", "/topics/{topic_name}"),
    ("GET", "/topics/{topic_name}/partitions/{partition_id}/records"),
    ("POST", "/consumers/{group_name}"),
    ("DELETE", "/consumers/{group_name}/instances/{instance}"),
    ("POST", "/consumers/{group_name}/instances/{instance}/subscription"),
    ("GET", "/consumers/{group_name}/instances/{instance}/records"),
    ("POST", "/consumers/{group_name}/instances/{instance}/offsets"),
    ("GET", "/consumers/{group_name}/instances/{instance}/offsets"),
    ("GET", "/status/ready"),
];

/// The sensor types: the topics that exist from the start.
pub const TOPICS: &[&str] = &["traffic", "air-quality", "parking", "noise", "weather", "light"];

/// What a record holds. `Wire` is served verbatim as the `value` string of a fetch (for
/// injecting values that are not even base64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value64 {
    Bytes(Vec<u8>),
    Wire(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Value64,
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct RequestLog {
    pub method: String,
    /// The route it matched (as in [`ROUTES`]), `None` when none did (or the route is
    /// missing from [`ROUTES`]: the document test then fails).
    pub route: Option<String>,
    pub uri: String,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    pub status: u16,
    /// The answer's body when it was JSON (for checks against the API document).
    pub response: Option<Value>,
}

#[derive(Debug, Default)]
struct Instance {
    format: String,
    latest: bool,
    auto_commit: bool,
    topics: Vec<String>,
    positions: BTreeMap<(String, i32), i64>,
}

#[derive(Debug, Default)]
struct Group {
    committed: BTreeMap<(String, i32), i64>,
    instances: BTreeMap<String, Instance>,
}

#[derive(Debug, Default)]
struct Inner {
    partitions: i32,
    logs: BTreeMap<String, Vec<Vec<StoredRecord>>>,
    groups: BTreeMap<String, Group>,
    next_instance: u64,
    requests: Vec<RequestLog>,
    /// Records with this key are refused individually: (key, Kafka error code).
    refuse_key: Option<(Vec<u8>, i64)>,
    round_robin: u64,
    /// Woken on every append, for long-polling fetches.
    appended: Arc<tokio::sync::Notify>,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(s: &Shared) -> MutexGuard<'_, Inner> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Pandaproxy {
    port: u16,
    state: Shared,
    task: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>,
}

fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, KAFKA_V2)], json!({ "error_code": code, "message": message.into() }).to_string())
        .into_response()
}

fn ok_json(status: StatusCode, content_type: &'static str, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, content_type)], body.to_string()).into_response()
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(String::from)
}

/// The media type of a Content-Type header, without parameters.
fn media_type(h: &HeaderMap) -> Option<String> {
    header_str(h, header::CONTENT_TYPE).map(|c| c.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
}

fn require_content_type(h: &HeaderMap, allowed: &[&str]) -> Result<(), Response> {
    match media_type(h) {
        Some(ct) if allowed.contains(&ct.as_str()) => Ok(()),
        other => Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            41501,
            format!("unsupported content type {:?}: expected one of {}", other.unwrap_or_default(), allowed.join(", ")),
        )),
    }
}

/// Does the Accept header admit `produced`? (Absent, `*/*`, `application/*` or exact.)
fn require_accept(h: &HeaderMap, produced: &str) -> Result<(), Response> {
    let Some(accept) = header_str(h, header::ACCEPT) else { return Ok(()) };
    let ok = accept
        .split(',')
        .map(|a| a.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .any(|a| a == "*/*" || a == "application/*" || a == produced);
    if ok {
        Ok(())
    } else {
        Err(error(StatusCode::NOT_ACCEPTABLE, 40601, format!("not acceptable: {accept:?} does not admit {produced}")))
    }
}

fn parse_body(body: &Bytes) -> Result<Value, Response> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| error(StatusCode::BAD_REQUEST, 40002, format!("invalid JSON body: {e}")))
}

fn query(raw: &Option<String>) -> HashMap<String, String> {
    raw.as_deref()
        .map(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default().into_iter().collect())
        .unwrap_or_default()
}

/// An integer query parameter: absent (`None`, or 400 when required) or a number (400 otherwise).
fn int_param(q: &HashMap<String, String>, name: &str, required: bool) -> Result<Option<i64>, Response> {
    match q.get(name) {
        None if required => {
            Err(error(StatusCode::BAD_REQUEST, 40002, format!("missing required query parameter {name}")))
        }
        None => Ok(None),
        Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
            error(StatusCode::BAD_REQUEST, 40002, format!("query parameter {name}: {v:?} is not an integer"))
        }),
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn record_json(r: &StoredRecord, format: &str) -> Value {
    let mut o = json!({ "topic": r.topic, "partition": r.partition, "offset": r.offset });
    let wire = |bytes: &[u8]| -> Value {
        if format == "json" {
            serde_json::from_slice(bytes).unwrap_or(Value::Null)
        } else {
            Value::String(b64().encode(bytes))
        }
    };
    if let Some(k) = &r.key {
        o["key"] = wire(k);
    }
    o["value"] = match &r.value {
        Value64::Bytes(b) => wire(b),
        Value64::Wire(s) => Value::String(s.clone()),
    };
    o
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Inner {
    fn append(&mut self, topic: &str, partition: i32, key: Option<Vec<u8>>, value: Value64) -> i64 {
        let log = &mut self.logs.get_mut(topic).expect("existing topic")[partition as usize];
        let offset = log.len() as i64;
        log.push(StoredRecord { topic: topic.to_string(), partition, offset, key, value });
        self.appended.notify_waiters();
        offset
    }

    fn partition_for(&mut self, key: Option<&[u8]>) -> i32 {
        match key {
            Some(k) => (fnv(k) % self.partitions as u64) as i32,
            None => {
                self.round_robin += 1;
                (self.round_robin % self.partitions as u64) as i32
            }
        }
    }

    fn instance(&mut self, group: &str, id: &str) -> Result<(&mut Group, String), Response> {
        let g = self.groups.get_mut(group);
        match g {
            Some(g) if g.instances.contains_key(id) => Ok((g, id.to_string())),
            _ => Err(error(StatusCode::NOT_FOUND, 40403, format!("consumer instance {id} of group {group} not found"))),
        }
    }
}

/// The entry of [`ROUTES`] a request matches (`{name}` matches one non-empty segment).
pub fn route_of(method: &str, path: &str) -> Option<&'static str> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    ROUTES.iter().find_map(|(m, template)| {
        let t: Vec<&str> = template.split('/').collect();
        let same = *m == method
            && t.len() == segs.len()
            && t.iter().zip(&segs).all(|(a, b)| if a.starts_with('{') { !b.is_empty() } else { a == b });
        same.then_some(*template)
    })
}

async fn log_requests(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = route_of(req.method().as_str(), req.uri().path()).map(String::from);
    let uri = req.uri().to_string();
    let content_type = header_str(req.headers(), header::CONTENT_TYPE);
    let accept = header_str(req.headers(), header::ACCEPT);
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let response = serde_json::from_slice(&bytes).ok();
    lock(&s).requests.push(RequestLog { method, route, uri, content_type, accept, status, response });
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

async fn brokers(h: HeaderMap) -> Response {
    if let Err(r) = require_accept(&h, KAFKA_V2) {
        return r;
    }
    ok_json(StatusCode::OK, KAFKA_V2, json!([0]))
}

async fn topics(State(s): State<Shared>, h: HeaderMap) -> Response {
    if let Err(r) = require_accept(&h, KAFKA_V2) {
        return r;
    }
    let names: Vec<String> = lock(&s).logs.keys().cloned().collect();
    ok_json(StatusCode::OK, KAFKA_V2, json!(names))
}

async fn ready() -> Response {
    (StatusCode::OK, "").into_response()
}

async fn produce(State(s): State<Shared>, Path(topic): Path<String>, h: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = require_content_type(&h, &[BINARY_V2, JSON_V2]) {
        return r;
    }
    if let Err(r) = require_accept(&h, KAFKA_V2) {
        return r;
    }
    let binary = media_type(&h).as_deref() == Some(BINARY_V2);
    let doc = match parse_body(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let Some(records) = doc.get("records").and_then(Value::as_array) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "the body needs a records array");
    };
    // Decode everything first: a bad record refuses the whole request, as Pandaproxy does.
    let mut decoded = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let field = |name: &str| -> Result<Option<Vec<u8>>, Response> {
            match r.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(v)) if binary => b64().decode(v.as_bytes()).map(Some).map_err(|e| {
                    error(StatusCode::UNPROCESSABLE_ENTITY, 42201, format!("records[{i}].{name}: not base64: {e}"))
                }),
                Some(v) if !binary => Ok(Some(v.to_string().into_bytes())),
                Some(_) => Err(error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    42201,
                    format!("records[{i}].{name}: expected a base64 string"),
                )),
            }
        };
        let key = match field("key") {
            Ok(k) => k,
            Err(r) => return r,
        };
        let value = match field("value") {
            Ok(v) => v.unwrap_or_default(),
            Err(r) => return r,
        };
        let partition = r.get("partition").and_then(Value::as_i64);
        decoded.push((key, value, partition));
    }
    let mut st = lock(&s);
    if !st.logs.contains_key(&topic) {
        return error(StatusCode::NOT_FOUND, 40401, format!("topic {topic} not found"));
    }
    let parts = st.partitions;
    let mut offsets = Vec::new();
    for (key, value, partition) in decoded {
        let p = match partition {
            Some(p) if p < 0 || p >= i64::from(parts) => {
                offsets.push(
                    json!({ "partition": p, "offset": -1, "error_code": 3, "message": "UNKNOWN_TOPIC_OR_PARTITION" }),
                );
                continue;
            }
            Some(p) => p as i32,
            None => st.partition_for(key.as_deref()),
        };
        if let Some((k, code)) = &st.refuse_key {
            if key.as_deref() == Some(k.as_slice()) {
                offsets.push(json!({ "partition": p, "offset": -1, "error_code": code, "message": "INVALID_RECORD" }));
                continue;
            }
        }
        let offset = st.append(&topic, p, key, Value64::Bytes(value));
        offsets.push(json!({ "partition": p, "offset": offset }));
    }
    ok_json(StatusCode::OK, KAFKA_V2, json!({ "offsets": offsets }))
}

async fn partition_records(
    State(s): State<Shared>,
    Path((topic, partition)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
) -> Response {
    let format = if require_accept(&h, BINARY_V2).is_ok() && header_str(&h, header::ACCEPT).is_some() {
        "binary"
    } else if require_accept(&h, JSON_V2).is_ok() && header_str(&h, header::ACCEPT).is_some() {
        "json"
    } else {
        return error(StatusCode::NOT_ACCEPTABLE, 40601, format!("Accept must be {BINARY_V2} or {JSON_V2}"));
    };
    let q = query(&q);
    let (offset, max_bytes) =
        match (int_param(&q, "offset", true), int_param(&q, "timeout", true), int_param(&q, "max_bytes", true)) {
            (Ok(o), Ok(_), Ok(m)) => (o.unwrap_or_default(), m.unwrap_or_default()),
            (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
        };
    let st = lock(&s);
    let Some(log) = st.logs.get(&topic) else {
        return error(StatusCode::NOT_FOUND, 40401, format!("topic {topic} not found"));
    };
    let Some(log) = partition.parse::<usize>().ok().and_then(|p| log.get(p)) else {
        return error(StatusCode::NOT_FOUND, 40402, format!("partition {partition} of {topic} not found"));
    };
    let records = take_bytes(log.iter().skip(offset.max(0) as usize), max_bytes);
    let records: Vec<Value> = records.iter().map(|r| record_json(r, format)).collect();
    ok_json(StatusCode::OK, if format == "binary" { BINARY_V2 } else { JSON_V2 }, json!({ "records": records }))
}

fn size(r: &StoredRecord) -> i64 {
    let v = match &r.value {
        Value64::Bytes(b) => b.len(),
        Value64::Wire(s) => s.len(),
    };
    (v + r.key.as_ref().map_or(0, Vec::len)) as i64
}

/// Records up to `max_bytes` (at least one, as Kafka does).
fn take_bytes<'a>(it: impl Iterator<Item = &'a StoredRecord>, max_bytes: i64) -> Vec<StoredRecord> {
    let mut out = Vec::new();
    let mut total = 0;
    for r in it {
        total += size(r);
        if !out.is_empty() && total > max_bytes {
            break;
        }
        out.push(r.clone());
    }
    out
}

async fn create_consumer(State(s): State<Shared>, Path(group): Path<String>, h: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = require_content_type(&h, &[KAFKA_V2]) {
        return r;
    }
    if let Err(r) = require_accept(&h, KAFKA_V2) {
        return r;
    }
    let doc = match parse_body(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let prop = |k: &str| doc.get(k).and_then(Value::as_str).map(String::from);
    let format = prop("format").unwrap_or_else(|| "binary".into());
    if format != "binary" && format != "json" {
        return error(StatusCode::UNPROCESSABLE_ENTITY, 42204, format!("invalid format {format:?}: binary or json"));
    }
    let latest = match prop("auto.offset.reset").as_deref() {
        None | Some("earliest") => false,
        Some("latest") => true,
        Some(other) => {
            return error(StatusCode::UNPROCESSABLE_ENTITY, 42204, format!("invalid auto.offset.reset {other:?}"))
        }
    };
    let auto_commit = match prop("auto.commit.enable").as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return error(StatusCode::UNPROCESSABLE_ENTITY, 42204, format!("invalid auto.commit.enable {other:?}"))
        }
    };
    let mut st = lock(&s);
    st.next_instance += 1;
    let id = prop("name").unwrap_or_else(|| format!("{group}-instance-{}", st.next_instance));
    let g = st.groups.entry(group.clone()).or_default();
    if g.instances.contains_key(&id) {
        return error(StatusCode::CONFLICT, 40902, format!("consumer {id} already exists"));
    }
    g.instances.insert(id.clone(), Instance { format, latest, auto_commit, ..Instance::default() });
    let host = header_str(&h, header::HOST).unwrap_or_else(|| "127.0.0.1".into());
    ok_json(
        StatusCode::OK,
        KAFKA_V2,
        json!({ "instance_id": id, "base_uri": format!("http://{host}/consumers/{group}/instances/{id}") }),
    )
}

async fn delete_consumer(State(s): State<Shared>, Path((group, id)): Path<(String, String)>, h: HeaderMap) -> Response {
    if let Err(r) = require_accept(&h, KAFKA_V2) {
        return r;
    }
    let mut st = lock(&s);
    match st.instance(&group, &id) {
        Ok((g, id)) => {
            g.instances.remove(&id);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => r,
    }
}

async fn subscribe(
    State(s): State<Shared>,
    Path((group, id)): Path<(String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = require_content_type(&h, &[KAFKA_V2]) {
        return r;
    }
    let doc = match parse_body(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let Some(topics) = doc.get("topics").and_then(Value::as_array) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "the body needs a topics array");
    };
    let topics: Vec<String> = topics.iter().filter_map(Value::as_str).map(String::from).collect();
    let mut st = lock(&s);
    match st.instance(&group, &id) {
        Ok((g, id)) => {
            if let Some(i) = g.instances.get_mut(&id) {
                i.topics = topics;
                i.positions.clear();
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => r,
    }
}

/// What an instance would read next, from its positions (set at its first fetch from the
/// group's committed offsets, or the log start / end).
fn next_records(
    st: &mut Inner,
    group: &str,
    id: &str,
    max_bytes: i64,
) -> Result<(String, Vec<StoredRecord>), Response> {
    let parts = st.partitions;
    let Inner { logs, groups, .. } = st;
    let g = groups
        .get_mut(group)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, 40403, format!("consumer instance {id} not found")))?;
    let committed = g.committed.clone();
    let inst = g.instances.get_mut(id).ok_or_else(|| {
        error(StatusCode::NOT_FOUND, 40403, format!("consumer instance {id} of group {group} not found"))
    })?;
    let mut out = Vec::new();
    let mut budget = max_bytes;
    for t in inst.topics.clone() {
        let Some(log) = logs.get(&t) else { continue };
        for p in 0..parts {
            let plog = &log[p as usize];
            let pos = *inst.positions.entry((t.clone(), p)).or_insert_with(|| {
                committed.get(&(t.clone(), p)).copied().unwrap_or(if inst.latest { plog.len() as i64 } else { 0 })
            });
            let got =
                take_bytes(plog.iter().skip(pos.max(0) as usize), if out.is_empty() { budget } else { budget.max(0) });
            let got: Vec<StoredRecord> =
                if out.is_empty() { got } else { got.into_iter().filter(|r| size(r) <= budget).collect() };
            if let Some(last) = got.last() {
                inst.positions.insert((t.clone(), p), last.offset + 1);
            }
            budget -= got.iter().map(size).sum::<i64>();
            out.extend(got);
            if budget <= 0 {
                break;
            }
        }
    }
    if inst.auto_commit {
        for (k, v) in &inst.positions {
            g.committed.insert(k.clone(), *v);
        }
    }
    let format = inst.format.clone();
    Ok((format, out))
}

async fn fetch(
    State(s): State<Shared>,
    Path((group, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
) -> Response {
    let q = query(&q);
    // Optional in the API document, integers when given.
    let (timeout, max_bytes) = match (int_param(&q, "timeout", false), int_param(&q, "max_bytes", false)) {
        (Ok(t), Ok(m)) => (t.unwrap_or(1000), m.unwrap_or(1 << 20)),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let format = match lock(&s).instance(&group, &id) {
        Ok((g, id)) => g.instances.get(&id).map(|i| i.format.clone()).unwrap_or_default(),
        Err(r) => return r,
    };
    let produced = if format == "json" { JSON_V2 } else { BINARY_V2 };
    if header_str(&h, header::ACCEPT).is_none() {
        return error(StatusCode::NOT_ACCEPTABLE, 40601, format!("Accept must be {produced} for a {format} consumer"));
    }
    if let Err(r) = require_accept(&h, produced) {
        return r;
    }
    // Long poll: wait up to `timeout` (at most 2 s here) for records.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout.clamp(0, 2000) as u64);
    let appended = lock(&s).appended.clone();
    loop {
        // Registered before looking, so an append in between is not missed.
        let woken = appended.notified();
        let (format, records) = match next_records(&mut lock(&s), &group, &id, max_bytes) {
            Ok(r) => r,
            Err(r) => return r,
        };
        if !records.is_empty() || tokio::time::Instant::now() >= deadline {
            let records: Vec<Value> = records.iter().map(|r| record_json(r, &format)).collect();
            return ok_json(StatusCode::OK, produced, json!({ "records": records }));
        }
        // Until a record is appended or the long poll's deadline passes.
        let _ = tokio::time::timeout_at(deadline, woken).await;
    }
}

fn partitions_of(doc: &Value) -> Result<Vec<(String, i32, Option<i64>)>, Response> {
    let Some(items) = doc.get("partitions").and_then(Value::as_array) else {
        return Err(error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "the body needs a partitions array"));
    };
    let mut out = Vec::new();
    for (i, p) in items.iter().enumerate() {
        match (p.get("topic").and_then(Value::as_str), p.get("partition").and_then(Value::as_i64)) {
            (Some(t), Some(n)) => out.push((t.to_string(), n as i32, p.get("offset").and_then(Value::as_i64))),
            _ => {
                return Err(error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    42201,
                    format!("partitions[{i}] needs topic and partition"),
                ))
            }
        }
    }
    Ok(out)
}

async fn commit(
    State(s): State<Shared>,
    Path((group, id)): Path<(String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = require_content_type(&h, &[KAFKA_V2]) {
        return r;
    }
    let doc = match parse_body(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let parts = match partitions_of(&doc) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut st = lock(&s);
    let n = st.partitions;
    for (t, p, _) in &parts {
        if !st.logs.contains_key(t) || *p < 0 || *p >= n {
            return error(StatusCode::NOT_FOUND, 40402, format!("partition {t}/{p} not found"));
        }
    }
    match st.instance(&group, &id) {
        Ok((g, _)) => {
            for (t, p, o) in parts {
                match o {
                    Some(o) => {
                        g.committed.insert((t, p), o);
                    }
                    None => {
                        return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, format!("partition {t}/{p}: no offset"))
                    }
                }
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => r,
    }
}

async fn committed_offsets(
    State(s): State<Shared>,
    Path((group, id)): Path<(String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = require_accept(&h, KAFKA_V2) {
        return r;
    }
    let asked = if body.is_empty() {
        None
    } else {
        let doc = match parse_body(&body) {
            Ok(d) => d,
            Err(r) => return r,
        };
        match partitions_of(&doc) {
            Ok(p) => Some(p),
            Err(r) => return r,
        }
    };
    let mut st = lock(&s);
    match st.instance(&group, &id) {
        Ok((g, _)) => {
            let offsets: Vec<Value> = g
                .committed
                .iter()
                .filter(|((t, p), _)| asked.as_ref().is_none_or(|a| a.iter().any(|(at, ap, _)| at == t && ap == p)))
                .map(|((t, p), o)| json!({ "topic": t, "partition": p, "offset": o, "metadata": "" }))
                .collect();
            ok_json(StatusCode::OK, KAFKA_V2, json!({ "offsets": offsets }))
        }
        Err(r) => r,
    }
}

async fn no_route(State(s): State<Shared>, method: Method, uri: axum::http::Uri) -> Response {
    let r = error(StatusCode::NOT_FOUND, 40401, format!("no route for {method} {uri}"));
    lock(&s).requests.push(RequestLog {
        method: method.to_string(),
        route: None,
        uri: uri.to_string(),
        content_type: None,
        accept: None,
        status: 404,
        response: None,
    });
    r
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/brokers", get(brokers))
        .route("/topics", get(topics))
        .route("/topics/{topic_name}", post(produce))
        .route("/topics/{topic_name}/partitions/{partition_id}/records", get(partition_records))
        .route("/consumers/{group_name}", post(create_consumer))
        .route("/consumers/{group_name}/instances/{instance}", axum::routing::delete(delete_consumer))
        .route("/consumers/{group_name}/instances/{instance}/subscription", post(subscribe))
        .route("/consumers/{group_name}/instances/{instance}/records", get(fetch))
        .route("/consumers/{group_name}/instances/{instance}/offsets", post(commit).get(committed_offsets))
        .route("/status/ready", get(ready))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), log_requests))
        .fallback(no_route)
        .with_state(state)
}

impl Pandaproxy {
    /// Start on a free 127.0.0.1 port with the six sensor topics, `partitions` each.
    pub async fn start(partitions: i32) -> Result<Pandaproxy, String> {
        let mut inner = Inner { partitions: partitions.max(1), ..Inner::default() };
        for t in TOPICS {
            inner.logs.insert(t.to_string(), vec![Vec::new(); inner.partitions as usize]);
        }
        let mut p = Pandaproxy { port: 0, state: Arc::new(Mutex::new(inner)), task: None };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("bind: {e}"))?;
        p.port = listener.local_addr().map_err(|e| format!("addr: {e}"))?.port();
        p.serve(listener);
        Ok(p)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = router(self.state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        self.task = Some((tx, task));
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Down (connections closed, new ones refused) until [`Pandaproxy::start_again`];
    /// state is kept. Requests in progress finish first (at most a fetch's long poll).
    pub async fn stop(&mut self) {
        if let Some((tx, mut t)) = self.task.take() {
            let _ = tx.send(());
            if tokio::time::timeout(Duration::from_secs(5), &mut t).await.is_err() {
                t.abort();
            }
        }
    }

    /// Serve again on the same port, with the same state.
    pub async fn start_again(&mut self) -> Result<(), String> {
        let addr = format!("127.0.0.1:{}", self.port);
        let mut last = String::new();
        // The port may linger in TIME_WAIT for a moment after the stop.
        for _ in 0..100 {
            match tokio::net::TcpListener::bind(&addr).await {
                Ok(l) => {
                    self.serve(l);
                    return Ok(());
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(super::POLL_INTERVAL).await;
        }
        Err(format!("cannot bind {addr} again: {last}"))
    }

    /// Forget every consumer instance: later calls on them are 404 (error_code 40403), as
    /// when the proxy expired them. Committed offsets stay.
    pub fn expire_instances(&self) -> usize {
        let mut st = lock(&self.state);
        st.groups.values_mut().map(|g| std::mem::take(&mut g.instances).len()).sum()
    }

    /// Refuse every record with this key with a per-record error (`error_code` in the
    /// produce response), as a broker refusing a record would.
    pub fn refuse_key(&self, key: Option<&str>, error_code: i64) {
        lock(&self.state).refuse_key = key.map(|k| (k.as_bytes().to_vec(), error_code));
    }

    /// Append a record directly, whatever its content (`Value64::Wire` is served verbatim).
    pub fn inject(&self, topic: &str, partition: i32, key: Option<&str>, value: Value64) -> i64 {
        lock(&self.state).append(topic, partition, key.map(|k| k.as_bytes().to_vec()), value)
    }

    /// Every record of a topic, partition by partition.
    pub fn records(&self, topic: &str) -> Vec<StoredRecord> {
        lock(&self.state).logs.get(topic).map(|l| l.iter().flatten().cloned().collect()).unwrap_or_default()
    }

    /// The end offset of every partition that has records.
    pub fn log_ends(&self) -> BTreeMap<(String, i32), i64> {
        let st = lock(&self.state);
        let mut out = BTreeMap::new();
        for (t, parts) in &st.logs {
            for (p, log) in parts.iter().enumerate() {
                if !log.is_empty() {
                    out.insert((t.clone(), p as i32), log.len() as i64);
                }
            }
        }
        out
    }

    /// A group's committed offsets (the next offset to read, per partition).
    pub fn committed(&self, group: &str) -> BTreeMap<(String, i32), i64> {
        lock(&self.state).groups.get(group).map(|g| g.committed.clone()).unwrap_or_default()
    }

    /// The live instances of a group.
    pub fn instances(&self, group: &str) -> Vec<String> {
        lock(&self.state).groups.get(group).map(|g| g.instances.keys().cloned().collect()).unwrap_or_default()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RequestLog> {
        lock(&self.state).requests.clone()
    }
}

impl Drop for Pandaproxy {
    fn drop(&mut self) {
        if let Some((tx, t)) = self.task.take() {
            let _ = tx.send(());
            t.abort();
        }
    }
}
