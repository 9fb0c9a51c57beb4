//! The MQTT sink: one actor per broker, each with its own rumqttc connection, publishing
//! every observation to `{topic_prefix}/{type}/{id}` (default `city/sensors/...`).
//!
//! Delivery: the actor moves observations from its bounded [`SinkHandle`] queue to the
//! connection's I/O task only while connected, and only as far as the task's small request
//! channel takes them (`try_send`, never awaiting). The I/O task owns the connection:
//! rumqttc connects it (TCP or TLS, CONNECT, CONNACK: [`EventLoop::poll`]), then the task
//! drives rumqttc's protocol state ([`MqttState`]: packet ids, in-flight window, acks,
//! pings) and codec itself, so that it can write every publish waiting in its channel
//! before one flush: rumqttc's own loop flushes after each request, a system call per
//! message. Each connection gets a fresh channel and an in-flight ledger that tracks every
//! publish from hand-off to acknowledgement (QoS 1/2) or write (QoS 0). When a connection
//! ends, the task drops the connection, then puts everything unacknowledged back at the
//! front of the queue, to be sent again on the next connection (at least once; counted as
//! retries), and reconnects with capped exponential backoff and jitter.
//!
//! Injected faults ([`crate::faults::FaultGate`], in the sink's handle): before each
//! publish the gate may refuse it (the observation stays at the front of the queue, counted
//! as a retry, and is tried again after a backoff from `reconnect_min` to `reconnect_max`,
//! as after a refused connection) or delay it (the actor schedules itself, it does not
//! sleep); a `disconnect` ends the connection as a network failure would.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rumqttc::{
    Disconnect, Event, EventLoop, MqttOptions, MqttState, Outgoing, Packet, PingReq, Publish, QoS, TlsConfiguration,
    Transport,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::queue::{Envelope, SinkHandle};
use super::{ConnectionEvent, SinkMsg};
use crate::actors::ActorEntry;
use crate::config::MqttSinkConfig;

/// How many publishes the actor hands over per wake-up before yielding to its mailbox.
const PUMP_BATCH: usize = 512;
/// The I/O task's request channel: small, so that what waits stays visible in our queue,
/// yet large enough that the actor is not woken for every few messages at full speed.
const REQUEST_CHANNEL: usize = 256;
/// Most publishes the I/O task writes before one flush (it also stops when its channel is
/// empty or the in-flight window is full). rumqttc's codec writes out what it buffered each
/// time the buffer passes 8 KiB, so a batch is a few writes of about 8 KiB, not one per
/// message.
const WRITE_BATCH: usize = 256;

pub struct MqttSink;

pub struct MqttSinkArgs {
    pub handle: Arc<SinkHandle>,
    pub config: MqttSinkConfig,
    /// Its entry in the actor directory.
    pub entry: Arc<ActorEntry>,
}

pub struct MqttSinkState {
    handle: Arc<SinkHandle>,
    config: MqttSinkConfig,
    /// The live connection, set and cleared by the I/O task.
    current: Arc<Mutex<Option<Connection>>>,
    io: JoinHandle<()>,
    connected: bool,
    retry_scheduled: bool,
    /// A publish is waiting for room in the client's request channel (handed over by a
    /// task that wakes the actor when it went through): nothing else is handed over
    /// meanwhile, so order is kept.
    blocked: Arc<std::sync::atomic::AtomicBool>,
    actor_id: ractor::ActorId,
    /// Injected faults: no publishing before this instant (a refused send's backoff or a
    /// send's added latency); the next one is already scheduled.
    hold_until: Option<tokio::time::Instant>,
    /// The next publish already waited its injected latency.
    release_one: bool,
    /// Backoff after injected refusals (reset by a publish that goes through).
    fault_backoff: Duration,
}

/// How a pump ended.
enum Pumped {
    /// It handed this many publishes over and stopped because the queue ran dry or the
    /// batch was done ([`SinkHandle::pumped`] decides what comes next).
    Sent(usize),
    /// It could not publish (not connected): offers wake the sink again.
    Stopped,
    /// It could not publish now, and a pump is already on its way (the task waiting for
    /// room in the client's channel sends one, as do a hold's and a retry's timers): offers
    /// need not wake the sink.
    Pending,
}

