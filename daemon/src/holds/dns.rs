//! Held DNS names (a `hold` rule on `connect: { host: ... }`): no thread
//! is stopped; the agent's DNS proxy keeps the question unanswered
//! (`dns/held.rs`). The approval is recorded and decided like any hold;
//! applying it answers the name's waiting questions (and later ones of
//! that policy snapshot) instead of writing a grant and resuming a thread.

use serde_json::json;
use sha2::{Digest, Sha256};

use super::Holds;
use crate::{
    approvals::{Approval, ApprovalError, Job, Status},
    dns::{self, HoldRequest, NameDecision},
    evidence::{record::UNSET_ID, NewEntry},
};

/// The approvals table's key of a held name: agent, cgroup, name and
/// policy snapshot, so a decision binds that name under that policy only.
/// Not hex of a kernel `HoldKey` (the "dns-" prefix keeps it from ever
/// parsing as one: no grant is written for it).
pub(super) fn name_key(agent: &str, cgroup_id: u64, name: &str, snapshot: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        agent.as_bytes(),
        &cgroup_id.to_le_bytes(),
        name.as_bytes(),
        snapshot.as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    format!("dns-{}", hex::encode(h.finalize()))
}

/// The job an approver sees and whose hash the approval carries.
pub(super) fn name_job(agent: &str, cgroup_id: u64, name: &str) -> Job {
    Job {
        agent: agent.into(),
        action: dns::HOLD_ACTION.into(),
        target: name.into(),
        // The proxy knows the socket, not the task that asked.
        exe: "unknown".into(),
        binary: "n/a".into(),
        pid: 0,
        tid: 0,
        uid: UNSET_ID,
        cgroup_id,
    }
}

pub(super) fn is_dns(a: &Approval) -> bool {
    a.job.action == dns::HOLD_ACTION && a.hold_key.starts_with("dns-")
}

impl Holds {
    /// The DNS proxy held a name for the first time. Returns the `hold`
    /// entry of a new approval; `None` when the name is already pending
    /// (a daemon restart: the old approval stands) or was decided before
    /// under this snapshot (the decision is handed to the proxy again).
    pub fn on_dns_held(&mut self, r: HoldRequest) -> Result<Option<NewEntry>, ApprovalError> {
        let key = name_key(&r.agent, r.cgroup_id, &r.name, &r.snapshot);
        if self.store.pending_for_key(&key)?.is_some() {
            return Ok(None);
        }
        if let Some(a) = self.store.decided_for_key(&key)? {
            let d = NameDecision {
                approved: a.status == Status::Approved,
                id: a.id,
            };
            dns::decided(r.cgroup_id, &r.snapshot, &r.name, d);
            return Ok(None);
        }
        let job = name_job(&r.agent, r.cgroup_id, &r.name);
        let mut entry = r.entry;
        let created = entry.ts_ns;
        let timeout = i64::try_from(r.hold_timeout.as_nanos()).unwrap_or(i64::MAX);
        let expires = created.saturating_add(timeout.max(1));
        let id = self.store.create(
            &r.owner,
            &job,
            &r.rule_id,
            &r.snapshot,
            &key,
            created,
            expires,
        )?;
        entry.details.insert("approval_id".into(), json!(id));
        entry.details.insert("job_hash".into(), json!(job.hash()));
        entry
            .details
            .insert("approval_required".into(), json!(true));
        entry.details.insert("expires_at_ns".into(), json!(expires));
        tracing::info!(agent = %r.agent, id, name = %r.name, "DNS name held for approval");
        Ok(Some(entry))
    }

    /// Applies a decision on a held name: the proxy answers (approved) or
    /// refuses (rejected, expired) the name's questions. A conflict (the
    /// policy changed) has nothing to apply: that snapshot's proxy is gone
    /// and the name is decided afresh under the new policy.
    pub(super) fn apply_dns(&mut self, a: &Approval, status: Status) {
        let answered = match status {
            Status::Approved | Status::Rejected | Status::Expired => dns::decided(
                a.job.cgroup_id,
                &a.policy_snapshot,
                &a.job.target,
                NameDecision {
                    approved: status == Status::Approved,
                    id: a.id,
                },
            ),
            Status::Conflict | Status::Pending => false,
        };
        let final_status = match status {
            Status::Approved => "answered",
            Status::Rejected | Status::Expired => "refused",
            Status::Conflict | Status::Pending => "redecided",
        };
        tracing::info!(id = a.id, name = %a.job.target, final_status, proxy_serving = answered, "held DNS name decided");
        for result in [
            self.store.mark_applied(a.id),
            self.store.set_final_status(a.id, final_status),
        ] {
            if let Err(e) = result {
                tracing::error!(id = a.id, error = %crate::error_chain(&e), "record a held name's decision");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_names_key_binds_name_and_snapshot_and_is_never_a_kernel_key() {
        let k = name_key("a", 7, "x.example", "s1");
        assert_eq!(k, name_key("a", 7, "x.example", "s1"));
        assert_ne!(k, name_key("a", 7, "y.example", "s1"));
        assert_ne!(k, name_key("a", 7, "x.example", "s2"));
        assert_ne!(k, name_key("b", 7, "x.example", "s1"));
        assert!(super::super::key_from_hex(&k).is_none());
        let job = name_job("a", 7, "x.example");
        assert_eq!(
            (job.action.as_str(), job.target.as_str()),
            ("dns", "x.example")
        );
    }
}
