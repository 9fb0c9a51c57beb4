//! Property tests of the observation decoder, the one function that reads payloads coming
//! back from brokers (the Pulsar distributor, the Redpanda consumer): whatever the bytes, it
//! returns an observation or an error naming what is wrong and where (a JSON path), and
//! never panics. Valid observations survive an encode/decode round trip unchanged.

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use twins::{DecodeError, GeoPoint, Observation, SensorKind};

fn kind() -> impl Strategy<Value = SensorKind> {
    prop::sample::select(SensorKind::ALL.to_vec())
}

prop_compose! {
    fn observation()(
        kind in kind(),
        id in "[a-zA-Z0-9][a-zA-Z0-9_.:é-]{0,40}",
        seq in 1u64..u64::MAX,
        secs in 0i64..4_102_444_800,
        millis in 0u32..1000,
        lat in -90.0f64..=90.0,
        lon in -180.0f64..=180.0,
        district in "[\\PC]{0,30}",
        raw in prop::collection::vec(-1.0e12f64..1.0e12, 8),
    ) -> Observation {
        let n = kind.quantities().len();
        Observation {
            sensor_id: id.into(),
            kind,
            seq,
            observed_at: Utc.timestamp_opt(secs, millis * 1_000_000).single().expect("in range"),
            location: GeoPoint { lat, lon },
            district: district.into(),
            values: twins::Values::try_from_slice(&raw[..n]).expect("no kind has more than 7 quantities"),
        }
    }
}

/// An error names where the problem is (a JSON path) or says the document is not JSON.
fn assert_names_the_place(e: &DecodeError) {
    let msg = e.to_string();
    assert!(!msg.is_empty());
    assert!(msg.starts_with('$') || msg.starts_with("invalid observation JSON"), "{msg}");
}

