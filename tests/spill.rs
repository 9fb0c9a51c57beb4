//! The disk spill of a sink against a real Mosquitto: while the broker is dead, what does
//! not fit in the memory queue goes to disk; the runtime stops with everything undelivered
//! on disk; a new runtime (another process's worth of state: nothing shared but the
//! directory) sends it all, in order, once the broker is back.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::{wait_until, Mosquitto, Subscriber};
use twin_runtime::config::{Config, DEFAULT_TOML};
use twin_runtime::Runtime;
use twins::Observation;

const DEADLINE: Duration = Duration::from_secs(30);

fn config(url: &str, dir: &std::path::Path, sensors: bool) -> Config {
    let start = DEFAULT_TOML.find("[[sensors]]").expect("sensors");
    let text = format!(
        "[runtime]\ninterval = \"20ms\"\nshutdown_grace = \"300ms\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [[sinks.mqtt]]\nname = \"mosquitto\"\nurl = \"{url}\"\nqos = 1\nqueue_capacity = 50\n\
         reconnect_min = \"50ms\"\nreconnect_max = \"200ms\"\nspill_dir = \"{}\"\nspill_max_bytes = 10000000\n{}",
        dir.display(),
        if sensors { &DEFAULT_TOML[start..] } else { "" }
    );
    Config::parse(&text, "test", &[]).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.path().extension().is_some_and(|x| x == "log")).count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_broker_spills_to_disk_and_a_restarted_runtime_sends_it_all_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spill_dir = dir.path().join("spill");
    let mut broker = Mosquitto::start_plain().await.unwrap_or_else(|e| panic!("{e}"));
    broker.kill();

    // Run 1: the broker is dead the whole time.
    let rt = Runtime::start(config(&broker.url(), &spill_dir, true)).await.unwrap_or_else(|e| panic!("{e}"));
    let sink = rt.sinks().get("mosquitto").expect("sink").clone();
    wait_until("observations to spill to disk", DEADLINE, || sink.spill_snapshot().is_some_and(|s| s.records >= 300))
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", sink.snapshot()));
    let registry = rt.registry().clone();
    let report = rt.shutdown().await;
    assert!(!report.flushed, "the broker is dead: nothing could be flushed");
    let last: BTreeMap<String, u64> =
        registry.ids().into_iter().map(|id| (id.clone(), registry.seq(&id).unwrap_or(0))).collect();
    let total: u64 = last.values().sum();
    let snap = &report.sinks[0];
    let spill = snap.spill.clone().expect("spill snapshot");
    assert_eq!((snap.queue_len, snap.in_flight, snap.dropped, snap.lost), (0, 0, 0, 0), "{snap:?}");
    assert_eq!(spill.records, total, "every observation is on disk: {spill:?}");
    assert!(segments(&spill_dir) >= 1);

    // Run 2: no sensors, the broker back: the spill is sent, oldest first.
    broker.restart().await.unwrap_or_else(|e| panic!("{e}"));
    let sub = Subscriber::connect(&broker.endpoint(), "city/sensors/#").await.unwrap_or_else(|e| panic!("{e}"));
    let rt = Runtime::start(config(&broker.url(), &spill_dir, false)).await.unwrap_or_else(|e| panic!("{e}"));
    let sink = rt.sinks().get("mosquitto").expect("sink").clone();
    sub.wait_for_count(total as usize, DEADLINE).await.unwrap_or_else(|e| panic!("{e}: {:?}", sink.snapshot()));
    wait_until("the spill to empty", DEADLINE, || sink.is_drained()).await.unwrap_or_else(|e| panic!("{e}"));
    let report = rt.shutdown().await;
    assert!(report.flushed, "{report:?}");
    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in sub.messages() {
        let o = Observation::from_mqtt_json(&m.payload).unwrap_or_else(|e| panic!("{e}"));
        got.entry(o.sensor_id.to_string()).or_default().push(o.seq);
    }
    for (id, n) in &last {
        assert_eq!(got.get(id), Some(&(1..=*n).collect::<Vec<_>>()), "{id}: every observation once, in order");
    }
    assert_eq!(segments(&spill_dir), 0, "sent segments are deleted");
    let s = report.sinks[0].spill.clone().expect("spill");
    assert_eq!((s.records, s.corrupt), (0, 0), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spill_falls_back_to_the_overflow_policy_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spill_dir = dir.path().join("spill");
    let mut broker = Mosquitto::start_plain().await.unwrap_or_else(|e| panic!("{e}"));
    broker.kill();
    let mut cfg = config(&broker.url(), &spill_dir, true);
    if let Some(sp) = cfg.sinks.mqtt[0].spill.as_mut() {
        sp.max_bytes = 1 << 20;
    }
    let rt = Runtime::start(cfg).await.unwrap_or_else(|e| panic!("{e}"));
    let sink = rt.sinks().get("mosquitto").expect("sink").clone();
    wait_until("the spill to fill and drops to start", DEADLINE, || sink.snapshot().dropped > 0)
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", sink.snapshot()));
    let snap = sink.snapshot();
    let spill = snap.spill.clone().expect("spill");
    assert!(spill.bytes <= 1 << 20 && spill.bytes > (1 << 20) - 2048, "{spill:?}");
    assert!(snap.last_error.as_deref().is_some_and(|e| e.contains("is full")), "{snap:?}");
    let report = rt.shutdown().await;
    let end = &report.sinks[0];
    assert!(end.dropped > 0);
    assert_eq!(end.lost, end.dropped, "what the policy drops is lost, and counted: {end:?}");
}
