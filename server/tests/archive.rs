//! The encrypted audit archive as an operator uses it, on a store the real server wrote:
//! `archive` a session of 100,000 entries to an age recipient; `verify-log --archive` with the
//! matching identity proves it to the live store's state; a wrong identity cannot open it; one
//! flipped byte of the decrypted stream (re-encrypted, as anyone with the public key could)
//! is named by entry; an archive cut back to an earlier checkpoint, one checked against another
//! server key, and one with no key to check it against are refused.
//!
//! `MESHWORK_ARCHIVE_ENTRIES` sets the size: 20,000 by default (CI), 100,000 for the acceptance
//! run whose figures are in docs/benchmarks.md.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command as Process, Output};
use std::time::{Duration, Instant};

use age::secrecy::ExposeSecret as _;
use meshwork_server::store::Tree;
use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::{Client, random_signer};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");

fn cli(args: &[&str]) -> Output {
    Process::new(BIN).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A fresh identity written as `age-keygen` writes it; returns its recipient.
fn identity(path: &Path) -> (age::x25519::Identity, String) {
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    std::fs::write(
        path,
        format!(
            "# public key: {recipient}\n{}\n",
            id.to_string().expose_secret()
        ),
    )
    .unwrap();
    (id, recipient)
}

fn decrypt(path: &Path, id: &age::x25519::Identity) -> Vec<u8> {
    let file = std::fs::File::open(path).unwrap();
    let d = age::Decryptor::new(file).unwrap();
    let mut r = d
        .decrypt(std::iter::once(id as &dyn age::Identity))
        .unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    out
}

fn encrypt(plain: &[u8], recipient: &str, path: &Path) {
    let r: age::x25519::Recipient = recipient.parse().unwrap();
    let e = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient)).unwrap();
    let mut w = e.wrap_output(std::fs::File::create(path).unwrap()).unwrap();
    w.write_all(plain).unwrap();
    w.finish().unwrap();
}

/// One record of the plaintext, as `docs/operations.md` lays it out.
struct Record {
    tree: u8,
    key: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
}

/// Reads the plaintext's records (after the 8-byte magic, 16-byte session id and 32-byte server
/// key), up to the end marker; returns them and the end marker's offset.
fn records(plain: &[u8]) -> (Vec<Record>, usize) {
    assert_eq!(&plain[..8], b"MWARCHV\x01");
    let mut at = 8 + 16 + 32;
    let mut out = Vec::new();
    let len = |at: usize| u32::from_le_bytes(plain[at..at + 4].try_into().unwrap()) as usize;
    while plain[at] != 0xff {
        let tree = plain[at];
        let k = len(at + 1);
        let key = at + 5..at + 5 + k;
        let v = len(key.end);
        let value = key.end + 4..key.end + 4 + v;
        at = value.end;
        out.push(Record { tree, key, value });
    }
    (out, at)
}

fn tree_tag(tree: Tree) -> u8 {
    Tree::ALL.iter().position(|t| *t == tree).unwrap() as u8
}

