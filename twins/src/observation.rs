//! [`Observation`] and its MQTT JSON encoding.
//!
//! ```json
//! {"id":"aq-fdf-01","type":"air-quality","seq":42,"observedAt":"2026-11-25T01:05:00Z",
//!  "district":"Fort-de-France","location":{"lat":14.604,"lon":-61.067},
//!  "values":{"pm10":31.2,"pm2_5":12.0,"no2":18.5,"h2s":0.0},
//!  "units":{"pm10":"ug/m3","pm2_5":"ug/m3","no2":"ug/m3","h2s":"[ppm]"}}
//! ```
//! Values are reachable by JSON path (`$.values.pm10`), keys follow
//! [`SensorKind::quantities`] order, units are UCUM codes. `observedAt` is RFC 3339 UTC with
//! `Z`, in whole seconds when possible, else with 3, 6 or 9 fractional digits (the shortest
//! exact form, so the encoding round-trips). The JSON Schema is `schema/observation.schema.json`.

use crate::kind::{Quantity, SensorKind, UnknownKind};
use crate::spec::GeoPoint;
use crate::values::Values;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt::Display;
use std::sync::Arc;

/// One reading of one sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Shared with the twin's spec: an observation copies no string.
    pub sensor_id: Arc<str>,
    pub kind: SensorKind,
    pub seq: u64,
    pub observed_at: DateTime<Utc>,
    pub location: GeoPoint,
    /// Shared with the twin's spec (and every twin of the district).
    pub district: Arc<str>,
    /// Aligned with `kind.quantities()`: same order and length.
    pub values: Values,
}

