//! Which agent, if any, the calling process belongs to: the first thing
//! the global programs ask, so that every other process returns at once.
//!
//! A process in a cgroup below an agent's is that agent's (a child cgroup
//! is the agent too): when its own cgroup is not an agent's, the ancestors
//! at the levels where agent cgroups sit (`AGENT_LEVELS`, set by the
//! daemon) are looked up, deepest first, so a nested agent governs its own
//! subtree. A process outside every agent pays one array read and, per
//! level that holds agents, one helper call and one hash lookup.

use aya_ebpf::helpers::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id};
use warden_common::{agent_flags, limits, AgentInfo};

use crate::maps::{AGENTS, AGENT_LEVELS};

/// The agent entry of the caller's cgroup or of its nearest agent
/// ancestor, with the caller's own cgroup id (what events record).
#[inline(always)]
pub fn current_agent() -> (u64, Option<AgentInfo>) {
    let (cgroup_id, _, _, agent) = current_agent_cgroup();
    (cgroup_id, agent)
}

/// As `current_agent`, with the agent's own cgroup id (the caller's, or
/// the ancestor's whose entry it is; 0 without an agent) and, for an
/// ancestor, its level (0 when the caller's own cgroup is the agent's).
#[inline(always)]
pub fn current_agent_cgroup() -> (u64, u64, u32, Option<AgentInfo>) {
    // SAFETY: a plain helper call with no arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: AGENTS values are plain data replaced whole by the daemon.
    if let Some(agent) = unsafe { AGENTS.get(&cgroup_id) } {
        return (cgroup_id, cgroup_id, 0, Some(*agent));
    }
    // An array lookup the verifier inlines: no helper call.
    let mut levels = AGENT_LEVELS.get(0).copied().unwrap_or(0);
    let mut level = limits::MAX_AGENT_LEVEL;
    // Bounded: one pass per level bit, deepest first.
    while levels != 0 && level > 0 {
        if levels & (1 << level) != 0 {
            levels &= !(1 << level);
            // SAFETY: a plain helper call; 0 when the caller's cgroup is
            // shallower than `level`.
            let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
            if ancestor != 0 && ancestor != cgroup_id {
                // SAFETY: as above.
                if let Some(agent) = unsafe { AGENTS.get(&ancestor) } {
                    return (cgroup_id, ancestor, level, Some(*agent));
                }
            }
        }
        level -= 1;
    }
    (cgroup_id, 0, 0, None)
}

/// The calling process's cgroup id and agent entry, if it runs in an agent
/// cgroup (or below one) whose policy governs `class` (an `agent_flags`
/// bit: `EXEC`, `FILE`) or that is revoked. The global programs call this
/// first, and every other process returns here.
#[inline(always)]
pub fn governing_agent(class: u32) -> Option<(u64, AgentInfo)> {
    let (cgroup_id, agent) = current_agent();
    let agent = agent?;
    if agent.flags & (class | agent_flags::REVOKED) == 0 {
        // The agent's policy does not govern this class of action.
        return None;
    }
    Some((cgroup_id, agent))
}
