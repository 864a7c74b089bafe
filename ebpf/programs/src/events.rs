//! Writing decisions down: the ring buffer records every hook fills, when
//! they wake the daemon, and what happens to an action whose record finds
//! no room (`unrecorded`).

use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns,
    generated,
};
use warden_common::{
    agent_counter, agent_flags, limits, AgentInfo, Decision, EventHeader, EventKind, ExecEvent,
    Method, OpenEvent, SummaryCount, SummaryKey, EVENT_PATH_BYTES, SUMMARY_COUNT_ALL,
};

use crate::{
    counters::{count, count_agent, count_loss},
    judge::{exec, file},
    maps::{AGENT_BUDGET, EVENTS, HEARTBEAT, OVERFLOW, PARK_SCRATCH, SUMMARIES},
    path::{self, Scratch},
};

/// Whether a daemon is draining: its heartbeat (`HEARTBEAT`) is fresher
/// than the staleness it wrote beside it.
#[inline(always)]
fn daemon_draining() -> bool {
    use warden_common::heartbeat;
    let last = HEARTBEAT.get(heartbeat::LAST_NS).copied().unwrap_or(0);
    let stale = HEARTBEAT.get(heartbeat::STALE_NS).copied().unwrap_or(0);
    // SAFETY: a plain helper call with no arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    stale != 0 && now.saturating_sub(last) < stale
}

