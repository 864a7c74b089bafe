//! Warden's kernel programs.
//!
//! Every program here decides from maps the daemon fills (policy is data, see
//! `warden_common`); nothing about any particular agent is compiled in.
//!
//! - `net`: cgroup sock_addr programs attached to each agent's cgroup, so
//!   processes outside agent cgroups never run them.
//! - `hold`: the `sys_exit` program that stops a thread whose syscall a hook
//!   held for human approval.
#![no_std]
#![no_main]

mod hold;
mod net;

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LpmTrie, PerCpuArray, RingBuf},
};
use warden_common::{limits, AgentInfo, HoldKey, Net4Key, Net6Key, NetRules};

#[map]
static AGENTS: HashMap<u64, AgentInfo> = HashMap::with_max_entries(limits::MAX_AGENTS, 0);

#[map]
static NET4_RULES: LpmTrie<Net4Key, NetRules> =
    LpmTrie::with_max_entries(limits::MAX_NET_ENTRIES, 0);

#[map]
static NET6_RULES: LpmTrie<Net6Key, NetRules> =
    LpmTrie::with_max_entries(limits::MAX_NET_ENTRIES, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(limits::EVENTS_BYTES, 0);

/// Threads a hook has just held: `sys_exit` stops them (tid -> 1).
#[map]
static HELD: HashMap<u32, u32> = HashMap::with_max_entries(limits::MAX_HOLDS, 0);

/// Human decisions on held actions, written by the daemon before it resumes
/// the thread, consumed by the hook when the syscall restarts.
#[map]
static GRANTS: HashMap<HoldKey, u32> = HashMap::with_max_entries(limits::MAX_HOLDS, 0);

#[map]
static COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(warden_common::counter::COUNT, 0);

/// Adds one to a per-CPU counter. Per-CPU, so no atomics are needed.
#[inline(always)]
fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: the pointer is to this CPU's slot of a map value, valid for
        // the duration of the program; nothing else writes it concurrently.
        unsafe { *slot += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
