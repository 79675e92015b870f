//! Membership control over real QUIC with the real binary: an admin demotes an editor (every
//! member's roster says so, the demoted member's next edit is refused with the reason, a rejoin
//! with an editor invite does not undo it, a restart keeps it) and removes a member (closed as
//! kicked, with the reason); both are signed entries in the log, and counted.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::{Duration, Instant};

use meshwork_protocol::command::{Primitive, Transform};
use meshwork_protocol::wire::{CloseReason, RefusalCode};
use meshwork_protocol::{Command, Ed25519Signer, EntityId, Role};
use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::{Client, http};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");
const WAIT: Duration = Duration::from_secs(20);

async fn metric(server: &ServerProcess, name: &str) -> f64 {
    http::metric(server.http, name).await
}

fn deadline() -> Instant {
    Instant::now() + WAIT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_demotes_an_editor_and_removes_a_member() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(BIN, &data, &[]);
    let admin_api = http::Admin {
        addr: server.http,
        token: server.admin_token().unwrap(),
    };
    let (admin_ticket, editor_ticket) = (
        server.ticket(BIN, &data, "admin"),
        server.ticket(BIN, &data, "editor"),
    );
    let b_key = || Ed25519Signer::from_seed([2; 32]);
    let mut admin = Client::join(&admin_ticket, Ed25519Signer::from_seed([1; 32]))
        .await
        .unwrap();
    let mut b = Client::join(&editor_ticket, b_key()).await.unwrap();
    let mut c = Client::join(&editor_ticket, Ed25519Signer::from_seed([3; 32]))
        .await
        .unwrap();
    let cube = EntityId::new(b.author(), 1);
    b.submit_acked(
        vec![Command::Spawn {
            entity: cube,
            primitive: Primitive::Cube,
            transform: Transform::IDENTITY,
        }],
        WAIT,
    )
    .await
    .unwrap();
    admin.catch_up(1, WAIT).await.unwrap();

    // The admin demotes B: a signed entry; every member's roster says so.
    admin
        .submit_acked(
            vec![Command::SetRole {
                author: b.author(),
                role: Role::Viewer,
            }],
            WAIT,
        )
        .await
        .unwrap();
    let b_author = b.author();
    let demoted = |c: &Client| {
        c.replica()
            .members()
            .any(|m| m.author == b_author && m.role == Role::Viewer)
    };
    for m in [&mut admin, &mut b, &mut c] {
        let end = deadline();
        while !demoted(m) {
            m.next(end.saturating_duration_since(Instant::now()))
                .await
                .unwrap();
        }
    }
    assert_eq!(b.role(), Role::Viewer, "B's own view of its role");

    // B's next edit is refused with the reason.
    b.submit(vec![Command::Despawn { entity: cube }])
        .await
        .unwrap();
    b.until(deadline(), |s| !s.refusals.is_empty())
        .await
        .unwrap();
    let refusal = &b.seen.refusals[0];
    assert_eq!(refusal.code, RefusalCode::Permission);
    assert!(refusal.message.contains("viewer"), "{}", refusal.message);

    // B comes back with an editor invite: still a viewer.
    drop(b);
    let b = Client::join(&editor_ticket, b_key()).await.unwrap();
    assert_eq!(b.welcome.role, Role::Viewer, "the admin's decision stands");

    // The API lists the members as they now stand.
    let session = editor_ticket.invite.claimed_session().unwrap().to_string();
    let members = admin_api.members(&session).await.unwrap();
    let of = |a: meshwork_protocol::AuthorId| {
        members
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["author"] == a.0)
            .cloned()
            .unwrap()
    };
    assert_eq!(of(b.author())["role"], "viewer");
    assert_eq!(of(b.author())["role_set_by_admin"], true);
    assert_eq!(of(admin.author())["role"], "admin");
    assert_eq!(of(c.author())["connected"], true);

    // The admin removes C: C's connection is closed as kicked, with the reason.
    admin
        .submit_acked(
            vec![Command::Kick {
                author: c.author(),
                reason: "this review is for the studio only".into(),
                revoke_invite: false,
            }],
            WAIT,
        )
        .await
        .unwrap();
    let end = deadline();
    while c.seen.closed.is_none() {
        if c.next(end.saturating_duration_since(Instant::now()))
            .await
            .is_err()
        {
            break;
        }
    }
    let closed = c.seen.closed.clone().expect("C was told it was removed");
    assert_eq!(closed.reason, CloseReason::Kicked);
    assert!(closed.message.contains("studio only"), "{}", closed.message);
    assert_eq!(
        metric(
            &server,
            "meshwork_membership_changes_total{change=\"role_changed\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &server,
            "meshwork_membership_changes_total{change=\"kicked\"}"
        )
        .await,
        1.0
    );
    let members = admin_api.members(&session).await.unwrap();
    assert!(
        members
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["author"] == c.author().0 && m["connected"] == false),
        "{members}"
    );

    // A restart (SIGKILL) replays the log: B is still a viewer, B's cube (made as an editor)
    // is still there.
    drop(b);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let server = ServerProcess::start(BIN, &data, &[]);
    let editor_ticket = server.ticket(BIN, &data, "editor");
    let mut b = Client::join(&editor_ticket, b_key()).await.unwrap();
    assert_eq!(b.welcome.role, Role::Viewer);
    b.catch_up(3, WAIT).await.unwrap();
    assert!(b.replica().scene().entities.contains_key(&cube));
}
