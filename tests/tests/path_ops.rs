//! Operations on names beyond rename and link (issue #15 §3), from inside
//! an adopted agent on this kernel (the fallback, without BPF LSM): unlink,
//! mkdir, rmdir, symlink, mknod, chmod, chown, truncate(2), setxattr,
//! utime and binding a unix socket are decided as a `write` of the path at
//! the syscall's exit. In a directory the policy lets the agent write they
//! go ahead and are recorded; in one it may only read, the process is
//! killed before the syscall returns (after the fact: the change is made)
//! and the record names the operation and the path.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::process::Command;

use warden_tests::{can_run, killed, probe_bin, stderr, stdout, Files, TestEnv, RUNTIME_FILES};

/// Every operation, the path it acts on (relative to a directory) and what
/// must exist there first (`None`, a file, or a directory).
const OPS: [(&str, &str, Option<bool>); 11] = [
    ("unlink", "f-unlink", Some(false)),
    ("mkdir", "d-mkdir", None),
    ("rmdir", "d-rmdir", Some(true)),
    ("symlink", "l-symlink", None),
    ("mknod", "p-mknod", None),
    ("chmod", "f-chmod", Some(false)),
    ("chown", "f-chown", Some(false)),
    ("truncate", "f-truncate", Some(false)),
    ("setxattr", "f-setxattr", Some(false)),
    ("utime", "f-utime", Some(false)),
    ("bind", "s-bind", None),
];

fn prepare(dir: &str, name: &str, what: Option<bool>) -> String {
    let path = format!("{dir}/{name}");
    match what {
        Some(true) => std::fs::create_dir_all(&path).unwrap(),
        Some(false) => std::fs::write(&path, "content").unwrap(),
        None => {}
    }
    path
}

#[test]
fn operations_on_names_in_a_read_only_directory_are_killed_and_recorded() {
    if !can_run("path_ops") {
        return;
    }
    let mut env = TestEnv::new("pathops");
    let f = Files::new(&env);
    let work = f.path("work");
    let other = f.path("other");
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1\nrules:{RUNTIME_FILES}
  - id: work
    file: {{ prefix: {work}/, access: [read, write] }}
    decision: allow
  - id: other-read
    file: {{ prefix: {other}/, access: [read] }}
    decision: allow
"
        ),
    );
    env.start_daemon();
    env.add_agent("ops", "p.yaml");
    let cgroup = env.agent_cgroup("ops");
    let probe = |op: &str, path: &str| {
        Command::new(probe_bin())
            .arg("join")
            .arg(&cgroup)
            .args(["op", op, path])
            .output()
            .unwrap()
    };

    for (op, name, what) in OPS {
        // Allowed: a directory the agent may write.
        let allowed = prepare(&work, name, what);
        let out = probe(op, &allowed);
        assert_eq!(stdout(&out), "ok", "{op} in work: {}", stderr(&out));
        let e = env.wait_for_evidence(&format!("allowed {op}"), |e| {
            e["kind"] == "decision" && e["action"] == op && e["target"] == allowed.as_str()
        });
        assert_eq!(e["decision"], "allow", "{e}");
        assert_eq!(e["rule_id"], "work", "{e}");

        // Refused: a directory it may only read. Killed before the
        // syscall returns (the probe never prints), recorded.
        let denied = prepare(&other, name, what);
        let out = probe(op, &denied);
        assert!(killed(&out), "{op} in other: {out:?}");
        assert_eq!(stdout(&out), "", "{op}: the probe went on");
        let e = env.wait_for_evidence(&format!("denied {op}"), |e| {
            e["kind"] == "decision" && e["action"] == op && e["target"] == denied.as_str()
        });
        assert_eq!(e["decision"], "deny", "{e}");
        assert_eq!(e["method"], "kill", "{e}");
        assert_eq!(e["rule_id"], "default-deny", "{e}");
        assert_eq!(e["details"]["path"], denied.as_str(), "{e}");
    }

    // Outside every agent the same operation is not decided.
    let free = prepare(&other, "f-free", Some(false));
    let out = Command::new(probe_bin())
        .args(["op", "unlink", &free])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "ok", "{}", stderr(&out));
    assert!(
        !env.evidence().iter().any(|e| e["target"] == free.as_str()),
        "an outsider's unlink was recorded"
    );
}

#[test]
fn a_relative_name_and_a_directory_fd_are_resolved() {
    if !can_run("path_ops_relative") {
        return;
    }
    let mut env = TestEnv::new("pathopsrel");
    let f = Files::new(&env);
    let other = f.path("other");
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1\nrules:{RUNTIME_FILES}
  - id: other-read
    file: {{ prefix: {other}/, access: [read] }}
    decision: allow
"
        ),
    );
    env.start_daemon();
    env.add_agent("rel", "p.yaml");
    let target = prepare(&other, "victim", Some(false));
    // A relative name from the working directory (unlink(2) of "victim").
    let out = Command::new(probe_bin())
        .current_dir(&other)
        .arg("join")
        .arg(env.agent_cgroup("rel"))
        .args(["op", "unlink", "victim"])
        .output()
        .unwrap();
    assert!(killed(&out), "{out:?}");
    let e = env.wait_for_evidence("the relative unlink", |e| {
        e["kind"] == "decision" && e["action"] == "unlink" && e["target"] == target.as_str()
    });
    assert_eq!(e["decision"], "deny", "{e}");
}

