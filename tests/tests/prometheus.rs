//! A real Prometheus (Debian's `prometheus` package; `cargo xtask ci` installs it) scrapes the
//! server's `/metrics`, and its query API sees the commands; `promtool check metrics` finds no
//! problem in the exposition.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::io::Write as _;
use std::process::{Child, Command as Process, Stdio};
use std::time::Duration;

use common::{TestServer, deadline};
use glam::Vec3;
use meshwork_protocol::{Command, EntityId, Role};
use meshwork_testkit::{Client, http, random_signer};

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tool(name: &str) -> String {
    let path = format!("/usr/bin/{name}");
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: `cargo xtask ci` installs Debian's prometheus package (apt-get install prometheus)"
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_command_metrics() {
    let t = TestServer::start().await;
    let mut c = Client::join(&t.ticket(Role::Editor), random_signer())
        .await
        .unwrap();
    let cmds = (0..5)
        .map(|i| Command::Translate {
            entity: EntityId::new(c.author(), i),
            delta: Vec3::X,
        })
        .collect();
    let sent = c.submit(cmds).await.unwrap();
    let last = sent.last().unwrap().decode_body().unwrap().seq;
    c.until(deadline(10), |s| s.acks.contains_key(&last))
        .await
        .unwrap();

    // The exposition is well-formed by Prometheus's own linter.
    let metrics = http::get(t.server.http_addr, "/metrics").await.unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .body
            .contains("meshwork_commands_appended_total{kind=\"translate\"} 5"),
        "{}",
        metrics.body
    );
    // The join's snapshot was counted, before and after compression, on its transport.
    for stage in ["before", "after"] {
        let counted = metrics.body.lines().any(|l| {
            l.starts_with("meshwork_compression_bytes_total{")
                && l.contains("stream=\"snapshot\"")
                && l.contains("transport=\"quic\"")
                && l.contains(&format!("stage=\"{stage}\""))
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) > Some(0.0)
        });
        assert!(counted, "snapshot {stage}: {}", metrics.body);
    }
    let mut lint = Process::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(metrics.body.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool: {findings}"
    );

    // A real Prometheus scraping it.
    let dir = tempfile::tempdir().unwrap();
    let port = meshwork_testkit::free_loopback_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: meshwork\n    static_configs:\n      - targets: ['{}']\n",
            t.server.http_addr
        ),
    )
    .unwrap();
    let prom = KillOnDrop(
        Process::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let prom_addr = format!("127.0.0.1:{port}").parse().unwrap();
    let query = "/api/v1/query?query=sum(meshwork_commands_appended_total)";
    let end = deadline(60);
    let value = loop {
        if let Ok(r) = http::get(prom_addr, query).await
            && r.status == 200
        {
            let json: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            if let Some(v) = json["data"]["result"][0]["value"][1].as_str() {
                break v.parse::<f64>().unwrap();
            }
        }
        assert!(
            std::time::Instant::now() < end,
            "Prometheus never returned the metric"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(value >= 5.0, "meshwork_commands_appended_total = {value}");
    drop(prom);
}
