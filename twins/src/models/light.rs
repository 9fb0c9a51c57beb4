//! Street lighting: LED luminaires switched by astronomical clocks at sunset and sunrise.
//!
//! On from sunset to sunrise (interpolated from the reference table for the 15th of each
//! month), full power in the evening and dimmed in the dead of night, 0 W when off. Rated
//! power is fixed per sensor from its id hash within the vendor ranges of the reference.

use super::{id_unit, in_agglomeration, ou, StepCtx};
use crate::clock::LocalTime;
use crate::rng::Rng;
use crate::values::Values;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// `weather.sunrise_sunset.on_15th_of_month_sunrise_sunset` (local time, hours).
const SUNRISE_H: [f64; 12] = [
    6.0 + 32.0 / 60.0,
    6.0 + 29.0 / 60.0,
    6.0 + 13.0 / 60.0,
    5.0 + 51.0 / 60.0,
    5.0 + 37.0 / 60.0,
    5.0 + 35.0 / 60.0,
    5.0 + 42.0 / 60.0,
    5.0 + 50.0 / 60.0,
    5.0 + 53.0 / 60.0,
    5.0 + 55.0 / 60.0,
    6.0 + 5.0 / 60.0,
    6.0 + 21.0 / 60.0,
];
const SUNSET_H: [f64; 12] = [
    17.0 + 53.0 / 60.0,
    18.0 + 8.0 / 60.0,
    18.0 + 15.0 / 60.0,
    18.0 + 18.0 / 60.0,
    18.0 + 24.0 / 60.0,
    18.0 + 34.0 / 60.0,
    18.0 + 38.0 / 60.0,
    18.0 + 28.0 / 60.0,
    18.0 + 6.0 / 60.0,
    17.0 + 45.0 / 60.0,
    17.0 + 33.0 / 60.0,
    17.0 + 38.0 / 60.0,
];
/// `public_lighting.led_luminaire_power.vendor_ranges_W`: `small_roads` 30-60 W and
/// `moderate` 80-120 W (agglomeration main roads).
const SMALL_ROAD_W: (f64, f64) = (30.0, 60.0);
const MAIN_ROAD_W: (f64, f64) = (80.0, 120.0);
/// Dimming: no Martinique schedule was found (`public_lighting.switching.note`); a common
/// telemanaged schedule is assumed: 100 % until 22:30, 60 % until 04:30, then 100 %.
const DIM_FROM_H: f64 = 22.5;
const DIM_UNTIL_H: f64 = 4.5;
const DIM_LEVEL: f64 = 60.0;
/// Burning hours already done at the start: the LED programme ran 2019-2023
/// (`public_lighting.martinique_stock_and_programme`), ~4 400 h a year, so up to ~25 000 h.
const MAX_INITIAL_BURNING_HOURS: f64 = 25_000.0;
/// Sub-sampling step (s) to integrate burning hours over long steps.
const INTEGRATION_STEP_S: i64 = 300;
const MAX_INTEGRATION_SAMPLES: i64 = 200_000;

/// State of a street-light controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LightState {
    /// `"main-road"` or `"small-road"`.
    pub road_class: String,
    pub rated_power: f64,
    pub on: bool,
    pub dimming: f64,
    pub power: f64,
    pub burning_hours: f64,
    /// Today's switching times (local hours), as the astronomical clock computes them.
    pub sunrise_hour: f64,
    pub sunset_hour: f64,
    pub driver_noise: f64,
}

impl LightState {
    pub(crate) fn new(spec: &crate::SensorSpec) -> LightState {
        let main = in_agglomeration(spec);
        let (lo, hi) = if main { MAIN_ROAD_W } else { SMALL_ROAD_W };
        LightState {
            road_class: if main { "main-road" } else { "small-road" }.to_owned(),
            rated_power: (lo + (hi - lo) * id_unit(spec, "rated-power")).round(),
            on: false,
            dimming: 0.0,
            power: 0.0,
            burning_hours: (MAX_INITIAL_BURNING_HOURS * id_unit(spec, "burning-hours")).round(),
            sunrise_hour: 0.0,
            sunset_hour: 0.0,
            driver_noise: 0.0,
        }
    }

    pub(crate) fn step(&mut self, ctx: &StepCtx, rng: &mut Rng) -> Values {
        self.driver_noise = ou(self.driver_noise, 0.0, 600.0, 0.01, ctx.dt, rng);
        if let Some(dt) = ctx.dt {
            self.burning_hours += on_hours_between(ctx.at, dt);
        }
        let (on, sunrise, sunset) = switched_on(&ctx.local);
        self.on = on;
        self.sunrise_hour = sunrise;
        self.sunset_hour = sunset;
        let h = ctx.local.hour;
        self.dimming = match (on, !(DIM_UNTIL_H..DIM_FROM_H).contains(&h)) {
            (false, _) => 0.0,
            (true, true) => DIM_LEVEL,
            (true, false) => 100.0,
        };
        self.power = if on { self.rated_power * self.dimming / 100.0 * (1.0 + self.driver_noise) } else { 0.0 };
        Values::from([if on { 1.0 } else { 0.0 }, self.power, self.dimming, self.burning_hours])
    }
}

/// Whether the astronomical clock has the lamp on, with today's sunrise and sunset.
fn switched_on(local: &LocalTime) -> (bool, f64, f64) {
    let sunrise = local.monthly(&SUNRISE_H);
    let sunset = local.monthly(&SUNSET_H);
    (local.hour >= sunset || local.hour < sunrise, sunrise, sunset)
}

/// Hours the lamp was on during the `dt_s` seconds before `at` (midpoint sampling).
fn on_hours_between(at: DateTime<Utc>, dt_s: f64) -> f64 {
    if dt_s <= 0.0 {
        return 0.0;
    }
    let total_s = dt_s.min(MAX_INTEGRATION_SAMPLES as f64 * INTEGRATION_STEP_S as f64);
    let samples = ((total_s / INTEGRATION_STEP_S as f64).ceil() as i64).max(1);
    let slice_s = total_s / samples as f64;
    let on = (0..samples)
        .filter(|i| {
            let back_ms = ((*i as f64 + 0.5) * slice_s * 1000.0) as i64;
            switched_on(&LocalTime::of(at - Duration::milliseconds(back_ms))).0
        })
        .count();
    // Beyond the integration window (~1.9 years) assume the long-run half of the time.
    let on_s = on as f64 * slice_s + (dt_s - total_s) * 0.5;
    on_s / 3600.0
}
