//! The effective policy of a delegated child, compiled by the one pipeline
//! and decided by the user-space model of the kernel's lookups
//! (`shadow::Evaluator`, itself checked against the compiler's kernel
//! models), against both sides decided apart, over generated policies:
//! never wider than either, and exactly their `combine`.

use std::net::IpAddr;

use super::super::pipeline::{compile_delegated, compile_policy, Capabilities, CompiledPolicy};
use super::super::shadow::{Evaluator, Replayed};
use super::*;

/// A small deterministic generator (xorshift), so failures reproduce.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
        of[self.below(of.len() as u64) as usize]
    }
}

const CIDRS: [&str; 8] = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.3",
    "0.0.0.0/0",
    "127.0.0.0/8",
    "fd00::/8",
    "::/0",
    "fd00:1::5",
];
const TARGETS: [&str; 6] = [
    "path: /usr/bin/ls",
    "prefix: /usr/bin/",
    "prefix: /usr/",
    "path: /srv/data/a",
    "prefix: /srv/data/",
    "prefix: /",
];

/// Connect, socket, exec and file rules; sometimes none of a kind (so
/// that kind is ungoverned on that side). Exec and file targets are kept
/// apart so no generated side is refused for writing what it executes.
fn generated_policy(g: &mut Gen, tag: &str) -> String {
    let mut yaml = String::from("version: 1\nrules:\n");
    let decision = |g: &mut Gen| g.pick(&["allow", "deny", "hold"]).to_string();
    for i in 0..g.below(7) {
        let ports = match g.below(3) {
            0 => String::new(),
            1 => format!(", ports: [{}]", 1 + g.below(4)),
            _ => format!(", ports: [\"{}-{}\"]", 1 + g.below(2), 2 + g.below(3)),
        };
        let proto = g.pick(&["", ", protocol: tcp", ", protocol: udp"]);
        let d = decision(g);
        yaml.push_str(&format!(
            "  - id: {tag}n{i}\n    connect: {{ to: '{}'{ports}{proto} }}\n    decision: {d}\n",
            g.pick(&CIDRS)
        ));
    }
    if g.below(3) == 0 {
        let d = g.pick(&["allow", "deny"]);
        yaml.push_str(&format!(
            "  - id: {tag}raw\n    socket: {{ kind: raw }}\n    decision: {d}\n"
        ));
    }
    if g.below(3) == 0 {
        let d = g.pick(&["allow", "deny"]);
        yaml.push_str(&format!(
            "  - id: {tag}packet\n    socket: {{ kind: packet }}\n    decision: {d}\n"
        ));
    }
    let exec_side = g.below(2) == 0;
    for i in 0..g.below(5) {
        let target = g.pick(&TARGETS);
        let d = decision(g);
        if exec_side {
            yaml.push_str(&format!(
                "  - id: {tag}e{i}\n    exec: {{ {target} }}\n    decision: {d}\n    allow_write_exec: true\n"
            ));
        } else {
            let access = g.pick(&["[read]", "[write]", "[read, write]"]);
            yaml.push_str(&format!(
                "  - id: {tag}f{i}\n    file: {{ {target}, access: {access} }}\n    decision: {d}\n    allow_write_exec: true\n"
            ));
        }
    }
    if yaml.ends_with("rules:\n") {
        yaml.push_str(&format!(
            "  - id: {tag}only\n    connect: {{ to: 127.0.0.1, ports: [1] }}\n    decision: allow\n"
        ));
    }
    yaml
}

fn actions() -> Vec<Replayed> {
    let mut out = Vec::new();
    for dst in [
        "10.1.2.3",
        "10.1.2.4",
        "10.2.0.1",
        "127.0.0.1",
        "8.8.8.8",
        "fd00:1::5",
        "fd00:2::1",
        "2001:db8::1",
    ] {
        let addr: IpAddr = dst.parse().unwrap();
        for port in 0..7u16 {
            for proto in [warden_common::proto::TCP, warden_common::proto::UDP, 132] {
                out.push(Replayed::Net { addr, port, proto });
            }
        }
        out.push(Replayed::Net {
            addr,
            port: 65535,
            proto: warden_common::proto::TCP,
        });
    }
    for path in [
        "/usr/bin/ls",
        "/usr/bin/cat",
        "/usr/bin",
        "/usr/lib/x",
        "/srv/data/a",
        "/srv/data",
        "/srv/other",
        "/etc/passwd",
    ] {
        out.push(Replayed::Exec { path: path.into() });
        for (read, write) in [(true, false), (false, true), (true, true)] {
            out.push(Replayed::Open {
                path: path.into(),
                read,
                write,
            });
        }
    }
    out.push(Replayed::RawSocket);
    out.push(Replayed::PacketSocket);
    out
}

fn decide(c: &CompiledPolicy, a: &Replayed) -> Decision {
    let v = Evaluator { compiled: c }.decide(a);
    if v.governed {
        v.decision
    } else {
        Decision::Allow
    }
}

fn strictness(d: Decision) -> u8 {
    match d {
        Decision::Allow => 0,
        Decision::Hold => 1,
        Decision::Deny => 2,
    }
}

