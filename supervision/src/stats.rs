//! Lock-protected, shareable view of a supervisor's state.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use ractor::ActorId;
use serde::{Serialize, Serializer};

use crate::keyed::KeyedVec;
use crate::spec::{Restart, Strategy};

/// When and why something failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureRecord {
    /// Human readable reason (panic message, error, exit reason).
    pub reason: String,
    /// Wall clock time of the failure, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

impl FailureRecord {
    /// A record stamped with the current wall clock time.
    pub fn now(reason: impl Into<String>) -> Self {
        let at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self { reason: reason.into(), at_unix_ms }
    }
}

/// Lifecycle state of a child as seen by its supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum ChildStatus {
    /// Spawned, `post_start` not finished yet.
    Starting,
    /// Running (ractor reported `ActorStarted`).
    Running,
    /// Waiting for its backoff before being restarted; `in_ms` is the delay
    /// that was chosen when the restart was scheduled.
    Restarting {
        /// Backoff delay in milliseconds.
        in_ms: u64,
    },
    /// Exited normally and will not be restarted, or stopped by the supervisor.
    Stopped,
    /// Exited abnormally and will not be restarted.
    Failed,
}

/// One child in a [`SupervisorSnapshot`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChildSnapshot {
    /// Child id from its [`ChildSpec`](crate::ChildSpec) (the same allocation, shared).
    #[serde(serialize_with = "str_text")]
    pub id: Arc<str>,
    /// Kind label from its spec.
    pub kind: &'static str,
    /// Restart policy.
    pub restart: Restart,
    /// Current status.
    pub status: ChildStatus,
    /// Restarts performed for this child since it was added.
    pub restarts: u32,
    /// The most recent failure.
    pub last_failure: Option<FailureRecord>,
    /// ractor id of the current instance (`None` while not running); serialized as its
    /// text (`"0.42"`).
    #[serde(serialize_with = "actor_id_text")]
    pub actor_id: Option<ActorId>,
}

fn str_text<S: Serializer>(s: &Arc<str>, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s)
}

fn actor_id_text<S: Serializer>(id: &Option<ActorId>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.collect_str(id),
        None => s.serialize_none(),
    }
}

/// Point-in-time view of a supervisor.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct SupervisorSnapshot {
    /// Supervisor name.
    pub name: String,
    /// Restart strategy.
    pub strategy: Strategy,
    /// Intensity limit.
    pub max_restarts: u32,
    /// Intensity window in milliseconds.
    pub within_ms: u64,
    /// Restarts performed by this supervisor (accumulates across restarts of
    /// the supervisor itself when the same [`SupervisorStats`] is reused).
    pub total_restarts: u64,
    /// Last time the supervisor gave up and failed itself.
    pub escalated: Option<FailureRecord>,
    /// Messages and supervision events handled (across incarnations).
    pub messages_handled: u64,
    /// When the last one was handled.
    pub last_message_at_unix_ms: Option<u64>,
    /// Children in spec (insertion) order.
    pub children: Vec<ChildSnapshot>,
}

impl SupervisorSnapshot {
    /// The child with this id, if any.
    pub fn child(&self, id: &str) -> Option<&ChildSnapshot> {
        self.children.iter().find(|c| &*c.id == id)
    }
}

#[derive(Default)]
pub(crate) struct StatsInner {
    /// Everything but `children`.
    pub(crate) header: SupervisorSnapshot,
    /// Children keyed by the supervisor's internal insertion key, so that one
    /// child is updated in O(log n) and iteration yields spec order.
    pub(crate) children: KeyedVec<ChildSnapshot>,
    /// Child id -> key in `children`, for O(1) lookups by id (the key shares the id).
    pub(crate) by_id: rustc_hash::FxHashMap<Arc<str>, u64>,
}

/// Shared, cheaply cloneable view of a supervisor's state, readable without
/// messaging the actor (e.g. from an HTTP inspection endpoint). Created by the
/// caller, passed in [`SupervisorArgs`](crate::SupervisorArgs), updated by
/// the supervisor on each change.
///
/// Internally children are kept sorted by insertion key, so that the supervisor
/// updates a child in O(log n) even with 100 000 children; [`snapshot`](Self::snapshot)
/// assembles the `Vec`.
#[derive(Clone, Default)]
pub struct SupervisorStats(Arc<RwLock<StatsInner>>);

impl SupervisorStats {
    /// New, empty stats.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the current state (O(number of children)).
    pub fn snapshot(&self) -> SupervisorSnapshot {
        let inner = self.read();
        let mut snap = inner.header.clone();
        snap.children = inner.children.values().cloned().collect();
        snap
    }

    /// The current state of one child.
    pub fn child(&self, id: &str) -> Option<ChildSnapshot> {
        let inner = self.read();
        let key = inner.by_id.get(id)?;
        inner.children.get(*key).cloned()
    }

    /// The status and restart count of one child, without copying its snapshot.
    pub fn child_brief(&self, id: &str) -> Option<(ChildStatus, u32)> {
        let inner = self.read();
        let key = inner.by_id.get(id)?;
        inner.children.get(*key).map(|c| (c.status, c.restarts))
    }

    /// The header (name, strategy, counters) without the children: O(1).
    pub fn header(&self) -> SupervisorSnapshot {
        self.read().header.clone()
    }

    /// Count one handled message or supervision event.
    pub(crate) fn record_message(&self) {
        let now = FailureRecord::now("").at_unix_ms;
        let mut w = self.write();
        w.header.messages_handled += 1;
        w.header.last_message_at_unix_ms = Some(now);
    }

    /// Number of children currently known to the supervisor.
    pub fn child_count(&self) -> usize {
        self.read().children.len()
    }

    /// Total restarts performed.
    pub fn total_restarts(&self) -> u64 {
        self.read().header.total_restarts
    }

    /// The last escalation, if any.
    pub fn escalated(&self) -> Option<FailureRecord> {
        self.read().header.escalated.clone()
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, StatsInner> {
        // The data is plain values; a panic while holding the lock cannot
        // leave it logically broken, so poisoning is ignored.
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, StatsInner> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for SupervisorStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.read();
        f.debug_struct("SupervisorStats")
            .field("name", &inner.header.name)
            .field("children", &inner.children.len())
            .field("total_restarts", &inner.header.total_restarts)
            .finish()
    }
}
