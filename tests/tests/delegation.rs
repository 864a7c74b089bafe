//! Delegation that only narrows (README, "Delegation"): a child agent
//! registered with `agent add --parent` runs in a cgroup below its
//! parent's, under the intersection of both policies, and a process of the
//! parent can start it (`warden run --agent CHILD` from inside the parent)
//! only if the parent's policy says `delegate: [CHILD]`. Each entry of the
//! child carries the chain; `warden log --lineage` prints it.
//!
//! The chain of processes: `warden run --agent PARENT -- probe exec warden
//! run --agent CHILD -- CMD`: the probe runs in the parent, execs `warden`,
//! which asks the daemon; the daemon moves it into the child's cgroup and
//! `warden` execs CMD there.

use std::os::unix::process::CommandExt;
use std::process::Output;

use serde_json::Value;
use warden_tests::{
    can_run, killed, probe_bin, probe_path, stderr, stdout, warden_bin, Files, Listener, TestEnv,
};

const PARENT_OWNER: &str = "alice@example.com";
const CHILD_OWNER: &str = "carol@example.com";
/// The login uid the test gives the human who starts the parent: `nobody`.
const HUMAN_UID: &str = "65534";

fn parent_policy(delegate: &str, denied: u16, forbidden: &str) -> String {
    format!(
        "version: 1
{delegate}rules:
  - id: parent-no-denied
    connect: {{ to: 127.0.0.1, ports: [{denied}] }}
    decision: deny
  - id: parent-local
    connect: {{ to: 127.0.0.1 }}
    decision: allow
  - id: parent-no-forbidden
    exec: {{ path: {forbidden} }}
    decision: deny
  - id: parent-exec
    exec: {{ prefix: / }}
    decision: allow
"
    )
}

/// Allows everything the parent denies the child.
const CHILD_POLICY: &str = "version: 1
rules:
  - id: child-local
    connect: { to: 127.0.0.1 }
    decision: allow
  - id: child-exec
    exec: { prefix: / }
    decision: allow
";

/// Runs `inner` as `child`, started from inside `parent`, with the login
/// uid of the human set to `HUMAN_UID` for the whole chain.
fn delegated(env: &TestEnv, parent: &str, child: &str, inner: &[&str]) -> Output {
    let probe = probe_bin();
    let warden = warden_bin();
    let mut args = vec![
        "run",
        "--agent",
        parent,
        "--",
        probe.to_str().expect("utf-8"),
        "exec",
        warden.to_str().expect("utf-8"),
        "run",
        "--agent",
        child,
        "--",
    ];
    args.extend_from_slice(inner);
    let mut cmd = env.warden();
    cmd.args(&args);
    // SAFETY: open/write/close on static bytes are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let fd = libc::open(c"/proc/self/loginuid".as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, HUMAN_UID.as_ptr().cast(), HUMAN_UID.len());
            libc::close(fd);
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    cmd.output().expect("run warden")
}

/// `warden agent add NAME --owner OWNER --policy POLICY [--parent PARENT]`.
fn add_agent(env: &TestEnv, name: &str, owner: &str, policy: &str, parent: Option<&str>) {
    let mut args = vec!["agent", "add", name, "--owner", owner, "--policy", policy];
    if let Some(parent) = parent {
        args.extend(["--parent", parent]);
    }
    env.ok(&args);
}

fn entries_where(env: &TestEnv, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    env.evidence().into_iter().filter(|e| pred(e)).collect()
}

