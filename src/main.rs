//! `twinrt`: parse the command line, set up logging, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use twin_runtime::config::{Config, ConfigErrors, DEFAULT_TOML};

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
    },
    /// Validate a configuration: list every problem with its key path and line.
    CheckConfig { file: PathBuf },
    /// Print the embedded default configuration.
    PrintConfig,
    /// Run benchmark scenarios: one JSON line per scenario on stdout, a summary on stderr.
    Bench(twin_runtime::bench::BenchArgs),
}

fn load(path: Option<&PathBuf>) -> Result<Config, ConfigErrors> {
    match path {
        Some(p) => Config::from_file(p),
        None => Config::embedded_default(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run { config: None }) {
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
        Command::Run { config } => {
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(2);
                }
            };
            twin_runtime::telemetry::init(&config.log);
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("twinrt: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(twin_runtime::run(config, shutdown_signal())) {
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
