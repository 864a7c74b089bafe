//! The exec judge: the agent's exec rules applied to the file the kernel
//! is executing (`bprm->file`, resolved by the walk in `path.rs`), never
//! to the path the caller passed.

use warden_common::{agent_flags, path_flags, rule, AgentInfo, Decision};

use crate::{
    maps::EXEC_RULES,
    path::{self, off, Carry, Scratch, UNRESOLVED_FLAGS},
};

/// What the policy says about an exec, before anyone carries it out.
pub struct Judged {
    /// The rule's decision as written (`Hold` included: each hook decides
    /// what it can do with it).
    pub decision: Decision,
    pub rule_idx: u32,
    /// `path_flags` of the resolution.
    pub flags: u32,
    /// Bytes of the resolved path (it is in the scratch space).
    pub len: u32,
    pub carry: Carry,
}

/// Resolves the file the kernel executes (`bprm->file`) into the scratch
/// space and looks it up in the agent's exec rules. Shared by the
/// tracepoint fallback and the LSM hook, so both decide the same way.
#[inline(always)]
pub fn judge(s: &mut Scratch, cgroup_id: u64, agent: &AgentInfo, bprm: u64) -> Judged {
    let mut flags = 0;
    let (file, filename) = if path::offsets_valid() {
        (
            path::read::<u64>(bprm, off!(bprm_file)),
            path::read::<u64>(bprm, off!(bprm_filename)),
        )
    } else {
        flags |= path_flags::NO_OFFSETS;
        (0, 0)
    };
    let facts = path::file_facts(file);
    path::park(
        s,
        Carry {
            cgroup_id,
            ino: facts.ino,
            filename,
            agent_id: agent.agent_id,
            policy_gen: agent.policy_gen,
            slot: agent.slot,
            agent_flags: agent.flags,
            dev: facts.dev,
            flags: flags | facts.flags,
            access: 0,
            syscall: 0,
            compat: 0,
            _pad: 0,
        },
    );
    let built = path::build(s, facts.dentry, facts.vfsmount);
    let c = path::unpark(s);
    let flags = c.flags | built.flags;

    let (decision, rule_idx) = if c.agent_flags & agent_flags::REVOKED != 0 {
        (Decision::Deny, rule::REVOKED)
    } else if flags & path_flags::ANONYMOUS != 0 {
        // Before the unresolved check, which also lists ANONYMOUS: an
        // anonymous exec is recorded as such.
        (Decision::Deny, rule::ANONYMOUS_EXEC)
    } else if flags & UNRESOLVED_FLAGS != 0 {
        (Decision::Deny, rule::UNRESOLVED)
    } else {
        match EXEC_RULES.get(path::key(s, c.slot, &built)) {
            Some(r) if r.decision == Decision::Allow as u8 => (Decision::Allow, r.rule_idx),
            Some(r) if r.decision == Decision::Hold as u8 => (Decision::Hold, r.rule_idx),
            // Any other value is a denial.
            Some(r) => (Decision::Deny, r.rule_idx),
            None => (Decision::Deny, rule::DEFAULT),
        }
    };
    // An allowed exec counts against the agent's budgets; over one, the
    // budget decides. (A `then: kill` budget is a deny here: the fallback
    // kills on deny, the LSM hooks fail the syscall.)
    let (decision, rule_idx, _) = super::budget::judge_slot(
        c.agent_id,
        c.slot,
        warden_common::budget_class::EXEC,
        decision,
        rule_idx,
    );
    Judged {
        decision,
        rule_idx,
        flags,
        len: built.len,
        carry: c,
    }
}
