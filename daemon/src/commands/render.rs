//! What the CLI prints: every table, report line and JSON document, byte for
//! byte, as text for `main.rs` to write. Kept apart from the verbs so the
//! output format lives in one place and the verbs only return data.

use std::{fmt::Write, path::Path};

use serde::Serialize;

use super::{KillReport, Verified};
use crate::{
    approvals::Approval,
    clock,
    control::StatusReport,
    evidence::{completeness::Completeness, Entry},
    export::{BundleReport, Manifest},
    kernel::Revocation,
    policy::CompiledPolicy,
    registry::{Agent, PolicyVersion},
};

/// `writeln!` into a `String`, which cannot fail.
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

/// `--json` of the listing verbs: one pretty document.
pub fn json<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// `warden agent add`.
pub fn agent_added(agent: &Agent, note: &str) -> String {
    let mut out = String::new();
    put!(
        out,
        "registered agent '{}' (owner {}, cgroup {}): {note}",
        agent.name,
        agent.owner,
        agent.cgroup.display()
    );
    out
}

/// `warden agent list`.
pub fn agent_list(agents: &[Agent]) -> String {
    let mut out = String::new();
    put!(
        out,
        "{:<20} {:<28} {:<22} {:<8} cgroup",
        "agent",
        "owner",
        "policy",
        "status"
    );
    for a in agents {
        put!(
            out,
            "{:<20} {:<28} {:<22} {:<8} {}",
            a.name,
            a.owner,
            a.policy,
            format!("{:?}", a.status).to_lowercase(),
            a.cgroup.display()
        );
    }
    out
}

/// `warden agent show`.
pub fn agent(a: &Agent) -> String {
    let mut out = String::new();
    put!(out, "agent:      {}\nowner:      {}\npolicy:     {}\ncgroup:     {}{}\nstatus:     {:?}\nregistered: {} by {}",
        a.name, a.owner, a.policy, a.cgroup.display(), if a.adopted { " (adopted)" } else { "" },
        a.status, clock::format_ns(a.created_at_ns), a.created_by);
    out
}

/// `warden agent remove`.
pub fn agent_removed(a: &Agent) -> String {
    format!("removed agent '{}'\n", a.name)
}

/// `warden policy check`: per file that compiles, its use of its agent's
/// share of each rule map, then the `ok` line (last, so that the snapshot
/// ends the output).
pub fn policy_ok(file: &Path, c: &CompiledPolicy) -> String {
    // Its shadow candidate, checked by the same pipeline, before the `ok`.
    let shadow = c.shadow.as_ref().map_or_else(String::new, |s| {
        format!(
            "{}: shadow candidate {}: {} rules, snapshot {}, rule map share used: {}\n",
            file.display(),
            s.parsed.source_name(),
            s.parsed.rules.len(),
            s.snapshot,
            s.capacity
        )
    });
    format!(
        "{}: rule map share used: {}\n{shadow}{}: ok ({} rules, snapshot {})\n",
        file.display(),
        c.capacity,
        file.display(),
        c.parsed.rules.len(),
        c.snapshot
    )
}

/// `warden policy history`.
pub fn policy_history(versions: &[PolicyVersion]) -> String {
    let mut out = String::new();
    for v in versions {
        put!(
            out,
            "{:>4}  {}  {:<18} {:<22} {}  by {}",
            v.id,
            clock::format_ns(v.loaded_at_ns),
            v.agent,
            v.file,
            v.sha256,
            v.loaded_by
        );
    }
    out
}

/// `warden policy shadow`.
pub fn shadow(r: &crate::policy::shadow::ShadowReport) -> String {
    use crate::policy::shadow::Change;
    let mut out = String::new();
    put!(
        out,
        "shadow of {} against {} ({}): {} entries, {} actions replayed",
        r.agent,
        r.candidate,
        r.candidate_snapshot,
        r.entries,
        r.actions
    );
    put!(
        out,
        "  unchanged {}, would-deny {}, would-hold {}, would-allow {}",
        r.unchanged,
        r.total(Change::WouldDeny),
        r.total(Change::WouldHold),
        r.total(Change::WouldAllow)
    );
    for (why, n) in &r.skipped {
        put!(out, "  not replayed: {n} entries ({why})");
    }
    if r.differences.is_empty() {
        put!(out, "no differences");
    }
    for g in &r.differences {
        put!(
            out,
            "{:<11} {:<24} {:>8} actions ({} entries)",
            g.change.name(),
            g.rule,
            g.actions,
            g.entries
        );
        for e in &g.examples {
            put!(
                out,
                "    seq {:<8} {:<9} {}  (recorded {})",
                e.seq,
                e.action,
                e.target,
                e.recorded
            );
        }
    }
    out
}

