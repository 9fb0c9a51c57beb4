//! Road traffic on the main axes around Fort-de-France and Le Lamentin.
//!
//! Demand = AADT of the road x hourly profile (weekday rush hours, lighter weekends) x
//! OU noise. Hourly capacity is set so that the weekday peak reaches the road's published
//! saturation ratio. Speed follows a BPR volume-delay curve, the measured flow saturates
//! smoothly at capacity, and loop occupancy follows from flow / speed. Random incidents cut
//! capacity for tens of minutes.

use super::{event_probability, id_unit, ou, traffic_demand, weekday_peak_share, StepCtx};
use crate::rng::Rng;
use crate::values::Values;
use serde::{Deserialize, Serialize};

/// `traffic.aadt.A1_Dillon_to_airport` (vehicles/day, both directions).
const AADT_A1: f64 = 140_000.0;
/// `traffic.aadt.RN5_north_Carrere_to_Ducos`.
const AADT_RN5: f64 = 84_000.0;
/// `traffic.aadt.RN1_west_Place_dArmes_to_Mangot_Vulcin`.
const AADT_RN1: f64 = 64_000.0;
/// `traffic.aadt.Rocade_RD41` (older press figure).
const AADT_ROCADE: f64 = 80_000.0;
/// Secondary roads outside the agglomeration: no count found; assumed a quarter of RN1 west.
const AADT_SECONDARY: f64 = AADT_RN1 / 4.0;
/// `traffic.saturation.Dillon_to_canal_du_Lamentin` (volume/capacity).
const SATURATION_A1: f64 = 1.36;
/// `traffic.saturation.airport_to_Ducos_RN5`.
const SATURATION_RN5: f64 = 1.10;
/// `traffic.saturation.Mahault_to_Mangot_Vulcin`.
const SATURATION_RN1: f64 = 0.99;
/// Rocade and secondary roads: not published; assumptions.
const SATURATION_ROCADE: f64 = 1.0;
const SATURATION_SECONDARY: f64 = 0.8;
/// Rocade speed limits 50/60 km/h (SOURCES.md §4, Bondamanjak); other free-flow speeds are
/// assumptions (no source in the reference file).
const FREE_SPEED_ROCADE: f64 = 55.0;

/// BPR volume-delay curve `v = v0 / (1 + ALPHA (V/C)^BETA)`; alpha raised from the classic
/// 0.15 to 1.0 so that the A1 at saturation 1.36 crawls at ~20 km/h as reported at peaks.
const BPR_ALPHA: f64 = 1.0;
const BPR_BETA: i32 = 4;
/// Effective vehicle length + loop length for occupancy (km).
const EFFECTIVE_LENGTH_KM: f64 = 0.0065;
/// Relative demand noise: OU with 20 min time constant, 8 % standard deviation.
const DEMAND_TAU_S: f64 = 1200.0;
const DEMAND_SIGMA: f64 = 0.08;
/// Speed noise (km/h): 5 min time constant, 2.5 km/h.
const SPEED_TAU_S: f64 = 300.0;
const SPEED_SIGMA: f64 = 2.5;
/// Incidents: about one every 4 days per sensor, twice as likely on a saturated road.
const INCIDENT_RATE_PER_S: f64 = 0.25 / 86_400.0;
const INCIDENT_MIN_MINUTES: f64 = 20.0;
const INCIDENT_MAX_MINUTES: f64 = 90.0;

/// A road incident (accident, breakdown) near the sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub remaining_minutes: f64,
    /// Share of the capacity left open, e.g. 0.5 when one lane of two is blocked.
    pub capacity_factor: f64,
}

/// State of a traffic counter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficState {
    /// `"A1"`, `"RN5"`, `"RN1"`, `"Rocade"` or `"secondary"`.
    pub road: String,
    /// Annual average daily traffic of the road (vehicles/day).
    pub aadt: f64,
    /// Published volume/capacity ratio at the weekday peak.
    pub saturation: f64,
    pub lanes: u32,
    pub free_flow_speed: f64,
    /// Vehicles/h the section can carry (all lanes).
    pub hourly_capacity: f64,
    pub demand_noise: f64,
    pub speed_noise: f64,
    pub vehicle_flow: f64,
    pub average_speed: f64,
    pub occupancy: f64,
    pub congestion_ratio: f64,
    pub incident: Option<Incident>,
    pub incidents_total: u64,
}

