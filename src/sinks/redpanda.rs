//! The Redpanda sink: records produced through Redpanda's HTTP Proxy (Pandaproxy, the
//! Kafka REST v2 API) with `POST /topics/{topic}` in the binary embedded format
//! (`application/vnd.kafka.binary.v2+json`): `{"records":[{"key": base64, "value": base64}]}`.
//!
//! One topic per sensor type (`topic_prefix` + `traffic`, `air-quality`, ...); the key is
//! the sensor id (so one sensor's records stay in one partition, in order), the value its
//! MQTT JSON. A batch is split by topic, keeping the order within each topic, one request
//! per topic. The proxy answers one `offsets` entry per record, in order; an entry with an
//! `error_code` is a record the broker refused, counted as failed. When a topic's request
//! fails with a retriable error, the batch is sent again *without* the topics that already
//! went through, so a retry does not duplicate them.

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine as _;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde::Deserialize;
use serde_json::json;

use super::batch::{classify_status, BatchOutcome, BatchService, SendError};
use super::queue::Envelope;
use crate::config::{RedpandaSinkConfig, Secret};

/// The binary embedded format of the Kafka REST v2 API (request body of a produce).
pub const BINARY_V2: &str = "application/vnd.kafka.binary.v2+json";
/// The API's own content type (responses, consumer calls).
pub const KAFKA_V2: &str = "application/vnd.kafka.v2+json";

pub struct RedpandaService {
    client: reqwest::Client,
    base: String,
    topic_prefix: String,
    token: Option<Secret>,
    /// The batch being retried (identity: its first envelope and length) and what of it
    /// already went through: topics done and the records refused in them.
    partial: Option<Partial>,
}

struct Partial {
    /// Held, so its address cannot be reused by another batch.
    first: Arc<Envelope>,
    len: usize,
    topics_done: HashSet<String>,
    failed: Vec<(usize, String)>,
}

/// One entry of the `offsets` array of a produce response.
#[derive(Debug, Deserialize)]
struct ProducedOffset {
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ProduceResponse {
    offsets: Vec<ProducedOffset>,
}

impl RedpandaService {
    pub fn new(cfg: &RedpandaSinkConfig) -> Result<RedpandaService, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.common.batch.request_timeout)
            .build()
            .map_err(|e| format!("sink {}: HTTP client: {e}", cfg.common.name))?;
        Ok(RedpandaService {
            client,
            base: cfg.common.url.clone(),
            topic_prefix: cfg.topic_prefix.clone(),
            token: cfg.common.token.clone(),
            partial: None,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, format!("{}{path}", self.base)).header(ACCEPT, KAFKA_V2);
        match &self.token {
            Some(t) => rb.bearer_auth(&t.0),
            None => rb,
        }
    }

    fn topic_of(&self, env: &Envelope) -> String {
        format!("{}{}", self.topic_prefix, env.obs.kind.as_str())
    }

