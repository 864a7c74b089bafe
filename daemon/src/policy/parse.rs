//! YAML policy files to [`Policy`], with errors that point at a file, line,
//! column and rule.
//!
//! How locations are found:
//! - Values are checked inside the visitors of small newtypes (`Cidr`,
//!   ports, paths, durations, rule ids). serde_yaml attaches the position of
//!   the YAML node being visited to any error a visitor returns, so the error
//!   points at the offending value rather than at its parent mapping.
//! - serde_path_to_error records the path (`rules[3].connect.to`); the rule
//!   id is then read from a second, loose parse of the same text into a
//!   `serde_yaml::Value`.
//! - Checks that need the whole policy (duplicate ids, and the compiler's
//!   port rule limit) find the position of a node by walking the YAML again
//!   with a probe that fails on purpose at that node; serde_yaml's position of
//!   that failure is the node's line and column. This uses the real YAML
//!   parser, so anchors, flow style and comments cannot fool it.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::model::{
    normalise_ports, Approvers, Cidr, Decision, EvidenceLoss, PathMatch, Policy, Protocol, Rule,
    Selector, Source,
};

/// The only policy format version this code reads.
pub const POLICY_VERSION: u32 = 1;
/// Longest `path:` the kernel side can compare (bytes, without the NUL: an
/// exact rule's key holds the path and its NUL after the 4-byte slot).
pub const MAX_PATH_BYTES: usize = warden_common::PATH_KEY_BYTES - 1;
/// Longest `prefix:` (it needs no NUL).
pub const MAX_PREFIX_BYTES: usize = warden_common::PATH_KEY_BYTES;
/// Longest rule id (bytes).
pub const MAX_RULE_ID_BYTES: usize = 64;
/// Default of `hold_timeout`.
pub const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const MIN_HOLD_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_HOLD_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
const MAX_APPROVER_BYTES: usize = 128;

/// A 1-based line and column in the policy file (columns count characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// The rule an error is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleRef {
    /// The rule has a valid id.
    Id(String),
    /// The rule's id is missing or invalid: its index in `rules`.
    Index(usize),
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleRef::Id(id) => write!(f, "rule '{id}'"),
            RuleRef::Index(i) => write!(f, "rules[{i}]"),
        }
    }
}

/// A policy that cannot be used, with where the problem is.
///
/// Displays as `FILE:LINE:COLUMN: rule 'ID': MESSAGE`; the location is left
/// out when unknown, the rule part for errors outside `rules`, and
/// `rules[N]` replaces `rule 'ID'` when the id itself is missing or invalid.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {}{kind}", fmt_location(.location), fmt_rule(.rule))]
pub struct PolicyError {
    /// The file name as given to the parser.
    pub file: String,
    pub location: Option<Location>,
    pub rule: Option<RuleRef>,
    pub kind: PolicyErrorKind,
}

fn fmt_location(location: &Option<Location>) -> String {
    location
        .map(|l| format!(":{}:{}", l.line, l.column))
        .unwrap_or_default()
}

fn fmt_rule(rule: &Option<RuleRef>) -> String {
    rule.as_ref().map(|r| format!("{r}: ")).unwrap_or_default()
}

/// What is wrong with a policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyErrorKind {
    #[error("cannot read the policy file: {0}")]
    Io(std::io::Error),
    #[error("the policy file is not valid UTF-8")]
    NotUtf8,
    #[error("the policy file is empty; it needs at least `version: 1` and `rules:`")]
    Empty,
    #[error("invalid YAML: {0}")]
    Yaml(String),
    /// A value or structure the format does not allow; the message names it.
    #[error("{0}")]
    Invalid(String),
    #[error("duplicate rule id '{id}'; rules[{first_index}]{} already uses it", fmt_line(.first_line))]
    DuplicateRuleId {
        id: String,
        first_index: usize,
        first_line: Option<usize>,
    },
    #[error(
        "destinations in {cidr} are covered by {needed} port rules (the port ranges of every \
         connect rule whose CIDR contains {cidr}); the kernel holds at most {max} per CIDR"
    )]
    TooManyPortRules {
        cidr: Cidr,
        needed: usize,
        max: usize,
    },
    #[error(
        "the policy's {kind} rules need {needed} distinct paths in the kernel; one policy may \
         use at most {max} (half the map, so a reload can fill the idle half)"
    )]
    TooManyPaths {
        kind: &'static str,
        needed: usize,
        max: usize,
    },
    #[error(
        "the policy's connect rules need {needed} distinct {family} CIDRs in the kernel; one \
         policy may use at most {max} (half the map, so a reload can fill the idle half)"
    )]
    TooManyCidrs {
        family: &'static str,
        needed: usize,
        max: usize,
    },
    /// Rules of kinds this host cannot enforce, each with the reason; the
    /// policy is refused rather than loaded with those rules ignored.
    #[error("{}; refusing the policy", .missing.join("; "))]
    Unsupported { missing: Vec<String> },
}

