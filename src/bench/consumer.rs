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
//!
//! The direct posts (1, 2 and 4 batches at a time; the sink writes 4 at a time here) run
//! before and again after the consumer, and the reference is the best concurrency's mean
//! of the two: this VM's speed drifts by up to a third within minutes, and a reference
//! taken on one side only made the ratio say more about the drift than the consumer.
//!
//! Placement (`--placement`): where the processes may run, the same for the direct posts
//! and the consumer run.
//! - `split` (checked): VictoriaMetrics on the first half of the CPUs, this process (the
//!   consumer, and the bench's proxy and direct poster) on the other half, pinned with
//!   `taskset`. VictoriaMetrics' ingest limit is then its own, the same in both runs, and
//!   the ratio says whether the consumer keeps up with it, as when the database runs on a
//!   host of its own.
//! - `shared`: every process on every CPU. On a small machine the ratio then mostly says
//!   how CPU is shared: the direct poster costs next to nothing, so VictoriaMetrics has
//!   all the cores, while in the consumer run it shares them with the consumer. The CPU
//!   each side spends per record is reported for both runs, to show the split.

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
    /// `split` (VictoriaMetrics and this process on CPUs of their own; checked), `shared`
    /// (all on every CPU) or `both` (default; the check is on `split`).
    #[arg(long)]
    pub placement: Option<String>,
}

/// Where VictoriaMetrics and this process run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    Split,
    Shared,
}

impl Placement {
    fn name(self) -> &'static str {
        match self {
            Placement::Split => "split",
            Placement::Shared => "shared",
        }
    }

    /// (VictoriaMetrics' CPUs, this process's CPUs), as `taskset` lists; `None`: all.
    fn cpus(self, n: usize) -> Option<(String, String)> {
        match self {
            Placement::Shared => None,
            Placement::Split => {
                let half = n / 2;
                let list = |a: usize, b: usize| if a == b { a.to_string() } else { format!("{a}-{b}") };
                Some((list(0, half - 1), list(half, n - 1)))
            }
        }
    }
}

fn placements(arg: Option<&str>, cpus: usize) -> Result<Vec<Placement>, String> {
    if arg.is_none() && cpus < 2 {
        return Ok(vec![Placement::Shared]); // nothing to split
    }
    let list = match arg.unwrap_or("both") {
        "split" => vec![Placement::Split],
        "shared" => vec![Placement::Shared],
        "both" => vec![Placement::Split, Placement::Shared],
        other => return Err(format!("--placement: '{other}' is not one of split, shared, both")),
    };
    if cpus < 2 && list.contains(&Placement::Split) {
        return Err(format!("--placement split needs at least 2 CPUs; this machine has {cpus}"));
    }
    Ok(list)
}

const TASKSET_MISSING: &str = "taskset not found: install it with 'apt-get install -y util-linux'";

/// Pin every thread of this process to `cpus` (a `taskset` list); threads started later
/// inherit it from the thread that starts them. `taskset -a` sets each thread in turn and
/// fails when one ends meanwhile (a runtime shutting down, an idle blocking thread): then
/// it is run again, a few times.
fn pin_self(cpus: &str) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..5u64 {
        let out = Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("{TASKSET_MISSING} ({e})"))?;
        if out.status.success() {
            return Ok(());
        }
        last = String::from_utf8_lossy(&out.stderr).trim().to_string();
        std::thread::sleep(Duration::from_millis(10 * (attempt + 1)));
    }
    Err(format!("taskset -a -p -c {cpus}, 5 times: {last}"))
}

/// CPU time `pid` has used so far, in seconds (`utime` + `stime` of its `/proc/<pid>/stat`).
fn cpu_seconds_of(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    super::cpu_seconds_in_stat(&s)
}

