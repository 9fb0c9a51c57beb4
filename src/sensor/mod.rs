//! The sensor actor: thin, it delegates the model to `twins` and keeps no state of its own
//! that matters. Its twin lives in the [`Registry`], so a restarted sensor resumes where
//! the failed one stopped.
//!
//! Timing: sensor `id` emits observation `n` (1-based) at real time
//! `start + offset + (n - 1) * interval`, where `start` is when the runtime's supervision
//! tree has started (every twin actor of the first start is running: see [`ScheduleStart`])
//! and `offset` spreads sensors over their interval
//! (a stable hash of the id), and that observation is *observed at* the simulated time
//! `sim_start + speed * (offset + (n - 1) * interval)`. Observation times therefore depend
//! only on the seed, the start time and the configuration, never on scheduling jitter,
//! and a restarted sensor continues the same schedule.

pub mod ticker;
pub mod tree;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;
use twins::{SensorKind, SimClock};

use crate::actors::ActorEntry;
use crate::faults::{SensorFaults, TickFault};
use crate::metrics::Metrics;
use crate::registry::{Registry, TwinCell};
use crate::sinks::SinkSet;
use ticker::Ticker;

/// What every sensor actor shares.
#[derive(Clone)]
pub struct SensorContext {
    pub registry: Arc<Registry>,
    pub sinks: SinkSet,
    pub clock: SimClock,
    /// Real time at which the schedule starts.
    pub real_start: ScheduleStart,
    pub metrics: Metrics,
    /// Injected faults of what sensors report (`out_of_range`, `silence`).
    pub faults: Arc<SensorFaults>,
}

/// When the sensors' schedule starts. The runtime starts it once its tree is up, so that
/// a large fleet does not spend its start-up emitting (and, for the twins spawned last,
/// catching up with) observations due while it was still spawning: until then nothing is
/// due and the district tickers wait.
#[derive(Clone, Default)]
pub struct ScheduleStart(Arc<(OnceLock<Instant>, tokio::sync::Notify)>);

impl ScheduleStart {
    /// Not started yet.
    pub fn new() -> ScheduleStart {
        ScheduleStart::default()
    }

    /// Started now.
    pub fn started_now() -> ScheduleStart {
        let s = ScheduleStart::new();
        s.start();
        s
    }

    /// Start the schedule now (once: later calls keep the first time).
    pub fn start(&self) -> Instant {
        let at = *self.0 .0.get_or_init(Instant::now);
        self.0 .1.notify_waiters();
        at
    }

    pub fn get(&self) -> Option<Instant> {
        self.0 .0.get().copied()
    }

    /// The start, once there is one, or `None` after `patience`.
    pub async fn wait(&self, patience: Duration) -> Option<Instant> {
        let started = self.0 .1.notified();
        if let Some(at) = self.get() {
            return Some(at);
        }
        let _ = tokio::time::timeout(patience, started).await;
        self.get()
    }
}

#[derive(Debug)]
pub enum SensorMsg {
    /// Emit the next observation (sent by the district's ticker).
    Tick,
    /// Panic in the handler (fault injection and supervision tests).
    Panic(String),
    /// Return an error from the handler (fault injection).
    Fail(String),
    /// Sleep in the handler (fault injection): this actor's mailbox waits, no other actor does.
    Stall(Duration),
    /// Answer (the inspection API's liveness check).
    Ping(ractor::RpcReplyPort<()>),
}

/// One sensor of a district, as its actor (and every restart of it) is built.
pub struct SensorSlot {
    /// Its directory entry: its id is `entry.name`.
    pub entry: Arc<ActorEntry>,
    pub interval: Duration,
    pub kind: SensorKind,
    /// Its twin, as the registry holds it (`None`: the registry had no twin for it, and
    /// the actor fails to start).
    pub twin: Option<Arc<TwinCell>>,
    /// Its ticker found it still busy with its last message and sends nothing more until
    /// the actor, done with it, re-arms itself (see [`ticker`]).
    pub parked: std::sync::atomic::AtomicBool,
}

