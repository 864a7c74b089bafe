//! Wall-clock time for evidence, and conversion of the kernel's boot-time
//! stamps to wall-clock time.

use nix::time::{clock_gettime, ClockId};

fn ns(clock: ClockId) -> i64 {
    // clock_gettime cannot fail for these clocks on Linux.
    clock_gettime(clock).map_or(0, |t| t.tv_sec() * 1_000_000_000 + t.tv_nsec())
}

/// Unix time in nanoseconds.
pub fn now_ns() -> i64 {
    ns(ClockId::CLOCK_REALTIME)
}

/// Converts `bpf_ktime_get_boot_ns()` stamps to unix nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct BootClock {
    offset: i64,
}

impl BootClock {
    pub fn now() -> Self {
        Self {
            offset: ns(ClockId::CLOCK_REALTIME) - ns(ClockId::CLOCK_BOOTTIME),
        }
    }

    pub fn to_unix_ns(self, boot_ns: u64) -> i64 {
        self.offset + boot_ns as i64
    }
}

/// RFC 3339 UTC with milliseconds, for people ("2026-11-22T10:04:05.123Z").
pub fn format_ns(unix_ns: i64) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let millis = unix_ns.rem_euclid(1_000_000_000) / 1_000_000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_ns(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_ns(1_775_037_723_000_000_123),
            "2026-04-01T10:02:03.000Z"
        );
        assert_eq!(
            format_ns(951_782_400_500_000_000),
            "2000-02-29T00:00:00.500Z"
        );
    }
}
