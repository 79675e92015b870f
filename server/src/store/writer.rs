//! The store writer: one named OS thread owns the [`Store`] and is the only writer. Session
//! drivers send it [`StoreCmd`]s over a bounded channel; it drains everything queued, writes it
//! as **one** atomic, durable commit (group commit: one flush for many batches and sessions),
//! then acknowledges each batch to its driver. Every `checkpoint_every` entries or
//! `checkpoint_interval` (and at shutdown) it appends a checkpoint signed by the server key.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use meshwork_protocol::{Domain, Ed25519Signer, SessionId, SignedEntry};
use meshwork_session::{AuthorRecord, BatchId, SessionSnapshot};
use tokio::sync::{mpsc, oneshot};

use super::log::{
    CheckpointBody, CheckpointRecord, LogRecord, author_key, chain_hash, invite_key, position_key,
};
use super::{Put, SessionRecord, Store, Tree, encode};
use crate::metrics::Metrics;

/// Commands queued for the writer at most.
pub const QUEUE: usize = 1024;

/// Where a session's chain stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Display name.
    pub name: String,
    /// Entries written.
    pub position: u64,
    /// Chain hash at `position`.
    pub head: [u8; 32],
    /// Entries since the last checkpoint.
    pub since_checkpoint: u64,
}

/// A batch is durable (or the store failed).
#[derive(Debug)]
pub struct StoreAck {
    /// The batch.
    pub batch: BatchId,
    /// `Err` with the store's message when the commit failed: nothing of it is durable.
    pub result: Result<(), String>,
    /// The command's root span (tracing), handed back for the fan-out.
    pub span: tracing::Span,
}

/// Work for the writer.
#[derive(Debug)]
pub enum StoreCmd {
    /// Start tracking a session (new, or loaded at start-up).
    Open {
        /// The session.
        session: SessionId,
        /// Its chain position.
        chain: Chain,
    },
    /// Make a batch durable.
    Persist {
        /// The session.
        session: SessionId,
        /// The batch.
        batch: BatchId,
        /// Authors to write first.
        authors: Vec<AuthorRecord>,
        /// Entries, in acceptance order.
        entries: Vec<SignedEntry>,
        /// Invite records to write (each replaces the stored one).
        invites: Vec<meshwork_session::InviteRecord>,
        /// Where the ack goes.
        ack: mpsc::Sender<StoreAck>,
        /// The command's root span.
        span: tracing::Span,
    },
    /// Store a snapshot.
    Snapshot {
        /// The session.
        session: SessionId,
        /// The snapshot.
        snapshot: SessionSnapshot,
    },
    /// Time passed (time-based checkpoints).
    Tick,
    /// Read stored entries at these positions (`FetchLog` history a session let go of), after
    /// the pending commits; positions the store does not hold are left out.
    ReadEntries {
        /// The session.
        session: SessionId,
        /// Position ranges (1-based), in order.
        ranges: Vec<std::ops::Range<u64>>,
        /// The entries in position order, or why they could not be read.
        reply: oneshot::Sender<Result<Vec<SignedEntry>, String>>,
    },
    /// Store an imported asset durably (its own commit), then answer.
    PutAsset {
        /// The session.
        session: SessionId,
        /// The uploaded file's SHA-256.
        asset: meshwork_protocol::command::AssetId,
        /// `ImportAsset::encode`'s bytes.
        bytes: Vec<u8>,
        /// Answered once durable, or with the error.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Copy the whole store, consistently, to a backup file.
    Backup {
        /// Destination.
        path: PathBuf,
        /// Records written, or the error.
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// Final checkpoints, then stop.
    Shutdown {
        /// Answered when done.
        reply: oneshot::Sender<()>,
    },
}

/// Writer settings.
#[derive(Clone, Copy, Debug)]
pub struct WriterConfig {
    /// Checkpoint after this many entries.
    pub checkpoint_every: u64,
    /// Checkpoint after this long with unchecked entries.
    pub checkpoint_interval: Duration,
    /// Shortest time between the starts of two group commits (see [`wait_before_commit`]).
    pub commit_interval: Duration,
}

/// How long the writer waits, with work queued at `now`, before starting the next group
/// commit: until `commit_interval` after the start of the last one. Under load, commits come
/// at most once per interval and everything that arrives meanwhile shares the flush (and the
/// session's acknowledgements and fan-out for it go out together, fewer packets per command);
/// after a quiet spell longer than the interval, a command is committed at once.
#[must_use]
pub fn wait_before_commit(
    last_commit: Option<Instant>,
    now: Instant,
    commit_interval: Duration,
) -> Duration {
    last_commit
        .and_then(|last| last.checked_add(commit_interval))
        .map_or(Duration::ZERO, |next| next.saturating_duration_since(now))
}

/// The writer's inbox.
#[derive(Clone)]
pub struct StoreHandle {
    /// Commands.
    pub tx: mpsc::Sender<StoreCmd>,
    /// A second handle on the same database for reads that need not wait for the writer (an
    /// export streams a long log through it, beside the commits); it sees committed data,
    /// every acknowledged entry included.
    pub reader: std::sync::Arc<dyn Store + Sync>,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle")
            .field("backend", &self.reader.backend())
            .finish_non_exhaustive()
    }
}

/// Starts the writer thread.
///
/// # Errors
/// The OS error when the thread cannot be spawned.
pub fn spawn(
    store: Box<dyn Store>,
    server_key: Ed25519Signer,
    config: WriterConfig,
    metrics: Metrics,
) -> std::io::Result<(StoreHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let reader = std::sync::Arc::from(store.share());
    let writer = Writer {
        store,
        server_key,
        config,
        metrics,
        chains: HashMap::new(),
        last_checkpoint: Instant::now(),
    };
    let thread = std::thread::Builder::new()
        .name("meshwork-store".into())
        .spawn(move || writer.run(rx))?;
    Ok((StoreHandle { tx, reader }, thread))
}

struct Writer {
    store: Box<dyn Store>,
    server_key: Ed25519Signer,
    config: WriterConfig,
    metrics: Metrics,
    chains: HashMap<SessionId, Chain>,
    last_checkpoint: Instant,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<StoreCmd>) {
        self.publish_gauges();
        let mut last_commit = None;
        while let Some(first) = rx.blocking_recv() {
            let wait = wait_before_commit(last_commit, Instant::now(), self.config.commit_interval);
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            self.metrics
                .persist_wait_seconds
                .observe(wait.as_secs_f64());
            let started = Instant::now();
            let mut cmds = vec![first];
            while cmds.len() < QUEUE {
                match rx.try_recv() {
                    Ok(c) => cmds.push(c),
                    Err(_) => break,
                }
            }
            // Only a pass that persists entries starts the interval: the writer's own ticks,
            // reads and backups never make the next command wait.
            if cmds.iter().any(|c| matches!(c, StoreCmd::Persist { .. })) {
                last_commit = Some(started);
            }
            if !self.apply(cmds) {
                break;
            }
        }
        tracing::info!("store writer stopped");
    }

