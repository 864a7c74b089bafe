//! `warden policy shadow`: an agent's recorded decisions replayed against
//! a candidate policy, offline, to see what would change before it goes
//! live.
//!
//! The candidate goes through the one pipeline ([`compile_policy`]), and
//! each recorded action is decided on the compiled tables the daemon would
//! install, by [`Evaluator`]: the kernel judges' lookups done in user space
//! (longest CIDR then first port rule; longest path key; the strictest of
//! an open's accesses; a rename or link allowed only if both names may be
//! written). Its unit tests hold it to those semantics.
//!
//! Weights: a `decision` entry is one action, a `summary` entry stands for
//! `count` repeats of the action (allowed, or denied) before it. What the rules did not
//! decide (revoked agent, unresolved path, anonymous exec, no evidence,
//! unknown cgroup) is left out and counted apart: no policy changes it.
//! Recorded `would-deny`/`would-hold` (record mode) compare as deny/hold:
//! the comparison is of what the rules say, not of what record mode lets
//! through.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;
use warden_common::{rule, FileRule, NetRules, PathRule, PATH_KEY_BYTES};

use super::{compile_policy, Capabilities, CompiledPolicy, Decision, PathEntry, PolicyError};
use crate::evidence::Entry;

/// Examples kept per group of differences.
pub const EXAMPLES: usize = 3;

/// One recorded action, in the terms the kernel decided it on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Replayed {
    /// connect or sendmsg: destination and IP protocol number.
    Net {
        addr: IpAddr,
        port: u16,
        proto: u8,
    },
    Exec {
        path: String,
    },
    Open {
        path: String,
        read: bool,
        write: bool,
    },
    /// A raw IP socket's creation.
    RawSocket,
    /// A packet socket's creation (`AF_PACKET`, `SOCK_PACKET`).
    PacketSocket,
    /// rename or link: both names are decided as writes.
    Name {
        old: String,
        new: String,
    },
}

/// Reads the action a `decision` or `summary` entry records. `None` for
/// an entry it cannot replay (another kind, or a target it cannot parse).
pub fn replayed(e: &Entry) -> Option<Replayed> {
    match e.action.as_str() {
        "connect4" | "connect6" | "sendmsg4" | "sendmsg6" => {
            let (addr, rest) = match e.target.strip_prefix('[') {
                Some(v6) => {
                    let (a, rest) = v6.split_once("]:")?;
                    (a.parse().ok()?, rest)
                }
                None => {
                    let (a, rest) = e.target.split_once(':')?;
                    (a.parse().ok()?, rest)
                }
            };
            let (port, proto) = rest.split_once('/')?;
            let proto = match proto {
                "tcp" => warden_common::proto::TCP,
                "udp" => warden_common::proto::UDP,
                p => p.strip_prefix("proto")?.parse().ok()?,
            };
            Some(Replayed::Net {
                addr,
                port: port.parse().ok()?,
                proto,
            })
        }
        "exec" => Some(Replayed::Exec {
            path: e.target.clone(),
        }),
        "open" => {
            let access = e.details.get("access")?.as_str()?;
            Some(Replayed::Open {
                path: e.target.clone(),
                read: access.contains("read"),
                write: access.contains("write"),
            })
        }
        "socket" if e.target.starts_with("raw ") => Some(Replayed::RawSocket),
        "socket" if e.target.starts_with("packet ") => Some(Replayed::PacketSocket),
        "rename" | "link" => Some(Replayed::Name {
            old: e.details.get("old_path")?.as_str()?.to_string(),
            new: e.target.clone(),
        }),
        _ => None,
    }
}

/// A decision as the kernel would make it: what, and which rule
/// (`rule::DEFAULT` for none). `governed: false` when the policy has no
/// rules of the kind, so the kernel does not decide it at all (allowed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub rule_idx: u32,
    pub governed: bool,
}

impl Verdict {
    fn of(decision: u8, rule_idx: u32) -> Self {
        Verdict {
            decision: kernel_decision(decision),
            rule_idx,
            governed: true,
        }
    }

    const DEFAULT: Self = Verdict {
        decision: Decision::Deny,
        rule_idx: rule::DEFAULT,
        governed: true,
    };
}

