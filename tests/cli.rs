//! The `twinrt` binary as a user runs it: the embedded default (its own MQTT broker, the
//! ten sensors, the HTTP server), configuration checks, SIGTERM.

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{free_port, wait_until_async, ChildGuard, Endpoint, Subscriber};

const BIN: &str = env!("CARGO_BIN_EXE_twinrt");
const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_flags_it_runs_the_embedded_default_and_stops_cleanly_on_sigterm() {
    let mqtt = free_port();
    let http = free_port();
    // The default configuration, moved to free ports and a faster interval through the
    // environment, as a service manager would.
    let child = Command::new(BIN)
        .env("TWINRT_EMBEDDED_BROKER__LISTEN", format!("127.0.0.1:{mqtt}"))
        .env("TWINRT_SINKS__MQTT__0__URL", format!("mqtt://127.0.0.1:{mqtt}"))
        .env("TWINRT_HTTP__LISTEN", format!("127.0.0.1:{http}"))
        .env("TWINRT_RUNTIME__INTERVAL", "200ms")
        .env("TWINRT_LOG__FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn twinrt");
    let mut guard = ChildGuard::new(child);
    // Read as it comes (a full pipe would stall the process), checked once it has exited.
    let stderr = guard.child_mut().and_then(|c| c.stderr.take()).expect("stderr piped");
    let log = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let base = format!("http://127.0.0.1:{http}");

    wait_until_async("GET /healthz", DEADLINE, || async {
        matches!(reqwest::get(format!("{base}/healthz")).await, Ok(r) if r.status() == 200)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let sub = Subscriber::connect(&Endpoint::plain(mqtt), "city/sensors/#").await.unwrap_or_else(|e| panic!("{e}"));
    let msgs = sub
        .wait_for_messages(
            "an observation of each of the 10 sensors",
            |m| m.iter().map(|r| r.topic.clone()).collect::<BTreeSet<_>>().len() >= 10,
            DEADLINE,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let topics: BTreeSet<String> = msgs.iter().map(|r| r.topic.clone()).collect();
    for t in
        ["city/sensors/air-quality/aq-fdf-01", "city/sensors/light/light-sch-01", "city/sensors/weather/weather-lam-01"]
    {
        assert!(topics.contains(t), "{t} missing from {topics:?}");
    }
    for m in &msgs {
        let v = m.json().unwrap_or_else(|e| panic!("{e}"));
        for field in ["id", "type", "seq", "observedAt", "location", "values"] {
            assert!(v.get(field).is_some(), "{field} missing in {v}");
        }
    }

    wait_until_async("ready", DEADLINE, || async {
        matches!(reqwest::get(format!("{base}/readyz")).await, Ok(r) if r.status() == 200)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let metrics = reqwest::get(format!("{base}/metrics")).await.expect("GET /metrics").text().await.expect("body");
    for series in [
        "simulator_observations_generated_total{type=\"air-quality\"}",
        "simulator_messages_sent_total{sink=\"embedded\"}",
        "simulator_twins_running 10",
        "simulator_sink_connected{sink=\"embedded\"} 1",
        "process_resident_memory_bytes",
    ] {
        assert!(metrics.contains(series), "{series} missing from /metrics:\n{metrics}");
    }

    let pid = guard.id().expect("pid");
    let killed = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    assert!(killed.success());
    let status = guard.terminate(DEADLINE).await.expect("twinrt exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");

    // A normal run logs no error until it is told to stop. After that, rumqttd (the embedded
    // broker) logs two errors of its own when the sink disconnects cleanly, as MQTT asks:
    // "router-drop" (any client that sends DISCONNECT, rumqttd's server/broker.rs) and
    // "no-connection id N is already gone" (the same disconnection seen twice, its
    // router/routing.rs). A client that closes without DISCONNECT is logged at INFO.
    let log = log.join().expect("stderr reader");
    let (running, stopping) = log.split_once("SIGTERM received").unwrap_or_else(|| panic!("no SIGTERM line:\n{log}"));
    assert!(stopping.contains("\"message\":\"stopped\""), "no shutdown line in the log:\n{log}");
    let errors =
        |part: &str| part.lines().filter(|l| l.contains("\"level\":\"ERROR\"")).map(String::from).collect::<Vec<_>>();
    let before = errors(running);
    assert!(before.is_empty(), "errors logged while running:\n{}", before.join("\n"));
    let after: Vec<String> = errors(stopping)
        .into_iter()
        .filter(|l| !(l.contains("rumqttd") && (l.contains("router-drop") || l.contains("is already gone"))))
        .collect();
    assert!(after.is_empty(), "errors logged while stopping:\n{}", after.join("\n"));
}

#[test]
fn check_config_lists_every_problem_with_its_path_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[runtime]\nspeed = -1\n\n[[sinks.mqtt]]\nname = \"x\"\nurl = \"mqtt://127.0.0.1:1883\"\nqos = 5\ncolour = \"red\"\n\n[[sensors]]\nid = \"a\"\ntype = \"traffic\"\ndistrict = \"Nowhere\"\n",
    )
    .expect("write");
    let out = Command::new(BIN).arg("check-config").arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "4 problems",
        "runtime.speed: must be > 0 (got -1) (line 2)",
        "sinks.mqtt[0].qos: must be 0, 1 or 2 (got 5) (line 7)",
        "sinks.mqtt[0].colour: unknown key `colour`",
        "(line 8)",
        "sensors[0].district: unknown district \"Nowhere\"",
        "(line 13)",
    ] {
        assert!(err.contains(expected), "`{expected}` missing from:\n{err}");
    }

    let ok = Command::new(BIN).args(["check-config", "config/martinique.toml"]).output().expect("run");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}

#[test]
fn print_config_prints_the_embedded_default() {
    let out = Command::new(BIN).arg("print-config").output().expect("run");
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(printed, std::fs::read_to_string("config/default.toml").expect("read"));
}
