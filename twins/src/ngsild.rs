//! NGSI-LD encoding of an [`Observation`] as a FIWARE Smart Data Models entity: pure, no I/O.
//!
//! | kind | entity type | attributes (our quantity → SDM attribute, unitCode) |
//! |---|---|---|
//! | traffic | `TrafficFlowObserved` | vehicle_flow → `intensity` (vehicles per hour, `H10`), average_speed → `averageVehicleSpeed` (`KMH`), occupancy % → `occupancy` (0..1, `C62`), congestion_ratio → `congestionRatio` (`C62`) + `congested` (ratio ≥ 1) |
//! | air-quality | `AirQualityObserved` | pm10 → `pm10`, pm2_5 → `pm25`, no2 → `no2` (µg/m³, `GQ`), h2s → `sh2` (ppm, `59`) |
//! | parking | `OffStreetParking` | occupied_spots → `occupiedSpotNumber`, free_spots → `availableSpotNumber`, capacity → `totalSpotNumber` (integers, no unit), occupancy % → `occupancy` (0..1, `C62`) |
//! | noise | `NoiseLevelObserved` | laeq → `LAeq`, lamax → `LAmax` (dB, `2N`) |
//! | weather | `WeatherObserved` | temperature (`CEL`), relative_humidity % → `relativeHumidity` (0..1, `C62`), wind_speed km/h → `windSpeed` (m/s, `MTS`), wind_direction → `windDirection` (`DD`), pressure → `atmosphericPressure` (`A97`), rainfall → `precipitation` (mm = L/m², `MMT`), rain_rate → `precipitationRate` (`H67`) |
//! | light | `Streetlight` | status → `powerState` (`on`/`off`), power → `powerConsumption` (`WTT`), dimming % → `illuminanceLevel` (0..1, `C62`), burning_hours → `burningHours` (`HUR`); `status` is `ok` |
//!
//! Every entity also has `dateObserved` (the observation time), `location` (a GeoJSON
//! Point GeoProperty), `areaServed` (the district), `address` and `seq` (the observation's
//! sequence number); noise adds `dateObservedFrom`/`dateObservedTo` and light
//! `observationDateTime`, which their schemas ask for. Ids are
//! `urn:ngsi-ld:{Type}:{sensor-id}`. Measured Properties carry `observedAt` and, when the
//! quantity has a unit, `unitCode` (UN/CEFACT common codes). Non-finite values are left out.
//!
//! [`Observation::to_ngsi_ld`] is the normalized form (what the sink sends, without
//! `@context`); [`Observation::to_ngsi_ld_key_values`] the keyValues form, the shape the
//! Smart Data Models JSON Schemas validate.

use chrono::SecondsFormat;
use serde_json::{json, Map, Value};

use crate::kind::SensorKind;
use crate::observation::Observation;

/// How a quantity's value becomes an attribute value.
#[derive(Debug, Clone, Copy)]
enum Conv {
    /// As it is.
    Same,
    /// Multiplied by a factor (unit conversion).
    Scale(f64),
    /// Rounded to a non-negative integer (counts).
    Count,
}

/// One attribute fed by one quantity.
#[derive(Debug, Clone, Copy)]
struct Attr {
    quantity: &'static str,
    name: &'static str,
    unit_code: Option<&'static str>,
    conv: Conv,
}

const fn a(quantity: &'static str, name: &'static str, unit_code: Option<&'static str>, conv: Conv) -> Attr {
    Attr { quantity, name, unit_code, conv }
}

const PERCENT_TO_ONE: Conv = Conv::Scale(0.01);
const KMH_TO_MS: Conv = Conv::Scale(1.0 / 3.6);