/// The judges' reading of a stored decision byte: anything but allow or
/// hold is a denial (judge/file.rs `kernel_decision`, judge/net.rs).
fn kernel_decision(stored: u8) -> Decision {
    match stored {
        s if s == warden_common::Decision::Allow as u8 => Decision::Allow,
        s if s == warden_common::Decision::Hold as u8 => Decision::Hold,
        _ => Decision::Deny,
    }
}

fn strictness(d: Decision) -> u8 {
    match d {
        Decision::Allow => 0,
        Decision::Hold => 1,
        Decision::Deny => 2,
    }
}

/// The kernel judges' decisions over one compiled policy, in user space.
pub struct Evaluator<'a> {
    pub compiled: &'a CompiledPolicy,
}

impl Evaluator<'_> {
    pub fn decide(&self, action: &Replayed) -> Verdict {
        match action {
            Replayed::Net { addr, port, proto } => self.net(*addr, *port, *proto),
            Replayed::Exec { path } => {
                if !self.compiled.paths.exec_governed {
                    return Verdict {
                        decision: Decision::Allow,
                        rule_idx: rule::DEFAULT,
                        governed: false,
                    };
                }
                lpm(&self.compiled.paths.exec, path)
                    .map_or(Verdict::DEFAULT, |r| Verdict::of(r.decision, r.rule_idx))
            }
            Replayed::Open { path, read, write } => {
                if !self.compiled.paths.file_governed {
                    return ungoverned();
                }
                let rules = file_rules(&self.compiled.paths.file, path);
                // judge/file.rs: each access on its own, the strictest
                // decides, the write on a tie.
                let mut out = Verdict {
                    decision: Decision::Allow,
                    rule_idx: rule::DEFAULT,
                    governed: true,
                };
                if *read {
                    out = Verdict::of(rules.read.decision, rules.read.rule_idx);
                }
                if *write {
                    let w = Verdict::of(rules.write.decision, rules.write.rule_idx);
                    if strictness(w.decision) >= strictness(out.decision) {
                        out = w;
                    }
                }
                out
            }
            Replayed::RawSocket | Replayed::PacketSocket => {
                // judge/sock.rs: an allow or deny rule decides; no rule
                // (or any other value) is the default, deny.
                let r = if *action == Replayed::PacketSocket {
                    self.compiled.net.sockets.packet
                } else {
                    self.compiled.net.sockets.raw
                };
                if r.decision == warden_common::Decision::Allow as u32 {
                    Verdict::of(warden_common::Decision::Allow as u8, r.rule_idx)
                } else if r.decision == warden_common::Decision::Deny as u32 {
                    Verdict::of(warden_common::Decision::Deny as u8, r.rule_idx)
                } else {
                    Verdict::DEFAULT
                }
            }
            Replayed::Name { old, new } => {
                if !self.compiled.paths.file_governed {
                    return ungoverned();
                }
                // fallback/names.rs: each name decided as a write, a hold
                // refused; the first name refused decides.
                let write = |p: &str| {
                    let r = file_rules(&self.compiled.paths.file, p).write;
                    (
                        r.decision == warden_common::Decision::Allow as u8,
                        r.rule_idx,
                    )
                };
                let (old_ok, old_rule) = write(old);
                let (new_ok, new_rule) = write(new);
                let deciding = if old_ok { new_rule } else { old_rule };
                Verdict {
                    decision: if old_ok && new_ok {
                        Decision::Allow
                    } else {
                        Decision::Deny
                    },
                    rule_idx: deciding,
                    governed: true,
                }
            }
        }
    }

    /// judge/net.rs `match_rules`: IPv4-mapped destinations in the IPv4
    /// table, the longest CIDR, then the first port rule that matches.
    fn net(&self, addr: IpAddr, port: u16, proto: u8) -> Verdict {
        let addr = match addr {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        let best: Option<&NetRules> = match addr {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                self.compiled
                    .net
                    .v4
                    .iter()
                    .filter(|(p, net, _)| prefix_match32(bits, u32::from_be_bytes(*net), *p))
                    .max_by_key(|(p, _, _)| *p)
                    .map(|(_, _, r)| r)
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                self.compiled
                    .net
                    .v6
                    .iter()
                    .filter(|(p, net, _)| prefix_match128(bits, u128::from_be_bytes(*net), *p))
                    .max_by_key(|(p, _, _)| *p)
                    .map(|(_, _, r)| r)
            }
        };
        let Some(rules) = best else {
            return Verdict::DEFAULT;
        };
        rules.rules[..(rules.count as usize).min(rules.rules.len())]
            .iter()
            .find(|r| {
                (r.proto == warden_common::proto::ANY || r.proto == proto)
                    && r.port_lo <= port
                    && port <= r.port_hi
            })
            .map_or(Verdict::DEFAULT, |r| Verdict::of(r.decision, r.rule_idx))
    }
}

