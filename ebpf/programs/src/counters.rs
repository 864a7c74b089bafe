//! The per-CPU counters beside the ring buffer (`COUNTERS`, and
//! `AGENT_COUNTERS` per agent), so the daemon can tell what went unrecorded.

use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns};
use warden_common::{agent_counter, loss, AgentCounters, LossCounts, LossKey};

use crate::maps::{AGENT_COUNTERS, AGENT_LOSS, COUNTERS};

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

/// Counts an action of `agent_id` of class `kind` (`EventKind`) whose
/// record found no room (`loss` field), with the process that lost it.
/// Only on the ring-buffer-full and over-share paths.
#[inline(always)]
pub fn count_loss(agent_id: u32, kind: u32, field: u32) {
    let key = LossKey { agent_id, kind };
    let slot = match AGENT_LOSS.get_ptr_mut(&key) {
        Some(p) => p,
        None => {
            let _ = AGENT_LOSS.insert(&key, &LossCounts::default(), 1);
            match AGENT_LOSS.get_ptr_mut(&key) {
                Some(p) => p,
                None => return,
            }
        }
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: this CPU's copy of a map value, valid for the program run.
    unsafe {
        match field {
            loss::DROPPED => (*slot).dropped += 1,
            loss::ALLOWED_UNRECORDED => (*slot).allowed_unrecorded += 1,
            _ => (*slot).throttled += 1,
        }
        (*slot).last_pid = (pid_tgid >> 32) as u32;
        (*slot).last_tid = pid_tgid as u32;
        (*slot).last_comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*slot).last_ns = bpf_ktime_get_boot_ns();
    }
}
