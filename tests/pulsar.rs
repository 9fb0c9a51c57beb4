//! The Pulsar half of the data flow, end to end, against the Pulsar test broker
//! (`support::pulsar`, itself checked against the `pulsar` crate and Apache's client in
//! tests/pulsar_broker.rs), real Mosquitto and the NGSI-LD test server:
//! sensors -> Pulsar sink -> broker -> distributor -> Mosquitto + NGSI-LD, in per-sensor
//! order, and no loss when Pulsar or a target stops mid-run.
//!
//! A runtime's shutdown stops the distributor before the sinks flush, so what the Pulsar
//! sink delivers last is still in the topics: each test then runs a second runtime with the
//! distributor alone, which resumes the durable subscription and drains it.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::ngsild_server::NgsiLdServer;
use support::pulsar::PulsarBroker;
use support::{wait_until, Mosquitto, Subscriber};
use twin_runtime::config::{pulsar_topic, Config, DEFAULT_TOML, PULSAR_TOPIC_PREFIX};
use twin_runtime::registry::Registry;
use twin_runtime::Runtime;
use twins::{GeoPoint, Observation, SensorKind};

const DEADLINE: Duration = Duration::from_secs(60);
const SUBSCRIPTION: &str = "twinrt-distributor";

/// The default configuration's 10 sensors.
fn sensors_toml() -> &'static str {
    let start = DEFAULT_TOML.find("[[sensors]]").expect("the default config has sensors");
    &DEFAULT_TOML[start..]
}

fn runtime_toml() -> &'static str {
    "[runtime]\ninterval = \"50ms\"\nstart = \"2026-06-21T10:00:00Z\"\nshutdown_grace = \"10s\"\n\
     [http]\nlisten = \"127.0.0.1:0\"\n"
}

/// The distributor and its two targets (which take nothing from sensors).
fn distributor_toml(pulsar: &str, mqtt: &str, ngsild: &str) -> String {
    format!(
        "[[sinks.mqtt]]\nname = \"mosquitto\"\nurl = \"{mqtt}\"\nconsumer_only = true\n\
         [[sinks.ngsild]]\nname = \"orion\"\nurl = \"{ngsild}\"\nconsumer_only = true\nbatch_size = 50\nlinger = \"20ms\"\n\
         [pulsar_distributor]\nurl = \"{pulsar}\"\ntargets = [\"mosquitto\", \"orion\"]\nmax_in_flight = 500\n"
    )
}

fn producer_toml(pulsar: &str) -> String {
    format!("[[sinks.pulsar]]\nname = \"pulsar\"\nurl = \"{pulsar}\"\nbatch_size = 100\nlinger = \"10ms\"\n")
}

