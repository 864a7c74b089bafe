//! The judges: what the agent's policy says about one action, from lookups
//! in the maps the daemon fills, before any hook carries it out. Each hook
//! that serves an action (the cgroup hooks for the network, the BPF LSM
//! hooks and the tracepoint fallback for execs and opens) calls the same
//! judge, so every mechanism decides the same way.

use warden_common::{agent_flags, rule, Decision};

/// Record mode: whether a judged deny or hold of an agent in record mode
/// goes ahead, recorded with `Method::Recorded` instead of carried out.
/// The kill switch (`rule::REVOKED`) is never recorded away.
#[inline(always)]
pub fn recorded(flags: u32, decision: Decision, rule_idx: u32) -> bool {
    flags & agent_flags::RECORD != 0 && decision != Decision::Allow && rule_idx != rule::REVOKED
}

pub mod budget;
pub mod exec;
pub mod file;
pub mod net;
pub mod sock;
