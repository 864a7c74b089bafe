//! `warden policy suggest`: a minimal policy from what an agent did, as
//! its decision entries recorded it (best from a `mode: record` run, where
//! nothing was refused and every exec and open was recorded).
//!
//! - Opens covered by a shipped profile's rules become that profile's
//!   `include` (loader first: the system libraries), so the policy names
//!   what is particular to the agent.
//! - The other opens: a directory from which at least `GROUP_THRESHOLD`
//!   distinct files were read becomes a `prefix:` read rule; fewer stay
//!   exact paths. Writes likewise, separately: only where the agent wrote.
//! - Execs: the exact binaries the kernel executed.
//! - Connects and sends: each destination address and protocol, with the
//!   ports reached.
//!
//! Every rule is `allow` and carries a comment naming the entries (their
//! `seq`) that produced it. The result is parsed and compiled by the one
//! policy pipeline before it is returned.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::{
    compile_policy, parse_policy, profiles, Capabilities, PathMatch, Policy, PolicyError, Selector,
};
use crate::evidence::Entry;

/// Distinct files read (or written) in one directory from which the
/// directory becomes a `prefix:` rule.
pub const GROUP_THRESHOLD: usize = 3;

/// The evidence behind one rule: the entries' sequence numbers and how
/// they were decided.
#[derive(Default, Debug)]
struct Seen {
    seqs: BTreeSet<u64>,
    decisions: BTreeMap<String, usize>,
}

impl Seen {
    fn add(&mut self, e: &Entry) {
        self.seqs.insert(e.seq);
        *self.decisions.entry(e.decision.clone()).or_default() += 1;
    }

    fn merge(&mut self, other: &Seen) {
        self.seqs.extend(&other.seqs);
        for (d, n) in &other.decisions {
            *self.decisions.entry(d.clone()).or_default() += n;
        }
    }

    /// `evidence: seq 12, 15, 19 (+4 more); 5 would-deny, 2 allow`
    fn comment(&self) -> String {
        let shown: Vec<String> = self.seqs.iter().take(3).map(u64::to_string).collect();
        let more = self.seqs.len().saturating_sub(3);
        let more = if more > 0 {
            format!(" (+{more} more)")
        } else {
            String::new()
        };
        let decisions: Vec<String> = self
            .decisions
            .iter()
            .map(|(d, n)| format!("{n} {d}"))
            .collect();
        format!(
            "evidence: seq {}{more}; {}",
            shown.join(", "),
            decisions.join(", ")
        )
    }
}

/// A suggested policy.
#[derive(Debug)]
pub struct Suggestion {
    pub yaml: String,
    /// The entries it was made from.
    pub entries: usize,
    pub policy: Policy,
}

/// Why no policy could be suggested.
#[derive(Debug, thiserror::Error)]
pub enum SuggestError {
    #[error("no decision entries for agent '{0}' in the evidence log (run it with `mode: record` first)")]
    Empty(String),
    #[error("the suggested policy does not compile (a bug in `policy suggest`): {0}")]
    Invalid(#[source] Box<PolicyError>),
}

/// Builds the policy from `entries` (the evidence log's entries, any kind
/// and agent: only this agent's decisions are used).
pub fn suggest(agent: &str, entries: &[Entry]) -> Result<Suggestion, SuggestError> {
    let mine: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.kind == "decision" && e.agent == agent)
        .collect();
    if mine.is_empty() {
        return Err(SuggestError::Empty(agent.into()));
    }

    // (path) -> evidence, per access; execs; destinations.
    let mut reads: BTreeMap<String, Seen> = BTreeMap::new();
    let mut writes: BTreeMap<String, Seen> = BTreeMap::new();
    let mut execs: BTreeMap<String, Seen> = BTreeMap::new();
    let mut dests: BTreeMap<(String, String), (BTreeSet<u16>, Seen)> = BTreeMap::new();
    for e in &mine {
        match e.action.as_str() {
            "open" => {
                let access = e
                    .details
                    .get("access")
                    .and_then(|a| a.as_str())
                    .unwrap_or("");
                if access.contains("read") {
                    reads.entry(e.target.clone()).or_default().add(e);
                }
                if access.contains("write") {
                    writes.entry(e.target.clone()).or_default().add(e);
                }
            }
            "exec" => execs.entry(e.target.clone()).or_default().add(e),
            "connect4" | "connect6" | "sendmsg4" | "sendmsg6" => {
                if let Some((addr, port, proto)) = split_destination(&e.target) {
                    let d = dests.entry((addr, proto)).or_default();
                    d.0.insert(port);
                    d.1.add(e);
                }
            }
            _ => {}
        }
    }

