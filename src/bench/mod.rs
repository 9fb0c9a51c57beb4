//! `twinrt bench`: the benchmark harness. Each scenario prints one JSON line on stdout with
//! its parameters, its figures and, for each figure that has one, the target it compares
//! to; a human summary of the same goes to stderr.
//!
//! Scenarios (each size is a parameter; the defaults reproduce the targets of the issue
//! "Performance", `--quick` shrinks everything to run in a test):
//! - [`density`]: N twins spawned and ticking; RSS per twin, time to ready, and where the
//!   cost of a twin comes from (each component built alone in a child process).
//! - [`throughput`]: twins ticking as fast as they can into a null sink that encodes.
//! - [`mqtt`]: twins publishing to a local Mosquitto against bare clients.
//! - [`steady`]: a steady load for a while: rate, tick lateness, memory.
//! - [`consumer`]: the Redpanda consumer path into VictoriaMetrics against direct posts.

pub mod consumer;
mod counter;
pub mod density;
pub mod hist;
pub mod mqtt;
pub mod nullsink;
pub mod steady;
pub mod throughput;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

/// `twinrt bench [SCENARIO] [--quick]`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Option<Scenario>,
    /// Small sizes (seconds in total per scenario): for tests, not for figures.
    #[arg(long, global = true)]
    pub quick: bool,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Every scenario, one after another, each in a process of its own (the default).
    All,
    /// Spawn N twins, let them tick, report RSS per twin and time to ready.
    Density(density::DensityArgs),
    /// Twins ticking as fast as they can into a null sink (encoding included).
    Throughput(throughput::ThroughputArgs),
    /// Twins publishing to a local Mosquitto, against mosquitto_pub and a bare rumqttc loop.
    Mqtt(mqtt::MqttArgs),
    /// A steady load: achieved rate, tick lateness, memory over time.
    Steady(steady::SteadyArgs),
    /// Redpanda consumer -> InfluxDB API (VictoriaMetrics), against direct posts.
    Consumer(consumer::ConsumerArgs),
    /// One component of a twin built alone (run by `density` in a child process).
    #[command(hide = true)]
    Component(density::ComponentArgs),
}

/// One figure compared to its target.
#[derive(Debug, Clone)]
pub struct Check {
    pub figure: String,
    pub value: f64,
    /// `"<="` or `">="`.
    pub op: &'static str,
    pub target: f64,
}

impl Check {
    pub fn at_most(figure: &str, value: f64, target: f64) -> Check {
        Check { figure: figure.into(), value, op: "<=", target }
    }

    pub fn at_least(figure: &str, value: f64, target: f64) -> Check {
        Check { figure: figure.into(), value, op: ">=", target }
    }

    pub fn ok(&self) -> bool {
        match self.op {
            "<=" => self.value <= self.target,
            _ => self.value >= self.target,
        }
    }
}

/// What a scenario reports.
#[derive(Debug, Default)]
pub struct Report {
    pub scenario: &'static str,
    pub params: Map<String, Value>,
    pub figures: Map<String, Value>,
    pub checks: Vec<Check>,
    /// Things that went wrong but did not stop the scenario (e.g. undelivered messages).
    pub errors: Vec<String>,
}

impl Report {
    pub fn new(scenario: &'static str) -> Report {
        Report { scenario, ..Report::default() }
    }

    pub fn param(&mut self, k: &str, v: impl Into<Value>) {
        self.params.insert(k.into(), v.into());
    }

    pub fn figure(&mut self, k: &str, v: impl Into<Value>) {
        self.figures.insert(k.into(), v.into());
    }

    pub fn check(&mut self, c: Check) {
        self.checks.push(c);
    }

    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.checks.iter().all(Check::ok)
    }

    pub fn to_json(&self) -> Value {
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(
                |c| json!({"figure": c.figure, "value": round3(c.value), "op": c.op, "target": c.target, "ok": c.ok()}),
            )
            .collect();
        json!({
            "scenario": self.scenario,
            "params": self.params,
            "figures": self.figures,
            "checks": checks,
            "errors": self.errors,
            "ok": self.ok(),
        })
    }

    /// The human summary: every check with its target, then the other figures.
    pub fn summary(&self) -> String {
        let mut s = format!("== {} ({})\n", self.scenario, if self.ok() { "targets met" } else { "TARGETS MISSED" });
        let params: Vec<String> = self.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        s.push_str(&format!("   params: {}\n", params.join(" ")));
        for c in &self.checks {
            s.push_str(&format!(
                "   {:<34} {:>14}   target {} {:<10} {}\n",
                c.figure,
                fmt_num(c.value),
                c.op,
                fmt_num(c.target),
                if c.ok() { "ok" } else { "MISSED" }
            ));
        }
        for (k, v) in &self.figures {
            if self.checks.iter().any(|c| &c.figure == k) {
                continue;
            }
            match v {
                Value::Object(o) => {
                    s.push_str(&format!("   {k}:\n"));
                    for (k2, v2) in o {
                        s.push_str(&format!("     {k2:<32} {}\n", compact(v2)));
                    }
                }
                _ => s.push_str(&format!("   {k:<34} {}\n", compact(v))),
            }
        }
        for e in &self.errors {
            s.push_str(&format!("   error: {e}\n"));
        }
        s
    }
}

