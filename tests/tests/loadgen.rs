//! The load generator's `--join-only --populate N` against a real server on loopback: it reaches
//! the population through the server's rate limit, and fails, saying why, when the server
//! refuses part of it for another reason (it must never time a smaller session than asked).
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::process::Output;

use common::TestServer;
use meshwork_protocol::Role;

async fn populate(t: &TestServer, role: Role, n: u32) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_meshwork-loadgen"))
        .args(["--join-only", "--populate", &n.to_string(), "--invite"])
        .arg(t.ticket(role).to_text())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_only_reaches_its_population_through_the_rate_limit() {
    // A burst far below the population: most of the first batches come back rate-limited and
    // are sent again.
    let t = TestServer::start_with(|s| {
        s.rate_per_s = 200;
        s.burst = 40;
    })
    .await;
    let out = populate(&t, Role::Editor, 300).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("join of a 300-entity session"),
        "{}",
        text(&out)
    );
    assert!(
        t.rejected("rate_limited") > 0,
        "the limit was met on the way"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_only_fails_and_says_so_when_the_server_refuses_the_population() {
    let t = TestServer::start().await;
    // A viewer may join but not spawn: every spawn is refused for its role.
    let out = populate(&t, Role::Viewer, 10).await;
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the server refused a spawn") && err.contains("fewer than 10 entities"),
        "{}",
        text(&out)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("join of a"),
        "no timing of a smaller session: {}",
        text(&out)
    );
}
