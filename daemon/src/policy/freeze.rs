//! Freeze windows (`freeze:` in a policy, or the host-wide
//! `freeze.yaml` in the state directory): while one is active, rules
//! tagged `destructive: true` deny instead of allowing or holding (the
//! daemon installs the policy's [`frozen`] variant, the kernel decides),
//! and policy changes are refused.
//!
//! Two forms, each with an `id` that denials and refusals name:
//! - absolute: `{ id, from: RFC 3339, to: RFC 3339 }` (`Z` or `+HH:MM`);
//! - weekly: `{ id, days: [sat, sun], start: "HH:MM", end: "HH:MM",
//!   tz: "Europe/Paris" }`, `end` <= `start` running past midnight. `tz` is
//!   `UTC`, a fixed offset (`+HH:MM`, `-HH:MM`) or a named IANA zone, whose
//!   offset is taken at each instant asked (daylight saving followed) from
//!   the host tzdata, or jiff's bundled copy where the host has none.

use serde::{Deserialize, Serialize};

use super::{Decision, Policy};

/// A window as written.
#[derive(Deserialize, Clone, Debug)]
#[serde(
    deny_unknown_fields,
    expecting = "a freeze window: `id` with `from`/`to`, or with `days`, `start`, `end`, `tz`"
)]
pub struct RawWindow {
    pub id: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub days: Option<Vec<String>>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub tz: Option<String>,
}

/// A validated window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    pub id: String,
    #[serde(flatten)]
    pub when: When,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum When {
    /// Unix nanoseconds, `from` inclusive, `to` exclusive.
    Absolute { from_ns: i64, to_ns: i64 },
    /// Days as bits (Monday = bit 0), minutes after local midnight, and
    /// the zone.
    Weekly {
        days: u8,
        start_min: u32,
        end_min: u32,
        zone: Zone,
    },
}

/// The time zone of a weekly window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Zone {
    /// Seconds east of UTC, all year.
    Fixed(i32),
    /// A named IANA zone, resolved when the window is validated.
    Named(#[serde(serialize_with = "zone_name")] jiff::tz::TimeZone),
}

fn zone_name<S: serde::Serializer>(tz: &jiff::tz::TimeZone, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(tz.iana_name().unwrap_or("?"))
}

impl Zone {
    /// Seconds east of UTC at `now_ns` (Unix nanoseconds).
    fn offset_at(&self, now_ns: i64) -> i32 {
        match self {
            Zone::Fixed(secs) => *secs,
            Zone::Named(tz) => {
                // Every i64 of nanoseconds is within jiff's range.
                let ts = jiff::Timestamp::from_nanosecond(i128::from(now_ns))
                    .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                tz.to_offset(ts).seconds()
            }
        }
    }
}

