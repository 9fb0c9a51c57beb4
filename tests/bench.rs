//! `twinrt bench --quick`: every scenario runs (small sizes) and prints one JSON line with
//! its parameters, figures and checks. No timing is asserted: speed is what the benchmark
//! measures, not what a test on a shared machine can promise. Needs `mosquitto`,
//! `mosquitto-clients` and `victoria-metrics` (scripts/test.sh installs them).

use std::process::Command;

use serde_json::Value;

fn expect_fields(line: &Value, figures: &[&str], checks: &[&str]) {
    let name = line["scenario"].as_str().unwrap_or("?");
    for f in figures {
        assert!(line["figures"].get(*f).is_some(), "{name}: figure {f} missing in {line}");
    }
    let names: Vec<&str> =
        line["checks"].as_array().into_iter().flatten().filter_map(|c| c["figure"].as_str()).collect();
    for c in checks {
        assert!(names.contains(c), "{name}: check {c} missing in {line}");
    }
    for c in line["checks"].as_array().into_iter().flatten() {
        assert!(c["value"].is_number() && c["target"].is_number(), "{name}: {c}");
        assert!(c["op"] == "<=" || c["op"] == ">=", "{name}: {c}");
        assert!(c["ok"].is_boolean(), "{name}: {c}");
    }
    assert!(line["params"].is_object() && line["ok"].is_boolean(), "{name}: {line}");
}

#[test]
fn bench_quick_runs_every_scenario_and_prints_their_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_twinrt"))
        .args(["bench", "--quick"])
        .output()
        .expect("run twinrt bench --quick");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 0: targets met, 1: some missed (not this test's business); 2: a scenario could not run
    // (e.g. mosquitto or victoria-metrics missing: the message says how to install them).
    assert!(matches!(out.status.code(), Some(0) | Some(1)), "exit {:?}\n{stdout}\n{stderr}", out.status);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let by_name = |n: &str| {
        lines.iter().find(|l| l["scenario"] == n).unwrap_or_else(|| panic!("no {n} line in\n{stdout}\n{stderr}"))
    };
    assert_eq!(lines.len(), 5, "{stdout}");

    let density = by_name("density");
    expect_fields(
        density,
        &["ready_s", "rss_per_twin_kib", "twins_ticked", "components_kib_per_twin", "observations_per_s"],
        &["rss_per_twin_kib", "ready_s", "twins_ticked"],
    );
    assert_eq!(density["figures"]["twins_ticked"], density["params"]["twins"], "every twin ticked");
    let parts = density["figures"]["components_kib_per_twin"].as_object().expect("components");
    for c in ["config", "registry", "tree-specs", "bare-actor", "supervision", "timer", "rest"] {
        assert!(parts.get(c).is_some_and(Value::is_number), "component {c}: {parts:?}");
    }

    let t = by_name("throughput");
    expect_fields(t, &["observations_per_s", "latency_p50_ms", "latency_p99_ms"], &["observations_per_s"]);
    assert!(t["figures"]["observations_per_s"].as_f64().is_some_and(|v| v > 0.0), "{t}");

    let m = by_name("mqtt");
    expect_fields(
        m,
        &["qos0_mosquitto_pub", "qos0_rumqttc", "qos0_twins", "qos1_mosquitto_pub", "qos1_rumqttc", "qos1_twins"],
        &["qos0_ratio_twins_to_best_bare", "qos1_ratio_twins_to_best_bare"],
    );
    let f = &m["figures"]["qos1_twins"];
    assert_eq!(f["received"], f["sent"], "every QoS 1 message of the twins reached the subscriber: {f}");
    for q in [
        "qos0_mosquitto_pub",
        "qos0_rumqttc",
        "qos0_twins",
        "qos0_small_fleet",
        "qos1_mosquitto_pub",
        "qos1_rumqttc",
        "qos1_twins",
    ] {
        assert!(m["figures"][q]["received"].as_u64().is_some_and(|n| n > 0), "{q}: {m}");
    }
    assert_eq!(m["figures"]["qos0_small_fleet"]["twins"], m["params"]["small_fleet"], "{m}");
    assert!(m["figures"]["qos0_small_fleet"]["ratio_to_best_bare"].as_f64().is_some_and(|r| r > 0.0), "{m}");

    let s = by_name("steady");
    expect_fields(
        s,
        &["achieved_per_s", "configured_per_s", "tick_lateness_p99_ms_at_most", "rss_growth_pct"],
        &["rate_error_pct", "tick_lateness_p99_ms_at_most", "rss_growth_pct"],
    );
    assert!(s["figures"]["achieved_per_s"].as_f64().is_some_and(|v| v > 0.0), "{s}");

    let c = by_name("consumer");
    expect_fields(
        c,
        &["consumer_points_per_s", "direct_best_points_per_s", "committed"],
        &["ratio_consumer_to_direct"],
    );
    assert_eq!(c["figures"]["committed"], c["params"]["records"], "every record committed: {c}");
    assert_eq!(c["figures"]["victoria_rows_consumer"], c["figures"]["victoria_rows_direct"], "{c}");
    assert!(c["errors"].as_array().is_some_and(Vec::is_empty), "{c}");
    // Both placements ran where there are CPUs to split; the checked one is `split`.
    if std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) >= 2 {
        assert_eq!(c["figures"]["checked_placement"], "split", "{c}");
        for p in ["split", "shared"] {
            let f = &c["figures"][p];
            assert_eq!(f["committed"], c["params"]["records"], "{p}: {c}");
            assert_eq!(f["victoria_rows_consumer"], f["victoria_rows_direct"], "{p}: {c}");
            for k in ["victoria_cpu_us_per_point_direct", "twinrt_cpu_us_per_record_with_proxy"] {
                assert!(f[k].as_f64().is_some_and(|v| v > 0.0), "{p}.{k}: {c}");
            }
        }
        assert_eq!(c["figures"]["split"]["victoria_cpus"], "0", "{c}");
    }

    // The human summary names every scenario and compares figures to their targets.
    for n in ["density", "throughput", "mqtt", "steady", "consumer"] {
        assert!(stderr.contains(&format!("== {n} (")), "summary of {n} missing:\n{stderr}");
    }
    assert!(stderr.contains("target <=") && stderr.contains("target >="), "{stderr}");
}
