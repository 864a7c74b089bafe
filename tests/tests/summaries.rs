//! Repeated allowed actions are counted, not copied: the first allowed open
//! (or exec, or connect) of a key is recorded individually, its repeats are
//! counted in the kernel and written as one `summary` entry per key and
//! sweep, chained like any entry. Repeated denials refused by a cgroup hook
//! (connect, sendmsg) are counted the same way (`evidence: { denied:
//! first-then-count }`, the default), or kept one entry each (`denied:
//! each`).
//!
//! The sweep interval is set to an hour here and the daemon's stop sweeps,
//! so one burst is never split by a periodic sweep.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use serde_json::Value;
use warden_tests::{can_run, stderr, stdout, Files, Listener, TestEnv, RUNTIME_FILES};

const LONG_SWEEP: [(&str, &str); 1] = [("WARDEN_SUMMARY_SECS", "3600")];

fn entries(env: &TestEnv, kind: &str, action: &str, target: &str) -> Vec<Value> {
    env.evidence()
        .into_iter()
        .filter(|e| e["kind"] == kind && e["action"] == action && e["target"] == target)
        .collect()
}

fn file_policy(f: &Files, evidence: &str) -> String {
    format!(
        "version: 1\n{evidence}rules:\n{RUNTIME_FILES}  - id: public\n    file: {{ prefix: {}/, access: [read] }}\n    decision: allow\n",
        f.path("public")
    )
}

/// Waits until the individual record of the first open reached the log, so
/// the stop's sweep finds its first remembered.
fn wait_first(env: &TestEnv, target: &str) {
    env.wait_for_evidence("the first open", |e| {
        e["kind"] == "decision" && e["action"] == "open" && e["target"] == target
    });
}

#[test]
fn a_thousand_opens_of_one_file_are_one_entry_and_one_summary() {
    if !can_run("summaries") {
        return;
    }
    let mut env = TestEnv::new("summ1k");
    let f = Files::new(&env);
    let file = f.write("public/often.txt", "OFTEN");
    env.write_policy("p.yaml", &file_policy(&f, ""));
    env.start_daemon_with(&LONG_SWEEP);
    env.add_agent("busy", "p.yaml");

    let out = env.probe_as("busy", &["read-n", &file, "1000"]);
    assert_eq!(stdout(&out), "ok OFTEN", "{}", stderr(&out));
    wait_first(&env, &file);
    env.stop_daemon();

    let firsts = entries(&env, "decision", "open", &file);
    assert_eq!(firsts.len(), 1, "one individual entry: {firsts:#?}");
    assert_eq!(firsts[0]["decision"], "allow");
    let summaries = entries(&env, "summary", "open", &file);
    assert_eq!(summaries.len(), 1, "one summary: {summaries:#?}");
    let s = &summaries[0];
    assert_eq!(s["details"]["count"], 999, "{s:#?}");
    assert_eq!(s["rule_id"], "public");
    assert_eq!(s["pid"], firsts[0]["pid"], "the same process");
    assert_eq!(s["policy_snapshot"], firsts[0]["policy_snapshot"]);
    assert_eq!(s["decision"], "allow");
    assert_eq!(s["method"], "counted");
    let (first, last) = (
        s["details"]["first_ns"].as_i64().unwrap(),
        s["details"]["last_ns"].as_i64().unwrap(),
    );
    assert!(first <= last && first > 0, "{s:#?}");
    assert!(
        s["seq"].as_u64() > firsts[0]["seq"].as_u64(),
        "after its first"
    );

    // Chained and verified like any entry; the accounting adds up with the
    // kernel's decision counter.
    assert!(env.ok(&["log", "verify"]).contains("intact"));
    let checked = env.ok(&["log", "verify", "--completeness"]);
    let line = checked
        .lines()
        .find(|l| l.starts_with("agent busy: at its latest summary"))
        .unwrap_or_else(|| panic!("no accounting for busy: {checked}"));
    // "... accounts for X + Y = T of the kernel's K decisions": the agent
    // was idle at the stop's sweep, so nothing was in flight.
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "=").unwrap();
    assert_eq!(
        words[at + 1],
        words[at + 5],
        "individual + counted = kernel: {line}"
    );
}

