use glam::Vec3;
use meshwork_protocol::codec::decode_frame;
use meshwork_protocol::wire::{FetchLog, Invite, InviteBody, JoinProof, Ping, Resync, Submit};
use meshwork_protocol::{Command, Ed25519Signer, EntityId, EntryBody, Signer};

use super::*;

const SESSION: SessionId = SessionId([0xab; 16]);
const NOW: u64 = 1_700_000_000_000;

struct Harness {
    server: Ed25519Signer,
    session: Session,
    now: u64,
}

impl Harness {
    fn new() -> Self {
        let server = Ed25519Signer::from_seed([0x5e; 32]);
        let mut config = Config::signed_by(SESSION, Arc::new(Ed25519Signer::from_seed([0x5e; 32])));
        config.rate_per_s = 10;
        config.burst = 5;
        let session = Session::new(config, [7; 32], NOW);
        Self {
            server,
            session,
            now: NOW,
        }
    }

    fn invite(&self, role: Role, expires_at_ms: u64) -> Invite {
        let body = InviteBody {
            domain: Domain::Invite,
            session: SESSION,
            role,
            expires_at_ms,
            invite_id: [1; 16],
        };
        Invite::mint(&body, &self.server).unwrap()
    }

    fn input(&mut self, input: Input) -> Vec<Output> {
        self.session.handle_input(self.now, input);
        std::iter::from_fn(|| self.session.poll_output()).collect()
    }

    fn send(&mut self, client: ClientId, msg: &ClientMsg) -> Vec<Output> {
        let bytes = postcard::to_allocvec(msg).unwrap();
        self.input(Input::Payload { client, bytes })
    }

    /// Connects and joins; returns the author id.
    fn join(&mut self, client: ClientId, signer: &Ed25519Signer, role: Role) -> AuthorId {
        self.join_outputs(client, signer, role).0
    }

    /// [`Harness::join`], also returning what the proof produced (the welcome, the snapshot).
    fn join_outputs(
        &mut self,
        client: ClientId,
        signer: &Ed25519Signer,
        role: Role,
    ) -> (AuthorId, Vec<Output>) {
        let out = self.prove(client, signer, role);
        match sent_to(&out, client).first() {
            Some(ServerMsg::Welcome(w)) => (w.author, out),
            other => panic!("expected a welcome, got {other:?}"),
        }
    }

    /// Connects, says hello with an invite for `role` and proves the key: the proof's outputs.
    fn prove(&mut self, client: ClientId, signer: &Ed25519Signer, role: Role) -> Vec<Output> {
        let invite = self.invite(role, NOW + 60_000);
        self.prove_with(client, signer, invite)
    }

    /// [`Harness::prove`] with `invite`; a refusal at the hello is returned as it is.
    fn prove_with(
        &mut self,
        client: ClientId,
        signer: &Ed25519Signer,
        invite: Invite,
    ) -> Vec<Output> {
        self.input(Input::Connected { client });
        let hello = ClientMsg::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            build_id: "test".into(),
            public_key: signer.public_key(),
            invite,
        });
        let out = self.send(client, &hello);
        let Some(ServerMsg::Challenge(ch)) = sent_to(&out, client).first().cloned() else {
            return out;
        };
        let proof = JoinProofBody {
            domain: Domain::JoinProof,
            version: PROTOCOL_VERSION,
            session: SESSION,
            nonce: ch.nonce,
            public_key: signer.public_key(),
        };
        self.send(
            client,
            &ClientMsg::JoinProof(JoinProof {
                signature: proof.sign(signer),
            }),
        )
    }
}

fn sent_to(out: &[Output], to: ClientId) -> Vec<ServerMsg> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { client, frame, .. } if *client == to => {
                Some(decode_frame::<ServerMsg>(frame).unwrap().unwrap().0)
            }
            _ => None,
        })
        .collect()
}

fn closed(out: &[Output], who: ClientId) -> Option<CloseReason> {
    out.iter().find_map(|o| match o {
        Output::Close { client, reason } if *client == who => Some(*reason),
        _ => None,
    })
}

fn entry(
    signer: &Ed25519Signer,
    author: AuthorId,
    seq: u64,
    lamport: u64,
    command: Command,
) -> SignedEntry {
    let body = EntryBody::new(
        SESSION,
        author,
        signer.public_key().key_id(),
        seq,
        lamport,
        lamport.saturating_sub(1),
        command,
    );
    SignedEntry::sign(&body, signer).unwrap()
}

fn mv(author: AuthorId) -> Command {
    Command::Translate {
        entity: EntityId::new(author, 1),
        delta: Vec3::X,
    }
}

const C1: ClientId = ClientId(1);
const C2: ClientId = ClientId(2);

#[test]
fn join_then_submit_acks_and_fans_out_only_after_persistence() {
    let mut h = Harness::new();
    let (s1, s2) = (
        Ed25519Signer::from_seed([1; 32]),
        Ed25519Signer::from_seed([2; 32]),
    );
    let a1 = h.join(C1, &s1, Role::Editor);
    let a2 = h.join(C2, &s2, Role::Editor);
    assert_ne!(a1, a2);

    let submit = ClientMsg::Submit(Submit {
        entries: vec![entry(&s1, a1, 1, 1, mv(a1))],
    });
    let out = h.send(C1, &submit);
    let batch = out
        .iter()
        .find_map(|o| match o {
            Output::Persist { batch, entries, .. } if entries.len() == 1 => Some(*batch),
            _ => None,
        })
        .expect("accepted entries are persisted");
    assert!(
        sent_to(&out, C1).is_empty() && sent_to(&out, C2).is_empty(),
        "nothing before durable"
    );

    let out = h.input(Input::PersistAck { batch });
    let to1 = sent_to(&out, C1);
    assert!(
        matches!(to1[0], ServerMsg::Ack(Ack { seq: 1, .. })),
        "{to1:?}"
    );
    assert!(matches!(&to1[1], ServerMsg::Entries(e) if e.entries.len() == 1));
    assert!(matches!(&sent_to(&out, C2)[0], ServerMsg::Entries(e) if e.entries.len() == 1));
}

/// A joining member's snapshot of a scene with a few primitives goes zstd-compressed, the
/// same frames to every member joining at that position, and the event the metrics count
/// says how many bytes of scene went as how many bytes of frames.
#[test]
fn a_snapshot_goes_compressed_once_per_position_and_says_what_it_saved() {
    let mut h = Harness::new();
    let s1 = Ed25519Signer::from_seed([1; 32]);
    let a1 = h.join(C1, &s1, Role::Editor);
    let spawns = (1..=5)
        .map(|i| {
            let spawn = Command::Spawn {
                entity: EntityId::new(a1, u32::try_from(i).unwrap()),
                primitive: meshwork_protocol::Primitive::Sphere,
                transform: meshwork_protocol::Transform::IDENTITY,
            };
            entry(&s1, a1, i, i, spawn)
        })
        .collect();
    let out = h.send(C1, &ClientMsg::Submit(Submit { entries: spawns }));
    for o in out {
        if let Output::Persist { batch, .. } = o {
            h.input(Input::PersistAck { batch });
        }
    }
    let mut seen = Vec::new();
    for (client, seed) in [(C2, 2u8), (ClientId(3), 3)] {
        let (_, out) = h.join_outputs(client, &Ed25519Signer::from_seed([seed; 32]), Role::Viewer);
        let manifest = sent_to(&out, client)
            .into_iter()
            .find_map(|m| match m {
                ServerMsg::Snapshot(m) => Some(m),
                _ => None,
            })
            .expect("a snapshot with the join");
        let wire::SnapshotEncoding::Zstd { scene_bytes } = manifest.encoding else {
            panic!("five spheres compress: {manifest:?}");
        };
        let (scene, sent) = out
            .iter()
            .find_map(|o| match o {
                Output::Event(Event::SnapshotSent {
                    client: c,
                    scene,
                    sent,
                }) if *c == client => Some((*scene, *sent)),
                _ => None,
            })
            .expect("the snapshot is counted");
        assert_eq!(scene as u64, scene_bytes);
        assert!(sent * 2 < scene, "{sent} B sent for {scene} B of scene");
        assert_eq!(h.session.scene.encode().len(), scene);
        seen.push((manifest, sent));
    }
    assert_eq!(
        seen[0], seen[1],
        "the same snapshot for both joins at one position"
    );
}

#[test]
fn members_get_the_roster_before_the_scene_and_every_new_member_before_their_entries() {
    let mut h = Harness::new();
    let (s1, s2) = (
        Ed25519Signer::from_seed([1; 32]),
        Ed25519Signer::from_seed([2; 32]),
    );
    let a1 = h.join(C1, &s1, Role::Editor);
    let (a2, out) = h.join_outputs(C2, &s2, Role::Viewer);
    let to2 = sent_to(&out, C2);
    // Welcome, then the whole roster (replacing), then the snapshot.
    let ServerMsg::Roster(r) = &to2[1] else {
        panic!("the roster follows the welcome: {to2:?}")
    };
    assert!(r.replace && r.session == SESSION && r.server_key == h.server.public_key());
    let keys: Vec<_> = r
        .members
        .iter()
        .map(|m| (m.author, m.public_key, m.role))
        .collect();
    assert_eq!(
        keys,
        vec![
            (a1, s1.public_key(), Role::Editor),
            (a2, s2.public_key(), Role::Viewer)
        ]
    );
    assert!(matches!(to2[2], ServerMsg::Snapshot(_)), "{to2:?}");
    // The member already there learns only the newcomer.
    let to1 = sent_to(&out, C1);
    assert!(
        matches!(&to1[..], [ServerMsg::Roster(r)] if !r.replace
            && r.members.len() == 1 && r.members[0].author == a2),
        "{to1:?}"
    );

    // A viewer names themself; the name is a signed entry like any other.
    let out = h.send(
        C2,
        &ClientMsg::Submit(Submit {
            entries: vec![entry(
                &s2,
                a2,
                1,
                1,
                Command::SetDisplayName { name: "Bea".into() },
            )],
        }),
    );
    let batch = out
        .iter()
        .find_map(|o| match o {
            Output::Persist { batch, entries, .. } if entries.len() == 1 => Some(*batch),
            _ => None,
        })
        .expect("a viewer may set their display name");
    let out = h.input(Input::PersistAck { batch });
    assert!(matches!(&sent_to(&out, C1)[0], ServerMsg::Entries(e) if e.entries.len() == 1));
    assert_eq!(h.session.scene().display_name(a2), Some("Bea"));
    assert_eq!(h.session.scene().display_name(a1), None);
}

#[test]
fn a_late_joiner_catches_up_with_durable_entries_only() {
    let mut h = Harness::new();
    let s1 = Ed25519Signer::from_seed([1; 32]);
    let a1 = h.join(C1, &s1, Role::Editor);
    let out = h.send(
        C1,
        &ClientMsg::Submit(Submit {
            entries: vec![entry(&s1, a1, 1, 1, mv(a1))],
        }),
    );
    let Some(Output::Persist { batch, .. }) = out
        .iter()
        .find(|o| matches!(o, Output::Persist { .. }))
        .cloned()
    else {
        panic!("no persist");
    };
    let s2 = Ed25519Signer::from_seed([2; 32]);
    h.input(Input::Connected { client: C2 });
    // Joining before the batch is durable: the catch-up must not contain it...
    let a2 = h.join(ClientId(3), &s2, Role::Viewer);
    assert_ne!(a2, a1);
    let out = h.input(Input::PersistAck { batch });
    // ...it arrives with the fan-out instead.
    assert!(
        matches!(&sent_to(&out, ClientId(3))[0], ServerMsg::Entries(e) if e.entries.len() == 1)
    );
    let s3 = Ed25519Signer::from_seed([3; 32]);
    h.join(ClientId(4), &s3, Role::Viewer);
    let log: usize = h.session.log().len();
    assert_eq!(log, 1);
}

#[test]
fn wrong_protocol_version_is_refused_with_the_supported_versions() {
    let mut h = Harness::new();
    h.input(Input::Connected { client: C1 });
    let s = Ed25519Signer::from_seed([1; 32]);
    let hello = ClientMsg::Hello(Hello {
        protocol_version: 99,
        build_id: "future".into(),
        public_key: s.public_key(),
        invite: h.invite(Role::Editor, NOW + 1),
    });
    let out = h.send(C1, &hello);
    match &sent_to(&out, C1)[0] {
        ServerMsg::JoinRefused(r) => {
            assert_eq!(
                r.reason,
                JoinRefusal::UnsupportedVersion { supported: vec![2] }
            );
            assert!(
                r.message.contains("version 2") && r.message.contains("99"),
                "{}",
                r.message
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(closed(&out, C1), Some(CloseReason::ProtocolViolation));
}

#[test]
fn an_undecodable_hello_of_another_version_is_still_told_the_version() {
    let mut h = Harness::new();
    h.input(Input::Connected { client: C1 });
    // Tag 0 (Hello), version 3, then bytes this version cannot read.
    let out = h.input(Input::Payload {
        client: C1,
        bytes: vec![0, 3, 0xff, 0xff, 0xff],
    });
    assert!(matches!(
        &sent_to(&out, C1)[0],
        ServerMsg::JoinRefused(r) if matches!(r.reason, JoinRefusal::UnsupportedVersion { .. })
    ));
}

#[test]
fn expired_and_foreign_invites_are_refused() {
    let mut h = Harness::new();
    let s = Ed25519Signer::from_seed([1; 32]);
    h.input(Input::Connected { client: C1 });
    let expired = ClientMsg::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        build_id: "t".into(),
        public_key: s.public_key(),
        invite: h.invite(Role::Editor, NOW - 1),
    });
    let out = h.send(C1, &expired);
    assert!(matches!(
        &sent_to(&out, C1)[0],
        ServerMsg::JoinRefused(r) if r.reason == JoinRefusal::InviteExpired
    ));
    // Minted by a key that is not the server's.
    h.input(Input::Connected { client: C2 });
    let rogue = Ed25519Signer::from_seed([0x66; 32]);
    let body = InviteBody {
        domain: Domain::Invite,
        session: SESSION,
        role: Role::Admin,
        expires_at_ms: NOW + 1000,
        invite_id: [0; 16],
    };
    let forged = ClientMsg::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        build_id: "t".into(),
        public_key: s.public_key(),
        invite: Invite::mint(&body, &rogue).unwrap(),
    });
    let out = h.send(C2, &forged);
    assert!(matches!(
        &sent_to(&out, C2)[0],
        ServerMsg::JoinRefused(r) if r.reason == JoinRefusal::InvalidInvite
    ));
}

