//! Golden wire fixtures: one encoded frame per message kind and per command kind, checked in
//! under `tests/fixtures/wire/v2/` (this protocol version). CI decodes every file and requires
//! today's encoder to produce the same bytes, so an accidental wire change fails here. The
//! frozen `v1/` folder is read too: a version-1 `Hello` is told apart and refused, and every
//! version-1 signed entry (what stores written before version 2 hold) still decodes and
//! verifies.
//!
//! After an intended change (a new message or command appended), regenerate the missing files:
//! `MESHWORK_BLESS=1 cargo test -p meshwork-protocol --test wire_fixtures`. Existing files of a
//! released version must never change; a change that alters them needs a new protocol version
//! and a new fixture folder.
#![allow(
    clippy::unwrap_used,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::panic,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

use meshwork_protocol::command::ExtrudeDirection;
use meshwork_protocol::editmesh::{Axis, EdgeKey, ElementId, FaceKey, VertexKey};
use std::collections::BTreeMap;
use std::path::PathBuf;

use glam::{Quat, Vec3, Vec4};
use meshwork_protocol::command::{FaceIndex, HalfEdgeIndex, Material, Primitive, Transform};
use meshwork_protocol::registry::CommandKind;
use meshwork_protocol::wire::{
    Ack, Challenge, Close, CloseReason, CommandRefused, EncodedDelta, Entries, FetchLog, Hello,
    History, Invite, InviteBody, JoinProof, JoinProofBody, JoinRefusal, JoinRefused, Ping, Pong,
    Pose, Presence, PresenceOf, RefusalCode, Resync, SnapshotChunk, SnapshotManifest, StateHash,
    Submit, Welcome,
};
use meshwork_protocol::{
    AuthorId, ClientMsg, Command, CommandId, Domain, Ed25519Signer, EntityId, EntryBody,
    PROTOCOL_VERSION, Role, ServerMsg, SessionId, SignedEntry, Signer, ToolId, decode_frame,
    to_frame,
};

const SESSION: SessionId = SessionId([0x42; 16]);

fn dir() -> PathBuf {
    version_dir(PROTOCOL_VERSION)
}

fn version_dir(version: u16) -> PathBuf {
    // Read at run time: build output is shared between checkouts, and a path baked in with
    // `env!` may name another one.
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo or nextest"))
        .join(format!("../tests/fixtures/wire/v{version}"))
}

fn client() -> Ed25519Signer {
    Ed25519Signer::from_seed([0xc1; 32])
}

fn server() -> Ed25519Signer {
    Ed25519Signer::from_seed([0x5e; 32])
}

/// Element `index` of the spawn at lamport 1 by author 1 (a primitive's ids).
fn el(index: u32) -> ElementId {
    ElementId {
        by: CommandId {
            lamport: 1,
            author: AuthorId(1),
        },
        index,
    }
}

fn vk(index: u32) -> VertexKey {
    VertexKey(el(index))
}