#[test]
fn the_effective_policy_is_the_combine_of_both_and_never_wider_on_generated_policies() {
    let caps = Capabilities::assume_all();
    let mut g = Gen(0x5851_f42d_4c95_7f2d);
    let actions = actions();
    let mut compared = 0;
    let mut narrowed = 0;
    let mut too_many = 0;
    for _ in 0..400 {
        let p_yaml = generated_policy(&mut g, "p");
        let c_yaml = generated_policy(&mut g, "c");
        let (Ok(parent), Ok(child)) = (
            compile_policy("parent.yaml", &p_yaml, &caps),
            compile_policy("child.yaml", &c_yaml, &caps),
        ) else {
            continue;
        };
        let eff = match compile_delegated(&parent, &child, &caps) {
            Ok(eff) => eff,
            // Each entry carries the rules of every CIDR containing it
            // (compile_network): deep nesting of cut port ranges can need
            // more than MAX_PORT_RULES; refused, nothing installed.
            Err(e) if e.to_string().contains("port rules") => {
                too_many += 1;
                continue;
            }
            Err(e) => panic!("{e}\n--- parent\n{p_yaml}--- child\n{c_yaml}"),
        };
        for a in &actions {
            let (p, c, e) = (decide(&parent, a), decide(&child, a), decide(&eff, a));
            assert!(
                strictness(e) >= strictness(p) && strictness(e) >= strictness(c),
                "wider than a side: {a:?}: parent {p:?} child {c:?} effective {e:?}\n\
                 --- parent\n{p_yaml}--- child\n{c_yaml}"
            );
            assert_eq!(
                e,
                combine(p, c),
                "{a:?}: parent {p:?} child {c:?}\n--- parent\n{p_yaml}--- child\n{c_yaml}"
            );
            narrowed += usize::from(strictness(e) > strictness(c));
            compared += 1;
        }
    }
    // The generator exercises both: plenty of compared actions, and the
    // parent narrowing the child in a good share of them.
    assert!(compared > 50_000, "{compared}");
    assert!(narrowed > compared / 20, "{narrowed} of {compared}");
    assert!(too_many < 60, "{too_many} of 400 pairs over MAX_PORT_RULES");
}

/// A child's `shadow:` candidate is evaluated against the same
/// intersection: the effective candidate decides every action as
/// `combine(parent side, child's candidate)`, where the parent side is the
/// parent's own candidate if it has one, else its policy in force; the
/// effective policy in force is not touched by either candidate. Over
/// generated policies, with a candidate on the child, the parent or both.
#[test]
fn a_childs_shadow_candidate_is_intersected_with_its_parent_on_generated_policies() {
    let caps = Capabilities::assume_all();
    let mut g = Gen(0x2545_f491_4f6c_dd1d);
    let actions = actions();
    let mut compared = 0;
    for round in 0..150 {
        let mut next = |tag: &str| {
            let yaml = generated_policy(&mut g, tag);
            compile_policy(&format!("{tag}.yaml"), &yaml, &caps).ok()
        };
        let (Some(mut parent), Some(mut child), Some(p_cand), Some(c_cand)) =
            (next("p"), next("c"), next("pc"), next("cc"))
        else {
            continue;
        };
        // Round-robin: the child's candidate, the parent's, both.
        if round % 3 != 1 {
            child.parsed.shadow = Some(Box::new(c_cand.parsed.clone()));
        }
        if round % 3 != 0 {
            parent.parsed.shadow = Some(Box::new(p_cand.parsed.clone()));
        }
        let eff = match compile_delegated(&parent, &child, &caps) {
            Ok(eff) => eff,
            Err(e) if e.to_string().contains("port rules") => continue,
            Err(e) => panic!("{e}"),
        };
        let shadow = eff.shadow.as_deref().expect("a candidate on a side");
        assert_eq!(
            eff.parsed.shadow.as_deref().map(Policy::snapshot),
            Some(shadow.snapshot.clone()),
            "the effective snapshot names the effective candidate"
        );
        let parent_side = if round % 3 != 0 { &p_cand } else { &parent };
        let child_side = if round % 3 != 1 { &c_cand } else { &child };
        for a in &actions {
            let (p, c) = (decide(&parent, a), decide(&child, a));
            assert_eq!(decide(&eff, a), combine(p, c), "{a:?}: enforced changed");
            let (ps, cs) = (decide(parent_side, a), decide(child_side, a));
            let s = decide(shadow, a);
            assert_eq!(s, combine(ps, cs), "{a:?}: candidate");
            assert!(
                strictness(s) >= strictness(ps),
                "{a:?}: wider than the parent side"
            );
            compared += 1;
        }
    }
    assert!(compared > 10_000, "{compared}");
}

#[test]
fn a_parent_deny_wins_over_a_child_allow_and_the_rule_names_both() {
    let caps = Capabilities::assume_all();
    let parent = compile_policy(
        "parent.yaml",
        "version: 1\nrules:\n  - id: no-18081\n    connect: { to: 127.0.0.1, ports: [18081] }\n    decision: deny\n  \
         - id: local\n    connect: { to: 127.0.0.1 }\n    decision: allow\n",
        &caps,
    )
    .unwrap();
    let child = compile_policy(
        "child.yaml",
        "version: 1\nrules:\n  - id: any-local\n    connect: { to: 127.0.0.0/8 }\n    decision: allow\n",
        &caps,
    )
    .unwrap();
    let eff = compile_delegated(&parent, &child, &caps).unwrap();
    let at = |port| Replayed::Net {
        addr: "127.0.0.1".parse().unwrap(),
        port,
        proto: warden_common::proto::TCP,
    };
    let v = Evaluator { compiled: &eff }.decide(&at(18081));
    assert_eq!(v.decision, Decision::Deny);
    assert_eq!(
        eff.parsed.rules[v.rule_idx as usize].id,
        "any-local+parent:no-18081"
    );
    assert_eq!(decide(&eff, &at(18080)), Decision::Allow);
    // 127.0.0.2 is the child's, but not the parent's: default deny there.
    let v = Evaluator { compiled: &eff }.decide(&Replayed::Net {
        addr: "127.0.0.2".parse().unwrap(),
        port: 1,
        proto: warden_common::proto::TCP,
    });
    assert_eq!(v.decision, Decision::Deny);
    assert_eq!(
        eff.parsed.rules[v.rule_idx as usize].id,
        "any-local+parent:default-deny"
    );
}

