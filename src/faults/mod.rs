//! Fault injection: break parts of the running twin on purpose, and see what it did.
//!
//! - [`spec`]: a fault as written (JSON body, scenario step), validated field by field.
//! - [`FaultEngine`]: resolves targets, applies faults, ends them by themselves (a `count`
//!   reached or a `duration` elapsed) or when deleted, and keeps what each one did.
//! - [`gate`]: the [`FaultGate`] in every sink's handle, consulted before each send
//!   (`fail`, `latency`, `disconnect`).
//! - [`sensors`]: the [`SensorFaults`] table the sensor actors consult on each tick
//!   (`out_of_range`, `silence`).
//! - Actor faults (`panic`, `error`, `stall`) are messages to the actor's mailbox
//!   (`SensorMsg::{Panic, Fail, Stall}`, `SinkMsg::{Crash, Fail, Stall}`), found through the
//!   actor directory: supervision does the rest, as for a real failure.
//! - [`http`]: `POST/GET /api/v1/faults`, `GET/DELETE /api/v1/faults/{id}`.
//! - [`scenario`]: `twinrt run --scenario FILE`: faults at given times, and the run report.

pub mod gate;
pub mod http;
pub mod scenario;
pub mod sensors;
pub mod spec;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ractor::ActorRef;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Notify;

pub use gate::FaultGate;
pub use sensors::{SensorFaults, TickFault};
pub use spec::{FaultKind, FaultSpec, Selector, SpecError};

use crate::actors::{now_ms, ActorEntry, ActorKind, Directory};
use crate::consumer::ConsumerMsg;
use crate::registry::Registry;
use crate::sensor::SensorMsg;
use crate::sinks::{SinkHandle, SinkMsg, SinkSet};
use gate::GateAction;
use sensors::SensorAction;

/// How many faults (active and past) are kept; beyond that the oldest ended ones go.
const KEEP: usize = 1000;
/// How many target names a fault's view lists.
const SHOWN_TARGETS: usize = 100;

/// Why a fault ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Its `count` was used up.
    CountReached,
    /// Its `duration` elapsed.
    DurationElapsed,
    /// `DELETE /api/v1/faults/{id}`.
    Deleted,
    /// The runtime shut down.
    RuntimeStopped,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::CountReached => "count_reached",
            EndReason::DurationElapsed => "duration_elapsed",
            EndReason::Deleted => "deleted",
            EndReason::RuntimeStopped => "runtime_stopped",
        }
    }
}

/// What a fault did.
#[derive(Debug, Default)]
pub struct Effects {
    pub panics: AtomicU64,
    pub errors: AtomicU64,
    pub stalls: AtomicU64,
    pub requests_failed: AtomicU64,
    pub latency_added_ms: AtomicU64,
    pub disconnects: AtomicU64,
    pub observations_suppressed: AtomicU64,
    pub observations_altered: AtomicU64,
    /// Targets that had no running actor when the fault reached them (e.g. restarting).
    pub targets_skipped: AtomicU64,
}

/// The counts of [`Effects`], as numbers.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct EffectCounts {
    pub panics: u64,
    pub errors: u64,
    pub stalls: u64,
    pub requests_failed: u64,
    pub latency_added_ms: u64,
    pub disconnects: u64,
    pub observations_suppressed: u64,
    pub observations_altered: u64,
    pub targets_skipped: u64,
}