#[test]
fn a_wrong_proof_is_refused() {
    let mut h = Harness::new();
    let s = Ed25519Signer::from_seed([1; 32]);
    h.input(Input::Connected { client: C1 });
    let hello = ClientMsg::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        build_id: "t".into(),
        public_key: s.public_key(),
        invite: h.invite(Role::Editor, NOW + 1000),
    });
    h.send(C1, &hello);
    let wrong = meshwork_protocol::sign::Signature([3; 64]);
    let out = h.send(C1, &ClientMsg::JoinProof(JoinProof { signature: wrong }));
    assert!(matches!(
        &sent_to(&out, C1)[0],
        ServerMsg::JoinRefused(r) if r.reason == JoinRefusal::BadProof
    ));
}

#[test]
fn refusals_are_typed_and_the_session_keeps_serving() {
    let mut h = Harness::new();
    let (s1, s2) = (
        Ed25519Signer::from_seed([1; 32]),
        Ed25519Signer::from_seed([2; 32]),
    );
    let viewer = h.join(C1, &s1, Role::Viewer);
    let editor = h.join(C2, &s2, Role::Editor);
    let mut forged = entry(&s2, editor, 1, 1, mv(editor));
    forged.signature.0[0] ^= 1;
    let out = h.send(
        C1,
        &ClientMsg::Submit(Submit {
            entries: vec![entry(&s1, viewer, 1, 1, mv(viewer))],
        }),
    );
    assert!(
        matches!(&sent_to(&out, C1)[0], ServerMsg::CommandRefused(r) if r.code == RefusalCode::Permission)
    );
    let out = h.send(
        C2,
        &ClientMsg::Submit(Submit {
            entries: vec![forged],
        }),
    );
    assert!(
        matches!(&sent_to(&out, C2)[0], ServerMsg::CommandRefused(r) if r.code == RefusalCode::BadSignature)
    );
    // Someone else's entry relayed by this connection.
    let out = h.send(
        C1,
        &ClientMsg::Submit(Submit {
            entries: vec![entry(&s2, editor, 1, 1, mv(editor))],
        }),
    );
    assert!(
        matches!(&sent_to(&out, C1)[0], ServerMsg::CommandRefused(r) if r.code == RefusalCode::Malformed)
    );
    // The editor still works.
    let ok = entry(&s2, editor, 2, 1, mv(editor));
    let out = h.send(
        C2,
        &ClientMsg::Submit(Submit {
            entries: vec![ok.clone()],
        }),
    );
    assert!(out.iter().any(|o| matches!(o, Output::Persist { .. })));
    // Replaying it is refused (still in flight → no double ack; once durable → ack again).
    let out = h.send(
        C2,
        &ClientMsg::Submit(Submit {
            entries: vec![entry(&s2, editor, 2, 2, mv(editor))],
        }),
    );
    assert!(
        matches!(&sent_to(&out, C2)[0], ServerMsg::CommandRefused(r) if r.code == RefusalCode::Replay)
    );
    let refused = |out: &[Output]| {
        out.iter()
            .filter(|o| matches!(o, Output::Event(Event::Refused { .. })))
            .count()
    };
    assert_eq!(refused(&out), 1);
}

#[test]
fn the_rate_limit_refuses_bursts_and_refills_with_time() {
    let mut h = Harness::new();
    let s = Ed25519Signer::from_seed([1; 32]);
    let a = h.join(C1, &s, Role::Editor);
    let burst: Vec<SignedEntry> = (1..=8).map(|i| entry(&s, a, i, i, mv(a))).collect();
    let out = h.send(C1, &ClientMsg::Submit(Submit { entries: burst }));
    let limited = sent_to(&out, C1)
        .iter()
        .filter(|m| matches!(m, ServerMsg::CommandRefused(r) if r.code == RefusalCode::RateLimited))
        .count();
    assert_eq!(limited, 3, "burst of 5 admitted, 3 refused");
    // 10/s: after 300 ms three more tokens.
    h.now += 300;
    let more: Vec<SignedEntry> = (9..=12).map(|i| entry(&s, a, i, i, mv(a))).collect();
    let out = h.send(C1, &ClientMsg::Submit(Submit { entries: more }));
    let limited = sent_to(&out, C1)
        .iter()
        .filter(|m| matches!(m, ServerMsg::CommandRefused(r) if r.code == RefusalCode::RateLimited))
        .count();
    assert_eq!(limited, 1);
}

#[test]
fn messages_out_of_phase_close_the_connection() {
    let mut h = Harness::new();
    h.input(Input::Connected { client: C1 });
    let out = h.send(C1, &ClientMsg::Ping(Ping { nonce: 1 }));
    assert_eq!(closed(&out, C1), Some(CloseReason::ProtocolViolation));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Event(Event::ProtocolViolation { .. })))
    );
    h.input(Input::Connected { client: C2 });
    let out = h.input(Input::Payload {
        client: C2,
        bytes: vec![9, 9, 9],
    });
    assert_eq!(closed(&out, C2), Some(CloseReason::ProtocolViolation));
}

#[test]
fn slow_handshakes_time_out() {
    let mut h = Harness::new();
    h.input(Input::Connected { client: C1 });
    assert_eq!(h.session.poll_timeout(), Some(NOW + 10_000));
    h.now += 9_999;
    assert_eq!(closed(&h.input(Input::Tick), C1), None);
    h.now += 1;
    let out = h.input(Input::Tick);
    assert_eq!(closed(&out, C1), Some(CloseReason::IdleTimeout));
    // Counted (`handshake_timeout`), once.
    let counted = out
        .iter()
        .filter(|o| matches!(o, Output::Event(Event::HandshakeTimeout { client: C1 })))
        .count();
    assert_eq!(counted, 1);
}

#[test]
fn shutdown_closes_everyone_with_a_reason() {
    let mut h = Harness::new();
    h.join(C1, &Ed25519Signer::from_seed([1; 32]), Role::Editor);
    h.input(Input::Connected { client: C2 });
    let out = h.input(Input::Shutdown);
    for c in [C1, C2] {
        assert_eq!(closed(&out, c), Some(CloseReason::ServerShutdown));
        assert!(matches!(
            sent_to(&out, c).last(),
            Some(ServerMsg::Close(Close {
                reason: CloseReason::ServerShutdown,
                ..
            }))
        ));
    }
}

#[test]
fn a_slow_client_is_cut_without_affecting_others() {
    let mut h = Harness::new();
    h.join(C1, &Ed25519Signer::from_seed([1; 32]), Role::Editor);
    h.join(C2, &Ed25519Signer::from_seed([2; 32]), Role::Editor);
    let out = h.input(Input::Backpressure { client: C1 });
    assert_eq!(closed(&out, C1), Some(CloseReason::TooSlow));
    assert_eq!(closed(&out, C2), None);
    assert_eq!(h.session.joined_count(), 1);
}

/// Persist outputs acknowledged at once, recording what a store would hold.
#[derive(Default)]
struct FakeStore {
    authors: Vec<AuthorRecord>,
    entries: Vec<SignedEntry>,
}

impl FakeStore {
    /// As [`FakeStore::absorb`], returning every output, those of the acknowledgements too.
    fn absorb_all(&mut self, h: &mut Harness, out: Vec<Output>) -> Vec<Output> {
        let mut all = out.clone();
        // Every batch, in the order they were made (one output set may hold several).
        let mut queue: VecDeque<Output> = out.into();
        while let Some(o) = queue.pop_front() {
            if let Output::Persist {
                batch,
                authors,
                entries,
                ..
            } = o
            {
                self.authors.extend(authors.iter().copied());
                self.entries.extend(entries.iter().cloned());
                let next = h.input(Input::PersistAck { batch });
                all.extend(next.iter().cloned());
                queue.extend(next);
            }
        }
        all
    }

    fn absorb(&mut self, h: &mut Harness, out: Vec<Output>) {
        let _ = self.absorb_all(h, out);
    }
}

#[test]
fn a_session_restores_from_its_store_with_and_without_a_snapshot() {
    let mut h = Harness::new();
    let mut store = FakeStore::default();
    let (s1, s2) = (
        Ed25519Signer::from_seed([1; 32]),
        Ed25519Signer::from_seed([2; 32]),
    );
    h.input(Input::Connected { client: C1 });
    let a1 = h.join(C1, &s1, Role::Editor);
    let a2 = h.join(C2, &s2, Role::Editor);
    // Flush the author batches emitted by the joins.
    for b in 0..2 {
        let out = h.input(Input::PersistAck { batch: BatchId(b) });
        store.absorb(&mut h, out);
    }
    store.authors = h.session.authors();
    let name = |n: &str| Command::SetName {
        entity: EntityId::new(a1, 1),
        name: n.into(),
    };
    // Two concurrent renames: one ends up superseded.
    let out = h.send(
        C1,
        &ClientMsg::Submit(Submit {
            entries: vec![entry(&s1, a1, 1, 1, name("a"))],
        }),
    );
    store.absorb(&mut h, out);
    let out = h.send(
        C2,
        &ClientMsg::Submit(Submit {
            entries: vec![entry(&s2, a2, 1, 1, name("b"))],
        }),
    );
    store.absorb(&mut h, out);
    let out = h.send(
        C1,
        &ClientMsg::Submit(Submit {
            entries: vec![entry(&s1, a1, 2, 3, mv(a1))],
        }),
    );
    store.absorb(&mut h, out);
    assert_eq!(store.entries.len(), 3);
    assert_eq!(h.session.durable_entries(), 3);
    let snap = h.session.snapshot().expect("nothing in flight");
    assert_eq!(snap.position, 3);
    assert_eq!(snap.non_applied.len(), 1, "one rename was superseded");
    let want = h.session.log().state_hash();
    let config = || {
        let mut c = Config::new(SESSION, h.server.public_key());
        c.rate_per_s = 10;
        c
    };

    let (full, report) = Session::restore(
        config(),
        [0; 32],
        NOW,
        &store.authors,
        &[],
        None,
        store.entries.clone(),
    )
    .unwrap();
    assert_eq!(
        full.log().state_hash(),
        want,
        "replaying everything rebuilds the state"
    );
    assert_eq!(report.replayed, 3);

    let (fast, report) = Session::restore(
        config(),
        [0; 32],
        NOW,
        &store.authors,
        &[],
        Some(&snap),
        store.entries.clone(),
    )
    .unwrap();
    assert_eq!(fast.log().state_hash(), want);
    assert_eq!(
        (
            report.from_snapshot,
            report.replayed,
            report.snapshot_rejected
        ),
        (3, 0, false)
    );
    assert_eq!(
        fast.log().next_seq(a1),
        3,
        "sequence numbers continue after a restart"
    );

    let mut bad = snap.clone();
    bad.digest[0] ^= 1;
    let (safe, report) = Session::restore(
        config(),
        [0; 32],
        NOW,
        &store.authors,
        &[],
        Some(&bad),
        store.entries.clone(),
    )
    .unwrap();
    assert!(report.snapshot_rejected);
    assert_eq!(
        safe.log().state_hash(),
        want,
        "a bad snapshot is ignored, not trusted"
    );

    let mut corrupt = store.entries.clone();
    corrupt[1].body[3] ^= 0xff;
    assert!(Session::restore(config(), [0; 32], NOW, &store.authors, &[], None, corrupt).is_err());
}

/// One editor's 100 entries (moves and renames of one entity), each persisted and
/// acknowledged; `each` runs after every one.
fn hundred_entries(window: usize, each: &dyn Fn(&Harness, u64)) -> (Harness, FakeStore, AuthorId) {
    stored_session(
        window,
        |a1| {
            (1..=100u64)
                .map(|i| {
                    if i % 3 == 0 {
                        Command::SetName {
                            entity: EntityId::new(a1, 1),
                            name: format!("n{i}"),
                        }
                    } else {
                        mv(a1)
                    }
                })
                .collect()
        },
        each,
    )
}

/// One editor's session holding `window` entries: the commands `make` gives for its author,
/// each submitted alone (sequence and Lamport time 1, 2, …), persisted and acknowledged, the
/// store keeping what was persisted; `each` runs after every one.
fn stored_session(
    window: usize,
    make: impl FnOnce(AuthorId) -> Vec<Command>,
    each: &dyn Fn(&Harness, u64),
) -> (Harness, FakeStore, AuthorId) {
    let mut h = Harness::new();
    h.session.config.log_window = window;
    h.session.config.rate_per_s = 1000;
    h.session.config.burst = 1000;
    let mut store = FakeStore::default();
    let s1 = Ed25519Signer::from_seed([1; 32]);
    h.input(Input::Connected { client: C1 });
    let a1 = h.join(C1, &s1, Role::Editor);
    let out = h.input(Input::PersistAck { batch: BatchId(0) });
    store.absorb(&mut h, out);
    store.authors = h.session.authors();
    for (i, command) in (1u64..).zip(make(a1)) {
        let out = h.send(
            C1,
            &ClientMsg::Submit(Submit {
                entries: vec![entry(&s1, a1, i, i, command)],
            }),
        );
        store.absorb(&mut h, out);
        each(&h, i);
    }
    (h, store, a1)
}