#[test]
fn settings_narrow_and_budgets_of_both_apply() {
    let caps = Capabilities::assume_all();
    let parent = compile_policy(
        "parent.yaml",
        "version: 1\nhold_timeout: 1m\non_evidence_loss: deny\nrules:\n  - id: web\n    connect: { to: 0.0.0.0/0 }\n    decision: allow\n\
         budgets:\n  - id: conns\n    count: connect\n    limit: 5\n    per: 1m\n    then: deny\n",
        &caps,
    )
    .unwrap();
    let child = compile_policy(
        "child.yaml",
        "version: 1\nmode: record\nhold_timeout: 10m\non_evidence_loss: allow\nrules:\n  - id: web\n    connect: { to: 0.0.0.0/0 }\n    decision: allow\n",
        &caps,
    )
    .unwrap();
    let eff = compile_delegated(&parent, &child, &caps).unwrap();
    assert_eq!(eff.parsed.mode, super::super::model::Mode::Enforce);
    assert_eq!(eff.parsed.hold_timeout, std::time::Duration::from_secs(60));
    assert_eq!(
        eff.parsed.on_evidence_loss,
        super::super::model::EvidenceLoss::Deny
    );
    let ids: Vec<&str> = eff.parsed.budgets.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["parent:conns"]);
}

const HOSTS: [&str; 7] = [
    "api.example.com",
    "*.example.com",
    "a.b.example.com",
    "*.b.example.com",
    "*",
    "other.org",
    "*.org",
];
const NAMES: [&str; 9] = [
    "api.example.com",
    "API.Example.com.",
    "x.example.com",
    "a.b.example.com",
    "c.b.example.com",
    "example.com",
    "other.org",
    "z.other.org",
    "nothing.net",
];

/// Host rules only (sometimes none on a side).
fn generated_host_policy(g: &mut Gen, tag: &str) -> String {
    let mut yaml = String::from("version: 1\napprovers: { users: [root] }\nrules:\n");
    for i in 0..g.below(6) {
        let ports = match g.below(3) {
            0 => String::new(),
            1 => format!(", ports: [{}]", 1 + g.below(4)),
            _ => format!(", ports: [\"{}-{}\"]", 1 + g.below(2), 2 + g.below(3)),
        };
        let proto = g.pick(&["", ", protocol: tcp", ", protocol: udp"]);
        let d = g.pick(&["allow", "allow", "allow", "deny", "hold"]);
        yaml.push_str(&format!(
            "  - id: {tag}h{i}\n    connect: {{ host: '{}'{ports}{proto} }}\n    decision: {d}\n",
            g.pick(&HOSTS)
        ));
    }
    yaml
}

/// What a policy's DNS proxy and learned addresses let through for a
/// connect to an address `name` resolved to, where no CIDR rule covers
/// it: the name's host rule (`host_rule_for`, as the proxy decides),
/// then its ports and protocol (`learned_entry`); a refused name (no rule,
/// or a deny) teaches no address, so its connects are denied.
fn by_name(p: &Policy, name: &str, port: u16, tcp: bool) -> Decision {
    let Some(i) = p.host_rule_for(name) else {
        return Decision::Deny;
    };
    let r = &p.rules[i];
    let Selector::ConnectHost {
        ports, protocol, ..
    } = &r.selector
    else {
        unreachable!("host_rule_for returns host rules")
    };
    let port_ok = ports.is_empty() || ports.iter().any(|&(lo, hi)| lo <= port && port <= hi);
    let proto_ok = match protocol {
        Protocol::Any => true,
        Protocol::Tcp => tcp,
        Protocol::Udp => !tcp,
    };
    match r.decision {
        Decision::Deny => Decision::Deny,
        d if port_ok && proto_ok => d,
        _ => Decision::Deny,
    }
}

/// Host rules intersect: for every name, port and protocol, what the
/// child's proxy and kernel entry let through under the effective policy
/// is the `combine` of what each side alone would (never wider), over
/// generated host-rule policies; the effective policy compiles.
#[test]
fn host_rules_intersect_by_name_and_port_on_generated_policies() {
    let caps = Capabilities::assume_all();
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let mut compared = 0;
    let mut narrowed = 0;
    let mut allowed = 0;
    for _ in 0..400 {
        let p_yaml = generated_host_policy(&mut g, "p");
        let c_yaml = generated_host_policy(&mut g, "c");
        let (Ok(parent), Ok(child)) = (
            compile_policy("parent.yaml", &p_yaml, &caps),
            compile_policy("child.yaml", &c_yaml, &caps),
        ) else {
            continue;
        };
        let eff = compile_delegated(&parent, &child, &caps)
            .unwrap_or_else(|e| panic!("{e}\n--- parent\n{p_yaml}--- child\n{c_yaml}"));
        assert_eq!(
            eff.net.dns,
            parent.parsed.has_host_rules() || child.parsed.has_host_rules()
        );
        for name in NAMES {
            for port in 0..=6 {
                for tcp in [true, false] {
                    let p = by_name(&parent.parsed, name, port, tcp);
                    let c = by_name(&child.parsed, name, port, tcp);
                    let e = by_name(&eff.parsed, name, port, tcp);
                    assert_eq!(
                        e,
                        combine(p, c),
                        "{name}:{port} tcp={tcp}: parent {p:?} child {c:?}\n--- parent\n{p_yaml}--- child\n{c_yaml}"
                    );
                    narrowed += usize::from(strictness(e) > strictness(c));
                    allowed += usize::from(e == Decision::Allow);
                    compared += 1;
                }
            }
        }
    }
    assert!(compared > 30_000, "{compared}");
    assert!(narrowed > compared / 20, "{narrowed} of {compared}");
    assert!(allowed > compared / 100, "{allowed} of {compared}");
}