    // Profiles, in their shipped order: one is included when it covers an
    // open nothing included before covers.
    let mut includes: Vec<(&str, Seen)> = Vec::new();
    let mut covered_by: Vec<Policy> = Vec::new();
    for name in profiles::names() {
        let Some((file, text)) = profiles::profile(name) else {
            continue;
        };
        let Ok(profile) = parse_policy(file, text) else {
            continue;
        };
        let mut seen = Seen::default();
        for (paths, write) in [(&mut reads, false), (&mut writes, true)] {
            paths.retain(|path, s| {
                if covered_by.iter().any(|p| allows_open(p, path, write)) {
                    return false;
                }
                if allows_open(&profile, path, write) {
                    seen.merge(s);
                    return false;
                }
                true
            });
        }
        if !seen.seqs.is_empty() {
            includes.push((name, seen));
            covered_by.push(profile);
        }
    }

    let mut ids = Ids::default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Suggested by `warden policy suggest {agent}` from {} decision entries (seq {}..{}).",
        mine.len(),
        mine.first().map_or(0, |e| e.seq),
        mine.last().map_or(0, |e| e.seq)
    );
    let _ = writeln!(
        out,
        "# Review it: every rule allows what the agent did, nothing else. Directories with at \
         least {GROUP_THRESHOLD} files read (or written) are prefixes."
    );
    out.push_str("version: 1\n");
    if !includes.is_empty() {
        out.push_str("include:\n");
        for (name, seen) in &includes {
            let _ = writeln!(out, "  # {}\n  - {name}", seen.comment());
        }
    }
    out.push_str("rules:\n");
    let mut emitted = 0usize;
    let mut rule = |out: &mut String, kind: &str, body: String, seen: &Seen, hint: &str| {
        emitted += 1;
        let id = ids.next(kind, hint);
        let _ = writeln!(
            out,
            "  # {}\n  - id: {id}\n    {body}\n    decision: allow",
            seen.comment()
        );
    };
    for (path, seen) in &execs {
        rule(
            &mut out,
            "exec",
            format!("exec: {{ path: {} }}", yaml_str(path)),
            seen,
            path,
        );
    }
    let mut skipped = Vec::new();
    for (paths, access) in [(&reads, "read"), (&writes, "write")] {
        for (target, seen) in group(paths, &mut skipped) {
            let body = match &target {
                PathMatch::Exact(p) => format!("path: {}", yaml_str(p)),
                PathMatch::Prefix(p) => format!("prefix: {}", yaml_str(p)),
            };
            let hint = match &target {
                PathMatch::Exact(p) | PathMatch::Prefix(p) => p.clone(),
            };
            rule(
                &mut out,
                access,
                format!("file: {{ {body}, access: [{access}] }}"),
                &seen,
                &hint,
            );
        }
    }
    for ((addr, proto), (ports, seen)) in &dests {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let proto = if proto == "tcp" || proto == "udp" {
            format!(", protocol: {proto}")
        } else {
            String::new()
        };
        rule(
            &mut out,
            "net",
            format!(
                "connect: {{ to: {}, ports: [{}]{proto} }}",
                yaml_str(addr),
                ports.join(", ")
            ),
            seen,
            addr,
        );
    }
    for path in &skipped {
        let _ = writeln!(
            out,
            "# not suggested (no rule can name it without allowing more): {}",
            yaml_str(path)
        );
    }
    if emitted == 0 {
        // `rules:` needs a list; the includes carry everything.
        out = out.replace("rules:\n", "rules: []\n");
    }

    let compiled = compile_policy("suggested.yaml", &out, &Capabilities::assume_all())
        .map_err(|e| SuggestError::Invalid(Box::new(e)))?;
    Ok(Suggestion {
        yaml: out,
        entries: mine.len(),
        policy: compiled.parsed,
    })
}

