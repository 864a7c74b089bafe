//! Delegation: the effective policy of a child agent is the intersection of
//! its own policy and its parent's (README, "Delegation").
//!
//! For every action, `combine(parent, child)`: deny if either denies (a
//! default deny included), else hold if either holds, else allow. The
//! result is an ordinary [`Policy`] that the one pipeline compiles
//! ([`super::pipeline::compile_delegated`]), so the kernel decides a child
//! exactly as it decides any agent.
//!
//! How it stays exact: every table the kernel looks up is a longest-match
//! table (CIDRs, exec and file paths). For any action, the longest key of
//! the union of both policies' keys that matches it is `k`; each side's own
//! longest match is then its longest key matching `k` itself (a longer one
//! would be in the union and match). So deciding both sides once per union
//! key, and writing one rule per key (per port segment and protocol for
//! connects, per access for files), reproduces `combine` for every action.
//! The unit tests check this on generated policies against direct
//! evaluation of the two sides.
//!
//! Effective rule ids name both sides: `CHILD_RULE+parent:PARENT_RULE`
//! (`default-deny` for a side's default, `ungoverned` for a side without
//! exec or file rules, which allows every exec or open).

use std::collections::{BTreeSet, HashMap, HashSet};

use super::budget::Budget;
use super::host::HostPattern;
use super::model::{Cidr, Decision, PathMatch, Policy, Protocol, Rule, Selector, SocketKind};

/// Why two policies cannot be intersected. None is left: every rule kind
/// intersects (host rules since `host_rules`); kept so callers keep one
/// error path when a kind that cannot be intersected is added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DelegateError {}

/// What one side decides for one action, and by which rule.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Verdict {
    decision: Decision,
    rule: String,
    write_exec: bool,
    destructive: bool,
}

impl Verdict {
    fn default_deny() -> Self {
        Self::fixed(Decision::Deny, "default-deny")
    }
    fn ungoverned() -> Self {
        Self::fixed(Decision::Allow, "ungoverned")
    }
    fn fixed(decision: Decision, rule: &str) -> Self {
        Self {
            decision,
            rule: rule.into(),
            write_exec: false,
            destructive: false,
        }
    }
    fn of(rule: &Rule) -> Self {
        Self {
            decision: rule.decision,
            rule: rule.id.clone(),
            write_exec: rule.allow_write_exec,
            destructive: rule.destructive,
        }
    }
}

/// deny > hold > allow.
pub fn combine(a: Decision, b: Decision) -> Decision {
    match (a, b) {
        (Decision::Deny, _) | (_, Decision::Deny) => Decision::Deny,
        (Decision::Hold, _) | (_, Decision::Hold) => Decision::Hold,
        _ => Decision::Allow,
    }
}

/// One effective rule: both sides' verdicts combined.
fn joined(child: &Verdict, parent: &Verdict, selector: Selector) -> Rule {
    Rule {
        id: format!("{}+parent:{}", child.rule, parent.rule),
        decision: combine(child.decision, parent.decision),
        selector,
        allow_write_exec: child.write_exec || parent.write_exec,
        destructive: child.destructive || parent.destructive,
    }
}

/// The effective policy of `child` delegated by `parent`. Settings come
/// from the child, narrowed: `mode: record` only if both record,
/// `on_evidence_loss: allow` only if both allow, the shorter hold timeout,
/// both sides' budgets (the parent's named `parent:ID`) and freeze windows,
/// and the approvers of both (a hold may come from either side's rule).
pub fn intersect(parent: &Policy, child: &Policy) -> Result<Policy, DelegateError> {
    let mut rules = Vec::new();
    connect_rules(parent, child, &mut rules);
    host_rules(parent, child, &mut rules);
    socket_rules(parent, child, &mut rules);
    exec_rules(parent, child, &mut rules);
    file_rules(parent, child, &mut rules);

    let mut out = child.clone();
    out.shadow = intersect_shadow(parent, child)?.map(Box::new);
    out.mode = if parent.mode == child.mode {
        child.mode
    } else {
        super::model::Mode::Enforce
    };
    if parent.on_evidence_loss == super::model::EvidenceLoss::Deny {
        out.on_evidence_loss = super::model::EvidenceLoss::Deny;
    }
    out.hold_timeout = parent.hold_timeout.min(child.hold_timeout);
    for (mine, theirs) in [
        (&mut out.approvers.users, &parent.approvers.users),
        (&mut out.approvers.groups, &parent.approvers.groups),
    ] {
        mine.extend(theirs.iter().cloned());
        mine.sort();
        mine.dedup();
    }
    for w in &parent.freeze {
        let mut w = w.clone();
        w.id = format!("parent:{}", w.id);
        out.freeze.push(w);
    }
    out.budgets = budgets(parent, child, &rules);
    out.rules = rules;
    Ok(out)
}

