//! Weather at Le Lamentin climate: temperature, humidity, trade wind, pressure and showers.
//!
//! Temperature = monthly normal + diurnal cycle (minimum near sunrise, maximum at 14:00)
//! spanning the monthly mean diurnal range + slow (synoptic) and fast OU anomalies - rain
//! cooling. Humidity is anti-correlated with temperature around the monthly mean. The trade
//! wind blows from E/ENE at the monthly mean speed, stronger in the afternoon. Showers
//! start as Poisson events whose rate and depth reproduce the monthly rainfall normals and
//! rain-day counts.

use super::{event_probability, ou, StepCtx};
use crate::rng::Rng;
use crate::values::Values;
use serde::{Deserialize, Serialize};
use std::f64::consts::{PI, TAU};

/// `weather.monthly_mean_temperature_normal` (°C, Météo-France 1991-2020, Le Lamentin).
/// Feb, Aug and Nov are not in the reference and are gap-filled (derived): Feb 25.5 (coolest
/// month per the third-party hint in the note), Aug 28.1 (warmest), Nov 26.9 (Oct-Dec mean).
const MEAN_TEMPERATURE: [f64; 12] = [25.7, 25.5, 26.0, 26.7, 27.6, 28.0, 27.9, 28.1, 27.9, 27.6, 26.9, 26.2];
/// Mean diurnal range (°C): April 30.3 - 23.1 = 7.2 from `weather.monthly_mean_max_temperature_normal`
/// and `monthly_mean_min_temperature_normal`; other months max - min of
/// `weather.monthly_min_max_third_party.le_lamentin_climatestotravel_{max,min}`.
const DIURNAL_RANGE: [f64; 12] = [6.6, 7.2, 7.2, 7.2, 6.7, 5.6, 5.6, 6.7, 7.3, 7.8, 7.2, 7.2];
/// `weather.relative_humidity.fort_de_france_monthly_mean` (%, third party).
const MEAN_HUMIDITY: [f64; 12] = [77.0, 76.0, 75.0, 74.0, 75.0, 77.0, 79.0, 81.0, 81.0, 83.0, 82.0, 80.0];
/// Humidity drop per °C above the daily mean: gives ~62 % mid-afternoon and ~88 % before
/// dawn, the Met Office example of `weather.relative_humidity.note` (56-65 % / 70-82 %).
const HUMIDITY_PER_DEGREE: f64 = 3.5;
/// `weather.monthly_mean_wind_speed_normal` (km/h); gaps filled with the pattern of its note
/// (~14-18 km/h in carême and June-July, ~10-11 in Sep-Oct): Feb 15.0, Apr 15.0, May 15.5,
/// Jul 16.5, Aug 13.5, Nov 12.5 (derived).
const MEAN_WIND_KMH: [f64; 12] = [15.1, 15.0, 14.4, 15.0, 15.5, 17.6, 16.5, 13.5, 10.8, 10.4, 12.5, 14.4];
/// `weather.prevailing_wind_direction`: E to ENE trade wind, "draw mostly 60-120°".
const WIND_FROM_DEG: f64 = 80.0;
const WIND_DIRECTION_SIGMA_DEG: f64 = 18.0;
/// `weather.monthly_rainfall_normal` (mm). Aug: 258 mm, third-party hint in the note; Nov:
/// 240 mm gap-filled so that Oct-Nov are the wettest months as Météo-France says; the total
/// (2 021 mm) is within 4 % of `weather.annual_rainfall_normal` (2 090 mm).
const MONTHLY_RAIN_MM: [f64; 12] = [115.2, 83.0, 82.0, 106.0, 138.0, 166.6, 198.1, 258.0, 219.3, 256.7, 240.0, 158.1];
/// `weather.rainy_days.fort_de_france_climatestotravel_days_per_month`.
const RAIN_DAYS: [f64; 12] = [17.0, 12.0, 13.0, 13.0, 15.0, 18.0, 22.0, 21.0, 19.0, 18.0, 18.0, 17.0];
/// Tropical showers (assumptions): 2.5 per rain day, 10-50 min each.
const SHOWERS_PER_RAIN_DAY: f64 = 2.5;
const SHOWER_MIN_MINUTES: f64 = 10.0;
const SHOWER_MAX_MINUTES: f64 = 50.0;
const SHOWER_RATE_SIGMA: f64 = 0.6;
/// Cooling under a shower (°C) and the time constants to reach / lose it.
const RAIN_COOLING: f64 = 2.5;
/// Tropical sea-level pressure, semi-diurnal atmospheric tide (general knowledge, no source
/// in the reference file).
const MEAN_PRESSURE_HPA: f64 = 1015.0;
const PRESSURE_TIDE_HPA: f64 = 1.2;
const DAYS_PER_MONTH: f64 = 30.44;

