//! rumqttc 0.25 test clients: [`Subscriber`] collects every publish, [`Publisher`] sends and
//! counts PUBACKs, [`probe_connect`] checks that a CONNECT gets a CONNACK.

use rumqttc::{
    AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS, SubscribeReasonCode, TlsConfiguration, Transport,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::task::JoinHandle;

/// Back-off between reconnect attempts of the background event loops (not a wait for a
/// condition: rumqttc reconnects on the next `poll()` and would spin while the broker is down).
const RECONNECT_BACKOFF: Duration = Duration::from_millis(50);
/// Payloads up to 1 MiB (rumqttc's default max packet size is only 10 KiB each way).
const MAX_PACKET: usize = 1024 * 1024;
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How many connection errors a client keeps for failure messages.
const MAX_ERRORS_KEPT: usize = 50;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a broker listens: host (an IP or a name; used for TLS name checks too), port, and the
/// CA file for TLS (None = plain TCP).
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub ca_file: Option<PathBuf>,
}

impl Endpoint {
    pub fn plain(port: u16) -> Endpoint {
        Endpoint { host: "127.0.0.1".into(), port, ca_file: None }
    }

    pub fn tls(port: u16, ca_file: impl Into<PathBuf>) -> Endpoint {
        Endpoint { host: "127.0.0.1".into(), port, ca_file: Some(ca_file.into()) }
    }

    /// The same endpoint reached through another host name (e.g. "localhost").
    pub fn with_host(mut self, host: &str) -> Endpoint {
        self.host = host.into();
        self
    }

    /// The same endpoint verified against another CA file.
    pub fn with_ca(mut self, ca_file: Option<PathBuf>) -> Endpoint {
        self.ca_file = ca_file;
        self
    }