/// The effective `shadow:` candidate of a child: what the child's
/// effective policy would be if the candidates went live, i.e. (the
/// child's candidate, else its own policy) intersected with (the parent's
/// candidate, else its policy in force). For a grandchild the parent's
/// candidate is its effective one, so a candidate anywhere up the chain
/// shows in every descendant's shadow. `None` when neither side has a
/// candidate. Its rule ids name both sides, so a difference says which
/// side's candidate rule made it.
pub fn intersect_shadow(parent: &Policy, child: &Policy) -> Result<Option<Policy>, DelegateError> {
    if parent.shadow.is_none() && child.shadow.is_none() {
        return Ok(None);
    }
    let side = |p: &Policy| {
        let mut side = p.shadow.as_deref().unwrap_or(p).clone();
        side.shadow = None;
        side
    };
    intersect(&side(parent), &side(child)).map(Some)
}

/// Each side's budgets, counting on the child: an action passes only if it
/// is within every budget of both, so each limit is at most the smaller.
/// A budget that counts the actions of named rules counts those of the
/// effective rules its rules contributed to; one whose rules contributed to
/// none counts nothing and is left out. Where that cannot be said exactly
/// (an effective rule id written at several keys, which the kernel's
/// budget match names by its first index, or more than
/// `MAX_BUDGET_MATCH` of them), it counts every action of its class:
/// more actions against the same limit, so never wider.
fn budgets(parent: &Policy, child: &Policy, rules: &[Rule]) -> Vec<Budget> {
    let mut out = Vec::new();
    for (budget, prefix, side_of) in child
        .budgets
        .iter()
        .map(|b| (b, "", child_part as fn(&str) -> &str))
        .chain(
            parent
                .budgets
                .iter()
                .map(|b| (b, "parent:", parent_part as fn(&str) -> &str)),
        )
    {
        let mut b = budget.clone();
        b.id = format!("{prefix}{}", budget.id);
        if !budget.rules.is_empty() {
            let counted: Vec<&Rule> = rules
                .iter()
                .filter(|r| budget.rules.iter().any(|id| id == side_of(&r.id)))
                .collect();
            if counted.is_empty() {
                continue;
            }
            let ids: BTreeSet<String> = counted.iter().map(|r| r.id.clone()).collect();
            let exact = ids.len() == counted.len()
                && ids.len() <= warden_common::MAX_BUDGET_MATCH
                && ids
                    .iter()
                    .all(|id| rules.iter().filter(|r| &r.id == id).count() == 1);
            b.rules = if exact {
                ids.into_iter().collect()
            } else {
                Vec::new()
            };
        }
        out.push(b);
    }
    out
}

fn child_part(id: &str) -> &str {
    id.split_once("+parent:").map_or(id, |(c, _)| c)
}

fn parent_part(id: &str) -> &str {
    id.split_once("+parent:").map_or(id, |(_, p)| p)
}

// ---------------------------------------------------------------------------
// Connect rules

/// The socket protocols a port rule distinguishes: TCP, UDP, and any other
/// (matched only by `protocol: any` rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sock {
    Tcp,
    Udp,
    Other,
}

const SOCKS: [Sock; 3] = [Sock::Tcp, Sock::Udp, Sock::Other];

fn proto_matches(p: Protocol, s: Sock) -> bool {
    matches!(
        (p, s),
        (Protocol::Any, _) | (Protocol::Tcp, Sock::Tcp) | (Protocol::Udp, Sock::Udp)
    )
}