impl SensorSlot {
    pub fn new(
        entry: Arc<ActorEntry>,
        interval: Duration,
        kind: SensorKind,
        twin: Option<Arc<TwinCell>>,
    ) -> SensorSlot {
        SensorSlot { entry, interval, kind, twin, parked: std::sync::atomic::AtomicBool::new(false) }
    }
}

/// What the sensors of one district share: the context, their slots (indexed by the
/// sensor's position in the district), the district's ticker, and per-kind counters (so no
/// actor looks a label up).
pub struct District {
    pub name: String,
    pub ctx: SensorContext,
    pub sensors: Vec<SensorSlot>,
    ticker: Ticker,
    generated: Vec<prometheus::IntCounter>,
}

impl District {
    pub fn new(name: String, ctx: SensorContext, sensors: Vec<SensorSlot>) -> Arc<District> {
        let generated = SensorKind::ALL
            .iter()
            .map(|k| ctx.metrics.observations_generated.with_label_values(&[k.as_str()]))
            .collect();
        Arc::new(District { name, ticker: Ticker::new(sensors.len()), ctx, sensors, generated })
    }

    fn generated(&self, kind: SensorKind) -> &prometheus::IntCounter {
        let i = SensorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        &self.generated[i]
    }
}

pub struct SensorActor;

pub struct SensorArgs {
    pub district: Arc<District>,
    /// Its position in `district.sensors`.
    pub index: u32,
}

/// The actor's own state: a reference to what its district shares, and its place in it.
pub struct SensorState {
    district: Arc<District>,
    index: u32,
    offset: Duration,
    actor: Option<ractor::ActorId>,
    /// The twin's sequence number when this actor started (read once, in `pre_start`).
    start_seq: u64,
}

impl Drop for SensorState {
    /// Runs however the actor ends (stop or panic).
    fn drop(&mut self) {
        if let Some(id) = self.actor {
            self.district.ticker.detach(self.index, id);
        }
        self.district.ctx.metrics.twins_running.dec();
    }
}

/// A stable spread of sensors over their interval (FNV-1a of the id).
pub fn phase_offset(id: &str, interval: Duration) -> Duration {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Whole milliseconds, so that observation times read cleanly.
    let millis = interval.as_millis().max(1);
    Duration::from_millis((u128::from(h) % millis) as u64)
}

impl SensorState {
    fn slot(&self) -> &SensorSlot {
        &self.district.sensors[self.index as usize]
    }

    fn id(&self) -> &str {
        &self.slot().entry.name
    }

    /// Real-time offset from the start of observation `n` (1-based).
    fn due_offset(&self, n: u64) -> Duration {
        self.offset + self.slot().interval.saturating_mul(n.saturating_sub(1).min(u64::from(u32::MAX)) as u32)
    }

    /// Simulated time of observation `n`.
    fn observed_at(&self, n: u64) -> DateTime<Utc> {
        self.district.ctx.clock.sim_time(self.due_offset(n))
    }

    /// Emit the next observation: step the twin at its scheduled time, offer it to the
    /// sinks, record how late the tick was handled.
    /// Faults injected into the sensor (`silence`, `out_of_range`) apply here.
    async fn tick(&self, now: Instant) -> Result<(), ActorProcessingErr> {
        let ctx = &self.district.ctx;
        let id = self.id();
        let fault = ctx.faults.on_tick(id);
        if fault == TickFault::Silence {
            // Not stepped: the sequence does not advance, the schedule slides.
            ctx.faults.skipped(id);
            return Ok(());
        }
        let shift = ctx.faults.slot_shift(id);
        let mut due = now;
        // Checked in `pre_start`: a slot without a twin starts no actor.
        let Some(twin) = &self.slot().twin else {
            return Err(format!("sensor {id}: no twin in the registry").into());
        };
        let env = twin.step_emitted(
            |n| {
                due = ctx.real_start.get().unwrap_or(now) + self.due_offset(n + shift);
                self.observed_at(n + shift)
            },
            now.into_std(),
        );
        ctx.metrics.tick_lateness.observe(now.saturating_duration_since(due).as_secs_f64());
        self.district.generated(self.slot().kind).inc();
        let env = if fault == TickFault::OutOfRange { crate::faults::sensors::out_of_range(&env) } else { env };
        ctx.sinks.offer(env).await;
        Ok(())
    }
}

