//! The inspection API driven over HTTP against a running runtime and real Mosquitto
//! brokers: each endpoint's content is checked against what the runtime did, and every
//! response against the OpenAPI document the runtime serves.

mod support;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use support::{free_port, wait_until, wait_until_async, Mosquitto, MosquittoOptions};
use twin_runtime::config::{Config, DEFAULT_TOML};
use twin_runtime::sensor::SensorMsg;
use twin_runtime::Runtime;

const DEADLINE: Duration = Duration::from_secs(20);

fn config(head: &str) -> Config {
    let start = DEFAULT_TOML.find("[[sensors]]").expect("the default config has sensors");
    let text = format!("{head}\n{}", &DEFAULT_TOML[start..]);
    Config::parse(&text, "test config", &[]).unwrap_or_else(|e| panic!("{e}"))
}

async fn start(broker_url: &str, extra: &str) -> Runtime {
    let cfg = config(&format!(
        "[runtime]\ninterval = \"50ms\"\n[http]\nlisten = \"127.0.0.1:0\"\n[supervision]\nbackoff_min = \"50ms\"\n\
         [[sinks.mqtt]]\nname = \"mosquitto\"\nurl = \"{broker_url}\"\nreconnect_min = \"50ms\"\nreconnect_max = \"200ms\"\n{extra}"
    ));
    Runtime::start(cfg).await.unwrap_or_else(|e| panic!("{e}"))
}

