//! Holds and their approvals: the record of every action a policy held for a
//! human, what the human decided, and what finally happened.
//!
//! Integrity rules (the reasons this is more than a flag):
//! - An approval is bound to the exact job: its `job_hash` covers the agent,
//!   the action, the target tuple, the thread and the binary; the kernel only
//!   honours the decision for the same thread and destination.
//! - It is bound to the policy snapshot in force when the action was held; if
//!   the agent's policy changed since, the approval is refused as a conflict
//!   and the kernel decides the action again under the new policy.
//! - Deciding is idempotent: a second approve answers "already approved" and
//!   is counted, never applied twice.
//! - The schema (in `db::schema`) makes an incomplete record impossible: a
//!   decided approval without approver, role and time cannot be stored.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::{self, Database, DbError, Integrity};
use crate::policy::Approvers;

pub const DOMAIN_JOB: &[u8] = b"warden/job/v1\0";

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("{op}: {source}")]
    Sql {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("no hold with id {0} (see `warden approvals`)")]
    Unknown(u64),
}

fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> ApprovalError {
    move |source| ApprovalError::Sql { op, source }
}

/// The held action, as it is hashed and shown to the approver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub agent: String,
    pub action: String,
    pub target: String,
    pub exe: String,
    /// Device and inode of the executable, "dev:ino" (binary identity).
    pub binary: String,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub cgroup_id: u64,
}

impl Job {
    /// sha256 over the domain prefix and the job's canonical JSON (fields in
    /// the struct's order, which is alphabetical, no whitespace).
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("a Job always serialises");
        let mut h = Sha256::new();
        h.update(DOMAIN_JOB);
        h.update(&json);
        hex::encode(h.finalize())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Approved,
    Rejected,
    Expired,
    /// The policy changed while the action was held.
    Conflict,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
            Self::Conflict => "conflict",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "approved" => Self::Approved,
            "rejected" => Self::Rejected,
            "expired" => Self::Expired,
            "conflict" => Self::Conflict,
            _ => Self::Pending,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub id: u64,
    pub owner: String,
    pub job: Job,
    pub job_hash: String,
    pub rule_id: String,
    pub policy_snapshot: String,
    /// The kernel's exact key for the held action (hex of `HoldKey`).
    pub hold_key: String,
    pub created_at_ns: i64,
    pub expires_at_ns: i64,
    pub status: Status,
    pub decided_by: Option<String>,
    pub decided_role: Option<String>,
    pub decided_at_ns: Option<i64>,
    pub reason: Option<String>,
    /// The decision has been written to the kernel and the thread resumed.
    pub applied: bool,
    /// What finally happened to the action ("executed", "refused", ...).
    pub final_status: Option<String>,
    /// Decisions that arrived after the first (idempotency counter).
    pub repeated_decisions: u32,
}

pub struct Approvals {
    conn: Connection,
}

/// A decision to record.
pub struct Decided<'a> {
    pub status: Status,
    pub by: &'a str,
    pub role: &'a str,
    pub at_ns: i64,
    pub reason: Option<&'a str>,
}

impl Approvals {
    pub fn open(path: &Path) -> Result<Self, ApprovalError> {
        Ok(Self::from_database(db::open(path, Integrity::Trust)?))
    }

    /// The approvals on a database [`db::open`] opened, whose
    /// `synchronous = FULL` makes a decision survive a crash before it is
    /// acted on.
    pub fn from_database(database: Database) -> Self {
        let (conn, _) = database.into_parts();
        Self { conn }
    }

