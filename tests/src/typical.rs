//! A typical collaborative session, played on a virtual 90 Hz clock through the real sans-IO
//! [`Session`] and real [`ClientConnection`]s, with every frame on the wire counted by message
//! kind and direction: the workload the wire budget is measured on (issue 17).
//!
//! Eight members by default, half in a headset (head and both hands at 90 Hz, previews every
//! frame while a grab lasts) and half in the browser (camera and cursor at 72 Hz, previews at
//! most every 30 ms). Each starts by placing three objects; then, about every five seconds,
//! drags something for one to two seconds and commits the move on release (the delta commands
//! both clients send, `scene::transform_commands`); about every eight seconds makes a mesh edit
//! (the simulation's element-aware edits). The last member joins halfway through (a snapshot).
//! Nothing is lost or delayed: the point is the bytes, not the network.
//!
//! The same seed gives the same session under every [`PresenceForm`], so two runs differ only
//! in how the presence lane is encoded.

#![allow(
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "simulation bookkeeping on virtual frames, small counters and byte totals"
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use glam::{Quat, Vec3};
use meshwork_protocol::client::{ClientConnection, ClientPhase};
use meshwork_protocol::codec::{decode_payload, to_frame};
use meshwork_protocol::command::{Primitive, Transform};
use meshwork_protocol::interest::{Region, point_mm};
use meshwork_protocol::motion::{Figure, Motion, MotionContent, low_seq};
use meshwork_protocol::scene::transform_commands;
use meshwork_protocol::wire::{ClientMsg, Pose, Presence, Preview, PreviewTransform, ServerMsg};
use meshwork_protocol::{Command, Ed25519Signer, EntityId, SessionId};
use meshwork_session::{ClientId, Config, Input, Output, Session};

use crate::sim::{Rng, SimClient};

/// How clients encode presence and transform previews.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceForm {
    /// `Presence` and one `Preview` per entity (the encoding before `Motion`); each relayed
    /// message in its own frame.
    Legacy,
    /// `Motion`, the compact bit-packed form; each relayed message in its own frame.
    Motion,
    /// `Motion`, and clients read packs without compression: what each is owed in a tick goes
    /// in one frame.
    MotionPacked,
    /// `Motion` in packs compressed with the presence dictionary (what clients of this build
    /// do).
    MotionCompressed,
}

impl PresenceForm {
    /// Every form, from the oldest.
    pub const ALL: [Self; 4] = [
        Self::Legacy,
        Self::Motion,
        Self::MotionPacked,
        Self::MotionCompressed,
    ];

    /// The pack dictionaries its clients offer.
    fn codecs(self) -> Vec<u32> {
        match self {
            Self::Legacy | Self::Motion => Vec::new(),
            Self::MotionPacked => vec![meshwork_protocol::packed::RAW],
            Self::MotionCompressed => meshwork_protocol::packed::READABLE.to_vec(),
        }
    }
}

/// Which way a frame went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

/// Frames and bytes (frame header included) of one kind of message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Frames.
    pub frames: u64,
    /// Bytes.
    pub bytes: u64,
}

/// What the server filters by each member's view ([`Workload::view_m`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Nothing: everyone gets everything (the build before interest).
    Nothing,
    /// Others' presence, previews and selections (`ClientMsg::Interest`).
    Presence,
    /// That, and the scene: each member holds only what is in its view (`ClientMsg::Hold`).
    PresenceAndScene,
}

/// The session to play.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// Members, the last of whom joins halfway through.
    pub members: usize,
    /// Virtual seconds.
    pub seconds: u64,
    /// Everything random comes from here.
    pub seed: u64,
    /// How presence and previews travel.
    pub form: PresenceForm,
    /// Members stand in groups of four spread over a square grid this many metres across;
    /// `None`: a shared room, four abreast 3 m apart (the typical session).
    pub world_m: Option<f32>,
    /// Each member works within this many metres of where they stand: drags only what they
    /// placed (with a `population`, anything in view) and, as `filter` says, asks the server
    /// for only that part of the world; `None`: any entity, and no filter.
    pub view_m: Option<f32>,
    /// What the server filters by the view (nothing without one).
    pub filter: Filter,
    /// Entities spread at random over the world (`world_m` across) by a builder before the
    /// members join; what members receive while it builds is not counted.
    pub population: usize,
    /// The server's presence tick (`Config::presence_pack_ms`).
    pub pack_ms: u64,
}

