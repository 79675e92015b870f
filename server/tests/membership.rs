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

/// The operator with the admin token, who holds no member key, changes a role and removes a
/// member through the HTTP API: the server signs each change as a member of its own (its key
/// announced in every roster), the changes take effect as an in-session admin's do, and
/// `verify-log` proves the log with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_changes_a_role_and_removes_a_member() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(BIN, &data, &[]);
    let token = server.admin_token().unwrap();
    let bearer = format!("Bearer {token}");
    let ticket = server.ticket(BIN, &data, "editor");
    let session = ticket.invite.claimed_session().unwrap().to_string();
    let mut b = Client::join(&ticket, Ed25519Signer::from_seed([2; 32]))
        .await
        .unwrap();
    let mut c = Client::join(&ticket, Ed25519Signer::from_seed([3; 32]))
        .await
        .unwrap();
    let cube = b.spawn_cube_acked(1, WAIT).await.unwrap();
    let api = |method: &'static str, path: String, body: &'static str| {
        let bearer = bearer.clone();
        let addr = server.http;
        async move {
            http::request(
                addr,
                method,
                &path,
                &[
                    ("Authorization", &bearer),
                    ("Content-Type", "application/json"),
                ],
                body,
            )
            .await
            .unwrap()
        }
    };

    // Without the token: refused.
    let r = http::request(
        server.http,
        "PUT",
        &format!("/api/v1/sessions/{session}/members/{}/role", b.author().0),
        &[("Content-Type", "application/json")],
        r#"{"role":"viewer"}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    // An unknown member: 404.
    let r = api(
        "PUT",
        format!("/api/v1/sessions/{session}/members/999/role"),
        r#"{"role":"viewer"}"#,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);

    // Demote B.
    let r = api(
        "PUT",
        format!("/api/v1/sessions/{session}/members/{}/role", b.author().0),
        r#"{"role":"viewer"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let b_author = b.author();
    for m in [&mut b, &mut c] {
        let end = deadline();
        while !m
            .replica()
            .members()
            .any(|x| x.author == b_author && x.role == Role::Viewer)
        {
            m.next(end.saturating_duration_since(Instant::now()))
                .await
                .unwrap();
        }
    }
    assert_eq!(b.role(), Role::Viewer);
    b.submit(vec![Command::Despawn { entity: cube }])
        .await
        .unwrap();
    b.until(deadline(), |s| !s.refusals.is_empty())
        .await
        .unwrap();
    assert_eq!(b.seen.refusals[0].code, RefusalCode::Permission);
    // The replicas hold the server's entry, verified against the roster (no resync).
    assert_eq!(b.seen.resyncs, 0, "{:?}", b.seen.resync_reasons);

    // Remove C, with a reason.
    let r = api(
        "DELETE",
        format!(
            "/api/v1/sessions/{session}/members/{}?reason=left%20the%20studio",
            c.author().0
        ),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
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
    assert!(
        closed.message.contains("left the studio"),
        "{}",
        closed.message
    );
    // Not a member's own kind of change: the server cannot be demoted through itself.
    let members = http::Admin {
        addr: server.http,
        token: token.clone(),
    }
    .members(&session)
    .await
    .unwrap();
    let server_member = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "admin")
        .cloned()
        .expect("the server is listed as an admin member");
    let r = api(
        "PUT",
        format!(
            "/api/v1/sessions/{session}/members/{}/role",
            server_member["author"]
        ),
        r#"{"role":"viewer"}"#,
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);

    // Offline, the log with the server's entries verifies.
    drop((b, c));
    assert!(server.terminate(Duration::from_secs(10)).success());
    let out = std::process::Command::new(BIN)
        .args(["verify-log", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("3 entries"), "{text}");
}
