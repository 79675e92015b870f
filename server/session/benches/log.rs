//! Integrating signed entries into the authoritative log: one by one, and in batches with one
//! batch signature verification. Run: `cargo bench -p meshwork-session --bench log`.
#![allow(
    clippy::unwrap_used,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::panic,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use glam::Vec3;
use meshwork_protocol::{
    AuthorId, Command, Ed25519Signer, EntityId, EntryBody, KeyRing, Role, SessionId, SignedEntry,
    Signer,
};
use meshwork_session::{CommandLog, Mode};

const SESSION: SessionId = SessionId([7; 16]);
const AUTHORS: u32 = 4;
const ENTRIES: u64 = 4096;

fn signer(a: u32) -> Ed25519Signer {
    let mut seed = [9u8; 32];
    seed[0] = u8::try_from(a).unwrap();
    Ed25519Signer::from_seed(seed)
}

fn keys() -> KeyRing {
    let mut k = KeyRing::new();
    for a in 1..=AUTHORS {
        k.register(AuthorId(a), signer(a).public_key(), Role::Editor)
            .unwrap();
    }
    k
}

/// Authors taking turns, each seeing everything before it: the steady-state server workload
/// (a mix of merged moves and last-write-wins renames over 64 entities).
fn workload() -> Vec<SignedEntry> {
    let signers: Vec<Ed25519Signer> = (1..=AUTHORS).map(signer).collect();
    (0..ENTRIES)
        .map(|i| {
            let a = u32::try_from(i % u64::from(AUTHORS)).unwrap() + 1;
            let s = &signers[usize::try_from(a - 1).unwrap()];
            let entity = EntityId::new(AuthorId(1), u32::try_from(i % 64).unwrap());
            let command = if i % 5 == 0 {
                Command::SetName {
                    entity,
                    name: format!("part {i}"),
                }
            } else {
                Command::Translate {
                    entity,
                    delta: Vec3::new(0.01, 0.0, 0.0),
                }
            };
            let body = EntryBody::new(
                SESSION,
                AuthorId(a),
                s.public_key().key_id(),
                i / u64::from(AUTHORS) + 1,
                i + 1,
                i,
                command,
            );
            SignedEntry::sign(&body, s).unwrap()
        })
        .collect()
}

fn integrate(c: &mut Criterion) {
    let entries = workload();
    let mut g = c.benchmark_group("log_integrate");
    g.throughput(Throughput::Elements(ENTRIES));
    g.sample_size(10);
    g.bench_function("one_by_one", |b| {
        b.iter_batched(
            || {
                (
                    CommandLog::new(Mode::Authority, SESSION, keys()),
                    entries.clone(),
                )
            },
            |(mut log, es)| {
                for e in es {
                    log.integrate(e).unwrap();
                }
                log
            },
            BatchSize::LargeInput,
        );
    });
    for batch in [64usize, 256] {
        g.bench_function(format!("batch_{batch}"), |b| {
            b.iter_batched(
                || {
                    (
                        CommandLog::new(Mode::Authority, SESSION, keys()),
                        entries.clone(),
                    )
                },
                |(mut log, es)| {
                    let mut it = es.into_iter();
                    loop {
                        let chunk: Vec<SignedEntry> = it.by_ref().take(batch).collect();
                        if chunk.is_empty() {
                            break;
                        }
                        for r in log.integrate_batch(chunk) {
                            r.unwrap();
                        }
                    }
                    log
                },
                BatchSize::LargeInput,
            );
        });
    }
    // The driver's share once the connections verified the signatures (`Input::VerifiedSubmit`):
    // every other check, ordering and conflict resolution, one entry at a time.
    g.bench_function("presigned_one_by_one", |b| {
        let signed_by: Vec<_> = (1..=AUTHORS).map(|a| signer(a).public_key()).collect();
        b.iter_batched(
            || {
                (
                    CommandLog::new(Mode::Authority, SESSION, keys()),
                    entries.clone(),
                )
            },
            |(mut log, es)| {
                for e in es {
                    let author = e.decode_body().unwrap().author;
                    let key = &signed_by[usize::try_from(author.0 - 1).unwrap()];
                    for r in log.integrate_batch_presigned(author, vec![e], &mut |_| Ok(()), key) {
                        r.unwrap();
                    }
                }
                log
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

criterion_group!(benches, integrate);
criterion_main!(benches);
