//! Unit tests of the policy parser (over 600 lines: one test per error
//! the parser can report, each with its expected message).

use super::*;
use crate::policy::model::{
    Approvers, Decision, EvidenceLoss, Mode, PathMatch, Protocol, Selector,
};
use sha2::{Digest, Sha256};

const FILE: &str = "policies/payments.yaml";

fn err(yaml: &str) -> String {
    match parse_policy(FILE, yaml) {
        Ok(p) => panic!("parsed: {}", p.canonical_json()),
        Err(e) => e.to_string(),
    }
}

/// A policy whose one rule is `rule` (indented as a list item body).
fn one_rule(rule: &str) -> String {
    format!("version: 1\n# a comment\nrules:\n  - id: payments-api\n{rule}")
}

#[test]
fn invalid_cidr() {
    let yaml = one_rule("    connect: { to: 10.0.0/8, ports: [8443] }\n    decision: allow\n");
    assert_eq!(
        err(&yaml),
        "policies/payments.yaml:5:20: rule 'payments-api': invalid CIDR '10.0.0/8': '10.0.0' is \
             not an IPv4 or IPv6 address"
    );
}

#[test]
fn cidr_with_host_bits() {
    let yaml = one_rule("    connect:\n      to: 10.0.0.1/8\n    decision: allow\n");
    assert_eq!(
        err(&yaml),
        "policies/payments.yaml:6:11: rule 'payments-api': invalid CIDR '10.0.0.1/8': host bits \
             are set; did you mean 10.0.0.0/8?"
    );
    let yaml = one_rule("    connect: { to: \"::ffff:10.0.0.1\" }\n    decision: allow\n");
    assert_eq!(
        err(&yaml),
        "policies/payments.yaml:5:20: rule 'payments-api': invalid CIDR '::ffff:10.0.0.1': \
             IPv4-mapped IPv6 addresses are matched by IPv4 rules; write 10.0.0.1/32 instead"
    );
}

#[test]
fn unknown_field_in_rule_and_at_top() {
    let yaml = one_rule("    connect:\n      to: 10.0.0.1\n      prot: tcp\n    decision: allow\n");
    assert_eq!(
        err(&yaml),
        "policies/payments.yaml:7:7: rule 'payments-api': unknown field `prot`, expected one of \
             `to`, `host`, `ports`, `protocol`"
    );
    assert_eq!(
        err("version: 1\nrulez: []\nrules: []\n"),
        "policies/payments.yaml:2:1: unknown field `rulez`, expected one of `version`, \
             `description`, `approvers`, `hold_timeout`, `on_evidence_loss`, `mode`, `include`, \
             `evidence`, `monitor`, `change_review`, `review_every`, `freeze`, `delegate`, `rules`, \
             `budgets`, `shadow`"
    );
    assert_eq!(
        err(&one_rule(
            "    exec: { path: /bin/sh }\n    decision: allow\n    note: x\n"
        )),
        "policies/payments.yaml:7:5: rule 'payments-api': unknown field `note`, expected one of \
             `id`, `decision`, `connect`, `exec`, `file`, `socket`, `allow_write_exec`, `destructive`"
    );
}

#[test]
fn missing_and_invalid_rule_id_use_the_index() {
    let yaml =
        "version: 1\nrules:\n  - id: ok\n    exec: { path: /bin/sh }\n    decision: allow\n  \
                    - exec: { path: /bin/ls }\n    decision: allow\n";
    assert_eq!(
        err(yaml),
        "policies/payments.yaml:6:5: rules[1]: missing field `id`"
    );
    let yaml = "version: 1\nrules:\n  - id: Payments_API\n    exec: { path: /bin/sh }\n    decision: allow\n";
    assert_eq!(
        err(yaml),
        "policies/payments.yaml:3:9: rules[0]: invalid rule id 'Payments_API': ids are 1 to 64 \
             characters from a-z, 0-9, '.', '_', '-', starting with a letter or digit"
    );
    let long = "a".repeat(65);
    assert!(err(&format!(
        "version: 1\nrules:\n  - id: {long}\n    exec: {{ path: /a }}\n    decision: deny\n"
    ))
    .starts_with("policies/payments.yaml:3:9: rules[0]: invalid rule id"));
}

#[test]
fn rule_id_after_the_error_is_still_found() {
    let yaml =
        "version: 1\nrules:\n  - connect: { to: 300.0.0.1 }\n    decision: deny\n    id: late-id\n";
    assert_eq!(
            err(yaml),
            "policies/payments.yaml:3:20: rule 'late-id': invalid CIDR '300.0.0.1': '300.0.0.1' is not \
             an IPv4 or IPv6 address"
        );
}

#[test]
fn missing_and_unknown_decision() {
    assert_eq!(
        err(&one_rule("    exec: { path: /bin/sh }\n")),
        "policies/payments.yaml:4:5: rule 'payments-api': missing field `decision`"
    );
    assert_eq!(
        err(&one_rule(
            "    exec: { path: /bin/sh }\n    decision: maybe\n"
        )),
        "policies/payments.yaml:6:15: rule 'payments-api': unknown variant `maybe`, expected one \
             of `allow`, `deny`, `hold`"
    );
}

