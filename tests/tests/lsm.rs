//! Exec and file-open enforcement through BPF LSM, end to end, in the QEMU
//! guest (`cargo xtask test` runs this file there; see xtask/src/testing.rs).
//!
//! The host kernel refuses BPF LSM programs, so outside the guest every
//! test here returns at once with a message. In the guest (BPF LSM active
//! and `WARDEN_IN_VM=1`), a real daemon attaches `lsm/bprm_check_security`
//! and `lsm/file_open` instead of the tracepoint fallback, and a denial is
//! an error the process sees (EPERM), not a kill: a denied exec returns
//! from execve and the old program goes on; a denied open returns -1.
//!
//! The guest tier runs this file twice: with `bpf` in the guest's active
//! LSM list, and without it (`WARDEN_GUEST_MECHANISM=fmod_ret`), where the
//! daemon decides the same way through `fmod_ret` on `security_bprm_check`
//! and `security_file_open` (BPF LSM built but not active, as on Ubuntu).
//!
//! (Over 600 lines: one file for the guest tier, each test an independent
//! scenario run on both mechanisms.)

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Child, Command, Output, Stdio},
};

use serde_json::Value;
use warden_common::names;
use warden_tests::{
    approvals, cache_hits, probe_path, state_of, stdout, wait_until, Files, Listener, Scripted,
    TestEnv, RUNTIME_FILES,
};

/// Whether this guest boot is the fmod_ret one (`bpf` left out of `lsm=`,
/// `WARDEN_GUEST_MECHANISM=fmod_ret`); otherwise BPF LSM is expected.
fn fmod_ret() -> bool {
    std::env::var("WARDEN_GUEST_MECHANISM").is_ok_and(|v| v == "fmod_ret")
}

/// How the expected mechanism records a denial.
fn deny_method() -> &'static str {
    if fmod_ret() {
        "fmodret-deny"
    } else {
        "lsm-deny"
    }
}

/// The hook the expected mechanism names in an open's evidence.
fn open_hook() -> &'static str {
    if fmod_ret() {
        "fmod_ret/security_file_open"
    } else {
        "lsm/file_open"
    }
}

/// True only inside the guest: the expected LSM list (with `bpf`, or
/// without it for fmod_ret) and the xtask's marker set. Everything here
/// needs both; elsewhere the tests say so and return.
fn in_vm(test: &str) -> bool {
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    let bpf_lsm = lsm.trim().split(',').any(|l| l == "bpf");
    let marked = std::env::var("WARDEN_IN_VM").is_ok_and(|v| v == "1");
    if marked && fmod_ret() {
        assert!(
            !bpf_lsm,
            "{test}: the fmod_ret guest boots without bpf: {lsm}"
        );
        return true;
    }
    if bpf_lsm && marked {
        assert!(
            warden_tests::is_root(),
            "{test}: the guest runs tests as root"
        );
        return true;
    }
    eprintln!(
        "{test}: SKIPPED here (BPF LSM tests run in the QEMU guest: `cargo xtask test`; \
         bpf in the LSM list: {bpf_lsm}, WARDEN_IN_VM=1: {marked})"
    );
    false
}

/// The decision entries for `action` on `target`.
fn decision_for(env: &TestEnv, action: &str, target: &str) -> Value {
    env.wait_for_evidence(&format!("{action} {target}"), |e| {
        e["kind"] == "decision" && e["action"] == action && e["target"] == target
    })
}

fn not_killed(out: &Output) {
    assert_eq!(
        out.status.signal(),
        None,
        "BPF LSM fails the syscall; it never kills: {out:?}"
    );
}

