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

mod bounds;
mod error;
mod fields;
mod position;
mod values;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::policy::model::{Approvers, ChangeReview, EvidenceLoss, Mode, Policy, Rule, Source};
use crate::policy::profiles;

pub use self::bounds::{MAX_NESTING_DEPTH, MAX_POLICY_BYTES};
pub use self::error::{Location, PolicyError, PolicyErrorKind, RuleRef, WriteExec};
pub(super) use self::position::Step;
use self::{error::*, fields::*, position::*};

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

/// Reads and parses a policy file. Errors name the file as `path` displays.
pub fn load_policy_file(path: &Path) -> Result<Policy, PolicyError> {
    let (name, text) = read_policy_file(path)?;
    parse_policy(&name, &text)
}

/// Reads a policy file: its name as `path` displays (what errors show) and
/// its text.
pub fn read_policy_file(path: &Path) -> Result<(String, String), PolicyError> {
    use std::io::Read;
    let name = path.display().to_string();
    let io_err = |e| PolicyError::new(&name, None, None, PolicyErrorKind::Io(e));
    // Never read more than the bound (and one byte to see it exceeded).
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_POLICY_BYTES as u64 + 1).read_to_end(&mut bytes))
        .map_err(io_err)?;
    if bytes.len() > MAX_POLICY_BYTES {
        let kind = PolicyErrorKind::TooLarge {
            max: MAX_POLICY_BYTES,
        };
        return Err(PolicyError::new(&name, None, None, kind));
    }
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
    // Bounds first: the YAML parser's cost grows faster than the input.
    if text.len() > MAX_POLICY_BYTES {
        let kind = PolicyErrorKind::TooLarge {
            max: MAX_POLICY_BYTES,
        };
        return Err(PolicyError::new(name, None, None, kind));
    }
    let (depth, line) = bounds::nesting_depth(text);
    if depth > MAX_NESTING_DEPTH {
        let kind = PolicyErrorKind::TooDeep {
            max: MAX_NESTING_DEPTH,
        };
        let at = Location { line, column: 1 };
        return Err(PolicyError::new(name, Some(at), None, kind));
    }
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

    let mut rules: Vec<Rule> = raw.rules.0.into_iter().map(|r| r.0).collect();
    let own = rules.len();
    rules.extend(resolve_includes(&raw.include, &source)?);
    check_unique_included_ids(&rules, own, &source)?;
    let rule_ids: Vec<String> = rules.iter().map(|r| r.id.clone()).collect();
    let host_rule_ids: Vec<String> = rules
        .iter()
        .filter(|r| {
            matches!(
                r.selector,
                crate::policy::model::Selector::ConnectHost { .. }
            )
        })
        .map(|r| r.id.clone())
        .collect();
    let budgets =
        crate::policy::budget::check_budgets(raw.budgets, &rule_ids, &host_rule_ids, name, text)?;
    let mut approvers = Approvers {
        users: raw.approvers.users.into_iter().map(|p| p.0).collect(),
        groups: raw.approvers.groups.into_iter().map(|p| p.0).collect(),
    };
    for names in [&mut approvers.users, &mut approvers.groups] {
        names.sort();
        names.dedup();
    }
    let change_review = raw
        .change_review
        .map(|r| change_review(r, &source))
        .transpose()?;
    let review_every_secs = match raw.review_every {
        None => None,
        Some(text) => Some(review_every(&text).ok_or_else(|| {
            let at = locate(&source.text, &[Step::Key("review_every")]);
            let kind = PolicyErrorKind::Invalid(format!(
                "review_every '{text}' is not a positive age like 90d, 12h, 30m or 45s"
            ));
            PolicyError::new(&source.name, at, None, kind)
        })?),
    };
    let mut freeze = Vec::new();
    for (i, w) in raw.freeze.unwrap_or_default().into_iter().enumerate() {
        let w = w.validate().map_err(|message| {
            let at = locate(&source.text, &[Step::Key("freeze"), Step::Index(i)]);
            PolicyError::new(&source.name, at, None, PolicyErrorKind::Invalid(message))
        })?;
        if freeze
            .iter()
            .any(|f: &crate::policy::freeze::Window| f.id == w.id)
        {
            let at = locate(&source.text, &[Step::Key("freeze"), Step::Index(i)]);
            let kind =
                PolicyErrorKind::Invalid(format!("freeze window id '{}' is used twice", w.id));
            return Err(PolicyError::new(&source.name, at, None, kind));
        }
        freeze.push(w);
    }
    let mut delegate = raw.delegate;
    for (i, child) in delegate.iter().enumerate() {
        if !crate::registry::valid_agent_name(child) {
            let at = locate(&source.text, &[Step::Key("delegate"), Step::Index(i)]);
            let kind = PolicyErrorKind::Invalid(format!(
                "delegate: '{child}' is not an agent name (1-64 of a-z, 0-9, '-', '_', '.')"
            ));
            return Err(PolicyError::new(&source.name, at, None, kind));
        }
    }
    delegate.sort();
    delegate.dedup();
    let shadow = raw
        .shadow
        .map(|v| shadow_candidate(v, &source))
        .transpose()?
        .map(Box::new);
    Ok(Policy {
        version: POLICY_VERSION,
        description: raw.description,
        approvers,
        hold_timeout: raw.hold_timeout.map_or(DEFAULT_HOLD_TIMEOUT, |h| h.0),
        on_evidence_loss: raw.on_evidence_loss.unwrap_or_default(),
        mode: raw.mode.unwrap_or_default(),
        evidence: raw.evidence.unwrap_or_default(),
        monitor: raw.monitor.unwrap_or_default(),
        change_review,
        review_every_secs,
        freeze,
        delegate,
        shadow,
        rules,
        budgets,
        source,
    })
}