    /// One group commit for everything queued. Returns false on shutdown.
    fn apply(&mut self, cmds: Vec<StoreCmd>) -> bool {
        let mut puts = Vec::new();
        let mut acks: Vec<(mpsc::Sender<StoreAck>, BatchId, tracing::Span)> = Vec::new();
        // One `meshwork.persist` span per batch, open until the shared commit returns.
        let mut persist_spans: Vec<tracing::Span> = Vec::new();
        let mut after: Vec<StoreCmd> = Vec::new();
        let mut shutdown = None;
        let mut entries_written = 0u64;
        let mut touched: Vec<SessionId> = Vec::new();
        for cmd in cmds {
            match cmd {
                StoreCmd::Open { session, chain } => {
                    puts.push(self.session_put(session, &chain));
                    self.chains.insert(session, chain);
                }
                StoreCmd::Persist {
                    session,
                    batch,
                    authors,
                    entries,
                    invites,
                    ack,
                    span,
                } => {
                    for r in &invites {
                        puts.push(Put {
                            tree: Tree::Invites,
                            key: invite_key(session, r.invite),
                            value: encode(r),
                        });
                    }
                    persist_spans.push(tracing::trace_span!(
                        target: crate::telemetry::TARGET,
                        parent: &span,
                        "meshwork.persist",
                        entries = entries.len()
                    ));
                    let chain = self.chains.entry(session).or_insert_with(|| Chain {
                        name: String::new(),
                        position: 0,
                        head: [0; 32],
                        since_checkpoint: 0,
                    });
                    for a in &authors {
                        puts.push(Put {
                            tree: Tree::Authors,
                            key: author_key(session, a.author),
                            value: encode(a),
                        });
                    }
                    for entry in entries {
                        chain.position = chain.position.saturating_add(1);
                        let next = chain_hash(&chain.head, chain.position, &entry);
                        let record = LogRecord {
                            prev_hash: chain.head,
                            entry,
                        };
                        puts.push(Put {
                            tree: Tree::Log,
                            key: position_key(session, chain.position),
                            value: encode(&record),
                        });
                        chain.head = next;
                        chain.since_checkpoint = chain.since_checkpoint.saturating_add(1);
                        entries_written = entries_written.saturating_add(1);
                    }
                    if !touched.contains(&session) {
                        touched.push(session);
                    }
                    acks.push((ack, batch, span));
                }
                StoreCmd::Snapshot { session, snapshot } => {
                    puts.push(Put {
                        tree: Tree::Snapshots,
                        key: position_key(session, snapshot.position),
                        value: encode(&snapshot),
                    });
                }
                StoreCmd::Tick => {}
                StoreCmd::Backup { .. }
                | StoreCmd::ReadEntries { .. }
                | StoreCmd::PutAsset { .. } => {
                    after.push(cmd);
                }
                StoreCmd::Shutdown { reply } => shutdown = Some(reply),
            }
        }
        let interval_over = self.last_checkpoint.elapsed() >= self.config.checkpoint_interval;
        let mut checkpointed = false;
        let sessions: Vec<SessionId> = self.chains.keys().copied().collect();
        for session in sessions {
            let Some(chain) = self.chains.get(&session).cloned() else {
                continue;
            };
            let due = chain.since_checkpoint >= self.config.checkpoint_every
                || (chain.since_checkpoint > 0 && (interval_over || shutdown.is_some()));
            if due {
                let body = CheckpointBody {
                    domain: Domain::Checkpoint,
                    session,
                    position: chain.position,
                    head_hash: chain.head,
                    at_ms: crate::driver::now_ms(),
                };
                let record = CheckpointRecord::sign(&body, &self.server_key);
                puts.push(Put {
                    tree: Tree::Checkpoints,
                    key: position_key(session, chain.position),
                    value: encode(&record),
                });
                if let Some(c) = self.chains.get_mut(&session) {
                    c.since_checkpoint = 0;
                }
                checkpointed = true;
                if !touched.contains(&session) {
                    touched.push(session);
                }
            }
        }
        if checkpointed || interval_over {
            self.last_checkpoint = Instant::now();
        }
        for session in touched {
            if let Some(chain) = self.chains.get(&session) {
                puts.push(self.session_put(session, chain));
            }
        }
        let result = if puts.is_empty() {
            Ok(())
        } else {
            let started = Instant::now();
            let r = self.store.commit(&puts).map_err(|e| e.to_string());
            self.metrics
                .persist_batch_seconds
                .observe(started.elapsed().as_secs_f64());
            self.metrics
                .persist_batch_entries
                .observe(entries_written as f64);
            r
        };
        if let Err(e) = &result {
            // Nothing of this commit is durable; the drivers are told and stop acknowledging.
            tracing::error!("store commit failed: {e}");
        }
        drop(persist_spans);
        for (ack, batch, span) in acks {
            let _ = ack.blocking_send(StoreAck {
                batch,
                result: result.clone(),
                span,
            });
        }
        self.publish_gauges();
        for cmd in after {
            match cmd {
                StoreCmd::Backup { path, reply } => {
                    let _ = reply.send(super::backup::write(self.store.as_ref(), &path, None));
                }
                StoreCmd::ReadEntries {
                    session,
                    ranges,
                    reply,
                } => {
                    let _ = reply.send(super::log::read_entries(
                        self.store.as_ref(),
                        session,
                        &ranges,
                    ));
                }
                StoreCmd::PutAsset {
                    session,
                    asset,
                    bytes,
                    reply,
                } => {
                    let put = Put {
                        tree: Tree::Assets,
                        key: super::log::asset_key(session, asset),
                        value: bytes,
                    };
                    let _ = reply.send(self.store.commit(&[put]).map_err(|e| e.to_string()));
                }
                _ => {}
            }
        }
        if let Some(reply) = shutdown {
            let _ = reply.send(());
            return false;
        }
        true
    }