impl TrafficState {
    pub(crate) fn new(spec: &crate::SensorSpec) -> TrafficState {
        let pick = id_unit(spec, "road");
        let (road, aadt, saturation, lanes, free) = match super::commune_code(spec) {
            Some("97209") if pick < 1.0 / 3.0 => ("A1", AADT_A1, SATURATION_A1, 4, 90.0),
            Some("97209") if pick < 2.0 / 3.0 => ("Rocade", AADT_ROCADE, SATURATION_ROCADE, 4, FREE_SPEED_ROCADE),
            Some("97209") | Some("97229") => ("RN1", AADT_RN1, SATURATION_RN1, 4, 70.0),
            Some("97213") if pick < 0.5 => ("A1", AADT_A1, SATURATION_A1, 4, 90.0),
            Some("97213") | Some("97207") => ("RN5", AADT_RN5, SATURATION_RN5, 4, 80.0),
            _ => ("secondary", AADT_SECONDARY, SATURATION_SECONDARY, 2, 60.0),
        };
        let hourly_capacity = aadt * super::WEEKDAY_FACTOR * weekday_peak_share() / saturation;
        TrafficState {
            road: road.to_owned(),
            aadt,
            saturation,
            lanes,
            free_flow_speed: free,
            hourly_capacity,
            demand_noise: 0.0,
            speed_noise: 0.0,
            vehicle_flow: 0.0,
            average_speed: free,
            occupancy: 0.0,
            congestion_ratio: 0.0,
            incident: None,
            incidents_total: 0,
        }
    }

    pub(crate) fn step(&mut self, ctx: &StepCtx, rng: &mut Rng) -> Values {
        let dt = ctx.dt_s();
        self.demand_noise = ou(self.demand_noise, 0.0, DEMAND_TAU_S, DEMAND_SIGMA, ctx.dt, rng);
        self.speed_noise = ou(self.speed_noise, 0.0, SPEED_TAU_S, SPEED_SIGMA, ctx.dt, rng);

        // Incidents: age the current one, maybe start a new one.
        if let Some(inc) = &mut self.incident {
            inc.remaining_minutes -= dt / 60.0;
            if inc.remaining_minutes <= 0.0 {
                self.incident = None;
            }
        }
        let pressure = if self.congestion_ratio > 0.9 { 2.0 } else { 1.0 };
        let p = event_probability(INCIDENT_RATE_PER_S * pressure, dt);
        // Always draw, so the stream does not depend on whether an incident is active.
        let (u, duration, factor) =
            (rng.uniform(), rng.range(INCIDENT_MIN_MINUTES, INCIDENT_MAX_MINUTES), rng.range(0.4, 0.75));
        if self.incident.is_none() && u < p {
            self.incident = Some(Incident { remaining_minutes: duration, capacity_factor: factor });
            self.incidents_total += 1;
        }

        let demand = (traffic_demand(self.aadt, &ctx.local) * (1.0 + self.demand_noise)).max(0.0);
        let capacity = self.hourly_capacity * self.incident.as_ref().map_or(1.0, |i| i.capacity_factor);
        let ratio = demand / capacity;
        let bpr = 1.0 + BPR_ALPHA * ratio.powi(BPR_BETA);
        let speed = (self.free_flow_speed / bpr + self.speed_noise).clamp(3.0, self.free_flow_speed + 15.0);
        // Smooth minimum of demand and capacity: what the loops can actually count.
        let flow = demand / (1.0 + ratio.powi(6)).powf(1.0 / 6.0);
        let density_per_lane = flow / f64::from(self.lanes.max(1)) / speed;
        let occupancy = (density_per_lane * EFFECTIVE_LENGTH_KM * 100.0).min(100.0);

        self.vehicle_flow = flow;
        self.average_speed = speed;
        self.occupancy = occupancy;
        self.congestion_ratio = ratio;
        Values::from([flow, speed, occupancy, ratio])
    }
}
