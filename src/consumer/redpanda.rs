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
//! 5. offer the observations to the sink with an [`AckGroup`], and fetch again (step 2)
//!    while the sink writes them, as long as fewer than `max_in_flight` observations (at
//!    most half the sink's queue, so they cannot push each other out) wait for it; beyond,
//!    wait, up to `ack_timeout` from its offer, for the oldest batch to be settled;
//! 6. settled batches are committed oldest first, and a batch only once every older one is
//!    stored (step 2). A batch not stored: nothing more is committed, the instance is
//!    deleted and recreated, and the next fetch reads again from the committed offsets (the
//!    API has no seek).
//!
//! A 404 on any instance call (the proxy expired or forgot the instance) recreates it.
//! Every call has a timeout. On shutdown, the worker finishes the batch in hand, commits
//! it, and deletes its instance.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        let (status, body) = self.call_bytes(rb, timeout, what).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// [`call`](Self::call), the body as it came.
    async fn call_bytes(
        &self,
        rb: reqwest::RequestBuilder,
        timeout: Duration,
        what: &str,
    ) -> Result<(StatusCode, Vec<u8>), CallError> {
        let fut = async {
            let resp = rb.send().await.map_err(|e| CallError::Failed(format!("{what}: {e}")))?;
            let status = resp.status();
            let body = resp.bytes().await.map_err(|e| CallError::Failed(format!("{what}: reading the answer: {e}")))?;
            Ok((status, body.to_vec()))
        };
        let (status, body) = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| CallError::Failed(format!("{what}: no answer within {timeout:?}")))??;
        let text = || String::from_utf8_lossy(&body).into_owned();
        if status == StatusCode::NOT_FOUND {
            return Err(CallError::NotFound(format!("{what}: HTTP 404: {}", truncated(&text()))));
        }
        if !status.is_success() {
            return Err(CallError::Failed(format!("{what}: HTTP {}: {}", status.as_u16(), truncated(&text()))));
        }
        Ok((status, body))
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
        let (_, body) = self.call_bytes(rb, self.fetch_timeout + self.request_timeout, "fetch").await?;
        decode_records(&body, self.max_payload_bytes).map_err(CallError::Failed)
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
pub fn decode_records(body: &[u8], max_payload: usize) -> Result<Vec<Fetched>, String> {
    // The common case, read straight into typed records; if any record has a field of an
    // unexpected type, the whole answer is read again as a JSON tree, record by record.
    if let Some(records) = super::fetch::records(body) {
        let mut buf = Vec::new();
        return Ok(records
            .iter()
            .map(|r| {
                let value = match &r.value {
                    Some(v) => RecordValue::Str(v),
                    None => RecordValue::Missing,
                };
                decode_record(r.topic.as_deref(), r.partition, r.offset, value, max_payload, &mut buf)
            })
            .collect());
    }
    let text = String::from_utf8_lossy(body);
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| format!("fetch: unreadable answer ({e}): {}", truncated(&text)))?;
    let items = match &doc {
        Value::Array(a) => a,
        Value::Object(o) => match o.get("records") {
            Some(Value::Array(a)) => a,
            _ => return Err(format!("fetch: no records array in {}", truncated(&text))),
        },
        _ => return Err(format!("fetch: no records array in {}", truncated(&text))),
    };
    let mut buf = Vec::new();
    Ok(items
        .iter()
        .map(|r| {
            let value = match r.get("value") {
                Some(Value::String(v)) => RecordValue::Str(v),
                Some(Value::Null) | None => RecordValue::Missing,
                Some(other) => RecordValue::Other(other.to_string()),
            };
            decode_record(
                r.get("topic").and_then(Value::as_str),
                r.get("partition").and_then(Value::as_i64),
                r.get("offset").and_then(Value::as_i64),
                value,
                max_payload,
                &mut buf,
            )
        })
        .collect())
}

/// A record's `value` member.
enum RecordValue<'a> {
    Str(&'a str),
    /// Absent or `null`.
    Missing,
    /// Anything else, as JSON.
    Other(String),
}

