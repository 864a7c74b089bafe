//! The decision cache of the fallback's opens (`DECISION_CACHE`; what makes
//! an entry valid is in `warden_common::decision_cache`'s module doc and in
//! the README, "what invalidates it").
//!
//! Only a repeat whose record would be counted anyway (its `SUMMARIES` key
//! exists) is decided from the cache: the first open of a key still gets
//! its walk and its individual record, so the evidence is the same with the
//! cache as without. Denials and holds are never cached.

use aya_ebpf::helpers::{bpf_get_current_task_btf, bpf_ktime_get_boot_ns};
use core::ptr::read_volatile;
use warden_common::{
    agent_counter, agent_flags, budget_class, counter, decision_cache, syscalls, AgentInfo,
    CacheEntry, CacheKey, Decision, EventKind,
};

use crate::{
    counters::{count, count_agent},
    events::{counted_repeat, summary_key},
    maps::{BUDGETS, DECISION_CACHE, DECISION_CACHE_CONF},
    path::{self, cache_state, off},
};

/// `thread_info.status` bit set during an ia32 syscall (x86).
const TS_COMPAT: u32 = 0x0002;

/// The cache's answer for one open: `epoch` is read before any walk (an
/// entry made from this open carries it), `hit` the cached allow's rule
/// with the file's `dev`/`ino`. Kept small: it lives across the walk.
pub struct Probe {
    pub epoch: u64,
    pub ino: u64,
    pub dev: u32,
    /// 0: no entry matched; else the cached rule + 1.
    pub hit: u32,
}

/// The cache's part of an open, before the walk (the fallback's open and
/// the BPF LSM / `fmod_ret` `file_open`): a repeat of an allow the cache
/// still vouches for, whose record would only be counted, is counted here
/// without the walk (`None`: the open is allowed and done). Otherwise the
/// epoch and `cache_state` bits the walk carries to `remember`
/// (`path::park_cache`). The decision is counted before the repeat, so a
/// sweep never sees more repeats than decisions.
#[inline(always)]
pub fn serve(agent: &AgentInfo, file: u64, requested: u32) -> Option<(u64, u32)> {
    let Some(p) = probe(agent, file, requested) else {
        return Some((0, 0));
    };
    let mut state = cache_state::ON;
    if p.hit != 0 {
        count_agent(agent.agent_id, agent_counter::DECISIONS);
        state |= cache_state::COUNTED;
        let repeat = summary_key(
            agent,
            Decision::Allow,
            EventKind::Open,
            p.hit - 1,
            requested,
            p.dev,
            p.ino,
            [0; 16],
        );
        if counted_repeat(&repeat) {
            count(counter::ALLOWED);
            count(counter::CACHE_HITS);
            return None;
        }
        // The first of this key (another process, or after a sweep):
        // walked and recorded in full.
    }
    Some((p.epoch, state))
}

/// The opened file's identity, as an entry would hold it.
#[inline(always)]
fn identity(file: u64, agent: &AgentInfo, requested: u32) -> Option<(CacheKey, CacheEntry, u32)> {
    let inode: u64 = path::read(file, off!(file_f_inode));
    let mnt: u64 = path::read(file, off!(file_f_path_mnt));
    if inode == 0 || mnt == 0 {
        return None;
    }
    let sb: u64 = path::read(inode, off!(inode_i_sb));
    let nlink: u32 = path::read(inode, off!(inode_i_nlink));
    let ctime_nsec: u32 = path::read(inode, off!(inode_i_ctime_nsec));
    let key = CacheKey {
        agent_id: agent.agent_id,
        policy_gen: agent.policy_gen,
        dev: path::read(sb, off!(sb_s_dev)),
        access: requested,
        ino: path::read(inode, off!(inode_i_ino)),
    };
    let entry = CacheEntry {
        inode,
        mnt,
        ctime_sec: path::read(inode, off!(inode_i_ctime_sec)),
        ctime_nsec: ctime_nsec & decision_cache::CTIME_NSEC_MASK,
        generation: path::read(inode, off!(inode_i_generation)),
        epoch: 0,
        at_ns: 0,
        rule_idx: 0,
        _pad: 0,
    };
    Some((key, entry, nlink))
}

/// Looks the opened file up. `None` when the cache is off (TTL 0, or this
/// kernel's inode fields unknown), the agent is revoked, it records
/// each allowed action (no repeat would be counted), or its shadow
/// candidate has file rules.
#[inline(always)]
pub fn probe(agent: &AgentInfo, file: u64, requested: u32) -> Option<Probe> {
    if off!(cache_valid) == 0 {
        return None;
    }
    if agent.flags & (agent_flags::EACH_ALLOWED | agent_flags::COUNT_ALL)
        == agent_flags::EACH_ALLOWED
        || agent.flags & agent_flags::REVOKED != 0
        // A `shadow:` candidate with file rules compares every open on its
        // path (`fallback::shadow`), which a hit would skip.
        || agent.flags & agent_flags::SHADOW_FILE != 0
    {
        return None;
    }
    let ttl = DECISION_CACHE_CONF
        .get(decision_cache::TTL_NS)
        .copied()
        .unwrap_or(0);
    if ttl == 0 {
        return None;
    }
    let epoch = DECISION_CACHE_CONF
        .get(decision_cache::EPOCH)
        .copied()
        .unwrap_or(0);
    let (key, now, nlink) = identity(file, agent, requested)?;
    let mut hit = 0;
    if nlink == 1 {
        // SAFETY: a map value, plain data, copied out at once.
        if let Some(c) = unsafe { DECISION_CACHE.get(&key) } {
            let c = *c;
            // SAFETY: a plain helper call with no arguments.
            let at = unsafe { bpf_ktime_get_boot_ns() };
            if c.inode == now.inode
                && c.mnt == now.mnt
                && c.ctime_sec == now.ctime_sec
                && c.ctime_nsec == now.ctime_nsec
                && c.generation == now.generation
                && c.epoch == epoch
                && at.wrapping_sub(c.at_ns) < ttl
            {
                hit = c.rule_idx.wrapping_add(1);
            }
        }
    }
    Some(Probe {
        epoch,
        ino: key.ino,
        dev: key.dev,
        hit,
    })
}

