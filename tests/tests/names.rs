//! Files reached by names that are not their path, from inside an agent on
//! this kernel (the fallback, without BPF LSM): an anonymous file executed
//! (memfd + fexecve) and a file opened through a detached mount
//! (`open_tree(OPEN_TREE_CLONE)`). The path walk must not make up a path for
//! them: the exec is its own decision (`anonymous-exec`), the open is
//! unresolved (`unresolved-path`), both killed and recorded with the file's
//! `dev:ino`.
//!
//! Renames and links: both names are decided as writes at the syscall's
//! exit, after it succeeded; a refused one kills the process before its
//! next step (the exec of the renamed binary, the read of the linked file).
//!
//! The agents here are adopted cgroups entered by a plain process (the
//! probe's `join`): `warden run`'s Landlock refuses mounts, and a hostile
//! adopted agent has no such sandbox.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{os::unix::fs::MetadataExt, process::Command};

use warden_tests::{can_run, killed, probe_bin, stdout, Files, TestEnv, RUNTIME_FILES};

/// `dev:ino` as `stat()` reports them, as evidence records identities.
fn identity(path: &str) -> String {
    let m = std::fs::metadata(path).unwrap();
    format!("{}:{}", m.dev(), m.ino())
}

/// Runs the probe inside `agent`'s cgroup, without `warden run`.
fn probe_in(env: &TestEnv, agent: &str, args: &[&str]) -> std::process::Output {
    let cgroup = env.agent_cgroup(agent);
    Command::new(probe_bin())
        .arg("join")
        .arg(&cgroup)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_memfd_exec_is_refused_as_anonymous_even_with_allowed_bytes() {
    if !can_run("memfd_exec") {
        return;
    }
    let mut env = TestEnv::new("memfd");
    let f = Files::new(&env);
    let marker = f.marker("memfd-ran");
    env.write_policy(
        "p.yaml",
        "version: 1
rules:
  - id: run-touch
    exec: { path: /usr/bin/touch }
    decision: allow
",
    );
    env.start_daemon();
    env.add_agent("memfd-agent", "p.yaml");

    // The control: the same binary by its path runs.
    let out = probe_in(&env, "memfd-agent", &["exec", "/usr/bin/touch", &marker]);
    assert!(out.status.success(), "{out:?}");
    assert!(std::path::Path::new(&marker).exists());
    std::fs::remove_file(&marker).unwrap();

    // The same bytes from a memfd: killed before the first instruction.
    let out = probe_in(
        &env,
        "memfd-agent",
        &["memfd-exec", "/usr/bin/touch", &marker],
    );
    assert!(killed(&out), "{out:?}");
    assert!(
        !std::path::Path::new(&marker).exists(),
        "the memfd copy ran"
    );
    let e = env.wait_for_evidence("the memfd exec", |e| {
        e["kind"] == "decision" && e["action"] == "exec" && e["rule_id"] == "anonymous-exec"
    });
    assert_eq!(e["decision"], "deny", "{e}");
    assert_eq!(e["method"], "kill", "{e}");
    assert!(
        e["target"].as_str().unwrap().contains("memfd:warden-probe"),
        "the record names the memfd, not a made-up path: {e}"
    );
    assert!(
        e["details"]["path_flags"].to_string().contains("anonymous"),
        "{e}"
    );
    // The memfd's identity: an inode on the kernel's internal shm mount.
    let binary = e["details"]["binary"].as_str().unwrap();
    let (dev, ino) = binary.split_once(':').unwrap();
    assert!(
        dev.parse::<u64>().is_ok() && ino.parse::<u64>().unwrap() > 0,
        "{e}"
    );
    assert_ne!(binary, identity("/usr/bin/touch"), "{e}");
    assert!(env.ok(&["log", "verify"]).contains("intact"));
}

#[test]
fn an_open_through_a_detached_mount_is_unresolved_not_a_made_up_path() {
    if !can_run("open_tree") {
        return;
    }
    let mut env = TestEnv::new("opentree");
    let f = Files::new(&env);
    std::fs::create_dir_all(f.path("other/secret")).unwrap();
    let secret = f.write("other/secret/key.txt", "SECRET-KEY");
    // Everything readable but the secret directory. Opened through a clone
    // of that directory, the walk used to end at the clone's root and make
    // `/key.txt` of it, which `read-all` allows.
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1
rules:
{RUNTIME_FILES}
  - id: read-all
    file: {{ prefix: /, access: [read] }}
    decision: allow
  - id: no-secret
    file: {{ prefix: {}/, access: [read] }}
    decision: deny
",
            f.path("other/secret")
        ),
    );
    env.start_daemon();
    env.add_agent("tree-agent", "p.yaml");

    // The direct open is denied.
    let out = probe_in(&env, "tree-agent", &["read", &secret]);
    assert!(killed(&out) && out.stdout.is_empty(), "{out:?}");
    env.wait_for_evidence("the direct open", |e| {
        e["action"] == "open" && e["rule_id"] == "no-secret"
    });

    // Through a detached clone of the directory: unresolved, killed.
    let out = probe_in(
        &env,
        "tree-agent",
        &["open-tree", &f.path("other/secret"), "key.txt"],
    );
    assert!(
        !stdout(&out).contains("SECRET"),
        "the secret arrived through the clone: {out:?}"
    );
    assert!(killed(&out), "{out:?}");
    let e = env.wait_for_evidence("the open through the clone", |e| {
        e["kind"] == "decision" && e["action"] == "open" && e["rule_id"] == "unresolved-path"
    });
    assert_eq!(e["decision"], "deny", "{e}");
    assert_eq!(e["method"], "kill", "{e}");
    assert!(
        e["details"]["path_flags"]
            .to_string()
            .contains("detached_mount"),
        "{e}"
    );
    assert_eq!(e["details"]["file"], identity(&secret), "{e}");
    assert!(env.ok(&["log", "verify"]).contains("intact"));
}

