//! The supervision tree's twins half: a twins supervisor with one district supervisor
//! per district, each supervising that district's sensor actors (one-for-one).

use std::collections::BTreeMap;
use std::sync::Arc;

use ractor::Actor;
use supervision::{ChildSpec, Restart, Supervisor, SupervisorArgs, SupervisorSpec, SupervisionObserver, SupervisorStats};

use super::{SensorActor, SensorArgs, SensorContext};
use crate::config::{slug, SensorConfig};

/// The supervisors' shared views, for readers (inspection, tests).
#[derive(Clone, Default)]
pub struct TwinsTree {
    pub twins: SupervisorStats,
    /// By district name.
    pub districts: BTreeMap<String, SupervisorStats>,
}

/// The child spec of one sensor actor.
pub fn sensor_child(sensor: &SensorConfig, ctx: &SensorContext) -> ChildSpec {
    let id = sensor.id.clone();
    let interval = sensor.interval;
    let ctx = ctx.clone();
    ChildSpec::new(sensor.id.clone(), "sensor", Restart::Permanent, move |sup| {
        let args = SensorArgs { id: id.clone(), interval, ctx: ctx.clone() };
        async move {
            let (actor, _) = Actor::spawn_linked(None, SensorActor, args, sup).await?;
            Ok(actor.get_cell())
        }
    })
}

/// The child spec of the twins supervisor, and the stats of it and its districts.
pub fn twins_supervisor(
    sensors: &[SensorConfig],
    ctx: &SensorContext,
    spec_of: impl Fn(&str) -> SupervisorSpec,
    observer: Arc<dyn SupervisionObserver>,
) -> (ChildSpec, TwinsTree) {
    let mut by_district: BTreeMap<String, Vec<ChildSpec>> = BTreeMap::new();
    for s in sensors {
        by_district.entry(s.district.clone()).or_default().push(sensor_child(s, ctx));
    }
    let mut tree = TwinsTree::default();
    let mut districts = Vec::new();
    for (district, children) in by_district {
        let stats = SupervisorStats::default();
        tree.districts.insert(district.clone(), stats.clone());
        let spec = spec_of(&format!("district:{}", slug(&district)));
        let observer = observer.clone();
        let children = Arc::new(children);
        districts.push(Supervisor::child_spec(district, "district", Restart::Permanent, move || SupervisorArgs {
            spec: spec.clone(),
            children: children.as_ref().clone(),
            observer: Some(observer.clone()),
            stats: stats.clone(),
        }));
    }
    let twins_stats = tree.twins.clone();
    let spec = spec_of("twins");
    let child = Supervisor::child_spec("twins", "supervisor", Restart::Permanent, move || SupervisorArgs {
        spec: spec.clone(),
        children: districts.clone(),
        observer: Some(observer.clone()),
        stats: twins_stats.clone(),
    });
    (child, tree)
}