/// `shadow:`: a candidate policy written inline, or the path of its file
/// (relative to the policy's own directory), parsed as any policy. A
/// candidate carries no shadow of its own.
fn shadow_candidate(value: serde_yaml::Value, source: &Source) -> Result<Policy, PolicyError> {
    let at = || locate(&source.text, &[Step::Key("shadow")]);
    let invalid = |message: String| {
        PolicyError::new(&source.name, at(), None, PolicyErrorKind::Invalid(message))
    };
    let candidate = match value {
        serde_yaml::Value::String(path) => {
            let path = std::path::Path::new(&path);
            let path = match std::path::Path::new(&source.name).parent() {
                Some(dir) if path.is_relative() => dir.join(path),
                _ => path.to_path_buf(),
            };
            // Named from the policy that points at it.
            let (name, text) =
                read_policy_file(&path).map_err(|e| invalid(format!("shadow: {e}")))?;
            parse_policy(&name, &text)?
        }
        serde_yaml::Value::Mapping(_) => {
            let text =
                serde_yaml::to_string(&value).map_err(|e| invalid(format!("shadow: {e}")))?;
            parse_policy(&format!("{} (shadow)", source.name), &text)?
        }
        _ => return Err(invalid(
            "shadow: a candidate policy (a mapping with `version` and `rules`) or the path of one"
                .into(),
        )),
    };
    if candidate.shadow.is_some() {
        return Err(invalid(format!(
            "shadow: the candidate {} has a `shadow:` of its own",
            candidate.source.name
        )));
    }
    Ok(candidate)
}

/// `N` then `s`, `m`, `h` or `d`, more than zero, as seconds.
fn review_every(text: &str) -> Option<u64> {
    crate::clock::whole_secs(text, "smhd").filter(|n| (1..u64::MAX).contains(n))
}

