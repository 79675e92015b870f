//! The app loop shared by the headset and the simulator: one [`App::frame`] per displayed frame
//! turns controller input into signed commands through the protocol's [`ClientConnection`],
//! applies what the server sent, and says what to draw. No I/O here: bytes in and out go
//! through [`App::receive`] and [`App::poll_transmit`], so the loop runs the same on the
//! headset, in the simulator and in tests.

use std::collections::BTreeMap;
use std::rc::Rc;

use glam::{Vec2, Vec3, Vec4};
use meshwork_protocol::client::{ClientConnection, ClientEvent};
use meshwork_protocol::command::{Primitive, Transform};
use meshwork_protocol::motion::{Figure, Motion, MotionContent, low_seq};
use meshwork_protocol::wire::{ClientMsg, Invite, Pose as WirePose, ServerMsg};
use meshwork_protocol::{AuthorId, Command, Ed25519Signer, EntityId};

use crate::input::{self, Grab, Pickable, Pose, Ray, Snap, TwoHandScale};

/// Half the edge of the cube around the head that others' presence is asked for in, metres:
/// a large room with room to spare; farther members show again when the user walks nearer.
pub const INTEREST_HALF_EXTENT_M: f32 = 32.0;

/// Which hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hand {
    /// Left (the off hand: the panel lives on it).
    Left = 0,
    /// Right (the pointing hand).
    Right = 1,
}

/// One controller's state this frame, in world (stage) space.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HandInput {
    /// `world_from_grip`: where the hand holds the controller.
    pub world_from_grip: Pose,
    /// `world_from_aim`: the pointing pose (its −Z is the ray).
    pub world_from_aim: Pose,
    /// Trigger, 0–1 (select / press a panel button).
    pub trigger: f32,
    /// Grip, 0–1 (grab).
    pub grip: f32,
    /// Thumbstick, each axis −1–1 (snap turn on the right hand).
    pub thumbstick: Vec2,
    /// The primary button (A / X): add the current primitive where the ray points.
    pub primary: bool,
    /// The secondary button (B / Y): delete the selection.
    pub secondary: bool,
}

/// Everything the loop reads in one frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrameInput {
    /// `stage_from_head` (the view's pose).
    pub stage_from_head: Pose,
    /// Controllers (or tracked hands mapped to the same inputs), when tracked.
    pub hands: [Option<HandInput>; 2],
}

/// What the frame asks of the platform.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FrameOutput {
    /// Haptic pulses: (hand, amplitude 0–1, seconds).
    pub haptics: Vec<(Hand, f32, f32)>,
    /// Comfort: a snap turn happened this frame (radians about +Y, applied to the stage).
    pub snap_turn: Option<f32>,
    /// Comfort: the user is moving something large through view; draw the vignette.
    pub vignette: bool,
}

/// Tools on the off-hand panel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// Add this primitive with the primary button.
    Add(Primitive),
    /// Recolor the selection with the trigger.
    Paint,
    /// Point at a face, hold the trigger and pull: the face extrudes along its normal.
    Extrude,
    /// Point at a mesh near a vertex, hold the trigger and move: the vertex follows the hand.
    Vertex,
}

/// One-shot mesh operations on the selected entity, from the panel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeshAction {
    /// Every face cut once (one level of subdivision).
    Subdivide,
    /// Catmull–Clark of the whole mesh, one level.
    Smooth,
    /// Mirror across the local X plane, welded at the seam.
    Mirror,
    /// A copy beside it (0.6 m along +X).
    Duplicate,
}

/// A mesh gesture in progress: its hand, its entity, what it started from, and the command it
/// would commit now.
#[derive(Clone, Debug)]
struct MeshGesture {
    hand: Hand,
    entity: EntityId,
    kind: GestureKind,
    command: Option<Command>,
    /// The last snapped amount (a haptic tick when it changes).
    last: Option<[i64; 3]>,
}

#[derive(Clone, Copy, Debug)]
enum GestureKind {
    /// Extrude `face`: the hand's travel along the face's world normal is the distance.
    Pull {
        face: meshwork_protocol::editmesh::FaceKey,
        normal: Vec3,
        start: Vec3,
        /// Entity units per world metre along the normal.
        scale: f32,
    },
    /// Move `vertex`: the hand's travel, in entity space, is added to where it started.
    Drag {
        vertex: meshwork_protocol::editmesh::VertexKey,
        from: Vec3,
        start: Vec3,
    },
}

/// Grid step of mesh gestures, world metres (a haptic tick per step).
pub const MESH_SNAP_M: f32 = 0.05;

/// The colors the panel offers (linear RGBA).
pub const PALETTE: [Vec4; 6] = [
    Vec4::new(0.9, 0.25, 0.05, 1.0),
    Vec4::new(0.1, 0.45, 0.9, 1.0),
    Vec4::new(0.2, 0.75, 0.3, 1.0),
    Vec4::new(0.95, 0.8, 0.1, 1.0),
    Vec4::new(0.8, 0.8, 0.82, 1.0),
    Vec4::new(0.6, 0.2, 0.8, 1.0),
];

/// Positions, normals, triangle indices.
pub type MeshData = (Vec<[f32; 3]>, Vec<[f32; 3]>, Vec<u32>);

/// Triangles per geometry, cached and shared: ray picking and drawing use the same.
#[derive(Debug, Default)]
pub struct MeshCache {
    meshes: BTreeMap<String, Rc<MeshData>>,
}

impl MeshCache {
    /// The key and triangles of an entity's geometry; `revision` is the connection's revision
    /// of the entity's mesh (edited meshes are keyed by it, so nothing is triangulated to find
    /// out whether one changed).
    pub fn get(
        &mut self,
        id: EntityId,
        revision: u64,
        g: &meshwork_protocol::scene::Geometry,
    ) -> (String, Rc<MeshData>) {
        let key = geometry_key(id, revision, g);
        let mesh = self
            .meshes
            .entry(key.clone())
            .or_insert_with(|| {
                let m = g.render();
                Rc::new((m.positions, m.normals, m.indices))
            })
            .clone();
        (key, mesh)
    }
}

/// One entity as drawn this frame.
#[derive(Clone, Debug)]
pub struct EntityDraw {
    /// Which.
    pub id: EntityId,
    /// Shown transform (preview or replica).
    pub transform: Transform,
    /// Linear RGBA.
    pub color: Vec4,
    /// Geometry key.
    pub key: String,
    /// Triangles.
    pub mesh: Rc<MeshData>,
}

/// A key that changes exactly when the triangles do.
#[must_use]
pub fn geometry_key(id: EntityId, revision: u64, g: &meshwork_protocol::scene::Geometry) -> String {
    match g {
        meshwork_protocol::scene::Geometry::Primitive(p) => format!("{p:?}"),
        meshwork_protocol::scene::Geometry::Mesh(_) => format!("mesh:{}:{revision}", id.0),
    }
}

/// The app.
#[derive(Debug)]
pub struct App {
    conn: ClientConnection<Ed25519Signer>,
    /// Current tool.
    pub tool: Tool,
    /// Current paint color index into [`PALETTE`].
    pub color: usize,
    /// This user's selection.
    pub selected: Option<EntityId>,
    /// Entity under each hand's ray.
    pub hovered: [Option<EntityId>; 2],
    grabs: [Option<Grab>; 2],
    two_hand: Option<(EntityId, TwoHandScale)>,
    /// Shown instead of the replica while a grab is held or its commands are in flight.
    previews: BTreeMap<EntityId, Transform>,
    /// Commands sent whose acknowledgement is pending, oldest first: (entity, acked).
    in_flight: meshwork_protocol::client::Pending<EntityId>,
    snap: Snap,
    prev: [Option<HandInput>; 2],
    presence_seq: u32,
    /// Refusal messages from the server, newest last (shown on the panel).
    pub notices: Vec<String>,
    /// Extra frames for the reliable lane (pings and the like).
    extra: Vec<ClientMsg>,
    meshes: MeshCache,
    /// Snap-turn step (radians); the stick must return to centre between turns.
    pub snap_turn: f32,
    turn_armed: bool,
    /// The left thumbstick is back at centre (a flick left undoes, right redoes).
    history_armed: bool,
    /// Others' presence, by author, until it goes stale.
    others: BTreeMap<AuthorId, Other>,
    /// Entities this app's last preview messages said were being dragged.
    previewing: Vec<EntityId>,
    /// Frames run so far.
    frames: u64,
    /// The name the others see ([`App::set_display_name`]).
    display_name: String,
    /// The server ended the session for this client for good: a drop is not redialled.
    closed_for_good: bool,
    /// The mesh gesture in progress, if any.
    gesture: Option<MeshGesture>,
    /// Entities drawn with another mesh than the replica's: a gesture's result, kept after
    /// its commit until the replica moves past the position it was committed at, and the serial
    /// that names this result's geometry for the renderer (a new result, a new name).
    mesh_previews: BTreeMap<EntityId, (Rc<MeshData>, Option<u64>, u64)>,
    /// The last serial handed to a mesh preview.
    preview_serial: u64,
    /// The entity whose mesh-gesture preview the last `previews_out` sent (its end follows).
    edit_previewing: Option<EntityId>,
    /// Others' mesh-edit previews run here (which ones show is the connection's
    /// [`meshwork_protocol::presence::LivePreviews`]): each entity's result, by the live
    /// preview's serial it was run for.
    remote_meshes: BTreeMap<EntityId, (u64, Rc<MeshData>)>,
}

