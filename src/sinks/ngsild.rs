//! The NGSI-LD sink (Orion-LD, Stellio, any number of brokers): observations become FIWARE
//! Smart Data Models entities (`twins::ngsild`) written with batch upserts
//! (`POST {url}/ngsi-ld/v1/entityOperations/upsert`), batched by the [`batch`](super::batch)
//! driver.
//!
//! - `@context`: with `context_mode = "link"`, `Content-Type: application/json` and a JSON-LD
//!   `Link` header (one context: NGSI-LD allows one Link header; several configured contexts
//!   are sent inline instead, with a warning at start); with `"inline"`,
//!   `Content-Type: application/ld+json` and `@context` in every entity.
//! - `NGSILD-Tenant` when configured, `Authorization: Bearer` when a token is.
//! - An upsert must not name one entity twice, so a batch is split into requests in which
//!   each id appears at most once, in order; results are mapped back to batch indices.
//! - 201 / 204: all written. 207: the `errors` of the BatchOperationResult are counted per
//!   entity as failed. Other statuses: [`classify_status`]. No answer: retriable.
//! - When a later request of a split batch fails retriably, the driver sends the whole batch
//!   again: the requests already answered are remembered and not sent twice.
//! - Health check: `GET {url}/ngsi-ld/v1/types` without the tenant (brokers answer 404 for a
//!   tenant until its first write), any 2xx.

use std::collections::HashSet;
use std::sync::Arc;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LINK};
use serde_json::Value;

use super::batch::{classify_status, BatchOutcome, BatchService, SendError};
use super::queue::Envelope;
use crate::config::{ContextMode, NgsiLdSinkConfig};

/// The `rel` of a JSON-LD context `Link` header.
const JSONLD_CONTEXT_REL: &str = "http://www.w3.org/ns/json-ld#context";

pub struct NgsiLdService {
    name: String,
    client: reqwest::Client,
    upsert_url: String,
    types_url: String,
    /// Headers of every upsert (content type, accept, link, tenant, authorization).
    upsert_headers: HeaderMap,
    /// Headers of the health check (no tenant).
    health_headers: HeaderMap,
    /// The `@context` put in every entity (inline mode).
    inline_context: Option<Value>,
    /// What was already answered of the batch being retried.
    progress: Option<Progress>,
}

/// The requests of a split batch already answered, kept while the driver retries it.
struct Progress {
    /// Identity of the batch: each envelope's address and sequence number.
    key: Vec<(usize, u64)>,
    /// Requests answered so far.
    done: usize,
    /// Failures reported by them (batch indices).
    failed: Vec<(usize, String)>,
}

fn batch_key(batch: &[Arc<Envelope>]) -> Vec<(usize, u64)> {
    batch.iter().map(|e| (Arc::as_ptr(e) as usize, e.obs.seq)).collect()
}

fn header(name: &str, value: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(value).map_err(|_| format!("{name}: {value:?} is not a valid HTTP header value"))
}

/// Split a batch so that no request names an entity twice: runs of indices, in order.
pub fn split_unique_ids(ids: &[String]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut seen: HashSet<&str> = HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        if !seen.insert(id.as_str()) {
            out.push(start..i);
            start = i;
            seen.clear();
            seen.insert(id.as_str());
        }
    }
    if start < ids.len() {
        out.push(start..ids.len());
    }
    out
}

