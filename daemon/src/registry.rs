//! The agent registry: who each agent is (name, cgroup), who answers for it
//! (owner), which policy it runs under, and every policy version it has had.
//!
//! Lives in the same SQLite file as the evidence log (`warden.db`), in tables
//! of its own; `db` opens the file and creates them.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::db::{self, Database, DbError, Integrity};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("{op}: {source}")]
    Sql {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("unknown agent '{0}' (see `warden agent list`)")]
    UnknownAgent(String),
    #[error("agent '{0}' is already registered")]
    Exists(String),
    #[error("cgroup {0} already belongs to agent '{1}'")]
    CgroupTaken(String, String),
    #[error("agent '{0}' has delegated children ({1}): remove them first")]
    HasChildren(String, String),
    #[error("invalid agent name '{0}': use 1-64 of a-z, 0-9, '-', '_', '.', starting with a letter or digit")]
    BadName(String),
}

fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> RegistryError {
    move |source| RegistryError::Sql { op, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Active,
    /// Kill switch engaged: every action is refused until revived.
    Revoked,
}

impl AgentStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
        }
    }
    fn parse(s: &str) -> Self {
        // The CHECK constraint allows only these two values.
        if s == "revoked" {
            Self::Revoked
        } else {
            Self::Active
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Agent {
    pub id: u32,
    pub name: String,
    pub owner: String,
    /// Policy file name inside the policy directory.
    pub policy: String,
    pub cgroup: PathBuf,
    /// The cgroup existed before registration (a service's or container's)
    /// and is not Warden's to remove.
    pub adopted: bool,
    pub status: AgentStatus,
    pub created_at_ns: i64,
    pub created_by: String,
    /// The agent that delegates to this one (`agent add --parent`); its
    /// cgroup is a child of the parent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

pub struct NewAgent<'a> {
    pub name: &'a str,
    pub owner: &'a str,
    pub policy: &'a str,
    pub cgroup: &'a Path,
    pub adopted: bool,
    pub created_at_ns: i64,
    pub created_by: &'a str,
    pub parent: Option<&'a str>,
}

/// One loaded policy version of one agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyVersion {
    pub id: u32,
    pub agent: String,
    pub file: String,
    pub sha256: String,
    pub content: String,
    pub loaded_at_ns: i64,
    pub loaded_by: String,
}

pub fn valid_agent_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    first_ok
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

pub struct Registry {
    conn: Connection,
}

impl Registry {
    /// Bytes of pages the database uses (`db::bytes_in_use`).
    pub fn database_bytes(&self) -> Result<u64, rusqlite::Error> {
        db::bytes_in_use(&self.conn)
    }

    pub fn open(path: &Path) -> Result<Self, RegistryError> {
        Ok(Self::from_database(db::open(path, Integrity::Trust)?))
    }

    /// The registry on a database [`db::open`] opened.
    pub fn from_database(database: Database) -> Self {
        let (conn, _) = database.into_parts();
        Self { conn }
    }

    #[cfg(test)]
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn add(&mut self, agent: &NewAgent<'_>) -> Result<Agent, RegistryError> {
        if !valid_agent_name(agent.name) {
            return Err(RegistryError::BadName(agent.name.to_string()));
        }
        // IMMEDIATE: take the write lock before reading, so a concurrent
        // writer makes us wait (busy timeout) instead of failing the upgrade.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql("begin agent registration"))?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT name FROM agents WHERE name = ?1 OR cgroup = ?2",
                params![agent.name, agent.cgroup.to_string_lossy()],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("look up agent"))?;
        match existing {
            Some(name) if name == agent.name => return Err(RegistryError::Exists(name)),
            Some(name) => {
                return Err(RegistryError::CgroupTaken(
                    agent.cgroup.display().to_string(),
                    name,
                ))
            }
            None => {}
        }
        tx.execute(
            "INSERT INTO agents (name, owner, policy, cgroup, adopted, status, created_at_ns, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, 'active', ?6, ?7)",
            params![
                agent.name,
                agent.owner,
                agent.policy,
                agent.cgroup.to_string_lossy(),
                agent.adopted,
                agent.created_at_ns,
                agent.created_by
            ],
        )
        .map_err(sql("insert agent"))?;
        if let Some(parent) = agent.parent {
            tx.execute(
                "INSERT INTO agent_parents (child, parent) VALUES (?1, ?2)",
                params![agent.name, parent],
            )
            .map_err(sql("insert agent parent"))?;
        }
        tx.commit().map_err(sql("commit agent registration"))?;
        self.get(agent.name)
    }

    pub fn get(&self, name: &str) -> Result<Agent, RegistryError> {
        self.conn
            .query_row(
                &format!("{SELECT_AGENT} WHERE name = ?1"),
                [name],
                row_to_agent,
            )
            .optional()
            .map_err(sql("look up agent"))?
            .ok_or_else(|| RegistryError::UnknownAgent(name.to_string()))
    }

    pub fn list(&self) -> Result<Vec<Agent>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare(&format!("{SELECT_AGENT} ORDER BY name"))
            .map_err(sql("list agents"))?;
        let rows = stmt
            .query_map([], row_to_agent)
            .map_err(sql("list agents"))?;
        rows.collect::<Result<_, _>>().map_err(sql("list agents"))
    }

    pub fn remove(&mut self, name: &str) -> Result<Agent, RegistryError> {
        let agent = self.get(name)?;
        let children = self.children(name)?;
        if !children.is_empty() {
            return Err(RegistryError::HasChildren(
                name.to_string(),
                children.join(", "),
            ));
        }
        let tx = self
            .conn
            .transaction()
            .map_err(sql("begin agent removal"))?;
        tx.execute("DELETE FROM agents WHERE name = ?1", [name])
            .map_err(sql("remove agent"))?;
        tx.execute("DELETE FROM agent_parents WHERE child = ?1", [name])
            .map_err(sql("remove agent parent"))?;
        tx.commit().map_err(sql("commit agent removal"))?;
        Ok(agent)
    }

    /// The registered agents `name` delegates to, by name.
    pub fn children(&self, name: &str) -> Result<Vec<String>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare("SELECT child FROM agent_parents WHERE parent = ?1 ORDER BY child")
            .map_err(sql("list child agents"))?;
        let rows = stmt
            .query_map([name], |r| r.get(0))
            .map_err(sql("list child agents"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("list child agents"))
    }

    /// Every agent below `name` (children, their children, ...).
    pub fn descendants(&self, name: &str) -> Result<Vec<Agent>, RegistryError> {
        let mut out: Vec<Agent> = Vec::new();
        let mut next = vec![name.to_string()];
        while let Some(n) = next.pop() {
            for child in self.children(&n)? {
                if child != name && !out.iter().any(|a| a.name == child) {
                    out.push(self.get(&child)?);
                    next.push(child);
                }
            }
        }
        Ok(out)
    }

    /// `name`, its parent, the parent's parent, ...: the chain of agents
    /// answerable for what `name` does, nearest first. Stops at a cycle
    /// (which registration never creates).
    pub fn lineage(&self, name: &str) -> Result<Vec<Agent>, RegistryError> {
        let mut chain = vec![self.get(name)?];
        while let Some(parent) = chain.last().and_then(|a| a.parent.clone()) {
            if chain.iter().any(|a| a.name == parent) {
                break;
            }
            chain.push(self.get(&parent)?);
        }
        Ok(chain)
    }

    pub fn set_status(&mut self, name: &str, status: AgentStatus) -> Result<(), RegistryError> {
        let n = self
            .conn
            .execute(
                "UPDATE agents SET status = ?2 WHERE name = ?1",
                params![name, status.as_str()],
            )
            .map_err(sql("update agent status"))?;
        if n == 0 {
            return Err(RegistryError::UnknownAgent(name.to_string()));
        }
        Ok(())
    }

    /// Records that `agent` now runs under this policy content. Returns the
    /// version id and whether it is new; loading the same content as the
    /// agent's latest version reuses that version.
    pub fn record_policy_version(
        &mut self,
        agent: &str,
        file: &str,
        sha256: &str,
        content: &str,
        loaded_at_ns: i64,
        loaded_by: &str,
    ) -> Result<(u32, bool), RegistryError> {
        let latest: Option<(u32, String)> = self
            .conn
            .query_row(
                "SELECT id, sha256 FROM policy_versions WHERE agent = ?1 ORDER BY id DESC LIMIT 1",
                [agent],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql("look up policy version"))?;
        if let Some((id, sha)) = latest {
            if sha == sha256 {
                return Ok((id, false));
            }
        }
        self.conn
            .execute(
                "INSERT INTO policy_versions (agent, file, sha256, content, loaded_at_ns, loaded_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![agent, file, sha256, content, loaded_at_ns, loaded_by],
            )
            .map_err(sql("insert policy version"))?;
        Ok((self.conn.last_insert_rowid() as u32, true))
    }

    pub fn policy_versions(
        &self,
        agent: Option<&str>,
    ) -> Result<Vec<PolicyVersion>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, agent, file, sha256, content, loaded_at_ns, loaded_by FROM policy_versions
                 WHERE ?1 IS NULL OR agent = ?1 ORDER BY id",
            )
            .map_err(sql("list policy versions"))?;
        let rows = stmt
            .query_map([agent], |r| {
                Ok(PolicyVersion {
                    id: r.get(0)?,
                    agent: r.get(1)?,
                    file: r.get(2)?,
                    sha256: r.get(3)?,
                    content: r.get(4)?,
                    loaded_at_ns: r.get(5)?,
                    loaded_by: r.get(6)?,
                })
            })
            .map_err(sql("list policy versions"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("list policy versions"))
    }
}

