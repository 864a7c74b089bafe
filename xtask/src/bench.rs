//! `cargo xtask bench`: side-by-side measurements, with and without Warden,
//! in one run. Implemented in the tests crate (`warden-tests`, bins
//! `warden-bench` for connect and `warden-bench-fallback` for exec, file
//! opens and the global `sys_exit` cost, `warden-bench-control` for
//! evidence rates, hold and kill latency, `warden-bench-scale` for the CLI
//! at 10k, 1M and 10M evidence entries, `warden-bench-dns` for rules by
//! name (DNS through the proxy, connects to learned addresses); with `--workloads`,
//! `warden-bench-workloads` for real workloads and their evidence volume)
//! so they share the test harness; this only builds and runs them.

mod guest;

use std::process::Command;

use anyhow::{bail, Result};

pub use guest::GuestBench;

use crate::{setup, workspace};

pub fn run(workloads: bool, guest: Option<GuestBench>) -> Result<i32> {
    if !setup::is_root() {
        bail!("the benchmarks load eBPF programs and create cgroups: run them as root");
    }
    if let Some(g) = guest {
        return guest::run(g);
    }
    setup::setup()?;
    let bin = setup::build(true)?;
    // Every bin, not only the benches: `warden-bench-control` runs `warden-probe`, which it
    // looks for beside itself (`probe_bin`), so it must exist in the release profile too.
    setup::run(Command::new(setup::cargo()).current_dir(workspace()).args([
        "build",
        "--quiet",
        "--release",
        "--package",
        "warden-tests",
        "--bins",
    ]))?;
    // The network path (connect), then the exec and file-open fallback.
    let mut code = 0;
    let benches: &[&str] = if workloads {
        &["warden-bench-workloads"]
    } else {
        &[
            "warden-bench",
            "warden-bench-fallback",
            "warden-bench-control",
            "warden-bench-scale",
            "warden-bench-dns",
        ]
    };
    for &bench in benches {
        let status = Command::new(setup::cargo())
            .current_dir(workspace())
            .args([
                "run",
                "--quiet",
                "--release",
                "--package",
                "warden-tests",
                "--bin",
                bench,
            ])
            .env("WARDEN_BIN", &bin)
            .status()?;
        if !status.success() {
            code = status.code().unwrap_or(1);
        }
    }
    Ok(code)
}
