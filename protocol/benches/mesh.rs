//! Mesh editing on the server's path: each operation applied and checked by `Scene::try_apply`
//! (what the authority runs for every accepted edit, twice: on its accepted scene and its
//! scene) on subdivided cubes of about 1k, 10k and 100k faces; Catmull–Clark of a whole 10k-face
//! mesh; encode/decode of an edited 100k-triangle mesh. Sizes in bytes (snapshot, a signed
//! 100-vertex move) are printed before the timings.
//! Run: `cargo bench -p meshwork-protocol --bench mesh`.
#![allow(
    clippy::unwrap_used,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::print_stderr,
    reason = "benchmark code"
)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use glam::Vec3;
use meshwork_protocol::command::ExtrudeDirection;
use meshwork_protocol::editmesh::{Axis, EditMesh, FaceKey, VertexKey};
use meshwork_protocol::scene::{Geometry, Limits, Scene};
use meshwork_protocol::{
    AuthorId, Command, CommandId, Domain, Ed25519Signer, EntityId, EntryBody, PROTOCOL_VERSION,
    Primitive, SessionId, SignedEntry, Signer, Transform,
};

const AUTHOR: AuthorId = AuthorId(1);

/// `cargo test --benches` (CI) runs every benchmark once in a debug build: the 100k sizes only
/// when really benchmarking.
fn sizes() -> Vec<(&'static str, u8)> {
    let mut s = vec![("1k", 12u8), ("10k", 40)];
    if std::env::args().any(|a| a == "--bench") {
        s.push(("100k", 128));
    }
    s
}
const ENTITY: EntityId = EntityId::new(AUTHOR, 1);

fn at(lamport: u64) -> CommandId {
    CommandId {
        lamport,
        author: AUTHOR,
    }
}

/// A cube whose six faces are cut into `(cuts + 1)²` quads each.
fn grid_cube(cuts: u8) -> Scene {
    grid_cube_in(Scene::new(), cuts)
}

/// [`grid_cube`] built in `s` (a scene that keeps the undo history, for the undo benches).
fn grid_cube_in(mut s: Scene, cuts: u8) -> Scene {
    s.apply(
        at(1),
        AUTHOR,
        &Command::Spawn {
            entity: ENTITY,
            primitive: Primitive::Cube,
            transform: Transform::IDENTITY,
        },
    );
    let faces: Vec<FaceKey> = mesh(&s).faces().keys().copied().collect();
    s.try_apply(
        at(2),
        AUTHOR,
        &Command::SubdivideFaces {
            entity: ENTITY,
            faces,
            cuts,
        },
        &Limits::NONE,
    )
    .unwrap();
    s
}

fn mesh(s: &Scene) -> EditMesh {
    let e = &s.entities[&ENTITY];
    e.geometry.edit_mesh(e.spawned_by)
}

fn first_faces(s: &Scene, n: usize) -> Vec<FaceKey> {
    let m = match &s.entities[&ENTITY].geometry {
        Geometry::Mesh(m) => m,
        Geometry::Primitive(_) => unreachable!("the bench meshes are edited"),
    };
    // Subdivision output is row-major per original face: the first faces form a patch.
    m.faces().keys().skip(6).take(n).copied().collect()
}

fn move_100(s: &Scene, lamport: u64) -> Command {
    let Geometry::Mesh(m) = &s.entities[&ENTITY].geometry else {
        unreachable!()
    };
    let moves: Vec<(VertexKey, Vec3)> = m
        .vertices()
        .iter()
        .skip(50)
        .take(100)
        .map(|(v, p)| (*v, *p + Vec3::splat(lamport as f32 * 1.0e-4)))
        .collect();
    Command::MoveVertices {
        entity: ENTITY,
        moves,
    }
}

/// The operations, each as the command a client would send.
fn commands(s: &Scene) -> Vec<(&'static str, Command)> {
    let patch = first_faces(s, 100);
    let Geometry::Mesh(m) = &s.entities[&ENTITY].geometry else {
        unreachable!()
    };
    let (a, b) = *m.edges().keys().nth(m.edges().len() / 2).unwrap();
    vec![
        ("move_100_vertices", move_100(s, 10)),
        (
            "extrude_100_faces",
            Command::ExtrudeFaces {
                entity: ENTITY,
                faces: patch.clone(),
                direction: ExtrudeDirection::Normal { distance_m: 0.2 },
                snap_m: None,
            },
        ),
        (
            "subdivide_100_faces",
            Command::SubdivideFaces {
                entity: ENTITY,
                faces: patch.clone(),
                cuts: 1,
            },
        ),
        (
            "smooth_100_faces_level_1",
            Command::Smooth {
                entity: ENTITY,
                faces: patch.clone(),
                levels: 1,
            },
        ),
        (
            "delete_100_faces",
            Command::DeleteElements {
                entity: ENTITY,
                vertices: vec![],
                edges: vec![],
                faces: patch,
            },
        ),
        (
            "weld_one_edge",
            Command::Weld {
                entity: ENTITY,
                groups: vec![vec![a, b]],
                at_center: true,
            },
        ),
        (
            "set_transform",
            Command::SetTransform {
                entity: ENTITY,
                transform: Transform::IDENTITY,
            },
        ),
    ]
}

