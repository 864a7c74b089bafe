//! The evidence bundle: everything an auditor needs to check this host's
//! record on another machine, without the daemon or the database.
//!
//! Layout (format `warden-evidence-bundle/v2`, or v3 for a windowed bundle
//! whose `checkpoints.json` starts at the checkpoint that signed its base;
//! v1 bundles, whose entries carry no `v` and are all encoding version 1,
//! still verify):
//! - `entries.jsonl`, `entries.csv`: the chain up to the window's last
//!   entry. A windowed export (`--from`/`--to`) starts it after the newest
//!   signed checkpoint before the window's first entry (`manifest.json`
//!   `base` and `chain_start`): what came before is vouched for by that
//!   checkpoint's signature, not carried or re-verified, so the work is the
//!   window plus at most one checkpoint interval. Without a window, or with
//!   `--full-chain`, the chain from seq 1 (or the archive base);
//! - `checkpoints.json`, `host.pub`: signed checkpoints within those entries;
//! - `agents.json`, `capabilities.json`, `policy_versions.json`,
//!   `approvals.json`, `kill_switch.json`: inventory, role/approver ->
//!   capability matrix, policy history, approvals, revocations;
//! - `access_reviews.json`: the latest access review per agent;
//! - `budgets.json`: the budgets in force per agent (latest policy
//!   version); `alerts.json`: the sentinel's alerts in the window;
//!   `detections.json`: the shipped Sigma detection rules, with hashes;
//! - `verification.json`: the host's own verification at export time;
//! - `control_map.json`, `report.html`: controls to records, and a report;
//! - `manifest.json` (sha256 of every file, the chain head) and
//!   `manifest.sig`: Ed25519 over `"warden/bundle/v1" || 0x00 || manifest`.
//!
//! (Over 600 lines: writing a bundle and verifying one offline share the
//! format's types and stay side by side; a windowed bundle's start and its
//! checks are in `bundle/window.rs`.)

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    control_map::CONTROL_MAP,
    report,
    summary::{self, Summary},
};
use crate::{
    approvals::{Approval, Approvals},
    clock,
    config::Paths,
    evidence::{
        checkpoint::{self, Checkpoint, HostKey},
        ChainVerifier, Entry, EvidenceStore, Filter,
    },
    policy,
    registry::{Agent, PolicyVersion, Registry},
};

mod window;
pub use window::{describe_start, ChainStart};
use window::{host_verification, windowed_start, WindowBounds};

/// The format written. v2 entries carry their encoding version `v`; a
/// verifier that predates it refuses the format instead of reporting every
/// version 2 entry as tampered.
pub const FORMAT: &str = "warden-evidence-bundle/v2";
/// A windowed bundle whose `checkpoints.json` starts at the checkpoint
/// that signed its base (`chain_start.checkpoint_id`), not at checkpoint
/// 1: a verifier that predates it refuses the format instead of reporting
/// the missing early checkpoints as removed.
pub const FORMAT_WINDOWED: &str = "warden-evidence-bundle/v3";
/// The formats `verify` accepts.
pub const FORMATS: [&str; 3] = ["warden-evidence-bundle/v1", FORMAT, FORMAT_WINDOWED];
pub const DOMAIN_BUNDLE: &[u8] = b"warden/bundle/v1\0";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("export: {0}")]
    Source(String),
    #[error("{0} is not a directory of a Warden evidence bundle (no manifest.json)")]
    NotABundle(PathBuf),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BundleError + 'a {
    move |source| BundleError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Which part of the record to report on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Window {
    /// Unix ns, inclusive; entries before it are included for the chain
    /// but not reported on.
    pub from_ns: Option<i64>,
    /// Unix ns, exclusive; the bundle ends at the last entry before it.
    pub to_ns: Option<i64>,
    pub agent: Option<String>,
}