#[test]
fn a_session_lets_go_of_durable_entries_beyond_its_window_and_restores_in_it() {
    let (h, store, a1) = hundred_entries(16, &|h, i| {
        assert!(
            h.session.log().held() <= 16 + 16 / 8,
            "entry {i}: {} held",
            h.session.log().held()
        );
    });
    assert_eq!(h.session.durable_entries(), 100);
    assert_eq!(h.session.log().len(), 100);
    assert!(h.session.log().let_go_count() >= 80);
    assert_eq!(h.session.log().state_hash(), None);
    assert!(
        h.session.snapshot().is_none(),
        "no snapshot of statuses it no longer holds"
    );
    let want = h.session.scene().state_hash();

    let restore = |window: usize| {
        let mut c = Config::new(SESSION, h.server.public_key());
        c.log_window = window;
        let mut r = Session::restoring(c, [0; 32], NOW, &store.authors, &[], None);
        for e in store.entries.clone() {
            r.push(e).unwrap();
            assert!(r.session.log().held() <= window.saturating_add(window / 8));
        }
        r.finish().unwrap().0
    };
    for window in [16, usize::MAX] {
        let restored = restore(window);
        assert_eq!(restored.scene().state_hash(), want, "window {window}");
        assert_eq!(restored.log().len(), 100);
        assert_eq!(restored.log().next_seq(a1), 101, "window {window}");
        assert_eq!(restored.durable_entries(), 100);
    }
    assert!(restore(16).log().held() <= 16);
    assert!(restore(usize::MAX).log().state_hash().is_some());
}

#[test]
fn a_session_restarts_from_a_base_as_from_the_entries_it_covers() {
    let (h, store, a1) = hundred_entries(DEFAULT_LOG_WINDOW, &|_, _| {});
    assert_eq!(h.session.durable_entries(), 100);
    let config = |window: usize| {
        let mut c = Config::new(SESSION, h.server.public_key());
        c.log_window = window;
        c
    };
    // The base after the first 60 entries, through its encoding (what the store keeps).
    let mut r = Session::restoring(config(16), [0; 32], NOW, &store.authors, &[], None);
    for e in store.entries.iter().take(60).cloned() {
        r.push(e).unwrap();
    }
    assert_eq!(r.position(), 60);
    let base = SessionBase::decode(&r.base().unwrap().encode()).unwrap();
    assert_eq!(base.position, 60);
    assert!(
        (1..60).contains(&base.log.count),
        "what the window let go of is let go; the rest comes with the base: {}",
        base.log.count
    );

    let full = {
        let mut r = Session::restoring(config(16), [0; 32], NOW, &store.authors, &[], None);
        for e in store.entries.clone() {
            r.push(e).unwrap();
        }
        r.finish().unwrap().0
    };
    let mut r = Session::restoring_from(config(16), [0; 32], NOW, &store.authors, &[], base);
    for e in store.entries.iter().skip(60).cloned() {
        r.push(e).unwrap();
    }
    let (from_base, report) = r.finish().unwrap();
    assert_eq!(
        report.replayed, 40,
        "only the entries after the base replay"
    );
    assert_eq!(
        from_base.scene().state_hash(),
        h.session.scene().state_hash()
    );
    assert_eq!(from_base.scene().state_hash(), full.scene().state_hash());
    assert_eq!(from_base.durable_entries(), 100);
    assert_eq!(from_base.log().len(), 100);
    assert_eq!(from_base.log().next_seq(a1), 101);
    assert_eq!(from_base.log().clock(), full.log().clock());
    assert_eq!(from_base.log().let_go_count(), full.log().let_go_count());
    assert_eq!(from_base.log().held(), full.log().held());
    assert_eq!(
        from_base.log().state_hash(),
        None,
        "entries were let go: no hash of the whole log"
    );
}

#[test]
fn a_snapshot_is_used_only_within_the_window_and_near_the_head() {
    let s = SessionSnapshot {
        position: 100,
        digest: [0; 32],
        authors: vec![],
        non_applied: vec![],
    };
    assert!(s.usable(100, 150, u64::MAX));
    assert!(
        !s.usable(64, 100, u64::MAX),
        "covers more than the window and an eighth"
    );
    assert!(!s.usable(100, 201, u64::MAX), "far behind the head");
    assert!(s.usable(100, 10_000, 150), "near the position replayed to");
    assert!(!s.usable(100, 150, 99), "past the position replayed to");
}

/// A base carries what later entries are resolved and carried out against: the entries its
/// log still held and the undo history. An undo after the base of a step made before it
/// replays as the live session carried it out (found by the `session` fuzz target: a restart
/// from the base kept an object the undo had removed).
#[test]
fn an_undo_after_a_base_of_a_step_made_before_it_replays_as_it_was_carried_out() {
    use meshwork_protocol::{CommandId, Primitive, Transform};
    let commands = |a1| {
        let a = EntityId::new(a1, 1);
        let spawn = |entity| Command::Spawn {
            entity,
            primitive: Primitive::Cube,
            transform: Transform::IDENTITY,
        };
        let mut commands = vec![spawn(a), spawn(EntityId::new(a1, 2))];
        for i in 3..=10 {
            commands.push(Command::SetName {
                entity: a,
                name: format!("n{i}"),
            });
        }
        commands.push(Command::Undo {
            step: Some(CommandId {
                lamport: 2,
                author: a1,
            }),
        });
        commands.push(Command::SetName {
            entity: a,
            name: "last".into(),
        });
        commands
    };
    let (h, store, a1) = stored_session(4, commands, &|_, _| {});
    let b = EntityId::new(a1, 2);
    assert_eq!(h.session.durable_entries(), 12);
    assert!(
        !h.session.scene().entities.contains_key(&b),
        "the undo removed it"
    );
    let config = || {
        let mut c = Config::new(SESSION, h.server.public_key());
        c.log_window = 4;
        c
    };
    let mut r = Session::restoring(config(), [0; 32], NOW, &store.authors, &[], None);
    for e in store.entries.iter().take(10).cloned() {
        r.push(e).unwrap();
    }
    let bytes = r.base().unwrap().encode();
    let base = SessionBase::decode(&bytes).unwrap();
    assert!(!base.held.is_empty() && base.history.is_some());
    // A base written before they came with it (the first layout: the same fields without the
    // last two) still decodes, with neither.
    let mut first = base.clone();
    first.held.clear();
    first.history = None;
    let encoded = first.encode();
    let v1 = SessionBase::decode(&encoded[..encoded.len() - 2]).unwrap();
    assert_eq!(v1.position, 10);
    assert!(v1.held.is_empty() && v1.history.is_none());
    let mut r = Session::restoring_from(config(), [0; 32], NOW, &store.authors, &[], base);
    for e in store.entries.iter().skip(10).cloned() {
        r.push(e).unwrap();
    }
    let (restarted, _) = r.finish().unwrap();
    assert!(!restarted.scene().entities.contains_key(&b));
    assert_eq!(
        restarted.scene().state_hash(),
        h.session.scene().state_hash()
    );
}

// ---------------------------------------------------------------- mesh edits

#[allow(clippy::arithmetic_side_effects, reason = "test code: small counters")]
mod mesh {
    use meshwork_protocol::Primitive;
    use meshwork_protocol::command::ExtrudeDirection;
    use meshwork_protocol::editmesh::{ElementId, FaceKey, VertexKey};
    use meshwork_protocol::scene::{Geometry, Limits};
    use meshwork_protocol::{CommandId, Transform};

    use super::*;

    /// A harness with one editor who spawned a cube at lamport 1; returns its author id.
    struct Edit {
        h: Harness,
        /// Two editors: signer, author, connection, last sequence number.
        people: [(Ed25519Signer, AuthorId, ClientId, u64); 2],
        author: AuthorId,
    }

    impl Edit {
        fn new(limits: Limits) -> Self {
            let mut h = Harness::new();
            h.session.config.rate_per_s = 10_000;
            h.session.config.burst = 10_000;
            h.session.config.limits = limits;
            let s1 = Ed25519Signer::from_seed([1; 32]);
            let s2 = Ed25519Signer::from_seed([2; 32]);
            let a1 = h.join(C1, &s1, Role::Editor);
            let a2 = h.join(C2, &s2, Role::Editor);
            let mut edit = Self {
                h,
                people: [(s1, a1, C1, 0), (s2, a2, C2, 0)],
                author: a1,
            };
            let spawn = Command::Spawn {
                entity: edit.entity(),
                primitive: Primitive::Cube,
                transform: Transform::IDENTITY,
            };
            assert_eq!(edit.submit_as(0, 1, 0, spawn), Ok(()));
            edit
        }

        fn entity(&self) -> EntityId {
            EntityId::new(self.author, 1)
        }

        /// An element of the cube (created by the spawn at lamport 1).
        fn el(&self, index: u32) -> ElementId {
            ElementId {
                by: CommandId {
                    lamport: 1,
                    author: self.author,
                },
                index,
            }
        }

        /// Submits one command stamped `lamport` having seen `seen`, makes it durable, and
        /// returns the refusal code and message if it was refused.
        fn submit(
            &mut self,
            lamport: u64,
            seen: u64,
            command: Command,
        ) -> Result<(), (RefusalCode, String)> {
            self.submit_as(0, lamport, seen, command)
        }

        /// As `submit`, by editor `who` (0 or 1).
        fn submit_as(
            &mut self,
            who: usize,
            lamport: u64,
            seen: u64,
            command: Command,
        ) -> Result<(), (RefusalCode, String)> {
            let (signer, author, client, seq) = &mut self.people[who];
            *seq += 1;
            let body = EntryBody::new(
                SESSION,
                *author,
                signer.public_key().key_id(),
                *seq,
                lamport,
                seen,
                command,
            );
            let e = SignedEntry::sign(&body, signer).unwrap();
            let client = *client;
            let out = self
                .h
                .send(client, &ClientMsg::Submit(Submit { entries: vec![e] }));
            for o in &out {
                if let Output::Persist { batch, .. } = o {
                    self.h.input(Input::PersistAck { batch: *batch });
                    return Ok(());
                }
            }
            match sent_to(&out, client).first() {
                Some(ServerMsg::CommandRefused(r)) => {
                    assert!(
                        out.iter().any(|o| matches!(
                            o,
                            Output::Event(Event::Refused { code }) if *code == r.code
                        )),
                        "a refusal is counted"
                    );
                    Err((r.code, r.message.clone()))
                }
                other => panic!("neither persisted nor refused: {other:?}"),
            }
        }

        fn hash(&self) -> [u8; 32] {
            self.h.session.scene().state_hash()
        }
    }

    fn top() -> u32 {
        8 + 4
    }

    #[test]
    fn topology_refusals_change_nothing_and_the_next_edit_goes_through() {
        let mut t = Edit::new(Limits::DEFAULT);
        let e = t.entity();
        let v6 = VertexKey(t.el(6));
        let delete = Command::DeleteElements {
            entity: e,
            vertices: vec![v6],
            edges: vec![],
            faces: vec![],
        };
        assert_eq!(t.submit(2, 1, delete), Ok(()));
        let before = t.hash();
        // A face over the deleted vertex.
        let over_deleted = Command::CreateFace {
            entity: e,
            vertices: vec![v6, VertexKey(t.el(2)), VertexKey(t.el(3))],
        };
        let (code, msg) = t.submit(3, 2, over_deleted).unwrap_err();
        assert_eq!(code, RefusalCode::Conflict, "{msg}");
        assert!(msg.contains(&format!("vertex {}:6@1", t.author.0)), "{msg}");
        // A weld that collapses a face (two corners of the bottom face 1:13 = [0, 1, 5, 4]).
        let weld = Command::Weld {
            entity: e,
            groups: vec![vec![VertexKey(t.el(0)), VertexKey(t.el(5))]],
            at_center: true,
        };
        let r = t.submit(4, 2, weld);
        // 0 and 5 are diagonal on the bottom face: it becomes a repeated-vertex face.
        let (code, msg) = r.unwrap_err();
        assert_eq!(code, RefusalCode::Topology, "{msg}");
        assert_eq!(t.hash(), before, "refused edits change nothing");
        // The author's next valid command is accepted.
        let extrude = Command::ExtrudeFaces {
            entity: e,
            faces: vec![FaceKey(t.el(9))],
            direction: ExtrudeDirection::Normal { distance_m: 0.5 },
            snap_m: None,
        };
        assert_eq!(t.submit(5, 2, extrude), Ok(()));
        assert_ne!(t.hash(), before);
    }

    #[test]
    fn catmull_clark_past_the_limit_is_refused_before_any_work() {
        let mut t = Edit::new(Limits {
            mesh_triangles: 1000,
            session_triangles: 2000,
        });
        let e = t.entity();
        let smooth = |levels| Command::Smooth {
            entity: e,
            faces: vec![],
            levels,
        };
        // Level 2 of a cube: 96 quads; level 3 after that would be 96·4³ quads.
        assert_eq!(t.submit(2, 1, smooth(2)), Ok(()));
        let before = t.hash();
        let (code, msg) = t.submit(3, 2, smooth(3)).unwrap_err();
        assert_eq!(code, RefusalCode::Limit, "{msg}");
        assert_eq!(t.hash(), before);
        assert_eq!(t.submit(4, 2, smooth(1)), Ok(()));
    }

    #[test]
    fn a_refused_move_of_an_unedited_primitive_leaves_it_a_primitive() {
        let mut t = Edit::new(Limits::DEFAULT);
        let before = t.hash();
        let stale = VertexKey(ElementId {
            by: CommandId {
                lamport: 99,
                author: t.author,
            },
            index: 0,
        });
        let mv = Command::MoveVertices {
            entity: t.entity(),
            moves: vec![(stale, Vec3::ONE)],
        };
        let (code, _) = t.submit(2, 1, mv).unwrap_err();
        assert_eq!(code, RefusalCode::Conflict);
        assert_eq!(t.hash(), before);
        // The scene new edits are checked against must not have moved either.
        assert_eq!(
            t.h.session.accepted.state_hash(),
            before,
            "the geometry is still the primitive"
        );
    }