const TRAFFIC: &[Attr] = &[
    a("vehicle_flow", "intensity", Some("H10"), Conv::Same),
    a("average_speed", "averageVehicleSpeed", Some("KMH"), Conv::Same),
    a("occupancy", "occupancy", Some("C62"), PERCENT_TO_ONE),
    a("congestion_ratio", "congestionRatio", Some("C62"), Conv::Same),
];
const AIR_QUALITY: &[Attr] = &[
    a("pm10", "pm10", Some("GQ"), Conv::Same),
    a("pm2_5", "pm25", Some("GQ"), Conv::Same),
    a("no2", "no2", Some("GQ"), Conv::Same),
    a("h2s", "sh2", Some("59"), Conv::Same),
];
const PARKING: &[Attr] = &[
    a("occupied_spots", "occupiedSpotNumber", None, Conv::Count),
    a("free_spots", "availableSpotNumber", None, Conv::Count),
    a("capacity", "totalSpotNumber", None, Conv::Count),
    a("occupancy", "occupancy", Some("C62"), PERCENT_TO_ONE),
];
const NOISE: &[Attr] = &[a("laeq", "LAeq", Some("2N"), Conv::Same), a("lamax", "LAmax", Some("2N"), Conv::Same)];
const WEATHER: &[Attr] = &[
    a("temperature", "temperature", Some("CEL"), Conv::Same),
    a("relative_humidity", "relativeHumidity", Some("C62"), PERCENT_TO_ONE),
    a("wind_speed", "windSpeed", Some("MTS"), KMH_TO_MS),
    a("wind_direction", "windDirection", Some("DD"), Conv::Same),
    a("pressure", "atmosphericPressure", Some("A97"), Conv::Same),
    a("rainfall", "precipitation", Some("MMT"), Conv::Same),
    a("rain_rate", "precipitationRate", Some("H67"), Conv::Same),
];
const LIGHT: &[Attr] = &[
    a("power", "powerConsumption", Some("WTT"), Conv::Same),
    a("dimming", "illuminanceLevel", Some("C62"), PERCENT_TO_ONE),
    a("burning_hours", "burningHours", Some("HUR"), Conv::Same),
];

fn attrs(kind: SensorKind) -> &'static [Attr] {
    match kind {
        SensorKind::Traffic => TRAFFIC,
        SensorKind::AirQuality => AIR_QUALITY,
        SensorKind::Parking => PARKING,
        SensorKind::Noise => NOISE,
        SensorKind::Weather => WEATHER,
        SensorKind::Light => LIGHT,
    }
}

impl SensorKind {
    /// The Smart Data Models entity type of this kind.
    pub fn ngsi_ld_type(self) -> &'static str {
        match self {
            SensorKind::Traffic => "TrafficFlowObserved",
            SensorKind::AirQuality => "AirQualityObserved",
            SensorKind::Parking => "OffStreetParking",
            SensorKind::Noise => "NoiseLevelObserved",
            SensorKind::Weather => "WeatherObserved",
            SensorKind::Light => "Streetlight",
        }
    }
}

