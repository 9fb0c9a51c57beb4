//! Property tests of the HTTP API's inputs against a running runtime (no sinks, the
//! default 10 sensors): whatever the path and the query string, the server answers 200,
//! 400 or 404 (never a 5xx, never a hang), and every error is the documented JSON error
//! naming what is wrong.

use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
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

    let mut runner = TestRunner::new(RunnerConfig { failure_persistence: None, ..RunnerConfig::default() });
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