    /// "mqtt://HOST:PORT" or "mqtts://HOST:PORT".
    pub fn url(&self) -> String {
        let scheme = if self.ca_file.is_some() { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

/// A client id that is unique within this test process and across concurrent test processes.
pub fn unique_client_id(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Installs rustls' aws-lc-rs CryptoProvider as the process default (idempotent; keeps one
/// installed earlier, e.g. by the code under test).
///
/// Needed because rumqttc's `TlsConfiguration::Simple` calls `rustls::ClientConfig::builder()`,
/// which panics ("Could not automatically determine the process-level CryptoProvider") when
/// rustls 0.23 is built with both `aws-lc-rs` (rumqttc's `use-rustls`) and `ring` (e.g.
/// reqwest's `rustls-tls`, a dev-dependency: features unify in test builds).
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rumqttc::tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// rumqttc options for `ep`: keep-alive 5 s, 1 MiB packets, clean session, and TLS with
/// `TlsConfiguration::Simple { ca, alpn: None, client_auth: None }` when `ep.ca_file` is set.
pub fn mqtt_options(ep: &Endpoint, client_id: &str) -> Result<MqttOptions, String> {
    let mut opts = MqttOptions::new(client_id, ep.host.clone(), ep.port);
    opts.set_keep_alive(KEEP_ALIVE);
    opts.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    if let Some(ca_file) = &ep.ca_file {
        install_crypto_provider();
        let ca = read_ca(ca_file)?;
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Simple { ca, alpn: None, client_auth: None }));
    }
    Ok(opts)
}

fn read_ca(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read CA file {}: {e}", path.display()))
}

fn describe(e: &ConnectionError) -> String {
    // Display of rumqttc errors is terse ("TLS: ..."); the Debug form keeps the rustls detail.
    format!("{e} ({e:?})")
}

/// One CONNECT → CONNACK round trip (then DISCONNECT), bounded by `timeout`.
/// Err carries rumqttc's error, e.g. a TLS "invalid peer certificate: UnknownIssuer".
pub async fn probe_connect(ep: &Endpoint, timeout: Duration) -> Result<(), String> {
    let mut opts = mqtt_options(ep, &unique_client_id("probe"))?;
    opts.set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    let secs = timeout.as_secs().max(1);
    eventloop.network_options.set_connection_timeout(secs);
    let result = tokio::time::timeout(timeout, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(describe(&e)),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err(format!("no CONNACK from {} within {timeout:?}", ep.url())));
    if result.is_ok() {
        // Polite DISCONNECT so the broker log does not show a dropped socket.
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
    result
}

/// One received PUBLISH.
#[derive(Clone, Debug)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
    pub dup: bool,
    /// Monotonic receive time (for latency / ordering checks).
    pub at: Instant,
    /// Wall-clock receive time.
    pub received_at: SystemTime,
}

impl Received {
    pub fn payload_str(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| format!("payload on {} is not JSON ({e}): {}", self.topic, self.payload_str()))
    }
}

/// Connection bookkeeping shared with a client's background task.
#[derive(Clone, Debug, Default)]
pub struct ConnState {
    pub connected: bool,
    /// Number of CONNACKs seen (1 after the first connect, +1 per reconnect).
    pub connacks: u32,
    /// session_present of the last CONNACK.
    pub session_present: bool,
    /// Successful SUBACKs seen (one per (re)subscribe).
    pub subacks: u32,
    /// PUBACKs seen (QoS 1 publishes acknowledged by the broker).
    pub pubacks: u64,
    /// Latest connection errors (at most 50 kept), oldest first.
    pub errors: Vec<String>,
}

impl ConnState {
    fn error(&mut self, e: String) {
        self.connected = false;
        if self.errors.len() >= MAX_ERRORS_KEPT {
            self.errors.remove(0);
        }
        self.errors.push(e);
    }
}

#[derive(Clone, Debug)]
pub struct SubscriberOptions {
    /// None = a unique generated id.
    pub client_id: Option<String>,
    /// false + a fixed client_id = persistent session (broker queues QoS 1 while offline).
    pub clean_session: bool,
    pub qos: QoS,
    /// Deadline for CONNACK + SUBACK in [`Subscriber::connect_with`].
    pub ready_deadline: Duration,
}

impl Default for SubscriberOptions {
    fn default() -> Self {
        SubscriberOptions {
            client_id: None,
            clean_session: true,
            qos: QoS::AtLeastOnce,
            ready_deadline: Duration::from_secs(10),
        }
    }
}

impl SubscriberOptions {
    /// A persistent session (clean_session = false) under a fixed client id.
    pub fn persistent(client_id: &str) -> Self {
        SubscriberOptions { client_id: Some(client_id.into()), clean_session: false, ..Default::default() }
    }
}

/// Subscribes to one filter and records every PUBLISH from a background task. On every CONNACK
/// (first connect and each reconnect) it (re)subscribes, so it survives broker restarts even
/// with a clean session. Reconnects every ~50 ms while the broker is down. Stops on drop.
pub struct Subscriber {
    client: AsyncClient,
    filter: String,
    client_id: String,
    messages: Arc<Mutex<Vec<Received>>>,
    state: Arc<Mutex<ConnState>>,
    task: JoinHandle<()>,
}

impl Subscriber {
    /// Clean session, QoS 1, generated client id.
    pub async fn connect(ep: &Endpoint, filter: &str) -> Result<Subscriber, String> {
        Self::connect_with(ep, filter, SubscriberOptions::default()).await
    }