/// `urn:ngsi-ld:{Type}:{id}`, with every character of the id outside `A-Za-z0-9-_.`
/// percent-encoded (config ids never have any).
pub fn entity_id(entity_type: &str, sensor_id: &str) -> String {
    let mut out = format!("urn:ngsi-ld:{entity_type}:");
    for b in sensor_id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One attribute value, before it is written in either form.
enum AttrValue {
    /// A measured value, with its unit code if it has a unit.
    Measured(Value, Option<&'static str>),
    /// A plain value that is observed (an enumeration, a flag, the sequence number).
    Observed(Value),
    /// A static description (area, address).
    Static(Value),
    /// A date-time (NGSI-LD `DateTime` in normalized form, a string in keyValues).
    DateTime(String),
    /// The GeoJSON location.
    Geo(Value),
}

fn number(v: f64) -> Option<Value> {
    serde_json::Number::from_f64(v).map(Value::Number)
}

/// Round a converted value to 6 decimals (unit conversions leave binary noise).
fn tidy(v: f64) -> f64 {
    let r = (v * 1e6).round() / 1e6;
    if r == 0.0 {
        0.0
    } else {
        r
    }
}

impl Observation {
    /// The Smart Data Models entity type (e.g. `AirQualityObserved`).
    pub fn ngsi_ld_type(&self) -> &'static str {
        self.kind.ngsi_ld_type()
    }

    /// `urn:ngsi-ld:{Type}:{sensor-id}`.
    pub fn ngsi_ld_id(&self) -> String {
        entity_id(self.ngsi_ld_type(), &self.sensor_id)
    }

    /// Every attribute of the entity, in a stable order.
    fn ngsi_ld_attributes(&self) -> Vec<(&'static str, AttrValue)> {
        let at = self.observed_at.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let mut out = vec![
            ("dateObserved", AttrValue::DateTime(at.clone())),
            (
                "location",
                AttrValue::Geo(json!({"type": "Point", "coordinates": [self.location.lon, self.location.lat]})),
            ),
            ("areaServed", AttrValue::Static(Value::String(self.district.to_string()))),
            (
                "address",
                AttrValue::Static(json!({
                    "addressLocality": self.district,
                    "addressRegion": "Martinique",
                    "addressCountry": "FR",
                })),
            ),
            ("seq", AttrValue::Observed(Value::from(self.seq))),
        ];
        match self.kind {
            SensorKind::Noise => {
                // The levels are over the last interval, which an observation does not
                // carry: the period is given as the instant of the observation.
                out.push(("dateObservedFrom", AttrValue::DateTime(at.clone())));
                out.push(("dateObservedTo", AttrValue::DateTime(at.clone())));
            }
            SensorKind::Light => {
                out.push(("observationDateTime", AttrValue::DateTime(at.clone())));
                out.push(("status", AttrValue::Static(Value::from("ok"))));
                if let Some(on) = self.value("status").filter(|v| v.is_finite()) {
                    out.push(("powerState", AttrValue::Observed(Value::from(if on >= 0.5 { "on" } else { "off" }))));
                }
            }
            SensorKind::Traffic => {
                if let Some(r) = self.value("congestion_ratio").filter(|v| v.is_finite()) {
                    out.push(("congested", AttrValue::Observed(Value::Bool(r >= 1.0))));
                }
            }
            _ => {}
        }
        for attr in attrs(self.kind) {
            let Some(v) = self.value(attr.quantity).filter(|v| v.is_finite()) else { continue };
            let value = match attr.conv {
                Conv::Same => number(v),
                Conv::Scale(f) => number(tidy(v * f)),
                Conv::Count => Some(Value::from(v.round().max(0.0) as u64)),
            };
            // The schema wants at least one spot in a car park: leave an empty one out.
            if attr.name == "totalSpotNumber" && v.round() < 1.0 {
                continue;
            }
            if let Some(value) = value {
                out.push((attr.name, AttrValue::Measured(value, attr.unit_code)));
            }
        }
        out
    }

    /// The NGSI-LD entity in normalized form, without `@context`.
    pub fn to_ngsi_ld(&self) -> Value {
        let at = self.observed_at.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let mut m = Map::new();
        m.insert("id".into(), Value::String(self.ngsi_ld_id()));
        m.insert("type".into(), Value::from(self.ngsi_ld_type()));
        for (name, v) in self.ngsi_ld_attributes() {
            let attr = match v {
                AttrValue::Measured(value, unit) => {
                    let mut p = json!({"type": "Property", "value": value, "observedAt": at});
                    if let (Some(u), Some(o)) = (unit, p.as_object_mut()) {
                        o.insert("unitCode".into(), Value::from(u));
                    }
                    p
                }
                AttrValue::Observed(value) => json!({"type": "Property", "value": value, "observedAt": at}),
                AttrValue::Static(value) => json!({"type": "Property", "value": value}),
                AttrValue::DateTime(t) => json!({"type": "Property", "value": {"@type": "DateTime", "@value": t}}),
                AttrValue::Geo(g) => json!({"type": "GeoProperty", "value": g}),
            };
            m.insert(name.into(), attr);
        }
        Value::Object(m)
    }

    /// The NGSI-LD entity in keyValues (simplified) form, without `@context`: what the Smart
    /// Data Models schemas validate.
    pub fn to_ngsi_ld_key_values(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), Value::String(self.ngsi_ld_id()));
        m.insert("type".into(), Value::from(self.ngsi_ld_type()));
        for (name, v) in self.ngsi_ld_attributes() {
            let value = match v {
                AttrValue::Measured(value, _) | AttrValue::Observed(value) | AttrValue::Static(value) => value,
                AttrValue::DateTime(t) => Value::String(t),
                AttrValue::Geo(g) => g,
            };
            m.insert(name.into(), value);
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{GeoPoint, SensorSpec};
    use crate::twin::Twin;
    use chrono::{TimeZone, Utc};

    fn observation(kind: SensorKind) -> Observation {
        let spec = SensorSpec {
            id: format!("{}-fdf-01", kind.as_str()).into(),
            kind,
            district: "Fort-de-France".into(),
            location: GeoPoint { lat: 14.6040, lon: -61.0670 },
        };
        let mut twin = Twin::new(spec, 972);
        let t0 = Utc.with_ymd_and_hms(2026, 11, 25, 1, 5, 0).single().expect("valid time");
        twin.step(t0);
        twin.step(t0 + chrono::Duration::seconds(300))
    }

    #[test]
    fn ids_and_types_follow_the_smart_data_models() {
        let o = observation(SensorKind::AirQuality);
        assert_eq!(o.ngsi_ld_type(), "AirQualityObserved");
        assert_eq!(o.ngsi_ld_id(), "urn:ngsi-ld:AirQualityObserved:air-quality-fdf-01");
        assert_eq!(entity_id("T", "a b/é"), "urn:ngsi-ld:T:a%20b%2F%C3%A9");
        let types: Vec<_> = SensorKind::ALL.iter().map(|k| k.ngsi_ld_type()).collect();
        assert_eq!(
            types,
            [
                "TrafficFlowObserved",
                "AirQualityObserved",
                "OffStreetParking",
                "NoiseLevelObserved",
                "WeatherObserved",
                "Streetlight"
            ]
        );
    }

    #[test]
    fn every_quantity_reaches_the_entity() {
        for kind in SensorKind::ALL {
            let o = observation(kind);
            let kv = o.to_ngsi_ld_key_values();
            let n = o.to_ngsi_ld();
            for q in kind.quantities() {
                let covered = attrs(kind).iter().any(|a| a.quantity == q.name)
                    || (kind == SensorKind::Light && q.name == "status");
                assert!(covered, "{kind}: {} has no attribute", q.name);
            }
            for attr in attrs(kind) {
                assert!(kv.get(attr.name).is_some(), "{kind}: {} missing in {kv}", attr.name);
                let p = &n[attr.name];
                assert_eq!(p["type"], "Property");
                assert!(p.get("value").is_some() && p.get("observedAt").is_some(), "{p}");
                assert_eq!(p.get("unitCode").and_then(Value::as_str), attr.unit_code, "{kind}: {}", attr.name);
            }
            assert_eq!(n["seq"]["value"], 2);
            assert_eq!(kv["seq"], 2);
            assert_eq!(kv["dateObserved"], "2026-11-25T01:10:00Z");
            assert_eq!(n["dateObserved"]["value"]["@value"], "2026-11-25T01:10:00Z");
            assert_eq!(n["location"]["type"], "GeoProperty");
            assert_eq!(kv["location"]["coordinates"], json!([-61.067, 14.604]));
        }
    }

    #[test]
    fn units_are_converted_to_the_schemas_units() {
        let mut o = observation(SensorKind::Weather);
        let set = |o: &mut Observation, name: &str, v: f64| {
            let i = o.kind.quantity_index(name).expect("quantity");
            o.values[i] = v;
        };
        set(&mut o, "wind_speed", 36.0);
        set(&mut o, "relative_humidity", 78.5);
        let kv = o.to_ngsi_ld_key_values();
        assert_eq!(kv["windSpeed"], json!(10.0));
        assert_eq!(kv["relativeHumidity"], json!(0.785));

        let mut p = observation(SensorKind::Parking);
        set(&mut p, "free_spots", 12.0);
        set(&mut p, "capacity", 0.0);
        let kv = p.to_ngsi_ld_key_values();
        assert_eq!(kv["availableSpotNumber"], json!(12));
        assert!(kv.get("totalSpotNumber").is_none(), "an empty car park has no totalSpotNumber");

        let mut l = observation(SensorKind::Light);
        set(&mut l, "status", 0.0);
        set(&mut l, "dimming", f64::NAN);
        let kv = l.to_ngsi_ld_key_values();
        assert_eq!(kv["powerState"], "off");
        assert_eq!(kv["status"], "ok");
        assert!(kv.get("illuminanceLevel").is_none(), "non-finite values are left out");

        let mut t = observation(SensorKind::Traffic);
        set(&mut t, "congestion_ratio", 1.2);
        assert_eq!(t.to_ngsi_ld_key_values()["congested"], true);
        assert_eq!(t.to_ngsi_ld()["congested"]["value"], true);
    }
}