#[test]
fn allowed_each_keeps_one_entry_per_open() {
    if !can_run("summaries") {
        return;
    }
    let mut env = TestEnv::new("summeach");
    let f = Files::new(&env);
    let file = f.write("public/each.txt", "EACH");
    env.write_policy("p.yaml", &file_policy(&f, "evidence: { allowed: each }\n"));
    env.start_daemon_with(&LONG_SWEEP);
    env.add_agent("each", "p.yaml");

    let out = env.probe_as("each", &["read-n", &file, "50"]);
    assert_eq!(stdout(&out), "ok EACH", "{}", stderr(&out));
    warden_tests::wait_until("50 individual entries", || {
        entries(&env, "decision", "open", &file).len() >= 50
    });
    env.stop_daemon();
    assert_eq!(entries(&env, "decision", "open", &file).len(), 50);
    assert!(entries(&env, "summary", "open", &file).is_empty());
    assert!(env.ok(&["log", "verify"]).contains("intact"));
}

#[test]
fn denied_each_keeps_every_denial_and_allowed_connects_are_counted() {
    if !can_run("summaries") {
        return;
    }
    let allowed = Listener::tcp4();
    let denied = Listener::tcp4();
    let mut env = TestEnv::new("summnet");
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1\nevidence: {{ denied: each }}\nrules:\n  - id: api\n    connect: {{ to: 127.0.0.1, ports: [{}] }}\n    decision: allow\n",
            allowed.port
        ),
    );
    env.start_daemon_with(&LONG_SWEEP);
    env.add_agent("net", "p.yaml");

    let to_denied = format!("127.0.0.1:{}", denied.port);
    let out = env.probe_as("net", &["connect-n", &to_denied, "20"]);
    assert_eq!(stdout(&out), "ok=0 eperm=20", "{}", stderr(&out));
    let to_allowed = format!("127.0.0.1:{}", allowed.port);
    let out = env.probe_as("net", &["connect-n", &to_allowed, "20"]);
    assert_eq!(stdout(&out), "ok=20 eperm=0", "{}", stderr(&out));
    // Network targets are recorded as ADDR:PORT/PROTOCOL.
    let (to_denied, to_allowed) = (format!("{to_denied}/tcp"), format!("{to_allowed}/tcp"));
    env.wait_for_evidence("the first allowed connect", |e| {
        e["kind"] == "decision" && e["target"] == to_allowed.as_str()
    });
    warden_tests::wait_until("20 denials", || {
        entries(&env, "decision", "connect4", &to_denied).len() >= 20
    });
    env.stop_daemon();

    let denials = entries(&env, "decision", "connect4", &to_denied);
    assert_eq!(denials.len(), 20, "each denial is its own entry");
    assert!(denials.iter().all(|d| d["decision"] == "deny"));
    assert!(entries(&env, "summary", "connect4", &to_denied).is_empty());
    assert_eq!(entries(&env, "decision", "connect4", &to_allowed).len(), 1);
    let s = entries(&env, "summary", "connect4", &to_allowed);
    assert_eq!(s.len(), 1, "{s:#?}");
    assert_eq!(s[0]["details"]["count"], 19);
    assert!(env.ok(&["log", "verify"]).contains("intact"));
    env.ok(&["log", "verify", "--completeness"]);
}