/// What the actor hands to a connection's I/O task.
enum Request {
    Publish(Publish),
    /// A graceful stop: write a DISCONNECT and end.
    Disconnect,
}

/// One connection: its own request channel and its own ledger. When the connection ends,
/// the I/O task drops the channel's receiving end first (so it takes nothing more), then
/// gives everything in the ledger back to the queue: nothing handed to a dead connection can
/// be forgotten, and no stale request can be mistaken for a new one.
#[derive(Clone)]
struct Connection {
    requests: mpsc::Sender<Request>,
    ledger: Arc<Mutex<InFlight>>,
}

/// Publishes handed to the I/O task and not yet known delivered, in order.
#[derive(Default)]
pub struct InFlight {
    /// Handed to the I/O task, not yet written out (no packet id yet).
    handed: VecDeque<Arc<Envelope>>,
    /// Written out with this packet id, awaiting the broker's acknowledgement.
    by_pkid: HashMap<u16, Arc<Envelope>>,
}

impl InFlight {
    fn len(&self) -> usize {
        self.handed.len() + self.by_pkid.len()
    }

    /// Everything unacknowledged, oldest first.
    fn take_all(&mut self) -> Vec<Arc<Envelope>> {
        let mut waiting: Vec<Arc<Envelope>> = self.by_pkid.drain().map(|(_, e)| e).collect();
        waiting.sort_by_key(|e| e.emitted);
        waiting.extend(self.handed.drain(..));
        waiting
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

/// rumqttc's default packet limit (10 KiB) is small for a broker's replies; ours are ~400 B.
const MAX_PACKET: usize = 256 * 1024;

/// rustls needs a process-wide crypto provider when more than one is compiled in (as in
/// test builds, where reqwest brings `ring` beside rumqttc's `aws-lc-rs`): pick aws-lc-rs.
pub fn install_crypto_provider() {
    // Fails only when a provider is already installed, which is what we want.
    let _ = rumqttc::tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Build the rumqttc options of a sink, reading its TLS files.
pub fn mqtt_options(cfg: &MqttSinkConfig) -> Result<MqttOptions, String> {
    let mut opts = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    opts.set_keep_alive(cfg.keep_alive);
    opts.set_clean_session(cfg.clean_session);
    opts.set_inflight(cfg.max_inflight);
    opts.set_request_channel_capacity(REQUEST_CHANNEL);
    if let (Some(u), p) = (&cfg.username, &cfg.password) {
        opts.set_credentials(u.clone(), p.clone().unwrap_or_default());
    }
    opts.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    if cfg.tls {
        install_crypto_provider();
        let ca = match &cfg.ca_file {
            Some(path) => std::fs::read(path)
                .map_err(|e| format!("sink {}: cannot read ca_file {}: {e}", cfg.name, path.display()))?,
            None => return Err(format!("sink {}: mqtts:// needs a ca_file", cfg.name)),
        };
        let client_auth = match (&cfg.client_cert, &cfg.client_key) {
            (Some(c), Some(k)) => Some((
                std::fs::read(c)
                    .map_err(|e| format!("sink {}: cannot read client_cert {}: {e}", cfg.name, c.display()))?,
                std::fs::read(k)
                    .map_err(|e| format!("sink {}: cannot read client_key {}: {e}", cfg.name, k.display()))?,
            )),
            _ => None,
        };
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Simple { ca, alpn: None, client_auth }));
    }
    Ok(opts)
}

impl Actor for MqttSink {
    type Msg = SinkMsg;
    type State = MqttSinkState;
    type Arguments = MqttSinkArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SinkMsg>,
        args: MqttSinkArgs,
    ) -> Result<MqttSinkState, ActorProcessingErr> {
        let MqttSinkArgs { handle, config, entry } = args;
        entry.attach(myself.get_cell());
        let opts = mqtt_options(&config)?;
        let current = Arc::new(Mutex::new(None));
        let actor_id = myself.get_id();
        let io = tokio::spawn(drive(opts, myself, handle.clone(), current.clone(), config.clone()));
        let fault_backoff = config.reconnect_min;
        Ok(MqttSinkState {
            handle,
            config,
            current,
            io,
            connected: false,
            retry_scheduled: false,
            blocked: Arc::default(),
            actor_id,
            hold_until: None,
            release_one: false,
            fault_backoff,
        })
    }