/// The failed entries of a 207 BatchOperationResult, as (index in `ids`, reason). An entity
/// named in `errors` that is not in the request is ignored; an unreadable body fails them all.
pub fn read_multi_status(body: &str, ids: &[String]) -> Vec<(usize, String)> {
    let doc: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => {
            let reason = format!("HTTP 207 with an unreadable BatchOperationResult: {e}");
            return (0..ids.len()).map(|i| (i, reason.clone())).collect();
        }
    };
    let Some(errors) = doc.get("errors").and_then(Value::as_array) else {
        if doc.get("success").is_some_and(Value::is_array) {
            return Vec::new();
        }
        let reason = "HTTP 207 without success or errors arrays".to_string();
        return (0..ids.len()).map(|i| (i, reason.clone())).collect();
    };
    let mut out = Vec::new();
    for e in errors {
        let Some(id) = e.get("entityId").and_then(Value::as_str) else { continue };
        let Some(i) = ids.iter().position(|x| x == id) else { continue };
        let pd = e.get("error");
        let text = |k: &str| pd.and_then(|p| p.get(k)).and_then(Value::as_str).unwrap_or("");
        let status = pd.and_then(|p| p.get("status")).and_then(Value::as_u64);
        let mut reason = format!("{id}:");
        for part in [text("title"), text("detail")] {
            if !part.is_empty() {
                reason.push(' ');
                reason.push_str(part);
            }
        }
        if reason.ends_with(':') {
            reason.push(' ');
            reason.push_str(text("type"));
        }
        if let Some(s) = status {
            reason.push_str(&format!(" ({s})"));
        }
        out.push((i, reason));
    }
    out.sort_by_key(|(i, _)| *i);
    out.dedup_by_key(|(i, _)| *i);
    out
}

impl NgsiLdService {
    pub fn new(cfg: &NgsiLdSinkConfig) -> Result<NgsiLdService, String> {
        let name = cfg.common.name.clone();
        let err = |e: String| format!("sink {name}: {e}");
        if cfg.context.is_empty() {
            return Err(err("no @context configured".into()));
        }
        let inline = cfg.context_mode == ContextMode::Inline || cfg.context.len() > 1;
        if cfg.context_mode == ContextMode::Link && cfg.context.len() > 1 {
            tracing::warn!(sink = %name, contexts = cfg.context.len(),
                "NGSI-LD takes one context in a Link header: sending the contexts inline (application/ld+json)");
        }
        let mut common = HeaderMap::new();
        common.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(t) = &cfg.common.token {
            let mut v = header("token", &format!("Bearer {}", t.0)).map_err(err)?;
            v.set_sensitive(true);
            common.insert(AUTHORIZATION, v);
        }
        let link = format!("<{}>; rel=\"{JSONLD_CONTEXT_REL}\"; type=\"application/ld+json\"", cfg.context[0]);
        let link = header("context", &link).map_err(err)?;
        let mut health_headers = common.clone();
        health_headers.insert(LINK, link.clone());
        let mut upsert_headers = common;
        if inline {
            upsert_headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/ld+json"));
        } else {
            upsert_headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            upsert_headers.insert(LINK, link);
        }
        if let Some(t) = &cfg.tenant {
            upsert_headers.insert("NGSILD-Tenant", header("tenant", t).map_err(err)?);
        }
        let inline_context = inline.then(|| match cfg.context.as_slice() {
            [one] => Value::String(one.clone()),
            many => Value::Array(many.iter().cloned().map(Value::String).collect()),
        });
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.common.batch.request_timeout)
            .timeout(cfg.common.batch.request_timeout)
            .build()
            .map_err(|e| err(format!("HTTP client: {e}")))?;
        let base = format!("{}/ngsi-ld/v1", cfg.common.url);
        Ok(NgsiLdService {
            name,
            client,
            upsert_url: format!("{base}/entityOperations/upsert"),
            types_url: format!("{base}/types"),
            upsert_headers,
            health_headers,
            inline_context,
            progress: None,
        })
    }

    /// The body of one upsert: the entities of `batch[range]`, normalized.
    fn body(&self, batch: &[Arc<Envelope>]) -> Result<Vec<u8>, SendError> {
        let entities: Vec<Value> = batch
            .iter()
            .map(|env| {
                let mut e = env.obs.to_ngsi_ld();
                if let (Some(ctx), Some(o)) = (&self.inline_context, e.as_object_mut()) {
                    o.insert("@context".into(), ctx.clone());
                }
                e
            })
            .collect();
        serde_json::to_vec(&entities).map_err(|e| SendError::Rejected(format!("cannot encode entities: {e}")))
    }

    /// One upsert request: the failed entries (indices in `part`), or why it failed whole.
    async fn upsert(&self, part: &[Arc<Envelope>], ids: &[String]) -> Result<Vec<(usize, String)>, SendError> {
        let body = self.body(part)?;
        let resp = self
            .client
            .post(&self.upsert_url)
            .headers(self.upsert_headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::Retriable(format!("POST {}: {}", self.upsert_url, error_chain(&e))))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        match status {
            200 | 201 | 204 => Ok(Vec::new()),
            207 => Ok(read_multi_status(&text, ids)),
            _ => Err(classify_status(status, &text)),
        }
    }
}

