//! The command log: signed entries in Lamport order, each with its resolution status.
//!
//! Every entry passes, in this order: decode → version → session → signature (author known, key
//! named, signature valid) → role → payload guards → Lamport sanity → replay / duplicate →
//! conflict resolution → the caller's scene check (the authority applies the command to a scratch
//! copy of its scene: topology and size limits). Nothing is stored before the permission check;
//! every refusal is a typed [`Refusal`].
//!
//! A command may touch several scopes (a vertex move: one per vertex); it conflicts with an
//! entry when they share a scope, and each shared scope is resolved as below.
//!
//! Conflicts: two entries conflict when their scopes are equal and the later one (in total
//! order) was issued without having seen the earlier (`later.seen_lamport < earlier.lamport`).
//! The later entry's strategy decides: merge keeps both, last-write-wins marks the earlier
//! `Superseded`, reject marks the later `Rejected`.
//!
//! Two modes:
//! - [`Mode::Replica`]: the statuses are a pure function of the *set* of entries integrated, so
//!   replicas that receive the same entries in any order and any batch split hold identical logs
//!   (byte for byte, [`CommandLog::encode`]). To stay order-independent a replica keeps rejected
//!   entries (a later arrival can reinstate them) and may retract an entry when an earlier
//!   conflicting one arrives late.
//! - [`Mode::Authority`]: the server. Once an entry is accepted it is never retracted (it may
//!   have been acknowledged): an arrival that would retract an accepted entry is refused
//!   instead. Refused entries are not stored, but their sequence numbers count as used.

use std::collections::{BTreeMap, BTreeSet};

use meshwork_protocol::registry::{PermissionDenied, check_permission};
use meshwork_protocol::sign::SignedItem;
use meshwork_protocol::wire::RefusalCode;
use meshwork_protocol::{
    AuthorId, Command, CommandId, EntryBody, KeyRing, LamportClock, PROTOCOL_VERSION, PayloadError,
    PublicKey, Scope, SessionId, SignatureError, SignedEntry, Signer, Strategy, Verifier,
};
use serde::{Deserialize, Serialize};

/// How far ahead of the authority's clock an author's timestamp may be. An honest author is at
/// most one tick ahead per entry of its own still in flight; the bound keeps a hostile
/// timestamp from exhausting the clock.
pub const MAX_LAMPORT_LEAD: u64 = 1 << 20;

/// Which rules the log follows (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The session server: accepted entries are final.
    Authority,
    /// A replica: the state is a function of the set of entries integrated.
    Replica,
}

/// The resolution of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// In effect.
    Applied,
    /// Overwritten by a concurrent last-write-wins entry later in total order.
    Superseded {
        /// The winner.
        by: CommandId,
    },
    /// Refused: a concurrent entry earlier in total order holds the scope (replicas only keep
    /// these; see the module docs).
    Rejected {
        /// The entry it lost to.
        by: CommandId,
    },
}

impl Status {
    const fn is_rejected(self) -> bool {
        matches!(self, Self::Rejected { .. })
    }
}

/// One entry of the log.
#[derive(Clone, Debug)]
pub struct LogEntry {
    /// Position in the total order.
    pub id: CommandId,
    /// The decoded signed body.
    pub body: EntryBody,
    /// The entry exactly as signed and sent.
    pub signed: SignedEntry,
    /// Its resolution.
    pub status: Status,
}

/// Which replay rule an entry broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayKind {
    /// The sequence number is not above the author's last one (authority).
    SeqNotIncreasing {
        /// The last sequence number seen from the author.
        last: u64,
    },
    /// The sequence number is already used by another entry (replica).
    SeqReused,
    /// Another entry already has this `CommandId` (the author equivocated).
    IdReused,
}

/// Why an entry was refused. Each variant is one kind of fault a client can be told about.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The body is not a valid entry, or a value is outside its domain.
    #[error("malformed entry: {0}")]
    Malformed(String),
    /// The body names a protocol version this log does not speak.
    #[error("entry is for protocol version {got}, this session speaks {PROTOCOL_VERSION}")]
    WrongVersion {
        /// The version in the body.
        got: u16,
    },
    /// The body is signed for another session.
    #[error("entry is signed for session {got}, not this one")]
    WrongSession {
        /// The session in the body.
        got: SessionId,
    },
    /// The author is not registered in this session.
    #[error("{0} is not a participant of this session")]
    UnknownAuthor(AuthorId),
    /// The entry names a key other than the author's registered key.
    #[error("{0} signed with a key that is not its registered key")]
    KeyMismatch(AuthorId),
    /// The signature does not verify: forged or corrupted.
    #[error("the signature of {0} does not verify")]
    BadSignature(AuthorId),
    /// The author's role does not allow the command.
    #[error("permission denied: {0}")]
    Permission(#[from] PermissionDenied),
    /// The sequence number or id was already used.
    #[error("replayed entry from {author} (seq {seq}): {kind:?}")]
    Replay {
        /// The author.
        author: AuthorId,
        /// The sequence number in the body.
        seq: u64,
        /// Which rule.
        kind: ReplayKind,
    },
    /// The entry names an author other than the connection that submitted it.
    #[error("entry names {author} but was submitted by {sender}")]
    NotSender {
        /// The author in the body.
        author: AuthorId,
        /// The submitting connection's author.
        sender: AuthorId,
    },
    /// The edit would break a mesh.
    #[error("topology: {0}")]
    Topology(String),
    /// The edit's result would exceed a size limit.
    #[error("limit: {0}")]
    Limit(String),
    /// The edit names an element that an earlier command deleted or replaced.
    #[error("conflict: {0}")]
    Gone(String),
    /// An undo or redo was refused (nothing to undo, or someone changed or built on the step).
    #[error("{0}")]
    Undo(meshwork_protocol::history::UndoRefusal),
    /// A concurrent entry earlier in total order holds the scope.
    #[error(
        "an edit by {author} to {scope} came first, and this one was made without seeing it",
        author = .with.author
    )]
    Conflict {
        /// The entry that holds the scope.
        with: CommandId,
        /// The contested scope.
        scope: Scope,
    },
}