impl Window {
    pub fn contains(&self, e: &Entry) -> bool {
        self.from_ns.is_none_or(|f| e.ts_ns >= f)
            && self.to_ns.is_none_or(|t| e.ts_ns < t)
            && self.agent.as_ref().is_none_or(|a| &e.agent == a)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub created_at_ns: i64,
    pub host: String,
    pub key_id: String,
    pub entries: u64,
    pub head_hash: String,
    pub window: Window,
    /// File name -> lowercase hex sha256.
    pub files: BTreeMap<String, String>,
    /// The chain in `entries.jsonl` starts after this entry (its seq and
    /// hash): the log's beginning was archived and pruned before, and a
    /// checkpoint in `checkpoints.json` signed this head. Absent for a
    /// chain from seq 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BundleBase>,
    /// A windowed export's start (see [`ChainStart`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_start: Option<ChainStart>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleBase {
    pub seq: u64,
    pub hash: String,
}

/// What `warden evidence verify` established. `problems` empty = valid.
#[derive(Debug, Clone, Serialize)]
pub struct BundleReport {
    pub entries: u64,
    pub head_hash: String,
    pub checkpoints: u64,
    pub signed_size: u64,
    pub key_id: String,
    /// A windowed bundle's start, as checked (see [`ChainStart`]).
    pub chain_start: Option<ChainStart>,
    pub problems: Vec<String>,
}

impl BundleReport {
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The data a bundle is made of (also what the HTML report shows). The
/// entries themselves are streamed from the store, never all in memory.
pub struct Contents {
    pub manifest_window: Window,
    pub host: String,
    pub created_at_ns: i64,
    pub key_id: String,
    /// The bundle holds the chain from `base` (or seq 1) to this seq.
    pub end_seq: u64,
    pub base: Option<crate::evidence::store::ChainBase>,
    /// A windowed export's start (`None`: the whole stored chain).
    pub start: Option<ChainStart>,
    /// The window's aggregates, for the report.
    pub summary: Summary,
    /// Kill switch entries (kill, revive) up to `end_seq`.
    pub kills: Vec<Entry>,
    pub checkpoints: Vec<Checkpoint>,
    pub agents: Vec<Agent>,
    pub versions: Vec<PolicyVersion>,
    pub approvals: Vec<Approval>,
    pub capabilities: Vec<Capability>,
    /// The latest access review per agent (commands/review.rs), up to
    /// `end_seq`.
    pub reviews: Vec<Entry>,
    pub verification: Result<String, String>,
    /// The budgets in force per agent (`budgets.json`).
    pub budgets: Vec<BudgetInForce>,
    /// The sentinel's `alert` entries in the window (`alerts.json`).
    pub alerts: Vec<Entry>,
}

/// One budget in force (`budgets.json`): what the kernel counts and
/// enforces for the agent, named as the evidence names it.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetInForce {
    pub agent: String,
    /// `budget:<id>`, the evidence's rule_id for its refusals.
    pub rule_id: String,
    pub id: String,
    /// `connect`, `exec`, `file`, `any` or `bytes egress`.
    pub count: String,
    /// Rule ids of `match` (empty: every action of `count`).
    pub matched_rules: Vec<String>,
    pub limit: u64,
    /// `actions` or `bytes`.
    pub unit: String,
    pub per_secs: u64,
    pub then: String,
    pub policy_snapshot: String,
}

/// The budgets of each agent's latest policy version.
fn budgets_in_force(agents: &[Agent], versions: &[PolicyVersion]) -> Vec<BudgetInForce> {
    let mut rows = Vec::new();
    for agent in agents {
        let Some(v) = versions.iter().rev().find(|v| v.agent == agent.name) else {
            continue;
        };
        let Ok(p) = policy::parse_policy(&v.file, &v.content) else {
            continue;
        };
        for b in &p.budgets {
            let bytes = b.count == policy::budget::BudgetCount::EgressBytes;
            rows.push(BudgetInForce {
                agent: agent.name.clone(),
                rule_id: format!("budget:{}", b.id),
                id: b.id.clone(),
                count: b.count.name().into(),
                matched_rules: b.rules.clone(),
                limit: b.limit,
                unit: if bytes { "bytes" } else { "actions" }.into(),
                per_secs: b.per.as_secs(),
                then: b.then.name().into(),
                policy_snapshot: v.sha256.clone(),
            });
        }
    }
    rows
}

/// One row of the role/approver -> capability matrix.
#[derive(Debug, Clone, Serialize)]
pub struct Capability {
    /// "agent:NAME" or the approver ("user:alice", "group:finance").
    pub subject: String,
    pub agent: String,
    /// "connect 127.0.0.1/32 ports 8443 tcp", "approve holds", ...
    pub capability: String,
    pub decision: String,
    pub rule_id: String,
    pub policy_snapshot: String,
}

fn capabilities(agents: &[Agent], versions: &[PolicyVersion]) -> Vec<Capability> {
    let mut rows = Vec::new();
    for agent in agents {
        let Some(v) = versions.iter().rev().find(|v| v.agent == agent.name) else {
            continue;
        };
        // Parse only, not the pipeline: this version was in force, and
        // today's host or map limits must not drop it from the matrix.
        let Ok(p) = policy::parse_policy(&v.file, &v.content) else {
            continue;
        };
        for rule in &p.rules {
            let decision = format!("{:?}", rule.decision).to_lowercase();
            rows.push(Capability {
                subject: format!("agent:{}", agent.name),
                agent: agent.name.clone(),
                capability: describe_selector(&rule.selector),
                decision,
                rule_id: rule.id.clone(),
                policy_snapshot: v.sha256.clone(),
            });
        }
        // The budgets in force: one row each, named as the evidence names
        // a refusal (`budget:<id>`).
        for b in &p.budgets {
            let only = if b.rules.is_empty() {
                String::new()
            } else {
                format!(" allowed by {}", b.rules.join(", "))
            };
            rows.push(Capability {
                subject: format!("agent:{}", agent.name),
                agent: agent.name.clone(),
                capability: format!(
                    "budget: {} {}{only} per {} s, enforced in the kernel",
                    b.limit,
                    b.count.name(),
                    b.per.as_secs()
                ),
                decision: format!("{} over the limit", b.then.name()),
                rule_id: format!("budget:{}", b.id),
                policy_snapshot: v.sha256.clone(),
            });
        }
        let held: Vec<&str> = p
            .rules
            .iter()
            .filter(|r| r.decision == policy::Decision::Hold)
            .map(|r| r.id.as_str())
            .collect();
        if !held.is_empty() {
            let subjects = p
                .approvers
                .users
                .iter()
                .map(|u| format!("user:{u}"))
                .chain(p.approvers.groups.iter().map(|g| format!("group:{g}")));
            for subject in subjects {
                rows.push(Capability {
                    subject,
                    agent: agent.name.clone(),
                    capability: "approve or reject held actions".into(),
                    decision: "approve".into(),
                    rule_id: held.join(","),
                    policy_snapshot: v.sha256.clone(),
                });
            }
        }
        rows.push(Capability {
            subject: format!("agent:{}", agent.name),
            agent: agent.name.clone(),
            capability: "anything not listed".into(),
            decision: "deny".into(),
            rule_id: "default-deny".into(),
            policy_snapshot: v.sha256.clone(),
        });
    }
    rows
}

fn describe_selector(s: &policy::Selector) -> String {
    match s {
        policy::Selector::Connect {
            cidr,
            ports,
            protocol,
        } => {
            let ports = if ports.is_empty() {
                "all ports".to_string()
            } else {
                let list: Vec<String> = ports
                    .iter()
                    .map(|(lo, hi)| {
                        if lo == hi {
                            lo.to_string()
                        } else {
                            format!("{lo}-{hi}")
                        }
                    })
                    .collect();
                format!("ports {}", list.join(","))
            };
            format!(
                "connect {cidr} {ports} {}",
                format!("{protocol:?}").to_lowercase()
            )
        }
        other => format!("{other:?}"),
    }
}

/// How much of the chain an export carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainSpan {
    /// A window (`--from`/`--to`) starts after the newest signed checkpoint
    /// before its first entry; without a window, the whole stored chain.
    Window,
    /// `--full-chain`: the whole stored chain up to the window's end, and
    /// the host verification of the whole log, whatever the window.
    Full,
}

