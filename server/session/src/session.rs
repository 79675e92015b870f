//! One collaborative session as a deterministic state machine: the join handshake, per-phase
//! message validity, rate limits, the command log, durability gating and fan-out.
//!
//! Drive it like quinn-proto or str0m: feed [`Input`]s with [`Session::handle_input`], then drain
//! [`Session::poll_output`] until it returns `None`, then sleep until [`Session::poll_timeout`]
//! (or the next input) and feed [`Input::Tick`]. Time (`now_ms`, Unix milliseconds) arrives with
//! every input; randomness arrives once, as the seed given to [`Session::new`].
//!
//! A submitted entry goes through, in order (numbers are tagged in the code):
//! 1. phase check (`ClientMsg::allowed_in`), 2. rate limit, 3. the log's checks and ordering
//!    (`CommandLog::integrate_batch_from`), 4. [`Output::Persist`] of the accepted batch,
//! 5. on [`Input::PersistAck`]: [`wire::Ack`] to the author and one shared [`wire::Entries`] frame
//!    to every joined client. Nothing is acknowledged or shown to anyone before it is durable.

use crate::held::{Grid, HoldState, Scope};
use crate::pack::{Kind, Parts};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use meshwork_protocol::codec::{FrameError, decode_payload, to_frame};
use meshwork_protocol::interest::Place;
use meshwork_protocol::motion;
use meshwork_protocol::registry::Strategy;
use meshwork_protocol::wire::{
    self, Ack, Challenge, ClientMsg, Close, CloseReason, CommandRefused, Entries, Hello, History,
    InviteBody, InviteError, JoinProofBody, JoinRefusal, JoinRefused, Phase, Pong, Presence,
    PresenceOf, RefusalCode, ServerMsg, StateHash, Welcome, peek_hello_version,
};
use meshwork_protocol::{
    AuthorId, Command, CommandKind, Domain, Ed25519Signer, KeyRing, PROTOCOL_VERSION, PublicKey,
    Role, SessionId, SignedEntry, Signer,
};
use sha2::{Digest, Sha256};

use meshwork_protocol::asset::ImportAsset;
use meshwork_protocol::command::AssetId;
use meshwork_protocol::editmesh::EditError;
use meshwork_protocol::scene::{Limits, Scene};

use crate::log::{CommandLog, Integrated, Mode, Refusal, Status};

/// A connection, numbered by the glue. Never reused within a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

/// Which delivery a frame needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Ordered and reliable (the QUIC stream, the `log` data channel, the WebSocket).
    Reliable,
    /// Latest-wins, may be dropped (QUIC datagrams, the `presence` data channel).
    Unreliable,
}

/// A persistence batch, numbered in emission order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchId(pub u64);

/// Entries the log holds in memory by default ([`Config::log_window`]): about 30 MB of entries
/// of a typical session.
pub const DEFAULT_LOG_WINDOW: usize = 32_768;

/// How long presence and previews to a member are gathered before they go as one pack
/// ([`Config::presence_pack_ms`]): two frames of a 90 Hz headset, so each member's next update
/// replaces the one before it in the pack (about 45 updates a second reach each member), with
/// at most this much added latency.
pub const DEFAULT_PRESENCE_PACK_MS: u64 = meshwork_protocol::presence::PLAYOUT_MS;

/// Session settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The session's id.
    pub session: SessionId,
    /// The server key invites must be signed with.
    pub server_key: PublicKey,
    /// This server's build id (sent in the challenge).
    pub build_id: String,
    /// Sustained commands per second per author.
    pub rate_per_s: u32,
    /// Burst size of the per-author token bucket.
    pub burst: u32,
    /// Most connections (joined or joining).
    pub max_clients: usize,
    /// Most member keys the session ever admits (a known key can always rejoin).
    pub max_authors: usize,
    /// Most keys one invite admits unless it was minted with its own limit.
    pub max_keys_per_invite: u32,
    /// A client that has not joined within this time is closed.
    pub handshake_timeout_ms: u64,
    /// Entries per `History` / fan-out frame.
    pub catch_up_chunk: usize,
    /// How often the state hash goes out (when the scene changed).
    pub state_hash_interval_ms: u64,
    /// Presence updates relayed per author per second (90 Hz headsets).
    pub presence_per_s: u32,
    /// How long a client that reads packs (`ClientMsg::Codecs`) waits for what it is owed on
    /// the unreliable lane to go out together, in milliseconds (0: every message at once); an
    /// update superseded by its author's next within the tick is dropped
    /// ([`DEFAULT_PRESENCE_PACK_MS`] by default; at most `presence::MAX_TICK_MS` is used).
    pub presence_pack_ms: u64,
    /// `Resync` snapshots per connection per minute, after a burst of [`RESYNC_BURST`]; one
    /// asked for over the limit is sent when the connection's bucket allows it (requests in
    /// between join it).
    pub resync_per_min: u32,
    /// `FetchLog` pages per connection per minute, after a burst of [`HISTORY_BURST`]: an
    /// answer goes out a page at a time, the next page when the connection's bucket allows it.
    pub history_per_min: u32,
    /// Most entries in one page of a `FetchLog` answer.
    pub history_page: usize,
    /// Mesh size limits, enforced before an edit is computed.
    pub limits: Limits,
    /// The server's key, to seal the scene deltas it sends ([`wire::SealedDelta`]); its
    /// public half must be `server_key`. Without it (offline verification, `export`) the
    /// session never sends a delta: entries, or a snapshot where a delta was needed.
    pub server_signer: Option<Arc<Ed25519Signer>>,
    /// How many of the latest durable entries the session remembers what they touched, so a
    /// client that reconnects within them is caught up by a delta ([`wire::Resume`]) instead
    /// of a snapshot.
    pub resume_window: usize,
    /// How many entries the log holds in memory; older ones are let go
    /// ([`CommandLog::let_go`]) once durable and read from the store. An entry made without
    /// seeing an edit let go in its scope is resolved against what the log keeps of it, or
    /// refused as a conflict where that cannot decide.
    pub log_window: usize,
}

impl Config {
    /// Defaults for `session`, verifying invites against `server_key`.
    #[must_use]
    pub fn new(session: SessionId, server_key: PublicKey) -> Self {
        Self {
            session,
            server_key,
            build_id: String::from("meshwork"),
            rate_per_s: 200,
            burst: 400,
            max_clients: 256,
            max_authors: 4096,
            max_keys_per_invite: 100,
            handshake_timeout_ms: 10_000,
            catch_up_chunk: 512,
            state_hash_interval_ms: 1000,
            presence_per_s: 90,
            presence_pack_ms: DEFAULT_PRESENCE_PACK_MS,
            resync_per_min: 6,
            history_per_min: 60,
            history_page: 4096,
            limits: Limits::DEFAULT,
            server_signer: None,
            resume_window: 65_536,
            log_window: DEFAULT_LOG_WINDOW,
        }
    }

    /// Defaults for `session`, as the server `signer`: invites verify against its key and it
    /// seals the deltas sent.
    #[must_use]
    pub fn signed_by(session: SessionId, signer: Arc<Ed25519Signer>) -> Self {
        let mut config = Self::new(session, signer.public_key());
        config.server_signer = Some(signer);
        config
    }
}

/// Something that happened to the session, for the glue's metrics and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A client joined.
    Joined {
        /// The connection.
        client: ClientId,
        /// Its author id.
        author: AuthorId,
        /// Its role.
        role: Role,
    },
    /// A join was refused.
    JoinRefused {
        /// The connection.
        client: ClientId,
        /// Why.
        reason: JoinRefusal,
    },
    /// An entry was accepted into the log (not yet durable).
    Accepted {
        /// Its kind.
        kind: CommandKind,
    },
    /// An entry was refused.
    Refused {
        /// Why.
        code: RefusalCode,
    },
    /// Two concurrent entries met on one scope and a strategy decided.
    Conflict {
        /// The strategy that decided.
        strategy: Strategy,
    },
    /// Durable entries were fanned out.
    FannedOut {
        /// The persistence batches whose entries went out.
        batches: Vec<BatchId>,
        /// How many entries.
        entries: usize,
        /// To how many clients.
        clients: usize,
    },
    /// A presence update over the rate limit was dropped.
    PresenceDropped,
    /// A relayed presence-lane message was not sent to a client: outside its interest.
    OutOfInterest,
    /// A client that holds part of the scene was considered for an update: at a fan-out, of
    /// the entries fanned out `sent` went to it as entries and `not_sent` did not (outside what
    /// it holds, or what it gets as state instead: an undo, a redo, an import, a stale copy);
    /// at a fan-out or a move of its region, `states` entity states went to it (what came into
    /// its region, left it, or changed without an entry it could apply).
    HeldUpdate {
        /// Entries sent.
        sent: usize,
        /// Entries not sent as entries.
        not_sent: usize,
        /// Entity states sent.
        states: usize,
    },
    /// A pack of unreliable-lane messages went out: its messages' bytes and the bytes sent
    /// (the `Packed` frame, header included).
    Packed {
        /// To whom.
        client: ClientId,
        /// The messages, each behind its length, before compression.
        raw: usize,
        /// The frame sent.
        sent: usize,
    },
    /// A snapshot went to a client: the scene's encoding and the frames sent for it (manifest
    /// and chunks, headers included; compressed or not, `SnapshotEncoding`).
    SnapshotSent {
        /// To whom.
        client: ClientId,
        /// Bytes of the scene's encoding.
        scene: usize,
        /// Bytes of the frames sent.
        sent: usize,
    },
    /// A `Resync` or `FetchLog` over the connection's rate limit was deferred.
    Throttled {
        /// The connection.
        client: ClientId,
        /// snake_case: `resync_throttled`, `fetch_log_throttled`, `hold_throttled`.
        reason: &'static str,
    },
    /// A fan-out went out as a scene delta instead of entries.
    DeltaSent,
    /// A reconnecting client was caught up by a sealed delta instead of a snapshot.
    Resumed {
        /// The connection.
        client: ClientId,
        /// Entries the delta covered.
        entries: u64,
    },
    /// An undo or redo was decided.
    Undo {
        /// Redo rather than undo.
        redo: bool,
        /// `accepted`, or why it was refused (`changed`, `built_on`, `nothing_to_undo`, ...).
        outcome: &'static str,
    },
    /// A client that did not keep up (its outbox full) is being closed as too slow.
    TooSlow {
        /// The connection.
        client: ClientId,
    },
    /// A connection that did not finish the join handshake within the deadline is being closed.
    HandshakeTimeout {
        /// The connection.
        client: ClientId,
    },
    /// An admin's membership change was made durable and carried out.
    Membership {
        /// snake_case: `role_changed`, `kicked`.
        change: &'static str,
    },
    /// A client broke the protocol and is being closed.
    ProtocolViolation {
        /// The connection.
        client: ClientId,
        /// snake_case kind: `frame_too_large`, `bad_frame`, `undecodable`, `out_of_phase`.
        reason: &'static str,
    },
}

/// What the glue must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send one frame (header included) to a client.
    Send {
        /// The connection.
        client: ClientId,
        /// Delivery.
        lane: Lane,
        /// The frame, shared between all recipients of a fan-out.
        frame: Arc<[u8]>,
    },
    /// Close a connection after flushing what was sent to it (the close frame included).
    Close {
        /// The connection.
        client: ClientId,
        /// Why.
        reason: CloseReason,
    },
    /// Make these entries durable, then answer [`Input::PersistAck`] with the same batch id.
    /// Batches must be acknowledged in order.
    Persist {
        /// The batch.
        batch: BatchId,
        /// Authors registered or re-registered since the last batch: written no later than
        /// their first entry, so every stored entry's key is in the store.
        authors: Vec<AuthorRecord>,
        /// Entries, in acceptance order.
        entries: Vec<SignedEntry>,
        /// Invites whose limits, revocation or uses changed since the last batch (replace the
        /// stored record).
        invites: Vec<InviteRecord>,
    },
    /// Read the stored entries at these positions (1-based, `start..end` ranges) and answer
    /// [`Input::Stored`] with `client` and `request`: history the log let go of, for a
    /// `FetchLog` answer. Entries at positions the store does not hold are left out.
    ReadStored {
        /// Who asked.
        client: ClientId,
        /// Which of its requests (a later `FetchLog` makes an earlier answer stale).
        request: u64,
        /// Position ranges, in order.
        ranges: Vec<std::ops::Range<u64>>,
    },
    /// For metrics and logs.
    Event(Event),
}

/// What happened outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A connection was opened.
    Connected {
        /// The new connection.
        client: ClientId,
    },
    /// One whole frame payload (without its length header) arrived on the reliable lane.
    Payload {
        /// From.
        client: ClientId,
        /// Payload bytes.
        bytes: Vec<u8>,
    },
    /// A `Submit` the glue decoded from the reliable lane and whose every entry it found
    /// signed by `signed_by`, the key the connection's `Hello` named, with one batch
    /// verification in the connection's own task
    /// ([`meshwork_protocol::sign::ReadyKey::signed_all`]): signature checks then spread over
    /// every core while the session only orders. Handled exactly as the same `Submit` in a
    /// [`Input::Payload`], except that the signatures are
    /// not checked again when `signed_by` is the submitting member's registered key (any other
    /// key and the session checks them itself). Only that check may produce this input.
    VerifiedSubmit {
        /// From.
        client: ClientId,
        /// The entries, as submitted.
        entries: Vec<SignedEntry>,
        /// The key every entry was found signed by.
        signed_by: PublicKey,
        /// The session they were found signed for (bound into version-2 signatures): only
        /// this session's own id lets the check stand.
        session: SessionId,
    },
    /// One payload that arrived on the unreliable lane (a datagram). Only presence is valid
    /// there; anything else is dropped.
    Datagram {
        /// From.
        client: ClientId,
        /// Payload bytes.
        bytes: Vec<u8>,
    },
    /// The glue's frame reader refused a frame (e.g. oversized); the connection is done.
    BadFrame {
        /// From.
        client: ClientId,
        /// Why.
        error: FrameError,
    },
    /// The connection is gone.
    Disconnected {
        /// Which.
        client: ClientId,
    },
    /// The client's outgoing queue is full: it is not keeping up.
    Backpressure {
        /// Which.
        client: ClientId,
    },
    /// A persistence batch is durable.
    PersistAck {
        /// Which.
        batch: BatchId,
    },
    /// Time passed (see [`Session::poll_timeout`]).
    Tick,
    /// Stop: close every client with a reason.
    Shutdown,
    /// An admin minted an invite with its own limits (the HTTP API): the session enforces them.
    /// A record already held keeps the keys it admitted and its revocation.
    Invite(InviteRecord),
    /// An admin revoked an invite: it admits no one from now on, members who joined with it
    /// included (they stay connected until they leave or are removed).
    RevokeInvite {
        /// The invite's id.
        invite: [u8; 16],
    },
    /// The answer to [`Output::ReadStored`]: the entries read, in position order.
    Stored {
        /// Who asked.
        client: ClientId,
        /// Which request.
        request: u64,
        /// The entries.
        entries: Vec<SignedEntry>,
    },
}

/// What the session knows of one invite: its limit on keys, whether it was revoked, and the
/// keys it admitted. Made when an admin mints it through the API, or at its first use (an
/// invite minted offline: the session's default limit). Kept in the store.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InviteRecord {
    /// The invite's id (signed in it).
    pub invite: [u8; 16],
    /// The role it grants.
    pub role: Role,
    /// When it expires (Unix ms).
    pub expires_at_ms: u64,
    /// Most keys it admits; `None`: the session's [`Config::max_keys_per_invite`].
    pub max_keys: Option<u32>,
    /// When it was revoked (Unix ms).
    pub revoked_at_ms: Option<u64>,
    /// The members it admitted, in order.
    pub keys: Vec<AuthorId>,
}

