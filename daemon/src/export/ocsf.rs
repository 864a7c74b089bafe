//! Evidence entries as OCSF events (Open Cybersecurity Schema Framework,
//! 1.1), the schema SIEMs ingest. Network decisions map to Network Activity
//! (4001), exec to Process Activity (1007), file opens to File System
//! Activity (1001), sentinel alerts to Detection Finding (2004); everything
//! else (approvals, policy loads, checkpoints) to Base Event (0). The
//! Warden fields an auditor needs to re-check the chain (seq, prev_hash,
//! hash, policy_snapshot, ...) ride in `unmapped`, so the SIEM's copy can
//! be verified against the host's chain.

use serde_json::{json, Map, Value};

use crate::evidence::Entry;

const OCSF_VERSION: &str = "1.1.0";

/// (category_uid, class_uid, activity_id) for an entry.
fn class_of(e: &Entry) -> (u32, u32, u32) {
    if e.kind == "alert" {
        // Findings / Detection Finding / 1 Create.
        return (2, 2004, 1);
    }
    match e.action.as_str() {
        // Network Activity: 1 Open (connect), 6 Traffic (sendmsg).
        a if a.starts_with("connect") => (4, 4001, 1),
        a if a.starts_with("sendmsg") => (4, 4001, 6),
        // Process Activity: 1 Launch.
        "exec" => (1, 1007, 1),
        // File System Activity: 14 Open.
        "open" => (1, 1001, 14),
        _ => (0, 0, 0),
    }
}

/// OCSF disposition_id: 1 Allowed, 2 Blocked, 99 Other.
fn disposition(decision: &str) -> (u32, &'static str) {
    match decision {
        "allow" | "approved" => (1, "Allowed"),
        "deny" | "rejected" | "expired" => (2, "Blocked"),
        "hold" => (99, "Held for approval"),
        "not_executed" => (99, "Decided, not executed"),
        _ => (99, "Recorded"),
    }
}

pub fn to_ocsf(e: &Entry) -> Value {
    let (category, class, activity) = class_of(e);
    let (disposition_id, disposition_name) = disposition(&e.decision);
    let mut event = Map::new();
    event.insert("category_uid".into(), json!(category));
    event.insert("class_uid".into(), json!(class));
    event.insert("activity_id".into(), json!(activity));
    event.insert("type_uid".into(), json!(class * 100 + activity));
    event.insert("time".into(), json!(e.ts_ns / 1_000_000));
    event.insert(
        "severity_id".into(),
        json!(if disposition_id == 2 { 3 } else { 1 }),
    );
    if class == 2004 {
        detection_finding(e, &mut event);
    }
    event.insert("disposition_id".into(), json!(disposition_id));
    event.insert("disposition".into(), json!(disposition_name));
    event.insert(
        "message".into(),
        json!(format!(
            "{} {} {}: {}",
            e.agent, e.action, e.target, e.decision
        )),
    );
    event.insert(
        "metadata".into(),
        json!({
            "version": OCSF_VERSION,
            "product": { "name": "Warden", "vendor_name": "Warden" },
            "uid": e.hash,
            "sequence": e.seq,
            "log_name": "warden-evidence",
        }),
    );
    event.insert(
        "actor".into(),
        json!({
            "user": { "name": e.user, "uid": e.uid.to_string() },
            "process": { "pid": e.pid, "file": { "path": e.exe } },
            "session": { "uid": e.loginuid.to_string(), "issuer": e.login_user },
        }),
    );
    if class == 4001 {
        if let Some((host, port)) = split_target(&e.target) {
            event.insert("dst_endpoint".into(), json!({ "ip": host, "port": port }));
        }
    }
    event.insert(
        "unmapped".into(),
        json!({
            "warden": {
                "kind": e.kind, "agent": e.agent, "owner": e.owner, "rule_id": e.rule_id,
                "policy_snapshot": e.policy_snapshot, "method": e.method, "target": e.target,
                "details": e.details, "seq": e.seq, "ts_ns": e.ts_ns,
                "prev_hash": e.prev_hash, "hash": e.hash,
            }
        }),
    );
    Value::Object(event)
}

