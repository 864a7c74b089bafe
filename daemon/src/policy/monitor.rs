//! `monitor:` settings: the sentinel's parameters for one agent (see
//! `crate::sentinel`). Every field has a default, so a policy without the
//! section is monitored with the defaults, and the section is left out of
//! the canonical JSON while it equals them (old snapshots stay).

use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

/// What the daemon does when the sentinel raises an alert for the agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "`record`, `hold` or `kill`")]
pub enum OnAlert {
    /// Write the alert; nothing else.
    #[default]
    Record,
    /// The kill switch with `--freeze`: the agent is revoked and its
    /// processes frozen until a human runs `warden revive`.
    Hold,
    /// The kill switch: the agent is revoked and its processes killed.
    Kill,
}

/// The sentinel's parameters (defaults in [`Monitor::default`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Monitor {
    /// `false` turns the sentinel off for this agent.
    pub enabled: bool,
    /// Width of one rate window.
    #[serde(rename = "window_secs", serialize_with = "secs")]
    pub window: Duration,
    /// How long after a window ends its late entries (summaries, written
    /// every `WARDEN_SUMMARY_SECS`) are awaited before it is judged.
    #[serde(rename = "settle_secs", serialize_with = "secs")]
    pub settle: Duration,
    /// Windows that set a baseline before its detectors may alert.
    pub warmup: u32,
    /// EWMA weight of the newest window.
    #[serde(serialize_with = "decimal")]
    pub alpha: f64,
    /// CUSUM allowance, in standard deviations.
    #[serde(serialize_with = "decimal")]
    pub k: f64,
    /// CUSUM threshold, in standard deviations.
    #[serde(serialize_with = "decimal")]
    pub h: f64,
    /// Smallest rate (actions/s) the rate's noise is estimated from, so a
    /// quiet class does not alert on its first few actions.
    #[serde(serialize_with = "decimal")]
    pub min_rate: f64,
    /// New-behaviour alerts: something not seen for the agent within this
    /// many days (0 turns them off).
    pub new_behaviour_days: u32,
    pub on_alert: OnAlert,
}

impl Default for Monitor {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(10),
            settle: Duration::from_secs(15),
            warmup: 6,
            alpha: 0.1,
            k: 1.0,
            h: 8.0,
            min_rate: 1.0,
            new_behaviour_days: 30,
            on_alert: OnAlert::Record,
        }
    }
}

impl Monitor {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// Floats as decimal strings: the canonical JSON has no floats.
fn decimal<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{x}"))
}

/// The section as written; checked into a [`Monitor`] by `TryFrom`, so an
/// out-of-range value is reported at the section's line.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "monitor: a mapping with `window`, `settle`, `warmup`, `alpha`, `k`, `h`, \
                 `min_rate`, `new_behaviour_days`, `on_alert` or `enabled`"
)]
pub(super) struct RawMonitor {
    enabled: Option<bool>,
    window: Option<String>,
    settle: Option<String>,
    warmup: Option<u32>,
    alpha: Option<f64>,
    k: Option<f64>,
    h: Option<f64>,
    min_rate: Option<f64>,
    new_behaviour_days: Option<u32>,
    on_alert: Option<OnAlert>,
}

impl TryFrom<RawMonitor> for Monitor {
    type Error = String;

    fn try_from(raw: RawMonitor) -> Result<Self, String> {
        let d = Monitor::default();
        let duration = |v: Option<String>, name: &str, default: Duration, min: u64| match v {
            None => Ok(default),
            Some(s) => match crate::clock::whole_secs(&s, "smh") {
                Some(n) if (min..=3600).contains(&n) => Ok(Duration::from_secs(n)),
                _ => Err(format!(
                    "monitor: invalid {name} '{s}': write a whole number of s, m or h between \
                     {min}s and 1h, such as 10s"
                )),
            },
        };
        let positive = |v: Option<f64>, name: &str, default: f64, max: f64| match v {
            None => Ok(default),
            Some(x) if x > 0.0 && x <= max => Ok(x),
            Some(x) => Err(format!(
                "monitor: {name} must be above 0 and at most {max}, got {x}"
            )),
        };
        let m = Monitor {
            enabled: raw.enabled.unwrap_or(d.enabled),
            window: duration(raw.window, "window", d.window, 1)?,
            settle: duration(raw.settle, "settle", d.settle, 0)?,
            warmup: match raw.warmup {
                Some(w) if !(1..=1000).contains(&w) => {
                    return Err(format!(
                        "monitor: warmup must be 1 to 1000 windows, got {w}"
                    ))
                }
                w => w.unwrap_or(d.warmup),
            },
            alpha: positive(raw.alpha, "alpha", d.alpha, 1.0)?,
            k: positive(raw.k, "k", d.k, 100.0)?,
            h: positive(raw.h, "h", d.h, 10_000.0)?,
            min_rate: positive(raw.min_rate, "min_rate", d.min_rate, 1e9)?,
            new_behaviour_days: match raw.new_behaviour_days {
                Some(n) if n > 3650 => {
                    return Err(format!(
                        "monitor: new_behaviour_days must be at most 3650, got {n}"
                    ))
                }
                n => n.unwrap_or(d.new_behaviour_days),
            },
            on_alert: raw.on_alert.unwrap_or(d.on_alert),
        };
        Ok(m)
    }
}

impl<'de> Deserialize<'de> for Monitor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawMonitor::deserialize(d)?;
        Monitor::try_from(raw).map_err(serde::de::Error::custom)
    }
}
