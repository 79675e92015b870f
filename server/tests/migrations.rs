//! Stored databases of every released schema open with today's build: the fixture under
//! `tests/fixtures/db/v1/` (a redb store written by schema 1, with the keys that signed it) is
//! migrated, verified and replayed to the state hash recorded when it was made.
//!
//! Regenerate only when adding a *new* schema's fixture:
//! `MESHWORK_BLESS=1 cargo test -p meshwork-server --test migrations`.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};

use meshwork_protocol::command::Primitive;
use meshwork_protocol::{
    AuthorId, Command, Domain, Ed25519Signer, EntityId, EntryBody, Role, SessionId, SignedEntry,
    Signer as _,
};
use meshwork_server::store::log::{
    CheckpointBody, CheckpointRecord, LogRecord, author_key, chain_hash, load_session,
    position_key, verify_session,
};
use meshwork_server::store::{self, Backend, Put, SessionRecord, Tree};
use meshwork_session::{AuthorRecord, Config, Session};

const SESSION: SessionId = SessionId([0x01; 16]);

fn fixture_dir() -> PathBuf {
    meshwork_testkit::repo_root().join("tests/fixtures/db/v1")
}

fn server_key() -> Ed25519Signer {
    Ed25519Signer::from_seed([0x5e; 32])
}

fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).unwrap()
}

/// Writes the v1 fixture: two authors, a spawn, moves and a rename, a checkpoint, a snapshot.
fn write_fixture(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let authors = [
        Ed25519Signer::from_seed([0xa1; 32]),
        Ed25519Signer::from_seed([0xa2; 32]),
    ];
    let mut store = store::open(Backend::Redb, dir).unwrap();
    let mut puts = Vec::new();
    for (i, s) in authors.iter().enumerate() {
        let author = AuthorId(u32::try_from(i).unwrap() + 1);
        let rec = AuthorRecord {
            author,
            public_key: s.public_key(),
            role: Role::Editor,
        };
        puts.push(Put {
            tree: Tree::Authors,
            key: author_key(SESSION, author),
            value: enc(&rec),
        });
    }
    let e = EntityId::new(AuthorId(1), 1);
    let commands = [
        (
            0,
            Command::Spawn {
                entity: e,
                primitive: Primitive::Cube,
                transform: meshwork_protocol::Transform::IDENTITY,
            },
        ),
        (
            1,
            Command::Translate {
                entity: e,
                delta: glam::Vec3::X,
            },
        ),
        (
            0,
            Command::SetName {
                entity: e,
                name: "chair".into(),
            },
        ),
        (
            1,
            Command::SetName {
                entity: e,
                name: "stool".into(),
            },
        ),
        (
            0,
            Command::Rotate {
                entity: e,
                delta: glam::Quat::from_rotation_y(0.5),
            },
        ),
    ];
    let mut head = [0u8; 32];
    let mut seqs = [0u64; 2];
    for (i, (who, command)) in commands.into_iter().enumerate() {
        let position = i as u64 + 1;
        seqs[who] += 1;
        let s = &authors[who];
        let body = EntryBody {
            domain: Domain::Entry,
            // Schema 1 was written by protocol version 1: self-describing entries.
            version: 1,
            session: Some(SESSION),
            author: AuthorId(u32::try_from(who).unwrap() + 1),
            key_id: Some(s.public_key().key_id()),
            seq: seqs[who],
            lamport: position,
            // Entries 3 and 4 are concurrent renames (neither saw the other).
            seen_lamport: if position == 4 { 2 } else { position - 1 },
            command,
        };
        let entry = SignedEntry::sign(&body, s).unwrap();
        let next = chain_hash(&head, position, &entry);
        puts.push(Put {
            tree: Tree::Log,
            key: position_key(SESSION, position),
            value: enc(&LogRecord {
                prev_hash: head,
                entry,
            }),
        });
        head = next;
    }
    let cp = CheckpointBody {
        domain: Domain::Checkpoint,
        session: SESSION,
        position: 5,
        head_hash: head,
        at_ms: 1_764_000_000_000,
    };
    puts.push(Put {
        tree: Tree::Checkpoints,
        key: position_key(SESSION, 5),
        value: enc(&CheckpointRecord::sign(&cp, &server_key())),
    });
    puts.push(Put {
        tree: Tree::Sessions,
        key: SESSION.0.to_vec(),
        value: enc(&SessionRecord {
            name: "Fixture".into(),
            head_position: 5,
            head_hash: head,
        }),
    });
    store.commit(&puts).unwrap();
    drop(store);
    let loaded = load_session(store::open(Backend::Redb, dir).unwrap().as_ref(), SESSION).unwrap();
    let config = Config::new(SESSION, server_key().public_key());
    let (session, _) = Session::restore(
        config,
        [0; 32],
        0,
        &loaded.authors,
        &loaded.assets,
        None,
        loaded.entries,
    )
    .unwrap();
    std::fs::write(
        dir.join("expected-state-hash.txt"),
        hex::encode(session.log().state_hash().unwrap()),
    )
    .unwrap();
}

#[test]
fn the_v1_fixture_database_opens_verifies_and_replays() {
    let fixture = fixture_dir();
    if !fixture.join("store.redb").exists() {
        assert!(
            std::env::var_os("MESHWORK_BLESS").is_some(),
            "missing fixture; run with MESHWORK_BLESS=1 once"
        );
        write_fixture(&fixture);
    }
    // Work on a copy: opening migrates in place.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture.join("store.redb"), dir.path().join("store.redb")).unwrap();
    let store = store::open(Backend::Redb, dir.path()).unwrap();
    assert_eq!(
        store::schema_version(store.as_ref()).unwrap(),
        store::SCHEMA_VERSION
    );
    let report = verify_session(store.as_ref(), SESSION, &server_key().public_key()).unwrap();
    assert_eq!((report.entries, report.checkpoints), (5, 1));
    let expected = std::fs::read_to_string(fixture.join("expected-state-hash.txt")).unwrap();
    assert_eq!(
        hex::encode(report.state_hash.unwrap()),
        expected.trim(),
        "the v1 log replays to the same state"
    );
    let loaded = load_session(store.as_ref(), SESSION).unwrap();
    let (session, _) = Session::restore(
        Config::new(SESSION, server_key().public_key()),
        [0; 32],
        0,
        &loaded.authors,
        &loaded.assets,
        None,
        loaded.entries,
    )
    .unwrap();
    assert_eq!(
        session.log().non_applied().len(),
        1,
        "the concurrent rename is still superseded"
    );
}
