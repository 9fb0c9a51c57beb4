//! `twinrt`: parse the command line, set up logging, run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use twin_runtime::config::{Config, ConfigErrors, DEFAULT_TOML};
use twin_runtime::faults::scenario::{self, Scenario};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "twinrt", version, about = "Supervised actor runtime of the Smart City Digital Twin of Martinique")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the twin (the default command). Without --config: the embedded default.
    Run {
        /// Configuration file (TOML); TWINRT_SECTION__KEY variables override its values.
        #[arg(long, short, env = "TWINRT_CONFIG")]
        config: Option<PathBuf>,
        /// Apply the faults of a scenario file (TOML [[step]] list) at their times, and print
        /// a report at the end (what was injected, what restarted, per sink what was sent,
        /// retried, duplicated, dropped and lost).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Stop by itself after this long (e.g. "60s", "5m"), as on SIGTERM.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// With --scenario: also write the report as JSON to this file.
        #[arg(long, requires = "scenario")]
        report_json: Option<PathBuf>,
    },
    /// Validate a configuration: list every problem with its key path and line.
    CheckConfig { file: PathBuf },
    /// Print the embedded default configuration.
    PrintConfig,
    /// Run benchmark scenarios: one JSON line per scenario on stdout, a summary on stderr.
    Bench(twin_runtime::bench::BenchArgs),
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be > 0".into()),
        Err(e) => Err(format!("{e} (write e.g. \"60s\", \"5m\")")),
    }
}

fn load(path: Option<&PathBuf>) -> Result<Config, ConfigErrors> {
    match path {
        Some(p) => Config::from_file(p),
        None => Config::embedded_default(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default = Command::Run { config: None, scenario: None, duration: None, report_json: None };
    match cli.command.unwrap_or(default) {
        Command::Bench(args) => twin_runtime::bench::main(args),
        Command::PrintConfig => {
            print!("{DEFAULT_TOML}");
            ExitCode::SUCCESS
        }
        Command::CheckConfig { file } => match Config::from_file(&file) {
            Ok(c) => {
                println!(
                    "{}: ok ({} sensors, {} MQTT sinks{})",
                    file.display(),
                    c.sensors.len(),
                    c.sinks.mqtt.len(),
                    if c.embedded_broker.is_some() { ", embedded broker" } else { "" }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config, scenario, duration, report_json } => {
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(2);
                }
            };
            let scenario = match scenario.as_deref().map(Scenario::from_file).transpose() {
                Ok(s) => s,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(2);
                }
            };
            if let (Some(s), Some(d)) = (&scenario, duration) {
                if let Some((i, step)) = s.steps.iter().enumerate().find(|(_, st)| st.at >= d) {
                    eprintln!(
                        "twinrt: scenario step {i} is at {}, not before --duration {} (it would never run)",
                        humantime::format_duration(step.at),
                        humantime::format_duration(d)
                    );
                    return ExitCode::from(2);
                }
            }
            twin_runtime::telemetry::init(&config.log);
            twin_runtime::faults::quiet_injected_panics();
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("twinrt: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let stop = async move {
                match duration {
                    Some(d) => tokio::select! {
                        () = shutdown_signal() => {}
                        () = tokio::time::sleep(d) => tracing::info!("--duration reached: stopping"),
                    },
                    None => shutdown_signal().await,
                }
            };
            if let Some(s) = scenario {
                return match rt.block_on(scenario::run(config, s, None, stop)) {
                    Ok(report) => {
                        print!("{report}");
                        if let Some(path) = report_json {
                            let json = serde_json::to_string_pretty(&report).unwrap_or_default();
                            if let Err(e) = std::fs::write(&path, json) {
                                eprintln!("twinrt: cannot write the report to {}: {e}", path.display());
                                return ExitCode::FAILURE;
                            }
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "twinrt failed");
                        eprintln!("twinrt: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            match rt.block_on(twin_runtime::run(config, stop)) {
                Ok(report) if report.flushed => ExitCode::SUCCESS,
                Ok(_) => {
                    tracing::warn!("some observations were still queued when the grace period ended");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    tracing::error!(error = %e, "twinrt failed");
                    eprintln!("twinrt: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
