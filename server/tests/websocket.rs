//! The WebSocket fallback with the real binary: a WebSocket client (the sans-IO
//! `ClientConnection` over tokio-tungstenite) and a QUIC client edit the same session
//! concurrently and end with the server's scene, byte for byte; bad input over the WebSocket is
//! refused with a close reason and a metric while the QUIC client keeps working.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::{Duration, Instant};

use futures_util::SinkExt as _;
use glam::Vec3;
use meshwork_protocol::codec::MAX_FRAME_BYTES;
use meshwork_protocol::command::{Primitive, Transform};
use meshwork_protocol::{Command, EntityId};
use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::ws::WsClient;
use meshwork_testkit::{Client, http, random_signer};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_quic_clients_share_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(BIN, &data, &[]);
    let token = server.admin_token().unwrap();
    let ticket = server.ticket(BIN, &data, "editor");
    let session = ticket.invite.claimed_session().unwrap();
    let url = format!("ws://{}/api/v1/sessions/{session}/ws", server.http);

    let mut ws = WsClient::connect(&url, ticket.invite.clone()).await;
    let end = Instant::now() + Duration::from_secs(10);
    while !ws.conn.replica().is_synced() {
        assert!(Instant::now() < end, "the WebSocket client never joined");
        ws.pump(Duration::from_millis(50)).await;
    }
    let mut quic = Client::join(&ticket, random_signer()).await.unwrap();

    // Both edit at once.
    let ws_author = ws.conn.author().unwrap();
    for i in 0..20u32 {
        let e = EntityId::new(ws_author, i % 3);
        let cmd = if i < 3 {
            Command::Spawn {
                entity: e,
                primitive: Primitive::Cube,
                transform: Transform::IDENTITY,
            }
        } else {
            Command::Translate {
                entity: e,
                delta: Vec3::new(0.1, 0.0, 0.0),
            }
        };
        ws.conn.submit(vec![cmd]).unwrap();
        let q = EntityId::new(quic.author(), i % 3);
        let qcmd = if i < 3 {
            Command::Spawn {
                entity: q,
                primitive: Primitive::Sphere,
                transform: Transform::IDENTITY,
            }
        } else {
            Command::Rotate {
                entity: q,
                delta: glam::Quat::from_rotation_y(0.1),
            }
        };
        quic.submit(vec![qcmd]).await.unwrap();
        ws.pump(Duration::from_millis(2)).await;
        let _ = quic.next(Duration::from_millis(1)).await;
    }
    quic.until(Instant::now() + Duration::from_secs(10), |s| {
        s.acks.len() + s.refusals.len() >= 20
    })
    .await
    .unwrap();
    let admin = http::Admin {
        addr: server.http,
        token: token.clone(),
    };
    let end = Instant::now() + Duration::from_secs(20);
    let (position, hash) = loop {
        let v = admin.sessions().await.unwrap();
        let (p, h) = (
            v[0]["scene_position"].as_u64().unwrap(),
            v[0]["scene_hash"].as_str().unwrap().to_owned(),
        );
        ws.pump(Duration::from_millis(20)).await;
        let _ = quic.next(Duration::from_millis(20)).await;
        if (p >= 40
            && ws.conn.replica().scene().position == p
            && quic.replica().scene().position == p)
            || Instant::now() > end
        {
            break (p, h);
        }
    };
    assert_eq!(position, 40, "all 40 commands made it");
    assert_eq!(
        hex::encode(ws.conn.replica().scene().state_hash()),
        hash,
        "WebSocket replica = server"
    );
    assert_eq!(
        hex::encode(quic.replica().scene().state_hash()),
        hash,
        "QUIC replica = server"
    );

    let metrics = http::get(server.http, "/metrics").await.unwrap().body;
    assert!(
        metrics.contains("meshwork_clients_connected{transport=\"ws\"} 1"),
        "{metrics}"
    );

    // Bad input over the WebSocket: an oversized frame header, then a text message.
    let mut bad = WsClient::connect(&url, ticket.invite.clone()).await;
    bad.ws
        .send(Message::Binary(
            u32::try_from(MAX_FRAME_BYTES + 1)
                .unwrap()
                .to_le_bytes()
                .to_vec()
                .into(),
        ))
        .await
        .unwrap();
    bad.pump(Duration::from_secs(5)).await;
    assert_eq!(bad.closed, Some(4002), "closed as a protocol violation");
    let mut junk = WsClient::connect(&url, ticket.invite.clone()).await;
    let mut frame = 48u32.to_le_bytes().to_vec();
    frame.extend((0..48u8).map(|i| i.wrapping_mul(53).wrapping_add(200)));
    junk.ws.send(Message::Binary(frame.into())).await.unwrap();
    junk.pump(Duration::from_secs(5)).await;
    assert_eq!(junk.closed, Some(4002), "binary junk: protocol violation");
    let mut text = WsClient::connect(&url, ticket.invite.clone()).await;
    text.ws.send(Message::Text("hello".into())).await.unwrap();
    text.pump(Duration::from_secs(5)).await;
    assert_eq!(text.closed, Some(4002));
    let metrics = http::get(server.http, "/metrics").await.unwrap().body;
    assert!(
        metrics.contains("meshwork_commands_rejected_total{reason=\"frame_too_large\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meshwork_commands_rejected_total{reason=\"undecodable\"} 1"),
        "{metrics}"
    );
    // An unknown session is refused with 404 instead of an upgrade.
    let missing = format!(
        "ws://{}/api/v1/sessions/00000000000000000000000000000000/ws",
        server.http
    );
    match tokio_tungstenite::connect_async(&missing).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 404),
        other => panic!("expected a 404, got {other:?}"),
    }
    // The QUIC client still works.
    let sent = quic
        .submit(vec![Command::Select { entities: vec![] }])
        .await
        .unwrap();
    let seq = sent[0].decode_body().unwrap().seq;
    quic.until(Instant::now() + Duration::from_secs(10), |s| {
        s.acks.contains_key(&seq)
    })
    .await
    .unwrap();
}
