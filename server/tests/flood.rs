//! The server under attack, real binary on loopback: 16 honest clients edit at 90 commands a
//! second each, first alone (the baseline), then while four attackers run at once:
//!
//! - **malformed**: garbage frames, many per connection, over connections it opens again as
//!   soon as the server closes one (bad payloads, oversized headers, messages out of phase);
//! - **rate flood**: a joined editor submitting valid, signed commands as fast as it can sign
//!   (paced at the connection: `submit_paced`);
//! - **resync/history loop**: a joined member asking for `Resync` and `FetchLog` in a loop;
//! - **half-open**: connections that finish QUIC but never send a whole first frame (half of
//!   them never even open the stream).
//!
//! The honest clients' p99 submit→echo stays within twice the baseline, none of them is closed
//! and every one of their commands comes back; the server's RSS is sampled throughout; every
//! attack shows in `meshwork_commands_rejected_total` under its own reason.
//!
//! Everyone shares the server's two cores here, so what the clients themselves cost is kept out
//! of the measurement: the attackers run on one thread at the lowest CPU priority (`renice
//! 19`), and no client keeps a replica (`Client::keep_replica`: sixteen replicas verifying every
//! entry took 1.4 of the 2 cores, three times the server's share). The honest clients still
//! sign, submit and watch for their own entries in the server's fan-out; the server's work for
//! every attacker frame runs at normal priority. Scale: `MESHWORK_FLOOD_FRAMES` (default 100,000; 50,000 in a debug build),
//! `MESHWORK_FLOOD_HALF_OPEN` (default 1,000; 300 in a debug build), `MESHWORK_FLOOD_RATE`
//! (honest commands a second each: 90, or 10 in a debug build). The acceptance run, whose figures are in docs/benchmarks.md, is optimized:
//! `MESHWORK_FLOOD_FRAMES=1000000 cargo test --release -p meshwork-server --test flood --
//! --nocapture`.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "test code: a failed unwrap is a failed test; report arithmetic on small counts"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use glam::Vec3;
use meshwork_protocol::command::{Primitive, Transform};
use meshwork_protocol::wire::{ClientMsg, JoinTicket, Resync, ServerMsg};
use meshwork_protocol::{Command, CommandId, EntityId, to_frame};
use meshwork_testkit::server_process::ServerProcess;
use meshwork_testkit::{Client, ClientError, client_endpoint, http, open, random_signer, resolve};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-server");
const HONEST: usize = 16;
const BASELINE: Duration = Duration::from_secs(14);
/// Long enough for the half-open connections to reach the server's 10 s first-frame deadline.
const UNDER_ATTACK: Duration = Duration::from_secs(14);
const WAIT: Duration = Duration::from_secs(30);
/// Garbage frames written on each malformed connection before the server closes it.
const FRAMES_PER_CONNECTION: u64 = 1_000;

