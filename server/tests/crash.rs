//! Crash recovery of the real binary: clients submit signed commands while the test kills the
//! server with SIGKILL at seeded random moments. After each kill, `verify-log` checks the store
//! offline (signatures, chain, checkpoints) and replays it; the restarted server must hold every
//! command any client saw acknowledged, and its state hash must equal the offline replay's.
//!
//! `MESHWORK_CRASH_CYCLES` (default 5) and `MESHWORK_CRASH_SEED` (default 7) choose the run;
//! the stress run reported in `docs/benchmarks.md` used 20 cycles.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command as Process;
use std::time::{Duration, Instant};

use glam::Vec3;
use meshwork_protocol::wire::JoinTicket;
use meshwork_protocol::{AuthorId, Command, CommandId, EntityId};
use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::{Client, http, random_signer};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");
const CLIENTS: usize = 3;

fn settings(store: &str) -> [&str; 6] {
    [
        "--store",
        store,
        "--snapshot-every",
        "200",
        "--checkpoint-every",
        "50",
    ]
}

/// `verify-log` on the stopped server's store: passes, and returns the replayed state hash.
fn verify_offline(data: &Path, store: &str) -> String {
    let out = Process::new(BIN)
        .args(["verify-log", "--store", store, "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "verify-log failed after a crash:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("ok "))
        .unwrap_or_else(|| panic!("no session verified:\n{text}"));
    line.rsplit("state ").next().unwrap().trim().to_owned()
}

async fn session_info(http_addr: SocketAddr, token: &str) -> serde_json::Value {
    let admin = http::Admin {
        addr: http_addr,
        token: token.to_owned(),
    };
    admin.sessions().await.unwrap()[0].clone()
}

/// One client submitting as fast as acks allow until the server dies; returns its acks.
async fn edit_until_killed(
    ticket: JoinTicket,
    killed: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (AuthorId, BTreeMap<u64, CommandId>) {
    let mut c = match Client::join(&ticket, random_signer()).await {
        Ok(c) => c,
        Err(_) => return (AuthorId(0), BTreeMap::new()),
    };
    c.retain_entries = false;
    let author = c.author();
    for i in 0u32.. {
        // A killed server sends nothing more; QUIC would only notice at the idle timeout.
        if killed.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        let cmd = Command::Translate {
            entity: EntityId::new(author, i % 8),
            delta: Vec3::X,
        };
        if c.submit(vec![cmd]).await.is_err() {
            break;
        }
        // Read whatever came back; a dead connection ends the loop.
        match c.next(Duration::from_millis(2)).await {
            Ok(_) | Err(meshwork_testkit::ClientError::Timeout) => {}
            Err(_) => break,
        }
    }
    // Take every ack that arrived before the server died (they are already queued locally).
    while c.next(Duration::from_millis(20)).await.is_ok() {}
    (author, c.seen.acks.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_commands_survive_sigkill_redb() {
    crash_cycles("redb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_commands_survive_sigkill_sled() {
    crash_cycles("sled").await;
}

async fn crash_cycles(store: &str) {
    let cycles: u64 = std::env::var("MESHWORK_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let seed = std::env::var("MESHWORK_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let mut rng = meshwork_testkit::sim::Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut acked_total: BTreeMap<CommandId, ()> = BTreeMap::new();
    let mut token = String::new();
    for cycle in 0..cycles {
        let mut server = ServerProcess::start(BIN, &data, &settings(store));
        if cycle == 0 {
            token = server.admin_token().unwrap();
        }
        // Everything acknowledged in earlier lives is here, and the state is the replay's.
        let info = session_info(server.http, &token).await;
        if cycle > 0 {
            assert!(
                info["log_entries"].as_u64().unwrap() >= acked_total.len() as u64,
                "cycle {cycle}: {} entries after restart, {} were acknowledged",
                info["log_entries"],
                acked_total.len()
            );
        }
        let ticket = server.ticket(BIN, &data, "editor");
        let killed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| tokio::spawn(edit_until_killed(ticket.clone(), killed.clone())))
            .collect();
        let wait_ms = 300 + rng.below(600);
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        killed.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut acked_now = 0;
        for t in tasks {
            let (_, acks) = t.await.unwrap();
            acked_now += acks.len();
            // In sequence order an author's acknowledged entries are in increasing total order,
            // so finding them all in the restarted log (kept in total order) means finding them
            // in the order they were acknowledged.
            let ids: Vec<CommandId> = acks.values().copied().collect();
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "cycle {cycle}: acks out of order"
            );
            for id in acks.values() {
                acked_total.insert(*id, ());
            }
        }
        assert!(
            acked_now > 0,
            "cycle {cycle}: nothing was acknowledged in {wait_ms} ms"
        );

        // Offline: the store verifies and replays; then the restarted server must agree.
        let offline = verify_offline(&data, store);
        let server = ServerProcess::start(BIN, &data, &settings(store));
        let info = session_info(server.http, &token).await;
        assert_eq!(
            info["state_hash"].as_str().unwrap(),
            offline,
            "cycle {cycle}: state differs from the replay"
        );

        // A fresh client catches up with the durable log: every acknowledged command is in it.
        let mut probe = Client::join(&server.ticket(BIN, &data, "editor"), random_signer())
            .await
            .unwrap();
        let want = info["log_entries"].as_u64().unwrap() as usize;
        probe.fetch_log(0).await.unwrap();
        probe
            .until(Instant::now() + Duration::from_secs(30), |s| s.history_done)
            .await
            .unwrap();
        assert_eq!(
            probe.seen.entries.len(),
            want,
            "cycle {cycle}: history is the whole log"
        );
        assert!(
            probe.replica().is_synced(),
            "cycle {cycle}: the probe's replica loaded the snapshot"
        );
        assert_eq!(
            hex::encode(probe.replica().scene().state_hash()),
            info["scene_hash"].as_str().unwrap(),
            "cycle {cycle}: the restarted scene is the one clients replicate"
        );
        let missing: Vec<_> = acked_total
            .keys()
            .filter(|id| !probe.seen.entries.contains_key(id))
            .collect();
        assert!(
            missing.is_empty(),
            "cycle {cycle}: acknowledged but lost: {missing:?}"
        );
        drop(probe);
        drop(server);
    }
    eprintln!(
        "{cycles} SIGKILL cycles: {} acknowledged commands, none lost",
        acked_total.len()
    );
}
