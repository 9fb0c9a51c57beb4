//! `consumer`: the Redpanda consumer path (HTTP Proxy consumer group -> decode -> InfluxDB
//! sink -> VictoriaMetrics' InfluxDB API), against VictoriaMetrics' own ingest rate for the
//! same observations in the same batches posted directly with the same client library.
//!
//! The proxy side is a minimal in-bench server following the Pandaproxy consumer API the
//! consumer uses (create an instance, subscribe, fetch with `max_bytes`, commit offsets,
//! delete), preloaded with the records, each answer fragment rendered once at preload so
//! the server costs as little CPU as possible: on two cores it shares them with the
//! consumer and VictoriaMetrics. (The full test server in `tests/support/pandaproxy.rs`
//! checks every rule of the API document and logs every request: right for tests, but its
//! cost would be measured too.) VictoriaMetrics is Debian's `victoria-metrics`, started on
//! a free port with a fresh data directory for each run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use base64::Engine as _;
use clap::Args;
use serde_json::{json, Value};

use super::{free_port, round3, Check, Report};
use crate::config::Config;
use crate::sinks::influxdb::InfluxWriter;
use crate::Runtime;

#[derive(Debug, Args, Default)]
pub struct ConsumerArgs {
    /// Records preloaded (default 1,000,000; --quick 5,000).
    #[arg(long)]
    pub records: Option<u64>,
    /// InfluxDB sink batch size, also the direct posts' (default 5,000, the sink's default).
    #[arg(long)]
    pub batch: Option<usize>,
}

const MIN_RATIO: f64 = 0.8;
const VICTORIA_MISSING: &str = "victoria-metrics not found: install it with 'apt-get install -y victoria-metrics'";
const BINARY_V2: &str = "application/vnd.kafka.binary.v2+json";
const KAFKA_V2: &str = "application/vnd.kafka.v2+json";