impl Actor for SensorActor {
    type Msg = SensorMsg;
    type State = SensorState;
    type Arguments = SensorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SensorMsg>,
        args: SensorArgs,
    ) -> Result<SensorState, ActorProcessingErr> {
        let SensorArgs { district, index } = args;
        let Some(slot) = district.sensors.get(index as usize) else {
            return Err(format!("district {}: no sensor #{index}", district.name).into());
        };
        let Some(start_seq) = slot.twin.as_ref().map(|t| t.seq()) else {
            return Err(format!("sensor {}: no twin in the registry", slot.entry.name).into());
        };
        district.ctx.metrics.twins_running.inc();
        let offset = phase_offset(&slot.entry.name, slot.interval);
        Ok(SensorState { district, index, offset, actor: None, start_seq })
    }

    async fn post_start(&self, myself: ActorRef<SensorMsg>, state: &mut SensorState) -> Result<(), ActorProcessingErr> {
        // Continue the schedule from the twin's sequence number (a restart resumes it),
        // slid by the intervals an injected `silence` skipped.
        // Nothing steps the twin before this actor attaches to the ticker, below.
        let next = state.start_seq + 1 + state.district.ctx.faults.slot_shift(state.id());
        let due = state.due_offset(next);
        state.slot().entry.attach(myself.get_cell());
        state.actor = Some(myself.get_id());
        Ticker::attach(&state.district, state.index, myself, due);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<SensorMsg>,
        msg: SensorMsg,
        state: &mut SensorState,
    ) -> Result<(), ActorProcessingErr> {
        // One reading of the clock per message: the mailbox's last-handled time, the tick's
        // lateness and the observation's emit time.
        let now = Instant::now();
        state.slot().entry.mailbox.handled_at(now.into_std());
        let result = match msg {
            // Boxed: the tick's future (sinks included) lives only while the tick runs,
            // instead of inside every idle actor's task.
            SensorMsg::Tick => Box::pin(state.tick(now)).await,
            SensorMsg::Panic(reason) => panic!("fault injected into sensor {}: {reason}", state.id()),
            SensorMsg::Fail(reason) => Err(format!("fault injected into sensor {}: {reason}", state.id()).into()),
            SensorMsg::Stall(d) => {
                Box::pin(tokio::time::sleep(d)).await;
                Ok(())
            }
            SensorMsg::Ping(reply) => {
                let _ = reply.send(());
                Ok(())
            }
        };
        // Done with this message: if the ticker parked this sensor meanwhile, re-arm it.
        Ticker::unpark(&state.district, state.index);
        result
    }
}

/// The timers of `config`'s sensors alone, as the runtime keeps them (for the density
/// benchmark's breakdown): one ticker per district, one slot and one due entry per sensor.
pub fn bench_timers(config: &crate::config::Config) -> Box<dyn std::any::Any + Send> {
    let mut by_district: std::collections::BTreeMap<&str, usize> = Default::default();
    for s in &config.sensors {
        *by_district.entry(s.district.as_str()).or_default() += 1;
    }
    let tickers: Vec<Ticker> = by_district.values().map(|n| Ticker::bench_filled(*n)).collect();
    Box::new(tickers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_stable_and_within_the_interval() {
        let i = Duration::from_secs(5);
        assert_eq!(phase_offset("aq-fdf-01", i), phase_offset("aq-fdf-01", i));
        assert!(phase_offset("aq-fdf-01", i) < i);
        assert_ne!(phase_offset("aq-fdf-01", i), phase_offset("aq-fdf-02", i));
    }
}
