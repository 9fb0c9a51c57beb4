//! Recycled envelopes: a sink hands back the envelopes it is done with, and sensors make
//! their next observations' envelopes in them instead of allocating.
//!
//! Why: an envelope is allocated by a sensor on a runtime worker and freed by a sink on
//! another thread. With glibc's malloc a free from another thread takes the lock of the
//! arena the memory came from, and the sensor's next allocation takes the same lock: in a
//! profile of the throughput benchmark (BENCHMARKS.md) most of the sink thread's waits, and
//! many of the workers', were that lock, held by a thread the system had just preempted.
//! Handed back by the batch, envelopes cost one short lock per [`BATCH`] instead.
//!
//! Only envelopes no one else holds are kept (a sink recycles what it alone still has: the
//! last sink to finish with a shared envelope is the one that keeps it), and only those of
//! sensors (no acknowledgement group). The pool keeps at most [`MAX_BATCHES`] batches (a few
//! MiB); beyond, envelopes are freed as before.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, MutexGuard};

use super::Envelope;

/// Envelopes handed back or out at a time.
pub const BATCH: usize = 256;
/// Batches the pool keeps at most: 16,384 envelopes of 176 bytes.
pub const MAX_BATCHES: usize = 64;

/// Batches of envelopes no one holds, waiting to be made again.
pub struct Pool {
    batches: Mutex<Vec<Vec<Arc<Envelope>>>>,
    max_batches: usize,
}

impl Pool {
    pub const fn new(max_batches: usize) -> Pool {
        Pool { batches: Mutex::new(Vec::new()), max_batches }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Vec<Arc<Envelope>>>> {
        self.batches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep `batch` if there is room (else it is freed, outside the lock).
    pub fn hand_back(&self, batch: Vec<Arc<Envelope>>) {
        let mut b = self.lock();
        if b.len() < self.max_batches {
            b.push(batch);
        } else {
            drop(b);
            drop(batch);
        }
    }

    pub fn hand_out(&self) -> Option<Vec<Arc<Envelope>>> {
        self.lock().pop()
    }

    /// Envelopes held (not counting those a thread has at hand).
    pub fn len(&self) -> usize {
        self.lock().iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The runtime's pool.
pub static POOL: Pool = Pool::new(MAX_BATCHES);

thread_local! {
    /// Envelopes this thread hands out next.
    static SPARE: RefCell<Vec<Arc<Envelope>>> = const { RefCell::new(Vec::new()) };
    /// Envelopes this thread was handed back, until a batch is full.
    static RETURNED: RefCell<Vec<Arc<Envelope>>> = const { RefCell::new(Vec::new()) };
}

/// Whether `env` may be made again: a sensor's, and no one else holds it.
fn reusable(env: &Arc<Envelope>) -> bool {
    env.ack.is_none() && Arc::strong_count(env) == 1 && Arc::weak_count(env) == 0
}

/// `env` in a recycled envelope if there is one, else in a new one.
pub(super) fn make(env: Envelope) -> Arc<Envelope> {
    let spare = SPARE
        .try_with(|s| {
            let mut s = s.borrow_mut();
            if s.is_empty() {
                if let Some(batch) = POOL.hand_out() {
                    *s = batch;
                }
            }
            s.pop()
        })
        .ok()
        .flatten();
    match spare {
        Some(mut reused) => match Arc::get_mut(&mut reused) {
            Some(slot) => {
                *slot = env;
                reused
            }
            None => Arc::new(env),
        },
        None => Arc::new(env),
    }
}

/// The caller is done with `env`: kept for reuse if no one else holds it.
pub fn recycle(env: Arc<Envelope>) {
    if !reusable(&env) {
        return;
    }
    let full = RETURNED.try_with(|r| {
        let mut r = r.borrow_mut();
        r.push(env);
        (r.len() >= BATCH).then(|| std::mem::replace(&mut *r, Vec::with_capacity(BATCH)))
    });
    if let Ok(Some(full)) = full {
        POOL.hand_back(full);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twins::{GeoPoint, Observation, SensorKind, Values};

    fn obs(seq: u64) -> Observation {
        Observation {
            sensor_id: "pool-test".into(),
            kind: SensorKind::Noise,
            seq,
            observed_at: chrono::Utc::now(),
            location: GeoPoint { lat: 14.6, lon: -61.0 },
            district: "Fort-de-France".into(),
            values: Values::from([50.0, 60.0]),
        }
    }

    #[test]
    fn only_envelopes_no_one_else_holds_and_no_one_waits_on_are_reusable() {
        let alone = Envelope::new(obs(1));
        assert!(reusable(&alone));
        let shared = alone.clone();
        assert!(!reusable(&alone), "a sink still holds it");
        drop(shared);
        assert!(reusable(&alone));
        let weak = Arc::downgrade(&alone);
        assert!(!reusable(&alone));
        drop(weak);
        assert!(!reusable(&Envelope::with_ack(obs(2), crate::sinks::AckGroup::new(1))), "a consumer waits on it");
    }

    #[test]
    fn the_pool_keeps_batches_up_to_its_bound() {
        let pool = Pool::new(2);
        for _ in 0..3 {
            pool.hand_back((0..BATCH as u64).map(|s| Envelope::new(obs(s))).collect());
        }
        assert_eq!(pool.len(), 2 * BATCH, "the third batch is freed");
        assert_eq!(pool.hand_out().map(|b| b.len()), Some(BATCH));
        assert_eq!(pool.hand_out().map(|b| b.len()), Some(BATCH));
        assert!(pool.hand_out().is_none() && pool.is_empty());
    }

    #[test]
    fn a_recycled_envelope_is_made_again_with_the_new_contents_only() {
        // A thread of its own: its buffers start empty, and it hands back a whole batch.
        std::thread::spawn(|| {
            for s in 0..BATCH as u64 {
                recycle(Envelope::new(obs(s)));
            }
            // Whichever batch this thread gets (other tests may hand back theirs), each
            // envelope made from it carries exactly what it was made with.
            for s in 1000..1000 + 2 * BATCH as u64 {
                let e = Envelope::new(obs(s));
                assert_eq!(e.obs.seq, s);
                assert!(e.ack.is_none());
                assert_eq!(Arc::strong_count(&e), 1);
            }
        })
        .join()
        .expect("pool test thread");
    }
}
