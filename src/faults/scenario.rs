//! Scenario files and the run report: `twinrt run --scenario FILE [--duration D]`.
//!
//! A scenario is a TOML list of steps, each a time after start and a fault (the same fields
//! as a `POST /api/v1/faults` body):
//!
//! ```toml
//! [[step]]
//! at = "2s"
//! kind = "fail"
//! target = "sink:mosquitto"
//! ratio = 1.0
//! duration = "3s"
//! ```
//!
//! At the end of the run ([`run`]) the [`RunReport`] says what was injected and what it did,
//! what restarted (from the supervisors' stats), and per sink what was sent, retried,
//! duplicated, dropped, failed and lost (from the delivery accounting), and what was still
//! undelivered at shutdown.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{FaultEngine, FaultSpec, FaultView};
use crate::config::Config;
use crate::runtime::{RunError, Runtime};

/// One step: at `at` after start, inject `spec`.
#[derive(Debug, Clone)]
pub struct Step {
    pub at: Duration,
    pub spec: FaultSpec,
}

#[derive(Debug, Clone, Default)]
pub struct Scenario {
    /// In time order.
    pub steps: Vec<Step>,
}

/// Every problem of a scenario file, each with its step, field and line.
#[derive(Debug, Clone)]
pub struct ScenarioErrors {
    pub source: String,
    pub problems: Vec<String>,
}

impl fmt::Display for ScenarioErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::config::write_problems(f, &self.source, &self.problems)
    }
}

impl std::error::Error for ScenarioErrors {}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Scenario {
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioErrors> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioErrors {
            source: source.clone(),
            problems: vec![format!("cannot read the file: {e}")],
        })?;
        Scenario::parse(&text, &source)
    }

    /// Parse a scenario; `max_at`, when given, is the run's duration (a step at or after
    /// it would never run).
    pub fn parse(text: &str, source: &str) -> Result<Scenario, ScenarioErrors> {
        let fail = |problems| ScenarioErrors { source: source.to_string(), problems };
        let doc = toml_edit::ImDocument::parse(text.to_string()).map_err(|e| {
            let at = e.span().map(|s| format!(" (line {})", line_of(text, s.start))).unwrap_or_default();
            fail(vec![format!("not valid TOML{at}: {}", e.message())])
        })?;
        let table: toml::Table =
            text.parse().map_err(|e: toml::de::Error| fail(vec![format!("not valid TOML: {}", e.message())]))?;
        let mut problems = Vec::new();
        for k in table.keys().filter(|k| k.as_str() != "step") {
            problems.push(format!("{k}: unknown key (a scenario is a list of [[step]] tables)"));
        }
        let items = match table.get("step") {
            None => Vec::new(),
            Some(toml::Value::Array(a)) => a.clone(),
            Some(_) => {
                problems.push("step: must be an array of tables ([[step]])".to_string());
                Vec::new()
            }
        };
        let edit_steps = doc.as_table().get("step").and_then(|i| i.as_array_of_tables());
        let mut steps = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let edit = edit_steps.and_then(|a| a.get(i));
            let line = |field: &str| {
                let span = edit.and_then(|t| t.key(field).and_then(|k| k.span()).or_else(|| t.span()));
                span.map(|s| format!(" (line {})", line_of(text, s.start))).unwrap_or_default()
            };
            let toml::Value::Table(mut t) = item else {
                problems.push(format!("step[{i}]: must be a table"));
                continue;
            };
            let at = match t.remove("at") {
                Some(toml::Value::String(s)) => match humantime::parse_duration(&s) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        problems.push(format!("step[{i}].at{}: invalid duration \"{s}\": {e}", line("at")));
                        None
                    }
                },
                Some(other) => {
                    problems.push(format!(
                        "step[{i}].at{}: expected a duration such as \"10s\", got {}",
                        line("at"),
                        other.type_str()
                    ));
                    None
                }
                None => {
                    problems
                        .push(format!("step[{i}].at{}: missing (when to apply the fault, e.g. \"10s\")", line("at")));
                    None
                }
            };
            let json = match serde_json::to_value(&t) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("step[{i}]{}: {e}", line("kind")));
                    continue;
                }
            };
            match FaultSpec::from_json(&json) {
                Ok(spec) => {
                    if let Some(at) = at {
                        steps.push(Step { at, spec });
                    }
                }
                Err(e) => problems.push(format!("step[{i}].{}{}: {}", e.field, line(&e.field), e.message)),
            }
        }
        if problems.is_empty() && steps.is_empty() {
            problems.push("no [[step]]: a scenario applies at least one fault".to_string());
        }
        if !problems.is_empty() {
            return Err(fail(problems));
        }
        steps.sort_by_key(|s| s.at);
        Ok(Scenario { steps })
    }
}

