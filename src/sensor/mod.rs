//! The sensor actor: thin, it delegates the model to `twins` and keeps no state of its own
//! that matters. Its twin lives in the [`Registry`], so a restarted sensor resumes where
//! the failed one stopped.
//!
//! Timing: sensor `id` emits observation `n` (1-based) at real time
//! `start + offset + (n - 1) * interval`, where `offset` spreads sensors over their interval
//! (a stable hash of the id), and that observation is *observed at* the simulated time
//! `sim_start + speed * (offset + (n - 1) * interval)`. Observation times therefore depend
//! only on the seed, the start time and the configuration, never on scheduling jitter,
//! and a restarted sensor continues the same schedule.

pub mod tree;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use twins::SimClock;

use crate::actors::ActorEntry;
use crate::faults::{SensorFaults, TickFault};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::sinks::SinkSet;

/// What every sensor actor shares.
#[derive(Clone)]
pub struct SensorContext {
    pub registry: Arc<Registry>,
    pub sinks: SinkSet,
    pub clock: SimClock,
    /// Real time at which the schedule starts.
    pub real_start: Instant,
    pub metrics: Metrics,
    /// Injected faults of what sensors report (`out_of_range`, `silence`).
    pub faults: Arc<SensorFaults>,
}

#[derive(Debug)]
pub enum SensorMsg {
    /// Emit the next observation (sent by the actor's own timer).
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

pub struct SensorActor;

pub struct SensorArgs {
    pub id: String,
    pub interval: Duration,
    pub ctx: SensorContext,
    /// Its entry in the actor directory (mailbox counters, live cell).
    pub entry: Arc<ActorEntry>,
}

pub struct SensorState {
    id: String,
    interval: Duration,
    offset: Duration,
    ctx: SensorContext,
    entry: Arc<ActorEntry>,
    timer: Option<JoinHandle<()>>,
    running_gauge: prometheus::IntGauge,
    generated: prometheus::IntCounter,
}

impl Drop for SensorState {
    /// Runs however the actor ends (stop or panic).
    fn drop(&mut self) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
        self.running_gauge.dec();
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
    /// Real-time offset from the start of observation `n` (1-based).
    fn due_offset(&self, n: u64) -> Duration {
        self.offset + self.interval.saturating_mul(n.saturating_sub(1).min(u64::from(u32::MAX)) as u32)
    }

    /// Simulated time of observation `n`.
    fn observed_at(&self, n: u64) -> DateTime<Utc> {
        self.ctx.clock.sim_time(self.due_offset(n))
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
        if args.ctx.registry.seq(&args.id).is_none() {
            return Err(format!("sensor {}: no twin in the registry", args.id).into());
        }
        let running_gauge = args.ctx.metrics.twins_running.clone();
        running_gauge.inc();
        let kind = args.ctx.registry.view(&args.id).map(|v| v.spec.kind.as_str()).unwrap_or("unknown");
        let generated = args.ctx.metrics.observations_generated.with_label_values(&[kind]);
        Ok(SensorState {
            offset: phase_offset(&args.id, args.interval),
            id: args.id,
            interval: args.interval,
            ctx: args.ctx,
            entry: args.entry,
            timer: None,
            running_gauge,
            generated,
        })
    }

    async fn post_start(&self, myself: ActorRef<SensorMsg>, state: &mut SensorState) -> Result<(), ActorProcessingErr> {
        // Continue the schedule from the twin's sequence number (a restart resumes it),
        // slid by the intervals an injected `silence` skipped.
        let next = state.ctx.registry.seq(&state.id).unwrap_or(0) + 1 + state.ctx.faults.slot_shift(&state.id);
        let first_due = state.ctx.real_start + state.due_offset(next);
        let interval = state.interval;
        state.entry.attach(myself.get_cell());
        let mailbox = state.entry.mailbox.clone();
        state.timer = Some(tokio::spawn(async move {
            let mut due = first_due;
            loop {
                tokio::time::sleep_until(due).await;
                mailbox.enqueue();
                if myself.cast(SensorMsg::Tick).is_err() {
                    mailbox.unenqueue();
                    return; // the actor is gone
                }
                due += interval;
            }
        }));
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<SensorMsg>,
        msg: SensorMsg,
        state: &mut SensorState,
    ) -> Result<(), ActorProcessingErr> {
        state.entry.mailbox.handled();
        match msg {
            SensorMsg::Tick => {
                let fault = state.ctx.faults.on_tick(&state.id);
                if fault == TickFault::Silence {
                    // Not stepped: the sequence does not advance, the schedule slides.
                    state.ctx.faults.skipped(&state.id);
                    return Ok(());
                }
                let shift = state.ctx.faults.slot_shift(&state.id);
                let env = state.ctx.registry.step(&state.id, |n| state.observed_at(n + shift));
                match env {
                    Some(env) => {
                        state.generated.inc();
                        let env = if fault == TickFault::OutOfRange {
                            crate::faults::sensors::out_of_range(&env)
                        } else {
                            env
                        };
                        state.ctx.sinks.offer(env).await;
                    }
                    None => return Err(format!("sensor {}: twin vanished from the registry", state.id).into()),
                }
            }
            SensorMsg::Panic(reason) => panic!("fault injected into sensor {}: {reason}", state.id),
            SensorMsg::Fail(reason) => return Err(format!("fault injected into sensor {}: {reason}", state.id).into()),
            SensorMsg::Stall(d) => tokio::time::sleep(d).await,
            SensorMsg::Ping(reply) => {
                let _ = reply.send(());
            }
        }
        Ok(())
    }
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
