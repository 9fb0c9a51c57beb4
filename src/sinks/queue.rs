//! What every sink shares, whatever its broker: the bounded queue in front of it, its
//! delivery counters, and the handle through which sensors offer observations.
//!
//! The queue and counters live in a [`SinkHandle`] that outlives the sink actor: when the
//! supervisor restarts a sink, the new actor finds the queue as the old one left it.
//! Sensors never wait on a sink beyond a bound: [`SinkHandle::offer`] takes a short lock,
//! applies the sink's [`Overflow`] policy when the queue is full (drop the oldest, drop the
//! newest; both counted as dropped and lost), and wakes the actor only if it is not already
//! awake. With `block`, [`SinkHandle::offer_wait`] first waits up to `block_timeout` for room.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use prometheus::{Histogram, IntCounter};
use ractor::ActorRef;
use serde::Serialize;
use twins::Observation;

use dashmap::DashMap;

use super::delivery::{Delivered, SeqTrack};
use super::spill::Spill;
use super::SinkMsg;
use crate::actors::Mailbox;
use crate::faults::FaultGate;
use crate::metrics::Metrics;

/// What a full queue does with one more observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop the oldest queued entry to make room (the default).
    #[default]
    DropOldest,
    /// Refuse the new entry.
    DropNewest,
    /// Make the offering sensor wait up to `timeout` for room, then refuse the new entry;
    /// until the sink takes from its queue again, later offers are refused without waiting
    /// (a dead broker holds each sensor back at most once).
    Block { timeout: std::time::Duration },
}

impl Overflow {
    pub fn name(self) -> &'static str {
        match self {
            Overflow::DropOldest => "drop_oldest",
            Overflow::DropNewest => "drop_newest",
            Overflow::Block { .. } => "block",
        }
    }
}

/// An observation on its way to the sinks, shared by all of them.
#[derive(Debug)]
pub struct Envelope {
    pub obs: Observation,
    /// When the sensor emitted it (for emit-to-delivery latency).
    pub emitted: Instant,
    /// Who waits to know what became of it (e.g. a consumer committing offsets only once
    /// its records are stored); sensors' observations have none.
    pub ack: Option<Arc<AckGroup>>,
}

impl Envelope {
    /// A sensor's observation, in a recycled envelope when there is one ([`super::pool`]).
    pub fn new(obs: Observation) -> Arc<Envelope> {
        Envelope::emitted_at(obs, Instant::now())
    }

    /// [`new`](Self::new), emitted at an instant the sensor already read.
    pub fn emitted_at(obs: Observation, emitted: Instant) -> Arc<Envelope> {
        super::pool::make(Envelope { obs, emitted, ack: None })
    }

    /// An envelope whose fate is reported to `ack`.
    pub fn with_ack(obs: Observation, ack: Arc<AckGroup>) -> Arc<Envelope> {
        Arc::new(Envelope { obs, emitted: Instant::now(), ack: Some(ack) })
    }

    /// The sink is done with it: delivered (`true`), or refused or dropped (`false`).
    pub fn settle(&self, delivered: bool) {
        if let Some(a) = &self.ack {
            a.settle(delivered);
        }
    }
}

/// Tracks a group of envelopes (one per observation offered to one sink) until each was
/// delivered, refused or dropped.
#[derive(Debug)]
pub struct AckGroup {
    pending: std::sync::atomic::AtomicUsize,
    failed: std::sync::atomic::AtomicUsize,
    done: tokio::sync::Notify,
}

impl AckGroup {
    pub fn new(count: usize) -> Arc<AckGroup> {
        Arc::new(AckGroup {
            pending: std::sync::atomic::AtomicUsize::new(count),
            failed: std::sync::atomic::AtomicUsize::new(0),
            done: tokio::sync::Notify::new(),
        })
    }

    fn settle(&self, delivered: bool) {
        if !delivered {
            self.failed.fetch_add(1, Ordering::AcqRel);
        }
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_waiters();
        }
    }

    /// Wait until every envelope is settled; returns how many were not delivered.
    pub async fn wait(&self) -> usize {
        loop {
            let notified = self.done.notified();
            if self.pending.load(Ordering::Acquire) == 0 {
                return self.failed.load(Ordering::Acquire);
            }
            notified.await;
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
}

/// Delivery counters of one sink. The counters are the Prometheus series themselves, so
/// the metrics endpoint and the inspection API can never disagree.
pub struct SinkStats {
    pub sent: IntCounter,
    pub failed: IntCounter,
    pub dropped: IntCounter,
    pub retries: IntCounter,
    /// Observations that left a sensor and never reached the sink (gaps and drops).
    pub lost: IntCounter,
    /// Observations the sink delivered more than once.
    pub duplicates: IntCounter,
    /// Missing observations that arrived after a later one.
    late: AtomicU64,
    pub latency: Histogram,
    pub connected: AtomicBool,
    pub ever_connected: AtomicBool,
    connected_gauge: prometheus::IntGauge,
    last_success_ms: AtomicU64,
    last_error: Mutex<Option<(String, u64)>>,
    /// Per sensor: highest sequence number delivered, gaps and duplicates. Keyed by the
    /// observation's own id (for a sensor's, the allocation its twin shares): comparing a
    /// key reads the line the hash just read, not a copy elsewhere.
    delivered_seq: DashMap<Arc<str>, SeqTrack, rustc_hash::FxBuildHasher>,
    /// Sensors with anything lost or duplicated (for the worst-sensors view).
    troubled: DashMap<Arc<str>, (), rustc_hash::FxBuildHasher>,
    /// Sequences start at 1 here (false for sinks only a consumer writes to).
    from_one: AtomicBool,
    /// Samples of the counters, for the 1 min / 1 h windows.
    samples: Mutex<VecDeque<Sample>>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    sent: u64,
    failed: u64,
    dropped: u64,
    retries: u64,
}

/// Counts over a recent window (like Ditto's connection metrics).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct WindowCounts {
    pub sent: u64,
    pub failed: u64,
    pub dropped: u64,
    pub retries: u64,
}

