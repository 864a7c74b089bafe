//! Sweeping the kernel's counts of repeated allowed actions (`SUMMARIES`).
//!
//! Keys are read and deleted in batches (`BPF_MAP_LOOKUP_AND_DELETE_BATCH`,
//! each bucket under its lock; one `BPF_MAP_LOOKUP_AND_DELETE_ELEM` per key
//! where the kernel has no batch command), so a repeat is either in the count
//! read here or, once the key is gone, recorded individually as the next
//! first. The one window left: a program that found the key just before
//! the delete and adds to the deleted value a moment later; that repeat is
//! still in the agent's kernel decision counter, which is what
//! `log verify --completeness` compares the log with.

use std::os::fd::{AsFd, AsRawFd};

use aya::{
    maps::{Map, PerCpuHashMap},
    Pod,
};
use warden_common::{names, SummaryCount, SummaryKey};

use super::{map_err, Kernel, KernelError};

/// One key's counts, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub key: SummaryKey,
    /// Repeats counted since the key's individual record.
    pub count: u64,
    /// Boot time of the individual record (`SummaryCount::first_ns`).
    pub first_boot_ns: u64,
    /// Boot time of the last repeat.
    pub last_boot_ns: u64,
}

/// Sums one key's per-CPU values. CPUs that never saw the key hold zeros.
pub fn sum_cpus(key: SummaryKey, values: &[SummaryCount]) -> Swept {
    let mut out = Swept {
        key,
        count: 0,
        first_boot_ns: 0,
        last_boot_ns: 0,
    };
    for v in values {
        out.count += v.count;
        if v.first_ns != 0 && (out.first_boot_ns == 0 || v.first_ns < out.first_boot_ns) {
            out.first_boot_ns = v.first_ns;
        }
        out.last_boot_ns = out.last_boot_ns.max(v.last_ns);
    }
    out
}

const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;

/// `union bpf_attr` for the map batch commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Keys asked for per batch call at first (doubled while a hash bucket
/// holds more).
const BATCH_KEYS: usize = 4096;

/// `union bpf_attr` for the map element commands.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Reads and deletes every key of the per-CPU hash `fd` with
/// `BPF_MAP_LOOKUP_AND_DELETE_BATCH`: a few calls per sweep instead of two
/// per key (finding the next key, then taking it), which on a busy agent
/// (a key for every first: 43,000 a second on the read workload) was about
/// 5% of the daemon's CPU. Each bucket is taken under its lock, as the
/// one-key command takes a key. Returns false, having taken nothing, where
/// the kernel has no batch command for the map (then the caller takes
/// key by key); a failure after the first batch is logged and the rest
/// left for the next sweep.
fn take_batched<K: Pod, V: Pod + Default>(
    fd: std::os::fd::RawFd,
    cpus: usize,
    each: &mut impl FnMut(K, &[V]),
) -> bool {
    let (key_size, value_size) = (std::mem::size_of::<K>(), std::mem::size_of::<V>());
    let mut room = BATCH_KEYS;
    let mut keys = vec![std::mem::MaybeUninit::<K>::uninit(); room];
    let mut values: Vec<V> = vec![V::default(); room * cpus];
    // The hash map's batch position is a bucket index (u32).
    let (mut in_batch, mut out_batch) = (0u32, 0u32);
    let mut started = false;
    loop {
        let mut attr = BatchAttr {
            in_batch: if started {
                std::ptr::addr_of!(in_batch) as u64
            } else {
                0
            },
            out_batch: std::ptr::addr_of_mut!(out_batch) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: room as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `keys` holds `room` keys of the map's key size and
        // `values` `room` values (each a multiple of 8 bytes, checked by
        // the caller) per possible CPU, as the kernel expects for a per-CPU
        // hash; the batch positions are the u32s the hash map uses.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_AND_DELETE_BATCH,
                std::ptr::addr_of_mut!(attr),
                std::mem::size_of::<BatchAttr>() as libc::c_uint,
            )
        };
        let errno = std::io::Error::last_os_error().raw_os_error();
        let taken = (attr.count as usize).min(room);
        for (i, key) in keys.iter().take(taken).enumerate() {
            // SAFETY: the kernel wrote the first `attr.count` keys.
            let key = unsafe { key.assume_init() };
            each(key, &values[i * cpus..(i + 1) * cpus]);
        }
        if rc == 0 {
            started = true;
            in_batch = out_batch;
            continue;
        }
        match errno {
            // Every bucket taken.
            Some(libc::ENOENT) => return true,
            // A bucket holds more keys than there is room for: retry it
            // with more room.
            Some(libc::ENOSPC) if taken == 0 && room < (1 << 20) => {
                room *= 2;
                keys.resize(room, std::mem::MaybeUninit::uninit());
                values.resize(room * cpus, V::default());
            }
            _ if !started && taken == 0 => return false,
            _ => {
                tracing::warn!(
                    error = %std::io::Error::from_raw_os_error(errno.unwrap_or(0)),
                    key_size,
                    value_size,
                    "batch sweep of a per-CPU map stopped; the rest waits for the next sweep"
                );
                return true;
            }
        }
    }
}

