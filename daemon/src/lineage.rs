//! Lineage: who answers for what a delegated child agent does. Every
//! evidence entry of a child carries `details.lineage`: the chain from the
//! child up to its root agent, each with its accountable owner. The human
//! whose session started the acting process is the entry's own
//! `login_user`/`loginuid` (the audit login uid survives `warden run`, the
//! delegation and `sudo`); `warden log --lineage SEQ` joins both with the
//! delegated `run` entry that started the child.
//!
//! The daemon keeps each child's chain here (set at reconcile) and the
//! evidence writer adds it to every entry of that agent before hashing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, RwLock};

use serde_json::{json, Value};

use crate::evidence::NewEntry;
use crate::registry::Agent;

static CHAINS: LazyLock<RwLock<HashMap<String, Value>>> = LazyLock::new(Default::default);
/// Whether any chain is set: entries of hosts without delegation skip the
/// lock.
static ANY: AtomicBool = AtomicBool::new(false);

/// `[{"agent": child, "owner": ..}, {"agent": parent, "owner": ..}, ..]`,
/// nearest first (`Registry::lineage`).
pub fn chain_value(chain: &[Agent]) -> Value {
    Value::Array(
        chain
            .iter()
            .map(|a| json!({"agent": a.name, "owner": a.owner}))
            .collect(),
    )
}

/// Sets (or with `None` clears) the chain added to `agent`'s entries.
pub fn set(agent: &str, chain: Option<Value>) {
    let mut chains = CHAINS.write().unwrap_or_else(|e| e.into_inner());
    match chain {
        Some(c) => {
            chains.insert(agent.to_string(), c);
        }
        None => {
            chains.remove(agent);
        }
    }
    ANY.store(!chains.is_empty(), Ordering::Release);
}

/// Adds `details.lineage` to each entry of an agent with a chain (an entry
/// that already has one keeps it).
pub fn annotate(entries: &mut [NewEntry]) {
    if !ANY.load(Ordering::Acquire) {
        return;
    }
    let chains = CHAINS.read().unwrap_or_else(|e| e.into_inner());
    for e in entries {
        if let Some(chain) = chains.get(&e.agent) {
            e.details.entry("lineage").or_insert_with(|| chain.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_entries_of_agents_with_a_chain_get_one() {
        let chain = json!([{"agent": "lin-child", "owner": "c@x"}, {"agent": "lin-parent", "owner": "p@x"}]);
        set("lin-child", Some(chain.clone()));
        let entry = |agent: &str| {
            crate::actor::Actor::current().entry(crate::actor::Recorded {
                kind: "run",
                agent,
                owner: "o@x",
                action: "run",
                target: "true",
                decision: "started",
                policy_snapshot: "none",
                details: serde_json::Map::new(),
            })
        };
        let mut entries = vec![entry("lin-child"), entry("lin-other")];
        annotate(&mut entries);
        assert_eq!(entries[0].details["lineage"], chain);
        assert!(!entries[1].details.contains_key("lineage"));
        set("lin-child", None);
        let mut entries = vec![entry("lin-child")];
        annotate(&mut entries);
        assert!(!entries[0].details.contains_key("lineage"));
    }
}