/// The time of a delivery, read once for several ([`SinkStats::delivered_at`]).
#[derive(Debug, Clone, Copy)]
pub struct DeliveryClock {
    /// For latencies (since `Envelope::emitted`).
    pub at: Instant,
    /// Wall-clock milliseconds since the Unix epoch (the last success).
    pub ms: u64,
}

impl DeliveryClock {
    pub fn now() -> DeliveryClock {
        let at = Instant::now();
        DeliveryClock { at, ms: crate::actors::wall_ms(at) }
    }
}

/// How soon a busy sink pumps again by itself ([`SinkHandle::pumped`]).
pub const BUSY_PUMP: std::time::Duration = std::time::Duration::from_millis(1);

/// How long samples are kept (a little over the longest window).
const SAMPLE_HORIZON: std::time::Duration = std::time::Duration::from_secs(3700);

impl SinkStats {
    fn new(name: &str, metrics: &Metrics) -> SinkStats {
        SinkStats {
            sent: metrics.messages_sent.with_label_values(&[name]),
            failed: metrics.messages_failed.with_label_values(&[name]),
            dropped: metrics.messages_dropped.with_label_values(&[name]),
            retries: metrics.messages_retried.with_label_values(&[name]),
            lost: metrics.sink_lost.with_label_values(&[name]),
            duplicates: metrics.sink_duplicates.with_label_values(&[name]),
            late: AtomicU64::new(0),
            latency: metrics.publish_latency.with_label_values(&[name]),
            connected: AtomicBool::new(false),
            ever_connected: AtomicBool::new(false),
            connected_gauge: metrics.sink_connected.with_label_values(&[name]),
            last_success_ms: AtomicU64::new(0),
            last_error: Mutex::new(None),
            delivered_seq: DashMap::default(),
            troubled: DashMap::default(),
            from_one: AtomicBool::new(true),
            samples: Mutex::new(VecDeque::new()),
        }
    }

    /// Remember a sensor with something lost or duplicated (allocating only the first time).
    fn trouble(&self, id: &Arc<str>) {
        if !self.troubled.contains_key(id) {
            self.troubled.insert(id.clone(), ());
        }
    }

    /// One message delivered (acknowledged by the broker where the protocol has acks).
    pub fn delivered(&self, env: &Envelope) {
        self.delivered_at(env, &DeliveryClock::now());
    }

    /// [`delivered`](Self::delivered) at a time the caller read once for several
    /// deliveries (a sink delivering thousands per millisecond need not read the clocks for
    /// each).
    pub fn delivered_at(&self, env: &Envelope, clock: &DeliveryClock) {
        env.settle(true);
        self.sent.inc();
        self.latency.observe(clock.at.saturating_duration_since(env.emitted).as_secs_f64());
        self.last_success_ms.store(clock.ms, Ordering::Relaxed);
        let (seq, id): (u64, &Arc<str>) = (env.obs.seq, &env.obs.sensor_id);
        let from_one = self.from_one.load(Ordering::Relaxed);
        let outcome = match self.delivered_seq.get_mut(&**id) {
            Some(mut t) => t.deliver(seq, from_one),
            None => {
                let mut t = SeqTrack::default();
                let o = t.deliver(seq, from_one);
                self.delivered_seq.insert(id.clone(), t);
                o
            }
        };
        match outcome {
            Delivered::New { newly_lost: 0 } => {}
            Delivered::New { newly_lost } => {
                self.lost.inc_by(newly_lost);
                self.trouble(id);
            }
            Delivered::Duplicate => {
                self.duplicates.inc();
                self.trouble(id);
            }
            Delivered::Late => {
                self.late.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// An entry dropped by the overflow policy: counted dropped and, unless a copy of it
    /// was delivered, lost.
    pub fn dropped_one(&self, env: &Envelope) {
        self.dropped.inc();
        env.settle(false);
        let (seq, id): (u64, &Arc<str>) = (env.obs.seq, &env.obs.sensor_id);
        let newly_lost = match self.delivered_seq.get_mut(&**id) {
            Some(mut t) => t.drop_seq(seq),
            None => {
                let mut t = SeqTrack::default();
                let lost = t.drop_seq(seq);
                self.delivered_seq.insert(id.clone(), t);
                lost
            }
        };
        if newly_lost {
            self.lost.inc();
            self.trouble(id);
        }
    }

    /// The highest sequence number of a sensor this sink delivered.
    pub fn delivered_seq(&self, sensor: &str) -> Option<u64> {
        self.delivered_seq.get(sensor).map(|t| t.highest).filter(|h| *h > 0)
    }

    /// A sensor's accounting at this sink.
    pub fn track(&self, sensor: &str) -> Option<SeqTrack> {
        self.delivered_seq.get(sensor).map(|t| t.clone())
    }

    /// Missing observations that arrived after a later one.
    pub fn late(&self) -> u64 {
        self.late.load(Ordering::Relaxed)
    }

    /// The `n` sensors with the most lost and duplicated observations, worst first.
    pub fn worst(&self, n: usize) -> Vec<SensorDelivery> {
        let mut all: Vec<SensorDelivery> = self
            .troubled
            .iter()
            .filter_map(|e| {
                let t = self.delivered_seq.get(e.key())?;
                Some(SensorDelivery {
                    sensor: e.key().to_string(),
                    delivered_seq: t.highest,
                    lost: t.lost,
                    duplicates: t.duplicates,
                })
            })
            .collect();
        all.sort_by(|a, b| (b.lost + b.duplicates).cmp(&(a.lost + a.duplicates)).then_with(|| a.sensor.cmp(&b.sensor)));
        all.truncate(n);
        all
    }

    fn counts(&self) -> Sample {
        Sample {
            at: Instant::now(),
            sent: self.sent.get(),
            failed: self.failed.get(),
            dropped: self.dropped.get(),
            retries: self.retries.get(),
        }
    }

    /// Record the counters now (called every few seconds by the runtime).
    pub fn sample(&self) {
        let now = self.counts();
        if let Ok(mut q) = self.samples.lock() {
            q.push_back(now);
            while q.front().is_some_and(|s| now.at.duration_since(s.at) > SAMPLE_HORIZON) {
                q.pop_front();
            }
        }
    }

    /// What happened over the last `window` (or since the oldest sample, if younger).
    pub fn window(&self, window: std::time::Duration) -> WindowCounts {
        let now = self.counts();
        let base =
            self.samples.lock().ok().and_then(|q| q.iter().find(|s| now.at.duration_since(s.at) <= window).copied());
        let base = base.unwrap_or(Sample { at: now.at, sent: 0, failed: 0, dropped: 0, retries: 0 });
        WindowCounts {
            sent: now.sent.saturating_sub(base.sent),
            failed: now.failed.saturating_sub(base.failed),
            dropped: now.dropped.saturating_sub(base.dropped),
            retries: now.retries.saturating_sub(base.retries),
        }
    }

    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        self.connected_gauge.set(i64::from(up));
        if up {
            self.ever_connected.store(true, Ordering::Relaxed);
        }
    }

    pub fn record_error(&self, err: impl Into<String>) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some((err.into(), crate::actors::now_ms()));
        }
    }