/// Each honest client's command period: 90 a second in a release build (the acceptance run);
/// in a debug build (CI's run) a ninth of that, which the unoptimized server carries without a
/// queue, so that what is compared is the attack's effect and not the build's.
fn period() -> Duration {
    let default = if cfg!(debug_assertions) { 10 } else { 90 };
    Duration::from_secs(1) / env_number("MESHWORK_FLOOD_RATE", default) as u32
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One honest client's run: submit→echo latencies of its own commands, in microseconds.
async fn honest(mut c: Client, cube: EntityId, offset: Duration, run: Run) -> (Client, Vec<u64>) {
    let me = c.author();
    let mut latencies = Vec::new();
    let mut in_flight: HashMap<CommandId, Instant> = HashMap::new();
    tokio::time::sleep(offset).await;
    let mut tick = tokio::time::interval(period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let min_end = Instant::now() + run.at_least;
    let mut stopped: Option<Instant> = None;
    let lost = |c: &Client, e: &ClientError| -> ! {
        panic!(
            "an honest client lost its connection: {e}; {:?}; {:?}",
            c.seen.closed,
            c.connection().close_reason()
        )
    };
    loop {
        let sending = stopped.is_none()
            && (Instant::now() < min_end
                || run
                    .until
                    .as_ref()
                    .is_some_and(|done| !done.load(Ordering::Relaxed)));
        if !sending && in_flight.is_empty() {
            break;
        }
        if !sending && stopped.is_none() {
            stopped = Some(Instant::now());
        }
        assert!(
            stopped.is_none_or(|at| at.elapsed() < WAIT),
            "{} of an honest client's commands never came back",
            in_flight.len()
        );
        tokio::select! {
            _ = tick.tick(), if sending => {
                let entries = match c
                    .submit(vec![Command::Translate { entity: cube, delta: Vec3::new(0.001, 0.0, 0.0) }])
                    .await
                {
                    Ok(e) => e,
                    Err(e) => lost(&c, &e),
                };
                let now = Instant::now();
                for e in entries {
                    in_flight.insert(e.decode_body().unwrap().id(), now);
                }
            }
            msg = c.next(Duration::from_millis(200)) => match msg {
                Ok(ServerMsg::Entries(batch)) => {
                    let now = Instant::now();
                    for entry in &batch.entries {
                        if let Ok(b) = entry.decode_body()
                            && b.author == me
                            && let Some(at) = in_flight.remove(&b.id())
                        {
                            latencies.push(now.duration_since(at).as_micros() as u64);
                        }
                    }
                }
                Ok(ServerMsg::CommandRefused(r)) => panic!("an honest command was refused: {r:?}"),
                Ok(ServerMsg::Close(close)) => panic!("an honest client was closed: {close:?}"),
                Ok(_) | Err(ClientError::Timeout) => {}
                Err(e) => lost(&c, &e),
            }
        }
    }
    (c, latencies)
}

/// How long the honest clients send: at least `at_least`, and until `until` is set.
#[derive(Clone, Debug)]
struct Run {
    at_least: Duration,
    until: Option<Arc<AtomicBool>>,
}

/// Runs every honest client for `run`; all their latencies, sorted.
async fn honest_phase(
    clients: Vec<(Client, EntityId)>,
    run: Run,
) -> (Vec<(Client, EntityId)>, Vec<u64>) {
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, (c, cube))| {
            // Spread over one period: real clients are not in lockstep.
            let offset = period().mul_f64(i as f64 / HONEST as f64);
            let run = run.clone();
            tokio::spawn(async move {
                let (c, l) = honest(c, cube, offset, run).await;
                ((c, cube), l)
            })
        })
        .collect();
    let mut clients = Vec::new();
    let mut all = Vec::new();
    for t in tasks {
        let (c, l) = t.await.unwrap();
        clients.push(c);
        all.extend(l);
    }
    all.sort_unstable();
    (clients, all)
}

fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p / 100.0).round() as usize;
    sorted.get(i).copied().unwrap_or(0) as f64 / 1000.0
}

/// What the attackers did.
#[derive(Debug, Default)]
struct Attacks {
    malformed_frames: AtomicU64,
    malformed_connections: AtomicU64,
    flood_submitted: AtomicU64,
    flood_rejoins: AtomicU64,
    resync_requests: AtomicU64,
    fetch_requests: AtomicU64,
    half_open: AtomicU64,
    half_open_closed: AtomicU64,
}

/// Garbage for connection `i`: every frame well framed but undecodable, or an oversized frame
/// header first, or a `Submit` before any `Hello` (out of phase) followed by garbage.
fn garbage(i: u64, frames: u64) -> Vec<u8> {
    let mut out = Vec::new();
    match i % 3 {
        0 => {}
        1 => out.extend_from_slice(&u32::MAX.to_le_bytes()),
        _ => out.extend(
            to_frame(&ClientMsg::Submit(meshwork_protocol::wire::Submit {
                entries: Vec::new(),
            }))
            .unwrap(),
        ),
    }
    for k in 0..frames {
        let payload = [
            0xf7,
            0xff,
            0xff,
            0xff,
            0x0f,
            (k & 0xff) as u8,
            (i & 0xff) as u8,
            0x5a,
        ];
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&payload);
    }
    out
}

async fn malformed(addr: SocketAddr, cert: [u8; 32], frames: u64, a: Arc<Attacks>) {
    let connections = frames.div_ceil(FRAMES_PER_CONNECTION);
    for i in 0..connections {
        let Ok((_e, conn, mut send, _recv)) = open(addr, cert).await else {
            continue;
        };
        a.malformed_connections.fetch_add(1, Ordering::Relaxed);
        if send
            .write_all(&garbage(i, FRAMES_PER_CONNECTION))
            .await
            .is_ok()
        {
            a.malformed_frames
                .fetch_add(FRAMES_PER_CONNECTION, Ordering::Relaxed);
        }
        // The server closes it at the first bad frame; then the next connection.
        let _ = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await;
    }
}

