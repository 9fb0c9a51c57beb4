//! The fault gate every sink consults before each send: one place for the MQTT sink
//! (`src/sinks/mqtt.rs`) and the request/response driver (`src/sinks/batch.rs`).
//!
//! With no fault active, [`FaultGate::check`] is one atomic load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::Notify;

use super::FaultCore;

/// What a sink fault does to each send.
#[derive(Debug, Clone, Copy)]
pub enum GateAction {
    /// A fraction of sends fail as if the broker refused them (retried as usual).
    Fail { ratio: f64 },
    /// Each send waits first.
    Latency { delay: Duration },
    /// The connection stays down (reconnecting fails) while the fault lasts.
    HoldDown,
}

struct Entry {
    fault: Arc<FaultCore>,
    action: GateAction,
}

/// What the gate says of one send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Fail this send with this message (retriable).
    pub fail: Option<String>,
    /// Wait this long before sending.
    pub delay: Duration,
}

/// The faults of one sink.
#[derive(Default)]
pub struct FaultGate {
    /// Entries (fast path: zero means no fault).
    active: AtomicUsize,
    entries: Mutex<Vec<Entry>>,
    /// Asks the sink to drop its connection now.
    drop_now: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FaultGate {
    pub(crate) fn add(&self, fault: Arc<FaultCore>, action: GateAction) {
        let mut e = lock(&self.entries);
        e.push(Entry { fault, action });
        self.active.store(e.len(), Ordering::Release);
    }

    /// Forget the entries of ended faults.
    pub(crate) fn purge(&self) {
        let mut e = lock(&self.entries);
        e.retain(|x| !x.fault.is_ended());
        self.active.store(e.len(), Ordering::Release);
    }

    /// Decide about one send (None: no fault at all). Consumes a unit of counted faults.
    pub fn check(&self) -> Option<Verdict> {
        if self.active.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut entries = lock(&self.entries);
        let mut v = Verdict::default();
        for e in entries.iter().filter(|e| !e.fault.is_ended()) {
            match e.action {
                GateAction::Fail { ratio } => {
                    if v.fail.is_none() && (ratio >= 1.0 || rand::random::<f64>() < ratio) && e.fault.take_one() {
                        e.fault.effects.requests_failed.fetch_add(1, Ordering::Relaxed);
                        v.fail = Some(format!("fault {} injected: the send was refused", e.fault.id));
                    }
                }
                GateAction::Latency { delay } => {
                    if e.fault.take_one() {
                        e.fault.effects.latency_added_ms.fetch_add(delay.as_millis() as u64, Ordering::Relaxed);
                        v.delay += delay;
                    }
                }
                GateAction::HoldDown => {
                    if v.fail.is_none() {
                        e.fault.effects.requests_failed.fetch_add(1, Ordering::Relaxed);
                        v.fail = Some(format!("fault {} injected: the connection is down", e.fault.id));
                    }
                }
            }
        }
        entries.retain(|x| !x.fault.is_ended());
        self.active.store(entries.len(), Ordering::Release);
        Some(v)
    }

    /// While a `disconnect` fault with a duration lasts: why the sink may not connect.
    pub fn held_down(&self) -> Option<String> {
        if self.active.load(Ordering::Acquire) == 0 {
            return None;
        }
        lock(&self.entries)
            .iter()
            .find(|e| matches!(e.action, GateAction::HoldDown) && !e.fault.is_ended())
            .map(|e| format!("fault {} injected: the connection is held down", e.fault.id))
    }

    /// Ask the sink to drop its connection now.
    pub(crate) fn drop_connection(&self) {
        self.drop_now.notify_one();
    }

    /// Resolves when the sink is asked to drop its connection (MQTT: raced against the
    /// event loop).
    pub async fn dropped(&self) {
        self.drop_now.notified().await;
    }

    /// Was the sink asked to drop its connection (consumes the request)?
    pub fn take_drop(&self) -> bool {
        self.drop_now.notified().now_or_never().is_some()
    }

    /// The ids of the faults active on this sink.
    pub fn active_ids(&self) -> Vec<u64> {
        if self.active.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        let mut ids: Vec<u64> =
            lock(&self.entries).iter().filter(|e| !e.fault.is_ended()).map(|e| e.fault.id).collect();
        ids.dedup();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_failures_end_the_fault() {
        let g = FaultGate::default();
        assert_eq!(g.check(), None);
        let f = FaultCore::new(7, Some(2));
        g.add(f.clone(), GateAction::Fail { ratio: 1.0 });
        assert!(g.check().and_then(|v| v.fail).is_some());
        assert!(g.check().and_then(|v| v.fail).is_some());
        assert!(f.is_ended());
        assert_eq!(g.check(), None, "ended faults leave the gate");
        assert_eq!(f.effects.requests_failed.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn latency_adds_up_and_drops_are_taken_once() {
        let g = FaultGate::default();
        g.add(FaultCore::new(1, None), GateAction::Latency { delay: Duration::from_millis(30) });
        assert_eq!(g.check().map(|v| v.delay), Some(Duration::from_millis(30)));
        assert!(!g.take_drop());
        g.drop_connection();
        assert!(g.take_drop());
        assert!(!g.take_drop());
    }
}
