//! One timer per district instead of one per sensor: a [`Ticker`] keeps, for each sensor of
//! its district, the due time of its next observation in a binary heap, and a single tokio
//! task sends `SensorMsg::Tick` to each sensor actor when it is due.
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
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use ractor::{ActorId, ActorRef};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{District, SensorMsg};

/// Ticks sent per turn before the task yields to others.
const TURN: usize = 1024;

struct Slot {
    actor: Option<ActorRef<SensorMsg>>,
    generation: u32,
    /// Due time of the next tick, in nanoseconds from the schedule's start.
    next: u64,
}

struct Wheel {
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
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
                w.heap.clear();
                drop(w);
                self.wake.notify_one();
            }
        }
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
            while let Some(&Reverse((due, index, generation))) = w.heap.peek() {
                if due > now || sent >= TURN {
                    break;
                }
                w.heap.pop();
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
                w.heap.push(Reverse((next, index, generation)));
            }
            let next = w.heap.peek().map(|e| e.0 .0).unwrap_or(u64::MAX);
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