/// A side's connect rules, `(rule, ports, protocol)`, indexed by their
/// CIDR, with the prefix lengths they use (longest first).
struct ConnectIndex<'a> {
    by_net: HashMap<Cidr, Vec<ConnectRule<'a>>>,
    prefixes: Vec<(bool, u8)>,
}

type ConnectRule<'a> = (&'a Rule, &'a [(u16, u16)], Protocol);

/// A cell's verdicts: the child's and the parent's rule (`None`: default deny).
type CellPair = (Option<usize>, Option<usize>);

impl<'a> ConnectIndex<'a> {
    fn new(policy: &'a Policy) -> Self {
        let mut by_net: HashMap<Cidr, Vec<ConnectRule<'a>>> = HashMap::new();
        let mut prefixes = BTreeSet::new();
        for r in &policy.rules {
            if let Selector::Connect {
                cidr,
                ports,
                protocol,
            } = &r.selector
            {
                by_net
                    .entry(*cidr)
                    .or_default()
                    .push((r, ports.as_slice(), *protocol));
                prefixes.insert((cidr.is_ipv4(), cidr.prefix()));
            }
        }
        let mut prefixes: Vec<(bool, u8)> = prefixes.into_iter().collect();
        prefixes.sort_by_key(|&(_, p)| std::cmp::Reverse(p));
        Self { by_net, prefixes }
    }

    /// The rules whose CIDR contains `key`, most specific first, then in
    /// file order: the order `compile_network` tries them in. One lookup
    /// per prefix length the side uses.
    fn covering(&self, key: &Cidr) -> Vec<ConnectRule<'a>> {
        let mut out = Vec::new();
        for &(v4, prefix) in &self.prefixes {
            if v4 != key.is_ipv4() {
                continue;
            }
            if let Some(rules) = key.supernet(prefix).and_then(|n| self.by_net.get(&n)) {
                out.extend_from_slice(rules);
            }
        }
        out
    }
}

/// The first unfilled segment at or after `i` (`next` links filled
/// segments onward; path compression keeps each fill near constant).
fn next_free(next: &mut [usize], i: usize) -> usize {
    let mut root = i;
    while next[root] != root {
        root = next[root];
    }
    let mut j = i;
    while next[j] != root {
        let n = next[j];
        next[j] = root;
        j = n;
    }
    root
}

