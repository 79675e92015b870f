//! The undo rules of `docs/protocol.md` ("Undo and redo"), each on a scene that keeps a
//! history, and a randomized run of three authors checked against them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "tests"
)]

use alloc::collections::BTreeSet;
use alloc::vec;

use glam::{Vec3, Vec4};

use super::*;
use crate::command::ExtrudeDirection;
use crate::editmesh::{FaceKey, VertexKey};
use crate::scene::Touched;

const A: AuthorId = AuthorId(1);
const B: AuthorId = AuthorId(2);
const C: AuthorId = AuthorId(3);

/// A scene with a history and a Lamport counter.
struct World {
    scene: Scene,
    lamport: u64,
}

impl World {
    fn new() -> Self {
        Self {
            scene: Scene::new().with_history(),
            lamport: 0,
        }
    }

    fn next(&mut self, author: AuthorId) -> CommandId {
        self.lamport += 1;
        CommandId {
            lamport: self.lamport,
            author,
        }
    }

    fn run(&mut self, author: AuthorId, c: Command) -> Result<CommandId, EditError> {
        let id = self.next(author);
        self.scene
            .try_apply(id, author, &c, &Limits::DEFAULT)
            .map(|()| id)
    }

    fn ok(&mut self, author: AuthorId, c: Command) -> CommandId {
        let label = format!("{c:?}");
        self.run(author, c)
            .unwrap_or_else(|e| panic!("{label}: {e}"))
    }

    fn undo(&mut self, author: AuthorId) -> Result<CommandId, EditError> {
        self.run(author, Command::Undo { step: None })
    }

    fn redo(&mut self, author: AuthorId) -> Result<CommandId, EditError> {
        self.run(author, Command::Redo { step: None })
    }

    fn mesh(&self, e: EntityId) -> EditMesh {
        let ent = &self.scene.entities[&e];
        ent.geometry.edit_mesh(ent.spawned_by)
    }

    fn spawn(&mut self, author: AuthorId, n: u32) -> EntityId {
        let entity = EntityId::new(author, n);
        self.ok(
            author,
            Command::Spawn {
                entity,
                primitive: Primitive::Cube,
                transform: Transform::IDENTITY,
            },
        );
        entity
    }

    /// The face whose normal points up most.
    fn top(&self, e: EntityId) -> FaceKey {
        let m = self.mesh(e);
        let up = |c: &Vec<VertexKey>| c.iter().map(|v| m.vertices()[v].y).sum::<f32>();
        *m.faces()
            .iter()
            .max_by(|a, b| up(a.1).total_cmp(&up(b.1)))
            .unwrap()
            .0
    }

    fn extrude_top(&mut self, author: AuthorId, e: EntityId) -> CommandId {
        let face = self.top(e);
        self.ok(
            author,
            Command::ExtrudeFaces {
                entity: e,
                faces: vec![face],
                direction: ExtrudeDirection::Normal { distance_m: 0.5 },
                snap_m: None,
            },
        )
    }

    fn move_vertex(&mut self, author: AuthorId, e: EntityId, v: VertexKey, to: Vec3) -> CommandId {
        self.ok(
            author,
            Command::MoveVertices {
                entity: e,
                moves: vec![(v, to)],
            },
        )
    }
}

fn refusal(r: Result<CommandId, EditError>) -> UndoRefusal {
    match r {
        Err(EditError::Undo(u)) => u,
        other => panic!("expected an undo refusal, got {other:?}"),
    }
}

fn check_all(scene: &Scene) {
    for (id, e) in &scene.entities {
        if let Geometry::Mesh(m) = &e.geometry {
            m.check().unwrap_or_else(|err| panic!("{id}: {err}"));
        }
    }
}

