//! The conformance suite every backend passes: the same tests, run once per backend.
#![allow(clippy::arithmetic_side_effects, reason = "test deadlines in seconds")]

use meshwork_protocol::{
    AuthorId, Command, Domain, Ed25519Signer, EntityId, EntryBody, Role, SessionId, SignedEntry,
    Signer as _,
};
use meshwork_session::AuthorRecord;

use super::log::{
    CheckpointBody, CheckpointRecord, LogRecord, author_key, chain_hash, load_session,
    position_key, verify_session,
};
use super::{Backend, Put, SessionRecord, Store, StoreError, Tree, backup, encode, open};

const SESSION: SessionId = SessionId([0x33; 16]);

fn author() -> Ed25519Signer {
    Ed25519Signer::from_seed([0x44; 32])
}

fn server() -> Ed25519Signer {
    Ed25519Signer::from_seed([0x55; 32])
}

fn entry(seq: u64) -> SignedEntry {
    let s = author();
    let body = EntryBody::new(
        SESSION,
        AuthorId(1),
        s.public_key().key_id(),
        seq,
        seq,
        seq.saturating_sub(1),
        Command::Translate {
            entity: EntityId::new(AuthorId(1), 1),
            delta: glam::Vec3::X,
        },
    );
    SignedEntry::sign(&body, &s).unwrap()
}

/// Writes `n` chained entries (and the author and session records) in one commit.
fn write_log(store: &mut dyn Store, n: u64) {
    let mut puts = vec![Put {
        tree: Tree::Authors,
        key: author_key(SESSION, AuthorId(1)),
        value: encode(&AuthorRecord {
            author: AuthorId(1),
            public_key: author().public_key(),
            role: Role::Editor,
        }),
    }];
    let mut head = [0u8; 32];
    for p in 1..=n {
        let e = entry(p);
        let next = chain_hash(&head, p, &e);
        puts.push(Put {
            tree: Tree::Log,
            key: position_key(SESSION, p),
            value: encode(&LogRecord {
                prev_hash: head,
                entry: e,
            }),
        });
        head = next;
    }
    let cp = CheckpointRecord::sign(
        &CheckpointBody {
            domain: Domain::Checkpoint,
            session: SESSION,
            position: n,
            head_hash: head,
            at_ms: 1,
        },
        &server(),
    );
    puts.push(Put {
        tree: Tree::Checkpoints,
        key: position_key(SESSION, n),
        value: encode(&cp),
    });
    puts.push(Put {
        tree: Tree::Sessions,
        key: SESSION.0.to_vec(),
        value: encode(&SessionRecord {
            name: "t".into(),
            head_position: n,
            head_hash: head,
        }),
    });
    store.commit(&puts).unwrap();
}

/// Reopens a store just closed: sled's background thread may hold the lock a moment longer.
fn reopen(backend: Backend, dir: &std::path::Path) -> Box<dyn Store> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match open(backend, dir) {
            Ok(s) => return s,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("{backend:?} does not reopen: {e}"),
        }
    }
}

fn backends() -> [Backend; 2] {
    [Backend::Redb, Backend::Sled]
}

#[test]
fn commits_are_visible_in_key_order_and_survive_reopening() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = open(backend, dir.path()).unwrap();
            let puts: Vec<Put> = [3u64, 1, 2]
                .iter()
                .map(|n| Put {
                    tree: Tree::Log,
                    key: position_key(SESSION, *n),
                    value: vec![u8::try_from(*n).unwrap()],
                })
                .collect();
            store.commit(&puts).unwrap();
            store
                .commit(&[Put {
                    tree: Tree::Meta,
                    key: b"x".to_vec(),
                    value: b"y".to_vec(),
                }])
                .unwrap();
        }
        let store = reopen(backend, dir.path());
        let mut seen = Vec::new();
        store
            .scan(Tree::Log, &SESSION.0, &mut |_, v| {
                seen.push(v[0]);
                true
            })
            .unwrap();
        assert_eq!(seen, vec![1, 2, 3], "{backend:?}");
        assert_eq!(
            store.get(Tree::Meta, b"x").unwrap(),
            Some(b"y".to_vec()),
            "{backend:?}"
        );
        assert_eq!(
            store.get(Tree::Log, b"x").unwrap(),
            None,
            "trees are separate ({backend:?})"
        );
        let (k, v) = store.last(Tree::Log, &SESSION.0).unwrap().unwrap();
        assert_eq!(
            (super::key_number(&k), v),
            (Some(3), vec![3]),
            "{backend:?}"
        );
        assert!(store.last(Tree::Log, &[9; 16]).unwrap().is_none());
        assert!(store.size_bytes() > 0);
    }
}