    /// Returns once the SUBACK arrived. Fails fast (with rumqttc's error) if the first connection
    /// attempt fails, e.g. TLS with the wrong CA.
    pub async fn connect_with(ep: &Endpoint, filter: &str, o: SubscriberOptions) -> Result<Subscriber, String> {
        let client_id = o.client_id.clone().unwrap_or_else(|| unique_client_id("sub"));
        let mut opts = mqtt_options(ep, &client_id)?;
        opts.set_clean_session(o.clean_session);
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(Mutex::new(ConnState::default()));

        let task = {
            let (client, messages, state) = (client.clone(), messages.clone(), state.clone());
            let (filter, qos) = (filter.to_string(), o.qos);
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            lock(&messages).push(Received {
                                topic: p.topic.clone(),
                                payload: p.payload.to_vec(),
                                qos: p.qos,
                                retain: p.retain,
                                dup: p.dup,
                                at: Instant::now(),
                                received_at: SystemTime::now(),
                            });
                        }
                        Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                            {
                                let mut s = lock(&state);
                                s.connected = true;
                                s.connacks += 1;
                                s.session_present = ack.session_present;
                            }
                            if let Err(e) = client.try_subscribe(filter.clone(), qos) {
                                lock(&state).error(format!("subscribe request failed: {e}"));
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(ack))) => {
                            let mut s = lock(&state);
                            if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                                s.errors.push(format!("SUBACK refused {filter}: {ack:?}"));
                            } else {
                                s.subacks += 1;
                            }
                        }
                        Ok(Event::Incoming(Packet::Disconnect)) => {
                            lock(&state).error("broker sent DISCONNECT".into());
                        }
                        Ok(_) => {}
                        Err(e) => {
                            lock(&state).error(describe(&e));
                            tokio::time::sleep(RECONNECT_BACKOFF).await;
                        }
                    }
                }
            })
        };

        let sub = Subscriber { client, filter: filter.to_string(), client_id, messages, state, task };
        let start = Instant::now();
        loop {
            {
                let s = lock(&sub.state);
                if s.subacks >= 1 {
                    break;
                }
                if s.connacks == 0 && !s.errors.is_empty() {
                    return Err(format!(
                        "subscriber {} could not connect to {}: {}",
                        sub.client_id,
                        ep.url(),
                        s.errors.join("; ")
                    ));
                }
                if let Some(e) = s.errors.iter().find(|e| e.starts_with("SUBACK refused")) {
                    return Err(e.clone());
                }
            }
            if start.elapsed() >= o.ready_deadline {
                return Err(format!(
                    "timed out after {:?} waiting for the SUBACK of {} on {} (state: {:?})",
                    o.ready_deadline,
                    filter,
                    ep.url(),
                    sub.state()
                ));
            }
            tokio::time::sleep(super::POLL_INTERVAL).await;
        }
        Ok(sub)
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// The raw client (e.g. to subscribe to more filters).
    pub fn client(&self) -> &AsyncClient {
        &self.client
    }

    /// A snapshot of all messages received so far, in arrival order.
    pub fn messages(&self) -> Vec<Received> {
        lock(&self.messages).clone()
    }

    pub fn count(&self) -> usize {
        lock(&self.messages).len()
    }

    /// Forgets the messages received so far.
    pub fn clear(&self) {
        lock(&self.messages).clear();
    }

    pub fn state(&self) -> ConnState {
        lock(&self.state).clone()
    }

    pub fn is_connected(&self) -> bool {
        lock(&self.state).connected
    }

    /// Successful SUBACKs so far (≥ 2 means re-subscribed after a reconnect).
    pub fn subacks(&self) -> u32 {
        lock(&self.state).subacks
    }

    fn summary(&self) -> String {
        let msgs = lock(&self.messages);
        let last: Vec<String> =
            msgs.iter().rev().take(5).map(|m| format!("{} {}", m.topic, String::from_utf8_lossy(&m.payload))).collect();
        format!(
            "{} message(s) on {} (latest first: {:?}); connection: {:?}",
            msgs.len(),
            self.filter,
            last,
            lock(&self.state)
        )
    }

    /// Waits until at least `n` messages arrived; returns them all.
    pub async fn wait_for_count(&self, n: usize, deadline: Duration) -> Result<Vec<Received>, String> {
        match super::wait_until(&format!("{n} message(s)"), deadline, || self.count() >= n).await {
            Ok(()) => Ok(self.messages()),
            Err(e) => Err(format!("{e}: {}", self.summary())),
        }
    }

    /// Waits for the first message matching `pred` and returns it.
    pub async fn wait_for<P: FnMut(&Received) -> bool>(
        &self,
        mut pred: P,
        deadline: Duration,
    ) -> Result<Received, String> {
        let mut found = None;
        let r = super::wait_until("a matching message", deadline, || {
            found = lock(&self.messages).iter().find(|m| pred(m)).cloned();
            found.is_some()
        })
        .await;
        match r {
            Ok(()) => Ok(found.expect("found")),
            Err(e) => Err(format!("{e}: {}", self.summary())),
        }
    }

    /// Waits until `pred` holds for the whole list of received messages.
    pub async fn wait_for_messages<P: FnMut(&[Received]) -> bool>(
        &self,
        what: &str,
        mut pred: P,
        deadline: Duration,
    ) -> Result<Vec<Received>, String> {
        match super::wait_until(what, deadline, || pred(&lock(&self.messages))).await {
            Ok(()) => Ok(self.messages()),
            Err(e) => Err(format!("{e}: {}", self.summary())),
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A publishing client driven by a background task; counts PUBACKs. Reconnects while the
/// broker is down. Stops on drop.
pub struct Publisher {
    client: AsyncClient,
    client_id: String,
    state: Arc<Mutex<ConnState>>,
    sent_qos1: AtomicU64,
    task: JoinHandle<()>,
}

impl Publisher {
    /// Clean session, generated id; returns once connected.
    pub async fn connect(ep: &Endpoint) -> Result<Publisher, String> {
        Self::connect_with(ep, &unique_client_id("pub"), true).await
    }

    pub async fn connect_with(ep: &Endpoint, client_id: &str, clean_session: bool) -> Result<Publisher, String> {
        let mut opts = mqtt_options(ep, client_id)?;
        opts.set_clean_session(clean_session);
        let (client, mut eventloop) = AsyncClient::new(opts, 1000);
        let state = Arc::new(Mutex::new(ConnState::default()));
        let task = {
            let state = state.clone();
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                            let mut s = lock(&state);
                            s.connected = true;
                            s.connacks += 1;
                            s.session_present = ack.session_present;
                        }
                        Ok(Event::Incoming(Packet::PubAck(_))) => lock(&state).pubacks += 1,
                        Ok(_) => {}
                        Err(e) => {
                            lock(&state).error(describe(&e));
                            tokio::time::sleep(RECONNECT_BACKOFF).await;
                        }
                    }
                }
            })
        };
        let p = Publisher { client, client_id: client_id.to_string(), state, sent_qos1: AtomicU64::new(0), task };
        let start = Instant::now();
        loop {
            {
                let s = lock(&p.state);
                if s.connacks >= 1 {
                    break;
                }
                if !s.errors.is_empty() {
                    return Err(format!(
                        "publisher {client_id} could not connect to {}: {}",
                        ep.url(),
                        s.errors.join("; ")
                    ));
                }
            }
            if start.elapsed() >= Duration::from_secs(10) {
                return Err(format!("timed out after 10s waiting for the CONNACK of {}", ep.url()));
            }
            tokio::time::sleep(super::POLL_INTERVAL).await;
        }
        Ok(p)
    }

    pub fn client(&self) -> &AsyncClient {
        &self.client
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn state(&self) -> ConnState {
        lock(&self.state).clone()
    }

    pub fn is_connected(&self) -> bool {
        lock(&self.state).connected
    }

    /// Queues a publish (does not wait for the broker).
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, qos: QoS) -> Result<(), String> {
        self.client.publish(topic, qos, false, payload.into()).await.map_err(|e| format!("publish to {topic}: {e}"))?;
        if qos != QoS::AtMostOnce {
            self.sent_qos1.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Waits until every QoS ≥ 1 publish queued so far has been PUBACKed.
    pub async fn wait_all_acked(&self, deadline: Duration) -> Result<(), String> {
        let sent = self.sent_qos1.load(Ordering::Relaxed);
        super::wait_until(&format!("{sent} PUBACK(s)"), deadline, || lock(&self.state).pubacks >= sent)
            .await
            .map_err(|e| format!("{e}: {:?}", self.state()))
    }

    /// Publishes at QoS 1 and waits for the broker's PUBACK.
    pub async fn publish_acked(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        deadline: Duration,
    ) -> Result<(), String> {
        self.publish(topic, payload, QoS::AtLeastOnce).await?;
        self.wait_all_acked(deadline).await
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
