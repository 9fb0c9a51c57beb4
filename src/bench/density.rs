//! `density`: how many twins one process holds, what each costs, how fast they start.
//!
//! The whole runtime is started (`Runtime::start`: registry, directory, supervision tree,
//! tickers, HTTP server) with N generated sensors; RSS is read (after `malloc_trim`, so
//! that only live memory counts) before the configuration is parsed and again once every
//! twin has ticked, so the per-twin figure includes everything a twin adds. Then each
//! component is built alone in a child process (`twinrt bench component NAME`), so that
//! its own cost shows and can be attacked.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::{json, Value};

use super::{
    cpu_seconds, fleet_config, parse_duration, parse_kinds, round3, rss_kib, trim_memory, wait_for, Check, Report,
};
use crate::config::Config;
use crate::Runtime;

#[derive(Debug, Args, Default)]
pub struct DensityArgs {
    /// Twins to spawn (default 1,000,000; --quick 2,000).
    #[arg(long)]
    pub twins: Option<u64>,
    /// Communes the twins are spread over, one district supervisor each (default 34).
    #[arg(long)]
    pub districts: Option<usize>,
    /// Sensor types: `mixed` (all six in turn) or a comma-separated list (default mixed).
    #[arg(long)]
    pub kinds: Option<String>,
    /// Interval between two observations of a twin (default 5s; --quick 200ms).
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// How long the twins run once ready, before memory is read (default 12s; --quick 1s).
    #[arg(long, value_parser = parse_duration)]
    pub run: Option<Duration>,
    /// Skip the per-component breakdown (child processes).
    #[arg(long)]
    pub no_components: bool,
}

/// Targets of the issue.
const MAX_KIB_PER_TWIN: f64 = 8.0;
const MAX_READY_S: f64 = 15.0;

struct Params {
    twins: u64,
    districts: usize,
    kinds: String,
    interval: Duration,
    run: Duration,
}

impl DensityArgs {
    fn params(&self, quick: bool) -> Params {
        Params {
            twins: self.twins.unwrap_or(if quick { 2_000 } else { 1_000_000 }).max(1),
            districts: self.districts.unwrap_or(34),
            kinds: self.kinds.clone().unwrap_or_else(|| "mixed".into()),
            interval: self.interval.unwrap_or(if quick { Duration::from_millis(200) } else { Duration::from_secs(5) }),
            run: self.run.unwrap_or(if quick { Duration::from_secs(1) } else { Duration::from_secs(12) }),
        }
    }
}

