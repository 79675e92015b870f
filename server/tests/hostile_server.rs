//! Every replica is a verifier: a hostile server, speaking the real protocol over real QUIC on
//! loopback, injects a forged entry, an entry by a key the roster does not hold, an unsigned
//! delta and a delta sealed by the wrong key. The real client (the testkit's, driving the
//! protocol's `ClientConnection`) refuses each one, applies nothing of it, asks for a resync and
//! says why; the honest updates around them apply, and the replica ends at the scene the
//! server's honest frames describe. The same frames fed to the wasm package's `Connection` under
//! Node give the same refusals (ignored here; run by `cargo xtask ci`, wasm step).
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::net::UdpSocket;
use std::time::Duration;

use meshwork_protocol::codec::FrameReader;
use meshwork_protocol::command::{Primitive, Transform};
use meshwork_protocol::replica::ResyncReason;
use meshwork_protocol::scene::{Scene, Touched};
use meshwork_protocol::wire::{
    Challenge, EncodedDelta, Entries, Invite, InviteBody, JoinTicket, Member, Roster, SealedDelta,
    StateHash, Welcome,
};
use meshwork_protocol::{
    AuthorId, ClientMsg, Command, Domain, Ed25519Signer, EntityId, EntryBody, Role, ServerMsg,
    SessionId, SignedEntry, Signer as _, to_frame,
};
use sha2::Digest as _;
use tokio::io::AsyncWriteExt as _;

const SESSION: SessionId = SessionId([0x4b; 16]);

fn server_key() -> Ed25519Signer {
    Ed25519Signer::from_seed([0x5e; 32])
}

fn client_key() -> Ed25519Signer {
    Ed25519Signer::from_seed([0xc1; 32])
}

/// Author 2: an honest member whose entries the server relays.
fn other_key() -> Ed25519Signer {
    Ed25519Signer::from_seed([0x02; 32])
}

fn invite() -> Invite {
    Invite::mint(
        &InviteBody {
            domain: Domain::Invite,
            session: SESSION,
            role: Role::Editor,
            expires_at_ms: u64::MAX,
            invite_id: [9; 16],
        },
        &server_key(),
    )
    .unwrap()
}

fn entry(signer: &Ed25519Signer, author: u32, seq: u64, command: Command) -> SignedEntry {
    let body = EntryBody::new(
        SESSION,
        AuthorId(author),
        signer.public_key().key_id(),
        seq,
        seq,
        seq.saturating_sub(1),
        command,
    );
    SignedEntry::sign(&body, signer).unwrap()
}

fn spawn(author: u32, counter: u32) -> Command {
    Command::Spawn {
        entity: EntityId::new(AuthorId(author), counter),
        primitive: Primitive::Cube,
        transform: Transform::IDENTITY,
    }
}

fn roster() -> ServerMsg {
    ServerMsg::Roster(Roster {
        session: SESSION,
        server_key: server_key().public_key(),
        replace: true,
        members: vec![
            Member {
                author: AuthorId(1),
                public_key: client_key().public_key(),
                role: Role::Editor,
            },
            Member {
                author: AuthorId(2),
                public_key: other_key().public_key(),
                role: Role::Editor,
            },
        ],
    })
}

/// The roster and a snapshot of `scene`: the answer to a join or a resync.
fn resync_answer(scene: &Scene) -> Vec<ServerMsg> {
    let (manifest, chunks) = meshwork_protocol::replica::snapshot(scene);
    let mut out = vec![roster(), ServerMsg::Snapshot(manifest)];
    out.extend(chunks.into_iter().map(ServerMsg::SnapshotChunk));
    out
}

