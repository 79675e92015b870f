//! WebRTC with the real binary and a real WebRTC stack on the client side (the async `webrtc`
//! crate): join over data channels, submit signed commands, receive the log; a mixed session
//! with QUIC and WebSocket clients; bad input on every WebRTC surface.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::{Duration, Instant};

use glam::Vec3;
use meshwork_protocol::command::{Primitive, Transform};
use meshwork_protocol::{Command, EntityId};
use meshwork_testkit::rtc::{RtcClient, RtcOptions};
use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::{http, random_signer};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_webrtc_client_joins_submits_and_receives_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(BIN, &data, &[]);
    let ticket = server.ticket(BIN, &data, "editor");

    let mut a = RtcClient::join(
        server.http,
        &RtcOptions::default(),
        random_signer(),
        ticket.invite.clone(),
    )
    .await
    .unwrap();
    assert!(
        a.offer_sdp.contains("a=candidate"),
        "the offer carried its candidates (non-trickle)"
    );
    assert!(
        a.pump_until(Duration::from_secs(10), |c| c.conn.replica().is_synced())
            .await
            .unwrap(),
        "joined over WebRTC"
    );
    let mut b = RtcClient::join(
        server.http,
        &RtcOptions::default(),
        random_signer(),
        ticket.invite.clone(),
    )
    .await
    .unwrap();
    assert!(
        b.pump_until(Duration::from_secs(10), |c| c.conn.replica().is_synced())
            .await
            .unwrap()
    );

    // A submits signed commands; both see them applied in the replicated log.
    let author = a.conn.author().unwrap();
    let cube = EntityId::new(author, 0);
    a.conn
        .submit(vec![Command::Spawn {
            entity: cube,
            primitive: Primitive::Cube,
            transform: Transform::IDENTITY,
        }])
        .unwrap();
    for _ in 0..10 {
        a.conn
            .submit(vec![Command::Translate {
                entity: cube,
                delta: Vec3::new(0.5, 0.0, 0.0),
            }])
            .unwrap();
    }
    let moved = |c: &RtcClient| {
        c.conn
            .replica()
            .scene()
            .entities
            .get(&cube)
            .is_some_and(|e| (e.transform.translation.x - 5.0).abs() < 1e-4)
    };
    assert!(
        a.pump_until(Duration::from_secs(10), moved).await.unwrap(),
        "A sees its commands applied"
    );
    assert!(
        b.pump_until(Duration::from_secs(10), moved).await.unwrap(),
        "B receives the log"
    );
    assert_eq!(
        a.conn.replica().scene().state_hash(),
        b.conn.replica().scene().state_hash()
    );

    let metrics = http::get(server.http, "/metrics").await.unwrap().body;
    assert_eq!(
        metric(&metrics, "meshwork_clients_connected{transport=\"webrtc\"}"),
        Some(2.0),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "meshwork_bytes_received_total{transport=\"webrtc\"}"
        )
        .unwrap()
            > 0.0
    );

    // Leaving frees the peer on the server.
    a.close().await;
    b.close().await;
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let m = http::get(server.http, "/metrics").await.unwrap().body;
        if metric(&m, "meshwork_rtc_peers") == Some(0.0)
            && metric(&m, "meshwork_clients_connected{transport=\"webrtc\"}") == Some(0.0)
        {
            break;
        }
        assert!(Instant::now() < end, "peers were not released:\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