    async fn post_start(&self, myself: ActorRef<SinkMsg>, state: &mut MqttSinkState) -> Result<(), ActorProcessingErr> {
        state.handle.attach(Some(myself));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SinkMsg>,
        msg: SinkMsg,
        state: &mut MqttSinkState,
    ) -> Result<(), ActorProcessingErr> {
        state.handle.mailbox.handled();
        match msg {
            SinkMsg::Pump => {
                state.retry_scheduled = false;
                state.pump(&myself);
            }
            SinkMsg::Connection(ConnectionEvent::Connected { session_present }) => {
                tracing::info!(sink = %state.config.name, url = %state.config.url(), session_present, "connected");
                state.connected = true;
                state.handle.stats.set_connected(true);
                state.pump(&myself);
            }
            SinkMsg::Connection(ConnectionEvent::Disconnected(reason)) => {
                if state.connected {
                    tracing::warn!(sink = %state.config.name, url = %state.config.url(), %reason, "disconnected");
                }
                state.connected = false;
                state.handle.stats.set_connected(false);
                state.handle.stats.record_error(reason);
            }
            SinkMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            SinkMsg::Crash(reason) => panic!("fault injected into sink {}: {reason}", state.config.name),
            SinkMsg::Fail(reason) => {
                return Err(format!("fault injected into sink {}: {reason}", state.config.name).into())
            }
            SinkMsg::Stall(d) => tokio::time::sleep(d).await,
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<SinkMsg>, state: &mut MqttSinkState) -> Result<(), ActorProcessingErr> {
        // A graceful stop: let the I/O task write the DISCONNECT, but never wait long for a
        // dead broker. The rest of the clean-up is in `Drop`, which also runs after a panic.
        let conn = lock(&state.current).clone();
        if let Some(conn) = conn {
            let _ = conn.requests.try_send(Request::Disconnect);
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), &mut state.io).await;
        Ok(())
    }
}

impl Drop for MqttSinkState {
    /// Runs however the actor ends (stop or panic): stop the I/O task and give whatever was
    /// not acknowledged back to the queue for the next incarnation.
    fn drop(&mut self) {
        self.io.abort();
        self.handle.detach(self.actor_id);
        self.handle.stats.set_connected(false);
        if let Some(conn) = lock(&self.current).take() {
            let pending = lock(&conn.ledger).take_all();
            self.handle.requeue_front(pending);
        }
        self.handle.set_in_flight(0);
    }
}

impl MqttSinkState {
    /// Hand queued observations to the client while connected and while it takes them.
    ///
    /// Offers wake the actor while it is idle; while it keeps publishing it pumps again by
    /// itself ([`SinkHandle::pumped`]): every exit either clears the pending wake-up
    /// (`woken`, then offers wake it) or leaves a pump on its way.
    fn pump(&mut self, myself: &ActorRef<SinkMsg>) {
        match self.pump_batch(myself) {
            Pumped::Sent(n) => self.handle.pumped(myself, n, n >= PUMP_BATCH),
            // Not connected: offers wake it again (the connection's event pumps too).
            Pumped::Stopped => self.handle.woken(),
            // Blocked, held or retrying: a pump is already on its way, and offers need not
            // wake it meanwhile. Under overload the client's channel is full most of the
            // time: waking the sink then cost each offer a message and, when the sink's
            // thread slept, a system call, for a pump that could do nothing.
            Pumped::Pending => {}
        }
    }

