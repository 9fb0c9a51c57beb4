//! The InfluxDB v2 sink: observations as line protocol (`twins::line_protocol`) through the
//! v2 write API (`POST /api/v2/write?org=..&bucket=..&precision=ms`), with the `influxdb2`
//! client, batched by the [`batch`](super::batch) driver (default 5,000 lines, as InfluxData
//! advises), gzipped when configured.

use std::sync::Arc;

use influxdb2::api::write::TimestampPrecision;
use influxdb2::RequestError;

use super::batch::{classify_status, BatchOutcome, BatchService, SendError};
use super::queue::Envelope;
use crate::config::InfluxDbSinkConfig;

pub struct InfluxDbService {
    client: influxdb2::Client,
    org: String,
    bucket: String,
    body: String,
}

impl InfluxDbService {
    pub fn new(cfg: &InfluxDbSinkConfig) -> Result<InfluxDbService, String> {
        let token = cfg.common.token.as_ref().map(|t| t.0.clone()).unwrap_or_default();
        let client = influxdb2::ClientBuilder::new(cfg.common.url.clone(), cfg.org.clone(), token)
            .gzip(cfg.gzip)
            .build()
            .map_err(|e| format!("sink {}: InfluxDB client: {e}", cfg.common.name))?;
        Ok(InfluxDbService { client, org: cfg.org.clone(), bucket: cfg.bucket.clone(), body: String::new() })
    }

    async fn write(&self, body: String) -> Result<(), SendError> {
        self.client
            .write_line_protocol_with_precision(&self.org, &self.bucket, body, TimestampPrecision::Milliseconds)
            .await
            .map_err(classify)
    }
}

fn classify(e: RequestError) -> SendError {
    match e {
        RequestError::Http { status, text } => classify_status(status.as_u16(), &text),
        // Connection refused, reset, timeout: the server is down or unreachable.
        other => SendError::Retriable(other.to_string()),
    }
}

impl BatchService for InfluxDbService {
    /// An empty write: checks the server, the token, the org and the bucket.
    async fn healthcheck(&mut self) -> Result<(), SendError> {
        self.write(String::new()).await
    }

    async fn send(&mut self, batch: &[Arc<Envelope>]) -> Result<BatchOutcome, SendError> {
        self.body.clear();
        for env in batch {
            env.obs.write_line_protocol(&mut self.body);
        }
        self.write(self.body.clone()).await?;
        Ok(BatchOutcome::default())
    }
}
