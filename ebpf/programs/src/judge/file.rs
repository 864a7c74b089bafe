//! The file judge: each access an open requests, decided by the agent's
//! file rules on the path of the kernel's `struct file`.

use warden_common::{access, agent_flags, rule, AgentInfo, Decision, FileRule, PathRule};

use crate::{
    maps::FILE_RULES,
    path::{self, Carry, Scratch, UNRESOLVED_FLAGS},
};

/// What the policy says about an open, before anyone carries it out.
pub struct Judged {
    pub decision: Decision,
    pub rule_idx: u32,
    /// The rule that decided each requested access (`rule::DEFAULT` for
    /// one not requested).
    pub read_rule: u32,
    pub write_rule: u32,
    /// `path_flags` of the resolution.
    pub flags: u32,
    /// Bytes of the resolved path (it is in the scratch space).
    pub len: u32,
    pub carry: Carry,
}

/// Resolves an opened `struct file` into the scratch space and decides
/// each requested access (`access` bits) from the agent's file rules: the
/// open is denied if any access is. Shared by the `sys_exit` fallback and
/// the LSM hook, so both decide the same way. `syscall`/`compat` only go
/// into the event.
#[inline(always)]
pub fn judge(
    s: &mut Scratch,
    cgroup_id: u64,
    agent: &AgentInfo,
    file: u64,
    requested: u32,
    syscall: u32,
    compat: u32,
) -> Judged {
    let facts = path::file_facts(file);
    path::park(
        s,
        Carry {
            cgroup_id,
            ino: facts.ino,
            filename: 0,
            agent_id: agent.agent_id,
            policy_gen: agent.policy_gen,
            slot: agent.slot,
            agent_flags: agent.flags,
            dev: facts.dev,
            flags: facts.flags,
            access: requested,
            syscall,
            compat,
            _pad: 0,
        },
    );
    let built = path::build(s, facts.dentry, facts.vfsmount);
    let c = path::unpark(s);
    let flags = c.flags | built.flags;
    let requested = c.access;

    let mut read_rule = rule::DEFAULT;
    let mut write_rule = rule::DEFAULT;
    let (decision, rule_idx) = if c.agent_flags & agent_flags::REVOKED != 0 {
        (Decision::Deny, rule::REVOKED)
    } else if flags & UNRESOLVED_FLAGS != 0 {
        // A path we could not build (too deep, or the fd no longer holds a
        // file: a sibling thread closed it) is not allowed.
        (Decision::Deny, rule::UNRESOLVED)
    } else {
        let rules: FileRule = match FILE_RULES.get(path::key(s, c.slot, &built)) {
            Some(r) => *r,
            None => FileRule {
                read: PathRule::DEFAULT,
                write: PathRule::DEFAULT,
            },
        };
        if requested & access::READ != 0 {
            read_rule = rules.read.rule_idx;
        }
        if requested & access::WRITE != 0 {
            write_rule = rules.write.rule_idx;
        }
        by_access(&rules, requested)
    };
    // An allowed file counts against the agent's budgets; over one, the
    // budget decides. (A `then: kill` budget is a deny here: the fallback
    // kills on deny, the LSM hooks fail the syscall.)
    let (decision, rule_idx, _) = super::budget::judge_slot(
        c.agent_id,
        c.slot,
        warden_common::budget_class::FILE,
        decision,
        rule_idx,
    );
    Judged {
        decision,
        rule_idx,
        read_rule,
        write_rule,
        flags,
        len: built.len,
        carry: c,
    }
}

/// Each requested access decided on its own; the strictest decides the
/// open (deny, then hold, then allow), and on a tie the write, the
/// riskier. Also the shadow candidate's decision (`fallback::shadow`).
#[inline(always)]
pub fn by_access(rules: &FileRule, requested: u32) -> (Decision, u32) {
    let mut out = (Decision::Allow, rule::DEFAULT);
    if requested & access::READ != 0 {
        out = (kernel_decision(rules.read.decision), rules.read.rule_idx);
    }
    if requested & access::WRITE != 0 {
        let write = (kernel_decision(rules.write.decision), rules.write.rule_idx);
        if strictness(write.0) >= strictness(out.0) {
            out = write;
        }
    }
    out
}

/// A rule's stored decision; anything but allow or hold is a denial.
#[inline(always)]
pub fn kernel_decision(stored: u8) -> Decision {
    match stored {
        1 => Decision::Allow,
        3 => Decision::Hold,
        _ => Decision::Deny,
    }
}

#[inline(always)]
fn strictness(d: Decision) -> u8 {
    match d {
        Decision::Allow => 0,
        Decision::Hold => 1,
        _ => 2,
    }
}