    /// Publish up to [`PUMP_BATCH`]. See [`Pumped`] for how it ends.
    fn pump_batch(&mut self, myself: &ActorRef<SinkMsg>) -> Pumped {
        if !self.connected {
            return Pumped::Stopped;
        }
        if self.blocked.load(std::sync::atomic::Ordering::Acquire) {
            // The task that waits for room pumps when the publish went through.
            return Pumped::Pending;
        }
        let Some(conn) = lock(&self.current).clone() else { return Pumped::Stopped };
        if let Some(t) = self.hold_until {
            if tokio::time::Instant::now() < t {
                return Pumped::Pending; // a pump is scheduled for then
            }
            self.hold_until = None;
        }
        let q = qos(self.config.qos);
        for sent in 0..PUMP_BATCH {
            if self.handle.queue_len() == 0 {
                return Pumped::Sent(sent);
            }
            if !std::mem::take(&mut self.release_one) {
                if let Some(v) = self.handle.faults.check() {
                    if let Some(msg) = v.fail {
                        // Refused: it stays at the front of the queue, to be sent again.
                        self.handle.stats.retries.inc();
                        self.handle.stats.record_error(msg);
                        let wait = self.fault_backoff;
                        self.fault_backoff = (self.fault_backoff * 2).min(self.config.reconnect_max);
                        self.hold(myself, jitter(wait));
                        return Pumped::Pending;
                    }
                    if !v.delay.is_zero() {
                        self.release_one = true;
                        self.hold(myself, v.delay);
                        return Pumped::Pending;
                    }
                }
            }
            let Some(env) = self.handle.pop() else { return Pumped::Sent(sent) };
            let topic = format!("{}/{}/{}", self.config.topic_prefix, env.obs.kind.as_str(), env.obs.sensor_id);
            let mut payload = Vec::with_capacity(384);
            env.obs.write_mqtt_json(&mut payload);
            let mut ledger = lock(&conn.ledger);
            ledger.handed.push_back(env);
            match conn.requests.try_send(Request::Publish(Publish::new(topic, q, payload))) {
                Ok(()) => {
                    self.handle.set_in_flight(ledger.len());
                    self.fault_backoff = self.config.reconnect_min;
                }
                Err(mpsc::error::TrySendError::Full(request)) if self.connected => {
                    // The channel is full: hand this one over as soon as there is room, and
                    // wake the actor then (not after a fixed delay: the I/O task drains fast).
                    self.handle.set_in_flight(ledger.len());
                    drop(ledger);
                    self.blocked.store(true, std::sync::atomic::Ordering::Release);
                    let (requests, blocked, handle) =
                        (conn.requests.clone(), self.blocked.clone(), self.handle.clone());
                    let me = myself.clone();
                    tokio::spawn(async move {
                        // An error means the connection is closing: the I/O task requeues
                        // the ledger, this message included.
                        let _ = requests.send(request).await;
                        blocked.store(false, std::sync::atomic::Ordering::Release);
                        handle.mailbox.enqueue();
                        if me.cast(SinkMsg::Pump).is_err() {
                            handle.mailbox.unenqueue();
                        }
                    });
                    return Pumped::Pending;
                }
                Err(_) => {
                    // Full while disconnecting, or closed (the I/O task reports the loss):
                    // try again shortly.
                    let env = ledger.handed.pop_back();
                    if let Some(env) = env {
                        self.handle.requeue_front(vec![env]);
                    }
                    self.handle.set_in_flight(ledger.len());
                    drop(ledger);
                    self.schedule_retry(myself);
                    return if self.retry_scheduled { Pumped::Pending } else { Pumped::Stopped };
                }
            }
        }
        // More may be waiting: continue at once, after the mailbox had its turn.
        Pumped::Sent(PUMP_BATCH)
    }

    /// Publish nothing for `d`, then pump again.
    fn hold(&mut self, myself: &ActorRef<SinkMsg>, d: Duration) {
        self.hold_until = Some(tokio::time::Instant::now() + d);
        self.handle.mailbox.enqueue();
        myself.send_after(d, || SinkMsg::Pump);
    }

    fn schedule_retry(&mut self, myself: &ActorRef<SinkMsg>) {
        if !self.retry_scheduled && self.handle.queue_len() > 0 {
            self.retry_scheduled = true;
            self.handle.mailbox.enqueue();
            myself.send_after(Duration::from_millis(5), || SinkMsg::Pump);
        }
    }
}