#[test]
fn per_agent_counts_repeats_across_processes() {
    if !can_run("summaries") {
        return;
    }
    let mut env = TestEnv::new("summagent");
    let f = Files::new(&env);
    let file = f.write("public/shared.txt", "SHARED");
    env.write_policy(
        "p.yaml",
        &file_policy(&f, "evidence: { allowed: first-then-count, per: agent }\n"),
    );
    env.start_daemon_with(&LONG_SWEEP);
    env.add_agent("wide", "p.yaml");

    for _ in 0..3 {
        let out = env.probe_as("wide", &["read-n", &file, "10"]);
        assert_eq!(stdout(&out), "ok SHARED", "{}", stderr(&out));
    }
    wait_first(&env, &file);
    env.stop_daemon();

    let firsts = entries(&env, "decision", "open", &file);
    assert_eq!(
        firsts.len(),
        1,
        "one first for three processes: {firsts:#?}"
    );
    let s = entries(&env, "summary", "open", &file);
    assert_eq!(s.len(), 1, "{s:#?}");
    assert_eq!(s[0]["details"]["count"], 29);
    assert_eq!(s[0]["details"]["counted_per"], "agent");
    assert!(env.ok(&["log", "verify"]).contains("intact"));
    env.ok(&["log", "verify", "--completeness"]);
}

/// The numbers of "... accounts for X + Y = T of the kernel's K decisions".
fn accounting(checked: &str, agent: &str) -> (u64, u64, u64, u64) {
    let line = checked
        .lines()
        .find(|l| l.starts_with(&format!("agent {agent}: at its latest summary")))
        .unwrap_or_else(|| panic!("no accounting for {agent}: {checked}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "=").unwrap();
    let num = |w: &str| {
        w.trim_matches(|c: char| !c.is_ascii_digit())
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("{w} in {line}"))
    };
    (
        num(words[at - 3]),
        num(words[at - 1]),
        num(words[at + 1]),
        num(words[at + 5]),
    )
}

#[test]
fn a_hundred_thousand_denied_connects_are_one_entry_and_counted_summaries() {
    if !can_run("summaries") {
        return;
    }
    let denied = Listener::tcp4();
    let mut env = TestEnv::new("summdeny");
    env.write_policy("p.yaml", "version: 1\nrules: []\n");
    env.start_daemon_with(&LONG_SWEEP);
    env.add_agent("hammer", "p.yaml");

    let to = format!("127.0.0.1:{}", denied.port);
    let out = env.probe_as("hammer", &["connect-n", &to, "100000"]);
    assert_eq!(stdout(&out), "ok=0 eperm=100000", "{}", stderr(&out));
    let target = format!("{to}/tcp");
    env.wait_for_evidence("the first denial", |e| {
        e["kind"] == "decision" && e["target"] == target.as_str()
    });
    // Another process of the agent: its own first, its own count.
    let out = env.probe_as("hammer", &["connect-n", &to, "10"]);
    assert_eq!(stdout(&out), "ok=0 eperm=10", "{}", stderr(&out));
    warden_tests::wait_until("the second process's first denial", || {
        entries(&env, "decision", "connect4", &target).len() >= 2
    });
    env.stop_daemon();

    let firsts = entries(&env, "decision", "connect4", &target);
    assert_eq!(firsts.len(), 2, "one first per process: {firsts:#?}");
    assert!(firsts
        .iter()
        .all(|d| d["decision"] == "deny" && d["method"] == "cgroup-deny"));
    let summaries = entries(&env, "summary", "connect4", &target);
    assert_eq!(
        summaries.len(),
        2,
        "one summary per process: {summaries:#?}"
    );
    let mut counts: Vec<u64> = summaries
        .iter()
        .map(|s| s["details"]["count"].as_u64().unwrap())
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, vec![9, 99_999], "{summaries:#?}");
    for s in &summaries {
        assert_eq!(
            (s["decision"].as_str(), s["method"].as_str()),
            (Some("deny"), Some("counted"))
        );
        assert_eq!(s["rule_id"], firsts[0]["rule_id"]);
        assert!(
            firsts.iter().any(|f| f["pid"] == s["pid"]),
            "names its first's process"
        );
    }
    // `log --decision deny` finds the counted denials too.
    let listed = env.ok(&[
        "log",
        "--agent",
        "hammer",
        "--decision",
        "deny",
        "--limit",
        "100",
    ]);
    assert_eq!(
        listed
            .lines()
            .filter(|l| l.contains(target.as_str()))
            .count(),
        4,
        "two firsts and two summaries: {listed}"
    );

    assert!(env.ok(&["log", "verify"]).contains("intact"));
    let checked = env.ok(&["log", "verify", "--completeness"]);
    // The agent was idle at the stop's sweep: entries + counts equal the
    // kernel's decision counter exactly (100,010 connects, plus whatever
    // else the probe decided).
    let (individual, counted, total, kernel) = accounting(&checked, "hammer");
    assert_eq!(individual + counted, total, "{checked}");
    assert_eq!(total, kernel, "individual + counted = kernel: {checked}");
    assert!(counted >= 100_008, "{checked}");
}

