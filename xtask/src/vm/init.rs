//! The guest's init: the two shell stages busybox runs as PID 1, and the per-run environment
//! file (nonce, working directory, rw dir, command) they read.

use std::path::Path;

use anyhow::{anyhow, bail, Result};

const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Stage 1, PID 1 in the initramfs: load modules, mount the host root and the writable layers,
/// then switch_root into the host's tree with busybox still PID 1 (stage 2).
pub(super) const STAGE1: &str = r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
. /warden/run.env
die() { echo "warden-vm: $*"; echo "WARDEN_VM_EXIT_${WARDEN_NONCE}=125"; $B sync; $B poweroff -f; }
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
for m in netfs 9pnet 9pnet_virtio 9p overlay; do
    if [ -e /modules/$m.ko ]; then $B insmod /modules/$m.ko || die "insmod $m failed"; fi
done
R=/newroot
# cache=loose: the root is read-only and nobody changes it during a run; page-cached reads make
# exec of large host binaries several times faster.
$B mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot $R \
    || die "cannot mount the host root over 9p"
# Writable layers live in RAM only: the guest never writes to the host outside rw_dir.
$B mount -t tmpfs -o mode=0755 ovl /ovl || die "tmpfs for overlays"
for d in etc tmp var root; do
    [ -d $R/$d ] || continue
    $B mkdir -p /ovl/$d/upper /ovl/$d/work
    # The merged root takes the upper dir's mode: keep /tmp 1777 and /root 0700.
    $B chmod "$($B stat -c %a $R/$d)" /ovl/$d/upper
    $B mount -t overlay overlay -o lowerdir=$R/$d,upperdir=/ovl/$d/upper,workdir=/ovl/$d/work $R/$d \
        || die "overlay on /$d failed"
done
$B mount -t proc proc $R/proc || die "proc"
$B mount -t sysfs sys $R/sys || die "sysfs"
$B mount -t devtmpfs dev $R/dev || die "devtmpfs"
$B mkdir -p $R/dev/pts $R/dev/shm
$B mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
$B mount -t tmpfs -o mode=1777 shm $R/dev/shm
$B mount -t tmpfs -o mode=0755 run $R/run || die "tmpfs on /run"
$B mount -t securityfs securityfs $R/sys/kernel/security || die "securityfs"
$B mount -t cgroup2 cgroup2 $R/sys/fs/cgroup || die "cgroup2"
$B mount -t bpf bpf $R/sys/fs/bpf || die "bpffs"
$B mount -t tracefs tracefs $R/sys/kernel/tracing || die "tracefs"
$B mount -t debugfs debugfs $R/sys/kernel/debug
# Loopback for the tests' listeners (holds of connects); the guest has no other network.
$B ip link set lo up || die "loopback"
if [ -n "$WARDEN_RW" ]; then
    # cache=mmap: coherent with the host and still allows shared writable mmap (SQLite WAL).
    $B mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=mmap wardenrw "$R$WARDEN_RW" \
        || die "cannot mount the rw dir $WARDEN_RW"
fi
$B mkdir -p $R/run/warden
$B cp $B /warden/stage2 /warden/run.env $R/run/warden/ || die "copy to /run/warden"
exec $B switch_root $R /run/warden/busybox sh /run/warden/stage2
die "switch_root failed"
"#;

/// Stage 2, PID 1 in the host's tree: run the command as a child (never as PID 1), report.
pub(super) const STAGE2: &str = r#"B=/run/warden/busybox
. /run/warden/run.env
echo "WARDEN_VM_BEGIN_${WARDEN_NONCE}"
if cd "$WARDEN_CWD"; then
    $B env -i "$@" </dev/null
    rc=$?
else
    echo "warden-vm: cannot enter $WARDEN_CWD in the guest"
    rc=125
fi
# Results in the rw dir must be on the host before QEMU goes away.
$B sync
echo "WARDEN_VM_EXIT_${WARDEN_NONCE}=$rc"
$B poweroff -f
"#;

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn valid_env_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

pub(super) fn run_env(
    nonce: &str,
    cwd: &Path,
    rw: Option<&Path>,
    cmd: &[String],
    env: &[String],
) -> Result<String> {
    let mut vars: Vec<(String, String)> = vec![
        ("PATH".into(), GUEST_PATH.into()),
        ("HOME".into(), "/root".into()),
        ("USER".into(), "root".into()),
        ("LOGNAME".into(), "root".into()),
        ("TERM".into(), "dumb".into()),
        ("LANG".into(), "C.UTF-8".into()),
    ];
    for e in env {
        let (name, value) = match e.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => match std::env::var(e) {
                Ok(v) => (e.clone(), v),
                Err(_) => continue,
            },
        };
        if !valid_env_name(&name) {
            bail!("invalid environment variable name {name:?}");
        }
        vars.retain(|(n, _)| *n != name);
        vars.push((name, value));
    }
    let mut args: Vec<String> = vars
        .iter()
        .map(|(n, v)| sh_quote(&format!("{n}={v}")))
        .collect();
    args.extend(cmd.iter().map(|a| sh_quote(a)));
    let cwd = cwd
        .to_str()
        .ok_or_else(|| anyhow!("working directory is not UTF-8"))?;
    let rw = match rw {
        Some(p) => p.to_str().ok_or_else(|| anyhow!("rw dir is not UTF-8"))?,
        None => "",
    };
    Ok(format!(
        "WARDEN_NONCE={}\nWARDEN_CWD={}\nWARDEN_RW={}\nset -- {}\n",
        nonce,
        sh_quote(cwd),
        sh_quote(rw),
        args.join(" ")
    ))
}
