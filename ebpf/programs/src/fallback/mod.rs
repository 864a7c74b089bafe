//! The tracepoint fallback, for kernels without BPF LSM: execs decided at
//! `sched_process_exec` and opens at `sys_exit`, after the action took
//! effect, so a denial kills the process and a hold stops it (`hold`).

pub mod cache;
pub mod carry;
pub mod doomed;
pub mod exec;
pub mod file;
pub mod hold;
pub mod names;
pub mod packet;
pub mod path_ops;
pub mod shadow;
pub mod sys_exit;
