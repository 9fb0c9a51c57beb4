//! Builds the supervision tree, downstream first, and owns graceful shutdown.
//!
//! ```text
//! root (one-for-one)
//! ├── sinks (one-for-one)         one actor per broker: MqttSink ...
//! ├── consumers (one-for-one)     with [redpanda_consumer]: the Redpanda consumer
//! ├── distributor (one-for-one)   with [pulsar_distributor]: one consumer per Pulsar topic
//! └── twins (one-for-one)
//!     ├── district Fort-de-France  (one-for-one) sensor actors ...
//!     └── district ...
//! ```
//! Shutdown: the twins supervisor is stopped first (no new observations), then the
//! consumers and the distributor finish what they hold, then the sinks get up to
//! `runtime.shutdown_grace` to deliver what they hold, then the rest stops.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use supervision::{
    Backoff, ChildSnapshot, ChildSpec, Intensity, Restart, Strategy, SupervisionObserver, Supervisor, SupervisorArgs,
    SupervisorMsg, SupervisorSpec, SupervisorStats,
};
use tokio::task::JoinHandle;
use twins::SimClock;

use crate::actors::{ActorEntry, ActorKind, Directory};
use crate::config::{Config, HttpSinkCommon, SupervisionConfig};
use crate::consumer::{ConsumerArgs, ConsumerHandle, RedpandaConsumer};
use crate::distributor::{short_topic, DistributorArgs, DistributorHandle, PulsarTopicConsumer};
use crate::faults::{EndReason, FaultEngine, SensorFaults};
use crate::http;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::sensor::tree::{supervisor_child, twins_supervisor, TwinsTree};
use crate::sensor::{SensorContext, SensorMsg};
use crate::sinks::batch::{BatchService, BatchSink, BatchSinkArgs};
use crate::sinks::influxdb::InfluxDbService;
use crate::sinks::mqtt::{MqttSink, MqttSinkArgs};
use crate::sinks::ngsild::NgsiLdService;
use crate::sinks::pulsar::PulsarService;
use crate::sinks::redpanda::RedpandaService;
use crate::sinks::sensorthings::SensorThingsService;
use crate::sinks::{SinkHandle, SinkSet, SinkSnapshot};

/// How often the sinks' counters are sampled for their windowed counts.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    EmbeddedBroker(String),
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Http { addr: SocketAddr, source: std::io::Error },
    #[error("invalid supervision settings: {0}")]
    Supervision(String),
    #[error("the supervision tree failed to start: {0}")]
    Spawn(String),
    #[error("sink {sink}: {source}")]
    Spill { sink: String, source: crate::sinks::spill::SpillError },
    #[error("cannot start the sinks' {threads} thread(s) (runtime.sink_threads): {source}")]
    SinkThreads { threads: usize, source: std::io::Error },
    #[error("cannot start the sensors' {threads} thread(s) (runtime.sensor_threads): {source}")]
    SensorThreads { threads: usize, source: std::io::Error },
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("the root supervisor gave up: {0}")]
    RootFailed(String),
}

/// Builds the sinks' handles, directory entries and child specs.
struct SinkBuilder<'a> {
    metrics: &'a Metrics,
    dir: &'a mut Directory,
    stats: &'a SupervisorStats,
    handles: Vec<Arc<SinkHandle>>,
    children: Vec<ChildSpec>,
}

