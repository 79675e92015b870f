//! Wire messages: the join handshake and everything exchanged after it, one enum per direction.
//!
//! Compatibility rules (see `docs/protocol.md`):
//! - Variants and fields are append-only within a protocol version; the variant index is the
//!   wire tag.
//! - The first bytes of a [`ClientMsg::Hello`] (tag 0, then the version as a varint) are frozen
//!   for every version, so a server can always read the version of a client it cannot speak to
//!   and refuse it with a clear message ([`peek_hello_version`]).
//! - A message is valid only in some connection phases ([`ClientMsg::allowed_in`]).

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::ids::{AuthorId, CommandId, SessionId};
use crate::registry::Role;
use crate::sign::{
    BodyError, Domain, PublicKey, Signature, SignatureError, Signer, decode_exact, verify_one,
    verifying_key,
};

/// Protocol versions this build speaks.
pub const SUPPORTED_VERSIONS: &[u16] = &[crate::PROTOCOL_VERSION];

/// The signed part of an invite: who may join which session, as what, until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteBody {
    /// Always [`Domain::Invite`].
    pub domain: Domain,
    /// The session the invite opens.
    pub session: SessionId,
    /// The role the joiner gets.
    pub role: Role,
    /// Expiry, milliseconds since the Unix epoch (the server's clock is an input).
    pub expires_at_ms: u64,
    /// Random id, so an invite can be revoked and audited.
    pub invite_id: [u8; 16],
}

/// An invite token: an [`InviteBody`] signed by the server's key. Minted offline from the key
/// file or through the admin API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// Encoded [`InviteBody`].
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Server signature over `body`.
    pub signature: Signature,
}

/// Why an invite was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InviteError {
    /// Not a valid invite encoding.
    #[error("the invite is malformed")]
    Malformed,
    /// Not signed by this server.
    #[error("the invite was not issued by this server")]
    BadSignature,
    /// For another session.
    #[error("the invite is for another session")]
    WrongSession,
    /// Past its expiry.
    #[error("the invite has expired")]
    Expired,
}

impl Invite {
    /// Mints an invite signed by `server`.
    ///
    /// # Errors
    /// [`BodyError`] if the body's domain is not [`Domain::Invite`].
    pub fn mint(body: &InviteBody, server: &dyn Signer) -> Result<Self, BodyError> {
        if body.domain != Domain::Invite {
            return Err(BodyError::WrongDomain);
        }
        let bytes = postcard::to_allocvec(body).map_err(|_| BodyError::Malformed("encode"))?;
        Ok(Self {
            signature: server.sign(&bytes),
            body: bytes,
        })
    }

    /// Whether `server_key` signed this invite (a client's check that the server it reached is
    /// the one that invited it; expiry and session are the server's checks at join).
    #[must_use]
    pub fn signed_by(&self, server_key: &PublicKey) -> bool {
        verifying_key(server_key).is_ok_and(|key| verify_one(&key, &self.body, &self.signature))
    }

    /// Checks the invite against the server key, the session and the current time.
    ///
    /// # Errors
    /// [`InviteError`] naming the first failed check.
    pub fn verify(
        &self,
        server_key: &PublicKey,
        session: SessionId,
        now_ms: u64,
    ) -> Result<InviteBody, InviteError> {
        let key = verifying_key(server_key).map_err(|_| InviteError::BadSignature)?;
        if !verify_one(&key, &self.body, &self.signature) {
            return Err(InviteError::BadSignature);
        }
        let body: InviteBody = decode_exact(&self.body).map_err(|_| InviteError::Malformed)?;
        if body.domain != Domain::Invite {
            return Err(InviteError::Malformed);
        }
        if body.session != session {
            return Err(InviteError::WrongSession);
        }
        if now_ms >= body.expires_at_ms {
            return Err(InviteError::Expired);
        }
        Ok(body)
    }
}

/// Why a ticket string could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a Meshwork join ticket (expected the text printed by `meshwork-server invite`)")]
pub struct TicketError;

/// Everything a native client needs to join, as one copyable string: where the server listens,
/// the SHA-256 fingerprint of its certificate (clients pin it; the default certificate is
/// self-signed) and the signed invite. Not a wire message: it travels by chat or QR code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTicket {
    /// The server's QUIC address, `host:port`.
    pub quic_addr: String,
    /// SHA-256 of the server certificate (DER).
    pub cert_sha256: [u8; 32],
    /// The invite to redeem.
    pub invite: Invite,
}

impl JoinTicket {
    /// Text prefix of every ticket, so a pasted string is recognisable.
    pub const PREFIX: &'static str = "mwj1_";

    /// The ticket as text: the prefix, then base64url of its postcard encoding.
    #[must_use]
    pub fn to_text(&self) -> String {
        use base64::Engine as _;
        let bytes = postcard::to_allocvec(self)
            .expect("postcard into a Vec fails only on serde features this type does not use");
        let mut out = String::from(Self::PREFIX);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(bytes, &mut out);
        out
    }

