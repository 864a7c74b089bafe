//! The command line's grammar: every verb, flag and help text `warden`
//! accepts, as clap definitions. `main.rs` dispatches what they parse.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use warden::{commands::render::TailFormat, config::Paths};

#[derive(Parser)]
#[command(
    name = "warden",
    version,
    about = "Kernel-enforced policy and evidence for AI agents"
)]
pub struct Cli {
    #[command(flatten)]
    pub paths: Paths,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the daemon (loads the kernel programs, enforces, records).
    Daemon,
    /// Register, list and inspect agents.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Run a command as an agent (inside its cgroup); exits with its status.
    Run {
        #[arg(long)]
        agent: String,
        /// Run as this user instead of the caller.
        #[arg(long)]
        user: Option<String>,
        /// Pass this inherited descriptor to the agent (repeatable); every
        /// other one but stdio is closed.
        #[arg(long, value_name = "FD")]
        keep_fd: Vec<i32>,
        #[arg(required = true, last = true)]
        cmd: Vec<String>,
    },
    /// Check, reload and list policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Freeze windows (`freeze:` in a policy or the state directory's
    /// freeze.yaml).
    #[command(subcommand)]
    Freeze(FreezeCmd),
    /// Access reviews of the agents (who keeps which capabilities).
    #[command(subcommand)]
    Review(ReviewCmd),
    /// Show the evidence log, or verify its hash chain.
    Log(LogArgs),
    /// Export a bundle an auditor verifies elsewhere, or verify one.
    #[command(subcommand)]
    Evidence(EvidenceCmd),
    /// Kill switch: revoke an agent everywhere in one action (works with the
    /// daemon stopped). Its processes are killed, or frozen with --freeze.
    Kill {
        name: String,
        #[arg(long)]
        reason: String,
        /// Freeze the processes (cgroup.freeze) for forensics instead.
        #[arg(long)]
        freeze: bool,
    },
    /// Lift the kill switch.
    Revive {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Detach and unpin every program and map Warden attached (daemon stopped).
    Uninstall,
    /// Actions held for approval.
    Approvals {
        /// Every hold, decided or not.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Approve a held action (you are identified by your credentials).
    Approve {
        id: u64,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reject a held action: it fails with EPERM.
    Reject {
        id: u64,
        #[arg(long)]
        reason: Option<String>,
    },
    /// The sentinel's alerts (evidence entries of kind `alert`), newest last.
    Alerts {
        #[arg(long)]
        agent: Option<String>,
        /// The newest N (default 100).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// The entries as JSON Lines.
        #[arg(long)]
        json: bool,
    },
    /// What the daemon enforces, with which mechanisms, and its counters.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Policy budgets (their use is in `warden status`).
    Budget {
        #[command(subcommand)]
        cmd: BudgetCmd,
    },
}

#[derive(Subcommand)]
pub enum BudgetCmd {
    /// Start a budget's count afresh (the agent's approvers only; recorded).
    Reset {
        agent: String,
        /// The budget's id in the agent's policy.
        id: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
pub enum AgentCmd {
    /// Register an agent: creates its cgroup (or adopts one with --cgroup).
    Add {
        name: String,
        /// The accountable human (e.g. an email address).
        #[arg(long)]
        owner: String,
        /// Policy file in the policy directory.
        #[arg(long)]
        policy: PathBuf,
        /// Adopt this existing cgroup (e.g. a systemd service's) instead.
        #[arg(long)]
        cgroup: Option<PathBuf>,
        /// A registered agent that may start this one (its policy says
        /// `delegate: [NAME]`); the effective policy is the intersection.
        #[arg(long)]
        parent: Option<String>,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Unregister an agent whose processes have ended.
    Remove { name: String },
}

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Parse and compile policy files; report errors with file, line and rule.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Ask the daemon to reload every agent's policy (same as SIGHUP).
    Reload,
    /// Write a minimal policy from what AGENT did (its evidence; best from a
    /// `mode: record` run): each rule names the entries that produced it.
    Suggest {
        agent: String,
        /// Only entries from this time (RFC 3339 UTC or unix seconds).
        #[arg(long)]
        since: Option<String>,
        /// Write the policy here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print what would change against this policy file.
        #[arg(long)]
        diff: Option<PathBuf>,
    },
    /// Replay AGENT's recorded decisions (and summaries) against a
    /// candidate policy, offline, and print what would be decided
    /// differently, by rule, with counts and examples.
    Shadow {
        agent: String,
        /// The candidate policy file (any path).
        candidate: PathBuf,
        /// Only entries from this time on: RFC 3339 UTC, unix seconds, or
        /// an age (`30s`, `5m`, `2h`, `7d`).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Every policy version loaded, with its hash, author and time; then
    /// the reviewed-change proposals, their reviews and activation.
    History {
        #[arg(long)]
        agent: Option<String>,
        /// With --json: the proposals instead of the versions.
        #[arg(long)]
        proposals: bool,
        #[arg(long)]
        json: bool,
    },
    /// Propose FILE as AGENT's next policy (its policy in force says
    /// `change_review`): recorded with its diff, you as author.
    Propose { agent: String, file: PathBuf },
    /// Approve or reject a proposal (an approver other than its author).
    Review {
        id: u64,
        #[arg(long, conflicts_with = "reject", required_unless_present = "reject")]
        approve: bool,
        #[arg(long)]
        reject: bool,
        #[arg(long)]
        comment: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ReviewCmd {
    /// Open an access review campaign (recorded, naming every agent).
    Start,
    /// Sign the review of AGENTs: keep, or revoke (as `warden kill`).
    Sign {
        #[arg(long, value_enum)]
        decision: warden::commands::review::ReviewDecision,
        #[arg(required = true)]
        agents: Vec<String>,
        #[arg(long)]
        comment: String,
    },
    /// Every agent's latest review; due ones (none, or older than the
    /// policy's `review_every`, default 90d) first.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum FreezeCmd {
    /// Break glass: lift AGENT's open freeze window until it closes (an
    /// approver; recorded with the reason).
    Override {
        agent: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Args)]
pub struct LogArgs {
    #[command(subcommand)]
    pub cmd: Option<LogCmd>,
    #[arg(long)]
    pub agent: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
    /// As the log prints it (`deny` and `denied` both select refusals);
    /// an unknown value is an error listing the valid ones.
    #[arg(long)]
    pub decision: Option<String>,
    /// Only entries from this time on: RFC 3339 UTC, unix seconds, or an
    /// age (`30s`, `5m`, `2h`, `7d`).
    #[arg(long)]
    pub since: Option<String>,
    /// Show at most this many (the newest).
    #[arg(long)]
    pub limit: Option<usize>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Print who answers for the entry with this seq: its agent and the
    /// agents above it with their owners, the human, the delegated run.
    #[arg(long, value_name = "ENTRY_SEQ")]
    pub lineage: Option<u64>,
    /// Only count: `entries N counted M` (the matching entries, and the
    /// repeats their summaries count; with `--json` one object), read
    /// through the indexes without printing an entry. `--limit` is ignored.
    #[arg(long)]
    pub count: bool,
}

#[derive(Subcommand)]
pub enum EvidenceCmd {
    /// Write the bundle: entries (JSON Lines, CSV), checkpoints, public key,
    /// inventory, capability matrix, policy history, approvals, control map,
    /// verification report and report.html.
    Export {
        #[arg(long)]
        out: PathBuf,
        /// Report from this time (RFC 3339 UTC, e.g. 2026-11-01T00:00:00Z, or unix seconds).
        #[arg(long)]
        from: Option<String>,
        /// Report until this time (exclusive); the bundle ends there.
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        /// Carry the chain from seq 1 (or the archive base) and verify the
        /// whole log, even with a window (which otherwise starts at the
        /// newest signed checkpoint before it).
        #[arg(long)]
        full_chain: bool,
    },
    /// Export the entries before a time as a bundle, verify it, then prune
    /// them from the log, which stays verifiable from a signed checkpoint.
    Archive {
        /// Archive entries before this time (RFC 3339 UTC or unix seconds);
        /// the cut is the newest signed checkpoint before it.
        #[arg(long)]
        before: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a bundle with nothing but its files; exit 0 only if it holds.
    Verify {
        dir: PathBuf,
        /// The host's public key (hex, from `warden status`) the bundle must be signed with.
        #[arg(long)]
        key: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum LogCmd {
    /// Recompute the hash chain and check every signed checkpoint; exit 0
    /// only if all hold.
    Verify {
        /// A checkpoint (or a list, e.g. an export's checkpoints.json) kept
        /// elsewhere, that this log must still contain.
        #[arg(long)]
        anchor: Vec<PathBuf>,
        /// Also list approval-gated entries (holds, approvals, their
        /// outcomes) missing a required field.
        #[arg(long)]
        completeness: bool,
    },
    /// The signed checkpoints, as JSON (keep a copy elsewhere: it is what
    /// `verify --anchor` checks this log against later).
    Checkpoints,
    /// Print entries as they are appended, checkpoints included (for a
    /// SIEM): one JSON object per line, Warden's own or OCSF 1.1.
    Tail {
        #[arg(long, value_enum, default_value = "json")]
        format: TailFormat,
        /// Start after this sequence number (default: the current head).
        #[arg(long)]
        after: Option<u64>,
        /// Print what is there and exit instead of following.
        #[arg(long)]
        no_follow: bool,
    },
}
