//! Backpressure: the ring buffer's size (from the host, or
//! `WARDEN_EVENTS_BYTES`), and the maps through which a full ring buffer
//! pauses agents instead of killing them: `OVERFLOW` (records parked by
//! thread id while the thread is stopped) and `HEARTBEAT` (the daemon
//! says it is draining). See `events::park` in the eBPF crate.

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuHashMap};
use warden_common::{heartbeat, names, parked_flags, Budget, LossCounts, LossKey, Parked};

use crate::gaps::ClassLoss;

use super::{map_err, Kernel, KernelError};

/// Environment variable that sets the ring buffer's size in bytes.
pub const EVENTS_BYTES_VAR: &str = "WARDEN_EVENTS_BYTES";
/// The host default's floor (the size before it was configurable).
const MIN_EVENTS_BYTES: u64 = 1 << 22;
const MAX_EVENTS_BYTES: u64 = 1 << 28;
/// The smallest size one may configure (tests use it to make the ring
/// buffer overflow).
const MIN_CONFIGURED_BYTES: u64 = 1 << 16;

/// The ring buffer's size: `WARDEN_EVENTS_BYTES` if set (a power of two,
/// 4 MiB..256 MiB), else from the host: 4 MiB per CPU, at most 1/256 of
/// RAM, rounded down to a power of two, within the same bounds.
pub fn events_bytes() -> Result<u32, KernelError> {
    if let Ok(v) = std::env::var(EVENTS_BYTES_VAR) {
        let bytes: u64 = v.trim().parse().map_err(|_| KernelError::Config {
            what: EVENTS_BYTES_VAR,
            detail: format!("{v:?} is not a number of bytes"),
        })?;
        return validated(bytes);
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let ram = ram_bytes().unwrap_or(0);
    Ok(from_host(cpus, ram))
}

fn validated(bytes: u64) -> Result<u32, KernelError> {
    if !bytes.is_power_of_two() || !(MIN_CONFIGURED_BYTES..=MAX_EVENTS_BYTES).contains(&bytes) {
        return Err(KernelError::Config {
            what: EVENTS_BYTES_VAR,
            detail: format!(
                "{bytes} must be a power of two from {MIN_CONFIGURED_BYTES} to {MAX_EVENTS_BYTES}"
            ),
        });
    }
    Ok(bytes as u32)
}

/// The host's default (pure, for tests).
pub fn from_host(cpus: u64, ram: u64) -> u32 {
    let want = cpus.saturating_mul(MIN_EVENTS_BYTES).min(ram / 256);
    let pow2 = if want == 0 {
        0
    } else {
        1u64 << (63 - want.leading_zeros())
    };
    pow2.clamp(MIN_EVENTS_BYTES, MAX_EVENTS_BYTES) as u32
}

fn ram_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `CLOCK_BOOTTIME` in ns: the clock of `bpf_ktime_get_boot_ns`.
fn boot_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// A record drained from `OVERFLOW`.
pub struct ParkedRecord {
    pub tid: u32,
    /// The event's bytes, as the ring buffer would have carried them.
    pub bytes: Vec<u8>,
    /// The hook stopped the thread: continue it once recorded.
    pub stopped: bool,
}

/// Environment variable: each agent's share of a congested ring buffer,
/// in records per second (0: no limit).
pub const SHARE_VAR: &str = "WARDEN_AGENT_RECORDS_PER_SEC";
/// The default share: well under what the daemon records per second here
/// (about 7,000 opens/s measured with its production log level), so that
/// one flooding agent leaves room for the others.
pub const DEFAULT_SHARE: u64 = 2_000;

/// The configured share (`SHARE_VAR`), records per second; 0: none.
pub fn share() -> Result<u64, KernelError> {
    match std::env::var(SHARE_VAR) {
        Err(_) => Ok(DEFAULT_SHARE),
        Ok(v) => v.trim().parse().map_err(|_| KernelError::Config {
            what: SHARE_VAR,
            detail: format!("{v:?} is not a number of records per second"),
        }),
    }
}

/// The reader's handle on `OVERFLOW`, `HEARTBEAT` and `AGENT_BUDGET`.
pub struct Backpressure {
    overflow: BpfHashMap<MapData, u32, Parked>,
    heartbeat: Array<MapData, u64>,
    budgets: BpfHashMap<MapData, u32, Budget>,
    /// Records per second per agent (0: unlimited, no entry).
    share: u64,
}

impl Backpressure {
    /// Gives each agent in `agent_ids` its share of a congested ring
    /// buffer, once (the kernel keeps the bucket's state).
    pub fn share_out(&mut self, agent_ids: impl Iterator<Item = u32>) {
        if self.share == 0 {
            return;
        }
        for id in agent_ids {
            let budget = Budget {
                rate: self.share,
                burst: self.share,
                tokens: self.share,
                last_ns: boot_ns(),
            };
            // BPF_NOEXIST: an existing bucket keeps its state.
            let _ = self.budgets.insert(id, budget, 1);
        }
    }

    /// Says "draining" to the kernel for the next `stale_ns`.
    pub fn beat(&mut self, stale_ns: u64) -> Result<(), KernelError> {
        let set = |hb: &mut Array<MapData, u64>, i: u32, v: u64| {
            hb.set(i, v, 0).map_err(map_err("write", names::HEARTBEAT))
        };
        set(&mut self.heartbeat, heartbeat::STALE_NS, stale_ns)?;
        set(&mut self.heartbeat, heartbeat::LAST_NS, boot_ns())
    }

    /// Takes every parked record out of `OVERFLOW`.
    pub fn drain(&mut self) -> Vec<ParkedRecord> {
        let tids: Vec<u32> = self.overflow.keys().filter_map(Result::ok).collect();
        let mut out = Vec::with_capacity(tids.len());
        for tid in tids {
            let Ok(p) = self.overflow.get(&tid, 0) else {
                continue;
            };
            // Removed before the thread is continued, so that its next
            // overflow can park again.
            let _ = self.overflow.remove(&tid);
            let len = (p.len as usize).min(std::mem::size_of_val(&p.event));
            // SAFETY: `event` is plain data; viewing its bytes is sound.
            let all: &[u8] = unsafe {
                std::slice::from_raw_parts(
                    p.event.as_ptr().cast::<u8>(),
                    std::mem::size_of_val(&p.event),
                )
            };
            out.push(ParkedRecord {
                tid,
                bytes: all[..len].to_vec(),
                stopped: p.flags & parked_flags::STOPPED != 0,
            });
        }
        out
    }
}

/// Continues a thread a parked record stopped: `tgkill(pid, tid, SIGCONT)`,
/// which refuses a tid that is no longer in `pid` (a recycled id). A
/// thread already gone is not an error.
pub fn resume(pid: u32, tid: u32) {
    // SAFETY: a plain syscall with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, pid as i32, tid as i32, libc::SIGCONT) };
    if r != 0 {
        tracing::debug!(pid, tid, "parked thread already gone");
    }
}

impl Kernel {
    /// Hands `OVERFLOW` and `HEARTBEAT` to the event reader.
    pub fn take_backpressure(&mut self) -> Result<Backpressure, KernelError> {
        let take = |k: &mut Kernel, name: &'static str| {
            k.bpf
                .take_map(name)
                .ok_or(KernelError::Missing { what: "map", name })
        };
        let share = share()?;
        let overflow = take(self, names::OVERFLOW)?;
        let heartbeat = take(self, names::HEARTBEAT)?;
        let budgets = take(self, names::AGENT_BUDGET)?;
        let mut budgets: BpfHashMap<MapData, u32, Budget> =
            BpfHashMap::try_from(budgets).map_err(map_err("open", names::AGENT_BUDGET))?;
        // A previous daemon's shares are replaced by this one's setting.
        let ids: Vec<u32> = budgets.keys().filter_map(Result::ok).collect();
        for id in ids {
            let _ = budgets.remove(&id);
        }
        Ok(Backpressure {
            overflow: BpfHashMap::try_from(overflow).map_err(map_err("open", names::OVERFLOW))?,
            heartbeat: Array::try_from(heartbeat).map_err(map_err("open", names::HEARTBEAT))?,
            budgets,
            share,
        })
    }

    /// Per agent and action class: actions whose record found no room or
    /// that were over the agent's share (`AGENT_LOSS`), summed over CPUs,
    /// with the last process (from the CPU that saw the latest loss).
    pub fn agent_losses(&self) -> Result<Vec<ClassLoss>, KernelError> {
        let name = names::AGENT_LOSS;
        let map = self
            .bpf
            .map(name)
            .ok_or(KernelError::Missing { what: "map", name })?;
        let hash: PerCpuHashMap<_, LossKey, LossCounts> =
            PerCpuHashMap::try_from(map).map_err(map_err("open", name))?;
        let mut out = Vec::new();
        for item in hash.iter() {
            let (key, values) = item.map_err(map_err("read", name))?;
            let mut sum = ClassLoss {
                agent_id: key.agent_id,
                kind: key.kind,
                ..Default::default()
            };
            let mut latest = 0;
            for v in values.iter() {
                sum.dropped += v.dropped;
                sum.allowed_unrecorded += v.allowed_unrecorded;
                sum.throttled += v.throttled;
                if v.last_ns >= latest && v.last_pid != 0 {
                    latest = v.last_ns;
                    sum.last_pid = v.last_pid;
                    sum.last_tid = v.last_tid;
                    let end = v.last_comm.iter().position(|&b| b == 0).unwrap_or(16);
                    sum.last_comm = String::from_utf8_lossy(&v.last_comm[..end]).into_owned();
                }
            }
            out.push(sum);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_sizes_are_powers_of_two_within_bounds() {
        // 2 CPUs, 8 GiB: 8 MiB.
        assert_eq!(from_host(2, 8 << 30), 8 << 20);
        // Many CPUs, little RAM: capped by RAM/256, at least 4 MiB.
        assert_eq!(from_host(64, 1 << 30), 4 << 20);
        assert_eq!(from_host(0, 0), 4 << 20);
        // Huge host: at most 256 MiB.
        assert_eq!(from_host(1024, 1 << 40), 256 << 20);
        // 3 CPUs: 12 MiB rounds down to 8 MiB.
        assert_eq!(from_host(3, 64 << 30), 8 << 20);
        assert_eq!(
            u64::from(warden_common::limits::EVENTS_BYTES),
            MIN_EVENTS_BYTES
        );
    }

    #[test]
    fn configured_size_is_checked() {
        assert_eq!(validated(1 << 24).unwrap(), 1 << 24);
        assert!(validated(3 << 20).is_err());
        assert_eq!(validated(1 << 16).unwrap(), 1 << 16);
        assert!(validated(1 << 12).is_err());
        assert!(validated(1 << 30).is_err());
    }
}