/// A size from the environment, or `default`.
fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_session_verifies_and_a_flipped_byte_is_named() {
    let entries = env_or("MESHWORK_ARCHIVE_ENTRIES", 20_000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let mut server = ServerProcess::start(
        BIN,
        &data,
        &["--rate-per-s", "1000000", "--burst", "1000000"],
    );
    let ticket = server.ticket(BIN, &data, "editor");
    let session = ticket.invite.claimed_session().unwrap().to_string();

    // The history: a cube, then translations back and forth, in acknowledged chunks.
    let started = Instant::now();
    let mut c = Client::join(&ticket, random_signer()).await.unwrap();
    c.retain_entries = false;
    let cube = c
        .spawn_cube_acked(1, Duration::from_secs(30))
        .await
        .unwrap();
    c.translate_back_and_forth(cube, entries - 1, Duration::from_secs(120))
        .await
        .unwrap();
    assert!(c.seen.refusals.is_empty(), "{:?}", c.seen.refusals.first());
    eprintln!("{entries} entries acknowledged in {:?}", started.elapsed());
    drop(c);
    assert!(server.terminate(Duration::from_secs(30)).success());

    // The live store verifies; its state is what the archive must prove.
    // The whole log replayed in memory: its state hash covers every entry, at any length.
    let live = cli(&["verify-log", "--full-replay", "--data-dir", data_arg]);
    assert!(live.status.success(), "{}", text(&live));
    let state = text(&live)
        .rsplit("state ")
        .next()
        .unwrap()
        .trim()
        .to_owned();

    let id_file = dir.path().join("auditor.key");
    let (id, recipient) = identity(&id_file);
    let other_file = dir.path().join("other.key");
    let (_, other_recipient) = identity(&other_file);
    let archive = dir.path().join("session.mwa");
    let started = Instant::now();
    let out = cli(&[
        "archive",
        "--data-dir",
        data_arg,
        "--session",
        &session,
        "--recipient",
        &recipient,
        "--out",
        archive.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("entries 1 to {entries} ")),
        "{}",
        text(&out)
    );
    eprintln!(
        "archive: {:?}, {} bytes",
        started.elapsed(),
        std::fs::metadata(&archive).unwrap().len()
    );
    // The closing checkpoint the archive signed (if any) went to the store too: it still
    // verifies.
    let live = cli(&["verify-log", "--data-dir", data_arg]);
    assert!(live.status.success(), "{}", text(&live));

    // The auditor proves it offline, with no data dir, pinning the server key.
    let server_key = text(&cli(&["keygen", "--data-dir", data_arg]))
        .lines()
        .find_map(|l| l.split("server key").nth(1))
        .map(|k| {
            k.trim_start_matches(|c: char| c == ':' || c.is_whitespace())
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned()
        })
        .unwrap();
    let nowhere = dir.path().join("no-data-dir");
    let verify = |path: &Path, identity: &Path, key: &str| {
        cli(&[
            "verify-log",
            "--full-replay",
            "--data-dir",
            nowhere.to_str().unwrap(),
            "--archive",
            path.to_str().unwrap(),
            "--identity",
            identity.to_str().unwrap(),
            "--server-key",
            key,
        ])
    };
    let started = Instant::now();
    let ok = verify(&archive, &id_file, &server_key);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(
        text(&ok).contains(&format!("{entries} entries")),
        "{}",
        text(&ok)
    );
    assert!(
        text(&ok).contains(&state),
        "the archive proves another state:\n{}\nlive: {state}",
        text(&ok)
    );
    eprintln!("verify-log --archive: {:?}", started.elapsed());
    assert!(!nowhere.exists(), "verifying an archive wrote a data dir");

    // A wrong identity cannot open it.
    let wrong = verify(&archive, &other_file, &server_key);
    assert!(!wrong.status.success());
    assert!(
        text(&wrong).contains("none of the given identities opens"),
        "{}",
        text(&wrong)
    );
    // Another server key: refused.
    let other_key = "11".repeat(32);
    let foreign = verify(&archive, &id_file, &other_key);
    assert!(!foreign.status.success());
    assert!(
        text(&foreign).contains("names server key"),
        "{}",
        text(&foreign)
    );
    // No key at all (no --server-key, no data dir): not verified.
    let unpinned = cli(&[
        "verify-log",
        "--data-dir",
        nowhere.to_str().unwrap(),
        "--archive",
        archive.to_str().unwrap(),
        "--identity",
        id_file.to_str().unwrap(),
    ]);
    assert!(!unpinned.status.success(), "{}", text(&unpinned));
    assert!(
        text(&unpinned).contains("--server-key"),
        "{}",
        text(&unpinned)
    );

    // One flipped byte in one entry of the decrypted stream, re-encrypted: named.
    let plain = decrypt(&archive, &id);
    let (recs, end) = records(&plain);
    let log = tree_tag(Tree::Log);
    let target = (entries as u64 * 3 / 5).max(2);
    let rec = recs
        .iter()
        .find(|r| r.tree == log && plain[r.key.clone()][16..] == target.to_be_bytes()[..])
        .unwrap();
    let mut flipped = plain.clone();
    flipped[rec.value.end - 80] ^= 0x10; // inside the signed body
    let tampered = dir.path().join("tampered.mwa");
    encrypt(&flipped, &other_recipient, &tampered);
    let bad = verify(&tampered, &other_file, &server_key);
    assert!(
        !bad.status.success(),
        "a tampered archive verified:\n{}",
        text(&bad)
    );
    assert!(
        text(&bad).contains(&format!("first bad entry {target}")),
        "{}",
        text(&bad)
    );

    // Cut back to an earlier signed checkpoint: every entry and checkpoint after it dropped and
    // the record count fixed up, as someone hiding the end of a history would. Each record left
    // is as the server and the authors signed it; the seal is what refuses it.
    let checkpoints = tree_tag(Tree::Checkpoints);
    let position_of =
        |r: &Record| u64::from_be_bytes(plain[r.key.clone()][16..].try_into().unwrap_or([0; 8]));
    let keep = recs
        .iter()
        .filter(|r| r.tree == checkpoints)
        .map(position_of)
        .filter(|p| *p < entries as u64)
        .max()
        .expect("the server checkpointed before the end");
    let mut cut = plain[..8 + 16 + 32].to_vec();
    let mut kept = 0u64;
    for r in &recs {
        if (r.tree == log || r.tree == checkpoints) && position_of(r) > keep {
            continue;
        }
        cut.extend_from_slice(&plain[r.key.start - 5..r.value.end]);
        kept += 1;
    }
    assert_eq!(plain[end], 0xff);
    cut.push(0xff);
    cut.extend_from_slice(&kept.to_le_bytes());
    cut.extend_from_slice(&plain[end + 9..]); // the original seal
    let short = dir.path().join("short.mwa");
    encrypt(&cut, &recipient, &short);
    let refused = verify(&short, &id_file, &server_key);
    assert!(
        !refused.status.success(),
        "an archive cut back to entry {keep} verified:\n{}",
        text(&refused)
    );
    assert!(text(&refused).contains("the seal"), "{}", text(&refused));

    // By hand: `archive --rotate` (server stopped) archives again and rotates all but the last
    // fifth out of the store. The store alone still verifies, from its signed base; the new
    // archive and the store replay, as one history, to the state the live store had.
    let rotated_archive = dir.path().join("rotated.mwa");
    let keep = (entries / 5).to_string();
    let out = cli(&[
        "archive",
        "--data-dir",
        data_arg,
        "--recipient",
        &recipient,
        "--out",
        rotated_archive.to_str().unwrap(),
        "--rotate",
        "--keep",
        &keep,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{} entries left the store", entries - entries / 5)),
        "{}",
        text(&out)
    );
    let alone = cli(&["verify-log", "--data-dir", data_arg]);
    assert!(alone.status.success(), "{}", text(&alone));
    assert!(
        text(&alone).contains(&format!(
            "{} entries after the signed base at entry {}",
            entries / 5,
            entries - entries / 5
        )),
        "{}",
        text(&alone)
    );
    let joined = cli(&[
        "verify-log",
        "--full-replay",
        "--data-dir",
        data_arg,
        "--archive",
        rotated_archive.to_str().unwrap(),
        "--identity",
        id_file.to_str().unwrap(),
        "--with-store",
    ]);
    assert!(joined.status.success(), "{}", text(&joined));
    assert!(
        text(&joined).contains("as one history") && text(&joined).contains(&state),
        "{}\nlive: {state}",
        text(&joined)
    );
}

/// Scheduled archives: with `--archive-dir`, a session that outgrows `--archive-keep` +
/// `--archive-every` entries has its history archived and rotated out of the live store while
/// it keeps serving. After a SIGKILL, the archives and the store verify as one history to the
/// live session's state hash; the store alone verifies from its signed base; the restarted
/// server rebuilds the same scene from the base and serves a new member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_archives_rotate_history_out_of_a_live_store() {
    // 4,000 entries in CI; the acceptance run: MESHWORK_ROTATION_ENTRIES=100000, release.
    let entries = env_or("MESHWORK_ROTATION_ENTRIES", 4_000);
    let (keep, every) = ((entries / 4).to_string(), (entries / 2).to_string());
    // The whole log in memory, so the live session names the state hash the archives and the
    // store must replay to.
    let window = (entries * 2).to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let archives = dir.path().join("archives");
    let id_file = dir.path().join("auditor.key");
    let (_, recipient) = identity(&id_file);
    let args = [
        "--rate-per-s",
        "1000000",
        "--burst",
        "1000000",
        "--archive-dir",
        archives.to_str().unwrap(),
        "--archive-recipient",
        &recipient,
        "--archive-every",
        &every,
        "--archive-keep",
        &keep,
        "--archive-check-s",
        "1",
        "--log-window",
        &window,
    ];
    let mut server = ServerProcess::start(BIN, &data, &args);
    let token = server.admin_token().unwrap();
    let admin = meshwork_testkit::http::Admin {
        addr: server.http,
        token: token.clone(),
    };
    let ticket = server.ticket(BIN, &data, "editor");
    let mut c = Client::join(&ticket, random_signer()).await.unwrap();
    c.retain_entries = false;
    let cube = c
        .spawn_cube_acked(1, Duration::from_secs(30))
        .await
        .unwrap();
    let started = Instant::now();
    c.translate_back_and_forth(cube, entries - 1, Duration::from_secs(600))
        .await
        .unwrap();
    eprintln!("{entries} entries acknowledged in {:?}", started.elapsed());
    // One archive is due (a quarter kept + a half). Edits go on while it is written and
    // rotated.
    let scrape = |addr| async move {
        meshwork_testkit::http::get(addr, "/metrics")
            .await
            .unwrap()
            .body
    };
    let value = |metrics: &str, name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let done = "meshwork_archives_total{result=\"archived\"}";
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut more = 0usize;
    while value(&scrape(server.http).await, done) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "no scheduled archive within 300 s"
        );
        c.translate_back_and_forth(cube, 10, Duration::from_secs(30))
            .await
            .unwrap();
        more += 10;
    }
    c.translate_back_and_forth(cube, 500, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(c.seen.refusals.is_empty(), "{:?}", c.seen.refusals.first());
    let total = entries + more + 500;
    eprintln!("{more} more entries acknowledged while the archive was written");
    let metrics = scrape(server.http).await;
    let value = |name: &str| value(&metrics, name);
    assert_eq!(value("meshwork_archives_total{result=\"failed\"}"), 0.0);
    let rotated = value("meshwork_archived_entries_total");
    assert!(rotated >= (entries * 3 / 4) as f64, "rotated {rotated}");
    eprintln!(
        "rotated {rotated} entries in {:.2} s (verified, archived, base stored); server RSS {} KiB",
        value("meshwork_archive_seconds_sum"),
        server.rss_kib()
    );
    let before = admin.sessions().await.unwrap()[0].clone();
    assert_eq!(before["log_entries"].as_u64().unwrap(), total as u64);
    let state = before["state_hash"].as_str().unwrap().to_owned();
    drop(c);

    // kill -9; then, offline, the archives and the store are one history of the live state.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&archives)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "age"))
        .collect();
    files.sort();
    let mut joined = vec![
        "verify-log",
        "--full-replay",
        "--data-dir",
        data_arg,
        "--with-store",
    ];
    for f in &files {
        joined.extend(["--archive", f.to_str().unwrap()]);
    }
    joined.extend(["--identity", id_file.to_str().unwrap()]);
    let started = Instant::now();
    let out = cli(&joined);
    assert!(out.status.success(), "{}", text(&out));
    eprintln!(
        "verify-log, archives + store as one history: {:?}",
        started.elapsed()
    );
    assert!(
        text(&out).contains(&format!("{total} entries, ")) && text(&out).contains(&state),
        "the archives and the store do not replay to the live state {state}:\n{}",
        text(&out)
    );
    // The store alone verifies from its signed base.
    let alone = cli(&["verify-log", "--data-dir", data_arg]);
    assert!(alone.status.success(), "{}", text(&alone));
    assert!(
        text(&alone).contains("after the signed base at entry"),
        "{}",
        text(&alone)
    );

    // The restart rebuilds the same scene from the base and serves a new member.
    let started = Instant::now();
    let server = server.restart_at_same_addresses(BIN, &data, &args);
    let after = admin.sessions().await.unwrap()[0].clone();
    eprintln!(
        "restarted from the base in {:?}; server RSS {} KiB",
        started.elapsed(),
        server.rss_kib()
    );
    assert_eq!(after["log_entries"], before["log_entries"]);
    assert_eq!(after["scene_hash"], before["scene_hash"]);
    let mut d = Client::join(&server.ticket(BIN, &data, "editor"), random_signer())
        .await
        .unwrap();
    d.submit_acked(
        vec![meshwork_protocol::Command::Translate {
            entity: cube,
            delta: glam::Vec3::Y,
        }],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let now = admin.sessions().await.unwrap()[0].clone();
    let want = now["scene_hash"].as_str().unwrap().to_owned();
    let position = now["scene_position"].as_u64().unwrap();
    let seen = d
        .caught_up_to(position, Instant::now() + Duration::from_secs(30))
        .await
        .expect("the new member's replica catches up");
    assert_eq!(hex::encode(seen), want);
}
