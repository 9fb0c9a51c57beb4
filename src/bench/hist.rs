//! A small concurrent latency histogram: log-linear buckets (8 per power of two, under
//! 13% relative error), recorded with one atomic add, read as percentiles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SUB: u32 = 8;
const LINEAR: u64 = 16;
const BUCKETS: usize = (LINEAR as usize) + (64 - 4) * SUB as usize;

pub struct Hist {
    counts: Vec<AtomicU64>,
}

impl Default for Hist {
    fn default() -> Self {
        Hist { counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect() }
    }
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= 4
    let sub = (v >> (e - 3)) & u64::from(SUB - 1);
    LINEAR as usize + (e as usize - 4) * SUB as usize + sub as usize
}

/// The upper bound of bucket `i`.
fn upper(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let k = i - LINEAR as usize;
    let e = (k / SUB as usize) as u32 + 4;
    let sub = (k % SUB as usize) as u64;
    ((8 + sub + 1) << (e - 3)) - 1
}

impl Hist {
    /// Record one value, in microseconds.
    pub fn record_us(&self, us: u64) {
        self.counts[index(us)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record(&self, d: Duration) {
        self.record_us(d.as_micros().min(u128::from(u64::MAX)) as u64);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The value under which a fraction `q` of the records fall, in milliseconds (the
    /// bucket's upper bound), or 0 without records.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i) as f64 / 1000.0;
            }
        }
        upper(BUCKETS - 1) as f64 / 1000.0
    }

    pub fn reset(&self) {
        for c in &self.counts {
            c.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_values() {
        for v in [0u64, 1, 15, 16, 17, 100, 1000, 12345, 1 << 30] {
            let i = index(v);
            assert!(upper(i) >= v, "{v}: bucket {i} ends at {}", upper(i));
            if i > 0 {
                assert!(upper(i - 1) < v, "{v}: previous bucket ends at {}", upper(i - 1));
            }
        }
    }

    #[test]
    fn quantiles() {
        let h = Hist::default();
        for us in 1..=1000 {
            h.record_us(us);
        }
        let p50 = h.quantile_ms(0.5);
        assert!((0.45..=0.57).contains(&p50), "{p50}");
        let p99 = h.quantile_ms(0.99);
        assert!((0.95..=1.12).contains(&p99), "{p99}");
    }
}