    pub fn last_error(&self) -> Option<(String, u64)> {
        self.last_error.lock().ok().and_then(|g| g.clone())
    }

    pub fn last_success_ms(&self) -> Option<u64> {
        match self.last_success_ms.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }
}

/// One sensor's delivery at one sink (the worst ones are shown in the sink's snapshot).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SensorDelivery {
    pub sensor: String,
    pub delivered_seq: u64,
    pub lost: u64,
    pub duplicates: u64,
}

/// How many sensors a snapshot lists under `worst_sensors`.
pub const WORST_SENSORS: usize = 10;

/// A point-in-time view of a sink, for the inspection API and tests.
#[derive(Debug, Clone, Serialize)]
pub struct SinkSnapshot {
    pub name: String,
    pub kind: &'static str,
    pub target: String,
    pub connected: bool,
    pub ever_connected: bool,
    pub queue_len: usize,
    pub queue_capacity: usize,
    pub in_flight: usize,
    pub sent: u64,
    pub failed: u64,
    pub dropped: u64,
    pub retries: u64,
    /// Observations that left a sensor and never reached this sink (gaps in the delivered
    /// sequences, including what was dropped).
    pub lost: u64,
    pub duplicates: u64,
    /// Missing observations that arrived after a later one (not expected: queues keep order).
    pub late: u64,
    /// The sensors with the most lost and duplicated observations.
    pub worst_sensors: Vec<SensorDelivery>,
    /// `drop_oldest`, `drop_newest` or `block`.
    pub overflow: &'static str,
    pub block_timeout_ms: Option<u64>,
    /// Faults injected into this sink now (ids).
    pub active_faults: Vec<u64>,
    /// The disk spill, when the sink has one (`spill_dir`).
    pub spill: Option<SpillSnapshot>,
    pub last_error: Option<String>,
    pub last_error_at_unix_ms: Option<u64>,
    pub last_success_at_unix_ms: Option<u64>,
    pub last_minute: WindowCounts,
    pub last_hour: WindowCounts,
}

/// A sink's disk spill, for the inspection API.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SpillSnapshot {
    pub dir: String,
    /// Observations on disk, waiting for the queue.
    pub records: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    /// Observations written to the spill since start.
    pub spilled_total: u64,
    /// Records skipped as corrupt (a torn write after a crash).
    pub corrupt: u64,
}