fn fmt_line(line: &Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

impl PolicyError {
    pub(super) fn new(
        file: &str,
        location: Option<Location>,
        rule: Option<RuleRef>,
        kind: PolicyErrorKind,
    ) -> Self {
        PolicyError {
            file: file.to_string(),
            location,
            rule,
            kind,
        }
    }
}

fn yaml_location(e: &serde_yaml::Error) -> Option<Location> {
    e.location().map(|l| Location {
        line: l.line(),
        column: l.column(),
    })
}

/// Reads and parses a policy file. Errors name the file as `path` displays.
pub fn load_policy_file(path: &Path) -> Result<Policy, PolicyError> {
    let (name, text) = read_policy_file(path)?;
    parse_policy(&name, &text)
}

/// Reads a policy file: its name as `path` displays (what errors show) and
/// its text.
pub fn read_policy_file(path: &Path) -> Result<(String, String), PolicyError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path)
        .map_err(|e| PolicyError::new(&name, None, None, PolicyErrorKind::Io(e)))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let location = location_after(valid);
        PolicyError::new(&name, Some(location), None, PolicyErrorKind::NotUtf8)
    })?;
    Ok((name, text))
}

/// The position just after `prefix`, which is valid UTF-8 (it was cut at
/// `valid_up_to`).
fn location_after(prefix: &[u8]) -> Location {
    let text = String::from_utf8_lossy(prefix);
    let line = text.matches('\n').count() + 1;
    let last_line = text.rsplit('\n').next().unwrap_or("");
    Location {
        line,
        column: last_line.chars().count() + 1,
    }
}

/// Parses and validates a policy. `name` is the file path shown in errors.
pub fn parse_policy(name: &str, text: &str) -> Result<Policy, PolicyError> {
    // The loose parse comes first: it reports YAML syntax errors as such.
    // The typed parse reads events lazily and would otherwise report a
    // broken document as, say, a missing field.
    let loose: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
        let kind = PolicyErrorKind::Yaml(bare_message(&e, &[]));
        PolicyError::new(name, yaml_location(&e), None, kind)
    })?;
    if loose.is_null() {
        return Err(PolicyError::new(name, None, None, PolicyErrorKind::Empty));
    }

    let raw: RawPolicy = serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text))
        .map_err(|e| {
            let segments = path_segments(e.path());
            let rule = rule_ref_for_path(&loose, &segments);
            let inner = e.into_inner();
            let kind = PolicyErrorKind::Invalid(bare_message(&inner, &segments));
            PolicyError::new(name, yaml_location(&inner), rule, kind)
        })?;

    let source = Source {
        name: name.to_string(),
        text: Arc::from(text),
    };
    check_unique_ids(&raw.rules.0, &source)?;

    let rules = raw.rules.0.into_iter().map(|r| r.0).collect();
    let mut approvers = Approvers {
        users: raw.approvers.users.into_iter().map(|p| p.0).collect(),
        groups: raw.approvers.groups.into_iter().map(|p| p.0).collect(),
    };
    for names in [&mut approvers.users, &mut approvers.groups] {
        names.sort();
        names.dedup();
    }
    Ok(Policy {
        version: POLICY_VERSION,
        description: raw.description,
        approvers,
        hold_timeout: raw.hold_timeout.map_or(DEFAULT_HOLD_TIMEOUT, |h| h.0),
        on_evidence_loss: raw.on_evidence_loss.unwrap_or_default(),
        rules,
        source,
    })
}

