//! twin-runtime (`twinrt`): the supervised actor runtime of the Smart City Digital Twin of
//! Martinique. Each sensor is a `ractor` actor stepping a pure twin model (crate `twins`);
//! one sink actor per broker delivers its observations; supervisors (crate `supervision`)
//! restart what fails without losing twin state.
//!
//! Modules, top-down:
//! - [`actors`]: the directory of every actor (path, kind, mailbox counters, live cell).
//! - [`runtime`]: builds the supervision tree (sinks first, then twins), owns shutdown.
//! - [`config`]: the TOML configuration, every problem reported at once.
//! - [`registry`]: twin states that readers see without messaging actors (dashmap).
//! - [`sensor`]: the sensor actor and the district supervisors above it.
//! - [`sinks`]: one actor per broker behind a bounded, counted queue (MQTT, NGSI-LD,
//!   SensorThings, InfluxDB, Redpanda, Pulsar).
//! - [`consumer`]: actors reading observations back from a broker into a sink, at least
//!   once (the Redpanda consumer group writing to InfluxDB).
//! - [`distributor`]: one actor per Pulsar topic republishing to other sinks, acknowledging
//!   to Pulsar once every target accepted a message.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, the inspection and fault APIs, the page.
//! - [`faults`]: fault injection (API, scenarios) and what each fault did.
//! - [`metrics`]: the Prometheus metrics (`simulator_*`).
//! - [`broker`]: the embedded MQTT broker of the default configuration.
//! - [`telemetry`]: logging set-up.
//! - [`bench`]: `twinrt bench`, the benchmark harness.

pub mod actors;
pub mod bench;
pub mod broker;
pub mod config;
pub mod consumer;
pub mod distributor;
pub mod faults;
pub mod http;
pub mod metrics;
pub mod registry;
pub mod runtime;
pub mod sensor;
pub mod sinks;
pub mod telemetry;

pub use config::Config;
pub use runtime::{run, Runtime};
