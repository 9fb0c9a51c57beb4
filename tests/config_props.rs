//! Property tests of the configuration reader: whatever the text and the environment
//! overrides, `Config::parse` returns a configuration or a list of problems, each with a
//! message and (except for text that is not TOML at all) the key path it is about; it
//! never panics.

use proptest::prelude::*;
use twin_runtime::config::{Config, ConfigErrors, DEFAULT_TOML};

const MARTINIQUE: &str = include_str!("../config/martinique.toml");

fn check(result: Result<Config, ConfigErrors>) -> Result<(), TestCaseError> {
    match result {
        Ok(c) => {
            prop_assert!(c.runtime.speed > 0.0);
            prop_assert!(!c.runtime.interval.is_zero());
        }
        Err(e) => {
            prop_assert!(!e.problems.is_empty(), "an error lists its problems");
            for p in &e.problems {
                prop_assert!(!p.message.is_empty(), "{e}");
                // A problem names its key path, or the environment variable it came from, or
                // says the document is not TOML at all.
                prop_assert!(
                    !p.path.is_empty()
                        || p.origin.as_deref().is_some_and(|o| o.starts_with("env "))
                        || p.message.starts_with("not valid TOML"),
                    "{p:?}"
                );
            }
        }
    }
    Ok(())
}

/// A TOML scalar or small array, as text.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_filter("TOML floats", |f| f.is_finite()).prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        "[\\PC]{0,20}".prop_map(|s| toml_string(&s)),
        Just("\"5s\"".to_string()),
        Just("\"0s\"".to_string()),
        Just("\"-1s\"".to_string()),
        Just("\"127.0.0.1:0\"".to_string()),
        Just("\"mqtt://127.0.0.1:1883\"".to_string()),
        Just("\"pulsar://h\"".to_string()),
        Just("[]".to_string()),
        Just("[1, \"a\"]".to_string()),
        Just("{ a = 1 }".to_string()),
    ]
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A real configuration with one `key = value` line given another value, one line
/// deleted, or one line duplicated.
fn mutated(base: &'static str) -> impl Strategy<Value = String> {
    let lines: Vec<&'static str> = base.lines().collect();
    let n = lines.len();
    (0..n, 0..3u8, toml_value()).prop_map(move |(i, op, value)| {
        let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        match op {
            0 => {
                if let Some((k, _)) = out[i].split_once('=') {
                    out[i] = format!("{}= {value}", k);
                } else {
                    out.remove(i);
                }
            }
            1 => {
                out.remove(i);
            }
            _ => {
                let l = out[i].clone();
                out.insert(i, l);
            }
        }
        out.join("\n")
    })
}

/// An environment override of one of the keys the configuration has.
fn env_override() -> impl Strategy<Value = (String, String)> {
    let paths = prop::sample::select(vec![
        "TWINRT_RUNTIME__SEED",
        "TWINRT_RUNTIME__SPEED",
        "TWINRT_RUNTIME__INTERVAL",
        "TWINRT_RUNTIME__START",
        "TWINRT_HTTP__LISTEN",
        "TWINRT_SINKS__MQTT__0__URL",
        "TWINRT_SINKS__MQTT__0__QOS",
        "TWINRT_SINKS__MQTT__7__URL",
        "TWINRT_SENSORS__0__TYPE",
        "TWINRT_SENSORS__0__LOCATION",
        "TWINRT_SENSORS__X__ID",
        "TWINRT_NOPE",
        "TWINRT_",
        "TWINRT___",
        "TWINRT_EMBEDDED_BROKER__LISTEN",
    ]);
    (paths, "[\\PC]{0,24}").prop_map(|(k, v)| (k.to_string(), v))
}

proptest! {
    // No regression files written into the source tree: a failure prints its minimal input.
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_text_gets_a_config_or_named_problems(text in "[\\PC\\n]{0,300}") {
        check(Config::parse(&text, "fuzz", &[]))?;
    }

    #[test]
    fn a_mutated_default_config(text in mutated(DEFAULT_TOML)) {
        check(Config::parse(&text, "fuzz", &[]))?;
    }

    #[test]
    fn a_mutated_martinique_config(text in mutated(MARTINIQUE)) {
        check(Config::parse(&text, "fuzz", &[]))?;
    }

    #[test]
    fn any_environment_override(env in prop::collection::vec(env_override(), 0..4)) {
        check(Config::parse(DEFAULT_TOML, "fuzz", &env))?;
    }
}
