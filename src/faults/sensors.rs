//! Faults of what sensors report (`out_of_range`, `silence`), consulted by the sensor actor
//! on each tick. With no fault active, a tick costs two atomic loads here.
//!
//! A silenced tick does not step the twin: the sequence does not advance (so subscribers
//! see no gap), and the sensor's schedule slides by one interval, which is remembered per
//! sensor ([`SensorFaults::slot_shift`]) so that observation times stay on the real clock
//! and a restarted actor resumes the same schedule.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::FaultCore;
use crate::sinks::Envelope;

/// What a tick does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickFault {
    None,
    /// Skip this observation (the twin is not stepped).
    Silence,
    /// Report this observation with its values outside their ranges.
    OutOfRange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SensorAction {
    Silence,
    OutOfRange,
}

struct Entry {
    fault: Arc<FaultCore>,
    action: SensorAction,
    /// Observations left for this sensor (None: until the fault ends).
    left: Option<AtomicU64>,
}

impl Entry {
    /// Take one observation; returns (taken, this sensor is done).
    fn take(&self) -> (bool, bool) {
        match &self.left {
            None => (true, false),
            Some(l) => match l.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)) {
                Ok(1) => (true, true),
                Ok(_) => (true, false),
                Err(_) => (false, true),
            },
        }
    }
}

/// The sensor faults of the runtime (shared by every sensor actor).
#[derive(Default)]
pub struct SensorFaults {
    /// Live (sensor, fault) entries: zero means nothing to look up.
    active: AtomicUsize,
    by_sensor: DashMap<String, Vec<Entry>>,
    /// Has any sensor ever been silenced (then `shift` is looked up)?
    shifted: AtomicBool,
    shift: DashMap<String, u64>,
}

impl SensorFaults {
    pub fn new() -> Arc<SensorFaults> {
        Arc::new(SensorFaults::default())
    }

    pub(crate) fn add(&self, ids: &[String], fault: &Arc<FaultCore>, action: SensorAction, count: Option<u64>) {
        for id in ids {
            let entry = Entry { fault: fault.clone(), action, left: count.map(AtomicU64::new) };
            self.by_sensor.entry(id.clone()).or_default().push(entry);
            self.active.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Forget the entries of a fault (it ended).
    pub(crate) fn remove(&self, ids: &[String], fault_id: u64) {
        for id in ids {
            let mut emptied = false;
            if let Some(mut list) = self.by_sensor.get_mut(id) {
                let before = list.len();
                list.retain(|e| e.fault.id != fault_id);
                self.active.fetch_sub(before - list.len(), Ordering::AcqRel);
                emptied = list.is_empty();
            }
            if emptied {
                self.by_sensor.remove_if(id, |_, l| l.is_empty());
            }
        }
    }

    /// What the next tick of sensor `id` does (called once per tick).
    pub fn on_tick(&self, id: &str) -> TickFault {
        if self.active.load(Ordering::Acquire) == 0 {
            return TickFault::None;
        }
        let Some(mut list) = self.by_sensor.get_mut(id) else { return TickFault::None };
        let mut result = TickFault::None;
        let mut done = Vec::new();
        for want in [SensorAction::Silence, SensorAction::OutOfRange] {
            for (i, e) in list.iter().enumerate().filter(|(_, e)| e.action == want) {
                if e.fault.is_ended() {
                    done.push(i);
                    continue;
                }
                if result != TickFault::None {
                    continue;
                }
                let (taken, finished) = e.take();
                if finished {
                    done.push(i);
                    if taken {
                        // This sensor had its count: one target fewer for the fault.
                        e.fault.take_one();
                    }
                }
                if taken {
                    let counter = match want {
                        SensorAction::Silence => &e.fault.effects.observations_suppressed,
                        SensorAction::OutOfRange => &e.fault.effects.observations_altered,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    result = match want {
                        SensorAction::Silence => TickFault::Silence,
                        SensorAction::OutOfRange => TickFault::OutOfRange,
                    };
                }
            }
        }
        if !done.is_empty() {
            done.sort_unstable();
            done.dedup();
            for i in done.into_iter().rev() {
                list.remove(i);
                self.active.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let emptied = list.is_empty();
        drop(list);
        if emptied {
            self.by_sensor.remove_if(id, |_, l| l.is_empty());
        }
        result
    }

    /// A silenced tick: the sensor's schedule slides by one interval.
    pub fn skipped(&self, id: &str) {
        *self.shift.entry(id.to_string()).or_insert(0) += 1;
        self.shifted.store(true, Ordering::Release);
    }

    /// How many intervals sensor `id` was silenced so far (its schedule's slide).
    pub fn slot_shift(&self, id: &str) -> u64 {
        if !self.shifted.load(Ordering::Acquire) {
            return 0;
        }
        self.shift.get(id).map(|s| *s).unwrap_or(0)
    }
}

/// The observation with every value outside its quantity's range (alternately above the
/// maximum and below the minimum, by half the range), in a new envelope.
pub fn out_of_range(env: &Envelope) -> Arc<Envelope> {
    let mut obs = env.obs.clone();
    for (i, (v, q)) in obs.values.iter_mut().zip(obs.kind.quantities()).enumerate() {
        let span = (q.max - q.min).max(1.0);
        *v = if i % 2 == 0 { q.max + span / 2.0 } else { q.min - span / 2.0 };
    }
    Envelope::new(obs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_wins_and_counts_end_per_sensor_then_the_fault() {
        let s = SensorFaults::default();
        let ids = vec!["a".to_string(), "b".to_string()];
        let silence = FaultCore::new(1, Some(2));
        let oor = FaultCore::new(2, None);
        s.add(&ids, &silence, SensorAction::Silence, Some(1));
        s.add(&ids[..1], &oor, SensorAction::OutOfRange, None);
        assert_eq!(s.on_tick("a"), TickFault::Silence);
        assert_eq!(s.on_tick("a"), TickFault::OutOfRange);
        assert!(!silence.is_ended());
        assert_eq!(s.on_tick("b"), TickFault::Silence);
        assert!(silence.is_ended(), "both sensors had their count");
        assert_eq!(s.on_tick("b"), TickFault::None);
        oor.finish(super::super::EndReason::Deleted);
        s.remove(&ids, 2);
        assert_eq!(s.on_tick("a"), TickFault::None);
        assert_eq!(s.active.load(Ordering::Relaxed), 0);
        assert_eq!(silence.effects.observations_suppressed.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn out_of_range_values_leave_every_range() {
        let obs = twins::Observation {
            sensor_id: "s".into(),
            kind: twins::SensorKind::Weather,
            seq: 1,
            observed_at: chrono::Utc::now(),
            location: twins::GeoPoint { lat: 14.6, lon: -61.0 },
            district: "Fort-de-France".into(),
            values: twins::Values::filled(20.0, twins::SensorKind::Weather.quantities().len()),
        };
        let bad = out_of_range(&Envelope::new(obs));
        for (q, v) in bad.obs.measurements() {
            assert!(v < q.min || v > q.max, "{} = {v}", q.name);
        }
    }
}