fn check_unique_ids(rules: &[RawRule], source: &Source) -> Result<(), PolicyError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, rule) in rules.iter().enumerate() {
        let rule = &rule.0;
        if let Some(&first_index) = seen.get(rule.id.as_str()) {
            let location = locate(
                &source.text,
                &[Step::Key("rules"), Step::Index(index), Step::Key("id")],
            );
            let first_line = locate(
                &source.text,
                &[
                    Step::Key("rules"),
                    Step::Index(first_index),
                    Step::Key("id"),
                ],
            )
            .map(|l| l.line);
            return Err(PolicyError::new(
                &source.name,
                location,
                Some(RuleRef::Id(rule.id.clone())),
                PolicyErrorKind::DuplicateRuleId {
                    id: rule.id.clone(),
                    first_index,
                    first_line,
                },
            ));
        }
        seen.insert(&rule.id, index);
    }
    Ok(())
}

/// An error about rule `index` found after parsing, located at the rule's
/// first key (the line of `- id: ...` in the usual layout).
pub(super) fn rule_error(policy: &Policy, index: usize, kind: PolicyErrorKind) -> PolicyError {
    let source = &policy.source;
    let location = locate(&source.text, &[Step::Key("rules"), Step::Index(index)]);
    let rule = policy.rules.get(index).map(|r| RuleRef::Id(r.id.clone()));
    PolicyError::new(&source.name, location, rule, kind)
}

// ---------------------------------------------------------------------------
// Error paths and messages

/// One step of a path into the YAML document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
    Other,
}

fn path_segments(path: &serde_path_to_error::Path) -> Vec<Segment> {
    use serde_path_to_error::Segment as S;
    path.iter()
        .map(|s| match s {
            S::Seq { index } => Segment::Index(*index),
            S::Map { key } => Segment::Key(key.clone()),
            S::Enum { variant } => Segment::Key(variant.clone()),
            S::Unknown => Segment::Other,
        })
        .collect()
}

/// The rule an error at `segments` belongs to, if it is inside `rules[N]`.
/// The id comes from the loose parse, and is only used when it is itself
/// valid and is not where the error is.
fn rule_ref_for_path(loose: &serde_yaml::Value, segments: &[Segment]) -> Option<RuleRef> {
    let index = match segments {
        [Segment::Key(k), Segment::Index(i), ..] if k == "rules" => *i,
        _ => return None,
    };
    let error_is_in_id = matches!(segments.get(2), Some(Segment::Key(k)) if k == "id");
    let id = loose
        .get("rules")
        .and_then(|rules| rules.get(index))
        .and_then(|rule| rule.get("id"))
        .and_then(|id| id.as_str())
        .filter(|id| !error_is_in_id && check_rule_id(id).is_ok());
    Some(match id {
        Some(id) => RuleRef::Id(id.to_string()),
        None => RuleRef::Index(index),
    })
}

/// serde_yaml's message without the ` at line L column C` it appends and
/// without the `path: ` it prepends, both of which the caller reports in its
/// own format. serde_yaml does not expose the bare message, so this undoes
/// its formatting: the suffix is rebuilt from the error's own location, and
/// the prefix is serde_yaml's rendering of some leading part of the path.
fn bare_message(err: &serde_yaml::Error, segments: &[Segment]) -> String {
    let mut message = err.to_string();
    if let Some(l) = err.location() {
        let suffix = format!(" at line {} column {}", l.line(), l.column());
        if let Some(at) = message.find(&suffix) {
            message.replace_range(at..at + suffix.len(), "");
        }
    }
    for len in (1..=segments.len()).rev() {
        let prefix = format!("{}: ", render_path(&segments[..len]));
        if let Some(rest) = message.strip_prefix(&prefix) {
            return rest.to_string();
        }
    }
    message
}