/// Where a CIDR rule of either side covers an address a name taught the
/// child, the effective CIDR rules decide every port of it first
/// (`learned_entry`): narrower than either side alone there (the parent
/// alone would let its host rule's port through), never wider.
#[test]
fn a_learned_address_a_cidr_rule_covers_is_decided_by_both_cidr_rules() {
    let caps = Capabilities::assume_all();
    let parent = compile_policy(
        "parent.yaml",
        "version: 1\nrules:\n  - id: api\n    connect: { host: api.example.com, ports: [443] }\n    decision: allow\n  \
         - id: lan\n    connect: { to: 10.0.0.0/8, ports: [80] }\n    decision: allow\n",
        &caps,
    )
    .unwrap();
    let child = compile_policy(
        "child.yaml",
        "version: 1\nrules:\n  - id: ex\n    connect: { host: '*.example.com' }\n    decision: allow\n",
        &caps,
    )
    .unwrap();
    let eff = compile_delegated(&parent, &child, &caps).unwrap();
    let api = eff.parsed.host_rule_for("api.example.com").unwrap();
    assert_eq!(eff.parsed.rules[api].id, "ex+parent:api");
    assert_eq!(
        eff.parsed
            .host_rule_for("x.example.com")
            .map(|i| eff.parsed.rules[i].decision),
        Some(Decision::Deny)
    );
    let first = |addr: &str, port: u16| {
        let (rules, _) =
            super::super::compile::learned_entry(&eff.parsed, addr.parse().unwrap(), &[api]);
        rules.rules[..rules.count as usize]
            .iter()
            .find(|r| {
                r.port_lo <= port
                    && port <= r.port_hi
                    && (r.proto == warden_common::proto::ANY
                        || r.proto == warden_common::proto::TCP)
            })
            .map(|r| (r.decision, eff.parsed.rules[r.rule_idx as usize].id.clone()))
    };
    let allow = Decision::Allow.to_kernel() as u8;
    let deny = Decision::Deny.to_kernel() as u8;
    // Outside every CIDR: the host rules' common port only.
    assert_eq!(
        first("192.0.2.1", 443),
        Some((allow, "ex+parent:api".into()))
    );
    assert_eq!(first("192.0.2.1", 80), None, "falls to the default (deny)");
    // Inside the parent's 10/8: its CIDR rules and the child's default.
    assert_eq!(
        first("10.1.1.1", 443),
        Some((deny, "default-deny+parent:default-deny".into()))
    );
    assert_eq!(
        first("10.1.1.1", 80),
        Some((deny, "default-deny+parent:lan".into()))
    );
}

#[test]
fn a_budget_on_named_rules_counts_the_effective_rules_they_decide() {
    let caps = Capabilities::assume_all();
    let parent = compile_policy(
        "parent.yaml",
        "version: 1\nrules:\n  - id: p-local\n    connect: { to: 127.0.0.0/8 }\n    decision: allow\n",
        &caps,
    )
    .unwrap();
    let child = compile_policy(
        "child.yaml",
        "version: 1\nrules:\n  - id: api\n    connect: { to: 127.0.0.1, ports: [443] }\n    decision: allow\n  \
         - id: other\n    connect: { to: 10.0.0.0/8 }\n    decision: allow\n\
         budgets:\n  - id: api-calls\n    count: connect\n    match: { rule: [api] }\n    limit: 5\n    per: 1m\n    then: deny\n",
        &caps,
    )
    .unwrap();
    let eff = compile_delegated(&parent, &child, &caps).unwrap();
    let b = &eff.parsed.budgets[0];
    assert_eq!(b.id, "api-calls");
    assert!(!b.rules.is_empty());
    // Every effective rule the budget counts was decided by the child's
    // `api` rule, and every effective rule `api` decided is counted.
    for r in &eff.parsed.rules {
        let from_api = r.id.starts_with("api+parent:");
        assert_eq!(b.rules.contains(&r.id), from_api, "{}", r.id);
    }
}

#[test]
fn a_budget_that_cannot_name_its_rules_exactly_counts_its_whole_class() {
    let caps = Capabilities::assume_all();
    // The parent splits the child's `api` rule over two CIDR keys, both
    // combined as `api+parent:p-any`.
    let parent = compile_policy(
        "parent.yaml",
        "version: 1\nrules:\n  - id: p-any\n    connect: { to: 0.0.0.0/0 }\n    decision: allow\n  \
         - id: p-no\n    connect: { to: 10.1.0.0/16, ports: [1] }\n    decision: deny\n",
        &caps,
    )
    .unwrap();
    let child = compile_policy(
        "child.yaml",
        "version: 1\nrules:\n  - id: api\n    connect: { to: 10.0.0.0/8 }\n    decision: allow\n\
         budgets:\n  - id: api-calls\n    count: connect\n    match: { rule: [api] }\n    limit: 5\n    per: 1m\n    then: deny\n",
        &caps,
    )
    .unwrap();
    let eff = compile_delegated(&parent, &child, &caps).unwrap();
    let twice = eff
        .parsed
        .rules
        .iter()
        .filter(|r| r.id == "api+parent:p-any")
        .count();
    assert!(twice > 1, "{:#?}", eff.parsed.rules);
    assert_eq!(eff.parsed.budgets[0].id, "api-calls");
    assert!(
        eff.parsed.budgets[0].rules.is_empty(),
        "counts every connect"
    );
}

