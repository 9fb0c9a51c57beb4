//! A fault as a user writes it (JSON body of `POST /api/v1/faults`, or a `[[step]]` of a
//! scenario file), validated field by field: every rejection names the field.
//!
//! ```json
//! {"kind": "panic", "target": "district:Fort-de-France", "count": 1}
//! {"kind": "fail", "target": "sink:influxdb", "ratio": 0.5, "duration": "30s"}
//! ```

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Map, Value};
use twins::SensorKind;

/// The kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// An actor (sensor or sink) panics in its handler.
    Panic,
    /// An actor returns an error from its handler: its supervisor sees a failure.
    Error,
    /// An actor sleeps in its handler for `duration` (others keep running).
    Stall,
    /// A sink's sends fail (a fraction `ratio` of them) as if the broker refused them.
    Fail,
    /// A sink waits `delay` before each send.
    Latency,
    /// A sink's connection is dropped (`count` times), or kept down for `duration`.
    Disconnect,
    /// Sensors report values outside their quantities' ranges.
    OutOfRange,
    /// Sensors stop reporting; their sequence does not advance (not a gap).
    Silence,
}

pub const KINDS: &str = "panic, error, stall, fail, latency, disconnect, out_of_range, silence";

impl FaultKind {
    pub fn parse(s: &str) -> Option<FaultKind> {
        Some(match s {
            "panic" => FaultKind::Panic,
            "error" => FaultKind::Error,
            "stall" => FaultKind::Stall,
            "fail" => FaultKind::Fail,
            "latency" => FaultKind::Latency,
            "disconnect" => FaultKind::Disconnect,
            "out_of_range" => FaultKind::OutOfRange,
            "silence" => FaultKind::Silence,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Panic => "panic",
            FaultKind::Error => "error",
            FaultKind::Stall => "stall",
            FaultKind::Fail => "fail",
            FaultKind::Latency => "latency",
            FaultKind::Disconnect => "disconnect",
            FaultKind::OutOfRange => "out_of_range",
            FaultKind::Silence => "silence",
        }
    }

    /// Faults delivered to an actor's mailbox (sensor or sink).
    pub fn is_actor(self) -> bool {
        matches!(self, FaultKind::Panic | FaultKind::Error | FaultKind::Stall)
    }

    /// Faults of a sink's sends or connection.
    pub fn is_sink(self) -> bool {
        matches!(self, FaultKind::Fail | FaultKind::Latency | FaultKind::Disconnect)
    }

    /// Faults of what a sensor reports.
    pub fn is_sensor(self) -> bool {
        matches!(self, FaultKind::OutOfRange | FaultKind::Silence)
    }
}

/// What a fault applies to, as written.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// `sensor:ID`
    Sensor(String),
    /// `district:NAME`: every sensor of the district.
    District(String),
    /// `kind:TYPE`: every sensor of the type.
    Kind(SensorKind),
    /// `sink:NAME`
    Sink(String),
    /// `ratio:0.1`: that fraction of all sensors, drawn at random (again at every round of
    /// a repeated panic or error).
    Ratio(f64),
    /// An actor path as the inspection API shows it (`root/twins/Fort-de-France/aq-fdf-01`;
    /// the leading `root` may be left out: `/twins/...`).
    Path(String),
}

pub const TARGETS: &str = "sensor:ID, district:NAME, kind:TYPE, sink:NAME, ratio:FRACTION, or an actor path \
                           such as /twins/Fort-de-France/aq-fdf-01, /sinks/mqtt:mosquitto or (panic only) a consumer: \
                           /consumers/redpanda, /distributor/smartcity-traffic";

impl Selector {
    pub fn parse(s: &str) -> Result<Selector, String> {
        let s = s.trim();
        if let Some(p) = s.strip_prefix("root/").or_else(|| s.strip_prefix('/')) {
            let p = p.trim_end_matches('/');
            if p.is_empty() {
                return Err(format!("\"{s}\" names no actor"));
            }
            return Ok(Selector::Path(format!("root/{p}")));
        }
        let Some((k, v)) = s.split_once(':') else {
            return Err(format!("\"{s}\" is not a target: write {TARGETS}"));
        };
        if v.is_empty() {
            return Err(format!("\"{s}\": nothing after `{k}:`"));
        }
        match k {
            "sensor" => Ok(Selector::Sensor(v.to_string())),
            "district" => twins::geo::district(v)
                .map(|d| Selector::District(d.name.clone()))
                .ok_or_else(|| format!("unknown district \"{v}\"")),
            "kind" | "type" => v.parse::<SensorKind>().map(Selector::Kind).map_err(|e| e.to_string()),
            "sink" => Ok(Selector::Sink(v.to_string())),
            "ratio" => match v.parse::<f64>() {
                Ok(r) if r > 0.0 && r <= 1.0 => Ok(Selector::Ratio(r)),
                _ => Err(format!("ratio must be a number in (0, 1], got \"{v}\"")),
            },
            other => Err(format!("unknown selector `{other}:`: write {TARGETS}")),
        }
    }
}