fn sample_command(kind: CommandKind) -> Command {
    let e = EntityId::new(AuthorId(7), 3);
    match kind {
        CommandKind::Select => Command::Select {
            entities: vec![e, EntityId::new(AuthorId(2), 1)],
        },
        CommandKind::Spawn => Command::Spawn {
            entity: e,
            primitive: Primitive::Cylinder,
            transform: Transform {
                translation: Vec3::new(1.0, 0.5, -2.0),
                rotation: Quat::from_rotation_y(0.5),
                scale: Vec3::new(1.0, 2.0, 1.0),
            },
        },
        CommandKind::Despawn => Command::Despawn { entity: e },
        CommandKind::Translate => Command::Translate {
            entity: e,
            delta: Vec3::new(0.25, 0.0, -1.5),
        },
        CommandKind::Rotate => Command::Rotate {
            entity: e,
            delta: Quat::from_rotation_x(-0.75),
        },
        CommandKind::Scale => Command::Scale {
            entity: e,
            factor: Vec3::new(1.5, 1.5, 0.5),
        },
        CommandKind::SetName => Command::SetName {
            entity: e,
            name: "Chair leg".into(),
        },
        CommandKind::SetColor => Command::SetColor {
            entity: e,
            rgba: Vec4::new(0.9, 0.2, 0.1, 1.0),
        },
        CommandKind::SetMaterial => Command::SetMaterial {
            entity: e,
            material: Material {
                metallic: 0.1,
                roughness: 0.8,
            },
        },
        CommandKind::ToolActivate => Command::ToolActivate {
            tool: ToolId(4),
            target: Some(e),
        },
        CommandKind::ToolDeactivate => Command::ToolDeactivate { tool: ToolId(4) },
        CommandKind::VertexCreate => Command::VertexCreate {
            entity: e,
            position: Vec3::new(0.0, 1.0, 0.0),
        },
        CommandKind::EdgeExtrude => Command::EdgeExtrude {
            entity: e,
            edge: HalfEdgeIndex(11),
            offset: Vec3::new(0.0, 0.0, 0.3),
        },
        CommandKind::FaceSubdivide => Command::FaceSubdivide {
            entity: e,
            face: FaceIndex(5),
            cuts: 2,
        },
        CommandKind::SetSessionName => Command::SetSessionName {
            name: "Design review".into(),
        },
        CommandKind::MoveVertices => Command::MoveVertices {
            entity: e,
            moves: vec![(vk(0), Vec3::new(0.5, 0.75, -0.5)), (vk(3), Vec3::ZERO)],
        },
        CommandKind::CreateFace => Command::CreateFace {
            entity: e,
            vertices: vec![vk(0), vk(1), vk(2)],
        },
        CommandKind::DeleteElements => Command::DeleteElements {
            entity: e,
            vertices: vec![vk(1)],
            edges: vec![EdgeKey(el(20))],
            faces: vec![FaceKey(el(9))],
        },
        CommandKind::ExtrudeFaces => Command::ExtrudeFaces {
            entity: e,
            faces: vec![FaceKey(el(12))],
            direction: ExtrudeDirection::Normal { distance_m: 0.5 },
            snap_m: Some(0.25),
        },
        CommandKind::ExtrudeEdges => Command::ExtrudeEdges {
            entity: e,
            edges: vec![EdgeKey(el(14)), EdgeKey(el(15))],
            offset: Vec3::Y,
            snap_m: None,
        },
        CommandKind::SubdivideFaces => Command::SubdivideFaces {
            entity: e,
            faces: vec![FaceKey(el(8))],
            cuts: 2,
        },
        CommandKind::Smooth => Command::Smooth {
            entity: e,
            faces: vec![],
            levels: 1,
        },
        CommandKind::Weld => Command::Weld {
            entity: e,
            groups: vec![vec![vk(0), vk(1)]],
            at_center: true,
        },
        CommandKind::Duplicate => Command::Duplicate {
            entity: e,
            copy: EntityId::new(AuthorId(7), 77),
            offset: Vec3::X,
        },
        CommandKind::Mirror => Command::Mirror {
            entity: e,
            axis: Axis::X,
            weld: true,
        },
        CommandKind::SetTransform => Command::SetTransform {
            entity: e,
            transform: Transform {
                translation: Vec3::new(1.0, 2.0, 3.0),
                ..Transform::IDENTITY
            },
        },
        CommandKind::Step => Command::Step {
            entries: 3,
            label: "Extrude 4 faces".into(),
        },
        CommandKind::Undo => Command::Undo {
            step: Some(CommandId {
                lamport: 340,
                author: AuthorId(7),
            }),
        },
        CommandKind::Redo => Command::Redo { step: None },
        CommandKind::Import => Command::Import {
            asset: meshwork_protocol::command::AssetId([0xa5; 32]),
            first: e,
            count: 3,
        },
        CommandKind::SetDisplayName => Command::SetDisplayName {
            name: "Ada (Quest)".into(),
        },
        CommandKind::SetRole => Command::SetRole {
            author: AuthorId(4),
            role: Role::Viewer,
        },
        CommandKind::Kick => Command::Kick {
            author: AuthorId(4),
            reason: "please rejoin with your studio key".into(),
            revoke_invite: true,
        },
    }
}

