//! Host names in `connect: { host: ... }` rules: an exact name, a leading
//! `*.` wildcard (one or more labels below the domain, never the domain
//! itself), or `*` (every name). Names are compared lowercase, without a
//! trailing dot; internationalised names are written in their ASCII
//! (`xn--`) form, as they travel in DNS.

use std::fmt;

use serde::Serialize;

/// Longest DNS name in text form (RFC 1035: 255 octets on the wire).
pub const MAX_NAME_BYTES: usize = 253;
/// Longest label (RFC 1035).
pub const MAX_LABEL_BYTES: usize = 63;

/// A validated, lowercase host pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Exactly this name.
    Exact(String),
    /// Any name ending in `.` + this domain (`*.github.com` holds
    /// `api.github.com` and `a.b.github.com`, not `github.com`).
    Below(String),
    /// `*`: every name.
    Any,
}

impl HostPattern {
    /// Parses a pattern as written in a policy.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(HostPattern::Any);
        }
        if !text.is_ascii() {
            return Err(format!(
                "host '{text}' is not ASCII: write internationalised names in their ASCII form \
                 (xn--...)"
            ));
        }
        let lower = text.to_ascii_lowercase();
        let (below, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        check_name(name).map_err(|e| format!("host '{text}': {e}"))?;
        Ok(if below {
            HostPattern::Below(name.to_string())
        } else {
            HostPattern::Exact(name.to_string())
        })
    }

    /// Whether a queried name (any case, with or without the trailing
    /// dot) is matched.
    pub fn matches(&self, name: &str) -> bool {
        let name = normalise(name);
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(n) => name == *n,
            HostPattern::Below(d) => {
                name.len() > d.len() + 1
                    && name.ends_with(d.as_str())
                    && name.as_bytes()[name.len() - d.len() - 1] == b'.'
            }
        }
    }

    /// How specific the pattern is: an exact name before any wildcard, a
    /// longer wildcard domain before a shorter one, `*` last.
    pub fn specificity(&self) -> (u8, usize) {
        match self {
            HostPattern::Exact(n) => (2, n.len()),
            HostPattern::Below(d) => (1, d.len()),
            HostPattern::Any => (0, 0),
        }
    }
}

/// A queried name as patterns compare it: lowercase, no trailing dot.
pub fn normalise(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".to_string());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("longer than {MAX_NAME_BYTES} bytes"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label".to_string());
        }
        if label.len() > MAX_LABEL_BYTES {
            return Err(format!(
                "label '{label}' is longer than {MAX_LABEL_BYTES} bytes"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "label '{label}' may hold only letters, digits, '-' and '_' (a '*' only as the \
                 whole first label)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label '{label}' starts or ends with '-'"));
        }
    }
    Ok(())
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(n) => f.write_str(n),
            HostPattern::Below(d) => write!(f, "*.{d}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}

impl Serialize for HostPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_match_case_insensitively_with_or_without_the_dot() {
        let p = HostPattern::parse("API.Example.com.").unwrap();
        assert_eq!(p, HostPattern::Exact("api.example.com".into()));
        assert!(p.matches("api.example.com"));
        assert!(p.matches("API.EXAMPLE.COM."));
        assert!(!p.matches("x.api.example.com"));
        assert!(!p.matches("example.com"));
    }

    #[test]
    fn wildcards_match_one_or_more_labels_but_not_the_domain() {
        let p = HostPattern::parse("*.github.com").unwrap();
        assert!(p.matches("api.github.com"));
        assert!(p.matches("a.b.github.com."));
        assert!(!p.matches("github.com"));
        assert!(!p.matches("evilgithub.com"));
        assert!(!p.matches(".github.com"));
        assert!(HostPattern::parse("*").unwrap().matches("anything.example"));
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        for (bad, why) in [
            ("bücher.example", "ASCII form"),
            ("a.*.example", "only as the whole first label"),
            ("*example.com", "only as the whole first label"),
            ("a..b", "empty label"),
            ("", "empty name"),
            ("-a.example", "starts or ends"),
            ("a b.example", "letters, digits"),
        ] {
            let e = HostPattern::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let long = format!("{}.example", "a".repeat(64));
        assert!(HostPattern::parse(&long)
            .unwrap_err()
            .contains("longer than 63"));
        assert!(HostPattern::parse("xn--bcher-kva.example").is_ok());
    }

    #[test]
    fn specificity_orders_exact_then_longer_wildcards_then_any() {
        let mut v = [
            HostPattern::parse("*").unwrap(),
            HostPattern::parse("*.example.com").unwrap(),
            HostPattern::parse("a.example.com").unwrap(),
            HostPattern::parse("*.b.example.com").unwrap(),
        ];
        v.sort_by_key(|p| std::cmp::Reverse(p.specificity()));
        let shown: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["a.example.com", "*.b.example.com", "*.example.com", "*"]
        );
    }
}