    /// Parses [`JoinTicket::to_text`]'s output (surrounding white space is ignored).
    ///
    /// # Errors
    /// [`TicketError`] for anything else.
    pub fn from_text(text: &str) -> Result<Self, TicketError> {
        use base64::Engine as _;
        let b64 = text.trim().strip_prefix(Self::PREFIX).ok_or(TicketError)?;
        if b64.len() > 16 * 1024 {
            return Err(TicketError);
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| TicketError)?;
        decode_exact(&bytes).map_err(|_| TicketError)
    }
}

impl Invite {
    /// The session the invite claims to open, unverified: for routing a connection to the right
    /// session, which then verifies the invite.
    #[must_use]
    pub fn claimed_session(&self) -> Option<SessionId> {
        self.claimed_body().map(|b| b.session)
    }

    /// The invite's body, unverified (for a client showing what it was invited as; the server
    /// verifies).
    #[must_use]
    pub fn claimed_body(&self) -> Option<InviteBody> {
        decode_exact::<InviteBody>(&self.body).ok()
    }
}

/// What a joining client signs to prove it holds the key it announced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinProofBody {
    /// Always [`Domain::JoinProof`].
    pub domain: Domain,
    /// Protocol version of the connection.
    pub version: u16,
    /// Session being joined.
    pub session: SessionId,
    /// The server's challenge nonce.
    pub nonce: [u8; 32],
    /// The key being proven.
    pub public_key: PublicKey,
}

impl JoinProofBody {
    /// The exact bytes signed for this proof.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self)
            .expect("postcard into a Vec fails only on serde features this struct does not use")
    }

    /// Signs the proof.
    #[must_use]
    pub fn sign(&self, signer: &dyn Signer) -> Signature {
        signer.sign(&self.to_bytes())
    }

    /// Checks `signature` over this proof with the announced key.
    ///
    /// # Errors
    /// [`SignatureError::Invalid`] (the author is not known yet, so it is reported as 0).
    pub fn verify(&self, signature: &Signature) -> Result<(), SignatureError> {
        let key =
            verifying_key(&self.public_key).map_err(|_| SignatureError::Invalid(AuthorId(0)))?;
        if verify_one(&key, &self.to_bytes(), signature) {
            Ok(())
        } else {
            Err(SignatureError::Invalid(AuthorId(0)))
        }
    }
}

/// First message of a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The hard protocol version; must be the first field forever.
    pub protocol_version: u16,
    /// Soft build id (git describe); a mismatch only warns.
    pub build_id: String,
    /// The key the client will sign with.
    pub public_key: PublicKey,
    /// The invite being redeemed.
    pub invite: Invite,
}

/// The server's challenge after a `Hello`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// Random nonce to sign (randomness is an input of the session).
    pub nonce: [u8; 32],
    /// The server's build id.
    pub server_build_id: String,
}

/// The client's answer to the challenge: a signature over [`JoinProofBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinProof {
    /// Signature.
    pub signature: Signature,
}

/// Join accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The session joined.
    pub session: SessionId,
    /// The author id assigned to this client.
    pub author: AuthorId,
    /// The role granted by the invite.
    pub role: Role,
    /// The next sequence number the server expects from this author.
    pub next_seq: u64,
    /// The server's Lamport clock: the log position the snapshot that follows is at.
    pub log_position: u64,
    /// The server's presence tick (`--presence-tick-ms`): how often it sends each member the
    /// others' latest presence, and so how long a client takes to draw another member moving
    /// to an update ([`crate::presence::playout`]); 0: each update is sent at once, drawn at
    /// once.
    pub presence_tick_ms: u32,
}

/// Why a join was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinRefusal {
    /// The client speaks a protocol version the server does not.
    UnsupportedVersion {
        /// What the server speaks.
        supported: Vec<u16>,
    },
    /// The invite failed a check.
    InvalidInvite,
    /// The invite has expired.
    InviteExpired,
    /// The proof of key possession does not verify.
    BadProof,
    /// The key is malformed or weak.
    BadKey,
    /// The session does not exist or is closed.
    NoSuchSession,
    /// The session is at its participant limit.
    SessionFull,
    /// An admin revoked the invite.
    InviteRevoked,
    /// The invite has admitted as many keys as it may.
    InviteUsedUp,
}

/// Join refused, with a sentence for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRefused {
    /// Machine-readable reason.
    pub reason: JoinRefusal,
    /// Human-readable explanation.
    pub message: String,
}

/// Entries submitted by an author, in its own sequence order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submit {
    /// Signed entries, each one byte string on the wire ([`crate::sign::as_wire`]).
    #[serde(with = "crate::sign::as_wire")]
    pub entries: Vec<crate::sign::SignedEntry>,
}

/// Accepted log entries, in the server's order, as signed by their authors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entries {
    /// Signed entries, each one byte string on the wire ([`crate::sign::as_wire`]).
    #[serde(with = "crate::sign::as_wire")]
    pub entries: Vec<crate::sign::SignedEntry>,
}

/// An entry of the receiving author was accepted and is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The author's sequence number.
    pub seq: u64,
    /// Its position in the total order.
    pub id: CommandId,
}