/// VictoriaMetrics on a free port with its own data directory, killed on drop.
struct Victoria {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl Victoria {
    async fn start(tag: &str) -> Result<Victoria, String> {
        let bin = ["/usr/bin/victoria-metrics", "/usr/local/bin/victoria-metrics"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or(VICTORIA_MISSING)?;
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("twinrt-bench-vm-{}-{tag}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let child = Command::new(bin)
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", dir.join("data").display()))
            .arg("-retentionPeriod=100y")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {bin}: {e}"))?;
        let v = Victoria { port, dir, child };
        let health = format!("{}/health", v.url());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if matches!(reqwest::get(&health).await, Ok(r) if r.status().is_success()) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                return Err(format!("victoria-metrics did not answer {health} within 20s"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// [`influx_rows`](Self::influx_rows) once it stopped changing (its counters lag).
    async fn settled_rows(&self) -> Result<u64, String> {
        let mut last = self.influx_rows().await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            tokio::time::sleep(Duration::from_millis(700)).await;
            let now = self.influx_rows().await?;
            if now == last || Instant::now() > deadline {
                return Ok(now);
            }
            last = now;
        }
    }

    /// `vm_rows_inserted_total{type="influx"}`: what it stored from the InfluxDB API.
    async fn influx_rows(&self) -> Result<u64, String> {
        let text = reqwest::get(format!("{}/metrics", self.url()))
            .await
            .map_err(|e| format!("victoria /metrics: {e}"))?
            .text()
            .await
            .map_err(|e| format!("victoria /metrics: {e}"))?;
        Ok(text
            .lines()
            .find(|l| l.starts_with("vm_rows_inserted_total{type=\"influx\"}"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64)
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The proxy's state: per topic its records (rendered answer fragments and their sizes),
/// the group's committed offsets, each instance's position.
#[derive(Default)]
struct Proxy {
    topics: Vec<(String, Vec<String>)>,
    committed: Mutex<HashMap<String, i64>>,
    positions: Mutex<HashMap<String, HashMap<String, i64>>>,
    next_instance: Mutex<u64>,
    base: String,
}

type Shared = Arc<Proxy>;

fn kafka(status: StatusCode, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, KAFKA_V2)], body.to_string()).into_response()
}

async fn create(State(p): State<Shared>, Path(group): Path<String>) -> Response {
    let id = {
        let mut n = p.next_instance.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        format!("bench-{n}")
    };
    let committed = p.committed.lock().unwrap_or_else(|e| e.into_inner()).clone();
    p.positions.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), committed);
    kafka(
        StatusCode::OK,
        json!({"instance_id": id, "base_uri": format!("{}/consumers/{group}/instances/{id}", p.base)}),
    )
}

async fn subscribe(State(p): State<Shared>, Path((_g, id)): Path<(String, String)>) -> Response {
    if !p.positions.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&id) {
        return kafka(StatusCode::NOT_FOUND, json!({"error_code": 40403, "message": "Consumer instance not found"}));
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn fetch(
    State(p): State<Shared>,
    Path((_g, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let max_bytes: usize = q.get("max_bytes").and_then(|v| v.parse().ok()).unwrap_or(1 << 20);
    let mut positions = p.positions.lock().unwrap_or_else(|e| e.into_inner());
    let Some(pos) = positions.get_mut(&id) else {
        return kafka(StatusCode::NOT_FOUND, json!({"error_code": 40403, "message": "Consumer instance not found"}));
    };
    let mut body = String::with_capacity(max_bytes.min(4 << 20) + 1024);
    body.push('[');
    let mut first = true;
    'topics: for (topic, records) in &p.topics {
        let at = pos.entry(topic.clone()).or_insert(0);
        while (*at as usize) < records.len() {
            let r = &records[*at as usize];
            if !first && body.len() + r.len() + 1 > max_bytes {
                break 'topics;
            }
            if !first {
                body.push(',');
            }
            body.push_str(r);
            first = false;
            *at += 1;
        }
    }
    body.push(']');
    (StatusCode::OK, [(header::CONTENT_TYPE, BINARY_V2)], body).into_response()
}

async fn commit(State(p): State<Shared>, Path((_g, _id)): Path<(String, String)>, body: String) -> Response {
    let Ok(v) = serde_json::from_str::<Value>(&body) else {
        return kafka(StatusCode::BAD_REQUEST, json!({"error_code": 400, "message": "bad JSON"}));
    };
    let mut c = p.committed.lock().unwrap_or_else(|e| e.into_inner());
    for part in v.get("partitions").and_then(Value::as_array).into_iter().flatten() {
        if let (Some(t), Some(o)) =
            (part.get("topic").and_then(Value::as_str), part.get("offset").and_then(Value::as_i64))
        {
            c.insert(t.to_string(), o);
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn remove(State(p): State<Shared>, Path((_g, id)): Path<(String, String)>) -> Response {
    p.positions.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    StatusCode::NO_CONTENT.into_response()
}

/// `records` observations of a mixed fleet, as sensors emit them.
fn observations(records: u64) -> Vec<twins::Observation> {
    let fleet = 1000.min(records).max(1);
    let d = &twins::geo::districts()[0];
    let mut twins: Vec<twins::Twin> = (0..fleet)
        .map(|i| {
            let kind = twins::SensorKind::ALL[(i % 6) as usize];
            let spec = twins::SensorSpec {
                id: format!("c-{i:05}").into(),
                kind,
                district: d.name.clone().into(),
                location: d.place(i, 972),
            };
            twins::Twin::new(spec, 972)
        })
        .collect();
    let start = chrono::Utc::now() - chrono::Duration::days(1);
    (0..records)
        .map(|i| {
            let t = &mut twins[(i % fleet) as usize];
            t.step(start + chrono::Duration::milliseconds((i / fleet) as i64 * 5000))
        })
        .collect()
}

pub async fn run(a: ConsumerArgs, quick: bool) -> Result<Report, String> {
    let records = a.records.unwrap_or(if quick { 5_000 } else { 1_000_000 }).max(1);
    let batch = a.batch.unwrap_or(5_000).max(1);
    let mut report = Report::new("consumer");
    report.param("records", records);
    report.param("batch", batch);

    let obs = observations(records);

    // 1. VictoriaMetrics alone: the same batches, posted directly with the sink's client.
    let direct = {
        let vm = Victoria::start("direct").await?;
        let bodies: Vec<String> = obs
            .chunks(batch)
            .map(|c| {
                let mut s = String::new();
                for o in c {
                    o.write_line_protocol(&mut s);
                }
                s
            })
            .collect();
        let mut best = 0.0f64;
        let passes = [1usize, 2];
        for concurrency in passes {
            let writer = InfluxWriter::new(&vm.url(), "digitribe", "iot_data", None, false)?;
            let queue = Arc::new(Mutex::new(bodies.clone().into_iter()));
            let t = Instant::now();
            let mut tasks: Vec<tokio::task::JoinHandle<Result<(), String>>> = Vec::new();
            for _ in 0..concurrency {
                let (writer, queue) = (writer.clone(), queue.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                        let Some(body) = next else { return Ok(()) };
                        writer.write(body.into_bytes()).await.map_err(|e| format!("direct write: {e}"))?;
                    }
                }));
            }
            for t in tasks {
                t.await.map_err(|e| e.to_string())??;
            }
            let rate = records as f64 / t.elapsed().as_secs_f64();
            report.figure(&format!("direct_c{concurrency}_points_per_s"), round3(rate));
            best = best.max(rate);
        }
        (best, vm.settled_rows().await? / passes.len() as u64)
    };

    // 2. The consumer path, against a fresh VictoriaMetrics.
    let vm = Victoria::start("consumer").await?;
    let mut topics: Vec<(String, Vec<String>)> =
        twins::SensorKind::ALL.iter().map(|k| (k.as_str().to_string(), Vec::new())).collect();
    for o in &obs {
        let t = twins::SensorKind::ALL.iter().position(|k| *k == o.kind).unwrap_or(0);
        let offset = topics[t].1.len();
        let key = base64::engine::general_purpose::STANDARD.encode(o.sensor_id.as_bytes());
        let value = base64::engine::general_purpose::STANDARD.encode(o.to_mqtt_json());
        topics[t].1.push(format!(
            "{{\"topic\":\"{}\",\"key\":\"{key}\",\"value\":\"{value}\",\"partition\":0,\"offset\":{offset}}}",
            o.kind.as_str()
        ));
    }
    drop(obs);
    let listener =
        tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.map_err(|e| format!("bench proxy: bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let proxy = Arc::new(Proxy { topics, base: format!("http://{addr}"), ..Proxy::default() });
    let app = Router::new()
        .route("/consumers/{group}", post(create))
        .route("/consumers/{group}/instances/{id}", delete(remove))
        .route("/consumers/{group}/instances/{id}/subscription", post(subscribe))
        .route("/consumers/{group}/instances/{id}/records", get(fetch))
        .route("/consumers/{group}/instances/{id}/offsets", post(commit))
        .with_state(proxy.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let text = format!(
        "[runtime]\nshutdown_grace = \"30s\"\n[log]\nlevel = \"error\"\n[http]\nlisten = \"127.0.0.1:0\"\n\n\
         [[sinks.influxdb]]\nname = \"vm\"\nurl = \"{}\"\nconsumer_only = true\nbatch_size = {batch}\nqueue_capacity = {}\n\n\
         [redpanda_consumer]\nurl = \"http://{addr}\"\nsink = \"vm\"\npoll_interval = \"100ms\"\n",
        vm.url(),
        (batch * 4).max(10_000)
    );
    let config = Config::parse(&text, "bench consumer", &[]).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let rt = Runtime::start(config).await.map_err(|e| format!("runtime: {e}"))?;
    let consumer = rt.consumer().cloned().ok_or("no consumer started")?;
    let deadline = Duration::from_secs(60 + records / 2_000);
    let done =
        super::wait_for("the consumer to commit every record", deadline, || consumer.snapshot().committed >= records)
            .await;
    let secs = t.elapsed().as_secs_f64();
    let snap = consumer.snapshot();
    rt.shutdown().await;
    server.abort();
    let rows = vm.settled_rows().await?;
    let rate = snap.committed as f64 / secs;
    let ratio = rate / direct.0;
    report.figure("consumer_points_per_s", round3(rate));
    report.figure("direct_best_points_per_s", round3(direct.0));
    report.figure("committed", snap.committed);
    report.figure("bad_records", snap.bad);
    report.figure("victoria_rows_direct", direct.1);
    report.figure("victoria_rows_consumer", rows);
    report.check(Check::at_least("ratio_consumer_to_direct", round3(ratio), MIN_RATIO));
    if let Err(e) = done {
        report.errors.push(e);
    }
    if rows != direct.1 {
        report
            .errors
            .push(format!("VictoriaMetrics stored {rows} rows from the consumer, {} posted directly", direct.1));
    }
    Ok(report)
}
