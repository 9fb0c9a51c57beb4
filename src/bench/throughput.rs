//! `throughput`: twins ticking as fast as they can into a null sink that encodes every
//! observation: observations per second taken by the sink, what the twins generated and
//! what the full queue dropped, the emit-to-sink latency, and the CPU time per observation.
//! With `--overflow block` the twins wait for room instead (nothing dropped, but each
//! observation then costs a wait and a wake-up: fewer per second; see BENCHMARKS.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use super::hist::Hist;
use super::nullsink::{NullSinkArgs, RunningNullSink};
use super::{fleet_config, parse_duration, parse_kinds, round3, wait_for, Check, Report, Twins};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::sinks::{Overflow, SinkHandle, SinkSet};

#[derive(Debug, Args, Default)]
pub struct ThroughputArgs {
    /// Twins (default 10,000; --quick 500).
    #[arg(long)]
    pub twins: Option<u64>,
    /// Communes the twins are spread over (default 34).
    #[arg(long)]
    pub districts: Option<usize>,
    /// Sensor types (default mixed).
    #[arg(long)]
    pub kinds: Option<String>,
    /// Interval of each twin: the smallest the configuration allows means "as fast as
    /// they can" (default 1ms).
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Measured window (default 10s; --quick 1s), after a warm-up of a fifth of it.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// What the null sink's full queue does: `drop_oldest` (the default, as every sink's) or
    /// `block` (the twins wait for room).
    #[arg(long)]
    pub overflow: Option<String>,
    /// The null sink's queue capacity (default 100,000).
    #[arg(long)]
    pub queue: Option<usize>,
}

const MIN_OBS_PER_S: f64 = 500_000.0;

pub async fn run(a: ThroughputArgs, quick: bool) -> Result<Report, String> {
    let twins = a.twins.unwrap_or(if quick { 500 } else { 10_000 }).max(1);
    let districts = a.districts.unwrap_or(34);
    let kinds_s = a.kinds.unwrap_or_else(|| "mixed".into());
    let kinds = parse_kinds(&kinds_s)?;
    let interval = a.interval.unwrap_or(Duration::from_millis(1));
    let duration = a.duration.unwrap_or(if quick { Duration::from_secs(1) } else { Duration::from_secs(10) });
    let queue = a.queue.unwrap_or(100_000);
    let mut report = Report::new("throughput");
    report.param("twins", twins);
    report.param("districts", districts);
    report.param("kinds", kinds_s);
    report.param("interval_ms", interval.as_secs_f64() * 1000.0);
    report.param("duration_s", duration.as_secs_f64());
    report.param("queue_capacity", queue);

    let config = Config::parse(&fleet_config(twins, districts, &kinds, interval, ""), "bench throughput", &[])
        .map_err(|e| e.to_string())?;
    let metrics = Metrics::new();
    let handle = SinkHandle::new("null", "null", "null".into(), queue, &metrics);
    let overflow = a.overflow.unwrap_or_else(|| "drop_oldest".into());
    match overflow.as_str() {
        "block" => handle.set_overflow(Overflow::Block { timeout: Duration::from_secs(5) }),
        "drop_oldest" => handle.set_overflow(Overflow::DropOldest),
        other => return Err(format!("--overflow: {other:?} is neither block nor drop_oldest")),
    }
    report.param("overflow", overflow);
    let latency = Arc::new(Hist::default());
    let bytes = Arc::new(AtomicU64::new(0));
    let busy_ns = Arc::new(AtomicU64::new(0));
    let args = NullSinkArgs {
        handle: handle.clone(),
        latency: latency.clone(),
        bytes: bytes.clone(),
        busy_ns: busy_ns.clone(),
    };
    let sink = RunningNullSink::start(args).await?;
    let t = Instant::now();
    let running = Twins::start(&config, SinkSet::new(vec![handle.clone()]), metrics.clone()).await?;
    let gauge = metrics.twins_running.clone();
    wait_for("every twin to run", Duration::from_secs(300), || gauge.get() >= twins as i64).await?;
    let ready_s = t.elapsed().as_secs_f64();
    tokio::time::sleep(duration / 5).await;

    let generated = || total_generated(&metrics);
    latency.reset();
    let (s0, g0, d0, b0) =
        (handle.stats.sent.get(), generated(), handle.stats.dropped.get(), bytes.load(Ordering::Relaxed));
    let busy0 = busy_ns.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let cpu0 = super::cpu_seconds();
    tokio::time::sleep(duration).await;
    let (s1, g1, d1, b1) =
        (handle.stats.sent.get(), generated(), handle.stats.dropped.get(), bytes.load(Ordering::Relaxed));
    let secs = t0.elapsed().as_secs_f64();
    let busy = (busy_ns.load(Ordering::Relaxed) - busy0) as f64 / 1e9;
    let cpu = super::cpu_seconds() - cpu0;
    running.stop().await;
    sink.stop().await;

    let rate = (s1 - s0) as f64 / secs;
    report.figure("ready_s", round3(ready_s));
    report.figure("observations_per_s", round3(rate));
    report.figure("generated_per_s", round3((g1 - g0) as f64 / secs));
    report.figure("dropped_per_s", round3((d1 - d0) as f64 / secs));
    // Work per observation, whatever else the machine runs: 2 cores / this = the rate an
    // idle 2-core machine would reach.
    report.figure("cpu_us_per_observation", round3(cpu * 1e6 / (s1 - s0).max(1) as f64));
    // The sink's share of one core, and its own time per observation.
    report.figure("sink_busy", round3(busy / secs));
    report.figure("sink_us_per_observation", round3(busy * 1e6 / (s1 - s0).max(1) as f64));
    report.figure("encoded_mib_per_s", round3((b1 - b0) as f64 / secs / 1048576.0));
    report.figure("latency_p50_ms", round3(latency.quantile_ms(0.5)));
    report.figure("latency_p99_ms", round3(latency.quantile_ms(0.99)));
    report.check(Check::at_least("observations_per_s", round3(rate), MIN_OBS_PER_S));
    Ok(report)
}

/// Observations generated, all types together.
pub fn total_generated(m: &Metrics) -> u64 {
    twins::SensorKind::ALL.iter().map(|k| m.observations_generated.with_label_values(&[k.as_str()]).get()).sum()
}
