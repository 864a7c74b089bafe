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
    let pending = warden_tests::wait_held(
        &env,
        warden_tests::command_of(running.id()),
        &['T'],
        "the child's connect is held",
    );
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

/// The parent: 127.0.0.1 on the given ports, nothing else.
fn ports_policy(id: &str, ports: &[u16], extra: &str) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        "version: 1
{extra}rules:
  - id: {id}
    connect: {{ to: 127.0.0.1, ports: [{}] }}
    decision: allow
",
        list.join(", ")
    )
}

fn connects_as(env: &TestEnv, agent: &str, port: u16) -> String {
    let out = env.probe_as(agent, &["connect-n", &format!("127.0.0.1:{port}"), "1"]);
    stdout(&out)
}

/// A child's `shadow:` candidate is evaluated against the intersection with
/// its parent: a port the candidate and the parent allow (the child's own
/// policy does not) is a `would-allow` difference naming both rules, while a
/// port only the candidate allows is no difference at all (the parent would
/// still refuse it); neither is opened. `warden policy shadow CHILD` replays
/// the record against the same intersection.
#[test]
fn a_childs_shadow_difference_is_recorded_against_the_intersection() {
    if !can_run("delegation") {
        return;
    }
    let (a, b, c) = (Listener::tcp4(), Listener::tcp4(), Listener::tcp4());
    let mut env = TestEnv::new("dgshadow");
    env.write_policy(
        "parent.yaml",
        &ports_policy("parent-ab", &[a.port, b.port], ""),
    );
    let candidate = format!(
        "  version: 1\n  rules:\n    - id: cand-abc\n      connect: {{ to: 127.0.0.1, ports: [{}, {}, {}] }}\n      decision: allow\n",
        a.port, b.port, c.port
    );
    env.write_policy(
        "child.yaml",
        &ports_policy("child-a", &[a.port], &format!("shadow:\n{candidate}")),
    );
    env.start_daemon_with(&[("WARDEN_SUMMARY_SECS", "3600")]);
    add_agent(&env, "ds-parent", PARENT_OWNER, "parent.yaml", None);
    add_agent(
        &env,
        "ds-child",
        CHILD_OWNER,
        "child.yaml",
        Some("ds-parent"),
    );
    let load = env.wait_for_evidence("the child's load", |e| {
        e["kind"] == "policy_load" && e["agent"] == "ds-child" && e["decision"] == "loaded"
    });
    assert!(
        load["details"]["shadow_snapshot"].is_string(),
        "no shadow installed for the child: {load}"
    );
    assert_eq!(load["details"]["snapshot_of"], "effective", "{load}");

    assert_eq!(connects_as(&env, "ds-child", a.port), "ok=1 eperm=0");
    // Neither the candidate's port the parent allows, nor the one only the
    // candidate allows, is opened; over UDP neither.
    assert_eq!(connects_as(&env, "ds-child", b.port), "ok=0 eperm=1");
    assert_eq!(connects_as(&env, "ds-child", c.port), "ok=0 eperm=1");
    let out = env.probe_as("ds-child", &["udp", &format!("127.0.0.1:{}", c.port)]);
    assert_eq!(
        stdout(&out),
        format!("errno={}", libc::EPERM),
        "{}",
        stderr(&out)
    );

    let b_target = format!("127.0.0.1:{}/tcp", b.port);
    let diff = env.wait_for_evidence("the child's shadow difference", |e| {
        e["kind"] == "shadow" && e["agent"] == "ds-child" && e["target"] == b_target.as_str()
    });
    assert_eq!(diff["decision"], "would-allow", "{diff}");
    assert_eq!(diff["rule_id"], "cand-abc+parent:parent-ab", "{diff}");
    assert_eq!(diff["details"]["enforced_decision"], "deny", "{diff}");
    assert_eq!(
        diff["policy_snapshot"], load["details"]["shadow_snapshot"],
        "{diff}"
    );
    assert_eq!(
        diff["details"]["lineage"][1]["agent"], "ds-parent",
        "{diff}"
    );
    // The denial of c was recorded (the kernel saw it), and no shadow
    // entry for it: the parent refuses it under the candidate too.
    let c_target = format!("127.0.0.1:{}/tcp", c.port);
    env.wait_for_evidence("the denial of c", |e| {
        e["kind"] == "decision" && e["agent"] == "ds-child" && e["target"] == c_target.as_str()
    });
    let c_shadows = entries_where(&env, |e| {
        e["kind"] == "shadow"
            && e["agent"] == "ds-child"
            && e["target"]
                .as_str()
                .is_some_and(|t| t.contains(&format!(":{}/", c.port)))
    });
    assert!(
        c_shadows.is_empty(),
        "a difference the parent refuses: {c_shadows:?}"
    );

    // Offline: the same candidate replayed against the same intersection.
    let file = env.dir.path().join("cand.yaml");
    std::fs::write(
        &file,
        candidate
            .lines()
            .map(|l| l.strip_prefix("  ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let r: Value = serde_json::from_str(&env.ok(&[
        "policy",
        "shadow",
        "ds-child",
        file.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    let groups: Vec<(String, String)> = r["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["change"].as_str().unwrap().to_string(),
                g["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![("would-allow".into(), "cand-abc+parent:parent-ab".into())],
        "{r:#}"
    );
    let examples = r["differences"][0]["examples"].to_string();
    assert!(examples.contains(&format!(":{}/", b.port)), "{r:#}");
    assert!(!examples.contains(&format!(":{}/", c.port)), "{r:#}");
}

fn as_nobody(env: &TestEnv, args: &[&str]) -> Output {
    env.warden()
        .args(args)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run warden as nobody")
}

/// A child's `change_review` governs its OWN policy file: the parent's
/// reload (which changes the child's effective policy) is installed for
/// the child without review and recorded with both snapshots; a change of
/// the child's file is refused until an approver other than its author
/// approves a proposal bound to the child's own snapshot.
#[test]
fn a_childs_reviewed_change_is_refused_for_its_author_and_a_parent_reload_is_not_one() {
    if !can_run("delegation") {
        return;
    }
    let (a, b, c) = (Listener::tcp4(), Listener::tcp4(), Listener::tcp4());
    let mut env = TestEnv::new("dgreview");
    std::fs::set_permissions(
        env.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let reviewed = "change_review: { approvers: [root, nobody], min: 1 }\n";
    env.write_policy(
        "parent.yaml",
        &ports_policy("parent-ab", &[a.port, b.port], ""),
    );
    env.write_policy("child.yaml", &ports_policy("child", &[a.port], reviewed));
    env.start_daemon();
    add_agent(&env, "dr-parent", PARENT_OWNER, "parent.yaml", None);
    add_agent(
        &env,
        "dr-child",
        CHILD_OWNER,
        "child.yaml",
        Some("dr-parent"),
    );
    assert_eq!(connects_as(&env, "dr-child", a.port), "ok=1 eperm=0");
    assert_eq!(connects_as(&env, "dr-child", b.port), "ok=0 eperm=1");
    let first = env.wait_for_evidence("the child's load", |e| {
        e["kind"] == "policy_load" && e["agent"] == "dr-child" && e["decision"] == "loaded"
    });
    let own = first["details"]["own_snapshot"]
        .as_str()
        .unwrap()
        .to_string();

    // The parent narrows (drops a): the child's effective policy changes,
    // its own does not, and no review is asked for.
    env.write_policy(
        "parent.yaml",
        &ports_policy("parent-bc", &[b.port, c.port], ""),
    );
    env.ok(&["policy", "reload"]);
    assert_eq!(connects_as(&env, "dr-child", a.port), "ok=0 eperm=1");
    let by_parent = env.wait_for_evidence("the child's load after the parent's", |e| {
        e["kind"] == "policy_load"
            && e["agent"] == "dr-child"
            && e["decision"] == "loaded"
            && e["seq"].as_u64() > first["seq"].as_u64()
    });
    let d = &by_parent["details"];
    assert_eq!(d["changed"], serde_json::json!(["parent"]), "{by_parent}");
    assert_eq!(d["own_snapshot"], own.as_str(), "{by_parent}");
    assert_eq!(d["previous_own_snapshot"], own.as_str(), "{by_parent}");
    assert_eq!(
        d["previous_parent_snapshot"],
        first["details"]["parent_snapshot"]
    );
    assert_ne!(d["parent_snapshot"], first["details"]["parent_snapshot"]);
    assert_eq!(
        d["previous_snapshot"], first["policy_snapshot"],
        "{by_parent}"
    );
    assert_eq!(d["snapshot_of"], "effective", "{by_parent}");

    // The child's own file changes (to b): refused without a proposal.
    let v2 = ports_policy("child", &[a.port, b.port], reviewed);
    env.write_policy("child.yaml", &v2);
    let out = env.cli(&["policy", "reload"]);
    assert!(!out.status.success(), "an unreviewed child change went in");
    assert!(stderr(&out).contains("requires review"), "{}", stderr(&out));
    assert_eq!(connects_as(&env, "dr-child", b.port), "ok=0 eperm=1");

    // nobody proposes; the proposal is of the child's own policy.
    let file = env.dir.path().join("child-v2.yaml");
    std::fs::write(&file, &v2).unwrap();
    let out = as_nobody(
        &env,
        &["policy", "propose", "dr-child", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    let id: u64 = said
        .strip_prefix("proposal ")
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no proposal id in {said}"));
    let proposal = env.wait_for_evidence("the proposal", |e| {
        e["kind"] == "policy_proposal" && e["seq"] == id
    });
    assert_eq!(proposal["details"]["snapshot_of"], "own", "{proposal}");
    assert_eq!(
        proposal["details"]["from_snapshot"],
        own.as_str(),
        "{proposal}"
    );
    assert_eq!(
        proposal["details"]["effective_snapshot"], by_parent["policy_snapshot"],
        "{proposal}"
    );
    assert_eq!(proposal["details"]["lineage"][1]["agent"], "dr-parent");
    // Its author cannot review it, nor the child itself from inside.
    let out = as_nobody(&env, &["policy", "review", &id.to_string(), "--approve"]);
    assert!(
        !out.status.success(),
        "the author approved their own change"
    );
    assert!(stderr(&out).contains("cannot review"), "{}", stderr(&out));
    let out = env.probe_as(
        "dr-child",
        &[
            "exec",
            warden_bin().to_str().unwrap(),
            "policy",
            "review",
            &id.to_string(),
            "--approve",
        ],
    );
    assert!(
        !out.status.success(),
        "the child approved a change: {out:?}"
    );
    assert!(!env.cli(&["policy", "reload"]).status.success());
    assert_eq!(connects_as(&env, "dr-child", b.port), "ok=0 eperm=1");

    // root approves: installed, and only the child's side changed.
    env.ok(&["policy", "review", &id.to_string(), "--approve"]);
    let review = env.wait_for_evidence("the review", |e| {
        e["kind"] == "policy_review" && e["details"]["proposal"] == id
    });
    assert_eq!(review["details"]["snapshot_of"], "own", "{review}");
    env.ok(&["policy", "reload"]);
    assert_eq!(connects_as(&env, "dr-child", b.port), "ok=1 eperm=0");
    // Still narrowed by the parent: a stays refused.
    assert_eq!(connects_as(&env, "dr-child", a.port), "ok=0 eperm=1");
    let activated = env.wait_for_evidence("the activation", |e| {
        e["kind"] == "policy_load" && e["agent"] == "dr-child" && e["details"]["proposal"] == id
    });
    assert_eq!(activated["details"]["changed"], serde_json::json!(["own"]));
    assert_eq!(activated["details"]["previous_own_snapshot"], own.as_str());
    assert_eq!(
        activated["details"]["own_snapshot"], proposal["policy_snapshot"],
        "{activated}"
    );
}

fn rfc3339_in(secs: i64) -> String {
    let now = warden::clock::now_ns();
    let t = warden::clock::format_ns(now + secs * 1_000_000_000);
    format!("{}Z", t.split('.').next().expect("a time"))
}

/// A freeze window in a child's own policy: the child's destructive rule
/// is refused by the kernel (the parent allows it), the denial names the
/// window, the child's own policy change is refused, and an approver's
/// override is recorded against the child's own snapshot.
#[test]
fn a_freeze_on_a_delegated_child_denies_its_destructive_rule_and_refuses_its_changes() {
    if !can_run("delegation") {
        return;
    }
    let (api, deploy) = (Listener::tcp4(), Listener::tcp4());
    let mut env = TestEnv::new("dgfreeze");
    env.write_policy(
        "parent.yaml",
        &ports_policy("parent-both", &[api.port, deploy.port], ""),
    );
    let child = format!(
        "version: 1
approvers:
  users: [root]
freeze:
  - id: child-freeze
    from: {}
    to: {}
rules:
  - id: api
    connect: {{ to: 127.0.0.1, ports: [{}] }}
    decision: allow
  - id: deploy
    connect: {{ to: 127.0.0.1, ports: [{}] }}
    decision: allow
    destructive: true
",
        rfc3339_in(-3600),
        rfc3339_in(3600),
        api.port,
        deploy.port
    );
    env.write_policy("child.yaml", &child);
    env.start_daemon();
    add_agent(&env, "df-parent", PARENT_OWNER, "parent.yaml", None);
    add_agent(
        &env,
        "df-child",
        CHILD_OWNER,
        "child.yaml",
        Some("df-parent"),
    );
    // The parent itself is not frozen.
    assert_eq!(connects_as(&env, "df-parent", deploy.port), "ok=1 eperm=0");
    assert_eq!(connects_as(&env, "df-child", api.port), "ok=1 eperm=0");
    assert_eq!(connects_as(&env, "df-child", deploy.port), "ok=0 eperm=1");
    let mapped = format!("[::ffff:127.0.0.1]:{}", deploy.port);
    let out = env.probe_as("df-child", &["connect-n", &mapped, "1"]);
    assert_eq!(stdout(&out), "ok=0 eperm=1", "{}", stderr(&out));
    let denial = env.wait_for_evidence("the frozen denial", |e| {
        e["kind"] == "decision"
            && e["agent"] == "df-child"
            && e["target"] == format!("127.0.0.1:{}/tcp", deploy.port).as_str()
    });
    assert_eq!(denial["decision"], "deny", "{denial}");
    assert_eq!(denial["rule_id"], "deploy+parent:parent-both", "{denial}");
    assert_eq!(
        denial["details"]["freeze_window"], "child-freeze",
        "{denial}"
    );

    // The child's own change waits for the window.
    env.write_policy("child.yaml", &child.replace("    destructive: true\n", ""));
    let out = env.cli(&["policy", "reload"]);
    assert!(
        !out.status.success(),
        "a child change went in during its freeze"
    );
    assert!(
        stderr(&out).contains("freeze window 'child-freeze' is open"),
        "{}",
        stderr(&out)
    );
    assert_eq!(connects_as(&env, "df-child", deploy.port), "ok=0 eperm=1");
    env.write_policy("child.yaml", &child);

    // Break glass by an approver of the child's policy.
    env.ok(&["freeze", "override", "df-child", "--reason", "hotfix INC-7"]);
    assert_eq!(connects_as(&env, "df-child", deploy.port), "ok=1 eperm=0");
    let o = env.wait_for_evidence("the override", |e| {
        e["kind"] == "freeze_override" && e["agent"] == "df-child"
    });
    assert_eq!(o["details"]["freeze_window"], "child-freeze", "{o}");
    assert_eq!(o["details"]["snapshot_of"], "own", "{o}");
    let load = entries_where(&env, |e| {
        e["kind"] == "policy_load" && e["agent"] == "df-child" && e["decision"] == "loaded"
    });
    let first = load.first().expect("a load");
    assert_eq!(
        o["policy_snapshot"], first["details"]["own_snapshot"],
        "{o}"
    );
    assert!(o["details"]["effective_snapshot"].is_string(), "{o}");
}

/// The test resolver of this file (tests/src/dns_resolver.rs) and what its
/// names resolve to: loopback addresses of their own, so no other test's
/// resolver or listener is in the way.
const RESOLVER: &str = "127.0.19.2:53";
const API_ADDR: &str = "127.0.19.10";
const EXTRA_ADDR: &str = "127.0.19.11";

/// A TCP listener on both answer addresses (one port) and the resolver;
/// once per test process.
fn dns_port() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(|| {
        let first = std::net::TcpListener::bind(format!("{API_ADDR}:0")).expect("bind");
        let port = first.local_addr().expect("addr").port();
        let second = std::net::TcpListener::bind(format!("{EXTRA_ADDR}:{port}")).expect("bind");
        for l in [first, second] {
            std::thread::spawn(move || {
                for c in l.incoming() {
                    drop(c)
                }
            });
        }
        let answers = vec![
            (
                "api.deleg.warden".to_string(),
                API_ADDR.parse().expect("ip"),
                300,
            ),
            (
                "extra.deleg.warden".to_string(),
                EXTRA_ADDR.parse().expect("ip"),
                300,
            ),
        ];
        let _ = Box::leak(Box::new(warden_tests::dns_resolver::TestResolver::start(
            RESOLVER.parse().expect("addr"),
            answers,
        )));
        port
    })
}

fn resolve_as(env: &TestEnv, agent: &str, name: &str, port: u16) -> String {
    let probe = probe_bin().with_file_name("warden-dns-probe");
    let port = port.to_string();
    let out = env.cli(&[
        "run",
        "--agent",
        agent,
        "--",
        probe.to_str().expect("utf-8"),
        "resolve",
        "udp",
        RESOLVER,
        name,
        "A",
        &port,
    ]);
    stdout(&out)
}

/// Rules by name for a delegated child: its DNS proxy decides each name by
/// both policies (the parent's and the child's host rules, intersected), and
/// the learned address opens only on the ports and protocol both name. A
/// name the child allows and the parent does not is refused (REFUSED, a
/// `dns` deny naming both sides), and its address stays closed; the same
/// policy not delegated resolves and connects it.
#[test]
fn a_childs_host_rule_allowed_by_both_resolves_and_connects_and_a_child_only_name_is_refused() {
    if !can_run("delegation") {
        return;
    }
    let p = dns_port();
    let mut env = TestEnv::new("dghost");
    env.write_policy(
        "parent.yaml",
        &format!(
            "version: 1
rules:
  - id: parent-api
    connect: {{ host: api.deleg.warden, ports: [{p}], protocol: tcp }}
    decision: allow
"
        ),
    );
    env.write_policy(
        "child.yaml",
        &format!(
            "version: 1
rules:
  - id: child-names
    connect: {{ host: \"*.deleg.warden\" }}
    decision: allow
  - id: child-extra
    connect: {{ host: extra.deleg.warden, ports: [{p}] }}
    decision: allow
"
        ),
    );
    env.start_daemon();
    add_agent(&env, "dh-parent", PARENT_OWNER, "parent.yaml", None);
    add_agent(
        &env,
        "dh-child",
        CHILD_OWNER,
        "child.yaml",
        Some("dh-parent"),
    );
    add_agent(&env, "dh-solo", CHILD_OWNER, "child.yaml", None);

    // What the child's own policy allows, not delegated.
    assert_eq!(
        resolve_as(&env, "dh-solo", "extra.deleg.warden", p),
        format!("NOERROR {EXTRA_ADDR} connect=ok")
    );

    // Allowed by both: resolves and connects.
    assert_eq!(
        resolve_as(&env, "dh-child", "api.deleg.warden", p),
        format!("NOERROR {API_ADDR} connect=ok")
    );
    let dns = env.wait_for_evidence("the child's dns allow", |e| {
        e["kind"] == "dns" && e["agent"] == "dh-child" && e["target"] == "api.deleg.warden"
    });
    assert_eq!(dns["decision"], "allow", "{dns}");
    assert_eq!(dns["rule_id"], "child-names+parent:parent-api", "{dns}");
    assert_eq!(dns["details"]["lineage"][1]["agent"], "dh-parent", "{dns}");
    let api_target = format!("{API_ADDR}:{p}/tcp");
    let connect = env.wait_for_evidence("the child's connect", |e| {
        e["kind"] == "decision" && e["agent"] == "dh-child" && e["target"] == api_target.as_str()
    });
    assert_eq!(connect["decision"], "allow", "{connect}");
    assert_eq!(connect["rule_id"], "child-names+parent:parent-api");
    // The learned address opens only where both rules do: not over UDP
    // (the parent's rule is tcp), not on another port (the child's rule
    // has every port).
    let eperm = format!("errno={}", libc::EPERM);
    let out = env.probe_as("dh-child", &["udp", &format!("{API_ADDR}:{p}")]);
    assert_eq!(stdout(&out), eperm, "udp: {}", stderr(&out));
    let other = p.wrapping_add(1).max(1);
    let out = env.probe_as("dh-child", &["connect", &format!("{API_ADDR}:{other}")]);
    assert_eq!(stdout(&out), eperm, "other port: {}", stderr(&out));

    // Only the child allows this name: refused, and its address closed.
    assert_eq!(
        resolve_as(&env, "dh-child", "extra.deleg.warden", p),
        "REFUSED"
    );
    let refused = env.wait_for_evidence("the child's dns deny", |e| {
        e["kind"] == "dns" && e["agent"] == "dh-child" && e["target"] == "extra.deleg.warden"
    });
    assert_eq!(refused["decision"], "deny", "{refused}");
    assert_eq!(
        refused["rule_id"], "child-extra+parent:default-deny",
        "{refused}"
    );
    let out = env.probe_as("dh-child", &["connect", &format!("{EXTRA_ADDR}:{p}")]);
    assert_eq!(stdout(&out), eperm, "extra direct: {}", stderr(&out));
    let direct = format!("{EXTRA_ADDR}:{p}/tcp");
    let deny = env.wait_for_evidence("the direct connect's denial", |e| {
        e["kind"] == "decision" && e["agent"] == "dh-child" && e["target"] == direct.as_str()
    });
    assert_eq!(deny["decision"], "deny", "{deny}");
}

/// A window in the parent's policy freezes its delegated child too: the
/// child's destructive rule is refused (named `parent:ID`), and so is a
/// change of the child's own policy file, while the parent's own
/// (non-destructive) actions go on.
#[test]
fn a_parents_freeze_window_freezes_its_childs_destructive_rule_and_changes() {
    if !can_run("delegation") {
        return;
    }
    let (api, deploy) = (Listener::tcp4(), Listener::tcp4());
    let mut env = TestEnv::new("dgpfreeze");
    env.write_policy(
        "parent.yaml",
        &ports_policy(
            "parent-both",
            &[api.port, deploy.port],
            &format!(
                "freeze:\n  - id: quarter-end\n    from: {}\n    to: {}\n",
                rfc3339_in(-3600),
                rfc3339_in(3600)
            ),
        ),
    );
    let child = format!(
        "version: 1
rules:
  - id: api
    connect: {{ to: 127.0.0.1, ports: [{}] }}
    decision: allow
  - id: deploy
    connect: {{ to: 127.0.0.1, ports: [{}] }}
    decision: allow
    destructive: true
",
        api.port, deploy.port
    );
    env.write_policy("child.yaml", &child);
    env.start_daemon();
    add_agent(&env, "dp-parent", PARENT_OWNER, "parent.yaml", None);
    add_agent(
        &env,
        "dp-child",
        CHILD_OWNER,
        "child.yaml",
        Some("dp-parent"),
    );
    assert_eq!(connects_as(&env, "dp-parent", deploy.port), "ok=1 eperm=0");
    assert_eq!(connects_as(&env, "dp-child", api.port), "ok=1 eperm=0");
    assert_eq!(connects_as(&env, "dp-child", deploy.port), "ok=0 eperm=1");
    let denial = env.wait_for_evidence("the child's frozen denial", |e| {
        e["kind"] == "decision"
            && e["agent"] == "dp-child"
            && e["target"] == format!("127.0.0.1:{}/tcp", deploy.port).as_str()
    });
    assert_eq!(denial["decision"], "deny", "{denial}");
    assert_eq!(
        denial["details"]["freeze_window"], "parent:quarter-end",
        "{denial}"
    );
    // The child's own change waits for the parent's window.
    env.write_policy("child.yaml", &child.replace("    destructive: true\n", ""));
    let out = env.cli(&["policy", "reload"]);
    assert!(
        !out.status.success(),
        "a child change went in during its parent's freeze"
    );
    assert!(
        stderr(&out).contains("freeze window 'parent:quarter-end' is open"),
        "{}",
        stderr(&out)
    );
    assert_eq!(connects_as(&env, "dp-child", deploy.port), "ok=0 eperm=1");
    let rejected = env.wait_for_evidence("the refused child change", |e| {
        e["kind"] == "policy_load" && e["agent"] == "dp-child" && e["decision"] == "rejected"
    });
    assert!(
        rejected["details"]["error"]
            .as_str()
            .is_some_and(|m| m.contains("parent:quarter-end")),
        "{rejected}"
    );
}

/// `warden policy shadow CHILD` replays each recorded entry under the
/// parent's policy in force when it was recorded. The parent allows port
/// a, the child connects to a (allowed); the parent is reloaded to allow
/// only b, the child connects to a again (denied by the parent). A
/// candidate allowing a, replayed: the first connect is allowed under the
/// parent of its time, the second denied under the reloaded parent, both
/// as recorded, so no difference (under the parent of now only, the first
/// would be a `would-deny`).
#[test]
fn a_childs_offline_replay_uses_the_parents_policy_of_each_entrys_time() {
    if !can_run("delegation") {
        return;
    }
    let (a, b) = (Listener::tcp4(), Listener::tcp4());
    let mut env = TestEnv::new("dgreplay");
    env.write_policy("parent.yaml", &ports_policy("parent-a", &[a.port], ""));
    env.write_policy("child.yaml", &ports_policy("child-a", &[a.port], ""));
    env.start_daemon_with(&[("WARDEN_SUMMARY_SECS", "3600")]);
    add_agent(&env, "dr-parent", PARENT_OWNER, "parent.yaml", None);
    add_agent(
        &env,
        "dr-child",
        CHILD_OWNER,
        "child.yaml",
        Some("dr-parent"),
    );
    env.wait_for_evidence("the child's load", |e| {
        e["kind"] == "policy_load" && e["agent"] == "dr-child" && e["decision"] == "loaded"
    });
    let a_target = format!("127.0.0.1:{}/tcp", a.port);
    assert_eq!(connects_as(&env, "dr-child", a.port), "ok=1 eperm=0");
    env.wait_for_evidence("the allowed connect", |e| {
        e["kind"] == "decision"
            && e["agent"] == "dr-child"
            && e["target"] == a_target.as_str()
            && e["decision"] == "allow"
    });

    env.write_policy("parent.yaml", &ports_policy("parent-b", &[b.port], ""));
    env.ok(&["policy", "reload"]);
    env.wait_for_evidence("the child's reload after its parent's", |e| {
        e["kind"] == "policy_load"
            && e["agent"] == "dr-child"
            && e["details"]["changed"]
                .as_array()
                .is_some_and(|c| c.iter().any(|s| s == "parent"))
    });
    assert_eq!(connects_as(&env, "dr-child", a.port), "ok=0 eperm=1");
    let deny = env.wait_for_evidence("the denied connect", |e| {
        e["kind"] == "decision"
            && e["agent"] == "dr-child"
            && e["target"] == a_target.as_str()
            && e["decision"] == "deny"
    });
    assert_eq!(deny["rule_id"], "child-a+parent:default-deny", "{deny}");

    let file = env.dir.path().join("cand.yaml");
    std::fs::write(&file, ports_policy("cand-a", &[a.port], "")).unwrap();
    let r: Value = serde_json::from_str(&env.ok(&[
        "policy",
        "shadow",
        "dr-child",
        file.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(r["differences"], serde_json::json!([]), "{r:#}");
    // Both connects replayed, both as recorded.
    assert_eq!(r["actions"], 2, "{r:#}");
    assert_eq!(r["unchanged"], 2, "{r:#}");
}
