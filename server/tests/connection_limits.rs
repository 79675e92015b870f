//! Connection limits of the real binary on loopback: at most `--max-connections-per-ip` live
//! connections from one address over every transport (QUIC refused before the TLS handshake,
//! WebSocket upgrades answered 429), each refusal counted; a QUIC connection that sends no whole
//! first frame is closed within the first-frame deadline and frees its place.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::{Duration, Instant};

use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::{Client, http, open, random_signer, resolve};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");

async fn refusals(server: &ServerProcess) -> f64 {
    metric(
        server,
        "meshwork_commands_rejected_total{reason=\"per_address_limit\"}",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_bounded_and_a_silent_one_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(BIN, &data, &["--max-connections-per-ip", "3"]);
    let ticket = server.ticket(BIN, &data, "editor");
    let addr = resolve(&ticket.quic_addr).unwrap();

    // Two joined clients and one that opened its stream but never finishes a frame.
    let mut a = Client::join(&ticket, random_signer()).await.unwrap();
    let b = Client::join(&ticket, random_signer()).await.unwrap();
    let (_e, silent, mut send, _recv) = open(addr, ticket.cert_sha256).await.unwrap();
    send.write_all(&[0x01]).await.unwrap(); // one byte of a frame header
    let opened = Instant::now();

    // The fourth, by QUIC and by WebSocket, is refused and counted.
    assert!(
        Client::join(&ticket, random_signer()).await.is_err(),
        "a fourth QUIC connection from one address was admitted"
    );
    let session = ticket.invite.claimed_session().unwrap();
    let url = format!("ws://{}/api/v1/sessions/{session}/ws", server.http);
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429);
        }
        other => panic!("a fourth connection by WebSocket: {:?}", other.map(|_| ())),
    }
    assert!(refusals(&server).await >= 2.0);

    // The silent connection is closed by the first-frame deadline, and its place is free again.
    let reason = tokio::time::timeout(Duration::from_secs(30), silent.closed())
        .await
        .expect("the silent connection was never closed");
    assert!(
        opened.elapsed() >= Duration::from_secs(9),
        "closed after {:?}: {reason}",
        opened.elapsed()
    );
    let end = Instant::now() + Duration::from_secs(10);
    let c = loop {
        match Client::join(&ticket, random_signer()).await {
            Ok(c) => break c,
            Err(e) => assert!(Instant::now() < end, "no place after the close: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // A client leaving frees its place too; the joined ones kept working throughout.
    drop(b);
    a.submit_acked(
        vec![meshwork_protocol::Command::Spawn {
            entity: meshwork_protocol::EntityId::new(a.author(), 1),
            primitive: meshwork_protocol::Primitive::Cube,
            transform: meshwork_protocol::Transform::IDENTITY,
        }],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    drop(c);
}

async fn metric(server: &ServerProcess, name_and_labels: &str) -> f64 {
    let body = http::get(server.http, "/metrics").await.unwrap().body;
    body.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// `--idle-timeout-s 2`: the server pings WebSocket clients; one that reads (and so answers the
/// pings) stays connected well past the idle time, one that never reads is dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_peer_that_answers_nothing_is_dropped_and_a_live_one_stays() {
    use futures_util::StreamExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(BIN, &data, &["--idle-timeout-s", "2"]);
    let ticket = server.ticket(BIN, &data, "editor");
    let session = ticket.invite.claimed_session().unwrap();
    let url = format!("ws://{}/api/v1/sessions/{session}/ws", server.http);

    let mut live = meshwork_testkit::ws::WsClient::connect(&url, ticket.invite.clone()).await;
    let (mut dead, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let started = Instant::now();
    let ws_gauge = "meshwork_clients_connected{transport=\"ws\"}";
    // The silent one goes; the live one keeps pumping all the while.
    let end = started + Duration::from_secs(20);
    while metric(
        &server,
        "meshwork_commands_rejected_total{reason=\"idle_timeout\"}",
    )
    .await
        < 1.0
    {
        assert!(
            Instant::now() < end,
            "the silent WebSocket was never dropped"
        );
        live.pump(Duration::from_millis(200)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "dropped before the idle time"
    );
    while started.elapsed() < Duration::from_secs(6) {
        live.pump(Duration::from_millis(200)).await;
    }
    assert_eq!(live.closed, None, "a client answering pings was closed");
    assert!(live.conn.replica().is_synced());
    assert_eq!(metric(&server, ws_gauge).await, 1.0);
    // The dropped socket reads its queued pings, then the end.
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), dead.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Ping(_)))) => {}
            Ok(
                None | Some(Err(_)) | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))),
            ) => break,
            other => panic!("the dropped socket is still open: {other:?}"),
        }
        assert!(Instant::now() < end);
    }
}