#[test]
fn status_and_daemon_start_name_the_lsm_mechanisms() {
    if !in_vm("lsm_status") {
        return;
    }
    let mut env = TestEnv::new("lsmstatus");
    env.start_daemon();
    let text = env.ok(&["status"]);
    if fmod_ret() {
        assert!(
            text.contains("exec and file opens use fmod_ret on security_* below"),
            "{text}"
        );
    } else {
        assert!(text.contains("in use for exec and file opens"), "{text}");
    }
    let status: Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    let mech = |action: &str| -> String {
        status["mechanisms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["action"] == action)
            .unwrap_or_else(|| panic!("no {action} row: {status}"))["mechanism"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (exec_hook, open_hook, log) = if fmod_ret() {
        (
            "fmod_ret/security_bprm_check",
            "fmod_ret/security_file_open",
            "fmod_ret on security_* decides exec and file opens",
        )
    } else {
        (
            "lsm/bprm_check_security",
            "lsm/file_open",
            "BPF LSM decides exec and file opens",
        )
    };
    assert!(mech("exec").starts_with(exec_hook), "{status}");
    assert!(mech("file open").starts_with(open_hook), "{status}");
    if fmod_ret() {
        // Why the better mechanism was not used.
        assert!(
            mech("BPF LSM").starts_with("not used (bpf is not in the active LSM list"),
            "{status}"
        );
    } else {
        assert_eq!(mech("BPF LSM"), "in use for exec and file opens");
    }
    let start = env.wait_for_evidence("daemon_start", |e| e["kind"] == "daemon_start");
    let recorded = start["details"]["mechanisms"].to_string();
    assert!(recorded.contains(exec_hook), "{start}");
    assert!(recorded.contains(open_hook), "{start}");
    // The daemon log says it too.
    assert!(env.daemon_log().contains(log));
}

#[test]
fn denied_exec_fails_with_eperm_and_never_runs_allowed_runs_outsiders_untouched() {
    if !in_vm("lsm_exec") {
        return;
    }
    let mut env = TestEnv::new("lsmexec");
    let f = Files::new(&env);
    let ok_touch = f.binary("ok-touch", "/usr/bin/touch");
    let no_touch = f.binary("no-touch", "/usr/bin/touch");
    env.write_policy(
        "exec.yaml",
        &format!(
            "version: 1
rules:
  - id: tools
    exec: {{ prefix: {bin}/ }}
    decision: allow
  - id: no-touch
    exec: {{ path: {no_touch} }}
    decision: deny
  - id: probe
    exec: {{ path: {probe} }}
    decision: allow
",
            bin = f.path("bin"),
            probe = probe_path(),
        ),
    );
    env.start_daemon();
    env.add_agent("exec-agent", "exec.yaml");

    // Allowed: runs and leaves its marker.
    let out = env.probe_as("exec-agent", &["exec", &ok_touch, &f.marker("ok")]);
    assert!(out.status.success(), "allowed exec: {out:?}");
    assert!(Path::new(&f.marker("ok")).exists());
    let e = decision_for(&env, "exec", &ok_touch);
    assert_eq!(
        (e["decision"].as_str(), e["method"].as_str()),
        (Some("allow"), Some("allow")),
        "{e}"
    );

    // Denied by rule, and by default: execve returns EPERM to the probe,
    // which lives on to say so; the binary never ran.
    for (bin, name, rule) in [
        (no_touch.as_str(), "denied", "no-touch"),
        ("/usr/bin/mkdir", "unlisted", "default-deny"),
    ] {
        let out = env.probe_as("exec-agent", &["exec", bin, &f.marker(name)]);
        not_killed(&out);
        assert_eq!(
            stdout(&out),
            format!("errno={}", libc::EPERM),
            "{bin}: {out:?}"
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(!Path::new(&f.marker(name)).exists(), "{bin} ran");
        let e = decision_for(&env, "exec", bin);
        assert_eq!(e["decision"], "deny", "{e}");
        assert_eq!(e["method"], deny_method(), "{e}");
        assert_eq!(e["rule_id"], rule, "{e}");
        assert_eq!(e["agent"], "exec-agent", "{e}");
        assert_eq!(e["details"]["filename"], bin, "{e}");
    }

    // `warden run` of a denied binary: its own execve fails with EPERM.
    let out = env.cli(&[
        "run",
        "--agent",
        "exec-agent",
        "--",
        &no_touch,
        &f.marker("run"),
    ]);
    assert!(!out.status.success());
    not_killed(&out);
    assert!(!Path::new(&f.marker("run")).exists());

    // Outside any agent cgroup the same binaries run.
    let out = Command::new(&no_touch)
        .arg(f.marker("outside"))
        .output()
        .unwrap();
    assert!(
        out.status.success() && Path::new(&f.marker("outside")).exists(),
        "{out:?}"
    );
    let outside: Vec<Value> = env
        .evidence()
        .into_iter()
        .filter(|e| e["target"] == no_touch.as_str() && e["decision"] == "allow")
        .collect();
    assert!(
        outside.is_empty(),
        "outsiders are not decided: {outside:#?}"
    );
}

#[test]
fn denied_open_fails_with_eperm_reads_and_writes_per_policy() {
    if !in_vm("lsm_file") {
        return;
    }
    let mut env = TestEnv::new("lsmfile");
    let f = Files::new(&env);
    let public = f.write("public/readme", "public words");
    let secret = f.write("secret", "the secret");
    let notes = f.write("work/notes", "draft");
    let ro = f.write("public/ro", "keep me");
    env.write_policy(
        "file.yaml",
        &format!(
            "version: 1
rules:{RUNTIME_FILES}
  - id: public-read
    file: {{ prefix: {public}/, access: [read] }}
    decision: allow
  - id: work-write
    file: {{ prefix: {work}/, access: [write] }}
    decision: allow
",
            public = f.path("public"),
            work = f.path("work"),
        ),
    );
    env.start_daemon();
    env.add_agent("file-agent", "file.yaml");

    // Read allowed.
    let out = env.probe_as("file-agent", &["read", &public]);
    assert_eq!(stdout(&out), "ok public words", "{out:?}");

    // Read denied by default: open() returns -1 EPERM, the probe lives on.
    let out = env.probe_as("file-agent", &["read", &secret]);
    not_killed(&out);
    assert_eq!(stdout(&out), format!("errno={}", libc::EPERM), "{out:?}");
    let e = decision_for(&env, "open", &secret);
    assert_eq!(e["decision"], "deny", "{e}");
    assert_eq!(e["method"], deny_method(), "{e}");
    assert_eq!(e["rule_id"], "default-deny", "{e}");
    assert_eq!(e["details"]["access"], "read", "{e}");
    assert_eq!(e["details"]["hook"], open_hook(), "{e}");

    // Writes: allowed under work/ (write-only: reading it is denied) ...
    let out = env.probe_as("file-agent", &["append", &notes, "+more"]);
    assert_eq!(stdout(&out), "ok", "{out:?}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "draft+more");
    let out = env.probe_as("file-agent", &["read", &notes]);
    assert_eq!(stdout(&out), format!("errno={}", libc::EPERM), "{out:?}");
    // ... and denied under public/ (read-only), before anything happens:
    // an O_TRUNC open that is refused truncates nothing (the fallback's
    // detect-and-kill cannot promise that).
    let out = env.probe_as("file-agent", &["append", &ro, "x"]);
    assert_eq!(stdout(&out), format!("errno={}", libc::EPERM), "{out:?}");
    let out = env.probe_as("file-agent", &["truncate", &ro]);
    not_killed(&out);
    assert_eq!(stdout(&out), format!("errno={}", libc::EPERM), "{out:?}");
    assert_eq!(std::fs::read_to_string(&ro).unwrap(), "keep me");
    let e = env.wait_for_evidence("denied write", |e| {
        e["kind"] == "decision" && e["target"] == ro.as_str() && e["details"]["access"] == "write"
    });
    assert_eq!(e["method"], deny_method(), "{e}");
    assert_eq!(e["rule_id"], "default-deny", "{e}");

    // A process outside the agent reads the secret.
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "the secret");
    let outsider: Vec<Value> = env
        .evidence()
        .into_iter()
        .filter(|e| e["target"] == secret.as_str())
        .collect();
    assert_eq!(
        outsider.len(),
        1,
        "only the agent's open is decided: {outsider:#?}"
    );

    // One decision per open, by the LSM hook: the fallback's sys_exit
    // program does not decide opens as well.
    let reads: Vec<Value> = env
        .evidence()
        .into_iter()
        .filter(|e| e["kind"] == "decision" && e["target"] == public.as_str())
        .collect();
    assert_eq!(reads.len(), 1, "{reads:#?}");
    assert_eq!(reads[0]["details"]["hook"], open_hook(), "{reads:#?}");
}

#[test]
fn disabling_lsm_falls_back_to_the_tracepoints() {
    if !in_vm("lsm_disabled") {
        return;
    }
    let mut env = TestEnv::new("lsmoff");
    let f = Files::new(&env);
    let no_touch = f.binary("no-touch", "/usr/bin/touch");
    env.write_policy(
        "exec.yaml",
        &format!(
            "version: 1
rules:
  - id: probe
    exec: {{ path: {probe} }}
    decision: allow
",
            probe = probe_path()
        ),
    );
    // Each step down: without BPF LSM, fmod_ret would decide next (on the
    // fmod_ret guest BPF LSM is not active anyway).
    let disable = if fmod_ret() {
        "fmod_ret"
    } else {
        "lsm,fmod_ret"
    };
    env.start_daemon_with(&[("WARDEN_DISABLE_MECHANISMS", disable)]);
    let text = env.ok(&["status"]);
    if fmod_ret() {
        assert!(
            text.contains("not used (bpf is not in the active LSM list"),
            "{text}"
        );
    } else {
        assert!(
            text.contains("not used (disabled by WARDEN_DISABLE_MECHANISMS=lsm)"),
            "{text}"
        );
    }
    assert!(
        text.contains(
            "fmod_ret on security_* not used either (disabled by WARDEN_DISABLE_MECHANISMS=fmod_ret)"
        ),
        "{text}"
    );
    assert!(
        text.contains("tp_btf/sched_process_exec (fallback"),
        "{text}"
    );
    // The fallback's programs are loaded at start, as on a kernel without
    // BPF trampolines.
    let loaded = env.daemon_programs();
    for p in [
        names::PROG_SYS_EXIT,
        names::PROG_PATH_OPS,
        names::PROG_SHADOW_OPEN,
        names::PROG_EXEC,
    ] {
        assert!(
            loaded.contains(&kernel_name(p)),
            "{p} not loaded: {loaded:?}"
        );
    }
    env.add_agent("fallback-agent", "exec.yaml");
    // The fallback (on this guest kernel's BTF offsets) kills the exec.
    let out = env.probe_as("fallback-agent", &["exec", &no_touch, &f.marker("fb")]);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{out:?}");
    assert!(!Path::new(&f.marker("fb")).exists());
    let e = decision_for(&env, "exec", &no_touch);
    assert_eq!(e["method"], "kill", "{e}");
}

/// One step down: with BPF LSM disabled (or not active), `fmod_ret` on
/// `security_*` decides, with the same effect: a denied exec returns
/// EPERM, the binary never runs, and the entry says `fmodret-deny`.
#[test]
fn disabling_lsm_steps_down_to_fmod_ret() {
    if !in_vm("lsm_to_fmod_ret") {
        return;
    }
    let mut env = TestEnv::new("lsmfmod");
    let f = Files::new(&env);
    let no_touch = f.binary("no-touch", "/usr/bin/touch");
    env.write_policy(
        "exec.yaml",
        &format!(
            "version: 1
rules:
  - id: probe
    exec: {{ path: {probe} }}
    decision: allow
",
            probe = probe_path()
        ),
    );
    env.start_daemon_with(&[("WARDEN_DISABLE_MECHANISMS", "lsm")]);
    let text = env.ok(&["status"]);
    assert!(
        text.contains("exec and file opens use fmod_ret on security_* below"),
        "{text}"
    );
    assert!(text.contains("fmod_ret/security_bprm_check"), "{text}");
    env.add_agent("fmod-agent", "exec.yaml");
    let out = env.probe_as("fmod-agent", &["exec", &no_touch, &f.marker("fm")]);
    not_killed(&out);
    assert_eq!(stdout(&out), format!("errno={}", libc::EPERM), "{out:?}");
    assert!(
        !Path::new(&f.marker("fm")).exists(),
        "the denied binary ran"
    );
    let e = decision_for(&env, "exec", &no_touch);
    assert_eq!(e["decision"], "deny", "{e}");
    assert_eq!(e["method"], "fmodret-deny", "{e}");
}

/// Starts `probe ARGS...` as `agent` without waiting for it.
fn spawn_probe(env: &TestEnv, agent: &str, args: &[&str]) -> Child {
    env.warden()
        .args(["run", "--agent", agent, "--", &probe_path()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_held(env: &TestEnv, child: &Child) -> Value {
    warden_tests::wait_held(
        env,
        warden_tests::command_of(child.id()),
        &['T'],
        "the exec is held",
    )
}

/// Starts the daemon with `hold-agent` under a policy of `rules` (YAML list
/// items) whose holds root may approve, expiring after 5 minutes.
fn start_hold_agent(env: &mut TestEnv, rules: &str) {
    env.write_policy(
        "hold.yaml",
        &format!("version: 1\napprovers:\n  users: [root]\nhold_timeout: 5m\nrules:{rules}"),
    );
    env.start_daemon();
    env.add_agent("hold-agent", "hold.yaml");
}

#[test]
fn held_exec_runs_when_approved_and_fails_with_eperm_when_rejected() {
    if !in_vm("lsm_hold") {
        return;
    }
    let mut env = TestEnv::new("lsmhold");
    let f = Files::new(&env);
    let held = f.binary("held-touch", "/usr/bin/touch");
    start_hold_agent(
        &mut env,
        &format!(
            "
  - id: held-touch
    exec: {{ path: {held} }}
    decision: hold
  - id: probe
    exec: {{ path: {probe} }}
    decision: allow
",
            probe = probe_path()
        ),
    );

    // Approved: the stopped execve restarts and the binary runs.
    let child = spawn_probe(&env, "hold-agent", &["exec", &held, &f.marker("approved")]);
    let pending = wait_held(&env, &child);
    assert_eq!(pending["job"]["action"], "exec", "{pending}");
    assert_eq!(pending["job"]["target"], held.as_str(), "{pending}");
    assert!(
        !Path::new(&f.marker("approved")).exists(),
        "nothing ran while held"
    );
    let id = pending["id"].as_u64().unwrap().to_string();
    let said = env.ok(&["approve", &id, "--reason", "checked"]);
    assert!(said.contains("approved"), "{said}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "approved exec: {out:?}");
    assert!(Path::new(&f.marker("approved")).exists());
    let outcome = env.wait_for_evidence("approved exec", |e| {
        e["kind"] == "decision" && e["action"] == "exec" && e["method"] == "approved"
    });
    assert_eq!(outcome["decision"], "allow", "{outcome}");
    assert_eq!(outcome["details"]["final_status"], "executed", "{outcome}");
    let hold = env.wait_for_evidence("hold", |e| e["kind"] == "hold");
    assert_eq!(hold["rule_id"], "held-touch", "{hold}");
    assert_eq!(hold["details"]["job_hash"], pending["job_hash"], "{hold}");

    // Rejected: the restarted execve fails with EPERM; the probe reports it.
    let child = spawn_probe(&env, "hold-agent", &["exec", &held, &f.marker("rejected")]);
    let pending = wait_held(&env, &child);
    let id = pending["id"].as_u64().unwrap().to_string();
    let said = env.ok(&["reject", &id]);
    assert!(said.contains("rejected"), "{said}");
    let out = child.wait_with_output().unwrap();
    not_killed(&out);
    assert_eq!(stdout(&out), format!("errno={}", libc::EPERM), "{out:?}");
    assert!(!Path::new(&f.marker("rejected")).exists());
    let refused = env.wait_for_evidence("rejected exec", |e| {
        e["kind"] == "decision" && e["action"] == "exec" && e["method"] == "rejected"
    });
    assert_eq!(refused["decision"], "deny", "{refused}");
    assert_eq!(refused["details"]["final_status"], "refused", "{refused}");
    let checked = env.ok(&["log", "verify"]);
    assert!(!checked.is_empty());
}

#[test]
fn held_open_succeeds_when_approved_and_fails_with_eperm_when_rejected() {
    if !in_vm("lsm_hold_open") {
        return;
    }
    let mut env = TestEnv::new("lsmholdopen");
    let f = Files::new(&env);
    let held = f.write("work/held.txt", "HELD-CONTENT");
    start_hold_agent(
        &mut env,
        &format!(
            "{RUNTIME_FILES}
  - id: customer-data
    file: {{ path: {held}, access: [read] }}
    decision: hold
"
        ),
    );
    let spawn = || spawn_probe(&env, "hold-agent", &["read", &held]);

    // Approved: the stopped open restarts and returns the descriptor.
    let child = spawn();
    let pending = wait_held(&env, &child);
    assert_eq!(pending["job"]["action"], "open", "{pending}");
    assert_eq!(pending["job"]["target"], held.as_str(), "{pending}");
    let id = pending["id"].as_u64().unwrap().to_string();
    assert!(env.ok(&["approve", &id]).contains("approved"));
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "ok HELD-CONTENT", "{out:?}");
    let outcome = env.wait_for_evidence("approved open", |e| {
        e["kind"] == "decision" && e["action"] == "open" && e["method"] == "approved"
    });
    assert_eq!(outcome["details"]["final_status"], "executed", "{outcome}");

    // Rejected: the restarted open fails with EPERM; no descriptor, no kill.
    let child = spawn();
    let pending = wait_held(&env, &child);
    let id = pending["id"].as_u64().unwrap().to_string();
    assert!(env.ok(&["reject", &id]).contains("rejected"));
    let out = child.wait_with_output().unwrap();
    not_killed(&out);
    assert_eq!(stdout(&out), format!("errno={}", libc::EPERM), "{out:?}");
    let refused = env.wait_for_evidence("rejected open", |e| {
        e["kind"] == "decision" && e["action"] == "open" && e["method"] == "rejected"
    });
    assert_eq!(refused["details"]["final_status"], "refused", "{refused}");
}

/// With BPF LSM a held open restarts after approval, and what the open did
/// before `file_open` stays done: an exclusive create has created the file
/// when it is held, so the approved restart fails with EEXIST before the
/// hook (the README's Known gaps). The approval never takes effect: once the
/// thread is gone the daemon withdraws it from the kernel and records that
/// the action did not run.
#[test]
fn a_held_exclusive_create_restarts_into_eexist() {
    if !in_vm("lsm_hold_excl") {
        return;
    }
    let mut env = TestEnv::new("lsmholdexcl");
    let f = Files::new(&env);
    let dir = f.path("work");
    start_hold_agent(
        &mut env,
        &format!(
            "{RUNTIME_FILES}
  - id: new-files
    file: {{ prefix: {dir}/, access: [write] }}
    decision: hold
"
        ),
    );
    let created = f.path("work/new.txt");
    let child = spawn_probe(&env, "hold-agent", &["create-excl", &created]);
    let pending = wait_held(&env, &child);
    assert_eq!(pending["job"]["target"], created.as_str(), "{pending}");
    assert!(
        std::path::Path::new(&created).exists(),
        "the create happened before file_open held it"
    );
    let id = pending["id"].as_u64().unwrap().to_string();
    assert!(env.ok(&["approve", &id]).contains("approved"));
    let out = child.wait_with_output().unwrap();
    not_killed(&out);
    assert_eq!(stdout(&out), format!("errno={}", libc::EEXIST), "{out:?}");
    let ended = env.wait_for_evidence("the unused approval's end", |e| {
        e["kind"] == "decision" && e["details"]["approval_id"] == pending["id"]
    });
    assert_eq!(ended["decision"], "not_executed", "{ended}");
    assert_eq!(ended["method"], "grant-withdrawn", "{ended}");
    assert_eq!(ended["details"]["final_status"], "ended", "{ended}");
    assert_eq!(ended["details"]["status"], "approved", "{ended}");
    let all = warden_tests::approvals(&env, true);
    let hold = all
        .iter()
        .find(|a| a["id"] == pending["id"])
        .expect("the hold");
    assert_eq!(hold["final_status"], "ended", "{hold}");
}

/// Whether `tp_btf/sys_exit` is attached now, per `warden status --json`.
fn sys_exit_attached(env: &TestEnv) -> bool {
    let status: Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    status["global_hooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hook"].as_str().unwrap_or("").contains("sys_exit"))
        .unwrap_or_else(|| panic!("no sys_exit row: {status}"))["attached"]
        .as_bool()
        .unwrap()
}

/// With BPF LSM or fmod_ret (BPF trampolines), a held connect is stopped
/// by `fexit` right after the cgroup hook, not by `sys_exit`: the machine-wide
/// `sys_exit` stays detached while a policy holds connects and while the
/// hold is pending; a SIGCONT only stops it again; approval lets the same
/// connect succeed, rejection fails it with EPERM.
#[test]
fn held_connect_stops_without_sys_exit_approved_and_rejected() {
    if !in_vm("lsm_net_hold") {
        return;
    }
    let l = Listener::tcp4();
    let mut env = TestEnv::new("lsmnethold");
    start_hold_agent(
        &mut env,
        &format!(
            "
  - id: payments-api
    connect: {{ to: 127.0.0.1, ports: [{port}], protocol: tcp }}
    decision: hold
  - id: metrics
    connect: {{ to: 127.0.0.1, ports: [{port}], protocol: udp }}
    decision: hold
",
            port = l.port
        ),
    );
    let status: Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    let row = status["mechanisms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["action"] == "hold (network)")
        .unwrap()["mechanism"]
        .to_string();
    assert!(
        row.contains("fexit/__cgroup_bpf_run_filter_sock_addr") && row.contains("no sys_exit"),
        "{row}"
    );
    assert!(!sys_exit_attached(&env), "a policy that holds connects");
    let target = format!("127.0.0.1:{}", l.port);

    // Approved: the restarted connect succeeds.
    let child = spawn_probe(&env, "hold-agent", &["connect", &target]);
    let pending = wait_held(&env, &child);
    assert_eq!(pending["job"]["target"], format!("{target}/tcp"));
    assert!(!sys_exit_attached(&env), "a hold is pending");
    // A SIGCONT from anyone restarts the connect: the cgroup hook holds it
    // again and the fexit stops it again, no new hold.
    // SAFETY: kill(2) on the probe this test started.
    unsafe { libc::kill(warden_tests::command_of(child.id()) as i32, libc::SIGCONT) };
    std::thread::sleep(std::time::Duration::from_millis(300));
    wait_until("the probe is stopped again", || {
        state_of(warden_tests::command_of(child.id())) == 'T'
    });
    assert_eq!(approvals(&env, false).len(), 1, "re-entry holds once");
    let id = pending["id"].as_u64().unwrap().to_string();
    env.ok(&["approve", &id]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "ok", "{out:?}");
    env.wait_for_evidence("approved outcome", |e| {
        e["method"] == "approved" && e["details"]["final_status"] == "executed"
    });

    // Rejected: the restarted connect fails with EPERM.
    let child = spawn_probe(&env, "hold-agent", &["connect", &target]);
    let pending = wait_held(&env, &child);
    let id = pending["id"].as_u64().unwrap().to_string();
    env.ok(&["reject", &id]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), format!("errno={}", libc::EPERM), "{out:?}");
    env.wait_for_evidence("refused outcome", |e| {
        e["method"] == "rejected" && e["details"]["final_status"] == "refused"
    });

    // A UDP sendmsg is held and stopped the same way.
    let child = spawn_probe(&env, "hold-agent", &["udp", &target]);
    let pending = wait_held(&env, &child);
    assert_eq!(pending["job"]["target"], format!("{target}/udp"));
    let id = pending["id"].as_u64().unwrap().to_string();
    env.ok(&["approve", &id]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "ok", "{out:?}");
    assert!(!sys_exit_attached(&env));
}

/// The hook the expected mechanism names in the evidence of an operation
/// on names (`path_*`, or its `security_path_*` function).
fn name_hook(op: &str) -> String {
    if fmod_ret() {
        format!("fmod_ret/security_path_{op}")
    } else {
        format!("lsm/path_{op}")
    }
}

/// Runs the probe inside `agent`'s cgroup, without `warden run` (whose
/// Landlock would refuse some of these first): a hostile adopted agent.
fn probe_joined(env: &TestEnv, agent: &str, args: &[&str]) -> Output {
    Command::new(warden_tests::probe_bin())
        .arg("join")
        .arg(env.agent_cgroup(agent))
        .args(args)
        .output()
        .unwrap()
}

/// Operations on names (issue #15 §3) are decided before they happen by
/// the `path_*` hooks (BPF LSM) or `security_path_*` (fmod_ret): each
/// name as a `write` of its path. From inside an agent: renaming a copy of
/// a denied binary over an exec-allowed path, linking a denied file into a
/// writable directory, and unlink, chmod, mkdir, truncate(2) and a unix
/// socket's bind in a directory it may only read all fail with EPERM, the
/// process lives on, the file system is unchanged, and the entry names the
/// rule, both paths and the hook. One decision per operation: the
/// fallback's `sys_exit` does not decide them as well.
#[test]
fn operations_on_names_fail_with_eperm_before_anything_changes() {
    if !in_vm("lsm_names") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let mut env = TestEnv::new("lsmnames");
    let f = Files::new(&env);
    let tool = f.binary("tool", "/usr/bin/true");
    let evil = f.path("work/evil");
    std::fs::copy("/usr/bin/touch", &evil).unwrap();
    let secret = f.write("other/secret.txt", "SECRET-CONTENT");
    let marker = f.marker("evil-ran");
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1
rules:{RUNTIME_FILES}
  - id: work
    file: {{ prefix: {work}/, access: [read, write] }}
    decision: allow
  - id: other-read
    file: {{ prefix: {other}/, access: [read] }}
    decision: allow
  - id: run-tool
    exec: {{ path: {tool} }}
    decision: allow
",
            work = f.path("work"),
            other = f.path("other"),
        ),
    );
    env.start_daemon();
    env.add_agent("names-agent", "p.yaml");

    // The status names the mechanism that decides them.
    let status: Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    let row = status["mechanisms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["action"]
                .as_str()
                .unwrap_or("")
                .contains("(operations on names)")
        })
        .unwrap_or_else(|| panic!("no operations-on-names row: {status}"))["mechanism"]
        .as_str()
        .unwrap()
        .to_string();
    let expected = if fmod_ret() {
        "fmod_ret/security_path_*"
    } else {
        "lsm/path_*"
    };
    assert!(row.starts_with(expected), "{row}");

    // A rename inside the work directory: allowed, recorded with both
    // names and the hook.
    let moved = f.path("work/evil2");
    let out = probe_joined(&env, "names-agent", &["rename", &evil, &moved]);
    assert_eq!(stdout(&out), "ok", "{out:?}");
    let e = env.wait_for_evidence("the allowed rename", |e| {
        e["action"] == "rename" && e["target"] == moved.as_str()
    });
    assert_eq!(e["decision"], "allow", "{e}");
    assert_eq!(e["details"]["old_path"], evil.as_str(), "{e}");
    assert_eq!(e["details"]["hook"], name_hook("rename"), "{e}");

    // Over the exec-allowed binary: rename(2) fails with EPERM, the exec
    // never comes, both files are where they were.
    let out = probe_joined(
        &env,
        "names-agent",
        &["rename-exec", &moved, &tool, &marker],
    );
    not_killed(&out);
    assert_eq!(
        stdout(&out),
        format!("rename errno={}", libc::EPERM),
        "{out:?}"
    );
    assert!(!Path::new(&marker).exists(), "the renamed binary ran");
    assert!(Path::new(&moved).exists(), "the old name is gone");
    assert_eq!(
        std::fs::read(&tool).unwrap(),
        std::fs::read("/usr/bin/true").unwrap(),
        "the allowed binary was replaced"
    );
    let e = env.wait_for_evidence("the refused rename", |e| {
        e["action"] == "rename" && e["target"] == tool.as_str()
    });
    assert_eq!(e["decision"], "deny", "{e}");
    assert_eq!(e["method"], deny_method(), "{e}");
    assert_eq!(e["rule_id"], "default-deny", "{e}");
    assert_eq!(e["details"]["old_path"], moved.as_str(), "{e}");
    assert_eq!(e["details"]["new_path"], tool.as_str(), "{e}");
    assert_eq!(e["details"]["old_rule"], "work", "{e}");
    assert_eq!(e["details"]["new_rule"], "default-deny", "{e}");
    assert_eq!(e["details"]["hook"], name_hook("rename"), "{e}");

    // A link of a file it may only read into the writable directory:
    // link(2) fails with EPERM, the new name never exists, nothing read.
    let copy = f.path("work/copy.txt");
    let out = probe_joined(&env, "names-agent", &["link-read", &secret, &copy]);
    not_killed(&out);
    assert_eq!(
        stdout(&out),
        format!("link errno={}", libc::EPERM),
        "{out:?}"
    );
    assert!(!Path::new(&copy).exists(), "the link was made");
    let e = env.wait_for_evidence("the refused link", |e| {
        e["action"] == "link" && e["target"] == copy.as_str()
    });
    assert_eq!(e["decision"], "deny", "{e}");
    assert_eq!(e["method"], deny_method(), "{e}");
    // The old name decides: no rule lets the agent write other/.
    assert_eq!(e["rule_id"], "default-deny", "{e}");
    assert_eq!(e["details"]["old_path"], secret.as_str(), "{e}");
    assert_eq!(e["details"]["new_path"], copy.as_str(), "{e}");
    assert_eq!(e["details"]["old_rule"], "default-deny", "{e}");
    assert_eq!(e["details"]["new_rule"], "work", "{e}");
    assert_eq!(e["details"]["hook"], name_hook("link"), "{e}");

    // Operations on one name in the read-only directory: EPERM, unchanged.
    let victim = f.write("other/victim", "content");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dir = f.path("other/newdir");
    let sock = f.path("other/sock");
    for (op, path, hook) in [
        ("unlink", victim.as_str(), "unlink"),
        ("chmod", victim.as_str(), "chmod"),
        ("truncate", victim.as_str(), "truncate"),
        ("mkdir", dir.as_str(), "mkdir"),
        ("bind", sock.as_str(), "mknod"),
    ] {
        let out = probe_joined(&env, "names-agent", &["op", op, path]);
        not_killed(&out);
        assert_eq!(
            stdout(&out),
            format!("errno={}", libc::EPERM),
            "{op}: {out:?}"
        );
        let e = env.wait_for_evidence(&format!("the refused {op}"), |e| {
            e["kind"] == "decision" && e["action"] == op && e["target"] == path
        });
        assert_eq!(e["decision"], "deny", "{e}");
        assert_eq!(e["method"], deny_method(), "{e}");
        assert_eq!(e["rule_id"], "default-deny", "{e}");
        assert_eq!(e["details"]["path"], path, "{e}");
        assert_eq!(e["details"]["hook"], name_hook(hook), "{e}");
    }
    let meta = std::fs::metadata(&victim).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o644,
        "chmod took effect"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "content");
    assert!(!Path::new(&dir).exists(), "mkdir took effect");
    assert!(!Path::new(&sock).exists(), "bind made the socket file");

    // The same in the writable directory: allowed and recorded.
    let made = f.path("work/newdir");
    let out = probe_joined(&env, "names-agent", &["op", "mkdir", &made]);
    assert_eq!(stdout(&out), "ok", "{out:?}");
    let e = env.wait_for_evidence("the allowed mkdir", |e| {
        e["action"] == "mkdir" && e["target"] == made.as_str()
    });
    assert_eq!(e["decision"], "allow", "{e}");
    assert_eq!(e["rule_id"], "work", "{e}");

    // One decision per operation, by the hook (no sys_exit entry too).
    let unlinks: Vec<Value> = env
        .evidence()
        .into_iter()
        .filter(|e| e["kind"] == "decision" && e["action"] == "unlink")
        .collect();
    assert_eq!(unlinks.len(), 1, "{unlinks:#?}");

    // Outside the agent the same unlink is not decided.
    let out = Command::new(warden_tests::probe_bin())
        .args(["op", "unlink", &victim])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "ok", "{out:?}");
    assert!(!Path::new(&victim).exists());
    assert_eq!(
        env.evidence()
            .iter()
            .filter(|e| e["action"] == "unlink")
            .count(),
        1,
        "an outsider's unlink was recorded"
    );
    assert!(env.ok(&["log", "verify"]).contains("intact"));
    // The verifier's cost of the hooks, as logged at load (BPF LSM; shown
    // with --nocapture).
    for line in env.daemon_log().lines() {
        if line.contains("verified_insns") && line.contains("warden_lsm_") {
            eprintln!("{line}");
        }
    }
}

/// A `hold` rule on a name (here: writing into `held/`) holds a rename
/// into it under BPF LSM / fmod_ret: the thread stops inside rename(2)
/// before anything changed (both names as they were, the approval lists
/// the rename and its new name); approved, the restarted rename succeeds
/// (the file moved, recorded as approved/executed); rejected, it fails
/// with EPERM and nothing moved (recorded as rejected/refused). An
/// adopted agent, as in the test above.
#[test]
fn held_rename_proceeds_when_approved_and_fails_with_eperm_when_rejected() {
    if !in_vm("lsm_hold_rename") {
        return;
    }
    let mut env = TestEnv::new("lsmholdname");
    let f = Files::new(&env);
    std::fs::create_dir_all(f.path("held")).unwrap();
    let first = f.write("work/first", "FIRST");
    let second = f.write("work/second", "SECOND");
    start_hold_agent(
        &mut env,
        &format!(
            "{RUNTIME_FILES}
  - id: work
    file: {{ prefix: {work}/, access: [read, write] }}
    decision: allow
  - id: held-dir
    file: {{ prefix: {held}/, access: [write] }}
    decision: hold
",
            work = f.path("work"),
            held = f.path("held"),
        ),
    );
    let spawn = |from: &str, to: &str| {
        Command::new(warden_tests::probe_bin())
            .arg("join")
            .arg(env.agent_cgroup("hold-agent"))
            .args(["rename", from, to])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // Approved: the stopped rename restarts and moves the file.
    let to = f.path("held/first");
    let child = spawn(&first, &to);
    let pending = warden_tests::wait_held(
        &env,
        warden_tests::command_of(child.id()),
        &['T'],
        "the rename is held",
    );
    assert_eq!(pending["job"]["action"], "rename", "{pending}");
    assert_eq!(pending["job"]["target"], to.as_str(), "{pending}");
    assert!(
        Path::new(&first).exists() && !Path::new(&to).exists(),
        "moved while held"
    );
    let id = pending["id"].as_u64().unwrap().to_string();
    assert!(env.ok(&["approve", &id]).contains("approved"));
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "ok", "{out:?}");
    assert!(!Path::new(&first).exists());
    assert_eq!(std::fs::read_to_string(&to).unwrap(), "FIRST");
    let hold = env.wait_for_evidence("the hold", |e| {
        e["kind"] == "hold" && e["action"] == "rename" && e["target"] == to.as_str()
    });
    assert_eq!(hold["rule_id"], "held-dir", "{hold}");
    assert_eq!(hold["details"]["hook"], name_hook("rename"), "{hold}");
    let outcome = env.wait_for_evidence("the approved rename", |e| {
        e["kind"] == "decision" && e["action"] == "rename" && e["method"] == "approved"
    });
    assert_eq!(outcome["decision"], "allow", "{outcome}");
    assert_eq!(outcome["target"], to.as_str(), "{outcome}");
    assert_eq!(outcome["details"]["final_status"], "executed", "{outcome}");
    assert_eq!(outcome["details"]["job_hash"], hold["details"]["job_hash"]);

    // Rejected: the restarted rename fails with EPERM; nothing moved.
    let to = f.path("held/second");
    let child = spawn(&second, &to);
    let pending = warden_tests::wait_held(
        &env,
        warden_tests::command_of(child.id()),
        &['T'],
        "the rename is held",
    );
    let id = pending["id"].as_u64().unwrap().to_string();
    assert!(env.ok(&["reject", &id]).contains("rejected"));
    let out = child.wait_with_output().unwrap();
    not_killed(&out);
    assert_eq!(
        stdout(&out),
        format!("rename errno={}", libc::EPERM),
        "{out:?}"
    );
    assert_eq!(std::fs::read_to_string(&second).unwrap(), "SECOND");
    assert!(
        !Path::new(&to).exists(),
        "the rejected rename moved the file"
    );
    let refused = env.wait_for_evidence("the rejected rename", |e| {
        e["kind"] == "decision" && e["action"] == "rename" && e["method"] == "rejected"
    });
    assert_eq!(refused["decision"], "deny", "{refused}");
    assert_eq!(refused["details"]["final_status"], "refused", "{refused}");
    assert!(env.ok(&["log", "verify"]).contains("intact"));
}

/// The hook of an operation decided at an inode hook (`inode_*`, or its
/// `security_inode_*` function).
fn inode_hook(op: &str) -> String {
    if fmod_ret() {
        format!("fmod_ret/security_inode_{op}")
    } else {
        format!("lsm/inode_{op}")
    }
}

/// The value of the extended attribute `name` of `path`, `None` if absent.
fn xattr(path: &str, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings and a buffer of the length passed.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

fn set_xattr(path: &str, name: &str, value: &[u8]) {
    let p = std::ffi::CString::new(path).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings and a value of the length passed.
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {path} {name}: {}",
        std::io::Error::last_os_error()
    );
}

/// A file with `user.keep` set and an mtime of 1 January 2000 (the test
/// process's, outside any agent).
fn prepared(f: &Files, rel: &str) -> String {
    let path = f.write(rel, "content");
    set_xattr(&path, "user.keep", b"k");
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(946_684_800))
        .unwrap();
    path
}