/// Another author's presence as drawn (their head and hands, stage space): between two updates
/// the drawing moves from where it was to the newest by the protocol's rule
/// ([`meshwork_protocol::presence::playout`]), the frame count as its clock.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Other {
    /// Head pose, when tracked.
    pub head: Option<Pose>,
    /// Left and right hand poses, when tracked.
    pub hands: [Option<Pose>; 2],
    /// The frame ([`App::frame`] count) the latest update arrived in.
    pub seen_frame: u64,
    /// Head, left and right hand: where the drawing was when the latest update came, and
    /// where that update put them.
    from: [Option<Pose>; 3],
    to: [Option<Pose>; 3],
    /// The server's presence tick (its `Welcome`): how long the drawing takes to reach `to`.
    tick_ms: u64,
}

impl Other {
    /// The parts as drawn: head, left hand, right hand.
    const fn parts(&self) -> [Option<Pose>; 3] {
        [self.head, self.hands[0], self.hands[1]]
    }

    /// An update: the drawing starts from where it is now (a part that appears or vanishes
    /// does so at once).
    fn update(previous: Option<&Self>, to: [Option<Pose>; 3], frame: u64, tick_ms: u64) -> Self {
        let from = previous.map_or(to, Self::parts);
        let from = [0, 1, 2].map(|i| match (from[i], to[i]) {
            (Some(f), Some(_)) => Some(f),
            _ => to[i],
        });
        let mut other = Self {
            head: from[0],
            hands: [from[1], from[2]],
            seen_frame: frame,
            from,
            to,
            tick_ms,
        };
        other.play(frame);
        other
    }

    /// Moves the drawing to where it is at `frame`.
    fn play(&mut self, frame: u64) {
        let elapsed_ms =
            frame.saturating_sub(self.seen_frame).saturating_mul(1000) / NOMINAL_FRAME_HZ;
        let at = [0, 1, 2].map(|i| match (self.from[i], self.to[i]) {
            (Some(f), Some(to)) => {
                let (position, orientation) = meshwork_protocol::presence::playout(
                    (f.position, f.orientation),
                    (to.position, to.orientation),
                    elapsed_ms,
                    self.tick_ms,
                );
                Some(Pose {
                    position,
                    orientation,
                })
            }
            _ => self.to[i],
        });
        self.head = at[0];
        self.hands = [at[1], at[2]];
    }
}

/// Frames without an update after which another author's presence is no longer drawn: about
/// 5 s at 90 Hz (the browser's time-to-live). Counted in frames, so the app needs no clock.
pub const PRESENCE_TTL_FRAMES: u64 = 450;

/// The frame rate the app's clock assumes (the Quest 3's default): frame counts become the
/// milliseconds the protocol's live previews expire by.
pub const NOMINAL_FRAME_HZ: u64 = 90;

/// A transform as a preview carries it (the protocol's quantization).
#[must_use]
pub fn preview_transform(t: &Transform) -> meshwork_protocol::wire::PreviewTransform {
    meshwork_protocol::wire::PreviewTransform::quantize(t)
}

/// The transform of a preview on the wire.
#[must_use]
pub fn transform_from_preview(p: &meshwork_protocol::wire::PreviewTransform) -> Transform {
    p.transform()
}

const PRESS: f32 = 0.6;
const RELEASE: f32 = 0.3;

impl App {
    /// A new app joining with `invite`, signing as `signer`; `snap_step` metres (0 = off).
    #[must_use]
    pub fn new(signer: Ed25519Signer, invite: Invite, snap_step: f32) -> Self {
        Self {
            conn: ClientConnection::new(
                signer,
                invite,
                concat!("meshwork-quest ", env!("CARGO_PKG_VERSION")),
            ),
            tool: Tool::Add(Primitive::Cube),
            color: 0,
            selected: None,
            hovered: [None, None],
            grabs: [None, None],
            two_hand: None,
            previews: BTreeMap::new(),
            in_flight: meshwork_protocol::client::Pending::new(),
            snap: Snap::new(snap_step),
            prev: [None, None],
            presence_seq: 0,
            notices: Vec::new(),
            extra: Vec::new(),
            meshes: MeshCache::default(),
            snap_turn: std::f32::consts::FRAC_PI_6,
            turn_armed: true,
            history_armed: true,
            gesture: None,
            mesh_previews: BTreeMap::new(),
            preview_serial: 0,
            edit_previewing: None,
            remote_meshes: BTreeMap::new(),
            others: BTreeMap::new(),
            previewing: Vec::new(),
            frames: 0,
            display_name: String::new(),
            closed_for_good: false,
        }
    }

    /// The name the others see for this headset (from `--name`, `MESHWORK_NAME` or
    /// `files/name.txt`; [`default_display_name`] without one), announced as a signed
    /// [`Command::SetDisplayName`] once the scene is loaded and whenever it differs from the
    /// scene's. Cut to the protocol's limit; control characters dropped.
    pub fn set_display_name(&mut self, name: &str) {
        self.display_name = meshwork_protocol::command::clean_display_name(name);
        self.announce_name();
    }

    /// The connection dropped (`why`): the protocol machine starts over for the next one,
    /// keeping the replica and the unacknowledged entries (edits go on, kept until the server
    /// has them); the panel says so.
    pub fn reconnect(&mut self, why: &str) {
        self.conn.reconnect();
        self.notices.push(format!("offline: {why}"));
    }

    /// Whether the server ended the session for this client for good (kicked, a protocol
    /// violation, a refused join) or the server was not trusted: a drop then ends the app's
    /// connection instead of a redial.
    #[must_use]
    pub const fn closed_for_good(&self) -> bool {
        self.closed_for_good
    }

    /// The name this headset goes by.
    #[must_use]
    pub fn display_name(&self) -> &str {
        &self.display_name
    }

    fn announce_name(&mut self) {
        let Some(me) = self.conn.author() else { return };
        if self.display_name.is_empty()
            || !self.live()
            || self.conn.replica().scene().display_name(me) == Some(self.display_name.as_str())
        {
            return;
        }
        let name = self.display_name.clone();
        self.submit(vec![Command::SetDisplayName { name }], None);
    }

    /// The protocol connection (replica, author, phase).
    #[must_use]
    pub const fn connection(&self) -> &ClientConnection<Ed25519Signer> {
        &self.conn
    }

    /// Others present: their last heads and hands, by author (stale ones dropped each frame).
    #[must_use]
    pub const fn others(&self) -> &BTreeMap<AuthorId, Other> {
        &self.others
    }

    /// Joined and holding a snapshot.
    #[must_use]
    pub fn live(&self) -> bool {
        self.conn.author().is_some() && self.conn.replica().is_synced()
    }