impl From<SignatureError> for Refusal {
    fn from(e: SignatureError) -> Self {
        match e {
            SignatureError::UnknownAuthor(a) => Self::UnknownAuthor(a),
            SignatureError::KeyMismatch(a) => Self::KeyMismatch(a),
            SignatureError::Invalid(a) => Self::BadSignature(a),
        }
    }
}

impl From<PayloadError> for Refusal {
    fn from(e: PayloadError) -> Self {
        Self::Malformed(e.to_string())
    }
}

impl Refusal {
    /// The wire code sent to the author.
    #[must_use]
    pub const fn code(&self) -> RefusalCode {
        match self {
            Self::Malformed(_) | Self::NotSender { .. } => RefusalCode::Malformed,
            Self::WrongVersion { .. } => RefusalCode::WrongVersion,
            Self::WrongSession { .. } => RefusalCode::WrongSession,
            Self::UnknownAuthor(_) => RefusalCode::UnknownAuthor,
            Self::KeyMismatch(_) => RefusalCode::KeyMismatch,
            Self::BadSignature(_) => RefusalCode::BadSignature,
            Self::Permission(_) => RefusalCode::Permission,
            Self::Replay { .. } => RefusalCode::Replay,
            Self::Conflict { .. } | Self::Gone(_) => RefusalCode::Conflict,
            Self::Topology(_) => RefusalCode::Topology,
            Self::Undo(_) => RefusalCode::Undo,
            Self::Limit(_) => RefusalCode::Limit,
        }
    }
}

/// What integrating an entry did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Integrated {
    /// Stored.
    Appended {
        /// Its position.
        id: CommandId,
        /// Its status (`Applied` or `Superseded`).
        status: Status,
        /// Other entries whose status changed because of it, with their new status.
        changed: Vec<(CommandId, Status)>,
    },
    /// The very same entry was already in the log; nothing changed.
    Duplicate {
        /// Its position.
        id: CommandId,
    },
}

#[derive(Clone, Debug, Default)]
struct AuthorState {
    /// Highest sequence number of any signature-valid entry (stored or refused).
    high_seq: Option<u64>,
    /// Highest Lamport timestamp of the author's stored entries.
    high_lamport: u64,
    /// Sequence number → entry, for replicas' reuse detection (the authority keeps none: its
    /// sequence numbers only ever rise).
    seqs: BTreeMap<u64, CommandId>,
}

/// What the authority still knows of the entries it let go of ([`CommandLog::let_go`]): enough
/// to keep conflict resolution exact or, where it cannot be, to refuse.
#[derive(Debug, Default)]
struct LetGo {
    /// How many entries were let go.
    count: u64,
    /// The largest id let go (an entry accepted below it since may still be held).
    floor: Option<CommandId>,
    /// Per scope, the latest entry let go in it. One item per scope ever let go (entities and
    /// mesh elements that were edited), not per entry.
    scopes: BTreeMap<Scope, ScopeItem>,
    /// The latest [`RECENT_LET_GO`] entries let go, by author and sequence number: their id and
    /// digest, so an author that sends one again (its ack was lost with its connection) is
    /// told it is a duplicate, not a replay.
    recent: BTreeMap<(AuthorId, u64), (CommandId, [u8; 32])>,
    /// The same keys, oldest first.
    recent_order: std::collections::VecDeque<(AuthorId, u64)>,
}

/// What an authority's log keeps of a history it no longer holds at all: its state once every
/// entry up to a point was let go ([`CommandLog::base`]). A session restarts from it without
/// the entries it covers (they were rotated out of the store into an archive) and judges what
/// comes after exactly as a log that let go of them would.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogBase {
    /// The Lamport clock.
    pub clock: u64,
    /// Largest Lamport timestamp of any entry.
    pub seen_lamport: u64,
    /// Per author: highest sequence number and highest Lamport timestamp.
    pub authors: Vec<(AuthorId, Option<u64>, u64)>,
    /// Entries let go (all of them, up to the base).
    pub count: u64,
    /// The largest id let go.
    pub floor: Option<CommandId>,
    /// Per scope, the latest entry let go: id, what it had seen, its strategy.
    pub scopes: Vec<(Scope, CommandId, u64, Strategy)>,
    /// The latest entries let go (author, sequence, id, digest), oldest first.
    pub recent: Vec<(AuthorId, u64, CommandId, [u8; 32])>,
}

/// Entries let go that the log still recognizes when they are sent again.
pub const RECENT_LET_GO: usize = 16_384;