/// Whether `policy`'s file rules allow the access the way the kernel
/// decides (the most specific rule listing the access).
fn allows_open(policy: &Policy, path: &str, write: bool) -> bool {
    let mut best: Option<(bool, usize, super::Decision)> = None;
    for r in &policy.rules {
        let Selector::File {
            target,
            read: r_read,
            write: r_write,
        } = &r.selector
        else {
            continue;
        };
        if !(if write { *r_write } else { *r_read }) {
            continue;
        }
        let spec = match target {
            PathMatch::Exact(p) if p == path => (true, p.len()),
            PathMatch::Prefix(p)
                if path.starts_with(p.as_str()) || p.strip_suffix('/') == Some(path) =>
            {
                (false, p.len())
            }
            _ => continue,
        };
        if best.is_none_or(|(e, l, _)| (spec.0, spec.1) > (e, l)) {
            best = Some((spec.0, spec.1, r.decision));
        }
    }
    matches!(best, Some((_, _, super::Decision::Allow)))
}

/// Paths grouped by directory: a directory with at least
/// `GROUP_THRESHOLD` distinct files becomes one prefix.
fn group(paths: &BTreeMap<String, Seen>, skipped: &mut Vec<String>) -> Vec<(PathMatch, Seen)> {
    let mut by_dir: BTreeMap<String, Vec<&String>> = BTreeMap::new();
    for path in paths.keys() {
        // `/` itself only `prefix: /` (everything) would match, and a path
        // too long for a rule key only a prefix: left to the reviewer.
        if path == "/" || path.len() > super::MAX_PATH_BYTES {
            skipped.push(path.clone());
            continue;
        }
        let dir = match path.rfind('/') {
            Some(0) | None => "/".to_string(),
            Some(i) => format!("{}/", &path[..i]),
        };
        by_dir.entry(dir).or_default().push(path);
    }
    let mut out = Vec::new();
    for (dir, files) in by_dir {
        // The root directory as a prefix would be everything: never.
        if files.len() >= GROUP_THRESHOLD && dir != "/" && dir.len() <= super::MAX_PREFIX_BYTES {
            let mut seen = Seen::default();
            for f in &files {
                seen.merge(&paths[*f]);
            }
            out.push((PathMatch::Prefix(dir), seen));
        } else {
            for f in files {
                let mut seen = Seen::default();
                seen.merge(&paths[f]);
                out.push((PathMatch::Exact(f.clone()), seen));
            }
        }
    }
    out
}

/// "127.0.0.1:8080/tcp" or "[::1]:53/udp" -> (address, port, protocol).
fn split_destination(target: &str) -> Option<(String, u16, String)> {
    let (hostport, proto) = target.rsplit_once('/')?;
    let (host, port) = hostport.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse().ok()?, proto.to_string()))
}

/// A YAML double-quoted scalar (paths may hold `: `, `#` or quotes).
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// Unique rule ids from a kind and a path or address.
#[derive(Default)]
struct Ids {
    used: BTreeSet<String>,
}

impl Ids {
    fn next(&mut self, kind: &str, hint: &str) -> String {
        let slug: String = hint
            .chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let slug = slug.trim_matches('-');
        // Keep the end of long paths: the file name says more.
        let tail: String = slug
            .chars()
            .rev()
            .take(48)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let base = format!("{kind}-{}", tail.trim_matches('-'));
        let base = base.trim_end_matches('-').to_string();
        let mut id = base.clone();
        let mut n = 2;
        while !self.used.insert(id.clone()) {
            id = format!("{base}-{n}");
            n += 1;
        }
        id
    }
}

