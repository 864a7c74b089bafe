//! What the HTML report shows, aggregated by SQLite over the window: counts
//! per agent, the decisions over time, the most frequent denied and allowed
//! actions, and the gap entries. Memory stays bounded at any log size (only
//! the aggregates and top-N rows reach Rust); every entry is in
//! `entries.jsonl` for anything the report leaves out.

use rusqlite::{params, Connection};

use super::bundle::Window;
use crate::evidence::{Entry, EvidenceStore, Filter, StoreError};

/// Rows in each top-N table of the report.
pub const TOP_N: usize = 20;
/// Gap entries listed individually (all are counted).
pub const GAPS_LISTED: usize = 100;
/// Bars of the decisions-over-time chart.
pub const BUCKETS: usize = 24;

/// Per-agent decision counts in the window.
#[derive(Debug, Default, Clone)]
pub struct AgentCounts {
    pub agent: String,
    pub allow: u64,
    pub deny: u64,
    pub hold: u64,
    pub approvals: u64,
    /// Record mode: went ahead, would have been denied or held.
    pub would: u64,
    pub last_ns: i64,
}

/// Kernel decisions (and holds) per time bucket: [allowed, denied, held].
#[derive(Debug, Clone)]
pub struct Chart {
    pub start_ns: i64,
    pub end_ns: i64,
    pub buckets: Vec<[u64; 3]>,
}

/// One row of a top-N table: how often this action was decided this way.
#[derive(Debug, Clone)]
pub struct TopRow {
    pub agent: String,
    pub action: String,
    pub target: String,
    pub rule_id: String,
    pub count: u64,
    pub last_ns: i64,
}

/// Everything the report shows about the entries of the window.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Entries in the window (what the report is about).
    pub window_entries: u64,
    pub per_agent: Vec<AgentCounts>,
    pub chart: Option<Chart>,
    pub top_denied: Vec<TopRow>,
    pub top_allowed: Vec<TopRow>,
    pub gaps_total: u64,
    pub gaps: Vec<Entry>,
}

/// The window's WHERE clause over `?1` (last seq), `?2` (from), `?3` (to),
/// `?4` (agent), `?5` (first seq). The seq range bounds the scan to the
/// carried chain (a windowed bundle's starts at a checkpoint near the
/// window), whatever the time bounds.
const IN_WINDOW: &str = "seq >= ?5 AND seq <= ?1 AND (?2 IS NULL OR ts_ns >= ?2) \
    AND (?3 IS NULL OR ts_ns < ?3) AND (?4 IS NULL OR agent = ?4)";

/// Aggregates the window of the chain carried from `first_seq` to
/// `end_seq` (a windowed bundle's carried prefix before the window is
/// outside the window's times, so it is not counted).
pub fn summarise(
    store: &EvidenceStore,
    window: &Window,
    first_seq: u64,
    end_seq: u64,
) -> Result<Summary, StoreError> {
    let conn = store.connection();
    let sql = |op| {
        let path = store.path().to_path_buf();
        move |source| StoreError::Sqlite { op, path, source }
    };
    let w = params![
        end_seq,
        window.from_ns,
        window.to_ns,
        window.agent,
        first_seq
    ];

    let mut summary = Summary::default();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT agent, count(*),
                sum(kind = 'decision' AND decision = 'allow'),
                sum(kind = 'decision'
                    AND decision NOT IN ('allow', 'hold', 'would-deny', 'would-hold')),
                sum((kind = 'decision' AND decision = 'hold') OR kind = 'hold'),
                sum(kind = 'approval'),
                max(ts_ns),
                sum(kind = 'decision' AND decision IN ('would-deny', 'would-hold'))
             FROM evidence WHERE {IN_WINDOW} GROUP BY agent ORDER BY agent"
        ))
        .map_err(sql("summarise agents"))?;
    let mut rows = stmt.query(w).map_err(sql("summarise agents"))?;
    while let Some(row) = rows.next().map_err(sql("summarise agents"))? {
        let n = |i| {
            row.get::<_, Option<i64>>(i)
                .map(|v| v.unwrap_or(0).max(0) as u64)
        };
        summary.window_entries += n(1).map_err(sql("summarise agents"))?;
        summary.per_agent.push(AgentCounts {
            agent: row.get(0).map_err(sql("summarise agents"))?,
            allow: n(2).map_err(sql("summarise agents"))?,
            deny: n(3).map_err(sql("summarise agents"))?,
            hold: n(4).map_err(sql("summarise agents"))?,
            approvals: n(5).map_err(sql("summarise agents"))?,
            last_ns: row.get(6).map_err(sql("summarise agents"))?,
            would: n(7).map_err(sql("summarise agents"))?,
        });
    }
    drop(rows);
    summary.chart = chart(conn, w).map_err(sql("summarise decisions over time"))?;
    summary.top_denied =
        top(conn, w, "decision <> 'allow'").map_err(sql("summarise denied actions"))?;
    summary.top_allowed =
        top(conn, w, "decision = 'allow'").map_err(sql("summarise allowed actions"))?;

    // Gaps through the kind index: few, but a log may hold many.
    let gaps = store.query(&Filter {
        kind: Some("gap".into()),
        agent: window.agent.clone(),
        since_ns: window.from_ns,
        until_ns: window.to_ns,
        ..Filter::default()
    })?;
    let gaps: Vec<Entry> = gaps
        .into_iter()
        .filter(|e| (first_seq..=end_seq).contains(&e.seq))
        .collect();
    summary.gaps_total = gaps.len() as u64;
    summary.gaps = gaps.into_iter().take(GAPS_LISTED).collect();
    Ok(summary)
}