impl Effects {
    pub fn counts(&self) -> EffectCounts {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EffectCounts {
            panics: g(&self.panics),
            errors: g(&self.errors),
            stalls: g(&self.stalls),
            requests_failed: g(&self.requests_failed),
            latency_added_ms: g(&self.latency_added_ms),
            disconnects: g(&self.disconnects),
            observations_suppressed: g(&self.observations_suppressed),
            observations_altered: g(&self.observations_altered),
            targets_skipped: g(&self.targets_skipped),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the gates and tables share of a fault: whether it ended, what is left of its count.
pub struct FaultCore {
    pub id: u64,
    ended: AtomicBool,
    end: Mutex<Option<(EndReason, u64)>>,
    /// Units left (requests, targets, ...); None: until the duration ends.
    remaining: Option<AtomicU64>,
    pub effects: Effects,
    ended_signal: Notify,
}

impl FaultCore {
    pub(crate) fn new(id: u64, remaining: Option<u64>) -> Arc<FaultCore> {
        Arc::new(FaultCore {
            id,
            ended: AtomicBool::new(false),
            end: Mutex::new(None),
            remaining: remaining.map(AtomicU64::new),
            effects: Effects::default(),
            ended_signal: Notify::new(),
        })
    }

    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Take one unit of the count (always, without a count); the last one ends the fault.
    pub(crate) fn take_one(&self) -> bool {
        let Some(r) = &self.remaining else { return !self.is_ended() };
        match r.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)) {
            Ok(1) => {
                self.finish(EndReason::CountReached);
                true
            }
            Ok(_) => true,
            Err(_) => false,
        }
    }

    /// End it (the first reason wins). Returns whether this call ended it.
    pub(crate) fn finish(&self, reason: EndReason) -> bool {
        let mut end = lock(&self.end);
        if end.is_some() {
            return false;
        }
        *end = Some((reason, now_ms()));
        self.ended.store(true, Ordering::Release);
        drop(end);
        self.ended_signal.notify_waiters();
        true
    }

    /// Resolves once the fault ended.
    async fn wait_ended(&self) {
        loop {
            let n = self.ended_signal.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.is_ended() {
                return;
            }
            n.await;
        }
    }

    pub fn end(&self) -> Option<(EndReason, u64)> {
        *lock(&self.end)
    }
}

/// What a fault resolved to.
#[derive(Clone)]
enum Resolved {
    /// Shared: a selector may name 100,000 sensors.
    Sensors(Arc<Vec<String>>),
    Sink {
        handle: Arc<SinkHandle>,
        entry: Arc<ActorEntry>,
    },
    /// A consumer actor (the Redpanda consumer, a distributor topic consumer): `panic` only.
    Consumer(Arc<ActorEntry>),
}

/// One fault, active or past.
pub struct Fault {
    pub core: Arc<FaultCore>,
    pub spec: FaultSpec,
    pub created_ms: u64,
    pub ends_at_ms: Option<u64>,
    /// The first targets it reached and how many (for a `ratio:` selector of a repeated
    /// fault, the last round's).
    targets: Mutex<(Vec<String>, usize)>,
    /// Dropped (emptied) once the fault ended: only the view's targets stay.
    resolved: Mutex<Resolved>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

/// A fault, as the API and the run report show it.
#[derive(Debug, Clone, Serialize)]
pub struct FaultView {
    pub id: u64,
    pub kind: FaultKind,
    pub target: String,
    /// The fault as accepted (with defaults filled in).
    pub spec: Value,
    /// `active` or `ended`.
    pub status: &'static str,
    pub created_at_unix_ms: u64,
    /// When its duration ends it (if it has one).
    pub ends_at_unix_ms: Option<u64>,
    pub ended_at_unix_ms: Option<u64>,
    /// `count_reached`, `duration_elapsed`, `deleted` or `runtime_stopped`.
    pub ended_reason: Option<&'static str>,
    /// The first 100 targets (sensor ids, or `sink:NAME`).
    pub targets: Vec<String>,
    pub targets_total: usize,
    pub effects: EffectCounts,
}

impl Fault {
    fn set_targets(&self, all: &[String]) {
        *lock(&self.targets) = (all.iter().take(SHOWN_TARGETS).cloned().collect(), all.len());
    }