/// Machine-readable reason for refusing a submitted entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalCode {
    /// Undecodable body or a value outside its domain.
    Malformed,
    /// Protocol version in the body is not the connection's.
    WrongVersion,
    /// Signed for another session.
    WrongSession,
    /// The author is not registered.
    UnknownAuthor,
    /// Signed with a key other than the registered one.
    KeyMismatch,
    /// The signature does not verify.
    BadSignature,
    /// The author's role is too low.
    Permission,
    /// Sequence number reused or not increasing.
    Replay,
    /// Lost against a concurrent entry on the same scope.
    Conflict,
    /// The author is over its rate limit.
    RateLimited,
    /// The edit would break a mesh (the message names the element).
    Topology,
    /// The edit's result would exceed a size limit; nothing was computed.
    Limit,
    /// An undo or redo was refused: nothing to undo, or someone else has since changed or
    /// built on what the step changed (the message names them).
    Undo,
}

impl RefusalCode {
    /// snake_case name, for metrics labels and logs.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::WrongVersion => "wrong_version",
            Self::WrongSession => "wrong_session",
            Self::UnknownAuthor => "unknown_author",
            Self::KeyMismatch => "key_mismatch",
            Self::BadSignature => "bad_signature",
            Self::Permission => "permission",
            Self::Replay => "replay",
            Self::Conflict => "conflict",
            Self::RateLimited => "rate_limited",
            Self::Topology => "topology",
            Self::Limit => "limit",
            Self::Undo => "undo",
        }
    }
}

impl JoinRefusal {
    /// snake_case name, for metrics labels and logs.
    #[must_use]
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::UnsupportedVersion { .. } => "unsupported_version",
            Self::InvalidInvite => "invalid_invite",
            Self::InviteExpired => "invite_expired",
            Self::BadProof => "bad_proof",
            Self::BadKey => "bad_key",
            Self::NoSuchSession => "no_such_session",
            Self::SessionFull => "session_full",
            Self::InviteRevoked => "invite_revoked",
            Self::InviteUsedUp => "invite_used_up",
        }
    }
}

/// A submitted entry was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRefused {
    /// The author's sequence number (0 when the body could not be read).
    pub seq: u64,
    /// Machine-readable reason.
    pub code: RefusalCode,
    /// Human-readable explanation, shown to the user.
    pub message: String,
}

/// Round-trip probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Echoed back.
    pub nonce: u64,
}

/// Answer to a [`Ping`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The ping's nonce.
    pub nonce: u64,
}

/// Why a connection is being closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloseReason {
    /// The client is leaving.
    Leaving,
    /// The server is shutting down.
    ServerShutdown,
    /// The peer broke the protocol (bad frame, message out of phase).
    ProtocolViolation,
    /// The client fell too far behind; it should reconnect and resync.
    TooSlow,
    /// An admin removed the client.
    Kicked,
    /// Nothing was heard for too long.
    IdleTimeout,
}

/// Orderly close, with a sentence for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Close {
    /// Machine-readable reason.
    pub reason: CloseReason,
    /// Human-readable explanation.
    pub message: String,
}

/// Largest snapshot chunk payload.
pub const SNAPSHOT_CHUNK_BYTES: usize = 64 * 1024;

/// Announces a snapshot of the scene: what it covers and how to check every chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// Entries the snapshot covers (the replication position).
    pub position: u64,
    /// Largest Lamport time in it.
    pub lamport: u64,
    /// Bytes of the encoded scene.
    pub total_bytes: u64,
    /// SHA-256 of the encoded scene (= its state hash).
    pub state_hash: [u8; 32],
    /// SHA-256 of each chunk, in order.
    pub chunk_hashes: Vec<[u8; 32]>,
    /// How the chunks, put together, encode the scene.
    pub encoding: SnapshotEncoding,
}

/// How a snapshot's chunks, put together (`total_bytes` of them), encode the scene.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotEncoding {
    /// They are the scene's canonical encoding.
    #[default]
    Raw,
    /// They are one zstd frame (no dictionary) of the scene's canonical encoding, which is
    /// `scene_bytes` long. A replica refuses a claim above [`MAX_SNAPSHOT_SCENE_BYTES`] or above
    /// [`MAX_SNAPSHOT_RATIO`] times the bytes that arrived, and stops inflating at the claim.
    Zstd {
        /// Bytes of the scene's encoding once inflated.
        scene_bytes: u64,
    },
}

impl SnapshotManifest {
    /// Bytes of the scene's encoding the snapshot carries, compressed or not.
    #[must_use]
    pub const fn scene_bytes(&self) -> u64 {
        match self.encoding {
            SnapshotEncoding::Raw => self.total_bytes,
            SnapshotEncoding::Zstd { scene_bytes } => scene_bytes,
        }
    }
}

/// The zstd level a server compresses snapshots at: level 1's window (at most 512 KiB) stays
/// inside [`MAX_SNAPSHOT_WINDOW`], which every replica accepts. Raising it means checking that.
pub const SNAPSHOT_ZSTD_LEVEL: i32 = 1;
/// Largest zstd window a snapshot may use: a frame that asks for more is refused before the
/// decoder reserves it.
pub const MAX_SNAPSHOT_WINDOW: u64 = 8 << 20;