type WindowParams<'a> = &'a [&'a dyn rusqlite::ToSql];

fn chart(conn: &Connection, w: WindowParams<'_>) -> rusqlite::Result<Option<Chart>> {
    let decisions = "kind IN ('decision', 'hold')";
    let (start, end): (Option<i64>, Option<i64>) = conn.query_row(
        &format!("SELECT min(ts_ns), max(ts_ns) FROM evidence WHERE {IN_WINDOW} AND {decisions}"),
        w,
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let (Some(start), Some(end)) = (start, end) else {
        return Ok(None);
    };
    let end = end.max(start + 1);
    // Integer bucket width, rounded up so the newest decision is in the last bar.
    let width = ((end - start) / BUCKETS as i64 + 1).max(1);
    let mut stmt = conn.prepare(&format!(
        "SELECT (ts_ns - ?6) / ?7 AS b,
            sum(decision IN ('allow', 'would-deny', 'would-hold')),
            sum(decision NOT IN ('allow', 'hold', 'would-deny', 'would-hold') AND kind <> 'hold'),
            sum(decision = 'hold' OR kind = 'hold')
         FROM evidence WHERE {IN_WINDOW} AND {decisions} GROUP BY b"
    ))?;
    let mut buckets = vec![[0u64; 3]; BUCKETS];
    let mut rows = stmt.query(params![w[0], w[1], w[2], w[3], w[4], start, width])?;
    while let Some(row) = rows.next()? {
        let b = usize::try_from(row.get::<_, i64>(0)?)
            .unwrap_or(0)
            .min(BUCKETS - 1);
        for (i, slot) in buckets[b].iter_mut().enumerate() {
            *slot += row.get::<_, i64>(i + 1)?.max(0) as u64;
        }
    }
    Ok(Some(Chart {
        start_ns: start,
        end_ns: end,
        buckets,
    }))
}

fn top(conn: &Connection, w: WindowParams<'_>, which: &str) -> rusqlite::Result<Vec<TopRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT agent, action, target, rule_id, count(*) AS n, max(ts_ns)
         FROM evidence WHERE {IN_WINDOW} AND kind = 'decision' AND {which}
         GROUP BY agent, action, target, rule_id ORDER BY n DESC, agent, action, target
         LIMIT {TOP_N}"
    ))?;
    let rows = stmt.query_map(w, |row| {
        Ok(TopRow {
            agent: row.get(0)?,
            action: row.get(1)?,
            target: row.get(2)?,
            rule_id: row.get(3)?,
            count: row.get::<_, i64>(4)?.max(0) as u64,
            last_ns: row.get(5)?,
        })
    })?;
    rows.collect()
}
