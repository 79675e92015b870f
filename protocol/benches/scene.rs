//! Replication costs: snapshot encode (scene → manifest + chunks) and decode (chunks → checked
//! scene) for 10, 1k and 10k entities, building + encoding one tick's delta, and applying
//! entries with and without the server's undo history (what a restart's replay pays).
//! Run: `cargo bench -p meshwork-protocol --bench scene`.
#![allow(
    clippy::unwrap_used,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "benchmark code"
)]

use std::collections::BTreeSet;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use glam::Vec3;
use meshwork_protocol::command::{Primitive, Transform};
use meshwork_protocol::replica::{Replica, snapshot};
use meshwork_protocol::scene::{Scene, Touched};
use meshwork_protocol::wire::ServerMsg;
use meshwork_protocol::{AuthorId, Command, CommandId, EntityId};

const PRIMS: [Primitive; 4] = [
    Primitive::Cube,
    Primitive::Sphere,
    Primitive::Cylinder,
    Primitive::Pyramid,
];

fn scene(n: u32) -> Scene {
    let mut s = Scene::new();
    let author = AuthorId(1);
    for i in 0..n {
        let id = CommandId {
            lamport: u64::from(i) + 1,
            author,
        };
        let entity = EntityId::new(author, i);
        let transform = Transform {
            translation: Vec3::new(i as f32, 0.0, 0.0),
            ..Transform::IDENTITY
        };
        s.apply(
            id,
            author,
            &Command::Spawn {
                entity,
                primitive: PRIMS[i as usize % 4],
                transform,
            },
        );
        if i % 3 == 0 {
            let id = CommandId {
                lamport: u64::from(n + i) + 1,
                author,
            };
            s.apply(
                id,
                author,
                &Command::SetName {
                    entity,
                    name: format!("part {i}"),
                },
            );
        }
    }
    s
}

fn snapshots(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot");
    for n in [10u32, 1_000, 10_000] {
        let s = scene(n);
        g.throughput(Throughput::Elements(u64::from(n)));
        g.bench_function(format!("encode_{n}"), |b| {
            b.iter(|| snapshot(black_box(&s)))
        });
        let (manifest, chunks) = snapshot(&s);
        g.bench_function(format!("decode_{n}"), |b| {
            b.iter_batched(
                Replica::new,
                |mut r| {
                    r.on_message(&ServerMsg::Snapshot(manifest.clone()));
                    for ch in &chunks {
                        r.on_message(&ServerMsg::SnapshotChunk(ch.clone()));
                    }
                    assert!(r.is_synced());
                    r
                },
                BatchSize::LargeInput,
            );
        });
    }
    g.finish();
}

fn deltas(c: &mut Criterion) {
    // A tick of a busy 10k-entity session: 32 clients each moved one entity.
    let mut s = scene(10_000);
    let from = s.position;
    let mut touched = BTreeSet::new();
    for k in 0..32u32 {
        let entity = EntityId::new(AuthorId(1), k * 300);
        let id = CommandId {
            lamport: 1_000_000 + u64::from(k),
            author: AuthorId(1),
        };
        s.apply(
            id,
            AuthorId(1),
            &Command::Translate {
                entity,
                delta: Vec3::X,
            },
        );
        touched.insert(Touched::Entity(entity));
    }
    let mut g = c.benchmark_group("delta");
    g.throughput(Throughput::Elements(32));
    g.bench_function("encode_tick_32_entities", |b| {
        b.iter(|| postcard::to_allocvec(&s.delta(from, black_box(&touched))).unwrap());
    });
    g.finish();
}

/// 10,000 moves by 100 authors of their own cubes, applied in order: a scene without history
/// (replicas) and one that keeps it (the server's two scenes, and its replay at a restart).
fn history_cost(c: &mut Criterion) {
    let authors = 100u32;
    let mut entries = Vec::new();
    for a in 1..=authors {
        entries.push((
            AuthorId(a),
            Command::Spawn {
                entity: EntityId::new(AuthorId(a), 1),
                primitive: Primitive::Cube,
                transform: Transform::IDENTITY,
            },
        ));
    }
    for i in 0..10_000u32 {
        let a = AuthorId(i % authors + 1);
        entries.push((
            a,
            Command::Translate {
                entity: EntityId::new(a, 1),
                delta: Vec3::X,
            },
        ));
    }
    let mut g = c.benchmark_group("apply_10k_moves");
    g.sample_size(10)
        .throughput(Throughput::Elements(entries.len() as u64));
    for (name, tracked) in [("without_history", false), ("with_history", true)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut s = if tracked {
                    Scene::new().with_history()
                } else {
                    Scene::new()
                };
                for (i, (a, cmd)) in entries.iter().enumerate() {
                    let id = CommandId {
                        lamport: i as u64 + 1,
                        author: *a,
                    };
                    s.apply(id, *a, cmd);
                }
                black_box(s.position)
            });
        });
    }
    g.finish();
}

criterion_group!(benches, snapshots, deltas, history_cost);
criterion_main!(benches);
