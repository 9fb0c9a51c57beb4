//! The driver every request/response sink shares (NGSI-LD, SensorThings, InfluxDB, ...):
//! one actor per broker, whose worker task takes batches from the sink's bounded queue and
//! hands them to a [`BatchService`], the only code that speaks the broker's protocol.
//!
//! Rules, in one place:
//! - A batch is taken when `batch_size` entries wait, or `linger` after the first one, or
//!   at once when the producer waits for it (entries with an [`AckGroup`](super::AckGroup)).
//! - [`SendError::Retriable`] (connection refused, timeout, 429, 5xx): the same batch is
//!   sent again after a capped exponential backoff with jitter, keeping order; meanwhile
//!   new observations wait in the bounded queue (oldest dropped and counted when full).
//! - [`SendError::Rejected`] (4xx other than 429): the batch is not retried; its entries
//!   are counted as failed and the server's message is logged and kept as the last error.
//! - Per-entry failures reported by a successful response ([`BatchOutcome::failed`]) are
//!   counted as failed; the rest as sent.
//! - Every call is bounded by `request_timeout`. The batches in flight sit in a ledger that
//!   the actor gives back to the queue (oldest first) if it dies, so a restart loses nothing.
//! - `concurrency` batches are sent at once, each by its own service (client); the next
//!   batch is taken only when one of them is free. With 1 (the default of every sink but
//!   InfluxDB) batches go out one after another, in order; with more, a batch may reach the
//!   broker before an older one that is retried, but entries are still settled (counted
//!   delivered, acknowledged) in the queue's order.
//! - Injected faults ([`crate::faults::FaultGate`], in the sink's handle) are consulted
//!   before each send: an injected failure is a [`SendError::Retriable`] (retried as any),
//!   latency is waited before sending, a dropped connection rebuilds the service (new
//!   client, new connections) and health-checks again.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::queue::{Envelope, SinkHandle};
use super::SinkMsg;
use crate::actors::ActorEntry;

/// Batching and retry settings of a request/response sink.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSettings {
    pub batch_size: usize,
    pub linger: Duration,
    pub request_timeout: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Batches sent at once (at least 1).
    pub concurrency: usize,
}

/// Why a batch did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth sending again later: the broker is down, slow, or asked us to slow down.
    Retriable(String),
    /// The broker refused the batch itself: sending it again would fail again.
    Rejected(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Retriable(m) => write!(f, "{m} (will retry)"),
            SendError::Rejected(m) => write!(f, "rejected: {m}"),
        }
    }
}

/// What the broker said of a batch it accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Entries refused individually: (index in the batch, the broker's reason).
    pub failed: Vec<(usize, String)>,
}

/// Classify an HTTP status the way every sink must: 429 and 5xx are retriable, other 4xx
/// are rejections.
pub fn classify_status(status: u16, body: &str) -> SendError {
    let body = body.trim();
    // At most 500 characters of the server's message (cut on a character boundary).
    let body = match body.char_indices().nth(500) {
        Some((i, _)) => &body[..i],
        None => body,
    };
    let msg = format!("HTTP {status}: {body}");
    if status == 429 || status >= 500 {
        SendError::Retriable(msg)
    } else {
        SendError::Rejected(msg)
    }
}

/// The protocol side of a batching sink: the only code that talks to its broker.
pub trait BatchService: Send + 'static {
    /// Talk to the broker once (e.g. a status endpoint); until it answers, nothing is sent
    /// and the sink does not count as connected.
    fn healthcheck(&mut self) -> impl Future<Output = Result<(), SendError>> + Send;

    /// Deliver a batch (in order). Called again with the same batch after a retriable error.
    fn send(&mut self, batch: &[Arc<Envelope>]) -> impl Future<Output = Result<BatchOutcome, SendError>> + Send;
}

/// The arguments of a [`BatchSink`] actor: the service is built by `make` at every start.
pub struct BatchSinkArgs<S> {
    pub handle: Arc<SinkHandle>,
    pub settings: BatchSettings,
    pub entry: Arc<ActorEntry>,
    pub make: Arc<dyn Fn() -> Result<S, String> + Send + Sync>,
}

