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
    AuthorId, Command, Ed25519Signer, EntityId, EntryBody, SessionId, SignedEntry, Signer as _,
    to_frame,
};
use meshwork_testkit::typical::{
    Direction, PresenceForm, Report, Workload, is_presence_lane, play,
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
}

fn frame_len(msg: &impl serde::Serialize) -> usize {
    to_frame(msg).map_or(0, |f| f.len())
}

fn single_messages() {
    let signer = Ed25519Signer::from_seed([3; 32]);
    let author = AuthorId(3);
    let entity = EntityId::new(author, 17);
    let entry = |command: Command| {
        let body = EntryBody::new(
            SessionId([9; 16]),
            author,
            signer.public_key().key_id(),
            1_234,
            56_789,
            56_700,
            command,
        );
        SignedEntry::sign(&body, &signer).expect("an entry body signs")
    };
    let transform = Transform {
        translation: Vec3::new(1.25, 0.5, -3.75),
        rotation: Quat::from_rotation_y(0.7),
        scale: Vec3::splat(1.5),
    };
    println!("| message | bytes (frame header included) |");
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
        let e = entry(command);
        let up = frame_len(&ClientMsg::Submit(Submit {
            entries: vec![e.clone()],
        }));
        let down = frame_len(&ServerMsg::Entries(Entries { entries: vec![e] }));
        println!("| {name}, alone in a `Submit` / `Entries` | {up} / {down} |");
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

fn row(name: &str, legacy: u64, motion: u64) {
    let change = if legacy == 0 {
        String::from("—")
    } else {
        format!("{:+.1} %", (motion as f64 / legacy as f64 - 1.0) * 100.0)
    };
    println!("| {name} | {legacy} | {motion} | {change} |");
}

fn main() {
    let args = Args::parse();
    single_messages();
    let run = |form| {
        play(&Workload {
            members: args.members,
            seconds: args.seconds,
            seed: args.seed,
            form,
        })
    };
    let (legacy, motion): (Report, Report) = (run(PresenceForm::Legacy), run(PresenceForm::Motion));
    assert_eq!(
        legacy.server_hash, motion.server_hash,
        "the same session both ways"
    );
    for r in [&legacy, &motion] {
        assert!(
            r.replica_hashes.iter().all(|h| *h == r.server_hash),
            "every replica converged"
        );
    }
    println!();
    println!(
        "{} members, {} virtual seconds, seed {}: {} entries, {} drags committed",
        args.members, args.seconds, args.seed, motion.entries, motion.drags
    );
    println!();
    println!("| bytes | `Presence` + `Preview` | `Motion` | change |");
    println!("|---|---|---|---|");
    let kinds: std::collections::BTreeSet<_> = legacy
        .tally
        .keys()
        .chain(motion.tally.keys())
        .copied()
        .collect();
    for (dir, kind) in kinds {
        let get = |r: &Report| r.tally.get(&(dir, kind)).map_or(0, |t| t.bytes);
        let way = match dir {
            Direction::Up => "up",
            Direction::Down => "down",
        };
        row(&format!("{way}: `{kind}`"), get(&legacy), get(&motion));
    }
    for (name, dir) in [
        ("presence lane, up", Direction::Up),
        ("presence lane, down", Direction::Down),
    ] {
        row(
            name,
            legacy.bytes(dir, is_presence_lane),
            motion.bytes(dir, is_presence_lane),
        );
    }
    row("**all frames, both ways**", legacy.total(), motion.total());
}
