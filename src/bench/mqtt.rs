//! `mqtt`: twins publishing through the runtime's MQTT sink to a local Mosquitto, against
//! the best bare client on the same broker in the same run, with the same number of
//! messages of the same size: Mosquitto's own `mosquitto_pub -l` and a bare rumqttc loop
//! (no actors, no queue). Delivery is counted by a subscriber, never assumed.
//!
//! Each contender's rate is the time the subscriber takes to receive `messages` of them,
//! after a warm-up of a tenth as many. The twins are offered 1.2 times the best bare rate
//! (their interval is set from it), so they can match it only if the runtime keeps up;
//! what their sink's queue cannot hold is dropped and counted, as in production.
//!
//! The QoS 0 twins run as a deployment publishing at QoS 0 on a machine shared with its
//! broker is advised to (README: `runtime.sensor_nice = 10`, delivery before generation),
//! and once more with the configuration's default, reported beside it; QoS 1 runs with
//! the default. `--sensor-nice` sets one value for both.
//!
//! At QoS 0 a second, smaller fleet (`--small-fleet`, 400 twins) is offered the same rate:
//! with fewer twins each one's memory stays in cache between its ticks, and the gap
//! between the two fleets is what that costs (reported, not checked).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::json;

use super::counter::Counter;
use super::{free_port, parse_kinds, round3, Check, Report};
use crate::config::Config;
use crate::Runtime;

#[derive(Debug, Args, Default)]
pub struct MqttArgs {
    /// Messages per contender and QoS, after the warm-up (default 1,000,000, several seconds
    /// per contender at ~300k msg/s; --quick 2,000).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Twins publishing (default 10,000; --quick 200).
    #[arg(long)]
    pub twins: Option<u64>,
    /// Sensor type of the twins; the bare clients send messages of its size (default light).
    #[arg(long)]
    pub kind: Option<String>,
    /// In-flight window at QoS 1, the same for the sink and rumqttc (default 100).
    #[arg(long)]
    pub inflight: Option<u16>,
    /// The runtime's `runtime.sink_threads` (default: the configuration's default, 1).
    #[arg(long)]
    pub sink_threads: Option<usize>,
    /// The runtime's `runtime.sensor_nice` at both QoS levels: the sensors' threads below
    /// delivery when the CPU is short (default: 10 at QoS 0, the setting README advises for
    /// deployments publishing at QoS 0, with a run at the configuration's default, 0,
    /// reported beside it; at QoS 1 the configuration's default, 0).
    #[arg(long)]
    pub sensor_nice: Option<u8>,
    /// Twins of a second, smaller fleet run at QoS 0 for comparison, offered the same rate
    /// (default 400, enough for 400k msg/s at the shortest interval, 1 ms; --quick 20; 0:
    /// none). Not checked: it shows how much of a tick's cost comes from each twin's memory
    /// going cold between its ticks (BENCHMARKS.md).
    #[arg(long)]
    pub small_fleet: Option<u64>,
    /// Run one QoS only (0 or 1; default both).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: Option<u8>,
}

const MIN_RATIO: f64 = 0.9;
/// `runtime.sensor_nice` of the QoS 0 twins unless `--sensor-nice` says otherwise: on 2
/// cores shared with the broker, delivery first (BENCHMARKS.md: 20-30 % more delivered at
/// QoS 0, a few % less at QoS 1, where the configuration's default stays).
const QOS0_SENSOR_NICE: u8 = 10;
const MOSQUITTO_MISSING: &str = "mosquitto not found: install it with 'apt-get install -y mosquitto mosquitto-clients'";

/// A Mosquitto on a free 127.0.0.1 port, killed on drop.
struct Broker {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl Broker {
    fn start() -> Result<Broker, String> {
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or(MOSQUITTO_MISSING)?;
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("twinrt-bench-mqtt-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let conf = dir.join("mosquitto.conf");
        // No queue limits towards the subscriber: what is published is what is counted.
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n\
                 max_queued_messages 0\nmax_inflight_messages 0\nmax_queued_bytes 0\n"
            ),
        )
        .map_err(|e| format!("{}: {e}", conf.display()))?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {bin}: {e}"))?;
        let b = Broker { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("mosquitto did not listen on 127.0.0.1:{port} within 10s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(b)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Run {
    rate: f64,
    received: u64,
    sent: u64,
}

fn qos_of(q: u8) -> QoS {
    if q == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

/// `mosquitto_pub -l`: one message per line of a prepared file.
async fn run_mosquitto_pub(b: &Broker, c: &Counter, qos: u8, payload: &str, warm: u64, n: u64) -> Result<Run, String> {
    let file = b.dir.join(format!("lines-{qos}.txt"));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).map_err(|e| format!("{e}"))?);
        for _ in 0..warm + n {
            writeln!(f, "{payload}").map_err(|e| format!("{e}"))?;
        }
    }
    let stdin = std::fs::File::open(&file).map_err(|e| format!("{e}"))?;
    let base = c.get();
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &b.port.to_string(), "-q", &qos.to_string()])
        .args(["-t", "bench/mosquitto_pub/light/b0-00001", "-l", "-i", &format!("bench-pub-{qos}")])
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run mosquitto_pub ({MOSQUITTO_MISSING}): {e}"))?;
    let (got, secs) = c.measure(base, warm, n, Duration::from_secs(10)).await;
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    let received = c.settle(Duration::from_millis(300)).await - base;
    let _ = std::fs::remove_file(&file);
    Ok(Run { rate: got as f64 / secs, received, sent: warm + n })
}