fn apply(s: &mut Scene, lamport: u64, c: &Command, limits: &Limits) {
    s.try_apply(at(lamport), AUTHOR, c, limits).unwrap();
}

fn ops(c: &mut Criterion) {
    for (label, cuts) in sizes() {
        let base = grid_cube(cuts);
        let faces = mesh(&base).faces().len();
        let mut g = c.benchmark_group(format!("mesh_ops_{label}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        eprintln!("mesh_ops_{label}: {faces} faces");
        for (name, cmd) in commands(&base) {
            g.bench_function(name, |b| {
                b.iter_batched(
                    || base.clone(),
                    |mut s| {
                        apply(&mut s, 10, &cmd, &Limits::DEFAULT);
                        s
                    },
                    BatchSize::LargeInput,
                );
            });
        }
        // The typical edit of the issue: a drag's move of 100 vertices, then an extrude of 100
        // faces, each applied and checked.
        let extrude = commands(&base).swap_remove(1).1;
        let moved = move_100(&base, 10);
        g.bench_function("move_100_then_extrude_100", |b| {
            b.iter_batched(
                || base.clone(),
                |mut s| {
                    apply(&mut s, 10, &moved, &Limits::DEFAULT);
                    apply(&mut s, 11, &extrude, &Limits::DEFAULT);
                    s
                },
                BatchSize::LargeInput,
            );
        });
        // A hole to work on: one face deleted; then filling it and extruding its rim.
        let mut holed = base.clone();
        let hole = first_faces(&base, 1);
        let corners = mesh(&base).faces()[&hole[0]].clone();
        apply(
            &mut holed,
            5,
            &Command::DeleteElements {
                entity: ENTITY,
                vertices: vec![],
                edges: vec![],
                faces: hole,
            },
            &Limits::DEFAULT,
        );
        let rim: Vec<_> = {
            let m = mesh(&holed);
            (0..corners.len())
                .map(|i| {
                    let (p, q) = (corners[i], corners[(i + 1) % corners.len()]);
                    m.edges()[&if p < q { (p, q) } else { (q, p) }]
                })
                .collect()
        };
        for (name, cmd) in [
            (
                "create_face",
                Command::CreateFace {
                    entity: ENTITY,
                    vertices: corners,
                },
            ),
            (
                "extrude_4_border_edges",
                Command::ExtrudeEdges {
                    entity: ENTITY,
                    edges: rim,
                    offset: Vec3::new(0.0, 0.0, 0.1),
                    snap_m: None,
                },
            ),
        ] {
            g.bench_function(name, |b| {
                b.iter_batched(
                    || holed.clone(),
                    |mut s| {
                        apply(&mut s, 10, &cmd, &Limits::DEFAULT);
                        s
                    },
                    BatchSize::LargeInput,
                );
            });
        }
        g.finish();
    }
}

/// Whole-mesh operations on the 10k-face mesh (their cost is the mesh's size by nature).
fn whole(c: &mut Criterion) {
    let mut g = c.benchmark_group("mesh_whole_10k");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));
    let base = grid_cube(40);
    for (name, cmd, limits) in [
        (
            "catmull_clark_level_1",
            Command::Smooth {
                entity: ENTITY,
                faces: vec![],
                levels: 1,
            },
            Limits::DEFAULT,
        ),
        // Level 2 makes 161k quads (323k triangles): over the default per-mesh limit, which
        // refuses it before any work; measured without limits.
        (
            "catmull_clark_level_2",
            Command::Smooth {
                entity: ENTITY,
                faces: vec![],
                levels: 2,
            },
            Limits::NONE,
        ),
        (
            "mirror_x_weld",
            Command::Mirror {
                entity: ENTITY,
                axis: Axis::X,
                weld: true,
            },
            Limits::DEFAULT,
        ),
        (
            "duplicate",
            Command::Duplicate {
                entity: ENTITY,
                copy: EntityId::new(AUTHOR, 2),
                offset: Vec3::X,
            },
            Limits::DEFAULT,
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || base.clone(),
                |mut s| {
                    apply(&mut s, 10, &cmd, &limits);
                    s
                },
                BatchSize::LargeInput,
            );
        });
    }
    g.finish();
    // Catmull–Clark level 1 at three sizes: the scaling.
    let mut g = c.benchmark_group("catmull_clark_level_1");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));
    for (label, cuts) in sizes() {
        let base = grid_cube(cuts);
        let cmd = Command::Smooth {
            entity: ENTITY,
            faces: vec![],
            levels: 1,
        };
        g.bench_with_input(BenchmarkId::from_parameter(label), &base, |b, base| {
            b.iter_batched(
                || base.clone(),
                |mut s| {
                    apply(&mut s, 10, &cmd, &Limits::NONE);
                    s
                },
                BatchSize::LargeInput,
            );
        });
    }
    g.finish();
}