fn mtime(path: &str) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// Unmounts (lazily) on drop: the test's bind mount goes on every path.
struct Unmount(String);
impl Drop for Unmount {
    fn drop(&mut self) {
        let p = std::ffi::CString::new(self.0.as_str()).unwrap();
        // SAFETY: a valid C string; MNT_DETACH of our own mount.
        unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
    }
}

/// setxattr, removexattr, POSIX ACLs and utime (issue #15 §3) have no
/// `path_*` hook: their `inode_*` hooks (BPF LSM) or `security_inode_*`
/// functions (fmod_ret) carry a dentry and no mount, and the name is
/// decided as a `write` under every mount of the file's super block that
/// shows it. From inside an agent, in a directory it may only read:
/// setxattr, fsetxattr (through a descriptor), removexattr, a POSIX ACL,
/// utimes, utimensat and futimens all fail with EPERM, the attributes and
/// the mtime are unchanged, and each is recorded once with the rule, the
/// path and the hook. In its writable directory (on the guest's overlayfs
/// /tmp, whose inner calls on the upper layer are not decided again) the
/// same succeed, recorded as allowed. A bind mount of the read-only
/// directory inside the writable one (a second mount of the same super
/// block, whose own path is writable) is refused, recorded with the
/// read-only path that decided.
#[test]
fn inode_operations_fail_with_eperm_under_every_mount_of_the_file() {
    if !in_vm("lsm_inode_ops") {
        return;
    }
    let mut env = TestEnv::new("lsminode");
    let f = Files::new(&env);
    std::fs::create_dir_all(f.path("work/view")).unwrap();
    std::fs::create_dir_all(f.path("other")).unwrap();
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1
rules:{RUNTIME_FILES}
  - id: work
    file: {{ prefix: {work}/, access: [read, write] }}
    decision: allow
  - id: other-read
    file: {{ prefix: {other}/, access: [read] }}
    decision: allow
",
            work = f.path("work"),
            other = f.path("other"),
        ),
    );
    env.start_daemon();
    env.add_agent("inode-agent", "p.yaml");

    // In the read-only directory: EPERM, nothing changed, one entry each.
    let before = mtime(&prepared(&f, "other/probe-mtime"));
    for (op, action, hook) in [
        ("setxattr", "setxattr", "setxattr"),
        ("fsetxattr", "setxattr", "setxattr"),
        ("removexattr", "removexattr", "removexattr"),
        ("setacl", "setxattr", "set_acl"),
        ("utime", "utime", "setattr"),
        ("utimensat", "utime", "setattr"),
        ("futimens", "utime", "setattr"),
    ] {
        let path = prepared(&f, &format!("other/{op}"));
        let out = probe_joined(&env, "inode-agent", &["op", op, &path]);
        not_killed(&out);
        assert_eq!(
            stdout(&out),
            format!("errno={}", libc::EPERM),
            "{op}: {out:?}"
        );
        assert_eq!(xattr(&path, "user.w"), None, "{op} set the xattr");
        assert_eq!(
            xattr(&path, "user.keep").as_deref(),
            Some(&b"k"[..]),
            "{op}"
        );
        assert_eq!(mtime(&path), before, "{op} changed the times");
        let e = env.wait_for_evidence(&format!("the refused {op}"), |e| {
            e["kind"] == "decision" && e["action"] == action && e["target"] == path.as_str()
        });
        assert_eq!(e["decision"], "deny", "{e}");
        assert_eq!(e["method"], deny_method(), "{e}");
        assert_eq!(e["rule_id"], "default-deny", "{e}");
        assert_eq!(e["details"]["path"], path.as_str(), "{e}");
        assert_eq!(e["details"]["hook"], inode_hook(hook), "{e}");
        let n = env
            .evidence()
            .iter()
            .filter(|e| {
                e["kind"] == "decision" && e["action"] == action && e["target"] == path.as_str()
            })
            .count();
        assert_eq!(n, 1, "{op}: one decision per operation");
    }
    // The ACL did not change the mode bits either.
    let acl = f.path("other/setacl");
    assert_eq!(xattr(&acl, "system.posix_acl_access"), None);

    // In the writable directory: done, recorded as allowed.
    for (op, action, hook) in [
        ("setxattr", "setxattr", "setxattr"),
        ("removexattr", "removexattr", "removexattr"),
        ("utimensat", "utime", "setattr"),
    ] {
        let path = prepared(&f, &format!("work/{op}"));
        let out = probe_joined(&env, "inode-agent", &["op", op, &path]);
        assert_eq!(stdout(&out), "ok", "{op}: {out:?}");
        let e = env.wait_for_evidence(&format!("the allowed {op}"), |e| {
            e["kind"] == "decision" && e["action"] == action && e["target"] == path.as_str()
        });
        assert_eq!(e["decision"], "allow", "{e}");
        assert_eq!(e["rule_id"], "work", "{e}");
        assert_eq!(e["details"]["hook"], inode_hook(hook), "{e}");
    }
    assert_eq!(
        xattr(&f.path("work/setxattr"), "user.w").as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(xattr(&f.path("work/removexattr"), "user.keep"), None);
    assert_eq!(
        mtime(&f.path("work/utimensat")),
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000)
    );

    // A second view of the read-only directory, bind-mounted at a path
    // the agent may write: still refused, by the read-only path.
    let view = f.path("work/view");
    let target = prepared(&f, "other/bound");
    let status = Command::new("mount")
        .args(["--bind", &f.path("other"), &view])
        .status()
        .unwrap();
    assert!(status.success(), "mount --bind");
    let _unmount = Unmount(view.clone());
    let through = format!("{view}/bound");
    for op in ["setxattr", "utimensat"] {
        let out = probe_joined(&env, "inode-agent", &["op", op, &through]);
        not_killed(&out);
        assert_eq!(
            stdout(&out),
            format!("errno={}", libc::EPERM),
            "{op} through the bind mount: {out:?}"
        );
    }
    assert_eq!(xattr(&target, "user.w"), None, "set through the bind mount");
    assert_eq!(
        mtime(&target),
        before,
        "times changed through the bind mount"
    );
    env.wait_for_evidence("the refusals through the bind mount", |e| {
        e["kind"] == "decision" && e["action"] == "utime" && e["target"] == target.as_str()
    });
    let refused: Vec<Value> = env
        .evidence()
        .into_iter()
        .filter(|e| e["kind"] == "decision" && e["target"] == target.as_str())
        .collect();
    assert_eq!(refused.len(), 2, "{refused:#?}");
    for e in &refused {
        assert_eq!(e["decision"], "deny", "{e}");
        assert_eq!(e["rule_id"], "default-deny", "{e}");
    }

    // Outside the agent the same setxattr is not decided.
    let outside = prepared(&f, "other/outside");
    let out = Command::new(warden_tests::probe_bin())
        .args(["op", "setxattr", &outside])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "ok", "{out:?}");
    assert!(!env
        .evidence()
        .iter()
        .any(|e| e["target"] == outside.as_str()));
    assert!(env.ok(&["log", "verify"]).contains("intact"));
    // The verifier's cost and the daemon's start-up (its first line, then
    // each inode hook loaded or attached), shown with --nocapture.
    let log = env.daemon_log();
    eprintln!("{}", log.lines().next().unwrap_or_default());
    for line in log.lines() {
        if (line.contains("verified_insns") || line.contains("fmod_ret attached"))
            && (line.contains("setxattr") || line.contains("setattr"))
        {
            eprintln!("{line}");
        }
    }
}

