//! The bundle's `report.html`: one self-contained page (inline CSS and SVG,
//! no scripts, nothing fetched) an auditor can open in any browser. It is a
//! view of the bundle's data; the data files and `warden evidence verify`
//! are the evidence.

use std::{collections::BTreeMap, fmt::Write};

use super::{
    bundle::{ChainStart, Contents},
    control_map::CONTROL_MAP,
    summary::{AgentCounts, Chart, TopRow, TOP_N},
};
use crate::clock::format_ns;

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

/// A stacked bar chart of `chart`'s buckets; `classes` picks which of
/// [allowed, denied, held] to draw (each chart has its own scale, so a
/// handful of denials is visible beside millions of allowed actions).
fn chart_svg(chart: Option<&Chart>, classes: [bool; 3], label: &str) -> String {
    let Some(chart) = chart else {
        return "<p class=meta>No decisions in this window.</p>".into();
    };
    let pick = |b: &[u64; 3], i: usize| if classes[i] { b[i] } else { 0 };
    let max = chart
        .buckets
        .iter()
        .map(|b| (0..3).map(|i| pick(b, i)).sum::<u64>())
        .max()
        .unwrap_or(0);
    if max == 0 {
        return format!("<p class=meta>No {label} in this window.</p>");
    }
    let n = chart.buckets.len().max(1);
    let (w, h, bar) = (960.0, 180.0, 960.0 / n as f64);
    let mut svg = format!(
        "<svg role=img aria-label='{label} over time' width='{w}' height='{}' viewBox='0 0 {w} {}' xmlns='http://www.w3.org/2000/svg'>",
        h + 40.0,
        h + 40.0
    );
    for (i, b) in chart.buckets.iter().enumerate() {
        let mut y = h;
        for (k, color) in [ALLOW, DENY, HOLD].into_iter().enumerate() {
            let count = pick(b, k);
            if count == 0 {
                continue;
            }
            let bh = (count as f64 / max as f64 * (h - 10.0)).max(1.0);
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
        esc(&format_ns(chart.start_ns)),
        h + 18.0,
        esc(&format_ns(chart.end_ns)),
        h + 34.0,
    );
    svg
}

fn top_table(h: &mut String, title: &str, rows: &[TopRow], none: &str) {
    let _ = write!(h, "<h2>{title}</h2>");
    if rows.is_empty() {
        let _ = write!(h, "<p class=meta>{none}</p>");
        return;
    }
    h.push_str("<table><tr><th class=n>count</th><th>agent</th><th>action</th><th>target</th><th>rule</th><th>last</th></tr>");
    for r in rows {
        let _ = write!(
            h,
            "<tr><td class=n>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            r.count,
            esc(&r.agent),
            esc(&r.action),
            esc(&r.target),
            esc(&r.rule_id),
            esc(&format_ns(r.last_ns))
        );
    }
    h.push_str("</table>");
}

/// What a windowed bundle's chain proves, and what it does not.
fn chain_start_note(start: &ChainStart, end_seq: u64) -> String {
    let window = match (start.window_first_seq, start.window_last_seq) {
        (Some(f), Some(l)) => format!("The window's entries are seq {f}–{l}"),
        _ => "No entry falls in the window".to_string(),
    };
    let prefix = match start.window_first_seq {
        Some(f) if f > start.base_seq + 1 => format!(
            "; seq {}–{} before them are the carried prefix, there only to link the window to the signed head, and not counted in this report",
            start.base_seq + 1,
            f - 1
        ),
        _ => String::new(),
    };
    let vouched = if start.base_seq == 0 {
        "The chain starts at seq 1, so the whole of it up to the window's end is here and re-verified.".to_string()
    } else {
        format!(
            "Entries 1–{} are not in this bundle: they are vouched for by the host key's signature on that head (checked by <code>warden evidence verify</code> with every checkpoint up to seq {end_seq}), not re-verified; proving their content takes the host's <code>warden log verify</code> or an export with <code>--full-chain</code>.",
            start.base_seq
        )
    };
    format!(
        "<p class=meta><b>Chain start:</b> this windowed bundle carries the chain {} to seq {end_seq}. {window}{prefix}. {vouched}</p>",
        esc(&super::bundle::describe_start(start)),
    )
}

pub fn render(c: &Contents) -> String {
    let s = &c.summary;
    let per_agent: BTreeMap<&str, &AgentCounts> =
        s.per_agent.iter().map(|a| (a.agent.as_str(), a)).collect();

    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Warden evidence report: {host}</title><style>{STYLE}</style></head><body>",
        host = esc(&c.host)
    );
    let _ = write!(
        h,
        "<h1>Warden evidence report</h1><p class=meta>Host <b>{}</b> · exported {} · signing key <code>{}</code> · entries {}–{} · {} in this report's window{}</p>",
        esc(&c.host),
        esc(&format_ns(c.created_at_ns)),
        esc(&c.key_id),
        c.base.as_ref().map_or(1, |b| b.seq + 1),
        c.end_seq,
        s.window_entries,
        c.manifest_window.agent.as_ref().map(|a| format!(" · agent <b>{}</b>", esc(a))).unwrap_or_default()
    );
    if let Some(start) = &c.start {
        h.push_str(&chain_start_note(start, c.end_seq));
    }
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
        let get = |f: fn(&AgentCounts) -> u64| n.map_or(0, |c| f(c));
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
        "<h2>Decisions over time</h2><p class=legend><span style='background:{ALLOW}'></span>allowed<span style='background:{DENY}'></span>denied<span style='background:{HOLD}'></span>held</p>{}<h2>Denied and held over time</h2><p class=meta>On their own scale, so a few refusals show beside many allowed actions.</p>{}",
        chart_svg(s.chart.as_ref(), [true, true, true], "decisions"),
        chart_svg(s.chart.as_ref(), [false, true, true], "denied or held decisions")
    );
    top_table(
        &mut h,
        &format!("Most frequent denied and held actions (top {TOP_N})"),
        &s.top_denied,
        "No action was denied or held in this window.",
    );
    top_table(
        &mut h,
        &format!("Most frequent allowed actions (top {TOP_N})"),
        &s.top_allowed,
        "No action was allowed in this window.",
    );
    h.push_str("<p class=meta>Every entry, with these and all others, is in <a href='entries.jsonl'>entries.jsonl</a> and <a href='entries.csv'>entries.csv</a>.</p>");

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
    let gaps = &s.gaps;
    if gaps.is_empty() {
        h.push_str("<p class=meta>No gap entries in this window: every action the kernel counted reached the log, and the daemon recorded each of its starts and stops.</p>");
    } else {
        if s.gaps_total > gaps.len() as u64 {
            let _ = write!(
                h,
                "<p class=meta>{} gap entries; the first {} are listed, all are in entries.jsonl (kind <code>gap</code>).</p>",
                s.gaps_total,
                gaps.len()
            );
        }
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

    h.push_str("<h2>Access reviews</h2><table><tr><th>agent</th><th>decision</th><th>reviewer</th><th>signed at</th><th>policy reviewed</th><th>comment</th></tr>");
    for e in &c.reviews {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            esc(&e.agent),
            esc(&e.decision),
            esc(&e.user),
            esc(&format_ns(e.ts_ns)),
            esc(&e.policy_snapshot),
            esc(e.details.get("comment").and_then(|v| v.as_str()).unwrap_or(""))
        );
    }
    if c.reviews.is_empty() {
        h.push_str("<tr><td colspan=6>no access review signed</td></tr>");
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
