//! Membership control in the browser editor (`client-web/tests/membership-e2e.mjs`): an admin
//! makes an editor a viewer from the people list (the editor's toolbar turns read-only, an edit
//! sent anyway is refused with the reason) and removes another member (told why, and by whom).
//! Run by `cargo xtask ci` (browser step) inside a loopback-only network namespace.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use meshwork_testkit::browser::{artifacts, editor_dist};
use meshwork_testkit::http;
use meshwork_testkit::server_process::ServerProcess;

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium, client-web/node_modules and client-web/dist: run by `cargo xtask ci` (browser step)"]
async fn an_admin_demotes_and_removes_members_in_the_editor() {
    let dist = editor_dist();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(BIN, &data, &["--web-dir", dist.to_str().unwrap()]);
    let token = server.admin_token().unwrap();
    let admin = server.ticket(BIN, &data, "admin");
    let editor = server.ticket(BIN, &data, "editor");
    let artifacts = artifacts(env!("CARGO_TARGET_TMPDIR"));
    let report = meshwork_testkit::node_json(
        "membership-e2e.mjs",
        &[],
        &[
            &server.http.to_string(),
            &admin.to_text(),
            &editor.to_text(),
            artifacts.to_str().unwrap(),
        ],
    )
    .await;
    eprintln!("membership e2e: {report}");
    for c in report["checks"].as_array().unwrap() {
        assert_eq!(c["ok"], true, "{c}");
    }
    let (_, scene_hash) = http::Admin {
        addr: server.http,
        token,
    }
    .scene()
    .await
    .unwrap();
    for who in ["M", "B"] {
        assert_eq!(
            report["hashes"][who],
            scene_hash.as_str(),
            "{who}'s replica"
        );
    }
}
