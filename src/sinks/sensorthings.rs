//! The OGC SensorThings API sink (v1.1: FROST, django-ogc-sensorthings, ...), over `reqwest`
//! and driven by the [`batch`](super::batch) driver.
//!
//! Entities, found by name first (so restarts and several runtimes never create duplicates),
//! created when missing, their ids cached per sensor:
//! - `Thing` named after the sensor id (`description`, `properties: {type, district}`) with
//!   its `Location` (GeoJSON Point, `application/geo+json`), created inline;
//! - one `Sensor` per sensor kind (named `traffic`, `air-quality`, ...);
//! - one `ObservedProperty` per quantity name (`pm2_5`, `temperature`, ...);
//! - one `Datastream` per sensor and quantity, named `{sensor-id}:{quantity}`, with its UCUM
//!   `unitOfMeasurement` and `observationType` OM_Measurement.
//!
//! Observations go to `POST /Observations` with `"Datastream": {"@iot.id": ..}` (servers
//! differ on `POST /Datastreams(id)/Observations`: django-ogc-sensorthings refuses it), a
//! few at a time; with `use_batch` and a server whose service root lists the `data-array`
//! conformance class, one `POST /CreateObservations` (dataArray) per batch instead. `$batch`
//! is not used: not every server that accepts the URL implements it (django-ogc-sensorthings
//! 1.2 answers `{}` without doing anything).
//!
//! Ids are opaque JSON values (integers in FROST, UUID strings elsewhere). A created entity's
//! id comes from the response body when there is one, else from its `Location` header
//! (`.../Things(42)` or `.../Things('uuid')`).
//!
//! Lost entities (a server restarted on an empty database): an observation refused for a
//! cached Datastream (a 404, a 400 or even a 500, depending on the server) leads to a
//! `GET Datastreams(id)`; a 404 there drops every cached id, and the entities are found or
//! created again and the observations re-sent, in the same call.
//!
//! Retries do not duplicate: the rows (observation, quantity) of the batch in hand that the
//! server confirmed are remembered, and skipped when the driver sends the same batch again
//! after a retriable error. (A request whose answer is lost, e.g. cut by the driver's
//! timeout, may still be sent twice: delivery is at least once.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::SecondsFormat;
use futures::stream::StreamExt;
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};
use twins::{Quantity, SensorKind};

use super::batch::{classify_status, BatchOutcome, BatchService, SendError};
use super::queue::Envelope;
use crate::config::SensorThingsSinkConfig;

const OM_MEASUREMENT: &str = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement";
/// Observations posted at once when not using dataArray.
const CONCURRENT_POSTS: usize = 4;

/// One row: the value of one quantity of one observation: (sensor id, seq, quantity index).
type RowKey = (Arc<str>, u64, usize);

/// Why a request failed.
#[derive(Debug, Clone)]
enum Fail {
    /// The server answered with this status and body.
    Status(u16, String),
    /// No answer: connection refused or reset, timeout, unreadable body.
    Transport(String),
}

impl Fail {
    fn to_send_error(&self) -> SendError {
        match self {
            Fail::Status(status, body) => classify_status(*status, body),
            Fail::Transport(m) => SendError::Retriable(m.clone()),
        }
    }

    fn is_retriable(&self) -> bool {
        matches!(self.to_send_error(), SendError::Retriable(_))
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_send_error() {
            SendError::Retriable(m) | SendError::Rejected(m) => f.write_str(&m),
        }
    }
}

/// The cached ids of one sensor's entities.
#[derive(Debug, Clone)]
struct SensorEntities {
    /// Aligned with `kind.quantities()`.
    datastreams: Vec<Value>,
}

/// What became of one row.
enum RowResult {
    Done,
    /// The server refused it, for good.
    Failed(String),
    /// Worth sending again later.
    Retry(String),
    /// Its Datastream is gone from the server.
    Missing,
}

/// One row to post.
struct Row {
    entry: usize,
    key: RowKey,
    datastream: Value,
    time: String,
    result: f64,
}

/// The HTTP side, cheap to clone into concurrent requests.
#[derive(Clone)]
struct Http {
    client: reqwest::Client,
    base: String,
    username: Option<String>,
    password: Option<String>,
}

