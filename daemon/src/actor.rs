//! The actor: the person (and process) behind an operation that is not a
//! kernel decision, such as registering an agent, loading a policy or
//! starting a command. Identified from the kernel's view of the caller (own
//! credentials, or SO_PEERCRED on the control socket), never from a flag.

use serde_json::Map;

use crate::{
    attribution::{ProcessFacts, UserNames},
    evidence::NewEntry,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub uid: u32,
    pub loginuid: u32,
    pub user: String,
    pub login_user: String,
    pub pid: u32,
    pub exe: String,
}

impl Actor {
    /// This process.
    pub fn current() -> Self {
        Self::of(nix::unistd::getuid().as_raw(), std::process::id())
    }

    /// Another process, by uid and pid (e.g. a control socket peer).
    pub fn of(uid: u32, pid: u32) -> Self {
        let facts = ProcessFacts::read(pid, "unknown");
        let mut names = UserNames::default();
        Self {
            uid,
            loginuid: facts.loginuid,
            user: names.name(uid),
            login_user: names.name(facts.loginuid),
            pid,
            exe: facts.exe,
        }
    }

    /// Short form for tables and registry columns: "alice" or "root (login alice)".
    pub fn describe(&self) -> String {
        if self.loginuid == crate::attribution::LOGINUID_UNSET || self.login_user == self.user {
            self.user.clone()
        } else {
            format!("{} (login {})", self.user, self.login_user)
        }
    }

    /// An evidence entry for something this actor did.
    pub fn entry(&self, what: Recorded<'_>) -> NewEntry {
        NewEntry {
            ts_ns: crate::clock::now_ns(),
            kind: what.kind.into(),
            agent: what.agent.into(),
            owner: what.owner.into(),
            uid: self.uid,
            loginuid: self.loginuid,
            user: self.user.clone(),
            login_user: self.login_user.clone(),
            pid: self.pid,
            exe: self.exe.clone(),
            action: what.action.into(),
            target: what.target.into(),
            decision: what.decision.into(),
            rule_id: "n/a".into(),
            policy_snapshot: what.policy_snapshot.into(),
            method: "n/a".into(),
            details: what.details,
        }
    }
}

/// The parts of an actor's evidence entry that vary.
pub struct Recorded<'a> {
    pub kind: &'a str,
    pub agent: &'a str,
    pub owner: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub decision: &'a str,
    pub policy_snapshot: &'a str,
    pub details: Map<String, serde_json::Value>,
}
