//! An agent's rules in the kernel: written under the agent's idle slot, the
//! `AGENTS` entry swapped in one update, the old slot cleared; the kill
//! switch flag; removal.

use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        HashMap as BpfHashMap,
    },
    Ebpf,
};
use warden_common::{
    agent_flags, names, AgentInfo, BudgetSet, FileRule, Net4Key, Net6Key, NetRules, PathKey,
    PathRule, SockRules, SHADOW_SLOT, SLOT_PREFIX_BITS,
};

use super::{map_err, Installed, Kernel, KernelError};
use crate::policy::{CompiledNet, CompiledPaths};

/// What one agent should have in the kernel.
#[derive(Clone, Copy)]
pub struct AgentRules<'a> {
    pub agent_id: u32,
    /// The policy version's id (0: no valid policy yet, so nothing allowed).
    pub policy_gen: u32,
    pub net: &'a CompiledNet,
    pub paths: &'a CompiledPaths,
    /// Kill switch engaged.
    pub revoked: bool,
    /// `on_evidence_loss: allow`.
    pub fail_open: bool,
    /// `mode: record`.
    pub record: bool,
    /// `evidence: { allowed: each }`: no counting of repeats.
    pub each_allowed: bool,
    /// `evidence: { per: agent }`: repeats counted across processes.
    pub count_per_agent: bool,
    /// `evidence: { denied: each }`: no counting of repeated denials.
    pub each_denied: bool,
}

/// Rule keys carry the agent slot they belong to.
pub(super) trait Slotted: aya::Pod {
    fn slot(&self) -> u32;
}

impl Slotted for Net4Key {
    fn slot(&self) -> u32 {
        self.slot
    }
}

impl Slotted for Net6Key {
    fn slot(&self) -> u32 {
        self.slot
    }
}

impl Slotted for PathKey {
    fn slot(&self) -> u32 {
        self.slot
    }
}

/// The keys of an LPM trie that belong to `slot`.
pub(super) fn keys_in_slot<K: Slotted, V: aya::Pod>(
    bpf: &Ebpf,
    name: &str,
    slot: u32,
) -> Vec<Key<K>> {
    bpf.map(name)
        .and_then(|m| LpmTrie::<_, K, V>::try_from(m).ok())
        .map(|t| {
            t.keys()
                .filter_map(Result::ok)
                .filter(|k| k.data().slot() == slot)
                .collect()
        })
        .unwrap_or_default()
}

/// Removes `keys` from an LPM trie, best effort (see `clear_rules`).
fn remove_keys<K: aya::Pod, V: aya::Pod>(bpf: &mut Ebpf, name: &str, keys: &[Key<K>]) {
    if let Some(Ok(mut trie)) = bpf.map_mut(name).map(LpmTrie::<_, K, V>::try_from) {
        for key in keys {
            let _ = trie.remove(key);
        }
    }
}