/// A path as serde_yaml renders it: `rules[3].connect.to`.
fn render_path(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Other => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Locating a node after parsing

/// Marker in the probe's error message, to tell its deliberate failure from
/// a document whose shape does not match the path.
const PROBE_MARKER: &str = "warden location probe";

/// The line and column of the node at `path`, or `None` if there is no such
/// node.
pub(super) fn locate(text: &str, path: &[Step<'_>]) -> Option<Location> {
    let result = Probe { path }.deserialize(serde_yaml::Deserializer::from_str(text));
    match result {
        Err(e) if e.to_string().contains(PROBE_MARKER) => yaml_location(&e),
        _ => None,
    }
}

struct Probe<'p, 'a> {
    path: &'p [Step<'a>],
}

impl<'de> DeserializeSeed<'de> for Probe<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.path.split_first() {
            None => d.deserialize_any(Hit),
            Some((Step::Key(key), rest)) => d.deserialize_map(Walk {
                key: Some(key),
                index: 0,
                rest,
            }),
            Some((Step::Index(index), rest)) => d.deserialize_seq(Walk {
                key: None,
                index: *index,
                rest,
            }),
        }
    }
}

/// Fails on whatever node it is given. Every `visit_*` method keeps serde's
/// default, which returns an "invalid type" error naming `expecting`.
struct Hit;

impl<'de> Visitor<'de> for Hit {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PROBE_MARKER)
    }
}

/// Walks into the value under `key` of a mapping, or item `index` of a
/// sequence, skipping everything else.
struct Walk<'p, 'a> {
    key: Option<&'p str>,
    index: usize,
    rest: &'p [Step<'a>],
}

impl<'de> Visitor<'de> for Walk<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping or sequence on the path")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<serde_yaml::Value>()? {
            if self.key.is_some() && key.as_str() == self.key {
                return map.next_value_seed(Probe { path: self.rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for _ in 0..self.index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Probe { path: self.rest })?;
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The file format as serde types. Checks live in visitors (see module doc).

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a policy: a mapping with `version`, `rules` and optional settings"
)]
struct RawPolicy {
    #[allow(dead_code)] // Checked while parsing; only one version exists.
    version: Version,
    description: Option<String>,
    #[serde(default)]
    approvers: RawApprovers,
    hold_timeout: Option<HoldTimeout>,
    on_evidence_loss: Option<EvidenceLoss>,
    rules: RuleList,
}

#[derive(Deserialize, Default)]
#[serde(
    deny_unknown_fields,
    expecting = "approvers: a mapping with `users` and `groups` lists"
)]
struct RawApprovers {
    #[serde(default)]
    users: Vec<Principal>,
    #[serde(default)]
    groups: Vec<Principal>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase", expecting = "`read` or `write`")]
enum Access {
    Read,
    Write,
}

/// A rule, validated. Deserialised from `RuleFields` by `CheckedMap`.
struct RawRule(Rule);

// The `*Fields` structs are only ever read through `CheckedMap`, whose
// `expecting` is the one shown in errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFields {
    id: RuleId,
    decision: Decision,
    connect: Option<ConnectFields>,
    exec: Option<ExecSpec>,
    file: Option<FileSpec>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "connect: a mapping with `to` and optional `ports`, `protocol`"
)]
struct ConnectFields {
    to: CidrSpec,
    ports: Option<PortList>,
    protocol: Option<Protocol>,
}

/// A visitor for a mapping whose fields are parsed as `T` (derived, so
/// unknown and missing fields are reported as usual) and then checked as a
/// whole by `check`. The check runs inside `visit_map`, not after
/// `T::deserialize` returns, because serde_yaml attaches the mapping's
/// position only to errors returned from within its visit.
struct CheckedMap<T, U> {
    expecting: &'static str,
    check: fn(T) -> Result<U, String>,
}

impl<'de, T: Deserialize<'de>, U> Visitor<'de> for CheckedMap<T, U> {
    type Value = U;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<U, A::Error> {
        let fields = T::deserialize(de::value::MapAccessDeserializer::new(map))?;
        (self.check)(fields).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for RawRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(CheckedMap {
            expecting:
                "a rule: a mapping with `id`, `decision` and one of `connect`, `exec`, `file`",
            check: check_rule,
        })
    }
}

