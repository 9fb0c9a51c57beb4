//! The runtime core against real brokers: an embedded rumqttd and real Mosquitto processes,
//! plain and TLS (with a CA the test makes). Every test starts its own brokers on free
//! ports and waits on conditions with deadlines, never on fixed sleeps.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use support::{free_port, wait_until, Endpoint, Mosquitto, Received, Subscriber};
use twin_runtime::config::{Config, DEFAULT_TOML};
use twin_runtime::sensor::SensorMsg;
use twin_runtime::Runtime;
use twins::Observation;

const DEADLINE: Duration = Duration::from_secs(20);

/// The default configuration's ten sensors, as TOML.
fn seed_sensors() -> &'static str {
    let start = DEFAULT_TOML.find("[[sensors]]").expect("the default config has sensors");
    &DEFAULT_TOML[start..]
}

fn config(head: &str) -> Config {
    let text = format!("{head}\n{}", seed_sensors());
    Config::parse(&text, "test config", &[]).unwrap_or_else(|e| panic!("{e}"))
}

fn sink(name: &str, url: &str, extra: &str) -> String {
    format!("[[sinks.mqtt]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n")
}

/// Decode every message, checking its topic against its content; by sensor id.
fn by_sensor(msgs: &[Received]) -> BTreeMap<String, Vec<Observation>> {
    let mut out: BTreeMap<String, Vec<Observation>> = BTreeMap::new();
    for m in msgs {
        let obs = Observation::from_mqtt_json(&m.payload)
            .unwrap_or_else(|e| panic!("undecodable payload on {}: {e}: {}", m.topic, m.payload_str()));
        assert_eq!(m.topic, format!("city/sensors/{}/{}", obs.kind.as_str(), obs.sensor_id), "topic of {obs:?}");
        out.entry(obs.sensor_id.to_string()).or_default().push(obs);
    }
    out
}

fn seqs(obs: &[Observation]) -> Vec<u64> {
    obs.iter().map(|o| o.seq).collect()
}

/// Sequence numbers that increase by exactly one.
fn assert_contiguous(broker: &str, id: &str, s: &[u64]) {
    for w in s.windows(2) {
        assert_eq!(w[1], w[0] + 1, "{broker}: {id}: sequence not contiguous: {s:?}");
    }
}

