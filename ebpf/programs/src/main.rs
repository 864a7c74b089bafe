//! Warden's kernel programs.
//!
//! Every program here decides from maps the daemon fills (policy is data, see
//! `warden_common`); nothing about any particular agent is compiled in.
//!
//! - `net`: cgroup sock_addr programs attached to each agent's cgroup, so
//!   processes outside agent cgroups never run them.
//! - `exec`: `tp_btf/sched_process_exec`, a global tracepoint filtered on
//!   agent cgroups first; denies by SIGKILL before the first instruction,
//!   holds by SIGSTOP there.
//! - `sys_exit`: the one `tp_btf/sys_exit` program. It stops threads whose
//!   syscall a hook held for human approval, guards threads a fallback
//!   hold stopped (`hold`), and decides agents' file opens after the open
//!   syscalls (`file`; deny = SIGKILL, hold = SIGSTOP).
//! - `hold::warden_fault_guard`: `tp_btf/page_fault_user`, attached only
//!   while some policy holds execs on the fallback.
//! - `lsm`: BPF LSM hooks (`bprm_check_security`, `file_open`), used
//!   instead of `exec` and the open part of `sys_exit` where the kernel
//!   runs BPF LSM: they decide from the same maps with the same judges
//!   (`exec::judge`, `file::judge`) and deny by failing the syscall with
//!   EPERM; `hold` stops the thread inside execve or open, which restart.
//! - `path`: the bounded dentry walk that resolves a file's path.
#![no_std]
#![no_main]

mod exec;
mod file;
mod hold;
mod lsm;
mod net;
mod path;
mod sys_exit;

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, PerCpuHashMap, RingBuf},
};
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_uid_gid, bpf_ktime_get_boot_ns,
};
use warden_common::{
    agent_counter, agent_flags, limits, AgentCounters, AgentInfo, Decision, EventHeader, EventKind,
    FileRule, Held, HoldKey, Method, Net4Key, Net6Key, NetRules, PathKey, PathRule,
};

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

/// Threads a hold stopped or is about to stop, by thread id (see `Held`).
#[map]
static HELD: HashMap<u32, Held> = HashMap::with_max_entries(limits::MAX_HOLDS, 0);

/// Human decisions on held actions, written by the daemon before it resumes
/// the thread, consumed by the hook when the syscall restarts.
#[map]
static GRANTS: HashMap<HoldKey, u32> = HashMap::with_max_entries(limits::MAX_HOLDS, 0);

/// Exec rules, by (slot, resolved path of the executed file).
#[map]
static EXEC_RULES: LpmTrie<PathKey, PathRule> =
    LpmTrie::with_max_entries(limits::MAX_PATH_ENTRIES, 0);

/// File rules, by (slot, resolved path of the opened file), per access.
#[map]
static FILE_RULES: LpmTrie<PathKey, FileRule> =
    LpmTrie::with_max_entries(limits::MAX_PATH_ENTRIES, 0);

/// `[0]`: what the `sys_exit` program does (`sys_exit_mode` bits), set by
/// the daemon. `[1]`: non-zero while a fallback hold may have paused a
/// thread (set by `hold::pause`, cleared by the daemon when `HELD` has no
/// paused thread).
#[map]
static SYS_EXIT_MODE: Array<u32> = Array::with_max_entries(2, 0);

/// Scratch space of the path walk, one per CPU (too big for the stack).
#[map]
static PATH_SCRATCH: PerCpuArray<path::Scratch> = PerCpuArray::with_max_entries(1, 0);

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

/// What the kernel decided per agent (agent id -> counts), so the daemon
/// can name the agent whose actions went unrecorded.
#[map]
static AGENT_COUNTERS: PerCpuHashMap<u32, AgentCounters> =
    PerCpuHashMap::with_max_entries(limits::MAX_AGENTS + 1, 0);

/// Adds one to a field (`agent_counter`) of this CPU's `AgentCounters` of
/// `agent_id`, creating the entry on first use.
#[inline(always)]
fn count_agent(agent_id: u32, field: u32) {
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

/// An event for a decision of `agent_id` could not be reserved (the ring
/// buffer is full). Counts it, and says whether the action may go ahead
/// unrecorded: only if the policy allowed it and the agent's policy says
/// `on_evidence_loss: allow`. Otherwise it is refused (fail-closed).
#[inline(always)]
fn unrecorded(agent: &AgentInfo, policy_allows: bool) -> bool {
    let open = policy_allows && agent.flags & agent_flags::FAIL_OPEN != 0;
    if !open {
        count(warden_common::counter::DROPPED);
    }
    count_agent(
        agent.agent_id,
        if open { agent_counter::ALLOWED_UNRECORDED } else { agent_counter::DROPPED },
    );
    open
}

/// The calling process's cgroup id and agent entry, if it runs in an agent
/// cgroup whose policy governs `class` (an `agent_flags` bit: `EXEC`,
/// `FILE`) or that is revoked. The global programs call this first, and
/// every other process returns here after one hash lookup.
#[inline(always)]
fn governing_agent(class: u32) -> Option<(u64, AgentInfo)> {
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

/// The header every event starts with: what was decided, under which
/// policy version, and who the kernel says was calling.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn event_header(
    kind: EventKind,
    decision: Decision,
    method: Method,
    rule_idx: u32,
    agent_id: u32,
    policy_gen: u32,
    cgroup_id: u64,
) -> EventHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    EventHeader {
        kind: kind as u32,
        decision: decision as u32,
        method: method as u32,
        rule_idx,
        agent_id,
        policy_gen,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        cgroup_id,
        // SAFETY: a plain helper call with no arguments.
        boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

/// `bpf_ringbuf_submit` flags for a decision of `size`
/// bytes. Waking the daemon is a self-IPI (measured ~10 us per event at
/// exec in this VM: more than the decision itself), and the kernel's
/// default wakes it for every event while it is idle. So allowed decisions
/// are submitted without a wake-up and the daemon collects them on its poll
/// tick (`limits::EVENTS_POLL_MS`), except the one event that makes the
/// backlog cross `EVENTS_WAKEUP_BYTES`, which wakes it so that a burst
/// cannot fill the ring buffer between ticks (a full ring buffer fails
/// closed: the action is killed). A denial wakes it if it is idle.
#[inline(always)]
fn submit_flags(allowed: bool, size: u64) -> u64 {
    use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
    if !allowed {
        return 0;
    }
    // Includes this (reserved) record.
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let threshold = limits::EVENTS_WAKEUP_BYTES;
    if waiting >= threshold && waiting < threshold + size + 8 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
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