/// A bare rumqttc client: one task publishing, one polling the event loop.
async fn run_rumqttc(
    b: &Broker,
    c: &Counter,
    qos: u8,
    payload: &[u8],
    inflight: u16,
    warm: u64,
    n: u64,
) -> Result<Run, String> {
    let mut opts = MqttOptions::new(format!("bench-rumqttc-{qos}"), "127.0.0.1", b.port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(inflight);
    let (client, mut el) = AsyncClient::new(opts, 64);
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let poller = tokio::spawn(async move {
        while !d.load(Ordering::Relaxed) {
            if el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let base = c.get();
    let body = payload.to_vec();
    let publisher = tokio::spawn(async move {
        for _ in 0..warm + n {
            if client.publish("bench/rumqttc/light/b0-00001", qos_of(qos), false, body.clone()).await.is_err() {
                break;
            }
        }
        client
    });
    let (got, secs) = c.measure(base, warm, n, Duration::from_secs(10)).await;
    let client = publisher.await.map_err(|e| e.to_string())?;
    let received = c.settle(Duration::from_millis(300)).await - base;
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    done.store(true, Ordering::Relaxed);
    poller.abort();
    Ok(Run { rate: got as f64 / secs, received, sent: warm + n })
}

/// The interval, in µs, that offers `offered` messages per second from `twins` twins (at
/// least 1 ms, the smallest the configuration takes: then fewer are offered).
fn interval_us(twins: u64, offered: f64) -> u64 {
    ((twins as f64 / offered) * 1e6).max(1000.0) as u64
}

/// Runtime settings the scenario's options may change.
#[derive(Clone, Copy)]
struct Tuning {
    sink_threads: Option<usize>,
    sensor_nice: Option<u8>,
}

/// The twins through the runtime (its MQTT sink), offered `offered` messages per second.
#[allow(clippy::too_many_arguments)]
async fn run_twins(
    b: &Broker,
    c: &Counter,
    qos: u8,
    kind: &str,
    twins: u64,
    offered: f64,
    inflight: u16,
    warm: u64,
    n: u64,
    tuning: Tuning,
) -> Result<(Run, u64), String> {
    let interval_us = interval_us(twins, offered);
    let sink = format!(
        "[[sinks.mqtt]]\nname = \"bench\"\nurl = \"mqtt://127.0.0.1:{}\"\nqos = {qos}\nqueue_capacity = 100000\nmax_inflight = {inflight}\nclient_id = \"bench-twins-{qos}\"\n",
        b.port
    );
    let kinds = parse_kinds(kind)?;
    let mut text = super::fleet_config(twins, 1, &kinds, Duration::from_micros(interval_us), &sink);
    if let Some(t) = tuning.sink_threads {
        text = text.replacen("[runtime]\n", &format!("[runtime]\nsink_threads = {t}\n"), 1);
    }
    if let Some(n) = tuning.sensor_nice {
        text = text.replacen("[runtime]\n", &format!("[runtime]\nsensor_nice = {n}\n"), 1);
    }
    let config = Config::parse(&text, "bench mqtt", &[]).map_err(|e| e.to_string())?;
    let base = c.get();
    let rt = Runtime::start(config).await.map_err(|e| format!("runtime: {e}"))?;
    let (got, secs) = c.measure(base, warm, n, Duration::from_secs(30)).await;
    let report = rt.shutdown().await;
    let received = c.settle(Duration::from_millis(300)).await - base;
    let sink = report.sinks.first().ok_or("no sink in the report")?;
    Ok((Run { rate: got as f64 / secs, received, sent: sink.sent }, sink.dropped))
}

/// A twins run compared with the best bare client, as an extra (unchecked) figure.
fn twins_figure(r: &Run, dropped: u64, best: f64) -> serde_json::Value {
    json!({
        "msg_per_s": round3(r.rate),
        "sent": r.sent,
        "received": r.received,
        "dropped_at_queue": dropped,
        "ratio_to_best_bare": round3(r.rate / best),
    })
}

pub async fn run(a: MqttArgs, quick: bool) -> Result<Report, String> {
    let n = a.messages.unwrap_or(if quick { 2_000 } else { 1_000_000 }).max(10);
    let warm = (n / 10).max(1);
    let twins = a.twins.unwrap_or(if quick { 200 } else { 10_000 }).max(1);
    let kind = a.kind.unwrap_or_else(|| "light".into());
    let inflight = a.inflight.unwrap_or(100);
    let small_fleet = a.small_fleet.unwrap_or(if quick { 20 } else { 400 });
    let k = *parse_kinds(&kind)?.first().ok_or("--kind: no sensor type")?;
    if parse_kinds(&kind)?.len() != 1 {
        return Err("--kind: one sensor type".into());
    }
    // The size of the twins' messages: a real one.
    let mut twin = twins::Twin::new(
        twins::SensorSpec {
            id: "b0-00001".into(),
            kind: k,
            district: super::district_names(1)[0].clone().into(),
            location: twins::geo::districts()[0].centroid,
        },
        972,
    );
    let sample = twin.step(chrono::Utc::now()).to_mqtt_json();
    let size = sample.len();
    let payload: String = String::from_utf8_lossy(&sample).chars().map(|c| if c == '\n' { ' ' } else { c }).collect();

    let mut report = Report::new("mqtt");
    report.param("messages", n);
    report.param("warmup_messages", warm);
    report.param("twins", twins);
    report.param("kind", kind.clone());
    report.param("message_bytes", size);
    report.param("inflight", inflight);
    if let Some(t) = a.sink_threads {
        report.param("sink_threads", t);
    }
    let nice_of = |qos: u8| a.sensor_nice.or((qos == 0).then_some(QOS0_SENSOR_NICE));
    report.param("qos0_sensor_nice", nice_of(0).unwrap_or(0));
    report.param("qos1_sensor_nice", nice_of(1).unwrap_or(0));
    report.param("small_fleet", small_fleet);
    let broker = Broker::start()?;
    let levels: &[u8] = match a.qos {
        Some(0) => &[0],
        Some(_) => &[1],
        None => &[0, 1],
    };
    if let Some(q) = a.qos {
        report.param("qos", q);
    }
    for &qos in levels {
        let tuning = Tuning { sink_threads: a.sink_threads, sensor_nice: nice_of(qos) };
        let counter = Counter::start(broker.port, qos_of(qos)).await?;
        let mp = run_mosquitto_pub(&broker, &counter, qos, &payload, warm, n).await?;
        let rq = run_rumqttc(&broker, &counter, qos, payload.as_bytes(), inflight, warm, n).await?;
        // A bare client that did not deliver everything is no reference (`mosquitto_pub -l`
        // at QoS 1 can exit at the end of its input with messages still queued).
        let complete = |r: &Run| r.received >= r.sent;
        let best = [&mp, &rq].iter().filter(|r| complete(r)).map(|r| r.rate).fold(0.0, f64::max);
        if best == 0.0 {
            return Err(format!("QoS {qos}: no bare client delivered all its messages"));
        }
        let (tw, dropped) =
            run_twins(&broker, &counter, qos, &kind, twins, best * 1.2, inflight, warm, n, tuning).await?;
        let ratio = tw.rate / best;
        for (name, r) in [("mosquitto_pub", &mp), ("rumqttc", &rq), ("twins", &tw)] {
            report.figure(
                &format!("qos{qos}_{name}"),
                json!({"msg_per_s": round3(r.rate), "sent": r.sent, "received": r.received}),
            );
            // QoS 0 may lose on a saturated socket; QoS 1 must not (twins: an error;
            // a bare client: left out of the reference, and said so).
            if qos == 1 && r.received < r.sent {
                let msg = format!("QoS 1 {name}: {} sent, {} received", r.sent, r.received);
                if name == "twins" {
                    report.errors.push(msg);
                } else {
                    report.figure(&format!("qos{qos}_{name}_incomplete"), msg);
                }
            }
        }
        report.figure(&format!("qos{qos}_twins_dropped_at_queue"), dropped);
        if qos == 0 && a.sensor_nice.is_none() {
            // The same run with the configuration's default, for comparison (not checked).
            let plain = Tuning { sensor_nice: None, ..tuning };
            let (d, d_dropped) =
                run_twins(&broker, &counter, qos, &kind, twins, best * 1.2, inflight, warm, n, plain).await?;
            report.figure("qos0_twins_sensor_nice_0", twins_figure(&d, d_dropped, best));
        }
        if qos == 0 && small_fleet > 0 {
            let (small, small_dropped) =
                run_twins(&broker, &counter, qos, &kind, small_fleet, best * 1.2, inflight, warm, n, tuning).await?;
            let mut figure = twins_figure(&small, small_dropped, best);
            figure["twins"] = json!(small_fleet);
            figure["offered_per_s"] =
                json!(round3(small_fleet as f64 * 1e6 / interval_us(small_fleet, best * 1.2) as f64));
            report.figure("qos0_small_fleet", figure);
        }
        report.figure(&format!("qos{qos}_best_bare_msg_per_s"), round3(best));
        report.check(Check::at_least(&format!("qos{qos}_ratio_twins_to_best_bare"), round3(ratio), MIN_RATIO));
        // A subscriber that stopped counting makes every rate after it short: say why.
        if let Some(e) = counter.error() {
            report.errors.push(format!("QoS {qos}: {e}"));
        }
        drop(counter);
    }
    Ok(report)
}
