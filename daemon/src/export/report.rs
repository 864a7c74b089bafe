//! The bundle's `report.html`: one self-contained page (inline CSS and SVG,
//! no scripts, nothing fetched) an auditor can open in any browser. It is a
//! view of the bundle's data; the data files and `warden evidence verify`
//! are the evidence.

use std::{collections::BTreeMap, fmt::Write};

use super::{bundle::Contents, control_map::CONTROL_MAP};
use crate::{clock::format_ns, evidence::Entry};

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#1b1f24;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}
table{border-collapse:collapse;width:100%;margin:.5em 0}th,td{border:1px solid #d0d7de;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:.9em}
.ok{background:#dafbe1;border:1px solid #4ac26b;padding:.6em 1em;border-radius:6px}
.bad{background:#ffebe9;border:1px solid #ff8182;padding:.6em 1em;border-radius:6px}
.meta{color:#57606a}.legend span{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em;vertical-align:middle}
";

const ALLOW: &str = "#2da44e";
const DENY: &str = "#cf222e";
const HOLD: &str = "#bf8700";

fn in_window(c: &Contents, e: &Entry) -> bool {
    c.manifest_window.contains(e)
}

/// Per-agent decision counts.
#[derive(Default)]
struct Counts {
    allow: u64,
    deny: u64,
    hold: u64,
    approvals: u64,
    /// Record mode: went ahead, would have been denied or held.
    would: u64,
    last_ns: i64,
}

fn chart(c: &Contents, decisions: &[&Entry]) -> String {
    let (Some(first), Some(last)) = (decisions.first(), decisions.last()) else {
        return "<p class=meta>No decisions in this window.</p>".into();
    };
    const BUCKETS: usize = 24;
    let (start, end) = (first.ts_ns, last.ts_ns.max(first.ts_ns + 1));
    let width = ((end - start) as f64 / BUCKETS as f64).max(1.0);
    let mut buckets = [[0u64; 3]; BUCKETS];
    for e in decisions {
        let i = (((e.ts_ns - start) as f64 / width) as usize).min(BUCKETS - 1);
        match (e.kind.as_str(), e.decision.as_str()) {
            // Record mode's would-deny/would-hold went ahead.
            (_, "allow" | "would-deny" | "would-hold") => buckets[i][0] += 1,
            ("hold", _) | (_, "hold") => buckets[i][2] += 1,
            _ => buckets[i][1] += 1,
        }
    }
    let max = buckets
        .iter()
        .map(|b| b.iter().sum::<u64>())
        .max()
        .unwrap_or(1)
        .max(1);
    let (w, h, bar) = (960.0, 180.0, 960.0 / BUCKETS as f64);
    let mut svg = format!(
        "<svg role=img aria-label='decisions over time' width='{w}' height='{}' viewBox='0 0 {w} {}' xmlns='http://www.w3.org/2000/svg'>",
        h + 40.0,
        h + 40.0
    );
    for (i, b) in buckets.iter().enumerate() {
        let mut y = h;
        for (count, color) in [(b[0], ALLOW), (b[1], DENY), (b[2], HOLD)] {
            if count == 0 {
                continue;
            }
            let bh = count as f64 / max as f64 * (h - 10.0);
            y -= bh;
            let _ = write!(
                svg,
                "<rect x='{:.1}' y='{y:.1}' width='{:.1}' height='{bh:.1}' fill='{color}'><title>{count}</title></rect>",
                i as f64 * bar + 2.0,
                bar - 4.0
            );
        }
    }
    let _ = write!(
        svg,
        "<line x1='0' y1='{h}' x2='{w}' y2='{h}' stroke='#57606a'/><text x='0' y='{}' font-size='12'>{}</text><text x='{w}' y='{}' font-size='12' text-anchor='end'>{}</text><text x='{w}' y='{}' font-size='12' text-anchor='end'>tallest bar: {max}</text></svg>",
        h + 18.0,
        esc(&format_ns(start)),
        h + 18.0,
        esc(&format_ns(end)),
        h + 34.0,
    );
    let _ = c;
    svg
}

pub fn render(c: &Contents) -> String {
    let window: Vec<&Entry> = c.entries.iter().filter(|e| in_window(c, e)).collect();
    // Kernel decisions, and holds (recorded as their own kind).
    let decisions: Vec<&Entry> = window
        .iter()
        .copied()
        .filter(|e| e.kind == "decision" || e.kind == "hold")
        .collect();
    let mut per_agent: BTreeMap<&str, Counts> = BTreeMap::new();
    for e in &window {
        let counts = per_agent.entry(&e.agent).or_default();
        counts.last_ns = counts.last_ns.max(e.ts_ns);
        match (e.kind.as_str(), e.decision.as_str()) {
            ("decision", "allow") => counts.allow += 1,
            ("decision", "hold") | ("hold", _) => counts.hold += 1,
            ("decision", "would-deny" | "would-hold") => counts.would += 1,
            ("decision", _) => counts.deny += 1,
            ("approval", _) => counts.approvals += 1,
            _ => {}
        }
    }

    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Warden evidence report: {host}</title><style>{STYLE}</style></head><body>",
        host = esc(&c.host)
    );
    let _ = write!(
        h,
        "<h1>Warden evidence report</h1><p class=meta>Host <b>{}</b> · exported {} · signing key <code>{}</code> · entries 1–{}{}</p>",
        esc(&c.host),
        esc(&format_ns(c.created_at_ns)),
        esc(&c.key_id),
        c.entries.len(),
        c.manifest_window.agent.as_ref().map(|a| format!(" · agent <b>{}</b>", esc(a))).unwrap_or_default()
    );
    match &c.verification {
        Ok(summary) => {
            let _ = write!(
                h,
                "<p class=ok><b>Verified on the host at export:</b> {}</p>",
                esc(summary)
            );
        }
        Err(problem) => {
            let _ = write!(
                h,
                "<p class=bad><b>Verification FAILED on the host at export:</b> {}</p>",
                esc(problem)
            );
        }
    }
    h.push_str("<p class=meta>Re-check independently with <code>warden evidence verify DIR</code> (no daemon or database needed); compare the key id with the one the host's <code>warden status</code> prints.</p>");

    h.push_str("<h2>Agents</h2><table><tr><th>agent</th><th>owner</th><th>status</th><th>cgroup</th><th class=n>allowed</th><th class=n>denied</th><th class=n>held</th><th class=n>approval decisions</th><th class=n>record mode: would deny or hold</th><th>last activity</th></tr>");
    for a in &c.agents {
        let n = per_agent.get(a.name.as_str());
        let get = |f: fn(&Counts) -> u64| n.map_or(0, f);
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:?}</td><td><code>{}</code></td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td>{}</td></tr>",
            esc(&a.name),
            esc(&a.owner),
            a.status,
            esc(&a.cgroup.display().to_string()),
            get(|c| c.allow),
            get(|c| c.deny),
            get(|c| c.hold),
            get(|c| c.approvals),
            get(|c| c.would),
            n.map(|c| esc(&format_ns(c.last_ns))).unwrap_or_default()
        );
    }
    h.push_str("</table>");

    let _ = write!(
        h,
        "<h2>Decisions over time</h2><p class=legend><span style='background:{ALLOW}'></span>allowed<span style='background:{DENY}'></span>denied<span style='background:{HOLD}'></span>held</p>{}",
        chart(c, &decisions)
    );

    h.push_str("<h2>Holds and approvals</h2>");
    if c.approvals.is_empty() {
        h.push_str("<p class=meta>No actions were held for approval.</p>");
    } else {
        h.push_str("<table><tr><th>id</th><th>agent</th><th>action</th><th>held at</th><th>status</th><th>decided by (role)</th><th>decided at</th><th>outcome</th><th>job hash</th><th>policy snapshot</th></tr>");
        for a in &c.approvals {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td><code>{}…</code></td><td><code>{}…</code></td></tr>",
                a.id,
                esc(&a.job.agent),
                esc(&a.job.action),
                esc(&a.job.target),
                esc(&format_ns(a.created_at_ns)),
                a.status.as_str(),
                esc(a.decided_by.as_deref().unwrap_or("-")),
                esc(a.decided_role.as_deref().unwrap_or("-")),
                a.decided_at_ns.map(|t| esc(&format_ns(t))).unwrap_or_default(),
                esc(a.final_status.as_deref().unwrap_or("-")),
                esc(&a.job_hash[..16]),
                esc(&a.policy_snapshot[..16])
            );
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>Gaps in monitoring</h2>");
    let gaps: Vec<&&Entry> = window.iter().filter(|e| e.kind == "gap").collect();
    if gaps.is_empty() {
        h.push_str("<p class=meta>No gap entries in this window: every action the kernel counted reached the log, and the daemon recorded each of its starts and stops.</p>");
    } else {
        h.push_str("<table><tr><th>seq</th><th>time</th><th>agent</th><th>what</th></tr>");
        for g in gaps {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                g.seq,
                esc(&format_ns(g.ts_ns)),
                esc(&g.agent),
                esc(&serde_json::to_string(&g.details).unwrap_or_default())
            );
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>Policy versions</h2><table><tr><th>version</th><th>agent</th><th>file</th><th>sha256</th><th>loaded at</th><th>by</th></tr>");
    for v in &c.versions {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            v.id,
            esc(&v.agent),
            esc(&v.file),
            esc(&v.sha256),
            esc(&format_ns(v.loaded_at_ns)),
            esc(&v.loaded_by)
        );
    }
    h.push_str("</table>");

    h.push_str("<h2>Who may do what</h2><table><tr><th>subject</th><th>agent</th><th>capability</th><th>decision</th><th>rule</th></tr>");
    for cap in &c.capabilities {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&cap.subject),
            esc(&cap.agent),
            esc(&cap.capability),
            esc(&cap.decision),
            esc(&cap.rule_id)
        );
    }
    h.push_str("</table>");

    h.push_str("<h2>Controls and the records that show them</h2><p class=meta>A starting point for the auditor's judgement, not a claim of compliance.</p><table><tr><th>control</th><th>records</th><th>fields</th><th>SOC 2</th><th>ISO 27001:2022</th><th>NIST AI RMF</th></tr>");
    for m in CONTROL_MAP {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(m.control),
            esc(&m.records.join(", ")),
            esc(&m.fields.join(", ")),
            esc(&m.soc2.join(", ")),
            esc(&m.iso27001.join(", ")),
            esc(&m.nist_ai_rmf.join(", "))
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