/// A reqwest error with its sources (connection refused is two levels down).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

impl BatchService for NgsiLdService {
    async fn healthcheck(&mut self) -> Result<(), SendError> {
        let resp = self
            .client
            .get(&self.types_url)
            .headers(self.health_headers.clone())
            .send()
            .await
            .map_err(|e| SendError::Retriable(format!("GET {}: {}", self.types_url, error_chain(&e))))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            let text = resp.text().await.unwrap_or_default();
            Err(classify_status(status.as_u16(), &text))
        }
    }

    async fn send(&mut self, batch: &[Arc<Envelope>]) -> Result<BatchOutcome, SendError> {
        let ids: Vec<String> = batch.iter().map(|e| e.obs.ngsi_ld_id()).collect();
        let parts = split_unique_ids(&ids);
        let key = batch_key(batch);
        let mut progress = match self.progress.take() {
            Some(p) if p.key == key => p,
            _ => Progress { key, done: 0, failed: Vec::new() },
        };
        let single = parts.len() == 1;
        for range in parts.iter().skip(progress.done) {
            match self.upsert(&batch[range.clone()], &ids[range.clone()]).await {
                Ok(failed) => progress.failed.extend(failed.into_iter().map(|(i, r)| (range.start + i, r))),
                // A split batch: the other requests went (or may go) through; count this
                // one's entries as failed rather than the whole batch.
                Err(SendError::Rejected(msg)) if !single => {
                    tracing::warn!(sink = %self.name, entries = range.len(), error = %msg, "upsert rejected");
                    progress.failed.extend(range.clone().map(|i| (i, msg.clone())));
                }
                Err(e) => {
                    if matches!(e, SendError::Retriable(_)) {
                        self.progress = Some(progress);
                    }
                    return Err(e);
                }
            }
            progress.done += 1;
        }
        Ok(BatchOutcome { failed: progress.failed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn batches_are_split_so_each_request_names_an_entity_once() {
        assert!(split_unique_ids(&ids(&[])).is_empty());
        assert_eq!(split_unique_ids(&ids(&["a", "b", "c"])), vec![0..3]);
        assert_eq!(split_unique_ids(&ids(&["a", "b", "a", "c", "b", "b"])), vec![0..2, 2..5, 5..6]);
    }

    #[test]
    fn multi_status_errors_map_back_to_indices() {
        let body = r#"{"success":["urn:a"],"errors":[
            {"entityId":"urn:c","error":{"type":"https://uri.etsi.org/ngsi-ld/errors/BadRequestData","title":"Bad request","status":400,"detail":"no value"}},
            {"entityId":"urn:zz","error":{"status":400,"detail":"not ours"}}]}"#;
        let f = read_multi_status(body, &ids(&["urn:a", "urn:b", "urn:c"]));
        assert_eq!(f, vec![(2, "urn:c: Bad request no value (400)".to_string())]);
        assert!(read_multi_status(r#"{"success":["urn:a"]}"#, &ids(&["urn:a"])).is_empty());
        assert_eq!(read_multi_status("<html>", &ids(&["urn:a", "urn:b"])).len(), 2);
    }
}