#[test]
fn undo_reverts_only_the_authors_step_and_keeps_an_unrelated_edit() {
    let mut w = World::new();
    let e = w.spawn(A, 1);
    let before = w.mesh(e);
    w.extrude_top(A, e);
    assert_eq!(w.mesh(e).faces().len(), 10);
    // B moves a bottom corner, which the extrude did not touch.
    let bottom = *before.vertices().iter().find(|(_, p)| p.y < 0.0).unwrap().0;
    let to = Vec3::new(-2.0, -2.0, -2.0);
    w.move_vertex(B, e, bottom, to);
    w.undo(A).unwrap();
    let m = w.mesh(e);
    m.check().unwrap();
    assert_eq!(
        m.faces().keys().collect::<Vec<_>>(),
        before.faces().keys().collect::<Vec<_>>()
    );
    assert_eq!(
        m.faces(),
        before.faces(),
        "the extrude is gone, element ids and all"
    );
    assert_eq!(m.vertices()[&bottom], to, "B's move stays");
    for (v, p) in before.vertices() {
        if *v != bottom {
            assert_eq!(m.vertices()[v], *p);
        }
    }
    assert_eq!(m.edges(), before.edges(), "edges get their ids back");
}

#[test]
fn undo_of_a_value_someone_changed_since_is_refused_naming_them() {
    let mut w = World::new();
    let e = w.spawn(A, 1);
    let v = *w.mesh(e).vertices().keys().next().unwrap();
    w.move_vertex(A, e, v, Vec3::splat(1.0));
    w.move_vertex(B, e, v, Vec3::splat(2.0));
    let hash = w.scene.state_hash();
    let r = refusal(w.undo(A));
    assert_eq!(r.reason, UndoReason::Changed);
    assert_eq!(r.by, Some(B));
    assert!(r.message.contains(&format!("{B}")), "{}", r.message);
    assert_eq!(w.scene.state_hash(), hash, "a refused undo changes nothing");
    assert_eq!(w.mesh(e).vertices()[&v], Vec3::splat(2.0));
}

#[test]
fn undo_of_something_another_author_built_on_is_refused_and_their_work_survives() {
    let mut w = World::new();
    let e = w.spawn(A, 1);
    let before = w.mesh(e);
    w.extrude_top(A, e);
    let new_vertex = *w
        .mesh(e)
        .vertices()
        .keys()
        .find(|v| !before.vertices().contains_key(v))
        .unwrap();
    let to = Vec3::new(0.3, 3.0, 0.3);
    w.move_vertex(B, e, new_vertex, to);
    let r = refusal(w.undo(A));
    assert_eq!(r.by, Some(B), "{}", r.message);
    assert_eq!(w.mesh(e).vertices()[&new_vertex], to);
    w.mesh(e).check().unwrap();

    // Built on without touching a value the step changed: B makes a face over a vertex A's
    // step created; undoing would leave B's face without a corner.
    let mut w = World::new();
    let e = w.spawn(A, 1);
    let id = w.ok(
        A,
        Command::VertexCreate {
            entity: e,
            position: Vec3::new(3.0, 0.0, 0.0),
        },
    );
    let _ = id;
    let m = w.mesh(e);
    let lone = *m
        .vertices()
        .keys()
        .find(|v| !before.vertices().contains_key(v))
        .unwrap();
    let b = w.ok(
        B,
        Command::VertexCreate {
            entity: e,
            position: Vec3::new(3.0, 1.0, 0.0),
        },
    );
    let _ = b;
    let m = w.mesh(e);
    let lone_b = *m
        .vertices()
        .keys()
        .find(|v| !before.vertices().contains_key(v) && **v != lone)
        .unwrap();
    let lone_b2 = {
        w.ok(
            B,
            Command::VertexCreate {
                entity: e,
                position: Vec3::new(3.0, 1.0, 1.0),
            },
        );
        let m = w.mesh(e);
        *m.vertices()
            .keys()
            .find(|v| !before.vertices().contains_key(v) && **v != lone && **v != lone_b)
            .unwrap()
    };
    w.ok(
        B,
        Command::CreateFace {
            entity: e,
            vertices: vec![lone, lone_b, lone_b2],
        },
    );
    let faces = w.mesh(e).faces().len();
    // A's last step is the vertex; undoing it would orphan B's face.
    let r = refusal(w.undo(A));
    assert_eq!(r.reason, UndoReason::BuiltOn, "{}", r.message);
    assert_eq!(r.by, Some(B));
    assert_eq!(w.mesh(e).faces().len(), faces);
    w.mesh(e).check().unwrap();
}

