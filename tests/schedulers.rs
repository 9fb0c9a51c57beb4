//! Where the runtime runs its parts: with `runtime.sensor_nice` above 0, the twins' tree on
//! the sensors' scheduler (`twinrt-sensors` threads, `runtime.sensor_threads`, that many
//! steps of nice below the process), else on the caller's runtime; the sinks on theirs.

mod support;

use std::time::Duration;

use twin_runtime::config::Config;
use twin_runtime::Runtime;

/// (name, nice, CPU ticks) from a `/proc/.../stat` line.
fn stat_of(stat: &str) -> Option<(String, i64, u64)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    // Fields after the name: state is field 3; utime 14, stime 15, nice 19.
    let rest: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<i64>().ok());
    Some((stat[open + 1..close].to_string(), field(19)?, (field(14)? + field(15)?).max(0) as u64))
}

/// (name, nice, CPU ticks) of every thread of this process.
fn threads() -> Vec<(String, i64, u64)> {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task").flatten();
    tasks.filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok()).filter_map(|s| stat_of(&s)).collect()
}

/// The process's own nice (its main thread's).
fn own_nice() -> i64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    stat_of(&stat).expect("a stat line").1
}

/// A runtime of 2,000 twins every 10 ms, once they have emitted 100,000 observations.
async fn ticking(runtime: &str) -> Runtime {
    let text = format!(
        "[runtime]\ninterval = \"10ms\"\n{runtime}[http]\nlisten = \"127.0.0.1:0\"\n\
         [[fleets]]\ntype = \"light\"\ndistrict = \"Fort-de-France\"\ncount = 2000\n"
    );
    let config = Config::parse(&text, "test", &[]).unwrap_or_else(|e| panic!("{e}"));
    let rt = Runtime::start(config).await.unwrap_or_else(|e| panic!("{e}"));
    let registry = rt.registry().clone();
    support::wait_until("the twins to emit 100,000 observations", Duration::from_secs(30), || {
        registry.observations() >= 100_000
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {} observations", registry.observations()));
    rt
}

/// One test, so that no other runtime's threads are in this process meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensors_run_on_their_own_threads_only_at_a_higher_nice() {
    let own = own_nice();
    // By default (sensor_nice 0) the sensors share the caller's runtime.
    let rt = ticking("").await;
    let all = threads();
    assert!(all.iter().all(|t| t.0 != "twinrt-sensors"), "no sensors' scheduler at nice 0: {all:?}");
    assert!(rt.shutdown().await.flushed);

    let rt = ticking("sensor_threads = 2\nsensor_nice = 7\n").await;
    let all = threads();
    let sensors: Vec<_> = all.iter().filter(|t| t.0 == "twinrt-sensors").collect();
    assert!(sensors.len() >= 2, "two sensor workers, found {sensors:?} among {all:?}");
    let want = (own + 7).min(19);
    assert!(sensors.iter().all(|t| t.1 == want), "every sensors' thread at nice {want}: {sensors:?}");
    let ticks: u64 = sensors.iter().map(|t| t.2).sum();
    assert!(ticks > 0, "the sensors ran on the sensors' threads: {sensors:?}");
    // The rest keeps the process's priority: the sinks' threads and this test's runtime.
    let others: Vec<_> = all.iter().filter(|t| t.0 == "twinrt-sinks" || t.0.starts_with("tokio-r")).collect();
    assert!(!others.is_empty(), "{all:?}");
    assert!(others.iter().all(|t| t.1 == own), "only the sensors' threads are lowered: {others:?}");
    assert!(rt.shutdown().await.flushed);
}