/// Connect, drive the connection, account for every publish in the connection's ledger;
/// when the connection ends, give back what it did not deliver and reconnect with capped
/// exponential backoff and jitter.
async fn drive(
    opts: MqttOptions,
    actor: ActorRef<SinkMsg>,
    handle: Arc<SinkHandle>,
    current: Arc<Mutex<Option<Connection>>>,
    cfg: MqttSinkConfig,
) {
    let mut delay = cfg.reconnect_min;
    let mut held = false;
    loop {
        // An injected `disconnect` with a duration keeps the connection down meanwhile.
        if let Some(reason) = handle.faults.held_down() {
            if !held {
                handle.mailbox.enqueue();
                if actor.cast(SinkMsg::Connection(ConnectionEvent::Disconnected(reason))).is_err() {
                    return;
                }
                held = true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        held = false;
        handle.faults.take_drop(); // a request older than this connection is not for it
                                   // rumqttc's event loop connects (its request channel is not used: ours is `rx`).
        let mut eventloop = EventLoop::new(opts.clone(), 1);
        let (tx, mut rx) = mpsc::channel(REQUEST_CHANNEL);
        let ledger = Arc::new(Mutex::new(InFlight::default()));
        let ended = tokio::select! {
            ended = async {
                let ack = match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => ack,
                    Ok(other) => return Err(format!("unexpected {other:?} before the broker's CONNACK")),
                    Err(e) => return Err(e.to_string()),
                };
                delay = cfg.reconnect_min;
                *lock(&current) = Some(Connection { requests: tx, ledger: ledger.clone() });
                let event = ConnectionEvent::Connected { session_present: ack.session_present };
                handle.mailbox.enqueue();
                if actor.cast(SinkMsg::Connection(event)).is_err() {
                    return Ok(());
                }
                session(&mut eventloop, &mut rx, &ledger, &handle, cfg.qos == 0).await
            } => ended,
            () = handle.faults.dropped() => Err("fault injected: connection dropped".to_string()),
        };
        // Our own DISCONNECT was written (shutdown), or the actor is gone: stop.
        let Err(reason) = ended else { return };
        // The connection is over: nothing more can be handed to it once the receiving end
        // of its channel is gone.
        *lock(&current) = None;
        drop(rx);
        drop(eventloop);
        let lost = lock(&ledger).take_all();
        if !lost.is_empty() {
            handle.stats.retries.inc_by(lost.len() as u64);
            handle.requeue_front(lost);
        }
        handle.set_in_flight(0);
        handle.mailbox.enqueue();
        if actor.cast(SinkMsg::Connection(ConnectionEvent::Disconnected(reason))).is_err() {
            return;
        }
        tokio::time::sleep(jitter(delay)).await;
        delay = (delay * 2).min(cfg.reconnect_max);
    }
}

/// One connected session, after the CONNACK: read what the broker sends (acks, ping
/// responses), write what the actor hands over, as many publishes as are waiting (up to
/// [`WRITE_BATCH`], within the in-flight window) before one flush, and ping every
/// `keep_alive`. Ends with `Ok` once our DISCONNECT is written or the actor is gone, with
/// the reason when the connection fails.
async fn session(
    eventloop: &mut EventLoop,
    requests: &mut mpsc::Receiver<Request>,
    ledger: &Mutex<InFlight>,
    handle: &SinkHandle,
    qos0: bool,
) -> Result<(), String> {
    let EventLoop { mqtt_options, state, network, network_options, .. } = eventloop;
    let Some(network) = network.as_mut() else {
        return Err("no connection after the broker's CONNACK".to_string());
    };
    let timeout = Duration::from_secs(network_options.connection_timeout());
    let keep_alive = mqtt_options.keep_alive();
    let max_inflight = mqtt_options.inflight();
    let mut ping_at = tokio::time::Instant::now() + keep_alive;
    macro_rules! flush {
        () => {
            match tokio::time::timeout(timeout, network.flush()).await {
                Ok(r) => r.map_err(|e| format!("write failed: {e}"))?,
                Err(_) => return Err(format!("write timed out after {timeout:?}")),
            }
        };
    }
    loop {
        // rumqttc's own flow control: nothing new while the window is full or a packet id
        // collided (the broker acknowledged out of order).
        let can_send = state.collision.is_none() && state.inflight() < max_inflight;
        tokio::select! {
            read = network.readb(state) => {
                read.map_err(|e| format!("read failed: {e}"))?;
                flush!(); // replies, if any
            }
            request = requests.recv(), if can_send => {
                let Some(mut request) = request else { return Ok(()) }; // the actor is gone
                let mut written = 0;
                loop {
                    let packet = match request {
                        Request::Publish(p) => rumqttc::Request::Publish(p),
                        Request::Disconnect => rumqttc::Request::Disconnect(Disconnect),
                    };
                    let last = matches!(packet, rumqttc::Request::Disconnect(_));
                    if let Some(out) = state.handle_outgoing_packet(packet).map_err(|e| e.to_string())? {
                        network.write(out).await.map_err(|e| format!("write failed: {e}"))?;
                    }
                    if last {
                        flush!();
                        settle(state, ledger, handle, qos0);
                        return Ok(());
                    }
                    written += 1;
                    if written >= WRITE_BATCH || state.collision.is_some() || state.inflight() >= max_inflight {
                        break;
                    }
                    match requests.try_recv() {
                        Ok(next) => request = next,
                        Err(_) => break,
                    }
                }
                flush!();
            }
            () = tokio::time::sleep_until(ping_at), if !keep_alive.is_zero() => {
                ping_at = tokio::time::Instant::now() + keep_alive;
                if let Some(out) = state.handle_outgoing_packet(rumqttc::Request::PingReq(PingReq)).map_err(|e| e.to_string())? {
                    network.write(out).await.map_err(|e| format!("write failed: {e}"))?;
                }
                flush!();
            }
        }
        settle(state, ledger, handle, qos0);
    }
}

/// Account for what rumqttc's state recorded: publishes written (a QoS 0 one is then
/// delivered; a QoS 1/2 one waits for its acknowledgement under its packet id) and
/// acknowledgements received, in order.
fn settle(state: &mut MqttState, ledger: &Mutex<InFlight>, handle: &SinkHandle, qos0: bool) {
    if state.events.is_empty() {
        return;
    }
    let mut l = lock(ledger);
    while let Some(event) = state.events.pop_front() {
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(env) = l.handed.pop_front() {
                    if qos0 {
                        handle.stats.delivered(&env);
                        super::pool::recycle(env);
                    } else {
                        l.by_pkid.insert(pkid, env);
                    }
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => complete(&mut l, handle, ack.pkid),
            Event::Incoming(Packet::PubComp(comp)) => complete(&mut l, handle, comp.pkid),
            _ => {}
        }
    }
    handle.set_in_flight(l.len());
}

fn complete(l: &mut InFlight, handle: &SinkHandle, pkid: u16) {
    if let Some(env) = l.by_pkid.remove(&pkid) {
        handle.stats.delivered(&env);
        super::pool::recycle(env);
    }
}

/// +-20% so that many sinks (or runtimes) do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    let f = 0.8 + rand::random::<f64>() * 0.4;
    d.mul_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::sinks::queue::tests::{env, sink_entry, until};
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Offers made while the client's request channel is full do not wake the sink: the task
    /// waiting for room pumps once the publish went through. (Before, each offer sent the
    /// sink a `Pump` that found it blocked: under overload, a message and often a system
    /// call per observation, for nothing.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn offers_while_the_client_is_blocked_do_not_wake_the_sink() {
        // A broker that answers the CONNECT, then reads nothing more: with a small receive
        // buffer the client's writes stall after a few KiB, and its request channel fills.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let listener = socket.listen(1).expect("listen");
        let port = listener.local_addr().expect("addr").port();
        let broker = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut connect = [0u8; 512];
            let _ = s.read(&mut connect).await;
            let _ = s.write_all(&[0x20, 0x02, 0x00, 0x00]).await; // CONNACK, accepted
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(s);
        });
        let text = format!(
            "[[sinks.mqtt]]\nname = \"stalled\"\nurl = \"mqtt://127.0.0.1:{port}\"\nqos = 0\nqueue_capacity = 100000\n"
        );
        let config = Config::parse(&text, "test", &[]).unwrap_or_else(|e| panic!("{e}"));
        let cfg = config.sinks.mqtt[0].clone();
        let m = Metrics::new();
        let handle = SinkHandle::new("stalled", "mqtt", cfg.url(), cfg.queue_capacity, &m);
        let entry = sink_entry("stalled");
        let args = MqttSinkArgs { handle: handle.clone(), config: cfg, entry };
        let (actor, task) = Actor::spawn(None, MqttSink, args).await.expect("spawn");
        until("the sink to be connected", || handle.stats.connected.load(std::sync::atomic::Ordering::Relaxed)).await;
        // Enough to fill the socket's buffers and the client's channel.
        for s in 1..=20_000 {
            handle.offer(env(s));
        }
        // Blocked: its channel full, publishes left in the queue, and nothing moving for a
        // while (the socket's buffers take writes for some time before they are full).
        let mut last = (usize::MAX, Instant::now());
        until("the client to block (its channel full, the queue still for 300 ms)", || {
            let q = handle.queue_len();
            if q != last.0 {
                last = (q, Instant::now());
            }
            handle.in_flight() > REQUEST_CHANNEL && q > 0 && last.1.elapsed() >= Duration::from_millis(300)
        })
        .await;
        assert_eq!(handle.mailbox.depth(), 0, "a blocked sink has nothing left in its mailbox");
        let queued = handle.queue_len();
        let pumps = handle.mailbox.handled_total();
        for s in 20_001..=20_500 {
            handle.offer(env(s));
            // The actor handles whatever the offer sent before the next one comes.
            until("the actor to handle what was sent", || handle.mailbox.depth() == 0).await;
        }
        let during = handle.mailbox.handled_total() - pumps;
        assert_eq!(handle.queue_len(), queued + 500, "the client took publishes while it was said to be blocked");
        assert!(during <= 1, "500 offers while the client was blocked woke the sink {during} times");
        actor.stop(None);
        let _ = task.await;
        broker.abort();
    }

    /// A raw MQTT peer for the tests below: rumqttc's codec, no broker logic.
    struct Peer {
        s: tokio::net::TcpStream,
        buf: bytes::BytesMut,
    }

    impl Peer {
        /// Accept a client and answer its CONNECT.
        async fn accept(listener: &tokio::net::TcpListener) -> Peer {
            let (s, _) = listener.accept().await.expect("accept");
            let mut peer = Peer { s, buf: bytes::BytesMut::new() };
            match peer.next().await {
                Some(Packet::Connect(_)) => {}
                other => panic!("expected a CONNECT, got {other:?}"),
            }
            peer.send(|b| rumqttc::ConnAck::new(rumqttc::ConnectReturnCode::Success, false).write(b)).await;
            peer
        }

        /// The next packet, or None when the client closed the connection.
        async fn next(&mut self) -> Option<Packet> {
            loop {
                match Packet::read(&mut self.buf, MAX_PACKET) {
                    Ok(p) => return Some(p),
                    Err(rumqttc::Error::InsufficientBytes(_)) => {}
                    Err(e) => panic!("the sink sent a malformed packet: {e}"),
                }
                match self.s.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        }

        async fn send(&mut self, write: impl FnOnce(&mut bytes::BytesMut) -> Result<usize, rumqttc::Error>) {
            let mut out = bytes::BytesMut::new();
            write(&mut out).expect("encode");
            self.s.write_all(&out).await.expect("write to the sink");
        }
    }

    async fn spawn_sink(text: &str) -> (Arc<SinkHandle>, ActorRef<SinkMsg>, tokio::task::JoinHandle<()>) {
        let config = Config::parse(text, "test", &[]).unwrap_or_else(|e| panic!("{e}"));
        let cfg = config.sinks.mqtt[0].clone();
        let m = Metrics::new();
        let handle = SinkHandle::new(&cfg.name, "mqtt", cfg.url(), cfg.queue_capacity, &m);
        let args = MqttSinkArgs { handle: handle.clone(), config: cfg, entry: sink_entry("t") };
        let (actor, task) = Actor::spawn(None, MqttSink, args).await.expect("spawn");
        (handle, actor, task)
    }

    /// The I/O task pings every `keep_alive`; a broker that stops answering is left at the
    /// next ping (rumqttc's rule: one unanswered ping at a time) and the sink reconnects;
    /// a broker that answers keeps the connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broker_that_stops_answering_pings_is_left_and_one_that_answers_is_kept() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let text = format!(
            "[[sinks.mqtt]]\nname = \"pings\"\nurl = \"mqtt://127.0.0.1:{port}\"\nkeep_alive = \"1s\"\nreconnect_min = \"50ms\"\n"
        );
        let (handle, actor, task) = spawn_sink(&text).await;
        // First connection: pings counted, never answered.
        let mut silent = Peer::accept(&listener).await;
        let started = Instant::now();
        let counting = tokio::spawn(async move {
            let mut pings = 0;
            while let Some(p) = silent.next().await {
                assert_eq!(p, Packet::PingReq, "an idle sink sends only pings");
                pings += 1;
            }
            pings
        });
        let mut answering = tokio::time::timeout(Duration::from_secs(10), Peer::accept(&listener))
            .await
            .expect("no reconnection in 10 s");
        let left_after = started.elapsed();
        let pings = counting.await.expect("counting task");
        assert_eq!(pings, 1, "one ping, then the connection is left at the next one");
        assert!(left_after >= Duration::from_millis(1500), "left after {left_after:?}, before its second ping was due");
        let (err, _) = handle.stats.last_error().expect("the sink records why it left");
        assert!(err.contains("ping"), "the reason names the unanswered ping: {err}");
        // Second connection: every ping answered, the connection kept for 3.5 intervals.
        let kept = async {
            let mut pings = 0;
            while let Some(p) = answering.next().await {
                assert_eq!(p, Packet::PingReq);
                pings += 1;
                answering.send(|b| rumqttc::PingResp.write(b)).await;
            }
            pings
        };
        tokio::select! {
            pings = kept => panic!("the sink left a broker that answered its pings, after {pings}"),
            _ = tokio::time::sleep(Duration::from_millis(3500)) => {}
            _ = listener.accept() => panic!("the sink reconnected although its pings were answered"),
        }
        assert!(handle.stats.connected.load(std::sync::atomic::Ordering::Relaxed));
        actor.stop(None);
        let _ = task.await;
    }

    /// A broker acknowledging QoS 1 publishes out of order, with a window small enough that
    /// packet ids collide (rumqttc's collision state: the I/O task stops taking publishes
    /// until the colliding id is acknowledged): everything is delivered, each observation is
    /// accounted to its own acknowledgement, nothing stays in flight.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn qos1_acks_out_of_order_deliver_everything() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let text =
            format!("[[sinks.mqtt]]\nname = \"acks\"\nurl = \"mqtt://127.0.0.1:{port}\"\nqos = 1\nmax_inflight = 4\n");
        let (handle, actor, task) = spawn_sink(&text).await;
        let mut peer = Peer::accept(&listener).await;
        const N: u64 = 300;
        for s in 1..=N {
            handle.offer(env(s));
        }
        let broker = tokio::spawn(async move {
            let mut seen = std::collections::BTreeSet::new();
            let mut held: Vec<u16> = Vec::new();
            let mut publishes = 0;
            while seen.len() < N as usize {
                let Some(p) = peer.next().await else { break };
                let Packet::Publish(p) = p else { continue };
                publishes += 1;
                assert_eq!(p.qos, QoS::AtLeastOnce);
                let obs: serde_json::Value = serde_json::from_slice(&p.payload).expect("JSON payload");
                seen.insert(obs["seq"].as_u64().expect("seq"));
                held.push(p.pkid);
                // Acknowledge in pairs, the later one first.
                if held.len() == 2 {
                    for pkid in held.drain(..).rev() {
                        peer.send(|b| rumqttc::PubAck::new(pkid).write(b)).await;
                    }
                }
            }
            for pkid in held {
                peer.send(|b| rumqttc::PubAck::new(pkid).write(b)).await;
            }
            (seen, publishes, peer)
        });
        let (seen, publishes, _peer) =
            tokio::time::timeout(Duration::from_secs(20), broker).await.expect("all in 20 s").expect("broker task");
        assert_eq!(seen, (1..=N).collect(), "every observation reached the broker");
        assert_eq!(publishes, N, "each once (no connection was lost)");
        until("every acknowledgement accounted for", || {
            handle.stats.sent.get() == N && handle.in_flight() == 0 && handle.queue_len() == 0
        })
        .await;
        assert_eq!(handle.stats.duplicates.get(), 0);
        // The earlier of each pair is acknowledged after the later: the delivery tracker
        // counts it lost when the later one is delivered, then late when it is (the
        // counters only grow; a conforming broker acknowledges in order, MQTT 3.1.1
        // 4.6.0-2). Every one counted lost came late.
        assert_eq!(handle.stats.lost.get(), N / 2);
        assert_eq!(handle.stats.late(), N / 2);
        actor.stop(None);
        let _ = task.await;
    }
}
