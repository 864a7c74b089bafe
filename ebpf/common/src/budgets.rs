//! Policy budgets: per agent, a count of actions over a fixed window that
//! the kernel keeps and enforces itself (so budgets hold with the daemon
//! stopped). The daemon writes each agent's `BudgetSet` under its rule slot
//! in `BUDGETS`; the programs count allowed actions in `BUDGET_USE` and,
//! past a budget's limit, carry out its `then` (deny, hold or kill) with
//! the budget named in the record (`rule::budget`).

use core::mem::size_of;

/// Most budgets one policy may have.
pub const MAX_BUDGETS: usize = 8;
/// Most rules one budget's `match: { rule: .. }` may name.
pub const MAX_BUDGET_MATCH: usize = 8;

/// `BudgetRule::classes` bits: which actions a budget counts.
pub mod budget_class {
    pub const CONNECT: u32 = 1 << 0;
    pub const EXEC: u32 = 1 << 1;
    pub const FILE: u32 = 1 << 2;
    /// `bytes: egress`: bytes the agent's sockets send, counted by the
    /// `cgroup_skb/egress` program (`limit` in bytes, at most `u32::MAX`).
    pub const EGRESS_BYTES: u32 = 1 << 3;
    /// `count: dns`: questions the daemon's DNS proxy allows; counted by
    /// the daemon in `BUDGET_USE` (same encoding), no program has it.
    pub const DNS: u32 = 1 << 4;
}

/// `BudgetRule::then`: what the kernel does with an action over the limit.
pub mod budget_then {
    pub const DENY: u32 = 1;
    pub const HOLD: u32 = 2;
    pub const KILL: u32 = 3;
}

/// One budget, compiled.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BudgetRule {
    /// `budget_class` bits.
    pub classes: u32,
    /// `budget_then`.
    pub then: u32,
    /// Actions allowed per window (at most `u32::MAX`).
    pub limit: u64,
    /// Window length in nanoseconds (`bpf_ktime_get_ns` clock); windows are
    /// aligned to multiples of it, so the kernel rolls them over itself.
    pub per_ns: u64,
    /// 0: every action of `classes` counts; else only those decided by
    /// one of the first `match_count` rule indexes of `match_rules`.
    pub match_count: u32,
    pub match_rules: [u32; MAX_BUDGET_MATCH],
    pub _pad: u32,
}
const _: () = assert!(size_of::<BudgetRule>() == 64);

/// Value of `BUDGETS`, keyed by agent rule slot (`u32`, as `SOCK_RULES`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BudgetSet {
    pub count: u32,
    /// Union of the budgets' `classes`: a hook whose class is not here
    /// skips the budgets.
    pub classes: u32,
    pub budgets: [BudgetRule; MAX_BUDGETS],
}
const _: () = assert!(size_of::<BudgetSet>() == 8 + 64 * MAX_BUDGETS);

/// Key of `BUDGET_USE`: one budget (its index in the policy) of one agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct BudgetUseKey {
    pub agent_id: u32,
    pub index: u32,
}
const _: () = assert!(size_of::<BudgetUseKey>() == 8);

/// Value of `BUDGET_USE`: the window number (`ktime / per_ns`) in the high
/// 32 bits, the actions counted in it in the low 32 (never above the
/// limit: an action over it is not counted). One word, so the kernel moves
/// it with compare-and-swap and two CPUs never lose each other's counts.
pub mod budget_use {
    pub const fn window(v: u64) -> u64 {
        v >> 32
    }
    pub const fn count(v: u64) -> u64 {
        v & 0xffff_ffff
    }
    pub const fn pack(window: u64, count: u64) -> u64 {
        (window << 32) | (count & 0xffff_ffff)
    }
}

/// Value of `EGRESS_DROPS` (per CPU), keyed by `BudgetUseKey`: packets an
/// egress byte budget dropped since the daemon last swept the key (it
/// reads and deletes it, as `SUMMARIES`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EgressDrops {
    pub packets: u64,
    /// Sum of the dropped packets' `skb->len`.
    pub bytes: u64,
    /// `bpf_ktime_get_boot_ns()` of the first and latest drop counted here.
    pub first_ns: u64,
    pub last_ns: u64,
    /// The budget window (`ktime / per_ns`) of the latest drop.
    pub window: u64,
}
const _: () = assert!(size_of::<EgressDrops>() == 40);
