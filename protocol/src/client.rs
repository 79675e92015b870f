//! The client side of a connection, sans-IO: the join handshake, signing and submitting
//! commands, and the replica. Feed it server messages ([`ClientConnection::handle`]), take the
//! messages to send ([`ClientConnection::poll_transmit`]). Native clients, the browser (through
//! wasm) and the simulated network all drive this same machine.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;

use crate::PROTOCOL_VERSION;
use crate::command::Command;
use crate::ids::{AuthorId, EntityId};
use crate::presence::LivePreviews;
use crate::replica::{Replica, ReplicaEvent};
use crate::sign::{Domain, EntryBody, SignedEntry, Signer};
use crate::wire::Close;
use crate::wire::{
    ClientMsg, Hello, Invite, JoinProof, JoinProofBody, JoinRefused, Resync, ServerMsg, Submit,
    Welcome,
};

/// Most own entries waiting for their acknowledgement (edits made offline included) before
/// [`ClientConnection::submit`] refuses more, by default.
pub const DEFAULT_MAX_UNACKED: usize = 10_000;

/// What a client keeps across a restart of the application (the browser keeps it in IndexedDB
/// while edits are unacknowledged, so a reload while offline loses none): who it is in the
/// session, its counters, its unacknowledged entries and its replica's scene.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SavedClient {
    /// The last welcome.
    pub welcome: Welcome,
    /// The next sequence number to sign with.
    pub next_seq: u64,
    /// The Lamport clock for stamping own entries.
    pub lamport: u64,
    /// What own entries claim to have seen.
    pub seen: u64,
    /// The largest entity counter handed out.
    pub last_counter: u32,
    /// Unacknowledged entries, in sequence order.
    pub unacked: Vec<SignedEntry>,
    /// The replica's scene (`Scene::encode`) when it was in step, so a restored client resumes
    /// from its position; `None`: it joins afresh (a snapshot).
    pub scene: Option<serde_bytes::ByteBuf>,
}

/// What a saved client starts with since protocol version 2 (then its postcard encoding).
/// Saves of version 1 have no tag: they start with the session id.
const SAVED_TAG: &[u8; 4] = b"MWS2";

/// [`SavedClient`] as protocol version 1 wrote it: its `Welcome` had no presence tick. Read
/// so that edits a browser kept offline across a reload survive the upgrade (the server still
/// accepts their version-1 entries).
#[derive(serde::Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct SavedClientV1 {
    welcome: WelcomeV1,
    next_seq: u64,
    lamport: u64,
    seen: u64,
    last_counter: u32,
    unacked: Vec<SignedEntry>,
    scene: Option<serde_bytes::ByteBuf>,
}

#[derive(serde::Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct WelcomeV1 {
    session: crate::ids::SessionId,
    author: AuthorId,
    role: crate::registry::Role,
    next_seq: u64,
    log_position: u64,
}

impl SavedClient {
    /// Reads a save of this version (tagged) or of version 1 (untagged); the whole of `bytes`
    /// must be one.
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        fn exact<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
            match postcard::take_from_bytes::<T>(bytes) {
                Ok((v, [])) => Ok(v),
                Ok(_) => Err("trailing bytes".into()),
                Err(e) => Err(alloc::format!("{e}")),
            }
        }
        if let Some(rest) = bytes.strip_prefix(SAVED_TAG.as_slice()) {
            return exact(rest);
        }
        let v1: SavedClientV1 = exact(bytes)?;
        Ok(Self {
            welcome: Welcome {
                session: v1.welcome.session,
                author: v1.welcome.author,
                role: v1.welcome.role,
                next_seq: v1.welcome.next_seq,
                log_position: v1.welcome.log_position,
                presence_tick_ms: u32::try_from(crate::presence::PLAYOUT_MS).unwrap_or(u32::MAX),
            },
            next_seq: v1.next_seq,
            lamport: v1.lamport,
            seen: v1.seen,
            last_counter: v1.last_counter,
            unacked: v1.unacked,
            scene: v1.scene,
        })
    }
}

/// Most entries in one `Submit` when a reconnect submits the unacknowledged ones again.
const RESUBMIT_CHUNK: usize = 256;

/// How long entries the server refused for the rate wait before they go again (the server's
/// bucket refills at its rate per second).
pub const RATE_RETRY_MS: u64 = 1000;

/// Own entries going out one `Submit` at a time, the next only when every entry of the last is
/// judged: after a reconnect (the unacknowledged entries, however many) and after a refusal for
/// the rate. The server judges one `Submit` at one instant, so the entries it refuses for the
/// rate are the last of it, none later is accepted before them, and they can go again as they
/// were signed, in order.
#[derive(Debug, Default)]
struct CatchUp {
    /// Sent and not judged yet.
    in_flight: BTreeSet<u64>,
    /// Nothing goes before this time (the application's clock, [`ClientConnection::tick`]).
    not_before_ms: u64,
}

/// Where the handshake stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientPhase {
    /// `Hello` sent, waiting for the challenge.
    Hello,
    /// Proof sent, waiting for the welcome.
    Proving,
    /// Joined.
    Joined(Welcome),
    /// Refused or closed.
    Done,
}

/// What a server message meant for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// Nothing to report.
    None,
    /// Joined the session.
    Joined,
    /// The join was refused.
    Refused(JoinRefused),
    /// The replica loaded a snapshot.
    Synced,
    /// The replica diverged or refused an update (why); a resync was requested.
    Resyncing(crate::replica::ResyncReason),
    /// The server's roster names a server key that did not sign this client's invite, or
    /// another session: nothing it seals can be trusted, so the client closed.
    Untrusted,
    /// The server closed the connection.
    Closed,
}

/// What changed in the replica since the application last asked
/// ([`ClientConnection::take_changes`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Everything may have changed (a snapshot, or an update that could not be read): read the
    /// whole scene.
    pub all: bool,
    /// Else these entities changed (or went).
    pub entities: Vec<EntityId>,
}

/// Per-entity change tracking for renderers: which entities changed, and a revision per mesh
/// that moves on exactly when an applied entry or delta may have changed it (so a client keys
/// its triangle caches by it instead of triangulating to find out).
#[derive(Debug, Default)]
struct Tracker {
    revisions: BTreeMap<EntityId, u64>,
    next: u64,
    changed: BTreeSet<EntityId>,
    all: bool,
}

impl Tracker {
    fn revision(&self, id: EntityId) -> u64 {
        self.revisions.get(&id).copied().unwrap_or(0)
    }

    fn note(&mut self, msg: &ServerMsg, scene: &crate::scene::Scene) {
        let mut touched: Vec<(EntityId, bool)> = Vec::new();
        // This message changed everything (not an earlier one the application has not taken yet:
        // that must not move every mesh's revision again).
        let mut all = false;
        match msg {
            ServerMsg::Entries(e) => {
                for entry in &e.entries {
                    let Ok(body) = entry.decode_body() else {
                        all = true;
                        continue;
                    };
                    if let crate::scene::Touched::Entity(id) =
                        crate::scene::Scene::touched(body.author, &body.command)
                    {
                        touched.push((id, changes_geometry(&body.command)));
                    }
                }
            }
            ServerMsg::SealedDelta(d) => match d.decode() {
                Some(delta) => touched.extend(delta.entities.iter().map(|(id, _)| (*id, true))),
                None => all = true,
            },
            ServerMsg::Held(h) => {
                for entry in &h.entries {
                    match entry.decode_body() {
                        Ok(body) => {
                            if let crate::scene::Touched::Entity(id) =
                                crate::scene::Scene::touched(body.author, &body.command)
                            {
                                touched.push((id, changes_geometry(&body.command)));
                            }
                        }
                        Err(_) => all = true,
                    }
                }
                match h.delta.as_ref().map(crate::wire::SealedDelta::decode) {
                    Some(Some(delta)) => {
                        touched.extend(delta.entities.iter().map(|(id, _)| (*id, true)));
                    }
                    Some(None) => all = true,
                    None => {}
                }
            }
            _ => all = true,
        }
        self.all |= all;
        if all {
            touched.extend(scene.entities.keys().map(|id| (*id, true)));
        }
        for (id, geometry) in touched {
            self.changed.insert(id);
            if geometry {
                self.next = self.next.saturating_add(1);
                self.revisions.insert(id, self.next);
            }
        }
    }
}

