//! A sink that delivers nowhere: it takes observations from its queue like any sink,
//! encodes each to its MQTT JSON (the work every real sink does), records the
//! emit-to-sink latency and counts them delivered. What it measures is the runtime.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::hist::Hist;
use crate::runtime::Scheduler;
use crate::sinks::queue::DeliveryClock;
use crate::sinks::{SinkHandle, SinkMsg};

/// Deliveries per reading of the clocks.
const CLOCK_EVERY: usize = 16;
/// Observations taken from the queue at a time.
const BATCH: usize = 1024;
/// Observations handled per wake-up before the actor yields to its mailbox: the whole
/// queue, nearly (one actor draining what thousands of twins produce must not wait for
/// each of them to have had its turn between two batches).
const PER_WAKE: usize = 64 * BATCH;

pub struct NullSink;

pub struct NullSinkArgs {
    pub handle: Arc<SinkHandle>,
    pub latency: Arc<Hist>,
    /// Bytes encoded (so the encoding cannot be optimised away, and a figure).
    pub bytes: Arc<std::sync::atomic::AtomicU64>,
    /// Time spent handling its queue, in nanoseconds: busy time / elapsed time near 1 means
    /// the sink is the bottleneck.
    pub busy_ns: Arc<std::sync::atomic::AtomicU64>,
}

pub struct NullSinkState {
    args: NullSinkArgs,
    buf: Vec<u8>,
}

impl Actor for NullSink {
    type Msg = SinkMsg;
    type State = NullSinkState;
    type Arguments = NullSinkArgs;

    async fn pre_start(&self, _: ActorRef<SinkMsg>, args: NullSinkArgs) -> Result<NullSinkState, ActorProcessingErr> {
        Ok(NullSinkState { args, buf: Vec::with_capacity(512) })
    }

    async fn post_start(&self, myself: ActorRef<SinkMsg>, state: &mut NullSinkState) -> Result<(), ActorProcessingErr> {
        state.args.handle.attach(Some(myself));
        state.args.handle.stats.set_connected(true);
        state.args.handle.wake();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SinkMsg>,
        msg: SinkMsg,
        s: &mut NullSinkState,
    ) -> Result<(), ActorProcessingErr> {
        let h = &s.args.handle;
        h.mailbox.handled();
        match msg {
            SinkMsg::Pump => {
                let start = std::time::Instant::now();
                let mut handled = 0;
                loop {
                    let batch = h.take(BATCH);
                    let mut bytes = 0;
                    let mut clock = DeliveryClock::now();
                    for (i, env) in batch.iter().enumerate() {
                        s.buf.clear();
                        env.obs.write_mqtt_json(&mut s.buf);
                        bytes += s.buf.len() as u64;
                        // The clock, read every CLOCK_EVERY deliveries (a few microseconds).
                        if i % CLOCK_EVERY == CLOCK_EVERY - 1 {
                            clock = DeliveryClock::now();
                        }
                        s.args.latency.record(clock.at.saturating_duration_since(env.emitted));
                        h.stats.delivered_at(env, &clock);
                    }
                    s.args.bytes.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
                    let n = batch.len();
                    handled += n;
                    for env in batch {
                        crate::sinks::pool::recycle(env);
                    }
                    if n < BATCH {
                        break;
                    }
                    if handled >= PER_WAKE {
                        break;
                    }
                }
                h.pumped(&myself, handled, handled >= PER_WAKE);
                s.args.busy_ns.fetch_add(start.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            SinkMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            SinkMsg::Connection(_) => {}
            SinkMsg::Crash(reason) => panic!("fault injected into the null sink: {reason}"),
            SinkMsg::Fail(reason) => return Err(format!("fault injected into the null sink: {reason}").into()),
            SinkMsg::Stall(d) => tokio::time::sleep(d).await,
        }
        Ok(())
    }

    async fn post_stop(&self, myself: ActorRef<SinkMsg>, s: &mut NullSinkState) -> Result<(), ActorProcessingErr> {
        s.args.handle.detach(myself.get_id());
        Ok(())
    }
}

/// A null sink started where the runtime starts its sinks: on a sinks' [`Scheduler`] of
/// its own (see there why).
pub struct RunningNullSink {
    actor: ActorRef<SinkMsg>,
    done: ractor::concurrency::JoinHandle<()>,
    _scheduler: Scheduler,
}

impl RunningNullSink {
    pub async fn start(args: NullSinkArgs) -> Result<RunningNullSink, String> {
        let scheduler = Scheduler::sinks(1).map_err(|e| format!("null sink: its thread: {e}"))?;
        let rt = scheduler.handle().ok_or("null sink: no scheduler")?;
        let (actor, done) = rt
            .spawn(async move { Actor::spawn(None, NullSink, args).await })
            .await
            .map_err(|e| format!("null sink: {e}"))?
            .map_err(|e| format!("null sink: {e}"))?;
        Ok(RunningNullSink { actor, done, _scheduler: scheduler })
    }

    pub async fn stop(self) {
        self.actor.stop(None);
        let _ = self.done.await;
    }
}
