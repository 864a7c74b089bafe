//! Repeated allowed actions (and repeated denials that refuse without a
//! kill), counted in the kernel (`SUMMARIES`): the first action of a key goes to the ring buffer as an individual record;
//! its repeats only add one to the key's count. The daemon sweeps the map
//! every interval, writes one `summary` entry per key with a nonzero count,
//! and deletes the key, so the next repeat is recorded individually again.
//!
//! A non-LRU hash of bounded size: when it is full, a new key is not
//! counted and every action of it is recorded individually (nothing is
//! evicted, so no count is lost to eviction).

use core::mem::size_of;

/// Key of `SUMMARIES`: what makes two allowed actions "the same".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SummaryKey {
    pub agent_id: u32,
    /// The policy version that decided (`AgentInfo::policy_gen`).
    pub policy_gen: u32,
    /// Thread group id of the acting process; 0 when the agent's repeats
    /// are counted per agent (`agent_flags::COUNT_PER_AGENT`).
    pub tgid: u32,
    /// `EventKind` of the action.
    pub kind: u32,
    /// The rule that allowed it.
    pub rule_idx: u32,
    /// Open: the `access` bits. Network: `port | proto << 16`. Exec: 0.
    pub access: u32,
    /// File identity (open, exec): `sb->s_dev` as in the events, else 0.
    pub dev: u32,
    /// `Decision` of the action: `Allow` for repeated allowed actions,
    /// `Deny` for repeated denials the kernel refuses without killing
    /// (`evidence: { denied: first-then-count }`, network hooks).
    pub decision: u32,
    pub ino: u64,
    /// Network: the destination address as in `NetEvent`, else zeros.
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<SummaryKey>() == 56);

/// A bit of `SummaryKey::decision`: the key was counted while the evidence
/// cap held (`agent_flags::COUNT_ALL`), so its count includes the first
/// action, which has no individual record.
pub const SUMMARY_COUNT_ALL: u32 = 0x100;

/// A bit of `SummaryKey::decision`: the key counts a shadow candidate's
/// differences (`Method::Shadow`); the low byte is the candidate's
/// decision, bits 12..16 the enforced one (`shadow_summary_decision`),
/// `rule_idx` the candidate's rule, `dev` the enforced rule.
pub const SUMMARY_SHADOW: u32 = 0x200;

/// `SummaryKey::decision` of a shadow difference.
pub const fn shadow_summary_decision(candidate: u32, enforced: u32) -> u32 {
    candidate | SUMMARY_SHADOW | (enforced & 0xf) << 12
}

/// Value of `SUMMARIES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SummaryCount {
    /// Repeats since the individual record (or the last sweep).
    pub count: u64,
    /// `bpf_ktime_get_boot_ns()` of the individual record.
    pub first_ns: u64,
    /// Of the latest repeat (`first_ns` while `count` is 0).
    pub last_ns: u64,
}
const _: () = assert!(size_of::<SummaryCount>() == 24);
