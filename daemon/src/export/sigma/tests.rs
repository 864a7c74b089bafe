//! The shipped detection rules over an OCSF stream made from evidence
//! entries: each fires on what it names and on nothing else.

use serde_json::json;

use super::*;
use crate::{evidence::Entry, export::ocsf::to_ocsf};

fn rules() -> Vec<(String, Rule)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/detections");
    let mut out: Vec<(String, Rule)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|f| f.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let rule = Rule::parse(&name, &std::fs::read_to_string(&p).unwrap()).unwrap();
            (name, rule)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn entry(
    seq: u64,
    kind: &str,
    action: &str,
    target: &str,
    decision: &str,
    details: serde_json::Value,
) -> Entry {
    serde_json::from_value(json!({
        "seq": seq, "ts_ns": 1_775_037_723_000_000_000i64, "kind": kind, "agent": "bot",
        "owner": "alice@example.com", "uid": 1000, "loginuid": 1000, "user": "alice",
        "login_user": "alice", "pid": 42, "exe": "/usr/bin/python3", "action": action,
        "target": target, "decision": decision, "rule_id": "r", "policy_snapshot": "none",
        "method": "allow", "details": details, "prev_hash": "0".repeat(64), "hash": "a".repeat(64)
    }))
    .unwrap()
}

fn alert(seq: u64, detector: &str, target: &str, direction: Option<&str>) -> Entry {
    let mut d = json!({"detector": detector, "class": "connect", "statistic": "9.000",
        "threshold": "8.000", "on_alert": "record"});
    if let Some(dir) = direction {
        d["direction"] = json!(dir);
    }
    entry(seq, "alert", "sentinel.alert", target, "alert", d)
}

#[test]
fn the_shipped_rules_fire_on_what_they_name_and_nothing_else() {
    let rules = rules();
    assert!(rules.len() >= 3, "{} rules", rules.len());
    // (entry, the rules that must fire on it)
    let stream: Vec<(Entry, &[&str])> = vec![
        (
            alert(1, "cusum-rate", "connect rate", Some("up")),
            &["warden-sentinel-rate-rise"],
        ),
        (alert(2, "cusum-rate", "connect rate", Some("down")), &[]),
        (
            alert(3, "new-exec", "/usr/bin/nc", None),
            &["warden-new-shell-or-netcat-exec"],
        ),
        (alert(4, "new-exec", "/usr/bin/git", None), &[]),
        (
            entry(
                5,
                "decision",
                "connect4",
                "10.0.0.5:22/tcp",
                "deny",
                json!({}),
            ),
            &["warden-blocked-egress-admin-ports"],
        ),
        (
            entry(
                6,
                "decision",
                "connect4",
                "10.0.0.5:22/tcp",
                "allow",
                json!({}),
            ),
            &[],
        ),
        (
            entry(
                7,
                "decision",
                "connect4",
                "10.0.0.5:443/tcp",
                "deny",
                json!({}),
            ),
            &[],
        ),
        (
            entry(
                8,
                "decision",
                "open",
                "/home/a/.ssh/id_ed25519",
                "deny",
                json!({}),
            ),
            &["warden-credential-file-access"],
        ),
        (
            entry(
                9,
                "decision",
                "open",
                "/home/a/.ssh/id_ed25519.pub",
                "allow",
                json!({}),
            ),
            &[],
        ),
        (
            entry(10, "decision", "open", "/etc/shadow", "allow", json!({})),
            &["warden-credential-file-access"],
        ),
        (
            entry(11, "decision", "exec", "/usr/bin/nc", "allow", json!({})),
            &[],
        ),
    ];
    for (e, want) in &stream {
        // Through JSON, as a SIEM reads the stream.
        let line = serde_json::to_string(&to_ocsf(e)).unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        let fired: Vec<&str> = rules
            .iter()
            .filter(|(_, r)| r.matches(&event))
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(&fired, want, "seq {}: {line}", e.seq);
    }
}

#[test]
fn unsupported_sigma_is_an_error_not_a_silent_miss() {
    let rule = |detection: &str| {
        Rule::parse("x", &format!("title: t\ndetection:\n{detection}"))
            .unwrap_err()
            .to_string()
    };
    assert!(rule("  s:\n    a|re: x\n  condition: s\n").contains("modifier `re`"));
    assert!(rule("  s:\n    a: x*\n  condition: s\n").contains("wildcards"));
    assert!(rule("  s_1:\n    a: x\n  condition: 1 of s_*\n").contains("not supported"));
    assert!(rule("  s:\n    a: x\n  condition: t\n").contains("no search identifier `t`"));
    assert!(rule("  s:\n    a: x\n").contains("no condition"));
}

#[test]
fn conditions_bind_as_sigma_says() {
    let r = Rule::parse(
        "x",
        "title: t\ndetection:\n  a: {k: 1}\n  b: {k: 2}\n  c: {j: 3}\n  condition: a or b and not c\n",
    )
    .unwrap();
    assert!(r.matches(&json!({"k": 1, "j": 3})));
    assert!(r.matches(&json!({"k": 2})));
    assert!(!r.matches(&json!({"k": 2, "j": 3})));
    let r = Rule::parse(
        "x",
        "title: t\ndetection:\n  a: {k: 1}\n  b: {k: 2}\n  c: {j: 3}\n  condition: (a or b) and not c\n",
    )
    .unwrap();
    assert!(!r.matches(&json!({"k": 1, "j": 3})));
    assert!(r.matches(&json!({"k": 1, "j": 4})));
}
