//! A seeded simulated network on a virtual clock: the sans-IO [`Session`] as host and N sans-IO
//! [`ClientConnection`]s, with latency, jitter, loss, reordering and duplication applied to
//! every frame after the join handshake. Same seed, same run, bit for bit: a failing seed
//! replays exactly ([`Sim::trace_hash`] fingerprints everything delivered).
//!
//! The workload ([`Sim::frame`] with `workload`) mixes entity edits with mesh edits that name
//! element ids from the issuing client's own replica, which may be stale: the host refuses
//! those naming elements that are gone or no longer fit (typed refusals, counted in
//! [`Sim::refused`]), exactly as it would a real client's. Mesh sizes are bounded by a budget
//! (`GROW_EDITED_TRIANGLES`) so a run stays fast in a debug build.

#![allow(
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    reason = "simulation bookkeeping on virtual milliseconds and small counters"
)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use glam::{Quat, Vec3};
use meshwork_protocol::client::{ClientConnection, ClientPhase};
use meshwork_protocol::codec::{decode_payload, to_frame};
use meshwork_protocol::command::{ExtrudeDirection, MAX_FACE_CORNERS, Primitive, Transform};
use meshwork_protocol::editmesh::{Axis, EdgeKey, EditMesh, FaceKey, VertexKey};
use meshwork_protocol::scene::{Geometry, Scene};
use meshwork_protocol::wire::{ClientMsg, Invite, InviteBody, ServerMsg};
use meshwork_protocol::{
    AuthorId, Command, CommandKind, Domain, Ed25519Signer, EntityId, Role, SessionId, ToolId,
};
use meshwork_session::{ClientId, Config, Input, Output, Session};
use sha2::{Digest, Sha256};

/// Network conditions.
#[derive(Clone, Copy, Debug)]
pub struct NetConfig {
    /// One-way latency, ms.
    pub latency_ms: u64,
    /// Extra uniform random delay, ms.
    pub jitter_ms: u64,
    /// Probability a frame is lost.
    pub loss: f64,
    /// Probability a frame is held back long enough to overtake (reordering).
    pub reorder: f64,
    /// Probability a frame is delivered twice.
    pub duplicate: f64,
}

impl NetConfig {
    /// A perfect network with `latency_ms`.
    #[must_use]
    pub const fn clean(latency_ms: u64) -> Self {
        Self {
            latency_ms,
            jitter_ms: 0,
            loss: 0.0,
            reorder: 0.0,
            duplicate: 0.0,
        }
    }
}