/// `change_review`: at least one approver (user or group), and `min`
/// (default 1) no more than the named users when no group is named.
fn change_review(
    raw: fields::RawChangeReview,
    source: &Source,
) -> Result<ChangeReview, PolicyError> {
    let mut approvers = Approvers {
        users: raw.approvers.into_iter().map(|p| p.0).collect(),
        groups: raw.groups.into_iter().map(|p| p.0).collect(),
    };
    for names in [&mut approvers.users, &mut approvers.groups] {
        names.sort();
        names.dedup();
    }
    let min = raw.min.unwrap_or(1);
    let problem = if approvers.users.is_empty() && approvers.groups.is_empty() {
        Some("change_review names no approvers: list users in `approvers` or `groups`".to_string())
    } else if min == 0 {
        Some("change_review: `min` must be at least 1".to_string())
    } else if approvers.groups.is_empty() && min as usize > approvers.users.len() {
        Some(format!(
            "change_review: `min` is {min} but only {} approvers are named",
            approvers.users.len()
        ))
    } else {
        None
    };
    if let Some(message) = problem {
        let at = locate(&source.text, &[Step::Key("change_review")]);
        return Err(PolicyError::new(
            &source.name,
            at,
            None,
            PolicyErrorKind::Invalid(message),
        ));
    }
    Ok(ChangeReview { approvers, min })
}

/// The rules of the profiles `include` names, in order, each id prefixed
/// with its profile's name (`loader.ld-cache`). A profile is parsed as a
/// policy of its own, so its errors name its file and line.
fn resolve_includes(include: &[String], source: &Source) -> Result<Vec<Rule>, PolicyError> {
    let mut out = Vec::new();
    for (i, name) in include.iter().enumerate() {
        let at = || locate(&source.text, &[Step::Key("include"), Step::Index(i)]);
        if include[..i].contains(name) {
            let kind = PolicyErrorKind::DuplicateInclude { name: name.clone() };
            return Err(PolicyError::new(&source.name, at(), None, kind));
        }
        let Some((file, text)) = profiles::profile(name) else {
            let kind = PolicyErrorKind::UnknownProfile { name: name.clone() };
            return Err(PolicyError::new(&source.name, at(), None, kind));
        };
        let profile = parse_policy(file, text)?;
        if !profile.approvers.users.is_empty()
            || !profile.approvers.groups.is_empty()
            || profile.mode != Mode::Enforce
            || profile.on_evidence_loss != EvidenceLoss::Deny
            || profile.hold_timeout != DEFAULT_HOLD_TIMEOUT
            || !profile.budgets.is_empty()
            || text.lines().any(|l| l.starts_with("include:"))
        {
            let kind = PolicyErrorKind::ProfileSettings { file };
            return Err(PolicyError::new(&source.name, at(), None, kind));
        }
        out.extend(profile.rules.into_iter().map(|mut r| {
            r.id = format!("{name}.{}", r.id);
            r
        }));
    }
    Ok(out)
}

/// An own rule may not take the id of an included one.
fn check_unique_included_ids(
    rules: &[Rule],
    own: usize,
    source: &Source,
) -> Result<(), PolicyError> {
    for (index, rule) in rules[..own].iter().enumerate() {
        if let Some(j) = rules[own..].iter().position(|r| r.id == rule.id) {
            let location = locate(
                &source.text,
                &[Step::Key("rules"), Step::Index(index), Step::Key("id")],
            );
            return Err(PolicyError::new(
                &source.name,
                location,
                Some(RuleRef::Id(rule.id.clone())),
                PolicyErrorKind::DuplicateRuleId {
                    id: rule.id.clone(),
                    first_index: own + j,
                    first_line: None,
                },
            ));
        }
    }
    Ok(())
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

/// The location of the YAML node at `path` (for `policy::budget`).
pub(in crate::policy) fn locate_in(text: &str, path: &[Step<'_>]) -> Option<Location> {
    locate(text, path)
}

/// A rule id, checked as rule ids are (budget ids follow the same form).
pub(in crate::policy) type RawId = self::values::RuleId;

/// An error about rule `index` found after parsing, located at the rule's
/// first key (the line of `- id: ...` in the usual layout).
pub(super) fn rule_error(policy: &Policy, index: usize, kind: PolicyErrorKind) -> PolicyError {
    let source = &policy.source;
    let location = locate(&source.text, &[Step::Key("rules"), Step::Index(index)]);
    let rule = policy.rules.get(index).map(|r| RuleRef::Id(r.id.clone()));
    PolicyError::new(&source.name, location, rule, kind)
}

#[cfg(test)]
mod tests;
