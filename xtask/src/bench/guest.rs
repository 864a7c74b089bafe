//! `cargo xtask bench --guest`: `warden-bench-fallback` in the QEMU guest once
//! per exec/file mechanism, BPF LSM, `fmod_ret` on `security_*` and the
//! tracepoint fallback, printed side by side in one table.
//!
//! The guest runs under TCG (every instruction emulated, no KVM here), so
//! its absolute times say nothing about real hardware; only the ratios,
//! taken within one boot and compared across boots, mean something, and
//! less than on the host. The three boots differ only in what the daemon may
//! use: `lsm=` with `bpf` (BPF LSM), without it (BPF LSM built but not
//! active: `fmod_ret`), and without it with `WARDEN_DISABLE_MECHANISMS=lsm,fmod_ret`
//! (the tracepoints and `sys_exit`). Each column names the exec mechanism
//! the daemon reported in that boot, so a column never claims a mechanism
//! it did not measure.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{setup, vm, workspace};

/// The short setting's knobs, passed to `warden-bench-fallback`.
#[derive(Debug, Clone, Copy)]
pub struct GuestBench {
    pub rounds: usize,
    pub execs: usize,
    pub opens: usize,
    pub pairs: usize,
    /// Per boot, boot included.
    pub timeout_secs: u64,
}

/// One column: a name, the guest's `lsm=`, what is disabled.
struct Mechanism {
    name: &'static str,
    lsm: &'static str,
    disable: Option<&'static str>,
}

const MECHANISMS: [Mechanism; 3] = [
    Mechanism {
        name: "BPF LSM",
        lsm: vm::GUEST_LSM,
        disable: None,
    },
    Mechanism {
        name: "fmod_ret",
        lsm: vm::GUEST_LSM_NO_BPF,
        disable: None,
    },
    Mechanism {
        name: "fallback",
        lsm: vm::GUEST_LSM_NO_BPF,
        disable: Some("lsm,fmod_ret"),
    },
];

/// Table rows: label, JSON key of the ratio, the target.
const ROWS: [(&str, &str, &str); 6] = [
    (
        "agent exec p50 vs Warden not loaded",
        "exec_agent_vs_not_loaded",
        "1.02x",
    ),
    (
        "agent exec, paired blocks vs non-agent cgroup (pooled)",
        "exec_paired_pooled",
        "1.02x",
    ),
    (
        "agent open+close p50 vs Warden not loaded",
        "open_agent_vs_not_loaded",
        "",
    ),
    (
        "non-agent open+close, file rules loaded vs none (paired)",
        "open_nonagent_paired_pooled",
        "1.01x",
    ),
    (
        "non-agent getppid, loaded (file rules) vs not loaded",
        "getppid_loaded_vs_not_loaded",
        "1.01x",
    ),
    (
        "non-agent getppid, loaded (file rules + holds) vs not",
        "getppid_holds_vs_not_loaded",
        "1.01x",
    ),
];