const EXEC_TARGETS: [&str; 10] = [
    "path: /usr/bin/ls",
    "path: /usr/bin",
    "prefix: /usr/bin/",
    "prefix: /usr/",
    "path: /opt/a",
    "prefix: /opt/a/",
    "prefix: /opt/a/b/",
    "prefix: /opt/ab/",
    "path: /opt/dätä/x",
    "prefix: /opt/dätä/",
];
const FILE_TARGETS: [&str; 11] = [
    "path: /srv/data",
    "prefix: /srv/data/",
    "path: /srv/data/a",
    "prefix: /srv/data/a/",
    "prefix: /srv/",
    "path: /srv/dat",
    "prefix: /srv/dat/",
    "prefix: /etc/",
    "path: /etc/passwd",
    "prefix: /srv/dätä/",
    "path: /srv/dätä/x",
];

/// Exec and file rules only, many of them nested, equal targets repeated
/// (the first in the file decides), a prefix next to the exact path of its
/// directory and names sharing leading bytes but not a directory; a kind
/// is sometimes absent (ungoverned on that side).
fn generated_path_policy(g: &mut Gen, tag: &str) -> String {
    let mut yaml = String::from("version: 1\nrules:\n");
    let decision = |g: &mut Gen| g.pick(&["allow", "deny", "hold"]).to_string();
    for i in 0..g.below(9) {
        let d = decision(g);
        yaml.push_str(&format!(
            "  - id: {tag}e{i}\n    exec: {{ {} }}\n    decision: {d}\n    allow_write_exec: true\n",
            g.pick(&EXEC_TARGETS)
        ));
    }
    for i in 0..g.below(9) {
        let d = decision(g);
        let access = g.pick(&["[read]", "[write]", "[read, write]"]);
        yaml.push_str(&format!(
            "  - id: {tag}f{i}\n    file: {{ {}, access: {access} }}\n    decision: {d}\n    allow_write_exec: true\n",
            g.pick(&FILE_TARGETS)
        ));
    }
    if yaml.ends_with("rules:\n") {
        yaml.push_str(&format!(
            "  - id: {tag}only\n    connect: {{ to: 127.0.0.1, ports: [1] }}\n    decision: allow\n"
        ));
    }
    yaml
}

/// The exec and file rules' intersection, each side's rules found by the
/// prefixes of a key: over generated path policies, the effective policy
/// decides every exec and open as `combine` of both sides, never wider.
#[test]
fn path_rules_intersect_exactly_on_generated_policies() {
    let caps = Capabilities::assume_all();
    let mut g = Gen(0x2545_f491_4f6c_dd1d);
    let mut actions = Vec::new();
    for path in [
        "/usr/bin/ls",
        "/usr/bin/cat",
        "/usr/bin",
        "/usr/lib/x",
        "/usr",
        "/opt/a",
        "/opt/a/x",
        "/opt/a/b/c",
        "/opt/a/b",
        "/opt/ab/x",
        "/opt/abc",
        "/opt/dätä/x",
        "/opt/dätä/y",
        "/opt/dät",
        "/srv/data",
        "/srv/data/a",
        "/srv/data/a/b",
        "/srv/data/b",
        "/srv/dat",
        "/srv/dat/x",
        "/srv/datum",
        "/srv/dätä/x",
        "/srv/dätä",
        "/etc/passwd",
        "/etc",
        "/tmp/x",
    ] {
        actions.push(Replayed::Exec { path: path.into() });
        for (read, write) in [(true, false), (false, true), (true, true)] {
            actions.push(Replayed::Open {
                path: path.into(),
                read,
                write,
            });
        }
    }
    let (mut compared, mut narrowed) = (0, 0);
    for _ in 0..600 {
        let p_yaml = generated_path_policy(&mut g, "p");
        let c_yaml = generated_path_policy(&mut g, "c");
        let (Ok(parent), Ok(child)) = (
            compile_policy("parent.yaml", &p_yaml, &caps),
            compile_policy("child.yaml", &c_yaml, &caps),
        ) else {
            continue;
        };
        let eff = compile_delegated(&parent, &child, &caps)
            .unwrap_or_else(|e| panic!("{e}\n--- parent\n{p_yaml}--- child\n{c_yaml}"));
        for a in &actions {
            let (p, c, e) = (decide(&parent, a), decide(&child, a), decide(&eff, a));
            assert_eq!(
                e,
                combine(p, c),
                "{a:?}: parent {p:?} child {c:?}\n--- parent\n{p_yaml}--- child\n{c_yaml}"
            );
            narrowed += usize::from(strictness(e) > strictness(c));
            compared += 1;
        }
    }
    assert!(compared > 40_000, "{compared}");
    assert!(narrowed > compared / 20, "{narrowed} of {compared}");
}

