//! [`Twin`]: one sensor's spec, PRNG and model state, advanced step by step.

use crate::clock::LocalTime;
use crate::kind::SensorKind;
use crate::models::{
    air_quality::AirQualityState, light::LightState, noise::NoiseState, parking::ParkingState, traffic::TrafficState,
    weather::WeatherState, StepCtx,
};
use crate::observation::Observation;
use crate::rng::{fnv1a64, mix, Rng};
use crate::spec::SensorSpec;
use crate::values::Values;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The model-specific state of a twin, tagged `"model"` when serialized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "kebab-case")]
pub enum ModelState {
    Traffic(TrafficState),
    AirQuality(AirQualityState),
    Parking(ParkingState),
    Noise(NoiseState),
    Weather(WeatherState),
    Light(LightState),
}

impl ModelState {
    fn new(spec: &SensorSpec, seed: u64) -> ModelState {
        match spec.kind {
            SensorKind::Traffic => ModelState::Traffic(TrafficState::new(spec)),
            SensorKind::AirQuality => ModelState::AirQuality(AirQualityState::new(spec, seed)),
            SensorKind::Parking => ModelState::Parking(ParkingState::new(spec)),
            SensorKind::Noise => ModelState::Noise(NoiseState::new(spec)),
            SensorKind::Weather => ModelState::Weather(WeatherState::new()),
            SensorKind::Light => ModelState::Light(LightState::new(spec)),
        }
    }

    fn step(&mut self, ctx: &StepCtx, rng: &mut Rng) -> Values {
        match self {
            ModelState::Traffic(s) => s.step(ctx, rng),
            ModelState::AirQuality(s) => s.step(ctx, rng),
            ModelState::Parking(s) => s.step(ctx, rng),
            ModelState::Noise(s) => s.step(ctx, rng),
            ModelState::Weather(s) => s.step(ctx, rng),
            ModelState::Light(s) => s.step(ctx, rng),
        }
    }
}

/// A sensor twin. Deterministic: the same seed, spec and step times give bit-identical
/// observations, and a serialized twin restored later continues exactly where it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Twin {
    spec: SensorSpec,
    seq: u64,
    rng: Rng,
    state: ModelState,
    last_observed_at: Option<DateTime<Utc>>,
}

impl Twin {
    /// A fresh twin. Its random stream is `mix(seed, FNV-1a(spec.id))`, so sensors of one
    /// fleet seed are independent and stable; regional events (dust, sargassum) use `seed`
    /// itself so that all sensors of the fleet share them.
    pub fn new(spec: SensorSpec, seed: u64) -> Twin {
        let rng = Rng::new(mix(seed, fnv1a64(spec.id.as_bytes())));
        let state = ModelState::new(&spec, seed);
        Twin { spec, seq: 0, rng, state, last_observed_at: None }
    }

    /// Advances the model from its last step to `at` and returns the observation.
    ///
    /// The first step initialises the model from the time of day. A step whose `at` is not
    /// after the previous one advances nothing (`dt = 0`) but still yields an observation.
    /// Values are clamped into their [`Quantity`](crate::Quantity) range and rounded to
    /// 3 decimals (so the JSON encoding stays short and round-trips exactly).
    pub fn step(&mut self, at: DateTime<Utc>) -> Observation {
        let dt = self.last_observed_at.map(|last| {
            let d = at.signed_duration_since(last);
            (d.num_seconds() as f64 + f64::from(d.subsec_nanos()) * 1e-9).max(0.0)
        });
        let ctx = StepCtx { at, local: LocalTime::of(at), dt };
        let mut values = self.state.step(&ctx, &mut self.rng);
        for (q, v) in self.spec.kind.quantities().iter().zip(values.iter_mut()) {
            let x = if v.is_finite() { v.clamp(q.min, q.max) } else { q.min };
            *v = ((x * 1000.0).round() / 1000.0).clamp(q.min, q.max);
        }
        self.seq += 1;
        self.last_observed_at = Some(at);
        Observation {
            sensor_id: self.spec.id.clone(),
            kind: self.spec.kind,
            seq: self.seq,
            observed_at: at,
            location: self.spec.location,
            district: self.spec.district.clone(),
            values,
        }
    }

    /// Number of observations produced so far (the last observation's `seq`).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn spec(&self) -> &SensorSpec {
        &self.spec
    }

    pub fn state(&self) -> &ModelState {
        &self.state
    }

    pub fn last_observed_at(&self) -> Option<DateTime<Utc>> {
        self.last_observed_at
    }
}
