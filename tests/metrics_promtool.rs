//! `/metrics` and the monitoring configuration, checked by Prometheus's own `promtool`:
//!
//! * a real scrape of a running runtime (one Mosquitto sink that delivers, one sink whose
//!   broker does not exist, a restarted sensor) passes `promtool check metrics` and carries
//!   every documented series with sensible values;
//! * `config/prometheus/prometheus.yml` passes `promtool check config`;
//! * every PromQL expression of the Grafana dashboard (`config/grafana/dashboards/twinrt.json`)
//!   parses (`promtool check rules` on a generated rules file) and names only metrics a real
//!   scrape exposes, through the provisioned datasource.
//!
//! promtool comes from Debian's `prometheus` package (scripts/test.sh installs it); without it
//! these tests fail and say so.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{free_port, wait_until, wait_until_async, Mosquitto};
use twin_runtime::config::Config;
use twin_runtime::sensor::SensorMsg;
use twin_runtime::Runtime;

const DEADLINE: Duration = Duration::from_secs(20);

pub const PROMTOOL_MISSING: &str =
    "promtool not found: install it with 'apt-get install -y prometheus' (or run scripts/test.sh)";

/// The sensors of the test runtime: (id, type, district), one of each kind.
const SENSORS: &[(&str, &str, &str)] = &[
    ("traffic-fdf-01", "traffic", "Fort-de-France"),
    ("aq-fdf-01", "air-quality", "Fort-de-France"),
    ("parking-lam-01", "parking", "Le Lamentin"),
    ("noise-fdf-01", "noise", "Fort-de-France"),
    ("weather-lam-01", "weather", "Le Lamentin"),
    ("light-sch-01", "light", "Schœlcher"),
];

/// The sensor the tests make fail once, so `simulator_actor_restarts_total` has a series.
const FAILING_SENSOR: &str = "noise-fdf-01";

/// Capacity of the dead sink's queue: small, so it fills and drops within a second.
const DEAD_QUEUE_CAPACITY: usize = 20;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

// ---------------------------------------------------------------------------------------------
// promtool

/// `$PROMTOOL_BIN`, then `promtool` on `$PATH`, then `/usr/bin/promtool`; panics with
/// [`PROMTOOL_MISSING`] otherwise (never a silent skip).
fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMTOOL_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{PROMTOOL_MISSING} ($PROMTOOL_BIN={} does not exist)", p.display());
        return p;
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|d| d.join("promtool")).find(|p| p.is_file()))
        .unwrap_or_default();
    on_path
        .or_else(|| Some(PathBuf::from("/usr/bin/promtool")).filter(|p| p.is_file()))
        .unwrap_or_else(|| panic!("{PROMTOOL_MISSING}"))
}

/// Runs promtool with `args`, its stdin read from `stdin` (a file) if given.
fn run_promtool(args: &[&str], stdin: Option<&Path>) -> Output {
    let bin = promtool();
    let input = match stdin {
        Some(p) => Stdio::from(std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))),
        None => Stdio::null(),
    };
    Command::new(&bin).args(args).stdin(input).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

fn describe(out: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// The Prometheus text format, parsed just enough for assertions.

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    samples: Vec<Sample>,
    /// Family name -> type, from `# TYPE` lines.
    types: BTreeMap<String, String>,
    /// Families with a `# HELP` line.
    helped: BTreeSet<String>,
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(',') | Some(' ')) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('='), "label {key} without '=' in {{{s}}}");
        assert_eq!(chars.next(), Some('"'), "label {key} value not quoted in {{{s}}}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => panic!("dangling escape in {{{s}}}"),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => panic!("unterminated label value in {{{s}}}"),
            }
        }
        labels.insert(key.trim().to_string(), value);
    }
    labels
}

fn parse_value(v: &str) -> f64 {
    match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => v.parse().unwrap_or_else(|e| panic!("bad sample value {v:?}: {e}")),
    }
}