impl Workload {
    /// Eight members for `seconds`, seed 1.
    #[must_use]
    pub const fn typical(seconds: u64, form: PresenceForm) -> Self {
        Self {
            members: 8,
            seconds,
            seed: 1,
            form,
            world_m: None,
            view_m: None,
            filter: Filter::Nothing,
            population: 0,
            pack_ms: meshwork_session::session::DEFAULT_PRESENCE_PACK_MS,
        }
    }
}

impl Workload {
    /// `members` in groups of four over a square `world_m` across, presence as clients send it
    /// (compressed packs), no view, nothing filtered, no population, the default tick: where
    /// the crowd runs start.
    #[must_use]
    pub const fn crowd(members: usize, seconds: u64, seed: u64, world_m: f32) -> Self {
        Self {
            members,
            seconds,
            seed,
            form: PresenceForm::MotionCompressed,
            world_m: Some(world_m),
            view_m: None,
            filter: Filter::Nothing,
            population: 0,
            pack_ms: meshwork_session::session::DEFAULT_PRESENCE_PACK_MS,
        }
    }
}

/// What went over the wire, and where everyone ended.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// By direction and message kind.
    pub tally: BTreeMap<(Direction, &'static str), Tally>,
    /// The server's state hash at the end.
    pub server_hash: [u8; 32],
    /// Each member's replica state hash at the end.
    pub replica_hashes: Vec<[u8; 32]>,
    /// Entries in the server's log.
    pub entries: usize,
    /// Drags committed.
    pub drags: u64,
    /// Presence-lane messages delivered to members (a pack counts as the messages in it).
    pub relayed: u64,
    /// The uncompressed bytes of every pack the first member received (training samples for
    /// the presence dictionary; only under [`PresenceForm::MotionPacked`]).
    pub raw_packs: Vec<Vec<u8>>,
    /// Signed entries carried (up in `Submit`, down in `Entries` and `History`).
    pub signed_entries: u64,
    /// The bytes those entries would have taken more in protocol version 1's form (each
    /// [`version_1_extra`]): what binding the context saved.
    pub bound_saved: u64,
    /// Scene updates delivered to members: entries (in `Entries` and `Held`) and entity or
    /// author states (in sealed deltas and `Held`); snapshots not counted.
    pub scene_updates: u64,
    /// Per member: whether its replica ended equal to the server's (for one holding a region,
    /// to the server's entities inside it, found by scanning the server's scene).
    pub in_step: Vec<bool>,
    /// Resyncs members asked for.
    pub resyncs: u64,
    /// Entities in the server's scene at the end.
    pub scene_entities: usize,
}

/// The bytes one entry takes more on the wire in protocol version 1 than in version 2 (the
/// context the bound layout leaves out, `seen_lamport` sent whole instead of as the distance
/// back, the signature's own length prefix), measured with the real encoders: the same body is
/// signed again in version 1's layout (the session, key and signature are fixed-size, so a
/// throwaway key gives the same length). 0 for an entry already in that layout.
#[must_use]
pub fn version_1_extra(entry: &meshwork_protocol::SignedEntry) -> u64 {
    use meshwork_protocol::sign::KeyId;
    use meshwork_protocol::wire::Submit;
    let Ok(mut body) = entry.decode_body() else {
        return 0;
    };
    if !body.is_bound() {
        return 0;
    }
    body.version = 1;
    body.session = Some(SessionId([0; 16]));
    body.key_id = Some(KeyId([0; 8]));
    let Ok(then) = meshwork_protocol::SignedEntry::sign(&body, &Ed25519Signer::from_seed([0; 32]))
    else {
        return 0;
    };
    // Version 1 on the wire: the entry as it serializes on its own (two byte strings).
    // Version 2: one entry of a `Submit`, less the frame header, the tag and the count.
    let old = to_frame(&then).map_or(0, |f| f.len().saturating_sub(4));
    let new = to_frame(&ClientMsg::Submit(Submit {
        entries: vec![entry.clone()],
    }))
    .map_or(0, |f| f.len().saturating_sub(4 + 2));
    old.saturating_sub(new) as u64
}