/// A digest of an entry exactly as signed.
fn entry_digest(signed: &SignedEntry) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(&signed.body);
    h.update(signed.signature.0);
    h.finalize().into()
}

impl LetGo {
    /// An entry let go that `candidate` conflicts with and that resolution without the
    /// entries let go cannot decide, with the scope; `None` when every entry let go in the
    /// candidate's scopes was seen by it, or when the outcome is known without them.
    ///
    /// The latest entry let go in a scope, `last`, decides: the candidate saw every entry let go
    /// there when it saw `last` (they all sort at or below it). If not, a merge changes nothing,
    /// and a last-write-wins candidate after `last` in total order supersedes whatever it did not
    /// see (statuses of entries let go are not kept; the scene applies by total order either
    /// way); a merge after `last` changes nothing let go either (only later entries can lose to
    /// it). Anything else — a reject candidate, or any candidate that sorts before `last`, which
    /// a reject entry let go might lose to, or a last-write-wins one supersede — would need the
    /// entries let go to resolve, so the authority refuses it as a conflict with `last` (an
    /// authority may always refuse; it never accepts what full resolution would refuse).
    fn conflict(&self, scopes: &[Scope], candidate: ScopeItem) -> Option<(CommandId, Scope)> {
        scopes.iter().find_map(|scope| {
            let last = self.scopes.get(scope)?;
            if last.id.lamport <= candidate.seen_lamport {
                return None;
            }
            match candidate.strategy {
                Strategy::Merge | Strategy::LastWriteWins if candidate.id > last.id => None,
                Strategy::Merge | Strategy::LastWriteWins | Strategy::Reject => {
                    Some((last.id, *scope))
                }
            }
        })
    }
}

/// The ordered, signed, conflict-resolved command log of one session.
#[derive(Debug)]
pub struct CommandLog {
    mode: Mode,
    session: SessionId,
    keys: KeyRing,
    clock: LamportClock,
    /// Largest Lamport timestamp of any stored entry.
    seen_lamport: u64,
    entries: BTreeMap<CommandId, LogEntry>,
    scopes: BTreeMap<Scope, BTreeSet<CommandId>>,
    authors: BTreeMap<AuthorId, AuthorState>,
    /// Entries the authority no longer holds in memory.
    let_go: LetGo,
}

/// What conflict resolution needs of an entry.
#[derive(Clone, Copy, Debug)]
struct ScopeItem {
    id: CommandId,
    seen_lamport: u64,
    strategy: Strategy,
}

impl CommandLog {
    /// An empty log for `session`, verifying against `keys`.
    #[must_use]
    pub fn new(mode: Mode, session: SessionId, keys: KeyRing) -> Self {
        Self {
            mode,
            session,
            keys,
            clock: LamportClock::new(),
            seen_lamport: 0,
            entries: BTreeMap::new(),
            scopes: BTreeMap::new(),
            authors: BTreeMap::new(),
            let_go: LetGo::default(),
        }
    }

    /// The session this log belongs to.
    #[must_use]
    pub const fn session(&self) -> SessionId {
        self.session
    }

    /// The registered authors.
    #[must_use]
    pub const fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The registered authors, for joins and role changes.
    pub const fn keys_mut(&mut self) -> &mut KeyRing {
        &mut self.keys
    }

    /// The Lamport clock's current time.
    #[must_use]
    pub const fn clock(&self) -> u64 {
        self.clock.now()
    }

    /// The largest Lamport timestamp of any stored entry.
    #[must_use]
    pub const fn seen_lamport(&self) -> u64 {
        self.seen_lamport
    }

    /// Number of stored entries (replicas include rejected ones), those let go included.
    #[must_use]
    pub fn len(&self) -> usize {
        usize::try_from(self.let_go.count)
            .unwrap_or(usize::MAX)
            .saturating_add(self.entries.len())
    }

    /// True when nothing is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of entries held in memory (all of them unless some were let go).
    #[must_use]
    pub fn held(&self) -> usize {
        self.entries.len()
    }

    /// Number of entries let go of ([`CommandLog::let_go`]).
    #[must_use]
    pub const fn let_go_count(&self) -> u64 {
        self.let_go.count
    }

    /// The largest id let go (`None`: nothing let go). Entries at or below it are not held,
    /// but for one accepted below it since (an old offline edit), until the next `let_go`.
    #[must_use]
    pub const fn floor(&self) -> Option<CommandId> {
        self.let_go.floor
    }

    /// One held entry by id.
    #[must_use]
    pub fn get(&self, id: &CommandId) -> Option<&LogEntry> {
        self.entries.get(id)
    }

    /// Every held entry in total order.
    pub fn iter(&self) -> impl Iterator<Item = &LogEntry> {
        self.entries.values()
    }

