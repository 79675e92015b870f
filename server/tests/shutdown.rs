//! The real `meshwork-server` binary: zero-config start on loopback, an offline invite from its
//! data dir, a client joining, then SIGTERM → the client is told why and the process exits 0.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::Duration;

use glam::Vec3;
use meshwork_protocol::wire::{CloseReason, ServerMsg};
use meshwork_protocol::{Command, EntityId};
use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::{Client, random_signer};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_a_reason_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(BIN, &data, &[]);
    let banner = &server.banner;
    assert!(
        server.admin_token().is_some(),
        "first start prints the admin token:\n{banner}"
    );
    assert!(
        banner.contains("meshwork-server invite"),
        "the banner says what to do next:\n{banner}"
    );
    assert!(banner.contains("certificate:      SHA-256 "), "{banner}");

    // The shell-less health check the container image uses.
    let health = std::process::Command::new(BIN)
        .args(["healthcheck", "--http-addr", &server.http.to_string()])
        .output()
        .unwrap();
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );

    // An invite minted offline from the same data dir, as an operator would.
    let ticket = server.ticket(BIN, &data, "editor");
    let mut client = Client::join(&ticket, random_signer()).await.unwrap();
    let cmd = Command::Translate {
        entity: EntityId::new(client.author(), 1),
        delta: Vec3::Y,
    };
    client
        .submit_acked(vec![cmd], Duration::from_secs(10))
        .await
        .unwrap();

    server.signal_term();
    let close = loop {
        match client.next(Duration::from_secs(10)).await {
            Ok(ServerMsg::Close(c)) => break c,
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame before the connection ended: {e:?}"),
        }
    };
    assert_eq!(close.reason, CloseReason::ServerShutdown);
    assert!(close.message.contains("shutting down"), "{}", close.message);
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
    let health = std::process::Command::new(BIN)
        .args([
            "healthcheck",
            "--timeout-ms",
            "500",
            "--http-addr",
            &server.http.to_string(),
        ])
        .output()
        .unwrap();
    assert!(!health.status.success(), "a stopped server is not healthy");
}
