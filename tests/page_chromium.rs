//! The live page at `GET /`: served from the binary with its assets and the map's GeoJSON,
//! then loaded in a real headless Chromium (Debian's `chromium` package) which must show the
//! supervision tree and every twin on the map. No fixed sleeps: every wait has a condition
//! and a deadline.
//!
//! Chromium is driven over the DevTools protocol on `--remote-debugging-pipe` (file
//! descriptors 3 and 4), not with `--dump-dom`: `--dump-dom` either dumps at the load event,
//! before the page's first requests have answered, or, with `--virtual-time-budget`, never,
//! because virtual time does not advance while a request is pending and the page's event
//! stream (`/api/v1/events`) never ends. Over the protocol the test polls the live DOM in real
//! time until the tree and the twins are there, clicks a district, and takes a screenshot.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{free_port, wait_until_async, wait_until_blocking, ChildGuard};
use twin_runtime::config::{Config, DEFAULT_TOML};
use twin_runtime::Runtime;

const CHROMIUM: &str = "/usr/bin/chromium";
const DEADLINE: Duration = Duration::from_secs(20);
/// How long the page may take to show everything, Chromium's start included.
const PAGE_DEADLINE: Duration = Duration::from_secs(60);
/// How long one DevTools call may take.
const CALL_DEADLINE: Duration = Duration::from_secs(20);

/// The ten sensors of the seed (from the embedded default).
const SENSOR_IDS: [&str; 10] = [
    "traffic-fdf-01",
    "traffic-lam-01",
    "aq-fdf-01",
    "aq-rob-01",
    "parking-fdf-01",
    "parking-mar-01",
    "noise-fdf-01",
    "weather-lam-01",
    "weather-tri-01",
    "light-sch-01",
];

/// The embedded broker on a free port, one MQTT sink to it, the seed's ten sensors.
fn config() -> Config {
    let port = free_port();
    let start = DEFAULT_TOML.find("[[sensors]]").expect("the default config has sensors");
    let text = format!(
        "[runtime]\ninterval = \"100ms\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [embedded_broker]\nlisten = \"127.0.0.1:{port}\"\n\
         [[sinks.mqtt]]\nname = \"embedded\"\nurl = \"mqtt://127.0.0.1:{port}\"\n\n{}",
        &DEFAULT_TOML[start..]
    );
    Config::parse(&text, "test", &[]).unwrap_or_else(|e| panic!("{e}"))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("reqwest client")
}

/// GET `url`: status, content type, body.
async fn get(client: &reqwest::Client, url: &str) -> (u16, String, String) {
    let r = client.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    let body = r.text().await.unwrap_or_else(|e| panic!("GET {url}: body: {e}"));
    (status, ct, body)
}