impl Kernel {
    /// Installs an agent's compiled policy, replacing the previous one
    /// atomically (see the module comment).
    pub fn install(&mut self, cgroup_id: u64, rules: &AgentRules<'_>) -> Result<(), KernelError> {
        let AgentRules {
            agent_id,
            policy_gen,
            net,
            paths,
            revoked,
            fail_open,
            record,
            each_allowed,
            count_per_agent,
            each_denied,
        } = *rules;
        let old = self.installed.remove(&cgroup_id);
        let half = old.as_ref().map_or(0, |o| (o.info.slot & 1) ^ 1);
        let slot = AgentInfo::slot_for(agent_id, half);
        // `warden kill` sets REVOKED in the pinned map directly (it works
        // with no daemon); a reinstall racing it must not clear it. Lifting
        // it is `set_revoked(false)`'s job alone.
        let killed = self.current_flags(cgroup_id) & agent_flags::REVOKED;
        let mut flags = if revoked {
            agent_flags::REVOKED
        } else {
            killed
        };
        if paths.exec_governed {
            flags |= agent_flags::EXEC;
        }
        if paths.file_governed {
            flags |= agent_flags::FILE;
        }
        if fail_open {
            flags |= agent_flags::FAIL_OPEN;
        }
        if record {
            flags |= agent_flags::RECORD;
        }
        if each_allowed {
            flags |= agent_flags::EACH_ALLOWED;
        }
        if count_per_agent {
            flags |= agent_flags::COUNT_PER_AGENT;
        }
        if each_denied {
            flags |= agent_flags::EACH_DENIED;
        }
        if self.count_all {
            flags |= agent_flags::COUNT_ALL;
        }
        if net.dns {
            flags |= agent_flags::DNS;
        }
        let info = AgentInfo {
            agent_id,
            policy_gen,
            slot,
            flags,
        };

        let mut new = Installed {
            info,
            v4: Vec::new(),
            v6: Vec::new(),
            exec: Vec::new(),
            file: Vec::new(),
            sock: false,
        };
        let result = self.write_rules(slot, net, paths, &mut new).and_then(|()| {
            let mut agents: BpfHashMap<_, u64, AgentInfo> = self.map_mut(names::AGENTS)?;
            agents
                .insert(cgroup_id, info, 0)
                .map_err(map_err("update", names::AGENTS))
        });
        match result {
            Ok(()) => {
                if let Some(old) = old {
                    if old.info.slot != slot {
                        self.clear_rules(&old);
                    }
                }
                self.installed.insert(cgroup_id, new);
                self.forget_cached_decisions();
                Ok(())
            }
            Err(e) => {
                // The old policy stays in force; drop what we half-wrote.
                self.clear_rules(&new);
                if let Some(old) = old {
                    self.installed.insert(cgroup_id, old);
                }
                Err(e)
            }
        }
    }

    /// Installs (or, with `None`, removes) an agent's shadow candidate:
    /// its network, exec and file rules under `shadow_slot` of the agent's
    /// slot in force, then `agent_flags::SHADOW` (and `SHADOW_EXEC` /
    /// `SHADOW_FILE` where the candidate has such rules and the policy in
    /// force governs them: the fallback's exec and open hooks run only for
    /// agents that have them). Call after `install` (which clears the
    /// flags), so the kernel never evaluates a half-written candidate.
    /// Whatever a previous install (or daemon) left under either half's
    /// shadow slot is cleared first.
    pub fn install_shadow(
        &mut self,
        cgroup_id: u64,
        candidate: Option<(&CompiledNet, &CompiledPaths)>,
    ) -> Result<(), KernelError> {
        let Some(slot) = self.installed.get(&cgroup_id).map(|i| i.info.slot) else {
            return Ok(());
        };
        let all = agent_flags::SHADOW | agent_flags::SHADOW_EXEC | agent_flags::SHADOW_FILE;
        self.update_flags(cgroup_id, |flags| flags & !all)?;
        for half in [slot & !1, slot | 1] {
            let shadow = half | SHADOW_SLOT;
            let v4 = keys_in_slot::<Net4Key, NetRules>(&self.bpf, names::NET4_RULES, shadow);
            remove_keys::<Net4Key, NetRules>(&mut self.bpf, names::NET4_RULES, &v4);
            let v6 = keys_in_slot::<Net6Key, NetRules>(&self.bpf, names::NET6_RULES, shadow);
            remove_keys::<Net6Key, NetRules>(&mut self.bpf, names::NET6_RULES, &v6);
            let exec = keys_in_slot::<PathKey, PathRule>(&self.bpf, names::EXEC_RULES, shadow);
            remove_keys::<PathKey, PathRule>(&mut self.bpf, names::EXEC_RULES, &exec);
            let file = keys_in_slot::<PathKey, FileRule>(&self.bpf, names::FILE_RULES, shadow);
            remove_keys::<PathKey, FileRule>(&mut self.bpf, names::FILE_RULES, &file);
        }
        let Some((net, paths)) = candidate else {
            return Ok(());
        };
        let slot = slot | SHADOW_SLOT;
        let mut v4: LpmTrie<_, Net4Key, NetRules> = self.trie_mut(names::NET4_RULES)?;
        for (prefix, addr, rules) in &net.v4 {
            let key = Key::new(SLOT_PREFIX_BITS + prefix, Net4Key { slot, addr: *addr });
            v4.insert(&key, rules, 0)
                .map_err(map_err("update", names::NET4_RULES))?;
        }
        let mut v6: LpmTrie<_, Net6Key, NetRules> = self.trie_mut(names::NET6_RULES)?;
        for (prefix, addr, rules) in &net.v6 {
            let key = Key::new(SLOT_PREFIX_BITS + prefix, Net6Key { slot, addr: *addr });
            v6.insert(&key, rules, 0)
                .map_err(map_err("update", names::NET6_RULES))?;
        }
        let mut exec: LpmTrie<_, PathKey, PathRule> = self.trie_mut(names::EXEC_RULES)?;
        for entry in &paths.exec {
            let (bits, data) = entry.key(slot);
            exec.insert(&Key::new(bits, data), entry.value, 0)
                .map_err(map_err("update", names::EXEC_RULES))?;
        }
        let mut file: LpmTrie<_, PathKey, FileRule> = self.trie_mut(names::FILE_RULES)?;
        for entry in &paths.file {
            let (bits, data) = entry.key(slot);
            file.insert(&Key::new(bits, data), entry.value, 0)
                .map_err(map_err("update", names::FILE_RULES))?;
        }
        let (exec, file) = (paths.exec_governed, paths.file_governed);
        self.update_flags(cgroup_id, |flags| {
            let mut flags = flags | agent_flags::SHADOW;
            if exec && flags & agent_flags::EXEC != 0 {
                flags |= agent_flags::SHADOW_EXEC;
            }
            if file && flags & agent_flags::FILE != 0 {
                flags |= agent_flags::SHADOW_FILE;
            }
            flags
        })
    }