#[test]
fn a_delegated_child_is_refused_what_its_parent_denies_and_allowed_what_both_allow() {
    if !can_run("delegation") {
        return;
    }
    let both = Listener::tcp4();
    let parent_denies = Listener::tcp4();
    let mut env = TestEnv::new("deleg");
    let files = Files::new(&env);
    let forbidden = files.binary("forbidden-touch", "/usr/bin/touch");
    let allowed = files.binary("allowed-touch", "/usr/bin/touch");
    env.write_policy(
        "parent.yaml",
        &parent_policy("delegate: [dg-child]\n", parent_denies.port, &forbidden),
    );
    env.write_policy("child.yaml", CHILD_POLICY);
    env.start_daemon();
    add_agent(&env, "dg-parent", PARENT_OWNER, "parent.yaml", None);
    add_agent(
        &env,
        "dg-child",
        CHILD_OWNER,
        "child.yaml",
        Some("dg-parent"),
    );
    // The same policy, not delegated: what the child's own policy allows.
    add_agent(&env, "dg-solo", CHILD_OWNER, "child.yaml", None);
    let shown: Value =
        serde_json::from_str(&env.ok(&["agent", "show", "dg-child", "--json"])).unwrap();
    assert_eq!(shown["parent"], "dg-parent", "{shown}");
    assert_eq!(
        shown["cgroup"].as_str().unwrap(),
        env.agent_cgroup("dg-parent")
            .join("dg-child")
            .to_str()
            .unwrap(),
        "the child's cgroup is below the parent's"
    );

    let both_addr = format!("127.0.0.1:{}", both.port);
    let denied_addr = format!("127.0.0.1:{}", parent_denies.port);
    let eperm = format!("errno={}", libc::EPERM);

    // The child's own policy allows the port the parent denies.
    let out = env.probe_as("dg-solo", &["connect", &denied_addr]);
    assert_eq!(stdout(&out), "ok", "solo: {}", stderr(&out));

    // Allowed by both: goes through.
    let out = delegated(
        &env,
        "dg-parent",
        "dg-child",
        &[&probe_path(), "connect", &both_addr],
    );
    assert_eq!(
        stdout(&out),
        "ok",
        "delegated allowed connect: {}",
        stderr(&out)
    );

    // Options a delegated run cannot honour are refused before anything
    // moves: it keeps the caller's user and descriptors.
    let out = env.cli(&[
        "run",
        "--agent",
        "dg-parent",
        "--",
        probe_bin().to_str().unwrap(),
        "exec",
        warden_bin().to_str().unwrap(),
        "run",
        "--user",
        "nobody",
        "--agent",
        "dg-child",
        "--",
        &probe_path(),
        "connect",
        &both_addr,
    ]);
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).contains("--user and --keep-fd are not available to a delegated run"),
        "{}",
        stderr(&out)
    );

    // Denied by the parent: EPERM for the child, although its own allows.
    let out = delegated(
        &env,
        "dg-parent",
        "dg-child",
        &[&probe_path(), "connect", &denied_addr],
    );
    assert_eq!(
        stdout(&out),
        eperm,
        "delegated denied connect: {}",
        stderr(&out)
    );
    let target = format!("{denied_addr}/tcp");
    let deny = env.wait_for_evidence("the child's refused connect", |e| {
        e["kind"] == "decision" && e["agent"] == "dg-child" && e["target"] == target.as_str()
    });
    assert_eq!(deny["decision"], "deny", "{deny}");
    assert_eq!(deny["owner"], CHILD_OWNER, "{deny}");
    assert_eq!(
        deny["rule_id"], "child-local+parent:parent-no-denied",
        "{deny}"
    );
    assert_eq!(
        deny["details"]["lineage"],
        serde_json::json!([
            {"agent": "dg-child", "owner": CHILD_OWNER},
            {"agent": "dg-parent", "owner": PARENT_OWNER},
        ]),
        "{deny}"
    );
    assert_eq!(deny["login_user"], "nobody", "{deny}");

    // Another path to the same object: UDP to the denied port.
    let out = delegated(
        &env,
        "dg-parent",
        "dg-child",
        &[&probe_path(), "udp", &denied_addr],
    );
    assert_eq!(
        stdout(&out),
        eperm,
        "delegated denied udp: {}",
        stderr(&out)
    );

    // Exec: the parent denies this binary, the child's own policy allows
    // every exec. Killed before it runs (the fallback), no marker.
    let marker = files.marker("forbidden");
    let out = delegated(&env, "dg-parent", "dg-child", &[&forbidden, &marker]);
    assert!(
        killed(&out) || !out.status.success(),
        "forbidden exec ran: {out:?}"
    );
    assert!(
        !std::path::Path::new(&marker).exists(),
        "the denied binary ran"
    );
    let exec = env.wait_for_evidence("the child's refused exec", |e| {
        e["kind"] == "decision"
            && e["agent"] == "dg-child"
            && e["action"] == "exec"
            && e["target"] == forbidden.as_str()
    });
    assert_eq!(exec["decision"], "deny", "{exec}");
    assert_eq!(
        exec["rule_id"], "child-exec+parent:parent-no-forbidden",
        "{exec}"
    );
    // And what both allow runs.
    let ok_marker = files.marker("allowed");
    let out = delegated(&env, "dg-parent", "dg-child", &[&allowed, &ok_marker]);
    assert!(out.status.success(), "allowed exec: {out:?}");
    assert!(std::path::Path::new(&ok_marker).exists());

    // The run that started the child is recorded with the delegation.
    let runs = entries_where(&env, |e| {
        e["kind"] == "run" && e["agent"] == "dg-child" && e["decision"] == "started"
    });
    assert!(!runs.is_empty());
    assert!(runs
        .iter()
        .all(|r| r["details"]["delegated_by"] == "dg-parent" && r["login_user"] == "nobody"));

    // Lineage of the refused connect: both owners and the human.
    let seq = deny["seq"].as_u64().unwrap().to_string();
    let text = env.ok(&["log", "--lineage", &seq]);
    for want in [
        "dg-child",
        CHILD_OWNER,
        "dg-parent",
        PARENT_OWNER,
        "human   nobody (loginuid 65534)",
        "delegated by dg-parent",
        "chain read from the entry",
    ] {
        assert!(text.contains(want), "lineage lacks {want:?}:\n{text}");
    }
    let json: Value = serde_json::from_str(&env.ok(&["log", "--lineage", &seq, "--json"])).unwrap();
    assert_eq!(json["chain"][1]["owner"], PARENT_OWNER, "{json}");
    assert_eq!(json["started_by"]["delegated_by"], "dg-parent", "{json}");
    assert_eq!(json["login_user"], "nobody", "{json}");

    // The parent's policy narrows further on reload: the child follows.
    env.write_policy(
        "parent.yaml",
        &parent_policy("delegate: [dg-child]\n", both.port, &forbidden),
    );
    env.ok(&["policy", "reload"]);
    let out = delegated(
        &env,
        "dg-parent",
        "dg-child",
        &[&probe_path(), "connect", &both_addr],
    );
    assert_eq!(
        stdout(&out),
        eperm,
        "after the parent's reload: {}",
        stderr(&out)
    );
    let load = entries_where(&env, |e| {
        e["kind"] == "policy_load" && e["agent"] == "dg-child"
    });
    assert!(
        load.len() >= 2,
        "the child's policy was recompiled: {load:#?}"
    );
    assert_eq!(load.last().unwrap()["details"]["delegated_by"], "dg-parent");

    // The kill switch on the parent revokes the child too: started from
    // outside, it is refused, and a running one is gone with the parent's
    // subtree. Reviving the parent lifts it.
    env.ok(&["kill", "dg-parent", "--reason", "delegation test"]);
    let out = env.probe_as("dg-child", &["connect", &denied_addr]);
    assert!(
        !out.status.success(),
        "a revoked parent's child ran: {out:?}"
    );
    assert_eq!(stdout(&out), "", "{}", stderr(&out));
    assert!(stderr(&out).contains("revoked"), "{}", stderr(&out));
    env.ok(&["revive", "dg-parent", "--reason", "delegation test"]);
    let out = env.probe_as("dg-child", &["connect", &both_addr]);
    assert_eq!(
        stdout(&out),
        eperm,
        "after revive, the reloaded parent still narrows"
    );
    // The reloaded parent denies `both` and allows the other port now.
    let out = env.probe_as("dg-child", &["connect", &denied_addr]);
    assert_eq!(stdout(&out), "ok", "after revive: {}", stderr(&out));

    // A parent with children cannot be removed first.
    let out = env.cli(&["agent", "remove", "dg-parent"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("delegated children (dg-child)"),
        "{}",
        stderr(&out)
    );
    env.unload();
}