fn signed(kind: CommandKind) -> SignedEntry {
    let s = client();
    let body = EntryBody::new(
        SESSION,
        AuthorId(7),
        s.public_key().key_id(),
        12,
        345,
        340,
        sample_command(kind),
    );
    SignedEntry::sign(&body, &s).unwrap()
}

fn invite() -> Invite {
    let body = InviteBody {
        domain: Domain::Invite,
        session: SESSION,
        role: Role::Editor,
        expires_at_ms: 1_800_000_000_000,
        invite_id: [0x1d; 16],
    };
    Invite::mint(&body, &server()).unwrap()
}

fn presence() -> Presence {
    let pose = Pose {
        position_mm: [100, 1650, -250],
        rotation: [0, 0, 0, 32767],
    };
    Presence {
        seq: 9,
        head: Some(pose),
        hands: [Some(pose), None],
        cursor: None,
    }
}

fn preview() -> meshwork_protocol::wire::Preview {
    meshwork_protocol::wire::Preview {
        seq: 10,
        entity: EntityId::new(AuthorId(4), 1),
        transform: Some(meshwork_protocol::wire::PreviewTransform {
            pose: Pose {
                position_mm: [1500, 500, 0],
                rotation: [0, 23170, 0, 23170],
            },
            scale_permille: [1000, 2000, 1000],
        }),
    }
}

/// A headset's head and hands, a cursor, one entity dragged and one released.
fn motion() -> meshwork_protocol::motion::Motion {
    use meshwork_protocol::motion::{Figure, Motion, MotionContent};
    let head = Pose {
        position_mm: [100, 1650, -250],
        rotation: [0, 0, 0, 32767],
    };
    let hand = Pose {
        position_mm: [300, 1200, -500],
        rotation: [0, 23170, 0, 23170],
    };
    Motion::encode(&MotionContent {
        seq: 13,
        figure: Some(Figure {
            head: Some(head),
            hands: [Some(hand), None],
            cursor: Some(hand),
        }),
        moving: vec![(EntityId::new(AuthorId(4), 1), preview().transform.unwrap())],
        ended: vec![EntityId::new(AuthorId(4), 2)],
    })
    .unwrap()
}

/// A pack without compression (its bytes do not depend on a dictionary): a motion and a
/// departure.
fn packed() -> meshwork_protocol::packed::Packed {
    let mut bytes = Vec::new();
    for m in [
        ServerMsg::Motion(meshwork_protocol::motion::MotionOf {
            author: AuthorId(4),
            motion: motion(),
        }),
        ServerMsg::Left(meshwork_protocol::wire::Left {
            author: AuthorId(5),
        }),
    ] {
        meshwork_protocol::packed::push_message(&mut bytes, &postcard::to_allocvec(&m).unwrap());
    }
    meshwork_protocol::packed::Packed {
        dictionary: meshwork_protocol::packed::RAW,
        bytes,
    }
}

fn edit_preview() -> meshwork_protocol::wire::EditPreview {
    meshwork_protocol::wire::EditPreview {
        seq: 11,
        entity: EntityId::new(AuthorId(4), 1),
        command: Some(sample_command(CommandKind::ExtrudeFaces)),
    }
}

fn element_selection() -> meshwork_protocol::wire::ElementSelection {
    meshwork_protocol::wire::ElementSelection {
        seq: 12,
        entity: Some(EntityId::new(AuthorId(4), 1)),
        elements: vec![el(3), el(5)],
    }
}

/// The fixture name of every client message; exhaustive so a new variant needs a fixture name.
fn client_name(m: &ClientMsg) -> &'static str {
    match m {
        ClientMsg::Hello(_) => "client-hello",
        ClientMsg::JoinProof(_) => "client-join-proof",
        ClientMsg::Submit(_) => "client-submit",
        ClientMsg::Ping(_) => "client-ping",
        ClientMsg::Close(_) => "client-close",
        ClientMsg::Resync(_) => "client-resync",
        ClientMsg::FetchLog(_) => "client-fetch-log",
        ClientMsg::Presence(_) => "client-presence",
        ClientMsg::Preview(_) => "client-preview",
        ClientMsg::EditPreview(_) => "client-edit-preview",
        ClientMsg::ElementSelection(_) => "client-element-selection",
        ClientMsg::Resume(_) => "client-resume",
        ClientMsg::Motion(_) => "client-motion",
        ClientMsg::Codecs(_) => "client-codecs",
        ClientMsg::Interest(_) => "client-interest",
        ClientMsg::Hold(_) => "client-hold",
    }
}