/// What `--diff CURRENT` prints: the rules (selector and decision) only in
/// the suggestion (`+`) and only in the current policy (`-`), by their
/// canonical form, so ids, order and spelling do not count.
pub fn diff(current: &Policy, suggested: &Policy) -> String {
    let key = |r: &super::Rule| {
        let mut v = serde_json::to_value(r).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.remove("id");
        }
        v.to_string()
    };
    let cur: BTreeMap<String, &str> = current
        .rules
        .iter()
        .map(|r| (key(r), r.id.as_str()))
        .collect();
    let sug: BTreeMap<String, &str> = suggested
        .rules
        .iter()
        .map(|r| (key(r), r.id.as_str()))
        .collect();
    let mut out = String::new();
    for (k, id) in &sug {
        if !cur.contains_key(k) {
            let _ = writeln!(out, "+ {id}: {k}");
        }
    }
    for (k, id) in &cur {
        if !sug.contains_key(k) {
            let _ = writeln!(out, "- {id}: {k}");
        }
    }
    if out.is_empty() {
        out.push_str("no change\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(seq: u64, action: &str, target: &str, access: &str, decision: &str) -> Entry {
        let mut details = serde_json::Map::new();
        if !access.is_empty() {
            details.insert("access".into(), json!(access));
        }
        Entry {
            seq,
            v: 2,
            ts_ns: seq as i64,
            kind: "decision".into(),
            agent: "a".into(),
            owner: "o".into(),
            uid: 0,
            loginuid: 0,
            user: "root".into(),
            login_user: "root".into(),
            pid: 1,
            exe: "/x".into(),
            action: action.into(),
            target: target.into(),
            decision: decision.into(),
            rule_id: "default-deny".into(),
            policy_snapshot: "s".into(),
            method: "record".into(),
            details,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn groups_reads_recognises_profiles_and_keeps_writes_exact() {
        let mut es = vec![
            entry(1, "exec", "/usr/bin/bash", "", "would-deny"),
            entry(2, "open", "/etc/ld.so.cache", "read", "would-deny"),
            entry(
                3,
                "open",
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                "read",
                "would-deny",
            ),
            entry(4, "open", "/srv/data/a", "read", "would-deny"),
            entry(5, "open", "/srv/data/b", "read", "would-deny"),
            entry(6, "open", "/srv/data/c", "read", "allow"),
            entry(7, "open", "/srv/one/x", "read", "would-deny"),
            entry(8, "open", "/srv/out/result", "write", "would-deny"),
            entry(9, "connect4", "127.0.0.1:8080/tcp", "", "would-deny"),
            entry(10, "connect4", "127.0.0.1:8081/tcp", "", "would-deny"),
        ];
        es.push(Entry {
            agent: "other".into(),
            ..entry(11, "open", "/secret", "read", "allow")
        });
        let s = suggest("a", &es).unwrap();
        let y = &s.yaml;
        assert!(
            y.contains("include:\n  # evidence: seq 2, 3; 2 would-deny\n  - loader\n"),
            "{y}"
        );
        assert!(y.contains("exec: { path: \"/usr/bin/bash\" }"), "{y}");
        assert!(y.contains("prefix: \"/srv/data/\", access: [read]"), "{y}");
        assert!(
            y.contains("# evidence: seq 4, 5, 6; 1 allow, 2 would-deny"),
            "{y}"
        );
        assert!(y.contains("path: \"/srv/one/x\", access: [read]"), "{y}");
        assert!(
            y.contains("path: \"/srv/out/result\", access: [write]"),
            "{y}"
        );
        assert!(
            y.contains("to: \"127.0.0.1\", ports: [8080, 8081], protocol: tcp"),
            "{y}"
        );
        assert!(!y.contains("/secret"), "another agent's entry: {y}");
        // The one pipeline accepts it, and it decides as the record asks.
        let p = &s.policy;
        assert!(allows_open(p, "/srv/data/zzz", false));
        assert!(!allows_open(p, "/srv/data/zzz", true));
        assert!(allows_open(p, "/srv/out/result", true));
        assert!(!allows_open(p, "/srv/out/other", true));
        assert!(allows_open(p, "/usr/lib/x86_64-linux-gnu/libm.so.6", false));
        // `/` itself cannot be named without allowing everything.
        let root = suggest("a", &[entry(1, "open", "/", "read", "would-deny")]).unwrap();
        assert!(root.yaml.contains("rules: []"), "{}", root.yaml);
        assert!(
            root.yaml
                .contains("# not suggested (no rule can name it without allowing more): \"/\""),
            "{}",
            root.yaml
        );
        // Nothing for an agent without entries.
        assert!(matches!(
            suggest("nobody", &es),
            Err(SuggestError::Empty(_))
        ));
    }

    #[test]
    fn diff_names_what_would_change() {
        let es = vec![
            entry(1, "exec", "/usr/bin/cat", "", "would-deny"),
            entry(2, "open", "/srv/x", "read", "would-deny"),
        ];
        let s = suggest("a", &es).unwrap();
        let current = parse_policy(
            "cur.yaml",
            "version: 1\nrules:\n  - id: cat\n    exec: { path: /usr/bin/cat }\n    decision: allow\n  \
             - id: old\n    file: { path: /srv/y, access: [read] }\n    decision: allow\n",
        )
        .unwrap();
        let d = diff(&current, &s.policy);
        assert!(d.contains("+ read-srv-x: "), "{d}");
        assert!(d.contains("- old: "), "{d}");
        assert!(!d.contains("cat"), "{d}");
    }
}
