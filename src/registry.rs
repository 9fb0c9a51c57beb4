//! The twin registry: every sensor's twin state, readable without messaging any actor.
//!
//! The registry, not the sensor actor, owns a twin's state (model state, random stream,
//! sequence number). A sensor actor steps its entry in place on each tick; when the actor
//! panics and its supervisor starts a new one, the new actor finds the twin as the old
//! one left it, so sequence numbers keep increasing and nothing is re-initialised.
//!
//! Each twin sits behind its own lock ([`TwinCell`]), which its sensor holds a reference
//! to: a tick steps the twin without hashing its id or locking a shard of the table (the
//! table is for lookups by id: the inspection API, restarts, benchmarks).

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::Serialize;
use twins::{Observation, SensorSpec, Twin};

use crate::sinks::Envelope;

pub struct TwinEntry {
    pub twin: Twin,
    /// The last observation, compact: its time and values (the rest is the twin's spec and
    /// sequence number). Not the envelope itself: a twin keeps no strings of its own twice.
    pub last: Option<LastObservation>,
    /// Real-time interval between observations.
    pub interval: std::time::Duration,
}

/// The twin specs of configured sensors, in order. A district's name is one allocation,
/// shared by its twins (and their observations).
pub fn specs(
    sensors: &[crate::config::SensorConfig],
) -> impl Iterator<Item = (SensorSpec, &crate::config::SensorConfig)> {
    let mut districts: rustc_hash::FxHashMap<&str, Arc<str>> = Default::default();
    sensors.iter().map(move |s| {
        let district = districts.entry(s.district.as_str()).or_insert_with(|| s.district.as_str().into()).clone();
        (SensorSpec { id: s.id.as_str().into(), kind: s.kind, district, location: s.location }, s)
    })
}

/// What a twin keeps of its last observation.
#[derive(Debug, Clone, Copy)]
pub struct LastObservation {
    pub observed_at: DateTime<Utc>,
    values: twins::Values,
}

impl LastObservation {
    fn of(obs: &Observation) -> LastObservation {
        LastObservation { observed_at: obs.observed_at, values: obs.values }
    }

    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// The observation again, as the sinks got it.
    pub fn observation(&self, twin: &Twin) -> Observation {
        let spec = twin.spec();
        Observation {
            sensor_id: spec.id.clone(),
            kind: spec.kind,
            seq: twin.seq(),
            observed_at: self.observed_at,
            location: spec.location,
            district: spec.district.clone(),
            values: self.values,
        }
    }
}

/// What a reader sees of a twin.
#[derive(Debug, Clone, Serialize)]
pub struct TwinView {
    pub id: String,
    pub spec: SensorSpec,
    pub seq: u64,
    pub state: twins::ModelState,
    /// The last observation, in its MQTT JSON encoding.
    pub last_observation: Option<serde_json::Value>,
    pub interval_ms: u64,
}

/// One twin, behind its own lock: held by the registry and by its sensor's slot, so that
/// a tick finds it without a lookup. Outlives any actor: a restarted sensor steps the same.
pub struct TwinCell(Mutex<TwinEntry>);

impl TwinCell {
    fn lock(&self) -> MutexGuard<'_, TwinEntry> {
        // A panic while stepping leaves the twin as the step left it: still a twin.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Step the twin: `at` maps the next sequence number to its simulated time.
    pub fn step(&self, at: impl FnOnce(u64) -> DateTime<Utc>) -> Arc<Envelope> {
        self.step_emitted(at, std::time::Instant::now())
    }

    /// [`step`](Self::step), the observation emitted at `emitted` (a tick's own reading of
    /// the clock).
    pub fn step_emitted(&self, at: impl FnOnce(u64) -> DateTime<Utc>, emitted: std::time::Instant) -> Arc<Envelope> {
        let mut entry = self.lock();
        let next = entry.twin.seq() + 1;
        let obs = entry.twin.step(at(next));
        entry.last = Some(LastObservation::of(&obs));
        drop(entry);
        Envelope::emitted_at(obs, emitted)
    }

    /// Its sequence number: observations emitted so far.
    pub fn seq(&self) -> u64 {
        self.lock().twin.seq()
    }
}