/// A measurement, not a check (README "Delegation" quotes it): the time to
/// intersect two policies of many host rules, each side's rules decided by
/// pattern lookups. `cargo test -p warden --lib measure_intersecting --
/// --ignored --nocapture`.
#[test]
#[ignore = "a measurement: prints the time; run it by name"]
fn measure_intersecting_large_host_rule_policies() {
    let caps = Capabilities::assume_all();
    let mk = |tag: &str, n: usize| {
        let mut y = String::from("version: 1\nrules:\n");
        for i in 0..n {
            y.push_str(&format!("  - id: {tag}{i}\n    connect: {{ host: 'h{i}.x{}.example.com', ports: [443] }}\n    decision: allow\n", i % 50));
            if i % 10 == 0 {
                y.push_str(&format!("  - id: {tag}w{i}\n    connect: {{ host: '*.x{i}.example.com' }}\n    decision: allow\n"));
            }
        }
        y
    };
    for n in [1000usize, 5000, 20000] {
        let p = compile_policy("p.yaml", &mk("p", n), &caps);
        let c = compile_policy("c.yaml", &mk("c", n), &caps);
        let (Ok(p), Ok(c)) = (p, c) else {
            eprintln!("n={n}: refused");
            continue;
        };
        let t = std::time::Instant::now();
        let e = compile_delegated(&p, &c, &caps).unwrap();
        eprintln!(
            "n={n} rules/side={} effective={} took {:?}",
            p.parsed.rules.len(),
            e.parsed.rules.len(),
            t.elapsed()
        );
    }
}

/// Packet sockets: allowed for the child only where both allow them; a
/// side without a `kind: packet` rule denies (and a policy naming only raw
/// sockets leaves packet sockets denied).
#[test]
fn packet_sockets_are_allowed_only_where_both_allow_them() {
    let caps = Capabilities::assume_all();
    let compile = |name: &str, rules: &str| {
        compile_policy(name, &format!("version: 1\nrules:\n{rules}"), &caps).unwrap()
    };
    let packet = "  - id: sniff\n    socket: { kind: packet }\n    decision: allow\n";
    let raw = "  - id: ping\n    socket: { kind: raw }\n    decision: allow\n";
    let both = compile("both.yaml", &format!("{packet}{raw}"));
    let raw_only = compile("raw.yaml", raw);
    let eff = compile_delegated(&both, &both, &caps).unwrap();
    assert_eq!(decide(&eff, &Replayed::PacketSocket), Decision::Allow);
    assert_eq!(decide(&eff, &Replayed::RawSocket), Decision::Allow);
    for (parent, child) in [(&both, &raw_only), (&raw_only, &both)] {
        let eff = compile_delegated(parent, child, &caps).unwrap();
        assert_eq!(decide(&eff, &Replayed::PacketSocket), Decision::Deny);
        assert_eq!(decide(&eff, &Replayed::RawSocket), Decision::Allow);
    }
    let eff = compile_delegated(&raw_only, &raw_only, &caps).unwrap();
    assert_eq!(decide(&eff, &Replayed::PacketSocket), Decision::Deny);
}

/// A measurement, not a check (README "Delegation" quotes it): the time to
/// intersect two policies of many exec and file (path) rules, exact paths
/// and prefixes nested under each other, each side's rules decided by the
/// prefixes of a key. Timed on parsed policies: a compiled policy holds at
/// most `policy_share(MAX_PATH_ENTRIES)` (1024) paths a kind, so sides
/// this large are refused by the compiler; the pipeline (intersect, then
/// compile) is timed where the intersection fits. `cargo test -p warden
/// --lib measure_intersecting -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement: prints the time; run it by name"]
fn measure_intersecting_large_path_rule_policies() {
    let mk = |tag: &str, n: usize| {
        let mut y = String::from("version: 1\nrules:\n");
        for i in 0..n / 2 {
            let d = if i % 7 == 0 { "deny" } else { "allow" };
            y.push_str(&format!("  - id: {tag}e{i}\n    exec: {{ path: /opt/t{}/bin/{tag}{i} }}\n    decision: {d}\n", i % 50));
            y.push_str(&format!("  - id: {tag}f{i}\n    file: {{ path: /srv/t{}/{tag}{i}, access: [read] }}\n    decision: {d}\n", i % 50));
            if i % 10 == 0 {
                y.push_str(&format!(
                    "  - id: {tag}ep{i}\n    exec: {{ prefix: /opt/t{i}/ }}\n    decision: allow\n"
                ));
                y.push_str(&format!("  - id: {tag}fp{i}\n    file: {{ prefix: /srv/t{i}/, access: [read, write] }}\n    decision: allow\n"));
            }
        }
        y
    };
    for n in [1000usize, 5000, 20000] {
        let p = super::super::parse::parse_policy("p.yaml", &mk("p", n)).unwrap();
        let c = super::super::parse::parse_policy("c.yaml", &mk("c", n)).unwrap();
        let t = std::time::Instant::now();
        let e = intersect(&p, &c).unwrap();
        eprintln!(
            "n={n} path rules/side={} effective={} intersect took {:?}",
            p.rules.len(),
            e.rules.len(),
            t.elapsed()
        );
    }
    // The largest that compiles: 462 exec and 462 file paths a side, 924
    // (+ the prefixes' directories for files) in the intersection.
    let caps = Capabilities::assume_all();
    let p = compile_policy("p.yaml", &mk("p", 840), &caps).unwrap();
    let c = compile_policy("c.yaml", &mk("c", 840), &caps).unwrap();
    let t = std::time::Instant::now();
    let e = compile_delegated(&p, &c, &caps).unwrap();
    eprintln!(
        "compiled: path rules/side={} effective={} intersect+compile took {:?}",
        p.parsed.rules.len(),
        e.parsed.rules.len(),
        t.elapsed()
    );
}

