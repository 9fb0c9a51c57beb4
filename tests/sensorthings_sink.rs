//! The SensorThings sink against a real SensorThings API server (django-ogc-sensorthings on
//! SQLite, `tests/support/sensorthings.rs`; installed by `scripts/sensorthings-venv.sh`):
//! what the twins emit arrives once and in shape, restarts create no duplicates, 500s and
//! outages lose nothing that fits in the queue (and count what does not), and a server that
//! lost its entities gets them back.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::sensorthings::{FaultProxy, StaClient, StaServer};
use support::{wait_until, wait_until_async};
use twin_runtime::config::Config;
use twin_runtime::registry::Registry;
use twin_runtime::Runtime;
use twins::SensorKind;

const DEADLINE: Duration = Duration::from_secs(60);

/// Four sensors of four kinds (from the embedded default).
const SENSORS: &str = r#"
[[sensors]]
id = "traffic-fdf-01"
type = "traffic"
district = "Fort-de-France"
location = [14.6139, -61.0420]

[[sensors]]
id = "aq-rob-01"
type = "air-quality"
district = "Le Robert"
location = [14.6775, -60.9405]

[[sensors]]
id = "noise-fdf-01"
type = "noise"
district = "Fort-de-France"
location = [14.6065, -61.0640]

[[sensors]]
id = "weather-lam-01"
type = "weather"
district = "Le Lamentin"
location = [14.5950, -61.0050]
"#;

fn sensors() -> Vec<(&'static str, SensorKind, f64, f64)> {
    vec![
        ("traffic-fdf-01", SensorKind::Traffic, 14.6139, -61.0420),
        ("aq-rob-01", SensorKind::AirQuality, 14.6775, -60.9405),
        ("noise-fdf-01", SensorKind::Noise, 14.6065, -61.0640),
        ("weather-lam-01", SensorKind::Weather, 14.5950, -61.0050),
    ]
}

fn config(url: &str, interval: &str, extra: &str) -> Config {
    let text = format!(
        "[runtime]\nspeed = 60.0\ninterval = \"{interval}\"\nshutdown_grace = \"30s\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [[sinks.sensorthings]]\nname = \"frost\"\nurl = \"{url}\"\nretry_min = \"50ms\"\nretry_max = \"400ms\"\n{extra}\n{SENSORS}"
    );
    Config::parse(&text, "test config", &[]).unwrap_or_else(|e| panic!("{e}"))
}

async fn start(url: &str, interval: &str, extra: &str) -> Runtime {
    Runtime::start(config(url, interval, extra)).await.unwrap_or_else(|e| panic!("{e}"))
}

/// One test at a time: each runs a Django server and a runtime, more would compete for
/// the CPU and slow the server below the sensors' rate.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn server() -> StaServer {
    StaServer::start().await.unwrap_or_else(|e| panic!("{e}"))
}