/// Entries are shared (`Arc`): a hash table is up to half empty after it grows, and an
/// empty slot then costs a pointer, not a whole twin.
pub struct Registry {
    /// Keyed by the sensor id, shared with the sensor's directory entry and child spec.
    twins: DashMap<Arc<str>, Arc<TwinCell>, rustc_hash::FxBuildHasher>,
}

/// Shards of the twin table (locked only for lookups by id and for adding twins; a tick
/// locks its twin alone).
const SHARDS: usize = 256;

impl Default for Registry {
    fn default() -> Registry {
        Registry::sized(0)
    }
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    /// Room for `n` twins from the start (no table grown and rehashed along the way).
    pub fn with_capacity(n: usize) -> Arc<Registry> {
        Arc::new(Registry::sized(n))
    }

    fn sized(n: usize) -> Registry {
        Registry { twins: DashMap::with_capacity_and_hasher_and_shard_amount(n, Default::default(), SHARDS) }
    }

    /// Create the twin of a sensor unless it exists (a restart keeps the existing one).
    pub fn ensure(&self, spec: SensorSpec, seed: u64, interval: std::time::Duration) {
        self.twins.entry(spec.id.clone()).or_insert_with(|| {
            Arc::new(TwinCell(Mutex::new(TwinEntry { twin: Twin::new(spec, seed), last: None, interval })))
        });
    }

    /// The twin's key (the shared allocation of its id) and the twin itself.
    pub fn twin(&self, id: &str) -> Option<(Arc<str>, Arc<TwinCell>)> {
        self.twins.get(id).map(|e| (e.key().clone(), e.value().clone()))
    }

    /// Step a twin: `at` maps the next sequence number to its simulated time.
    pub fn step(&self, id: &str, at: impl FnOnce(u64) -> DateTime<Utc>) -> Option<Arc<Envelope>> {
        let cell = self.twins.get(id)?.value().clone();
        Some(cell.step(at))
    }

    /// The district of a twin (its actor lives at `root/twins/{district}/{id}`).
    pub fn district(&self, id: &str) -> Option<Arc<str>> {
        self.twins.get(id).map(|e| e.lock().twin.spec().district.clone())
    }

    pub fn seq(&self, id: &str) -> Option<u64> {
        self.twins.get(id).map(|e| e.seq())
    }

    pub fn view(&self, id: &str) -> Option<TwinView> {
        let cell = self.twins.get(id)?.value().clone();
        let e = cell.lock();
        Some(TwinView {
            id: id.to_string(),
            spec: e.twin.spec().clone(),
            seq: e.twin.seq(),
            state: e.twin.state().clone(),
            last_observation: e
                .last
                .as_ref()
                .and_then(|l| serde_json::from_slice(&l.observation(&e.twin).to_mqtt_json()).ok()),
            interval_ms: e.interval.as_millis() as u64,
        })
    }

    /// How many twins have emitted at least one observation.
    pub fn ticked(&self) -> usize {
        self.twins.iter().filter(|e| e.seq() > 0).count()
    }

    /// Observations emitted by all twins together (the sum of their sequence numbers).
    pub fn observations(&self) -> u64 {
        self.twins.iter().map(|e| e.seq()).sum()
    }

    pub fn len(&self) -> usize {
        self.twins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.twins.is_empty()
    }

    /// The ids of the twins whose spec matches, sorted.
    pub fn ids_where(&self, mut keep: impl FnMut(&SensorSpec) -> bool) -> Vec<String> {
        let mut ids: Vec<String> =
            self.twins.iter().filter(|e| keep(e.lock().twin.spec())).map(|e| e.key().to_string()).collect();
        ids.sort();
        ids
    }

    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.twins.iter().map(|e| e.key().to_string()).collect();
        ids.sort();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_observation_reads_back_as_emitted() {
        let r = Registry::new();
        let spec = SensorSpec {
            id: "w-1".into(),
            kind: twins::SensorKind::Weather,
            district: "Fort-de-France".into(),
            location: twins::GeoPoint { lat: 14.6, lon: -61.07 },
        };
        r.ensure(spec, 7, std::time::Duration::from_secs(5));
        let env = r.step("w-1", |_| chrono::Utc::now()).expect("twin exists");
        let view = r.view("w-1").expect("twin exists");
        let expected: serde_json::Value = serde_json::from_slice(&env.obs.to_mqtt_json()).expect("valid JSON");
        assert_eq!(view.last_observation, Some(expected));
    }
}