const MIN_RATIO: f64 = 0.8;
/// The InfluxDB sink's `concurrency` in this scenario: batches written at once.
const SINK_CONCURRENCY: usize = 4;
/// The direct posts' concurrencies; the best of them is the reference.
const DIRECT_CONCURRENCY: [usize; 3] = [1, 2, SINK_CONCURRENCY];
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
    /// Start it, on `cpus` (a `taskset` list) if given.
    async fn start(tag: &str, cpus: Option<&str>) -> Result<Victoria, String> {
        let bin = ["/usr/bin/victoria-metrics", "/usr/local/bin/victoria-metrics"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or(VICTORIA_MISSING)?;
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("twinrt-bench-vm-{}-{tag}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // `taskset` execs VictoriaMetrics: the child's pid is VictoriaMetrics' own.
        let mut cmd = match cpus {
            Some(c) => {
                let mut t = Command::new("taskset");
                t.args(["-c", c, bin]);
                t
            }
            None => Command::new(bin),
        };
        let child = cmd
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", dir.join("data").display()))
            .arg("-retentionPeriod=100y")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| match cpus {
                Some(_) => format!("cannot start {bin} under taskset ({TASKSET_MISSING}): {e}"),
                None => format!("cannot start {bin}: {e}"),
            })?;
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

    fn cpu_seconds(&self) -> f64 {
        cpu_seconds_of(self.child.id())
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
        self.counter("vm_rows_inserted_total{type=\"influx\"}").await
    }

    /// `vm_http_requests_total{path="/influx/write"}`: the write requests it answered.
    async fn influx_writes(&self) -> Result<u64, String> {
        self.counter("vm_http_requests_total{path=\"/influx/write\"").await
    }

    /// The value of the first series of its `/metrics` that starts with `prefix` (0 if none).
    async fn counter(&self, prefix: &str) -> Result<u64, String> {
        let text = reqwest::get(format!("{}/metrics", self.url()))
            .await
            .map_err(|e| format!("victoria /metrics: {e}"))?
            .text()
            .await
            .map_err(|e| format!("victoria /metrics: {e}"))?;
        Ok(text
            .lines()
            .find(|l| l.starts_with(prefix))
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
    topics: Arc<Vec<(String, Vec<String>)>>,
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
    'topics: for (topic, records) in p.topics.iter() {
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
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let places = placements(a.placement.as_deref(), cpus)?;
    let mut report = Report::new("consumer");
    report.param("records", records);
    report.param("batch", batch);
    report.param("placement", a.placement.clone().unwrap_or_else(|| "both".into()));
    report.param("cpus", cpus);

    let obs = observations(records);
    // What the direct posts send: the sink's line protocol, in the sink's batches.
    let bodies: Arc<Vec<String>> = Arc::new(
        obs.chunks(batch)
            .map(|c| {
                let mut s = String::new();
                for o in c {
                    o.write_line_protocol(&mut s);
                }
                s
            })
            .collect(),
    );
    // What the proxy serves: each record's answer fragment, per topic.
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
    let topics = Arc::new(topics);

    let all = format!("0-{}", cpus.saturating_sub(1));
    for place in places {
        let pinned = place.cpus(cpus);
        if let Some((_, ours)) = &pinned {
            pin_self(ours)?;
        }
        // The placement runs on a tokio runtime of its own, started after pinning, with one
        // worker per CPU this process may use, as tokio sizes itself in a process started
        // on those CPUs (`taskset -c 1 twinrt ...`): not two workers taking turns on one CPU.
        let workers = pinned.as_ref().map_or(cpus, |_| cpus - cpus / 2);
        let inner = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("bench-consumer")
            .enable_all()
            .build()
            .map_err(|e| format!("bench runtime: {e}"))?;
        let (bodies, topics, vm_cpus) = (bodies.clone(), topics.clone(), pinned.as_ref().map(|p| p.0.clone()));
        let result = inner
            .spawn(async move { run_placement(place, vm_cpus.as_deref(), records, batch, &bodies, &topics).await })
            .await
            .map_err(|e| format!("placement {}: {e}", place.name()))
            .and_then(|r| r);
        inner.shutdown_background();
        if pinned.is_some() {
            pin_self(&all)?;
        }
        let r = result?;
        let ratio = r.consumer / r.direct;
        let name = place.name();
        report.figure(
            name,
            json!({
                "victoria_cpus": pinned.as_ref().map(|p| p.0.clone()).unwrap_or_else(|| all.clone()),
                "twinrt_cpus": pinned.as_ref().map(|p| p.1.clone()).unwrap_or_else(|| all.clone()),
                "direct_points_per_s_before": by_concurrency(&r.direct_before),
                "direct_points_per_s_after": by_concurrency(&r.direct_after),
                "direct_best_points_per_s": round3(r.direct),
                "consumer_points_per_s": round3(r.consumer),
                "ratio_consumer_to_direct": round3(ratio),
                "victoria_cpu_us_per_point_direct": round3(
                    r.vm_cpu_direct * 1e6 / (2 * DIRECT_CONCURRENCY.len() as u64 * records) as f64
                ),
                "victoria_cpu_us_per_point_consumer": round3(r.vm_cpu_consumer * 1e6 / records as f64),
                "twinrt_cpu_us_per_record_with_proxy": round3(r.our_cpu_consumer * 1e6 / records as f64),
                "committed": r.committed,
                "bad_records": r.bad,
                "victoria_rows_direct": r.rows_direct,
                "victoria_rows_consumer": r.rows_consumer,
                "victoria_writes_consumer": r.writes_consumer,
                "mean_records_per_write_consumer": round3(records as f64 / r.writes_consumer.max(1) as f64),
            }),
        );
        report.errors.extend(r.errors.into_iter().map(|e| format!("{name}: {e}")));
        if r.rows_consumer != r.rows_direct {
            report.errors.push(format!(
                "{name}: VictoriaMetrics stored {} rows from the consumer, {} posted directly",
                r.rows_consumer, r.rows_direct
            ));
        }
        // The checked figures: the first placement run (split unless only shared was asked).
        if report.checks.is_empty() {
            report.figure("checked_placement", name);
            report.figure("consumer_points_per_s", round3(r.consumer));
            report.figure("direct_best_points_per_s", round3(r.direct));
            report.figure("committed", r.committed);
            report.figure("bad_records", r.bad);
            report.figure("victoria_rows_direct", r.rows_direct);
            report.figure("victoria_rows_consumer", r.rows_consumer);
            report.check(Check::at_least("ratio_consumer_to_direct", round3(ratio), MIN_RATIO));
        } else {
            report.figure(&format!("{name}_ratio_consumer_to_direct"), round3(ratio));
        }
    }
    Ok(report)
}

/// Rates by concurrency, as `{"c1": .., "c2": .., "c4": ..}`.
fn by_concurrency(rates: &[f64; DIRECT_CONCURRENCY.len()]) -> serde_json::Value {
    DIRECT_CONCURRENCY.iter().zip(rates).map(|(c, r)| (format!("c{c}"), json!(round3(*r)))).collect()
}

/// What one placement measured.
struct PlacementRun {
    /// The direct posts' rates before and after the consumer run, by [`DIRECT_CONCURRENCY`].
    direct_before: [f64; DIRECT_CONCURRENCY.len()],
    direct_after: [f64; DIRECT_CONCURRENCY.len()],
    /// The reference: the best of the concurrencies' means before and after.
    direct: f64,
    consumer: f64,
    committed: u64,
    bad: u64,
    rows_direct: u64,
    rows_consumer: u64,
    /// Write requests VictoriaMetrics answered in the consumer run.
    writes_consumer: u64,
    /// CPU seconds: VictoriaMetrics over the direct posts (both sides), over the consumer run; this
    /// process over the consumer run (the consumer and the bench's proxy).
    vm_cpu_direct: f64,
    vm_cpu_consumer: f64,
    our_cpu_consumer: f64,
    errors: Vec<String>,
}

/// The direct posts, then the consumer path, each against a fresh VictoriaMetrics on
/// `vm_cpus` (all when `None`).
async fn run_placement(
    place: Placement,
    vm_cpus: Option<&str>,
    records: u64,
    batch: usize,
    bodies: &[String],
    topics: &Arc<Vec<(String, Vec<String>)>>,
) -> Result<PlacementRun, String> {
    let tag = place.name();
    // 1. VictoriaMetrics alone, before the consumer run (and again after it, below).
    let before = direct_posts(&format!("{tag}-direct"), vm_cpus, records, bodies).await?;

    // 2. The consumer path, against a fresh VictoriaMetrics.
    let vm = Victoria::start(&format!("{tag}-consumer"), vm_cpus).await?;
    let listener =
        tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.map_err(|e| format!("bench proxy: bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let proxy = Arc::new(Proxy { topics: topics.clone(), base: format!("http://{addr}"), ..Proxy::default() });
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
         [[sinks.influxdb]]\nname = \"vm\"\nurl = \"{}\"\nconsumer_only = true\nbatch_size = {batch}\nconcurrency = {SINK_CONCURRENCY}\nqueue_capacity = {}\n\n\
         [redpanda_consumer]\nurl = \"http://{addr}\"\nsink = \"vm\"\npoll_interval = \"100ms\"\n",
        vm.url(),
        // The consumer keeps up to half the queue in flight: 8 batches, so that it keeps
        // fetching while 4 are being written (the sink's concurrency). With 4, it fetched
        // only when a write had ended. (A free lane takes what is queued at once, since the
        // consumer waits for it: `mean_records_per_write_consumer` says how much.)
        (batch * 4 * SINK_CONCURRENCY).max(10_000)
    );
    let config = Config::parse(&text, "bench consumer", &[]).map_err(|e| e.to_string())?;
    let (our_cpu0, vm_cpu0) = (super::cpu_seconds(), vm.cpu_seconds());
    let t = Instant::now();
    let rt = Runtime::start(config).await.map_err(|e| format!("runtime: {e}"))?;
    let consumer = rt.consumer().cloned().ok_or("no consumer started")?;
    let deadline = Duration::from_secs(60 + records / 2_000);
    let done =
        super::wait_for("the consumer to commit every record", deadline, || consumer.snapshot().committed >= records)
            .await;
    let secs = t.elapsed().as_secs_f64();
    let (our_cpu_consumer, vm_cpu_consumer) = (super::cpu_seconds() - our_cpu0, vm.cpu_seconds() - vm_cpu0);
    let snap = consumer.snapshot();
    rt.shutdown().await;
    server.abort();
    let rows_consumer = vm.settled_rows().await?;
    let writes_consumer = vm.influx_writes().await?;
    drop(vm);
    // 3. The direct posts again: this VM's speed drifts by a third within minutes, so the
    //    reference is the mean of the rates either side of the consumer run (per
    //    concurrency; the best of them).
    let after = direct_posts(&format!("{tag}-direct-after"), vm_cpus, records, bodies).await?;
    let by_concurrency: [f64; DIRECT_CONCURRENCY.len()] =
        std::array::from_fn(|i| (before.by_concurrency[i] + after.by_concurrency[i]) / 2.0);
    let mut errors: Vec<String> = done.err().into_iter().collect();
    if after.rows != before.rows {
        errors
            .push(format!("VictoriaMetrics stored {} rows per direct pass before, {} after", before.rows, after.rows));
    }
    Ok(PlacementRun {
        direct_before: before.by_concurrency,
        direct_after: after.by_concurrency,
        direct: by_concurrency.iter().copied().fold(0.0, f64::max),
        consumer: snap.committed as f64 / secs,
        committed: snap.committed,
        bad: snap.bad,
        rows_direct: before.rows,
        rows_consumer,
        writes_consumer,
        vm_cpu_direct: before.vm_cpu + after.vm_cpu,
        vm_cpu_consumer,
        our_cpu_consumer,
        errors,
    })
}

/// What the direct posts measured against one VictoriaMetrics.
struct Direct {
    /// Records per second, by [`DIRECT_CONCURRENCY`].
    by_concurrency: [f64; DIRECT_CONCURRENCY.len()],
    /// VictoriaMetrics' CPU seconds over all of them.
    vm_cpu: f64,
    /// Rows it stored per pass.
    rows: u64,
}

/// The same batches as the consumer's, posted directly with the sink's client to a fresh
/// VictoriaMetrics on `vm_cpus`, 1, 2 and 4 at a time.
async fn direct_posts(tag: &str, vm_cpus: Option<&str>, records: u64, bodies: &[String]) -> Result<Direct, String> {
    let vm = Victoria::start(tag, vm_cpus).await?;
    let mut by_concurrency = [0.0f64; DIRECT_CONCURRENCY.len()];
    let vm_cpu0 = vm.cpu_seconds();
    for (i, concurrency) in DIRECT_CONCURRENCY.into_iter().enumerate() {
        let writer = InfluxWriter::new(&vm.url(), "digitribe", "iot_data", None, false)?;
        // Copied before the clock starts: the writer takes each body by value.
        let owned: Vec<String> = bodies.to_vec();
        let queue = Arc::new(Mutex::new(owned.into_iter()));
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
        by_concurrency[i] = records as f64 / t.elapsed().as_secs_f64();
    }
    let vm_cpu = vm.cpu_seconds() - vm_cpu0;
    let rows = vm.settled_rows().await? / DIRECT_CONCURRENCY.len() as u64;
    Ok(Direct { by_concurrency, vm_cpu, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_gives_victoria_the_first_half_of_the_cpus_and_this_process_the_rest() {
        assert_eq!(Placement::Split.cpus(2), Some(("0".into(), "1".into())));
        assert_eq!(Placement::Split.cpus(3), Some(("0".into(), "1-2".into())));
        assert_eq!(Placement::Split.cpus(8), Some(("0-3".into(), "4-7".into())));
        assert_eq!(Placement::Shared.cpus(8), None);
    }

    #[test]
    fn placements_default_to_both_and_name_what_is_wrong() {
        assert_eq!(placements(None, 2), Ok(vec![Placement::Split, Placement::Shared]));
        assert_eq!(placements(None, 1), Ok(vec![Placement::Shared]));
        assert_eq!(placements(Some("shared"), 1), Ok(vec![Placement::Shared]));
        let e = placements(Some("split"), 1).expect_err("one CPU cannot be split");
        assert!(e.contains("at least 2 CPUs") && e.contains("has 1"), "{e}");
        let e = placements(Some("halves"), 4).expect_err("unknown placement");
        assert!(e.contains("--placement") && e.contains("'halves'"), "{e}");
    }
}