/// A shower in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shower {
    pub remaining_minutes: f64,
    pub rate_mm_per_h: f64,
}

/// State of a weather station.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeatherState {
    pub temperature: f64,
    pub relative_humidity: f64,
    pub wind_speed: f64,
    pub wind_direction: f64,
    pub pressure: f64,
    pub rain_rate: f64,
    /// Rain since local midnight (mm) and the local day it belongs to.
    pub rainfall_today: f64,
    pub rain_day_index: i64,
    /// Synoptic (days) and short-term (minutes) temperature anomalies (°C).
    pub temperature_anomaly_slow: f64,
    pub temperature_anomaly_fast: f64,
    pub humidity_noise: f64,
    pub wind_noise: f64,
    pub wind_direction_noise: f64,
    pub pressure_anomaly: f64,
    /// Current cooling by rain (°C).
    pub rain_cooling: f64,
    pub shower: Option<Shower>,
}

impl WeatherState {
    pub(crate) fn new() -> WeatherState {
        WeatherState {
            temperature: 0.0,
            relative_humidity: 0.0,
            wind_speed: 0.0,
            wind_direction: WIND_FROM_DEG,
            pressure: MEAN_PRESSURE_HPA,
            rain_rate: 0.0,
            rainfall_today: 0.0,
            rain_day_index: 0,
            temperature_anomaly_slow: 0.0,
            temperature_anomaly_fast: 0.0,
            humidity_noise: 0.0,
            wind_noise: 0.0,
            wind_direction_noise: 0.0,
            pressure_anomaly: 0.0,
            rain_cooling: 0.0,
            shower: None,
        }
    }

    pub(crate) fn step(&mut self, ctx: &StepCtx, rng: &mut Rng) -> Values {
        let local = &ctx.local;
        let dt = ctx.dt_s();
        self.temperature_anomaly_slow = ou(self.temperature_anomaly_slow, 0.0, 3.0 * 86_400.0, 0.7, ctx.dt, rng);
        self.temperature_anomaly_fast = ou(self.temperature_anomaly_fast, 0.0, 1800.0, 0.25, ctx.dt, rng);
        self.humidity_noise = ou(self.humidity_noise, 0.0, 3600.0, 3.0, ctx.dt, rng);
        self.wind_noise = ou(self.wind_noise, 0.0, 3.0 * 3600.0, 0.25, ctx.dt, rng);
        self.wind_direction_noise =
            ou(self.wind_direction_noise, 0.0, 6.0 * 3600.0, WIND_DIRECTION_SIGMA_DEG, ctx.dt, rng);
        self.pressure_anomaly = ou(self.pressure_anomaly, 0.0, 2.0 * 86_400.0, 1.5, ctx.dt, rng);

        let rain_mm = self.rain(ctx, rng);
        if self.rain_day_index != local.day_index {
            self.rain_day_index = local.day_index;
            self.rainfall_today = 0.0;
        }
        self.rainfall_today += rain_mm;
        let raining = self.shower.is_some();
        self.rain_rate = self.shower.as_ref().map_or(0.0, |s| s.rate_mm_per_h);

        // Rain cooling: 10 min to set in, 1 h to fade.
        let (target, tau) = if raining { (RAIN_COOLING, 600.0) } else { (0.0, 3600.0) };
        self.rain_cooling = match ctx.dt {
            None => target,
            Some(_) => target + (self.rain_cooling - target) * (-dt / tau).exp(),
        };

        let diurnal = local.monthly(&DIURNAL_RANGE) * diurnal_shape(local.hour);
        let anomaly = self.temperature_anomaly_slow + self.temperature_anomaly_fast;
        self.temperature = local.monthly(&MEAN_TEMPERATURE) + diurnal + anomaly - self.rain_cooling;
        self.relative_humidity = (local.monthly(&MEAN_HUMIDITY) - HUMIDITY_PER_DEGREE * (diurnal + anomaly)
            + 4.0 * self.rain_cooling
            + self.humidity_noise)
            .clamp(35.0, 100.0);

        let afternoon = 1.0 + 0.25 * (TAU * (local.hour - 13.0) / 24.0).cos();
        let gusts = if raining { 1.3 } else { 1.0 };
        self.wind_speed = (local.monthly(&MEAN_WIND_KMH) * afternoon * gusts * (1.0 + self.wind_noise)).max(0.0);
        self.wind_direction = (WIND_FROM_DEG + self.wind_direction_noise).rem_euclid(360.0);
        self.pressure =
            MEAN_PRESSURE_HPA + PRESSURE_TIDE_HPA * (TAU * (local.hour - 10.0) / 12.0).cos() + self.pressure_anomaly;

        Values::from([
            self.temperature,
            self.relative_humidity,
            self.wind_speed,
            self.wind_direction,
            self.pressure,
            self.rain_rate,
            self.rainfall_today,
        ])
    }

