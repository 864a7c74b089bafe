//! The budget judge: after the rules allowed an action, whether one of the
//! agent's budgets (`BUDGETS`, by rule slot) counts it and is already at its
//! limit in the current window. Counts live in `BUDGET_USE`, one word per
//! (agent, budget) moved by compare-and-swap, so racing CPUs never lose a
//! count and never let more than `limit` actions through in one window.
//! Windows are aligned to `per_ns` on the `bpf_ktime_get_ns` clock: the
//! kernel rolls them over itself, with or without a daemon.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use warden_common::{
    budget_then, budget_use, rule, AgentInfo, BudgetRule, BudgetUseKey, Decision, MAX_BUDGETS,
    MAX_BUDGET_MATCH,
};

use crate::maps::{BUDGETS, BUDGET_USE};

/// What an over-budget action gets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Deny,
    Hold,
    Kill,
}

/// The budget verdict on an allowed action of `class` (`budget_class`),
/// decided by rule `rule_idx`: `None` when no budget refuses it (every
/// budget that counts it has counted it), else what to do and the
/// `rule_idx` that names the budget.
#[inline(always)]
pub fn over(agent_id: u32, slot: u32, class: u32, rule_idx: u32) -> Option<(Over, u32)> {
    // SAFETY: plain data replaced whole by the daemon.
    let set = unsafe { BUDGETS.get(&slot) }?;
    if set.classes & class == 0 {
        return None;
    }
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    for i in 0..MAX_BUDGETS {
        if i as u32 >= set.count {
            break;
        }
        let b = &set.budgets[i];
        if b.classes & class == 0 || !matches(b, rule_idx) {
            continue;
        }
        if !take(agent_id, i as u32, b, now) {
            let then = match b.then {
                budget_then::HOLD => Over::Hold,
                budget_then::KILL => Over::Kill,
                _ => Over::Deny,
            };
            return Some((then, rule::budget(i as u32)));
        }
    }
    None
}

/// What every hook carries out for an action its rules judged: an
/// allowed one is counted against the budgets, and over one it is refused
/// (deny; `kill` also true), or held (an ordinary hold, approved once), in
/// the budget's name. Anything else is left as judged.
#[inline(always)]
pub fn judge(
    agent: &AgentInfo,
    class: u32,
    decision: Decision,
    rule_idx: u32,
) -> (Decision, u32, bool) {
    judge_slot(agent.agent_id, agent.slot, class, decision, rule_idx)
}

/// [`judge`] by agent id and rule slot (what the path judges carry).
#[inline(always)]
pub fn judge_slot(
    agent_id: u32,
    slot: u32,
    class: u32,
    decision: Decision,
    rule_idx: u32,
) -> (Decision, u32, bool) {
    if decision != Decision::Allow {
        return (decision, rule_idx, false);
    }
    match over(agent_id, slot, class, rule_idx) {
        None => (decision, rule_idx, false),
        Some((Over::Hold, r)) => (Decision::Hold, r, false),
        Some((Over::Deny, r)) => (Decision::Deny, r, false),
        Some((Over::Kill, r)) => (Decision::Deny, r, true),
    }
}

#[inline(always)]
fn matches(b: &BudgetRule, rule_idx: u32) -> bool {
    if b.match_count == 0 {
        return true;
    }
    for j in 0..MAX_BUDGET_MATCH {
        if j as u32 >= b.match_count {
            break;
        }
        if b.match_rules[j] == rule_idx {
            return true;
        }
    }
    false
}

/// Counts one action against budget `index` of the agent: true if it was
/// within the limit (and is now counted), false if the window is full.
#[inline(always)]
fn take(agent_id: u32, index: u32, b: &BudgetRule, now: u64) -> bool {
    take_n(agent_id, index, b, now, 1)
}

/// Counts `n` (1 for an action, `skb->len` for an egress byte budget)
/// against budget `index`: true if the count stays within the limit (and
/// now includes `n`), false if it would pass it (nothing counted).
#[inline(always)]
pub fn take_n(agent_id: u32, index: u32, b: &BudgetRule, now: u64, n: u64) -> bool {
    if b.per_ns == 0 {
        return true;
    }
    let window = now / b.per_ns;
    let key = BudgetUseKey { agent_id, index };
    let ptr = match BUDGET_USE.get_ptr_mut(&key) {
        Some(p) => p,
        None => {
            // BPF_NOEXIST: another CPU may have created it meanwhile.
            let _ = BUDGET_USE.insert(&key, &budget_use::pack(window, 0), 1);
            match BUDGET_USE.get_ptr_mut(&key) {
                Some(p) => p,
                // The map is full: fail closed (it is sized for every
                // agent's budgets, so this is not expected).
                None => return false,
            }
        }
    };
    // A few tries: each failure means another CPU moved the word; past
    // them the action is refused (fail closed, never over the limit).
    for _ in 0..4 {
        // SAFETY: a pointer to a map value, valid for this program run.
        let old = unsafe { core::ptr::read_volatile(ptr) };
        let used = if budget_use::window(old) != window {
            0
        } else {
            budget_use::count(old)
        };
        // `limit` is at most u32::MAX, so the new count fits its 32 bits.
        if used + n > b.limit {
            return false;
        }
        let new = budget_use::pack(window, used + n);
        // SAFETY: an aligned u64 in a map value; BPF_CMPXCHG.
        let (_, swapped) = unsafe {
            core::intrinsics::atomic_cxchg::<
                u64,
                { core::intrinsics::AtomicOrdering::SeqCst },
                { core::intrinsics::AtomicOrdering::SeqCst },
            >(ptr, old, new)
        };
        if swapped {
            return true;
        }
    }
    false
}
