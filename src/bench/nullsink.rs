//! A sink that delivers nowhere: it takes observations from its queue like any sink,
//! encodes each to its MQTT JSON (the work every real sink does), records the
//! emit-to-sink latency and counts them delivered. What it measures is the runtime.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::hist::Hist;
use crate::sinks::{SinkHandle, SinkMsg};

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
                h.woken();
                let mut handled = 0;
                loop {
                    let batch = h.take(BATCH);
                    let mut bytes = 0;
                    for env in &batch {
                        s.buf.clear();
                        env.obs.write_mqtt_json(&mut s.buf);
                        bytes += s.buf.len() as u64;
                        s.args.latency.record(env.emitted.elapsed());
                        h.stats.delivered(env);
                    }
                    s.args.bytes.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
                    handled += batch.len();
                    if batch.len() < BATCH {
                        break;
                    }
                    if handled >= PER_WAKE {
                        h.wake();
                        break;
                    }
                }
            }
            SinkMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            SinkMsg::Connection(_) => {}
            SinkMsg::Crash(reason) => panic!("fault injected into the null sink: {reason}"),
            SinkMsg::Fail(reason) => return Err(format!("fault injected into the null sink: {reason}").into()),
            SinkMsg::Stall(d) => tokio::time::sleep(d).await,
        }
        let _ = myself;
        Ok(())
    }

    async fn post_stop(&self, myself: ActorRef<SinkMsg>, s: &mut NullSinkState) -> Result<(), ActorProcessingErr> {
        s.args.handle.detach(myself.get_id());
        Ok(())
    }
}
