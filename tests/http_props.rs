//! Property tests of the HTTP API's inputs against a running runtime (no sinks, the
//! default 10 sensors): whatever the path and the query string, the server answers 200,
//! 400 or 404 (never a 5xx, never a hang), and every error is the documented JSON error
//! naming what is wrong.

use std::time::Duration;

mod support;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};
use serde_json::Value;
use twin_runtime::config::{Config, DEFAULT_TOML};
use twin_runtime::Runtime;

const CASES: usize = 300;

/// A query string: known and unknown parameters, with values that are numbers, words,
/// percent-encoded bytes or junk.
fn query() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "kind",
        "parent",
        "offset",
        "limit",
        "type",
        "district",
        "x",
        "",
        "limit[]",
        "%ff",
        "offset%00",
    ]);
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        Just("sensor".to_string()),
        Just("air-quality".to_string()),
        Just("Fort-de-France".to_string()),
        Just("root/twins".to_string()),
        "[a-zA-Z0-9%&=+/._-]{0,24}",
        prop::collection::vec(any::<u8>(), 0..8)
            .prop_map(|b| b.iter().map(|x| format!("%{x:02X}")).collect::<String>()),
    ];
    prop::collection::vec((key, value), 0..5)
        .prop_map(|kv| kv.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&"))
}

