//! Exponential restart backoff with bounded jitter.

use std::time::Duration;

use serde::Serialize;

/// Why [`Backoff::new`] rejected its parameters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackoffError {
    /// `min` was greater than `max`.
    #[error("backoff min ({min:?}) must not exceed max ({max:?})")]
    MinAboveMax {
        /// The rejected minimum.
        min: Duration,
        /// The rejected maximum.
        max: Duration,
    },
    /// `factor` was below 1 or not a finite number.
    #[error("backoff factor must be a finite number >= 1, got {0}")]
    InvalidFactor(f64),
    /// `jitter` was outside `0..=1` or not a number.
    #[error("backoff jitter must be within 0..=1, got {0}")]
    InvalidJitter(f64),
}

/// Delay before restarting a failed child: `min * factor^attempt`, capped at
/// `max`, then moved by a random fraction of at most `jitter` in either
/// direction, and finally clamped to `0..=max`.
///
/// `attempt` is the child's number of consecutive restarts (0 for the first
/// restart), so a child that keeps crashing backs off exponentially while a
/// child that crashes once in a long while is restarted after about `min`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    factor: f64,
    jitter: f64,
}

impl Backoff {
    /// Validated constructor: `min <= max`, `factor >= 1` (finite),
    /// `0 <= jitter <= 1`.
    pub fn new(min: Duration, max: Duration, factor: f64, jitter: f64) -> Result<Self, BackoffError> {
        if min > max {
            return Err(BackoffError::MinAboveMax { min, max });
        }
        if !factor.is_finite() || factor < 1.0 {
            return Err(BackoffError::InvalidFactor(factor));
        }
        if !(0.0..=1.0).contains(&jitter) {
            // NaN also fails `contains`.
            return Err(BackoffError::InvalidJitter(jitter));
        }
        Ok(Self { min, max, factor, jitter })
    }

    /// A backoff that always waits exactly `delay` (factor 1, no jitter).
    pub fn fixed(delay: Duration) -> Self {
        Self { min: delay, max: delay, factor: 1.0, jitter: 0.0 }
    }

    /// Restart immediately (zero delay).
    pub fn none() -> Self {
        Self::fixed(Duration::ZERO)
    }

    /// Smallest base delay (the delay of attempt 0 before jitter).
    pub fn min(&self) -> Duration {
        self.min
    }

    /// Upper bound of any delay.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// Growth factor per consecutive attempt.
    pub fn factor(&self) -> f64 {
        self.factor
    }

    /// Maximal relative jitter (0.2 = plus or minus 20 %).
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// The un-jittered delay of `attempt`: `min * factor^attempt`, capped at `max`.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let max_secs = self.max.as_secs_f64();
        let exp = i32::try_from(attempt).unwrap_or(i32::MAX);
        let secs = self.min.as_secs_f64() * self.factor.powi(exp);
        if !secs.is_finite() || secs >= max_secs {
            self.max
        } else {
            Duration::from_secs_f64(secs.max(0.0))
        }
    }

    /// The delay before restart number `attempt` (0-based), jittered with `rng`.
    /// Never above `max`, never negative.
    pub fn delay(&self, attempt: u32, rng: &mut impl rand::Rng) -> Duration {
        let base = self.base_delay(attempt);
        if self.jitter == 0.0 || base.is_zero() {
            return base;
        }
        let j: f64 = rng.random_range(-self.jitter..=self.jitter);
        let secs = base.as_secs_f64() * (1.0 + j);
        let max_secs = self.max.as_secs_f64();
        if !secs.is_finite() || secs >= max_secs {
            self.max
        } else if secs <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(secs)
        }
    }
}

