//! Boot one guest: build this run's initrd, start QEMU with its command line, tail the serial
//! console for the nonce markers, and return the exit status or fail on timeout.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use super::assets::{join_paths, VmAssets};
use super::init::{run_env, STAGE1, STAGE2};
use super::initramfs::Newc;
use super::{VmOptions, VmOutcome, GUEST_LSM};

/// QEMU option values escape a comma by doubling it.
fn qemu_escape(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<TempDir> {
        let p = std::env::temp_dir().join(format!("warden-vm-{tag}"));
        fs::create_dir(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Boot the guest, run `cmd` as root in the host's working directory (or `opts.cwd`), return
/// its exit status. Errors: bad options, QEMU failing, the guest dying without a status, or
/// the timeout (QEMU is then killed).
pub fn run_in_vm(assets: &VmAssets, cmd: &[String], opts: &VmOptions) -> Result<VmOutcome> {
    if cmd.is_empty() {
        bail!("no command to run in the VM");
    }
    let started = Instant::now();
    let cwd = match &opts.cwd {
        Some(c) => c.clone(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let cwd = cwd
        .canonicalize()
        .with_context(|| format!("working directory {}", cwd.display()))?;
    let rw = match &opts.rw_dir {
        Some(d) => {
            let d = d
                .canonicalize()
                .with_context(|| format!("rw dir {}", d.display()))?;
            if !d.is_dir() || d == Path::new("/") {
                bail!("rw dir {} must be a directory other than /", d.display());
            }
            Some(d)
        }
        None => None,
    };

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let nonce = format!("{:x}{:x}", std::process::id(), nanos);
    let tmp = TempDir::new(&nonce)?;

    // initrd = cached base archive + this run's scripts (the kernel unpacks both in order).
    let mut run_cpio = Newc::new(0x10000);
    run_cpio.file("init", 0o755, STAGE1.as_bytes());
    run_cpio.file("warden/stage2", 0o644, STAGE2.as_bytes());
    run_cpio.file(
        "warden/run.env",
        0o644,
        run_env(&nonce, &cwd, rw.as_deref(), cmd, &opts.env)?.as_bytes(),
    );
    let mut initrd = fs::read(&assets.base_initramfs)
        .with_context(|| format!("cannot read {}", assets.base_initramfs.display()))?;
    initrd.extend_from_slice(&run_cpio.finish());
    let initrd_path = tmp.0.join("initrd.cpio");
    fs::write(&initrd_path, initrd)?;

    let console_path = tmp.0.join("console.log");
    fs::write(&console_path, b"")?;
    let stderr_path = tmp.0.join("qemu.stderr");

    let lsm = opts.lsm.as_deref().unwrap_or(GUEST_LSM);
    let mut append = format!("console=ttyS0 rdinit=/init panic=-1 lsm={lsm} mitigations=off");
    if opts.quiet {
        append.push_str(" quiet");
    }
    let mut qemu = Command::new(&assets.qemu);
    qemu.env("LD_LIBRARY_PATH", join_paths(&assets.library_path));
    for d in &assets.firmware_dirs {
        qemu.arg("-L").arg(d);
    }
    // thread=single: with multi-threaded TCG and 2 vCPUs, about 1 boot in 25 died of
    // "Oops: int3" while the kernel live-patched a static key (cross-CPU code modification
    // racing QEMU's translation cache). One host thread for all vCPUs never did (0 in 30)
    // and costs nothing measurable: a boot is mostly one busy vCPU anyway.
    qemu.args([
        "-accel",
        "tcg,thread=single",
        "-cpu",
        "max",
        "-machine",
        "pc",
    ])
    .args([
        "-smp",
        &opts.cpus.max(1).to_string(),
        "-m",
        &format!("{}M", opts.memory_mib.max(256)),
    ])
    .args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-vga",
        "none",
    ])
    .args(["-monitor", "none", "-parallel", "none", "-no-reboot"])
    .args([
        "-chardev",
        &format!("file,id=con,path={}", qemu_escape(&console_path)),
    ])
    .args(["-serial", "chardev:con"])
    .arg("-kernel")
    .arg(&assets.kernel)
    .arg("-initrd")
    .arg(&initrd_path)
    .args(["-append", &append])
    // security_model=none: files keep the host's owners and modes, and chown failures from
    // an unprivileged host user are ignored. multidevs=remap: / spans several host
    // filesystems whose inode numbers would otherwise collide in the guest.
    .args([
        "-fsdev",
        "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
    ])
    .args(["-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"]);
    if let Some(d) = &rw {
        qemu.args([
            "-fsdev",
            &format!(
                "local,id=wardenrw,path={},security_model=none,multidevs=remap",
                qemu_escape(d)
            ),
        ])
        .args(["-device", "virtio-9p-pci,fsdev=wardenrw,mount_tag=wardenrw"]);
    }
    qemu.current_dir(&tmp.0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr_path)?);
    let child = qemu
        .spawn()
        .with_context(|| format!("cannot start {}", assets.qemu.display()))?;
    let pid = child.id();
    // However this function is left (error, panic), the QEMU we started does not outlive it.
    let mut guard = KillOnDrop(child);
    let child = &mut guard.0;

    let mut reader = ConsoleReader::new(&nonce, opts.quiet, opts.stream);
    let mut console = fs::File::open(&console_path)?;
    let deadline = started + opts.timeout;
    let mut exited_at: Option<Instant> = None;
    let status = loop {
        reader.pump(&mut console)?;
        if let Some(status) = child.try_wait()? {
            reader.pump(&mut console)?;
            break Some(status);
        }
        if reader.exit_code.is_some() && exited_at.is_none() {
            exited_at = Some(Instant::now());
        }
        // The status is in; a guest that then fails to power off only costs a short grace.
        if exited_at.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            reader.pump(&mut console)?;
            reader.finish();
            bail!(
                "VM timed out after {} s: killed QEMU (pid {pid}); console tail:\n{}",
                opts.timeout.as_secs(),
                tail(&reader.console, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.finish();
    let Some(exit_code) = reader.exit_code else {
        let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
        bail!(
            "guest ended without reporting an exit status (QEMU {}){}; console tail:\n{}",
            status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "killed".into()),
            if stderr.trim().is_empty() {
                String::new()
            } else {
                format!("; QEMU stderr: {}", stderr.trim())
            },
            tail(&reader.console, 30)
        );
    };
    Ok(VmOutcome {
        exit_code,
        output: reader.output,
        console: reader.console,
        elapsed: started.elapsed(),
    })
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s
        .lines()
        .filter(|l| !l.starts_with("WARDEN_VM_BEGIN_"))
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Splits the console file into lines as it grows, finds the nonce markers, echoes.
struct ConsoleReader {
    begin: String,
    exit: String,
    quiet: bool,
    stream: bool,
    pending: Vec<u8>,
    in_command: bool,
    exit_code: Option<i32>,
    output: String,
    console: String,
}

impl ConsoleReader {
    fn new(nonce: &str, quiet: bool, stream: bool) -> ConsoleReader {
        ConsoleReader {
            begin: format!("WARDEN_VM_BEGIN_{nonce}"),
            exit: format!("WARDEN_VM_EXIT_{nonce}="),
            quiet,
            stream,
            pending: Vec::new(),
            in_command: false,
            exit_code: None,
            output: String::new(),
            console: String::new(),
        }
    }

    fn pump(&mut self, f: &mut fs::File) -> Result<()> {
        let mut chunk = Vec::new();
        f.read_to_end(&mut chunk)?;
        self.pending.extend_from_slice(&chunk);
        while let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            self.line(&line[..line.len() - 1]);
        }
        Ok(())
    }

    fn finish(&mut self) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.line(&line);
        }
    }

    fn line(&mut self, raw: &[u8]) {
        // The serial tty turns "\n" into "\r\n".
        let text = String::from_utf8_lossy(raw).replace('\r', "");
        self.console.push_str(&text);
        self.console.push('\n');
        if self.exit_code.is_some() {
            if !self.quiet {
                self.echo(&text);
            }
            return;
        }
        if text.contains(&self.begin) {
            self.in_command = true;
            return;
        }
        // Output without a final newline puts the marker mid-line: keep what precedes it.
        if let Some(at) = text.find(&self.exit) {
            let code: String = text[at + self.exit.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            if let Ok(code) = code.parse() {
                let before = &text[..at];
                if !before.is_empty() {
                    if self.in_command {
                        self.output.push_str(before);
                    }
                    if self.in_command || !self.quiet {
                        self.echo(before);
                    }
                }
                // Guest-side failures (stage 1 died) print their reason before the marker;
                // show it even in quiet mode.
                if !self.in_command && self.quiet {
                    for l in self
                        .console
                        .lines()
                        .rev()
                        .skip(1)
                        .take(5)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                    {
                        if l.starts_with("warden-vm:") {
                            self.echo(l);
                        }
                    }
                }
                self.exit_code = Some(code);
                self.in_command = false;
                return;
            }
        }
        if self.in_command {
            self.output.push_str(&text);
            self.output.push('\n');
        }
        if self.in_command || !self.quiet {
            self.echo(&text);
        }
    }

    fn echo(&self, text: &str) {
        if self.stream {
            println!("{text}");
            let _ = std::io::stdout().flush();
        }
    }
}
