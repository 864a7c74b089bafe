//! Per-agent policies: YAML files parsed into a validated [`Policy`] and
//! compiled into the kernel's rule tables.
//!
//! - `model`: the normalised policy and its snapshot hash.
//! - `parse`: YAML to `Policy`, with `file:line:column: rule 'id': message`
//!   errors.
//! - `compile`: `Policy` to the LPM entries of the network hooks and of the
//!   exec and file-open hooks.
//! - `pipeline`: the one path from policy text and host capabilities to
//!   what the daemon installs, run by `policy check`, `agent add` and reload.
//!
//! The file format is documented in `policies/README.md`.

pub mod budget;
mod compile;
pub mod delegate;
pub mod host;
mod model;
mod monitor;
mod parse;
mod pipeline;

pub mod freeze;
pub mod profiles;
pub mod review;
pub mod shadow;
pub mod suggest;

pub use compile::{
    compile_network, compile_paths, learned_entry, policy_share, CompiledNet, CompiledPaths,
    Net4Entry, Net6Entry, PathEntry,
};
pub use model::{
    policy_needs, AllowedEvidence, Approvers, ChangeReview, Cidr, CidrError, CountPer, Decision,
    DeniedEvidence, Evidence, EvidenceLoss, Mode, Needs, PathMatch, Policy, Protocol, Rule,
    Selector, SocketKind, SNAPSHOT_DOMAIN,
};
pub use monitor::{Monitor, OnAlert};
pub use parse::{
    load_policy_file, parse_policy, Location, PolicyError, PolicyErrorKind, RuleRef,
    DEFAULT_HOLD_TIMEOUT, MAX_NESTING_DEPTH, MAX_PATH_BYTES, MAX_POLICY_BYTES, MAX_PREFIX_BYTES,
    MAX_RULE_ID_BYTES, POLICY_VERSION,
};
pub use pipeline::{
    check_supported, compile_delegated, compile_policy, compile_policy_file, compile_under,
    intersect_named, Capabilities, Capacity, CompiledPolicy, TableUse,
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The example policies shipped in `policies/`. The crate may be built
    /// from somewhere other than `daemon/`, so `WARDEN_POLICIES_DIR` can
    /// point at the directory.
    fn policies_dir() -> PathBuf {
        match std::env::var_os("WARDEN_POLICIES_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies"),
        }
    }

    #[test]
    fn every_example_policy_parses_and_compiles() {
        let dir = policies_dir();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (set WARDEN_POLICIES_DIR)", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for name in [
            "demo-agent.yaml",
            "payments-bot.yaml",
            "research-agent.yaml",
        ] {
            assert!(
                files.iter().any(|f| f.ends_with(name)),
                "{name} missing from {}",
                dir.display()
            );
        }
        for file in &files {
            let compiled = compile_policy_file(file, &Capabilities::assume_all())
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(!compiled.parsed.rules.is_empty(), "{}", file.display());
        }
    }

    /// "Decision rule-id" (or "Decision default") for a destination, as
    /// the kernel would decide it.
    fn decide(policy: &Policy, dst: &str, port: u16, proto: u8) -> String {
        let net = compile_network(policy).unwrap();
        let (decision, idx) =
            compile::tests::kernel_lookup(&net, dst.parse().unwrap(), port, proto);
        let decision = warden_common::Decision::from_u32(decision.into()).unwrap();
        let id = policy.rule_ids().get(idx as usize).cloned();
        format!("{decision:?} {}", id.as_deref().unwrap_or("default"))
    }

    fn example(name: &str) -> Policy {
        load_policy_file(&policies_dir().join(name)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn demo_agent_decisions() {
        use warden_common::proto::TCP;
        let policy = example("demo-agent.yaml");
        let d = |port| decide(&policy, "127.0.0.1", port, TCP);
        assert_eq!(d(18080), "Allow demo-allowed-service");
        assert_eq!(d(18081), "Deny demo-denied-service");
        assert_eq!(d(18082), "Hold demo-held-service");
        assert_eq!(d(18083), "Deny default");
        assert_eq!(decide(&policy, "127.0.0.2", 18080, TCP), "Deny default");
        let paths = compile_paths(&policy).unwrap();
        let allow = warden_common::Decision::Allow as u8;
        assert_eq!(compile::path_tests::exec(&paths, "/usr/bin/bash").0, allow);
        assert_ne!(compile::path_tests::exec(&paths, "/usr/bin/curl").0, allow);
        let (read, write) =
            compile::path_tests::open(&paths, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!((read.0 == allow, write.0 == allow), (true, false));
        assert_ne!(compile::path_tests::open(&paths, "/etc/shadow").0 .0, allow);
        let needs = policy_needs(&policy);
        assert_eq!(
            needs,
            Needs {
                network: true,
                exec: true,
                file: true,
                hold: true
            }
        );
    }

    #[test]
    fn research_agent_decisions() {
        use warden_common::proto::{TCP, UDP};
        let policy = example("research-agent.yaml");
        let d = |dst, port, proto| decide(&policy, dst, port, proto);
        assert_eq!(d("93.184.215.14", 443, TCP), "Allow web-https");
        assert_eq!(d("93.184.215.14", 80, TCP), "Deny default");
        assert_eq!(d("10.1.1.1", 443, TCP), "Deny no-rfc1918-10");
        assert_eq!(d("10.20.0.15", 443, TCP), "Hold wiki");
        assert_eq!(d("10.20.0.15", 22, TCP), "Deny no-rfc1918-10");
        assert_eq!(d("169.254.169.254", 80, TCP), "Deny no-link-local");
        assert_eq!(d("127.0.0.53", 53, UDP), "Allow local-dns");
        assert_eq!(d("2606:4700::1111", 443, TCP), "Allow web-https-v6");
        assert_eq!(d("fd12::1", 443, TCP), "Deny no-ula-v6");
        assert_eq!(d("::ffff:10.0.0.1", 443, TCP), "Deny no-rfc1918-10");
    }

    #[test]
    fn payments_bot_decisions() {
        use warden_common::proto::TCP;
        let policy = example("payments-bot.yaml");
        let d = |dst, port| decide(&policy, dst, port, TCP);
        assert_eq!(d("127.0.0.1", 8443), "Allow payments-api");
        assert_eq!(d("127.0.0.1", 8444), "Hold refunds-api");
        assert_eq!(d("169.254.169.254", 80), "Deny no-metadata");
        assert_eq!(d("fd00:ec2::254", 80), "Deny no-metadata-v6");
        assert_eq!(d("1.1.1.1", 443), "Deny default");
    }
}
