//! The Redpanda consumer: a consumer group read through the HTTP Proxy's consumer API
//! (Pandaproxy, Kafka REST v2), written to an InfluxDB sink, at least once.
//!
//! The loop of [`run`]:
//! 1. create an instance (`POST /consumers/{group}`: binary format, `auto.offset.reset`
//!    earliest, `auto.commit.enable` false) and subscribe it to the topics;
//! 2. commit what the sink stored last time, if not yet done (`POST .../offsets` with the
//!    next offset to read per partition, Kafka's convention);
//! 3. fetch (`GET .../records?timeout=&max_bytes=`); nothing: wait `poll_interval`; a
//!    backlog is read without waiting;
//! 4. decode each record (base64, then the MQTT JSON); bad records are counted and skipped,
//!    but their offsets are committed with the rest, so they never block the group;
//! 5. offer the observations to the sink with an [`AckGroup`] (in chunks no larger than
//!    half the sink's queue, so they cannot push each other out) and wait, up to
//!    `ack_timeout`, for the sink to settle them;
//! 6. all stored: commit (step 2). Otherwise nothing is committed: the instance is deleted
//!    and recreated, and the next fetch reads again from the committed offsets (the API
//!    has no seek).
//!
//! A 404 on any instance call (the proxy expired or forgot the instance) recreates it.
//! Every call has a timeout. On shutdown, the worker finishes the batch in hand, commits
//! it, and deletes its instance.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use twins::Observation;

use super::{lock, ConsumerHandle, PendingCommit};
use crate::actors::now_ms;
use crate::config::RedpandaConsumerConfig;
use crate::sinks::redpanda::{BINARY_V2, KAFKA_V2};
use crate::sinks::{AckGroup, Envelope};

/// Why a call to the proxy failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// 404: the instance (or group) is unknown to the proxy: recreate it.
    NotFound(String),
    /// Anything else (down, timeout, 5xx, an answer that cannot be read).
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NotFound(m) => write!(f, "not found: {m}"),
            CallError::Failed(m) => f.write_str(m),
        }
    }
}

/// One fetched record, as far as it could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    /// Where it sits, for the commit; `None` when the proxy did not say (never committed past).
    pub position: Option<(String, i64, i64)>,
    pub decoded: Result<Observation, String>,
}

/// The HTTP side of the consumer: one method per call of the API.
pub struct ProxyClient {
    client: reqwest::Client,
    base: String,
    group: String,
    topics: Vec<String>,
    fetch_timeout: Duration,
    fetch_max_bytes: u64,
    max_payload_bytes: usize,
    request_timeout: Duration,
}

