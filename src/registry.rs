//! The twin registry: every sensor's twin state, readable without messaging any actor.
//!
//! The registry, not the sensor actor, owns a twin's state (model state, random stream,
//! sequence number). A sensor actor steps its entry in place on each tick; when the actor
//! panics and its supervisor starts a new one, the new actor finds the twin as the old
//! one left it, so sequence numbers keep increasing and nothing is re-initialised.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::Serialize;
use twins::{SensorSpec, Twin};

use crate::sinks::Envelope;

pub struct TwinEntry {
    pub twin: Twin,
    pub last: Option<Arc<Envelope>>,
    /// Real-time interval between observations.
    pub interval: std::time::Duration,
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

#[derive(Default)]
pub struct Registry {
    twins: DashMap<String, TwinEntry>,
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    /// Create the twin of a sensor unless it exists (a restart keeps the existing one).
    pub fn ensure(&self, spec: SensorSpec, seed: u64, interval: std::time::Duration) {
        self.twins.entry(spec.id.clone()).or_insert_with(|| TwinEntry {
            twin: Twin::new(spec, seed),
            last: None,
            interval,
        });
    }

    /// Step a twin: `at` maps the next sequence number to its simulated time.
    pub fn step(&self, id: &str, at: impl FnOnce(u64) -> DateTime<Utc>) -> Option<Arc<Envelope>> {
        let mut entry = self.twins.get_mut(id)?;
        let next = entry.twin.seq() + 1;
        let obs = entry.twin.step(at(next));
        let env = Envelope::new(obs);
        entry.last = Some(env.clone());
        Some(env)
    }

    /// The district of a twin (its actor lives at `root/twins/{district}/{id}`).
    pub fn district(&self, id: &str) -> Option<String> {
        self.twins.get(id).map(|e| e.twin.spec().district.clone())
    }

    pub fn seq(&self, id: &str) -> Option<u64> {
        self.twins.get(id).map(|e| e.twin.seq())
    }

    pub fn view(&self, id: &str) -> Option<TwinView> {
        self.twins.get(id).map(|e| TwinView {
            id: id.to_string(),
            spec: e.twin.spec().clone(),
            seq: e.twin.seq(),
            state: e.twin.state().clone(),
            last_observation: e.last.as_ref().and_then(|l| serde_json::from_slice(&l.obs.to_mqtt_json()).ok()),
            interval_ms: e.interval.as_millis() as u64,
        })
    }

    /// How many twins have emitted at least one observation.
    pub fn ticked(&self) -> usize {
        self.twins.iter().filter(|e| e.twin.seq() > 0).count()
    }

    /// Observations emitted by all twins together (the sum of their sequence numbers).
    pub fn observations(&self) -> u64 {
        self.twins.iter().map(|e| e.twin.seq()).sum()
    }

    pub fn len(&self) -> usize {
        self.twins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.twins.is_empty()
    }

    /// The ids of the twins whose spec matches, sorted.
    pub fn ids_where(&self, mut keep: impl FnMut(&SensorSpec) -> bool) -> Vec<String> {
        let mut ids: Vec<String> = self.twins.iter().filter(|e| keep(e.twin.spec())).map(|e| e.key().clone()).collect();
        ids.sort();
        ids
    }

    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.twins.iter().map(|e| e.key().clone()).collect();
        ids.sort();
        ids
    }
}