/// `warden review status`.
pub fn review_status(list: &[super::review::ReviewStatus]) -> String {
    let mut out = String::new();
    for s in list {
        let last = match &s.last_review {
            Some(e) => format!("{} {} by {}", e.decision, clock::format_ns(e.ts_ns), e.user),
            None => "never reviewed".into(),
        };
        put!(
            out,
            "{:<5} {:<18} {:<28} {}  (every {}d)",
            if s.due { "DUE" } else { "ok" },
            s.agent,
            s.owner,
            last,
            s.review_every_secs / 86_400
        );
    }
    out
}

/// The proposals part of `warden policy history` (nothing when none).
pub fn proposals(list: &[crate::policy::review::Proposal]) -> String {
    let mut out = String::new();
    if list.is_empty() {
        return out;
    }
    put!(out, "proposals (change_review):");
    for p in list {
        let approved = p
            .reviews
            .iter()
            .filter(|r| r.decision == "approved")
            .count();
        let state = match p.activated {
            Some(seq) => format!("activated (seq {seq})"),
            None if p.reviews.iter().any(|r| r.decision == "rejected") => "rejected".into(),
            None => format!("{approved} approval(s), not activated"),
        };
        put!(
            out,
            "{:>6}  {}  {:<18} {}  by {}  {}",
            p.id,
            clock::format_ns(p.ts_ns),
            p.agent,
            p.snapshot,
            p.author,
            state
        );
        for r in &p.reviews {
            put!(
                out,
                "        review seq {}  {}  {} by {} ({}){}",
                r.seq,
                clock::format_ns(r.ts_ns),
                r.decision,
                r.reviewer,
                r.role,
                if r.comment.is_empty() {
                    String::new()
                } else {
                    format!(": {}", r.comment)
                }
            );
        }
    }
    out
}

/// `warden log tail --format`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum TailFormat {
    Json,
    Ocsf,
}

/// One line of `warden log tail`, without its newline.
pub fn tail_line(e: &Entry, format: TailFormat) -> String {
    match format {
        TailFormat::Json => serde_json::to_string(e),
        TailFormat::Ocsf => serde_json::to_string(&crate::export::ocsf::to_ocsf(e)),
    }
    .unwrap_or_default()
}

/// `warden log --json`: one object per line.
pub fn log_json(entries: &[Entry]) -> serde_json::Result<String> {
    let mut out = String::new();
    for e in entries {
        put!(out, "{}", serde_json::to_string(e)?);
    }
    Ok(out)
}

/// `warden log`.
pub fn log_table(entries: &[Entry]) -> String {
    let mut out = String::new();
    put!(out, "{}", LOG_HEADER);
    for e in entries {
        put!(out, "{}", format_entry(e));
    }
    out
}

/// `s`, shortened to `width` characters with an ellipsis (tables only; the
/// JSON output and the evidence keep every byte).
fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(width - 1).collect();
        out.push('…');
        out
    }
}

/// Table row for `warden log`.
pub fn format_entry(e: &Entry) -> String {
    format!(
        "{:>6}  {}  {:<14} {:<18} {:>7}  {:<14} {:<26} {:<9} {}",
        e.seq,
        clock::format_ns(e.ts_ns),
        e.agent,
        if e.login_user == "unset" || e.login_user == e.user {
            e.user.clone()
        } else {
            format!("{}({})", e.user, e.login_user)
        },
        e.pid,
        e.action,
        clip(&e.target, 26),
        e.decision,
        e.rule_id
    )
}

pub const LOG_HEADER: &str =
    "   seq  time                      agent          user                   pid  action         target                     decision  rule";

