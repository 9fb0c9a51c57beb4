//! The six sensor models, one file each, plus what they share: the step context,
//! Ornstein-Uhlenbeck noise, event probabilities, the island's traffic profile and
//! the site classification of a sensor from its commune.
//!
//! Every model is a plain state struct with public fields (shown by the inspection API)
//! and a `step` that advances it by `dt` seconds. Noise uses the exact OU update, so any
//! `dt` from 1 s to days is valid, and events start with probability `1 - exp(-rate * dt)`.

pub mod air_quality;
pub mod light;
pub mod noise;
pub mod parking;
pub mod traffic;
pub mod weather;

use crate::clock::{hourly, LocalTime};
use crate::geo;
use crate::rng::{fnv1a64, mix, unit_f64, Rng};
use crate::spec::SensorSpec;
use chrono::{DateTime, Utc, Weekday};

/// What a model needs to advance one step.
pub(crate) struct StepCtx {
    pub at: DateTime<Utc>,
    pub local: LocalTime,
    /// Seconds since the previous step; `None` on the first step (initialise from the
    /// time of day, stationary noise).
    pub dt: Option<f64>,
}

impl StepCtx {
    /// Seconds elapsed, 0 on the first step.
    pub fn dt_s(&self) -> f64 {
        self.dt.unwrap_or(0.0)
    }
}

/// Exact Ornstein-Uhlenbeck update of `x` towards `mean` with time constant `tau_s` and
/// stationary standard deviation `sigma`. On the first step (`dt == None`) it draws from
/// the stationary distribution. For small `dt` the increment scales as `sigma*sqrt(2 dt/tau)`.
pub(crate) fn ou(x: f64, mean: f64, tau_s: f64, sigma: f64, dt: Option<f64>, rng: &mut Rng) -> f64 {
    let g = rng.gaussian();
    match dt {
        None => mean + sigma * g,
        Some(dt) => {
            let a = (-dt.max(0.0) / tau_s).exp();
            mean + (x - mean) * a + sigma * (1.0 - a * a).max(0.0).sqrt() * g
        }
    }
}

/// Probability that a Poisson event with `rate_per_s` happens within `dt_s` seconds.
pub(crate) fn event_probability(rate_per_s: f64, dt_s: f64) -> f64 {
    1.0 - (-(rate_per_s * dt_s).max(0.0)).exp()
}

/// A per-sensor number in `[0, 1)` from the sensor id and a tag, independent of the seed:
/// used for fixed characteristics (capacity, rated power...).
pub(crate) fn id_unit(spec: &SensorSpec, tag: &str) -> f64 {
    unit_f64(mix(fnv1a64(spec.id.as_bytes()), fnv1a64(tag.as_bytes())))
}

// ---- Traffic profile shared by traffic, air quality (NO2) and noise -------------------

/// Share (%) of the daily volume per hour on a weekday. Only the 07:00-08:00 core peak is
/// official (`traffic.rush_hours.morning_peak_core`); the shape of the evening peak follows
/// `traffic.rush_hours.evening_congestion_window_third_party` (16:00-19:30). Hourly counts
/// were not found (`traffic.rush_hours.note`), so the rest of the curve is an assumption.
const WEEKDAY_SHARE: [f64; 24] = [
    0.9, 0.5, 0.4, 0.4, 0.8, 2.6, 6.0, 8.2, 7.2, 5.6, 5.0, 5.0, //
    5.2, 5.0, 5.3, 6.2, 7.3, 7.6, 6.4, 4.6, 3.2, 2.4, 1.7, 1.2,
];
/// Saturday: shopping late morning, no commuter peaks (assumption).
const SATURDAY_SHARE: [f64; 24] = [
    1.5, 1.0, 0.8, 0.6, 0.7, 1.5, 3.0, 4.5, 5.8, 6.8, 7.2, 7.2, //
    6.8, 6.0, 5.8, 6.0, 6.3, 6.4, 6.0, 5.0, 3.8, 3.0, 2.6, 2.0,
];
/// Sunday with the evening return flow toward Fort-de-France (`traffic.rush_hours.sunday_evening`).
const SUNDAY_SHARE: [f64; 24] = [
    2.0, 1.5, 1.2, 0.9, 0.8, 1.2, 2.2, 3.2, 4.5, 6.0, 6.8, 7.0, //
    6.6, 5.8, 5.6, 6.0, 6.8, 7.4, 7.2, 6.0, 4.5, 3.4, 2.4, 1.6,
];
/// Daily volume on Saturday / Sunday relative to a weekday ("weekends lighter"; assumption).
const SATURDAY_FACTOR: f64 = 0.85;
const SUNDAY_FACTOR: f64 = 0.65;
/// A weekday carries `7 / (5 + 0.85 + 0.65)` times the AADT, so the week averages to the AADT.
const WEEKDAY_FACTOR: f64 = 7.0 / (5.0 + SATURDAY_FACTOR + SUNDAY_FACTOR);

fn share_fraction(table: &[f64; 24], hour: f64) -> f64 {
    hourly(table, hour) / table.iter().sum::<f64>()
}

/// Expected vehicles per hour at `local` on a road with the given AADT (both directions).
pub(crate) fn traffic_demand(aadt: f64, local: &LocalTime) -> f64 {
    let (table, factor) = match local.weekday {
        Weekday::Sat => (&SATURDAY_SHARE, SATURDAY_FACTOR),
        Weekday::Sun => (&SUNDAY_SHARE, SUNDAY_FACTOR),
        _ => (&WEEKDAY_SHARE, 1.0),
    };
    aadt * WEEKDAY_FACTOR * factor * share_fraction(table, local.hour)
}