    /// Handles one server message.
    pub fn receive(&mut self, msg: &ServerMsg) -> ClientEvent {
        if let Some(parts) = self.conn.expand(msg) {
            // A pack or a compact motion: handled as the messages it stands for.
            for part in parts {
                self.receive(&part);
            }
            return ClientEvent::None;
        }
        match msg {
            ServerMsg::Ack(a) => self.in_flight.acked(a.seq),
            ServerMsg::Presence(p) if Some(p.author) != self.conn.author() => {
                let pose = |w: &Option<WirePose>| w.as_ref().map(pose_from_wire);
                let to = [
                    pose(&p.presence.head),
                    pose(&p.presence.hands[0]),
                    pose(&p.presence.hands[1]),
                ];
                let other = Other::update(
                    self.others.get(&p.author),
                    to,
                    self.frames,
                    self.conn.presence_tick_ms(),
                );
                self.others.insert(p.author, other);
            }
            ServerMsg::Left(l) => {
                self.others.remove(&l.author);
            }
            ServerMsg::CommandRefused(r) => {
                for entity in self.in_flight.refused(r.seq) {
                    self.drop_preview_unless_held(entity);
                }
                self.notices.push(refusal_notice(r));
            }
            _ => {}
        }
        if matches!(msg, ServerMsg::CommandRefused(_)) {
            self.mesh_previews
                .retain(|_, (_, committed, _)| committed.is_none());
        }
        let before = self.conn.replica().scene().position;
        let event = self.conn.handle(msg);
        let now = self.conn.replica().scene().position;
        if now != before {
            self.mesh_previews
                .retain(|_, (_, committed, _)| committed.is_none_or(|at| now <= at));
        }
        if now != before {
            // Acknowledged submissions are now in the replica.
            for e in self.in_flight.take_settled() {
                if !self.in_flight.iter().any(|f| *f == e) {
                    self.drop_preview_unless_held(e);
                }
            }
        }
        if event == ClientEvent::Synced {
            self.announce_name();
        }
        // A close the server means for good (kicked: this key joined elsewhere; a protocol
        // violation; a refused join) or a server this client does not trust: no redial.
        let final_close = match msg {
            ServerMsg::Close(c) => matches!(
                c.reason,
                meshwork_protocol::wire::CloseReason::Kicked
                    | meshwork_protocol::wire::CloseReason::ProtocolViolation
            ),
            ServerMsg::JoinRefused(_) => true,
            _ => event == ClientEvent::Untrusted,
        };
        if final_close {
            self.closed_for_good = true;
        }
        // Back after a drop: the panel's last line said "offline".
        if event == ClientEvent::Joined
            && self
                .notices
                .last()
                .is_some_and(|n| n.starts_with("offline"))
        {
            self.notices.push("back online".to_owned());
        }
        event
    }

    fn drop_preview_unless_held(&mut self, e: EntityId) {
        if !self.grabs.iter().flatten().any(|g| g.entity == e) {
            self.previews.remove(&e);
        }
    }

    /// Frames to send on the reliable lane.
    pub fn poll_transmit(&mut self) -> Vec<ClientMsg> {
        let mut out = std::mem::take(&mut self.extra);
        while let Some(m) = self.conn.poll_transmit() {
            out.push(m);
        }
        out
    }

    /// Queues a ping (`nonce`: e.g. a timestamp) for the round-trip time.
    pub fn ping(&mut self, nonce: u64) {
        self.extra
            .push(ClientMsg::Ping(meshwork_protocol::wire::Ping { nonce }));
    }

    /// Live previews of this app's drags for the unreliable lane (send with presence): where
    /// each held entity is now, and one ending message for each drag that ended since.
    pub fn previews_out(&mut self) -> Vec<ClientMsg> {
        let mut held: Vec<EntityId> = self.grabs.iter().flatten().map(|g| g.entity).collect();
        held.sort_unstable();
        held.dedup();
        let mut out = Vec::new();
        // Every held entity where it is now, and every release, in one compact motion.
        let ended = self.previewing.iter().filter(|e| !held.contains(e));
        let previews: Vec<_> = held
            .iter()
            .map(|e| (*e, self.previews.get(e).map(preview_transform)))
            .chain(ended.map(|e| (*e, None)))
            .collect();
        if !previews.is_empty() {
            self.presence_seq = self.presence_seq.wrapping_add(1);
            let content = MotionContent::previews(low_seq(self.presence_seq), previews);
            out.extend(Motion::encode(&content).ok().map(ClientMsg::Motion));
        }
        self.previewing = held;
        // The mesh gesture in progress: what it would commit now; one end when it is over.
        let gesture = self
            .gesture
            .as_ref()
            .filter(|g| g.command.is_some())
            .map(|g| (g.entity, g.command.clone()));
        let edit = match (gesture, self.edit_previewing) {
            (Some((entity, command)), _) => Some((entity, command)),
            (None, Some(entity)) => Some((entity, None)),
            (None, None) => None,
        };
        self.edit_previewing = None;
        if let Some((entity, command)) = edit {
            let author = self.conn.author().unwrap_or_default();
            let fits = command
                .as_ref()
                .is_none_or(|c| meshwork_protocol::wire::EditPreview::allows(c, entity, author));
            if fits {
                self.presence_seq = self.presence_seq.wrapping_add(1);
                if command.is_some() {
                    self.edit_previewing = Some(entity);
                }
                out.push(ClientMsg::EditPreview(
                    meshwork_protocol::wire::EditPreview {
                        seq: self.presence_seq,
                        entity,
                        command,
                    },
                ));
            }
        }
        out
    }

    /// A presence update (head and both hands) for the unreliable lane. Others' presence is
    /// asked for around the head ([`INTEREST_HALF_EXTENT_M`]), the region following the user by
    /// the protocol's rule (`ClientConnection::follow_interest`).
    pub fn presence(&mut self, input: &FrameInput) -> ClientMsg {
        self.conn
            .follow_interest(input.stage_from_head.position, INTEREST_HALF_EXTENT_M);
        self.presence_seq = self.presence_seq.wrapping_add(1);
        let hand = |h: Option<HandInput>| h.map(|h| wire_pose(&h.world_from_grip));
        let cursor = input.hands[Hand::Right as usize]
            .and_then(|h| Ray::from_aim(&h.world_from_aim).floor_hit())
            .map(|p| {
                wire_pose(&Pose {
                    position: p,
                    orientation: glam::Quat::IDENTITY,
                })
            });
        let figure = Figure {
            head: Some(wire_pose(&input.stage_from_head)),
            hands: [hand(input.hands[0]), hand(input.hands[1])],
            cursor,
        };
        ClientMsg::Motion(Motion::of_figure(low_seq(self.presence_seq), figure))
    }

    /// What to draw for an entity: a held or in-flight preview, else the replica.
    #[must_use]
    pub fn shown(&self, id: EntityId, replica: &Transform) -> Transform {
        self.previews.get(&id).copied().unwrap_or(*replica)
    }

    /// Undo (or redo) of this user's own last step: the server decides, and says why not.
    pub fn undo(&mut self, redo: bool) {
        let step = None;
        self.submit(
            vec![if redo {
                Command::Redo { step }
            } else {
                Command::Undo { step }
            }],
            None,
        );
    }

    fn submit(&mut self, commands: Vec<Command>, about: Option<EntityId>) {
        if commands.is_empty() {
            return;
        }
        let commands = one_step(commands);
        if let Some(entries) = self.conn.submit(commands)
            && let Some(e) = about
        {
            self.in_flight
                .submitted(meshwork_protocol::client::seqs(&entries), e);
        }
    }

    /// The next entity id of this author (the protocol's rule: after every own id seen).
    fn new_entity(&mut self) -> Option<EntityId> {
        self.conn.next_entity_id(0)
    }

