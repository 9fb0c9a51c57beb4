//! The inspection API (`/api/v1`): JSON views of the actor tree, the twins and the sinks,
//! read from shared state. The only call that reaches an actor is the liveness ping of
//! `GET /api/v1/actors/{path}`, bounded by [`PING_DEADLINE`]; an actor that does not answer
//! in time is shown as not responding.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use super::AppState;
use crate::actors::{ActorEntry, ActorInfo, ActorKind};
use crate::registry::TwinView;
use crate::sensor::SensorMsg;
use crate::sinks::{SinkMsg, SinkSnapshot};

/// How long the liveness ping of one actor may take.
pub const PING_DEADLINE: Duration = Duration::from_millis(250);
/// Default and maximum page sizes.
const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 10_000;
/// At most this many children are listed inline in a supervisor's state.
const INLINE_CHILDREN: usize = 1000;

/// An API error: a status, a machine-readable code and a message naming what is wrong.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    param: Option<String>,
}

impl ApiError {
    pub fn bad_param(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
            param: Some(param.into()),
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, code: "not_found", message: message.into(), param: None }
    }

    /// Any status, with a machine-readable code (a 401 also gets `WWW-Authenticate: Bearer`).
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), param: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": { "code": self.code, "message": self.message } });
        if let Some(p) = self.param {
            body["error"]["param"] = Value::String(p);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            return (self.status, [(axum::http::header::WWW_AUTHENTICATE, "Bearer")], Json(body)).into_response();
        }
        (self.status, Json(body)).into_response()
    }
}

/// The one path parameter of a route, as text; a path that cannot be decoded (bad percent
/// encoding, not UTF-8) is a JSON 400 naming it, like every other API error.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(p)) => Ok(PathParam(p)),
            Err(e) => Err(ApiError::bad_param("path", format!("{}: {}", parts.uri.path(), e.body_text()))),
        }
    }
}

/// Query parameters, checked against the names an endpoint accepts.
struct Params(BTreeMap<String, String>);

impl Params {
    fn parse(raw: Option<String>, allowed: &[&str]) -> Result<Params, ApiError> {
        let raw = raw.unwrap_or_default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&raw)
            .map_err(|e| ApiError::bad_param("query", format!("malformed query string: {e}")))?;
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::bad_param(
                    &k,
                    format!("unknown parameter `{k}`; accepted: {}", allowed.join(", ")),
                ));
            }
            if map.insert(k.clone(), v).is_some() {
                return Err(ApiError::bad_param(&k, format!("parameter `{k}` given twice")));
            }
        }
        Ok(Params(map))
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    fn usize(&self, k: &str, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n <= max => Ok(n),
                Ok(n) => Err(ApiError::bad_param(k, format!("`{k}` is {n}, at most {max}"))),
                Err(_) => Err(ApiError::bad_param(k, format!("`{k}` must be a non-negative integer, got \"{v}\""))),
            },
        }
    }

    fn kind(&self) -> Result<Option<twins::SensorKind>, ApiError> {
        self.get("type")
            .map(|t| t.parse::<twins::SensorKind>().map_err(|e| ApiError::bad_param("type", e.to_string())))
            .transpose()
    }

    fn district(&self) -> Result<Option<String>, ApiError> {
        self.get("district")
            .map(|d| {
                twins::geo::district(d)
                    .map(|d| d.name.clone())
                    .ok_or_else(|| ApiError::bad_param("district", format!("unknown district \"{d}\"")))
            })
            .transpose()
    }
}

#[derive(Serialize)]
struct Page<T: Serialize> {
    total: usize,
    offset: usize,
    limit: usize,
    items: Vec<T>,
}

/// `GET /api/v1/actors?kind=&offset=&limit=`
pub async fn actors(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    let p = Params::parse(q, &["kind", "parent", "offset", "limit"])?;
    let parent = p.get("parent");
    let kind = match p.get("kind") {
        None => None,
        Some("supervisor") => Some(ActorKind::Supervisor),
        Some("sensor") => Some(ActorKind::Sensor),
        Some("sink") => Some(ActorKind::Sink),
        Some("consumer") => Some(ActorKind::Consumer),
        Some(other) => {
            return Err(ApiError::bad_param(
                "kind",
                format!("unknown kind \"{other}\"; accepted: supervisor, sensor, sink, consumer"),
            ))
        }
    };
    let offset = p.usize("offset", 0, usize::MAX)?;
    let limit = p.usize("limit", DEFAULT_LIMIT, MAX_LIMIT)?;
    let matching: Vec<&std::sync::Arc<ActorEntry>> = s
        .directory
        .entries()
        .iter()
        .filter(|e| kind.is_none_or(|k| e.kind == k))
        .filter(|e| parent.is_none_or(|p| e.parent.as_deref() == Some(p)))
        .collect();
    let items: Vec<ActorInfo> = matching.iter().skip(offset).take(limit).map(|e| e.info()).collect();
    Ok(Json(json!(Page { total: matching.len(), offset, limit, items })))
}

