//! Budgets: the kernel counts an agent's allowed actions per window and,
//! past the limit, refuses (deny), holds or kills, with the daemon running
//! or stopped, and records the refusal under `budget:<id>`.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    thread,
    time::Duration,
};

use serde_json::Value;
use warden_tests::{can_run, killed, probe_bin, stdout, Listener, TestEnv};

const LIMIT: u64 = 20;

fn policy(port: u16, then: &str, limit: u64, per: &str) -> String {
    format!(
        "version: 1
approvers:
  users: [root]
rules:
  - id: api
    connect: {{ to: 127.0.0.1, ports: [{port}], protocol: tcp }}
    decision: allow
budgets:
  - id: api-calls
    count: connect
    match: {{ rule: api }}
    limit: {limit}
    per: {per}
    then: {then}
"
    )
}

/// Waits until at least `margin` remains of the current `per`-long window
/// of the kernel's clock (`bpf_ktime_get_ns` is CLOCK_MONOTONIC; windows
/// are aligned to multiples of `per`), so a test's actions fall in one
/// window.
fn within_one_window(per: Duration, margin: Duration) {
    let now = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
    };
    let per = per.as_nanos();
    let left = per - now() % per;
    if left < margin.as_nanos() {
        thread::sleep(Duration::from_nanos(left as u64 + 50_000_000));
    }
}

fn setup(name: &str, then: &str) -> (TestEnv, Listener, String) {
    let l = Listener::tcp4();
    let mut env = TestEnv::new(name);
    env.write_policy("p.yaml", &policy(l.port, then, LIMIT, "1m"));
    env.start_daemon();
    env.add_agent("bot", "p.yaml");
    let addr = format!("127.0.0.1:{}", l.port);
    (env, l, addr)
}

/// The probe moves itself into `cgroup` and connects `n` times: the
/// kernel alone decides (no `warden run`, no daemon needed).
fn connect_n_in(cgroup: &Path, addr: &str, n: u64) -> Output {
    Command::new(probe_bin())
        .arg("join")
        .arg(cgroup)
        .args(["connect-n", addr, &n.to_string()])
        .output()
        .unwrap()
}

fn budget_refusals(env: &TestEnv) -> Vec<Value> {
    env.evidence()
        .into_iter()
        .filter(|e| e["kind"] == "decision" && e["rule_id"] == "budget:api-calls")
        .collect()
}

#[test]
fn a_connect_budget_denies_the_21st_with_the_daemon_running() {
    if !can_run("budget_deny") {
        return;
    }
    let (env, _l, addr) = setup("budgetdeny", "deny");
    within_one_window(Duration::from_secs(60), Duration::from_secs(20));
    let out = env.probe_as("bot", &["connect-n", &addr, "25"]);
    assert_eq!(stdout(&out), "ok=20 eperm=5");
    let e = env.wait_for_evidence("the budget's refusal", |e| {
        e["kind"] == "decision" && e["rule_id"] == "budget:api-calls"
    });
    assert_eq!(e["decision"], "deny", "{e}");
    assert_eq!(e["method"], "cgroup-deny", "{e}");
    assert_eq!(e["target"], format!("{addr}/tcp"), "{e}");
    // Every refusal is on the record (none silent).
    env.wait_for_evidence("five refusals", |_| budget_refusals(&env).len() == 5);
}

#[test]
fn a_connect_budget_is_enforced_with_the_daemon_stopped() {
    if !can_run("budget_no_daemon") {
        return;
    }
    let (mut env, _l, addr) = setup("budgetdown", "deny");
    let cg = env.agent_cgroup("bot");
    env.stop_daemon();
    within_one_window(Duration::from_secs(60), Duration::from_secs(20));
    assert_eq!(stdout(&connect_n_in(&cg, &addr, 25)), "ok=20 eperm=5");
    // The refusals waited in the pinned ring buffer for the next daemon.
    env.start_daemon();
    let e = env.wait_for_evidence("a refusal made while the daemon was down", |e| {
        e["kind"] == "decision" && e["rule_id"] == "budget:api-calls"
    });
    assert_eq!(e["decision"], "deny", "{e}");
    env.wait_for_evidence("five refusals", |_| budget_refusals(&env).len() == 5);
}