/// A sink actor driving a [`BatchService`].
pub struct BatchSink<S>(std::marker::PhantomData<fn() -> S>);

impl<S> Default for BatchSink<S> {
    fn default() -> Self {
        BatchSink(std::marker::PhantomData)
    }
}

/// The batches in flight, by the order they were taken, each with its outcome once the
/// broker answered: which entries failed.
#[derive(Default)]
struct Ledger {
    next: u64,
    batches: BTreeMap<u64, Taken>,
}

/// A batch, and once answered which of its entries failed.
type Taken = (Vec<Arc<Envelope>>, Option<Vec<bool>>);

impl Ledger {
    /// Settle the answered batches at the front, in the order they were taken: with
    /// concurrent sends a batch may be answered before an older one, but its entries are
    /// counted delivered (and acknowledged) only after the older ones, so the delivery
    /// accounting sees the queue's order and a gap is always a loss.
    fn settle_front(&mut self, handle: &SinkHandle) {
        while let Some(first) = self.batches.first_entry() {
            if first.get().1.is_none() {
                return;
            }
            let (batch, failed) = first.remove();
            settle(handle, &batch, failed.as_deref().unwrap_or_default());
            handle.release_in_flight(batch.len());
        }
    }
}

/// Count each entry delivered, or failed where `failed` says so.
fn settle(handle: &SinkHandle, batch: &[Arc<Envelope>], failed: &[bool]) {
    for (i, env) in batch.iter().enumerate() {
        if failed.get(i).copied().unwrap_or(false) {
            handle.stats.failed.inc();
            env.settle(false);
        } else {
            handle.stats.delivered(env);
        }
    }
}

type SharedLedger = Arc<Mutex<Ledger>>;

