//! A small typed reader over a TOML tree that collects *every* problem instead of stopping
//! at the first one, each with its key path (`sinks.mqtt[0].qos`) and, where the text gives
//! it, its line. Values overridden from the environment name the variable instead.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use toml::{Table, Value};

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `sinks.mqtt[1].url`; empty for the document itself.
    pub path: String,
    /// Where the value came from: `line N` in the file, or `env TWINRT_...`.
    pub origin: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.origin, self.path.is_empty()) {
            (Some(o), false) => write!(f, "{}: {} ({o})", self.path, self.message),
            (None, false) => write!(f, "{}: {}", self.path, self.message),
            (Some(o), true) => write!(f, "{} ({o})", self.message),
            (None, true) => write!(f, "{}", self.message),
        }
    }
}

/// Where each key path came from (line in the file or environment variable).
#[derive(Debug, Default, Clone)]
pub struct Origins(HashMap<String, String>);

impl Origins {
    /// Index the lines of every key of a TOML text. The text must already parse.
    pub fn from_text(text: &str) -> Origins {
        let mut origins = Origins::default();
        if let Ok(doc) = toml_edit::ImDocument::parse(text) {
            let starts = line_starts(text);
            walk_table(doc.as_table(), "", &starts, &mut origins.0);
        }
        origins
    }

    pub fn set(&mut self, path: String, origin: String) {
        self.0.insert(path, origin);
    }

    pub fn get(&self, path: &str) -> Option<String> {
        if let Some(o) = self.0.get(path) {
            return Some(o.clone());
        }
        // A missing key is reported at its parent table.
        let mut p = path;
        while let Some(idx) = p.rfind(['.', '[']) {
            p = &p[..idx];
            if let Some(o) = self.0.get(p) {
                return Some(o.clone());
            }
        }
        None
    }
}

pub fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect()
}

