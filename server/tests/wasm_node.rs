//! The wasm protocol package end to end: Node loads the wasm-bindgen build of
//! `client-web/wasm`, joins the real server over the WebSocket fallback, spawns an entity and
//! applies the server's echo; its replica's state hash equals the server's scene hash.
//! Run by `cargo xtask ci` (wasm step), which builds the package and sets `MESHWORK_WASM_PKG`.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use meshwork_testkit::http;
use meshwork_testkit::server_process::ServerProcess;

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the wasm package: run by `cargo xtask ci` (wasm step)"]
async fn node_joins_through_the_wasm_package() {
    let pkg = std::env::var("MESHWORK_WASM_PKG").expect("set by cargo xtask ci");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(BIN, &data, &[]);
    let token = server.admin_token().unwrap();
    let ticket = server.ticket(BIN, &data, "editor");
    let session = ticket.invite.claimed_session().unwrap();
    let url = format!("ws://{}/api/v1/sessions/{session}/ws", server.http);
    let report = meshwork_testkit::node_json(
        "join-over-websocket.mjs",
        &["--experimental-websocket"],
        &[&url, &ticket.to_text(), &pkg],
    )
    .await;
    assert_eq!(report["entities"], 1);
    assert_eq!(report["triangles"], 12, "a cube is 6 quads = 12 triangles");
    let v = http::Admin {
        addr: server.http,
        token,
    }
    .sessions()
    .await
    .unwrap();
    assert_eq!(
        report["hash"], v[0]["scene_hash"],
        "the browser-side replica equals the server's scene"
    );
}