pub async fn run(args: DensityArgs, quick: bool) -> Result<Report, String> {
    let p = args.params(quick);
    let kinds = parse_kinds(&p.kinds)?;
    let mut report = Report::new("density");
    report.param("twins", p.twins);
    report.param("districts", p.districts);
    report.param("kinds", p.kinds.clone());
    report.param("interval_ms", p.interval.as_millis() as u64);
    report.param("run_s", p.run.as_secs_f64());

    trim_memory();
    let rss0 = rss_kib();
    let t = Instant::now();
    let text = fleet_config(p.twins, p.districts, &kinds, p.interval, "");
    let config = Config::parse(&text, "bench density", &[]).map_err(|e| e.to_string())?;
    drop(text);
    let config_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let cpu0 = cpu_seconds();
    let rt = Runtime::start(config).await.map_err(|e| format!("runtime: {e}"))?;
    let started_s = t.elapsed().as_secs_f64();
    let n = p.twins as i64;
    let gauge = rt.metrics().twins_running.clone();
    wait_for("every twin actor to run", Duration::from_secs(600), || gauge.get() >= n).await?;
    let ready_s = t.elapsed().as_secs_f64();
    let ready_cpu_s = cpu_seconds() - cpu0;

    // Every twin has ticked at least once within one interval of being ready.
    let registry = rt.registry().clone();
    let deadline = p.interval + Duration::from_secs(30);
    let t_tick = Instant::now();
    let all_ticked = async {
        // Counting reads every twin: not more than a few times a second.
        let end = Instant::now() + deadline;
        while (registry.ticked() as u64) < p.twins {
            if Instant::now() > end {
                return Err(format!("not every twin ticked within {deadline:?}"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    }
    .await;
    let first_tick_s = t_tick.elapsed().as_secs_f64();
    let before_run = registry.observations();
    let t_run = Instant::now();
    tokio::time::sleep(p.run).await;
    let run_s = t_run.elapsed().as_secs_f64();
    let observed = registry.observations() - before_run;
    let ticked = registry.ticked() as u64;
    trim_memory();
    let rss1 = rss_kib();
    let per_twin = (rss1.saturating_sub(rss0)) as f64 / p.twins as f64;

    let t = Instant::now();
    let report_down = rt.shutdown().await;
    let stop_s = t.elapsed().as_secs_f64();
    drop(report_down);

    let expected_rate = p.twins as f64 / p.interval.as_secs_f64();
    report.figure("config_s", round3(config_s));
    report.figure("start_returned_s", round3(started_s));
    report.figure("ready_s", round3(ready_s));
    report.figure("ready_cpu_s", round3(ready_cpu_s));
    report.figure("all_ticked_after_ready_s", round3(first_tick_s));
    report.figure("twins_ticked", ticked);
    report.figure("observations_per_s", round3(observed as f64 / run_s));
    report.figure("configured_observations_per_s", round3(expected_rate));
    report.figure("rss_before_mib", round3(rss0 as f64 / 1024.0));
    report.figure("rss_after_mib", round3(rss1 as f64 / 1024.0));
    report.figure("rss_per_twin_kib", round3(per_twin));
    report.figure("stop_s", round3(stop_s));
    report.check(Check::at_most("rss_per_twin_kib", round3(per_twin), MAX_KIB_PER_TWIN));
    report.check(Check::at_most("ready_s", round3(ready_s), MAX_READY_S));
    report.check(Check::at_least("twins_ticked", ticked as f64, p.twins as f64));
    if let Err(e) = all_ticked {
        report.errors.push(e);
    }

    if !args.no_components {
        let mut parts = serde_json::Map::new();
        let mut kib = std::collections::BTreeMap::new();
        for name in COMPONENTS {
            let v = run_component(name, &p).await?;
            kib.insert(*name, v.get("kib_per_twin").and_then(Value::as_f64).unwrap_or(0.0));
            parts.insert((*name).to_string(), v);
        }
        // Measured with bare actors under supervisors: what supervision adds is the difference.
        let bare = kib.get("bare-actor").copied().unwrap_or(0.0);
        if let Some(s) = kib.get_mut("supervision") {
            *s -= bare;
        }
        let sum: f64 = kib.values().sum();
        let mut per_twin_kib: serde_json::Map<String, Value> =
            kib.iter().map(|(k, v)| ((*k).to_string(), json!(round3(*v)))).collect();
        per_twin_kib.insert("rest".into(), json!(round3(per_twin - sum)));
        report.figure("components_kib_per_twin", Value::Object(per_twin_kib));
        report.figure("components", Value::Object(parts));
    }
    Ok(report)
}

/// The components measured alone, in the order a twin is built.
pub const COMPONENTS: &[&str] = &["config", "registry", "tree-specs", "bare-actor", "supervision", "timer"];

async fn run_component(name: &str, p: &Params) -> Result<Value, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["bench", "component", name, "--twins", &p.twins.to_string()])
        .args(["--districts", &p.districts.to_string(), "--kinds", &p.kinds])
        .args(["--interval", &format!("{}ms", p.interval.as_millis())]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| format!("component {name}: {e}"))?
        .map_err(|e| format!("component {name}: cannot run: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).ok_or_else(|| {
        format!("component {name}: no result (exit {}): {}", out.status, String::from_utf8_lossy(&out.stderr))
    })?;
    serde_json::from_str(line).map_err(|e| format!("component {name}: {e}: {line}"))
}

#[derive(Debug, Args)]
pub struct ComponentArgs {
    pub name: String,
    #[arg(long)]
    pub twins: u64,
    #[arg(long, default_value_t = 34)]
    pub districts: usize,
    #[arg(long, default_value = "mixed")]
    pub kinds: String,
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub interval: Duration,
}

/// An actor that does nothing: what ractor itself costs.
struct Idle;

impl Actor for Idle {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// Build one component for `--twins` sensors and print its cost as a JSON line.
pub async fn component(a: ComponentArgs) -> ExitCode {
    match measure_component(&a).await {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("component {}: {e}", a.name);
            ExitCode::from(2)
        }
    }
}

async fn measure_component(a: &ComponentArgs) -> Result<Value, String> {
    let kinds = parse_kinds(&a.kinds)?;
    let n = a.twins.max(1);
    let text = fleet_config(n, a.districts, &kinds, a.interval, "");
    trim_memory();
    let rss_empty = rss_kib();
    let config = Config::parse(&text, "bench component", &[]).map_err(|e| e.to_string())?;
    drop(text);
    trim_memory();
    let rss_config = rss_kib();
    let t = Instant::now();
    // Whatever is built stays alive until after the reading.
    let mut keep: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let (what, base) = match a.name.as_str() {
        "config" => ("the expanded configuration (SensorConfig per twin)", rss_empty),
        "registry" => {
            let reg = build_registry(&config);
            keep.push(Box::new(reg));
            ("twin state and registry entry, with its last observation", rss_config)
        }
        "tree-specs" => {
            let (dir, specs) = build_tree_specs(&config);
            keep.push(Box::new(dir));
            keep.push(Box::new(specs));
            ("directory entry and child spec (not spawned)", rss_config)
        }
        "bare-actor" => {
            let mut refs = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let (r, _) = Actor::spawn(None, Idle, ()).await.map_err(|e| e.to_string())?;
                refs.push(r);
            }
            keep.push(Box::new(refs));
            ("a bare idle ractor actor, spawned one after another", rss_config)
        }
        "supervision" => {
            let sups = spawn_supervised(&config).await?;
            keep.push(Box::new(sups));
            ("bare actors under district supervisors, minus bare-actor", rss_config)
        }
        "timer" => {
            let t = crate::sensor::bench_timers(&config);
            keep.push(t);
            ("the timer that ticks a twin (its slot in the district ticker)", rss_config)
        }
        other => return Err(format!("unknown component {other:?} (one of {COMPONENTS:?})")),
    };
    let build_s = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    trim_memory();
    let rss = rss_kib();
    let kib = rss.saturating_sub(base) as f64 / n as f64;
    let out = json!({
        "component": a.name,
        "what": what,
        "twins": n,
        "kib_per_twin": round3(kib),
        "build_s": round3(build_s),
    });
    drop(keep);
    Ok(out)
}

fn build_registry(config: &Config) -> Arc<crate::registry::Registry> {
    let reg = crate::registry::Registry::new();
    let at = chrono::Utc::now();
    for (spec, s) in crate::registry::specs(&config.sensors) {
        reg.ensure(spec, config.runtime.seed, s.interval);
        reg.step(&s.id, |_| at);
    }
    reg
}

fn build_tree_specs(config: &Config) -> (crate::actors::Directory, supervision::ChildSpec) {
    let metrics = crate::metrics::Metrics::new();
    let ctx = crate::sensor::SensorContext {
        registry: crate::registry::Registry::new(),
        sinks: crate::sinks::SinkSet::default(),
        clock: twins::SimClock::new(chrono::Utc::now(), 1.0).expect("speed 1 is valid"),
        real_start: crate::sensor::ScheduleStart::started_now(),
        metrics,
        faults: crate::faults::SensorFaults::new(),
    };
    let mut dir = crate::actors::Directory::default();
    let root_stats = supervision::SupervisorStats::default();
    let observer: Arc<dyn supervision::SupervisionObserver> = Arc::new(NoObserver);
    let spec_of = |name: &str| supervision::SupervisorSpec::new(name, supervision::Strategy::OneForOne);
    let (spec, _tree) =
        crate::sensor::tree::twins_supervisor("root", &root_stats, &config.sensors, &ctx, spec_of, observer, &mut dir);
    (dir, spec)
}

struct NoObserver;
impl supervision::SupervisionObserver for NoObserver {}

/// District supervisors, each with its share of bare actors as children.
async fn spawn_supervised(config: &Config) -> Result<Vec<ActorRef<supervision::SupervisorMsg>>, String> {
    use supervision::{ChildSpec, Restart, Supervisor, SupervisorArgs, SupervisorSpec};
    let mut by_district: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for s in &config.sensors {
        by_district.entry(s.district.as_str()).or_default().push(s.id.as_str());
    }
    let mut sups = Vec::new();
    for (d, ids) in by_district {
        let children: Vec<ChildSpec> = ids
            .iter()
            .map(|id| {
                ChildSpec::new(*id, "sensor", Restart::Permanent, |sup| async move {
                    let (a, _) = Actor::spawn_linked(None, Idle, (), sup).await?;
                    Ok(a.get_cell())
                })
            })
            .collect();
        let args = SupervisorArgs::new(
            SupervisorSpec::new(format!("district:{d}"), supervision::Strategy::OneForOne),
            children,
        );
        let (s, _) = Actor::spawn(None, Supervisor, args).await.map_err(|e| e.to_string())?;
        sups.push(s);
    }
    Ok(sups)
}
