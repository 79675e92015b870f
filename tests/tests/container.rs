//! The runtime image in a real Docker engine. Run by `cargo xtask ci`'s container step, which
//! installs docker.io, builds the static binary and starts a private `dockerd`, then runs this
//! test with `MESHWORK_DOCKER_HOST` and `MESHWORK_STATIC_BINARY` set:
//! build the runtime stage of `deploy/Dockerfile` from that binary, run it with host networking
//! on free ports, wait for its HEALTHCHECK, scrape it with a real Prometheus, create a session
//! and join it with the native client, `docker stop` it (exit 0), and check that a second
//! container on the same volume keeps the data.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use glam::Vec3;
use meshwork_protocol::wire::JoinTicket;
use meshwork_protocol::{Command as Edit, EntityId};
use meshwork_testkit::{Client, http, random_signer};

fn root() -> PathBuf {
    meshwork_testkit::repo_root()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from)
        .unwrap_or_else(|e| panic!("{}: {e} (the wasm step builds it)", from.display()))
    {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn docker(args: &[&str]) -> Output {
    let host = std::env::var("MESHWORK_DOCKER_HOST").unwrap();
    Command::new("docker")
        .env("DOCKER_HOST", host)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn wait_healthy(name: &str) {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let state = ok(
            &docker(&["inspect", "-f", "{{.State.Health.Status}}", name]),
            "inspect",
        );
        if state == "healthy" {
            return;
        }
        assert!(
            Instant::now() < end,
            "{name} never became healthy ({state}):\n{}",
            ok(&docker(&["logs", name]), "logs")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn run(name: &str, volume: &str, http: u16, quic: u16) {
    ok(
        &docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "host",
            "-v",
            &format!("{volume}:/data"),
            "-e",
            &format!("MESHWORK_HTTP_ADDR=127.0.0.1:{http}"),
            "-e",
            &format!("MESHWORK_QUIC_ADDR=127.0.0.1:{quic}"),
            "-e",
            "MESHWORK_RTC_ADDR=127.0.0.1:0",
            "meshwork-server:ci",
        ]),
        "docker run",
    );
    wait_healthy(name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine: run by `cargo xtask ci` (container step)"]
async fn the_image_runs_serves_and_keeps_its_data() {
    let binary =
        PathBuf::from(std::env::var("MESHWORK_STATIC_BINARY").expect("set by cargo xtask ci"));
    // The runtime stage of deploy/Dockerfile, fed from the host-built binary (no image pulls).
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let runtime = &dockerfile[dockerfile
        .find("FROM scratch AS runtime")
        .expect("a runtime stage")..];
    let build = root().join("deploy/build");
    std::fs::create_dir_all(build.join("data")).unwrap();
    std::fs::copy(&binary, build.join("meshwork-server")).unwrap();
    // The editor bundle built by the wasm step of `cargo xtask ci`.
    let web = build.join("web");
    let _ = std::fs::remove_dir_all(&web);
    copy_dir(&root().join("client-web/dist"), &web);
    let test_dockerfile = build.join("Dockerfile.ci");
    std::fs::write(
        &test_dockerfile,
        format!("FROM scratch AS binary\nCOPY deploy/build/meshwork-server /out/meshwork-server\nCOPY deploy/build/data /out/data\nCOPY deploy/build/web /out/web\n\n{runtime}"),
    )
    .unwrap();
    ok(
        &docker(&[
            "build",
            "-q",
            "-f",
            test_dockerfile.to_str().unwrap(),
            "-t",
            "meshwork-server:ci",
            ".",
        ]),
        "docker build",
    );

    let volume = format!("meshwork-ci-{}", std::process::id());
    let (http_port, quic_port) = (
        meshwork_testkit::free_loopback_port(),
        meshwork_testkit::free_loopback_port(),
    );
    let _ = docker(&["rm", "-f", "mw-ci-1", "mw-ci-2"]);
    run("mw-ci-1", &volume, http_port, quic_port);
    let http_addr = format!("127.0.0.1:{http_port}").parse().unwrap();

    // Admin token from the first start's log; a session through the API; an invite; a join.
    let logs = ok(&docker(&["logs", "mw-ci-1"]), "logs");
    let token = logs
        .lines()
        .find_map(|l| l.trim().strip_prefix("admin token:"))
        .unwrap()
        .trim()
        .to_owned();
    let admin = http::Admin {
        addr: http_addr,
        token: token.clone(),
    };
    // The image serves the browser editor at /.
    let index = http::get(http_addr, "/").await.unwrap();
    assert_eq!(index.status, 200);
    assert!(index.body.contains("<div id=\"app\">"), "{}", index.body);
    let id = admin.create_session("container").await.unwrap();
    let ticket = JoinTicket::from_text(&admin.invite(&id, "editor").await.unwrap()).unwrap();
    let mut c = Client::join(&ticket, random_signer()).await.unwrap();
    let cmd = Edit::Translate {
        entity: EntityId::new(c.author(), 1),
        delta: Vec3::X,
    };
    c.submit_acked(vec![cmd], Duration::from_secs(10))
        .await
        .unwrap();
    drop(c);

    // A real Prometheus scrapes the container.
    let dir = tempfile::tempdir().unwrap();
    let prom_port = meshwork_testkit::free_loopback_port();
    std::fs::write(
        dir.path().join("p.yml"),
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: meshwork\n    static_configs:\n      - targets: ['{http_addr}']\n"),
    )
    .unwrap();
    let mut prom = Command::new("/usr/bin/prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("p.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let prom_addr = format!("127.0.0.1:{prom_port}").parse().unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http::get(
            prom_addr,
            "/api/v1/query?query=sum(meshwork_commands_appended_total)",
        )
        .await
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.body)
            && v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|x| x.parse::<f64>().ok())
                .is_some_and(|x| x >= 1.0)
        {
            break;
        }
        assert!(
            Instant::now() < end,
            "Prometheus never saw the container's commands"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = prom.kill();
    let _ = prom.wait();

    // docker stop → SIGTERM → clean exit.
    ok(&docker(&["stop", "-t", "15", "mw-ci-1"]), "docker stop");
    assert_eq!(
        ok(
            &docker(&["inspect", "-f", "{{.State.ExitCode}}", "mw-ci-1"]),
            "inspect"
        ),
        "0"
    );

    // A second container on the same volume: same data (no new token, the session is there).
    run("mw-ci-2", &volume, http_port, quic_port);
    let logs2 = ok(&docker(&["logs", "mw-ci-2"]), "logs");
    assert!(
        logs2.contains("created on first start"),
        "the data dir survived:\n{logs2}"
    );
    let sessions = admin.sessions().await.unwrap();
    let session = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == id.as_str())
        .unwrap();
    assert_eq!(
        session["log_entries"], 1,
        "the session and its entry survived: {sessions}"
    );
    ok(&docker(&["stop", "mw-ci-2"]), "docker stop");
    let _ = docker(&["rm", "-f", "mw-ci-1", "mw-ci-2"]);
    let _ = docker(&["volume", "rm", &volume]);
    let _ = std::fs::remove_file(Path::new(&test_dockerfile));
}
