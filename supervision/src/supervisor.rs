//! The [`Supervisor`] actor.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::keyed::KeyedVec;
use crate::spec::{ChildSpec, Restart, SpawnFuture, Strategy, SupervisionObserver, SupervisorSpec};
use crate::stats::{ChildSnapshot, ChildStatus, FailureRecord, SupervisorStats};

/// How long a supervisor waits for children it stops (at shutdown, on
/// escalation, before a one-for-all restart, on `TerminateChild`) before it
/// kills the ones still running.
pub const CHILD_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Start arguments of a [`Supervisor`].
pub struct SupervisorArgs {
    /// Name, strategy, intensity and backoff.
    pub spec: SupervisorSpec,
    /// Initial children, started in order.
    pub children: Vec<ChildSpec>,
    /// Optional metrics / logging hooks.
    pub observer: Option<Arc<dyn SupervisionObserver>>,
    /// Shared view updated by the supervisor; keep a clone to read it.
    pub stats: SupervisorStats,
}

impl SupervisorArgs {
    /// Arguments without observer and with fresh stats.
    pub fn new(spec: SupervisorSpec, children: Vec<ChildSpec>) -> Self {
        Self { spec, children, observer: None, stats: SupervisorStats::default() }
    }
}

/// Messages understood by a [`Supervisor`].
pub enum SupervisorMsg {
    /// Add and start a child at run time. Fails if a child with the same id
    /// exists (whatever its status) or if the child fails to spawn, in which
    /// case it is not added.
    StartChild(ChildSpec, Option<RpcReplyPort<Result<(), String>>>),
    /// Stop a child (waiting for it, up to [`CHILD_SHUTDOWN_TIMEOUT`]) and
    /// forget it; it is not restarted. Replies `false` if the id is unknown.
    TerminateChild(String, Option<RpcReplyPort<bool>>),
    /// The current snapshot (same data as [`SupervisorStats::snapshot`]).
    Snapshot(RpcReplyPort<SupervisorSnapshot>),
    /// Internal (timers); cannot be constructed outside this crate.
    #[doc(hidden)]
    Internal(Internal),
}

use crate::stats::SupervisorSnapshot;

/// Opaque internal message payload.
#[doc(hidden)]
pub struct Internal(InternalKind);

enum InternalKind {
    /// Backoff of a one-for-one restart elapsed.
    RestartChild { key: u64, generation: u64 },
    /// Old children stopped and backoff elapsed for a one-for-all restart.
    RestartAll { epoch: u64 },
}

/// OTP-style supervisor actor. See the crate documentation.
pub struct Supervisor;

impl Supervisor {
    /// A [`ChildSpec`] whose factory spawns a nested `Supervisor` linked to
    /// its parent, with arguments produced by `args` (called at every
    /// (re)start; reuse the same [`SupervisorStats`] inside it to keep one
    /// view across restarts).
    pub fn child_spec<F>(id: impl Into<Arc<str>>, kind: &'static str, restart: Restart, args: F) -> ChildSpec
    where
        F: Fn() -> SupervisorArgs + Send + Sync + 'static,
    {
        ChildSpec::new(id, kind, restart, move |parent: ActorCell| {
            let args = args();
            async move {
                let (sup, _) = Actor::spawn_linked(None, Supervisor, args, parent).await?;
                Ok(sup.get_cell())
            }
        })
    }
}

struct Child {
    spec: ChildSpec,
    status: ChildStatus,
    cell: Option<ActorCell>,
    /// Bumped whenever a pending one-for-one restart timer must be ignored.
    generation: u64,
    /// Consecutive restarts, drives the backoff.
    consecutive: u32,
    started_at: Option<Instant>,
    /// Waiting for the pending one-for-all restart.
    pending_all: bool,
}

impl Child {
    fn is_live(&self) -> bool {
        self.cell.is_some() || !matches!(self.status, ChildStatus::Stopped | ChildStatus::Failed)
    }
}

/// Internal state of a [`Supervisor`] (opaque).
pub struct SupervisorState {
    spec: SupervisorSpec,
    observer: Option<Arc<dyn SupervisionObserver>>,
    stats: SupervisorStats,
    /// Children by insertion key; iteration order is spec order.
    children: KeyedVec<Child>,
    by_actor: ByActor,
    next_key: u64,
    /// Bumped at every one-for-all restart; stale `RestartAll` are ignored.
    epoch: u64,
    /// Times of the restarts within the intensity window.
    restart_times: VecDeque<Instant>,
}

/// The current instances' keys by actor id. Local ids (all of them, unless children are
/// remote actors) are kept by pid: half the room of a whole `ActorId` per child.
#[derive(Default)]
struct ByActor {
    local: rustc_hash::FxHashMap<u64, u64>,
    remote: rustc_hash::FxHashMap<ActorId, u64>,
}

impl ByActor {
    fn with_capacity(n: usize) -> Self {
        Self {
            local: rustc_hash::FxHashMap::with_capacity_and_hasher(n, Default::default()),
            remote: Default::default(),
        }
    }

