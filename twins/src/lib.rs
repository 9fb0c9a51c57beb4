//! Pure twin models of Martinique city sensors, for the `twinrt` runtime of the Smart City
//! Digital Twin of Martinique.
//!
//! No I/O (the GeoJSON files are embedded with `include_str!`), no actors, no async: a
//! [`Twin`] is a plain value that the runtime steps, stores (it serializes, PRNG included)
//! and restores. Same seed + same spec + same step times = bit-identical observations.
//!
//! Modules:
//! - [`kind`]: [`SensorKind`] and the [`Quantity`] list (JSON key, UCUM unit, range) of each kind.
//! - [`spec`]: [`SensorSpec`] and [`GeoPoint`].
//! - [`twin`]: [`Twin`] (step, seq, state) and [`ModelState`].
//! - [`models`]: one file per model (traffic, air quality, parking, noise, weather, light),
//!   calibrated on `shared/reference/martinique-reference.json`; each constant names its key.
//! - [`values`]: [`Values`], an observation's values, inline.
//! - [`observation`]: [`Observation`], its MQTT JSON encoding and strict decoder ([`DecodeError`]);
//!   schema in `schema/observation.schema.json`.
//! - [`line_protocol`]: the InfluxDB line protocol encoding of an observation.
//! - [`ngsild`]: the NGSI-LD encoding of an observation as a FIWARE Smart Data Models entity.
//! - [`clock`]: [`SimClock`] (real to simulated time) and Martinique local time (UTC-4, no DST).
//! - [`geo`]: the 34 communes (lookup by name, point-in-polygon, deterministic placement).
//! - [`rng`]: the crate's own xoshiro256** PRNG, Box-Muller Gaussian and FNV-1a hashing.

pub mod clock;
pub mod fastfmt;
pub mod geo;
pub mod kind;
pub mod line_protocol;
pub mod models;
pub mod ngsild;
pub mod observation;
pub mod rng;
pub mod scan;
pub mod spec;
pub mod twin;
pub mod values;

pub use clock::{ClockError, SimClock};
pub use kind::{Quantity, SensorKind, UnknownKind};
pub use models::air_quality::{AirQualityState, DustEpisode};
pub use models::light::LightState;
pub use models::noise::NoiseState;
pub use models::parking::ParkingState;
pub use models::traffic::{Incident, TrafficState};
pub use models::weather::{Shower, WeatherState};
pub use observation::{DecodeError, Observation};
pub use spec::{GeoPoint, SensorSpec};
pub use twin::{ModelState, Twin};
pub use values::{TooManyValues, Values};