fn compact(v: &Value) -> String {
    match v {
        Value::Number(n) => n.as_f64().map(fmt_num).unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Three decimals: figures, not noise.
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// CPU time this process has used so far, user and system, in seconds: a load-independent
/// measure of work, where rates depend on what else runs.
pub fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat").map(|s| cpu_seconds_in_stat(&s)).unwrap_or(0.0)
}

/// `utime` + `stime` of a `/proc/<pid>/stat` line, in seconds (clock ticks of 1/100 s).
pub fn cpu_seconds_in_stat(stat: &str) -> f64 {
    // The command name (2nd field) may hold spaces; the fields after it are plain.
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// The resident set size of this process, in KiB (`VmRSS` of `/proc/self/status`).
pub fn rss_kib() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else { return 0 };
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Give freed memory back to the system where the allocator supports it, so that RSS
/// readings measure what is live.
pub fn trim_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim only releases free memory; it has no preconditions.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// A free TCP port on 127.0.0.1 (bind to port 0, read it, close).
pub fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| format!("local_addr: {e}"))
}

/// Poll `f` every 10 ms until it holds or `deadline` passes.
pub async fn wait_for(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) -> Result<(), String> {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if f() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= end {
            return Err(format!("timed out after {deadline:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Parse a duration as the configuration writes them (`"10s"`, `"250ms"`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

/// The communes used for fleets: the first `n` of the 34, in the crate's order.
pub fn district_names(n: usize) -> Vec<String> {
    twins::geo::districts().iter().take(n.clamp(1, 34)).map(|d| d.name.to_string()).collect()
}

/// Sensor kinds by name, for `--kinds` (`mixed`: all six in turn).
pub fn parse_kinds(s: &str) -> Result<Vec<twins::SensorKind>, String> {
    if s == "mixed" {
        return Ok(twins::SensorKind::ALL.to_vec());
    }
    s.split(',')
        .map(|k| k.trim().parse::<twins::SensorKind>().map_err(|_| format!("unknown sensor type {k:?} in --kinds")))
        .collect()
}

/// A configuration text with `twins` generated sensors spread over `districts` communes
/// (one fleet per commune and kind), at `interval`, with `extra` appended (sinks...).
pub fn fleet_config(
    twins: u64,
    districts: usize,
    kinds: &[twins::SensorKind],
    interval: Duration,
    extra: &str,
) -> String {
    let names = district_names(districts);
    let mut fleets = Vec::new();
    for d in &names {
        for k in kinds {
            fleets.push((d.clone(), *k));
        }
    }
    let n = fleets.len() as u64;
    let mut text = format!(
        "[runtime]\nseed = 972\ninterval = \"{}ms\"\nshutdown_grace = \"30s\"\n\n[log]\nlevel = \"error\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n{extra}\n",
        interval.as_millis().max(1)
    );
    for (i, (d, k)) in fleets.iter().enumerate() {
        let count = twins / n + u64::from((i as u64) < twins % n);
        if count == 0 {
            continue;
        }
        text.push_str(&format!(
            "[[fleets]]\ntype = \"{}\"\ndistrict = \"{d}\"\ncount = {count}\nid_prefix = \"b{i}-\"\n\n",
            k.as_str()
        ));
    }
    text
}

/// The scenarios `twinrt bench` runs with no scenario named, in order.
pub const ALL: [&str; 5] = ["density", "throughput", "mqtt", "steady", "consumer"];

/// Every scenario, one after another, each in a process of its own (this binary again,
/// `twinrt bench NAME`, its output passed through): none inherits what another left in
/// the process. Density frees about 8 GB of a million actors' allocations, fragmented, and
/// a scenario run after it in the same process measured slower than alone. The exit code
/// is the worst of theirs.
fn run_each_alone(quick: bool) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("twinrt bench: cannot find this binary to run each scenario: {e}");
            return ExitCode::from(2);
        }
    };
    let mut worst = 0u8;
    for name in ALL {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["bench", name]);
        if quick {
            cmd.arg("--quick");
        }
        let code = match cmd.status() {
            Ok(status) => match status.code() {
                Some(c @ 0..=2) => c as u8,
                _ => {
                    eprintln!("twinrt bench: scenario {name} ended abnormally ({status})");
                    2
                }
            },
            Err(e) => {
                eprintln!("twinrt bench: cannot run scenario {name} ({}): {e}", exe.display());
                2
            }
        };
        worst = worst.max(code);
    }
    ExitCode::from(worst)
}

