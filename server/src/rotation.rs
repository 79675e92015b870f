//! Scheduled archives (`--archive-dir`): a task that, every `--archive-check-s`, finds the
//! sessions whose store holds more than `--archive-keep` + `--archive-every` entries past its
//! base, writes each one's history to an encrypted archive in the directory
//! (`<session>-<first entry>-<last entry>.age`, [`store::archive::write`]) and rotates it out of
//! the store, keeping the last `--archive-keep` entries and a signed base where the rest ends
//! ([`store::archive::rotate`]).
//!
//! It works on a second handle of the store ([`store::Store::share`]) on a blocking thread,
//! beside the writer: commits go on meanwhile (the archive ends at the head it verified, the
//! rotation never past the archive's end), and sessions keep serving (what a rotation removes
//! is older than anything they hold: entries let go of, or a restart's base).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meshwork_protocol::{Ed25519Signer, SessionId};

use crate::metrics::Metrics;
use crate::store::{self, Store};

/// What the task needs.
#[derive(Debug)]
pub struct Schedule {
    /// Where archives go.
    pub dir: PathBuf,
    /// Their age recipients (`age1…`), checked at start.
    pub recipients: Vec<String>,
    /// Entries past the kept ones that trigger an archive.
    pub every: u64,
    /// Entries the store keeps.
    pub keep: u64,
    /// Time between checks.
    pub check: Duration,
    /// The log window a base is computed in.
    pub window: usize,
}

/// Starts the task.
///
/// # Errors
/// A sentence when a recipient does not parse or the directory cannot be made.
pub fn spawn(
    schedule: Schedule,
    store: Box<dyn Store + Sync>,
    server: Ed25519Signer,
    metrics: Metrics,
) -> Result<tokio::task::JoinHandle<()>, String> {
    store::archive::parse_recipients(&schedule.recipients)
        .map_err(|e| format!("--archive-recipient: {e}"))?;
    std::fs::create_dir_all(&schedule.dir)
        .map_err(|e| format!("--archive-dir {}: {e}", schedule.dir.display()))?;
    let schedule = Arc::new(schedule);
    let server = Arc::new(server);
    let metrics = Arc::new(metrics);
    Ok(tokio::spawn(async move {
        let mut store = Some(store);
        let mut every = tokio::time::interval(schedule.check);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(s) = store.take() else { return };
            let (schedule, server, metrics) = (schedule.clone(), server.clone(), metrics.clone());
            match tokio::task::spawn_blocking(move || {
                let mut s = s;
                check(&schedule, s.as_mut(), &server, &metrics);
                s
            })
            .await
            {
                Ok(s) => store = Some(s),
                Err(e) => {
                    tracing::error!("scheduled archive task failed: {e}");
                    return;
                }
            }
        }
    }))
}

/// One check: every session due is archived and rotated.
fn check(
    schedule: &Schedule,
    store: &mut (dyn Store + Sync),
    server: &Ed25519Signer,
    metrics: &Metrics,
) {
    let sessions = match store::log::list_sessions(store) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("scheduled archive: the store's sessions cannot be read: {e}");
            return;
        }
    };
    for (session, record) in sessions {
        let from = match store::log::load_base(store, session) {
            Ok(base) => base.map_or(0, |b| b.position),
            Err(e) => {
                tracing::error!(%session, "scheduled archive: {e}");
                continue;
            }
        };
        let due = schedule.keep.saturating_add(schedule.every);
        if record.head_position.saturating_sub(from) < due {
            continue;
        }
        let started = std::time::Instant::now();
        match archive_one(schedule, store, server, session, from, record.head_position) {
            Ok((path, removed, base)) => {
                metrics
                    .archive_seconds
                    .observe(started.elapsed().as_secs_f64());
                metrics
                    .archives_total
                    .with_label_values(&["archived"])
                    .inc();
                metrics.archived_entries_total.inc_by(removed);
                tracing::info!(
                    %session,
                    archive = %path.display(),
                    removed,
                    base,
                    seconds = started.elapsed().as_secs_f64(),
                    "scheduled archive written; the store starts from a signed base"
                );
            }
            Err(e) => {
                metrics.archives_total.with_label_values(&["failed"]).inc();
                tracing::error!(%session, "scheduled archive failed: {e}");
            }
        }
    }
}

/// Archives `session` (its store from entry `from` + 1) and rotates it: the archive's path, the
/// entries removed, the new base's position.
fn archive_one(
    schedule: &Schedule,
    store: &mut (dyn Store + Sync),
    server: &Ed25519Signer,
    session: SessionId,
    from: u64,
    head: u64,
) -> Result<(PathBuf, u64, u64), String> {
    let recipients = store::archive::parse_recipients(&schedule.recipients)?;
    let now_ms = crate::driver::now_ms();
    // Named by the entries it starts and (at least) ends with; the seal says where exactly.
    let path = schedule.dir.join(format!(
        "{session}-{:012}-{head:012}.age",
        from.saturating_add(1)
    ));
    let written = store::archive::write(store, session, server, now_ms, &recipients, &path, None)?;
    let rotated = store::archive::rotate(
        store,
        session,
        server,
        now_ms,
        schedule.keep,
        written.entries,
        schedule.window,
    )?;
    let (removed, base) = rotated.map_or((0, from), |r| (r.removed, r.base));
    Ok((path, removed, base))
}