/// Processes in their own mount namespaces (`unshare -m`), kept alive
/// during the check; killed (only they) on every path.
struct Namespaces(Vec<Child>);
impl Drop for Namespaces {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The inode hooks decide under every mount of the file's super block, but
/// only those of the acting process's mount namespace count (issue #15
/// section 3): a host where systemd services each hold a mount of the root
/// file system in their own namespace must not refuse every `touch` of an
/// agent. 12 processes (3x the walked bound, `MAX_SB_MOUNTS` = 4), each in
/// its own mount namespace (a copy of every mount, so 12 more mounts of
/// the test directory's super block) with the read-only directory
/// bind-mounted at a writable path there too (24 more), are alive during
/// the check: from inside the agent, setxattr and utimensat in the
/// writable directory still succeed, recorded as allowed by the writable
/// rule, and in the read-only directory still fail with EPERM, nothing
/// changed, recorded as refused by `default-deny` with no
/// `too_many_mounts` flag.
#[test]
fn inode_operations_skip_the_mounts_of_other_namespaces() {
    if !in_vm("lsm_inode_other_namespaces") {
        return;
    }
    let mut env = TestEnv::new("lsmmntns");
    let f = Files::new(&env);
    std::fs::create_dir_all(f.path("work/view")).unwrap();
    std::fs::create_dir_all(f.path("other")).unwrap();
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1
rules:{RUNTIME_FILES}
  - id: work
    file: {{ prefix: {work}/, access: [read, write] }}
    decision: allow
  - id: other-read
    file: {{ prefix: {other}/, access: [read] }}
    decision: allow
",
            work = f.path("work"),
            other = f.path("other"),
        ),
    );
    env.start_daemon();
    env.add_agent("mntns-agent", "p.yaml");

    let mut spaces = Namespaces(Vec::new());
    for _ in 0..12 {
        let mut child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "/bin/sh", "-c"])
            .arg(format!(
                "mount --bind '{}' '{}' && echo ready && exec sleep 600",
                f.path("other"),
                f.path("work/view")
            ))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        spaces.0.push(child);
        assert_eq!(line.trim(), "ready", "unshare -m and mount --bind");
    }
    let dev = std::fs::metadata(f.path("work")).unwrap();
    let mounts = spaces
        .0
        .iter()
        .map(|c| {
            let info = std::fs::read_to_string(format!("/proc/{}/mountinfo", c.id())).unwrap();
            let major_minor = format!(
                " {}:{} ",
                libc::major(std::os::unix::fs::MetadataExt::dev(&dev)),
                libc::minor(std::os::unix::fs::MetadataExt::dev(&dev))
            );
            info.lines().filter(|l| l.contains(&major_minor)).count()
        })
        .sum::<usize>();
    assert!(
        mounts >= 24,
        "other namespaces hold {mounts} mounts of the test file system"
    );
    eprintln!("mounts of the test file system in other namespaces: {mounts}");

    // Writable directory: done, recorded as allowed.
    for (op, action) in [("setxattr", "setxattr"), ("utimensat", "utime")] {
        let path = prepared(&f, &format!("work/{op}"));
        let out = probe_joined(&env, "mntns-agent", &["op", op, &path]);
        assert_eq!(stdout(&out), "ok", "{op}: {out:?}");
        let e = env.wait_for_evidence(&format!("the allowed {op}"), |e| {
            e["kind"] == "decision" && e["action"] == action && e["target"] == path.as_str()
        });
        assert_eq!(e["decision"], "allow", "{e}");
        assert_eq!(e["rule_id"], "work", "{e}");
    }
    assert_eq!(
        xattr(&f.path("work/setxattr"), "user.w").as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        mtime(&f.path("work/utimensat")),
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000)
    );

    // Read-only directory: EPERM, unchanged, refused by the rules.
    for (op, action) in [("setxattr", "setxattr"), ("utimensat", "utime")] {
        let path = prepared(&f, &format!("other/{op}"));
        let before = mtime(&path);
        let out = probe_joined(&env, "mntns-agent", &["op", op, &path]);
        not_killed(&out);
        assert_eq!(
            stdout(&out),
            format!("errno={}", libc::EPERM),
            "{op}: {out:?}"
        );
        assert_eq!(xattr(&path, "user.w"), None, "{op} set the xattr");
        assert_eq!(mtime(&path), before, "{op} changed the times");
        let e = env.wait_for_evidence(&format!("the refused {op}"), |e| {
            e["kind"] == "decision" && e["action"] == action && e["target"] == path.as_str()
        });
        assert_eq!(e["decision"], "deny", "{e}");
        assert_eq!(e["rule_id"], "default-deny", "{e}");
        assert_eq!(e["details"]["path"], path.as_str(), "{e}");
        assert!(!e["details"].to_string().contains("too_many_mounts"), "{e}");
    }
    drop(spaces);
    assert!(env.ok(&["log", "verify"]).contains("intact"));
    let log = env.daemon_log();
    eprintln!("{}", log.lines().next().unwrap_or_default());
    for line in log.lines() {
        if (line.contains("verified_insns") || line.contains("fmod_ret attached"))
            && (line.contains("setxattr") || line.contains("setattr"))
        {
            eprintln!("{line}");
        }
    }
}

