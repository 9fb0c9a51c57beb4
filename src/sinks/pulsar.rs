//! The Pulsar sink: observations produced to `persistent://public/default/smartcity-{type}`
//! (`topic_prefix` + the sensor type without hyphens), keyed by sensor id (so a Key_Shared
//! subscription keeps each sensor's order), with the MQTT JSON as payload and the
//! observation time as event time.
//!
//! A [`BatchService`]: the shared driver takes batches from the queue; `send` hands every
//! message of the batch to its topic's producer without waiting, then awaits all the
//! receipts together (pipelining, bounded by `batch_size`). Any failure (connection lost,
//! no receipt within `request_timeout`) throws the client away and the batch is sent again,
//! in order, on a new client after the driver's capped backoff: the `pulsar` crate's own
//! reconnection gives up after a number of tries, ours never does. At least once: a batch
//! whose receipts were lost is sent again whole (counted as retries).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pulsar::{Authentication, ConnectionRetryOptions, OperationRetryOptions, Producer, Pulsar, TokioExecutor};
use twins::SensorKind;

use super::batch::{BatchOutcome, BatchService, SendError};
use super::queue::Envelope;
use crate::config::{pulsar_topic, PulsarSinkConfig, Secret};

/// A Pulsar client whose retries are short: our own loops (the batch driver, the
/// distributor) back off and rebuild it, forever.
pub async fn connect(url: &str, token: Option<&Secret>, timeout: Duration) -> Result<Pulsar<TokioExecutor>, String> {
    crate::sinks::mqtt::install_crypto_provider();
    let mut builder = Pulsar::builder(url, TokioExecutor)
        .with_connection_retry_options(ConnectionRetryOptions {
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            max_retries: 2,
            connection_timeout: timeout,
            keep_alive: Duration::from_secs(30),
            ..ConnectionRetryOptions::default()
        })
        .with_operation_retry_options(OperationRetryOptions {
            operation_timeout: timeout,
            retry_delay: Duration::from_millis(200),
            max_retries: Some(2),
        });
    if let Some(t) = token {
        builder = builder.with_auth(Authentication { name: "token".into(), data: t.0.clone().into_bytes() });
    }
    match tokio::time::timeout(timeout, builder.build()).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(format!("cannot connect to {url}: {e}")),
        Err(_) => Err(format!("cannot connect to {url}: no answer within {timeout:?}")),
    }
}

pub struct PulsarService {
    name: String,
    url: String,
    token: Option<Secret>,
    topic_prefix: String,
    timeout: Duration,
    client: Option<Pulsar<TokioExecutor>>,
    producers: HashMap<SensorKind, Producer<TokioExecutor>>,
    /// A send is under way or was cut short (the driver's timeout drops the future): the
    /// next send starts on a new client.
    dirty: bool,
}

impl PulsarService {
    pub fn new(cfg: &PulsarSinkConfig) -> Result<PulsarService, String> {
        Ok(PulsarService {
            name: cfg.common.name.clone(),
            url: cfg.common.url.clone(),
            token: cfg.common.token.clone(),
            topic_prefix: cfg.topic_prefix.clone(),
            timeout: cfg.common.batch.request_timeout,
            client: None,
            producers: HashMap::new(),
            dirty: false,
        })
    }

    async fn client(&mut self) -> Result<Pulsar<TokioExecutor>, SendError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let c = connect(&self.url, self.token.as_ref(), self.timeout).await.map_err(SendError::Retriable)?;
        self.client = Some(c.clone());
        Ok(c)
    }

    /// Forget the client and its producers: the next send starts on a new connection.
    fn reset(&mut self) {
        self.producers.clear();
        self.client = None;
    }

    async fn producer(&mut self, kind: SensorKind) -> Result<&mut Producer<TokioExecutor>, SendError> {
        if !self.producers.contains_key(&kind) {
            let client = self.client().await?;
            let topic = pulsar_topic(&self.topic_prefix, kind);
            let producer = client
                .producer()
                .with_topic(&topic)
                .with_name(format!("twinrt-{}-{}-{}", self.name, kind.as_str(), std::process::id()))
                .build()
                .await
                .map_err(|e| SendError::Retriable(format!("producer for {topic}: {e}")))?;
            self.producers.insert(kind, producer);
        }
        self.producers.get_mut(&kind).ok_or_else(|| SendError::Retriable("producer vanished".into()))
    }

    async fn send_all(&mut self, batch: &[Arc<Envelope>]) -> Result<BatchOutcome, SendError> {
        let mut receipts = Vec::with_capacity(batch.len());
        let mut buf = Vec::with_capacity(512);
        for env in batch {
            let obs = &env.obs;
            buf.clear();
            obs.write_mqtt_json(&mut buf);
            let event_ms = u64::try_from(obs.observed_at.timestamp_millis()).unwrap_or(0);
            let producer = self.producer(obs.kind).await?;
            let receipt = producer
                .create_message()
                .with_key(obs.sensor_id.to_string())
                .event_time(event_ms)
                .with_content(buf.clone())
                .send_non_blocking()
                .await
                .map_err(|e| SendError::Retriable(format!("send to {}: {e}", producer.topic())))?;
            receipts.push(receipt);
        }
        for r in receipts {
            r.await.map_err(|e| SendError::Retriable(format!("no receipt: {e}")))?;
        }
        Ok(BatchOutcome::default())
    }
}

impl BatchService for PulsarService {
    async fn healthcheck(&mut self) -> Result<(), SendError> {
        // A connection is the check: CONNECT answered by CONNECTED.
        self.client().await.map(|_| ())
    }

    async fn send(&mut self, batch: &[Arc<Envelope>]) -> Result<BatchOutcome, SendError> {
        if self.dirty {
            self.reset();
        }
        self.dirty = true;
        let r = self.send_all(batch).await;
        self.dirty = r.is_err();
        r
    }
}

impl Drop for PulsarService {
    fn drop(&mut self) {
        // Producers close with their connection; nothing to flush (no client-side batching).
        self.reset();
    }
}
