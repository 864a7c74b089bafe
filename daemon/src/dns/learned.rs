//! Addresses an agent learned through its DNS proxy: each one's kernel
//! entry (`policy::learned_entry`: the CIDR rules that contain it, then
//! the host rules it was learned through), kept until the answer's TTL
//! runs out (clamped to [`MIN_TTL`, `MAX_TTL`]), then rewritten without
//! that rule or removed. The daemon expires them (`sweep`), not the kernel.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::kernel::dns::DnsMaps;
use crate::policy::{learned_entry, Cidr, Policy, Selector};

/// Shortest time an address stays: answers with a TTL of 0 or 1 s are
/// still usable by the connect that follows them.
pub const MIN_TTL: Duration = Duration::from_secs(2);
/// Longest: a name's addresses are asked again at least hourly.
pub const MAX_TTL: Duration = Duration::from_secs(3600);

/// Addresses one agent may have learned at once: they share the kernel's
/// rule tries with every agent's policy (`limits::MAX_NET_ENTRIES`), so
/// one agent resolving without end must not fill them. Past it, answers
/// with new addresses get SERVFAIL (recorded) until some expire.
pub const MAX_LEARNED_PER_AGENT: usize = 1024;

pub fn clamp_ttl(ttl_s: u32) -> Duration {
    Duration::from_secs(u64::from(ttl_s)).clamp(MIN_TTL, MAX_TTL)
}

/// One reason an address is allowed: a name, the rule that allowed it,
/// until when.
#[derive(Clone, Debug)]
struct Grant {
    rule: usize,
    name: String,
    until: Instant,
}

/// One agent's learned addresses.
#[derive(Default)]
pub struct Learned {
    by_addr: HashMap<IpAddr, Vec<Grant>>,
}

/// (agent id, address) -> live names, for connect evidence.
type NamesMap = Mutex<HashMap<(u32, IpAddr), Vec<String>>>;

fn names_map() -> &'static NamesMap {
    static NAMES: OnceLock<NamesMap> = OnceLock::new();
    NAMES.get_or_init(Default::default)
}

pub fn names_of(agent_id: u32, addr: IpAddr) -> Vec<String> {
    names_map()
        .lock()
        .map(|m| m.get(&(agent_id, addr)).cloned().unwrap_or_default())
        .unwrap_or_default()
}

impl Learned {
    /// Adds (or extends) `name`'s grant of `addr` through `rule`, and
    /// writes the address's entry under the agent's slot now. Returns the
    /// error of the kernel write, if any (the caller then answers
    /// SERVFAIL: an address the agent could not use is not handed out).
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        maps: &mut DnsMaps,
        policy: &Policy,
        agent_id: u32,
        cgroup_id: u64,
        addr: IpAddr,
        rule: usize,
        name: &str,
        ttl: Duration,
    ) -> Result<(), String> {
        if !self.by_addr.contains_key(&addr) && self.by_addr.len() >= MAX_LEARNED_PER_AGENT {
            return Err(format!(
                "the agent already has {MAX_LEARNED_PER_AGENT} learned addresses (the limit); \
                 {addr} not added"
            ));
        }
        let until = Instant::now() + ttl;
        let grants = self.by_addr.entry(addr).or_default();
        match grants.iter_mut().find(|g| g.rule == rule && g.name == name) {
            Some(g) => g.until = g.until.max(until),
            None => grants.push(Grant {
                rule,
                name: name.to_string(),
                until,
            }),
        }
        self.write(maps, policy, agent_id, cgroup_id, addr)
    }

    /// Drops the grants whose time is up and rewrites (or removes) those
    /// addresses' entries. Returns how many addresses changed.
    pub fn sweep(
        &mut self,
        maps: &mut DnsMaps,
        policy: &Policy,
        agent_id: u32,
        cgroup_id: u64,
    ) -> usize {
        let now = Instant::now();
        let mut changed = Vec::new();
        for (addr, grants) in &mut self.by_addr {
            let before = grants.len();
            grants.retain(|g| g.until > now);
            if grants.len() != before {
                changed.push(*addr);
            }
        }
        for addr in &changed {
            if let Err(e) = self.write(maps, policy, agent_id, cgroup_id, *addr) {
                tracing::warn!(agent_id, %addr, error = %e, "expired DNS address not rewritten");
            }
        }
        self.by_addr.retain(|_, g| !g.is_empty());
        changed.len()
    }

    /// Removes every learned entry (the proxy stops).
    pub fn clear(&mut self, maps: &mut DnsMaps, policy: &Policy, agent_id: u32, cgroup_id: u64) {
        for grants in self.by_addr.values_mut() {
            grants.clear();
        }
        let addrs: Vec<IpAddr> = self.by_addr.keys().copied().collect();
        for addr in addrs {
            let _ = self.write(maps, policy, agent_id, cgroup_id, addr);
        }
        self.by_addr.clear();
    }

    fn write(
        &self,
        maps: &mut DnsMaps,
        policy: &Policy,
        agent_id: u32,
        cgroup_id: u64,
        addr: IpAddr,
    ) -> Result<(), String> {
        let grants = self
            .by_addr
            .get(&addr)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut rules: Vec<usize> = Vec::new();
        for g in grants {
            if !rules.contains(&g.rule) {
                rules.push(g.rule);
            }
        }
        let mut names: Vec<String> = Vec::new();
        for g in grants {
            if !names.contains(&g.name) {
                names.push(g.name.clone());
            }
        }
        if let Ok(mut m) = names_map().lock() {
            if names.is_empty() {
                m.remove(&(agent_id, addr));
            } else {
                m.insert((agent_id, addr), names);
            }
        }
        let Some(slot) = maps.slot(cgroup_id) else {
            return Err("agent not enforced".to_string());
        };
        if rules.is_empty() {
            // Back to what the policy alone says: its own entry for exactly
            // this address, if it has one, else none.
            let exact = Cidr::new(addr, if addr.is_ipv4() { 32 } else { 128 }).ok();
            let policy_has_it = policy.rules.iter().any(
                |r| matches!(&r.selector, Selector::Connect { cidr, .. } if Some(*cidr) == exact),
            );
            let entry = policy_has_it.then(|| learned_entry(policy, addr, &[]).0);
            return maps
                .set_host(slot, addr, entry.as_ref())
                .map_err(|e| e.to_string());
        }
        let (entry, cut) = learned_entry(policy, addr, &rules);
        if cut {
            tracing::warn!(agent_id, %addr, "learned address has more port rules than an entry holds; the rest deny");
        }
        maps.set_host(slot, addr, Some(&entry))
            .map_err(|e| e.to_string())?;
        // A reload between reading the slot and writing: the old slot's
        // entries are being cleared; do not leave this one behind.
        if maps.slot(cgroup_id) != Some(slot) {
            let _ = maps.set_host(slot, addr, None);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_clamped() {
        assert_eq!(clamp_ttl(0), MIN_TTL);
        assert_eq!(clamp_ttl(30), Duration::from_secs(30));
        assert_eq!(clamp_ttl(u32::MAX), MAX_TTL);
    }
}