pub fn line_of(starts: &[usize], offset: usize) -> usize {
    match starts.binary_search(&offset) {
        Ok(i) => i + 1,
        Err(i) => i,
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn walk_table(table: &toml_edit::Table, prefix: &str, starts: &[usize], out: &mut HashMap<String, String>) {
    if let Some(span) = table.span() {
        if !prefix.is_empty() {
            out.entry(prefix.to_string()).or_insert_with(|| format!("line {}", line_of(starts, span.start)));
        }
    }
    for (key, item) in table.iter() {
        let path = join(prefix, key);
        let span = table.key(key).and_then(|k| k.span()).or_else(|| item.span());
        if let Some(span) = span {
            out.insert(path.clone(), format!("line {}", line_of(starts, span.start)));
        }
        walk_item(item, &path, starts, out);
    }
}

fn walk_item(item: &toml_edit::Item, path: &str, starts: &[usize], out: &mut HashMap<String, String>) {
    match item {
        toml_edit::Item::Table(t) => walk_table(t, path, starts, out),
        toml_edit::Item::ArrayOfTables(arr) => {
            for (i, t) in arr.iter().enumerate() {
                walk_table(t, &format!("{path}[{i}]"), starts, out);
            }
        }
        toml_edit::Item::Value(v) => walk_value(v, path, starts, out),
        toml_edit::Item::None => {}
    }
}

fn walk_value(v: &toml_edit::Value, path: &str, starts: &[usize], out: &mut HashMap<String, String>) {
    match v {
        toml_edit::Value::InlineTable(t) => {
            for (key, val) in t.iter() {
                let p = join(path, key);
                if let Some(span) = val.span() {
                    out.insert(p.clone(), format!("line {}", line_of(starts, span.start)));
                }
                walk_value(val, &p, starts, out);
            }
        }
        toml_edit::Value::Array(a) => {
            for (i, val) in a.iter().enumerate() {
                let p = format!("{path}[{i}]");
                if let Some(span) = val.span() {
                    out.insert(p.clone(), format!("line {}", line_of(starts, span.start)));
                }
                walk_value(val, &p, starts, out);
            }
        }
        _ => {}
    }
}

/// Collects problems while typed values are taken out of TOML tables.
pub struct Reader<'a> {
    origins: &'a Origins,
    pub problems: Vec<Problem>,
}

/// A table being read: keys are removed as they are taken, what is left is unknown.
pub struct Section {
    pub path: String,
    table: Table,
}

impl<'a> Reader<'a> {
    pub fn new(origins: &'a Origins) -> Self {
        Reader { origins, problems: Vec::new() }
    }

    pub fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let origin = self.origins.get(&path);
        self.problems.push(Problem { path, origin, message: message.into() });
    }

    /// Open the sub-table `key` of `parent` (absent: empty section).
    pub fn section(&mut self, parent: &mut Section, key: &str) -> Section {
        let path = join(&parent.path, key);
        match parent.table.remove(key) {
            None => Section { path, table: Table::new() },
            Some(Value::Table(t)) => Section { path, table: t },
            Some(other) => {
                self.problem(&path, format!("must be a table, got {}", other.type_str()));
                Section { path, table: Table::new() }
            }
        }
    }

    /// Is the sub-table `key` present at all?
    pub fn has(&self, parent: &Section, key: &str) -> bool {
        parent.table.contains_key(key)
    }

    /// Open the array of tables `key` of `parent`.
    pub fn sections(&mut self, parent: &mut Section, key: &str) -> Vec<Section> {
        let path = join(&parent.path, key);
        match parent.table.remove(key) {
            None => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.into_iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    match item {
                        Value::Table(t) => out.push(Section { path: p, table: t }),
                        other => self.problem(p, format!("must be a table, got {}", other.type_str())),
                    }
                }
                out
            }
            Some(other) => {
                self.problem(&path, format!("must be an array of tables ([[{path}]]), got {}", other.type_str()));
                Vec::new()
            }
        }
    }

    /// Take an optional value.
    pub fn opt<T: FromToml>(&mut self, s: &mut Section, key: &str) -> Option<T> {
        let path = join(&s.path, key);
        let v = s.table.remove(key)?;
        match T::from_toml(&v) {
            Ok(t) => Some(t),
            Err(msg) => {
                self.problem(path, msg);
                None
            }
        }
    }

    /// Take a value, or its default when absent (a bad value is reported, then defaulted).
    pub fn or<T: FromToml>(&mut self, s: &mut Section, key: &str, default: T) -> T {
        self.opt(s, key).unwrap_or(default)
    }

    /// Take a required value.
    pub fn req<T: FromToml>(&mut self, s: &mut Section, key: &str) -> Option<T> {
        if !s.table.contains_key(key) {
            self.problem(join(&s.path, key), format!("missing (required, {})", T::EXPECTED));
            return None;
        }
        self.opt(s, key)
    }

    /// Report every key left in the section as unknown.
    pub fn finish(&mut self, s: Section, known: &[&str]) {
        for key in s.table.keys() {
            let mut msg = format!("unknown key `{key}`");
            if let Some(best) = closest(key, known) {
                msg.push_str(&format!(" (did you mean `{best}`?)"));
            } else if !known.is_empty() {
                msg.push_str(&format!("; known keys here: {}", known.join(", ")));
            }
            self.problem(join(&s.path, key), msg);
        }
    }
}

impl Section {
    pub fn root(table: Table) -> Section {
        Section { path: String::new(), table }
    }
}

fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        // Ties go to the longer common prefix: "sped" is "speed" more than "seed".
        .min_by_key(|(d, k)| (*d, usize::MAX - common_prefix(key, k)))
        .map(|(_, k)| k)
}

fn common_prefix(a: &str, b: &str) -> usize {
    a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A value that can be read from TOML, with a message naming what was expected.
pub trait FromToml: Sized {
    const EXPECTED: &'static str;
    fn from_toml(v: &Value) -> Result<Self, String>;
}

fn got(expected: &str, v: &Value) -> String {
    format!("expected {expected}, got {} `{}`", v.type_str(), v)
}

impl FromToml for String {
    const EXPECTED: &'static str = "a string";
    fn from_toml(v: &Value) -> Result<Self, String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(got(Self::EXPECTED, other)),
        }
    }
}

impl FromToml for bool {
    const EXPECTED: &'static str = "true or false";
    fn from_toml(v: &Value) -> Result<Self, String> {
        v.as_bool().ok_or_else(|| got(Self::EXPECTED, v))
    }
}