/// GET a path, returning status and JSON body.
async fn get(rt: &Runtime, path: &str) -> (u16, Value) {
    let url = format!("http://{}{path}", rt.http_addr());
    let resp = reqwest::get(&url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_else(|e| panic!("GET {url}: body: {e}"));
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {text}"));
    (status, body)
}

async fn get_text(rt: &Runtime, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("http://{}{path}", rt.http_addr())).await.expect("GET");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

/// Validate `body` against the schema of `path`'s GET response `status` in the OpenAPI
/// document the runtime serves.
fn check_schema(openapi: &Value, path: &str, status: u16, body: &Value) {
    let op = &openapi["paths"][path]["get"];
    assert!(op.is_object(), "{path} is not documented");
    let resp = &op["responses"][status.to_string()];
    assert!(resp.is_object(), "{path}: status {status} is not documented");
    let content = resp["content"].as_object().expect("content");
    let schema = content.values().next().expect("a media type")["schema"].clone();
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": openapi["components"],
        "allOf": [schema],
    });
    let validator = jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("{path}: schema does not compile: {e}"));
    let errors: Vec<String> = validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{path} {status}: response does not match the OpenAPI document: {errors:#?}\n{body:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actor_tree_shows_a_panicked_sensor_with_its_restart_and_reason() {
    let broker = Mosquitto::start_plain().await.unwrap_or_else(|e| panic!("{e}"));
    let rt = start(&broker.url(), "").await;
    let (_, openapi) = get(&rt, "/api/v1/openapi.json").await;

    let (status, tree) = get(&rt, "/api/v1/actors").await;
    assert_eq!(status, 200);
    check_schema(&openapi, "/api/v1/actors", 200, &tree);
    let items = tree["items"].as_array().expect("items");
    // root, sinks, 1 sink, twins, 7 districts, 10 sensors
    let districts: Vec<&str> =
        items.iter().filter(|a| a["parent"] == "root/twins").map(|a| a["name"].as_str().unwrap_or_default()).collect();
    assert_eq!(districts, ["Fort-de-France", "Lamentin", "Marin", "Robert", "Schœlcher", "Trinité"]);
    assert_eq!(tree["total"], 1 + 1 + 1 + 1 + districts.len() + 10);
    for a in items {
        if let Some(parent) = a["parent"].as_str() {
            let p = items.iter().find(|x| x["path"] == parent).expect("parent listed");
            assert!(p["children"].as_array().is_some_and(|c| c.contains(&a["path"])), "{parent} lists {}", a["path"]);
        }
    }
    let sensors = get(&rt, "/api/v1/actors?kind=sensor").await.1;
    assert_eq!(sensors["total"], 10);

    let path = "/api/v1/actors/root/twins/Fort-de-France/aq-fdf-01";
    wait_until_async("the sensor to have handled a few ticks", DEADLINE, || async {
        get(&rt, path).await.1["actor"]["messages_handled"].as_u64().unwrap_or(0) >= 3
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let (_, before) = get(&rt, path).await;
    check_schema(&openapi, "/api/v1/actors/{path}", 200, &before);
    assert_eq!(before["responding"], true);
    assert_eq!(before["actor"]["status"], "running");
    assert_eq!(before["actor"]["restarts"], 0);
    assert_eq!(before["state"]["id"], "aq-fdf-01");
    let seq_before = before["state"]["seq"].as_u64().expect("seq");

    rt.sensor("aq-fdf-01").expect("running").cast(SensorMsg::Panic("inspection test".into())).expect("cast");
    wait_until_async("the restart to show in the API", DEADLINE, || async {
        let a = get(&rt, path).await.1;
        a["actor"]["restarts"] == 1 && a["actor"]["status"] == "running" && a["responding"] == true
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let (_, after) = get(&rt, path).await;
    let reason = after["actor"]["last_failure"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("fault injected into sensor aq-fdf-01: inspection test"), "{after:#}");
    assert!(after["actor"]["last_failure"]["at_unix_ms"].as_u64().is_some());
    assert_ne!(after["actor"]["actor_id"], before["actor"]["actor_id"]);
    assert!(after["state"]["seq"].as_u64().expect("seq") >= seq_before, "twin state kept");
    // The district supervisor shows it too, and nobody else restarted.
    let (_, district) = get(&rt, "/api/v1/actors/root/twins/Fort-de-France").await;
    assert_eq!(district["state"]["total_restarts"], 1);
    let all = get(&rt, "/api/v1/actors").await.1;
    let restarted: Vec<&Value> =
        all["items"].as_array().expect("items").iter().filter(|a| a["restarts"] != 0).collect();
    assert_eq!(restarted.len(), 1, "{restarted:?}");

    let (status, missing) = get(&rt, "/api/v1/actors/root/nowhere").await;
    assert_eq!(status, 404);
    check_schema(&openapi, "/api/v1/actors/{path}", 404, &missing);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_broker_shows_a_disconnected_sink_with_a_growing_queue_and_readyz_says_why() {
    // The broker is not there yet: the sink never connected, so the runtime is not ready.
    let port = free_port();
    let rt = start(&format!("mqtt://127.0.0.1:{port}"), "").await;
    let (_, openapi) = get(&rt, "/api/v1/openapi.json").await;
    let (status, why) = get_text(&rt, "/readyz").await;
    assert_eq!(status, 503);
    assert!(why.contains("sink mosquitto (mqtt://127.0.0.1:") && why.contains("has not connected yet"), "{why}");
    wait_until_async("the refused connection to be the reason", DEADLINE, || async {
        get_text(&rt, "/readyz").await.1.contains("Connection refused")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let sink = |v: &Value| v["items"][0].clone();
    let (_, first) = get(&rt, "/api/v1/sinks").await;
    check_schema(&openapi, "/api/v1/sinks", 200, &first);
    let q1 = sink(&first)["queue_len"].as_u64().expect("queue_len");
    wait_until_async("the queue to grow", DEADLINE, || async {
        sink(&get(&rt, "/api/v1/sinks").await.1)["queue_len"].as_u64().unwrap_or(0) > q1 + 20
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let s = sink(&get(&rt, "/api/v1/sinks").await.1);
    assert_eq!(s["connected"], false);
    assert_eq!(s["sent"], 0);
    assert!(s["last_error"].as_str().is_some_and(|e| e.contains("Connection refused")), "{s}");
    let (_, actor) = get(&rt, "/api/v1/actors/root/sinks/mqtt:mosquitto").await;
    assert_eq!(actor["state"]["connected"], false);

    // The broker arrives: the sink connects, drains its queue, the runtime is ready.
    let mut broker =
        Mosquitto::start_with(MosquittoOptions::plain().with_port(port)).await.unwrap_or_else(|e| panic!("{e}"));
    wait_until_async("ready", DEADLINE, || async { get_text(&rt, "/readyz").await.0 == 200 })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until_async("the queue to drain", DEADLINE, || async {
        let s = sink(&get(&rt, "/api/v1/sinks").await.1);
        s["connected"] == true && s["queue_len"].as_u64().unwrap_or(1) < 20 && s["sent"].as_u64().unwrap_or(0) > q1
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let s = sink(&get(&rt, "/api/v1/sinks").await.1);
    assert!(s["last_minute"]["sent"].as_u64().unwrap_or(0) > 0, "{s}");
    assert!(s["last_success_at_unix_ms"].as_u64().is_some());

    // Stopped again: disconnected, the queue grows, and the API says so.
    broker.kill();
    wait_until_async("the sink to be disconnected", DEADLINE, || async {
        sink(&get(&rt, "/api/v1/sinks").await.1)["connected"] == false
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let q2 = sink(&get(&rt, "/api/v1/sinks").await.1)["queue_len"].as_u64().expect("queue_len");
    wait_until_async("the queue to grow again", DEADLINE, || async {
        sink(&get(&rt, "/api/v1/sinks").await.1)["queue_len"].as_u64().unwrap_or(0) > q2 + 20
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let metrics = get_text(&rt, "/metrics").await.1;
    assert!(metrics.contains("simulator_sink_connected{sink=\"mosquitto\"} 0"), "{metrics}");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_sinks_geojson_and_events_match_the_runtime() {
    let broker = Mosquitto::start_plain().await.unwrap_or_else(|e| panic!("{e}"));
    let rt = start(&broker.url(), "").await;
    let (_, openapi) = get(&rt, "/api/v1/openapi.json").await;
    let registry = rt.registry().clone();
    wait_until("every twin to emit", DEADLINE, || registry.ids().iter().all(|id| registry.seq(id).unwrap_or(0) >= 2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let (status, all) = get(&rt, "/api/v1/twins").await;
    assert_eq!(status, 200);
    check_schema(&openapi, "/api/v1/twins", 200, &all);
    assert_eq!(all["total"], 10);
    let aq = get(&rt, "/api/v1/twins?type=air-quality").await.1;
    assert_eq!(aq["total"], 2);
    let fdf = get(&rt, "/api/v1/twins?district=fort-de-france").await.1;
    let ids: Vec<&str> =
        fdf["items"].as_array().expect("items").iter().map(|t| t["id"].as_str().unwrap_or_default()).collect();
    assert_eq!(ids, ["aq-fdf-01", "noise-fdf-01", "parking-fdf-01", "traffic-fdf-01"]);
    let page = get(&rt, "/api/v1/twins?offset=8&limit=5").await.1;
    assert_eq!((page["total"].as_u64(), page["items"].as_array().map(Vec::len)), (Some(10), Some(2)));

    let (_, twin) = get(&rt, "/api/v1/twins/weather-lam-01").await;
    check_schema(&openapi, "/api/v1/twins/{id}", 200, &twin);
    assert!(twin["seq"].as_u64().expect("seq") >= 2);
    assert_eq!(twin["spec"]["kind"], "weather");
    assert_eq!(twin["state"]["model"], "weather");
    let last = &twin["last_observation"];
    assert_eq!(last["id"], "weather-lam-01");
    assert!(last["values"]["temperature"].as_f64().is_some_and(|t| (5.0..45.0).contains(&t)), "{last}");
    let delivery = &twin["delivery"][0];
    assert_eq!(delivery["sink"], "mosquitto");
    wait_until_async("the sink to deliver the twin's observations", DEADLINE, || async {
        get(&rt, "/api/v1/twins/weather-lam-01").await.1["delivery"][0]["delivered_seq"].as_u64().unwrap_or(0) >= 2
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get(&rt, "/api/v1/twins/nope").await.0, 404);

    let (status, geo) = get(&rt, "/api/v1/twins.geojson").await;
    assert_eq!(status, 200);
    check_schema(&openapi, "/api/v1/twins.geojson", 200, &geo);
    let features = geo["features"].as_array().expect("features");
    assert_eq!(features.len(), 10);
    let aq = features.iter().find(|f| f["id"] == "aq-fdf-01").expect("aq-fdf-01");
    assert_eq!(aq["geometry"], json!({"type": "Point", "coordinates": [-61.067, 14.604]}));
    assert!(aq["properties"]["values"]["pm10"].as_f64().is_some(), "{aq}");

    // Bad requests name what is wrong.
    for (path, param) in [
        ("/api/v1/twins?type=toaster", "type"),
        ("/api/v1/twins?limit=ten", "limit"),
        ("/api/v1/twins?limit=999999", "limit"),
        ("/api/v1/twins?colour=red", "colour"),
        ("/api/v1/twins?district=Atlantis", "district"),
        ("/api/v1/actors?kind=robot", "kind"),
    ] {
        let (status, body) = get(&rt, path).await;
        assert_eq!(status, 400, "{path}");
        assert_eq!(body["error"]["param"], param, "{path}: {body}");
        check_schema(&openapi, path.split('?').next().unwrap_or(path), 400, &body);
    }
    assert_eq!(get(&rt, "/api/v1/nothing").await.0, 404);

    // The live stream: a first snapshot at once, with the tree and the sinks.
    let resp = reqwest::get(format!("http://{}/api/v1/events", rt.http_addr())).await.expect("GET /api/v1/events");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    let first = tokio::time::timeout(DEADLINE, async {
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
            if let Some(end) = text.find("\n\n") {
                return text[..end].to_string();
            }
        }
        text.clone()
    })
    .await
    .expect("an event within the deadline");
    assert!(first.starts_with("event: snapshot\ndata: "), "{first}");
    let data: Value = serde_json::from_str(first.trim_start_matches("event: snapshot\ndata: ")).expect("JSON data");
    assert_eq!(data["twins"], 10);
    assert_eq!(data["sinks"][0]["name"], "mosquitto");
    let by_parent = data["sensors_by_parent"].as_array().expect("sensors_by_parent");
    assert_eq!(by_parent.iter().map(|d| d["sensors"].as_u64().unwrap_or(0)).sum::<u64>(), 10);
    assert!(data["actors"].as_array().is_some_and(|a| a.iter().any(|x| x["path"] == "root/twins/Fort-de-France")));
    rt.shutdown().await;
}

#[test]
fn the_openapi_document_lists_every_route_the_server_has() {
    let doc: Value = serde_json::from_str(twin_runtime::http::api::OPENAPI).expect("valid JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let paths: Vec<&String> = doc["paths"].as_object().expect("paths").keys().collect();
    let source = include_str!("../src/http/mod.rs");
    for line in source.lines().filter(|l| l.contains(".route(\"")) {
        let route = line.split('"').nth(1).expect("route path");
        if route == "/" || route.starts_with("/assets/") {
            continue; // the page, not the API
        }
        let documented = route.replace("{*path}", "{path}");
        assert!(paths.iter().any(|p| **p == documented), "route {route} is not in openapi.json");
    }
}