    #[cfg(test)]
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Records a new pending hold; returns its id.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &mut self,
        owner: &str,
        job: &Job,
        rule_id: &str,
        policy_snapshot: &str,
        hold_key: &str,
        created_at_ns: i64,
        expires_at_ns: i64,
    ) -> Result<u64, ApprovalError> {
        let job_json = serde_json::to_string(job).expect("a Job always serialises");
        self.conn
            .execute(
                "INSERT INTO approvals (agent, owner, job, job_hash, rule_id, policy_snapshot, hold_key,
                    approval_required, created_at_ns, expires_at_ns, status)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, 'pending')",
                params![
                    job.agent,
                    owner,
                    job_json,
                    job.hash(),
                    rule_id,
                    policy_snapshot,
                    hold_key,
                    created_at_ns,
                    expires_at_ns
                ],
            )
            .map_err(sql("insert approval"))?;
        Ok(self.conn.last_insert_rowid() as u64)
    }

    pub fn get(&self, id: u64) -> Result<Approval, ApprovalError> {
        self.conn
            .query_row(&format!("{SELECT} WHERE id = ?1"), [id], row)
            .optional()
            .map_err(sql("look up approval"))?
            .ok_or(ApprovalError::Unknown(id))
    }

    /// The pending hold for this exact kernel key, if any.
    pub fn pending_for_key(&self, hold_key: &str) -> Result<Option<Approval>, ApprovalError> {
        self.conn
            .query_row(
                &format!(
                    "{SELECT} WHERE status = 'pending' AND hold_key = ?1 ORDER BY id DESC LIMIT 1"
                ),
                [hold_key],
                row,
            )
            .optional()
            .map_err(sql("look up pending approval"))
    }

    /// The latest approved or rejected hold for this key (a held DNS name
    /// decided before: the decision stands for its policy snapshot).
    pub fn decided_for_key(&self, hold_key: &str) -> Result<Option<Approval>, ApprovalError> {
        self.conn
            .query_row(
                &format!(
                    "{SELECT} WHERE status IN ('approved', 'rejected') AND hold_key = ?1
                     ORDER BY id DESC LIMIT 1"
                ),
                [hold_key],
                row,
            )
            .optional()
            .map_err(sql("look up decided approval"))
    }

    /// The decided hold for this key whose outcome the kernel has not
    /// reported yet.
    pub fn awaiting_outcome(&self, hold_key: &str) -> Result<Option<Approval>, ApprovalError> {
        self.conn
            .query_row(
                &format!(
                    "{SELECT} WHERE status <> 'pending' AND final_status IS NULL AND hold_key = ?1
                     ORDER BY id DESC LIMIT 1"
                ),
                [hold_key],
                row,
            )
            .optional()
            .map_err(sql("look up decided approval"))
    }

    pub fn list(&self, all: bool) -> Result<Vec<Approval>, ApprovalError> {
        let filter = if all { "" } else { "WHERE status = 'pending'" };
        self.select(filter, [], "list approvals")
    }

    /// Pending holds whose time is up.
    pub fn expired(&self, now_ns: i64) -> Result<Vec<Approval>, ApprovalError> {
        self.select(
            "WHERE status = 'pending' AND expires_at_ns <= ?1",
            [now_ns],
            "list expired approvals",
        )
    }

    /// Decisions written to the kernel for its hook to apply (approved,
    /// rejected, expired) whose outcome it has not reported.
    pub fn granted_without_outcome(&self) -> Result<Vec<Approval>, ApprovalError> {
        self.select(
            "WHERE status IN ('approved', 'rejected', 'expired') AND applied = 1
             AND final_status IS NULL",
            [],
            "list decisions awaiting their outcome",
        )
    }

    /// Decided (approved or rejected) but not yet written to the kernel:
    /// the daemon died between recording and applying.
    pub fn unapplied(&self) -> Result<Vec<Approval>, ApprovalError> {
        self.select(
            "WHERE status <> 'pending' AND applied = 0",
            [],
            "list unapplied approvals",
        )
    }

    /// The approvals `filter` (a WHERE clause, or nothing) selects, oldest
    /// first.
    fn select(
        &self,
        filter: &str,
        params: impl rusqlite::Params,
        op: &'static str,
    ) -> Result<Vec<Approval>, ApprovalError> {
        let mut stmt = self
            .conn
            .prepare(&format!("{SELECT} {filter} ORDER BY id"))
            .map_err(sql(op))?;
        let rows = stmt.query_map(params, row).map_err(sql(op))?;
        rows.collect::<Result<_, _>>().map_err(sql(op))
    }

    /// Records the first decision on a pending hold. Returns false (and
    /// counts the attempt) if it was already decided.
    pub fn decide(&mut self, id: u64, d: &Decided<'_>) -> Result<bool, ApprovalError> {
        let n = self
            .conn
            .execute(
                "UPDATE approvals SET status = ?2, decided_by = ?3, decided_role = ?4, decided_at_ns = ?5, reason = ?6
                 WHERE id = ?1 AND status = 'pending'",
                params![id, d.status.as_str(), d.by, d.role, d.at_ns, d.reason],
            )
            .map_err(sql("record decision"))?;
        if n == 0 {
            self.get(id)?;
            self.conn
                .execute("UPDATE approvals SET repeated_decisions = repeated_decisions + 1 WHERE id = ?1", [id])
                .map_err(sql("count repeated decision"))?;
            return Ok(false);
        }
        Ok(true)
    }

    pub fn mark_applied(&mut self, id: u64) -> Result<(), ApprovalError> {
        self.conn
            .execute("UPDATE approvals SET applied = 1 WHERE id = ?1", [id])
            .map_err(sql("mark approval applied"))?;
        Ok(())
    }

    pub fn set_final_status(&mut self, id: u64, status: &str) -> Result<(), ApprovalError> {
        self.conn
            .execute(
                "UPDATE approvals SET final_status = ?2 WHERE id = ?1 AND final_status IS NULL",
                params![id, status],
            )
            .map_err(sql("record final status"))?;
        Ok(())
    }
}