/// The largest scene a compressed snapshot may claim to inflate to (1 GiB).
pub const MAX_SNAPSHOT_SCENE_BYTES: u64 = 1 << 30;
/// How many times the compressed bytes a snapshot may claim to inflate to. Real scenes stay
/// far below it (a 10,000-primitive session compresses 6× at the server's level 1); it bounds what a hostile server
/// can make a replica allocate per byte it sends.
pub const MAX_SNAPSHOT_RATIO: u64 = 256;

/// One piece of a snapshot, at most [`SNAPSHOT_CHUNK_BYTES`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// Index in the manifest.
    pub index: u32,
    /// Bytes of the encoded scene.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// The server's state hash at a position, sent periodically so replicas can check themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateHash {
    /// Entries applied.
    pub position: u64,
    /// SHA-256 of the canonical scene encoding.
    pub state_hash: [u8; 32],
}

/// The client's replica diverged or missed entries: send a fresh snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resync {
    /// The client's position when it noticed.
    pub position: u64,
}

/// Ask for log history (audit, replay): entries with a Lamport time above `since_lamport`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchLog {
    /// Exclusive lower bound.
    pub since_lamport: u64,
}

/// Log history, in total order; `done` on the last frame. Not applied to the replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Signed entries, each one byte string on the wire ([`crate::sign::as_wire`]).
    #[serde(with = "crate::sign::as_wire")]
    pub entries: Vec<crate::sign::SignedEntry>,
    /// No more frames follow for this request.
    pub done: bool,
}

/// Quantized pose: millimetres and a unit quaternion in 1/32767 steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pose {
    /// Position, millimetres.
    pub position_mm: [i32; 3],
    /// Rotation x, y, z, w scaled by 32767.
    pub rotation: [i16; 4],
}

/// Transient presence (head, hands, cursor), latest-wins, on the unreliable lane. Not logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// Sender's sequence number; older updates than the last seen are dropped.
    pub seq: u32,
    /// Head pose, if tracked.
    pub head: Option<Pose>,
    /// Hand / controller poses.
    pub hands: [Option<Pose>; 2],
    /// A pointer ray hit or 2D cursor in scene space.
    pub cursor: Option<Pose>,
}

/// A presence update relayed to the other clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceOf {
    /// Whose.
    pub author: AuthorId,
    /// The update.
    pub presence: Presence,
}

/// A postcard-encoded [`crate::scene::SceneDelta`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedDelta {
    /// The encoded delta.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

impl EncodedDelta {
    /// The delta, if the bytes hold one.
    #[must_use]
    pub fn decode(&self) -> Option<crate::scene::SceneDelta> {
        postcard::from_bytes(&self.bytes).ok()
    }
}

/// Client → server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// Opens the handshake. Must stay variant 0.
    Hello(Hello),
    /// Answers the challenge.
    JoinProof(JoinProof),
    /// Submits signed entries.
    Submit(Submit),
    /// RTT probe.
    Ping(Ping),
    /// Leaving.
    Close(Close),
    /// Send a fresh snapshot.
    Resync(Resync),
    /// Send log history.
    FetchLog(FetchLog),
    /// A presence update (unreliable lane).
    Presence(Presence),
    /// A live preview of an edit in progress (unreliable lane; never logged).
    Preview(Preview),
    /// A live preview of a mesh edit in progress (unreliable lane; never logged).
    EditPreview(EditPreview),
    /// The mesh elements this member has selected in edit mode (unreliable lane; never logged).
    ElementSelection(ElementSelection),
    /// Answers the challenge like [`ClientMsg::JoinProof`], for a client that reconnects with a
    /// replica in step at `position`: the server catches it up from there (a sealed delta)
    /// instead of sending a snapshot, where it can and that is cheaper.
    Resume(Resume),
    /// Presence and transform previews in their compact, bit-packed form (unreliable lane;
    /// never logged): what [`ClientMsg::Presence`] and [`ClientMsg::Preview`] carry, in a
    /// third of the bytes. Shares the connection's presence sequence (its low 16 bits).
    Motion(crate::motion::Motion),
    /// The dictionaries this client reads packs with, best first (once, after the `Welcome`):
    /// from then on the server packs what it relays to it on the unreliable lane per tick
    /// ([`crate::packed`]).
    Codecs(crate::packed::Codecs),
    /// The part of the world this client wants others' presence, previews and selections of
    /// (reliable lane; holds until the next): [`crate::interest`].
    Interest(crate::interest::Interest),
    /// The part of the scene this client holds (reliable lane; also before the join proof):
    /// [`crate::interest::Hold`]. From then on it is sent [`ServerMsg::Held`] instead of
    /// `Entries` and sealed deltas, and snapshots of the held part only.
    Hold(crate::interest::Hold),
}

