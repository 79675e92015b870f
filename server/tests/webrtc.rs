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

    let mut a = RtcClient::join_synced(server.http, &ticket.invite)
        .await
        .expect("joined over WebRTC");
    assert!(
        a.offer_sdp.contains("a=candidate"),
        "the offer carried its candidates (non-trickle)"
    );
    let mut b = RtcClient::join_synced(server.http, &ticket.invite)
        .await
        .unwrap();

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

/// Polls `/metrics` until `name` reads `want` (or fails after 15 s with the text).
async fn wait_metric(http: std::net::SocketAddr, name: &str, want: f64) {
    wait_metric_where(http, name, |v| v == want).await;
}

async fn wait_metric_where(http: std::net::SocketAddr, name: &str, ok: impl Fn(f64) -> bool) {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let m = http::get(http, "/metrics").await.unwrap().body;
        if metric(&m, name).is_some_and(&ok) {
            return;
        }
        assert!(Instant::now() < end, "{name} never got there:\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_over_webrtc_gets_an_error_and_a_metric_and_no_stuck_peer() {
    use meshwork_protocol::codec::MAX_FRAME_BYTES;
    use meshwork_protocol::wire::CloseReason;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(BIN, &data, &[]);
    let ticket = server.ticket(BIN, &data, "editor");
    let session = ticket.invite.claimed_session().unwrap().to_string();
    let path = format!("/api/v1/sessions/{session}/rtc");
    let post = |body: String| {
        let path = path.clone();
        let addr = server.http;
        async move {
            http::request(
                addr,
                "POST",
                &path,
                &[("Content-Type", "application/json")],
                &body,
            )
            .await
            .unwrap()
        }
    };

    // Signaling: garbage SDP, not JSON, an answer instead of an offer, an unknown session.
    let garbage = post(r#"{"type":"offer","sdp":"v=0\r\nthis is not sdp"}"#.into()).await;
    assert_eq!(garbage.status, 400, "{}", garbage.body);
    assert!(
        garbage.body.contains("SDP offer was refused"),
        "{}",
        garbage.body
    );
    let junk = post("\u{1}\u{2} not json".into()).await;
    assert_eq!(junk.status, 400);
    assert!(junk.body.contains("expected JSON"), "{}", junk.body);
    let answer = post(r#"{"type":"answer","sdp":"v=0"}"#.into()).await;
    assert_eq!(answer.status, 400);
    let huge = post(format!(
        r#"{{"type":"offer","sdp":"{}"}}"#,
        "a".repeat(40_000)
    ))
    .await;
    assert_eq!(huge.status, 413, "{}", huge.body);
    let missing = http::request(
        server.http,
        "POST",
        "/api/v1/sessions/00000000000000000000000000000000/rtc",
        &[("Content-Type", "application/json")],
        r#"{"type":"offer","sdp":"v=0"}"#,
    )
    .await
    .unwrap();
    assert_eq!(missing.status, 404);
    let m = http::get(server.http, "/metrics").await.unwrap().body;
    assert_eq!(
        metric(
            &m,
            "meshwork_rtc_signaling_errors_total{reason=\"bad_sdp\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert!(
        metric(
            &m,
            "meshwork_rtc_signaling_errors_total{reason=\"bad_request\"}"
        )
        .unwrap()
            >= 2.0
    );

    // UDP junk at the shared port from a stranger: dropped and counted.
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..50u8 {
        stranger.send_to(&[i; 200], server.rtc).await.unwrap();
    }
    wait_metric_where(
        server.http,
        "meshwork_rtc_datagrams_dropped_total{reason=\"unknown_peer\"}",
        |v| v >= 50.0,
    )
    .await;

    // Data channel: an oversized frame header, binary junk in a frame, and a text message.
    let options = RtcOptions::default();
    let join = || {
        RtcClient::join(
            server.http,
            &options,
            random_signer(),
            ticket.invite.clone(),
        )
    };
    let mut oversized = join().await.unwrap();
    oversized
        .send_raw(&u32::try_from(MAX_FRAME_BYTES + 1).unwrap().to_le_bytes())
        .await
        .unwrap();
    assert!(
        oversized
            .pump_until(Duration::from_secs(10), |c| c.closed)
            .await
            .unwrap(),
        "closed"
    );
    assert!(
        oversized
            .close_frames
            .contains(&CloseReason::ProtocolViolation),
        "{:?}",
        oversized.close_frames
    );

    let mut junk = join().await.unwrap();
    let mut frame = 64u32.to_le_bytes().to_vec();
    frame.extend((0..64u8).map(|i| i.wrapping_mul(37)));
    junk.send_raw(&frame).await.unwrap();
    assert!(
        junk.pump_until(Duration::from_secs(10), |c| c.closed)
            .await
            .unwrap(),
        "closed"
    );
    assert!(
        junk.close_frames.contains(&CloseReason::ProtocolViolation),
        "{:?}",
        junk.close_frames
    );

    let mut text = join().await.unwrap();
    text.log.send_text("hello").await.unwrap();
    assert!(
        text.pump_until(Duration::from_secs(10), |c| c.closed)
            .await
            .unwrap(),
        "closed"
    );

    let m = http::get(server.http, "/metrics").await.unwrap().body;
    assert_eq!(
        metric(
            &m,
            "meshwork_commands_rejected_total{reason=\"frame_too_large\"}"
        ),
        Some(1.0),
        "{m}"
    );
    // None of them is left holding server resources.
    wait_metric(server.http, "meshwork_rtc_peers", 0.0).await;
    wait_metric(
        server.http,
        "meshwork_clients_connected{transport=\"webrtc\"}",
        0.0,
    )
    .await;

    // And the server still serves WebRTC.
    RtcClient::join_synced(server.http, &ticket.invite)
        .await
        .expect("a new peer joins after the bad ones");
    let healthz = http::get(server.http, "/healthz").await.unwrap();
    assert_eq!(healthz.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_webrtc_and_websocket_clients_edit_one_session_and_converge() {
    use meshwork_testkit::Client;
    use meshwork_testkit::ws::WsClient;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(BIN, &data, &[]);
    let token = server.admin_token().unwrap();
    let ticket = server.ticket(BIN, &data, "editor");
    let session = ticket.invite.claimed_session().unwrap();
    let url = format!("ws://{}/api/v1/sessions/{session}/ws", server.http);

    let mut rtc = RtcClient::join(
        server.http,
        &RtcOptions::default(),
        random_signer(),
        ticket.invite.clone(),
    )
    .await
    .unwrap();
    let mut ws = WsClient::connect(&url, ticket.invite.clone()).await;
    let mut quic = Client::join(&ticket, random_signer()).await.unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while !(ws.conn.replica().is_synced() && rtc.conn.replica().is_synced()) {
        assert!(
            Instant::now() < end,
            "the browser-transport clients never joined"
        );
        ws.pump(Duration::from_millis(20)).await;
        rtc.pump(Duration::from_millis(20)).await.unwrap();
    }

    // All three edit at once, including the same entity (last-write-wins on its color).
    let shared = EntityId::new(quic.author(), 0);
    quic.submit(vec![Command::Spawn {
        entity: shared,
        primitive: Primitive::Cube,
        transform: Transform::IDENTITY,
    }])
    .await
    .unwrap();
    let (ra, wa) = (rtc.conn.author().unwrap(), ws.conn.author().unwrap());
    const ROUNDS: u32 = 20;
    for i in 0..ROUNDS {
        let color = |k: f32| Command::SetColor {
            entity: shared,
            rgba: glam::Vec4::new(k, 0.5, 0.5, 1.0),
        };
        if i < 2 {
            rtc.conn
                .submit(vec![Command::Spawn {
                    entity: EntityId::new(ra, i),
                    primitive: Primitive::Sphere,
                    transform: Transform::IDENTITY,
                }])
                .unwrap();
            ws.conn
                .submit(vec![Command::Spawn {
                    entity: EntityId::new(wa, i),
                    primitive: Primitive::Pyramid,
                    transform: Transform::IDENTITY,
                }])
                .unwrap();
        } else {
            rtc.conn
                .submit(vec![
                    Command::Translate {
                        entity: EntityId::new(ra, i % 2),
                        delta: Vec3::X,
                    },
                    color(0.1),
                ])
                .unwrap();
            ws.conn
                .submit(vec![
                    Command::Translate {
                        entity: EntityId::new(wa, i % 2),
                        delta: Vec3::Y,
                    },
                    color(0.2),
                ])
                .unwrap();
        }
        quic.submit(vec![Command::Rotate {
            entity: shared,
            delta: glam::Quat::from_rotation_y(0.05),
        }])
        .await
        .unwrap();
        rtc.pump(Duration::from_millis(2)).await.unwrap();
        ws.pump(Duration::from_millis(2)).await;
        let _ = quic.next(Duration::from_millis(1)).await;
    }
    let admin = http::Admin {
        addr: server.http,
        token,
    };
    let end = Instant::now() + Duration::from_secs(20);
    let hash = loop {
        let v = admin.sessions().await.unwrap();
        let (p, h) = (
            v[0]["scene_position"].as_u64().unwrap(),
            v[0]["scene_hash"].as_str().unwrap().to_owned(),
        );
        rtc.pump(Duration::from_millis(20)).await.unwrap();
        ws.pump(Duration::from_millis(20)).await;
        let _ = quic.next(Duration::from_millis(20)).await;
        let all_at = |q: u64| {
            rtc.conn.replica().scene().position == q
                && ws.conn.replica().scene().position == q
                && quic.replica().scene().position == q
        };
        if p > 0 && all_at(p) {
            break h;
        }
        assert!(
            Instant::now() < end,
            "clients did not catch up with position {p}"
        );
    };
    for (name, replica_hash) in [
        ("WebRTC", rtc.conn.replica().scene().state_hash()),
        ("WebSocket", ws.conn.replica().scene().state_hash()),
        ("QUIC", quic.replica().scene().state_hash()),
    ] {
        assert_eq!(hex::encode(replica_hash), hash, "{name} replica = server");
    }
    let m = http::get(server.http, "/metrics").await.unwrap().body;
    for t in ["quic", "webrtc", "ws"] {
        assert_eq!(
            metric(
                &m,
                &format!("meshwork_clients_connected{{transport=\"{t}\"}}")
            ),
            Some(1.0),
            "{t}: {m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_signals_but_never_connects_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(
        BIN,
        &data,
        &["--rtc-connect-timeout-s", "1", "--rtc-max-peers", "2"],
    );
    let ticket = server.ticket(BIN, &data, "editor");
    let session = ticket.invite.claimed_session().unwrap().to_string();
    // Offers get answers, but the answers are never applied: nothing ever opens. The third
    // finds the limit held while the first two linger...
    let mut abandoned = Vec::new();
    for want in [200, 200, 503] {
        let c = RtcClient::prepare(
            &RtcOptions::default(),
            random_signer(),
            ticket.invite.clone(),
        )
        .await
        .unwrap();
        let r = c.offer(server.http, &session).await.unwrap();
        assert_eq!(r.status, want, "{}", r.body);
        abandoned.push(c);
    }
    // ...and the connect deadline frees them.
    wait_metric(server.http, "meshwork_rtc_peers", 0.0).await;
    let m = http::get(server.http, "/metrics").await.unwrap().body;
    assert_eq!(
        metric(
            &m,
            "meshwork_rtc_signaling_errors_total{reason=\"too_many_peers\"}"
        ),
        Some(1.0)
    );
    RtcClient::join_synced(server.http, &ticket.invite)
        .await
        .expect("room again once they are gone");
    for c in abandoned {
        c.close().await;
    }
}