/// Why an MQTT JSON payload is not a valid observation. Each message names the JSON path.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all (serde_json gives the line:column).
    #[error("invalid observation JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{path}: missing field")]
    MissingField { path: String },
    #[error("{path}: unknown field")]
    UnknownField { path: String },
    #[error("{path}: expected {expected}, found {found}")]
    WrongType { path: String, expected: &'static str, found: String },
    #[error("$.type: {0}")]
    UnknownType(#[from] UnknownKind),
    #[error("$.id: {id:?} is not a valid sensor id (non-empty, no '/', '+' or '#')")]
    InvalidId { id: String },
    #[error("$.observedAt: {value:?} is not an RFC 3339 UTC timestamp ending in 'Z': {reason}")]
    InvalidTimestamp { value: String, reason: String },
    #[error("$.location.{field}: {value} is out of range")]
    InvalidLocation { field: &'static str, value: f64 },
    #[error("$.values.{name}: missing, required for a {kind} observation")]
    MissingValue { kind: SensorKind, name: &'static str },
    #[error("$.values.{name}: expected a number, found {found}")]
    NotANumber { name: String, found: String },
    #[error("$.values.{name}: not a quantity of a {kind} observation (expected {expected})")]
    UnknownValue { kind: SensorKind, name: String, expected: String },
    #[error("$.units.{name}: expected {expected:?}, found {found}")]
    UnitMismatch { name: String, expected: &'static str, found: String },
}

impl Observation {
    /// The value of the quantity called `name`, if this kind has it.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.kind.quantity_index(name).and_then(|i| self.values.get(i).copied())
    }

    /// `(quantity, value)` pairs in quantity order.
    pub fn measurements(&self) -> impl Iterator<Item = (&'static Quantity, f64)> + '_ {
        self.kind.quantities().iter().zip(self.values.iter().copied())
    }

    /// `city/sensors/{type}/{id}`.
    pub fn mqtt_topic(&self) -> String {
        format!("city/sensors/{}/{}", self.kind.as_str(), self.sensor_id)
    }

    /// The MQTT JSON payload (see the module documentation).
    pub fn to_mqtt_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write_mqtt_json(&mut out);
        out
    }

    /// Appends the MQTT JSON payload to `out` (reuse one buffer across observations).
    /// Non-finite values are written as `null`, which [`Observation::from_mqtt_json`] rejects.
    pub fn write_mqtt_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":");
        push_json_str(out, &self.sensor_id);
        out.extend_from_slice(b",\"type\":\"");
        out.extend_from_slice(self.kind.as_str().as_bytes());
        out.extend_from_slice(b"\",\"seq\":");
        crate::fastfmt::push_u64(out, self.seq);
        out.extend_from_slice(b",\"observedAt\":\"");
        crate::fastfmt::push_rfc3339(out, self.observed_at);
        out.extend_from_slice(b"\",\"district\":");
        push_json_str(out, &self.district);
        out.extend_from_slice(b",\"location\":{\"lat\":");
        push_number(out, self.location.lat);
        out.extend_from_slice(b",\"lon\":");
        push_number(out, self.location.lon);
        out.extend_from_slice(b"},\"values\":{");
        for (i, (q, v)) in self.measurements().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(q.name.as_bytes());
            out.extend_from_slice(b"\":");
            push_number(out, v);
        }
        out.extend_from_slice(units_tail(self.kind));
    }

    /// Parses and validates an MQTT JSON payload. Strict: unknown fields, unknown or missing
    /// values, non-numeric values and wrong units are errors; values outside their quantity's
    /// range are accepted (injected faults produce them). `units` may be omitted.
    pub fn from_mqtt_json(bytes: &[u8]) -> Result<Observation, DecodeError> {
        // The common case, a valid payload, read straight into its fields; anything the fast
        // path is not sure of is read again below, which names the error.
        if let Some(obs) = exact::decode(bytes) {
            return Ok(obs);
        }
        match fast::decode(bytes) {
            Some(obs) => Ok(obs),
            None => Self::from_mqtt_json_checked(bytes),
        }
    }

    /// The first path of [`from_mqtt_json`](Self::from_mqtt_json): the exact layout
    /// [`write_mqtt_json`](Self::write_mqtt_json) writes (or the same without `units`), read
    /// without a JSON parser; `None` for anything else. Exposed for its tests.
    #[doc(hidden)]
    pub fn from_mqtt_json_exact(bytes: &[u8]) -> Option<Observation> {
        exact::decode(bytes)
    }

    /// [`from_mqtt_json`](Self::from_mqtt_json) without its fast path: the reference the
    /// fast path is tested against.
    #[doc(hidden)]
    pub fn from_mqtt_json_checked(bytes: &[u8]) -> Result<Observation, DecodeError> {
        let doc: Value = serde_json::from_slice(bytes)?;
        let top = object(&doc, "$")?;
        if let Some(key) = top.keys().find(|k| !TOP_LEVEL_FIELDS.contains(&k.as_str())) {
            return Err(DecodeError::UnknownField { path: format!("$.{key}") });
        }
        let kind: SensorKind = string(top, "$", "type")?.parse()?;
        let id = string(top, "$", "id")?;
        if id.is_empty() || id.contains(['/', '+', '#']) {
            return Err(DecodeError::InvalidId { id: id.to_owned() });
        }
        let seq = match field(top, "$", "seq")? {
            Value::Number(n) if n.as_u64().is_some_and(|s| s >= 1) => n.as_u64().unwrap_or(1),
            other => return Err(wrong_type("$.seq", "an integer >= 1", other)),
        };
        let observed_at = parse_timestamp(string(top, "$", "observedAt")?)?;
        let district: Arc<str> = string(top, "$", "district")?.into();
        let location = object(field(top, "$", "location")?, "$.location")?;
        if let Some(key) = location.keys().find(|k| !matches!(k.as_str(), "lat" | "lon")) {
            return Err(DecodeError::UnknownField { path: format!("$.location.{key}") });
        }
        let lat = coordinate(location, "lat", 90.0)?;
        let lon = coordinate(location, "lon", 180.0)?;

        let quantities = kind.quantities();
        let expected = || quantities.iter().map(|q| q.name).collect::<Vec<_>>().join(", ");
        let values_obj = object(field(top, "$", "values")?, "$.values")?;
        if let Some(name) = values_obj.keys().find(|k| kind.quantity_index(k).is_none()) {
            return Err(DecodeError::UnknownValue { kind, name: name.clone(), expected: expected() });
        }
        let mut values = Values::new();
        for q in quantities {
            let v = values_obj.get(q.name).ok_or(DecodeError::MissingValue { kind, name: q.name })?;
            let x = v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| DecodeError::NotANumber { name: q.name.to_owned(), found: json_type(v) })?;
            values.push(x);
        }
        if let Some(units) = top.get("units") {
            let units = object(units, "$.units")?;
            if let Some(name) = units.keys().find(|k| kind.quantity_index(k).is_none()) {
                return Err(DecodeError::UnknownValue { kind, name: name.clone(), expected: expected() });
            }
            for q in quantities {
                match units.get(q.name) {
                    Some(Value::String(u)) if u == q.unit => {}
                    found => {
                        return Err(DecodeError::UnitMismatch {
                            name: q.name.to_owned(),
                            expected: q.unit,
                            found: found.map_or_else(|| "nothing".to_owned(), json_type),
                        })
                    }
                }
            }
        }
        Ok(Observation {
            sensor_id: id.into(),
            kind,
            seq,
            observed_at,
            location: GeoPoint { lat, lon },
            district,
            values,
        })
    }
}