fn ungoverned() -> Verdict {
    Verdict {
        decision: Decision::Allow,
        rule_idx: rule::DEFAULT,
        governed: false,
    }
}

fn prefix_match32(addr: u32, net: u32, prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix.min(32)).unwrap_or(0);
    addr & mask == net & mask
}

fn prefix_match128(addr: u128, net: u128, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix.min(128)).unwrap_or(0);
    addr & mask == net & mask
}

/// The path tries' lookup: the key is the path and its NUL cut to
/// `PATH_KEY_BYTES`; the longest entry whose bytes start it wins.
fn lpm<'a, V>(entries: &'a [PathEntry<V>], path: &str) -> Option<&'a V> {
    let mut key = path.as_bytes().to_vec();
    key.push(0);
    key.truncate(PATH_KEY_BYTES);
    entries
        .iter()
        .filter(|e| key.starts_with(&e.bytes))
        .max_by_key(|e| e.bytes.len())
        .map(|e| &e.value)
}

fn file_rules(entries: &[PathEntry<FileRule>], path: &str) -> FileRule {
    lpm(entries, path).copied().unwrap_or(FileRule {
        read: PathRule::DEFAULT,
        write: PathRule::DEFAULT,
    })
}

/// How a recorded decision would change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    WouldDeny,
    WouldHold,
    WouldAllow,
}

impl Change {
    pub fn name(self) -> &'static str {
        match self {
            Change::WouldDeny => "would-deny",
            Change::WouldHold => "would-hold",
            Change::WouldAllow => "would-allow",
        }
    }
}

/// One recorded action that would be decided differently.
#[derive(Clone, Debug, Serialize)]
pub struct Example {
    pub seq: u64,
    pub action: String,
    pub target: String,
    /// The recorded decision and rule ("deny by default-deny").
    pub recorded: String,
}

/// The differences one candidate rule makes.
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    pub change: Change,
    /// The candidate's rule that decides them (`default-deny`, or
    /// `not-governed` for a kind the candidate has no rules for).
    pub rule: String,
    /// Actions (a summary counts its repeats).
    pub actions: u64,
    /// Entries they were read from.
    pub entries: u64,
    pub examples: Vec<Example>,
}

/// What replaying an agent's record against a candidate found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ShadowReport {
    pub agent: String,
    pub candidate: String,
    pub candidate_snapshot: String,
    /// `decision` and `summary` entries of the agent replayed.
    pub entries: u64,
    /// The actions they stand for.
    pub actions: u64,
    /// Actions the candidate decides as recorded.
    pub unchanged: u64,
    /// Entries left out, by reason ("revoked", "unresolved-path", "not
    /// replayable", ...).
    pub skipped: BTreeMap<String, u64>,
    /// Ordered by change, then most actions first.
    pub differences: Vec<Group>,
}

impl ShadowReport {
    /// Actions of one change, over every rule.
    pub fn total(&self, change: Change) -> u64 {
        self.differences
            .iter()
            .filter(|g| g.change == change)
            .map(|g| g.actions)
            .sum()
    }
}

/// The recorded decision as the rules made it.
fn recorded_decision(d: &str) -> Option<Decision> {
    match d {
        "allow" => Some(Decision::Allow),
        "deny" | "would-deny" => Some(Decision::Deny),
        "hold" | "would-hold" => Some(Decision::Hold),
        _ => None,
    }
}

