//! Redpanda end to end: sensors -> the Redpanda sink -> the HTTP Proxy (a Pandaproxy test
//! server, `support::pandaproxy`) -> the Redpanda consumer -> the InfluxDB sink -> a real
//! VictoriaMetrics, read back through its export API.
//!
//! The InfluxDB sink is `consumer_only`: sensors do not write to it, so every point in
//! VictoriaMetrics came through Redpanda. Each run ends with a second runtime without
//! sensors that drains what the first one produced after its consumer stopped (the
//! runtime stops consumers before sinks flush), resuming from the committed offsets.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use support::pandaproxy::{Pandaproxy, Value64, BINARY_V2, JSON_V2, KAFKA_V2, ROUTES};
use support::{wait_until, Victoria};
use twin_runtime::config::{Config, DEFAULT_TOML};
use twin_runtime::registry::Registry;
use twin_runtime::Runtime;
use twins::Observation;

const DEADLINE: Duration = Duration::from_secs(60);
const GROUP: &str = "twinrt";

fn sinks_and_consumer(proxy: &str, vm: &str) -> String {
    format!(
        "[[sinks.redpanda]]\nname = \"redpanda\"\nurl = \"{proxy}\"\nbatch_size = 50\nlinger = \"50ms\"\n\
         retry_min = \"50ms\"\nretry_max = \"200ms\"\nrequest_timeout = \"2s\"\n\
         [[sinks.influxdb]]\nname = \"influxdb\"\nurl = \"{vm}\"\nconsumer_only = true\nbatch_size = 200\nlinger = \"50ms\"\n\
         retry_min = \"50ms\"\nretry_max = \"200ms\"\nrequest_timeout = \"2s\"\n\
         [redpanda_consumer]\nurl = \"{proxy}\"\nsink = \"influxdb\"\npoll_interval = \"100ms\"\nfetch_timeout = \"100ms\"\n\
         fetch_max_bytes = 20000\nack_timeout = \"30s\"\nrequest_timeout = \"2s\"\n"
    )
}

/// The ten default sensors, producing to the proxy, consumed into VictoriaMetrics.
fn config(proxy: &str, vm: &str) -> Config {
    let start = DEFAULT_TOML.find("[[sensors]]").expect("the default config has sensors");
    let text = format!(
        "[runtime]\ninterval = \"50ms\"\nstart = \"2026-06-21T10:00:00Z\"\nshutdown_grace = \"20s\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n{}\n{}",
        sinks_and_consumer(proxy, vm),
        &DEFAULT_TOML[start..]
    );
    Config::parse(&text, "test config", &[]).unwrap_or_else(|e| panic!("{e}"))
}

/// Read what the first runtime left in the proxy, with a runtime without sensors, until
/// the group's committed offsets reach the ends of the logs.
async fn drain(proxy: &Pandaproxy, vm: &str) {
    let text = format!(
        "[runtime]\nshutdown_grace = \"20s\"\n[http]\nlisten = \"127.0.0.1:0\"\n{}",
        sinks_and_consumer(&proxy.url(), vm)
    );
    let cfg = Config::parse(&text, "drain config", &[]).unwrap_or_else(|e| panic!("{e}"));
    let rt = Runtime::start(cfg).await.unwrap_or_else(|e| panic!("{e}"));
    wait_until("the committed offsets to reach the log ends", DEADLINE, || proxy.committed(GROUP) == proxy.log_ends())
        .await
        .unwrap_or_else(|e| panic!("{e}: committed {:?}, ends {:?}", proxy.committed(GROUP), proxy.log_ends()));
    let report = rt.shutdown().await;
    assert!(report.flushed, "{report:?}");
    assert!(proxy.instances(GROUP).is_empty(), "the instance is deleted at shutdown: {:?}", proxy.instances(GROUP));
}

