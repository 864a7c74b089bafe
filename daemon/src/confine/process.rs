//! What `warden run` strips from the process before it becomes the agent:
//! descriptors inherited from the caller (its sockets and files would be
//! decided as the caller's, or not at all), and core dumps (the kernel
//! writes them wherever the agent's cwd is, past every file rule).

use std::path::Path;

use serde_json::{json, Value};

use super::{io_err, ConfineError};

/// Descriptors above stdio that `warden run` was started with, and where
/// they point (`readlink /proc/self/fd/N`), in fd order.
pub fn inherited_fds() -> Vec<(i32, String)> {
    let mut fds: Vec<(i32, String)> = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            (fd > 2).then(|| (fd, target.display().to_string()))
        })
        .collect();
    // The directory listing's own descriptor is gone by now.
    fds.retain(|(fd, _)| Path::new(&format!("/proc/self/fd/{fd}")).exists());
    fds
}

/// The ranges `[lo, hi]` of descriptors to close on exec: everything from 3
/// up, except `keep`.
pub(crate) fn close_ranges(keep: &[i32]) -> Vec<(u32, u32)> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|&&fd| fd > 2)
        .map(|&fd| fd as u32)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut ranges = Vec::new();
    let mut lo = 3u32;
    for k in keep {
        if k > lo {
            ranges.push((lo, k - 1));
        }
        lo = k + 1;
    }
    ranges.push((lo, u32::MAX));
    ranges
}

/// For the `run` entry: descriptors closed and kept, and the rlimits set.
pub(crate) fn describe(inherited: &[(i32, String)], keep: &[i32]) -> Value {
    let (kept, closed): (Vec<_>, Vec<_>) = inherited.iter().partition(|(fd, _)| keep.contains(fd));
    let show = |v: Vec<&(i32, String)>| -> Vec<Value> {
        v.into_iter()
            .map(|(fd, target)| json!({ "fd": fd, "target": target }))
            .collect()
    };
    let all_kept: Vec<i32> = [0, 1, 2].iter().chain(keep).copied().collect();
    json!({
        "fds": {
            "kept": all_kept,
            "closed_inherited": show(closed),
            "kept_inherited": show(kept),
            "close_on_exec": "every descriptor but stdio and --keep-fd",
        },
        "rlimits": { "core": { "soft": 0, "hard": 0 } },
    })
}

/// Sets RLIMIT_CORE to 0 (soft and hard) and marks every descriptor but
/// stdio and `keep` close-on-exec (close_range(2), no /proc needed after
/// the change of user).
pub(crate) fn apply(keep: &[i32]) -> Result<(), ConfineError> {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
        return Err(io_err("setrlimit RLIMIT_CORE 0 for", Path::new("self"))(
            std::io::Error::last_os_error(),
        ));
    }
    for (lo, hi) in close_ranges(keep) {
        // SAFETY: close_range(2) has no memory arguments.
        let r = unsafe { libc::syscall(libc::SYS_close_range, lo, hi, libc::CLOSE_RANGE_CLOEXEC) };
        if r != 0 {
            return Err(io_err("close_range (cloexec) in", Path::new("self"))(
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_skip_stdio_and_kept_fds() {
        assert_eq!(close_ranges(&[]), vec![(3, u32::MAX)]);
        assert_eq!(close_ranges(&[1, 3]), vec![(4, u32::MAX)]);
        assert_eq!(
            close_ranges(&[9, 5, 5]),
            vec![(3, 4), (6, 8), (10, u32::MAX)]
        );
    }
}