/// A validated fault.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    pub kind: FaultKind,
    /// As written (for display).
    pub target: String,
    pub selector: Selector,
    /// How many times (actor faults, per target; `disconnect`), requests (`fail`, `latency`)
    /// or observations per sensor (`out_of_range`, `silence`).
    pub count: Option<u64>,
    /// How long the fault lasts (`stall`: how long the actor sleeps).
    pub duration: Option<Duration>,
    /// `fail`: the fraction of sends that fail (default 1).
    pub ratio: Option<f64>,
    /// `latency`: the delay added to each send.
    pub delay: Option<Duration>,
    /// `panic`, `error`: the time between two rounds (default 1 s).
    pub every: Option<Duration>,
    /// Free text carried into panic and error messages.
    pub reason: Option<String>,
}

/// A field that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl SpecError {
    pub fn new(field: &str, message: impl Into<String>) -> SpecError {
        SpecError { field: field.to_string(), message: message.into() }
    }
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

const FIELDS: &[&str] = &["kind", "target", "count", "duration", "ratio", "delay", "every", "reason"];
const MAX_COUNT: u64 = 1_000_000;
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
const MAX_DELAY: Duration = Duration::from_secs(60);
const MIN_EVERY: Duration = Duration::from_millis(10);

fn duration(obj: &Map<String, Value>, field: &str) -> Result<Option<Duration>, SpecError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let d = humantime::parse_duration(s).map_err(|e| {
                SpecError::new(field, format!("invalid duration \"{s}\": {e} (write e.g. \"30s\", \"250ms\")"))
            })?;
            if d.is_zero() {
                return Err(SpecError::new(field, "must be > 0"));
            }
            if d > MAX_DURATION {
                return Err(SpecError::new(field, "must be at most 24h"));
            }
            Ok(Some(d))
        }
        Some(other) => {
            Err(SpecError::new(field, format!("expected a duration string such as \"30s\", got {}", type_name(other))))
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl FaultSpec {
    /// Validate a JSON fault.
    pub fn from_json(v: &Value) -> Result<FaultSpec, SpecError> {
        let obj = v.as_object().ok_or_else(|| SpecError::new("body", "expected a JSON object describing a fault"))?;
        if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(SpecError::new(k, format!("unknown field `{k}`; accepted: {}", FIELDS.join(", "))));
        }
        let kind = match obj.get("kind") {
            None => return Err(SpecError::new("kind", format!("missing (one of {KINDS})"))),
            Some(Value::String(s)) => FaultKind::parse(s)
                .ok_or_else(|| SpecError::new("kind", format!("unknown kind \"{s}\"; one of {KINDS}")))?,
            Some(other) => {
                return Err(SpecError::new(
                    "kind",
                    format!("expected a string (one of {KINDS}), got {}", type_name(other)),
                ))
            }
        };
        let target = match obj.get("target") {
            None => return Err(SpecError::new("target", format!("missing: {TARGETS}"))),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(SpecError::new("target", format!("expected a string, got {}", type_name(other))))
            }
        };
        let selector = Selector::parse(&target).map_err(|e| SpecError::new("target", e))?;
        let count = match obj.get("count") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(c) if (1..=MAX_COUNT).contains(&c) => Some(c),
                _ => return Err(SpecError::new("count", format!("must be an integer from 1 to {MAX_COUNT}, got {n}"))),
            },
            Some(other) => {
                return Err(SpecError::new("count", format!("expected an integer, got {}", type_name(other))))
            }
        };
        let duration_v = duration(obj, "duration")?;
        let delay = duration(obj, "delay")?;
        let every = duration(obj, "every")?;
        let ratio = match obj.get("ratio") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_f64() {
                Some(r) if r > 0.0 && r <= 1.0 => Some(r),
                _ => return Err(SpecError::new("ratio", format!("must be a number in (0, 1], got {n}"))),
            },
            Some(other) => return Err(SpecError::new("ratio", format!("expected a number, got {}", type_name(other)))),
        };
        let reason = match obj.get("reason") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.chars().count() <= 200 => Some(s.clone()),
            Some(Value::String(_)) => return Err(SpecError::new("reason", "at most 200 characters")),
            Some(other) => {
                return Err(SpecError::new("reason", format!("expected a string, got {}", type_name(other))))
            }
        };

        // Which fields go with which kind.
        if ratio.is_some() && kind != FaultKind::Fail {
            return Err(SpecError::new(
                "ratio",
                "only for `fail` (the fraction of requests that fail); to pick a fraction of the sensors, \
                 target `ratio:0.1`",
            ));
        }
        match (kind, delay) {
            (FaultKind::Latency, None) => return Err(SpecError::new("delay", "missing: the delay added to each send")),
            (FaultKind::Latency, Some(d)) if d > MAX_DELAY => {
                return Err(SpecError::new("delay", "must be at most 60s"))
            }
            (FaultKind::Latency, _) | (_, None) => {}
            (_, Some(_)) => return Err(SpecError::new("delay", "only for `latency`")),
        }
        if let Some(e) = every {
            if !matches!(kind, FaultKind::Panic | FaultKind::Error) {
                return Err(SpecError::new("every", "only for `panic` and `error` (the time between two rounds)"));
            }
            if e < MIN_EVERY {
                return Err(SpecError::new("every", "must be at least 10ms"));
            }
        }
        let mut count = count;
        match kind {
            FaultKind::Stall => {
                if duration_v.is_none() {
                    return Err(SpecError::new("duration", "missing: how long the actor sleeps in its handler"));
                }
                if duration_v.is_some_and(|d| d > Duration::from_secs(600)) {
                    return Err(SpecError::new("duration", "a stall lasts at most 10m"));
                }
            }
            FaultKind::Panic | FaultKind::Error | FaultKind::Disconnect => {
                if count.is_none() && duration_v.is_none() {
                    count = Some(1);
                }
            }
            _ => {
                if count.is_none() && duration_v.is_none() {
                    return Err(SpecError::new("duration", "give `count` or `duration`: a fault ends by itself"));
                }
            }
        }
        // Target and kind must fit.
        let sink_target = matches!(&selector, Selector::Sink(_))
            || matches!(&selector, Selector::Path(p) if p.starts_with("root/sinks/"));
        if kind.is_sink() && !sink_target {
            return Err(SpecError::new(
                "target",
                format!("`{}` applies to a sink: write sink:NAME or /sinks/KIND:NAME", kind.as_str()),
            ));
        }
        if kind.is_sensor() && sink_target {
            return Err(SpecError::new("target", format!("`{}` applies to sensors, not to a sink", kind.as_str())));
        }
        Ok(FaultSpec { kind, target, selector, count, duration: duration_v, ratio, delay, every, reason })
    }

    /// The fault as JSON (durations as text).
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "kind": self.kind.as_str(), "target": self.target });
        let d = |d: Duration| Value::String(humantime::format_duration(d).to_string());
        if let Some(c) = self.count {
            v["count"] = json!(c);
        }
        if let Some(x) = self.duration {
            v["duration"] = d(x);
        }
        if let Some(r) = self.ratio {
            v["ratio"] = json!(r);
        }
        if let Some(x) = self.delay {
            v["delay"] = d(x);
        }
        if let Some(x) = self.every {
            v["every"] = d(x);
        }
        if let Some(r) = &self.reason {
            v["reason"] = json!(r);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(v: Value) -> SpecError {
        FaultSpec::from_json(&v).expect_err("must be rejected")
    }

    #[test]
    fn good_faults_parse_with_their_defaults() {
        let f = FaultSpec::from_json(&json!({"kind": "panic", "target": "district:fort-de-france"})).expect("ok");
        assert_eq!(f.selector, Selector::District("Fort-de-France".into()));
        assert_eq!(f.count, Some(1));
        let f =
            FaultSpec::from_json(&json!({"kind": "fail", "target": "sink:influx", "ratio": 0.5, "duration": "30s"}))
                .expect("ok");
        assert_eq!((f.ratio, f.duration), (Some(0.5), Some(Duration::from_secs(30))));
        let f =
            FaultSpec::from_json(&json!({"kind": "stall", "target": "/twins/Marin/x", "duration": "2s"})).expect("ok");
        assert_eq!(f.selector, Selector::Path("root/twins/Marin/x".into()));
        assert_eq!(f.to_json()["duration"], "2s");
    }

    #[test]
    fn every_rejection_names_its_field() {
        assert_eq!(err(json!([1])).field, "body");
        assert_eq!(err(json!({"target": "sensor:a"})).field, "kind");
        assert_eq!(err(json!({"kind": "melt", "target": "sensor:a"})).field, "kind");
        assert_eq!(err(json!({"kind": "panic"})).field, "target");
        assert_eq!(err(json!({"kind": "panic", "target": "nowhere"})).field, "target");
        assert_eq!(err(json!({"kind": "panic", "target": "district:Atlantis"})).field, "target");
        assert_eq!(err(json!({"kind": "panic", "target": "sensor:a", "count": 0})).field, "count");
        assert_eq!(err(json!({"kind": "panic", "target": "sensor:a", "count": "1"})).field, "count");
        assert_eq!(err(json!({"kind": "silence", "target": "sensor:a"})).field, "duration");
        assert_eq!(err(json!({"kind": "silence", "target": "sensor:a", "duration": "soon"})).field, "duration");
        assert_eq!(err(json!({"kind": "fail", "target": "sink:x", "count": 1, "ratio": 2})).field, "ratio");
        assert_eq!(err(json!({"kind": "panic", "target": "sensor:a", "ratio": 0.5})).field, "ratio");
        assert_eq!(err(json!({"kind": "latency", "target": "sink:x", "count": 3})).field, "delay");
        assert_eq!(err(json!({"kind": "fail", "target": "sensor:a", "count": 3})).field, "target");
        assert_eq!(err(json!({"kind": "silence", "target": "sink:a", "count": 3})).field, "target");
        assert_eq!(err(json!({"kind": "panic", "target": "sensor:a", "colour": "red"})).field, "colour");
        assert_eq!(err(json!({"kind": "stall", "target": "sensor:a"})).field, "duration");
        assert_eq!(err(json!({"kind": "panic", "target": "ratio:1.5"})).field, "target");
    }
}
