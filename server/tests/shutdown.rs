//! The real `meshwork-server` binary: zero-config start on loopback, an offline invite from its
//! data dir, a client joining, then SIGTERM → the client is told why and the process exits 0.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use glam::Vec3;
use meshwork_protocol::wire::{CloseReason, JoinTicket, ServerMsg};
use meshwork_protocol::{Command, EntityId};
use meshwork_testkit::{Client, random_signer};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_a_reason_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Process::new(BIN)
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--quic-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .env("MESHWORK_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut banner = Vec::new();
    let started = Instant::now();
    let quic = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server printed its addresses");
        banner.push(line.clone());
        if let Some(rest) = line.strip_prefix("listening: ") {
            let quic = rest
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix("quic="))
                .unwrap();
            break quic.to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    };
    let banner = banner.join("\n");
    assert!(
        banner.contains("admin token:      mwa_"),
        "first start prints the admin token:\n{banner}"
    );
    assert!(
        banner.contains("meshwork-server invite"),
        "the banner says what to do next:\n{banner}"
    );
    assert!(banner.contains("certificate:      SHA-256 "), "{banner}");

    // An invite minted offline from the same data dir, as an operator would.
    let out = Process::new(BIN)
        .args([
            "invite",
            "--role",
            "editor",
            "--ttl",
            "1h",
            "--quic-addr",
            &quic,
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ticket = JoinTicket::from_text(&String::from_utf8(out.stdout).unwrap()).unwrap();

    let mut client = Client::join(&ticket, random_signer()).await.unwrap();
    let cmd = Command::Translate {
        entity: EntityId::new(client.author(), 1),
        delta: Vec3::Y,
    };
    let sent = client.submit(vec![cmd]).await.unwrap();
    let seq = sent[0].decode_body().unwrap().seq;
    client
        .until(Instant::now() + Duration::from_secs(10), |s| {
            s.acks.contains_key(&seq)
        })
        .await
        .unwrap();

    let pid = child.id().to_string();
    let killed = Process::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());

    let close = loop {
        match client.next(Duration::from_secs(10)).await {
            Ok(ServerMsg::Close(c)) => break c,
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame before the connection ended: {e:?}"),
        }
    };
    assert_eq!(close.reason, CloseReason::ServerShutdown);
    assert!(close.message.contains("shutting down"), "{}", close.message);

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");
}
