//! Reconnecting over real QUIC with the real binary: a client keeps editing while its path is
//! cut, and separately while the server is killed (SIGKILL) and restarted. It reconnects by
//! itself (`ClientConnection::reconnect`, a `Resume` from its replica's position), its offline
//! edits are judged like any concurrent entry — one accepted, one refused as a conflict with
//! another client's concurrent delete, with the reason — nothing acknowledged is lost or
//! duplicated, and every replica ends at the server's hash.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "test code"
)]

use std::time::{Duration, Instant};

use meshwork_protocol::wire::{JoinTicket, RefusalCode};
use meshwork_protocol::{AuthorId, Command, Ed25519Signer, EntityId, Primitive, Transform};
use meshwork_testkit::Client;
use meshwork_testkit::http;
use meshwork_testkit::server_process::ServerProcess;

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");
const WAIT: Duration = Duration::from_secs(10);

fn cube(entity: EntityId) -> Command {
    Command::Spawn {
        entity,
        primitive: Primitive::Cube,
        transform: Transform::IDENTITY,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Reads until `done` holds or the deadline passes.
async fn read_until(c: &mut Client, done: impl Fn(&Client) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done(c) {
        assert!(
            Instant::now() < deadline,
            "timed out: {:?}",
            c.seen.refusals
        );
        let _ = c.next(Duration::from_millis(200)).await;
    }
}

/// A (whose connection is down) deletes `gone` — already deleted by B — and adds `fresh`
/// while offline, then reconnects to `quic`; returns once both are judged.
async fn offline_edits_then_resume(
    a: &mut Client,
    quic: &str,
    cert: [u8; 32],
    gone: EntityId,
    fresh: EntityId,
) {
    let offline = a
        .submit_kept(vec![Command::Despawn { entity: gone }, cube(fresh)])
        .await
        .unwrap();
    assert_eq!(a.unacked(), 2, "kept while offline");
    let seqs: Vec<u64> = offline
        .iter()
        .map(|e| e.decode_body().unwrap().seq)
        .collect();
    a.reconnect(quic, cert).await.unwrap();
    read_until(a, |c| c.unacked() == 0).await;
    let refusal = a
        .seen
        .refusals
        .iter()
        .find(|r| r.seq == seqs[0])
        .unwrap_or_else(|| {
            panic!(
                "the conflicting delete is refused: {:?} acks {:?} seqs {seqs:?}",
                a.seen.refusals, a.seen.acks
            )
        });
    assert_eq!(refusal.code, RefusalCode::Conflict, "{}", refusal.message);
    assert!(!refusal.message.is_empty(), "with a reason to show");
    assert!(a.seen.acks.contains_key(&seqs[1]), "the add is accepted");
}

async fn scene(server: &ServerProcess, token: &str) -> (u64, String) {
    http::Admin {
        addr: server.http,
        token: token.to_owned(),
    }
    .scene()
    .await
    .unwrap()
}

async fn converge(server: &ServerProcess, token: &str, clients: &mut [&mut Client]) {
    let (position, hash) = scene(server, token).await;
    for c in clients.iter_mut() {
        c.catch_up(position, WAIT).await.unwrap();
        read_until(c, |c| c.replica().scene().position == position).await;
        assert_eq!(hex(&c.replica().scene().state_hash()), hash);
    }
}

async fn metric(server: &ServerProcess, name: &str) -> f64 {
    http::metric(server.http, name).await
}

/// A, back on `server` after its offline edits (see [`offline_edits_then_resume`]), was caught
/// up by a delta from its position (not a snapshot); both replicas end at the server's hash
/// holding x1 and x3 only: nothing lost, nothing twice.
async fn resumed_and_converged(
    server: &ServerProcess,
    token: &str,
    [a, b]: [&mut Client; 2],
    [x1, x2, x3]: [EntityId; 3],
    cert: [u8; 32],
) {
    offline_edits_then_resume(a, &server.quic, cert, x2, x3).await;
    assert_eq!(
        metric(server, "meshwork_resumes_total").await,
        1.0,
        "caught up by a delta from its position (after a restart too: the replay rebuilds the \
         window)"
    );
    converge(server, token, &mut [&mut *a, &mut *b]).await;
    let ids: Vec<EntityId> = a.replica().scene().entities.keys().copied().collect();
    assert_eq!(ids, vec![x1, x3], "nothing lost, nothing twice");
}

/// A joins and adds x1 and x2 (acknowledged); x3 is the id of its next cube.
async fn editor_with_two_cubes(ticket: &JoinTicket) -> (Client, [EntityId; 3]) {
    let mut a = Client::join(ticket, Ed25519Signer::from_seed([1; 32]))
        .await
        .unwrap();
    let me: AuthorId = a.author();
    let ids = [1, 2, 3].map(|n| EntityId::new(me, n));
    a.submit_kept(vec![cube(ids[0]), cube(ids[1])])
        .await
        .unwrap();
    read_until(&mut a, |c| c.unacked() == 0).await;
    (a, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_off_keeps_editing_and_resumes_on_the_same_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(BIN, &data, &[]);
    let token = server.admin_token().unwrap();
    let ticket = server.ticket(BIN, &data, "editor");
    let (mut a, [x1, x2, x3]) = editor_with_two_cubes(&ticket).await;
    let mut b = Client::join(&ticket, Ed25519Signer::from_seed([2; 32]))
        .await
        .unwrap();
    converge(&server, &token, &mut [&mut a, &mut b]).await;

    // The path is cut; B deletes x2 meanwhile.
    a.dropped();
    b.submit_acked(vec![Command::Despawn { entity: x2 }], WAIT)
        .await
        .unwrap();
    resumed_and_converged(
        &server,
        &token,
        [&mut a, &mut b],
        [x1, x2, x3],
        ticket.cert_sha256,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_keeps_editing_through_a_server_kill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(BIN, &data, &[]);
    let token = server.admin_token().unwrap();
    let ticket = server.ticket(BIN, &data, "editor");
    let (mut a, [x1, x2, x3]) = editor_with_two_cubes(&ticket).await;

    // SIGKILL, then a restart on the same store (a new port: tests bind port 0).
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    a.dropped();
    let server = ServerProcess::start(BIN, &data, &[]);
    let ticket = server.ticket(BIN, &data, "editor");
    let mut b = Client::join(&ticket, Ed25519Signer::from_seed([2; 32]))
        .await
        .unwrap();
    b.catch_up(2, WAIT).await.unwrap();
    b.submit_acked(vec![Command::Despawn { entity: x2 }], WAIT)
        .await
        .unwrap();
    resumed_and_converged(
        &server,
        &token,
        [&mut a, &mut b],
        [x1, x2, x3],
        ticket.cert_sha256,
    )
    .await;
}
