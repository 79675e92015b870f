//! Starting an in-process server on loopback for the integration tests.
#![allow(dead_code, reason = "each test binary uses part of the helpers")]

use std::time::{Duration, Instant};

use meshwork_protocol::Role;
use meshwork_protocol::wire::JoinTicket;
use meshwork_server::config::Settings;
use meshwork_server::data::DataDir;
use meshwork_server::{Listeners, ServerHandle};

/// A running server and the temporary data directory it owns.
pub struct TestServer {
    pub server: ServerHandle,
    pub dir: tempfile::TempDir,
    pub admin_token: String,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings {
            data_dir: dir.path().to_path_buf(),
            ..Settings::default()
        };
        settings.http_addr = "127.0.0.1:0".parse().unwrap();
        settings.quic_addr = "127.0.0.1:0".parse().unwrap();
        settings.rtc_addr = "127.0.0.1:0".parse().unwrap();
        tweak(&mut settings);
        let data = DataDir::open_or_init(dir.path(), &[]).expect("data dir");
        let admin_token = data
            .new_admin_token
            .clone()
            .expect("fresh data dir makes a token");
        let listeners = Listeners::bind(&settings).expect("bind");
        let server = meshwork_server::start(settings, listeners, data)
            .await
            .expect("start");
        Self {
            server,
            dir,
            admin_token,
        }
    }

    pub fn ticket(&self, role: Role) -> JoinTicket {
        self.server
            .ticket(role, now_ms() + 3_600_000)
            .expect("ticket")
    }

    pub fn rejected(&self, reason: &str) -> u64 {
        self.server
            .metrics
            .commands_rejected_total
            .with_label_values(&[reason])
            .get()
    }
}

pub fn now_ms() -> u64 {
    meshwork_server::driver::now_ms()
}

pub fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// Polls `check` until it holds or the deadline passes.
pub async fn eventually(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let end = deadline(secs);
    while !check() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
