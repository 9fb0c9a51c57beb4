//! Consumers: actors that read observations back from a broker and write them through a
//! sink, acknowledging to the broker only what the sink stored (at least once).
//!
//! - [`redpanda`]: a consumer group on Redpanda's HTTP Proxy (Pandaproxy) writing to an
//!   InfluxDB sink, committing offsets once InfluxDB accepted the points.
//!
//! A consumer actor owns a worker task (as the batch sinks do): the actor itself only
//! answers pings and fault injection, so it never waits on the network. What must survive
//! a restart (counters, the offsets accepted but not yet committed, the stop signal) lives
//! in its [`ConsumerHandle`], which the runtime keeps.

pub mod fetch;
pub mod redpanda;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::actors::{now_ms, ActorEntry};
use crate::config::RedpandaConsumerConfig;
use crate::sinks::SinkHandle;

/// The message type of every consumer actor.
#[derive(Debug)]
pub enum ConsumerMsg {
    /// Answer (the inspection API's liveness check).
    Ping(RpcReplyPort<()>),
    /// Make the actor panic (fault injection and supervision tests).
    Crash(String),
}

/// A point-in-time view of a consumer, for the inspection API and tests.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConsumerSnapshot {
    pub name: String,
    pub kind: &'static str,
    /// Where it reads (URL), for display.
    pub target: String,
    pub group: String,
    pub topics: Vec<String>,
    /// The sink it writes through.
    pub sink: String,
    /// The consumer instance it currently reads with, if any.
    pub instance_id: Option<String>,
    pub instances_created: u64,
    /// Instances the proxy no longer knew (404), recreated.
    pub instances_expired: u64,
    pub last_poll_at_unix_ms: Option<u64>,
    /// Records fetched (good and bad).
    pub fetched: u64,
    /// Records decoded into observations.
    pub decoded: u64,
    /// Records skipped: not base64, not JSON, not an observation (unknown type...).
    pub bad: u64,
    /// Records whose offsets were committed (after the sink stored them).
    pub committed: u64,
    /// Fetched batches the sink did not fully store (refused, dropped, timed out): not
    /// committed, read again from the committed offsets.
    pub not_delivered: u64,
    pub last_error: Option<String>,
    pub last_error_at_unix_ms: Option<u64>,
    /// Stopped for shutdown (its instance deleted).
    pub stopped: bool,
}

/// Offsets accepted by the sink and not yet committed: `(topic, partition, next offset)`,
/// and how many records they cover.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingCommit {
    pub offsets: Vec<(String, i64, i64)>,
    pub records: u64,
}

/// What outlives a consumer actor: counters, the instance, the pending commit, the stop
/// signal.
pub struct ConsumerHandle {
    pub name: String,
    pub config: RedpandaConsumerConfig,
    pub sink: Arc<SinkHandle>,
    pub(crate) instance: Mutex<Option<String>>,
    pub(crate) pending: Mutex<Option<PendingCommit>>,
    pub(crate) instances_created: AtomicU64,
    pub(crate) instances_expired: AtomicU64,
    pub(crate) last_poll_ms: AtomicU64,
    pub(crate) fetched: AtomicU64,
    pub(crate) decoded: AtomicU64,
    pub(crate) bad: AtomicU64,
    pub(crate) committed: AtomicU64,
    pub(crate) not_delivered: AtomicU64,
    last_error: Mutex<Option<(String, u64)>>,
    stop: StopSignal,
}

/// How a consumer's worker is asked to stop and says it has: kept in the consumer's
/// handle, so it outlives actor restarts (a restarted actor of a stopped consumer starts no
/// worker).
pub struct StopSignal {
    stop: tokio::sync::watch::Sender<bool>,
    finished: AtomicBool,
}

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal { stop: tokio::sync::watch::Sender::new(false), finished: AtomicBool::new(false) }
    }
}

