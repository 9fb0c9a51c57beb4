//! The actor directory: every actor of the supervision tree by path, with its kind, parent
//! and children, its live cell, and its mailbox counters.
//!
//! ractor has no mailbox length, so each actor's [`Mailbox`] counts what goes in (at every
//! place that sends to it) and what its handler takes out; the difference is the queue
//! depth. The directory is built once, with the tree, and never changes shape: restarts only
//! swap the cell an entry points to. Readers (the inspection API) never message actors.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use ractor::{ActorCell, ActorStatus};
use rustc_hash::FxHashMap;
use serde::Serialize;
use supervision::{ChildStatus, FailureRecord, SupervisorStats};

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The wall-clock milliseconds (since the Unix epoch) of a monotonic instant, from one pair
/// of clock readings taken at the first call: a hot path that already read the monotonic
/// clock gets a timestamp without a second system clock read (each one costs ~0.1 µs on a
/// VM's clock, three per tick were 9 % of the sensors' CPU). It follows the monotonic clock,
/// so a later change of the system's clock does not move it.
pub fn wall_ms(at: std::time::Instant) -> u64 {
    static ANCHOR: std::sync::OnceLock<(std::time::Instant, u64)> = std::sync::OnceLock::new();
    let (base, base_ms) = *ANCHOR.get_or_init(|| (std::time::Instant::now(), now_ms()));
    match at.checked_duration_since(base) {
        Some(d) => base_ms.saturating_add(d.as_millis() as u64),
        None => base_ms.saturating_sub(base.duration_since(at).as_millis() as u64),
    }
}

/// An entry's mailbox counters: its own (inline: a sensor's tick reads them on the line it
/// reads the entry from, and a million twins keep a million allocations fewer), or shared
/// with whoever else counts what is sent to the actor (a sink's handle).
#[derive(Debug)]
pub enum MailboxSlot {
    Own(Mailbox),
    Shared(Arc<Mailbox>),
}

impl Default for MailboxSlot {
    fn default() -> MailboxSlot {
        MailboxSlot::Own(Mailbox::default())
    }
}

impl From<Arc<Mailbox>> for MailboxSlot {
    fn from(m: Arc<Mailbox>) -> MailboxSlot {
        MailboxSlot::Shared(m)
    }
}

impl std::ops::Deref for MailboxSlot {
    type Target = Mailbox;
    fn deref(&self) -> &Mailbox {
        match self {
            MailboxSlot::Own(m) => m,
            MailboxSlot::Shared(m) => m,
        }
    }
}

/// What goes into an actor's mailbox and what its handler takes out.
#[derive(Debug, Default)]
pub struct Mailbox {
    enqueued: AtomicU64,
    handled: AtomicU64,
    last_handled_ms: AtomicU64,
}

impl Mailbox {
    /// Count a message about to be sent to the actor.
    pub fn enqueue(&self) {
        self.enqueued.fetch_add(1, Ordering::Relaxed);
    }

    /// A message sent that never arrived (the send failed).
    pub fn unenqueue(&self) {
        self.enqueued.fetch_sub(1, Ordering::Relaxed);
    }

    /// Count a message the handler took.
    pub fn handled(&self) {
        self.handled_at(std::time::Instant::now());
    }

    /// [`handled`](Self::handled) at an instant the handler already read.
    pub fn handled_at(&self, at: std::time::Instant) {
        self.handled.fetch_add(1, Ordering::Relaxed);
        self.last_handled_ms.store(wall_ms(at), Ordering::Relaxed);
    }

    /// A new incarnation starts with an empty mailbox: what was queued died with the old one.
    pub fn restart(&self) {
        self.enqueued.store(self.handled.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    pub fn handled_total(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    pub fn depth(&self) -> u64 {
        self.enqueued.load(Ordering::Relaxed).saturating_sub(self.handled.load(Ordering::Relaxed))
    }

    pub fn last_handled_ms(&self) -> Option<u64> {
        match self.last_handled_ms.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }
}

/// How many children an [`ActorInfo`] lists by path.
pub const INFO_CHILDREN: usize = 100;

/// The kinds of actor in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActorKind {
    Supervisor,
    Sensor,
    Sink,
    Consumer,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Supervisor => "supervisor",
            ActorKind::Sensor => "sensor",
            ActorKind::Sink => "sink",
            ActorKind::Consumer => "consumer",
        }
    }
}

