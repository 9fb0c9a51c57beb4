//! Small test actors and helpers shared by the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use supervision::ractor::{self, Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use supervision::{
    Backoff, ChildSnapshot, ChildSpec, ChildStatus, Intensity, Restart, Strategy, SupervisionObserver, SupervisorSpec,
};

/// Counters that live outside the actor and survive its restarts.
#[derive(Clone, Default)]
pub struct Probe {
    /// Application state kept across restarts.
    pub counter: Arc<AtomicU64>,
    /// Number of `pre_start` runs (instances created).
    pub starts: Arc<AtomicU64>,
    /// Number of `post_stop` runs (orderly stops).
    pub stops: Arc<AtomicU64>,
}

impl Probe {
    pub fn starts(&self) -> u64 {
        self.starts.load(Ordering::SeqCst)
    }
    pub fn stops(&self) -> u64 {
        self.stops.load(Ordering::SeqCst)
    }
}

/// A counter actor that can be told to panic, to fail or to stop.
pub struct Worker;

pub enum WorkerMsg {
    Inc,
    Get(RpcReplyPort<u64>),
    Panic,
    Fail,
    Stop,
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = Probe;
    type Arguments = Probe;

    async fn pre_start(&self, _myself: ActorRef<WorkerMsg>, probe: Probe) -> Result<Probe, ActorProcessingErr> {
        probe.starts.fetch_add(1, Ordering::SeqCst);
        Ok(probe)
    }

    async fn post_stop(&self, _myself: ActorRef<WorkerMsg>, probe: &mut Probe) -> Result<(), ActorProcessingErr> {
        probe.stops.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        probe: &mut Probe,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Inc => {
                probe.counter.fetch_add(1, Ordering::SeqCst);
            }
            WorkerMsg::Get(reply) => {
                let _ = reply.send(probe.counter.load(Ordering::SeqCst));
            }
            WorkerMsg::Panic => panic!("boom: requested panic"),
            WorkerMsg::Fail => return Err("requested failure".into()),
            WorkerMsg::Stop => myself.stop(Some("done".into())),
        }
        Ok(())
    }
}

/// Registry name of a worker (names are global to the test binary).
pub fn wname(prefix: &str, id: &str) -> String {
    format!("{prefix}/{id}")
}

/// A child spec spawning a named [`Worker`] linked to the supervisor.
pub fn worker_spec(prefix: &str, id: &str, restart: Restart, probe: Probe) -> ChildSpec {
    let name = wname(prefix, id);
    ChildSpec::new(id, "worker", restart, move |sup: ActorCell| {
        let name = name.clone();
        let probe = probe.clone();
        async move {
            let (r, _) = Actor::spawn_linked(Some(name), Worker, probe, sup).await?;
            Ok(r.get_cell())
        }
    })
}

/// The current instance of a named worker.
pub fn worker(prefix: &str, id: &str) -> ActorRef<WorkerMsg> {
    ActorRef::<WorkerMsg>::where_is(wname(prefix, id)).unwrap_or_else(|| panic!("worker {id} not registered"))
}

pub fn spec(name: &str, strategy: Strategy, max_restarts: u32, backoff: Backoff) -> SupervisorSpec {
    SupervisorSpec {
        name: name.to_string(),
        strategy,
        intensity: Intensity { max_restarts, within: Duration::from_secs(60) },
        backoff,
        start_concurrency: 1,
    }
}

pub fn fast() -> Backoff {
    Backoff::new(Duration::from_millis(1), Duration::from_millis(5), 2.0, 0.5).unwrap()
}

/// Wait until `cond` holds, polling, failing the test after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Like [`wait_until`] for an async condition.
pub async fn wait_until_async<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub const T: Duration = Duration::from_secs(10);

pub fn is_running(c: &ChildSnapshot) -> bool {
    c.status == ChildStatus::Running && c.actor_id.is_some()
}

/// Records observer calls.
#[derive(Default)]
pub struct Recorder {
    pub events: Mutex<Vec<String>>,
}

impl Recorder {
    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

impl SupervisionObserver for Recorder {
    fn child_restarted(&self, supervisor: &str, child: &ChildSnapshot) {
        self.events.lock().unwrap().push(format!("restarted {supervisor} {} #{}", child.id, child.restarts));
    }
    fn child_failed(&self, supervisor: &str, child_id: &str, kind: &str, reason: &str) {
        self.events.lock().unwrap().push(format!("failed {supervisor} {child_id} {kind} {reason}"));
    }
    fn escalated(&self, supervisor: &str, reason: &str) {
        self.events.lock().unwrap().push(format!("escalated {supervisor} {reason}"));
    }
}

/// Call a worker's counter.
pub async fn get(w: &ActorRef<WorkerMsg>) -> u64 {
    ractor::call!(w, WorkerMsg::Get).expect("worker reply")
}