impl Http {
    fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let r = self.client.request(method, url).header(reqwest::header::ACCEPT, "application/json");
        match &self.username {
            Some(u) => r.basic_auth(u, self.password.as_deref()),
            None => r,
        }
    }

    async fn get_json(&self, url: &str) -> Result<Value, Fail> {
        let resp = self.request(Method::GET, url).send().await.map_err(transport)?;
        let status = resp.status();
        let text = resp.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(Fail::Status(status.as_u16(), text));
        }
        serde_json::from_str(&text).map_err(|e| Fail::Transport(format!("GET {url}: invalid JSON: {e}")))
    }

    /// POST a JSON body; returns the response body (parsed, when JSON) and `Location` header.
    async fn post(&self, url: &str, body: &Value) -> Result<(Option<Value>, Option<String>), Fail> {
        let resp = self.request(Method::POST, url).json(body).send().await.map_err(transport)?;
        let status = resp.status();
        let location = resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
        let text = resp.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(Fail::Status(status.as_u16(), text));
        }
        let json = if text.trim().is_empty() { None } else { serde_json::from_str(&text).ok() };
        Ok((json, location))
    }

    /// The id of the entity of `set` named `name`, if there is one.
    async fn find_by_name(&self, set: &str, name: &str) -> Result<Option<Value>, Fail> {
        let filter = format!("name eq '{}'", name.replace('\'', "''"));
        let url = format!("{}/{set}?$filter={}", self.base, percent_encode(&filter));
        let doc = self.get_json(&url).await?;
        let first = doc.get("value").and_then(Value::as_array).and_then(|v| v.first());
        Ok(first.and_then(|e| e.get("@iot.id")).filter(|id| !id.is_null()).cloned())
    }

    /// Find the entity of `set` named `name`, or create it from `body`; its id.
    async fn find_or_create(&self, set: &str, name: &str, body: Value) -> Result<Value, Fail> {
        if let Some(id) = self.find_by_name(set, name).await? {
            return Ok(id);
        }
        let url = format!("{}/{set}", self.base);
        let (json, location) = self.post(&url, &body).await?;
        if let Some(id) = json.as_ref().and_then(|j| j.get("@iot.id")).filter(|id| !id.is_null()) {
            return Ok(id.clone());
        }
        if let Some(id) = location.as_deref().and_then(id_from_location) {
            return Ok(id);
        }
        // Created, but the server did not say which id: look it up.
        tracing::debug!(set, name, "created entity without id in body or Location, looking it up");
        self.find_by_name(set, name)
            .await?
            .ok_or_else(|| Fail::Transport(format!("POST {url}: created {name:?} but cannot find its id")))
    }

    async fn post_observation(self, body: Value) -> Result<(), Fail> {
        self.post(&format!("{}/Observations", self.base), &body).await.map(|_| ())
    }

    /// `POST /CreateObservations`: one dataArray group per Datastream. Per row: Ok, or the
    /// server's reason (`"error"`).
    async fn create_observations(&self, rows: &[&Row]) -> Result<Vec<Result<(), String>>, Fail> {
        let mut groups: Vec<(&Value, Vec<usize>)> = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            match groups.iter_mut().find(|(ds, _)| **ds == row.datastream) {
                Some((_, members)) => members.push(i),
                None => groups.push((&row.datastream, vec![i])),
            }
        }
        let body: Vec<Value> = groups
            .iter()
            .map(|(ds, members)| {
                json!({
                    "Datastream": {"@iot.id": ds},
                    "components": ["phenomenonTime", "resultTime", "result"],
                    "dataArray": members.iter().map(|&i| json!([rows[i].time, rows[i].time, rows[i].result])).collect::<Vec<_>>(),
                })
            })
            .collect();
        let url = format!("{}/CreateObservations", self.base);
        let (json, _) = self.post(&url, &Value::Array(body)).await?;
        let answers = json
            .as_ref()
            .and_then(Value::as_array)
            .ok_or_else(|| Fail::Transport(format!("POST {url}: expected a JSON array of self links, got {json:?}")))?;
        if answers.len() != rows.len() {
            return Err(Fail::Transport(format!(
                "POST {url}: {} answers for {} observations",
                answers.len(),
                rows.len()
            )));
        }
        let mut out: Vec<Result<(), String>> = vec![Ok(()); rows.len()];
        let order = groups.iter().flat_map(|(_, members)| members.iter().copied());
        for (i, answer) in order.zip(answers) {
            let ok = answer.as_str().is_some_and(|s| !s.starts_with("error"));
            if !ok {
                out[i] = Err(format!("CreateObservations answered {answer}"));
            }
        }
        Ok(out)
    }

    /// Does the Datastream still exist? `Ok(false)` on a 404.
    async fn datastream_exists(&self, id: &Value) -> Result<bool, Fail> {
        let url = format!("{}/Datastreams({})", self.base, id_segment(id));
        match self.get_json(&url).await {
            Ok(_) => Ok(true),
            Err(Fail::Status(404, _)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn transport(e: reqwest::Error) -> Fail {
    Fail::Transport(e.to_string())
}

/// The request/response service of a `[[sinks.sensorthings]]` entry.
pub struct SensorThingsService {
    http: Http,
    use_batch: bool,
    /// The service root lists the dataArray extension (found by the healthcheck).
    data_array: bool,
    things: HashMap<String, SensorEntities>,
    sensors: HashMap<SensorKind, Value>,
    properties: HashMap<&'static str, Value>,
    /// Rows of the batch in hand that the server confirmed (skipped when it is sent again).
    delivered: HashSet<RowKey>,
}

impl SensorThingsService {
    pub fn new(cfg: &SensorThingsSinkConfig) -> Result<SensorThingsService, String> {
        let client = reqwest::Client::builder()
            .timeout(cfg.common.batch.request_timeout)
            .connect_timeout(cfg.common.batch.request_timeout)
            .build()
            .map_err(|e| format!("sink {}: HTTP client: {e}", cfg.common.name))?;
        Ok(SensorThingsService {
            http: Http {
                client,
                base: cfg.common.url.trim_end_matches('/').to_string(),
                username: cfg.username.clone(),
                password: cfg.password.as_ref().map(|p| p.0.clone()),
            },
            use_batch: cfg.use_batch,
            data_array: false,
            things: HashMap::new(),
            sensors: HashMap::new(),
            properties: HashMap::new(),
            delivered: HashSet::new(),
        })
    }

    /// Forget every cached id (the server lost its entities).
    fn forget_all(&mut self) {
        self.things.clear();
        self.sensors.clear();
        self.properties.clear();
    }

    /// The Datastreams of the sensor of `env`, found or created (Thing, Location, Sensor,
    /// ObservedProperties included).
    async fn ensure(&mut self, env: &Envelope) -> Result<SensorEntities, Fail> {
        let obs = &env.obs;
        if let Some(e) = self.things.get(&*obs.sensor_id) {
            return Ok(e.clone());
        }
        let thing = self.http.find_or_create("Things", &obs.sensor_id, thing_body(env)).await?;
        let sensor = match self.sensors.get(&obs.kind) {
            Some(s) => s.clone(),
            None => {
                let s = self.http.find_or_create("Sensors", obs.kind.as_str(), sensor_body(obs.kind)).await?;
                self.sensors.insert(obs.kind, s.clone());
                s
            }
        };
        let mut datastreams = Vec::new();
        for q in obs.kind.quantities() {
            let property = match self.properties.get(q.name) {
                Some(p) => p.clone(),
                None => {
                    let p = self.http.find_or_create("ObservedProperties", q.name, property_body(q)).await?;
                    self.properties.insert(q.name, p.clone());
                    p
                }
            };
            let name = datastream_name(&obs.sensor_id, q);
            let body = datastream_body(&name, q, &thing, &sensor, &property);
            datastreams.push(self.http.find_or_create("Datastreams", &name, body).await?);
        }
        tracing::info!(sensor = %obs.sensor_id, thing = %thing, datastreams = datastreams.len(), "SensorThings entities ready");
        let entities = SensorEntities { datastreams };
        self.things.insert(obs.sensor_id.to_string(), entities.clone());
        Ok(entities)
    }

    /// Post `rows` (dataArray or one by one); what became of each, in order.
    async fn deliver(&mut self, rows: &[Row]) -> Vec<RowResult> {
        // First pass: the server's answer per row.
        let answers: Vec<Result<(), Fail>> = if self.use_batch && self.data_array {
            let refs: Vec<&Row> = rows.iter().collect();
            match self.http.create_observations(&refs).await {
                Ok(per_row) => per_row.into_iter().map(|r| r.map_err(|m| Fail::Status(400, m))).collect(),
                Err(e) => rows.iter().map(|_| Err(e.clone())).collect(),
            }
        } else {
            let http = self.http.clone();
            let mut answers: Vec<Option<Result<(), Fail>>> = rows.iter().map(|_| None).collect();
            let posts: Vec<_> = rows
                .iter()
                .enumerate()
                .map(|(i, row)| {
                    let body = json!({
                        "phenomenonTime": row.time,
                        "resultTime": row.time,
                        "result": row.result,
                        "Datastream": {"@iot.id": row.datastream},
                    });
                    let http = http.clone();
                    async move { (i, http.post_observation(body).await) }
                })
                .collect();
            let mut posts = futures::stream::iter(posts).buffer_unordered(CONCURRENT_POSTS);
            while let Some((i, r)) = posts.next().await {
                if r.is_ok() {
                    // Remembered at once: if this call is cut short, a retry skips it.
                    self.delivered.insert(rows[i].key.clone());
                }
                answers[i] = Some(r);
            }
            drop(posts);
            answers.into_iter().map(|a| a.unwrap_or_else(|| Err(Fail::Transport("not sent".into())))).collect()
        };

        // Refused rows: is their Datastream still there? (Asked once per Datastream.)
        let mut exists: Vec<(Value, Result<bool, Fail>)> = Vec::new();
        let mut out = Vec::with_capacity(rows.len());
        for (row, answer) in rows.iter().zip(answers) {
            let fail = match answer {
                Ok(()) => {
                    self.delivered.insert(row.key.clone());
                    out.push(RowResult::Done);
                    continue;
                }
                Err(f) => f,
            };
            if let Fail::Transport(m) = &fail {
                out.push(RowResult::Retry(m.clone()));
                continue;
            }
            let known = match exists.iter().find(|(ds, _)| *ds == row.datastream) {
                Some((_, r)) => r.clone(),
                None => {
                    let r = self.http.datastream_exists(&row.datastream).await;
                    exists.push((row.datastream.clone(), r.clone()));
                    r
                }
            };
            out.push(match known {
                Ok(false) => RowResult::Missing,
                Ok(true) if fail.is_retriable() => RowResult::Retry(fail.to_string()),
                Ok(true) => RowResult::Failed(fail.to_string()),
                Err(e) => RowResult::Retry(format!("{fail}; checking its Datastream: {e}")),
            });
        }
        out
    }
}

impl BatchService for SensorThingsService {
    /// `GET` the service root (it lists the entity sets and the conformance classes).
    async fn healthcheck(&mut self) -> Result<(), SendError> {
        let root = self.http.get_json(&format!("{}/", self.http.base)).await.map_err(|e| e.to_send_error())?;
        if root.get("value").and_then(Value::as_array).is_none() {
            return Err(SendError::Rejected(format!("{} is not a SensorThings service root: {root}", self.http.base)));
        }
        let conformance = root.pointer("/serverSettings/conformance").and_then(Value::as_array);
        self.data_array =
            conformance.is_some_and(|c| c.iter().filter_map(Value::as_str).any(|c| c.contains("/data-array")));
        tracing::debug!(url = %self.http.base, data_array = self.data_array, "SensorThings service root read");
        Ok(())
    }

    async fn send(&mut self, batch: &[Arc<Envelope>]) -> Result<BatchOutcome, SendError> {
        let mut failed: BTreeMap<usize, String> = BTreeMap::new();
        for round in 0..2 {
            // The entities of every sensor with rows still to send.
            let mut entities: HashMap<String, SensorEntities> = HashMap::new();
            let mut refused: HashMap<String, String> = HashMap::new();
            for (i, env) in batch.iter().enumerate() {
                let id: &str = &env.obs.sensor_id;
                if failed.contains_key(&i) || entities.contains_key(id) {
                    continue;
                }
                if let Some(reason) = refused.get(id) {
                    failed.insert(i, reason.clone());
                    continue;
                }
                match self.ensure(env).await {
                    Ok(e) => {
                        entities.insert(id.to_string(), e);
                    }
                    Err(f) if f.is_retriable() => return Err(SendError::Retriable(format!("setting up {id}: {f}"))),
                    Err(f) => {
                        let reason = format!("setting up the entities of {id}: {f}");
                        refused.insert(id.to_string(), reason.clone());
                        failed.insert(i, reason);
                    }
                }
            }
            let mut rows = Vec::new();
            for (i, env) in batch.iter().enumerate() {
                let Some(e) = entities.get(&*env.obs.sensor_id) else { continue };
                if failed.contains_key(&i) {
                    continue;
                }
                let time = env.obs.observed_at.to_rfc3339_opts(SecondsFormat::AutoSi, true);
                for (qi, (ds, value)) in e.datastreams.iter().zip(env.obs.values.iter()).enumerate() {
                    let key = (env.obs.sensor_id.clone(), env.obs.seq, qi);
                    if !self.delivered.contains(&key) {
                        rows.push(Row { entry: i, key, datastream: ds.clone(), time: time.clone(), result: *value });
                    }
                }
            }
            if rows.is_empty() {
                break;
            }
            let results = self.deliver(&rows).await;
            let mut missing = false;
            let mut retry = None;
            for (row, r) in rows.iter().zip(results) {
                match r {
                    RowResult::Done => {}
                    RowResult::Failed(reason) => {
                        failed.entry(row.entry).or_insert(reason);
                    }
                    RowResult::Retry(m) => retry = Some(m),
                    RowResult::Missing => missing = true,
                }
            }
            if missing {
                tracing::warn!(url = %self.http.base, "a cached Datastream is gone from the server: finding or creating the entities again");
                self.forget_all();
                if round == 0 {
                    continue;
                }
                retry = Some("Datastreams missing again right after being recreated".into());
            }
            if let Some(m) = retry {
                return Err(SendError::Retriable(m));
            }
            break;
        }
        // The batch is done with: its rows need not be remembered any more.
        for env in batch {
            for qi in 0..env.obs.values.len() {
                self.delivered.remove(&(env.obs.sensor_id.clone(), env.obs.seq, qi));
            }
        }
        Ok(BatchOutcome { failed: failed.into_iter().collect() })
    }
}

fn datastream_name(sensor_id: &str, q: &Quantity) -> String {
    format!("{sensor_id}:{}", q.name)
}

fn thing_body(env: &Envelope) -> Value {
    let obs = &env.obs;
    json!({
        "name": obs.sensor_id,
        "description": format!("{} sensor {} in {}, simulated by twinrt", obs.kind, obs.sensor_id, obs.district),
        "properties": {"type": obs.kind.as_str(), "district": obs.district},
        "Locations": [{
            "name": obs.sensor_id,
            "description": format!("Where {} stands ({})", obs.sensor_id, obs.district),
            "encodingType": "application/geo+json",
            "location": {"type": "Point", "coordinates": [obs.location.lon, obs.location.lat]},
        }],
    })
}

fn sensor_body(kind: SensorKind) -> Value {
    json!({
        "name": kind.as_str(),
        "description": format!("Simulated {kind} sensor (twinrt digital twin of Martinique)"),
        // The one encodingType every server accepts (django-ogc-sensorthings allows only
        // application/pdf, SensorML 2.0 and text/html).
        "encodingType": "text/html",
        "metadata": format!("twinrt {kind} twin model"),
    })
}

fn property_body(q: &Quantity) -> Value {
    json!({
        "name": q.name,
        "definition": format!("urn:twinrt:quantity:{}", q.name),
        "description": q.description,
    })
}

fn datastream_body(name: &str, q: &Quantity, thing: &Value, sensor: &Value, property: &Value) -> Value {
    let (unit_name, definition) = ucum_unit(q.unit);
    json!({
        "name": name,
        "description": q.description,
        "observationType": OM_MEASUREMENT,
        "unitOfMeasurement": {"name": unit_name, "symbol": q.unit, "definition": definition},
        "Thing": {"@iot.id": thing},
        "Sensor": {"@iot.id": sensor},
        "ObservedProperty": {"@iot.id": property},
    })
}

/// The name of a UCUM unit and its definition: the UCUM specification's paragraph (table)
/// that defines its main unit atom (§28 base units, §29 dimensionless, §30 SI units, §31
/// other ISO 1000 units, §46 levels).
pub fn ucum_unit(code: &str) -> (&'static str, String) {
    let (name, para) = match code {
        "/h" => ("per hour", Some(31)),
        "km/h" => ("kilometre per hour", Some(31)),
        "mm/h" => ("millimetre per hour", Some(31)),
        "h" => ("hour", Some(31)),
        "deg" => ("degree", Some(31)),
        "%" => ("percent", Some(29)),
        "[ppm]" => ("parts per million", Some(29)),
        "1" => ("one", Some(29)),
        "{spot}" => ("parking spot", Some(29)),
        "ug/m3" => ("microgram per cubic metre", Some(28)),
        "mm" => ("millimetre", Some(28)),
        "Cel" => ("degree Celsius", Some(30)),
        "hPa" => ("hectopascal", Some(30)),
        "W" => ("watt", Some(30)),
        "dB[SPL]" => ("decibel sound pressure level", Some(46)),
        _ => ("", None),
    };
    let name = if name.is_empty() { "unit" } else { name };
    let definition = match para {
        Some(p) => format!("http://unitsofmeasure.org/ucum.html#para-{p}"),
        None => "http://unitsofmeasure.org/ucum.html".to_string(),
    };
    (name, definition)
}

/// The id of an entity as written in a path: `42`, or `'text'` (quotes doubled, encoded).
pub fn id_segment(id: &Value) -> String {
    match id {
        Value::String(s) => format!("'{}'", percent_encode(&s.replace('\'', "''"))),
        other => other.to_string(),
    }
}

/// The id at the end of a `Location` header: `.../Things(42)` or `.../Things('a-b')`.
pub fn id_from_location(location: &str) -> Option<Value> {
    let open = location.rfind('(')?;
    let close = location.rfind(')')?;
    if close <= open + 1 {
        return None;
    }
    let inner = percent_decode(&location[open + 1..close]);
    if inner.len() >= 2 && inner.starts_with('\'') && inner.ends_with('\'') {
        return Some(Value::String(inner[1..inner.len() - 1].replace("''", "'")));
    }
    if let Ok(n) = inner.parse::<i64>() {
        return Some(Value::from(n));
    }
    Some(Value::String(inner))
}

/// Percent-encodes everything but RFC 3986's unreserved characters and `'`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'\'') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_location_headers_quoted_or_not() {
        assert_eq!(id_from_location("http://h/v1.1/Things(42)"), Some(json!(42)));
        assert_eq!(
            id_from_location("http://h/sta/v1.1/Things('01a21069-0321-76e3-997f-ec88e05d8a64')"),
            Some(json!("01a21069-0321-76e3-997f-ec88e05d8a64"))
        );
        assert_eq!(id_from_location("http://h/v1.1/Things('it''s')"), Some(json!("it's")));
        assert_eq!(id_from_location("http://h/v1.1/Things(%27a%20b%27)"), Some(json!("a b")));
        assert_eq!(id_from_location("http://h/v1.1/Things"), None);
        assert_eq!(id_from_location("http://h/v1.1/Things()"), None);
    }

    #[test]
    fn ids_are_written_back_as_the_server_gave_them() {
        assert_eq!(id_segment(&json!(42)), "42");
        assert_eq!(id_segment(&json!("01a2-ff")), "'01a2-ff'");
        assert_eq!(id_segment(&json!("it's")), "'it''s'");
    }

    #[test]
    fn filters_are_encoded() {
        assert_eq!(percent_encode("name eq 'a''b'"), "name%20eq%20'a''b'");
        assert_eq!(percent_encode("aq-fdf-01:pm2_5"), "aq-fdf-01%3Apm2_5");
    }

    #[test]
    fn every_unit_of_every_kind_has_a_name_and_a_ucum_paragraph() {
        for k in SensorKind::ALL {
            for q in k.quantities() {
                let (name, def) = ucum_unit(q.unit);
                assert_ne!(name, "unit", "{k}:{} ({})", q.name, q.unit);
                assert!(def.starts_with("http://unitsofmeasure.org/ucum.html#para-"), "{def}");
            }
        }
    }
}
