//! A real OGC SensorThings API v1.1 server for the tests: `django-ogc-sensorthings` 1.2.0
//! (PyPI) on SQLite, in a Django project written into a temp dir, run by Django's dev server
//! on a free 127.0.0.1 port. `scripts/sensorthings-venv.sh` (called by `scripts/test.sh`)
//! installs it into `target/sensorthings-venv` (or `$TWINRT_STA_VENV`).
//!
//! What the package is, learned by reading it and trying it with curl:
//! - Apps: `sensorthings.versions.v1_1` (the API), `sensorthings.versions.v1_1.backends.django`
//!   (the ORM backend, its models migrated by `manage.py migrate`) and, optionally,
//!   `sensorthings.versions.v1_1.extensions.dataarray` (adds `POST /CreateObservations` and the
//!   `.../req/data-array` conformance class in the service root). Settings:
//!   `SENSORTHINGS_V1_1_SERVICE_URL` (used to build every selfLink, nextLink and `Location`:
//!   it must carry the real port), `..._BACKEND_ADAPTER` (the Django adapter), `..._ID_TYPE`
//!   (`UUID` here), `..._ID_DELIMITER` (`'`: paths are `Things('<uuid>')`). The URL conf is
//!   included under a prefix and adds `v1.1/` itself; the service root is `.../v1.1/` (the
//!   form without the slash answers 301).
//! - Ids are JSON strings (UUID v7) in `@iot.id`; FROST uses integers: the sink keeps them as
//!   opaque JSON values.
//! - `POST /Things` (and every other set) answers `201` with an EMPTY body and
//!   `Location: http://.../v1.1/Things('<uuid>')`; deep inserts work (`Locations` inline).
//! - `POST /Datastreams('<id>')/Observations` answers 405: observations are posted to
//!   `/Observations` with `"Datastream": {"@iot.id": ...}`.
//! - `POST /Observations` naming a Datastream that does not exist answers **500**
//!   (`{"detail": "Internal server error"}`), not 404/400; `GET /Datastreams('<id>')` of an
//!   unknown id answers 404 (`{"detail": "Not found"}`). Validation errors are 422.
//! - `$filter=name eq 'it''s'` works (OData quotes doubled, URL-encoded or not).
//! - Collections hold at most 100 entities (`$top` default and max), with `@iot.nextLink`
//!   (`...?$top=2&$skip=2`) when there are more; `$count=true` gives `@iot.count`.
//! - `POST /$batch` exists but does nothing (it answers `{}` to a multipart request, 405 to
//!   JSON), and the conformance list does not claim it; `POST /CreateObservations` (dataArray)
//!   works: it answers `201` with one selfLink per row, or `"error"` for each row of a group
//!   that failed (e.g. an unknown Datastream).
//! - To-one `$expand` is wrong: `Datastreams?$expand=Thing` shows the same Thing for every
//!   Datastream; to-many expands (`Things?$expand=Datastreams`) are right.
//! - `Sensor.encodingType` must be `application/pdf`, SensorML 2.0 or `text/html`.
//! - Result times come back as `2026-11-25T01:00:10+00:00`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{free_port, wait_until_async, ChildGuard};

/// How long the dev server may take to answer after it was started.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// The URL prefix the Django project mounts the API under (the package adds `v1.1`).
const PREFIX: &str = "sta";

const SETTINGS_PY: &str = r#"import os
from uuid import UUID

SECRET_KEY = "twinrt-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "sensorthings.versions.v1_1",
    "sensorthings.versions.v1_1.backends.django",
    "sensorthings.versions.v1_1.extensions.dataarray",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "staproject.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["TWINRT_STA_DB"],
        # The dev server is threaded: writers take SQLite's lock up front and wait for it
        # (a deferred transaction upgrading to a write fails at once with "locked").
        "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
    }
}
USE_TZ = True
LOGGING = {"version": 1, "disable_existing_loggers": False}
SENSORTHINGS_V1_1_SERVICE_URL = os.environ["TWINRT_STA_SERVICE_URL"]
SENSORTHINGS_V1_1_BACKEND_ADAPTER = "sensorthings.versions.v1_1.backends.django.adapter.DjangoBackendAdapter"
SENSORTHINGS_V1_1_ID_TYPE = UUID
SENSORTHINGS_V1_1_ID_DELIMITER = "'"
"#;

const URLS_PY: &str = r#"from django.urls import include, path

urlpatterns = [path("sta/", include("sensorthings.versions.v1_1.urls"))]
"#;

const MANAGE_PY: &str = r#"import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "staproject.settings")
from django.core.management import execute_from_command_line

execute_from_command_line(sys.argv)
"#;

/// The venv `scripts/sensorthings-venv.sh` creates.
pub fn sta_venv() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match std::env::var_os("TWINRT_STA_VENV") {
        Some(p) => root.join(p),
        None => root.join("target/sensorthings-venv"),
    }
}

