//! Warden: kernel-enforced policy and evidence for AI agents on Linux.
//!
//! An agent is a cgroup v2 with an accountable owner and a policy. Follow one
//! action from the kernel to the auditor through the modules, in order:
//!
//! - `policy`: the YAML policy language, validated and compiled to map
//!   entries by one pipeline (`policy::compile_policy`) that the CLI and
//!   the daemon share.
//! - `kernel`: loads the eBPF programs (`ebpf/programs`), attaches them to
//!   agent cgroups and writes compiled policy into their maps. The kernel
//!   decides; nothing here is on the decision path. `kernel::btf` reads the
//!   kernel struct offsets the exec and file-open programs need;
//!   `kernel::lsm` probes for BPF LSM, which decides execs and opens where
//!   the kernel runs it.
//! - `decode`: ring buffer records -> typed events.
//! - `attribution`: events -> evidence entries naming agent, owner, process,
//!   user, login user and the policy snapshot in force.
//! - `evidence`: the hash-chained SQLite log, signed checkpoints, verification.
//! - `db`: the one place that opens the database (pragmas, schema, migrations).
//! - `export`: bundles an auditor verifies offline, control map, HTML report.
//! - `holds`, `approvals`: actions paused for a human, and the decisions.
//! - `daemon`: the long-running process tying these together (start-up, the
//!   event reader, the enforcer thread, reconcile, the evidence writer, the
//!   control server, one file each).
//! - `registry`, `cgroup`, `actor`, `control`, `commands`: agents, their
//!   cgroups, who did what, the control socket and the CLI verbs.
//! - `confine`: what a process `warden run` starts may not do to Warden
//!   (Landlock and seccomp, applied just before exec).

pub mod actor;
pub mod approvals;
pub mod attribution;
pub mod cgroup;
pub mod clock;
pub mod commands;
pub mod config;
pub mod confine;
pub mod control;
pub mod daemon;
pub mod db;
pub mod decode;
pub mod dns;
pub mod evidence;
pub mod export;
pub mod gaps;
pub mod holds;
pub mod kernel;
pub mod lineage;
/// BPF LSM's probe and state live in `kernel::lsm`; kept at this path too.
pub use kernel::lsm;
pub mod policy;
pub mod registry;
pub mod sentinel;

/// An error and all its sources, "outer: inner: innermost", for messages
/// that cross a process boundary as text (control socket, evidence).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod error_chain_tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("read policy file {file}: {source}")]
        Named {
            file: String,
            #[source]
            source: std::io::Error,
        },
        #[error("load the policy")]
        Plain(#[source] std::io::Error),
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let e = Outer::Named {
            file: "/p/a".into(),
            source: std::io::Error::from_raw_os_error(2),
        };
        assert_eq!(
            error_chain(&e),
            "read policy file /p/a: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn a_cause_not_in_the_message_is_appended() {
        let e = Outer::Plain(std::io::Error::from_raw_os_error(13));
        assert_eq!(
            error_chain(&e),
            "load the policy: Permission denied (os error 13)"
        );
    }
}
