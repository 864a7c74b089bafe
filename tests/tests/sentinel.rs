//! The sentinel, attacked from inside an agent: a steady stream of
//! loopback connects (10 per second) raises no alert; a burst (300 per
//! second) raises a `cusum-rate` alert for the connect class, listed by
//! `warden alerts`, streamed as an OCSF Detection Finding that the shipped
//! Sigma rule matches; with `on_alert: kill` the kill switch ends the
//! agent and records it.
//!
//! Timing: windows of 2 s judged 3 s after they end, summaries every 1 s
//! (`WARDEN_SUMMARY_SECS`), so an alert is due within window + settle +
//! one tick + one sweep (about 7 s) of the burst's start; the tests allow
//! 30 s on this loaded machine and report what they saw.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::time::{Duration, Instant};

use serde_json::Value;
use warden_tests::{can_run, killed, stderr, stdout, Listener, TestEnv};

const FAST: [(&str, &str); 1] = [("WARDEN_SUMMARY_SECS", "1")];

fn policy(port: u16, on_alert: &str) -> String {
    format!(
        "version: 1\nmonitor:\n  window: 2s\n  settle: 3s\n  warmup: 5\n  on_alert: {on_alert}\n\
         rules:\n  - id: local\n    connect: {{ to: 127.0.0.1, ports: [{port}], protocol: tcp }}\n    decision: allow\n"
    )
}

/// `phase I START_NS` lines of the probe's output.
fn phase_start(out: &str, i: usize) -> i64 {
    out.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("phase") && w.next() == Some(&i.to_string()))
                .then(|| w.next().unwrap().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no phase {i} in {out}"))
}