/// Remembers an allow the walk made (`rule_idx`), with the epoch read
/// before the walk (so a rename during it leaves the entry stale): only
/// for a file with one name, and not for an agent whose budgets count
/// opens (each open must pass through the budget's count, which a hit
/// would skip). The identity is read again here rather than kept across
/// the walk, which has no stack to spare.
#[inline(always)]
pub fn remember(epoch: u64, agent: &AgentInfo, file: u64, requested: u32, rule_idx: u32) {
    // SAFETY: plain data replaced whole by the daemon.
    if let Some(set) = unsafe { BUDGETS.get(&agent.slot) } {
        if set.classes & budget_class::FILE != 0 {
            return;
        }
    }
    let Some((key, mut entry, nlink)) = identity(file, agent, requested) else {
        return;
    };
    if nlink != 1 {
        return;
    }
    entry.epoch = epoch;
    // SAFETY: a plain helper call with no arguments.
    entry.at_ns = unsafe { bpf_ktime_get_boot_ns() };
    entry.rule_idx = rule_idx;
    let _ = DECISION_CACHE.insert(&key, &entry, 0);
}

/// At every syscall exit (while file rules are attached): a successful
/// rename, mount change or `pivot_root` of any process may have given a
/// cached file another path, so every entry stops matching. Outside those
/// syscalls this is a compare and a direct load.
#[inline(always)]
pub fn note_path_change(regs: *const u8, ret: i64) {
    if ret != 0 || !path::offsets_valid() {
        return;
    }
    // SAFETY: the tracepoint's typed `struct pt_regs *` at a frozen
    // offset: a direct load, as in `file::decide`.
    let orig_ax = off!(pt_regs_orig_ax) as usize;
    let nr = unsafe { read_volatile(regs.add(orig_ax).cast::<u64>()) } as u32;
    let native = nr & !syscalls::X32_BIT;
    let mut changed = false;
    for n in decision_cache::PATH_CHANGES {
        if native == n {
            changed = true;
        }
    }
    if !changed {
        let mut ia32 = false;
        for n in decision_cache::IA32_PATH_CHANGES {
            if nr == n {
                ia32 = true;
            }
        }
        if !ia32 {
            return;
        }
        // These numbers are common 64-bit syscalls (access, pipe,
        // getdents64): only an ia32 call counts.
        // SAFETY: a direct, BTF-checked load from the typed current task.
        let task = unsafe { bpf_get_current_task_btf() } as *const u8;
        let ti_status = off!(task_ti_status) as usize;
        // SAFETY: as above.
        let status = unsafe { read_volatile(task.add(ti_status).cast::<u32>()) };
        if status & TS_COMPAT == 0 {
            return;
        }
    }
    bump();
}

/// Moves the epoch on, from the `fexit` programs after a change of paths
/// completed (`cache_epoch.rs`: BPF LSM and `fmod_ret` hosts, which have
/// no `sys_exit` to see it). One atomic add for every process on the
/// machine: no agent lookup first, an outsider's rename counts too.
#[inline(always)]
pub fn bump_epoch() {
    let Some(ptr) = DECISION_CACHE_CONF.get_ptr_mut(decision_cache::EPOCH) else {
        return;
    };
    // SAFETY: an aligned u64 in an array map value, valid for the run. The
    // result is unused, so this is BPF_ATOMIC_ADD without fetch (any
    // kernel with trampolines has it).
    unsafe {
        let _ = core::intrinsics::atomic_xadd::<
            u64,
            u64,
            { core::intrinsics::AtomicOrdering::SeqCst },
        >(ptr, 1);
    }
}

/// Moves the epoch on. One compare-and-swap: if it fails, another CPU
/// moved the epoch after this syscall's change took effect, which
/// invalidates the same entries.
#[inline(always)]
fn bump() {
    let Some(ptr) = DECISION_CACHE_CONF.get_ptr_mut(decision_cache::EPOCH) else {
        return;
    };
    // SAFETY: an aligned u64 in an array map value, valid for the run.
    unsafe {
        let old = read_volatile(ptr);
        let _ = core::intrinsics::atomic_cxchg::<
            u64,
            { core::intrinsics::AtomicOrdering::SeqCst },
            { core::intrinsics::AtomicOrdering::SeqCst },
        >(ptr, old, old.wrapping_add(1));
    }
}
