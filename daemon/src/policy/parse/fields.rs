//! The raw YAML shapes of a policy and its rules, checked while they are
//! deserialised so errors point at the offending node.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::policy::model::{
    normalise_ports, Decision, Evidence, EvidenceLoss, Mode, PathMatch, Protocol, Rule, Selector,
    SocketKind,
};

use super::values::*;

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a policy: a mapping with `version`, `rules` and optional settings"
)]
pub(in crate::policy) struct RawPolicy {
    #[allow(dead_code)] // Checked while parsing; only one version exists.
    pub(in crate::policy) version: Version,
    pub(in crate::policy) description: Option<String>,
    #[serde(default)]
    pub(in crate::policy) approvers: RawApprovers,
    pub(in crate::policy) hold_timeout: Option<HoldTimeout>,
    pub(in crate::policy) on_evidence_loss: Option<EvidenceLoss>,
    pub(in crate::policy) mode: Option<Mode>,
    /// Shipped profiles whose rules follow the policy's own.
    #[serde(default)]
    pub(in crate::policy) include: Vec<String>,
    pub(in crate::policy) evidence: Option<Evidence>,
    pub(in crate::policy) monitor: Option<crate::policy::monitor::Monitor>,
    /// `change_review: { approvers: [..], groups: [..], min: 1 }`.
    pub(in crate::policy) change_review: Option<RawChangeReview>,
    /// `review_every: 90d`: how old an access review may get.
    pub(in crate::policy) review_every: Option<String>,
    /// `freeze: [windows]` (policy/freeze.rs).
    pub(in crate::policy) freeze: Option<Vec<crate::policy::freeze::RawWindow>>,
    /// `delegate: [child, ..]`: agents a process of this one may start.
    #[serde(default)]
    pub(in crate::policy) delegate: Vec<String>,
    pub(in crate::policy) rules: RuleList,
    /// Per-agent action budgets, enforced by the kernel.
    #[serde(default)]
    pub(in crate::policy) budgets: Vec<crate::policy::budget::RawBudget>,
    /// `shadow:` a candidate policy inline, or the path of its file.
    pub(in crate::policy) shadow: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "change_review: a mapping with `approvers` (user names), `groups` and `min`"
)]
pub(in crate::policy) struct RawChangeReview {
    #[serde(default)]
    pub(in crate::policy) approvers: Vec<Principal>,
    #[serde(default)]
    pub(in crate::policy) groups: Vec<Principal>,
    pub(in crate::policy) min: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(
    deny_unknown_fields,
    expecting = "approvers: a mapping with `users` and `groups` lists"
)]
pub(in crate::policy) struct RawApprovers {
    #[serde(default)]
    pub(in crate::policy) users: Vec<Principal>,
    #[serde(default)]
    pub(in crate::policy) groups: Vec<Principal>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase", expecting = "`read` or `write`")]
pub(in crate::policy) enum Access {
    Read,
    Write,
}

/// A rule, validated. Deserialised from `RuleFields` by `CheckedMap`.
pub(in crate::policy) struct RawRule(pub(in crate::policy) Rule);

// The `*Fields` structs are only ever read through `CheckedMap`, whose
// `expecting` is the one shown in errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::policy) struct RuleFields {
    pub(in crate::policy) id: RuleId,
    pub(in crate::policy) decision: Decision,
    pub(in crate::policy) connect: Option<ConnectFields>,
    pub(in crate::policy) exec: Option<ExecSpec>,
    pub(in crate::policy) file: Option<FileSpec>,
    pub(in crate::policy) socket: Option<SocketFields>,
    pub(in crate::policy) allow_write_exec: Option<bool>,
    /// Denied during a freeze window (policy/freeze.rs).
    pub(in crate::policy) destructive: Option<bool>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "socket: a mapping with `kind` (`raw` or `packet`)"
)]
pub(in crate::policy) struct SocketFields {
    pub(in crate::policy) kind: SocketKind,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "connect: a mapping with `to` or `host`, and optional `ports`, `protocol`"
)]
pub(in crate::policy) struct ConnectFields {
    pub(in crate::policy) to: Option<CidrSpec>,
    pub(in crate::policy) host: Option<HostSpec>,
    pub(in crate::policy) ports: Option<PortList>,
    pub(in crate::policy) protocol: Option<Protocol>,
}

