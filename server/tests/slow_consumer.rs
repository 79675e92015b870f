//! A slow consumer with the real binary over QUIC: one client stops reading while 16 others
//! edit at 90 commands a second each. The server holds at most its outbox bound for it (then
//! closes it as too slow) and its memory stays bounded; the 16 see every acknowledgement and
//! none is disconnected; the slow client, reading again, reconnects and resumes and ends at the
//! server's hash.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    clippy::cast_precision_loss,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::{Duration, Instant};

use glam::Vec3;
use meshwork_protocol::Command;
use meshwork_protocol::wire::CloseReason;
use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::{Client, http, random_signer};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");
const WAIT: Duration = Duration::from_secs(30);
const WRITERS: usize = 16;
const PER_WRITER: u64 = 540; // 6 s at 90 a second

async fn metric(server: &ServerProcess, name: &str) -> f64 {
    http::metric(server.http, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_costs_a_bounded_outbox_and_converges_when_it_reads_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Outboxes of 2048 frames: a writer that reads along never comes near it (its backlog is a
    // moment's acks and fan-out even when the two cores are busy), the one that stops reading
    // passes it within the run.
    let server = ServerProcess::start(BIN, &data, &["--outbox-frames", "2048"]);
    let token = server.admin_token().unwrap();
    let ticket = server.ticket(BIN, &data, "editor");

    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let mut c = Client::join(&ticket, random_signer()).await.unwrap();
        c.retain_entries = false;
        let cube = c.spawn_cube_acked(1, WAIT).await.unwrap();
        writers.push((c, cube));
    }
    // The slow one: an 8 KiB receive window, so its stream blocks almost at once.
    let mut slow = Client::join_with_window(&ticket, random_signer(), 8 * 1024)
        .await
        .unwrap();
    slow.catch_up(WRITERS as u64, WAIT).await.unwrap();
    slow.pause_reading();
    let rss_before = server.rss_kib();

    // 16 writers at 90 a second for 6 s, each reading its own acks as it goes.
    let tasks: Vec<_> = writers
        .into_iter()
        .map(|(mut c, cube)| {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_micros(11_111));
                for _ in 0..PER_WRITER {
                    tick.tick().await;
                    c.submit(vec![Command::Translate {
                        entity: cube,
                        delta: Vec3::new(0.001, 0.0, 0.0),
                    }])
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "a writer lost its connection: {e}; {:?}; {:?}",
                            c.seen.closed,
                            c.connection().close_reason()
                        )
                    });
                    while c.next(Duration::ZERO).await.is_ok() {}
                }
                let end = Instant::now() + WAIT;
                c.until(end, |s| s.acks.len() as u64 > PER_WRITER)
                    .await
                    .unwrap_or_else(|e| panic!("a writer missed acknowledgements: {e}"));
                c
            })
        })
        .collect();
    let mut writers = Vec::new();
    for t in tasks {
        writers.push(t.await.unwrap());
    }
    let rss_after = server.rss_kib();
    let position = WRITERS as u64 * (PER_WRITER + 1);
    let (at, hash) = http::Admin {
        addr: server.http,
        token,
    }
    .scene()
    .await
    .unwrap();
    assert_eq!(at, position, "every writer's every command was accepted");
    for w in &writers {
        assert!(
            w.seen.closed.is_none(),
            "a writer was closed: {:?}",
            w.seen.closed
        );
        assert!(w.seen.refusals.is_empty(), "{:?}", w.seen.refusals);
    }
    // 8,640 commands went by; what the server kept for the slow client is its outbox (2048
    // frames at most), not the log it missed.
    let grew_kib = rss_after.saturating_sub(rss_before);
    eprintln!("server RSS {rss_before} KiB -> {rss_after} KiB (+{grew_kib} KiB)");
    assert!(grew_kib < 64 * 1024, "the server grew {grew_kib} KiB");
    let too_slow = metric(
        &server,
        "meshwork_commands_rejected_total{reason=\"too_slow\"}",
    )
    .await;

    // The slow client reads again: closed as too slow (the close frame itself may not have
    // fitted behind what it did not read: then the connection is simply gone), it reconnects
    // and resumes; or still connected, its log arrives. Either way it ends at the server's hash.
    slow.resume_reading();
    let end = Instant::now() + WAIT;
    let mut cut = false;
    while slow.replica().scene().position < position {
        match slow
            .next(end.saturating_duration_since(Instant::now()))
            .await
        {
            Ok(_) => {}
            Err(meshwork_testkit::ClientError::Timeout) => panic!("the slow client heard nothing"),
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    if cut {
        if let Some(close) = &slow.seen.closed {
            assert_eq!(close.reason, CloseReason::TooSlow, "{close:?}");
        }
        assert!(too_slow >= 1.0, "the close was counted");
        slow.dropped();
        slow.reconnect(&server.quic, ticket.cert_sha256)
            .await
            .unwrap();
    }
    slow.catch_up(position, WAIT).await.unwrap();
    assert_eq!(hex::encode(slow.replica().scene().state_hash()), hash);
    eprintln!(
        "slow client: {}; too_slow closes counted: {too_slow}",
        if cut {
            "closed as too slow, resumed"
        } else {
            "kept"
        }
    );
}