/// `warden log verify`.
/// `warden log --lineage SEQ`.
pub fn lineage(l: &super::Lineage) -> String {
    let mut out = format!(
        "entry {}: {} {} {} -> {} (rule {})\n",
        l.seq, l.kind, l.action, l.target, l.decision, l.rule_id
    );
    for (i, link) in l.chain.iter().enumerate() {
        let role = if i == 0 { "agent" } else { "parent" };
        out.push_str(&format!("{role:<8}{}  owner {}\n", link.agent, link.owner));
    }
    out.push_str(&format!(
        "human   {} (loginuid {}), ran as {}, pid {}\n",
        l.login_user, l.loginuid, l.user, l.pid
    ));
    match &l.started_by {
        Some(s) => out.push_str(&format!(
            "started by run entry {} ({}): delegated by {} pid {}, human {} (loginuid {}), as {}: {}\n",
            s.seq,
            crate::clock::format_ns(s.ts_ns),
            s.delegated_by,
            s.pid,
            s.login_user,
            s.loginuid,
            s.user,
            s.argv
        )),
        None => out.push_str("started by no delegated run (not a delegated child, or started before one was recorded)\n"),
    }
    out.push_str(&format!("chain read from the {}\n", l.chain_from));
    out
}

pub fn verified(v: &Verified) -> String {
    let mut out = String::new();
    put!(
        out,
        "evidence chain intact: {} entries, head seq {} hash {}",
        v.chain.entries,
        v.chain.head_seq,
        v.chain.head_hash
    );
    match &v.checkpoints {
        Some(c) => put!(
            out,
            "checkpoints valid: {} signed by key {}, newest covers {} of {} entries",
            c.checkpoints,
            c.key_id,
            c.signed_size,
            v.chain.entries
        ),
        None => put!(
            out,
            "no checkpoints: this host has no signing key yet (no daemon has run)"
        ),
    }
    if v.anchors > 0 {
        put!(
            out,
            "anchors valid: {} checkpoint(s) kept elsewhere match this log",
            v.anchors
        );
    }
    out
}

/// `warden log verify --completeness`: `Ok` for stdout when every
/// approval-gated entry is complete, `Err` for stderr (and a failed exit)
/// when one is not.
pub fn completeness(c: &Completeness) -> Result<String, String> {
    let mut err = String::new();
    for (seq, missing) in &c.incomplete {
        put!(
            err,
            "warden: incomplete: seq {seq} lacks {}",
            missing.join(", ")
        );
    }
    let over = c.overcounted();
    for (agent, a) in &over {
        put!(
            err,
            "warden: agent {agent}: summaries count {} repeats, the kernel decided {} actions",
            a.counted_at_kernel,
            a.kernel_decisions.unwrap_or(0)
        );
    }
    if !c.incomplete.is_empty() || !over.is_empty() {
        put!(
            err,
            "warden: error: {} incomplete entries ({} approval-gated entries checked), {} agents over-counted",
            c.incomplete.len(),
            c.gated,
            over.len()
        );
        return Err(err);
    }
    let mut out = format!(
        "completeness: {} approval-gated entries, every required field present\n",
        c.gated
    );
    for (agent, a) in c.agents.iter().filter(|(_, a)| a.summaries > 0) {
        put!(
            out,
            "agent {agent}: {} recorded individually + {} repeats in {} summaries = {} actions",
            a.individual,
            a.counted,
            a.summaries,
            a.individual + a.counted,
        );
        if let Some(k) = a.kernel_decisions {
            // Events still in the ring buffer at the sweep are written
            // after it, so the log can only be behind the kernel there.
            put!(
                out,
                "agent {agent}: at its latest summary the log accounts for {} + {} = {} of the kernel's {} decisions",
                a.individual_at_kernel,
                a.counted_at_kernel,
                a.individual_at_kernel + a.counted_at_kernel,
                k
            );
            // The firsts in flight at that sweep are written after it.
            if c.archived {
                put!(
                    out,
                    "agent {agent}: the log's beginning was archived; its whole totals are not compared"
                );
            } else {
                // Fewer is not an error: a sweep can miss a repeat whose
                // program found the key just before it was deleted.
                put!(
                    out,
                    "agent {agent}: the whole log accounts for {} + {} + {} unrecorded = {} actions, {} the kernel's {} at its latest summary",
                    a.individual,
                    a.counted,
                    a.unrecorded,
                    a.whole_log(),
                    if a.whole_log() >= k { "at least" } else { "fewer than" },
                    k
                );
            }
        }
    }
    Ok(out)
}

