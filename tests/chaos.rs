//! The chaos suite: the runtime under faults, against real Mosquitto processes.
//!
//! - Mosquitto killed with SIGKILL mid-run and restarted: a subscriber with a persistent
//!   session receives every observation (duplicates counted, none lost).
//! - 10% of the sensor actors panicked every simulated second for 30 simulated seconds:
//!   every twin keeps its state and sequence, supervisors back off and never give up within
//!   their intensity; beyond it, the district supervisor escalates and that is visible in
//!   the inspection API.
//! - A stalled sink (a broker that accepts TCP and never answers) does not slow the others.
//!
//! (Stopping InfluxDB while the Redpanda consumer runs is in tests/redpanda.rs:
//! `nothing_is_lost_when_the_proxy_or_victoria_restarts_mid_run`.)

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use rand::seq::IndexedRandom as _;
use serde_json::Value;
use support::{wait_until, Mosquitto, MosquittoOptions, Received, Subscriber, SubscriberOptions};
use twin_runtime::config::{Config, DEFAULT_TOML};
use twin_runtime::registry::Registry;
use twin_runtime::sensor::SensorMsg;
use twin_runtime::Runtime;
use twins::Observation;

const DEADLINE: Duration = Duration::from_secs(30);

fn seed_sensors() -> &'static str {
    let start = DEFAULT_TOML.find("[[sensors]]").expect("the default config has sensors");
    &DEFAULT_TOML[start..]
}

fn parse(text: &str) -> Config {
    Config::parse(text, "test config", &[]).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn seqs_by_sensor(msgs: &[Received]) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in msgs {
        let obs = Observation::from_mqtt_json(&m.payload).unwrap_or_else(|e| panic!("{}: {e}", m.topic));
        out.entry(obs.sensor_id.to_string()).or_default().push(obs.seq);
    }
    out
}

