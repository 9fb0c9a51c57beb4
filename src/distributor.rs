//! The Pulsar distributor: one consumer actor per topic (under the `distributor`
//! supervisor), each republishing every observation it reads to the `targets` sinks (the
//! same sink actors the sensors use, not copies) and acknowledging the message to Pulsar
//! only once every target accepted it.
//!
//! Per message:
//! - the payload decodes as an observation (the MQTT JSON): one envelope per target, all in
//!   one [`AckGroup`]; when the group settles with every target delivered, `ACK`; when a
//!   target refused or dropped it, or `ack_timeout` passed, a negative ack (Pulsar
//!   redelivers it: at least once);
//! - it does not: counted, produced to the dead-letter topic (with Pulsar's `REAL_TOPIC`,
//!   `ORIGIN_MESSAGE_ID` properties and our `error`), then acknowledged. It never stops
//!   the consumer.
//!
//! At most `max_in_flight` messages wait for their targets per topic: a target that is down
//! makes messages wait there (and Pulsar keeps the rest), it never loses them. The worker
//! task owns the Pulsar client and consumer; on any failure (connection lost, the stream
//! ended) it throws both away and subscribes again after a capped backoff, forever. What
//! was not acknowledged is redelivered by Pulsar. Counters live in the
//! [`DistributorHandle`], which outlives restarts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt as _;
use prometheus::IntCounterVec;
use pulsar::consumer::{ConsumerOptions, InitialPosition as PulsarInitialPosition};
use pulsar::{Consumer, Producer, SubType, TokioExecutor};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::Serialize;
use tokio::task::JoinHandle;
use twins::Observation;

use crate::actors::{now_ms, ActorEntry};
use crate::config::{InitialPosition, PulsarDistributorConfig, PulsarSubscriptionType};
use crate::consumer::{lock, ConsumerMsg, StopSignal};
use crate::metrics::Metrics;
use crate::sinks::pulsar::connect;
use crate::sinks::{AckGroup, Envelope, SinkHandle};

/// A point-in-time view of one topic's consumer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DistributorSnapshot {
    pub name: String,
    pub kind: &'static str,
    pub target: String,
    pub topic: String,
    pub subscription: String,
    pub subscription_type: &'static str,
    pub targets: Vec<String>,
    pub connected: bool,
    /// Subscriptions made (the first, then one per reconnection).
    pub sessions: u64,
    pub received: u64,
    pub decoded: u64,
    /// Payloads that were not observations, sent to the dead-letter topic.
    pub dead_lettered: u64,
    pub dead_letter_topic: String,
    /// Acknowledged after every target accepted them.
    pub acked: u64,
    /// Negatively acknowledged (a target refused or dropped it, or `ack_timeout` passed):
    /// Pulsar delivers them again.
    pub redelivery_requested: u64,
    /// Received and waiting for their targets now.
    pub in_flight: u64,
    pub last_error: Option<String>,
    pub last_error_at_unix_ms: Option<u64>,
    pub stopped: bool,
}

/// What outlives a topic consumer's actor: its counters and the stop signal.
pub struct DistributorHandle {
    pub name: String,
    pub topic: String,
    pub config: Arc<PulsarDistributorConfig>,
    pub targets: Vec<Arc<SinkHandle>>,
    connected: AtomicBool,
    sessions: AtomicU64,
    received: AtomicU64,
    decoded: AtomicU64,
    dead_lettered: AtomicU64,
    acked: AtomicU64,
    redelivery_requested: AtomicU64,
    in_flight: AtomicU64,
    counter: IntCounterVec,
    last_error: Mutex<Option<(String, u64)>>,
    stop: StopSignal,
}

impl DistributorHandle {
    pub fn new(
        topic: &str,
        config: Arc<PulsarDistributorConfig>,
        targets: Vec<Arc<SinkHandle>>,
        metrics: &Metrics,
    ) -> Arc<DistributorHandle> {
        let name = short_topic(topic).to_string();
        for outcome in OUTCOMES {
            metrics.distributor_messages.with_label_values(&[topic, outcome]);
        }
        Arc::new(DistributorHandle {
            name,
            topic: topic.to_string(),
            config,
            targets,
            connected: AtomicBool::new(false),
            sessions: AtomicU64::new(0),
            received: AtomicU64::new(0),
            decoded: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            redelivery_requested: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            counter: metrics.distributor_messages.clone(),
            last_error: Mutex::new(None),
            stop: StopSignal::default(),
        })
    }

