use glam::Vec3;
use meshwork_protocol::command::ExtrudeDirection;
use meshwork_protocol::command::{FaceIndex, HalfEdgeIndex, Material, Primitive, Transform};
use meshwork_protocol::editmesh::{Axis, EdgeKey, ElementId, FaceKey, VertexKey};
use meshwork_protocol::registry::CommandKind;
use meshwork_protocol::{Ed25519Signer, EntityId, PublicKey, ToolId};

use super::*;
use meshwork_protocol::Role;

const SESSION: SessionId = SessionId([0x5e; 16]);
const A: AuthorId = AuthorId(1);
const B: AuthorId = AuthorId(2);
const C: AuthorId = AuthorId(3);

fn signer(author: AuthorId) -> Ed25519Signer {
    let mut seed = [0u8; 32];
    seed[0] = u8::try_from(author.0).unwrap();
    Ed25519Signer::from_seed(seed)
}

fn ring(roles: &[(AuthorId, Role)]) -> KeyRing {
    let mut keys = KeyRing::new();
    for (a, r) in roles {
        keys.register(*a, signer(*a).public_key(), *r).unwrap();
    }
    keys
}

fn editors() -> KeyRing {
    ring(&[(A, Role::Editor), (B, Role::Editor), (C, Role::Editor)])
}

/// A signed entry with every field chosen by the test.
fn entry(author: AuthorId, seq: u64, lamport: u64, seen: u64, command: Command) -> SignedEntry {
    let s = signer(author);
    entry_with(&s, SESSION, author, seq, lamport, seen, command)
}

fn entry_with(
    s: &Ed25519Signer,
    session: SessionId,
    author: AuthorId,
    seq: u64,
    lamport: u64,
    seen: u64,
    command: Command,
) -> SignedEntry {
    let body = EntryBody::new(
        session,
        author,
        s.public_key().key_id(),
        seq,
        lamport,
        seen,
        command,
    );
    SignedEntry::sign(&body, s).unwrap()
}

fn ent() -> EntityId {
    EntityId::new(A, 1)
}

fn rename(name: &str) -> Command {
    Command::SetName {
        entity: ent(),
        name: name.into(),
    }
}

