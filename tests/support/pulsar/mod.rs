//! A Pulsar broker for tests, speaking the real Pulsar binary protocol (Pulsar itself cannot
//! run on this machine). Checked against clients written elsewhere: the Rust `pulsar` crate
//! and Apache's `pulsar-client` (C++ inside) in `tests/pulsar_broker.rs`.
//!
//! Subset served: CONNECT/CONNECTED (version negotiation, up to v19), PING/PONG both ways,
//! LOOKUP (always "connect here", authoritative), PARTITIONED_METADATA (0: non-partitioned),
//! PRODUCER (name generated if absent), SEND (CRC32C verified: a bad checksum is a
//! SEND_ERROR `ChecksumError`) -> SEND_RECEIPT, batches (kept as one entry, split for
//! [`PulsarBroker::messages`]), SUBSCRIBE (Exclusive, Shared, Failover, Key_Shared AUTO_SPLIT
//! or STICKY; initial position Latest / Earliest), FLOW, MESSAGE (with redelivery count and
//! CRC32C), ACK (individual, cumulative, batch ack sets), REDELIVER_UNACKNOWLEDGED_MESSAGES,
//! CLOSE_PRODUCER, CLOSE_CONSUMER, UNSUBSCRIBE, GET_LAST_MESSAGE_ID. Anything else gets an
//! ERROR naming the command. No compression, chunking, schemas, transactions, TLS or auth.
//!
//! Topics (full names; short names are normalised to `persistent://public/default/...`) and
//! subscription cursors live in memory for the broker's lifetime, across [`PulsarBroker::stop`]
//! and [`PulsarBroker::restart`] on the same port. Unacked messages of a consumer that goes
//! away are redelivered to the subscription's next consumer (at least once).
//!
//! Layout: [`frame`] (framing, CRC32C), [`state`] (topics, cursors, dispatch; no I/O),
//! [`conn`] (one connection: commands to state calls, keepalive).

pub mod conn;
pub mod frame;
pub mod state;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use conn::{lock, ConnEntry, Inner, Out};
pub use state::{normalize_topic, Delivery, StoredMessage};

/// Broker settings.
#[derive(Debug, Clone)]
pub struct PulsarOptions {
    /// How often the broker PINGs each connection; a connection silent for twice this long
    /// is closed (Pulsar's `keepAliveIntervalSeconds`, 30 s).
    pub ping_interval: Duration,
}

impl Default for PulsarOptions {
    fn default() -> Self {
        PulsarOptions { ping_interval: Duration::from_secs(30) }
    }
}

/// The test broker. Dropping it stops it.
pub struct PulsarBroker {
    inner: Arc<Mutex<Inner>>,
    port: u16,
    options: PulsarOptions,
    listener: Option<JoinHandle<()>>,
    next_conn: Arc<AtomicU64>,
    /// Connection tasks still running.
    live: Arc<AtomicUsize>,
}

/// Decrements the live connection count when a connection task ends.
struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn topic_name(topic: &str) -> String {
    normalize_topic(topic).unwrap_or_else(|_| topic.to_string())
}

impl PulsarBroker {
    /// Starts on a free port of 127.0.0.1 with default options.
    pub async fn start() -> Result<PulsarBroker, String> {
        Self::start_with(PulsarOptions::default()).await
    }

