//! `[[sinks.pulsar]]` (the producer sink) and `[pulsar_distributor]` (the consumers that
//! republish to other sinks).

use std::time::Duration;

use twins::SensorKind;

use super::reader::{Reader, Section};
use super::{
    read_max_payload, read_sink_common, read_token, t_opt_strings, HttpSinkCommon, Secret, SinkDefaults, SinksConfig,
    HTTP_KEYS,
};

/// The seed's topics: `persistent://public/default/smartcity-{type}`, with the type
/// written without its hyphen (`smartcity-airquality`).
pub const PULSAR_TOPIC_PREFIX: &str = "persistent://public/default/smartcity-";

/// The topic of a sensor type: `prefix` + the type without hyphens.
pub fn pulsar_topic(prefix: &str, kind: SensorKind) -> String {
    format!("{prefix}{}", kind.as_str().replace('-', ""))
}

/// A Pulsar producer sink: one producer per sensor type, messages keyed by sensor id, the
/// MQTT JSON payload.
#[derive(Debug, Clone)]
pub struct PulsarSinkConfig {
    /// `url` is `pulsar://host:port` or `pulsar+ssl://host:port`; `batch.batch_size` is how
    /// many messages are sent before their receipts are awaited together.
    pub common: HttpSinkCommon,
    /// Topic = prefix + the sensor type without hyphens.
    pub topic_prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PulsarSubscriptionType {
    Exclusive,
    Shared,
    Failover,
    KeyShared,
}

impl PulsarSubscriptionType {
    pub fn as_str(self) -> &'static str {
        match self {
            PulsarSubscriptionType::Exclusive => "exclusive",
            PulsarSubscriptionType::Shared => "shared",
            PulsarSubscriptionType::Failover => "failover",
            PulsarSubscriptionType::KeyShared => "key_shared",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialPosition {
    Earliest,
    Latest,
}

/// `[pulsar_distributor]`: one consumer per topic, each republishing every observation to
/// the `targets` sinks and acknowledging it to Pulsar once every target accepted it.
#[derive(Debug, Clone)]
pub struct PulsarDistributorConfig {
    pub url: String,
    pub token: Option<Secret>,
    /// Full topic names.
    pub topics: Vec<String>,
    pub subscription: String,
    pub subscription_type: PulsarSubscriptionType,
    /// Where a new subscription starts (an existing one resumes where it was).
    pub initial_position: InitialPosition,
    /// Names of the sinks every observation is republished to.
    pub targets: Vec<String>,
    /// Messages received and not yet accepted by every target, at most, per topic: the
    /// bound on what a down target makes wait.
    pub max_in_flight: usize,
    /// How long a message may wait for its targets; then it is negatively acknowledged
    /// (Pulsar redelivers it).
    pub ack_timeout: Duration,
    /// Where payloads that are not observations go; `None` = `{topic}-{subscription}-DLQ`
    /// (Pulsar's convention).
    pub dead_letter_topic: Option<String>,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Bound of connecting, subscribing and producing to the dead-letter topic.
    pub operation_timeout: Duration,
    /// A payload longer than this is dead-lettered without being parsed.
    pub max_payload_bytes: usize,
}

impl PulsarDistributorConfig {
    /// The dead-letter topic of `topic`.
    pub fn dead_letter_topic_of(&self, topic: &str) -> String {
        match &self.dead_letter_topic {
            Some(t) => t.clone(),
            None => format!("{topic}-{}-DLQ", self.subscription),
        }
    }
}

/// `pulsar://host[:port]` or `pulsar+ssl://host[:port]` (default ports 6650, 6651),
/// returned as `scheme://host:port`.
pub fn parse_pulsar_url(url: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("\"{url}\" is not a URL: write pulsar://HOST:PORT or pulsar+ssl://HOST:PORT"))?;
    let default_port = match scheme {
        "pulsar" => 6650,
        "pulsar+ssl" => 6651,
        other => return Err(format!("unsupported scheme \"{other}\" in \"{url}\": use pulsar:// or pulsar+ssl://")),
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains(['/', '@', '?', '#']) {
        return Err(format!("\"{url}\": only HOST[:PORT] may follow the scheme"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port: u16 = p.parse().map_err(|_| format!("invalid port \"{p}\" in \"{url}\""))?;
            (h, port)
        }
        _ => (rest, default_port),
    };
    if host.is_empty() {
        return Err(format!("no host in \"{url}\""));
    }
    if port == 0 {
        return Err(format!("port 0 in \"{url}\""));
    }
    Ok(format!("{scheme}://{host}:{port}"))
}

/// A full Pulsar topic name: `persistent://tenant/namespace/topic` (or `non-persistent://`).
pub fn check_pulsar_topic(topic: &str) -> Result<(), String> {
    let bad = || {
        format!("\"{topic}\" is not a full topic name: write persistent://TENANT/NAMESPACE/TOPIC (e.g. {PULSAR_TOPIC_PREFIX}traffic)")
    };
    let (domain, rest) = topic.split_once("://").ok_or_else(bad)?;
    if domain != "persistent" && domain != "non-persistent" {
        return Err(bad());
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let name_ok = |p: &str| {
        !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=' | ':'))
    };
    if parts.len() != 3 || !parts.iter().all(|p| name_ok(p)) {
        return Err(bad());
    }
    Ok(())
}

pub(super) fn read_sink(r: &mut Reader<'_>, t: &mut Section) -> Option<PulsarSinkConfig> {
    let path = t.path.clone();
    let common = read_sink_common(r, t, SinkDefaults::ordered(500, Duration::from_millis(20)), parse_pulsar_url);
    let topic_prefix = r.or(t, "topic_prefix", PULSAR_TOPIC_PREFIX.to_string());
    if let Err(e) = check_pulsar_topic(&format!("{topic_prefix}traffic")) {
        r.problem(format!("{path}.topic_prefix"), e);
    }
    Some(PulsarSinkConfig { common: common?, topic_prefix })
}

pub(super) fn sink_keys() -> Vec<&'static str> {
    [HTTP_KEYS, &["topic_prefix"]].concat()
}

pub(super) const DISTRIBUTOR_KEYS: &[&str] = &[
    "url",
    "token",
    "token_file",
    "topics",
    "subscription",
    "subscription_type",
    "initial_position",
    "targets",
    "max_in_flight",
    "ack_timeout",
    "dead_letter_topic",
    "reconnect_min",
    "reconnect_max",
    "operation_timeout",
    "max_payload_bytes",
];

pub(super) fn read_distributor(
    r: &mut Reader<'_>,
    s: &mut Section,
    sinks: &SinksConfig,
) -> Option<PulsarDistributorConfig> {
    let path = s.path.clone();
    let url: Option<String> = r.req(s, "url");
    let url = url.and_then(|u| match parse_pulsar_url(&u) {
        Ok(u) => Some(u),
        Err(e) => {
            r.problem(format!("{path}.url"), e);
            None
        }
    });
    let token = read_token(r, s);
    let topics = match t_opt_strings(r, s, "topics") {
        Some(t) => t,
        None => SensorKind::ALL.iter().map(|k| pulsar_topic(PULSAR_TOPIC_PREFIX, *k)).collect(),
    };
    if topics.is_empty() {
        r.problem(format!("{path}.topics"), "must name at least one topic");
    }
    for (i, t) in topics.iter().enumerate() {
        if let Err(e) = check_pulsar_topic(t) {
            r.problem(format!("{path}.topics[{i}]"), e);
        }
    }
    let subscription = r.or(s, "subscription", "twinrt-distributor".to_string());
    if subscription.is_empty() || subscription.contains(['/', ' ']) {
        r.problem(format!("{path}.subscription"), format!("\"{subscription}\" is not a subscription name"));
    }
    let subscription_type = match r.or(s, "subscription_type", "key_shared".to_string()).as_str() {
        "exclusive" => PulsarSubscriptionType::Exclusive,
        "shared" => PulsarSubscriptionType::Shared,
        "failover" => PulsarSubscriptionType::Failover,
        "key_shared" => PulsarSubscriptionType::KeyShared,
        other => {
            r.problem(
                format!("{path}.subscription_type"),
                format!("\"{other}\": accepted are key_shared, shared, failover, exclusive"),
            );
            PulsarSubscriptionType::KeyShared
        }
    };
    let initial_position = match r.or(s, "initial_position", "earliest".to_string()).as_str() {
        "earliest" => InitialPosition::Earliest,
        "latest" => InitialPosition::Latest,
        other => {
            r.problem(format!("{path}.initial_position"), format!("\"{other}\": accepted are earliest, latest"));
            InitialPosition::Earliest
        }
    };
    let targets = t_opt_strings(r, s, "targets").unwrap_or_default();
    if targets.is_empty() {
        r.problem(format!("{path}.targets"), "name at least one sink to republish to");
    }
    let names = sinks.names();
    let pulsar_sinks: Vec<&str> = sinks.pulsar.iter().map(|p| p.common.name.as_str()).collect();
    for (i, t) in targets.iter().enumerate() {
        if pulsar_sinks.contains(&t.as_str()) {
            r.problem(
                format!("{path}.targets[{i}]"),
                format!("\"{t}\" is a Pulsar sink: republishing to Pulsar would loop"),
            );
        } else if !names.contains(&t.as_str()) {
            let known =
                if names.is_empty() { "there is none".to_string() } else { format!("known: {}", names.join(", ")) };
            r.problem(format!("{path}.targets[{i}]"), format!("no sink named \"{t}\" ({known})"));
        }
    }
    let max_in_flight = r.or(s, "max_in_flight", 1000usize);
    if max_in_flight == 0 || max_in_flight > 65_535 {
        r.problem(format!("{path}.max_in_flight"), "must be between 1 and 65535");
    }
    let ack_timeout = r.or(s, "ack_timeout", Duration::from_secs(60));
    if ack_timeout.is_zero() {
        r.problem(format!("{path}.ack_timeout"), "must be > 0");
    }
    let dead_letter_topic: Option<String> = r.opt(s, "dead_letter_topic");
    if let Some(t) = &dead_letter_topic {
        if let Err(e) = check_pulsar_topic(t) {
            r.problem(format!("{path}.dead_letter_topic"), e);
        }
    }
    let reconnect_min = r.or(s, "reconnect_min", Duration::from_millis(200));
    let reconnect_max = r.or(s, "reconnect_max", Duration::from_secs(10));
    if reconnect_min > reconnect_max {
        r.problem(format!("{path}.reconnect_min"), "must not exceed reconnect_max");
    }
    let operation_timeout = r.or(s, "operation_timeout", Duration::from_secs(10));
    if operation_timeout.is_zero() {
        r.problem(format!("{path}.operation_timeout"), "must be > 0");
    }
    let max_payload_bytes = read_max_payload(r, s);
    Some(PulsarDistributorConfig {
        url: url?,
        token,
        topics,
        subscription,
        subscription_type,
        initial_position,
        targets,
        max_in_flight,
        ack_timeout,
        dead_letter_topic,
        reconnect_min,
        reconnect_max,
        operation_timeout,
        max_payload_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn topics_follow_the_seed() {
        assert_eq!(
            pulsar_topic(PULSAR_TOPIC_PREFIX, SensorKind::AirQuality),
            "persistent://public/default/smartcity-airquality"
        );
        assert_eq!(
            pulsar_topic(PULSAR_TOPIC_PREFIX, SensorKind::Traffic),
            "persistent://public/default/smartcity-traffic"
        );
        for k in SensorKind::ALL {
            assert!(check_pulsar_topic(&pulsar_topic(PULSAR_TOPIC_PREFIX, k)).is_ok());
        }
        assert!(check_pulsar_topic("smartcity-traffic").is_err());
        assert!(check_pulsar_topic("persistent://public/default").is_err());
        assert!(check_pulsar_topic("persistent://public/default/a b").is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(parse_pulsar_url("pulsar://localhost").as_deref(), Ok("pulsar://localhost:6650"));
        assert_eq!(parse_pulsar_url("pulsar+ssl://h:7000/").as_deref(), Ok("pulsar+ssl://h:7000"));
        assert!(parse_pulsar_url("http://h:6650").is_err());
        assert!(parse_pulsar_url("pulsar://:6650").is_err());
        assert!(parse_pulsar_url("pulsar://h:0").is_err());
        assert!(parse_pulsar_url("pulsar://h:6650/x").is_err());
    }

    #[test]
    fn a_distributor_with_every_default() {
        let text = "[[sinks.mqtt]]\nname = \"emqx\"\nurl = \"mqtt://127.0.0.1:1883\"\nconsumer_only = true\n\
                    [[sinks.pulsar]]\nname = \"pulsar\"\nurl = \"pulsar://127.0.0.1\"\n\
                    [pulsar_distributor]\nurl = \"pulsar://127.0.0.1:6650\"\ntargets = [\"emqx\"]\n";
        let c = Config::parse(text, "t", &[]).unwrap_or_else(|e| panic!("{e}"));
        let d = c.pulsar_distributor.expect("distributor");
        assert_eq!(d.topics.len(), 6);
        assert!(d.topics.contains(&"persistent://public/default/smartcity-airquality".to_string()));
        assert_eq!(d.subscription_type, PulsarSubscriptionType::KeyShared);
        assert_eq!(d.initial_position, InitialPosition::Earliest);
        assert_eq!(
            d.dead_letter_topic_of("persistent://public/default/smartcity-noise"),
            "persistent://public/default/smartcity-noise-twinrt-distributor-DLQ"
        );
        assert_eq!(c.sinks.pulsar[0].common.url, "pulsar://127.0.0.1:6650");
        assert_eq!(c.sinks.pulsar[0].topic_prefix, PULSAR_TOPIC_PREFIX);
        assert_eq!(c.sinks.consumer_only(), vec!["emqx"]);
    }

    #[test]
    fn every_problem_is_named() {
        let text = "[[sinks.pulsar]]\nname = \"p\"\nurl = \"http://x\"\ntopic_prefix = \"smartcity-\"\n\
                    [pulsar_distributor]\nurl = \"pulsar://h\"\ntopics = [\"traffic\"]\nsubscription_type = \"fanout\"\n\
                    targets = [\"p\", \"nope\"]\nmax_in_flight = 0\ninitial_position = \"middle\"\nzzz = 1\n";
        let err = Config::parse(text, "t", &[]).expect_err("must fail");
        let got: Vec<(String, Option<String>)> =
            err.problems.iter().map(|p| (p.path.clone(), p.origin.clone())).collect();
        for (path, line) in [
            ("sinks.pulsar[0].url", "line 3"),
            ("sinks.pulsar[0].topic_prefix", "line 4"),
            ("pulsar_distributor.topics[0]", "line 7"),
            ("pulsar_distributor.subscription_type", "line 8"),
            ("pulsar_distributor.targets[0]", "line 9"),
            ("pulsar_distributor.targets[1]", "line 9"),
            ("pulsar_distributor.max_in_flight", "line 10"),
            ("pulsar_distributor.initial_position", "line 11"),
            ("pulsar_distributor.zzz", "line 12"),
        ] {
            assert!(got.iter().any(|(p, o)| p == path && o.as_deref() == Some(line)), "{path} at {line}: {err}");
        }
    }
}
