//! The fallback's decision cache of allowed opens (`DECISION_CACHE`), end to
//! end: a real daemon, agent cgroups and one long-lived agent process whose
//! repeated opens are decided from the cache (the kernel's `cache_hits`
//! counter proves it), attacked through every other way the same file can
//! be reached: its directory renamed to a denied place (by the agent, and
//! from outside it), a hard link at a denied path, and a policy reload that
//! denies it. Each attack's open must be refused (the process killed) and
//! recorded, exactly as without the cache; and the evidence of the cached
//! repeats must be what it was without it (first, then counted).

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::time::{Duration, Instant};

use serde_json::Value;
use warden_tests::{cache_hits, can_run, Files, Scripted, TestEnv, RUNTIME_FILES};

/// Opens per "read" step: enough repeats that most are cache hits.
const REPEATS: u64 = 200;

/// Reads `path` REPEATS times in the scripted process, and checks that the
/// cache decided some of them (the kernel's counter moved).
fn read_from_cache(env: &TestEnv, agent: &mut Scripted, path: &str, content: &str) {
    let before = cache_hits(env);
    let answer = agent.step(&format!("read {path} {REPEATS}"));
    assert_eq!(
        answer.as_deref(),
        Some(format!("ok {REPEATS} {content}").as_str()),
        "allowed reads of {path}"
    );
    let hits = cache_hits(env) - before;
    assert!(
        hits >= REPEATS / 2,
        "{REPEATS} reads of {path} by one process: only {hits} decided from the cache"
    );
}

/// The kill of an open of `target`, recorded as a denial.
fn wait_for_denial(env: &TestEnv, target: &str) -> Value {
    env.wait_for_evidence(&format!("denied open of {target}"), |e| {
        e["kind"] == "decision"
            && e["action"] == "open"
            && e["target"] == target
            && e["decision"] == "deny"
    })
}

fn policy(f: &Files, extra: &str) -> String {
    format!(
        "version: 1
rules:
{RUNTIME_FILES}
  - id: read-public
    file: {{ prefix: {public}/, access: [read] }}
    decision: allow
  - id: write-anywhere-here
    file: {{ prefix: {root}/, access: [write] }}
    decision: allow
{extra}",
        public = f.path("public"),
        root = f.path("").trim_end_matches('/'),
    )
}

fn env_with_agent(name: &str, agent: &str) -> (TestEnv, Files) {
    let mut env = TestEnv::new(name);
    let f = Files::new(&env);
    env.write_policy("cache.yaml", &policy(&f, ""));
    // Summaries every second, so the counted repeats show up quickly.
    env.start_daemon_with(&[("WARDEN_SUMMARY_SECS", "1")]);
    env.add_agent(agent, "cache.yaml");
    (env, f)
}

