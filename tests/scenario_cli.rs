//! `twinrt run --scenario`: the example scenario of `config/scenarios/` run through the
//! binary against the embedded default (its own MQTT broker), with its end-of-run report.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{free_port, wait_until, ChildGuard, Endpoint, Subscriber};
use twins::Observation;

const BIN: &str = env!("CARGO_BIN_EXE_twinrt");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_outage_scenario_runs_through_the_binary_and_reports_what_happened() {
    let mqtt = free_port();
    let http = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let report_path = dir.path().join("report.json");
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/config/scenarios/sink-outage.toml");
    let child = Command::new(BIN)
        .args(["run", "--scenario", scenario, "--duration", "8s", "--report-json"])
        .arg(&report_path)
        .env("TWINRT_EMBEDDED_BROKER__LISTEN", format!("127.0.0.1:{mqtt}"))
        .env("TWINRT_SINKS__MQTT__0__URL", format!("mqtt://127.0.0.1:{mqtt}"))
        .env("TWINRT_HTTP__LISTEN", format!("127.0.0.1:{http}"))
        .env("TWINRT_RUNTIME__INTERVAL", "100ms")
        .env("TWINRT_SUPERVISION__BACKOFF_MIN", "20ms")
        .env("TWINRT_LOG__LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn twinrt");
    let mut guard = ChildGuard::new(child);

    // A subscriber on the embedded broker, as soon as it listens.
    let mut sub = None;
    let start = std::time::Instant::now();
    while sub.is_none() && start.elapsed() < Duration::from_secs(10) {
        sub = Subscriber::connect(&Endpoint::plain(mqtt), "city/sensors/#").await.ok();
        if sub.is_none() {
            tokio::time::sleep(support::POLL_INTERVAL).await;
        }
    }
    let sub = sub.expect("the embedded broker listens");

    // It stops by itself after --duration (8 s); give it its shutdown grace too.
    let mut status = None;
    wait_until("twinrt to stop by itself after --duration", Duration::from_secs(30), || {
        status = guard.try_wait();
        status.is_some()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let status = status.expect("twinrt stops by itself after --duration");
    let mut child = guard.into_inner().expect("child");
    let mut stdout = String::new();
    let mut stderr = String::new();
    use std::io::Read;
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut stdout);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let _ = child.wait(); // already exited: reap it
    assert!(status.success(), "exit {status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");

    // The printed report.
    for part in ["twinrt run report", "injected:", "restarted:", "sinks:", "mqtt:embedded"] {
        assert!(stdout.contains(part), "{part} missing from the report:\n{stdout}");
    }
    // The same report as JSON.
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report_path).expect("report.json"))
        .unwrap_or_else(|e| panic!("report.json: {e}"));
    let steps = report["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 4, "{report:#}");
    assert!(steps.iter().all(|s| s["error"].is_null() && s["fault_id"].is_u64()), "{report:#}");
    let faults = report["faults"].as_array().expect("faults");
    let by_kind = |k: &str| faults.iter().find(|f| f["kind"] == k).unwrap_or_else(|| panic!("no {k} in {report:#}"));
    let fail = by_kind("fail");
    assert_eq!(fail["ended_reason"], "duration_elapsed", "{fail}");
    assert!(fail["effects"]["requests_failed"].as_u64().unwrap_or(0) > 0, "{fail}");
    let panic = by_kind("panic");
    assert_eq!((panic["ended_reason"].as_str(), panic["effects"]["panics"].as_u64()), (Some("count_reached"), Some(4)));
    let disconnect = by_kind("disconnect");
    assert_eq!(disconnect["effects"]["disconnects"], 1, "{disconnect}");
    let silence = by_kind("silence");
    assert_eq!(silence["ended_reason"], "duration_elapsed", "{silence}");
    assert!(silence["effects"]["observations_suppressed"].as_u64().unwrap_or(0) >= 10, "{silence}");

    // What restarted: Fort-de-France's four sensors.
    let restarted: Vec<&str> = report["restarts"]
        .as_array()
        .expect("restarts")
        .iter()
        .filter_map(|r| r["path"].as_str())
        .filter(|p| p.starts_with("root/twins/Fort-de-France/"))
        .collect();
    assert_eq!(restarted.len(), 4, "{report:#}");

    // The sink: retried what was refused, lost nothing, delivered everything it held.
    let sink = &report["sinks"][0];
    assert_eq!(sink["name"], "embedded");
    assert!(sink["retried"].as_u64().unwrap_or(0) > 0, "{sink}");
    assert_eq!((sink["lost"].as_u64(), sink["dropped"].as_u64()), (Some(0), Some(0)), "{sink}");
    assert_eq!(sink["undelivered"], 0, "{sink}");
    assert_eq!(report["flushed"], true);

    // And the subscriber saw every sensor's sequence without a gap (it joined a moment
    // after start, so from its first message on).
    let mut by_sensor: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for m in sub.messages() {
        let o = Observation::from_mqtt_json(&m.payload).unwrap_or_else(|e| panic!("{e}: {}", m.payload_str()));
        by_sensor.entry(o.sensor_id.to_string()).or_default().push(o.seq);
    }
    assert_eq!(by_sensor.len(), 10, "{:?}", by_sensor.keys());
    for (id, mut seqs) in by_sensor {
        seqs.sort_unstable();
        seqs.dedup();
        let first = seqs[0];
        assert_eq!(seqs, (first..first + seqs.len() as u64).collect::<Vec<_>>(), "{id}: gap");
    }
}

#[test]
fn a_bad_scenario_is_refused_with_its_step_field_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[step]]\nat = \"1s\"\nkind = \"fail\"\ntarget = \"sensor:aq-fdf-01\"\ncount = 2\n")
        .expect("write");
    let out = Command::new(BIN).args(["run", "--scenario"]).arg(&path).output().expect("run twinrt");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("step[0].target (line 4): `fail` applies to a sink"), "{err}");

    let ok = concat!(env!("CARGO_MANIFEST_DIR"), "/config/scenarios/sink-outage.toml");
    let out = Command::new(BIN).args(["run", "--scenario", ok, "--duration", "2s"]).output().expect("run twinrt");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not before --duration 2s"), "{err}");
}