    /// Spawns `n` entities on a floor grid in front of the user (benchmarks): the first
    /// `spheres` are UV spheres (224 triangles), the rest cubes (12), 64 per submitted batch.
    pub fn spawn_grid(&mut self, n: u32, spheres: u32) {
        let Some(first) = self.new_entity() else {
            return;
        };
        let author = first.namespace();
        let base = u32::try_from(first.0 & 0xffff_ffff).unwrap_or(1);
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "the side of a grid of a few thousand cells"
        )]
        let side = (n as f32).sqrt().ceil().max(1.0) as u32;
        let mut batch = Vec::new();
        for k in 0..n {
            let entity = EntityId::new(author, base.saturating_add(k));
            #[allow(clippy::cast_precision_loss, reason = "grid coordinates")]
            let at = Vec3::new(
                (k % side) as f32 * 0.6 - side as f32 * 0.3,
                0.25,
                -1.0 - (k / side) as f32 * 0.6,
            );
            let primitive = if k < spheres {
                Primitive::Sphere
            } else {
                Primitive::Cube
            };
            batch.push(Command::Spawn {
                entity,
                primitive,
                transform: Transform {
                    translation: at,
                    scale: Vec3::splat(0.3),
                    ..Transform::IDENTITY
                },
            });
            if batch.len() == 64 {
                self.submit(std::mem::take(&mut batch), None);
            }
        }
        self.submit(batch, None);
        // The grid's ids are taken: the next one comes after them.
        let _ = self
            .conn
            .next_entity_id(base.saturating_add(n).saturating_sub(1));
    }

    /// One frame: input → commands (queued for [`Self::poll_transmit`]) and platform requests.
    pub fn frame(&mut self, input: &FrameInput) -> FrameOutput {
        self.frames = self.frames.saturating_add(1);
        let now = self.frames;
        self.others
            .retain(|_, o| now.saturating_sub(o.seen_frame) <= PRESENCE_TTL_FRAMES);
        for other in self.others.values_mut() {
            other.play(now);
        }
        // Others' previews end when their commit lands, or when they go quiet.
        self.conn.tick(now.saturating_mul(1000) / NOMINAL_FRAME_HZ);
        let live = self.conn.live();
        self.remote_meshes
            .retain(|e, (serial, _)| live.edit(*e).is_some_and(|p| p.serial == *serial));
        let mut out = FrameOutput::default();
        if !self.live() {
            self.prev = input.hands;
            return out;
        }
        // Rays and hover.
        for h in [Hand::Left, Hand::Right] {
            self.hovered[h as usize] = input.hands[h as usize]
                .and_then(|hand| self.pick(&Ray::from_aim(&hand.world_from_aim)));
        }
        let pressed =
            |now: Option<HandInput>, prev: Option<HandInput>, f: fn(&HandInput) -> f32| {
                now.is_some_and(|n| f(&n) >= PRESS) && prev.is_none_or(|p| f(&p) < PRESS)
            };
        let released =
            |now: Option<HandInput>, prev: Option<HandInput>, f: fn(&HandInput) -> f32| {
                now.is_none_or(|n| f(&n) <= RELEASE) && prev.is_some_and(|p| f(&p) > RELEASE)
            };
        let button =
            |now: Option<HandInput>, prev: Option<HandInput>, f: fn(&HandInput) -> bool| {
                now.is_some_and(|n| f(&n)) && prev.is_none_or(|p| !f(&p))
            };
        // The right hand's ray on the off-hand panel: the trigger presses its buttons.
        let on_panel = match (
            input.hands[Hand::Left as usize],
            input.hands[Hand::Right as usize],
        ) {
            (Some(l), Some(r)) => crate::ui::panel_pixel(
                &Ray::from_aim(&r.world_from_aim),
                &crate::ui::world_from_panel(&l.world_from_grip),
            )
            .and_then(|(x, y)| crate::ui::hit(x, y)),
            _ => None,
        };
        if on_panel.is_some() {
            self.hovered[Hand::Right as usize] = None;
        }
        for h in [Hand::Left, Hand::Right] {
            let (now, prev) = (input.hands[h as usize], self.prev[h as usize]);
            if h == Hand::Right
                && let Some(control) = on_panel
            {
                if pressed(now, prev, |i| i.trigger) {
                    match control {
                        crate::ui::PanelHit::Tool(t) => self.tool = t,
                        crate::ui::PanelHit::Color => self.color = (self.color + 1) % PALETTE.len(),
                        crate::ui::PanelHit::Undo => self.undo(false),
                        crate::ui::PanelHit::Redo => self.undo(true),
                        crate::ui::PanelHit::Action(a) => self.mesh_action(a),
                    }
                    out.haptics.push((h, 0.2, 0.01));
                }
                continue;
            }
            // Mesh tools: the trigger starts, follows and commits a gesture.
            if matches!(self.tool, Tool::Extrude | Tool::Vertex) {
                self.mesh_tool(h, now, prev, &mut out);
            } else if pressed(now, prev, |i| i.trigger) {
                let hit = self.hovered[h as usize];
                if let (Tool::Paint, Some(e)) = (self.tool, hit) {
                    let rgba = PALETTE[self.color % PALETTE.len()];
                    self.submit(vec![Command::SetColor { entity: e, rgba }], None);
                }
                if self.selected != hit {
                    self.selected = hit;
                    let entities = hit.into_iter().collect();
                    self.submit(vec![Command::Select { entities }], None);
                }
                out.haptics.push((h, 0.3, 0.02));
            }
            // Grip: grab the hovered (or selected) entity.
            if pressed(now, prev, |i| i.grip)
                && let Some(hand) = now
                && let Some(e) = self.hovered[h as usize].or(self.selected)
                && let Some(t) = self.transform_of(e)
            {
                let other = 1 - h as usize;
                if let Some(og) = self.grabs[other].filter(|g| g.entity == e)
                    && let Some(oh) = input.hands[other]
                {
                    // Second hand on the same entity: two-hand scale.
                    let (l, r) = if h == Hand::Left {
                        (hand, oh)
                    } else {
                        (oh, hand)
                    };
                    let current = self.previews.get(&e).copied().unwrap_or(og.start);
                    self.two_hand = Some((
                        e,
                        TwoHandScale::start(
                            l.world_from_grip.position,
                            r.world_from_grip.position,
                            current.scale,
                        ),
                    ));
                } else {
                    self.grabs[h as usize] = Some(Grab::start(e, t, &hand.world_from_grip));
                    self.snap.reset();
                }
                out.haptics.push((h, 0.5, 0.03));
            }
            // Primary: add the current primitive where the ray meets the floor (or 1.5 m ahead).
            if button(now, prev, |i| i.primary)
                && let (Tool::Add(primitive), Some(hand)) = (self.tool, now)
                && let Some(entity) = self.new_entity()
            {
                let ray = Ray::from_aim(&hand.world_from_aim);
                let at = ray
                    .floor_hit()
                    .filter(|p| p.distance(ray.origin) < 6.0)
                    .map_or(ray.origin + ray.direction * 1.5, |p| p + Vec3::Y * 0.25);
                let (at, _) = self.snap.apply(at);
                self.snap.reset();
                let transform = Transform {
                    translation: at,
                    scale: Vec3::splat(0.5),
                    ..Transform::IDENTITY
                };
                let rgba = PALETTE[self.color % PALETTE.len()];
                self.submit(
                    vec![
                        Command::Spawn {
                            entity,
                            primitive,
                            transform,
                        },
                        Command::SetColor { entity, rgba },
                        Command::Select {
                            entities: vec![entity],
                        },
                    ],
                    None,
                );
                self.selected = Some(entity);
                out.haptics.push((h, 0.6, 0.05));
            }
            // Secondary: delete the selection.
            if button(now, prev, |i| i.secondary)
                && let Some(e) = self.selected.take()
            {
                self.submit(
                    vec![
                        Command::Despawn { entity: e },
                        Command::Select { entities: vec![] },
                    ],
                    None,
                );
                out.haptics.push((h, 0.6, 0.05));
            }
        }
        // Held grabs follow their hands (with snapping); the preview shows at once.
        for h in [Hand::Left, Hand::Right] {
            let Some(g) = self.grabs[h as usize] else {
                continue;
            };
            let Some(hand) = input.hands[h as usize] else {
                continue;
            };
            let mut t = g.follow(&hand.world_from_grip);
            let (snapped, tick) = self.snap.apply(t.translation);
            t.translation = snapped;
            if tick {
                out.haptics.push((h, 0.2, 0.01));
            }
            if let Some((e, two)) = self.two_hand
                && e == g.entity
                && let (Some(l), Some(r)) = (input.hands[0], input.hands[1])
            {
                t.scale = two.scale(l.world_from_grip.position, r.world_from_grip.position);
            }
            self.previews.insert(g.entity, t);
            out.vignette = true;
        }
        // Releases: commit what the preview shows as commands.
        for h in [Hand::Left, Hand::Right] {
            let (now, prev) = (input.hands[h as usize], self.prev[h as usize]);
            if released(now, prev, |i| i.grip)
                && let Some(g) = self.grabs[h as usize].take()
            {
                let other_holds = self.grabs[1 - h as usize].is_some_and(|o| o.entity == g.entity);
                if self.two_hand.is_some_and(|(e, _)| e == g.entity) {
                    self.two_hand = None;
                }
                if !other_holds
                    && let (Some(to), Some(from)) = (
                        self.previews.get(&g.entity).copied(),
                        self.replica_transform(g.entity),
                    )
                {
                    let cmds = meshwork_protocol::scene::transform_commands(g.entity, &from, &to);
                    if cmds.is_empty() {
                        self.previews.remove(&g.entity);
                    } else {
                        self.submit(cmds, Some(g.entity));
                    }
                }
            }
        }
        // Left thumbstick: a flick left undoes, right redoes (a tick on that hand), re-armed at
        // centre.
        if let Some(l) = input.hands[Hand::Left as usize] {
            let x = l.thumbstick.x;
            if self.history_armed && x.abs() > 0.8 {
                self.undo(x > 0.0);
                out.haptics.push((Hand::Left, 0.25, 0.015));
                self.history_armed = false;
            } else if x.abs() < 0.3 {
                self.history_armed = true;
            }
        }
        // Right thumbstick: snap turn (comfort), re-armed at centre.
        if let Some(r) = input.hands[Hand::Right as usize] {
            let x = r.thumbstick.x;
            if self.turn_armed && x.abs() > 0.8 {
                out.snap_turn = Some(-x.signum() * self.snap_turn);
                self.turn_armed = false;
            } else if x.abs() < 0.3 {
                self.turn_armed = true;
            }
        }
        self.prev = input.hands;
        out
    }

    /// The face and nearest vertex of `entity` that `ray` hits, in its editable mesh, with the
    /// face's normal in world space and the entity's scale along it.
    fn pick_element(
        &self,
        entity: EntityId,
        ray: &Ray,
    ) -> Option<(
        meshwork_protocol::editmesh::FaceKey,
        meshwork_protocol::editmesh::VertexKey,
        Vec3,
        Vec3,
        f32,
    )> {
        let e = self.conn.view().entities.get(&entity)?;
        let mesh = e.geometry.edit_mesh(e.spawned_by);
        let tris = mesh.triangulate();
        let t = self.shown(entity, &e.transform);
        let world_from_entity = input::matrix(&t);
        let (tri, dist) =
            input::pick_triangle(ray, world_from_entity, &tris.positions, &tris.indices)?;
        // The triangulation is each face's fan, in face order.
        let mut seen = 0usize;
        let (face, corners) = mesh.faces().iter().find(|(_, c)| {
            seen += c.len().saturating_sub(2);
            tri < seen
        })?;
        let local = world_from_entity
            .inverse()
            .transform_point3(ray.origin + ray.direction * dist);
        let vertex = *corners.iter().min_by(|a, b| {
            let d = |v: &&meshwork_protocol::editmesh::VertexKey| {
                mesh.vertices()
                    .get(*v)
                    .map_or(f32::MAX, |p| p.distance_squared(local))
            };
            d(a).total_cmp(&d(b))
        })?;
        let pts: Vec<Vec3> = corners
            .iter()
            .filter_map(|c| mesh.vertices().get(c).copied())
            .collect();
        let mut n = Vec3::ZERO;
        for (i, a) in pts.iter().enumerate() {
            let b = pts[(i + 1) % pts.len()];
            n += a.cross(b);
        }
        let normal_local = n.normalize_or_zero();
        let world_normal = world_from_entity.transform_vector3(normal_local);
        let scale = if world_normal.length() > 1e-6 {
            1.0 / world_normal.length()
        } else {
            1.0
        };
        Some((
            *face,
            vertex,
            world_normal.normalize_or_zero(),
            mesh.vertices().get(&vertex).copied().unwrap_or(local),
            scale,
        ))
    }

    /// The extrude and vertex tools: the trigger on a mesh starts a gesture, the hand moves it
    /// (snapped to [`MESH_SNAP_M`], a tick per step), the release commits one command.
    fn mesh_tool(
        &mut self,
        h: Hand,
        now: Option<HandInput>,
        prev: Option<HandInput>,
        out: &mut FrameOutput,
    ) {
        const PRESS: f32 = 0.6;
        const RELEASE: f32 = 0.4;
        let down =
            now.is_some_and(|n| n.trigger >= PRESS) && prev.is_none_or(|p| p.trigger < PRESS);
        let up =
            now.is_none_or(|n| n.trigger <= RELEASE) && prev.is_some_and(|p| p.trigger > RELEASE);
        let Some(hand) = now else {
            return;
        };
        if down && self.gesture.is_none() {
            let ray = Ray::from_aim(&hand.world_from_aim);
            let Some(entity) = self.hovered[h as usize] else {
                return;
            };
            let Some((face, vertex, normal, from, scale)) = self.pick_element(entity, &ray) else {
                return;
            };
            let start = hand.world_from_grip.position;
            let kind = if self.tool == Tool::Extrude {
                GestureKind::Pull {
                    face,
                    normal,
                    start,
                    scale,
                }
            } else {
                GestureKind::Drag {
                    vertex,
                    from,
                    start,
                }
            };
            self.gesture = Some(MeshGesture {
                hand: h,
                entity,
                kind,
                command: None,
                last: None,
            });
            if self.selected != Some(entity) {
                self.selected = Some(entity);
                self.submit(
                    vec![Command::Select {
                        entities: vec![entity],
                    }],
                    None,
                );
            }
            out.haptics.push((h, 0.4, 0.02));
            return;
        }
        let Some(g) = self.gesture.as_mut().filter(|g| g.hand == h) else {
            return;
        };
        if up {
            let g = self.gesture.take();
            if let Some(MeshGesture {
                entity,
                command: Some(command),
                ..
            }) = g
            {
                let at = self.conn.replica().scene().position;
                if let Some((_, committed, _)) = self.mesh_previews.get_mut(&entity) {
                    *committed = Some(at);
                }
                self.submit(vec![command], None);
                out.haptics.push((h, 0.5, 0.03));
            } else if let Some(g) = g {
                self.mesh_previews.remove(&g.entity);
            }
            return;
        }
        #[allow(
            clippy::cast_possible_truncation,
            reason = "grid steps of scene coordinates fit easily"
        )]
        let (command, cell) = match g.kind {
            GestureKind::Pull {
                face,
                normal,
                start,
                scale,
            } => {
                let steps =
                    ((hand.world_from_grip.position - start).dot(normal) / MESH_SNAP_M).round();
                let distance_m = steps * MESH_SNAP_M * scale;
                let command = (steps != 0.0).then(|| Command::ExtrudeFaces {
                    entity: g.entity,
                    faces: vec![face],
                    direction: meshwork_protocol::command::ExtrudeDirection::Normal { distance_m },
                    snap_m: None,
                });
                (command, [steps as i64, 0, 0])
            }
            GestureKind::Drag {
                vertex,
                from,
                start,
            } => {
                let t = self
                    .conn
                    .replica()
                    .scene()
                    .entities
                    .get(&g.entity)
                    .map_or(Transform::IDENTITY, |e| e.transform);
                let steps = ((hand.world_from_grip.position - start) / MESH_SNAP_M).round();
                let local = t.rotation.inverse() * (steps * MESH_SNAP_M) / t.scale;
                let command = (steps != Vec3::ZERO).then(|| Command::MoveVertices {
                    entity: g.entity,
                    moves: vec![(vertex, from + local)],
                });
                (command, [steps.x as i64, steps.y as i64, steps.z as i64])
            }
        };
        if g.last.is_some_and(|l| l != cell) {
            out.haptics.push((h, 0.2, 0.01));
        }
        g.last = Some(cell);
        g.command.clone_from(&command);
        let entity = g.entity;
        let author = self.conn.author().unwrap_or_default();
        let preview = command
            .as_ref()
            .and_then(|c| self.conn.replica().scene().preview(author, c))
            .map(|e| {
                let m = e.geometry.render();
                Rc::new((m.positions, m.normals, m.indices))
            });
        match preview {
            Some(mesh) => {
                self.preview_serial = self.preview_serial.saturating_add(1);
                self.mesh_previews
                    .insert(entity, (mesh, None, self.preview_serial));
            }
            None => {
                self.mesh_previews.remove(&entity);
            }
        }
    }

    /// A panel operation on the selected entity's mesh.
    fn mesh_action(&mut self, action: MeshAction) {
        let Some(entity) = self.selected else {
            self.notices.push("select a mesh first".to_owned());
            return;
        };
        let command = match action {
            MeshAction::Subdivide => {
                let faces = self
                    .conn
                    .replica()
                    .scene()
                    .entities
                    .get(&entity)
                    .map(|e| {
                        e.geometry
                            .edit_mesh(e.spawned_by)
                            .faces()
                            .keys()
                            .copied()
                            .collect()
                    })
                    .unwrap_or_default();
                Command::SubdivideFaces {
                    entity,
                    faces,
                    cuts: 1,
                }
            }
            MeshAction::Smooth => Command::Smooth {
                entity,
                faces: Vec::new(),
                levels: 1,
            },
            MeshAction::Mirror => Command::Mirror {
                entity,
                axis: meshwork_protocol::editmesh::Axis::X,
                weld: true,
            },
            MeshAction::Duplicate => {
                let Some(copy) = self.new_entity() else {
                    return;
                };
                self.submit(
                    vec![
                        Command::Duplicate {
                            entity,
                            copy,
                            offset: Vec3::new(0.6, 0.0, 0.0),
                        },
                        Command::Select {
                            entities: vec![copy],
                        },
                    ],
                    None,
                );
                self.selected = Some(copy);
                return;
            }
        };
        self.submit(vec![command], None);
    }

    /// Whether some entity is drawn with a gesture's mesh (one in progress, or committed and
    /// not yet in the replica).
    #[must_use]
    pub fn has_mesh_previews(&self) -> bool {
        !self.mesh_previews.is_empty()
    }

    /// What the others present have selected: (author, entity) pairs.
    #[must_use]
    pub fn others_selections(&self) -> Vec<(AuthorId, EntityId)> {
        let me = self.conn.author();
        self.conn
            .replica()
            .scene()
            .authors
            .iter()
            .filter(|(a, _)| Some(**a) != me)
            .filter_map(|(a, s)| s.selection.as_ref().map(|sel| (*a, sel)))
            .flat_map(|(a, sel)| sel.value.iter().map(move |e| (a, *e)))
            .collect()
    }

    fn replica_transform(&self, e: EntityId) -> Option<Transform> {
        self.conn.view().entities.get(&e).map(|x| x.transform)
    }

    fn transform_of(&self, e: EntityId) -> Option<Transform> {
        self.replica_transform(e).map(|t| self.shown(e, &t))
    }

    /// Runs others' live mesh edits that changed since they were last run (on a copy of the
    /// entity: the server's own operation). One that would be refused here keeps the last result.
    fn run_remote_edits(&mut self) {
        let scene = self.conn.replica().scene();
        for (id, p) in self.conn.live().edits() {
            if self
                .remote_meshes
                .get(&id)
                .is_some_and(|(s, _)| *s == p.serial)
            {
                continue;
            }
            if let Some(e) = scene.preview(p.author, &p.value) {
                let m = e.geometry.render();
                self.remote_meshes
                    .insert(id, (p.serial, Rc::new((m.positions, m.normals, m.indices))));
            }
        }
    }

    fn pick(&mut self, ray: &Ray) -> Option<EntityId> {
        let shapes = self.entity_draws();
        let pickables: Vec<Pickable<'_>> = shapes
            .iter()
            .map(|d| Pickable {
                id: d.id,
                world_from_entity: input::matrix(&d.transform),
                positions: &d.mesh.0,
                indices: &d.mesh.2,
            })
            .collect();
        input::pick(ray, &pickables).map(|(e, _)| e)
    }

    /// Every entity as it is shown now (previews applied), with its cached triangles.
    pub fn entity_draws(&mut self) -> Vec<EntityDraw> {
        self.run_remote_edits();
        // Own edits made offline show at once (the view applies them until they are judged).
        self.conn.refresh_view();
        let scene = self.conn.view();
        let live = self.conn.live();
        let mut out = Vec::with_capacity(scene.entities.len());
        let mut used = std::collections::BTreeSet::new();
        for (id, e) in &scene.entities {
            let remote = live
                .edit(*id)
                .zip(self.remote_meshes.get(id))
                .map(|(p, (serial, mesh))| (p.author, *serial, mesh));
            // A geometry's key names its content: the renderer keeps uploaded meshes by it.
            let (key, mesh) = match (self.mesh_previews.get(id), remote) {
                (Some((mesh, _, serial)), _) => {
                    (format!("preview:{}:{serial}", id.0), mesh.clone())
                }
                (None, Some((_, serial, mesh))) => {
                    (format!("remote:{}:{serial}", id.0), mesh.clone())
                }
                (None, None) => self.meshes.get(*id, self.conn.revision(*id), &e.geometry),
            };
            // Another member's mesh gesture shows in their colour.
            let color = remote.map_or(e.color.value, |(author, _, _)| author_color(author));
            used.insert(key.clone());
            let remote = live.transform(*id).map(|p| p.value);
            out.push(EntityDraw {
                id: *id,
                transform: self
                    .previews
                    .get(id)
                    .copied()
                    .or(remote)
                    .unwrap_or(e.transform),
                color,
                key,
                mesh,
            });
        }
        // Meshes of old revisions (and of entities gone) leave the cache.
        self.meshes.meshes.retain(|k, _| used.contains(k));
        out
    }
}