/// Gives an actor's own state snapshot (for kinds whose state the directory's readers
/// cannot find elsewhere, e.g. consumers).
pub type StateFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// One actor of the tree.
pub struct ActorEntry {
    /// Its path when it is not `{parent}/{name}` (see [`path`](Self::path)): a million
    /// sensors keep no copy of their district's path.
    own_path: Option<Box<str>>,
    /// Its id among its parent's children (the sensor id, the sink's `mqtt:name`...).
    /// A sensor's is the same allocation as its twin's key and its child spec's id.
    pub name: Arc<str>,
    pub kind: ActorKind,
    /// Shared by all children of one parent (a district has up to a million).
    pub parent: Option<Arc<str>>,
    children: RwLock<Vec<Arc<ActorEntry>>>,
    pub mailbox: MailboxSlot,
    /// The parent supervisor's view, where its restarts and failures are recorded.
    pub parent_stats: Option<SupervisorStats>,
    /// Its own view, if it is a supervisor.
    pub own_stats: Option<SupervisorStats>,
    cell: RwLock<Option<ActorCell>>,
    state: RwLock<Option<StateFn>>,
}

impl ActorEntry {
    pub fn new(
        path: String,
        name: Arc<str>,
        kind: ActorKind,
        parent: Option<Arc<str>>,
        parent_stats: Option<SupervisorStats>,
        own_stats: Option<SupervisorStats>,
        mailbox: MailboxSlot,
    ) -> ActorEntry {
        let derived = parent.as_deref().is_some_and(|p| {
            !name.contains('/')
                && path.len() == p.len() + 1 + name.len()
                && path.starts_with(p)
                && path[p.len()..].starts_with('/')
                && path.ends_with(&*name)
        });
        ActorEntry {
            own_path: if derived { None } else { Some(path.into_boxed_str()) },
            name,
            kind,
            parent,
            children: RwLock::new(Vec::new()),
            mailbox,
            parent_stats,
            own_stats,
            cell: RwLock::new(None),
            state: RwLock::new(None),
        }
    }

    /// Its path in the tree, e.g. `root/twins/Fort-de-France/aq-fdf-01`.
    pub fn path(&self) -> Cow<'_, str> {
        match (&self.own_path, &self.parent) {
            (Some(p), _) => Cow::Borrowed(p),
            (None, Some(parent)) => Cow::Owned(format!("{parent}/{}", self.name)),
            (None, None) => Cow::Borrowed(&self.name),
        }
    }

    /// A new incarnation started.
    pub fn attach(&self, cell: ActorCell) {
        self.mailbox.restart();
        if let Ok(mut c) = self.cell.write() {
            *c = Some(cell);
        }
    }

    /// Set how the actor's state snapshot is read.
    pub fn set_state(&self, f: StateFn) {
        if let Ok(mut s) = self.state.write() {
            *s = Some(f);
        }
    }

    /// The actor's state snapshot, if it gave a way to read it.
    pub fn state(&self) -> Option<serde_json::Value> {
        let f = self.state.read().ok().and_then(|s| s.clone())?;
        Some(f())
    }

    pub fn children(&self) -> Vec<String> {
        self.children.read().map(|c| c.iter().map(|e| e.path().into_owned()).collect()).unwrap_or_default()
    }

    /// The first `max` children, and how many there are.
    pub fn children_head(&self, max: usize) -> (Vec<String>, usize) {
        self.children
            .read()
            .map(|c| (c.iter().take(max).map(|e| e.path().into_owned()).collect(), c.len()))
            .unwrap_or_default()
    }

    pub fn cell(&self) -> Option<ActorCell> {
        self.cell.read().ok().and_then(|c| c.clone())
    }

    /// Whether it runs, and its restarts: the cheap part of [`info`](Self::info), for
    /// summaries over many actors.
    pub fn brief(&self) -> (bool, u32) {
        let child = self.parent_stats.as_ref().and_then(|s| s.child_brief(&self.name));
        match child {
            Some((status, restarts)) if !matches!(status, ChildStatus::Running | ChildStatus::Starting) => {
                (false, restarts)
            }
            Some((_, restarts)) => (self.cell().is_some_and(|c| c.get_status() == ActorStatus::Running), restarts),
            None => (self.cell().is_some_and(|c| c.get_status() == ActorStatus::Running), 0),
        }
    }

    /// The actor as the inspection API shows it.
    pub fn info(&self) -> ActorInfo {
        let cell = self.cell();
        let (children, children_total) = self.children_head(INFO_CHILDREN);
        let child = self.parent_stats.as_ref().and_then(|s| s.child(&self.name));
        let status = match (&child, &cell) {
            (Some(c), _) if !matches!(c.status, ChildStatus::Running | ChildStatus::Starting) => {
                child_status(&c.status)
            }
            (_, Some(cell)) => actor_status(cell.get_status()),
            (Some(c), None) => child_status(&c.status),
            (None, None) => "unstarted".to_string(),
        };
        let (handled, depth, last) = match &self.own_stats {
            Some(own) => {
                let h = own.header();
                (h.messages_handled, None, h.last_message_at_unix_ms)
            }
            None => (self.mailbox.handled_total(), Some(self.mailbox.depth()), self.mailbox.last_handled_ms()),
        };
        let restarts = match (&child, &self.own_stats) {
            (Some(c), _) => c.restarts,
            (None, _) => 0,
        };
        ActorInfo {
            path: self.path().into_owned(),
            name: self.name.to_string(),
            kind: self.kind,
            status,
            parent: self.parent.as_deref().map(String::from),
            children,
            children_total,
            restarts,
            last_failure: child.and_then(|c| c.last_failure),
            messages_handled: handled,
            queue_depth: depth,
            since_last_message_ms: last.map(|t| now_ms().saturating_sub(t)),
            actor_id: cell.map(|c| c.get_id().to_string()),
        }
    }
}