/// A side's decision for every cell (segment * 3 + socket protocol) of a
/// key's grid, as an index into `rules` (`None`: its default deny): each
/// cell takes the first of `rules` matching its port and protocol, found
/// by filling each rule's segments that no earlier rule filled, so a cell
/// is written once and a rule costs a binary search per port range.
fn connect_cells(rules: &[ConnectRule<'_>], cuts: &[u32]) -> Vec<Option<usize>> {
    let segs = cuts.len() - 1;
    let mut cells = vec![None; segs * 3];
    let mut next: Vec<Vec<usize>> = (0..3).map(|_| (0..=segs).collect()).collect();
    let mut left = segs * 3;
    let seg_of = |edge: u32| cuts.binary_search(&edge).unwrap_or_else(|i| i);
    for (ri, &(_, ports, protocol)) in rules.iter().enumerate() {
        let ranges: Vec<(usize, usize)> = if ports.is_empty() {
            vec![(0, segs)]
        } else {
            ports
                .iter()
                .map(|&(lo, hi)| (seg_of(u32::from(lo)), seg_of(u32::from(hi) + 1)))
                .collect()
        };
        for (s, sock) in SOCKS.into_iter().enumerate() {
            if !proto_matches(protocol, sock) {
                continue;
            }
            for &(a, b) in &ranges {
                let mut i = next_free(&mut next[s], a);
                while i < b {
                    cells[i * 3 + s] = Some(ri);
                    left -= 1;
                    next[s][i] = i + 1;
                    i = next_free(&mut next[s], i + 1);
                }
            }
        }
        if left == 0 {
            break;
        }
    }
    cells
}

fn connect_cidrs(policy: &Policy) -> impl Iterator<Item = (Cidr, &[(u16, u16)])> {
    policy.rules.iter().filter_map(|r| match &r.selector {
        Selector::Connect { cidr, ports, .. } => Some((*cidr, ports.as_slice())),
        _ => None,
    })
}

/// Per union CIDR: the port axis cut at every range edge of either side;
/// per segment and socket protocol both sides decided. The most common
/// combined rule becomes one `0-65535 any` rule written last; the others
/// are written before it as `tcp`/`udp`/`any` rules of their segment, so
/// the entry never needs rules of a shorter CIDR (`compile_network` stops
/// at a rule covering every port and protocol).
///
/// Each side's rules are gathered once per key (those covering it), the
/// key's port axis cut only at their edges, and its cells filled in one
/// sweep (`connect_cells`); combined rules are built once per distinct
/// pair of verdicts and cells compared by index, so a key costs its
/// covering rules, not a pass over every rule per global segment.
fn connect_rules(parent: &Policy, child: &Policy, out: &mut Vec<Rule>) {
    let mut keys: Vec<Cidr> = Vec::new();
    let mut seen: HashSet<Cidr> = HashSet::new();
    let mut cuts: BTreeSet<u32> = BTreeSet::from([0, 65536]);
    for (cidr, ports) in connect_cidrs(child).chain(connect_cidrs(parent)) {
        if seen.insert(cidr) {
            keys.push(cidr);
        }
        for &(lo, hi) in ports {
            cuts.insert(u32::from(lo));
            cuts.insert(u32::from(hi) + 1);
        }
    }
    let cuts: Vec<u32> = cuts.into_iter().collect();
    let global = |edge: u32| cuts.binary_search(&edge).unwrap_or_else(|i| i);
    let (c_index, p_index) = (ConnectIndex::new(child), ConnectIndex::new(parent));
    for key in keys {
        let c_rules = c_index.covering(&key);
        let p_rules = p_index.covering(&key);
        // The key's own cuts: the edges of the rules covering it. Its
        // segments are runs of the global ones whose cells all agree, so
        // writing them merged is what merging the global ones wrote; a
        // segment counts for the fallback as the global ones it spans.
        let mut local: BTreeSet<u32> = BTreeSet::from([0, 65536]);
        for &(_, ports, _) in c_rules.iter().chain(&p_rules) {
            for &(lo, hi) in ports {
                local.insert(u32::from(lo));
                local.insert(u32::from(hi) + 1);
            }
        }
        let local: Vec<u32> = local.into_iter().collect();
        let seg = |i: usize| (local[i] as u16, (local[i + 1] - 1) as u16);
        let weight = |i: usize| global(local[i + 1]) - global(local[i]);
        let c_cells = connect_cells(&c_rules, &local);
        let p_cells = connect_cells(&p_rules, &local);
        let verdict = |rules: &[ConnectRule<'_>], i: Option<usize>| {
            i.map_or_else(Verdict::default_deny, |i| Verdict::of(rules[i].0))
        };
        // Distinct combined rules in first-seen cell order; each cell an
        // index into them (equal rules share one index).
        let mut rules: Vec<Rule> = Vec::new();
        let mut counts: Vec<usize> = Vec::new();
        let mut by_pair: HashMap<CellPair, usize> = HashMap::new();
        let mut cells: Vec<usize> = Vec::with_capacity(c_cells.len());
        let mut last: Option<(CellPair, usize)> = None;
        for (cell, (&c, &p)) in c_cells.iter().zip(&p_cells).enumerate() {
            let idx = match last {
                Some((pair, idx)) if pair == (c, p) => idx,
                _ => *by_pair.entry((c, p)).or_insert_with(|| {
                    let rule = joined(
                        &verdict(&c_rules, c),
                        &verdict(&p_rules, p),
                        Selector::Socket {
                            kind: SocketKind::Raw,
                        },
                    );
                    rules.iter().position(|r| *r == rule).unwrap_or_else(|| {
                        rules.push(rule);
                        counts.push(0);
                        rules.len() - 1
                    })
                }),
            };
            last = Some(((c, p), idx));
            counts[idx] += weight(cell / 3);
            cells.push(idx);
        }
        // The most common rule (first seen on a tie) is the fallback.
        let mut fallback: Option<(usize, usize)> = None;
        for (i, &n) in counts.iter().enumerate() {
            if fallback.is_none_or(|(_, best)| n > best) {
                fallback = Some((i, n));
            }
        }
        let Some((fallback, _)) = fallback else {
            continue;
        };
        let with = |r: &Rule, ports: Vec<(u16, u16)>, protocol: Protocol| Rule {
            selector: Selector::Connect {
                cidr: key,
                ports,
                protocol,
            },
            ..r.clone()
        };
        // Segments whose three protocols agree (and differ from the
        // fallback) become one `any` rule; otherwise a `tcp` and a `udp`
        // rule where they differ from the `any` cell, then the `any` cell.
        // Adjacent segments with the same rule and protocol merge (with
        // the latest pending rule of that rule and protocol).
        let mut pending: Vec<(usize, Protocol, (u16, u16))> = Vec::new();
        let mut latest: HashMap<(usize, Protocol), usize> = HashMap::new();
        let mut push = |rule: usize, proto: Protocol, seg: (u16, u16)| {
            if let Some(&at) = latest.get(&(rule, proto)) {
                let last = &mut pending[at];
                if u32::from(last.2 .1) + 1 == u32::from(seg.0) {
                    last.2 .1 = seg.1;
                    return;
                }
            }
            latest.insert((rule, proto), pending.len());
            pending.push((rule, proto, seg));
        };
        for (i, chunk) in cells.chunks(3).enumerate() {
            let seg = seg(i);
            let (tcp, udp, other) = (chunk[0], chunk[1], chunk[2]);
            if tcp == other && udp == other {
                if other != fallback {
                    push(other, Protocol::Any, seg);
                }
                continue;
            }
            if tcp != other {
                push(tcp, Protocol::Tcp, seg);
            }
            if udp != other {
                push(udp, Protocol::Udp, seg);
            }
            if other != fallback {
                push(other, Protocol::Any, seg);
            }
        }
        // Order matters only between a segment's tcp/udp rules and its
        // `any` rule: pushed in that order, and merging keeps the first
        // position, so sort `any` rules after the protocol ones.
        pending.sort_by_key(|(_, p, _)| *p == Protocol::Any);
        for (rule, proto, seg) in pending {
            out.push(with(&rules[rule], vec![seg], proto));
        }
        out.push(with(&rules[fallback], Vec::new(), Protocol::Any));
    }
}

// ---------------------------------------------------------------------------
// Host rules (`connect: { host: .. }`)

/// Whether `rule` matches every name `key` matches. Patterns that match one
/// name form a chain (the name, `*.` of each parent domain, longest first,
/// then `*`), so, as for CIDRs, each side's most specific pattern matching
/// a name is its most specific pattern covering the most specific union
/// key that matches it.
fn host_covers(rule: &HostPattern, key: &HostPattern) -> bool {
    match (rule, key) {
        (HostPattern::Any, _) => true,
        (_, HostPattern::Any) => false,
        (HostPattern::Exact(r), HostPattern::Exact(k)) => r == k,
        (HostPattern::Exact(_), HostPattern::Below(_)) => false,
        (HostPattern::Below(_), HostPattern::Exact(k)) => rule.matches(k),
        (HostPattern::Below(d), HostPattern::Below(e)) => d == e || rule.matches(e),
    }
}

/// A side's host rules by pattern, the first in the file for each (the
/// one `Policy::host_rule_for` picks among equal patterns).
fn host_index(p: &Policy) -> HashMap<&HostPattern, &Rule> {
    let mut index = HashMap::new();
    for r in &p.rules {
        if let Selector::ConnectHost { host, .. } = &r.selector {
            index.entry(host).or_insert(r);
        }
    }
    index
}

/// The patterns covering `key`, most specific first: the key itself, `*.`
/// of each parent domain (longest first), `*`. Their number is the key's
/// labels, so deciding a side is a few lookups, not a pass over its rules
/// (a policy may hold tens of thousands of host rules).
fn covering_patterns(key: &HostPattern) -> Vec<HostPattern> {
    let name = match key {
        HostPattern::Any => return vec![HostPattern::Any],
        HostPattern::Exact(n) | HostPattern::Below(n) => n,
    };
    let mut out = vec![key.clone()];
    let mut rest = name.as_str();
    while let Some((_, parent)) = rest.split_once('.') {
        out.push(HostPattern::Below(parent.to_string()));
        rest = parent;
    }
    out.push(HostPattern::Any);
    debug_assert!(out.iter().all(|p| host_covers(p, key)));
    out
}

/// A side's host rule for names whose most specific union key is `key`:
/// its most specific covering pattern, the first in the file on a tie (as
/// `Policy::host_rule_for`); `None`: the side refuses the name (default
/// deny; a side without host rules refuses every name, as its CIDR rules,
/// not a name, decide its addresses).
fn host_verdict<'a>(
    index: &HashMap<&HostPattern, &'a Rule>,
    covering: &[HostPattern],
) -> Option<&'a Rule> {
    covering.iter().find_map(|p| index.get(p).copied())
}

