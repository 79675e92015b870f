//! Presence on its own lane, with the real binary: relayed presence goes out as QUIC datagrams
//! and on the WebRTC `presence` channel, never on the log stream; and a client that stops
//! reading while another streams presence at 90 Hz is not closed for it (the server drops
//! presence for it instead of pushing back), and its log still arrives when it reads again.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::{Duration, Instant};

use meshwork_protocol::command::{Primitive, Transform};
use meshwork_protocol::wire::{Pose, Presence};
use meshwork_protocol::{Command, EntityId};
use meshwork_testkit::rtc::RtcClient;
use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::{Client, http, random_signer};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");
const WAIT: Duration = Duration::from_secs(20);

fn presence(seq: u32) -> Presence {
    Presence {
        seq,
        head: Some(Pose {
            position_mm: [i32::try_from(seq % 1000).unwrap(), 1700, 0],
            rotation: [0, 0, 0, 32767],
        }),
        hands: [None, None],
        cursor: None,
    }
}

async fn server_scene(server: &ServerProcess, token: &str) -> (u64, String) {
    http::Admin {
        addr: server.http,
        token: token.to_owned(),
    }
    .scene()
    .await
    .unwrap()
}

/// Takes whatever has arrived, without waiting.
async fn drain(c: &mut Client) {
    while c.next(Duration::ZERO).await.is_ok() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_goes_as_datagrams_and_a_client_that_stops_reading_is_not_closed_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A small outbox, so that a client whose stream is blocked fills it quickly.
    let server = ServerProcess::start(BIN, &data, &["--outbox-frames", "64"]);
    let token = server.admin_token().unwrap();
    let ticket = server.ticket(BIN, &data, "editor");

    let mut a = Client::join(&ticket, random_signer()).await.unwrap();
    let mut b = Client::join(&ticket, random_signer()).await.unwrap();
    // C's receive windows are 8 KiB: when it stops reading, its stream blocks after 8 KiB.
    let mut c = Client::join_with_window(&ticket, random_signer(), 8 * 1024)
        .await
        .unwrap();
    let cube = EntityId::new(b.author(), 1);
    b.submit_acked(
        vec![Command::Spawn {
            entity: cube,
            primitive: Primitive::Cube,
            transform: Transform::IDENTITY,
        }],
        WAIT,
    )
    .await
    .unwrap();
    let (spawned, _) = server_scene(&server, &token).await;
    c.catch_up(spawned, WAIT).await.unwrap();

    // C stops reading. For 4 s, A streams presence at 90 Hz (about 25 KiB: three times C's
    // window, had it gone on the stream) and B renames the cube 30 times with 250-byte names:
    // about 11 KiB of log, so C's stream blocks part-way and the server's outbox for C fills
    // with what follows. Presence must not take the room the log needs there.
    c.pause_reading();
    let mut tick = tokio::time::interval(Duration::from_micros(11_111));
    for seq in 1..=360u32 {
        tick.tick().await;
        a.send_presence(presence(seq)).unwrap();
        if seq % 12 == 0 {
            let letter = char::from(b'a' + u8::try_from(seq / 12 % 26).unwrap());
            b.submit(vec![Command::SetName {
                entity: cube,
                name: letter.to_string().repeat(250),
            }])
            .await
            .unwrap();
        }
        drain(&mut a).await;
        drain(&mut b).await;
    }
    let (position, hash) = {
        // Every rename accepted: the log C missed is complete.
        let end = Instant::now() + WAIT;
        loop {
            let (p, h) = server_scene(&server, &token).await;
            if p >= spawned + 30 {
                break (p, h);
            }
            assert!(Instant::now() < end, "the renames were not all accepted");
            drain(&mut b).await;
        }
    };
    assert_eq!(position, spawned + 30);

    // B read all along: the presence came as datagrams, never on the stream.
    assert!(b.seen.presence_by_datagram > 0, "no presence reached B");
    assert_eq!(
        b.seen.presence_on_stream, 0,
        "presence came on B's log stream"
    );

    // C reads again: it was not closed, and its log arrives whole.
    c.resume_reading();
    c.catch_up(position, WAIT).await.unwrap();
    assert!(c.seen.closed.is_none(), "{:?}", c.seen.closed);
    assert_eq!(hex::encode(c.replica().scene().state_hash()), hash);
    assert_eq!(
        c.seen.presence_on_stream, 0,
        "presence came on C's log stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_reaches_a_browser_peer_on_its_presence_channel_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(BIN, &data, &[]);
    let ticket = server.ticket(BIN, &data, "editor");
    let a = Client::join(&ticket, random_signer()).await.unwrap();
    let mut r = RtcClient::join_synced(server.http, &ticket.invite)
        .await
        .unwrap();
    // Presence is best effort: send until some arrives, with a deadline.
    let end = Instant::now() + WAIT;
    let mut seq = 0;
    while r.presence_received < 5 {
        assert!(Instant::now() < end, "no presence reached the WebRTC peer");
        seq += 1;
        a.send_presence(presence(seq)).unwrap();
        r.pump(Duration::from_millis(20)).await.unwrap();
    }
    assert_eq!(r.presence_on_log, 0, "presence came on the log channel");
}