fn check_rule(f: RuleFields) -> Result<RawRule, String> {
    let mut present = Vec::new();
    if f.connect.is_some() {
        present.push("`connect`");
    }
    if f.exec.is_some() {
        present.push("`exec`");
    }
    if f.file.is_some() {
        present.push("`file`");
    }
    let selector = match (f.connect, f.exec, f.file) {
        (Some(c), None, None) => Selector::Connect {
            cidr: c.to.0,
            ports: c.ports.map_or_else(Vec::new, |p| normalise_ports(p.0)),
            protocol: c.protocol.unwrap_or(Protocol::Any),
        },
        (None, Some(e), None) => Selector::Exec { target: e.0 },
        (None, None, Some(file)) => file.0,
        _ => {
            let found = if present.is_empty() {
                "none".to_string()
            } else {
                present.join(" and ")
            };
            return Err(format!(
                "a rule needs exactly one of `connect`, `exec`, `file`; this one has {found}"
            ));
        }
    };
    Ok(RawRule(Rule {
        id: f.id.0,
        decision: f.decision,
        selector,
    }))
}

/// `exec: { path: ... }` or `exec: { prefix: ... }`.
struct ExecSpec(PathMatch);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecFields {
    path: Option<ExactPath>,
    prefix: Option<DirPrefix>,
}

impl<'de> Deserialize<'de> for ExecSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(CheckedMap {
            expecting: "exec: a mapping with `path` or `prefix`",
            check: |f: ExecFields| path_match("exec", f.path, f.prefix).map(ExecSpec),
        })
    }
}

/// `file: { path|prefix: ..., access: [...] }`, as its selector.
struct FileSpec(Selector);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFields {
    path: Option<ExactPath>,
    prefix: Option<DirPrefix>,
    access: AccessList,
}

impl<'de> Deserialize<'de> for FileSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(CheckedMap {
            expecting: "file: a mapping with `path` or `prefix`, and `access`",
            check: |f: FileFields| {
                let target = path_match("file", f.path, f.prefix)?;
                let read = f.access.0.contains(&Access::Read);
                let write = f.access.0.contains(&Access::Write);
                Ok(FileSpec(Selector::File {
                    target,
                    read,
                    write,
                }))
            },
        })
    }
}

fn path_match(
    what: &str,
    path: Option<ExactPath>,
    prefix: Option<DirPrefix>,
) -> Result<PathMatch, String> {
    match (path, prefix) {
        (Some(p), None) => Ok(PathMatch::Exact(p.0)),
        (None, Some(p)) => Ok(PathMatch::Prefix(p.0)),
        (Some(_), Some(_)) => Err(format!(
            "`{what}` has both `path` and `prefix`; a rule names one or the other"
        )),
        (None, None) => Err(format!(
            "`{what}` needs `path` (one file) or `prefix` (a directory, ending in '/')"
        )),
    }
}

/// A sequence visitor that collects `T`s and then checks the whole list.
struct CheckedSeq<T, U> {
    expecting: &'static str,
    check: fn(Vec<T>) -> Result<U, String>,
}

impl<'de, T: Deserialize<'de>, U> Visitor<'de> for CheckedSeq<T, U> {
    type Value = U;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<U, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        (self.check)(items).map_err(de::Error::custom)
    }
}

struct RuleList(Vec<RawRule>);

impl<'de> Deserialize<'de> for RuleList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(CheckedSeq {
            expecting: "`rules`: a list of rules (`- id: ...`)",
            check: |rules| Ok(RuleList(rules)),
        })
    }
}

/// Port ranges as written; an explicit empty list is refused because it
/// reads as "no ports" while an absent `ports` means all ports.
struct PortList(Vec<(u16, u16)>);

impl<'de> Deserialize<'de> for PortList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(CheckedSeq {
            expecting: "`ports`: a list of ports (443) or ranges (\"9000-9100\")",
            check: |ports: Vec<PortSpec>| {
                if ports.is_empty() {
                    Err("`ports` is empty; leave it out to match every port".to_string())
                } else {
                    Ok(PortList(ports.into_iter().map(|p| (p.0, p.1)).collect()))
                }
            },
        })
    }
}

struct AccessList(Vec<Access>);

impl<'de> Deserialize<'de> for AccessList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(CheckedSeq {
            expecting: "`access`: a list of `read` and/or `write`",
            check: |access: Vec<Access>| {
                if access.is_empty() {
                    Err("`access` is empty; list `read`, `write` or both".to_string())
                } else {
                    Ok(AccessList(access))
                }
            },
        })
    }
}

/// A visitor for one string scalar, validated by `parse`.
struct StrVisitor<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
}

impl<T> Visitor<'_> for StrVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }
}