/// A measurement, not a check (README Known gaps quotes it): the time to
/// intersect two policies of many connect (CIDR) rules, each with its own
/// address and port, so the union has one key per rule and the port axis
/// one cut per port. `cargo test -p warden --lib measure_intersecting --
/// --ignored --nocapture`.
#[test]
#[ignore = "a measurement: prints the time; run it by name"]
fn measure_intersecting_large_connect_rule_policies() {
    let mk = |tag: &str, n: usize, salt: usize| {
        let mut y = String::from("version: 1\nrules:\n");
        for i in 0..n {
            let j = i * 2 + salt;
            y.push_str(&format!(
                "  - id: {tag}{i}\n    connect: {{ to: '10.{}.{}.0/24', ports: [{}] }}\n    decision: allow\n",
                j / 256,
                j % 256,
                1000 + j
            ));
        }
        y
    };
    for n in [100usize, 200, 400, 1000, 10_000] {
        let p = super::super::parse::parse_policy("p.yaml", &mk("p", n, 0)).unwrap();
        let c = super::super::parse::parse_policy("c.yaml", &mk("c", n, 1)).unwrap();
        let t = std::time::Instant::now();
        let mut only = Vec::new();
        connect_rules(&p, &c, &mut only);
        let connect = t.elapsed();
        let t = std::time::Instant::now();
        let e = intersect(&p, &c).unwrap();
        eprintln!(
            "n={n} connect rules/side={} effective={} connect rules alone {connect:?}, intersect took {:?}",
            p.rules.len(),
            e.rules.len(),
            t.elapsed()
        );
    }
}

// ---------------------------------------------------------------------------
// Connect rules: the indexed intersection against the direct one it replaced

/// The connect intersection as it was before `connect_cells` (every rule
/// scanned per key, segment and protocol), kept as the reference the
/// indexed one must reproduce rule for rule.
/// A side's decision for destinations whose longest union key is `key`:
/// its rules whose CIDR contains `key`, most specific first, then in file
/// order; the first that matches port and protocol (`compile_network`).
fn reference_connect_verdict(policy: &Policy, key: &Cidr, port: u16, sock: Sock) -> Verdict {
    let mut covering: Vec<(&Rule, u8)> = policy
        .rules
        .iter()
        .filter_map(|r| match &r.selector {
            Selector::Connect {
                cidr,
                ports,
                protocol,
            } if cidr.contains(key) => {
                let port_ok =
                    ports.is_empty() || ports.iter().any(|&(lo, hi)| lo <= port && port <= hi);
                (port_ok && proto_matches(*protocol, sock)).then_some((r, cidr.prefix()))
            }
            _ => None,
        })
        .collect();
    covering.sort_by_key(|&(_, prefix)| std::cmp::Reverse(prefix));
    covering
        .first()
        .map_or_else(Verdict::default_deny, |(r, _)| Verdict::of(r))
}