/// A host rule's ports and protocol.
type HostPorts<'a> = (&'a [(u16, u16)], Protocol);

fn host_side<'a>(
    index: &HashMap<&HostPattern, &'a Rule>,
    covering: &[HostPattern],
) -> (Verdict, HostPorts<'a>) {
    match host_verdict(index, covering) {
        Some(r) => (Verdict::of(r), ports_and_proto(r)),
        None => (Verdict::default_deny(), (&[], Protocol::Any)),
    }
}

fn ports_and_proto(r: &Rule) -> HostPorts<'_> {
    match &r.selector {
        Selector::ConnectHost {
            ports, protocol, ..
        } => (ports.as_slice(), *protocol),
        _ => (&[], Protocol::Any),
    }
}

/// Both port lists' common ports (empty: every port), sorted and merged;
/// `None` if they share none.
fn common_ports(a: &[(u16, u16)], b: &[(u16, u16)]) -> Option<Vec<(u16, u16)>> {
    if a.is_empty() || b.is_empty() {
        return Some(if a.is_empty() { b } else { a }.to_vec());
    }
    let mut out: Vec<(u16, u16)> = Vec::new();
    for &(alo, ahi) in a {
        for &(blo, bhi) in b {
            let (lo, hi) = (alo.max(blo), ahi.min(bhi));
            if lo <= hi {
                out.push((lo, hi));
            }
        }
    }
    out.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::new();
    for (lo, hi) in out {
        match merged.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    (!merged.is_empty()).then_some(merged)
}

fn common_proto(a: Protocol, b: Protocol) -> Option<Protocol> {
    match (a, b) {
        (Protocol::Any, p) | (p, Protocol::Any) => Some(p),
        (a, b) if a == b => Some(a),
        _ => None,
    }
}

/// One effective host rule per pattern of either side: the name is
/// decided by `combine` of both sides' rules for it, and its addresses
/// are opened only on the ports and protocol both rules name. Where both
/// rules allow (or hold) but share no port or protocol, nothing could be
/// connected: the name is refused (deny), as neither side alone would
/// have let a connection through. An address a name taught the child is
/// also decided by the effective CIDR rules that cover it before the host
/// rules (`compile::learned_entry`); those cover every port of their
/// CIDRs, so there a CIDR rule of either side decides with the other
/// side's CIDR default (deny): narrower than each side alone, never wider.
fn host_rules(parent: &Policy, child: &Policy, out: &mut Vec<Rule>) {
    let mut keys: Vec<&HostPattern> = Vec::new();
    let mut seen: HashSet<&HostPattern> = HashSet::new();
    for p in [child, parent] {
        for r in &p.rules {
            if let Selector::ConnectHost { host, .. } = &r.selector {
                if seen.insert(host) {
                    keys.push(host);
                }
            }
        }
    }
    let (child_index, parent_index) = (host_index(child), host_index(parent));
    for key in keys {
        let covering = covering_patterns(key);
        let (c, (c_ports, c_proto)) = host_side(&child_index, &covering);
        let (p, (p_ports, p_proto)) = host_side(&parent_index, &covering);
        let mut rule = joined(
            &c,
            &p,
            Selector::Socket {
                kind: SocketKind::Raw,
            },
        );
        let common = common_ports(c_ports, p_ports).zip(common_proto(c_proto, p_proto));
        let (ports, protocol) = match common {
            Some(both) => both,
            None => {
                rule.decision = Decision::Deny;
                (c_ports.to_vec(), c_proto)
            }
        };
        rule.selector = Selector::ConnectHost {
            host: key.clone(),
            ports,
            protocol,
        };
        out.push(rule);
    }
}

fn socket_rules(parent: &Policy, child: &Policy, out: &mut Vec<Rule>) {
    let verdict = |p: &Policy, kind: SocketKind| {
        p.rules
            .iter()
            .find(|r| matches!(r.selector, Selector::Socket { kind: k } if k == kind))
            .map_or_else(Verdict::default_deny, Verdict::of)
    };
    let named = |p: &Policy| {
        p.rules
            .iter()
            .any(|r| matches!(r.selector, Selector::Socket { .. }))
    };
    if named(parent) || named(child) {
        let kind = SocketKind::Raw;
        out.push(joined(
            &verdict(child, kind),
            &verdict(parent, kind),
            Selector::Socket { kind },
        ));
    }
    // Packet sockets only where either names them (no rule: denied).
    let names_packet = |p: &Policy| {
        p.rules.iter().any(|r| {
            matches!(
                r.selector,
                Selector::Socket {
                    kind: SocketKind::Packet
                }
            )
        })
    };
    if names_packet(parent) || names_packet(child) {
        let kind = SocketKind::Packet;
        out.push(joined(
            &verdict(child, kind),
            &verdict(parent, kind),
            Selector::Socket { kind },
        ));
    }
}

// ---------------------------------------------------------------------------
// Exec and file rules

/// Whether an exec or file rule's target matches every path `key` matches
/// (for files, a prefix also matches its directory: `compile::covers`).
fn covers(rule: &PathMatch, key: &PathMatch, file: bool) -> bool {
    match (rule, key) {
        (PathMatch::Exact(r), PathMatch::Exact(k)) => r == k,
        (PathMatch::Exact(_), PathMatch::Prefix(_)) => false,
        (PathMatch::Prefix(r), PathMatch::Exact(k)) => {
            k.starts_with(r.as_str())
                || (file && r.strip_suffix('/').is_some_and(|d| !d.is_empty() && d == k))
        }
        (PathMatch::Prefix(r), PathMatch::Prefix(k)) => k.starts_with(r.as_str()),
    }
}

/// A side's exec or file rules by target, the first in the file for each
/// (the one the most-specific match picks among equal targets), so the
/// rules covering a key are found by a lookup per prefix of the key rather
/// than a pass over every rule (a policy may hold tens of thousands).
#[derive(Default)]
struct PathIndex<'a> {
    exact: HashMap<&'a str, &'a Rule>,
    prefix: HashMap<&'a str, &'a Rule>,
}

