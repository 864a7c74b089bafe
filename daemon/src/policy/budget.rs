//! Budgets: `budgets:` in a policy, validated (`parse`), and compiled into
//! the `BudgetSet` the kernel enforces (`compile`). Each budget counts the
//! agent's allowed actions of one class (optionally only those decided by
//! named rules) over a fixed window; the kernel refuses, holds or kills
//! past the limit (see `ebpf/programs/src/judge/budget.rs`).

use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use warden_common::{
    budget_class, budget_then, BudgetRule, BudgetSet, MAX_BUDGETS, MAX_BUDGET_MATCH,
};

use super::model::{Policy, Selector};
use super::parse::{Location, PolicyError, PolicyErrorKind, Step};

/// Shortest and longest `per`.
const MIN_PER: Duration = Duration::from_secs(1);
const MAX_PER: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Which actions a budget counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "lowercase",
    expecting = "`connect`, `exec`, `file`, `dns` or `any`"
)]
pub enum BudgetCount {
    Connect,
    Exec,
    File,
    /// Every class the policy governs (not `dns`).
    Any,
    /// Questions the agent's DNS proxy allows (counted by the daemon).
    Dns,
    /// `bytes: egress`: bytes the agent sends (never written as `count:`).
    #[serde(rename = "bytes-egress", skip_deserializing)]
    EgressBytes,
}

impl BudgetCount {
    /// The word the policy uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Exec => "exec",
            Self::File => "file",
            Self::Any => "any",
            Self::Dns => "dns",
            Self::EgressBytes => "bytes egress",
        }
    }
}

impl BudgetThen {
    /// The word the policy uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hold => "hold",
            Self::Deny => "deny",
            Self::Kill => "kill",
        }
    }
}

/// What happens to an action over the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "`hold`, `deny` or `kill`")]
pub enum BudgetThen {
    /// An ordinary hold: a human approves one more action, or it is
    /// rejected.
    Hold,
    Deny,
    /// Refused, and the process is killed.
    Kill,
}

/// One budget, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Budget {
    pub id: String,
    pub count: BudgetCount,
    /// Rule ids of `match: { rule: .. }` (empty: every action of `count`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    pub limit: u64,
    #[serde(rename = "per_secs", serialize_with = "serialize_secs")]
    pub per: Duration,
    pub then: BudgetThen,
}

fn serialize_secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// The YAML shape of a budget.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a budget: a mapping with `id`, `count` (or `bytes: egress`), `limit`, `per`, `then` and optional `match`"
)]
pub(in crate::policy) struct RawBudget {
    id: super::parse::RawId,
    count: Option<BudgetCount>,
    /// `bytes: egress` instead of `count:`.
    bytes: Option<BytesOf>,
    #[serde(rename = "match")]
    matching: Option<RawMatch>,
    limit: RawLimit,
    per: Per,
    then: BudgetThen,
}

/// What a byte budget counts: `egress` (bytes sent) is the one kind.
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "`egress`")]
enum BytesOf {
    Egress,
}

/// `limit:` as written: a number, or for byte budgets a size such as
/// `50MiB`.
#[derive(Deserialize)]
#[serde(untagged, expecting = "a whole number, or a size such as 50MiB")]
enum RawLimit {
    Number(u64),
    Text(String),
}

/// A size: a whole number with an optional unit `B`, `KiB`, `MiB`, `GiB`
/// (powers of 1024) or `kB`, `MB`, `GB` (powers of 1000).
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "match: a mapping with `rule` (a rule id or a list of them)"
)]
struct RawMatch {
    rule: OneOrMany,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "a rule id or a list of rule ids")]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `N` followed by `s`, `m`, `h` or `d`, between 1s and 7d.
struct Per(Duration);