    /// Lets go of the oldest held entries (in total order) until at most `keep` are held,
    /// stopping early at the first one `pinned` names (an entry accepted but not yet durable
    /// must stay: the session still applies and fans it out). The authority only; a replica's
    /// statuses depend on every entry, so it keeps them all.
    ///
    /// What stays of an entry let go: the author's sequence and Lamport high marks (replay
    /// protection is unchanged), the clock, and per scope the latest entry let go (its id, seen
    /// Lamport timestamp and strategy), against which later entries are resolved (see
    /// [`LetGo::conflict`]). Its status stays what it was; a later entry that supersedes it does
    /// not change it. Returns how many were let go.
    pub fn let_go(&mut self, keep: usize, pinned: &dyn Fn(&CommandId) -> bool) -> usize {
        if self.mode != Mode::Authority {
            return 0;
        }
        let mut n = 0usize;
        while self.entries.len() > keep {
            let Some(mut first) = self.entries.first_entry() else {
                break;
            };
            if pinned(first.key()) {
                break;
            }
            let e = first.get_mut();
            let id = e.id;
            let item = ScopeItem {
                id,
                seen_lamport: e.body.seen_lamport,
                strategy: e.body.command.rule().strategy,
            };
            for scope in e.body.command.scopes(id.author) {
                if let std::collections::btree_map::Entry::Occupied(mut members) =
                    self.scopes.entry(scope)
                {
                    members.get_mut().remove(&id);
                    if members.get().is_empty() {
                        members.remove();
                    }
                }
                // The latest let go in a scope (an entry accepted below the floor may go
                // after later ones).
                let latest = self.let_go.scopes.entry(scope).or_insert(item);
                if latest.id < id {
                    *latest = item;
                }
            }
            let key = (id.author, e.body.seq);
            let digest = entry_digest(&e.signed);
            first.remove();
            self.let_go.recent.insert(key, (id, digest));
            self.let_go.recent_order.push_back(key);
            if self.let_go.recent_order.len() > RECENT_LET_GO
                && let Some(old) = self.let_go.recent_order.pop_front()
            {
                self.let_go.recent.remove(&old);
            }
            // An entry accepted below the floor (an old offline edit) may go first.
            self.let_go.floor = self.let_go.floor.max(Some(id));
            self.let_go.count = self.let_go.count.saturating_add(1);
            n = n.saturating_add(1);
        }
        n
    }

    /// What a session restarts from once the entries so far are rotated out of its store
    /// ([`CommandLog::from_base`]): what is kept of the entries let go, and the entries still
    /// held, as signed and with their statuses. The held ones must come back as held: later
    /// entries are resolved against them as they were in the log that went on (a restore does
    /// not judge replayed entries against entries let go), so a restart from the base resolves
    /// every later entry as a restart from the first entry does. Authority only.
    #[must_use]
    pub fn base(&self) -> (LogBase, Vec<(SignedEntry, Status)>) {
        let held = self
            .entries
            .values()
            .map(|e| (e.signed.clone(), e.status))
            .collect();
        let base = LogBase {
            clock: self.clock.now(),
            seen_lamport: self.seen_lamport,
            authors: self
                .authors
                .iter()
                .map(|(a, s)| (*a, s.high_seq, s.high_lamport))
                .collect(),
            count: self.let_go.count,
            floor: self.let_go.floor,
            scopes: self
                .let_go
                .scopes
                .iter()
                .map(|(scope, i)| (*scope, i.id, i.seen_lamport, i.strategy))
                .collect(),
            recent: self
                .let_go
                .recent_order
                .iter()
                .filter_map(|k| self.let_go.recent.get(k).map(|(id, d)| (k.0, k.1, *id, *d)))
                .collect(),
        };
        (base, held)
    }

    /// An authority's log that continues from `base` and the entries it held
    /// ([`CommandLog::base`]), verifying against `keys`. The held entries are stored with the
    /// statuses they had (this authority accepted and resolved them); one whose body does not
    /// decode (impossible in a base this server signed) is left out.
    #[must_use]
    pub fn from_base(
        session: SessionId,
        keys: KeyRing,
        base: &LogBase,
        held: &[(SignedEntry, Status)],
    ) -> Self {
        let mut log = Self::new(Mode::Authority, session, keys);
        log.seen_lamport = base.seen_lamport;
        for (author, high_seq, high_lamport) in &base.authors {
            log.authors.insert(
                *author,
                AuthorState {
                    high_seq: *high_seq,
                    high_lamport: *high_lamport,
                    seqs: BTreeMap::new(),
                },
            );
        }
        log.let_go.count = base.count;
        log.let_go.floor = base.floor;
        for (scope, id, seen_lamport, strategy) in &base.scopes {
            log.let_go.scopes.insert(
                *scope,
                ScopeItem {
                    id: *id,
                    seen_lamport: *seen_lamport,
                    strategy: *strategy,
                },
            );
        }
        for (author, seq, id, digest) in &base.recent {
            log.let_go.recent.insert((*author, *seq), (*id, *digest));
            log.let_go.recent_order.push_back((*author, *seq));
        }
        for (signed, status) in held {
            if let Ok(body) = signed.decode_body() {
                let scopes = body.command.scopes(body.author);
                log.store(&scopes, signed.clone(), body, *status, &[]);
            }
        }
        // The clock is the base's, exactly, set once the held entries are stored (storing
        // observes each one's time).
        log.clock = LamportClock::new();
        if let Some(before) = base.clock.checked_sub(1) {
            log.clock.observe(before);
        }
        log
    }