    /// Produce the records `indices` of `batch` to `topic`; the refused ones (batch
    /// indices) are added to `failed`.
    async fn produce(
        &self,
        topic: &str,
        batch: &[Arc<Envelope>],
        indices: &[usize],
        failed: &mut Vec<(usize, String)>,
    ) -> Result<(), SendError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let records: Vec<serde_json::Value> = indices
            .iter()
            .map(|&i| {
                let obs = &batch[i].obs;
                json!({ "key": b64.encode(obs.sensor_id.as_bytes()), "value": b64.encode(obs.to_mqtt_json()) })
            })
            .collect();
        let body = serde_json::to_vec(&json!({ "records": records }))
            .map_err(|e| SendError::Rejected(format!("cannot encode the records: {e}")))?;
        let resp = self
            .request(reqwest::Method::POST, &format!("/topics/{topic}"))
            .header(CONTENT_TYPE, BINARY_V2)
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::Retriable(format!("topic {topic}: {e}")))?;
        let status = resp.status();
        let text =
            resp.text().await.map_err(|e| SendError::Retriable(format!("topic {topic}: reading the answer: {e}")))?;
        if !status.is_success() {
            return Err(match classify_status(status.as_u16(), &text) {
                SendError::Retriable(m) => SendError::Retriable(format!("topic {topic}: {m}")),
                SendError::Rejected(m) => SendError::Rejected(format!("topic {topic}: {m}")),
            });
        }
        // The records went in: a response we cannot read is reported, not retried (that
        // would duplicate them).
        let parsed: ProduceResponse = match serde_json::from_str(&text) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(topic, error = %e, "unreadable produce response; counting the records as sent");
                return Ok(());
            }
        };
        for (k, &i) in indices.iter().enumerate() {
            match parsed.offsets.get(k) {
                Some(o) if o.error_code.is_some_and(|c| c != 0) => {
                    let msg = o.message.as_deref().or(o.error.as_deref()).unwrap_or("refused");
                    failed.push((i, format!("topic {topic}: error_code {}: {msg}", o.error_code.unwrap_or_default())));
                }
                Some(_) => {}
                None => failed.push((i, format!("topic {topic}: no offset for this record in the response"))),
            }
        }
        Ok(())
    }
}

impl BatchService for RedpandaService {
    /// `GET /brokers`: the proxy answers and reaches its cluster.
    async fn healthcheck(&mut self) -> Result<(), SendError> {
        let resp = self
            .request(reqwest::Method::GET, "/brokers")
            .send()
            .await
            .map_err(|e| SendError::Retriable(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        // A healthcheck is retried whatever the answer: the proxy may be starting.
        Err(SendError::Retriable(match classify_status(status.as_u16(), &text) {
            SendError::Retriable(m) | SendError::Rejected(m) => m,
        }))
    }

    async fn send(&mut self, batch: &[Arc<Envelope>]) -> Result<BatchOutcome, SendError> {
        let Some(first) = batch.first() else { return Ok(BatchOutcome::default()) };
        let same = self.partial.as_ref().is_some_and(|p| Arc::ptr_eq(&p.first, first) && p.len == batch.len());
        if !same {
            self.partial = Some(Partial {
                first: first.clone(),
                len: batch.len(),
                topics_done: HashSet::new(),
                failed: Vec::new(),
            });
        }
        // Group by topic, in order of first appearance, keeping order within a topic.
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, env) in batch.iter().enumerate() {
            let topic = self.topic_of(env);
            match groups.iter_mut().find(|(t, _)| *t == topic) {
                Some((_, v)) => v.push(i),
                None => groups.push((topic, vec![i])),
            }
        }
        for (topic, indices) in groups {
            if self.partial.as_ref().is_some_and(|p| p.topics_done.contains(&topic)) {
                continue;
            }
            let mut failed = Vec::new();
            match self.produce(&topic, batch, &indices, &mut failed).await {
                Ok(()) => {}
                // This topic's records are refused as a whole (e.g. an unknown topic): the
                // other topics still go.
                Err(SendError::Rejected(msg)) => failed.extend(indices.iter().map(|&i| (i, msg.clone()))),
                Err(e @ SendError::Retriable(_)) => return Err(e),
            }
            if let Some(p) = self.partial.as_mut() {
                p.topics_done.insert(topic);
                p.failed.append(&mut failed);
            }
        }
        let failed = self.partial.take().map(|p| p.failed).unwrap_or_default();
        Ok(BatchOutcome { failed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produce_responses_with_and_without_errors_are_read() {
        let r: ProduceResponse = serde_json::from_str(
            r#"{"offsets":[{"partition":0,"offset":4},{"partition":0,"error_code":10,"offset":-1}]}"#,
        )
        .expect("parse");
        assert_eq!(r.offsets.len(), 2);
        assert_eq!(r.offsets[0].error_code, None);
        assert_eq!(r.offsets[1].error_code, Some(10));
    }
}
