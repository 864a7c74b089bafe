//! Scalar values of a policy (rule ids, CIDRs, paths, ports, durations,
//! principals), each a newtype whose visitor checks it.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::policy::model::Cidr;

use super::*;

/// A visitor for one string scalar, validated by `parse`.
pub(in crate::policy) struct StrVisitor<T> {
    pub(in crate::policy) expecting: &'static str,
    pub(in crate::policy) parse: fn(&str) -> Result<T, String>,
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

pub(in crate::policy) struct RuleId(pub(in crate::policy) String);
string_newtype!(RuleId, "a rule id such as `payments-api`", |s| {
    check_rule_id(s).map(|()| RuleId(s.to_string()))
});

pub(in crate::policy) struct CidrSpec(pub(in crate::policy) Cidr);
string_newtype!(CidrSpec, "an IP address or CIDR such as 10.0.0.0/8", |s| {
    let cidr = s.parse().map_err(|e| format!("invalid CIDR '{s}': {e}"))?;
    Ok(CidrSpec(cidr))
});

/// `host: api.example.com`, `host: "*.example.com"` or `host: "*"`.
pub(in crate::policy) struct HostSpec(pub(in crate::policy) crate::policy::host::HostPattern);
string_newtype!(
    HostSpec,
    "a host name such as api.example.com, *.example.com or *",
    |s| { crate::policy::host::HostPattern::parse(s).map(HostSpec) }
);

pub(in crate::policy) struct ExactPath(pub(in crate::policy) String);
string_newtype!(ExactPath, "an absolute path such as /usr/bin/curl", |s| {
    check_path(s, false).map(|()| ExactPath(s.to_string()))
});

pub(in crate::policy) struct DirPrefix(pub(in crate::policy) String);
string_newtype!(
    DirPrefix,
    "a directory ending in '/', such as /usr/bin/",
    |s| { check_path(s, true).map(|()| DirPrefix(s.to_string())) }
);

pub(in crate::policy) struct HoldTimeout(pub(in crate::policy) Duration);
string_newtype!(HoldTimeout, "a duration such as 30s, 15m or 2h", |s| {
    parse_hold_timeout(s).map(HoldTimeout)
});

pub(in crate::policy) struct Principal(pub(in crate::policy) String);
string_newtype!(Principal, "a user or group name", |s| {
    check_principal(s).map(|()| Principal(s.to_string()))
});

/// `[a-z0-9][a-z0-9._-]{0,63}`.
pub(in crate::policy) fn check_rule_id(s: &str) -> Result<(), String> {
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
pub(in crate::policy) fn check_path(s: &str, is_prefix: bool) -> Result<(), String> {
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
pub(in crate::policy) fn parse_hold_timeout(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid hold_timeout '{s}': write a whole number followed by s, m or h, such as 15m"
        )
    };
    let secs = crate::clock::whole_secs(s, "smh").ok_or_else(bad)?;
    match Duration::from_secs(secs) {
        d if (MIN_HOLD_TIMEOUT..=MAX_HOLD_TIMEOUT).contains(&d) => Ok(d),
        _ => Err(format!(
            "hold_timeout '{s}' is out of range; it must be between 1s and 24h"
        )),
    }
}

pub(in crate::policy) fn check_principal(s: &str) -> Result<(), String> {
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
pub(in crate::policy) struct Version;

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
pub(in crate::policy) struct PortSpec(pub(in crate::policy) u16, pub(in crate::policy) u16);

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

pub(in crate::policy) fn check_port(s: &str) -> Result<u16, String> {
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

pub(in crate::policy) fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
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
