//! `cargo xtask test`: every test, in tiers.
//! 1. Lint: rustfmt and clippy (`-D warnings`) on the workspace and on the
//!    kernel programs (`ebpf/programs`, a workspace of its own, linted for
//!    the BPF target with the Debian toolchain that builds it).
//! 2. Unit tests (no privileges): `cargo test` on the workspace.
//! 3. Root integration tests (`tests/`): real cgroups, processes, loopback
//!    sockets and BPF programs on this kernel, one at a time.
//! 4. QEMU guest tests (`tests/tests/lsm.rs`): the BPF LSM paths this
//!    kernel refuses, in a guest whose kernel runs them (`vm.rs`).
//!
//! Under `CI=true` a tier that cannot run (not root, no BPF, no VM) fails
//! the run instead of being skipped.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};

use crate::{ebpf, setup, vm, workspace};

/// Debian's cargo-clippy (package rust-web-clippy), which runs Debian's
/// clippy-driver: the one that matches the compiler building the programs.
const DEBIAN_CARGO_CLIPPY: &str = "/usr/bin/cargo-clippy";

/// The guest-only integration tests (a `[[test]]` of warden-tests).
const VM_TESTS: &str = "lsm";
/// Host tests that also run in the guest, against the BPF LSM mechanism.
const GUEST_TOO: &str = "self_protection";
/// One guest boot and its tests: 8-10 minutes under TCG on this 2-core
/// machine when idle (every test starts a daemon that loads and verifies
/// some twenty programs under emulation), up to twice that when it is busy
/// (emulation is CPU-bound). The timeout only catches a hung guest.
const VM_TIMEOUT: Duration = Duration::from_secs(1500);

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

pub fn run(filter: Option<&str>) -> Result<i32> {
    setup::setup()?;
    let root = workspace();

    println!("== lint (rustfmt, clippy: workspace and kernel programs)");
    lint(&root)?;

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
    integration.current_dir(&root).args([
        "test",
        "--no-fail-fast",
        "--package",
        "warden-tests",
        "--lib",
        "--bins",
    ]);
    // Every test file but the guest's: on this kernel those tests could only
    // return early, and a test that checks nothing must not count as passed.
    let mut files: Vec<String> = std::fs::read_dir(root.join("tests/tests"))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".rs")
                .map(String::from)
        })
        .filter(|name| name != VM_TESTS)
        .collect();
    files.sort();
    for file in &files {
        integration.args(["--test", file]);
    }
    integration
        .args(["--", "--test-threads=1"])
        .env("WARDEN_BIN", &bin);
    if let Some(f) = filter {
        integration.arg(f);
    }
    // Every file runs (--no-fail-fast), and the guest tier runs even when a
    // host test failed, so one run shows every failure; the run fails after.
    let host = setup::run(&mut integration);

    println!("== QEMU guest tests (BPF LSM: tests/tests/{VM_TESTS}.rs and {GUEST_TOO}.rs)");
    let guest = vm_tier(&bin, filter);
    host.context("root integration tests")?;
    guest?;
    Ok(0)
}

/// Formatting and clippy warnings fail the run, for the host workspace and
/// for the kernel programs.
fn lint(root: &Path) -> Result<()> {
    let cargo = || {
        let mut cmd = Command::new(setup::cargo());
        cmd.current_dir(root);
        cmd
    };
    setup::run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    // rustfmt does not depend on the target or the toolchain, so the host's
    // formats the programs too.
    setup::run(cargo().args([
        "fmt",
        "--manifest-path",
        "ebpf/programs/Cargo.toml",
        "--",
        "--check",
    ]))?;
    setup::run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The build's target dir (daemon/build.rs): its proc macros are reused.
    let mut bpf = ebpf::command(
        root,
        &root.join("target/ebpf"),
        DEBIAN_CARGO_CLIPPY,
        "clippy",
    )
    .map_err(|e| anyhow!(e))?;
    // cargo-clippy runs `$CARGO check`: Debian's, with build-std.
    bpf.env("CARGO", ebpf::DEBIAN_CARGO)
        .args(["--", "-D", "warnings"]);
    setup::run(&mut bpf)
}

/// Builds the guest tests on the host and runs them inside the guest. The
/// guest sees the host's / read-only (so the binaries run in place) with
/// tmpfs on /tmp, where the tests keep their state; its cgroup2 and bpffs
/// are its own.
fn vm_tier(warden: &std::path::Path, filter: Option<&str>) -> Result<()> {
    // Two boots: BPF LSM active, then BPF LSM built but not active (the
    // daemon uses fmod_ret on security_* there, as on Ubuntu's kernels).
    vm_boot(warden, filter, vm::GUEST_LSM, "lsm")?;
    vm_boot(warden, filter, vm::GUEST_LSM_NO_BPF, "fmod_ret")
}

/// One guest boot with `lsm` as its active LSM list, where the daemon is
/// expected to decide execs and opens with `mechanism` (`lsm`, `fmod_ret`).
fn vm_boot(
    warden: &std::path::Path,
    filter: Option<&str>,
    lsm: &str,
    mechanism: &str,
) -> Result<()> {
    // The BPF LSM tests, then self-protection again on a kernel where BPF
    // LSM (or fmod_ret) is the exec/file mechanism; one boot, the first
    // failure ends it.
    let filter_arg = filter.map(|f| format!(" '{f}'")).unwrap_or_default();
    let mut script = String::from("set -e");
    for name in [VM_TESTS, GUEST_TOO] {
        let exe = test_executable(name)?;
        script.push_str(&format!(
            "; echo '== guest ({mechanism}): {name}'; '{}' --test-threads=1{filter_arg}",
            exe.display()
        ));
    }
    let cmd = vec!["/bin/sh".to_string(), "-c".to_string(), script];
    let opts = vm::VmOptions {
        timeout: VM_TIMEOUT,
        env: vec![
            "CI".into(),
            "WARDEN_IN_VM=1".into(),
            format!("WARDEN_GUEST_MECHANISM={mechanism}"),
            // The guest's view of target/ is read-only and holds no sockets.
            "WARDEN_TEST_TMPDIR=/tmp".into(),
            format!("WARDEN_BIN={}", warden.display()),
            "RUST_BACKTRACE".into(),
        ],
        lsm: Some(lsm.into()),
        ..vm::VmOptions::default()
    };
    let outcome = match vm::run(&cmd, &opts) {
        Ok(o) => o,
        Err(e) if ci() => {
            return Err(e.context(
                "CI=true and the QEMU guest cannot run: the BPF LSM tests cannot be skipped",
            ));
        }
        Err(e) => {
            println!("SKIPPED: the QEMU guest cannot run here: {e:#}");
            return Ok(());
        }
    };
    println!(
        "guest tests ({mechanism}, lsm={lsm}): exit {} after {:.1} s",
        outcome.exit_code,
        outcome.elapsed.as_secs_f64()
    );
    if outcome.exit_code != 0 {
        bail!(
            "the {mechanism} tests failed in the QEMU guest (lsm={lsm}, exit {})",
            outcome.exit_code
        );
    }
    Ok(())
}

/// Builds an integration test of warden-tests without running it and
/// returns its executable (cargo's JSON messages name it).
fn test_executable(name: &str) -> Result<PathBuf> {
    let out = Command::new(setup::cargo())
        .current_dir(workspace())
        .args(["test", "--package", "warden-tests", "--test", name])
        .args(["--no-run", "--message-format=json-render-diagnostics"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("run cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the {name} tests failed ({})", out.status);
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| anyhow!("cargo built no test executable named {name}"))
}
