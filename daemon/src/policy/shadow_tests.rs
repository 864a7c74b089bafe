//! The evaluator against the compiled tables' kernel semantics (the
//! compiler's own models of the kernel lookups, `compile::tests` and
//! `compile::path_tests`), over generated policies; and a replay whose
//! counts are worked out by hand.

use super::super::compile::{path_tests, tests as net_tests};
use super::*;
use serde_json::json;

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

fn kernel_decision_byte(d: Decision) -> u8 {
    d.to_kernel() as u8
}

/// Connect rules over a few overlapping networks, ports and protocols.
fn generated_net_policy(g: &mut Gen) -> String {
    let cidrs = [
        "10.0.0.0/8",
        "10.1.0.0/16",
        "10.1.2.0/24",
        "10.1.2.3",
        "0.0.0.0/0",
        "127.0.0.0/8",
        "fd00::/8",
        "fd00:1::/32",
        "::/0",
        "fd00:1::5",
    ];
    let mut yaml = String::from("version: 1\nrules:\n");
    for i in 0..(1 + g.below(12)) {
        let ports = match g.below(3) {
            0 => String::new(),
            1 => format!(", ports: [{}]", 1 + g.below(4)),
            _ => format!(", ports: [\"{}-{}\"]", 1 + g.below(2), 2 + g.below(3)),
        };
        let proto = g.pick(&["", ", protocol: tcp", ", protocol: udp"]);
        yaml.push_str(&format!(
            "  - id: r{i}\n    connect: {{ to: '{}'{ports}{proto} }}\n    decision: {}\n",
            g.pick(&cidrs),
            g.pick(&["allow", "deny", "hold"])
        ));
    }
    yaml
}

#[test]
fn net_decisions_match_the_kernel_lookup_on_generated_policies() {
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let dests = [
        "10.1.2.3",
        "10.1.2.4",
        "10.1.3.1",
        "10.2.0.1",
        "127.0.0.1",
        "8.8.8.8",
        "::ffff:10.1.2.3",
        "fd00:1::5",
        "fd00:1::6",
        "fd00:2::1",
        "2001:db8::1",
    ];
    for _ in 0..300 {
        let yaml = generated_net_policy(&mut g);
        let compiled = compile_policy("gen.yaml", &yaml, &Capabilities::assume_all())
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let eval = Evaluator {
            compiled: &compiled,
        };
        for dst in dests {
            let addr: IpAddr = dst.parse().unwrap();
            for port in 0..6u16 {
                for proto in [warden_common::proto::TCP, warden_common::proto::UDP] {
                    let model = net_tests::kernel_lookup(&compiled.net, addr, port, proto);
                    let v = eval.decide(&Replayed::Net { addr, port, proto });
                    assert_eq!(
                        (kernel_decision_byte(v.decision), v.rule_idx),
                        model,
                        "{dst}:{port}/{proto}\n{yaml}"
                    );
                }
            }
        }
    }
}

fn generated_path_policy(g: &mut Gen) -> String {
    let targets = [
        "path: /usr/bin/ls",
        "prefix: /usr/bin/",
        "prefix: /usr/",
        "path: /srv/data/a",
        "prefix: /srv/data/",
        "prefix: /srv/",
        "prefix: /",
    ];
    let mut yaml = String::from("version: 1\nrules:\n");
    let mut exec_paths = std::collections::HashSet::new();
    for i in 0..(1 + g.below(10)) {
        let target = g.pick(&targets);
        if g.below(2) == 0 {
            // The compiler refuses a path both written and executed unless
            // the rule says so; exec rules use their own target set here.
            exec_paths.insert(target);
            yaml.push_str(&format!(
                "  - id: e{i}\n    exec: {{ {target} }}\n    decision: {}\n    allow_write_exec: true\n",
                g.pick(&["allow", "deny", "hold"])
            ));
        } else {
            let access = g.pick(&["[read]", "[write]", "[read, write]"]);
            yaml.push_str(&format!(
                "  - id: f{i}\n    file: {{ {target}, access: {access} }}\n    decision: {}\n    allow_write_exec: true\n",
                g.pick(&["allow", "deny", "hold"])
            ));
        }
    }
    yaml
}

