//! Fault injection against a running runtime and real Mosquitto brokers: the API's guards
//! (disabled, token, bad and oversized bodies), faults that restart sensors, make a sink
//! fail or a sensor go quiet or report nonsense (seen by a real subscriber), faults ending
//! by themselves, and the sinks' overflow policies with a dead broker.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{free_port, wait_until, Mosquitto, MosquittoOptions, Received, Subscriber, Victoria};
use twin_runtime::config::{Config, DEFAULT_TOML};
use twin_runtime::Runtime;
use twins::{Observation, SensorKind};

const DEADLINE: Duration = Duration::from_secs(20);
const TOKEN: &str = "test-token-7f3a";

fn seed_sensors() -> &'static str {
    let start = DEFAULT_TOML.find("[[sensors]]").expect("the default config has sensors");
    &DEFAULT_TOML[start..]
}

fn config(text: &str) -> Config {
    Config::parse(text, "test config", &[]).unwrap_or_else(|e| panic!("{e}"))
}

/// The seed's ten sensors every 50 ms, the fault API on (unless `faults` says otherwise),
/// and `sinks`. Simulated time starts in the past: VictoriaMetrics' export leaves out
/// samples of the last moments.
async fn start(faults: &str, sinks: &str) -> Runtime {
    let text = format!(
        "[runtime]\ninterval = \"50ms\"\nshutdown_grace = \"5s\"\nstart = \"2026-06-21T10:00:00Z\"\n[http]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 512\n\
         [supervision]\nbackoff_min = \"20ms\"\nbackoff_max = \"200ms\"\n{faults}\n{sinks}\n{}",
        seed_sensors()
    );
    Runtime::start(config(&text)).await.unwrap_or_else(|e| panic!("{e}"))
}

fn enabled() -> String {
    format!("[faults]\nenabled = true\ntoken = \"{TOKEN}\"\n")
}

fn mqtt_sink(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[sinks.mqtt]]\nname = \"{name}\"\nurl = \"{url}\"\nreconnect_min = \"50ms\"\nreconnect_max = \"200ms\"\n{extra}\n"
    )
}