impl Report {
    /// Bytes of every frame in `direction`, of the kinds `pick` takes.
    #[must_use]
    pub fn bytes(&self, direction: Direction, pick: impl Fn(&str) -> bool) -> u64 {
        self.tally
            .iter()
            .filter(|((d, k), _)| *d == direction && pick(k))
            .map(|(_, t)| t.bytes)
            .sum()
    }

    /// Bytes of every frame, both ways.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.tally.values().map(|t| t.bytes).sum()
    }
}

/// Whether a message kind travels on the presence lane.
#[must_use]
pub fn is_presence_lane(kind: &str) -> bool {
    matches!(
        kind,
        "Presence" | "Preview" | "EditPreview" | "ElementSelection" | "Motion" | "Packed"
    )
}

/// Variant names by postcard tag: the wire's append-only order.
const CLIENT_KINDS: [&str; 16] = [
    "Hello",
    "JoinProof",
    "Submit",
    "Ping",
    "Close",
    "Resync",
    "FetchLog",
    "Presence",
    "Preview",
    "EditPreview",
    "ElementSelection",
    "Resume",
    "Motion",
    "Codecs",
    "Interest",
    "Hold",
];
const SERVER_KINDS: [&str; 23] = [
    "Challenge",
    "Welcome",
    "JoinRefused",
    "Entries",
    "Ack",
    "CommandRefused",
    "Pong",
    "Close",
    "Snapshot",
    "SnapshotChunk",
    "StateHash",
    "History",
    "Presence",
    "Delta",
    "Left",
    "Preview",
    "EditPreview",
    "ElementSelection",
    "Roster",
    "SealedDelta",
    "Motion",
    "Packed",
    "Held",
];