async fn rate_flood(ticket: JoinTicket, stop: Arc<AtomicBool>, a: Arc<Attacks>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut c) = Client::join(&ticket, random_signer()).await else {
            continue;
        };
        c.retain_entries = false;
        c.keep_replica = false;
        a.flood_rejoins.fetch_add(1, Ordering::Relaxed);
        let cube = EntityId::new(c.author(), 1);
        if c.submit(vec![Command::Spawn {
            entity: cube,
            primitive: Primitive::Cube,
            transform: Transform::IDENTITY,
        }])
        .await
        .is_err()
        {
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            let batch = (0..32)
                .map(|_| Command::Translate {
                    entity: cube,
                    delta: Vec3::new(0.0, 0.001, 0.0),
                })
                .collect();
            if c.submit(batch).await.is_err() {
                break;
            }
            a.flood_submitted.fetch_add(32, Ordering::Relaxed);
            while c.next(Duration::ZERO).await.is_ok() {}
            if c.seen.closed.is_some() {
                break;
            }
        }
    }
}

async fn resync_loop(ticket: JoinTicket, stop: Arc<AtomicBool>, a: Arc<Attacks>) {
    let resync = to_frame(&ClientMsg::Resync(Resync { position: 0 })).unwrap();
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut c) = Client::join(&ticket, random_signer()).await else {
            continue;
        };
        c.retain_entries = false;
        c.keep_replica = false;
        while !stop.load(Ordering::Relaxed) {
            if c.send_raw(&resync).await.is_err() || c.fetch_log(0).await.is_err() {
                break;
            }
            a.resync_requests.fetch_add(1, Ordering::Relaxed);
            a.fetch_requests.fetch_add(1, Ordering::Relaxed);
            while c.next(Duration::ZERO).await.is_ok() {}
            if c.seen.closed.is_some() {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
}

async fn half_open(addr: SocketAddr, cert: [u8; 32], n: u64, a: Arc<Attacks>) {
    let endpoint = client_endpoint(addr, cert).unwrap();
    let mut held = Vec::new();
    for i in 0..n {
        let Ok(connecting) = endpoint.connect(addr, "localhost") else {
            continue;
        };
        let Ok(conn) = connecting.await else {
            continue;
        };
        // Half open a stream and write one byte of a frame header; the rest open none.
        let stream = if i % 2 == 1 {
            match conn.open_bi().await {
                Ok((mut send, recv)) => {
                    let _ = send.write_all(&[0x01]).await;
                    Some((send, recv))
                }
                Err(_) => None,
            }
        } else {
            None
        };
        a.half_open.fetch_add(1, Ordering::Relaxed);
        held.push((conn, stream));
    }
    // Hold them until the server closes each.
    for (conn, _stream) in held {
        if tokio::time::timeout(Duration::from_secs(30), conn.closed())
            .await
            .is_ok()
        {
            a.half_open_closed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Whether the attack `name` runs: all do, unless `MESHWORK_FLOOD_ONLY` names some
/// (`malformed,rate,resync,half_open`: to see what each one costs).
fn on(name: &str) -> bool {
    let only = std::env::var("MESHWORK_FLOOD_ONLY").unwrap_or_default();
    only.is_empty() || only.split(',').any(|n| n.trim() == name)
}

/// Every attacker on one thread at nice 19: the malformed and half-open ones until they have
/// done what they were asked to (then `finished` is set), the others until `stop`.
fn attack(
    ticket: JoinTicket,
    frames: u64,
    half: u64,
    finished: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    a: Arc<Attacks>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        // This thread only: /proc/thread-self names it.
        let tid = std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap();
        let reniced = std::process::Command::new("renice")
            .args(["-n", "19", "-p", &tid])
            .output()
            .unwrap();
        assert!(reniced.status.success(), "renice: {reniced:?}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let addr = resolve(&ticket.quic_addr).unwrap();
            let cert = ticket.cert_sha256;
            let mut looping = Vec::new();
            if on("rate") {
                looping.push(tokio::spawn(rate_flood(
                    ticket.clone(),
                    stop.clone(),
                    a.clone(),
                )));
            }
            if on("resync") {
                looping.push(tokio::spawn(resync_loop(
                    ticket.clone(),
                    stop.clone(),
                    a.clone(),
                )));
            }
            let counted = [
                tokio::spawn(malformed(addr, cert, frames, a.clone())),
                tokio::spawn(half_open(addr, cert, half, a.clone())),
            ];
            for t in counted {
                t.await.unwrap();
            }
            finished.store(true, Ordering::Relaxed);
            for t in looping {
                t.await.unwrap();
            }
        });
    })
}

/// The machine's busy and total CPU time so far (`/proc/stat`, clock ticks).
fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Share of the machine's CPU time spent busy between two [`cpu_ticks`] readings, in percent.
fn busy_percent(from: (u64, u64), to: (u64, u64)) -> f64 {
    100.0 * (to.0 - from.0) as f64 / (to.1 - from.1).max(1) as f64
}

/// `VmRSS` of a process, in KiB (0 once it is gone).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn rejected(server: &ServerProcess, reason: &str) -> f64 {
    http::metric(
        server.http,
        &format!("meshwork_commands_rejected_total{{reason=\"{reason}\"}}"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_clients_keep_their_latency_while_four_attackers_run() {
    // CI's debug build: fewer connections (50 malformed, 300 half-open), which its slower
    // attacker thread gets through within the run; the acceptance run sets 1,000,000 frames.
    let debug = cfg!(debug_assertions);
    let frames = env_number(
        "MESHWORK_FLOOD_FRAMES",
        if debug { 50_000 } else { 100_000 },
    );
    let half = env_number("MESHWORK_FLOOD_HALF_OPEN", if debug { 300 } else { 1_000 });
    let frames = if on("malformed") { frames } else { 0 };
    let half = if on("half_open") { half } else { 0 };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Every party shares 127.0.0.1 here: the per-address bound (its own test is
    // connection_limits) is raised so that every attack reaches the server.
    let server = ServerProcess::start(BIN, &data, &["--max-connections-per-ip", "4000"]);
    let token = server.admin_token().unwrap();
    let ticket = server.ticket(BIN, &data, "editor");

    let mut clients = Vec::new();
    for _ in 0..HONEST {
        let mut c = Client::join(&ticket, random_signer()).await.unwrap();
        c.retain_entries = false;
        c.keep_replica = false;
        let cube = c.spawn_cube_acked(1, WAIT).await.unwrap();
        clients.push((c, cube));
    }
    let cpu_start = cpu_ticks();
    let (clients, baseline) = honest_phase(
        clients,
        Run {
            at_least: BASELINE,
            until: None,
        },
    )
    .await;
    let cpu_baseline = busy_percent(cpu_start, cpu_ticks());
    let rss_before = server.rss_kib();
    eprintln!(
        "flood: baseline p50 {:.2} ms p99 {:.2} ms ({} echoes), machine {cpu_baseline:.0} % busy",
        percentile_ms(&baseline, 50.0),
        percentile_ms(&baseline, 99.0),
        baseline.len()
    );
    let cpu_attack_start = cpu_ticks();

    let stop = Arc::new(AtomicBool::new(false));
    let attacks = Arc::new(Attacks::default());
    let finished = Arc::new(AtomicBool::new(false));
    let attackers = attack(
        ticket.clone(),
        frames,
        half,
        finished.clone(),
        stop.clone(),
        attacks.clone(),
    );
    let sampling = Arc::new(AtomicBool::new(true));
    let pid_rss = {
        let sampling = sampling.clone();
        let pid = server.child.id();
        tokio::spawn(async move {
            let mut max = 0;
            while sampling.load(Ordering::Relaxed) {
                max = max.max(rss_kib(pid));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            max
        })
    };
    let started = Instant::now();
    let (clients, attacked) = honest_phase(
        clients,
        Run {
            at_least: UNDER_ATTACK,
            until: Some(finished),
        },
    )
    .await;
    let attack_ran = started.elapsed();
    let cpu_attack = busy_percent(cpu_attack_start, cpu_ticks());
    stop.store(true, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || attackers.join().unwrap())
        .await
        .unwrap();
    sampling.store(false, Ordering::Relaxed);
    let rss_max = pid_rss.await.unwrap();
    let rss_after = server.rss_kib();

    let (p99_base, p99_attacked) = (
        percentile_ms(&baseline, 99.0),
        percentile_ms(&attacked, 99.0),
    );
    let a = &attacks;
    let report = format!(
        "flood: baseline p50 {:.2} ms p99 {p99_base:.2} ms ({} echoes); under attack ({:.1} s) p50 {:.2} ms p99 {p99_attacked:.2} ms max {:.2} ms ({} echoes), machine {cpu_attack:.0} % busy; \
         malformed frames {} over {} connections; rate flood {} submits over {} joins; resync+fetch {} pairs; half-open {} (closed by the server {}); \
         server RSS {rss_before} KiB before, max {rss_max} KiB, {rss_after} KiB after",
        percentile_ms(&baseline, 50.0),
        baseline.len(),
        attack_ran.as_secs_f64(),
        percentile_ms(&attacked, 50.0),
        percentile_ms(&attacked, 100.0),
        attacked.len(),
        a.malformed_frames.load(Ordering::Relaxed),
        a.malformed_connections.load(Ordering::Relaxed),
        a.flood_submitted.load(Ordering::Relaxed),
        a.flood_rejoins.load(Ordering::Relaxed),
        a.resync_requests.load(Ordering::Relaxed),
        a.half_open.load(Ordering::Relaxed),
        a.half_open_closed.load(Ordering::Relaxed),
    );
    eprintln!("{report}");
    let mut counted = String::new();
    for reason in [
        "undecodable",
        "frame_too_large",
        "out_of_phase",
        "rate_limited",
        "resync_throttled",
        "fetch_log_throttled",
        "handshake_timeout",
        "too_slow",
        "submit_paced",
    ] {
        counted.push_str(&format!(" {reason}={}", rejected(&server, reason).await));
    }
    eprintln!("flood: counted{counted}");

    // Every honest command was accepted, in order, and nobody honest was closed.
    let echoed = baseline.len() + attacked.len();
    for (c, _) in &clients {
        assert!(c.seen.closed.is_none(), "{:?}", c.seen.closed);
        assert!(c.seen.refusals.is_empty(), "{:?}", c.seen.refusals);
    }
    // The acceptance bound (twice the baseline p99) is for the optimized build, the stress run
    // whose figures are in docs/benchmarks.md. An unoptimized server spends several times the
    // CPU on every attacker frame, on two cores it shares with every client here, so CI's debug
    // run holds the honest p99 to 500 ms instead: an attack that stalls the session fails it.
    if cfg!(debug_assertions) {
        assert!(
            p99_attacked <= 500.0,
            "the honest p99 went from {p99_base:.2} ms to {p99_attacked:.2} ms under attack"
        );
    } else {
        assert!(
            p99_attacked <= 2.0 * p99_base.max(1.0),
            "the honest p99 went from {p99_base:.2} ms to {p99_attacked:.2} ms under attack"
        );
    }
    // What the attackers did reached the server and was counted under its own reason.
    assert_eq!(a.malformed_frames.load(Ordering::Relaxed), frames);
    if frames > 0 {
        let connections = a.malformed_connections.load(Ordering::Relaxed) as f64;
        let bad = rejected(&server, "undecodable").await
            + rejected(&server, "frame_too_large").await
            + rejected(&server, "out_of_phase").await;
        assert!(
            bad >= connections,
            "{bad} protocol violations counted for {connections} malformed connections"
        );
        assert!(rejected(&server, "frame_too_large").await >= 1.0);
        assert!(rejected(&server, "out_of_phase").await >= 1.0);
    }
    if on("rate") {
        // Paced at the connection (the reader waits, the transport pushes back): counted as
        // `submit_paced`; what still reaches the session past its bucket, as `rate_limited`.
        assert!(rejected(&server, "submit_paced").await >= 1.0);
    }
    if on("resync") {
        assert!(rejected(&server, "resync_throttled").await >= 1.0);
        assert!(rejected(&server, "fetch_log_throttled").await >= 1.0);
    }
    assert_eq!(
        a.half_open.load(Ordering::Relaxed),
        half,
        "every half-open connection was admitted"
    );
    assert_eq!(
        a.half_open_closed.load(Ordering::Relaxed),
        half,
        "the server closed every half-open connection"
    );
    assert!(rejected(&server, "handshake_timeout").await >= half as f64);
    // Memory: what the attacks cost is held only while they last.
    let grew = rss_max.saturating_sub(rss_before);
    assert!(grew < 256 * 1024, "the server grew {grew} KiB under attack");

    // The session is whole: the honest edits and the flooder's admitted ones, and the server
    // still answers.
    let (at, _) = http::Admin {
        addr: server.http,
        token,
    }
    .scene()
    .await
    .unwrap();
    assert!(at >= (HONEST + echoed) as u64);
}
