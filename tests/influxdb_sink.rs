//! The InfluxDB v2 sink against a real VictoriaMetrics (its InfluxDB v2 write API), reading
//! every point back through its export API; and the retry rules against a scripted server.
//!
//! The expected observations are recomputed here: twins are deterministic, so the same
//! seed, start time and schedule give the same values, which every exported sample must
//! match (value, tags, timestamp).

mod support;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{wait_until, Series, Victoria};
use twin_runtime::config::{Config, DEFAULT_TOML};
use twin_runtime::sensor::phase_offset;
use twin_runtime::Runtime;
use twins::{Observation, SensorSpec, SimClock, Twin};

const DEADLINE: Duration = Duration::from_secs(30);

fn config(sink: &str) -> Config {
    let start = DEFAULT_TOML.find("[[sensors]]").expect("the default config has sensors");
    let text = format!(
        "[runtime]\ninterval = \"50ms\"\nspeed = 60.0\nstart = \"2026-06-21T10:00:00Z\"\nshutdown_grace = \"20s\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n{sink}\n{}",
        &DEFAULT_TOML[start..]
    );
    Config::parse(&text, "test config", &[]).unwrap_or_else(|e| panic!("{e}"))
}

/// What sensor `id` emitted as its observations 1..=n, recomputed from the configuration.
fn expected(cfg: &Config, id: &str, n: u64) -> Vec<Observation> {
    let s = cfg.sensors.iter().find(|s| s.id == id).expect("sensor in config");
    let spec = SensorSpec {
        id: s.id.as_str().into(),
        kind: s.kind,
        district: s.district.as_str().into(),
        location: s.location,
    };
    let mut twin = Twin::new(spec, cfg.runtime.seed);
    let clock = SimClock::new(cfg.runtime.start.expect("start"), cfg.runtime.speed).expect("clock");
    let offset = phase_offset(id, s.interval);
    (1..=n).map(|k| twin.step(clock.sim_time(offset + s.interval * (k as u32 - 1)))).collect()
}

/// The exported samples of one sensor: series name -> (timestamp -> values).
fn samples_of<'a>(all: &'a [Series], id: &str) -> BTreeMap<&'a str, Vec<(i64, f64)>> {
    let mut out: BTreeMap<&str, Vec<(i64, f64)>> = BTreeMap::new();
    for s in all.iter().filter(|s| s.labels.get("sensor_id").and_then(|v| v.as_str()) == Some(id)) {
        let entry = out.entry(s.name.as_str()).or_default();
        entry.extend(s.timestamps.iter().copied().zip(s.values.iter().copied()));
        entry.sort_by_key(|(t, _)| *t);
    }
    out
}

