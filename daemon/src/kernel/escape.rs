//! Escape detection: the global programs that keep each agent's processes
//! in `MEMBERS` and kill and record a process of an agent that appears in
//! a cgroup outside the agent's subtree (`ebpf/programs/src/escape.rs`),
//! and the daemon's part: the processes an adopted cgroup already holds
//! are added when the agent is installed, and an escaped process the
//! kernel could not kill in place is killed from its record.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use aya::{
    maps::HashMap as BpfHashMap,
    programs::{links::FdLink, BtfTracePoint},
    Btf,
};
use warden_common::{names, Member};

use super::{map_err, Kernel, KernelError};

impl Kernel {
    /// Loads and attaches the escape programs (global `tp_btf`, pinned as
    /// the exec link is). On failure the reason is returned and the daemon
    /// goes on without escape detection (`warden status` says so).
    pub(super) fn attach_escape(&mut self, btf: &Btf) -> Result<(), String> {
        if let Some(why) = super::mechanism::disabled("escape") {
            return Err(why);
        }
        let mut links = Vec::new();
        for (name, tp) in names::ESCAPE_PROGRAMS {
            let prog: &mut BtfTracePoint = self
                .bpf
                .program_mut(name)
                .and_then(|p| p.try_into().ok())
                .ok_or_else(|| format!("the eBPF object has no tp_btf program {name}"))?;
            prog.load(tp, btf)
                .map_err(|e| format!("load tp_btf/{tp} ({name}): {}", crate::error_chain(&e)))?;
            super::mechanism::log_verified(prog, name);
            let id = prog
                .attach()
                .map_err(|e| format!("attach tp_btf/{tp}: {}", crate::error_chain(&e)))?;
            let link = prog
                .take_link(id)
                .map_err(|e| format!("take tp_btf/{tp} link: {e}"))?;
            links.push((FdLink::from(link), tp));
        }
        for (link, tp) in links {
            drop(self.pin_link(link, tp).map_err(|e| e.to_string())?);
        }
        Ok(())
    }

    /// Adds every process in `cgroup` and the cgroups below it to
    /// `MEMBERS` as the agent's (an adopted cgroup's processes were not
    /// forked under the programs' eyes). Returns how many were added.
    pub fn seed_members(&mut self, cgroup: &Path, cgroup_id: u64) -> Result<usize, KernelError> {
        let Some(agent_id) = self.installed.get(&cgroup_id).map(|i| i.info.agent_id) else {
            return Ok(0);
        };
        let level = crate::cgroup::cgroup2_mount()
            .ok()
            .and_then(|mount| crate::cgroup::level(&mount, cgroup))
            .unwrap_or(0);
        let mut pids = Vec::new();
        collect_pids(cgroup, &mut pids, 0);
        let name = names::MEMBERS;
        let map = self
            .bpf
            .map_mut(name)
            .ok_or(KernelError::Missing { what: "map", name })?;
        let mut members: BpfHashMap<_, u32, Member> =
            BpfHashMap::try_from(map).map_err(map_err("open", name))?;
        let member = Member {
            agent_cgroup: cgroup_id,
            agent_id,
            level,
        };
        let mut added = 0;
        for pid in pids {
            // A process that exited since the read: harmless, removed at
            // its exit or overwritten by the next one with its pid.
            if members.get(&pid, 0).is_err() {
                members
                    .insert(pid, member, 0)
                    .map_err(map_err("insert", name))?;
                added += 1;
            }
        }
        Ok(added)
    }

    /// The agent cgroup `pid` is recorded as belonging to, if any.
    pub fn member_of(&self, pid: u32) -> Option<u64> {
        let map = self.bpf.map(names::MEMBERS)?;
        let members: BpfHashMap<_, u32, Member> = BpfHashMap::try_from(map).ok()?;
        members.get(&pid, 0).ok().map(|m| m.agent_cgroup)
    }
}

/// Thread group ids listed in `cgroup.procs` of `dir` and below (bounded
/// depth: the cgroup2 hierarchy is at most a few dozen levels).
fn collect_pids(dir: &Path, pids: &mut Vec<u32>, depth: u32) {
    if depth > 64 {
        return;
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_pids(&e.path(), pids, depth + 1);
        }
    }
}

/// Kills `pid` if it is still the escaped process: opened as a pidfd first
/// (so the pid cannot be reused under us), then still recorded as the
/// agent's, and its cgroup outside the agent's directory `agent_dir`.
/// Returns whether it was signalled.
pub fn kill_escaped(kernel: &Kernel, pid: u32, agent_cgroup: u64, agent_dir: &Path) -> bool {
    // SAFETY: pidfd_open takes a pid and flags, returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if kernel.member_of(pid) != Some(agent_cgroup) {
        return false;
    }
    let now = crate::cgroup::cgroup2_mount()
        .ok()
        .and_then(|mount| crate::cgroup::cgroup_of(&mount, pid).ok());
    if now.is_some_and(|now| now.starts_with(agent_dir)) {
        return false;
    }
    // SAFETY: the pidfd is open; no siginfo; no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    rc == 0
}