fn path() -> impl Strategy<Value = String> {
    let base = prop::sample::select(vec![
        "/api/v1/actors",
        "/api/v1/twins",
        "/api/v1/twins.geojson",
        "/api/v1/sinks",
        "/api/v1/actors/root",
        "/api/v1/actors/root/twins/Fort-de-France",
        "/api/v1/twins/aq-fdf-01",
    ]);
    let suffix = prop_oneof![
        3 => Just(String::new()),
        1 => "/[a-zA-Z0-9%._-]{1,20}",
        1 => prop::collection::vec(any::<u8>(), 1..6)
            .prop_map(|b| format!("/{}", b.iter().map(|x| format!("%{x:02X}")).collect::<String>())),
    ];
    (base, suffix, query()).prop_map(|(b, s, q)| if q.is_empty() { format!("{b}{s}") } else { format!("{b}{s}?{q}") })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_path_and_query_gets_200_400_or_404_with_a_json_error() {
    let start = DEFAULT_TOML.find("[[sensors]]").expect("sensors");
    let text = format!("[runtime]\ninterval = \"1s\"\n[http]\nlisten = \"127.0.0.1:0\"\n{}", &DEFAULT_TOML[start..]);
    let cfg = Config::parse(&text, "t", &[]).unwrap_or_else(|e| panic!("{e}"));
    let rt = Runtime::start(cfg).await.unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://{}", rt.http_addr());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");

    // Seeded: the same cases on every run (and in CI).
    let mut runner = TestRunner::new_with_rng(
        RunnerConfig { failure_persistence: None, ..RunnerConfig::default() },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let strategy = path();
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..CASES {
        let p = strategy.new_tree(&mut runner).expect("a case").current();
        let url = format!("{base}{p}");
        let resp = client.get(&url).send().await.unwrap_or_else(|e| panic!("GET {p}: {e}"));
        let status = resp.status().as_u16();
        *statuses.entry(status).or_insert(0u32) += 1;
        let body = resp.text().await.unwrap_or_else(|e| panic!("GET {p}: {e}"));
        assert!(matches!(status, 200 | 400 | 404), "GET {p}: {status}: {body}");
        if status != 200 {
            let v: Value =
                serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {p}: {status}, not JSON ({e}): {body}"));
            let code = v["error"]["code"].as_str().unwrap_or_default();
            let message = v["error"]["message"].as_str().unwrap_or_default();
            assert!(!code.is_empty() && !message.is_empty(), "GET {p}: {status}: {body}");
        }
    }
    // The generator reaches every outcome (else it tests less than it claims).
    for s in [200, 400, 404] {
        assert!(statuses.get(&s).copied().unwrap_or(0) > 0, "no {s} among {statuses:?}");
    }
    rt.shutdown().await;
}

/// A fault body: a JSON object with known and unknown fields whose values are plausible or
/// not, a JSON value that is not an object, or bytes that are not JSON.
fn fault_body() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop::sample::select(vec![
        "panic",
        "error",
        "stall",
        "fail",
        "latency",
        "disconnect",
        "out_of_range",
        "silence",
        "explode",
        "",
    ]);
    let target = prop::sample::select(vec![
        "sensor:aq-fdf-01",
        "district:Fort-de-France",
        "district:Nowhere",
        "kind:noise",
        "kind:toaster",
        "sink:none",
        "ratio:0.1",
        "ratio:7",
        "root/twins/Fort-de-France/aq-fdf-01",
        "",
        "sensor:",
    ]);
    let value = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| serde_json::json!(f)),
        prop::sample::select(vec!["1s", "0s", "-1s", "100ms", "10 years", "abc", "", "0.5"])
            .prop_map(|s| Value::String(s.into())),
        Just(serde_json::json!([1, 2])),
        Just(serde_json::json!({"x": {}})),
    ];
    let field = prop::sample::select(vec!["count", "duration", "ratio", "delay", "every", "reason", "zzz"]);
    let object =
        (proptest::option::of(kind), proptest::option::of(target), prop::collection::vec((field, value.clone()), 0..4))
            .prop_map(|(k, t, extra)| {
                let mut o = serde_json::Map::new();
                if let Some(k) = k {
                    o.insert("kind".into(), Value::String(k.into()));
                }
                if let Some(t) = t {
                    o.insert("target".into(), Value::String(t.into()));
                }
                for (f, v) in extra {
                    o.insert(f.into(), v);
                }
                serde_json::to_vec(&Value::Object(o)).unwrap_or_default()
            });
    prop_oneof![
        6 => object,
        1 => value.prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => Just(vec![b'{'; 70_000]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_fault_body_gets_201_400_or_413_and_never_breaks_the_runtime() {
    let start = DEFAULT_TOML.find("[[sensors]]").expect("sensors");
    let text = format!(
        "[runtime]\ninterval = \"1s\"\nshutdown_grace = \"2s\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [faults]\nenabled = true\ntoken = \"t0k\"\n{}",
        &DEFAULT_TOML[start..]
    );
    let cfg = Config::parse(&text, "t", &[]).unwrap_or_else(|e| panic!("{e}"));
    let rt = Runtime::start(cfg).await.unwrap_or_else(|e| panic!("{e}"));
    let url = format!("http://{}/api/v1/faults", rt.http_addr());
    // A new connection per request: after a 413 the server closes the connection without
    // reading the rest of the body, and a pooled connection would fail the next request.
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).pool_max_idle_per_host(0).build().expect("client");
    // Seeded: the same cases on every run (and in CI).
    let mut runner = TestRunner::new_with_rng(
        RunnerConfig { failure_persistence: None, ..RunnerConfig::default() },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let strategy = fault_body();
    let mut statuses = std::collections::BTreeMap::new();
    // Valid faults first (each must be accepted), then the generated cases.
    let valid = [
        r#"{"kind": "panic", "target": "sensor:aq-fdf-01"}"#,
        r#"{"kind": "silence", "target": "district:Fort-de-France", "duration": "1s"}"#,
        r#"{"kind": "out_of_range", "target": "kind:noise", "count": 2}"#,
    ];
    let cases = valid
        .iter()
        .map(|b| b.as_bytes().to_vec())
        .chain((0..CASES).map(|_| strategy.new_tree(&mut runner).expect("a case").current()));
    for (i, body) in cases.enumerate() {
        let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        let resp = client
            .post(&url)
            .bearer_auth("t0k")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {shown}: {e}"));
        let status = resp.status().as_u16();
        *statuses.entry(status).or_insert(0u32) += 1;
        let text = resp.text().await.unwrap_or_default();
        assert!(matches!(status, 201 | 400 | 413), "POST {shown}: {status}: {text}");
        if i < valid.len() {
            assert_eq!(status, 201, "POST {shown}: {text}");
        }
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {shown}: not JSON ({e}): {text}"));
        if status == 201 {
            assert!(v["id"].is_u64(), "{text}");
            // End it: the next cases start from a quiet runtime.
            let id = v["id"].as_u64().unwrap_or_default();
            let del = client.delete(format!("{url}/{id}")).bearer_auth("t0k").send().await.expect("DELETE");
            assert!(matches!(del.status().as_u16(), 200 | 204 | 404), "DELETE {id}: {}", del.status());
        } else {
            let message = v["error"]["message"].as_str().unwrap_or_default();
            assert!(!message.is_empty(), "POST {shown}: {status}: {text}");
        }
    }
    for s in [201, 400, 413] {
        assert!(statuses.get(&s).copied().unwrap_or(0) > 0, "no {s} among {statuses:?}");
    }
    // The runtime still serves and every twin is still there.
    let resp = client.get(format!("http://{}/api/v1/twins", rt.http_addr())).send().await.expect("GET");
    assert_eq!(resp.status(), 200);
    wait_for_all_running(&rt).await;
    rt.shutdown().await;
}

async fn wait_for_all_running(rt: &Runtime) {
    let ids = rt.registry().ids();
    support::wait_until("every sensor to run again after the faults", Duration::from_secs(30), || {
        ids.iter().all(|id| rt.sensor(id).is_some())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}
