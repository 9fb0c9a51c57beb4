//! A real Mosquitto broker for integration tests: temp dir with config, certificates, log and
//! (optionally) persistence; listens on 127.0.0.1 only; killed and cleaned up on drop.

use super::certs::{write_server_certs, CertFiles};
use super::mqtt::{probe_connect, Endpoint};
use super::{free_port, is_root, POLL_INTERVAL};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The error when the mosquitto binary is missing.
pub const MOSQUITTO_MISSING: &str = "mosquitto not found: install it with 'apt-get install -y mosquitto' (or run the README's test command: scripts/test.sh)";

/// How [`Mosquitto::start_with`] configures the broker.
#[derive(Clone, Debug)]
pub struct MosquittoOptions {
    /// TLS listener with a fresh CA + server certificate (localhost, 127.0.0.1).
    pub tls: bool,
    /// Fixed port; None = a free port (retried on a bind race).
    pub port: Option<u16>,
    /// `persistence true` with `persistence_location` in the temp dir. Mosquitto writes the DB on
    /// graceful shutdown ([`Mosquitto::terminate`]) and every `autosave_interval` seconds; a
    /// SIGKILL ([`Mosquitto::kill`]) loses whatever was not saved yet.
    pub persistence: bool,
    /// `autosave_interval` in seconds (only with persistence).
    pub autosave_interval: Option<u32>,
    /// `log_type all` (includes every PUBLISH/PUBACK, handy for lost-message debugging);
    /// false = error, warning, notice, information.
    pub verbose_log: bool,
    /// Extra config lines appended verbatim (e.g. "max_queued_messages 100000").
    pub extra_config: Vec<String>,
    /// Deadline for "port accepts TCP and a CONNECT gets a CONNACK" at start and restart.
    pub ready_deadline: Duration,
    /// Mosquitto binary; None = $MOSQUITTO_BIN, /usr/sbin/mosquitto, then $PATH.
    pub binary: Option<PathBuf>,
}

impl Default for MosquittoOptions {
    fn default() -> Self {
        MosquittoOptions {
            tls: false,
            port: None,
            persistence: false,
            autosave_interval: None,
            verbose_log: true,
            extra_config: Vec::new(),
            ready_deadline: Duration::from_secs(10),
            binary: None,
        }
    }
}

impl MosquittoOptions {
    pub fn plain() -> Self {
        Self::default()
    }

    pub fn tls() -> Self {
        MosquittoOptions { tls: true, ..Self::default() }
    }

    /// Persistence on, autosaving every `autosave_interval_secs` seconds (Some(1) makes queued
    /// messages of persistent sessions survive a SIGKILL taken > 1 s later).
    pub fn with_persistence(mut self, autosave_interval_secs: Option<u32>) -> Self {
        self.persistence = true;
        self.autosave_interval = autosave_interval_secs;
        self
    }

    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    pub fn with_config_line(mut self, line: &str) -> Self {
        self.extra_config.push(line.to_string());
        self
    }
}

/// Finds the mosquitto binary, or Err([`MOSQUITTO_MISSING`]).
pub fn mosquitto_binary(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.is_file() { Ok(p.to_path_buf()) } else { Err(MOSQUITTO_MISSING.to_string()) };
    }
    if let Some(p) = std::env::var_os("MOSQUITTO_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(MOSQUITTO_MISSING.to_string()) };
    }
    let sbin = PathBuf::from("/usr/sbin/mosquitto");
    if sbin.is_file() {
        return Ok(sbin);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("mosquitto");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(MOSQUITTO_MISSING.to_string())
}

/// A running (or killed, restartable) Mosquitto. Drop kills it and removes its temp dir.
pub struct Mosquitto {
    // `child` is declared before `dir` so the process dies before its directory is removed.
    child: Option<Child>,
    port: u16,
    binary: PathBuf,
    certs: Option<CertFiles>,
    conf_path: PathBuf,
    log_path: PathBuf,
    stderr_path: PathBuf,
    opts: MosquittoOptions,
    starts: u32,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Plain MQTT on 127.0.0.1:free port, anonymous, no persistence.
    pub async fn start_plain() -> Result<Mosquitto, String> {
        Self::start_with(MosquittoOptions::plain()).await
    }