/// The bounded queue of one sink, plus what it has handed to its client and not yet
/// seen delivered (`in_flight`), so a restarted sink can take those back.
pub struct SinkHandle {
    pub name: String,
    pub kind: &'static str,
    /// Where it delivers (URL), for display.
    pub target: String,
    capacity: usize,
    queue: Mutex<VecDeque<Arc<Envelope>>>,
    /// The overflow policy: 0 drop_oldest, 1 drop_newest, 2 block (`block_ms`).
    overflow: AtomicU8,
    block_ms: AtomicU64,
    /// Offers waiting for room (`block`), and the signal that room was made.
    waiting: AtomicUsize,
    room: tokio::sync::Notify,
    /// A blocked offer timed out and the sink has not taken anything since.
    stuck: AtomicBool,
    /// Faults injected into this sink, consulted before each send.
    pub faults: FaultGate,
    /// The disk spill, if configured: what overflows the queue goes there (and, once it
    /// holds anything, every new offer too, to keep the order); taking from the queue
    /// refills it from the spill. Locked after `queue`, never before.
    spill: Mutex<Option<Spill>>,
    /// The spill holds records (fast check on the hot paths).
    spilling: AtomicBool,
    spilled_total: AtomicU64,
    in_flight: AtomicU64,
    wake_pending: AtomicBool,
    /// Whether sensors offer their observations here (false: only a consumer writes here).
    sensors: AtomicBool,
    actor: RwLock<Option<ActorRef<SinkMsg>>>,
    pub stats: SinkStats,
    /// The sink actor's mailbox counters (every sender counts here).
    pub mailbox: Arc<Mailbox>,
    queue_gauge: prometheus::IntGauge,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a VecDeque half-updated in a way that
    // matters here; keep serving rather than poisoning every sensor.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SinkHandle {
    pub fn new(name: &str, kind: &'static str, target: String, capacity: usize, metrics: &Metrics) -> Arc<SinkHandle> {
        Arc::new(SinkHandle {
            name: name.to_string(),
            kind,
            target,
            capacity: capacity.max(1),
            queue: Mutex::new(VecDeque::new()),
            overflow: AtomicU8::new(0),
            block_ms: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            room: tokio::sync::Notify::new(),
            stuck: AtomicBool::new(false),
            faults: FaultGate::default(),
            spill: Mutex::new(None),
            spilling: AtomicBool::new(false),
            spilled_total: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            wake_pending: AtomicBool::new(false),
            sensors: AtomicBool::new(true),
            actor: RwLock::new(None),
            stats: SinkStats::new(name, metrics),
            mailbox: Arc::default(),
            queue_gauge: metrics.sink_queue_length.with_label_values(&[name]),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Keep sensors' observations out of this sink (`consumer_only`): only what is offered
    /// to it directly (e.g. by a consumer) goes through it.
    pub fn set_offer_to_sensors(&self, yes: bool) {
        self.sensors.store(yes, Ordering::Relaxed);
        // What a consumer writes may start anywhere in a sensor's sequence.
        self.stats.from_one.store(yes, Ordering::Relaxed);
    }

    /// Set the overflow policy (at start, before anything is offered).
    pub fn set_overflow(&self, policy: Overflow) {
        let (code, ms) = match policy {
            Overflow::DropOldest => (0, 0),
            Overflow::DropNewest => (1, 0),
            Overflow::Block { timeout } => (2, timeout.as_millis() as u64),
        };
        self.block_ms.store(ms, Ordering::Relaxed);
        self.overflow.store(code, Ordering::Relaxed);
    }

    pub fn overflow(&self) -> Overflow {
        match self.overflow.load(Ordering::Relaxed) {
            0 => Overflow::DropOldest,
            1 => Overflow::DropNewest,
            _ => Overflow::Block { timeout: std::time::Duration::from_millis(self.block_ms.load(Ordering::Relaxed)) },
        }
    }

    /// Give this sink a disk spill (at start, before anything is offered). What a previous
    /// run left in it is sent first.
    pub fn set_spill(&self, spill: Spill) {
        self.spilling.store(!spill.is_empty(), Ordering::Release);
        *lock(&self.spill) = Some(spill);
        if self.spilling.load(Ordering::Acquire) {
            let mut q = lock(&self.queue);
            self.refill(&mut q);
        }
    }

    /// Append to the spill (with the queue locked): `Ok` if it took the observation.
    fn spill_one(&self, env: &Envelope) -> Result<(), ()> {
        let mut sp = lock(&self.spill);
        let Some(spill) = sp.as_mut() else { return Err(()) };
        match spill.append(&[&env.obs]) {
            Ok(()) => {
                self.spilling.store(true, Ordering::Release);
                self.spilled_total.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                drop(sp);
                self.stats.record_error(e.to_string());
                Err(())
            }
        }
    }

    /// Move the oldest spilled observations into the queue while it is below half its
    /// capacity (with the queue locked).
    fn refill(&self, q: &mut VecDeque<Arc<Envelope>>) {
        if !self.spilling.load(Ordering::Acquire) || q.len() >= self.capacity / 2 {
            return;
        }
        let mut sp = lock(&self.spill);
        let Some(spill) = sp.as_mut() else { return };
        match spill.take(self.capacity - q.len()) {
            Ok(obs) => q.extend(obs.into_iter().map(Envelope::new)),
            Err(e) => {
                tracing::error!(sink = %self.name, error = %e, "reading the spill failed");
                self.stats.record_error(e.to_string());
            }
        }
        self.spilling.store(!spill.is_empty(), Ordering::Release);
        self.queue_gauge.set(q.len() as i64);
    }

    /// Flush the spill's buffered appends to the file system (called every few seconds).
    pub fn flush_spill(&self) {
        if let Some(spill) = lock(&self.spill).as_mut() {
            if let Err(e) = spill.flush() {
                self.stats.record_error(e.to_string());
            }
        }
    }

    /// At shutdown: write what the queue still holds to the front of the spill, so the next
    /// run sends it first. Returns how many observations were kept that way.
    pub fn spill_remaining(&self) -> usize {
        let mut q = lock(&self.queue);
        let mut sp = lock(&self.spill);
        let Some(spill) = sp.as_mut() else { return 0 };
        let held: Vec<Arc<Envelope>> = q.drain(..).collect();
        let obs: Vec<&Observation> = held.iter().map(|e| &e.obs).collect();
        let kept = match spill.prepend(&obs).and_then(|()| spill.flush()) {
            Ok(()) => obs.len(),
            Err(e) => {
                tracing::error!(sink = %self.name, error = %e, "could not spill the queue at shutdown");
                q.extend(held);
                0
            }
        };
        self.queue_gauge.set(q.len() as i64);
        kept
    }

    /// The spill's state, if configured.
    pub fn spill_snapshot(&self) -> Option<SpillSnapshot> {
        lock(&self.spill).as_ref().map(|s| SpillSnapshot {
            dir: s.dir().display().to_string(),
            records: s.len(),
            bytes: s.bytes(),
            max_bytes: s.max_bytes(),
            spilled_total: self.spilled_total.load(Ordering::Relaxed),
            corrupt: s.corrupt,
        })
    }

    /// Do sensors offer their observations to this sink ([`super::SinkSet::offer`])?
    pub fn offers_to_sensors(&self) -> bool {
        self.sensors.load(Ordering::Relaxed)
    }

    /// Offer an observation. Never blocks beyond a short lock. On overflow, `drop_oldest`
    /// drops the oldest queued entry; `drop_newest` and `block` (which cannot wait here: see
    /// [`offer_wait`](Self::offer_wait)) refuse this one. What is dropped is counted dropped
    /// and lost. Returns false when something was dropped.
    pub fn offer(&self, env: Arc<Envelope>) -> bool {
        let dropped = {
            let mut q = lock(&self.queue);
            let dropped = self.offer_locked(&mut q, env);
            self.queue_gauge.set(q.len() as i64);
            dropped
        };
        let kept = match dropped {
            Some(env) => {
                self.stats.dropped_one(&env);
                false
            }
            None => true,
        };
        self.wake();
        kept
    }

    /// [`offer`](Self::offer) every observation of `envs`, in order, with one lock of the
    /// queue and one wake-up of the sink (a consumer hands over a fetched batch this way).
    /// Returns how many were dropped (this batch's or older ones, by the overflow policy).
    pub fn offer_all(&self, envs: impl IntoIterator<Item = Arc<Envelope>>) -> usize {
        let mut dropped = Vec::new();
        {
            let mut q = lock(&self.queue);
            for env in envs {
                dropped.extend(self.offer_locked(&mut q, env));
            }
            self.queue_gauge.set(q.len() as i64);
        }
        for env in &dropped {
            self.stats.dropped_one(env);
        }
        self.wake();
        dropped.len()
    }

    /// One offer with the queue locked: queue it, spill it, or apply the overflow policy;
    /// returns what the policy dropped (this one or the oldest), to be counted by the
    /// caller once the lock is released.
    fn offer_locked(&self, q: &mut VecDeque<Arc<Envelope>>, env: Arc<Envelope>) -> Option<Arc<Envelope>> {
        // With a spill, what does not fit (or arrives while the spill holds older ones)
        // goes to disk; envelopes someone waits on (a consumer's) never do: their broker
        // keeps them.
        let full = q.len() >= self.capacity || self.spilling.load(Ordering::Acquire);
        if full && env.ack.is_none() && self.spill_one(&env).is_ok() {
            return None;
        }
        if q.len() < self.capacity {
            q.push_back(env);
            None
        } else if self.overflow.load(Ordering::Relaxed) == 0 {
            let old = q.pop_front();
            q.push_back(env);
            old
        } else {
            Some(env)
        }
    }

    /// Whether offers to this sink may wait ([`Overflow::Block`]).
    pub fn blocks(&self) -> bool {
        self.overflow.load(Ordering::Relaxed) == 2
    }

    /// Offer an observation, waiting for room up to the `block` timeout if the policy says
    /// so (other policies: as [`offer`](Self::offer)). After a timeout the observation is
    /// dropped (counted dropped and lost), and until the sink takes from its queue again
    /// later offers are dropped without waiting.
    pub async fn offer_wait(&self, env: Arc<Envelope>) -> bool {
        let Overflow::Block { timeout } = self.overflow() else { return self.offer(env) };
        // A spill takes what does not fit: nothing to wait for.
        if lock(&self.spill).is_some() {
            return self.offer(env);
        }
        // Straight in, unless others already wait for room: then behind them (oldest first).
        let env = if self.waiting.load(Ordering::Acquire) == 0 {
            match self.try_push(env) {
                Ok(()) => return true,
                Err(env) => env,
            }
        } else {
            env
        };
        if self.stuck.load(Ordering::Acquire) {
            self.stats.dropped_one(&env);
            return false;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let mut env = env;
        let pushed = loop {
            // Room is handed out one waiter per place made ([`made_room`](Self::made_room)).
            let woken = tokio::time::timeout_at(deadline, self.room.notified()).await.is_ok();
            env = match self.try_push(env) {
                Ok(()) => break true,
                Err(e) => e,
            };
            if !woken {
                self.stuck.store(true, Ordering::Release);
                self.stats.dropped_one(&env);
                break false;
            }
        };
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        pushed
    }

    /// Push unless full.
    fn try_push(&self, env: Arc<Envelope>) -> Result<(), Arc<Envelope>> {
        {
            let mut q = lock(&self.queue);
            if q.len() >= self.capacity {
                return Err(env);
            }
            q.push_back(env);
            self.queue_gauge.set(q.len() as i64);
        }
        self.wake();
        Ok(())
    }

    /// Room was made in the queue for `n` entries: release as many waiting offers, oldest
    /// first (waking them all would let thousands of waiting sensors race for a few places,
    /// and some lose every race until their timeout).
    fn made_room(&self, n: usize) {
        if self.stuck.load(Ordering::Relaxed) {
            self.stuck.store(false, Ordering::Release);
        }
        let waiting = self.waiting.load(Ordering::Acquire);
        for _ in 0..n.min(waiting) {
            self.room.notify_one();
        }
    }

    /// Wake the sink actor unless a wake-up is already on its way.
    pub fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            let actor = self.actor.read().ok().and_then(|a| a.clone());
            match actor {
                Some(a) => {
                    self.mailbox.enqueue();
                    if a.cast(SinkMsg::Pump).is_err() {
                        self.mailbox.unenqueue();
                        self.wake_pending.store(false, Ordering::Release);
                    }
                }
                // No actor right now (restarting): the next one pumps at start.
                None => self.wake_pending.store(false, Ordering::Release),
            }
        }
    }

    /// Called by the actor when it starts pumping: later offers wake it again.
    pub fn woken(&self) {
        self.wake_pending.store(false, Ordering::Release);
    }

    /// Called by a sink that pumps with coalesced wake-ups at the end of each pump, which
    /// took `took` entries; `more` when it stopped with entries left for later. (Such a sink
    /// does not call [`woken`](Self::woken) when it starts.)
    ///
    /// Like a network card's interrupt moderation: while entries keep coming, the sink pumps
    /// again by itself, at once when `more`, else [`BUSY_PUMP`] later, and offers do not wake
    /// it: waking a sink is a message, and a cross-thread wake-up (a system call when the
    /// sink's thread sleeps) that a busy sink pays per offer otherwise. Once a pump finds
    /// nothing, offers wake it again, so an idle sink still takes an offer at once.
    pub fn pumped(&self, myself: &ActorRef<SinkMsg>, took: usize, more: bool) {
        if took > 0 {
            self.mailbox.enqueue();
            if more {
                if myself.cast(SinkMsg::Pump).is_err() {
                    self.mailbox.unenqueue();
                }
            } else {
                myself.send_after(BUSY_PUMP, || SinkMsg::Pump);
            }
            return;
        }
        self.woken();
        // An offer that came after the last take but saw the wake-up still pending did not
        // wake the sink: look again now that offers will.
        if !lock(&self.queue).is_empty() {
            self.wake();
        }
    }

    /// Take up to `max` entries from the front of the queue.
    pub fn take(&self, max: usize) -> Vec<Arc<Envelope>> {
        let mut q = lock(&self.queue);
        let n = max.min(q.len());
        let out: Vec<_> = q.drain(..n).collect();
        self.refill(&mut q);
        self.queue_gauge.set(q.len() as i64);
        drop(q);
        if n > 0 {
            self.made_room(n);
        }
        out
    }

    /// Take up to `max` entries from the front and count them in flight, in one step (so
    /// that [`is_drained`](Self::is_drained) never misses them); the taker gives the count
    /// back with [`release_in_flight`](Self::release_in_flight) once they are settled.
    pub fn take_in_flight(&self, max: usize) -> Vec<Arc<Envelope>> {
        let mut q = lock(&self.queue);
        self.refill(&mut q);
        let n = max.min(q.len());
        let out: Vec<_> = q.drain(..n).collect();
        self.in_flight.fetch_add(out.len() as u64, Ordering::Relaxed);
        self.refill(&mut q);
        self.queue_gauge.set(q.len() as i64);
        drop(q);
        if n > 0 {
            self.made_room(n);
        }
        out
    }

    /// Take one entry from the front, counting it in flight in the same step (the caller
    /// then sets the exact in-flight count).
    pub fn pop(&self) -> Option<Arc<Envelope>> {
        let mut q = lock(&self.queue);
        if q.is_empty() {
            self.refill(&mut q);
        }
        let e = q.pop_front();
        if e.is_some() {
            self.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        // Keep the queue fed from the spill, so that "nothing queued" means nothing waits.
        self.refill(&mut q);
        self.queue_gauge.set(q.len() as i64);
        drop(q);
        if e.is_some() {
            self.made_room(1);
        }
        e
    }

    /// Put entries back at the front (in their order), e.g. a send that did not go out or
    /// in-flight messages of a lost connection. Beyond capacity, `drop_oldest` drops from the
    /// front (the oldest), the other policies from the back (the newest).
    pub fn requeue_front(&self, items: Vec<Arc<Envelope>>) {
        if items.is_empty() {
            return;
        }
        let mut dropped = Vec::new();
        {
            let mut q = lock(&self.queue);
            for e in items.into_iter().rev() {
                q.push_front(e);
            }
            // With a spill, the newest beyond capacity go to the front of the spill (they
            // are older than what it holds); without, the policy drops.
            let mut sp = lock(&self.spill);
            if let Some(spill) = sp.as_mut() {
                let mut over = Vec::new();
                while q.len() > self.capacity {
                    over.extend(q.pop_back());
                }
                over.reverse();
                let obs: Vec<&Observation> = over.iter().filter(|e| e.ack.is_none()).map(|e| &e.obs).collect();
                match spill.prepend(&obs) {
                    Ok(()) => {
                        if !obs.is_empty() {
                            self.spilling.store(true, Ordering::Release);
                        }
                        dropped.extend(over.into_iter().filter(|e| e.ack.is_some()));
                    }
                    Err(e) => {
                        tracing::error!(sink = %self.name, error = %e, "spilling requeued observations failed");
                        dropped.extend(over);
                    }
                }
            }
            drop(sp);
            let oldest = self.overflow.load(Ordering::Relaxed) == 0;
            while q.len() > self.capacity {
                dropped.extend(if oldest { q.pop_front() } else { q.pop_back() });
            }
            self.queue_gauge.set(q.len() as i64);
        }
        for e in dropped {
            self.stats.dropped_one(&e);
        }
    }

    pub fn queue_len(&self) -> usize {
        lock(&self.queue).len()
    }

    /// What is queued now, front first (for inspection; nothing is taken).
    pub fn queued(&self) -> Vec<Arc<Envelope>> {
        lock(&self.queue).iter().cloned().collect()
    }

    /// Is someone waiting for the newest queued entry (an [`AckGroup`], e.g. a consumer
    /// that fetches again only once its batch is stored)? Then lingering for more to
    /// come only delays it.
    pub fn newest_is_awaited(&self) -> bool {
        lock(&self.queue).back().is_some_and(|e| e.ack.is_some())
    }

    /// `n` entries taken with [`take_in_flight`](Self::take_in_flight) are settled.
    pub fn release_in_flight(&self, n: usize) {
        let _ = self.in_flight.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(n as u64)));
    }

    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.store(n as u64, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed) as usize
    }

