//! `bytes: egress` budgets in the kernel: the `cgroup_skb/egress` program
//! attached to (and detached from) the cgroups of agents whose policy has
//! one, pinned like the other links so it keeps dropping with no daemon;
//! and the sweep of the packets it dropped (`EGRESS_DROPS`).

use std::{fs::File, path::Path};

use aya::programs::{
    links::{CgroupAttachMode, FdLink},
    CgroupSkb, CgroupSkbAttachType,
};
use warden_common::{names, BudgetUseKey, EgressDrops};

use super::{Kernel, KernelError};

/// Drops of one egress budget since the last sweep, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressSwept {
    pub agent_id: u32,
    /// The budget's index in the agent's policy.
    pub index: u32,
    pub packets: u64,
    pub bytes: u64,
    /// Boot time of the first and latest drop counted.
    pub first_boot_ns: u64,
    pub last_boot_ns: u64,
    /// Budget window (`ktime / per_ns`) of the latest drop.
    pub window: u64,
}

/// Sums one key's per-CPU values (CPUs that never dropped hold zeros).
pub fn sum_drops(key: BudgetUseKey, values: &[EgressDrops]) -> EgressSwept {
    let mut out = EgressSwept {
        agent_id: key.agent_id,
        index: key.index,
        packets: 0,
        bytes: 0,
        first_boot_ns: 0,
        last_boot_ns: 0,
        window: 0,
    };
    for v in values {
        out.packets += v.packets;
        out.bytes += v.bytes;
        if v.first_ns != 0 && (out.first_boot_ns == 0 || v.first_ns < out.first_boot_ns) {
            out.first_boot_ns = v.first_ns;
        }
        if v.last_ns > out.last_boot_ns {
            out.last_boot_ns = v.last_ns;
            out.window = v.window;
        }
    }
    out
}

impl Kernel {
    /// Attaches the egress program to an agent's cgroup when `on` (its
    /// policy has a `bytes: egress` budget), detaches it otherwise.
    /// Idempotent.
    pub fn set_egress(
        &mut self,
        cgroup: &Path,
        cgroup_id: u64,
        on: bool,
    ) -> Result<(), KernelError> {
        if on == self.egress.contains_key(&cgroup_id) {
            return Ok(());
        }
        if !on {
            if let Some(pinned) = self.egress.remove(&cgroup_id) {
                self.detach_links(vec![pinned]);
            }
            return Ok(());
        }
        let name = names::PROG_EGRESS;
        let file = File::open(cgroup).map_err(|source| KernelError::OpenCgroup {
            cgroup: cgroup.display().to_string(),
            source,
        })?;
        let attach_err = |source| KernelError::Attach {
            name,
            cgroup: cgroup.display().to_string(),
            source,
        };
        let prog: &mut CgroupSkb = self
            .bpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .ok_or(KernelError::Missing {
                what: "cgroup skb program",
                name,
            })?;
        let id = prog
            .attach(&file, CgroupSkbAttachType::Egress, CgroupAttachMode::Single)
            .map_err(attach_err)?;
        let link = prog.take_link(id).map_err(attach_err)?;
        let link = FdLink::try_from(link).map_err(|e| KernelError::Pin {
            what: format!("{name} link on {}", cgroup.display()),
            detail: e.to_string(),
        })?;
        let pinned = self.pin_link(link, &format!("cg-{cgroup_id}-{name}"))?;
        self.egress.insert(cgroup_id, pinned);
        tracing::info!(cgroup = %cgroup.display(), "cgroup_skb/egress attached (bytes: egress budget)");
        Ok(())
    }

    /// Whether the egress program is attached to the agent's cgroup.
    pub fn egress_attached(&self, cgroup_id: u64) -> bool {
        self.egress.contains_key(&cgroup_id)
    }

    /// Detaches the egress program of a removed agent.
    pub(super) fn drop_egress(&mut self, cgroup_id: u64) {
        if let Some(pinned) = self.egress.remove(&cgroup_id) {
            self.detach_links(vec![pinned]);
        }
    }

    /// Reads and deletes every key of `EGRESS_DROPS` (as `sweep_summaries`,
    /// through `take_per_cpu`): a drop
    /// is either in what this returns or counted afresh under a new key.
    pub fn sweep_egress_drops(&mut self) -> Result<Vec<EgressSwept>, KernelError> {
        let mut out = Vec::new();
        self.take_per_cpu(
            names::EGRESS_DROPS,
            |key: BudgetUseKey, values: &[EgressDrops]| {
                let swept = sum_drops(key, values);
                if swept.packets > 0 {
                    out.push(swept);
                }
            },
        )?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_are_summed_and_the_latest_window_kept() {
        let key = BudgetUseKey {
            agent_id: 3,
            index: 1,
        };
        let v = [
            EgressDrops {
                packets: 2,
                bytes: 3000,
                first_ns: 200,
                last_ns: 500,
                window: 7,
            },
            EgressDrops::default(),
            EgressDrops {
                packets: 1,
                bytes: 60,
                first_ns: 100,
                last_ns: 100,
                window: 6,
            },
        ];
        let s = sum_drops(key, &v);
        assert_eq!((s.agent_id, s.index, s.packets, s.bytes), (3, 1, 3, 3060));
        assert_eq!((s.first_boot_ns, s.last_boot_ns, s.window), (100, 500, 7));
    }
}