/// The first path of [`Observation::from_mqtt_json`]: what `write_mqtt_json` writes, member
/// by member in its order, compact, strings without escapes, and then either the units of
/// the kind exactly as written or no units. Each piece is checked as the JSON grammar and
/// the checked path would (string contents, number syntax, ranges, timestamp); anything
/// else gives up (`None`) for the next path. A payload from twinrt (its sensors, or the
/// Redpanda and Pulsar records they made) is read here, in a fraction of a typed parse.
mod exact {
    use super::{parse_timestamp, units_tail, GeoPoint, Observation, SensorKind, Values};
    use crate::scan::Scan;

    pub(super) fn decode(bytes: &[u8]) -> Option<Observation> {
        let mut r = Scan::new(bytes);
        r.lit(b"{\"id\":")?;
        let id = r.string()?;
        r.lit(b",\"type\":")?;
        let kind: SensorKind = r.string()?.parse().ok()?;
        r.lit(b",\"seq\":")?;
        let seq = r.uint()?;
        r.lit(b",\"observedAt\":")?;
        let observed_at = parse_timestamp(r.string()?).ok()?;
        r.lit(b",\"district\":")?;
        let district = r.string()?;
        r.lit(b",\"location\":{\"lat\":")?;
        let lat = r.number()?;
        r.lit(b",\"lon\":")?;
        let lon = r.number()?;
        r.lit(b"},\"values\":{")?;
        let mut values = Values::new();
        for (i, q) in kind.quantities().iter().enumerate() {
            if i > 0 {
                r.lit(b",")?;
            }
            r.lit(b"\"")?;
            r.lit(q.name.as_bytes())?;
            r.lit(b"\":")?;
            values.push(r.number()?);
        }
        let rest = r.rest();
        if rest != units_tail(kind) && rest != b"}}" {
            return None;
        }
        if id.is_empty() || id.contains(['/', '+', '#']) || seq < 1 {
            return None;
        }
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            return None;
        }
        Some(Observation {
            sensor_id: id.into(),
            kind,
            seq,
            observed_at,
            location: GeoPoint { lat, lon },
            district: district.into(),
            values,
        })
    }
}

/// The fast path of [`Observation::from_mqtt_json`]: typed, borrowing, no JSON tree. It
/// accepts only what the checked path accepts, with the same result, and gives up (`None`)
/// on anything else, duplicates included, so that the checked path names the error.
mod fast {
    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{Deserializer, MapAccess, Visitor};
    use serde::Deserialize;

    use super::{parse_timestamp, Observation, SensorKind, Values};
    use crate::spec::GeoPoint;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wire<'a> {
        #[serde(borrow)]
        id: Cow<'a, str>,
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        seq: u64,
        #[serde(rename = "observedAt", borrow)]
        observed_at: Cow<'a, str>,
        #[serde(borrow)]
        district: Cow<'a, str>,
        location: Location,
        #[serde(borrow)]
        values: Pairs<'a, f64>,
        // Absent is fine; `null` is not (it is not an object).
        #[serde(borrow, default, deserialize_with = "present")]
        units: Option<Pairs<'a, Cow<'a, str>>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Location {
        lat: f64,
        lon: f64,
    }

    fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
        T::deserialize(d).map(Some)
    }

    /// A JSON object's members, in order.
    struct Pairs<'a, V>(Vec<(Cow<'a, str>, V)>);

    impl<'de: 'a, 'a, V: Deserialize<'de>> Deserialize<'de> for Pairs<'a, V> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V2<'a, V>(std::marker::PhantomData<(&'a (), V)>);
            impl<'de: 'a, 'a, V: Deserialize<'de>> Visitor<'de> for V2<'a, V> {
                type Value = Pairs<'a, V>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                    let mut out = Vec::with_capacity(m.size_hint().unwrap_or(6));
                    while let Some((k, v)) = m.next_entry::<Cow<'de, str>, V>()? {
                        out.push((k, v));
                    }
                    Ok(Pairs(out))
                }
            }
            d.deserialize_map(V2(std::marker::PhantomData))
        }
    }

    /// Every quantity of `kind` once, and nothing else: the members in quantity order.
    fn in_order<'p, V>(kind: SensorKind, pairs: &'p [(Cow<'_, str>, V)]) -> Option<Vec<&'p V>> {
        let quantities = kind.quantities();
        if pairs.len() != quantities.len() {
            return None;
        }
        quantities.iter().map(|q| pairs.iter().find(|(k, _)| k.as_ref() == q.name).map(|(_, v)| v)).collect()
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Observation> {
        let w: Wire<'_> = serde_json::from_slice(bytes).ok()?;
        let kind: SensorKind = w.kind.parse().ok()?;
        if w.id.is_empty() || w.id.contains(['/', '+', '#']) || w.seq < 1 {
            return None;
        }
        if !(-90.0..=90.0).contains(&w.location.lat) || !(-180.0..=180.0).contains(&w.location.lon) {
            return None;
        }
        let mut values = Values::new();
        for v in in_order(kind, &w.values.0)? {
            values.push(*v);
        }
        if values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        if let Some(units) = &w.units {
            let units = in_order(kind, &units.0)?;
            if kind.quantities().iter().zip(units).any(|(q, u)| u.as_ref() != q.unit) {
                return None;
            }
        }
        let observed_at = parse_timestamp(&w.observed_at).ok()?;
        Some(Observation {
            sensor_id: w.id.as_ref().into(),
            kind,
            seq: w.seq,
            observed_at,
            location: GeoPoint { lat: w.location.lat, lon: w.location.lon },
            district: w.district.as_ref().into(),
            values,
        })
    }
}

const TOP_LEVEL_FIELDS: [&str; 8] = ["id", "type", "seq", "observedAt", "district", "location", "values", "units"];

fn wrong_type(path: &str, expected: &'static str, found: &Value) -> DecodeError {
    DecodeError::WrongType { path: path.to_owned(), expected, found: json_type(found) }
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, DecodeError> {
    v.as_object().ok_or_else(|| wrong_type(path, "an object", v))
}

fn field<'a>(obj: &'a Map<String, Value>, parent: &str, name: &str) -> Result<&'a Value, DecodeError> {
    obj.get(name).ok_or_else(|| DecodeError::MissingField { path: format!("{parent}.{name}") })
}

fn string<'a>(obj: &'a Map<String, Value>, parent: &str, name: &str) -> Result<&'a str, DecodeError> {
    let v = field(obj, parent, name)?;
    v.as_str().ok_or_else(|| wrong_type(&format!("{parent}.{name}"), "a string", v))
}

fn coordinate(location: &Map<String, Value>, name: &'static str, limit: f64) -> Result<f64, DecodeError> {
    let v = field(location, "$.location", name)?;
    let x = v.as_f64().ok_or_else(|| wrong_type(&format!("$.location.{name}"), "a number", v))?;
    if (-limit..=limit).contains(&x) {
        Ok(x)
    } else {
        Err(DecodeError::InvalidLocation { field: name, value: x })
    }
}

fn parse_timestamp(value: &str) -> Result<DateTime<Utc>, DecodeError> {
    let invalid = |reason: String| DecodeError::InvalidTimestamp { value: value.to_owned(), reason };
    if !value.ends_with('Z') {
        return Err(invalid("the offset must be 'Z' (UTC)".to_owned()));
    }
    DateTime::parse_from_rfc3339(value).map(|t| t.with_timezone(&Utc)).map_err(|e| invalid(e.to_string()))
}

fn json_type(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

fn push_display(out: &mut Vec<u8>, v: impl Display) {
    use std::io::Write as _;
    // Writing into a Vec<u8> cannot fail.
    let _ = write!(out, "{v}");
}

/// Shortest decimal that parses back to the same `f64` ([`crate::fastfmt::push_f64`]), `null`
/// if not finite.
/// `},"units":{...}}`: the end of every payload of `kind`, the same for all of them, written
/// once.
fn units_tail(kind: SensorKind) -> &'static [u8] {
    static TAILS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    let tails = TAILS.get_or_init(|| {
        SensorKind::ALL
            .iter()
            .map(|k| {
                let mut out = b"},\"units\":{".to_vec();
                for (i, q) in k.quantities().iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.push(b'"');
                    out.extend_from_slice(q.name.as_bytes());
                    out.extend_from_slice(b"\":");
                    push_json_str(&mut out, q.unit);
                }
                out.extend_from_slice(b"}}");
                out
            })
            .collect()
    });
    // ALL lists every kind in declaration order.
    tails.get(kind as usize).map_or(&b"}}"[..], Vec::as_slice)
}

fn push_number(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        let start = out.len();
        crate::fastfmt::push_f64(out, v);
        // Keep the JSON number a float ("12.0", not "12") as in the documented example.
        if !out[start..].iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
            out.extend_from_slice(b".0");
        }
    } else {
        out.extend_from_slice(b"null");
    }
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if u32::from(c) < 0x20 => push_display(out, format_args!("\\u{:04x}", u32::from(c))),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}
