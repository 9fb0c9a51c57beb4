mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use supervision::ractor::{self, Actor, ActorCell, ActorRef, ActorStatus};
use supervision::{
    Backoff, ChildSpec, ChildStatus, Intensity, Restart, SpawnFuture, Strategy, Supervisor, SupervisorArgs,
    SupervisorMsg, SupervisorRefExt, SupervisorSnapshot, SupervisorStats,
};

async fn start(
    spec: supervision::SupervisorSpec,
    children: Vec<ChildSpec>,
) -> (ActorRef<SupervisorMsg>, ractor::concurrency::JoinHandle<()>, SupervisorStats) {
    let stats = SupervisorStats::default();
    let args = SupervisorArgs { spec, children, observer: None, stats: stats.clone() };
    let (sup, handle) = Actor::spawn(None, Supervisor, args).await.expect("supervisor starts");
    (sup, handle, stats)
}

fn ids(snap: &SupervisorSnapshot) -> Vec<Option<ractor::ActorId>> {
    snap.children.iter().map(|c| c.actor_id).collect()
}

async fn all_running(stats: &SupervisorStats) {
    wait_until("all children running", T, || stats.snapshot().children.iter().all(is_running)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_one_restarts_only_the_failed_child() {
    let p = "o4o";
    let probes: Vec<Probe> = (0..3).map(|_| Probe::default()).collect();
    let children = ["a", "b", "c"]
        .iter()
        .zip(&probes)
        .map(|(id, probe)| worker_spec(p, id, Restart::Permanent, probe.clone()))
        .collect();
    let (sup, handle, stats) = start(spec("o4o", Strategy::OneForOne, 5, fast()), children).await;
    all_running(&stats).await;
    let before = stats.snapshot();
    assert_eq!(before.children.iter().map(|c| &*c.id).collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(before.strategy, Strategy::OneForOne);
    assert_eq!(before.max_restarts, 5);
    assert_eq!(before.within_ms, 60_000);

    worker(p, "b").cast(WorkerMsg::Panic).unwrap();
    wait_until("b restarted", T, || stats.child("b").is_some_and(|c| c.restarts == 1 && is_running(&c))).await;

    let after = stats.snapshot();
    let (b0, b1) = (before.child("b").unwrap(), after.child("b").unwrap());
    assert_ne!(b0.actor_id, b1.actor_id, "b is a new actor");
    assert_eq!(before.child("a").unwrap().actor_id, after.child("a").unwrap().actor_id);
    assert_eq!(before.child("c").unwrap().actor_id, after.child("c").unwrap().actor_id);
    assert_eq!(after.child("a").unwrap().restarts, 0);
    assert_eq!(after.child("c").unwrap().restarts, 0);
    assert_eq!(after.total_restarts, 1);
    let failure = b1.last_failure.as_ref().expect("failure recorded");
    assert!(failure.reason.contains("boom: requested panic"), "{failure:?}");
    assert!(failure.at_unix_ms > 1_600_000_000_000);
    assert!(after.escalated.is_none());
    assert_eq!(probes[0].starts(), 1);
    assert_eq!(probes[1].starts(), 2);
    assert_eq!(probes[2].starts(), 1);

    // The Snapshot message reports the same data.
    let via_msg = ractor::call!(sup, SupervisorMsg::Snapshot).unwrap();
    assert_eq!(via_msg, stats.snapshot());

    // The new instance works.
    let b = worker(p, "b");
    b.cast(WorkerMsg::Inc).unwrap();
    assert_eq!(get(&b).await, 1);

    sup.stop_and_wait(None, Some(T)).await.unwrap();
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_error_is_a_failure_and_state_outside_the_actor_survives() {
    let p = "err";
    let probe = Probe::default();
    let (sup, _h, stats) = start(
        spec("err", Strategy::OneForOne, 5, fast()),
        vec![worker_spec(p, "w", Restart::Permanent, probe.clone())],
    )
    .await;
    all_running(&stats).await;
    let w = worker(p, "w");
    for _ in 0..3 {
        w.cast(WorkerMsg::Inc).unwrap();
    }
    assert_eq!(get(&w).await, 3);
    w.cast(WorkerMsg::Fail).unwrap();
    wait_until("w restarted", T, || stats.child("w").is_some_and(|c| c.restarts == 1 && is_running(&c))).await;
    let c = stats.child("w").unwrap();
    assert!(c.last_failure.unwrap().reason.contains("requested failure"));

    let w2 = worker(p, "w");
    assert_ne!(w.get_id(), w2.get_id());
    assert_eq!(w.get_status(), ActorStatus::Stopped);
    w2.cast(WorkerMsg::Inc).unwrap();
    assert_eq!(get(&w2).await, 4, "counter kept outside the actor survives the restart");
    assert_eq!(probe.starts(), 2);
    sup.stop_and_wait(None, Some(T)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_restarts_all_children_without_counting_their_stops() {
    let p = "o4a";
    let probes: Vec<Probe> = (0..3).map(|_| Probe::default()).collect();
    let children = ["a", "b", "c"]
        .iter()
        .zip(&probes)
        .map(|(id, probe)| worker_spec(p, id, Restart::Permanent, probe.clone()))
        .collect();
    let recorder = Arc::new(Recorder::default());
    let stats = SupervisorStats::default();
    let args = SupervisorArgs {
        spec: spec("o4a", Strategy::OneForAll, 5, fast()),
        children,
        observer: Some(recorder.clone()),
        stats: stats.clone(),
    };
    let (sup, _h) = Actor::spawn(None, Supervisor, args).await.unwrap();
    all_running(&stats).await;
    let before = stats.snapshot();

    worker(p, "b").cast(WorkerMsg::Panic).unwrap();
    wait_until("all restarted", T, || {
        let s = stats.snapshot();
        s.children.iter().all(|c| c.restarts == 1 && is_running(c))
    })
    .await;
    let after = stats.snapshot();
    for (old, new) in ids(&before).iter().zip(ids(&after).iter()) {
        assert_ne!(old, new, "every child is a new actor");
    }
    assert_eq!(after.total_restarts, 3);
    // Only the child that failed has a failure; the others were stopped by us.
    assert!(after.child("b").unwrap().last_failure.is_some());
    assert!(after.child("a").unwrap().last_failure.is_none());
    assert!(after.child("c").unwrap().last_failure.is_none());
    // Old instances stopped gracefully (post_stop ran for a and c).
    for probe in &probes {
        assert_eq!(probe.starts(), 2);
    }
    assert_eq!(probes[0].stops(), 1);
    assert_eq!(probes[2].stops(), 1);

    let events = recorder.events();
    assert_eq!(events.iter().filter(|e| e.starts_with("failed")).count(), 1, "{events:?}");
    assert!(events.iter().any(|e| e.starts_with("failed o4a b worker") && e.contains("boom")), "{events:?}");
    let restarted: Vec<_> = events.iter().filter(|e| e.starts_with("restarted")).cloned().collect();
    assert_eq!(restarted, ["restarted o4a a #1", "restarted o4a b #1", "restarted o4a c #1"], "spec order");

    // No further restarts happen (the stale terminations were ignored).
    let w = worker(p, "a");
    w.cast(WorkerMsg::Inc).unwrap();
    assert_eq!(get(&w).await, 1);
    assert_eq!(stats.total_restarts(), 3);
    sup.stop_and_wait(None, Some(T)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_and_temporary_semantics() {
    let p = "restart-types";
    let children = vec![
        worker_spec(p, "perm", Restart::Permanent, Probe::default()),
        worker_spec(p, "trans-ok", Restart::Transient, Probe::default()),
        worker_spec(p, "trans-bad", Restart::Transient, Probe::default()),
        worker_spec(p, "temp", Restart::Temporary, Probe::default()),
    ];
    let (sup, _h, stats) = start(spec("types", Strategy::OneForOne, 10, fast()), children).await;
    all_running(&stats).await;

    // Permanent: restarted even after a normal stop.
    worker(p, "perm").cast(WorkerMsg::Stop).unwrap();
    // Transient: normal stop is final, failure is restarted.
    worker(p, "trans-ok").cast(WorkerMsg::Stop).unwrap();
    worker(p, "trans-bad").cast(WorkerMsg::Panic).unwrap();
    // Temporary: never restarted, forgotten.
    worker(p, "temp").cast(WorkerMsg::Panic).unwrap();

    wait_until("settled", T, || {
        let s = stats.snapshot();
        s.child("perm").is_some_and(|c| c.restarts == 1 && is_running(c))
            && s.child("trans-ok").is_some_and(|c| c.status == ChildStatus::Stopped)
            && s.child("trans-bad").is_some_and(|c| c.restarts == 1 && is_running(c))
            && s.child("temp").is_none()
    })
    .await;
    let s = stats.snapshot();
    let perm = s.child("perm").unwrap();
    assert!(perm.last_failure.as_ref().unwrap().reason.contains("exited normally"), "{perm:?}");
    let ok = s.child("trans-ok").unwrap();
    assert_eq!((ok.restarts, ok.actor_id.as_ref(), ok.last_failure.as_ref()), (0, None, None));
    assert_eq!(s.total_restarts, 2);
    assert!(ActorRef::<WorkerMsg>::where_is(wname(p, "trans-ok")).is_none());
    assert!(ActorRef::<WorkerMsg>::where_is(wname(p, "temp")).is_none());

    // A forgotten temporary id can be reused; an existing id cannot.
    let r = sup.start_child(worker_spec(p, "temp", Restart::Temporary, Probe::default())).await;
    assert_eq!(r, Ok(()));
    let dup = sup.start_child(worker_spec(p, "trans-ok", Restart::Transient, Probe::default())).await;
    assert!(dup.unwrap_err().contains("already exists"));
    sup.stop_and_wait(None, Some(T)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_terminate_children_at_run_time() {
    let p = "dyn";
    let (sup, _h, stats) = start(spec("dyn", Strategy::OneForOne, 10, fast()), vec![]).await;
    let probe = Probe::default();
    let r = sup.start_child(worker_spec(p, "x", Restart::Permanent, probe.clone())).await;
    assert_eq!(r, Ok(()));
    wait_until("x running", T, || stats.child("x").is_some_and(|c| is_running(&c))).await;
    let x = worker(p, "x");

    assert_eq!(sup.terminate_child("x").await, Ok(true));
    assert_eq!(x.get_status(), ActorStatus::Stopped, "terminated and waited for");
    assert_eq!(probe.stops(), 1);
    assert!(stats.child("x").is_none());
    assert_eq!(sup.terminate_child("x").await, Ok(false));

    // A failing factory is reported and the child is not added.
    let bad = ChildSpec {
        id: "bad".into(),
        kind: "worker",
        restart: Restart::Permanent,
        start: Arc::new(|_sup: ActorCell| -> SpawnFuture {
            Box::pin(async { Err(ractor::SpawnErr::StartupFailed("no sensor config".into())) })
        }),
    };
    let r = sup.start_child(bad).await;
    assert!(r.unwrap_err().contains("no sensor config"));
    // So is a panicking factory; the supervisor survives it.
    let panicky = ChildSpec::new("panicky", "worker", Restart::Permanent, |_sup: ActorCell| async move {
        panic!("factory exploded");
    });
    let r = sup.start_child(panicky).await;
    assert!(r.unwrap_err().contains("factory exploded"));
    let snap = sup.snapshot().await.unwrap();
    assert!(snap.children.is_empty());
    assert_eq!(stats.total_restarts(), 0, "nothing was restarted");
    assert_eq!(probe.starts(), 1);
    sup.stop_and_wait(None, Some(T)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_start_of_a_child_fails_the_supervisor_start() {
    let p = "prestart";
    let good = Probe::default();
    let bad = ChildSpec::new("broken-sensor", "sensor", Restart::Permanent, |_sup: ActorCell| async {
        Err(ractor::SpawnErr::StartupFailed("port unavailable".into()))
    });
    let args = SupervisorArgs::new(
        spec("prestart", Strategy::OneForOne, 3, fast()),
        vec![worker_spec(p, "ok", Restart::Permanent, good.clone()), bad],
    );
    let err = Actor::spawn(None, Supervisor, args).await.expect_err("start must fail").to_string();
    assert!(err.contains("broken-sensor") && err.contains("port unavailable"), "{err}");
    // The child started before the failure was stopped again.
    wait_until("ok stopped", T, || good.stops() == 1).await;
    assert!(ActorRef::<WorkerMsg>::where_is(wname(p, "ok")).is_none());

    // Duplicate ids are rejected.
    let args = SupervisorArgs::new(
        spec("dups", Strategy::OneForOne, 3, fast()),
        vec![
            worker_spec(p, "same", Restart::Permanent, Probe::default()),
            worker_spec(p, "same", Restart::Permanent, Probe::default()),
        ],
    );
    let err = Actor::spawn(None, Supervisor, args).await.expect_err("duplicate ids").to_string();
    assert!(err.contains("duplicate child id 'same'"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_supervisor_stops_children_and_restarts_none() {
    let p = "stop";
    let probes: Vec<Probe> = (0..4).map(|_| Probe::default()).collect();
    let children = probes
        .iter()
        .enumerate()
        .map(|(i, probe)| worker_spec(p, &format!("w{i}"), Restart::Permanent, probe.clone()))
        .collect();
    let (sup, handle, stats) = start(spec("stop", Strategy::OneForOne, 10, fast()), children).await;
    all_running(&stats).await;
    let cells: Vec<_> = (0..4).map(|i| worker(p, &format!("w{i}"))).collect();

    sup.stop_and_wait(None, Some(T)).await.unwrap();
    handle.await.unwrap();
    for (cell, probe) in cells.iter().zip(&probes) {
        assert_eq!(cell.get_status(), ActorStatus::Stopped);
        assert_eq!(probe.stops(), 1, "child stopped gracefully (post_stop ran)");
        assert_eq!(probe.starts(), 1, "never restarted");
    }
    let s = stats.snapshot();
    assert_eq!(s.total_restarts, 0);
    assert!(s.children.iter().all(|c| c.status == ChildStatus::Stopped && c.actor_id.is_none()));
    assert!(s.escalated.is_none());
}

#[tokio::test(start_paused = true)]
async fn backoff_delays_restarts_and_grows_with_consecutive_failures() {
    let p = "backoff";
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(3), 2.0, 0.0).unwrap();
    let probe = Probe::default();
    let (sup, _h, stats) = start(
        spec("backoff", Strategy::OneForOne, 10, backoff),
        vec![worker_spec(p, "w", Restart::Permanent, probe.clone())],
    )
    .await;
    all_running(&stats).await;

    let mut expected_delays = vec![];
    for (n, expect) in [1000u64, 2000, 3000, 3000].into_iter().enumerate() {
        let t0 = tokio::time::Instant::now();
        worker(p, "w").cast(WorkerMsg::Panic).unwrap();
        wait_until("restarting", T, || {
            stats.child("w").is_some_and(|c| matches!(c.status, ChildStatus::Restarting { .. }))
        })
        .await;
        let ChildStatus::Restarting { in_ms } = stats.child("w").unwrap().status else { unreachable!() };
        expected_delays.push(in_ms);
        assert_eq!(in_ms, expect);
        wait_until("restarted", T, || stats.child("w").is_some_and(|c| c.restarts == n as u32 + 1 && is_running(&c)))
            .await;
        assert!(t0.elapsed() >= Duration::from_millis(expect), "restart must wait for the backoff");
        assert_eq!(probe.starts(), n as u64 + 2);
    }
    assert_eq!(expected_delays, [1000, 2000, 3000, 3000]);

    // After running longer than the intensity window, the backoff resets.
    tokio::time::sleep(Duration::from_secs(61)).await;
    worker(p, "w").cast(WorkerMsg::Panic).unwrap();
    wait_until("restarting again", T, || {
        stats.child("w").is_some_and(|c| matches!(c.status, ChildStatus::Restarting { .. }))
    })
    .await;
    assert_eq!(stats.child("w").unwrap().status, ChildStatus::Restarting { in_ms: 1000 });

    // Stopping while a restart is pending: the timer does nothing.
    sup.stop_and_wait(None, Some(T)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(probe.starts(), 5);
    assert_eq!(stats.child("w").unwrap().status, ChildStatus::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intensity_exceeded_escalates_and_fails_the_supervisor() {
    let p = "intensity";
    let probes: Vec<Probe> = (0..2).map(|_| Probe::default()).collect();
    let recorder = Arc::new(Recorder::default());
    let stats = SupervisorStats::default();
    let args = SupervisorArgs {
        spec: spec("intense", Strategy::OneForOne, 2, fast()),
        children: vec![
            worker_spec(p, "flaky", Restart::Permanent, probes[0].clone()),
            worker_spec(p, "calm", Restart::Permanent, probes[1].clone()),
        ],
        observer: Some(recorder.clone()),
        stats: stats.clone(),
    };
    let (sup, handle) = Actor::spawn(None, Supervisor, args).await.unwrap();
    all_running(&stats).await;
    for n in 1..=2u32 {
        worker(p, "flaky").cast(WorkerMsg::Panic).unwrap();
        wait_until("flaky restarted", T, || stats.child("flaky").is_some_and(|c| c.restarts == n && is_running(&c)))
            .await;
    }
    assert!(stats.escalated().is_none());
    worker(p, "flaky").cast(WorkerMsg::Panic).unwrap();
    tokio::time::timeout(T, handle).await.expect("supervisor exits").unwrap();
    assert_eq!(sup.get_status(), ActorStatus::Stopped);

    let s = stats.snapshot();
    let esc = s.escalated.clone().expect("escalation recorded");
    assert!(esc.reason.contains("intensity") && esc.reason.contains("flaky") && esc.reason.contains("boom"), "{esc:?}");
    assert_eq!(s.total_restarts, 2);
    assert_eq!(s.child("flaky").unwrap().status, ChildStatus::Failed);
    assert_eq!(s.child("calm").unwrap().status, ChildStatus::Stopped);
    assert_eq!(probes[1].stops(), 1, "siblings are stopped gracefully on escalation");
    assert!(ActorRef::<WorkerMsg>::where_is(wname(p, "calm")).is_none());
    let events = recorder.events();
    assert_eq!(events.iter().filter(|e| e.starts_with("escalated intense")).count(), 1, "{events:?}");
    assert_eq!(events.iter().filter(|e| e.starts_with("failed intense flaky")).count(), 3, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_is_handled_by_a_parent_supervisor_restarting_the_subtree() {
    let p = "nested";
    let district_stats = SupervisorStats::default();
    let sensor_probe = Probe::default();
    let other_probe = Probe::default();
    let district = {
        let district_stats = district_stats.clone();
        let sensor_probe = sensor_probe.clone();
        let other_probe = other_probe.clone();
        Supervisor::child_spec("district-fdf", "district", Restart::Permanent, move || SupervisorArgs {
            spec: supervision::SupervisorSpec {
                name: "district-fdf".into(),
                strategy: Strategy::OneForOne,
                intensity: Intensity { max_restarts: 1, within: Duration::from_secs(60) },
                backoff: fast(),
                start_concurrency: 1,
            },
            children: vec![
                worker_spec(p, "aq-01", Restart::Permanent, sensor_probe.clone()),
                worker_spec(p, "aq-02", Restart::Permanent, other_probe.clone()),
            ],
            observer: None,
            stats: district_stats.clone(),
        })
    };
    let sibling_probe = Probe::default();
    let twins_stats = SupervisorStats::default();
    let recorder = Arc::new(Recorder::default());
    let args = SupervisorArgs {
        spec: spec("twins", Strategy::OneForOne, 5, fast()),
        children: vec![district, worker_spec(p, "sink", Restart::Permanent, sibling_probe.clone())],
        observer: Some(recorder.clone()),
        stats: twins_stats.clone(),
    };
    let (root, _h) = Actor::spawn(None, Supervisor, args).await.unwrap();
    all_running(&twins_stats).await;
    all_running(&district_stats).await;
    let root_before = twins_stats.snapshot();
    let district_before = district_stats.snapshot();

    // First failure: handled inside the district.
    worker(p, "aq-01").cast(WorkerMsg::Panic).unwrap();
    wait_until("aq-01 restarted", T, || {
        district_stats.child("aq-01").is_some_and(|c| c.restarts == 1 && is_running(&c))
    })
    .await;
    // Second failure: beyond the district's intensity, escalates to twins.
    worker(p, "aq-01").cast(WorkerMsg::Panic).unwrap();
    wait_until("district restarted by twins", T, || {
        twins_stats.child("district-fdf").is_some_and(|c| c.restarts == 1 && is_running(&c))
    })
    .await;
    all_running(&district_stats).await;

    let root_after = twins_stats.snapshot();
    let d = root_after.child("district-fdf").unwrap();
    assert_ne!(d.actor_id, root_before.child("district-fdf").unwrap().actor_id);
    assert!(d.last_failure.as_ref().unwrap().reason.contains("exceeded its restart intensity"), "{d:?}");
    assert_eq!(d.kind, "district");
    // The sibling of the district was not touched.
    assert_eq!(root_after.child("sink").unwrap().actor_id, root_before.child("sink").unwrap().actor_id);
    assert_eq!(sibling_probe.starts(), 1);

    // The district's stats were reused by the new incarnation.
    let district_after = district_stats.snapshot();
    assert!(district_after.escalated.is_some());
    assert_eq!(district_after.total_restarts, 1);
    assert!(district_after.children.iter().all(|c| c.restarts == 0 && is_running(c)));
    assert_ne!(ids(&district_before), ids(&district_after));
    // aq-01: initial + 1 restart + new subtree; aq-02 stopped with the old district.
    assert_eq!(sensor_probe.starts(), 3);
    assert_eq!(other_probe.starts(), 2);
    assert_eq!(other_probe.stops(), 1);
    assert!(recorder.events().iter().any(|e| e == "restarted twins district-fdf #1"));

    // Stopping the root stops the whole tree.
    let leaf = worker(p, "aq-02");
    root.stop_and_wait(None, Some(T)).await.unwrap();
    assert_eq!(leaf.get_status(), ActorStatus::Stopped);
    assert_eq!(other_probe.stops(), 2);
    assert!(district_stats.snapshot().children.iter().all(|c| c.status == ChildStatus::Stopped));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_children_start_restart_and_stop() {
    const N: usize = 5_000;
    let probe = Probe::default();
    let children = (0..N)
        .map(|i| {
            let probe = probe.clone();
            ChildSpec::new(format!("s{i}"), "sensor", Restart::Permanent, move |sup: ActorCell| {
                let probe = probe.clone();
                async move { Ok(Actor::spawn_linked(None, Worker, probe, sup).await?.0.get_cell()) }
            })
        })
        .collect();
    let (sup, _h, stats) = start(spec("big", Strategy::OneForOne, 10, fast()), children).await;
    all_running(&stats).await;
    assert_eq!(stats.child_count(), N);
    let victim = stats.child("s4321").unwrap();
    let cell = sup
        .get_children()
        .into_iter()
        .find(|c| Some(c.get_id()) == victim.actor_id)
        .expect("child linked to the supervisor");
    ActorRef::<WorkerMsg>::from(cell).cast(WorkerMsg::Panic).unwrap();
    wait_until("victim restarted", T, || stats.child("s4321").is_some_and(|c| c.restarts == 1 && is_running(&c))).await;
    assert_eq!(stats.total_restarts(), 1);
    sup.stop_and_wait(None, Some(T)).await.unwrap();
    assert_eq!(probe.stops(), N as u64);
    assert_eq!(probe.starts(), N as u64 + 1);
}

#[tokio::test(start_paused = true)]
async fn failing_restarts_back_off_and_finally_escalate() {
    let p = "restart-fails";
    let probe = Probe::default();
    let broken = Arc::new(AtomicBool::new(false));
    let name = wname(p, "w");
    let spec_w = {
        let (probe, broken) = (probe.clone(), broken.clone());
        ChildSpec::new("w", "sensor", Restart::Permanent, move |sup: ActorCell| {
            let (probe, broken, name) = (probe.clone(), broken.clone(), name.clone());
            async move {
                if broken.load(Ordering::SeqCst) {
                    return Err(ractor::SpawnErr::StartupFailed("device offline".into()));
                }
                Ok(Actor::spawn_linked(Some(name), Worker, probe, sup).await?.0.get_cell())
            }
        })
    };
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(100), 2.0, 0.0).unwrap();
    let (sup, handle, stats) = start(spec("fails", Strategy::OneForOne, 3, backoff), vec![spec_w]).await;
    all_running(&stats).await;

    // Run longer than the intensity window first: the first restart uses
    // attempt 0, but failed restarts must not reset the backoff again.
    tokio::time::sleep(Duration::from_secs(61)).await;
    broken.store(true, Ordering::SeqCst);
    worker(p, "w").cast(WorkerMsg::Panic).unwrap();
    let mut delays = Vec::new();
    wait_until("escalated", Duration::from_secs(60), || {
        if let Some(ChildStatus::Restarting { in_ms }) = stats.child("w").map(|c| c.status) {
            if delays.last() != Some(&in_ms) {
                delays.push(in_ms);
            }
        }
        stats.escalated().is_some()
    })
    .await;
    tokio::time::timeout(T, handle).await.expect("supervisor exits").unwrap();
    assert_eq!(delays, [1000, 2000, 4000], "backoff keeps growing while restarts fail");
    let s = stats.snapshot();
    let w = s.child("w").unwrap();
    assert_eq!(w.restarts, 0, "no restart succeeded");
    assert_eq!(w.status, ChildStatus::Failed);
    assert!(w.last_failure.as_ref().unwrap().reason.contains("restart failed"), "{w:?}");
    assert!(s.escalated.unwrap().reason.contains("device offline"));
    assert_eq!(probe.starts(), 1);
    assert_eq!(sup.get_status(), ActorStatus::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_drops_temporary_children_and_keeps_finished_transients() {
    let p = "o4a-types";
    let finished = Probe::default();
    let children = vec![
        worker_spec(p, "perm", Restart::Permanent, Probe::default()),
        worker_spec(p, "done", Restart::Transient, finished.clone()),
        worker_spec(p, "temp", Restart::Temporary, Probe::default()),
        worker_spec(p, "trans", Restart::Transient, Probe::default()),
    ];
    let (sup, _h, stats) = start(spec("o4a-types", Strategy::OneForAll, 5, fast()), children).await;
    all_running(&stats).await;
    worker(p, "done").cast(WorkerMsg::Stop).unwrap();
    wait_until("done stopped", T, || stats.child("done").is_some_and(|c| c.status == ChildStatus::Stopped)).await;

    worker(p, "perm").cast(WorkerMsg::Panic).unwrap();
    wait_until("restarted", T, || {
        let s = stats.snapshot();
        s.child("perm").is_some_and(|c| c.restarts == 1 && is_running(c))
            && s.child("trans").is_some_and(|c| c.restarts == 1 && is_running(c))
    })
    .await;
    let s = stats.snapshot();
    assert_eq!(s.children.iter().map(|c| &*c.id).collect::<Vec<_>>(), ["perm", "done", "trans"]);
    assert_eq!(s.child("done").unwrap().status, ChildStatus::Stopped);
    assert_eq!(finished.starts(), 1);
    assert!(ActorRef::<WorkerMsg>::where_is(wname(p, "temp")).is_none());
    assert_eq!(s.total_restarts, 2);
    sup.stop_and_wait(None, Some(T)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_start_runs_every_child_keeps_spec_order_and_still_fails_on_one() {
    let p = "concurrent";
    let probes: Vec<Probe> = (0..40).map(|_| Probe::default()).collect();
    let children: Vec<ChildSpec> = probes
        .iter()
        .enumerate()
        .map(|(i, probe)| worker_spec(p, &format!("c{i:02}"), Restart::Permanent, probe.clone()))
        .collect();
    let sup_spec = supervision::SupervisorSpec { start_concurrency: 8, ..spec(p, Strategy::OneForOne, 3, fast()) };
    let (sup, handle, stats) = start(sup_spec, children).await;
    // Started means every child spawned and was registered.
    let snap = stats.snapshot();
    let names: Vec<&str> = snap.children.iter().map(|c| &*c.id).collect();
    let expected: Vec<String> = (0..40).map(|i| format!("c{i:02}")).collect();
    assert_eq!(names, expected.iter().map(String::as_str).collect::<Vec<_>>(), "spec order kept");
    assert!(snap.children.iter().all(|c| c.actor_id.is_some()), "{snap:?}");
    assert!(probes.iter().all(|p| p.starts() == 1));
    // Supervision works as with a sequential start: a failed child is restarted.
    worker(p, "c17").cast(WorkerMsg::Fail).unwrap();
    wait_until("c17 restarted", T, || stats.child("c17").is_some_and(|c| c.restarts == 1 && is_running(&c))).await;
    sup.stop(None);
    let _ = handle.await;
    wait_until("all stopped", T, || probes.iter().all(|p| p.stops() >= 1)).await;

    // One child that cannot start fails the start; those already started are stopped.
    let q = "concurrent-fail";
    let good: Vec<Probe> = (0..10).map(|_| Probe::default()).collect();
    let mut children: Vec<ChildSpec> = good
        .iter()
        .enumerate()
        .map(|(i, pr)| worker_spec(q, &format!("g{i}"), Restart::Permanent, pr.clone()))
        .collect();
    children.insert(
        5,
        ChildSpec::new("broken", "sensor", Restart::Permanent, |_sup: ActorCell| async {
            Err(ractor::SpawnErr::StartupFailed("no twin".into()))
        }),
    );
    let sup_spec = supervision::SupervisorSpec { start_concurrency: 4, ..spec(q, Strategy::OneForOne, 3, fast()) };
    let err = Actor::spawn(None, Supervisor, SupervisorArgs::new(sup_spec, children)).await.expect_err("must fail");
    assert!(err.to_string().contains("broken") && err.to_string().contains("no twin"), "{err}");
    wait_until("started ones stopped", T, || good.iter().all(|g| g.starts() == g.stops())).await;
}

/// Records the name of the thread each of its instances starts on.
struct ThreadProbe;

impl Actor for ThreadProbe {
    type Msg = ();
    type State = ();
    type Arguments = Arc<std::sync::Mutex<Vec<String>>>;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        threads: Self::Arguments,
    ) -> Result<(), ractor::ActorProcessingErr> {
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        threads.lock().unwrap_or_else(|p| p.into_inner()).push(name);
        Ok(())
    }

    async fn handle(&self, _myself: ActorRef<()>, _msg: (), _state: &mut ()) -> Result<(), ractor::ActorProcessingErr> {
        panic!("requested panic");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_started_on_another_runtime_runs_and_restarts_there() {
    let other = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("other-rt")
        .enable_all()
        .build()
        .expect("second runtime");
    let threads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let t = threads.clone();
    let child = ChildSpec::new("elsewhere", "worker", Restart::Permanent, move |sup: ActorCell| {
        let t = t.clone();
        async move {
            let (r, _) = Actor::spawn_linked(None, ThreadProbe, t, sup).await?;
            Ok(r.get_cell())
        }
    })
    .on(other.handle().clone());
    let (sup, handle, stats) = start(spec("other-rt", Strategy::OneForOne, 5, fast()), vec![child]).await;
    all_running(&stats).await;
    let first = stats.child("elsewhere").and_then(|c| c.actor_id).expect("started");
    let cell = sup.get_children().into_iter().next().expect("one child");
    let r: ActorRef<()> = cell.into();
    r.cast(()).expect("cast");
    wait_until("restarted", T, || stats.child("elsewhere").is_some_and(|c| c.restarts == 1 && is_running(&c))).await;
    assert_ne!(stats.child("elsewhere").and_then(|c| c.actor_id), Some(first));
    let seen = threads.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(seen, ["other-rt", "other-rt"], "both instances started on the other runtime");
    sup.stop(None);
    let _ = handle.await;
    other.shutdown_background();
}