/// Policy for the name tests: the work directory is writable and readable,
/// one binary outside it may run, nothing else may be written.
fn names_policy(env: &TestEnv, f: &Files) {
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1
rules:
{RUNTIME_FILES}
  - id: work
    file: {{ prefix: {work}/, access: [read, write] }}
    decision: allow
  - id: run-tool
    exec: {{ path: {tool} }}
    decision: allow
",
            work = f.path("work"),
            tool = f.path("bin/tool"),
        ),
    );
}

#[test]
fn renaming_a_denied_binary_over_an_allowed_one_is_killed_before_the_exec() {
    if !can_run("rename_exec") {
        return;
    }
    let mut env = TestEnv::new("rename");
    let f = Files::new(&env);
    let tool = f.binary("tool", "/usr/bin/true");
    // The agent's copy of a binary it may not run, in its work directory.
    let evil = f.path("work/evil");
    std::fs::copy("/usr/bin/touch", &evil).unwrap();
    let marker = f.marker("evil-ran");
    names_policy(&env, &f);
    env.start_daemon();
    env.add_agent("name-agent", "p.yaml");

    // A rename inside the work directory is allowed, and recorded.
    let moved = f.path("work/evil2");
    let out = probe_in(&env, "name-agent", &["rename", &evil, &moved]);
    assert_eq!(stdout(&out), "ok", "{out:?}");
    let e = env.wait_for_evidence("the allowed rename", |e| {
        e["action"] == "rename" && e["target"] == moved.as_str()
    });
    assert_eq!(e["decision"], "allow", "{e}");
    assert_eq!(e["details"]["old_path"], evil.as_str(), "{e}");
    assert_eq!(e["details"]["old_rule"], "work", "{e}");

    // Over the exec-allowed binary: killed at the rename, the exec never
    // comes. Refused by the default: nothing lets the agent write bin/.
    let out = probe_in(&env, "name-agent", &["rename-exec", &moved, &tool, &marker]);
    assert!(killed(&out), "{out:?}");
    assert!(
        !std::path::Path::new(&marker).exists(),
        "the renamed binary ran"
    );
    let e = env.wait_for_evidence("the refused rename", |e| {
        e["action"] == "rename" && e["target"] == tool.as_str()
    });
    assert_eq!(e["decision"], "deny", "{e}");
    assert_eq!(e["method"], "kill", "{e}");
    assert_eq!(e["rule_id"], "default-deny", "{e}");
    assert_eq!(e["details"]["old_path"], moved.as_str(), "{e}");
    assert_eq!(e["details"]["old_rule"], "work", "{e}");
    assert_eq!(e["details"]["new_rule"], "default-deny", "{e}");
    // After the fact: the syscall had succeeded, so the new name is in
    // place (README, Known gaps).
    assert!(!std::path::Path::new(&moved).exists());

    // Relative names are resolved on the working directory; a `..` in one
    // is not trusted: unresolved, whatever it points at.
    let evil3 = f.path("work/evil3");
    std::fs::copy("/usr/bin/touch", &evil3).unwrap();
    let out = Command::new(probe_bin())
        .current_dir(f.path("work"))
        .args([
            "join",
            env.agent_cgroup("name-agent").to_str().unwrap(),
            "rename-exec",
            "evil3",
            "../bin/tool",
            &marker,
        ])
        .output()
        .unwrap();
    assert!(killed(&out), "{out:?}");
    assert!(
        !std::path::Path::new(&marker).exists(),
        "the renamed binary ran"
    );
    let e = env.wait_for_evidence("the refused relative rename", |e| {
        e["action"] == "rename" && e["rule_id"] == "unresolved-path"
    });
    assert_eq!(e["method"], "kill", "{e}");
    assert_eq!(e["details"]["old_path"], evil3.as_str(), "{e}");
    assert!(
        e["details"]["path_flags"]
            .to_string()
            .contains("not_normalised"),
        "{e}"
    );
    assert!(env.ok(&["log", "verify"]).contains("intact"));
}

#[test]
fn linking_a_denied_file_into_a_writable_directory_is_killed_before_the_read() {
    if !can_run("link_read") {
        return;
    }
    let mut env = TestEnv::new("link");
    let f = Files::new(&env);
    let secret = f.write("other/secret.txt", "SECRET-CONTENT");
    names_policy(&env, &f);
    env.start_daemon();
    env.add_agent("link-agent", "p.yaml");

    let copy = f.path("work/copy.txt");
    let out = probe_in(&env, "link-agent", &["link-read", &secret, &copy]);
    assert!(killed(&out), "{out:?}");
    assert!(
        !stdout(&out).contains("SECRET"),
        "the linked file was read: {out:?}"
    );
    let e = env.wait_for_evidence("the refused link", |e| {
        e["action"] == "link" && e["target"] == copy.as_str()
    });
    assert_eq!(e["decision"], "deny", "{e}");
    assert_eq!(e["method"], "kill", "{e}");
    // The old name decides: nothing lets the agent write other/.
    assert_eq!(e["rule_id"], "default-deny", "{e}");
    assert_eq!(e["details"]["old_path"], secret.as_str(), "{e}");
    assert_eq!(e["details"]["new_rule"], "work", "{e}");
    assert!(env.ok(&["log", "verify"]).contains("intact"));
}