/// A pose from the wire (the protocol's quantization, inverted).
#[must_use]
pub fn pose_from_wire(w: &WirePose) -> Pose {
    Pose {
        position: w.position_m(),
        orientation: w.rotation_q(),
    }
}

/// Each author's colour (linear RGB, opaque): the protocol's rule, which the browser editor
/// shares, so a person has one colour in both clients.
#[must_use]
pub fn author_color(author: AuthorId) -> Vec4 {
    let [r, g, b] = meshwork_protocol::presence::author_color(author);
    Vec4::new(r, g, b, 1.0)
}

/// A pose on the wire (the protocol's quantization).
#[must_use]
pub fn wire_pose(p: &Pose) -> WirePose {
    WirePose::quantize(p.position, p.orientation)
}

/// A gesture of several scene edits goes out behind one `Step`, so that one undo takes it all
/// back (a grab that moved and rotated; an add with its colour). Selections do not count.
fn one_step(commands: Vec<Command>) -> Vec<Command> {
    let label = match commands.first() {
        Some(Command::Spawn { .. }) => "Add",
        Some(Command::Translate { .. } | Command::Rotate { .. } | Command::Scale { .. }) => "Grab",
        _ => "Edit",
    };
    meshwork_protocol::history::one_step(commands, label)
}