#[test]
fn path_decisions_match_the_kernel_lookup_on_generated_policies() {
    let mut g = Gen(0x2545_f491_4f6c_dd1d);
    let paths = [
        "/usr/bin/ls",
        "/usr/bin/cat",
        "/usr/lib/x",
        "/srv/data/a",
        "/srv/data/b",
        "/srv/other",
        "/etc/passwd",
        "/usr/bin",
    ];
    let mut compiled_any = 0;
    for _ in 0..300 {
        let yaml = generated_path_policy(&mut g);
        let Ok(compiled) = compile_policy("gen.yaml", &yaml, &Capabilities::assume_all()) else {
            // Refused policies (for example write+exec overlaps the flag
            // does not cover) install nothing: nothing to compare.
            continue;
        };
        compiled_any += 1;
        let eval = Evaluator {
            compiled: &compiled,
        };
        for path in paths {
            if compiled.paths.exec_governed {
                let v = eval.decide(&Replayed::Exec { path: path.into() });
                assert_eq!(
                    (kernel_decision_byte(v.decision), v.rule_idx),
                    path_tests::exec(&compiled.paths, path),
                    "exec {path}\n{yaml}"
                );
            }
            if compiled.paths.file_governed {
                let (r, w) = path_tests::open(&compiled.paths, path);
                let read = eval.decide(&Replayed::Open {
                    path: path.into(),
                    read: true,
                    write: false,
                });
                assert_eq!(
                    (kernel_decision_byte(read.decision), read.rule_idx),
                    (kernel_decision_byte(kernel_decision(r.0)), r.1),
                    "read {path}\n{yaml}"
                );
                let write = eval.decide(&Replayed::Open {
                    path: path.into(),
                    read: false,
                    write: true,
                });
                assert_eq!(
                    (kernel_decision_byte(write.decision), write.rule_idx),
                    (kernel_decision_byte(kernel_decision(w.0)), w.1),
                    "write {path}\n{yaml}"
                );
                // Both: the stricter, the write on a tie.
                let both = eval.decide(&Replayed::Open {
                    path: path.into(),
                    read: true,
                    write: true,
                });
                let want = if strictness(write.decision) >= strictness(read.decision) {
                    write
                } else {
                    read
                };
                assert_eq!(both, want, "read+write {path}\n{yaml}");
            }
        }
    }
    assert!(
        compiled_any > 100,
        "only {compiled_any} generated policies compiled"
    );
}

fn entry(seq: u64, kind: &str, action: &str, target: &str, decision: &str, rule: &str) -> Entry {
    let mut details = serde_json::Map::new();
    if action == "open" {
        details.insert("access".into(), json!("read"));
    }
    Entry {
        seq,
        v: 2,
        ts_ns: seq as i64,
        kind: kind.into(),
        agent: "bot".into(),
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
        rule_id: rule.into(),
        policy_snapshot: "s".into(),
        method: "allow".into(),
        details,
        prev_hash: String::new(),
        hash: String::new(),
    }
}

fn summary(seq: u64, action: &str, target: &str, rule: &str, count: u64) -> Entry {
    let mut e = entry(seq, "summary", action, target, "allow", rule);
    e.details.insert("count".into(), json!(count));
    e
}