#[test]
fn denied_repeats_are_counted_per_interval_and_add_up() {
    if !can_run("summaries") {
        return;
    }
    let denied = Listener::tcp4();
    let mut env = TestEnv::new("summdenyint");
    // Counted per agent, so the runs below share one key across processes.
    env.write_policy(
        "p.yaml",
        "version: 1\nevidence: { per: agent }\nrules: []\n",
    );
    env.start_daemon_with(&[("WARDEN_SUMMARY_SECS", "1")]);
    env.add_agent("steady", "p.yaml");

    // Sweeps happen between (and during) the runs: each interval's first is
    // an entry, its repeats a summary; together they are every attempt.
    let to = format!("127.0.0.1:{}", denied.port);
    let started = std::time::Instant::now();
    for _ in 0..4 {
        let out = env.probe_as("steady", &["connect-n", &to, "20000"]);
        assert_eq!(stdout(&out), "ok=0 eperm=20000", "{}", stderr(&out));
        std::thread::sleep(std::time::Duration::from_millis(1500));
    }
    let target = format!("{to}/tcp");
    // A sweep that deletes the key while a program is between finding it
    // and adding to it loses that one repeat (README, Evidence: the window
    // is a few instructions). Sweeps ran during the attempts here, so at
    // most one repeat per sweep and CPU may be missing; none may be extra.
    let sweeps = started.elapsed().as_secs() + 2;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let slack = sweeps * cpus;
    env.stop_daemon();
    let firsts = entries(&env, "decision", "connect4", &target).len() as u64;
    let counted: u64 = entries(&env, "summary", "connect4", &target)
        .iter()
        .map(|s| s["details"]["count"].as_u64().unwrap())
        .sum();
    assert!(
        firsts + counted <= 80_000 && 80_000 - (firsts + counted) <= slack,
        "{firsts} entries + {counted} counted, of 80,000 (at most {slack} lost to sweeps)"
    );
    assert!(
        (4..1000).contains(&firsts),
        "a first per interval: {firsts} entries"
    );
    let checked = env.ok(&["log", "verify", "--completeness"]);
    let (individual, counted, total, kernel) = accounting(&checked, "steady");
    assert_eq!(individual + counted, total, "{checked}");
    assert!(total <= kernel && kernel - total <= slack, "{checked}");
}

#[test]
fn a_denied_udp_flood_is_one_entry_and_a_count() {
    if !can_run("summaries") {
        return;
    }
    let mut env = TestEnv::new("summudp");
    env.write_policy("p.yaml", "version: 1\nrules: []\n");
    env.start_daemon_with(&LONG_SWEEP);
    env.add_agent("udp", "p.yaml");

    let out = env.probe_as("udp", &["udp-flood", "127.0.0.1:9", "50000"]);
    assert_eq!(stdout(&out), "sent=0 eperm=50000", "{}", stderr(&out));
    let target = "127.0.0.1:9/udp";
    env.wait_for_evidence("the first denied send", |e| {
        e["kind"] == "decision" && e["target"] == target
    });
    env.stop_daemon();
    let firsts = entries(&env, "decision", "sendmsg4", target);
    assert_eq!(firsts.len(), 1, "{firsts:#?}");
    let s = entries(&env, "summary", "sendmsg4", target);
    assert_eq!(s.len(), 1, "{s:#?}");
    assert_eq!(s[0]["details"]["count"], 49_999);
    assert_eq!(s[0]["decision"], "deny");
    assert!(env.ok(&["log", "verify"]).contains("intact"));
}