fn parse(text: &str) -> Config {
    Config::parse(text, "test", &[]).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The servers of every test: the Pulsar test broker, Mosquitto with a subscriber on
/// `city/sensors/#`, and the NGSI-LD test server.
struct Servers {
    broker: PulsarBroker,
    mosquitto: Mosquitto,
    ngsild: NgsiLdServer,
    sub: Subscriber,
}

impl Servers {
    async fn start() -> Servers {
        let broker = PulsarBroker::start().await.unwrap_or_else(|e| panic!("{e}"));
        let mosquitto = Mosquitto::start_plain().await.unwrap_or_else(|e| panic!("{e}"));
        let ngsild = NgsiLdServer::start().await;
        let sub = Subscriber::connect(&mosquitto.endpoint(), "city/sensors/#").await.unwrap_or_else(|e| panic!("{e}"));
        Servers { broker, mosquitto, ngsild, sub }
    }
}

/// An observation of sensor `id` (of `kind`, in Fort-de-France), every value `value`.
fn observation(id: &str, kind: SensorKind, seq: u64, value: f64) -> Observation {
    Observation {
        sensor_id: id.into(),
        kind,
        seq,
        observed_at: chrono::Utc::now(),
        location: GeoPoint { lat: 14.6, lon: -61.07 },
        district: "Fort-de-France".into(),
        values: twins::Values::filled(value, kind.quantities().len()),
    }
}

/// Read after `shutdown` (which stops every twin first).
fn final_seqs(r: &Registry) -> BTreeMap<String, u64> {
    r.ids().into_iter().map(|id| (id.clone(), r.seq(&id).unwrap_or(0))).collect()
}

async fn run_until_each_sensor_has(rt: &Runtime, n: u64) {
    let registry = rt.registry().clone();
    wait_until(&format!("{n} observations per sensor"), DEADLINE, || {
        registry.ids().iter().all(|id| registry.seq(id).unwrap_or(0) >= n)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Seqs per sensor id in the broker's topics, in log order; checks key and topic.
fn seqs_in_pulsar(broker: &PulsarBroker) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for kind in SensorKind::ALL {
        let topic = pulsar_topic(PULSAR_TOPIC_PREFIX, kind);
        for m in broker.messages(&topic) {
            let obs = Observation::from_mqtt_json(&m.payload).unwrap_or_else(|e| panic!("{topic}: {e}: {}", m.text()));
            assert_eq!(obs.kind, kind, "{topic}");
            assert_eq!(m.key.as_deref(), Some(&*obs.sensor_id), "the key is the sensor id");
            assert_eq!(m.event_time, u64::try_from(obs.observed_at.timestamp_millis()).ok(), "event time");
            out.entry(obs.sensor_id.to_string()).or_default().push(obs.seq);
        }
    }
    out
}

/// Seqs per sensor id received by the MQTT subscriber, in arrival order.
fn seqs_in_mqtt(sub: &Subscriber) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in sub.messages() {
        let obs = Observation::from_mqtt_json(&m.payload).unwrap_or_else(|e| panic!("{}: {e}", m.topic));
        assert_eq!(m.topic, format!("city/sensors/{}/{}", obs.kind.as_str(), obs.sensor_id));
        out.entry(obs.sensor_id.to_string()).or_default().push(obs.seq);
    }
    out
}

fn seqs_in_ngsild(server: &NgsiLdServer, ids: &BTreeMap<String, u64>, config: &Config) -> BTreeMap<String, Vec<u64>> {
    ids.keys()
        .map(|id| {
            let spec = config.sensors.iter().find(|s| &s.id == id).expect("sensor");
            let urn = format!("urn:ngsi-ld:{}:{id}", spec.kind.ngsi_ld_type());
            (id.clone(), server.upserts(&urn).into_iter().filter_map(|u| u.seq).collect())
        })
        .collect()
}

/// Every seq from 1 to the last, once each, in order.
fn assert_exactly_once_in_order(got: &BTreeMap<String, Vec<u64>>, last: &BTreeMap<String, u64>, where_: &str) {
    for (id, n) in last {
        let seqs = got.get(id).cloned().unwrap_or_default();
        assert_eq!(seqs, (1..=*n).collect::<Vec<_>>(), "{where_}: {id}");
    }
}

/// Every seq from 1 to the last at least once; returns the number of duplicates.
fn assert_at_least_once(got: &BTreeMap<String, Vec<u64>>, last: &BTreeMap<String, u64>, where_: &str) -> usize {
    let mut dups = 0;
    for (id, n) in last {
        let mut seqs = got.get(id).cloned().unwrap_or_default();
        let total = seqs.len();
        seqs.sort_unstable();
        seqs.dedup();
        dups += total - seqs.len();
        assert_eq!(seqs, (1..=*n).collect::<Vec<_>>(), "{where_}: {id} (missing seqs)");
    }
    dups
}

/// Run the distributor alone until the subscription's backlog is empty on every topic
/// and its targets delivered everything, then stop it.
async fn drain(broker: &PulsarBroker, mqtt: &str, ngsild: &str) {
    let text = format!("{}{}", runtime_toml(), distributor_toml(&broker.url(), mqtt, ngsild));
    let rt = Runtime::start(parse(&text)).await.unwrap_or_else(|e| panic!("{e}"));
    let topics: Vec<String> = SensorKind::ALL.iter().map(|k| pulsar_topic(PULSAR_TOPIC_PREFIX, *k)).collect();
    wait_until("the distributor to drain every topic", DEADLINE, || {
        topics.iter().all(|t| broker.backlog(t, SUBSCRIPTION) == 0)
    })
    .await
    .unwrap_or_else(|e| {
        let left: Vec<(String, usize)> = topics.iter().map(|t| (t.clone(), broker.backlog(t, SUBSCRIPTION))).collect();
        panic!("{e}: {left:?}; {:?}", rt.distributor().iter().map(|d| d.snapshot()).collect::<Vec<_>>())
    });
    let report = rt.shutdown().await;
    assert!(report.flushed, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensors_to_pulsar_to_mosquitto_and_ngsild_in_per_sensor_order() {
    let Servers { broker, mosquitto, ngsild, sub } = Servers::start().await;
    let text = format!(
        "{}{}{}{}",
        runtime_toml(),
        producer_toml(&broker.url()),
        distributor_toml(&broker.url(), &mosquitto.url(), &ngsild.url()),
        sensors_toml()
    );
    let config = parse(&text);
    let rt = Runtime::start(config.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    run_until_each_sensor_has(&rt, 8).await;
    // The distributor republishes while the sensors run.
    wait_until("the distributor to republish", DEADLINE, || sub.count() >= 30).await.unwrap_or_else(|e| panic!("{e}"));
    let d = rt.distributor();
    assert_eq!(d.len(), 6, "one consumer per topic");
    assert_eq!(broker.consumers(&pulsar_topic(PULSAR_TOPIC_PREFIX, SensorKind::Traffic), SUBSCRIPTION), 1);
    let api = reqwest::get(format!("http://{}/api/v1/actors?parent=root/distributor", rt.http_addr()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(api.status(), 200);
    let body = api.text().await.unwrap_or_default();
    assert!(body.contains("smartcity-airquality"), "the distributor's actors are in the inspection API: {body}");
    let metrics = rt.metrics().render();
    assert!(
        metrics.contains("simulator_distributor_messages_total{outcome=\"acked\",topic=\"persistent://public/default/smartcity-traffic\"}"),
        "{metrics}"
    );
    let registry = rt.registry().clone();
    let report = rt.shutdown().await;
    assert!(report.flushed, "{report:?}");
    let last = final_seqs(&registry);
    let pulsar = report.sinks.iter().find(|s| s.name == "pulsar").expect("pulsar sink");
    assert_eq!(
        (pulsar.sent, pulsar.failed, pulsar.dropped, pulsar.retries),
        (last.values().sum(), 0, 0, 0),
        "{pulsar:?}"
    );
    // Exactly once in the topics, in order, keyed by sensor.
    assert_exactly_once_in_order(&seqs_in_pulsar(&broker), &last, "pulsar");

    drain(&broker, &mosquitto.url(), &ngsild.url()).await;
    sub.wait_for_count(last.values().sum::<u64>() as usize, DEADLINE).await.unwrap_or_else(|e| panic!("{e}"));
    assert_exactly_once_in_order(&seqs_in_mqtt(&sub), &last, "mosquitto");
    assert_exactly_once_in_order(&seqs_in_ngsild(&ngsild, &last, &config), &last, "ngsi-ld");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_are_dead_lettered_and_the_rest_flows() {
    let Servers { broker, mosquitto, ngsild, sub } = Servers::start().await;
    let traffic = pulsar_topic(PULSAR_TOPIC_PREFIX, SensorKind::Traffic);
    let good = |seq: u64| observation("tr-test-01", SensorKind::Traffic, seq, 10.0).to_mqtt_json();
    broker.publish(&traffic, Some("tr-test-01"), &good(1));
    broker.publish(&traffic, Some("tr-test-01"), b"{not json");
    broker.publish(&traffic, Some("x"), br#"{"id":"t1","type":"toaster","seq":1}"#);
    broker.publish(&traffic, Some("big"), &vec![b' '; 70_000]);
    broker.publish(&traffic, Some("tr-test-01"), &good(2));

    let text = format!("{}{}", runtime_toml(), distributor_toml(&broker.url(), &mosquitto.url(), &ngsild.url()));
    let rt = Runtime::start(parse(&text)).await.unwrap_or_else(|e| panic!("{e}"));
    wait_until("the good messages to arrive", DEADLINE, || sub.count() >= 2).await.unwrap_or_else(|e| panic!("{e}"));
    wait_until("the backlog to be empty", DEADLINE, || broker.backlog(&traffic, SUBSCRIPTION) == 0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let snap =
        rt.distributor().iter().find(|d| d.topic == traffic).map(|d| d.snapshot()).expect("the traffic consumer");
    assert_eq!((snap.received, snap.decoded, snap.dead_lettered, snap.acked), (5, 2, 3, 2), "{snap:?}");
    let dlq = format!("{traffic}-{SUBSCRIPTION}-DLQ");
    let dead = broker.messages(&dlq);
    assert_eq!(dead.len(), 3, "{dead:?}");
    assert_eq!(dead[0].payload, b"{not json");
    assert_eq!(dead[0].key.as_deref(), Some("tr-test-01"));
    for m in &dead {
        let prop = |k: &str| m.properties.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(prop("REAL_TOPIC").as_deref(), Some(traffic.as_str()));
        assert!(prop("ORIGIN_MESSAGE_ID").is_some(), "{m:?}");
        let error = prop("error").unwrap_or_default();
        match m.key.as_deref() {
            Some("big") => assert!(error.contains("exceeds max_payload_bytes (65536)"), "{error}"),
            _ => assert!(error.contains("not an observation"), "{error}"),
        }
    }
    assert_eq!(seqs_in_mqtt(&sub).get("tr-test-01"), Some(&vec![1, 2]));
    let report = rt.shutdown().await;
    assert!(report.flushed, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_when_pulsar_or_a_target_stops_mid_run() {
    let Servers { mut broker, mosquitto, ngsild, sub } = Servers::start().await;
    let text = format!(
        "{}{}{}{}",
        runtime_toml(),
        producer_toml(&broker.url()).replace("linger", "retry_min = \"50ms\"\nretry_max = \"300ms\"\nlinger"),
        distributor_toml(&broker.url(), &mosquitto.url(), &ngsild.url())
            .replace("max_in_flight", "reconnect_min = \"50ms\"\nreconnect_max = \"300ms\"\nmax_in_flight"),
        sensors_toml()
    );
    let config = parse(&text);
    let rt = Runtime::start(config.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    let pulsar = rt.sinks().get("pulsar").expect("pulsar sink").clone();
    run_until_each_sensor_has(&rt, 4).await;

    // Pulsar goes away: the sink queues, the distributor waits; then it comes back.
    broker.stop().await;
    wait_until("the sink to see Pulsar gone", DEADLINE, || !pulsar.snapshot().connected)
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", pulsar.snapshot()));
    let queued_from = pulsar.snapshot().queue_len;
    wait_until("observations to queue up", DEADLINE, || pulsar.snapshot().queue_len >= queued_from + 20)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    broker.restart().await.unwrap_or_else(|e| panic!("{e}"));
    wait_until("the sink to reconnect and drain", DEADLINE, || {
        let s = pulsar.snapshot();
        s.connected && s.queue_len < 20
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", pulsar.snapshot()));

    // A target goes away: messages wait for it (bounded), Pulsar keeps the rest.
    ngsild.stop().await;
    let before = rt.distributor().iter().map(|d| d.snapshot().acked).sum::<u64>();
    wait_until("messages to wait for the stopped target", DEADLINE, || {
        rt.distributor().iter().map(|d| d.snapshot().in_flight).sum::<u64>() >= 20
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", rt.distributor().iter().map(|d| d.snapshot()).collect::<Vec<_>>()));
    ngsild.restart().await;
    wait_until("acks to resume", DEADLINE, || {
        rt.distributor().iter().map(|d| d.snapshot().acked).sum::<u64>() >= before + 50
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let registry = rt.registry().clone();
    let report = rt.shutdown().await;
    assert!(report.flushed, "{report:?}");
    let last = final_seqs(&registry);
    let s = report.sinks.iter().find(|s| s.name == "pulsar").expect("pulsar sink");
    assert_eq!((s.dropped, s.failed), (0, 0), "{s:?}");
    let dups = assert_at_least_once(&seqs_in_pulsar(&broker), &last, "pulsar");
    assert!(dups as u64 <= s.retries, "duplicates in Pulsar ({dups}) come from counted retries ({})", s.retries);

    drain(&broker, &mosquitto.url(), &ngsild.url()).await;
    assert_at_least_once(&seqs_in_mqtt(&sub), &last, "mosquitto");
    assert_at_least_once(&seqs_in_ngsild(&ngsild, &last, &config), &last, "ngsi-ld");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runtimes_share_a_key_shared_subscription_keeping_each_sensors_order() {
    let Servers { broker, mosquitto, ngsild, sub } = Servers::start().await;
    let text = format!("{}{}", runtime_toml(), distributor_toml(&broker.url(), &mosquitto.url(), &ngsild.url()));
    // Each instance needs its own MQTT client id: two clients with one id take each
    // other's session over and over (and resend what was in flight).
    let instance = |n: &str| {
        let mqtt_end = "consumer_only = true\n[[sinks.ngsild]]";
        assert!(text.contains(mqtt_end));
        text.replace(mqtt_end, &format!("consumer_only = true\nclient_id = \"twinrt-{n}\"\n[[sinks.ngsild]]"))
    };
    let a = Runtime::start(parse(&instance("a"))).await.unwrap_or_else(|e| panic!("{e}"));
    let b = Runtime::start(parse(&instance("b"))).await.unwrap_or_else(|e| panic!("{e}"));
    let noise = pulsar_topic(PULSAR_TOPIC_PREFIX, SensorKind::Noise);
    wait_until("both runtimes to subscribe", DEADLINE, || broker.consumers(&noise, SUBSCRIPTION) == 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // 20 sensors x 15 observations, interleaved, on one topic.
    let (sensors, per_sensor) = (20u64, 15u64);
    for seq in 1..=per_sensor {
        for s in 1..=sensors {
            let obs = observation(&format!("noise-shared-{s:02}"), SensorKind::Noise, seq, 55.0);
            broker.publish(&noise, Some(&obs.sensor_id), &obs.to_mqtt_json());
        }
    }
    let total = (sensors * per_sensor) as usize;
    sub.wait_for_count(total, DEADLINE).await.unwrap_or_else(|e| panic!("{e}"));
    wait_until("every message acknowledged", DEADLINE, || broker.backlog(&noise, SUBSCRIPTION) == 0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let acked = |rt: &Runtime| rt.distributor().iter().map(|d| d.snapshot().acked).sum::<u64>();
    let (acked_a, acked_b) = (acked(&a), acked(&b));
    assert_eq!(acked_a + acked_b, total as u64);
    assert!(acked_a > 0 && acked_b > 0, "both instances take a share: {acked_a} + {acked_b}");
    let got = seqs_in_mqtt(&sub);
    for s in 1..=sensors {
        let id = format!("noise-shared-{s:02}");
        let why = || {
            let d: Vec<_> = broker
                .deliveries(&noise, SUBSCRIPTION)
                .into_iter()
                .filter(|d| format!("{d:?}").contains(&id))
                .map(|d| format!("{d:?}"))
                .collect();
            let snaps: Vec<_> = [&a, &b]
                .iter()
                .flat_map(|rt| rt.distributor().iter().map(|d| d.snapshot()))
                .filter(|s| s.topic == noise)
                .collect();
            format!("deliveries: {d:#?}\nconsumers: {snaps:#?}\nevents: {:?}", broker.events())
        };
        assert_eq!(got.get(&id), Some(&(1..=per_sensor).collect::<Vec<_>>()), "{id}: once each, in order\n{}", why());
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_topic_consumer_is_restarted_and_what_it_held_is_redelivered() {
    let Servers { broker, mosquitto, ngsild, sub } = Servers::start().await;
    let text = format!("{}{}", runtime_toml(), distributor_toml(&broker.url(), &mosquitto.url(), &ngsild.url()))
        .replace("[http]", "[supervision]\nbackoff_min = \"20ms\"\nbackoff_max = \"100ms\"\n[faults]\nenabled = true\ntoken = \"tk\"\n[http]");
    let rt = Runtime::start(parse(&text)).await.unwrap_or_else(|e| panic!("{e}"));
    let light = pulsar_topic(PULSAR_TOPIC_PREFIX, SensorKind::Light);
    wait_until("the light consumer to subscribe", DEADLINE, || broker.consumers(&light, SUBSCRIPTION) == 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The context broker is down: messages reach Mosquitto but wait, unacknowledged.
    ngsild.stop().await;
    let obs = |seq: u64| observation("light-crash-01", SensorKind::Light, seq, 1.0);
    for seq in 1..=10 {
        broker.publish(&light, Some("light-crash-01"), &obs(seq).to_mqtt_json());
    }
    let handle = rt.distributor().iter().find(|d| d.topic == light).expect("light consumer").clone();
    wait_until("the consumer to hold the ten messages", DEADLINE, || handle.snapshot().in_flight == 10)
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", handle.snapshot()));
    // Through the fault API: a consumer takes `panic` (and only that).
    let client = reqwest::Client::new();
    let faults = format!("http://{}/api/v1/faults", rt.http_addr());
    let post = |body: &'static str| {
        client.post(&faults).bearer_auth("tk").body(body).header("content-type", "application/json").send()
    };
    let refused =
        post(r#"{"kind": "stall", "target": "/distributor/smartcity-light", "duration": "1s"}"#).await.expect("POST");
    assert_eq!(refused.status(), 400);
    let v: serde_json::Value = refused.json().await.expect("JSON");
    assert_eq!(v["error"]["param"], "kind", "{v}");
    let resp = post(r#"{"kind": "panic", "target": "/distributor/smartcity-light"}"#).await.expect("POST");
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
    let stats = rt.supervision().distributor.clone();
    wait_until("the supervisor to restart the consumer", DEADLINE, || {
        stats.child("smartcity-light").is_some_and(|c| c.restarts == 1)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", stats.snapshot()));
    ngsild.restart().await;
    wait_until("everything acknowledged after the restart", DEADLINE, || broker.backlog(&light, SUBSCRIPTION) == 0)
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", handle.snapshot()));
    let urn = format!("urn:ngsi-ld:{}:light-crash-01", SensorKind::Light.ngsi_ld_type());
    let stored: Vec<u64> = ngsild.upserts(&urn).into_iter().filter_map(|u| u.seq).collect();
    let mut uniq = stored.clone();
    uniq.sort_unstable();
    uniq.dedup();
    assert_eq!(uniq, (1..=10).collect::<Vec<_>>(), "every message reached the context broker: {stored:?}");
    let at_mqtt = seqs_in_mqtt(&sub).remove("light-crash-01").unwrap_or_default();
    assert!(at_mqtt.len() >= 10, "redelivered to Mosquitto too (at least once): {at_mqtt:?}");
    assert!(handle.snapshot().sessions >= 2, "{:?}", handle.snapshot());
    rt.shutdown().await;
}
