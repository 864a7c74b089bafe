//! The one policy pipeline: policy text and host capabilities to everything
//! the daemon installs (parsed policy, network and path tables, snapshot
//! hash, capacity use). `warden policy check`, `agent add` and the daemon's
//! reload all call [`compile_policy`], so a policy the check accepts is one
//! the daemon accepts.
//!
//! What depends on the host is only which mechanisms it has
//! ([`Capabilities`]). Everything else (format, compilation, the rule maps'
//! capacity) is the same on every host, so `policy check`, which may run
//! without root, without a daemon and on a machine other than the one that
//! enforces (CI), checks all of it. It does not probe the host's mechanisms:
//! that means loading the eBPF programs (root, and seconds), and the daemon
//! probes once at start. It assumes every mechanism is there
//! ([`Capabilities::assume_all`]); the daemon refuses a policy its kernel
//! cannot enforce, with the reason, and `agent add` reports that refusal.

use std::fmt;
use std::path::Path;

use warden_common::limits::{MAX_NET_ENTRIES, MAX_PATH_ENTRIES};
use warden_common::names;

use super::compile::{
    check_write_exec, compile_network, compile_paths, policy_share, CompiledNet, CompiledPaths,
};
use super::model::{policy_needs, Policy};
use super::parse::{parse_policy, read_policy_file, PolicyError, PolicyErrorKind};

/// Which enforcement mechanisms the host lacks, and why (`None`: present).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Why exec rules cannot be enforced here.
    pub exec_unavailable: Option<String>,
    /// Why file rules cannot be enforced here.
    pub file_unavailable: Option<String>,
}

impl Capabilities {
    /// Every mechanism present: what a check without the daemon's probe
    /// assumes (see the module doc).
    pub fn assume_all() -> Self {
        Self::default()
    }
}

/// How full one rule map one policy makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableUse {
    /// The map's name in the eBPF object.
    pub table: &'static str,
    /// Entries the policy writes.
    pub used: usize,
    /// Entries one policy may write ([`policy_share`] of `max_entries`).
    pub limit: usize,
}

/// The policy's use of each rule map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub net4: TableUse,
    pub net6: TableUse,
    pub exec: TableUse,
    pub file: TableUse,
}

impl Capacity {
    fn of(net: &CompiledNet, paths: &CompiledPaths) -> Self {
        let net_limit = policy_share(MAX_NET_ENTRIES);
        let path_limit = policy_share(MAX_PATH_ENTRIES);
        let table = |table, used, limit| TableUse { table, used, limit };
        Capacity {
            net4: table(names::NET4_RULES, net.v4.len(), net_limit),
            net6: table(names::NET6_RULES, net.v6.len(), net_limit),
            exec: table(names::EXEC_RULES, paths.exec.len(), path_limit),
            file: table(names::FILE_RULES, paths.file.len(), path_limit),
        }
    }

    pub fn tables(&self) -> [TableUse; 4] {
        [self.net4, self.net6, self.exec, self.file]
    }
}

impl fmt::Display for Capacity {
    /// `NET4_RULES 3/32768, NET6_RULES 0/32768, ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.tables().iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{} {}/{}", t.table, t.used, t.limit)?;
        }
        Ok(())
    }
}

/// Everything the daemon installs for one policy.
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    pub parsed: Policy,
    pub net: CompiledNet,
    pub paths: CompiledPaths,
    /// `parsed.snapshot()`, the hash the evidence names.
    pub snapshot: String,
    pub capacity: Capacity,
    /// `shadow:`: the candidate, compiled by this same pipeline (its
    /// network tables are what the kernel evaluates beside the policy).
    pub shadow: Option<Box<CompiledPolicy>>,
}

impl CompiledPolicy {
    /// The text the policy was compiled from (what the registry records).
    pub fn text(&self) -> &str {
        &self.parsed.source.text
    }
}

