//! Simulated time: [`SimClock`] maps real elapsed time to simulated UTC time, and
//! [`LocalTime`] gives the Martinique civil time (UTC-4, no daylight saving) the models use.

use chrono::{DateTime, Datelike, Duration, Timelike, Utc, Weekday};

/// Martinique is UTC-4 all year (`meta.timezone`: "America/Martinique, UTC-4, no DST").
pub const MARTINIQUE_UTC_OFFSET_HOURS: i32 = -4;

/// A speed factor (`speed` simulated seconds per real second) anchored at `sim_start`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimClock {
    sim_start: DateTime<Utc>,
    speed: f64,
}

/// Why a [`SimClock`] could not be built.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum ClockError {
    #[error("invalid simulation speed {0}: must be a finite number > 0")]
    InvalidSpeed(f64),
}

impl SimClock {
    /// `speed` must be finite and strictly positive.
    pub fn new(sim_start: DateTime<Utc>, speed: f64) -> Result<SimClock, ClockError> {
        if speed.is_finite() && speed > 0.0 {
            Ok(SimClock { sim_start, speed })
        } else {
            Err(ClockError::InvalidSpeed(speed))
        }
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    pub fn sim_start(&self) -> DateTime<Utc> {
        self.sim_start
    }

    /// `sim_start + real_elapsed * speed`, saturating at chrono's maximum date.
    pub fn sim_time(&self, real_elapsed: std::time::Duration) -> DateTime<Utc> {
        self.sim_start.checked_add_signed(self.sim_span(real_elapsed)).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// `real * speed` with nanosecond resolution (saturating).
    pub fn sim_span(&self, real: std::time::Duration) -> Duration {
        let nanos = real.as_nanos() as f64 * self.speed;
        // ±i64::MAX ns is about 292 years; chrono's Duration holds that.
        let nanos = nanos.clamp(0.0, i64::MAX as f64);
        Duration::nanoseconds(nanos as i64)
    }
}

/// Martinique local civil time, broken down for the models.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LocalTime {
    /// Hour of day as a fraction, `[0, 24)`.
    pub hour: f64,
    pub weekday: Weekday,
    /// 0 = January.
    pub month0: usize,
    /// 1-based day of month.
    pub day: u32,
    /// Days since 1970-01-01 in local time (changes at local midnight).
    pub day_index: i64,
}

impl LocalTime {
    pub fn of(at: DateTime<Utc>) -> LocalTime {
        let utc = at.naive_utc();
        let local = utc.checked_add_signed(Duration::hours(i64::from(MARTINIQUE_UTC_OFFSET_HOURS))).unwrap_or(utc);
        let hour = f64::from(local.hour())
            + f64::from(local.minute()) / 60.0
            + (f64::from(local.second()) + f64::from(local.nanosecond()) * 1e-9) / 3600.0;
        let shifted = at.timestamp() + i64::from(MARTINIQUE_UTC_OFFSET_HOURS) * 3600;
        LocalTime {
            hour: hour.min(24.0 - 1e-9),
            weekday: local.weekday(),
            month0: local.month0() as usize,
            day: local.day(),
            day_index: shifted.div_euclid(86_400),
        }
    }

    /// Smoothly interpolates a table of monthly values, each taken as the value at
    /// mid-month, cyclically (December blends into January).
    pub fn monthly(&self, table: &[f64; 12]) -> f64 {
        let pos = self.month0 as f64 + (f64::from(self.day) - 1.0 + self.hour / 24.0) / 30.44 - 0.5;
        let pos = pos.rem_euclid(12.0);
        let i = pos.floor() as usize % 12;
        let f = pos - pos.floor();
        table[i] * (1.0 - f) + table[(i + 1) % 12] * f
    }
}

/// Linear interpolation in a 24-entry table whose entry `h` is the value at `h:00`.
pub(crate) fn hourly(table: &[f64; 24], hour: f64) -> f64 {
    let h = hour.rem_euclid(24.0);
    let i = h.floor() as usize % 24;
    let f = h - h.floor();
    table[i] * (1.0 - f) + table[(i + 1) % 24] * f
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn clock_scales_real_time() {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().expect("valid date");
        let c = SimClock::new(start, 60.0).expect("valid speed");
        assert_eq!(c.speed(), 60.0);
        assert_eq!(c.sim_start(), start);
        assert_eq!(c.sim_time(std::time::Duration::from_secs(2)), start + Duration::minutes(2));
        assert_eq!(c.sim_span(std::time::Duration::from_millis(500)), Duration::seconds(30));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = SimClock::new(start, bad).expect_err("invalid speed");
            assert!(err.to_string().contains("speed"));
        }
        let huge = SimClock::new(start, 1e12).expect("valid speed");
        assert!(huge.sim_time(std::time::Duration::from_secs(1_000_000)) > start);
    }

    #[test]
    fn local_time_is_utc_minus_four() {
        let at = Utc.with_ymd_and_hms(2026, 7, 1, 2, 30, 0).single().expect("valid date");
        let lt = LocalTime::of(at);
        assert!((lt.hour - 22.5).abs() < 1e-9);
        assert_eq!(lt.day, 30);
        assert_eq!(lt.month0, 5);
        assert_eq!(lt.weekday, Weekday::Tue);
    }

    #[test]
    fn interpolation_is_continuous() {
        let t: [f64; 12] = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0];
        let h: [f64; 24] = std::array::from_fn(|i| i as f64);
        assert!((hourly(&h, 5.5) - 5.5).abs() < 1e-12);
        assert!((hourly(&h, 23.5) - 11.5).abs() < 1e-12);
        let mid_march = LocalTime::of(Utc.with_ymd_and_hms(2026, 3, 16, 16, 0, 0).single().expect("date"));
        assert!((mid_march.monthly(&t) - 2.0).abs() < 0.1);
    }
}
