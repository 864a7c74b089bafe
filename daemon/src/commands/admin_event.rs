//! The evidence entries the CLI verbs write for what a person did to an
//! agent or to Warden (register, remove, run, kill, revive, uninstall): one
//! variant per verb, one place that spells out each entry's fields.

use std::{path::Path, time::Duration};

use serde_json::{json, Map, Value};

use crate::{
    actor::{Actor, Recorded},
    evidence::NewEntry,
    kernel::Revocation,
    registry::Agent,
};

pub enum AdminEvent<'a> {
    /// `warden agent add`: the agent as registered, under the snapshot of
    /// the policy it was registered with.
    Register {
        agent: &'a Agent,
        policy_snapshot: &'a str,
    },
    /// `warden agent remove`.
    Remove { agent: &'a Agent },
    /// `warden run`: a command started as the agent.
    Run {
        agent: &'a Agent,
        policy_snapshot: &'a str,
        argv: &'a [String],
        /// `--user`, `None` for the caller.
        run_as: Option<&'a str>,
        cgroup: &'a str,
        confinement: Value,
    },
    /// `warden kill`.
    Kill {
        agent: &'a Agent,
        reason: &'a str,
        freeze: bool,
        /// (pid, exe) of the processes that were in the cgroup.
        processes: &'a [(u32, String)],
        kernel: Revocation,
        to_kernel: Duration,
    },
    /// `warden revive`.
    Revive { agent: &'a Agent, reason: &'a str },
    /// `warden uninstall`.
    Uninstall {
        pin_dir: &'a Path,
        pins_removed: usize,
    },
}

impl AdminEvent<'_> {
    /// The evidence entry recording that `actor` did this.
    pub fn entry(self, actor: &Actor) -> NewEntry {
        let mut details = Map::new();
        match self {
            AdminEvent::Register {
                agent,
                policy_snapshot,
            } => {
                details.insert("cgroup".into(), json!(agent.cgroup.display().to_string()));
                details.insert("adopted".into(), json!(agent.adopted));
                details.insert("agent_id".into(), json!(agent.id));
                if let Some(parent) = &agent.parent {
                    details.insert("parent".into(), json!(parent));
                }
                actor.entry(Recorded {
                    kind: "agent_register",
                    agent: &agent.name,
                    owner: &agent.owner,
                    action: "agent.register",
                    target: &agent.policy,
                    decision: "registered",
                    policy_snapshot,
                    details,
                })
            }
            AdminEvent::Remove { agent } => actor.entry(Recorded {
                kind: "agent_remove",
                agent: &agent.name,
                owner: &agent.owner,
                action: "agent.remove",
                target: &agent.cgroup.display().to_string(),
                decision: "removed",
                policy_snapshot: "none",
                details,
            }),
            AdminEvent::Run {
                agent,
                policy_snapshot,
                argv,
                run_as,
                cgroup,
                confinement,
            } => {
                details.insert("argv".into(), json!(argv));
                details.insert("run_as".into(), json!(run_as.unwrap_or("(caller)")));
                details.insert("cgroup".into(), json!(cgroup));
                details.insert("confinement".into(), confinement);
                actor.entry(Recorded {
                    kind: "run",
                    agent: &agent.name,
                    owner: &agent.owner,
                    action: "run",
                    target: &shell_words(argv),
                    decision: "started",
                    policy_snapshot,
                    details,
                })
            }
            AdminEvent::Kill {
                agent,
                reason,
                freeze,
                processes,
                kernel,
                to_kernel,
            } => {
                details.insert("reason".into(), json!(reason));
                details.insert("mode".into(), json!(if freeze { "freeze" } else { "kill" }));
                details.insert(
                    "processes".into(),
                    json!(processes
                        .iter()
                        .map(|(pid, exe)| json!({"pid": pid, "exe": exe}))
                        .collect::<Vec<_>>()),
                );
                details.insert(
                    "kernel".into(),
                    json!(match kernel {
                        Revocation::Applied => "revoked flag set in the pinned AGENTS map",
                        Revocation::NoPins =>
                            "no Warden programs loaded: nothing to revoke in the kernel",
                    }),
                );
                details.insert("to_kernel_us".into(), json!(to_kernel.as_micros() as u64));
                actor.entry(Recorded {
                    kind: "kill",
                    agent: &agent.name,
                    owner: &agent.owner,
                    action: "agent.kill",
                    target: &agent.cgroup.display().to_string(),
                    decision: "revoked",
                    policy_snapshot: "none",
                    details,
                })
            }
            AdminEvent::Revive { agent, reason } => {
                details.insert("reason".into(), json!(reason));
                actor.entry(Recorded {
                    kind: "revive",
                    agent: &agent.name,
                    owner: &agent.owner,
                    action: "agent.revive",
                    target: &agent.cgroup.display().to_string(),
                    decision: "active",
                    policy_snapshot: "none",
                    details,
                })
            }
            AdminEvent::Uninstall {
                pin_dir,
                pins_removed,
            } => {
                details.insert("pins_removed".into(), json!(pins_removed));
                details.insert("pin_dir".into(), json!(pin_dir.display().to_string()));
                actor.entry(Recorded {
                    kind: "uninstall",
                    agent: "warden",
                    owner: "system",
                    action: "warden.uninstall",
                    target: &pin_dir.display().to_string(),
                    decision: "removed",
                    policy_snapshot: "none",
                    details,
                })
            }
        }
    }
}