/// An edited mesh of about 100k triangles: a 49,686-quad cube with a move, an extrude and a
/// smoothed patch (so ids come from several commands, as after real editing).
fn edited_100k() -> Scene {
    let full = std::env::args().any(|a| a == "--bench");
    let mut s = grid_cube(if full { 90 } else { 20 });
    let patch = first_faces(&s, 100);
    let moved = move_100(&s, 10);
    apply(&mut s, 10, &moved, &Limits::DEFAULT);
    let extrude = Command::ExtrudeFaces {
        entity: ENTITY,
        faces: patch,
        direction: ExtrudeDirection::Normal { distance_m: 0.1 },
        snap_m: None,
    };
    apply(&mut s, 11, &extrude, &Limits::DEFAULT);
    let smooth = Command::Smooth {
        entity: ENTITY,
        faces: first_faces(&s, 400),
        levels: 1,
    };
    apply(&mut s, 12, &smooth, &Limits::DEFAULT);
    s
}

fn bytes(c: &mut Criterion) {
    let s = edited_100k();
    let tris = s.entities[&ENTITY].geometry.triangle_count();
    let encoded = s.encode();
    eprintln!(
        "snapshot of an edited mesh: {tris} triangles, {} faces, {} bytes ({:.1} bytes/triangle)",
        mesh(&s).faces().len(),
        encoded.len(),
        encoded.len() as f64 / tris as f64
    );
    let signer = Ed25519Signer::from_seed([1; 32]);
    let grid = grid_cube(40);
    let body = EntryBody {
        domain: Domain::Entry,
        version: PROTOCOL_VERSION,
        session: Some(SessionId([7; 16])),
        author: AUTHOR,
        key_id: Some(signer.public_key().key_id()),
        seq: 1000,
        lamport: 5000,
        seen_lamport: 4999,
        command: move_100(&grid, 10),
    };
    let entry = SignedEntry::sign(&body, &signer).unwrap();
    let wire = postcard::to_allocvec(&entry).unwrap();
    eprintln!(
        "signed 100-vertex move: {} bytes on the wire ({} body + 64 signature + framing)",
        wire.len(),
        entry.body.len()
    );
    let mut g = c.benchmark_group("mesh_snapshot_100k_triangles");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("encode", |b| b.iter(|| black_box(&s).encode()));
    g.bench_function("decode_and_check", |b| {
        b.iter(|| Scene::decode(black_box(&encoded)).unwrap());
    });
    g.finish();
}

/// Undo on the server's path (`Scene::try_apply` of `Command::Undo` on a scene that keeps the
/// history): of a 100-face extrude on the 10k-face mesh, and of a 100-vertex move; and what
/// keeping the history adds to the edits themselves (the same commands, recorded).
fn undo(c: &mut Criterion) {
    let plain = grid_cube(40);
    // Built as the server builds it: a scene that keeps the history from its first entry.
    let tracked = grid_cube_in(Scene::new().with_history(), 40);
    assert_eq!(tracked.state_hash(), plain.state_hash());
    let faces = mesh(&tracked).faces().len();
    let mut g = c.benchmark_group("undo_10k");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    eprintln!("undo_10k: {faces} faces");
    let all = commands(&plain);
    let extrude = all[1].1.clone();
    let moved = all[0].1.clone();
    for (name, cmd) in [
        ("extrude_100_faces", &extrude),
        ("move_100_vertices", &moved),
    ] {
        let mut done = tracked.clone();
        apply(&mut done, 10, cmd, &Limits::DEFAULT);
        g.bench_function(format!("undo_{name}"), |b| {
            b.iter_batched(
                || done.clone(),
                |mut s| {
                    apply(&mut s, 11, &Command::Undo { step: None }, &Limits::DEFAULT);
                    s
                },
                BatchSize::LargeInput,
            );
        });
        g.bench_function(format!("{name}_recorded"), |b| {
            b.iter_batched(
                || tracked.clone(),
                |mut s| {
                    apply(&mut s, 10, cmd, &Limits::DEFAULT);
                    s
                },
                BatchSize::LargeInput,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, bytes, ops, whole, undo);
criterion_main!(benches);
