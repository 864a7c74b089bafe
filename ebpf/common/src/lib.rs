//! The kernel/user ABI of Warden: every type that crosses between the eBPF
//! programs and the daemon, and the names of every map and program.
//!
//! One module per part of the ABI, all re-exported here, so every item is
//! `warden_common::X` (the `names`, `limits` and small constant modules
//! such as `rule` or `sys_exit_mode` keep their own path):
//! - `names`: map and program names; `limits`: map capacities.
//! - `events`: the ring buffer records and the decision, method, kind ids.
//! - `maps`: keys and values of the policy maps; `holds`: of `HELD` and
//!   `GRANTS`; `counters`: of `COUNTERS` and `AGENT_COUNTERS`.
//! - `paths`: sizes and flags of resolved paths; `offsets`: the kernel
//!   struct offsets handed to the programs; `kernel`: the kernel's own
//!   numbers (errno, signals, syscalls, file flags).
//!
//! Rules for these files (see STYLE.md):
//! - `#[repr(C)]`, `Copy`, no implicit padding (explicit `_pad` fields, `u32`
//!   flags instead of `bool`), and a size assertion for every type.
//! - Numeric ids of event kinds, decisions and methods are never reused: add
//!   new values, never renumber.
//! - `aya::Pod` is implemented only with the `user` feature, so the kernel
//!   crate never links aya.
#![no_std]

pub mod limits;
pub mod names;

mod budgets;
mod cache;
mod counters;
mod events;
mod holds;
mod kernel;
mod maps;
mod offsets;
mod parked;
mod paths;
mod summaries;

pub use budgets::*;
pub use cache::*;
pub use counters::*;
pub use events::*;
pub use holds::*;
pub use kernel::*;
pub use maps::*;
pub use offsets::*;
pub use parked::*;
pub use paths::*;
pub use summaries::*;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are `repr(C)`, `Copy`, contain only integers and
    // byte arrays, and have no padding (checked by the size assertions).
    unsafe impl aya::Pod for AgentInfo {}
    unsafe impl aya::Pod for BudgetSet {}
    unsafe impl aya::Pod for BudgetUseKey {}
    unsafe impl aya::Pod for EgressDrops {}
    unsafe impl aya::Pod for Net4Key {}
    unsafe impl aya::Pod for Net6Key {}
    unsafe impl aya::Pod for NetRules {}
    unsafe impl aya::Pod for EventHeader {}
    unsafe impl aya::Pod for NetEvent {}
    unsafe impl aya::Pod for HoldKey {}
    unsafe impl aya::Pod for Held {}
    unsafe impl aya::Pod for PathKey {}
    unsafe impl aya::Pod for PathRule {}
    unsafe impl aya::Pod for FileRule {}
    unsafe impl aya::Pod for ExecEvent {}
    unsafe impl aya::Pod for OpenEvent {}
    unsafe impl aya::Pod for NameEvent {}
    unsafe impl aya::Pod for KernelOffsets {}
    unsafe impl aya::Pod for AgentCounters {}
    unsafe impl aya::Pod for Parked {}
    unsafe impl aya::Pod for Budget {}
    unsafe impl aya::Pod for LossKey {}
    unsafe impl aya::Pod for LossCounts {}
    unsafe impl aya::Pod for SocketEvent {}
    unsafe impl aya::Pod for SockRules {}
    unsafe impl aya::Pod for SummaryKey {}
    unsafe impl aya::Pod for SummaryCount {}
    unsafe impl aya::Pod for EscapeEvent {}
    unsafe impl aya::Pod for Member {}
    unsafe impl aya::Pod for Doomed {}
    unsafe impl aya::Pod for DnsProxy {}
    unsafe impl aya::Pod for DnsOrig {}
    unsafe impl aya::Pod for CacheKey {}
    unsafe impl aya::Pod for CacheEntry {}
}