#[test]
fn replay_counts_match_a_hand_computed_expectation() {
    // Recorded under: api (8080) allow, db (5432) allow, admin (9000)
    // deny, everything else default-deny; /srv/ readable.
    let entries = vec![
        entry(
            1,
            "decision",
            "connect4",
            "127.0.0.1:8080/tcp",
            "allow",
            "api",
        ),
        summary(2, "connect4", "127.0.0.1:8080/tcp", "api", 9),
        entry(
            3,
            "decision",
            "connect4",
            "127.0.0.1:5432/tcp",
            "allow",
            "db",
        ),
        summary(4, "connect4", "127.0.0.1:5432/tcp", "db", 4),
        entry(
            5,
            "decision",
            "connect4",
            "127.0.0.1:9000/tcp",
            "deny",
            "admin",
        ),
        entry(
            6,
            "decision",
            "connect4",
            "127.0.0.1:9000/tcp",
            "deny",
            "admin",
        ),
        entry(
            7,
            "decision",
            "connect4",
            "127.0.0.1:7000/tcp",
            "deny",
            "default-deny",
        ),
        entry(
            8,
            "decision",
            "connect6",
            "[::1]:8080/tcp",
            "would-deny",
            "default-deny",
        ),
        entry(9, "decision", "open", "/srv/a", "allow", "srv"),
        summary(10, "open", "/srv/a", "srv", 2),
        entry(11, "decision", "open", "/srv/secret", "allow", "srv"),
        entry(
            12,
            "decision",
            "connect4",
            "127.0.0.1:8080/tcp",
            "deny",
            "revoked",
        ),
        entry(13, "gap", "evidence.lost", "x", "deny", "default-deny"),
        {
            let mut other = entry(
                14,
                "decision",
                "connect4",
                "127.0.0.1:5432/tcp",
                "allow",
                "db",
            );
            other.agent = "someone-else".into();
            other
        },
    ];
    let candidate = "version: 1
rules:
  - id: api
    connect: { to: 127.0.0.1, ports: [8080] }
    decision: allow
  - id: db-held
    connect: { to: 127.0.0.1, ports: [5432] }
    decision: hold
  - id: admin-now-allowed
    connect: { to: 127.0.0.1, ports: [9000] }
    decision: allow
  - id: api-v6
    connect: { to: '::1', ports: [8080] }
    decision: allow
  - id: no-secret
    file: { path: /srv/secret, access: [read] }
    decision: deny
  - id: srv
    file: { prefix: /srv/, access: [read] }
    decision: allow
";
    let r = shadow("bot", "cand.yaml", candidate, &entries).unwrap();
    // By hand: 8080 allow->allow 1+9 unchanged; 5432 allow->hold 1+4;
    // 9000 deny->allow 2; 7000 deny->deny (default) unchanged 1; [::1]
    // would-deny->allow 1; /srv/a unchanged 1+2; /srv/secret allow->deny
    // 1; the revoked one skipped; the gap and the other agent not read.
    assert_eq!(r.entries, 12);
    assert_eq!(r.actions, 12 - 3 + 9 + 4 + 2);
    assert_eq!(r.total(Change::WouldHold), 5);
    assert_eq!(r.total(Change::WouldAllow), 3);
    assert_eq!(r.total(Change::WouldDeny), 1);
    assert_eq!(r.unchanged, 10 + 1 + 3);
    assert_eq!(r.skipped.get("revoked"), Some(&1));
    let by_rule: Vec<(&str, &str, u64, u64)> = r
        .differences
        .iter()
        .map(|g| (g.change.name(), g.rule.as_str(), g.actions, g.entries))
        .collect();
    assert_eq!(
        by_rule,
        vec![
            ("would-deny", "no-secret", 1, 1),
            ("would-hold", "db-held", 5, 2),
            ("would-allow", "admin-now-allowed", 2, 2),
            ("would-allow", "api-v6", 1, 1),
        ]
    );
    let held = &r.differences[1];
    assert_eq!(held.examples[0].seq, 3);
    assert_eq!(held.examples[0].recorded, "allow by db");
}

#[test]
fn targets_are_read_back_as_the_kernel_saw_them() {
    let e = |action: &str, target: &str| entry(1, "decision", action, target, "allow", "x");
    assert_eq!(
        replayed(&e("sendmsg6", "[fd00::1]:53/udp")),
        Some(Replayed::Net {
            addr: "fd00::1".parse().unwrap(),
            port: 53,
            proto: warden_common::proto::UDP
        })
    );
    assert_eq!(
        replayed(&e("connect4", "10.0.0.1:1/proto132")),
        Some(Replayed::Net {
            addr: "10.0.0.1".parse().unwrap(),
            port: 1,
            proto: 132
        })
    );
    assert_eq!(
        replayed(&e("socket", "raw inet raw protocol=255")),
        Some(Replayed::RawSocket)
    );
    assert_eq!(
        replayed(&e("socket", "packet packet raw protocol=768")),
        Some(Replayed::PacketSocket)
    );
    let mut rename = e("rename", "/srv/new");
    rename.details.insert("old_path".into(), json!("/srv/old"));
    assert_eq!(
        replayed(&rename),
        Some(Replayed::Name {
            old: "/srv/old".into(),
            new: "/srv/new".into()
        })
    );
    assert_eq!(replayed(&e("connect4", "garbage")), None);
    let mut no_access = e("open", "/no/access/detail");
    no_access.details.remove("access");
    assert_eq!(replayed(&no_access), None);
}