#[test]
fn invalid_ports() {
    let case = |ports: &str| {
        err(&one_rule(&format!(
            "    connect: {{ to: 1.2.3.4, ports: {ports} }}\n    decision: allow\n"
        )))
    };
    assert_eq!(
            case("[80, 0]"),
            "policies/payments.yaml:5:41: rule 'payments-api': port 0 is not a valid destination port; \
             ports are 1 to 65535"
        );
    assert_eq!(
            case("[\"90-80\"]"),
            "policies/payments.yaml:5:37: rule 'payments-api': invalid port range '90-80': 90 is above 80"
        );
    assert_eq!(
        case("[70000]"),
        "policies/payments.yaml:5:37: rule 'payments-api': invalid port '70000': ports are whole \
             numbers from 1 to 65535"
    );
    assert_eq!(
        case("[-5]"),
        "policies/payments.yaml:5:37: rule 'payments-api': invalid port '-5': ports are whole \
             numbers from 1 to 65535"
    );
    assert_eq!(
        case("[80-x]"),
        "policies/payments.yaml:5:37: rule 'payments-api': in port range '80-x': invalid port \
             'x': ports are whole numbers from 1 to 65535"
    );
    assert_eq!(
        case("[]"),
        "policies/payments.yaml:5:36: rule 'payments-api': `ports` is empty; leave it out to \
             match every port"
    );
    assert_eq!(
        case("80"),
        "policies/payments.yaml:5:36: rule 'payments-api': invalid type: integer `80`, expected \
             `ports`: a list of ports (443) or ranges (\"9000-9100\")"
    );
}

#[test]
fn invalid_protocol() {
    assert_eq!(
            err(&one_rule("    connect: { to: 1.2.3.4, protocol: icmp }\n    decision: allow\n")),
            "policies/payments.yaml:5:39: rule 'payments-api': unknown variant `icmp`, expected one of \
             `any`, `tcp`, `udp`"
        );
}

#[test]
fn invalid_paths() {
    let exec = |body: &str| {
        err(&one_rule(&format!(
            "    exec: {body}\n    decision: allow\n"
        )))
    };
    assert_eq!(
            exec("{ prefix: /usr/bin }"),
            "policies/payments.yaml:5:21: rule 'payments-api': prefix '/usr/bin' must end with '/', so \
             that it names a directory and not every name starting with those characters; use \
             `path:` for one file"
        );
    assert_eq!(
        exec("{ path: /usr/bin/ }"),
        "policies/payments.yaml:5:19: rule 'payments-api': path '/usr/bin/' ends with '/'; use \
             `prefix:` to match everything under a directory"
    );
    assert_eq!(
        exec("{ path: /usr/../bin/sh }"),
        "policies/payments.yaml:5:19: rule 'payments-api': path '/usr/../bin/sh' is not \
             normalised: it has a '..' component"
    );
    assert_eq!(
        exec("{ path: /usr/./bin/sh }"),
        "policies/payments.yaml:5:19: rule 'payments-api': path '/usr/./bin/sh' is not \
             normalised: it has a '.' component"
    );
    assert_eq!(
        exec("{ path: /usr//bin/sh }"),
        "policies/payments.yaml:5:19: rule 'payments-api': path '/usr//bin/sh' is not \
             normalised: it contains '//'"
    );
    assert_eq!(
        exec("{ path: bin/sh }"),
        "policies/payments.yaml:5:19: rule 'payments-api': path 'bin/sh' is not absolute; it \
             must start with '/'"
    );
    let long = format!("/{}", "a".repeat(251));
    assert_eq!(
        exec(&format!("{{ path: {long} }}")),
        format!(
            "policies/payments.yaml:5:19: rule 'payments-api': path '{long}' is 252 bytes; the \
                 kernel compares at most 251 for a path, 252 for a prefix"
        )
    );
    let fits = format!("/{}", "a".repeat(250));
    assert!(parse_policy(
        FILE,
        &one_rule(&format!(
            "    exec: {{ path: {fits} }}\n    decision: allow\n"
        ))
    )
    .is_ok());
    assert_eq!(
        exec("{}"),
        "policies/payments.yaml:5:11: rule 'payments-api': `exec` needs `path` (one file) or \
             `prefix` (a directory, ending in '/')"
    );
    assert_eq!(
        exec("{ path: /bin/sh, prefix: /bin/ }"),
        "policies/payments.yaml:5:11: rule 'payments-api': `exec` has both `path` and `prefix`; \
             a rule names one or the other"
    );
}

#[test]
fn invalid_file_access() {
    let file = |body: &str| {
        err(&one_rule(&format!(
            "    file: {body}\n    decision: allow\n"
        )))
    };
    assert_eq!(
        file("{ path: /etc/x, access: [] }"),
        "policies/payments.yaml:5:35: rule 'payments-api': `access` is empty; list `read`, \
             `write` or both"
    );
    assert_eq!(
        file("{ path: /etc/x, access: [exec] }"),
        "policies/payments.yaml:5:36: rule 'payments-api': unknown variant `exec`, expected \
             `read` or `write`"
    );
    assert_eq!(
        file("{ prefix: /etc/x/ }"),
        "policies/payments.yaml:5:11: rule 'payments-api': missing field `access`"
    );
}