/// A participant as the store keeps it: who signs with which key, in which role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuthorRecord {
    /// The author id.
    pub author: AuthorId,
    /// Its public key.
    pub public_key: PublicKey,
    /// Its role.
    pub role: Role,
}

/// A durable removal: by whom, why, and whether the member's invites go too.
type Removal = (AuthorId, String, bool);

/// A member as [`Session::members`] lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MemberInfo {
    /// The author id.
    pub author: AuthorId,
    /// The role as it now stands.
    pub role: Role,
    /// The display name they signed, if any.
    pub name: Option<String>,
    /// Connected now.
    pub connected: bool,
    /// An admin set the role ([`Command::SetRole`]): later invites do not change it.
    pub role_set_by_admin: bool,
}

/// What a snapshot keeps of a session: enough, with the stored log, to rebuild it without
/// resolving conflicts again, and a hash to prove the rebuild right.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionSnapshot {
    /// Entries covered: the first `position` entries in acceptance order.
    pub position: u64,
    /// [`CommandLog::resolution_digest`] after those entries.
    pub digest: [u8; 32],
    /// Every author known then.
    pub authors: Vec<AuthorRecord>,
    /// Entries whose status is not `Applied`.
    pub non_applied: Vec<(meshwork_protocol::CommandId, Status)>,
}

impl SessionSnapshot {
    /// Whether a restore that replays to position `upto` of a log whose head is at `head`,
    /// holding `window` entries, should start from this snapshot. It saves resolving the
    /// entries it covers, but [`Restoring`] holds them all until its digest checks out: one
    /// covering more than the window (taken by an older build, or with a larger window), or far
    /// behind the head (the log let go of entries since, so no newer one was taken), is not
    /// used: the entries are replayed instead.
    #[must_use]
    pub fn usable(&self, window: usize, head: u64, upto: u64) -> bool {
        let window = u64::try_from(window).unwrap_or(u64::MAX);
        self.position <= upto
            && self.position <= window.saturating_add(window / 8)
            && head.min(upto).saturating_sub(self.position) <= window
    }
}

/// A store that does not rebuild into a consistent session.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stored entry {position} does not replay: {refusal}")]
pub struct RestoreError {
    /// 1-based position in acceptance order.
    pub position: u64,
    /// Why the log refused it.
    pub refusal: Refusal,
}

/// How a restore went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreReport {
    /// Entries restored from the snapshot without resolving them again.
    pub from_snapshot: u64,
    /// Entries replayed through conflict resolution.
    pub replayed: u64,
    /// A snapshot was offered but did not match the log (ignored, everything replayed).
    pub snapshot_rejected: bool,
}

/// The Lamport range of each block of [`StoredLamports::BLOCK`] durable positions: where in the
/// store the entries of a Lamport range can be. Lamport times mostly rise with position, so a
/// range lies in a few consecutive blocks (and those of the odd late offline entry). Two numbers
/// per block: 16 KiB for a million entries.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct StoredLamports {
    blocks: Vec<(u64, u64)>,
}

impl StoredLamports {
    const BLOCK: u64 = 1024;

    /// The entry at `position` (1-based) has Lamport time `lamport`.
    fn note(&mut self, position: u64, lamport: u64) {
        let Ok(b) = usize::try_from(position.saturating_sub(1) / Self::BLOCK) else {
            return;
        };
        match self.blocks.get_mut(b) {
            Some((min, max)) => {
                *min = (*min).min(lamport);
                *max = (*max).max(lamport);
            }
            None => {
                if b == self.blocks.len() {
                    self.blocks.push((lamport, lamport));
                }
            }
        }
    }

    /// The next page of history after `since`, up to `floor` at most: its upper Lamport bound
    /// (the largest time in the first blocks that reach past `since`, enough for about `page`
    /// entries) and the position ranges of every block that may hold an entry in
    /// `(since, up_to]`. `up_to > since` whenever `since < floor`.
    fn page(&self, since: u64, floor: u64, page: usize) -> (u64, Vec<std::ops::Range<u64>>) {
        let want = (page as u64).div_ceil(Self::BLOCK).max(1);
        let mut up_to = since;
        let mut taken = 0u64;
        for &(_, max) in &self.blocks {
            if max > since {
                up_to = up_to.max(max);
                taken = taken.saturating_add(1);
                if taken >= want {
                    break;
                }
            }
        }
        let up_to = if up_to > since {
            up_to.min(floor)
        } else {
            floor
        };
        let mut ranges: Vec<std::ops::Range<u64>> = Vec::new();
        for (b, &(min, max)) in self.blocks.iter().enumerate() {
            if max <= since || min > up_to {
                continue;
            }
            let start = (b as u64).saturating_mul(Self::BLOCK).saturating_add(1);
            let end = start.saturating_add(Self::BLOCK);
            match ranges.last_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => ranges.push(start..end),
            }
        }
        (up_to, ranges)
    }
}

/// A session's state at a point of its log, with none of the entries up to it: where a store
/// whose older history was rotated out into an archive restarts from ([`Restoring::base`],
/// [`Session::restoring_from`]). Replaying the entries after it gives the session a restart
/// that read the whole log would give: the entries the log still held at that point come with
/// it, so later entries are resolved against them as before, and so does the undo history.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SessionBase {
    /// Entries covered: the first `position` entries in acceptance order.
    pub position: u64,
    /// The scene after them.
    pub scene: Scene,
    /// What the log keeps of them.
    pub log: crate::log::LogBase,
    /// Members whose role an admin set in them.
    pub roles_set: Vec<AuthorId>,
    /// Where the entries of each Lamport range are in the store (positions up to `position`
    /// are no longer there; later ones are).
    stored: StoredLamports,
    /// The entries the log still held, as signed, with their statuses: later entries are
    /// resolved against them after a restart as they were before it. Last, so that a base
    /// written without them (`SessionBaseV1`, the first bases) is told apart.
    held: Vec<(SignedEntry, Status)>,
    /// The scene's undo history: an undo after the base of a step made before it replays as
    /// it was carried out (without it, the step would be unknown and the undo change nothing).
    history: Option<meshwork_protocol::history::History>,
}

/// The first bases' layout (without the held entries): they still restart, as they did.
#[derive(serde::Deserialize)]
struct SessionBaseV1 {
    position: u64,
    scene: Scene,
    log: crate::log::LogBase,
    roles_set: Vec<AuthorId>,
    stored: StoredLamports,
}

impl SessionBase {
    /// The encoding stored and signed.
    ///
    /// # Panics
    /// Never: postcard into a `Vec` fails only on serde features these types do not use.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self)
            .expect("postcard into a Vec fails only on serde features these types do not use")
    }

    /// Decodes [`SessionBase::encode`]'s bytes.
    ///
    /// # Errors
    /// A sentence when the bytes are not a base.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        match postcard::take_from_bytes::<Self>(bytes) {
            Ok((base, [])) => Ok(base),
            _ => match postcard::take_from_bytes::<SessionBaseV1>(bytes) {
                Ok((v1, [])) => Ok(Self {
                    position: v1.position,
                    scene: v1.scene,
                    log: v1.log,
                    roles_set: v1.roles_set,
                    stored: v1.stored,
                    held: Vec::new(),
                    history: None,
                }),
                Ok(_) => Err("session base: trailing bytes".into()),
                Err(e) => Err(format!("session base: {e}")),
            },
        }
    }
}

/// What starting a restore over needs: config, seed, time, authors and assets.
type Fresh = (
    Config,
    [u8; 32],
    u64,
    Vec<AuthorRecord>,
    Vec<(AssetId, Arc<ImportAsset>)>,
);

/// A session being rebuilt from its store, one entry at a time ([`Session::restoring`]).
pub struct Restoring {
    session: Session,
    /// What a fresh start needs (a snapshot that does not check out means starting over).
    fresh: Fresh,
    /// The snapshot still being restored from (`None` once checked, or if there is none).
    snapshot: Option<SessionSnapshot>,
    /// Its entries that are not `Applied`.
    statuses: BTreeMap<meshwork_protocol::CommandId, Status>,
    /// The entries it covers so far, kept until its hash checks out (to replay them if not).
    covered: Vec<SignedEntry>,
    report: RestoreReport,
    /// The base it started from, if any (a start over starts from it too).
    base: Option<Arc<SessionBase>>,
}

impl std::fmt::Debug for Restoring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restoring")
            .field("position", &self.session.durable_entries)
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

impl Restoring {
    /// A restore that starts from `fresh`, from `base` if given, with `snapshot` to check.
    fn start(
        fresh: Fresh,
        base: Option<Arc<SessionBase>>,
        snapshot: Option<SessionSnapshot>,
    ) -> Self {
        let (config, seed, now_ms) = (fresh.0.clone(), fresh.1, fresh.2);
        let mut restoring = Self {
            session: Session::new(config, seed, now_ms),
            fresh,
            base,
            statuses: snapshot
                .as_ref()
                .map(|s| s.non_applied.iter().copied().collect())
                .unwrap_or_default(),
            snapshot,
            covered: Vec::new(),
            report: RestoreReport {
                from_snapshot: 0,
                replayed: 0,
                snapshot_rejected: false,
            },
        };
        restoring.session = restoring.fresh_session();
        restoring
    }

    fn fresh_session(&self) -> Session {
        let (config, seed, now_ms, authors, assets) = &self.fresh;
        let mut s = Session::new(config.clone(), *seed, *now_ms);
        for (id, asset) in assets {
            s.provide_asset(*id, asset.clone());
        }
        for a in authors {
            // Keys were valid when stored; a record that no longer parses is skipped and its
            // entries will fail to replay, which reports the corruption.
            if s.log
                .keys_mut()
                .register(a.author, a.public_key, a.role)
                .is_ok()
            {
                s.authors_by_key.insert(a.public_key, a.author);
                s.next_author = s.next_author.max(a.author.0.saturating_add(1));
            }
        }
        if let Some(base) = &self.base {
            let keys = std::mem::replace(s.log.keys_mut(), KeyRing::new());
            s.log = CommandLog::from_base(config.session, keys, &base.log, &base.held);
            let mut scene = match &base.history {
                Some(history) => base.scene.clone().with_history_of(history.clone()),
                None => base.scene.clone().with_history(),
            };
            for (id, asset) in assets {
                scene.provide_asset(*id, asset.clone());
            }
            s.accepted = scene.clone();
            s.scene = scene;
            s.durable_entries = base.position;
            s.stored = base.stored.clone();
            s.roles_set = base.roles_set.iter().copied().collect();
        }
        s
    }

    /// Where the replay stands: the entries restored so far (a base's included).
    #[must_use]
    pub const fn position(&self) -> u64 {
        self.session.durable_entries
    }

    /// The session's state after the entries pushed so far, with the entries its log still
    /// holds: the base a store restarts from once they are rotated out
    /// ([`Session::restoring_from`]).
    ///
    /// # Errors
    /// [`RestoreError`] when a snapshot was pending and replaying from the start fails.
    pub fn base(mut self) -> Result<SessionBase, RestoreError> {
        if self.snapshot.is_some() {
            self.reject_snapshot(None)?;
        }
        let session = self.session;
        let (log, held) = session.log.base();
        let history = session.scene.history().cloned();
        Ok(SessionBase {
            position: session.durable_entries,
            log,
            scene: session.scene,
            roles_set: session.roles_set.into_iter().collect(),
            stored: session.stored,
            held,
            history,
        })
    }

    /// The next stored entry, in acceptance order.
    ///
    /// # Errors
    /// [`RestoreError`] when it does not replay (a corrupt or foreign store).
    pub fn push(&mut self, e: SignedEntry) -> Result<(), RestoreError> {
        if let Some(position) = self.snapshot.as_ref().map(|s| s.position) {
            let status = e
                .decode_body()
                .ok()
                .and_then(|b| self.statuses.get(&b.id()).copied())
                .unwrap_or(Status::Applied);
            if self
                .session
                .log
                .restore_resolved(e.clone(), status)
                .is_err()
            {
                return self.reject_snapshot(Some(e));
            }
            self.session.apply_to_scene(&e);
            self.note_restored((self.covered.len() as u64).saturating_add(1), &e);
            self.covered.push(e);
            if self.covered.len() as u64 == position {
                return self.close_snapshot();
            }
            return Ok(());
        }
        self.replay(e)
    }

    /// The snapshot's entries are all in: keep them if its hash checks out, else start over.
    fn close_snapshot(&mut self) -> Result<(), RestoreError> {
        let Some(snap) = &self.snapshot else {
            return Ok(());
        };
        if self.session.log.resolution_digest() != snap.digest {
            return self.reject_snapshot(None);
        }
        self.report.from_snapshot = snap.position;
        self.session.durable_entries = snap.position;
        self.snapshot = None;
        self.covered = Vec::new();
        self.statuses = BTreeMap::new();
        self.let_go();
        Ok(())
    }

    /// The snapshot does not match the log: everything from the start is replayed instead.
    fn reject_snapshot(&mut self, next: Option<SignedEntry>) -> Result<(), RestoreError> {
        self.snapshot = None;
        self.statuses = BTreeMap::new();
        self.report.snapshot_rejected = true;
        self.session = self.fresh_session();
        for e in std::mem::take(&mut self.covered) {
            self.replay(e)?;
        }
        next.map_or(Ok(()), |e| self.replay(e))
    }

    fn replay(&mut self, e: SignedEntry) -> Result<(), RestoreError> {
        let position = self.session.durable_entries.saturating_add(1);
        self.session
            .log
            .replay_trusted(e.clone())
            .map_err(|refusal| RestoreError { position, refusal })?;
        self.session.apply_to_scene(&e);
        self.note_restored(position, &e);
        self.session.durable_entries = position;
        self.report.replayed = self.report.replayed.saturating_add(1);
        // Letting go in steps of an eighth of the window keeps the cost per entry constant.
        let window = self.session.config.log_window;
        if self.session.log.held() > window.saturating_add(window / 8) {
            self.let_go();
        }
        Ok(())
    }

    /// `position`: the entry's place in the store.
    fn note_restored(&mut self, position: u64, e: &SignedEntry) {
        let Ok(body) = e.decode_body() else {
            return;
        };
        self.session.stored.note(position, body.lamport);
        if let Command::SetRole { author, .. } = body.command {
            self.session.roles_set.insert(author);
        }
    }

    fn let_go(&mut self) {
        let window = self.session.config.log_window;
        self.session.log.let_go(window, &|_| false);
    }

    /// The rebuilt session.
    ///
    /// # Errors
    /// [`RestoreError`] when the entries ended before a snapshot's position and replaying
    /// them from the start fails.
    pub fn finish(mut self) -> Result<(Session, RestoreReport), RestoreError> {
        if self.snapshot.is_some() {
            // The store holds fewer entries than the snapshot covers.
            self.reject_snapshot(None)?;
        }
        self.let_go();
        let mut session = self.session;
        session.fanout_from = session.scene.position;
        // A restore replays from the start or from a snapshot: the window holds what the
        // replayed entries touched, so clients that reconnect after a restart resume too.
        session.accepted = session.scene.clone();
        Ok((session, self.report))
    }
}

