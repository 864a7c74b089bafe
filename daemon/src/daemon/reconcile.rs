//! Reconcile: brings the kernel's maps in line with the registry and the
//! policy files, and decides which machine-wide programs must be attached.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use serde_json::json;
use warden_common::sys_exit_mode;

use super::{enforcer::Enforcer, WriteError};
use crate::{
    actor::{Actor, Recorded},
    attribution::{AgentView, PolicyView},
    cgroup, clock,
    kernel::{AgentRules, KernelError},
    policy::{self, CompiledNet, CompiledPaths},
    registry::{Agent, AgentStatus, RegistryError},
};

/// Why an agent is not enforced as configured. The daemon keeps the running
/// policy in force (or none, which denies), records the refusal and reports
/// the message in `warden status` and to `warden policy reload`.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    // Boxed: kernel errors are large, and these travel up every `?`.
    #[error(transparent)]
    Kernel(Box<KernelError>),
    #[error("{hook}")]
    GlobalHook {
        hook: &'static str,
        #[source]
        source: Box<KernelError>,
    },
    #[error("read policy {}", file.display())]
    ReadPolicy {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("{} is not inside the cgroup2 hierarchy", .0.display())]
    OutsideHierarchy(PathBuf),
    /// The policy in force asks for review and this change has none (or
    /// a freeze window refuses changes): the policy in force stays.
    #[error("policy change refused: {0}")]
    ChangeRefused(String),
    /// A delegated child whose effective policy cannot be computed.
    #[error("delegation: {0}")]
    Delegation(String),
}

impl From<KernelError> for ReconcileError {
    fn from(e: KernelError) -> Self {
        Self::Kernel(Box::new(e))
    }
}

/// What needs the on-demand global programs (`sys_exit`, the page-fault
/// guard) now.
pub(super) struct GlobalNeeds<'a> {
    /// Agents whose policies have file rules.
    pub(super) files: Vec<&'a str>,
    /// Agents whose policies hold actions that need `sys_exit`.
    pub(super) holds: Vec<&'a str>,
    /// Agents whose policies hold execs on the fallback.
    pub(super) fault_guard: Vec<&'a str>,
    /// Pending holds; `None` if they could not be listed.
    pub(super) pending: Option<usize>,
    /// Threads in `HELD`.
    pub(super) marked: usize,
    /// Adopted agents: their processes can open packet sockets that no
    /// seccomp filter refuses (`sys_exit` kills them unless a rule
    /// allows, where BPF LSM or fmod_ret does not decide them).
    pub(super) packets: Vec<&'a str>,
}

pub(super) struct Enforced {
    pub(super) cgroup_id: u64,
    pub(super) cgroup: PathBuf,
    pub(super) snapshot: String,
    pub(super) revoked: bool,
    /// The policy in force has file rules (the `sys_exit` program decides
    /// the agent's opens).
    pub(super) needs_file: bool,
    /// The policy in force holds actions that need `sys_exit`: network
    /// holds (it stops them), and the fallback's paused execs and opens
    /// (it guards them).
    pub(super) needs_hold: bool,
    /// The policy in force holds execs on the fallback (the page-fault
    /// guard runs).
    pub(super) needs_fault_guard: bool,
    /// The agent's cgroup was adopted (`agent add --cgroup`): its
    /// processes are not under `warden run`'s seccomp filter, so its
    /// packet sockets need `sys_exit` on the fallback.
    pub(super) adopted: bool,
    /// The policy in force says `mode: record`.
    pub(super) record: bool,
    /// The freeze window whose variant of the policy is installed
    /// (destructive rules deny), and every window that applies to the
    /// agent (its policy's and the host's), checked each second.
    pub(super) freeze: Option<String>,
    pub(super) windows: Vec<policy::freeze::Window>,
    /// The policy's use of its share of each rule map (`Capacity`).
    pub(super) rule_maps: String,
    /// The agent's id (the kernel's budget counts are keyed by it) and
    /// the budgets of the policy in force.
    pub(super) agent_id: u32,
    pub(super) budgets: Vec<policy::budget::Budget>,
    /// The policy in force before any freeze variant (for a delegated
    /// child: the intersection), from which its children's effective
    /// policies are computed; `None` while the agent has no valid policy.
    pub(super) effective: Option<Arc<policy::CompiledPolicy>>,
    /// The snapshot of the `shadow:` candidate the kernel evaluates beside
    /// the policy in force, if any.
    pub(super) shadow: Option<String>,
    /// A delegated child: the snapshots of its own policy and of its
    /// parent's that its policy in force was computed from (the next
    /// `policy_load` says which side changed).
    pub(super) delegation: Option<(String, String)>,
}

