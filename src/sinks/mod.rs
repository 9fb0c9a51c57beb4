//! Sinks: one actor per broker, all speaking the same message type ([`SinkMsg`]).
//!
//! - [`queue`]: what every sink shares: the bounded queue, the counters, the handle
//!   sensors offer observations to ([`SinkHandle`]).
//! - [`mqtt`]: the MQTT sink (rumqttc), plain or TLS.
//! - [`pool`]: envelopes handed back by sinks and made again by sensors (no cross-thread
//!   free per observation).
//! - [`batch`]: the driver of request/response sinks (batching, retry rules, timeouts),
//!   over a [`batch::BatchService`] per protocol.
//! - [`influxdb`]: the InfluxDB v2 sink (line protocol).
//! - [`ngsild`]: the NGSI-LD sink (Orion-LD, Stellio): Smart Data Models entities by batch upsert.
//! - [`sensorthings`]: the OGC SensorThings API sink (FROST, django-ogc-sensorthings).
//! - [`redpanda`]: the Redpanda producer through its HTTP Proxy (Pandaproxy): one topic per
//!   sensor type, records keyed by sensor id, per-record errors counted.
//! - [`pulsar`]: the Pulsar producer: one topic per sensor type, messages keyed by sensor id.
//!
//! Adding a broker kind means one more module with an actor whose `Msg` is [`SinkMsg`]
//! and whose arguments include its [`SinkHandle`]; sensors and the runtime do not change.

pub mod batch;
pub mod delivery;
pub mod influxdb;
pub mod mqtt;
pub mod ngsild;
pub mod pool;
pub mod pulsar;
pub mod queue;
pub mod redpanda;
pub mod sensorthings;
pub mod spill;

use std::sync::Arc;

pub use queue::{AckGroup, Envelope, Overflow, SinkHandle, SinkSnapshot};

/// The one message type of every sink actor.
#[derive(Debug)]
pub enum SinkMsg {
    /// The queue has work (sent by [`SinkHandle::offer`], at most one on its way at a time).
    Pump,
    /// The sink's connection changed (sent by its own I/O task).
    Connection(ConnectionEvent),
    /// Make the sink actor panic (fault injection and supervision tests).
    Crash(String),
    /// Return an error from the handler (fault injection): the supervisor sees a failure.
    Fail(String),
    /// Sleep in the handler (fault injection): the actor's mailbox waits, nothing else does.
    Stall(std::time::Duration),
    /// Answer (the inspection API's liveness check).
    Ping(ractor::RpcReplyPort<()>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEvent {
    Connected { session_present: bool },
    Disconnected(String),
}

/// The sinks every sensor delivers to.
#[derive(Clone, Default)]
pub struct SinkSet {
    handles: Arc<Vec<Arc<SinkHandle>>>,
}

impl SinkSet {
    pub fn new(handles: Vec<Arc<SinkHandle>>) -> SinkSet {
        SinkSet { handles: Arc::new(handles) }
    }

    /// Offer an observation to every sink that takes sensors' observations (all but the
    /// `consumer_only` ones). Waits only on sinks whose overflow policy is `block`, and then
    /// at most their `block_timeout` ([`SinkHandle::offer_wait`]).
    pub async fn offer(&self, env: Arc<Envelope>) {
        for h in self.handles.iter().filter(|h| h.offers_to_sensors()) {
            if h.blocks() {
                h.offer_wait(env.clone()).await;
            } else {
                h.offer(env.clone());
            }
        }
    }

    pub fn handles(&self) -> &[Arc<SinkHandle>] {
        &self.handles
    }

    pub fn get(&self, name: &str) -> Option<&Arc<SinkHandle>> {
        self.handles.iter().find(|h| h.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use twins::{GeoPoint, Observation, SensorKind};

    #[tokio::test]
    async fn sensors_skip_consumer_only_sinks() {
        let m = Metrics::new();
        let all = SinkHandle::new("all", "test", "x".into(), 10, &m);
        let only = SinkHandle::new("only", "test", "x".into(), 10, &m);
        only.set_offer_to_sensors(false);
        let set = SinkSet::new(vec![all.clone(), only.clone()]);
        set.offer(Envelope::new(Observation {
            sensor_id: "s".into(),
            kind: SensorKind::Noise,
            seq: 1,
            observed_at: chrono::Utc::now(),
            location: GeoPoint { lat: 14.6, lon: -61.0 },
            district: "Fort-de-France".into(),
            values: twins::Values::filled(50.0, SensorKind::Noise.quantities().len()),
        }))
        .await;
        assert_eq!((all.queue_len(), only.queue_len()), (1, 0));
        assert!(only.offer(Envelope::new(all.take(1)[0].obs.clone())), "offered directly, it takes it");
        assert_eq!(only.queue_len(), 1);
    }
}