/// Parses, checks against `caps`, and compiles a policy. `name` is the file
/// shown in errors. A policy that does not fit the kernel's rule maps fails
/// here, naming the rule that did not fit, the count and the limit.
pub fn compile_policy(
    name: &str,
    text: &str,
    caps: &Capabilities,
) -> Result<CompiledPolicy, PolicyError> {
    let parsed = parse_policy(name, text)?;
    check_supported(&parsed, caps)?;
    // The compilers refuse what exceeds `policy_share` of a map, where they
    // know which rule overflowed.
    let mut net = compile_network(&parsed)?;
    net.budgets = super::budget::compile_budgets(&parsed)?;
    let paths = compile_paths(&parsed)?;
    // After the capacity checks, so its pass over the rules is bounded.
    check_write_exec(&parsed)?;
    let capacity = Capacity::of(&net, &paths);
    debug_assert!(capacity.tables().iter().all(|t| t.used <= t.limit));
    let snapshot = parsed.snapshot();
    let shadow = match &parsed.shadow {
        Some(c) => Some(Box::new(compile_policy(
            c.source_name(),
            &c.source.text,
            caps,
        )?)),
        None => None,
    };
    Ok(CompiledPolicy {
        parsed,
        net,
        paths,
        snapshot,
        capacity,
        shadow,
    })
}

/// The effective policy of a delegated child (`policy/delegate.rs`): the
/// intersection of `child` and `parent` (both already compiled by
/// [`compile_policy`]) through the same compilers. Its snapshot is the
/// effective policy's; its text is the child's file.
pub fn compile_delegated(
    parent: &CompiledPolicy,
    child: &CompiledPolicy,
    caps: &Capabilities,
) -> Result<CompiledPolicy, PolicyError> {
    compile_under(&parent.parsed, &child.parsed, caps)
}

/// [`compile_delegated`] from the parent's parsed policy (its effective
/// one for a grandchild): what `warden policy shadow CHILD` compiles a
/// candidate with, offline, from the registry's versions in force.
pub fn compile_under(
    parent: &Policy,
    child: &Policy,
    caps: &Capabilities,
) -> Result<CompiledPolicy, PolicyError> {
    compile_parsed(intersect_named(parent, child)?, caps)
}

/// [`super::delegate::intersect`], its error named by the child's file.
pub fn intersect_named(parent: &Policy, child: &Policy) -> Result<Policy, PolicyError> {
    super::delegate::intersect(parent, child).map_err(|e| {
        PolicyError::new(
            child.source_name(),
            None,
            None,
            PolicyErrorKind::Invalid(e.to_string()),
        )
    })
}

/// The compilers over an already intersected policy, and over its
/// (intersected) `shadow:` candidate likewise: the kernel evaluates a
/// child's candidate against the same intersection (README,
/// "Delegation").
fn compile_parsed(parsed: Policy, caps: &Capabilities) -> Result<CompiledPolicy, PolicyError> {
    check_supported(&parsed, caps)?;
    let mut net = compile_network(&parsed)?;
    net.budgets = super::budget::compile_budgets(&parsed)?;
    let paths = compile_paths(&parsed)?;
    check_write_exec(&parsed)?;
    let capacity = Capacity::of(&net, &paths);
    let snapshot = parsed.snapshot();
    let shadow = match &parsed.shadow {
        Some(c) => Some(Box::new(compile_parsed((**c).clone(), caps)?)),
        None => None,
    };
    Ok(CompiledPolicy {
        parsed,
        net,
        paths,
        snapshot,
        capacity,
        shadow,
    })
}

/// [`compile_policy`] of a file; errors name the file as `path` displays.
pub fn compile_policy_file(
    path: &Path,
    caps: &Capabilities,
) -> Result<CompiledPolicy, PolicyError> {
    let (name, text) = read_policy_file(path)?;
    compile_policy(&name, &text, caps)
}

