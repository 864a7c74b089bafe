//! Evidence bundles: exported on this host, verified elsewhere with nothing
//! but the files, and every kind of tampering caught.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use warden_tests::{approvals, can_run, probe_bin, stderr, wait_until, Listener, TestEnv};

/// A log with allowed, denied and held-then-approved actions, checkpoints
/// every 4 entries, exported to a bundle. Returns the env and the bundle dir.
fn exported(name: &str) -> (TestEnv, PathBuf) {
    let ok = Listener::tcp4();
    let held = Listener::tcp4();
    std::env::set_var("WARDEN_CHECKPOINT_ENTRIES", "4");
    let mut env = TestEnv::new(name);
    env.write_policy(
        "p.yaml",
        &format!(
            "version: 1\napprovers:\n  users: [root]\nrules:\n  - id: api\n    connect: {{ to: 127.0.0.1, ports: [{}] }}\n    decision: allow\n  - id: pay\n    connect: {{ to: 127.0.0.1, ports: [{}] }}\n    decision: hold\n",
            ok.port, held.port
        ),
    );
    env.start_daemon();
    env.add_agent("exporter", "p.yaml");
    for port in [ok.port, ok.port, 9] {
        env.probe_as("exporter", &["connect", &format!("127.0.0.1:{port}")]);
    }
    let probe = probe_bin();
    let child = env
        .warden()
        .args([
            "run",
            "--agent",
            "exporter",
            "--",
            probe.to_str().unwrap(),
            "connect",
        ])
        .arg(format!("127.0.0.1:{}", held.port))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut pending = Vec::new();
    wait_until("the connect is held", || {
        pending = approvals(&env, false);
        !pending.is_empty()
    });
    env.ok(&["approve", &pending[0]["id"].to_string()]);
    child.wait_with_output().unwrap();
    env.wait_for_evidence("outcome", |e| e["method"] == "approved");
    env.stop_daemon();
    std::env::remove_var("WARDEN_CHECKPOINT_ENTRIES");
    let out = env.dir.path().join("bundle");
    env.ok(&["evidence", "export", "--out", out.to_str().unwrap()]);
    (env, out)
}

/// `warden evidence verify DIR` with no state dir at all.
fn verify(env: &TestEnv, dir: &Path, extra: &[&str]) -> std::process::Output {
    env.warden()
        .env("WARDEN_STATE_DIR", "/nonexistent/warden-state")
        .args(["evidence", "verify", dir.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap()
}

fn copy_bundle(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(from).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
    }
}

#[test]
fn a_bundle_verifies_on_a_copy_with_the_database_deleted() {
    if !can_run("export_offline") {
        return;
    }
    let (env, bundle) = exported("exoff");
    let copy = env.dir.path().join("elsewhere");
    copy_bundle(&bundle, &copy);
    let key = std::fs::read_to_string(env.state_dir().join("host.pub")).unwrap();
    std::fs::remove_dir_all(env.state_dir()).unwrap();

    let out = verify(&env, &copy, &["--key", &key]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("bundle valid") && said.contains("checkpoints"),
        "{said}"
    );

    // Everything the auditor asked for is in it.
    for file in [
        "entries.jsonl",
        "entries.csv",
        "checkpoints.json",
        "host.pub",
        "agents.json",
        "capabilities.json",
        "policy_versions.json",
        "approvals.json",
        "kill_switch.json",
        "budgets.json",
        "alerts.json",
        "detections.json",
        "verification.json",
        "control_map.json",
        "report.html",
        "manifest.json",
        "manifest.sig",
    ] {
        assert!(copy.join(file).exists(), "{file} missing");
    }
    let agents: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(copy.join("agents.json")).unwrap()).unwrap();
    assert_eq!(agents[0]["owner"], "exporter-owner@example.com");
    let approvals: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(copy.join("approvals.json")).unwrap())
            .unwrap();
    assert_eq!(approvals[0]["decided_by"], "root");
    assert_eq!(approvals[0]["final_status"], "executed");
    let caps = std::fs::read_to_string(copy.join("capabilities.json")).unwrap();
    assert!(
        caps.contains("user:root") && caps.contains("approve or reject held actions"),
        "{caps}"
    );
    let map = std::fs::read_to_string(copy.join("control_map.json")).unwrap();
    for control in ["CC6.1", "CC7.2", "CC8.1", "A.5.15", "A.8.15", "MANAGE"] {
        assert!(map.contains(control), "control map lacks {control}");
    }
    let csv = std::fs::read_to_string(copy.join("entries.csv")).unwrap();
    let jsonl = std::fs::read_to_string(copy.join("entries.jsonl")).unwrap();
    assert_eq!(
        csv.lines().count(),
        jsonl.lines().count() + 1,
        "one CSV row per entry plus a header"
    );

    // Pinned to another key: refused.
    let out = verify(&env, &copy, &["--key", &"ab".repeat(32)]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not the expected key"),
        "{}",
        stderr(&out)
    );
}

