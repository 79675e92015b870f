//! Undo and redo through the session: refusals on the wire, effects fanned out as deltas that
//! replicas apply to the same bytes, and a history that survives a restart.

#![allow(clippy::arithmetic_side_effects, reason = "test code: small counters")]

use meshwork_protocol::Primitive;
use meshwork_protocol::Transform;
use meshwork_protocol::editmesh::VertexKey;
use meshwork_protocol::replica::Replica;
use meshwork_protocol::scene::Geometry;

use super::*;
use crate::session::HistoryQuery;

/// Two editors, each with a replica fed everything the session sends them.
struct Pair {
    h: Harness,
    store: FakeStore,
    people: [(Ed25519Signer, AuthorId, ClientId, u64, u64); 2],
    replicas: [Replica; 2],
}

impl Pair {
    fn new() -> Self {
        let mut h = Harness::new();
        h.session.config.rate_per_s = 10_000;
        h.session.config.burst = 10_000;
        let s1 = Ed25519Signer::from_seed([1; 32]);
        let s2 = Ed25519Signer::from_seed([2; 32]);
        let (a1, out1) = h.join_outputs(C1, &s1, Role::Editor);
        let (a2, out2) = h.join_outputs(C2, &s2, Role::Editor);
        let mut pair = Self {
            h,
            store: FakeStore::default(),
            people: [(s1, a1, C1, 0, 0), (s2, a2, C2, 0, 0)],
            replicas: [Replica::new(), Replica::new()],
        };
        pair.feed(&out1);
        pair.feed(&out2);
        for b in 0..2 {
            let out = pair.h.input(Input::PersistAck { batch: BatchId(b) });
            pair.feed(&out);
        }
        pair.store.authors = pair.h.session.authors();
        pair
    }

    fn author(&self, who: usize) -> AuthorId {
        self.people[who].1
    }

    /// Gives each replica what was sent to its connection.
    fn feed(&mut self, out: &[Output]) {
        for (i, client) in [C1, C2].into_iter().enumerate() {
            for msg in sent_to(out, client) {
                let event = self.replicas[i].on_message(&msg);
                assert!(!event.needs_resync(), "{event:?} from {msg:?}");
            }
        }
    }

    /// Submits one command by `who`, makes it durable, and returns what came back.
    fn submit(
        &mut self,
        who: usize,
        command: Command,
    ) -> (Result<(), (RefusalCode, String)>, Vec<Output>) {
        let (signer, author, client, seq, lamport) = &mut self.people[who];
        *seq += 1;
        *lamport = (*lamport).max(self.h.session.scene().lamport) + 1;
        let e = entry(signer, *author, *seq, *lamport, command);
        let client = *client;
        let mut out = self
            .h
            .send(client, &ClientMsg::Submit(Submit { entries: vec![e] }));
        let refused = sent_to(&out, client).into_iter().find_map(|m| match m {
            ServerMsg::CommandRefused(r) => Some((r.code, r.message)),
            _ => None,
        });
        let mut all = out.clone();
        while let Some(batch) = out.iter().find_map(|o| match o {
            Output::Persist { batch, entries, .. } => {
                self.store.entries.extend(entries.iter().cloned());
                Some(*batch)
            }
            _ => None,
        }) {
            out = self.h.input(Input::PersistAck { batch });
            all.extend(out.iter().cloned());
        }
        self.feed(&all);
        (refused.map_or(Ok(()), Err), all)
    }

    fn ok(&mut self, who: usize, command: Command) -> Vec<Output> {
        let label = format!("{command:?}");
        let (r, out) = self.submit(who, command);
        assert_eq!(r, Ok(()), "{label}");
        out
    }

    fn entity(&self) -> EntityId {
        EntityId::new(self.author(0), 1)
    }

    fn spawn(&mut self) {
        let entity = self.entity();
        self.ok(
            0,
            Command::Spawn {
                entity,
                primitive: Primitive::Cube,
                transform: Transform::IDENTITY,
            },
        );
    }

    fn vertex(&self, i: usize) -> VertexKey {
        let e = &self.h.session.scene().entities[&self.entity()];
        *e.geometry
            .edit_mesh(e.spawned_by)
            .vertices()
            .keys()
            .nth(i)
            .unwrap()
    }

