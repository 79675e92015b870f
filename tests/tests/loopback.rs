//! The server over real QUIC sockets on 127.0.0.1:0: joins, concurrent editing, and every kind
//! of bad input refused with its reason while the others keep being served.
#![allow(
    clippy::unwrap_used,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::time::Duration;

use common::{TestServer, deadline, now_ms};
use glam::Vec3;
use meshwork_protocol::codec::MAX_FRAME_BYTES;
use meshwork_protocol::wire::{CloseReason, JoinRefusal, RefusalCode, ServerMsg};
use meshwork_protocol::{Command, EntityId, Role};
use meshwork_testkit::{Client, ClientError, http, random_signer};

fn mv(client: &Client, i: u32) -> Command {
    Command::Translate {
        entity: EntityId::new(client.author(), i % 4),
        delta: Vec3::new(0.1, 0.0, 0.0),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_edit_concurrently_and_end_with_identical_logs() {
    let t = TestServer::start().await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(
            Client::join(&t.ticket(Role::Editor), random_signer())
                .await
                .unwrap(),
        );
    }
    let authors: Vec<_> = clients.iter().map(Client::author).collect();
    assert_eq!(authors.len(), 3);
    assert!(authors[0] != authors[1] && authors[1] != authors[2] && authors[0] != authors[2]);

    const PER_CLIENT: u64 = 60;
    let total = PER_CLIENT as usize * clients.len();
    let mut tasks = Vec::new();
    for mut c in clients {
        tasks.push(tokio::spawn(async move {
            // Each client first spawns the 4 entities it then moves.
            let spawns: Vec<Command> = (0..4)
                .map(|k| Command::Spawn {
                    entity: EntityId::new(c.author(), k),
                    primitive: meshwork_protocol::Primitive::Cube,
                    transform: meshwork_protocol::Transform::IDENTITY,
                })
                .collect();
            c.submit(spawns).await.unwrap();
            let (mut sent, mut i) = (4u64, 0u32);
            while sent < PER_CLIENT {
                // Mix single submits and small batches, and read while writing.
                let n = u64::from(1 + i % 3).min(PER_CLIENT - sent);
                let batch: Vec<Command> = (0..n as u32).map(|k| mv(&c, i + k)).collect();
                c.submit(batch).await.unwrap();
                sent += n;
                i += 1;
                let _ = c.next(Duration::from_millis(1)).await;
            }
            c
        }));
    }
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.unwrap());
    }
    for c in &mut clients {
        c.until(deadline(20), |s| s.entries.len() >= total)
            .await
            .unwrap();
    }
    // Every client holds the same entries, byte for byte, in the same total order.
    let reference: Vec<_> = clients[0].seen.entries.iter().collect();
    for c in &clients[1..] {
        let other: Vec<_> = c.seen.entries.iter().collect();
        assert_eq!(other, reference, "client logs differ");
    }
    assert_eq!(
        reference.len(),
        total,
        "every command is in every client's log"
    );
    let info = t.server.ctx.router.route(None).info().await.unwrap();
    assert_eq!(info.log_entries, total, "and in the server's");
    // Every replica's scene is the server's, byte for byte (same canonical hash).
    for c in &mut clients {
        let end = deadline(20);
        while c.replica().scene().position < total as u64 {
            assert!(
                std::time::Instant::now() < end,
                "replica stuck at {}",
                c.replica().scene().position
            );
            let _ = c.next(Duration::from_millis(100)).await;
        }
        let hash: String = c
            .replica()
            .scene()
            .state_hash()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hash, info.scene_hash, "replica of {} differs", c.author());
        assert_eq!(
            c.replica().scene().entities.len(),
            3 * 4,
            "every client spawned 4 entities"
        );
    }
    // Every own entry was acknowledged; none refused (they only touch their own entities).
    for c in &clients {
        assert!(c.seen.refusals.is_empty(), "{:?}", c.seen.refusals);
        let own = c
            .seen
            .entries
            .keys()
            .filter(|id| id.author == c.author())
            .count();
        assert_eq!(c.seen.acks.len(), own);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_its_reason_and_the_others_keep_working() {
    let t = TestServer::start().await;
    let mut editor = Client::join(&t.ticket(Role::Editor), random_signer())
        .await
        .unwrap();
    let mut viewer = Client::join(&t.ticket(Role::Viewer), random_signer())
        .await
        .unwrap();
    assert_eq!(viewer.role(), Role::Viewer);

    // A viewer's edit.
    let cmd = mv(&viewer, 1);
    viewer.submit(vec![cmd]).await.unwrap();
    viewer
        .until(deadline(10), |s| !s.refusals.is_empty())
        .await
        .unwrap();
    assert_eq!(viewer.seen.refusals[0].code, RefusalCode::Permission);
    assert!(
        viewer.seen.refusals[0].message.contains("permission"),
        "{}",
        viewer.seen.refusals[0].message
    );

    // A forged signature.
    let mut forged = editor.sign(mv(&editor, 1));
    forged.signature.0[7] ^= 0x40;
    editor.submit_signed(vec![forged]).await.unwrap();
    editor
        .until(deadline(10), |s| !s.refusals.is_empty())
        .await
        .unwrap();
    assert_eq!(editor.seen.refusals[0].code, RefusalCode::BadSignature);

    // A replayed sequence number: an accepted entry, then another entry reusing its seq.
    let accepted = editor.submit(vec![mv(&editor, 2)]).await.unwrap();
    let seq = accepted[0].decode_body().unwrap().seq;
    editor
        .until(deadline(10), |s| s.acks.contains_key(&seq))
        .await
        .unwrap();
    let mut body = editor.sign(mv(&editor, 3)).decode_body().unwrap();
    body.seq = seq;
    let replay = editor.sign_body(&body);
    editor.submit_signed(vec![replay]).await.unwrap();
    editor
        .until(deadline(10), |s| s.refusals.len() >= 2)
        .await
        .unwrap();
    assert_eq!(editor.seen.refusals[1].code, RefusalCode::Replay);
    assert_eq!(editor.seen.refusals[1].seq, seq);

    // An expired invite.
    let expired = t.server.ticket(Role::Editor, now_ms() - 1).unwrap();
    match Client::join(&expired, random_signer()).await {
        Err(ClientError::Refused(r)) => {
            assert_eq!(r.reason, JoinRefusal::InviteExpired);
            assert!(r.message.contains("expired"), "{}", r.message);
        }
        other => panic!("expected an expired-invite refusal, got {other:?}"),
    }

    // A wrong protocol version: a client of version 1, from before entries were bound.
    match Client::join_as(&t.ticket(Role::Editor), random_signer(), 1).await {
        Err(ClientError::Refused(r)) => {
            assert!(
                matches!(r.reason, JoinRefusal::UnsupportedVersion { ref supported } if supported == &[2])
            );
            assert!(r.message.contains("version 2"), "{}", r.message);
        }
        other => panic!("expected a version refusal, got {other:?}"),
    }

    // An oversized frame: the header alone gets the connection closed with a reason.
    let mut rogue = Client::join(&t.ticket(Role::Editor), random_signer())
        .await
        .unwrap();
    let header = u32::try_from(MAX_FRAME_BYTES + 1).unwrap().to_le_bytes();
    rogue.send_raw(&header).await.unwrap();
    let closed = loop {
        match rogue.next(Duration::from_secs(10)).await {
            Ok(ServerMsg::Close(c)) => break c,
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got {e:?}"),
        }
    };
    assert_eq!(closed.reason, CloseReason::ProtocolViolation);
    assert!(closed.message.contains("exceeds"), "{}", closed.message);

    // Binary junk inside a well-formed frame: closed as undecodable.
    let mut junk = Client::join(&t.ticket(Role::Editor), random_signer())
        .await
        .unwrap();
    let mut frame = 48u32.to_le_bytes().to_vec();
    frame.extend((0..48u8).map(|i| i.wrapping_mul(53).wrapping_add(200)));
    junk.send_raw(&frame).await.unwrap();
    let closed = loop {
        match junk.next(Duration::from_secs(10)).await {
            Ok(ServerMsg::Close(c)) => break c,
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got {e:?}"),
        }
    };
    assert_eq!(closed.reason, CloseReason::ProtocolViolation);

    // Each refusal is counted by reason.
    common::eventually("metrics", 10, || {
        t.rejected("permission") == 1
            && t.rejected("bad_signature") == 1
            && t.rejected("replay") == 1
            && t.rejected("invite_expired") == 1
            && t.rejected("unsupported_version") == 1
            && t.rejected("frame_too_large") == 1
            && t.rejected("undecodable") == 1
    })
    .await;

    // The server kept serving everyone else.
    let ok = editor.submit(vec![mv(&editor, 5)]).await.unwrap();
    let seq = ok[0].decode_body().unwrap().seq;
    editor
        .until(deadline(10), |s| s.acks.contains_key(&seq))
        .await
        .unwrap();
    viewer
        .until(deadline(10), |s| s.entries.len() >= 2)
        .await
        .unwrap();
    let health = http::get(t.server.http_addr, "/healthz").await.unwrap();
    assert_eq!(health.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_creates_sessions_and_invites_that_clients_can_use() {
    let t = TestServer::start().await;
    let addr = t.server.http_addr;
    let info = http::get(addr, "/api/v1/server").await.unwrap();
    assert_eq!(info.status, 200);
    let info: serde_json::Value = serde_json::from_str(&info.body).unwrap();
    assert_eq!(
        info["protocol_version"],
        meshwork_protocol::PROTOCOL_VERSION
    );
    assert_eq!(info["quic_addr"], t.server.quic_addr.to_string());
    assert_eq!(info["cert_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(http::get(addr, "/readyz").await.unwrap().status, 200);

    // Admin endpoints need the token.
    let anonymous = http::request(addr, "POST", "/api/v1/sessions", &[], "{\"name\":\"x\"}")
        .await
        .unwrap();
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.body.contains("Bearer"), "{}", anonymous.body);
    let wrong = [
        ("Authorization", "Bearer nope"),
        ("Content-Type", "application/json"),
    ];
    assert_eq!(
        http::request(addr, "POST", "/api/v1/sessions", &wrong, "{\"name\":\"x\"}")
            .await
            .unwrap()
            .status,
        403
    );

    let bearer = format!("Bearer {}", t.admin_token);
    let auth = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    let created = http::request(
        addr,
        "POST",
        "/api/v1/sessions",
        &auth,
        "{\"name\":\"Review\"}",
    )
    .await
    .unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    let id = serde_json::from_str::<serde_json::Value>(&created.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let bad_role = http::request(
        addr,
        "POST",
        &format!("/api/v1/sessions/{id}/invites"),
        &auth,
        "{\"role\":\"king\"}",
    )
    .await
    .unwrap();
    assert!(
        bad_role.status >= 400 && bad_role.status < 500,
        "{bad_role:?}"
    );
    let invite = http::request(
        addr,
        "POST",
        &format!("/api/v1/sessions/{id}/invites"),
        &auth,
        "{\"role\":\"viewer\",\"ttl_s\":60}",
    )
    .await
    .unwrap();
    assert_eq!(invite.status, 201, "{}", invite.body);
    let text = serde_json::from_str::<serde_json::Value>(&invite.body).unwrap()["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let ticket = meshwork_protocol::wire::JoinTicket::from_text(&text).unwrap();
    let c = Client::join(&ticket, random_signer()).await.unwrap();
    assert_eq!(c.role(), Role::Viewer);
    assert_eq!(
        c.welcome.session.to_string(),
        id,
        "joined the new session, not the default one"
    );

    let list = http::request(addr, "GET", "/api/v1/sessions", &auth, "")
        .await
        .unwrap();
    assert_eq!(list.status, 200);
    let list: serde_json::Value = serde_json::from_str(&list.body).unwrap();
    let review = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .unwrap();
    assert_eq!(review["clients"], 1);
    let missing = http::request(
        addr,
        "POST",
        "/api/v1/sessions/00000000000000000000000000000000/invites",
        &auth,
        "{\"role\":\"viewer\"}",
    )
    .await
    .unwrap();
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("error"));
}

/// Over real QUIC: a client holding ±10 m around the origin (`Hold` before its proof) gets the
/// held part as its snapshot, follows edits inside and entities crossing the edge, never gets
/// the far edits, and after moving its region holds what is there within a deadline; its
/// replica always equals the server's scene (the whole replica of another client, at the
/// server's hash) restricted to its region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holding_a_region_gets_only_that_and_follows_its_moves() {
    use meshwork_protocol::interest::{Region, point_mm};
    use meshwork_protocol::scene::Scene;
    use meshwork_protocol::{Primitive, Transform};

    fn holds(whole: &Scene, part: &Scene, region: &Region) -> bool {
        let inside = whole
            .entities
            .iter()
            .filter(|(_, e)| region.contains(point_mm(e.transform.translation)))
            .map(|(id, _)| *id)
            .collect();
        *part == whole.held_copy(&inside, part.position, part.lamport)
    }

    let t = TestServer::start().await;
    let mut a = Client::join(&t.ticket(Role::Editor), random_signer())
        .await
        .unwrap();
    let me = a.author();
    let spawn = |k: u32, x: f32| Command::Spawn {
        entity: EntityId::new(me, k),
        primitive: Primitive::Cube,
        transform: Transform {
            translation: Vec3::new(x, 0.0, 0.0),
            ..Transform::IDENTITY
        },
    };
    let wait = Duration::from_secs(10);
    a.submit_acked(
        vec![
            spawn(1, 0.0),
            spawn(2, 3.0),
            spawn(3, 100.0),
            spawn(4, 104.0),
            spawn(5, 500.0),
        ],
        wait,
    )
    .await
    .unwrap();
    let here = Region::around(Vec3::ZERO, 10.0);
    let mut b = Client::join_holding(&t.ticket(Role::Editor), random_signer(), here)
        .await
        .unwrap();
    // Whatever `b` has read so far, keep reading until `done` holds.
    async fn read_until(c: &mut Client, done: impl Fn(&Client) -> bool) {
        let end = deadline(10);
        while !done(c) {
            assert!(std::time::Instant::now() < end, "timed out");
            match c.next(Duration::from_millis(50)).await {
                Ok(_) | Err(ClientError::Timeout) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
    }
    read_until(&mut b, |b| {
        b.replica().is_synced() && b.replica().scene().entities.len() == 2
    })
    .await;
    let hash = a.caught_up_to(5, deadline(10)).await.unwrap();
    assert_eq!(hash, a.replica().scene().state_hash());
    assert!(holds(a.replica().scene(), b.replica().scene(), &here));

    // Far edits, an entity leaving, one arriving.
    let far = Command::Translate {
        entity: EntityId::new(me, 5),
        delta: Vec3::Y,
    };
    let out = Command::Translate {
        entity: EntityId::new(me, 2),
        delta: Vec3::new(50.0, 0.0, 0.0),
    };
    let back = Command::Translate {
        entity: EntityId::new(me, 3),
        delta: Vec3::new(-95.0, 0.0, 0.0),
    };
    a.submit_acked(vec![far.clone(), far, out, back], wait)
        .await
        .unwrap();
    let position = a.replica().scene().position + 4;
    a.caught_up_to(position, deadline(10)).await.unwrap();
    let whole = a.replica().scene().clone();
    read_until(&mut b, |b| holds(&whole, b.replica().scene(), &here)).await;
    let names = |c: &Client| -> Vec<u32> {
        c.replica()
            .scene()
            .entities
            .keys()
            .map(|e| e.counter())
            .collect()
    };
    assert_eq!(names(&b), vec![1, 3]);
    let far_entries = b
        .seen
        .entries
        .values()
        .filter_map(|e| e.decode_body().ok())
        .filter(|body| {
            matches!(body.command, Command::Translate { entity, .. } if entity == EntityId::new(me, 5))
        })
        .count();
    assert_eq!(
        far_entries, 0,
        "a far edit never reaches a client that does not hold it"
    );

    // B moves its region: what is there arrives.
    let there = Region::around(Vec3::new(100.0, 0.0, 0.0), 10.0);
    b.hold(Some(there)).await.unwrap();
    read_until(&mut b, |b| holds(&whole, b.replica().scene(), &there)).await;
    assert_eq!(names(&b), vec![4]);
    assert!(
        b.seen.resync_reasons.is_empty(),
        "{:?}",
        b.seen.resync_reasons
    );
}