/// The fixture name of every server message; exhaustive for the same reason.
fn server_name(m: &ServerMsg) -> &'static str {
    match m {
        ServerMsg::Challenge(_) => "server-challenge",
        ServerMsg::Welcome(_) => "server-welcome",
        ServerMsg::JoinRefused(_) => "server-join-refused",
        ServerMsg::Entries(_) => "server-entries",
        ServerMsg::Ack(_) => "server-ack",
        ServerMsg::CommandRefused(_) => "server-command-refused",
        ServerMsg::Pong(_) => "server-pong",
        ServerMsg::Close(_) => "server-close",
        ServerMsg::Snapshot(_) => "server-snapshot",
        ServerMsg::SnapshotChunk(_) => "server-snapshot-chunk",
        ServerMsg::StateHash(_) => "server-state-hash",
        ServerMsg::History(_) => "server-history",
        ServerMsg::Presence(_) => "server-presence",
        ServerMsg::Delta(_) => "server-delta",
        ServerMsg::Left(_) => "server-left",
        ServerMsg::Preview(_) => "server-preview",
        ServerMsg::EditPreview(_) => "server-edit-preview",
        ServerMsg::ElementSelection(_) => "server-element-selection",
        ServerMsg::Roster(_) => "server-roster",
        ServerMsg::SealedDelta(_) => "server-sealed-delta",
        ServerMsg::Motion(_) => "server-motion",
        ServerMsg::Packed(_) => "server-packed",
        ServerMsg::Held(_) => "server-held",
    }
}

fn client_samples() -> Vec<ClientMsg> {
    let proof = JoinProofBody {
        domain: Domain::JoinProof,
        version: PROTOCOL_VERSION,
        session: SESSION,
        nonce: [0x0b; 32],
        public_key: client().public_key(),
    };
    vec![
        ClientMsg::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            build_id: "meshwork 0.1.0 (fixture)".into(),
            public_key: client().public_key(),
            invite: invite(),
        }),
        ClientMsg::JoinProof(JoinProof {
            signature: proof.sign(&client()),
        }),
        ClientMsg::Submit(Submit {
            entries: vec![signed(CommandKind::Translate)],
        }),
        ClientMsg::Ping(Ping {
            nonce: 0x0123_4567_89ab,
        }),
        ClientMsg::Close(Close {
            reason: CloseReason::Leaving,
            message: "bye".into(),
        }),
        ClientMsg::Resync(Resync { position: 77 }),
        ClientMsg::FetchLog(FetchLog { since_lamport: 300 }),
        ClientMsg::Presence(presence()),
        ClientMsg::Preview(preview()),
        ClientMsg::EditPreview(edit_preview()),
        ClientMsg::ElementSelection(element_selection()),
        ClientMsg::Resume(meshwork_protocol::wire::Resume {
            signature: proof.sign(&client()),
            position: 412,
        }),
        ClientMsg::Motion(motion()),
        ClientMsg::Codecs(meshwork_protocol::packed::Codecs {
            dictionaries: vec![1, 0],
        }),
        ClientMsg::Interest(meshwork_protocol::interest::Interest {
            region: Some(meshwork_protocol::interest::Region {
                min_mm: [-20_000, -5_000, -20_000],
                max_mm: [20_000, 15_000, 20_000],
            }),
        }),
        ClientMsg::Hold(meshwork_protocol::interest::Hold {
            region: Some(meshwork_protocol::interest::Region {
                min_mm: [-20_000, -5_000, -20_000],
                max_mm: [20_000, 15_000, 20_000],
            }),
        }),
    ]
}