const SELECT: &str =
    "SELECT id, owner, job, job_hash, rule_id, policy_snapshot, hold_key, created_at_ns,
    expires_at_ns, status, decided_by, decided_role, decided_at_ns, reason, applied, final_status,
    repeated_decisions FROM approvals";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Approval> {
    let job: String = r.get(2)?;
    let job: Job = serde_json::from_str(&job).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(Approval {
        id: r.get(0)?,
        owner: r.get(1)?,
        job,
        job_hash: r.get(3)?,
        rule_id: r.get(4)?,
        policy_snapshot: r.get(5)?,
        hold_key: r.get(6)?,
        created_at_ns: r.get(7)?,
        expires_at_ns: r.get(8)?,
        status: Status::parse(&r.get::<_, String>(9)?),
        decided_by: r.get(10)?,
        decided_role: r.get(11)?,
        decided_at_ns: r.get(12)?,
        reason: r.get(13)?,
        applied: r.get(14)?,
        final_status: r.get(15)?,
        repeated_decisions: r.get(16)?,
    })
}

/// The role under which `user` may approve ("user:alice" or
/// "group:finance"), or None. `groups` are the user's group names.
pub fn approver_role(list: &Approvers, user: &str, groups: &[String]) -> Option<String> {
    if list.users.iter().any(|u| u == user) {
        return Some(format!("user:{user}"));
    }
    list.groups
        .iter()
        .find(|g| groups.contains(g))
        .map(|g| format!("group:{g}"))
}