/// Per union CIDR: the port axis cut at every range edge of either side;
/// per segment and socket protocol both sides decided. The most common
/// combined rule becomes one `0-65535 any` rule written last; the others
/// are written before it as `tcp`/`udp`/`any` rules of their segment, so
/// the entry never needs rules of a shorter CIDR (`compile_network` stops
/// at a rule covering every port and protocol).
fn reference_connect_rules(parent: &Policy, child: &Policy, out: &mut Vec<Rule>) {
    let mut keys: Vec<Cidr> = Vec::new();
    let mut cuts: BTreeSet<u32> = BTreeSet::from([0, 65536]);
    for (cidr, ports) in connect_cidrs(child).chain(connect_cidrs(parent)) {
        if !keys.contains(&cidr) {
            keys.push(cidr);
        }
        for &(lo, hi) in ports {
            cuts.insert(u32::from(lo));
            cuts.insert(u32::from(hi) + 1);
        }
    }
    let cuts: Vec<u32> = cuts.into_iter().collect();
    for key in keys {
        // (segment, sock, rule) for every cell of the key's grid.
        let mut cells: Vec<((u16, u16), Sock, Rule)> = Vec::new();
        for seg in cuts.windows(2) {
            let (lo, hi) = (seg[0] as u16, (seg[1] - 1) as u16);
            for sock in SOCKS {
                let c = reference_connect_verdict(child, &key, lo, sock);
                let p = reference_connect_verdict(parent, &key, lo, sock);
                let rule = joined(
                    &c,
                    &p,
                    Selector::Socket {
                        kind: SocketKind::Raw,
                    },
                );
                cells.push(((lo, hi), sock, rule));
            }
        }
        // The most common rule (first seen on a tie) is the fallback.
        let mut fallback: Option<(&Rule, usize)> = None;
        for (_, _, r) in &cells {
            let n = cells.iter().filter(|(_, _, o)| o == r).count();
            if fallback.is_none_or(|(_, best)| n > best) {
                fallback = Some((r, n));
            }
        }
        let Some((fallback, _)) = fallback else {
            continue;
        };
        let fallback = fallback.clone();
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
        // Adjacent segments with the same rule and protocol merge.
        let mut pending: Vec<(Rule, Protocol, (u16, u16))> = Vec::new();
        let mut push = |rule: &Rule, proto: Protocol, seg: (u16, u16)| {
            if let Some(last) = pending
                .iter_mut()
                .rev()
                .find(|(r, p, _)| r == rule && *p == proto)
            {
                if u32::from(last.2 .1) + 1 == u32::from(seg.0) {
                    last.2 .1 = seg.1;
                    return;
                }
            }
            pending.push((rule.clone(), proto, seg));
        };
        for chunk in cells.chunks(3) {
            let seg = chunk[0].0;
            let (tcp, udp, other) = (&chunk[0].2, &chunk[1].2, &chunk[2].2);
            if tcp == other && udp == other {
                if *other != fallback {
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
            if *other != fallback {
                push(other, Protocol::Any, seg);
            }
        }
        // Order matters only between a segment's tcp/udp rules and its
        // `any` rule: pushed in that order, and merging keeps the first
        // position, so sort `any` rules after the protocol ones.
        pending.sort_by_key(|(_, p, _)| *p == Protocol::Any);
        for (rule, proto, seg) in pending {
            out.push(with(&rule, vec![seg], proto));
        }
        out.push(with(&fallback, Vec::new(), Protocol::Any));
    }
}

/// Connect rules only, denser than `generated_policy`: nested and
/// overlapping CIDRs (v4 and v6), several port ranges per rule, ranges
/// that share edges or reach 0 and 65535, every protocol and decision,
/// repeated CIDRs (file order decides between them).
fn generated_connect_policy(g: &mut Gen, tag: &str) -> String {
    const NETS: [&str; 10] = [
        "0.0.0.0/0",
        "10.0.0.0/8",
        "10.1.0.0/16",
        "10.1.2.0/24",
        "10.1.2.3",
        "10.2.0.0/16",
        "::/0",
        "fd00::/8",
        "fd00:1::/64",
        "fd00:1::5",
    ];
    let mut yaml = String::from("version: 1\nrules:\n");
    for i in 0..1 + g.below(10) {
        let mut ranges = Vec::new();
        for _ in 0..g.below(4) {
            let lo = match g.below(4) {
                0 => 1,
                1 => 65535 - g.below(3),
                _ => 1 + g.below(8),
            };
            let hi = (lo + g.below(4)).min(65535);
            ranges.push(if lo == hi {
                format!("{lo}")
            } else {
                format!("\"{lo}-{hi}\"")
            });
        }
        let ports = if ranges.is_empty() {
            String::new()
        } else {
            format!(", ports: [{}]", ranges.join(", "))
        };
        let proto = g.pick(&["", ", protocol: tcp", ", protocol: udp", ", protocol: any"]);
        let d = g.pick(&["allow", "deny", "hold"]);
        yaml.push_str(&format!(
            "  - id: {tag}n{i}\n    connect: {{ to: '{}'{ports}{proto} }}\n    decision: {d}\n",
            g.pick(&NETS)
        ));
    }
    yaml
}

/// The indexed connect intersection writes exactly the rules the direct
/// one wrote (same CIDRs, segments, protocols, ids, decisions, order) over
/// generated policies, both the dense connect-only ones and the mixed ones
/// of the other generated tests; so deny over hold over allow and the most
/// specific rule, then file order, are decided as before.
#[test]
fn indexed_connect_intersection_equals_direct_on_generated_policies() {
    let mut g = Gen(0x1405_7b7e_f767_814f);
    let parse = |name: &str, y: &str| super::super::parse::parse_policy(name, y).unwrap();
    let mut rules = 0;
    for case in 0..600 {
        let (p, c) = if case % 3 == 0 {
            (generated_policy(&mut g, "p"), generated_policy(&mut g, "c"))
        } else {
            (
                generated_connect_policy(&mut g, "p"),
                generated_connect_policy(&mut g, "c"),
            )
        };
        let (p, c) = (parse("p.yaml", &p), parse("c.yaml", &c));
        let (mut got, mut want) = (Vec::new(), Vec::new());
        connect_rules(&p, &c, &mut got);
        reference_connect_rules(&p, &c, &mut want);
        assert_eq!(got, want, "case {case}:\nparent {p:#?}\nchild {c:#?}");
        rules += got.len();
    }
    assert!(rules > 5000, "the generated cases wrote few rules: {rules}");
}

/// A measurement, not a check: the time to intersect two policies of
/// 10,000 connect rules a side (as above) that also carry budgets (at most
/// 8 a policy), each naming one rule (the effective rules are scanned per
/// budget).
/// `cargo test -p warden --lib measure_intersecting -- --ignored
/// --nocapture`.
#[test]
#[ignore = "a measurement: prints the time; run it by name"]
fn measure_intersecting_budgets_over_many_connect_rules() {
    let mk = |tag: &str, n: usize, budgets: usize, salt: usize| {
        let mut y = String::from("version: 1\nrules:\n");
        for i in 0..n {
            let j = i * 2 + salt;
            y.push_str(&format!(
                "  - id: {tag}{i}\n    connect: {{ to: '10.{}.{}.0/24', ports: [{}] }}\n    decision: allow\n",
                j / 256,
                j % 256,
                1000 + j
            ));
        }
        if budgets > 0 {
            y.push_str("budgets:\n");
        }
        for i in 0..budgets {
            y.push_str(&format!(
                "  - id: b{i}\n    count: connect\n    match: {{ rule: [{tag}{i}] }}\n    limit: 5\n    per: 1m\n    then: deny\n"
            ));
        }
        y
    };
    for budgets in [0usize, 1, 8] {
        let n = 10_000;
        let p = super::super::parse::parse_policy("p.yaml", &mk("p", n, budgets, 0)).unwrap();
        let c = super::super::parse::parse_policy("c.yaml", &mk("c", n, budgets, 1)).unwrap();
        let t = std::time::Instant::now();
        let e = intersect(&p, &c).unwrap();
        eprintln!(
            "rules/side={n} budgets/side={budgets} effective rules={} budgets={} intersect took {:?}",
            e.rules.len(),
            e.budgets.len(),
            t.elapsed()
        );
    }
}
