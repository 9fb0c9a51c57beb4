//! `[faults]` (the fault-injection API) and the delivery keys every sink shares
//! (`overflow`, `block_timeout`).

use std::path::PathBuf;
use std::time::Duration;

use super::reader::{Reader, Section};
use super::Secret;
use crate::sinks::Overflow;

/// `[faults]`: the fault-injection API (`/api/v1/faults`). Off unless enabled; when on, every
/// request needs `Authorization: Bearer <token>`.
#[derive(Debug, Clone, Default)]
pub struct FaultsConfig {
    pub enabled: bool,
    /// Set when enabled (checked at load).
    pub token: Option<Secret>,
}

pub const FAULTS_KEYS: &[&str] = &["enabled", "token", "token_file"];

/// Read `[faults]` (absent: disabled).
pub fn read_faults(r: &mut Reader<'_>, root: &mut Section) -> FaultsConfig {
    let mut s = r.section(root, "faults");
    let enabled = r.or(&mut s, "enabled", false);
    let token: Option<String> = r.opt(&mut s, "token");
    let token_file: Option<PathBuf> = r.opt(&mut s, "token_file");
    let token = match (token, token_file) {
        (Some(_), Some(_)) => {
            r.problem("faults.token_file", "give token or token_file, not both");
            None
        }
        (Some(t), None) => {
            if t.trim().is_empty() {
                r.problem("faults.token", "must not be empty");
            }
            Some(Secret(t.trim().to_string()))
        }
        (None, Some(f)) => match std::fs::read_to_string(&f) {
            Ok(t) if t.trim().is_empty() => {
                r.problem("faults.token_file", format!("{} is empty", f.display()));
                None
            }
            Ok(t) => Some(Secret(t.trim().to_string())),
            Err(e) => {
                r.problem("faults.token_file", format!("cannot read {}: {e}", f.display()));
                None
            }
        },
        (None, None) => {
            if enabled {
                r.problem(
                    "faults.token",
                    "the fault API is enabled without a token: give faults.token or faults.token_file",
                );
            }
            None
        }
    };
    r.finish(s, FAULTS_KEYS);
    FaultsConfig { enabled, token }
}

/// A sink's `overflow` (`drop_oldest`, `drop_newest`, `block`) and `block_timeout`.
pub fn read_overflow(r: &mut Reader<'_>, t: &mut Section) -> Overflow {
    let path = t.path.clone();
    let name = r.or(t, "overflow", "drop_oldest".to_string());
    let timeout: Option<Duration> = r.opt(t, "block_timeout");
    let policy = match name.as_str() {
        "drop_oldest" => Overflow::DropOldest,
        "drop_newest" => Overflow::DropNewest,
        "block" => {
            let timeout = timeout.unwrap_or(Duration::from_millis(100));
            if timeout.is_zero() || timeout > Duration::from_secs(60) {
                r.problem(format!("{path}.block_timeout"), "must be > 0 and at most 60s");
            }
            Overflow::Block { timeout }
        }
        other => {
            r.problem(
                format!("{path}.overflow"),
                format!("must be \"drop_oldest\", \"drop_newest\" or \"block\" (got \"{other}\")"),
            );
            Overflow::DropOldest
        }
    };
    if timeout.is_some() && name != "block" {
        r.problem(format!("{path}.block_timeout"), "only with overflow = \"block\"");
    }
    policy
}

/// `spill_dir` (and `spill_max_bytes`, default 1 GiB): a sink's disk spill, or `None`.
pub fn read_spill(r: &mut Reader<'_>, t: &mut Section) -> Option<crate::config::SpillConfig> {
    let path = t.path.clone();
    let dir: Option<PathBuf> = r.opt(t, "spill_dir");
    let max: Option<u64> = r.opt(t, "spill_max_bytes");
    match (dir, max) {
        (Some(dir), max) => {
            let max_bytes = max.unwrap_or(1 << 30);
            if max_bytes < 1 << 20 {
                r.problem(format!("{path}.spill_max_bytes"), format!("must be at least 1048576 (got {max_bytes})"));
            }
            if dir.as_os_str().is_empty() {
                r.problem(format!("{path}.spill_dir"), "must name a directory");
            }
            Some(crate::config::SpillConfig { dir, max_bytes })
        }
        (None, Some(_)) => {
            r.problem(format!("{path}.spill_max_bytes"), "only with spill_dir");
            None
        }
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::sinks::Overflow;
    use std::time::Duration;

    #[test]
    fn faults_are_off_by_default_and_need_a_token_when_on() {
        let c = Config::parse("", "t", &[]).expect("empty config");
        assert!(!c.faults.enabled && c.faults.token.is_none());
        assert_eq!(c.http.max_body_bytes, 65_536);

        let c = Config::parse("[faults]\nenabled = true\ntoken = \"s3cret\"\n", "t", &[]).expect("valid");
        assert!(c.faults.enabled);
        assert!(!format!("{c:?}").contains("s3cret"), "the token is never printed");

        let err = Config::parse("[http]\nmax_body_bytes = 0\n\n[faults]\nenabled = true\n", "t.toml", &[])
            .expect_err("no token");
        let shown = err.to_string();
        let p = err.problems.iter().find(|p| p.path == "faults.token").unwrap_or_else(|| panic!("{shown}"));
        assert_eq!(p.origin.as_deref(), Some("line 4"), "{shown}");
        assert!(p.message.contains("without a token"), "{shown}");
        assert!(err.problems.iter().any(|p| p.path == "http.max_body_bytes"), "{shown}");

        let err =
            Config::parse("[faults]\nenabled = true\ntoken = \"a\"\ntoken_file = \"/nope\"\ncolor = 1\n", "t", &[])
                .expect_err("both");
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["faults.token_file", "faults.color"], "{err}");

        let dir = std::env::temp_dir().join(format!("twinrt-token-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").expect("write token file");
        let text = format!("[faults]\nenabled = true\ntoken_file = \"{}\"\n", dir.display());
        let c = Config::parse(&text, "t", &[]).expect("token file");
        assert_eq!(c.faults.token.map(|t| t.0).as_deref(), Some("from-file"));
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn overflow_policies_are_read_per_sink() {
        let text = r#"
[[sinks.mqtt]]
name = "a"
url = "mqtt://127.0.0.1:1883"
overflow = "block"
block_timeout = "250ms"

[[sinks.influxdb]]
name = "b"
url = "http://127.0.0.1:8428"
overflow = "drop_newest"

[[sinks.redpanda]]
name = "c"
url = "http://127.0.0.1:8082"
"#;
        let c = Config::parse(text, "t", &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.sinks.overflow_policies(),
            vec![
                ("a", Overflow::Block { timeout: Duration::from_millis(250) }),
                ("b", Overflow::DropNewest),
                ("c", Overflow::DropOldest)
            ]
        );
        let text = "[[sinks.mqtt]]\nname = \"a\"\nurl = \"mqtt://h\"\noverflow = \"spill\"\nblock_timeout = \"1s\"\n";
        let err = Config::parse(text, "t.toml", &[]).expect_err("bad policy");
        let got: Vec<(&str, Option<&str>)> =
            err.problems.iter().map(|p| (p.path.as_str(), p.origin.as_deref())).collect();
        assert_eq!(
            got,
            [("sinks.mqtt[0].overflow", Some("line 4")), ("sinks.mqtt[0].block_timeout", Some("line 5"))],
            "{err}"
        );
    }
}
