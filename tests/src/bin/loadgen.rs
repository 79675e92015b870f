//! `meshwork-loadgen`: many real clients over QUIC submitting signed commands at a fixed rate;
//! reports throughput and the latency from submit to the author seeing its own entry come back
//! in the server's fan-out (accepted, durable, ordered, broadcast).
//!
//! Example: `meshwork-loadgen --invite "$(meshwork-server invite)" --clients 32 --rate 90
//! --seconds 30 --json report.json`. Sends only to the address in the ticket (or `--server`).
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::arithmetic_side_effects,
    reason = "report arithmetic on counts far below 2^52"
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use glam::Vec3;
use meshwork_protocol::command::{Primitive, Transform};
use meshwork_protocol::wire::{JoinTicket, RefusalCode, ServerMsg};
use meshwork_protocol::{Command, CommandId, EntityId};
use meshwork_testkit::{Client, random_signer};
use serde::Serialize;

/// Load generator for a Meshwork session server.
#[derive(Debug, Parser)]
#[command(name = "meshwork-loadgen", version, about)]
struct Args {
    /// Join ticket (as printed by `meshwork-server invite`); must grant editor or admin.
    #[arg(long)]
    invite: String,
    /// Override the QUIC address in the ticket (`host:port`).
    #[arg(long)]
    server: Option<String>,
    /// Concurrent clients, each its own QUIC connection and key.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Commands per second per client.
    #[arg(long, default_value_t = 90)]
    rate: u32,
    /// Commands per submitted frame (1 = one frame per command).
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Have every client keep a replica, verifying and applying every entry the server sends
    /// (as a real client does on its own machine). Off by default: the generator measures the
    /// server, and N replicas each verifying every client's entries would take the machine's
    /// cores from it (the clients then fall behind and the server closes them as too slow).
    #[arg(long)]
    verify_replicas: bool,
    /// Write the report as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Instead of load: fill the session with `--populate` entities (if it has fewer), then time
    /// how long new clients take to join and hold the whole scene.
    #[arg(long)]
    join_only: bool,
    /// Entities to spawn first in `--join-only` mode.
    #[arg(long, default_value_t = 10_000)]
    populate: u32,
}