#[test]
fn rule_needs_exactly_one_selector() {
    assert_eq!(
        err(&one_rule("    decision: allow\n")),
        "policies/payments.yaml:4:5: rule 'payments-api': a rule needs exactly one of `connect`, \
             `exec`, `file`, `socket`; this one has none"
    );
    assert_eq!(
        err(&one_rule(
            "    connect: { to: 1.2.3.4 }\n    exec: { path: /bin/sh }\n    decision: allow\n"
        )),
        "policies/payments.yaml:4:5: rule 'payments-api': a rule needs exactly one of `connect`, \
             `exec`, `file`, `socket`; this one has `connect` and `exec`"
    );
    assert_eq!(
        err("version: 1\nrules:\n  - not-a-mapping\n"),
        "policies/payments.yaml:3:5: rules[0]: invalid type: string \"not-a-mapping\", expected a \
             rule: a mapping with `id`, `decision` and one of `connect`, `exec`, `file`, `socket`"
    );
}

#[test]
fn duplicate_rule_id() {
    let yaml = "version: 1
rules:
  - id: shell
    exec: { path: /bin/sh }
    decision: allow

  # a comment between rules
  - id: list
    exec: { path: /bin/ls }
    decision: allow
  -   decision: deny
      exec:
        path: /bin/bash
      id:   shell
";
    assert_eq!(
        err(yaml),
        "policies/payments.yaml:14:13: rule 'shell': duplicate rule id 'shell'; rules[0] (line 3) \
             already uses it"
    );
    // Flow style: both on line 2.
    let yaml = "version: 1\nrules: [{id: a, exec: {path: /a}, decision: deny}, {id: a, exec: {path: /b}, decision: deny}]\n";
    assert_eq!(
        err(yaml),
        "policies/payments.yaml:2:57: rule 'a': duplicate rule id 'a'; rules[0] (line 2) already \
             uses it"
    );
}

#[test]
fn empty_file() {
    let expected = "policies/payments.yaml: the policy file is empty; it needs at least `version: 1` and `rules:`";
    assert_eq!(err(""), expected);
    assert_eq!(err("\n  \n# only a comment\n"), expected);
}

#[test]
fn yaml_syntax_error() {
    let yaml = "version: 1\nrules:\n  - id: a\n   exec: { path: /bin/sh }\n";
    assert_eq!(
        err(yaml),
        "policies/payments.yaml:4:4: invalid YAML: did not find expected '-' indicator, while \
             parsing a block collection at line 3 column 3"
    );
    let yaml = "version: 1\nrules:\n  - id: a\n    exec: { path: /bin/sh\n    decision: allow\n";
    assert_eq!(
        err(yaml),
        "policies/payments.yaml:5:13: invalid YAML: did not find expected ',' or '}', while \
             parsing a flow mapping at line 4 column 11"
    );
    assert_eq!(
        err("version: 1\nversion: 1\nrules: []\n"),
        "policies/payments.yaml:1:1: invalid YAML: duplicate entry with key \"version\""
    );
}

#[test]
fn rules_not_a_list() {
    assert_eq!(
            err("version: 1\nrules:\n  id: a\n"),
            "policies/payments.yaml:3:3: invalid type: map, expected `rules`: a list of rules (`- id: ...`)"
        );
    assert_eq!(
        err("version: 1\n"),
        "policies/payments.yaml:1:1: missing field `rules`"
    );
    assert_eq!(
        err("- version: 1\n"),
        "policies/payments.yaml:1:1: invalid type: sequence, expected a policy: a mapping with \
             `version`, `rules` and optional settings"
    );
}

#[test]
fn version_must_be_1() {
    assert_eq!(
        err("version: 2\nrules: []\n"),
        "policies/payments.yaml:1:10: unsupported policy version 2; this Warden reads version 1"
    );
    assert_eq!(
        err("rules: []\n"),
        "policies/payments.yaml:1:1: missing field `version`"
    );
    assert_eq!(
            err("version: one\nrules: []\n"),
            "policies/payments.yaml:1:10: invalid type: string \"one\", expected the policy format version, 1"
        );
}