/// What the panel's last line says about a refusal (23 characters fit): for an undo, who
/// blocked it.
#[must_use]
pub fn refusal_notice(r: &meshwork_protocol::wire::CommandRefused) -> String {
    if r.code != meshwork_protocol::wire::RefusalCode::Undo {
        return format!("refused: {}", r.message);
    }
    let who = r
        .message
        .split("author#")
        .nth(1)
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .filter(|n| !n.is_empty());
    match who {
        Some(n) => format!("Undo: author {n} edited"),
        None if r.message.starts_with("nothing to") => {
            let mut m = r.message.clone();
            m[..1].make_ascii_uppercase();
            m
        }
        None => "Undo refused".to_owned(),
    }
}

/// The name a headset goes by when none was given: "Quest" and the start of its key's
/// fingerprint, so two headsets differ.
#[must_use]
pub fn default_display_name(signer: &Ed25519Signer) -> String {
    use meshwork_protocol::Signer as _;
    let id = signer.public_key().key_id();
    format!("Quest {:02x}{:02x}", id.0[0], id.0[1])
}

/// An invite any test can join with (signed by a fixed key, never expiring).
#[cfg(test)]
pub(crate) fn test_invite() -> Invite {
    let key = Ed25519Signer::from_seed([7; 32]);
    Invite::mint(
        &meshwork_protocol::wire::InviteBody {
            domain: meshwork_protocol::Domain::Invite,
            session: meshwork_protocol::SessionId([1; 16]),
            role: meshwork_protocol::Role::Editor,
            expires_at_ms: u64::MAX,
            invite_id: [2; 16],
        },
        &key,
    )
    .unwrap_or_else(|_| unreachable!("a fixed invite signs"))
}

#[cfg(test)]
mod tests {
    use meshwork_protocol::wire::{Presence, PresenceOf};

    use super::*;

    fn presence_of(author: u32, head: &Pose, right: &Pose) -> ServerMsg {
        ServerMsg::Presence(PresenceOf {
            author: AuthorId(author),
            presence: Presence {
                seq: 1,
                head: Some(wire_pose(head)),
                hands: [None, Some(wire_pose(right))],
                cursor: None,
            },
        })
    }

    /// Author 7's head and right hand received and drawn for one frame of a still wearer: the
    /// wearer's frame input, and the head and hand sent.
    fn others_head_drawn(app: &mut App) -> (FrameInput, Pose, Pose) {
        let input = FrameInput {
            stage_from_head: Pose::looking(Vec3::new(0.0, 1.6, 0.0), 0.0, 0.0),
            hands: [None, None],
        };
        let head = Pose::looking(Vec3::new(1.0, 1.6, -2.0), 0.0, 0.0);
        let right = Pose::looking(Vec3::new(1.25, 1.1, -1.8), 0.0, 0.0);
        app.receive(&presence_of(7, &head, &right));
        app.frame(&input);
        (input, head, right)
    }

    /// Updates come about every other frame (the server's presence tick): the drawing moves
    /// from where it was to the newest over two frames (22 ms at 90 Hz), not in one step.
    #[test]
    fn others_move_from_one_update_to_the_next_at_the_display_rate() {
        let mut app = App::new(Ed25519Signer::from_seed([3; 32]), test_invite(), 0.05);
        let (input, head, right) = others_head_drawn(&mut app);
        let drawn = |app: &App| {
            app.others()[&AuthorId(7)]
                .head
                .unwrap_or_else(|| unreachable!("a head was sent"))
        };
        assert!((drawn(&app).position - head.position).length() < 1e-3);

        let moved = Pose::looking(Vec3::new(1.2, 1.6, -2.0), 0.4, 0.0);
        app.receive(&presence_of(7, &moved, &right));
        assert!(
            (drawn(&app).position - head.position).length() < 1e-3,
            "it starts from where it was drawn"
        );
        app.frame(&input);
        let half = drawn(&app);
        assert!(
            (half.position - Vec3::new(1.1, 1.6, -2.0)).length() < 2e-3,
            "{:?}",
            half.position
        );
        let (from_start, to_end) = (
            half.orientation.angle_between(head.orientation),
            half.orientation.angle_between(moved.orientation),
        );
        assert!((from_start - 0.2).abs() < 0.01 && (to_end - 0.2).abs() < 0.01);
        app.frame(&input);
        assert!((drawn(&app).position - moved.position).length() < 1e-3);
        assert!(drawn(&app).orientation.angle_between(moved.orientation) < 1e-3);
        app.frame(&input);
        assert!(
            (drawn(&app).position - moved.position).length() < 1e-3,
            "and stays"
        );
        // The hand that was there all along did not move.
        let hand = app.others()[&AuthorId(7)].hands[1]
            .unwrap_or_else(|| unreachable!("a right hand was sent"));
        assert!((hand.position - right.position).length() < 1e-3);
    }