#[test]
fn undo_then_redo_n_times_restores_ids_and_values_exactly() {
    let mut w = World::new();
    let e = w.spawn(A, 1);
    let mine = w.spawn(B, 1);
    w.extrude_top(A, e);
    w.ok(
        B,
        Command::Translate {
            entity: mine,
            delta: Vec3::X,
        },
    );
    let top = w.top(e);
    w.ok(
        A,
        Command::SubdivideFaces {
            entity: e,
            faces: vec![top],
            cuts: 2,
        },
    );
    w.ok(
        A,
        Command::SetColor {
            entity: e,
            rgba: Vec4::new(1.0, 0.0, 0.0, 1.0),
        },
    );
    w.ok(
        A,
        Command::Smooth {
            entity: e,
            faces: vec![],
            levels: 1,
        },
    );
    w.ok(
        A,
        Command::Translate {
            entity: e,
            delta: Vec3::Y,
        },
    );
    let a_before = w.scene.entities[&e].clone();
    let start = w.scene.entities[&e].clone();
    let steps = 6; // spawn, extrude, subdivide, color, smooth, translate
    let mut states = vec![start];
    for i in 0..steps {
        w.undo(A).unwrap();
        // B edits its own entity between A's undos.
        w.ok(
            B,
            Command::Translate {
                entity: mine,
                delta: Vec3::Z * (i as f32 + 1.0),
            },
        );
        check_all(&w.scene);
        states.push(w.scene.entities.get(&e).cloned().unwrap_or_else(|| {
            // The spawn's undo removes the entity.
            Entity {
                name: Lww {
                    value: "<absent>".into(),
                    by: CommandId::default(),
                },
                ..a_before.clone()
            }
        }));
    }
    assert!(
        !w.scene.entities.contains_key(&e),
        "undoing the spawn removes it"
    );
    assert_eq!(refusal(w.undo(A)).reason, UndoReason::NothingToUndo);
    for i in (0..steps).rev() {
        w.redo(A).unwrap();
        check_all(&w.scene);
        assert_eq!(w.scene.entities[&e], states[i], "after redo {}", steps - i);
    }
    assert_eq!(w.scene.entities[&e], a_before);
    assert_eq!(
        w.scene.entities[&mine].transform.translation,
        Vec3::new(1.0, 0.0, 21.0),
        "B's edits all stand"
    );
    assert_eq!(refusal(w.redo(A)).reason, UndoReason::NothingToRedo);
}

#[test]
fn the_whole_state_hash_comes_back_after_undo_and_redo() {
    let mut w = World::new();
    let e = w.spawn(A, 1);
    w.extrude_top(A, e);
    let v = *w.mesh(e).vertices().keys().next().unwrap();
    w.move_vertex(A, e, v, Vec3::splat(0.7));
    let hash = w.scene.state_hash();
    let positions = (w.scene.position, w.scene.lamport);
    for _ in 0..3 {
        w.undo(A).unwrap();
    }
    for _ in 0..3 {
        w.redo(A).unwrap();
    }
    let mut back = w.scene.clone();
    (back.position, back.lamport) = positions;
    assert_eq!(back.state_hash(), hash);
}