/// `GET /api/v1/actors/{path}`
pub async fn actor(State(s): State<AppState>, PathParam(path): PathParam) -> Result<Json<Value>, ApiError> {
    let path = path.trim_matches('/');
    let entry = s
        .directory
        .get(path)
        .ok_or_else(|| ApiError::not_found(format!("no actor at path \"{path}\" (see GET /api/v1/actors)")))?
        .clone();
    let responding = ping(&entry).await;
    let state = match entry.kind {
        ActorKind::Sensor => json!(s.registry.view(&entry.name).map(|v| twin_detail(&s, v))),
        ActorKind::Sink => json!(sink_for(&s, &entry).map(|h| h.snapshot())),
        ActorKind::Consumer => entry.state().unwrap_or(Value::Null),
        ActorKind::Supervisor => match &entry.own_stats {
            Some(stats) => {
                let mut snap = stats.snapshot();
                let total = snap.children.len();
                snap.children.truncate(INLINE_CHILDREN);
                let mut v = json!(snap);
                v["children_total"] = json!(total);
                v
            }
            None => Value::Null,
        },
    };
    Ok(Json(json!({ "actor": entry.info(), "responding": responding, "state": state })))
}

fn sink_for<'a>(s: &'a AppState, entry: &ActorEntry) -> Option<&'a std::sync::Arc<crate::sinks::SinkHandle>> {
    let name = entry.name.split_once(':').map(|(_, n)| n).unwrap_or(&entry.name);
    s.sinks.get(name)
}

/// Does the actor answer within [`PING_DEADLINE`]? `None` when it has no live cell.
async fn ping(entry: &ActorEntry) -> Option<bool> {
    let cell = entry.cell()?;
    let answered = match entry.kind {
        ActorKind::Sensor => {
            let actor: ractor::ActorRef<SensorMsg> = cell.into();
            entry.mailbox.enqueue();
            matches!(actor.call(SensorMsg::Ping, Some(PING_DEADLINE)).await, Ok(ractor::rpc::CallResult::Success(())))
        }
        ActorKind::Sink => {
            let actor: ractor::ActorRef<SinkMsg> = cell.into();
            entry.mailbox.enqueue();
            matches!(actor.call(SinkMsg::Ping, Some(PING_DEADLINE)).await, Ok(ractor::rpc::CallResult::Success(())))
        }
        ActorKind::Consumer => {
            let actor: ractor::ActorRef<crate::consumer::ConsumerMsg> = cell.into();
            entry.mailbox.enqueue();
            matches!(
                actor.call(crate::consumer::ConsumerMsg::Ping, Some(PING_DEADLINE)).await,
                Ok(ractor::rpc::CallResult::Success(()))
            )
        }
        ActorKind::Supervisor => {
            let actor: ractor::ActorRef<supervision::SupervisorMsg> = cell.into();
            matches!(
                actor.call(supervision::SupervisorMsg::Snapshot, Some(PING_DEADLINE)).await,
                Ok(ractor::rpc::CallResult::Success(_))
            )
        }
    };
    Some(answered)
}

/// A twin with its delivery status at each sink.
#[derive(Serialize)]
struct TwinDetail {
    #[serde(flatten)]
    view: TwinView,
    delivery: Vec<Delivery>,
}

#[derive(Serialize)]
struct Delivery {
    sink: String,
    /// Highest sequence number the sink delivered for this twin.
    delivered_seq: Option<u64>,
    /// Observations emitted and not (yet) delivered by it.
    behind: u64,
}

fn twin_detail(s: &AppState, view: TwinView) -> TwinDetail {
    let delivery = s
        .sinks
        .handles()
        .iter()
        .map(|h| {
            let d = h.stats.delivered_seq(&view.id);
            Delivery { sink: h.name.clone(), delivered_seq: d, behind: view.seq.saturating_sub(d.unwrap_or(0)) }
        })
        .collect();
    TwinDetail { view, delivery }
}

/// The ids of the twins matching the `type` and `district` parameters, sorted.
fn matching_ids(s: &AppState, p: &Params) -> Result<Vec<String>, ApiError> {
    let kind = p.kind()?;
    let district = p.district()?;
    Ok(s.registry.ids_where(|spec| {
        kind.is_none_or(|k| spec.kind == k) && district.as_ref().is_none_or(|d| *spec.district == **d)
    }))
}

