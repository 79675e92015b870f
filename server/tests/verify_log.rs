//! `verify-log`, `backup` and `restore` as an operator runs them, on a store the real server
//! wrote: a clean store verifies (exit 0); one flipped byte in one stored entry makes
//! `verify-log` exit non-zero naming that entry; an online backup restores into a data dir that
//! verifies to the same state.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::Path;
use std::process::{Command as Process, Output};
use std::time::{Duration, Instant};

use glam::Vec3;
use meshwork_protocol::{Command, EntityId};
use meshwork_server::store::log::{list_sessions, position_key};
use meshwork_server::store::{self, Backend, Put, Tree};
use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::{Client, http, random_signer};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");

fn cli(args: &[&str], data: &Path) -> Output {
    Process::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_log_names_a_flipped_byte_and_backups_restore_clean() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(BIN, &data, &["--checkpoint-every", "8"]);
    let (http_addr, token) = (server.http, server.admin_token().unwrap());

    // Some history: 30 acknowledged commands.
    let ticket = server.ticket(BIN, &data, "editor");
    let mut c = Client::join(&ticket, random_signer()).await.unwrap();
    let cmds = (0..30)
        .map(|i| Command::Translate {
            entity: EntityId::new(c.author(), i % 3),
            delta: Vec3::X,
        })
        .collect();
    let sent = c.submit(cmds).await.unwrap();
    let last = sent.last().unwrap().decode_body().unwrap().seq;
    c.until(Instant::now() + Duration::from_secs(10), |s| {
        s.acks.contains_key(&last)
    })
    .await
    .unwrap();

    // Online backup through the admin API while the server runs.
    let bearer = format!("Bearer {token}");
    let r = http::request(
        http_addr,
        "POST",
        "/api/v1/backup",
        &[("Authorization", &bearer)],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let backup: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let backup_path = backup["path"].as_str().unwrap().to_owned();
    assert!(Path::new(&backup_path).exists());

    assert!(server.terminate(Duration::from_secs(10)).success());

    // Untouched: verifies clean.
    let clean = cli(&["verify-log"], &data);
    assert!(clean.status.success(), "{}", text(&clean));
    let clean_text = text(&clean);
    assert!(clean_text.contains("30 entries"), "{clean_text}");
    let state = clean_text
        .rsplit("state ")
        .next()
        .unwrap()
        .trim()
        .to_owned();

    // The online backup restores into a fresh data dir that verifies to the same state.
    let restored = dir.path().join("restored");
    let r = cli(&["restore", "--from", &backup_path], &restored);
    assert!(r.status.success(), "{}", text(&r));
    for f in [
        "server.key",
        "cert.der",
        "cert.key.der",
        "admin-token.sha256",
        "sessions.json",
    ] {
        std::fs::copy(data.join(f), restored.join(f)).unwrap();
    }
    let v = cli(&["verify-log"], &restored);
    assert!(v.status.success(), "{}", text(&v));
    assert!(
        text(&v).contains(&state),
        "restored state differs:\n{}",
        text(&v)
    );

    // One flipped byte in one stored entry: non-zero exit, the entry named.
    {
        let mut st = store::open(Backend::Redb, &data).unwrap();
        let (session, _) = list_sessions(st.as_ref()).unwrap()[0].clone();
        let key = position_key(session, 17);
        let mut raw = st.get(Tree::Log, &key).unwrap().unwrap();
        let at = raw.len() - 80; // inside the signed body
        raw[at] ^= 0x10;
        st.commit(&[Put {
            tree: Tree::Log,
            key,
            value: raw,
        }])
        .unwrap();
    }
    let bad = cli(&["verify-log"], &data);
    assert!(
        !bad.status.success(),
        "a tampered store must not verify:\n{}",
        text(&bad)
    );
    assert!(text(&bad).contains("first bad entry 17"), "{}", text(&bad));

    // And a server refuses to start on it rather than serve a history it cannot prove.
    let start = Process::new(BIN)
        .args(meshwork_testkit::server_process::LOOPBACK_SERVE)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!start.status.success());
    assert!(text(&start).contains("entry 17"), "{}", text(&start));
}