/// Whether an entry of `command` may change its entity's mesh.
const fn changes_geometry(command: &Command) -> bool {
    !matches!(
        command,
        Command::Select { .. }
            | Command::Translate { .. }
            | Command::Rotate { .. }
            | Command::Scale { .. }
            | Command::SetName { .. }
            | Command::SetColor { .. }
            | Command::SetMaterial { .. }
            | Command::SetTransform { .. }
            | Command::ToolActivate { .. }
            | Command::ToolDeactivate { .. }
            | Command::SetSessionName { .. }
            | Command::Step { .. }
    )
}

/// Local state tied to submitted entries (a drag's preview until its commands land), settled
/// by the server's acks and refusals of those entries' sequence numbers — never by position: an
/// ack for another submission (a selection sent meanwhile) must not settle it.
#[derive(Clone, Debug)]
pub struct Pending<T> {
    items: Vec<(BTreeSet<u64>, T)>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Self { items: Vec::new() }
    }
}

impl<T> Pending<T> {
    /// Nothing pending.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// `item` waits for the entries `seqs` (as [`ClientConnection::submit`] signed them).
    pub fn submitted(&mut self, seqs: impl IntoIterator<Item = u64>, item: T) {
        self.items.push((seqs.into_iter().collect(), item));
    }

    /// The server acknowledged entry `seq` (durable).
    pub fn acked(&mut self, seq: u64) {
        for (seqs, _) in &mut self.items {
            seqs.remove(&seq);
        }
    }

    /// The server refused entry `seq`: every item waiting for it (one submission may hold
    /// several, e.g. each object of a multi-selection drag), no longer pending.
    pub fn refused(&mut self, seq: u64) -> Vec<T> {
        let (hit, rest): (Vec<_>, Vec<_>) = core::mem::take(&mut self.items)
            .into_iter()
            .partition(|(seqs, _)| seqs.contains(&seq));
        self.items = rest;
        hit.into_iter().map(|(_, t)| t).collect()
    }

    /// Items whose entries are all acknowledged, no longer pending (take them once the replica
    /// has applied what was acknowledged).
    pub fn take_settled(&mut self) -> Vec<T> {
        let (done, rest): (Vec<_>, Vec<_>) = core::mem::take(&mut self.items)
            .into_iter()
            .partition(|(seqs, _)| seqs.is_empty());
        self.items = rest;
        done.into_iter().map(|(_, t)| t).collect()
    }

    /// The items still pending, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter().map(|(_, t)| t)
    }
}

/// The sequence numbers of signed entries, in order.
#[must_use]
pub fn seqs(entries: &[SignedEntry]) -> Vec<u64> {
    entries
        .iter()
        .filter_map(|e| e.decode_body().ok().map(|b| b.seq))
        .collect()
}

/// A client connection's state.
#[derive(Debug)]
pub struct ClientConnection<S> {
    signer: S,
    invite: Invite,
    phase: ClientPhase,
    next_seq: u64,
    /// Lamport clock for stamping own entries.
    lamport: u64,
    /// Largest Lamport time received from the server: what own entries claim to have seen
    /// (never an own entry the server may not have yet).
    seen: u64,
    replica: Replica,
    outbox: VecDeque<ClientMsg>,
    build_id: String,
    tracker: Tracker,
    /// The largest entity counter this client handed out.
    last_counter: u32,
    /// Others' drags in progress.
    live: LivePreviews,
    /// Reads the server's packs of unreliable-lane messages.
    unpacker: crate::packed::Unpacker,
    /// The pack dictionaries offered after each `Welcome` (none: no `Codecs` is sent, and the
    /// server relays every unreliable-lane message on its own).
    codecs: Vec<u32>,
    /// The region of the world this client wants the presence lane of (sent again after each
    /// `Welcome`).
    interest: crate::interest::Asked,
    /// The region of the scene this replica holds (`None`: all of it); sent before every
    /// join proof, so the first snapshot is already the held part.
    hold: crate::interest::Asked,
    /// The region this connection last told the server it holds (`None`: all of it, what a
    /// new connection starts with): a change made while the join was being proved goes after
    /// the `Welcome`.
    hold_sent: Option<crate::interest::Region>,
    /// The application's clock ([`ClientConnection::tick`]), in milliseconds.
    now_ms: u64,
    /// The last welcome: who this client is in the session, kept across reconnects so that
    /// edits made while disconnected are signed as this author.
    last_welcome: Option<Welcome>,
    /// Own entries submitted and neither acknowledged nor refused yet, by sequence number:
    /// what a reconnect submits again (the same bytes and signatures).
    unacked: BTreeMap<u64, SignedEntry>,
    /// Most unacknowledged entries kept ([`ClientConnection::set_max_unacked`]).
    max_unacked: usize,
    /// Catching up (see [`CatchUp`]); `None`: entries go as they are submitted.
    catch_up: Option<CatchUp>,
    /// Sequence numbers of unacknowledged entries made while disconnected (or kept across a
    /// restart): while any is unjudged, [`ClientConnection::view`] shows them applied.
    offline: BTreeSet<u64>,
    /// The replica's scene with every unacknowledged own entry applied, while `offline` is not
    /// empty.
    speculative: Option<crate::scene::Scene>,
    /// Entities the speculative scene differs in (what to redraw when it changes or goes).
    speculated: BTreeSet<EntityId>,
    /// The speculative scene is to be rebuilt (at the next [`ClientConnection::take_changes`]:
    /// once per frame, not once per acknowledgement).
    stale_view: bool,
}

impl<S: Signer> ClientConnection<S> {
    /// Starts a connection that redeems `invite`, signing as `signer`; the `Hello` is queued.
    pub fn new(signer: S, invite: Invite, build_id: &str) -> Self {
        Self::with_protocol_version(signer, invite, build_id, PROTOCOL_VERSION)
    }

    /// As [`ClientConnection::new`], announcing `protocol_version` in the `Hello` (to exercise
    /// the server's version refusal; a real client speaks [`PROTOCOL_VERSION`]).
    pub fn with_protocol_version(
        signer: S,
        invite: Invite,
        build_id: &str,
        protocol_version: u16,
    ) -> Self {
        let mut c = Self {
            signer,
            invite,
            phase: ClientPhase::Hello,
            next_seq: 1,
            lamport: 0,
            seen: 0,
            replica: Replica::new(),
            outbox: VecDeque::new(),
            build_id: build_id.into(),
            tracker: Tracker::default(),
            last_counter: 0,
            live: LivePreviews::new(),
            unpacker: crate::packed::Unpacker::new(),
            codecs: crate::packed::READABLE.to_vec(),
            interest: crate::interest::Asked::default(),
            hold: crate::interest::Asked::default(),
            hold_sent: None,
            now_ms: 0,
            last_welcome: None,
            unacked: BTreeMap::new(),
            max_unacked: DEFAULT_MAX_UNACKED,
            catch_up: None,
            offline: BTreeSet::new(),
            speculative: None,
            speculated: BTreeSet::new(),
            stale_view: false,
        };
        c.outbox.push_back(ClientMsg::Hello(Hello {
            protocol_version,
            build_id: c.build_id.clone(),
            public_key: c.signer.public_key(),
            invite: c.invite.clone(),
        }));
        c
    }