impl<'a> PathIndex<'a> {
    fn new(rules: impl Iterator<Item = (&'a Rule, &'a PathMatch)>) -> Self {
        let mut index = Self::default();
        for (r, t) in rules {
            match t {
                PathMatch::Exact(p) => index.exact.entry(p.as_str()).or_insert(r),
                PathMatch::Prefix(p) => index.prefix.entry(p.as_str()).or_insert(r),
            };
        }
        index
    }

    /// The most specific rule covering `key` (`covers`), or the default:
    /// an exact target beats any prefix; for a file key, the prefix
    /// `KEY/` (which also matches its directory) beats the key's own
    /// prefixes; then the key's prefixes, longest first.
    fn best(&self, key: &PathMatch, file: bool) -> Verdict {
        let found = match key {
            PathMatch::Exact(k) => self
                .exact
                .get(k.as_str())
                .or_else(|| {
                    (file && !k.is_empty())
                        .then(|| self.prefix.get(format!("{k}/").as_str()))
                        .flatten()
                })
                .or_else(|| self.longest_prefix(k)),
            PathMatch::Prefix(k) => self.longest_prefix(k),
        };
        debug_assert!(found.is_none_or(|r| match &r.selector {
            Selector::Exec { target } | Selector::File { target, .. } => covers(target, key, file),
            _ => false,
        }));
        found.map_or_else(Verdict::default_deny, |r| Verdict::of(r))
    }