/// A visitor for a mapping whose fields are parsed as `T` (derived, so
/// unknown and missing fields are reported as usual) and then checked as a
/// whole by `check`. The check runs inside `visit_map`, not after
/// `T::deserialize` returns, because serde_yaml attaches the mapping's
/// position only to errors returned from within its visit.
pub(in crate::policy) struct CheckedMap<T, U> {
    pub(in crate::policy) expecting: &'static str,
    pub(in crate::policy) check: fn(T) -> Result<U, String>,
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
                "a rule: a mapping with `id`, `decision` and one of `connect`, `exec`, `file`, `socket`",
            check: check_rule,
        })
    }
}

pub(in crate::policy) fn check_rule(f: RuleFields) -> Result<RawRule, String> {
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
    if f.socket.is_some() {
        present.push("`socket`");
    }
    let selector = match (f.connect, f.exec, f.file, f.socket) {
        (None, None, None, Some(s)) => {
            if f.decision == Decision::Hold {
                return Err(
                    "a `socket` rule decides `allow` or `deny`; socket creation cannot be held"
                        .to_string(),
                );
            }
            Selector::Socket { kind: s.kind }
        }
        (Some(c), None, None, None) => {
            let ports = c.ports.map_or_else(Vec::new, |p| normalise_ports(p.0));
            let protocol = c.protocol.unwrap_or(Protocol::Any);
            match (c.to, c.host) {
                (Some(to), None) => Selector::Connect {
                    cidr: to.0,
                    ports,
                    protocol,
                },
                (None, Some(host)) => Selector::ConnectHost {
                    host: host.0,
                    ports,
                    protocol,
                },
                (Some(_), Some(_)) => {
                    return Err(
                        "a `connect` rule has `to` (addresses) or `host` (a name), not both"
                            .to_string(),
                    )
                }
                (None, None) => {
                    return Err(
                        "a `connect` rule needs `to` (addresses) or `host` (a name)".to_string()
                    )
                }
            }
        }
        (None, Some(e), None, None) => Selector::Exec { target: e.0 },
        (None, None, Some(file), None) => file.0,
        _ => {
            let found = if present.is_empty() {
                "none".to_string()
            } else {
                present.join(" and ")
            };
            return Err(format!(
                "a rule needs exactly one of `connect`, `exec`, `file`, `socket`; this one has {found}"
            ));
        }
    };
    if f.allow_write_exec.is_some()
        && matches!(
            selector,
            Selector::Connect { .. } | Selector::ConnectHost { .. }
        )
    {
        return Err("`allow_write_exec` applies to `exec` and `file` rules only".to_string());
    }
    Ok(RawRule(Rule {
        id: f.id.0,
        decision: f.decision,
        selector,
        allow_write_exec: f.allow_write_exec.unwrap_or(false),
        destructive: f.destructive.unwrap_or(false),
    }))
}

/// `exec: { path: ... }` or `exec: { prefix: ... }`.
pub(in crate::policy) struct ExecSpec(pub(in crate::policy) PathMatch);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::policy) struct ExecFields {
    pub(in crate::policy) path: Option<ExactPath>,
    pub(in crate::policy) prefix: Option<DirPrefix>,
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
pub(in crate::policy) struct FileSpec(pub(in crate::policy) Selector);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::policy) struct FileFields {
    pub(in crate::policy) path: Option<ExactPath>,
    pub(in crate::policy) prefix: Option<DirPrefix>,
    pub(in crate::policy) access: AccessList,
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

pub(in crate::policy) fn path_match(
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
pub(in crate::policy) struct CheckedSeq<T, U> {
    pub(in crate::policy) expecting: &'static str,
    pub(in crate::policy) check: fn(Vec<T>) -> Result<U, String>,
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

pub(in crate::policy) struct RuleList(pub(in crate::policy) Vec<RawRule>);

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
pub(in crate::policy) struct PortList(pub(in crate::policy) Vec<(u16, u16)>);

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

pub(in crate::policy) struct AccessList(pub(in crate::policy) Vec<Access>);

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
