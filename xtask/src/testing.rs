//! `cargo xtask test`: every test, in tiers.
//! 1. Unit tests (no privileges): `cargo test` on the workspace.
//! 2. Root integration tests (`tests/`): real cgroups, processes, loopback
//!    sockets and BPF programs on this kernel, one at a time.
//! 3. QEMU guest tests: the BPF LSM paths this kernel refuses.
//!
//! Under `CI=true` a tier that cannot run (not root, no BPF) fails the run
//! instead of being skipped.

use std::process::Command;

use anyhow::{bail, Result};

use crate::{setup, workspace};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

pub fn run(filter: Option<&str>) -> Result<i32> {
    setup::setup()?;
    let root = workspace();
    let bin = setup::build(false)?;

    println!("== unit tests");
    let mut unit = Command::new(setup::cargo());
    unit.current_dir(&root)
        .args(["test", "--workspace", "--exclude", "warden-tests"]);
    if let Some(f) = filter {
        unit.args(["--", f]);
    }
    setup::run(&mut unit)?;

    println!("== root integration tests (real cgroups, processes, sockets, BPF)");
    if !setup::is_root() {
        if ci() {
            bail!("CI=true and not root: the integration tests need root and cannot be skipped");
        }
        println!("SKIPPED: not root (run `sudo cargo xtask test`)");
        return Ok(0);
    }
    // The evidence report test renders report.html in a real browser.
    setup::ensure_apt(&["chromium"])?;
    let mut integration = Command::new(setup::cargo());
    integration
        .current_dir(&root)
        .args(["test", "--package", "warden-tests", "--"])
        .args(["--test-threads=1"])
        .env("WARDEN_BIN", &bin);
    if let Some(f) = filter {
        integration.arg(f);
    }
    setup::run(&mut integration)?;
    Ok(0)
}