impl FromToml for f64 {
    const EXPECTED: &'static str = "a number";
    fn from_toml(v: &Value) -> Result<Self, String> {
        let f = match v {
            Value::Float(f) => *f,
            Value::Integer(i) => *i as f64,
            other => return Err(got(Self::EXPECTED, other)),
        };
        if f.is_finite() {
            Ok(f)
        } else {
            Err(format!("expected a finite number, got {f}"))
        }
    }
}

macro_rules! int_from_toml {
    ($($t:ty),*) => {$(
        impl FromToml for $t {
            const EXPECTED: &'static str = concat!("an integer (", stringify!($t), ")");
            fn from_toml(v: &Value) -> Result<Self, String> {
                match v {
                    Value::Integer(i) => <$t>::try_from(*i).map_err(|_| {
                        format!("{i} is out of range for {}", stringify!($t))
                    }),
                    other => Err(got(Self::EXPECTED, other)),
                }
            }
        }
    )*};
}
int_from_toml!(u8, u16, u32, u64, usize);

impl FromToml for Duration {
    const EXPECTED: &'static str = "a duration such as \"5s\", \"250ms\" or \"1m 30s\"";
    fn from_toml(v: &Value) -> Result<Self, String> {
        match v {
            Value::String(s) => humantime::parse_duration(s)
                .map_err(|e| format!("invalid duration \"{s}\": {e} (write e.g. \"5s\", \"250ms\")")),
            other => Err(got(Self::EXPECTED, other)),
        }
    }
}

impl FromToml for SocketAddr {
    const EXPECTED: &'static str = "an address such as \"127.0.0.1:8001\"";
    fn from_toml(v: &Value) -> Result<Self, String> {
        match v {
            Value::String(s) => s
                .parse()
                .map_err(|_| format!("invalid socket address \"{s}\" (write IP:PORT, e.g. \"127.0.0.1:8001\")")),
            other => Err(got(Self::EXPECTED, other)),
        }
    }
}

impl FromToml for Value {
    const EXPECTED: &'static str = "a value";
    fn from_toml(v: &Value) -> Result<Self, String> {
        Ok(v.clone())
    }
}

impl FromToml for PathBuf {
    const EXPECTED: &'static str = "a file path";
    fn from_toml(v: &Value) -> Result<Self, String> {
        match v {
            Value::String(s) if !s.is_empty() => Ok(PathBuf::from(s)),
            Value::String(_) => Err("empty path".into()),
            other => Err(got(Self::EXPECTED, other)),
        }
    }
}

impl FromToml for chrono::DateTime<chrono::Utc> {
    const EXPECTED: &'static str = "an RFC 3339 time such as \"2026-06-21T12:00:00Z\"";
    fn from_toml(v: &Value) -> Result<Self, String> {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Datetime(d) => d.to_string(),
            other => return Err(got(Self::EXPECTED, other)),
        };
        chrono::DateTime::parse_from_rfc3339(&text)
            .map(|d| d.with_timezone(&chrono::Utc))
            .map_err(|e| format!("invalid time \"{text}\": {e} (expected {})", Self::EXPECTED))
    }
}

impl FromToml for [f64; 2] {
    const EXPECTED: &'static str = "a pair of numbers [lat, lon]";
    fn from_toml(v: &Value) -> Result<Self, String> {
        match v {
            Value::Array(a) if a.len() == 2 => {
                let lat = f64::from_toml(&a[0]).map_err(|e| format!("latitude: {e}"))?;
                let lon = f64::from_toml(&a[1]).map_err(|e| format!("longitude: {e}"))?;
                Ok([lat, lon])
            }
            other => Err(got(Self::EXPECTED, other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_indexed_for_nested_keys() {
        let text = "[runtime]\nseed = 1\n\n[[sinks.mqtt]]\nname = \"a\"\n\n[[sinks.mqtt]]\nname = \"b\"\nqos = 7\n";
        let o = Origins::from_text(text);
        assert_eq!(o.get("runtime.seed").as_deref(), Some("line 2"));
        assert_eq!(o.get("sinks.mqtt[1].qos").as_deref(), Some("line 9"));
        // a missing key is located at its table
        assert_eq!(o.get("sinks.mqtt[1].url").as_deref(), Some("line 7"));
    }

    #[test]
    fn suggestions_for_typos() {
        assert_eq!(closest("sped", &["seed", "speed", "interval"]), Some("speed"));
        assert_eq!(closest("zzzzzz", &["seed", "speed"]), None);
    }
}
