//! Budget counts in the kernel (`BUDGET_USE`): read for `warden status`,
//! cleared by `warden budget reset` and when a budget's meaning changes.
//! The kernel rolls windows over by itself; here a count from a past
//! window reads as 0.

use std::time::Duration;

use aya::maps::HashMap as BpfHashMap;
use warden_common::{budget_use, names, BudgetUseKey};

use super::{map_err, Kernel, KernelError};

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub(super) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// One budget's use now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetUse {
    /// Actions counted in the current window (at most the limit).
    pub used: u64,
    /// Time until the kernel starts the next window.
    pub resets_in: Duration,
}

impl Kernel {
    /// The use of budget `index` of agent `agent_id`, whose window is `per`.
    pub fn budget_use(
        &self,
        agent_id: u32,
        index: u32,
        per: Duration,
    ) -> Result<BudgetUse, KernelError> {
        let name = names::BUDGET_USE;
        let map = self
            .bpf
            .map(name)
            .ok_or(KernelError::Missing { what: "map", name })?;
        let uses: BpfHashMap<_, BudgetUseKey, u64> =
            BpfHashMap::try_from(map).map_err(map_err("open", name))?;
        let per_ns = (per.as_nanos() as u64).max(1);
        let now = monotonic_ns();
        let window = now / per_ns;
        let used = match uses.get(&BudgetUseKey { agent_id, index }, 0) {
            Ok(v) if budget_use::window(v) == window => budget_use::count(v),
            _ => 0,
        };
        Ok(BudgetUse {
            used,
            resets_in: Duration::from_nanos(per_ns - now % per_ns),
        })
    }

    /// Starts budget `index` of agent `agent_id` afresh (the next action
    /// opens a new count); returns the use it had.
    pub fn budget_reset(
        &mut self,
        agent_id: u32,
        index: u32,
        per: Duration,
    ) -> Result<u64, KernelError> {
        let used = self.budget_use(agent_id, index, per)?.used;
        self.delete::<BudgetUseKey, u64>(names::BUDGET_USE, &BudgetUseKey { agent_id, index })?;
        Ok(used)
    }
}