/// Rule ids the kernel records for decisions no policy rule made.
const NOT_BY_RULES: [&str; 5] = [
    "revoked",
    "no-evidence",
    "unknown-cgroup",
    "unresolved-path",
    "anonymous-exec",
];

/// Compiles `text` as the candidate (the daemon's pipeline) and replays
/// `entries` (any kind and agent: only `agent`'s decisions and summaries
/// are used).
pub fn shadow(
    agent: &str,
    candidate_name: &str,
    text: &str,
    entries: &[Entry],
) -> Result<ShadowReport, PolicyError> {
    let compiled = compile_policy(candidate_name, text, &Capabilities::assume_all())?;
    Ok(replay(agent, candidate_name, &compiled, entries))
}

/// Replays `entries` against a compiled candidate.
pub fn replay(
    agent: &str,
    candidate_name: &str,
    compiled: &CompiledPolicy,
    entries: &[Entry],
) -> ShadowReport {
    let mut r = Replay::new(agent, candidate_name, compiled);
    for e in entries {
        r.add(e);
    }
    r.finish()
}

/// A replay fed one entry at a time, so a log of any size is replayed in
/// bounded memory (groups keep counts and 3 examples; decisions are
/// memoised per distinct action, which repeats far more than it varies).
pub struct Replay<'a> {
    agent: String,
    eval: Evaluator<'a>,
    ids: Vec<String>,
    report: ShadowReport,
    groups: BTreeMap<(Change, String), Group>,
    memo: std::collections::HashMap<Replayed, Verdict>,
}

/// Distinct actions whose verdicts are kept; past it, each is decided
/// afresh (the cost of a lookup, not a failure).
const MEMO_LIMIT: usize = 1 << 16;

impl<'a> Replay<'a> {
    pub fn new(agent: &str, candidate_name: &str, compiled: &'a CompiledPolicy) -> Self {
        Replay {
            agent: agent.into(),
            eval: Evaluator { compiled },
            ids: compiled.parsed.rule_ids(),
            report: ShadowReport {
                agent: agent.into(),
                candidate: candidate_name.into(),
                candidate_snapshot: compiled.snapshot.clone(),
                ..Default::default()
            },
            groups: BTreeMap::new(),
            memo: std::collections::HashMap::new(),
        }
    }

    /// Decides the entries added from now on with `compiled` (a delegated
    /// child's candidate under the parent's policy in force at their time:
    /// [`ReplayUnder`]); the report keeps the candidate of [`Replay::new`].
    pub fn set_policy(&mut self, compiled: &'a CompiledPolicy) {
        if std::ptr::eq(self.eval.compiled, compiled) {
            return;
        }
        self.eval = Evaluator { compiled };
        self.ids = compiled.parsed.rule_ids();
        self.memo.clear();
    }

    fn rule_name(&self, v: &Verdict) -> String {
        if !v.governed {
            return "not-governed".into();
        }
        match v.rule_idx {
            rule::DEFAULT => "default-deny".into(),
            i => self
                .ids
                .get(i as usize)
                .cloned()
                .unwrap_or_else(|| format!("rule#{i}")),
        }
    }

    /// Replays one entry (any kind and agent: others are passed over).
    pub fn add(&mut self, e: &Entry) {
        if e.agent != self.agent || (e.kind != "decision" && e.kind != "summary") {
            return;
        }
        let report = &mut self.report;
        report.entries += 1;
        let weight = if e.kind == "summary" {
            e.details
                .get("count")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        } else {
            1
        };
        report.actions += weight;
        if NOT_BY_RULES.contains(&e.rule_id.as_str()) {
            *report.skipped.entry(e.rule_id.clone()).or_default() += 1;
            return;
        }
        let (Some(was), Some(action)) = (recorded_decision(&e.decision), replayed(e)) else {
            *report.skipped.entry("not replayable".into()).or_default() += 1;
            return;
        };
        let now = match self.memo.get(&action) {
            Some(v) => *v,
            None => {
                let v = self.eval.decide(&action);
                if self.memo.len() < MEMO_LIMIT {
                    self.memo.insert(action, v);
                }
                v
            }
        };
        if now.decision == was {
            self.report.unchanged += weight;
            return;
        }
        let change = match now.decision {
            Decision::Deny => Change::WouldDeny,
            Decision::Hold => Change::WouldHold,
            Decision::Allow => Change::WouldAllow,
        };
        let rule = self.rule_name(&now);
        let g = self
            .groups
            .entry((change, rule.clone()))
            .or_insert_with(|| Group {
                change,
                rule,
                actions: 0,
                entries: 0,
                examples: Vec::new(),
            });
        g.actions += weight;
        g.entries += 1;
        if g.examples.len() < EXAMPLES {
            g.examples.push(Example {
                seq: e.seq,
                action: e.action.clone(),
                target: e.target.clone(),
                recorded: format!("{} by {}", e.decision, e.rule_id),
            });
        }
    }

