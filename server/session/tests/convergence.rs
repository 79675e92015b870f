//! Convergence of replica logs: several authors issue random commands while seeing only part of
//! each other's work; every replica then receives all entries in its own random order, random
//! batch splits and with duplicates, and all must end with the identical log, byte for byte.
#![allow(
    clippy::unwrap_used,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::panic,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

use glam::{Quat, Vec3};
use meshwork_protocol::command::{HalfEdgeIndex, Primitive, Transform};
use meshwork_protocol::{
    AuthorId, Command, Ed25519Signer, EntityId, KeyRing, Role, SessionId, SignedEntry, Signer,
    ToolId,
};
use meshwork_session::{CommandLog, Integrated, Mode, Refusal, Status};
use proptest::prelude::*;

const SESSION: SessionId = SessionId([0xc0; 16]);
const AUTHORS: u32 = 3;
const REPLICAS: usize = 4;

/// SplitMix64: a small seeded generator, so a failing seed replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

fn signer(author: AuthorId) -> Ed25519Signer {
    let mut seed = [0x11u8; 32];
    seed[0] = u8::try_from(author.0).unwrap();
    Ed25519Signer::from_seed(seed)
}

fn keys() -> KeyRing {
    let mut k = KeyRing::new();
    for a in 1..=AUTHORS {
        k.register(AuthorId(a), signer(AuthorId(a)).public_key(), Role::Editor)
            .unwrap();
    }
    k
}

/// A random command on a small world (few entities, few edges) so conflicts are frequent.
fn random_command(rng: &mut Rng, author: AuthorId) -> Command {
    let entity = EntityId::new(AuthorId(1), u32::try_from(rng.below(2)).unwrap());
    let small = |rng: &mut Rng| f32::from(u8::try_from(rng.below(7)).unwrap()) - 3.0;
    match rng.below(9) {
        0 => Command::Select {
            entities: vec![entity],
        },
        1 => Command::Spawn {
            entity: EntityId::new(author, u32::try_from(rng.below(4)).unwrap()),
            primitive: Primitive::Sphere,
            transform: Transform::IDENTITY,
        },
        2 => Command::Despawn { entity },
        3 => Command::Translate {
            entity,
            delta: Vec3::new(small(rng), 0.0, small(rng)),
        },
        4 => Command::Rotate {
            entity,
            delta: Quat::from_rotation_y(small(rng)),
        },
        5 => Command::SetName {
            entity,
            name: format!("n{}", rng.below(5)),
        },
        6 => Command::ToolActivate {
            tool: ToolId(1),
            target: Some(entity),
        },
        7 => Command::EdgeExtrude {
            entity,
            edge: HalfEdgeIndex(u32::try_from(rng.below(2)).unwrap()),
            offset: Vec3::Y,
        },
        _ => Command::SetColor {
            entity,
            rgba: glam::Vec4::splat(0.5),
        },
    }
}

/// Authors take turns; before each command an author pulls a random amount of what the others
/// have published, so `seen_lamport` varies and many entries are concurrent. Returns every
/// published entry in publication order.
fn publish(seed: u64, ops: usize) -> Vec<SignedEntry> {
    let mut rng = Rng(seed);
    let authors: Vec<AuthorId> = (1..=AUTHORS).map(AuthorId).collect();
    let signers: Vec<Ed25519Signer> = authors.iter().map(|a| signer(*a)).collect();
    let mut logs: Vec<CommandLog> = authors
        .iter()
        .map(|_| CommandLog::new(Mode::Replica, SESSION, keys()))
        .collect();
    let mut cursors = vec![0usize; authors.len()];
    let mut published: Vec<SignedEntry> = Vec::new();
    for _ in 0..ops {
        let who = rng.below(authors.len());
        let available = published.len() - cursors[who];
        let pull = if available == 0 {
            0
        } else {
            rng.below(available + 1)
        };
        for e in &published[cursors[who]..cursors[who] + pull] {
            // Conflicts are expected here; the entry is stored either way.
            let _ = logs[who].integrate(e.clone());
        }
        cursors[who] += pull;
        let command = random_command(&mut rng, authors[who]);
        let (entry, _) = logs[who]
            .append_local(authors[who], &signers[who], command)
            .expect("an editor's own command never conflicts with what it has seen");
        // Its own entry is already in its log: skip it when it pulls later.
        published.push(entry);
        if cursors[who] == published.len() - 1 {
            cursors[who] += 1;
        }
    }
    published
}