/// The names of the groups `uid` belongs to (primary and supplementary).
pub fn groups_of(user: &nix::unistd::User) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(Some(g)) = nix::unistd::Group::from_gid(user.gid) {
        names.push(g.name);
    }
    if let Ok(name) = std::ffi::CString::new(user.name.clone()) {
        if let Ok(gids) = nix::unistd::getgrouplist(&name, user.gid) {
            for gid in gids {
                if let Ok(Some(g)) = nix::unistd::Group::from_gid(gid) {
                    if !names.contains(&g.name) {
                        names.push(g.name);
                    }
                }
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            agent: "bot".into(),
            action: "connect4".into(),
            target: "127.0.0.1:18082/tcp".into(),
            exe: "/usr/bin/curl".into(),
            binary: "2049:1234".into(),
            pid: 10,
            tid: 10,
            uid: 0,
            cgroup_id: 99,
        }
    }

    #[test]
    fn job_hash_is_stable_and_covers_every_field() {
        let h = job().hash();
        assert_eq!(h.len(), 64);
        assert_eq!(h, job().hash());
        let mut other = job();
        other.target = "127.0.0.1:18083/tcp".into();
        assert_ne!(other.hash(), h);
        let mut other = job();
        other.binary = "2049:1235".into();
        assert_ne!(other.hash(), h);
    }

    #[test]
    fn decisions_are_idempotent_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Approvals::open(&dir.path().join("w.db")).unwrap();
        let snap = "a".repeat(64);
        let id = a
            .create("o@x", &job(), "hold-it", &snap, "k1", 1, 100)
            .unwrap();
        assert_eq!(a.pending_for_key("k1").unwrap().unwrap().id, id);
        let d = Decided {
            status: Status::Approved,
            by: "alice",
            role: "user:alice",
            at_ns: 5,
            reason: None,
        };
        assert!(a.decide(id, &d).unwrap());
        assert!(!a.decide(id, &d).unwrap(), "second decision is not applied");
        let got = a.get(id).unwrap();
        assert_eq!(got.status, Status::Approved);
        assert_eq!(got.repeated_decisions, 1);
        assert_eq!(got.decided_by.as_deref(), Some("alice"));
        assert!(a.pending_for_key("k1").unwrap().is_none());
        assert_eq!(a.unapplied().unwrap().len(), 1);
        a.mark_applied(id).unwrap();
        assert!(a.unapplied().unwrap().is_empty());
        assert!(matches!(a.get(999), Err(ApprovalError::Unknown(999))));
    }

    /// `n` decided approvals with keys `k0`..: one statement, fast.
    fn fill(a: &Approvals, n: u64) {
        let job = serde_json::to_string(&job()).unwrap();
        a.conn
            .execute(
                "WITH RECURSIVE i(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM i WHERE x + 1 < ?1)
                 INSERT INTO approvals (agent, owner, job, job_hash, rule_id, policy_snapshot,
                    hold_key, approval_required, created_at_ns, expires_at_ns, status,
                    decided_by, decided_role, decided_at_ns)
                 SELECT 'bot', 'o', ?2, printf('%064d', x), 'r', printf('%064d', 0),
                    'k' || x, 1, 1, 2, CASE x % 2 WHEN 0 THEN 'approved' ELSE 'rejected' END,
                    'alice', 'user:alice', 3 FROM i",
                params![n, job],
            )
            .unwrap();
    }

    #[test]
    fn decided_for_key_finds_the_latest_decision_by_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Approvals::open(&dir.path().join("w.db")).unwrap();
        fill(&a, 1000);
        assert_eq!(
            a.decided_for_key("k7").unwrap().unwrap().status,
            Status::Rejected
        );
        assert!(a.decided_for_key("nope").unwrap().is_none());
        // Pending and expired holds are not decisions that stand.
        let snap = "a".repeat(64);
        let id = a.create("o", &job(), "r", &snap, "p1", 1, 100).unwrap();
        assert!(a.decided_for_key("p1").unwrap().is_none());
        let d = Decided {
            status: Status::Expired,
            by: "warden",
            role: "expiry",
            at_ns: 5,
            reason: None,
        };
        a.decide(id, &d).unwrap();
        assert!(a.decided_for_key("p1").unwrap().is_none());
        let plan: Vec<String> = a
            .conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN {SELECT} WHERE status IN ('approved', 'rejected')
                 AND hold_key = ?1 ORDER BY id DESC LIMIT 1"
            ))
            .unwrap()
            .query_map(["k7"], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join("; ");
        assert!(plan.contains("INDEX approvals_pending"), "scans: {plan}");
    }

    /// `cargo test -p warden --lib decided_for_key_at_a_million -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement: 1,000,000 approvals"]
    fn decided_for_key_at_a_million_approvals() {
        let dir = tempfile::tempdir().unwrap();
        let a = Approvals::open(&dir.path().join("w.db")).unwrap();
        fill(&a, 1_000_000);
        let started = std::time::Instant::now();
        for i in 0..10_000u64 {
            let key = format!("k{}", i * 97 % 1_000_000);
            assert!(a.decided_for_key(&key).unwrap().is_some());
        }
        println!(
            "decided_for_key over 1,000,000 approvals: {:?} per lookup",
            started.elapsed() / 10_000
        );
    }

    #[test]
    fn schema_refuses_a_decision_without_approver() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Approvals::open(&dir.path().join("w.db")).unwrap();
        let id = a
            .create("o@x", &job(), "r", &"b".repeat(64), "k", 1, 100)
            .unwrap();
        let err = a.conn.execute(
            "UPDATE approvals SET status = 'approved' WHERE id = ?1",
            [id],
        );
        assert!(
            err.is_err(),
            "an approved row without approver must be impossible"
        );
    }

    #[test]
    fn expiry_lists_only_pending_past_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Approvals::open(&dir.path().join("w.db")).unwrap();
        let snap = "c".repeat(64);
        a.create("o", &job(), "r", &snap, "k1", 1, 10).unwrap();
        a.create("o", &job(), "r", &snap, "k2", 1, 1000).unwrap();
        assert_eq!(a.expired(50).unwrap().len(), 1);
    }

    #[test]
    fn roles_come_from_users_then_groups() {
        let list = Approvers {
            users: vec!["alice".into()],
            groups: vec!["finance".into()],
        };
        assert_eq!(
            approver_role(&list, "alice", &[]),
            Some("user:alice".into())
        );
        assert_eq!(
            approver_role(&list, "bob", &["finance".into()]),
            Some("group:finance".into())
        );
        assert_eq!(approver_role(&list, "eve", &["staff".into()]), None);
    }
}