    /// The rule of the longest prefix target that `k` starts with.
    fn longest_prefix(&self, k: &str) -> Option<&&'a Rule> {
        if self.prefix.is_empty() {
            return None;
        }
        (0..=k.len())
            .rev()
            .filter(|&n| k.is_char_boundary(n))
            .find_map(|n| self.prefix.get(&k[..n]))
    }
}

fn exec_targets(p: &Policy) -> impl Iterator<Item = (&Rule, &PathMatch)> {
    p.rules.iter().filter_map(|r| match &r.selector {
        Selector::Exec { target } => Some((r, target)),
        _ => None,
    })
}

/// A side's exec decision per key: its index, or `None` for a side
/// without exec rules (ungoverned: every exec allowed).
fn exec_side(p: &Policy) -> Option<PathIndex<'_>> {
    exec_targets(p)
        .next()
        .is_some()
        .then(|| PathIndex::new(exec_targets(p)))
}

fn exec_rules(parent: &Policy, child: &Policy, out: &mut Vec<Rule>) {
    let verdict = |side: &Option<PathIndex<'_>>, key: &PathMatch| match side {
        Some(index) => index.best(key, false),
        None => Verdict::ungoverned(),
    };
    let (child_side, parent_side) = (exec_side(child), exec_side(parent));
    let mut keys: Vec<&PathMatch> = Vec::new();
    let mut seen: HashSet<&PathMatch> = HashSet::new();
    for (_, t) in exec_targets(child).chain(exec_targets(parent)) {
        if seen.insert(t) {
            keys.push(t);
        }
    }
    for key in keys {
        out.push(joined(
            &verdict(&child_side, key),
            &verdict(&parent_side, key),
            Selector::Exec {
                target: key.clone(),
            },
        ));
    }
}

