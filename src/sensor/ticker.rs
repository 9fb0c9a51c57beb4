//! One timer per district instead of one per sensor: a [`Ticker`] keeps, for each sensor of
//! its district, the due time of its next observation, and a single tokio task sends
//! `SensorMsg::Tick` to each sensor actor when it is due.
//!
//! Due times are kept in a few FIFO lanes, one per interval (a sensor's next tick is its
//! last one plus its interval, and ticks are sent in due order, so each lane stays sorted by
//! appending), and a binary heap for what would not keep a lane sorted: first attachments,
//! re-armed sensors (overdue), intervals beyond the lanes. The next due is the earliest of
//! the heap's top and the lanes' fronts. A heap of a district's 30,000 entries cost each
//! tick about 15 cache-missing levels (`BinaryHeap::pop` was the first of the runtime's
//! own functions in a profile of a million twins); a lane costs one pop and one push.
//!
//! A sensor actor attaches itself when it starts (with the due time its schedule gives for
//! its next observation, so a restarted actor continues the same schedule) and detaches
//! when it ends. Heap entries carry the slot's generation: an entry left behind by an
//! actor that is gone is ignored when it comes up.
//!
//! At most one tick waits in a sensor's mailbox: when a sensor has not handled its last
//! message yet, the ticker parks it (no heap entry, no polling) instead of piling up ticks,
//! and the actor, once done with that message, re-arms itself ([`Ticker::unpark`]): its
//! overdue tick is sent at once. The schedule is kept: the next observation still gets its
//! own time, it is only late, and lateness is measured by the sensor. Parking and
//! re-arming race safely: the ticker sets the flag and then looks at the mailbox again;
//! whoever clears the flag sends the tick. The task runs while at least one sensor is
//! attached and ends with the last one. It sends nothing before the schedule has started
//! ([`super::ScheduleStart`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use ractor::{ActorId, ActorRef};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{District, SensorMsg};

/// Ticks sent per turn before the task yields to others.
const TURN: usize = 1024;
/// Most lanes (distinct intervals) a district keeps; sensors of further intervals are
/// scheduled through the heap.
const MAX_LANES: usize = 8;

/// A due tick: (due time in ns from the schedule's start, slot index, slot generation).
type Entry = (u64, u32, u32);

/// The ticks due every `interval`, in due order.
struct Lane {
    interval: u64,
    queue: VecDeque<Entry>,
}

struct Slot {
    actor: Option<ActorRef<SensorMsg>>,
    generation: u32,
    /// Due time of the next tick, in nanoseconds from the schedule's start.
    next: u64,
}

struct Wheel {
    /// Entries that would not keep a lane sorted (see the module documentation).
    heap: BinaryHeap<Reverse<Entry>>,
    lanes: Vec<Lane>,
    slots: Vec<Slot>,
    attached: usize,
    running: bool,
    /// Until when the task sleeps (`u64::MAX`: no entry).
    sleeping_until: u64,
}

/// The ticker of one district. See the module documentation.
pub struct Ticker {
    wheel: Mutex<Wheel>,
    wake: Notify,
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

impl Ticker {
    pub fn new(sensors: usize) -> Ticker {
        let slots = (0..sensors).map(|_| Slot { actor: None, generation: 0, next: 0 }).collect();
        Ticker {
            wheel: Mutex::new(Wheel {
                heap: BinaryHeap::new(),
                lanes: Vec::new(),
                slots,
                attached: 0,
                running: false,
                sleeping_until: u64::MAX,
            }),
            wake: Notify::new(),
        }
    }

    /// A ticker whose `sensors` slots each have an entry due, as after every sensor
    /// attached (for the density benchmark's breakdown; no task runs).
    pub fn bench_filled(sensors: usize) -> Ticker {
        let t = Ticker::new(sensors);
        {
            let mut w = t.lock();
            for i in 0..sensors {
                w.slots[i].generation = 1;
                w.heap.push(Reverse((i as u64, i as u32, 1)));
            }
        }
        t
    }

    /// Due times of the entries, in the order the task sends them (for tests).
    #[cfg(test)]
    fn drain_order(&self) -> Vec<u64> {
        let mut w = self.lock();
        std::iter::from_fn(|| w.pop_earliest().map(|e| e.0)).collect()
    }