/// Issue #14: with `per: agent`, the workload bench's log accounted for
/// 114,455 of 119,724 kernel decisions. Hundreds of short processes open
/// one shared file and fifty others while sweeps run every second; once the
/// agent is idle and the stop has swept, every decision is in the log.
#[test]
fn per_agent_short_processes_across_sweeps_are_all_accounted_for() {
    if !can_run("summaries") {
        return;
    }
    let mut env = TestEnv::new("summshort");
    let f = Files::new(&env);
    f.write("public/shared.txt", "SHARED");
    for i in 0..50 {
        f.write(&format!("public/f{i}.txt"), "F");
    }
    // The tail: thousands of distinct files, each a first (no repeat, so
    // no later summary), read faster than the daemon writes them.
    std::fs::create_dir_all(f.path("public/tail")).unwrap();
    for i in 0..3000 {
        f.write(&format!("public/tail/t{i}"), "T");
    }
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1\nevidence: {{ allowed: first-then-count, per: agent }}\nrules:\n{RUNTIME_FILES}  - id: public\n    file: {{ prefix: {}/, access: [read] }}\n    decision: allow\n  - id: null\n    file: {{ path: /dev/null, access: [read, write] }}\n    decision: allow\n  - id: locale-alias\n    file: {{ path: /etc/locale.alias, access: [read] }}\n    decision: allow\n",
            f.path("public")
        ),
    );
    env.start_daemon_with(&[("WARDEN_SUMMARY_SECS", "1"), ("WARDEN_LOG", "info")]);
    env.add_agent("many", "p.yaml");

    let script = format!(
        "cd {} && i=0; while [ $i -lt 120 ]; do cat shared.txt f$((i % 50)).txt shared.txt > /dev/null || exit 1; i=$((i + 1)); done; cat tail/* > /dev/null && echo done",
        f.path("public")
    );
    let started = std::time::Instant::now();
    let out = env.cli(&["run", "--agent", "many", "--", "/bin/sh", "-c", &script]);
    assert_eq!(stdout(&out).trim(), "done", "{}", stderr(&out));
    // Idle: let the last records drain and one more sweep pass; then what
    // the kernel allowed in all (this is the only agent).
    std::thread::sleep(std::time::Duration::from_secs(3));
    let status: Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    let allowed = status["kernel"]["allowed"].as_u64().unwrap();
    // As in `denied_repeats_are_counted_per_interval_and_add_up`: a sweep
    // may miss one repeat per sweep and CPU (README, Evidence).
    let sweeps = started.elapsed().as_secs() + 2;
    let slack = sweeps * std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    env.stop_daemon();

    assert!(env.ok(&["log", "verify"]).contains("intact"));
    let log = env.evidence();
    assert!(
        !log.iter().any(|e| e["kind"] == "gap"),
        "no evidence lost to a full ring buffer"
    );
    let tail = log
        .iter()
        .filter(|e| {
            e["kind"] == "decision"
                && e["target"]
                    .as_str()
                    .is_some_and(|t| t.contains("/public/tail/t"))
        })
        .count();
    assert_eq!(tail, 3000, "each distinct file of the tail is an entry");

    let checked = env.ok(&["log", "verify", "--completeness"]);
    let (individual, counted, total, kernel) = accounting(&checked, "many");
    assert_eq!(individual + counted, total, "{checked}");
    assert!(counted > 1000, "repeats were counted: {checked}");
    // Before the fix the check stopped here: at the latest summary (swept
    // while the tail's firsts were still in flight) the log's position
    // showed fewer actions than the kernel's figure, as in the bench.
    let line = checked
        .lines()
        .find(|l| l.starts_with("agent many: the whole log accounts for"))
        .unwrap_or_else(|| panic!("no whole-log accounting: {checked}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "=").unwrap();
    let whole: u64 = words[at + 1].parse().unwrap();
    let at_summary: u64 = words[at + 7].parse().unwrap();
    assert_eq!(at_summary, kernel, "{line}");
    assert!(
        whole + slack >= kernel,
        "every decision up to the summary (at most {slack} missed by sweeps): {line}"
    );
    // End to end: every open and exec the kernel allowed is an entry or a
    // counted repeat.
    assert!(
        whole <= allowed && allowed - whole <= slack,
        "the log accounts for every decision of {allowed} (at most {slack} missed by sweeps): {checked}"
    );
}

/// The sweep takes the kernel's counts in batches of a few thousand keys
/// (`BPF_MAP_LOOKUP_AND_DELETE_BATCH`): a sweep of more keys than one
/// batch holds (10,000 distinct files read twice by one process, all
/// swept at once by the daemon's stop) writes one summary per key, each
/// naming its first, and every repeat is accounted for.
#[test]
fn a_sweep_of_more_keys_than_one_batch_writes_every_summary() {
    if !can_run("summaries") {
        return;
    }
    const FILES: usize = 10_000;
    let mut env = TestEnv::new("summbatch");
    let f = Files::new(&env);
    std::fs::create_dir_all(f.path("public/tail")).unwrap();
    for i in 0..FILES {
        f.write(&format!("public/tail/t{i}"), "T");
    }
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1\nrules:\n{RUNTIME_FILES}  - id: public\n    file: {{ prefix: {}/, access: [read] }}\n    decision: allow\n  - id: null\n    file: {{ path: /dev/null, access: [read, write] }}\n    decision: allow\n  - id: locale-alias\n    file: {{ path: /etc/locale.alias, access: [read] }}\n    decision: allow\n",
            f.path("public")
        ),
    );
    env.start_daemon_with(&LONG_SWEEP);
    env.add_agent("batch", "p.yaml");

    // One `cat`: each file's first open and its repeat are one key.
    let script = format!(
        "cd {} && cat tail/* tail/* > /dev/null && echo done",
        f.path("public")
    );
    let out = env.cli(&["run", "--agent", "batch", "--", "/bin/sh", "-c", &script]);
    assert_eq!(stdout(&out).trim(), "done", "{}", stderr(&out));
    let in_tail = |e: &Value| {
        e["target"]
            .as_str()
            .is_some_and(|t| t.contains("/public/tail/t"))
    };
    // Every first in the log (so remembered) before the stop sweeps.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let firsts = env
            .evidence()
            .iter()
            .filter(|e| e["kind"] == "decision" && in_tail(e))
            .count();
        if firsts == FILES {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{firsts} of {FILES} firsts in the log"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    env.stop_daemon();

    let log = env.evidence();
    let summaries: Vec<&Value> = log
        .iter()
        .filter(|e| e["kind"] == "summary" && in_tail(e))
        .collect();
    assert_eq!(summaries.len(), FILES, "one summary per key");
    assert!(
        summaries.iter().all(|s| s["details"]["count"] == 1
            && s["rule_id"] == "public"
            && s["details"]["first_entry"].is_null()),
        "each counts the one repeat and names its first"
    );
    let mut targets: Vec<&str> = summaries
        .iter()
        .map(|s| s["target"].as_str().unwrap())
        .collect();
    targets.sort_unstable();
    targets.dedup();
    assert_eq!(targets.len(), FILES, "every file once");
    assert!(env.ok(&["log", "verify"]).contains("intact"));
    let checked = env.ok(&["log", "verify", "--completeness"]);
    let (individual, counted, total, _) = accounting(&checked, "batch");
    assert_eq!(individual + counted, total, "{checked}");
    assert!(counted >= FILES as u64, "{checked}");
}