fn per_sensor_at_least(msgs: &[Received], sensors: usize, n: usize) -> bool {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for m in msgs {
        *counts.entry(m.topic.as_str()).or_default() += 1;
    }
    counts.len() >= sensors && counts.values().all(|c| *c >= n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sensor_reaches_three_brokers_at_once_over_tls_too() {
    let plain = Mosquitto::start_plain().await.unwrap_or_else(|e| panic!("{e}"));
    let tls = Mosquitto::start_tls().await.unwrap_or_else(|e| panic!("{e}"));
    let ca = tls.ca_file().expect("the TLS broker has a CA");
    let embedded = free_port();

    let sub_plain = Subscriber::connect(&plain.endpoint(), "city/sensors/#").await.unwrap_or_else(|e| panic!("{e}"));
    let sub_tls = Subscriber::connect(&tls.endpoint(), "city/sensors/#").await.unwrap_or_else(|e| panic!("{e}"));

    let cfg = config(&format!(
        "[runtime]\ninterval = \"100ms\"\nspeed = 60.0\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [embedded_broker]\nlisten = \"127.0.0.1:{embedded}\"\n{}{}{}",
        sink("embedded", &format!("mqtt://127.0.0.1:{embedded}"), ""),
        sink("mosquitto", &plain.url(), "qos = 1"),
        sink("tls", &tls.url(), &format!("ca_file = \"{}\"\nqos = 1", ca.display())),
    ));
    let rt = Runtime::start(cfg).await.unwrap_or_else(|e| panic!("{e}"));
    // The embedded broker only exists now: its subscriber joins late and checks what follows.
    let sub_embedded =
        Subscriber::connect(&Endpoint::plain(embedded), "city/sensors/#").await.unwrap_or_else(|e| panic!("{e}"));

    for (name, sub) in [("mosquitto", &sub_plain), ("tls", &sub_tls), ("embedded", &sub_embedded)] {
        sub.wait_for_messages("5 observations of each of the 10 sensors", |m| per_sensor_at_least(m, 10, 5), DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let report = rt.shutdown().await;
    assert!(report.flushed, "{report:?}");

    for (name, sub, from_start) in
        [("mosquitto", &sub_plain, true), ("tls", &sub_tls, true), ("embedded", &sub_embedded, false)]
    {
        let got = by_sensor(&sub.messages());
        assert_eq!(got.len(), 10, "{name}: sensors seen: {:?}", got.keys());
        for (id, obs) in &got {
            let s = seqs(obs);
            assert_contiguous(name, id, &s);
            if from_start {
                assert_eq!(s[0], 1, "{name}: {id} starts at 1");
            }
            // Simulated time runs 60x: consecutive observations are 6 s apart in the model.
            for w in obs.windows(2) {
                assert_eq!((w[1].observed_at - w[0].observed_at).num_seconds(), 6, "{name}: {id}");
            }
        }
    }
    // The delivery counters agree with what the subscribers saw.
    for s in &report.sinks {
        assert_eq!(s.dropped, 0, "{s:?}");
        assert_eq!(s.queue_len + s.in_flight, 0, "{s:?}");
    }
    let mosq = report.sinks.iter().find(|s| s.name == "mosquitto").expect("sink");
    sub_plain
        .wait_for_count(mosq.sent as usize, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("the subscriber should see every delivered message: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicked_sensor_is_restarted_and_continues_its_sequence() {
    let broker = Mosquitto::start_plain().await.unwrap_or_else(|e| panic!("{e}"));
    let sub = Subscriber::connect(&broker.endpoint(), "city/sensors/air-quality/aq-fdf-01")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = config(&format!(
        "[runtime]\ninterval = \"50ms\"\n[http]\nlisten = \"127.0.0.1:0\"\n[supervision]\nbackoff_min = \"50ms\"\n{}",
        sink("mosquitto", &broker.url(), "")
    ));
    let rt = Runtime::start(cfg).await.unwrap_or_else(|e| panic!("{e}"));
    let registry = rt.registry().clone();
    wait_until("aq-fdf-01 to emit 3 observations", DEADLINE, || registry.seq("aq-fdf-01").unwrap_or(0) >= 3)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let before = rt.sensor("aq-fdf-01").expect("the sensor actor runs");
    let seq_at_panic = registry.seq("aq-fdf-01").unwrap_or(0);
    before.cast(SensorMsg::Panic("test".into())).expect("cast");

    let district = rt.supervision().twins.districts.get("Fort-de-France").expect("district supervisor").clone();
    wait_until("the district supervisor to restart aq-fdf-01", DEADLINE, || {
        district.child("aq-fdf-01").is_some_and(|c| c.restarts >= 1 && c.actor_id.is_some())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", district.child("aq-fdf-01")));
    let child = district.child("aq-fdf-01").expect("child");
    let reason = child.last_failure.as_ref().map(|f| f.reason.clone()).unwrap_or_default();
    assert!(reason.contains("fault injected into sensor aq-fdf-01: test"), "reason: {reason}");

    // The new incarnation continues the sequence where the old one stopped.
    sub.wait_for_messages(
        "observations after the restart",
        |m| by_sensor(m).get("aq-fdf-01").is_some_and(|o| o.last().is_some_and(|l| l.seq >= seq_at_panic + 3)),
        DEADLINE,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let after = rt.sensor("aq-fdf-01").expect("restarted");
    assert_ne!(before.get_id(), after.get_id(), "a new actor");
    let s = seqs(&by_sensor(&sub.messages())["aq-fdf-01"]);
    assert_eq!(s[0], 1);
    assert_contiguous("mosquitto", "aq-fdf-01", &s);

    // Only that sensor restarted, and the metric says so.
    let others: u32 = rt
        .district_snapshots()
        .values()
        .flat_map(|d| d.children.iter())
        .filter(|c| &*c.id != "aq-fdf-01")
        .map(|c| c.restarts)
        .sum();
    assert_eq!(others, 0);
    let metrics = reqwest::get(format!("http://{}/metrics", rt.http_addr()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    assert!(metrics.contains("simulator_actor_restarts_total{kind=\"sensor\"} 1"), "{metrics}");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_broker_blocks_nobody_and_gets_its_queue_when_back() {
    let mut down = Mosquitto::start_plain().await.unwrap_or_else(|e| panic!("{e}"));
    let up = Mosquitto::start_plain().await.unwrap_or_else(|e| panic!("{e}"));
    let sub_up = Subscriber::connect(&up.endpoint(), "city/sensors/#").await.unwrap_or_else(|e| panic!("{e}"));
    let cfg = config(&format!(
        "[runtime]\ninterval = \"50ms\"\n[http]\nlisten = \"127.0.0.1:0\"\n{}{}",
        sink("down", &down.url(), "reconnect_min = \"50ms\"\nreconnect_max = \"200ms\"\nqueue_capacity = 100000"),
        sink("up", &up.url(), ""),
    ));
    let rt = Runtime::start(cfg).await.unwrap_or_else(|e| panic!("{e}"));
    let sinks = rt.sinks().clone();
    let down_sink = sinks.get("down").expect("sink").clone();
    wait_until("both sinks to connect", DEADLINE, || sinks.handles().iter().all(|h| h.snapshot().connected))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    down.kill();
    wait_until("the dead broker's sink to notice", DEADLINE, || !down_sink.snapshot().connected)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let seen_before = sub_up.count();
    // While one broker is dead, its queue grows and the other broker keeps receiving.
    wait_until("a queue to build up for the dead broker", DEADLINE, || down_sink.queue_len() >= 100)
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", down_sink.snapshot()));
    sub_up
        .wait_for_count(seen_before + 100, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("the live broker must keep receiving: {e}"));
    let snap = down_sink.snapshot();
    assert!(snap.last_error.is_some(), "{snap:?}");
    let ready = reqwest::get(format!("http://{}/readyz", rt.http_addr())).await.expect("GET /readyz");
    assert_eq!(ready.status(), 200, "both sinks connected once: ready");

    // The broker returns: the sink reconnects by itself and delivers what it queued.
    let queued = down_sink.queue_len() as u64;
    let sent_before = down_sink.stats.sent.get();
    down.restart().await.unwrap_or_else(|e| panic!("{e}"));
    let sub_down = Subscriber::connect(&down.endpoint(), "city/sensors/#").await.unwrap_or_else(|e| panic!("{e}"));
    wait_until("the sink to reconnect and drain its queue", DEADLINE, || {
        let s = down_sink.snapshot();
        s.connected && s.sent >= sent_before + queued
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", down_sink.snapshot()));
    assert_eq!(down_sink.snapshot().dropped, 0);
    // And new observations keep flowing to it, in order.
    sub_down
        .wait_for_messages("fresh observations", |m| per_sensor_at_least(m, 10, 3), DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let report = rt.shutdown().await;
    assert!(report.flushed, "{report:?}");
    for (id, obs) in by_sensor(&sub_up.messages()) {
        let s = seqs(&obs);
        assert_eq!(s[0], 1, "{id}");
        assert_contiguous("up", &id, &s);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_sensors_first_and_flushes_every_observation() {
    let broker = Mosquitto::start_plain().await.unwrap_or_else(|e| panic!("{e}"));
    let sub = Subscriber::connect(&broker.endpoint(), "city/sensors/#").await.unwrap_or_else(|e| panic!("{e}"));
    let cfg = config(&format!(
        "[runtime]\ninterval = \"10ms\"\nshutdown_grace = \"10s\"\n[http]\nlisten = \"127.0.0.1:0\"\n{}",
        sink("mosquitto", &broker.url(), "")
    ));
    let rt = Runtime::start(cfg).await.unwrap_or_else(|e| panic!("{e}"));
    let registry = rt.registry().clone();
    wait_until("20 observations per sensor", DEADLINE, || {
        registry.ids().iter().all(|id| registry.seq(id).unwrap_or(0) >= 20)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let report = rt.shutdown().await;
    assert!(report.flushed, "{report:?}");
    let last: BTreeMap<String, u64> =
        registry.ids().into_iter().map(|id| (id.clone(), registry.seq(&id).unwrap_or(0))).collect();
    let total: u64 = last.values().sum();
    sub.wait_for_count(total as usize, DEADLINE).await.unwrap_or_else(|e| panic!("{e}"));
    let got = by_sensor(&sub.messages());
    for (id, final_seq) in &last {
        let s = seqs(&got[id]);
        assert_eq!(s, (1..=*final_seq).collect::<Vec<_>>(), "{id}: every observation delivered once, in order");
    }
}