    /// The signer.
    pub const fn signer(&self) -> &S {
        &self.signer
    }

    /// The server's welcome, once joined.
    #[must_use]
    pub const fn welcome(&self) -> Option<&Welcome> {
        match &self.phase {
            ClientPhase::Joined(w) => Some(w),
            _ => None,
        }
    }

    /// The handshake phase.
    #[must_use]
    pub const fn phase(&self) -> &ClientPhase {
        &self.phase
    }

    /// The author id, once joined (kept while reconnecting: edits made meanwhile are this
    /// author's).
    #[must_use]
    pub fn author(&self) -> Option<AuthorId> {
        self.last_welcome.as_ref().map(|w| w.author)
    }

    /// The server's presence tick from its latest `Welcome` (kept while reconnecting), at most
    /// [`crate::presence::MAX_TICK_MS`] (a server's larger claim would freeze others' markers
    /// between updates), else [`crate::presence::PLAYOUT_MS`]: how long to draw another member
    /// moving to an update.
    #[must_use]
    pub fn presence_tick_ms(&self) -> u64 {
        self.last_welcome
            .as_ref()
            .map_or(crate::presence::PLAYOUT_MS, |w| {
                u64::from(w.presence_tick_ms).min(crate::presence::MAX_TICK_MS)
            })
    }

    /// Whether the connection is joined now (not refused, closed or reconnecting).
    #[must_use]
    pub const fn is_joined(&self) -> bool {
        matches!(self.phase, ClientPhase::Joined(_))
    }