/// The same operations (and rename, link) made through the ia32 syscall
/// table with `int 0x80` from a 64-bit process in the agent: their numbers
/// are other calls in the 64-bit table (10, unlink, is mprotect there), and
/// the probe puts junk in the high half of every argument register, which
/// the kernel ignores. Allowed in the writable directory and recorded with
/// the ia32 number; killed and recorded in the read-only one; not decided
/// outside agents.
#[test]
fn ia32_operations_on_names_are_killed_and_recorded() {
    if !can_run("path_ops_ia32") {
        return;
    }
    let mut env = TestEnv::new("pathops32");
    let f = Files::new(&env);
    let work = f.path("work");
    let other = f.path("other");
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1\nrules:{RUNTIME_FILES}
  - id: work
    file: {{ prefix: {work}/, access: [read, write] }}
    decision: allow
  - id: other-read
    file: {{ prefix: {other}/, access: [read] }}
    decision: allow
"
        ),
    );
    env.start_daemon();
    env.add_agent("ops32", "p.yaml");
    let cgroup = env.agent_cgroup("ops32");
    let probe = |args: &[&str]| {
        Command::new(probe_bin())
            .arg("join")
            .arg(&cgroup)
            .arg("op32")
            .args(args)
            .output()
            .unwrap()
    };
    // (probe op, evidence action, ia32 number, what must exist first)
    let ops: [(&str, &str, u32, Option<bool>); 15] = [
        ("unlink", "unlink", 10, Some(false)),
        ("unlinkat", "unlink", 301, Some(false)),
        ("mkdir", "mkdir", 39, None),
        ("rmdir", "rmdir", 40, Some(true)),
        ("symlink", "symlink", 83, None),
        ("mknod", "mknod", 14, None),
        ("chmod", "chmod", 15, Some(false)),
        ("chown", "chown", 212, Some(false)),
        ("lchown16", "chown", 16, Some(false)),
        ("truncate", "truncate", 92, Some(false)),
        ("truncate64", "truncate", 193, Some(false)),
        ("setxattr", "setxattr", 226, Some(false)),
        ("utime", "utime", 30, Some(false)),
        ("bind", "bind", 361, None),
        ("socketcall-bind", "bind", 102, None),
    ];
    for (i, (op, action, nr, what)) in ops.into_iter().enumerate() {
        let name = format!("{i}-{op}");
        let allowed = prepare(&work, &name, what);
        let out = probe(&[op, &allowed]);
        assert_eq!(stdout(&out), "ok", "ia32 {op} in work: {}", stderr(&out));
        let e = env.wait_for_evidence(&format!("allowed ia32 {op}"), |e| {
            e["kind"] == "decision" && e["action"] == action && e["target"] == allowed.as_str()
        });
        assert_eq!(e["decision"], "allow", "{e}");
        assert_eq!(e["rule_id"], "work", "{e}");
        assert_eq!(e["details"]["syscall_table"], "ia32", "{e}");
        assert_eq!(e["details"]["syscall"], nr, "{e}");

        let denied = prepare(&other, &name, what);
        let out = probe(&[op, &denied]);
        assert!(killed(&out), "ia32 {op} in other: {out:?}");
        assert_eq!(stdout(&out), "", "ia32 {op}: the probe went on");
        let e = env.wait_for_evidence(&format!("denied ia32 {op}"), |e| {
            e["kind"] == "decision" && e["action"] == action && e["target"] == denied.as_str()
        });
        assert_eq!(e["decision"], "deny", "{e}");
        assert_eq!(e["method"], "kill", "{e}");
        assert_eq!(e["rule_id"], "default-deny", "{e}");
        assert_eq!(e["details"]["path"], denied.as_str(), "{e}");
        assert_eq!(e["details"]["syscall_table"], "ia32", "{e}");
        assert_eq!(e["details"]["syscall"], nr, "{e}");
    }

    // rename and link (decided in the `sys_exit` program itself): a file
    // of the writable directory moved or linked into the read-only one.
    for (op, nr) in [("rename", 38), ("link", 9)] {
        let from = prepare(&work, &format!("{op}-from"), Some(false));
        let to = format!("{other}/{op}-to");
        let out = probe(&[op, &from, &to]);
        assert!(killed(&out), "ia32 {op} into other: {out:?}");
        let e = env.wait_for_evidence(&format!("denied ia32 {op}"), |e| {
            e["kind"] == "decision" && e["action"] == op && e["details"]["new_path"] == to.as_str()
        });
        assert_eq!(e["decision"], "deny", "{e}");
        assert_eq!(e["method"], "kill", "{e}");
        assert_eq!(e["details"]["old_path"], from.as_str(), "{e}");
        assert_eq!(e["details"]["new_rule"], "default-deny", "{e}");
        assert_eq!(e["details"]["syscall_table"], "ia32", "{e}");
        assert_eq!(e["details"]["syscall"], nr, "{e}");
        // Within the writable directory: allowed, recorded.
        let from = prepare(&work, &format!("{op}-from2"), Some(false));
        let to = format!("{work}/{op}-to2");
        let out = probe(&[op, &from, &to]);
        assert_eq!(stdout(&out), "ok", "ia32 {op} in work: {}", stderr(&out));
        let e = env.wait_for_evidence(&format!("allowed ia32 {op}"), |e| {
            e["kind"] == "decision" && e["action"] == op && e["details"]["new_path"] == to.as_str()
        });
        assert_eq!(e["decision"], "allow", "{e}");
        assert_eq!(e["details"]["syscall_table"], "ia32", "{e}");
    }

    // Outside every agent the same ia32 call is not decided.
    let free = prepare(&other, "f-free32", Some(false));
    let out = Command::new(probe_bin())
        .args(["op32", "unlink", &free])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "ok", "{}", stderr(&out));
    assert!(
        !env.evidence().iter().any(|e| e["target"] == free.as_str()),
        "an outsider's ia32 unlink was recorded"
    );
    assert!(env.ok(&["log", "verify"]).contains("intact"));
}