    pub fn view(&self) -> FaultView {
        let end = self.core.end();
        let (targets, targets_total) = lock(&self.targets).clone();
        FaultView {
            id: self.core.id,
            kind: self.spec.kind,
            target: self.spec.target.clone(),
            spec: self.spec.to_json(),
            status: if end.is_some() { "ended" } else { "active" },
            created_at_unix_ms: self.created_ms,
            ends_at_unix_ms: self.ends_at_ms,
            ended_at_unix_ms: end.map(|e| e.1),
            ended_reason: end.map(|e| e.0.as_str()),
            targets,
            targets_total,
            effects: self.core.effects.counts(),
        }
    }
}

/// Applies faults and keeps them (see the module documentation).
pub struct FaultEngine {
    registry: Arc<Registry>,
    directory: Arc<Directory>,
    sinks: SinkSet,
    sensors: Arc<SensorFaults>,
    faults: Mutex<Vec<Arc<Fault>>>,
    next_id: AtomicU64,
}

/// Draw `ratio` of `ids` at random (at least one).
fn sample(ids: Vec<String>, ratio: f64) -> Vec<String> {
    let n = ((ids.len() as f64 * ratio).round() as usize).clamp(1, ids.len().max(1));
    if n >= ids.len() {
        return ids;
    }
    let mut picked: Vec<usize> = rand::seq::index::sample(&mut rand::rng(), ids.len(), n).into_vec();
    picked.sort_unstable();
    picked.into_iter().map(|i| ids[i].clone()).collect()
}

impl FaultEngine {
    pub fn new(
        registry: Arc<Registry>,
        directory: Arc<Directory>,
        sinks: SinkSet,
        sensors: Arc<SensorFaults>,
    ) -> Arc<FaultEngine> {
        Arc::new(FaultEngine {
            registry,
            directory,
            sinks,
            sensors,
            faults: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        })
    }

    /// Resolve a selector now (a `ratio:` draws its sensors).
    fn resolve(&self, sel: &Selector) -> Result<Resolved, String> {
        let nonempty = |ids: Vec<String>, what: String| {
            if ids.is_empty() {
                Err(format!("{what} selects no sensor"))
            } else {
                Ok(Resolved::Sensors(Arc::new(ids)))
            }
        };
        match sel {
            Selector::Sensor(id) => match self.registry.seq(id) {
                Some(_) => Ok(Resolved::Sensors(Arc::new(vec![id.clone()]))),
                None => Err(format!("no sensor \"{id}\" (see GET /api/v1/twins)")),
            },
            Selector::District(d) => nonempty(self.registry.ids_where(|s| *s.district == **d), format!("district:{d}")),
            Selector::Kind(k) => nonempty(self.registry.ids_where(|s| s.kind == *k), format!("kind:{}", k.as_str())),
            Selector::Ratio(r) => nonempty(sample(self.registry.ids(), *r), format!("ratio:{r}")),
            Selector::Sink(name) => self.sink(name),
            Selector::Path(p) => {
                let entry = self
                    .directory
                    .get(p)
                    .ok_or_else(|| format!("no actor at path \"{p}\" (see GET /api/v1/actors)"))?;
                match entry.kind {
                    ActorKind::Sensor => Ok(Resolved::Sensors(Arc::new(vec![entry.name.to_string()]))),
                    ActorKind::Sink => {
                        let name = entry.name.split_once(':').map(|(_, n)| n).unwrap_or(&entry.name);
                        self.sink(name)
                    }
                    ActorKind::Consumer => Ok(Resolved::Consumer(entry.clone())),
                    k => Err(format!("\"{p}\" is a {}: faults target sensors, sinks and consumers", k.as_str())),
                }
            }
        }
    }

    fn sink(&self, name: &str) -> Result<Resolved, String> {
        let handle = self.sinks.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = self.sinks.handles().iter().map(|h| h.name.as_str()).collect();
            format!("no sink \"{name}\" (sinks: {})", known.join(", "))
        })?;
        let entry = self
            .directory
            .get(&format!("root/sinks/{}:{}", handle.kind, handle.name))
            .cloned()
            .ok_or_else(|| format!("sink \"{name}\" has no actor"))?;
        Ok(Resolved::Sink { handle, entry })
    }