/// `GET /api/v1/twins?type=&district=&offset=&limit=`
pub async fn twins(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    let p = Params::parse(q, &["type", "district", "offset", "limit"])?;
    let offset = p.usize("offset", 0, usize::MAX)?;
    let limit = p.usize("limit", DEFAULT_LIMIT, MAX_LIMIT)?;
    let ids = matching_ids(&s, &p)?;
    let total = ids.len();
    let items: Vec<TwinDetail> =
        ids.iter().skip(offset).take(limit).filter_map(|id| s.registry.view(id)).map(|v| twin_detail(&s, v)).collect();
    Ok(Json(json!(Page { total, offset, limit, items })))
}

/// `GET /api/v1/twins/{id}`
pub async fn twin(State(s): State<AppState>, PathParam(id): PathParam) -> Result<Json<Value>, ApiError> {
    let view = s.registry.view(&id).ok_or_else(|| ApiError::not_found(format!("no twin with id \"{id}\"")))?;
    Ok(Json(json!(twin_detail(&s, view))))
}

/// `GET /api/v1/twins.geojson?type=&district=&limit=`
pub async fn twins_geojson(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let p = Params::parse(q, &["type", "district", "limit"])?;
    let limit = p.usize("limit", usize::MAX, usize::MAX)?;
    let features: Vec<Value> = matching_ids(&s, &p)?
        .iter()
        .take(limit)
        .filter_map(|id| s.registry.view(id))
        .map(|v| {
            let obs = v.last_observation.as_ref();
            let values = obs.and_then(|o| o.get("values")).cloned().unwrap_or_else(|| json!({}));
            let observed_at = obs.and_then(|o| o.get("observedAt")).cloned().unwrap_or(Value::Null);
            let units = obs.and_then(|o| o.get("units")).cloned().unwrap_or_else(|| json!({}));
            json!({
                "type": "Feature",
                "id": v.id,
                "geometry": { "type": "Point", "coordinates": [v.spec.location.lon, v.spec.location.lat] },
                "properties": {
                    "id": v.id,
                    "type": v.spec.kind.as_str(),
                    "district": v.spec.district,
                    "seq": v.seq,
                    "observedAt": observed_at,
                    "values": values,
                    "units": units,
                }
            })
        })
        .collect();
    let body = json!({ "type": "FeatureCollection", "features": features });
    Ok(([(axum::http::header::CONTENT_TYPE, "application/geo+json")], Json(body)).into_response())
}

/// `GET /api/v1/sinks`
pub async fn sinks(State(s): State<AppState>) -> Json<Value> {
    let items: Vec<SinkSnapshot> = s.sinks.handles().iter().map(|h| h.snapshot()).collect();
    Json(json!({ "items": items }))
}

/// The live view pushed by `GET /api/v1/events`: supervisors and sinks in full, sensors
/// summarised per district (a city may have a million).
pub fn live_snapshot(s: &AppState) -> Value {
    let mut actors = Vec::new();
    let mut districts: BTreeMap<std::sync::Arc<str>, (u64, u64, u64, u64)> = BTreeMap::new();
    for e in s.directory.entries() {
        match e.kind {
            ActorKind::Sensor => {
                // What a summary needs, without building (and cloning) the whole info.
                let (running, restarts) = e.brief();
                let d = districts.entry(e.parent.clone().unwrap_or_else(|| std::sync::Arc::from(""))).or_default();
                d.0 += 1;
                d.1 += u64::from(running);
                d.2 += u64::from(restarts);
                d.3 += e.mailbox.depth();
            }
            _ => actors.push(e.info()),
        }
    }
    let sensors: Vec<Value> = districts
        .into_iter()
        .map(|(parent, (n, running, restarts, depth))| {
            json!({ "parent": &*parent, "sensors": n, "running": running, "restarts": restarts, "queue_depth": depth })
        })
        .collect();
    let sinks: Vec<SinkSnapshot> = s.sinks.handles().iter().map(|h| h.snapshot()).collect();
    json!({
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "twins": s.registry.len(),
        "twins_running": s.metrics.twins_running.get(),
        "actors": actors,
        "sensors_by_parent": sensors,
        "sinks": sinks,
    })
}

/// `GET /api/v1/events`: Server-Sent Events, one `snapshot` event per second.
pub async fn events(State(s): State<AppState>) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::unfold((s, true), |(s, first)| async move {
        if !first {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let data = live_snapshot(&s).to_string();
        Some((Ok(Event::default().event("snapshot").data(data)), (s, false)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// `GET /api/v1/openapi.json`
pub async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub const OPENAPI: &str = include_str!("openapi.json");