    fn lock(&self) -> MutexGuard<'_, Wheel> {
        self.wheel.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tick `actor` (sensor `index` of `district`) from `due` (time from the schedule's
    /// start) on, every `interval`. Starts the task if it is not running.
    pub(super) fn attach(district: &Arc<District>, index: u32, actor: ActorRef<SensorMsg>, due: Duration) {
        let t = &district.ticker;
        let due = nanos(due);
        let mut w = t.lock();
        let Some(slot) = w.slots.get_mut(index as usize) else { return };
        let was_attached = slot.actor.is_some();
        slot.actor = Some(actor);
        slot.generation = slot.generation.wrapping_add(1);
        slot.next = due;
        let generation = slot.generation;
        if let Some(s) = district.sensors.get(index as usize) {
            s.parked.store(false, Ordering::SeqCst);
        }
        if !was_attached {
            w.attached += 1;
        }
        w.heap.push(Reverse((due, index, generation)));
        if !w.running {
            w.running = true;
            w.sleeping_until = u64::MAX;
            tokio::spawn(run(Arc::downgrade(district)));
        } else if due < w.sleeping_until {
            w.sleeping_until = due;
            drop(w);
            t.wake.notify_one();
        }
    }

    /// Sensor `index` is done with its last message: if it was parked, its overdue tick is
    /// due now (a no-op otherwise: one atomic load).
    pub(super) fn unpark(district: &Arc<District>, index: u32) {
        let Some(sensor) = district.sensors.get(index as usize) else { return };
        // Orders the mailbox's `handled` count (relaxed) before the flag is read: pairs with
        // the fence in the ticker, so that one of the two sees the other.
        std::sync::atomic::fence(Ordering::SeqCst);
        if !sensor.parked.load(Ordering::SeqCst) || !sensor.parked.swap(false, Ordering::SeqCst) {
            return;
        }
        let t = &district.ticker;
        let mut w = t.lock();
        let Some(slot) = w.slots.get(index as usize) else { return };
        if slot.actor.is_none() {
            return;
        }
        let (due, generation) = (slot.next, slot.generation);
        w.heap.push(Reverse((due, index, generation)));
        if due < w.sleeping_until {
            w.sleeping_until = due;
            drop(w);
            t.wake.notify_one();
        }
    }

    /// Stop ticking sensor `index`, unless another actor has attached to it since.
    pub(super) fn detach(&self, index: u32, actor: ActorId) {
        let mut w = self.lock();
        let Some(slot) = w.slots.get_mut(index as usize) else { return };
        if slot.actor.as_ref().is_some_and(|a| a.get_id() == actor) {
            slot.actor = None;
            slot.generation = slot.generation.wrapping_add(1);
            w.attached -= 1;
            if w.attached == 0 {
                // Nothing left to tick: drop the stale entries and let the task end.
                w.clear();
                drop(w);
                self.wake.notify_one();
            }
        }
    }
}

impl Wheel {
    /// The earliest entry's due time (`u64::MAX`: none).
    fn earliest(&self) -> u64 {
        let top = self.heap.peek().map_or(u64::MAX, |e| e.0 .0);
        self.lanes.iter().filter_map(|l| l.queue.front()).map(|e| e.0).fold(top, u64::min)
    }

    /// Take the earliest entry.
    #[cfg(test)]
    fn pop_earliest(&mut self) -> Option<Entry> {
        self.pop_due(u64::MAX)
    }

    /// Take the earliest entry if it is due at `now`.
    fn pop_due(&mut self, now: u64) -> Option<Entry> {
        let mut best: Option<(u64, usize)> = self.heap.peek().map(|e| (e.0 .0, usize::MAX));
        for (i, lane) in self.lanes.iter().enumerate() {
            if let Some(&(due, _, _)) = lane.queue.front() {
                if best.is_none_or(|(b, _)| due < b) {
                    best = Some((due, i));
                }
            }
        }
        match best? {
            (due, _) if due > now => None,
            (_, usize::MAX) => self.heap.pop().map(|e| e.0),
            (_, i) => self.lanes[i].queue.pop_front(),
        }
    }

    /// Schedule an entry that comes `interval` after one just taken: at the back of its
    /// interval's lane when that keeps the lane sorted, else in the heap.
    fn push_next(&mut self, entry: Entry, interval: u64) {
        let lane = match self.lanes.iter().position(|l| l.interval == interval) {
            Some(i) => Some(i),
            None if self.lanes.len() < MAX_LANES => {
                self.lanes.push(Lane { interval, queue: VecDeque::new() });
                Some(self.lanes.len() - 1)
            }
            None => None,
        };
        match lane.map(|i| &mut self.lanes[i].queue) {
            Some(q) if q.back().is_none_or(|b| b.0 <= entry.0) => q.push_back(entry),
            _ => self.heap.push(Reverse(entry)),
        }
    }

