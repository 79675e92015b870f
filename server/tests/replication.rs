//! Replication over real QUIC with the real binary: three clients edit concurrently, a fourth
//! joins late from a snapshot, and every replica's encoded scene hashes to the server's. Presence
//! goes from one client to the others as datagrams.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::{Duration, Instant};

use glam::{Quat, Vec3};
use meshwork_protocol::command::{Primitive, Transform};
use meshwork_protocol::wire::{Pose, Presence, ServerMsg};
use meshwork_protocol::{Command, EntityId};
use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::{Client, http, random_signer};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");

async fn server_scene(server: &ServerProcess, token: &str) -> (u64, String) {
    http::Admin {
        addr: server.http,
        token: token.to_owned(),
    }
    .scene()
    .await
    .unwrap()
}

async fn catch_up(c: &mut Client, position: u64) {
    let end = Instant::now() + Duration::from_secs(20);
    while !(c.replica().is_synced() && c.replica().scene().position >= position) {
        assert!(
            Instant::now() < end,
            "replica stuck at {}",
            c.replica().scene().position
        );
        let _ = c.next(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_over_quic_converge_and_presence_flows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(BIN, &data, &[]);
    let token = server.admin_token().unwrap();
    let ticket = server.ticket(BIN, &data, "editor");

    let mut tasks = Vec::new();
    for k in 0..3u32 {
        let ticket = ticket.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::join(&ticket, random_signer()).await.unwrap();
            let me = c.author();
            for i in 0..40u32 {
                let e = EntityId::new(me, i % 6);
                let cmd = match (i + k) % 6 {
                    0 => Command::Spawn {
                        entity: e,
                        primitive: Primitive::Sphere,
                        transform: Transform::IDENTITY,
                    },
                    1 => Command::Translate {
                        entity: e,
                        delta: Vec3::new(0.1, 0.2, 0.3),
                    },
                    2 => Command::Rotate {
                        entity: e,
                        delta: Quat::from_rotation_x(0.2),
                    },
                    3 => Command::SetName {
                        entity: e,
                        name: format!("part {i}"),
                    },
                    4 => Command::Select { entities: vec![e] },
                    _ => Command::Scale {
                        entity: e,
                        factor: Vec3::splat(1.05),
                    },
                };
                c.submit(vec![cmd]).await.unwrap();
                let _ = c.next(Duration::from_millis(3)).await;
            }
            c
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    // Wait until every submit is answered (acked or refused), then compare every replica with
    // the server's scene at that position.
    let mut acked = 0u64;
    for c in &mut clients {
        c.until(Instant::now() + Duration::from_secs(20), |s| {
            s.acks.len() + s.refusals.len() >= 40
        })
        .await
        .unwrap();
        acked += c.seen.acks.len() as u64;
    }
    let (position, hash) = server_scene(&server, &token).await;
    assert_eq!(
        position, acked,
        "the scene holds exactly the acknowledged commands"
    );
    assert!(position > 0);
    for c in &mut clients {
        catch_up(c, position).await;
        assert_eq!(
            hex::encode(c.replica().scene().state_hash()),
            hash,
            "replica of {} differs",
            c.author()
        );
    }
    assert!(!clients[0].replica().scene().entities.is_empty());

    // A late joiner starts from a snapshot and lands on the same bytes.
    let mut late = Client::join(&ticket, random_signer()).await.unwrap();
    catch_up(&mut late, position).await;
    assert_eq!(
        late.replica().scene().encode(),
        clients[0].replica().scene().encode()
    );

    // Presence: a pose from one client reaches another as a datagram.
    let pose = Pose {
        position_mm: [10, 1700, -20],
        rotation: [0, 0, 0, 32767],
    };
    let from = clients[0].author();
    let end = Instant::now() + Duration::from_secs(10);
    let mut seq = 1;
    'wait: loop {
        assert!(Instant::now() < end, "presence never arrived");
        clients[0]
            .send_presence(Presence {
                seq,
                head: Some(pose),
                hands: [None, None],
                cursor: None,
            })
            .unwrap();
        seq += 1;
        while let Ok(msg) = late.next(Duration::from_millis(50)).await {
            if let ServerMsg::Presence(p) = msg
                && p.author == from
            {
                assert_eq!(p.presence.head, Some(pose));
                assert!(late.seen.presence_by_datagram > 0);
                assert_eq!(
                    late.seen.presence_on_stream, 0,
                    "presence on the log stream"
                );
                break 'wait;
            }
        }
    }
}