    fn insert(&mut self, id: ActorId, key: u64) {
        match id {
            ActorId::Local(pid) => self.local.insert(pid, key),
            remote => self.remote.insert(remote, key),
        };
    }

    fn get(&self, id: &ActorId) -> Option<&u64> {
        match id {
            ActorId::Local(pid) => self.local.get(pid),
            remote => self.remote.get(remote),
        }
    }

    fn remove(&mut self, id: &ActorId) -> Option<u64> {
        match id {
            ActorId::Local(pid) => self.local.remove(pid),
            remote => self.remote.remove(remote),
        }
    }

    fn clear(&mut self) {
        self.local.clear();
        self.remote.clear();
    }
}

enum Exit {
    Normal(Option<String>),
    Abnormal(String),
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let SupervisorArgs { spec, children, observer, stats } = args;
        let mut seen = rustc_hash::FxHashSet::with_capacity_and_hasher(children.len(), Default::default());
        if let Some(dup) = children.iter().find(|c| !seen.insert(&*c.id)) {
            return Err(format!("supervisor '{}': duplicate child id '{}'", spec.name, dup.id).into());
        }
        drop(seen);
        {
            let mut w = stats.write();
            w.header.name = spec.name.clone();
            w.header.strategy = spec.strategy;
            w.header.max_restarts = spec.intensity.max_restarts;
            w.header.within_ms = u64::try_from(spec.intensity.within.as_millis()).unwrap_or(u64::MAX);
            // total_restarts, escalated and message counts accumulate across incarnations.
            w.children = KeyedVec::with_capacity(children.len());
            w.by_id = rustc_hash::FxHashMap::with_capacity_and_hasher(children.len(), Default::default());
        }
        let mut state = SupervisorState {
            spec,
            observer,
            stats,
            children: KeyedVec::with_capacity(children.len()),
            by_actor: ByActor::with_capacity(children.len()),
            next_key: 0,
            epoch: 0,
            restart_times: VecDeque::new(),
        };
        let mut keys = Vec::with_capacity(children.len());
        for child in children {
            keys.push(state.insert_child(child));
        }
        let failed = if state.spec.start_concurrency > 1 {
            state.spawn_concurrently(&myself, keys).await
        } else {
            let mut failed = None;
            for key in keys {
                if let Err(err) = state.spawn_child(&myself, key).await {
                    failed = Some((key, err));
                    break;
                }
            }
            failed
        };
        if let Some((key, err)) = failed {
            let id = state.children.get(key).map(|c| c.spec.id.clone()).unwrap_or_else(|| "?".into());
            let reason = format!("supervisor '{}': failed to start child '{}': {err}", state.spec.name, id);
            error!(supervisor = %state.spec.name, child = %id, %err, "failed to start child");
            state.set_failure(key, &reason);
            state.set_status(key, ChildStatus::Failed);
            state.shutdown_children(&myself, Some("supervisor start failed".into())).await;
            return Err(reason.into());
        }
        info!(supervisor = %state.spec.name, children = state.children.len(), strategy = ?state.spec.strategy, "supervisor started");
        Ok(state)
    }

