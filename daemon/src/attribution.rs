//! Attribution: who did it. Turns a kernel decision into an evidence entry
//! naming the agent, its accountable owner, the process, the user it ran as
//! and the human whose login session started it (the audit login uid, which
//! survives `sudo` and `su`), and the exact policy version that decided.

use std::{collections::HashMap, fs};

use serde_json::json;

use crate::{
    decode::{access_name, path_flag_names, Action, KernelEvent},
    evidence::NewEntry,
};

/// `loginuid` value of a process that no login session started.
pub const LOGINUID_UNSET: u32 = u32::MAX;

/// What the daemon knows about an agent at the time of a decision.
#[derive(Debug, Clone)]
pub struct AgentView {
    pub name: String,
    pub owner: String,
}

/// One loaded policy version: its snapshot hash, its rule ids by index, and
/// what holds under it need (who approves, how long they wait).
#[derive(Debug, Clone)]
pub struct PolicyView {
    pub snapshot: String,
    pub rule_ids: Vec<String>,
    /// Budget ids by index: a refusal by budget `i` names `budget:<id>`.
    pub budget_ids: Vec<String>,
    pub approvers: crate::policy::Approvers,
    pub hold_timeout: std::time::Duration,
}

impl PolicyView {
    pub fn rule_id(&self, idx: u32) -> String {
        match idx {
            warden_common::rule::DEFAULT => "default-deny".into(),
            warden_common::rule::REVOKED => "revoked".into(),
            warden_common::rule::NO_EVIDENCE => "no-evidence".into(),
            warden_common::rule::UNKNOWN_CGROUP => "unknown-cgroup".into(),
            warden_common::rule::UNRESOLVED => "unresolved-path".into(),
            warden_common::rule::ANONYMOUS_EXEC => "anonymous-exec".into(),
            warden_common::rule::LEFT_AGENT => "left-agent".into(),
            i if warden_common::rule::budget_index(i).is_some() => {
                let b = warden_common::rule::budget_index(i).unwrap_or(0) as usize;
                match self.budget_ids.get(b) {
                    Some(id) => format!("budget:{id}"),
                    None => format!("budget#{b}"),
                }
            }
            i => self
                .rule_ids
                .get(i as usize)
                .cloned()
                .unwrap_or_else(|| format!("rule#{i}")),
        }
    }
}

/// Facts about the acting process, read from /proc while it is still alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessFacts {
    pub exe: String,
    /// Identity of the executable file, "dev:ino" ("unknown" once gone).
    pub binary: String,
    pub loginuid: u32,
}

impl ProcessFacts {
    /// Reads /proc/PID. A process that is already gone is described by its
    /// kernel command name, marked as such, rather than left blank.
    pub fn read(pid: u32, comm: &str) -> Self {
        let process = i32::try_from(pid)
            .ok()
            .and_then(|pid| procfs::process::Process::new(pid).ok());
        let exe = process
            .as_ref()
            .and_then(|p| p.exe().ok())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("[exited:{comm}]"));
        let binary = fs::metadata(format!("/proc/{pid}/exe"))
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                format!("{}:{}", m.dev(), m.ino())
            })
            .unwrap_or_else(|_| "unknown".into());
        let loginuid = process
            .and_then(|p| p.loginuid().ok())
            .unwrap_or(LOGINUID_UNSET);
        Self {
            exe,
            binary,
            loginuid,
        }
    }
}

/// [`ProcessFacts`] of the processes one drain of the ring buffer names
/// (at most `MAX_BATCH` records, read within milliseconds): read from /proc
/// once per process and command name instead of once per record (a busy
/// agent's thousands of opens come from a few processes, and each read is
/// an open, a readlink, a stat and a read of /proc). A process's exec
/// record reads afresh and forgets the process, so what follows its exec
/// is read again. Facts were always read when the daemon got to the
/// record, not when the kernel decided; within a drain that moment is now
/// the process's first record in it.
#[derive(Default)]
pub struct FactsCache {
    facts: HashMap<(u32, String), ProcessFacts>,
}