/// A rejoin that keeps the replica ([`ClientMsg::Resume`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The join proof's signature (exactly as in [`JoinProof`]).
    pub signature: Signature,
    /// The replica's position (entries applied) when the connection dropped.
    pub position: u64,
}

/// Server → client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// Asks the client to prove its key.
    Challenge(Challenge),
    /// Join accepted.
    Welcome(Welcome),
    /// Join refused.
    JoinRefused(JoinRefused),
    /// Log entries in the server's order.
    Entries(Entries),
    /// One of the client's entries is durable.
    Ack(Ack),
    /// One of the client's entries was refused.
    CommandRefused(CommandRefused),
    /// Answer to a ping.
    Pong(Pong),
    /// Closing the connection.
    Close(Close),
    /// A snapshot follows in chunks.
    Snapshot(SnapshotManifest),
    /// One snapshot chunk.
    SnapshotChunk(SnapshotChunk),
    /// The server's state hash.
    StateHash(StateHash),
    /// Log history.
    History(History),
    /// Another client's presence (unreliable lane).
    Presence(PresenceOf),
    /// The net scene change of the entries made durable in one pass, instead of those entries
    /// (sent when much smaller).
    Delta(EncodedDelta),
    /// A member's last connection closed: forget their presence (cursor, head, hands) and stop
    /// showing their selection.
    Left(Left),
    /// Another member's live preview (unreliable lane).
    Preview(PreviewOf),
    /// Another member's live mesh-edit preview (unreliable lane).
    EditPreview(EditPreviewOf),
    /// Another member's selected mesh elements (unreliable lane).
    ElementSelection(ElementSelectionOf),
    /// The session's members and their keys: the whole roster at join, then every change.
    Roster(Roster),
    /// A scene delta sealed by the server's key (replaces the unsigned [`ServerMsg::Delta`],
    /// which replicas refuse).
    SealedDelta(SealedDelta),
    /// Another member's compact presence and previews, their bytes as sent (unreliable lane;
    /// [`crate::motion::MotionOf::expand`] turns it into presence and preview messages).
    Motion(crate::motion::MotionOf),
    /// The unreliable-lane messages of one tick, packed and compressed ([`crate::packed`]);
    /// sent only to a client that sent `Codecs`.
    Packed(crate::packed::Packed),
    /// What changed of the part of the scene a client holds ([`ClientMsg::Hold`]); sent to it
    /// instead of `Entries` and `SealedDelta`.
    Held(Held),
}

/// An update of a partial replica ([`ServerMsg::Held`]): the entries on what it holds, in the
/// server's order and as their authors signed them, then (sealed by the server) the state of
/// what came into its region or changed without an entry it could apply (an undo, an import, a
/// copy of something it does not hold) and `None` for what left the region or was removed.
///
/// The replica applies the entries, then the delta, and stands at `to_position` with Lamport
/// time `lamport`, whatever number of entries it applied: positions count the server's entries,
/// most of which a partial replica is never sent. With a delta, the seal's state hash is that
/// of the held part after it; without one, the next [`StateHash`] checks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The replica's position this applies to (its last `Held`'s, or its snapshot's).
    pub from_position: u64,
    /// The server's position after it.
    pub to_position: u64,
    /// The largest Lamport time the server applied at `to_position`.
    pub lamport: u64,
    /// Entries on held entities, each one byte string on the wire ([`crate::sign::as_wire`]).
    #[serde(with = "crate::sign::as_wire")]
    pub entries: Vec<crate::sign::SignedEntry>,
    /// The states set after the entries: a [`crate::scene::SceneDelta`] from `from_position`
    /// to `to_position`.
    pub delta: Option<SealedDelta>,
}

/// One member of a session as every replica needs it: to check the signature of each entry
/// it is sent, and to show who did what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The author id entries name.
    pub author: AuthorId,
    /// The key their entries verify against.
    pub public_key: PublicKey,
    /// Their role.
    pub role: Role,
}

/// The session's members ([`ServerMsg::Roster`]). Sent at join (`replace: true`, after the
/// `Welcome` and before the snapshot, in frames of at most [`ROSTER_CHUNK`] members, the first
/// replacing what the replica knew) and whenever a member joins or changes (`replace: false`,
/// before any entry of theirs can arrive: both travel on the one ordered lane). Display names
/// are not here: each author signs their own ([`crate::command::Command::SetDisplayName`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// The session (entries and seals of another session are refused).
    pub session: SessionId,
    /// The key that signs the server's invites and seals its deltas. A client trusts it only
    /// if the invite it joined with verifies against it ([`Invite::signed_by`]).
    pub server_key: PublicKey,
    /// Forget the members known so far before adding these.
    pub replace: bool,
    /// Members added or changed.
    pub members: Vec<Member>,
}

/// Most members in one [`Roster`] frame.
pub const ROSTER_CHUNK: usize = 4096;

/// What the server signs for a [`SealedDelta`]: the delta's bytes (by digest), where it leads
/// and the state hash there. Field order is the signed order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaSeal {
    /// Always [`Domain::Delta`].
    pub domain: Domain,
    /// The session.
    pub session: SessionId,
    /// The replication position after the delta.
    pub position: u64,
    /// The state hash at `position`.
    pub state_hash: [u8; 32],
    /// SHA-256 of the encoded delta.
    pub delta_sha256: [u8; 32],
}