impl Kernel {
    /// Reads and deletes every key of the per-CPU hash `name` and hands
    /// `each` the key with its value on every possible CPU: in batches
    /// ([`take_batched`]), or where the kernel cannot, one
    /// `BPF_MAP_LOOKUP_AND_DELETE_ELEM` per key (a key gone meanwhile,
    /// ENOENT, is skipped: whatever it counted was read by whoever deleted
    /// it).
    pub(super) fn take_per_cpu<K: Pod, V: Pod + Default>(
        &mut self,
        name: &'static str,
        mut each: impl FnMut(K, &[V]),
    ) -> Result<(), KernelError> {
        let map = self
            .bpf
            .map(name)
            .ok_or(KernelError::Missing { what: "map", name })?;
        // Checks the map's type (and key and value sizes).
        PerCpuHashMap::<_, K, V>::try_from(map).map_err(map_err("open", name))?;
        let Map::PerCpuHashMap(data) = map else {
            return Err(KernelError::Pin {
                what: name.into(),
                detail: "not a per-CPU hash map".into(),
            });
        };
        // The kernel copies one value per CPU, each rounded up to 8 bytes:
        // the buffer below matches only for values of a multiple of 8.
        if !std::mem::size_of::<V>().is_multiple_of(8) {
            return Err(KernelError::Pin {
                what: name.into(),
                detail: "per-CPU value size is not a multiple of 8".into(),
            });
        }
        let fd = data.fd().as_fd().as_raw_fd();
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| KernelError::Pin {
            what: what.into(),
            detail: e.to_string(),
        })?;
        if take_batched(fd, cpus, &mut each) {
            return Ok(());
        }
        let keys: Vec<K> = {
            let map = self
                .bpf
                .map(name)
                .ok_or(KernelError::Missing { what: "map", name })?;
            let hash: PerCpuHashMap<_, K, V> =
                PerCpuHashMap::try_from(map).map_err(map_err("open", name))?;
            hash.keys().filter_map(Result::ok).collect()
        };
        let mut values = vec![V::default(); cpus];
        for key in keys {
            let attr = ElemAttr {
                map_fd: fd as u32,
                _pad: 0,
                key: std::ptr::addr_of!(key) as u64,
                value: values.as_mut_ptr() as u64,
                flags: 0,
            };
            // SAFETY: `attr` points at a key of the map's key size and a
            // buffer of one value (a multiple of 8 bytes, checked above)
            // per possible CPU, as the kernel expects for a per-CPU hash.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_MAP_LOOKUP_AND_DELETE_ELEM,
                    std::ptr::addr_of!(attr),
                    std::mem::size_of::<ElemAttr>() as libc::c_uint,
                )
            };
            if rc == 0 {
                each(key, &values);
            }
        }
        Ok(())
    }

    /// Reads and deletes every key of `SUMMARIES`, returning those with a
    /// nonzero count (a key whose first was not repeated is just deleted).
    pub fn sweep_summaries(&mut self) -> Result<Vec<Swept>, KernelError> {
        let mut out = Vec::new();
        self.take_per_cpu(
            names::SUMMARIES,
            |key: SummaryKey, values: &[SummaryCount]| {
                let swept = sum_cpus(key, values);
                if swept.count > 0 {
                    out.push(swept);
                }
            },
        )?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_are_summed_and_times_span_them() {
        let key = SummaryKey::default();
        let v = [
            SummaryCount {
                count: 0,
                first_ns: 100,
                last_ns: 100,
            },
            SummaryCount::default(),
            SummaryCount {
                count: 5,
                first_ns: 150,
                last_ns: 400,
            },
            SummaryCount {
                count: 2,
                first_ns: 120,
                last_ns: 300,
            },
        ];
        let s = sum_cpus(key, &v);
        assert_eq!((s.count, s.first_boot_ns, s.last_boot_ns), (7, 100, 400));
    }
}
