//! Shared integration-test support for twinrt.
//!
//! Use from an integration test file with `mod support;` (each test file compiles this module
//! separately, hence the `dead_code` allowance).
//!
//! * [`free_port`], [`wait_until`], [`wait_until_async`], [`wait_until_blocking`]
//! * [`Mosquitto`]: a real Mosquitto broker (plain or TLS with a fresh CA) in a temp dir,
//!   killable / restartable on the same port.
//! * [`Subscriber`] / [`Publisher`]: rumqttc clients driven by a background task.
//! * [`TestCa`], [`write_server_certs`]: rcgen 0.13 certificate helpers.
//! * [`ChildGuard`]: kills a spawned process on drop.
//! * [`pulsar::PulsarBroker`]: a Pulsar binary-protocol broker (subset) in memory.
#![allow(dead_code, unused_imports)]

pub mod certs;
pub mod mosquitto;
pub mod mqtt;
pub mod ngsild_server;
pub mod pandaproxy;
pub mod pulsar;
pub mod sensorthings;
pub mod victoria;

pub use certs::*;
pub use mosquitto::*;
pub use mqtt::*;
pub use victoria::*;

use std::future::Future;
use std::process::Child;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Poll interval of all `wait_*` helpers.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A port that was free on 127.0.0.1 a moment ago (bind 127.0.0.1:0, read the port, drop).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("cannot bind 127.0.0.1:0 to find a free port");
    listener.local_addr().expect("local_addr of a bound listener").port()
}

fn timeout_message(what: &str, deadline: Duration) -> String {
    format!("timed out after {deadline:?} waiting for {what}")
}

/// Polls `f` every ~20 ms until it returns true, or fails after `deadline` with an error naming
/// `what` and the deadline.
pub async fn wait_until<F: FnMut() -> bool>(what: &str, deadline: Duration, mut f: F) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if f() {
            return Ok(());
        }
        if start.elapsed() >= deadline {
            return Err(timeout_message(what, deadline));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Like [`wait_until`] with an async predicate (e.g. an HTTP probe). A single predicate call is
/// not interrupted: keep each call short (give it its own timeout).
pub async fn wait_until_async<F, Fut>(what: &str, deadline: Duration, mut f: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return Ok(());
        }
        if start.elapsed() >= deadline {
            return Err(timeout_message(what, deadline));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Blocking variant of [`wait_until`] for plain `#[test]` functions (never call it on a tokio
/// runtime thread: it blocks the thread).
pub fn wait_until_blocking<F: FnMut() -> bool>(what: &str, deadline: Duration, mut f: F) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if f() {
            return Ok(());
        }
        if start.elapsed() >= deadline {
            return Err(timeout_message(what, deadline));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// True when the tests run as root (euid 0), found via `id -u` (no libc dependency).
pub fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// Kills (SIGKILL) and reaps the wrapped process on drop.
#[derive(Debug)]
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        ChildGuard(Some(child))
    }

    pub fn id(&self) -> Option<u32> {
        self.0.as_ref().map(|c| c.id())
    }

    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.0.as_mut()
    }

    /// Some(exit status) when the process has exited (non-blocking).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.0.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL + reap now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM (via the `kill` command) and waits up to `deadline` for the exit; falls back
    /// to SIGKILL. Returns the exit status if the process exited by itself.
    pub async fn terminate(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let child = self.0.as_mut()?;
        let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.0 = None;
                return Some(status);
            }
            if start.elapsed() >= deadline {
                self.kill();
                return None;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Gives the child back without killing it.
    pub fn into_inner(mut self) -> Option<Child> {
        self.0.take()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}