impl DeltaSeal {
    /// The exact bytes signed.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self)
            .expect("postcard into a Vec fails only on serde features this type does not use")
    }
}

/// A scene delta with the server's seal ([`ServerMsg::SealedDelta`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedDelta {
    /// A postcard-encoded [`crate::scene::SceneDelta`].
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    /// The state hash after it.
    pub state_hash: [u8; 32],
    /// The server's signature over the [`DeltaSeal`] of these bytes.
    pub signature: Signature,
}

impl SealedDelta {
    /// Seals `delta` as `server`, for `session`; `state_hash` is the scene's after it.
    #[must_use]
    pub fn seal(
        session: SessionId,
        delta: &crate::scene::SceneDelta,
        state_hash: [u8; 32],
        server: &dyn Signer,
    ) -> Self {
        let bytes = postcard::to_allocvec(delta)
            .expect("postcard into a Vec fails only on serde features the delta does not use");
        Self::seal_encoded(session, delta.to_position, bytes, state_hash, server)
    }

    /// Seals an encoded delta that leads to `position`.
    #[must_use]
    pub fn seal_encoded(
        session: SessionId,
        position: u64,
        bytes: Vec<u8>,
        state_hash: [u8; 32],
        server: &dyn Signer,
    ) -> Self {
        let seal = DeltaSeal {
            domain: Domain::Delta,
            session,
            position,
            state_hash,
            delta_sha256: <sha2::Sha256 as sha2::Digest>::digest(&bytes).into(),
        };
        Self {
            signature: server.sign(&seal.encode()),
            bytes,
            state_hash,
        }
    }

    /// The delta, if the bytes hold one.
    #[must_use]
    pub fn decode(&self) -> Option<crate::scene::SceneDelta> {
        postcard::from_bytes(&self.bytes).ok()
    }
}

/// The mesh elements a member has selected in edit mode (vertices, edges or faces of one
/// entity; `entity: None` when they leave edit mode), so the others see them in the member's
/// colour. Unsigned, latest-wins (the presence sequence), never logged; sent on every change and
/// again every second while it stands, and forgotten by receivers a few seconds after the last
/// one. At most [`MAX_PREVIEW_ELEMENTS`] elements (more are not shown to others).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElementSelection {
    /// The connection's presence sequence number.
    pub seq: u32,
    /// The entity in edit mode, if any.
    pub entity: Option<crate::ids::EntityId>,
    /// Its selected elements.
    pub elements: Vec<crate::editmesh::ElementId>,
}

/// An element selection relayed to the other members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElementSelectionOf {
    /// Whose.
    pub author: AuthorId,
    /// The selection.
    pub selection: ElementSelection,
}

/// Most mesh elements an [`EditPreview`]'s command may name (it must fit one datagram).
pub const MAX_PREVIEW_ELEMENTS: usize = 64;

/// A live preview of a mesh edit in progress (an extrude's distance, a vertex drag): the
/// command the gesture would commit now, unsigned, latest-wins (the connection's presence
/// sequence), never logged; `command: None` ends it. Receivers run it on a copy of the entity
/// (the same operation the server would) and show the result until the entity's committed mesh
/// changes, or a second passes without an update.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EditPreview {
    /// The connection's presence sequence number (shared with [`Presence`]).
    pub seq: u32,
    /// The entity edited.
    pub entity: crate::ids::EntityId,
    /// What the gesture would commit now; `None` when it is over.
    pub command: Option<crate::command::Command>,
}

impl EditPreview {
    /// Whether `command` may travel as a preview of `entity`: a mesh edit of that entity that
    /// passes the value guards and names at most [`MAX_PREVIEW_ELEMENTS`] elements.
    #[must_use]
    pub fn allows(
        command: &crate::command::Command,
        entity: crate::ids::EntityId,
        author: AuthorId,
    ) -> bool {
        use crate::command::Command as C;
        let (target, elements) = match command {
            C::MoveVertices { entity, moves } => (*entity, moves.len()),
            C::ExtrudeFaces { entity, faces, .. }
            | C::SubdivideFaces { entity, faces, .. }
            | C::Smooth { entity, faces, .. } => (*entity, faces.len()),
            C::ExtrudeEdges { entity, edges, .. } => (*entity, edges.len()),
            C::Weld { entity, groups, .. } => (*entity, groups.iter().map(Vec::len).sum()),
            C::Mirror { entity, .. } => (*entity, 0),
            _ => return false,
        };
        target == entity && elements <= MAX_PREVIEW_ELEMENTS && command.validate(author).is_ok()
    }
}

/// A mesh-edit preview relayed to the other members.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EditPreviewOf {
    /// Whose.
    pub author: AuthorId,
    /// The preview.
    pub preview: EditPreview,
}