/// Backpressure, for an ALLOWED action whose record found the ring buffer
/// full: busy is not hostile. If a daemon is draining, the record is built
/// by `fill` (`len` bytes) and parked in `OVERFLOW` under the thread's id,
/// and with `stop` the thread is stopped (SIGSTOP) before it returns to user
/// space; the daemon writes the record down, then continues the thread
/// (SIGCONT). A SIGCONT from anyone else only lets the allowed action go on
/// with its record still parked. Returns false (then `unrecorded` decides,
/// `on_evidence_loss`) if no daemon is draining, the map is full, or this
/// thread already has a record parked.
#[inline(always)]
pub fn park(len: u32, stop: bool, fill: impl FnOnce(*mut u8)) -> bool {
    use warden_common::{parked_flags, SIGSTOP};
    if !daemon_draining() {
        return false;
    }
    let Some(p) = PARK_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's scratch value, valid for the program run; the
    // record is built in place (it is too big for the stack).
    unsafe {
        (*p).flags = if stop { parked_flags::STOPPED } else { 0 };
        (*p).len = len;
        fill((*p).event.as_mut_ptr().cast());
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    // BPF_NOEXIST: a record already parked for this thread is never
    // overwritten.
    // SAFETY: `p` is valid as above.
    if OVERFLOW.insert(&tid, unsafe { &*p }, 1).is_err() {
        return false;
    }
    count(warden_common::counter::PARKED);
    if stop {
        // SAFETY: a plain helper call on the current thread. If it fails
        // (exiting task), the action goes on with its record parked, and
        // the daemon's SIGCONT finds nothing stopped.
        let _ = unsafe { generated::bpf_send_signal_thread(SIGSTOP) };
    }
    true
}

/// An event for a decision of `agent_id` could not be reserved (the ring
/// buffer is full). Counts it, and says whether the action may go ahead
/// unrecorded: only if the policy allowed it and the agent's policy says
/// `on_evidence_loss: allow`. Otherwise it is refused (fail-closed).
#[inline(always)]
pub fn unrecorded(agent: &AgentInfo, kind: EventKind, policy_allows: bool) -> bool {
    let open = policy_allows && agent.flags & agent_flags::FAIL_OPEN != 0;
    count_loss(
        agent.agent_id,
        kind as u32,
        if open {
            warden_common::loss::ALLOWED_UNRECORDED
        } else {
            warden_common::loss::DROPPED
        },
    );
    if !open {
        count(warden_common::counter::DROPPED);
    }
    count_agent(
        agent.agent_id,
        if open {
            agent_counter::ALLOWED_UNRECORDED
        } else {
            agent_counter::DROPPED
        },
    );
    open
}

/// The header every event starts with: what was decided, under which
/// policy version, and who the kernel says was calling.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn event_header(
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
pub fn submit_flags(allowed: bool, size: u64) -> u64 {
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

/// Bytes waiting in the ring buffer, this (reserved) record included.
#[inline(always)]
pub fn waiting() -> u64 {
    use aya_ebpf::bindings::BPF_RB_AVAIL_DATA;
    EVENTS.query(BPF_RB_AVAIL_DATA as u64)
}

/// `submit_flags` for an allowed record when `waiting` is already known.
#[inline(always)]
pub fn wake_flags(waiting: u64, size: u64) -> u64 {
    use aya_ebpf::bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
    let threshold = limits::EVENTS_WAKEUP_BYTES;
    if waiting >= threshold && waiting < threshold + size + 8 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Takes one token from `agent_id`'s share of the congested ring buffer
/// (`AGENT_BUDGET`); false if it has none left. An agent without a
/// budget entry is not limited.
#[inline(always)]
pub fn within_share(agent_id: u32) -> bool {
    let Some(b) = AGENT_BUDGET.get_ptr_mut(&agent_id) else {
        return true;
    };
    // SAFETY: a plain helper call with no arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    // SAFETY: a pointer to a map value, valid for the program run; racing
    // CPUs may both refill (see `Budget`).
    unsafe {
        // At most a second counts (the burst caps the bucket anyway), so
        // the product fits in 64 bits (BPF has no 128-bit multiply) for
        // any rate up to 10^9 per second.
        let mut elapsed = now.wrapping_sub((*b).last_ns);
        if elapsed > 1_000_000_000 {
            elapsed = 1_000_000_000;
        }
        let rate = if (*b).rate > 1_000_000_000 {
            1_000_000_000
        } else {
            (*b).rate
        };
        // Whole tokens earned since `last_ns`; the remainder carries over
        // because `last_ns` only advances with them.
        let earned = elapsed * rate / 1_000_000_000;
        if earned > 0 {
            let tokens = (*b).tokens.saturating_add(earned);
            (*b).tokens = if tokens > (*b).burst {
                (*b).burst
            } else {
                tokens
            };
            (*b).last_ns = now;
        }
        if (*b).tokens == 0 {
            return false;
        }
        (*b).tokens -= 1;
    }
    true
}

/// Fills a reserved exec event: the header, the resolved path (from the
/// scratch space) and the caller's name for the file (`bprm->filename`).
#[inline(always)]
pub fn fill_exec(
    ev: *mut ExecEvent,
    j: &exec::Judged,
    decision: Decision,
    method: Method,
    flags: u32,
    s: &Scratch,
) {
    let c = &j.carry;
    // SAFETY: `ev` points at a reserved ExecEvent in the ring buffer; every
    // field is written before submit.
    unsafe {
        (*ev).header = event_header(
            EventKind::Exec,
            decision,
            method,
            j.rule_idx,
            c.agent_id,
            c.policy_gen,
            c.cgroup_id,
        );
        (*ev).dev = c.dev;
        (*ev).flags = flags;
        (*ev).ino = c.ino;
        (*ev).path_len = j.len;
        (*ev)._pad = 0;
        path::copy_to(core::ptr::addr_of_mut!((*ev).path), s);
        let filename_dst = core::ptr::addr_of_mut!((*ev).filename);
        if generated::bpf_probe_read_kernel_str(
            filename_dst.cast(),
            EVENT_PATH_BYTES as u32,
            c.filename as *const _,
        ) < 0
        {
            (*filename_dst)[0] = 0;
        }
    }
}

/// Fills a reserved open event.
#[inline(always)]
pub fn fill_open(
    ev: *mut OpenEvent,
    j: &file::Judged,
    decision: Decision,
    method: Method,
    flags: u32,
    s: &Scratch,
) {
    let c = &j.carry;
    // SAFETY: `ev` points at a reserved OpenEvent; every field is written.
    unsafe {
        (*ev).header = event_header(
            EventKind::Open,
            decision,
            method,
            j.rule_idx,
            c.agent_id,
            c.policy_gen,
            c.cgroup_id,
        );
        (*ev).dev = c.dev;
        (*ev).flags = flags;
        (*ev).ino = c.ino;
        (*ev).path_len = j.len;
        (*ev).access = c.access;
        (*ev).syscall = c.syscall;
        (*ev).syscall_compat = c.compat;
        (*ev).read_rule = j.read_rule;
        (*ev).write_rule = j.write_rule;
        path::copy_to(core::ptr::addr_of_mut!((*ev).path), s);
    }
}

/// The key of a repeated allowed action, or `None` when the agent's policy
/// records each allowed action (`evidence: { allowed: each }`) or the
/// decision is not a plain allow (denials and holds stay individual).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn summary_key(
    agent: &AgentInfo,
    decision: Decision,
    kind: EventKind,
    rule_idx: u32,
    access: u32,
    dev: u32,
    ino: u64,
    addr: [u8; 16],
) -> Option<SummaryKey> {
    if decision != Decision::Allow {
        return None;
    }
    if agent.flags & agent_flags::COUNT_ALL != 0 {
        return Some(count_all(repeat_key(
            agent, decision, kind, rule_idx, access, dev, ino, addr,
        )));
    }
    if agent.flags & agent_flags::EACH_ALLOWED != 0 {
        return None;
    }
    Some(repeat_key(
        agent, decision, kind, rule_idx, access, dev, ino, addr,
    ))
}

/// The key of a repeated denial, for hooks that refuse without killing
/// (the caller chooses: a kill stays one entry each), or `None` when the
/// decision is not a denial, the agent's policy records each denial
/// (`evidence: { denied: each }`), or the agent is in record mode (its
/// would-be denials go ahead and stay individual).
#[inline(always)]
pub fn denial_key(
    agent: &AgentInfo,
    decision: Decision,
    kind: EventKind,
    rule_idx: u32,
    access: u32,
    addr: [u8; 16],
) -> Option<SummaryKey> {
    if decision != Decision::Deny || agent.flags & agent_flags::RECORD != 0 {
        return None;
    }
    if agent.flags & agent_flags::COUNT_ALL != 0 {
        return Some(count_all(repeat_key(
            agent, decision, kind, rule_idx, access, 0, 0, addr,
        )));
    }
    if agent.flags & agent_flags::EACH_DENIED != 0 {
        return None;
    }
    Some(repeat_key(
        agent, decision, kind, rule_idx, access, 0, 0, addr,
    ))
}

/// `denial_key` for a refusal of an exec or open without a kill (BPF LSM,
/// `fmod_ret`: EPERM): the file's identity (`dev`, `ino`) is in the key,
/// as in an allowed open's (`summary_key`).
#[inline(always)]
pub fn file_denial_key(
    agent: &AgentInfo,
    decision: Decision,
    kind: EventKind,
    rule_idx: u32,
    access: u32,
    dev: u32,
    ino: u64,
) -> Option<SummaryKey> {
    let mut key = denial_key(agent, decision, kind, rule_idx, access, [0; 16])?;
    key.dev = dev;
    key.ino = ino;
    Some(key)
}

/// Marks a key counted under the evidence cap: its first is counted too.
#[inline(always)]
fn count_all(mut key: SummaryKey) -> SummaryKey {
    key.decision |= SUMMARY_COUNT_ALL;
    key
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn repeat_key(
    agent: &AgentInfo,
    decision: Decision,
    kind: EventKind,
    rule_idx: u32,
    access: u32,
    dev: u32,
    ino: u64,
    addr: [u8; 16],
) -> SummaryKey {
    SummaryKey {
        agent_id: agent.agent_id,
        policy_gen: agent.policy_gen,
        // Under the evidence cap too: one key per agent and target keeps
        // the summaries (and `SUMMARIES`) small for many short processes.
        tgid: if agent.flags & (agent_flags::COUNT_PER_AGENT | agent_flags::COUNT_ALL) != 0 {
            0
        } else {
            (bpf_get_current_pid_tgid() >> 32) as u32
        },
        kind: kind as u32,
        rule_idx,
        access,
        dev,
        decision: decision as u32,
        ino,
        addr,
    }
}

/// A repeat of an allowed action already recorded: counts it in
/// `SUMMARIES` and returns true (no record is written). The hit path is one
/// hash lookup, an add and a clock read, instead of a ring buffer reserve,
/// a ~700-byte fill and a submit.
#[inline(always)]
pub fn counted_repeat(key: &Option<SummaryKey>) -> bool {
    let Some(key) = key else {
        return false;
    };
    let v = match SUMMARIES.get_ptr_mut(key) {
        Some(v) => v,
        // Under the evidence cap the first is counted as well: the key is
        // made here, with no record. A full map leaves it out (recorded
        // individually, as without the cap).
        None if key.decision & SUMMARY_COUNT_ALL != 0 => {
            // SAFETY: a plain helper call with no arguments.
            let now = unsafe { bpf_ktime_get_boot_ns() };
            let first = SummaryCount {
                count: 1,
                first_ns: now,
                last_ns: now,
            };
            // BPF_NOEXIST: when another CPU made the key first, this CPU's
            // (zeroed) copy is counted below instead.
            if SUMMARIES.insert(key, &first, 1).is_ok() {
                return true;
            }
            match SUMMARIES.get_ptr_mut(key) {
                Some(v) => v,
                None => return false,
            }
        }
        None => return false,
    };
    // SAFETY: `v` points at this CPU's copy of a map value, valid for the
    // program's run; nothing else writes it concurrently. Another CPU's
    // copy starts zeroed: its first repeat sets `first_ns`.
    unsafe {
        let now = bpf_ktime_get_boot_ns();
        (*v).count += 1;
        if (*v).first_ns == 0 {
            (*v).first_ns = now;
        }
        (*v).last_ns = now;
    }
    true
}

/// The action of `key` is being recorded individually (its record is
/// reserved): from now on its repeats are counted. A full map leaves the
/// key out, and its repeats are recorded individually.
#[inline(always)]
pub fn first_recorded(key: &Option<SummaryKey>) {
    if let Some(key) = key {
        // SAFETY: a plain helper call with no arguments.
        let now = unsafe { bpf_ktime_get_boot_ns() };
        let first = SummaryCount {
            count: 0,
            first_ns: now,
            last_ns: now,
        };
        // BPF_NOEXIST: another CPU's first may have won; either is fine.
        let _ = SUMMARIES.insert(key, &first, 1);
    }
}
