//! The kernel's counters (`COUNTERS`, `AGENT_COUNTERS`), summed over CPUs.

use aya::maps::{PerCpuArray, PerCpuHashMap};
use warden_common::{counter, names, AgentCounters};

use super::{map_err, Kernel, KernelError};

/// Kernel-side counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub events: u64,
    pub dropped: u64,
    pub allowed: u64,
    pub denied: u64,
    pub held: u64,
    pub hold_failed: u64,
    /// Threads a fallback hold stopped that ran again without a grant and
    /// were killed.
    pub hold_breach: u64,
    /// Denials whose SIGKILL could not be sent (exec and file opens).
    #[serde(default)]
    pub kill_failed: u64,
    /// Records the full ring buffer could not take, parked (`OVERFLOW`)
    /// with their thread stopped until the daemon drained them.
    #[serde(default)]
    pub parked: u64,
    /// Opens counted from the decision cache, without a path walk.
    #[serde(default)]
    pub cache_hits: u64,
}

impl Kernel {
    pub fn counters(&self) -> Result<Counters, KernelError> {
        let map = self.bpf.map(names::COUNTERS).ok_or(KernelError::Missing {
            what: "map",
            name: names::COUNTERS,
        })?;
        let array: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(map_err("open", names::COUNTERS))?;
        let sum = |index: u32| -> Result<u64, KernelError> {
            let values = array
                .get(&index, 0)
                .map_err(map_err("read", names::COUNTERS))?;
            Ok(values.iter().sum())
        };
        Ok(Counters {
            events: sum(counter::EVENTS)?,
            dropped: sum(counter::DROPPED)?,
            allowed: sum(counter::ALLOWED)?,
            denied: sum(counter::DENIED)?,
            held: sum(counter::HELD)?,
            hold_failed: sum(counter::HOLD_FAILED)?,
            hold_breach: sum(counter::HOLD_BREACH)?,
            kill_failed: sum(counter::KILL_FAILED)?,
            // A counters map pinned by an older daemon has no such slot.
            parked: sum(counter::PARKED).unwrap_or(0),
            cache_hits: sum(counter::CACHE_HITS).unwrap_or(0),
        })
    }

    /// The kernel's per-agent counts (`AGENT_COUNTERS`), summed over CPUs.
    pub fn agent_counters(&self) -> Result<Vec<(u32, AgentCounters)>, KernelError> {
        let map = self
            .bpf
            .map(names::AGENT_COUNTERS)
            .ok_or(KernelError::Missing {
                what: "map",
                name: names::AGENT_COUNTERS,
            })?;
        let hash: PerCpuHashMap<_, u32, AgentCounters> =
            PerCpuHashMap::try_from(map).map_err(map_err("open", names::AGENT_COUNTERS))?;
        let mut out = Vec::new();
        for item in hash.iter() {
            let (agent_id, values) = item.map_err(map_err("read", names::AGENT_COUNTERS))?;
            let mut sum = AgentCounters::default();
            for v in values.iter() {
                sum.decisions += v.decisions;
                sum.dropped += v.dropped;
                sum.allowed_unrecorded += v.allowed_unrecorded;
            }
            out.push((agent_id, sum));
        }
        Ok(out)
    }
}