/// A live preview: where an entity is while its author drags it (a gizmo, a grab), before the
/// release commits one signed command. Unsigned, quantized, latest-wins (it shares the
/// connection's presence sequence), never logged; `transform: None` ends it (released or
/// cancelled). Receivers show it at once and drop it when the entity's committed state
/// changes, or after a second without an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    /// The connection's presence sequence number (shared with [`Presence`]).
    pub seq: u32,
    /// The entity dragged.
    pub entity: crate::ids::EntityId,
    /// Where it is now; `None` when the drag is over.
    pub transform: Option<PreviewTransform>,
}

/// A transform as a preview carries it: position and rotation as a presence [`Pose`],
/// per-axis scale in thousandths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewTransform {
    /// Translation (millimetres) and rotation.
    pub pose: Pose,
    /// Scale per axis, in thousandths.
    pub scale_permille: [u32; 3],
}

/// A preview relayed to the other members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewOf {
    /// Whose.
    pub author: AuthorId,
    /// The preview.
    pub preview: Preview,
}

/// A member left (see [`ServerMsg::Left`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Left {
    /// Who.
    pub author: AuthorId,
}

/// Phases of a connection, as seen by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Nothing received yet: only `Hello`.
    AwaitingHello,
    /// Challenge sent: only the proof.
    AwaitingProof,
    /// Joined.
    Joined,
    /// Closing: nothing more is processed.
    Closing,
}

impl ClientMsg {
    /// The first byte of an encoded `Submit` payload: its variant tag (postcard writes the
    /// variant index first).
    pub const SUBMIT_TAG: u8 = 2;

    /// Whether an encoded payload is a `Submit`, read from its tag without decoding it (the
    /// server times and traces the command path from it).
    #[must_use]
    pub fn payload_is_submit(payload: &[u8]) -> bool {
        payload.first() == Some(&Self::SUBMIT_TAG)
    }

    /// How many entries a `Submit` payload carries, read from its encoding without decoding it:
    /// the tag, then the entry count as postcard writes a sequence length (a LEB128 varint).
    /// `None` for any other message, or a count that does not read (the session's decode then
    /// refuses the payload).
    #[must_use]
    pub fn submit_entry_count(payload: &[u8]) -> Option<u64> {
        if !Self::payload_is_submit(payload) {
            return None;
        }
        let mut count: u64 = 0;
        for (i, byte) in payload.get(1..)?.iter().take(10).enumerate() {
            let shift = u32::try_from(i).ok()?.checked_mul(7)?;
            count |= u64::from(byte & 0x7f).checked_shl(shift)?;
            if byte & 0x80 == 0 {
                return Some(count);
            }
        }
        None
    }

    /// Is this message valid in `phase`? Checked before dispatch; a `false` closes the
    /// connection with [`CloseReason::ProtocolViolation`].
    #[must_use]
    pub const fn allowed_in(&self, phase: Phase) -> bool {
        match (self, phase) {
            (Self::Hello(_), Phase::AwaitingHello)
            | (Self::JoinProof(_) | Self::Resume(_), Phase::AwaitingProof)
            | (
                Self::Submit(_)
                | Self::Ping(_)
                | Self::Resync(_)
                | Self::FetchLog(_)
                | Self::Presence(_)
                | Self::Preview(_)
                | Self::EditPreview(_)
                | Self::ElementSelection(_)
                | Self::Motion(_)
                | Self::Codecs(_)
                | Self::Interest(_),
                Phase::Joined,
            )
            | (Self::Hold(_), Phase::AwaitingProof | Phase::Joined)
            | (Self::Close(_), Phase::AwaitingHello | Phase::AwaitingProof | Phase::Joined) => true,
            (Self::Hello(_), _)
            | (Self::JoinProof(_) | Self::Resume(_), _)
            | (
                Self::Submit(_)
                | Self::Ping(_)
                | Self::Resync(_)
                | Self::FetchLog(_)
                | Self::Presence(_)
                | Self::Preview(_)
                | Self::EditPreview(_)
                | Self::ElementSelection(_)
                | Self::Motion(_)
                | Self::Codecs(_)
                | Self::Interest(_),
                _,
            )
            | (Self::Hold(_), Phase::AwaitingHello | Phase::Closing)
            | (Self::Close(_), Phase::Closing) => false,
        }
    }
}

