//! Finding a node's line and column after parsing: the rule id of an
//! error's path, and the probe that walks the YAML to a node (see the
//! parent module's doc).

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{error::*, values::*};

// ---------------------------------------------------------------------------
// Error paths and messages

/// One step of a path into the YAML document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::policy) enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::policy) enum Segment {
    Key(String),
    Index(usize),
    Other,
}

pub(in crate::policy) fn path_segments(path: &serde_path_to_error::Path) -> Vec<Segment> {
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
pub(in crate::policy) fn rule_ref_for_path(
    loose: &serde_yaml::Value,
    segments: &[Segment],
) -> Option<RuleRef> {
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
pub(in crate::policy) fn bare_message(err: &serde_yaml::Error, segments: &[Segment]) -> String {
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
pub(in crate::policy) fn render_path(segments: &[Segment]) -> String {
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
pub(in crate::policy) const PROBE_MARKER: &str = "warden location probe";

/// The line and column of the node at `path`, or `None` if there is no such
/// node.
pub(in crate::policy) fn locate(text: &str, path: &[Step<'_>]) -> Option<Location> {
    let result = Probe { path }.deserialize(serde_yaml::Deserializer::from_str(text));
    match result {
        Err(e) if e.to_string().contains(PROBE_MARKER) => yaml_location(&e),
        _ => None,
    }
}

pub(in crate::policy) struct Probe<'p, 'a> {
    pub(in crate::policy) path: &'p [Step<'a>],
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
pub(in crate::policy) struct Hit;

impl<'de> Visitor<'de> for Hit {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PROBE_MARKER)
    }
}

/// Walks into the value under `key` of a mapping, or item `index` of a
/// sequence, skipping everything else.
pub(in crate::policy) struct Walk<'p, 'a> {
    pub(in crate::policy) key: Option<&'p str>,
    pub(in crate::policy) index: usize,
    pub(in crate::policy) rest: &'p [Step<'a>],
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
