//! `meshwork-protocol` for JavaScript (wasm-bindgen): key generation from caller-supplied
//! randomness, the client connection (handshake, signing, submitting) and its replica, fed with
//! raw bytes from whatever transport the page uses (WebRTC data channel or WebSocket). Everything
//! that decides what is true stays in Rust; this is only the boundary.
//!
//! Commands cross the boundary as JSON in serde's shape of `meshwork_protocol::Command`, e.g.
//! `{"Translate":{"entity":4294967297,"delta":[0.1,0,0]}}`.

use meshwork_protocol::client::{ClientConnection, ClientEvent, ClientPhase, Pending};
use meshwork_protocol::codec::{encode_frame, to_frame};
use meshwork_protocol::command::Transform;
use meshwork_protocol::motion::{Figure, Motion, MotionContent, low_seq};
use meshwork_protocol::replica::Replica;
use meshwork_protocol::scene::Geometry;
use meshwork_protocol::wire::{ClientMsg, JoinTicket, Ping, Pose, PreviewTransform, ServerMsg};
use meshwork_protocol::{Command, Ed25519Signer, EntityId, FrameReader, Signer as _};
use serde_json::{Value, json};
use wasm_bindgen::prelude::*;

/// The build id every connection of this package announces.
const BUILD_ID: &str = concat!("meshwork-wasm ", env!("CARGO_PKG_VERSION"));

fn err(e: impl core::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// A connection to one session.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Connection {
    inner: ClientConnection<Ed25519Signer>,
    reader: FrameReader,
    public_key: Vec<u8>,
    /// Messages this wrapper adds to the reliable lane (pings).
    extra: Vec<ClientMsg>,
    presence_seq: u32,
    /// The last edit preview (`preview_edit`), triangulated.
    preview: Option<meshwork_protocol::mesh::RenderMesh>,
    /// This user's released drags, shown until the server acknowledged their entries and the
    /// replica applied them (or refused one): by sequence number, never by position.
    held: Pending<(EntityId, Transform)>,
    /// The last triangulation handed out: (entity, geometry revision, triangles).
    triangulated:
        std::cell::RefCell<Option<(EntityId, String, meshwork_protocol::mesh::RenderMesh)>>,
}