    /// Entries in effect or superseded (not rejected) with a Lamport timestamp above `lamport`,
    /// in total order: what a client that has seen up to `lamport` is missing. Only held
    /// entries: when some were let go ([`CommandLog::floor`]), older history is in the store.
    pub fn entries_since(&self, lamport: u64) -> impl Iterator<Item = &LogEntry> {
        let start = CommandId::first_at(lamport.saturating_add(1));
        self.entries
            .range(start..)
            .map(|(_, e)| e)
            .filter(move |e| e.id.lamport > lamport && !e.status.is_rejected())
    }

    /// The next sequence number `author` should use.
    #[must_use]
    pub fn next_seq(&self, author: AuthorId) -> u64 {
        self.authors
            .get(&author)
            .and_then(|a| a.high_seq)
            .map_or(1, |s| s.saturating_add(1))
    }

    /// Canonical encoding of the whole log (entries as signed, in order, with statuses).
    /// Replicas holding the same log produce the same bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let items: Vec<(&SignedEntry, Status)> = self
            .entries
            .values()
            .map(|e| (&e.signed, e.status))
            .collect();
        postcard::to_allocvec(&items)
            .expect("postcard into a Vec fails only on serde features these types do not use")
    }

    /// SHA-256 over [`CommandLog::encode`]'s content, computed entry by entry (no full copy):
    /// equal logs have equal hashes, on every replica and after every restart. `None` once
    /// entries were let go ([`CommandLog::let_go`]): the hash covers the whole log or nothing.
    #[must_use]
    pub fn state_hash(&self) -> Option<[u8; 32]> {
        use sha2::Digest as _;
        if self.let_go.count > 0 {
            return None;
        }
        let mut h = sha2::Sha256::new();
        h.update(b"meshwork log state v1");
        h.update((self.entries.len() as u64).to_le_bytes());
        let mut buf = Vec::new();
        for e in self.entries.values() {
            buf.clear();
            if let Ok(bytes) = postcard::to_extend(&(&e.signed, e.status), std::mem::take(&mut buf))
            {
                buf = bytes;
            }
            h.update((buf.len() as u64).to_le_bytes());
            h.update(&buf);
        }
        Some(h.finalize().into())
    }

    /// A cheap fingerprint of the resolution state: entry count, clock, horizon and every
    /// non-`Applied` status. With a chain-verified store it proves a snapshot restore right
    /// without hashing every entry (which [`CommandLog::state_hash`] does).
    #[must_use]
    pub fn resolution_digest(&self) -> [u8; 32] {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"meshwork resolution v1");
        h.update((self.entries.len() as u64).to_le_bytes());
        h.update(self.clock.now().to_le_bytes());
        h.update(self.seen_lamport.to_le_bytes());
        for e in self.entries.values() {
            let (tag, by) = match e.status {
                Status::Applied => continue,
                Status::Superseded { by } => (1u8, by),
                Status::Rejected { by } => (2u8, by),
            };
            h.update([tag]);
            h.update(e.id.lamport.to_le_bytes());
            h.update(e.id.author.0.to_le_bytes());
            h.update(by.lamport.to_le_bytes());
            h.update(by.author.0.to_le_bytes());
        }
        h.finalize().into()
    }

    /// Issues a command as the local `author`: stamps the next sequence number, a Lamport
    /// timestamp and what this log has seen, signs it, and integrates it like any other entry.
    /// Returns the signed entry to send.
    ///
    /// # Errors
    /// The [`Refusal`] integrating it produced (e.g. the author's role is too low).
    pub fn append_local(
        &mut self,
        author: AuthorId,
        signer: &dyn Signer,
        command: Command,
    ) -> Result<(SignedEntry, Integrated), Refusal> {
        let body = EntryBody::new(
            self.session,
            author,
            signer.public_key().key_id(),
            self.next_seq(author),
            self.clock.now().max(self.seen_lamport).saturating_add(1),
            self.seen_lamport,
            command,
        );
        let signed =
            SignedEntry::sign(&body, signer).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let outcome = self.integrate(signed.clone())?;
        Ok((signed, outcome))
    }

    /// Integrates one signed entry.
    ///
    /// # Errors
    /// The [`Refusal`] for the first check it fails.
    pub fn integrate(&mut self, signed: SignedEntry) -> Result<Integrated, Refusal> {
        let body = self.precheck(&signed)?;
        self.keys.verify(&signed.signed_item(&body, self.session))?;
        self.admit(signed, body, &mut no_check, false)
    }

    /// Re-integrates an entry read back from this server's own store, skipping signature
    /// verification: it was verified when first integrated, the store's hash chain protects it
    /// since, and `meshwork-server verify-log` re-checks every signature offline. Every other
    /// check runs, so replaying the stored order rebuilds exactly the state that was lost —
    /// except the refusal of an entry against entries let go ([`CommandLog::let_go`]): it was
    /// accepted once, with the whole window in memory.
    ///
    /// # Errors
    /// The [`Refusal`] the entry meets (a sign the store does not match this log).
    pub fn replay_trusted(&mut self, signed: SignedEntry) -> Result<Integrated, Refusal> {
        let body = self.precheck(&signed)?;
        self.admit(signed, body, &mut no_check, true)
    }

    /// Restores an entry with the status a snapshot recorded for it, without resolving it again
    /// (entries must come in their original acceptance order; the caller checks the snapshot's
    /// state hash afterwards). Same trust argument as [`CommandLog::replay_trusted`].
    ///
    /// # Errors
    /// [`Refusal::Malformed`] for an undecodable body.
    pub fn restore_resolved(&mut self, signed: SignedEntry, status: Status) -> Result<(), Refusal> {
        let body = self.precheck(&signed)?;
        let author = body.author;
        let scopes = body.command.scopes(author);
        let state = self.authors.entry(author).or_default();
        state.high_seq = Some(state.high_seq.map_or(body.seq, |s| s.max(body.seq)));
        self.store(&scopes, signed, body, status, &[]);
        Ok(())
    }

    /// Entries whose status is not `Applied`: with the acceptance order, all a snapshot needs
    /// to restore the resolution without recomputing it.
    #[must_use]
    pub fn non_applied(&self) -> Vec<(CommandId, Status)> {
        self.entries
            .values()
            .filter(|e| e.status != Status::Applied)
            .map(|e| (e.id, e.status))
            .collect()
    }

    /// Integrates a batch with one batch signature verification. The result for each entry is
    /// exactly what [`CommandLog::integrate`] would give integrating them one by one in order.
    pub fn integrate_batch(&mut self, batch: Vec<SignedEntry>) -> Vec<Result<Integrated, Refusal>> {
        self.integrate_batch_inner(None, batch, &mut no_check, false)
    }

    /// As [`CommandLog::integrate_batch`], for entries submitted by `sender` over its own
    /// connection: an entry naming another author is refused as
    /// [`Refusal::NotSender`] (authors submit only their own entries).
    pub fn integrate_batch_from(
        &mut self,
        sender: AuthorId,
        batch: Vec<SignedEntry>,
    ) -> Vec<Result<Integrated, Refusal>> {
        self.integrate_batch_inner(Some(sender), batch, &mut no_check, false)
    }

    /// As [`CommandLog::integrate_batch_from`], with `check` as the last step before an entry
    /// is stored (after conflict resolution): the authority passes its scene check here, so a
    /// command whose edit would break a mesh is refused and never enters the log. `check` must
    /// apply the command to whatever state it guards when it returns `Ok`.
    pub fn integrate_batch_checked(
        &mut self,
        sender: AuthorId,
        batch: Vec<SignedEntry>,
        check: &mut dyn FnMut(&EntryBody) -> Result<(), Refusal>,
    ) -> Vec<Result<Integrated, Refusal>> {
        self.integrate_batch_inner(Some(sender), batch, check, false)
    }

    /// As [`CommandLog::integrate_batch_checked`], for a batch whose signatures the caller has
    /// already checked under `signed_by` ([`meshwork_protocol::sign::ReadyKey::signed_all`],
    /// run off the session's thread). When `signed_by` is `sender`'s registered key the signatures are
    /// not checked again, and every other check runs; otherwise it verifies them itself. The
    /// results are exactly those of [`CommandLog::integrate_batch_checked`] either way.
    pub fn integrate_batch_presigned(
        &mut self,
        sender: AuthorId,
        batch: Vec<SignedEntry>,
        check: &mut dyn FnMut(&EntryBody) -> Result<(), Refusal>,
        signed_by: &PublicKey,
    ) -> Vec<Result<Integrated, Refusal>> {
        let presigned = self.keys.is_key_of(sender, signed_by);
        self.integrate_batch_inner(Some(sender), batch, check, presigned)
    }

    fn integrate_batch_inner(
        &mut self,
        sender: Option<AuthorId>,
        batch: Vec<SignedEntry>,
        check: &mut dyn FnMut(&EntryBody) -> Result<(), Refusal>,
        presigned: bool,
    ) -> Vec<Result<Integrated, Refusal>> {
        let prechecked: Vec<Result<EntryBody, Refusal>> = batch
            .iter()
            .map(|s| {
                let body = self.precheck(s)?;
                match sender {
                    Some(sender) if sender != body.author => Err(Refusal::NotSender {
                        author: body.author,
                        sender,
                    }),
                    _ => Ok(body),
                }
            })
            .collect();
        let items: Vec<SignedItem<'_>> = batch
            .iter()
            .zip(&prechecked)
            .filter_map(|(s, b)| b.as_ref().ok().map(|b| s.signed_item(b, self.session)))
            .collect();
        // Entries from `sender` whose signatures were checked under its key: only the key
        // they name is looked up (an entry naming another key is refused as before).
        let mut verdicts = if presigned {
            items
                .iter()
                .map(|i| self.keys.check_named_key(i))
                .collect::<Vec<_>>()
        } else {
            self.keys.verify_batch(&items)
        }
        .into_iter();
        let mut out = Vec::with_capacity(batch.len());
        for (signed, body) in batch.into_iter().zip(prechecked) {
            let result = body.and_then(|body| {
                verdicts
                    .next()
                    .expect("one verdict per prechecked entry")
                    .map_err(Refusal::from)?;
                self.admit(signed, body, check, false)
            });
            out.push(result);
        }
        out
    }

    /// Checks that need no state and no curve arithmetic.
    fn precheck(&self, signed: &SignedEntry) -> Result<EntryBody, Refusal> {
        let body = signed
            .decode_body()
            .map_err(|e| Refusal::Malformed(e.to_string()))?;
        if !body.version_accepted() {
            return Err(Refusal::WrongVersion { got: body.version });
        }
        if let Some(got) = body.session.filter(|s| *s != self.session) {
            return Err(Refusal::WrongSession { got });
        }
        Ok(body)
    }

    /// Checks after a valid signature, then stores. `replayed`: an entry this authority
    /// accepted before (a restore), not judged against entries let go.
    fn admit(
        &mut self,
        signed: SignedEntry,
        body: EntryBody,
        check: &mut dyn FnMut(&EntryBody) -> Result<(), Refusal>,
        replayed: bool,
    ) -> Result<Integrated, Refusal> {
        let author = body.author;
        let id = body.id();
        let role = self
            .keys
            .role(author)
            .ok_or(Refusal::UnknownAuthor(author))?;
        check_permission(role, body.command.kind())?;
        body.command.validate(author)?;
        if let Command::SetRole { author: member, .. } | Command::Kick { author: member, .. } =
            &body.command
            && self.keys.role(*member).is_none()
        {
            return Err(Refusal::UnknownAuthor(*member));
        }
        self.check_lamport(&body)?;

        if let Some(existing) = self.entries.get(&id) {
            if existing.signed == signed {
                return Ok(Integrated::Duplicate { id });
            }
            return Err(Refusal::Replay {
                author,
                seq: body.seq,
                kind: ReplayKind::IdReused,
            });
        }
        if self
            .let_go
            .recent
            .get(&(author, body.seq))
            .is_some_and(|(held, digest)| *held == id && *digest == entry_digest(&signed))
        {
            return Ok(Integrated::Duplicate { id });
        }
        let state = self.authors.entry(author).or_default();
        match self.mode {
            Mode::Authority => {
                if let Some(last) = state.high_seq.filter(|last| body.seq <= *last) {
                    return Err(Refusal::Replay {
                        author,
                        seq: body.seq,
                        kind: ReplayKind::SeqNotIncreasing { last },
                    });
                }
                if body.lamport <= state.high_lamport {
                    return Err(Refusal::Malformed(format!(
                        "lamport {} does not advance past the author's {}",
                        body.lamport, state.high_lamport
                    )));
                }
            }
            Mode::Replica => {
                if state.seqs.contains_key(&body.seq) {
                    return Err(Refusal::Replay {
                        author,
                        seq: body.seq,
                        kind: ReplayKind::SeqReused,
                    });
                }
            }
        }
        // From here the sequence number counts as used, whatever the conflict check says.
        state.high_seq = Some(state.high_seq.map_or(body.seq, |s| s.max(body.seq)));

        let scopes = body.command.scopes(author);
        let candidate = ScopeItem {
            id,
            seen_lamport: body.seen_lamport,
            strategy: body.command.rule().strategy,
        };
        // Each scope resolves on its own; a rejection in any one rejects the entry, otherwise
        // the first supersession stands.
        let mut status = Status::Applied;
        let mut status_scope = scopes.first().copied().unwrap_or(Scope::Global);
        let mut changed: Vec<(CommandId, Status)> = Vec::new();
        for scope in &scopes {
            let (s, c) = self.resolve_with(*scope, candidate);
            let better = match (status, s) {
                (Status::Rejected { .. }, _) => false,
                (_, Status::Rejected { .. }) => true,
                (Status::Applied, Status::Superseded { .. }) => true,
                _ => false,
            };
            if better {
                status = s;
                status_scope = *scope;
            }
            for (other, new) in c {
                if !changed.iter().any(|(o, _)| *o == other) {
                    changed.push((other, new));
                }
            }
        }
        let scope = status_scope;

        if self.mode == Mode::Authority {
            if let Status::Rejected { by } = status {
                return Err(Refusal::Conflict { with: by, scope });
            }
            if !replayed && let Some((with, scope)) = self.let_go.conflict(&scopes, candidate) {
                return Err(Refusal::Conflict { with, scope });
            }
            // An accepted entry may have been acknowledged: never retract it.
            if let Some((victim, _)) = changed.iter().find(|(_, s)| s.is_rejected()) {
                return Err(Refusal::Conflict {
                    with: *victim,
                    scope,
                });
            }
            check(&body)?;
        }
        self.store(&scopes, signed, body, status, &changed);
        match status {
            Status::Rejected { by } => Err(Refusal::Conflict { with: by, scope }),
            Status::Applied | Status::Superseded { .. } => Ok(Integrated::Appended {
                id,
                status,
                changed,
            }),
        }
    }

    /// Lamport sanity: an entry comes after what its author had seen, and (on the authority)
    /// neither claims to have seen the future nor leaps far ahead.
    fn check_lamport(&self, body: &EntryBody) -> Result<(), Refusal> {
        if body.seen_lamport >= body.lamport {
            return Err(Refusal::Malformed(format!(
                "lamport {} is not after the seen lamport {}",
                body.lamport, body.seen_lamport
            )));
        }
        if self.mode == Mode::Authority {
            if body.seen_lamport > self.clock.now() {
                return Err(Refusal::Malformed(format!(
                    "seen lamport {} is ahead of the log ({})",
                    body.seen_lamport,
                    self.clock.now()
                )));
            }
            if body.lamport > self.clock.now().saturating_add(MAX_LAMPORT_LEAD) {
                return Err(Refusal::Malformed(format!(
                    "lamport {} is too far ahead of the log ({})",
                    body.lamport,
                    self.clock.now()
                )));
            }
        }
        Ok(())
    }

    fn item(&self, id: CommandId) -> Option<ScopeItem> {
        self.entries.get(&id).map(|e| ScopeItem {
            id,
            seen_lamport: e.body.seen_lamport,
            strategy: e.body.command.rule().strategy,
        })
    }

    /// The candidate's status and the status changes of other entries of its scope if it were
    /// added. Pure: nothing is modified.
    fn resolve_with(
        &self,
        scope: Scope,
        candidate: ScopeItem,
    ) -> (Status, Vec<(CommandId, Status)>) {
        let empty = BTreeSet::new();
        let members = self.scopes.get(&scope).unwrap_or(&empty);
        let is_tail = members.last().is_none_or(|last| *last < candidate.id);
        if is_tail {
            return self.resolve_tail(members, candidate);
        }
        // Out of order: resolve the whole scope again and report the differences.
        let mut items: Vec<ScopeItem> = members.iter().filter_map(|id| self.item(*id)).collect();
        let at = items.partition_point(|i| i.id < candidate.id);
        items.insert(at, candidate);
        let statuses = resolve_scope(&items);
        let mut status = Status::Applied;
        let mut changed = Vec::new();
        for (item, new) in items.iter().zip(statuses) {
            if item.id == candidate.id {
                status = new;
            } else if self.entries.get(&item.id).is_some_and(|e| e.status != new) {
                changed.push((item.id, new));
            }
        }
        (status, changed)
    }

    /// Fast path for an entry that is last in its scope: only entries it had not seen matter.
    /// Gives the same answer as [`resolve_scope`] over the whole scope.
    fn resolve_tail(
        &self,
        members: &BTreeSet<CommandId>,
        candidate: ScopeItem,
    ) -> (Status, Vec<(CommandId, Status)>) {
        let unseen = CommandId::first_at(candidate.seen_lamport.saturating_add(1));
        let concurrent = members
            .range(unseen..)
            .filter_map(|id| self.entries.get(id))
            .filter(|e| !e.status.is_rejected());
        match candidate.strategy {
            Strategy::Merge => (Status::Applied, Vec::new()),
            Strategy::Reject => match concurrent.map(|e| e.id).next() {
                Some(by) => (Status::Rejected { by }, Vec::new()),
                None => (Status::Applied, Vec::new()),
            },
            Strategy::LastWriteWins => {
                let changed = concurrent
                    .filter(|e| e.status == Status::Applied)
                    .map(|e| (e.id, Status::Superseded { by: candidate.id }))
                    .collect();
                (Status::Applied, changed)
            }
        }
    }

    fn store(
        &mut self,
        scopes: &[Scope],
        signed: SignedEntry,
        body: EntryBody,
        status: Status,
        changed: &[(CommandId, Status)],
    ) {
        // A role change counts from the next entry on (the latest change stands: a superseded
        // one changes nothing). Restores from a snapshot come here too.
        if status == Status::Applied
            && let Command::SetRole {
                author: member,
                role,
            } = &body.command
        {
            self.keys.set_role(*member, *role);
        }
        let id = body.id();
        for (other, new) in changed {
            if let Some(e) = self.entries.get_mut(other) {
                e.status = *new;
            }
        }
        for scope in scopes {
            self.scopes.entry(*scope).or_default().insert(id);
        }
        let state = self.authors.entry(id.author).or_default();
        if self.mode == Mode::Replica {
            state.seqs.insert(body.seq, id);
        }
        state.high_lamport = state.high_lamport.max(id.lamport);
        self.clock.observe(id.lamport);
        self.seen_lamport = self.seen_lamport.max(id.lamport);
        self.entries.insert(
            id,
            LogEntry {
                id,
                body,
                signed,
                status,
            },
        );
    }
}