    fn count(&self, c: &AtomicU64, outcome: &str) {
        c.fetch_add(1, Ordering::Relaxed);
        self.counter.with_label_values(&[&self.topic, outcome]).inc();
    }

    pub fn record_error(&self, err: impl Into<String>) {
        let err = err.into();
        tracing::warn!(topic = %self.topic, error = %err, "distributor");
        *lock(&self.last_error) = Some((err, now_ms()));
    }

    fn stopping(&self) -> bool {
        self.stop.stopping()
    }

    /// Stop taking messages, let those in hand be accepted by their targets and
    /// acknowledged, close the consumer; wait up to `grace` for it. Returns whether it
    /// stopped in time.
    pub async fn stop(&self, grace: Duration) -> bool {
        self.stop.stop(grace).await
    }

    pub fn snapshot(&self) -> DistributorSnapshot {
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let err = lock(&self.last_error).clone();
        DistributorSnapshot {
            name: self.name.clone(),
            kind: "pulsar",
            target: self.config.url.clone(),
            topic: self.topic.clone(),
            subscription: self.config.subscription.clone(),
            subscription_type: self.config.subscription_type.as_str(),
            targets: self.config.targets.clone(),
            connected: self.connected.load(Ordering::Relaxed),
            sessions: c(&self.sessions),
            received: c(&self.received),
            decoded: c(&self.decoded),
            dead_lettered: c(&self.dead_lettered),
            dead_letter_topic: self.config.dead_letter_topic_of(&self.topic),
            acked: c(&self.acked),
            redelivery_requested: c(&self.redelivery_requested),
            in_flight: c(&self.in_flight),
            last_error_at_unix_ms: err.as_ref().map(|e| e.1),
            last_error: err.map(|e| e.0),
            stopped: self.stop.finished(),
        }
    }
}

/// The outcomes counted in `simulator_distributor_messages_total`.
const OUTCOMES: [&str; 5] = ["received", "decoded", "dead_lettered", "acked", "redelivery_requested"];

/// `persistent://public/default/smartcity-traffic` -> `smartcity-traffic`.
pub fn short_topic(topic: &str) -> &str {
    topic.rsplit('/').next().unwrap_or(topic)
}

/// The arguments of a [`PulsarTopicConsumer`] actor.
pub struct DistributorArgs {
    pub handle: Arc<DistributorHandle>,
    pub entry: Arc<ActorEntry>,
}

/// One topic's consumer actor: runs [`run`] as its worker; answers pings and faults.
pub struct PulsarTopicConsumer;

pub struct DistributorState {
    handle: Arc<DistributorHandle>,
    entry: Arc<ActorEntry>,
    worker: Option<JoinHandle<()>>,
}

impl Actor for PulsarTopicConsumer {
    type Msg = ConsumerMsg;
    type State = DistributorState;
    type Arguments = DistributorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ConsumerMsg>,
        args: DistributorArgs,
    ) -> Result<DistributorState, ActorProcessingErr> {
        args.entry.attach(myself.get_cell());
        let shown = args.handle.clone();
        args.entry.set_state(Arc::new(move || serde_json::to_value(shown.snapshot()).unwrap_or_default()));
        let worker = (!args.handle.stopping()).then(|| tokio::spawn(run(args.handle.clone())));
        Ok(DistributorState { handle: args.handle, entry: args.entry, worker })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ConsumerMsg>,
        msg: ConsumerMsg,
        state: &mut DistributorState,
    ) -> Result<(), ActorProcessingErr> {
        state.entry.mailbox.handled();
        match msg {
            ConsumerMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            ConsumerMsg::Crash(reason) => panic!("fault injected into distributor {}: {reason}", state.handle.topic),
        }
        Ok(())
    }
}

impl Drop for DistributorState {
    /// However the actor ends: stop the worker (its client and consumer close with it; what
    /// it had not acknowledged, Pulsar redelivers).
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            w.abort();
        }
        self.handle.connected.store(false, Ordering::Relaxed);
        self.handle.in_flight.store(0, Ordering::Relaxed);
    }
}