#[test]
fn directory_renamed_to_a_denied_place_is_decided_afresh() {
    if !can_run("decision_cache") {
        return;
    }
    let (env, f) = env_with_agent("dcache-rename", "cache-agent");
    std::fs::create_dir_all(f.path("public/by-agent")).unwrap();
    std::fs::create_dir_all(f.path("public/by-outsider")).unwrap();
    let mine = f.write("public/by-agent/f.txt", "MINE");
    let theirs = f.write("public/by-outsider/f.txt", "THEIRS");

    // The agent moves its own directory (the rename is a write, allowed),
    // then opens the file under the new, unreadable name.
    let mut agent = Scripted::start(&env, "cache-agent");
    read_from_cache(&env, &mut agent, &mine, "MINE");
    let moved = f.path("other/by-agent");
    assert_eq!(
        agent
            .step(&format!("rename {} {moved}", f.path("public/by-agent")))
            .as_deref(),
        Some("ok")
    );
    let moved_file = format!("{moved}/f.txt");
    assert_eq!(agent.step(&format!("read {moved_file} 1")), None);
    assert!(agent.killed(), "read through the renamed directory");
    let e = wait_for_denial(&env, &moved_file);
    assert_eq!(e["rule_id"], "default-deny", "{e}");
    assert_eq!(e["method"], "kill", "{e}");

    // Someone outside the agent moves the directory while the agent
    // process lives with a cached allow.
    let mut agent = Scripted::start(&env, "cache-agent");
    read_from_cache(&env, &mut agent, &theirs, "THEIRS");
    let moved = f.path("other/by-outsider");
    std::fs::rename(f.path("public/by-outsider"), &moved).unwrap();
    let moved_file = format!("{moved}/f.txt");
    assert_eq!(agent.step(&format!("read {moved_file} 1")), None);
    assert!(agent.killed(), "read after an outsider's rename");
    let e = wait_for_denial(&env, &moved_file);
    assert_eq!(e["rule_id"], "default-deny", "{e}");

    // A move back makes it readable again (the epoch moved on, nothing is
    // stuck): decided afresh, allowed.
    std::fs::rename(&moved, f.path("public/by-outsider")).unwrap();
    let mut agent = Scripted::start(&env, "cache-agent");
    read_from_cache(&env, &mut agent, &theirs, "THEIRS");
    drop(agent);
    assert!(env.ok(&["log", "verify"]).contains("intact"));
}

#[test]
fn hard_link_at_a_denied_path_is_refused_and_never_cached() {
    if !can_run("decision_cache") {
        return;
    }
    let (env, f) = env_with_agent("dcache-link", "link-agent");
    let file = f.write("public/h.txt", "LINKED");
    let mut agent = Scripted::start(&env, "link-agent");
    read_from_cache(&env, &mut agent, &file, "LINKED");

    // Another name for the same inode, where reads are denied.
    let link = f.path("other/h-link.txt");
    std::fs::hard_link(&file, &link).unwrap();
    // Through the allowed name it is still allowed, but with two names it
    // is decided by a walk every time: the cache does not vouch for it.
    let before = cache_hits(&env);
    assert_eq!(
        agent.step(&format!("read {file} {REPEATS}")).as_deref(),
        Some(format!("ok {REPEATS} LINKED").as_str())
    );
    assert_eq!(
        cache_hits(&env),
        before,
        "a file with two names was decided from the cache"
    );
    assert_eq!(agent.step(&format!("read {link} 1")), None);
    assert!(agent.killed(), "read through the hard link");
    let e = wait_for_denial(&env, &link);
    assert_eq!(e["rule_id"], "default-deny", "{e}");
    assert_eq!(e["method"], "kill", "{e}");
}

#[test]
fn reload_denying_the_file_refuses_the_next_open() {
    if !can_run("decision_cache") {
        return;
    }
    let (env, f) = env_with_agent("dcache-reload", "reload-agent");
    let file = f.write("public/r.txt", "RELOADED");
    let mut agent = Scripted::start(&env, "reload-agent");
    read_from_cache(&env, &mut agent, &file, "RELOADED");

    env.write_policy(
        "cache.yaml",
        &policy(
            &f,
            &format!(
                "  - id: no-longer
    file: {{ path: {file}, access: [read] }}
    decision: deny
"
            ),
        ),
    );
    env.ok(&["policy", "reload"]);
    assert_eq!(agent.step(&format!("read {file} 1")), None);
    assert!(agent.killed(), "read after the reload");
    let e = wait_for_denial(&env, &file);
    assert_eq!(e["rule_id"], "no-longer", "{e}");
}