#[wasm_bindgen]
impl Connection {
    /// `seed`: 32 random bytes (`crypto.getRandomValues`), the signing key's secret;
    /// `ticket`: the join ticket text (`mwj1_…`). The `Hello` is queued at once.
    ///
    /// # Errors
    /// A bad seed length or an unreadable ticket.
    #[wasm_bindgen(constructor)]
    pub fn new(seed: &[u8], ticket: &str) -> Result<Self, JsError> {
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| err("the seed must be 32 bytes"))?;
        let ticket = JoinTicket::from_text(ticket).map_err(err)?;
        let signer = Ed25519Signer::from_seed(seed);
        Ok(Self::around(ClientConnection::new(
            signer,
            ticket.invite,
            BUILD_ID,
        )))
    }

    /// A connection that goes on from `saved` ([`Self::save`], kept by the page in IndexedDB):
    /// same seed and ticket; the replica shows the saved scene at once, the unacknowledged
    /// entries are kept and go out once joined, and the join resumes from the saved position.
    ///
    /// # Errors
    /// A bad seed or ticket, or saved bytes that do not restore (another session, damaged).
    pub fn restore(seed: &[u8], ticket: &str, saved: &[u8]) -> Result<Self, JsError> {
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| err("the seed must be 32 bytes"))?;
        let ticket = JoinTicket::from_text(ticket).map_err(err)?;
        let signer = Ed25519Signer::from_seed(seed);
        let inner =
            ClientConnection::restore(signer, ticket.invite, BUILD_ID, saved).map_err(err)?;
        Ok(Self::around(inner))
    }

    /// What to keep across a reload while edits are unacknowledged (`undefined` before the
    /// first join).
    #[must_use]
    pub fn save(&self) -> Option<Vec<u8>> {
        self.inner.save()
    }

    fn around(inner: ClientConnection<Ed25519Signer>) -> Self {
        let public_key = inner.signer().public_key().0.to_vec();
        Self {
            inner,
            reader: FrameReader::new(),
            public_key,
            extra: Vec::new(),
            presence_seq: 0,
            preview: None,
            held: Pending::new(),
            triangulated: std::cell::RefCell::new(None),
        }
    }

    /// The public key (32 bytes).
    #[must_use]
    pub fn public_key(&self) -> Vec<u8> {
        self.public_key.clone()
    }

    /// Everything to send now, as back-to-back frames (empty when nothing is queued).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for msg in self.extra.drain(..) {
            let _ = encode_frame(&msg, &mut out);
        }
        while let Some(msg) = self.inner.poll_transmit() {
            // A message over the frame limit cannot be produced by this API's inputs.
            let _ = encode_frame(&msg, &mut out);
        }
        out
    }

    /// Feeds bytes received from the server on the reliable lane (any split). Returns the
    /// events as a JSON array of objects, each with a `type`: `joined` (`author`, `role`),
    /// `join_refused` (`message`), `synced`, `resyncing` (`reason`: why the replica refused what
    /// it was sent, e.g. `forged_entry`, `unknown_author`, `unsigned_delta`, `bad_seal`,
    /// `hash_mismatch`), `changed` (the scene moved on: re-read
    /// it), `ack` (`seq`), `refused` (`seq`, `code`, `message`: a command the server refused),
    /// `pong` (`nonce`), `presence` (see [`Self::receive_presence`]), `role` (`role`: an admin
    /// changed this member's role), `closed` (`reason`, `message`).
    ///
    /// # Errors
    /// A frame that ends the connection (oversized or undecodable).
    pub fn receive(&mut self, bytes: &[u8]) -> Result<String, JsError> {
        self.reader.push(bytes).map_err(err)?;
        let mut events = Vec::new();
        while let Some(msg) = self.reader.next_msg::<ServerMsg>().map_err(err)? {
            self.handle(&msg, &mut events);
        }
        serde_json::to_string(&events).map_err(err)
    }

    /// Feeds one message from the unreliable lane (a whole frame: WebRTC `presence` channel).
    /// Returns the same JSON array as [`Self::receive`]; undecodable input is ignored.
    #[must_use]
    pub fn receive_presence(&mut self, bytes: &[u8]) -> String {
        let mut events = Vec::new();
        if let Ok(Some((msg, _))) = meshwork_protocol::decode_frame::<ServerMsg>(bytes) {
            self.handle(&msg, &mut events);
        }
        serde_json::to_string(&events).unwrap_or_else(|_| "[]".into())
    }

    fn handle(&mut self, msg: &ServerMsg, events: &mut Vec<Value>) {
        if let Some(parts) = self.inner.expand(msg) {
            // A pack or a compact motion: handled as the messages it stands for.
            for part in parts {
                self.handle(&part, events);
            }
            return;
        }
        let before = self.inner.replica().scene().position;
        let role_before = self.inner.role();
        match msg {
            ServerMsg::Ack(a) => {
                self.held.acked(a.seq);
                events.push(json!({"type": "ack", "seq": a.seq}));
            }
            ServerMsg::CommandRefused(r) => {
                // A refused drag snaps back to what the server holds.
                let _ = self.held.refused(r.seq);
                events.push(json!({
                    "type": "refused", "seq": r.seq, "code": r.code.as_str(), "message": r.message,
                }));
            }
            ServerMsg::Pong(p) => events.push(json!({"type": "pong", "nonce": p.nonce})),
            ServerMsg::Presence(p) => events.push(json!({
                "type": "presence",
                "author": p.author.0,
                "head": p.presence.head.map(pose_json),
                "cursor": p.presence.cursor.map(pose_json),
            })),
            ServerMsg::Left(l) => events.push(json!({"type": "left", "author": l.author.0})),
            ServerMsg::ElementSelection(s) => events.push(json!({
                "type": "element_selection",
                "author": s.author.0,
                "entity": s.selection.entity.map(|e| e.0),
                "elements": s.selection.elements,
            })),
            ServerMsg::Close(c) => events.push(json!({
                "type": "closed", "reason": format!("{:?}", c.reason), "message": c.message,
            })),
            _ => {}
        }
        match self.inner.handle(msg) {
            ClientEvent::Joined => events.push(json!({
                "type": "joined",
                "author": self.inner.author().map(|a| a.0),
                "role": self.role(),
            })),
            ClientEvent::Refused(r) => {
                events.push(json!({"type": "join_refused", "message": r.message}));
            }
            ClientEvent::Synced => events.push(json!({"type": "synced"})),
            ClientEvent::Resyncing(reason) => {
                events.push(json!({"type": "resyncing", "reason": reason.as_str()}));
            }
            ClientEvent::Untrusted => events.push(json!({
                "type": "closed", "reason": "Untrusted",
                "message": "the server's key did not sign this invite: not trusting it",
            })),
            ClientEvent::None | ClientEvent::Closed => {
                // An admin changed this member's role (a roster update).
                if matches!(msg, ServerMsg::Roster(_)) && self.inner.role() != role_before {
                    events.push(json!({"type": "role", "role": self.role()}));
                }
            }
        }
        if self.inner.replica().scene().position != before
            || matches!(msg, ServerMsg::Snapshot(_) | ServerMsg::SnapshotChunk(_))
        {
            // Acknowledged drags are in the replica now.
            let _ = self.held.take_settled();
            events.push(json!({"type": "changed"}));
        }
        let live = self.take_live();
        if !live.is_empty() {
            events.push(json!({"type": "live", "entities": live}));
        }
    }

    #[allow(clippy::cast_precision_loss, reason = "entity ids stay far below 2^53")]
    fn take_live(&mut self) -> Vec<f64> {
        self.inner
            .take_live_changes()
            .iter()
            .map(|e| e.0 as f64)
            .collect()
    }

    /// The page's clock (`Date.now()`) moved on: others' live previews that went stale end.
    /// Returns the entities whose preview ended (draw them again). Call it a few times a second.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "Date.now() is a positive integer far below 2^53"
    )]
    pub fn tick(&mut self, now_ms: f64) -> Vec<f64> {
        self.inner.tick(now_ms.max(0.0) as u64);
        self.take_live()
    }

    /// Others' drags in progress (see `meshwork_protocol::presence::LivePreviews`), as JSON:
    /// `{transforms: [{entity, author, transform}], edits: [{entity, author, serial}]}`; an
    /// edit's result comes from [`Self::preview_live_edit`], redone when its `serial` moves on.
    #[must_use]
    #[allow(
        clippy::cast_precision_loss,
        reason = "ids and serials stay far below 2^53"
    )]
    pub fn live_json(&self) -> String {
        let live = self.inner.live();
        json!({
            "transforms": live.transforms().map(|(e, p)| json!({
                "entity": e.0 as f64, "author": p.author.0, "transform": p.value,
            })).collect::<Vec<_>>(),
            "edits": live.edits().map(|(e, p)| json!({
                "entity": e.0 as f64, "author": p.author.0, "serial": p.serial as f64,
            })).collect::<Vec<_>>(),
        })
        .to_string()
    }

    /// Runs another member's live mesh edit of entity `id` on a copy (as [`Self::preview_edit`]
    /// does for one's own): `false` when there is none or it would be refused here.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "ids come from live_json, exact below 2^53"
    )]
    pub fn preview_live_edit(&mut self, id: f64) -> bool {
        let live = self.inner.live().edit(EntityId(id as u64));
        self.preview =
            live.and_then(|p| preview_of(self.inner.replica().scene(), Some(p.author), &p.value));
        self.preview.is_some()
    }

    /// A released drag of entity `id` to `transform` (JSON) whose entries `seqs` were just
    /// submitted: shown instead of the replica until they are acknowledged and applied, or one
    /// is refused.
    ///
    /// # Errors
    /// JSON that is not a transform.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "ids and sequence numbers come from this package, exact below 2^53"
    )]
    pub fn hold(&mut self, id: f64, transform: &str, seqs: &[f64]) -> Result<(), JsError> {
        let t: Transform = serde_json::from_str(transform).map_err(err)?;
        self.held
            .submitted(seqs.iter().map(|s| *s as u64), (EntityId(id as u64), t));
        Ok(())
    }

    /// The released drags still shown (see [`Self::hold`]), newest last, as JSON
    /// `[{entity, transform}]`.
    #[must_use]
    #[allow(clippy::cast_precision_loss, reason = "entity ids stay far below 2^53")]
    pub fn held_json(&self) -> String {
        let held: Vec<Value> = self
            .held
            .iter()
            .map(|(e, t)| json!({"entity": e.0 as f64, "transform": t}))
            .collect();
        Value::Array(held).to_string()
    }

    /// What changed since the last call: `{all, entities: [id]}` (`all` after a snapshot: read
    /// the whole scene; else only those entities, with [`Self::entity_json`]).
    #[must_use]
    #[allow(clippy::cast_precision_loss, reason = "entity ids stay far below 2^53")]
    pub fn changes_json(&mut self) -> String {
        let changes = self.inner.take_changes();
        let ids: Vec<f64> = changes.entities.iter().map(|e| e.0 as f64).collect();
        json!({ "all": changes.all, "entities": ids }).to_string()
    }

    /// A new entity id of this author (see `ClientConnection::next_entity_id`): after every own
    /// id seen and `remembered` (the counter the page keeps across reloads); `undefined` before
    /// the join.
    #[must_use]
    #[allow(clippy::cast_precision_loss, reason = "entity ids stay far below 2^53")]
    pub fn next_entity_id(&mut self, remembered: u32) -> Option<f64> {
        self.inner.next_entity_id(remembered).map(|e| e.0 as f64)
    }

    /// One entity as [`Self::scene_json`] lists it, or `null` when it is gone.
    #[must_use]
    pub fn entity_json(&self, id: f64) -> String {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "ids come from scene_json, exact below 2^53"
        )]
        let id = EntityId(id as u64);
        self.inner.view().entities.get(&id).map_or_else(
            || "null".to_owned(),
            |e| self.entity_value(id, e).to_string(),
        )
    }

    /// The scene without its entities: `{position, name, selections, names, members}`:
    /// `names` the display names authors signed (author id → name), `members` the roster
    /// (`[{author, role}]`).
    #[must_use]
    #[allow(clippy::cast_precision_loss, reason = "entity ids stay far below 2^53")]
    pub fn scene_meta_json(&self) -> String {
        self.meta_value().to_string()
    }

    fn meta_value(&self) -> Value {
        let replica = self.inner.replica();
        let scene = self.inner.view();
        let names: serde_json::Map<String, Value> = scene
            .authors
            .keys()
            .filter_map(|a| Some((a.0.to_string(), Value::from(scene.display_name(*a)?))))
            .collect();
        let members: Vec<Value> = replica
            .members()
            .map(|m| json!({"author": m.author.0, "role": m.role.as_str()}))
            .collect();
        json!({
            "position": replica.scene().position,
            "name": scene.session_name.as_ref().map(|n| n.value.clone()),
            "selections": selections(scene),
            "names": names,
            "members": members,
        })
    }

    /// Entries whose signatures the replica verified against the roster so far.
    #[must_use]
    #[allow(clippy::cast_precision_loss, reason = "counts stay far below 2^53")]
    pub fn verified_entries(&self) -> f64 {
        self.inner.replica().verified_entries() as f64
    }

    #[allow(clippy::cast_precision_loss, reason = "entity ids stay far below 2^53")]
    fn entity_value(&self, id: EntityId, e: &meshwork_protocol::scene::Entity) -> Value {
        let kind = match &e.geometry {
            Geometry::Primitive(p) => format!("{p:?}").to_lowercase(),
            Geometry::Mesh(_) => "mesh".to_owned(),
        };
        let geometry = self.geometry_key(id, e);
        json!({
            "id": id.0 as f64,
            "name": e.name.value,
            "kind": kind,
            "geometry": geometry,
            "translation": e.transform.translation.to_array(),
            "rotation": e.transform.rotation.to_array(),
            "scale": e.transform.scale.to_array(),
            "color": e.color.value.to_array(),
        })
    }

    /// What names an entity's geometry for the viewport's caches: one key per primitive kind
    /// (unedited primitives share their triangles), one per mesh revision.
    fn geometry_key(&self, id: EntityId, e: &meshwork_protocol::scene::Entity) -> String {
        match &e.geometry {
            Geometry::Primitive(p) => format!("{}#0", format!("{p:?}").to_lowercase()),
            Geometry::Mesh(_) => format!("mesh#{}", self.inner.revision(id)),
        }
    }

    /// Reads the triangles kept under (`id`, `key`), made by `make` when the kept ones are of
    /// something else: positions, normals and indices are read one after the other, so one
    /// triangulation per change serves all three.
    fn cached_triangles<T>(
        &self,
        id: EntityId,
        key: String,
        make: impl FnOnce() -> Option<meshwork_protocol::mesh::RenderMesh>,
        read: impl FnOnce(&meshwork_protocol::mesh::RenderMesh) -> T,
    ) -> Option<T> {
        let mut cache = self.triangulated.borrow_mut();
        let fresh = cache
            .as_ref()
            .is_none_or(|(cid, ckey, _)| *cid != id || *ckey != key);
        if fresh {
            *cache = Some((id, key, make()?));
        }
        cache.as_ref().map(|(_, _, mesh)| read(mesh))
    }

    /// The role granted by the invite (`viewer`, `editor`, `admin`), once joined.
    #[must_use]
    pub fn role(&self) -> Option<String> {
        self.inner.role().map(|role| {
            serde_json::to_value(role)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        })
    }

    /// Why [`ClientConnection::submit`] made no entries: not joined yet, or as many edits as
    /// may wait unacknowledged already do.
    fn not_submitted(&self) -> JsError {
        if self.inner.joined_as().is_none() {
            err("not joined yet")
        } else {
            err(format!(
                "{} edits are waiting to be sent, the most kept; reconnect first",
                self.inner.unacked().count()
            ))
        }
    }

    /// The session id (hex) the ticket names.
    #[must_use]
    pub fn session(&self) -> Option<String> {
        self.inner.welcome().map(|w| w.session.to_string())
    }

    /// Queues a ping on the reliable lane (answered by a `pong` event: round-trip time).
    pub fn ping(&mut self, nonce: f64) {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a JS timestamp in ms: positive, far below 2^53"
        )]
        let nonce = nonce as u64;
        self.extra.push(ClientMsg::Ping(Ping { nonce }));
    }

    /// Follows the view: others' presence, previews and selections only around `center`
    /// (metres), a cube of half-edge `half_extent_m`, asked for again when the view has moved
    /// enough (`ClientConnection::follow_interest`; call it with every presence). Sent with the
    /// next [`Self::poll_transmit`] and again after a reconnect. Committed changes arrive
    /// whatever the region.
    pub fn follow_interest(&mut self, center: &[f32], half_extent_m: f32) {
        self.inner
            .follow_interest(vec3(Some(center), 0.0), half_extent_m);
    }

    /// One presence frame (for the unreliable lane, or the reliable one when there is none):
    /// the pointer's hit point in scene space (metres) and the camera pose, or `null`s.
    ///
    /// # Errors
    /// Never in practice.
    pub fn presence_frame(
        &mut self,
        cursor: Option<Vec<f32>>,
        head_position: Option<Vec<f32>>,
        head_rotation: Option<Vec<f32>>,
    ) -> Result<Vec<u8>, JsError> {
        self.presence_seq = self.presence_seq.wrapping_add(1);
        let pose = |p: &[f32], q: Option<&[f32]>| Pose::quantize(vec3(Some(p), 0.0), quat(q));
        let figure = Figure {
            head: head_position
                .as_deref()
                .map(|p| pose(p, head_rotation.as_deref())),
            hands: [None, None],
            cursor: cursor.as_deref().map(|p| pose(p, None)),
        };
        self.motion_frame(MotionContent {
            seq: low_seq(self.presence_seq),
            figure: Some(figure),
            ..MotionContent::default()
        })
    }

    /// A live-preview frame for the unreliable lane: `entity` is where `translation`,
    /// `rotation` (x, y, z, w) and `scale` say while its drag goes on; no transform ends it.
    /// Shares the presence sequence.
    ///
    /// # Errors
    /// A frame that cannot be encoded (never for these sizes).
    pub fn preview_frame(
        &mut self,
        entity: f64,
        translation: Option<Vec<f32>>,
        rotation: Option<Vec<f32>>,
        scale: Option<Vec<f32>>,
    ) -> Result<Vec<u8>, JsError> {
        self.presence_seq = self.presence_seq.wrapping_add(1);
        let transform = translation.as_deref().map(|t| {
            PreviewTransform::quantize(&Transform {
                translation: vec3(Some(t), 0.0),
                rotation: quat(rotation.as_deref()),
                scale: vec3(scale.as_deref(), 1.0),
            })
        });
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "entity ids come from scene_json, exact below 2^53"
        )]
        let entity = EntityId(entity as u64);
        let (moving, ended) = match transform {
            Some(t) => (vec![(entity, t)], vec![]),
            None => (vec![], vec![entity]),
        };
        self.motion_frame(MotionContent {
            seq: low_seq(self.presence_seq),
            figure: None,
            moving,
            ended,
        })
    }

    /// Presence and previews travel in their compact form ([`meshwork_protocol::motion`]).
    fn motion_frame(&self, content: MotionContent) -> Result<Vec<u8>, JsError> {
        let motion = Motion::encode(&content).map_err(err)?;
        to_frame(&ClientMsg::Motion(motion)).map_err(err)
    }

    /// A mesh-edit preview frame for the unreliable lane: `command` (JSON) is what the gesture
    /// on `entity` would commit now; none ends it. Shares the presence sequence. `undefined`
    /// when the command may not travel as a preview (not a mesh edit of `entity`, or naming more
    /// than 64 elements: such a gesture shows only to its author until it commits).
    ///
    /// # Errors
    /// JSON that is not a command.
    pub fn edit_preview_frame(
        &mut self,
        entity: f64,
        command: Option<String>,
    ) -> Result<Option<Vec<u8>>, JsError> {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "entity ids come from scene_json, exact below 2^53"
        )]
        let entity = EntityId(entity as u64);
        let command: Option<Command> = command
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(err)?;
        let author = self.inner.author().unwrap_or_default();
        if command
            .as_ref()
            .is_some_and(|c| !meshwork_protocol::wire::EditPreview::allows(c, entity, author))
        {
            return Ok(None);
        }
        self.presence_seq = self.presence_seq.wrapping_add(1);
        let preview = meshwork_protocol::wire::EditPreview {
            seq: self.presence_seq,
            entity,
            command,
        };
        to_frame(&ClientMsg::EditPreview(preview))
            .map(Some)
            .map_err(err)
    }

    /// An element-selection frame for the unreliable lane: the elements (JSON array of ids, as
    /// [`Self::edit_mesh_json`] gives them) this member has selected on `entity` in edit mode;
    /// no entity when leaving edit mode. `undefined` when there are more than 64 (they show
    /// only here).
    ///
    /// # Errors
    /// JSON that is not a list of element ids.
    pub fn element_selection_frame(
        &mut self,
        entity: Option<f64>,
        elements: &str,
    ) -> Result<Option<Vec<u8>>, JsError> {
        let elements: Vec<meshwork_protocol::editmesh::ElementId> =
            serde_json::from_str(elements).map_err(err)?;
        if elements.len() > meshwork_protocol::wire::MAX_PREVIEW_ELEMENTS {
            return Ok(None);
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "entity ids come from scene_json, exact below 2^53"
        )]
        let entity = entity.map(|e| EntityId(e as u64));
        self.presence_seq = self.presence_seq.wrapping_add(1);
        let selection = meshwork_protocol::wire::ElementSelection {
            seq: self.presence_seq,
            entity,
            elements,
        };
        to_frame(&ClientMsg::ElementSelection(selection))
            .map(Some)
            .map_err(err)
    }

    /// Joined the session.
    #[must_use]
    pub fn joined(&self) -> bool {
        matches!(self.inner.phase(), ClientPhase::Joined(_))
    }

    /// The transport dropped: call at once (`ClientConnection::reconnect`). The next
    /// [`Self::poll_transmit`] holds a fresh `Hello` for the new transport; the replica, the
    /// author and the unacknowledged entries stay, edits go on being signed and kept, and once
    /// welcomed again the replica is caught up from its position and the kept entries go out
    /// exactly once.
    pub fn reconnect(&mut self) {
        self.extra.clear();
        self.inner.reconnect();
    }

    /// Own entries not yet acknowledged or refused (edits made while disconnected included).
    #[must_use]
    pub fn unacked_count(&self) -> usize {
        self.inner.unacked().count()
    }

    /// The author id, once joined.
    #[must_use]
    pub fn author(&self) -> Option<u32> {
        self.inner.author().map(|a| a.0)
    }

    /// The server's presence tick from its `Welcome` (the default before one): how long, in
    /// milliseconds, to draw another member moving to an update ([`playout`]).
    #[must_use]
    pub fn presence_tick_ms(&self) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "at most 100 ms")]
        let ms = self.inner.presence_tick_ms() as f64;
        ms
    }

    /// The id of this author's `counter`-th entity (as a JS number: exact below 2^53).
    #[must_use]
    #[allow(clippy::cast_precision_loss, reason = "author ids stay far below 2^21")]
    pub fn entity_id(&self, counter: u32) -> Option<f64> {
        self.inner
            .author()
            .map(|a| EntityId::new(a, counter).0 as f64)
    }

    /// The replica holds a snapshot and is in step.
    #[must_use]
    pub fn synced(&self) -> bool {
        self.inner.replica().is_synced()
    }

    /// Signs and queues a command given as JSON.
    ///
    /// # Errors
    /// JSON that is not a command, or not joined yet.
    pub fn submit_json(&mut self, command: &str) -> Result<(), JsError> {
        let command: Command = serde_json::from_str(command).map_err(err)?;
        self.inner
            .submit(vec![command])
            .map(|_| ())
            .ok_or_else(|| self.not_submitted())
    }

    /// Signs and queues several commands (a JSON array) as one batch: the server orders them
    /// together. Returns the entries' sequence numbers, in order (acks and refusals name them).
    ///
    /// # Errors
    /// JSON that is not an array of commands, or not joined yet.
    pub fn submit_batch_json(&mut self, commands: &str) -> Result<Vec<f64>, JsError> {
        let commands: Vec<Command> = serde_json::from_str(commands).map_err(err)?;
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let entries = self
            .inner
            .submit(commands)
            .ok_or_else(|| self.not_submitted())?;
        #[allow(
            clippy::cast_precision_loss,
            reason = "sequence numbers count one author's entries: far below 2^53"
        )]
        let seqs = entries
            .iter()
            .filter_map(|e| e.decode_body().ok().map(|b| b.seq as f64))
            .collect();
        Ok(seqs)
    }

    /// [`Self::submit_batch_json`] for the commands of one gesture: as one undo step
    /// (`meshwork_protocol::history::one_step`: a `Step` before them when two or more change
    /// the scene), labelled `label` in the history.
    ///
    /// # Errors
    /// JSON that is not an array of commands, or not joined yet.
    pub fn submit_step_json(&mut self, commands: &str, label: &str) -> Result<Vec<f64>, JsError> {
        let commands: Vec<Command> = serde_json::from_str(commands).map_err(err)?;
        let commands = meshwork_protocol::history::one_step(commands, label);
        let json = serde_json::to_string(&commands).map_err(err)?;
        self.submit_batch_json(&json)
    }

    /// The replica's scene as JSON: `{position, name, entities: [{id, name, kind, translation,
    /// rotation (x, y, z, w), scale, color (linear RGBA), geometry}], selections: [{author,
    /// entities}], names, members}` (see [`Self::scene_meta_json`]). `geometry` changes exactly when the entity's mesh does (fetch it then with
    /// [`Self::mesh_positions`] and friends).
    ///
    /// # Errors
    /// Never in practice (plain numbers).
    #[allow(clippy::cast_precision_loss, reason = "entity ids stay far below 2^53")]
    pub fn scene_json(&self) -> Result<String, JsError> {
        let scene = self.inner.view();
        let entities: Vec<Value> = scene
            .entities
            .iter()
            .map(|(id, e)| self.entity_value(*id, e))
            .collect();
        let mut value = self.meta_value();
        value["entities"] = Value::from(entities);
        serde_json::to_string(&value).map_err(err)
    }

    /// Vertex positions (x, y, z per vertex) of entity `id`'s triangulated mesh.
    #[must_use]
    pub fn mesh_positions(&self, id: f64) -> Vec<f32> {
        self.with_triangles(id, |m| m.positions.iter().flatten().copied().collect())
            .unwrap_or_default()
    }

    /// Vertex normals, parallel to [`Self::mesh_positions`].
    #[must_use]
    pub fn mesh_normals(&self, id: f64) -> Vec<f32> {
        self.with_triangles(id, |m| m.normals.iter().flatten().copied().collect())
            .unwrap_or_default()
    }

    /// Triangle indices into [`Self::mesh_positions`].
    #[must_use]
    pub fn mesh_indices(&self, id: f64) -> Vec<u32> {
        self.with_triangles(id, |m| m.indices.clone())
            .unwrap_or_default()
    }

    /// Entity `id`'s triangles (see [`Self::cached_triangles`]).
    fn with_triangles<T>(
        &self,
        id: f64,
        read: impl FnOnce(&meshwork_protocol::mesh::RenderMesh) -> T,
    ) -> Option<T> {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "ids come from scene_json, exact below 2^53"
        )]
        let id = EntityId(id as u64);
        let e = self.inner.view().entities.get(&id)?;
        let key = self.geometry_key(id, e);
        self.cached_triangles(id, key, || Some(e.geometry.render()), read)
    }

    /// The editable mesh of entity `id` (edit mode): `{faces: [{id, corners: [vertex index]}],
    /// vertices: [{id, p: [x, y, z]}], edges: [{id, ends: [vertex index; 2]}]}`, each in id
    /// order. Ids are in the shape
    /// commands take them (`{"by": {"lamport", "author"}, "index"}`); the triangles of
    /// [`Self::edit_positions`] are each face's fan, `corners.len() − 2` per face, in this order.
    ///
    /// # Errors
    /// No such entity.
    pub fn edit_mesh_json(&self, id: f64) -> Result<String, JsError> {
        let m = self.edit_mesh(id).ok_or_else(|| err("no such entity"))?;
        let rank: std::collections::BTreeMap<_, usize> = m
            .vertices()
            .keys()
            .enumerate()
            .map(|(i, v)| (*v, i))
            .collect();
        let faces: Vec<Value> = m
            .faces()
            .iter()
            .map(|(f, corners)| {
                json!({
                    "id": f.0,
                    "corners": corners.iter().filter_map(|c| rank.get(c)).collect::<Vec<_>>(),
                })
            })
            .collect();
        let vertices: Vec<Value> = m
            .vertices()
            .iter()
            .map(|(v, p)| json!({ "id": v.0, "p": p.to_array() }))
            .collect();
        let edges: Vec<Value> = m
            .edges()
            .iter()
            .filter_map(|((a, b), k)| {
                Some(json!({ "id": k.0, "ends": [rank.get(a)?, rank.get(b)?] }))
            })
            .collect();
        serde_json::to_string(&json!({ "faces": faces, "vertices": vertices, "edges": edges }))
            .map_err(err)
    }

    /// Corner positions of entity `id`'s editable mesh, triangulated face by face in id order
    /// (see [`Self::edit_mesh_json`]).
    #[must_use]
    pub fn edit_positions(&self, id: f64) -> Vec<f32> {
        self.with_edit_triangles(id, |m| m.positions.iter().flatten().copied().collect())
            .unwrap_or_default()
    }

    /// Normals parallel to [`Self::edit_positions`].
    #[must_use]
    pub fn edit_normals(&self, id: f64) -> Vec<f32> {
        self.with_edit_triangles(id, |m| m.normals.iter().flatten().copied().collect())
            .unwrap_or_default()
    }

    /// Triangle indices into [`Self::edit_positions`].
    #[must_use]
    pub fn edit_indices(&self, id: f64) -> Vec<u32> {
        self.with_edit_triangles(id, |m| m.indices.clone())
            .unwrap_or_default()
    }

    /// The edit triangulation of entity `id` (see [`Self::cached_triangles`]).
    fn with_edit_triangles<T>(
        &self,
        id: f64,
        read: impl FnOnce(&meshwork_protocol::mesh::RenderMesh) -> T,
    ) -> Option<T> {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "ids come from scene_json, exact below 2^53"
        )]
        let entity = EntityId(id as u64);
        let key = format!("edit#{}", self.inner.revision(entity));
        self.cached_triangles(
            entity,
            key,
            || Some(self.edit_mesh(id)?.triangulate()),
            read,
        )
    }

    fn edit_mesh(&self, id: f64) -> Option<meshwork_protocol::editmesh::EditMesh> {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "ids come from scene_json, exact below 2^53"
        )]
        let id = EntityId(id as u64);
        let e = self.inner.view().entities.get(&id)?;
        Some(e.geometry.edit_mesh(e.spawned_by))
    }

    /// What a mesh command (JSON) would make of its entity, without sending it: the same
    /// operation the server runs, on a copy of the entity in the replica (a live preview of a
    /// drag, for this user or from another's preview). Keeps the triangulated result for
    /// [`Self::preview_positions`] and friends; `false` (and no preview) when the edit would be
    /// refused.
    ///
    /// # Errors
    /// JSON that is not a command.
    pub fn preview_edit(&mut self, command: &str) -> Result<bool, JsError> {
        let command: Command = serde_json::from_str(command).map_err(err)?;
        self.preview = preview_of(self.inner.view(), self.inner.author(), &command);
        Ok(self.preview.is_some())
    }

    /// Corner positions of the last preview (face by face, as [`Self::edit_positions`]).
    #[must_use]
    pub fn preview_positions(&self) -> Vec<f32> {
        self.preview
            .as_ref()
            .map(|m| m.positions.iter().flatten().copied().collect())
            .unwrap_or_default()
    }

    /// Normals of the last preview.
    #[must_use]
    pub fn preview_normals(&self) -> Vec<f32> {
        self.preview
            .as_ref()
            .map(|m| m.normals.iter().flatten().copied().collect())
            .unwrap_or_default()
    }

    /// Triangle indices of the last preview.
    #[must_use]
    pub fn preview_indices(&self) -> Vec<u32> {
        self.preview
            .as_ref()
            .map(|m| m.indices.clone())
            .unwrap_or_default()
    }

    /// Hex SHA-256 of the replica's scene (compare with the server's).
    #[must_use]
    pub fn state_hash(&self) -> String {
        hex(&self.inner.replica().scene().state_hash())
    }

    /// Entities in the replica.
    #[must_use]
    pub fn entity_count(&self) -> usize {
        self.inner.replica().scene().entities.len()
    }

    /// Render data of every entity as JSON: `[{id, world_from_local[16], color[4], positions,
    /// normals, indices}]`.
    ///
    /// # Errors
    /// Never in practice (plain numbers).
    pub fn render_json(&self) -> Result<String, JsError> {
        let items: Vec<Value> = self
            .inner
            .replica()
            .scene()
            .render()
            .into_iter()
            .map(|e| {
                serde_json::json!({
                    "id": e.id.0,
                    "world_from_local": e.world_from_local,
                    "color": e.color,
                    "positions": e.mesh.positions,
                    "normals": e.mesh.normals,
                    "indices": e.mesh.indices,
                })
            })
            .collect();
        serde_json::to_string(&items).map_err(err)
    }
}

