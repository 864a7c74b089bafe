//! The evidence writer: one thread owns the evidence store and appends
//! batches in one transaction each (group commit), fsyncing when a caller
//! needs the entry durable before it answers, and signs checkpoints.

use std::sync::{atomic::Ordering, mpsc, Arc};

use serde_json::json;
use tokio::sync::oneshot;

use super::{
    pending::{Pending, PendingRefusals},
    views::Stats,
};
use crate::{
    actor::{Actor, Recorded},
    clock,
    evidence::{
        checkpoint::{self, HostKey},
        Durability, EvidenceStore, NewEntry, StoreError,
    },
    sentinel::hook::SentinelHook,
};

/// Why entries could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("write evidence: the evidence writer is gone")]
    Gone,
    #[error("write evidence")]
    Store(#[source] StoreError),
}

/// The reply to a `drained` barrier: sent once every record queued before
/// it is committed (or with the writer's failure).
pub(super) type Drained = oneshot::Sender<Result<(), WriteError>>;

pub struct WriteJob {
    entries: Vec<NewEntry>,
    durability: Durability,
    done: Option<oneshot::Sender<Result<(), WriteError>>>,
    /// The refusals among `entries`, counted until the job is committed
    /// (or given up after its retry): an agent's barrier waits for them.
    pending: Vec<Pending>,
}

/// How many jobs may wait for the writer. With the event reader's batches
/// capped at `MAX_BATCH` entries, this bounds the daemon's memory: when the
/// writer falls behind, the reader waits, the ring buffer fills and the
/// kernel's backpressure (parking, each agent's share) takes over, instead
/// of the backlog growing in the daemon without limit.
const QUEUED_JOBS: usize = 4;

/// The most entries the event reader hands the writer in one job.
pub(super) const MAX_BATCH: usize = 4096;

#[derive(Clone)]
pub struct EvidenceWriter {
    tx: mpsc::SyncSender<WriteJob>,
    pending: PendingRefusals,
}

impl EvidenceWriter {
    pub(super) fn spawn(
        store: EvidenceStore,
        stats: Arc<Stats>,
        key: HostKey,
        checkpoints: CheckpointPolicy,
        sentinel: SentinelHook,
    ) -> (Self, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::sync_channel(QUEUED_JOBS);
        let handle = std::thread::Builder::new()
            .name("evidence-writer".into())
            .spawn(move || write_loop(store, rx, stats, key, checkpoints, sentinel))
            .expect("spawn evidence writer thread");
        let pending = PendingRefusals::default();
        (Self { tx, pending }, handle)
    }

    /// The refusals queued to this writer (or to be written through it),
    /// per agent: what an agent's `drained` barrier waits for.
    pub fn pending(&self) -> &PendingRefusals {
        &self.pending
    }

    /// Queues entries for the next group commit; waits while the writer is
    /// `QUEUED_JOBS` jobs behind.
    pub(super) fn queue(&self, mut entries: Vec<NewEntry>) {
        crate::lineage::annotate(&mut entries);
        let job = WriteJob {
            pending: self.pending.of_entries(&entries),
            entries,
            durability: Durability::Batched,
            done: None,
        };
        if self.tx.send(job).is_err() {
            tracing::error!("evidence writer is gone; entries lost");
        }
    }

    /// Queues entries if the writer has room now; gives them back if it is
    /// `QUEUED_JOBS` jobs behind, so the caller can do something else (the
    /// event reader keeps its heartbeat) before trying again.
    pub(super) fn try_queue(&self, mut entries: Vec<NewEntry>) -> Result<(), Vec<NewEntry>> {
        crate::lineage::annotate(&mut entries);
        // Counted before the writer can see the job, so its commit never
        // gives back what was not yet taken; a job given back (writer
        // full) gives its count back with it.
        let job = WriteJob {
            pending: self.pending.of_entries(&entries),
            entries,
            durability: Durability::Batched,
            done: None,
        };
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::TrySendError::Full(job)) => Err(job.entries),
            Err(mpsc::TrySendError::Disconnected(_)) => {
                tracing::error!("evidence writer is gone; entries lost");
                Ok(())
            }
        }
    }

    /// Queues a marker with no entries if the writer has room now (gives
    /// `done` back if not): `done` is answered once every job queued before
    /// it is committed (the writer takes jobs in order, one thread).
    pub(super) fn try_mark(&self, done: Drained) -> Result<(), Drained> {
        let job = WriteJob {
            entries: Vec::new(),
            durability: Durability::Batched,
            done: Some(done),
            pending: Vec::new(),
        };
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::TrySendError::Full(job)) => Err(job.done.expect("the marker's reply")),
            Err(mpsc::TrySendError::Disconnected(job)) => {
                if let Some(done) = job.done {
                    let _ = done.send(Err(WriteError::Gone));
                }
                Ok(())
            }
        }
    }

    /// Appends entries and returns once they are durably on disk.
    pub fn write_durable(&self, mut entries: Vec<NewEntry>) -> Result<(), WriteError> {
        crate::lineage::annotate(&mut entries);
        let (done, wait) = oneshot::channel();
        let job = WriteJob {
            pending: self.pending.of_entries(&entries),
            entries,
            durability: Durability::Fsync,
            done: Some(done),
        };
        self.tx.send(job).map_err(|_| WriteError::Gone)?;
        wait.blocking_recv().map_err(|_| WriteError::Gone)?
    }
}