#[test]
fn a_sixty_entry_drag_is_one_step() {
    let mut w = World::new();
    let e = w.spawn(A, 1);
    let start = w.mesh(e);
    let v = *start.vertices().keys().next().unwrap();
    w.ok(
        A,
        Command::Step {
            entries: 60,
            label: "Drag vertex".into(),
        },
    );
    for i in 0..60 {
        w.move_vertex(A, e, v, Vec3::splat(0.5 + i as f32 * 0.01));
    }
    let h = w.scene.history().unwrap();
    let drag = h.steps().last().unwrap();
    assert_eq!(drag.entries.len(), 60);
    assert_eq!(drag.label, "Drag vertex");
    w.undo(A).unwrap();
    assert_eq!(w.mesh(e), start, "one undo takes back the whole drag");
    // The next undo is the spawn, not a 59th move.
    w.undo(A).unwrap();
    assert!(w.scene.entities.is_empty());
}

#[test]
fn delete_and_undo_bring_back_the_same_ids() {
    let mut w = World::new();
    let e = w.spawn(A, 1);
    w.extrude_top(A, e);
    let whole = w.scene.entities[&e].clone();
    w.ok(A, Command::Despawn { entity: e });
    assert!(w.scene.entities.is_empty());
    w.undo(A).unwrap();
    assert_eq!(w.scene.entities[&e], whole);

    let m = w.mesh(e);
    let face = *m.faces().keys().next().unwrap();
    let vertex = *m.vertices().keys().last().unwrap();
    w.ok(
        A,
        Command::DeleteElements {
            entity: e,
            vertices: vec![vertex],
            edges: vec![],
            faces: vec![face],
        },
    );
    assert_ne!(w.mesh(e), m);
    w.undo(A).unwrap();
    assert_eq!(w.mesh(e), m);
    assert_eq!(w.mesh(e).edges(), m.edges());
}

#[test]
fn a_new_edit_clears_only_its_authors_redo() {
    let mut w = World::new();
    let a = w.spawn(A, 1);
    let b = w.spawn(B, 1);
    w.ok(
        A,
        Command::Translate {
            entity: a,
            delta: Vec3::X,
        },
    );
    w.ok(
        B,
        Command::Translate {
            entity: b,
            delta: Vec3::X,
        },
    );
    w.undo(A).unwrap();
    w.undo(B).unwrap();
    // B's new edit clears B's redo, not A's.
    w.ok(
        B,
        Command::SetName {
            entity: b,
            name: "mine".into(),
        },
    );
    assert_eq!(refusal(w.redo(B)).reason, UndoReason::NothingToRedo);
    w.redo(A).unwrap();
    assert_eq!(w.scene.entities[&a].transform.translation, Vec3::X);
}

#[test]
fn redo_is_refused_when_someone_changed_the_undone_values() {
    let mut w = World::new();
    let e = w.spawn(A, 1);
    w.ok(
        A,
        Command::SetName {
            entity: e,
            name: "a".into(),
        },
    );
    w.undo(A).unwrap();
    w.ok(
        B,
        Command::SetName {
            entity: e,
            name: "b".into(),
        },
    );
    let r = refusal(w.redo(A));
    assert_eq!(r.by, Some(B));
    assert_eq!(w.scene.entities[&e].name.value, "b");
}

#[test]
fn undo_names_only_the_authors_own_steps() {
    let mut w = World::new();
    let e = w.spawn(A, 1);
    let step = w.scene.history().unwrap().steps().next().unwrap().id;
    // B cannot undo A's spawn by naming it (the payload guard refuses it before the scene).
    assert_eq!(
        Command::Undo { step: Some(step) }.validate(B),
        Err(crate::command::PayloadError::ForeignStep)
    );
    assert_eq!(refusal(w.undo(B)).reason, UndoReason::NothingToUndo);
    assert!(w.scene.entities.contains_key(&e));
    // Undo by name: the named step, even when it is not the latest.
    w.ok(
        A,
        Command::SetName {
            entity: e,
            name: "x".into(),
        },
    );
    let r = refusal(w.run(A, Command::Undo { step: Some(step) }));
    assert_eq!(
        r.reason,
        UndoReason::Changed,
        "the rename built on the spawn: {}",
        r.message
    );
    assert!(r.message.contains("your step"), "{}", r.message);
}