impl SinkBuilder<'_> {
    /// The handle (queue, counters) and directory entry of sink `kind:name`.
    fn add(
        &mut self,
        name: &str,
        kind: &'static str,
        target: String,
        capacity: usize,
    ) -> (Arc<SinkHandle>, Arc<ActorEntry>) {
        let handle = SinkHandle::new(name, kind, target, capacity, self.metrics);
        self.handles.push(handle.clone());
        let id = format!("{kind}:{name}");
        let entry = self.dir.add(ActorEntry::new(
            format!("root/sinks/{id}"),
            id.into(),
            ActorKind::Sink,
            Some("root/sinks".into()),
            Some(self.stats.clone()),
            None,
            handle.mailbox.clone().into(),
        ));
        (handle, entry)
    }

    /// A request/response sink: a [`BatchSink`] over the service `make` builds.
    fn add_batch<S: BatchService>(
        &mut self,
        kind: &'static str,
        common: &HttpSinkCommon,
        make: Arc<dyn Fn() -> Result<S, String> + Send + Sync>,
    ) {
        let (handle, entry) = self.add(&common.name, kind, common.url.clone(), common.queue_capacity);
        let settings = common.batch.clone();
        self.children.push(ChildSpec::new(format!("{kind}:{}", common.name), "sink", Restart::Permanent, move |sup| {
            let args = BatchSinkArgs {
                handle: handle.clone(),
                settings: settings.clone(),
                entry: entry.clone(),
                make: make.clone(),
            };
            async move {
                let (actor, _) = Actor::spawn_linked(None, BatchSink::<S>::default(), args, sup).await?;
                Ok(actor.get_cell())
            }
        }));
    }
}

/// Every supervisor's shared view, by position in the tree.
#[derive(Clone, Default)]
pub struct SupervisionTree {
    pub root: SupervisorStats,
    pub sinks: SupervisorStats,
    /// Present in the tree only with a `[redpanda_consumer]`.
    pub consumers: SupervisorStats,
    /// Present in the tree only with a `[pulsar_distributor]`.
    pub distributor: SupervisorStats,
    pub twins: TwinsTree,
}

/// What stayed undelivered at shutdown, per sink.
#[derive(Debug, Clone)]
pub struct ShutdownReport {
    pub sinks: Vec<SinkSnapshot>,
    /// Every sink delivered everything within the grace period.
    pub flushed: bool,
}

/// A running twin runtime.
pub struct Runtime {
    config: Config,
    metrics: Metrics,
    registry: Arc<Registry>,
    sinks: SinkSet,
    consumer: Option<Arc<ConsumerHandle>>,
    distributor: Vec<Arc<DistributorHandle>>,
    tree: SupervisionTree,
    root: ActorRef<SupervisorMsg>,
    root_done: JoinHandle<()>,
    directory: Arc<Directory>,
    faults: Arc<FaultEngine>,
    sampler: JoinHandle<()>,
    http_addr: SocketAddr,
    http_stop: tokio::sync::oneshot::Sender<()>,
    http_task: JoinHandle<()>,
    /// Where the sink actors run: kept until the runtime stops.
    _sink_scheduler: Scheduler,
    /// Where the twins' supervisors, sensor actors and tickers run when they have their
    /// own (`runtime.sensor_nice` above 0): the same.
    _sensor_scheduler: Option<Scheduler>,
}

/// A tokio runtime of the runtime's own, for one part of the tree.
///
/// - The sinks' ([`Scheduler::sinks`], `runtime.sink_threads` threads named
///   `twinrt-sinks`). Sensors and sinks on one scheduler: under load, a sink actor is one
///   task among thousands of ready sensors, polled once per round of them, and falls behind
///   what they produce (the throughput benchmark measured the null sink busy 45 % of the
///   time while its queue overflowed). On threads of their own, sinks get their share from
///   the system.
/// - The sensors' ([`Scheduler::sensors`], `runtime.sensor_threads` threads named
///   `twinrt-sensors`, `runtime.sensor_nice` steps of nice below the process), only when
///   `runtime.sensor_nice` is above 0: otherwise the sensors run on the caller's runtime,
///   as the control plane (HTTP, the root supervisor, consumers, the distributor) always
///   does. Threads of their own do not keep overloaded sensors from taking the CPU from
///   delivery: the system shares it by thread, and the sensors' threads outnumber the
///   sink's. At a higher nice they get what delivery (and a broker on the same machine)
///   leaves; when the CPU is not short, nice changes nothing. On 2 cores with Mosquitto
///   beside it, nice 10 delivered 20-25 % more at QoS 0 and 8-10 % less at QoS 1, and
///   the separate scheduler alone (nice 0) cost QoS 1 about 7 % (BENCHMARKS.md): hence a
///   setting, off by default.
pub struct Scheduler(Option<tokio::runtime::Runtime>);

