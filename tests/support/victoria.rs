//! A real VictoriaMetrics server (Debian's `victoria-metrics`) for the InfluxDB v2 write
//! API: started on a free 127.0.0.1 port with its own data directory, stoppable and
//! restartable on the same port and data, killed on drop. It answers 204 even to lines it
//! cannot parse, so tests assert on what they read back through its export API.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const VICTORIA_MISSING: &str =
    "victoria-metrics not found: install it with 'apt-get install -y victoria-metrics' (or run scripts/test.sh)";

pub struct Victoria {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// One exported series.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub labels: serde_json::Map<String, Value>,
    pub values: Vec<f64>,
    pub timestamps: Vec<i64>,
}

fn binary() -> Result<PathBuf, String> {
    for p in ["/usr/bin/victoria-metrics", "/usr/local/bin/victoria-metrics"] {
        if std::path::Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    Err(VICTORIA_MISSING.to_string())
}

impl Victoria {
    pub async fn start() -> Result<Victoria, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let mut v = Victoria { port: super::free_port(), dir, child: None };
        v.start_again().await?;
        Ok(v)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Start (again) on the same port and data directory; wait until it is healthy.
    pub async fn start_again(&mut self) -> Result<(), String> {
        let bin = binary()?;
        let log = std::fs::File::create(self.dir.path().join("victoria.log")).map_err(|e| format!("log: {e}"))?;
        let child = Command::new(bin)
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!("-storageDataPath={}", self.dir.path().join("data").display()))
            .arg("-retentionPeriod=100y")
            .arg("-search.latencyOffset=0s")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start victoria-metrics: {e}"))?;
        self.child = Some(child);
        let health = format!("{}/health", self.url());
        let ok = super::wait_until_async("victoria-metrics to answer /health", Duration::from_secs(15), || async {
            matches!(reqwest::get(&health).await, Ok(r) if r.status().is_success())
        })
        .await;
        ok.map_err(|e| format!("{e}\n{}", self.log()))
    }

    /// SIGTERM (VictoriaMetrics flushes what it acknowledged), waiting for the exit: the
    /// server is down until `start_again`.
    pub async fn stop(&mut self) -> Result<(), String> {
        let Some(mut c) = self.child.take() else { return Ok(()) };
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            match c.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(super::POLL_INTERVAL).await;
                }
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    return Err("victoria-metrics did not stop within 15s after SIGTERM".into());
                }
            }
        }
    }

    /// SIGKILL: the server is down until `start_again`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("victoria.log")).unwrap_or_default()
    }

    /// Every series whose name matches the regular expression, with all its samples.
    pub async fn export(&self, name_regex: &str) -> Result<Vec<Series>, String> {
        let client = reqwest::Client::new();
        client
            .get(format!("{}/internal/force_flush", self.url()))
            .send()
            .await
            .map_err(|e| format!("force_flush: {e}"))?;
        let body = client
            .post(format!("{}/api/v1/export", self.url()))
            .form(&[("match[]", format!("{{__name__=~\"{name_regex}\"}}"))])
            .send()
            .await
            .map_err(|e| format!("export: {e}"))?
            .text()
            .await
            .map_err(|e| format!("export body: {e}"))?;
        let mut out = Vec::new();
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).map_err(|e| format!("export line {line}: {e}"))?;
            let mut labels = v["metric"].as_object().cloned().unwrap_or_default();
            let name = labels.remove("__name__").and_then(|n| n.as_str().map(String::from)).unwrap_or_default();
            let values =
                v["values"].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default();
            let timestamps =
                v["timestamps"].as_array().map(|a| a.iter().filter_map(Value::as_i64).collect()).unwrap_or_default();
            out.push(Series { name, labels, values, timestamps });
        }
        Ok(out)
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        self.kill();
    }
}