    pub async fn start_with(options: PulsarOptions) -> Result<PulsarBroker, String> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| format!("pulsar test broker: bind 127.0.0.1:0: {e}"))?;
        let port = listener.local_addr().map_err(|e| format!("pulsar test broker: local_addr: {e}"))?.port();
        let mut broker = PulsarBroker {
            inner: Arc::new(Mutex::new(Inner::default())),
            port,
            options,
            listener: None,
            next_conn: Arc::new(AtomicU64::new(1)),
            live: Arc::new(AtomicUsize::new(0)),
        };
        broker.listen(listener);
        Ok(broker)
    }

    fn listen(&mut self, listener: TcpListener) {
        let inner = self.inner.clone();
        let next_conn = self.next_conn.clone();
        let live = self.live.clone();
        let url = self.url();
        let ping = self.options.ping_interval;
        self.listener = Some(tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        lock(&inner).events.push(format!("accept error: {e}"));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let conn = next_conn.fetch_add(1, Ordering::SeqCst);
                let (tx, rx) = mpsc::unbounded_channel::<Out>();
                live.fetch_add(1, Ordering::SeqCst);
                let live_guard = LiveGuard(live.clone());
                // Registered under the lock before the task can handle a command.
                let mut g = lock(&inner);
                let task = tokio::spawn(conn::serve(inner.clone(), conn, stream, tx.clone(), rx, url.clone(), ping));
                let abort = task.abort_handle();
                tokio::spawn(async move {
                    let _ = task.await;
                    drop(live_guard);
                });
                g.conns.insert(conn, ConnEntry { tx, abort: Some(abort) });
            }
        }));
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `pulsar://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("pulsar://127.0.0.1:{}", self.port)
    }

    /// The messages of `topic` in log order (a batch lists each of its messages).
    pub fn messages(&self, topic: &str) -> Vec<StoredMessage> {
        lock(&self.inner).state.messages(&topic_name(topic))
    }

    /// Every topic created (by a producer, a subscription or [`Self::publish`]), full names.
    pub fn topics(&self) -> Vec<String> {
        lock(&self.inner).state.topics.keys().cloned().collect()
    }

    /// Appends a message as producer `test-broker` (no client involved; any bytes) and
    /// dispatches it to the subscribers.
    pub fn publish(&self, topic: &str, key: Option<&str>, payload: &[u8]) {
        let topic = topic_name(topic);
        let mut g = lock(&self.inner);
        g.state.inject(&topic, key, payload);
        g.dispatch(&topic);
    }

    /// Messages acked on a subscription since it was created.
    pub fn acked(&self, topic: &str, subscription: &str) -> usize {
        lock(&self.inner).state.acked(&topic_name(topic), subscription)
    }

    /// Messages of a subscription not acked yet (delivered or not).
    pub fn backlog(&self, topic: &str, subscription: &str) -> usize {
        lock(&self.inner).state.backlog(&topic_name(topic), subscription)
    }

    /// Connected consumers of a subscription.
    pub fn consumers(&self, topic: &str, subscription: &str) -> usize {
        lock(&self.inner).state.consumer_count(&topic_name(topic), subscription)
    }

    /// Subscriptions of a topic.
    pub fn subscriptions(&self, topic: &str) -> Vec<String> {
        let g = lock(&self.inner);
        g.state.topics.get(&topic_name(topic)).map(|t| t.subscriptions.keys().cloned().collect()).unwrap_or_default()
    }

    /// Delivered-but-unacked messages per consumer name.
    pub fn unacked_by_consumer(&self, topic: &str, subscription: &str) -> BTreeMap<String, usize> {
        lock(&self.inner).state.unacked_by_consumer(&topic_name(topic), subscription)
    }

    /// Connected producers of a topic.
    pub fn producers(&self, topic: &str) -> usize {
        lock(&self.inner).state.producer_count(&topic_name(topic))
    }

    /// Every MESSAGE dispatched on a subscription, in order (consumer name, entry id,
    /// redelivery count...).
    pub fn deliveries(&self, topic: &str, subscription: &str) -> Vec<Delivery> {
        let topic = topic_name(topic);
        let g = lock(&self.inner);
        g.deliveries.iter().filter(|d| d.topic == topic && d.subscription == subscription).cloned().collect()
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        lock(&self.inner).conns.len()
    }

    /// What the broker refused or closed, and why (ERROR, SEND_ERROR, bad frames, closes).
    pub fn events(&self) -> Vec<String> {
        lock(&self.inner).events.clone()
    }

    /// Cuts every client connection now (their consumers' unacked messages go back).
    pub fn drop_connections(&self) {
        let mut g = lock(&self.inner);
        let conns: Vec<u64> = g.conns.keys().copied().collect();
        for c in conns {
            if let Some(abort) = g.conns.get_mut(&c).and_then(|e| e.abort.take()) {
                abort.abort();
            }
            g.close_connection(c);
        }
    }

    /// Stops listening and drops every connection; the data stays.
    pub async fn stop(&mut self) {
        if let Some(l) = self.listener.take() {
            l.abort();
            let _ = l.await;
        }
        self.drop_connections();
        let live = self.live.clone();
        if let Err(e) = super::wait_until("the connection tasks to end", Duration::from_secs(5), || {
            live.load(Ordering::SeqCst) == 0
        })
        .await
        {
            lock(&self.inner).events.push(format!("stop: {e}"));
        }
    }

    /// Listens again on the same port with the same data.
    pub async fn restart(&mut self) -> Result<(), String> {
        if self.listener.is_some() {
            return Err("pulsar test broker: restart while running (stop it first)".into());
        }
        let start = Instant::now();
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if start.elapsed() < Duration::from_secs(5) => {
                    let _ = e;
                    tokio::time::sleep(super::POLL_INTERVAL).await;
                }
                Err(e) => return Err(format!("pulsar test broker: bind 127.0.0.1:{} again: {e}", self.port)),
            }
        };
        self.listen(listener);
        Ok(())
    }
}

impl Drop for PulsarBroker {
    fn drop(&mut self) {
        if let Some(l) = self.listener.take() {
            l.abort();
        }
        self.drop_connections();
    }
}