#[test]
fn a_fresh_store_is_at_the_current_schema_and_a_newer_one_is_refused() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(backend, dir.path()).unwrap();
        assert_eq!(
            super::schema_version(store.as_ref()).unwrap(),
            super::SCHEMA_VERSION
        );
        store
            .commit(&[Put {
                tree: Tree::Meta,
                key: b"schema_version".to_vec(),
                value: 99u32.to_le_bytes().to_vec(),
            }])
            .unwrap();
        // (Migrating the open store: sled may still hold its file lock right after a drop.)
        assert!(
            matches!(
                super::migrate(store.as_mut()),
                Err(StoreError::TooNew { found: 99 })
            ),
            "{backend:?}"
        );
    }
}

#[test]
fn a_written_log_loads_and_verifies_clean() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(backend, dir.path()).unwrap();
        write_log(store.as_mut(), 20);
        let loaded = load_session(store.as_ref(), SESSION).unwrap();
        assert_eq!(loaded.entries.len(), 20);
        let report = verify_session(store.as_ref(), SESSION, &server().public_key()).unwrap();
        assert_eq!((report.entries, report.checkpoints), (20, 1), "{backend:?}");
    }
}

#[test]
fn one_flipped_byte_is_found_and_named() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(backend, dir.path()).unwrap();
        write_log(store.as_mut(), 10);
        // Flip a byte inside entry 6's signed body (the tail of the record is the signature).
        let mut raw = store
            .get(Tree::Log, &position_key(SESSION, 6))
            .unwrap()
            .unwrap();
        let at = raw.len().saturating_sub(70);
        raw[at] ^= 0x01;
        store
            .commit(&[Put {
                tree: Tree::Log,
                key: position_key(SESSION, 6),
                value: raw,
            }])
            .unwrap();
        let err = verify_session(store.as_ref(), SESSION, &server().public_key()).unwrap_err();
        assert_eq!(err.position, 6, "{backend:?}: {err}");
        assert!(
            load_session(store.as_ref(), SESSION).is_err(),
            "recovery refuses a broken chain"
        );
    }
}

#[test]
fn a_forged_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(Backend::Redb, dir.path()).unwrap();
    write_log(store.as_mut(), 4);
    let rogue = Ed25519Signer::from_seed([0x66; 32]);
    let cp = CheckpointRecord::sign(
        &CheckpointBody {
            domain: Domain::Checkpoint,
            session: SESSION,
            position: 2,
            head_hash: [0; 32],
            at_ms: 1,
        },
        &rogue,
    );
    store
        .commit(&[Put {
            tree: Tree::Checkpoints,
            key: position_key(SESSION, 2),
            value: encode(&cp),
        }])
        .unwrap();
    let err = verify_session(store.as_ref(), SESSION, &server().public_key()).unwrap_err();
    assert_eq!(err.position, 2);
    assert!(err.reason.contains("checkpoint"), "{err}");
}

#[test]
fn backups_restore_into_either_backend() {
    for (from, to) in [
        (Backend::Redb, Backend::Sled),
        (Backend::Sled, Backend::Redb),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(from, &dir.path().join("a")).unwrap();
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        write_log(store.as_mut(), 30);
        let file = dir.path().join("backup.mwb");
        let records = backup::write(store.as_ref(), &file, None).unwrap();
        assert!(records >= 33);
        let mut target = open(to, &dir.path().join("b")).unwrap();
        assert_eq!(
            backup::restore(&file, target.as_mut(), None).unwrap(),
            records
        );
        let report = verify_session(target.as_ref(), SESSION, &server().public_key()).unwrap();
        assert_eq!(report.entries, 30, "{from:?} → {to:?}");
        // A damaged backup is refused whole.
        let mut bytes = std::fs::read(&file).unwrap();
        let mid = bytes.len().div_euclid(2);
        bytes[mid] ^= 1;
        std::fs::write(&file, bytes).unwrap();
        let mut empty = open(to, &dir.path().join("c")).unwrap();
        assert!(
            backup::restore(&file, empty.as_mut(), None)
                .unwrap_err()
                .contains("damaged")
        );
    }
}