/// `warden evidence export`.
pub fn exported(m: &Manifest, out: &Path) -> String {
    let start = m.chain_start.as_ref().map_or_else(String::new, |s| {
        format!(
            "; the chain starts {}",
            crate::export::bundle::describe_start(s)
        )
    });
    format!(
        "exported {} entries (head {}) signed by key {} to {}{start}\n",
        m.entries,
        m.head_hash,
        m.key_id,
        out.display()
    )
}

/// `warden evidence verify`: `Ok` for stdout when the bundle holds, `Err`
/// for stderr (and a failed exit) with its problems when it does not.
pub fn bundle(r: &BundleReport, dir: &Path) -> Result<String, String> {
    if r.is_valid() {
        let start = r.chain_start.as_ref().map_or_else(String::new, |s| {
            format!(
                "; chain starts {}",
                crate::export::bundle::describe_start(s)
            )
        });
        return Ok(format!(
            "bundle valid: {} entries, head {}, {} checkpoints (newest covers {}), key {}{start}\n",
            r.entries, r.head_hash, r.checkpoints, r.signed_size, r.key_id
        ));
    }
    let mut err = String::new();
    for p in &r.problems {
        put!(err, "warden: bundle: {p}");
    }
    put!(
        err,
        "warden: error: bundle {} is NOT valid ({} problems)",
        dir.display(),
        r.problems.len()
    );
    Err(err)
}

/// `warden kill`.
pub fn killed(r: &KillReport) -> String {
    let kernel = match r.kernel {
        Revocation::Applied => "every hook now refuses it",
        Revocation::NoPins => "no Warden programs are loaded",
    };
    format!(
        "agent '{}' revoked in {:.1} ms ({kernel}); {} process(es) {}{}\n",
        r.agent.name,
        r.to_kernel.as_secs_f64() * 1000.0,
        r.processes.len(),
        if r.frozen { "frozen" } else { "killed" },
        if r.daemon_notified {
            ""
        } else {
            "; the daemon is not running and picks this up when it starts"
        }
    )
}

/// `warden revive`.
pub fn revived(a: &Agent) -> String {
    format!("agent '{}' active again\n", a.name)
}

/// `warden uninstall`.
pub fn uninstalled(removed: usize, pin_dir: &Path) -> String {
    format!(
        "removed {removed} pinned programs and maps under {}\n",
        pin_dir.display()
    )
}

/// `warden approvals`.
pub fn approvals(list: &[Approval]) -> String {
    let mut out = String::new();
    put!(
        out,
        "{:>4}  {:<9} {:<16} {:<9} {:<24} {:<16} {:<22} {:<12} job_hash",
        "id",
        "status",
        "agent",
        "action",
        "target",
        "rule",
        "held at",
        "by"
    );
    for a in list {
        put!(
            out,
            "{:>4}  {:<9} {:<16} {:<9} {:<24} {:<16} {:<22} {:<12} {}",
            a.id,
            a.status.as_str(),
            a.job.agent,
            a.job.action,
            a.job.target,
            a.rule_id,
            clock::format_ns(a.created_at_ns),
            a.decided_by.as_deref().unwrap_or("-"),
            &a.job_hash[..16]
        );
    }
    out
}

/// `warden approve|reject`: the daemon's answer.
pub fn decided(message: &str) -> String {
    format!("{message}\n")
}

