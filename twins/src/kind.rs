//! Sensor kinds and the quantities each one measures.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The six kinds of city sensor the twin simulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SensorKind {
    Traffic,
    AirQuality,
    Parking,
    Noise,
    Weather,
    Light,
}

/// One measured quantity: its JSON key, UCUM unit and physical range.
///
/// Every model clamps its output into `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quantity {
    /// JSON key (snake_case), e.g. `"pm2_5"`.
    pub name: &'static str,
    /// Case-sensitive UCUM code, e.g. `"ug/m3"`, `"[ppm]"`, `"Cel"`.
    pub unit: &'static str,
    pub min: f64,
    pub max: f64,
    pub description: &'static str,
}

const fn q(name: &'static str, unit: &'static str, min: f64, max: f64, description: &'static str) -> Quantity {
    Quantity { name, unit, min, max, description }
}

const TRAFFIC: [Quantity; 4] = [
    q("vehicle_flow", "/h", 0.0, 20_000.0, "Vehicles per hour, both directions"),
    q("average_speed", "km/h", 0.0, 130.0, "Space-mean speed of passing vehicles"),
    q("occupancy", "%", 0.0, 100.0, "Share of time the detector loops are occupied"),
    q("congestion_ratio", "1", 0.0, 5.0, "Demand over capacity (volume/capacity); above 1 the road is saturated"),
];

const AIR_QUALITY: [Quantity; 4] = [
    q("pm10", "ug/m3", 0.0, 1000.0, "PM10 mass concentration"),
    q("pm2_5", "ug/m3", 0.0, 1000.0, "PM2.5 mass concentration"),
    q("no2", "ug/m3", 0.0, 1000.0, "Nitrogen dioxide concentration"),
    q("h2s", "[ppm]", 0.0, 100.0, "Hydrogen sulphide from decaying sargassum"),
];

const PARKING: [Quantity; 4] = [
    q("occupied_spots", "{spot}", 0.0, 5000.0, "Occupied parking spots"),
    q("free_spots", "{spot}", 0.0, 5000.0, "Free parking spots"),
    q("capacity", "{spot}", 0.0, 5000.0, "Total spots of the car park or street segment"),
    q("occupancy", "%", 0.0, 100.0, "Occupied spots over capacity"),
];

const NOISE: [Quantity; 2] = [
    q("laeq", "dB[SPL]", 20.0, 140.0, "A-weighted equivalent continuous sound level over the last interval"),
    q("lamax", "dB[SPL]", 20.0, 150.0, "A-weighted maximum sound level over the last interval"),
];

const WEATHER: [Quantity; 7] = [
    q("temperature", "Cel", 5.0, 45.0, "Air temperature"),
    q("relative_humidity", "%", 0.0, 100.0, "Relative humidity"),
    q("wind_speed", "km/h", 0.0, 300.0, "Mean wind speed"),
    q("wind_direction", "deg", 0.0, 360.0, "Direction the wind blows from, clockwise from true north"),
    q("pressure", "hPa", 900.0, 1060.0, "Sea-level air pressure"),
    q("rain_rate", "mm/h", 0.0, 300.0, "Current rainfall intensity"),
    q("rainfall", "mm", 0.0, 1000.0, "Rainfall accumulated since local midnight"),
];

const LIGHT: [Quantity; 4] = [
    q("status", "1", 0.0, 1.0, "Lamp switched on (1) or off (0)"),
    q("power", "W", 0.0, 1000.0, "Electrical power drawn by the luminaire"),
    q("dimming", "%", 0.0, 100.0, "Dimming level (100 = full output, 0 when off)"),
    q("burning_hours", "h", 0.0, 200_000.0, "Cumulated operating hours of the luminaire"),
];

impl SensorKind {
    /// Every kind, in declaration order.
    pub const ALL: [SensorKind; 6] = [
        SensorKind::Traffic,
        SensorKind::AirQuality,
        SensorKind::Parking,
        SensorKind::Noise,
        SensorKind::Weather,
        SensorKind::Light,
    ];

    /// The wire name: `"traffic"`, `"air-quality"`, `"parking"`, `"noise"`, `"weather"`, `"light"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SensorKind::Traffic => "traffic",
            SensorKind::AirQuality => "air-quality",
            SensorKind::Parking => "parking",
            SensorKind::Noise => "noise",
            SensorKind::Weather => "weather",
            SensorKind::Light => "light",
        }
    }

    /// The quantities an observation of this kind carries, in `values` order.
    pub fn quantities(self) -> &'static [Quantity] {
        match self {
            SensorKind::Traffic => &TRAFFIC,
            SensorKind::AirQuality => &AIR_QUALITY,
            SensorKind::Parking => &PARKING,
            SensorKind::Noise => &NOISE,
            SensorKind::Weather => &WEATHER,
            SensorKind::Light => &LIGHT,
        }
    }

    /// The quantity called `name`, with its index in `values`.
    pub(crate) fn quantity_index(self, name: &str) -> Option<usize> {
        self.quantities().iter().position(|q| q.name == name)
    }
}

impl fmt::Display for SensorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sensor kind name that is not one of [`SensorKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sensor kind {value:?}: expected one of traffic, air-quality, parking, noise, weather, light")]
pub struct UnknownKind {
    pub value: String,
}

impl FromStr for SensorKind {
    type Err = UnknownKind;

    /// Accepts the wire names exactly (no case folding: the wire format is strict).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SensorKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownKind { value: s.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_explained() {
        for k in SensorKind::ALL {
            assert_eq!(k.as_str().parse::<SensorKind>(), Ok(k));
            assert_eq!(k.to_string(), k.as_str());
            let json = serde_json::to_string(&k).expect("serialize kind");
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        let err = "airquality".parse::<SensorKind>().expect_err("must be rejected");
        let msg = err.to_string();
        assert!(msg.contains("\"airquality\""), "{msg}");
        assert!(msg.contains("air-quality") && msg.contains("light"), "{msg}");
    }

    #[test]
    fn quantities_are_well_formed() {
        for k in SensorKind::ALL {
            let qs = k.quantities();
            assert!(!qs.is_empty());
            assert!(qs.len() <= crate::Values::CAPACITY, "{k}: more quantities than an observation holds");
            // Encoders index per-kind tables by `kind as usize`.
            assert_eq!(SensorKind::ALL.get(k as usize), Some(&k), "ALL is in declaration order");
            for (i, q) in qs.iter().enumerate() {
                assert!(q.min < q.max, "{k}:{}", q.name);
                assert!(q.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
                assert_eq!(k.quantity_index(q.name), Some(i), "duplicate name {}", q.name);
            }
        }
    }
}
