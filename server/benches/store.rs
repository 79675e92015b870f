//! Group-commit appends into each store backend: entries/s with a durable commit per batch, and
//! space amplification (bytes on disk / bytes of records written).
//!
//! Run: `cargo bench -p meshwork-server --bench store` (prints a table). Under `cargo test
//! --benches` it runs a tiny size once, to prove it still works.
#![allow(
    clippy::unwrap_used,
    clippy::arithmetic_side_effects,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "benchmark arithmetic on small counts"
)]

use std::time::Instant;

use meshwork_protocol::{
    AuthorId, Command, Ed25519Signer, EntityId, EntryBody, SessionId, SignedEntry, Signer as _,
};
use meshwork_server::store::log::{LogRecord, chain_hash, position_key};
use meshwork_server::store::{self, Backend, Put, Tree};

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let (entries, batch) = if measuring {
        (200_000u64, 64u64)
    } else {
        (2_000, 64)
    };
    let session = SessionId([9; 16]);
    let s = Ed25519Signer::from_seed([3; 32]);
    // One signed entry reused (signing is not what is measured here).
    let body = EntryBody::new(
        session,
        AuthorId(1),
        s.public_key().key_id(),
        1,
        1,
        0,
        Command::Translate {
            entity: EntityId::new(AuthorId(1), 1),
            delta: glam::Vec3::X,
        },
    );
    let entry = SignedEntry::sign(&body, &s).unwrap();
    println!("{entries} entries, {batch} per durable commit");
    println!(
        "| backend | entries/s | commits/s | bytes written | bytes on disk | space amplification |"
    );
    println!("|---|---|---|---|---|---|");
    // `MESHWORK_STORE=redb|sled` measures one backend (e.g. under strace).
    let only: Option<Backend> = std::env::var("MESHWORK_STORE")
        .ok()
        .and_then(|v| v.parse().ok());
    for backend in [Backend::Redb, Backend::Sled]
        .into_iter()
        .filter(|b| only.is_none_or(|o| o == *b))
    {
        let dir = tempfile::tempdir().unwrap();
        let mut st = store::open(backend, dir.path()).unwrap();
        let mut head = [0u8; 32];
        let mut written = 0u64;
        let started = Instant::now();
        let mut position = 0u64;
        while position < entries {
            let mut puts = Vec::with_capacity(batch as usize);
            for _ in 0..batch {
                position += 1;
                let value = postcard::to_allocvec(&LogRecord {
                    prev_hash: head,
                    entry: entry.clone(),
                })
                .unwrap();
                head = chain_hash(&head, position, &entry);
                let key = position_key(session, position);
                written += (key.len() + value.len()) as u64;
                puts.push(Put {
                    tree: Tree::Log,
                    key,
                    value,
                });
            }
            st.commit(&puts).unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        drop(st);
        let on_disk = dir_size(dir.path());
        println!(
            "| {backend:?} | {:.0} | {:.0} | {written} | {on_disk} | {:.2}× |",
            entries as f64 / secs,
            (entries / batch) as f64 / secs,
            on_disk as f64 / written as f64
        );
    }
}

fn dir_size(path: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(path) {
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            total += if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}
