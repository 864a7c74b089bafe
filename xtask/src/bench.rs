//! `cargo xtask bench`: side-by-side measurements, with and without Warden,
//! in one run. Implemented in the tests crate (`warden-tests`, bin
//! `warden-bench`) so it shares the test harness; this only builds and runs it.

use std::process::Command;

use anyhow::{bail, Result};

use crate::{setup, workspace};

pub fn run() -> Result<i32> {
    if !setup::is_root() {
        bail!("the benchmarks load eBPF programs and create cgroups: run them as root");
    }
    setup::setup()?;
    let bin = setup::build(true)?;
    let status = Command::new(setup::cargo())
        .current_dir(workspace())
        .args([
            "run",
            "--quiet",
            "--release",
            "--package",
            "warden-tests",
            "--bin",
            "warden-bench",
        ])
        .env("WARDEN_BIN", &bin)
        .status()?;
    Ok(status.code().unwrap_or(1))
}
