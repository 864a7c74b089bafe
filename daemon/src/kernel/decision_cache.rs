//! The fallback's decision cache of allowed opens (`DECISION_CACHE`, see
//! `warden_common::decision_cache`): the daemon sets its TTL at load and
//! moves its epoch on whenever what the kernel decides from may have
//! changed (a policy installed or removed, `sys_exit` attached or its
//! mode changed), so no entry outlives the rules or the attachment that
//! made it.

use aya::maps::Array;
use warden_common::{decision_cache, names};

use super::{map_err, Kernel, KernelError};

/// Daemon environment: the longest an entry is used, in ms (0: the cache
/// is off). Default `decision_cache::DEFAULT_TTL_MS`.
pub const TTL_VAR: &str = "WARDEN_DECISION_CACHE_MS";

/// The TTL in ns from `TTL_VAR`'s value (`None`: unset).
pub fn ttl_ns(value: Option<&str>) -> Result<u64, KernelError> {
    let Some(v) = value else {
        return Ok(decision_cache::DEFAULT_TTL_MS * 1_000_000);
    };
    let ms: u64 = v
        .trim()
        .parse()
        .ok()
        .filter(|ms| *ms <= 3_600_000)
        .ok_or_else(|| KernelError::Config {
            what: TTL_VAR,
            detail: format!("{v:?} is not a number of milliseconds from 0 to 3600000"),
        })?;
    Ok(ms * 1_000_000)
}

impl Kernel {
    fn cache_conf(&mut self) -> Result<Array<&mut aya::maps::MapData, u64>, KernelError> {
        let name = names::DECISION_CACHE_CONF;
        let map = self
            .bpf
            .map_mut(name)
            .ok_or(KernelError::Missing { what: "map", name })?;
        Array::try_from(map).map_err(map_err("open", name))
    }

    /// Sets the entries' TTL (0 turns the cache off).
    pub fn set_decision_cache_ttl(&mut self, ttl_ns: u64) -> Result<(), KernelError> {
        let name = names::DECISION_CACHE_CONF;
        self.cache_conf()?
            .set(decision_cache::TTL_NS, ttl_ns, 0)
            .map_err(map_err("update", name))
    }

    /// Moves the epoch on: every cached decision stops matching. The
    /// programs add 1; the daemon adds 2^32, so even when a program's bump
    /// lands between this read and write (and is overwritten) the new
    /// value is one no entry carries.
    pub fn invalidate_decision_cache(&mut self) -> Result<(), KernelError> {
        let name = names::DECISION_CACHE_CONF;
        let mut conf = self.cache_conf()?;
        let epoch = conf
            .get(&decision_cache::EPOCH, 0)
            .map_err(map_err("read", name))?;
        conf.set(decision_cache::EPOCH, epoch.wrapping_add(1 << 32), 0)
            .map_err(map_err("update", name))
    }
}

impl Kernel {
    /// `invalidate_decision_cache` where the caller's own work succeeded:
    /// a failure is logged (the policy version in the key still keeps a
    /// stale rule from deciding), not returned.
    pub(super) fn forget_cached_decisions(&mut self) {
        if let Err(e) = self.invalidate_decision_cache() {
            tracing::warn!(error = %e, "decision cache epoch not moved on");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_default_value_and_bad_input() {
        assert_eq!(ttl_ns(None).unwrap(), 1_000_000_000);
        assert_eq!(ttl_ns(Some("0")).unwrap(), 0);
        assert_eq!(ttl_ns(Some(" 250 ")).unwrap(), 250_000_000);
        for bad in ["", "-1", "1s", "3600001", "x"] {
            let e = ttl_ns(Some(bad)).unwrap_err().to_string();
            assert!(e.contains(TTL_VAR), "{bad}: {e}");
        }
    }
}
