//! The bounded log on the real binary: a session longer than `--log-window` keeps only the
//! window in memory while it runs, restarts after a SIGKILL by streaming its store (the same
//! scene, every entry counted, the store still verifying), and keeps serving: a new member
//! catches up to the server's hash and its edit lands.
//!
//! `MESHWORK_BOUNDED_ENTRIES` sets the history (6,000 by default, 1,000,000 for the memory
//! figures in docs/benchmarks.md); `MESHWORK_BOUNDED_WINDOW` the window (1,024 by default, the
//! smallest the server takes). It prints the server's RSS after each start.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command as Process, Output};
use std::time::{Duration, Instant};

use glam::Vec3;
use meshwork_protocol::Command;
use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::{Client, http, random_signer};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn verify(data: &Path) -> Output {
    Process::new(BIN)
        .args(["verify-log", "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap()
}

async fn info(addr: SocketAddr, token: &str) -> serde_json::Value {
    let admin = http::Admin {
        addr,
        token: token.to_owned(),
    };
    admin.sessions().await.unwrap()[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_longer_than_its_window_restarts_and_serves() {
    let entries = env_or("MESHWORK_BOUNDED_ENTRIES", 6_000);
    let window = env_or("MESHWORK_BOUNDED_WINDOW", 1_024).to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = [
        "--rate-per-s",
        "1000000",
        "--burst",
        "1000000",
        "--log-window",
        &window,
        // History pages as fast as they can go: the pace of FetchLog is not what is measured.
        "--history-per-min",
        "1000000",
    ];
    let mut server = ServerProcess::start(BIN, &data, &args);
    let token = server.admin_token().unwrap();
    let ticket = server.ticket(BIN, &data, "editor");

    // The history: a cube, then translations back and forth, in acknowledged chunks.
    let started = Instant::now();
    let mut c = Client::join(&ticket, random_signer()).await.unwrap();
    c.retain_entries = false;
    let cube = c
        .spawn_cube_acked(1, Duration::from_secs(30))
        .await
        .unwrap();
    c.translate_back_and_forth(cube, entries - 1, Duration::from_secs(120))
        .await
        .unwrap();
    assert!(c.seen.refusals.is_empty(), "{:?}", c.seen.refusals.first());
    eprintln!(
        "{entries} entries acknowledged in {:?}; server RSS {} KiB",
        started.elapsed(),
        server.rss_kib()
    );
    let before = info(server.http, &token).await;
    assert_eq!(before["log_entries"].as_u64().unwrap(), entries as u64);
    let window: usize = window.parse().unwrap();
    assert_eq!(
        before["state_hash"].is_null(),
        entries > window + window / 8,
        "a log that holds only its window names no hash of the whole: {before}"
    );
    drop(c);

    // SIGKILL, then a start that streams the store.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let started = Instant::now();
    let server = server.restart_at_same_addresses(BIN, &data, &args);
    let after = info(server.http, &token).await;
    eprintln!(
        "restarted and serving in {:?}; server RSS {} KiB",
        started.elapsed(),
        server.rss_kib()
    );
    assert_eq!(after["log_entries"], before["log_entries"]);
    assert_eq!(
        after["scene_hash"], before["scene_hash"],
        "the restart rebuilt the same scene"
    );

    // The whole history, the part let go of read back from the store, in total order.
    let mut auditor = Client::join(&server.ticket(BIN, &data, "viewer"), random_signer())
        .await
        .unwrap();
    let started = Instant::now();
    auditor.fetch_log(0).await.unwrap();
    auditor
        .until(Instant::now() + Duration::from_secs(120), |s| {
            s.history_done
        })
        .await
        .unwrap();
    assert_eq!(
        auditor.seen.entries.len(),
        entries,
        "FetchLog returns every entry"
    );
    eprintln!(
        "FetchLog from 0: {entries} entries in {:?}",
        started.elapsed()
    );
    drop(auditor);

    // It serves: a new member catches up and its edit lands.
    let mut d = Client::join(&server.ticket(BIN, &data, "editor"), random_signer())
        .await
        .unwrap();
    d.submit_acked(
        vec![Command::Translate {
            entity: cube,
            delta: Vec3::Y,
        }],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let now = info(server.http, &token).await;
    assert_eq!(
        now["log_entries"].as_u64().unwrap(),
        entries as u64 + 1,
        "{now}"
    );
    let want = now["scene_hash"].as_str().unwrap().to_owned();
    let position = now["scene_position"].as_u64().unwrap();
    let seen = d
        .caught_up_to(position, Instant::now() + Duration::from_secs(30))
        .await
        .expect("the new member's replica catches up");
    assert_eq!(hex::encode(seen), want);
    // The export streams the long log from the store into a replay in the window: the live
    // scene, and no log state hash (the replay let go of entries).
    let id = now["id"].as_str().unwrap();
    let bearer = format!("Bearer {token}");
    let glb = http::request(
        server.http,
        "GET",
        &format!("/api/v1/sessions/{id}/export.glb"),
        &[("Authorization", bearer.as_str())],
        "",
    )
    .await
    .unwrap();
    assert_eq!(glb.status, 200, "{}", glb.body);
    let json = String::from_utf8_lossy(&glb.bytes);
    assert!(
        json.contains(&format!("\"sceneStateHash\":\"{want}\"")),
        "{}",
        &json[..json.len().min(2000)]
    );
    assert!(json.contains("\"logStateHash\":null"));
    drop(d);
    drop(server);

    // The store still verifies, every entry of it.
    let out = verify(&data);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("{} entries", entries + 1)), "{text}");
    // Replayed as it streams from the store, in the default window: the live scene.
    assert!(text.contains(&format!("scene {want}")), "{text}");
    if std::env::var_os("MESHWORK_BOUNDED_KEEP").is_some() {
        // For measuring the offline tools on this store (`docs/benchmarks.md`).
        eprintln!("store kept in {}", dir.keep().display());
    }
}