fn gather(
    paths: &Paths,
    window: &Window,
    through: Option<u64>,
    span: ChainSpan,
) -> Result<(Contents, HostKey, EvidenceStore), BundleError> {
    let src = |e: &dyn std::error::Error| BundleError::Source(crate::error_chain(e));
    // No quick_check: the host verification reads the entries it vouches for.
    let store = EvidenceStore::open_with(&paths.database(), crate::db::Integrity::Trust)
        .map_err(|e| src(&e))?;
    let key = HostKey::load_or_create(&paths.state_dir).map_err(|e| src(&e))?;
    let stored_base = store.base().map_err(|e| src(&e))?;
    let all_checkpoints = checkpoint::read_all(store.connection()).map_err(|e| src(&e))?;
    let windowed = through.is_none()
        && span == ChainSpan::Window
        && (window.from_ns.is_some() || window.to_ns.is_some());
    let (end_seq, base, start, verification) = if windowed {
        let (end_seq, start) =
            windowed_start(&store, window, stored_base.as_ref(), &all_checkpoints)
                .map_err(|e| src(&e))?;
        let base = (start.base_seq > 0).then(|| crate::evidence::store::ChainBase {
            seq: start.base_seq,
            hash: start.base_hash.clone(),
        });
        // Verified while the entries are written (export_through).
        (end_seq, base, Some(start), Ok(String::new()))
    } else {
        let verification =
            match crate::evidence::verify_store_signed(&store, &key.verifying_key(), &[]) {
                Ok((chain, signed)) => Ok(format!(
                "chain intact: {} entries, head {}; {} checkpoints valid, newest covers {} entries",
                chain.entries, chain.head_hash, signed.checkpoints, signed.signed_size
            )),
                Err(e) => Err(crate::error_chain(&e)),
            };
        let end_seq = match through {
            Some(seq) => seq,
            None => end_of_window(&store, window.to_ns).map_err(|e| src(&e))?,
        };
        (end_seq, stored_base, None, verification)
    };
    // A windowed bundle carries the checkpoints from the one that signed
    // its base: the earlier ones sign only entries it does not carry.
    let first_checkpoint = start.as_ref().and_then(|s| s.checkpoint_id).unwrap_or(0);
    let checkpoints = all_checkpoints
        .into_iter()
        .filter(|c| c.size <= end_seq && c.id >= first_checkpoint)
        .collect();
    let first_seq = base.as_ref().map_or(1, |b| b.seq + 1);
    let summary = summary::summarise(&store, window, first_seq, end_seq).map_err(|e| src(&e))?;
    let mut kills = Vec::new();
    for kind in ["kill", "revive"] {
        let found = store
            .query(&Filter {
                kind: Some(kind.into()),
                ..Filter::default()
            })
            .map_err(|e| src(&e))?;
        kills.extend(found.into_iter().filter(|e| e.seq <= end_seq));
    }
    kills.sort_by_key(|e| e.seq);
    let registry = Registry::open(&paths.database()).map_err(|e| src(&e))?;
    let mut agents = registry.list().map_err(|e| src(&e))?;
    let mut versions = registry.policy_versions(None).map_err(|e| src(&e))?;
    let mut approvals = Approvals::open(&paths.database())
        .and_then(|a| a.list(true))
        .map_err(|e| src(&e))?;
    if let Some(a) = &window.agent {
        agents.retain(|x| &x.name == a);
        versions.retain(|x| &x.agent == a);
        approvals.retain(|x| &x.job.agent == a);
    }
    let capabilities = capabilities(&agents, &versions);
    let budgets = budgets_in_force(&agents, &versions);
    let alerts: Vec<Entry> = store
        .query(&Filter {
            kind: Some("alert".into()),
            ..Filter::default()
        })
        .map_err(|e| src(&e))?
        .into_iter()
        .filter(|e| e.seq <= end_seq && window.contains(e))
        .collect();
    let reviews: Vec<Entry> = crate::commands::review::latest_reviews(
        store
            .query(&Filter {
                kind: Some(crate::commands::review::ACCESS_REVIEW_KIND.into()),
                ..Filter::default()
            })
            .map_err(|e| src(&e))?
            .into_iter()
            .filter(|e| e.seq <= end_seq)
            .filter(|e| window.agent.as_ref().is_none_or(|a| &e.agent == a))
            .collect(),
    )
    .into_values()
    .collect();
    let contents = Contents {
        manifest_window: window.clone(),
        host: fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_string(),
        created_at_ns: clock::now_ns(),
        key_id: checkpoint::key_id(&key.verifying_key()),
        end_seq,
        base,
        start,
        summary,
        kills,
        checkpoints,
        agents,
        versions,
        approvals,
        capabilities,
        reviews,
        verification,
        budgets,
        alerts,
    };
    Ok((contents, key, store))
}