#[test]
fn cached_repeats_leave_the_same_evidence_first_then_count() {
    if !can_run("decision_cache") {
        return;
    }
    let (env, f) = env_with_agent("dcache-evidence", "count-agent");
    let file = f.write("public/c.txt", "COUNTED");
    let mut agent = Scripted::start(&env, "count-agent");
    read_from_cache(&env, &mut agent, &file, "COUNTED");
    read_from_cache(&env, &mut agent, &file, "COUNTED");
    drop(agent);

    // One individual decision for the process's first open and summaries
    // that account for every other one: 2 x REPEATS opens in all.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let entries: Vec<Value> = env
            .evidence()
            .into_iter()
            .filter(|e| e["action"] == "open" && e["target"] == file.as_str())
            .collect();
        let firsts = entries.iter().filter(|e| e["kind"] == "decision").count() as u64;
        let counted: u64 = entries
            .iter()
            .filter(|e| e["kind"] == "summary")
            .map(|e| e["details"]["count"].as_u64().unwrap())
            .sum();
        if firsts + counted == 2 * REPEATS {
            for e in &entries {
                assert_eq!(e["decision"], "allow", "{e}");
                assert_eq!(e["rule_id"], "read-public", "{e}");
            }
            // A sweep makes the next repeat a new first: at least one.
            assert!(firsts >= 1, "{entries:#?}");
            break;
        }
        assert!(
            firsts + counted < 2 * REPEATS && Instant::now() < deadline,
            "{firsts} firsts + {counted} counted != {} opens: {entries:#?}",
            2 * REPEATS
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(env.ok(&["log", "verify"]).contains("intact"));
}

/// Unmounts what the test bind-mounted, on every path out of it.
struct BindMount(String);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn bind_mount_at_a_denied_path_is_refused() {
    if !can_run("decision_cache") {
        return;
    }
    let (env, f) = env_with_agent("dcache-bind", "bind-agent");
    std::fs::create_dir_all(f.path("public/dir")).unwrap();
    let file = f.write("public/dir/b.txt", "BOUND");
    let mut agent = Scripted::start(&env, "bind-agent");
    read_from_cache(&env, &mut agent, &file, "BOUND");

    // The same directory, and so the same inode, mounted where reads are
    // denied: another mount, another path.
    let at = f.path("other/mnt");
    std::fs::create_dir_all(&at).unwrap();
    let status = std::process::Command::new("mount")
        .args(["--bind", &f.path("public/dir"), &at])
        .status()
        .unwrap();
    assert!(status.success(), "mount --bind");
    let _mounted = BindMount(at.clone());
    let through = format!("{at}/b.txt");
    assert_eq!(agent.step(&format!("read {through} 1")), None);
    assert!(agent.killed(), "read through the bind mount");
    let e = wait_for_denial(&env, &through);
    assert_eq!(e["rule_id"], "default-deny", "{e}");
}

/// A budget that counts opens sees every one: such an agent's allows are
/// never cached, so the open over the limit is refused however often the
/// same file was opened before.
#[test]
fn a_file_budget_counts_every_open_and_refuses_the_one_over_it() {
    if !can_run("decision_cache") {
        return;
    }
    let mut env = TestEnv::new("dcache-budget");
    let f = Files::new(&env);
    let file = f.write("public/budget.txt", "BUDGET");
    env.write_policy(
        "cache.yaml",
        &policy(
            &f,
            "budgets:
  - id: opens
    count: file
    match: { rule: read-public }
    limit: 300
    per: 1h
    then: deny
",
        ),
    );
    env.start_daemon_with(&[("WARDEN_SUMMARY_SECS", "1")]);
    env.add_agent("budget-agent", "cache.yaml");
    let mut agent = Scripted::start(&env, "budget-agent");
    let before = cache_hits(&env);
    assert_eq!(
        agent.step(&format!("read {file} {REPEATS}")).as_deref(),
        Some(format!("ok {REPEATS} BUDGET").as_str())
    );
    assert_eq!(
        cache_hits(&env),
        before,
        "an agent whose budget counts opens was decided from the cache"
    );
    // 200 more: the 301st open is over the budget.
    assert_eq!(agent.step(&format!("read {file} {REPEATS}")), None);
    assert!(agent.killed(), "the open over the budget");
    let e = wait_for_denial(&env, &file);
    assert_eq!(e["rule_id"], "budget:opens", "{e}");
}