#[test]
fn replicas_without_history_follow_by_delta() {
    let mut w = World::new();
    let mut replica = Scene::new();
    let e = EntityId::new(A, 1);
    let script: Vec<(AuthorId, Command)> = vec![
        (
            A,
            Command::Spawn {
                entity: e,
                primitive: Primitive::Cube,
                transform: Transform::IDENTITY,
            },
        ),
        (
            A,
            Command::Translate {
                entity: e,
                delta: Vec3::X,
            },
        ),
        (A, Command::Undo { step: None }),
        (A, Command::Redo { step: None }),
        (A, Command::Undo { step: None }),
    ];
    for (author, c) in script {
        let from = w.scene.position;
        let id = w.ok(author, c.clone());
        if matches!(c, Command::Undo { .. } | Command::Redo { .. }) {
            let touched: BTreeSet<Touched> =
                w.scene.changed_by(author, id, &c).into_iter().collect();
            replica.apply_delta(&w.scene.delta(from, &touched)).unwrap();
        } else {
            replica.apply(id, author, &c);
        }
        assert_eq!(replica.encode(), w.scene.encode());
    }
}

use crate::editmesh::tests::Lcg;

/// A coordinate in −2..2 m, in steps of 2 mm.
fn coordinate(rng: &mut Lcg) -> f32 {
    (rng.below(2001) as f32 - 1000.0) / 500.0
}

fn random_command(w: &World, rng: &mut Lcg, author: AuthorId, counter: &mut u32) -> Command {
    let entities: Vec<EntityId> = w.scene.entities.keys().copied().collect();
    let Some(e) = rng.pick(&entities).filter(|_| rng.below(8) != 0) else {
        *counter += 1;
        return Command::Spawn {
            entity: EntityId::new(author, *counter),
            primitive: [Primitive::Cube, Primitive::Pyramid, Primitive::Plane][rng.below(3)],
            transform: Transform::IDENTITY,
        };
    };
    let m = w.mesh(e);
    let verts: Vec<VertexKey> = m.vertices().keys().copied().collect();
    let faces: Vec<FaceKey> = m.faces().keys().copied().collect();
    match rng.below(12) {
        0 => Command::Undo { step: None },
        1 => Command::Redo { step: None },
        2 => Command::Translate {
            entity: e,
            delta: Vec3::new(coordinate(rng), coordinate(rng), coordinate(rng)),
        },
        3 => Command::SetName {
            entity: e,
            name: format!("n{}", rng.below(100)),
        },
        4 | 5 => {
            let mut moves = BTreeMap::new();
            for _ in 0..1 + rng.below(3) {
                if let Some(v) = rng.pick(&verts) {
                    moves.insert(
                        v,
                        Vec3::new(coordinate(rng), coordinate(rng), coordinate(rng)),
                    );
                }
            }
            Command::MoveVertices {
                entity: e,
                moves: moves.into_iter().collect(),
            }
        }
        6 => Command::ExtrudeFaces {
            entity: e,
            faces: rng.pick(&faces).into_iter().collect(),
            direction: ExtrudeDirection::Normal { distance_m: 0.3 },
            snap_m: None,
        },
        7 => Command::SubdivideFaces {
            entity: e,
            faces: rng.pick(&faces).into_iter().collect(),
            cuts: 1,
        },
        8 => Command::DeleteElements {
            entity: e,
            vertices: vec![],
            edges: vec![],
            faces: rng.pick(&faces).into_iter().collect(),
        },
        9 => Command::VertexCreate {
            entity: e,
            position: Vec3::new(coordinate(rng), coordinate(rng), coordinate(rng)),
        },
        10 => Command::Despawn { entity: e },
        _ => Command::Undo { step: None },
    }
}