    /// Apply a fault. Errors name the field (`target` when it selects nothing).
    pub fn inject(self: &Arc<Self>, spec: FaultSpec) -> Result<FaultView, SpecError> {
        let resolved = self.resolve(&spec.selector).map_err(|e| SpecError::new("target", e))?;
        let (sensor_ids, sink) = match &resolved {
            Resolved::Sensors(ids) => (ids.clone(), None),
            Resolved::Sink { handle, .. } => (Arc::default(), Some(handle.clone())),
            Resolved::Consumer(entry) => {
                if spec.kind != FaultKind::Panic {
                    return Err(SpecError::new(
                        "kind",
                        format!("\"{}\" is a consumer: only `panic` applies to it", entry.path()),
                    ));
                }
                (Arc::default(), None)
            }
        };
        if spec.kind.is_sink() && sink.is_none() {
            return Err(SpecError::new("target", format!("`{}` applies to a sink", spec.kind.as_str())));
        }
        if spec.kind.is_sensor() && sink.is_some() {
            return Err(SpecError::new("target", format!("`{}` applies to sensors", spec.kind.as_str())));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let remaining = match spec.kind {
            FaultKind::Fail | FaultKind::Latency => spec.count,
            FaultKind::OutOfRange | FaultKind::Silence => spec.count.map(|_| sensor_ids.len() as u64),
            _ => None,
        };
        let core = FaultCore::new(id, remaining);
        let created_ms = now_ms();
        let timed = match spec.kind {
            FaultKind::Stall => None,
            _ => spec.duration,
        };
        let fault = Arc::new(Fault {
            core: core.clone(),
            ends_at_ms: timed.map(|d| created_ms + d.as_millis() as u64),
            created_ms,
            targets: Mutex::new((Vec::new(), 0)),
            resolved: Mutex::new(resolved),
            spec,
            task: Mutex::new(None),
        });
        match &sink {
            Some(h) => fault.set_targets(&[format!("sink:{}", h.name)]),
            None => fault.set_targets(&sensor_ids),
        }
        // Gates and tables first, so the fault acts from now on.
        match (fault.spec.kind, &sink) {
            (FaultKind::Fail, Some(h)) => {
                h.faults.add(core.clone(), GateAction::Fail { ratio: fault.spec.ratio.unwrap_or(1.0) })
            }
            (FaultKind::Latency, Some(h)) => {
                h.faults.add(core.clone(), GateAction::Latency { delay: fault.spec.delay.unwrap_or_default() })
            }
            (FaultKind::Disconnect, Some(h)) if fault.spec.duration.is_some() => {
                h.faults.add(core.clone(), GateAction::HoldDown);
                if h.stats.connected.load(Ordering::Relaxed) {
                    core.effects.disconnects.fetch_add(1, Ordering::Relaxed);
                }
                h.faults.drop_connection();
            }
            (FaultKind::OutOfRange, None) => {
                self.sensors.add(&sensor_ids, &core, SensorAction::OutOfRange, fault.spec.count)
            }
            (FaultKind::Silence, None) => self.sensors.add(&sensor_ids, &core, SensorAction::Silence, fault.spec.count),
            _ => {}
        }
        {
            let mut all = lock(&self.faults);
            all.push(fault.clone());
            while all.len() > KEEP {
                match all.iter().position(|f| f.core.is_ended()) {
                    Some(i) => {
                        all.remove(i);
                    }
                    None => break,
                }
            }
        }
        tracing::warn!(fault = id, kind = fault.spec.kind.as_str(), target = %fault.spec.target, "fault injected");
        let engine = self.clone();
        let f = fault.clone();
        let task = tokio::spawn(async move {
            let reason = match timed {
                Some(d) => tokio::select! {
                    () = engine.drive(&f) => EndReason::CountReached,
                    () = tokio::time::sleep(d) => EndReason::DurationElapsed,
                },
                None => {
                    engine.drive(&f).await;
                    if f.spec.kind == FaultKind::Stall {
                        EndReason::DurationElapsed
                    } else {
                        EndReason::CountReached
                    }
                }
            };
            engine.end_fault(&f, reason, true);
        });
        *lock(&fault.task) = Some(task.abort_handle());
        if fault.core.is_ended() {
            // Ended while starting (e.g. deleted at once): make sure nothing lingers.
            self.end_fault(&fault, EndReason::Deleted, false);
        }
        Ok(fault.view())
    }

    /// What a fault does over time; returns when its count is used up.
    async fn drive(&self, f: &Arc<Fault>) {
        let spec = &f.spec;
        let effects = &f.core.effects;
        match spec.kind {
            FaultKind::Panic | FaultKind::Error => {
                let rounds = spec.count.unwrap_or(u64::MAX);
                let every = spec.every.unwrap_or(Duration::from_secs(1));
                let reason = spec.reason.clone().unwrap_or_else(|| "injected".into());
                let mut round = 0u64;
                loop {
                    let first = lock(&f.resolved).clone();
                    let resolved = match (&spec.selector, round) {
                        (Selector::Ratio(_), 1..) => self.resolve(&spec.selector).unwrap_or(first),
                        _ => first,
                    };
                    let msg = format!("fault {} ({}): {reason}", f.core.id, spec.kind.as_str());
                    let counter = if spec.kind == FaultKind::Panic { &effects.panics } else { &effects.errors };
                    match &resolved {
                        Resolved::Sensors(ids) => {
                            for id in ids.iter() {
                                let m = match spec.kind {
                                    FaultKind::Panic => SensorMsg::Panic(msg.clone()),
                                    _ => SensorMsg::Fail(msg.clone()),
                                };
                                self.count_hit(self.hit_sensor(id, m), counter, effects);
                            }
                            f.set_targets(ids);
                        }
                        Resolved::Sink { entry, .. } => {
                            let m = match spec.kind {
                                FaultKind::Panic => SinkMsg::Crash(msg.clone()),
                                _ => SinkMsg::Fail(msg.clone()),
                            };
                            self.count_hit(hit_sink(entry, m), counter, effects);
                        }
                        Resolved::Consumer(entry) => {
                            self.count_hit(hit_consumer(entry, ConsumerMsg::Crash(msg.clone())), counter, effects);
                            f.set_targets(&[entry.path().into_owned()]);
                        }
                    }
                    round += 1;
                    if round >= rounds {
                        return;
                    }
                    tokio::time::sleep(every).await;
                }
            }
            FaultKind::Stall => {
                let d = spec.duration.unwrap_or(Duration::from_secs(1));
                let n = spec.count.unwrap_or(1);
                let resolved = lock(&f.resolved).clone();
                for _ in 0..n {
                    match &resolved {
                        Resolved::Sensors(ids) => {
                            for id in ids.iter() {
                                self.count_hit(self.hit_sensor(id, SensorMsg::Stall(d)), &effects.stalls, effects);
                            }
                        }
                        Resolved::Sink { entry, .. } => {
                            self.count_hit(hit_sink(entry, SinkMsg::Stall(d)), &effects.stalls, effects)
                        }
                        Resolved::Consumer(_) => {}
                    }
                }
                tokio::time::sleep(d.saturating_mul(n.min(u64::from(u32::MAX)) as u32)).await;
            }
            FaultKind::Disconnect if spec.duration.is_none() => {
                let Resolved::Sink { handle, .. } = lock(&f.resolved).clone() else { return };
                let connected = || handle.stats.connected.load(Ordering::Relaxed);
                for _ in 0..spec.count.unwrap_or(1) {
                    while !connected() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    handle.faults.drop_connection();
                    effects.disconnects.fetch_add(1, Ordering::Relaxed);
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                    while connected() && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            // Gates and tables do the work; the count (if any) ends it there.
            _ => {
                if spec.count.is_some() {
                    f.core.wait_ended().await;
                } else {
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    fn count_hit(&self, hit: bool, counter: &AtomicU64, effects: &Effects) {
        let c = if hit { counter } else { &effects.targets_skipped };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Send a message to a sensor's running actor; false when it has none.
    fn hit_sensor(&self, id: &str, msg: SensorMsg) -> bool {
        let Some(district) = self.registry.district(id) else { return false };
        let Some(entry) = self.directory.get(&format!("root/twins/{district}/{id}")) else { return false };
        let Some(cell) = entry.cell() else { return false };
        let actor: ActorRef<SensorMsg> = cell.into();
        entry.mailbox.enqueue();
        if actor.cast(msg).is_err() {
            entry.mailbox.unenqueue();
            return false;
        }
        true
    }

    /// End a fault now (idempotent) and clear it from gates and tables.
    fn end_fault(&self, f: &Fault, reason: EndReason, from_task: bool) {
        if f.core.finish(reason) {
            tracing::warn!(fault = f.core.id, reason = reason.as_str(), "fault ended");
        }
        if !from_task {
            if let Some(t) = lock(&f.task).take() {
                t.abort();
            }
        }
        let mut resolved = lock(&f.resolved);
        match &*resolved {
            Resolved::Sink { handle, .. } => handle.faults.purge(),
            Resolved::Consumer(_) => {}
            Resolved::Sensors(ids) => {
                if f.spec.kind.is_sensor() {
                    self.sensors.remove(ids, f.core.id);
                }
                // Keep only the view's targets of an ended fault.
                *resolved = Resolved::Sensors(Arc::default());
            }
        }
    }

    fn find(&self, id: u64) -> Option<Arc<Fault>> {
        lock(&self.faults).iter().find(|f| f.core.id == id).cloned()
    }

    /// Every fault kept, oldest first.
    pub fn list(&self) -> Vec<FaultView> {
        let all: Vec<Arc<Fault>> = lock(&self.faults).clone();
        all.iter().map(|f| f.view()).collect()
    }

    pub fn get(&self, id: u64) -> Option<FaultView> {
        self.find(id).map(|f| f.view())
    }

    /// End a fault early (`DELETE`). None: no such fault.
    pub fn delete(&self, id: u64) -> Option<FaultView> {
        let f = self.find(id)?;
        self.end_fault(&f, EndReason::Deleted, false);
        Some(f.view())
    }

    /// End every active fault (shutdown).
    pub fn end_all(&self, reason: EndReason) {
        let all: Vec<Arc<Fault>> = lock(&self.faults).clone();
        for f in all.iter().filter(|f| !f.core.is_ended()) {
            self.end_fault(f, reason, false);
        }
    }

    /// The sensor-fault table the sensor actors consult.
    pub fn sensor_faults(&self) -> &Arc<SensorFaults> {
        &self.sensors
    }

    /// The faults as JSON (`{"items": [...]}`).
    pub fn list_json(&self) -> Value {
        json!({ "items": self.list() })
    }
}

/// How every injected panic's message starts (`SensorMsg::Panic`, `SinkMsg::Crash`).
pub const INJECTED_PANIC: &str = "fault injected into ";

/// Print injected panics as one log line (debug) instead of a message and a backtrace on
/// stderr each (a chaos run panics thousands of actors); every other panic goes to the
/// previous hook. Their supervisors log each restart anyway. For the binary.
pub fn quiet_injected_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let msg = p.downcast_ref::<String>().map(String::as_str).or_else(|| p.downcast_ref::<&str>().copied());
        match msg {
            Some(m) if m.starts_with(INJECTED_PANIC) => tracing::debug!(panic = m, "injected panic"),
            _ => previous(info),
        }
    }));
}

/// Send a message to a sink's running actor; false when it has none.
fn hit_consumer(entry: &ActorEntry, msg: ConsumerMsg) -> bool {
    let Some(cell) = entry.cell() else { return false };
    let actor: ActorRef<ConsumerMsg> = cell.into();
    entry.mailbox.enqueue();
    if actor.cast(msg).is_err() {
        entry.mailbox.unenqueue();
        return false;
    }
    true
}

fn hit_sink(entry: &ActorEntry, msg: SinkMsg) -> bool {
    let Some(cell) = entry.cell() else { return false };
    let actor: ActorRef<SinkMsg> = cell.into();
    entry.mailbox.enqueue();
    if actor.cast(msg).is_err() {
        entry.mailbox.unenqueue();
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_a_fraction_of_distinct_ids() {
        let ids: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
        let s = sample(ids.clone(), 0.1);
        assert_eq!(s.len(), 10);
        let mut d = s.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 10);
        assert_eq!(sample(ids.clone(), 0.001).len(), 1, "at least one");
        assert_eq!(sample(ids, 1.0).len(), 100);
    }

    #[test]
    fn a_count_ends_a_core_once() {
        let c = FaultCore::new(1, Some(2));
        assert!(c.take_one());
        assert!(!c.is_ended());
        assert!(c.take_one());
        assert_eq!(c.end().map(|e| e.0), Some(EndReason::CountReached));
        assert!(!c.take_one());
        assert!(!c.finish(EndReason::Deleted), "the first reason wins");
    }
}