fn server_samples() -> Vec<ServerMsg> {
    vec![
        ServerMsg::Challenge(Challenge {
            nonce: [0x0b; 32],
            server_build_id: "meshwork-server 0.1.0 (fixture)".into(),
        }),
        ServerMsg::Welcome(Welcome {
            session: SESSION,
            author: AuthorId(7),
            role: Role::Editor,
            next_seq: 12,
            log_position: 340,
            presence_tick_ms: 22,
        }),
        ServerMsg::JoinRefused(JoinRefused {
            reason: JoinRefusal::UnsupportedVersion { supported: vec![2] },
            message: "this server speaks protocol version 2; you sent 1".into(),
        }),
        ServerMsg::Entries(Entries {
            entries: vec![signed(CommandKind::Spawn), signed(CommandKind::SetName)],
        }),
        ServerMsg::Ack(Ack {
            seq: 12,
            id: CommandId {
                lamport: 345,
                author: AuthorId(7),
            },
        }),
        ServerMsg::CommandRefused(CommandRefused {
            seq: 13,
            code: RefusalCode::Conflict,
            message: "someone else extruded this edge first".into(),
        }),
        ServerMsg::Pong(Pong {
            nonce: 0x0123_4567_89ab,
        }),
        ServerMsg::Close(Close {
            reason: CloseReason::ServerShutdown,
            message: "server is restarting".into(),
        }),
        ServerMsg::Snapshot(SnapshotManifest {
            position: 340,
            lamport: 345,
            total_bytes: 70_000,
            state_hash: [0xaa; 32],
            chunk_hashes: vec![[0xbb; 32], [0xcc; 32]],
            encoding: meshwork_protocol::wire::SnapshotEncoding::Zstd {
                scene_bytes: 560_000,
            },
        }),
        ServerMsg::SnapshotChunk(SnapshotChunk {
            index: 1,
            bytes: vec![1, 2, 3, 4, 5],
        }),
        ServerMsg::StateHash(StateHash {
            position: 340,
            state_hash: [0xdd; 32],
        }),
        ServerMsg::History(History {
            entries: vec![signed(CommandKind::Despawn)],
            done: true,
        }),
        ServerMsg::Presence(PresenceOf {
            author: AuthorId(7),
            presence: presence(),
        }),
        ServerMsg::Delta(EncodedDelta {
            bytes: vec![9, 8, 7, 6],
        }),
        ServerMsg::Left(meshwork_protocol::wire::Left {
            author: AuthorId(4),
        }),
        ServerMsg::Preview(meshwork_protocol::wire::PreviewOf {
            author: AuthorId(4),
            preview: preview(),
        }),
        ServerMsg::EditPreview(meshwork_protocol::wire::EditPreviewOf {
            author: AuthorId(4),
            preview: edit_preview(),
        }),
        ServerMsg::ElementSelection(meshwork_protocol::wire::ElementSelectionOf {
            author: AuthorId(4),
            selection: element_selection(),
        }),
        ServerMsg::Roster(meshwork_protocol::wire::Roster {
            session: SESSION,
            server_key: server().public_key(),
            replace: true,
            members: vec![meshwork_protocol::wire::Member {
                author: AuthorId(7),
                public_key: client().public_key(),
                role: Role::Editor,
            }],
        }),
        ServerMsg::SealedDelta(meshwork_protocol::wire::SealedDelta::seal(
            SESSION,
            &meshwork_protocol::scene::Scene::new().delta(0, &Default::default()),
            meshwork_protocol::scene::Scene::new().state_hash(),
            &server(),
        )),
        ServerMsg::Motion(meshwork_protocol::motion::MotionOf {
            author: AuthorId(4),
            motion: motion(),
        }),
        ServerMsg::Packed(packed()),
        ServerMsg::Held(meshwork_protocol::wire::Held {
            from_position: 40,
            to_position: 52,
            lamport: 61,
            entries: vec![signed(CommandKind::Translate)],
            delta: Some(meshwork_protocol::wire::SealedDelta::seal(
                SESSION,
                &meshwork_protocol::scene::SceneDelta {
                    from_position: 40,
                    to_position: 52,
                    lamport: 61,
                    entities: vec![(EntityId::new(AuthorId(4), 9), None)],
                    authors: Vec::new(),
                    session_name: None,
                },
                meshwork_protocol::scene::Scene::new().state_hash(),
                &server(),
            )),
        }),
    ]
}