/// Rewrites entries.jsonl with `f` applied to its lines.
fn tamper_lines(dir: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let path = dir.join("entries.jsonl");
    let mut lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    f(&mut lines);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

fn expect_problem(env: &TestEnv, dir: &Path, what: &str, expect: &str) {
    let out = verify(env, dir, &[]);
    assert!(!out.status.success(), "{what}: verify must fail");
    assert!(
        stderr(&out).contains(expect),
        "{what}: expected {expect:?} in:\n{}",
        stderr(&out)
    );
}

#[test]
fn every_kind_of_tampering_with_a_bundle_is_caught() {
    if !can_run("export_tamper") {
        return;
    }
    let (env, bundle) = exported("extamper");
    let case = |name: &str| {
        let dir = env.dir.path().join(name);
        copy_bundle(&bundle, &dir);
        dir
    };

    let d = case("edit");
    tamper_lines(&d, |l| {
        l[5] = l[5]
            .replace("\"decision\":\"deny\"", "\"decision\":\"allow\"")
            .replace("\"pid\":", "\"pid\":1")
    });
    expect_problem(&env, &d, "edit", "seq 6");

    let d = case("delete");
    tamper_lines(&d, |l| {
        l.remove(4);
    });
    expect_problem(&env, &d, "delete", "seq 5");

    let d = case("reorder");
    tamper_lines(&d, |l| l.swap(3, 4));
    expect_problem(&env, &d, "reorder", "seq 4");

    let d = case("insert");
    tamper_lines(&d, |l| {
        let copy = l[2].clone();
        l.insert(3, copy);
    });
    expect_problem(&env, &d, "insert", "seq 4");

    let d = case("truncate");
    tamper_lines(&d, |l| {
        let keep = l.len() - 3;
        l.truncate(keep);
    });
    expect_problem(&env, &d, "truncate", "truncated");

    // Rewrite an entry and re-seal everything after it: the chain is
    // perfect, the checkpoints signed over the old head are not.
    let d = case("rehash");
    tamper_lines(&d, |l| {
        let mut entries: Vec<warden::evidence::Entry> =
            l.iter().map(|x| serde_json::from_str(x).unwrap()).collect();
        let mut prev = entries[1].hash.clone();
        for (i, e) in entries.iter_mut().enumerate().skip(2) {
            let mut fields: warden::evidence::NewEntry =
                serde_json::from_value(serde_json::to_value(&*e).unwrap()).unwrap();
            if i == 2 {
                fields.owner = "nobody@example.com".into();
            }
            *e = warden::evidence::Entry::seal(e.seq, prev.clone(), fields).unwrap();
            prev = e.hash.clone();
        }
        *l = entries
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
    });
    expect_problem(&env, &d, "rehash", "history was rewritten");

    // An old checkpoint swapped in for the newest.
    let d = case("oldcheckpoint");
    let path = d.join("checkpoints.json");
    let mut cps: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(cps.len() >= 2, "need two checkpoints: {cps:#?}");
    let last = cps.len() - 1;
    cps[last] = cps[0].clone();
    std::fs::write(&path, serde_json::to_string(&cps).unwrap()).unwrap();
    expect_problem(&env, &d, "old checkpoint", "checkpoint 1");

    // And the same tampering in the live database is caught by log verify.
    let out = env.cli(&["log", "verify"]);
    assert!(
        out.status.success(),
        "the host's own log is intact: {}",
        stderr(&out)
    );
}

#[test]
fn the_html_report_renders_in_a_browser() {
    if !can_run("export_report") {
        return;
    }
    let (env, bundle) = exported("exhtml");
    let html = std::fs::read_to_string(bundle.join("report.html")).unwrap();
    for want in [
        "Warden evidence report",
        "exporter-owner@example.com",
        "Verified on the host",
        "<svg",
        "Holds and approvals",
        "CC6.1",
    ] {
        assert!(html.contains(want), "report lacks {want:?}");
    }
    let shot = env.dir.path().join("report.png");
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok());
    let Some(chromium) = chromium else {
        assert!(
            !warden_tests::ci(),
            "chromium is not installed (cargo xtask test installs it)"
        );
        eprintln!("export_report: SKIPPED screenshot (no chromium)");
        return;
    };
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1280,2400")
        .arg(format!("file://{}", bundle.join("report.html").display()))
        .output()
        .unwrap();
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 20_000,
        "a rendered page, not a blank one ({} bytes)",
        png.len()
    );
    let keep = std::env::var_os("WARDEN_KEEP_SCREENSHOT");
    if let Some(dest) = keep {
        std::fs::copy(&shot, dest).unwrap();
    }
}

