//! Which evidence answers which control: each record type and its fields,
//! mapped to SOC 2 Trust Services Criteria, ISO/IEC 27001:2022 Annex A and
//! the NIST AI RMF. Shipped in every bundle (control_map.json and the HTML
//! report), so an auditor can go from a control to the records that prove it.
//!
//! A mapping is a starting point for the auditor's judgement, not a claim
//! of compliance; the report says so.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ControlMapping {
    /// The Warden control, in words.
    pub control: &'static str,
    /// Evidence record kinds (`kind` values) or bundle files that show it.
    pub records: &'static [&'static str],
    /// Fields an auditor samples to see it operate.
    pub fields: &'static [&'static str],
    pub soc2: &'static [&'static str],
    pub iso27001: &'static [&'static str],
    pub nist_ai_rmf: &'static [&'static str],
}

pub const CONTROL_MAP: &[ControlMapping] = &[
    ControlMapping {
        control: "Every agent action is decided in the kernel against the agent's policy before it runs (default deny)",
        records: &["decision"],
        fields: &["agent", "owner", "action", "target", "decision", "rule_id", "policy_snapshot", "method", "ts_ns"],
        soc2: &["CC6.1", "CC6.3"],
        iso27001: &["A.5.15", "A.8.15", "A.8.16"],
        nist_ai_rmf: &["MANAGE 1.1", "MANAGE 4.1"],
    },
    ControlMapping {
        control: "Each action is attributed to the agent, its accountable owner and the human who started it",
        records: &["decision", "run", "agents.json"],
        fields: &["agent", "owner", "uid", "user", "loginuid", "login_user", "pid", "exe"],
        soc2: &["CC6.1", "CC6.2"],
        iso27001: &["A.5.16", "A.8.15"],
        nist_ai_rmf: &["GOVERN 2.1"],
    },
    ControlMapping {
        control: "High-impact actions wait for a named human; the approval is bound to the exact job and the policy in force",
        records: &["hold", "approval", "approvals.json"],
        fields: &["approval_required", "job_hash", "policy_snapshot", "approved_by", "approved_role", "approved_at_ns", "status"],
        soc2: &["CC7.2", "CC7.3", "CC8.1"],
        iso27001: &["A.5.35", "A.5.37", "A.8.32"],
        nist_ai_rmf: &["GOVERN 2.1", "MAP 3.2", "MANAGE 3.3"],
    },
    ControlMapping {
        control: "Approvals are idempotent, and refused as a conflict if the policy changed after the hold",
        records: &["approval", "approvals.json"],
        fields: &["status (conflict)", "repeated_decisions", "reason"],
        soc2: &["CC7.1", "CC8.1"],
        iso27001: &["A.8.33", "A.8.34"],
        nist_ai_rmf: &["MEASURE 2.2", "MANAGE 2.3"],
    },
    ControlMapping {
        control: "Decisions recorded before an outage are applied after it, and the final outcome is recorded",
        records: &["approval (replayed)", "decision (method approved/rejected)"],
        fields: &["replay_reason", "final_status"],
        soc2: &["CC7.2", "CC7.4"],
        iso27001: &["A.8.14", "A.8.17"],
        nist_ai_rmf: &["MANAGE 4.3"],
    },
    ControlMapping {
        control: "Policy changes are versioned, attributed and logged; a malformed policy changes nothing",
        records: &["policy_load", "policy_versions.json"],
        fields: &["policy_snapshot", "details.previous_snapshot", "user", "ts_ns", "decision (loaded/rejected)"],
        soc2: &["CC8.1"],
        iso27001: &["A.8.9", "A.8.32"],
        nist_ai_rmf: &["GOVERN 1.4", "MANAGE 1.1"],
    },
    ControlMapping {
        control: "Agents are provisioned with an owner and a least-privilege policy, and can be revoked in one action",
        records: &["agent_register", "agent_remove", "kill", "revive", "agents.json", "capabilities.json"],
        fields: &["agent", "owner", "target (policy)", "status"],
        soc2: &["CC6.2", "CC6.3"],
        iso27001: &["A.5.15", "A.5.18"],
        nist_ai_rmf: &["GOVERN 2.1", "MANAGE 2.4"],
    },
    ControlMapping {
        control: "The log is tamper-evident: hash-chained, with signed checkpoints verifiable offline",
        records: &["checkpoint", "checkpoints.json", "verification.json"],
        fields: &["prev_hash", "hash", "size", "head_hash", "signature", "key_id"],
        soc2: &["CC7.2"],
        iso27001: &["A.8.15"],
        nist_ai_rmf: &["MEASURE 2.7", "MANAGE 4.1"],
    },
    ControlMapping {
        control: "Repeated allowed actions are counted, not copied: the first allowed open, exec or connect of a key (agent, process, file identity or destination, access, rule, policy version) is a decision entry; its repeats are counted in the kernel and written as one chained summary entry per key and sweep (every 10 s by default). Denials refused without a kill (connect, sendmsg) are counted the same way, the key holding the decision (summary decision `deny`); `evidence: { denied: each }` records each. Holds, approvals, kills and gaps are always one entry each. `evidence: { allowed: each }` in a policy turns counting of allowed actions off. `warden log verify --completeness` sets individual entries plus counted repeats beside the kernel's decision counter (agent_kernel_decisions)",
        records: &["summary", "decision"],
        fields: &["details.count", "details.first_ns", "details.last_ns", "details.agent_kernel_decisions", "pid", "target", "rule_id", "policy_snapshot"],
        soc2: &["CC7.2"],
        iso27001: &["A.8.15", "A.8.16"],
        nist_ai_rmf: &["MEASURE 2.7", "MANAGE 4.1"],
    },
    ControlMapping {
        control: "Per-agent action budgets (connects, execs, opens per window) and egress byte budgets (bytes sent per window) are enforced in the kernel with or without the daemon: past the limit the action is denied, held for a human or its process killed, or the packet dropped, and recorded under the budget's name (the first refusal per process and destination, or the first drops of a byte budget per window, individually; the repeats counted); resets are approver-only and recorded; the budgets in force are listed per agent",
        records: &["decision (rule_id budget:<id>)", "summary (decision deny, rule_id budget:<id>)", "budget_reset", "budgets.json", "capabilities.json (budget rows)"],
        fields: &["rule_id", "decision", "method", "details.count", "details.dropped_packets", "details.dropped_bytes", "details.used", "details.reason", "details.approver_role", "policy_snapshot"],
        soc2: &["CC7.2"],
        iso27001: &["A.8.16"],
        nist_ai_rmf: &["MEASURE 2.6", "MEASURE 3.1", "MANAGE 2.4"],
    },
    ControlMapping {
        control: "Active monitoring of agent behaviour: the sentinel raises an alert entry on a change in an agent's action or denial rate (EWMA and CUSUM) or on new behaviour (first exec, destination, write prefix), optionally killing or freezing the agent; the shipped Sigma detection rules over the OCSF stream are in the bundle with their hashes beside the alerts of the window",
        records: &["alert", "alerts.json", "detections.json", "kill"],
        fields: &["details.detector", "details.statistic", "details.threshold", "details.baseline", "details.window", "details.on_alert", "detections.json sha256"],
        soc2: &["CC7.2"],
        iso27001: &["A.8.16"],
        nist_ai_rmf: &["MEASURE 2.4", "MEASURE 3.1"],
    },
    ControlMapping {
        control: "Monitoring gaps are explicit: periods without a reading daemon and lost events are recorded, not hidden",
        records: &["gap", "daemon_start", "daemon_stop"],
        fields: &["details (counts, period)", "ts_ns"],
        soc2: &["CC7.2"],
        iso27001: &["A.8.16"],
        nist_ai_rmf: &["MANAGE 4.1"],
    },
    ControlMapping {
        control: "Evidence storage is bounded: at the disk cap allowed actions and denials without a kill are counted only (summary entries with count_includes_first), kills, holds, approvals and gaps stay individual; reaching and lifting the cap are recorded",
        records: &["evidence_cap", "summary", "daemon_start"],
        fields: &["details.cap_bytes", "details.used_bytes", "details.count_includes_first", "details.evidence_cap_bytes"],
        soc2: &["A1.1", "CC7.2"],
        iso27001: &["A.8.6", "A.8.15"],
        nist_ai_rmf: &["MANAGE 4.1"],
    },
    ControlMapping {
        control: "Retention without losing verifiability: old evidence is exported to a verified bundle before it is pruned, and the remaining chain verifies from a signed checkpoint named by a chained archive entry",
        records: &["archive", "checkpoints.json", "manifest.json"],
        fields: &["details.pruned_through", "details.base_hash", "details.checkpoint_id", "details.bundle_manifest_sha256", "base"],
        soc2: &["CC7.2", "C1.2"],
        iso27001: &["A.5.33", "A.8.15"],
        nist_ai_rmf: &["MANAGE 4.1"],
    },
    ControlMapping {
        control: "A change of a policy that says change_review is installed only after approvers other than its author approved that exact policy (proposal with diff, reviews, activation naming the proposal); refused changes are recorded and the reviewed policy stays in force",
        records: &["policy_proposal", "policy_review", "policy_load"],
        fields: &["user (author, reviewer)", "policy_snapshot", "details.from_snapshot", "details.diff", "details.proposal", "details.role", "details.approved_by", "decision"],
        soc2: &["CC8.1"],
        iso27001: &["A.8.32"],
        nist_ai_rmf: &["GOVERN 1.4", "MANAGE 2.4"],
    },
    ControlMapping {
        control: "During a freeze window destructive rules are denied by the kernel and policy changes refused; a break-glass override names the approver and the reason",
        records: &["decision", "policy_load", "freeze_override"],
        fields: &["details.freeze_window", "rule_id", "details.reason", "user"],
        soc2: &["CC8.1"],
        iso27001: &["A.8.32"],
        nist_ai_rmf: &["MANAGE 2.4"],
    },
    ControlMapping {
        control: "A candidate policy is evaluated by the kernel beside the policy in force before it goes live (shadow): every action it would decide otherwise is recorded with both decisions and rules, and the policy in force alone decides",
        records: &["shadow", "policy_load"],
        fields: &["decision (would-allow, would-deny, would-hold)", "rule_id", "policy_snapshot (the candidate's)", "details.enforced_decision", "details.enforced_rule", "details.enforced_snapshot", "details.count", "details.shadow_snapshot"],
        soc2: &["CC8.1"],
        iso27001: &["A.8.32"],
        nist_ai_rmf: &["MEASURE 2.7", "MANAGE 2.4"],
    },
    ControlMapping {
        control: "Each agent's access is reviewed periodically: a signed keep or revoke per agent names the reviewer, the policy snapshot, its capabilities and the last activity; a revoke ends the agent as the kill switch does",
        records: &["access_review", "access_reviews.json", "kill"],
        fields: &["user (reviewer)", "decision", "policy_snapshot", "details.capabilities", "details.last_activity_ns", "details.comment"],
        soc2: &["CC6.2", "CC6.3"],
        iso27001: &["A.5.15", "A.5.18"],
        nist_ai_rmf: &["GOVERN 2.1"],
    },
    ControlMapping {
        control: "Delegation only narrows: a child agent runs under the intersection of its own policy and its parent's (deny if either denies, hold if either holds), only a parent whose policy says delegate may start it (refusals recorded), and every entry of the child names the chain of agents and owners",
        records: &["agent_register (details.parent)", "run (details.delegated_by)", "policy_load (details.delegated_by, own_snapshot, parent_snapshot)", "decision (details.lineage)"],
        fields: &["details.lineage", "details.delegated_by", "rule_id (CHILD+parent:PARENT)", "login_user", "decision"],
        soc2: &["CC6.1", "CC6.3"],
        iso27001: &["A.5.15", "A.5.18", "A.8.2"],
        nist_ai_rmf: &["GOVERN 2.1", "GOVERN 6.1"],
    },
    ControlMapping {
        control: "An export of a time window (--from/--to) carries the chain from the newest signed checkpoint before the window's first entry to the window's last entry: the window's entries are shown to be in the chain the host key signed at that checkpoint, and every checkpoint up to the window's end is checked; the entries before the checkpoint are vouched for by its signature, not carried or re-verified (an export with --full-chain, or the host's log verify, re-verifies them). The carried prefix between the checkpoint and the window links the two and is not counted in the report",
        records: &["manifest.json chain_start", "manifest.json base", "checkpoints.json", "verification.json"],
        fields: &["chain_start.base_seq", "chain_start.base_hash", "chain_start.checkpoint_id", "chain_start.reason", "chain_start.window_first_seq", "chain_start.window_last_seq"],
        soc2: &["CC7.2"],
        iso27001: &["A.8.15"],
        nist_ai_rmf: &["MEASURE 2.7", "MANAGE 4.1"],
    },
];