    #[test]
    fn retired_index_edits_are_refused() {
        let mut t = Edit::new(Limits::DEFAULT);
        let old = Command::FaceSubdivide {
            entity: t.entity(),
            face: meshwork_protocol::command::FaceIndex(0),
            cuts: 1,
        };
        let (code, _) = t.submit(2, 1, old).unwrap_err();
        assert_eq!(code, RefusalCode::Topology);
    }

    /// Two concurrent commands by two editors (neither saw the other: both stamped lamport 2
    /// having seen the spawn at 1), submitted in both arrival orders. Returns the results in
    /// arrival order: `[first, second]` when `first` arrives first, then `[second, first]`.
    fn both_orders(first: Command, second: Command) -> [Result<(), RefusalCode>; 4] {
        let mut out = [Ok(()), Ok(()), Ok(()), Ok(())];
        for (i, swap) in [false, true].into_iter().enumerate() {
            let mut t = Edit::new(Limits::DEFAULT);
            let order = if swap {
                [(1, second.clone()), (0, first.clone())]
            } else {
                [(0, first.clone()), (1, second.clone())]
            };
            for (k, (who, c)) in order.into_iter().enumerate() {
                out[i * 2 + k] = t.submit_as(who, 2, 1, c).map_err(|(c, _)| c);
            }
        }
        out
    }

    #[test]
    fn concurrent_moves_of_different_vertices_both_apply_same_vertex_last_wins() {
        let t = Edit::new(Limits::DEFAULT);
        let e = t.entity();
        let (v0, v1) = (VertexKey(t.el(0)), VertexKey(t.el(1)));
        let mv = |v, p| Command::MoveVertices {
            entity: e,
            moves: vec![(v, p)],
        };
        assert_eq!(
            both_orders(mv(v0, Vec3::ONE), mv(v1, Vec3::ZERO)),
            [Ok(()), Ok(()), Ok(()), Ok(())]
        );
        // Same vertex: both accepted; the later in total order (equal lamports: the second
        // editor, whose author id is larger) wins whichever arrives first.
        for swap in [false, true] {
            let mut t = Edit::new(Limits::DEFAULT);
            assert!(t.people[1].1 > t.people[0].1);
            let (early, late) = (mv(v0, Vec3::ONE), mv(v0, Vec3::splat(2.0)));
            if swap {
                assert_eq!(t.submit_as(1, 2, 1, late), Ok(()));
                assert_eq!(t.submit_as(0, 2, 1, early), Ok(()));
            } else {
                assert_eq!(t.submit_as(0, 2, 1, early), Ok(()));
                assert_eq!(t.submit_as(1, 2, 1, late), Ok(()));
            }
            let Some(Geometry::Mesh(m)) =
                t.h.session
                    .scene()
                    .entities
                    .get(&e)
                    .map(|x| x.geometry.clone())
            else {
                panic!("the cube became an edited mesh");
            };
            assert_eq!(m.vertices()[&v0], Vec3::splat(2.0), "swap {swap}");
        }
    }

    #[test]
    fn a_topology_edit_of_a_concurrently_replaced_element_is_refused() {
        let t = Edit::new(Limits::DEFAULT);
        let e = t.entity();
        let top = FaceKey(t.el(top()));
        let subdivide = Command::SubdivideFaces {
            entity: e,
            faces: vec![top],
            cuts: 1,
        };
        let extrude = Command::ExtrudeFaces {
            entity: e,
            faces: vec![top],
            direction: ExtrudeDirection::Normal { distance_m: 1.0 },
            snap_m: None,
        };
        // Whichever arrives second is refused: the same face is contested (reject strategy).
        let r = both_orders(subdivide.clone(), extrude.clone());
        assert_eq!(r[0], Ok(()));
        assert_eq!(r[1], Err(RefusalCode::Conflict));
        assert_eq!(r[2], Ok(()));
        assert_eq!(r[3], Err(RefusalCode::Conflict));
        // Smoothing the whole mesh replaces the top face: a concurrent extrude of it that
        // arrives later is refused by the scene (the face is gone), in both orders one wins.
        let smooth = Command::Smooth {
            entity: e,
            faces: vec![],
            levels: 1,
        };
        let r = both_orders(smooth, extrude);
        assert_eq!(r[0], Ok(()));
        assert_eq!(r[1], Err(RefusalCode::Conflict));
        assert_eq!(r[2], Ok(()), "the extrude first");
        assert_eq!(r[3], Ok(()), "then smoothing the extruded mesh");
    }

    #[test]
    fn set_transform_is_last_write_wins() {
        for swap in [false, true] {
            let mut t = Edit::new(Limits::DEFAULT);
            let e = t.entity();
            let at = |x: f32| Command::SetTransform {
                entity: e,
                transform: Transform {
                    translation: Vec3::new(x, 0.0, 0.0),
                    ..Transform::IDENTITY
                },
            };
            if swap {
                assert_eq!(t.submit_as(1, 2, 1, at(3.0)), Ok(()));
                assert_eq!(t.submit_as(0, 2, 1, at(2.0)), Ok(()));
            } else {
                assert_eq!(t.submit_as(0, 2, 1, at(2.0)), Ok(()));
                assert_eq!(t.submit_as(1, 2, 1, at(3.0)), Ok(()));
            }
            let got = t.h.session.scene().entities[&e].transform.translation;
            assert_eq!(
                got,
                Vec3::new(3.0, 0.0, 0.0),
                "not their sum, the later one"
            );
        }
    }
}

fn snapshots(out: &[Output], to: ClientId) -> usize {
    sent_to(out, to)
        .iter()
        .filter(|m| matches!(m, ServerMsg::Snapshot(_)))
        .count()
}

fn throttled(out: &[Output], reason: &str) -> usize {
    out.iter()
        .filter(|o| matches!(o, Output::Event(Event::Throttled { reason: r, .. }) if *r == reason))
        .count()
}

/// `Resync` in a loop: a burst of snapshots, then the requests are counted and coalesced into
/// one snapshot sent when the bucket refills (the session asks to be woken then); another
/// client is served all along.
#[test]
fn resyncs_over_the_limit_are_deferred_and_coalesced() {
    let mut h = Harness::new();
    h.join(C1, &Ed25519Signer::from_seed([1; 32]), Role::Editor);
    h.join(C2, &Ed25519Signer::from_seed([2; 32]), Role::Editor);
    let resync = ClientMsg::Resync(Resync { position: 0 });
    let (mut sent, mut counted) = (0, 0);
    for _ in 0..20 {
        let out = h.send(C1, &resync);
        sent += snapshots(&out, C1);
        counted += throttled(&out, "resync_throttled");
    }
    assert_eq!(sent, RESYNC_BURST as usize);
    assert_eq!(counted, 20 - RESYNC_BURST as usize);
    // Nothing more at once; the wake-up is when one token is back.
    let out = h.input(Input::Tick);
    assert_eq!(snapshots(&out, C1), 0);
    let per_token = 60_000 / u64::from(h.session.config.resync_per_min);
    let out = h.send(C2, &resync);
    assert_eq!(
        snapshots(&out, C2),
        1,
        "another connection has its own bucket"
    );
    // Following the session's wake-ups (the state hash's too), the owed snapshot comes within
    // one token's time, once.
    let start = h.now;
    let mut owed = 0;
    while owed == 0 {
        let wake = h.session.poll_timeout().unwrap();
        assert!(
            wake > h.now && wake <= start + per_token,
            "wake at +{}",
            wake - start
        );
        h.now = wake;
        owed = snapshots(&h.input(Input::Tick), C1);
    }
    assert_eq!(owed, 1, "the owed snapshot, once");
    h.now += 10 * per_token;
    let out = h.input(Input::Tick);
    assert_eq!(snapshots(&out, C1), 0, "the coalesced requests were one");
}

/// A history of `n` Lamport times: C1's author moves its entity at each, C2's at every third
/// too (two authors at one time), a second apart (under the submit rate limit), all durable.
fn history_of_two(
    h: &mut Harness,
    store: &mut FakeStore,
    (s1, a1): (&Ed25519Signer, AuthorId),
    (s2, a2): (&Ed25519Signer, AuthorId),
    n: u64,
) {
    for lamport in 1..=n {
        h.now = h.now.saturating_add(1000);
        let out = h.send(
            C1,
            &ClientMsg::Submit(Submit {
                entries: vec![entry(s1, a1, lamport, lamport, mv(a1))],
            }),
        );
        store.absorb(h, out);
        if lamport % 3 == 0 {
            let out = h.send(
                C2,
                &ClientMsg::Submit(Submit {
                    entries: vec![entry(s2, a2, lamport.div_euclid(3), lamport, mv(a2))],
                }),
            );
            store.absorb(h, out);
        }
    }
}

/// `FetchLog` answers a page at a time (cut after the last entry of a Lamport time, so entries
/// of two authors at one time are never split), a burst of pages at once and then one per
/// refill; the pages together are the whole log in total order, `done` on the last.
#[test]
fn history_goes_out_in_rate_limited_pages() {
    let mut h = Harness::new();
    h.session.config.history_page = 2;
    let (s1, s2) = (
        Ed25519Signer::from_seed([1; 32]),
        Ed25519Signer::from_seed([2; 32]),
    );
    let a1 = h.join(C1, &s1, Role::Editor);
    let a2 = h.join(C2, &s2, Role::Editor);
    let mut store = FakeStore::default();
    history_of_two(&mut h, &mut store, (&s1, a1), (&s2, a2), 20);
    let total = h.session.log().len();
    assert_eq!(total, 26);
    let mut got: Vec<SignedEntry> = Vec::new();
    let mut pages = 0;
    let mut done = false;
    let take = |out: &[Output], got: &mut Vec<SignedEntry>| -> (bool, bool) {
        let mut page = (false, false);
        for m in sent_to(out, ClientId(3)) {
            if let ServerMsg::History(hist) = m {
                page.0 = true;
                got.extend(hist.entries);
                page.1 |= hist.done;
            }
        }
        page
    };
    h.join(
        ClientId(3),
        &Ed25519Signer::from_seed([3; 32]),
        Role::Viewer,
    );
    let out = h.send(
        ClientId(3),
        &ClientMsg::FetchLog(FetchLog { since_lamport: 0 }),
    );
    let (page, fin) = take(&out, &mut got);
    assert!(page && !fin, "a first page, not the last");
    pages += 1;
    // The burst: pages on ticks at the same instant until the bucket is empty.
    loop {
        let out = h.input(Input::Tick);
        let (page, fin) = take(&out, &mut got);
        if !page {
            break;
        }
        pages += 1;
        done |= fin;
    }
    assert_eq!(
        pages, HISTORY_BURST as usize,
        "a burst of pages, then a pause"
    );
    assert!(!done);
    let per_token = 60_000 / u64::from(h.session.config.history_per_min);
    while !done {
        let before = h.now;
        let mut page = false;
        while !page {
            let wake = h.session.poll_timeout().unwrap();
            assert!(wake > h.now && wake <= before + per_token, "woken too late");
            h.now = wake;
            let (p, fin) = take(&h.input(Input::Tick), &mut got);
            page = p;
            done = fin;
        }
        pages += 1;
    }
    assert!(pages > HISTORY_BURST as usize);
    let ids: Vec<meshwork_protocol::CommandId> =
        got.iter().map(|e| e.decode_body().unwrap().id()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "total order, no entry twice");
    assert_eq!(ids.len(), total, "the whole log");
    assert!(
        h.session.poll_timeout().is_none_or(|t| t > h.now),
        "no work left"
    );
}

/// History the log let go of comes back from the store: `FetchLog` asks the glue to read the
/// stored positions where those Lamport times are (`Output::ReadStored`), sends what it reads
/// in total order, then the held entries; together the whole log, each entry once, `done` last.
/// A later `FetchLog` makes an answer still being read stale.
#[test]
fn history_the_log_let_go_of_is_read_back_from_the_store() {
    let mut h = Harness::new();
    h.session.config.log_window = 4;
    h.session.config.history_page = 8;
    h.session.config.rate_per_s = 1000;
    h.session.config.burst = 1000;
    let (s1, s2) = (
        Ed25519Signer::from_seed([1; 32]),
        Ed25519Signer::from_seed([2; 32]),
    );
    let a1 = h.join(C1, &s1, Role::Editor);
    let a2 = h.join(C2, &s2, Role::Editor);
    let mut store = FakeStore::default();
    history_of_two(&mut h, &mut store, (&s1, a1), (&s2, a2), 30);
    let total = h.session.log().len();
    assert_eq!(total, 40);
    assert!(h.session.log().held() <= 5, "the log let go of most of it");
    let reader = ClientId(3);
    h.join(reader, &Ed25519Signer::from_seed([3; 32]), Role::Viewer);

    // Carries out what the session asks of the store; returns the history entries sent to
    // the reader, whether one was the last, and how many reads were asked for.
    let serve = |h: &mut Harness, out: Vec<Output>, got: &mut Vec<SignedEntry>| {
        let mut queue: VecDeque<Output> = out.into();
        let (mut done, mut reads) = (false, 0);
        while let Some(o) = queue.pop_front() {
            match o {
                Output::ReadStored {
                    client,
                    request,
                    ranges,
                } => {
                    reads += 1;
                    let entries = ranges
                        .into_iter()
                        .flatten()
                        .filter_map(|p| store.entries.get(usize::try_from(p - 1).ok()?).cloned())
                        .collect();
                    queue.extend(h.input(Input::Stored {
                        client,
                        request,
                        entries,
                    }));
                }
                o => {
                    for m in sent_to(std::slice::from_ref(&o), reader) {
                        if let ServerMsg::History(hist) = m {
                            got.extend(hist.entries);
                            done |= hist.done;
                        }
                    }
                }
            }
        }
        (done, reads)
    };

    // A request whose read is overtaken by a second FetchLog: its answer is dropped.
    let stale = h.send(reader, &ClientMsg::FetchLog(FetchLog { since_lamport: 0 }));
    assert!(
        stale.iter().any(|o| matches!(o, Output::ReadStored { .. })),
        "history before the window is read from the store"
    );
    let mut got = Vec::new();
    let out = h.send(reader, &ClientMsg::FetchLog(FetchLog { since_lamport: 0 }));
    let (mut done, mut reads) = serve(&mut h, out, &mut got);
    let (_, stale_reads) = serve(&mut h, stale, &mut got);
    assert_eq!(stale_reads, 1);
    while !done {
        h.now += 60_000;
        let out = h.input(Input::Tick);
        let (d, r) = serve(&mut h, out, &mut got);
        done = d;
        reads += r;
    }
    assert!(reads >= 1);
    let ids: Vec<meshwork_protocol::CommandId> =
        got.iter().map(|e| e.decode_body().unwrap().id()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "total order, no entry twice");
    assert_eq!(ids.len(), total, "the whole log");
}

