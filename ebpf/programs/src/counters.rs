//! The per-CPU counters beside the ring buffer (`COUNTERS`, and
//! `AGENT_COUNTERS` per agent), so the daemon can tell what went unrecorded.

use warden_common::{agent_counter, AgentCounters};

use crate::maps::{AGENT_COUNTERS, COUNTERS};

/// Adds one to a per-CPU counter. Per-CPU, so no atomics are needed.
#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: the pointer is to this CPU's slot of a map value, valid for
        // the duration of the program; nothing else writes it concurrently.
        unsafe { *slot += 1 };
    }
}

/// Adds one to a field (`agent_counter`) of this CPU's `AgentCounters` of
/// `agent_id`, creating the entry on first use.
#[inline(always)]
pub fn count_agent(agent_id: u32, field: u32) {
    let slot = match AGENT_COUNTERS.get_ptr_mut(agent_id) {
        Some(p) => p,
        None => {
            // BPF_NOEXIST: another CPU may have created it meanwhile.
            let _ = AGENT_COUNTERS.insert(agent_id, AgentCounters::default(), 1);
            match AGENT_COUNTERS.get_ptr_mut(agent_id) {
                Some(p) => p,
                None => return,
            }
        }
    };
    // SAFETY: the pointer is to this CPU's copy of a map value, valid for
    // the duration of the program; nothing else writes it concurrently.
    unsafe {
        match field {
            agent_counter::DECISIONS => (*slot).decisions += 1,
            agent_counter::DROPPED => (*slot).dropped += 1,
            _ => (*slot).allowed_unrecorded += 1,
        }
    }
}