/// The last seq of the bundle: the newest entry before `to_ns` (the chain
/// from its start up to the last entry of the window), or the head.
fn end_of_window(
    store: &EvidenceStore,
    to_ns: Option<i64>,
) -> Result<u64, crate::evidence::StoreError> {
    let op = "find the end of the export window";
    let sql_err = |source| crate::evidence::StoreError::Sqlite {
        op,
        path: store.path().to_path_buf(),
        source,
    };
    use rusqlite::OptionalExtension;
    let seq: Option<u64> = match to_ns {
        None => store.head()?.map(|(seq, _)| seq),
        // Through the time index: it visits the entries before `to`, which
        // the export writes anyway, never the (maybe far larger) rest.
        Some(to) => store
            .connection()
            .query_row(
                "SELECT max(seq) FROM evidence INDEXED BY evidence_ts WHERE ts_ns < ?1",
                [to],
                |row| row.get::<_, Option<u64>>(0),
            )
            .optional()
            .map_err(sql_err)?
            .flatten(),
    };
    Ok(seq.unwrap_or(0))
}

/// A writer that hashes what passes through it, so a multi-gigabyte file
/// is not read back to be hashed.
struct Hashing<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn hashing_file(path: &Path) -> Result<Hashing<std::io::BufWriter<fs::File>>, BundleError> {
    Ok(Hashing {
        inner: std::io::BufWriter::with_capacity(
            1 << 20,
            fs::File::create(path).map_err(io_err("create", path))?,
        ),
        hash: Sha256::new(),
    })
}