impl Enforcer {
    pub(super) fn reconcile_all(&mut self, actor: &Actor) -> Vec<String> {
        let mut errors = Vec::new();
        let agents = match self.registry.list() {
            Ok(a) => a,
            Err(e) => return vec![e.to_string()],
        };
        // Agents removed from the registry.
        let gone: Vec<String> = self
            .enforced
            .keys()
            .filter(|name| !agents.iter().any(|a| &a.name == *name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(old) = self.enforced.remove(&name) {
                crate::dns::forget_cgroup(old.cgroup_id);
                if let Err(e) = self.kernel.remove(old.cgroup_id) {
                    errors.push(format!("agent '{name}': {}", crate::error_chain(&e)));
                }
            }
        }
        // An agent nested below a removed one gets its own programs now,
        // not after every policy is compiled.
        if let Err(e) = self.attach_nests() {
            errors.push(crate::error_chain(&e));
        }
        // A delegated child's policy is computed from its parent's in
        // force, and its cgroup is below the parent's: parents first.
        let mut agents = agents;
        agents.sort_by_key(|a| a.cgroup.components().count());
        for agent in &agents {
            if let Err(e) = self.reconcile_agent(agent, actor) {
                errors.push(format!(
                    "agent '{}': {}",
                    agent.name,
                    crate::error_chain(&e)
                ));
            }
        }
        if let Err(e) = self.attach_nests() {
            errors.push(crate::error_chain(&e));
        }
        if let Err(e) = self.update_sys_exit() {
            errors.push(crate::error_chain(&e));
        }
        for e in &errors {
            tracing::error!(error = %e, "reconcile");
        }
        self.policy_errors = errors.clone();
        errors
    }

    /// The enforced agent whose cgroup is the top-most strict ancestor of
    /// `cgroup`, if any: its cgroup programs decide for the agent at
    /// `cgroup` too (`Kernel::cover`).
    fn nest_top(&self, cgroup: &Path) -> Option<u64> {
        self.enforced
            .values()
            .filter(|e| e.cgroup != cgroup && cgroup.starts_with(&e.cgroup))
            .min_by_key(|e| e.cgroup.components().count())
            .map(|e| e.cgroup_id)
    }

    /// Nested agents (delegated children, or an adopted cgroup below
    /// another agent's): only the top-most agent of each nest has the
    /// cgroup network programs attached. Tops first, so an agent whose
    /// ancestor went away gets its own before anything is covered.
    ///
    /// The `cgroup_skb/egress` program likewise: it is attached at the top
    /// of a nest while any agent of the nest has a `bytes: egress` budget
    /// (it counts each packet against the sender's deepest agent), and at
    /// no agent below the top, where it would count each packet again.
    pub(super) fn attach_nests(&mut self) -> Result<(), ReconcileError> {
        let egress = |e: &Enforced| {
            e.budgets
                .iter()
                .any(|b| b.count == policy::budget::BudgetCount::EgressBytes)
        };
        let agents: Vec<(u64, PathBuf, Option<u64>)> = self
            .enforced
            .values()
            .map(|e| (e.cgroup_id, e.cgroup.clone(), self.nest_top(&e.cgroup)))
            .collect();
        for (id, cgroup, top) in &agents {
            if top.is_none() {
                self.kernel.attach(cgroup, *id)?;
                let nest_egress = self
                    .enforced
                    .values()
                    .any(|e| e.cgroup.starts_with(cgroup) && egress(e));
                self.kernel.set_egress(cgroup, *id, nest_egress)?;
            }
        }
        for (id, cgroup, top) in &agents {
            if let Some(top) = top {
                self.kernel.cover(*id, *top);
                if self.kernel.egress_attached(*top) {
                    self.kernel.set_egress(cgroup, *id, false)?;
                }
            }
        }
        Ok(())
    }

    /// Attaches the `sys_exit` program while some agent needs it and
    /// detaches it when none does: file rules in force, network holds in a
    /// policy, a hold awaiting a decision, or a thread a hook marked and
    /// `sys_exit` has not stopped yet. (A hook that read an agent's old
    /// policy just before a reload that drops its last hold rule could
    /// still mark a thread after this check; the window is one map update.)
    /// The page-fault guard likewise, while some policy holds execs on
    /// the fallback or a thread is in `HELD`.
    pub(super) fn update_sys_exit(&mut self) -> Result<(), ReconcileError> {
        let needs = self.global_needs();
        let files = !needs.files.is_empty();
        let packets = !needs.packets.is_empty();
        // Pending holds that could not be listed count as some. Where the
        // fexit stops held network actions (then BPF LSM or fmod_ret
        // decides every class too), a pending hold needs no sys_exit: a
        // SIGCONT only brings its thread back into hooks that stop it.
        let pending = needs.pending != Some(0) && !self.kernel.lsm().net_holds;
        let holds = !needs.holds.is_empty() || needs.marked > 0 || pending;
        let guard = !needs.fault_guard.is_empty() || needs.marked > 0;
        self.kernel
            .set_fault_guard(guard)
            .map_err(|e| ReconcileError::GlobalHook {
                hook: "tp_btf/page_fault_user",
                source: Box::new(e),
            })?;
        let mut mode = 0;
        if holds {
            mode |= sys_exit_mode::HOLDS;
        }
        if files {
            mode |= sys_exit_mode::FILES;
        }
        if packets {
            mode |= sys_exit_mode::PACKETS;
        }
        self.kernel
            .set_sys_exit_mode(mode)
            .map_err(|e| ReconcileError::GlobalHook {
                hook: "tp_btf/sys_exit",
                source: Box::new(e),
            })
    }

    pub(super) fn reconcile_agent(
        &mut self,
        agent: &Agent,
        actor: &Actor,
    ) -> Result<(), ReconcileError> {
        let cgroup_id = cgroup::cgroup_id(&agent.cgroup)?;
        // A delegated child of a revoked agent is revoked with it.
        let revoked = agent.status == AgentStatus::Revoked
            || (agent.parent.is_some()
                && self
                    .registry
                    .lineage(&agent.name)?
                    .iter()
                    .any(|a| a.status == AgentStatus::Revoked));
        if let Some(old) = self.enforced.get(&agent.name) {
            if old.cgroup_id != cgroup_id {
                // The cgroup was recreated: enforce on the new one.
                let old_id = old.cgroup_id;
                self.enforced.remove(&agent.name);
                crate::dns::forget_cgroup(old_id);
                self.kernel.remove(old_id)?;
            }
        }
        self.views.write().expect("views lock").agents.insert(
            agent.id,
            AgentView {
                name: agent.name.clone(),
                owner: agent.owner.clone(),
            },
        );

        let file = self.paths.policy_dir.join(&agent.policy);
        // The one pipeline `warden policy check` and `agent add` run too,
        // with this kernel's mechanisms.
        let caps = self.kernel.capabilities();
        let loaded = std::fs::read_to_string(&file)
            .map_err(|source| ReconcileError::ReadPolicy {
                file: file.clone(),
                source,
            })
            .and_then(|text| {
                Ok(policy::compile_policy(
                    &file.display().to_string(),
                    &text,
                    &caps,
                )?)
            });
        let compiled = match loaded {
            Ok(l) => l,
            Err(e) => {
                self.record_policy_rejected(agent, actor, &crate::error_chain(&e));
                if !self.kernel.is_attached(cgroup_id) {
                    // Never leave an agent unenforced: with no valid policy
                    // it gets none, so the default (deny) applies to all it
                    // does that this kernel lets us decide.
                    let none = CompiledPaths {
                        exec_governed: self.kernel.exec_unavailable().is_none(),
                        file_governed: self.kernel.file_unavailable().is_none(),
                        ..CompiledPaths::default()
                    };
                    if none.file_governed {
                        let mode = self.kernel.sys_exit_mode() | sys_exit_mode::FILES;
                        self.kernel.set_sys_exit_mode(mode)?;
                    }
                    if agent.adopted {
                        let mode = self.kernel.sys_exit_mode() | sys_exit_mode::PACKETS;
                        self.kernel.set_sys_exit_mode(mode)?;
                    }
                    let rules = AgentRules {
                        agent_id: agent.id,
                        policy_gen: 0,
                        net: &CompiledNet::default(),
                        paths: &none,
                        revoked,
                        fail_open: false,
                        record: false,
                        each_allowed: false,
                        count_per_agent: false,
                        each_denied: false,
                    };
                    self.install(agent, cgroup_id, &rules)?;
                    let _ =
                        crate::dns::configure(agent.id, &agent.name, &agent.owner, cgroup_id, None);
                    self.enforced.insert(
                        agent.name.clone(),
                        Enforced {
                            cgroup_id,
                            cgroup: agent.cgroup.clone(),
                            snapshot: "none".into(),
                            revoked,
                            needs_file: none.file_governed,
                            needs_hold: false,
                            needs_fault_guard: false,
                            adopted: agent.adopted,
                            record: false,
                            rule_maps: String::new(),
                            agent_id: agent.id,
                            budgets: Vec::new(),
                            freeze: None,
                            windows: Vec::new(),
                            effective: None,
                            shadow: None,
                            delegation: None,
                        },
                    );
                } else if let Some(old) = self.enforced.get_mut(&agent.name) {
                    if old.revoked != revoked {
                        self.kernel.set_revoked(cgroup_id, revoked)?;
                        old.revoked = revoked;
                    }
                }
                return Err(e);
            }
        };
        // A policy whose version in force says `change_review` changes
        // only by an approved proposal (daemon/governance.rs).
        let super::governance::Gated {
            compiled,
            details: reviewed,
        } = self.gate(agent, actor, compiled)?;
        // A delegated child: the intersection with its parent's policy in
        // force (daemon/delegation.rs).
        let (compiled, mut delegation) = self.delegated(agent, compiled, &caps)?;
        let delegation_pair = delegation_snapshots(&delegation);
        if let Some((own, parent)) = &delegation_pair {
            // What an auditor of the child asks: which snapshot this entry
            // names (the effective one), and which side changed it.
            delegation.insert("snapshot_of".into(), json!("effective"));
            let before = self
                .enforced
                .get(&agent.name)
                .and_then(|e| e.delegation.clone());
            if let Some((own_before, parent_before)) = before {
                let mut changed = Vec::new();
                if own_before != *own {
                    changed.push("own");
                }
                if parent_before != *parent {
                    changed.push("parent");
                }
                delegation.insert("previous_own_snapshot".into(), json!(own_before));
                delegation.insert("previous_parent_snapshot".into(), json!(parent_before));
                delegation.insert("changed".into(), json!(changed));
            }
        }
        let effective = Arc::new(compiled.clone());
        // In a freeze window: the variant whose destructive rules deny.
        let super::governance::Frozen {
            compiled,
            windows,
            window: freeze,
        } = self.freeze_variant(agent, compiled)?;
        let policy::CompiledPolicy {
            parsed,
            net,
            paths,
            snapshot,
            capacity,
            ..
        } = &compiled;
        let snapshot = snapshot.clone();
        // Record mode governs every exec and open the kernel can see (the
        // rules decide what is `would-deny`), so that the record is whole
        // even for a policy without exec or file rules.
        let recorded_paths;
        let paths = if parsed.mode == policy::Mode::Record {
            recorded_paths = CompiledPaths {
                exec_governed: self.kernel.exec_unavailable().is_none(),
                file_governed: self.kernel.file_unavailable().is_none(),
                ..(*paths).clone()
            };
            &recorded_paths
        } else {
            paths
        };
        if let Some(old) = self.enforced.get_mut(&agent.name) {
            old.windows.clone_from(&windows);
            old.effective = Some(effective.clone());
            if old.snapshot == snapshot && old.freeze == freeze {
                if old.revoked != revoked {
                    self.kernel.set_revoked(cgroup_id, revoked)?;
                    old.revoked = revoked;
                }
                return Ok(());
            }
        }
        let previous = self
            .enforced
            .get(&agent.name)
            .map_or_else(|| "none".to_string(), |o| o.snapshot.clone());
        let (version, _new) = self.registry.record_policy_version(
            &agent.name,
            &agent.policy,
            &snapshot,
            compiled.text(),
            clock::now_ns(),
            &actor.describe(),
        )?;
        // A frozen variant is installed under a generation of its own, so
        // its decisions name the window (daemon/governance.rs).
        let gen = super::governance::generation(version, freeze.as_deref());
        let mut views = self.views.write().expect("views lock");
        views.policies.insert(
            gen,
            Arc::new(PolicyView {
                snapshot: snapshot.clone(),
                rule_ids: parsed.rule_ids(),
                budget_ids: parsed.budgets.iter().map(|b| b.id.clone()).collect(),
                approvers: parsed.approvers.clone(),
                hold_timeout: parsed.hold_timeout,
            }),
        );
        self.monitors
            .write()
            .expect("monitors lock")
            .insert(agent.name.clone(), parsed.monitor.clone());
        if let Some(window) = &freeze {
            views.freezes.insert(gen, window.clone());
        }
        if let Some(candidate) = &compiled.shadow {
            // The candidate's rule names, for the shadow records it causes.
            views.policies.insert(
                gen | warden_common::SHADOW_GENERATION,
                Arc::new(PolicyView {
                    snapshot: candidate.snapshot.clone(),
                    rule_ids: candidate.parsed.rule_ids(),
                    budget_ids: Vec::new(),
                    approvers: candidate.parsed.approvers.clone(),
                    hold_timeout: candidate.parsed.hold_timeout,
                }),
            );
        }
        drop(views);
        // The sys_exit program must run before the agent's flags ask for
        // it: attach (or widen its mode) first, narrow it after the install
        // (`update_sys_exit`).
        let (needs_hold, needs_fault_guard) = hold_needs(parsed, self.kernel.lsm());
        if needs_fault_guard {
            self.kernel.set_fault_guard(true)?;
        }
        let mut mode = self.kernel.sys_exit_mode();
        if needs_hold {
            mode |= sys_exit_mode::HOLDS;
        }
        if paths.file_governed {
            mode |= sys_exit_mode::FILES;
        }
        if agent.adopted {
            mode |= sys_exit_mode::PACKETS;
        }
        self.kernel.set_sys_exit_mode(mode)?;
        let fail_open = parsed.on_evidence_loss == policy::EvidenceLoss::Allow;
        let rules = AgentRules {
            agent_id: agent.id,
            policy_gen: gen,
            net,
            paths,
            revoked,
            fail_open,
            record: parsed.mode == policy::Mode::Record,
            each_allowed: parsed.evidence.allowed == policy::AllowedEvidence::Each,
            count_per_agent: parsed.evidence.per == policy::CountPer::Agent,
            each_denied: parsed.evidence.denied == policy::DeniedEvidence::Each,
        };
        let had_shadow = self
            .enforced
            .get(&agent.name)
            .is_some_and(|e| e.shadow.is_some());
        self.install(agent, cgroup_id, &rules)?;
        // After the install, which cleared the flag (kernel/rules.rs). A
        // candidate that cannot be installed leaves the policy in force
        // as installed, unshadowed; the load entry says why.
        let mut shadow_error = None;
        if compiled.shadow.is_some() || had_shadow {
            let candidate = compiled.shadow.as_ref().map(|c| (&c.net, &c.paths));
            if let Err(e) = self.kernel.install_shadow(cgroup_id, candidate) {
                let why = crate::error_chain(&e);
                tracing::error!(agent = %agent.name, error = %why, "shadow candidate not installed");
                let _ = self.kernel.install_shadow(cgroup_id, None);
                shadow_error = Some(why);
            }
        }
        self.reset_changed_budgets(agent, &parsed.budgets);
        // Its DNS proxy, for `host` rules (after the install: the old
        // slot's learned addresses are gone with it).
        if let Err(e) = crate::dns::configure(
            agent.id,
            &agent.name,
            &agent.owner,
            cgroup_id,
            Some((parsed, &snapshot)),
        ) {
            tracing::warn!(agent = %agent.name, error = %crate::error_chain(&e), "DNS proxy not started: the agent's DNS is decided by its CIDR rules");
        }
        self.enforced.insert(
            agent.name.clone(),
            Enforced {
                cgroup_id,
                cgroup: agent.cgroup.clone(),
                snapshot: snapshot.clone(),
                revoked,
                needs_file: paths.file_governed,
                needs_hold,
                needs_fault_guard,
                adopted: agent.adopted,
                record: parsed.mode == policy::Mode::Record,
                rule_maps: capacity.to_string(),
                agent_id: agent.id,
                budgets: parsed.budgets.clone(),
                freeze: freeze.clone(),
                windows,
                effective: Some(effective.clone()),
                shadow: compiled
                    .shadow
                    .as_ref()
                    .filter(|_| shadow_error.is_none())
                    .map(|c| c.snapshot.clone()),
                delegation: delegation_pair.clone(),
            },
        );
        let mut details = serde_json::Map::new();
        details.insert("policy_version".into(), json!(version));
        if parsed.mode == policy::Mode::Record {
            // Everything the agent does goes ahead while this policy is in
            // force; its decisions are `would-deny`/`would-hold`.
            details.insert("mode".into(), json!("record"));
        }
        details.insert("previous_snapshot".into(), json!(previous));
        details.extend(reviewed.unwrap_or_default());
        if let Some(window) = &freeze {
            details.insert("freeze_window".into(), json!(window));
        }
        if let Some(candidate) = &compiled.shadow {
            // Evaluated beside it, never enforced.
            details.insert("shadow_snapshot".into(), json!(candidate.snapshot));
            details.insert("shadow_file".into(), json!(candidate.parsed.source_name()));
            if let Some(why) = &shadow_error {
                details.insert("shadow_error".into(), json!(why));
            }
        }
        details.insert("file".into(), json!(file.display().to_string()));
        details.extend(delegation);
        let entry = actor.entry(Recorded {
            kind: "policy_load",
            agent: &agent.name,
            owner: &agent.owner,
            action: "policy.load",
            target: &agent.policy,
            decision: "loaded",
            policy_snapshot: &snapshot,
            details,
        });
        self.writer.write_durable(vec![entry])?;
        tracing::info!(agent = %agent.name, policy = %agent.policy, snapshot = %snapshot, version, "policy loaded");
        Ok(())
    }

    pub(super) fn install(
        &mut self,
        agent: &Agent,
        cgroup_id: u64,
        rules: &AgentRules<'_>,
    ) -> Result<(), ReconcileError> {
        // Where its child cgroups find it (before the entry, so a child
        // never misses it once the entry is there).
        let level = crate::cgroup::cgroup2_mount()
            .ok()
            .and_then(|mount| crate::cgroup::level(&mount, &agent.cgroup))
            .ok_or_else(|| ReconcileError::OutsideHierarchy(agent.cgroup.clone()))?;
        self.kernel.mark_agent_level(level)?;
        // Rules and the agent entry first, then attach: the programs never
        // run for this cgroup without its rules in place.
        self.kernel.install(cgroup_id, rules)?;
        match self.nest_top(&agent.cgroup) {
            Some(top) if self.kernel.is_attached(top) => self.kernel.cover(cgroup_id, top),
            _ => self.kernel.attach(&agent.cgroup, cgroup_id)?,
        }
        // After the install: the egress program finds the budgets in place.
        // In a nest it is attached at the top only (`attach_nests`).
        let egress = rules.net.budgets.classes & warden_common::budget_class::EGRESS_BYTES != 0;
        if egress && self.nest_top(&agent.cgroup).is_none() {
            self.kernel.set_egress(&agent.cgroup, cgroup_id, true)?;
        }
        // Processes already in an adopted cgroup were not forked under the
        // escape programs' eyes: they become members here.
        let added = self.kernel.seed_members(&agent.cgroup, cgroup_id)?;
        tracing::debug!(agent = %agent.name, added, "agent processes tracked");
        Ok(())
    }

    pub(super) fn record_policy_rejected(&self, agent: &Agent, actor: &Actor, error: &str) {
        let running = self
            .enforced
            .get(&agent.name)
            .map_or("none", |e| e.snapshot.as_str());
        let mut details = serde_json::Map::new();
        details.insert("error".into(), json!(error));
        let entry = actor.entry(Recorded {
            kind: "policy_load",
            agent: &agent.name,
            owner: &agent.owner,
            action: "policy.load",
            target: &agent.policy,
            decision: "rejected",
            policy_snapshot: running,
            details,
        });
        if let Err(e) = self.writer.write_durable(vec![entry]) {
            tracing::error!(error = %e, "record rejected policy");
        }
    }

    /// What needs the on-demand global programs now: `update_sys_exit`
    /// attaches them from this, and `warden status` reports it.
    pub(super) fn global_needs(&self) -> GlobalNeeds<'_> {
        let agents = |needs: fn(&Enforced) -> bool| {
            let mut names: Vec<&str> = self
                .enforced
                .iter()
                .filter(|(_, e)| needs(e))
                .map(|(name, _)| name.as_str())
                .collect();
            names.sort_unstable();
            names
        };
        GlobalNeeds {
            files: agents(|e| e.needs_file),
            holds: agents(|e| e.needs_hold),
            fault_guard: agents(|e| e.needs_fault_guard),
            pending: self.holds.list(false).ok().map(|p| p.len()),
            marked: self.kernel.marked_threads(),
            packets: agents(|e| e.adopted),
        }
    }
}