/// Highest hourly share of a weekday (the 07:00 peak) as a fraction of the daily volume.
pub(crate) fn weekday_peak_share() -> f64 {
    WEEKDAY_SHARE.iter().copied().fold(0.0, f64::max) / WEEKDAY_SHARE.iter().sum::<f64>()
}

/// Traffic relative to the weekday daytime (06-18 h) mean: about 1 by day, 0.07 at 3:00.
pub(crate) fn traffic_relative(local: &LocalTime) -> f64 {
    let day_mean = WEEKDAY_SHARE[6..18].iter().sum::<f64>() / 12.0 / WEEKDAY_SHARE.iter().sum::<f64>();
    traffic_demand(1.0, local) / (WEEKDAY_FACTOR * day_mean)
}

/// Traffic relative to its all-week mean (averages 1 over a week).
pub(crate) fn traffic_vs_mean(local: &LocalTime) -> f64 {
    traffic_demand(24.0, local)
}

// ---- Site classification -----------------------------------------------------------------

/// INSEE codes of the CACEM agglomeration core with the A1/N1/rocade traffic:
/// Fort-de-France, Le Lamentin, Schœlcher (`air_quality.network.note`, `traffic.aadt`).
const AGGLOMERATION: [&str; 3] = ["97209", "97213", "97229"];

/// Communes on the Atlantic coast exposed to sargassum strandings, "from Basse-Pointe to
/// Sainte-Anne ... plus Le Diamant" (`sargassum_h2s.seasonality.note`), with Le Robert,
/// Le François and Le Vauclin the most exposed (weight 1.0, others 0.6).
const ATLANTIC: [(&str, f64); 11] = [
    ("97222", 1.0), // Le Robert
    ("97210", 1.0), // Le François
    ("97232", 1.0), // Le Vauclin
    ("97203", 0.6), // Basse-Pointe
    ("97214", 0.6), // Le Lorrain
    ("97216", 0.6), // Le Marigot
    ("97228", 0.6), // Sainte-Marie
    ("97230", 0.6), // La Trinité
    ("97217", 0.6), // Le Marin (Cap Macré)
    ("97226", 0.6), // Sainte-Anne (Cap Chevalier, Anse aux Bois)
    ("97206", 0.6), // Le Diamant
];
/// For a district the geography does not know: east of this longitude counts as Atlantic.
const ATLANTIC_FALLBACK_LON: f64 = -60.95;

/// Whether the sensor is in the Fort-de-France / Lamentin / Schœlcher agglomeration.
pub(crate) fn in_agglomeration(spec: &SensorSpec) -> bool {
    geo::district(&spec.district).is_some_and(|d| AGGLOMERATION.contains(&d.code.as_str()))
}

/// Exposure of the site to sargassum H2S, 0 for inland / Caribbean-coast communes.
pub(crate) fn atlantic_exposure(spec: &SensorSpec) -> f64 {
    match geo::district(&spec.district) {
        Some(d) => ATLANTIC.iter().find(|(code, _)| *code == d.code).map_or(0.0, |(_, w)| *w),
        None if spec.location.lon > ATLANTIC_FALLBACK_LON => 0.6,
        None => 0.0,
    }
}

/// INSEE code of the sensor's commune, if known.
pub(crate) fn commune_code(spec: &SensorSpec) -> Option<&'static str> {
    geo::district(&spec.district).map(|d| d.code.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn local(y: i32, m: u32, d: u32, h: u32, min: u32) -> LocalTime {
        // Local time = UTC - 4.
        LocalTime::of(Utc.with_ymd_and_hms(y, m, d, h + 4, min, 0).single().expect("date"))
    }

    #[test]
    fn weekly_mean_of_demand_is_the_aadt() {
        let start = Utc.with_ymd_and_hms(2026, 3, 2, 4, 0, 0).single().expect("date");
        let n = 7 * 24 * 60;
        let total: f64 = (0..n)
            .map(|i| traffic_demand(100_000.0, &LocalTime::of(start + chrono::Duration::minutes(i))) / 60.0)
            .sum();
        assert!((total / 7.0 - 100_000.0).abs() < 1500.0, "daily mean {}", total / 7.0);
    }

    #[test]
    fn rush_hour_beats_night_and_weekends_are_lighter() {
        // 2026-03-04 is a Wednesday, 2026-03-08 a Sunday.
        assert!(traffic_relative(&local(2026, 3, 4, 7, 30)) > 10.0 * traffic_relative(&local(2026, 3, 4, 3, 0)));
        assert!(traffic_relative(&local(2026, 3, 8, 7, 30)) < traffic_relative(&local(2026, 3, 4, 7, 30)));
    }

    #[test]
    fn ou_is_stationary_for_any_dt() {
        for dt in [1.0, 60.0, 3600.0, 86_400.0] {
            let mut rng = Rng::new(3);
            let mut x = 0.0;
            let (mut sum, mut sq) = (0.0, 0.0);
            let n = 20_000;
            for _ in 0..n {
                x = ou(x, 5.0, 600.0, 2.0, Some(dt), &mut rng);
                sum += x;
                sq += x * x;
            }
            let mean = sum / n as f64;
            let sd = (sq / n as f64 - mean * mean).sqrt();
            let tol = if dt < 60.0 { 1.0 } else { 0.15 };
            assert!((mean - 5.0).abs() < tol, "dt {dt}: mean {mean}");
            if dt >= 3600.0 {
                assert!((sd - 2.0).abs() < 0.1, "dt {dt}: sd {sd}");
            }
        }
    }
}