fn presence_from(h: &mut Harness, client: ClientId, seq: u32) -> Vec<Output> {
    let p = Presence {
        seq,
        head: None,
        hands: [None, None],
        cursor: None,
    };
    let bytes = postcard::to_allocvec(&ClientMsg::Presence(p)).unwrap();
    h.input(Input::Datagram { client, bytes })
}

fn presence_seqs(out: &[Output], to: ClientId) -> Vec<u32> {
    sent_to(out, to)
        .into_iter()
        .filter_map(|m| match m {
            ServerMsg::Presence(p) => Some(p.presence.seq),
            _ => None,
        })
        .collect()
}

/// An author who rejoins numbers presence from 1 again on the new connection: it is relayed at
/// once, not dropped until it passes the old connection's numbers; within a connection an older
/// update still loses to a newer one.
#[test]
fn a_rejoined_authors_presence_flows_at_once() {
    let mut h = Harness::new();
    let s1 = Ed25519Signer::from_seed([1; 32]);
    let a1 = h.join(C1, &s1, Role::Editor);
    h.join(C2, &Ed25519Signer::from_seed([2; 32]), Role::Editor);
    assert_eq!(
        presence_seqs(&presence_from(&mut h, C1, 500), C2),
        vec![500]
    );
    assert!(presence_seqs(&presence_from(&mut h, C1, 499), C2).is_empty());
    let c3 = ClientId(3);
    assert_eq!(
        h.join(c3, &s1, Role::Editor),
        a1,
        "the same key rejoins as the same author"
    );
    h.now += 100;
    assert_eq!(presence_seqs(&presence_from(&mut h, c3, 1), C2), vec![1]);
    h.now += 100;
    assert_eq!(presence_seqs(&presence_from(&mut h, c3, 2), C2), vec![2]);
    assert!(presence_seqs(&presence_from(&mut h, c3, 1), C2).is_empty());
    // The replaced connection's datagrams are not relayed.
    assert!(presence_seqs(&presence_from(&mut h, C1, 501), C2).is_empty());
}

fn snapshot_frames(out: &[Output], to: ClientId) -> Vec<Arc<[u8]>> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { client, frame, .. } if *client == to => {
                let msg = decode_frame::<ServerMsg>(frame).unwrap().unwrap().0;
                matches!(msg, ServerMsg::Snapshot(_) | ServerMsg::SnapshotChunk(_))
                    .then(|| frame.clone())
            }
            _ => None,
        })
        .collect()
}

/// A member who rejoins with a viewer's invite keeps the editor role its entries were checked
/// under: the stored record does not change, and the log still replays after a restart (it
/// failed to replay before: the entries were checked against the lowered role).
#[test]
fn a_rejoin_with_a_lower_role_keeps_the_role_and_the_log_replays() {
    let mut h = Harness::new();
    let mut store = FakeStore::default();
    let s1 = Ed25519Signer::from_seed([1; 32]);
    let a1 = h.join(C1, &s1, Role::Editor);
    let out = h.input(Input::PersistAck { batch: BatchId(0) });
    store.absorb(&mut h, out);
    let out = h.send(
        C1,
        &ClientMsg::Submit(Submit {
            entries: vec![entry(&s1, a1, 1, 1, mv(a1))],
        }),
    );
    store.absorb(&mut h, out);
    assert_eq!(store.entries.len(), 1);
    let c3 = ClientId(3);
    assert_eq!(h.join(c3, &s1, Role::Viewer), a1);
    assert_eq!(h.session.log().keys().role(a1), Some(Role::Editor));
    store.authors = h.session.authors();
    let (restored, _) = Session::restore(
        Config::new(SESSION, h.server.public_key()),
        [0; 32],
        NOW,
        &store.authors,
        &[],
        None,
        store.entries.clone(),
    )
    .expect("the log replays");
    assert_eq!(restored.log().state_hash(), h.session.log().state_hash());
}

/// Joins and resyncs at one scene position share one encoding of the scene (the very same
/// frames); once an entry moves the scene on, the next snapshot is encoded afresh and shows it.
#[test]
fn snapshots_at_one_position_are_encoded_once() {
    let mut h = Harness::new();
    let s1 = Ed25519Signer::from_seed([1; 32]);
    let a1 = h.join(C1, &s1, Role::Editor);
    let joined = |h: &mut Harness, client: ClientId, seed: u8| {
        let signer = Ed25519Signer::from_seed([seed; 32]);
        h.join_outputs(client, &signer, Role::Viewer).1
    };
    let first = snapshot_frames(&joined(&mut h, C2, 2), C2);
    let second = snapshot_frames(&joined(&mut h, ClientId(3), 3), ClientId(3));
    let resync = snapshot_frames(&h.send(C1, &ClientMsg::Resync(Resync { position: 0 })), C1);
    assert!(!first.is_empty());
    for other in [&second, &resync] {
        assert_eq!(other.len(), first.len());
        assert!(
            first
                .iter()
                .zip(other.iter())
                .all(|(a, b)| Arc::ptr_eq(a, b)),
            "the same position was encoded again"
        );
    }
    let mut store = FakeStore::default();
    let out = h.send(
        C1,
        &ClientMsg::Submit(Submit {
            entries: vec![entry(&s1, a1, 1, 1, mv(a1))],
        }),
    );
    store.absorb(&mut h, out);
    let later = snapshot_frames(&joined(&mut h, ClientId(4), 4), ClientId(4));
    assert!(
        !Arc::ptr_eq(&later[0], &first[0]),
        "a stale snapshot was reused"
    );
    let Some(ServerMsg::Snapshot(m)) = decode_frame::<ServerMsg>(&later[0]).unwrap().map(|x| x.0)
    else {
        panic!("the first frame is the manifest");
    };
    assert_eq!(m.position, 1);
}

/// The session admits at most `max_authors` member keys: a new key past it is refused with a
/// reason, a known key still rejoins.
#[test]
fn member_keys_are_bounded_and_known_keys_rejoin() {
    let mut h = Harness::new();
    h.session.config.max_authors = 2;
    let (k1, k2, k3) = (
        Ed25519Signer::from_seed([1; 32]),
        Ed25519Signer::from_seed([2; 32]),
        Ed25519Signer::from_seed([3; 32]),
    );
    let a1 = h.join(C1, &k1, Role::Editor);
    h.join(C2, &k2, Role::Editor);
    let out = h.prove(ClientId(3), &k3, Role::Editor);
    assert!(
        matches!(
            sent_to(&out, ClientId(3)).first(),
            Some(ServerMsg::JoinRefused(r))
                if r.reason == JoinRefusal::SessionFull && r.message.contains("2 keys")
        ),
        "{out:?}"
    );
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Event(Event::JoinRefused {
            reason: JoinRefusal::SessionFull,
            ..
        })
    )));
    h.input(Input::Disconnected { client: C1 });
    assert_eq!(h.join(ClientId(4), &k1, Role::Editor), a1);
}

/// Bad values at the edge, table-driven: each signed, well-framed entry carrying one is refused
/// with a typed code and a message naming the problem, counted as a refusal event, and the
/// session keeps serving the same author.
#[test]
fn bad_values_are_refused_with_a_typed_reason_and_counted() {
    use meshwork_protocol::Transform;
    use meshwork_protocol::command::Primitive;
    use meshwork_protocol::editmesh::{ElementId, VertexKey};
    let mut h = Harness::new();
    h.session.config.burst = 100;
    let s = Ed25519Signer::from_seed([1; 32]);
    let a = h.join(C1, &s, Role::Editor);
    let e = EntityId::new(a, 1);
    let at = |v: Vec3| Transform {
        translation: v,
        ..Transform::IDENTITY
    };
    let far_vertex = VertexKey(ElementId {
        by: meshwork_protocol::CommandId::first_at(1),
        index: 0,
    });
    let cases: Vec<(&str, Command, RefusalCode, &str)> = vec![
        (
            "NaN delta",
            Command::Translate {
                entity: e,
                delta: Vec3::NAN,
            },
            RefusalCode::Malformed,
            "finite",
        ),
        (
            "infinite delta",
            Command::Translate {
                entity: e,
                delta: Vec3::new(f32::INFINITY, 0.0, 0.0),
            },
            RefusalCode::Malformed,
            "finite",
        ),
        (
            "1e30 m position",
            Command::Spawn {
                entity: e,
                primitive: Primitive::Cube,
                transform: at(Vec3::splat(1.0e30)),
            },
            RefusalCode::Malformed,
            "100000 m",
        ),
        (
            "zero scale",
            Command::Scale {
                entity: e,
                factor: Vec3::ZERO,
            },
            RefusalCode::Malformed,
            "allowed range",
        ),
        (
            "negative scale",
            Command::Scale {
                entity: e,
                factor: Vec3::new(-1.0, 1.0, 1.0),
            },
            RefusalCode::Malformed,
            "allowed range",
        ),
        (
            "1 MiB name",
            Command::SetName {
                entity: e,
                name: "n".repeat(1 << 20),
            },
            RefusalCode::Malformed,
            "longer than 256",
        ),
        (
            "a vertex move past the element limit",
            Command::MoveVertices {
                entity: e,
                moves: vec![(far_vertex, Vec3::ZERO); meshwork_protocol::command::MAX_ELEMENTS + 1],
            },
            RefusalCode::Malformed,
            "longer than 16384",
        ),
    ];
    let mut seq = 0u64;
    for (what, command, code, says) in cases {
        seq += 1;
        h.now += 100;
        let out = h.send(
            C1,
            &ClientMsg::Submit(Submit {
                entries: vec![entry(&s, a, seq, 1, command)],
            }),
        );
        let refused = sent_to(&out, C1).into_iter().find_map(|m| match m {
            ServerMsg::CommandRefused(r) => Some(r),
            _ => None,
        });
        let Some(r) = refused else {
            panic!("{what}: not refused: {out:?}");
        };
        assert_eq!(r.code, code, "{what}: {}", r.message);
        assert!(
            r.message.contains(says),
            "{what}: refused for another reason: {}",
            r.message
        );
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Event(Event::Refused { code: c }) if *c == code)),
            "{what}: not counted"
        );
        assert_eq!(closed(&out, C1), None, "{what}: the author was cut off");
    }
    // An unknown command tag inside a correctly signed body.
    seq += 1;
    let body = |command| {
        let b = EntryBody::new(SESSION, a, s.public_key().key_id(), seq, 1, 0, command);
        SignedEntry::sign(&b, &s).unwrap().body
    };
    let (one, two) = (
        body(Command::Despawn { entity: e }),
        body(Command::Translate {
            entity: e,
            delta: Vec3::X,
        }),
    );
    let tag = one.iter().zip(&two).position(|(x, y)| x != y).unwrap();
    let mut bytes = one;
    bytes[tag] = 0x7f; // no command has this tag
    let mut signed =
        meshwork_protocol::sign::entry_context(PROTOCOL_VERSION, SESSION, s.public_key().key_id());
    signed.extend_from_slice(&bytes);
    let signature = s.sign(&signed);
    let out = h.send(
        C1,
        &ClientMsg::Submit(Submit {
            entries: vec![SignedEntry {
                body: bytes,
                signature,
            }],
        }),
    );
    assert!(
        sent_to(&out, C1)
            .iter()
            .any(|m| matches!(m, ServerMsg::CommandRefused(r) if r.code == RefusalCode::Malformed)),
        "unknown tag: {out:?}"
    );
    // Still serving: a good entry with the next sequence number is accepted.
    let out = h.send(
        C1,
        &ClientMsg::Submit(Submit {
            entries: vec![entry(&s, a, seq + 1, 1, mv(a))],
        }),
    );
    assert!(
        out.iter().any(|o| matches!(o, Output::Persist { .. })),
        "{out:?}"
    );
}

fn lefts(out: &[Output], to: ClientId) -> Vec<AuthorId> {
    sent_to(out, to)
        .into_iter()
        .filter_map(|m| match m {
            ServerMsg::Left(l) => Some(l.author),
            _ => None,
        })
        .collect()
}

/// The others hear when a member's last connection goes (a disconnect, or the server closing
/// it), not when a rejoin replaces a connection, and never about someone who had not joined.
#[test]
fn the_others_are_told_when_a_member_leaves() {
    let mut h = Harness::new();
    let s1 = Ed25519Signer::from_seed([1; 32]);
    let a1 = h.join(C1, &s1, Role::Editor);
    let a2 = h.join(C2, &Ed25519Signer::from_seed([2; 32]), Role::Editor);
    let c5 = ClientId(5);
    h.join(c5, &Ed25519Signer::from_seed([5; 32]), Role::Viewer);
    // A rejoin from a new connection closes the old one: not a departure.
    let c3 = ClientId(3);
    let (_, out) = h.join_outputs(c3, &s1, Role::Editor);
    assert!(lefts(&out, C2).is_empty(), "a rejoin is not a leave");
    let out = h.input(Input::Disconnected { client: C1 });
    assert!(
        lefts(&out, C2).is_empty(),
        "the replaced connection going is not a leave"
    );
    // The author's live connection goes: the others are told, once.
    let out = h.input(Input::Disconnected { client: c3 });
    assert_eq!(lefts(&out, C2), vec![a1]);
    assert_eq!(lefts(&out, c5), vec![a1]);
    // A connection that never joined leaves no trace.
    let c4 = ClientId(4);
    h.input(Input::Connected { client: c4 });
    let out = h.input(Input::Disconnected { client: c4 });
    assert!(lefts(&out, C2).is_empty());
    // The server closes a member (too slow): the others are told too, not the closed one.
    let out = h.input(Input::Backpressure { client: C2 });
    assert_eq!(closed(&out, C2), Some(CloseReason::TooSlow));
    assert_eq!(lefts(&out, c5), vec![a2]);
    assert!(lefts(&out, C2).is_empty());
}