/// Refuses policies that need a mechanism this host does not have, rather
/// than silently allowing what it cannot see.
pub fn check_supported(p: &Policy, caps: &Capabilities) -> Result<(), PolicyError> {
    let needs = policy_needs(p);
    let mut missing = Vec::new();
    if let (true, Some(why)) = (needs.exec, &caps.exec_unavailable) {
        missing.push(format!("exec rules need tp_btf/sched_process_exec: {why}"));
    }
    if let (true, Some(why)) = (needs.file, &caps.file_unavailable) {
        missing.push(format!("file rules need tp_btf/sys_exit: {why}"));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        let kind = PolicyErrorKind::Unsupported { missing };
        Err(PolicyError::new(p.source_name(), None, None, kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Policy {
        parse_policy("p.yaml", yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    fn caps(exec: Option<&str>, file: Option<&str>) -> Capabilities {
        Capabilities {
            exec_unavailable: exec.map(Into::into),
            file_unavailable: file.map(Into::into),
        }
    }

    #[test]
    fn policies_needing_a_missing_mechanism_are_refused_with_the_reason() {
        let net = parse(
            "version: 1\nrules:\n  - id: a\n    connect: { to: 10.0.0.1 }\n    decision: allow\n",
        );
        let both = parse(
            "version: 1\nrules:\n  - id: a\n    exec: { path: /bin/sh }\n    decision: allow\n  \
             - id: b\n    file: { prefix: /etc/, access: [read] }\n    decision: allow\n",
        );
        let check = |p: &Policy, c: Capabilities| check_supported(p, &c).map_err(|e| e.to_string());
        assert_eq!(check(&net, caps(Some("no BTF"), Some("no BTF"))), Ok(()));
        assert_eq!(check(&both, Capabilities::assume_all()), Ok(()));
        assert_eq!(
            check(&both, caps(Some("no BTF"), None)),
            Err(
                "p.yaml: exec rules need tp_btf/sched_process_exec: no BTF; refusing the policy"
                    .into()
            )
        );
        assert_eq!(
            check(&both, caps(Some("x"), Some("y"))),
            Err(
                "p.yaml: exec rules need tp_btf/sched_process_exec: x; file rules need \
                 tp_btf/sys_exit: y; refusing the policy"
                    .into()
            )
        );
    }

    /// A policy of `n` exact file rules, each its own path.
    fn file_rules(n: usize) -> String {
        let mut yaml = String::from("version: 1\nrules:\n");
        for i in 0..n {
            yaml.push_str(&format!(
                "  - id: f{i}\n    file: {{ path: /srv/data/f{i}, access: [read] }}\n    \
                 decision: allow\n"
            ));
        }
        yaml
    }

    fn capacity_error(n: usize) -> Option<(String, usize, usize, usize)> {
        let yaml = file_rules(n);
        match compile_policy("big.yaml", &yaml, &Capabilities::assume_all()) {
            Ok(_) => None,
            Err(e) => match &e.kind {
                PolicyErrorKind::TooManyPaths {
                    kind: "file",
                    needed,
                    max,
                } => Some((
                    e.to_string(),
                    e.location.map_or(0, |l| l.line),
                    *needed,
                    *max,
                )),
                other => panic!("not a capacity error: {other}"),
            },
        }
    }

    /// The bug of issue #13: `policy check` accepted this (it only compiled
    /// the network rules) and the daemon then refused it.
    #[test]
    fn twenty_thousand_file_rules_are_refused_with_the_count_and_the_limit() {
        let limit = policy_share(MAX_PATH_ENTRIES);
        let (message, line, needed, max) = capacity_error(20_000).expect("refused");
        assert_eq!((needed, max), (20_000, limit));
        // The first rule that does not fit, at its `- id:` line.
        assert_eq!(line, 3 + 3 * limit);
        assert!(
            message.starts_with(&format!(
                "big.yaml:{line}:5: rule 'f{limit}': the policy's file"
            )),
            "{message}"
        );
        assert!(message.contains("need 20000 distinct paths"), "{message}");
        assert!(message.contains(&format!("at most {limit} ")), "{message}");
    }

    #[test]
    fn the_file_map_share_is_exactly_the_boundary() {
        let limit = policy_share(MAX_PATH_ENTRIES);
        let fits = compile_policy("big.yaml", &file_rules(limit), &Capabilities::assume_all())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            fits.capacity.file,
            TableUse {
                table: names::FILE_RULES,
                used: limit,
                limit
            }
        );
        assert_eq!(
            capacity_error(limit + 1).map(|(_, _, needed, max)| (needed, max)),
            Some((limit + 1, limit))
        );
    }

    #[test]
    fn one_cidr_too_many_is_refused_naming_its_rule() {
        let limit = policy_share(MAX_NET_ENTRIES);
        let mut yaml = String::from("version: 1\nrules:\n");
        for i in 0..=limit {
            let addr = std::net::Ipv4Addr::from(0x0a00_0000 + i as u32);
            yaml.push_str(&format!(
                "  - id: n{i}\n    connect: {{ to: {addr} }}\n    decision: allow\n"
            ));
        }
        let err = compile_policy("net.yaml", &yaml, &Capabilities::assume_all()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "net.yaml:{}:5: rule 'n{limit}': the policy's connect rules need {} distinct \
                 IPv4 CIDRs in the kernel; one policy may use at most {limit} (its agent's share \
                 of the map: 1/16, so 8 agents with full policies fit, mid-reload included)",
                3 + 3 * limit,
                limit + 1
            )
        );
    }

    #[test]
    fn the_pipeline_is_what_the_steps_give() {
        let yaml = "version: 1\nrules:\n  - id: a\n    connect: { to: 10.0.0.0/8 }\n    \
                    decision: allow\n  - id: b\n    exec: { path: /bin/sh }\n    decision: allow\n";
        let c = compile_policy("p.yaml", yaml, &Capabilities::assume_all()).unwrap();
        let parsed = parse(yaml);
        assert_eq!(c.snapshot, parsed.snapshot());
        assert_eq!(c.net, compile_network(&parsed).unwrap());
        assert_eq!(c.paths, compile_paths(&parsed).unwrap());
        assert_eq!(c.text(), yaml);
        assert_eq!(
            c.capacity.to_string(),
            format!(
                "NET4_RULES 1/{n}, NET6_RULES 0/{n}, EXEC_RULES 1/{p}, FILE_RULES 0/{p}",
                n = policy_share(MAX_NET_ENTRIES),
                p = policy_share(MAX_PATH_ENTRIES)
            )
        );
        // A mechanism the host lacks refuses it before anything compiles.
        let err = compile_policy("p.yaml", yaml, &caps(Some("disabled"), None)).unwrap_err();
        assert!(
            matches!(err.kind, PolicyErrorKind::Unsupported { .. }),
            "{err}"
        );
    }

    /// The error of compiling `rules` (YAML list items), or None.
    fn write_exec_error(rules: &str) -> Option<String> {
        let yaml = format!("version: 1\nrules:\n{rules}");
        compile_policy("we.yaml", &yaml, &Capabilities::assume_all())
            .err()
            .map(|e| {
                assert!(matches!(e.kind, PolicyErrorKind::WriteExec(_)), "{e}");
                e.to_string()
            })
    }

    const EXEC_TOOL: &str =
        "  - id: run-tool\n    exec: { path: /work/bin/tool }\n    decision: allow\n";

    #[test]
    fn writing_an_executable_exact_path_is_refused_with_both_rule_ids() {
        let write =
            "  - id: edit-tool\n    file: { path: /work/bin/tool, access: [read, write] }\n    \
                     decision: allow\n";
        assert_eq!(
            write_exec_error(&format!("{EXEC_TOOL}{write}")).as_deref(),
            Some(
                "we.yaml:6:5: rule 'edit-tool': rule 'edit-tool' lets the agent write \
                 /work/bin/tool, which rule 'run-tool' lets it execute (an agent must not write \
                 what it may run); narrow one of them, or add `allow_write_exec: true` to either \
                 rule to accept it"
            )
        );
        // Read-only is fine; so is a write the policy denies.
        let read = "  - id: read-tool\n    file: { path: /work/bin/tool, access: [read] }\n    \
                    decision: allow\n";
        assert_eq!(write_exec_error(&format!("{EXEC_TOOL}{read}")), None);
        assert_eq!(
            write_exec_error(&format!("{EXEC_TOOL}{}", write.replace("allow", "deny"))),
            None
        );
        // Hold may end in allow: refused like allow.
        assert!(
            write_exec_error(&format!("{EXEC_TOOL}{}", write.replace("allow", "hold"))).is_some()
        );
        // A denied exec next to a writable path is fine.
        assert_eq!(
            write_exec_error(&format!("{}{write}", EXEC_TOOL.replace("allow", "deny"))),
            None
        );
    }

    #[test]
    fn a_writable_prefix_over_an_executable_path_is_refused() {
        let write = "  - id: work-rw\n    file: { prefix: /work/, access: [write] }\n    \
                     decision: allow\n";
        let err = write_exec_error(&format!("{EXEC_TOOL}{write}")).expect("refused");
        assert!(
            err.contains(
                "rule 'work-rw' lets the agent write /work/bin/tool, which rule 'run-tool'"
            ),
            "{err}"
        );
        // Either way round: a writable path under an executable prefix.
        let exec_prefix = "  - id: run-work\n    exec: { prefix: /work/ }\n    decision: allow\n";
        let write_file = "  - id: out\n    file: { path: /work/out.txt, access: [write] }\n    \
                          decision: allow\n";
        let err = write_exec_error(&format!("{exec_prefix}{write_file}")).expect("refused");
        assert!(
            err.contains("write /work/out.txt, which rule 'run-work'"),
            "{err}"
        );
        // A sibling directory does not overlap.
        let elsewhere = write.replace("/work/", "/workspace/");
        assert_eq!(write_exec_error(&format!("{EXEC_TOOL}{elsewhere}")), None);
    }

    #[test]
    fn overlapping_prefixes_are_refused_unless_a_deny_carves_the_overlap_out() {
        let exec = "  - id: run-bin\n    exec: { prefix: /work/bin/ }\n    decision: allow\n";
        let write = "  - id: work-rw\n    file: { prefix: /work/, access: [read, write] }\n    \
                     decision: allow\n";
        let err = write_exec_error(&format!("{exec}{write}")).expect("refused");
        assert!(
            err.contains("write /work/bin/*, which rule 'run-bin'"),
            "{err}"
        );
        // The inner prefix writable under an outer executable one.
        let outer_exec = "  - id: run-all\n    exec: { prefix: /opt/ }\n    decision: allow\n";
        let inner_write = "  - id: cache\n    file: { prefix: /opt/cache/, access: [write] }\n    \
                           decision: allow\n";
        let err = write_exec_error(&format!("{outer_exec}{inner_write}")).expect("refused");
        assert!(
            err.contains("write /opt/cache/*, which rule 'run-all'"),
            "{err}"
        );
        // A more specific deny (write or exec) removes the overlap.
        let carve_write = "  - id: bin-ro\n    file: { prefix: /work/bin/, access: [write] }\n    \
                           decision: deny\n";
        assert_eq!(
            write_exec_error(&format!("{exec}{write}{carve_write}")),
            None
        );
        let carve_exec =
            "  - id: no-cache-exec\n    exec: { prefix: /opt/cache/ }\n    decision: deny\n";
        assert_eq!(
            write_exec_error(&format!("{outer_exec}{inner_write}{carve_exec}")),
            None
        );
    }

    #[test]
    fn allow_write_exec_on_either_rule_accepts_the_overlap() {
        let exec = "  - id: run-bin\n    exec: { prefix: /work/bin/ }\n    decision: allow\n";
        let write = "  - id: work-rw\n    file: { prefix: /work/, access: [write] }\n    \
                     decision: allow\n";
        let flag = "    allow_write_exec: true\n";
        assert_eq!(write_exec_error(&format!("{exec}{flag}{write}")), None);
        assert_eq!(write_exec_error(&format!("{exec}{write}{flag}")), None);
        // The flag is part of the policy's meaning, so of its snapshot; a
        // policy without it keeps the hash it had before the flag existed.
        let with = parse(&format!("version: 1\nrules:\n{exec}{flag}{write}"));
        let without = parse(&format!("version: 1\nrules:\n{exec}"));
        assert!(with.canonical_json().contains("\"allow_write_exec\":true"));
        assert!(!without.canonical_json().contains("allow_write_exec"));
        // Not meaningful on a connect rule: refused.
        let err = parse_policy(
            "c.yaml",
            "version: 1\nrules:\n  - id: a\n    connect: { to: 10.0.0.1 }\n    decision: allow\n    \
             allow_write_exec: true\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("`allow_write_exec` applies to `exec` and `file` rules only"),
            "{err}"
        );
    }

    #[test]
    fn the_example_policies_compile() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                compile_policy_file(&path, &Capabilities::assume_all())
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
}
