//! `steady`: a city-sized fleet at a realistic rate for a while: is the configured rate
//! achieved, are ticks on time, does memory stay flat?

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use super::hist::Hist;
use super::nullsink::{NullSinkArgs, RunningNullSink};
use super::throughput::total_generated;
use super::{fleet_config, parse_duration, parse_kinds, round3, rss_kib, wait_for, Check, Report, Twins};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::sinks::{SinkHandle, SinkSet};

#[derive(Debug, Args, Default)]
pub struct SteadyArgs {
    /// Twins (default 100,000; --quick 2,000).
    #[arg(long)]
    pub twins: Option<u64>,
    /// Communes (default 34).
    #[arg(long)]
    pub districts: Option<usize>,
    /// Sensor types (default mixed).
    #[arg(long)]
    pub kinds: Option<String>,
    /// Interval of each twin (default 10s; --quick 200ms).
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Measured window, after one interval of warm-up (default 60s; --quick 2s).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

const MAX_RATE_ERROR_PCT: f64 = 1.0;
const MAX_P99_LATENESS_MS: f64 = 50.0;
const MAX_RSS_GROWTH_PCT: f64 = 2.0;

pub async fn run(a: SteadyArgs, quick: bool) -> Result<Report, String> {
    let twins = a.twins.unwrap_or(if quick { 2_000 } else { 100_000 }).max(1);
    let districts = a.districts.unwrap_or(34);
    let kinds_s = a.kinds.unwrap_or_else(|| "mixed".into());
    let kinds = parse_kinds(&kinds_s)?;
    let interval = a.interval.unwrap_or(if quick { Duration::from_millis(200) } else { Duration::from_secs(10) });
    let duration = a.duration.unwrap_or(if quick { Duration::from_secs(2) } else { Duration::from_secs(60) });
    let mut report = Report::new("steady");
    report.param("twins", twins);
    report.param("districts", districts);
    report.param("kinds", kinds_s);
    report.param("interval_ms", interval.as_millis() as u64);
    report.param("duration_s", duration.as_secs_f64());

    let config = Config::parse(&fleet_config(twins, districts, &kinds, interval, ""), "bench steady", &[])
        .map_err(|e| e.to_string())?;
    let metrics = Metrics::new();
    let handle = SinkHandle::new("null", "null", "null".into(), 100_000, &metrics);
    let latency = Arc::new(Hist::default());
    let sink = RunningNullSink::start(NullSinkArgs {
        handle: handle.clone(),
        latency: latency.clone(),
        bytes: Arc::new(AtomicU64::new(0)),
        busy_ns: Default::default(),
    })
    .await?;
    let running = Twins::start(&config, SinkSet::new(vec![handle.clone()]), metrics.clone()).await?;
    let gauge = metrics.twins_running.clone();
    wait_for("every twin to run", Duration::from_secs(300), || gauge.get() >= twins as i64).await?;
    // One interval: every twin reaches its place in the schedule.
    tokio::time::sleep(interval).await;

    let lateness = metrics.tick_lateness.clone();
    let (late_n0, _) = (lateness.get_sample_count(), ());
    let late0 = bucket_counts(&lateness);
    latency.reset();
    let g0 = total_generated(&metrics);
    let t0 = Instant::now();
    let mut rss = vec![rss_kib()];
    let step = (duration / 12).max(Duration::from_millis(100));
    while t0.elapsed() + step / 2 < duration {
        tokio::time::sleep(step.min(duration.saturating_sub(t0.elapsed()))).await;
        rss.push(rss_kib());
    }
    let remaining = duration.saturating_sub(t0.elapsed());
    tokio::time::sleep(remaining).await;
    let g1 = total_generated(&metrics);
    let secs = t0.elapsed().as_secs_f64();
    rss.push(rss_kib());
    let late1 = bucket_counts(&lateness);
    let late_n = lateness.get_sample_count() - late_n0;
    running.stop().await;
    sink.stop().await;

    let configured = twins as f64 / interval.as_secs_f64();
    let achieved = (g1 - g0) as f64 / secs;
    let err_pct = (achieved - configured).abs() / configured * 100.0;
    let p99 = quantile_from_buckets(&late0, &late1, 0.99);
    let p50 = quantile_from_buckets(&late0, &late1, 0.5);
    let first = rss[0] as f64;
    let max = rss.iter().copied().max().unwrap_or(0) as f64;
    let growth = (max - first) / first * 100.0;
    report.figure("configured_per_s", round3(configured));
    report.figure("achieved_per_s", round3(achieved));
    report.figure("rate_error_pct", round3(err_pct));
    report.figure("ticks_measured", late_n);
    report.figure("tick_lateness_p50_ms_at_most", p50);
    report.figure("tick_lateness_p99_ms_at_most", p99);
    report.figure("emit_to_sink_p99_ms", round3(latency.quantile_ms(0.99)));
    report.figure("rss_mib_samples", rss.iter().map(|k| round3(*k as f64 / 1024.0)).collect::<Vec<_>>());
    report.figure("rss_growth_pct", round3(growth));
    report.figure("sink_dropped", handle.stats.dropped.get());
    report.check(Check::at_most("rate_error_pct", round3(err_pct), MAX_RATE_ERROR_PCT));
    report.check(Check::at_most("tick_lateness_p99_ms_at_most", p99, MAX_P99_LATENESS_MS));
    report.check(Check::at_most("rss_growth_pct", round3(growth), MAX_RSS_GROWTH_PCT));
    Ok(report)
}

/// (upper bound in seconds, cumulative count) of a Prometheus histogram.
fn bucket_counts(h: &prometheus::Histogram) -> Vec<(f64, u64)> {
    use prometheus::core::Collector;
    let mut out = Vec::new();
    for mf in h.collect() {
        for m in mf.get_metric() {
            for b in m.get_histogram().get_bucket() {
                out.push((b.upper_bound(), b.cumulative_count()));
            }
            out.push((f64::INFINITY, m.get_histogram().get_sample_count()));
        }
    }
    out
}

/// The smallest bucket bound (ms) under which a fraction `q` of the samples recorded
/// between the two readings fall.
fn quantile_from_buckets(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> f64 {
    let total = after.last().map(|l| l.1).unwrap_or(0) - before.last().map(|l| l.1).unwrap_or(0);
    if total == 0 {
        return 0.0;
    }
    let rank = (total as f64 * q).ceil() as u64;
    for (a, b) in after.iter().zip(before) {
        if a.1 - b.1 >= rank {
            return a.0 * 1000.0;
        }
    }
    f64::INFINITY
}