fn child_status(s: &ChildStatus) -> String {
    match s {
        ChildStatus::Starting => "starting",
        ChildStatus::Running => "running",
        ChildStatus::Restarting { .. } => "restarting",
        ChildStatus::Stopped => "stopped",
        ChildStatus::Failed => "failed",
    }
    .to_string()
}

fn actor_status(s: ActorStatus) -> String {
    match s {
        ActorStatus::Unstarted => "unstarted",
        ActorStatus::Starting => "starting",
        ActorStatus::Running => "running",
        ActorStatus::Upgrading => "upgrading",
        ActorStatus::Draining => "draining",
        ActorStatus::Stopping => "stopping",
        ActorStatus::Stopped => "stopped",
    }
    .to_string()
}

/// What the inspection API shows of an actor.
#[derive(Debug, Clone, Serialize)]
pub struct ActorInfo {
    pub path: String,
    pub name: String,
    pub kind: ActorKind,
    /// ractor's status of the current incarnation, or the supervisor's view while it has
    /// none (`restarting`, `stopped`, `failed`).
    pub status: String,
    pub parent: Option<String>,
    /// The first [`INFO_CHILDREN`] children's paths (a district may have 100,000).
    pub children: Vec<String>,
    pub children_total: usize,
    pub restarts: u32,
    pub last_failure: Option<FailureRecord>,
    pub messages_handled: u64,
    /// Messages sent to it and not yet handled (not counted for supervisors: their
    /// messages come from ractor itself).
    pub queue_depth: Option<u64>,
    pub since_last_message_ms: Option<u64>,
    pub actor_id: Option<String>,
}

/// Every actor of the tree, in tree order (parents before children).
///
/// Entries whose path is `{parent}/{name}` (all of the runtime's) are found by name, with
/// the name shared with the entry: no path is stored per sensor. The second entry of a
/// name (names are unique among siblings only) is indexed by its path.
#[derive(Default)]
pub struct Directory {
    order: Vec<Arc<ActorEntry>>,
    /// Entries with a path of their own.
    by_path: FxHashMap<Box<str>, u32>,
    /// Entries whose path is their parent's and their name: the first one of each name.
    by_name: FxHashMap<Arc<str>, u32>,
}