#[test]
fn settings() {
    assert_eq!(
            err("version: 1\nhold_timeout: 25h\nrules: []\n"),
            "policies/payments.yaml:2:15: hold_timeout '25h' is out of range; it must be between 1s and 24h"
        );
    assert_eq!(
            err("version: 1\nhold_timeout: 0s\nrules: []\n"),
            "policies/payments.yaml:2:15: hold_timeout '0s' is out of range; it must be between 1s and 24h"
        );
    assert_eq!(
        err("version: 1\nhold_timeout: 10\nrules: []\n"),
        "policies/payments.yaml:2:15: invalid hold_timeout '10': write a whole number followed by \
             s, m or h, such as 15m"
    );
    assert_eq!(
        err("version: 1\non_evidence_loss: maybe\nrules: []\n"),
        "policies/payments.yaml:2:19: unknown variant `maybe`, expected `deny` or `allow`"
    );
    assert_eq!(
        err("version: 1\napprovers:\n  users: [alice, \"bob smith\"]\nrules: []\n"),
        "policies/payments.yaml:3:18: invalid approver name 'bob smith': names are 1 to 128 \
             characters from A-Z, a-z, 0-9, '.', '_', '-', '@', not starting with '-'"
    );
    let p = parse_policy(FILE, "version: 1\nrules: []\n").unwrap();
    assert_eq!(p.hold_timeout, DEFAULT_HOLD_TIMEOUT);
    assert_eq!(p.on_evidence_loss, EvidenceLoss::Deny);
    assert_eq!(p.approvers, Approvers::default());
    let p = parse_policy(
        FILE,
        "version: 1\nhold_timeout: 24h\non_evidence_loss: allow\nrules: []\n",
    )
    .unwrap();
    assert_eq!(p.hold_timeout, Duration::from_secs(86400));
    assert_eq!(p.on_evidence_loss, EvidenceLoss::Allow);
}

#[test]
fn evidence_setting_parses_defaults_and_keeps_old_snapshots() {
    use crate::policy::AllowedEvidence;
    let plain = parse_policy(FILE, "version: 1\nrules: []\n").unwrap();
    assert_eq!(plain.evidence.allowed, AllowedEvidence::FirstThenCount);
    let explicit = parse_policy(
        FILE,
        "version: 1\nevidence: { allowed: first-then-count }\nrules: []\n",
    )
    .unwrap();
    // The default is left out of the canonical JSON: no snapshot changes.
    assert_eq!(plain.snapshot(), explicit.snapshot());
    assert!(!plain.canonical_json().contains("\"evidence\""));
    let each = parse_policy(FILE, "version: 1\nevidence: { allowed: each }\nrules: []\n").unwrap();
    assert_eq!(each.evidence.allowed, AllowedEvidence::Each);
    assert_ne!(each.snapshot(), plain.snapshot());
    let bad = err("version: 1\nevidence: { allowed: some }\nrules: []\n");
    assert!(bad.contains("`first-then-count` or `each`"), "{bad}");
    let bad = err("version: 1\nevidence: { alowed: each }\nrules: []\n");
    assert!(bad.contains("unknown field `alowed`"), "{bad}");
}

#[test]
fn denied_evidence_defaults_to_counting_and_keeps_old_snapshots() {
    use crate::policy::DeniedEvidence;
    let plain = parse_policy(FILE, "version: 1\nrules: []\n").unwrap();
    assert_eq!(plain.evidence.denied, DeniedEvidence::FirstThenCount);
    let explicit = parse_policy(
        FILE,
        "version: 1\nevidence: { denied: first-then-count }\nrules: []\n",
    )
    .unwrap();
    assert_eq!(plain.snapshot(), explicit.snapshot());
    let each = parse_policy(FILE, "version: 1\nevidence: { denied: each }\nrules: []\n").unwrap();
    assert_eq!(each.evidence.denied, DeniedEvidence::Each);
    assert_ne!(each.snapshot(), plain.snapshot());
    let bad = err("version: 1\nevidence: { denied: never }\nrules: []\n");
    assert!(bad.contains("`first-then-count` or `each`"), "{bad}");
}

#[test]
fn not_utf8_and_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, b"version: 1\nrules:\n  - id: caf\xe9\n").unwrap();
    let e = load_policy_file(&path).unwrap_err();
    assert!(matches!(e.kind, PolicyErrorKind::NotUtf8));
    assert_eq!(
        e.to_string(),
        format!(
            "{}:3:12: the policy file is not valid UTF-8",
            path.display()
        )
    );

    let missing = dir.path().join("missing.yaml");
    let e = load_policy_file(&missing).unwrap_err();
    assert!(
        matches!(&e.kind, PolicyErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound)
    );
    assert!(e.to_string().starts_with(&format!(
        "{}: cannot read the policy file: ",
        missing.display()
    )));

    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "version: 1\nrules: []\n").unwrap();
    assert_eq!(
        load_policy_file(&good).unwrap().source_name(),
        good.display().to_string()
    );
}

