//! The browser editor reconnects by itself, over WebRTC and over the WebSocket, through a cut
//! network path and through a server killed with SIGKILL and restarted on the same addresses
//! and store; offline edits are judged (one accepted, one refused as a conflict, the reason
//! shown) and every replica ends at the server's hash (`client-web/tests/reconnect-e2e.mjs`
//! holds the scenario; this side kills and restarts the server when the script asks). Run by
//! `cargo xtask ci` (browser step) inside a loopback-only network namespace.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::process::Stdio;

use meshwork_testkit::browser::{artifacts, editor_dist};
use meshwork_testkit::http;
use meshwork_testkit::repo_root;
use meshwork_testkit::server_process::ServerProcess;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium, client-web/node_modules and client-web/dist: run by `cargo xtask ci` (browser step)"]
async fn the_editor_reconnects_through_a_cut_path_and_a_killed_server() {
    let dist = editor_dist();
    let web = ["--web-dir", dist.to_str().unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(BIN, &data, &web);
    let token = server.admin_token().unwrap();
    let editor = server.ticket(BIN, &data, "editor");
    let artifacts = artifacts(env!("CARGO_TARGET_TMPDIR"));

    let mut node = tokio::process::Command::new("node")
        .arg(repo_root().join("client-web/tests/reconnect-e2e.mjs"))
        .arg(server.http.to_string())
        .arg(editor.to_text())
        .arg(&artifacts)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut stdin = node.stdin.take().unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut report = None;
    let mut restarts = 0;
    while let Some(line) = lines.next_line().await.unwrap() {
        if line == "KILL" {
            // SIGKILL: no goodbye to anyone, nothing flushed but what was acknowledged.
            server.child.kill().unwrap();
            server.child.wait().unwrap();
            server = server.restart_at_same_addresses(BIN, &data, &web);
            restarts += 1;
            stdin.write_all(b"RESTARTED\n").await.unwrap();
            stdin.flush().await.unwrap();
        } else if line.starts_with('{') {
            report = Some(line);
        } else {
            eprintln!("{line}");
        }
    }
    let status = node.wait().await.unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&report.expect("the script printed its report")).unwrap();
    eprintln!(
        "reconnect e2e: {report}\nscreenshots in {}",
        artifacts.display()
    );
    assert!(status.success(), "reconnect-e2e.mjs failed");
    assert_eq!(restarts, 1, "the server was killed and restarted once");
    for c in report["checks"].as_array().unwrap() {
        assert_eq!(c["ok"], true, "{c}");
    }

    // Every replica equals the restarted server's scene (the only session).
    let (_, scene_hash) = http::Admin {
        addr: server.http,
        token,
    }
    .scene()
    .await
    .unwrap();
    for who in ["A", "W", "B"] {
        assert_eq!(
            report["hashes"][who],
            scene_hash.as_str(),
            "browser {who}'s replica equals the server's scene"
        );
    }
}