impl Directory {
    /// Add an entry under its parent (which must have been added before it).
    pub fn add(&mut self, entry: ActorEntry) -> Arc<ActorEntry> {
        let entry = Arc::new(entry);
        if let Some(parent) = entry.parent.as_deref().and_then(|p| self.get(p)) {
            if let Ok(mut c) = parent.children.write() {
                c.push(entry.clone());
            }
        }
        let at = self.order.len() as u32;
        match &entry.own_path {
            Some(p) => {
                self.by_path.insert(p.clone(), at);
            }
            None => match self.by_name.entry(entry.name.clone()) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(at);
                }
                // Names are unique among siblings only: another of that name is found by path.
                std::collections::hash_map::Entry::Occupied(_) => {
                    self.by_path.insert(entry.path().into(), at);
                }
            },
        }
        self.order.push(entry.clone());
        entry
    }

    pub fn get(&self, path: &str) -> Option<&Arc<ActorEntry>> {
        if let Some(i) = self.by_path.get(path) {
            return self.order.get(*i as usize);
        }
        let (parent, name) = path.rsplit_once('/')?;
        let e = self.order.get(*self.by_name.get(name)? as usize)?;
        (e.parent.as_deref() == Some(parent)).then_some(e)
    }

    pub fn entries(&self) -> &[Arc<ActorEntry>] {
        &self.order
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_ms_of_an_instant_reads_as_the_system_clock() {
        let (before, at, after) = (now_ms(), std::time::Instant::now(), now_ms());
        let w = wall_ms(at);
        assert!(w + 5 >= before && w <= after + 5, "{before} <= {w} <= {after}, within 5 ms");
        let later = at + std::time::Duration::from_millis(1500);
        // Whole milliseconds on either side of the anchor: at most 1 ms of rounding.
        assert!((1499..=1501).contains(&(wall_ms(later) - w)));
        let earlier = at - std::time::Duration::from_millis(200);
        assert!((199..=201).contains(&(w - wall_ms(earlier))));
    }

    #[test]
    fn mailbox_depth_counts_in_minus_out_and_resets_at_restart() {
        let m = Mailbox::default();
        m.enqueue();
        m.enqueue();
        m.handled();
        assert_eq!(m.depth(), 1);
        m.restart();
        assert_eq!(m.depth(), 0);
        assert_eq!(m.handled_total(), 1);
        assert!(m.last_handled_ms().is_some());
    }

    #[test]
    fn children_are_linked_to_their_parent() {
        let mut d = Directory::default();
        let mk = |p: &str, parent: Option<&str>| {
            ActorEntry::new(
                p.into(),
                p.into(),
                ActorKind::Supervisor,
                parent.map(Arc::from),
                None,
                None,
                Default::default(),
            )
        };
        d.add(mk("root", None));
        d.add(mk("root/a", Some("root")));
        d.add(mk("root/b", Some("root")));
        assert_eq!(d.get("root").map(|e| e.children()), Some(vec!["root/a".to_string(), "root/b".to_string()]));
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn entries_are_found_by_path_whether_or_not_they_store_it() {
        let mut d = Directory::default();
        let mk = |path: &str, name: &str, parent: Option<&str>| {
            ActorEntry::new(
                path.into(),
                name.into(),
                ActorKind::Sensor,
                parent.map(Arc::from),
                None,
                None,
                Default::default(),
            )
        };
        d.add(mk("root", "root", None));
        d.add(mk("root/x", "x", Some("root")));
        d.add(mk("root/x/s-1", "s-1", Some("root/x")));
        d.add(mk("root/y", "y", Some("root")));
        // Same name under another parent.
        d.add(mk("root/y/s-1", "s-1", Some("root/y")));
        // A path that is not parent/name.
        d.add(mk("elsewhere/z", "z", Some("root")));
        for path in ["root", "root/x", "root/x/s-1", "root/y/s-1", "elsewhere/z"] {
            assert_eq!(d.get(path).map(|e| e.path().into_owned()), Some(path.to_string()), "{path}");
        }
        assert_eq!(d.get("root/x/s-1").map(|e| e.parent.as_deref().map(String::from)), Some(Some("root/x".into())));
        assert!(d.get("root/z").is_none());
        assert!(d.get("root/x/s-2").is_none());
        assert!(d.get("root/y/x").is_none());
    }
}
