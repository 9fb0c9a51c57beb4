//! The MQTT sink: one actor per broker, each with its own rumqttc connection, publishing
//! every observation to `{topic_prefix}/{type}/{id}` (default `city/sensors/...`).
//!
//! Delivery: the actor moves observations from its bounded [`SinkHandle`] queue to the
//! rumqttc client only while connected, and only as far as the client's small request
//! channel takes them (`try_publish`, never awaiting). Its I/O task drives the rumqttc
//! event loop and tracks every publish from hand-off to acknowledgement (QoS 1/2) or
//! write (QoS 0) in an [`InFlight`] ledger. When the connection is lost and the broker
//! has no session to resume, everything unacknowledged goes back to the front of the
//! queue and is sent again (at least once; counted as retries). The I/O task reconnects
//! with capped exponential backoff.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rumqttc::{AsyncClient, ClientError, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport};
use tokio::task::JoinHandle;

use super::queue::{Envelope, SinkHandle};
use super::{ConnectionEvent, SinkMsg};
use crate::config::MqttSinkConfig;

/// How many publishes the actor hands over per wake-up before yielding to its mailbox.
const PUMP_BATCH: usize = 512;
/// rumqttc's request channel: small, so that what waits stays visible in our queue.
const REQUEST_CHANNEL: usize = 64;

pub struct MqttSink;

pub struct MqttSinkArgs {
    pub handle: Arc<SinkHandle>,
    pub config: MqttSinkConfig,
}

pub struct MqttSinkState {
    handle: Arc<SinkHandle>,
    config: MqttSinkConfig,
    client: AsyncClient,
    ledger: Arc<Mutex<InFlight>>,
    io: JoinHandle<()>,
    connected: bool,
    retry_scheduled: bool,
    actor_id: ractor::ActorId,
}

/// Publishes handed to the client and not yet known delivered, in order.
#[derive(Default)]
pub struct InFlight {
    /// Handed to the client, not yet written out (no packet id yet).
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
        let mut acked_wait: Vec<Arc<Envelope>> = self.by_pkid.drain().map(|(_, e)| e).collect();
        acked_wait.sort_by_key(|e| e.emitted);
        acked_wait.extend(self.handed.drain(..));
        acked_wait
    }
}

