//! Paused actions in the kernel: the `HELD` entries of threads a hold
//! stopped, the `GRANTS` a human decision leaves for the hook, and deciding
//! a held path again by the rules in force (see `crate::holds`).

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    HashMap as BpfHashMap, MapData,
};
use warden_common::{
    agent_flags, held_state, names, AgentInfo, Decision, FileRule, Held, HoldKey, PathKey,
    PathRule, SLOT_PREFIX_BITS,
};

use super::{map_err, Kernel, KernelError};

impl Kernel {
    /// Threads in `HELD`: marked for a stop, or stopped by a fallback hold.
    pub fn marked_threads(&self) -> usize {
        self.bpf
            .map(names::HELD)
            .and_then(|m| BpfHashMap::<_, u32, Held>::try_from(m).ok())
            .map_or(0, |held| held.keys().count())
    }

    /// The `HELD` entry of a thread, if it has one.
    pub fn held(&self, tid: u32) -> Option<Held> {
        let map = self.bpf.map(names::HELD)?;
        let held = BpfHashMap::<_, u32, Held>::try_from(map).ok()?;
        held.get(&tid, 0).ok()
    }

    /// What an agent's rules in force say now about a path: an exec
    /// (`access` None) or an open with `access` bits, the strictest access
    /// deciding, as the kernel programs do (`exec::judge`, `file::judge`),
    /// by the same longest-prefix lookup. For a hold the kernel cannot
    /// decide again itself (see `holds.rs`). None: not an agent.
    pub fn decide_path_now(
        &self,
        cgroup_id: u64,
        access: Option<u32>,
        path: &str,
    ) -> Option<Decision> {
        let agents: BpfHashMap<_, u64, AgentInfo> =
            BpfHashMap::try_from(self.bpf.map(names::AGENTS)?).ok()?;
        let info = agents.get(&cgroup_id, 0).ok()?;
        if info.flags & agent_flags::REVOKED != 0 {
            return Some(Decision::Deny);
        }
        // The key as the kernel builds it: the path and its NUL, cut to
        // the key size.
        let mut bytes = path.as_bytes().to_vec();
        bytes.push(0);
        bytes.truncate(warden_common::PATH_KEY_BYTES);
        let mut key = PathKey {
            slot: info.slot,
            path: [0; warden_common::PATH_KEY_BYTES],
        };
        key.path[..bytes.len()].copy_from_slice(&bytes);
        let key = Key::new(SLOT_PREFIX_BITS + 8 * bytes.len() as u32, key);
        let decision = |stored: u8| Decision::from_u32(stored.into()).unwrap_or(Decision::Deny);
        let strictness = |d: Decision| match d {
            Decision::Allow => 0,
            Decision::Hold => 1,
            Decision::Deny => 2,
        };
        Some(match access {
            None => {
                let rules: LpmTrie<_, PathKey, PathRule> =
                    LpmTrie::try_from(self.bpf.map(names::EXEC_RULES)?).ok()?;
                rules
                    .get(&key, 0)
                    .map_or(Decision::Deny, |r| decision(r.decision))
            }
            Some(access) => {
                let rules: LpmTrie<_, PathKey, FileRule> =
                    LpmTrie::try_from(self.bpf.map(names::FILE_RULES)?).ok()?;
                let Ok(r) = rules.get(&key, 0) else {
                    return Some(Decision::Deny);
                };
                let mut out = Decision::Allow;
                for (bit, rule) in [
                    (warden_common::access::READ, r.read),
                    (warden_common::access::WRITE, r.write),
                ] {
                    if access & bit != 0 && strictness(decision(rule.decision)) > strictness(out) {
                        out = decision(rule.decision);
                    }
                }
                out
            }
        })
    }

    /// Removes a thread's `HELD` entry: before an approved paused thread
    /// is continued (the guards then let it be), or once it is gone.
    pub fn forget_held(&mut self, tid: u32) -> Result<(), KernelError> {
        self.delete::<u32, Held>(names::HELD, &tid).map(drop)
    }

    /// Clears the flag that makes `sys_exit` look up every syscall exit
    /// in `HELD` once no thread there is paused. Clear, then look again:
    /// a thread paused in between sets the flag itself, and if its store
    /// came before the clear, the second look sees its entry and sets the
    /// flag back. (A paused thread continued by a SIGCONT in the few
    /// microseconds between the clear and the second look would pass one
    /// syscall exit unguarded; the daemon has seized it by then unless it
    /// was paused at that very moment.)
    pub fn settle_paused_flag(&mut self) -> Result<(), KernelError> {
        let name = names::SYS_EXIT_MODE;
        let paused = |k: &Self| {
            k.bpf
                .map(names::HELD)
                .and_then(|m| BpfHashMap::<_, u32, Held>::try_from(m).ok())
                .is_some_and(|held| {
                    held.iter()
                        .flatten()
                        .any(|(_, h)| h.state != held_state::STOP_AT_EXIT)
                })
        };
        if self
            .sys_exit_array()?
            .get(&1, 0)
            .map_err(map_err("read", name))?
            == 0
            || paused(self)
        {
            return Ok(());
        }
        self.sys_exit_array()?
            .set(1, 0, 0)
            .map_err(map_err("update", name))?;
        if paused(self) {
            self.sys_exit_array()?
                .set(1, 1, 0)
                .map_err(map_err("update", name))?;
        }
        Ok(())
    }

    fn sys_exit_array(&mut self) -> Result<aya::maps::Array<&mut MapData, u32>, KernelError> {
        let name = names::SYS_EXIT_MODE;
        let map = self
            .bpf
            .map_mut(name)
            .ok_or(KernelError::Missing { what: "map", name })?;
        aya::maps::Array::try_from(map).map_err(map_err("open", name))
    }

    /// Records a human decision on one held action, for the hook to apply
    /// when the thread's syscall restarts (and consume: it opens one action).
    pub fn grant(&mut self, key: &HoldKey, decision: Decision) -> Result<(), KernelError> {
        let mut grants: BpfHashMap<_, HoldKey, u32> = self.map_mut(names::GRANTS)?;
        grants
            .insert(*key, decision as u8 as u32, 0)
            .map_err(map_err("update", names::GRANTS))
    }

    /// Withdraws a decision the hook has not consumed. Returns whether it
    /// was still there (false: the hook took it, its outcome is on its way).
    pub fn withdraw_grant(&mut self, key: &HoldKey) -> Result<bool, KernelError> {
        self.delete::<HoldKey, u32>(names::GRANTS, key)
    }
}