/// What each of the latest durable entries touched (at most `limit`), oldest first; the first
/// is the entry after position `from`.
#[derive(Debug)]
struct Recent {
    touched: VecDeque<Vec<meshwork_protocol::scene::Touched>>,
    from: u64,
    limit: usize,
}

impl Recent {
    const fn new(limit: usize) -> Self {
        Self {
            touched: VecDeque::new(),
            from: 0,
            limit,
        }
    }

    /// Records what the durable entry that brought the scene to `position` touched.
    fn remember(&mut self, touched: Vec<meshwork_protocol::scene::Touched>, position: u64) {
        self.touched.push_back(touched);
        while self.touched.len() > self.limit {
            self.touched.pop_front();
            self.from = self.from.saturating_add(1);
        }
        // An entry that did not move the scene on (none today) would break the arithmetic:
        // start again from the scene's position.
        if self.from.saturating_add(self.touched.len() as u64) != position {
            self.touched.clear();
            self.from = position;
        }
    }

    /// Everything touched from position `from` to `now`, if the window covers it.
    fn since(&self, from: u64, now: u64) -> Option<BTreeSet<meshwork_protocol::scene::Touched>> {
        if from > now || from < self.from {
            return None;
        }
        let skip = usize::try_from(from.saturating_sub(self.from)).ok()?;
        Some(self.touched.iter().skip(skip).flatten().copied().collect())
    }
}

/// Token bucket on the input clock, for a rate per second or per minute (fixed when made).
/// Tokens are counted in `unit`s (a token is 1000 of them for a rate per second, 60,000 for a
/// rate per minute), and every millisecond adds `rate` units, so refills are exact.
#[derive(Clone, Copy, Debug)]
struct TokenBucket {
    units: u64,
    unit: u64,
    last_ms: u64,
}

impl TokenBucket {
    /// Full, for a rate per second.
    fn full(burst: u32, now_ms: u64) -> Self {
        Self::full_of(burst, 1000, now_ms)
    }

    /// Full, for a rate per minute.
    fn full_per_min(burst: u32, now_ms: u64) -> Self {
        Self::full_of(burst, 60_000, now_ms)
    }

    fn full_of(burst: u32, unit: u64, now_ms: u64) -> Self {
        Self {
            units: u64::from(burst).saturating_mul(unit),
            unit,
            last_ms: now_ms,
        }
    }

    /// Refills for the time passed at `rate` (per second or per minute, as the bucket was
    /// made), then takes one token if there is one.
    fn take(&mut self, now_ms: u64, rate: u32, burst: u32) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        let cap = u64::from(burst).saturating_mul(self.unit);
        self.units = self
            .units
            .saturating_add(elapsed.saturating_mul(u64::from(rate)))
            .min(cap);
        if self.units >= self.unit {
            self.units = self.units.saturating_sub(self.unit);
            true
        } else {
            false
        }
    }

    /// When [`TokenBucket::take`] at `rate` will next succeed.
    fn ready_at(&self, rate: u32) -> u64 {
        let missing = self.unit.saturating_sub(self.units);
        self.last_ms
            .saturating_add(missing.div_ceil(u64::from(rate.max(1))))
    }
}

/// The one way the durable scene changes: the snapshot cached for the old position goes with it
/// (fields, not `&mut Session`, so callers can hold the log entry they apply).
fn apply_durable(
    scene: &mut Scene,
    snapshot_frames: &mut Option<CachedSnapshot>,
    id: meshwork_protocol::CommandId,
    author: AuthorId,
    command: &Command,
) {
    scene.apply(id, author, command);
    *snapshot_frames = None;
}

/// A position's snapshot frames (manifest, then chunks), encoded once and shared by every join
/// and resync at that position.
#[derive(Debug)]
struct CachedSnapshot {
    position: u64,
    /// The scene's encoding, before compression.
    scene_bytes: usize,
    frames: Vec<Arc<[u8]>>,
}

#[derive(Debug)]
struct Client {
    phase: Phase,
    connected_ms: u64,
    /// Between `Hello` and the proof: the key to prove, the invited role and the nonce.
    pending: Option<(PublicKey, Role, [u8; 32], InviteBody)>,
    author: Option<AuthorId>,
    /// `Resync` and `FetchLog` rate limits: a snapshot owed, and where the rest of a
    /// `FetchLog` answer starts (after this Lamport time).
    resyncs: TokenBucket,
    resync_due: bool,
    histories: TokenBucket,
    history_from: Option<u64>,
    /// A history page being read from the store: its request number and Lamport range
    /// `(since, up_to]`. No other page goes out meanwhile.
    history_read: Option<(u64, u64, u64)>,
    /// The dictionary its unreliable-lane packs are written with, once it sent `Codecs`.
    packs: Option<u32>,
    /// The region it wants the presence lane of (`None`: everywhere).
    interest: Option<meshwork_protocol::interest::Region>,
    /// The part of the scene it holds (`None`: all of it): [`crate::held`].
    hold: Option<HoldState>,
    /// `Hold` changes after the join, at most [`HOLDS_PER_S`] a second (bursts of
    /// [`HOLD_BURST`]); one over the limit waits here (the latest wins) until a token comes.
    holds: TokenBucket,
    hold_due: Option<Option<meshwork_protocol::interest::Region>>,
}

/// `Hold` changes a joined connection may make at once before [`HOLDS_PER_S`] applies: each
/// costs a grid query and the states of what comes into view.
pub const HOLD_BURST: u32 = 8;
/// `Hold` changes a joined connection may make per second (a view followed by
/// `ClientConnection::follow_hold` asks again only after moving a quarter of its half-edge).
pub const HOLDS_PER_S: u32 = 10;

/// The place of a relayed message from its points: everywhere when it has none.
fn place_of(points: impl IntoIterator<Item = [i32; 3]>) -> Place {
    let points: Vec<[i32; 3]> = points.into_iter().collect();
    if points.is_empty() {
        Place::Everywhere
    } else {
        Place::At(points)
    }
}

/// `Resync` snapshots a connection may ask for at once before [`Config::resync_per_min`] applies.
pub const RESYNC_BURST: u32 = 3;
/// `FetchLog` pages a connection may get at once before [`Config::history_per_min`] applies.
pub const HISTORY_BURST: u32 = 8;

#[derive(Debug)]
struct Pending {
    entries: Vec<(AuthorId, u64, meshwork_protocol::CommandId)>,
}

/// The authoritative state of one session.
#[derive(Debug)]
pub struct Session {
    config: Config,
    log: CommandLog,
    now_ms: u64,
    seed: [u8; 32],
    nonces_drawn: u64,
    clients: BTreeMap<ClientId, Client>,
    /// Public key → author id: a key that rejoins keeps its id and its sequence numbers.
    authors_by_key: BTreeMap<PublicKey, AuthorId>,
    connection_of: BTreeMap<AuthorId, ClientId>,
    buckets: BTreeMap<AuthorId, TokenBucket>,
    next_author: u32,
    next_batch: u64,
    /// Accepted, not yet durable: not acknowledged, not fanned out, not in catch-ups.
    in_flight: BTreeMap<BatchId, Pending>,
    in_flight_ids: BTreeSet<meshwork_protocol::CommandId>,
    /// Where in the store entries of a Lamport range are (for history the log let go of).
    stored: StoredLamports,
    /// `FetchLog` store reads issued (numbers them).
    history_requests: u64,
    outputs: VecDeque<Output>,
    /// The durable scene, in acceptance order.
    scene: Scene,
    /// The scene with every accepted entry applied, durable or not: what a new command is
    /// checked against (acceptance order is durable order, so it runs ahead of `scene` by the
    /// batches in flight and equals it when none are).
    accepted: Scene,
    /// Position of the last broadcast state hash, and when.
    hashed_position: u64,
    last_hash_ms: u64,
    /// The frames of the last snapshot sent and the scene position they show: joins and
    /// resyncs at one position share one encoding (dropped when the scene moves on).
    snapshot_frames: Option<CachedSnapshot>,
    /// Per author: the connection whose presence sequence is followed, its last relayed
    /// sequence number, and the author's presence rate limiter (kept across connections).
    presence: BTreeMap<AuthorId, (ClientId, u32, TokenBucket)>,
    /// What packing clients are owed on the unreliable lane this tick.
    packs: crate::pack::Packs,
    /// Each author's last presence update alone, as relayed, and where it is.
    last_figure: BTreeMap<AuthorId, (Arc<[u8]>, Place)>,
    /// (client with a region, author) pairs whose last presence sent to the client was inside
    /// its region: the author's step out of it is sent too, once, so their avatar is not left
    /// frozen at the edge.
    in_view: BTreeSet<(ClientId, AuthorId)>,
    /// Authors to write with the next persistence batch.
    pending_authors: Vec<AuthorRecord>,
    /// Invites with limits or uses, by id (see [`InviteRecord`]).
    invites: BTreeMap<[u8; 16], InviteRecord>,
    /// Invites changed since the last persistence batch.
    invites_changed: BTreeSet<[u8; 16]>,
    /// Members whose role an admin set ([`Command::SetRole`] in the log): their role is the
    /// key ring's, whatever invite they join with next.
    roles_set: BTreeSet<AuthorId>,
    /// Entries in acknowledged batches: the durable prefix of the acceptance order.
    durable_entries: u64,
    /// What the pending fan-out touched, and the scene position before it (for deltas).
    fanout_touched: BTreeSet<meshwork_protocol::scene::Touched>,
    fanout_from: u64,
    /// What the latest durable entries touched, for resumes.
    recent: Recent,
    /// The pending fan-out holds an undo or redo: it must go out as a delta.
    fanout_needs_delta: bool,
    /// When entries became durable (Unix ms), for the history's times.
    entry_ms: BTreeMap<meshwork_protocol::CommandId, (u64, bool)>,
    /// Durable entries not yet fanned out, and their batches.
    fanout: Vec<SignedEntry>,
    fanout_batches: Vec<BatchId>,
    /// Beside `fanout` once a client holds part of the scene: how each entry reaches partial
    /// replicas and what it touched.
    fanout_scopes: Vec<(Scope, Vec<meshwork_protocol::scene::Touched>)>,
    /// The spatial hash grid of the durable scene, from the first `Hold` on.
    grid: Option<Grid>,
    shut_down: bool,
}

impl Session {
    /// A new, empty session. `seed` is secret randomness for challenge nonces; `now_ms` the
    /// current Unix time in milliseconds.
    #[must_use]
    pub fn new(config: Config, seed: [u8; 32], now_ms: u64) -> Self {
        let resume_window = config.resume_window;
        let log = CommandLog::new(Mode::Authority, config.session, KeyRing::new());
        Self {
            config,
            log,
            now_ms,
            seed,
            nonces_drawn: 0,
            clients: BTreeMap::new(),
            authors_by_key: BTreeMap::new(),
            connection_of: BTreeMap::new(),
            buckets: BTreeMap::new(),
            next_author: 1,
            next_batch: 0,
            in_flight: BTreeMap::new(),
            in_flight_ids: BTreeSet::new(),
            stored: StoredLamports::default(),
            history_requests: 0,
            outputs: VecDeque::new(),
            // Both keep the undo history: it is derived from the entries, so a restart rebuilds
            // it by replaying them.
            scene: Scene::new().with_history(),
            accepted: Scene::new().with_history(),
            hashed_position: 0,
            last_hash_ms: now_ms,
            presence: BTreeMap::new(),
            packs: crate::pack::Packs::new(),
            last_figure: BTreeMap::new(),
            in_view: BTreeSet::new(),
            snapshot_frames: None,
            pending_authors: Vec::new(),
            roles_set: BTreeSet::new(),
            invites: BTreeMap::new(),
            invites_changed: BTreeSet::new(),
            durable_entries: 0,
            fanout_touched: BTreeSet::new(),
            fanout_from: 0,
            recent: Recent::new(resume_window),
            fanout_needs_delta: false,
            entry_ms: BTreeMap::new(),
            fanout: Vec::new(),
            fanout_batches: Vec::new(),
            fanout_scopes: Vec::new(),
            grid: None,
            shut_down: false,
        }
    }

    /// The session's id.
    #[must_use]
    pub const fn id(&self) -> SessionId {
        self.config.session
    }

    /// The command log.
    #[must_use]
    pub const fn log(&self) -> &CommandLog {
        &self.log
    }

    /// Connections, joined or joining.
    #[must_use]
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Every member (each key ever admitted), by author id: role as it now stands, the display
    /// name they signed, and whether they are connected now.
    #[must_use]
    pub fn members(&self) -> Vec<MemberInfo> {
        let mut out: Vec<MemberInfo> = self
            .authors_by_key
            .values()
            .filter_map(|author| {
                let role = self.log.keys().role(*author)?;
                Some(MemberInfo {
                    author: *author,
                    role,
                    name: self.scene.display_name(*author).map(str::to_owned),
                    connected: self.connection_of.contains_key(author),
                    role_set_by_admin: self.roles_set.contains(author),
                })
            })
            .collect();
        out.sort_by_key(|m| m.author);
        out
    }

    /// Joined connections.
    #[must_use]
    pub fn joined_count(&self) -> usize {
        self.clients
            .values()
            .filter(|c| c.phase == Phase::Joined)
            .count()
    }