pub fn run(b: GuestBench) -> Result<i32> {
    setup::setup()?;
    let warden = setup::build(true)?;
    setup::run(Command::new(setup::cargo()).current_dir(workspace()).args([
        "build",
        "--quiet",
        "--release",
        "--package",
        "warden-tests",
        "--bin",
        "warden-bench-fallback",
    ]))?;
    let bench = setup::target_dir().join("release/warden-bench-fallback");
    // Shared read-write with the guest at the same path: the results.
    let out = setup::target_dir().join("guest-bench");
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let assets = vm::ensure_assets(&vm::default_cache_dir())?;
    let mut results = Vec::new();
    for m in &MECHANISMS {
        let json = out.join(format!("{}.json", m.name.replace(' ', "-")));
        let _ = std::fs::remove_file(&json);
        println!(
            "== guest bench: {} (lsm={}{})",
            m.name,
            m.lsm,
            m.disable
                .map(|d| format!(", WARDEN_DISABLE_MECHANISMS={d}"))
                .unwrap_or_default()
        );
        let cmd = vec![
            bench.display().to_string(),
            "--rounds".into(),
            b.rounds.to_string(),
            "--execs".into(),
            b.execs.to_string(),
            "--opens".into(),
            b.opens.to_string(),
            "--pairs".into(),
            b.pairs.to_string(),
            "--json".into(),
            json.display().to_string(),
        ];
        let mut env = vec![
            format!("WARDEN_BIN={}", warden.display()),
            // The guest's view of target/ is read-only and holds no sockets.
            "WARDEN_TEST_TMPDIR=/tmp".into(),
        ];
        if let Some(d) = m.disable {
            env.push(format!("WARDEN_DISABLE_MECHANISMS={d}"));
        }
        let opts = vm::VmOptions {
            timeout: Duration::from_secs(b.timeout_secs),
            rw_dir: Some(out.clone()),
            env,
            lsm: Some(m.lsm.into()),
            ..vm::VmOptions::default()
        };
        let outcome = vm::run_in_vm(&assets, &cmd, &opts)?;
        println!(
            "== {}: exit {} after {:.0} s",
            m.name,
            outcome.exit_code,
            outcome.elapsed.as_secs_f64()
        );
        if outcome.exit_code != 0 {
            bail!(
                "warden-bench-fallback failed in the guest ({}, exit {})",
                m.name,
                outcome.exit_code
            );
        }
        results.push(read(&json)?);
    }
    print!("{}", table(&b, &results));
    Ok(0)
}

fn read(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

/// The side-by-side table (markdown, so it pastes into the README).
fn table(b: &GuestBench, results: &[Value]) -> String {
    let mut t = format!(
        "\nGuest (QEMU, TCG-emulated: only the ratios mean anything, side by side), \
         warden-bench-fallback --rounds {} --execs {} --opens {} --pairs {}:\n\n\
         | ratio | {} | target |\n|---|{}---|\n",
        b.rounds,
        b.execs,
        b.opens,
        b.pairs,
        MECHANISMS.map(|m| m.name).join(" | "),
        "---|".repeat(MECHANISMS.len()),
    );
    for (label, key, target) in ROWS {
        let cells: Vec<String> = results
            .iter()
            .map(|r| {
                r[key]
                    .as_f64()
                    .map_or_else(|| "-".into(), |v| format!("{v:.3}x"))
            })
            .collect();
        t.push_str(&format!("| {label} | {} | {target} |\n", cells.join(" | ")));
    }
    let ns = |r: &Value, k: &str| r[k].as_f64().map_or(f64::NAN, |v| v / 1000.0);
    for (label, a, bk) in [
        (
            "exec p50 us, not loaded / agent",
            "exec_not_loaded_p50_ns",
            "exec_agent_p50_ns",
        ),
        (
            "open+close p50 us, not loaded / agent",
            "open_not_loaded_p50_ns",
            "open_agent_p50_ns",
        ),
        (
            "getppid p50 us, not loaded / loaded",
            "getppid_not_loaded_p50_ns",
            "getppid_loaded_p50_ns",
        ),
    ] {
        let cells: Vec<String> = results
            .iter()
            .map(|r| format!("{:.2} / {:.2}", ns(r, a), ns(r, bk)))
            .collect();
        t.push_str(&format!("| {label} | {} | |\n", cells.join(" | ")));
    }
    let attached = |r: &Value, k: &str| match r[k].as_bool() {
        Some(true) => "attached",
        Some(false) => "detached",
        None => "?",
    };
    let cells: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{} / {}",
                attached(r, "sys_exit_attached_files"),
                attached(r, "sys_exit_attached_holds")
            )
        })
        .collect();
    t.push_str(&format!(
        "| `tp_btf/sys_exit` during the getppid rows (file rules / + holds) | {} | |\n",
        cells.join(" | ")
    ));
    t.push_str("\nexec mechanism the daemon reported in each boot:\n");
    for (m, r) in MECHANISMS.iter().zip(results) {
        t.push_str(&format!(
            "- {}: {}\n",
            m.name,
            r["exec_mechanism"].as_str().unwrap_or("?")
        ));
    }
    t
}