/// `UTC`, a fixed offset, or a named IANA zone (`Europe/Paris`).
fn zone(s: &str) -> Result<Zone, String> {
    if s.contains('/') {
        return jiff::tz::TimeZone::get(s)
            .map(Zone::Named)
            .map_err(|e| format!("time zone '{s}' is not a known IANA zone: {e}"));
    }
    offset(s).map(Zone::Fixed)
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// `+HH:MM`, `-HH:MM`, `Z` or `UTC` as seconds east of UTC.
fn offset(s: &str) -> Result<i32, String> {
    if s == "Z" || s.eq_ignore_ascii_case("utc") {
        return Ok(0);
    }
    let bad = || {
        format!(
            "time zone '{s}' is not UTC, a fixed offset like +02:00 or a zone like Europe/Paris"
        )
    };
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 14 || m > 59 || rest.len() != 5 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

/// `HH:MM` as minutes after midnight.
fn minutes(s: &str) -> Result<u32, String> {
    let bad = || format!("'{s}' is not a time of day HH:MM");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 || s.len() != 5 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// RFC 3339 with `Z` or a `+HH:MM` offset, as Unix nanoseconds.
fn instant(s: &str) -> Result<i64, String> {
    let bad = || format!("'{s}' is not an RFC 3339 time (2026-12-24T18:00:00+01:00)");
    if s.ends_with('Z') {
        return crate::clock::parse_time(s).map_err(|_| bad());
    }
    if s.len() < 6 {
        return Err(bad());
    }
    let (base, zone) = s.split_at(s.len() - 6);
    let utc = crate::clock::parse_time(&format!("{base}Z")).map_err(|_| bad())?;
    Ok(utc - i64::from(offset(zone)?) * 1_000_000_000)
}

impl RawWindow {
    pub fn validate(self) -> Result<Window, String> {
        let id_ok = self.id.len() <= 64
            && self.id.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && b".-_".contains(&b))
            })
            && !self.id.is_empty();
        if !id_ok {
            return Err(format!(
                "invalid window id '{}': 1 to 64 of a-z, 0-9, '.', '_', '-'",
                self.id
            ));
        }
        let weekly = self.days.is_some() || self.start.is_some() || self.end.is_some();
        let when = match (self.from, self.to, weekly) {
            (Some(from), Some(to), false) if self.tz.is_none() => {
                let (from_ns, to_ns) = (instant(&from)?, instant(&to)?);
                if to_ns <= from_ns {
                    return Err(format!("window '{}': `to` is not after `from`", self.id));
                }
                When::Absolute { from_ns, to_ns }
            }
            (None, None, true) => {
                let days = self.days.unwrap_or_default();
                let mut bits = 0u8;
                for d in &days {
                    let i = DAYS
                        .iter()
                        .position(|x| x.eq_ignore_ascii_case(d))
                        .ok_or_else(|| format!("'{d}' is not a day (mon..sun)"))?;
                    bits |= 1 << i;
                }
                if bits == 0 {
                    return Err(format!("window '{}': `days` names no day", self.id));
                }
                let need = |v: Option<String>, what| {
                    v.ok_or_else(|| format!("window '{}': `{what}` is missing", self.id))
                };
                When::Weekly {
                    days: bits,
                    start_min: minutes(&need(self.start, "start")?)?,
                    end_min: minutes(&need(self.end, "end")?)?,
                    zone: zone(&need(self.tz, "tz")?)?,
                }
            }
            _ => {
                return Err(format!(
                    "window '{}': give either `from` and `to`, or `days`, `start`, `end` and `tz`",
                    self.id
                ))
            }
        };
        Ok(Window { id: self.id, when })
    }
}

impl Window {
    /// Whether the window is open at `now_ns` (Unix nanoseconds).
    pub fn active(&self, now_ns: i64) -> bool {
        match self.when {
            When::Absolute { from_ns, to_ns } => from_ns <= now_ns && now_ns < to_ns,
            When::Weekly {
                days,
                start_min,
                end_min,
                ref zone,
            } => {
                let local = now_ns.div_euclid(1_000_000_000) + i64::from(zone.offset_at(now_ns));
                let day_index = local.div_euclid(86_400);
                // 1970-01-01 was a Thursday (index 3 from Monday).
                let day = (day_index + 3).rem_euclid(7) as u8;
                let yesterday = (day + 6) % 7;
                let minute = (local.rem_euclid(86_400) / 60) as u32;
                let on = |d: u8| days & (1 << d) != 0;
                if start_min < end_min {
                    on(day) && start_min <= minute && minute < end_min
                } else {
                    (on(day) && minute >= start_min) || (on(yesterday) && minute < end_min)
                }
            }
        }
    }
}

/// The first window open at `now_ns`, if any.
pub fn active(windows: &[Window], now_ns: i64) -> Option<&Window> {
    windows.iter().find(|w| w.active(now_ns))
}

