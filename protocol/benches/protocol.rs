//! Micro-benchmarks of the protocol's hot paths: frame encode/decode, sign, verify, batch verify.
//! Run: `cargo bench -p meshwork-protocol --bench protocol`.
#![allow(
    clippy::unwrap_used,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::panic,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use glam::Vec3;
use meshwork_protocol::sign::SignedItem;
use meshwork_protocol::wire::Submit;
use meshwork_protocol::{
    AuthorId, ClientMsg, Command, Domain, Ed25519Signer, EntityId, EntryBody, KeyRing,
    PROTOCOL_VERSION, Role, SessionId, SignedEntry, Signer, Verifier, decode_frame, encode_frame,
};

const SESSION: SessionId = SessionId([7; 16]);

fn body(s: &Ed25519Signer, seq: u64) -> EntryBody {
    EntryBody {
        domain: Domain::Entry,
        version: PROTOCOL_VERSION,
        session: Some(SESSION),
        author: AuthorId(1),
        key_id: Some(s.public_key().key_id()),
        seq,
        lamport: seq + 1,
        seen_lamport: seq,
        command: Command::Translate {
            entity: EntityId::new(AuthorId(1), 3),
            delta: Vec3::new(0.01, 0.0, -0.02),
        },
    }
}

fn entries(s: &Ed25519Signer, n: u64) -> Vec<SignedEntry> {
    (1..=n)
        .map(|i| SignedEntry::sign(&body(s, i), s).unwrap())
        .collect()
}

fn codec(c: &mut Criterion) {
    let s = Ed25519Signer::from_seed([1; 32]);
    let msg = ClientMsg::Submit(Submit {
        entries: entries(&s, 64),
    });
    let mut frame = Vec::new();
    encode_frame(&msg, &mut frame).unwrap();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(64));
    g.bench_function("encode_submit_64", |b| {
        let mut out = Vec::with_capacity(frame.len());
        b.iter(|| {
            out.clear();
            encode_frame(black_box(&msg), &mut out).unwrap();
        });
    });
    g.bench_function("decode_submit_64", |b| {
        b.iter(|| {
            decode_frame::<ClientMsg>(black_box(&frame))
                .unwrap()
                .unwrap()
        });
    });
    let one = SignedEntry::sign(&body(&s, 1), &s).unwrap();
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_entry_body", |b| {
        b.iter(|| black_box(&one).decode_body().unwrap())
    });
    g.finish();
}

fn signatures(c: &mut Criterion) {
    let s = Ed25519Signer::from_seed([1; 32]);
    let mut ring = KeyRing::new();
    ring.register(AuthorId(1), s.public_key(), Role::Editor)
        .unwrap();
    let b1 = body(&s, 1);
    let mut g = c.benchmark_group("signature");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign_entry", |b| {
        b.iter(|| SignedEntry::sign(black_box(&b1), &s).unwrap())
    });
    let one = SignedEntry::sign(&b1, &s).unwrap();
    g.bench_function("verify_entry", |b| {
        b.iter(|| {
            ring.verify(&black_box(&one).signed_item(&b1, SESSION))
                .unwrap()
        });
    });
    for n in [64u64, 256] {
        let es = entries(&s, n);
        let bodies: Vec<EntryBody> = es.iter().map(|e| e.decode_body().unwrap()).collect();
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("verify_batch_{n}"), |b| {
            b.iter_batched(
                || {
                    es.iter()
                        .zip(&bodies)
                        .map(|(e, b)| e.signed_item(b, SESSION))
                        .collect::<Vec<SignedItem<'_>>>()
                },
                |items| {
                    let r = ring.verify_batch(&items);
                    assert!(r.iter().all(Result::is_ok));
                },
                BatchSize::SmallInput,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, codec, signatures);
criterion_main!(benches);