/// Reads the protocol version from an encoded `ClientMsg::Hello` of any version, without
/// decoding the rest. `None` if the bytes do not start like a `Hello`.
#[must_use]
pub fn peek_hello_version(payload: &[u8]) -> Option<u16> {
    let (tag, rest) = postcard::take_from_bytes::<u32>(payload).ok()?;
    if tag != 0 {
        return None;
    }
    postcard::take_from_bytes::<u16>(rest).ok().map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::Ed25519Signer;

    fn server() -> Ed25519Signer {
        Ed25519Signer::from_seed([9; 32])
    }

    fn invite_body(expires_at_ms: u64) -> InviteBody {
        InviteBody {
            domain: Domain::Invite,
            session: SessionId([1; 16]),
            role: Role::Editor,
            expires_at_ms,
            invite_id: [2; 16],
        }
    }

    #[test]
    fn a_submit_is_told_by_its_tag_alone() {
        let submit = postcard::to_allocvec(&ClientMsg::Submit(Submit {
            entries: alloc::vec![],
        }))
        .unwrap();
        assert!(ClientMsg::payload_is_submit(&submit));
        let ping = postcard::to_allocvec(&ClientMsg::Ping(Ping { nonce: 2 })).unwrap();
        assert!(!ClientMsg::payload_is_submit(&ping));
        assert!(!ClientMsg::payload_is_submit(&[]));
        assert_eq!(ClientMsg::submit_entry_count(&submit), Some(0));
        assert_eq!(ClientMsg::submit_entry_count(&ping), None);
        // Counts past one varint byte, read without decoding the entries.
        let entry = crate::sign::SignedEntry {
            body: alloc::vec![7; 3],
            signature: Signature([0; 64]),
        };
        for n in [1usize, 127, 128, 300] {
            let many = postcard::to_allocvec(&ClientMsg::Submit(Submit {
                entries: alloc::vec![entry.clone(); n],
            }))
            .unwrap();
            assert_eq!(ClientMsg::submit_entry_count(&many), Some(n as u64));
        }
        assert_eq!(
            ClientMsg::submit_entry_count(&[ClientMsg::SUBMIT_TAG, 0x80]),
            None
        );
    }

    #[test]
    fn invites_verify_and_each_check_has_its_error() {
        let s = server();
        let inv = Invite::mint(&invite_body(1_000), &s).unwrap();
        assert_eq!(
            inv.verify(&s.public_key(), SessionId([1; 16]), 999),
            Ok(invite_body(1_000))
        );
        assert_eq!(
            inv.verify(&s.public_key(), SessionId([1; 16]), 1_000),
            Err(InviteError::Expired)
        );
        assert_eq!(
            inv.verify(&s.public_key(), SessionId([3; 16]), 0),
            Err(InviteError::WrongSession)
        );
        let other = Ed25519Signer::from_seed([8; 32]);
        assert_eq!(
            inv.verify(&other.public_key(), SessionId([1; 16]), 0),
            Err(InviteError::BadSignature)
        );
    }

    #[test]
    fn a_join_proof_is_not_an_invite() {
        // Cross-domain confusion: a client's proof signature over bytes that decode as an
        // invite must not verify as one, because the domain tag differs.
        let client = Ed25519Signer::from_seed([4; 32]);
        let proof = JoinProofBody {
            domain: Domain::JoinProof,
            version: 1,
            session: SessionId([1; 16]),
            nonce: [0; 32],
            public_key: client.public_key(),
        };
        let sig = proof.sign(&client);
        let forged = Invite {
            body: proof.to_bytes(),
            signature: sig,
        };
        assert_eq!(
            forged.verify(&client.public_key(), SessionId([1; 16]), 0),
            Err(InviteError::Malformed)
        );
        assert_eq!(proof.verify(&sig), Ok(()));
    }

    #[test]
    fn tickets_round_trip_as_text() {
        let s = server();
        let ticket = JoinTicket {
            quic_addr: "127.0.0.1:4433".into(),
            cert_sha256: [5; 32],
            invite: Invite::mint(&invite_body(9), &s).unwrap(),
        };
        let text = ticket.to_text();
        assert!(text.starts_with(JoinTicket::PREFIX));
        assert_eq!(
            JoinTicket::from_text(&format!("  {text}\n")),
            Ok(ticket.clone())
        );
        assert_eq!(JoinTicket::from_text("mwj1_!!"), Err(TicketError));
        assert_eq!(JoinTicket::from_text(&text[1..]), Err(TicketError));
        assert_eq!(ticket.invite.claimed_session(), Some(SessionId([1; 16])));
    }

    #[test]
    fn message_validity_per_phase() {
        let ping = ClientMsg::Ping(Ping { nonce: 1 });
        assert!(!ping.allowed_in(Phase::AwaitingHello));
        assert!(ping.allowed_in(Phase::Joined));
        let proof = ClientMsg::JoinProof(JoinProof {
            signature: Signature([0; 64]),
        });
        assert!(proof.allowed_in(Phase::AwaitingProof));
        assert!(!proof.allowed_in(Phase::Joined));
        let close = ClientMsg::Close(Close {
            reason: CloseReason::Leaving,
            message: String::new(),
        });
        assert!(close.allowed_in(Phase::AwaitingHello) && !close.allowed_in(Phase::Closing));
    }

    #[test]
    fn hello_version_can_be_read_from_any_version() {
        let s = server();
        let hello = ClientMsg::Hello(Hello {
            protocol_version: 7,
            build_id: "x".into(),
            public_key: s.public_key(),
            invite: Invite::mint(&invite_body(5), &s).unwrap(),
        });
        let bytes = postcard::to_allocvec(&hello).unwrap();
        assert_eq!(peek_hello_version(&bytes), Some(7));
        let ping = postcard::to_allocvec(&ClientMsg::Ping(Ping { nonce: 1 })).unwrap();
        assert_eq!(peek_hello_version(&ping), None);
    }
}
