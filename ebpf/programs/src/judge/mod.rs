//! The judges: what the agent's policy says about one action, from lookups
//! in the maps the daemon fills, before any hook carries it out. Each hook
//! that serves an action (the cgroup hooks for the network, the BPF LSM
//! hooks and the tracepoint fallback for execs and opens) calls the same
//! judge, so every mechanism decides the same way.

pub mod exec;
pub mod file;
pub mod net;
pub mod sock;