    fn replicas_match(&self) {
        let want = self.h.session.scene().state_hash();
        for r in &self.replicas {
            assert_eq!(
                r.scene().state_hash(),
                want,
                "a replica differs from the server"
            );
        }
    }
}

fn undo_events(out: &[Output]) -> Vec<(bool, &'static str)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(Event::Undo { redo, outcome }) => Some((*redo, *outcome)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_undo_reaches_every_replica_as_a_delta_and_redo_brings_the_step_back() {
    let mut p = Pair::new();
    p.spawn();
    let entity = p.entity();
    p.ok(
        0,
        Command::Translate {
            entity,
            delta: Vec3::X,
        },
    );
    let moved = p.h.session.scene().state_hash();
    let out = p.ok(0, Command::Undo { step: None });
    assert_eq!(undo_events(&out), vec![(false, "accepted")]);
    assert!(
        sent_to(&out, C2)
            .iter()
            .any(|m| matches!(m, ServerMsg::SealedDelta(_))),
        "the other replica gets the undo's effect as a delta"
    );
    assert_eq!(
        p.h.session.scene().entities[&entity].transform.translation,
        Vec3::ZERO
    );
    p.replicas_match();
    let out = p.ok(0, Command::Redo { step: None });
    assert_eq!(undo_events(&out), vec![(true, "accepted")]);
    p.replicas_match();
    let mut back = p.h.session.scene().clone();
    back.position -= 2;
    back.lamport = p.h.session.scene().lamport - 2;
    assert_eq!(back.state_hash(), moved, "redo gives back the same bytes");
}

#[test]
fn an_undo_of_what_another_editor_changed_is_refused_naming_them() {
    let mut p = Pair::new();
    p.spawn();
    let entity = p.entity();
    let v = p.vertex(0);
    p.ok(
        0,
        Command::MoveVertices {
            entity,
            moves: vec![(v, Vec3::splat(1.0))],
        },
    );
    p.ok(
        1,
        Command::MoveVertices {
            entity,
            moves: vec![(v, Vec3::splat(2.0))],
        },
    );
    let before = p.h.session.scene().state_hash();
    let (r, out) = p.submit(0, Command::Undo { step: None });
    let (code, message) = r.unwrap_err();
    assert_eq!(code, RefusalCode::Undo);
    assert!(message.contains(&p.author(1).to_string()), "{message}");
    assert_eq!(undo_events(&out), vec![(false, "changed")]);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Event(Event::Refused {
            code: RefusalCode::Undo
        })
    )));
    assert_eq!(p.h.session.scene().state_hash(), before, "nothing changed");
    // B may undo their own move; then A's undo goes through.
    p.ok(1, Command::Undo { step: None });
    let (r, _) = p.submit(0, Command::Undo { step: None });
    assert_eq!(
        r.map_err(|(c, _)| c),
        Err(RefusalCode::Undo),
        "B was the last to write the vertex (its undo): A's undo still may not overwrite it"
    );
    p.replicas_match();
}

#[test]
fn a_viewer_cannot_undo() {
    let mut h = Harness::new();
    let s = Ed25519Signer::from_seed([3; 32]);
    let a = h.join(C1, &s, Role::Viewer);
    let out = h.send(
        C1,
        &ClientMsg::Submit(Submit {
            entries: vec![entry(&s, a, 1, 1, Command::Undo { step: None })],
        }),
    );
    assert!(matches!(
        sent_to(&out, C1).first(),
        Some(ServerMsg::CommandRefused(CommandRefused {
            code: RefusalCode::Permission,
            ..
        }))
    ));
}