fn preview_from(h: &mut Harness, client: ClientId, seq: u32, entity: EntityId) -> Vec<Output> {
    let p = wire::Preview {
        seq,
        entity,
        transform: Some(wire::PreviewTransform {
            pose: wire::Pose {
                position_mm: [1000, 500, 0],
                rotation: [0, 0, 0, 32767],
            },
            scale_permille: [1000; 3],
        }),
    };
    let bytes = postcard::to_allocvec(&ClientMsg::Preview(p)).unwrap();
    h.input(Input::Datagram { client, bytes })
}

/// (lane, what `pick` takes from it) of every message sent to `to` that `pick` takes.
fn sent_on_lanes<T>(
    out: &[Output],
    to: ClientId,
    pick: impl Fn(ServerMsg) -> Option<T>,
) -> Vec<(Lane, T)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send {
                client,
                lane,
                frame,
            } if *client == to => {
                pick(decode_frame::<ServerMsg>(frame).unwrap().unwrap().0).map(|t| (*lane, t))
            }
            _ => None,
        })
        .collect()
}

/// (lane, preview seq) of every preview sent to `to`.
fn previews_to(out: &[Output], to: ClientId) -> Vec<(Lane, u32)> {
    sent_on_lanes(out, to, |m| match m {
        ServerMsg::Preview(p) => Some(p.preview.seq),
        _ => None,
    })
}

/// An editor's live preview reaches the others at once on the unreliable lane (latest wins,
/// one sequence with presence); a viewer's is not relayed; nothing is logged.
#[test]
fn previews_are_relayed_unreliably_from_editors_only() {
    let mut h = Harness::new();
    let editor = h.join(C1, &Ed25519Signer::from_seed([1; 32]), Role::Editor);
    h.join(C2, &Ed25519Signer::from_seed([2; 32]), Role::Editor);
    let c3 = ClientId(3);
    h.join(c3, &Ed25519Signer::from_seed([3; 32]), Role::Viewer);
    let cube = EntityId::new(editor, 1);
    let out = preview_from(&mut h, C1, 5, cube);
    assert_eq!(previews_to(&out, C2), vec![(Lane::Unreliable, 5)]);
    assert_eq!(previews_to(&out, c3), vec![(Lane::Unreliable, 5)]);
    assert!(
        previews_to(&out, C1).is_empty(),
        "not echoed to the dragger"
    );
    // Older than the last relayed (presence shares the sequence): dropped.
    h.now += 100;
    assert!(previews_to(&preview_from(&mut h, C1, 4, cube), C2).is_empty());
    h.now += 100;
    presence_from(&mut h, C1, 7);
    h.now += 100;
    assert!(previews_to(&preview_from(&mut h, C1, 6, cube), C2).is_empty());
    h.now += 100;
    assert_eq!(previews_to(&preview_from(&mut h, C1, 8, cube), C2).len(), 1);
    // A viewer cannot drag: nothing relayed.
    h.now += 100;
    let out = preview_from(&mut h, c3, 1, cube);
    assert!(previews_to(&out, C1).is_empty() && previews_to(&out, C2).is_empty());
    // Never logged, never persisted.
    assert!(!out.iter().any(|o| matches!(o, Output::Persist { .. })));
    assert_eq!(h.session.log().len(), 0);
}

/// A mesh-edit preview (the command a gesture would commit) reaches the others on the
/// unreliable lane from editors only; a command that is not a mesh edit of the named entity,
/// or names too many elements, is dropped and counted.
#[test]
fn edit_previews_are_relayed_when_they_are_small_mesh_edits_of_their_entity() {
    use meshwork_protocol::command::ExtrudeDirection;
    use meshwork_protocol::editmesh::{ElementId, FaceKey};
    let mut h = Harness::new();
    let editor = h.join(C1, &Ed25519Signer::from_seed([1; 32]), Role::Editor);
    h.join(C2, &Ed25519Signer::from_seed([2; 32]), Role::Editor);
    let cube = EntityId::new(editor, 1);
    let face = |index| {
        FaceKey(ElementId {
            by: meshwork_protocol::CommandId {
                lamport: 1,
                author: editor,
            },
            index,
        })
    };
    let extrude = |entity, n: u32| Command::ExtrudeFaces {
        entity,
        faces: (0..n).map(face).collect(),
        direction: ExtrudeDirection::Normal { distance_m: 0.4 },
        snap_m: None,
    };
    let send = |h: &mut Harness, seq, entity, command: Option<Command>| {
        h.now += 100;
        let p = wire::EditPreview {
            seq,
            entity,
            command,
        };
        let bytes = postcard::to_allocvec(&ClientMsg::EditPreview(p)).unwrap();
        h.input(Input::Datagram { client: C1, bytes })
    };
    let relayed = |out: &[Output]| -> Vec<(Lane, Option<Command>)> {
        sent_on_lanes(out, C2, |m| match m {
            ServerMsg::EditPreview(p) => Some(p.preview.command),
            _ => None,
        })
    };
    let dropped = |out: &[Output]| {
        out.iter()
            .any(|o| matches!(o, Output::Event(Event::PresenceDropped)))
    };
    let out = send(&mut h, 1, cube, Some(extrude(cube, 1)));
    assert_eq!(
        relayed(&out),
        vec![(Lane::Unreliable, Some(extrude(cube, 1)))]
    );
    let out = send(&mut h, 2, cube, None);
    assert_eq!(
        relayed(&out),
        vec![(Lane::Unreliable, None)],
        "the end of the gesture"
    );
    // Another entity than the one named, a command that is no mesh edit, too many faces.
    let other = EntityId::new(editor, 2);
    for (seq, command) in [
        (3, extrude(other, 1)),
        (4, Command::Despawn { entity: cube }),
        (
            5,
            extrude(cube, u32::try_from(wire::MAX_PREVIEW_ELEMENTS).unwrap() + 1),
        ),
    ] {
        let out = send(&mut h, seq, cube, Some(command));
        assert!(relayed(&out).is_empty() && dropped(&out), "preview {seq}");
    }
    assert_eq!(h.session.log().len(), 0, "never logged");
}

/// Element selections reach the others on the unreliable lane, from any member (a viewer
/// points at elements too); one naming too many elements is dropped and counted.
#[test]
fn element_selections_are_relayed_unreliably_and_bounded() {
    use meshwork_protocol::editmesh::ElementId;
    let mut h = Harness::new();
    let viewer = h.join(C1, &Ed25519Signer::from_seed([1; 32]), Role::Viewer);
    h.join(C2, &Ed25519Signer::from_seed([2; 32]), Role::Editor);
    let el = |index| ElementId {
        by: meshwork_protocol::CommandId {
            lamport: 1,
            author: viewer,
        },
        index,
    };
    let send = |h: &mut Harness, seq, n: u32| {
        h.now += 100;
        let s = wire::ElementSelection {
            seq,
            entity: Some(EntityId::new(viewer, 1)),
            elements: (0..n).map(el).collect(),
        };
        let bytes = postcard::to_allocvec(&ClientMsg::ElementSelection(s)).unwrap();
        h.input(Input::Datagram { client: C1, bytes })
    };
    let relayed = |out: &[Output]| -> Vec<(Lane, (AuthorId, usize))> {
        sent_on_lanes(out, C2, |m| match m {
            ServerMsg::ElementSelection(s) => Some((s.author, s.selection.elements.len())),
            _ => None,
        })
    };
    assert_eq!(
        relayed(&send(&mut h, 1, 3)),
        vec![(Lane::Unreliable, (viewer, 3))]
    );
    let too_many = u32::try_from(wire::MAX_PREVIEW_ELEMENTS).unwrap() + 1;
    let out = send(&mut h, 2, too_many);
    assert!(relayed(&out).is_empty());
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Event(Event::PresenceDropped)))
    );
    assert_eq!(h.session.log().len(), 0, "never logged");
}

mod held;
mod resume;
mod undo;