/// A running django-ogc-sensorthings server (killed on drop).
pub struct StaServer {
    dir: tempfile::TempDir,
    python: PathBuf,
    port: u16,
    child: Option<ChildGuard>,
}

impl StaServer {
    /// Write the Django project, migrate, run the dev server, wait until it answers.
    pub async fn start() -> Result<StaServer, String> {
        let python = sta_venv().join("bin/python");
        if !python.exists() {
            return Err(format!(
                "SensorThings server not installed: run scripts/sensorthings-venv.sh (or scripts/test.sh) (no {})",
                python.display()
            ));
        }
        let dir = tempfile::Builder::new().prefix("twinrt-sta-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let project = dir.path().join("staproject");
        std::fs::create_dir_all(&project).map_err(|e| format!("{}: {e}", project.display()))?;
        for (path, text) in [
            (project.join("__init__.py"), ""),
            (project.join("settings.py"), SETTINGS_PY),
            (project.join("urls.py"), URLS_PY),
            (dir.path().join("manage.py"), MANAGE_PY),
        ] {
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let mut server = StaServer { dir, python, port: free_port(), child: None };
        let mut migrate = server.manage(&["migrate", "--noinput"]);
        let out = tokio::task::spawn_blocking(move || migrate.output())
            .await
            .map_err(|e| format!("migrate: {e}"))?
            .map_err(|e| format!("cannot run manage.py migrate: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "manage.py migrate failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // An empty, migrated database to go back to (`reset_db`).
        std::fs::copy(server.db(), server.pristine()).map_err(|e| format!("copy the migrated database: {e}"))?;
        server.start_again().await?;
        Ok(server)
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("db.sqlite3")
    }

    fn pristine(&self) -> PathBuf {
        self.dir.path().join("pristine.sqlite3")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn manage(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.python);
        c.arg(self.dir.path().join("manage.py"))
            .args(args)
            .current_dir(self.dir.path())
            .env("DJANGO_SETTINGS_MODULE", "staproject.settings")
            .env("TWINRT_STA_DB", self.db())
            .env("TWINRT_STA_SERVICE_URL", format!("http://127.0.0.1:{}/{PREFIX}", self.port))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null());
        c
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The base URL a sink is given: `http://127.0.0.1:PORT/sta/v1.1`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/{PREFIX}/v1.1", self.port)
    }

    /// The last lines of the server's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Kill the server (the database stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Start the server again on the same port and database; returns once it answers.
    pub async fn start_again(&mut self) -> Result<(), String> {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("server log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("server log: {e}"))?;
        let child = self
            .manage(&["runserver", &format!("127.0.0.1:{}", self.port), "--noreload", "--skip-checks"])
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .map_err(|e| format!("cannot start the SensorThings dev server: {e}"))?;
        self.child = Some(ChildGuard::new(child));
        let url = format!("{}/", self.base_url());
        let client = reqwest::Client::new();
        let mut exited = None;
        let ready = wait_until_async("the SensorThings server to answer", START_DEADLINE, || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait()) {
                exited = Some(status);
            }
            let client = client.clone();
            let url = url.clone();
            let gone = exited.is_some();
            async move {
                gone || matches!(
                    client.get(&url).timeout(Duration::from_secs(2)).send().await,
                    Ok(r) if r.status().is_success()
                )
            }
        })
        .await;
        if let Some(status) = exited {
            self.child = None;
            return Err(format!("the SensorThings dev server exited ({status}):\n{}", self.log_tail()));
        }
        ready.map_err(|e| format!("{e}\n{}", self.log_tail()))
    }

    /// Lose every entity: stop, put the empty migrated database back, start again.
    pub async fn reset_db(&mut self) -> Result<(), String> {
        self.stop();
        std::fs::copy(self.pristine(), self.db()).map_err(|e| format!("restore the empty database: {e}"))?;
        self.start_again().await
    }

    /// A client of this server's API.
    pub fn client(&self) -> StaClient {
        StaClient::new(&self.base_url())
    }
}

/// A small SensorThings client for assertions.
#[derive(Clone)]
pub struct StaClient {
    http: reqwest::Client,
    base: String,
}

impl StaClient {
    pub fn new(base: &str) -> StaClient {
        StaClient { http: reqwest::Client::new(), base: base.trim_end_matches('/').to_string() }
    }

    pub async fn get(&self, url: &str) -> Result<Value, String> {
        let resp =
            self.http.get(url).timeout(Duration::from_secs(20)).send().await.map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| format!("GET {url}: body: {e}"))?;
        if !status.is_success() {
            return Err(format!("GET {url}: {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("GET {url}: not JSON ({e}): {text}"))
    }

    /// Every entity of a collection (`path_and_query` relative to the base, e.g.
    /// `Things?$expand=Locations`), following `@iot.nextLink`.
    pub async fn list(&self, path_and_query: &str) -> Result<Vec<Value>, String> {
        let mut url = format!("{}/{path_and_query}", self.base);
        let mut all = Vec::new();
        for _ in 0..10_000 {
            let page = self.get(&url).await?;
            let values = page["value"].as_array().ok_or_else(|| format!("GET {url}: no value array: {page}"))?;
            all.extend(values.iter().cloned());
            match page["@iot.nextLink"].as_str() {
                Some(next) => url = next.to_string(),
                None => return Ok(all),
            }
        }
        Err(format!("{path_and_query}: more than 10000 pages"))
    }

    // Links are read through to-many expands only: django-ogc-sensorthings 1.2.0 expands
    // `Datastreams?$expand=Thing` wrongly (every Datastream shows the same Thing).

    /// Every Thing with its `Locations` and `Datastreams`.
    pub async fn things(&self) -> Result<Vec<Value>, String> {
        self.list("Things?$expand=Locations,Datastreams").await
    }

    pub async fn datastreams(&self) -> Result<Vec<Value>, String> {
        self.list("Datastreams").await
    }

    /// Every Sensor with its `Datastreams`.
    pub async fn sensors(&self) -> Result<Vec<Value>, String> {
        self.list("Sensors?$expand=Datastreams").await
    }

    /// Every ObservedProperty with its `Datastreams`.
    pub async fn observed_properties(&self) -> Result<Vec<Value>, String> {
        self.list("ObservedProperties?$expand=Datastreams").await
    }

    /// Every Observation of a Datastream (`id` as the server gave it).
    pub async fn observations_of(&self, datastream: &Value) -> Result<Vec<Value>, String> {
        let id = match datastream {
            Value::String(s) => format!("'{s}'"),
            other => other.to_string(),
        };
        self.list(&format!("Datastreams({id})/Observations")).await
    }
}

/// An HTTP proxy in front of a server (the dev server cannot be made to answer 500 on demand,
/// and killing it in the middle of a request may commit what it never confirms): it answers
/// 500 to everything while `set_failing(true)`, and refuses connections between `go_down()`
/// and `come_back()` (requests already being forwarded complete). Listens on 127.0.0.1.
pub struct FaultProxy {
    port: u16,
    state: ProxyState,
    task: Option<tokio::task::JoinHandle<()>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    failing: Arc<AtomicBool>,
    refused: Arc<std::sync::atomic::AtomicU64>,
}

async fn proxy(
    axum::extract::State(st): axum::extract::State<ProxyState>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if st.failing.load(Ordering::SeqCst) {
        st.refused.fetch_add(1, Ordering::SeqCst);
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "injected failure").into_response();
    }
    let url = format!("{}{}", st.upstream, uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut req = st.client.request(method, &url).body(body);
    for name in [axum::http::header::CONTENT_TYPE, axum::http::header::ACCEPT, axum::http::header::AUTHORIZATION] {
        if let Some(v) = headers.get(&name) {
            req = req.header(name, v);
        }
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            let mut out_headers = axum::http::HeaderMap::new();
            for name in [axum::http::header::CONTENT_TYPE, axum::http::header::LOCATION] {
                if let Some(v) = resp.headers().get(&name) {
                    out_headers.insert(name, v.clone());
                }
            }
            match resp.bytes().await {
                Ok(bytes) => (status, out_headers, bytes).into_response(),
                Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            }
        }
        Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

impl FaultProxy {
    /// Proxy `http://127.0.0.1:PORT/...` to `http://127.0.0.1:{upstream_port}/...`.
    pub async fn start(upstream_port: u16) -> Result<FaultProxy, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("proxy bind: {e}"))?;
        let port = listener.local_addr().map_err(|e| format!("proxy addr: {e}"))?.port();
        let state = ProxyState {
            upstream: format!("http://127.0.0.1:{upstream_port}"),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(0)
                .build()
                .map_err(|e| format!("proxy client: {e}"))?,
            failing: Arc::new(AtomicBool::new(false)),
            refused: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        };
        let mut p = FaultProxy { port, state, task: None, shutdown: None };
        p.serve(listener);
        Ok(p)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = axum::Router::new().fallback(proxy).with_state(self.state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.shutdown = Some(tx);
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        }));
    }

    /// The proxied form of a server URL: same path, the proxy's port.
    pub fn url_for(&self, server: &StaServer) -> String {
        server.base_url().replace(&format!(":{}/", server.port()), &format!(":{}/", self.port))
    }

    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Requests answered 500 so far.
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Stop accepting connections; returns once the requests being forwarded are answered
    /// and every connection is closed (new ones are refused from then on).
    pub async fn go_down(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Listen again on the same port.
    pub async fn come_back(&mut self) -> Result<(), String> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .map_err(|e| format!("proxy rebind 127.0.0.1:{}: {e}", self.port))?;
        self.serve(listener);
        Ok(())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