    /// The server's challenge and welcome of author 1 in session `[1; 16]`, with its presence
    /// tick.
    pub(super) fn welcome(app: &mut App, presence_tick_ms: u32) {
        app.receive(&ServerMsg::Challenge(meshwork_protocol::wire::Challenge {
            nonce: [0; 32],
            server_build_id: "test".into(),
        }));
        app.receive(&ServerMsg::Welcome(meshwork_protocol::wire::Welcome {
            session: meshwork_protocol::SessionId([1; 16]),
            author: AuthorId(1),
            role: meshwork_protocol::Role::Editor,
            next_seq: 1,
            log_position: 0,
            presence_tick_ms,
        }));
    }

    /// The drawing takes the server's own presence tick, from its `Welcome`: a server run with
    /// `--presence-tick-ms 99` sends an update about every nine frames, and one with 0 sends
    /// each at once.
    #[test]
    fn others_are_drawn_over_the_tick_the_server_welcomed_with() {
        for (tick, share) in [(99u32, 1.0 / 9.0), (0, 1.0)] {
            let mut app = App::new(Ed25519Signer::from_seed([3; 32]), test_invite(), 0.05);
            welcome(&mut app, tick);
            let (input, head, right) = others_head_drawn(&mut app);
            let moved = Pose::looking(Vec3::new(1.9, 1.6, -2.0), 0.0, 0.0);
            app.receive(&presence_of(7, &moved, &right));
            app.frame(&input);
            let drawn = app.others()[&AuthorId(7)]
                .head
                .unwrap_or_else(|| unreachable!("a head was sent"));
            let want = head.position.lerp(moved.position, share);
            assert!(
                (drawn.position - want).length() < 2e-3,
                "tick {tick}: {:?}, not {want:?}",
                drawn.position
            );
        }
    }

    #[test]
    fn others_heads_and_hands_are_drawn_in_their_colour_until_they_go_stale() {
        let mut app = App::new(Ed25519Signer::from_seed([3; 32]), test_invite(), 0.05);
        let head = Pose::looking(Vec3::new(1.0, 1.6, -2.0), 0.5, 0.1);
        let right = Pose::looking(Vec3::new(1.25, 1.1, -1.8), 0.0, 0.0);
        app.receive(&presence_of(7, &head, &right));
        let other = app.others()[&AuthorId(7)];
        let got = other
            .head
            .unwrap_or_else(|| unreachable!("a head was sent"));
        assert!((got.position - head.position).length() < 1e-3);
        assert!(got.orientation.angle_between(head.orientation) < 1e-3);
        assert_eq!(other.hands[0], None);

        let input = FrameInput {
            stage_from_head: Pose::looking(Vec3::new(0.0, 1.6, 0.0), 0.0, 0.0),
            hands: [None, None],
        };
        let color = author_color(AuthorId(7));
        let drawn = |app: &mut App| -> Vec<Vec3> {
            let (_, items) = crate::sim::draw_list(app, &input, (320, 240));
            items
                .iter()
                .map(crate::sim::OwnedItem::as_item)
                .filter(|i| i.color == color)
                .map(|i| i.world_from_model.w_axis.truncate())
                .collect()
        };
        let at = drawn(&mut app);
        assert_eq!(at.len(), 2, "a head and one hand");
        assert!((at[0] - head.position).length() < 1e-3);
        assert!((at[1] - right.position).length() < 1e-3);

        // No update for the time-to-live: still there; one frame more: gone.
        for _ in 0..PRESENCE_TTL_FRAMES {
            app.frame(&input);
        }
        assert!(app.others().contains_key(&AuthorId(7)));
        app.frame(&input);
        assert!(app.others().is_empty());
        assert!(drawn(&mut app).is_empty());
        // A fresh update brings them back; leaving takes them away at once.
        app.receive(&presence_of(7, &head, &right));
        assert_eq!(drawn(&mut app).len(), 2);
        app.receive(&ServerMsg::Left(meshwork_protocol::wire::Left {
            author: AuthorId(7),
        }));
        assert!(drawn(&mut app).is_empty());
    }

    #[test]
    fn held_entities_stream_previews_and_each_drag_ends_once() {
        let mut app = App::new(Ed25519Signer::from_seed([3; 32]), test_invite(), 0.05);
        let e = EntityId::new(AuthorId(9), 1);
        let t = Transform {
            translation: Vec3::new(1.25, 0.5, -0.75),
            rotation: glam::Quat::from_rotation_y(0.4),
            scale: Vec3::new(1.0, 2.0, 1.0),
        };
        app.grabs[1] = Some(Grab {
            entity: e,
            grip_from_entity: glam::Mat4::IDENTITY,
            start: t,
        });
        app.previews.insert(e, t);
        // Sent compact; read back as the previews they stand for.
        let previews = |msgs: Vec<ClientMsg>| -> Vec<meshwork_protocol::wire::Preview> {
            msgs.into_iter()
                .flat_map(|m| match m {
                    ClientMsg::Motion(motion) => meshwork_protocol::motion::MotionOf {
                        author: AuthorId(0),
                        motion,
                    }
                    .expand()
                    .unwrap_or_else(|e| unreachable!("{e}")),
                    other => unreachable!("{other:?}"),
                })
                .map(|m| match m {
                    ServerMsg::Preview(p) => p.preview,
                    other => unreachable!("{other:?}"),
                })
                .collect()
        };
        let first = previews(app.previews_out());
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].entity, e);
        let sent = transform_from_preview(
            &first[0]
                .transform
                .unwrap_or_else(|| unreachable!("a held entity has a transform")),
        );
        assert!((sent.translation - t.translation).length() < 1e-3);
        assert!(
            sent.rotation.angle_between(t.rotation) < 4e-3,
            "the wire's 10-bit steps"
        );
        assert!((sent.scale - t.scale).length() < 1e-3);
        // Held on: one per call, numbered on with presence.
        let second = previews(app.previews_out());
        assert!(second[0].seq > first[0].seq);
        let input = FrameInput {
            stage_from_head: Pose::looking(Vec3::new(0.0, 1.6, 0.0), 0.0, 0.0),
            hands: [None, None],
        };
        let ClientMsg::Motion(p) = app.presence(&input) else {
            unreachable!("presence")
        };
        let p = p.decode().unwrap_or_else(|e| unreachable!("{e}"));
        assert!(p.figure.is_some_and(|f| f.head.is_some()));
        assert!(
            u32::from(p.seq) > second[0].seq,
            "one sequence for presence and previews"
        );
        // Released: one ending message, then nothing.
        app.grabs[1] = None;
        let ended = previews(app.previews_out());
        assert_eq!(ended.len(), 1);
        assert_eq!((ended[0].entity, ended[0].transform), (e, None));
        assert!(app.previews_out().is_empty());
    }

    #[test]
    fn a_preview_of_an_entity_the_replica_lacks_is_not_kept() {
        let mut app = App::new(Ed25519Signer::from_seed([3; 32]), test_invite(), 0.05);
        let e = EntityId::new(AuthorId(9), 1);
        let t = Transform::IDENTITY;
        app.receive(&ServerMsg::Preview(meshwork_protocol::wire::PreviewOf {
            author: AuthorId(9),
            preview: meshwork_protocol::wire::Preview {
                seq: 1,
                entity: e,
                transform: Some(preview_transform(&t)),
            },
        }));
        assert_eq!(app.conn.live().transforms().count(), 0);
    }

    #[test]
    fn author_colours_are_the_protocols() {
        let c = author_color(AuthorId(3));
        let [r, g, b] = meshwork_protocol::presence::author_color(AuthorId(3));
        assert_eq!(c, Vec4::new(r, g, b, 1.0));
    }

    #[test]
    fn an_undo_refusal_names_who_on_the_panel_and_gestures_are_one_step() {
        use meshwork_protocol::wire::{CommandRefused, RefusalCode};
        let refused = |code, message: &str| CommandRefused {
            seq: 4,
            code,
            message: message.into(),
        };
        let blocked = refused(
            RefusalCode::Undo,
            "cannot undo \u{201c}move\u{201d}: author#12 has since changed the transform of entity#1",
        );
        assert_eq!(refusal_notice(&blocked), "Undo: author 12 edited");
        assert!(refusal_notice(&blocked).chars().count() <= 23);
        assert_eq!(
            refusal_notice(&refused(RefusalCode::Undo, "nothing to undo")),
            "Nothing to undo"
        );
        assert_eq!(
            refusal_notice(&refused(RefusalCode::Topology, "bad")),
            "refused: bad"
        );
        let e = EntityId::new(AuthorId(2), 1);
        let grab = one_step(vec![
            Command::Translate {
                entity: e,
                delta: Vec3::X,
            },
            Command::Rotate {
                entity: e,
                delta: glam::Quat::from_rotation_y(0.5),
            },
        ]);
        assert!(matches!(&grab[0], Command::Step { entries: 2, label } if label == "Grab"));
        assert_eq!(grab.len(), 3);
        let single = vec![
            Command::Despawn { entity: e },
            Command::Select { entities: vec![] },
        ];
        assert_eq!(one_step(single.clone()), single, "one edit needs no step");
    }
}

