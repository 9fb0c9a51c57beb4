//! What identifies a sensor: id, kind, district and position.

use crate::kind::SensorKind;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A WGS84 position in decimal degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
}

/// The static description of one sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorSpec {
    /// Unique id, also the last MQTT topic level (e.g. `"aq-fdf-01"`).
    pub id: Arc<str>,
    pub kind: SensorKind,
    /// Commune name as written in the configuration (e.g. `"Fort-de-France"`).
    pub district: Arc<str>,
    pub location: GeoPoint,
}