impl FactsCache {
    /// The facts of `pid` (named `comm` by the record), from /proc.
    pub fn get(&mut self, pid: u32, comm: &str, exec: bool) -> ProcessFacts {
        self.get_with(pid, comm, exec, ProcessFacts::read)
    }

    /// As [`Self::get`], reading with `read` (tests).
    pub fn get_with(
        &mut self,
        pid: u32,
        comm: &str,
        exec: bool,
        read: impl FnOnce(u32, &str) -> ProcessFacts,
    ) -> ProcessFacts {
        if exec {
            self.facts.retain(|(p, _), _| *p != pid);
            return read(pid, comm);
        }
        self.facts
            .entry((pid, comm.to_string()))
            .or_insert_with(|| read(pid, comm))
            .clone()
    }
}

/// uid -> user name, cached (names are resolved at record time and written
/// into the entry, so later renames do not change history).
#[derive(Default)]
pub struct UserNames {
    cache: HashMap<u32, String>,
}

impl UserNames {
    pub fn name(&mut self, uid: u32) -> String {
        if uid == LOGINUID_UNSET {
            return "unset".into();
        }
        self.cache
            .entry(uid)
            .or_insert_with(|| match nix::unistd::User::from_uid(uid.into()) {
                Ok(Some(user)) => user.name,
                _ => format!("uid:{uid}"),
            })
            .clone()
    }
}

/// How a decision was carried out, as evidence names it.
pub fn method_name(m: warden_common::Method) -> &'static str {
    match m {
        warden_common::Method::Allow => "allow",
        warden_common::Method::CgroupDeny => "cgroup-deny",
        warden_common::Method::Held => "held",
        warden_common::Method::Approved => "approved",
        warden_common::Method::Rejected => "rejected",
        warden_common::Method::Kill => "kill",
        warden_common::Method::LsmDeny => "lsm-deny",
        warden_common::Method::FmodRetDeny => "fmodret-deny",
        warden_common::Method::Recorded => "record",
        warden_common::Method::Shadow => "shadow",
    }
}

/// A decision as evidence spells it when it was carried out.
pub fn decision_name(d: warden_common::Decision) -> &'static str {
    match d {
        warden_common::Decision::Allow => "allow",
        warden_common::Decision::Deny => "deny",
        warden_common::Decision::Hold => "hold",
    }
}

