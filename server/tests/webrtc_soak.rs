//! Soak: WebRTC peers join and leave over and over; the server's open file descriptors and
//! resident memory must come back to within 10% of their baseline (webrtc stacks have a history
//! of leaking after close). `MESHWORK_SOAK_CYCLES` sets the count: 25 in the normal suite, 1000
//! for the stress run reported in `docs/benchmarks.md`.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    clippy::cast_precision_loss,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::{Duration, Instant};

use meshwork_testkit::http;
use meshwork_testkit::rtc::RtcClient;
use meshwork_testkit::server_process::ServerProcess;

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Waits until the server holds no WebRTC peer and no WebRTC client.
async fn drained(server: &ServerProcess) {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let m = http::get(server.http, "/metrics").await.unwrap().body;
        let zero = |name: &str| {
            m.lines()
                .any(|l| l.strip_prefix(name).is_some_and(|v| v.trim() == "0"))
        };
        if zero("meshwork_rtc_peers ") && zero("meshwork_clients_connected{transport=\"webrtc\"} ")
        {
            return;
        }
        assert!(Instant::now() < end, "peers were not released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn cycles(server: &ServerProcess, invite: &meshwork_protocol::wire::Invite, n: usize) {
    for i in 0..n {
        let c = RtcClient::join_synced(server.http, invite)
            .await
            .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        c.close().await;
    }
    drained(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_cycles_return_fds_and_memory_to_baseline() {
    let n: usize = std::env::var("MESHWORK_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Every cycle is a new key on one invite: let the invite admit them all.
    let keys = (2 * n + 10).to_string();
    let server = ServerProcess::start(BIN, &data, &["--max-keys-per-invite", &keys]);
    let pid = server.child.id();
    let ticket = server.ticket(BIN, &data, "editor");

    // Warm-up: lazily built state (crypto provider, allocator arenas, store pages) is not a leak.
    cycles(&server, &ticket.invite, 10).await;
    let (fd0, rss0) = (open_fds(pid), server.rss_kib());
    let started = Instant::now();
    cycles(&server, &ticket.invite, n).await;
    let elapsed = started.elapsed();
    let (fd1, rss1) = (open_fds(pid), server.rss_kib());
    eprintln!(
        "soak: {n} WebRTC join/leave cycles in {:.1} s ({:.0} ms each); fds {fd0} -> {fd1}; RSS {rss0} -> {rss1} KiB ({:+.1}%)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / n as f64,
        (rss1 as f64 - rss0 as f64) * 100.0 / rss0 as f64
    );
    assert!(
        fd1 as f64 <= fd0 as f64 * 1.1,
        "file descriptors grew: {fd0} -> {fd1}"
    );
    assert!(
        rss1 as f64 <= rss0 as f64 * 1.1,
        "RSS grew: {rss0} -> {rss1} KiB"
    );
}
