//! The InfluxDB v2 sink: observations as line protocol (`twins::line_protocol`) through the
//! v2 write API (`POST /api/v2/write?org=..&bucket=..&precision=ms`, `Authorization: Token
//! ..`), batched by the [`batch`](super::batch) driver (default 5,000 lines, as InfluxData
//! advises, two writes at once), gzipped (`Content-Encoding: gzip`, fast level) when
//! configured.

use std::io::Write as _;
use std::sync::Arc;

use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};

use super::batch::{classify_status, BatchOutcome, BatchService, SendError};
use super::queue::Envelope;
use crate::config::InfluxDbSinkConfig;

/// One write endpoint: what every write of a sink shares. Also used by the benchmark to
/// post the same bodies directly.
#[derive(Clone)]
pub struct InfluxWriter {
    client: reqwest::Client,
    /// `{url}/api/v2/write?org=..&bucket=..&precision=ms`
    write_url: String,
    token: Option<String>,
    gzip: bool,
}

impl InfluxWriter {
    pub fn new(url: &str, org: &str, bucket: &str, token: Option<&str>, gzip: bool) -> Result<InfluxWriter, String> {
        let mut write_url = reqwest::Url::parse(&format!("{url}/api/v2/write")).map_err(|e| format!("{url}: {e}"))?;
        write_url
            .query_pairs_mut()
            .append_pair("org", org)
            .append_pair("bucket", bucket)
            .append_pair("precision", "ms");
        let client = reqwest::Client::builder().build().map_err(|e| format!("HTTP client: {e}"))?;
        Ok(InfluxWriter { client, write_url: write_url.to_string(), token: token.map(str::to_string), gzip })
    }

    /// Write a body of line protocol (an empty one checks the server, token, org and bucket).
    pub async fn write(&self, body: Vec<u8>) -> Result<(), SendError> {
        let mut rb = self.client.post(&self.write_url).header(CONTENT_TYPE, "text/plain; charset=utf-8");
        if let Some(t) = &self.token {
            rb = rb.header(AUTHORIZATION, format!("Token {t}"));
        }
        let body = if self.gzip && !body.is_empty() {
            let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
            gz.write_all(&body).and_then(|()| gz.finish()).map_err(|e| SendError::Retriable(format!("gzip: {e}")))?
        } else {
            body
        };
        if self.gzip && !body.is_empty() {
            rb = rb.header(CONTENT_ENCODING, "gzip");
        }
        // Connection refused, reset, timeout: the server is down or unreachable.
        let resp = rb.body(body).send().await.map_err(|e| SendError::Retriable(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        Err(classify_status(status.as_u16(), &text))
    }
}

pub struct InfluxDbService {
    writer: InfluxWriter,
}

impl InfluxDbService {
    pub fn new(cfg: &InfluxDbSinkConfig) -> Result<InfluxDbService, String> {
        let token = cfg.common.token.as_ref().map(|t| t.0.as_str());
        let writer = InfluxWriter::new(&cfg.common.url, &cfg.org, &cfg.bucket, token, cfg.gzip)
            .map_err(|e| format!("sink {}: InfluxDB client: {e}", cfg.common.name))?;
        Ok(InfluxDbService { writer })
    }
}

impl BatchService for InfluxDbService {
    /// An empty write: checks the server, the token, the org and the bucket.
    async fn healthcheck(&mut self) -> Result<(), SendError> {
        self.writer.write(Vec::new()).await
    }

    async fn send(&mut self, batch: &[Arc<Envelope>]) -> Result<BatchOutcome, SendError> {
        let mut body = String::with_capacity(batch.len() * 200);
        for env in batch {
            env.obs.write_line_protocol(&mut body);
        }
        self.writer.write(body.into_bytes()).await?;
        Ok(BatchOutcome::default())
    }
}