    fn session_put(&self, session: SessionId, chain: &Chain) -> Put {
        let record = SessionRecord {
            name: chain.name.clone(),
            head_position: chain.position,
            head_hash: chain.head,
        };
        Put {
            tree: Tree::Sessions,
            key: session.0.to_vec(),
            value: encode(&record),
        }
    }

    fn publish_gauges(&self) {
        let total: u64 = self.chains.values().map(|c| c.position).sum();
        self.metrics
            .log_entries
            .set(i64::try_from(total).unwrap_or(i64::MAX));
        self.metrics
            .store_bytes
            .set(i64::try_from(self.store.size_bytes()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_waits_only_for_what_is_left_of_the_interval_since_the_last_one() {
        let interval = Duration::from_millis(4);
        let t0 = Instant::now();
        // The first commit, and any after a quiet spell, goes at once.
        assert_eq!(wait_before_commit(None, t0, interval), Duration::ZERO);
        let later = t0.checked_add(Duration::from_millis(9)).unwrap();
        assert_eq!(
            wait_before_commit(Some(t0), later, interval),
            Duration::ZERO
        );
        // Under load, the next starts one interval after the last one started.
        let soon = t0.checked_add(Duration::from_millis(1)).unwrap();
        assert_eq!(
            wait_before_commit(Some(t0), soon, interval),
            Duration::from_millis(3)
        );
        // Off: never waits.
        assert_eq!(
            wait_before_commit(Some(t0), t0, Duration::ZERO),
            Duration::ZERO
        );
    }
}