#[test]
fn rotated_history_leaves_a_signed_base_that_restarts_and_verifies_with_its_archive() {
    use super::archive;
    use super::log::{load_meta, scan_entries};

    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(backend, dir.path()).unwrap();
        write_log(store.as_mut(), 200);
        let whole = verify_session(store.as_ref(), SESSION, &server().public_key()).unwrap();
        let full_hash = whole.state_hash.expect("nothing let go in a full replay");

        let identity = age::x25519::Identity::generate();
        let recipient: Box<dyn age::Recipient + Send> = Box::new(identity.to_public());
        let out = dir.path().join("a.age");
        let written = archive::write(
            store.as_mut(),
            SESSION,
            &server(),
            5,
            &[recipient],
            &out,
            None,
        )
        .unwrap();
        assert_eq!(written.entries, 200);
        let rotated = archive::rotate(store.as_mut(), SESSION, &server(), 6, 50, 200, 16)
            .unwrap()
            .unwrap();
        assert_eq!((rotated.base, rotated.removed), (150, 150), "{backend:?}");
        assert!(
            store
                .get(Tree::Log, &position_key(SESSION, 150))
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .get(Tree::Log, &position_key(SESSION, 151))
                .unwrap()
                .is_some()
        );
        // Nothing more to rotate with the same bounds.
        assert_eq!(
            archive::rotate(store.as_mut(), SESSION, &server(), 7, 50, 200, 16).unwrap(),
            None
        );

        // The store alone: the chain from the signed base, the scene the whole log gives.
        let alone = verify_session(store.as_ref(), SESSION, &server().public_key()).unwrap();
        assert_eq!((alone.from, alone.entries), (150, 50), "{backend:?}");
        assert_eq!(alone.state_hash, None);
        assert_eq!(alone.scene_hash, whole.scene_hash);
        // A restart streams the 50 entries after the base and ends on the same head.
        let mut loaded = load_meta(store.as_ref(), SESSION).unwrap();
        assert_eq!(loaded.base.as_ref().map(|b| b.position), Some(150));
        let mut seen = Vec::new();
        scan_entries(store.as_ref(), SESSION, &mut loaded, &mut |p, _| {
            seen.push(p);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.first(), Some(&151));
        assert_eq!((loaded.count, seen.len()), (200, 50));
        // Another server's key does not vouch for the base.
        let stranger = Ed25519Signer::from_seed([0x66; 32]).public_key();
        let refused = verify_session(store.as_ref(), SESSION, &stranger).unwrap_err();
        assert_eq!(refused.position, 150, "{refused}");

        // The archive and the store together: the whole log's state hash.
        let identities: Vec<Box<dyn age::Identity + Send + Sync>> =
            vec![Box::new(identity.clone())];
        let scratch_dir = tempfile::tempdir().unwrap();
        let mut scratch = open(Backend::Redb, scratch_dir.path()).unwrap();
        archive::load(&out, &identities, scratch.as_mut(), None).unwrap();
        assert_eq!(
            archive::extend(scratch.as_mut(), store.as_ref(), SESSION).unwrap(),
            0
        );
        let joined = verify_session(scratch.as_ref(), SESSION, &server().public_key()).unwrap();
        assert_eq!((joined.from, joined.entries), (0, 200));
        assert_eq!(joined.state_hash, Some(full_hash), "{backend:?}");

        // A second rotation goes on from the first base.
        let rotated = archive::rotate(store.as_mut(), SESSION, &server(), 8, 20, 200, 16)
            .unwrap()
            .unwrap();
        assert_eq!((rotated.base, rotated.removed), (180, 30));
        let again = verify_session(store.as_ref(), SESSION, &server().public_key()).unwrap();
        assert_eq!((again.from, again.scene_hash), (180, whole.scene_hash));
    }
}

#[test]
fn history_that_does_not_go_on_from_the_archive_is_refused() {
    use super::archive;

    let dir = tempfile::tempdir().unwrap();
    let mut target = open(Backend::Redb, dir.path().join("t").as_path()).unwrap();
    write_log(target.as_mut(), 10);
    // A store whose base is past the target's end: a gap.
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = open(Backend::Redb, other_dir.path()).unwrap();
    write_log(other.as_mut(), 40);
    let identity = age::x25519::Identity::generate();
    let recipient: Box<dyn age::Recipient + Send> = Box::new(identity.to_public());
    let out = other_dir.path().join("a.age");
    archive::write(
        other.as_mut(),
        SESSION,
        &server(),
        5,
        &[recipient],
        &out,
        None,
    )
    .unwrap();
    archive::rotate(other.as_mut(), SESSION, &server(), 6, 5, 40, 16).unwrap();
    let gap = archive::extend(target.as_mut(), other.as_ref(), SESSION).unwrap_err();
    assert!(gap.contains("gap"), "{gap}");
}