fn parse_exposition(text: &str) -> Exposition {
    let mut e = Exposition::default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, ty) = (it.next().unwrap_or_default(), it.next().unwrap_or_default());
            e.types.insert(name.to_string(), ty.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            e.helped.insert(rest.split_whitespace().next().unwrap_or_default().to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.find('{') {
            Some(open) => {
                let close = line.rfind('}').unwrap_or_else(|| panic!("unbalanced braces: {line}"));
                let name = &line[..open];
                let labels = parse_labels(&line[open + 1..close]);
                let value = line[close + 1..].split_whitespace().next().unwrap_or_default();
                ((name.to_string(), labels), value)
            }
            None => {
                let mut it = line.split_whitespace();
                let name = it.next().unwrap_or_default();
                ((name.to_string(), BTreeMap::new()), it.next().unwrap_or_default())
            }
        };
        e.samples.push(Sample { name: series.0, labels: series.1, value: parse_value(value) });
    }
    e
}

impl Exposition {
    /// The value of the sample `name` whose labels include every `(key, value)` of `with`.
    fn value(&self, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && with.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
            .map(|s| s.value)
    }

    /// Every metric name a query can use: sample names (a histogram's `_bucket`, `_sum`,
    /// `_count`) and family names.
    fn names(&self) -> BTreeSet<String> {
        self.samples.iter().map(|s| s.name.clone()).chain(self.types.keys().cloned()).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// A running runtime under load, scraped over HTTP.

fn test_config(mosquitto_url: &str, dead_port: u16) -> Config {
    let mut text = format!(
        "[runtime]\ninterval = \"50ms\"\nshutdown_grace = \"300ms\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n\
         [[sinks.mqtt]]\nname = \"mosquitto\"\nurl = \"{mosquitto_url}\"\nqos = 1\n\
         [[sinks.mqtt]]\nname = \"dead\"\nurl = \"mqtt://127.0.0.1:{dead_port}\"\nqos = 1\n\
         queue_capacity = {DEAD_QUEUE_CAPACITY}\nreconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n"
    );
    for (id, kind, district) in SENSORS {
        text.push_str(&format!("[[sensors]]\nid = \"{id}\"\ntype = \"{kind}\"\ndistrict = \"{district}\"\n"));
    }
    Config::parse(&text, "metrics_promtool test config", &[]).unwrap_or_else(|e| panic!("{e}"))
}

struct Scrape {
    text: String,
    content_type: String,
    exposition: Exposition,
}

async fn get_metrics(client: &reqwest::Client, url: &str) -> Result<(String, String), String> {
    let resp = client.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: {}", resp.status()));
    }
    let ct =
        resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body = resp.text().await.map_err(|e| format!("GET {url}: body: {e}"))?;
    Ok((ct, body))
}

/// Everything the assertions need is in the scrape: deliveries (and their latency) to
/// Mosquitto, a full and dropping queue on the dead sink, a sensor restart, every type seen.
fn scrape_is_complete(e: &Exposition) -> bool {
    let v = |name: &str, with: &[(&str, &str)]| e.value(name, with).unwrap_or(0.0);
    v("simulator_messages_sent_total", &[("sink", "mosquitto")]) >= 20.0
        && v("simulator_publish_latency_seconds_count", &[("sink", "mosquitto")]) >= 20.0
        && v("simulator_sink_connected", &[("sink", "mosquitto")]) == 1.0
        && v("simulator_messages_dropped_total", &[("sink", "dead")]) > 0.0
        && v("simulator_sink_queue_length", &[("sink", "dead")]) > 0.0
        && v("simulator_actor_restarts_total", &[("kind", "sensor")]) >= 1.0
        && v("simulator_twins_running", &[]) == SENSORS.len() as f64
        && SENSORS.iter().all(|(_, kind, _)| v("simulator_observations_generated_total", &[("type", kind)]) > 0.0)
}

/// Starts a Mosquitto broker and a runtime (sinks `mosquitto` and `dead`), makes one sensor
/// fail once, waits until a scrape shows all of it, shuts the runtime down and returns that
/// scrape.
async fn live_scrape() -> Scrape {
    let mosquitto = Mosquitto::start_plain().await.unwrap_or_else(|e| panic!("{e}"));
    let dead_port = free_port();
    let rt = Runtime::start(test_config(&mosquitto.url(), dead_port)).await.unwrap_or_else(|e| panic!("{e}"));
    let url = format!("http://{}/metrics", rt.http_addr());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("reqwest client");

    // One restart, so the restart counter has a series (it has none until the first one).
    wait_until("every twin actor to run", DEADLINE, || SENSORS.iter().all(|(id, _, _)| rt.sensor(id).is_some()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    rt.sensor(FAILING_SENSOR)
        .expect("sensor actor")
        .cast(SensorMsg::Fail("metrics_promtool: one restart".into()))
        .expect("cast to the sensor");

    let last = Arc::new(Mutex::new(String::new()));
    let waited = wait_until_async("a scrape with deliveries, drops, a restart and every type", DEADLINE, || {
        let (client, url, last) = (client.clone(), url.clone(), last.clone());
        async move {
            let (done, seen) = match get_metrics(&client, &url).await {
                Ok((_, body)) => (scrape_is_complete(&parse_exposition(&body)), body),
                Err(e) => (false, e),
            };
            *last.lock().expect("last scrape") = seen;
            done
        }
    })
    .await;
    if let Err(e) = waited {
        panic!("{e}\nlast scrape:\n{}", last.lock().expect("last scrape"));
    }
    let (content_type, text) = get_metrics(&client, &url).await.unwrap_or_else(|e| panic!("{e}"));

    let report = rt.shutdown().await;
    let mosq = report.sinks.iter().find(|s| s.name == "mosquitto").expect("mosquitto sink in the report");
    let exposition = parse_exposition(&text);
    let scraped_sent = exposition.value("simulator_messages_sent_total", &[("sink", "mosquitto")]).unwrap_or(0.0);
    assert!(
        mosq.sent as f64 >= scraped_sent,
        "counters only grow: the shutdown report says {} sent, the earlier scrape {scraped_sent}",
        mosq.sent
    );
    drop(mosquitto);
    Scrape { text, content_type, exposition }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_scrape_passes_promtool_check_metrics_and_has_every_series() {
    promtool(); // fail first, and clearly, if it is missing
    let scrape = live_scrape().await;

    // promtool reads the exposition from a file (stdin), exactly as served.
    let mut file = tempfile::Builder::new().prefix("twinrt-metrics-").suffix(".prom").tempfile().expect("temp file");
    file.write_all(scrape.text.as_bytes()).expect("write the scrape");
    file.flush().expect("flush the scrape");
    let out = run_promtool(&["check", "metrics"], Some(file.path()));
    println!("promtool check metrics:\n{}", describe(&out)); // shown with --nocapture
    assert!(
        out.status.success(),
        "promtool check metrics failed on the scrape:\n{}\n--- scrape ---\n{}",
        describe(&out),
        scrape.text
    );

    assert!(
        scrape.content_type.starts_with("text/plain") && scrape.content_type.contains("version=0.0.4"),
        "Content-Type of /metrics: {:?}",
        scrape.content_type
    );

    println!("--- scrape ---\n{}", scrape.text);
    let e = &scrape.exposition;
    let expected_types = [
        ("simulator_observations_generated_total", "counter"),
        ("simulator_messages_sent_total", "counter"),
        ("simulator_messages_failed_total", "counter"),
        ("simulator_messages_dropped_total", "counter"),
        ("simulator_messages_retried_total", "counter"),
        ("simulator_sink_queue_length", "gauge"),
        ("simulator_sink_connected", "gauge"),
        ("simulator_publish_latency_seconds", "histogram"),
        ("simulator_actor_restarts_total", "counter"),
        ("simulator_twins_running", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ];
    for (name, ty) in expected_types {
        assert_eq!(e.types.get(name).map(String::as_str), Some(ty), "# TYPE of {name}\n{}", scrape.text);
        assert!(e.helped.contains(name), "{name} has no # HELP\n{}", scrape.text);
    }

    let v = |name: &str, with: &[(&str, &str)]| {
        e.value(name, with).unwrap_or_else(|| panic!("no series {name}{with:?} in the scrape:\n{}", scrape.text))
    };
    // Every sensor type generated observations.
    for (_, kind, _) in SENSORS {
        assert!(v("simulator_observations_generated_total", &[("type", kind)]) > 0.0, "observations of {kind}");
    }
    // Both sinks have every per-sink series, the healthy one delivers, the dead one holds and drops.
    for sink in ["mosquitto", "dead"] {
        for name in [
            "simulator_messages_sent_total",
            "simulator_messages_failed_total",
            "simulator_messages_dropped_total",
            "simulator_messages_retried_total",
            "simulator_sink_queue_length",
            "simulator_sink_connected",
            "simulator_publish_latency_seconds_count",
            "simulator_publish_latency_seconds_sum",
        ] {
            v(name, &[("sink", sink)]);
        }
    }
    assert!(v("simulator_messages_sent_total", &[("sink", "mosquitto")]) >= 20.0);
    assert_eq!(v("simulator_sink_connected", &[("sink", "mosquitto")]), 1.0);
    assert_eq!(v("simulator_messages_dropped_total", &[("sink", "mosquitto")]), 0.0, "the reachable broker keeps up");
    assert_eq!(v("simulator_messages_sent_total", &[("sink", "dead")]), 0.0, "nothing listens behind the dead sink");
    assert_eq!(v("simulator_sink_connected", &[("sink", "dead")]), 0.0);
    let dead_queue = v("simulator_sink_queue_length", &[("sink", "dead")]);
    assert!(
        dead_queue > 0.0 && dead_queue <= DEAD_QUEUE_CAPACITY as f64,
        "dead sink queue length {dead_queue} should be in 1..={DEAD_QUEUE_CAPACITY}"
    );
    assert!(v("simulator_messages_dropped_total", &[("sink", "dead")]) > 0.0, "a full queue drops");
    assert_eq!(v("simulator_publish_latency_seconds_count", &[("sink", "dead")]), 0.0);

    // The latency histogram is consistent: cumulative buckets, +Inf == count, plausible sum.
    let buckets: Vec<(f64, f64)> = e
        .samples
        .iter()
        .filter(|s| {
            s.name == "simulator_publish_latency_seconds_bucket"
                && s.labels.get("sink").map(String::as_str) == Some("mosquitto")
        })
        .map(|s| (parse_value(s.labels.get("le").expect("le label")), s.value))
        .collect();
    assert!(buckets.len() >= 2, "latency buckets: {buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "buckets sorted and cumulative: {buckets:?}"
    );
    let count = v("simulator_publish_latency_seconds_count", &[("sink", "mosquitto")]);
    assert_eq!(buckets.last().copied(), Some((f64::INFINITY, count)), "+Inf bucket equals _count");
    assert!(count >= 20.0, "latency observations: {count}");
    let sum = v("simulator_publish_latency_seconds_sum", &[("sink", "mosquitto")]);
    assert!(sum > 0.0 && sum / count < 5.0, "mean latency to a local broker: {} s", sum / count);

    // Supervision and the process.
    assert!(v("simulator_actor_restarts_total", &[("kind", "sensor")]) >= 1.0);
    assert_eq!(v("simulator_twins_running", &[]), SENSORS.len() as f64);
    assert!(v("process_resident_memory_bytes", &[]) > 1_000_000.0, "RSS of a tokio process is over 1 MB");
    // The prometheus crate's process collector counts CPU time in whole seconds (an
    // IntCounter), so a young, mostly idle process may still show 0.
    let cpu = v("process_cpu_seconds_total", &[]);
    assert!(cpu >= 0.0 && cpu.fract() == 0.0, "process_cpu_seconds_total {cpu}");
    let started = v("process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    assert!(started > 1.6e9 && started <= now + 1.0, "process_start_time_seconds {started} vs now {now}");

    // Labels stay bounded: only the configured sinks, types and the actor kinds appear.
    let sinks: BTreeSet<&str> = e.samples.iter().filter_map(|s| s.labels.get("sink").map(String::as_str)).collect();
    assert_eq!(sinks, BTreeSet::from(["dead", "mosquitto"]), "sink label values");
}

#[test]
fn prometheus_config_passes_promtool_check_config() {
    let path = repo_file("config/prometheus/prometheus.yml");
    let out = run_promtool(&["check", "config", path.to_str().expect("utf-8 path")], None);
    assert!(out.status.success(), "promtool check config {}:\n{}", path.display(), describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("SUCCESS"), "promtool says: {stdout}");

    // The jobs and targets the stack expects (promtool checks syntax, not intent).
    let text = std::fs::read_to_string(&path).expect("read prometheus.yml");
    for needle in [
        "job_name: twinrt",
        "host.docker.internal:8001",
        "scrape_interval: 5s",
        "emqx:18083",
        "/api/v5/prometheus/stats",
        "pulsar:8080",
        "redpanda:9644",
        "/public_metrics",
        "influxdb:8086",
        "job_name: prometheus",
    ] {
        assert!(text.contains(needle), "prometheus.yml lacks {needle:?}");
    }
}

/// The provisioned datasource's uid, read from its YAML (`uid: ...`).
fn provisioned_datasource_uid() -> String {
    let path = repo_file("config/grafana/provisioning/datasources/prometheus.yml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let uids: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("uid:"))
        .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .collect();
    assert_eq!(uids.len(), 1, "{}: expected exactly one datasource uid, found {uids:?}", path.display());
    assert!(text.contains("type: prometheus"), "{}: not a Prometheus datasource", path.display());
    uids.into_iter().next().expect("one uid")
}

/// Every panel, rows' nested panels included.
fn all_panels(panels: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for p in panels {
        out.push(p);
        if let Some(nested) = p.get("panels").and_then(|n| n.as_array()) {
            out.extend(all_panels(nested));
        }
    }
    out
}

/// Metric names in a query: identifiers starting with `simulator_` or `process_`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    for prefix in ["simulator_", "process_"] {
        for (at, _) in expr.match_indices(prefix) {
            if expr[..at].chars().next_back().is_some_and(is_ident) {
                continue; // inside a longer identifier
            }
            let name: String = expr[at..].chars().take_while(|c| is_ident(*c)).collect();
            names.insert(name);
        }
    }
    names
}

/// A Grafana query as PromQL: template variables replaced by values promtool can parse.
fn as_promql(expr: &str) -> String {
    expr.replace("${sink:regex}", ".*")
        .replace("${sink}", ".*")
        .replace("$sink", ".*")
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_parse_and_use_only_exposed_metrics() {
    promtool();
    let uid = provisioned_datasource_uid();
    let path = repo_file("config/grafana/dashboards/twinrt.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dash: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", path.display()));

    let schema = dash["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()), "the dashboard has a fixed uid");
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()), "the dashboard has a title");

    // The sink variable.
    let vars = dash["templating"]["list"].as_array().expect("templating.list");
    let sink_var = vars.iter().find(|v| v["name"] == "sink").expect("a `sink` template variable");
    let var_query = sink_var["query"]["query"].as_str().or_else(|| sink_var["query"].as_str()).expect("sink query");
    assert_eq!(var_query, "label_values(simulator_messages_sent_total, sink)");
    assert_eq!(sink_var["datasource"]["uid"], uid.as_str(), "datasource of the sink variable");

    // Panels: every query through the provisioned datasource.
    let panels = all_panels(dash["panels"].as_array().expect("panels"));
    let mut exprs: Vec<(String, String)> = Vec::new(); // (panel title, expr)
    let mut ids = BTreeSet::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or_default().to_string();
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "duplicate panel id in {title:?}");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], uid.as_str(), "datasource of panel {title:?}");
        assert_eq!(p["datasource"]["type"], "prometheus", "datasource type of panel {title:?}");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("panel {title:?} has no targets"));
        assert!(!targets.is_empty(), "panel {title:?} has no queries");
        for t in targets {
            if let Some(ds) = t.get("datasource") {
                assert_eq!(ds["uid"], uid.as_str(), "datasource of a query of {title:?}");
            }
            let expr = t["expr"].as_str().unwrap_or_else(|| panic!("a query of {title:?} has no expr"));
            assert!(!expr.trim().is_empty(), "empty query in {title:?}");
            exprs.push((title.clone(), expr.to_string()));
        }
    }

    // The panels the dashboard promises, by title word and query shape.
    let has = |title_word: &str, panel_type: &str, pieces: &[&str]| {
        panels.iter().any(|p| {
            p["type"] == panel_type
                && p["title"].as_str().is_some_and(|t| t.to_lowercase().contains(title_word))
                && p["targets"].as_array().is_some_and(|ts| {
                    pieces.iter().all(|piece| ts.iter().any(|t| t["expr"].as_str().is_some_and(|e| e.contains(piece))))
                })
        })
    };
    let required: &[(&str, &str, &[&str])] = &[
        ("observations", "timeseries", &["rate(simulator_observations_generated_total[1m])", "by (type)"]),
        (
            "messages",
            "timeseries",
            &[
                "rate(simulator_messages_sent_total",
                "rate(simulator_messages_failed_total",
                "rate(simulator_messages_dropped_total",
                "rate(simulator_messages_retried_total",
                "by (sink)",
            ],
        ),
        ("dropped", "timeseries", &["simulator_messages_dropped_total", "by (sink)"]),
        ("queue", "timeseries", &["simulator_sink_queue_length", "by (sink)"]),
        ("connected", "state-timeline", &["simulator_sink_connected"]),
        (
            "latency",
            "timeseries",
            &[
                "histogram_quantile(0.5,",
                "histogram_quantile(0.95,",
                "histogram_quantile(0.99,",
                "rate(simulator_publish_latency_seconds_bucket",
                "[1m]",
                "by (sink, le)",
            ],
        ),
        ("restarts", "timeseries", &["simulator_actor_restarts_total", "by (kind)"]),
        ("twins running", "stat", &["simulator_twins_running"]),
        ("memory", "timeseries", &["process_resident_memory_bytes"]),
        ("cpu", "timeseries", &["rate(process_cpu_seconds_total"]),
    ];
    let missing: Vec<_> = required.iter().filter(|(w, ty, pieces)| !has(w, ty, pieces)).collect();
    assert!(missing.is_empty(), "panels missing from the dashboard (title word, type, query pieces): {missing:#?}");
    // Every query over a per-sink metric follows the `sink` variable.
    let per_sink = ["simulator_messages_", "simulator_sink_", "simulator_publish_latency_seconds"];
    for (title, expr) in &exprs {
        if per_sink.iter().any(|m| expr.contains(m)) {
            assert!(expr.contains("sink=~\"$sink\""), "query of {title:?} ignores the sink variable: {expr}");
        }
    }

    // Every query parses as PromQL: promtool check rules parses each recording rule's expr.
    let mut rules = String::from("groups:\n  - name: twinrt-dashboard\n    rules:\n");
    for (i, (_, expr)) in exprs.iter().enumerate() {
        let quoted = serde_json::to_string(&as_promql(expr)).expect("JSON string"); // a valid YAML scalar
        rules.push_str(&format!("      - record: twinrt_dashboard:query_{i}\n        expr: {quoted}\n"));
    }
    let mut rules_file =
        tempfile::Builder::new().prefix("twinrt-dashboard-").suffix(".rules.yml").tempfile().expect("temp file");
    rules_file.write_all(rules.as_bytes()).expect("write rules");
    rules_file.flush().expect("flush rules");
    let out = run_promtool(&["check", "rules", rules_file.path().to_str().expect("utf-8 path")], None);
    assert!(
        out.status.success(),
        "dashboard queries do not parse as PromQL:\n{}\n--- rules ---\n{rules}",
        describe(&out)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("SUCCESS: {} rules found", exprs.len())), "promtool check rules: {said}");

    // Every metric a query names is in a real scrape.
    let scrape = live_scrape().await;
    let exposed = scrape.exposition.names();
    let mut unknown = Vec::new();
    let mut used = BTreeSet::new();
    for (title, expr) in exprs.iter().map(|(t, e)| (t.as_str(), e.as_str())).chain([("sink variable", var_query)]) {
        let names = metric_names(expr);
        assert!(!names.is_empty() || expr.contains("time()"), "query of {title:?} names no metric: {expr}");
        for n in names {
            if !exposed.contains(&n) {
                unknown.push(format!("{title}: {n}"));
            }
            used.insert(n);
        }
    }
    assert!(
        unknown.is_empty(),
        "dashboard queries name metrics /metrics does not expose: {unknown:#?}\nexposed: {exposed:#?}"
    );
    // And the dashboard shows every documented simulator metric.
    for family in scrape.exposition.types.keys().filter(|f| f.starts_with("simulator_")) {
        let shown = used.iter().any(|u| {
            u == family || u.strip_prefix(family.as_str()).is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))
        });
        assert!(shown, "{family} is exposed but no dashboard panel shows it");
    }
}

#[test]
fn metric_name_extraction_finds_histogram_series_and_ignores_longer_identifiers() {
    let names = metric_names(
        "histogram_quantile(0.99, sum by (sink, le) (rate(simulator_publish_latency_seconds_bucket{sink=~\"$sink\"}[1m]))) \
         / my_process_x + process_cpu_seconds_total",
    );
    assert_eq!(
        names,
        BTreeSet::from([
            "simulator_publish_latency_seconds_bucket".to_string(),
            "process_cpu_seconds_total".to_string()
        ])
    );
    assert_eq!(as_promql("rate(x{sink=~\"$sink\"}[$__rate_interval])"), "rate(x{sink=~\".*\"}[1m])");
}
