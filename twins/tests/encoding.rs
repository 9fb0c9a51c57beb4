//! MQTT JSON encoding: round trip, strict decoding, and validation against the JSON Schema
//! in `schema/observation.schema.json` (draft 2020-12, validated offline).

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};
use twins::{geo, DecodeError, GeoPoint, Observation, SensorKind, SensorSpec, Twin};

const SCHEMA: &str = include_str!("../schema/observation.schema.json");

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(SCHEMA).expect("schema is JSON");
    assert!(jsonschema::meta::is_valid(&schema), "schema is a valid draft 2020-12 schema");
    jsonschema::validator_for(&schema).expect("schema compiles")
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 1, 5, 0).single().expect("valid date")
}

/// A few observations of every kind, at whole-second and sub-second times.
fn samples() -> Vec<Observation> {
    let mut out = Vec::new();
    for (i, kind) in SensorKind::ALL.into_iter().enumerate() {
        for district in ["Fort-de-France", "Le Robert"] {
            let d = geo::district(district).expect("district");
            let spec = SensorSpec {
                id: format!("{}-{}-\"q\"-{i}", kind.as_str(), d.code).into(),
                kind,
                district: d.name.clone().into(),
                location: d.place(i as u64, 9),
            };
            let mut twin = Twin::new(spec, 1);
            for step in 0..5 {
                let at = start()
                    + Duration::minutes(37 * step)
                    + Duration::milliseconds(250 * step)
                    + Duration::nanoseconds(step);
                out.push(twin.step(at));
            }
        }
    }
    out
}

fn encoded(o: &Observation) -> Value {
    serde_json::from_slice(&o.to_mqtt_json()).expect("encoding is JSON")
}

fn decode(v: &Value) -> Result<Observation, DecodeError> {
    Observation::from_mqtt_json(v.to_string().as_bytes())
}

#[test]
fn every_encoding_round_trips_and_validates() {
    let v = validator();
    let mut buf = Vec::new();
    for o in samples() {
        let bytes = o.to_mqtt_json();
        buf.clear();
        o.write_mqtt_json(&mut buf);
        assert_eq!(buf, bytes, "write_mqtt_json == to_mqtt_json");
        let value: Value = serde_json::from_slice(&bytes).expect("JSON");
        if let Err(e) = v.validate(&value) {
            panic!("{} does not validate: {e}", String::from_utf8_lossy(&bytes));
        }
        assert_eq!(Observation::from_mqtt_json(&bytes).expect("decodes"), o);
        for q in o.kind.quantities() {
            assert_eq!(value["values"][q.name].as_f64(), o.value(q.name));
            assert_eq!(value["units"][q.name], q.unit);
        }
    }
}