fn truncated(s: &str) -> &str {
    let s = s.trim();
    match s.char_indices().nth(300) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl ProxyClient {
    pub fn new(cfg: &RedpandaConsumerConfig) -> Result<ProxyClient, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.request_timeout)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(ProxyClient {
            client,
            base: cfg.url.clone(),
            group: cfg.group.clone(),
            topics: cfg.topics.clone(),
            fetch_timeout: cfg.fetch_timeout,
            fetch_max_bytes: cfg.fetch_max_bytes,
            max_payload_bytes: cfg.max_payload_bytes,
            request_timeout: cfg.request_timeout,
        })
    }

    fn instance_path(&self, id: &str) -> String {
        format!("{}/consumers/{}/instances/{id}", self.base, self.group)
    }

    /// Send with a timeout; the status and body of the answer.
    async fn call(
        &self,
        rb: reqwest::RequestBuilder,
        timeout: Duration,
        what: &str,
    ) -> Result<(StatusCode, String), CallError> {
        let fut = async {
            let resp = rb.send().await.map_err(|e| CallError::Failed(format!("{what}: {e}")))?;
            let status = resp.status();
            let text = resp.text().await.map_err(|e| CallError::Failed(format!("{what}: reading the answer: {e}")))?;
            Ok((status, text))
        };
        let (status, text) = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| CallError::Failed(format!("{what}: no answer within {timeout:?}")))??;
        if status == StatusCode::NOT_FOUND {
            return Err(CallError::NotFound(format!("{what}: HTTP 404: {}", truncated(&text))));
        }
        if !status.is_success() {
            return Err(CallError::Failed(format!("{what}: HTTP {}: {}", status.as_u16(), truncated(&text))));
        }
        Ok((status, text))
    }

    fn json_request(&self, method: reqwest::Method, url: String, body: &Value) -> reqwest::RequestBuilder {
        self.client.request(method, url).header(CONTENT_TYPE, KAFKA_V2).header(ACCEPT, KAFKA_V2).body(body.to_string())
    }

    /// Create an instance of the group and subscribe it to the topics; its id.
    pub async fn create(&self) -> Result<String, CallError> {
        let body = json!({ "format": "binary", "auto.offset.reset": "earliest", "auto.commit.enable": "false" });
        let url = format!("{}/consumers/{}", self.base, self.group);
        let (_, text) = self
            .call(self.json_request(reqwest::Method::POST, url, &body), self.request_timeout, "create consumer")
            .await?;
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            CallError::Failed(format!("create consumer: unreadable answer ({e}): {}", truncated(&text)))
        })?;
        let id = v
            .get("instance_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty() && !id.contains(['/', '?', '#']))
            .ok_or_else(|| {
                CallError::Failed(format!("create consumer: no usable instance_id in {}", truncated(&text)))
            })?
            .to_string();
        let body = json!({ "topics": self.topics });
        let url = format!("{}/subscription", self.instance_path(&id));
        if let Err(e) =
            self.call(self.json_request(reqwest::Method::POST, url, &body), self.request_timeout, "subscribe").await
        {
            let _ = self.delete(&id).await;
            return Err(e);
        }
        Ok(id)
    }

    /// Fetch what the instance has next.
    pub async fn fetch(&self, id: &str) -> Result<Vec<Fetched>, CallError> {
        let url = format!(
            "{}/records?timeout={}&max_bytes={}",
            self.instance_path(id),
            self.fetch_timeout.as_millis(),
            self.fetch_max_bytes
        );
        let rb = self.client.get(url).header(ACCEPT, BINARY_V2);
        let (_, text) = self.call(rb, self.fetch_timeout + self.request_timeout, "fetch").await?;
        decode_records(&text, self.max_payload_bytes).map_err(CallError::Failed)
    }

    /// Commit `(topic, partition, next offset)` for the group.
    pub async fn commit(&self, id: &str, offsets: &[(String, i64, i64)]) -> Result<(), CallError> {
        let partitions: Vec<Value> =
            offsets.iter().map(|(t, p, o)| json!({ "topic": t, "partition": p, "offset": o })).collect();
        let url = format!("{}/offsets", self.instance_path(id));
        let body = json!({ "partitions": partitions });
        self.call(self.json_request(reqwest::Method::POST, url, &body), self.request_timeout, "commit offsets").await?;
        Ok(())
    }

    /// Delete the instance (a 404 means it is gone already).
    pub async fn delete(&self, id: &str) -> Result<(), CallError> {
        let rb = self.client.delete(self.instance_path(id)).header(CONTENT_TYPE, KAFKA_V2).header(ACCEPT, KAFKA_V2);
        match self.call(rb, self.request_timeout, "delete consumer").await {
            Ok(_) | Err(CallError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Read a fetch answer: the API document's `{"records": [...]}`, or the bare array real
/// proxies send. Records are read one by one: a bad one never spoils the others.
/// A record value longer than `max_payload` bytes (decoded) is a bad record.
pub fn decode_records(text: &str, max_payload: usize) -> Result<Vec<Fetched>, String> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| format!("fetch: unreadable answer ({e}): {}", truncated(text)))?;
    let items = match &doc {
        Value::Array(a) => a,
        Value::Object(o) => match o.get("records") {
            Some(Value::Array(a)) => a,
            _ => return Err(format!("fetch: no records array in {}", truncated(text))),
        },
        _ => return Err(format!("fetch: no records array in {}", truncated(text))),
    };
    Ok(items.iter().map(|r| decode_record(r, max_payload)).collect())
}

fn decode_record(r: &Value, max_payload: usize) -> Fetched {
    let position = match (
        r.get("topic").and_then(Value::as_str),
        r.get("partition").and_then(Value::as_i64),
        r.get("offset").and_then(Value::as_i64),
    ) {
        (Some(t), Some(p), Some(o)) if o >= 0 => Some((t.to_string(), p, o)),
        _ => None,
    };
    let decoded = match r.get("value") {
        Some(Value::String(v)) => match base64::engine::general_purpose::STANDARD.decode(v.as_bytes()) {
            Ok(bytes) if bytes.len() > max_payload => {
                Err(format!("value of {} bytes exceeds max_payload_bytes ({max_payload})", bytes.len()))
            }
            Ok(bytes) => Observation::from_mqtt_json(&bytes).map_err(|e| e.to_string()),
            Err(e) => Err(format!("value is not base64: {e}")),
        },
        Some(Value::Null) | None => Err("record without a value".to_string()),
        Some(other) => Err(format!("value is not a base64 string: {}", truncated(&other.to_string()))),
    };
    let decoded = match (decoded, &position) {
        (Ok(obs), None) => Err(format!("record of {} without topic, partition or offset", obs.sensor_id)),
        (d, _) => d,
    };
    Fetched { position, decoded }
}

/// The next offsets to commit for these records: per (topic, partition), the highest
/// offset + 1.
pub fn next_offsets(records: &[Fetched]) -> Vec<(String, i64, i64)> {
    let mut next: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for (t, p, o) in records.iter().filter_map(|r| r.position.as_ref()) {
        let e = next.entry((t.clone(), *p)).or_insert(o + 1);
        *e = (*e).max(o + 1);
    }
    next.into_iter().map(|((t, p), o)| (t, p, o)).collect()
}

/// Wait `d`, or less if a stop is asked. Returns whether a stop was asked.
async fn pause(stop: &mut tokio::sync::watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    let _ = tokio::time::timeout(d, stop.changed()).await;
    *stop.borrow()
}

/// Offer the observations to the sink and wait until it stored them all (true), or one was
/// refused or dropped, or `ack_timeout` passed (false).
async fn deliver(h: &ConsumerHandle, obs: Vec<Observation>) -> bool {
    let chunk = (h.sink.capacity() / 2).max(1);
    let mut rest = obs.into_iter().peekable();
    while rest.peek().is_some() {
        let part: Vec<Observation> = rest.by_ref().take(chunk).collect();
        let group = AckGroup::new(part.len());
        for o in part {
            h.sink.offer(Envelope::with_ack(o, group.clone()));
        }
        match tokio::time::timeout(h.config.ack_timeout, group.wait()).await {
            Ok(0) => {}
            Ok(n) => {
                h.record_error(format!("sink {} did not store {n} observations (refused or dropped)", h.sink.name));
                return false;
            }
            Err(_) => {
                h.record_error(format!(
                    "sink {} did not store the batch within {:?} ({} pending)",
                    h.sink.name,
                    h.config.ack_timeout,
                    group.pending()
                ));
                return false;
            }
        }
    }
    true
}

/// The worker of a consumer actor (see the module documentation).
pub async fn run(h: Arc<ConsumerHandle>) {
    let cfg = h.config.clone();
    let client = match ProxyClient::new(&cfg) {
        Ok(c) => c,
        Err(e) => {
            h.record_error(e);
            h.set_finished();
            return;
        }
    };
    let mut stop = h.stop_signal();
    let mut instance: Option<String> = lock(&h.instance).clone();
    loop {
        if instance.is_none() {
            if h.stopping() {
                break;
            }
            match client.create().await {
                Ok(id) => {
                    tracing::info!(consumer = %h.name, instance = %id, group = %cfg.group, "consumer instance created");
                    h.instances_created.fetch_add(1, Ordering::Relaxed);
                    *lock(&h.instance) = Some(id.clone());
                    instance = Some(id);
                }
                Err(e) => {
                    h.record_error(e.to_string());
                    if pause(&mut stop, cfg.poll_interval).await {
                        break;
                    }
                    continue;
                }
            }
        }
        let Some(id) = instance.clone() else { continue };
        let lost = |h: &ConsumerHandle, e: CallError| {
            h.instances_expired.fetch_add(1, Ordering::Relaxed);
            h.record_error(format!("instance {id} lost, recreating it: {e}"));
            *lock(&h.instance) = None;
        };

        // What the sink stored is committed first (also when stopping).
        let pending = lock(&h.pending).clone();
        if let Some(p) = pending {
            match client.commit(&id, &p.offsets).await {
                Ok(()) => {
                    h.committed.fetch_add(p.records, Ordering::Relaxed);
                    *lock(&h.pending) = None;
                }
                Err(e @ CallError::NotFound(_)) => {
                    // Committed through the next instance: offsets belong to the group.
                    lost(&h, e);
                    instance = None;
                    continue;
                }
                Err(e) => {
                    h.record_error(e.to_string());
                    if pause(&mut stop, cfg.poll_interval).await {
                        break;
                    }
                    continue;
                }
            }
        }
        if h.stopping() {
            break;
        }

        h.last_poll_ms.store(now_ms(), Ordering::Relaxed);
        let records = match client.fetch(&id).await {
            Ok(r) => r,
            Err(e @ CallError::NotFound(_)) => {
                lost(&h, e);
                instance = None;
                continue;
            }
            Err(e) => {
                h.record_error(e.to_string());
                if pause(&mut stop, cfg.poll_interval).await {
                    break;
                }
                continue;
            }
        };
        if records.is_empty() {
            if pause(&mut stop, cfg.poll_interval).await {
                break;
            }
            continue;
        }
        h.fetched.fetch_add(records.len() as u64, Ordering::Relaxed);
        let offsets = next_offsets(&records);
        let mut obs = Vec::with_capacity(records.len());
        for r in &records {
            match &r.decoded {
                Ok(o) => obs.push(o.clone()),
                Err(e) => {
                    h.bad.fetch_add(1, Ordering::Relaxed);
                    let at = r.position.as_ref().map(|(t, p, o)| format!("{t}/{p}@{o}")).unwrap_or_else(|| "?".into());
                    tracing::warn!(consumer = %h.name, record = %at, error = %e, "bad record skipped");
                }
            }
        }
        h.decoded.fetch_add(obs.len() as u64, Ordering::Relaxed);
        if deliver(&h, obs).await {
            if !offsets.is_empty() {
                *lock(&h.pending) = Some(PendingCommit { offsets, records: records.len() as u64 });
            }
            continue;
        }
        // Not stored: read it all again from the committed offsets with a new instance.
        h.not_delivered.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = client.delete(&id).await {
            h.record_error(e.to_string());
        }
        *lock(&h.instance) = None;
        instance = None;
        if pause(&mut stop, cfg.poll_interval).await {
            break;
        }
    }
    let left = lock(&h.instance).take();
    if let Some(id) = left {
        match client.delete(&id).await {
            Ok(()) => tracing::info!(consumer = %h.name, instance = %id, "consumer instance deleted"),
            Err(e) => h.record_error(e.to_string()),
        }
    }
    h.set_finished();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
    }

    #[test]
    fn records_are_decoded_one_by_one_and_offsets_cover_the_bad_ones() {
        let obs = Observation {
            sensor_id: "n1".into(),
            kind: twins::SensorKind::Noise,
            seq: 3,
            observed_at: "2026-06-21T10:00:00Z".parse().expect("time"),
            location: twins::GeoPoint { lat: 14.6, lon: -61.07 },
            district: "Fort-de-France".into(),
            values: vec![50.0; twins::SensorKind::Noise.quantities().len()],
        };
        let good = String::from_utf8(obs.to_mqtt_json()).expect("utf-8");
        let good = good.as_str();
        let text = json!({ "records": [
            { "topic": "noise", "partition": 0, "offset": 7, "key": b64("n1"), "value": b64(good) },
            { "topic": "noise", "partition": 0, "offset": 8, "key": null, "value": "%%% not base64" },
            { "topic": "noise", "partition": 0, "offset": 9, "value": b64("{not json") },
            { "topic": "traffic", "partition": 1, "offset": 2, "value": b64(&good.replace("\"noise\"", "\"toaster\"")) },
            { "topic": "traffic", "partition": 1 }
        ]})
        .to_string();
        let recs = decode_records(&text, 65_536).expect("readable");
        assert_eq!(recs.len(), 5);
        let small = decode_records(&text, 64).expect("readable");
        assert!(
            small[0].decoded.as_ref().is_err_and(|e| e.contains("exceeds max_payload_bytes (64)")),
            "{:?}",
            small[0]
        );
        assert_eq!(recs[0].decoded.as_ref().ok(), Some(&obs), "{:?}", recs[0].decoded);
        assert!(recs[1].decoded.as_ref().is_err_and(|e| e.contains("base64")));
        assert!(recs[2].decoded.as_ref().is_err_and(|e| e.contains("JSON")));
        assert!(recs[3].decoded.as_ref().is_err_and(|e| e.contains("toaster")));
        assert!(recs[4].decoded.is_err() && recs[4].position.is_none());
        assert_eq!(next_offsets(&recs), vec![("noise".into(), 0, 10), ("traffic".into(), 1, 3)]);
        // The bare array of real proxies reads the same.
        let arr = serde_json::from_str::<Value>(&text).expect("json")["records"].to_string();
        assert_eq!(decode_records(&arr, 65_536).expect("readable").len(), 5);
        assert!(decode_records("{\"error_code\":40403}", 65_536).is_err());
    }
}