impl<'de> Deserialize<'de> for Per {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Checked inside the visitor, so the error points at the value.
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Per;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as 30s, 1m, 1h or 1d")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Per, E> {
                parse_per(v).map(Per).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

fn parse_per(s: &str) -> Result<Duration, String> {
    let bad =
        || format!("invalid per '{s}': write a whole number followed by s, m, h or d, such as 1h");
    let secs = crate::clock::whole_secs(s, "smhd").ok_or_else(bad)?;
    match Duration::from_secs(secs) {
        d if (MIN_PER..=MAX_PER).contains(&d) => Ok(d),
        _ => Err(format!(
            "per '{s}' is out of range; it must be between 1s and 7d"
        )),
    }
}

/// Validates the raw budgets against the whole policy (rule ids exist,
/// budget ids unique, bounds), with errors at the offending budget.
pub(in crate::policy) fn check_budgets(
    raw: Vec<RawBudget>,
    rule_ids: &[String],
    host_rule_ids: &[String],
    name: &str,
    text: &str,
) -> Result<Vec<Budget>, PolicyError> {
    let at = |i: usize, key: Option<&'static str>| -> Option<Location> {
        let mut path = vec![Step::Key("budgets"), Step::Index(i)];
        if let Some(k) = key {
            path.push(Step::Key(k));
        }
        super::parse::locate_in(text, &path)
    };
    let err = |i: usize, key, id: &str, msg: String| {
        PolicyError::new(
            name,
            at(i, key),
            None,
            PolicyErrorKind::Budget(format!("budget '{id}': {msg}")),
        )
    };
    if raw.len() > MAX_BUDGETS {
        return Err(PolicyError::new(
            name,
            at(MAX_BUDGETS, None),
            None,
            PolicyErrorKind::Budget(format!(
                "a policy may have at most {MAX_BUDGETS} budgets; this one has {}",
                raw.len()
            )),
        ));
    }
    let mut out: Vec<Budget> = Vec::with_capacity(raw.len());
    for (i, b) in raw.into_iter().enumerate() {
        let id = b.id.0;
        if out.iter().any(|o| o.id == id) {
            return Err(err(i, Some("id"), &id, "budget id used twice".into()));
        }
        let count = match (b.count, b.bytes) {
            (Some(c), None) => c,
            (None, Some(BytesOf::Egress)) => BudgetCount::EgressBytes,
            (Some(_), Some(_)) => {
                return Err(err(
                    i,
                    Some("bytes"),
                    &id,
                    "has both `count` and `bytes`; a budget counts actions or bytes, not both"
                        .into(),
                ))
            }
            (None, None) => {
                return Err(err(
                    i,
                    None,
                    &id,
                    "needs `count: connect|exec|file|dns|any` or `bytes: egress`".into(),
                ))
            }
        };
        let bytes = count == BudgetCount::EgressBytes;
        let limit = match &b.limit {
            RawLimit::Number(n) => Some(*n),
            RawLimit::Text(t) if bytes => parse_size(t),
            RawLimit::Text(_) => None,
        };
        let Some(limit) = limit else {
            let RawLimit::Text(t) = &b.limit else {
                unreachable!("a number always parses")
            };
            let want = if bytes {
                "a whole number of bytes, or a size such as 50MiB (B, KiB, MiB, GiB, kB, MB, GB)"
            } else {
                "a whole number of actions"
            };
            return Err(err(
                i,
                Some("limit"),
                &id,
                format!("invalid limit '{t}': write {want}"),
            ));
        };
        // The kernel keeps the count in 32 bits (`budget_use`).
        if limit == 0 || limit > u64::from(u32::MAX) {
            let unit = if bytes { " bytes (4GiB - 1)" } else { "" };
            return Err(err(
                i,
                Some("limit"),
                &id,
                format!(
                    "limit {limit} is out of range; it must be between 1 and {}{unit}",
                    u32::MAX
                ),
            ));
        }
        if bytes && b.then != BudgetThen::Deny {
            return Err(err(
                i,
                Some("then"),
                &id,
                format!(
                    "then: {} does not apply to bytes: packets over an egress byte budget are \
                     dropped; write then: deny",
                    b.then.name()
                ),
            ));
        }
        if bytes && b.matching.is_some() {
            return Err(err(
                i,
                Some("match"),
                &id,
                "match does not apply to bytes: an egress byte budget counts every packet \
                 the agent sends"
                    .into(),
            ));
        }
        let dns = count == BudgetCount::Dns;
        if dns && b.then != BudgetThen::Deny {
            return Err(err(
                i,
                Some("then"),
                &id,
                format!(
                    "then: {} does not apply to dns: the DNS proxy refuses questions over a dns \
                     budget; write then: deny",
                    b.then.name()
                ),
            ));
        }
        let rules = match b.matching.map(|m| m.rule) {
            None => Vec::new(),
            Some(OneOrMany::One(r)) => vec![r],
            Some(OneOrMany::Many(v)) => v,
        };
        if rules.len() > MAX_BUDGET_MATCH {
            return Err(err(
                i,
                Some("match"),
                &id,
                format!(
                    "match names {} rules; at most {MAX_BUDGET_MATCH}",
                    rules.len()
                ),
            ));
        }
        if let Some(unknown) = rules.iter().find(|r| !rule_ids.contains(r)) {
            return Err(err(
                i,
                Some("match"),
                &id,
                format!("match names rule '{unknown}', which the policy does not have"),
            ));
        }
        if dns {
            if let Some(r) = rules.iter().find(|r| !host_rule_ids.contains(r)) {
                return Err(err(
                    i,
                    Some("match"),
                    &id,
                    format!(
                        "match names rule '{r}', which is not a host rule (connect: {{ host: .. }}); \
                         a dns budget counts names the host rules decide"
                    ),
                ));
            }
        }
        out.push(Budget {
            id,
            count,
            rules,
            limit,
            per: b.per.0,
            then: b.then,
        });
    }
    Ok(out)
}