/// Every fixture: name → frame bytes.
fn fixtures() -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for m in client_samples() {
        out.insert(client_name(&m).to_owned(), to_frame(&m).unwrap());
    }
    for m in server_samples() {
        out.insert(server_name(&m).to_owned(), to_frame(&m).unwrap());
    }
    for kind in CommandKind::ALL {
        let frame = to_frame(&ClientMsg::Submit(Submit {
            entries: vec![signed(kind)],
        }))
        .unwrap();
        out.insert(
            format!("command-{}", kind.as_str().replace('_', "-")),
            frame,
        );
    }
    out
}

#[test]
fn every_message_and_command_kind_matches_its_golden_fixture() {
    let bless = std::env::var_os("MESHWORK_BLESS").is_some();
    let dir = dir();
    let mut missing = Vec::new();
    for (name, bytes) in fixtures() {
        let path = dir.join(format!("{name}.bin"));
        if !path.exists() {
            if bless {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
                continue;
            }
            missing.push(name);
            continue;
        }
        let golden = std::fs::read(&path).unwrap();
        assert_eq!(
            golden, bytes,
            "{name}: the encoding changed; fixtures of a released version are frozen"
        );
    }
    assert!(
        missing.is_empty(),
        "no fixture for {missing:?}; run with MESHWORK_BLESS=1"
    );
}

#[test]
fn every_fixture_file_decodes_to_its_sample() {
    let samples = fixtures();
    let mut decoded = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let bytes = std::fs::read(&path).unwrap();
        if name.starts_with("server-") {
            let (msg, used) = decode_frame::<ServerMsg>(&bytes).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(server_name(&msg), name);
            assert!(
                server_samples().contains(&msg),
                "{name} decodes to a known sample"
            );
        } else {
            let (msg, used) = decode_frame::<ClientMsg>(&bytes).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            if let ClientMsg::Submit(s) = &msg {
                for e in &s.entries {
                    e.decode_body().unwrap();
                }
            }
            assert_eq!(
                to_frame(&msg).unwrap(),
                bytes,
                "{name} re-encodes identically"
            );
        }
        assert!(samples.contains_key(&name), "stray fixture {name}");
        decoded += 1;
    }
    assert_eq!(decoded, samples.len(), "one file per fixture");
}

#[test]
fn version_1_fixtures_are_refused_at_hello_and_their_signed_entries_still_verify() {
    use meshwork_protocol::sign::{KeyRing, Verifier as _};
    use meshwork_protocol::wire::{SUPPORTED_VERSIONS, peek_hello_version};
    let v1 = version_dir(1);
    let hello = std::fs::read(v1.join("client-hello.bin")).unwrap();
    let version = peek_hello_version(&hello[4..]).unwrap();
    assert_eq!(version, 1);
    assert!(!SUPPORTED_VERSIONS.contains(&version));
    let mut ring = KeyRing::new();
    ring.register(AuthorId(7), client().public_key(), Role::Admin)
        .unwrap();
    let mut entries = 0;
    for file in std::fs::read_dir(&v1).unwrap() {
        let path = file.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if !name.starts_with("command-") {
            continue;
        }
        // A version-1 `Submit` of one entry: header, tag, count 1, then the entry as stores
        // keep it (body and signature, each with its length).
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[4..6], &[ClientMsg::SUBMIT_TAG, 1], "{name}");
        let entry: SignedEntry = postcard::from_bytes(&bytes[6..]).unwrap();
        let body = entry.decode_body().unwrap();
        assert_eq!((body.version, body.session), (1, Some(SESSION)), "{name}");
        assert_eq!(
            ring.verify(&entry.signed_item(&body, SESSION)),
            Ok(()),
            "{name}"
        );
        // The same command signed today is the same intent in fewer bytes: 26 of context
        // (domain, version, session, key id) and one of `seen_lamport` (340, two varint bytes,
        // now sent as the 5 back from the lamport).
        let kind = body.command.kind();
        let today = signed(kind);
        assert_eq!(today.decode_body().unwrap().command, body.command, "{name}");
        assert_eq!(entry.body.len() - today.body.len(), 27, "{name}");
        entries += 1;
    }
    assert_eq!(entries, CommandKind::ALL.len());
}