    /// The report: differences by change, then most actions first.
    pub fn finish(mut self) -> ShadowReport {
        let mut differences: Vec<Group> = self.groups.into_values().collect();
        differences.sort_by(|a, b| {
            a.change
                .cmp(&b.change)
                .then(b.actions.cmp(&a.actions))
                .then(a.rule.cmp(&b.rule))
        });
        self.report.differences = differences;
        self.report
    }
}

/// An ancestor's policy versions, oldest first: (loaded at, file name,
/// text), as the registry records them.
pub type AncestorVersions = Vec<(i64, String, String)>;

/// The effective policy of a delegated agent's parent over time, from
/// each ancestor's versions (the root-most first): one step at each time
/// any of them loaded a version, its policy the intersection down the
/// chain of the version each had in force then (an agent's first version
/// also stands for the time before it: its record starts after it).
/// Candidates (`shadow:`) are left out. Empty for an empty chain.
pub fn parents_over_time(
    chain: &[AncestorVersions],
) -> Result<Vec<(i64, super::Policy)>, PolicyError> {
    let mut times: Vec<i64> = chain.iter().flatten().map(|v| v.0).collect();
    times.sort_unstable();
    times.dedup();
    let mut out = Vec::new();
    for t in times {
        let mut effective: Option<super::Policy> = None;
        for versions in chain {
            let at = versions.partition_point(|v| v.0 <= t).saturating_sub(1);
            let Some((_, file, text)) = versions.get(at) else {
                continue;
            };
            let mut own = super::parse_policy(file, text)?;
            own.shadow = None;
            let mut next = match &effective {
                Some(parent) => super::intersect_named(parent, &own)?,
                None => own,
            };
            next.shadow = None;
            effective = Some(next);
        }
        if let Some(p) = effective {
            out.push((t, p));
        }
    }
    Ok(out)
}

/// A replay of a delegated child's candidate: each entry decided by the
/// candidate under the parent's policy in force when it was recorded.
pub struct ReplayUnder {
    /// (from, the candidate compiled under the parent's policy then).
    steps: Vec<(i64, CompiledPolicy)>,
}

impl ReplayUnder {
    /// Compiles `candidate` under each step of [`parents_over_time`].
    pub fn new(
        candidate: &super::Policy,
        parents: &[(i64, super::Policy)],
    ) -> Result<Self, PolicyError> {
        let caps = Capabilities::assume_all();
        let steps = parents
            .iter()
            .map(|(t, parent)| Ok((*t, super::compile_under(parent, candidate, &caps)?)))
            .collect::<Result<Vec<_>, PolicyError>>()?;
        Ok(Self { steps })
    }

    /// The candidate as compiled under the parent's latest policy (the
    /// one the report names), `None` with no step.
    pub fn latest(&self) -> Option<&CompiledPolicy> {
        self.steps.last().map(|(_, c)| c)
    }

    /// The compiled candidate for an entry recorded at `ts_ns`.
    pub fn at(&self, ts_ns: i64) -> Option<&CompiledPolicy> {
        let i = self.steps.partition_point(|(t, _)| *t <= ts_ns);
        self.steps.get(i.saturating_sub(1)).map(|(_, c)| c)
    }
}

#[cfg(test)]
#[path = "shadow_tests.rs"]
mod tests;