async fn run_until_each_sensor_has(rt: &Runtime, n: u64) {
    let registry = rt.registry().clone();
    wait_until(&format!("{n} observations per sensor"), DEADLINE, || {
        registry.ids().iter().all(|id| registry.seq(id).unwrap_or(0) >= n)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_observation_arrives_once_with_its_values_tags_and_time() {
    let vm = Victoria::start().await.unwrap_or_else(|e| panic!("{e}"));
    let cfg = config(&format!(
        "[[sinks.influxdb]]\nname = \"influxdb\"\nurl = \"{}\"\ntoken = \"secret\"\ngzip = true\nbatch_size = 50\nlinger = \"100ms\"",
        vm.url()
    ));
    let rt = Runtime::start(cfg.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    run_until_each_sensor_has(&rt, 10).await;
    let registry = rt.registry().clone();
    let report = rt.shutdown().await;
    assert!(report.flushed, "{report:?}");
    let sink = &report.sinks[0];
    assert_eq!((sink.failed, sink.dropped), (0, 0), "{sink:?}");

    let all = vm.export(".*").await.unwrap_or_else(|e| panic!("{e}"));
    let mut points = 0;
    for id in registry.ids() {
        let last = registry.seq(&id).expect("seq");
        let exp = expected(&cfg, &id, last);
        let got = samples_of(&all, &id);
        let m = exp[0].kind.measurement();
        // seq: every observation once, at its own time
        let seqs = &got[format!("{m}_seq").as_str()];
        let want: Vec<(i64, f64)> = exp.iter().map(|o| (o.observed_at.timestamp_millis(), o.seq as f64)).collect();
        assert_eq!(seqs, &want, "{id}: seq samples");
        // every quantity, every value
        for (i, q) in exp[0].kind.quantities().iter().enumerate() {
            let series = &got[format!("{m}_{}", q.name).as_str()];
            assert_eq!(series.len(), exp.len(), "{id}: {}", q.name);
            for ((t, v), o) in series.iter().zip(&exp) {
                assert_eq!(*t, o.observed_at.timestamp_millis(), "{id}: {} time", q.name);
                assert!(
                    (v - o.values[i]).abs() <= 1e-9 * o.values[i].abs().max(1.0),
                    "{id}: {} = {v}, expected {}",
                    q.name,
                    o.values[i]
                );
                points += 1;
            }
        }
        // tags
        let s = all
            .iter()
            .find(|s| s.labels.get("sensor_id").and_then(|v| v.as_str()) == Some(id.as_str()))
            .expect("series");
        assert_eq!(s.labels.get("type").and_then(|v| v.as_str()), Some(exp[0].kind.as_str()));
        assert_eq!(s.labels.get("district").and_then(|v| v.as_str()), Some(&*exp[0].district));
    }
    assert!(points > 300, "{points} points checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_loses_nothing_within_the_queue() {
    let mut vm = Victoria::start().await.unwrap_or_else(|e| panic!("{e}"));
    let cfg = config(&format!(
        "[[sinks.influxdb]]\nname = \"influxdb\"\nurl = \"{}\"\nbatch_size = 20\nlinger = \"50ms\"\nretry_min = \"50ms\"\nretry_max = \"200ms\"\nrequest_timeout = \"2s\"",
        vm.url()
    ));
    let rt = Runtime::start(cfg.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    run_until_each_sensor_has(&rt, 3).await;
    let sink = rt.sinks().get("influxdb").expect("sink").clone();
    vm.stop().await.unwrap_or_else(|e| panic!("{e}"));
    wait_until("the sink to see the server gone", DEADLINE, || !sink.snapshot().connected)
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", sink.snapshot()));
    wait_until("a backlog", DEADLINE, || sink.queue_len() > 100).await.unwrap_or_else(|e| panic!("{e}"));
    vm.start_again().await.unwrap_or_else(|e| panic!("{e}"));
    wait_until("the backlog to drain", DEADLINE, || {
        let s = sink.snapshot();
        s.connected && s.queue_len < 20
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", sink.snapshot()));
    let registry = rt.registry().clone();
    let report = rt.shutdown().await;
    assert!(report.flushed, "{report:?}");
    let snap = &report.sinks[0];
    assert_eq!((snap.dropped, snap.failed), (0, 0), "{snap:?}");
    assert!(snap.retries > 0, "the batch in flight was retried: {snap:?}");

    let all = vm.export(".*_seq").await.unwrap_or_else(|e| panic!("{e}"));
    for id in registry.ids() {
        let last = registry.seq(&id).expect("seq");
        let got = samples_of(&all, &id);
        let mut seqs: Vec<u64> = got.values().flatten().map(|(_, v)| *v as u64).collect();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "{id}: nothing lost");
    }
}

/// A scripted InfluxDB write endpoint: answers the next scripted status (204 when the
/// script is empty) and records every body.
struct Scripted {
    script: Mutex<VecDeque<(u16, &'static str)>>,
    bodies: Mutex<Vec<String>>,
}

async fn scripted_server(script: Vec<(u16, &'static str)>) -> (String, Arc<Scripted>) {
    use axum::routing::post;
    let state = Arc::new(Scripted { script: Mutex::new(script.into()), bodies: Mutex::new(Vec::new()) });
    let app = axum::Router::new()
        .route(
            "/api/v2/write",
            post(|axum::extract::State(s): axum::extract::State<Arc<Scripted>>, body: String| async move {
                s.bodies.lock().expect("lock").push(body);
                let (status, msg) = s.script.lock().expect("lock").pop_front().unwrap_or((204, ""));
                let status = axum::http::StatusCode::from_u16(status).expect("status");
                (
                    status,
                    if msg.is_empty() {
                        String::new()
                    } else {
                        format!("{{\"code\":\"invalid\",\"message\":\"{msg}\"}}")
                    },
                )
            }),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_429_and_5xx_but_counts_and_reports_other_4xx() {
    // 1: healthcheck; 2-3: refused for now (the same batch is sent again); 4: accepted;
    // 5: a batch refused for good.
    let (url, server) = scripted_server(vec![
        (204, ""),
        (500, "internal error"),
        (429, "too many requests"),
        (204, ""),
        (400, "partial write: field type conflict"),
    ])
    .await;
    let cfg = config(&format!(
        "[[sinks.influxdb]]\nname = \"influxdb\"\nurl = \"{url}\"\ngzip = false\nconcurrency = 1\nbatch_size = 10\nlinger = \"20ms\"\nretry_min = \"20ms\"\nretry_max = \"50ms\""
    ));
    let rt = Runtime::start(cfg).await.unwrap_or_else(|e| panic!("{e}"));
    let sink = rt.sinks().get("influxdb").expect("sink").clone();
    wait_until("the scripted answers to be used up", DEADLINE, || server.bodies.lock().expect("lock").len() >= 6)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let report = rt.shutdown().await;
    assert!(report.flushed);
    let bodies = server.bodies.lock().expect("lock").clone();
    assert_eq!(bodies[0], "", "the healthcheck is an empty write");
    assert!(!bodies[1].is_empty());
    assert_eq!(bodies[1], bodies[2], "a 500 is retried with the same batch");
    assert_eq!(bodies[2], bodies[3], "a 429 is retried with the same batch");
    assert_ne!(bodies[4], bodies[5], "a 400 is not retried");
    let refused = bodies[4].lines().count() as u64;
    let s = sink.snapshot();
    assert_eq!(s.failed, refused, "{s:?}");
    assert_eq!(s.retries, 2 * bodies[1].lines().count() as u64, "{s:?}");
    let all_lines: u64 = bodies[3..].iter().map(|b| b.lines().count() as u64).sum();
    assert_eq!(s.sent + s.failed, all_lines, "{s:?}");
    assert!(
        s.last_error.as_deref().is_some_and(|e| e.contains("HTTP 400") && e.contains("field type conflict")),
        "{s:?}"
    );
    for line in bodies[3].lines() {
        assert!(line.contains(",sensor_id=") && line.contains("seq=") && line.contains("i "), "{line}");
    }
}

/// A write endpoint that holds every write a while, and answers the first one with a 500
/// after holding it longer: with `concurrency = 2` other writes go through meanwhile.
#[derive(Default)]
struct Overlapping {
    requests: std::sync::atomic::AtomicUsize,
    in_flight: std::sync::atomic::AtomicUsize,
    max_in_flight: std::sync::atomic::AtomicUsize,
    accepted: Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_overlap_yet_settle_in_queue_order() {
    use axum::routing::post;
    use std::sync::atomic::Ordering::SeqCst;
    let state = Arc::new(Overlapping::default());
    let app = axum::Router::new()
        .route(
            "/api/v2/write",
            post(|axum::extract::State(s): axum::extract::State<Arc<Overlapping>>, body: String| async move {
                let n = s.requests.fetch_add(1, SeqCst);
                let now = s.in_flight.fetch_add(1, SeqCst) + 1;
                s.max_in_flight.fetch_max(now, SeqCst);
                // The first write after the (empty) healthcheck fails, late.
                let first = n == 1;
                tokio::time::sleep(Duration::from_millis(if first { 300 } else { 30 })).await;
                s.in_flight.fetch_sub(1, SeqCst);
                if first {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                s.accepted.lock().expect("lock").push(body);
                axum::http::StatusCode::NO_CONTENT
            }),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let cfg = config(&format!(
        "[[sinks.influxdb]]\nname = \"influxdb\"\nurl = \"http://{addr}\"\ngzip = false\nbatch_size = 5\nlinger = \"10ms\"\nretry_min = \"20ms\"\nretry_max = \"50ms\""
    ));
    assert_eq!(cfg.sinks.influxdb[0].common.batch.concurrency, 2, "InfluxDB sends two writes at once by default");
    let rt = Runtime::start(cfg).await.unwrap_or_else(|e| panic!("{e}"));
    let sink = rt.sinks().get("influxdb").expect("sink").clone();
    run_until_each_sensor_has(&rt, 8).await;
    wait_until("writes after the failed one", DEADLINE, || state.accepted.lock().expect("lock").len() >= 4)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let registry = rt.registry().clone();
    let report = rt.shutdown().await;
    assert!(report.flushed, "{report:?}");
    assert!(state.max_in_flight.load(SeqCst) >= 2, "two writes were in flight at once");
    let s = sink.snapshot();
    // The failed write was overtaken, yet nothing counts as lost, late or duplicated.
    assert_eq!((s.lost, s.late, s.duplicates, s.failed), (0, 0, 0, 0), "{s:?}");
    assert!(s.retries > 0, "{s:?}");
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in
        state.accepted.lock().expect("lock").iter().flat_map(|b| b.lines().map(str::to_string).collect::<Vec<_>>())
    {
        let id = line.split(",sensor_id=").nth(1).and_then(|r| r.split(',').next()).expect("sensor_id tag");
        let seq =
            line.split("seq=").nth(1).and_then(|r| r.split('i').next()).and_then(|v| v.parse().ok()).expect("seq");
        seqs.entry(id.to_string()).or_default().push(seq);
    }
    for id in registry.ids() {
        let mut got = seqs.remove(&id).unwrap_or_default();
        got.sort_unstable();
        let last = registry.seq(&id).unwrap_or(0);
        assert_eq!(got, (1..=last).collect::<Vec<_>>(), "{id}: every observation once");
    }
}