    /// Nothing queued, nothing spilled and nothing awaiting acknowledgement.
    pub fn is_drained(&self) -> bool {
        self.queue_len() == 0 && self.in_flight() == 0 && !self.spilling.load(Ordering::Acquire)
    }

    pub fn attach(&self, actor: Option<ActorRef<SinkMsg>>) {
        if let Ok(mut a) = self.actor.write() {
            *a = actor;
        }
        // A new actor's mailbox is empty: whatever wake-up was pending went to the old one.
        self.wake_pending.store(false, Ordering::Release);
    }

    /// Forget the actor, unless another one has attached since.
    pub fn detach(&self, id: ractor::ActorId) {
        if let Ok(mut a) = self.actor.write() {
            if a.as_ref().is_some_and(|r| r.get_id() == id) {
                *a = None;
            }
        }
    }

    pub fn actor(&self) -> Option<ActorRef<SinkMsg>> {
        self.actor.read().ok().and_then(|a| a.clone())
    }

    pub fn snapshot(&self) -> SinkSnapshot {
        let err = self.stats.last_error();
        SinkSnapshot {
            name: self.name.clone(),
            kind: self.kind,
            target: self.target.clone(),
            connected: self.stats.connected.load(Ordering::Relaxed),
            ever_connected: self.stats.ever_connected.load(Ordering::Relaxed),
            queue_len: self.queue_len(),
            queue_capacity: self.capacity,
            in_flight: self.in_flight(),
            sent: self.stats.sent.get(),
            failed: self.stats.failed.get(),
            dropped: self.stats.dropped.get(),
            retries: self.stats.retries.get(),
            lost: self.stats.lost.get(),
            duplicates: self.stats.duplicates.get(),
            late: self.stats.late(),
            worst_sensors: self.stats.worst(WORST_SENSORS),
            overflow: self.overflow().name(),
            block_timeout_ms: match self.overflow() {
                Overflow::Block { timeout } => Some(timeout.as_millis() as u64),
                _ => None,
            },
            active_faults: self.faults.active_ids(),
            spill: self.spill_snapshot(),
            last_error_at_unix_ms: err.as_ref().map(|e| e.1),
            last_error: err.map(|e| e.0),
            last_success_at_unix_ms: self.stats.last_success_ms(),
            last_minute: self.stats.window(std::time::Duration::from_secs(60)),
            last_hour: self.stats.window(std::time::Duration::from_secs(3600)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;
    use twins::{GeoPoint, SensorKind};

    /// Wait (10 s at most) until `cond` holds, or fail the test naming `what` (also for the
    /// other sinks' tests).
    pub(crate) async fn until(what: &str, cond: impl FnMut() -> bool) {
        crate::bench::wait_for(what, Duration::from_secs(10), cond).await.unwrap_or_else(|e| panic!("{e}"));
    }

    /// The directory entry of a sink actor named `name` under `root/sinks` (for the sinks'
    /// tests that spawn one).
    pub(crate) fn sink_entry(name: &str) -> Arc<crate::actors::ActorEntry> {
        Arc::new(crate::actors::ActorEntry::new(
            format!("root/sinks/{name}"),
            name.into(),
            crate::actors::ActorKind::Sink,
            None,
            None,
            None,
            Arc::new(Mailbox::default()).into(),
        ))
    }

    /// An observation of sensor `s` with sequence number `seq` (also for the other sinks' tests).
    pub(crate) fn env(seq: u64) -> Arc<Envelope> {
        Envelope::new(Observation {
            sensor_id: "s".into(),
            kind: SensorKind::Noise,
            seq,
            observed_at: chrono::Utc::now(),
            location: GeoPoint { lat: 14.6, lon: -61.0 },
            district: "Fort-de-France".into(),
            values: twins::Values::filled(50.0, SensorKind::Noise.quantities().len()),
        })
    }

    #[test]
    fn overflow_drops_oldest_and_counts() {
        let m = Metrics::new();
        let h = SinkHandle::new("t", "test", "x".into(), 3, &m);
        for s in 1..=5 {
            h.offer(env(s));
        }
        assert_eq!(h.queue_len(), 3);
        assert_eq!(h.stats.dropped.get(), 2);
        let seqs: Vec<u64> = h.take(10).iter().map(|e| e.obs.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
    }

    #[test]
    fn offering_all_at_once_is_offering_each_in_turn() {
        for overflow in [Overflow::DropOldest, Overflow::DropNewest] {
            let m = Metrics::new();
            let (one, all) =
                (SinkHandle::new("one", "test", "x".into(), 4, &m), SinkHandle::new("all", "test", "x".into(), 4, &m));
            one.set_overflow(overflow);
            all.set_overflow(overflow);
            one.offer(env(1));
            all.offer(env(1));
            let kept = (2..=7).filter(|s| one.offer(env(*s))).count();
            assert_eq!(all.offer_all((2..=7).map(env)), 6 - kept, "{overflow:?}");
            let seqs = |h: &SinkHandle| h.take(10).iter().map(|e| e.obs.seq).collect::<Vec<_>>();
            assert_eq!(seqs(&all), seqs(&one), "{overflow:?}");
            assert_eq!(all.stats.dropped.get(), one.stats.dropped.get());
            assert_eq!(all.stats.lost.get(), one.stats.lost.get());
        }
    }

    #[tokio::test]
    async fn an_ack_group_learns_what_was_delivered_and_what_was_dropped() {
        let m = Metrics::new();
        let h = SinkHandle::new("t", "test", "x".into(), 2, &m);
        let group = AckGroup::new(3);
        let envs: Vec<_> = (1..=3).map(|s| Envelope::with_ack(env(s).obs.clone(), group.clone())).collect();
        for e in &envs {
            h.offer(e.clone()); // the third offer drops the first
        }
        assert_eq!(group.pending(), 2);
        for e in h.take(10) {
            h.stats.delivered(&e);
        }
        assert_eq!(group.wait().await, 1, "one of three was dropped");
    }

    /// Many producers on a full `block` queue, each offering again as soon as its last
    /// offer went in (as sensors do): the places the sink makes go to the waiting offers
    /// oldest first, so none waits longer than its turn and nothing times out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocked_offers_get_room_in_turn_and_none_times_out() {
        let m = Metrics::new();
        let h = SinkHandle::new("t", "test", "x".into(), 4, &m);
        h.set_overflow(Overflow::Block { timeout: Duration::from_millis(800) });
        let producers: Vec<_> = (0..64u64)
            .map(|p| {
                let h = h.clone();
                tokio::spawn(async move {
                    for s in 0..25 {
                        assert!(h.offer_wait(env(p * 100 + s)).await, "producer {p}: offer {s} timed out");
                    }
                })
            })
            .collect();
        // The sink: 4 places every 2 ms (64 waiting producers: ~32 ms for a turn).
        let mut taken = 0;
        while taken < 64 * 25 {
            tokio::time::sleep(Duration::from_millis(2)).await;
            taken += h.take(4).len();
        }
        for p in producers {
            p.await.expect("producer");
        }
        assert_eq!(h.stats.dropped.get(), 0);
    }

    #[test]
    fn requeue_keeps_order_and_bound() {
        let m = Metrics::new();
        let h = SinkHandle::new("t", "test", "x".into(), 4, &m);
        for s in 3..=5 {
            h.offer(env(s));
        }
        h.requeue_front(vec![env(1), env(2)]);
        assert_eq!(h.stats.dropped.get(), 1);
        let seqs: Vec<u64> = h.take(10).iter().map(|e| e.obs.seq).collect();
        assert_eq!(seqs, vec![2, 3, 4, 5]);
    }

    #[test]
    fn drop_newest_keeps_the_oldest_and_counts_lost() {
        let m = Metrics::new();
        let h = SinkHandle::new("t", "test", "x".into(), 3, &m);
        h.set_overflow(Overflow::DropNewest);
        for s in 1..=5 {
            h.offer(env(s));
        }
        assert_eq!((h.stats.dropped.get(), h.stats.lost.get()), (2, 2));
        let taken = h.take(10);
        assert_eq!(taken.iter().map(|e| e.obs.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        for e in &taken {
            h.stats.delivered(e);
        }
        h.stats.delivered(&env(6));
        assert_eq!(h.stats.lost.get(), 2, "the gap over 4 and 5 was already counted");
        h.stats.delivered(&env(6));
        assert_eq!(h.stats.duplicates.get(), 1);
        let snap = h.snapshot();
        assert_eq!((snap.lost, snap.duplicates, snap.overflow), (2, 1, "drop_newest"));
        assert_eq!(snap.worst_sensors[0].sensor, "s");
    }

    #[tokio::test]
    async fn block_waits_for_room_then_drops_once_and_not_again() {
        let m = Metrics::new();
        let h = SinkHandle::new("t", "test", "x".into(), 1, &m);
        h.set_overflow(Overflow::Block { timeout: std::time::Duration::from_millis(200) });
        assert!(h.offer_wait(env(1)).await);
        // Room is made while the second offer waits.
        let taker = {
            let h = h.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                h.take(1)
            })
        };
        let started = std::time::Instant::now();
        assert!(h.offer_wait(env(2)).await, "it waited for room");
        assert_eq!(taker.await.expect("taker")[0].obs.seq, 1);
        assert!(started.elapsed() < std::time::Duration::from_millis(200));
        // Nobody takes: the third waits the timeout, then is dropped.
        let started = std::time::Instant::now();
        assert!(!h.offer_wait(env(3)).await);
        assert!(started.elapsed() >= std::time::Duration::from_millis(200));
        // Still stuck: the fourth is dropped at once.
        let started = std::time::Instant::now();
        assert!(!h.offer_wait(env(4)).await);
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        assert_eq!((h.stats.dropped.get(), h.stats.lost.get()), (2, 2));
        // Once the sink takes again, offers wait again.
        assert_eq!(h.take(1)[0].obs.seq, 2);
        assert!(h.offer_wait(env(5)).await);
    }
}