/// What the hostile server sends, in acts: the join answer, then per attack its frames (each
/// answered by a resync, whose answer opens the next act), then an honest sealed delta and the
/// state hash. Returns the acts, the reason each attack must be refused for, and the scene the
/// honest frames lead to.
fn script() -> (Vec<Vec<ServerMsg>>, Vec<ResyncReason>, Scene) {
    let mut scene = Scene::new();
    let honest = entry(&other_key(), 2, 1, spawn(2, 1));
    let body = honest.decode_body().unwrap();
    scene.apply(body.id(), body.author, &body.command);

    let mut join = vec![ServerMsg::Welcome(Welcome {
        session: SESSION,
        author: AuthorId(1),
        role: Role::Editor,
        next_seq: 1,
        log_position: 0,
        presence_tick_ms: 22,
    })];
    join.extend(resync_answer(&Scene::new()));
    join.push(ServerMsg::Entries(Entries {
        entries: vec![honest],
    }));

    // Author 2's second spawn, signed by a key that is not theirs but naming their key id.
    let mut forged = entry(&other_key(), 2, 2, spawn(2, 2));
    forged.signature = entry(&Ed25519Signer::from_seed([0x66; 32]), 2, 2, spawn(2, 2)).signature;
    // A well-signed entry by a key the roster does not hold.
    let stranger = entry(&Ed25519Signer::from_seed([0x33; 32]), 3, 1, spawn(3, 1));
    // A delta that would delete the honest cube: unsealed, then sealed by another key.
    let mut emptied = scene.clone();
    emptied.entities.clear();
    emptied.position = emptied.position.saturating_add(1);
    let touched = [Touched::Entity(EntityId::new(AuthorId(2), 1))]
        .into_iter()
        .collect();
    let delta = emptied.delta(scene.position, &touched);
    let unsealed = ServerMsg::Delta(EncodedDelta {
        bytes: postcard::to_allocvec(&delta).unwrap(),
    });
    let badly_sealed = ServerMsg::SealedDelta(SealedDelta::seal(
        SESSION,
        &delta,
        emptied.state_hash(),
        &Ed25519Signer::from_seed([0x66; 32]),
    ));

    // The honest end: author 2 renames themself and spawns again, sent as a sealed delta.
    let before = scene.position;
    for (seq, command) in [
        (2, Command::SetDisplayName { name: "Bea".into() }),
        (3, spawn(2, 3)),
    ] {
        let e = entry(&other_key(), 2, seq, command);
        let b = e.decode_body().unwrap();
        scene.apply(b.id(), b.author, &b.command);
    }
    let touched = [
        Touched::Author(AuthorId(2)),
        Touched::Entity(EntityId::new(AuthorId(2), 3)),
    ]
    .into_iter()
    .collect();
    let good = SealedDelta::seal(
        SESSION,
        &scene.delta(before, &touched),
        scene.state_hash(),
        &server_key(),
    );
    let mut end = vec![ServerMsg::SealedDelta(good)];
    end.push(ServerMsg::StateHash(StateHash {
        position: scene.position,
        state_hash: scene.state_hash(),
    }));

    let attacks = vec![
        vec![ServerMsg::Entries(Entries {
            entries: vec![forged],
        })],
        vec![ServerMsg::Entries(Entries {
            entries: vec![stranger],
        })],
        vec![unsealed],
        vec![badly_sealed],
    ];
    let reasons = vec![
        ResyncReason::ForgedEntry,
        ResyncReason::UnknownAuthor,
        ResyncReason::UnsignedDelta,
        ResyncReason::BadSeal,
    ];
    // Join, then per attack: its frames, then (after the client's resync) the honest snapshot.
    let mut acts = vec![join];
    let at_one = {
        let mut s = Scene::new();
        let b = entry(&other_key(), 2, 1, spawn(2, 1))
            .decode_body()
            .unwrap();
        s.apply(b.id(), b.author, &b.command);
        s
    };
    for attack in attacks {
        acts.push(attack);
        acts.push(resync_answer(&at_one));
    }
    acts.push(end);
    (acts, reasons, scene)
}

async fn write(send: &mut quinn::SendStream, msgs: &[ServerMsg]) {
    for m in msgs {
        send.write_all(&to_frame(m).unwrap()).await.unwrap();
    }
}