/// An admin demotes an editor and removes a viewer: the roles everyone holds change (a roster
/// update), the demoted member's next edit is refused, a rejoin with an editor invite does not
/// undo the demotion, a restart from the store keeps it (the member's earlier edits still
/// replay), and the removed member's connection is closed as kicked with the reason.
#[test]
fn an_admin_changes_a_role_and_removes_a_member() {
    let mut h = Harness::new();
    let mut store = FakeStore::default();
    let (admin, editor, viewer) = (
        Ed25519Signer::from_seed([1; 32]),
        Ed25519Signer::from_seed([2; 32]),
        Ed25519Signer::from_seed([3; 32]),
    );
    let c3 = ClientId(3);
    let (out, a) = (Vec::new(), h.join(C1, &admin, Role::Admin));
    store.absorb(&mut h, out);
    let b = h.join(C2, &editor, Role::Editor);
    let c = h.join(c3, &viewer, Role::Viewer);
    for batch in 0..3 {
        let out = h.input(Input::PersistAck {
            batch: BatchId(batch),
        });
        store.absorb(&mut h, out);
    }
    store.authors = h.session.authors();
    let submit = |h: &mut Harness, store: &mut FakeStore, client, e| {
        let out = h.send(client, &ClientMsg::Submit(Submit { entries: vec![e] }));
        let refused: Vec<_> = sent_to(&out, client)
            .into_iter()
            .filter_map(|m| match m {
                ServerMsg::CommandRefused(r) => Some(r),
                _ => None,
            })
            .collect();
        let mut all = out.clone();
        store.absorb(h, out);
        all.extend(h.session.poll_output());
        (refused, all)
    };
    let (refused, _) = submit(&mut h, &mut store, C2, entry(&editor, b, 1, 1, mv(b)));
    assert!(refused.is_empty(), "an editor edits: {refused:?}");

    // The admin demotes B: everyone's roster says so, once it is durable.
    let demote = Command::SetRole {
        author: b,
        role: Role::Viewer,
    };
    let out = h.send(
        C1,
        &ClientMsg::Submit(Submit {
            entries: vec![entry(&admin, a, 1, 2, demote)],
        }),
    );
    let after = store.absorb_all(&mut h, out);
    let rosters = |to| {
        sent_to(&after, to)
            .into_iter()
            .filter_map(|m| match m {
                ServerMsg::Roster(r) => Some(r.members),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    for to in [C1, C2, c3] {
        assert!(
            rosters(to)
                .iter()
                .flatten()
                .any(|m| m.author == b && m.role == Role::Viewer),
            "{to:?} is told B's new role"
        );
    }
    // B's next edit is refused with the reason.
    let (refused, _) = submit(&mut h, &mut store, C2, entry(&editor, b, 2, 4, mv(b)));
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].code, RefusalCode::Permission);
    assert!(
        refused[0].message.contains("viewer"),
        "{}",
        refused[0].message
    );

    // B rejoins with an editor invite: still a viewer.
    let c4 = ClientId(4);
    let (_, out) = h.join_outputs(c4, &editor, Role::Editor);
    let welcome = sent_to(&out, c4).into_iter().find_map(|m| match m {
        ServerMsg::Welcome(w) => Some(w),
        _ => None,
    });
    assert_eq!(welcome.map(|w| w.role), Some(Role::Viewer));

    // The admin removes C: C's connection closes as kicked, with the reason.
    let kick = Command::Kick {
        author: c,
        reason: "wrong session".into(),
        revoke_invite: true,
    };
    let out = h.send(
        C1,
        &ClientMsg::Submit(Submit {
            entries: vec![entry(&admin, a, 2, 3, kick)],
        }),
    );
    let all = store.absorb_all(&mut h, out);
    assert_eq!(closed(&all, c3), Some(CloseReason::Kicked));
    let said = sent_to(&all, c3).into_iter().find_map(|m| match m {
        ServerMsg::Close(c) => Some(c.message),
        _ => None,
    });
    assert!(
        said.as_deref().is_some_and(|m| m.contains("wrong session")),
        "{said:?}"
    );
    // Asked for: the invite C joined with is revoked too.
    assert!(
        h.session
            .invites()
            .iter()
            .any(|r| r.keys.contains(&c) && r.revoked_at_ms.is_some())
    );

    // A restart from the store (the key records as written at the joins): B is still a
    // viewer, and B's edit made as an editor replays.
    let (mut restored, report) = Session::restore(
        Config::signed_by(SESSION, Arc::new(Ed25519Signer::from_seed([0x5e; 32]))),
        [0; 32],
        NOW,
        &store.authors,
        &[],
        None,
        store.entries.clone(),
    )
    .unwrap();
    assert_eq!(report.replayed, store.entries.len() as u64);
    assert_eq!(restored.log().keys().role(b), Some(Role::Viewer));
    assert_eq!(restored.log().state_hash(), h.session.log().state_hash());
    let _ = restored.poll_output();
}

/// With the admin token (no member key), the server signs the change as a member of its own:
/// announced to everyone before its entry, stored, carried out like an in-session admin's, and
/// replayed from the store. Only role changes and removals, never of the server itself.
#[test]
fn the_admin_token_changes_roles_and_removes_members_through_the_servers_own_entries() {
    let mut h = Harness::new();
    let mut store = FakeStore::default();
    let (editor, viewer) = (
        Ed25519Signer::from_seed([2; 32]),
        Ed25519Signer::from_seed([3; 32]),
    );
    let c3 = ClientId(3);
    let b = h.join(C2, &editor, Role::Editor);
    let c = h.join(c3, &viewer, Role::Viewer);
    for batch in 0..2 {
        let out = h.input(Input::PersistAck {
            batch: BatchId(batch),
        });
        store.absorb(&mut h, out);
    }
    store.authors = h.session.authors();
    let drain =
        |h: &mut Harness| std::iter::from_fn(|| h.session.poll_output()).collect::<Vec<_>>();

    // Not a membership change: refused, nothing registered.
    assert!(h.session.admin_command(h.now, mv(b)).is_err());
    assert!(drain(&mut h).is_empty());

    // The demotion: the server joins the roster as an admin before its entry reaches anyone.
    h.session
        .admin_command(
            h.now,
            Command::SetRole {
                author: b,
                role: Role::Viewer,
            },
        )
        .unwrap();
    let out = drain(&mut h);
    let server_key = h.server.public_key();
    for to in [C2, c3] {
        assert!(
            sent_to(&out, to)
                .iter()
                .any(|m| matches!(m, ServerMsg::Roster(r)
                if r.members.iter().any(|m| m.public_key == server_key && m.role == Role::Admin))),
            "{to:?} learns the server's key"
        );
    }
    let after = store.absorb_all(&mut h, out);
    for to in [C2, c3] {
        assert!(
            sent_to(&after, to)
                .iter()
                .any(|m| matches!(m, ServerMsg::Roster(r)
                if r.members.iter().any(|m| m.author == b && m.role == Role::Viewer))),
            "{to:?} is told B's new role"
        );
    }
    let server_author = store
        .authors
        .iter()
        .find(|a| a.public_key == server_key)
        .map(|a| a.author)
        .expect("the server's key record is stored with its entry");
    // B's next edit is refused.
    let out = h.send(
        C2,
        &ClientMsg::Submit(Submit {
            entries: vec![entry(&editor, b, 1, 5, mv(b))],
        }),
    );
    assert!(sent_to(&out, C2).iter().any(|m| matches!(m,
        ServerMsg::CommandRefused(r) if r.code == RefusalCode::Permission)));

    // The removal: C is closed as kicked, with the reason.
    h.session
        .admin_command(
            h.now,
            Command::Kick {
                author: c,
                reason: "wrong session".into(),
                revoke_invite: false,
            },
        )
        .unwrap();
    let out = drain(&mut h);
    let all = store.absorb_all(&mut h, out);
    assert_eq!(closed(&all, c3), Some(CloseReason::Kicked));
    // The server's own membership stays.
    assert!(
        h.session
            .admin_command(
                h.now,
                Command::SetRole {
                    author: server_author,
                    role: Role::Viewer,
                },
            )
            .is_err()
    );

    // Nor an in-session admin's.
    let admin = Ed25519Signer::from_seed([9; 32]);
    let a = h.join(C1, &admin, Role::Admin);
    let out = h.send(
        C1,
        &ClientMsg::Submit(Submit {
            entries: vec![entry(
                &admin,
                a,
                1,
                h.session.log().clock() + 1,
                Command::Kick {
                    author: server_author,
                    reason: String::new(),
                    revoke_invite: false,
                },
            )],
        }),
    );
    assert!(
        sent_to(&out, C1).iter().any(|m| matches!(m,
            ServerMsg::CommandRefused(r) if r.message.contains("server's own membership"))),
        "{out:?}"
    );

    // Replayed from the store: the same state, B a viewer.
    let (restored, _) = Session::restore(
        Config::signed_by(SESSION, Arc::new(Ed25519Signer::from_seed([0x5e; 32]))),
        [0; 32],
        NOW,
        &store.authors,
        &[],
        None,
        store.entries.clone(),
    )
    .unwrap();
    assert_eq!(store.entries.len(), 2);
    assert_eq!(restored.log().keys().role(b), Some(Role::Viewer));
    assert_eq!(restored.log().state_hash(), h.session.log().state_hash());
}

/// An invite an admin minted for one person admits exactly one key (that key rejoins with it
/// as often as it likes); one without its own limit admits the session's default; a revoked
/// one admits no one, its members included; an expired one neither. Each refusal says why.
#[test]
fn invites_admit_as_many_keys_as_they_may_and_none_once_revoked() {
    let mut h = Harness::new();
    h.session.config.max_keys_per_invite = 2;
    let mint = |h: &Harness, id: u8, expires_at_ms: u64| {
        let body = InviteBody {
            domain: Domain::Invite,
            session: SESSION,
            role: Role::Editor,
            expires_at_ms,
            invite_id: [id; 16],
        };
        Invite::mint(&body, &h.server).unwrap()
    };
    let refusal = |out: &[Output], client| {
        sent_to(out, client).into_iter().find_map(|m| match m {
            ServerMsg::JoinRefused(r) => Some(r),
            _ => None,
        })
    };
    let welcomed = |out: &[Output], client| {
        sent_to(out, client)
            .iter()
            .any(|m| matches!(m, ServerMsg::Welcome(_)))
    };
    let key = |seed: u8| Ed25519Signer::from_seed([seed; 32]);
    let mut next = 10u64;
    let mut try_join = |h: &mut Harness, seed: u8, invite: Invite| {
        next += 1;
        let c = ClientId(next);
        (c, h.prove_with(c, &key(seed), invite))
    };

    // Single use (minted through the API with max_uses 1).
    let single = mint(&h, 7, NOW + 60_000);
    h.input(Input::Invite(InviteRecord {
        invite: [7; 16],
        role: Role::Editor,
        expires_at_ms: NOW + 60_000,
        max_keys: Some(1),
        revoked_at_ms: None,
        keys: Vec::new(),
    }));
    let (c, out) = try_join(&mut h, 1, single.clone());
    assert!(welcomed(&out, c), "the first person joins");
    let (c, out) = try_join(&mut h, 2, single.clone());
    let r = refusal(&out, c).expect("a second key is refused");
    assert_eq!(r.reason, JoinRefusal::InviteUsedUp);
    assert!(r.message.contains("one person"), "{}", r.message);
    let (c, out) = try_join(&mut h, 1, single.clone());
    assert!(welcomed(&out, c), "the one it admitted rejoins");

    // No limit of its own: the session's default (2 here).
    let open = mint(&h, 8, NOW + 60_000);
    for seed in [3, 4] {
        let (c, out) = try_join(&mut h, seed, open.clone());
        assert!(welcomed(&out, c));
    }
    let (c, out) = try_join(&mut h, 5, open.clone());
    assert_eq!(
        refusal(&out, c).map(|r| r.reason),
        Some(JoinRefusal::InviteUsedUp)
    );

    // Revoked: no one, not even a key it admitted before; the change is persisted.
    let out = h.input(Input::RevokeInvite { invite: [8; 16] });
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Persist { invites, .. }
        if invites.iter().any(|r| r.invite == [8; 16] && r.revoked_at_ms == Some(NOW))))
    );
    let (c, out) = try_join(&mut h, 3, open.clone());
    let r = refusal(&out, c).expect("refused");
    assert_eq!(r.reason, JoinRefusal::InviteRevoked);
    assert!(r.message.contains("revoked"), "{}", r.message);

    // Expired.
    let old = mint(&h, 9, NOW - 1);
    let (c, out) = try_join(&mut h, 6, old);
    assert_eq!(
        refusal(&out, c).map(|r| r.reason),
        Some(JoinRefusal::InviteExpired)
    );

    // What a restart reads back: the records, with their uses and revocation.
    let records = h.session.invites();
    let mut again = Harness::new();
    again.session.config.max_keys_per_invite = 2;
    again.session.load_invites(records.clone());
    assert_eq!(again.session.invites(), records);
    assert_eq!(
        records
            .iter()
            .find(|r| r.invite == [7; 16])
            .map(|r| r.keys.len()),
        Some(1)
    );
}

#[test]
fn a_submit_verified_by_the_glue_is_handled_as_the_same_payload_and_only_under_the_members_key() {
    let (s1, s2) = (
        Ed25519Signer::from_seed([1; 32]),
        Ed25519Signer::from_seed([2; 32]),
    );
    // The same history through two sessions: one gets payloads, the other what the glue's
    // check made of them. Every output is the same.
    let (mut plain, mut checked) = (Harness::new(), Harness::new());
    let author = plain.join(C1, &s1, Role::Editor);
    assert_eq!(checked.join(C1, &s1, Role::Editor), author);
    let other = plain.join(C2, &s2, Role::Editor);
    assert_eq!(checked.join(C2, &s2, Role::Editor), other);
    for seq in 1..=3 {
        let entries = vec![entry(&s1, author, seq, seq, mv(author))];
        let a = plain.send(
            C1,
            &ClientMsg::Submit(Submit {
                entries: entries.clone(),
            }),
        );
        let b = checked.input(Input::VerifiedSubmit {
            client: C1,
            entries,
            signed_by: s1.public_key(),
            session: SESSION,
        });
        assert!(
            a.iter().any(|o| matches!(o, Output::Persist { .. })),
            "{a:?}"
        );
        assert_eq!(a, b);
    }

    // The glue's claim for a batch: every entry verified under `signed_by` for `session`.
    let claim = |h: &mut Harness, entries, signed_by, session| {
        h.input(Input::VerifiedSubmit {
            client: C1,
            entries,
            signed_by,
            session,
        })
    };
    // One of the member's entries with a broken signature.
    let forged = |seq: u64| {
        let mut e = entry(&s1, author, seq, seq, mv(author));
        e.signature.0[0] ^= 1;
        e
    };
    let refused_as_forged = |out: &[Output]| matches!(&sent_to(out, C1)[0], ServerMsg::CommandRefused(r) if r.code == RefusalCode::BadSignature);
    // A claim under a key that is not the member's is not taken on trust: the session checks
    // the signatures itself, and a forged one is refused.
    let out = claim(&mut checked, vec![forged(4)], s2.public_key(), SESSION);
    assert!(refused_as_forged(&out), "{out:?}");
    // Under the member's own key the session does not check again (the work left the driver):
    // which is why only the glue's own check may make this input.
    let out = claim(&mut checked, vec![forged(5)], s1.public_key(), SESSION);
    assert!(
        out.iter().any(|o| matches!(o, Output::Persist { .. })),
        "the claim under the member's key was checked again: {out:?}"
    );
    // Nor is a claim made for another session (a version-2 signature binds the session the
    // glue checked it for): the session checks the signatures itself (a second on: the burst
    // of five is spent).
    checked.now += 1000;
    let out = claim(
        &mut checked,
        vec![forged(6)],
        s1.public_key(),
        SessionId([0xee; 16]),
    );
    assert!(refused_as_forged(&out), "{out:?}");
    // Nor does the claim let one member submit another's entries (a second on: the burst of
    // five is spent).
    checked.now += 1000;
    let theirs = entry(&s2, other, 1, 6, mv(other));
    let out = claim(&mut checked, vec![theirs], s1.public_key(), SESSION);
    assert!(
        matches!(&sent_to(&out, C1)[0], ServerMsg::CommandRefused(r) if r.code == RefusalCode::Malformed),
        "{out:?}"
    );
    // Before the handshake it is out of phase, as the payload would be.
    let early = ClientId(9);
    checked.input(Input::Connected { client: early });
    let out = checked.input(Input::VerifiedSubmit {
        client: early,
        entries: vec![entry(&s1, author, 7, 7, mv(author))],
        signed_by: s1.public_key(),
        session: SESSION,
    });
    assert_eq!(closed(&out, early), Some(CloseReason::ProtocolViolation));
}

fn motion_from(
    h: &mut Harness,
    client: ClientId,
    seq: u16,
    figure: bool,
    dragging: Option<EntityId>,
) -> Vec<Output> {
    let pose = wire::Pose {
        position_mm: [1000, 1600, 0],
        rotation: [0, 0, 0, 32767],
    };
    let content = motion::MotionContent {
        seq,
        figure: figure.then_some(motion::Figure {
            head: Some(pose),
            ..motion::Figure::default()
        }),
        moving: dragging
            .map(|e| {
                vec![(
                    e,
                    wire::PreviewTransform {
                        pose,
                        scale_permille: [1000; 3],
                    },
                )]
            })
            .unwrap_or_default(),
        ended: vec![],
    };
    let m = motion::Motion::encode(&content).unwrap();
    let bytes = postcard::to_allocvec(&ClientMsg::Motion(m)).unwrap();
    h.input(Input::Datagram { client, bytes })
}

/// (lane, author, packed bytes) of every motion sent to `to`.
fn motions_to(out: &[Output], to: ClientId) -> Vec<(Lane, AuthorId, Vec<u8>)> {
    sent_on_lanes(out, to, |m| match m {
        ServerMsg::Motion(m) => Some((m.author, m.motion.bytes)),
        _ => None,
    })
    .into_iter()
    .map(|(lane, (a, b))| (lane, a, b))
    .collect()
}

