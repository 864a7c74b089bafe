//! The maps the DNS proxy (daemon/src/dns/) writes from its own tasks:
//! handles of their own (the same kernel maps, opened by id), so the proxy
//! never waits for the enforcer thread that owns the `Ebpf` handle.

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    HashMap as BpfHashMap, Map, MapData,
};
use warden_common::{
    budget_use, names, AgentInfo, BudgetUseKey, DnsOrig, DnsProxy, Net4Key, Net6Key, NetRules,
    SLOT_PREFIX_BITS,
};

use super::{map_err, Kernel, KernelError};

/// The proxy's handles.
pub struct DnsMaps {
    pub agents: BpfHashMap<MapData, u64, AgentInfo>,
    pub proxy: BpfHashMap<MapData, u32, DnsProxy>,
    pub orig: BpfHashMap<MapData, u64, DnsOrig>,
    pub net4: LpmTrie<MapData, Net4Key, NetRules>,
    pub net6: LpmTrie<MapData, Net6Key, NetRules>,
    /// `count: dns` budgets: the daemon counts them here, in the kernel's
    /// encoding, so `warden status` and `warden budget reset` work as for
    /// the kernel's budgets.
    pub budget_use: BpfHashMap<MapData, BudgetUseKey, u64>,
}

impl Kernel {
    /// Opens the proxy's own handles of the maps it writes.
    pub fn dns_maps(&self) -> Result<DnsMaps, KernelError> {
        let open = |name: &'static str| -> Result<MapData, KernelError> {
            let map = self
                .bpf
                .map(name)
                .ok_or(KernelError::Missing { what: "map", name })?;
            let data = match map {
                Map::HashMap(d) | Map::LruHashMap(d) | Map::LpmTrie(d) => d,
                _ => {
                    return Err(KernelError::Missing {
                        what: "hash or trie map",
                        name,
                    })
                }
            };
            let id = data.info().map_err(map_err("info of", name))?.id();
            MapData::from_id(id).map_err(map_err("open by id", name))
        };
        Ok(DnsMaps {
            agents: BpfHashMap::try_from(Map::HashMap(open(names::AGENTS)?))
                .map_err(map_err("open", names::AGENTS))?,
            proxy: BpfHashMap::try_from(Map::HashMap(open(names::DNS_PROXY)?))
                .map_err(map_err("open", names::DNS_PROXY))?,
            orig: BpfHashMap::try_from(Map::LruHashMap(open(names::DNS_ORIG)?))
                .map_err(map_err("open", names::DNS_ORIG))?,
            net4: LpmTrie::try_from(Map::LpmTrie(open(names::NET4_RULES)?))
                .map_err(map_err("open", names::NET4_RULES))?,
            net6: LpmTrie::try_from(Map::LpmTrie(open(names::NET6_RULES)?))
                .map_err(map_err("open", names::NET6_RULES))?,
            budget_use: BpfHashMap::try_from(Map::HashMap(open(names::BUDGET_USE)?))
                .map_err(map_err("open", names::BUDGET_USE))?,
        })
    }
}

impl DnsMaps {
    /// Counts one action against budget `index` of `agent_id` (`limit`
    /// per `per_ns`, windows as the kernel's): false when the window's
    /// count is already at the limit (not counted). No program writes a
    /// `dns` budget's key and the proxy calls this under its maps lock;
    /// the one other writer is `warden budget reset` (a delete), so the
    /// write is conditional on the key being as read (there: `BPF_EXIST`,
    /// absent: `BPF_NOEXIST`) and a reset in between makes it read again:
    /// no count is lost and no reset undone.
    pub fn take_budget(
        &mut self,
        agent_id: u32,
        index: u32,
        limit: u64,
        per_ns: u64,
    ) -> Result<bool, KernelError> {
        const BPF_NOEXIST: u64 = 1;
        const BPF_EXIST: u64 = 2;
        let key = BudgetUseKey { agent_id, index };
        let mut tries = 0;
        loop {
            let window = super::budgets::monotonic_ns() / per_ns.max(1);
            let (used, flag) = match self.budget_use.get(&key, 0) {
                Ok(v) if budget_use::window(v) == window => (budget_use::count(v), BPF_EXIST),
                Ok(_) => (0, BPF_EXIST),
                Err(aya::maps::MapError::KeyNotFound) => (0, BPF_NOEXIST),
                Err(e) => return Err(map_err("lookup", names::BUDGET_USE)(e)),
            };
            if used >= limit {
                return Ok(false);
            }
            match self
                .budget_use
                .insert(key, budget_use::pack(window, used + 1), flag)
            {
                Ok(()) => return Ok(true),
                // The key changed under us (a reset): read again.
                Err(_) if tries < 3 => tries += 1,
                Err(e) => return Err(map_err("update", names::BUDGET_USE)(e)),
            }
        }
    }

    /// The agent's slot now (rules are written under it), if enforced.
    pub fn slot(&self, cgroup_id: u64) -> Option<u32> {
        self.agents.get(&cgroup_id, 0).ok().map(|a| a.slot)
    }

    /// Writes (`Some`) or removes (`None`) the `/32` or `/128` entry of
    /// `addr` under `slot`.
    pub fn set_host(
        &mut self,
        slot: u32,
        addr: std::net::IpAddr,
        rules: Option<&NetRules>,
    ) -> Result<(), KernelError> {
        match addr {
            std::net::IpAddr::V4(a) => {
                let key = Key::new(
                    SLOT_PREFIX_BITS + 32,
                    Net4Key {
                        slot,
                        addr: a.octets(),
                    },
                );
                match rules {
                    Some(r) => self
                        .net4
                        .insert(&key, r, 0)
                        .map_err(map_err("update", names::NET4_RULES)),
                    None => {
                        let _ = self.net4.remove(&key);
                        Ok(())
                    }
                }
            }
            std::net::IpAddr::V6(a) => {
                let key = Key::new(
                    SLOT_PREFIX_BITS + 128,
                    Net6Key {
                        slot,
                        addr: a.octets(),
                    },
                );
                match rules {
                    Some(r) => self
                        .net6
                        .insert(&key, r, 0)
                        .map_err(map_err("update", names::NET6_RULES)),
                    None => {
                        let _ = self.net6.remove(&key);
                        Ok(())
                    }
                }
            }
        }
    }
}