impl Scheduler {
    pub fn sinks(threads: usize) -> std::io::Result<Scheduler> {
        Scheduler::new("twinrt-sinks", threads, 0)
    }

    pub fn sensors(threads: usize, nice: u8) -> std::io::Result<Scheduler> {
        Scheduler::new("twinrt-sensors", threads, nice)
    }

    fn new(name: &str, threads: usize, nice: u8) -> std::io::Result<Scheduler> {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads.max(1)).thread_name(name).enable_all();
        if nice > 0 {
            let name = name.to_string();
            // Every thread of the runtime, its blocking ones included, as each starts.
            b.on_thread_start(move || lower_priority(&name, nice));
        }
        Ok(Scheduler(Some(b.build()?)))
    }

    pub fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.0.as_ref().map(|rt| rt.handle().clone())
    }
}

impl Drop for Scheduler {
    /// Without waiting (a runtime dropped from async code would panic): by then its actors
    /// have stopped.
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Raise the calling thread's nice value by `nice` (capped at 19; raising it needs no
/// privilege). A failure is logged once and changes nothing else.
fn lower_priority(name: &str, nice: u8) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and the errno location have no preconditions; getpriority and
        // setpriority read their integers only.
        let rc = unsafe {
            let tid = libc::gettid() as libc::id_t;
            *libc::__errno_location() = 0;
            let current = libc::getpriority(libc::PRIO_PROCESS, tid);
            if current == -1 && *libc::__errno_location() != 0 {
                -1
            } else {
                libc::setpriority(libc::PRIO_PROCESS, tid, (current + i32::from(nice)).min(19))
            }
        };
        static WARNED: std::sync::Once = std::sync::Once::new();
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            WARNED.call_once(|| {
                tracing::warn!(threads = name, nice, error = %e, "cannot lower the threads' priority: they run at the process's");
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (name, nice);
}

struct MetricsObserver {
    metrics: Metrics,
}

impl SupervisionObserver for MetricsObserver {
    fn child_restarted(&self, supervisor: &str, child: &ChildSnapshot) {
        self.metrics.actor_restarts.with_label_values(&[child.kind]).inc();
        tracing::info!(supervisor, child = %child.id, kind = %child.kind, restarts = child.restarts, "restarted");
    }

    fn escalated(&self, supervisor: &str, reason: &str) {
        tracing::error!(supervisor, reason, "restart intensity exceeded: escalating");
    }
}

fn supervisor_spec(cfg: &SupervisionConfig, name: &str) -> Result<SupervisorSpec, StartError> {
    let backoff =
        Backoff::new(cfg.backoff_min, cfg.backoff_max, 2.0, 0.2).map_err(|e| StartError::Supervision(e.to_string()))?;
    Ok(SupervisorSpec {
        name: name.to_string(),
        strategy: Strategy::OneForOne,
        intensity: Intensity { max_restarts: cfg.max_restarts, within: cfg.within },
        backoff,
        start_concurrency: 1,
    })
}

impl Runtime {
    /// Start everything the configuration describes. Returns once the tree is up and the
    /// HTTP server listens (sinks may still be connecting).
    pub async fn start(mut config: Config) -> Result<Runtime, StartError> {
        let metrics = Metrics::new();
        let registry = Registry::with_capacity(config.sensors.len());

        if let Some(b) = &config.embedded_broker {
            let listen = b.listen;
            tokio::task::spawn_blocking(move || crate::broker::start_embedded(listen))
                .await
                .map_err(|e| StartError::EmbeddedBroker(e.to_string()))?
                .map_err(StartError::EmbeddedBroker)?;
        }

        // The directory of every actor, built with the tree.
        let mut dir = Directory::default();
        let root_stats = SupervisorStats::default();
        let sinks_stats = SupervisorStats::default();
        let root_entry = dir.add(ActorEntry::new(
            "root".into(),
            "root".into(),
            ActorKind::Supervisor,
            None,
            None,
            Some(root_stats.clone()),
            Default::default(),
        ));
        let sinks_entry = dir.add(ActorEntry::new(
            "root/sinks".into(),
            "sinks".into(),
            ActorKind::Supervisor,
            Some("root".into()),
            Some(root_stats.clone()),
            Some(sinks_stats.clone()),
            Default::default(),
        ));

        // Sinks: their queues exist before any sensor can emit.
        let mut builder = SinkBuilder {
            metrics: &metrics,
            dir: &mut dir,
            stats: &sinks_stats,
            handles: Vec::new(),
            children: Vec::new(),
        };
        for m in &config.sinks.mqtt {
            let (handle, entry) = builder.add(&m.name, "mqtt", m.url(), m.queue_capacity);
            let cfg = m.clone();
            builder.children.push(ChildSpec::new(format!("mqtt:{}", m.name), "sink", Restart::Permanent, move |sup| {
                let args = MqttSinkArgs { handle: handle.clone(), config: cfg.clone(), entry: entry.clone() };
                async move {
                    let (actor, _) = Actor::spawn_linked(None, MqttSink, args, sup).await?;
                    Ok(actor.get_cell())
                }
            }));
        }
        for c in &config.sinks.influxdb {
            let cfg = c.clone();
            builder.add_batch("influxdb", &c.common, Arc::new(move || InfluxDbService::new(&cfg)));
        }
        for c in &config.sinks.sensorthings {
            let cfg = c.clone();
            builder.add_batch("sensorthings", &c.common, Arc::new(move || SensorThingsService::new(&cfg)));
        }
        for c in &config.sinks.ngsild {
            let cfg = c.clone();
            builder.add_batch("ngsild", &c.common, Arc::new(move || NgsiLdService::new(&cfg)));
        }
        for c in &config.sinks.redpanda {
            let cfg = c.clone();
            builder.add_batch("redpanda", &c.common, Arc::new(move || RedpandaService::new(&cfg)));
        }
        for c in &config.sinks.pulsar {
            let cfg = c.clone();
            builder.add_batch("pulsar", &c.common, Arc::new(move || PulsarService::new(&cfg)));
        }
        // (more request/response sink kinds are added here, each with `builder.add_batch`)
        // `consumer_only` sinks take no sensor observations, only a consumer's or the
        // distributor's.
        for name in config.sinks.consumer_only() {
            if let Some(h) = builder.handles.iter().find(|h| h.name == name) {
                h.set_offer_to_sensors(false);
            }
        }
        for (name, policy) in config.sinks.overflow_policies() {
            if let Some(h) = builder.handles.iter().find(|h| h.name == name) {
                h.set_overflow(policy);
            }
        }
        // Disk spills: what a previous run left is sent first.
        for (name, sp) in config.sinks.spills() {
            if let Some(h) = builder.handles.iter().find(|h| h.name == name) {
                let spill = crate::sinks::spill::Spill::open(&sp.dir, sp.max_bytes)
                    .map_err(|source| StartError::Spill { sink: name.to_string(), source })?;
                if !spill.is_empty() {
                    tracing::info!(sink = name, records = spill.len(), dir = %sp.dir.display(), "resuming from the disk spill");
                }
                h.set_spill(spill);
            }
        }
        let SinkBuilder { handles, children: sink_children, .. } = builder;
        let sink_scheduler = Scheduler::sinks(config.runtime.sink_threads)
            .map_err(|source| StartError::SinkThreads { threads: config.runtime.sink_threads, source })?;
        let sink_children: Vec<ChildSpec> = match sink_scheduler.handle() {
            Some(rt) => sink_children.into_iter().map(|c| c.on(rt.clone())).collect(),
            None => sink_children,
        };
        let sinks = SinkSet::new(handles);

        // Twins: their state exists before any sensor actor starts.
        let seed = config.runtime.seed;
        for (spec, s) in crate::registry::specs(&config.sensors) {
            registry.ensure(spec, seed, s.interval);
        }
        // Whole seconds: observation times then read cleanly (offsets are whole milliseconds).
        let start = config.runtime.start.unwrap_or_else(|| {
            let now = chrono::Utc::now();
            chrono::DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now)
        });
        let clock = SimClock::new(start, config.runtime.speed).map_err(|e| StartError::Supervision(e.to_string()))?;
        let sensor_faults = SensorFaults::new();
        let ctx = SensorContext {
            registry: registry.clone(),
            sinks: sinks.clone(),
            clock,
            real_start: crate::sensor::ScheduleStart::new(),
            metrics: metrics.clone(),
            faults: sensor_faults.clone(),
        };

        let observer: Arc<dyn SupervisionObserver> = Arc::new(MetricsObserver { metrics: metrics.clone() });
        // Every supervisor has the same strategy, intensity and backoff; only names differ.
        let template = supervisor_spec(&config.supervision, "")?;
        let spec_of = move |name: &str| SupervisorSpec { name: name.to_string(), ..template.clone() };

        let sinks_sup = {
            let spec = spec_of("sinks");
            let stats = sinks_stats.clone();
            let observer = observer.clone();
            supervisor_child(sinks_entry, move || SupervisorArgs {
                spec: spec.clone(),
                children: sink_children.clone(),
                observer: Some(observer.clone()),
                stats: stats.clone(),
            })
        };
        // Consumers: after the sinks they write through, before the twins.
        let consumers_stats = SupervisorStats::default();
        let mut consumer = None;
        let mut consumers_sup = None;
        if let Some(c) = &config.redpanda_consumer {
            let sink = sinks
                .get(&c.sink)
                .cloned()
                .ok_or_else(|| StartError::Spawn(format!("redpanda_consumer.sink: no sink named \"{}\"", c.sink)))?;
            let consumers_entry = dir.add(ActorEntry::new(
                "root/consumers".into(),
                "consumers".into(),
                ActorKind::Supervisor,
                Some("root".into()),
                Some(root_stats.clone()),
                Some(consumers_stats.clone()),
                Default::default(),
            ));
            let entry = dir.add(ActorEntry::new(
                "root/consumers/redpanda".into(),
                "redpanda".into(),
                ActorKind::Consumer,
                Some("root/consumers".into()),
                Some(consumers_stats.clone()),
                None,
                Default::default(),
            ));
            let handle = ConsumerHandle::new("redpanda", c.clone(), sink);
            consumer = Some(handle.clone());
            let child = ChildSpec::new("redpanda", "consumer", Restart::Permanent, move |sup| {
                let args = ConsumerArgs { handle: handle.clone(), entry: entry.clone() };
                async move {
                    let (actor, _) = Actor::spawn_linked(None, RedpandaConsumer, args, sup).await?;
                    Ok(actor.get_cell())
                }
            });
            let spec = spec_of("consumers");
            let stats = consumers_stats.clone();
            let observer = observer.clone();
            consumers_sup = Some(supervisor_child(consumers_entry, move || SupervisorArgs {
                spec: spec.clone(),
                children: vec![child.clone()],
                observer: Some(observer.clone()),
                stats: stats.clone(),
            }));
        }
        // The distributor: one consumer actor per Pulsar topic, after the sinks it writes to.
        let distributor_stats = SupervisorStats::default();
        let mut distributor = Vec::new();
        let mut distributor_sup = None;
        if let Some(d) = &config.pulsar_distributor {
            let mut targets = Vec::new();
            for t in &d.targets {
                let h = sinks
                    .get(t)
                    .cloned()
                    .ok_or_else(|| StartError::Spawn(format!("pulsar_distributor.targets: no sink named \"{t}\"")))?;
                let room = d.max_in_flight * d.topics.len();
                if h.capacity() < room {
                    tracing::warn!(
                        sink = %t, queue_capacity = h.capacity(), needed = room,
                        "a distributor target's queue is smaller than max_in_flight x topics: \
                         a slow target will drop (then Pulsar redelivers) instead of making messages wait"
                    );
                }
                targets.push(h);
            }
            let entry = dir.add(ActorEntry::new(
                "root/distributor".into(),
                "distributor".into(),
                ActorKind::Supervisor,
                Some("root".into()),
                Some(root_stats.clone()),
                Some(distributor_stats.clone()),
                Default::default(),
            ));
            let shared = Arc::new(d.clone());
            let mut children = Vec::new();
            for topic in &d.topics {
                let handle = DistributorHandle::new(topic, shared.clone(), targets.clone(), &metrics);
                let name = short_topic(topic).to_string();
                let child_entry = dir.add(ActorEntry::new(
                    format!("root/distributor/{name}"),
                    name.as_str().into(),
                    ActorKind::Consumer,
                    Some("root/distributor".into()),
                    Some(distributor_stats.clone()),
                    None,
                    Default::default(),
                ));
                distributor.push(handle.clone());
                children.push(ChildSpec::new(name, "consumer", Restart::Permanent, move |sup| {
                    let args = DistributorArgs { handle: handle.clone(), entry: child_entry.clone() };
                    async move {
                        let (actor, _) = Actor::spawn_linked(None, PulsarTopicConsumer, args, sup).await?;
                        Ok(actor.get_cell())
                    }
                }));
            }
            let spec = spec_of("distributor");
            let stats = distributor_stats.clone();
            let observer = observer.clone();
            distributor_sup = Some(supervisor_child(entry, move || SupervisorArgs {
                spec: spec.clone(),
                children: children.clone(),
                observer: Some(observer.clone()),
                stats: stats.clone(),
            }));
        }
        let (twins_sup, twins_tree) =
            twins_supervisor("root", &root_stats, &config.sensors, &ctx, &spec_of, observer.clone(), &mut dir);
        // With `runtime.sensor_nice`, the twins' supervisor, and so every district
        // supervisor, sensor actor and ticker under it, started and restarted on the
        // sensors' scheduler.
        let sensor_scheduler = match config.runtime.sensor_nice {
            0 => None,
            nice => Some(
                Scheduler::sensors(config.runtime.sensor_threads, nice)
                    .map_err(|source| StartError::SensorThreads { threads: config.runtime.sensor_threads, source })?,
            ),
        };
        let twins_sup = match sensor_scheduler.as_ref().and_then(Scheduler::handle) {
            Some(rt) => twins_sup.on(rt),
            None => twins_sup,
        };
        let directory = Arc::new(dir);
        let faults = FaultEngine::new(registry.clone(), directory.clone(), sinks.clone(), sensor_faults);

        let root = Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                spec: spec_of("root"),
                children: [Some(sinks_sup), consumers_sup, distributor_sup, Some(twins_sup)]
                    .into_iter()
                    .flatten()
                    .collect(),
                observer: Some(observer),
                stats: root_stats.clone(),
            },
        )
        .await;
        // Every twin actor runs (or the tree failed): the sensors' schedule starts now.
        ctx.real_start.start();
        let (root, root_done) = root.map_err(|e| StartError::Spawn(e.to_string()))?;
        root_entry.attach(root.get_cell());

