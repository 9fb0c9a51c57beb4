//! Supervisor and child specifications.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::stats::ChildSnapshot;

/// Which children are restarted when one of them has to be restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Only the child that exited is restarted (the default, as in OTP).
    #[default]
    OneForOne,
    /// All (live) children are stopped and restarted, in spec order.
    OneForAll,
}

/// Restart intensity: more than `max_restarts` restarts within `within`
/// makes the supervisor give up (stop its children and fail itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Intensity {
    /// Restarts tolerated within the window.
    pub max_restarts: u32,
    /// The sliding window.
    pub within: Duration,
}

impl Intensity {
    /// Shorthand constructor.
    pub const fn new(max_restarts: u32, within: Duration) -> Self {
        Self { max_restarts, within }
    }
}

impl Default for Intensity {
    /// 3 restarts within 5 seconds.
    fn default() -> Self {
        Self::new(3, Duration::from_secs(5))
    }
}

/// When a child is restarted (OTP meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Always restarted, also after a normal stop.
    Permanent,
    /// Restarted only after an abnormal exit (panic, error, kill).
    Transient,
    /// Never restarted; forgotten by the supervisor when it exits.
    Temporary,
}

/// Static description of a supervisor.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorSpec {
    /// Name used in logs, stats and observer callbacks.
    pub name: String,
    /// Restart strategy.
    pub strategy: Strategy,
    /// Restart intensity before escalation.
    pub intensity: Intensity,
    /// Delay before restarts.
    pub backoff: Backoff,
    /// How many children are started at once when the supervisor starts (1: one after
    /// another, in spec order, each start finished before the next, as OTP does). More
    /// suits many independent children (a district's sensors); restarts are unaffected.
    pub start_concurrency: usize,
}

impl SupervisorSpec {
    /// A spec with default intensity and backoff.
    pub fn new(name: impl Into<String>, strategy: Strategy) -> Self {
        Self {
            name: name.into(),
            strategy,
            intensity: Intensity::default(),
            backoff: Backoff::default(),
            start_concurrency: 1,
        }
    }
}

/// Future returned by a [`ChildSpec`] factory.
pub type SpawnFuture = Pin<Box<dyn Future<Output = Result<ractor::ActorCell, ractor::SpawnErr>> + Send>>;

/// Factory of a child: given the supervisor's cell, spawn the child linked to
/// it and return the child's cell.
pub type StartFn = Arc<dyn Fn(ractor::ActorCell) -> SpawnFuture + Send + Sync>;

/// How to start (and restart) one child.
#[derive(Clone)]
pub struct ChildSpec {
    /// Unique among the supervisor's children, e.g. `"aq-fdf-01"`. Shared (not copied)
    /// by the supervisor's snapshot and index of the child.
    pub id: Arc<str>,
    /// Actor kind label for metrics: `"sensor"`, `"district"`, `"sink"`, ...
    pub kind: &'static str,
    /// Restart policy.
    pub restart: Restart,
    /// Factory called at start and at every restart. It receives the
    /// supervisor's cell and must spawn the child *linked* to it
    /// (`Actor::spawn_linked(.., supervisor)`); a child that is not linked is
    /// linked after the fact (with a warning), which may miss early failures.
    ///
    /// The factory runs inside the supervisor's handler: it must not call the
    /// supervisor synchronously (that would wait for itself until timeout).
    pub start: StartFn,
}

impl ChildSpec {
    /// Build a spec from an async closure, hiding the `Box::pin`.
    pub fn new<F, Fut>(id: impl Into<Arc<str>>, kind: &'static str, restart: Restart, start: F) -> Self
    where
        F: Fn(ractor::ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ractor::ActorCell, ractor::SpawnErr>> + Send + 'static,
    {
        Self { id: id.into(), kind, restart, start: Arc::new(move |sup| Box::pin(start(sup)) as SpawnFuture) }
    }

    /// The same child, started (and restarted) on the tokio runtime of `rt`: its actor's
    /// task, and whatever that task spawns, run on that runtime's threads; the supervisor
    /// stays where it is. If that runtime has shut down, the start fails like any other.
    pub fn on(self, rt: tokio::runtime::Handle) -> Self {
        let inner = self.start;
        let start: StartFn = Arc::new(move |sup| {
            let spawned = rt.spawn(inner(sup));
            Box::pin(async move {
                spawned.await.map_err(|e| ractor::SpawnErr::StartupFailed(format!("child's runtime: {e}").into()))?
            }) as SpawnFuture
        });
        Self { start, ..self }
    }
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("restart", &self.restart)
            .finish_non_exhaustive()
    }
}

/// Hooks for metrics and logs. All methods default to no-ops. They are called
/// synchronously from the supervisor's handler: keep them cheap.
#[allow(unused_variables)]
pub trait SupervisionObserver: Send + Sync + 'static {
    /// A child was restarted (after its backoff) and its new instance spawned.
    fn child_restarted(&self, supervisor: &str, child: &ChildSnapshot) {}
    /// A child exited abnormally (panic, error, kill), a permanent child
    /// exited normally, or a restart attempt failed to spawn.
    fn child_failed(&self, supervisor: &str, child_id: &str, kind: &str, reason: &str) {}
    /// The supervisor exceeded its restart intensity and is failing itself.
    fn escalated(&self, supervisor: &str, reason: &str) {}
}