/// Subscribe and distribute until stopped, starting over after any failure.
pub async fn run(h: Arc<DistributorHandle>) {
    let cfg = h.config.clone();
    let mut delay = cfg.reconnect_min;
    let mut stop = h.stop.subscribe();
    while !h.stopping() {
        let started = tokio::time::Instant::now();
        match session(&h, &mut stop).await {
            Ok(()) => break,
            Err(e) => h.record_error(e),
        }
        h.connected.store(false, Ordering::Relaxed);
        h.in_flight.store(0, Ordering::Relaxed);
        // A session that lived a while resets the backoff.
        if started.elapsed() > cfg.reconnect_max {
            delay = cfg.reconnect_min;
        }
        tokio::select! {
            () = tokio::time::sleep(jitter(delay)) => {}
            _ = stop.changed() => {}
        }
        delay = (delay * 2).min(cfg.reconnect_max);
    }
    h.connected.store(false, Ordering::Relaxed);
    h.stop.set_finished();
}

/// What became of a message's envelopes.
enum Settled {
    Delivered,
    /// This many targets refused or dropped it.
    Failed(usize),
    TimedOut,
}

type Waiting = std::pin::Pin<Box<dyn std::future::Future<Output = (u64, Settled)> + Send>>;

/// One subscription: read, fan out, acknowledge. `Ok` when stopped, `Err` on failure.
async fn session(h: &DistributorHandle, stop: &mut tokio::sync::watch::Receiver<bool>) -> Result<(), String> {
    let cfg = &h.config;
    let client = connect(&cfg.url, cfg.token.as_ref(), cfg.operation_timeout).await?;
    let sub_type = match cfg.subscription_type {
        PulsarSubscriptionType::Exclusive => SubType::Exclusive,
        PulsarSubscriptionType::Shared => SubType::Shared,
        PulsarSubscriptionType::Failover => SubType::Failover,
        PulsarSubscriptionType::KeyShared => SubType::KeyShared,
    };
    let options = ConsumerOptions {
        durable: Some(true),
        receiver_queue_size: Some(u32::try_from(cfg.max_in_flight).unwrap_or(1000)),
        initial_position: match cfg.initial_position {
            InitialPosition::Earliest => PulsarInitialPosition::Earliest,
            InitialPosition::Latest => PulsarInitialPosition::Latest,
        },
        ..ConsumerOptions::default()
    };
    let build = client
        .consumer()
        .with_topic(&h.topic)
        .with_subscription(&cfg.subscription)
        .with_subscription_type(sub_type)
        .with_consumer_name(format!("twinrt-{}-{}", std::process::id(), h.name))
        .with_options(options)
        .build::<Vec<u8>>();
    let mut consumer: Consumer<Vec<u8>, TokioExecutor> = match tokio::time::timeout(cfg.operation_timeout, build).await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(format!("subscribe to {} as {}: {e}", h.topic, cfg.subscription)),
        Err(_) => return Err(format!("subscribe to {}: no answer within {:?}", h.topic, cfg.operation_timeout)),
    };
    h.connected.store(true, Ordering::Relaxed);
    h.sessions.fetch_add(1, Ordering::Relaxed);
    tracing::info!(topic = %h.topic, subscription = %cfg.subscription, "subscribed");

    let mut dead_letters: Option<Producer<TokioExecutor>> = None;
    let mut held: HashMap<u64, pulsar::consumer::Message<Vec<u8>>> = HashMap::new();
    let mut waiting: FuturesUnordered<Waiting> = FuturesUnordered::new();
    let mut next_id = 0u64;
    let mut stopping = h.stopping();
    loop {
        if stopping && held.is_empty() {
            let _ = tokio::time::timeout(cfg.operation_timeout, consumer.close()).await;
            return Ok(());
        }
        tokio::select! {
            biased;
            _ = stop.changed(), if !stopping => {
                stopping = true;
            }
            Some((id, settled)) = waiting.next(), if !waiting.is_empty() => {
                let Some(msg) = held.remove(&id) else { continue };
                h.in_flight.store(held.len() as u64, Ordering::Relaxed);
                match settled {
                    Settled::Delivered => {
                        consumer.ack(&msg).await.map_err(|e| format!("ack on {}: {e}", h.topic))?;
                        h.count(&h.acked, "acked");
                    }
                    other => {
                        let why = match other {
                            Settled::Failed(n) => format!("{n} target(s) refused or dropped it"),
                            _ => format!("not accepted by every target within {:?}", cfg.ack_timeout),
                        };
                        h.record_error(format!("message {:?} will be redelivered: {why}", msg.message_id()));
                        consumer.nack(&msg).await.map_err(|e| format!("negative ack on {}: {e}", h.topic))?;
                        h.count(&h.redelivery_requested, "redelivery_requested");
                    }
                }
            }
            next = consumer.next(), if !stopping && held.len() < cfg.max_in_flight => {
                let msg = match next {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return Err(format!("receive on {}: {e}", h.topic)),
                    None => return Err(format!("the consumer of {} ended", h.topic)),
                };
                h.count(&h.received, "received");
                let decoded = match msg.payload.data.len() {
                    n if n > cfg.max_payload_bytes => {
                        Err(format!("payload of {n} bytes exceeds max_payload_bytes ({})", cfg.max_payload_bytes))
                    }
                    _ => Observation::from_mqtt_json(&msg.payload.data).map_err(|e| format!("not an observation: {e}")),
                };
                match decoded {
                    Ok(obs) => {
                        h.count(&h.decoded, "decoded");
                        let id = next_id;
                        next_id += 1;
                        let group = AckGroup::new(h.targets.len());
                        for t in &h.targets {
                            t.offer(Envelope::with_ack(obs.clone(), group.clone()));
                        }
                        held.insert(id, msg);
                        h.in_flight.store(held.len() as u64, Ordering::Relaxed);
                        let timeout = cfg.ack_timeout;
                        waiting.push(Box::pin(async move {
                            let settled = match tokio::time::timeout(timeout, group.wait()).await {
                                Ok(0) => Settled::Delivered,
                                Ok(n) => Settled::Failed(n),
                                Err(_) => Settled::TimedOut,
                            };
                            (id, settled)
                        }));
                    }
                    Err(reason) => {
                        tracing::warn!(topic = %h.topic, id = ?msg.message_id(), %reason, "dead-lettered");
                        dead_letter(h, &client, &mut dead_letters, &msg, &reason).await?;
                        consumer.ack(&msg).await.map_err(|e| format!("ack on {}: {e}", h.topic))?;
                        h.count(&h.dead_lettered, "dead_lettered");
                        h.record_error(format!("dead-lettered {:?}: {reason}", msg.message_id()));
                    }
                }
            }
        }
    }
}

