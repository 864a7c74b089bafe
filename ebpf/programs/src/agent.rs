//! Which agent, if any, the calling process belongs to: the first thing
//! the global programs ask, so that every other process returns at once.

use aya_ebpf::helpers::bpf_get_current_cgroup_id;
use warden_common::{agent_flags, AgentInfo};

use crate::maps::AGENTS;

/// The calling process's cgroup id and agent entry, if it runs in an agent
/// cgroup whose policy governs `class` (an `agent_flags` bit: `EXEC`,
/// `FILE`) or that is revoked. The global programs call this first, and
/// every other process returns here after one hash lookup.
#[inline(always)]
pub fn governing_agent(class: u32) -> Option<(u64, AgentInfo)> {
    // SAFETY: a plain helper call with no arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: AGENTS values are plain data replaced whole by the daemon.
    let agent = (unsafe { AGENTS.get(&cgroup_id) }).copied()?;
    if agent.flags & (class | agent_flags::REVOKED) == 0 {
        // The agent's policy does not govern this class of action.
        return None;
    }
    Some((cgroup_id, agent))
}
