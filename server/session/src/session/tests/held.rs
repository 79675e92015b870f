//! Partial replicas: a client that holds a region of the scene ([`ClientMsg::Hold`]) is sent only
//! what concerns it, and holds exactly the server's state of what is inside the region.

use std::collections::BTreeSet;

use meshwork_protocol::client::{ClientConnection, ClientEvent};
use meshwork_protocol::editmesh::Axis;
use meshwork_protocol::interest::{Region, point_mm};
use meshwork_protocol::scene::Scene;
use meshwork_protocol::{Primitive, Transform};

use super::resume::{World, cube};
use super::*;

fn at(entity: EntityId, x: f32) -> Command {
    Command::Spawn {
        entity,
        primitive: Primitive::Cube,
        transform: Transform {
            translation: Vec3::new(x, 0.0, 0.0),
            ..Transform::IDENTITY
        },
    }
}

/// A session where A (on `C1`) has placed cubes with ids 1, 2, … at these x positions.
fn placed(xs: &[f32]) -> (World, AuthorId) {
    let mut w = World::new();
    w.join(C1, 1);
    let a = w.conns[&C1].author().unwrap();
    let spawns = (1u32..).zip(xs).map(|(k, x)| at(EntityId::new(a, k), *x));
    w.submit(C1, spawns.collect());
    w.pump();
    (w, a)
}

/// What a replica holding `region` must hold: the server's entities whose origin is inside,
/// as the server has them, at the replica's position.
fn expected(server: &Scene, region: &Region, position: u64, lamport: u64) -> Scene {
    let inside: BTreeSet<EntityId> = server
        .entities
        .iter()
        .filter(|(_, e)| region.contains(point_mm(e.transform.translation)))
        .map(|(id, _)| *id)
        .collect();
    server.held_copy(&inside, position, lamport)
}

fn assert_holds(w: &World, client: ClientId, region: &Region) {
    let replica = w.conns[&client].replica().scene();
    let want = expected(
        w.h.session.scene(),
        region,
        replica.position,
        replica.lamport,
    );
    assert_eq!(
        replica.entities.keys().collect::<Vec<_>>(),
        want.entities.keys().collect::<Vec<_>>()
    );
    assert_eq!(*replica, want);
    assert_eq!(replica.state_hash(), want.state_hash());
}

fn holding(w: &mut World, client: ClientId, seed: u8, region: Region) {
    let invite = w.h.invite(Role::Editor, NOW + 60_000);
    let mut conn = ClientConnection::new(Ed25519Signer::from_seed([seed; 32]), invite, "test");
    conn.set_hold(Some(region));
    w.connect(client, conn);
}

fn no_resync(w: &World, client: ClientId) {
    assert!(
        !w.events[&client]
            .iter()
            .any(|e| matches!(e, ClientEvent::Resyncing(_))),
        "{:?}",
        w.events[&client]
    );
}

/// The state hash goes out on the next tick past its interval.
fn hash_tick(w: &mut World) {
    w.h.now =
        w.h.now
            .saturating_add(w.h.session.config.state_hash_interval_ms)
            .saturating_add(1);
    let out = w.h.input(Input::Tick);
    w.deliver(out);
    w.pump();
}