/// A sentinel alert as an OCSF Detection Finding: what tripped
/// (`finding_info.analytic`: Statistical for the CUSUM detectors,
/// Behavioral for new behaviour), how far over its threshold, and the
/// window it judged. Severity: 4 High when the alert stopped the agent
/// (`on_alert` hold or kill), 3 Medium for a rise or a new behaviour, 2
/// Low for a fall.
fn detection_finding(e: &Entry, event: &mut Map<String, Value>) {
    let d = |k: &str| e.details.get(k).cloned().unwrap_or(Value::Null);
    let detector = e
        .details
        .get("detector")
        .and_then(Value::as_str)
        .unwrap_or("");
    let (analytic_type_id, analytic_type) = if detector.starts_with("new-") {
        (2, "Behavioral")
    } else {
        (3, "Statistical")
    };
    let acted = matches!(
        e.details.get("on_alert").and_then(Value::as_str),
        Some("hold" | "kill")
    );
    let severity = if acted {
        4
    } else if e.details.get("direction").and_then(Value::as_str) == Some("down") {
        2
    } else {
        3
    };
    event.insert("severity_id".into(), json!(severity));
    event.insert("status_id".into(), json!(1));
    event.insert(
        "finding_info".into(),
        json!({
            "uid": e.hash,
            "title": format!("{detector} on {} of agent {}", e.target, e.agent),
            "types": [detector],
            "created_time": e.ts_ns / 1_000_000,
            "analytic": {
                "name": detector,
                "type_id": analytic_type_id,
                "type": analytic_type,
            },
        }),
    );
    event.insert(
        "evidences".into(),
        json!([{ "data": {
            "class": d("class"), "statistic": d("statistic"), "threshold": d("threshold"),
            "baseline": d("baseline"), "observed": d("observed"), "window": d("window"),
            "direction": d("direction"), "on_alert": d("on_alert"),
        }}]),
    );
}

/// "127.0.0.1:80/tcp" or "[::1]:53/udp" -> (host, port).
fn split_target(t: &str) -> Option<(String, u16)> {
    let addr = t.split('/').next()?;
    let (host, port) = addr.rsplit_once(':')?;
    Some((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str, decision: &str, target: &str) -> Entry {
        serde_json::from_value(json!({
            "seq": 7, "ts_ns": 1_775_037_723_000_000_000i64, "kind": "decision", "agent": "bot",
            "owner": "alice@example.com", "uid": 1000, "loginuid": 1000, "user": "alice",
            "login_user": "alice", "pid": 42, "exe": "/usr/bin/curl", "action": action,
            "target": target, "decision": decision, "rule_id": "r", "policy_snapshot": "none",
            "method": "cgroup-deny", "details": {}, "prev_hash": "0".repeat(64), "hash": "a".repeat(64)
        }))
        .unwrap()
    }

    #[test]
    fn a_denied_connect_is_blocked_network_activity() {
        let v = to_ocsf(&entry("connect4", "deny", "127.0.0.1:8080/tcp"));
        assert_eq!(v["class_uid"], 4001);
        assert_eq!(v["type_uid"], 400101);
        assert_eq!(v["disposition_id"], 2);
        assert_eq!(v["time"], 1_775_037_723_000i64);
        assert_eq!(v["dst_endpoint"]["ip"], "127.0.0.1");
        assert_eq!(v["dst_endpoint"]["port"], 8080);
        assert_eq!(v["metadata"]["sequence"], 7);
        assert_eq!(v["unmapped"]["warden"]["prev_hash"], "0".repeat(64));
    }

    #[test]
    fn an_alert_is_a_detection_finding() {
        let mut e = entry("sentinel.alert", "alert", "connect rate");
        e.kind = "alert".into();
        e.details = serde_json::from_value(json!({
            "detector": "cusum-rate", "class": "connect", "direction": "up",
            "statistic": "290.000", "threshold": "8.000", "on_alert": "kill",
            "baseline": {"mean": "10.000", "sd": "1.000"}, "observed": "300.000",
            "window": {"start_ns": 1, "end_ns": 2, "secs": 10}
        }))
        .unwrap();
        let v = to_ocsf(&e);
        assert_eq!(v["class_uid"], 2004);
        assert_eq!(v["category_uid"], 2);
        assert_eq!(v["type_uid"], 200401);
        assert_eq!(v["severity_id"], 4);
        assert_eq!(v["finding_info"]["analytic"]["name"], "cusum-rate");
        assert_eq!(v["finding_info"]["analytic"]["type_id"], 3);
        assert_eq!(v["evidences"][0]["data"]["threshold"], "8.000");
    }

    #[test]
    fn ipv6_targets_and_other_kinds() {
        let v = to_ocsf(&entry("sendmsg6", "allow", "[::1]:53/udp"));
        assert_eq!(v["dst_endpoint"]["ip"], "::1");
        assert_eq!(v["activity_id"], 6);
        let v = to_ocsf(&entry("policy.load", "loaded", "p.yaml"));
        assert_eq!(v["class_uid"], 0);
        assert!(v.get("dst_endpoint").is_none());
    }
}