/// The commands that take `entity` from one transform to another (JSON `{translation: [x, y,
/// z], rotation: [x, y, z, w], scale: [x, y, z]}` each), as a JSON array for
/// `submit_batch_json`: the protocol's own rule (`scene::transform_commands`), so absolute edits
/// in the editor compose exactly like every other delta.
///
/// # Errors
/// JSON that is not a transform.
#[wasm_bindgen]
pub fn transform_commands(entity: f64, from: &str, to: &str) -> Result<String, JsError> {
    let from: Transform = serde_json::from_str(from).map_err(err)?;
    let to: Transform = serde_json::from_str(to).map_err(err)?;
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "entity ids come from scene_json, exact below 2^53"
    )]
    let entity = EntityId(entity as u64);
    serde_json::to_string(&meshwork_protocol::scene::transform_commands(
        entity, &from, &to,
    ))
    .map_err(err)
}

/// Replays a log in a fresh replica and returns its state hash (hex, as
/// [`Connection::state_hash`]). `frames`: server messages as back-to-back frames, exactly as on
/// the reliable lane (a snapshot, then entries, deltas, state hashes), e.g. a recorded session
/// or a log written by a test: the same log gives the same bytes here as natively.
///
/// # Errors
/// An undecodable or truncated frame, a replica that loses step (it would ask for a resync),
/// or no complete snapshot.
#[wasm_bindgen]
pub fn replay_log(frames: &[u8]) -> Result<String, JsError> {
    let mut reader = FrameReader::new();
    reader.push(frames).map_err(err)?;
    let mut replica = Replica::new();
    while let Some(msg) = reader.next_msg::<ServerMsg>().map_err(err)? {
        if replica.on_message(&msg).needs_resync() {
            return Err(err("the replica lost step with the log (it would resync)"));
        }
    }
    if reader.buffered_bytes() > 0 {
        return Err(err("the log ends inside a frame"));
    }
    if !replica.is_synced() {
        return Err(err("the log holds no complete snapshot"));
    }
    Ok(hex(&replica.scene().state_hash()))
}