/// When the writer signs a checkpoint: every `entries` appended entries or
/// every `period`, whichever comes first, and when it stops.
#[derive(Clone, Copy)]
pub struct CheckpointPolicy {
    pub entries: u64,
    pub period: std::time::Duration,
}

impl CheckpointPolicy {
    /// Defaults: 1000 entries or 60 s; `WARDEN_CHECKPOINT_ENTRIES` and
    /// `WARDEN_CHECKPOINT_SECS` override them (tests use short periods).
    pub fn from_env() -> Self {
        let num = |var: &str, default: u64| {
            std::env::var(var)
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        Self {
            entries: num("WARDEN_CHECKPOINT_ENTRIES", 1000),
            period: std::time::Duration::from_secs(num("WARDEN_CHECKPOINT_SECS", 60)),
        }
    }
}

pub(super) fn write_loop(
    mut store: EvidenceStore,
    rx: mpsc::Receiver<WriteJob>,
    stats: Arc<Stats>,
    key: HostKey,
    policy: CheckpointPolicy,
    mut sentinel: SentinelHook,
) {
    let mut unsigned = 0u64;
    let mut last_checkpoint = std::time::Instant::now();
    if let Err(e) = sentinel.load(store.connection()) {
        tracing::warn!(error = %e, "sentinel: new-behaviour memory not loaded");
    }
    loop {
        // At least once a second, for the sentinel's windows.
        let wait = policy
            .period
            .saturating_sub(last_checkpoint.elapsed())
            .min(std::time::Duration::from_secs(1));
        match rx.recv_timeout(wait.max(std::time::Duration::from_millis(10))) {
            Ok(first) => {
                unsigned += append_jobs(&mut store, first, &rx, &stats, Some(&mut sentinel))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        unsigned += write_alerts(&mut store, &mut sentinel, &stats);
        let due = unsigned >= policy.entries || last_checkpoint.elapsed() >= policy.period;
        if due && unsigned > 0 {
            sign_checkpoint(&mut store, &key, &stats);
            unsigned = 0;
        }
        if due {
            last_checkpoint = std::time::Instant::now();
        }
    }
    if unsigned > 0 {
        sign_checkpoint(&mut store, &key, &stats);
    }
}

/// Appends the sentinel's alerts that are due (durably: one may stop an
/// agent), carries out their `on_alert`, and saves its memory.
fn write_alerts(store: &mut EvidenceStore, sentinel: &mut SentinelHook, stats: &Stats) -> u64 {
    let alerts = sentinel.due(clock::now_ns());
    if let Err(e) = sentinel.persist(store.connection()) {
        tracing::warn!(error = %e, "sentinel: new-behaviour memory not saved");
    }
    if alerts.is_empty() {
        return 0;
    }
    match store.append(&sentinel.entries(&alerts), Durability::Fsync) {
        Ok(written) => {
            stats
                .recorded
                .fetch_add(written.len() as u64, Ordering::Relaxed);
            let seqs: Vec<u64> = written.iter().map(|e| e.seq).collect();
            sentinel.respond(&alerts, &seqs);
            written.len() as u64
        }
        Err(e) => {
            tracing::error!(error = %crate::error_chain(&e), alerts = alerts.len(), "sentinel alerts lost");
            0
        }
    }
}

/// Signs the current head and records the checkpoint in the chain too, so
/// copies of the log elsewhere carry it.
pub(super) fn sign_checkpoint(store: &mut EvidenceStore, key: &HostKey, stats: &Stats) {
    if let Err(e) = try_sign_checkpoint(store, key, stats) {
        tracing::error!(error = %crate::error_chain(&e), "sign checkpoint");
    }
}

#[derive(Debug, thiserror::Error)]
enum SignError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
}

fn try_sign_checkpoint(
    store: &mut EvidenceStore,
    key: &HostKey,
    stats: &Stats,
) -> Result<(), SignError> {
    let Some((size, head)) = store.head()? else {
        return Ok(());
    };
    let cp = checkpoint::write(store.connection(), key, size, &head, clock::now_ns())?;
    let mut details = serde_json::Map::new();
    details.insert("checkpoint_id".into(), json!(cp.id));
    details.insert("size".into(), json!(cp.size));
    details.insert("head_hash".into(), json!(cp.head_hash));
    details.insert("signed_at_ns".into(), json!(cp.ts_ns));
    details.insert("prev".into(), json!(cp.prev));
    details.insert("key_id".into(), json!(cp.key_id));
    details.insert("signature".into(), json!(cp.signature));
    let entry = Actor::current().entry(Recorded {
        kind: "checkpoint",
        agent: "warden",
        owner: "system",
        action: "evidence.checkpoint",
        target: &format!("seq 1..{size}"),
        decision: "signed",
        policy_snapshot: "none",
        details,
    });
    let written = store.append(&[entry], Durability::Fsync)?;
    stats
        .recorded
        .fetch_add(written.len() as u64, Ordering::Relaxed);
    tracing::debug!(id = cp.id, size, "checkpoint signed");
    Ok(())
}

/// Appends `first` and whatever else is queued in one transaction (group
/// commit). Returns how many entries were written.
pub(super) fn append_jobs(
    store: &mut EvidenceStore,
    first: WriteJob,
    rx: &mpsc::Receiver<WriteJob>,
    stats: &Stats,
    mut sentinel: Option<&mut SentinelHook>,
) -> u64 {
    let mut jobs = vec![first];
    while jobs.len() < 256 {
        match rx.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    let durability = if jobs
        .iter()
        .any(|j| matches!(j.durability, Durability::Fsync))
    {
        Durability::Fsync
    } else {
        Durability::Batched
    };
    // The jobs' entries moved into one batch (not copied), each job's
    // length kept to retry it alone.
    let mut parts = Vec::with_capacity(jobs.len());
    let mut all: Vec<NewEntry> = Vec::new();
    for job in jobs {
        parts.push((job.entries.len(), job.done, job.pending));
        if all.is_empty() {
            all = job.entries;
        } else {
            all.extend(job.entries);
        }
    }
    match store.append_batch(&mut all, durability) {
        Ok(written) => {
            stats.recorded.fetch_add(written as u64, Ordering::Relaxed);
            if let Some(s) = sentinel.as_deref_mut() {
                s.observe(&all);
            }
            // Committed: the refusals are in the log (their guards go
            // with `parts`), and whoever waits is answered.
            for (_, done, pending) in parts {
                drop(pending);
                if let Some(done) = done {
                    let _ = done.send(Ok(()));
                }
            }
            written as u64
        }
        // One bad entry must not cost the others their record: retry job by
        // job and report failures to whoever waits.
        Err(e) => {
            tracing::warn!(error = %e, "group append failed; retrying entries one job at a time");
            let mut count = 0;
            let mut start = 0;
            // Each job's refusals stay pending until its own retry has
            // committed them (or lost them for good).
            for (len, done, pending) in parts {
                let entries = &mut all[start..start + len];
                start += len;
                let result = store
                    .append_batch(entries, durability)
                    .map(|w| count += w as u64)
                    .map_err(WriteError::Store);
                if let (Ok(()), Some(s)) = (&result, sentinel.as_deref_mut()) {
                    s.observe(entries);
                }
                if let Err(e) = &result {
                    tracing::error!(error = %crate::error_chain(e), entries = len, "evidence lost");
                }
                drop(pending);
                if let Some(done) = done {
                    let _ = done.send(result);
                }
            }
            stats.recorded.fetch_add(count, Ordering::Relaxed);
            count
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(target: &str) -> NewEntry {
        Actor::current().entry(Recorded {
            kind: "run",
            agent: "writer-test",
            owner: "o@x",
            action: "run",
            target,
            decision: "started",
            policy_snapshot: "none",
            details: serde_json::Map::new(),
        })
    }

    #[test]
    fn a_group_with_a_bad_job_writes_the_other_jobs_in_order_and_tells_each_waiter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = EvidenceStore::open(&dir.path().join("warden.db")).expect("open");
        let (tx, rx) = mpsc::sync_channel(8);
        let job = |targets: &[&str], done| WriteJob {
            entries: targets.iter().map(|t| entry(t)).collect(),
            durability: Durability::Batched,
            done,
            pending: Vec::new(),
        };
        let mut bad = job(&["b1", "b2"], None);
        bad.entries[1].owner.clear();
        let (bad_done, bad_wait) = oneshot::channel();
        bad.done = Some(bad_done);
        let (good_done, good_wait) = oneshot::channel();
        tx.send(bad).expect("queue");
        tx.send(job(&["c1"], Some(good_done))).expect("queue");
        let stats = Stats::default();
        let written = append_jobs(&mut store, job(&["a1", "a2"], None), &rx, &stats, None);
        assert_eq!(written, 3);
        assert_eq!(stats.recorded.load(Ordering::Relaxed), 3);
        let targets: Vec<String> = store
            .read_range(1, 10)
            .expect("read")
            .into_iter()
            .map(|e| e.target)
            .collect();
        assert_eq!(targets, ["a1", "a2", "c1"]);
        assert!(matches!(
            bad_wait.blocking_recv().expect("answer"),
            Err(WriteError::Store(StoreError::Seal { index: 1, .. }))
        ));
        assert!(good_wait.blocking_recv().expect("answer").is_ok());
    }

    /// A group that fails is retried job by job: its refusals stay pending
    /// through the failure and the retry, and the agent's barrier is woken
    /// (it looks at the log that moment, on the writer's own call stack)
    /// only once every one of them is committed or lost for good.
    #[test]
    fn a_refusal_of_a_failed_group_stays_pending_until_its_retry_commits_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("warden.db");
        let mut store = EvidenceStore::open(&path).expect("open");
        let (tx, rx) = mpsc::sync_channel(8);
        let set = PendingRefusals::default();
        let refusal = |target: &str| {
            let mut e = entry(target);
            e.kind = "decision".into();
            e.decision = "deny".into();
            e.agent = "barrier-agent".into();
            e
        };
        let job = |entries: Vec<NewEntry>| WriteJob {
            pending: set.of_entries(&entries),
            entries,
            durability: Durability::Batched,
            done: None,
        };
        let first = job(vec![refusal("r1"), entry("allowed")]);
        let mut bad = vec![refusal("lost"), entry("b2")];
        bad[1].owner.clear();
        tx.send(job(bad)).expect("queue");
        tx.send(job(vec![refusal("r3")])).expect("queue");
        assert_eq!(set.count("barrier-agent"), 3);
        let seen: Arc<std::sync::Mutex<Option<Vec<String>>>> = Arc::default();
        let look = seen.clone();
        set.wait(
            "barrier-agent",
            Box::new(move || {
                let conn = rusqlite::Connection::open(&path).expect("second connection");
                let targets = conn
                    .prepare("SELECT target FROM evidence WHERE decision = 'deny' ORDER BY seq")
                    .expect("prepare")
                    .query_map([], |r| r.get::<_, String>(0))
                    .expect("query")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("rows");
                *look.lock().expect("lock") = Some(targets);
            }),
        );
        assert!(
            seen.lock().expect("lock").is_none(),
            "woken before any commit"
        );
        let stats = Stats::default();
        assert_eq!(append_jobs(&mut store, first, &rx, &stats, None), 3);
        assert_eq!(
            seen.lock().expect("lock").as_deref(),
            Some(&["r1".to_string(), "r3".to_string()][..]),
            "woken once both committed refusals were in the log"
        );
        assert_eq!(set.tracked(), 0);
    }

    /// A job the writer had no room for gives its count back with it: the
    /// reader queues it again, counted again.
    #[test]
    fn a_job_given_back_by_a_full_writer_gives_its_count_back() {
        let (tx, _rx) = mpsc::sync_channel(0);
        let writer = EvidenceWriter {
            tx,
            pending: PendingRefusals::default(),
        };
        let mut e = entry("r");
        (e.kind, e.decision, e.agent) = ("decision".into(), "deny".into(), "a".into());
        let back = writer.try_queue(vec![e]).expect_err("no room");
        assert_eq!(back.len(), 1);
        assert_eq!(writer.pending().count("a"), 0);
    }
}