/// The policy as it is enforced during a freeze: every rule tagged
/// `destructive` denies (same rule indexes, so evidence names the rule).
/// `None` when no rule is tagged.
pub fn frozen(policy: &Policy) -> Option<Policy> {
    if !policy.rules.iter().any(|r| r.destructive) {
        return None;
    }
    let mut p = policy.clone();
    for r in p.rules.iter_mut().filter(|r| r.destructive) {
        r.decision = Decision::Deny;
    }
    Some(p)
}

/// `freeze.yaml` in the state directory: `freeze: [windows]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with `freeze`")]
struct HostFile {
    freeze: Vec<RawWindow>,
}

/// Reads the host-wide windows; a file that does not parse is an error
/// naming it.
pub fn host_windows(text: &str) -> Result<Vec<Window>, String> {
    let f: HostFile = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    f.freeze.into_iter().map(RawWindow::validate).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(id: &str) -> RawWindow {
        RawWindow {
            id: id.into(),
            from: None,
            to: None,
            days: None,
            start: None,
            end: None,
            tz: None,
        }
    }

    fn at(s: &str) -> i64 {
        instant(s).unwrap()
    }

    #[test]
    fn absolute_windows_take_offsets() {
        let w = RawWindow {
            from: Some("2026-12-24T18:00:00+01:00".into()),
            to: Some("2026-12-27T00:00:00Z".into()),
            ..raw("xmas")
        }
        .validate()
        .unwrap();
        assert!(!w.active(at("2026-12-24T16:59:59Z")));
        assert!(w.active(at("2026-12-24T17:00:00Z")));
        assert!(w.active(at("2026-12-26T23:59:59Z")));
        assert!(!w.active(at("2026-12-27T00:00:00Z")));
        let backwards = RawWindow {
            from: Some("2026-12-27T00:00:00Z".into()),
            to: Some("2026-12-24T00:00:00Z".into()),
            ..raw("x")
        };
        assert!(backwards.validate().unwrap_err().contains("not after"));
    }

    #[test]
    fn weekly_windows_follow_the_zone_and_run_past_midnight() {
        // Friday 22:00 to 06:00, in UTC+02:00.
        let w = RawWindow {
            days: Some(vec!["fri".into()]),
            start: Some("22:00".into()),
            end: Some("06:00".into()),
            tz: Some("+02:00".into()),
            ..raw("weekend-night")
        }
        .validate()
        .unwrap();
        // 2026-12-04 is a Friday.
        assert!(!w.active(at("2026-12-04T19:59:00Z")), "21:59 local");
        assert!(w.active(at("2026-12-04T20:00:00Z")), "22:00 local Friday");
        assert!(w.active(at("2026-12-05T03:59:00Z")), "05:59 local Saturday");
        assert!(
            !w.active(at("2026-12-05T04:00:00Z")),
            "06:00 local Saturday"
        );
        assert!(!w.active(at("2026-12-05T20:00:00Z")), "Saturday night");
        let day = RawWindow {
            days: Some(vec!["sat".into(), "sun".into()]),
            start: Some("00:00".into()),
            end: Some("23:59".into()),
            tz: Some("UTC".into()),
            ..raw("weekend")
        }
        .validate()
        .unwrap();
        assert!(day.active(at("2026-12-06T12:00:00Z")), "Sunday");
        assert!(!day.active(at("2026-12-07T12:00:00Z")), "Monday");
    }

    #[test]
    fn named_zones_follow_daylight_saving() {
        // Sundays 09:00 to 10:00 in Paris: UTC+01:00 in winter, +02:00 in
        // summer. Clocks went forward on 2026-03-29 (a Sunday) at 02:00 and
        // back on 2026-10-25 (a Sunday) at 03:00.
        let w = RawWindow {
            days: Some(vec!["sun".into()]),
            start: Some("09:00".into()),
            end: Some("10:00".into()),
            tz: Some("Europe/Paris".into()),
            ..raw("sunday-release")
        }
        .validate()
        .unwrap();
        // The Sunday before the spring change: 09:00 local is 08:00 UTC.
        assert!(!w.active(at("2026-03-22T07:59:00Z")));
        assert!(w.active(at("2026-03-22T08:00:00Z")));
        assert!(!w.active(at("2026-03-22T09:00:00Z")));
        // The day of the change, after it: 09:00 local is 07:00 UTC.
        assert!(!w.active(at("2026-03-29T06:59:00Z")));
        assert!(w.active(at("2026-03-29T07:00:00Z")));
        assert!(w.active(at("2026-03-29T07:59:00Z")));
        assert!(!w.active(at("2026-03-29T08:00:00Z")), "10:00 CEST");
        // The day of the autumn change, after it: back to 08:00 UTC.
        assert!(!w.active(at("2026-10-25T07:30:00Z")), "08:30 CET");
        assert!(w.active(at("2026-10-25T08:00:00Z")));
        // A window across the change itself (Sunday 01:00-04:00 local):
        // in March it lasts 2 hours of UTC, in October 4.
        let night = RawWindow {
            days: Some(vec!["sun".into()]),
            start: Some("01:00".into()),
            end: Some("04:00".into()),
            tz: Some("Europe/Paris".into()),
            ..raw("night")
        }
        .validate()
        .unwrap();
        let open_minutes = |day: &str| {
            let start = at(&format!("{day}T00:00:00Z"));
            (-120..360)
                .filter(|m| night.active(start + m * 60_000_000_000))
                .count()
        };
        assert_eq!(open_minutes("2026-03-29"), 120);
        assert_eq!(open_minutes("2026-10-25"), 240);
        // The zone is kept by name in what the daemon records.
        let json = serde_json::to_value(&w).unwrap();
        assert_eq!(json["weekly"]["zone"]["named"], "Europe/Paris", "{json}");
    }

    #[test]
    fn bad_windows_say_why() {
        for (w, says) in [
            (raw("a"), "either"),
            (
                RawWindow {
                    days: Some(vec!["funday".into()]),
                    start: Some("00:00".into()),
                    end: Some("01:00".into()),
                    tz: Some("UTC".into()),
                    ..raw("a")
                },
                "not a day",
            ),
            (
                RawWindow {
                    days: Some(vec!["mon".into()]),
                    start: Some("25:00".into()),
                    end: Some("01:00".into()),
                    tz: Some("UTC".into()),
                    ..raw("a")
                },
                "time of day",
            ),
            (
                RawWindow {
                    days: Some(vec!["mon".into()]),
                    start: Some("01:00".into()),
                    end: Some("02:00".into()),
                    tz: Some("Europe/Nowhere".into()),
                    ..raw("a")
                },
                "not a known IANA zone",
            ),
            (
                RawWindow {
                    days: Some(vec!["mon".into()]),
                    start: Some("01:00".into()),
                    end: Some("02:00".into()),
                    tz: Some("CEST".into()),
                    ..raw("a")
                },
                "fixed offset",
            ),
            (
                RawWindow {
                    from: Some("yesterday".into()),
                    to: Some("2026-12-27T00:00:00Z".into()),
                    ..raw("a")
                },
                "RFC 3339",
            ),
            (raw("Bad Id"), "window id"),
        ] {
            let e = w.validate().unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn the_frozen_policy_denies_destructive_rules_only() {
        let p = crate::policy::parse_policy(
            "p.yaml",
            "version: 1
rules:
  - id: read
    connect: { to: 127.0.0.1, ports: [80] }
    decision: allow
  - id: deploy
    connect: { to: 127.0.0.1, ports: [22] }
    decision: hold
    destructive: true
",
        )
        .unwrap();
        let f = frozen(&p).unwrap();
        assert_eq!(f.rules[0].decision, Decision::Allow);
        assert_eq!(f.rules[1].decision, Decision::Deny);
        assert_eq!(f.rule_ids(), p.rule_ids());
        let plain = crate::policy::parse_policy("p.yaml", "version: 1\nrules: []\n").unwrap();
        assert!(frozen(&plain).is_none());
    }
}