/// What became of one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepOutcome {
    pub at_ms: u64,
    pub kind: &'static str,
    pub target: String,
    /// The fault it created (its final state).
    pub fault_id: Option<u64>,
    /// Why it could not be applied (e.g. its target selects nothing).
    pub error: Option<String>,
}

/// An actor that restarted during the run.
#[derive(Debug, Clone, Serialize)]
pub struct Restarted {
    pub path: String,
    pub kind: &'static str,
    pub restarts: u32,
    pub last_reason: Option<String>,
}

/// What one sink did over the run.
#[derive(Debug, Clone, Serialize)]
pub struct SinkReport {
    pub name: String,
    pub kind: &'static str,
    pub sent: u64,
    pub retried: u64,
    pub duplicates: u64,
    pub dropped: u64,
    pub failed: u64,
    /// Left a sensor and never reached the sink (gaps in its delivered sequences, drops).
    pub lost: u64,
    /// Still queued or in flight when the shutdown grace period ended.
    pub undelivered: u64,
}

/// The end-of-run report of `twinrt run --scenario`.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub ran_for_ms: u64,
    pub steps: Vec<StepOutcome>,
    pub faults: Vec<FaultView>,
    pub restarts: Vec<Restarted>,
    pub restarts_total: u64,
    /// Supervisors that gave up (restart intensity exceeded) and why.
    pub escalations: Vec<(String, String)>,
    pub sinks: Vec<SinkReport>,
    /// Every sink delivered what it held within the grace period.
    pub flushed: bool,
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "twinrt run report ({:.1}s)", self.ran_for_ms as f64 / 1000.0)?;
        writeln!(f, "\ninjected:")?;
        if self.steps.is_empty() {
            writeln!(f, "  (nothing)")?;
        }
        for s in &self.steps {
            let at = s.at_ms as f64 / 1000.0;
            match (&s.error, s.fault_id.and_then(|id| self.faults.iter().find(|v| v.id == id))) {
                (Some(e), _) => writeln!(f, "  at {at:.1}s  {} {}: NOT APPLIED: {e}", s.kind, s.target)?,
                (None, Some(v)) => {
                    let e = &v.effects;
                    let mut did = Vec::new();
                    for (n, what) in [
                        (e.panics, "panics"),
                        (e.errors, "errors"),
                        (e.stalls, "stalls"),
                        (e.requests_failed, "requests failed"),
                        (e.latency_added_ms, "ms of latency added"),
                        (e.disconnects, "disconnects"),
                        (e.observations_suppressed, "observations suppressed"),
                        (e.observations_altered, "observations out of range"),
                        (e.targets_skipped, "targets not running"),
                    ] {
                        if n > 0 {
                            did.push(format!("{n} {what}"));
                        }
                    }
                    let did = if did.is_empty() { "no effect".to_string() } else { did.join(", ") };
                    let ended = v.ended_reason.unwrap_or("still active");
                    writeln!(
                        f,
                        "  at {at:.1}s  fault {} {} {} ({} targets): {did}; ended: {ended}",
                        v.id, s.kind, s.target, v.targets_total
                    )?;
                }
                (None, None) => writeln!(f, "  at {at:.1}s  {} {}: not reached before the end", s.kind, s.target)?,
            }
        }
        writeln!(f, "\nrestarted: {} restarts", self.restarts_total)?;
        for r in &self.restarts {
            let why = r.last_reason.as_deref().unwrap_or("");
            writeln!(f, "  {} ({}): {} restarts; last: {why}", r.path, r.kind, r.restarts)?;
        }
        for (who, why) in &self.escalations {
            writeln!(f, "  ESCALATED {who}: {why}")?;
        }
        writeln!(f, "\nsinks:")?;
        writeln!(
            f,
            "  {:<20} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9} {:>11}",
            "sink", "sent", "retried", "duplicates", "dropped", "failed", "lost", "undelivered"
        )?;
        for s in &self.sinks {
            writeln!(
                f,
                "  {:<20} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9} {:>11}",
                format!("{}:{}", s.kind, s.name),
                s.sent,
                s.retried,
                s.duplicates,
                s.dropped,
                s.failed,
                s.lost,
                s.undelivered
            )?;
        }
        if !self.flushed {
            writeln!(f, "\n(some observations were still queued when the shutdown grace period ended)")?;
        }
        Ok(())
    }
}

