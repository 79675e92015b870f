//! `meshwork-wire-budget`: the bytes on the wire of a typical session
//! ([`meshwork_testkit::typical`]) under each encoding of the presence lane, by message kind,
//! and the size of single messages (a signed `Translate` and `SetTransform` as submitted and as
//! fanned out, a transform preview, a headset's presence). Prints Markdown for
//! `docs/benchmarks.md`.

#![allow(
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::arithmetic_side_effects,
    reason = "a report printer: byte totals far below 2^53"
)]

use clap::Parser;
use glam::{Quat, Vec3};
use meshwork_protocol::command::Transform;
use meshwork_protocol::motion::{Figure, Motion, MotionContent};
use meshwork_protocol::wire::{
    ClientMsg, Entries, Pose, Presence, Preview, PreviewTransform, ServerMsg, Submit,
};
use meshwork_protocol::{
    AuthorId, Command, Ed25519Signer, EntityId, EntryBody, PROTOCOL_VERSION, SessionId,
    SignedEntry, Signer as _, to_frame,
};
use meshwork_testkit::typical::{
    Direction, Filter, PresenceForm, Report, Workload, is_presence_lane, play,
};

/// Bytes on the wire of a typical session, per encoding.
#[derive(Parser, Debug)]
struct Args {
    /// Virtual seconds to play.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Members (the last joins halfway).
    #[arg(long, default_value_t = 8)]
    members: usize,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Instead: train the presence-lane dictionary on the session's packs and write it here
    /// (`protocol/dict/presence-v1.zdict` was made with the defaults; a released dictionary
    /// never changes: a new one gets a new number).
    #[arg(long)]
    train_dictionary: Option<std::path::PathBuf>,
    /// Members of the interest run.
    #[arg(long, default_value_t = 64)]
    crowd: usize,
    /// Virtual seconds of the interest run.
    #[arg(long, default_value_t = 10)]
    crowd_seconds: u64,
    /// The interest run's world, metres across.
    #[arg(long, default_value_t = 1000.0)]
    world_m: f32,
    /// How far each member of the interest run looks, metres each way.
    #[arg(long, default_value_t = 20.0)]
    view_m: f32,
    /// Entities spread over the world of the partial-replica run (0: skip that run).
    #[arg(long, default_value_t = 100_000)]
    world_entities: usize,
    /// How far each member of the partial-replica run works and holds, metres each way
    /// (10: a 20 m region).
    #[arg(long, default_value_t = 10.0)]
    world_view_m: f32,
    /// Only the partial-replica run.
    #[arg(long)]
    world_only: bool,
    /// The trained dictionary's size.
    #[arg(long, default_value_t = 8192)]
    dictionary_bytes: usize,
    /// The server's presence tick in milliseconds (`--presence-tick-ms`).
    #[arg(long, default_value_t = meshwork_session::session::DEFAULT_PRESENCE_PACK_MS)]
    pack_ms: u64,
}

fn frame_len(msg: &impl serde::Serialize) -> usize {
    to_frame(msg).map_or(0, |f| f.len())
}