impl StopSignal {
    /// For the worker: resolves `changed()` when a stop is asked.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Has a stop been asked?
    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// For the worker: it has stopped.
    pub fn set_finished(&self) {
        self.finished.store(true, Ordering::Release);
    }

    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Ask the worker to stop and wait up to `grace` for it. Returns whether it stopped in
    /// time.
    pub async fn stop(&self, grace: Duration) -> bool {
        self.stop.send_replace(true);
        let deadline = tokio::time::Instant::now() + grace;
        while !self.finished() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn opt_ms(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

impl ConsumerHandle {
    pub fn new(name: &str, config: RedpandaConsumerConfig, sink: Arc<SinkHandle>) -> Arc<ConsumerHandle> {
        Arc::new(ConsumerHandle {
            name: name.to_string(),
            config,
            sink,
            instance: Mutex::new(None),
            pending: Mutex::new(None),
            instances_created: AtomicU64::new(0),
            instances_expired: AtomicU64::new(0),
            last_poll_ms: AtomicU64::new(0),
            fetched: AtomicU64::new(0),
            decoded: AtomicU64::new(0),
            bad: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            not_delivered: AtomicU64::new(0),
            last_error: Mutex::new(None),
            stop: StopSignal::default(),
        })
    }

    pub fn record_error(&self, err: impl Into<String>) {
        let err = err.into();
        tracing::warn!(consumer = %self.name, error = %err, "consumer");
        *lock(&self.last_error) = Some((err, now_ms()));
    }

    pub(crate) fn stop_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stop.subscribe()
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.stopping()
    }

    pub(crate) fn set_finished(&self) {
        self.stop.set_finished();
    }

    /// Ask the worker to stop after the batch in hand (stored and committed), delete its
    /// instance, and wait up to `grace` for it. Returns whether it stopped in time.
    pub async fn stop(&self, grace: Duration) -> bool {
        self.stop.stop(grace).await
    }

    pub fn snapshot(&self) -> ConsumerSnapshot {
        let err = lock(&self.last_error).clone();
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ConsumerSnapshot {
            name: self.name.clone(),
            kind: "redpanda",
            target: self.config.url.clone(),
            group: self.config.group.clone(),
            topics: self.config.topics.clone(),
            sink: self.config.sink.clone(),
            instance_id: lock(&self.instance).clone(),
            instances_created: c(&self.instances_created),
            instances_expired: c(&self.instances_expired),
            last_poll_at_unix_ms: opt_ms(c(&self.last_poll_ms)),
            fetched: c(&self.fetched),
            decoded: c(&self.decoded),
            bad: c(&self.bad),
            committed: c(&self.committed),
            not_delivered: c(&self.not_delivered),
            last_error_at_unix_ms: err.as_ref().map(|e| e.1),
            last_error: err.map(|e| e.0),
            stopped: self.stop.finished(),
        }
    }
}

/// The arguments of a [`RedpandaConsumer`] actor.
pub struct ConsumerArgs {
    pub handle: Arc<ConsumerHandle>,
    pub entry: Arc<ActorEntry>,
}

/// The Redpanda consumer actor: runs [`redpanda::run`] as its worker.
pub struct RedpandaConsumer;

pub struct ConsumerState {
    handle: Arc<ConsumerHandle>,
    entry: Arc<ActorEntry>,
    worker: Option<JoinHandle<()>>,
}

impl Actor for RedpandaConsumer {
    type Msg = ConsumerMsg;
    type State = ConsumerState;
    type Arguments = ConsumerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ConsumerMsg>,
        args: ConsumerArgs,
    ) -> Result<ConsumerState, ActorProcessingErr> {
        args.entry.attach(myself.get_cell());
        let shown = args.handle.clone();
        args.entry.set_state(Arc::new(move || serde_json::to_value(shown.snapshot()).unwrap_or_default()));
        // Once stopped for shutdown, a restarted actor starts no worker.
        let worker = (!args.handle.stopping()).then(|| tokio::spawn(redpanda::run(args.handle.clone())));
        Ok(ConsumerState { handle: args.handle, entry: args.entry, worker })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ConsumerMsg>,
        msg: ConsumerMsg,
        state: &mut ConsumerState,
    ) -> Result<(), ActorProcessingErr> {
        state.entry.mailbox.handled();
        match msg {
            ConsumerMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            ConsumerMsg::Crash(reason) => panic!("fault injected into consumer {}: {reason}", state.handle.name),
        }
        Ok(())
    }
}

impl Drop for ConsumerState {
    /// However the actor ends: stop the worker; an instance it leaves behind is deleted
    /// in the background (best effort: the proxy expires it anyway). What it fetched and
    /// did not commit is read again by the next instance.
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            w.abort();
        }
        if let Some(id) = lock(&self.handle.instance).take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let cfg = self.handle.config.clone();
                rt.spawn(async move {
                    if let Ok(client) = redpanda::ProxyClient::new(&cfg) {
                        let _ = tokio::time::timeout(cfg.request_timeout, client.delete(&id)).await;
                    }
                });
            }
        }
    }
}