/// Delivers `entries` to a fresh replica in a random order, in random batches, with random
/// duplicates, mixing batch and one-by-one integration.
fn deliver(entries: &[SignedEntry], rng: &mut Rng) -> (CommandLog, usize) {
    let mut order: Vec<SignedEntry> = entries.to_vec();
    for _ in 0..rng.below(entries.len() / 4 + 1) {
        let dup = entries[rng.below(entries.len())].clone();
        order.push(dup);
    }
    rng.shuffle(&mut order);
    let mut log = CommandLog::new(Mode::Replica, SESSION, keys());
    let mut retractions = 0;
    let mut rest = order.as_slice();
    while !rest.is_empty() {
        let take = 1 + rng.below(rest.len().min(16));
        let (batch, tail) = rest.split_at(take);
        rest = tail;
        let results = if rng.below(2) == 0 {
            log.integrate_batch(batch.to_vec())
        } else {
            batch.iter().cloned().map(|e| log.integrate(e)).collect()
        };
        for r in results {
            match r {
                Ok(Integrated::Appended { changed, .. }) => {
                    retractions += changed
                        .iter()
                        .filter(|(_, s)| matches!(s, Status::Rejected { .. }))
                        .count()
                }
                Ok(Integrated::Duplicate { .. }) | Err(Refusal::Conflict { .. }) => {}
                Err(other) => panic!("honest entries are only refused for conflicts: {other}"),
            }
        }
    }
    (log, retractions)
}

/// The reference: one replica integrating everything in total order, one by one.
fn reference(entries: &[SignedEntry]) -> CommandLog {
    let mut sorted: Vec<SignedEntry> = entries.to_vec();
    sorted.sort_by_key(|e| e.decode_body().unwrap().id());
    let mut log = CommandLog::new(Mode::Replica, SESSION, keys());
    for e in sorted {
        let _ = log.integrate(e);
    }
    log
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn replicas_converge_whatever_the_delivery(seed in any::<u64>(), ops in 1usize..70) {
        let entries = publish(seed, ops);
        let want = reference(&entries);
        let want_bytes = want.encode();
        prop_assert_eq!(want.len(), entries.len());
        let mut rng = Rng(seed ^ 0xdead_beef);
        for replica in 0..REPLICAS {
            let (log, _) = deliver(&entries, &mut rng);
            prop_assert_eq!(log.len(), entries.len(), "replica {} holds every entry", replica);
            prop_assert!(log.encode() == want_bytes, "replica {} diverged (seed {})", replica, seed);
        }
    }
}

/// Guards the property above against a generator that never makes conflicts: over fixed seeds
/// it must produce every resolution outcome, and late arrivals that retract entries.
#[test]
fn the_workload_exercises_every_resolution() {
    let (mut superseded, mut rejected, mut retracted) = (0, 0, 0);
    for seed in 0..24 {
        let entries = publish(seed, 60);
        let mut rng = Rng(seed);
        let (log, r) = deliver(&entries, &mut rng);
        retracted += r;
        for e in log.iter() {
            match e.status {
                Status::Superseded { .. } => superseded += 1,
                Status::Rejected { .. } => rejected += 1,
                Status::Applied => {}
            }
        }
        assert_eq!(log.encode(), reference(&entries).encode(), "seed {seed}");
    }
    assert!(superseded > 0, "no last-write-wins conflict generated");
    assert!(rejected > 0, "no reject conflict generated");
    assert!(retracted > 0, "no late arrival retracted an entry");
}