/// A compact motion reaches the others as the bytes it came in, on the unreliable lane; it
/// shares the presence sequence (its 16 bits taken nearest to the last, across the wrap); a
/// viewer's presence goes out but a viewer's drag does not; bytes that do not unpack are
/// dropped and counted; nothing is logged.
#[test]
fn motions_are_relayed_as_sent_in_one_sequence_with_presence() {
    let mut h = Harness::new();
    let editor = h.join(C1, &Ed25519Signer::from_seed([1; 32]), Role::Editor);
    h.join(C2, &Ed25519Signer::from_seed([2; 32]), Role::Editor);
    let c3 = ClientId(3);
    let viewer = h.join(c3, &Ed25519Signer::from_seed([3; 32]), Role::Viewer);
    let cube = EntityId::new(editor, 1);
    let out = motion_from(&mut h, C1, 0xfffe, true, Some(cube));
    let got = motions_to(&out, C2);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0, got[0].1), (Lane::Unreliable, editor));
    let ServerMsg::Motion(relayed) = &sent_to(&out, C2)[0] else {
        panic!("a motion")
    };
    let expanded = relayed.expand().unwrap();
    assert!(matches!(
        &expanded[..],
        [ServerMsg::Presence(_), ServerMsg::Preview(_)]
    ));
    assert_eq!(motions_to(&out, c3).len(), 1);
    assert!(motions_to(&out, C1).is_empty(), "not echoed to the sender");
    // Across the 16-bit wrap: 0x0001 follows 0xfffe.
    h.now += 100;
    assert_eq!(
        motions_to(&motion_from(&mut h, C1, 1, true, None), C2).len(),
        1
    );
    // An older one (before the wrap) loses, and so does an old presence number.
    h.now += 100;
    assert!(motions_to(&motion_from(&mut h, C1, 0xffff, true, None), C2).is_empty());
    h.now += 100;
    assert!(presence_seqs(&presence_from(&mut h, C1, 0xffff), C2).is_empty());
    h.now += 100;
    assert_eq!(
        presence_seqs(&presence_from(&mut h, C1, 0x1_0002), C2),
        vec![0x1_0002]
    );
    // A viewer's presence flows; a viewer's drag does not.
    h.now += 100;
    assert_eq!(
        motions_to(&motion_from(&mut h, c3, 1, true, None), C1)[0].1,
        viewer
    );
    h.now += 100;
    let out = motion_from(&mut h, c3, 2, true, Some(cube));
    assert!(motions_to(&out, C1).is_empty());
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Event(Event::PresenceDropped)))
    );
    // Bytes that do not unpack: dropped, counted.
    h.now += 100;
    let bad = ClientMsg::Motion(motion::Motion {
        bytes: vec![1, 0, 0xff],
    });
    let out = h.input(Input::Datagram {
        client: C1,
        bytes: postcard::to_allocvec(&bad).unwrap(),
    });
    assert!(motions_to(&out, C2).is_empty());
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Event(Event::PresenceDropped)))
    );
    assert!(!out.iter().any(|o| matches!(o, Output::Persist { .. })));
    assert_eq!(h.session.log().len(), 0);
}

fn packs_to(out: &[Output], to: ClientId) -> Vec<meshwork_protocol::packed::Packed> {
    sent_on_lanes(out, to, |m| match m {
        ServerMsg::Packed(p) => Some(p),
        _ => None,
    })
    .into_iter()
    .map(|(lane, p)| {
        assert_eq!(lane, Lane::Unreliable);
        p
    })
    .collect()
}

/// A client that reads packs gets what it is owed on the unreliable lane once per tick, in
/// one compressed frame that unpacks to the relayed messages in order; a client that never
/// said so gets each message at once, on its own; the pack's deadline is the session's timeout.
#[test]
fn a_packing_client_gets_one_compressed_pack_per_tick() {
    use meshwork_protocol::packed::{Codecs, PRESENCE_V1, Unpacker};
    let mut h = Harness::new();
    let a = h.join(C1, &Ed25519Signer::from_seed([1; 32]), Role::Editor);
    let b = h.join(C2, &Ed25519Signer::from_seed([2; 32]), Role::Editor);
    let c3 = ClientId(3);
    h.join(c3, &Ed25519Signer::from_seed([3; 32]), Role::Editor);
    let c4 = ClientId(4);
    h.join(c4, &Ed25519Signer::from_seed([4; 32]), Role::Editor);
    h.send(c3, &ClientMsg::Codecs(Codecs::readable()));
    h.send(
        c4,
        &ClientMsg::Codecs(Codecs {
            dictionaries: vec![99],
        }),
    );
    let mut out = motion_from(&mut h, C1, 1, true, None);
    out.extend(motion_from(&mut h, C2, 1, true, None));
    assert!(packs_to(&out, c3).is_empty(), "held for the tick");
    assert!(motions_to(&out, c3).is_empty());
    assert_eq!(
        motions_to(&out, c4).len(),
        2,
        "no dictionary in common: one by one"
    );
    let due = h.session.poll_timeout().unwrap();
    assert_eq!(due, h.now + h.session.config.presence_pack_ms);
    h.now = due;
    let out = h.input(Input::Tick);
    let packs = packs_to(&out, c3);
    assert_eq!(packs.len(), 1);
    assert_eq!(packs[0].dictionary, PRESENCE_V1);
    let got = Unpacker::new().unpack(&packs[0]).unwrap();
    let authors: Vec<AuthorId> = got
        .iter()
        .map(|m| match m {
            ServerMsg::Motion(m) => m.author,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(authors, vec![a, b]);
    let (raw, sent) = out
        .iter()
        .find_map(|o| match o {
            Output::Event(Event::Packed { client, raw, sent }) if *client == c3 => {
                Some((*raw, *sent))
            }
            _ => None,
        })
        .unwrap();
    assert!(
        sent < raw + 8,
        "compressed: {sent} B sent for {raw} B of messages"
    );
    assert!(h.session.poll_timeout() != Some(due), "nothing more is due");
}

/// An update still waiting in a receiver's pack is dropped when its author's next one carries
/// the same parts (the receiver would apply only the later): the pack holds each author's
/// latest, after everything that author sent meanwhile; a drag's end is never dropped.
#[test]
fn a_waiting_update_is_replaced_by_its_authors_next_and_a_drag_end_always_goes() {
    use meshwork_protocol::packed::{Codecs, Unpacker};
    let mut h = Harness::new();
    let a = h.join(C1, &Ed25519Signer::from_seed([1; 32]), Role::Editor);
    let b = h.join(C2, &Ed25519Signer::from_seed([2; 32]), Role::Editor);
    let c3 = ClientId(3);
    h.join(c3, &Ed25519Signer::from_seed([3; 32]), Role::Editor);
    h.send(c3, &ClientMsg::Codecs(Codecs::readable()));
    let cube = EntityId::new(a, 1);
    let tick = |h: &mut Harness| -> Vec<(AuthorId, u16)> {
        h.now = h.session.poll_timeout().unwrap();
        let out = h.input(Input::Tick);
        let packs = packs_to(&out, c3);
        assert_eq!(packs.len(), 1);
        Unpacker::new()
            .unpack(&packs[0])
            .unwrap()
            .into_iter()
            .map(|m| match m {
                ServerMsg::Motion(m) => (m.author, m.motion.decode().unwrap().seq),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    motion_from(&mut h, C1, 1, true, None);
    motion_from(&mut h, C1, 2, true, None);
    motion_from(&mut h, C2, 1, true, None);
    motion_from(&mut h, C1, 3, true, None);
    assert_eq!(tick(&mut h), vec![(b, 1), (a, 3)]);

    motion_from(&mut h, C1, 4, false, Some(cube));
    let ended = motion::MotionContent {
        seq: 5,
        figure: None,
        moving: vec![],
        ended: vec![cube],
    };
    let bytes =
        postcard::to_allocvec(&ClientMsg::Motion(motion::Motion::encode(&ended).unwrap())).unwrap();
    h.input(Input::Datagram { client: C1, bytes });
    motion_from(&mut h, C1, 6, true, None);
    motion_from(&mut h, C1, 7, false, Some(cube));
    motion_from(&mut h, C1, 8, true, Some(cube));
    assert_eq!(
        tick(&mut h),
        vec![(a, 5), (a, 6), (a, 7), (a, 8)],
        "the drag's end stays; a figure with a drag is not a figure alone"
    );
    motion_from(&mut h, C1, 9, false, Some(cube));
    motion_from(&mut h, C1, 10, false, Some(cube));
    assert_eq!(tick(&mut h), vec![(a, 10)]);
}

/// More than a datagram's worth in one tick goes as several packs, each within the bound.
#[test]
fn a_full_pack_goes_at_once_and_the_rest_starts_the_next() {
    use meshwork_protocol::packed::{Codecs, MAX_PACK_INPUT, RAW, Unpacker};
    let mut h = Harness::new();
    let c9 = ClientId(9);
    h.join(c9, &Ed25519Signer::from_seed([9; 32]), Role::Editor);
    h.send(
        c9,
        &ClientMsg::Codecs(Codecs {
            dictionaries: vec![RAW],
        }),
    );
    let mut out = Vec::new();
    let senders: Vec<ClientId> = (10..90).map(ClientId).collect();
    for (i, c) in senders.iter().enumerate() {
        h.join(
            *c,
            &Ed25519Signer::from_seed([u8::try_from(i + 10).unwrap(); 32]),
            Role::Editor,
        );
    }
    for c in &senders {
        out.extend(motion_from(&mut h, *c, 1, true, None));
    }
    let early = packs_to(&out, c9);
    assert!(!early.is_empty(), "a full pack does not wait for the tick");
    h.now += 50;
    out.extend(h.input(Input::Tick));
    let packs = packs_to(&out, c9);
    let mut unpacker = Unpacker::new();
    let mut relayed = 0;
    for p in &packs {
        assert_eq!(p.dictionary, RAW);
        assert!(p.bytes.len() <= MAX_PACK_INPUT, "{} B", p.bytes.len());
        relayed += unpacker.unpack(p).unwrap().len();
    }
    assert_eq!(relayed, senders.len(), "every motion, once");
}

fn motion_at(h: &mut Harness, client: ClientId, seq: u16, at_m: [f32; 3]) -> Vec<Output> {
    let head = wire::Pose::quantize(Vec3::from(at_m), glam::Quat::IDENTITY);
    let m = motion::Motion::of_figure(
        seq,
        motion::Figure {
            head: Some(head),
            ..motion::Figure::default()
        },
    );
    let bytes = postcard::to_allocvec(&ClientMsg::Motion(m)).unwrap();
    h.input(Input::Datagram { client, bytes })
}

fn interest(h: &mut Harness, client: ClientId, around_m: Option<[f32; 3]>) -> Vec<Output> {
    use meshwork_protocol::interest::{Interest, Region};
    let region = around_m.map(|c| Region::around(Vec3::from(c), 10.0));
    h.send(client, &ClientMsg::Interest(Interest { region }))
}

/// A client with a region is sent others' presence only where it touches the region (counted
/// otherwise), and a member's step out of it once; one without a region gets everything; a
/// region that comes to hold a member who stands still is sent that member's last presence at
/// once; a drag's end goes to everyone.
#[test]
fn presence_goes_only_where_a_client_looks() {
    let mut h = Harness::new();
    let a = h.join(C1, &Ed25519Signer::from_seed([1; 32]), Role::Editor);
    h.join(C2, &Ed25519Signer::from_seed([2; 32]), Role::Editor);
    let c3 = ClientId(3);
    h.join(c3, &Ed25519Signer::from_seed([3; 32]), Role::Editor);
    interest(&mut h, C2, Some([0.0, 0.0, 0.0]));
    // A is half a kilometre away: C2 (looking at the origin) is not sent it; C3 is.
    let out = motion_at(&mut h, C1, 1, [500.0, 1.6, 0.0]);
    assert!(motions_to(&out, C2).is_empty());
    assert_eq!(motions_to(&out, c3).len(), 1);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Event(Event::OutOfInterest)))
    );
    // A walks into view.
    h.now += 100;
    let out = motion_at(&mut h, C1, 2, [3.0, 1.6, -4.0]);
    assert_eq!(motions_to(&out, C2).len(), 1);
    // B's own presence never comes back to B, whatever its region.
    h.now += 100;
    assert!(motions_to(&motion_at(&mut h, C2, 1, [0.0, 1.6, 0.0]), C2).is_empty());
    // A walks away: C2 is sent the step out of its region (A is not left frozen at the edge),
    // then nothing while A stays away.
    h.now += 100;
    assert_eq!(
        motions_to(&motion_at(&mut h, C1, 3, [200.0, 1.6, 0.0]), C2).len(),
        1
    );
    h.now += 100;
    assert!(motions_to(&motion_at(&mut h, C1, 4, [201.0, 1.6, 0.0]), C2).is_empty());
    // A stands still there; C2 turns its view to A: A's last presence comes at once, not at
    // A's next move.
    h.now += 100;
    let out = interest(&mut h, C2, Some([195.0, 0.0, 0.0]));
    let got = motions_to(&out, C2);
    assert_eq!(got.len(), 1, "the member now in view");
    assert_eq!(got[0].1, a);
    // Turning to where it already saw everyone sends nothing again.
    let out = interest(&mut h, C2, Some([196.0, 0.0, 0.0]));
    assert!(motions_to(&out, C2).is_empty());
    // A drag far away: its previews stay out of C2's view at the origin, its end reaches all.
    interest(&mut h, C2, Some([0.0, 0.0, 0.0]));
    let far = wire::Pose::quantize(Vec3::new(300.0, 0.0, 0.0), glam::Quat::IDENTITY);
    let cube = EntityId::new(a, 1);
    let drag = |moving, ended| motion::MotionContent {
        seq: 9,
        figure: None,
        moving,
        ended,
    };
    let send = |h: &mut Harness, c: motion::MotionContent| {
        let m = motion::Motion::encode(&c).unwrap();
        let bytes = postcard::to_allocvec(&ClientMsg::Motion(m)).unwrap();
        h.input(Input::Datagram { client: C1, bytes })
    };
    h.now += 100;
    let t = wire::PreviewTransform {
        pose: far,
        scale_permille: [1000; 3],
    };
    assert!(motions_to(&send(&mut h, drag(vec![(cube, t)], vec![])), C2).is_empty());
    h.now += 100;
    let mut end = drag(vec![], vec![cube]);
    end.seq = 10;
    assert_eq!(
        motions_to(&send(&mut h, end), C2).len(),
        1,
        "the end goes to everyone"
    );
    // Without a region again: everything.
    interest(&mut h, C2, None);
    h.now += 100;
    assert_eq!(
        motions_to(&motion_at(&mut h, C1, 11, [900.0, 0.0, 0.0]), C2).len(),
        1
    );
    // C3 never had a region: from everywhere to one that holds A, nothing is sent again (C3
    // has A's last), and A's step out of the region still reaches C3 once.
    let out = interest(&mut h, c3, Some([895.0, 0.0, 0.0]));
    assert!(motions_to(&out, c3).is_empty());
    h.now += 100;
    assert_eq!(
        motions_to(&motion_at(&mut h, C1, 12, [950.0, 0.0, 0.0]), c3).len(),
        1,
        "the step out"
    );
    h.now += 100;
    assert!(motions_to(&motion_at(&mut h, C1, 13, [951.0, 0.0, 0.0]), c3).is_empty());
}