/// Wait until every sensor has emitted at least `n` more observations than in `from`.
async fn emitted_at_least(rt: &Runtime, from: &BTreeMap<String, u64>, n: u64) {
    let reg = rt.registry().clone();
    let from = from.clone();
    wait_until(&format!("every sensor to emit {n} more observations"), DEADLINE, || {
        sensors().iter().all(|(id, ..)| reg.seq(id).unwrap_or(0) >= from.get(*id).copied().unwrap_or(0) + n)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

fn seqs(reg: &Registry) -> BTreeMap<String, u64> {
    sensors().iter().map(|(id, ..)| (id.to_string(), reg.seq(id).unwrap_or(0))).collect()
}

/// Wait until the sink has delivered, for every sensor, what it had emitted when called
/// (or something newer, when older ones were dropped).
async fn delivered_all(rt: &Runtime, server: &StaServer) {
    let handle = rt.sinks().get("frost").expect("the frost sink").clone();
    let target = seqs(rt.registry());
    wait_until("the sink to deliver every observation emitted so far", DEADLINE, || {
        sensors().iter().all(|(id, ..)| handle.stats.delivered_seq(id).unwrap_or(0) >= target[*id])
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}\nserver log:\n{}", handle.snapshot(), server.log_tail()));
}

/// Stop the runtime; every observation must have been handed over (`flushed`).
async fn stop(rt: Runtime) -> (Arc<Registry>, twin_runtime::sinks::SinkSnapshot) {
    let reg = rt.registry().clone();
    let report = rt.shutdown().await;
    let snap = report.sinks.iter().find(|s| s.name == "frost").expect("frost in the report").clone();
    assert!(report.flushed, "the sink did not flush: {snap:?}");
    (reg, snap)
}

fn approx(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// A time as the server gives it back (django-ogc-sensorthings keeps whole seconds only,
/// hence `speed = 60`: observations of a sensor are 12 simulated seconds apart).
fn timestamp(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    let s = v.as_str().unwrap_or_else(|| panic!("phenomenonTime is not a string: {v}"));
    chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("phenomenonTime {s:?}: {e}"))
}

/// What the server holds, per Datastream name: (entity, observations).
struct Holdings {
    things: Vec<Value>,
    datastreams: BTreeMap<String, (Value, Vec<Value>)>,
    sensors: Vec<Value>,
    properties: Vec<Value>,
}

async fn holdings(client: &StaClient) -> Holdings {
    let things = client.things().await.unwrap_or_else(|e| panic!("{e}"));
    let mut datastreams = BTreeMap::new();
    for ds in client.datastreams().await.unwrap_or_else(|e| panic!("{e}")) {
        let name = ds["name"].as_str().unwrap_or_else(|| panic!("a Datastream without name: {ds}")).to_string();
        let obs = client.observations_of(&ds["@iot.id"]).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(datastreams.insert(name.clone(), (ds, obs)).is_none(), "Datastream {name} exists twice");
    }
    let sensors = client.sensors().await.unwrap_or_else(|e| panic!("{e}"));
    let properties = client.observed_properties().await.unwrap_or_else(|e| panic!("{e}"));
    Holdings { things, datastreams, sensors, properties }
}

/// The names of the `entities` whose expanded `Datastreams` include the one named `ds`.
fn linked(entities: &[Value], ds: &str) -> Vec<String> {
    entities
        .iter()
        .filter(|e| e["Datastreams"].as_array().is_some_and(|d| d.iter().any(|d| d["name"] == ds)))
        .map(|e| e["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Exactly one Thing (with its Location) per sensor, one Sensor per kind, one
/// ObservedProperty per quantity name, one Datastream per quantity with the right unit and
/// links, and nothing else.
fn check_entities(h: &Holdings) {
    let mut kinds = HashSet::new();
    let mut quantities = HashSet::new();
    let mut expected_ds = HashSet::new();
    for (id, kind, lat, lon) in sensors() {
        let things: Vec<&Value> = h.things.iter().filter(|t| t["name"] == id).collect();
        assert_eq!(things.len(), 1, "Things named {id}: {things:#?}");
        let t = things[0];
        assert_eq!(t["properties"]["type"], kind.as_str(), "{t}");
        assert!(t["properties"]["district"].is_string(), "{t}");
        let locs = t["Locations"].as_array().unwrap_or_else(|| panic!("{id}: no Locations: {t}"));
        assert_eq!(locs.len(), 1, "{id}: {locs:#?}");
        assert_eq!(locs[0]["encodingType"], "application/geo+json");
        assert_eq!(locs[0]["location"]["type"], "Point");
        let c = &locs[0]["location"]["coordinates"];
        assert!(
            approx(c[0].as_f64().unwrap_or(f64::NAN), lon) && approx(c[1].as_f64().unwrap_or(f64::NAN), lat),
            "{id}: {c}"
        );
        kinds.insert(kind.as_str());
        for q in kind.quantities() {
            quantities.insert(q.name);
            let name = format!("{id}:{}", q.name);
            let (ds, _) = h.datastreams.get(&name).unwrap_or_else(|| panic!("no Datastream {name}"));
            let uom = &ds["unitOfMeasurement"];
            assert_eq!(uom["symbol"], q.unit, "{name}: {uom}");
            assert!(uom["name"].as_str().is_some_and(|n| !n.is_empty()), "{name}: {uom}");
            assert!(
                uom["definition"].as_str().is_some_and(|d| d.starts_with("http://unitsofmeasure.org/ucum.html#para-")),
                "{name}: {uom}"
            );
            assert_eq!(ds["observationType"], "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement");
            assert_eq!(linked(&h.things, &name), vec![id.to_string()], "the Thing of {name}");
            assert_eq!(linked(&h.sensors, &name), vec![kind.as_str().to_string()], "the Sensor of {name}");
            assert_eq!(linked(&h.properties, &name), vec![q.name.to_string()], "the ObservedProperty of {name}");
            expected_ds.insert(name);
        }
    }
    assert_eq!(
        h.things.len(),
        sensors().len(),
        "Things: {:?}",
        h.things.iter().map(|t| &t["name"]).collect::<Vec<_>>()
    );
    let names: HashSet<String> = h.datastreams.keys().cloned().collect();
    assert_eq!(names, expected_ds, "Datastreams");
    let mut sensor_names: Vec<&str> = h.sensors.iter().filter_map(|s| s["name"].as_str()).collect();
    sensor_names.sort();
    let mut want: Vec<&str> = kinds.into_iter().collect();
    want.sort();
    assert_eq!(sensor_names, want, "one Sensor per kind");
    let mut prop_names: Vec<&str> = h.properties.iter().filter_map(|p| p["name"].as_str()).collect();
    prop_names.sort();
    let mut want: Vec<&str> = quantities.into_iter().collect();
    want.sort();
    assert_eq!(prop_names, want, "one ObservedProperty per quantity name");
}

/// The observations of every Datastream: `count(sensor)` of them at distinct times, the
/// latest one carrying the twin's last value.
fn check_observations(h: &Holdings, reg: &Registry, count: impl Fn(&str) -> u64) {
    for (id, kind, ..) in sensors() {
        let view = reg.view(id).unwrap_or_else(|| panic!("{id} not in the registry"));
        let last = view.last_observation.unwrap_or_else(|| panic!("{id} emitted nothing"));
        let want = count(id);
        for q in kind.quantities() {
            let name = format!("{id}:{}", q.name);
            let (_, obs) = &h.datastreams[&name];
            let times: HashSet<_> = obs.iter().map(|o| timestamp(&o["phenomenonTime"])).collect();
            assert_eq!(obs.len() as u64, want, "{name}: observations on the server");
            assert_eq!(times.len(), obs.len(), "{name}: two observations at the same time");
            let latest =
                obs.iter().max_by_key(|o| timestamp(&o["phenomenonTime"])).unwrap_or_else(|| panic!("{name}: none"));
            let (got, expected) = (latest["result"].as_f64(), last["values"][q.name].as_f64());
            assert!(
                matches!((got, expected), (Some(g), Some(e)) if approx(g, e)),
                "{name}: the latest result {:?} is not the twin's last value {:?}",
                latest["result"],
                last["values"][q.name]
            );
            for field in ["phenomenonTime", "resultTime"] {
                let (got, want) = (timestamp(&latest[field]), timestamp(&last["observedAt"]));
                assert!((got - want).num_milliseconds().abs() < 1000, "{name}: {field} {got} vs observedAt {want}");
            }
        }
    }
}

/// 1 + 2: a run's observations arrive exactly once, batched through dataArray (the server
/// lists it); a second runtime on the same server finds every entity and creates none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observations_arrive_once_and_a_second_runtime_creates_no_duplicates() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = server().await;
    let client = server.client();

    let rt = start(&server.base_url(), "200ms", "").await;
    emitted_at_least(&rt, &BTreeMap::new(), 5).await;
    let (reg1, snap) = stop(rt).await;
    let first = seqs(&reg1);
    assert_eq!((snap.failed, snap.dropped), (0, 0), "{snap:?}");
    assert_eq!(snap.sent, first.values().sum::<u64>(), "{snap:?}");
    let h = holdings(&client).await;
    check_entities(&h);
    check_observations(&h, &reg1, |id| first[id]);

    let rt = start(&server.base_url(), "200ms", "").await;
    emitted_at_least(&rt, &BTreeMap::new(), 3).await;
    let (reg2, snap) = stop(rt).await;
    assert_eq!((snap.failed, snap.dropped), (0, 0), "{snap:?}");
    let second = seqs(&reg2);
    let h = holdings(&client).await;
    check_entities(&h);
    for (id, kind, ..) in sensors() {
        for q in kind.quantities() {
            let (_, obs) = &h.datastreams[&format!("{id}:{}", q.name)];
            assert_eq!(obs.len() as u64, first[id] + second[id], "{id}:{}: observations of both runs", q.name);
        }
    }
}

/// Observations one by one (`use_batch = false`) through a proxy that answers 500 for a
/// while, then refuses connections for a while: nothing is lost, nothing is doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_500_and_an_outage_lose_nothing_that_fits_in_the_queue() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = server().await;
    let mut proxy = FaultProxy::start(server.port()).await.unwrap_or_else(|e| panic!("{e}"));
    let rt = start(&proxy.url_for(&server), "500ms", "use_batch = false").await;
    let handle = rt.sinks().get("frost").expect("the frost sink").clone();
    emitted_at_least(&rt, &BTreeMap::new(), 3).await;
    delivered_all(&rt, &server).await;

    proxy.set_failing(true);
    let before = seqs(rt.registry());
    emitted_at_least(&rt, &before, 5).await;
    wait_until("the sink to see 500s", DEADLINE, || {
        proxy.refused() > 0 && !handle.stats.connected.load(std::sync::atomic::Ordering::Relaxed)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    proxy.set_failing(false);
    delivered_all(&rt, &server).await;

    proxy.go_down().await;
    let before = seqs(rt.registry());
    emitted_at_least(&rt, &before, 5).await;
    let h = handle.clone();
    wait_until("the sink to notice the outage", DEADLINE, || {
        !h.stats.connected.load(std::sync::atomic::Ordering::Relaxed)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    proxy.come_back().await.unwrap_or_else(|e| panic!("{e}"));
    delivered_all(&rt, &server).await;

    let (reg, snap) = stop(rt).await;
    assert_eq!((snap.failed, snap.dropped), (0, 0), "{snap:?}");
    assert!(snap.retries > 0, "the 500s and the outage must have caused retries: {snap:?}");
    let h = holdings(&server.client()).await;
    check_entities(&h);
    let last = seqs(&reg);
    check_observations(&h, &reg, |id| last[id]);
}

/// A queue of 8 while the server is down: what is missing on the server is exactly what the
/// sink counted as dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_beyond_the_queue_during_an_outage_are_counted() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = server().await;
    let mut proxy = FaultProxy::start(server.port()).await.unwrap_or_else(|e| panic!("{e}"));
    let rt = start(&proxy.url_for(&server), "200ms", "queue_capacity = 8").await;
    let handle = rt.sinks().get("frost").expect("the frost sink").clone();
    emitted_at_least(&rt, &BTreeMap::new(), 3).await;
    delivered_all(&rt, &server).await;

    proxy.go_down().await;
    let before = seqs(rt.registry());
    emitted_at_least(&rt, &before, 10).await;
    let h = handle.clone();
    wait_until("drops while the server is down", DEADLINE, || h.stats.dropped.get() > 8)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    proxy.come_back().await.unwrap_or_else(|e| panic!("{e}"));
    delivered_all(&rt, &server).await;

    let (reg, snap) = stop(rt).await;
    assert_eq!(snap.failed, 0, "{snap:?}");
    assert!(snap.dropped > 0, "{snap:?}");
    let h = holdings(&server.client()).await;
    check_entities(&h);
    let last = seqs(&reg);
    let mut missing = 0;
    for (id, kind, ..) in sensors() {
        let counts: Vec<u64> =
            kind.quantities().iter().map(|q| h.datastreams[&format!("{id}:{}", q.name)].1.len() as u64).collect();
        assert!(counts.iter().all(|c| *c == counts[0]), "{id}: every Datastream has as many observations: {counts:?}");
        missing += last[id] - counts[0];
    }
    assert_eq!(missing, snap.dropped, "observations missing on the server vs dropped: {snap:?}");
    assert_eq!(snap.sent + snap.dropped, last.values().sum::<u64>(), "{snap:?}");
}

/// The server loses every entity while the runtime runs (restarted on an empty database):
/// the sink notices (a cached Datastream answers 404), recreates Things and Datastreams,
/// and what it had not delivered arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_lost_by_the_server_are_detected_and_recreated() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut server = server().await;
    let rt = start(&server.base_url(), "200ms", "").await;
    let handle = rt.sinks().get("frost").expect("the frost sink").clone();
    emitted_at_least(&rt, &BTreeMap::new(), 3).await;
    delivered_all(&rt, &server).await;

    server.stop();
    let h = handle.clone();
    // Once the sink failed a request after the stop, nothing more reached the old database.
    wait_until("the sink to notice the server is gone", DEADLINE, || {
        !h.stats.connected.load(std::sync::atomic::Ordering::Relaxed)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let delivered_before: BTreeMap<String, u64> =
        sensors().iter().map(|(id, ..)| (id.to_string(), handle.stats.delivered_seq(id).unwrap_or(0))).collect();
    server.reset_db().await.unwrap_or_else(|e| panic!("{e}"));
    let client = server.client();
    wait_until_async("the Things to be recreated", DEADLINE, || {
        let client = client.clone();
        async move { client.things().await.map(|t| t.len() == sensors().len()).unwrap_or(false) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let before = seqs(rt.registry());
    emitted_at_least(&rt, &before, 3).await;
    delivered_all(&rt, &server).await;

    let (reg, snap) = stop(rt).await;
    assert_eq!((snap.failed, snap.dropped), (0, 0), "{snap:?}");
    let h = holdings(&client).await;
    check_entities(&h);
    let last = seqs(&reg);
    check_observations(&h, &reg, |id| last[id] - delivered_before[id]);
}
