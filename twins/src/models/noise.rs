//! Street noise (A-weighted LAeq and LAmax over the last interval).
//!
//! The level follows the traffic profile around a per-site daytime level, with OU noise and
//! random loud events (horns, two-wheelers, trucks). Events are energy-averaged into the
//! interval, so a 1 s step that contains one is dominated by it while a 15 min step barely
//! moves.

use super::{event_probability, id_unit, in_agglomeration, ou, traffic_relative, StepCtx};
use crate::rng::Rng;
use crate::values::Values;
use serde::{Deserialize, Serialize};

/// Daytime LAeq of a busy urban arterial (65-75 dB(A)) and a quiet residential street
/// (50-55 dB(A)): `noise.typical_street_levels_fort_de_france.note` (general knowledge; no
/// measured level for Fort-de-France was found). Night drops about 8 dB on the arterials
/// (the French road limit values Lden 68 / Ln 62 dB(A), `noise.french_limit_values_road`,
/// are 6 dB apart).
const ARTERIAL_DAY_DB: f64 = 70.0;
const RESIDENTIAL_DAY_DB: f64 = 53.0;
/// Loud events per hour at daytime traffic (assumptions).
const ARTERIAL_EVENTS_PER_HOUR: f64 = 20.0;
const RESIDENTIAL_EVENTS_PER_HOUR: f64 = 4.0;
/// Duration of one loud event (s) and its level above the background (dB).
const EVENT_SECONDS: f64 = 2.0;
const EVENT_MIN_EXCESS_DB: f64 = 10.0;
const EVENT_MAX_EXCESS_DB: f64 = 25.0;

/// State of a sound level meter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseState {
    /// `"arterial"` (agglomeration) or `"residential"`.
    pub site: String,
    /// Site daytime LAeq around which the level moves (dB).
    pub day_level: f64,
    pub level_noise: f64,
    pub laeq: f64,
    pub lamax: f64,
    pub loud_events_total: u64,
}

impl NoiseState {
    pub(crate) fn new(spec: &crate::SensorSpec) -> NoiseState {
        let arterial = in_agglomeration(spec);
        let base = if arterial { ARTERIAL_DAY_DB } else { RESIDENTIAL_DAY_DB };
        NoiseState {
            site: if arterial { "arterial" } else { "residential" }.to_owned(),
            day_level: base + 4.0 * (id_unit(spec, "noise-level") - 0.5),
            level_noise: 0.0,
            laeq: base,
            lamax: base,
            loud_events_total: 0,
        }
    }

    pub(crate) fn step(&mut self, ctx: &StepCtx, rng: &mut Rng) -> Values {
        let dt = ctx.dt_s();
        self.level_noise = ou(self.level_noise, 0.0, 600.0, 1.5, ctx.dt, rng);
        let traffic = traffic_relative(&ctx.local);
        let background = self.day_level + 10.0 * (0.1 + 0.9 * traffic).log10() + self.level_noise;

        let per_hour = if self.site == "arterial" { ARTERIAL_EVENTS_PER_HOUR } else { RESIDENTIAL_EVENTS_PER_HOUR };
        let rate = per_hour * traffic.min(1.5) / 3600.0;
        let (u, excess, jitter) = (rng.uniform(), rng.range(EVENT_MIN_EXCESS_DB, EVENT_MAX_EXCESS_DB), rng.gaussian());
        let (laeq, lamax) = if dt > 0.0 && u < event_probability(rate, dt) {
            self.loud_events_total += 1;
            let peak = background + excess;
            let events = (rate * dt).max(1.0);
            let share = (events * EVENT_SECONDS / dt).min(1.0);
            let energy = (1.0 - share) * 10f64.powf(background / 10.0) + share * 10f64.powf(peak / 10.0);
            (10.0 * energy.log10(), peak)
        } else {
            // Without a loud event the maximum still sits a few dB above the mean.
            (background, background + 3.0 + 1.5 * jitter.abs())
        };
        self.laeq = laeq;
        self.lamax = lamax.max(laeq);
        Values::from([self.laeq, self.lamax])
    }
}