    /// Advances showers over the step and returns the rain fallen (mm).
    fn rain(&mut self, ctx: &StepCtx, rng: &mut Rng) -> f64 {
        let dt_h = ctx.dt_s() / 3600.0;
        let mut fallen = 0.0;
        if let Some(s) = &mut self.shower {
            let minutes = (dt_h * 60.0).min(s.remaining_minutes);
            fallen += s.rate_mm_per_h * minutes / 60.0;
            s.remaining_minutes -= dt_h * 60.0;
            if s.remaining_minutes <= 0.0 {
                self.shower = None;
            }
        }
        let rain_days = ctx.local.monthly(&RAIN_DAYS);
        let showers_per_s = rain_days * SHOWERS_PER_RAIN_DAY / (DAYS_PER_MONTH * 86_400.0);
        let mean_depth = ctx.local.monthly(&MONTHLY_RAIN_MM) / (rain_days * SHOWERS_PER_RAIN_DAY);
        let mean_minutes = (SHOWER_MIN_MINUTES + SHOWER_MAX_MINUTES) / 2.0;
        let (u, offset, minutes, spread) =
            (rng.uniform(), rng.uniform(), rng.range(SHOWER_MIN_MINUTES, SHOWER_MAX_MINUTES), rng.gaussian());
        if self.shower.is_none() && ctx.dt.is_some() && u < event_probability(showers_per_s, ctx.dt_s()) {
            // Log-normal intensity whose mean keeps the monthly depth.
            let rate = mean_depth / (mean_minutes / 60.0)
                * (SHOWER_RATE_SIGMA * spread - 0.5 * SHOWER_RATE_SIGMA * SHOWER_RATE_SIGMA).exp();
            let in_step_minutes = (1.0 - offset) * dt_h * 60.0;
            fallen += rate * in_step_minutes.min(minutes) / 60.0;
            let remaining = minutes - in_step_minutes;
            if remaining > 0.0 {
                self.shower = Some(Shower { remaining_minutes: remaining, rate_mm_per_h: rate });
            }
        }
        fallen
    }
}

/// Diurnal temperature shape in `[-0.5, 0.5]`: minimum at 06:00, maximum at 14:00, cosine
/// rise over 8 h and fall over 16 h. Its daily time-mean is 0, so the daily mean temperature
/// equals the normal (Météo-France means are (Tn + Tx) / 2).
fn diurnal_shape(hour: f64) -> f64 {
    if (6.0..14.0).contains(&hour) {
        -0.5 * (PI * (hour - 6.0) / 8.0).cos()
    } else {
        0.5 * (PI * (hour - 14.0).rem_euclid(24.0) / 16.0).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diurnal_shape_is_continuous_with_zero_mean() {
        assert!((diurnal_shape(6.0) + 0.5).abs() < 1e-12);
        assert!((diurnal_shape(14.0) - 0.5).abs() < 1e-12);
        assert!((diurnal_shape(5.9999) + 0.5).abs() < 1e-6);
        let n = 24 * 600;
        let mean = (0..n).map(|i| diurnal_shape(i as f64 * 24.0 / n as f64)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 1e-3, "{mean}");
    }

    #[test]
    fn rain_tables_match_the_annual_normal() {
        let total: f64 = MONTHLY_RAIN_MM.iter().sum();
        assert!((total - 2090.0).abs() / 2090.0 < 0.05, "{total}");
    }
}
