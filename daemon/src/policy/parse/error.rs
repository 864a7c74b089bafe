//! Policy errors: what went wrong, at which file, line, column and rule.

use std::fmt;

use crate::policy::model::Cidr;

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

pub(in crate::policy) fn fmt_location(location: &Option<Location>) -> String {
    location
        .map(|l| format!(":{}:{}", l.line, l.column))
        .unwrap_or_default()
}

pub(in crate::policy) fn fmt_rule(rule: &Option<RuleRef>) -> String {
    rule.as_ref().map(|r| format!("{r}: ")).unwrap_or_default()
}

/// What is wrong with a policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyErrorKind {
    #[error(
        "unknown profile '{name}'; the shipped profiles are {}",
        crate::policy::profiles::names().collect::<Vec<_>>().join(", ")
    )]
    UnknownProfile { name: String },
    #[error("profile '{name}' is included twice")]
    DuplicateInclude { name: String },
    #[error("a profile may only have `version`, `description` and `rules`; {file} has more")]
    ProfileSettings { file: &'static str },
    #[error("cannot read the policy file: {0}")]
    Io(std::io::Error),
    #[error("the policy file is not valid UTF-8")]
    NotUtf8,
    #[error("the policy file is empty; it needs at least `version: 1` and `rules:`")]
    Empty,
    #[error("the policy file is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("YAML nested deeper than {max} levels (a policy needs 5)")]
    TooDeep { max: usize },
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
         use at most {max} (its agent's share of the map: 1/16, so 8 agents with full policies \
         fit, mid-reload included)"
    )]
    TooManyPaths {
        kind: &'static str,
        needed: usize,
        max: usize,
    },
    #[error(
        "the policy's connect rules need {needed} distinct {family} CIDRs in the kernel; one \
         policy may use at most {max} (its agent's share of the map: 1/16, so 8 agents with full \
         policies fit, mid-reload included)"
    )]
    TooManyCidrs {
        family: &'static str,
        needed: usize,
        max: usize,
    },
    /// A path the agent may both write and execute: it could replace the
    /// binary it is allowed to run. Boxed to keep the error small.
    #[error("{0}")]
    WriteExec(Box<WriteExec>),
    /// Rules of kinds this host cannot enforce, each with the reason; the
    /// policy is refused rather than loaded with those rules ignored.
    #[error("{}; refusing the policy", .missing.join("; "))]
    Unsupported { missing: Vec<String> },
    /// A budget (`budgets:`) that cannot be used: "budget 'ID': why".
    #[error("{0}")]
    Budget(String),
}

/// The two rules that let the agent write what it may execute. `path` is
/// one such path (`DIR/*` stands for the files below a prefix).
#[derive(Debug, thiserror::Error)]
#[error(
    "rule '{write_rule}' lets the agent write {path}, which rule '{exec_rule}' lets it \
     execute (an agent must not write what it may run); narrow one of them, or add \
     `allow_write_exec: true` to either rule to accept it"
)]
pub struct WriteExec {
    pub write_rule: String,
    pub exec_rule: String,
    pub path: String,
}

pub(in crate::policy) fn fmt_line(line: &Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

impl PolicyError {
    pub(in crate::policy) fn new(
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

pub(in crate::policy) fn yaml_location(e: &serde_yaml::Error) -> Option<Location> {
    e.location().map(|l| Location {
        line: l.line(),
        column: l.column(),
    })
}

// The TooManyPaths and TooManyCidrs messages spell the share out.
const _: () = assert!(warden_common::limits::RULE_MAP_SHARES == 8);