/// Whether a policy holds network actions (exec and file `hold` rules are
/// enforced as deny and need no stop).
/// What a policy's holds need of the global programs: (`sys_exit`, the
/// page-fault guard). `sys_exit` stops network holds and guards the
/// fallback's paused execs and opens; the page-fault guard is for paused
/// execs. BPF LSM (and fmod_ret) holds need neither, network holds
/// neither where the fexit stops them (`LsmState::net_holds`).
pub(super) fn hold_needs(p: &policy::Policy, lsm: &crate::lsm::LsmState) -> (bool, bool) {
    let holds = |f: fn(&policy::Selector) -> bool| {
        p.rules
            .iter()
            .any(|r| r.decision == policy::Decision::Hold && f(&r.selector))
    };
    // Where the fexit after the cgroup hook runs (`hold_stop.rs`), it stops
    // held network actions itself.
    let net = holds(|s| {
        matches!(
            s,
            policy::Selector::Connect { .. } | policy::Selector::ConnectHost { .. }
        )
    }) && !lsm.net_holds;
    let exec = holds(|s| matches!(s, policy::Selector::Exec { .. })) && !lsm.exec;
    let file = holds(|s| matches!(s, policy::Selector::File { .. })) && !lsm.file;
    // A budget's hold is an ordinary hold, and its kill of a connect is
    // sent at the syscall's exit (a cgroup hook cannot signal): both need
    // what a hold rule of that class needs.
    use policy::budget::{BudgetCount as C, BudgetThen as T};
    let budget = |class: C| {
        p.budgets
            .iter()
            .any(|b| b.then != T::Deny && (b.count == class || b.count == C::Any))
    };
    let net = net || (budget(C::Connect) && !lsm.net_holds);
    let exec = exec || (budget(C::Exec) && !lsm.exec);
    let file = file || (budget(C::File) && !lsm.file);
    (net || exec || file, exec)
}