#[test]
fn the_encoding_matches_the_documented_example() {
    let o = Observation {
        sensor_id: "aq-fdf-01".to_owned().into(),
        kind: SensorKind::AirQuality,
        seq: 42,
        observed_at: start(),
        location: GeoPoint { lat: 14.604, lon: -61.067 },
        district: "Fort-de-France".to_owned().into(),
        values: twins::Values::from([31.2, 12.0, 18.5, 0.0]),
    };
    assert_eq!(o.mqtt_topic(), "city/sensors/air-quality/aq-fdf-01");
    assert_eq!(
        encoded(&o),
        json!({"id":"aq-fdf-01","type":"air-quality","seq":42,"observedAt":"2026-11-25T01:05:00Z",
               "district":"Fort-de-France","location":{"lat":14.604,"lon":-61.067},
               "values":{"pm10":31.2,"pm2_5":12.0,"no2":18.5,"h2s":0.0},
               "units":{"pm10":"ug/m3","pm2_5":"ug/m3","no2":"ug/m3","h2s":"[ppm]"}})
    );
    let text = String::from_utf8(o.to_mqtt_json()).expect("utf-8");
    assert!(
        text.starts_with(r#"{"id":"aq-fdf-01","type":"air-quality","seq":42,"observedAt":"2026-11-25T01:05:00Z""#),
        "{text}"
    );
    let ms = Observation { observed_at: start() + Duration::milliseconds(120), ..o };
    assert_eq!(encoded(&ms)["observedAt"], "2026-11-25T01:05:00.120Z");
}

#[test]
fn out_of_range_values_and_missing_units_are_accepted() {
    let o = samples().remove(0);
    let mut v = encoded(&o);
    v["values"]["vehicle_flow"] = json!(-5.0);
    v.as_object_mut().expect("object").remove("units");
    let decoded = decode(&v).expect("faults may produce out-of-range values");
    assert_eq!(decoded.value("vehicle_flow"), Some(-5.0));
    assert!(validator().is_valid(&v));
}

/// Applies `edit` to a valid air-quality encoding and checks both the decoder and the schema
/// reject it, the decoder's message containing `expect`.
fn rejected(edit: impl Fn(&mut Value), expect: &str) {
    let o = samples().into_iter().find(|o| o.kind == SensorKind::AirQuality).expect("aq sample");
    let mut v = encoded(&o);
    edit(&mut v);
    let err = decode(&v).expect_err("must be rejected");
    let msg = err.to_string();
    assert!(msg.contains(expect), "message {msg:?} should contain {expect:?}");
    assert!(!validator().is_valid(&v), "schema must reject too: {v}");
}

#[test]
fn invalid_payloads_are_rejected_with_a_clear_error() {
    rejected(|v| v["type"] = json!("pollution"), "$.type: unknown sensor kind \"pollution\"");
    rejected(|v| drop(v["values"].as_object_mut().map(|m| m.remove("pm10"))), "$.values.pm10: missing");
    rejected(|v| v["values"]["pm10"] = json!("31.2"), "$.values.pm10: expected a number, found string");
    rejected(|v| v["values"]["pm10"] = Value::Null, "$.values.pm10: expected a number, found null");
    rejected(|v| v["values"]["ozone"] = json!(1.0), "$.values.ozone: not a quantity");
    rejected(|v| v["units"]["pm10"] = json!("mg/m3"), "$.units.pm10: expected \"ug/m3\"");
    rejected(|v| v["observedAt"] = json!("2026-11-25T01:05:00+01:00"), "$.observedAt");
    rejected(|v| v["observedAt"] = json!("yesterday"), "$.observedAt");
    rejected(|v| v["seq"] = json!(0), "$.seq: expected an integer >= 1, found number 0");
    rejected(|v| v["seq"] = json!(-1), "$.seq");
    rejected(|v| v["seq"] = json!(1.5), "$.seq");
    rejected(|v| v["id"] = json!("a/b"), "$.id");
    rejected(|v| v["location"]["lat"] = json!(123.0), "$.location.lat");
    rejected(|v| v["colour"] = json!("red"), "$.colour: unknown field");
    rejected(|v| v["location"]["alt"] = json!(3.0), "$.location.alt: unknown field");
    rejected(|v| drop(v.as_object_mut().map(|m| m.remove("district"))), "$.district: missing field");
    rejected(|v| v["district"] = json!(972), "$.district: expected a string, found number 972");
    rejected(|v| v["values"] = json!([1, 2]), "$.values: expected an object, found an array");
}

#[test]
fn syntax_errors_say_where() {
    let err = Observation::from_mqtt_json(b"{\"id\":\"x\",\n \"type\": traffic}").expect_err("not JSON");
    assert!(matches!(err, DecodeError::Json(_)));
    assert!(err.to_string().contains("line 2 column"), "{err}");
    let err = Observation::from_mqtt_json(b"").expect_err("empty");
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn schema_requires_exactly_each_kinds_values_and_units() {
    let v = validator();
    let schema: Value = serde_json::from_str(SCHEMA).expect("schema is JSON");
    let branches = schema["allOf"].as_array().expect("allOf");
    assert_eq!(branches.len(), SensorKind::ALL.len());
    for kind in SensorKind::ALL {
        let branch = branches
            .iter()
            .find(|b| b["if"]["properties"]["type"]["const"] == kind.as_str())
            .expect("one branch per kind");
        let names: Vec<&str> = kind.quantities().iter().map(|q| q.name).collect();
        assert_eq!(branch["then"]["properties"]["values"]["required"], json!(names));
        for q in kind.quantities() {
            assert_eq!(branch["then"]["properties"]["units"]["properties"][q.name]["const"], q.unit);
        }
        // Dropping any one value of a real observation makes it invalid.
        let o = samples().into_iter().find(|o| o.kind == kind).expect("sample");
        for q in kind.quantities() {
            let mut e = encoded(&o);
            e["values"].as_object_mut().expect("values").remove(q.name);
            assert!(!v.is_valid(&e), "{kind}: schema must require {}", q.name);
            assert!(matches!(decode(&e), Err(DecodeError::MissingValue { .. })));
        }
    }
}