/// Packet sockets never reach the cgroup `sock_create` hook (inet only);
/// with BPF LSM (`socket_create`) or fmod_ret (`security_socket_create`)
/// they are refused at creation for every agent, here an adopted cgroup
/// whose root process has `CAP_NET_RAW` and whose policy allows raw
/// sockets: `AF_PACKET` and `AF_INET`/`SOCK_PACKET` fail with EPERM and
/// are recorded; the allowed raw socket is decided once, by the cgroup
/// hook; outside any agent root opens a packet socket, unrecorded.
#[test]
fn packet_sockets_fail_with_eperm_for_an_adopted_agent() {
    if !in_vm("lsm_packet") {
        return;
    }
    let mut env = TestEnv::new("lsmpacket");
    env.write_policy(
        "p.yaml",
        "version: 1
rules:
  - id: ping
    socket: { kind: raw }
    decision: allow
",
    );
    env.start_daemon();
    env.add_agent("packet-agent", "p.yaml");

    let status: Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    let row = status["mechanisms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["action"] == "network: packet sockets (AF_PACKET, SOCK_PACKET)")
        .unwrap_or_else(|| panic!("no packet row: {status}"))["mechanism"]
        .as_str()
        .unwrap()
        .to_string();
    let expected = if fmod_ret() {
        "fmod_ret/security_socket_create"
    } else {
        "lsm/socket_create"
    };
    assert!(row.starts_with(expected), "{row}");

    // AF_PACKET/SOCK_RAW, and AF_INET/SOCK_PACKET (the kernel makes it an
    // AF_PACKET socket before the hook).
    for (args, target) in [
        (["17", "3", "768"], "packet packet raw protocol=768"),
        (["2", "10", "768"], "packet packet packet protocol=768"),
    ] {
        let mut probe = vec!["socket"];
        probe.extend_from_slice(&args);
        let out = probe_joined(&env, "packet-agent", &probe);
        not_killed(&out);
        assert_eq!(
            stdout(&out),
            format!("errno={}", libc::EPERM),
            "socket {args:?}: {out:?}"
        );
        let e = env.wait_for_evidence(target, |e| {
            e["kind"] == "decision" && e["agent"] == "packet-agent" && e["target"] == target
        });
        assert_eq!(e["action"], "socket", "{e}");
        assert_eq!(e["decision"], "deny", "{e}");
        assert_eq!(e["method"], deny_method(), "{e}");
        assert_eq!(e["rule_id"], "default-deny", "{e}");
        assert_eq!(e["details"]["family"], 17, "{e}");
    }

    // A raw inet socket: allowed by the rule, decided by the cgroup hook
    // alone (one entry).
    let out = probe_joined(&env, "packet-agent", &["socket", "2", "3", "1"]);
    assert_eq!(stdout(&out), "ok", "{out:?}");
    let e = env.wait_for_evidence("the allowed raw socket", |e| {
        e["kind"] == "decision" && e["target"] == "raw inet raw protocol=1"
    });
    assert_eq!(e["rule_id"], "ping", "{e}");
    let raws = env
        .evidence()
        .into_iter()
        .filter(|e| e["kind"] == "decision" && e["target"] == "raw inet raw protocol=1")
        .count();
    assert_eq!(raws, 1);

    // Outside every agent: root's packet socket is created, not recorded.
    let out = Command::new(warden_tests::probe_bin())
        .args(["socket", "17", "3", "768"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "ok", "outside: {out:?}");
    let packets = env
        .evidence()
        .into_iter()
        .filter(|e| e["kind"] == "decision" && e["details"]["family"] == 17)
        .count();
    assert_eq!(packets, 2, "only the agent's two attempts are recorded");

    // `socket: { kind: packet }` allows them at the same hook: the socket
    // is made, recorded as allowed by that rule.
    env.write_policy(
        "p.yaml",
        "version: 1
rules:
  - id: ping
    socket: { kind: raw }
    decision: allow
  - id: sniff
    socket: { kind: packet }
    decision: allow
",
    );
    env.ok(&["policy", "reload"]);
    let out = probe_joined(&env, "packet-agent", &["socket", "17", "3", "768"]);
    assert_eq!(stdout(&out), "ok", "allowed by the rule: {out:?}");
    let e = env.wait_for_evidence("the allowed packet socket", |e| {
        e["kind"] == "decision" && e["details"]["family"] == 17 && e["decision"] == "allow"
    });
    assert_eq!(e["rule_id"], "sniff", "{e}");
    assert_eq!(e["target"], "packet packet raw protocol=768", "{e}");
}

/// Opens per cached read step: enough repeats that most are cache hits.
const REPEATS: u64 = 200;

/// The decision cache's policy: `public/` readable, everything below the
/// test's root writable (renames are writes), the probe executable.
fn cache_policy(f: &Files) -> String {
    format!(
        "version: 1
rules:{RUNTIME_FILES}
  - id: read-public
    file: {{ prefix: {public}/, access: [read] }}
    decision: allow
  - id: write-anywhere-here
    file: {{ prefix: {root}/, access: [write] }}
    decision: allow
  - id: probe
    exec: {{ path: {probe} }}
    decision: allow
",
        public = f.path("public"),
        root = f.path("").trim_end_matches('/'),
        probe = probe_path(),
    )
}

fn cache_env(name: &str, agent: &str) -> (TestEnv, Files) {
    let mut env = TestEnv::new(name);
    let f = Files::new(&env);
    env.write_policy("cache.yaml", &cache_policy(&f));
    // Summaries every second, so the counted repeats show up quickly.
    env.start_daemon_with(&[("WARDEN_SUMMARY_SECS", "1")]);
    env.add_agent(agent, "cache.yaml");
    (env, f)
}

/// Reads `path` REPEATS times in the scripted process, and checks that the
/// open hook decided some of them from the cache (the kernel's counter
/// moved).
fn read_cached(env: &TestEnv, agent: &mut Scripted, path: &str, content: &str) {
    let before = cache_hits(env);
    assert_eq!(
        agent.step(&format!("read {path} {REPEATS}")).as_deref(),
        Some(format!("ok {REPEATS} {content}").as_str()),
        "allowed reads of {path}"
    );
    let hits = cache_hits(env) - before;
    assert!(
        hits >= REPEATS / 2,
        "{REPEATS} reads of {path} by one process: only {hits} decided from the cache"
    );
}

/// The next open of `path` fails with EPERM (the process lives on) and is
/// recorded as a denial by the open hook, by default.
fn open_denied(env: &TestEnv, agent: &mut Scripted, path: &str) {
    assert_eq!(
        agent.step(&format!("read {path} 1")),
        Some(format!("errno={}", libc::EPERM)),
        "open of {path}"
    );
    let e = env.wait_for_evidence(&format!("denied open of {path}"), |e| {
        e["kind"] == "decision"
            && e["action"] == "open"
            && e["target"] == path
            && e["decision"] == "deny"
    });
    assert_eq!(e["method"], deny_method(), "{e}");
    assert_eq!(e["rule_id"], "default-deny", "{e}");
}

/// Unmounts what the test bind-mounted, on every path out of it.
struct BindMount(String);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The decision cache under BPF LSM and fmod_ret, from one agent process:
/// a repeat is decided from it (`cache_hits` moves), and every other way
/// to put a cached file at a denied path makes the next open a walk again,
/// denied with EPERM and recorded: its directory renamed by the agent and
/// by an outsider (the epoch moves on at `fexit` of `vfs_rename`,
/// `cache_epoch.rs`), a hard link (a file with two names is never decided
/// from the cache), a bind mount. One test, so the guest boots start one
/// daemon for all of it.
#[test]
fn cached_opens_are_decided_afresh_after_a_rename_a_hard_link_or_a_bind_mount() {
    if !in_vm("lsm_cache") {
        return;
    }
    let (env, f) = cache_env("lsmcache", "cache-agent");
    let text = env.ok(&["status"]);
    assert!(
        text.contains("fexit of vfs_rename"),
        "the status names the cache's epoch programs: {text}"
    );
    std::fs::create_dir_all(f.path("public/by-agent")).unwrap();
    std::fs::create_dir_all(f.path("public/by-outsider")).unwrap();
    let mine = f.write("public/by-agent/f.txt", "MINE");
    let theirs = f.write("public/by-outsider/f.txt", "THEIRS");
    let mut agent = Scripted::start(&env, "cache-agent");

    // The agent moves its own directory (a write, allowed), then opens the
    // file under the new, unreadable name.
    read_cached(&env, &mut agent, &mine, "MINE");
    let moved = f.path("other/by-agent");
    assert_eq!(
        agent
            .step(&format!("rename {} {moved}", f.path("public/by-agent")))
            .as_deref(),
        Some("ok")
    );
    open_denied(&env, &mut agent, &format!("{moved}/f.txt"));

    // Someone outside the agent moves the directory under the same
    // process's cached allow.
    read_cached(&env, &mut agent, &theirs, "THEIRS");
    let moved = f.path("other/by-outsider");
    std::fs::rename(f.path("public/by-outsider"), &moved).unwrap();
    open_denied(&env, &mut agent, &format!("{moved}/f.txt"));

    // Moved back: readable again, and cached again (nothing is stuck).
    std::fs::rename(&moved, f.path("public/by-outsider")).unwrap();
    read_cached(&env, &mut agent, &theirs, "THEIRS");

    // A hard link at a denied path.
    let linked = f.write("public/h.txt", "LINKED");
    read_cached(&env, &mut agent, &linked, "LINKED");
    let link = f.path("other/h-link.txt");
    std::fs::hard_link(&linked, &link).unwrap();
    // Still allowed through its allowed name, but walked every time.
    let before = cache_hits(&env);
    assert_eq!(
        agent.step(&format!("read {linked} {REPEATS}")).as_deref(),
        Some(format!("ok {REPEATS} LINKED").as_str())
    );
    assert_eq!(
        cache_hits(&env),
        before,
        "a file with two names was decided from the cache"
    );
    open_denied(&env, &mut agent, &link);

    // The directory, and so the same inode, mounted where reads are denied.
    std::fs::create_dir_all(f.path("public/dir")).unwrap();
    let bound = f.write("public/dir/b.txt", "BOUND");
    read_cached(&env, &mut agent, &bound, "BOUND");
    let at = f.path("other/mnt");
    std::fs::create_dir_all(&at).unwrap();
    let status = Command::new("mount")
        .args(["--bind", &f.path("public/dir"), &at])
        .status()
        .unwrap();
    assert!(status.success(), "mount --bind");
    let _mounted = BindMount(at.clone());
    open_denied(&env, &mut agent, &format!("{at}/b.txt"));
    drop(agent);
    assert!(env.ok(&["log", "verify"]).contains("intact"));
}

/// The decision entries and summed summary counts of `target`'s `action`.
fn firsts_and_counted(env: &TestEnv, action: &str, target: &str) -> (Vec<Value>, u64, u64) {
    let entries: Vec<Value> = env
        .evidence()
        .into_iter()
        .filter(|e| e["action"] == action && e["target"] == target)
        .collect();
    let firsts = entries.iter().filter(|e| e["kind"] == "decision").count() as u64;
    let counted = entries
        .iter()
        .filter(|e| e["kind"] == "summary")
        .map(|e| e["details"]["count"].as_u64().unwrap())
        .sum();
    (entries, firsts, counted)
}

/// Repeated identical EPERM denials of an open and of an exec by one
/// process: each refused every time, recorded as its first decision and
/// then counted in summaries (`evidence: { denied: first-then-count }`, the
/// default), which add up to every attempt.
#[test]
fn repeated_open_and_exec_denials_are_a_first_and_a_counted_summary() {
    if !in_vm("lsm_repeated_denials") {
        return;
    }
    const TRIES: u64 = 30;
    let (env, f) = cache_env("lsmdenials", "deny-agent");
    let secret = f.write("secret.txt", "SECRET");
    let bin = "/usr/bin/mkdir";
    let mut agent = Scripted::start(&env, "deny-agent");
    for _ in 0..TRIES {
        assert_eq!(
            agent.step(&format!("read {secret} 1")),
            Some(format!("errno={}", libc::EPERM))
        );
        assert_eq!(
            agent.step(&format!("exec {bin}")),
            Some(format!("errno={}", libc::EPERM))
        );
    }
    drop(agent);
    for (action, target) in [("open", secret.as_str()), ("exec", bin)] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let (entries, firsts, counted) = firsts_and_counted(&env, action, target);
            if firsts + counted == TRIES {
                for e in &entries {
                    assert_eq!(e["decision"], "deny", "{e}");
                    assert_eq!(e["rule_id"], "default-deny", "{e}");
                }
                let first = entries.iter().find(|e| e["kind"] == "decision").unwrap();
                assert_eq!(first["method"], deny_method(), "{first}");
                // Repeats were counted, not recorded one by one (a sweep
                // makes the next a new first: a few, not TRIES).
                assert!(counted > 0 && firsts < TRIES / 2, "{entries:#?}");
                break;
            }
            assert!(
                firsts + counted < TRIES && std::time::Instant::now() < deadline,
                "{action} {target}: {firsts} firsts + {counted} counted != {TRIES}: {entries:#?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    assert!(env.ok(&["log", "verify"]).contains("intact"));
}

/// A program name as the kernel keeps it (`BPF_OBJ_NAME_LEN`: 15 bytes).
fn kernel_name(name: &str) -> String {
    name.chars().take(15).collect()
}

/// Where BPF LSM or fmod_ret decides exec, opens, packet sockets and
/// network holds, the daemon does not load the fallback's `sys_exit` and
/// its tail programs at start (their verification was about half of a
/// daemon start in the guest). A thread left marked in `HELD` (a hold
/// mark the fexit has not consumed) still gets `sys_exit` attached: it is
/// loaded then, attached while the mark lasts, detached after.
#[test]
fn sys_exit_is_loaded_only_when_a_hold_mark_needs_it() {
    if !in_vm("lsm_sys_exit_on_demand") {
        return;
    }
    let l = Listener::tcp4();
    let mut env = TestEnv::new("lsmlazy");
    env.write_policy(
        "lazy.yaml",
        &format!(
            "version: 1\nrules:\n  - id: lo\n    connect: {{ to: 127.0.0.1, ports: [{}], protocol: tcp }}\n    decision: allow\n",
            l.port
        ),
    );
    env.start_daemon();
    let fallback = [
        names::PROG_SYS_EXIT,
        names::PROG_PATH_OPS,
        names::PROG_SHADOW_OPEN,
    ]
    .map(kernel_name);
    let loaded = env.daemon_programs();
    // What the daemon does hold: the network programs, and the fexit that
    // stops held network actions here. (It keeps no fd of the fmod_ret
    // programs it loads with bpf(2): their pinned links hold them.)
    let mut held_here = vec![names::PROG_CONNECT4, names::PROG_HOLD_STOP];
    if !fmod_ret() {
        held_here.push(names::PROG_LSM_OPEN);
    }
    for p in held_here {
        assert!(loaded.contains(&kernel_name(p)), "{p}: {loaded:?}");
    }
    for p in &fallback {
        assert!(!loaded.contains(p), "{p} loaded at start: {loaded:?}");
    }
    assert!(!sys_exit_attached(&env));

    // A stop mark for a thread id no thread can have (above the kernel's
    // PID_MAX_LIMIT), as a hold leaves it until the fexit consumes it.
    let held_pin = env.pin_dir().join("maps").join(names::HELD);
    let held = || {
        let data = aya::maps::MapData::from_pin(&held_pin).unwrap();
        aya::maps::Map::HashMap(data)
    };
    const NO_THREAD: u32 = 4_194_305;
    let mut mark = [0u8; 16];
    mark[..4].copy_from_slice(&warden_common::held_state::STOP_AT_EXIT.to_ne_bytes());
    {
        let mut map = held();
        let mut m: aya::maps::HashMap<_, u32, [u8; 16]> =
            aya::maps::HashMap::try_from(&mut map).unwrap();
        m.insert(NO_THREAD, mark, 0).unwrap();
    }
    // The next reconcile sees the mark: sys_exit is loaded and attached.
    env.add_agent("lazy-agent", "lazy.yaml");
    // Generous: verifying sys_exit under TCG takes tens of seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    while !sys_exit_attached(&env) {
        assert!(
            std::time::Instant::now() < deadline,
            "sys_exit not attached for the mark:\n{}",
            env.daemon_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let loaded = env.daemon_programs();
    for p in &fallback {
        assert!(
            loaded.contains(p),
            "{p} not loaded on first use: {loaded:?}"
        );
    }
    assert!(env
        .daemon_log()
        .contains("tp_btf/sys_exit loaded on first use"));
    // Decisions go on as before: the agent's connect to loopback passes.
    let out = env.probe_as("lazy-agent", &["connect", &format!("127.0.0.1:{}", l.port)]);
    assert_eq!(stdout(&out), "ok", "{}", warden_tests::stderr(&out));

    // The mark gone, sys_exit is detached again.
    {
        let mut map = held();
        let mut m: aya::maps::HashMap<_, u32, [u8; 16]> =
            aya::maps::HashMap::try_from(&mut map).unwrap();
        m.remove(&NO_THREAD).unwrap();
    }
    env.add_agent("lazy-agent-2", "lazy.yaml");
    wait_until("sys_exit is detached once no thread is marked", || {
        !sys_exit_attached(&env)
    });
}