pub struct BatchSinkState {
    handle: Arc<SinkHandle>,
    notify: Arc<Notify>,
    ledger: SharedLedger,
    worker: JoinHandle<()>,
    actor_id: ractor::ActorId,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<S: BatchService> Actor for BatchSink<S> {
    type Msg = SinkMsg;
    type State = BatchSinkState;
    type Arguments = BatchSinkArgs<S>;

    async fn pre_start(
        &self,
        myself: ActorRef<SinkMsg>,
        args: BatchSinkArgs<S>,
    ) -> Result<BatchSinkState, ActorProcessingErr> {
        let service = (args.make)()?;
        args.entry.attach(myself.get_cell());
        let notify = Arc::new(Notify::new());
        let ledger = SharedLedger::default();
        let worker = tokio::spawn(work(
            service,
            args.make.clone(),
            args.handle.clone(),
            args.settings,
            notify.clone(),
            ledger.clone(),
        ));
        Ok(BatchSinkState { handle: args.handle, notify, ledger, worker, actor_id: myself.get_id() })
    }

    async fn post_start(
        &self,
        myself: ActorRef<SinkMsg>,
        state: &mut BatchSinkState,
    ) -> Result<(), ActorProcessingErr> {
        state.handle.attach(Some(myself));
        state.notify.notify_one();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<SinkMsg>,
        msg: SinkMsg,
        state: &mut BatchSinkState,
    ) -> Result<(), ActorProcessingErr> {
        state.handle.mailbox.handled();
        match msg {
            // The dispatcher re-enables wake-ups itself when it waits (`wait_until`).
            SinkMsg::Pump => state.notify.notify_one(),
            SinkMsg::Connection(_) => {}
            SinkMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            SinkMsg::Crash(reason) => panic!("fault injected into sink {}: {reason}", state.handle.name),
            SinkMsg::Fail(reason) => {
                return Err(format!("fault injected into sink {}: {reason}", state.handle.name).into())
            }
            SinkMsg::Stall(d) => tokio::time::sleep(d).await,
        }
        Ok(())
    }
}

impl Drop for BatchSinkState {
    /// However the actor ends: stop the worker, settle the batches the broker answered,
    /// give the others back to the queue.
    fn drop(&mut self) {
        self.worker.abort();
        self.handle.detach(self.actor_id);
        self.handle.stats.set_connected(false);
        let mut pending = Vec::new();
        for (batch, failed) in std::mem::take(&mut lock(&self.ledger).batches).into_values() {
            match failed {
                Some(failed) => settle(&self.handle, &batch, &failed),
                None => pending.extend(batch),
            }
        }
        self.handle.requeue_front(pending);
        self.handle.set_in_flight(0);
    }
}

/// Health-check until the broker answers (and no injected fault holds the connection down).
async fn connect<S: BatchService>(service: &mut S, handle: &SinkHandle, settings: &BatchSettings) {
    let stats = &handle.stats;
    let mut delay = settings.retry_min;
    loop {
        if let Some(reason) = handle.faults.held_down() {
            stats.record_error(format!("healthcheck: {reason}"));
        } else {
            match tokio::time::timeout(settings.request_timeout, service.healthcheck()).await {
                Ok(Ok(())) => {
                    stats.set_connected(true);
                    return;
                }
                Ok(Err(e)) => stats.record_error(format!("healthcheck: {e}")),
                Err(_) => stats.record_error(format!("healthcheck: no answer within {:?}", settings.request_timeout)),
            }
        }
        tokio::time::sleep(jitter(delay)).await;
        delay = (delay * 2).min(settings.retry_max);
    }
}

/// Send a batch once, through the fault gate.
async fn send_once<S: BatchService>(
    service: &mut S,
    handle: &SinkHandle,
    settings: &BatchSettings,
    batch: &[Arc<Envelope>],
) -> Result<BatchOutcome, SendError> {
    if let Some(v) = handle.faults.check() {
        if !v.delay.is_zero() {
            tokio::time::sleep(v.delay).await;
        }
        if let Some(msg) = v.fail {
            return Err(SendError::Retriable(msg));
        }
    }
    match tokio::time::timeout(settings.request_timeout, service.send(batch)).await {
        Ok(r) => r,
        Err(_) => Err(SendError::Retriable(format!("no answer within {:?}", settings.request_timeout))),
    }
}

/// An injected `disconnect`: drop the service (its client and connections), build a new one
/// and health-check again.
async fn reconnect<S: BatchService>(
    service: &mut S,
    make: &(dyn Fn() -> Result<S, String> + Send + Sync),
    handle: &SinkHandle,
    settings: &BatchSettings,
) {
    handle.stats.set_connected(false);
    handle.stats.record_error("fault injected: connection dropped");
    tracing::warn!(sink = %handle.name, "connection dropped (injected fault)");
    match make() {
        Ok(s) => *service = s,
        Err(e) => handle.stats.record_error(format!("rebuilding the client: {e}")),
    }
    connect(service, handle, settings).await;
}

/// The dispatcher: takes a batch whenever a service is free and sends it in its own task.
async fn work<S: BatchService>(
    mut service: S,
    make: Arc<dyn Fn() -> Result<S, String> + Send + Sync>,
    handle: Arc<SinkHandle>,
    settings: BatchSettings,
    notify: Arc<Notify>,
    ledger: SharedLedger,
) {
    handle.faults.take_drop(); // a request older than this connection is not for it
    connect(&mut service, &handle, &settings).await;
    let settings = Arc::new(settings);
    let lanes = settings.concurrency.max(1);
    // Free services come back through this channel; the others are built on first need.
    let (free_tx, mut free_rx) = tokio::sync::mpsc::channel::<S>(lanes);
    let mut unbuilt = lanes - 1;
    let mut spare = Some(service);
    // Aborted with the dispatcher (when the actor ends), which aborts every send.
    let mut sends = tokio::task::JoinSet::new();
    loop {
        let mut service = match spare.take() {
            Some(s) => s,
            None => match free_rx.try_recv() {
                Ok(s) => s,
                Err(_) if unbuilt > 0 => {
                    unbuilt -= 1;
                    match make() {
                        Ok(s) => s,
                        Err(e) => {
                            handle.stats.record_error(format!("building a client for a concurrent send: {e}"));
                            continue;
                        }
                    }
                }
                Err(_) => match free_rx.recv().await {
                    Some(s) => s,
                    None => return,
                },
            },
        };
        while sends.try_join_next().is_some() {}
        // Wait for work, then let a batch fill up for at most `linger`.
        let full = |h: &SinkHandle| h.queue_len() >= settings.batch_size || h.newest_is_awaited();
        wait_until(&handle, &notify, |h| h.queue_len() > 0, None).await;
        // Not when the producer waits for what it queued (a consumer's fetched records):
        // nothing more comes until these are stored.
        if !settings.linger.is_zero() && !full(&handle) {
            let deadline = tokio::time::Instant::now() + settings.linger;
            wait_until(&handle, &notify, full, Some(deadline)).await;
        }
        // Taken and counted in flight in one step, so that shutdown never sees the sink
        // drained while it holds a batch.
        let batch = handle.take_in_flight(settings.batch_size);
        if batch.is_empty() {
            spare = Some(service);
            continue;
        }
        if handle.queue_len() > 0 {
            // More waits: another free lane may take it.
            notify.notify_one();
        }
        let seq = {
            let mut l = lock(&ledger);
            let seq = l.next;
            l.next += 1;
            l.batches.insert(seq, (batch.clone(), None));
            seq
        };
        let (make, handle, settings, ledger, free_tx) =
            (make.clone(), handle.clone(), settings.clone(), ledger.clone(), free_tx.clone());
        sends.spawn(async move {
            let failed = deliver(&mut service, make.as_ref(), &handle, &settings, &batch).await;
            {
                let mut l = lock(&ledger);
                if let Some(entry) = l.batches.get_mut(&seq) {
                    entry.1 = Some(failed);
                }
                l.settle_front(&handle);
            }
            let _ = free_tx.send(service).await;
        });
    }
}

/// Wait until `ready` holds (or `deadline` passes). Offers wake the sink only while it
/// waits here: the actor's `Pump` no longer re-enables wake-ups (`woken`), this does, just
/// before waiting. So a producer that offers thousands of entries while a batch is out
/// sends the sink one message, not one per offer (each a cross-thread wake-up, a system
/// call when the sink's thread sleeps). An offer that came before `woken` did not wake
/// the sink; `ready` is read again after it, and the notification a later offer sends is
/// kept by `notify` until waited for.
async fn wait_until(
    handle: &SinkHandle,
    notify: &Notify,
    ready: impl Fn(&SinkHandle) -> bool,
    deadline: Option<tokio::time::Instant>,
) {
    while !ready(handle) {
        handle.woken();
        if ready(handle) {
            return;
        }
        match deadline {
            None => notify.notified().await,
            Some(d) => {
                if tokio::time::timeout_at(d, notify.notified()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Send one batch until the broker took it (or rejected it), retrying with backoff: which
/// entries failed.
async fn deliver<S: BatchService>(
    service: &mut S,
    make: &(dyn Fn() -> Result<S, String> + Send + Sync),
    handle: &SinkHandle,
    settings: &BatchSettings,
    batch: &[Arc<Envelope>],
) -> Vec<bool> {
    let stats = &handle.stats;
    let mut delay = settings.retry_min;
    loop {
        if handle.faults.take_drop() {
            reconnect(service, make, handle, settings).await;
        }
        match send_once(service, handle, settings, batch).await {
            Ok(outcome) => {
                stats.set_connected(true);
                let mut failed = vec![false; batch.len()];
                for (i, reason) in &outcome.failed {
                    if let Some(f) = failed.get_mut(*i) {
                        *f = true;
                    }
                    tracing::warn!(sink = %handle.name, id = %batch.get(*i).map(|e| &*e.obs.sensor_id).unwrap_or("?"), %reason, "entry refused");
                    stats.record_error(format!("entry refused: {reason}"));
                }
                return failed;
            }
            Err(SendError::Rejected(msg)) => {
                stats.set_connected(true);
                tracing::error!(sink = %handle.name, entries = batch.len(), error = %msg, "batch rejected, not retried");
                stats.record_error(msg);
                return vec![true; batch.len()];
            }
            Err(SendError::Retriable(msg)) => {
                if stats.connected.load(std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(sink = %handle.name, error = %msg, "send failed, retrying with backoff");
                }
                stats.set_connected(false);
                stats.record_error(msg);
                tokio::time::sleep(jitter(delay)).await;
                delay = (delay * 2).min(settings.retry_max);
                stats.retries.inc_by(batch.len() as u64);
            }
        }
    }
}

fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.8 + rand::random::<f64>() * 0.4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::sinks::queue::tests::{env, sink_entry, until};

    /// A broker whose first answer waits until the test opens the gate.
    struct Gated {
        gate: Arc<tokio::sync::Semaphore>,
    }

    impl BatchService for Gated {
        async fn healthcheck(&mut self) -> Result<(), SendError> {
            Ok(())
        }

        async fn send(&mut self, _batch: &[Arc<Envelope>]) -> Result<BatchOutcome, SendError> {
            let permit = self.gate.acquire().await.map_err(|e| SendError::Retriable(e.to_string()))?;
            permit.forget();
            self.gate.add_permits(1);
            Ok(BatchOutcome::default())
        }
    }

    /// Offers made while the only lane is busy wake the sink once, not once each: the
    /// dispatcher re-enables wake-ups only when it waits for entries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn offers_while_a_batch_is_out_wake_the_sink_once() {
        let m = Metrics::new();
        let handle = SinkHandle::new("gated", "test", "x".into(), 10_000, &m);
        let entry = sink_entry("gated");
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = gate.clone();
        let settings = BatchSettings {
            batch_size: 10_000,
            linger: Duration::ZERO,
            request_timeout: Duration::from_secs(30),
            retry_min: Duration::from_millis(10),
            retry_max: Duration::from_millis(100),
            concurrency: 1,
        };
        let args = BatchSinkArgs {
            handle: handle.clone(),
            settings,
            entry,
            make: Arc::new(move || Ok(Gated { gate: g.clone() })),
        };
        let (actor, task) = Actor::spawn(None, BatchSink::<Gated>::default(), args).await.expect("spawn");
        until("the sink to be connected", || handle.stats.connected.load(std::sync::atomic::Ordering::Relaxed)).await;
        handle.offer(env(1));
        until("the first batch to be out", || handle.in_flight() == 1).await;
        let pumps = handle.mailbox.handled_total();
        for s in 2..=500 {
            handle.offer(env(s));
            // The actor handles whatever the offer sent before the next one comes.
            until("the actor to handle what was sent", || handle.mailbox.depth() == 0).await;
        }
        let during = handle.mailbox.handled_total() - pumps;
        assert!(during <= 1, "499 offers while the batch was out woke the sink {during} times");
        gate.add_permits(1);
        until("every entry to be delivered", || handle.stats.sent.get() == 500).await;
        assert_eq!(handle.queue_len(), 0);
        actor.stop(None);
        let _ = task.await;
    }

    #[test]
    fn statuses_are_classified_in_one_place() {
        assert!(matches!(classify_status(500, "boom"), SendError::Retriable(_)));
        assert!(matches!(classify_status(503, ""), SendError::Retriable(_)));
        assert!(matches!(classify_status(429, ""), SendError::Retriable(_)));
        assert_eq!(classify_status(400, " bad line "), SendError::Rejected("HTTP 400: bad line".into()));
        assert!(matches!(classify_status(404, ""), SendError::Rejected(_)));
        let long = "é".repeat(600);
        assert_eq!(classify_status(400, &long), SendError::Rejected(format!("HTTP 400: {}", "é".repeat(500))));
    }
}