fn file_targets(p: &Policy) -> impl Iterator<Item = (&Rule, &PathMatch, bool, bool)> {
    p.rules.iter().filter_map(|r| match &r.selector {
        Selector::File {
            target,
            read,
            write,
        } => Some((r, target, *read, *write)),
        _ => None,
    })
}

/// A side's file decisions per key: the index of its rules that grant
/// read and of those that grant write, or `None` for a side without file
/// rules (ungoverned: every open allowed).
fn file_side(p: &Policy) -> Option<(PathIndex<'_>, PathIndex<'_>)> {
    let listing = move |write: bool| {
        file_targets(p)
            .filter(move |&(_, _, r, w)| if write { w } else { r })
            .map(|(rule, t, _, _)| (rule, t))
    };
    file_targets(p).next().is_some().then(|| {
        (
            PathIndex::new(listing(false)),
            PathIndex::new(listing(true)),
        )
    })
}

fn file_rules(parent: &Policy, child: &Policy, out: &mut Vec<Rule>) {
    let verdict =
        |side: &Option<(PathIndex<'_>, PathIndex<'_>)>, key: &PathMatch, write: bool| match side {
            Some((read, _)) if !write => read.best(key, true),
            Some((_, written)) => written.best(key, true),
            None => Verdict::ungoverned(),
        };
    let (child_side, parent_side) = (file_side(child), file_side(parent));
    // Every target of either side, and each prefix's directory (decided by
    // the rules covering it, as `compile_paths` does).
    let mut keys: Vec<PathMatch> = Vec::new();
    let mut seen: HashSet<PathMatch> = HashSet::new();
    for (_, t, _, _) in file_targets(child).chain(file_targets(parent)) {
        let dir = match t {
            PathMatch::Prefix(p) => p
                .strip_suffix('/')
                .filter(|d| !d.is_empty())
                .map(|d| PathMatch::Exact(d.to_owned())),
            PathMatch::Exact(_) => None,
        };
        for k in std::iter::once(t.clone()).chain(dir) {
            if seen.insert(k.clone()) {
                keys.push(k);
            }
        }
    }
    for key in keys {
        let read = joined(
            &verdict(&child_side, &key, false),
            &verdict(&parent_side, &key, false),
            Selector::Exec {
                target: key.clone(),
            },
        );
        let write = joined(
            &verdict(&child_side, &key, true),
            &verdict(&parent_side, &key, true),
            Selector::Exec {
                target: key.clone(),
            },
        );
        let file = |r: Rule, read: bool, write: bool| Rule {
            selector: Selector::File {
                target: key.clone(),
                read,
                write,
            },
            ..r
        };
        if read == write {
            out.push(file(read, true, true));
        } else {
            out.push(file(read, true, false));
            out.push(file(write, false, true));
        }
    }
}

#[cfg(test)]
#[path = "delegate_tests.rs"]
mod tests;