macro_rules! string_newtype {
    ($name:ident, $expecting:expr, $parse:expr) => {
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(StrVisitor {
                    expecting: $expecting,
                    parse: $parse,
                })
            }
        }
    };
}

struct RuleId(String);
string_newtype!(RuleId, "a rule id such as `payments-api`", |s| {
    check_rule_id(s).map(|()| RuleId(s.to_string()))
});

struct CidrSpec(Cidr);
string_newtype!(CidrSpec, "an IP address or CIDR such as 10.0.0.0/8", |s| {
    let cidr = s.parse().map_err(|e| format!("invalid CIDR '{s}': {e}"))?;
    Ok(CidrSpec(cidr))
});

struct ExactPath(String);
string_newtype!(ExactPath, "an absolute path such as /usr/bin/curl", |s| {
    check_path(s, false).map(|()| ExactPath(s.to_string()))
});

struct DirPrefix(String);
string_newtype!(
    DirPrefix,
    "a directory ending in '/', such as /usr/bin/",
    |s| { check_path(s, true).map(|()| DirPrefix(s.to_string())) }
);

struct HoldTimeout(Duration);
string_newtype!(HoldTimeout, "a duration such as 30s, 15m or 2h", |s| {
    parse_hold_timeout(s).map(HoldTimeout)
});

struct Principal(String);
string_newtype!(Principal, "a user or group name", |s| {
    check_principal(s).map(|()| Principal(s.to_string()))
});

/// `[a-z0-9][a-z0-9._-]{0,63}`.
pub(super) fn check_rule_id(s: &str) -> Result<(), String> {
    let mut bytes = s.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if first_ok && rest_ok && s.len() <= MAX_RULE_ID_BYTES {
        Ok(())
    } else {
        Err(format!(
            "invalid rule id '{s}': ids are 1 to {MAX_RULE_ID_BYTES} characters from a-z, 0-9, \
             '.', '_', '-', starting with a letter or digit"
        ))
    }
}

/// Absolute, normalised, at most 251 bytes (a prefix 252: the kernel's rule
/// key); a prefix ends in '/', an exact
/// path does not. No attempt is made to normalise: the kernel compares the
/// path it resolved byte-wise, so a rule written `/usr/./bin` would never
/// match and is refused instead.
fn check_path(s: &str, is_prefix: bool) -> Result<(), String> {
    let kind = if is_prefix { "prefix" } else { "path" };
    if !s.starts_with('/') {
        return Err(format!(
            "{kind} '{s}' is not absolute; it must start with '/'"
        ));
    }
    let max = if is_prefix {
        MAX_PREFIX_BYTES
    } else {
        MAX_PATH_BYTES
    };
    if s.len() > max {
        return Err(format!(
            "{kind} '{s}' is {} bytes; the kernel compares at most {MAX_PATH_BYTES} for a path, \
             {MAX_PREFIX_BYTES} for a prefix",
            s.len()
        ));
    }
    if s.bytes().any(|b| b == 0) {
        return Err(format!("{kind} '{s}' contains a NUL byte"));
    }
    if s.contains("//") {
        return Err(format!("{kind} '{s}' is not normalised: it contains '//'"));
    }
    if let Some(c) = s.split('/').find(|c| *c == "." || *c == "..") {
        return Err(format!(
            "{kind} '{s}' is not normalised: it has a '{c}' component"
        ));
    }
    match (is_prefix, s.ends_with('/')) {
        (true, false) => Err(format!(
            "prefix '{s}' must end with '/', so that it names a directory and not every name \
             starting with those characters; use `path:` for one file"
        )),
        (false, true) => Err(format!(
            "path '{s}' ends with '/'; use `prefix:` to match everything under a directory"
        )),
        _ => Ok(()),
    }
}

/// `N` followed by `s`, `m` or `h`, between 1s and 24h.
fn parse_hold_timeout(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid hold_timeout '{s}': write a whole number followed by s, m or h, such as 15m"
        )
    };
    let (digits, unit) = s.split_at(s.len().saturating_sub(1));
    let multiplier = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(bad()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let secs = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier));
    match secs.map(Duration::from_secs) {
        Some(d) if (MIN_HOLD_TIMEOUT..=MAX_HOLD_TIMEOUT).contains(&d) => Ok(d),
        _ => Err(format!(
            "hold_timeout '{s}' is out of range; it must be between 1s and 24h"
        )),
    }
}