    /// The transport dropped: call at once. Queues a fresh `Hello` for the next transport
    /// (everything queued for the old one is dropped). The replica, the author and the
    /// unacknowledged entries stay: the join answers the challenge with a `Resume` from the
    /// replica's position when it is in step, and once welcomed submits every unacknowledged
    /// entry again, exactly once. Edits made meanwhile are signed and queued the same way
    /// ([`ClientConnection::submit`]).
    pub fn reconnect(&mut self) {
        self.outbox.clear();
        self.catch_up = None;
        // What was sent and not yet acknowledged is pending offline now: it stays in view
        // (an add made just before the drop does not vanish until the reconnect).
        self.offline.extend(self.unacked.keys().copied());
        self.stale_view |= !self.offline.is_empty();
        self.phase = ClientPhase::Hello;
        self.outbox.push_back(ClientMsg::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            build_id: self.build_id.clone(),
            public_key: self.signer.public_key(),
            invite: self.invite.clone(),
        }));
    }

    /// What to keep across a restart of the application (a tag, then [`SavedClient`] in
    /// postcard), once joined.
    #[must_use]
    pub fn save(&self) -> Option<Vec<u8>> {
        let saved = SavedClient {
            welcome: self.last_welcome.clone()?,
            next_seq: self.next_seq,
            lamport: self.lamport,
            seen: self.seen,
            last_counter: self.last_counter,
            unacked: self.unacked.values().cloned().collect(),
            scene: self
                .replica
                .is_synced()
                .then(|| serde_bytes::ByteBuf::from(self.replica.scene().encode())),
        };
        let mut out = SAVED_TAG.to_vec();
        out.extend(postcard::to_allocvec(&saved).ok()?);
        Some(out)
    }

    /// A connection that goes on from `saved` ([`ClientConnection::save`]): the `Hello` is
    /// queued, the challenge is answered with a `Resume` from the saved replica's position, and
    /// the saved unacknowledged entries go out once welcomed.
    ///
    /// # Errors
    /// Bytes that are not a saved client, one of another session than `invite`'s, or a scene
    /// that does not decode.
    pub fn restore(
        signer: S,
        invite: Invite,
        build_id: &str,
        saved: &[u8],
    ) -> Result<Self, String> {
        let saved = SavedClient::decode(saved)
            .map_err(|e| alloc::format!("not a saved connection: {e}"))?;
        if invite.claimed_session() != Some(saved.welcome.session) {
            return Err("the saved connection is for another session".into());
        }
        let mut c = Self::new(signer, invite, build_id);
        if let Some(scene) = &saved.scene {
            c.replica = Replica::restored(crate::scene::Scene::decode(scene)?);
            c.tracker.all = true;
        }
        c.next_seq = saved.next_seq;
        c.lamport = saved.lamport;
        c.seen = saved.seen;
        c.last_counter = saved.last_counter;
        for e in saved.unacked {
            if let Ok(b) = e.decode_body() {
                c.offline.insert(b.seq);
                c.unacked.insert(b.seq, e);
            }
        }
        c.last_welcome = Some(saved.welcome);
        c.speculate();
        Ok(c)
    }

    /// This member's role as it now stands: the roster's (an admin may have changed it since
    /// the welcome, [`crate::Command::SetRole`]), else the welcome's. `None` before a join.
    #[must_use]
    pub fn role(&self) -> Option<crate::registry::Role> {
        let w = self.last_welcome.as_ref()?;
        Some(
            self.replica
                .members()
                .find(|m| m.author == w.author)
                .map_or(w.role, |m| m.role),
        )
    }

    /// The last welcome (kept while reconnecting).
    #[must_use]
    pub const fn joined_as(&self) -> Option<&Welcome> {
        self.last_welcome.as_ref()
    }

    /// Bounds the unacknowledged entries kept (edits made offline included; default
    /// [`DEFAULT_MAX_UNACKED`]).
    pub fn set_max_unacked(&mut self, max: usize) {
        self.max_unacked = max;
    }

    /// Own entries neither acknowledged nor refused yet, in sequence order (shown as pending;
    /// what a reconnect submits again).
    pub fn unacked(&self) -> impl Iterator<Item = &SignedEntry> {
        self.unacked.values()
    }

    /// The replica.
    #[must_use]
    pub const fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The scene to show (as of the last [`ClientConnection::refresh_view`] or
    /// [`ClientConnection::take_changes`]): the replica's,
    /// with own edits made while disconnected applied until
    /// the server judges them (with every later own entry, in order), as a user expects to see
    /// what they did offline. A refused one goes from the view when its refusal arrives. The
    /// replica (and its state hash) holds only what the server ordered.
    #[must_use]
    pub fn view(&self) -> &crate::scene::Scene {
        self.speculative
            .as_ref()
            .unwrap_or_else(|| self.replica.scene())
    }

    /// Brings the view ([`ClientConnection::view`]) up to date, for an application that reads it
    /// without taking changes ([`ClientConnection::take_changes`] does this first).
    pub fn refresh_view(&mut self) {
        if core::mem::take(&mut self.stale_view) {
            self.speculate();
        }
    }

    /// Rebuilds the speculative scene ([`ClientConnection::view`]) after the replica or the
    /// unacknowledged entries changed, and marks what it changed for the renderer.
    fn speculate(&mut self) {
        let unacked = &self.unacked;
        self.offline.retain(|seq| unacked.contains_key(seq));
        let before = core::mem::take(&mut self.speculated);
        if self.offline.is_empty() {
            self.speculative = None;
        } else {
            let mut scene = self.replica.scene().clone();
            for entry in self.unacked.values() {
                let Ok(body) = entry.decode_body() else {
                    continue;
                };
                // What the scene refuses (an edit of what another member deleted meanwhile)
                // shows nothing; the server's refusal says why.
                if scene
                    .try_apply(
                        body.id(),
                        body.author,
                        &body.command,
                        &crate::scene::Limits::NONE,
                    )
                    .is_ok()
                    && let crate::scene::Touched::Entity(id) =
                        crate::scene::Scene::touched(body.author, &body.command)
                {
                    self.speculated.insert(id);
                }
            }
            self.speculative = Some(scene);
        }
        for id in before.union(&self.speculated) {
            self.tracker.changed.insert(*id);
            self.tracker.next = self.tracker.next.saturating_add(1);
            self.tracker.revisions.insert(*id, self.tracker.next);
        }
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<ClientMsg> {
        self.outbox.pop_front()
    }

    /// The region of the world to be sent others' presence, previews and selections of
    /// (`None`: everywhere). Sent now when joined, and again after every reconnect. The next
    /// [`Self::follow_interest`] asks again whatever it asked before.
    pub fn set_interest(&mut self, region: Option<crate::interest::Region>) {
        if self.interest.set(region) {
            self.send_interest();
        }
    }

    /// Asks for the region of half-edge `half_extent_m` around `center` when it has moved
    /// enough from the one asked before ([`crate::interest::moved_enough`]): what a client
    /// calls with its view every frame.
    pub fn follow_interest(&mut self, center: glam::Vec3, half_extent_m: f32) {
        if self.interest.follow(center, half_extent_m) {
            self.send_interest();
        }
    }

    fn send_interest(&mut self) {
        if self.is_joined() {
            let region = self.interest.region;
            self.outbox
                .push_back(ClientMsg::Interest(crate::interest::Interest { region }));
        }
    }

    /// Holds only the entities whose origin is in `region` (a partial replica; `None`: the
    /// whole scene, the default): see [`crate::interest::Hold`]. Sent now when joined (the
    /// server answers with what comes and goes, or a snapshot when switching between whole
    /// and part), and before every join proof.
    pub fn set_hold(&mut self, region: Option<crate::interest::Region>) {
        if self.hold.set(region) {
            self.send_hold();
        }
    }

    /// Holds the region of half-edge `half_extent_m` around `center` once the view has moved
    /// enough from the one asked before ([`crate::interest::moved_enough`]).
    pub fn follow_hold(&mut self, center: glam::Vec3, half_extent_m: f32) {
        if self.hold.follow(center, half_extent_m) {
            self.send_hold();
        }
    }

    /// Tells the server what is held now, when joined and it was told otherwise.
    fn send_hold(&mut self) {
        let region = self.hold.region;
        if self.is_joined() && region != self.hold_sent {
            self.outbox
                .push_back(ClientMsg::Hold(crate::interest::Hold { region }));
            self.hold_sent = region;
        }
    }

    /// The region of the scene held ([`Self::set_hold`]).
    #[must_use]
    pub const fn hold(&self) -> Option<crate::interest::Region> {
        self.hold.region
    }

    /// The region asked for ([`Self::set_interest`]).
    #[must_use]
    pub const fn interest(&self) -> Option<crate::interest::Region> {
        self.interest.region
    }

    /// Which pack dictionaries to offer the server from the next `Welcome` on, best first
    /// (this build's [`crate::packed::READABLE`] by default; empty: ask for no packs).
    pub fn offer_codecs(&mut self, dictionaries: Vec<u32>) {
        self.codecs = dictionaries;
    }

    /// The messages in a pack of the unreliable lane (none when it does not unpack: like any
    /// unreliable update that does not decode, it is dropped).
    pub fn unpack(&mut self, pack: &crate::packed::Packed) -> Vec<ServerMsg> {
        self.unpacker.unpack(pack).unwrap_or_default()
    }

    /// The plain messages a packed or compact one stands for — a `Packed` unpacked, each
    /// `Motion` turned into the presence and previews it carries — so every client handles one
    /// form; `None` for a message that is plain already. What does not unpack stands for
    /// nothing (an unreliable update that does not decode is dropped).
    pub fn expand(&mut self, msg: &ServerMsg) -> Option<Vec<ServerMsg>> {
        match msg {
            ServerMsg::Packed(p) => {
                let mut out = Vec::new();
                for part in self.unpack(p) {
                    match self.expand(&part) {
                        Some(parts) => out.extend(parts),
                        None => out.push(part),
                    }
                }
                Some(out)
            }
            ServerMsg::Motion(m) => Some(m.expand().unwrap_or_default()),
            _ => None,
        }
    }

    /// Handles one server message.
    pub fn handle(&mut self, msg: &ServerMsg) -> ClientEvent {
        if let Some(parts) = self.expand(msg) {
            for part in parts {
                self.handle(&part);
            }
            return ClientEvent::None;
        }
        match (msg, &self.phase) {
            (ServerMsg::Challenge(c), ClientPhase::Hello) => {
                let Some(session) = self.invite.claimed_session() else {
                    return ClientEvent::None;
                };
                let proof = JoinProofBody {
                    domain: Domain::JoinProof,
                    version: PROTOCOL_VERSION,
                    session,
                    nonce: c.nonce,
                    public_key: self.signer.public_key(),
                };
                let signature = proof.sign(&self.signer);
                // Before the proof: the snapshot the join sends is then only the held part.
                let hold = self.hold.region;
                if hold.is_some() {
                    self.outbox
                        .push_back(ClientMsg::Hold(crate::interest::Hold { region: hold }));
                }
                self.hold_sent = hold;
                // A replica kept in step over a reconnect is caught up from where it is.
                let resumable = self
                    .last_welcome
                    .as_ref()
                    .is_some_and(|w| w.session == session)
                    && self.replica.is_synced();
                self.outbox.push_back(if resumable {
                    ClientMsg::Resume(crate::wire::Resume {
                        signature,
                        position: self.replica.scene().position,
                    })
                } else {
                    ClientMsg::JoinProof(JoinProof { signature })
                });
                self.phase = ClientPhase::Proving;
                ClientEvent::None
            }
            (ServerMsg::Welcome(w), ClientPhase::Proving) => {
                // Entries signed before (or while disconnected) keep their numbers: new ones
                // come after the server's and after theirs.
                let after_unacked = self
                    .unacked
                    .keys()
                    .next_back()
                    .map_or(0, |s| s.saturating_add(1));
                self.next_seq = w.next_seq.max(after_unacked).max(self.next_seq);
                // Own entries are stamped after the server's clock; what they claim to have
                // seen comes only from what the replica holds (the snapshot's or the entries'
                // Lamport times). The clock runs one past the newest entry, so claiming it
                // would hide a concurrent entry stamped with that time (an edit made offline).
                self.lamport = self.lamport.max(w.log_position);
                self.phase = ClientPhase::Joined(w.clone());
                self.last_welcome = Some(w.clone());
                // Unacknowledged entries go again, once, as they were signed: the server
                // acknowledges again the ones it already has and judges the others like any
                // concurrent entry (their `seen_lamport` is old).
                // They go a `Submit` at a time (see `CatchUp`): however many were kept, none is
                // refused for the rate and lost.
                self.catch_up = Some(CatchUp::default());
                self.send_next();
                // The server may pack what it relays on the unreliable lane.
                if !self.codecs.is_empty() {
                    self.outbox
                        .push_back(ClientMsg::Codecs(crate::packed::Codecs {
                            dictionaries: self.codecs.clone(),
                        }));
                }
                // A hold changed while the join was being proved.
                self.send_hold();
                // The region asked for holds over the reconnect.
                if let Some(region) = self.interest.region {
                    self.outbox
                        .push_back(ClientMsg::Interest(crate::interest::Interest {
                            region: Some(region),
                        }));
                }
                ClientEvent::Joined
            }
            (ServerMsg::JoinRefused(r), _) => {
                self.phase = ClientPhase::Done;
                ClientEvent::Refused(r.clone())
            }
            (ServerMsg::Close(_), _) => {
                self.phase = ClientPhase::Done;
                ClientEvent::Closed
            }
            (ServerMsg::Roster(r), ClientPhase::Joined(w))
                if r.session != w.session || !self.invite.signed_by(&r.server_key) =>
            {
                self.outbox.push_back(ClientMsg::Close(Close {
                    reason: crate::wire::CloseReason::ProtocolViolation,
                    message: "the server's key did not sign this client's invite".into(),
                }));
                self.phase = ClientPhase::Done;
                ClientEvent::Untrusted
            }
            (_, ClientPhase::Joined(_)) => {
                match msg {
                    ServerMsg::Ack(a) => {
                        self.unacked.remove(&a.seq);
                        self.judged(a.seq);
                    }
                    ServerMsg::CommandRefused(r)
                        if r.code == crate::wire::RefusalCode::RateLimited
                            && self.unacked.contains_key(&r.seq) =>
                    {
                        // Kept: it goes again, as it was signed, once the rate allows.
                        let now = self.now_ms;
                        let waiting = self.catch_up.get_or_insert_with(|| CatchUp {
                            // Everything else sent is still to be judged.
                            in_flight: self.unacked.keys().copied().collect(),
                            not_before_ms: 0,
                        });
                        waiting.not_before_ms = now.saturating_add(RATE_RETRY_MS);
                        self.judged(r.seq);
                    }
                    ServerMsg::CommandRefused(r) => {
                        self.unacked.remove(&r.seq);
                        self.judged(r.seq);
                    }
                    _ => {}
                }
                let before = self.replica.scene().position;
                let event = self.replica.on_message(msg);
                // What own entries claim to have seen is what the replica applied (verified
                // entries, a sealed delta, a snapshot), never what it refused.
                if !event.needs_resync() && self.replica.is_synced() {
                    let applied = self.replica.scene().lamport;
                    self.lamport = self.lamport.max(applied);
                    self.seen = self.seen.max(applied);
                }
                if self.replica.scene().position != before
                    || matches!(msg, ServerMsg::Snapshot(_) | ServerMsg::SnapshotChunk(_))
                {
                    self.tracker.note(msg, self.replica.scene());
                    self.settle_live();
                }
                self.stale_view |= !self.offline.is_empty();
                let tracker = &self.tracker;
                self.live.receive(
                    msg,
                    self.author(),
                    self.replica.scene(),
                    |e| tracker.revision(e),
                    self.now_ms,
                );
                match event {
                    ReplicaEvent::NeedsResync(reason) => {
                        let position = self.replica.scene().position;
                        self.outbox
                            .push_back(ClientMsg::Resync(Resync { position }));
                        ClientEvent::Resyncing(reason)
                    }
                    ReplicaEvent::Synced => ClientEvent::Synced,
                    ReplicaEvent::Verified | ReplicaEvent::None => ClientEvent::None,
                }
            }
            _ => ClientEvent::None,
        }
    }

    /// What changed in the view since the last call (see [`Changes`]); brings the view
    /// ([`ClientConnection::view`]) up to date first.
    pub fn take_changes(&mut self) -> Changes {
        self.refresh_view();
        Changes {
            all: core::mem::take(&mut self.tracker.all),
            entities: core::mem::take(&mut self.tracker.changed)
                .into_iter()
                .collect(),
        }
    }

    /// The revision of entity `id`'s mesh: it moves on whenever an applied entry or delta may
    /// have changed the mesh (0 before any).
    #[must_use]
    pub fn revision(&self, id: EntityId) -> u64 {
        self.tracker.revision(id)
    }

    /// The application's clock moved to `now_ms` (milliseconds, any origin, never backwards):
    /// others' previews received from now on are stamped with it, and stale ones go. Call it
    /// every frame, or a few times a second and before feeding messages.
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        self.settle_live();
        self.send_next();
    }

    /// Entry `seq` was judged (acknowledged or refused): while catching up, the next `Submit`
    /// goes once the last is all judged.
    fn judged(&mut self, seq: u64) {
        if let Some(c) = &mut self.catch_up {
            c.in_flight.remove(&seq);
        }
        self.send_next();
    }

    /// While catching up and joined: the next `Submit` (the oldest waiting entries), when the
    /// last is all judged and the rate's wait is over; back to sending at once when nothing
    /// waits.
    fn send_next(&mut self) {
        let Some(c) = &mut self.catch_up else {
            return;
        };
        if !matches!(self.phase, ClientPhase::Joined(_))
            || !c.in_flight.is_empty()
            || self.now_ms < c.not_before_ms
        {
            return;
        }
        if self.unacked.is_empty() {
            self.catch_up = None;
            return;
        }
        let next: Vec<SignedEntry> = self
            .unacked
            .values()
            .take(RESUBMIT_CHUNK)
            .cloned()
            .collect();
        c.in_flight = self.unacked.keys().take(RESUBMIT_CHUNK).copied().collect();
        self.outbox
            .push_back(ClientMsg::Submit(Submit { entries: next }));
    }

    fn settle_live(&mut self) {
        let tracker = &self.tracker;
        self.live
            .settle(self.replica.scene(), |e| tracker.revision(e), self.now_ms);
    }

    /// Others' drags in progress, as to show them (see [`LivePreviews`]).
    #[must_use]
    pub const fn live(&self) -> &LivePreviews {
        &self.live
    }

    /// The entities whose shown live preview started, moved or ended since the last call.
    pub fn take_live_changes(&mut self) -> Vec<EntityId> {
        self.live.take_changed()
    }

    /// A new entity id in this author's namespace: after every own id the replica holds, every
    /// one this connection handed out, and `remembered` (a counter the application kept across
    /// reloads). `None` before the join completed.
    pub fn next_entity_id(&mut self, remembered: u32) -> Option<EntityId> {
        let author = self.author()?;
        let used = self
            .replica
            .scene()
            .entities
            .keys()
            .filter(|e| e.namespace() == author)
            .map(|e| e.counter())
            .max()
            .unwrap_or(0);
        self.last_counter = self
            .last_counter
            .max(used)
            .max(remembered)
            .saturating_add(1);
        Some(EntityId::new(author, self.last_counter))
    }

    /// Signs `commands` as this author's next entries without sending them (for a transport
    /// that sends them itself, or a test that alters them). `None` before the join completed.
    pub fn sign(&mut self, commands: Vec<Command>) -> Option<Vec<SignedEntry>> {
        let w = self.last_welcome.as_ref()?;
        let (session, author) = (w.session, w.author);
        let mut entries = Vec::with_capacity(commands.len());
        for command in commands {
            let seen = self.seen;
            self.lamport = self.lamport.max(seen).saturating_add(1);
            let key_id = self.signer.public_key().key_id();
            let body = EntryBody::new(
                session,
                author,
                key_id,
                self.next_seq,
                self.lamport,
                seen,
                command,
            );
            self.next_seq = self.next_seq.saturating_add(1);
            entries.push(SignedEntry::sign(&body, &self.signer).ok()?);
        }
        Some(entries)
    }

    /// Signs `commands` and queues them as one `Submit`. Returns the entries, or `None` before
    /// the first join completed or when they would take the unacknowledged entries past
    /// [`ClientConnection::set_max_unacked`]. While reconnecting they are kept (signed, in
    /// order) and go out once welcomed.
    pub fn submit(&mut self, commands: Vec<Command>) -> Option<Vec<SignedEntry>> {
        if self.unacked.len().saturating_add(commands.len()) > self.max_unacked {
            return None;
        }
        let entries = self.sign(commands)?;
        let joined = self.is_joined();
        for e in &entries {
            if let Ok(b) = e.decode_body() {
                self.unacked.insert(b.seq, e.clone());
                if !joined {
                    self.offline.insert(b.seq);
                }
            }
        }
        if joined && self.catch_up.is_none() {
            self.outbox.push_back(ClientMsg::Submit(Submit {
                entries: entries.clone(),
            }));
        } else {
            // Offline they wait for the welcome; catching up, for their turn.
            self.send_next();
        }
        self.stale_view |= !self.offline.is_empty();
        Some(entries)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;
    use crate::command::{Primitive, Transform};
    use crate::ids::SessionId;
    use crate::registry::Role;
    use crate::sign::Ed25519Signer;
    use crate::wire::{Challenge, Entries, InviteBody};

    const SESSION: SessionId = SessionId([7; 16]);

    fn joined() -> ClientConnection<Ed25519Signer> {
        let server = Ed25519Signer::from_seed([9; 32]);
        let invite = Invite::mint(
            &InviteBody {
                domain: Domain::Invite,
                session: SESSION,
                role: Role::Editor,
                expires_at_ms: u64::MAX,
                invite_id: [1; 16],
            },
            &server,
        )
        .unwrap();
        let mut c = ClientConnection::new(Ed25519Signer::from_seed([1; 32]), invite, "test");
        welcome(&mut c, [0; 32]);
        assert_eq!(
            c.handle(&roster(
                &server,
                Ed25519Signer::from_seed([1; 32]).public_key()
            )),
            ClientEvent::None
        );
        let (manifest, chunks) = crate::replica::snapshot(&crate::scene::Scene::new());
        c.handle(&ServerMsg::Snapshot(manifest));
        for chunk in chunks {
            c.handle(&ServerMsg::SnapshotChunk(chunk));
        }
        c
    }

    /// A region follows the view only on a real move, a region set by hand replaces it and
    /// the next follow asks again, and a reconnect asks for the region again.
    #[test]
    fn interest_follows_the_view_and_survives_a_reconnect() {
        use crate::interest::Region;
        let mut c = joined();
        while c.poll_transmit().is_some() {}
        let interests = |c: &mut ClientConnection<Ed25519Signer>| {
            core::iter::from_fn(|| c.poll_transmit())
                .filter_map(|m| match m {
                    ClientMsg::Interest(i) => Some(i.region),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let at = glam::Vec3::new(4.0, 0.0, 0.0);
        c.follow_interest(at, 32.0);
        assert_eq!(interests(&mut c), vec![Some(Region::around(at, 32.0))]);
        c.follow_interest(at + glam::Vec3::X, 32.0);
        assert!(interests(&mut c).is_empty(), "a metre is not a move");
        c.set_interest(None);
        assert_eq!(interests(&mut c), vec![None]);
        c.follow_interest(at, 32.0);
        assert_eq!(
            interests(&mut c),
            vec![Some(Region::around(at, 32.0))],
            "after a region set by hand, following asks again"
        );
        c.reconnect();
        welcome(&mut c, [5; 32]);
        assert!(
            interests(&mut c).contains(&Some(Region::around(at, 32.0))),
            "asked for again after the reconnect's welcome"
        );
    }

    /// The tick a `Welcome` claims is bounded: a hostile or misconfigured server cannot make
    /// others' markers crawl.
    #[test]
    fn a_welcomes_presence_tick_is_taken_up_to_the_ceiling() {
        let mut c = joined();
        for (claimed, taken) in [(22, 22), (0, 0), (100, 100), (u32::MAX, 100)] {
            c.reconnect();
            c.handle(&ServerMsg::Challenge(Challenge {
                nonce: [3; 32],
                server_build_id: "test".into(),
            }));
            c.handle(&ServerMsg::Welcome(Welcome {
                session: SESSION,
                author: AuthorId(1),
                role: Role::Editor,
                next_seq: 1,
                log_position: 0,
                presence_tick_ms: claimed,
            }));
            assert_eq!(c.presence_tick_ms(), taken, "{claimed}");
        }
    }

    /// The held region follows the view by the same rule, goes before every join proof, and a
    /// change made while the join is proved goes once the welcome came.
    #[test]
    fn the_held_region_follows_the_view_and_goes_before_each_proof() {
        use crate::interest::Region;
        let holds = |c: &mut ClientConnection<Ed25519Signer>| {
            core::iter::from_fn(|| c.poll_transmit())
                .filter_map(|m| match m {
                    ClientMsg::Hold(h) => Some(h.region),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let mut c = joined();
        while c.poll_transmit().is_some() {}
        let at = glam::Vec3::new(0.0, 0.0, 40.0);
        c.follow_hold(at, 10.0);
        assert_eq!(holds(&mut c), vec![Some(Region::around(at, 10.0))]);
        c.follow_hold(at + glam::Vec3::X, 10.0);
        assert!(holds(&mut c).is_empty(), "a metre is not a move at ±10 m");
        c.follow_hold(at + glam::Vec3::X * 3.0, 10.0);
        let moved = Some(Region::around(at + glam::Vec3::X * 3.0, 10.0));
        assert_eq!(holds(&mut c), vec![moved]);
        // A reconnect: the region goes with the proof (the join's snapshot is the held part).
        c.reconnect();
        c.handle(&ServerMsg::Challenge(Challenge {
            nonce: [6; 32],
            server_build_id: "test".into(),
        }));
        let sent: Vec<ClientMsg> = core::iter::from_fn(|| c.poll_transmit())
            .filter(|m| !matches!(m, ClientMsg::Hello(_)))
            .collect();
        assert!(
            matches!(sent.first(), Some(ClientMsg::Hold(h)) if h.region == moved),
            "{sent:?}"
        );
        assert!(matches!(
            sent.get(1),
            Some(ClientMsg::Resume(_) | ClientMsg::JoinProof(_))
        ));
        // Moved back to the whole scene before the welcome: said once the welcome came.
        c.set_hold(None);
        assert!(holds(&mut c).is_empty(), "not joined yet");
        c.handle(&ServerMsg::Welcome(Welcome {
            session: SESSION,
            author: AuthorId(1),
            role: Role::Editor,
            next_seq: 1,
            log_position: 0,
            presence_tick_ms: 22,
        }));
        assert_eq!(holds(&mut c), vec![None]);
    }

    /// The server's challenge (`nonce`) and welcome of author 1, as at a join or a rejoin.
    fn welcome(c: &mut ClientConnection<Ed25519Signer>, nonce: [u8; 32]) {
        c.handle(&ServerMsg::Challenge(Challenge {
            nonce,
            server_build_id: "server".into(),
        }));
        c.handle(&ServerMsg::Welcome(Welcome {
            session: SESSION,
            author: AuthorId(1),
            role: Role::Editor,
            next_seq: 1,
            log_position: 0,
            presence_tick_ms: 22,
        }));
    }

    fn roster(server: &Ed25519Signer, author_key: crate::sign::PublicKey) -> ServerMsg {
        ServerMsg::Roster(crate::wire::Roster {
            session: SESSION,
            server_key: server.public_key(),
            replace: true,
            members: vec![crate::wire::Member {
                author: AuthorId(1),
                public_key: author_key,
                role: Role::Editor,
            }],
        })
    }

    /// What a page keeps across a reload while offline: a restored connection is the same
    /// author with the same replica and unacknowledged entries, and resumes from its position.
    #[test]
    fn a_saved_connection_restores_and_resumes_where_it_was() {
        let mut c = joined();
        let e = c.next_entity_id(0).unwrap();
        c.reconnect();
        let kept = c
            .submit(vec![Command::Spawn {
                entity: e,
                primitive: Primitive::Cube,
                transform: Transform::IDENTITY,
            }])
            .expect("signed while disconnected");
        let saved = c.save().expect("joined once");
        let invite = c.invite.clone();
        let mut r =
            ClientConnection::restore(Ed25519Signer::from_seed([1; 32]), invite, "test", &saved)
                .unwrap();
        assert_eq!(r.author(), c.author());
        assert!(r.replica().is_synced());
        assert_eq!(r.replica().scene(), c.replica().scene());
        assert_eq!(r.unacked().cloned().collect::<Vec<_>>(), kept);
        assert!(matches!(r.poll_transmit(), Some(ClientMsg::Hello(_))));
        r.handle(&ServerMsg::Challenge(Challenge {
            nonce: [2; 32],
            server_build_id: "server".into(),
        }));
        assert!(
            matches!(r.poll_transmit(), Some(ClientMsg::Resume(m)) if m.position == c.replica().scene().position)
        );
        let other = Invite::mint(
            &InviteBody {
                domain: Domain::Invite,
                session: SessionId([4; 16]),
                role: Role::Editor,
                expires_at_ms: u64::MAX,
                invite_id: [1; 16],
            },
            &Ed25519Signer::from_seed([9; 32]),
        )
        .unwrap();
        assert!(
            ClientConnection::restore(Ed25519Signer::from_seed([1; 32]), other, "test", &saved)
                .is_err(),
            "not into another session"
        );
    }

    /// What a browser kept offline before the upgrade to protocol version 2 (an untagged save
    /// whose `Welcome` has no presence tick, holding version-1 entries) still restores: the
    /// edits go out once joined, and the server still accepts version-1 entries.
    #[test]
    fn a_save_written_by_protocol_version_1_still_restores_with_its_offline_edits() {
        use super::{SavedClientV1, WelcomeV1};
        let signer = Ed25519Signer::from_seed([1; 32]);
        let mut body = EntryBody::new(
            SESSION,
            AuthorId(1),
            signer.public_key().key_id(),
            4,
            9,
            8,
            Command::Spawn {
                entity: EntityId::new(AuthorId(1), 3),
                primitive: Primitive::Cube,
                transform: Transform::IDENTITY,
            },
        );
        body.version = 1;
        let kept = SignedEntry::sign(&body, &signer).unwrap();
        let old = postcard::to_allocvec(&SavedClientV1 {
            welcome: WelcomeV1 {
                session: SESSION,
                author: AuthorId(1),
                role: Role::Editor,
                next_seq: 1,
                log_position: 8,
            },
            next_seq: 5,
            lamport: 9,
            seen: 8,
            last_counter: 3,
            unacked: vec![kept.clone()],
            scene: Some(serde_bytes::ByteBuf::from(
                crate::scene::Scene::new().encode(),
            )),
        })
        .unwrap();
        let c = joined();
        let r = ClientConnection::restore(signer, c.invite.clone(), "test", &old).unwrap();
        assert_eq!(r.author(), Some(AuthorId(1)));
        assert_eq!(r.unacked().cloned().collect::<Vec<_>>(), vec![kept]);
        assert_eq!(r.presence_tick_ms(), crate::presence::PLAYOUT_MS);
        // Saved again, it is tagged and reads back the same.
        let again = r.save().unwrap();
        assert!(again.starts_with(SAVED_TAG));
        let back = ClientConnection::restore(
            Ed25519Signer::from_seed([1; 32]),
            c.invite.clone(),
            "test",
            &again,
        )
        .unwrap();
        assert_eq!(back.unacked().count(), 1);
        // Damaged or trailing bytes are refused, in either form.
        let mut trailing = again;
        trailing.push(0);
        assert!(
            ClientConnection::restore(
                Ed25519Signer::from_seed([1; 32]),
                c.invite.clone(),
                "test",
                &trailing
            )
            .is_err()
        );
    }

    #[test]
    fn a_roster_whose_server_key_did_not_sign_the_invite_is_not_trusted() {
        let mut c = joined();
        let impostor = Ed25519Signer::from_seed([0x66; 32]);
        let key = c.signer().public_key();
        assert_eq!(c.handle(&roster(&impostor, key)), ClientEvent::Untrusted);
        assert_eq!(c.phase(), &ClientPhase::Done);
        assert!(
            core::iter::from_fn(|| c.poll_transmit()).any(|m| matches!(m, ClientMsg::Close(_))),
            "the client closes"
        );
    }

    /// Signs a cube's spawn, a move of it along +X and `then` (of the cube), undelivered.
    fn cube_then(
        c: &mut ClientConnection<Ed25519Signer>,
        then: impl Fn(EntityId) -> Command,
    ) -> (EntityId, Vec<SignedEntry>) {
        let e = c.next_entity_id(0).unwrap();
        let entries = c
            .sign(vec![
                Command::Spawn {
                    entity: e,
                    primitive: Primitive::Cube,
                    transform: Transform::IDENTITY,
                },
                Command::Translate {
                    entity: e,
                    delta: glam::Vec3::X,
                },
                then(e),
            ])
            .unwrap();
        (e, entries)
    }

    /// Edits made while disconnected show in the view at once (the replica holds only what the
    /// server ordered); once judged, an accepted one stays (now from the replica) and a refused
    /// one goes from the view, each change marked for the renderer.
    #[test]
    fn offline_edits_show_in_the_view_until_the_server_judges_them() {
        let mut c = joined();
        let _ = c.take_changes();
        let (a, b) = (c.next_entity_id(0).unwrap(), c.next_entity_id(0).unwrap());
        let spawn = |entity| Command::Spawn {
            entity,
            primitive: Primitive::Cube,
            transform: Transform::IDENTITY,
        };
        // `a` is sent while connected, then the connection drops before its ack; `b` is made
        // offline. Both show.
        let kept_a = c.submit(vec![spawn(a)]).unwrap();
        c.reconnect();
        assert_eq!(c.take_changes().entities, vec![a]);
        assert!(
            c.view().entities.contains_key(&a),
            "sent before the drop, still in view"
        );
        let kept_b = c.submit(vec![spawn(b)]).unwrap();
        let kept = [kept_a, kept_b].concat();
        assert!(c.replica().scene().entities.is_empty());
        assert_eq!(c.take_changes().entities, vec![a, b]);
        assert!(c.view().entities.contains_key(&a) && c.view().entities.contains_key(&b));
        let shown = c.revision(a);

        // Back online: caught up, the server orders a and refuses b.
        welcome(&mut c, [3; 32]);
        let body = kept[0].decode_body().unwrap();
        c.handle(&ServerMsg::Entries(Entries {
            entries: vec![kept[0].clone()],
        }));
        c.handle(&ServerMsg::Ack(crate::wire::Ack {
            seq: body.seq,
            id: body.id(),
        }));
        assert!(c.view().entities.contains_key(&b), "b is not judged yet");
        c.handle(&ServerMsg::CommandRefused(crate::wire::CommandRefused {
            seq: kept[1].decode_body().unwrap().seq,
            code: crate::wire::RefusalCode::Conflict,
            message: "another member deleted it".into(),
        }));
        let changes = c.take_changes();
        assert!(changes.entities.contains(&a) && changes.entities.contains(&b));
        assert!(c.revision(a) > shown, "redrawn from the replica");
        assert!(
            core::ptr::eq(c.view(), c.replica().scene()),
            "the view is the replica again"
        );
        assert!(c.view().entities.contains_key(&a));
        assert!(
            !c.view().entities.contains_key(&b),
            "the refused spawn went"
        );
        assert_eq!(c.unacked().count(), 0);
    }

    #[test]
    fn changes_and_mesh_revisions_follow_what_was_applied() {
        let mut c = joined();
        assert!(c.take_changes().all, "a snapshot changes everything");
        assert_eq!(c.take_changes(), Changes::default(), "taken");
        let (e, entries) = cube_then(&mut c, |e| Command::Despawn { entity: e });
        let deliver = |c: &mut ClientConnection<Ed25519Signer>, i: usize| {
            c.handle(&ServerMsg::Entries(Entries {
                entries: vec![entries[i].clone()],
            }));
        };
        deliver(&mut c, 0);
        assert_eq!(c.take_changes().entities, vec![e]);
        let spawned = c.revision(e);
        assert!(spawned > 0);
        deliver(&mut c, 1);
        assert_eq!(c.take_changes().entities, vec![e]);
        assert_eq!(c.revision(e), spawned, "a move leaves the mesh's revision");
        deliver(&mut c, 2);
        assert_eq!(c.take_changes().entities, vec![e]);
        assert!(c.revision(e) > spawned, "a despawn does not");
    }

    #[test]
    fn others_previews_end_when_the_replica_moves_on_or_the_clock_runs_out() {
        use crate::presence::LIVE_PREVIEW_TTL_MS;
        use crate::wire::{EditPreview, EditPreviewOf, Preview, PreviewOf, PreviewTransform};
        let mut c = joined();
        let (e, entries) = cube_then(&mut c, |e| Command::Mirror {
            entity: e,
            axis: crate::editmesh::Axis::X,
            weld: true,
        });
        let deliver = |c: &mut ClientConnection<Ed25519Signer>, i: usize| {
            c.handle(&ServerMsg::Entries(Entries {
                entries: vec![entries[i].clone()],
            }));
        };
        deliver(&mut c, 0);
        let them = AuthorId(2);
        let drag = ServerMsg::Preview(PreviewOf {
            author: them,
            preview: Preview {
                seq: 1,
                entity: e,
                transform: Some(PreviewTransform::quantize(&Transform {
                    translation: glam::Vec3::Y,
                    ..Transform::IDENTITY
                })),
            },
        });
        let gesture = ServerMsg::EditPreview(EditPreviewOf {
            author: them,
            preview: EditPreview {
                seq: 2,
                entity: e,
                command: Some(Command::MoveVertices {
                    entity: e,
                    moves: vec![],
                }),
            },
        });
        c.tick(1_000);
        c.handle(&drag);
        c.handle(&gesture);
        assert_eq!(c.take_live_changes(), vec![e]);
        assert_eq!(
            c.live().transform(e).map(|p| p.value.translation),
            Some(glam::Vec3::Y)
        );
        // A move lands: the drag preview is over; the mesh gesture is not (the mesh is as it was).
        deliver(&mut c, 1);
        assert!(c.live().transform(e).is_none());
        assert!(c.live().edit(e).is_some());
        assert_eq!(c.take_live_changes(), vec![e]);
        // The mesh changes: so is the gesture.
        deliver(&mut c, 2);
        assert!(c.live().edit(e).is_none());
        // A preview nobody updates goes with the clock.
        c.handle(&drag);
        c.tick(1_000 + LIVE_PREVIEW_TTL_MS);
        assert!(c.live().transform(e).is_some());
        c.tick(1_001 + LIVE_PREVIEW_TTL_MS);
        assert!(c.live().transform(e).is_none());
        // The compact form shows the same drag, and its end keeps the last state until the
        // committed result lands.
        let moved = PreviewTransform::quantize(&Transform {
            translation: glam::Vec3::new(0.5, 1.0, -0.25),
            ..Transform::IDENTITY
        });
        let motion = |moving, ended| {
            ServerMsg::Motion(crate::motion::MotionOf {
                author: them,
                motion: crate::motion::Motion::encode(&crate::motion::MotionContent {
                    seq: 3,
                    figure: None,
                    moving,
                    ended,
                })
                .unwrap(),
            })
        };
        c.handle(&motion(vec![(e, moved)], vec![]));
        assert_eq!(
            c.live().transform(e).map(|p| p.value.translation),
            Some(glam::Vec3::new(0.5, 1.0, -0.25))
        );
        c.handle(&motion(vec![], vec![e]));
        assert!(
            c.live().transform(e).is_some(),
            "released: shown until it lands"
        );
        assert_eq!(c.take_live_changes(), vec![e]);
    }

    #[test]
    fn pending_items_settle_by_their_own_sequence_numbers() {
        let mut p = Pending::new();
        p.submitted([4, 5], "drag");
        p.submitted([6], "select");
        p.acked(6);
        assert_eq!(
            p.take_settled(),
            vec!["select"],
            "another entry's ack settles nothing else"
        );
        p.acked(4);
        assert!(p.take_settled().is_empty());
        p.submitted([7], "paint");
        assert_eq!(p.refused(7), vec!["paint"]);
        assert!(p.refused(7).is_empty());
        // Several items of one submission go together.
        p.submitted([8], "left");
        p.submitted([8], "right");
        assert_eq!(p.refused(8), vec!["left", "right"]);
        p.acked(5);
        assert_eq!(p.take_settled(), vec!["drag"]);
        assert_eq!(p.iter().count(), 0);
    }

    #[test]
    fn new_entity_ids_come_after_every_own_id_and_the_remembered_counter() {
        let mut c = joined();
        let first = c.next_entity_id(0).unwrap();
        assert_eq!(first, EntityId::new(AuthorId(1), 1));
        assert_eq!(c.next_entity_id(0).unwrap(), EntityId::new(AuthorId(1), 2));
        assert_eq!(
            c.next_entity_id(10).unwrap(),
            EntityId::new(AuthorId(1), 11)
        );
        // An own entity the replica holds (spawned from another tab, say) is skipped too.
        let far = EntityId::new(AuthorId(1), 40);
        let entries = c
            .sign(vec![Command::Spawn {
                entity: far,
                primitive: Primitive::Cube,
                transform: Transform::IDENTITY,
            }])
            .unwrap();
        c.handle(&ServerMsg::Entries(Entries { entries }));
        assert_eq!(c.next_entity_id(0).unwrap(), EntityId::new(AuthorId(1), 41));
    }
}