fn alerts(env: &TestEnv, agent: &str) -> Vec<Value> {
    env.ok(&["alerts", "--agent", agent, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn wait_alert(env: &TestEnv, agent: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(a) = alerts(env, agent).into_iter().find(&pred) {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "no alert: {:#?}\n{}",
            alerts(env, agent),
            env.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn is_rate_rise(a: &Value) -> bool {
    a["details"]["detector"] == "cusum-rate"
        && a["details"]["class"] == "connect"
        && a["details"]["direction"] == "up"
}

#[test]
fn steady_connects_raise_nothing_and_a_burst_raises_a_rate_alert() {
    if !can_run("sentinel") {
        return;
    }
    let mut env = TestEnv::new("sentburst");
    let l = Listener::tcp4();
    env.write_policy("p.yaml", &policy(l.port, "record"));
    env.start_daemon_with(&FAST);
    env.add_agent("steady", "p.yaml");
    let to = format!("127.0.0.1:{}", l.port);

    // 40 s at 10/s (5 windows of warm-up, then 15 judged), then 300/s.
    let out = env.probe_as("steady", &["connect-rate", &to, "10:40", "300:12"]);
    let text = stdout(&out);
    assert!(
        out.status.success() && text.ends_with("other=0"),
        "{text} {}",
        stderr(&out)
    );
    let burst = phase_start(&text, 1);

    let alert = wait_alert(&env, "steady", is_rate_rise);
    let all = alerts(&env, "steady");
    // Nothing in the steady phase: no alert of any kind for a window that
    // ended before the burst, nor a new-behaviour alert (the destination
    // was learnt during warm-up).
    let early: Vec<&Value> = all
        .iter()
        .filter(|a| a["details"]["window"]["end_ns"].as_i64().unwrap() <= burst - 2_000_000_000)
        .collect();
    assert!(
        early.is_empty(),
        "false positives in the steady phase: {early:#?}"
    );
    assert!(
        all.iter()
            .all(|a| a["details"]["detector"] != "new-connect"),
        "{all:#?}"
    );
    let delay_s = (alert["ts_ns"].as_i64().unwrap() - burst) as f64 / 1e9;
    eprintln!("burst alert {delay_s:.1} s after the burst started: {alert}");
    assert!(
        delay_s > 0.0 && delay_s < 30.0,
        "alert {delay_s} s after the burst"
    );
    let d = &alert["details"];
    for field in ["statistic", "threshold", "baseline", "window", "observed"] {
        assert!(!d[field].is_null(), "{field} missing: {alert}");
    }
    assert_eq!(d["threshold"], "8.000");
    assert_eq!(d["on_alert"], "record");
    assert_eq!(alert["decision"], "alert");
    let baseline: f64 = d["baseline"]["mean"].as_str().unwrap().parse().unwrap();
    assert!(
        (5.0..15.0).contains(&baseline),
        "baseline {baseline}/s: {alert}"
    );
    // The agent was not stopped (record).
    assert!(env.ok(&["agent", "list"]).contains("active"));

    // `warden alerts` lists it; the OCSF stream carries it as a Detection
    // Finding that the shipped Sigma rule matches.
    let table = env.ok(&["alerts", "--agent", "steady"]);
    assert!(
        table.contains("cusum-rate") && table.contains("connect"),
        "{table}"
    );
    let ocsf = env.ok(&[
        "log",
        "tail",
        "--no-follow",
        "--after",
        "0",
        "--format",
        "ocsf",
    ]);
    let rule_file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/detections/warden-sentinel-rate-rise.yml"
    );
    let rule = warden::export::sigma::Rule::parse(
        "warden-sentinel-rate-rise",
        &std::fs::read_to_string(rule_file).unwrap(),
    )
    .unwrap();
    let matched: Vec<Value> = ocsf
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| rule.matches(e))
        .collect();
    assert!(!matched.is_empty(), "the Sigma rule matched nothing");
    assert!(
        matched.iter().all(|e| e["class_uid"] == 2004),
        "{matched:#?}"
    );
    assert!(matched
        .iter()
        .any(|e| e["unmapped"]["warden"]["seq"] == alert["seq"]));
    env.ok(&["log", "verify"]);
}

#[test]
fn on_alert_kill_ends_the_agent_and_records_it() {
    if !can_run("sentinel") {
        return;
    }
    let mut env = TestEnv::new("sentkill");
    let l = Listener::tcp4();
    env.write_policy("p.yaml", &policy(l.port, "kill"));
    env.start_daemon_with(&FAST);
    env.add_agent("bursty", "p.yaml");
    let to = format!("127.0.0.1:{}", l.port);

    // 20 s steady, then a burst that would last 120 s if nothing stopped it.
    let started = Instant::now();
    let out = env.probe_as("bursty", &["connect-rate", &to, "10:20", "300:120"]);
    let ran = started.elapsed();
    let text = stdout(&out);
    assert!(
        killed(&out) || !out.status.success(),
        "the agent was not ended: {text}"
    );
    assert!(!text.contains("ok="), "the burst ran to its end: {text}");
    assert!(ran < Duration::from_secs(130), "ran {ran:?}");
    let burst = phase_start(&text, 1);

    let alert = wait_alert(&env, "bursty", is_rate_rise);
    assert_eq!(alert["details"]["on_alert"], "kill");
    let kill = env.wait_for_evidence("the kill switch's entry", |e| {
        e["kind"] == "kill" && e["agent"] == "bursty"
    });
    let reason = kill["details"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("sentinel alert") && reason.contains(&format!("seq {}", alert["seq"])),
        "{kill}"
    );
    assert_eq!(kill["details"]["mode"], "kill");
    assert!(kill["seq"].as_u64() > alert["seq"].as_u64());
    eprintln!(
        "killed {:.1} s after the burst started",
        (kill["ts_ns"].as_i64().unwrap() - burst) as f64 / 1e9
    );
    // Revoked: the agent's next connect is refused, and the cgroup is empty.
    assert!(env.ok(&["agent", "list"]).contains("revoked"));
    let out = env.probe_as("bursty", &["connect", &to]);
    assert!(!out.status.success(), "{}", stdout(&out));

    // The export bundle carries the alert, the detection rules it was
    // judged beside, and maps them to the monitoring controls.
    let bundle = env.dir.path().join("bundle");
    env.ok(&["evidence", "export", "--out", bundle.to_str().unwrap()]);
    let read = |f: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(bundle.join(f)).unwrap()).unwrap()
    };
    let alerts = read("alerts.json");
    assert!(
        alerts
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["seq"] == alert["seq"]
                && a["kind"] == "alert"
                && a["details"]["detector"] == "cusum-rate"),
        "{alerts:#}"
    );
    let rules = read("detections.json");
    let rules = rules.as_array().unwrap();
    assert_eq!(rules.len(), 4, "{rules:#?}");
    assert!(
        rules
            .iter()
            .any(|r| r["file"] == "warden-sentinel-rate-rise.yml"
                && r["sigma"].as_str().unwrap().contains("detection:")
                && r["sha256"].as_str().unwrap().len() == 64),
        "{rules:#?}"
    );
    let map = read("control_map.json");
    assert!(
        map.as_array().unwrap().iter().any(|m| {
            let has = |k: &str, v: &str| m[k].as_array().unwrap().iter().any(|x| x == v);
            has("records", "alerts.json")
                && has("records", "detections.json")
                && has("soc2", "CC7.2")
                && has("iso27001", "A.8.16")
                && m["nist_ai_rmf"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x.as_str().unwrap().starts_with("MEASURE"))
        }),
        "{map:#}"
    );
    let verified = env.ok(&["evidence", "verify", bundle.to_str().unwrap()]);
    assert!(verified.contains("bundle valid"), "{verified}");
}

#[test]
fn on_alert_hold_freezes_the_agent_until_a_human_revives_it() {
    if !can_run("sentinel") {
        return;
    }
    let mut env = TestEnv::new("senthold");
    let l = Listener::tcp4();
    env.write_policy("p.yaml", &policy(l.port, "hold"));
    env.start_daemon_with(&FAST);
    env.add_agent("held", "p.yaml");
    let to = format!("127.0.0.1:{}", l.port);
    let probe = warden_tests::probe_bin();
    let mut child = env
        .warden()
        .args(["run", "--agent", "held", "--", probe.to_str().unwrap()])
        .args(["connect-rate", &to, "10:20", "300:30"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    let alert = wait_alert(&env, "held", is_rate_rise);
    assert_eq!(alert["details"]["on_alert"], "hold");
    let kill = env.wait_for_evidence("the kill switch's freeze", |e| {
        e["kind"] == "kill" && e["agent"] == "held"
    });
    assert_eq!(kill["details"]["mode"], "freeze");
    assert!(kill["details"]["reason"]
        .as_str()
        .unwrap()
        .contains(&format!("seq {}", alert["seq"])));
    let events = env.agent_cgroup("held").join("cgroup.events");
    warden_tests::wait_until("the agent is frozen", || {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .contains("frozen 1")
    });
    // Frozen, not ended: the run is still there until a human decides.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the frozen agent ended"
    );
    env.ok(&["revive", "held", "--reason", "checked the burst"]);
    warden_tests::wait_until("the agent is thawed", || {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .contains("frozen 0")
    });
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("ok="), "{text}");
}