    fn trie_mut<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<LpmTrie<&mut aya::maps::MapData, K, V>, KernelError> {
        let map = self
            .bpf
            .map_mut(name)
            .ok_or(KernelError::Missing { what: "map", name })?;
        LpmTrie::try_from(map).map_err(map_err("open", name))
    }

    /// Marks cgroup `level` as holding an agent cgroup, so the programs
    /// look processes' ancestors up there (a process in a cgroup below an
    /// agent's is the agent's). Bits are only ever set: a stale one costs a
    /// lookup, a missing one would let a child cgroup go ungoverned.
    pub fn mark_agent_level(&mut self, level: u32) -> Result<(), KernelError> {
        let name = names::AGENT_LEVELS;
        if level > warden_common::limits::MAX_AGENT_LEVEL {
            return Err(KernelError::AgentTooDeep {
                level,
                max: warden_common::limits::MAX_AGENT_LEVEL,
            });
        }
        let map = self
            .bpf
            .map_mut(name)
            .ok_or(KernelError::Missing { what: "map", name })?;
        let mut array: aya::maps::Array<_, u32> =
            aya::maps::Array::try_from(map).map_err(map_err("open", name))?;
        let bits = array.get(&0, 0).map_err(map_err("read", name))?;
        if bits & (1 << level) == 0 {
            array
                .set(0, bits | (1 << level), 0)
                .map_err(map_err("update", name))?;
        }
        Ok(())
    }

    /// The flags of an agent's entry in the kernel map now (0 if none).
    fn current_flags(&self, cgroup_id: u64) -> u32 {
        self.bpf
            .map(names::AGENTS)
            .and_then(|m| BpfHashMap::<_, u64, AgentInfo>::try_from(m).ok())
            .and_then(|agents| agents.get(&cgroup_id, 0).ok())
            .map_or(0, |info| info.flags)
    }