/// The classes a budget counts, as the kernel's `budget_class` bits:
/// `any` is every class the policy governs.
fn classes(policy: &Policy, count: BudgetCount) -> u32 {
    match count {
        BudgetCount::Connect => budget_class::CONNECT,
        BudgetCount::Exec => budget_class::EXEC,
        BudgetCount::File => budget_class::FILE,
        BudgetCount::EgressBytes => budget_class::EGRESS_BYTES,
        BudgetCount::Dns => budget_class::DNS,
        BudgetCount::Any => {
            let mut c = budget_class::CONNECT;
            for r in &policy.rules {
                match r.selector {
                    Selector::Exec { .. } => c |= budget_class::EXEC,
                    Selector::File { .. } => c |= budget_class::FILE,
                    _ => {}
                }
            }
            c
        }
    }
}

/// Compiles a policy's budgets. An `exec` or `file` budget needs the
/// policy to govern that class (exec or file rules): otherwise the kernel
/// never judges those actions, and the budget would count nothing.
pub fn compile_budgets(policy: &Policy) -> Result<BudgetSet, PolicyError> {
    let mut set = BudgetSet::default();
    for (i, b) in policy.budgets.iter().enumerate() {
        let governed = match b.count {
            BudgetCount::Exec => policy
                .rules
                .iter()
                .any(|r| matches!(r.selector, Selector::Exec { .. })),
            BudgetCount::File => policy
                .rules
                .iter()
                .any(|r| matches!(r.selector, Selector::File { .. })),
            BudgetCount::Connect | BudgetCount::Any | BudgetCount::EgressBytes => true,
            BudgetCount::Dns => policy.has_host_rules(),
        };
        if !governed {
            let (class, what) = match b.count {
                BudgetCount::Exec => ("exec", "exec rules"),
                BudgetCount::Dns => ("dns", "host rules (connect: { host: .. })"),
                _ => ("file", "file rules"),
            };
            let text = &policy.source.text;
            let at = super::parse::locate_in(
                text,
                &[Step::Key("budgets"), Step::Index(i), Step::Key("count")],
            );
            return Err(PolicyError::new(
                &policy.source.name,
                at,
                None,
                PolicyErrorKind::Budget(format!(
                    "budget '{}': count: {class} needs {what} in the policy (without \
                     them nothing decides those actions)",
                    b.id
                )),
            ));
        }
        let mut match_rules = [0u32; MAX_BUDGET_MATCH];
        for (j, id) in b.rules.iter().enumerate() {
            match_rules[j] = policy.rules.iter().position(|r| &r.id == id).unwrap_or(0) as u32;
        }
        let rule = BudgetRule {
            classes: classes(policy, b.count),
            then: match b.then {
                BudgetThen::Deny => budget_then::DENY,
                BudgetThen::Hold => budget_then::HOLD,
                BudgetThen::Kill => budget_then::KILL,
            },
            limit: b.limit,
            per_ns: b.per.as_nanos() as u64,
            match_count: b.rules.len() as u32,
            match_rules,
            _pad: 0,
        };
        set.classes |= rule.classes;
        set.budgets[i] = rule;
        set.count += 1;
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_policy;

    const BASE: &str =
        "version: 1\nrules:\n  - id: api\n    connect: { to: 127.0.0.1/32 }\n    decision: allow\n";

    fn parse(budgets: &str) -> Result<Policy, PolicyError> {
        parse_policy("p.yaml", &format!("{BASE}budgets:\n{budgets}"))
    }

    #[test]
    fn a_budget_parses_and_compiles() {
        let p = parse("  - id: calls\n    count: connect\n    match: { rule: api }\n    limit: 20\n    per: 1m\n    then: deny\n").unwrap();
        assert_eq!(p.budgets.len(), 1);
        assert_eq!(p.budgets[0].per, Duration::from_secs(60));
        let set = compile_budgets(&p).unwrap();
        assert_eq!(set.count, 1);
        assert_eq!(set.classes, budget_class::CONNECT);
        let b = set.budgets[0];
        assert_eq!(
            (b.limit, b.per_ns, b.then),
            (20, 60_000_000_000, budget_then::DENY)
        );
        assert_eq!((b.match_count, b.match_rules[0]), (1, 0));
    }

    #[test]
    fn a_policy_without_budgets_keeps_its_snapshot() {
        let with = parse_policy("p.yaml", BASE).unwrap();
        assert!(!with.canonical_json().contains("budgets"));
    }

    #[test]
    fn bad_budgets_are_refused_at_their_line() {
        let cases = [
            ("  - id: b\n    count: connect\n    limit: 0\n    per: 1m\n    then: deny\n", "limit 0 is out of range", 9),
            ("  - id: b\n    count: connect\n    limit: 5\n    per: 1w\n    then: deny\n", "invalid per '1w'", 10),
            ("  - id: b\n    count: names\n    limit: 5\n    per: 1m\n    then: deny\n", "unknown variant", 8),
            ("  - id: b\n    count: connect\n    match: { rule: nope }\n    limit: 5\n    per: 1m\n    then: deny\n", "rule 'nope'", 9),
            ("  - id: b\n    count: connect\n    limit: 5\n    per: 1m\n    then: deny\n  - id: b\n    count: exec\n    limit: 5\n    per: 1m\n    then: deny\n", "budget id used twice", 12),
            ("  - id: b\n    count: connect\n    limit: 5\n    per: 1m\n    then: explode\n", "unknown variant", 11),
        ];
        for (yaml, want, line) in cases {
            let e = parse(yaml).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(want), "{text}");
            assert!(text.contains(&format!("p.yaml:{line}:")), "{text}");
        }
    }

    #[test]
    fn an_egress_byte_budget_parses_sizes_and_compiles() {
        let p = parse(
            "  - id: out\n    bytes: egress\n    limit: 50MiB\n    per: 1h\n    then: deny\n",
        )
        .unwrap();
        assert_eq!(p.budgets[0].count, BudgetCount::EgressBytes);
        assert_eq!(p.budgets[0].limit, 50 << 20);
        let set = compile_budgets(&p).unwrap();
        assert_eq!(set.classes, budget_class::EGRESS_BYTES);
        assert_eq!(set.budgets[0].limit, 50 << 20);
        // A plain number is bytes; decimal units are powers of 1000.
        for (limit, bytes) in [
            ("4096", 4096),
            ("2kB", 2000),
            ("1GiB", 1 << 30),
            ("3 MB", 3_000_000),
        ] {
            let p = parse(&format!(
                "  - id: out\n    bytes: egress\n    limit: {limit}\n    per: 1h\n    then: deny\n"
            ))
            .unwrap();
            assert_eq!(p.budgets[0].limit, bytes, "{limit}");
        }
        // The snapshot names it.
        assert!(p.canonical_json().contains("bytes-egress"));
    }

    #[test]
    fn bad_egress_byte_budgets_are_refused_at_their_line() {
        let b = |rest: &str| format!("  - id: out\n    bytes: egress\n{rest}");
        let cases = [
            (
                b("    limit: 5TiB\n    per: 1h\n    then: deny\n"),
                "invalid limit '5TiB'",
                9,
            ),
            (
                b("    limit: 8GiB\n    per: 1h\n    then: deny\n"),
                "out of range",
                9,
            ),
            (
                b("    limit: 1MiB\n    per: 1h\n    then: hold\n"),
                "then: hold does not apply to bytes",
                11,
            ),
            (
                b("    limit: 1MiB\n    per: 1h\n    then: kill\n"),
                "then: kill does not apply to bytes",
                11,
            ),
            (
                b("    match: { rule: api }\n    limit: 1MiB\n    per: 1h\n    then: deny\n"),
                "match does not apply to bytes",
                9,
            ),
            (
                b("    count: connect\n    limit: 1MiB\n    per: 1h\n    then: deny\n"),
                "both `count` and `bytes`",
                8,
            ),
            (
                "  - id: out\n    bytes: ingress\n    limit: 1\n    per: 1h\n    then: deny\n"
                    .into(),
                "unknown variant",
                8,
            ),
            (
                "  - id: out\n    limit: 1\n    per: 1h\n    then: deny\n".into(),
                "needs `count",
                7,
            ),
            // Sizes are for bytes only.
            (
                "  - id: n\n    count: connect\n    limit: 1MiB\n    per: 1h\n    then: deny\n"
                    .into(),
                "invalid limit '1MiB'",
                9,
            ),
        ];
        for (yaml, want, line) in cases {
            let e = parse(&yaml).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(want), "{yaml}: {text}");
            assert!(text.contains(&format!("p.yaml:{line}:")), "{yaml}: {text}");
        }
    }

    const HOSTS: &str = "version: 1\nrules:\n  - id: api\n    connect: { to: 127.0.0.1/32 }\n    decision: allow\n  - id: web\n    connect: { host: \"*.example.com\" }\n    decision: allow\nbudgets:\n";

    #[test]
    fn a_dns_budget_parses_and_compiles_to_a_class_no_program_counts() {
        let p = parse_policy(
            "p.yaml",
            &format!("{HOSTS}  - id: names\n    count: dns\n    match: {{ rule: web }}\n    limit: 5\n    per: 1m\n    then: deny\n"),
        )
        .unwrap();
        assert_eq!(p.budgets[0].count, BudgetCount::Dns);
        assert_eq!(p.budgets[0].rules, vec!["web".to_string()]);
        let set = compile_budgets(&p).unwrap();
        assert_eq!(set.classes, budget_class::DNS);
        assert_eq!(set.budgets[0].classes & !budget_class::DNS, 0);
        assert!(p.canonical_json().contains("\"dns\""));
    }

    #[test]
    fn bad_dns_budgets_are_refused_at_their_line() {
        let b = |rest: &str| format!("{HOSTS}  - id: names\n    count: dns\n{rest}");
        let cases = [
            (
                b("    limit: 5\n    per: 1m\n    then: hold\n"),
                "then: hold does not apply to dns",
                14,
            ),
            (
                b("    limit: 5\n    per: 1m\n    then: kill\n"),
                "then: kill does not apply to dns",
                14,
            ),
            (
                b("    match: { rule: api }\n    limit: 5\n    per: 1m\n    then: deny\n"),
                "rule 'api', which is not a host rule",
                12,
            ),
            (
                b("    match: { rule: nope }\n    limit: 5\n    per: 1m\n    then: deny\n"),
                "rule 'nope', which the policy does not have",
                12,
            ),
        ];
        for (yaml, want, line) in cases {
            let e = parse_policy("p.yaml", &yaml).unwrap_err().to_string();
            assert!(e.contains(want), "{yaml}: {e}");
            assert!(e.contains(&format!("p.yaml:{line}:")), "{yaml}: {e}");
        }
        // Without host rules no name is decided: refused at compile.
        let p = parse("  - id: n\n    count: dns\n    limit: 5\n    per: 1m\n    then: deny\n")
            .unwrap();
        let e = compile_budgets(&p).unwrap_err().to_string();
        assert!(e.contains("count: dns needs host rules"), "{e}");
        assert!(e.contains("p.yaml:8:"), "{e}");
    }

    #[test]
    fn an_exec_budget_needs_exec_rules() {
        let p = parse("  - id: b\n    count: exec\n    limit: 5\n    per: 1m\n    then: deny\n")
            .unwrap();
        let e = compile_budgets(&p).unwrap_err().to_string();
        assert!(e.contains("needs exec rules"), "{e}");
        assert!(e.contains("p.yaml:8:"), "{e}");
    }
}