#[test]
fn undo_after_a_restart_reverts_the_step_made_before_it() {
    let mut p = Pair::new();
    p.spawn();
    let entity = p.entity();
    let face = {
        let e = &p.h.session.scene().entities[&entity];
        *e.geometry
            .edit_mesh(e.spawned_by)
            .faces()
            .keys()
            .next()
            .unwrap()
    };
    let before_extrude = p.h.session.scene().entities[&entity].clone();
    p.ok(
        0,
        Command::ExtrudeFaces {
            entity,
            faces: vec![face],
            direction: meshwork_protocol::command::ExtrudeDirection::Normal { distance_m: 0.4 },
            snap_m: None,
        },
    );
    let mut config = Config::new(SESSION, p.h.server.public_key());
    config.rate_per_s = 10_000;
    config.burst = 10_000;
    let (restored, report) = Session::restore(
        config,
        [0; 32],
        NOW,
        &p.store.authors,
        &[],
        None,
        p.store.entries.clone(),
    )
    .unwrap();
    assert_eq!(report.replayed, 2);
    let mut h = Harness {
        server: Ed25519Signer::from_seed([0x5e; 32]),
        session: restored,
        now: NOW,
    };
    let s1 = Ed25519Signer::from_seed([1; 32]);
    let a1 = h.join(C1, &s1, Role::Editor);
    assert_eq!(a1, p.author(0), "the key rejoins as the same author");
    let out = h.send(
        C1,
        &ClientMsg::Submit(Submit {
            entries: vec![entry(&s1, a1, 3, 4, Command::Undo { step: None })],
        }),
    );
    let batch = out
        .iter()
        .find_map(|o| match o {
            Output::Persist { batch, .. } => Some(*batch),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{:?}", sent_to(&out, C1)));
    h.input(Input::PersistAck { batch });
    let after = &h.session.scene().entities[&entity];
    assert!(matches!(
        after.geometry,
        Geometry::Primitive(Primitive::Cube)
    ));
    assert_eq!(
        *after, before_extrude,
        "the extrude made before the restart is undone"
    );
}

#[test]
fn the_history_lists_who_did_what_newest_first_with_undone_steps_marked() {
    let mut p = Pair::new();
    p.h.now = NOW + 5_000;
    p.spawn();
    let entity = p.entity();
    let v = p.vertex(3);
    p.ok(
        1,
        Command::MoveVertices {
            entity,
            moves: vec![(v, Vec3::splat(0.9))],
        },
    );
    p.ok(
        0,
        Command::Step {
            entries: 2,
            label: "Nudge and rename".into(),
        },
    );
    p.ok(
        0,
        Command::Translate {
            entity,
            delta: Vec3::Y,
        },
    );
    p.ok(
        0,
        Command::SetName {
            entity,
            name: "box".into(),
        },
    );
    p.ok(0, Command::Undo { step: None });
    let page = p.h.session.history_page(&HistoryQuery {
        limit: 2,
        ..HistoryQuery::default()
    });
    assert_eq!(page.kept, 3);
    let labels: Vec<(&str, u32, bool)> = page
        .steps
        .iter()
        .map(|s| (s.label.as_str(), s.author, s.undone))
        .collect();
    assert_eq!(
        labels,
        vec![
            ("Nudge and rename", p.author(0).0, true),
            ("move vertices", p.author(1).0, false),
        ]
    );
    assert_eq!(page.steps[0].kinds, vec!["translate", "set_name"]);
    assert_eq!(page.steps[0].at_ms, Some(NOW + 5_000));
    assert_eq!(page.steps[1].elements, 1);
    let rest = p.h.session.history_page(&HistoryQuery {
        limit: 2,
        before: page.next_before,
        ..HistoryQuery::default()
    });
    assert_eq!(rest.steps.len(), 1);
    assert_eq!(rest.steps[0].label, "add");
    assert_eq!(rest.next_before, None);
    // Who last changed the vertex: B (A's later step is undone and never touched it).
    let who = p.h.session.history_page(&HistoryQuery {
        limit: 10,
        entity: Some(entity),
        element: Some(v.0),
        ..HistoryQuery::default()
    });
    assert_eq!(who.last_change.map(|s| s.author), Some(p.author(1).0));
    let whole = p.h.session.history_page(&HistoryQuery {
        limit: 10,
        entity: Some(entity),
        ..HistoryQuery::default()
    });
    assert_eq!(whole.steps.len(), 3);
    assert_eq!(
        whole.last_change.map(|s| s.label),
        Some("move vertices".into()),
        "the undone step is not in force"
    );
}
