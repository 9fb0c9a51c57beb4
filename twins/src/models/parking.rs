//! Parking occupancy by hour of day.
//!
//! Occupancy relaxes (20 min time constant: cars do not teleport) towards a target that
//! follows an hourly profile, plus OU noise. Fort-de-France sites follow office hours on
//! weekdays with all-day "voitures ventouses" and some evening use; other communes follow a
//! shopping profile. Capacity is fixed per sensor from the hash of its id.

use super::{commune_code, id_unit, ou, StepCtx};
use crate::clock::hourly;
use crate::rng::Rng;
use crate::values::Values;
use chrono::Weekday;
use serde::{Deserialize, Serialize};

/// The Savane car park has 201 places (`parking.fort_de_france_supply_and_rules.Savane_car_park_places`);
/// sensors get a capacity between these bounds. Occupancy rates were not found
/// (`parking.fort_de_france_centre_occupancy`), so the profiles below are assumptions.
const CAPACITY_MIN: f64 = 40.0;
const CAPACITY_MAX: f64 = 400.0;
/// Downtown Fort-de-France on a weekday: office hours, long-stay cars ("véhicules
/// ventouses", `parking.fort_de_france_supply_and_rules.note`) keep nights non-empty.
const DOWNTOWN_WEEKDAY: [f64; 24] = [
    0.15, 0.12, 0.12, 0.12, 0.12, 0.15, 0.30, 0.60, 0.85, 0.92, 0.95, 0.95, //
    0.88, 0.90, 0.93, 0.90, 0.80, 0.60, 0.45, 0.40, 0.38, 0.32, 0.25, 0.18,
];
const DOWNTOWN_SATURDAY: [f64; 24] = [
    0.20, 0.15, 0.12, 0.12, 0.12, 0.13, 0.20, 0.35, 0.55, 0.70, 0.78, 0.78, //
    0.70, 0.55, 0.50, 0.48, 0.45, 0.42, 0.40, 0.40, 0.40, 0.36, 0.30, 0.24,
];
const DOWNTOWN_SUNDAY: [f64; 24] = [
    0.22, 0.18, 0.15, 0.13, 0.12, 0.12, 0.14, 0.18, 0.24, 0.30, 0.34, 0.35, //
    0.32, 0.28, 0.26, 0.26, 0.28, 0.32, 0.35, 0.33, 0.30, 0.27, 0.24, 0.22,
];
/// Shopping / services elsewhere: late-morning and late-afternoon peaks.
const COMMERCIAL_WEEKDAY: [f64; 24] = [
    0.06, 0.05, 0.05, 0.05, 0.05, 0.06, 0.12, 0.30, 0.50, 0.65, 0.72, 0.70, //
    0.62, 0.58, 0.60, 0.66, 0.74, 0.75, 0.60, 0.40, 0.25, 0.15, 0.10, 0.08,
];
const COMMERCIAL_SATURDAY: [f64; 24] = [
    0.08, 0.06, 0.05, 0.05, 0.05, 0.06, 0.12, 0.30, 0.60, 0.80, 0.88, 0.88, //
    0.80, 0.70, 0.68, 0.70, 0.72, 0.68, 0.55, 0.38, 0.25, 0.16, 0.12, 0.10,
];
const COMMERCIAL_SUNDAY: [f64; 24] = [
    0.08, 0.06, 0.05, 0.05, 0.05, 0.05, 0.08, 0.18, 0.35, 0.45, 0.50, 0.48, //
    0.40, 0.30, 0.25, 0.22, 0.22, 0.20, 0.16, 0.12, 0.10, 0.08, 0.08, 0.08,
];
const RELAX_TAU_S: f64 = 1200.0;
const NOISE_TAU_S: f64 = 2700.0;
const NOISE_SIGMA: f64 = 0.05;

/// State of a parking sensor (car park or instrumented street segment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParkingState {
    /// `"downtown"` (Fort-de-France) or `"commercial"`.
    pub profile: String,
    pub capacity: u32,
    /// Occupied fraction, continuous.
    pub occupancy_fraction: f64,
    pub occupancy_noise: f64,
    pub occupied_spots: u32,
}

impl ParkingState {
    pub(crate) fn new(spec: &crate::SensorSpec) -> ParkingState {
        let capacity = (CAPACITY_MIN + (CAPACITY_MAX - CAPACITY_MIN) * id_unit(spec, "capacity")).round() as u32;
        let profile = if commune_code(spec) == Some("97209") { "downtown" } else { "commercial" };
        ParkingState {
            profile: profile.to_owned(),
            capacity,
            occupancy_fraction: 0.0,
            occupancy_noise: 0.0,
            occupied_spots: 0,
        }
    }

    pub(crate) fn step(&mut self, ctx: &StepCtx, rng: &mut Rng) -> Values {
        let downtown = self.profile == "downtown";
        let table = match (downtown, ctx.local.weekday) {
            (true, Weekday::Sat) => &DOWNTOWN_SATURDAY,
            (true, Weekday::Sun) => &DOWNTOWN_SUNDAY,
            (true, _) => &DOWNTOWN_WEEKDAY,
            (false, Weekday::Sat) => &COMMERCIAL_SATURDAY,
            (false, Weekday::Sun) => &COMMERCIAL_SUNDAY,
            (false, _) => &COMMERCIAL_WEEKDAY,
        };
        self.occupancy_noise = ou(self.occupancy_noise, 0.0, NOISE_TAU_S, NOISE_SIGMA, ctx.dt, rng);
        let target = (hourly(table, ctx.local.hour) + self.occupancy_noise).clamp(0.0, 1.0);
        self.occupancy_fraction = match ctx.dt {
            None => target,
            Some(dt) => target + (self.occupancy_fraction - target) * (-dt / RELAX_TAU_S).exp(),
        };
        let capacity = f64::from(self.capacity);
        let occupied = (self.occupancy_fraction * capacity).round().clamp(0.0, capacity);
        self.occupied_spots = occupied as u32;
        let pct = if capacity > 0.0 { occupied / capacity * 100.0 } else { 0.0 };
        Values::from([occupied, capacity - occupied, capacity, pct])
    }
}