impl Default for Backoff {
    /// 100 ms doubling up to 30 s, plus or minus 20 % jitter.
    fn default() -> Self {
        Self { min: Duration::from_millis(100), max: Duration::from_secs(30), factor: 2.0, jitter: 0.2 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn validation() {
        assert_eq!(Backoff::new(MS(10), MS(5), 2.0, 0.1), Err(BackoffError::MinAboveMax { min: MS(10), max: MS(5) }));
        assert_eq!(Backoff::new(MS(1), MS(5), 0.5, 0.1), Err(BackoffError::InvalidFactor(0.5)));
        assert!(matches!(Backoff::new(MS(1), MS(5), f64::NAN, 0.1), Err(BackoffError::InvalidFactor(_))));
        assert!(matches!(Backoff::new(MS(1), MS(5), f64::INFINITY, 0.1), Err(BackoffError::InvalidFactor(_))));
        assert_eq!(Backoff::new(MS(1), MS(5), 2.0, 1.5), Err(BackoffError::InvalidJitter(1.5)));
        assert_eq!(Backoff::new(MS(1), MS(5), 2.0, -0.1), Err(BackoffError::InvalidJitter(-0.1)));
        assert!(matches!(Backoff::new(MS(1), MS(5), 2.0, f64::NAN), Err(BackoffError::InvalidJitter(_))));
        // Boundaries are accepted.
        let b = Backoff::new(MS(5), MS(5), 1.0, 1.0).unwrap();
        assert_eq!((b.min(), b.max(), b.factor(), b.jitter()), (MS(5), MS(5), 1.0, 1.0));
        assert!(Backoff::new(Duration::ZERO, MS(5), 1.0, 0.0).is_ok());
    }

    #[test]
    fn default_is_sensible_and_valid() {
        let d = Backoff::default();
        assert_eq!(Backoff::new(d.min(), d.max(), d.factor(), d.jitter()), Ok(d));
        assert_eq!(d.min(), MS(100));
        assert_eq!(d.max(), Duration::from_secs(30));
        assert_eq!(d.factor(), 2.0);
        assert_eq!(d.jitter(), 0.2);
    }

    #[test]
    fn exponential_growth_without_jitter_is_exact_and_capped() {
        let b = Backoff::new(MS(100), MS(1_000), 2.0, 0.0).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let got: Vec<_> = (0..7).map(|a| b.delay(a, &mut rng)).collect();
        assert_eq!(got, vec![MS(100), MS(200), MS(400), MS(800), MS(1_000), MS(1_000), MS(1_000)]);
        // Huge attempts do not overflow.
        assert_eq!(b.delay(u32::MAX, &mut rng), MS(1_000));
        assert_eq!(b.base_delay(10_000), MS(1_000));
    }

    #[test]
    fn jitter_stays_in_range_and_never_exceeds_max() {
        let b = Backoff::new(MS(100), MS(1_000), 2.0, 0.5).unwrap();
        let mut rng = StdRng::seed_from_u64(42);
        let mut below = false;
        let mut above = false;
        for attempt in 0..8 {
            let base = b.base_delay(attempt).as_secs_f64();
            for _ in 0..500 {
                let d = b.delay(attempt, &mut rng);
                assert!(d <= b.max(), "attempt {attempt}: {d:?} above max");
                let s = d.as_secs_f64();
                assert!(s >= base * 0.5 - 1e-9, "attempt {attempt}: {d:?} below -50% of {base}");
                assert!(s <= base * 1.5 + 1e-9, "attempt {attempt}: {d:?} above +50% of {base}");
                below |= s < base - 1e-6;
                above |= s > base + 1e-6;
            }
        }
        assert!(below && above, "jitter should move delays both ways");
    }

    #[test]
    fn full_jitter_never_negative_and_capped_delay_only_goes_down() {
        let b = Backoff::new(MS(10), MS(40), 3.0, 1.0).unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..1_000 {
            let d = b.delay(5, &mut rng); // base is capped at max
            assert!(d <= MS(40));
            let d0 = b.delay(0, &mut rng);
            assert!(d0 <= MS(20));
        }
    }

    #[test]
    fn seeded_rng_is_deterministic() {
        let b = Backoff::default();
        let a: Vec<_> = {
            let mut rng = StdRng::seed_from_u64(99);
            (0..10).map(|i| b.delay(i, &mut rng)).collect()
        };
        let c: Vec<_> = {
            let mut rng = StdRng::seed_from_u64(99);
            (0..10).map(|i| b.delay(i, &mut rng)).collect()
        };
        assert_eq!(a, c);
    }

    #[test]
    fn fixed_and_none() {
        let mut rng = StdRng::seed_from_u64(3);
        assert_eq!(Backoff::fixed(MS(250)).delay(9, &mut rng), MS(250));
        assert_eq!(Backoff::none().delay(3, &mut rng), Duration::ZERO);
    }
}