#[test]
fn a_parent_without_delegate_cannot_start_the_child_and_the_refusal_is_recorded() {
    if !can_run("delegation") {
        return;
    }
    let port = Listener::tcp4();
    let mut env = TestEnv::new("deleg-refused");
    let files = Files::new(&env);
    let forbidden = files.binary("forbidden-touch", "/usr/bin/touch");
    // No `delegate:` at all, and one that names an agent that is not its
    // registered child.
    env.write_policy("parent.yaml", &parent_policy("", 1, &forbidden));
    env.write_policy(
        "other.yaml",
        &parent_policy("delegate: [dg-stranger]\n", 1, &forbidden),
    );
    env.write_policy("child.yaml", CHILD_POLICY);
    env.start_daemon();
    add_agent(&env, "dg-parent", PARENT_OWNER, "parent.yaml", None);
    add_agent(&env, "dg-other", PARENT_OWNER, "other.yaml", None);
    add_agent(
        &env,
        "dg-child",
        CHILD_OWNER,
        "child.yaml",
        Some("dg-parent"),
    );
    add_agent(&env, "dg-stranger", CHILD_OWNER, "child.yaml", None);
    let addr = format!("127.0.0.1:{}", port.port);

    let out = delegated(
        &env,
        "dg-parent",
        "dg-child",
        &[&probe_path(), "connect", &addr],
    );
    assert!(!out.status.success(), "started without delegate: {out:?}");
    assert_eq!(stdout(&out), "", "the command must not run");
    assert!(
        stderr(&out).contains("does not say `delegate: [dg-child]`"),
        "{}",
        stderr(&out)
    );
    let refused = env.wait_for_evidence("the refused delegation", |e| {
        e["kind"] == "run" && e["decision"] == "refused" && e["agent"] == "dg-child"
    });
    assert_eq!(refused["details"]["delegated_by"], "dg-parent", "{refused}");
    assert_eq!(refused["owner"], CHILD_OWNER, "{refused}");

    // `delegate:` naming a registered agent that is not its child.
    let out = delegated(
        &env,
        "dg-other",
        "dg-stranger",
        &[&probe_path(), "connect", &addr],
    );
    assert!(!out.status.success());
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).contains("is not a delegated child of 'dg-other'"),
        "{}",
        stderr(&out)
    );
    // Nor the child of another parent.
    let out = delegated(
        &env,
        "dg-other",
        "dg-child",
        &[&probe_path(), "connect", &addr],
    );
    assert!(!out.status.success());
    assert_eq!(stdout(&out), "");
    let refusals = entries_where(&env, |e| e["kind"] == "run" && e["decision"] == "refused");
    assert_eq!(refusals.len(), 3, "{refusals:#?}");

    // Nothing ran as the child.
    assert!(entries_where(&env, |e| e["kind"] == "decision"
        && e["agent"] == "dg-child")
    .is_empty());

    // Upwards: the child (started from outside, as root may) asking to run
    // as its parent, or as itself again, is refused.
    let warden = warden_bin();
    for target in ["dg-parent", "dg-child"] {
        let out = env.cli(&[
            "run",
            "--agent",
            "dg-child",
            "--",
            probe_bin().to_str().unwrap(),
            "exec",
            warden.to_str().unwrap(),
            "run",
            "--agent",
            target,
            "--",
            &probe_path(),
            "connect",
            &addr,
        ]);
        assert!(!out.status.success(), "child ran as {target}: {out:?}");
        assert_eq!(stdout(&out), "", "as {target}");
        assert!(stderr(&out).contains("refused"), "{}", stderr(&out));
    }
    let refusals = entries_where(&env, |e| e["kind"] == "run" && e["decision"] == "refused");
    assert_eq!(refusals.len(), 5, "{refusals:#?}");
    // Outside every agent, the usual rules of `warden run` apply (root may
    // start any agent), and the child is still decided by the
    // intersection.
    let out = env.probe_as("dg-child", &["connect", &addr]);
    assert_eq!(stdout(&out), "ok", "{}", stderr(&out));
    let out = env.probe_as("dg-child", &["connect", "127.0.0.1:1"]);
    assert_eq!(stdout(&out), format!("errno={}", libc::EPERM));
    // Entries the CLI writes about the child carry the chain too.
    let chain = serde_json::json!([
        {"agent": "dg-child", "owner": CHILD_OWNER},
        {"agent": "dg-parent", "owner": PARENT_OWNER},
    ]);
    let run = env.wait_for_evidence("the child's run from outside", |e| {
        e["kind"] == "run" && e["agent"] == "dg-child" && e["decision"] == "started"
    });
    assert_eq!(run["details"]["lineage"], chain, "{run}");
    let register = env.wait_for_evidence("the child's registration", |e| {
        e["kind"] == "agent_register" && e["agent"] == "dg-child"
    });
    assert_eq!(register["details"]["parent"], "dg-parent", "{register}");
    assert_eq!(register["details"]["lineage"], chain, "{register}");

    // Bad input changes nothing: an unknown parent, a parent and --cgroup.
    let out = env.cli(&[
        "agent",
        "add",
        "dg-x",
        "--owner",
        CHILD_OWNER,
        "--policy",
        "child.yaml",
        "--parent",
        "dg-nobody",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown agent 'dg-nobody'"),
        "{}",
        stderr(&out)
    );
    let out = env.cli(&["agent", "show", "dg-x"]);
    assert!(!out.status.success(), "dg-x must not be registered");
    env.unload();
}

