//! `cargo xtask`: set up the toolchain, build, run the demo, the tests, the
//! benchmarks and the QEMU guest. Every command installs what it needs first
//! (apt packages, bpf-linker) and reuses what a previous run installed.

mod bench;
mod demo;
#[expect(dead_code, reason = "shared with daemon/build.rs, which uses the rest")]
mod ebpf;
mod setup;
mod testing;
mod vm;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the toolchain (Debian rustc with std sources, LLVM 22, bpf-linker).
    Setup,
    /// Set up, then build the eBPF object and the warden binary.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up, build, and run the daemon on the example policies with a
    /// scripted demo of allow, deny and evidence verification.
    Demo,
    /// Set up, build, and run every test: unit, root integration (real
    /// cgroups, processes, sockets and BPF programs) and the QEMU guest tests.
    Test {
        /// Only tests whose name contains this.
        filter: Option<String>,
    },
    /// Set up, build (release), and run the benchmarks: with vs without Warden.
    Bench {
        /// Run the workload benchmark instead (git, compileall, make,
        /// reading /usr/share; as agents and outside, interleaved).
        #[arg(long)]
        workloads: bool,
        /// Run `warden-bench-fallback` in the QEMU guest instead, once per
        /// mechanism (BPF LSM, fmod_ret, tracepoint fallback), and print the
        /// ratios side by side (TCG-emulated: only the ratios mean anything).
        #[arg(long, conflicts_with = "workloads")]
        guest: bool,
        /// With --guest: rounds of the bench per mechanism.
        #[arg(long, default_value_t = 1, requires = "guest")]
        rounds: usize,
        /// With --guest: execs per side per round.
        #[arg(long, default_value_t = 20, requires = "guest")]
        execs: usize,
        /// With --guest: opens per side per round.
        #[arg(long, default_value_t = 500, requires = "guest")]
        opens: usize,
        /// With --guest: block pairs per round of the paired measurements.
        #[arg(long, default_value_t = 4, requires = "guest")]
        pairs: usize,
        /// With --guest: seconds per guest boot before QEMU is killed.
        #[arg(long, default_value_t = 2400, requires = "guest")]
        timeout: u64,
    },
    /// Run a command as root in a QEMU guest whose kernel has BPF LSM.
    Vm {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The workspace root (xtask lives one level below it).
fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Setup => setup::setup().map(|()| 0),
        Cmd::Build { release } => setup::setup()
            .and_then(|()| setup::build(release))
            .map(|_| 0),
        Cmd::Demo => demo::run(),
        Cmd::Test { filter } => testing::run(filter.as_deref()),
        Cmd::Bench {
            workloads,
            guest,
            rounds,
            execs,
            opens,
            pairs,
            timeout,
        } => bench::run(
            workloads,
            guest.then_some(bench::GuestBench {
                rounds,
                execs,
                opens,
                pairs,
                timeout_secs: timeout,
            }),
        ),
        Cmd::Vm { args } => vm::main(args),
    };
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