const SELECT_AGENT: &str =
    "SELECT id, name, owner, policy, cgroup, adopted, status, created_at_ns, created_by, \
     (SELECT parent FROM agent_parents WHERE child = agents.name) FROM agents";

fn row_to_agent(r: &rusqlite::Row<'_>) -> rusqlite::Result<Agent> {
    Ok(Agent {
        id: r.get(0)?,
        name: r.get(1)?,
        owner: r.get(2)?,
        policy: r.get(3)?,
        cgroup: PathBuf::from(r.get::<_, String>(4)?),
        adopted: r.get(5)?,
        status: AgentStatus::parse(&r.get::<_, String>(6)?),
        created_at_ns: r.get(7)?,
        created_by: r.get(8)?,
        parent: r.get(9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_agent<'a>(name: &'a str, cgroup: &'a Path) -> NewAgent<'a> {
        NewAgent {
            name,
            owner: "alice@example.com",
            policy: "demo-agent.yaml",
            cgroup,
            adopted: false,
            created_at_ns: 1,
            created_by: "root",
            parent: None,
        }
    }

    #[test]
    fn add_get_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(&dir.path().join("w.db")).unwrap();
        let a = reg.add(&new_agent("bot", Path::new("/cg/bot"))).unwrap();
        assert_eq!(a.name, "bot");
        assert_eq!(a.status, AgentStatus::Active);
        assert!(matches!(
            reg.add(&new_agent("bot", Path::new("/cg/other"))),
            Err(RegistryError::Exists(_))
        ));
        assert!(matches!(
            reg.add(&new_agent("bot2", Path::new("/cg/bot"))),
            Err(RegistryError::CgroupTaken(..))
        ));
        assert!(matches!(
            reg.add(&new_agent("Bad Name", Path::new("/cg/x"))),
            Err(RegistryError::BadName(_))
        ));
        reg.set_status("bot", AgentStatus::Revoked).unwrap();
        assert_eq!(reg.get("bot").unwrap().status, AgentStatus::Revoked);
        assert_eq!(reg.list().unwrap().len(), 1);
        reg.remove("bot").unwrap();
        assert!(matches!(
            reg.get("bot"),
            Err(RegistryError::UnknownAgent(_))
        ));
    }

    #[test]
    fn a_child_records_its_parent_and_the_lineage_walks_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(&dir.path().join("w.db")).unwrap();
        reg.add(&new_agent("root-bot", Path::new("/cg/root")))
            .unwrap();
        let mut child = new_agent("child-bot", Path::new("/cg/root/child"));
        child.parent = Some("root-bot");
        child.owner = "carol@example.com";
        assert_eq!(reg.add(&child).unwrap().parent.as_deref(), Some("root-bot"));
        let mut grandchild = new_agent("grand-bot", Path::new("/cg/root/child/g"));
        grandchild.parent = Some("child-bot");
        reg.add(&grandchild).unwrap();
        let names: Vec<String> = reg
            .lineage("grand-bot")
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, ["grand-bot", "child-bot", "root-bot"]);
        let below: Vec<String> = reg
            .descendants("root-bot")
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(below, ["child-bot", "grand-bot"]);
        // A parent goes after its children, never before.
        assert!(matches!(
            reg.remove("child-bot"),
            Err(RegistryError::HasChildren(..))
        ));
        reg.remove("grand-bot").unwrap();
        reg.remove("child-bot").unwrap();
        assert!(reg.children("root-bot").unwrap().is_empty());
        reg.remove("root-bot").unwrap();
    }

    #[test]
    fn policy_versions_are_kept_and_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(&dir.path().join("w.db")).unwrap();
        let sha1 = "a".repeat(64);
        let sha2 = "b".repeat(64);
        let (v1, new1) = reg
            .record_policy_version("bot", "p.yaml", &sha1, "x", 1, "root")
            .unwrap();
        let (v1b, new1b) = reg
            .record_policy_version("bot", "p.yaml", &sha1, "x", 2, "root")
            .unwrap();
        let (v2, new2) = reg
            .record_policy_version("bot", "p.yaml", &sha2, "y", 3, "root")
            .unwrap();
        assert!(new1 && !new1b && new2);
        assert_eq!(v1, v1b);
        assert_ne!(v1, v2);
        let versions = reg.policy_versions(Some("bot")).unwrap();
        assert_eq!(versions.len(), 2);
        assert_eq!(versions[1].content, "y");
    }
}