async fn run_until_each_sensor_has(rt: &Runtime, n: u64) {
    let registry = rt.registry().clone();
    wait_until(&format!("{n} observations per sensor"), DEADLINE, || {
        registry.ids().iter().all(|id| registry.seq(id).unwrap_or(0) >= n)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// The `*_seq` samples in VictoriaMetrics, per sensor id, sorted.
async fn seqs_in_victoria(vm: &Victoria) -> BTreeMap<String, Vec<u64>> {
    let all = vm.export(".*_seq").await.unwrap_or_else(|e| panic!("{e}"));
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for s in all {
        let id = s.labels.get("sensor_id").and_then(Value::as_str).unwrap_or_default().to_string();
        out.entry(id).or_default().extend(s.values.iter().map(|v| *v as u64));
    }
    for v in out.values_mut() {
        v.sort_unstable();
    }
    out
}

/// Every sensor's observations 1..=last are in VictoriaMetrics: exactly once, or at least once.
async fn check_seqs(vm: &Victoria, last: &BTreeMap<String, u64>, exactly_once: bool) {
    let got = seqs_in_victoria(vm).await;
    for (id, last) in last {
        let mut seqs = got.get(id).cloned().unwrap_or_default();
        let want: Vec<u64> = (1..=*last).collect();
        if exactly_once {
            assert_eq!(seqs, want, "{id}: every observation exactly once");
        } else {
            seqs.dedup();
            assert_eq!(seqs, want, "{id}: every observation at least once");
        }
    }
}

/// Read after `shutdown` (which stops every twin first), or a twin may emit once more.
fn final_seqs(r: &Registry) -> BTreeMap<String, u64> {
    r.ids().into_iter().map(|id| (id.clone(), r.seq(&id).unwrap_or(0))).collect()
}

fn committed_records(rt: &Runtime) -> u64 {
    rt.consumer().map(|c| c.snapshot().committed).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_observation_arrives_exactly_once_when_nothing_fails() {
    let vm = Victoria::start().await.unwrap_or_else(|e| panic!("{e}"));
    let proxy = Pandaproxy::start(2).await.unwrap_or_else(|e| panic!("{e}"));
    let rt = Runtime::start(config(&proxy.url(), &vm.url())).await.unwrap_or_else(|e| panic!("{e}"));
    run_until_each_sensor_has(&rt, 10).await;
    wait_until("the consumer to commit", DEADLINE, || committed_records(&rt) > 0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // The inspection API shows the consumer under its own supervisor.
    let base = format!("http://{}", rt.http_addr());
    let actor: Value = reqwest::get(format!("{base}/api/v1/actors/root/consumers/redpanda"))
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(actor["actor"]["kind"], "consumer", "{actor}");
    assert_eq!(actor["actor"]["parent"], "root/consumers", "{actor}");
    assert_eq!(actor["responding"], true, "{actor}");
    assert_eq!(actor["state"]["group"], GROUP, "{actor}");
    assert!(actor["state"]["instance_id"].is_string(), "{actor}");

    let report = rt.shutdown().await;
    assert!(report.flushed, "{report:?}");
    let last_after = {
        // The sensors stopped at shutdown: their final seq is what the sink flushed.
        let rp = report.sinks.iter().find(|s| s.name == "redpanda").expect("redpanda sink");
        assert_eq!((rp.failed, rp.dropped, rp.retries), (0, 0, 0), "{rp:?}");
        rp.sent
    };
    drain(&proxy, &vm.url()).await;

    // Every record produced is keyed by its sensor and holds its MQTT JSON, in order.
    let mut produced: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for topic in support::pandaproxy::TOPICS {
        for r in proxy.records(topic) {
            let Value64::Bytes(v) = &r.value else { panic!("a wire value in {topic}") };
            let obs = Observation::from_mqtt_json(v).unwrap_or_else(|e| panic!("{topic}: {e}"));
            assert_eq!(obs.kind.as_str(), *topic);
            assert_eq!(r.key.as_deref(), Some(obs.sensor_id.as_bytes()));
            produced.entry(obs.sensor_id.to_string()).or_default().push(obs.seq);
        }
    }
    assert_eq!(produced.values().map(Vec::len).sum::<usize>() as u64, last_after);
    let last: BTreeMap<String, u64> =
        produced.iter().map(|(id, seqs)| (id.clone(), seqs.iter().copied().max().unwrap_or(0))).collect();
    for (id, seqs) in &produced {
        assert_eq!(seqs, &(1..=last[id]).collect::<Vec<_>>(), "{id}: produced once each, in order");
    }
    assert_eq!(last.len(), 10);
    check_seqs(&vm, &last, true).await;
    assert_eq!(proxy.committed(GROUP), proxy.log_ends());

    // The producer spoke the binary embedded format and asked for the v2 answers.
    let produces: Vec<_> =
        proxy.requests().into_iter().filter(|r| r.route.as_deref() == Some("/topics/{topic_name}")).collect();
    assert!(!produces.is_empty());
    for r in &produces {
        assert_eq!(
            (r.content_type.as_deref(), r.accept.as_deref(), r.status),
            (Some(BINARY_V2), Some(KAFKA_V2), 200),
            "{r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_when_the_proxy_or_victoria_restarts_mid_run() {
    let mut vm = Victoria::start().await.unwrap_or_else(|e| panic!("{e}"));
    let mut proxy = Pandaproxy::start(1).await.unwrap_or_else(|e| panic!("{e}"));
    let rt = Runtime::start(config(&proxy.url(), &vm.url())).await.unwrap_or_else(|e| panic!("{e}"));
    run_until_each_sensor_has(&rt, 3).await;
    wait_until("a first commit", DEADLINE, || committed_records(&rt) > 0).await.unwrap_or_else(|e| panic!("{e}"));
    let producer = rt.sinks().get("redpanda").expect("sink").clone();
    let influx = rt.sinks().get("influxdb").expect("sink").clone();

    // The proxy goes away: the producer queues, the consumer retries.
    proxy.stop().await;
    wait_until("the producer to see the proxy gone and queue", DEADLINE, || {
        let s = producer.snapshot();
        !s.connected && s.queue_len > 50
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", producer.snapshot()));
    proxy.start_again().await.unwrap_or_else(|e| panic!("{e}"));
    let before = committed_records(&rt);
    wait_until("the consumer to commit again after the proxy came back", DEADLINE, || {
        committed_records(&rt) > before + 50
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", rt.consumer().map(|c| c.snapshot())));

    // VictoriaMetrics goes away: the consumer's batch waits in the sink, uncommitted.
    vm.stop().await.unwrap_or_else(|e| panic!("{e}"));
    wait_until("the InfluxDB sink to see VictoriaMetrics gone", DEADLINE, || !influx.snapshot().connected)
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", influx.snapshot()));
    // A write VictoriaMetrics answered just before it stopped may still be settled and its
    // offsets committed after the sink saw the failure of another one (a CI run committed
    // 5 records then): let records pile up once for that, then read the commit point and
    // see it stay while more pile up.
    let pile_up = |what: &'static str| {
        let log_then: i64 = proxy.log_ends().values().sum();
        let proxy = &proxy;
        async move {
            wait_until(what, DEADLINE, || proxy.log_ends().values().sum::<i64>() > log_then + 50)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    };
    pile_up("records to pile up in the proxy").await;
    let stalled = committed_records(&rt);
    pile_up("more records to pile up in the proxy").await;
    assert_eq!(committed_records(&rt), stalled, "nothing is committed while VictoriaMetrics is down");
    vm.start_again().await.unwrap_or_else(|e| panic!("{e}"));
    wait_until("the consumer to commit again after VictoriaMetrics came back", DEADLINE, || {
        committed_records(&rt) > stalled + 50
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", rt.consumer().map(|c| c.snapshot())));

    stop_drain_and_check(rt, &proxy, &vm, false).await;
    assert_eq!(proxy.committed(GROUP), proxy.log_ends());
}

/// Stop the runtime (it flushes), read the rest of the topics into VictoriaMetrics, and check
/// that every sensor's observations up to the last one produced are there (exactly once,
/// or at least once).
async fn stop_drain_and_check(rt: Runtime, proxy: &Pandaproxy, vm: &Victoria, exactly_once: bool) {
    let registry = rt.registry().clone();
    let report = rt.shutdown().await;
    let last = final_seqs(&registry);
    assert!(report.flushed, "{report:?}");
    drain(proxy, &vm.url()).await;
    let last: BTreeMap<String, u64> =
        last.into_iter().map(|(id, n)| (id.clone(), n.max(produced_max(proxy, &id)))).collect();
    check_seqs(vm, &last, exactly_once).await;
}

/// The highest seq of a sensor in the proxy's logs.
fn produced_max(proxy: &Pandaproxy, id: &str) -> u64 {
    support::pandaproxy::TOPICS
        .iter()
        .flat_map(|t| proxy.records(t))
        .filter(|r| r.key.as_deref() == Some(id.as_bytes()))
        .filter_map(|r| match r.value {
            Value64::Bytes(v) => Observation::from_mqtt_json(&v).ok().map(|o| o.seq),
            Value64::Wire(_) => None,
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_consumer_instance_is_recreated_and_nothing_is_lost() {
    let vm = Victoria::start().await.unwrap_or_else(|e| panic!("{e}"));
    let proxy = Pandaproxy::start(1).await.unwrap_or_else(|e| panic!("{e}"));
    let rt = Runtime::start(config(&proxy.url(), &vm.url())).await.unwrap_or_else(|e| panic!("{e}"));
    run_until_each_sensor_has(&rt, 3).await;
    wait_until("a first commit", DEADLINE, || committed_records(&rt) > 0).await.unwrap_or_else(|e| panic!("{e}"));
    let consumer = rt.consumer().expect("consumer").clone();
    let first = consumer.snapshot().instance_id.expect("an instance");
    assert_eq!(proxy.expire_instances(), 1);
    wait_until("a new instance", DEADLINE, || {
        let s = consumer.snapshot();
        s.instances_expired >= 1 && s.instance_id.as_ref().is_some_and(|i| *i != first)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", consumer.snapshot()));
    let after = consumer.snapshot().committed;
    wait_until("commits through the new instance", DEADLINE, || consumer.snapshot().committed > after + 50)
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", consumer.snapshot()));
    let expired: Vec<_> = proxy.requests().into_iter().filter(|r| r.status == 404).collect();
    assert!(!expired.is_empty());
    for r in &expired {
        assert_eq!(r.response.as_ref().map(|b| b["error_code"].clone()), Some(json!(40403)), "{r:?}");
    }
    // What the old instance fetched and stored is committed through the new one: still once.
    stop_drain_and_check(rt, &proxy, &vm, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_counted_and_skipped() {
    let vm = Victoria::start().await.unwrap_or_else(|e| panic!("{e}"));
    let proxy = Pandaproxy::start(1).await.unwrap_or_else(|e| panic!("{e}"));
    let toaster = br#"{"id":"t1","type":"toaster","seq":1,"observedAt":"2026-06-21T10:00:00Z","district":"Fort-de-France","location":{"lat":14.6,"lon":-61.07},"values":{}}"#;
    proxy.inject("noise", 0, Some("x"), Value64::Wire("%%% not base64 %%%".into()));
    proxy.inject("noise", 0, Some("x"), Value64::Bytes(b"{not json".to_vec()));
    proxy.inject("traffic", 0, None, Value64::Bytes(toaster.to_vec()));
    let rt = Runtime::start(config(&proxy.url(), &vm.url())).await.unwrap_or_else(|e| panic!("{e}"));
    let consumer = rt.consumer().expect("consumer").clone();
    run_until_each_sensor_has(&rt, 3).await;
    // One more, between good records.
    proxy.inject("weather", 0, Some("y"), Value64::Wire(String::new()));
    run_until_each_sensor_has(&rt, 6).await;
    wait_until("the four bad records to be counted", DEADLINE, || consumer.snapshot().bad == 4)
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", consumer.snapshot()));
    let s = consumer.snapshot();
    assert_eq!(s.fetched, s.decoded + s.bad, "{s:?}");
    stop_drain_and_check(rt, &proxy, &vm, true).await;
    assert_eq!(proxy.committed(GROUP), proxy.log_ends(), "bad records are committed past");
    let got = seqs_in_victoria(&vm).await;
    assert!(!got.contains_key("t1"), "the toaster never reached VictoriaMetrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_record_errors_of_the_proxy_are_counted_as_failed() {
    let proxy = Pandaproxy::start(3).await.unwrap_or_else(|e| panic!("{e}"));
    proxy.refuse_key(Some("aq-fdf-01"), 87);
    let start = DEFAULT_TOML.find("[[sensors]]").expect("sensors");
    let text = format!(
        "[runtime]\ninterval = \"50ms\"\nstart = \"2026-06-21T10:00:00Z\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [[sinks.redpanda]]\nname = \"redpanda\"\nurl = \"{}\"\nbatch_size = 20\nlinger = \"20ms\"\n{}",
        proxy.url(),
        &DEFAULT_TOML[start..]
    );
    let cfg = Config::parse(&text, "t", &[]).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.sensors.iter().any(|s| s.id == "aq-fdf-01"));
    let rt = Runtime::start(cfg).await.unwrap_or_else(|e| panic!("{e}"));
    run_until_each_sensor_has(&rt, 5).await;
    let registry = rt.registry().clone();
    let report = rt.shutdown().await;
    let last = final_seqs(&registry);
    assert!(report.flushed, "{report:?}");
    let s = &report.sinks[0];
    let refused = produced_max(&proxy, "aq-fdf-01");
    assert_eq!(refused, 0, "no record of the refused key was stored");
    let aq = *last.get("aq-fdf-01").expect("aq-fdf-01");
    let total: u64 = last.values().sum();
    assert!(aq >= 5);
    assert_eq!((s.failed, s.sent, s.retries), (aq, total - aq, 0), "{s:?}");
    assert!(s.last_error.as_deref().is_some_and(|e| e.contains("error_code 87")), "{s:?}");
    for (id, n) in last.iter().filter(|(id, _)| id.as_str() != "aq-fdf-01") {
        assert_eq!(produced_max(&proxy, id), *n, "{id}");
    }
}

// ---- the test server against the API document ----

fn swagger() -> Value {
    let path =
        concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/specs/redpanda-pandaproxy/pandaproxy-swagger2.assembled.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The schema a response body must match: the operation's for that status, else the
/// document's error body (for the content-type and parameter errors every route has).
fn response_schema(doc: &Value, route: &str, method: &str, status: u16) -> Option<Value> {
    let op = &doc["paths"][route][method.to_ascii_lowercase()];
    let declared = &op["responses"][status.to_string()];
    let schema = if declared.is_object() {
        declared.get("schema")?.clone()
    } else if status >= 400 {
        json!({ "$ref": "#/definitions/error_body" })
    } else {
        return None;
    };
    let mut wrapped = json!({ "definitions": doc["definitions"].clone() });
    match schema {
        Value::Object(o) => {
            for (k, v) in o {
                wrapped[k] = v;
            }
        }
        other => panic!("schema of {method} {route} {status}: {other}"),
    }
    Some(wrapped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_server_follows_the_pandaproxy_api_document() {
    let doc = swagger();
    let proxy = Pandaproxy::start(1).await.unwrap_or_else(|e| panic!("{e}"));
    let url = proxy.url();
    let c = reqwest::Client::new();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let send = |rb: reqwest::RequestBuilder| async move {
        let r = rb.send().await.unwrap_or_else(|e| panic!("{e}"));
        let status = r.status().as_u16();
        let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).map(String::from);
        let body: Value = r.json().await.unwrap_or(Value::Null);
        (status, ct, body)
    };
    let records = json!({ "records": [{ "key": b64("k1"), "value": b64("{\"a\":1}") }, { "value": b64("two") }] });

    // Produce: content type, accept, base64, unknown topic.
    let (st, ct, body) = send(
        c.post(format!("{url}/topics/noise"))
            .header("content-type", BINARY_V2)
            .header("accept", KAFKA_V2)
            .body(records.to_string()),
    )
    .await;
    assert_eq!((st, ct.as_deref()), (200, Some(KAFKA_V2)), "{body}");
    assert_eq!(body["offsets"].as_array().map(Vec::len), Some(2), "{body}");
    let (st, _, body) = send(
        c.post(format!("{url}/topics/noise")).header("content-type", "application/json").body(records.to_string()),
    )
    .await;
    assert_eq!((st, body["error_code"].clone()), (415, json!(41501)), "{body}");
    let (st, _, body) = send(
        c.post(format!("{url}/topics/noise"))
            .header("content-type", BINARY_V2)
            .header("accept", "text/html")
            .body(records.to_string()),
    )
    .await;
    assert_eq!((st, body["error_code"].clone()), (406, json!(40601)), "{body}");
    let (st, _, body) = send(
        c.post(format!("{url}/topics/noise"))
            .header("content-type", BINARY_V2)
            .body(r#"{"records":[{"value":"%%%"}]}"#),
    )
    .await;
    assert_eq!((st, body["error_code"].clone()), (422, json!(42201)), "{body}");
    let (st, _, body) =
        send(c.post(format!("{url}/topics/noise")).header("content-type", BINARY_V2).body("{nope")).await;
    assert_eq!(st, 400, "{body}");
    let (st, _, body) = send(
        c.post(format!("{url}/topics/nowhere"))
            .header("content-type", JSON_V2)
            .body(r#"{"records":[{"value":{"a":1}}]}"#),
    )
    .await;
    assert_eq!((st, body["error_code"].clone()), (404, json!(40401)), "{body}");
    proxy.refuse_key(Some("bad"), 87);
    let (st, _, body) = send(
        c.post(format!("{url}/topics/noise"))
            .header("content-type", BINARY_V2)
            .body(json!({ "records": [{ "key": b64("bad"), "value": b64("x") }] }).to_string()),
    )
    .await;
    assert_eq!((st, body["offsets"][0]["error_code"].clone()), (200, json!(87)), "{body}");

    // Listings and readiness.
    assert_eq!(send(c.get(format!("{url}/brokers")).header("accept", KAFKA_V2)).await.0, 200);
    let (st, _, topics) = send(c.get(format!("{url}/topics"))).await;
    assert_eq!(st, 200);
    assert!(topics.as_array().is_some_and(|t| t.len() == 6), "{topics}");
    assert_eq!(c.get(format!("{url}/status/ready")).send().await.map(|r| r.status().as_u16()).ok(), Some(200));

    // Partition reads: offset, timeout and max_bytes are required.
    let (st, ct, body) = send(
        c.get(format!("{url}/topics/noise/partitions/0/records?offset=0&timeout=10&max_bytes=100000"))
            .header("accept", BINARY_V2),
    )
    .await;
    assert_eq!((st, ct.as_deref()), (200, Some(BINARY_V2)), "{body}");
    assert_eq!(body["records"][0]["key"], json!(b64("k1")), "{body}");
    let (st, _, body) =
        send(c.get(format!("{url}/topics/noise/partitions/0/records?offset=0")).header("accept", BINARY_V2)).await;
    assert_eq!((st, body["error_code"].clone()), (400, json!(40002)), "{body}");
    let (st, _, _) = send(
        c.get(format!("{url}/topics/noise/partitions/9/records?offset=0&timeout=1&max_bytes=1"))
            .header("accept", BINARY_V2),
    )
    .await;
    assert_eq!(st, 404);

    // Consumer groups.
    let create =
        json!({ "name": "c1", "format": "binary", "auto.offset.reset": "earliest", "auto.commit.enable": "false" });
    let (st, _, body) =
        send(c.post(format!("{url}/consumers/g")).header("content-type", KAFKA_V2).body(create.to_string())).await;
    assert_eq!((st, body["instance_id"].clone()), (200, json!("c1")), "{body}");
    let (st, _, body) =
        send(c.post(format!("{url}/consumers/g")).header("content-type", KAFKA_V2).body(create.to_string())).await;
    assert_eq!((st, body["error_code"].clone()), (409, json!(40902)), "{body}");
    let (st, _, _) =
        send(c.post(format!("{url}/consumers/g")).header("content-type", KAFKA_V2).body(r#"{"format":"avro"}"#)).await;
    assert_eq!(st, 422);
    let (st, _, _) = send(c.post(format!("{url}/consumers/g")).body(r#"{"format":"binary"}"#)).await;
    assert_eq!(st, 415);
    let inst = format!("{url}/consumers/g/instances/c1");
    let (st, _, _) =
        send(c.post(format!("{inst}/subscription")).header("content-type", KAFKA_V2).body(r#"{"topics":["noise"]}"#))
            .await;
    assert_eq!(st, 204);
    let (st, _, body) = send(c.get(format!("{inst}/records?timeout=abc")).header("accept", BINARY_V2)).await;
    assert_eq!((st, body["error_code"].clone()), (400, json!(40002)), "{body}");
    let (st, _, body) =
        send(c.get(format!("{inst}/records?timeout=10&max_bytes=100000")).header("accept", JSON_V2)).await;
    assert_eq!((st, body["error_code"].clone()), (406, json!(40601)), "a binary consumer answers binary only: {body}");
    let (st, ct, body) =
        send(c.get(format!("{inst}/records?timeout=10&max_bytes=100000")).header("accept", BINARY_V2)).await;
    assert_eq!((st, ct.as_deref()), (200, Some(BINARY_V2)), "{body}");
    assert_eq!(body["records"].as_array().map(Vec::len), Some(2), "{body}");
    assert_eq!(body["records"][1]["value"], json!(b64("two")), "{body}");
    let commit = json!({ "partitions": [{ "topic": "noise", "partition": 0, "offset": 2 }] });
    let (st, _, _) =
        send(c.post(format!("{inst}/offsets")).header("content-type", KAFKA_V2).body(commit.to_string())).await;
    assert_eq!(st, 204);
    assert_eq!(proxy.committed("g").get(&("noise".to_string(), 0)), Some(&2));
    let (st, _, body) = send(
        c.get(format!("{inst}/offsets"))
            .header("content-type", KAFKA_V2)
            .body(r#"{"partitions":[{"topic":"noise","partition":0}]}"#),
    )
    .await;
    assert_eq!((st, body["offsets"][0]["offset"].clone()), (200, json!(2)), "{body}");
    let (st, _, _) = send(
        c.post(format!("{inst}/offsets"))
            .header("content-type", KAFKA_V2)
            .body(r#"{"partitions":[{"topic":"nowhere","partition":0,"offset":1}]}"#),
    )
    .await;
    assert_eq!(st, 404);

    // An expired instance is 404 with error_code 40403 everywhere; a new one resumes at
    // the committed offset.
    assert_eq!(proxy.expire_instances(), 1);
    for (st, body) in [
        {
            let r = send(c.get(format!("{inst}/records?timeout=10&max_bytes=10")).header("accept", BINARY_V2)).await;
            (r.0, r.2)
        },
        {
            let r =
                send(c.post(format!("{inst}/offsets")).header("content-type", KAFKA_V2).body(commit.to_string())).await;
            (r.0, r.2)
        },
        {
            let r = send(
                c.post(format!("{inst}/subscription")).header("content-type", KAFKA_V2).body(r#"{"topics":["noise"]}"#),
            )
            .await;
            (r.0, r.2)
        },
        {
            let r = send(c.delete(&inst).header("content-type", KAFKA_V2)).await;
            (r.0, r.2)
        },
    ] {
        assert_eq!((st, body["error_code"].clone()), (404, json!(40403)), "{body}");
    }
    let (_, _, body) = send(
        c.post(format!("{url}/consumers/g"))
            .header("content-type", KAFKA_V2)
            .body(r#"{"format":"binary","auto.commit.enable":"false"}"#),
    )
    .await;
    let id = body["instance_id"].as_str().unwrap_or_else(|| panic!("{body}")).to_string();
    let inst2 = format!("{url}/consumers/g/instances/{id}");
    send(c.post(format!("{inst2}/subscription")).header("content-type", KAFKA_V2).body(r#"{"topics":["noise"]}"#))
        .await;
    proxy.inject("noise", 0, None, Value64::Bytes(b"three".to_vec()));
    let (_, _, body) =
        send(c.get(format!("{inst2}/records?timeout=10&max_bytes=100000")).header("accept", BINARY_V2)).await;
    assert_eq!(body["records"].as_array().map(Vec::len), Some(1), "resumes after the committed offset: {body}");
    assert_eq!(body["records"][0]["offset"], json!(2), "{body}");
    assert_eq!(send(c.delete(&inst2).header("content-type", KAFKA_V2)).await.0, 204);
    let (st, _, body) = send(c.get(format!("{url}/no/such/route"))).await;
    assert_eq!(st, 404, "{body}");

    // Every route served exists in the document with the same method, and every JSON body
    // validates against the document's schema for its status.
    let log = proxy.requests();
    assert!(
        log.iter().all(|r| r.route.is_some() || r.uri.starts_with("/no/")),
        "a served route is missing from ROUTES"
    );
    let mut seen = std::collections::BTreeSet::new();
    for r in &log {
        let Some(route) = &r.route else { continue };
        assert!(
            doc["paths"][route.as_str()][r.method.to_ascii_lowercase()].is_object(),
            "{} {route} is not in the API document",
            r.method
        );
        seen.insert((r.method.clone(), route.clone()));
        let Some(body) = &r.response else { continue };
        let Some(schema) = response_schema(&doc, route, &r.method, r.status) else { continue };
        let validator = jsonschema::draft4::new(&schema).unwrap_or_else(|e| panic!("schema of {route}: {e}"));
        if let Err(e) = validator.validate(body) {
            panic!("{} {route} {}: {body} does not match the document: {e}", r.method, r.status);
        }
        if r.status >= 400 {
            assert!(body["error_code"].is_u64() && body["message"].is_string(), "{body}");
        }
    }
    let all: std::collections::BTreeSet<(String, String)> =
        ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(seen, all, "every route was exercised");
    assert!(log.iter().any(|r| r.route.is_none() && r.status == 404));
}