    /// Batches emitted and not yet acknowledged.
    #[must_use]
    pub fn batches_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Entries made durable so far (the store's count for this session).
    #[must_use]
    pub const fn durable_entries(&self) -> u64 {
        self.durable_entries
    }

    /// Every known author.
    #[must_use]
    pub fn authors(&self) -> Vec<AuthorRecord> {
        self.authors_by_key
            .iter()
            .filter_map(|(key, author)| {
                self.log.keys().role(*author).map(|role| AuthorRecord {
                    author: *author,
                    public_key: *key,
                    role,
                })
            })
            .collect()
    }

    /// A snapshot of the durable state, or `None` while batches are in flight (the state then
    /// includes entries that are not durable yet; ask again after the acks).
    #[must_use]
    pub fn snapshot(&self) -> Option<SessionSnapshot> {
        // A snapshot names the status of every entry it covers; once the log let go of some,
        // a restore replays instead.
        if !self.in_flight.is_empty() || self.log.let_go_count() > 0 {
            return None;
        }
        Some(SessionSnapshot {
            position: self.durable_entries,
            digest: self.log.resolution_digest(),
            authors: self.authors(),
            non_applied: self.log.non_applied(),
        })
    }

    /// Makes an uploaded asset available to [`Command::Import`]s (both
    /// scenes); an import of an asset not given is refused.
    pub fn provide_asset(&mut self, id: AssetId, asset: Arc<ImportAsset>) {
        self.scene.provide_asset(id, asset.clone());
        self.accepted.provide_asset(id, asset);
    }

    /// Rebuilds a session from its store: `authors` (in write order), `assets` (every asset
    /// stored for the session), the newest `snapshot` if any, and every stored entry in
    /// acceptance order. Entries covered by a snapshot whose hash checks out are restored as
    /// resolved; the rest are replayed through the log's checks. [`Session::restoring`] does the
    /// same one entry at a time, without holding them all.
    ///
    /// # Errors
    /// [`RestoreError`] when a stored entry does not replay (a corrupt or foreign store).
    #[allow(
        clippy::too_many_arguments,
        reason = "everything a store holds for a session, side by side"
    )]
    pub fn restore(
        config: Config,
        seed: [u8; 32],
        now_ms: u64,
        authors: &[AuthorRecord],
        assets: &[(AssetId, Arc<ImportAsset>)],
        snapshot: Option<&SessionSnapshot>,
        entries: Vec<SignedEntry>,
    ) -> Result<(Self, RestoreReport), RestoreError> {
        let mut restoring = Self::restoring(config, seed, now_ms, authors, assets, snapshot);
        for e in entries {
            restoring.push(e)?;
        }
        restoring.finish()
    }

    /// Starts rebuilding a session from its store, entries to follow one at a time in
    /// acceptance order ([`Restoring::push`]); see [`Session::restore`]. The log lets go of
    /// entries beyond [`Config::log_window`] as they replay, so a long history restores in the
    /// memory of its window.
    #[must_use]
    pub fn restoring(
        config: Config,
        seed: [u8; 32],
        now_ms: u64,
        authors: &[AuthorRecord],
        assets: &[(AssetId, Arc<ImportAsset>)],
        snapshot: Option<&SessionSnapshot>,
    ) -> Restoring {
        let mut restoring = Restoring::start(
            (config, seed, now_ms, authors.to_vec(), assets.to_vec()),
            None,
            snapshot.cloned(),
        );
        if restoring.snapshot.as_ref().is_some_and(|s| s.position == 0) {
            // Nothing to replay yet, so starting over cannot fail.
            let _ = restoring.close_snapshot();
        }
        restoring
    }

    /// Starts rebuilding a session from a [`SessionBase`] (its store's history before it was
    /// rotated out), the entries after it to follow ([`Restoring::push`]). Authors and assets
    /// as for [`Session::restoring`].
    #[must_use]
    pub fn restoring_from(
        config: Config,
        seed: [u8; 32],
        now_ms: u64,
        authors: &[AuthorRecord],
        assets: &[(AssetId, Arc<ImportAsset>)],
        base: SessionBase,
    ) -> Restoring {
        Restoring::start(
            (config, seed, now_ms, authors.to_vec(), assets.to_vec()),
            Some(Arc::new(base)),
            None,
        )
    }

    /// The next output, in the order they must be carried out.
    ///
    /// Fan-out of durable entries comes last: it is emitted once everything else queued has
    /// been taken (see `flush_fanout`).
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.outputs.is_empty() {
            self.flush_fanout();
        }
        self.outputs.pop_front()
    }

    /// When to feed the next [`Input::Tick`], in Unix milliseconds, if anything is waiting on
    /// time (a handshake deadline).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        let handshakes = self
            .clients
            .values()
            .filter(|c| matches!(c.phase, Phase::AwaitingHello | Phase::AwaitingProof))
            .map(|c| {
                c.connected_ms
                    .saturating_add(self.config.handshake_timeout_ms)
            })
            .min();
        // The periodic state hash, while anyone is joined: it is how a replica that missed
        // entries notices (even when nothing changes any more).
        let hash = self
            .clients
            .values()
            .any(|c| c.phase == Phase::Joined)
            .then(|| {
                self.last_hash_ms
                    .saturating_add(self.config.state_hash_interval_ms)
            });
        [handshakes, hash, self.deferred_due(), self.packs.due()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The authoritative scene (durable entries only).
    #[must_use]
    pub const fn scene(&self) -> &Scene {
        &self.scene
    }

    /// Feeds one input at time `now_ms` (Unix milliseconds; a clock going backwards is
    /// treated as standing still).
    pub fn handle_input(&mut self, now_ms: u64, input: Input) {
        self.now_ms = self.now_ms.max(now_ms);
        match input {
            Input::Connected { client } => self.on_connected(client),
            Input::Payload { client, bytes } => self.on_payload(client, &bytes),
            Input::VerifiedSubmit {
                client,
                entries,
                signed_by,
                session,
            } => {
                if let Some(phase) = self.clients.get(&client).map(|c| c.phase)
                    && phase != Phase::Closing
                {
                    let msg = ClientMsg::Submit(wire::Submit { entries });
                    let signed_by = (session == self.config.session).then_some(signed_by);
                    self.on_message(client, phase, msg, signed_by);
                }
            }
            Input::BadFrame { client, error } => {
                let reason = match error {
                    FrameError::TooLarge { .. } => "frame_too_large",
                    _ => "bad_frame",
                };
                self.violation(client, reason, &format!("bad frame: {error}"));
            }
            Input::Datagram { client, bytes } => {
                let joined = self
                    .clients
                    .get(&client)
                    .is_some_and(|c| c.phase == Phase::Joined);
                match (joined, decode_payload::<ClientMsg>(&bytes)) {
                    (true, Ok(ClientMsg::Presence(p))) => self.on_presence(client, p),
                    (true, Ok(ClientMsg::Preview(p))) => self.on_preview(client, p),
                    (true, Ok(ClientMsg::EditPreview(p))) => self.on_edit_preview(client, p),
                    (true, Ok(ClientMsg::ElementSelection(s))) => {
                        self.on_element_selection(client, s);
                    }
                    (true, Ok(ClientMsg::Motion(m))) => self.on_motion(client, m),
                    _ => self.emit(Output::Event(Event::PresenceDropped)),
                }
            }
            Input::Disconnected { client } => self.forget(client),
            Input::Backpressure { client } => {
                // Counted once per connection (more reports may come while it closes).
                if self
                    .clients
                    .get(&client)
                    .is_some_and(|c| c.phase != Phase::Closing)
                {
                    self.emit(Output::Event(Event::TooSlow { client }));
                }
                self.close(
                    client,
                    CloseReason::TooSlow,
                    "you fell too far behind the session; reconnect to resync",
                );
            }
            Input::PersistAck { batch } => self.on_persisted(batch),
            Input::Tick => self.on_tick(),
            Input::Shutdown => self.on_shutdown(),
            Input::Invite(record) => {
                let id = record.invite;
                let held = self.invites.entry(id).or_insert_with(|| record.clone());
                held.max_keys = record.max_keys;
                held.role = record.role;
                held.expires_at_ms = record.expires_at_ms;
                self.invites_changed.insert(id);
                self.emit_persist(Vec::new(), Vec::new());
            }
            Input::RevokeInvite { invite } => self.revoke_invite(invite),
            Input::Stored {
                client,
                request,
                entries,
            } => self.on_stored(client, request, entries),
        }
        self.flush_packs();
    }

    fn emit(&mut self, output: Output) {
        self.outputs.push_back(output);
    }

    fn send(&mut self, client: ClientId, msg: &ServerMsg) {
        match to_frame(msg) {
            Ok(frame) => self.emit(Output::Send {
                client,
                lane: Lane::Reliable,
                frame: frame.into(),
            }),
            // Only an oversized message fails; the senders below keep messages small
            // (catch-up is chunked), so this is a bug worth seeing in the logs, not a panic.
            Err(e) => self.close(
                client,
                CloseReason::ProtocolViolation,
                &format!("server bug: {e}"),
            ),
        }
    }

    fn close(&mut self, client: ClientId, reason: CloseReason, message: &str) {
        if self
            .clients
            .get(&client)
            .is_none_or(|c| c.phase == Phase::Closing)
        {
            return;
        }
        self.send(
            client,
            &ServerMsg::Close(Close {
                reason,
                message: message.into(),
            }),
        );
        self.emit(Output::Close { client, reason });
        if let Some(c) = self.clients.get_mut(&client) {
            c.phase = Phase::Closing;
        }
        self.unbind(client);
    }

    fn violation(&mut self, client: ClientId, reason: &'static str, message: &str) {
        if self
            .clients
            .get(&client)
            .is_none_or(|c| c.phase == Phase::Closing)
        {
            return;
        }
        self.emit(Output::Event(Event::ProtocolViolation { client, reason }));
        self.close(client, CloseReason::ProtocolViolation, message);
    }

    /// Detaches the author from a connection that is closing or gone. When it was the author's
    /// connection (not one a rejoin replaced), the others are told they left.
    fn unbind(&mut self, client: ClientId) {
        self.packs.forget(client);
        self.in_view.retain(|(c, _)| *c != client);
        let author = self.clients.get_mut(&client).and_then(|c| c.author.take());
        if let Some(author) = author
            && self.connection_of.get(&author) == Some(&client)
        {
            self.connection_of.remove(&author);
            self.last_figure.remove(&author);
            self.in_view.retain(|(_, a)| *a != author);
            let left = ServerMsg::Left(wire::Left { author });
            for other in self.joined_except(client) {
                self.send(other, &left);
            }
        }
    }

    /// Every joined client but `client`.
    fn joined_except(&self, client: ClientId) -> Vec<ClientId> {
        self.clients
            .iter()
            .filter(|(id, c)| **id != client && c.phase == Phase::Joined)
            .map(|(id, _)| *id)
            .collect()
    }

    fn forget(&mut self, client: ClientId) {
        self.unbind(client);
        self.clients.remove(&client);
    }

    fn on_connected(&mut self, client: ClientId) {
        let full = self.clients.len() >= self.config.max_clients;
        self.clients.insert(
            client,
            Client {
                phase: Phase::AwaitingHello,
                connected_ms: self.now_ms,
                pending: None,
                author: None,
                resyncs: TokenBucket::full_per_min(RESYNC_BURST, self.now_ms),
                resync_due: false,
                histories: TokenBucket::full_per_min(HISTORY_BURST, self.now_ms),
                history_from: None,
                history_read: None,
                packs: None,
                interest: None,
                hold: None,
                holds: TokenBucket::full(HOLD_BURST, self.now_ms),
                hold_due: None,
            },
        );
        if self.shut_down {
            self.close(
                client,
                CloseReason::ServerShutdown,
                "the server is shutting down",
            );
        } else if full {
            self.refuse_join(
                client,
                JoinRefusal::SessionFull,
                "the session is full".into(),
            );
        }
    }

    fn on_payload(&mut self, client: ClientId, bytes: &[u8]) {
        let Some(phase) = self.clients.get(&client).map(|c| c.phase) else {
            return;
        };
        if phase == Phase::Closing {
            return;
        }
        let msg = match decode_payload::<ClientMsg>(bytes) {
            Ok(msg) => msg,
            Err(e) => {
                // A Hello from another protocol version cannot be decoded; say which versions
                // we speak instead of a bare violation.
                if phase == Phase::AwaitingHello
                    && let Some(v) = peek_hello_version(bytes)
                    && v != PROTOCOL_VERSION
                {
                    self.refuse_version(client, v);
                    return;
                }
                self.violation(client, "undecodable", &format!("undecodable message: {e}"));
                return;
            }
        };
        self.on_message(client, phase, msg, None);
    }

    /// A decoded message from a connection in `phase` (not closing); for a `Submit`, the key
    /// the glue found every entry signed by, if it checked ([`Input::VerifiedSubmit`]).
    fn on_message(
        &mut self,
        client: ClientId,
        phase: Phase,
        msg: ClientMsg,
        signed_by: Option<PublicKey>,
    ) {
        // 1. Phase check: one exhaustive table in the protocol crate.
        if !msg.allowed_in(phase) {
            self.violation(
                client,
                "out_of_phase",
                &format!("message not allowed while {phase:?}"),
            );
            return;
        }
        match msg {
            ClientMsg::Hello(hello) => self.on_hello(client, hello),
            ClientMsg::JoinProof(proof) => self.on_proof(client, &proof.signature, None),
            ClientMsg::Resume(r) => self.on_proof(client, &r.signature, Some(r.position)),
            ClientMsg::Submit(submit) => self.on_submit(client, submit.entries, signed_by),
            ClientMsg::Ping(ping) => {
                self.send(client, &ServerMsg::Pong(Pong { nonce: ping.nonce }))
            }
            ClientMsg::Resync(_) => self.on_resync(client),
            ClientMsg::FetchLog(f) => self.on_fetch_log(client, f.since_lamport),
            ClientMsg::Presence(p) => self.on_presence(client, p),
            ClientMsg::Preview(p) => self.on_preview(client, p),
            ClientMsg::EditPreview(p) => self.on_edit_preview(client, p),
            ClientMsg::ElementSelection(s) => self.on_element_selection(client, s),
            ClientMsg::Motion(m) => self.on_motion(client, m),
            ClientMsg::Interest(i) => self.on_interest(client, i),
            ClientMsg::Hold(h) => self.on_hold(client, phase, h.region),
            ClientMsg::Codecs(c) => {
                let chosen = self.packs.choose(&c.dictionaries);
                if let Some(state) = self.clients.get_mut(&client) {
                    state.packs = chosen;
                }
            }
            ClientMsg::Close(_) => {
                if let Some(c) = self.clients.get_mut(&client) {
                    c.phase = Phase::Closing;
                }
                self.unbind(client);
                self.emit(Output::Close {
                    client,
                    reason: CloseReason::Leaving,
                });
            }
        }
    }

    fn refuse_version(&mut self, client: ClientId, got: u16) {
        let message = format!(
            "this server speaks Meshwork protocol version {}; your client speaks version {got}. \
             Update the client (or the server) so that they match.",
            wire::SUPPORTED_VERSIONS
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.refuse_join(
            client,
            JoinRefusal::UnsupportedVersion {
                supported: wire::SUPPORTED_VERSIONS.to_vec(),
            },
            message,
        );
    }

    fn refuse_join(&mut self, client: ClientId, reason: JoinRefusal, message: String) {
        self.emit(Output::Event(Event::JoinRefused {
            client,
            reason: reason.clone(),
        }));
        self.send(
            client,
            &ServerMsg::JoinRefused(JoinRefused {
                reason,
                message: message.clone(),
            }),
        );
        self.close(client, CloseReason::ProtocolViolation, &message);
    }

    fn next_nonce(&mut self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"meshwork challenge nonce");
        h.update(self.seed);
        h.update(self.nonces_drawn.to_le_bytes());
        self.nonces_drawn = self.nonces_drawn.saturating_add(1);
        h.finalize().into()
    }

    fn on_hello(&mut self, client: ClientId, hello: Hello) {
        if hello.protocol_version != PROTOCOL_VERSION {
            self.refuse_version(client, hello.protocol_version);
            return;
        }
        if meshwork_protocol::sign::verifying_key(&hello.public_key).is_err() {
            self.refuse_join(
                client,
                JoinRefusal::BadKey,
                "your public key is invalid".into(),
            );
            return;
        }
        let invite =
            match hello
                .invite
                .verify(&self.config.server_key, self.config.session, self.now_ms)
            {
                Ok(body) => body,
                Err(e) => {
                    let reason = match e {
                        InviteError::Expired => JoinRefusal::InviteExpired,
                        InviteError::Malformed
                        | InviteError::BadSignature
                        | InviteError::WrongSession => JoinRefusal::InvalidInvite,
                    };
                    let message = format!("{e}; ask an admin of the session for a new invite");
                    self.refuse_join(client, reason, message);
                    return;
                }
            };
        if self
            .invites
            .get(&invite.invite_id)
            .is_some_and(|r| r.revoked_at_ms.is_some())
        {
            self.refuse_join(
                client,
                JoinRefusal::InviteRevoked,
                "an admin revoked this invite; ask an admin of the session for a new one".into(),
            );
            return;
        }
        let nonce = self.next_nonce();
        if let Some(c) = self.clients.get_mut(&client) {
            c.phase = Phase::AwaitingProof;
            c.pending = Some((hello.public_key, invite.role, nonce, invite));
        }
        let server_build_id = self.config.build_id.clone();
        self.send(
            client,
            &ServerMsg::Challenge(Challenge {
                nonce,
                server_build_id,
            }),
        );
    }

    fn on_proof(
        &mut self,
        client: ClientId,
        signature: &meshwork_protocol::sign::Signature,
        resume: Option<u64>,
    ) {
        let Some((public_key, role, nonce, invite)) =
            self.clients.get_mut(&client).and_then(|c| c.pending.take())
        else {
            return;
        };
        let body = JoinProofBody {
            domain: Domain::JoinProof,
            version: PROTOCOL_VERSION,
            session: self.config.session,
            nonce,
            public_key,
        };
        if body.verify(signature).is_err() {
            self.refuse_join(
                client,
                JoinRefusal::BadProof,
                "the proof of key possession does not verify".into(),
            );
            return;
        }
        let author = match self.authors_by_key.get(&public_key) {
            Some(a) => *a,
            None if self.authors_by_key.len() >= self.config.max_authors => {
                // Members are never forgotten (their entries stay verifiable), so every new key
                // costs the session for good: one invite must not admit keys without end.
                let most = self.config.max_authors;
                self.refuse_join(
                    client,
                    JoinRefusal::SessionFull,
                    format!("the session has its most members ({most} keys); a known key can still rejoin"),
                );
                return;
            }
            None => {
                // A new key uses one of the invite's admissions.
                let limit = self
                    .invites
                    .get(&invite.invite_id)
                    .and_then(|r| r.max_keys)
                    .unwrap_or(self.config.max_keys_per_invite);
                let used = self
                    .invites
                    .get(&invite.invite_id)
                    .map_or(0, |r| r.keys.len());
                if used >= usize::try_from(limit).unwrap_or(usize::MAX) {
                    let people = if limit == 1 {
                        "one person".to_owned()
                    } else {
                        format!("{limit} people")
                    };
                    self.refuse_join(
                        client,
                        JoinRefusal::InviteUsedUp,
                        format!(
                            "this invite admits {people} and has been used that often; ask an admin of the session for a new invite"
                        ),
                    );
                    return;
                }
                let a = AuthorId(self.next_author);
                self.next_author = self.next_author.saturating_add(1);
                self.authors_by_key.insert(public_key, a);
                self.invites
                    .entry(invite.invite_id)
                    .or_insert_with(|| InviteRecord {
                        invite: invite.invite_id,
                        role: invite.role,
                        expires_at_ms: invite.expires_at_ms,
                        max_keys: None,
                        revoked_at_ms: None,
                        keys: Vec::new(),
                    })
                    .keys
                    .push(a);
                self.invites_changed.insert(invite.invite_id);
                a
            }
        };
        // A known key keeps the highest role it joined with: its earlier entries were checked
        // against that role and must replay under it (a restart, `verify-log`). Lowering a
        // member's role is a membership decision, not a side effect of an invite link: once an
        // admin set it, the role is the key ring's (the log's), and the stored key record stays
        // as it was (a restore registers it, then replays the role changes).
        let set_by_admin = self.roles_set.contains(&author);
        let role = match self.log.keys().role(author) {
            Some(known) if set_by_admin => known,
            known => known.map_or(role, |known| known.max(role)),
        };
        if !set_by_admin
            && self
                .log
                .keys_mut()
                .register(author, public_key, role)
                .is_err()
        {
            self.refuse_join(
                client,
                JoinRefusal::BadKey,
                "your public key is invalid".into(),
            );
            return;
        }
        // One live connection per author: a rejoin replaces the old connection.
        if let Some(old) = self.connection_of.insert(author, client)
            && old != client
        {
            self.close(
                old,
                CloseReason::Kicked,
                "you joined from another connection",
            );
            self.connection_of.insert(author, client);
        }
        // Entries already durable (so in the scene) but not yet fanned out go to the others
        // now, before this client counts as joined: it gets them inside its snapshot instead.
        self.flush_fanout();
        if let Some(c) = self.clients.get_mut(&client) {
            c.phase = Phase::Joined;
            c.author = Some(author);
        }
        self.buckets
            .entry(author)
            .or_insert_with(|| TokenBucket::full(self.config.burst, self.now_ms));
        let welcome = Welcome {
            session: self.config.session,
            author,
            role,
            next_seq: self.log.next_seq(author),
            log_position: self.log.clock(),
            // The tick clients draw others over: the session packs at most that far apart
            // whatever its configuration says (`presence::MAX_TICK_MS`).
            presence_tick_ms: u32::try_from(self.presence_tick_ms()).unwrap_or(u32::MAX),
        };
        self.send(client, &ServerMsg::Welcome(welcome));
        // The others learn the new member now, before any entry of theirs can reach them (same
        // ordered lane); this client gets the whole roster with its snapshot.
        let member = wire::Member {
            author,
            public_key,
            role,
        };
        if let Ok(frame) = to_frame(&ServerMsg::Roster(self.roster_msg(false, vec![member]))) {
            let frame: Arc<[u8]> = frame.into();
            for other in self.joined_except(client) {
                self.emit(Output::Send {
                    client: other,
                    lane: Lane::Reliable,
                    frame: frame.clone(),
                });
            }
        }
        // The author's key is made durable right away (an empty batch), so that it is stored
        // before any entry of theirs can be.
        if !set_by_admin {
            self.pending_authors.push(AuthorRecord {
                author,
                public_key,
                role,
            });
        }
        self.emit_persist(Vec::new(), Vec::new());
        self.emit(Output::Event(Event::Joined {
            client,
            author,
            role,
        }));
        self.send_catch_up(client, resume);
    }

    fn roster_msg(&self, replace: bool, members: Vec<wire::Member>) -> wire::Roster {
        wire::Roster {
            session: self.config.session,
            server_key: self.config.server_key,
            replace,
            members,
        }
    }

    /// The whole roster, in frames of at most [`wire::ROSTER_CHUNK`] members (the first
    /// replaces what the client knew).
    fn send_roster(&mut self, client: ClientId) {
        let mut members: Vec<wire::Member> = self
            .authors()
            .into_iter()
            .map(|a| wire::Member {
                author: a.author,
                public_key: a.public_key,
                role: a.role,
            })
            .collect();
        members.sort_unstable_by_key(|m| m.author);
        for (i, part) in members.chunks(wire::ROSTER_CHUNK).enumerate() {
            let msg = ServerMsg::Roster(self.roster_msg(i == 0, part.to_vec()));
            self.send(client, &msg);
        }
    }

    /// Sends every durable entry to a client that just joined, in chunks.
    /// Sends the durable scene as a chunked snapshot. Callers flush pending fan-out first, so
    /// that no entry reaches this client both inside the snapshot and after it.
    /// The scene is encoded once per position: later joins and resyncs at the same position
    /// get the same frames.
    fn send_snapshot(&mut self, client: ClientId) {
        // Before anything of the scene: the keys every entry after it verifies against. With
        // every snapshot, so a replica that refused an entry of an author it did not know
        // learns the roster again with the resync it asked for.
        self.send_roster(client);
        if self.clients.get(&client).is_some_and(|c| c.hold.is_some()) {
            self.send_held_snapshot(client);
            return;
        }
        let position = self.scene.position;
        let (scene_bytes, frames) = match &self.snapshot_frames {
            Some(c) if c.position == position => (c.scene_bytes, c.frames.clone()),
            _ => {
                // zstd at level 1: the scene is encoded and compressed on the driver, once
                // per position, so speed counts more than the last percent.
                let (manifest, chunks) =
                    meshwork_protocol::replica::snapshot_compressed(&self.scene, &|raw| {
                        zstd::bulk::compress(raw, wire::SNAPSHOT_ZSTD_LEVEL).ok()
                    });
                let scene_bytes = usize::try_from(manifest.scene_bytes()).unwrap_or(usize::MAX);
                let msgs = core::iter::once(ServerMsg::Snapshot(manifest))
                    .chain(chunks.into_iter().map(ServerMsg::SnapshotChunk));
                let frames: Result<Vec<Arc<[u8]>>, _> =
                    msgs.map(|m| to_frame(&m).map(Arc::from)).collect();
                match frames {
                    Ok(frames) => {
                        self.snapshot_frames = Some(CachedSnapshot {
                            position,
                            scene_bytes,
                            frames: frames.clone(),
                        });
                        (scene_bytes, frames)
                    }
                    // Chunks are sized under the frame limit; failing is a bug to see, not a
                    // panic.
                    Err(e) => {
                        self.close(
                            client,
                            CloseReason::ProtocolViolation,
                            &format!("server bug: {e}"),
                        );
                        return;
                    }
                }
            }
        };
        self.emit(Output::Event(Event::SnapshotSent {
            client,
            scene: scene_bytes,
            sent: frames.iter().map(|f| f.len()).sum(),
        }));
        for frame in frames {
            self.emit(Output::Send {
                client,
                lane: Lane::Reliable,
                frame,
            });
        }
    }

    /// The held part of the scene as a snapshot, for a client that holds a region: what the
    /// region holds now, encoded and compressed for this client alone.
    fn send_held_snapshot(&mut self, client: ClientId) {
        self.ensure_grid();
        let Some(region) = self
            .clients
            .get(&client)
            .and_then(|c| c.hold.as_ref())
            .map(|h| h.region)
        else {
            return;
        };
        let held = match &self.grid {
            Some(grid) => grid.query(&self.scene, &region),
            None => BTreeSet::new(),
        };
        let (position, lamport) = (self.scene.position, self.scene.lamport);
        let copy = self.scene.held_copy(&held, position, lamport);
        let (manifest, chunks) = meshwork_protocol::replica::snapshot_compressed(&copy, &|raw| {
            zstd::bulk::compress(raw, wire::SNAPSHOT_ZSTD_LEVEL).ok()
        });
        let scene_bytes = usize::try_from(manifest.scene_bytes()).unwrap_or(usize::MAX);
        let frames: Result<Vec<Vec<u8>>, _> = core::iter::once(ServerMsg::Snapshot(manifest))
            .chain(chunks.into_iter().map(ServerMsg::SnapshotChunk))
            .map(|m| to_frame(&m))
            .collect();
        let Ok(frames) = frames else {
            self.close(
                client,
                CloseReason::ProtocolViolation,
                "server bug: a snapshot chunk did not fit a frame",
            );
            return;
        };
        if let Some(h) = self.clients.get_mut(&client).and_then(|c| c.hold.as_mut()) {
            h.held = held;
            h.position = position;
            h.lamport = lamport;
            h.fresh = false;
        }
        self.emit(Output::Event(Event::SnapshotSent {
            client,
            scene: scene_bytes,
            sent: frames.iter().map(Vec::len).sum(),
        }));
        for frame in frames {
            self.emit(Output::Send {
                client,
                lane: Lane::Reliable,
                frame: frame.into(),
            });
        }
    }

    /// A snapshot for a replica that diverged, within the connection's rate limit; over it, one
    /// snapshot is sent when the bucket allows (see [`Session::on_tick`]).
    fn on_resync(&mut self, client: ClientId) {
        let (now, per_min) = (self.now_ms, self.config.resync_per_min);
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        if c.resync_due || !c.resyncs.take(now, per_min, RESYNC_BURST) {
            c.resync_due = true;
            self.emit(Output::Event(Event::Throttled {
                client,
                reason: "resync_throttled",
            }));
            return;
        }
        self.flush_fanout();
        self.send_snapshot(client);
    }

    /// A `FetchLog` starts its answer (replacing one in progress): the first page now, within
    /// the connection's rate limit, the others as the bucket allows.
    fn on_fetch_log(&mut self, client: ClientId, since_lamport: u64) {
        let (now, per_min) = (self.now_ms, self.config.history_per_min);
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        c.history_from = Some(since_lamport);
        c.history_read = None;
        if !c.histories.take(now, per_min, HISTORY_BURST) {
            self.emit(Output::Event(Event::Throttled {
                client,
                reason: "fetch_log_throttled",
            }));
            return;
        }
        self.send_history_page(client, since_lamport);
    }

    /// Sends what the rate limits held back and now allow: owed snapshots, next history pages.
    fn serve_deferred(&mut self) {
        let now = self.now_ms;
        let (resync_per_min, history_per_min) =
            (self.config.resync_per_min, self.config.history_per_min);
        let mut snapshots = Vec::new();
        let mut pages = Vec::new();
        let mut holds = Vec::new();
        for (id, c) in &mut self.clients {
            if c.hold_due.is_some() && c.holds.take(now, HOLDS_PER_S, HOLD_BURST) {
                holds.extend(c.hold_due.take().map(|region| (*id, region)));
            }
            if c.resync_due && c.resyncs.take(now, resync_per_min, RESYNC_BURST) {
                c.resync_due = false;
                snapshots.push(*id);
            }
            if let Some(since) = c.history_from
                && c.history_read.is_none()
                && c.histories.take(now, history_per_min, HISTORY_BURST)
            {
                pages.push((*id, since));
            }
        }
        if !snapshots.is_empty() {
            self.flush_fanout();
        }
        for client in snapshots {
            self.send_snapshot(client);
        }
        for (client, since) in pages {
            self.send_history_page(client, since);
        }
        for (client, region) in holds {
            self.change_hold(client, region);
        }
    }

    /// When held-back work can go: the earliest time a bucket with work waiting has a token.
    fn deferred_due(&self) -> Option<u64> {
        self.clients
            .values()
            .flat_map(|c| {
                let snapshot = c
                    .resync_due
                    .then(|| c.resyncs.ready_at(self.config.resync_per_min));
                let page = c
                    .history_from
                    .filter(|_| c.history_read.is_none())
                    .map(|_| c.histories.ready_at(self.config.history_per_min));
                let hold = c.hold_due.map(|_| c.holds.ready_at(HOLDS_PER_S));
                [snapshot, page, hold]
            })
            .flatten()
            .min()
    }

    /// One page of log history in total order (audit, tooling; not applied to replicas): at
    /// most [`Config::history_page`] entries after `since_lamport`, cut after the last entry of
    /// a Lamport time so the next page, after that time, misses nothing. `done` on the last
    /// frame of the last page.
    fn send_history_page(&mut self, client: ClientId, since_lamport: u64) {
        let page = self.config.history_page.max(1);
        // History the log let go of is read back from the store, up to the floor's time; the
        // held entries follow from there.
        if let Some(floor) = self.log.floor()
            && since_lamport < floor.lamport
        {
            let (up_to, ranges) = self.stored.page(since_lamport, floor.lamport, page);
            self.history_requests = self.history_requests.wrapping_add(1);
            let request = self.history_requests;
            let Some(c) = self.clients.get_mut(&client) else {
                return;
            };
            c.history_read = Some((request, since_lamport, up_to));
            self.emit(Output::ReadStored {
                client,
                request,
                ranges,
            });
            return;
        }
        let chunk = self.config.catch_up_chunk.max(1);
        let mut durable: Vec<SignedEntry> = Vec::new();
        let mut more = false;
        let mut last = since_lamport;
        for e in self
            .log
            .entries_since(since_lamport)
            .filter(|e| !self.in_flight_ids.contains(&e.id))
        {
            if durable.len() >= page && last != e.id.lamport {
                more = true;
                break;
            }
            last = e.id.lamport;
            durable.push(e.signed.clone());
        }
        if let Some(c) = self.clients.get_mut(&client) {
            c.history_from = more.then_some(last);
        }
        let parts: Vec<&[SignedEntry]> = durable.chunks(chunk).collect();
        if parts.is_empty() {
            self.send(
                client,
                &ServerMsg::History(History {
                    entries: Vec::new(),
                    done: true,
                }),
            );
        }
        for (i, part) in parts.iter().enumerate() {
            let done = !more && i.saturating_add(1) == parts.len();
            self.send(
                client,
                &ServerMsg::History(History {
                    entries: part.to_vec(),
                    done,
                }),
            );
        }
    }

    /// A history page read back from the store: the entries of its Lamport range, in total
    /// order, at most [`Config::history_page`] (cut after the last entry of a Lamport time);
    /// the rest of the answer follows as the rate limit allows.
    fn on_stored(&mut self, client: ClientId, request: u64, entries: Vec<SignedEntry>) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        let Some((asked, since, up_to)) = c.history_read else {
            return;
        };
        if asked != request {
            return;
        }
        c.history_read = None;
        let mut page: Vec<(meshwork_protocol::CommandId, SignedEntry)> = entries
            .into_iter()
            .filter_map(|e| {
                let id = e.decode_body().ok()?.id();
                (id.lamport > since && id.lamport <= up_to).then_some((id, e))
            })
            .collect();
        page.sort_by_key(|(id, _)| *id);
        let limit = self.config.history_page.max(1);
        let mut next = up_to;
        if page.len() > limit {
            // Cut after the last entry of a Lamport time, as the held pages are.
            let mut cut = limit;
            let at = page.get(limit.saturating_sub(1)).map(|(id, _)| id.lamport);
            while page.get(cut).is_some_and(|(id, _)| Some(id.lamport) == at) {
                cut = cut.saturating_add(1);
            }
            page.truncate(cut);
            next = at.unwrap_or(up_to);
        }
        c.history_from = Some(next);
        let chunk = self.config.catch_up_chunk.max(1);
        let entries: Vec<SignedEntry> = page.into_iter().map(|(_, e)| e).collect();
        for part in entries.chunks(chunk) {
            self.send(
                client,
                &ServerMsg::History(History {
                    entries: part.to_vec(),
                    done: false,
                }),
            );
        }
    }

    /// Relays a presence update to every other joined client, latest-wins and rate-limited.
    fn on_presence(&mut self, client: ClientId, presence: Presence) {
        let points = [
            presence.head,
            presence.hands[0],
            presence.hands[1],
            presence.cursor,
        ];
        let place = place_of(points.iter().flatten().map(|p| p.position_mm));
        let parts = Some(Parts {
            kind: Kind::Presence,
            figure: true,
            moving: Vec::new(),
        });
        self.relay_latest(client, presence.seq, place, true, parts, |author| {
            ServerMsg::Presence(PresenceOf { author, presence })
        });
    }

    /// A live preview goes where presence goes, but only from someone who may edit (a viewer's
    /// "drag" would show others an edit that can never land).
    fn on_preview(&mut self, client: ClientId, preview: wire::Preview) {
        let may_edit = self
            .clients
            .get(&client)
            .and_then(|c| c.author)
            .and_then(|a| self.log.keys().role(a))
            .is_some_and(|r| r != Role::Viewer);
        if !may_edit {
            self.emit(Output::Event(Event::PresenceDropped));
            return;
        }
        let place = place_of(preview.transform.map(|t| t.pose.position_mm));
        // A preview's end always goes; a move is superseded by the next of the same entity.
        let parts = preview.transform.map(|_| Parts {
            kind: Kind::Preview,
            figure: false,
            moving: vec![preview.entity],
        });
        self.relay_latest(client, preview.seq, place, false, parts, |author| {
            ServerMsg::Preview(wire::PreviewOf { author, preview })
        });
    }

    /// A compact presence and preview update goes where its parts would go: it must unpack,
    /// and one that drags entities must come from someone who may edit. It is relayed as its
    /// bytes came (nothing is re-encoded), ordered by its 16-bit sequence number taken as the
    /// 32-bit one nearest to the connection's last.
    fn on_motion(&mut self, client: ClientId, motion: motion::Motion) {
        let Some(author) = self.clients.get(&client).and_then(|c| c.author) else {
            return;
        };
        let Ok(content) = motion.decode() else {
            self.emit(Output::Event(Event::PresenceDropped));
            return;
        };
        let drags = !content.moving.is_empty() || !content.ended.is_empty();
        let may_edit = self
            .log
            .keys()
            .role(author)
            .is_some_and(|r| r != Role::Viewer);
        if drags && !may_edit {
            self.emit(Output::Event(Event::PresenceDropped));
            return;
        }
        let seq = match self.presence.get(&author) {
            Some((c, last, _)) if *c == client && *last != 0 => {
                motion::unwrap_seq(*last, content.seq)
            }
            _ => u32::from(content.seq),
        };
        // An ended drag has no place: its end goes to everyone.
        let place = if content.ended.is_empty() {
            let figure = content.figure.unwrap_or_default();
            let parts = [figure.head, figure.hands[0], figure.hands[1], figure.cursor];
            place_of(
                parts
                    .iter()
                    .flatten()
                    .map(|p| p.position_mm)
                    .chain(content.moving.iter().map(|(_, t)| t.pose.position_mm)),
            )
        } else {
            Place::Everywhere
        };
        let figure_only = content.figure.is_some() && !drags;
        let parts = content.ended.is_empty().then(|| Parts {
            kind: Kind::Motion,
            figure: content.figure.is_some(),
            moving: content.moving.iter().map(|(e, _)| *e).collect(),
        });
        self.relay_latest(client, seq, place, figure_only, parts, |author| {
            ServerMsg::Motion(motion::MotionOf { author, motion })
        });
    }

    /// A mesh-edit preview goes where previews go (editors only), when its command is a mesh
    /// edit of the entity it names, within the value guards and small enough for a datagram;
    /// anything else is dropped and counted.
    fn on_edit_preview(&mut self, client: ClientId, preview: wire::EditPreview) {
        let author = self.clients.get(&client).and_then(|c| c.author);
        let may_edit = author
            .and_then(|a| self.log.keys().role(a))
            .is_some_and(|r| r != Role::Viewer);
        let fits = match (&preview.command, author) {
            (None, _) => true,
            (Some(c), Some(a)) => wire::EditPreview::allows(c, preview.entity, a),
            (Some(_), None) => false,
        };
        if !may_edit || !fits {
            self.emit(Output::Event(Event::PresenceDropped));
            return;
        }
        let seq = preview.seq;
        let place = self.place_of_entity(Some(preview.entity));
        self.relay_latest(client, seq, place, false, None, |author| {
            ServerMsg::EditPreview(wire::EditPreviewOf { author, preview })
        });
    }

    /// An element selection goes where presence goes (any member may point at elements), when
    /// it names at most [`wire::MAX_PREVIEW_ELEMENTS`] elements; larger ones are dropped.
    fn on_element_selection(&mut self, client: ClientId, selection: wire::ElementSelection) {
        if selection.elements.len() > wire::MAX_PREVIEW_ELEMENTS {
            self.emit(Output::Event(Event::PresenceDropped));
            return;
        }
        let seq = selection.seq;
        let place = self.place_of_entity(selection.entity);
        self.relay_latest(client, seq, place, false, None, |author| {
            ServerMsg::ElementSelection(wire::ElementSelectionOf { author, selection })
        });
    }

    /// Where an entity is, for interest (its committed position; everywhere when there is
    /// none).
    fn place_of_entity(&self, entity: Option<meshwork_protocol::EntityId>) -> Place {
        let at = entity
            .and_then(|e| self.scene.entities.get(&e))
            .map(|e| meshwork_protocol::interest::point_mm(e.transform.translation));
        place_of(at)
    }

    /// A client says what part of the world it wants the presence lane of. Members whose last
    /// presence is in the new region and was not in the old one are sent it at once, so what
    /// comes into view shows within a round trip, not at the member's next move. Who is in
    /// view for the client is worked out again from everyone's last presence, so a member
    /// inside the new region is seen stepping out of it even if the client had no region
    /// before.
    fn on_interest(&mut self, client: ClientId, interest: meshwork_protocol::interest::Interest) {
        let Some(state) = self.clients.get_mut(&client) else {
            return;
        };
        let old = std::mem::replace(&mut state.interest, interest.region);
        let me = state.author;
        self.in_view.retain(|(c, _)| *c != client);
        let Some(region) = interest.region else {
            return; // everything from now on
        };
        let inside: Vec<(AuthorId, Arc<[u8]>, bool)> = self
            .last_figure
            .iter()
            .filter(|(author, (_, place))| Some(**author) != me && place.reaches(Some(&region)))
            .map(|(author, (frame, place))| {
                // A client without a region was sent everything already.
                let seen = old.is_none_or(|old| place.reaches(Some(&old)));
                (*author, frame.clone(), seen)
            })
            .collect();
        for (author, frame, seen) in inside {
            self.in_view.insert((client, author));
            if !seen {
                self.deliver_unreliable(client, &frame, None);
            }
        }
    }

    /// One relayed frame to one client: into its pack for the tick (replacing an update of the
    /// same author there that it supersedes), or on its own.
    fn deliver_unreliable(
        &mut self,
        to: ClientId,
        frame: &Arc<[u8]>,
        key: Option<crate::pack::Supersedes>,
    ) {
        let delay = self.presence_tick_ms();
        match self.clients.get(&to).and_then(|c| c.packs) {
            // Gathered for the tick; a full pack goes at once.
            Some(dictionary) if delay > 0 => {
                let now = self.now_ms;
                if let Some(ready) = self.packs.add(to, dictionary, frame, key, now, delay) {
                    self.send_pack(ready);
                }
            }
            _ => self.emit(Output::Send {
                client: to,
                lane: Lane::Unreliable,
                frame: frame.clone(),
            }),
        }
    }

    /// Relays an unreliable, latest-wins update (presence, previews: one sequence per
    /// connection) to every other joined client whose interest it reaches, within the author's
    /// rate. `figure` marks a presence update alone: kept as the author's last, for clients
    /// whose region comes to hold it.
    fn relay_latest(
        &mut self,
        client: ClientId,
        seq: u32,
        place: Place,
        figure: bool,
        parts: Option<Parts>,
        message: impl FnOnce(AuthorId) -> ServerMsg,
    ) {
        let Some(author) = self.clients.get(&client).and_then(|c| c.author) else {
            return;
        };
        let now = self.now_ms;
        let limit = self.config.presence_per_s;
        let state = self
            .presence
            .entry(author)
            .or_insert_with(|| (client, 0, TokenBucket::full(limit, now)));
        if state.0 != client {
            // A rejoin: the new connection numbers its updates from the start, and its
            // presence flows at once (the old connection is closed, so nothing of it follows).
            state.0 = client;
            state.1 = 0;
        }
        if seq <= state.1 && state.1 != 0 {
            return; // older than what was relayed: latest wins
        }
        if !state.2.take(now, limit, limit) {
            self.emit(Output::Event(Event::PresenceDropped));
            return;
        }
        state.1 = seq;
        let msg = message(author);
        let Ok(frame) = to_frame(&msg) else { return };
        let frame: Arc<[u8]> = frame.into();
        let key = parts.map(|parts| crate::pack::Supersedes { author, parts });
        for other in self.joined_except(client) {
            let Some(region) = self.clients.get(&other).map(|c| c.interest) else {
                continue;
            };
            let mut wants = place.reaches(region.as_ref());
            if figure && region.is_some() {
                // Presence inside is followed; the first update outside goes too (the member
                // is seen leaving, not frozen at the edge), then nothing until they return.
                let key = (other, author);
                if wants {
                    self.in_view.insert(key);
                } else {
                    wants = self.in_view.remove(&key);
                }
            }
            if wants {
                self.deliver_unreliable(other, &frame, key.clone());
            } else {
                self.emit(Output::Event(Event::OutOfInterest));
            }
        }
        if figure {
            self.last_figure.insert(author, (frame, place));
        }
    }

    /// Sends every pack gathered this tick, once it is due.
    fn flush_packs(&mut self) {
        if self.packs.due().is_some_and(|due| due <= self.now_ms) {
            for ready in self.packs.take_all() {
                self.send_pack(ready);
            }
        }
    }

    fn send_pack(&mut self, ready: crate::pack::Ready) {
        let joined = self
            .clients
            .get(&ready.client)
            .is_some_and(|c| c.phase == Phase::Joined);
        let Ok(frame) = to_frame(&ServerMsg::Packed(ready.pack)) else {
            return;
        };
        if !joined {
            return;
        }
        self.emit(Output::Event(Event::Packed {
            client: ready.client,
            raw: ready.raw,
            sent: frame.len(),
        }));
        self.emit(Output::Send {
            client: ready.client,
            lane: Lane::Unreliable,
            frame: frame.into(),
        });
    }

    fn on_submit(
        &mut self,
        client: ClientId,
        entries: Vec<SignedEntry>,
        signed_by: Option<PublicKey>,
    ) {
        let Some(author) = self.clients.get(&client).and_then(|c| c.author) else {
            return;
        };
        // 2. Rate limit, per author, on the input clock.
        let mut admitted = Vec::with_capacity(entries.len());
        let (rate, burst, now) = (self.config.rate_per_s, self.config.burst, self.now_ms);
        for entry in entries {
            let allowed = self
                .buckets
                .entry(author)
                .or_insert_with(|| TokenBucket::full(burst, now))
                .take(now, rate, burst);
            if allowed {
                admitted.push(entry);
            } else {
                let seq = entry.decode_body().map_or(0, |b| b.seq);
                self.refuse(
                    client,
                    seq,
                    RefusalCode::RateLimited,
                    format!("rate limit: at most {rate} commands per second (bursts of {burst})"),
                );
            }
        }
        if admitted.is_empty() {
            return;
        }
        self.integrate_from(Some(client), author, admitted, signed_by.as_ref());
    }

    /// The log's checks, ordering and conflict resolution (step 3), with one batch
    /// verification; then persistence of what was appended. `client` (none for the server's
    /// own entries) hears of duplicates and refusals. Returns each entry's outcome.
    fn integrate_from(
        &mut self,
        client: Option<ClientId>,
        author: AuthorId,
        admitted: Vec<SignedEntry>,
        signed_by: Option<&PublicKey>,
    ) -> Vec<Result<meshwork_protocol::CommandId, String>> {
        let mut outcomes = Vec::with_capacity(admitted.len());
        let seqs: Vec<u64> = admitted
            .iter()
            .map(|e| e.decode_body().map_or(0, |b| b.seq))
            .collect();
        let kinds: Vec<Option<CommandKind>> = admitted
            .iter()
            .map(|e| e.decode_body().ok().map(|b| b.command.kind()))
            .collect();
        let limits = self.config.limits;
        // The server's own member (the admin token's signer) is nobody's to demote or remove.
        let server_member = self.server_member();
        let accepted = &mut self.accepted;
        let mut check = |body: &meshwork_protocol::EntryBody| {
            if let Command::SetRole { author, .. } | Command::Kick { author, .. } = &body.command
                && Some(*author) == server_member
            {
                return Err(Refusal::Malformed(
                    "the server's own membership does not change".into(),
                ));
            }
            accepted
                .try_apply(body.id(), body.author, &body.command, &limits)
                .map_err(|e| edit_refusal(e, body))
        };
        let results = match signed_by {
            Some(key) => {
                self.log
                    .integrate_batch_presigned(author, admitted.clone(), &mut check, key)
            }
            None => self
                .log
                .integrate_batch_checked(author, admitted.clone(), &mut check),
        };
        let mut batch_entries = Vec::new();
        let mut batch_ids = Vec::new();
        for (((entry, result), seq), kind) in admitted.into_iter().zip(results).zip(seqs).zip(kinds)
        {
            match result {
                Ok(Integrated::Appended {
                    id,
                    status,
                    changed,
                }) => {
                    if let Some(kind) = kind {
                        self.emit(Output::Event(Event::Accepted { kind }));
                        if matches!(kind, CommandKind::Undo | CommandKind::Redo) {
                            self.emit(Output::Event(Event::Undo {
                                redo: kind == CommandKind::Redo,
                                outcome: "accepted",
                            }));
                        }
                    }
                    let superseded = matches!(status, Status::Superseded { .. })
                        || changed
                            .iter()
                            .any(|(_, s)| matches!(s, Status::Superseded { .. }));
                    if superseded {
                        self.emit(Output::Event(Event::Conflict {
                            strategy: Strategy::LastWriteWins,
                        }));
                    }
                    if let Ok(body) = entry.decode_body()
                        && let Command::SetRole { author: member, .. } = body.command
                    {
                        self.roles_set.insert(member);
                    }
                    batch_ids.push((author, seq, id));
                    batch_entries.push(entry);
                    outcomes.push(Ok(id));
                }
                Ok(Integrated::Duplicate { id }) => {
                    outcomes.push(Ok(id));
                    // Already durable (or about to be): acknowledge again once it is.
                    if self.in_flight_ids.contains(&id) {
                        continue;
                    }
                    if let Some(client) = client {
                        self.send(client, &ServerMsg::Ack(Ack { seq, id }));
                    }
                }
                Err(refusal) => {
                    if let Some(kind @ (CommandKind::Undo | CommandKind::Redo)) = kind {
                        let outcome = match &refusal {
                            Refusal::Undo(u) => u.reason.as_str(),
                            other => other.code().as_str(),
                        };
                        self.emit(Output::Event(Event::Undo {
                            redo: kind == CommandKind::Redo,
                            outcome,
                        }));
                    }
                    if matches!(refusal, Refusal::Conflict { .. }) {
                        self.emit(Output::Event(Event::Conflict {
                            strategy: Strategy::Reject,
                        }));
                    }
                    outcomes.push(Err(refusal.to_string()));
                    if let Some(client) = client {
                        self.refuse(client, seq, refusal.code(), refusal.to_string());
                    }
                }
            }
        }
        if !batch_entries.is_empty() {
            // 4. Persist; acks and fan-out wait for the store.
            self.emit_persist(batch_ids, batch_entries);
        }
        outcomes
    }

    /// A membership change by the operator with the admin token (the HTTP API), who holds no
    /// member key: the server signs it as a member of its own. The server key is registered
    /// once as an admin author — announced to everyone joined like any new member, its record
    /// stored with the entry's batch — so the change is a signed log entry like an in-session
    /// admin's: checked, ordered, made durable and carried out the same way, and `verify-log`
    /// proves it under the server key.
    ///
    /// # Errors
    /// A sentence: not a role change or removal, no server signing key, a change of the
    /// server's own membership, or the log's refusal.
    pub fn admin_command(
        &mut self,
        now_ms: u64,
        command: Command,
    ) -> Result<meshwork_protocol::CommandId, String> {
        self.now_ms = self.now_ms.max(now_ms);
        if self.shut_down {
            return Err("the session is shutting down".into());
        }
        let member = match &command {
            Command::SetRole { author, .. } | Command::Kick { author, .. } => *author,
            _ => return Err("the admin token makes role changes and removals only".into()),
        };
        let Some(signer) = self.config.server_signer.clone() else {
            return Err("this server holds no signing key for the session".into());
        };
        let server_key = self.config.server_key;
        let server_member = self.server_member();
        if server_member == Some(member) {
            return Err("the server's own membership does not change".into());
        }
        // Checked before the server joins the roster: a change the log would refuse for what it
        // says (an unknown member, a reason too long) announces nothing.
        if self.log.keys().role(member).is_none() {
            return Err(format!("{member} is not a member of the session"));
        }
        let server_id = server_member.unwrap_or(AuthorId(self.next_author));
        command.validate(server_id).map_err(|e| e.to_string())?;
        let author = if let Some(a) = server_member {
            a
        } else {
            let a = AuthorId(self.next_author);
            self.log
                .keys_mut()
                .register(a, server_key, Role::Admin)
                .map_err(|e| format!("the server key: {e}"))?;
            self.next_author = self.next_author.saturating_add(1);
            self.authors_by_key.insert(server_key, a);
            self.pending_authors.push(AuthorRecord {
                author: a,
                public_key: server_key,
                role: Role::Admin,
            });
            let member = wire::Member {
                author: a,
                public_key: server_key,
                role: Role::Admin,
            };
            // Stored at once, as a joining member's key is, before any entry of its own.
            self.emit_persist(Vec::new(), Vec::new());
            if let Ok(frame) = to_frame(&ServerMsg::Roster(self.roster_msg(false, vec![member]))) {
                self.send_to_joined(&frame.into());
            }
            a
        };
        let clock = self.log.clock();
        let body = meshwork_protocol::EntryBody::new(
            self.config.session,
            author,
            server_key.key_id(),
            self.log.next_seq(author),
            clock.saturating_add(1),
            clock,
            command,
        );
        let entry = SignedEntry::sign(&body, &*signer).map_err(|e| e.to_string())?;
        self.integrate_from(None, author, vec![entry], None)
            .pop()
            .unwrap_or_else(|| Err("nothing was integrated".into()))
    }

    fn emit_persist(
        &mut self,
        ids: Vec<(AuthorId, u64, meshwork_protocol::CommandId)>,
        entries: Vec<SignedEntry>,
    ) {
        let batch = BatchId(self.next_batch);
        self.next_batch = self.next_batch.saturating_add(1);
        self.in_flight_ids.extend(ids.iter().map(|(_, _, id)| *id));
        self.in_flight.insert(batch, Pending { entries: ids });
        let authors = std::mem::take(&mut self.pending_authors);
        let invites = std::mem::take(&mut self.invites_changed)
            .into_iter()
            .filter_map(|id| self.invites.get(&id).cloned())
            .collect();
        self.emit(Output::Persist {
            batch,
            authors,
            entries,
            invites,
        });
    }

    /// Revokes `invite` (an admin through the API, or a removal that asked for it): it admits
    /// no one from now on.
    fn revoke_invite(&mut self, invite: [u8; 16]) {
        let now = self.now_ms;
        let record = self.invites.entry(invite).or_insert_with(|| InviteRecord {
            invite,
            role: Role::Viewer,
            expires_at_ms: 0,
            max_keys: None,
            revoked_at_ms: None,
            keys: Vec::new(),
        });
        if record.revoked_at_ms.is_none() {
            record.revoked_at_ms = Some(now);
            self.invites_changed.insert(invite);
            self.emit_persist(Vec::new(), Vec::new());
            self.emit(Output::Event(Event::Membership {
                change: "invite_revoked",
            }));
        }
    }

    /// The invites the session knows (minted with limits, or used), by id.
    #[must_use]
    pub fn invites(&self) -> Vec<InviteRecord> {
        self.invites.values().cloned().collect()
    }

    /// Puts back the invite records read from the store (after [`Session::restore`]).
    pub fn load_invites(&mut self, records: impl IntoIterator<Item = InviteRecord>) {
        for r in records {
            self.invites.insert(r.invite, r);
        }
    }

    fn refuse(&mut self, client: ClientId, seq: u64, code: RefusalCode, message: String) {
        self.emit(Output::Event(Event::Refused { code }));
        self.send(
            client,
            &ServerMsg::CommandRefused(CommandRefused { seq, code, message }),
        );
    }

    /// 5. Durable: acknowledge to authors, fan out to everyone joined.
    fn on_persisted(&mut self, batch: BatchId) {
        let Some(pending) = self.in_flight.remove(&batch) else {
            return;
        };
        // Role changes and removals made durable: carried out once the batch is walked.
        let mut membership: Vec<(AuthorId, Option<Removal>)> = Vec::new();
        self.durable_entries = self
            .durable_entries
            .saturating_add(pending.entries.len() as u64);
        let first = self
            .durable_entries
            .saturating_sub(pending.entries.len() as u64);
        for (i, (author, seq, id)) in pending.entries.iter().enumerate() {
            self.stored
                .note(first.saturating_add(i as u64).saturating_add(1), id.lamport);
            self.in_flight_ids.remove(id);
            self.note_time(*id, self.now_ms);
            if let Some(client) = self.connection_of.get(author).copied() {
                self.send(client, &ServerMsg::Ack(Ack { seq: *seq, id: *id }));
            }
            if let Some(e) = self.log.get(id) {
                let scope = self.grid.is_some().then(|| {
                    let existed = match &e.body.command {
                        Command::Spawn { entity, .. } => self.scene.entities.contains_key(entity),
                        _ => false,
                    };
                    Scope::of(e.body.author, &e.body.command, existed)
                });
                // Durable order is acceptance order: the order every replica applies.
                apply_durable(
                    &mut self.scene,
                    &mut self.snapshot_frames,
                    e.id,
                    e.body.author,
                    &e.body.command,
                );
                let touched = self.scene.changed_by(e.body.author, e.id, &e.body.command);
                self.fanout_touched.extend(touched.iter().copied());
                if let Some(scope) = scope {
                    self.fanout_scopes.push((scope, touched.clone()));
                }
                self.recent.remember(touched, self.scene.position);
                // What replicas cannot apply (undo, redo, import) reaches them as state.
                self.fanout_needs_delta |= !Scene::replica_applies(&e.body.command);
                self.fanout.push(e.signed.clone());
                match &e.body.command {
                    Command::SetRole { author: member, .. } => {
                        membership.push((*member, None));
                    }
                    Command::Kick {
                        author: member,
                        reason,
                        revoke_invite,
                    } => membership.push((
                        *member,
                        Some((e.body.author, reason.clone(), *revoke_invite)),
                    )),
                    _ => {}
                }
            }
        }
        self.fanout_batches.push(batch);
        for (member, kick) in membership {
            self.membership_changed(member, kick);
        }
        // Durable entries beyond the window leave memory (in steps of an eighth of it, so the
        // cost per entry stays constant); those still in flight stay.
        let window = self.config.log_window;
        if self.log.held() > window.saturating_add(window / 8) {
            let in_flight = &self.in_flight_ids;
            self.log.let_go(window, &|id| in_flight.contains(id));
        }
    }

    /// A durable role change or removal of `member`: everyone joined gets the member's role as
    /// it now stands (a roster update; the member's own editor turns read-only on a demotion);
    /// a removal (`kick`: by whom, why, whether their invites go too) closes the member's
    /// connection as `Kicked`.
    fn membership_changed(&mut self, member: AuthorId, kick: Option<Removal>) {
        if let Some((by, reason, revoke)) = kick {
            if revoke {
                let theirs: Vec<[u8; 16]> = self
                    .invites
                    .values()
                    .filter(|r| r.keys.contains(&member))
                    .map(|r| r.invite)
                    .collect();
                for invite in theirs {
                    self.revoke_invite(invite);
                }
            }
            if let Some(client) = self.connection_of.get(&member).copied() {
                let by = if self.server_member() == Some(by) {
                    "The server's operator".to_owned()
                } else {
                    self.scene
                        .display_name(by)
                        .map_or_else(|| by.to_string(), str::to_owned)
                };
                let message = if reason.is_empty() {
                    format!("{by} removed you from the session")
                } else {
                    format!("{by} removed you from the session: {reason}")
                };
                self.close(client, CloseReason::Kicked, &message);
            }
            self.emit(Output::Event(Event::Membership { change: "kicked" }));
            return;
        }
        let Some(role) = self.log.keys().role(member) else {
            return;
        };
        let Some(public_key) = self
            .authors_by_key
            .iter()
            .find_map(|(k, a)| (*a == member).then_some(*k))
        else {
            return;
        };
        let update = self.roster_msg(
            false,
            vec![wire::Member {
                author: member,
                public_key,
                role,
            }],
        );
        if let Ok(frame) = to_frame(&ServerMsg::Roster(update)) {
            let frame: Arc<[u8]> = frame.into();
            for client in self.joined_except(ClientId(u64::MAX)) {
                self.emit(Output::Send {
                    client,
                    lane: Lane::Reliable,
                    frame: frame.clone(),
                });
            }
        }
        self.emit(Output::Event(Event::Membership {
            change: "role_changed",
        }));
    }

    /// Sends every entry made durable since the last flush as one shared frame (per chunk) to
    /// every joined client. Runs when all other outputs have been taken, so the batches acked
    /// in one driver pass go out together: fewer, larger frames under load, no added delay.
    fn flush_fanout(&mut self) {
        if self.fanout.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut self.fanout);
        let batches = std::mem::take(&mut self.fanout_batches);
        let scopes = std::mem::take(&mut self.fanout_scopes);
        // Partial replicas get their own updates; the others share the same frames.
        let partial = self.joined_where(|c| c.hold.is_some());
        let recipients = self.joined_where(|c| c.hold.is_none());
        let touched = std::mem::take(&mut self.fanout_touched);
        let from = std::mem::replace(&mut self.fanout_from, self.scene.position);
        let must_delta = std::mem::take(&mut self.fanout_needs_delta);
        if let Some(grid) = &mut self.grid {
            grid.update(
                &self.scene,
                touched.iter().filter_map(|t| match t {
                    meshwork_protocol::scene::Touched::Entity(e) => Some(*e),
                    _ => None,
                }),
            );
        }
        if !partial.is_empty() {
            self.fan_out_held(&partial, &entries, scopes);
        }
        let clients = recipients.len().saturating_add(partial.len());
        if recipients.is_empty() {
            self.emit(Output::Event(Event::FannedOut {
                batches,
                entries: entries.len(),
                clients,
            }));
            return;
        }
        let mut frames: Vec<Arc<[u8]>> = Vec::new();
        for part in entries.chunks(self.config.catch_up_chunk.max(1)) {
            let msg = ServerMsg::Entries(Entries {
                entries: part.to_vec(),
            });
            if let Ok(frame) = to_frame(&msg) {
                frames.push(frame.into());
            }
        }
        // Many edits of the same few entities (a drag, a burst of nudges): their net state is
        // far smaller than the entries. Replicas get the same bytes either way.
        let entry_bytes: usize = frames.iter().map(|f| f.len()).sum();
        // Only where edits pile up on the same things (at least two entries per touched item):
        // entries carry their authors' signatures, which every replica checks, while a delta
        // carries only the server's seal. A delta that cannot be smaller (it would carry a
        // whole edited mesh) is not even built.
        let worth_it = must_delta
            || (entries.len() >= touched.len().saturating_mul(2)
                && self.scene.delta_floor_bytes(&touched).saturating_mul(2) < entry_bytes);
        // Replicas apply only deltas the server sealed: without the key, no delta.
        if let (true, Some(signer)) = (worth_it, self.config.server_signer.clone()) {
            let delta = postcard::to_allocvec(&self.scene.delta(from, &touched))
                .ok()
                .filter(|bytes| must_delta || bytes.len().saturating_mul(2) < entry_bytes)
                .and_then(|bytes| {
                    let sealed = wire::SealedDelta::seal_encoded(
                        self.config.session,
                        self.scene.position,
                        bytes,
                        self.scene.state_hash(),
                        signer.as_ref(),
                    );
                    to_frame(&ServerMsg::SealedDelta(sealed)).ok()
                });
            match delta {
                Some(frame) => {
                    frames = vec![frame.into()];
                    self.emit(Output::Event(Event::DeltaSent));
                }
                // A delta replicas need that does not fit one frame (an import or an undo of
                // many big meshes): the new scene goes out as a chunked snapshot instead.
                None if must_delta => {
                    self.send_snapshots(&recipients, batches, entries.len(), clients);
                    return;
                }
                None => {}
            }
        } else if must_delta {
            // No key to seal a delta with.
            self.send_snapshots(&recipients, batches, entries.len(), clients);
            return;
        }
        for frame in frames {
            // Encoded once, shared by every recipient.
            for client in &recipients {
                self.emit(Output::Send {
                    client: *client,
                    lane: Lane::Reliable,
                    frame: frame.clone(),
                });
            }
        }
        self.emit(Output::Event(Event::FannedOut {
            batches,
            entries: entries.len(),
            clients,
        }));
    }

    fn send_snapshots(
        &mut self,
        recipients: &[ClientId],
        batches: Vec<BatchId>,
        entries: usize,
        clients: usize,
    ) {
        for client in recipients {
            self.send_snapshot(*client);
        }
        self.emit(Output::Event(Event::FannedOut {
            batches,
            entries,
            clients,
        }));
    }

    /// Each partial replica's update for the entries fanned out now ([`crate::held::plan`]):
    /// nothing when none of it concerns what the replica holds.
    fn fan_out_held(
        &mut self,
        partial: &[ClientId],
        entries: &[SignedEntry],
        scopes: Vec<(Scope, Vec<meshwork_protocol::scene::Touched>)>,
    ) {
        if scopes.len() != entries.len() {
            // Entries made durable before the grid existed cannot be placed: start over from
            // the held part of the scene now (not expected: the grid is built after a flush).
            for client in partial {
                self.send_snapshot(*client);
            }
            return;
        }
        let batch: Vec<(SignedEntry, Scope, Vec<meshwork_protocol::scene::Touched>)> = entries
            .iter()
            .cloned()
            .zip(scopes)
            .map(|(e, (scope, touched))| (e, scope, touched))
            .collect();
        for client in partial {
            // One waiting for its first snapshot of the held part gets everything in it.
            let Some(hold) = self
                .clients
                .get(client)
                .and_then(|c| c.hold.as_ref())
                .filter(|h| !h.fresh)
            else {
                continue;
            };
            let from = (hold.position, hold.lamport);
            let plan = crate::held::plan(hold, &batch, &self.scene);
            self.emit(Output::Event(Event::HeldUpdate {
                sent: plan.entries.len(),
                not_sent: batch.len().saturating_sub(plan.entries.len()),
                states: plan.states.len(),
            }));
            if plan.is_empty() {
                continue;
            }
            self.send_held(client, from, plan.entries, plan.states, plan.change);
        }
    }

    /// Sends a partial replica the update from where it stands to the durable scene's
    /// position: `entries` to apply, then `states` (sealed, when there are any);
    /// it holds `held` after. Without a key to seal with, or past a frame, the held part goes
    /// as a snapshot instead, within the resync limit (nothing goes to the client until it
    /// does).
    fn send_held(
        &mut self,
        client: &ClientId,
        (position, held_lamport): (u64, u64),
        entries: Vec<SignedEntry>,
        states: Vec<(
            meshwork_protocol::EntityId,
            Option<meshwork_protocol::scene::Entity>,
        )>,
        change: crate::held::Change,
    ) {
        let (to, lamport) = (self.scene.position, self.scene.lamport);
        // What it holds after this update (if it cannot go, the held part goes again as a
        // snapshot: see `held_snapshot_owed`).
        if let Some(h) = self.clients.get_mut(client).and_then(|c| c.hold.as_mut()) {
            change.apply(&mut h.held);
        }
        // More entries than a frame takes go first in updates that leave the replica where it
        // stands (the same position and Lamport time); the last carries the rest and the states.
        let chunk = self.config.catch_up_chunk.max(1);
        let mut entries = entries;
        if entries.len() > chunk {
            let last = (entries.len().saturating_sub(1))
                .checked_div(chunk)
                .unwrap_or(0)
                .saturating_mul(chunk);
            let tail = entries.split_off(last);
            for part in entries.chunks(chunk) {
                let msg = ServerMsg::Held(wire::Held {
                    from_position: position,
                    to_position: position,
                    lamport: held_lamport,
                    entries: part.to_vec(),
                    delta: None,
                });
                let Ok(frame) = to_frame(&msg) else {
                    self.held_snapshot_owed(*client);
                    return;
                };
                self.emit(Output::Send {
                    client: *client,
                    lane: Lane::Reliable,
                    frame: frame.into(),
                });
            }
            entries = tail;
        }
        let delta = if states.is_empty() {
            None
        } else {
            let Some(signer) = self.config.server_signer.clone() else {
                self.held_snapshot_owed(*client);
                return;
            };
            let delta = meshwork_protocol::scene::SceneDelta {
                from_position: position,
                to_position: to,
                lamport,
                entities: states,
                authors: Vec::new(),
                session_name: self.scene.session_name.clone(),
            };
            let empty = BTreeSet::new();
            let held = self
                .clients
                .get(client)
                .and_then(|c| c.hold.as_ref())
                .map_or(&empty, |h| &h.held);
            let hash = self.scene.held_state_hash(held, to, lamport);
            Some(wire::SealedDelta::seal(
                self.config.session,
                &delta,
                hash,
                signer.as_ref(),
            ))
        };
        let msg = ServerMsg::Held(wire::Held {
            from_position: position,
            to_position: to,
            lamport,
            entries,
            delta,
        });
        let Ok(frame) = to_frame(&msg) else {
            self.held_snapshot_owed(*client);
            return;
        };
        if let Some(h) = self.clients.get_mut(client).and_then(|c| c.hold.as_mut()) {
            h.position = to;
            h.lamport = lamport;
        }
        self.emit(Output::Send {
            client: *client,
            lane: Lane::Reliable,
            frame: frame.into(),
        });
    }

    /// A partial replica that cannot be sent an update gets the held part again as a snapshot,
    /// counted as a resync (so a client cannot make the server build snapshots faster than it
    /// may ask for them); until it goes, nothing else of the scene does.
    fn held_snapshot_owed(&mut self, client: ClientId) {
        if let Some(h) = self.clients.get_mut(&client).and_then(|c| c.hold.as_mut()) {
            h.fresh = true;
        }
        self.on_resync(client);
    }

    /// The grid, built from the durable scene the first time it is needed (after a flush, so
    /// every entry fanned out later has its scope).
    fn ensure_grid(&mut self) {
        if self.grid.is_none() {
            self.flush_fanout();
            self.grid = Some(Grid::build(&self.scene));
        }
    }

    /// `ClientMsg::Hold`: before the join it only takes note (the join's snapshot is then the
    /// held part); after, a switch between whole and part is a snapshot (within the resync
    /// limit), and a new region an update with what comes in and what leaves.
    fn on_hold(
        &mut self,
        client: ClientId,
        phase: Phase,
        region: Option<meshwork_protocol::interest::Region>,
    ) {
        let now = self.now_ms;
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        if phase != Phase::Joined {
            c.hold = region.map(|region| HoldState {
                region,
                held: BTreeSet::new(),
                position: 0,
                lamport: 0,
                fresh: true,
            });
            return;
        }
        // One waiting already, or none left: this one waits (and replaces it).
        if c.hold_due.is_some() || !c.holds.take(now, HOLDS_PER_S, HOLD_BURST) {
            c.hold_due = Some(region);
            self.emit(Output::Event(Event::Throttled {
                client,
                reason: "hold_throttled",
            }));
            return;
        }
        self.change_hold(client, region);
    }

    /// A joined client's new `Hold`, carried out: what is pending fans out first (so the
    /// update starts where the client stands), then the grid answers what the region holds.
    fn change_hold(
        &mut self,
        client: ClientId,
        region: Option<meshwork_protocol::interest::Region>,
    ) {
        self.flush_fanout();
        self.ensure_grid();
        let fresh = region.map(|region| HoldState {
            region,
            held: BTreeSet::new(),
            position: 0,
            lamport: 0,
            fresh: true,
        });
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        let current = c.hold.as_ref().map(|h| (h.fresh, h.position, h.lamport));
        match (current, region) {
            (None, None) => {}
            (Some((false, position, lamport)), Some(region)) => {
                let now_held = match &self.grid {
                    Some(grid) => grid.query(&self.scene, &region),
                    None => BTreeSet::new(),
                };
                let Some(h) = self.clients.get_mut(&client).and_then(|c| c.hold.as_mut()) else {
                    return;
                };
                h.region = region;
                let states = crate::held::moved(&h.held, &now_held, &self.scene);
                let change = crate::held::Change::replace(&h.held, &now_held);
                self.emit(Output::Event(Event::HeldUpdate {
                    sent: 0,
                    not_sent: 0,
                    states: states.len(),
                }));
                if !states.is_empty() {
                    self.send_held(&client, (position, lamport), Vec::new(), states, change);
                }
            }
            (_, _) => {
                // Whole to part, part to whole: a new replica, counted as a resync.
                c.hold = fresh;
                self.on_resync(client);
            }
        }
    }

    fn on_tick(&mut self) {
        self.serve_deferred();
        if self.now_ms
            >= self
                .last_hash_ms
                .saturating_add(self.config.state_hash_interval_ms)
        {
            self.broadcast_state_hash();
        }
        let deadline = self.config.handshake_timeout_ms;
        let late: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                matches!(c.phase, Phase::AwaitingHello | Phase::AwaitingProof)
                    && self.now_ms >= c.connected_ms.saturating_add(deadline)
            })
            .map(|(id, _)| *id)
            .collect();
        for client in late {
            self.emit(Output::Event(Event::HandshakeTimeout { client }));
            self.close(
                client,
                CloseReason::IdleTimeout,
                "the join handshake took too long",
            );
        }
    }

    fn apply_to_scene(&mut self, e: &SignedEntry) {
        if let Ok(body) = e.decode_body() {
            apply_durable(
                &mut self.scene,
                &mut self.snapshot_frames,
                body.id(),
                body.author,
                &body.command,
            );
            let touched = self.scene.changed_by(body.author, body.id(), &body.command);
            self.recent.remember(touched, self.scene.position);
        }
    }

    /// After a join: the roster, then a sealed delta from `resume` (the position of the replica
    /// a reconnecting client kept) when the window still covers it and the delta fits a frame;
    /// else a snapshot. The delta never holds more than the snapshot would (the current state
    /// of what changed, a subset of the scene), and its seal's state hash tells the replica
    /// whether it really was in step.
    fn send_catch_up(&mut self, client: ClientId, resume: Option<u64>) {
        if self.clients.get(&client).is_some_and(|c| c.hold.is_some()) {
            // A partial replica's resume point tells nothing of what it held: the held part
            // goes again.
            self.send_snapshot(client);
            return;
        }
        let now = self.scene.position;
        let (Some(touched), Some(signer)) = (
            resume.and_then(|from| self.recent.since(from, now)),
            self.config.server_signer.clone(),
        ) else {
            self.send_snapshot(client);
            return;
        };
        let from = resume.unwrap_or(now);
        let frame = postcard::to_allocvec(&self.scene.delta(from, &touched))
            .ok()
            .and_then(|bytes| {
                let sealed = wire::SealedDelta::seal_encoded(
                    self.config.session,
                    now,
                    bytes,
                    self.scene.state_hash(),
                    signer.as_ref(),
                );
                to_frame(&ServerMsg::SealedDelta(sealed)).ok()
            });
        let Some(frame) = frame else {
            self.send_snapshot(client);
            return;
        };
        self.send_roster(client);
        self.emit(Output::Send {
            client,
            lane: Lane::Reliable,
            frame: frame.into(),
        });
        self.emit(Output::Event(Event::Resumed {
            client,
            entries: now.saturating_sub(from),
        }));
    }

    /// Sends the state hash to every joined client, after the entries that lead to it.
    fn broadcast_state_hash(&mut self) {
        self.flush_fanout();
        self.hashed_position = self.scene.position;
        self.last_hash_ms = self.now_ms;
        let msg = ServerMsg::StateHash(StateHash {
            position: self.scene.position,
            state_hash: self.scene.state_hash(),
        });
        let Ok(frame) = to_frame(&msg) else { return };
        let frame: Arc<[u8]> = frame.into();
        for client in self.joined_where(|c| c.hold.is_none()) {
            self.emit(Output::Send {
                client,
                lane: Lane::Reliable,
                frame: frame.clone(),
            });
        }
        // Each partial replica: the hash of what it holds, where it stands.
        let partial: Vec<(ClientId, StateHash)> = self
            .clients
            .iter()
            .filter(|(_, c)| c.phase == Phase::Joined)
            .filter_map(|(id, c)| c.hold.as_ref().filter(|h| !h.fresh).map(|h| (*id, h)))
            .map(|(id, h)| {
                let state_hash = self.scene.held_state_hash(&h.held, h.position, h.lamport);
                (
                    id,
                    StateHash {
                        position: h.position,
                        state_hash,
                    },
                )
            })
            .collect();
        for (client, hash) in partial {
            self.send(client, &ServerMsg::StateHash(hash));
        }
    }

    /// The server's own member (the admin token's signer), once it has one.
    fn server_member(&self) -> Option<AuthorId> {
        self.authors_by_key.get(&self.config.server_key).copied()
    }

    /// How far apart a member's packs go: the configured tick, at most
    /// [`meshwork_protocol::presence::MAX_TICK_MS`] (what clients draw others over).
    fn presence_tick_ms(&self) -> u64 {
        self.config
            .presence_pack_ms
            .min(meshwork_protocol::presence::MAX_TICK_MS)
    }

    /// The joined clients `pick` keeps.
    fn joined_where(&self, pick: impl Fn(&Client) -> bool) -> Vec<ClientId> {
        self.clients
            .iter()
            .filter(|(_, c)| c.phase == Phase::Joined && pick(c))
            .map(|(id, _)| *id)
            .collect()
    }

    /// One encoded frame, on the reliable lane, to every joined client.
    fn send_to_joined(&mut self, frame: &Arc<[u8]>) {
        for client in self.joined_where(|_| true) {
            self.emit(Output::Send {
                client,
                lane: Lane::Reliable,
                frame: frame.clone(),
            });
        }
    }

    fn on_shutdown(&mut self) {
        self.shut_down = true;
        let all: Vec<ClientId> = self.clients.keys().copied().collect();
        for client in all {
            self.close(
                client,
                CloseReason::ServerShutdown,
                "the server is shutting down",
            );
        }
    }
}

/// The log refusal for an edit the scene refused. An element that is gone although it was
/// created before what the author had seen was deleted or replaced by an edit the author had not
/// seen yet: a conflict, not a fault of the client.
fn edit_refusal(e: EditError, body: &meshwork_protocol::EntryBody) -> Refusal {
    match e {
        EditError::Missing(what) => Refusal::Gone(format!(
            "{what}; the edit (seen up to lamport {}) was refused",
            body.seen_lamport
        )),
        EditError::Topology(s) => Refusal::Topology(s),
        EditError::Limit(s) => Refusal::Limit(s),
        EditError::Undo(u) => Refusal::Undo(u),
    }
}

mod history;
pub use history::{ENTRY_TIMES, HistoryPage, HistoryQuery, HistoryStep, MAX_HISTORY_PAGE};

#[cfg(test)]
mod tests;