fn check_principal(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_APPROVER_BYTES
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid approver name '{s}': names are 1 to {MAX_APPROVER_BYTES} characters from \
             A-Z, a-z, 0-9, '.', '_', '-', '@', not starting with '-'"
        ))
    }
}

/// `version`: the integer 1.
struct Version;

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Version;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "the policy format version, {POLICY_VERSION}")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Version, E> {
                if v == u64::from(POLICY_VERSION) {
                    Ok(Version)
                } else {
                    Err(E::custom(format!(
                        "unsupported policy version {v}; this Warden reads version {POLICY_VERSION}"
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Version, E> {
                Err(E::custom(format!(
                    "unsupported policy version {v}; this Warden reads version {POLICY_VERSION}"
                )))
            }
        }
        d.deserialize_u64(V)
    }
}

/// One entry of `ports`: `443`, `"443"` or `"9000-9100"`.
struct PortSpec(u16, u16);

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port (443) or a port range (\"9000-9100\")")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortSpec, E> {
                let port = check_port(&v.to_string()).map_err(E::custom)?;
                Ok(PortSpec(port, port))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortSpec, E> {
                let port = check_port(&v.to_string()).map_err(E::custom)?;
                Ok(PortSpec(port, port))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortSpec, E> {
                parse_port_range(v)
                    .map(|(lo, hi)| PortSpec(lo, hi))
                    .map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

fn check_port(s: &str) -> Result<u16, String> {
    let bad = || format!("invalid port '{s}': ports are whole numbers from 1 to 65535");
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match s.parse::<u16>() {
        Ok(0) => Err("port 0 is not a valid destination port; ports are 1 to 65535".to_string()),
        Ok(p) => Ok(p),
        Err(_) => Err(bad()),
    }
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    match s.split_once('-') {
        None => check_port(s.trim()).map(|p| (p, p)),
        Some((lo, hi)) => {
            let lo = check_port(lo.trim()).map_err(|e| format!("in port range '{s}': {e}"))?;
            let hi = check_port(hi.trim()).map_err(|e| format!("in port range '{s}': {e}"))?;
            if lo > hi {
                Err(format!("invalid port range '{s}': {lo} is above {hi}"))
            } else {
                Ok((lo, hi))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let yaml =
            one_rule("    connect:\n      to: 10.0.0.1\n      prot: tcp\n    decision: allow\n");
        assert_eq!(
            err(&yaml),
            "policies/payments.yaml:7:7: rule 'payments-api': unknown field `prot`, expected one of \
             `to`, `ports`, `protocol`"
        );
        assert_eq!(
            err("version: 1\nrulez: []\nrules: []\n"),
            "policies/payments.yaml:2:1: unknown field `rulez`, expected one of `version`, \
             `description`, `approvers`, `hold_timeout`, `on_evidence_loss`, `rules`"
        );
        assert_eq!(
            err(&one_rule("    exec: { path: /bin/sh }\n    decision: allow\n    note: x\n")),
            "policies/payments.yaml:7:5: rule 'payments-api': unknown field `note`, expected one of \
             `id`, `decision`, `connect`, `exec`, `file`"
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
        let yaml = "version: 1\nrules:\n  - connect: { to: 300.0.0.1 }\n    decision: deny\n    id: late-id\n";
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
            err(&one_rule("    exec: { path: /bin/sh }\n    decision: maybe\n")),
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
             `exec`, `file`; this one has none"
        );
        assert_eq!(
            err(&one_rule("    connect: { to: 1.2.3.4 }\n    exec: { path: /bin/sh }\n    decision: allow\n")),
            "policies/payments.yaml:4:5: rule 'payments-api': a rule needs exactly one of `connect`, \
             `exec`, `file`; this one has `connect` and `exec`"
        );
        assert_eq!(
            err("version: 1\nrules:\n  - not-a-mapping\n"),
            "policies/payments.yaml:3:5: rules[0]: invalid type: string \"not-a-mapping\", expected a \
             rule: a mapping with `id`, `decision` and one of `connect`, `exec`, `file`"
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
        let yaml =
            "version: 1\nrules:\n  - id: a\n    exec: { path: /bin/sh\n    decision: allow\n";
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
}