fn final_seqs(r: &Registry) -> BTreeMap<String, u64> {
    r.ids().into_iter().map(|id| (id.clone(), r.seq(&id).unwrap_or(0))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_killed_mid_run_loses_nothing_for_a_persistent_subscriber() {
    // Persistence with a one-second autosave: the subscriber's session (taken well over a
    // second before the kill) survives SIGKILL, so the broker queues for it while it is away.
    let mut broker = Mosquitto::start_with(MosquittoOptions::plain().with_persistence(Some(1)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let sub = Subscriber::connect_with(
        &broker.endpoint(),
        "city/sensors/#",
        SubscriberOptions::persistent(&format!("chaos-sub-{}", std::process::id())),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let subscribed_at = std::time::SystemTime::now();
    let text = format!(
        "[runtime]\ninterval = \"1s\"\nshutdown_grace = \"10s\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [[sinks.mqtt]]\nname = \"mosquitto\"\nurl = \"{}\"\nqos = 1\nreconnect_min = \"50ms\"\nreconnect_max = \"300ms\"\n{}",
        broker.url(),
        seed_sensors()
    );
    let rt = Runtime::start(parse(&text)).await.unwrap_or_else(|e| panic!("{e}"));
    let sink = rt.sinks().get("mosquitto").expect("sink").clone();
    let registry = rt.registry().clone();
    wait_until("3 observations per sensor", DEADLINE, || registry.ids().iter().all(|id| registry.seq(id) >= Some(3)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Wait for an autosave after the subscription (the database file written since), then
    // kill at a quiet moment (everything the sink sent has reached the subscriber): what
    // was sent is delivered, what comes next must wait in twinrt's queue.
    let db = broker.dir().join("data").join("mosquitto.db");
    wait_until("Mosquitto to save the subscriber's session", DEADLINE, || {
        std::fs::metadata(&db).and_then(|m| m.modified()).is_ok_and(|t| t > subscribed_at)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", db.display()));
    wait_until("a quiet moment", DEADLINE, || {
        let s = sink.snapshot();
        s.queue_len == 0 && s.in_flight == 0 && sub.count() as u64 == s.sent
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", sink.snapshot()));
    broker.kill();
    wait_until("the sink to see the broker gone", DEADLINE, || !sink.snapshot().connected)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until("observations to queue while the broker is dead", DEADLINE, || sink.queue_len() >= 15)
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", sink.snapshot()));
    broker.restart().await.unwrap_or_else(|e| panic!("{e}"));
    wait_until("the sink to reconnect and drain", DEADLINE, || {
        let s = sink.snapshot();
        s.connected && s.queue_len == 0
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", sink.snapshot()));
    let report = rt.shutdown().await;
    assert!(report.flushed, "{report:?}");
    let last = final_seqs(&registry);
    let total: u64 = last.values().sum();
    sub.wait_for_messages(
        "every observation at the subscriber",
        |m| {
            let got = seqs_by_sensor(m);
            last.iter().all(|(id, n)| got.get(id).is_some_and(|s| s.contains(n)))
        },
        DEADLINE,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let got = seqs_by_sensor(&sub.messages());
    let mut duplicates = 0;
    for (id, n) in &last {
        let mut s = got.get(id).cloned().unwrap_or_default();
        let received = s.len();
        s.sort_unstable();
        s.dedup();
        duplicates += received - s.len();
        assert_eq!(s, (1..=*n).collect::<Vec<_>>(), "{id}: every observation, none lost");
    }
    let snap = report.sinks.iter().find(|s| s.name == "mosquitto").expect("sink");
    assert_eq!(snap.dropped, 0, "{snap:?}");
    eprintln!(
        "kill -9: {total} observations, {} queued and resent by twinrt ({} retries), {duplicates} duplicates at the subscriber",
        snap.sent, snap.retries
    );
}

/// Fleets in three districts, fast: 30 simulated seconds = 3 real seconds at speed 10.
fn storm_config(url: &str, max_restarts: u32) -> Config {
    parse(&format!(
        "[runtime]\ninterval = \"100ms\"\nspeed = 10.0\nstart = \"2026-06-21T10:00:00Z\"\nshutdown_grace = \"10s\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n\
         [supervision]\nmax_restarts = {max_restarts}\nwithin = \"10s\"\nbackoff_min = \"10ms\"\nbackoff_max = \"100ms\"\n\
         [[sinks.mqtt]]\nname = \"mosquitto\"\nurl = \"{url}\"\nqos = 1\n\
         [[fleets]]\ntype = \"light\"\ndistrict = \"Fort-de-France\"\ncount = 20\n\
         [[fleets]]\ntype = \"parking\"\ndistrict = \"Le Lamentin\"\ncount = 20\n\
         [[fleets]]\ntype = \"noise\"\ndistrict = \"Schœlcher\"\ncount = 20\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_storm_keeps_every_twin_and_escalates_only_beyond_the_intensity() {
    let broker = Mosquitto::start_plain().await.unwrap_or_else(|e| panic!("{e}"));
    let sub = Subscriber::connect(&broker.endpoint(), "city/sensors/#").await.unwrap_or_else(|e| panic!("{e}"));
    let rt = Runtime::start(storm_config(&broker.url(), 200)).await.unwrap_or_else(|e| panic!("{e}"));
    let registry = rt.registry().clone();
    let ids = registry.ids();
    assert_eq!(ids.len(), 60);
    wait_until("every sensor to emit", DEADLINE, || ids.iter().all(|id| registry.seq(id) >= Some(1)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // 30 rounds, one per simulated second (100 ms real): 10% of the sensors panic. A sensor
    // panicked in an earlier round and not restarted yet is not panicked again (its
    // mailbox dies with it), so every panic counted is one restart owed.
    let mut panics = 0u64;
    let mut panicked: std::collections::HashMap<String, ractor::ActorId> = std::collections::HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for round in 0..30 {
        tick.tick().await;
        let chosen: Vec<String> = ids.choose_multiple(&mut rand::rng(), ids.len() / 10).cloned().collect();
        for id in chosen {
            // A sensor still waiting for its restart is not running: nothing to panic.
            let Some(actor) = rt.sensor(&id) else { continue };
            if panicked.get(&id) == Some(&actor.get_id()) {
                continue;
            }
            if actor.cast(SensorMsg::Panic(format!("storm round {round}"))).is_ok() {
                panicked.insert(id, actor.get_id());
                panics += 1;
            }
        }
    }
    let tree = rt.supervision().twins.clone();
    let restarts = || tree.districts.values().map(|d| d.total_restarts()).sum::<u64>();
    wait_until("every panic to be restarted", DEADLINE, || restarts() == panics)
        .await
        .unwrap_or_else(|e| panic!("{e}: {} restarts for {panics} panics", restarts()));
    assert!(panics >= 100, "the storm panicked {panics} actors");
    for (name, d) in &tree.districts {
        assert!(d.escalated().is_none(), "{name} gave up within its intensity: {:?}", d.escalated());
    }
    assert!(tree.twins.escalated().is_none() && tree.twins.total_restarts() == 0, "no district restarted");
    // Sequences carry on: wait for everyone to emit twice more, then stop.
    let after: BTreeMap<String, u64> = final_seqs(&registry);
    wait_until("every sensor to emit after the storm", DEADLINE, || {
        after.iter().all(|(id, n)| registry.seq(id).is_some_and(|s| s >= n + 2))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let metrics = rt.metrics().render();
    assert!(metrics.contains(&format!("simulator_actor_restarts_total{{kind=\"sensor\"}} {panics}")), "{metrics}");
    let report = rt.shutdown().await;
    assert!(report.flushed, "{report:?}");
    let last = final_seqs(&registry);
    let total: u64 = last.values().sum();
    sub.wait_for_count(total as usize, DEADLINE).await.unwrap_or_else(|e| panic!("{e}"));
    let got = seqs_by_sensor(&sub.messages());
    for (id, n) in &last {
        assert_eq!(got.get(id), Some(&(1..=*n).collect::<Vec<_>>()), "{id}: state and sequence kept across panics");
    }

    // Beyond the intensity (3 restarts in 10 s), the district supervisor escalates; the twins
    // supervisor restarts it with its sensors, whose twins still carry on.
    let rt = Runtime::start(storm_config(&broker.url(), 3)).await.unwrap_or_else(|e| panic!("{e}"));
    let registry = rt.registry().clone();
    // Districts go by their name without the article: "Lamentin".
    let lamentin: Vec<String> =
        registry.ids().into_iter().filter(|id| registry.district(id).as_deref() == Some("Lamentin")).collect();
    wait_until("every sensor to emit", DEADLINE, || lamentin.iter().all(|id| registry.seq(id) >= Some(2)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lamentin.len(), 20);
    let before: BTreeMap<String, u64> = lamentin.iter().map(|id| (id.clone(), registry.seq(id).unwrap_or(0))).collect();
    for id in lamentin.iter().take(5) {
        if let Some(a) = rt.sensor(id) {
            let _ = a.cast(SensorMsg::Panic("beyond the intensity".into()));
        }
    }
    let twins = rt.supervision().twins.clone();
    wait_until("the district to escalate and be restarted", DEADLINE, || {
        twins.twins.child("Lamentin").is_some_and(|c| c.restarts >= 1)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", twins.twins.snapshot()));
    let district = twins.districts.get("Lamentin").expect("district stats");
    let escalation = district.escalated().expect("the district supervisor escalated");
    assert!(escalation.reason.contains("intensity") || escalation.reason.contains("restart"), "{escalation:?}");
    let url = format!("http://{}/api/v1/actors/root/twins/Lamentin", rt.http_addr());
    let body: Value = reqwest::get(&url).await.expect("GET").json().await.expect("JSON");
    assert!(body["actor"]["restarts"].as_u64().is_some_and(|r| r >= 1), "{body}");
    assert!(body["actor"]["last_failure"]["reason"].is_string(), "{body}");
    wait_until("the district's sensors to carry on", DEADLINE, || {
        before.iter().all(|(id, n)| registry.seq(id).is_some_and(|s| s > *n + 1))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sink_does_not_slow_the_others() {
    // A "broker" that accepts connections and never answers: MQTT never gets a CONNACK,
    // HTTP never gets a response.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hole_addr = hole.local_addr().expect("addr");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            held.push(s);
        }
    });
    let broker = Mosquitto::start_plain().await.unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "[runtime]\ninterval = \"50ms\"\nshutdown_grace = \"2s\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [[sinks.mqtt]]\nname = \"healthy\"\nurl = \"{}\"\nqos = 1\n\
         [[sinks.mqtt]]\nname = \"stalled-mqtt\"\nurl = \"mqtt://{hole_addr}\"\nqueue_capacity = 1000\n\
         [[sinks.ngsild]]\nname = \"stalled-http\"\nurl = \"http://{hole_addr}\"\nqueue_capacity = 1000\nrequest_timeout = \"30s\"\n\
         [[fleets]]\ntype = \"light\"\ndistrict = \"Fort-de-France\"\ncount = 50\n",
        broker.url()
    );
    let rt = Runtime::start(parse(&text)).await.unwrap_or_else(|e| panic!("{e}"));
    let healthy = rt.sinks().get("healthy").expect("sink").clone();
    let stalled: Vec<_> =
        ["stalled-mqtt", "stalled-http"].iter().map(|n| rt.sinks().get(n).expect("sink").clone()).collect();
    let registry = rt.registry().clone();
    let generated = || registry.ids().iter().map(|id| registry.seq(id).unwrap_or(0)).sum::<u64>();
    wait_until("the healthy sink to connect and the stalled queues to fill", DEADLINE, || {
        healthy.snapshot().connected && stalled.iter().all(|s| s.queue_len() >= 1000)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", stalled.iter().map(|s| s.snapshot()).collect::<Vec<_>>()));
    // Over two seconds with both stalled sinks full (dropping), the healthy one keeps pace
    // with what the sensors produce (~1,000 observations a second).
    let (g0, s0) = (generated(), healthy.stats.sent.get());
    // A measurement window (not a wait for an event): two seconds of production.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (g1, s1, q1) = (generated(), healthy.stats.sent.get(), healthy.queue_len() as u64);
    let produced = g1 - g0;
    let delivered = s1 - s0;
    eprintln!("stalled sinks: {produced} produced, {delivered} delivered by the healthy sink, {q1} queued");
    assert!(produced >= 1500, "the sensors produced {produced}");
    assert!(delivered * 10 >= produced * 9, "the healthy sink delivered {delivered} of {produced} (< 90%)");
    for s in &stalled {
        let snap = s.snapshot();
        assert!(!snap.connected && snap.dropped > 0 && snap.sent == 0, "{snap:?}");
    }
    let report = rt.shutdown().await;
    let h = report.sinks.iter().find(|s| s.name == "healthy").expect("healthy");
    assert_eq!((h.queue_len, h.in_flight, h.dropped), (0, 0, 0), "{h:?}");
    holder.abort();
}