fn single_messages() {
    let signer = Ed25519Signer::from_seed([3; 32]);
    let author = AuthorId(3);
    let entity = EntityId::new(author, 17);
    let entry_of = |version: u16, command: Command| {
        let mut body = EntryBody::new(
            SessionId([9; 16]),
            author,
            signer.public_key().key_id(),
            1_234,
            56_789,
            56_700,
            command,
        );
        body.version = version;
        SignedEntry::sign(&body, &signer).expect("an entry body signs")
    };
    let transform = Transform {
        translation: Vec3::new(1.25, 0.5, -3.75),
        rotation: Quat::from_rotation_y(0.7),
        scale: Vec3::splat(1.5),
    };
    println!("| message | bytes |");
    println!("|---|---|");
    for (name, command) in [
        (
            "signed `Translate`",
            Command::Translate {
                entity,
                delta: Vec3::new(0.25, 0.0, -0.5),
            },
        ),
        (
            "signed `SetTransform`",
            Command::SetTransform { entity, transform },
        ),
    ] {
        let e = entry_of(PROTOCOL_VERSION, command.clone());
        let up = frame_len(&ClientMsg::Submit(Submit {
            entries: vec![e.clone()],
        }));
        let down = frame_len(&ServerMsg::Entries(Entries {
            entries: vec![e.clone()],
        }));
        // The entry itself as it travels (one of a `Submit`'s or `Entries`' entries): a frame
        // of one, less the frame header, the message tag and the count.
        let alone = up - 4 - 2;
        let then = entry_of(1, command);
        let v1 = frame_len(&then) - 4;
        println!(
            "| {name}: the entry on the wire, version 1 → version 2 (body {} → {} B) | {v1} → **{alone}** |",
            then.body.len(),
            e.body.len()
        );
        println!(
            "| {name}, alone in a `Submit` / `Entries` frame (4-byte frame header, tag and count included) | {up} / {down} |"
        );
    }
    let preview = PreviewTransform::quantize(&transform);
    let legacy = frame_len(&ClientMsg::Preview(Preview {
        seq: 70_000,
        entity,
        transform: Some(preview),
    }));
    let unit = PreviewTransform::quantize(&Transform {
        scale: Vec3::ONE,
        ..transform
    });
    let legacy_unit = frame_len(&ClientMsg::Preview(Preview {
        seq: 70_000,
        entity,
        transform: Some(unit),
    }));
    let motion = |moving: Vec<(EntityId, PreviewTransform)>| {
        frame_len(&ClientMsg::Motion(
            Motion::encode(&MotionContent {
                seq: 4_464,
                figure: None,
                moving,
                ended: vec![],
            })
            .expect("small"),
        ))
    };
    println!(
        "| transform preview, one entity, unit scale: `Preview` / `Motion` | {legacy_unit} / {} |",
        motion(vec![(entity, unit)])
    );
    println!(
        "| transform preview, one entity, scaled: `Preview` / `Motion` | {legacy} / {} |",
        motion(vec![(entity, preview)])
    );
    println!(
        "| each further entity in the same `Motion` (unit scale) | {} |",
        motion(vec![(entity, unit), (EntityId::new(author, 18), unit)])
            - motion(vec![(entity, unit)])
    );
    let head = Pose::quantize(Vec3::new(1.2, 1.65, -0.4), Quat::from_rotation_y(0.6));
    let hand = |x: f32| Pose::quantize(Vec3::new(1.2 + x, 1.2, -0.7), Quat::from_rotation_z(x));
    let figure = Figure {
        head: Some(head),
        hands: [Some(hand(-0.25)), Some(hand(0.25))],
        cursor: None,
    };
    let legacy = frame_len(&ClientMsg::Presence(Presence {
        seq: 70_000,
        head: figure.head,
        hands: figure.hands,
        cursor: None,
    }));
    let compact = frame_len(&ClientMsg::Motion(Motion::of_figure(4_464, figure)));
    println!(
        "| headset presence (head + two hands): `Presence` / `Motion` | {legacy} / {compact} |"
    );
}

/// Every replica of a run ended equal to the server's.
fn assert_converged(r: &Report, run: &str) {
    assert!(
        r.replica_hashes.iter().all(|h| *h == r.server_hash),
        "{run}: every replica converged"
    );
}

fn pct(from: u64, to: u64) -> String {
    if from == 0 {
        String::from("—")
    } else {
        format!("{:+.1} %", (to as f64 / from as f64 - 1.0) * 100.0)
    }
}

