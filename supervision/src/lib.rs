//! OTP-style supervision on top of [`ractor`].
//!
//! ractor links actors into a tree and reports child lifecycle events
//! ([`ractor::SupervisionEvent`]) to the parent, but it never restarts
//! anything. This crate provides the missing piece: a [`Supervisor`] actor
//! that owns a list of [`ChildSpec`]s and applies a restart policy.
//!
//! # Model
//!
//! * A [`ChildSpec`] is a *factory*: given the supervisor's [`ractor::ActorCell`]
//!   it spawns the child linked to it (`Actor::spawn_linked`) and returns the
//!   child's cell. It is called at start and again at every restart, so a
//!   restarted child is a brand-new actor (new [`ractor::ActorId`], new
//!   in-actor state). State that must survive a restart lives outside the
//!   actor and is captured by the factory (e.g. an `Arc<...>` shared with the
//!   runtime); that is how the twin runtime keeps twin state across crashes.
//! * The supervisor starts its children in order in `pre_start`; if one fails
//!   to spawn, the ones already started are stopped and the supervisor fails
//!   to start with an error naming the child.
//! * A child *exit* is classified as **abnormal** (panic or `Err` from a
//!   handler, reported by ractor as `ActorFailed`; or killed, reported as
//!   `ActorTerminated` without a final state) or **normal** (stopped).
//!   [`Restart`] then decides: `Permanent` children are always restarted,
//!   `Transient` ones only after an abnormal exit, `Temporary` ones never
//!   (and are forgotten).
//! * Every restart is counted against the supervisor's [`Intensity`]. More
//!   than `max_restarts` within `within` and the supervisor **escalates**: it
//!   stops all its children, records [`SupervisorSnapshot::escalated`],
//!   notifies the [`SupervisionObserver`] and fails itself (returns an error
//!   from its handler), so that its own parent sees `ActorFailed` and applies
//!   *its* strategy. A parent `Supervisor` restarts a child supervisor by
//!   calling its factory again (see [`Supervisor::child_spec`]), which gives
//!   nested trees: twins supervisor → district supervisors → sensors.
//! * Restarts are delayed by [`Backoff`], indexed by the child's number of
//!   consecutive restarts (reset once the child ran longer than the intensity
//!   window). Delays use `send_after`/tokio timers; the handler never sleeps.
//!   Each pending restart carries a generation number so that a stale timer
//!   (child terminated or restarted since) does nothing.
//! * [`Strategy::OneForAll`]: all other live children are stopped (their
//!   exits are not counted as failures), the supervisor waits for them to be
//!   gone, waits the backoff, then restarts all of them in spec order.
//! * Stopping a supervisor (`stop`, `stop_and_wait`) stops its children and
//!   waits for them in `post_stop`; nothing is restarted while stopping.
//! * [`SupervisorStats`] is a shared view that readers (an HTTP endpoint) can
//!   read without messaging the actor; the supervisor updates it on every
//!   change. The [`SupervisorMsg::Snapshot`] message returns the same data.
//! * Cost per event is O(log n) (a map from `ActorId` to child), so a
//!   supervisor can hold 100 000 children; only one-for-all and shutdown do
//!   O(n) work.
//!
//! # Differences from OTP
//!
//! * Restarts are asynchronous and delayed by a backoff (OTP restarts
//!   immediately, inside the supervisor). While a child waits for its
//!   backoff its status is [`ChildStatus::Restarting`].
//! * A restart whose factory fails is recorded as a failure of that child
//!   and retried with backoff (counting against the intensity) instead of
//!   the OTP retry loop.
//! * There is no per-child shutdown spec: children are stopped with
//!   ractor's graceful `stop` and killed after [`CHILD_SHUTDOWN_TIMEOUT`].
//! * Children are stopped concurrently, not in reverse start order.
//! * `Transient` children that exited normally are kept (status `Stopped`)
//!   but not restarted by a later one-for-all restart; `Temporary` children
//!   are removed when they exit or when a one-for-all restart stops them.
//! * Only `one_for_one` and `one_for_all` exist (no `rest_for_one`,
//!   `simple_one_for_one`); run-time children are added with
//!   [`SupervisorMsg::StartChild`].
//! * ractor catches panics in handlers (`catch_unwind`) and reports them as
//!   `ActorFailed` with the panic message; the crate relies on that.
//!   A panic inside a child *factory* is caught too and treated as a failed
//!   start.
//! * A killed child (ractor `Signal::Kill`) counts as an abnormal exit, like
//!   OTP's `killed`. Linked children of a dead ractor actor are *killed* by
//!   ractor (no `post_stop`), which is why the supervisor stops them
//!   gracefully itself first.

mod backoff;
mod keyed;
mod spec;
mod stats;
mod supervisor;

pub use ractor;

pub use backoff::{Backoff, BackoffError};
pub use spec::{ChildSpec, Intensity, Restart, SpawnFuture, StartFn, Strategy, SupervisionObserver, SupervisorSpec};
pub use stats::{ChildSnapshot, ChildStatus, FailureRecord, SupervisorSnapshot, SupervisorStats};
pub use supervisor::{
    Internal, Supervisor, SupervisorArgs, SupervisorMsg, SupervisorRefExt, SupervisorState, CHILD_SHUTDOWN_TIMEOUT,
};