/// The evidence entry for one kernel decision.
pub fn decision_entry(
    ev: &KernelEvent,
    ts_ns: i64,
    agent: &AgentView,
    policy: &PolicyView,
    process: &ProcessFacts,
    users: &mut UserNames,
) -> NewEntry {
    // Record mode: the action went ahead; the decision says what the
    // policy would have done (`mode: record`, policies/README.md).
    let record = ev.method == warden_common::Method::Recorded;
    // A shadow candidate's difference (`shadow:`): what the candidate
    // would have decided, beside what was carried out. Record mode and
    // shadow share the `would-*` form and `details.enforced_decision`.
    let shadow = ev.method == warden_common::Method::Shadow;
    let would = record || shadow;
    let decision = match ev.decision {
        warden_common::Decision::Allow if shadow => "would-allow",
        warden_common::Decision::Allow => "allow",
        warden_common::Decision::Deny if would => "would-deny",
        warden_common::Decision::Hold if would => "would-hold",
        warden_common::Decision::Deny => "deny",
        warden_common::Decision::Hold => "hold",
    };
    let method = method_name(ev.method);
    let mut details = serde_json::Map::new();
    match ev.enforced {
        Some((enforced, _)) => {
            details.insert("enforced_decision".into(), json!(decision_name(enforced)));
        }
        // Record mode carries nothing out but the action itself.
        None if record && ev.decision != warden_common::Decision::Allow => {
            details.insert("enforced_decision".into(), json!("allow"));
        }
        None => {}
    }
    details.insert("tid".into(), json!(ev.tid));
    details.insert("gid".into(), json!(ev.gid));
    details.insert("comm".into(), json!(ev.comm));
    details.insert("cgroup_id".into(), json!(ev.cgroup_id));
    details.insert("policy_version".into(), json!(ev.policy_gen));
    details.insert("boot_ns".into(), json!(ev.boot_ns));
    let mut exe = process.exe.clone();
    match &ev.action {
        Action::Net { addr, .. } => {
            // The names the agent resolved to this address through its DNS
            // proxy (`host` rules), while their answers are live.
            let hosts = crate::dns::names_of(ev.agent_id, *addr);
            if !hosts.is_empty() {
                details.insert("hosts".into(), json!(hosts));
            }
        }
        Action::Escape {
            pid,
            from_cgroup,
            to_cgroup,
            how,
            killed,
        } => {
            // Both cgroups: the agent's, and where the process is now.
            details.insert("escaped_pid".into(), json!(pid));
            details.insert("from_cgroup".into(), json!(from_cgroup));
            details.insert("to_cgroup".into(), json!(to_cgroup));
            let how = match *how {
                warden_common::escape_how::FORK => "fork-into-cgroup",
                warden_common::escape_how::ATTACH => "migrated",
                _ => "unknown",
            };
            details.insert("how".into(), json!(how));
            let mut k = Vec::new();
            if killed & warden_common::escape_killed::ESCAPED != 0 {
                k.push("escaped-in-kernel");
            }
            if killed & warden_common::escape_killed::ACTOR != 0 {
                k.push("actor-in-kernel");
            }
            if killed & warden_common::escape_killed::AT_SYSCALL_EXIT != 0 {
                k.push("escaped-at-syscall-exit");
            }
            if killed & warden_common::escape_killed::FAILED != 0 {
                k.push("kill-failed");
            }
            details.insert("killed".into(), json!(k));
        }
        Action::Socket {
            family,
            sock_type,
            protocol,
            ..
        } => {
            details.insert("family".into(), json!(family));
            details.insert("sock_type".into(), json!(sock_type));
            details.insert("protocol".into(), json!(protocol));
        }
        Action::Exec {
            path,
            filename,
            file,
            flags,
        } => {
            // The identity of the binary the kernel executed, and the name
            // the caller used for it.
            details.insert("binary".into(), json!(file.to_string()));
            details.insert("filename".into(), json!(filename));
            details.insert("path_flags".into(), json!(path_flag_names(*flags)));
            // The process's executable is the new image (a killed process is
            // gone before /proc can be read).
            exe = path.clone();
        }
        Action::Name {
            old_path,
            new_path,
            syscall,
            old_rule,
            new_rule,
            flags,
            hashes: _,
        } => {
            // Both names, each decided as a write; rebuilt from the
            // syscall's arguments after it succeeded (see NameEvent). An
            // operation on one name (unlink, mkdir, chmod, ...) has one.
            if new_path.is_empty() {
                details.insert("path".into(), json!(old_path));
            } else {
                details.insert("old_path".into(), json!(old_path));
                details.insert("new_path".into(), json!(new_path));
                details.insert("old_rule".into(), json!(policy.rule_id(*old_rule)));
                details.insert("new_rule".into(), json!(policy.rule_id(*new_rule)));
            }
            match crate::decode::name_hook(*syscall) {
                // Decided before the change, whichever syscall made it.
                Some(hook) => {
                    details.insert("hook".into(), json!(hook));
                }
                None => {
                    details.insert("syscall".into(), json!(syscall));
                    if flags & warden_common::path_flags::IA32 != 0 {
                        // `syscall` is the ia32 number (int 0x80).
                        details.insert("syscall_table".into(), json!("ia32"));
                    }
                }
            }
            details.insert("path_flags".into(), json!(path_flag_names(*flags)));
            if process.binary != "unknown" {
                details.insert("binary".into(), json!(process.binary));
            }
        }
        Action::Open {
            file,
            access,
            syscall,
            compat,
            read_rule,
            write_rule,
            flags,
            ..
        } => {
            details.insert("file".into(), json!(file.to_string()));
            details.insert("access".into(), json!(access_name(*access)));
            if access & warden_common::access::READ != 0 {
                details.insert("read_rule".into(), json!(policy.rule_id(*read_rule)));
            }
            if access & warden_common::access::WRITE != 0 {
                details.insert("write_rule".into(), json!(policy.rule_id(*write_rule)));
            }
            if *syscall == warden_common::syscalls::LSM_HOOK {
                // Decided at lsm/file_open, whichever syscall (or io_uring,
                // or the kernel on the process's behalf) opened it.
                details.insert("hook".into(), json!("lsm/file_open"));
            } else if *syscall == warden_common::syscalls::FMODRET_HOOK {
                details.insert("hook".into(), json!("fmod_ret/security_file_open"));
            } else {
                details.insert("syscall".into(), json!(syscall));
            }
            if *compat {
                details.insert("syscall_table".into(), json!("ia32"));
            }
            details.insert("path_flags".into(), json!(path_flag_names(*flags)));
            // The opening process's executable, when it was still there to
            // be read (a killed process is not).
            if process.binary != "unknown" {
                details.insert("binary".into(), json!(process.binary));
            }
        }
    }
    NewEntry {
        ts_ns,
        kind: if shadow { "shadow" } else { "decision" }.into(),
        agent: agent.name.clone(),
        owner: agent.owner.clone(),
        uid: ev.uid,
        loginuid: process.loginuid,
        user: users.name(ev.uid),
        login_user: users.name(process.loginuid),
        pid: ev.pid,
        exe,
        action: ev.action_name().into(),
        target: ev.target(),
        decision: decision.into(),
        rule_id: policy.rule_id(ev.rule_idx),
        policy_snapshot: policy.snapshot.clone(),
        method: method.into(),
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_rule_indexes_have_names() {
        let p = PolicyView {
            snapshot: "s".into(),
            rule_ids: vec!["a".into(), "b".into()],
            budget_ids: Vec::new(),
            approvers: Default::default(),
            hold_timeout: std::time::Duration::from_secs(1),
        };
        assert_eq!(p.rule_id(1), "b");
        assert_eq!(p.rule_id(warden_common::rule::DEFAULT), "default-deny");
        assert_eq!(p.rule_id(warden_common::rule::REVOKED), "revoked");
        assert_eq!(p.rule_id(7), "rule#7");
    }

    #[test]
    fn facts_are_read_once_per_process_and_name_and_again_after_an_exec() {
        let mut cache = FactsCache::default();
        let mut reads = Vec::new();
        let mut get = |cache: &mut FactsCache, pid: u32, comm: &str, exec: bool| {
            cache.get_with(pid, comm, exec, |p, c| {
                reads.push((p, c.to_string()));
                ProcessFacts {
                    exe: format!("/bin/{c}{}", reads.len()),
                    binary: "1:2".into(),
                    loginuid: 7,
                }
            })
        };
        let first = get(&mut cache, 10, "cat", false);
        assert_eq!(get(&mut cache, 10, "cat", false), first);
        get(&mut cache, 11, "cat", false);
        // Another command name of the same pid (a thread's prctl name, or
        // a gone process described by its name) is read on its own.
        get(&mut cache, 10, "sh", false);
        // The exec record reads afresh and forgets the pid: what follows
        // describes the new image.
        let exec = get(&mut cache, 10, "cat", true);
        assert_ne!(exec, first);
        let after = get(&mut cache, 10, "cat", false);
        assert_ne!(after, first);
        assert_eq!(
            reads,
            [
                (10, "cat"),
                (11, "cat"),
                (10, "sh"),
                (10, "cat"),
                (10, "cat")
            ]
            .map(|(p, c)| (p, c.to_string()))
        );
    }

    #[test]
    fn own_process_facts_are_read() {
        let me = ProcessFacts::read(std::process::id(), "x");
        assert!(me.exe.starts_with('/'), "{me:?}");
        let gone = ProcessFacts::read(u32::MAX - 5, "ghost");
        assert_eq!(gone.exe, "[exited:ghost]");
        assert_eq!(gone.loginuid, LOGINUID_UNSET);
    }
}