#[test]
fn a_partial_replica_holds_exactly_its_region_through_edits_moves_copies_and_undo() {
    // Before B joins: two inside its region (±10 m around the origin), two far outside.
    let (mut w, a) = placed(&[0.0, 5.0, 50.0, 500.0]);
    let e = |k| EntityId::new(a, k);
    let region = Region::around(Vec3::ZERO, 10.0);
    holding(&mut w, C2, 2, region);
    // The join's snapshot is already the held part.
    assert!(
        w.received[&C2]
            .iter()
            .any(|m| matches!(m, ServerMsg::Snapshot(_)))
    );
    assert_eq!(w.conns[&C2].replica().scene().entities.len(), 2);
    assert_holds(&w, C2, &region);
    let mut sent_before = w.received[&C2].len();

    let steps: Vec<(&str, Vec<Command>, bool)> = vec![
        // Far away: nothing at all reaches B.
        (
            "a far edit",
            vec![Command::Translate {
                entity: e(4),
                delta: Vec3::Y,
            }],
            false,
        ),
        ("a spawn inside", vec![at(e(5), -3.0)], true),
        ("a spawn outside", vec![at(e(6), 30.0)], false),
        (
            "an outside entity moved in",
            vec![Command::Translate {
                entity: e(3),
                delta: Vec3::new(-48.0, 0.0, 0.0),
            }],
            true,
        ),
        (
            "an inside entity moved out",
            vec![Command::Translate {
                entity: e(2),
                delta: Vec3::new(40.0, 0.0, 0.0),
            }],
            true,
        ),
        (
            "a held mesh edited",
            vec![Command::Mirror {
                entity: e(1),
                axis: Axis::X,
                weld: false,
            }],
            true,
        ),
        (
            "a copy of a held entity landing outside, one landing inside",
            vec![
                Command::Duplicate {
                    entity: e(1),
                    copy: e(7),
                    offset: Vec3::new(100.0, 0.0, 0.0),
                },
                Command::Duplicate {
                    entity: e(1),
                    copy: e(8),
                    offset: Vec3::new(1.0, 0.0, 0.0),
                },
            ],
            true,
        ),
        (
            "a copy of an entity B does not hold, landing inside",
            vec![Command::Duplicate {
                entity: e(4),
                copy: e(9),
                offset: Vec3::new(-500.0, 0.0, 2.0),
            }],
            true,
        ),
        (
            "an undo of that copy (its result goes as state: B cannot apply an undo)",
            vec![Command::Undo { step: None }],
            true,
        ),
        (
            "a held mesh mirrored again, then undone (state)",
            vec![
                Command::Mirror {
                    entity: e(1),
                    axis: Axis::Z,
                    weld: false,
                },
                Command::Undo { step: None },
            ],
            true,
        ),
        (
            "a held entity removed",
            vec![Command::Despawn { entity: e(5) }],
            true,
        ),
        (
            "a selection (every member's state is held)",
            vec![Command::Select {
                entities: vec![e(4), e(1)],
            }],
            true,
        ),
    ];
    for (what, commands, reaches) in steps {
        // One submit per command: each is its own undo step and batch.
        for c in commands {
            w.submit(C1, vec![c]);
            w.pump();
        }
        let got = &w.received[&C2][sent_before..];
        assert!(
            !got.iter().any(|m| matches!(
                m,
                ServerMsg::Entries(_) | ServerMsg::SealedDelta(_) | ServerMsg::Snapshot(_)
            )),
            "{what}: a partial replica is sent only `Held`: {got:?}"
        );
        let held = got
            .iter()
            .filter(|m| matches!(m, ServerMsg::Held(_)))
            .count();
        assert_eq!(held > 0, reaches, "{what}: {got:?}");
        sent_before = w.received[&C2].len();
        assert_holds(&w, C2, &region);
    }
    let held: Vec<EntityId> = w.conns[&C2]
        .replica()
        .scene()
        .entities
        .keys()
        .copied()
        .collect();
    assert_eq!(held, vec![e(1), e(3), e(8)]);
    assert_eq!(
        w.conns[&C2].replica().scene().authors,
        w.h.session.scene().authors
    );
    // The state hash of what it holds checks out; the whole replica's checks out too.
    let verified_before = w.events[&C2].len();
    hash_tick(&mut w);
    assert!(
        w.received[&C2]
            .iter()
            .any(|m| matches!(m, ServerMsg::StateHash(_)))
    );
    assert!(w.events[&C2].len() > verified_before);
    no_resync(&w, C2);
    assert_eq!(w.hash(C1), w.h.session.scene().state_hash());
    // B's own edit of what it holds reaches it like any other.
    w.submit(
        C2,
        vec![Command::Translate {
            entity: e(8),
            delta: Vec3::Z,
        }],
    );
    w.pump();
    assert_holds(&w, C2, &region);
    // Fewer entries than the whole replica.
    let count = |c: ClientId| -> usize {
        w.received[&c]
            .iter()
            .map(|m| match m {
                ServerMsg::Entries(e) => e.entries.len(),
                ServerMsg::Held(h) => h.entries.len(),
                _ => 0,
            })
            .sum()
    };
    assert!(count(C2) < count(C1), "{} vs {}", count(C2), count(C1));
}