/// For the verification benchmark (`client-web/tests/verify-bench.mjs`): a log as
/// [`replay_log`] reads it — a roster of `authors` members, the empty scene's snapshot, then
/// `entries` entries (one spawn per author, then moves), each signed by its author, in frames of
/// 64 as the server fans them out. Deterministic: the keys come from fixed seeds.
///
/// # Errors
/// Never in practice (encoding into memory).
#[wasm_bindgen]
pub fn bench_log_frames(entries: u32, authors: u32) -> Result<Vec<u8>, JsError> {
    use meshwork_protocol::command::Primitive;
    use meshwork_protocol::wire::{Entries, Member, Roster};
    use meshwork_protocol::{AuthorId, EntryBody, Role, SessionId, SignedEntry};
    let session = SessionId([0xbe; 16]);
    let authors = authors.clamp(1, 255);
    let signers: Vec<Ed25519Signer> = (1..=authors)
        .map(|i| Ed25519Signer::from_seed([u8::try_from(i).unwrap_or(u8::MAX); 32]))
        .collect();
    let roster = Roster {
        session,
        server_key: Ed25519Signer::from_seed([0; 32]).public_key(),
        replace: true,
        members: signers
            .iter()
            .zip(1..)
            .map(|(s, a)| Member {
                author: AuthorId(a),
                public_key: s.public_key(),
                role: Role::Editor,
            })
            .collect(),
    };
    let (manifest, chunks) =
        meshwork_protocol::replica::snapshot(&meshwork_protocol::scene::Scene::new());
    let mut out = to_frame(&ServerMsg::Roster(roster)).map_err(err)?;
    out.extend(to_frame(&ServerMsg::Snapshot(manifest)).map_err(err)?);
    for c in chunks {
        out.extend(to_frame(&ServerMsg::SnapshotChunk(c)).map_err(err)?);
    }
    let mut batch = Vec::new();
    for i in 0..entries {
        let index = i.checked_rem(authors).unwrap_or(0);
        let author = AuthorId(index.saturating_add(1));
        let signer = signers.get(index as usize).ok_or_else(|| err("author"))?;
        let seq = u64::from(i.checked_div(authors).unwrap_or(0)).saturating_add(1);
        let entity = EntityId::new(author, 1);
        let command = if seq == 1 {
            Command::Spawn {
                entity,
                primitive: Primitive::Cube,
                transform: Transform::IDENTITY,
            }
        } else {
            Command::Translate {
                entity,
                delta: glam::Vec3::new(0.01, 0.0, 0.0),
            }
        };
        let lamport = u64::from(i).saturating_add(1);
        let body = EntryBody::new(
            session,
            author,
            signer.public_key().key_id(),
            seq,
            lamport,
            lamport.saturating_sub(1),
            command,
        );
        batch.push(SignedEntry::sign(&body, signer).map_err(err)?);
        if batch.len() == 64 {
            let entries = core::mem::take(&mut batch);
            out.extend(to_frame(&ServerMsg::Entries(Entries { entries })).map_err(err)?);
        }
    }
    if !batch.is_empty() {
        out.extend(to_frame(&ServerMsg::Entries(Entries { entries: batch })).map_err(err)?);
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A display name as typed, made one `SetDisplayName` accepts (the protocol's rule, the one the
/// headset uses too): control characters dropped, trimmed, at most 64 bytes.
#[wasm_bindgen]
#[must_use]
pub fn clean_display_name(typed: &str) -> String {
    meshwork_protocol::command::clean_display_name(typed)
}

/// Where another member's drawn part is `elapsed_ms` after an update that found it drawn at
/// `from` and put it at `to` (each `[x, y, z, qx, qy, qz, qw]`), over the server's presence
/// tick `tick_ms` ([`Connection::presence_tick_ms`]): the protocol's rule
/// (`meshwork_protocol::presence::playout`), the same the headset draws by. An eighth number
/// says whether it has arrived (1) or is still moving (0): `presence::playout_over`.
#[wasm_bindgen]
#[must_use]
pub fn playout(from: &[f32], to: &[f32], elapsed_ms: f64, tick_ms: f64) -> Vec<f32> {
    let pose = |v: &[f32]| {
        let at = |i: usize, or: f32| v.get(i).copied().unwrap_or(or);
        (
            glam::Vec3::new(at(0, 0.0), at(1, 0.0), at(2, 0.0)),
            glam::Quat::from_xyzw(at(3, 0.0), at(4, 0.0), at(5, 0.0), at(6, 1.0)),
        )
    };
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a clamped, non-negative count of milliseconds"
    )]
    let (elapsed, tick) = (
        elapsed_ms.clamp(0.0, 1e9) as u64,
        tick_ms.clamp(0.0, 1e9) as u64,
    );
    let (p, q) = meshwork_protocol::presence::playout(pose(from), pose(to), elapsed, tick);
    let over = meshwork_protocol::presence::playout_over(elapsed, tick);
    vec![
        p.x,
        p.y,
        p.z,
        q.x,
        q.y,
        q.z,
        q.w,
        if over { 1.0 } else { 0.0 },
    ]
}

/// The session id (hex) a join ticket names, or `undefined` for text that is not a ticket: the
/// page needs it to choose the WebRTC / WebSocket endpoint before joining.
#[wasm_bindgen]
#[must_use]
pub fn ticket_session(ticket: &str) -> Option<String> {
    JoinTicket::from_text(ticket.trim())
        .ok()
        .and_then(|t| t.invite.claimed_session())
        .map(|s| s.to_string())
}

/// The role a join ticket grants (`viewer`, `editor`, `admin`), unverified (the server checks).
#[wasm_bindgen]
#[must_use]
pub fn ticket_role(ticket: &str) -> Option<String> {
    let t = JoinTicket::from_text(ticket.trim()).ok()?;
    let body = t.invite.claimed_body()?;
    serde_json::to_value(body.role)
        .ok()?
        .as_str()
        .map(str::to_owned)
}

/// `command` applied to a copy of its entity ([`meshwork_protocol::scene::Scene::preview`]),
/// triangulated face by face; `None` when the entity is missing or the edit would be refused.
fn preview_of(
    scene: &meshwork_protocol::scene::Scene,
    author: Option<meshwork_protocol::AuthorId>,
    command: &Command,
) -> Option<meshwork_protocol::mesh::RenderMesh> {
    let e = scene.preview(author.unwrap_or_default(), command)?;
    Some(e.geometry.edit_mesh(e.spawned_by).triangulate())
}

#[allow(clippy::cast_precision_loss, reason = "entity ids stay far below 2^53")]
fn selections(scene: &meshwork_protocol::scene::Scene) -> Vec<Value> {
    scene
        .authors
        .iter()
        .filter_map(|(a, s)| {
            let sel = s.selection.as_ref()?;
            Some(json!({
                "author": a.0,
                "entities": sel.value.iter().map(|e| e.0 as f64).collect::<Vec<_>>(),
            }))
        })
        .collect()
}

/// Three numbers from JavaScript (missing ones are `or`).
fn vec3(v: Option<&[f32]>, or: f32) -> glam::Vec3 {
    let at = |i: usize| v.and_then(|v| v.get(i).copied()).unwrap_or(or);
    glam::Vec3::new(at(0), at(1), at(2))
}

/// A quaternion (x, y, z, w) from JavaScript; the identity when missing.
fn quat(q: Option<&[f32]>) -> glam::Quat {
    let at = |i: usize, or: f32| q.and_then(|q| q.get(i).copied()).unwrap_or(or);
    glam::Quat::from_xyzw(at(0, 0.0), at(1, 0.0), at(2, 0.0), at(3, 1.0))
}

fn pose_json(p: Pose) -> Value {
    json!({
        "position": p.position_m().to_array(),
        "rotation": p.rotation_q().to_array(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_from_json() {
        let c: Command =
            serde_json::from_str(r#"{"Translate":{"entity":4294967297,"delta":[0.5,0,0]}}"#)
                .unwrap();
        assert_eq!(
            c,
            Command::Translate {
                entity: EntityId(4_294_967_297),
                delta: glam::Vec3::new(0.5, 0.0, 0.0)
            }
        );
    }

    #[test]
    fn a_preview_is_the_servers_operation_on_a_copy_and_a_refused_one_is_none() {
        use meshwork_protocol::scene::Scene;
        use meshwork_protocol::{AuthorId, CommandId, Primitive, Transform};
        let a = AuthorId(1);
        let e = EntityId::new(a, 1);
        let mut scene = Scene::new();
        scene.apply(
            CommandId {
                lamport: 1,
                author: a,
            },
            a,
            &Command::Spawn {
                entity: e,
                primitive: Primitive::Cube,
                transform: Transform::IDENTITY,
            },
        );
        let before = scene.encode();
        let m = scene.entities[&e]
            .geometry
            .edit_mesh(scene.entities[&e].spawned_by);
        let top = *m.faces().keys().next().unwrap();
        // The face id as the editor sends it (the shape `edit_mesh_json` gives).
        let face = serde_json::to_value(top.0).unwrap();
        let json = json!({"ExtrudeFaces": {"entity": e.0, "faces": [face],
            "direction": {"Normal": {"distance_m": 0.5}}, "snap_m": null}});
        let command: Command = serde_json::from_value(json).unwrap();
        let preview = preview_of(&scene, Some(a), &command).unwrap();
        assert_eq!(
            preview.indices.len() / 3,
            20,
            "a cube with one face extruded: 10 quads"
        );
        assert_eq!(scene.encode(), before, "the replica is untouched");
        let bad = Command::DeleteElements {
            entity: e,
            vertices: vec![],
            edges: vec![],
            faces: vec![meshwork_protocol::editmesh::FaceKey(
                meshwork_protocol::editmesh::ElementId {
                    by: CommandId {
                        lamport: 9,
                        author: a,
                    },
                    index: 0,
                },
            )],
        };
        assert!(preview_of(&scene, Some(a), &bad).is_none());
    }

    /// A joined connection on an empty scene, and a way to play the server's part.
    fn joined() -> Connection {
        use meshwork_protocol::registry::Role;
        use meshwork_protocol::wire::{Challenge, Invite, InviteBody, Welcome};
        use meshwork_protocol::{AuthorId, Domain, SessionId};
        let session = SessionId([3; 16]);
        let server = Ed25519Signer::from_seed([9; 32]);
        let invite = Invite::mint(
            &InviteBody {
                domain: Domain::Invite,
                session,
                role: Role::Editor,
                expires_at_ms: u64::MAX,
                invite_id: [1; 16],
            },
            &server,
        )
        .unwrap();
        let ticket = JoinTicket {
            quic_addr: "127.0.0.1:1".into(),
            cert_sha256: [0; 32],
            invite,
        };
        let mut c = Connection::new(&[1; 32], &ticket.to_text()).unwrap();
        let mut events = Vec::new();
        c.handle(
            &ServerMsg::Challenge(Challenge {
                nonce: [0; 32],
                server_build_id: "test".into(),
            }),
            &mut events,
        );
        c.handle(
            &ServerMsg::Welcome(Welcome {
                session,
                author: AuthorId(1),
                role: Role::Editor,
                next_seq: 1,
                log_position: 0,
                presence_tick_ms: 22,
            }),
            &mut events,
        );
        c.handle(
            &ServerMsg::Roster(meshwork_protocol::wire::Roster {
                session,
                server_key: server.public_key(),
                replace: true,
                members: vec![meshwork_protocol::wire::Member {
                    author: AuthorId(1),
                    public_key: Ed25519Signer::from_seed([1; 32]).public_key(),
                    role: Role::Editor,
                }],
            }),
            &mut events,
        );
        let (manifest, chunks) =
            meshwork_protocol::replica::snapshot(&meshwork_protocol::scene::Scene::new());
        c.handle(&ServerMsg::Snapshot(manifest), &mut events);
        for chunk in chunks {
            c.handle(&ServerMsg::SnapshotChunk(chunk), &mut events);
        }
        assert!(c.synced());
        c
    }

    /// The entries `c` submitted since the last call, as the server would echo them.
    fn sent(c: &mut Connection) -> Vec<meshwork_protocol::SignedEntry> {
        let mut out = Vec::new();
        while let Some(m) = c.inner.poll_transmit() {
            if let ClientMsg::Submit(s) = m {
                out.extend(s.entries);
            }
        }
        out
    }

    #[test]
    fn a_held_drag_settles_by_its_own_entries_not_by_an_earlier_ack() {
        use meshwork_protocol::wire::{Ack, CommandRefused, Entries, RefusalCode};
        use meshwork_protocol::{AuthorId, CommandId};
        let mut c = joined();
        let mut events = Vec::new();
        let id = c.inner.next_entity_id(0).unwrap();
        #[allow(clippy::cast_precision_loss, reason = "a small id")]
        let idf = id.0 as f64;
        // A spawn and its selection, then (before any answer) a drag of the new entity.
        let spawn = json!([{"Spawn": {"entity": id.0, "primitive": "Cube",
            "transform": {"translation": [0, 0, 0], "rotation": [0, 0, 0, 1], "scale": [1, 1, 1]}}},
            {"Select": {"entities": [id.0]}}]);
        assert_eq!(
            c.submit_batch_json(&spawn.to_string()).unwrap(),
            vec![1.0, 2.0]
        );
        let drag = json!([{"Translate": {"entity": id.0, "delta": [2, 0, 0]}}]);
        let seqs = c.submit_batch_json(&drag.to_string()).unwrap();
        assert_eq!(seqs, vec![3.0]);
        let to = r#"{"translation":[2,0,0],"rotation":[0,0,0,1],"scale":[1,1,1]}"#;
        c.hold(idf, to, &seqs).unwrap();
        let held = |c: &Connection| -> Vec<f64> {
            serde_json::from_str::<Vec<Value>>(&c.held_json())
                .unwrap()
                .iter()
                .map(|h| h["entity"].as_f64().unwrap())
                .collect()
        };
        let entries = sent(&mut c);
        let ack = |seq: u64, lamport: u64| {
            ServerMsg::Ack(Ack {
                seq,
                id: CommandId {
                    lamport,
                    author: AuthorId(1),
                },
            })
        };
        // The spawn and the selection are acknowledged and applied: the drag still shows.
        c.handle(&ack(1, 1), &mut events);
        c.handle(&ack(2, 2), &mut events);
        c.handle(
            &ServerMsg::Entries(Entries {
                entries: entries[..2].to_vec(),
            }),
            &mut events,
        );
        assert_eq!(held(&c), vec![idf], "settled by another submission's ack");
        // Its own ack and entry: now the replica shows it.
        c.handle(&ack(3, 3), &mut events);
        c.handle(
            &ServerMsg::Entries(Entries {
                entries: entries[2..].to_vec(),
            }),
            &mut events,
        );
        assert!(held(&c).is_empty());
        // A refused drag snaps back at once.
        let seqs = c.submit_batch_json(&drag.to_string()).unwrap();
        c.hold(idf, to, &seqs).unwrap();
        assert_eq!(held(&c), vec![idf]);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a small seq"
        )]
        let seq = seqs[0] as u64;
        c.handle(
            &ServerMsg::CommandRefused(CommandRefused {
                seq,
                code: RefusalCode::Conflict,
                message: "no".into(),
            }),
            &mut events,
        );
        assert!(held(&c).is_empty());
    }
}