    fn clear(&mut self) {
        self.heap.clear();
        self.lanes.clear();
    }
}

/// The district's task: send what is due, sleep until the next due time or an earlier
/// attachment, end when no sensor is attached.
async fn run(district: Weak<District>) {
    let Some(schedule) = district.upgrade().map(|d| d.ctx.real_start.clone()) else { return };
    let origin = loop {
        if let Some(at) = schedule.wait(Duration::from_secs(1)).await {
            break at;
        }
        // Not started yet: end if nothing is left to tick.
        let Some(d) = district.upgrade() else { return };
        let mut w = d.ticker.lock();
        if w.attached == 0 {
            w.running = false;
            return;
        }
    };
    loop {
        let next = {
            let Some(d) = district.upgrade() else { return };
            let now = nanos(Instant::now().saturating_duration_since(origin));
            let mut w = d.ticker.lock();
            if w.attached == 0 {
                w.running = false;
                return;
            }
            let mut sent = 0;
            while sent < TURN {
                let Some((_, index, generation)) = w.pop_due(now) else { break };
                let slot = &mut w.slots[index as usize];
                if slot.generation != generation {
                    continue; // left behind by an actor that is gone
                }
                let Some(actor) = &slot.actor else { continue };
                let sensor = &d.sensors[index as usize];
                let interval = nanos(sensor.interval).max(1);
                let mailbox = &sensor.entry.mailbox;
                if mailbox.depth() > 0 {
                    // Still busy with its last message: park it; the actor re-arms itself
                    // when done. Unless it just was: then whoever takes the flag back ticks.
                    sensor.parked.store(true, Ordering::SeqCst);
                    std::sync::atomic::fence(Ordering::SeqCst);
                    if mailbox.depth() > 0 || !sensor.parked.swap(false, Ordering::SeqCst) {
                        continue;
                    }
                }
                mailbox.enqueue();
                if actor.cast(SensorMsg::Tick).is_err() {
                    mailbox.unenqueue();
                    continue; // stopping: it detaches itself
                }
                sent += 1;
                slot.next = slot.next.saturating_add(interval);
                let next = slot.next;
                w.push_next((next, index, generation), interval);
            }
            let next = w.earliest();
            w.sleeping_until = next;
            if sent >= TURN {
                None
            } else {
                Some(origin + Duration::from_nanos(next.min(u64::MAX / 2)))
            }
        };
        match next {
            None => tokio::task::yield_now().await,
            Some(at) => {
                let notified = district.upgrade().map(|d| async move { d.ticker.wake.notified().await });
                match notified {
                    Some(n) => {
                        tokio::select! {
                            () = tokio::time::sleep_until(at) => {}
                            () = n => {}
                        }
                    }
                    None => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a plain heap: random attachments (any due), re-arms (overdue entries) and
    /// ticks of sensors with more intervals than lanes take entries in the same due order.
    #[test]
    fn lanes_and_heap_give_the_earliest_first() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for round in 0..100 {
            let t = Ticker::new(0);
            let mut w = t.lock();
            let mut reference: BinaryHeap<Reverse<Entry>> = BinaryHeap::new();
            // Intervals 1..=12: more than MAX_LANES in most rounds.
            let intervals: Vec<u64> = (0..1 + rnd(12)).map(|i| 1_000 * (i + 1)).collect();
            let mut popped = 0;
            for step in 0..2_000u32 {
                match rnd(10) {
                    // Attach: a due anywhere ahead of the last taken.
                    0 => {
                        let e = (popped + rnd(20_000), step, 0);
                        w.heap.push(Reverse(e));
                        reference.push(Reverse(e));
                    }
                    // Re-arm: an overdue one.
                    1 => {
                        let e = (popped.saturating_sub(rnd(5_000)), step, 0);
                        w.heap.push(Reverse(e));
                        reference.push(Reverse(e));
                    }
                    // Tick: take the earliest, schedule it again one interval later.
                    _ => {
                        let got = w.pop_earliest();
                        let want = reference.pop().map(|e| e.0);
                        assert_eq!(got.map(|e| e.0), want.map(|e| e.0), "round {round}, step {step}");
                        let Some((due, index, generation)) = got else { continue };
                        popped = due;
                        let interval = intervals[index as usize % intervals.len()];
                        w.push_next((due + interval, index, generation), interval);
                        reference.push(Reverse((due + interval, index, generation)));
                    }
                }
                assert_eq!(w.earliest(), reference.peek().map_or(u64::MAX, |e| e.0 .0));
            }
            assert!(w.lanes.len() <= MAX_LANES);
            drop(w);
            let rest: Vec<u64> = std::iter::from_fn(|| reference.pop().map(|e| e.0 .0)).collect();
            assert_eq!(t.drain_order(), rest);
        }
    }

    /// Sensors of a few intervals, attached at any phase: once each has ticked, every entry
    /// is in a lane and the heap is empty.
    #[test]
    fn steady_ticks_leave_the_heap() {
        let t = Ticker::new(0);
        let mut w = t.lock();
        let intervals = [5_000u64, 10_000, 60_000];
        for i in 0..3_000u32 {
            let phase = u64::from(i) * 7_919 % 60_000;
            w.heap.push(Reverse((phase, i, 0)));
        }
        let mut last = 0;
        for _ in 0..30_000 {
            let Some((due, index, generation)) = w.pop_earliest() else { break };
            assert!(due >= last, "taken in due order");
            last = due;
            let interval = intervals[index as usize % intervals.len()];
            w.push_next((due + interval, index, generation), interval);
        }
        assert!(w.heap.is_empty(), "{} entries left in the heap", w.heap.len());
        assert_eq!(w.lanes.iter().map(|l| l.queue.len()).sum::<usize>(), 3_000);
        assert_eq!(w.lanes.len(), 3);
    }
}