/// `warden status`.
pub fn status(s: &StatusReport) -> String {
    let mut out = String::new();
    put!(
        out,
        "daemon:   running (pid {}, since {})",
        s.pid,
        clock::format_ns(s.started_at_ns)
    );
    put!(out, "cgroup2:  {}", s.cgroup2);
    put!(
        out,
        "evidence: checkpoints signed by Ed25519 key {} ({})",
        s.key_id,
        s.public_key
    );
    if let Some(c) = &s.evidence_cap {
        let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
        let source = match c.source {
            crate::daemon::evidence_cap::CapSource::Configured => "WARDEN_EVIDENCE_CAP",
            crate::daemon::evidence_cap::CapSource::Filesystem => "a quarter of the filesystem",
        };
        let state = match (c.reached, c.since_ns) {
            (true, Some(t)) => format!(
                "CAP REACHED since {}: allowed actions and denials without a kill are counted only",
                clock::format_ns(t)
            ),
            (true, None) => {
                "CAP REACHED: allowed actions and denials without a kill are counted only".into()
            }
            (false, _) => "below the cap: recorded as the policies say".into(),
        };
        put!(
            out,
            "evidence disk: {:.1} MiB of {:.1} MiB ({source}); {state}",
            mib(c.used_bytes),
            mib(c.cap_bytes)
        );
    }
    put!(out, "enforcement:");
    for m in &s.mechanisms {
        put!(out, "  {:<44} {}", m.action, m.mechanism);
    }
    put!(
        out,
        "machine-wide hooks (every process pays their dispatch while attached):"
    );
    for h in &s.global_hooks {
        let state = if h.attached { "attached" } else { "detached" };
        put!(out, "  {:<24} {:<9} {}", h.hook, state, h.why);
    }
    put!(out, "agents:");
    for a in &s.agents {
        let state = if a.revoked {
            "REVOKED"
        } else if a.enforced && a.record {
            "RECORD-ONLY"
        } else if a.enforced {
            "enforced"
        } else {
            "NOT ENFORCED"
        };
        put!(
            out,
            "  {:<20} {:<12} policy {}  {}",
            a.agent,
            state,
            a.policy_snapshot,
            a.cgroup
        );
        if !a.rule_maps.is_empty() {
            put!(out, "  {:<20} rule map share used: {}", "", a.rule_maps);
        }
        if let Some(sh) = &a.shadow {
            let total: u64 = sh.differences.iter().map(|d| d.count).sum();
            let each: Vec<String> = sh
                .differences
                .iter()
                .map(|d| format!("{} {} (rule {})", d.count, d.decision, d.rule))
                .collect();
            put!(
                out,
                "  {:<20} shadow {}: {} difference(s){}{}",
                "",
                sh.snapshot,
                total,
                if each.is_empty() { "" } else { ": " },
                each.join(", ")
            );
        }
        for b in &a.budgets {
            put!(
                out,
                "  {:<20} budget {}: {}/{} {} per {}s, then {} (window resets in {}s)",
                "",
                b.id,
                b.used,
                b.limit,
                b.count,
                b.per_secs,
                b.then,
                b.resets_in_secs
            );
        }
    }
    put!(
        out,
        "kernel:   {} events, {} allowed, {} denied, {} dropped (ring buffer full)",
        s.kernel.events,
        s.kernel.allowed,
        s.kernel.denied,
        s.kernel.dropped
    );
    put!(
        out,
        "daemon:   {} decisions recorded, {} undecodable",
        s.recorded,
        s.decode_errors
    );
    for e in &s.policy_errors {
        put!(out, "policy error: {e}");
    }
    out
}

/// `warden alerts`: one line per alert, with what tripped it.
pub fn alerts(entries: &[Entry]) -> String {
    let mut out = String::new();
    put!(
        out,
        "{:>8}  {:<22} {:<16} {:<18} {:<8} {:<6} {:>10} {:>8} {:>10} {:<7} target",
        "seq",
        "time",
        "agent",
        "detector",
        "class",
        "dir",
        "statistic",
        "thresh",
        "baseline",
        "action"
    );
    for e in entries {
        let d = |k: &str| {
            e.details
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("-")
                .to_string()
        };
        let baseline = e
            .details
            .get("baseline")
            .and_then(|b| b.get("mean"))
            .and_then(|v| v.as_str())
            .unwrap_or("-");
        put!(
            out,
            "{:>8}  {:<22} {:<16} {:<18} {:<8} {:<6} {:>10} {:>8} {:>10} {:<7} {}",
            e.seq,
            clock::format_ns(e.ts_ns),
            clip(&e.agent, 16),
            d("detector"),
            d("class"),
            d("direction"),
            d("statistic"),
            d("threshold"),
            baseline,
            d("on_alert"),
            e.target
        );
    }
    out
}