#[cfg(test)]
mod edit_preview_tests {
    use meshwork_protocol::SignedEntry;
    use meshwork_protocol::wire::{EditPreview, EditPreviewOf};

    use super::*;

    /// A joined app holding one cube of another author (`AuthorId(2)`).
    fn with_cube() -> (App, EntityId) {
        use meshwork_protocol::Signer as _;
        let mut app = App::new(Ed25519Signer::from_seed([3; 32]), test_invite(), 0.05);
        let cube = EntityId::new(AuthorId(2), 1);
        let mut scene = meshwork_protocol::scene::Scene::new();
        scene.apply(
            meshwork_protocol::CommandId {
                lamport: 1,
                author: AuthorId(2),
            },
            AuthorId(2),
            &Command::Spawn {
                entity: cube,
                primitive: Primitive::Cube,
                transform: Transform::IDENTITY,
            },
        );
        tests::welcome(&mut app, 22);
        app.receive(&ServerMsg::Roster(meshwork_protocol::wire::Roster {
            session: meshwork_protocol::SessionId([1; 16]),
            server_key: Ed25519Signer::from_seed([7; 32]).public_key(),
            replace: true,
            members: vec![meshwork_protocol::wire::Member {
                author: AuthorId(1),
                public_key: Ed25519Signer::from_seed([3; 32]).public_key(),
                role: meshwork_protocol::Role::Editor,
            }],
        }));
        let (manifest, chunks) = meshwork_protocol::replica::snapshot(&scene);
        app.receive(&ServerMsg::Snapshot(manifest));
        for chunk in chunks {
            app.receive(&ServerMsg::SnapshotChunk(chunk));
        }
        assert!(app.live());
        (app, cube)
    }

    /// The entries `app` has queued for the server, in order.
    fn submitted(app: &mut App) -> Vec<SignedEntry> {
        app.poll_transmit()
            .into_iter()
            .filter_map(|m| match m {
                ClientMsg::Submit(s) => Some(s.entries),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// The headset's name goes out as a signed entry once the scene is in, and not again while
    /// the scene shows it.
    #[test]
    fn the_display_name_is_announced_once_the_scene_is_in() {
        let (mut app, _) = with_cube();
        app.set_display_name("  Ada\u{7} on Quest  ");
        assert_eq!(app.display_name(), "Ada on Quest");
        let sent = submitted(&mut app);
        assert_eq!(sent.len(), 1);
        let body = sent[0].decode_body().unwrap_or_else(|_| unreachable!());
        assert_eq!(
            body.command,
            Command::SetDisplayName {
                name: "Ada on Quest".into()
            }
        );
        app.receive(&ServerMsg::Entries(meshwork_protocol::wire::Entries {
            entries: sent,
        }));
        assert_eq!(
            app.connection().replica().scene().display_name(AuthorId(1)),
            Some("Ada on Quest")
        );
        app.set_display_name("Ada on Quest");
        assert!(
            !app.poll_transmit()
                .iter()
                .any(|m| matches!(m, ClientMsg::Submit(_))),
            "the scene already shows it"
        );
    }

    /// A drag's preview is settled by the acks of its own entries: a selection submitted after
    /// it and acknowledged first does not end it (the old rule settled the oldest by position).
    #[test]
    fn a_drags_preview_waits_for_its_own_acks() {
        let (mut app, cube) = with_cube();
        let moved = Transform {
            translation: Vec3::X,
            ..Transform::IDENTITY
        };
        app.previews.insert(cube, moved);
        app.submit(
            vec![Command::Translate {
                entity: cube,
                delta: Vec3::X,
            }],
            Some(cube),
        );
        app.submit(
            vec![Command::Select {
                entities: vec![cube],
            }],
            None,
        );
        let sent = submitted(&mut app);
        assert_eq!(sent.len(), 2);
        let body = |e: &SignedEntry| e.decode_body().unwrap_or_else(|_| unreachable!());
        let (drag, select) = (body(&sent[0]), body(&sent[1]));
        // The server acknowledges an entry and its echo is applied.
        let land =
            |app: &mut App, body: &meshwork_protocol::sign::EntryBody, entry: &SignedEntry| {
                app.receive(&ServerMsg::Ack(meshwork_protocol::wire::Ack {
                    seq: body.seq,
                    id: body.id(),
                }));
                app.receive(&ServerMsg::Entries(meshwork_protocol::wire::Entries {
                    entries: vec![entry.clone()],
                }));
            };
        // The selection lands first.
        land(&mut app, &select, &sent[1]);
        assert_eq!(
            app.previews.get(&cube),
            Some(&moved),
            "the drag is still in flight"
        );
        land(&mut app, &drag, &sent[0]);
        assert_eq!(
            app.previews.get(&cube),
            None,
            "applied: the replica shows it now"
        );
    }

    #[test]
    fn anothers_mesh_gesture_is_drawn_in_their_colour_until_it_goes_quiet() {
        let (mut app, cube) = with_cube();
        let mesh = app.conn.replica().scene().entities[&cube]
            .geometry
            .edit_mesh(app.conn.replica().scene().entities[&cube].spawned_by);
        let face = *mesh.faces().keys().next().unwrap_or_else(|| unreachable!());
        let pull = |app: &mut App, seq: u32, distance_m: f32| {
            app.receive(&ServerMsg::EditPreview(EditPreviewOf {
                author: AuthorId(2),
                preview: EditPreview {
                    seq,
                    entity: cube,
                    command: Some(Command::ExtrudeFaces {
                        entity: cube,
                        faces: vec![face],
                        direction: meshwork_protocol::command::ExtrudeDirection::Normal {
                            distance_m,
                        },
                        snap_m: None,
                    }),
                },
            }));
            app.entity_draws()
        };
        let draws = pull(&mut app, 1, 0.5);
        assert_eq!(
            draws[0].mesh.2.len() / 3,
            20,
            "the extrude's result: 10 quads"
        );
        assert_eq!(draws[0].color, author_color(AuthorId(2)));
        // The gesture moves on: a new result under a new geometry key (the renderer keeps
        // uploaded meshes by key, so an old key would show the first result for good).
        let moved = pull(&mut app, 2, 0.9);
        assert_ne!(moved[0].key, draws[0].key);
        assert_ne!(moved[0].mesh.0, draws[0].mesh.0);
        let input = FrameInput {
            stage_from_head: Pose::looking(Vec3::new(0.0, 1.6, 0.0), 0.0, 0.0),
            hands: [None, None],
        };
        let ttl_frames = meshwork_protocol::presence::LIVE_PREVIEW_TTL_MS * NOMINAL_FRAME_HZ / 1000;
        for _ in 0..=ttl_frames.saturating_add(1) {
            app.frame(&input);
        }
        let draws = app.entity_draws();
        assert_eq!(draws[0].mesh.2.len() / 3, 12, "gone quiet: the cube again");
    }
}

#[cfg(test)]
mod interest_tests {
    use super::*;

    #[test]
    fn others_presence_is_asked_for_around_the_head_and_follows_a_walk() {
        let mut app = App::new(Ed25519Signer::from_seed([3; 32]), test_invite(), 0.05);
        let at = |x: f32| FrameInput {
            stage_from_head: Pose::looking(Vec3::new(x, 1.6, 0.0), 0.0, 0.0),
            hands: [None, None],
        };
        let region = |x: f32| {
            meshwork_protocol::interest::Region::around(
                Vec3::new(x, 1.6, 0.0),
                INTEREST_HALF_EXTENT_M,
            )
        };
        app.presence(&at(0.0));
        assert_eq!(app.conn.interest(), Some(region(0.0)));
        app.presence(&at(5.0));
        assert_eq!(
            app.conn.interest(),
            Some(region(0.0)),
            "a few steps keep the region"
        );
        app.presence(&at(9.0));
        assert_eq!(app.conn.interest(), Some(region(9.0)), "a walk moves it");
    }
}