#[test]
fn a_moved_region_brings_what_it_now_holds_in_the_answer_to_the_move() {
    // Three near the origin, four around x = 210.
    let (mut w, a) = placed(&[1.0, 2.0, 3.0, 211.0, 212.0, 213.0, 214.0]);
    let here = Region::around(Vec3::ZERO, 10.0);
    holding(&mut w, C2, 2, here);
    assert_holds(&w, C2, &here);
    assert_eq!(w.conns[&C2].replica().scene().entities.len(), 3);

    // B moves its view: the answer to that one message brings what it now holds.
    let there = Region::around(Vec3::new(210.0, 0.0, 0.0), 10.0);
    w.conns.get_mut(&C2).unwrap().set_hold(Some(there));
    let msg = w.conns.get_mut(&C2).unwrap().poll_transmit().unwrap();
    assert!(matches!(msg, ClientMsg::Hold(_)));
    let out = w.h.send(C2, &msg);
    let answer = sent_to(&out, C2);
    let [ServerMsg::Held(update)] = answer.as_slice() else {
        panic!("one update, at once: {answer:?}");
    };
    let delta = update.delta.as_ref().unwrap().decode().unwrap();
    assert_eq!(
        delta.entities.iter().filter(|(_, s)| s.is_some()).count(),
        4,
        "what came into view, as state"
    );
    assert_eq!(
        delta.entities.iter().filter(|(_, s)| s.is_none()).count(),
        3,
        "what left it"
    );
    w.deliver(out);
    assert_holds(&w, C2, &there);
    assert_eq!(w.conns[&C2].replica().scene().entities.len(), 4);
    // A move that changes nothing held sends nothing.
    let beside = Region::around(Vec3::new(209.0, 0.5, 0.0), 10.5);
    w.conns.get_mut(&C2).unwrap().set_hold(Some(beside));
    let msg = w.conns.get_mut(&C2).unwrap().poll_transmit().unwrap();
    let out = w.h.send(C2, &msg);
    assert!(sent_to(&out, C2).is_empty(), "{:?}", sent_to(&out, C2));

    // Back to the whole scene: a snapshot of all of it, after which entries flow again.
    w.conns.get_mut(&C2).unwrap().set_hold(None);
    w.pump();
    assert_eq!(w.hash(C2), w.h.session.scene().state_hash());
    w.submit(C1, vec![cube(EntityId::new(a, 40))]);
    w.pump();
    assert!(matches!(
        w.received[&C2].last(),
        Some(ServerMsg::Entries(_))
    ));
    assert_eq!(w.hash(C2), w.h.session.scene().state_hash());
    // And to a part again.
    w.conns.get_mut(&C2).unwrap().set_hold(Some(here));
    w.pump();
    assert_holds(&w, C2, &here);
    hash_tick(&mut w);
    no_resync(&w, C2);
}

#[test]
fn a_partial_replica_rejoins_with_the_held_part_and_a_bad_update_is_caught() {
    let (mut w, a) = placed(&[1.0, 90.0]);
    let region = Region::around(Vec3::ZERO, 10.0);
    holding(&mut w, C2, 2, region);
    // B drops; A edits meanwhile; B comes back and gets the held part again.
    let out = w.h.input(Input::Disconnected { client: C2 });
    w.deliver(out);
    let mut b = w.conns.remove(&C2).unwrap();
    b.reconnect();
    w.submit(
        C1,
        vec![
            Command::Translate {
                entity: EntityId::new(a, 1),
                delta: Vec3::X,
            },
            at(EntityId::new(a, 3), -2.0),
        ],
    );
    w.pump();
    let c3 = ClientId(3);
    w.connect(c3, b);
    assert_holds(&w, c3, &region);
    no_resync(&w, c3);

    // An update that does not start where the replica stands is refused and resynced.
    let mut replica = meshwork_protocol::replica::Replica::new();
    for m in &w.received[&c3] {
        replica.on_message(m);
    }
    let stray = ServerMsg::Held(wire::Held {
        from_position: replica.scene().position.saturating_add(1),
        to_position: replica.scene().position.saturating_add(2),
        lamport: replica.scene().lamport,
        entries: Vec::new(),
        delta: None,
    });
    assert!(replica.on_message(&stray).needs_resync());
}