/// `--join-only`: populate, then time joins (connect + handshake + snapshot + apply).
async fn join_only(ticket: &JoinTicket, args: &Args) -> Result<(), String> {
    let mut filler = Client::join(ticket, random_signer())
        .await
        .map_err(|e| e.to_string())?;
    filler.retain_entries = false;
    let me = filler.author();
    let have = filler_scene_len(&mut filler).await;
    let want = args.populate.saturating_sub(have);
    // Spawns the server refused for its rate limit are sent again; any other refusal means the
    // session cannot hold the population asked for, and the run says so instead of timing a
    // smaller session.
    let mut todo: Vec<u32> = (0..want).collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !todo.is_empty() {
        if Instant::now() > deadline {
            return Err(format!(
                "populating: {} of {want} spawns still refused by the rate limit after 300 s",
                todo.len()
            ));
        }
        let batch: Vec<u32> = todo.drain(..todo.len().min(256)).collect();
        let cmds = batch
            .iter()
            .map(|&i| Command::Spawn {
                entity: EntityId::new(me, i),
                primitive: [
                    Primitive::Cube,
                    Primitive::Sphere,
                    Primitive::Cylinder,
                    Primitive::Pyramid,
                ][i as usize % 4],
                transform: Transform {
                    translation: Vec3::new(i as f32 * 0.1, 0.0, 0.0),
                    ..Transform::IDENTITY
                },
            })
            .collect();
        let entries = filler.submit(cmds).await.map_err(|e| e.to_string())?;
        let seqs: HashMap<u64, u32> = entries
            .iter()
            .filter_map(|e| e.decode_body().ok())
            .map(|b| b.seq)
            .zip(batch.iter().copied())
            .collect();
        let answered = |s: &meshwork_testkit::Seen| {
            seqs.keys()
                .all(|q| s.acks.contains_key(q) || s.refusals.iter().any(|r| r.seq == *q))
        };
        filler
            .until(Instant::now() + Duration::from_secs(60), answered)
            .await
            .map_err(|e| e.to_string())?;
        let mut limited = 0;
        for r in filler
            .seen
            .refusals
            .iter()
            .filter(|r| seqs.contains_key(&r.seq))
        {
            if r.code != RefusalCode::RateLimited {
                return Err(format!(
                    "populating: the server refused a spawn ({}: {}); the session would hold \
                     fewer than {} entities",
                    r.code.as_str(),
                    r.message,
                    args.populate
                ));
            }
            todo.push(seqs[&r.seq]);
            limited += 1;
        }
        if limited > 0 {
            // Let the per-author bucket refill before the next batch.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let mut times = Vec::new();
    let mut entities = 0;
    let mut bytes = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let mut c = Client::join(ticket, random_signer())
            .await
            .map_err(|e| e.to_string())?;
        c.retain_entries = false;
        while !c.replica().is_synced() {
            c.next(Duration::from_secs(10))
                .await
                .map_err(|e| e.to_string())?;
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        entities = c.replica().scene().entities.len();
        bytes = c.bytes_received.load(Ordering::Relaxed);
        c.leave().await;
    }
    if entities < args.populate as usize {
        return Err(format!(
            "the session holds {entities} entities, fewer than --populate {}",
            args.populate
        ));
    }
    times.sort_by(f64::total_cmp);
    println!(
        "join of a {entities}-entity session ({bytes} bytes received): min {:.1} ms, median {:.1} ms, max {:.1} ms over {} joins",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        times.len()
    );
    if let Some(path) = &args.json {
        let json = serde_json::json!({ "entities": entities, "bytes": bytes, "join_ms": times });
        std::fs::write(path, json.to_string()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Entities already in the session, from the filler's own snapshot.
async fn filler_scene_len(c: &mut Client) -> u32 {
    while !c.replica().is_synced() {
        if c.next(Duration::from_secs(10)).await.is_err() {
            break;
        }
    }
    u32::try_from(c.replica().scene().entities.len()).unwrap_or(u32::MAX)
}

#[derive(Debug, Default)]
struct ClientResult {
    sent: u64,
    acked: u64,
    refused: u64,
    latencies_us: Vec<u64>,
    bytes_sent: u64,
    bytes_received: u64,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    clients: usize,
    rate_per_client: u32,
    batch: u32,
    seconds: u64,
    sent: u64,
    acknowledged: u64,
    echoed: u64,
    refused: u64,
    throughput_per_s: f64,
    latency_ms: Latency,
    bytes_sent_per_command: f64,
    bytes_received_per_command: f64,
}

async fn run_client(
    ticket: JoinTicket,
    args: &Args,
    index: usize,
    start_at: Instant,
) -> Result<ClientResult, String> {
    let mut c = Client::join(&ticket, random_signer())
        .await
        .map_err(|e| e.to_string())?;
    c.retain_entries = false;
    c.keep_replica = args.verify_replicas;
    let me = c.author();
    let mut r = ClientResult::default();
    let mut in_flight: HashMap<CommandId, Instant> = HashMap::new();
    let period = Duration::from_secs_f64(f64::from(args.batch) / f64::from(args.rate.max(1)));
    // Spread the clients' phases over one period: real clients are not in lockstep, and a
    // synchronized burst of every client at once would measure the generator, not the server.
    let phase = period.mul_f64(index as f64 / args.clients.max(1) as f64);
    tokio::time::sleep_until((start_at + phase).into()).await;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let send_until = start_at + Duration::from_secs(args.seconds);
    let mut counter = 0u32;
    loop {
        let sending = Instant::now() < send_until;
        if !sending && in_flight.is_empty() {
            break;
        }
        if !sending && Instant::now() > send_until + Duration::from_secs(10) {
            break; // Give up on what never came back; it counts as not echoed.
        }
        tokio::select! {
            _ = ticker.tick(), if sending => {
                let commands: Vec<Command> = (0..args.batch)
                    .map(|_| {
                        counter = counter.wrapping_add(1);
                        Command::Translate {
                            entity: EntityId::new(me, counter % 64),
                            delta: Vec3::new(0.001, 0.0, 0.0),
                        }
                    })
                    .collect();
                let entries = c.submit(commands).await.map_err(|e| e.to_string())?;
                let now = Instant::now();
                for e in entries {
                    if let Ok(b) = e.decode_body() {
                        in_flight.insert(b.id(), now);
                    }
                }
                r.sent += u64::from(args.batch);
            }
            msg = c.next(Duration::from_millis(200)) => match msg {
                Ok(ServerMsg::Entries(e)) => {
                    let now = Instant::now();
                    for entry in &e.entries {
                        if let Ok(b) = entry.decode_body()
                            && b.author == me
                            && let Some(at) = in_flight.remove(&b.id())
                        {
                            r.latencies_us.push(u64::try_from(now.duration_since(at).as_micros()).unwrap_or(u64::MAX));
                        }
                    }
                }
                Ok(ServerMsg::Ack(_)) => r.acked += 1,
                Ok(ServerMsg::CommandRefused(_)) => r.refused += 1,
                Ok(ServerMsg::Close(close)) => return Err(format!("closed by the server: {close:?}")),
                Ok(_) | Err(meshwork_testkit::ClientError::Timeout) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    r.bytes_sent = c.bytes_sent;
    r.bytes_received = c.bytes_received.load(Ordering::Relaxed);
    c.leave().await;
    Ok(r)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted.get(rank.min(sorted.len() - 1)).copied().unwrap_or(0) as f64 / 1000.0
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let mut ticket = match JoinTicket::from_text(&args.invite) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("meshwork-loadgen: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(server) = &args.server {
        ticket.quic_addr.clone_from(server);
    }
    if args.join_only {
        return match join_only(&ticket, &args).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("meshwork-loadgen: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let args = std::sync::Arc::new(args);
    // Everyone joins first; sending starts together.
    let start_at =
        Instant::now() + Duration::from_secs(2) + Duration::from_millis(20 * args.clients as u64);
    let mut tasks = Vec::new();
    for index in 0..args.clients {
        let (ticket, args) = (ticket.clone(), args.clone());
        tasks.push(tokio::spawn(async move {
            run_client(ticket, &args, index, start_at).await
        }));
    }
    let mut total = ClientResult::default();
    let mut failures = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(r)) => {
                total.sent += r.sent;
                total.acked += r.acked;
                total.refused += r.refused;
                total.bytes_sent += r.bytes_sent;
                total.bytes_received += r.bytes_received;
                total.latencies_us.extend(r.latencies_us);
            }
            Ok(Err(e)) => {
                eprintln!("client failed: {e}");
                failures += 1;
            }
            Err(e) => {
                eprintln!("client panicked: {e}");
                failures += 1;
            }
        }
    }
    total.latencies_us.sort_unstable();
    let echoed = total.latencies_us.len() as u64;
    let per_cmd = |b: u64| {
        if total.sent == 0 {
            0.0
        } else {
            b as f64 / total.sent as f64
        }
    };
    let report = Report {
        clients: args.clients,
        rate_per_client: args.rate,
        batch: args.batch,
        seconds: args.seconds,
        sent: total.sent,
        acknowledged: total.acked,
        echoed,
        refused: total.refused,
        throughput_per_s: echoed as f64 / args.seconds.max(1) as f64,
        latency_ms: Latency {
            p50: percentile(&total.latencies_us, 50.0),
            p90: percentile(&total.latencies_us, 90.0),
            p99: percentile(&total.latencies_us, 99.0),
            max: percentile(&total.latencies_us, 100.0),
        },
        bytes_sent_per_command: per_cmd(total.bytes_sent),
        bytes_received_per_command: per_cmd(total.bytes_received),
    };
    println!(
        "clients {} × {}/s (batch {}) for {} s: sent {}, acked {}, echoed {}, refused {}",
        report.clients,
        report.rate_per_client,
        report.batch,
        report.seconds,
        report.sent,
        report.acknowledged,
        report.echoed,
        report.refused
    );
    println!(
        "throughput {:.0} commands/s; submit→echo latency ms p50 {:.3} p90 {:.3} p99 {:.3} max {:.3}",
        report.throughput_per_s,
        report.latency_ms.p50,
        report.latency_ms.p90,
        report.latency_ms.p99,
        report.latency_ms.max
    );
    println!(
        "bytes per command: {:.1} sent, {:.1} received (the received side includes every other client's entries)",
        report.bytes_sent_per_command, report.bytes_received_per_command
    );
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(path, json) {
            eprintln!("cannot write {}: {e}", path.display());
            return std::process::ExitCode::FAILURE;
        }
    }
    if failures > 0 {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