proptest! {
    // No regression files written into the source tree: a failure prints its minimal input.
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn valid_observations_round_trip(obs in observation()) {
        let bytes = obs.to_mqtt_json();
        let back = Observation::from_mqtt_json(&bytes).map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&bytes))))?;
        prop_assert_eq!(back, obs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Err(e) = Observation::from_mqtt_json(&bytes) {
            assert_names_the_place(&e);
        }
    }

    /// Valid payloads cut short, with bytes flipped, or with a byte inserted.
    #[test]
    fn damaged_payloads_are_refused_with_a_reason(
        obs in observation(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        insert in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
    ) {
        let mut bytes = obs.to_mqtt_json();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if let Some((at, b)) = insert {
            let i = at.index(bytes.len());
            bytes.insert(i, b);
        }
        let keep = cut.index(bytes.len() + 1);
        bytes.truncate(keep.max(1));
        prop_assert_eq!(
            Observation::from_mqtt_json(&bytes).ok(),
            Observation::from_mqtt_json_checked(&bytes).ok(),
            "the fast path disagrees on {}", String::from_utf8_lossy(&bytes)
        );
        match Observation::from_mqtt_json(&bytes) {
            Ok(o) => prop_assert!(o.seq >= 1 && !o.sensor_id.is_empty()),
            Err(e) => assert_names_the_place(&e),
        }
    }

    /// Well-formed JSON of the wrong shape: every field replaced by another JSON value.
    #[test]
    fn wrong_shapes_name_the_field(
        obs in observation(),
        field in prop::sample::select(vec!["id", "type", "seq", "observedAt", "district", "location", "values", "units"]),
        replacement in prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            "[\\PC]{0,12}".prop_map(serde_json::Value::String),
            Just(serde_json::json!([])),
            Just(serde_json::json!({"x": 1})),
        ],
    ) {
        let mut doc: serde_json::Value = serde_json::from_slice(&obs.to_mqtt_json()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        doc[field] = replacement;
        let bytes = serde_json::to_vec(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(Observation::from_mqtt_json(&bytes).ok(), Observation::from_mqtt_json_checked(&bytes).ok());
        match Observation::from_mqtt_json(&bytes) {
            Ok(_) => {}
            Err(e) => {
                assert_names_the_place(&e);
                let msg = e.to_string();
                prop_assert!(msg.contains(field) || msg.starts_with("$.type") || msg.starts_with("$.values") || msg.starts_with("$.units"), "{}: {}", field, msg);
            }
        }
    }

    /// The decoder's fast path (typed, borrowing) accepts exactly what the checked path
    /// accepts, with the same result: payloads re-encoded with keys in any order, members
    /// repeated, `units` dropped or null, strings escaped, numbers written as integers.
    #[test]
    fn the_fast_path_agrees_with_the_checked_path(
        obs in observation(),
        order in Just((0..8usize).collect::<Vec<_>>()).prop_shuffle(),
        repeat in proptest::option::of(0..8usize),
        units in 0..3u8,
        escape in any::<bool>(),
        whole in any::<bool>(),
    ) {
        let doc: serde_json::Value = serde_json::from_slice(&obs.to_mqtt_json()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let members: Vec<(String, serde_json::Value)> = doc.as_object().map(|m| m.clone().into_iter().collect()).unwrap_or_default();
        let mut parts = Vec::new();
        for &i in &order {
            let Some((k, v)) = members.get(i) else { continue };
            if k == "units" && units == 1 {
                continue;
            }
            let v = if k == "units" && units == 2 { serde_json::Value::Null } else { v.clone() };
            let mut text = v.to_string();
            if whole && k == "values" {
                text = text.replace(".0,", ",").replace(".0}", "}");
            }
            if escape && v.is_string() {
                let s = v.as_str().unwrap_or_default();
                text = format!("\"{}\"", s.encode_utf16().map(|u| format!("\\u{u:04x}")).collect::<String>());
            }
            parts.push(format!("{}:{}", serde_json::Value::String(k.clone()), text));
            if repeat == Some(i) {
                parts.push(format!("{}:{}", serde_json::Value::String(k.clone()), text));
            }
        }
        let bytes = format!("{{{}}}", parts.join(",")).into_bytes();
        let checked = Observation::from_mqtt_json_checked(&bytes).ok();
        prop_assert_eq!(Observation::from_mqtt_json(&bytes).ok(), checked.clone(), "on {}", String::from_utf8_lossy(&bytes));
        if units != 2 && members.len() == 8 {
            prop_assert_eq!(checked, Some(obs), "on {}", String::from_utf8_lossy(&bytes));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The exact-layout path reads what twinrt writes, as the checked path does, with or
    /// without units; and on any one byte changed, removed or inserted, it either gives the
    /// checked path's result or gives up (then the next paths decide).
    #[test]
    fn the_exact_layout_path_agrees_with_the_checked_path(
        obs in observation(),
        drop_units in any::<bool>(),
        at in any::<prop::sample::Index>(),
        edit in 0..3u8,
        byte in prop::sample::select(vec![b'"', b'\\', b'0', b'1', b'9', b'-', b'+', b'.', b'e', b'E', b' ', b'}', b'{', b',', b':', b'x', 0x1f, 0xc3, 0xff]),
    ) {
        let mut bytes = obs.to_mqtt_json();
        if drop_units {
            let cut = bytes.windows(10).position(|w| w == b",\"units\":{").ok_or_else(|| TestCaseError::fail("no units"))?;
            bytes.truncate(cut);
            bytes.extend_from_slice(b"}");
        }
        let checked = Observation::from_mqtt_json_checked(&bytes).ok();
        match Observation::from_mqtt_json_exact(&bytes) {
            Some(exact) => prop_assert_eq!(Some(exact), checked.clone(), "canonical: {}", String::from_utf8_lossy(&bytes)),
            // It reads strings without escapes only.
            None => {
                let escaped = |s: &str| s.chars().any(|c| c < ' ' || c == '"' || c == '\\');
                prop_assert!(escaped(&obs.sensor_id) || escaped(&obs.district) || checked.is_none(), "gave up on {}", String::from_utf8_lossy(&bytes));
            }
        }
        if !obs.values.iter().all(|v| v.is_finite()) {
            return Ok(());
        }
        prop_assert_eq!(checked.as_ref(), Some(&obs));

        let i = at.index(bytes.len());
        match edit {
            0 => bytes[i] = byte,
            1 => {
                bytes.remove(i);
            }
            _ => bytes.insert(i, byte),
        }
        if let Some(exact) = Observation::from_mqtt_json_exact(&bytes) {
            prop_assert_eq!(Some(exact), Observation::from_mqtt_json_checked(&bytes).ok(), "edited: {}", String::from_utf8_lossy(&bytes));
        }
        prop_assert_eq!(Observation::from_mqtt_json(&bytes).ok(), Observation::from_mqtt_json_checked(&bytes).ok());
    }
}