/// Run what the command line asks; the exit code says whether every target was met (0),
/// some were missed (1), or a scenario could not run (2).
pub fn main(args: BenchArgs) -> ExitCode {
    let quick = args.quick;
    let scenario = match args.scenario {
        None | Some(Scenario::All) => return run_each_alone(quick),
        Some(s) => s,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("twinrt bench: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match scenario {
        Scenario::All => return run_each_alone(quick),
        Scenario::Component(c) => return rt.block_on(density::component(c)),
        Scenario::Density(a) => rt.block_on(density::run(a, quick)),
        Scenario::Throughput(a) => rt.block_on(throughput::run(a, quick)),
        Scenario::Mqtt(a) => rt.block_on(mqtt::run(a, quick)),
        Scenario::Steady(a) => rt.block_on(steady::run(a, quick)),
        Scenario::Consumer(a) => rt.block_on(consumer::run(a, quick)),
    };
    let code = match result {
        Ok(report) => {
            println!("{}", report.to_json());
            eprint!("{}", report.summary());
            ExitCode::from(if report.ok() { 0 } else { 1 })
        }
        Err(e) => {
            eprintln!("twinrt bench: {e}");
            ExitCode::from(2)
        }
    };
    // Actors of a finished scenario may still be winding down: do not wait for them.
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}

/// Twins of a configuration running under their supervisors (the runtime's own tree
/// builder, `sensor::tree::twins_supervisor`), offering to `sinks`: for scenarios whose
/// sinks are not configured ones (the null sink).
pub struct Twins {
    pub registry: std::sync::Arc<crate::registry::Registry>,
    pub metrics: crate::metrics::Metrics,
    root: ractor::ActorRef<supervision::SupervisorMsg>,
    done: tokio::task::JoinHandle<()>,
}

impl Twins {
    pub async fn start(
        config: &crate::config::Config,
        sinks: crate::sinks::SinkSet,
        metrics: crate::metrics::Metrics,
    ) -> Result<Twins, String> {
        use supervision::{Strategy, Supervisor, SupervisorArgs, SupervisorSpec};
        let registry = crate::registry::Registry::new();
        for (spec, s) in crate::registry::specs(&config.sensors) {
            registry.ensure(spec, config.runtime.seed, s.interval);
        }
        let clock = twins::SimClock::new(chrono::Utc::now(), config.runtime.speed).map_err(|e| e.to_string())?;
        let ctx = crate::sensor::SensorContext {
            registry: registry.clone(),
            sinks,
            clock,
            real_start: crate::sensor::ScheduleStart::started_now(),
            metrics: metrics.clone(),
            faults: crate::faults::SensorFaults::new(),
        };
        let mut dir = crate::actors::Directory::default();
        let root_stats = supervision::SupervisorStats::default();
        let observer: std::sync::Arc<dyn supervision::SupervisionObserver> = std::sync::Arc::new(NoObserver);
        let spec_of = |name: &str| SupervisorSpec::new(name, Strategy::OneForOne);
        let (twins_sup, _tree) = crate::sensor::tree::twins_supervisor(
            "root",
            &root_stats,
            &config.sensors,
            &ctx,
            spec_of,
            observer,
            &mut dir,
        );
        let (root, done) = ractor::Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs::new(SupervisorSpec::new("root", Strategy::OneForOne), vec![twins_sup]),
        )
        .await
        .map_err(|e| format!("twins: {e}"))?;
        Ok(Twins { registry, metrics, root, done })
    }

    /// Stop every twin (and wait, up to a minute).
    pub async fn stop(self) {
        self.root.stop(None);
        let _ = tokio::time::timeout(Duration::from_secs(60), self.done).await;
    }
}

struct NoObserver;
impl supervision::SupervisionObserver for NoObserver {}