/// Every vertex position of every entity, keyed by (entity, vertex).
fn positions(scene: &Scene) -> BTreeMap<(EntityId, VertexKey), Vec3> {
    let mut out = BTreeMap::new();
    for (id, e) in &scene.entities {
        for (v, p) in e.geometry.edit_mesh(e.spawned_by).vertices() {
            out.insert((*id, *v), *p);
        }
    }
    out
}

#[test]
fn three_authors_undoing_at_random_never_break_a_mesh_or_overwrite_another() {
    for seed in 0..12u64 {
        let mut rng = Lcg(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut w = World::new();
        let mut replica = Scene::new();
        let mut counters = BTreeMap::new();
        // Who last changed each vertex (made, moved, removed it, or undid or redid a change).
        let mut writer: BTreeMap<(EntityId, VertexKey), AuthorId> = BTreeMap::new();
        let (mut undos, mut refused) = (0, 0);
        for _ in 0..160 {
            let author = [A, B, C][rng.below(3)];
            let counter = counters.entry(author).or_insert(0u32);
            let command = random_command(&w, &mut rng, author, counter);
            let before = positions(&w.scene);
            let from = w.scene.position;
            let Ok(id) = w.run(author, command.clone()) else {
                if matches!(command, Command::Undo { .. } | Command::Redo { .. }) {
                    refused += 1;
                }
                continue;
            };
            check_all(&w.scene);
            let after = positions(&w.scene);
            let changed: Vec<(EntityId, VertexKey)> = before
                .iter()
                .filter(|(k, p)| after.get(k) != Some(p))
                .map(|(k, _)| *k)
                .chain(after.keys().filter(|k| !before.contains_key(k)).copied())
                .collect();
            let reverting = matches!(command, Command::Undo { .. } | Command::Redo { .. });
            for k in changed {
                if reverting && let Some(last) = writer.get(&k) {
                    assert_eq!(
                        *last, author,
                        "seed {seed}: {author}'s undo changed {k:?}, last written by {last}"
                    );
                }
                writer.insert(k, author);
            }
            if reverting {
                undos += 1;
                let touched: BTreeSet<Touched> = w
                    .scene
                    .changed_by(author, id, &command)
                    .into_iter()
                    .collect();
                replica.apply_delta(&w.scene.delta(from, &touched)).unwrap();
            } else {
                replica.apply(id, author, &command);
            }
            assert_eq!(
                replica.encode(),
                w.scene.encode(),
                "seed {seed}: the replica diverged"
            );
            // The kept triangle totals (what size checks read) are the counted ones.
            let counted = w.scene.triangle_count();
            assert_eq!(w.scene.total_triangles(), counted, "seed {seed}");
            assert_eq!(replica.total_triangles(), counted, "seed {seed}");
        }
        assert!(undos > 5, "seed {seed}: only {undos} undos went through");
        let _ = refused;
    }
}

#[test]
fn every_scene_changing_command_undoes_and_redoes_exactly() {
    use crate::command::Material;
    use crate::editmesh::Axis;
    // A mesh with a border (a plane, extruded) and a closed one (a cube), both edited.
    let base = || {
        let mut w = World::new();
        let e = w.spawn(A, 1);
        w.extrude_top(A, e);
        let plane = EntityId::new(A, 2);
        w.ok(
            A,
            Command::Spawn {
                entity: plane,
                primitive: Primitive::Plane,
                transform: Transform::IDENTITY,
            },
        );
        w.scene.provide_asset(
            crate::command::AssetId([3; 32]),
            alloc::sync::Arc::new(crate::asset::ImportAsset::sample()),
        );
        (w, e, plane)
    };
    let (probe, e, plane) = base();
    let m = probe.mesh(e);
    let verts: Vec<VertexKey> = m.vertices().keys().copied().collect();
    let faces: Vec<FaceKey> = m.faces().keys().copied().collect();
    let (a, b) = *m.edges().keys().next().unwrap();
    let pm = probe.mesh(plane);
    let border = *pm.edges().values().next().unwrap();
    let pv: Vec<VertexKey> = pm.vertices().keys().copied().collect();
    let lone = EntityId::new(A, 3);
    let commands = vec![
        Command::Despawn { entity: e },
        Command::Translate {
            entity: e,
            delta: Vec3::X,
        },
        Command::Rotate {
            entity: e,
            delta: glam::Quat::from_rotation_y(0.4),
        },
        Command::Scale {
            entity: e,
            factor: Vec3::splat(1.5),
        },
        Command::SetName {
            entity: e,
            name: "n".into(),
        },
        Command::SetColor {
            entity: e,
            rgba: Vec4::new(0.1, 0.2, 0.3, 1.0),
        },
        Command::SetMaterial {
            entity: e,
            material: Material {
                metallic: 1.0,
                roughness: 0.2,
            },
        },
        Command::SetTransform {
            entity: e,
            transform: Transform {
                translation: Vec3::new(1.0, 2.0, 3.0),
                ..Transform::IDENTITY
            },
        },
        Command::VertexCreate {
            entity: e,
            position: Vec3::splat(3.0),
        },
        Command::MoveVertices {
            entity: e,
            moves: vec![(verts[0], Vec3::splat(2.0)), (verts[3], Vec3::ZERO)],
        },
        Command::CreateFace {
            entity: plane,
            vertices: vec![pv[2], pv[1], pv[0]],
        },
        Command::DeleteElements {
            entity: e,
            vertices: vec![verts[1]],
            edges: vec![],
            faces: vec![faces[2]],
        },
        Command::ExtrudeFaces {
            entity: e,
            faces: faces[..2].to_vec(),
            direction: ExtrudeDirection::Vector {
                offset: Vec3::new(0.0, 0.0, 0.3),
            },
            snap_m: None,
        },
        Command::ExtrudeEdges {
            entity: plane,
            edges: vec![border],
            offset: Vec3::Y,
            snap_m: None,
        },
        Command::SubdivideFaces {
            entity: e,
            faces: faces[..3].to_vec(),
            cuts: 2,
        },
        Command::Smooth {
            entity: e,
            faces: vec![],
            levels: 2,
        },
        Command::Smooth {
            entity: e,
            faces: faces[..2].to_vec(),
            levels: 1,
        },
        Command::Weld {
            entity: e,
            groups: vec![vec![a, b]],
            at_center: true,
        },
        Command::Duplicate {
            entity: e,
            copy: lone,
            offset: Vec3::X,
        },
        Command::Mirror {
            entity: plane,
            axis: Axis::X,
            weld: true,
        },
        Command::Spawn {
            entity: lone,
            primitive: Primitive::Sphere,
            transform: Transform::IDENTITY,
        },
        Command::Import {
            asset: crate::command::AssetId([3; 32]),
            first: EntityId::new(A, 20),
            count: 2,
        },
    ];
    let mut kinds = BTreeSet::new();
    for c in commands {
        let (mut w, _, _) = base();
        let before = w.scene.encode();
        let label = format!("{c:?}");
        let label = &label[..label.len().min(60)];
        w.ok(A, c.clone());
        let after = w.scene.clone();
        assert_ne!(after.encode(), before, "{label} changed nothing");
        w.undo(A).unwrap_or_else(|e| panic!("{label}: undo: {e}"));
        check_all(&w.scene);
        let mut undone = w.scene.clone();
        (undone.position, undone.lamport) = (after.position - 1, after.lamport - 1);
        assert_eq!(
            undone.encode(),
            before,
            "{label}: undo gives back the bytes"
        );
        w.redo(A).unwrap_or_else(|e| panic!("{label}: redo: {e}"));
        check_all(&w.scene);
        let mut redone = w.scene.clone();
        (redone.position, redone.lamport) = (after.position, after.lamport);
        assert_eq!(redone, after, "{label}: redo gives back the result");
        assert_eq!(redone.encode(), after.encode());
        kinds.insert(c.kind());
    }
    let every: BTreeSet<CommandKind> = CommandKind::ALL
        .into_iter()
        .filter(|k| Scene::undoable(*k))
        .collect();
    assert_eq!(kinds, every, "every undoable kind is covered");
}

#[test]
fn an_author_can_undo_at_least_a_hundred_steps() {
    let mut w = World::new();
    let e = w.spawn(A, 1);
    for i in 0..(MAX_STEPS_PER_AUTHOR + 20) {
        w.ok(
            A,
            Command::Translate {
                entity: e,
                delta: Vec3::X * (i as f32 + 1.0),
            },
        );
    }
    let kept = w.scene.history().unwrap().steps().count();
    assert_eq!(kept, MAX_STEPS_PER_AUTHOR, "the oldest go past the bound");
    for i in 0..MAX_STEPS_PER_AUTHOR {
        w.undo(A)
            .unwrap_or_else(|err| panic!("undo {}: {err}", i + 1));
    }
    const { assert!(MAX_STEPS_PER_AUTHOR >= 100) };
    assert_eq!(refusal(w.undo(A)).reason, UndoReason::NothingToUndo);
    // What is left: the spawn and the 20 moves that fell out of the history.
    let x: f32 = (1..=20).map(|i| i as f32).sum();
    assert_eq!(w.scene.entities[&e].transform.translation, Vec3::X * x);
}

#[test]
fn a_gesture_of_several_edits_is_one_step_and_selections_do_not_count() {
    let e = EntityId::new(A, 1);
    let moved = vec![
        Command::Translate {
            entity: e,
            delta: Vec3::X,
        },
        Command::Rotate {
            entity: e,
            delta: glam::Quat::from_rotation_y(0.3),
        },
        Command::Select { entities: vec![e] },
    ];
    let step = one_step(moved.clone(), "Move");
    assert_eq!(
        step[0],
        Command::Step {
            entries: 2,
            label: "Move".into()
        }
    );
    assert_eq!(&step[1..], &moved[..]);
    let single = vec![
        Command::Despawn { entity: e },
        Command::Select { entities: vec![] },
    ];
    assert_eq!(
        one_step(single.clone(), "Delete"),
        single,
        "one edit needs no step"
    );
    // Every step this makes passes the value guards (label length, entry count).
    assert_eq!(one_step(moved, &"x".repeat(500))[0].validate(A), Ok(()));
}

#[test]
fn a_step_that_changed_nothing_is_not_undone() {
    let mut w = World::new();
    w.ok(
        A,
        Command::Step {
            entries: 1,
            label: "Nudge".into(),
        },
    );
    w.ok(
        A,
        Command::Translate {
            entity: EntityId::new(A, 9),
            delta: Vec3::X,
        },
    );
    // An undo would be accepted and change nothing: refused instead.
    assert_eq!(refusal(w.undo(A)).reason, UndoReason::NothingToUndo);
}

#[test]
fn an_import_inside_a_step_stays_one_step_with_the_rest() {
    let mut w = World::new();
    let asset = crate::command::AssetId([3; 32]);
    w.scene.provide_asset(
        asset,
        alloc::sync::Arc::new(crate::asset::ImportAsset::sample()),
    );
    let first = EntityId::new(A, 20);
    w.ok(
        A,
        Command::Step {
            entries: 2,
            label: "Import and move".into(),
        },
    );
    w.ok(
        A,
        Command::Import {
            asset,
            first,
            count: 2,
        },
    );
    w.ok(
        A,
        Command::Translate {
            entity: first,
            delta: Vec3::X,
        },
    );
    w.undo(A).unwrap();
    assert!(
        w.scene.entities.is_empty(),
        "the import and the move undo together"
    );
}
