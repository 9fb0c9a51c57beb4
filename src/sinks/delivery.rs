//! Delivery accounting of one sink, per sensor: the highest sequence number delivered, the
//! sequence numbers that never arrived (lost), and those that arrived twice (duplicates).
//!
//! Every observation carries `(sensor id, seq)` and a sensor's `seq` increases by one per
//! observation, so what a sink is missing is measured, not guessed:
//!
//! - a delivery that jumps over sequence numbers (`seq > highest + 1`) declares the skipped
//!   ones lost (unless already counted: see drops);
//! - an observation dropped by the queue's overflow policy is counted lost when dropped
//!   (and dropped): if it is above the highest delivered, it is remembered, so the gap a
//!   later delivery opens over it is not counted twice;
//! - a delivery at or below the highest delivered is a duplicate (at-least-once delivery
//!   after a lost acknowledgement), unless it is one of the missing ones arriving late
//!   (counted as `late`; queues keep order, so this is not expected).
//!
//! Missing ranges are kept as a few inclusive intervals per sensor (at most [`MAX_RANGES`]);
//! beyond that the oldest are forgotten (a very late arrival of one would then count as a
//! duplicate).

use std::collections::VecDeque;

/// How many disjoint missing intervals a sensor keeps.
pub const MAX_RANGES: usize = 64;

/// Sorted, disjoint, inclusive intervals of sequence numbers. A deque: new gaps open above
/// every older one (appended), and the oldest are the ones forgotten (popped), so a
/// sensor whose sink drops every other observation costs no shifting of its intervals.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ranges(VecDeque<(u64, u64)>);

impl Ranges {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, s: u64) -> bool {
        self.find(s).is_some()
    }

    fn find(&self, s: u64) -> Option<usize> {
        let i = self.0.partition_point(|&(_, hi)| hi < s);
        (i < self.0.len() && self.0[i].0 <= s).then_some(i)
    }

    /// How many of `lo..=hi` are in the set.
    pub fn count_within(&self, lo: u64, hi: u64) -> u64 {
        self.0.iter().filter(|(a, b)| *a <= hi && *b >= lo).map(|(a, b)| (*b).min(hi) - (*a).max(lo) + 1).sum()
    }

    /// Add `lo..=hi` (merging with neighbours).
    pub fn insert(&mut self, lo: u64, hi: u64) {
        if lo > hi {
            return;
        }
        // The common case: above every interval (a new gap, a new drop ahead).
        match self.0.back_mut() {
            Some(last) if last.1.saturating_add(1) == lo => last.1 = last.1.max(hi),
            Some(last) if last.1.saturating_add(1) < lo => self.0.push_back((lo, hi)),
            Some(_) => self.merge(lo, hi),
            None => self.0.push_back((lo, hi)),
        }
        if self.0.len() > MAX_RANGES {
            self.0.pop_front();
        }
    }

    /// Insert `lo..=hi` somewhere below the last interval, merging with what it touches.
    fn merge(&mut self, lo: u64, hi: u64) {
        let (mut lo, mut hi) = (lo, hi);
        let start = self.0.partition_point(|&(_, b)| b.saturating_add(1) < lo);
        let mut end = start;
        while end < self.0.len() && self.0[end].0 <= hi.saturating_add(1) {
            lo = lo.min(self.0[end].0);
            hi = hi.max(self.0[end].1);
            end += 1;
        }
        if start == end {
            self.0.insert(start, (lo, hi));
        } else {
            self.0[start] = (lo, hi);
            self.0.drain(start + 1..end);
        }
    }

    /// Remove one number; returns whether it was there.
    pub fn remove(&mut self, s: u64) -> bool {
        let Some(i) = self.find(s) else { return false };
        let (a, b) = self.0[i];
        match (a == s, b == s) {
            (true, true) => {
                self.0.remove(i);
            }
            (true, false) => self.0[i].0 = s + 1,
            (false, true) => self.0[i].1 = s - 1,
            (false, false) => {
                self.0[i].1 = s - 1;
                self.0.insert(i + 1, (s + 1, b));
                if self.0.len() > MAX_RANGES {
                    self.0.pop_front();
                }
            }
        }
        true
    }

    /// Remove every number `<= s`.
    pub fn remove_through(&mut self, s: u64) {
        let gone = self.0.partition_point(|&(_, b)| b <= s);
        self.0.drain(..gone);
        if let Some(first) = self.0.front_mut() {
            first.0 = first.0.max(s.saturating_add(1));
        }
    }
}

/// What a delivery was, for one sensor at one sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Above everything delivered so far; `newly_lost` sequence numbers were skipped.
    New { newly_lost: u64 },
    /// At or below the highest delivered, and delivered before.
    Duplicate,
    /// One of the missing ones, arriving after a later one.
    Late,
}

/// The accounting of one sensor at one sink.
#[derive(Debug, Default, Clone)]
pub struct SeqTrack {
    /// Highest sequence number delivered (0: none yet).
    pub highest: u64,
    /// Sequence numbers at or below `highest` that were not delivered.
    missing: Ranges,
    /// Dropped sequence numbers above `highest` (already counted lost).
    dropped_ahead: Ranges,
    pub lost: u64,
    pub duplicates: u64,
    pub late: u64,
}

