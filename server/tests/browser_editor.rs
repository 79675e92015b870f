//! The browser editor in Debian's Chromium (Playwright), served by the real server: two users
//! edit and view together, a viewer is refused with the reason, a reload keeps the scene, the
//! WebSocket fallback works when WebRTC is blocked (`client-web/tests/editor-e2e.mjs` holds the
//! scenario). Run by `cargo xtask ci` (browser step) inside a loopback-only network namespace,
//! after the wasm step built `client-web/dist`. Screenshots go to
//! `<target dir>/browser-artifacts/`.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use meshwork_testkit::browser::{artifacts, editor_dist};
use meshwork_testkit::http;
use meshwork_testkit::server_process::ServerProcess;

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium, client-web/node_modules and client-web/dist: run by `cargo xtask ci` (browser step)"]
async fn two_browsers_edit_and_view_one_scene() {
    let dist = editor_dist();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(BIN, &data, &["--web-dir", dist.to_str().unwrap()]);
    let token = server.admin_token().unwrap();
    let editor = server.ticket(BIN, &data, "editor");
    let viewer = server.ticket(BIN, &data, "viewer");
    let artifacts = artifacts(env!("CARGO_TARGET_TMPDIR"));

    let index = http::get(server.http, "/").await.unwrap();
    assert!(
        index.body.contains("<div id=\"app\">"),
        "the server serves the editor at /"
    );

    let report = meshwork_testkit::node_json(
        "editor-e2e.mjs",
        &[],
        &[
            &server.http.to_string(),
            &editor.to_text(),
            &viewer.to_text(),
            artifacts.to_str().unwrap(),
            &token,
        ],
    )
    .await;
    eprintln!(
        "editor e2e: {report}\nscreenshots in {}",
        artifacts.display()
    );
    for c in report["checks"].as_array().unwrap() {
        assert_eq!(c["ok"], true, "{c}");
    }
    assert!(report["inspectorToViewerMs"].as_f64().unwrap() <= 1000.0);
    assert!(report["gizmoToViewerMs"].as_f64().unwrap() <= 1000.0);
    assert!(report["undoToOtherMs"].as_f64().unwrap() <= 1000.0);
    assert!(report["rejoinCursorMs"].as_f64().unwrap() <= 1000.0);
    let sessions = http::Admin {
        addr: server.http,
        token: token.clone(),
    }
    .sessions()
    .await
    .unwrap();
    let default = editor.invite.claimed_session().unwrap().to_string();
    let server_hash = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == default.as_str())
        .expect("the default session")["scene_hash"]
        .clone();
    assert_eq!(
        sessions.as_array().unwrap().len(),
        2,
        "the admin UI created a session"
    );
    for who in ["A", "B", "C"] {
        assert_eq!(
            report["hashes"][who], server_hash,
            "browser {who}'s replica equals the server's scene"
        );
    }
}