/// The README's Python implementation of encoding version 2 is what an
/// auditor would use without our code: it must recompute the hash of every
/// entry of a real bundle (and so the chain), with nothing of ours running.
#[test]
fn the_readme_python_recomputes_every_entry_hash() {
    let (env, bundle) = exported("readmepy");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let (_, rest) = readme
        .split_once("```python\n")
        .expect("the README has a python block");
    let (snippet, _) = rest.split_once("```").expect("the python block ends");
    let script = format!(
        "{snippet}\nimport sys\nn = 0\nprev = '0' * 64\n\
         for line in open(sys.argv[1]):\n    e = json.loads(line)\n    \
         assert e['v'] == 2, e['seq']\n    assert e['prev_hash'] == prev, e['seq']\n    \
         assert entry_hash_v2(e) == e['hash'], e['seq']\n    prev = e['hash']\n    n += 1\n\
         print(n)\n"
    );
    let path = env.dir.path().join("readme_v2.py");
    std::fs::write(&path, script).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&path)
        .arg(bundle.join("entries.jsonl"))
        .output()
        .expect("run python3 (cargo xtask setup installs it)");
    assert!(out.status.success(), "{}", stderr(&out));
    let checked: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let lines = std::fs::read_to_string(bundle.join("entries.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(checked > 5, "a real chain: {checked} entries");
    assert_eq!(checked, lines, "every entry recomputed");
}

/// Runs `warden ARGS` and returns its output and peak RSS in KiB (wait4).
fn run_with_peak_rss(env: &TestEnv, args: &[&str]) -> (bool, String, u64) {
    #[expect(
        clippy::zombie_processes,
        reason = "reaped by wait4 below, which also returns its rusage"
    )]
    let child = env
        .warden()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut out = String::new();
    let mut stdout = child.stdout.unwrap();
    let mut stderr_pipe = child.stderr.unwrap();
    std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
    std::io::Read::read_to_string(&mut stderr_pipe, &mut out).unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 on our own unreaped child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (ok, out, usage.ru_maxrss.max(0) as u64)
}