    /// MQTT over TLS with a fresh CA ([`Mosquitto::ca_file`]) and a server certificate for
    /// `localhost` and 127.0.0.1.
    pub async fn start_tls() -> Result<Mosquitto, String> {
        Self::start_with(MosquittoOptions::tls()).await
    }

    /// Starts and waits (≤ `opts.ready_deadline`) until the port accepts TCP and a CONNECT gets a
    /// CONNACK. Errors include the broker log.
    pub async fn start_with(opts: MosquittoOptions) -> Result<Mosquitto, String> {
        let binary = mosquitto_binary(opts.binary.as_deref())?;
        let dir = tempfile::Builder::new()
            .prefix("twinrt-mosquitto-")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir for mosquitto: {e}"))?;
        let certs = if opts.tls { Some(write_server_certs(dir.path())?) } else { None };
        if opts.persistence {
            std::fs::create_dir_all(dir.path().join("data"))
                .map_err(|e| format!("cannot create the persistence dir: {e}"))?;
        }
        let mut m = Mosquitto {
            child: None,
            port: opts.port.unwrap_or_else(free_port),
            binary,
            certs,
            conf_path: dir.path().join("mosquitto.conf"),
            log_path: dir.path().join("mosquitto.log"),
            stderr_path: dir.path().join("mosquitto.stderr"),
            opts,
            starts: 0,
            dir,
        };
        let mut attempt = 1;
        loop {
            m.write_config()?;
            match m.spawn_and_wait().await {
                Ok(()) => return Ok(m),
                // Someone grabbed our free port between free_port() and mosquitto's bind.
                Err(e) if m.opts.port.is_none() && attempt < 3 && m.log().contains("Address already in use") => {
                    let _ = e;
                    m.kill();
                    m.port = free_port();
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn write_config(&self) -> Result<(), String> {
        let d = self.dir.path();
        let mut c =
            vec!["# written by tests/support/mosquitto.rs".to_string(), format!("listener {} 127.0.0.1", self.port)];
        if let Some(certs) = &self.certs {
            c.push(format!("cafile {}", certs.ca.display()));
            c.push(format!("certfile {}", certs.cert.display()));
            c.push(format!("keyfile {}", certs.key.display()));
        }
        c.push("allow_anonymous true".into());
        if self.opts.persistence {
            c.push("persistence true".into());
            // Mosquitto wants the trailing slash.
            c.push(format!("persistence_location {}/", d.join("data").display()));
            c.push("persistence_file mosquitto.db".into());
            if let Some(secs) = self.opts.autosave_interval {
                c.push(format!("autosave_interval {secs}"));
            }
        } else {
            c.push("persistence false".into());
        }
        c.push(format!("log_dest file {}", self.log_path.display()));
        if self.opts.verbose_log {
            c.push("log_type all".into());
        } else {
            for t in ["error", "warning", "notice", "information"] {
                c.push(format!("log_type {t}"));
            }
        }
        c.push("log_timestamp true".into());
        c.push("log_timestamp_format %H:%M:%S".into());
        c.push("connection_messages true".into());
        if is_root() {
            // Otherwise mosquitto drops to user `mosquitto` and cannot read its key / temp dir.
            c.push("user root".into());
        }
        c.extend(self.opts.extra_config.iter().cloned());
        c.push(String::new());
        std::fs::write(&self.conf_path, c.join("\n"))
            .map_err(|e| format!("cannot write {}: {e}", self.conf_path.display()))
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.spawn()?;
        self.wait_ready().await
    }

    fn spawn(&mut self) -> Result<(), String> {
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .map_err(|e| format!("cannot open {}: {e}", self.stderr_path.display()))?;
        let stdout = stderr.try_clone().map_err(|e| format!("cannot dup the stderr file: {e}"))?;
        self.starts += 1;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.conf_path)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    MOSQUITTO_MISSING.to_string()
                } else {
                    format!("cannot start {}: {e}", self.binary.display())
                }
            })?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = self.opts.ready_deadline;
        let start = Instant::now();
        let mut tcp_ok = false;
        let mut last_err = String::from("none yet");
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!(
                    "mosquitto exited ({status}) before it was ready on {}\n{}",
                    self.url(),
                    self.log_for_error()
                ));
            }
            if !tcp_ok {
                match tokio::time::timeout(
                    Duration::from_millis(500),
                    tokio::net::TcpStream::connect(("127.0.0.1", self.port)),
                )
                .await
                {
                    Ok(Ok(_)) => tcp_ok = true,
                    Ok(Err(e)) => last_err = format!("TCP connect: {e}"),
                    Err(_) => last_err = "TCP connect timed out".into(),
                }
            }
            if tcp_ok {
                let left = deadline.saturating_sub(start.elapsed());
                let probe_timeout = left.clamp(Duration::from_secs(1), Duration::from_secs(3));
                match probe_connect(&self.endpoint(), probe_timeout).await {
                    Ok(()) => return Ok(()),
                    Err(e) => last_err = format!("MQTT CONNECT: {e}"),
                }
            }
            if start.elapsed() >= deadline {
                return Err(format!(
                    "mosquitto on {} not ready after {deadline:?} (last error: {last_err})\n{}",
                    self.url(),
                    self.log_for_error()
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_tls(&self) -> bool {
        self.certs.is_some()
    }

    /// "mqtt://127.0.0.1:PORT" or "mqtts://127.0.0.1:PORT".
    pub fn url(&self) -> String {
        self.endpoint().url()
    }

    /// Host 127.0.0.1, the port, and the CA file for TLS.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint { host: "127.0.0.1".into(), port: self.port, ca_file: self.ca_file() }
    }

    /// The generated CA certificate (PEM) that signed the server certificate (TLS only).
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.certs.as_ref().map(|c| c.ca.clone())
    }

    pub fn cert_files(&self) -> Option<&CertFiles> {
        self.certs.as_ref()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn conf_path(&self) -> &Path {
        &self.conf_path
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// How many times the process was spawned (1 after start, +1 per restart).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// True while the process runs (reaps it if it died).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// The broker's log file (all starts appended) plus anything it wrote to stdout/stderr.
    pub fn log(&self) -> String {
        let mut s = std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(no log file {}: {e})\n", self.log_path.display()));
        if let Ok(b) = std::fs::read(&self.stderr_path) {
            if !b.is_empty() {
                s.push_str("--- stdout/stderr ---\n");
                s.push_str(&String::from_utf8_lossy(&b));
            }
        }
        s
    }

    /// The last `max_chars` characters of [`Mosquitto::log`].
    pub fn log_tail(&self, max_chars: usize) -> String {
        let log = self.log();
        let n = log.chars().count();
        if n <= max_chars {
            log
        } else {
            let tail: String = log.chars().skip(n - max_chars).collect();
            format!("[... {} earlier chars]\n{tail}", n - max_chars)
        }
    }

    fn log_for_error(&self) -> String {
        format!(
            "--- mosquitto log ({}) ---\n{}\n--- mosquitto.conf ---\n{}",
            self.log_path.display(),
            self.log_tail(6000),
            std::fs::read_to_string(&self.conf_path).unwrap_or_default()
        )
    }

    /// SIGKILL (Child::kill) and reap. No-op if not running.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Graceful stop (SIGTERM via the `kill` command; Mosquitto then saves its persistence DB);
    /// falls back to SIGKILL after 10 s.
    pub async fn terminate(&mut self) -> Result<(), String> {
        let Some(child) = self.child.as_mut() else { return Ok(()) };
        let pid = child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status();
        if !matches!(status, Ok(s) if s.success()) {
            self.kill();
            return Err(format!("kill -TERM {pid} failed ({status:?}); used SIGKILL"));
        }
        let start = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return Ok(());
                }
            }
            if start.elapsed() >= Duration::from_secs(10) {
                self.kill();
                return Err(format!("mosquitto {pid} ignored SIGTERM for 10 s; used SIGKILL"));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// (Re)starts on the same port with the same config and certificates, killing a running
    /// instance first, and waits until ready.
    pub async fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn_and_wait().await
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}