fn id(lamport: u64, author: AuthorId) -> CommandId {
    CommandId { lamport, author }
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

/// One command of every kind, valid for `author`.
fn sample(kind: CommandKind, author: AuthorId) -> Command {
    let e = ent();
    match kind {
        CommandKind::Select => Command::Select { entities: vec![e] },
        CommandKind::Spawn => Command::Spawn {
            entity: EntityId::new(author, 9),
            primitive: Primitive::Cube,
            transform: Transform::IDENTITY,
        },
        CommandKind::Despawn => Command::Despawn { entity: e },
        CommandKind::Translate => Command::Translate {
            entity: e,
            delta: Vec3::X,
        },
        CommandKind::Rotate => Command::Rotate {
            entity: e,
            delta: glam::Quat::from_rotation_z(1.0),
        },
        CommandKind::Scale => Command::Scale {
            entity: e,
            factor: Vec3::splat(2.0),
        },
        CommandKind::SetName => rename("n"),
        CommandKind::SetColor => Command::SetColor {
            entity: e,
            rgba: glam::Vec4::ONE,
        },
        CommandKind::SetMaterial => Command::SetMaterial {
            entity: e,
            material: Material {
                metallic: 0.5,
                roughness: 0.5,
            },
        },
        CommandKind::ToolActivate => Command::ToolActivate {
            tool: ToolId(1),
            target: Some(e),
        },
        CommandKind::ToolDeactivate => Command::ToolDeactivate { tool: ToolId(1) },
        CommandKind::VertexCreate => Command::VertexCreate {
            entity: e,
            position: Vec3::ONE,
        },
        CommandKind::EdgeExtrude => Command::EdgeExtrude {
            entity: e,
            edge: HalfEdgeIndex(0),
            offset: Vec3::Y,
        },
        CommandKind::FaceSubdivide => Command::FaceSubdivide {
            entity: e,
            face: FaceIndex(0),
            cuts: 1,
        },
        CommandKind::SetSessionName => Command::SetSessionName {
            name: "Review".into(),
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
            copy: EntityId::new(author, 77),
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
            entries: 2,
            label: "Move".into(),
        },
        CommandKind::Undo => Command::Undo { step: None },
        CommandKind::Redo => Command::Redo { step: None },
        CommandKind::Import => Command::Import {
            asset: meshwork_protocol::command::AssetId([1; 32]),
            first: EntityId::new(author, 80),
            count: 2,
        },
        CommandKind::SetDisplayName => Command::SetDisplayName { name: "Ada".into() },
        CommandKind::SetRole => Command::SetRole {
            author: other(author),
            role: Role::Viewer,
        },
        CommandKind::Kick => Command::Kick {
            author: other(author),
            reason: "bye".into(),
            revoke_invite: false,
        },
    }
}

/// A member other than `author` (the one membership commands act on).
const fn other(author: AuthorId) -> AuthorId {
    if author.0 == A.0 { B } else { A }
}

// ---------------------------------------------------------------- permissions

#[test]
fn permissions_per_command_and_role_are_enforced_before_append() {
    for (role, author) in [(Role::Viewer, A), (Role::Editor, B), (Role::Admin, C)] {
        for kind in CommandKind::ALL {
            let members = [(author, role), (other(author), Role::Editor)];
            let mut log = CommandLog::new(Mode::Authority, SESSION, ring(&members));
            let res = log.integrate(entry(author, 1, 1, 0, sample(kind, author)));
            let required = kind.rule().role;
            if role >= required {
                assert!(res.is_ok(), "{role} may {kind:?}: {res:?}");
                assert_eq!(log.len(), 1);
            } else {
                assert_eq!(
                    res,
                    Err(Refusal::Permission(PermissionDenied {
                        kind,
                        required,
                        actual: role
                    })),
                    "{role} may not {kind:?}"
                );
                assert!(log.is_empty(), "nothing appended on a permission refusal");
            }
        }
    }
}

/// An admin's role change counts from the member's next entry; no one changes their own role,
/// nor that of someone who is not a member; a superseded change changes nothing.
#[test]
fn a_role_change_counts_from_the_members_next_entry() {
    let mut log = CommandLog::new(
        Mode::Authority,
        SESSION,
        ring(&[(A, Role::Admin), (B, Role::Editor)]),
    );
    log.integrate(entry(B, 1, 1, 0, rename("before"))).unwrap();
    let demote = |seq, lamport, seen, role| {
        entry(A, seq, lamport, seen, Command::SetRole { author: B, role })
    };
    log.integrate(demote(1, 2, 1, Role::Viewer)).unwrap();
    assert_eq!(log.keys().role(B), Some(Role::Viewer));
    assert!(
        matches!(
            log.integrate(entry(B, 2, 3, 2, rename("after"))),
            Err(Refusal::Permission(PermissionDenied {
                actual: Role::Viewer,
                ..
            }))
        ),
        "the demoted member's next edit is refused"
    );
    // B's earlier edit stands: it was checked against the role B held then.
    assert_eq!(log.len(), 2);
    assert!(matches!(
        log.integrate(entry(
            A,
            2,
            4,
            3,
            Command::SetRole {
                author: A,
                role: Role::Viewer
            }
        )),
        Err(Refusal::Malformed(_))
    ));
    assert_eq!(
        log.integrate(demote(3, 5, 3, Role::Editor).clone())
            .map(|_| ()),
        Ok(())
    );
    assert_eq!(log.keys().role(B), Some(Role::Editor));
    assert_eq!(
        log.integrate(entry(
            A,
            4,
            6,
            5,
            Command::Kick {
                author: AuthorId(9),
                reason: String::new(),
                revoke_invite: false,
            }
        )),
        Err(Refusal::UnknownAuthor(AuthorId(9)))
    );
}

// ---------------------------------------------------------------- signatures and replay

#[test]
fn forged_signature_is_refused_as_bad_signature() {
    let mut log = CommandLog::new(Mode::Authority, SESSION, editors());
    let mut e = entry(A, 1, 1, 0, rename("x"));
    e.signature.0[0] ^= 0x01;
    assert_eq!(log.integrate(e), Err(Refusal::BadSignature(A)));
    // Tampering with the body instead of the signature is the same fault.
    let mut e = entry(A, 1, 1, 0, rename("x"));
    let last = e.body.len() - 1;
    e.body[last] = b'y';
    assert_eq!(log.integrate(e), Err(Refusal::BadSignature(A)));
    assert!(log.is_empty());
}

/// `entry_with` in the self-describing layout of protocol version 1 (entries stored before
/// version 2), which carries its session and key id.
fn entry_v1(s: &Ed25519Signer, session: SessionId, author: AuthorId, seq: u64) -> SignedEntry {
    let mut body = EntryBody::new(
        session,
        author,
        s.public_key().key_id(),
        seq,
        seq,
        seq.saturating_sub(1),
        rename("x"),
    );
    body.version = 1;
    SignedEntry::sign(&body, s).unwrap()
}

#[test]
fn wrong_key_is_refused_as_key_mismatch() {
    let mut log = CommandLog::new(Mode::Authority, SESSION, editors());
    // B's key, claiming to be A: a version-2 entry binds the key into its signature, so it
    // does not verify under A's; a version-1 entry names B's key and is refused for it.
    let e = entry_with(&signer(B), SESSION, A, 1, 1, 0, rename("x"));
    assert_eq!(log.integrate(e), Err(Refusal::BadSignature(A)));
    let e = entry_v1(&signer(B), SESSION, A, 1);
    assert_eq!(log.integrate(e), Err(Refusal::KeyMismatch(A)));
    assert!(log.is_empty());
}

#[test]
fn wrong_session_is_refused() {
    let mut log = CommandLog::new(Mode::Authority, SESSION, editors());
    let other = SessionId([1; 16]);
    // Bound into a version-2 signature, so it fails as one; carried by version 1.
    let e = entry_with(&signer(A), other, A, 1, 1, 0, rename("x"));
    assert_eq!(log.integrate(e), Err(Refusal::BadSignature(A)));
    let e = entry_v1(&signer(A), other, A, 1);
    assert_eq!(log.integrate(e), Err(Refusal::WrongSession { got: other }));
    assert!(log.is_empty());
}

#[test]
fn a_version_1_entry_is_still_integrated_beside_version_2_ones() {
    let mut log = CommandLog::new(Mode::Authority, SESSION, editors());
    assert!(log.integrate(entry_v1(&signer(A), SESSION, A, 1)).is_ok());
    assert!(log.integrate(entry(A, 2, 2, 1, rename("y"))).is_ok());
    assert!(log.integrate(entry_v1(&signer(B), SESSION, B, 1)).is_ok());
    assert_eq!(log.len(), 3);
}

#[test]
fn unknown_author_is_refused() {
    let mut log = CommandLog::new(Mode::Authority, SESSION, ring(&[(A, Role::Editor)]));
    assert_eq!(
        log.integrate(entry(B, 1, 1, 0, rename("x"))),
        Err(Refusal::UnknownAuthor(B))
    );
}

#[test]
fn replayed_sequence_numbers_are_refused() {
    let mut log = CommandLog::new(Mode::Authority, SESSION, editors());
    log.integrate(entry(A, 1, 1, 0, rename("a"))).unwrap();
    log.integrate(entry(A, 2, 2, 1, rename("b"))).unwrap();
    // A new entry reusing seq 2 (different content, later lamport).
    assert_eq!(
        log.integrate(entry(A, 2, 3, 2, rename("c"))),
        Err(Refusal::Replay {
            author: A,
            seq: 2,
            kind: ReplayKind::SeqNotIncreasing { last: 2 }
        })
    );
    // The very same entry again is a duplicate, acknowledged idempotently.
    assert_eq!(
        log.integrate(entry(A, 2, 2, 1, rename("b"))),
        Ok(Integrated::Duplicate { id: id(2, A) })
    );
    assert_eq!(log.len(), 2);
    assert_eq!(log.next_seq(A), 3);
}

#[test]
fn replica_detects_sequence_reuse_and_equivocation() {
    let mut log = CommandLog::new(Mode::Replica, SESSION, editors());
    log.integrate(entry(A, 5, 5, 0, rename("a"))).unwrap();
    // Lower sequence numbers are fine out of order on a replica...
    log.integrate(entry(A, 4, 4, 0, rename("b"))).unwrap();
    // ...but not reuse.
    assert_eq!(
        log.integrate(entry(A, 4, 6, 0, rename("c"))),
        Err(Refusal::Replay {
            author: A,
            seq: 4,
            kind: ReplayKind::SeqReused
        })
    );
    // Same id, different content: the author equivocated.
    assert_eq!(
        log.integrate(entry(A, 7, 5, 0, rename("d"))),
        Err(Refusal::Replay {
            author: A,
            seq: 7,
            kind: ReplayKind::IdReused
        })
    );
}

#[test]
fn a_refused_entry_still_burns_its_sequence_number() {
    let mut log = CommandLog::new(Mode::Authority, SESSION, editors());
    let despawn = Command::Despawn { entity: ent() };
    log.integrate(entry(B, 1, 1, 0, despawn.clone())).unwrap();
    let loser = entry(C, 1, 1, 0, despawn);
    assert!(matches!(
        log.integrate(loser.clone()),
        Err(Refusal::Conflict { .. })
    ));
    // Replaying the refused envelope later cannot sneak it in.
    assert!(matches!(log.integrate(loser), Err(Refusal::Replay { .. })));
}

#[test]
fn malformed_payloads_and_timestamps_are_refused() {
    let mut log = CommandLog::new(Mode::Authority, SESSION, editors());
    let nan = Command::Translate {
        entity: ent(),
        delta: Vec3::new(0.0, f32::NAN, 0.0),
    };
    assert!(matches!(
        log.integrate(entry(A, 1, 1, 0, nan)),
        Err(Refusal::Malformed(_))
    ));
    assert!(matches!(
        log.integrate(entry(A, 2, 3, 3, rename("x"))),
        Err(Refusal::Malformed(_))
    ));
    assert!(matches!(
        log.integrate(entry(A, 3, MAX_LAMPORT_LEAD + 10, 0, rename("x"))),
        Err(Refusal::Malformed(_))
    ));
    assert!(matches!(
        log.integrate(entry(A, 4, 9, 5, rename("x"))),
        Err(Refusal::Malformed(_))
    ));
    let garbage = SignedEntry {
        body: vec![0xff; 10],
        signature: meshwork_protocol::sign::Signature([0; 64]),
    };
    assert!(matches!(log.integrate(garbage), Err(Refusal::Malformed(_))));
    assert!(log.is_empty());
}

#[test]
fn weak_or_invalid_keys_cannot_be_registered() {
    let mut keys = KeyRing::new();
    assert!(keys.register(A, PublicKey([0; 32]), Role::Editor).is_err());
}

// ---------------------------------------------------------------- Lamport

#[test]
fn lamport_clock_advances_on_append_and_integrate() {
    let mut log = CommandLog::new(Mode::Replica, SESSION, editors());
    let (e1, _) = log.append_local(A, &signer(A), rename("a")).unwrap();
    assert_eq!(e1.decode_body().unwrap().lamport, 1);
    assert_eq!(
        log.clock(),
        2,
        "observe(1) on a clock at 0 gives max(0,1)+1"
    );
    // A remote entry far ahead pulls the clock past it.
    log.integrate(entry(B, 1, 10, 0, rename("b"))).unwrap();
    assert_eq!(log.clock(), 11);
    assert_eq!(log.seen_lamport(), 10);
    let (e2, _) = log.append_local(A, &signer(A), rename("c")).unwrap();
    let b2 = e2.decode_body().unwrap();
    assert_eq!(b2.seen_lamport, 10, "the local author saw B's entry");
    assert!(b2.lamport > 10, "and orders after it");
    assert_eq!(b2.seq, 2);
}

// ---------------------------------------------------------------- conflict strategies

#[test]
fn last_write_wins_keeps_the_later_in_total_order() {
    // A and B rename concurrently (neither saw the other), both at lamport 5.
    let ea = entry(A, 1, 5, 0, rename("from A"));
    let eb = entry(B, 1, 5, 0, rename("from B"));
    for order in [[ea.clone(), eb.clone()], [eb.clone(), ea.clone()]] {
        for mode in [Mode::Authority, Mode::Replica] {
            let mut log = CommandLog::new(mode, SESSION, editors());
            for e in order.clone() {
                log.integrate(e).unwrap();
            }
            assert_eq!(
                log.get(&id(5, B)).unwrap().status,
                Status::Applied,
                "{mode:?}"
            );
            assert_eq!(
                log.get(&id(5, A)).unwrap().status,
                Status::Superseded { by: id(5, B) },
                "{mode:?}"
            );
        }
    }
}

#[test]
fn last_write_wins_does_not_touch_entries_the_writer_had_seen() {
    let mut log = CommandLog::new(Mode::Authority, SESSION, editors());
    log.integrate(entry(A, 1, 1, 0, rename("a"))).unwrap();
    log.integrate(entry(B, 1, 2, 1, rename("b"))).unwrap();
    assert_eq!(
        log.get(&id(1, A)).unwrap().status,
        Status::Applied,
        "sequential, not a conflict"
    );
}

#[test]
fn merge_keeps_both_concurrent_entries() {
    let mut log = CommandLog::new(Mode::Authority, SESSION, editors());
    let mv = |d| Command::Translate {
        entity: ent(),
        delta: Vec3::splat(d),
    };
    let r1 = log.integrate(entry(A, 1, 3, 0, mv(1.0))).unwrap();
    let r2 = log.integrate(entry(B, 1, 3, 0, mv(2.0))).unwrap();
    for r in [r1, r2] {
        assert!(
            matches!(
                r,
                Integrated::Appended {
                    status: Status::Applied,
                    ..
                }
            ),
            "{r:?}"
        );
    }
}

#[test]
fn reject_refuses_the_later_concurrent_entry() {
    let despawn = Command::Despawn { entity: ent() };
    let mut log = CommandLog::new(Mode::Authority, SESSION, editors());
    log.integrate(entry(A, 1, 4, 0, despawn.clone())).unwrap();
    let scope = despawn.scope(B);
    assert_eq!(
        log.integrate(entry(B, 1, 4, 0, despawn.clone())),
        Err(Refusal::Conflict {
            with: id(4, A),
            scope
        })
    );
    // An author who had seen the first despawn is not in conflict with it.
    assert!(log.integrate(entry(C, 1, 5, 4, despawn)).is_ok());
}

#[test]
fn authority_never_retracts_an_accepted_entry() {
    // B's extrude arrives first and is accepted; A's concurrent one sorts earlier in total order
    // (lamport 3 < 4) but arrives later: the authority refuses it rather than retract B's.
    let ext = Command::EdgeExtrude {
        entity: ent(),
        edge: HalfEdgeIndex(2),
        offset: Vec3::Y,
    };
    let mut log = CommandLog::new(Mode::Authority, SESSION, editors());
    log.integrate(entry(B, 1, 4, 0, ext.clone())).unwrap();
    assert_eq!(
        log.integrate(entry(A, 1, 3, 0, ext.clone())),
        Err(Refusal::Conflict {
            with: id(4, B),
            scope: ext.scope(A)
        })
    );
    assert_eq!(log.get(&id(4, B)).unwrap().status, Status::Applied);
}

#[test]
fn replica_retracts_and_reinstates_to_stay_order_independent() {
    // d < e < f on one reject scope. e conflicts with d; f saw d but not e.
    // Set semantics: d applied, e rejected (by d), f applied (e is out of the way).
    let ext = Command::EdgeExtrude {
        entity: ent(),
        edge: HalfEdgeIndex(2),
        offset: Vec3::Y,
    };
    let d = entry(A, 1, 2, 0, ext.clone());
    let e = entry(B, 1, 3, 0, ext.clone());
    let f = entry(C, 1, 4, 2, ext);
    let mut log = CommandLog::new(Mode::Replica, SESSION, editors());
    log.integrate(e).unwrap();
    assert!(matches!(log.integrate(f), Err(Refusal::Conflict { with, .. }) if with == id(3, B)));
    let r = log.integrate(d).unwrap();
    assert_eq!(
        r,
        Integrated::Appended {
            id: id(2, A),
            status: Status::Applied,
            changed: vec![
                (id(3, B), Status::Rejected { by: id(2, A) }),
                (id(4, C), Status::Applied)
            ],
        }
    );
    let entries_since: Vec<CommandId> = log.entries_since(0).map(|e| e.id).collect();
    assert_eq!(
        entries_since,
        vec![id(2, A), id(4, C)],
        "rejected entries are not handed out"
    );
}

// ---------------------------------------------------------------- batches

#[test]
fn batch_integration_equals_one_by_one() {
    let despawn = Command::Despawn { entity: ent() };
    let mut forged = entry(C, 1, 2, 0, rename("forged"));
    forged.signature.0[5] ^= 0xff;
    let batch = vec![
        entry(A, 1, 1, 0, rename("a")),
        entry(B, 1, 1, 0, rename("b")),
        forged,
        entry(A, 2, 2, 1, despawn.clone()),
        entry(B, 2, 2, 1, despawn),
        entry(A, 1, 1, 0, rename("a")), // duplicate
        entry(A, 2, 3, 1, rename("replay")),
        entry_with(&signer(B), SESSION, C, 2, 3, 0, rename("wrong key")),
        entry(
            C,
            3,
            4,
            2,
            Command::Translate {
                entity: ent(),
                delta: Vec3::X,
            },
        ),
    ];
    for mode in [Mode::Authority, Mode::Replica] {
        let mut one = CommandLog::new(mode, SESSION, editors());
        let singles: Vec<_> = batch.iter().cloned().map(|e| one.integrate(e)).collect();
        let mut many = CommandLog::new(mode, SESSION, editors());
        let batched = many.integrate_batch(batch.clone());
        assert_eq!(singles, batched, "{mode:?}");
        assert_eq!(one.encode(), many.encode(), "{mode:?}");
        let refused = batched.iter().filter(|r| r.is_err()).count();
        assert!(
            refused >= 4,
            "the test batch exercises refusals: {batched:?}"
        );
    }
}

// ---------------------------------------------------------------- letting go (bounded memory)

/// Entity `n` (of A's namespace).
fn ent_n(n: u32) -> EntityId {
    EntityId::new(A, n)
}

/// A command on entity `n`: 0 rename (last-write-wins), 1 nudge (merge), 2 delete (reject),
/// 3 set the transform (last-write-wins, the nudge's scope), 4 add a vertex (merge), 5 mirror
/// (reject, the vertex's scope).
fn command_of(kind: u8, n: u32, i: usize) -> Command {
    match kind {
        0 => Command::SetName {
            entity: ent_n(n),
            name: format!("n{i}"),
        },
        1 => Command::Translate {
            entity: ent_n(n),
            delta: Vec3::X,
        },
        2 => Command::Despawn { entity: ent_n(n) },
        3 => Command::SetTransform {
            entity: ent_n(n),
            transform: Transform::IDENTITY,
        },
        4 => Command::VertexCreate {
            entity: ent_n(n),
            position: Vec3::Y,
        },
        _ => Command::Mirror {
            entity: ent_n(n),
            axis: Axis::X,
            weld: false,
        },
    }
}

#[test]
fn an_entry_that_missed_an_edit_let_go_is_judged_by_what_was_kept() {
    use meshwork_protocol::registry::Facet;
    let mut log = CommandLog::new(Mode::Authority, SESSION, editors());
    // A renames entity 1 at lamport 10, B deletes it at 11, B nudges it at 12; the first two
    // are then let go.
    log.integrate(entry(A, 1, 10, 0, command_of(0, 1, 0)))
        .unwrap();
    log.integrate(entry(B, 1, 11, 10, command_of(2, 1, 1)))
        .unwrap();
    log.integrate(entry(B, 2, 12, 11, command_of(1, 1, 2)))
        .unwrap();
    assert_eq!(log.let_go(1, &|_| false), 2);
    assert_eq!(log.floor(), Some(id(11, B)));
    assert_eq!((log.len(), log.held()), (3, 1));
    assert_eq!(
        log.state_hash(),
        None,
        "the hash covers every entry or none"
    );

    // C had seen nothing of it. A nudge merges: accepted.
    assert!(
        log.integrate(entry(C, 1, 13, 0, command_of(1, 1, 3)))
            .is_ok()
    );
    // A rename after the rename let go supersedes it: accepted.
    assert!(matches!(
        log.integrate(entry(C, 2, 14, 0, command_of(0, 1, 4))),
        Ok(Integrated::Appended {
            status: Status::Applied,
            ..
        })
    ));
    // A delete that missed the delete let go cannot be judged without it: refused, naming it.
    let existence = Scope::Entity {
        entity: ent_n(1),
        facet: Facet::Existence,
    };
    assert_eq!(
        log.integrate(entry(C, 3, 15, 9, command_of(2, 1, 5))),
        Err(Refusal::Conflict {
            with: id(11, B),
            scope: existence,
        })
    );
    // A rename that sorts before the rename let go (an old offline edit) is refused too.
    assert_eq!(
        log.integrate(entry(A, 3, 9, 0, command_of(0, 1, 6))),
        Err(Refusal::Malformed(
            "lamport 9 does not advance past the author's 10".into()
        )),
        "the author's own marks survive letting go"
    );
    let mut other = CommandLog::new(Mode::Authority, SESSION, editors());
    other
        .integrate(entry(A, 1, 10, 0, command_of(0, 1, 0)))
        .unwrap();
    other.let_go(0, &|_| false);
    assert_eq!(
        other.integrate(entry(B, 1, 5, 0, command_of(0, 1, 7))),
        Err(Refusal::Conflict {
            with: id(10, A),
            scope: Scope::Entity {
                entity: ent_n(1),
                facet: Facet::Name,
            },
        })
    );
    // A merge that sorts before a mirror let go (which never saw it, and would lose to it) is
    // refused too; one after it is not.
    let mut mesh = CommandLog::new(Mode::Authority, SESSION, editors());
    mesh.integrate(entry(A, 1, 10, 0, command_of(5, 1, 0)))
        .unwrap();
    mesh.let_go(0, &|_| false);
    assert!(matches!(
        mesh.integrate(entry(B, 1, 5, 0, command_of(4, 1, 1))),
        Err(Refusal::Conflict { with, .. }) if with == id(10, A)
    ));
    assert!(
        mesh.integrate(entry(C, 1, 11, 0, command_of(4, 1, 2)))
            .is_ok()
    );
    // Having seen everything let go there, a delete is judged as usual.
    assert!(
        log.integrate(entry(C, 4, 16, 12, command_of(2, 1, 6)))
            .is_ok()
    );
    // A replay from the store is never refused for what was let go (it was accepted once).
    let mut restored = CommandLog::new(Mode::Authority, SESSION, editors());
    restored
        .integrate(entry(B, 1, 11, 0, command_of(2, 1, 1)))
        .unwrap();
    restored.let_go(0, &|_| false);
    assert!(
        restored
            .replay_trusted(entry(C, 1, 15, 9, command_of(2, 1, 5)))
            .is_ok()
    );
}

#[test]
fn an_entry_let_go_sent_again_is_a_duplicate_not_a_replay() {
    let mut log = CommandLog::new(Mode::Authority, SESSION, editors());
    let first = entry(A, 1, 1, 0, command_of(1, 1, 0));
    log.integrate(first.clone()).unwrap();
    log.integrate(entry(A, 2, 2, 1, command_of(1, 1, 1)))
        .unwrap();
    assert_eq!(log.let_go(0, &|_| false), 2);
    assert_eq!(
        log.integrate(first),
        Ok(Integrated::Duplicate { id: id(1, A) }),
        "its ack may have been lost: it is acknowledged again"
    );
    // Another entry under the same sequence number is still a replay.
    assert!(matches!(
        log.integrate(entry(A, 1, 3, 2, command_of(0, 1, 2))),
        Err(Refusal::Replay { .. })
    ));
}

#[test]
fn a_pinned_entry_is_not_let_go_and_nor_is_anything_after_it() {
    let mut log = CommandLog::new(Mode::Authority, SESSION, editors());
    for i in 1..=5u64 {
        log.integrate(entry(
            A,
            i,
            i,
            i - 1,
            command_of(1, u32::try_from(i).unwrap(), 0),
        ))
        .unwrap();
    }
    assert_eq!(log.let_go(0, &|id| id.lamport == 3), 2);
    assert_eq!(log.held(), 3);
    // A replica keeps everything.
    let mut replica = CommandLog::new(Mode::Replica, SESSION, editors());
    replica
        .integrate(entry(A, 1, 1, 0, command_of(1, 1, 0)))
        .unwrap();
    assert_eq!(replica.let_go(0, &|_| false), 0);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// A log that lets go of all but a few entries never accepts what the whole log refuses,
    /// accepts with the same status, refuses for its own reason only as a conflict with an
    /// entry let go, and the entries it holds have the statuses the whole log gives them.
    #[test]
    #[allow(clippy::arithmetic_side_effects, reason = "test code: small counters")]
    fn letting_go_never_accepts_what_the_whole_log_refuses(
        ops in proptest::collection::vec((0u8..3, 0u32..3, 0u8..6, 0u64..24), 1..120),
    ) {
        let authors = [A, B, C];
        let mut whole = CommandLog::new(Mode::Authority, SESSION, editors());
        let mut bounded = CommandLog::new(Mode::Authority, SESSION, editors());
        let mut seq = [0u64; 3];
        let mut high = [0u64; 3];
        for (i, (who, n, kind, lag)) in ops.into_iter().enumerate() {
            let w = usize::from(who);
            let author = authors[w];
            let seen = whole.clock().saturating_sub(lag);
            let lamport = high[w].max(seen) + 1;
            seq[w] += 1;
            high[w] = lamport;
            let e = entry(author, seq[w], lamport, seen, command_of(kind, n, i));
            let got = bounded.integrate(e.clone());
            match &got {
                Err(Refusal::Conflict { with, .. })
                    if bounded.get(with).is_none()
                        && bounded.floor().is_some_and(|f| *with <= f) => {
                    // Refused for an entry let go (where the whole log may accept it): the
                    // whole log is not fed it, so both keep the same entries. A sequence
                    // number skipped is fine for an authority (they only need to rise).
                }
                _ => {
                    // Status changes of entries let go are not reported (nor kept).
                    let floor = bounded.floor();
                    let want = whole.integrate(e).map(|i| match i {
                        Integrated::Appended { id, status, changed } => Integrated::Appended {
                            id,
                            status,
                            changed: changed
                                .into_iter()
                                .filter(|(c, _)| floor.is_none_or(|f| *c > f))
                                .collect(),
                        },
                        d @ Integrated::Duplicate { .. } => d,
                    });
                    match (&got, &want) {
                        // Both refuse it as a conflict; the whole log names an entry let go.
                        (
                            Err(Refusal::Conflict { .. }),
                            Err(Refusal::Conflict { with, .. }),
                        ) if bounded.get(with).is_none()
                            && floor.is_some_and(|f| *with <= f) => {}
                        _ => proptest::prop_assert_eq!(&got, &want),
                    }
                }
            }
            bounded.let_go(4, &|_| false);
        }
        for e in bounded.iter() {
            let w = whole.get(&e.id).map(|w| w.status);
            proptest::prop_assert_eq!(Some(e.status), w, "status of {}", e.id);
        }
        proptest::prop_assert_eq!(whole.len(), bounded.len());
    }
}