    /// Sets or clears the kill-switch flag without touching the rules.
    pub fn set_revoked(&mut self, cgroup_id: u64, revoked: bool) -> Result<(), KernelError> {
        self.update_flags(cgroup_id, |flags| {
            if revoked {
                flags | agent_flags::REVOKED
            } else {
                flags & !agent_flags::REVOKED
            }
        })
    }

    /// Rewrites an installed agent's flags, in the kernel's `AGENTS` and in
    /// `installed`; an agent not installed is left alone.
    fn update_flags(
        &mut self,
        cgroup_id: u64,
        f: impl FnOnce(u32) -> u32,
    ) -> Result<(), KernelError> {
        let Some(inst) = self.installed.get(&cgroup_id) else {
            return Ok(());
        };
        let mut info = inst.info;
        info.flags = f(info.flags);
        let mut agents: BpfHashMap<_, u64, AgentInfo> = self.map_mut(names::AGENTS)?;
        agents
            .insert(cgroup_id, info, 0)
            .map_err(map_err("update", names::AGENTS))?;
        if let Some(inst) = self.installed.get_mut(&cgroup_id) {
            inst.info = info;
        }
        Ok(())
    }

    /// Sets or clears `agent_flags::COUNT_ALL` (the evidence cap) on every
    /// agent installed, and on every agent installed from now on.
    pub fn set_count_all(&mut self, on: bool) -> Result<(), KernelError> {
        self.count_all = on;
        let ids: Vec<u64> = self.installed.keys().copied().collect();
        for cgroup_id in ids {
            // Keep a kill switch set in the pinned map meanwhile.
            let revoked = self.current_flags(cgroup_id) & agent_flags::REVOKED;
            self.update_flags(cgroup_id, |flags| {
                let flags = flags | revoked;
                if on {
                    flags | agent_flags::COUNT_ALL
                } else {
                    flags & !agent_flags::COUNT_ALL
                }
            })?;
        }
        Ok(())
    }

    /// Detaches an agent's programs and removes its maps entries.
    pub fn remove(&mut self, cgroup_id: u64) -> Result<(), KernelError> {
        self.covered_by.remove(&cgroup_id);
        if let Some(links) = self.links.remove(&cgroup_id) {
            self.detach_links(links);
        }
        let shadowed = self
            .installed
            .get(&cgroup_id)
            .is_some_and(|i| i.info.flags & agent_flags::SHADOW != 0);
        if shadowed {
            // Its shadow candidate's rules.
            self.install_shadow(cgroup_id, None)?;
        }
        self.drop_egress(cgroup_id);
        if let Some(old) = self.installed.remove(&cgroup_id) {
            self.delete::<u64, AgentInfo>(names::AGENTS, &cgroup_id)?;
            self.clear_rules(&old);
            self.forget_cached_decisions();
        }
        Ok(())
    }

    /// Cgroup ids of the agents the kernel currently enforces.
    pub fn enforced(&self) -> impl Iterator<Item = (&u64, &AgentInfo)> {
        self.installed.iter().map(|(id, inst)| (id, &inst.info))
    }

