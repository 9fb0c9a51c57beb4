//! Sinks: one actor per broker, all speaking the same message type ([`SinkMsg`]).
//!
//! - [`queue`]: what every sink shares: the bounded queue, the counters, the handle
//!   sensors offer observations to ([`SinkHandle`]).
//! - [`mqtt`]: the MQTT sink (rumqttc), plain or TLS.
//! - [`batch`]: the driver of request/response sinks (batching, retry rules, timeouts),
//!   over a [`batch::BatchService`] per protocol.
//! - [`influxdb`]: the InfluxDB v2 sink (line protocol).
//!
//! Adding a broker kind means one more module with an actor whose `Msg` is [`SinkMsg`]
//! and whose arguments include its [`SinkHandle`]; sensors and the runtime do not change.

pub mod batch;
pub mod influxdb;
pub mod mqtt;
pub mod queue;

use std::sync::Arc;

pub use queue::{Envelope, SinkHandle, SinkSnapshot};

/// The one message type of every sink actor.
#[derive(Debug)]
pub enum SinkMsg {
    /// The queue has work (sent by [`SinkHandle::offer`], at most one on its way at a time).
    Pump,
    /// The sink's connection changed (sent by its own I/O task).
    Connection(ConnectionEvent),
    /// Make the sink actor panic (fault injection and supervision tests).
    Crash(String),
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

    /// Offer an observation to every sink; never waits on any of them.
    pub fn offer(&self, env: Arc<Envelope>) {
        for h in self.handles.iter() {
            h.offer(env.clone());
        }
    }

    pub fn handles(&self) -> &[Arc<SinkHandle>] {
        &self.handles
    }

    pub fn get(&self, name: &str) -> Option<&Arc<SinkHandle>> {
        self.handles.iter().find(|h| h.name == name)
    }
}