/// Produce a bad message to the dead-letter topic and wait for its receipt.
async fn dead_letter(
    h: &DistributorHandle,
    client: &pulsar::Pulsar<TokioExecutor>,
    producer: &mut Option<Producer<TokioExecutor>>,
    msg: &pulsar::consumer::Message<Vec<u8>>,
    reason: &str,
) -> Result<(), String> {
    let cfg = &h.config;
    let topic = cfg.dead_letter_topic_of(&h.topic);
    if producer.is_none() {
        let build = client.producer().with_topic(&topic).build();
        let p = tokio::time::timeout(cfg.operation_timeout, build)
            .await
            .map_err(|_| format!("dead-letter producer for {topic}: no answer within {:?}", cfg.operation_timeout))?
            .map_err(|e| format!("dead-letter producer for {topic}: {e}"))?;
        *producer = Some(p);
    }
    let Some(p) = producer.as_mut() else { return Err("no dead-letter producer".into()) };
    let id = msg.message_id();
    let mut m = p
        .create_message()
        .with_property("REAL_TOPIC", h.topic.clone())
        .with_property("ORIGIN_MESSAGE_ID", format!("{}:{}:{}", id.ledger_id, id.entry_id, id.partition.unwrap_or(-1)))
        .with_property("error", reason.to_string())
        .with_content(msg.payload.data.clone());
    if let Some(k) = msg.key() {
        m = m.with_key(k);
    }
    let receipt = m.send_non_blocking().await.map_err(|e| format!("dead-letter to {topic}: {e}"))?;
    tokio::time::timeout(cfg.operation_timeout, receipt)
        .await
        .map_err(|_| format!("dead-letter to {topic}: no receipt within {:?}", cfg.operation_timeout))?
        .map_err(|e| format!("dead-letter to {topic}: {e}"))?;
    Ok(())
}

fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.8 + rand::random::<f64>() * 0.4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_topic_names() {
        assert_eq!(short_topic("persistent://public/default/smartcity-traffic"), "smartcity-traffic");
        assert_eq!(short_topic("x"), "x");
    }
}
