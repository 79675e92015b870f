//! TURN: a real coturn (Debian's `coturn`; `cargo xtask ci` installs it) on loopback with a
//! REST-style shared secret. The server hands out short-lived credentials to holders of a valid
//! invite; a WebRTC client forced to relay-only candidates joins through coturn with them, and a
//! wrong or expired credential gets no relay (coturn refuses the allocation), so no connection.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::Path;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshwork_testkit::rtc::RTCIceServer;
use meshwork_testkit::rtc::{RtcClient, RtcOptions};
use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::{free_loopback_port, http, random_signer};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");
const TURNSERVER: &str = "/usr/bin/turnserver";
const SECRET: &str = "correct horse battery staple";

struct Coturn(Child);

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts coturn on `127.0.0.1:port` and waits until it answers a STUN binding request.
async fn coturn(dir: &Path, port: u16) -> Coturn {
    assert!(
        Path::new(TURNSERVER).exists(),
        "{TURNSERVER} is missing: `cargo xtask ci` installs Debian's coturn package (apt-get install coturn)"
    );
    let child = Process::new(TURNSERVER)
        .args([
            "-n",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--simple-log",
            "--log-file=stdout",
        ])
        .args([
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            "--allow-loopback-peers",
        ])
        .arg(format!("--listening-port={port}"))
        .args(["--min-port=40000", "--max-port=45000"])
        .args([
            "--use-auth-secret",
            &format!("--static-auth-secret={SECRET}"),
            "--realm=meshwork",
        ])
        .arg(format!("--userdb={}", dir.join("turndb").display()))
        .arg(format!("--pidfile={}", dir.join("turn.pid").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("coturn starts");
    let guard = Coturn(child);
    let probe = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // A STUN binding request: type 0x0001, length 0, magic cookie, 12-byte transaction id.
    let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    request.extend_from_slice(b"meshworkturn");
    let end = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 512];
    loop {
        assert!(
            Instant::now() < end,
            "coturn did not answer STUN within 20 s"
        );
        probe.send_to(&request, ("127.0.0.1", port)).await.unwrap();
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(200), probe.recv_from(&mut buf)).await
            && n >= 20
            && buf[..2] == [0x01, 0x01]
        {
            return guard;
        }
    }
}

fn turn_entry(info: &serde_json::Value) -> Option<RTCIceServer> {
    info["webrtc"]["ice_servers"]
        .as_array()?
        .iter()
        .find(|s| s["username"].is_string())
        .map(|s| RTCIceServer {
            urls: s["urls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u.as_str().unwrap().to_owned())
                .collect(),
            username: s["username"].as_str().unwrap().to_owned(),
            credential: s["credential"].as_str().unwrap().to_owned(),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_client_joins_through_coturn_and_bad_credentials_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let turn_port = free_loopback_port();
    let _coturn = coturn(dir.path(), turn_port).await;
    let data = dir.path().join("data");
    let turn_url = format!("turn:127.0.0.1:{turn_port}?transport=udp");
    let server = ServerProcess::start_with_env(
        BIN,
        &data,
        &[
            "--stun-urls",
            &format!("stun:127.0.0.1:{turn_port}"),
            "--turn-urls",
            &turn_url,
            "--turn-ttl-s",
            "600",
        ],
        &[("MESHWORK_TURN_SECRET", SECRET)],
    );
    let ticket = server.ticket(BIN, &data, "editor");

    // Without a ticket (or with a forged one) browsers get STUN only: the relay is not open to
    // anyone who can reach the API.
    let anonymous: serde_json::Value =
        serde_json::from_str(&http::get(server.http, "/api/v1/server").await.unwrap().body)
            .unwrap();
    assert!(turn_entry(&anonymous).is_none(), "{anonymous}");
    assert_eq!(
        anonymous["webrtc"]["ice_servers"][0]["urls"][0],
        format!("stun:127.0.0.1:{turn_port}")
    );
    let forged = ticket.to_text().replace("mwj1_", "mwj1_A");
    let info = http::get(server.http, &format!("/api/v1/server?ticket={forged}"))
        .await
        .unwrap()
        .body;
    assert!(turn_entry(&serde_json::from_str(&info).unwrap()).is_none());
    // With the ticket: a TURN entry whose username expires in the configured TTL.
    let info: serde_json::Value = serde_json::from_str(
        &http::get(
            server.http,
            &format!("/api/v1/server?ticket={}", ticket.to_text()),
        )
        .await
        .unwrap()
        .body,
    )
    .unwrap();
    let turn = turn_entry(&info).expect("TURN credentials for an invited browser");
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry: u64 = turn.username.split(':').next().unwrap().parse().unwrap();
    assert!(
        (now_s + 590..=now_s + 610).contains(&expiry),
        "{}",
        turn.username
    );

    // Relay-only with the handed-out credential: joins through coturn.
    let relay_only = |server: RTCIceServer| RtcOptions {
        ice_servers: vec![server],
        relay_only: true,
    };
    let mut client = RtcClient::join(
        server.http,
        &relay_only(turn.clone()),
        random_signer(),
        ticket.invite.clone(),
    )
    .await
    .unwrap();
    assert!(
        client.offer_sdp.contains("typ relay"),
        "{}",
        client.offer_sdp
    );
    assert!(
        !client.offer_sdp.contains("typ host"),
        "relay only: {}",
        client.offer_sdp
    );
    assert!(
        client
            .pump_until(Duration::from_secs(10), |c| c.conn.replica().is_synced())
            .await
            .unwrap(),
        "joined through the relay"
    );
    client.close().await;

    // A wrong password and an expired credential: coturn refuses the allocation, so there is no
    // relay candidate and no way in.
    let session = ticket.invite.claimed_session().unwrap().to_string();
    let wrong = RTCIceServer {
        credential: "not-the-password".into(),
        ..turn.clone()
    };
    let (user, pass) = meshwork_server::ice::turn_credential(SECRET, "late", now_s - 60);
    let expired = RTCIceServer {
        urls: turn.urls.clone(),
        username: user,
        credential: pass,
    };
    for (name, bad) in [("wrong", wrong), ("expired", expired)] {
        let mut c = RtcClient::prepare(&relay_only(bad), random_signer(), ticket.invite.clone())
            .await
            .unwrap();
        assert!(
            !c.offer_sdp.contains("typ relay"),
            "{name} credential got a relay: {}",
            c.offer_sdp
        );
        let joined = c
            .connect(server.http, &session, Duration::from_secs(5))
            .await;
        assert!(joined.is_err(), "{name} credential connected");
        c.close().await;
    }
}