fn decode_record(
    topic: Option<&str>,
    partition: Option<i64>,
    offset: Option<i64>,
    value: RecordValue<'_>,
    max_payload: usize,
    buf: &mut Vec<u8>,
) -> Fetched {
    let position = match (topic, partition, offset) {
        (Some(t), Some(p), Some(o)) if o >= 0 => Some((t.to_string(), p, o)),
        _ => None,
    };
    let decoded = match value {
        RecordValue::Str(v) => match decode_base64(v.as_bytes(), buf) {
            Ok(()) if buf.len() > max_payload => {
                Err(format!("value of {} bytes exceeds max_payload_bytes ({max_payload})", buf.len()))
            }
            Ok(()) => Observation::from_mqtt_json(buf).map_err(|e| e.to_string()),
            Err(e) => Err(format!("value is not base64: {e}")),
        },
        RecordValue::Missing => Err("record without a value".to_string()),
        RecordValue::Other(other) => Err(format!("value is not a base64 string: {}", truncated(&other))),
    };
    let decoded = match (decoded, &position) {
        (Ok(obs), None) => Err(format!("record of {} without topic, partition or offset", obs.sensor_id)),
        (d, _) => d,
    };
    Fetched { position, decoded }
}

/// Standard base64 (with padding) into `buf`, cleared first. SIMD decoding (base64-simd)
/// first: with the scalar `base64` engine decoding was the largest single cost of a record
/// (13 % of the consumer's CPU in a profile). What it refuses is decoded again by `base64`,
/// which accepts exactly what it accepted before and names what is wrong (base64-simd's
/// error says only "Base64Error").
fn decode_base64(text: &[u8], buf: &mut Vec<u8>) -> Result<(), base64::DecodeError> {
    use base64::Engine as _;
    buf.clear();
    if base64_simd::STANDARD.decode_append(text, buf).is_ok() {
        return Ok(());
    }
    buf.clear();
    base64::engine::general_purpose::STANDARD.decode_vec(text, buf)
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

/// A fetched batch not yet wholly offered to the sink.
struct Fetch {
    obs: std::vec::IntoIter<Observation>,
    /// What committing it means, once all of it is stored.
    commit: PendingCommit,
}

/// A part of a fetched batch offered to the sink, waiting to be settled.
struct InFlight {
    group: Arc<AckGroup>,
    count: usize,
    /// The fetch's commit, on its last part only.
    commit: Option<PendingCommit>,
    offered: Instant,
}

/// The fetched batches between the proxy and the sink, oldest first.
struct Pipeline {
    window: usize,
    waiting: Option<Fetch>,
    in_flight: VecDeque<InFlight>,
    /// Observations offered and not yet settled.
    outstanding: usize,
}

impl Pipeline {
    fn new(window: usize) -> Pipeline {
        Pipeline { window: window.max(1), waiting: None, in_flight: VecDeque::new(), outstanding: 0 }
    }

    fn is_empty(&self) -> bool {
        self.waiting.is_none() && self.in_flight.is_empty()
    }

    /// Room for a new fetch: nothing waits to be offered and the window is not full.
    fn has_room(&self) -> bool {
        self.waiting.is_none() && self.outstanding < self.window
    }

    /// Offer what waits, as far as the window allows.
    fn offer(&mut self, h: &ConsumerHandle) {
        let Some(fetch) = self.waiting.as_mut() else { return };
        while self.outstanding < self.window || fetch.obs.len() == 0 {
            let part: Vec<Observation> =
                fetch.obs.by_ref().take(self.window - self.outstanding.min(self.window)).collect();
            let last = fetch.obs.len() == 0;
            let group = AckGroup::new(part.len());
            self.outstanding += part.len();
            let count = part.len();
            // One lock of the sink's queue and one wake-up for the whole part.
            h.sink.offer_all(part.into_iter().map(|o| Envelope::with_ack(o, group.clone())));
            let commit = last.then(|| std::mem::take(&mut fetch.commit));
            self.in_flight.push_back(InFlight { group, count, commit, offered: Instant::now() });
            if last {
                self.waiting = None;
                return;
            }
        }
    }

    /// Wait for the oldest part to be settled (up to `ack_timeout` from its offer) and add
    /// the commit it completes, if any, to the pending one; or say why it was not stored.
    async fn settle_oldest(&mut self, h: &ConsumerHandle) -> Result<(), String> {
        let Some(oldest) = self.in_flight.pop_front() else { return Ok(()) };
        self.outstanding = self.outstanding.saturating_sub(oldest.count);
        let left = h.config.ack_timeout.saturating_sub(oldest.offered.elapsed());
        match tokio::time::timeout(left, oldest.group.wait()).await {
            Ok(0) => {
                if let Some(c) = oldest.commit {
                    add_pending(h, c);
                }
                Ok(())
            }
            Ok(n) => Err(format!("sink {} did not store {n} observations (refused or dropped)", h.sink.name)),
            Err(_) => Err(format!(
                "sink {} did not store the batch within {:?} ({} pending)",
                h.sink.name,
                h.config.ack_timeout,
                oldest.group.pending()
            )),
        }
    }

    /// Offer and settle everything, oldest first, adding what it completes to the pending
    /// commit; stops at the first part not stored.
    async fn drain(&mut self, h: &ConsumerHandle) -> Result<(), String> {
        loop {
            self.offer(h);
            if self.in_flight.is_empty() {
                return Ok(());
            }
            self.settle_oldest(h).await?;
        }
    }

    /// Is the oldest part settled already?
    fn oldest_settled(&self) -> bool {
        self.in_flight.front().is_some_and(|f| f.group.pending() == 0)
    }

    /// Forget everything (it is read again from the committed offsets).
    fn clear(&mut self) {
        self.waiting = None;
        self.in_flight.clear();
        self.outstanding = 0;
    }
}

/// Add a settled batch's commit to what waits to be committed.
fn add_pending(h: &ConsumerHandle, c: PendingCommit) {
    if c.offsets.is_empty() {
        return;
    }
    let mut p = lock(&h.pending);
    let p = p.get_or_insert_with(PendingCommit::default);
    p.records += c.records;
    for (t, part, o) in c.offsets {
        match p.offsets.iter_mut().find(|(pt, pp, _)| *pt == t && *pp == part) {
            Some(e) => e.2 = e.2.max(o),
            None => p.offsets.push((t, part, o)),
        }
    }
}

/// The worker of a consumer actor (see the module documentation).
/// The sensor ids and districts of decoded observations, one allocation each: an
/// observation then shares them instead of bringing its own, which the sink thread would
/// free (a free from another thread takes the allocating thread's arena lock with glibc).
/// Bounded: past [`Names::MAX`] names (records of that many sensors) it starts again.
#[derive(Default)]
struct Names(rustc_hash::FxHashSet<Arc<str>>);

impl Names {
    const MAX: usize = 1 << 18;

    fn share(&mut self, name: &Arc<str>) -> Arc<str> {
        if let Some(known) = self.0.get(&**name) {
            return known.clone();
        }
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        self.0.insert(name.clone());
        name.clone()
    }
}

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
    let mut pipe = Pipeline::new(cfg.max_in_flight.min((h.sink.capacity() / 2).max(1)));
    // The last fetch found nothing: wait for the oldest batch in flight before the next.
    let mut drain_next = false;
    let mut names = Names::default();
    loop {
        if instance.is_none() {
            // What is in flight is stored first, and committed through the next instance
            // (offsets belong to the group), which would otherwise read it again.
            if let Err(e) = pipe.drain(&h).await {
                h.record_error(e);
                h.not_delivered.fetch_add(1, Ordering::Relaxed);
                pipe.clear();
            }
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

        // Settled batches, oldest first; then offer what waits; beyond the window (or when
        // stopping, or when there is nothing to fetch) wait for the oldest.
        let mut settled = Ok(());
        while settled.is_ok() && pipe.oldest_settled() {
            settled = pipe.settle_oldest(&h).await;
        }
        pipe.offer(&h);
        let must_wait = !pipe.has_room() || h.stopping() || std::mem::take(&mut drain_next);
        if settled.is_ok() && !pipe.is_empty() && must_wait {
            settled = pipe.settle_oldest(&h).await;
        }
        if let Err(e) = settled {
            // Not stored: read it all again from the committed offsets with a new instance.
            h.record_error(e);
            h.not_delivered.fetch_add(1, Ordering::Relaxed);
            pipe.clear();
            if let Err(e) = client.delete(&id).await {
                h.record_error(e.to_string());
            }
            *lock(&h.instance) = None;
            instance = None;
            if pause(&mut stop, cfg.poll_interval).await {
                break;
            }
            continue;
        }

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
                    if pause(&mut stop, cfg.poll_interval).await && pipe.is_empty() {
                        break;
                    }
                    continue;
                }
            }
        }
        if h.stopping() {
            if pipe.is_empty() {
                break;
            }
            continue;
        }
        if !pipe.has_room() {
            continue;
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
                if pause(&mut stop, cfg.poll_interval).await && pipe.is_empty() {
                    break;
                }
                continue;
            }
        };
        if records.is_empty() {
            // Nothing new: wait for what is in flight, else for the next poll.
            if pipe.is_empty() {
                if pause(&mut stop, cfg.poll_interval).await {
                    break;
                }
            } else {
                drain_next = true;
            }
            continue;
        }
        h.fetched.fetch_add(records.len() as u64, Ordering::Relaxed);
        let offsets = next_offsets(&records);
        let mut obs = Vec::with_capacity(records.len());
        let count = records.len() as u64;
        for r in records {
            match r.decoded {
                Ok(mut o) => {
                    o.sensor_id = names.share(&o.sensor_id);
                    o.district = names.share(&o.district);
                    obs.push(o);
                }
                Err(e) => {
                    h.bad.fetch_add(1, Ordering::Relaxed);
                    let at = r.position.as_ref().map(|(t, p, o)| format!("{t}/{p}@{o}")).unwrap_or_else(|| "?".into());
                    tracing::warn!(consumer = %h.name, record = %at, error = %e, "bad record skipped");
                }
            }
        }
        h.decoded.fetch_add(obs.len() as u64, Ordering::Relaxed);
        pipe.waiting = Some(Fetch { obs: obs.into_iter(), commit: PendingCommit { offsets, records: count } });
        pipe.offer(&h);
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
    use base64::Engine as _;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
    }

    #[test]
    fn base64_decoding_agrees_with_the_base64_crate_and_names_what_is_wrong() {
        let mut buf = vec![1, 2, 3];
        // Lengths around the SIMD blocks, every padding.
        for n in 0..200usize {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
            let text = base64::engine::general_purpose::STANDARD.encode(&bytes);
            decode_base64(text.as_bytes(), &mut buf).expect("valid base64");
            assert_eq!(buf, bytes, "length {n}");
        }
        for bad in ["%%% not base64", "aGVsbG8", "aGVsbG9=", "aGVs bG8=", "aGVsbG8=\n"] {
            let e = decode_base64(bad.as_bytes(), &mut buf).expect_err(bad);
            let simple = base64::engine::general_purpose::STANDARD.decode(bad).expect_err(bad);
            assert_eq!(e.to_string(), simple.to_string(), "{bad}");
        }
    }

    #[test]
    fn names_are_shared_and_bounded() {
        let mut names = Names::default();
        let a: Arc<str> = "aq-fdf-01".into();
        let first = names.share(&a);
        let again = names.share(&Arc::from("aq-fdf-01"));
        assert!(Arc::ptr_eq(&first, &again), "the second record shares the first one's name");
        for i in 0..Names::MAX + 1 {
            names.share(&Arc::from(format!("s-{i}")));
        }
        assert!(names.0.len() <= Names::MAX);
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
            values: twins::Values::filled(50.0, twins::SensorKind::Noise.quantities().len()),
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
        let recs = decode_records(text.as_bytes(), 65_536).expect("readable");
        assert_eq!(recs.len(), 5);
        let small = decode_records(text.as_bytes(), 64).expect("readable");
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
        assert_eq!(decode_records(arr.as_bytes(), 65_536).expect("readable").len(), 5);
        assert!(decode_records(b"{\"error_code\":40403}", 65_536).is_err());
        // A member of an unexpected type (a string partition) spoils only its record.
        let odd = json!([
            { "topic": "noise", "partition": "0", "offset": 1, "value": b64(good) },
            { "topic": "noise", "partition": 0, "offset": 2, "value": b64(good) }
        ])
        .to_string();
        let recs = decode_records(odd.as_bytes(), 65_536).expect("readable");
        assert!(recs[0].position.is_none() && recs[0].decoded.is_err(), "{:?}", recs[0]);
        assert_eq!(recs[1].position, Some(("noise".into(), 0, 2)));
        assert_eq!(recs[1].decoded.as_ref().ok(), Some(&obs));
    }
}
