//! The supervision tree's twins half: a twins supervisor with one district supervisor
//! per district, each supervising that district's sensor actors (one-for-one). Every actor
//! gets its entry in the [`Directory`] as the tree is built.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use ractor::{Actor, ActorCell, SpawnErr};
use supervision::{
    ChildSpec, Restart, SupervisionObserver, Supervisor, SupervisorArgs, SupervisorSpec, SupervisorStats,
};

use super::{District, SensorActor, SensorArgs, SensorContext, SensorSlot};
use crate::actors::{ActorEntry, ActorKind, Directory};
use crate::config::SensorConfig;

/// How many children the twins and district supervisors start at once: their children
/// (districts, sensors) are independent of each other.
const START_CONCURRENCY: usize = 64;

/// The supervisors' shared views, for readers (inspection, tests).
#[derive(Clone, Default)]
pub struct TwinsTree {
    pub twins: SupervisorStats,
    /// By district name.
    pub districts: BTreeMap<String, SupervisorStats>,
}

/// A child spec that spawns a nested [`Supervisor`] and records its cell in its entry.
pub fn supervisor_child(
    entry: Arc<ActorEntry>,
    args: impl Fn() -> SupervisorArgs + Send + Sync + 'static,
) -> ChildSpec {
    let id = entry.name.clone();
    ChildSpec::new(id, "supervisor", Restart::Permanent, move |parent: ActorCell| {
        let args = args();
        let entry = entry.clone();
        spawn_attached(entry, async move {
            let (sup, _) = Actor::spawn_linked(None, Supervisor, args, parent).await?;
            Ok(sup.get_cell())
        })
    })
}

/// Await a spawn and attach the new cell to the directory entry.
pub async fn spawn_attached(
    entry: Arc<ActorEntry>,
    spawn: impl Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
) -> Result<ActorCell, SpawnErr> {
    let cell = spawn.await?;
    entry.attach(cell.clone());
    Ok(cell)
}

/// The child spec of the twins supervisor (path `{parent}/twins`), with entries for it,
/// its districts and their sensors.
pub fn twins_supervisor(
    parent: &str,
    parent_stats: &SupervisorStats,
    sensors: &[SensorConfig],
    ctx: &SensorContext,
    spec_of: impl Fn(&str) -> SupervisorSpec,
    observer: Arc<dyn SupervisionObserver>,
    dir: &mut Directory,
) -> (ChildSpec, TwinsTree) {
    let mut tree = TwinsTree::default();
    let twins_path = format!("{parent}/twins");
    let twins_entry = dir.add(ActorEntry::new(
        twins_path.clone(),
        "twins".into(),
        ActorKind::Supervisor,
        Some(parent.into()),
        Some(parent_stats.clone()),
        Some(tree.twins.clone()),
        Default::default(),
    ));
    let mut by_district: BTreeMap<String, Vec<&SensorConfig>> = BTreeMap::new();
    for s in sensors {
        by_district.entry(s.district.clone()).or_default().push(s);
    }
    let mut districts = Vec::new();
    for (district, members) in by_district {
        let stats = SupervisorStats::default();
        tree.districts.insert(district.clone(), stats.clone());
        let path = format!("{twins_path}/{district}");
        let entry = dir.add(ActorEntry::new(
            path.clone(),
            district.as_str().into(),
            ActorKind::Supervisor,
            Some(twins_path.as_str().into()),
            Some(tree.twins.clone()),
            Some(stats.clone()),
            Default::default(),
        ));
        let mut slots = Vec::with_capacity(members.len());
        let parent: Arc<str> = path.as_str().into();
        for s in members {
            // One allocation of the id, shared by the twin's key, this entry and the child spec.
            let (id, twin) = match ctx.registry.twin(&s.id) {
                Some((id, twin)) => (id, Some(twin)),
                None => (s.id.as_str().into(), None),
            };
            let sensor_entry = dir.add(ActorEntry::new(
                format!("{path}/{id}"),
                id,
                ActorKind::Sensor,
                Some(parent.clone()),
                Some(stats.clone()),
                None,
                Default::default(),
            ));
            slots.push(SensorSlot::new(sensor_entry, s.interval, s.kind, twin));
        }
        let shared = District::new(district.clone(), ctx.clone(), slots);
        let spec = SupervisorSpec { start_concurrency: START_CONCURRENCY, ..spec_of(&format!("district:{district}")) };
        let observer = observer.clone();
        // The sensors' child specs are made when the district supervisor (re)starts, from
        // what the district shares: nothing per sensor is kept beside it.
        districts.push(supervisor_child(entry, move || SupervisorArgs {
            spec: spec.clone(),
            children: sensor_children(&shared),
            observer: Some(observer.clone()),
            stats: stats.clone(),
        }));
    }
    let twins_stats = tree.twins.clone();
    let spec = SupervisorSpec { start_concurrency: START_CONCURRENCY, ..spec_of("twins") };
    let child = supervisor_child(twins_entry, move || SupervisorArgs {
        spec: spec.clone(),
        children: districts.clone(),
        observer: Some(observer.clone()),
        stats: twins_stats.clone(),
    });
    (child, tree)
}

/// The child specs of a district's sensor actors, in the district's order.
fn sensor_children(district: &Arc<District>) -> Vec<ChildSpec> {
    (0..district.sensors.len() as u32).map(|i| sensor_child(district, i)).collect()
}

/// The child spec of one sensor actor.
fn sensor_child(district: &Arc<District>, index: u32) -> ChildSpec {
    let id = district.sensors[index as usize].entry.name.clone();
    let district = district.clone();
    ChildSpec::new(id, "sensor", Restart::Permanent, move |sup| {
        let args = SensorArgs { district: district.clone(), index };
        async move {
            let (actor, _) = Actor::spawn_linked(None, SensorActor, args, sup).await?;
            Ok(actor.get_cell())
        }
    })
}