    async fn post_stop(&self, myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        debug!(supervisor = %state.spec.name, "supervisor stopping, stopping children");
        state.shutdown_children(&myself, None).await;
        info!(supervisor = %state.spec.name, "supervisor stopped");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.stats.record_message();
        match message {
            SupervisorMsg::StartChild(spec, reply) => {
                let result = state.start_new_child(&myself, spec).await;
                if let Err(err) = &result {
                    warn!(supervisor = %state.spec.name, %err, "StartChild failed");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            SupervisorMsg::TerminateChild(id, reply) => state.terminate_child(&id, reply),
            SupervisorMsg::Snapshot(reply) => {
                let _ = reply.send(state.stats.snapshot());
            }
            SupervisorMsg::Internal(Internal(InternalKind::RestartChild { key, generation })) => {
                let due = state.children.get(key).is_some_and(|c| c.generation == generation && c.cell.is_none());
                if due {
                    if let Err(err) = state.restart_child(&myself, key).await {
                        state.on_start_failure(&myself, key, err).await?;
                    }
                }
            }
            SupervisorMsg::Internal(Internal(InternalKind::RestartAll { epoch })) => {
                if epoch == state.epoch {
                    state.restart_all(&myself).await?;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.stats.record_message();
        match event {
            SupervisionEvent::ActorStarted(cell) => state.on_started(cell.get_id()),
            SupervisionEvent::ActorFailed(cell, err) => {
                state.on_exit(&myself, cell.get_id(), Exit::Abnormal(err.to_string())).await?;
            }
            SupervisionEvent::ActorTerminated(cell, last_state, reason) => {
                // ractor hands back the last state on every orderly stop; it
                // is absent only when the actor was killed (Signal::Kill) or
                // its task was cancelled, which OTP would call abnormal.
                let exit = if last_state.is_some() {
                    Exit::Normal(reason)
                } else {
                    Exit::Abnormal(reason.unwrap_or_else(|| "killed".to_string()))
                };
                state.on_exit(&myself, cell.get_id(), exit).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

impl SupervisorState {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn insert_child(&mut self, spec: ChildSpec) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        let snap = ChildSnapshot {
            id: spec.id.clone(),
            kind: spec.kind,
            restart: spec.restart,
            status: ChildStatus::Starting,
            restarts: 0,
            last_failure: None,
            actor_id: None,
        };
        self.children.insert(
            key,
            Child {
                spec,
                status: ChildStatus::Starting,
                cell: None,
                generation: 0,
                consecutive: 0,
                started_at: None,
                pending_all: false,
            },
        );
        {
            let mut w = self.stats.write();
            w.by_id.insert(snap.id.clone(), key);
            w.children.insert(key, snap);
        }
        key
    }

    fn remove_child(&mut self, key: u64) -> Option<Child> {
        let child = self.children.remove(key)?;
        if let Some(cell) = &child.cell {
            self.by_actor.remove(&cell.get_id());
        }
        {
            let mut w = self.stats.write();
            w.children.remove(key);
            w.by_id.remove(&child.spec.id);
        }
        Some(child)
    }

    fn edit_snap(&self, key: u64, f: impl FnOnce(&mut ChildSnapshot)) {
        if let Some(snap) = self.stats.write().children.get_mut(key) {
            f(snap);
        }
    }

    fn set_status(&mut self, key: u64, status: ChildStatus) {
        if let Some(c) = self.children.get_mut(key) {
            c.status = status;
            self.edit_snap(key, |s| s.status = status);
        }
    }

    fn set_failure(&self, key: u64, reason: &str) {
        self.edit_snap(key, |s| s.last_failure = Some(FailureRecord::now(reason)));
    }

    /// Start children `start_concurrency` at a time, each start on its own task; returns
    /// the first that failed (after every start under way has finished and registered).
    async fn spawn_concurrently(&mut self, myself: &ActorRef<SupervisorMsg>, keys: Vec<u64>) -> Option<(u64, String)> {
        let window = self.spec.start_concurrency.max(1);
        let mut running = tokio::task::JoinSet::new();
        let mut keys = keys.into_iter();
        let mut failed = None;
        loop {
            while failed.is_none() && running.len() < window {
                let Some(key) = keys.next() else { break };
                let Some(child) = self.children.get(key) else { continue };
                let start = Arc::clone(&child.spec.start);
                self.set_status(key, ChildStatus::Starting);
                let cell = myself.get_cell();
                running.spawn(async move { (key, call_factory(&start, cell).await) });
            }
            let Some(done) = running.join_next().await else { break };
            let (key, result) = match done {
                Ok(r) => r,
                Err(e) => {
                    failed.get_or_insert((u64::MAX, format!("a child start task failed: {e}")));
                    continue;
                }
            };
            let registered = match result {
                Ok(cell) => self.register_child(myself, key, cell),
                Err(e) => Err(e),
            };
            if let Err(e) = registered {
                failed.get_or_insert((key, e));
            }
        }
        if let Some((u64::MAX, e)) = &failed {
            let key = self.children.first_key().unwrap_or(0);
            return Some((key, e.clone()));
        }
        failed
    }

    /// Call the child's factory and register the new instance.
    async fn spawn_child(&mut self, myself: &ActorRef<SupervisorMsg>, key: u64) -> Result<(), String> {
        let Some(child) = self.children.get(key) else {
            return Err("unknown child".into());
        };
        let start = Arc::clone(&child.spec.start);
        self.set_status(key, ChildStatus::Starting);
        let cell = call_factory(&start, myself.get_cell()).await?;
        self.register_child(myself, key, cell)
    }

    /// Record a freshly spawned instance of a child (linking it if its factory did not).
    fn register_child(&mut self, myself: &ActorRef<SupervisorMsg>, key: u64, cell: ActorCell) -> Result<(), String> {
        if !self.children.contains_key(key) {
            return Err("unknown child".into());
        }
        let linked_to_us = cell.try_get_supervisor().is_some_and(|s| s.get_id() == myself.get_id());
        if !linked_to_us {
            let id = self.children.get(key).map(|c| c.spec.id.clone()).unwrap_or_else(|| "?".into());
            warn!(supervisor = %self.name(), child = %id,
                "child factory did not link the child to its supervisor; linking it now");
            cell.link(myself.get_cell());
        }
        let actor_id = cell.get_id();
        self.by_actor.insert(actor_id, key);
        let Some(child) = self.children.get_mut(key) else {
            return Err("unknown child".into());
        };
        child.cell = Some(cell);
        child.started_at = Some(Instant::now());
        self.edit_snap(key, |s| s.actor_id = Some(actor_id));
        Ok(())
    }

    async fn start_new_child(&mut self, myself: &ActorRef<SupervisorMsg>, spec: ChildSpec) -> Result<(), String> {
        if self.stats.read().by_id.contains_key(&spec.id) {
            return Err(format!("child '{}' already exists in supervisor '{}'", spec.id, self.name()));
        }
        let id = spec.id.clone();
        let key = self.insert_child(spec);
        match self.spawn_child(myself, key).await {
            Ok(()) => {
                debug!(supervisor = %self.name(), child = %id, "child added");
                Ok(())
            }
            Err(err) => {
                self.remove_child(key);
                Err(format!("failed to start child '{id}': {err}"))
            }
        }
    }

    fn terminate_child(&mut self, id: &str, reply: Option<RpcReplyPort<bool>>) {
        let found = self.stats.read().by_id.get(id).copied();
        let Some(key) = found else {
            if let Some(reply) = reply {
                let _ = reply.send(false);
            }
            return;
        };
        let child = self.remove_child(key).expect("indexed child exists");
        info!(supervisor = %self.name(), child = %id, "terminating child");
        // Its termination event will find no entry and be ignored.
        let cells: Vec<ActorCell> = child.cell.into_iter().collect();
        tokio::spawn(async move {
            stop_all(cells, Some("terminated by supervisor".into()), CHILD_SHUTDOWN_TIMEOUT).await;
            if let Some(reply) = reply {
                let _ = reply.send(true);
            }
        });
    }

    fn on_started(&mut self, actor: ActorId) {
        if let Some(&key) = self.by_actor.get(&actor) {
            self.set_status(key, ChildStatus::Running);
        }
    }

    async fn on_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        actor: ActorId,
        exit: Exit,
    ) -> Result<(), ActorProcessingErr> {
        let Some(key) = self.by_actor.remove(&actor) else {
            debug!(supervisor = %self.name(), %actor, "ignoring exit of a non-current child");
            return Ok(());
        };
        let Some(child) = self.children.get_mut(key) else {
            return Ok(());
        };
        child.cell = None;
        let (restart_policy, id, kind) = (child.spec.restart, child.spec.id.clone(), child.spec.kind);
        self.edit_snap(key, |s| s.actor_id = None);

        let (abnormal, reason) = match exit {
            Exit::Abnormal(r) => (true, r),
            Exit::Normal(Some(r)) => (false, format!("exited normally ({r})")),
            Exit::Normal(None) => (false, "exited normally".to_string()),
        };
        let restart = match restart_policy {
            Restart::Permanent => true,
            Restart::Transient => abnormal,
            Restart::Temporary => false,
        };
        if abnormal || restart {
            warn!(supervisor = %self.name(), child = %id, kind, %reason, ?restart_policy, "child failed");
            self.set_failure(key, &reason);
            if let Some(obs) = &self.observer {
                obs.child_failed(&self.spec.name, &id, kind, &reason);
            }
        } else {
            info!(supervisor = %self.name(), child = %id, kind, %reason, "child exited");
        }
        if !restart {
            if restart_policy == Restart::Temporary {
                self.remove_child(key);
            } else {
                let status = if abnormal { ChildStatus::Failed } else { ChildStatus::Stopped };
                self.set_status(key, status);
            }
            return Ok(());
        }
        self.restart_after_failure(myself, key, reason).await
    }

    /// Count a restart against the intensity, then schedule it with backoff
    /// (or escalate).
    async fn restart_after_failure(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        key: u64,
        reason: String,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        let within = self.spec.intensity.within;
        self.restart_times.push_back(now);
        while self.restart_times.front().is_some_and(|t| now.duration_since(*t) > within) {
            self.restart_times.pop_front();
        }
        if self.restart_times.len() > self.spec.intensity.max_restarts as usize {
            return Err(self.escalate(myself, key, &reason).await);
        }

        let backoff = self.spec.backoff;
        let Some(child) = self.children.get_mut(key) else {
            return Ok(());
        };
        // A child that ran longer than the window starts over at attempt 0.
        // `take` so that failed restart attempts keep growing the backoff.
        if child.started_at.take().is_some_and(|t| now.duration_since(t) > within) {
            child.consecutive = 0;
        }
        let delay = backoff.delay(child.consecutive, &mut rand::rng());
        child.consecutive = child.consecutive.saturating_add(1);
        let in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        info!(supervisor = %self.spec.name, child = %child.spec.id, delay_ms = in_ms, strategy = ?self.spec.strategy, "scheduling restart");
        match self.spec.strategy {
            Strategy::OneForOne => {
                child.generation += 1;
                let msg_gen = child.generation;
                self.set_status(key, ChildStatus::Restarting { in_ms });
                let make =
                    move || SupervisorMsg::Internal(Internal(InternalKind::RestartChild { key, generation: msg_gen }));
                if delay.is_zero() {
                    let _ = myself.send_message(make());
                } else {
                    myself.send_after(delay, make);
                }
            }
            Strategy::OneForAll => self.schedule_restart_all(myself, delay, in_ms),
        }
        Ok(())
    }

    /// Stop every live child (their exits are not failures), then after the
    /// backoff restart them all in spec order.
    fn schedule_restart_all(&mut self, myself: &ActorRef<SupervisorMsg>, delay: Duration, in_ms: u64) {
        self.epoch += 1;
        let mut to_stop = Vec::new();
        let mut temporaries = Vec::new();
        let mut w = self.stats.write();
        for (key, child) in self.children.iter_mut() {
            let live = child.is_live();
            child.generation += 1;
            if let Some(cell) = child.cell.take() {
                self.by_actor.remove(&cell.get_id());
                to_stop.push(cell);
            }
            if !live {
                continue;
            }
            if child.spec.restart == Restart::Temporary {
                temporaries.push(key);
                continue;
            }
            child.pending_all = true;
            child.status = ChildStatus::Restarting { in_ms };
            if let Some(s) = w.children.get_mut(key) {
                s.status = child.status;
                s.actor_id = None;
            }
        }
        drop(w);
        for key in temporaries {
            self.remove_child(key);
        }
        let epoch = self.epoch;
        let myself = myself.clone();
        tokio::spawn(async move {
            let restart_at = Instant::now() + delay;
            stop_all(to_stop, Some("one-for-all restart".into()), CHILD_SHUTDOWN_TIMEOUT).await;
            tokio::time::sleep_until(restart_at).await;
            let _ = myself.send_message(SupervisorMsg::Internal(Internal(InternalKind::RestartAll { epoch })));
        });
    }

    async fn restart_all(&mut self, myself: &ActorRef<SupervisorMsg>) -> Result<(), ActorProcessingErr> {
        let keys: Vec<u64> = self.children.iter().filter(|(_, c)| c.pending_all).map(|(k, _)| k).collect();
        for key in keys {
            let Some(child) = self.children.get_mut(key) else {
                continue;
            };
            if !child.pending_all {
                continue;
            }
            child.pending_all = false;
            if let Err(err) = self.restart_child(myself, key).await {
                // Schedules a new one-for-all restart (or escalates); the
                // children not reached yet are still live and included.
                return self.on_start_failure(myself, key, err).await;
            }
        }
        Ok(())
    }

    /// Spawn a new instance of a child that is due for restart.
    async fn restart_child(&mut self, myself: &ActorRef<SupervisorMsg>, key: u64) -> Result<(), String> {
        self.spawn_child(myself, key).await?;
        let mut snap = None;
        {
            let mut w = self.stats.write();
            w.header.total_restarts += 1;
            if let Some(s) = w.children.get_mut(key) {
                s.restarts = s.restarts.saturating_add(1);
                snap = Some(s.clone());
            }
        }
        if let Some(snap) = snap {
            info!(supervisor = %self.name(), child = %snap.id, restarts = snap.restarts, "child restarted");
            if let Some(obs) = &self.observer {
                obs.child_restarted(&self.spec.name, &snap);
            }
        }
        Ok(())
    }

    async fn on_start_failure(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        key: u64,
        err: String,
    ) -> Result<(), ActorProcessingErr> {
        let Some(child) = self.children.get(key) else {
            return Ok(());
        };
        let (id, kind) = (child.spec.id.clone(), child.spec.kind);
        let reason = format!("restart failed: {err}");
        warn!(supervisor = %self.name(), child = %id, kind, %reason, "child failed to restart");
        self.set_failure(key, &reason);
        if let Some(obs) = &self.observer {
            obs.child_failed(&self.spec.name, &id, kind, &reason);
        }
        self.restart_after_failure(myself, key, reason).await
    }

    /// Give up: stop all children, record and report the escalation, and
    /// return the error that fails this supervisor.
    async fn escalate(&mut self, myself: &ActorRef<SupervisorMsg>, key: u64, reason: &str) -> ActorProcessingErr {
        let child_id = self.children.get(key).map(|c| c.spec.id.clone()).unwrap_or_else(|| "".into());
        let msg = format!(
            "supervisor '{}' exceeded its restart intensity ({} restarts within {:?}); last failure of child '{}': {}",
            self.spec.name, self.spec.intensity.max_restarts, self.spec.intensity.within, child_id, reason
        );
        error!(supervisor = %self.name(), child = %child_id, %reason, "restart intensity exceeded, escalating");
        self.set_status(key, ChildStatus::Failed);
        self.stats.write().header.escalated = Some(FailureRecord::now(&msg));
        if let Some(obs) = &self.observer {
            obs.escalated(&self.spec.name, &msg);
        }
        self.shutdown_children(myself, Some("supervisor escalated".into())).await;
        msg.into()
    }

    /// Stop all linked children and wait for them; no restart can follow.
    async fn shutdown_children(&mut self, myself: &ActorRef<SupervisorMsg>, reason: Option<String>) {
        self.epoch += 1;
        self.by_actor.clear();
        {
            let mut w = self.stats.write();
            for (key, child) in self.children.iter_mut() {
                child.cell = None;
                child.generation += 1;
                child.pending_all = false;
                if child.status != ChildStatus::Failed {
                    child.status = ChildStatus::Stopped;
                }
                if let Some(s) = w.children.get_mut(key) {
                    s.status = child.status;
                    s.actor_id = None;
                }
            }
        }
        // ractor's own child list also holds instances that are still
        // shutting down (one-for-all, TerminateChild).
        stop_all(myself.get_children(), reason, CHILD_SHUTDOWN_TIMEOUT).await;
    }
}

/// Run a child's factory, turning a panic (while calling it or polling its future) and a
/// spawn error into the reason.
async fn call_factory(start: &crate::spec::StartFn, parent: ActorCell) -> Result<ActorCell, String> {
    let spawned = match std::panic::catch_unwind(AssertUnwindSafe(|| start(parent))) {
        Ok(fut) => CatchUnwind(fut).await,
        Err(panic) => Err(panic_message(panic)),
    };
    match spawned {
        Ok(Ok(cell)) => Ok(cell),
        Ok(Err(spawn_err)) => Err(spawn_err.to_string()),
        Err(panic) => Err(format!("child factory panicked: {panic}")),
    }
}

/// Ask all `cells` to stop, wait for them until `timeout`, kill stragglers.
async fn stop_all(cells: Vec<ActorCell>, reason: Option<String>, timeout: Duration) {
    if cells.is_empty() {
        return;
    }
    for cell in &cells {
        cell.stop(reason.clone());
    }
    let deadline = Instant::now() + timeout;
    for cell in &cells {
        if tokio::time::timeout_at(deadline, cell.wait(None)).await.is_err() {
            warn!(actor = %cell.get_id(), "child did not stop in time; killing it");
            cell.kill();
            let _ = cell.wait(Some(Duration::from_secs(1))).await;
        }
    }
}

/// Catches a panic raised while polling the factory future.
struct CatchUnwind(SpawnFuture);

impl Future for CatchUnwind {
    type Output = Result<Result<ActorCell, ractor::SpawnErr>, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(r)) => Poll::Ready(Ok(r)),
            Err(panic) => Poll::Ready(Err(panic_message(panic))),
        }
    }
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(s) => *s,
        Err(panic) => match panic.downcast::<&'static str>() {
            Ok(s) => (*s).to_string(),
            Err(_) => "unknown panic".to_string(),
        },
    }
}

/// Convenience calls on a supervisor's [`ActorRef`].
pub trait SupervisorRefExt {
    /// [`SupervisorMsg::StartChild`] and wait for the reply.
    fn start_child(&self, spec: ChildSpec) -> impl Future<Output = Result<(), String>> + Send;
    /// [`SupervisorMsg::TerminateChild`] and wait for the reply (`false`:
    /// unknown id). `Err` if the supervisor is not reachable.
    fn terminate_child(&self, id: impl Into<String> + Send) -> impl Future<Output = Result<bool, String>> + Send;
    /// [`SupervisorMsg::Snapshot`]. `Err` if the supervisor is not reachable.
    fn snapshot(&self) -> impl Future<Output = Result<SupervisorSnapshot, String>> + Send;
}

impl SupervisorRefExt for ActorRef<SupervisorMsg> {
    async fn start_child(&self, spec: ChildSpec) -> Result<(), String> {
        match ractor::call!(self, |tx| SupervisorMsg::StartChild(spec, Some(tx))) {
            Ok(result) => result,
            Err(e) => Err(format!("supervisor unreachable: {e}")),
        }
    }

    async fn terminate_child(&self, id: impl Into<String> + Send) -> Result<bool, String> {
        let id = id.into();
        ractor::call!(self, |tx| SupervisorMsg::TerminateChild(id, Some(tx)))
            .map_err(|e| format!("supervisor unreachable: {e}"))
    }

    async fn snapshot(&self) -> Result<SupervisorSnapshot, String> {
        ractor::call!(self, SupervisorMsg::Snapshot).map_err(|e| format!("supervisor unreachable: {e}"))
    }
}