#[test]
fn a_hold_budget_holds_the_21st_until_a_human_approves_one_more() {
    if !can_run("budget_hold") {
        return;
    }
    let (env, _l, addr) = setup("budgethold", "hold");
    within_one_window(Duration::from_secs(60), Duration::from_secs(40));
    let probe = probe_bin();
    let child = env
        .warden()
        .args(["run", "--agent", "bot", "--", probe.to_str().unwrap()])
        .args(["connect-n", &addr, "21"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pending = warden_tests::wait_held(&env, child.id(), &['T'], "the 21st connect is held");
    assert_eq!(pending["job"]["target"], format!("{addr}/tcp"), "{pending}");
    assert_eq!(pending["rule_id"], "budget:api-calls", "{pending}");
    let id = pending["id"].as_u64().unwrap().to_string();
    env.ok(&["approve", &id, "--reason", "one more call"]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "ok=21 eperm=0");
    env.wait_for_evidence("the approved over-budget connect", |e| {
        e["kind"] == "decision" && e["method"] == "approved" && e["rule_id"] == "budget:api-calls"
    });
}

#[test]
fn a_kill_budget_kills_the_process_at_the_21st() {
    if !can_run("budget_kill") {
        return;
    }
    let (mut env, _l, addr) = setup("budgetkill", "kill");
    within_one_window(Duration::from_secs(60), Duration::from_secs(20));
    let out = env.probe_as("bot", &["connect-n", &addr, "25"]);
    assert!(killed(&out), "{:?}", out.status);
    let e = env.wait_for_evidence("the kill", |e| {
        e["kind"] == "decision" && e["rule_id"] == "budget:api-calls"
    });
    assert_eq!(
        (e["decision"].as_str(), e["method"].as_str()),
        (Some("deny"), Some("kill")),
        "{e}"
    );
    // The kill is the kernel's too: with the daemon stopped, in a new
    // window's worth of budget... the same budget is already spent, so
    // the next connect is refused and its process killed.
    let cg = env.agent_cgroup("bot");
    env.stop_daemon();
    let out = connect_n_in(&cg, &addr, 1);
    assert!(
        killed(&out),
        "daemon stopped: {:?} {}",
        out.status,
        stdout(&out)
    );
}

/// Many processes with many threads race one budget: the kernel counts
/// with compare-and-swap, so no two CPUs take the same unit and the agent
/// never gets more than the limit (slack 0). A lost race retries; after 4
/// lost tries the action is refused, so a few may be refused early
/// (never allowed late).
#[test]
fn racing_processes_never_get_more_than_the_limit() {
    if !can_run("budget_race") {
        return;
    }
    const RACE_LIMIT: u64 = 200;
    let l = Listener::tcp4();
    let mut env = TestEnv::new("budgetrace");
    env.write_policy("p.yaml", &policy(l.port, "deny", RACE_LIMIT, "1h"));
    env.start_daemon();
    env.add_agent("bot", "p.yaml");
    let addr = format!("127.0.0.1:{}", l.port);
    let cg = env.agent_cgroup("bot");
    within_one_window(Duration::from_secs(3600), Duration::from_secs(120));
    // 16 processes x 4 threads x 10 connects = 640 tries for 200 units.
    let children: Vec<_> = (0..16)
        .map(|_| {
            Command::new(probe_bin())
                .arg("join")
                .arg(&cg)
                .args(["connect-threads", &addr, "4", "10"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let (mut ok, mut eperm) = (0u64, 0u64);
    for c in children {
        let out = c.wait_with_output().unwrap();
        let s = stdout(&out);
        let mut parts = s.split(' ');
        let field = |p: Option<&str>, name: &str| -> u64 {
            p.and_then(|p| p.strip_prefix(name))
                .unwrap()
                .parse()
                .unwrap()
        };
        ok += field(parts.next(), "ok=");
        eperm += field(parts.next(), "eperm=");
    }
    assert_eq!(
        ok + eperm,
        640,
        "every connect either went through or was refused"
    );
    assert!(
        ok <= RACE_LIMIT,
        "{ok} connects went through a budget of {RACE_LIMIT}"
    );
    assert!(
        ok >= RACE_LIMIT - 8,
        "only {ok} of {RACE_LIMIT} went through"
    );
    // Each refusal is recorded.
    env.wait_for_evidence("every refusal", |_| {
        budget_refusals(&env).len() as u64 == eperm
    });
}