fn lock(m: &Mutex<InFlight>) -> MutexGuard<'_, InFlight> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
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
    if cfg.tls {
        let ca = match &cfg.ca_file {
            Some(path) => std::fs::read(path).map_err(|e| format!("sink {}: cannot read ca_file {}: {e}", cfg.name, path.display()))?,
            None => return Err(format!("sink {}: mqtts:// needs a ca_file", cfg.name)),
        };
        let client_auth = match (&cfg.client_cert, &cfg.client_key) {
            (Some(c), Some(k)) => Some((
                std::fs::read(c).map_err(|e| format!("sink {}: cannot read client_cert {}: {e}", cfg.name, c.display()))?,
                std::fs::read(k).map_err(|e| format!("sink {}: cannot read client_key {}: {e}", cfg.name, k.display()))?,
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

    async fn pre_start(&self, myself: ActorRef<SinkMsg>, args: MqttSinkArgs) -> Result<MqttSinkState, ActorProcessingErr> {
        let MqttSinkArgs { handle, config } = args;
        let opts = mqtt_options(&config)?;
        let (client, eventloop) = AsyncClient::new(opts, REQUEST_CHANNEL);
        let ledger = Arc::new(Mutex::new(InFlight::default()));
        let actor_id = myself.get_id();
        let io = tokio::spawn(drive(eventloop, myself, handle.clone(), ledger.clone(), config.clone()));
        Ok(MqttSinkState { handle, config, client, ledger, io, connected: false, retry_scheduled: false, actor_id })
    }

    async fn post_start(&self, myself: ActorRef<SinkMsg>, state: &mut MqttSinkState) -> Result<(), ActorProcessingErr> {
        state.handle.attach(Some(myself));
        Ok(())
    }

    async fn handle(&self, myself: ActorRef<SinkMsg>, msg: SinkMsg, state: &mut MqttSinkState) -> Result<(), ActorProcessingErr> {
        match msg {
            SinkMsg::Pump => {
                state.retry_scheduled = false;
                state.pump(&myself);
            }
            SinkMsg::Connection(ConnectionEvent::Connected { session_present }) => {
                tracing::info!(sink = %state.config.name, url = %state.config.url(), session_present, "connected");
                state.connected = true;
                state.handle.stats.set_connected(true);
                if !session_present {
                    // The broker resends nothing of the old session: take back what was not acknowledged.
                    let lost = lock(&state.ledger).take_all();
                    if !lost.is_empty() {
                        state.handle.stats.retries.inc_by(lost.len() as u64);
                        state.handle.requeue_front(lost);
                    }
                    state.handle.set_in_flight(0);
                }
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
            SinkMsg::Crash(reason) => panic!("fault injected into sink {}: {reason}", state.config.name),
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<SinkMsg>, state: &mut MqttSinkState) -> Result<(), ActorProcessingErr> {
        // A graceful stop: let the I/O task write the DISCONNECT, but never wait long for a
        // dead broker. The rest of the clean-up is in `Drop`, which also runs after a panic.
        let _ = state.client.try_disconnect();
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
        let pending = lock(&self.ledger).take_all();
        self.handle.requeue_front(pending);
        self.handle.set_in_flight(0);
    }
}

impl MqttSinkState {
    /// Hand queued observations to the client while connected and while it takes them.
    fn pump(&mut self, myself: &ActorRef<SinkMsg>) {
        self.handle.woken();
        if !self.connected {
            return;
        }
        let q = qos(self.config.qos);
        let mut buf = Vec::with_capacity(512);
        for _ in 0..PUMP_BATCH {
            let Some(env) = self.handle.pop() else { return };
            let topic = format!("{}/{}/{}", self.config.topic_prefix, env.obs.kind.as_str(), env.obs.sensor_id);
            buf.clear();
            env.obs.write_mqtt_json(&mut buf);
            let mut ledger = lock(&self.ledger);
            ledger.handed.push_back(env);
            match self.client.try_publish(topic, q, false, buf.clone()) {
                Ok(()) => {
                    self.handle.set_in_flight(ledger.len());
                }
                Err(e) => {
                    let env = ledger.handed.pop_back();
                    drop(ledger);
                    if let Some(env) = env {
                        self.handle.requeue_front(vec![env]);
                    }
                    if let ClientError::Request(_) = e {
                        tracing::error!(sink = %self.config.name, "MQTT client closed");
                    }
                    // The client is full: try again shortly.
                    self.schedule_retry(myself);
                    return;
                }
            }
        }
        // More may be waiting: continue after the mailbox had its turn.
        self.schedule_retry(myself);
    }

    fn schedule_retry(&mut self, myself: &ActorRef<SinkMsg>) {
        if !self.retry_scheduled && self.handle.queue_len() > 0 {
            self.retry_scheduled = true;
            myself.send_after(Duration::from_millis(5), || SinkMsg::Pump);
        }
    }
}

/// Drive the rumqttc event loop: report connection changes to the actor, account for
/// every publish in the ledger, and reconnect with capped exponential backoff.
async fn drive(
    mut eventloop: EventLoop,
    actor: ActorRef<SinkMsg>,
    handle: Arc<SinkHandle>,
    ledger: Arc<Mutex<InFlight>>,
    cfg: MqttSinkConfig,
) {
    let mut delay = cfg.reconnect_min;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                delay = cfg.reconnect_min;
                let event = ConnectionEvent::Connected { session_present: ack.session_present };
                if actor.cast(SinkMsg::Connection(event)).is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut l = lock(&ledger);
                if cfg.qos == 0 {
                    if let Some(env) = l.handed.pop_front() {
                        handle.stats.delivered(env.emitted);
                    }
                } else if l.by_pkid.contains_key(&pkid) {
                    // A retransmission of an unacknowledged publish (resumed session).
                    handle.stats.retries.inc();
                } else if let Some(env) = l.handed.pop_front() {
                    l.by_pkid.insert(pkid, env);
                }
                handle.set_in_flight(l.len());
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => complete(&ledger, &handle, ack.pkid),
            Ok(Event::Incoming(Packet::PubComp(comp))) => complete(&ledger, &handle, comp.pkid),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                // Our own DISCONNECT (shutdown): nothing more to do.
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let reason = e.to_string();
                if actor.cast(SinkMsg::Connection(ConnectionEvent::Disconnected(reason))).is_err() {
                    return;
                }
                tokio::time::sleep(jitter(delay)).await;
                delay = (delay * 2).min(cfg.reconnect_max);
            }
        }
    }
}

fn complete(ledger: &Mutex<InFlight>, handle: &SinkHandle, pkid: u16) {
    let mut l = lock(ledger);
    if let Some(env) = l.by_pkid.remove(&pkid) {
        handle.stats.delivered(env.emitted);
    }
    handle.set_in_flight(l.len());
}

/// +-20% so that many sinks (or runtimes) do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    let f = 0.8 + rand::random::<f64>() * 0.4;
    d.mul_f64(f)
}