/// `argv` as one line a shell would split back into it (the `run` target).
fn shell_words(cmd: &[String]) -> String {
    cmd.iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::registry::AgentStatus;

    #[test]
    fn shell_words_quotes_only_when_needed() {
        let cmd = vec![
            "curl".to_string(),
            "-s".into(),
            "http://x/a b".into(),
            "it's".into(),
        ];
        assert_eq!(shell_words(&cmd), r"curl -s 'http://x/a b' 'it'\''s'");
    }

    fn actor() -> Actor {
        Actor {
            uid: 0,
            loginuid: 1000,
            user: "root".into(),
            login_user: "alice".into(),
            pid: 42,
            exe: "/usr/bin/warden".into(),
        }
    }

    fn agent() -> Agent {
        Agent {
            id: 7,
            name: "bot".into(),
            owner: "alice@example.com".into(),
            policy: "bot.yaml".into(),
            cgroup: PathBuf::from("/sys/fs/cgroup/warden/bot"),
            adopted: false,
            status: AgentStatus::Active,
            created_at_ns: 1,
            created_by: "root".into(),
            parent: None,
        }
    }

    /// kind, agent, owner, action, target, decision, policy_snapshot and
    /// details: what an auditor's queries and the export depend on.
    fn fields(e: &NewEntry) -> Value {
        assert_eq!((e.uid, e.loginuid, e.pid), (0, 1000, 42));
        assert_eq!((e.user.as_str(), e.login_user.as_str()), ("root", "alice"));
        assert_eq!(e.exe, "/usr/bin/warden");
        assert_eq!((e.rule_id.as_str(), e.method.as_str()), ("n/a", "n/a"));
        json!([
            e.kind,
            e.agent,
            e.owner,
            e.action,
            e.target,
            e.decision,
            e.policy_snapshot,
            e.details
        ])
    }

    #[test]
    fn register() {
        let agent = agent();
        let e = AdminEvent::Register {
            agent: &agent,
            policy_snapshot: "abc",
        }
        .entry(&actor());
        assert_eq!(
            fields(&e),
            json!(["agent_register", "bot", "alice@example.com", "agent.register", "bot.yaml",
                "registered", "abc",
                {"cgroup": "/sys/fs/cgroup/warden/bot", "adopted": false, "agent_id": 7}])
        );
    }

    #[test]
    fn remove() {
        let agent = agent();
        let e = AdminEvent::Remove { agent: &agent }.entry(&actor());
        assert_eq!(
            fields(&e),
            json!([
                "agent_remove",
                "bot",
                "alice@example.com",
                "agent.remove",
                "/sys/fs/cgroup/warden/bot",
                "removed",
                "none",
                {}
            ])
        );
    }

    #[test]
    fn run() {
        let agent = agent();
        let argv = vec!["curl".to_string(), "http://x/a b".into()];
        let e = AdminEvent::Run {
            agent: &agent,
            policy_snapshot: "abc",
            argv: &argv,
            run_as: None,
            cgroup: "/sys/fs/cgroup/warden/bot",
            confinement: json!({"landlock": "full"}),
        }
        .entry(&actor());
        assert_eq!(
            fields(&e),
            json!(["run", "bot", "alice@example.com", "run", "curl 'http://x/a b'", "started",
                "abc",
                {"argv": ["curl", "http://x/a b"], "run_as": "(caller)",
                 "cgroup": "/sys/fs/cgroup/warden/bot", "confinement": {"landlock": "full"}}])
        );
        let e = AdminEvent::Run {
            agent: &agent,
            policy_snapshot: "abc",
            argv: &argv,
            run_as: Some("svc"),
            cgroup: "/sys/fs/cgroup/warden/bot",
            confinement: json!(null),
        }
        .entry(&actor());
        assert_eq!(e.details["run_as"], json!("svc"));
    }

    #[test]
    fn kill() {
        let agent = agent();
        let processes = vec![(100, "/usr/bin/curl".to_string())];
        let e = AdminEvent::Kill {
            agent: &agent,
            reason: "leak",
            freeze: false,
            processes: &processes,
            kernel: Revocation::Applied,
            to_kernel: Duration::from_micros(1234),
        }
        .entry(&actor());
        assert_eq!(
            fields(&e),
            json!(["kill", "bot", "alice@example.com", "agent.kill", "/sys/fs/cgroup/warden/bot",
                "revoked", "none",
                {"reason": "leak", "mode": "kill",
                 "processes": [{"pid": 100, "exe": "/usr/bin/curl"}],
                 "kernel": "revoked flag set in the pinned AGENTS map", "to_kernel_us": 1234}])
        );
        let e = AdminEvent::Kill {
            agent: &agent,
            reason: "leak",
            freeze: true,
            processes: &[],
            kernel: Revocation::NoPins,
            to_kernel: Duration::ZERO,
        }
        .entry(&actor());
        assert_eq!(e.details["mode"], json!("freeze"));
        assert_eq!(
            e.details["kernel"],
            json!("no Warden programs loaded: nothing to revoke in the kernel")
        );
    }

    #[test]
    fn revive() {
        let agent = agent();
        let e = AdminEvent::Revive {
            agent: &agent,
            reason: "fixed",
        }
        .entry(&actor());
        assert_eq!(
            fields(&e),
            json!(["revive", "bot", "alice@example.com", "agent.revive",
                "/sys/fs/cgroup/warden/bot", "active", "none", {"reason": "fixed"}])
        );
    }

    #[test]
    fn uninstall() {
        let e = AdminEvent::Uninstall {
            pin_dir: Path::new("/sys/fs/bpf/warden"),
            pins_removed: 3,
        }
        .entry(&actor());
        assert_eq!(
            fields(&e),
            json!(["uninstall", "warden", "system", "warden.uninstall", "/sys/fs/bpf/warden",
                "removed", "none", {"pins_removed": 3, "pin_dir": "/sys/fs/bpf/warden"}])
        );
    }
}
