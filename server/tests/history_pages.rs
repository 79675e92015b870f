//! `FetchLog` through the real binary: with small pages and a page rate limit, a client that asks
//! for the whole history gets it over several wake-ups of the session driver (a burst of pages,
//! then one per refill), complete, in order and once, ending with `done`.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::{Duration, Instant};

use meshwork_protocol::command::{Primitive, Transform};
use meshwork_protocol::{Command, EntityId};
use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::{Client, random_signer};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_history_arrives_in_rate_limited_pages() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // 300 entries in pages of 10: 30 pages, 8 at once, then 10 a second.
    let server = ServerProcess::start(
        BIN,
        &data,
        &["--history-page", "10", "--history-per-min", "600"],
    );
    let ticket = server.ticket(BIN, &data, "editor");
    let mut editor = Client::join(&ticket, random_signer()).await.unwrap();
    let me = editor.author();
    for round in 0..3u32 {
        let spawns = (0..100)
            .map(|i| Command::Spawn {
                entity: EntityId::new(me, round * 100 + i),
                primitive: Primitive::Cube,
                transform: Transform::IDENTITY,
            })
            .collect();
        editor
            .submit_acked(spawns, Duration::from_secs(20))
            .await
            .unwrap();
    }
    let mut reader = Client::join(&ticket, random_signer()).await.unwrap();
    let started = Instant::now();
    reader.fetch_log(0).await.unwrap();
    reader
        .until(Instant::now() + Duration::from_secs(30), |s| s.history_done)
        .await
        .unwrap();
    let took = started.elapsed();
    let got: Vec<_> = reader.seen.entries.keys().copied().collect();
    assert_eq!(got.len(), 300, "the whole log, each entry once");
    let mine = editor.seen.acks.values().copied().collect::<Vec<_>>();
    assert_eq!(
        got, mine,
        "exactly the acknowledged entries, in total order"
    );
    // 22 pages after the burst at 10 a second: the answer was paced, not sent at once.
    assert!(took >= Duration::from_secs(2), "all 30 pages in {took:?}");
}