/// A request to the runtime's API: status and JSON body.
async fn call(rt: &Runtime, method: &str, path: &str, token: Option<&str>, body: Option<String>) -> (u16, Value) {
    let url = format!("http://{}{path}", rt.http_addr());
    let client = reqwest::Client::new();
    let mut req = match method {
        "GET" => client.get(&url),
        "POST" => client.post(&url),
        "DELETE" => client.delete(&url),
        other => panic!("method {other}"),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_else(|e| panic!("{method} {url}: body: {e}"));
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {url}: not JSON ({e}): {text}"));
    (status, v)
}

async fn post_fault(rt: &Runtime, fault: Value) -> Value {
    let (status, v) = call(rt, "POST", "/api/v1/faults", Some(TOKEN), Some(fault.to_string())).await;
    assert_eq!(status, 201, "{v}");
    v
}

/// GET `path` until `pred` holds for its JSON (or fail after the deadline, showing it).
async fn get_until(rt: &Runtime, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (_, v) = call(rt, "GET", path, Some(TOKEN), None).await;
        if pred(&v) {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out after {DEADLINE:?} waiting for {what}: {v:#}");
        tokio::time::sleep(support::POLL_INTERVAL).await;
    }
}

/// Wait until fault `id` ended; returns it.
async fn ended(rt: &Runtime, id: u64) -> Value {
    get_until(rt, &format!("/api/v1/faults/{id}"), &format!("fault {id} to end"), |v| v["status"] == "ended").await
}

/// Validate `body` against the OpenAPI schema of `path`'s `method` response `status`.
fn check_schema(openapi: &Value, path: &str, method: &str, status: u16, body: &Value) {
    let op = &openapi["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    let resp = &op["responses"][status.to_string()];
    assert!(resp.is_object(), "{method} {path}: status {status} is not documented");
    let schema = resp["content"]["application/json"]["schema"].clone();
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": openapi["components"],
        "allOf": [schema],
    });
    let validator = jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("{path}: schema: {e}"));
    let errors: Vec<String> = validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{method} {path} {status}: does not match the OpenAPI document: {errors:#?}\n{body:#}");
}

fn openapi() -> Value {
    serde_json::from_str(twin_runtime::http::api::OPENAPI).expect("the OpenAPI document is JSON")
}

/// Every observation a subscriber received, decoded, by sensor (in arrival order).
fn by_sensor(msgs: &[Received]) -> BTreeMap<String, Vec<Observation>> {
    let mut out: BTreeMap<String, Vec<Observation>> = BTreeMap::new();
    for m in msgs {
        let obs = Observation::from_mqtt_json(&m.payload)
            .unwrap_or_else(|e| panic!("undecodable payload on {}: {e}: {}", m.topic, m.payload_str()));
        out.entry(obs.sensor_id.to_string()).or_default().push(obs);
    }
    out
}

/// Sequence numbers 1, 2, 3, ... with nothing missing (duplicates, from at-least-once
/// delivery, are allowed).
fn assert_complete(id: &str, obs: &[Observation]) {
    let mut seqs: Vec<u64> = obs.iter().map(|o| o.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let expect: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expect, "{id}: sequence has gaps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_api_is_guarded_disabled_404_no_token_401_bad_body_400_too_big_413() {
    let doc = openapi();
    // Disabled (the default): 404, saying so.
    let rt = start("", "").await;
    for (method, path) in [("GET", "/api/v1/faults"), ("POST", "/api/v1/faults"), ("DELETE", "/api/v1/faults/1")] {
        let body = (method == "POST").then(|| json!({"kind": "panic", "target": "sensor:aq-fdf-01"}).to_string());
        let (status, v) = call(&rt, method, path, Some(TOKEN), body).await;
        assert_eq!(status, 404, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "faults_disabled", "{v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("disabled in config")), "{v}");
    }
    check_schema(&doc, "/api/v1/faults", "get", 404, &json!({"error": {"code": "faults_disabled", "message": "m"}}));
    rt.shutdown().await;

    let rt = start(&enabled(), "").await;
    let panic_body = json!({"kind": "panic", "target": "sensor:aq-fdf-01"}).to_string();
    // No token, a wrong token: 401, and nothing was injected.
    for token in [None, Some("wrong")] {
        let (status, v) = call(&rt, "POST", "/api/v1/faults", token, Some(panic_body.clone())).await;
        assert_eq!(status, 401, "{v}");
        check_schema(&doc, "/api/v1/faults", "post", 401, &v);
        let (status, _) = call(&rt, "GET", "/api/v1/faults", token, None).await;
        assert_eq!(status, 401);
        let (status, _) = call(&rt, "DELETE", "/api/v1/faults/1", token, None).await;
        assert_eq!(status, 401);
    }
    let (status, list) = call(&rt, "GET", "/api/v1/faults", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"], json!([]), "nothing changed");
    let restarts: u64 = rt.district_snapshots().values().map(|s| s.total_restarts).sum();
    assert_eq!(restarts, 0, "no sensor was panicked");

    // Bad bodies: 400 naming the field.
    for (body, param) in [
        ("{\"kind\": \"panic\"".to_string(), "body"),
        (json!({"target": "sensor:aq-fdf-01"}).to_string(), "kind"),
        (json!({"kind": "melt", "target": "sensor:aq-fdf-01"}).to_string(), "kind"),
        (json!({"kind": "panic", "target": "sensor:nope"}).to_string(), "target"),
        (json!({"kind": "panic", "target": "district:Sainte-Anne"}).to_string(), "target"),
        (json!({"kind": "fail", "target": "sensor:aq-fdf-01", "count": 1}).to_string(), "target"),
        (json!({"kind": "fail", "target": "sink:none", "count": 1}).to_string(), "target"),
        (json!({"kind": "panic", "target": "sensor:aq-fdf-01", "count": -1}).to_string(), "count"),
        (json!({"kind": "silence", "target": "sensor:aq-fdf-01"}).to_string(), "duration"),
        (json!({"kind": "silence", "target": "sensor:aq-fdf-01", "duration": "a while"}).to_string(), "duration"),
        (json!({"kind": "panic", "target": "sensor:aq-fdf-01", "colour": "red"}).to_string(), "colour"),
    ] {
        let (status, v) = call(&rt, "POST", "/api/v1/faults", Some(TOKEN), Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
        check_schema(&doc, "/api/v1/faults", "post", 400, &v);
    }
    // Oversized (max_body_bytes = 512): 413.
    let big = json!({"kind": "panic", "target": "sensor:aq-fdf-01", "reason": "x".repeat(600)}).to_string();
    let (status, v) = call(&rt, "POST", "/api/v1/faults", Some(TOKEN), Some(big)).await;
    assert_eq!(status, 413, "{v}");
    check_schema(&doc, "/api/v1/faults", "post", 413, &v);
    let (_, list) = call(&rt, "GET", "/api/v1/faults", Some(TOKEN), None).await;
    assert_eq!(list["items"], json!([]), "nothing changed");
    let (status, v) = call(&rt, "GET", "/api/v1/faults/42", Some(TOKEN), None).await;
    assert_eq!((status, &v["error"]["code"]), (404, &json!("not_found")));
    let (status, v) = call(&rt, "GET", "/api/v1/faults/x", Some(TOKEN), None).await;
    assert_eq!((status, &v["error"]["param"]), (400, &json!("id")));

    // A long silence ended early by DELETE; the table forgets it.
    let f = post_fault(&rt, json!({"kind": "silence", "target": "sensor:aq-fdf-01", "duration": "1h"})).await;
    check_schema(&doc, "/api/v1/faults", "post", 201, &f);
    assert_eq!((f["status"].as_str(), f["targets"].clone()), (Some("active"), json!(["aq-fdf-01"])));
    let id = f["id"].as_u64().expect("id");
    let seq = rt.registry().seq("aq-fdf-01").expect("twin");
    let (status, v) = call(&rt, "DELETE", &format!("/api/v1/faults/{id}"), Some(TOKEN), None).await;
    assert_eq!(status, 200, "{v}");
    check_schema(&doc, "/api/v1/faults/{id}", "delete", 200, &v);
    assert_eq!((v["status"].as_str(), v["ended_reason"].as_str()), (Some("ended"), Some("deleted")));
    wait_until("aq-fdf-01 to report again after the silence was deleted", DEADLINE, || {
        rt.registry().seq("aq-fdf-01").is_some_and(|s| s > seq + 2)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let (_, list) = call(&rt, "GET", "/api/v1/faults", Some(TOKEN), None).await;
    check_schema(&doc, "/api/v1/faults", "get", 200, &list);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_by_district_restarts_those_sensors_and_keeps_their_sequences() {
    let broker = Mosquitto::start_plain().await.unwrap_or_else(|e| panic!("{e}"));
    let sub = Subscriber::connect(&broker.endpoint(), "city/sensors/#").await.unwrap_or_else(|e| panic!("{e}"));
    let rt = start(&enabled(), &mqtt_sink("mosquitto", &broker.url(), "qos = 1")).await;
    let fdf = ["aq-fdf-01", "noise-fdf-01", "parking-fdf-01", "traffic-fdf-01"];
    wait_until("every sensor to emit 3 observations", DEADLINE, || {
        rt.registry().ids().iter().all(|id| rt.registry().seq(id).is_some_and(|s| s >= 3))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let before: BTreeMap<&str, u64> = fdf.iter().map(|id| (*id, rt.registry().seq(id).unwrap_or(0))).collect();

    let f = post_fault(&rt, json!({"kind": "panic", "target": "district:Fort-de-France", "count": 1})).await;
    assert_eq!(f["targets_total"], 4, "{f}");
    let id = f["id"].as_u64().expect("id");
    let done = ended(&rt, id).await;
    assert_eq!(done["ended_reason"], "count_reached", "{done}");
    assert_eq!(done["effects"]["panics"], 4, "{done}");

    // Visible in the supervision stats of the API: each restarted once, with the reason.
    let restarted = |actors: &Value| -> usize {
        actors["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x["restarts"] == 1 && x["status"] == "running")
                    .filter(|x| x["last_failure"]["reason"].as_str().is_some_and(|r| r.contains("fault")))
                    .count()
            })
            .unwrap_or(0)
    };
    get_until(&rt, "/api/v1/actors?parent=root/twins/Fort-de-France", "the four sensors to restart", |v| {
        restarted(v) == 4
    })
    .await;
    let (_, others) = call(&rt, "GET", "/api/v1/actors?kind=sensor", None, None).await;
    let untouched = others["items"].as_array().map(|a| a.iter().filter(|x| x["restarts"] == 0).count());
    assert_eq!(untouched, Some(6), "only Fort-de-France's sensors restarted");

    // Their sequences continue where they were, and reach the broker without a gap.
    wait_until("the restarted sensors to emit again", DEADLINE, || {
        fdf.iter().all(|id| rt.registry().seq(id).is_some_and(|s| s > before[id] + 3))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let report = rt.shutdown().await;
    let sink = &report.sinks[0];
    assert_eq!((sink.lost, sink.dropped), (0, 0), "{sink:?}");
    sub.wait_for_count(sink.sent as usize, DEADLINE).await.unwrap_or_else(|e| panic!("{e}"));
    let got = by_sensor(&sub.messages());
    for id in fdf {
        assert_complete(id, &got[id]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_failing_half_its_sends_retries_and_loses_nothing() {
    let broker = Mosquitto::start_plain().await.unwrap_or_else(|e| panic!("{e}"));
    let sub = Subscriber::connect(&broker.endpoint(), "city/sensors/#").await.unwrap_or_else(|e| panic!("{e}"));
    let rt = start(&enabled(), &mqtt_sink("mosquitto", &broker.url(), "qos = 1")).await;
    wait_until("the sink to connect", DEADLINE, || {
        rt.sinks().handles()[0].stats.ever_connected.load(std::sync::atomic::Ordering::Relaxed)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let f = post_fault(&rt, json!({"kind": "fail", "target": "sink:mosquitto", "ratio": 0.5, "duration": "2s"})).await;
    assert_eq!(f["targets"], json!(["sink:mosquitto"]));
    let (_, sinks) = call(&rt, "GET", "/api/v1/sinks", None, None).await;
    assert_eq!(sinks["items"][0]["active_faults"], json!([f["id"]]), "{sinks}");
    let done = ended(&rt, f["id"].as_u64().expect("id")).await;
    assert_eq!(done["ended_reason"], "duration_elapsed", "{done}");
    let failed = done["effects"]["requests_failed"].as_u64().unwrap_or(0);
    assert!(failed > 0, "{done}");

    let (_, sinks) = call(&rt, "GET", "/api/v1/sinks", None, None).await;
    check_schema(&openapi(), "/api/v1/sinks", "get", 200, &sinks);
    let s = &sinks["items"][0];
    assert!(s["retries"].as_u64().unwrap_or(0) >= failed, "every refused send is retried: {s}");
    assert_eq!(s["active_faults"], json!([]));
    let report = rt.shutdown().await;
    let sink = &report.sinks[0];
    assert!(report.flushed, "{report:?}");
    assert_eq!((sink.lost, sink.dropped, sink.failed), (0, 0, 0), "{sink:?}");
    sub.wait_for_count(sink.sent as usize, DEADLINE).await.unwrap_or_else(|e| panic!("{e}"));
    let got = by_sensor(&sub.messages());
    assert_eq!(got.len(), 10);
    for (id, obs) in &got {
        assert_complete(id, obs);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_and_out_of_range_are_what_a_subscriber_sees_and_end_by_themselves() {
    let broker = Mosquitto::start_plain().await.unwrap_or_else(|e| panic!("{e}"));
    let sub = Subscriber::connect(&broker.endpoint(), "city/sensors/#").await.unwrap_or_else(|e| panic!("{e}"));
    let rt = start(&enabled(), &mqtt_sink("mosquitto", &broker.url(), "qos = 1")).await;
    wait_until("noise-fdf-01 to emit", DEADLINE, || rt.registry().seq("noise-fdf-01").is_some_and(|s| s >= 3))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let silence = post_fault(&rt, json!({"kind": "silence", "target": "sensor:noise-fdf-01", "duration": "1s"})).await;
    let oor = post_fault(&rt, json!({"kind": "out_of_range", "target": "sensor:weather-lam-01", "count": 3})).await;
    let s_done = ended(&rt, silence["id"].as_u64().expect("id")).await;
    assert_eq!(s_done["ended_reason"], "duration_elapsed", "{s_done}");
    let suppressed = s_done["effects"]["observations_suppressed"].as_u64().unwrap_or(0);
    assert!(suppressed >= 10, "1 s of a 50 ms sensor: {s_done}");
    let o_done = ended(&rt, oor["id"].as_u64().expect("id")).await;
    assert_eq!(
        (o_done["ended_reason"].as_str(), o_done["effects"]["observations_altered"].as_u64()),
        (Some("count_reached"), Some(3))
    );

    let after = rt.registry().seq("noise-fdf-01").unwrap_or(0);
    wait_until("noise-fdf-01 to report again", DEADLINE, || {
        rt.registry().seq("noise-fdf-01").is_some_and(|s| s > after + 3)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let report = rt.shutdown().await;
    let sink = &report.sinks[0];
    assert_eq!((sink.lost, sink.dropped), (0, 0), "{sink:?}");
    sub.wait_for_count(sink.sent as usize, DEADLINE).await.unwrap_or_else(|e| panic!("{e}"));
    let got = by_sensor(&sub.messages());

    // Silence: no gap in the sequence, a hole in time of at least the suppressed ticks.
    let noise = &got["noise-fdf-01"];
    assert_complete("noise-fdf-01", noise);
    let widest = noise.windows(2).map(|w| (w[1].observed_at - w[0].observed_at).num_milliseconds()).max().unwrap_or(0);
    assert!(widest >= (suppressed as i64 + 1) * 50, "the quiet second shows in observedAt: {widest} ms");
    let aq = &got["aq-fdf-01"];
    let aq_widest = aq.windows(2).map(|w| (w[1].observed_at - w[0].observed_at).num_milliseconds()).max().unwrap_or(0);
    assert_eq!(aq_widest, 50, "other sensors kept their pace");

    // Out of range: exactly three observations with every value outside its range.
    let weather = &got["weather-lam-01"];
    assert_complete("weather-lam-01", weather);
    let outside = |o: &Observation| o.measurements().all(|(q, v)| v < q.min || v > q.max);
    let inside = |o: &Observation| o.measurements().all(|(q, v)| v >= q.min && v <= q.max);
    let mut bad: Vec<u64> = weather.iter().filter(|o| outside(o)).map(|o| o.seq).collect();
    bad.dedup();
    assert_eq!(bad.len(), 3, "{bad:?}");
    assert!(weather.iter().filter(|o| !bad.contains(&o.seq)).all(inside));
    assert_eq!(weather[0].kind, SensorKind::Weather);
}

/// One noise sensor every 20 ms and an MQTT sink with a queue of 5 towards `port`.
async fn start_small(port: u16, overflow: &str) -> Runtime {
    let text = format!(
        "[runtime]\ninterval = \"20ms\"\nshutdown_grace = \"3s\"\n[http]\nlisten = \"127.0.0.1:0\"\n{}\n\
         [[sensors]]\nid = \"n1\"\ntype = \"noise\"\ndistrict = \"Fort-de-France\"\n",
        mqtt_sink("dead", &format!("mqtt://127.0.0.1:{port}"), &format!("queue_capacity = 5\n{overflow}"))
    );
    Runtime::start(config(&text)).await.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_dead_broker_drop_oldest_and_drop_newest_keep_the_right_observations_and_count_them() {
    for policy in ["drop_oldest", "drop_newest"] {
        let port = free_port();
        let rt = start_small(port, &format!("overflow = \"{policy}\"")).await;
        let h = rt.sinks().get("dead").expect("sink").clone();
        wait_until("10 drops", DEADLINE, || h.stats.dropped.get() >= 10).await.unwrap_or_else(|e| panic!("{e}"));
        let queued: Vec<u64> = h.queued().iter().map(|e| e.obs.seq).collect();
        let (dropped, lost) = (h.stats.dropped.get(), h.stats.lost.get());
        match policy {
            // The newest five, in order; everything before them dropped.
            "drop_oldest" => {
                let last = queued[4];
                assert_eq!(queued, (last - 4..=last).collect::<Vec<_>>(), "{policy}");
                assert!(dropped >= last - 5, "{policy}: {dropped} dropped, queue {queued:?}");
            }
            // The first five; everything after them dropped.
            _ => assert_eq!(queued, vec![1, 2, 3, 4, 5], "{policy}"),
        }
        // (read a moment apart while drops go on)
        assert!(lost.abs_diff(dropped) <= 2, "{policy}: dropped {dropped}, lost {lost}");

        // The broker comes up: what was kept is delivered; lost stays what was dropped.
        let _broker =
            Mosquitto::start_with(MosquittoOptions::plain().with_port(port)).await.unwrap_or_else(|e| panic!("{e}"));
        let seq = rt.registry().seq("n1").unwrap_or(0);
        wait_until("the sink to catch up", DEADLINE, || h.stats.delivered_seq("n1").is_some_and(|d| d > seq))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let report = rt.shutdown().await;
        let s = &report.sinks[0];
        assert_eq!(s.lost, s.dropped, "{policy}: every drop is lost, nothing else: {s:?}");
        assert_eq!(s.duplicates, 0, "{s:?}");
        let track = h.stats.track("n1").expect("n1 accounting");
        assert_eq!(track.lost, s.lost);
        assert_eq!(s.worst_sensors.first().map(|w| (w.sensor.as_str(), w.lost)), Some(("n1", s.lost)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_waits_for_room_then_drops_and_never_holds_the_sensor_for_good() {
    let port = free_port();
    let rt = start_small(port, "overflow = \"block\"\nblock_timeout = \"400ms\"").await;
    let h = rt.sinks().get("dead").expect("sink").clone();
    wait_until("the queue to fill", DEADLINE, || h.queue_len() == 5).await.unwrap_or_else(|e| panic!("{e}"));
    let full = Instant::now();
    wait_until("the first drop", DEADLINE, || h.stats.dropped.get() >= 1).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(full.elapsed() >= Duration::from_millis(350), "the sensor waited for room first: {:?}", full.elapsed());
    // Then, while the broker stays dead, the sensor keeps its pace (drops without waiting).
    let seq = rt.registry().seq("n1").unwrap_or(0);
    let t = Instant::now();
    wait_until("10 more observations", DEADLINE, || rt.registry().seq("n1").is_some_and(|s| s >= seq + 10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(t.elapsed() < Duration::from_secs(2), "not held back: {:?}", t.elapsed());
    let (_, actor) = call(&rt, "GET", "/api/v1/actors/root/twins/Fort-de-France/n1", None, None).await;
    assert_eq!(actor["responding"], true, "{actor}");
    let snap = h.snapshot();
    assert_eq!((snap.overflow, snap.block_timeout_ms), ("block", Some(400)));
    assert_eq!(h.queued().iter().map(|e| e.obs.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5], "the oldest are kept");
    assert_eq!(snap.lost, snap.dropped, "{snap:?}");
    assert!(snap.dropped >= 10, "{snap:?}");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_latency_and_a_sink_error_act_on_their_target_only_and_lose_nothing() {
    let broker = Mosquitto::start_plain().await.unwrap_or_else(|e| panic!("{e}"));
    let sub = Subscriber::connect(&broker.endpoint(), "city/sensors/#").await.unwrap_or_else(|e| panic!("{e}"));
    let rt = start(&enabled(), &mqtt_sink("mosquitto", &broker.url(), "qos = 1")).await;
    wait_until("aq-fdf-01 to emit", DEADLINE, || rt.registry().seq("aq-fdf-01").is_some_and(|s| s >= 3))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // A stalled sensor waits; the others go on.
    let stall =
        post_fault(&rt, json!({"kind": "stall", "target": "/twins/Fort-de-France/aq-fdf-01", "duration": "1s"})).await;
    let (aq, noise) = (rt.registry().seq("aq-fdf-01").unwrap_or(0), rt.registry().seq("noise-fdf-01").unwrap_or(0));
    wait_until("10 observations of another sensor", DEADLINE, || {
        rt.registry().seq("noise-fdf-01").is_some_and(|s| s >= noise + 10)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(rt.registry().seq("aq-fdf-01").unwrap_or(0) <= aq + 3, "the stalled sensor did not step meanwhile");
    let done = ended(&rt, stall["id"].as_u64().expect("id")).await;
    assert_eq!(
        (done["ended_reason"].as_str(), done["effects"]["stalls"].as_u64()),
        (Some("duration_elapsed"), Some(1))
    );
    // It catches up with its schedule afterwards.
    // Its timer kept ticking: it works through the backlog afterwards, sequence unbroken.
    wait_until("aq-fdf-01 to catch up", DEADLINE, || rt.registry().seq("aq-fdf-01").is_some_and(|s| s >= aq + 15))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Latency on five sends, then an error in the sink's handler: it restarts.
    let latency =
        post_fault(&rt, json!({"kind": "latency", "target": "sink:mosquitto", "delay": "100ms", "count": 5})).await;
    let done = ended(&rt, latency["id"].as_u64().expect("id")).await;
    assert_eq!(
        (done["ended_reason"].as_str(), done["effects"]["latency_added_ms"].as_u64()),
        (Some("count_reached"), Some(500))
    );
    let error = post_fault(&rt, json!({"kind": "error", "target": "sink:mosquitto"})).await;
    let done = ended(&rt, error["id"].as_u64().expect("id")).await;
    assert_eq!(done["effects"]["errors"], 1, "{done}");
    let sink = get_until(&rt, "/api/v1/actors/root/sinks/mqtt:mosquitto", "the sink to restart", |v| {
        v["actor"]["restarts"] == 1 && v["actor"]["status"] == "running"
    })
    .await;
    assert!(
        sink["actor"]["last_failure"]["reason"].as_str().is_some_and(|r| r.contains("fault injected into sink")),
        "{sink}"
    );
    let seq = rt.registry().seq("aq-fdf-01").unwrap_or(0);
    let h = rt.sinks().get("mosquitto").expect("sink").clone();
    wait_until("the restarted sink to deliver again", DEADLINE, || h.stats.delivered_seq("aq-fdf-01") > Some(seq))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let report = rt.shutdown().await;
    let s = &report.sinks[0];
    assert_eq!((s.lost, s.dropped), (0, 0), "{s:?}");
    sub.wait_for_count(s.sent as usize, DEADLINE).await.unwrap_or_else(|e| panic!("{e}"));
    for (id, obs) in &by_sensor(&sub.messages()) {
        assert_complete(id, obs);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_response_sink_takes_failures_latency_and_a_dropped_connection_without_loss() {
    let vm = Victoria::start().await.unwrap_or_else(|e| panic!("{e}"));
    let sink = format!(
        "[[sinks.influxdb]]\nname = \"influxdb\"\nurl = \"{}\"\nbatch_size = 20\nlinger = \"50ms\"\n\
         retry_min = \"50ms\"\nretry_max = \"200ms\"\nrequest_timeout = \"2s\"\n",
        vm.url()
    );
    let rt = start(&enabled(), &sink).await;
    let h = rt.sinks().get("influxdb").expect("sink").clone();
    wait_until("the sink to deliver", DEADLINE, || h.stats.sent.get() > 20).await.unwrap_or_else(|e| panic!("{e}"));

    let fail =
        post_fault(&rt, json!({"kind": "fail", "target": "sink:influxdb", "ratio": 0.5, "duration": "1s"})).await;
    let latency =
        post_fault(&rt, json!({"kind": "latency", "target": "sink:influxdb", "delay": "50ms", "count": 3})).await;
    let f = ended(&rt, fail["id"].as_u64().expect("id")).await;
    assert!(f["effects"]["requests_failed"].as_u64().unwrap_or(0) > 0, "{f}");
    let l = ended(&rt, latency["id"].as_u64().expect("id")).await;
    assert_eq!(l["effects"]["latency_added_ms"], 150, "{l}");
    let drop = post_fault(&rt, json!({"kind": "disconnect", "target": "sink:influxdb"})).await;
    let d = ended(&rt, drop["id"].as_u64().expect("id")).await;
    assert_eq!((d["ended_reason"].as_str(), d["effects"]["disconnects"].as_u64()), (Some("count_reached"), Some(1)));
    let sent = h.stats.sent.get();
    wait_until("deliveries after the reconnection", DEADLINE, || h.stats.sent.get() > sent + 20)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(h.stats.last_error().is_some_and(|e| e.0.contains("fault")), "{:?}", h.stats.last_error());

    let registry = rt.registry().clone();
    let report = rt.shutdown().await;
    assert!(report.flushed, "{report:?}");
    let s = &report.sinks[0];
    assert!(s.retries > 0, "{s:?}");
    assert_eq!((s.lost, s.dropped, s.failed), (0, 0, 0), "{s:?}");
    // Every observation is in VictoriaMetrics.
    let all = vm.export(".*_seq").await.unwrap_or_else(|e| panic!("{e}"));
    for id in registry.ids() {
        let mut seqs: Vec<u64> = all
            .iter()
            .filter(|x| x.labels.get("sensor_id").and_then(|v| v.as_str()) == Some(id.as_str()))
            .flat_map(|x| x.values.iter().map(|v| *v as u64))
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        let last = registry.seq(&id).unwrap_or(0);
        assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "{id}");
    }
}