/// The (own, parent) snapshots of a delegated child's `policy_load`
/// details (`Enforcer::delegated`); `None` for an agent without a parent.
fn delegation_snapshots(
    details: &serde_json::Map<String, serde_json::Value>,
) -> Option<(String, String)> {
    let text = |k: &str| details.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    Some((text("own_snapshot")?, text("parent_snapshot")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> policy::Policy {
        policy::parse_policy("p.yaml", yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn holds_need_sys_exit_except_under_bpf_lsm() {
        let exec_hold = parse(
            "version: 1\nrules:\n  - id: a\n    exec: { path: /bin/sh }\n    decision: hold\n",
        );
        let file_hold = parse(
            "version: 1\nrules:\n  - id: a\n    file: { path: /etc/x, access: [read] }\n    decision: hold\n",
        );
        let net_hold = parse(
            "version: 1\nrules:\n  - id: a\n    connect: { to: 10.0.0.1 }\n    decision: hold\n",
        );
        let fallback = crate::lsm::LsmState::default();
        let lsm = crate::lsm::LsmState {
            exec: true,
            file: true,
            unavailable: None,
            ..crate::lsm::LsmState::default()
        };
        assert_eq!(hold_needs(&exec_hold, &fallback), (true, true));
        assert_eq!(hold_needs(&file_hold, &fallback), (true, false));
        assert_eq!(hold_needs(&net_hold, &fallback), (true, false));
        assert_eq!(hold_needs(&exec_hold, &lsm), (false, false));
        assert_eq!(hold_needs(&file_hold, &lsm), (false, false));
        assert_eq!(hold_needs(&net_hold, &lsm), (true, false));
        let lsm_net = crate::lsm::LsmState {
            net_holds: true,
            ..lsm
        };
        assert_eq!(hold_needs(&net_hold, &lsm_net), (false, false));
        assert_eq!(hold_needs(&exec_hold, &lsm_net), (false, false));
    }
}
