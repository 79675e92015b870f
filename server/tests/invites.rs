//! Invite control with the real binary over QUIC: an invite minted through the API for one
//! person admits exactly one key (which can rejoin), a second key is refused with the reason;
//! a revoked invite is refused with its reason, its members included; an expired one too; one
//! minted without its own limit admits the server's `--max-keys-per-invite`; and all of it
//! holds after a SIGKILL and a restart (the records are in the store). Refusals are counted.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::Duration;

use meshwork_protocol::Ed25519Signer;
use meshwork_protocol::wire::{JoinRefusal, JoinTicket};
use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::{Client, ClientError, http, random_signer};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");

async fn refused(ticket: &JoinTicket, key: Ed25519Signer) -> (JoinRefusal, String) {
    match Client::join(ticket, key).await {
        Err(ClientError::Refused(r)) => (r.reason, r.message),
        Ok(_) => panic!("the join was admitted"),
        Err(e) => panic!("not a refusal: {e}"),
    }
}

async fn metric(server: &ServerProcess, name: &str) -> f64 {
    http::metric(server.http, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_admit_whom_they_may_and_revocation_and_expiry_hold_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let extra = ["--max-keys-per-invite", "2"];
    let mut server = ServerProcess::start(BIN, &data, &extra);
    let admin = http::Admin {
        addr: server.http,
        token: server.admin_token().unwrap(),
    };
    let session = admin.sessions().await.unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mint = |body: serde_json::Value| {
        let admin = &admin;
        let session = session.clone();
        async move {
            let v = admin.mint(&session, body).await.unwrap();
            (
                JoinTicket::from_text(v["ticket"].as_str().unwrap()).unwrap(),
                v["invite_id"].as_str().unwrap().to_owned(),
            )
        }
    };
    let key = |seed: u8| Ed25519Signer::from_seed([seed; 32]);

    // For one person.
    let (single, single_id) = mint(serde_json::json!({"role": "editor", "max_uses": 1})).await;
    let first = Client::join(&single, key(1)).await.unwrap();
    let (reason, message) = refused(&single, key(2)).await;
    assert_eq!(reason, JoinRefusal::InviteUsedUp);
    assert!(message.contains("one person"), "{message}");
    drop(first);
    Client::join(&single, key(1))
        .await
        .expect("the one it admitted rejoins");

    // Without its own limit: the server's (2 here).
    let (open, open_id) = mint(serde_json::json!({"role": "editor"})).await;
    let a = Client::join(&open, key(3)).await.unwrap();
    Client::join(&open, key(4)).await.unwrap();
    assert_eq!(
        refused(&open, random_signer()).await.0,
        JoinRefusal::InviteUsedUp
    );

    // Revoked: no one, a member it admitted included.
    assert_eq!(admin.revoke(&session, &open_id).await.unwrap(), 204);
    drop(a);
    let (reason, message) = refused(&open, key(3)).await;
    assert_eq!(reason, JoinRefusal::InviteRevoked);
    assert!(message.contains("revoked"), "{message}");
    assert_eq!(admin.revoke(&session, "not-hex").await.unwrap(), 400);

    // Expired.
    let (short, _) = mint(serde_json::json!({"role": "viewer", "ttl_s": 1})).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let reason = loop {
        // One key: a known key rejoins without using the invite up.
        match Client::join(&short, key(9)).await {
            Err(ClientError::Refused(r)) => break r.reason,
            Ok(_) => {
                assert!(std::time::Instant::now() < deadline, "never expired");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(reason, JoinRefusal::InviteExpired);
    assert!(
        metric(
            &server,
            "meshwork_commands_rejected_total{reason=\"invite_used_up\"}"
        )
        .await
            >= 2.0
    );
    assert!(
        metric(
            &server,
            "meshwork_commands_rejected_total{reason=\"invite_revoked\"}"
        )
        .await
            >= 1.0
    );

    // The API lists them with their uses and revocation.
    let listed = admin.invites(&session).await.unwrap();
    let of = |id: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["invite_id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(of(&single_id)["uses"], 1);
    assert_eq!(of(&single_id)["max_uses"], 1);
    assert_eq!(of(&open_id)["uses"], 2);
    assert!(of(&open_id)["revoked_at_ms"].is_u64());

    // SIGKILL and restart: the store kept it all.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let server = ServerProcess::start(BIN, &data, &extra);
    let ticket = |t: &JoinTicket| JoinTicket {
        quic_addr: server.quic.clone(),
        ..t.clone()
    };
    assert_eq!(
        refused(&ticket(&single), key(2)).await.0,
        JoinRefusal::InviteUsedUp
    );
    assert_eq!(
        refused(&ticket(&open), key(3)).await.0,
        JoinRefusal::InviteRevoked
    );
    Client::join(&ticket(&single), key(1))
        .await
        .expect("still rejoins after the restart");
}