#[test]
fn a_copy_of_what_an_undo_changed_in_the_same_fan_out_goes_as_state() {
    let (mut w, a) = placed(&[0.0]);
    let e = |k| EntityId::new(a, k);
    let region = Region::around(Vec3::ZERO, 10.0);
    holding(&mut w, C2, 2, region);
    w.submit(
        C1,
        vec![Command::Mirror {
            entity: e(1),
            axis: Axis::X,
            weld: false,
        }],
    );
    w.pump();
    assert_holds(&w, C2, &region);
    // One submit, one fan-out: the undo reverts the mirror (state the replica cannot make),
    // then the copy is made from the reverted mesh.
    w.submit(
        C1,
        vec![
            Command::Undo { step: None },
            Command::Duplicate {
                entity: e(1),
                copy: e(2),
                offset: Vec3::new(1.0, 0.0, 0.0),
            },
        ],
    );
    w.pump();
    assert_eq!(w.h.session.scene().entities.len(), 2);
    assert_holds(&w, C2, &region);
    hash_tick(&mut w);
    no_resync(&w, C2);
}

#[test]
fn a_hold_changed_while_the_join_is_proved_goes_after_the_welcome() {
    let (mut w, _) = placed(&[0.0, 300.0]);
    let (first, then) = (
        Region::around(Vec3::ZERO, 10.0),
        Region::around(Vec3::new(300.0, 0.0, 0.0), 10.0),
    );
    let invite = w.h.invite(Role::Editor, NOW + 60_000);
    let mut conn = ClientConnection::new(Ed25519Signer::from_seed([2; 32]), invite, "test");
    conn.set_hold(Some(first));
    w.h.input(Input::Connected { client: C2 });
    let hello = conn.poll_transmit().unwrap();
    let out = w.h.send(C2, &hello);
    for m in sent_to(&out, C2) {
        conn.handle(&m);
    }
    // The proof (and the first region) are queued; the view moves before the welcome.
    conn.set_hold(Some(then));
    w.conns.insert(C2, conn);
    w.pump();
    assert_eq!(w.conns[&C2].hold(), Some(then));
    assert_holds(&w, C2, &then);
    assert_eq!(w.conns[&C2].replica().scene().entities.len(), 1);
}

#[test]
fn region_changes_past_the_limit_wait_and_the_latest_is_carried_out() {
    let xs: Vec<f32> = (0..30u8).map(|k| f32::from(k) * 20.0).collect();
    let (mut w, _) = placed(&xs);
    holding(&mut w, C2, 2, Region::around(Vec3::ZERO, 5.0));
    let mut throttled = 0;
    for k in 1..30u8 {
        let region = Region::around(Vec3::new(f32::from(k) * 20.0, 0.0, 0.0), 5.0);
        w.conns.get_mut(&C2).unwrap().set_hold(Some(region));
        let msg = w.conns.get_mut(&C2).unwrap().poll_transmit().unwrap();
        let out = w.h.send(C2, &msg);
        throttled += super::throttled(&out, "hold_throttled");
        w.deliver(out);
    }
    assert!(throttled > 0, "bursts past the limit wait");
    let last = Region::around(Vec3::new(29.0 * 20.0, 0.0, 0.0), 5.0);
    // Time passes: the one waiting (the latest) goes.
    w.h.now = w.h.now.saturating_add(2_000);
    let out = w.h.input(Input::Tick);
    w.deliver(out);
    w.pump();
    assert_holds(&w, C2, &last);
    assert_eq!(w.conns[&C2].replica().scene().entities.len(), 1);
}

#[test]
fn more_entries_than_a_frame_takes_go_in_several_updates() {
    let (mut w, a) = placed(&[0.0]);
    w.h.session.config.catch_up_chunk = 2;
    let region = Region::around(Vec3::ZERO, 10.0);
    holding(&mut w, C2, 2, region);
    let before = w.received[&C2].len();
    let nudges: Vec<Command> = (0..5)
        .map(|_| Command::Translate {
            entity: EntityId::new(a, 1),
            delta: Vec3::new(0.1, 0.0, 0.0),
        })
        .collect();
    w.submit(C1, nudges);
    w.pump();
    let updates: Vec<usize> = w.received[&C2][before..]
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Held(h) => Some(h.entries.len()),
            _ => None,
        })
        .collect();
    assert_eq!(updates, vec![2, 2, 1]);
    assert_holds(&w, C2, &region);
    hash_tick(&mut w);
    no_resync(&w, C2);
}