/// Every `http://` or `https://` in an asset is the SVG namespace: the page loads nothing from
/// another origin.
fn assert_no_external_urls(name: &str, text: &str) {
    for scheme in ["http://", "https://"] {
        for (i, _) in text.match_indices(scheme) {
            assert!(
                text[i..].starts_with("http://www.w3.org/2000/svg"),
                "{name} refers to another origin: {}",
                &text[i..(i + 60).min(text.len())]
            );
        }
    }
    assert!(!text.contains("//cdn") && !text.contains("@import"), "{name} loads something from elsewhere");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_its_assets_and_the_map_geojson_are_served_from_the_binary() {
    let rt = Runtime::start(config()).await.unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://{}", rt.http_addr());
    let c = client();

    let (status, ct, html) = get(&c, &format!("{base}/")).await;
    assert_eq!(status, 200, "GET /: {html}");
    assert!(ct.starts_with("text/html"), "GET / content type: {ct}");
    assert!(html.contains(r#"<script src="/assets/app.js""#), "GET / has no script tag: {html}");
    assert!(html.contains(r#"href="/assets/style.css""#), "GET / has no style sheet link");
    assert_no_external_urls("index.html", &html);

    let (status, ct, js) = get(&c, &format!("{base}/assets/app.js")).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/javascript"), "app.js content type: {ct}");
    assert!(js.contains("EventSource(\"/api/v1/events\")"), "app.js does not subscribe to the events");
    assert_no_external_urls("app.js", &js);

    let (status, ct, css) = get(&c, &format!("{base}/assets/style.css")).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/css"), "style.css content type: {ct}");
    assert_no_external_urls("style.css", &css);

    let (status, ct, outline) = get(&c, &format!("{base}/api/v1/geo/outline.geojson")).await;
    assert_eq!(status, 200);
    assert_eq!(ct, "application/geo+json");
    let outline: Value = serde_json::from_str(&outline).expect("the outline is JSON");
    let geometry = match outline["type"].as_str() {
        Some("Feature") => outline["geometry"].clone(),
        Some("FeatureCollection") => outline["features"][0]["geometry"].clone(),
        other => panic!("the outline is a {other:?}, not a Feature or FeatureCollection"),
    };
    let gtype = geometry["type"].as_str().unwrap_or_default();
    assert!(matches!(gtype, "Polygon" | "MultiPolygon"), "outline geometry: {gtype}");
    assert!(geometry["coordinates"].as_array().is_some_and(|c| !c.is_empty()), "outline has no coordinates");

    let (status, ct, communes) = get(&c, &format!("{base}/api/v1/geo/communes.geojson")).await;
    assert_eq!(status, 200);
    assert_eq!(ct, "application/geo+json");
    let communes: Value = serde_json::from_str(&communes).expect("the communes are JSON");
    assert_eq!(communes["type"], "FeatureCollection");
    let names: Vec<&str> = communes["features"]
        .as_array()
        .expect("features")
        .iter()
        .map(|f| f["properties"]["nom"].as_str().expect("a commune has a name"))
        .collect();
    assert_eq!(names.len(), 34, "{names:?}");
    assert!(names.contains(&"Fort-de-France") && names.contains(&"Schœlcher"), "{names:?}");

    // The OpenAPI document lists the two GeoJSON endpoints.
    let (_, _, doc) = get(&c, &format!("{base}/api/v1/openapi.json")).await;
    let doc: Value = serde_json::from_str(&doc).expect("openapi.json is JSON");
    for p in ["/api/v1/geo/outline.geojson", "/api/v1/geo/communes.geojson"] {
        assert!(
            doc["paths"][p]["get"]["responses"]["200"]["content"]["application/geo+json"].is_object(),
            "{p} in openapi.json"
        );
    }
    rt.shutdown().await;
}

extern "C" {
    fn fcntl(fd: i32, cmd: i32, ...) -> i32;
    fn dup2(old: i32, new: i32) -> i32;
}
const F_DUPFD: i32 = 0;

/// A headless Chromium with a fresh profile, driven over the DevTools protocol on a pipe.
/// Killed on drop.
struct Chromium {
    guard: ChildGuard,
    pipe: UnixStream,
    messages: mpsc::Receiver<Value>,
    next_id: u64,
    stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Chromium {
    fn launch(window: (u32, u32)) -> Chromium {
        if !Path::new(CHROMIUM).exists() {
            panic!("chromium not found: install it with 'apt-get install -y chromium' (or run scripts/test.sh)");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr = dir.path().join("chromium.stderr");
        let (ours, theirs) = UnixStream::pair().expect("socket pair");
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(CHROMIUM);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--mute-audio",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", dir.path().join("profile").display()))
        .arg(format!("--window-size={},{}", window.0, window.1))
        .arg("about:blank")
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&stderr).expect("stderr file")));
        // Chromium reads the protocol from fd 3 and writes it to fd 4: both ends of our socket.
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let high = fcntl(fd, F_DUPFD, 10);
                if high < 0 || dup2(high, 3) < 0 || dup2(high, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {CHROMIUM}: {e}"));
        drop(theirs);
        let (tx, messages) = mpsc::channel();
        let reader = ours.try_clone().expect("clone the pipe");
        std::thread::spawn(move || {
            let mut r = BufReader::new(reader);
            loop {
                let mut buf = Vec::new();
                match r.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if buf.last() == Some(&0) {
                            buf.pop();
                        }
                        if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Chromium { guard: ChildGuard::new(child), pipe: ours, messages, next_id: 0, stderr, _dir: dir }
    }

    fn stderr(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        text.lines().filter(|l| !l.contains("dbus")).collect::<Vec<_>>().join("\n")
    }

    /// One DevTools call (in `session` when given): its result, or the error it answered.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).expect("serialize");
        bytes.push(0);
        self.pipe.write_all(&bytes).map_err(|e| format!("{method}: write to chromium: {e}"))?;
        let deadline = Instant::now() + CALL_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self
                .messages
                .recv_timeout(left)
                .map_err(|e| format!("{method}: no answer from chromium within {CALL_DEADLINE:?}: {e}"))?;
            if m["id"].as_u64() == Some(id) {
                if let Some(err) = m.get("error") {
                    return Err(format!("{method}: {err}"));
                }
                return Ok(m["result"].clone());
            }
        }
    }

    /// Opens `url` in a new tab: the session to talk to it.
    fn open(&mut self, url: &str) -> String {
        let target = self.call(None, "Target.createTarget", json!({ "url": url })).unwrap_or_else(|e| panic!("{e}"));
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = self
            .call(None, "Target.attachToTarget", json!({ "targetId": target_id, "flatten": true }))
            .unwrap_or_else(|e| panic!("{e}"));
        attached["sessionId"].as_str().expect("sessionId").to_string()
    }

    /// Evaluates a JavaScript expression in the page: its value.
    fn eval(&mut self, session: &str, expression: &str) -> Result<Value, String> {
        let r = self.call(
            Some(session),
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        )?;
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(format!("exception in the page: {ex}"));
        }
        Ok(r["result"]["value"].clone())
    }

    fn close(mut self) {
        let _ = self.call(None, "Browser.close", json!({}));
        let _ = wait_until_blocking("chromium to exit", Duration::from_secs(10), || self.guard.try_wait().is_some());
    }
}

/// What the page shows, read from its DOM.
const PAGE_STATE: &str = r##"(() => {
  const all = (sel, f) => Array.from(document.querySelectorAll(sel)).map(f);
  return {
    paths: all("[data-path]", (e) => e.dataset.path),
    twins: all("#map [data-twin]", (e) => e.dataset.twin),
    titles: all("#map [data-twin] title", (e) => e.textContent),
    sinks: all("[data-sink]", (e) => e.dataset.sink),
    communes: document.querySelectorAll("#map .commune").length,
    outline: document.querySelectorAll("#map .outline").length,
    conn: document.getElementById("conn").dataset.state,
    updated: document.getElementById("last-update").textContent,
    running: document.getElementById("twins-running").textContent,
  };
})()"##;

/// What is still missing from the page, or nothing.
fn missing(state: &Value) -> Vec<String> {
    let has = |key: &str, v: &str| state[key].as_array().is_some_and(|a| a.iter().any(|x| x == v));
    let mut out = Vec::new();
    for path in [
        "root",
        "root/twins",
        "root/twins/Fort-de-France",
        "root/twins/Schœlcher",
        "root/sinks",
        "root/sinks/mqtt:embedded",
    ] {
        if !has("paths", path) {
            out.push(format!("tree node data-path=\"{path}\""));
        }
    }
    for id in SENSOR_IDS {
        if !has("twins", id) {
            out.push(format!("map marker data-twin=\"{id}\""));
        }
    }
    if !has("sinks", "embedded") {
        out.push("the sinks table row of `embedded`".into());
    }
    if state["outline"] != 1 {
        out.push("the island's outline".into());
    }
    if state["communes"] != 34 {
        out.push(format!("34 communes (found {})", state["communes"]));
    }
    if state["conn"] != "open" {
        out.push(format!("the live event stream (connection indicator: {})", state["conn"]));
    }
    if state["running"] != "10 / 10" {
        out.push(format!("10 / 10 twins running (shows {})", state["running"]));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_shows_the_supervision_tree_and_every_twin_on_the_map() {
    // Before anything else: a missing browser fails the test with how to install it.
    let browser = Chromium::launch((1400, 1000));
    let rt = Runtime::start(config()).await.unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://{}", rt.http_addr());
    let c = client();
    // Every twin runs and the sink is connected: the page has everything to show.
    wait_until_async("GET /readyz to answer 200", DEADLINE, || {
        let c = c.clone();
        let url = format!("{base}/readyz");
        async move { matches!(c.get(&url).send().await, Ok(r) if r.status() == 200) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // The browser is driven from a blocking thread; the runtime keeps serving meanwhile.
    let page = format!("{base}/");
    let png = tokio::task::spawn_blocking(move || {
        let mut browser = browser;
        let session = browser.open(&page);
        let mut state = Value::Null;
        let shown = wait_until_blocking("the page to show the tree, the sinks and every twin, live", PAGE_DEADLINE, || {
            state = browser.eval(&session, PAGE_STATE).unwrap_or(Value::Null);
            !state.is_null() && missing(&state).is_empty()
        });
        if let Err(e) = shown {
            let err = browser.stderr();
            panic!("{e}: the page lacks {:?}\npage state: {state:#}\nchromium stderr:\n{err}", missing(&state));
        }
        // Each marker's tooltip names the twin and its type.
        let titles: Vec<&str> = state["titles"].as_array().expect("titles").iter().filter_map(Value::as_str).collect();
        assert!(
            titles.iter().any(|t| t.starts_with("aq-fdf-01 · air-quality · Fort-de-France")),
            "marker titles: {titles:?}"
        );

        // Clicking a district lists its sensors.
        browser
            .eval(&session, r#"document.querySelector('[data-path="root/twins/Fort-de-France"] > .row').click()"#)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut paths = Value::Null;
        wait_until_blocking("the sensors of Fort-de-France under their district", PAGE_DEADLINE, || {
            paths = browser
                .eval(&session, r#"Array.from(document.querySelectorAll('[data-path^="root/twins/Fort-de-France/"]')).map((e) => e.dataset.path)"#)
                .unwrap_or(Value::Null);
            ["aq-fdf-01", "traffic-fdf-01", "parking-fdf-01", "noise-fdf-01"]
                .iter()
                .all(|id| paths.as_array().is_some_and(|a| a.iter().any(|p| p.as_str() == Some(format!("root/twins/Fort-de-France/{id}").as_str()))))
        })
        .unwrap_or_else(|e| panic!("{e}; listed: {paths}"));

        // The whole page, not only the window.
        let layout = browser.call(Some(&session), "Page.getLayoutMetrics", json!({})).unwrap_or_else(|e| panic!("{e}"));
        let (w, h) = (&layout["cssContentSize"]["width"], &layout["cssContentSize"]["height"]);
        let clip = json!({ "x": 0, "y": 0, "width": w, "height": h, "scale": 1 });
        let shot = browser
            .call(Some(&session), "Page.captureScreenshot", json!({ "format": "png", "captureBeyondViewport": true, "clip": clip }))
            .unwrap_or_else(|e| panic!("{e}"));
        let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
        browser.close();
        png
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));

    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot is not a PNG");
    assert!(png.len() > 20_000, "the screenshot is suspiciously small ({} bytes)", png.len());
    // To look at it: TWINRT_PAGE_SCREENSHOT=/tmp/page.png cargo test --test page_chromium
    if let Ok(keep) = std::env::var("TWINRT_PAGE_SCREENSHOT") {
        std::fs::write(&keep, &png).unwrap_or_else(|e| panic!("write the screenshot to {keep}: {e}"));
    }
    rt.shutdown().await;
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|b| *b != b'=' && !b.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &c)| acc | (val(c) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
