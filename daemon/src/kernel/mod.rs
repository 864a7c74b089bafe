//! The kernel side: loading the eBPF object, attaching it to agent cgroups,
//! and writing compiled policy into its maps.
//!
//! One owner: the daemon's enforcement task holds the only `Kernel`, and other
//! tasks ask it for changes (see `daemon.rs`). Policy swaps are atomic per
//! agent: rules are written under the agent's idle slot, then the agent's
//! `AGENTS` entry is replaced in one map update, then the old slot is cleared.
//!
//! Exec and file opens (the fallback for kernels without BPF LSM) are
//! decided by global tracepoint programs: `sched_process_exec`, attached at
//! load, and the one `sys_exit` program, attached only while some agent
//! needs it (file rules or holds; see `set_sys_exit_mode`). Both need kernel
//! struct offsets from the kernel's BTF (`btf.rs`); where they or the
//! programs cannot load, the daemon still enforces the network and refuses
//! policies that need the missing mechanism (`exec_unavailable`,
//! `file_unavailable`). Where the kernel runs BPF LSM, `lsm/bprm_check_security`
//! and `lsm/file_open` decide them instead (probed at load, `lsm.rs`).
//!
//! Persistence: the stateful maps are pinned under `<pin dir>/maps/` and
//! every link under `<pin dir>/links/`, so agents stay enforced while the
//! daemon is stopped or restarting (their decisions queue in the pinned ring
//! buffer; once it is full, actions are refused and counted). A new daemon
//! reuses the pinned maps (agents never lose their entry), attaches its own
//! links, then unpins its predecessor's (`drop_stale_links`).
//!
//! The files, one job each:
//! - `mod.rs`: the `Kernel` handle and its state, the error type, the map
//!   access the other files share, the ring buffer handed to the reader.
//! - `load.rs`: loading the object (maps reused from the pins), the BTF
//!   offsets handed to the programs, adopting a predecessor's agents.
//! - `mechanism.rs`: which mechanism decides exec and file opens here (BPF
//!   LSM, the tracepoint fallback, or none), `WARDEN_DISABLE_MECHANISMS`,
//!   and the mechanism table `warden status` shows.
//! - `lsm.rs`: the BPF LSM probe and its state; `btf.rs`: kernel struct
//!   offsets from the kernel's BTF.
//! - `links.rs`: attaching programs to agent cgroups, pinning and dropping
//!   links, the global on-demand programs (`sys_exit`, the page-fault guard).
//! - `rules.rs`: installing, swapping and removing an agent's rules, the kill
//!   switch flag.
//! - `holds.rs`: the `HELD` and `GRANTS` maps of paused actions.
//! - `counters.rs`: the kernel's counters.
//! - `egress.rs`: the `cgroup_skb/egress` program of `bytes: egress`
//!   budgets and the sweep of the packets it dropped.
//! - `backpressure.rs`: the ring buffer's size, records parked while it is
//!   full (`OVERFLOW`) and the daemon's heartbeat.
//! - `escape.rs`: the programs that kill and record a process of an agent
//!   that leaves the agent's subtree, and `MEMBERS` (processes by agent).
//! - `pinned.rs`: what works on the pins with no daemon (kill switch,
//!   uninstall) and the bpffs mount.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
};

use aya::{
    maps::{lpm_trie::Key, HashMap as BpfHashMap, MapData, RingBuf},
    programs::links::PinnedLink,
    Ebpf,
};
use warden_common::{names, AgentInfo, Net4Key, Net6Key, PathKey};

pub mod backpressure;
pub mod btf;
mod budgets;
mod counters;
pub mod decision_cache;
pub mod dns;
mod egress;
pub mod escape;
pub mod fmod_ret;
mod holds;
mod links;
mod load;
pub mod lsm;
mod mechanism;
mod pinned;
pub mod ring_positions;
mod rules;
mod summaries;

