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

#[test]
fn host_rules_on_either_side_are_refused_with_the_reason() {
    let caps = Capabilities::assume_all();
    let parent = compile_policy(
        "parent.yaml",
        "version: 1\nrules:\n  - id: api\n    connect: { host: api.example.com, ports: [443] }\n    decision: allow\n",
        &caps,
    )
    .unwrap();
    let child = compile_policy(
        "child.yaml",
        "version: 1\nrules:\n  - id: x\n    connect: { to: 127.0.0.1 }\n    decision: allow\n",
        &caps,
    )
    .unwrap();
    let err = compile_delegated(&parent, &child, &caps)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("parent policy 'parent.yaml' has `connect: { host: .. }`"),
        "{err}"
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
