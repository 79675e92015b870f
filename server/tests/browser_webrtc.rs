//! Headless Chromium (Debian's `chromium`, driven by Playwright) loads a test page that uses
//! the wasm protocol package, joins the real server over WebRTC, submits a signed command and
//! sees it applied; its replica's state hash equals the server's scene. Run by `cargo xtask ci`
//! (browser step) inside a loopback-only network namespace, after the wasm step built
//! `client-web/pkg`.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use meshwork_testkit::http;
use meshwork_testkit::server_process::ServerProcess;

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium, client-web/node_modules and client-web/pkg: run by `cargo xtask ci` (browser step)"]
async fn chromium_joins_over_webrtc_and_sees_its_command_applied() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(BIN, &data, &[]);
    let token = server.admin_token().unwrap();
    let ticket = server.ticket(BIN, &data, "editor");
    let session = ticket.invite.claimed_session().unwrap().to_string();
    let report = meshwork_testkit::node_json(
        "rtc-chromium.mjs",
        &[],
        &[&server.http.to_string(), &ticket.to_text(), &session],
    )
    .await;
    assert_eq!(report["transport"], "webrtc");
    assert_eq!(report["entities"], 1);
    assert_eq!(report["triangles"], 12, "a cube is 6 quads = 12 triangles");
    assert_eq!(
        report["translation"][0], 1.5,
        "spawned at x=1, moved by 0.5"
    );
    assert!(report["bytesReceived"].as_u64().unwrap() > 0, "{report}");
    let v = http::Admin {
        addr: server.http,
        token,
    }
    .sessions()
    .await
    .unwrap();
    assert_eq!(
        report["hash"], v[0]["scene_hash"],
        "the browser's replica equals the server's scene"
    );
    let metrics = http::get(server.http, "/metrics").await.unwrap().body;
    let received = metrics
        .lines()
        .find_map(|l| l.strip_prefix("meshwork_bytes_received_total{transport=\"webrtc\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap();
    assert!(received > 0.0, "the commands came over WebRTC");
}