/// Both agents of a nest allow every connect to loopback, record each
/// allowed one, and name root an approver; the child holds one port.
fn nest_policy(hold: Option<u16>) -> String {
    let held = hold.map_or_else(String::new, |port| {
        format!(
            "  - id: child-held
    connect: {{ to: 127.0.0.1, ports: [{port}] }}
    decision: hold
"
        )
    });
    format!(
        "version: 1
approvers:
  users: [root]
evidence: {{ allowed: each }}
rules:
{held}  - id: local
    connect: {{ to: 127.0.0.1 }}
    decision: allow
"
    )
}

/// A cgroup's network programs also run for the cgroups below it, and each
/// set decides for the caller's deepest agent: a nested agent with its own
/// set attached would have each connect decided and recorded twice, and a
/// held connect's grant consumed by one set would be held again by the
/// other. Only the top of a nest has programs attached.
#[test]
fn a_nested_agent_is_decided_once_and_its_approved_hold_completes() {
    if !can_run("delegation_nest") {
        return;
    }
    let open = Listener::tcp4();
    let held = Listener::tcp4();
    let mut env = TestEnv::new("deleg-nest");
    env.write_policy("parent.yaml", &nest_policy(None));
    env.write_policy("child.yaml", &nest_policy(Some(held.port)));
    env.start_daemon();
    env.add_agent("nest-parent", "parent.yaml");
    add_agent(
        &env,
        "nest-child",
        CHILD_OWNER,
        "child.yaml",
        Some("nest-parent"),
    );
    let status: Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    let child = status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "nest-child")
        .unwrap_or_else(|| panic!("no nest-child in {status}"));
    assert_eq!(child["enforced"], true, "{child}");

    let open_addr = format!("127.0.0.1:{}", open.port);
    for _ in 0..3 {
        let out = env.probe_as("nest-child", &["connect", &open_addr]);
        assert_eq!(stdout(&out), "ok", "{}", stderr(&out));
    }
    let target = format!("{open_addr}/tcp");
    let connects = || {
        entries_where(&env, |e| {
            e["kind"] == "decision" && e["target"] == target.as_str()
        })
    };
    warden_tests::wait_until("the child's three connects are recorded", || {
        connects().len() >= 3
    });
    // Let any second record of the same connects drain before counting.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let decided = connects();
    assert_eq!(decided.len(), 3, "one entry per connect: {decided:#?}");
    assert!(decided.iter().all(|e| e["agent"] == "nest-child"));

    let held_addr = format!("127.0.0.1:{}", held.port);
    let probe = probe_bin();
    let running = env
        .warden()
        .args([
            "run",
            "--agent",
            "nest-child",
            "--",
            probe.to_str().unwrap(),
            "connect",
            &held_addr,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn warden run");
    let pending =
        warden_tests::wait_held(&env, running.id(), &['T'], "the child's connect is held");
    let id = pending["id"].as_u64().unwrap().to_string();
    env.ok(&["approve", &id, "--reason", "nested"]);
    let out = running.wait_with_output().expect("wait probe");
    assert_eq!(
        stdout(&out),
        "ok",
        "the approved connect completes: {}",
        stderr(&out)
    );
    let holds = entries_where(&env, |e| e["kind"] == "hold" && e["agent"] == "nest-child");
    assert_eq!(holds.len(), 1, "held once: {holds:#?}");
}

/// `warden log --lineage` on a large log: the delegated run that started
/// the child is found behind `WARDEN_TEST_LINEAGE_ENTRIES` (default 200k;
/// measured with 1,000,000: 73 ms for `log --lineage`, debug build, after
/// 191 s of appends) other entries and 500 later runs of the child that
/// were not delegated, with the chain sealed in the entry. Needs no daemon
/// and no root (the log is written with the store's own `append`); the
/// time is printed, not asserted.
#[test]
fn lineage_finds_the_delegated_run_behind_many_entries() {
    let n: u64 = std::env::var("WARDEN_TEST_LINEAGE_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let env = TestEnv::new("deleg-scale");
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let base_ns = 1_770_000_000_000_000_000;
    let chain = serde_json::json!([
        {"agent": "dg-child", "owner": CHILD_OWNER},
        {"agent": "dg-parent", "owner": PARENT_OWNER},
    ]);
    let like = |i: u64, ts_ns: i64, kind: &str, decision: &str| {
        let mut e = warden_tests::synthetic_entry(i, base_ns);
        e.ts_ns = ts_ns;
        e.kind = kind.into();
        e.agent = "dg-child".into();
        e.owner = CHILD_OWNER.into();
        e.decision = decision.into();
        e.login_user = "nobody".into();
        e.loginuid = 65534;
        e.details.insert("lineage".into(), chain.clone());
        e
    };
    let mut store = warden::evidence::EvidenceStore::open(&env.database()).unwrap();
    let mut run = like(0, base_ns - 1_000, "run", "started");
    run.action = "run".into();
    run.target = "probe connect".into();
    run.details
        .insert("delegated_by".into(), "dg-parent".into());
    store
        .append(&[run], warden::evidence::Durability::Batched)
        .unwrap();
    let started = std::time::Instant::now();
    for from in (0..n).step_by(20_000) {
        let batch: Vec<_> = (from..(from + 20_000).min(n))
            .map(|i| warden_tests::synthetic_entry(i, base_ns))
            .collect();
        store
            .append(&batch, warden::evidence::Durability::Batched)
            .unwrap();
    }
    let end_ns = base_ns + n as i64 * warden_tests::SYNTHETIC_SPACING_NS;
    let later_runs: Vec<_> = (0..500)
        .map(|i| {
            let mut r = like(i, end_ns + i as i64, "run", "started");
            r.action = "run".into();
            r
        })
        .collect();
    store
        .append(&later_runs, warden::evidence::Durability::Batched)
        .unwrap();
    let mut decision = like(1, end_ns + 1_000, "decision", "deny");
    decision.rule_id = "child-local+parent:parent-no-denied".into();
    store
        .append(&[decision], warden::evidence::Durability::Fsync)
        .unwrap();
    let (head, _) = store.head().unwrap().unwrap();
    drop(store);
    eprintln!("wrote {} entries in {:?}", head, started.elapsed());

    let t = std::time::Instant::now();
    let out = env.ok(&["log", "--lineage", &head.to_string(), "--json"]);
    eprintln!(
        "warden log --lineage over {head} entries: {:?}",
        t.elapsed()
    );
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["started_by"]["seq"], 1, "{json}");
    assert_eq!(json["started_by"]["delegated_by"], "dg-parent", "{json}");
    assert_eq!(json["chain"][0]["owner"], CHILD_OWNER, "{json}");
    assert_eq!(json["chain"][1]["owner"], PARENT_OWNER, "{json}");
    assert_eq!(json["chain_from"], "entry", "{json}");
}