/// SplitMix64.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        #[allow(
            clippy::cast_precision_loss,
            reason = "a probability needs 53 bits at most"
        )]
        let x = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        x < p
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Dest {
    Server(usize),
    Client(usize),
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Packet {
    at_ms: u64,
    order: u64,
    dest: Dest,
    payload: Vec<u8>,
}

/// One simulated client.
#[derive(Debug)]
pub struct SimClient {
    /// The sans-IO connection.
    pub conn: ClientConnection<Ed25519Signer>,
    /// Entities this client spawned and has not deleted.
    pub owned: Vec<EntityId>,
    next_entity: u32,
    /// Resyncs it asked for.
    pub resyncs: u64,
}

impl SimClient {
    /// A client that has placed nothing yet.
    pub(crate) const fn new(conn: ClientConnection<Ed25519Signer>) -> Self {
        Self {
            conn,
            owned: Vec::new(),
            next_entity: 0,
            resyncs: 0,
        }
    }
}

/// Host + clients + network.
#[derive(Debug)]
pub struct Sim {
    /// The authoritative session.
    pub session: Session,
    /// The clients.
    pub clients: Vec<SimClient>,
    net: NetConfig,
    rng: Rng,
    now_ms: u64,
    order: u64,
    queue: BinaryHeap<Reverse<Packet>>,
    trace: Sha256,
    /// Frames the network dropped.
    pub dropped: u64,
    /// Fan-outs the host sent as scene deltas.
    pub deltas: u64,
    /// Connections the host closed, with the reason (a healthy run has none).
    pub closed: Vec<(u64, String)>,
    /// Entries the host refused, by refusal code (`RefusalCode::as_str`).
    pub refused: BTreeMap<&'static str, u64>,
    /// Resyncs clients asked for, by reason (`ResyncReason::as_str`).
    pub resync_reasons: BTreeMap<&'static str, u64>,
}

const FRAME_MS: u64 = 11; // 90 Hz
const SESSION: SessionId = SessionId([0x51; 16]);

impl Sim {
    /// A session with `clients` editors on `net`, everything derived from `seed`.
    #[must_use]
    pub fn new(seed: u64, clients: usize, net: NetConfig) -> Self {
        let mut rng = Rng::new(seed);
        let server_key = Ed25519Signer::from_seed(seed_bytes(&mut rng));
        let mut config = Config::signed_by(
            SESSION,
            std::sync::Arc::new(Ed25519Signer::from_seed(server_key.seed())),
        );
        config.rate_per_s = 1000;
        config.burst = 1000;
        // This network loses frames of the reliable lane too (to exercise resyncs), so replicas
        // resync far more often than over a real stream: the per-connection limit would only
        // slow convergence down here (the limit has its own session tests).
        config.resync_per_min = 60_000;
        let now_ms = 1_800_000_000_000;
        let session = Session::new(config, seed_bytes(&mut rng), now_ms);
        let mut sim = Self {
            session,
            clients: Vec::new(),
            net,
            rng,
            now_ms,
            order: 0,
            queue: BinaryHeap::new(),
            trace: Sha256::new(),
            dropped: 0,
            closed: Vec::new(),
            deltas: 0,
            refused: BTreeMap::new(),
            resync_reasons: BTreeMap::new(),
        };
        for i in 0..clients {
            let invite = editor_invite(SESSION, &server_key, now_ms, i);
            let signer = Ed25519Signer::from_seed(seed_bytes(&mut sim.rng));
            let conn = ClientConnection::new(signer, invite, "sim");
            sim.clients.push(SimClient::new(conn));
            sim.session.handle_input(
                now_ms,
                Input::Connected {
                    client: ClientId(i as u64),
                },
            );
        }
        sim
    }

    /// Client `i` holds only `region` of the scene from its join on (a partial replica,
    /// `ClientMsg::Hold`); call before the first frame.
    pub fn hold(&mut self, i: usize, region: meshwork_protocol::interest::Region) {
        if let Some(c) = self.clients.get_mut(i) {
            c.conn.set_hold(Some(region));
        }
    }

    /// The virtual time.
    #[must_use]
    pub const fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn send(&mut self, dest: Dest, payload: Vec<u8>, lossy: bool) {
        let mut at = self.now_ms + self.net.latency_ms;
        if lossy {
            if self.rng.chance(self.net.loss) {
                self.dropped += 1;
                return;
            }
            if self.net.jitter_ms > 0 {
                at += self.rng.below(self.net.jitter_ms + 1);
            }
            if self.rng.chance(self.net.reorder) {
                at += self.net.latency_ms.max(1) * 3;
            }
            if self.rng.chance(self.net.duplicate) {
                self.order += 1;
                let dup = Packet {
                    at_ms: at + 1,
                    order: self.order,
                    dest: copy(&dest),
                    payload: payload.clone(),
                };
                self.queue.push(Reverse(dup));
            }
        }
        self.order += 1;
        self.queue.push(Reverse(Packet {
            at_ms: at,
            order: self.order,
            dest,
            payload,
        }));
    }

    /// Runs one 11 ms frame: each joined client may issue commands (`workload`), the network
    /// delivers what is due, the host runs, everyone's output goes on the wire.
    pub fn frame(&mut self, workload: bool) {
        self.now_ms += FRAME_MS;
        if workload {
            for i in 0..self.clients.len() {
                if self.rng.chance(0.35) {
                    let cmds = self.random_commands(i);
                    if !cmds.is_empty() {
                        let _ = self.clients[i].conn.submit(cmds);
                    }
                }
            }
        }
        self.flush_clients();
        // Deliver everything due.
        while self
            .queue
            .peek()
            .is_some_and(|Reverse(p)| p.at_ms <= self.now_ms)
        {
            let Some(Reverse(p)) = self.queue.pop() else {
                break;
            };
            self.trace.update(p.at_ms.to_le_bytes());
            self.trace.update(&p.payload);
            match p.dest {
                Dest::Server(i) => {
                    let client = ClientId(i as u64);
                    self.session.handle_input(
                        self.now_ms,
                        Input::Payload {
                            client,
                            bytes: p.payload,
                        },
                    );
                }
                Dest::Client(i) => {
                    if let Ok(msg) = decode_payload::<ServerMsg>(&p.payload) {
                        let event = self.clients[i].conn.handle(&msg);
                        if let meshwork_protocol::client::ClientEvent::Resyncing(why) = event {
                            self.clients[i].resyncs += 1;
                            *self.resync_reasons.entry(why.as_str()).or_insert(0) += 1;
                        }
                    }
                }
            }
            self.pump_server();
            self.flush_clients();
        }
        if self
            .session
            .poll_timeout()
            .is_some_and(|t| t <= self.now_ms)
        {
            self.session.handle_input(self.now_ms, Input::Tick);
        }
        self.pump_server();
        self.flush_clients();
    }

    /// Carries out the host's outputs; the store acknowledges at once (in memory).
    fn pump_server(&mut self) {
        loop {
            let mut acks = Vec::new();
            while let Some(out) = self.session.poll_output() {
                match out {
                    Output::Send { client, frame, .. } => {
                        let payload = frame.get(4..).unwrap_or_default().to_vec();
                        let lossy = self.clients[client.0 as usize].conn.author().is_some()
                            && !matches!(
                                decode_payload::<ServerMsg>(&payload),
                                Ok(ServerMsg::Welcome(_))
                            );
                        self.send(Dest::Client(client.0 as usize), payload, lossy);
                    }
                    Output::Persist { batch, .. } => acks.push(batch),
                    Output::Close { client, reason } => {
                        self.closed.push((client.0, format!("{reason:?}")))
                    }
                    Output::Event(meshwork_session::Event::ProtocolViolation {
                        client,
                        reason,
                    }) => {
                        self.closed.push((client.0, reason.to_owned()));
                    }
                    Output::Event(meshwork_session::Event::DeltaSent) => self.deltas += 1,
                    Output::Event(meshwork_session::Event::Refused { code }) => {
                        *self.refused.entry(code.as_str()).or_default() += 1;
                    }
                    Output::Event(_) => {}
                    // The simulated session never outgrows its log window.
                    Output::ReadStored { .. } => {}
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

    fn flush_clients(&mut self) {
        for i in 0..self.clients.len() {
            while let Some(msg) = self.clients[i].conn.poll_transmit() {
                let joined = matches!(self.clients[i].conn.phase(), ClientPhase::Joined(_));
                let lossy = joined && !matches!(msg, ClientMsg::Resync(_));
                let payload = to_frame(&msg)
                    .map(|f| f.get(4..).unwrap_or_default().to_vec())
                    .unwrap_or_default();
                self.send(Dest::Server(i), payload, lossy);
            }
        }
    }

    fn random_commands(&mut self, i: usize) -> Vec<Command> {
        let Some(author) = self.clients[i].conn.author() else {
            return Vec::new();
        };
        let pick = self.rng.below(16);
        // The size budget is the harness's knob, so it is read from the host's scene (a stale
        // replica stuck before a resync would otherwise grow meshes without end); the element
        // ids an edit names come from the client's own view.
        let budget = edited_triangles(self.session.scene()) <= GROW_EDITED_TRIANGLES;
        let c = &mut self.clients[i];
        let any = |rng: &mut Rng, owned: &[EntityId]| {
            owned
                .get(usize::try_from(rng.below(owned.len() as u64)).unwrap_or(0))
                .copied()
        };
        let cmd = match pick {
            0 | 1 => {
                c.next_entity += 1;
                let entity = EntityId::new(author, c.next_entity);
                c.owned.push(entity);
                let primitive = [
                    Primitive::Cube,
                    Primitive::Pyramid,
                    Primitive::Plane,
                    Primitive::Cylinder,
                    Primitive::Sphere,
                ][usize::try_from(self.rng.below(5)).unwrap_or(0)];
                Command::Spawn {
                    entity,
                    primitive,
                    transform: Transform::IDENTITY,
                }
            }
            2 => match any(&mut self.rng, &c.owned) {
                Some(e) => {
                    c.owned.retain(|x| *x != e);
                    Command::Despawn { entity: e }
                }
                None => return Vec::new(),
            },
            3 | 4 => match any(&mut self.rng, &c.owned) {
                Some(e) => Command::Translate {
                    entity: e,
                    delta: Vec3::new(0.25, 0.0, -0.5),
                },
                None => return Vec::new(),
            },
            5 => match any(&mut self.rng, &c.owned) {
                Some(e) => Command::Rotate {
                    entity: e,
                    delta: Quat::from_rotation_y(0.3),
                },
                None => return Vec::new(),
            },
            6 => match any(&mut self.rng, &c.owned) {
                Some(e) => Command::Scale {
                    entity: e,
                    factor: Vec3::splat(1.1),
                },
                None => return Vec::new(),
            },
            7 => match any(&mut self.rng, &c.owned) {
                Some(e) => Command::Select { entities: vec![e] },
                None => Command::Select { entities: vec![] },
            },
            8 => Command::ToolActivate {
                tool: ToolId(u16::try_from(self.rng.below(3)).unwrap_or(0)),
                target: None,
            },
            9 => Command::ToolDeactivate {
                tool: ToolId(u16::try_from(self.rng.below(3)).unwrap_or(0)),
            },
            // The author's own undo and redo: their effect reaches replicas as deltas.
            10 => Command::Undo { step: None },
            11 => Command::Redo { step: None },
            _ => match mesh_edit(&mut self.rng, c, author, budget, &|_| true) {
                Some(cmd) => cmd,
                None => return Vec::new(),
            },
        };
        vec![cmd]
    }

    /// Entries in the host's log (every one accepted), by command kind.
    #[must_use]
    pub fn accepted_by_kind(&self) -> BTreeMap<CommandKind, u64> {
        let mut out = BTreeMap::new();
        for entry in self.session.log().iter() {
            *out.entry(entry.body.command.kind()).or_default() += 1;
        }
        out
    }

    /// Runs frames without new commands until every replica has loaded a snapshot and matches
    /// the host's scene, or `max_frames` pass. Returns whether they converged.
    pub fn settle(&mut self, max_frames: u32) -> bool {
        for _ in 0..max_frames {
            self.frame(false);
            if self.converged() {
                return true;
            }
        }
        false
    }

    /// Every replica's encoded scene equals the host's; a partial replica's, the host's
    /// entities whose origin is inside its region (found by scanning the host's scene) at the
    /// position it stands at.
    #[must_use]
    pub fn converged(&self) -> bool {
        let host = self.session.scene();
        let partial = self
            .clients
            .iter()
            .filter_map(|c| Some((c, c.conn.hold()?)));
        for (c, region) in partial {
            let replica = c.conn.replica();
            let inside = host
                .entities
                .iter()
                .filter(|(_, e)| {
                    region.contains(meshwork_protocol::interest::point_mm(
                        e.transform.translation,
                    ))
                })
                .map(|(id, _)| *id)
                .collect();
            let r = replica.scene();
            if !replica.is_synced()
                || r.position > host.position
                || *r != host.held_copy(&inside, r.position, r.lamport)
            {
                return false;
            }
        }
        // Cheap checks first (position, then structure): encoding every scene on every settling
        // frame is what would dominate the run time once meshes are edited.
        let replicas = || {
            self.clients
                .iter()
                .filter(|c| c.conn.hold().is_none())
                .map(|c| c.conn.replica())
        };
        if !replicas().all(|r| r.is_synced() && r.scene().position == host.position)
            || !replicas().all(|r| r.scene() == host)
        {
            return false;
        }
        let host = host.encode();
        self.clients
            .iter()
            .filter(|c| c.conn.hold().is_none())
            .all(|c| c.conn.replica().scene().encode() == host)
    }

    /// Fingerprint of every delivered packet and its time.
    #[must_use]
    pub fn trace_hash(&self) -> [u8; 32] {
        self.trace.clone().finalize().into()
    }

    /// Authors that joined.
    #[must_use]
    pub fn joined(&self) -> Vec<AuthorId> {
        self.clients
            .iter()
            .filter_map(|c| c.conn.author())
            .collect()
    }
}

/// The mesh-editing commands (protocol §5, tags 15–25) the workload issues.
pub const MESH_EDIT_KINDS: [CommandKind; 11] = [
    CommandKind::MoveVertices,
    CommandKind::CreateFace,
    CommandKind::DeleteElements,
    CommandKind::ExtrudeFaces,
    CommandKind::ExtrudeEdges,
    CommandKind::SubdivideFaces,
    CommandKind::Smooth,
    CommandKind::Weld,
    CommandKind::Duplicate,
    CommandKind::Mirror,
    CommandKind::SetTransform,
];

/// Edited meshes may hold this many triangles together before the workload stops growing
/// them (extrude, subdivide, smooth, mirror, duplicate) or turning more primitives into meshes;
/// nor does it grow one mesh past [`GROW_MESH_TRIANGLES`]. Every edit is applied on the host
/// twice and on every replica, every resync encodes, ships and decodes (checking) every mesh,
/// and the simulation must stay fast in a debug build; a small scene also keeps snapshots at a
/// few chunks.
pub(crate) const GROW_EDITED_TRIANGLES: u64 = 1_200;
/// See [`GROW_EDITED_TRIANGLES`].
const GROW_MESH_TRIANGLES: u64 = 300;
/// Whole-mesh Catmull–Clark only on meshes this small (else a region of a few faces).
const SMOOTH_WHOLE_TRIANGLES: u64 = 100;

/// Triangles of the entities whose geometry is an edited mesh.
pub(crate) fn edited_triangles(scene: &Scene) -> u64 {
    scene
        .entities
        .values()
        .filter(|e| matches!(e.geometry, Geometry::Mesh(_)))
        .map(|e| e.geometry.triangle_count())
        .sum()
}

/// The `n`-th element of an iterator for a uniform `n` (`None` when it is empty).
fn pick<T>(rng: &mut Rng, mut items: impl ExactSizeIterator<Item = T>) -> Option<T> {
    let n = rng.below(items.len() as u64);
    items.nth(usize::try_from(n).ok()?)
}

/// Uniform in `[-1, 1]`, in steps of 1/1000 (exact in f32, so runs replay bit for bit).
fn signed_unit(rng: &mut Rng) -> f32 {
    #[allow(clippy::cast_precision_loss, reason = "at most 2000, exact in f32")]
    let k = rng.below(2001) as f32;
    (k - 1000.0) / 1000.0
}

fn small_offset(rng: &mut Rng, scale_m: f32) -> Vec3 {
    Vec3::new(signed_unit(rng), signed_unit(rng), signed_unit(rng)) * scale_m
}

/// Up to `most` distinct faces, at random.
fn some_faces(rng: &mut Rng, mesh: &EditMesh, most: u64) -> Vec<FaceKey> {
    let mut faces: Vec<FaceKey> = (0..=rng.below(most))
        .filter_map(|_| pick(rng, mesh.faces().keys()).copied())
        .collect();
    faces.sort_unstable();
    faces.dedup();
    faces
}

/// The half-edges of one border loop (a hole or an open rim), from a random border half-edge,
/// as the corners a face filling it takes (the border half-edges become the face's own, so
/// its orientation matches its neighbours').
fn border_loop(rng: &mut Rng, mesh: &EditMesh) -> Option<Vec<VertexKey>> {
    let border: Vec<(VertexKey, VertexKey)> = mesh
        .half_edges()
        .iter()
        .filter(|(_, h)| h.face.is_none())
        .map(|(k, _)| *k)
        .collect();
    let start = pick(rng, border.into_iter())?;
    let mut corners = Vec::new();
    let mut at = start;
    loop {
        corners.push(at.0);
        if corners.len() > MAX_FACE_CORNERS {
            return None;
        }
        let h = mesh.half_edges().get(&at)?;
        at = (at.1, h.next);
        if at == start {
            return Some(corners);
        }
    }
}

fn edge_key(mesh: &EditMesh, a: VertexKey, b: VertexKey) -> Option<EdgeKey> {
    let ends = if a <= b { (a, b) } else { (b, a) };
    mesh.edges().get(&ends).copied()
}

/// One mesh edit of an entity in client `c`'s replica. The view may be stale: an element it
/// names may be gone (or the edit may no longer fit the mesh) by the time the host checks it,
/// and the host then refuses it with a typed refusal, as it would a real client's.
#[allow(
    clippy::too_many_lines,
    reason = "one arm per mesh command: the workload reads best side by side"
)]
///
/// Within `budget` it may grow meshes and turn primitives into meshes (any edit of a primitive
/// does); beyond it, it edits meshes without growing them.
pub(crate) fn mesh_edit(
    rng: &mut Rng,
    c: &mut SimClient,
    author: AuthorId,
    budget: bool,
    keep: &dyn Fn(&meshwork_protocol::scene::Entity) -> bool,
) -> Option<Command> {
    let scene = c.conn.replica().scene();
    // Half the time an already edited mesh, so edits pile up on (and race for) the same meshes.
    let edited: Vec<EntityId> = scene
        .entities
        .iter()
        .filter(|(_, e)| matches!(e.geometry, Geometry::Mesh(_)) && keep(e))
        .map(|(id, _)| *id)
        .collect();
    let entity = if budget && (edited.is_empty() || rng.chance(0.5)) {
        let kept: Vec<EntityId> = scene
            .entities
            .iter()
            .filter(|(_, e)| keep(e))
            .map(|(id, _)| *id)
            .collect();
        pick(rng, kept.into_iter())?
    } else {
        pick(rng, edited.into_iter())?
    };
    let e = scene.entities.get(&entity)?;
    let built;
    let mesh = match &e.geometry {
        Geometry::Mesh(m) => m,
        g @ Geometry::Primitive(_) => {
            built = g.edit_mesh(e.spawned_by);
            &built
        }
    };
    let grow = budget && mesh.triangle_count() <= GROW_MESH_TRIANGLES;
    let kind = pick(rng, MESH_EDIT_KINDS.iter())?;
    let kind = match kind {
        CommandKind::ExtrudeFaces
        | CommandKind::ExtrudeEdges
        | CommandKind::SubdivideFaces
        | CommandKind::Smooth
        | CommandKind::Mirror
        | CommandKind::Duplicate
            if !grow =>
        {
            *pick(
                rng,
                // Edits that rebuild no topology (the cheap ones, in place).
                [
                    CommandKind::MoveVertices,
                    CommandKind::MoveVertices,
                    CommandKind::SetTransform,
                ]
                .iter(),
            )?
        }
        k => *k,
    };
    let cmd = match kind {
        CommandKind::MoveVertices => {
            // Absolute positions: a face's corners shifted together, or a few loose vertices.
            let vertices: Vec<VertexKey> = if rng.chance(0.5) {
                let (_, corners) = pick(rng, mesh.faces().iter())?;
                corners.clone()
            } else {
                (0..=rng.below(3))
                    .filter_map(|_| pick(rng, mesh.vertices().keys()).copied())
                    .collect()
            };
            let shift = small_offset(rng, 0.1);
            let moves = vertices
                .into_iter()
                .filter_map(|v| Some((v, *mesh.vertices().get(&v)? + shift)))
                .collect();
            Command::MoveVertices { entity, moves }
        }
        CommandKind::CreateFace => {
            // Fill a hole when there is one; otherwise three vertices at random (refused
            // unless they happen to make a manifold face).
            let vertices = match border_loop(rng, mesh) {
                Some(corners) if corners.len() >= 3 => corners,
                _ => (0..3)
                    .filter_map(|_| pick(rng, mesh.vertices().keys()).copied())
                    .collect(),
            };
            Command::CreateFace { entity, vertices }
        }
        CommandKind::DeleteElements => {
            let (mut vertices, mut edges, mut faces) = (Vec::new(), Vec::new(), Vec::new());
            match rng.below(4) {
                0 => vertices.extend(pick(rng, mesh.vertices().keys()).copied()),
                1 => edges.extend(pick(rng, mesh.edges().values()).copied()),
                _ => faces.extend(pick(rng, mesh.faces().keys()).copied()),
            }
            Command::DeleteElements {
                entity,
                vertices,
                edges,
                faces,
            }
        }
        CommandKind::ExtrudeFaces => {
            let direction = if rng.chance(0.7) {
                ExtrudeDirection::Normal {
                    distance_m: 0.05 + 0.25 * signed_unit(rng).abs(),
                }
            } else {
                ExtrudeDirection::Vector {
                    offset: small_offset(rng, 0.3),
                }
            };
            Command::ExtrudeFaces {
                entity,
                faces: some_faces(rng, mesh, 3),
                direction,
                snap_m: rng.chance(0.3).then_some(0.05),
            }
        }
        CommandKind::ExtrudeEdges => {
            // One or two consecutive border edges; an interior edge (refused) if none.
            let edges = match border_loop(rng, mesh) {
                Some(corners) => {
                    let n = corners.len().min(usize::try_from(rng.below(2) + 1).ok()?);
                    (0..n)
                        .filter_map(|i| {
                            let b = corners.get((i + 1) % corners.len())?;
                            edge_key(mesh, *corners.get(i)?, *b)
                        })
                        .collect()
                }
                None => pick(rng, mesh.edges().values())
                    .copied()
                    .into_iter()
                    .collect(),
            };
            Command::ExtrudeEdges {
                entity,
                edges,
                offset: small_offset(rng, 0.3),
                snap_m: None,
            }
        }
        CommandKind::SubdivideFaces => Command::SubdivideFaces {
            entity,
            faces: some_faces(rng, mesh, 2),
            cuts: if rng.chance(0.7) { 1 } else { 2 },
        },
        CommandKind::Smooth => {
            let whole = mesh.triangle_count() <= SMOOTH_WHOLE_TRIANGLES && rng.chance(0.5);
            Command::Smooth {
                entity,
                faces: if whole {
                    Vec::new()
                } else {
                    some_faces(rng, mesh, 3)
                },
                levels: 1,
            }
        }
        CommandKind::Weld => {
            // Collapse one edge of a face: its two ends into one.
            let (_, corners) = pick(rng, mesh.faces().iter())?;
            let i = usize::try_from(rng.below(corners.len() as u64)).ok()?;
            let a = *corners.get(i)?;
            let b = *corners.get((i + 1) % corners.len())?;
            Command::Weld {
                entity,
                groups: vec![vec![a, b]],
                at_center: rng.chance(0.5),
            }
        }
        CommandKind::Mirror => Command::Mirror {
            entity,
            axis: *pick(rng, [Axis::X, Axis::Y, Axis::Z].iter())?,
            weld: rng.chance(0.5),
        },
        CommandKind::Duplicate => {
            c.next_entity += 1;
            let copy = EntityId::new(author, c.next_entity);
            c.owned.push(copy);
            Command::Duplicate {
                entity,
                copy,
                offset: small_offset(rng, 2.0),
            }
        }
        _ => Command::SetTransform {
            entity,
            transform: Transform {
                translation: small_offset(rng, 3.0),
                rotation: Quat::from_rotation_y(signed_unit(rng)),
                scale: Vec3::splat(1.0 + 0.5 * signed_unit(rng).abs()),
            },
        },
    };
    // A client does not submit an edit that names nothing (the mesh in its view is empty):
    // the value guards would refuse it as malformed.
    let names_nothing = match &cmd {
        Command::MoveVertices { moves, .. } => moves.is_empty(),
        Command::CreateFace { vertices, .. } => vertices.len() < 3,
        Command::DeleteElements {
            vertices,
            edges,
            faces,
            ..
        } => vertices.is_empty() && edges.is_empty() && faces.is_empty(),
        Command::ExtrudeFaces { faces, .. } | Command::SubdivideFaces { faces, .. } => {
            faces.is_empty()
        }
        Command::ExtrudeEdges { edges, .. } => edges.is_empty(),
        _ => false,
    };
    (!names_nothing).then_some(cmd)
}

fn copy(d: &Dest) -> Dest {
    match d {
        Dest::Server(i) => Dest::Server(*i),
        Dest::Client(i) => Dest::Client(*i),
    }
}

/// Member `i`'s editor invite to `session`, a day long, signed by `server_key`.
pub(crate) fn editor_invite(
    session: SessionId,
    server_key: &Ed25519Signer,
    now_ms: u64,
    i: usize,
) -> Invite {
    let body = InviteBody {
        domain: Domain::Invite,
        session,
        role: Role::Editor,
        expires_at_ms: now_ms + 86_400_000,
        invite_id: [u8::try_from(i % 256).unwrap_or(0); 16],
    };
    Invite::mint(&body, server_key).expect("invite domain is set")
}

pub(crate) fn seed_bytes(rng: &mut Rng) -> [u8; 32] {
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    out
}