/// Reads client frames until one matches `want`.
async fn read_until(
    recv: &mut quinn::RecvStream,
    reader: &mut FrameReader,
    want: impl Fn(&ClientMsg) -> bool,
) -> ClientMsg {
    loop {
        while let Some(msg) = reader.next_msg::<ClientMsg>().unwrap() {
            if want(&msg) {
                return msg;
            }
        }
        let mut buf = [0u8; 4096];
        let n = recv
            .read(&mut buf)
            .await
            .unwrap()
            .expect("the client keeps the stream open");
        reader.push(&buf[..n]).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_servers_forgeries_are_refused_by_the_replica_with_the_reason() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = certified.cert.der().to_vec();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let endpoint = meshwork_server::quic::endpoint(
        socket,
        &cert,
        &certified.signing_key.serialize_der(),
        Duration::from_secs(30),
    )
    .unwrap();
    let (acts, reasons, honest_end) = script();
    let attacks = reasons.len();

    let server = tokio::spawn(async move {
        let conn = endpoint.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let mut reader = FrameReader::new();
        read_until(&mut recv, &mut reader, |m| matches!(m, ClientMsg::Hello(_))).await;
        write(
            &mut send,
            &[ServerMsg::Challenge(Challenge {
                nonce: [1; 32],
                server_build_id: "hostile".into(),
            })],
        )
        .await;
        read_until(&mut recv, &mut reader, |m| {
            matches!(m, ClientMsg::JoinProof(_))
        })
        .await;
        let mut acts = acts.into_iter();
        write(&mut send, &acts.next().unwrap()).await;
        let mut resyncs = 0;
        for _ in 0..attacks {
            write(&mut send, &acts.next().unwrap()).await;
            // The client must answer the attack with a resync before it gets the snapshot.
            read_until(&mut recv, &mut reader, |m| {
                matches!(m, ClientMsg::Resync(_))
            })
            .await;
            resyncs += 1;
            write(&mut send, &acts.next().unwrap()).await;
        }
        write(&mut send, &acts.next().unwrap()).await;
        send.flush().await.unwrap();
        // Hold the connection until the client is done reading.
        conn.closed().await;
        resyncs
    });

    let ticket = JoinTicket {
        quic_addr: addr.to_string(),
        cert_sha256: sha2::Sha256::digest(&cert).into(),
        invite: invite(),
    };
    let mut client = meshwork_testkit::Client::join(&ticket, client_key())
        .await
        .unwrap();
    client
        .catch_up(honest_end.position, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        client.seen.resync_reasons, reasons,
        "each forgery refused, for its reason"
    );
    let scene = client.replica().scene();
    assert_eq!(scene, &honest_end, "only the honest updates applied");
    assert_eq!(scene.display_name(AuthorId(2)), Some("Bea"));
    assert!(
        !scene.entities.contains_key(&EntityId::new(AuthorId(2), 2))
            && !scene.entities.contains_key(&EntityId::new(AuthorId(3), 1)),
        "nothing of a refused frame applied"
    );
    assert!(client.replica().verified_entries() >= 1);
    client.leave().await;
    assert_eq!(server.await.unwrap(), attacks, "one resync per attack");
}

/// The same frames through the wasm package's `Connection` under Node: the browser's replica
/// refuses the same forgeries for the same reasons and ends at the same hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the wasm package: run by `cargo xtask ci` (wasm step)"]
async fn the_wasm_replica_refuses_the_same_forgeries() {
    let pkg = std::env::var("MESHWORK_WASM_PKG").expect("set by cargo xtask ci");
    let (acts, reasons, honest_end) = script();
    let mut frames = to_frame(&ServerMsg::Challenge(Challenge {
        nonce: [1; 32],
        server_build_id: "hostile".into(),
    }))
    .unwrap();
    for act in &acts {
        for m in act {
            frames.extend(to_frame(m).unwrap());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.frames");
    tokio::fs::File::create(&path)
        .await
        .unwrap()
        .write_all(&frames)
        .await
        .unwrap();
    let ticket = JoinTicket {
        quic_addr: "127.0.0.1:1".into(),
        cert_sha256: [0; 32],
        invite: invite(),
    };
    let seed: String = client_key()
        .seed()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let report = meshwork_testkit::node_json(
        "hostile-frames.mjs",
        &[],
        &[path.to_str().unwrap(), &ticket.to_text(), &seed, &pkg],
    )
    .await;
    let want: Vec<&str> = reasons.iter().map(|r| r.as_str()).collect();
    assert_eq!(report["reasons"], serde_json::json!(want));
    let hash: String = honest_end
        .state_hash()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(report["hash"], hash);
    assert_eq!(report["names"]["2"], "Bea");
}
