//! What every sink shares, whatever its broker: the bounded queue in front of it, its
//! delivery counters, and the handle through which sensors offer observations.
//!
//! The queue and counters live in a [`SinkHandle`] that outlives the sink actor: when the
//! supervisor restarts a sink, the new actor finds the queue as the old one left it.
//! Sensors never wait on a sink: [`SinkHandle::offer`] takes a short lock, drops the oldest
//! entry when the queue is full (counted), and wakes the actor only if it is not already
//! awake.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prometheus::{Histogram, IntCounter};
use ractor::ActorRef;
use serde::Serialize;
use twins::Observation;

use dashmap::DashMap;

use super::SinkMsg;
use crate::actors::Mailbox;
use crate::metrics::Metrics;

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
    pub fn new(obs: Observation) -> Arc<Envelope> {
        Arc::new(Envelope { obs, emitted: Instant::now(), ack: None })
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
    pub latency: Histogram,
    pub connected: AtomicBool,
    pub ever_connected: AtomicBool,
    connected_gauge: prometheus::IntGauge,
    last_success_ms: AtomicU64,
    last_error: Mutex<Option<(String, u64)>>,
    /// Highest sequence number delivered, per sensor.
    delivered_seq: DashMap<String, u64>,
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

/// How long samples are kept (a little over the longest window).
const SAMPLE_HORIZON: std::time::Duration = std::time::Duration::from_secs(3700);

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl SinkStats {
    fn new(name: &str, metrics: &Metrics) -> SinkStats {
        SinkStats {
            sent: metrics.messages_sent.with_label_values(&[name]),
            failed: metrics.messages_failed.with_label_values(&[name]),
            dropped: metrics.messages_dropped.with_label_values(&[name]),
            retries: metrics.messages_retried.with_label_values(&[name]),
            latency: metrics.publish_latency.with_label_values(&[name]),
            connected: AtomicBool::new(false),
            ever_connected: AtomicBool::new(false),
            connected_gauge: metrics.sink_connected.with_label_values(&[name]),
            last_success_ms: AtomicU64::new(0),
            last_error: Mutex::new(None),
            delivered_seq: DashMap::new(),
            samples: Mutex::new(VecDeque::new()),
        }
    }

    /// One message delivered (acknowledged by the broker where the protocol has acks).
    pub fn delivered(&self, env: &Envelope) {
        env.settle(true);
        self.sent.inc();
        self.latency.observe(env.emitted.elapsed().as_secs_f64());
        self.last_success_ms.store(now_ms(), Ordering::Relaxed);
        let seq = env.obs.seq;
        match self.delivered_seq.get_mut(env.obs.sensor_id.as_str()) {
            Some(mut s) => *s = (*s).max(seq),
            None => {
                self.delivered_seq.insert(env.obs.sensor_id.clone(), seq);
            }
        }
    }

    /// The highest sequence number of a sensor this sink delivered.
    pub fn delivered_seq(&self, sensor: &str) -> Option<u64> {
        self.delivered_seq.get(sensor).map(|s| *s)
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
            *g = Some((err.into(), now_ms()));
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
    pub last_error: Option<String>,
    pub last_error_at_unix_ms: Option<u64>,
    pub last_success_at_unix_ms: Option<u64>,
    pub last_minute: WindowCounts,
    pub last_hour: WindowCounts,
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
    }

    /// Do sensors offer their observations to this sink ([`super::SinkSet::offer`])?
    pub fn offers_to_sensors(&self) -> bool {
        self.sensors.load(Ordering::Relaxed)
    }

    /// Offer an observation. Never blocks beyond a short lock; on overflow the oldest
    /// queued entry is dropped and counted. Returns false when something was dropped.
    pub fn offer(&self, env: Arc<Envelope>) -> bool {
        let dropped = {
            let mut q = lock(&self.queue);
            let dropped = if q.len() >= self.capacity { q.pop_front() } else { None };
            q.push_back(env);
            self.queue_gauge.set(q.len() as i64);
            dropped
        };
        let dropped = match dropped {
            Some(old) => {
                self.stats.dropped.inc();
                old.settle(false);
                true
            }
            None => false,
        };
        self.wake();
        !dropped
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

    /// Take up to `max` entries from the front of the queue.
    pub fn take(&self, max: usize) -> Vec<Arc<Envelope>> {
        let mut q = lock(&self.queue);
        let n = max.min(q.len());
        let out: Vec<_> = q.drain(..n).collect();
        self.queue_gauge.set(q.len() as i64);
        out
    }

    /// Take up to `max` entries from the front and count them in flight, in one step (so
    /// that [`is_drained`](Self::is_drained) never misses them).
    pub fn take_in_flight(&self, max: usize) -> Vec<Arc<Envelope>> {
        let mut q = lock(&self.queue);
        let n = max.min(q.len());
        let out: Vec<_> = q.drain(..n).collect();
        self.in_flight.store(out.len() as u64, Ordering::Relaxed);
        self.queue_gauge.set(q.len() as i64);
        out
    }

    /// Take one entry from the front, counting it in flight in the same step (the caller
    /// then sets the exact in-flight count).
    pub fn pop(&self) -> Option<Arc<Envelope>> {
        let mut q = lock(&self.queue);
        let e = q.pop_front();
        if e.is_some() {
            self.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        self.queue_gauge.set(q.len() as i64);
        e
    }

    /// Put entries back at the front (in their order), e.g. a send that did not go out or
    /// in-flight messages of a lost connection. Beyond capacity the oldest are dropped.
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
            while q.len() > self.capacity {
                dropped.extend(q.pop_front());
            }
            self.queue_gauge.set(q.len() as i64);
        }
        if !dropped.is_empty() {
            self.stats.dropped.inc_by(dropped.len() as u64);
            for e in dropped {
                e.settle(false);
            }
        }
    }

    pub fn queue_len(&self) -> usize {
        lock(&self.queue).len()
    }

    /// Is someone waiting for the newest queued entry (an [`AckGroup`], e.g. a consumer
    /// that fetches again only once its batch is stored)? Then lingering for more to
    /// come only delays it.
    pub fn newest_is_awaited(&self) -> bool {
        lock(&self.queue).back().is_some_and(|e| e.ack.is_some())
    }

    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.store(n as u64, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed) as usize
    }

    /// Nothing queued and nothing awaiting acknowledgement.
    pub fn is_drained(&self) -> bool {
        self.queue_len() == 0 && self.in_flight() == 0
    }

    pub fn attach(&self, actor: Option<ActorRef<SinkMsg>>) {
        if let Ok(mut a) = self.actor.write() {
            *a = actor;
        }
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
            last_error_at_unix_ms: err.as_ref().map(|e| e.1),
            last_error: err.map(|e| e.0),
            last_success_at_unix_ms: self.stats.last_success_ms(),
            last_minute: self.stats.window(std::time::Duration::from_secs(60)),
            last_hour: self.stats.window(std::time::Duration::from_secs(3600)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twins::{GeoPoint, SensorKind};

    fn env(seq: u64) -> Arc<Envelope> {
        Envelope::new(Observation {
            sensor_id: "s".into(),
            kind: SensorKind::Noise,
            seq,
            observed_at: chrono::Utc::now(),
            location: GeoPoint { lat: 14.6, lon: -61.0 },
            district: "Fort-de-France".into(),
            values: vec![50.0; SensorKind::Noise.quantities().len()],
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
}