#[test]
fn locate_finds_rule_items() {
    let text = "# header\nversion: 1\nrules:\n\n  - id: a # x\n    exec: { path: /a }\n    decision: allow\n  - &r\n    id: b\n    exec: { path: /b }\n    decision: allow\n";
    let at = |path: &[Step<'_>]| locate(text, path).map(|l| (l.line, l.column));
    assert_eq!(at(&[Step::Key("rules"), Step::Index(0)]), Some((5, 5)));
    // An anchored item starts at its anchor.
    assert_eq!(at(&[Step::Key("rules"), Step::Index(1)]), Some((8, 5)));
    assert_eq!(
        at(&[Step::Key("rules"), Step::Index(1), Step::Key("id")]),
        Some((9, 9))
    );
    assert_eq!(at(&[Step::Key("rules"), Step::Index(2)]), None);
    assert_eq!(at(&[Step::Key("nope")]), None);
    assert_eq!(at(&[Step::Key("version"), Step::Index(0)]), None);
}

#[test]
fn parses_the_documented_example() {
    let yaml = r#"version: 1
description: "Payments agent: may call the payments API only"
approvers:
  users: [alice]
  groups: [finance-leads]
hold_timeout: 15m
on_evidence_loss: deny
rules:
  - id: payments-api
    connect: { to: 127.0.0.1/32, ports: [8443, "9000-9100"], protocol: tcp }
    decision: allow
  - id: no-metadata
    connect: { to: 169.254.169.254 }
    decision: deny
  - id: run-curl
    exec: { path: /usr/bin/curl }
    decision: allow
  - id: read-config
    file: { prefix: /etc/payments/, access: [read] }
    decision: allow
"#;
    let p = parse_policy(FILE, yaml).unwrap();
    assert_eq!(
        p.rule_ids(),
        ["payments-api", "no-metadata", "run-curl", "read-config"]
    );
    assert_eq!(p.hold_timeout, Duration::from_secs(900));
    assert_eq!(p.approvers.users, ["alice"]);
    assert_eq!(
        p.rules[0].selector,
        Selector::Connect {
            cidr: "127.0.0.1/32".parse().unwrap(),
            ports: vec![(8443, 8443), (9000, 9100)],
            protocol: Protocol::Tcp
        }
    );
    assert_eq!(p.rules[1].decision, Decision::Deny);
    assert_eq!(
        p.rules[1].selector,
        Selector::Connect {
            cidr: "169.254.169.254/32".parse().unwrap(),
            ports: vec![],
            protocol: Protocol::Any
        }
    );
    assert_eq!(
        p.rules[2].selector,
        Selector::Exec {
            target: PathMatch::Exact("/usr/bin/curl".into())
        }
    );
    assert_eq!(
        p.rules[3].selector,
        Selector::File {
            target: PathMatch::Prefix("/etc/payments/".into()),
            read: true,
            write: false
        }
    );
    let needs = super::super::model::policy_needs(&p);
    assert_eq!(
        needs,
        super::super::model::Needs {
            network: true,
            exec: true,
            file: true,
            hold: false
        }
    );
}

const BASE: &str = r#"version: 1
description: Payments agent
approvers:
  users: [alice, bob]
  groups: [finance-leads]
hold_timeout: 15m
rules:
  - id: payments-api
    connect: { to: 127.0.0.1/32, ports: [8443, "9000-9100"], protocol: tcp }
    decision: allow
  - id: no-metadata
    connect: { to: 169.254.169.254 }
    decision: deny
  - id: run-curl
    exec: { path: /usr/bin/curl }
    decision: hold
  - id: read-config
    file: { prefix: /etc/payments/, access: [read] }
    decision: allow
"#;

fn snapshot(yaml: &str) -> String {
    parse_policy(FILE, yaml)
        .unwrap_or_else(|e| panic!("{e}"))
        .snapshot()
}

#[test]
fn snapshot_ignores_spelling() {
    let base = snapshot(BASE);
    assert_eq!(base.len(), 64);
    assert!(base.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    // Comments, whitespace, key order, block vs flow style, quoting and
    // equivalent values.
    let respelled = r#"# Payments
version: 1
rules:
- decision: allow
  id: payments-api
  connect:
    protocol: tcp
    ports: ["9000-9100", "8443-8443"]
    to: "127.0.0.1"
- {id: no-metadata, decision: deny, connect: {to: 169.254.169.254/32, protocol: any}}
- id: 'run-curl'
  exec:
    path: "/usr/bin/curl"
  decision: hold
- id: read-config
  decision: allow
  file: { access: [read, read], prefix: /etc/payments/ }
hold_timeout: 900s
on_evidence_loss: deny
approvers: { groups: [finance-leads], users: [bob, alice, alice] }
description: "Payments agent"
"#;
    assert_eq!(snapshot(respelled), base);
    // Adjacent and overlapping ranges merge.
    let merged = BASE.replace(
        r#"[8443, "9000-9100"]"#,
        r#"["9000-9050", 8443, "9051-9100", "9010-9020"]"#,
    );
    assert_eq!(snapshot(&merged), base);
    assert_eq!(
        snapshot(&BASE.replace("15m", "\"0h\"").replace("\"0h\"", "15m")),
        base
    );
}

#[test]
fn snapshot_changes_with_meaning() {
    let base = snapshot(BASE);
    let changes = [
        ("8443, ", "8444, "),
        ("protocol: tcp", "protocol: udp"),
        ("127.0.0.1/32", "127.0.0.0/8"),
        ("decision: deny", "decision: allow"),
        ("decision: hold", "decision: deny"),
        ("id: run-curl", "id: run-curl2"),
        ("/usr/bin/curl", "/usr/bin/wget"),
        ("access: [read]", "access: [read, write]"),
        ("prefix: /etc/payments/", "path: /etc/payments"),
        ("hold_timeout: 15m", "hold_timeout: 16m"),
        ("users: [alice, bob]", "users: [alice]"),
        ("groups: [finance-leads]", "groups: []"),
        ("description: Payments agent", "description: Payments bot"),
        (
            "hold_timeout: 15m",
            "hold_timeout: 15m\non_evidence_loss: allow",
        ),
        (
            "    connect: { to: 169.254.169.254 }",
            "    connect: { to: 169.254.169.254, ports: [80] }",
        ),
    ];
    for (from, to) in changes {
        assert!(BASE.contains(from), "{from}");
        assert_ne!(
            snapshot(&BASE.replacen(from, to, 1)),
            base,
            "{from} -> {to}"
        );
    }
    // Rule order is meaningful (first match among rules of one CIDR).
    let swapped = BASE.replace(
            "  - id: payments-api\n    connect: { to: 127.0.0.1/32, ports: [8443, \"9000-9100\"], protocol: tcp }\n    decision: allow\n  - id: no-metadata\n    connect: { to: 169.254.169.254 }\n    decision: deny\n",
            "  - id: no-metadata\n    connect: { to: 169.254.169.254 }\n    decision: deny\n  - id: payments-api\n    connect: { to: 127.0.0.1/32, ports: [8443, \"9000-9100\"], protocol: tcp }\n    decision: allow\n",
        );
    assert_ne!(swapped, BASE);
    assert_ne!(snapshot(&swapped), base);
}

#[test]
fn snapshot_is_sha256_of_domain_and_canonical_json() {
    let p = parse_policy(
        FILE,
        "version: 1\nrules:\n  - id: a\n    exec: { prefix: /bin/ }\n    decision: allow\n",
    )
    .unwrap();
    let json = p.canonical_json();
    assert_eq!(
        json,
        r#"{"approvers":{"groups":[],"users":[]},"description":null,"hold_timeout_secs":900,"on_evidence_loss":"deny","rules":[{"decision":"allow","exec":{"prefix":"/bin/"},"id":"a"}],"version":1}"#
    );
    let mut h = Sha256::new();
    h.update(b"warden/policy/v1\0");
    h.update(json.as_bytes());
    assert_eq!(p.snapshot(), hex::encode(h.finalize()));
}

#[test]
fn record_mode_is_a_setting_in_the_snapshot_only_when_set() {
    let p = parse_policy(FILE, "version: 1\nrules: []\n").unwrap();
    assert_eq!(p.mode, Mode::Enforce);
    // Enforce is left out of the canonical form: older snapshots stay.
    assert!(!p.canonical_json().contains("mode"));
    assert_eq!(
        snapshot("version: 1\nrules: []\n"),
        snapshot("version: 1\nmode: enforce\nrules: []\n")
    );
    let r = parse_policy(FILE, "version: 1\nmode: record\nrules: []\n").unwrap();
    assert_eq!(r.mode, Mode::Record);
    assert!(r.canonical_json().contains(r#""mode":"record""#));
    assert_ne!(r.snapshot(), p.snapshot());
    assert_eq!(
        err("version: 1\nmode: shadow\nrules: []\n"),
        "policies/payments.yaml:2:7: unknown variant `shadow`, expected `enforce` or `record`"
    );
}

#[test]
fn included_profiles_follow_the_own_rules_and_are_in_the_snapshot() {
    let own = "version: 1\ninclude: [loader, git]\nrules:\n  - id: mine\n    \
               file: { path: /srv/x, access: [read] }\n    decision: allow\n";
    let p = parse_policy(FILE, own).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.rules[0].id, "mine");
    assert_eq!(p.rules[1].id, "loader.ld-cache");
    assert!(p.rules.iter().any(|r| r.id == "git.helpers"));
    // The included rules are part of the canonical form.
    assert!(p.canonical_json().contains("/etc/ld.so.cache"));
    let without = parse_policy(FILE, &own.replace("loader, git", "git")).unwrap();
    assert_ne!(p.snapshot(), without.snapshot());
    // Every shipped profile parses on its own.
    for name in profiles::names() {
        let (file, text) = profiles::profile(name).unwrap();
        parse_policy(file, text).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        err("version: 1\ninclude: [loader, pyhton]\nrules: []\n"),
        "policies/payments.yaml:2:19: unknown profile 'pyhton'; the shipped profiles are \
         loader, locale, python, git, rust-toolchain"
    );
    assert_eq!(
        err("version: 1\ninclude: [git, git]\nrules: []\n"),
        "policies/payments.yaml:2:16: profile 'git' is included twice"
    );
    let clash = "version: 1\ninclude: [loader]\nrules:\n  - id: loader.ld-cache\n    \
                 file: { path: /x, access: [read] }\n    decision: deny\n";
    assert!(
        err(clash)
            .starts_with("policies/payments.yaml:4:9: rule 'loader.ld-cache': duplicate rule id"),
        "{}",
        err(clash)
    );
}

#[test]
fn socket_rules_name_raw_and_cannot_hold() {
    let p = parse_policy(
        FILE,
        "version: 1\nrules:\n  - id: ping\n    socket: { kind: raw }\n    decision: allow\n",
    )
    .unwrap();
    assert_eq!(
        p.rules[0].selector,
        crate::policy::Selector::Socket {
            kind: crate::policy::SocketKind::Raw
        }
    );
    assert!(p.canonical_json().contains(r#""socket":{"kind":"raw"}"#));
    let held = parse_policy(
        FILE,
        "version: 1\nrules:\n  - id: ping\n    socket: { kind: raw }\n    decision: hold\n",
    )
    .unwrap_err()
    .to_string();
    assert!(held.contains("socket creation cannot be held"), "{held}");
}

/// `socket: { kind: packet }` names `AF_PACKET`/`SOCK_PACKET` sockets; a
/// kind that does not exist is refused with the file, line and rule; a
/// packet rule cannot hold either.
#[test]
fn socket_rules_name_packet_and_bad_kinds_are_refused() {
    let p = parse_policy(
        FILE,
        "version: 1\nrules:\n  - id: sniff\n    socket: { kind: packet }\n    decision: allow\n",
    )
    .unwrap();
    assert_eq!(
        p.rules[0].selector,
        crate::policy::Selector::Socket {
            kind: crate::policy::SocketKind::Packet
        }
    );
    assert!(p.canonical_json().contains(r#""socket":{"kind":"packet"}"#));
    let bad = parse_policy(
        FILE,
        "version: 1\nrules:\n  - id: ok\n    socket: { kind: raw }\n    decision: allow\n  \
         - id: sniff\n    socket: { kind: ether }\n    decision: allow\n",
    )
    .unwrap_err()
    .to_string();
    assert!(bad.contains(FILE), "{bad}");
    assert!(bad.contains(":7:"), "line 7: {bad}");
    assert!(bad.contains("sniff"), "{bad}");
    assert!(bad.contains("`raw` or `packet`"), "{bad}");
    let held = parse_policy(
        FILE,
        "version: 1\nrules:\n  - id: sniff\n    socket: { kind: packet }\n    decision: hold\n",
    )
    .unwrap_err()
    .to_string();
    assert!(held.contains("socket creation cannot be held"), "{held}");
}

/// 100,000 levels stalled the daemon 31 s; the bound refuses them before
/// the YAML parser runs, naming the file and line.
#[test]
fn deep_nesting_and_huge_input_are_refused_fast() {
    let start = std::time::Instant::now();
    for text in [
        format!("version: 1\nrules: []\nx: {}", "[".repeat(200_000)),
        format!("version: 1\nrules:\n{}x\n", "- ".repeat(200_000)),
        format!("version: 1\nrules: []\nx: {}1", "{a: ".repeat(200_000)),
    ] {
        let e = parse_policy(FILE, &text).unwrap_err().to_string();
        assert!(
            e.starts_with("policies/payments.yaml:") && e.contains("nested deeper than 32"),
            "{e}"
        );
    }
    let huge = format!(
        "version: 1\nrules: []\ndescription: \"{}\"\n",
        "a".repeat(5 << 20)
    );
    let e = parse_policy(FILE, &huge).unwrap_err().to_string();
    assert!(e.contains("larger than 4194304 bytes"), "{e}");
    // Linear scans: far below the 31 s the parser took (debug build).
    assert!(
        start.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn monitor_section_parses_defaults_and_keeps_old_snapshots() {
    use crate::policy::{Monitor, OnAlert};
    let plain = parse_policy(FILE, "version: 1\nrules: []\n").unwrap();
    assert_eq!(plain.monitor, Monitor::default());
    assert!(!plain.canonical_json().contains("\"monitor\""));
    let same = parse_policy(
        FILE,
        "version: 1\nmonitor: { window: 10s, k: 1.0 }\nrules: []\n",
    )
    .unwrap();
    assert_eq!(same.snapshot(), plain.snapshot());
    let set = parse_policy(
        FILE,
        "version: 1\nmonitor:\n  window: 5s\n  settle: 0s\n  warmup: 3\n  alpha: 0.2\n  k: 0.5\n  \
         h: 4\n  min_rate: 2\n  new_behaviour_days: 7\n  on_alert: kill\nrules: []\n",
    )
    .unwrap();
    let m = &set.monitor;
    assert_eq!(m.window, std::time::Duration::from_secs(5));
    assert_eq!(m.settle, std::time::Duration::ZERO);
    assert_eq!(
        (m.warmup, m.alpha, m.k, m.h, m.min_rate),
        (3, 0.2, 0.5, 4.0, 2.0)
    );
    assert_eq!((m.new_behaviour_days, m.on_alert), (7, OnAlert::Kill));
    assert_ne!(set.snapshot(), plain.snapshot());
    // Floats are decimal strings in the canonical JSON.
    assert!(
        set.canonical_json().contains("\"alpha\":\"0.2\""),
        "{}",
        set.canonical_json()
    );
}

#[test]
fn monitor_section_errors_name_file_and_line() {
    let bad = err("version: 1\nmonitor:\n  on_alert: explode\nrules: []\n");
    assert!(bad.starts_with("policies/payments.yaml:3:"), "{bad}");
    assert!(
        bad.contains("expected one of `record`, `hold`, `kill`"),
        "{bad}"
    );
    let bad = err("version: 1\nmonitor:\n  windw: 10s\nrules: []\n");
    assert!(bad.starts_with("policies/payments.yaml:3:"), "{bad}");
    assert!(bad.contains("unknown field `windw`"), "{bad}");
    let bad = err("version: 1\nmonitor:\n  alpha: 1.5\nrules: []\n");
    assert!(bad.starts_with("policies/payments.yaml:"), "{bad}");
    assert!(bad.contains("alpha must be above 0 and at most 1"), "{bad}");
    let bad = err("version: 1\nmonitor:\n  window: 0s\nrules: []\n");
    assert!(bad.contains("invalid window '0s'"), "{bad}");
    let bad = err("version: 1\nmonitor:\n  warmup: 0\nrules: []\n");
    assert!(bad.contains("warmup must be 1 to 1000"), "{bad}");
}

#[test]
fn host_rules_parse_and_hash_by_their_name() {
    let yaml = "version: 1\nrules:\n  - id: openai\n    connect: { host: API.OpenAI.com, ports: [443], protocol: tcp }\n    decision: allow\n  - id: gh\n    connect: { host: \"*.github.com\" }\n    decision: deny\n";
    let p = parse_policy(FILE, yaml).unwrap();
    assert!(p.has_host_rules());
    assert_eq!(
        p.rules[0].selector,
        Selector::ConnectHost {
            host: crate::policy::host::HostPattern::Exact("api.openai.com".into()),
            ports: vec![(443, 443)],
            protocol: Protocol::Tcp,
        }
    );
    assert!(p.canonical_json().contains(
        r#"{"connect":{"host":"api.openai.com","ports":[[443,443]],"protocol":"tcp"},"decision":"allow","id":"openai"}"#
    ));
    assert_eq!(p.host_rule_for("x.github.com"), Some(1));
    assert_eq!(p.host_rule_for("api.openai.com."), Some(0));
    assert_eq!(p.host_rule_for("github.com"), None);
}

#[test]
fn host_errors_name_file_line_and_rule() {
    let yaml = one_rule("    connect: { host: a.*.example }\n    decision: allow\n");
    let e = err(&yaml);
    assert!(
        e.starts_with("policies/payments.yaml:5:")
            && e.contains("rule 'payments-api': host 'a.*.example'"),
        "{e}"
    );
    let yaml = one_rule("    connect: { host: a.example, to: 10.0.0.0/8 }\n    decision: allow\n");
    let e = err(&yaml);
    assert!(
        e.contains("rule 'payments-api'")
            && e.contains("`to` (addresses) or `host` (a name), not both"),
        "{e}"
    );
    let yaml = one_rule("    connect: { ports: [443] }\n    decision: allow\n");
    assert!(err(&yaml).contains("needs `to` (addresses) or `host`"));
}

#[test]
fn a_shadow_candidate_is_parsed_inline_or_from_a_file_and_changes_the_snapshot() {
    let base = "version: 1\nrules:\n  - id: web\n    connect: { to: 127.0.0.1, ports: [80] }\n    decision: allow\n";
    let inline = format!(
        "{base}shadow:\n  version: 1\n  rules:\n    - id: no-web\n      connect: {{ to: 127.0.0.1, ports: [80] }}\n      decision: deny\n"
    );
    let p = parse_policy(FILE, &inline).unwrap();
    let c = p.shadow.as_deref().unwrap();
    assert_eq!(c.rule_ids(), vec!["no-web".to_string()]);
    let plain = parse_policy(FILE, base).unwrap();
    assert!(plain.shadow.is_none());
    // The candidate is part of what the policy means: its snapshot is in
    // the canonical form, so changing only the candidate changes the policy.
    assert_ne!(p.snapshot(), plain.snapshot());
    assert!(p.canonical_json().contains(&c.snapshot()));
    assert!(!plain.canonical_json().contains("shadow"));

    // From a file beside the policy: the same candidate, the same snapshot.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("candidate.yaml"),
        "version: 1\nrules:\n  - id: no-web\n    connect: { to: 127.0.0.1, ports: [80] }\n    decision: deny\n",
    )
    .unwrap();
    let name = dir.path().join("p.yaml").display().to_string();
    let from_file = parse_policy(&name, &format!("{base}shadow: candidate.yaml\n")).unwrap();
    assert_eq!(from_file.snapshot(), p.snapshot());

    // Refused, saying why: a missing file, a bad candidate (its own
    // error), a candidate with a shadow, something that is neither.
    let e = parse_policy(&name, &format!("{base}shadow: missing.yaml\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.yaml"), "{e}");
    let e = err(&format!("{base}shadow:\n  version: 1\n  rules: 3\n"));
    assert!(e.contains("(shadow)"), "{e}");
    let e = err(&format!(
        "{base}shadow:\n  version: 1\n  rules: []\n  shadow:\n    version: 1\n    rules: []\n"
    ));
    assert!(e.contains("has a `shadow:` of its own"), "{e}");
    let e = err(&format!("{base}shadow: [1]\n"));
    assert!(e.contains("a candidate policy"), "{e}");
}