/// Exports a window and the whole chain of a 200k-entry log with bounded
/// memory (the export once held every entry: 3.9 GB for 938k), and both
/// bundles verify offline. Also `warden log`'s decision spellings on it.
#[test]
fn export_streams_a_large_log_in_bounded_memory_and_the_bundle_verifies() {
    if !can_run("export_scale") {
        return;
    }
    const N: u64 = 200_000;
    const WINDOW: u64 = 150_000;
    // Measured: 71 MiB (debug build) for the windowed export; holding the
    // entries, as the export once did, took ~4 KiB per entry.
    const MAX_RSS_MIB: u64 = 128;
    let env = TestEnv::new("exscale");
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let base_ns = 1_770_000_000_000_000_000;
    {
        let mut store = warden::evidence::EvidenceStore::open(&env.database()).unwrap();
        for from in (0..N).step_by(20_000) {
            let batch: Vec<_> = (from..from + 20_000)
                .map(|i| warden_tests::synthetic_entry(i, base_ns))
                .collect();
            store
                .append(&batch, warden::evidence::Durability::Batched)
                .unwrap();
        }
    }
    // --to: the first WINDOW entries (synthetic times are 10 ms apart).
    let to_s = (base_ns + WINDOW as i64 * warden_tests::SYNTHETIC_SPACING_NS) / 1_000_000_000;
    let window = env.dir.path().join("window");
    let (ok, out, rss) = run_with_peak_rss(
        &env,
        &[
            "evidence",
            "export",
            "--out",
            window.to_str().unwrap(),
            "--to",
            &to_s.to_string(),
        ],
    );
    assert!(ok, "windowed export: {out}");
    assert!(
        rss < MAX_RSS_MIB * 1024,
        "windowed export of {WINDOW} of {N} entries peaked at {} MiB (bound {MAX_RSS_MIB} MiB)",
        rss / 1024
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(window.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["entries"], WINDOW,
        "the chain from 1 to the window's end"
    );
    let v = verify(&env, &window, &[]);
    assert!(v.status.success(), "windowed bundle: {}", stderr(&v));
    let html = std::fs::read_to_string(window.join("report.html")).unwrap();
    for want in [
        "Most frequent denied and held actions",
        "/etc/secret/",
        "Most frequent allowed actions",
        "entries.jsonl",
        "<svg",
    ] {
        assert!(html.contains(want), "report lacks {want:?}");
    }
    assert!(html.len() < 200_000, "report of {} bytes", html.len());

    let whole = env.dir.path().join("whole");
    let (ok, out, rss) = run_with_peak_rss(
        &env,
        &["evidence", "export", "--out", whole.to_str().unwrap()],
    );
    assert!(ok, "export: {out}");
    assert!(
        rss < MAX_RSS_MIB * 1024,
        "export of {N} entries peaked at {} MiB (bound {MAX_RSS_MIB} MiB)",
        rss / 1024
    );
    let v = verify(&env, &whole, &[]);
    assert!(v.status.success(), "whole bundle: {}", stderr(&v));

    // `--decision` takes the log's spellings; a typo lists the valid ones.
    let gaps_and_denials = |spelling: &str| {
        let text = env.ok(&["log", "--decision", spelling, "--json"]);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let gaps = lines.iter().filter(|e| e["kind"] == "gap").count();
        (gaps, lines.len() - gaps)
    };
    // 2 gap entries (i % 100000 == 99999), 200 denials (i % 1000 == 7).
    assert_eq!(gaps_and_denials("denied"), (2, 200));
    assert_eq!(gaps_and_denials("deny"), (2, 200));
    let bad = env.cli(&["log", "--decision", "dney"]);
    assert!(!bad.status.success());
    let msg = stderr(&bad);
    assert!(
        msg.contains("unknown decision 'dney'") && msg.contains("denied") && msg.contains("allow"),
        "{msg}"
    );
}

/// A window of a log with a signed checkpoint every 1000 entries: the
/// bundle starts after the newest checkpoint before the window's first
/// entry and verifies on its own (no state dir); `--full-chain` carries the
/// chain from seq 1; an edit in the carried prefix or in the window, or a
/// broken signature on the checkpoint that vouches for the rest, fails
/// `evidence verify` naming it.
#[test]
fn a_windowed_export_starts_at_the_checkpoint_before_the_window() {
    if !can_run("export_windowed") {
        return;
    }
    const N: u64 = 50_000;
    let env = TestEnv::new("exwindow");
    std::fs::create_dir_all(env.state_dir()).unwrap();
    // Whole seconds; entries are 10 ms apart, so entry 100k starts second k.
    let base_ns: i64 = 1_770_000_000_000_000_000;
    {
        let key = warden::evidence::checkpoint::HostKey::load_or_create(&env.state_dir()).unwrap();
        let mut store = warden::evidence::EvidenceStore::open(&env.database()).unwrap();
        for from in (0..N).step_by(1_000) {
            let batch: Vec<_> = (from..from + 1_000)
                .map(|i| warden_tests::synthetic_entry(i, base_ns))
                .collect();
            store
                .append(&batch, warden::evidence::Durability::Batched)
                .unwrap();
            let (seq, head) = store.head().unwrap().unwrap();
            warden::evidence::checkpoint::write(store.connection(), &key, seq, &head, base_ns)
                .unwrap();
        }
    }
    let secs = |entry: i64| (base_ns + entry * warden_tests::SYNTHETIC_SPACING_NS) / 1_000_000_000;
    // Entries 30,500..40,000 are seqs 30,501..=40,000; checkpoint 30 signed 30,000.
    let (from, to) = (secs(30_500).to_string(), secs(40_000).to_string());
    let export = |name: &str, extra: &[&str]| {
        let dir = env.dir.path().join(name);
        let said = env.ok(&[
            &["evidence", "export", "--out", dir.to_str().unwrap()],
            &["--from", &from, "--to", &to][..],
            extra,
        ]
        .concat());
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap())
                .unwrap();
        (dir, said, manifest)
    };
    let (window, said, manifest) = export("window", &[]);
    assert!(
        said.contains("exported 10000 entries") && said.contains("signed by checkpoint 30"),
        "{said}"
    );
    let start = &manifest["chain_start"];
    assert_eq!(start["base_seq"], 30_000, "{manifest:#}");
    assert_eq!(start["checkpoint_id"], 30);
    assert_eq!(start["reason"], "checkpoint");
    assert_eq!(start["window_first_seq"], 30_501);
    assert_eq!(start["window_last_seq"], 40_000);
    assert_eq!(manifest["base"]["seq"], 30_000);
    assert_eq!(manifest["format"], "warden-evidence-bundle/v3");
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(window.join("entries.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["seq"], 30_001);
    let key = std::fs::read_to_string(env.state_dir().join("host.pub")).unwrap();
    let v = verify(&env, &window, &["--key", key.trim()]);
    assert!(v.status.success(), "windowed bundle: {}", stderr(&v));
    let out = String::from_utf8_lossy(&v.stdout).to_string();
    assert!(
        out.contains("bundle valid: 10000 entries")
            && out.contains("chain starts after seq 30000")
            && out.contains("checkpoint 30"),
        "{out}"
    );
    let html = std::fs::read_to_string(window.join("report.html")).unwrap();
    assert!(
        html.contains("entries 30001–40000 · 9500 in this report's window"),
        "the report counts the window only"
    );
    assert!(html.contains("seq 30001–30500 before them are the carried prefix"));

    // Tampering: the prefix, the window, the vouching checkpoint.
    let case = |name: &str| {
        let dir = env.dir.path().join(name);
        copy_bundle(&window, &dir);
        dir
    };
    let edit_seq = |dir: &Path, seq: u64| {
        tamper_lines(dir, |l| {
            let i = (seq - 30_001) as usize;
            let edited = l[i].replace("\"pid\":", "\"pid\":1");
            assert_ne!(edited, l[i]);
            l[i] = edited;
        });
    };
    let d = case("prefix");
    edit_seq(&d, 30_200);
    expect_problem(&env, &d, "prefix edit", "seq 30200");
    let d = case("inwindow");
    edit_seq(&d, 35_000);
    expect_problem(&env, &d, "window edit", "seq 35000");
    let d = case("basesig");
    let path = d.join("checkpoints.json");
    let mut cps: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // Checkpoints 30 (the base) to 40 (the window's end); none before.
    assert_eq!(cps.len(), 11, "{cps:#?}");
    assert_eq!(
        (&cps[0]["id"], &cps[0]["size"]),
        (&30.into(), &30_000.into())
    );
    let sig = cps[0]["signature"].as_str().unwrap().to_string();
    let flipped = if sig.starts_with('0') { "1" } else { "0" };
    cps[0]["signature"] = serde_json::json!(format!("{flipped}{}", &sig[1..]));
    std::fs::write(&path, serde_json::to_string(&cps).unwrap()).unwrap();
    expect_problem(
        &env,
        &d,
        "base checkpoint signature",
        "checkpoint 30: signature does not verify",
    );

    // --full-chain: from seq 1, and the whole log verified at export.
    let (full, said, manifest) = export("full", &["--full-chain"]);
    assert!(said.contains("exported 40000 entries"), "{said}");
    assert!(manifest.get("chain_start").is_none() && manifest.get("base").is_none());
    let v = verify(&env, &full, &[]);
    assert!(v.status.success(), "full-chain bundle: {}", stderr(&v));
    let verification: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("verification.json")).unwrap())
            .unwrap();
    assert!(
        verification["summary"]
            .as_str()
            .unwrap()
            .starts_with(&format!("chain intact: {N} entries")),
        "{verification}"
    );
}