/// The check of a log without a scene: accepts everything.
#[allow(
    clippy::unnecessary_wraps,
    reason = "it is the identity of the check hook's signature"
)]
const fn no_check(_: &EntryBody) -> Result<(), Refusal> {
    Ok(())
}

/// Resolves one scope from scratch. `items` are sorted by id. The status of each entry depends
/// only on the entries before it (for reject) and after it (for supersession), never on arrival
/// order.
fn resolve_scope(items: &[ScopeItem]) -> Vec<Status> {
    let mut statuses = vec![Status::Applied; items.len()];
    // Indices of entries not rejected so far, in order.
    let mut live: Vec<usize> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        // Live entries the item had not seen: a suffix of `live`, since ids sort by lamport.
        let first_unseen = live.partition_point(|&j| {
            items
                .get(j)
                .is_some_and(|e| e.id.lamport <= item.seen_lamport)
        });
        let unseen = live.get(first_unseen..).unwrap_or_default();
        match item.strategy {
            Strategy::Merge => {}
            Strategy::Reject => {
                if let Some(by) = unseen.first().and_then(|&j| items.get(j)).map(|e| e.id) {
                    if let Some(s) = statuses.get_mut(i) {
                        *s = Status::Rejected { by };
                    }
                    continue;
                }
            }
            Strategy::LastWriteWins => {
                for &j in unseen {
                    if let Some(s) = statuses.get_mut(j).filter(|s| **s == Status::Applied) {
                        *s = Status::Superseded { by: item.id };
                    }
                }
            }
        }
        live.push(i);
    }
    statuses
}

#[cfg(test)]
mod tests;