fn main() {
    let args = Args::parse();
    if let Some(path) = &args.train_dictionary {
        train(&args, path);
        return;
    }
    if args.world_only {
        world(&args);
        return;
    }
    single_messages();
    let reports: Vec<(PresenceForm, Report)> = PresenceForm::ALL
        .into_iter()
        .map(|form| {
            let r = play(&Workload {
                members: args.members,
                seconds: args.seconds,
                seed: args.seed,
                form,
                world_m: None,
                view_m: None,
                filter: Filter::Nothing,
                population: 0,
                pack_ms: args.pack_ms,
            });
            (form, r)
        })
        .collect();
    // The previous stop's tick: one 90 Hz frame, every update sent.
    let every_frame = play(&Workload {
        members: args.members,
        seconds: args.seconds,
        seed: args.seed,
        form: PresenceForm::MotionCompressed,
        world_m: None,
        view_m: None,
        filter: Filter::Nothing,
        population: 0,
        pack_ms: 11,
    });
    assert_converged(&every_frame, "11 ms tick");
    let first = &reports[0].1;
    for (form, r) in &reports {
        assert_eq!(
            r.server_hash, first.server_hash,
            "{form:?}: the same session every way"
        );
        assert_converged(r, &format!("{form:?}"));
    }
    println!();
    println!(
        "{} members, {} virtual seconds, seed {}: {} entries, {} drags committed",
        args.members, args.seconds, args.seed, first.entries, first.drags
    );
    println!();
    println!(
        "| bytes | `Presence` + `Preview` | `Motion` | `Motion`, packed per {} ms tick | `Motion`, packed + zstd dictionary |",
        args.pack_ms
    );
    println!("|---|---|---|---|---|");
    let kinds: std::collections::BTreeSet<_> = reports
        .iter()
        .flat_map(|(_, r)| r.tally.keys().copied())
        .collect();
    let cells = |f: &dyn Fn(&Report) -> u64| -> String {
        reports
            .iter()
            .map(|(_, r)| f(r).to_string())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    for (dir, kind) in kinds {
        let way = match dir {
            Direction::Up => "up",
            Direction::Down => "down",
        };
        let get = |r: &Report| r.tally.get(&(dir, kind)).map_or(0, |t| t.bytes);
        println!("| {way}: `{kind}` | {} |", cells(&get));
    }
    for (name, dir) in [
        ("presence lane, up", Direction::Up),
        ("presence lane, down", Direction::Down),
    ] {
        println!(
            "| {name} | {} |",
            cells(&|r: &Report| r.bytes(dir, is_presence_lane))
        );
    }
    println!(
        "| **all frames, both ways** | {} |",
        cells(&|r: &Report| r.total())
    );
    println!();
    println!("| lever | all frames before → after | change | share of the total saving |");
    println!("|---|---|---|---|");
    let totals: Vec<u64> = reports.iter().map(|(_, r)| r.total()).collect();
    // The baseline: version-1 entries and the first presence encoding (the build).
    let before = totals[0] + first.bound_saved;
    let saved = before.saturating_sub(totals[3]).max(1);
    println!(
        "| context binding (version-2 entries: {} signed entries carried) | {before} → {} | {} | {:.0} % |",
        first.signed_entries,
        totals[0],
        pct(before, totals[0]),
        first.bound_saved as f64 / saved as f64 * 100.0
    );
    for (name, i) in [
        ("quantization (`Motion`)", 1usize),
        (
            "batching (one pack per tick; an update superseded within it not sent)",
            2,
        ),
        ("zstd dictionary", 3),
    ] {
        let (from, to) = (totals[i - 1], totals[i]);
        println!(
            "| {name} | {from} → {to} | {} | {:.0} % |",
            pct(from, to),
            from.saturating_sub(to) as f64 / saved as f64 * 100.0
        );
    }
    println!(
        "| for comparison: all levers with the 11 ms tick (every update sent) | {before} → {} | {} | — |",
        every_frame.total(),
        pct(before, every_frame.total())
    );
    println!(
        "| **all together** | {before} → {} | {} | 100 % |",
        totals[3],
        pct(before, totals[3])
    );
    interest(&args);
    if args.world_entities > 0 {
        world(&args);
    }
}

/// Partial replicas: `--crowd` members over a `--world-m` world of `--world-entities`
/// entities, each working on what is within `--world-view-m` of where it stands (dragging,
/// mesh edits, placing), with nothing filtered, presence filtered, and presence and the scene
/// filtered (each member holds only its region).
fn world(args: &Args) {
    let run = |filter| {
        play(&Workload {
            view_m: Some(args.world_view_m),
            filter,
            population: args.world_entities,
            pack_ms: args.pack_ms,
            ..crowd(args)
        })
    };
    let runs: Vec<(Filter, Report)> = [Filter::Nothing, Filter::Presence, Filter::PresenceAndScene]
        .into_iter()
        .map(|f| {
            let started = std::time::Instant::now();
            let r = run(f);
            eprintln!("{f:?}: played in {:.1} s", started.elapsed().as_secs_f64());
            (f, r)
        })
        .collect();
    for (f, r) in &runs {
        assert!(
            r.in_step.iter().all(|ok| *ok),
            "{f:?}: a replica is not the server's: {:?}",
            r.in_step
        );
        assert_eq!(r.resyncs, 0, "{f:?}: a replica had to resync");
    }
    let base = &runs[0].1;
    println!();
    println!(
        "{} members in groups of four (3 m apart) over a {} m world of {} entities, {} virtual seconds, each working on what is within ±{} m (every replica in step at the end, no resync):",
        args.crowd, args.world_m, runs[2].1.scene_entities, args.crowd_seconds, args.world_view_m
    );
    println!();
    println!("| | nothing filtered | presence filtered | presence and scene filtered |");
    println!("|---|---|---|---|");
    let row = |name: &str, v: &dyn Fn(&Report) -> u64| {
        let b = v(base);
        let cells: Vec<String> = runs
            .iter()
            .map(|(_, r)| {
                let x = v(r);
                if std::ptr::eq(r, base) {
                    format!("{x}")
                } else {
                    format!("{x} ({})", pct(b, x))
                }
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    row("scene updates delivered (entries and states)", &|r| {
        r.scene_updates
    });
    row("presence-lane messages delivered", &|r| r.relayed);
    row("all updates delivered", &|r| r.scene_updates + r.relayed);
    row("snapshots, down, bytes", &|r| {
        r.bytes(Direction::Down, |k| k == "Snapshot" || k == "SnapshotChunk")
    });
    row("log and the rest (no snapshots), down, bytes", &|r| {
        r.bytes(Direction::Down, |k| {
            !is_presence_lane(k) && k != "Snapshot" && k != "SnapshotChunk"
        })
    });
    row("presence lane, down, bytes", &|r| {
        r.bytes(Direction::Down, is_presence_lane)
    });
    row("everything, down, bytes", &|r| {
        r.bytes(Direction::Down, |_| true)
    });
}

/// The crowd runs' common part, from the arguments.
const fn crowd(args: &Args) -> Workload {
    Workload::crowd(args.crowd, args.crowd_seconds, args.seed, args.world_m)
}

/// The presence lane with and without interest: `--crowd` members spread over `--world-m`,
/// each asking for `--view-m` around where they stand.
fn interest(args: &Args) {
    let run = |view_m| {
        play(&Workload {
            view_m,
            filter: Filter::Presence,
            pack_ms: args.pack_ms,
            ..crowd(args)
        })
    };
    let (all, near) = (run(None), run(Some(args.view_m)));
    assert_converged(&all, "no interest");
    assert_converged(&near, "interest");
    println!();
    println!(
        "{} members in groups of four (3 m apart) spread over a {} m grid, {} virtual seconds, each viewing ±{} m around where they stand:",
        args.crowd, args.world_m, args.crowd_seconds, args.view_m
    );
    println!();
    println!("| | no interest | interest | change |");
    println!("|---|---|---|---|");
    println!(
        "| presence-lane messages delivered | {} | {} | {} |",
        all.relayed,
        near.relayed,
        pct(all.relayed, near.relayed)
    );
    for (name, dir) in [
        ("presence lane, up", Direction::Up),
        ("presence lane, down", Direction::Down),
    ] {
        let (a, b) = (
            all.bytes(dir, is_presence_lane),
            near.bytes(dir, is_presence_lane),
        );
        println!("| {name}, bytes | {a} | {b} | {} |", pct(a, b));
    }
    let (a, b) = (
        all.bytes(Direction::Down, |k| !is_presence_lane(k)),
        near.bytes(Direction::Down, |k| !is_presence_lane(k)),
    );
    println!(
        "| log and everything else, down, bytes | {a} | {b} | {} |",
        pct(a, b)
    );
}

/// Trains the presence dictionary on the raw packs of the typical session and writes it.
fn train(args: &Args, path: &std::path::Path) {
    let r = play(&Workload {
        members: args.members,
        seconds: args.seconds,
        seed: args.seed,
        form: PresenceForm::MotionPacked,
        world_m: None,
        view_m: None,
        filter: Filter::Nothing,
        population: 0,
        pack_ms: args.pack_ms,
    });
    let dictionary = zstd::dict::from_samples(&r.raw_packs, args.dictionary_bytes)
        .expect("enough samples to train on");
    std::fs::write(path, &dictionary).expect("the dictionary file is writable");
    println!(
        "{} bytes trained on {} packs ({} bytes) into {}",
        dictionary.len(),
        r.raw_packs.len(),
        r.raw_packs.iter().map(Vec::len).sum::<usize>(),
        path.display()
    );
}