/// Apply the steps at their times after `start` (a step that cannot be applied is logged
/// and reported).
async fn apply(
    engine: Arc<FaultEngine>,
    steps: Vec<Step>,
    start: tokio::time::Instant,
    out: Arc<std::sync::Mutex<Vec<StepOutcome>>>,
) {
    for step in steps {
        tokio::time::sleep_until(start + step.at).await;
        let mut outcome = StepOutcome {
            at_ms: step.at.as_millis() as u64,
            kind: step.spec.kind.as_str(),
            target: step.spec.target.clone(),
            fault_id: None,
            error: None,
        };
        match engine.inject(step.spec) {
            Ok(v) => outcome.fault_id = Some(v.id),
            Err(e) => {
                tracing::error!(at = ?step.at, error = %e, "scenario step not applied");
                outcome.error = Some(e.to_string());
            }
        }
        if let Ok(mut o) = out.lock() {
            o.push(outcome);
        }
    }
}

/// Run the runtime with a scenario until `duration` (if given) or `shutdown`, then stop
/// gracefully and report.
pub async fn run(
    config: Config,
    scenario: Scenario,
    duration: Option<Duration>,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, RunError> {
    let rt = Runtime::start(config).await?;
    let start = tokio::time::Instant::now();
    let engine = rt.faults().clone();
    let directory = rt.directory().clone();
    let outcomes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let applier = tokio::spawn(apply(engine.clone(), scenario.steps, start, outcomes.clone()));
    let until = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let root_failed = async {
        while !rt.root_finished() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        () = until => tracing::info!("the run's duration is over"),
        () = shutdown => {}
        () = root_failed => {}
    }
    applier.abort();
    let ran_for = start.elapsed();
    if rt.root_finished() {
        let reason = rt.supervision().root.escalated().map(|f| f.reason).unwrap_or_else(|| "stopped".into());
        return Err(RunError::RootFailed(reason));
    }
    let shut = rt.shutdown().await;

    let mut restarts = Vec::new();
    let mut escalations = Vec::new();
    for e in directory.entries() {
        let info = e.info();
        if info.restarts > 0 {
            restarts.push(Restarted {
                path: info.path.clone(),
                kind: e.kind.as_str(),
                restarts: info.restarts,
                last_reason: info.last_failure.map(|f| f.reason),
            });
        }
        if let Some(f) = e.own_stats.as_ref().and_then(|s| s.escalated()) {
            escalations.push((info.path, f.reason));
        }
    }
    let sinks = shut
        .sinks
        .iter()
        .map(|s| SinkReport {
            name: s.name.clone(),
            kind: s.kind,
            sent: s.sent,
            retried: s.retries,
            duplicates: s.duplicates,
            dropped: s.dropped,
            failed: s.failed,
            lost: s.lost,
            undelivered: (s.queue_len + s.in_flight) as u64,
        })
        .collect();
    let steps = outcomes.lock().map(|o| o.clone()).unwrap_or_default();
    Ok(RunReport {
        ran_for_ms: ran_for.as_millis() as u64,
        steps,
        faults: engine.list(),
        restarts_total: restarts.iter().map(|r| u64::from(r.restarts)).sum(),
        restarts,
        escalations,
        sinks,
        flushed: shut.flushed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_read_in_time_order() {
        let text = "[[step]]\nat = \"5s\"\nkind = \"silence\"\ntarget = \"kind:noise\"\nduration = \"2s\"\n\n\
                    [[step]]\nat = \"1s\"\nkind = \"panic\"\ntarget = \"district:Marin\"\n";
        let s = Scenario::parse(text, "s.toml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.steps.iter().map(|s| s.at.as_secs()).collect::<Vec<_>>(), vec![1, 5]);
        assert_eq!(s.steps[0].spec.count, Some(1));
    }

    #[test]
    fn every_problem_names_its_step_field_and_line() {
        let text = "[[step]]\nat = \"soon\"\nkind = \"panic\"\ntarget = \"sensor:a\"\n\n\
                    [[step]]\nat = \"1s\"\nkind = \"fail\"\ntarget = \"sensor:a\"\ncount = 1\n\n[extra]\n";
        let err = Scenario::parse(text, "s.toml").expect_err("bad");
        let shown = err.to_string();
        assert_eq!(err.problems.len(), 3, "{shown}");
        assert!(shown.contains("extra: unknown key"), "{shown}");
        assert!(shown.contains("step[0].at (line 2): invalid duration"), "{shown}");
        assert!(shown.contains("step[1].target (line 9): `fail` applies to a sink"), "{shown}");
        assert!(Scenario::parse("", "s").is_err(), "no steps");
    }
}
