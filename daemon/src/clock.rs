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

#[derive(Debug, thiserror::Error)]
#[error("invalid time {0:?}: use RFC 3339 UTC (2026-11-01T00:00:00Z) or unix seconds")]
pub struct TimeError(String);

/// Parses `2026-11-01T00:00:00Z` (UTC, optional fraction) or unix seconds
/// into unix nanoseconds.
pub fn parse_time(s: &str) -> Result<i64, TimeError> {
    let bad = || TimeError(s.to_string());
    if let Ok(secs) = s.parse::<i64>() {
        return secs.checked_mul(1_000_000_000).ok_or_else(bad);
    }
    let t = s.strip_suffix('Z').ok_or_else(bad)?;
    let (date, time) = t.split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let (clock, frac) = time.split_once('.').unwrap_or((time, "0"));
    let c: Vec<i64> = clock
        .split(':')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if d.len() != 3 || c.len() != 3 || !(1..=12).contains(&d[1]) || !(1..=31).contains(&d[2]) {
        return Err(bad());
    }
    let nanos: i64 = format!("{frac:0<9}")[..9].parse().map_err(|_| bad())?;
    let days = days_from_civil(d[0], d[1] as u32, d[2] as u32);
    Ok((days * 86_400 + c[0] * 3600 + c[1] * 60 + c[2]) * 1_000_000_000 + nanos)
}

/// (year, month, day) to days since 1970-01-01 (inverse of civil_from_days).
/// `N` followed by one unit letter of `units` (`s`, `m`, `h`, `d`), such
/// as `90d` or `15m`, as seconds; `None` unless written so. A figure too
/// large for `u64` saturates, so a caller's range check calls it out of
/// range rather than malformed.
pub fn whole_secs(s: &str, units: &str) -> Option<u64> {
    let unit = s.chars().last()?;
    let digits = &s[..s.len() - unit.len_utf8()];
    if !units.contains(unit) || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let per = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    // Only digits: parsing fails on overflow alone.
    Some(
        digits
            .parse::<u64>()
            .unwrap_or(u64::MAX)
            .saturating_mul(per),
    )
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
    #[test]
    fn whole_secs_reads_a_number_and_one_unit() {
        use super::whole_secs;
        assert_eq!(whole_secs("90d", "smhd"), Some(90 * 86_400));
        assert_eq!(whole_secs("15m", "smh"), Some(900));
        assert_eq!(whole_secs("1d", "smh"), None);
        assert_eq!(whole_secs("m", "smh"), None);
        assert_eq!(whole_secs("-1s", "smh"), None);
        assert_eq!(whole_secs("1é", "smh"), None);
        assert_eq!(whole_secs("", "smh"), None);
        assert_eq!(
            whole_secs("99999999999999999999999h", "smh"),
            Some(u64::MAX)
        );
    }

    use super::*;

    #[test]
    fn parses_what_it_formats() {
        for ns in [0, 1_775_037_723_000_000_000, 951_782_400_500_000_000] {
            assert_eq!(parse_time(&format_ns(ns)).unwrap(), ns);
        }
        assert_eq!(parse_time("60").unwrap(), 60_000_000_000);
        assert!(parse_time("2026-13-01T00:00:00Z").is_err());
        assert!(parse_time("yesterday").is_err());
    }

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