fn kind(kinds: &[&'static str], payload: &[u8]) -> &'static str {
    payload
        .first()
        .and_then(|t| kinds.get(usize::from(*t)))
        .copied()
        .unwrap_or("?")
}

const FRAME_MS: u64 = 11;
const SESSION: SessionId = SessionId([0x7e; 16]);

#[derive(Clone, Copy, Debug)]
struct Drag {
    entity: EntityId,
    from: Transform,
    to: Transform,
    step: Vec3,
    turn: Quat,
    frames_left: u32,
}

struct Member {
    sim: SimClient,
    headset: bool,
    joined_at_frame: u64,
    connected: bool,
    home: Vec3,
    presence_seq: u32,
    drag: Option<Drag>,
    last_preview_frame: u64,
    placed: u32,
    /// Builds the population; not a member whose traffic counts.
    builder: bool,
}

struct Play {
    session: Session,
    members: Vec<Member>,
    rng: Rng,
    now_ms: u64,
    form: PresenceForm,
    /// Members drag only what they placed.
    local: bool,
    /// Members work on anything inside this region around where they stand (half-edge, m).
    view: Option<f32>,
    report: Report,
}

impl Play {
    fn count(&mut self, direction: Direction, kind: &'static str, bytes: usize) {
        let t = self.report.tally.entry((direction, kind)).or_default();
        t.frames += 1;
        t.bytes += bytes as u64;
    }

    fn carried(&mut self, entries: &[meshwork_protocol::SignedEntry]) {
        self.report.signed_entries += entries.len() as u64;
        self.report.bound_saved += entries.iter().map(version_1_extra).sum::<u64>();
    }

    /// One client frame to the server (`datagram`: the presence lane).
    fn up(&mut self, i: usize, msg: &ClientMsg, datagram: bool) {
        let Ok(frame) = to_frame(msg) else { return };
        if let ClientMsg::Submit(s) = msg {
            self.carried(&s.entries);
        }
        let payload = frame.get(4..).unwrap_or_default().to_vec();
        self.count(Direction::Up, kind(&CLIENT_KINDS, &payload), frame.len());
        let client = ClientId(i as u64);
        let input = if datagram {
            Input::Datagram {
                client,
                bytes: payload,
            }
        } else {
            Input::Payload {
                client,
                bytes: payload,
            }
        };
        self.session.handle_input(self.now_ms, input);
        self.pump();
    }

    /// Everything the server has to say, delivered at once; the store acknowledges at once.
    fn pump(&mut self) {
        loop {
            let mut acks = Vec::new();
            let mut deliveries = Vec::new();
            while let Some(out) = self.session.poll_output() {
                match out {
                    Output::Send { client, frame, .. } => deliveries.push((client, frame)),
                    Output::Persist { batch, .. } => acks.push(batch),
                    _ => {}
                }
            }
            for (client, frame) in deliveries {
                let payload = frame.get(4..).unwrap_or_default();
                self.count(Direction::Down, kind(&SERVER_KINDS, payload), frame.len());
                let msg = decode_payload::<ServerMsg>(payload);
                match &msg {
                    Ok(ServerMsg::Entries(e)) => {
                        self.carried(&e.entries);
                        self.report.scene_updates += e.entries.len() as u64;
                    }
                    Ok(ServerMsg::History(h)) => self.carried(&h.entries),
                    Ok(ServerMsg::SealedDelta(d)) => {
                        self.report.scene_updates +=
                            d.decode().map_or(0, |d| d.entities.len() + d.authors.len()) as u64;
                    }
                    Ok(ServerMsg::Held(h)) => {
                        self.carried(&h.entries);
                        let states = h
                            .delta
                            .as_ref()
                            .and_then(meshwork_protocol::wire::SealedDelta::decode)
                            .map_or(0, |d| d.entities.len() + d.authors.len());
                        self.report.scene_updates += (h.entries.len() + states) as u64;
                    }
                    _ => {}
                }
                if let (Ok(msg), Some(m)) = (msg, self.members.get_mut(client.0 as usize)) {
                    if let ServerMsg::Packed(p) = &msg {
                        if client.0 == 0 && p.dictionary == meshwork_protocol::packed::RAW {
                            self.report.raw_packs.push(p.bytes.clone());
                        }
                        self.report.relayed += m.sim.conn.unpack(p).len() as u64;
                    } else if is_presence_lane(kind(&SERVER_KINDS, payload)) {
                        self.report.relayed += 1;
                    }
                    m.sim.conn.handle(&msg);
                }
            }
            for i in 0..self.members.len() {
                if !self.members[i].connected {
                    continue;
                }
                while let Some(msg) = self.members[i].sim.conn.poll_transmit() {
                    if matches!(msg, ClientMsg::Resync(_)) {
                        self.report.resyncs += 1;
                    }
                    self.up(i, &msg, false);
                }
            }
            if acks.is_empty() {
                break;
            }
            for batch in acks {
                self.session
                    .handle_input(self.now_ms, Input::PersistAck { batch });
            }
        }
    }

    /// With a population, the region member `i` works in (anything in it, whoever placed it).
    fn near(&self, i: usize) -> Option<Region> {
        self.view.map(|v| Region::around(self.members[i].home, v))
    }

    /// The builder joins, spreads `n` entities at random over a square `world_m` across, and
    /// leaves. It holds a region nowhere near, so it is sent nothing of what it builds.
    fn populate(&mut self, n: usize, world_m: f32) {
        let b = self.members.len() - 1;
        self.members[b]
            .sim
            .conn
            .set_hold(Some(Region::around(Vec3::splat(1.0e6), 1.0)));
        self.connection(b, true);
        let Some(author) = self.members[b].sim.conn.author() else {
            return;
        };
        // Small primitives: a hundred thousand of them stay within the session's triangle
        // limit (`Limits::DEFAULT`).
        let primitives = [Primitive::Cube, Primitive::Pyramid, Primitive::Plane];
        let mut k = 0u32;
        while (k as usize) < n {
            let chunk: Vec<Command> = (0..64u32)
                .take_while(|j| ((k + j) as usize) < n)
                .map(|j| {
                    let x = self.rng.below(1_000_001) as f32 / 1.0e6 - 0.5;
                    let z = self.rng.below(1_000_001) as f32 / 1.0e6 - 0.5;
                    Command::Spawn {
                        entity: EntityId::new(author, 100_000 + k + j),
                        primitive: primitives[((k + j) % 3) as usize],
                        transform: Transform {
                            translation: Vec3::new(x * world_m, 0.5, z * world_m),
                            ..Transform::IDENTITY
                        },
                    }
                })
                .collect();
            k += chunk.len() as u32;
            let _ = self.members[b].sim.conn.submit(chunk);
            self.pump();
        }
        let built = self.session.scene().entities.len();
        assert!(
            built >= n,
            "the session took {built} of the {n} entities of the population"
        );
        self.connection(b, false);
        // What the members receive from here on is what counts.
        self.report = Report::default();
    }

    /// Member `i` connects (`up`) or its connection closes; what that sets off goes out.
    fn connection(&mut self, i: usize, up: bool) {
        self.members[i].connected = up;
        let client = ClientId(i as u64);
        let input = if up {
            Input::Connected { client }
        } else {
            Input::Disconnected { client }
        };
        self.session.handle_input(self.now_ms, input);
        self.pump();
    }

    fn joined(&self, i: usize) -> bool {
        matches!(self.members[i].sim.conn.phase(), ClientPhase::Joined(_))
            && self.members[i].sim.conn.replica().is_synced()
    }

    fn presence(&mut self, i: usize, frame: u64) {
        let m = &mut self.members[i];
        // Browsers at 72 Hz (four frames in five), headsets at 90 Hz.
        if !m.headset && frame % 5 == 4 {
            return;
        }
        let t = frame as f32 * FRAME_MS as f32 / 1000.0;
        let sway = Vec3::new(
            (t * 0.7).sin() * 0.3,
            (t * 1.3).sin() * 0.02,
            (t * 0.5).cos() * 0.3,
        );
        let look = Quat::from_rotation_y((t * 0.4).sin() * 0.8) * Quat::from_rotation_x(-0.2);
        let head_at = m.home + Vec3::Y * if m.headset { 1.65 } else { 2.2 } + sway;
        let head = Pose::quantize(head_at, look);
        let figure = if m.headset {
            let hand = |side: f32, phase: f32| {
                let reach = Vec3::new(side * 0.25, -0.45, -0.35)
                    + Vec3::new((t * 2.0 + phase).sin(), (t * 1.7 + phase).cos(), 0.0) * 0.08;
                Pose::quantize(
                    head_at + look * reach,
                    look * Quat::from_rotation_z(side * 0.3 + (t + phase).sin() * 0.2),
                )
            };
            Figure {
                head: Some(head),
                hands: [Some(hand(-1.0, 0.0)), Some(hand(1.0, 1.5))],
                cursor: None,
            }
        } else {
            let cursor = m.home + Vec3::new((t * 0.9).sin() * 2.0, 0.0, (t * 0.6).cos() * 2.0);
            Figure {
                head: Some(head),
                hands: [None, None],
                cursor: Some(Pose::quantize(cursor, Quat::IDENTITY)),
            }
        };
        m.presence_seq = m.presence_seq.wrapping_add(1);
        let msg = match self.form {
            PresenceForm::Legacy => ClientMsg::Presence(Presence {
                seq: m.presence_seq,
                head: figure.head,
                hands: figure.hands,
                cursor: figure.cursor,
            }),
            PresenceForm::Motion | PresenceForm::MotionPacked | PresenceForm::MotionCompressed => {
                ClientMsg::Motion(Motion::of_figure(low_seq(m.presence_seq), figure))
            }
        };
        self.up(i, &msg, true);
    }

    fn preview(&mut self, i: usize, entity: EntityId, transform: Option<Transform>) {
        let m = &mut self.members[i];
        m.presence_seq = m.presence_seq.wrapping_add(1);
        let quantized = transform.as_ref().map(PreviewTransform::quantize);
        let msg = match self.form {
            PresenceForm::Legacy => ClientMsg::Preview(Preview {
                seq: m.presence_seq,
                entity,
                transform: quantized,
            }),
            PresenceForm::Motion | PresenceForm::MotionPacked | PresenceForm::MotionCompressed => {
                let content =
                    MotionContent::previews(low_seq(m.presence_seq), [(entity, quantized)]);
                let Ok(motion) = Motion::encode(&content) else {
                    return;
                };
                ClientMsg::Motion(motion)
            }
        };
        self.up(i, &msg, true);
    }

    fn drag(&mut self, i: usize, frame: u64) {
        let headset = self.members[i].headset;
        match self.members[i].drag {
            None => {
                // About one drag every five seconds.
                if !self.rng.chance(1.0 / (5.0 * 90.0)) {
                    return;
                }
                let scene = self.members[i].sim.conn.replica().scene();
                let own = self.members[i].sim.conn.author();
                let near = self.near(i);
                let candidates: Vec<_> = scene
                    .entities
                    .iter()
                    .filter(|(id, e)| match &near {
                        Some(region) => region.contains(point_mm(e.transform.translation)),
                        None => !self.local || Some(id.namespace()) == own,
                    })
                    .collect();
                let n = candidates.len() as u64;
                if n == 0 {
                    return;
                }
                let pick = self.rng.below(n) as usize;
                let Some((entity, e)) = candidates.get(pick) else {
                    return;
                };
                let (entity, from) = (**entity, e.transform);
                let frames_left = 90 + self.rng.below(90) as u32;
                let dir = Vec3::new(
                    self.rng.below(200) as f32 / 100.0 - 1.0,
                    self.rng.below(100) as f32 / 200.0 - 0.25,
                    self.rng.below(200) as f32 / 100.0 - 1.0,
                );
                let turn = if headset {
                    Quat::from_rotation_y(0.004)
                } else {
                    Quat::IDENTITY
                };
                self.members[i].drag = Some(Drag {
                    entity,
                    from,
                    to: from,
                    step: dir * 0.01,
                    turn,
                    frames_left,
                });
            }
            Some(mut d) => {
                d.to.translation += d.step;
                d.to.rotation = (d.turn * d.to.rotation).normalize();
                d.frames_left = d.frames_left.saturating_sub(1);
                if d.frames_left == 0 {
                    self.members[i].drag = None;
                    self.preview(i, d.entity, None);
                    let commands = transform_commands(d.entity, &d.from, &d.to);
                    let _ = self.members[i].sim.conn.submit(commands);
                    self.report.drags += 1;
                    self.pump();
                    return;
                }
                self.members[i].drag = Some(d);
                // Headsets every frame; the browser at most every 30 ms.
                let due = headset || frame >= self.members[i].last_preview_frame + 3;
                if due {
                    self.members[i].last_preview_frame = frame;
                    self.preview(i, d.entity, Some(d.to));
                }
            }
        }
    }

    fn edit(&mut self, i: usize) {
        let m = &mut self.members[i];
        let Some(author) = m.sim.conn.author() else {
            return;
        };
        if m.placed < 3 {
            m.placed += 1;
            let entity = EntityId::new(author, 1000 + m.placed);
            let transform = Transform {
                translation: m.home + Vec3::new(m.placed as f32 - 2.0, 0.5, -1.5),
                ..Transform::IDENTITY
            };
            let primitive =
                [Primitive::Cube, Primitive::Sphere, Primitive::Cylinder][m.placed as usize % 3];
            let _ = m.sim.conn.submit(vec![Command::Spawn {
                entity,
                primitive,
                transform,
            }]);
            self.pump();
            return;
        }
        // About one mesh edit every eight seconds.
        if !self.rng.chance(1.0 / (8.0 * 90.0)) {
            return;
        }
        let budget =
            crate::sim::edited_triangles(self.session.scene()) <= crate::sim::GROW_EDITED_TRIANGLES;
        let near = self.near(i);
        let keep = |e: &meshwork_protocol::scene::Entity| {
            near.is_none_or(|r| r.contains(point_mm(e.transform.translation)))
        };
        let m = &mut self.members[i];
        if let Some(cmd) = crate::sim::mesh_edit(&mut self.rng, &mut m.sim, author, budget, &keep) {
            let _ = m.sim.conn.submit(vec![cmd]);
            self.pump();
        }
    }
}

/// Where member `i` of `n` stands: in groups of four, 3 m apart, the groups on a square grid
/// `world_m` across centred on the origin; or all in the shared room.
fn home_of(i: usize, n: usize, world_m: Option<f32>) -> Vec3 {
    let Some(world_m) = world_m else {
        return Vec3::new((i % 4) as f32 * 3.0 - 4.5, 0.0, (i / 4) as f32 * 3.0);
    };
    let groups = n.div_ceil(4);
    let side = (1..).find(|s| s * s >= groups).unwrap_or(1);
    let spacing = world_m / side as f32;
    let (group, seat) = (i / 4, i % 4);
    let (col, row) = ((group % side) as f32, (group / side) as f32);
    let half = world_m / 2.0 - spacing / 2.0;
    Vec3::new(
        col * spacing - half + (seat % 2) as f32 * 3.0,
        0.0,
        row * spacing - half + (seat / 2) as f32 * 3.0,
    )
}

/// Plays `workload` and reports every frame's bytes.
#[must_use]
pub fn play(workload: &Workload) -> Report {
    let mut rng = Rng::new(workload.seed);
    let server_key = Ed25519Signer::from_seed(crate::sim::seed_bytes(&mut rng));
    let mut config = Config::signed_by(
        SESSION,
        Arc::new(Ed25519Signer::from_seed(server_key.seed())),
    );
    config.rate_per_s = 1000;
    config.burst = 1000;
    if workload.population > 0 {
        // The builder submits the population as fast as the session takes it.
        config.rate_per_s = 1_000_000;
        config.burst = 1_000_000;
    }
    config.presence_pack_ms = workload.pack_ms;
    let now_ms = 1_800_000_000_000;
    let session = Session::new(config, crate::sim::seed_bytes(&mut rng), now_ms);
    let frames = workload.seconds * 1000 / FRAME_MS;
    let builder = usize::from(workload.population > 0);
    let members = (0..workload.members + builder)
        .map(|i| {
            let invite = crate::sim::editor_invite(SESSION, &server_key, now_ms, i);
            let signer = Ed25519Signer::from_seed(crate::sim::seed_bytes(&mut rng));
            let is_builder = i == workload.members;
            let late = i + 1 == workload.members && workload.members > 1;
            let mut conn = ClientConnection::new(signer, invite, "typical");
            conn.offer_codecs(workload.form.codecs());
            let home = home_of(i, workload.members, workload.world_m);
            if let (Some(view), false) = (workload.view_m, is_builder) {
                let region = Some(Region::around(home, view));
                if workload.filter != Filter::Nothing {
                    conn.set_interest(region);
                }
                if workload.filter == Filter::PresenceAndScene {
                    conn.set_hold(region);
                }
            }
            Member {
                sim: SimClient::new(conn),
                headset: i % 2 == 0,
                joined_at_frame: if late { frames / 2 } else { 0 },
                connected: false,
                home,
                presence_seq: 0,
                drag: None,
                last_preview_frame: 0,
                placed: 0,
                builder: is_builder,
            }
        })
        .collect();
    let mut play = Play {
        session,
        members,
        rng,
        now_ms,
        form: workload.form,
        local: workload.view_m.is_some(),
        view: workload.view_m.filter(|_| workload.population > 0),
        report: Report::default(),
    };
    if workload.population > 0 {
        play.populate(workload.population, workload.world_m.unwrap_or(100.0));
    }
    for frame in 0..frames {
        play.now_ms += FRAME_MS;
        for i in 0..play.members.len() {
            if play.members[i].builder {
                continue;
            }
            if !play.members[i].connected && frame >= play.members[i].joined_at_frame {
                play.connection(i, true);
            }
            if !play.joined(i) {
                continue;
            }
            play.presence(i, frame);
            play.drag(i, frame);
            play.edit(i);
        }
        if play
            .session
            .poll_timeout()
            .is_some_and(|t| t <= play.now_ms)
        {
            let now = play.now_ms;
            play.session.handle_input(now, Input::Tick);
            play.pump();
        }
    }
    // Settle: whatever the server still holds for a tick goes out.
    for _ in 0..100 {
        play.now_ms += FRAME_MS;
        let now = play.now_ms;
        play.session.handle_input(now, Input::Tick);
        play.pump();
    }
    let mut report = play.report;
    let server = play.session.scene();
    report.server_hash = server.state_hash();
    let members = || play.members.iter().filter(|m| !m.builder);
    report.replica_hashes = members()
        .map(|m| m.sim.conn.replica().scene().state_hash())
        .collect();
    report.in_step = members()
        .map(|m| {
            let replica = m.sim.conn.replica().scene();
            match m.sim.conn.hold() {
                None => replica.state_hash() == report.server_hash,
                Some(region) => {
                    let inside = server
                        .entities
                        .iter()
                        .filter(|(_, e)| region.contains(point_mm(e.transform.translation)))
                        .map(|(id, _)| *id)
                        .collect();
                    *replica == server.held_copy(&inside, replica.position, replica.lamport)
                }
            }
        })
        .collect();
    report.scene_entities = server.entities.len();
    report.entries = play.session.log().len();
    report
}

#[cfg(test)]
mod tests {
    use meshwork_protocol::sign::Signer as _;
    use meshwork_protocol::wire::Submit;
    use meshwork_protocol::{AuthorId, EntryBody, SignedEntry};

    use super::*;

    #[test]
    fn the_version_1_extra_is_what_the_same_entry_takes_more_in_version_1() {
        let s = Ed25519Signer::from_seed([5; 32]);
        let long = "n".repeat(300);
        for (seen, command) in [
            (
                56_700,
                Command::Translate {
                    entity: EntityId::new(AuthorId(3), 17),
                    delta: Vec3::X,
                },
            ),
            (
                56_788,
                Command::SetName {
                    entity: EntityId::new(AuthorId(3), 17),
                    name: long.clone(),
                },
            ),
            (3, Command::Select { entities: vec![] }),
        ] {
            let mut body = EntryBody::new(
                SessionId([9; 16]),
                AuthorId(3),
                s.public_key().key_id(),
                1_234,
                56_789,
                seen,
                command,
            );
            let now = SignedEntry::sign(&body, &s).unwrap();
            body.version = 1;
            let then = SignedEntry::sign(&body, &s).unwrap();
            // Version 2 on the wire: a `Submit` of it, less the tag and the count.
            let wire = to_frame(&ClientMsg::Submit(Submit {
                entries: vec![now.clone()],
            }))
            .unwrap()
            .len()
                - 4
                - 2;
            // Version 1 on the wire: the entry as it serializes on its own.
            let old = to_frame(&then).unwrap().len() - 4;
            // Its own session and key, not the throwaway ones the function signs with.
            assert_eq!(version_1_extra(&now), (old - wire) as u64, "{body:?}");
            assert_eq!(version_1_extra(&then), 0);
        }
        // The issue's `Translate`: 119 B in version 1, 90 B in version 2.
        let translate = EntryBody::new(
            SessionId([9; 16]),
            AuthorId(3),
            s.public_key().key_id(),
            1_234,
            56_789,
            56_700,
            Command::Translate {
                entity: EntityId::new(AuthorId(3), 17),
                delta: Vec3::new(0.25, 0.0, -0.5),
            },
        );
        assert_eq!(
            version_1_extra(&SignedEntry::sign(&translate, &s).unwrap()),
            29
        );
    }
}
