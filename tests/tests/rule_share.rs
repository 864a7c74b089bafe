//! The kernel's rule maps are shared by every agent (issue #15 §4): each
//! agent's policy gets a fixed share, so big policies of some agents never
//! make another agent's policy fail.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use warden::policy::policy_share;
use warden_common::limits::{MAX_PATH_ENTRIES, RULE_MAP_SHARES};
use warden_tests::{can_run, stderr, TestEnv};

fn file_rules(n: usize, tag: &str) -> String {
    let mut y = String::from("version: 1\nrules:\n");
    for i in 0..n {
        y.push_str(&format!(
            "  - id: f{i}\n    file: {{ path: /tmp/{tag}/{i}, access: [read] }}\n    decision: allow\n"
        ));
    }
    y
}

#[test]
fn every_agent_fits_its_share_and_big_policies_are_refused_up_front() {
    if !can_run("rule_share") {
        return;
    }
    let share = policy_share(MAX_PATH_ENTRIES);
    assert_eq!(share, (MAX_PATH_ENTRIES / (2 * RULE_MAP_SHARES)) as usize);
    let mut env = TestEnv::new("share");
    // The 8,000-rule policy: refused by `policy check` (the
    // daemon's own pipeline) with the count and the share.
    env.write_policy("big.yaml", &file_rules(8000, "big"));
    let big = env.policy_dir().join("big.yaml");
    let out = env.cli(&["policy", "check", big.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("at most {share} ")),
        "{}",
        stderr(&out)
    );
    // RULE_MAP_SHARES agents whose policies fill their whole share, then
    // one more small one: all enforced, and each reloads (new rules
    // written beside the old) without a failure.
    env.write_policy("full.yaml", &file_rules(share, "full"));
    let full = env.policy_dir().join("full.yaml");
    let out = env.ok(&["policy", "check", full.to_str().unwrap()]);
    assert!(
        out.contains(&format!("FILE_RULES {share}/{share}")),
        "{out}"
    );
    env.write_policy("small.yaml", "version: 1\nrules: []\n");
    env.start_daemon();
    for i in 0..RULE_MAP_SHARES {
        env.add_agent(&format!("full{i}"), "full.yaml");
    }
    env.add_agent("small", "small.yaml");
    env.write_policy("full.yaml", &file_rules(share, "full2"));
    env.ok(&["policy", "reload"]);
    let status = env.ok(&["status"]);
    assert_eq!(
        status
            .matches(&format!("FILE_RULES {share}/{share}"))
            .count(),
        RULE_MAP_SHARES as usize,
        "{status}"
    );
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    assert_eq!(json["policy_errors"], serde_json::json!([]), "{json}");
    let agents = json["agents"].as_array().unwrap();
    assert_eq!(agents.len(), RULE_MAP_SHARES as usize + 1);
    assert!(agents.iter().all(|a| a["enforced"] == true), "{json}");
}