pub use budgets::BudgetUse;
pub use counters::Counters;
pub use egress::EgressSwept;
pub use mechanism::{disabled, DISABLE_VAR};
pub use pinned::{set_revoked_pinned, uninstall, Revocation};
pub use rules::AgentRules;
pub use summaries::{sum_cpus, Swept};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("load the eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("the eBPF object has no {what} named {name}")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error("load program {name} into the kernel: {source}")]
    ProgramLoad {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("attach {name} to cgroup {cgroup}: {source}")]
    Attach {
        name: &'static str,
        cgroup: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("read the kernel's BTF (/sys/kernel/btf/vmlinux), needed for tp_btf programs: {0}")]
    Btf(#[source] aya::BtfError),
    #[error("pin {what}: {detail}")]
    Pin { what: String, detail: String },
    #[error("bpffs: {0}")]
    Bpffs(String),
    #[error("agent cgroup at level {level} of the cgroup2 hierarchy: deeper than the {max} levels the programs look up")]
    AgentTooDeep { level: u32, max: u32 },
    #[error("open cgroup {cgroup}: {source}")]
    OpenCgroup {
        cgroup: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {detail}")]
    Config { what: &'static str, detail: String },
    #[error("{op} map {map}: {source}")]
    Map {
        op: &'static str,
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

fn map_err(op: &'static str, map: &'static str) -> impl FnOnce(aya::maps::MapError) -> KernelError {
    move |source| KernelError::Map { op, map, source }
}

/// The rules an agent has in the kernel right now.
struct Installed {
    info: AgentInfo,
    v4: Vec<Key<Net4Key>>,
    v6: Vec<Key<Net6Key>>,
    exec: Vec<Key<PathKey>>,
    file: Vec<Key<PathKey>>,
    /// The slot has a `SOCK_RULES` entry.
    sock: bool,
}

/// A link pinned by this daemon, and where.
struct Pinned {
    path: PathBuf,
    link: PinnedLink,
}

pub struct Kernel {
    bpf: Ebpf,
    /// `<pin dir>`: maps/ and links/ below it.
    pins: PathBuf,
    /// Pins this daemon created (the rest in links/ are a predecessor's).
    owned: HashSet<PathBuf>,
    links: HashMap<u64, Vec<Pinned>>,
    /// Agents nested below another agent, by the ancestor whose cgroup
    /// programs decide for them (see `cover`).
    covered_by: HashMap<u64, u64>,
    /// The `cgroup_skb/egress` link of each agent with a `bytes: egress`
    /// budget (`egress.rs`).
    egress: HashMap<u64, Pinned>,
    installed: HashMap<u64, Installed>,
    /// The `sys_exit` link while attached, and the `sys_exit_mode` bits in
    /// force.
    sys_exit: Option<Pinned>,
    sys_exit_mode: u32,
    /// Whether `sys_exit` and its tail programs are loaded: at start where
    /// the fallback may need them, else on first attach (`mechanism::select`).
    sys_exit_loaded: bool,
    /// The page-fault guard of held execs (`hold.rs`), loaded with the
    /// exec fallback, and its link while attached.
    fault_guard_loaded: bool,
    fault_guard: Option<Pinned>,
    /// Why exec rules cannot be enforced on this kernel, if they cannot.
    exec_unavailable: Option<String>,
    /// Why file rules cannot be enforced on this kernel, if they cannot.
    file_unavailable: Option<String>,
    /// Which classes BPF LSM decides (then the tracepoint fallback does
    /// not: `sched_process_exec` stays detached, `sys_exit` never decides
    /// opens).
    lsm: lsm::LsmState,
    /// Why a process leaving its agent's subtree is not detected here, if
    /// it is not (`escape.rs`).
    escape_unavailable: Option<String>,
    /// Why operations on one name are not decided on the fallback, if
    /// they are not (`load.rs`, `warden_path_ops`).
    path_ops_unavailable: Option<String>,
    /// Why the decision cache of opens is off where BPF LSM or fmod_ret
    /// decides them (its epoch programs did not attach).
    cache_unavailable: Option<String>,
    /// The evidence cap holds: every agent installed gets
    /// `agent_flags::COUNT_ALL` (`set_count_all`).
    count_all: bool,
}

// Map access every file below uses.
impl Kernel {
    fn map_mut<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<BpfHashMap<&mut MapData, K, V>, KernelError> {
        let map = self
            .bpf
            .map_mut(name)
            .ok_or(KernelError::Missing { what: "map", name })?;
        BpfHashMap::try_from(map).map_err(map_err("open", name))
    }

    /// Deletes `key` from the hash map `name`; returns whether it was
    /// there. A key already gone is not an error: aya reports it as the
    /// syscall's ENOENT (never as `MapError::KeyNotFound`, which only
    /// lookups return).
    fn delete<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        key: &K,
    ) -> Result<bool, KernelError> {
        match self.map_mut::<K, V>(name)?.remove(key) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(false)
            }
            Err(e) => Err(map_err("delete from", name)(e)),
        }
    }

    /// Hands the ring buffer to the event reader.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, KernelError> {
        let map = self
            .bpf
            .take_map(names::EVENTS)
            .ok_or(KernelError::Missing {
                what: "map",
                name: names::EVENTS,
            })?;
        RingBuf::try_from(map).map_err(map_err("open", names::EVENTS))
    }
}