    fn write_rules(
        &mut self,
        slot: u32,
        net: &CompiledNet,
        paths: &CompiledPaths,
        into: &mut Installed,
    ) -> Result<(), KernelError> {
        let map = self
            .bpf
            .map_mut(names::NET4_RULES)
            .ok_or(KernelError::Missing {
                what: "map",
                name: names::NET4_RULES,
            })?;
        let mut v4: LpmTrie<_, Net4Key, NetRules> =
            LpmTrie::try_from(map).map_err(map_err("open", names::NET4_RULES))?;
        for (prefix, addr, rules) in &net.v4 {
            let key = Key::new(SLOT_PREFIX_BITS + prefix, Net4Key { slot, addr: *addr });
            v4.insert(&key, rules, 0)
                .map_err(map_err("update", names::NET4_RULES))?;
            into.v4.push(key);
        }
        let map = self
            .bpf
            .map_mut(names::NET6_RULES)
            .ok_or(KernelError::Missing {
                what: "map",
                name: names::NET6_RULES,
            })?;
        let mut v6: LpmTrie<_, Net6Key, NetRules> =
            LpmTrie::try_from(map).map_err(map_err("open", names::NET6_RULES))?;
        for (prefix, addr, rules) in &net.v6 {
            let key = Key::new(SLOT_PREFIX_BITS + prefix, Net6Key { slot, addr: *addr });
            v6.insert(&key, rules, 0)
                .map_err(map_err("update", names::NET6_RULES))?;
            into.v6.push(key);
        }
        let name = names::EXEC_RULES;
        let map = self
            .bpf
            .map_mut(name)
            .ok_or(KernelError::Missing { what: "map", name })?;
        let mut exec: LpmTrie<_, PathKey, PathRule> =
            LpmTrie::try_from(map).map_err(map_err("open", name))?;
        for entry in &paths.exec {
            let (bits, data) = entry.key(slot);
            let key = Key::new(bits, data);
            exec.insert(&key, entry.value, 0)
                .map_err(map_err("update", name))?;
            into.exec.push(key);
        }
        let name = names::FILE_RULES;
        let map = self
            .bpf
            .map_mut(name)
            .ok_or(KernelError::Missing { what: "map", name })?;
        let mut file: LpmTrie<_, PathKey, FileRule> =
            LpmTrie::try_from(map).map_err(map_err("open", name))?;
        for entry in &paths.file {
            let (bits, data) = entry.key(slot);
            let key = Key::new(bits, data);
            file.insert(&key, entry.value, 0)
                .map_err(map_err("update", name))?;
            into.file.push(key);
        }
        let name = names::SOCK_RULES;
        let mut sock: BpfHashMap<_, u32, SockRules> = self.map_mut(name)?;
        sock.insert(slot, net.sockets, 0)
            .map_err(map_err("update", name))?;
        into.sock = true;
        // Under the same slot (cleared with it): the policy's budgets.
        let name = names::BUDGETS;
        let mut budgets: BpfHashMap<_, u32, BudgetSet> = self.map_mut(name)?;
        budgets
            .insert(slot, net.budgets, 0)
            .map_err(map_err("update", name))?;
        Ok(())
    }

    /// Best effort: a stale entry under an unused slot is never looked up.
    fn clear_rules(&mut self, inst: &Installed) {
        remove_keys::<Net4Key, NetRules>(&mut self.bpf, names::NET4_RULES, &inst.v4);
        remove_keys::<Net6Key, NetRules>(&mut self.bpf, names::NET6_RULES, &inst.v6);
        if inst.info.flags & agent_flags::DNS != 0 {
            // Addresses the DNS proxy learned under this slot (daemon/src/
            // dns/): not in `inst`, and the slot is reused by the reload
            // after next.
            let slot = inst.info.slot;
            let v4 = keys_in_slot::<Net4Key, NetRules>(&self.bpf, names::NET4_RULES, slot);
            remove_keys::<Net4Key, NetRules>(&mut self.bpf, names::NET4_RULES, &v4);
            let v6 = keys_in_slot::<Net6Key, NetRules>(&self.bpf, names::NET6_RULES, slot);
            remove_keys::<Net6Key, NetRules>(&mut self.bpf, names::NET6_RULES, &v6);
        }
        remove_keys::<PathKey, PathRule>(&mut self.bpf, names::EXEC_RULES, &inst.exec);
        remove_keys::<PathKey, FileRule>(&mut self.bpf, names::FILE_RULES, &inst.file);
        if inst.sock {
            let _ = self.delete::<u32, SockRules>(names::SOCK_RULES, &inst.info.slot);
            let _ = self.delete::<u32, BudgetSet>(names::BUDGETS, &inst.info.slot);
        }
    }
}