        // Sample the sinks' counters for their 1 min / 1 h windows.
        let sampled = sinks.clone();
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tick.tick().await;
                for h in sampled.handles() {
                    h.stats.sample();
                    h.flush_spill();
                }
            }
        });

        let tree = SupervisionTree {
            root: root_stats,
            sinks: sinks_stats,
            consumers: consumers_stats,
            distributor: distributor_stats,
            twins: twins_tree,
        };
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .map_err(|source| StartError::Http { addr: config.http.listen, source });
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                root.stop(Some("http failed".into()));
                return Err(e);
            }
        };
        let http_addr =
            listener.local_addr().map_err(|source| StartError::Http { addr: config.http.listen, source })?;
        let state = http::AppState {
            metrics: metrics.clone(),
            registry: registry.clone(),
            sinks: sinks.clone(),
            directory: directory.clone(),
            expected_twins: config.sensors.len(),
            faults: faults.clone(),
            faults_token: if config.faults.enabled { config.faults.token.clone() } else { None },
            max_body_bytes: config.http.max_body_bytes,
        };
        let (http_stop, stop_rx) = tokio::sync::oneshot::channel();
        let http_task = tokio::spawn(http::serve(listener, state, async {
            let _ = stop_rx.await;
        }));
        tracing::info!(
            http = %http_addr,
            sensors = config.sensors.len(),
            sinks = sinks.handles().len(),
            seed,
            speed = config.runtime.speed,
            "twinrt running"
        );
        // Each twin's registry entry, directory entry and district slot hold what the
        // runtime needs of its sensor's configuration: the per-sensor list is not kept.
        config.sensors = Vec::new();
        Ok(Runtime {
            config,
            metrics,
            registry,
            sinks,
            consumer,
            distributor,
            tree,
            root,
            root_done,
            directory,
            faults,
            sampler,
            http_addr,
            http_stop,
            http_task,
            _sink_scheduler: sink_scheduler,
            _sensor_scheduler: sensor_scheduler,
        })
    }

    /// The configuration it started with, less `sensors` (dropped once the twins exist:
    /// see the registry and the directory).
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn sinks(&self) -> &SinkSet {
        &self.sinks
    }

    /// The Redpanda consumer, when configured.
    pub fn consumer(&self) -> Option<&Arc<ConsumerHandle>> {
        self.consumer.as_ref()
    }

    /// The distributor's topic consumers (empty without `[pulsar_distributor]`).
    pub fn distributor(&self) -> &[Arc<DistributorHandle>] {
        &self.distributor
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn supervision(&self) -> &SupervisionTree {
        &self.tree
    }

    /// Every actor of the tree, by path.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// The fault engine (what `/api/v1/faults` and scenarios drive).
    pub fn faults(&self) -> &Arc<FaultEngine> {
        &self.faults
    }

    /// The live actor of a sensor, if it is running now.
    pub fn sensor(&self, id: &str) -> Option<ActorRef<SensorMsg>> {
        let district = self.registry.district(id)?;
        let entry = self.directory.get(&format!("root/twins/{district}/{id}"))?;
        entry.cell().map(ActorRef::from)
    }

    /// The supervisors' snapshots by district name.
    pub fn district_snapshots(&self) -> BTreeMap<String, supervision::SupervisorSnapshot> {
        self.tree.twins.districts.iter().map(|(k, v)| (k.clone(), v.snapshot())).collect()
    }

    /// Has the root supervisor ended (it only does when it gave up)?
    pub fn root_finished(&self) -> bool {
        self.root_done.is_finished()
    }

    /// Stop sensors, let sinks flush for up to the grace period, then stop everything.
    pub async fn shutdown(self) -> ShutdownReport {
        let grace = self.config.runtime.shutdown_grace;
        // Injected faults end first: a sink held down could not flush.
        self.faults.end_all(EndReason::RuntimeStopped);
        tracing::info!(grace = ?grace, "shutting down: stopping sensors");
        let stopped = self
            .root
            .call(|reply| SupervisorMsg::TerminateChild("twins".into(), Some(reply)), Some(Duration::from_secs(15)))
            .await;
        if let Err(e) = stopped {
            tracing::warn!(error = %e, "the twins supervisor did not confirm its stop");
        }
        // Consumers next: each finishes the batch in hand (stored, committed) and deletes
        // its instance, before the sinks flush.
        if let Some(c) = &self.consumer {
            if !c.stop(grace).await {
                tracing::warn!(consumer = %c.name, "the consumer did not stop within the grace period");
            }
            let stopped = self
                .root
                .call(
                    |reply| SupervisorMsg::TerminateChild("consumers".into(), Some(reply)),
                    Some(Duration::from_secs(15)),
                )
                .await;
            if let Err(e) = stopped {
                tracing::warn!(error = %e, "the consumers supervisor did not confirm its stop");
            }
        }
        // The distributor likewise: its messages in hand are accepted by their targets and
        // acknowledged to Pulsar (or left to Pulsar to redeliver).
        if !self.distributor.is_empty() {
            let stops = self.distributor.iter().map(|d| d.stop(grace));
            let stopped = futures::future::join_all(stops).await;
            for (d, ok) in self.distributor.iter().zip(stopped) {
                if !ok {
                    tracing::warn!(topic = %d.topic, "the distributor did not stop within the grace period");
                }
            }
            let stopped = self
                .root
                .call(
                    |reply| SupervisorMsg::TerminateChild("distributor".into(), Some(reply)),
                    Some(Duration::from_secs(15)),
                )
                .await;
            if let Err(e) = stopped {
                tracing::warn!(error = %e, "the distributor supervisor did not confirm its stop");
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        let mut flushed = false;
        loop {
            if self.sinks.handles().iter().all(|h| h.is_drained()) {
                flushed = true;
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sinks: Vec<SinkSnapshot> = self.sinks.handles().iter().map(|h| h.snapshot()).collect();
        for s in &sinks {
            if s.queue_len + s.in_flight > 0 {
                tracing::warn!(sink = %s.name, queued = s.queue_len, in_flight = s.in_flight, "undelivered at shutdown");
            }
        }
        self.root.stop(Some("shutdown".into()));
        let mut root_done = self.root_done;
        if tokio::time::timeout(Duration::from_secs(15), &mut root_done).await.is_err() {
            tracing::warn!("the supervision tree did not stop within 15s");
            root_done.abort();
        }
        self.sampler.abort();
        // The sink actors gave back what was in flight: a sink with a spill keeps what it
        // still holds on disk, for the next run.
        let mut sinks = sinks;
        for (h, snap) in self.sinks.handles().iter().zip(sinks.iter_mut()) {
            let kept = h.spill_remaining();
            if kept > 0 {
                tracing::info!(sink = %h.name, kept, "undelivered observations kept in the disk spill");
            }
            if kept > 0 || snap.spill.is_some() {
                *snap = h.snapshot();
            }
        }
        let _ = self.http_stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.http_task).await;
        tracing::info!(flushed, "stopped");
        ShutdownReport { sinks, flushed }
    }
}

/// Run until `shutdown` resolves (then stop gracefully) or the root supervisor gives up.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<ShutdownReport, RunError> {
    let mut rt = Runtime::start(config).await?;
    tokio::pin!(shutdown);
    let ended = tokio::select! {
        () = &mut shutdown => None,
        r = &mut rt.root_done => Some(r),
    };
    match ended {
        None => Ok(rt.shutdown().await),
        Some(r) => {
            let reason = match (r, rt.tree.root.escalated()) {
                (_, Some(f)) => f.reason,
                (Err(e), None) => e.to_string(),
                (Ok(()), None) => "stopped".to_string(),
            };
            rt.sampler.abort();
            let _ = rt.http_stop.send(());
            Err(RunError::RootFailed(reason))
        }
    }
}