#[test]
fn a_rename_needs_both_names_writable_and_a_hold_is_refused() {
    let compiled = compile_policy(
        "n.yaml",
        "version: 1
rules:
  - id: out
    file: { prefix: /srv/out/, access: [write] }
    decision: allow
  - id: held
    file: { prefix: /srv/held/, access: [write] }
    decision: hold
",
        &Capabilities::assume_all(),
    )
    .unwrap();
    let eval = Evaluator {
        compiled: &compiled,
    };
    let name = |old: &str, new: &str| {
        let v = eval.decide(&Replayed::Name {
            old: old.into(),
            new: new.into(),
        });
        (v.decision, v.rule_idx)
    };
    assert_eq!(name("/srv/out/a", "/srv/out/b"), (Decision::Allow, 0));
    assert_eq!(
        name("/srv/in/a", "/srv/out/b"),
        (Decision::Deny, rule::DEFAULT)
    );
    assert_eq!(name("/srv/out/a", "/srv/held/b"), (Decision::Deny, 1));
    // No exec rules: execs are not governed, so allowed.
    let v = eval.decide(&Replayed::Exec {
        path: "/usr/bin/ls".into(),
    });
    assert!(!v.governed && v.decision == Decision::Allow);
}

/// `warden policy shadow CHILD`: each entry is replayed under the parent's
/// policy in force when it was recorded. The parent allowed port 1 until
/// its reload at t=200 denied it; the child's candidate allows port 1.
/// Recorded: t=150 allowed (both allowed), t=250 denied (the parent).
/// Under the parent of each entry's time nothing differs; under the
/// parent of now (the reloaded one) the t=150 entry would be denied.
#[test]
fn a_childs_replay_uses_the_parents_version_in_force_at_each_entry() {
    let parent_v1 = "version: 1\nrules:\n  - id: p-open\n    connect: { to: 127.0.0.1, ports: [1] }\n    decision: allow\n";
    let parent_v2 = "version: 1\nrules:\n  - id: p-shut\n    connect: { to: 127.0.0.1, ports: [1] }\n    decision: deny\n";
    let candidate = "version: 1\nrules:\n  - id: c-open\n    connect: { to: 127.0.0.1, ports: [1] }\n    decision: allow\n";
    let versions = vec![vec![
        (100, "parent.yaml".to_string(), parent_v1.to_string()),
        (200, "parent.yaml".to_string(), parent_v2.to_string()),
    ]];
    let parents = parents_over_time(&versions).unwrap();
    assert_eq!(parents.iter().map(|p| p.0).collect::<Vec<_>>(), [100, 200]);
    let candidate = compile_policy("cand.yaml", candidate, &Capabilities::assume_all()).unwrap();
    let under = ReplayUnder::new(&candidate.parsed, &parents).unwrap();
    let mut early = entry(
        1,
        "decision",
        "connect4",
        "127.0.0.1:1/tcp",
        "allow",
        "c-open+parent:p-open",
    );
    early.ts_ns = 150;
    let mut late = entry(
        2,
        "decision",
        "connect4",
        "127.0.0.1:1/tcp",
        "deny",
        "c-open+parent:p-shut",
    );
    late.ts_ns = 250;
    let replay_with = |by_time: bool| {
        let latest = under.latest().unwrap();
        let mut r = Replay::new("bot", "cand.yaml", latest);
        for e in [&early, &late] {
            if by_time {
                r.set_policy(under.at(e.ts_ns).unwrap());
            }
            r.add(e);
        }
        r.finish()
    };
    let by_time = replay_with(true);
    assert_eq!((by_time.entries, by_time.unchanged), (2, 2), "{by_time:?}");
    assert!(by_time.differences.is_empty(), "{by_time:?}");
    // The old behaviour, for contrast: the parent of now decides both.
    let now = replay_with(false);
    assert_eq!(now.unchanged, 1, "{now:?}");
    assert_eq!(now.differences.len(), 1, "{now:?}");
    let d = &now.differences[0];
    assert_eq!(
        (d.change, d.rule.as_str(), d.actions),
        (Change::WouldDeny, "c-open+parent:p-shut", 1)
    );
    assert_eq!(d.examples[0].seq, 1);
    // An entry before the parent's first version is decided by it.
    assert!(std::ptr::eq(under.at(50).unwrap(), under.at(150).unwrap()));
    assert!(std::ptr::eq(
        under.at(200).unwrap(),
        under.latest().unwrap()
    ));
}