impl SeqTrack {
    /// Record a delivery. `from_one`: the sensor's sequence starts at 1 for this sink, so
    /// a first delivery above 1 means the ones before were lost (false for sinks fed by a
    /// consumer, which may start reading anywhere).
    pub fn deliver(&mut self, s: u64, from_one: bool) -> Delivered {
        if self.highest == 0 && !from_one && self.dropped_ahead.is_empty() {
            self.highest = s;
            return Delivered::New { newly_lost: 0 };
        }
        if s > self.highest {
            let (lo, hi) = (self.highest + 1, s.saturating_sub(1));
            let mut newly_lost = 0;
            if lo <= hi {
                newly_lost = (hi - lo + 1) - self.dropped_ahead.count_within(lo, hi);
                self.missing.insert(lo, hi);
            }
            let was_dropped = self.dropped_ahead.contains(s);
            self.dropped_ahead.remove_through(s);
            self.highest = s;
            self.lost += newly_lost;
            if was_dropped {
                // A copy was dropped (and counted lost), another one made it.
                self.late += 1;
                return Delivered::Late;
            }
            Delivered::New { newly_lost }
        } else if self.missing.remove(s) {
            self.late += 1;
            Delivered::Late
        } else {
            self.duplicates += 1;
            Delivered::Duplicate
        }
    }

    /// Record a drop (overflow policy); returns whether it is newly lost.
    pub fn drop_seq(&mut self, s: u64) -> bool {
        if s > self.highest && !self.dropped_ahead.contains(s) {
            self.dropped_ahead.insert(s, s);
            self.lost += 1;
            return true;
        }
        // Already missing (counted), or a copy of one delivered before: nothing is lost.
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Ranges {
        fn of(r: &[(u64, u64)]) -> Ranges {
            Ranges(r.iter().copied().collect())
        }
    }

    #[test]
    fn ranges_merge_split_and_count() {
        let mut r = Ranges::default();
        r.insert(5, 7);
        r.insert(9, 9);
        r.insert(8, 8);
        assert_eq!(r, Ranges::of(&[(5, 9)]));
        assert!(r.remove(7));
        assert_eq!(r, Ranges::of(&[(5, 6), (8, 9)]));
        assert_eq!(r.count_within(6, 8), 2);
        assert!(!r.remove(7));
        r.remove_through(8);
        assert_eq!(r, Ranges::of(&[(9, 9)]));
        r.insert(1, 2);
        assert_eq!(r, Ranges::of(&[(1, 2), (9, 9)]));
    }

    /// Random inserts and removals against a set of numbers (few enough intervals that
    /// none is forgotten).
    #[test]
    fn ranges_behave_as_a_set() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for _ in 0..200 {
            let (mut r, mut set) = (Ranges::default(), std::collections::BTreeSet::new());
            for _ in 0..40 {
                match next(4) {
                    0 | 1 => {
                        let lo = next(100);
                        let hi = lo + next(5);
                        r.insert(lo, hi);
                        set.extend(lo..=hi);
                    }
                    2 => {
                        let s = next(110);
                        assert_eq!(r.remove(s), set.remove(&s));
                    }
                    _ => {
                        let s = next(60);
                        r.remove_through(s);
                        set.retain(|x| *x > s);
                    }
                }
                assert!(r.0.len() <= MAX_RANGES);
                let mut expect = Ranges::default();
                for x in &set {
                    match expect.0.back_mut() {
                        Some(last) if last.1 + 1 == *x => last.1 = *x,
                        _ => expect.0.push_back((*x, *x)),
                    }
                }
                assert_eq!(r, expect, "after the same operations as {set:?}");
                assert_eq!(r.count_within(20, 70), set.range(20..=70).count() as u64);
            }
        }
    }

    #[test]
    fn ranges_are_bounded() {
        let mut r = Ranges::default();
        for i in 0..(MAX_RANGES as u64 + 10) {
            r.insert(i * 3, i * 3);
        }
        assert_eq!(r.0.len(), MAX_RANGES);
        assert!(!r.contains(0), "the oldest are forgotten");
    }

    #[test]
    fn gaps_are_lost_and_repeats_are_duplicates() {
        let mut t = SeqTrack::default();
        assert_eq!(t.deliver(1, true), Delivered::New { newly_lost: 0 });
        assert_eq!(t.deliver(2, true), Delivered::New { newly_lost: 0 });
        assert_eq!(t.deliver(5, true), Delivered::New { newly_lost: 2 });
        assert_eq!(t.deliver(5, true), Delivered::Duplicate);
        assert_eq!(t.deliver(2, true), Delivered::Duplicate);
        assert_eq!(t.deliver(4, true), Delivered::Late);
        assert_eq!((t.highest, t.lost, t.duplicates, t.late), (5, 2, 2, 1));
    }

    #[test]
    fn a_first_delivery_above_one_counts_the_missing_start_unless_fed_by_a_consumer() {
        let mut t = SeqTrack::default();
        assert_eq!(t.deliver(4, true), Delivered::New { newly_lost: 3 });
        let mut c = SeqTrack::default();
        assert_eq!(c.deliver(400, false), Delivered::New { newly_lost: 0 });
        assert_eq!(c.deliver(402, false), Delivered::New { newly_lost: 1 });
    }

    #[test]
    fn drops_count_once_whether_newest_or_oldest() {
        // drop_newest: 1..3 queued, 4 dropped, then 1..3 and 5 delivered.
        let mut t = SeqTrack::default();
        assert!(t.drop_seq(4));
        for s in 1..=3 {
            assert_eq!(t.deliver(s, true), Delivered::New { newly_lost: 0 });
        }
        assert_eq!(t.deliver(5, true), Delivered::New { newly_lost: 0 });
        assert_eq!(t.lost, 1);
        // drop_oldest: 6 dropped, 7 delivered.
        assert!(t.drop_seq(6));
        assert_eq!(t.deliver(7, true), Delivered::New { newly_lost: 0 });
        assert_eq!(t.lost, 2);
        // dropping a copy of something delivered loses nothing.
        assert!(!t.drop_seq(7));
        assert_eq!((t.lost, t.duplicates, t.late), (2, 0, 0));
    }
}
