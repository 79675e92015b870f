//! What an idle connection costs the server: the real binary's resident memory before and after
//! N more members join over QUIC (handshake, welcome, roster, snapshot) and then do nothing.
//! Issue 17 asks for at most 40 KiB per idle connection; this build measures ≈ 48 KiB (see
//! `docs/benchmarks.md`), so the test guards the figure against regression at 58 KiB and
//! prints it. `MESHWORK_IDLE_CONNECTIONS` sets N (default 200).
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    clippy::cast_precision_loss,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::Duration;

use meshwork_protocol::wire::ServerMsg;
use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::{Client, http, random_signer};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");
const WAIT: Duration = Duration::from_secs(30);
const BOUND_KIB: f64 = 58.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_costs_the_server_a_bounded_amount_of_memory() {
    let n: usize = std::env::var("MESHWORK_IDLE_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let limit = (n + 64).to_string();
    let server = ServerProcess::start(
        BIN,
        &data,
        &[
            "--max-connections-per-ip",
            &limit,
            "--max-keys-per-invite",
            &limit,
            "--max-clients",
            &limit,
        ],
    );
    let ticket = server.ticket(BIN, &data, "editor");

    // A few members first, so that what a session costs once (its driver, the snapshot
    // encoding, the allocator's first arenas) is in the baseline, not in the per-connection
    // figure.
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut c = Client::join(&ticket, random_signer()).await.unwrap();
        c.catch_up(0, WAIT).await.unwrap();
        clients.push(c);
    }
    let before = server.rss_kib();
    for _ in 0..n {
        let mut c = Client::join(&ticket, random_signer()).await.unwrap();
        c.catch_up(0, WAIT).await.unwrap();
        clients.push(c);
    }
    // Every connection answered once more after the last join (the server has handled all
    // that the joins queued), then nothing moves.
    for (nonce, c) in (0u64..).zip(clients.iter_mut()) {
        c.ping(nonce).await.unwrap();
    }
    for (nonce, c) in (0u64..).zip(clients.iter_mut()) {
        loop {
            if let ServerMsg::Pong(p) = c.next(WAIT).await.unwrap()
                && p.nonce == nonce
            {
                break;
            }
        }
    }
    let connected = http::metric(
        server.http,
        "meshwork_clients_connected{transport=\"quic\"}",
    )
    .await;
    assert!(
        (connected - clients.len() as f64).abs() < 0.5,
        "every client is connected: {connected}"
    );
    let after = server.rss_kib();
    let per = after.saturating_sub(before) as f64 / n as f64;
    println!(
        "idle connections: {n} more joined over QUIC; server RSS {before} KiB → {after} KiB, \
         {per:.1} KiB per connection"
    );
    assert!(
        per <= BOUND_KIB,
        "an idle connection costs {per:.1} KiB of server memory (bound {BOUND_KIB} KiB)"
    );
    for c in clients {
        c.leave().await;
    }
}
