//! Undo across a restart of the real `meshwork-server` binary: an editor adds and moves a cube,
//! the server stops (SIGTERM) and starts again on the same data dir, the history still lists
//! both steps with their (checkpoint) times, and the editor's undo, after rejoining with the
//! same key, reverts the move made before the restart.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::{Duration, Instant};

use glam::Vec3;
use meshwork_protocol::{Command, Ed25519Signer, EntityId, Primitive, Transform};
use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::{Client, http};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");

async fn history(server: &ServerProcess, ticket: &str, session: &str) -> serde_json::Value {
    let r = http::request(
        server.http,
        "GET",
        &format!("/api/v1/sessions/{session}/history?limit=10"),
        &[("X-Meshwork-Ticket", ticket)],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undo_after_a_restart_reverts_the_step_made_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(BIN, &data, &[]);
    let ticket = server.ticket(BIN, &data, "editor");
    let session = ticket.invite.claimed_session().unwrap().to_string();
    let seed = [0x42; 32];
    let mut client = Client::join(&ticket, Ed25519Signer::from_seed(seed))
        .await
        .unwrap();
    let entity = EntityId::new(client.author(), 1);
    client
        .submit_acked(
            vec![
                Command::Spawn {
                    entity,
                    primitive: Primitive::Cube,
                    transform: Transform::IDENTITY,
                },
                Command::Translate {
                    entity,
                    delta: Vec3::new(2.0, 0.0, 0.0),
                },
            ],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let before = history(&server, &ticket.to_text(), &session).await;
    let steps = before["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{before}");
    assert_eq!(steps[0]["label"], "move");
    assert_eq!(
        steps[0]["at_checkpoint"], false,
        "live: the step's own time"
    );

    server.signal_term();
    assert!(server.wait_exit(Duration::from_secs(10)).success());
    let server = ServerProcess::start(BIN, &data, &[]);

    let after = history(&server, &ticket.to_text(), &session).await;
    let steps = after["steps"].as_array().unwrap();
    assert_eq!(
        steps
            .iter()
            .map(|s| s["label"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["move", "add"],
        "the history is rebuilt from the log: {after}"
    );
    let was = before["steps"][0]["at_ms"].as_u64().unwrap();
    let now = steps[0]["at_ms"].as_u64().unwrap();
    assert_eq!(steps[0]["at_checkpoint"], true, "{after}");
    assert!(
        now >= was && now - was < 15_000,
        "the checkpoint time bounds the step's time: {was} then {now}"
    );

    // The same key rejoins (a new ticket: the restarted server listens on new ports) as the
    // same author; its undo reverts the move made before.
    let ticket = server.ticket(BIN, &data, "editor");
    let mut client = Client::join(&ticket, Ed25519Signer::from_seed(seed))
        .await
        .unwrap();
    assert_eq!(EntityId::new(client.author(), 1), entity);
    client
        .submit_acked(vec![Command::Undo { step: None }], Duration::from_secs(10))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let x = client
            .replica()
            .scene()
            .entities
            .get(&entity)
            .map(|e| e.transform.translation.x);
        if x == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the undo never showed: x = {x:?}"
        );
        let _ = client.next(Duration::from_millis(20)).await;
    }
    assert!(
        client.seen.refusals.is_empty(),
        "{:?}",
        client.seen.refusals
    );
    let last = history(&server, &ticket.to_text(), &session).await;
    assert_eq!(last["steps"][0]["label"], "move");
    assert_eq!(last["steps"][0]["undone"], true, "{last}");
    assert_eq!(last["steps"][0]["redoable"], true);
}