/// Progress on stderr, only when it is a terminal.
struct Progress {
    total: u64,
    shown: std::time::Instant,
    on: bool,
}

impl Progress {
    fn new(total: u64) -> Self {
        Progress {
            total,
            shown: std::time::Instant::now(),
            on: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }

    fn tick(&mut self, done: u64) {
        if self.on && (done == self.total || self.shown.elapsed().as_millis() >= 250) {
            self.shown = std::time::Instant::now();
            let pct = (done * 100).checked_div(self.total).unwrap_or(100);
            eprint!("\rexport: {done} / {} entries ({pct}%)", self.total);
            if done == self.total {
                eprintln!();
            }
        }
    }
}

fn write_json<T: Serialize + ?Sized>(dir: &Path, name: &str, value: &T) -> Result<(), BundleError> {
    let path = dir.join(name);
    let text = serde_json::to_string_pretty(value).map_err(|source| BundleError::Json {
        path: path.clone(),
        source,
    })?;
    fs::write(&path, text).map_err(io_err("write", &path))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

const CSV_COLUMNS: &str = "seq,ts_ns,time,kind,agent,owner,uid,user,loginuid,login_user,pid,exe,action,target,decision,rule_id,policy_snapshot,method,details,prev_hash,hash,v";

fn csv_row(e: &Entry) -> String {
    let details = serde_json::to_string(&e.details).unwrap_or_default();
    [
        e.seq.to_string(),
        e.ts_ns.to_string(),
        clock::format_ns(e.ts_ns),
        e.kind.clone(),
        e.agent.clone(),
        e.owner.clone(),
        e.uid.to_string(),
        e.user.clone(),
        e.loginuid.to_string(),
        e.login_user.clone(),
        e.pid.to_string(),
        e.exe.clone(),
        e.action.clone(),
        e.target.clone(),
        e.decision.clone(),
        e.rule_id.clone(),
        e.policy_snapshot.clone(),
        e.method.clone(),
        details,
        e.prev_hash.clone(),
        e.hash.clone(),
        e.v.to_string(),
    ]
    .iter()
    .map(|f| csv_field(f))
    .collect::<Vec<_>>()
    .join(",")
}

fn sha256_file(path: &Path) -> Result<String, BundleError> {
    let mut file = fs::File::open(path).map_err(io_err("read", path))?;
    let mut hash = Sha256::new();
    std::io::copy(&mut file, &mut hash).map_err(io_err("read", path))?;
    Ok(hex::encode(hash.finalize()))
}

/// `warden evidence export --out DIR`: writes the bundle; returns its manifest.
pub fn export(paths: &Paths, out: &Path, window: &Window) -> Result<Manifest, BundleError> {
    export_span(paths, out, window, ChainSpan::Window)
}

/// [`export`], `--full-chain` or not.
pub fn export_span(
    paths: &Paths,
    out: &Path,
    window: &Window,
    span: ChainSpan,
) -> Result<Manifest, BundleError> {
    write_bundle(paths, out, window, None, span)
}

/// [`export`] of the whole stored chain up to seq `through`, every file
/// synced to disk before it returns (an archive prunes what it holds).
pub fn export_through(
    paths: &Paths,
    out: &Path,
    window: &Window,
    through: Option<u64>,
) -> Result<Manifest, BundleError> {
    write_bundle(paths, out, window, through, ChainSpan::Full)
}

fn write_bundle(
    paths: &Paths,
    out: &Path,
    window: &Window,
    through: Option<u64>,
    span: ChainSpan,
) -> Result<Manifest, BundleError> {
    let (mut c, key, store) = gather(paths, window, through, span)?;
    fs::create_dir_all(out).map_err(io_err("create", out))?;

    // A windowed bundle's host verification is of what it carries: the
    // chain from the signed base to its end, checked as it is written, and
    // every checkpoint up to there (signatures, their chain, and those in
    // the carried part against it). The rest of the log is not read.
    let mut host_check = c.start.as_ref().map(|_| {
        (
            ChainVerifier::from_base(c.base.as_ref()),
            None::<String>,
            std::collections::HashMap::<u64, String>::new(),
        )
    });
    let wanted: std::collections::HashSet<u64> = c.checkpoints.iter().map(|cp| cp.size).collect();

    // The chain from its start to the end of the window, one row at a time.
    let path = out.join("entries.jsonl");
    let csv_path = out.join("entries.csv");
    let mut file = hashing_file(&path)?;
    let mut csv = hashing_file(&csv_path)?;
    writeln!(csv, "{CSV_COLUMNS}").map_err(io_err("write", &csv_path))?;
    let mut written = 0u64;
    let mut head_hash = c.base.as_ref().map_or_else(
        || crate::evidence::record::GENESIS_PREV_HASH.to_string(),
        |b| b.hash.clone(),
    );
    let first_seq = c.base.as_ref().map_or(1, |b| b.seq + 1);
    let total = (c.end_seq + 1).saturating_sub(first_seq);
    let mut progress = Progress::new(total);
    let flow = store
        .for_each_in_range(first_seq, c.end_seq, |e| {
            let step = (|| {
                serde_json::to_writer(&mut file, e).map_err(|source| BundleError::Json {
                    path: path.clone(),
                    source,
                })?;
                writeln!(file).map_err(io_err("write", &path))?;
                writeln!(csv, "{}", csv_row(e)).map_err(io_err("write", &csv_path))
            })();
            if let Err(err) = step {
                return std::ops::ControlFlow::Break(err);
            }
            if let Some((verifier, problem @ None, hashes)) = host_check.as_mut() {
                match verifier.push(e) {
                    Ok(()) if wanted.contains(&e.seq) => {
                        hashes.insert(e.seq, e.hash.clone());
                    }
                    Ok(()) => {}
                    Err(err) => *problem = Some(err.to_string()),
                }
            }
            written += 1;
            head_hash.clone_from(&e.hash);
            if written.is_multiple_of(4096) {
                progress.tick(written);
            }
            std::ops::ControlFlow::Continue(())
        })
        .map_err(|e| BundleError::Source(crate::error_chain(&e)))?;
    if let std::ops::ControlFlow::Break(err) = flow {
        return Err(err);
    }
    progress.tick(total.max(written));
    file.flush().map_err(io_err("write", &path))?;
    csv.flush().map_err(io_err("write", &csv_path))?;
    if let (Some((verifier, problem, mut hashes)), Some(start)) = (host_check, &c.start) {
        c.verification = host_verification(
            verifier,
            problem,
            &mut hashes,
            start,
            c.end_seq,
            &c.checkpoints,
            &key,
        );
    }
    let mut streamed = BTreeMap::new();
    streamed.insert("entries.jsonl", hex::encode(file.hash.finalize()));
    streamed.insert("entries.csv", hex::encode(csv.hash.finalize()));

    write_json(out, "checkpoints.json", &c.checkpoints)?;
    let public = out.join(checkpoint::PUBLIC_KEY_FILE);
    fs::write(&public, hex::encode(key.verifying_key().as_bytes()))
        .map_err(io_err("write", &public))?;
    write_json(out, "agents.json", &c.agents)?;
    write_json(out, "capabilities.json", &c.capabilities)?;
    write_json(out, "policy_versions.json", &c.versions)?;
    write_json(out, "approvals.json", &c.approvals)?;
    write_json(out, "kill_switch.json", &c.kills)?;
    write_json(out, "access_reviews.json", &c.reviews)?;
    write_json(out, "budgets.json", &c.budgets)?;
    write_json(out, "alerts.json", &c.alerts)?;
    write_json(out, "detections.json", &super::detections::shipped())?;
    let verification = match &c.verification {
        Ok(summary) => serde_json::json!({ "valid": true, "summary": summary }),
        Err(problem) => serde_json::json!({ "valid": false, "problem": problem }),
    };
    write_json(out, "verification.json", &verification)?;
    write_json(out, "control_map.json", CONTROL_MAP)?;
    let html = out.join("report.html");
    fs::write(&html, report::render(&c)).map_err(io_err("write", &html))?;

    let mut files = BTreeMap::new();
    for name in [
        "entries.jsonl",
        "entries.csv",
        "checkpoints.json",
        checkpoint::PUBLIC_KEY_FILE,
        "agents.json",
        "capabilities.json",
        "policy_versions.json",
        "approvals.json",
        "kill_switch.json",
        "access_reviews.json",
        "budgets.json",
        "alerts.json",
        "detections.json",
        "verification.json",
        "control_map.json",
        "report.html",
    ] {
        let hash = match streamed.get(name) {
            Some(hash) => hash.clone(),
            None => sha256_file(&out.join(name))?,
        };
        files.insert(name.to_string(), hash);
    }
    let format = match c.start.as_ref().and_then(|s| s.checkpoint_id) {
        Some(_) => FORMAT_WINDOWED,
        None => FORMAT,
    };
    let manifest = Manifest {
        format: format.into(),
        created_at_ns: c.created_at_ns,
        host: c.host.clone(),
        key_id: c.key_id.clone(),
        entries: written,
        head_hash,
        window: window.clone(),
        files,
        base: c.base.as_ref().map(|b| BundleBase {
            seq: b.seq,
            hash: b.hash.clone(),
        }),
        chain_start: c.start.clone(),
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|source| BundleError::Json {
        path: out.join("manifest.json"),
        source,
    })?;
    fs::write(out.join("manifest.json"), &text)
        .map_err(io_err("write", &out.join("manifest.json")))?;
    let sig = key.sign(DOMAIN_BUNDLE, &text);
    fs::write(out.join("manifest.sig"), sig).map_err(io_err("write", &out.join("manifest.sig")))?;
    if through.is_some() {
        for name in manifest
            .files
            .keys()
            .map(String::as_str)
            .chain(["manifest.json", "manifest.sig"])
        {
            let p = out.join(name);
            fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(io_err("sync", &p))?;
        }
        fs::File::open(out)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync", out))?;
    }
    Ok(manifest)
}

/// `warden evidence verify DIR`: checks a bundle with nothing but its files.
/// `expected_key` (hex) pins the host key the auditor obtained out of band.
pub fn verify(dir: &Path, expected_key: Option<&str>) -> Result<BundleReport, BundleError> {
    let manifest_path = dir.join("manifest.json");
    if !manifest_path.exists() {
        return Err(BundleError::NotABundle(dir.to_path_buf()));
    }
    let mut problems = Vec::new();
    let manifest_bytes = fs::read(&manifest_path).map_err(io_err("read", &manifest_path))?;
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|source| BundleError::Json {
            path: manifest_path.clone(),
            source,
        })?;
    let key = checkpoint::load_public_key(dir)
        .map_err(|e| BundleError::Source(crate::error_chain(&e)))?;
    let key_id = checkpoint::key_id(&key);
    if let Some(expected) = expected_key {
        if !hex::encode(key.as_bytes()).eq_ignore_ascii_case(expected.trim()) {
            problems.push(format!(
                "host.pub is not the expected key (bundle key id {key_id})"
            ));
        }
    }

    let checkpoints_path = dir.join("checkpoints.json");
    let checkpoints: Vec<Checkpoint> = fs::read(&checkpoints_path)
        .map_err(io_err("read", &checkpoints_path))
        .and_then(|b| {
            serde_json::from_slice(&b).map_err(|source| BundleError::Json {
                path: checkpoints_path.clone(),
                source,
            })
        })?;
    // Only the hashes a checkpoint signed are kept: memory stays bounded
    // however long the chain.
    let wanted: std::collections::HashSet<u64> = checkpoints.iter().map(|c| c.size).collect();

    // The chain first: its problems name the first bad sequence number.
    let entries_path = dir.join("entries.jsonl");
    let file = fs::File::open(&entries_path).map_err(io_err("open", &entries_path))?;
    let base = manifest
        .base
        .as_ref()
        .map(|b| crate::evidence::store::ChainBase {
            seq: b.seq,
            hash: b.hash.clone(),
        });
    let mut verifier = ChainVerifier::from_base(base.as_ref());
    let mut hashes = std::collections::HashMap::new();
    if let Some(b) = &base {
        hashes.insert(b.seq, b.hash.clone());
    }
    let mut bounds = manifest
        .chain_start
        .as_ref()
        .map(|start| WindowBounds::new(start, &manifest, &checkpoints));
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io_err("read", &entries_path))?;
        let entry: Entry = match serde_json::from_str(&line) {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("entries.jsonl line {}: not an entry: {e}", n + 1));
                break;
            }
        };
        if let Err(e) = verifier.push(&entry) {
            problems.push(e.to_string());
            break;
        }
        if let Some(b) = bounds.as_mut() {
            b.observe(&entry, &manifest.window);
        }
        if wanted.contains(&entry.seq) {
            hashes.insert(entry.seq, entry.hash);
        }
    }
    let chain = verifier.finish();
    let signed = if problems.is_empty() {
        let base_seq = base.as_ref().map_or(0, |b| b.seq);
        // A windowed bundle's checkpoints start at the one that signed its
        // base (format v3; WindowBounds checks that one is there).
        let check = if manifest
            .chain_start
            .as_ref()
            .is_some_and(|s| s.checkpoint_id.is_some())
        {
            checkpoint::verify_suffix
        } else {
            checkpoint::verify_all_from
        };
        match check(&checkpoints, &key, base_seq, chain.head_seq, &|seq| {
            hashes.get(&seq).cloned()
        })
        .and_then(|r| checkpoint::base_is_signed(&checkpoints, base.as_ref()).map(|()| r))
        {
            Ok(r) => r.signed_size,
            Err(e) => {
                problems.push(e.to_string());
                0
            }
        }
    } else {
        0
    };

    // A windowed bundle: where its chain starts, and the window's bounds.
    if let (Some(b), true) = (bounds, problems.is_empty()) {
        problems.extend(b.finish(chain.head_seq));
    }

    // Then the manifest: its signature, and every file against it.
    let sig = fs::read_to_string(dir.join("manifest.sig")).unwrap_or_default();
    if !checkpoint::verify_detached(&key, DOMAIN_BUNDLE, &manifest_bytes, &sig) {
        problems.push(
            "manifest.sig does not verify: the manifest was altered or signed by another key"
                .into(),
        );
    }
    if !FORMATS.contains(&manifest.format.as_str()) {
        problems.push(format!("unknown bundle format {:?}", manifest.format));
    }
    for (name, expected) in &manifest.files {
        match sha256_file(&dir.join(name)) {
            Ok(actual) if &actual == expected => {}
            Ok(_) => problems.push(format!(
                "{name} does not match its sha256 in the manifest (altered)"
            )),
            Err(_) => problems.push(format!("{name} is missing")),
        }
    }
    if problems.is_empty()
        && (manifest.entries != chain.entries || manifest.head_hash != chain.head_hash)
    {
        problems.push(format!(
            "manifest says {} entries ending in {}, entries.jsonl has {} ending in {}",
            manifest.entries, manifest.head_hash, chain.entries, chain.head_hash
        ));
    }
    Ok(BundleReport {
        entries: chain.entries,
        head_hash: chain.head_hash,
        checkpoints: checkpoints.len() as u64,
        signed_size: signed,
        key_id,
        chain_start: manifest.chain_start,
        problems,
    })
}

#[cfg(test)]
mod tests;
