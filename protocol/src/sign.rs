//! Signed envelopes: what an author signs, how it is verified, and the key ring of registered
//! authors.
//!
//! Invariants:
//! - A signature covers the exact body bytes that travel on the wire; bodies are never
//!   re-encoded before verification. A version-2 entry's signature covers a fixed context both
//!   sides write the same way ([`entry_context`]: domain, version, session, key id) and then
//!   exactly those bytes.
//! - Every signed message starts with a [`Domain`] tag (a version-2 entry's with its context),
//!   so a signature made for one purpose (a join proof, an invite) can never be passed off as
//!   another (a command).
//! - One acceptance rule for signatures everywhere: dalek's batch equation. Single verification
//!   is a batch of one, so integrating a batch and integrating one by one accept exactly the same
//!   entries (strict single verification would refuse some crafted signatures a batch accepts).
//! - Weak (small-order) public keys are refused at registration.

use alloc::borrow::Cow;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::command::Command;
use crate::ids::{AuthorId, CommandId, SessionId};
use crate::registry::Role;

/// What a signature is for. The first field of every signed body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Domain {
    /// A command log entry ([`EntryBody`]).
    Entry,
    /// A client's answer to the join challenge.
    JoinProof,
    /// An invite token minted by the server.
    Invite,
    /// A server checkpoint of the log's hash chain.
    Checkpoint,
    /// The server's seal over a scene delta it sent ([`crate::wire::DeltaSeal`]).
    Delta,
    /// The server's seal at the end of an encrypted audit archive (the server's `archive`).
    Archive,
    /// The server's signed base of a session: its state where the history rotated out of the
    /// store into an archive ends.
    Base,
}

/// An Ed25519 public key, as 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.key_id();
        write!(f, "PublicKey({id:?})")
    }
}

impl PublicKey {
    /// Short fingerprint of the key: the first 8 bytes of SHA-256("meshwork key id" ‖ key).
    /// A version-1 entry carries it (a key change is then refused before any curve
    /// arithmetic); a version-2 entry binds it into its signature instead.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        let mut h = Sha256::new();
        h.update(b"meshwork key id");
        h.update(self.0);
        let digest = h.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }
}

/// Fingerprint of a [`PublicKey`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyId(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// An Ed25519 signature, 64 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "serde_bytes")] pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Signature({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// Something that signs as one author. Implemented by [`Ed25519Signer`]; a hardware-backed or
/// browser (WebCrypto) signer implements the same trait.
pub trait Signer {
    /// The public half of the signing key.
    fn public_key(&self) -> PublicKey;
    /// Signs `message` exactly as given.
    fn sign(&self, message: &[u8]) -> Signature;
}

/// An in-memory Ed25519 signing key.
pub struct Ed25519Signer {
    key: SigningKey,
}

impl fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        write!(f, "Ed25519Signer({:?})", self.public_key())
    }
}

impl Ed25519Signer {
    /// The key whose secret is `seed`. The caller supplies the randomness (sans-IO).
    #[must_use]
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The secret seed, for storing the key.
    #[must_use]
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }
}

impl Signer for Ed25519Signer {
    fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key().to_bytes())
    }

    fn sign(&self, message: &[u8]) -> Signature {
        use ed25519_dalek::Signer as _;
        Signature(self.key.sign(message).to_bytes())
    }
}

/// Why a signature was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No key is registered for this author.
    #[error("{0} has no registered key")]
    UnknownAuthor(AuthorId),
    /// The entry names a key other than the one registered for its author.
    #[error("{0} signed with a key other than the registered one")]
    KeyMismatch(AuthorId),
    /// The signature does not verify under the registered key (forged or corrupted).
    #[error("signature of {0} does not verify")]
    Invalid(AuthorId),
}

/// A public key that cannot be registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a valid curve point encoding.
    #[error("not a valid Ed25519 public key")]
    Malformed,
    /// A small-order point: signatures under it prove nothing.
    #[error("weak (small-order) Ed25519 public key")]
    Weak,
}

/// Parses and checks a public key.
///
/// # Errors
/// [`KeyError`] for an invalid or weak key.
pub fn verifying_key(public: &PublicKey) -> Result<VerifyingKey, KeyError> {
    let key = VerifyingKey::from_bytes(&public.0).map_err(|_| KeyError::Malformed)?;
    if key.is_weak() {
        return Err(KeyError::Weak);
    }
    Ok(key)
}

/// The workspace-wide acceptance rule (see the module invariants), the one place it is
/// written: dalek's batch equation, for one signature or many. Every check goes through it.
fn batch_holds(
    messages: &[&[u8]],
    signatures: &[ed25519_dalek::Signature],
    keys: &[VerifyingKey],
) -> bool {
    ed25519_dalek::verify_batch(messages, signatures, keys).is_ok()
}

/// Verifies one signature with the workspace-wide acceptance rule (see the module invariants).
#[must_use]
pub fn verify_one(key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool {
    let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
    batch_holds(&[message], &[sig], &[*key])
}

/// A member's key made ready once for checking many of their entries: decompressed (a curve
/// point) and fingerprinted. A connection keeps one for the key its `Hello` named.
#[derive(Clone, Debug)]
pub struct ReadyKey {
    key: VerifyingKey,
    key_id: KeyId,
}

impl ReadyKey {
    /// `None` for a key that cannot verify anything (malformed or weak).
    #[must_use]
    pub fn new(public: &PublicKey) -> Option<Self> {
        verifying_key(public).ok().map(|key| Self {
            key,
            key_id: public.key_id(),
        })
    }

    /// Whether every entry of `entries` is this key's, signed for `session`: checked with
    /// one batch verification under the same rule as [`KeyRing::verify_batch`]. A connection
    /// task runs this on a `Submit` before the session sees it, so signature checks spread over
    /// every core while the session orders; `false` (an empty batch too) says nothing about
    /// which entry failed: the session's own checks find and name it.
    #[must_use]
    pub fn signed_all(&self, session: SessionId, entries: &[SignedEntry]) -> bool {
        let mut messages = Vec::with_capacity(entries.len());
        let mut sigs = Vec::with_capacity(entries.len());
        for entry in entries {
            let Ok(body) = entry.decode_body() else {
                return false;
            };
            let item = entry.signed_item(&body, session);
            if item.key_id.is_some_and(|k| k != self.key_id) {
                return false;
            }
            messages.push(item.message_for(self.key_id));
            sigs.push(ed25519_dalek::Signature::from_bytes(&entry.signature.0));
        }
        let messages: Vec<&[u8]> = messages.iter().map(AsRef::as_ref).collect();
        let keys = vec![self.key; entries.len()];
        !entries.is_empty() && batch_holds(&messages, &sigs, &keys)
    }
}

/// [`ReadyKey::signed_all`] for a key given as bytes (made ready for this one call).
#[must_use]
pub fn all_signed_by(key: &PublicKey, session: SessionId, entries: &[SignedEntry]) -> bool {
    ReadyKey::new(key).is_some_and(|k| k.signed_all(session, entries))
}

/// One item of a batch verification.
#[derive(Clone, Copy, Debug)]
pub struct SignedItem<'a> {
    /// Claimed author.
    pub author: AuthorId,
    /// Key fingerprint the signer named (a self-describing body), or `None`: the author's
    /// registered key, bound into the signature (a bound body).
    pub key_id: Option<KeyId>,
    /// For a bound body, the version and session its signature binds with the key's
    /// fingerprint ([`entry_context`]) in front of `message`.
    pub bound: Option<(u16, SessionId)>,
    /// The exact bytes sent.
    pub message: &'a [u8],
    /// The signature.
    pub signature: &'a Signature,
}

impl<'a> SignedItem<'a> {
    /// The bytes the signature covers when checked under the key `key_id` names.
    #[must_use]
    pub fn message_for(&self, key_id: KeyId) -> Cow<'a, [u8]> {
        match self.bound {
            None => Cow::Borrowed(self.message),
            Some((version, session)) => {
                let mut m = entry_context(version, session, key_id);
                m.extend_from_slice(self.message);
                Cow::Owned(m)
            }
        }
    }
}

/// Checks signatures on behalf of authors.
pub trait Verifier {
    /// Verifies one item.
    ///
    /// # Errors
    /// [`SignatureError`] naming why.
    fn verify(&self, item: &SignedItem<'_>) -> Result<(), SignatureError>;

    /// Verifies many items; the result for each is exactly what [`Verifier::verify`] would say.
    fn verify_batch(&self, items: &[SignedItem<'_>]) -> Vec<Result<(), SignatureError>> {
        items.iter().map(|i| self.verify(i)).collect()
    }
}

#[derive(Clone, Debug)]
struct Registered {
    key: VerifyingKey,
    key_id: KeyId,
    role: Role,
}

/// The registered authors of a session: public key and role per author.
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    authors: BTreeMap<AuthorId, Registered>,
}

impl KeyRing {
    /// An empty ring.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or re-keys) `author`.
    ///
    /// # Errors
    /// [`KeyError`] when the key is invalid or weak.
    pub fn register(
        &mut self,
        author: AuthorId,
        public: PublicKey,
        role: Role,
    ) -> Result<(), KeyError> {
        let key = verifying_key(&public)?;
        self.authors.insert(
            author,
            Registered {
                key,
                key_id: public.key_id(),
                role,
            },
        );
        Ok(())
    }

    /// The author's role, if registered.
    #[must_use]
    pub fn role(&self, author: AuthorId) -> Option<Role> {
        self.authors.get(&author).map(|r| r.role)
    }

    /// Changes a registered author's role. Returns false when the author is unknown.
    pub fn set_role(&mut self, author: AuthorId, role: Role) -> bool {
        self.authors
            .get_mut(&author)
            .map(|r| r.role = role)
            .is_some()
    }

    /// Whether `public` is the key registered for `author`.
    #[must_use]
    pub fn is_key_of(&self, author: AuthorId, public: &PublicKey) -> bool {
        self.authors
            .get(&author)
            .is_some_and(|r| r.key.as_bytes() == &public.0)
    }

    /// What [`Verifier::verify`] checks of `item` short of the signature: the author is
    /// registered and the key the entry names is theirs. For entries whose signatures were
    /// already checked under that key ([`all_signed_by`]).
    ///
    /// # Errors
    /// [`SignatureError::UnknownAuthor`] or [`SignatureError::KeyMismatch`].
    pub fn check_named_key(&self, item: &SignedItem<'_>) -> Result<(), SignatureError> {
        self.key_for(item.author, item.key_id).map(|_| ())
    }

    /// The registered key of `author`, if `key_id` (when named) is it.
    fn key_for(
        &self,
        author: AuthorId,
        key_id: Option<KeyId>,
    ) -> Result<&Registered, SignatureError> {
        let reg = self
            .authors
            .get(&author)
            .ok_or(SignatureError::UnknownAuthor(author))?;
        if key_id.is_some_and(|k| k != reg.key_id) {
            return Err(SignatureError::KeyMismatch(author));
        }
        Ok(reg)
    }
}

impl Verifier for KeyRing {
    fn verify(&self, item: &SignedItem<'_>) -> Result<(), SignatureError> {
        let reg = self.key_for(item.author, item.key_id)?;
        if verify_one(&reg.key, &item.message_for(reg.key_id), item.signature) {
            Ok(())
        } else {
            Err(SignatureError::Invalid(item.author))
        }
    }

    fn verify_batch(&self, items: &[SignedItem<'_>]) -> Vec<Result<(), SignatureError>> {
        let mut results: Vec<Result<(), SignatureError>> = Vec::with_capacity(items.len());
        let mut messages = Vec::with_capacity(items.len());
        let mut sigs = Vec::with_capacity(items.len());
        let mut keys = Vec::with_capacity(items.len());
        for item in items {
            match self.key_for(item.author, item.key_id) {
                Ok(reg) => {
                    messages.push(item.message_for(reg.key_id));
                    sigs.push(ed25519_dalek::Signature::from_bytes(&item.signature.0));
                    keys.push(reg.key);
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let messages: Vec<&[u8]> = messages.iter().map(AsRef::as_ref).collect();
        if messages.is_empty() || batch_holds(&messages, &sigs, &keys) {
            return results;
        }
        // Some signature is bad; the batch equation does not say which. Find them one by one
        // (the honest path never gets here).
        for (item, result) in items.iter().zip(results.iter_mut()) {
            if result.is_ok() {
                *result = self.verify(item);
            }
        }
        results
    }
}

/// The first protocol version whose entries bind their session and signing key into the
/// signature instead of carrying them (the "bound" layout).
pub const BOUND_VERSION: u16 = 2;

/// The signed part of a log entry, as its author wrote it.
///
/// Two layouts travel, told apart by the first byte of the encoded body:
/// - **self-describing** (version 1, and any version other than 2): `0x00` (the `Entry`
///   domain), then every field below in order. The signature covers exactly those bytes.
/// - **bound** (version 2, [`BOUND_VERSION`]): `author, seq, lamport, lamport − seen_lamport,
///   command`; the author is never 0, so the first byte never is. The signature covers
///   [`entry_context`] (domain, version, session, the signing key's fingerprint: what every
///   entry of a member repeats, which both sides know) followed by exactly those bytes. A
///   decoded bound body has `session` and `key_id` `None`: the receiver supplies its session
///   and the author's registered key, and an entry made for another session or key fails its
///   signature.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryBody {
    /// Always [`Domain::Entry`].
    pub domain: Domain,
    /// Protocol version the author spoke.
    pub version: u16,
    /// The session this entry belongs to (replay across sessions is refused). `None` in a
    /// decoded bound body: bound into its signature, not sent.
    pub session: Option<SessionId>,
    /// The author.
    pub author: AuthorId,
    /// Fingerprint of the key the author signed with. `None` in a decoded bound body: the
    /// author's registered key, bound into the signature.
    pub key_id: Option<KeyId>,
    /// Per-author sequence number, strictly increasing (replay protection).
    pub seq: u64,
    /// The author's Lamport timestamp for this entry.
    pub lamport: u64,
    /// The largest Lamport timestamp of any entry the author had integrated when issuing this
    /// one: entries above it in the same scope are concurrent with it.
    pub seen_lamport: u64,
    /// The intent.
    pub command: Command,
}

/// The self-describing layout, field for field (borrowing the command to write it).
#[derive(Serialize, Deserialize)]
struct SelfDescribing<'a> {
    domain: Domain,
    version: u16,
    session: SessionId,
    author: AuthorId,
    key_id: KeyId,
    seq: u64,
    lamport: u64,
    seen_lamport: u64,
    command: Cow<'a, Command>,
}

/// The bound layout: what is left once the session and key are bound into the signature.
#[derive(Serialize, Deserialize)]
struct Bound<'a> {
    author: AuthorId,
    seq: u64,
    lamport: u64,
    seen_back: u64,
    command: Cow<'a, Command>,
}

/// What a bound entry's signature covers before its body: the [`Domain::Entry`] tag, the
/// version, the session and the signing key's fingerprint, as postcard writes them (26 bytes).
#[must_use]
pub fn entry_context(version: u16, session: SessionId, key_id: KeyId) -> Vec<u8> {
    #[derive(Serialize)]
    struct Context {
        domain: Domain,
        version: u16,
        session: SessionId,
        key_id: KeyId,
    }
    postcard::to_allocvec(&Context {
        domain: Domain::Entry,
        version,
        session,
        key_id,
    })
    .unwrap_or_default()
}

impl EntryBody {
    /// A body for this protocol version (domain and version filled in).
    #[must_use]
    pub const fn new(
        session: SessionId,
        author: AuthorId,
        key_id: KeyId,
        seq: u64,
        lamport: u64,
        seen_lamport: u64,
        command: Command,
    ) -> Self {
        Self {
            domain: Domain::Entry,
            version: crate::PROTOCOL_VERSION,
            session: Some(session),
            author,
            key_id: Some(key_id),
            seq,
            lamport,
            seen_lamport,
            command,
        }
    }

    /// The entry's position in the total order.
    #[must_use]
    pub const fn id(&self) -> CommandId {
        CommandId {
            lamport: self.lamport,
            author: self.author,
        }
    }

    /// Whether this body's layout is the bound one (version 2 and every later version).
    #[must_use]
    pub const fn is_bound(&self) -> bool {
        self.version >= BOUND_VERSION
    }

    /// Whether a log accepts an entry of this body's version: this protocol version's, and
    /// version 1's (stored before version 2, or signed by a client that still writes them:
    /// they carry their session and key). The one rule the server's log and every replica
    /// apply.
    #[must_use]
    pub const fn version_accepted(&self) -> bool {
        self.version == crate::PROTOCOL_VERSION || self.version == 1
    }
}

/// A log entry as it travels: the encoded body and the author's signature over it (over
/// [`entry_context`] and it, for a bound body). Stored as two byte strings; on the wire
/// (`Submit`, `Entries`, `History`) as one, the body then the 64 signature bytes
/// ([`as_wire`]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEntry {
    /// The encoded [`EntryBody`], in either layout.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Signature over `body` (after the context, for a bound body).
    pub signature: Signature,
}

impl fmt::Debug for SignedEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedEntry")
            .field("body_bytes", &self.body.len())
            .field("signature", &self.signature)
            .finish()
    }
}

/// A body that could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not a valid encoding of the body type (or trailing bytes after it).
    #[error("body is not a valid encoding: {0}")]
    Malformed(&'static str),
    /// The domain tag is not the one expected here.
    #[error("body is signed for another purpose")]
    WrongDomain,
}

/// Decodes a signed body: the whole slice must be exactly one value.
pub(crate) fn decode_exact<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, _rest)) => Err(BodyError::Malformed("trailing bytes")),
        Err(_) => Err(BodyError::Malformed("undecodable")),
    }
}

impl SignedEntry {
    /// Encodes `body` once, in its version's layout, and signs it: a bound body (version 2)
    /// with [`entry_context`] in front, naming `body.key_id` or else the signer's key.
    ///
    /// # Errors
    /// [`BodyError::WrongDomain`] if `body.domain` is not [`Domain::Entry`];
    /// [`BodyError::Malformed`] for a body its layout cannot hold (no session, author 0 or
    /// `seen_lamport` above `lamport` in the bound layout; no key id in the self-describing
    /// one).
    pub fn sign(body: &EntryBody, signer: &dyn Signer) -> Result<Self, BodyError> {
        if body.domain != Domain::Entry {
            return Err(BodyError::WrongDomain);
        }
        let session = body
            .session
            .ok_or(BodyError::Malformed("no session to sign for"))?;
        if body.is_bound() {
            if body.author.0 == 0 {
                return Err(BodyError::Malformed("author 0 in a bound body"));
            }
            let seen_back = body
                .lamport
                .checked_sub(body.seen_lamport)
                .ok_or(BodyError::Malformed("seen_lamport above lamport"))?;
            let bytes = postcard::to_allocvec(&Bound {
                author: body.author,
                seq: body.seq,
                lamport: body.lamport,
                seen_back,
                command: Cow::Borrowed(&body.command),
            })
            .map_err(|_| BodyError::Malformed("encode"))?;
            let key_id = body.key_id.unwrap_or_else(|| signer.public_key().key_id());
            let mut message = entry_context(body.version, session, key_id);
            message.extend_from_slice(&bytes);
            let signature = signer.sign(&message);
            return Ok(Self {
                body: bytes,
                signature,
            });
        }
        let bytes = postcard::to_allocvec(&SelfDescribing {
            domain: body.domain,
            version: body.version,
            session,
            author: body.author,
            key_id: body
                .key_id
                .ok_or(BodyError::Malformed("no key id in a self-describing body"))?,
            seq: body.seq,
            lamport: body.lamport,
            seen_lamport: body.seen_lamport,
            command: Cow::Borrowed(&body.command),
        })
        .map_err(|_| BodyError::Malformed("encode"))?;
        let signature = signer.sign(&bytes);
        Ok(Self {
            body: bytes,
            signature,
        })
    }

    /// Decodes the body, in either layout, without checking the signature.
    ///
    /// # Errors
    /// [`BodyError`] for bytes that are not exactly one entry body.
    pub fn decode_body(&self) -> Result<EntryBody, BodyError> {
        match self.body.first() {
            None => Err(BodyError::Malformed("empty body")),
            Some(0) => {
                let b: SelfDescribing<'static> = decode_exact(&self.body)?;
                if b.domain != Domain::Entry {
                    return Err(BodyError::WrongDomain);
                }
                if b.version == BOUND_VERSION {
                    return Err(BodyError::Malformed(
                        "a version-2 entry in the self-describing layout",
                    ));
                }
                Ok(EntryBody {
                    domain: b.domain,
                    version: b.version,
                    session: Some(b.session),
                    author: b.author,
                    key_id: Some(b.key_id),
                    seq: b.seq,
                    lamport: b.lamport,
                    seen_lamport: b.seen_lamport,
                    command: b.command.into_owned(),
                })
            }
            Some(_) => {
                let b: Bound<'static> = decode_exact(&self.body)?;
                let seen_lamport = b
                    .lamport
                    .checked_sub(b.seen_back)
                    .ok_or(BodyError::Malformed("seen_lamport below zero"))?;
                Ok(EntryBody {
                    domain: Domain::Entry,
                    version: BOUND_VERSION,
                    session: None,
                    author: b.author,
                    key_id: None,
                    seq: b.seq,
                    lamport: b.lamport,
                    seen_lamport,
                    command: b.command.into_owned(),
                })
            }
        }
    }

    /// The item to hand a [`Verifier`] for this entry with its decoded body, in `session`
    /// (bound into a bound body's signature; a self-describing body's own session is checked
    /// against it by the caller, as a refusal of its own).
    #[must_use]
    pub fn signed_item<'a>(&'a self, body: &EntryBody, session: SessionId) -> SignedItem<'a> {
        SignedItem {
            author: body.author,
            key_id: body.key_id,
            bound: body.is_bound().then_some((body.version, session)),
            message: &self.body,
            signature: &self.signature,
        }
    }

    /// The one byte string an entry is on the wire: the body, then the 64 signature bytes.
    fn joined(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len().saturating_add(64));
        out.extend_from_slice(&self.body);
        out.extend_from_slice(&self.signature.0);
        out
    }

    /// The inverse of [`SignedEntry::joined`]; `None` for fewer than 64 bytes.
    fn split(mut joined: Vec<u8>) -> Option<Self> {
        let at = joined.len().checked_sub(64)?;
        let signature: [u8; 64] = joined.get(at..)?.try_into().ok()?;
        joined.truncate(at);
        Some(Self {
            body: joined,
            signature: Signature(signature),
        })
    }
}

/// Entries as the wire messages carry them (protocol version 2): a sequence of byte strings,
/// each the body then the signature, one length prefix per entry
/// (`#[serde(with = "crate::sign::as_wire")]`). A string shorter than a signature is refused.
pub mod as_wire {
    use alloc::vec::Vec;

    use serde::de::Error as _;
    use serde::ser::SerializeSeq as _;
    use serde::{Deserialize as _, Deserializer, Serialize, Serializer};

    use super::SignedEntry;

    struct Joined<'a>(&'a SignedEntry);

    impl Serialize for Joined<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0.joined())
        }
    }

    /// Writes `entries` in the wire form.
    ///
    /// # Errors
    /// Those of the serializer.
    pub fn serialize<S: Serializer>(entries: &[SignedEntry], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(entries.len()))?;
        for e in entries {
            seq.serialize_element(&Joined(e))?;
        }
        seq.end()
    }

    /// Reads entries in the wire form.
    ///
    /// # Errors
    /// A string shorter than a signature, or those of the deserializer.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SignedEntry>, D::Error> {
        Vec::<serde_bytes::ByteBuf>::deserialize(d)?
            .into_iter()
            .map(|b| {
                SignedEntry::split(b.into_vec())
                    .ok_or_else(|| D::Error::custom("entry shorter than its signature"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PROTOCOL_VERSION;

    const SESSION: SessionId = SessionId([7; 16]);

    fn body(signer: &Ed25519Signer, author: AuthorId) -> EntryBody {
        EntryBody {
            domain: Domain::Entry,
            version: PROTOCOL_VERSION,
            session: Some(SESSION),
            author,
            key_id: Some(signer.public_key().key_id()),
            seq: 1,
            lamport: 1,
            seen_lamport: 0,
            command: Command::Select { entities: vec![] },
        }
    }

    /// Author 1's entries with the sequence numbers `seqs`, signed by `s`.
    fn run(s: &Ed25519Signer, seqs: impl Iterator<Item = u64>) -> Vec<SignedEntry> {
        seqs.map(|seq| {
            let mut b = body(s, AuthorId(1));
            b.seq = seq;
            SignedEntry::sign(&b, s).unwrap()
        })
        .collect()
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let s = Ed25519Signer::from_seed([1; 32]);
        let mut ring = KeyRing::new();
        ring.register(AuthorId(1), s.public_key(), Role::Editor)
            .unwrap();
        let e = SignedEntry::sign(&body(&s, AuthorId(1)), &s).unwrap();
        let b = e.decode_body().unwrap();
        assert_eq!(ring.verify(&e.signed_item(&b, SESSION)), Ok(()));
    }

    #[test]
    fn all_signed_by_holds_only_when_every_entry_verifies_under_that_key() {
        let (s, other) = (
            Ed25519Signer::from_seed([1; 32]),
            Ed25519Signer::from_seed([2; 32]),
        );
        let entries = run(&s, 1..=5);
        assert!(all_signed_by(&s.public_key(), SESSION, &entries));
        assert!(
            !all_signed_by(&other.public_key(), SESSION, &entries),
            "another key"
        );
        assert!(
            !all_signed_by(&s.public_key(), SESSION, &[]),
            "nothing to vouch for"
        );
        let mut tampered = entries.clone();
        tampered[3].signature.0[5] ^= 1;
        assert!(!all_signed_by(&s.public_key(), SESSION, &tampered));
        // Signed by the key but naming another: the ring would refuse it, so must this.
        let mut named = body(&s, AuthorId(1));
        named.key_id = Some(other.public_key().key_id());
        // Signed for another session: the bound context differs, so nothing is vouched for.
        assert!(!all_signed_by(
            &s.public_key(),
            SessionId([8; 16]),
            &entries
        ));
        let mut mixed = entries;
        mixed.push(SignedEntry::sign(&named, &s).unwrap());
        assert!(!all_signed_by(&s.public_key(), SESSION, &mixed));
    }

    #[test]
    fn a_bound_entry_binds_its_session_and_key_without_sending_them() {
        let (s, other) = (
            Ed25519Signer::from_seed([1; 32]),
            Ed25519Signer::from_seed([2; 32]),
        );
        let mut b = body(&s, AuthorId(1));
        b.lamport = 56_789;
        b.seen_lamport = 56_700;
        let e = SignedEntry::sign(&b, &s).unwrap();
        assert!(
            !e.body.windows(16).any(|w| w == SESSION.0)
                && !e.body.windows(8).any(|w| w == s.public_key().key_id().0),
            "neither the session nor the key id is sent"
        );
        assert_ne!(e.body[0], 0, "a bound body never starts with 0");
        let back = e.decode_body().unwrap();
        assert_eq!(
            back,
            EntryBody {
                session: None,
                key_id: None,
                ..b
            }
        );
        let mut ring = KeyRing::new();
        ring.register(AuthorId(1), s.public_key(), Role::Editor)
            .unwrap();
        assert_eq!(ring.verify(&e.signed_item(&back, SESSION)), Ok(()));
        assert_eq!(
            ring.verify(&e.signed_item(&back, SessionId([8; 16]))),
            Err(SignatureError::Invalid(AuthorId(1))),
            "replayed into another session"
        );
        let mut rekeyed = KeyRing::new();
        rekeyed
            .register(AuthorId(1), other.public_key(), Role::Editor)
            .unwrap();
        assert_eq!(
            rekeyed.verify(&e.signed_item(&back, SESSION)),
            Err(SignatureError::Invalid(AuthorId(1))),
            "under another key"
        );
        // Signed naming another key than the signer's: the context names it, so it fails too.
        let mut named = body(&s, AuthorId(1));
        named.key_id = Some(other.public_key().key_id());
        let n = SignedEntry::sign(&named, &s).unwrap();
        let nb = n.decode_body().unwrap();
        assert!(ring.verify(&n.signed_item(&nb, SESSION)).is_err());
    }

    #[test]
    fn a_version_1_entry_still_decodes_and_verifies_with_its_carried_session_and_key() {
        let s = Ed25519Signer::from_seed([1; 32]);
        let mut b = body(&s, AuthorId(1));
        b.version = 1;
        let e = SignedEntry::sign(&b, &s).unwrap();
        assert_eq!(&e.body[..2], &[0, 1], "the Entry domain, then version 1");
        assert!(e.body.windows(16).any(|w| w == SESSION.0));
        let back = e.decode_body().unwrap();
        assert_eq!(back, b);
        let mut ring = KeyRing::new();
        ring.register(AuthorId(1), s.public_key(), Role::Editor)
            .unwrap();
        // The session a caller passes plays no part: the body carries its own, which the
        // caller compares (a refusal of its own, `WrongSession`).
        assert_eq!(ring.verify(&e.signed_item(&back, SESSION)), Ok(()));
        assert_eq!(
            ring.verify(&e.signed_item(&back, SessionId([8; 16]))),
            Ok(())
        );
        assert!(all_signed_by(&s.public_key(), SESSION, &[e]));
    }

    #[test]
    fn bodies_a_layout_cannot_hold_are_refused_both_ways() {
        let s = Ed25519Signer::from_seed([1; 32]);
        let at = |f: &dyn Fn(&mut EntryBody)| {
            let mut b = body(&s, AuthorId(1));
            f(&mut b);
            SignedEntry::sign(&b, &s)
        };
        assert!(matches!(
            at(&|b| b.author = AuthorId(0)),
            Err(BodyError::Malformed(_))
        ));
        assert!(matches!(
            at(&|b| b.seen_lamport = b.lamport + 1),
            Err(BodyError::Malformed(_))
        ));
        assert!(matches!(
            at(&|b| b.session = None),
            Err(BodyError::Malformed(_))
        ));
        assert!(matches!(
            at(&|b| {
                b.version = 1;
                b.key_id = None;
            }),
            Err(BodyError::Malformed(_))
        ));
        let empty = SignedEntry {
            body: vec![],
            signature: Signature([0; 64]),
        };
        assert!(empty.decode_body().is_err());
        // The self-describing layout claiming version 2 is neither layout.
        let v1 = at(&|b| b.version = 1).unwrap();
        let mut claims_2 = v1.clone();
        claims_2.body[1] = 2;
        assert!(claims_2.decode_body().is_err());
        // A bound body whose lamport is below its distance back to what it saw.
        let mut low = body(&s, AuthorId(1));
        low.lamport = 1;
        low.seen_lamport = 0;
        let mut e = SignedEntry::sign(&low, &s).unwrap();
        let back = e.body.len() - 3;
        assert_eq!(e.body[back], 1, "seen_back follows author, seq and lamport");
        e.body[back] = 2;
        assert!(e.decode_body().is_err());
    }

    #[test]
    fn on_the_wire_an_entry_is_one_byte_string_and_a_short_one_is_refused() {
        use crate::wire::{ClientMsg, Submit};
        let s = Ed25519Signer::from_seed([1; 32]);
        let entries = run(&s, 1..=3);
        let msg = ClientMsg::Submit(Submit {
            entries: entries.clone(),
        });
        let bytes = postcard::to_allocvec(&msg).unwrap();
        // Tag, count, then per entry one length and body + signature.
        let per_entry: usize = entries.iter().map(|e| 1 + e.body.len() + 64).sum();
        assert_eq!(bytes.len(), 2 + per_entry);
        let back: ClientMsg = postcard::from_bytes(&bytes).unwrap();
        assert!(matches!(back, ClientMsg::Submit(Submit { entries: e }) if e == entries));
        let short = [ClientMsg::SUBMIT_TAG, 1, 63]
            .into_iter()
            .chain([0u8; 63])
            .collect::<Vec<u8>>();
        assert!(postcard::from_bytes::<ClientMsg>(&short).is_err());
    }

    #[test]
    fn batch_reports_exactly_the_bad_items() {
        let s = Ed25519Signer::from_seed([1; 32]);
        let mut ring = KeyRing::new();
        ring.register(AuthorId(1), s.public_key(), Role::Editor)
            .unwrap();
        let mut entries = run(&s, 0..8);
        entries[3].signature.0[10] ^= 1;
        let bodies: Vec<EntryBody> = entries.iter().map(|e| e.decode_body().unwrap()).collect();
        let items: Vec<SignedItem<'_>> = entries
            .iter()
            .zip(&bodies)
            .map(|(e, b)| e.signed_item(b, SESSION))
            .collect();
        let batch = ring.verify_batch(&items);
        let single: Vec<_> = items.iter().map(|i| ring.verify(i)).collect();
        assert_eq!(batch, single);
        assert_eq!(batch[3], Err(SignatureError::Invalid(AuthorId(1))));
        assert_eq!(batch.iter().filter(|r| r.is_err()).count(), 1);
    }

    #[test]
    fn weak_keys_are_refused() {
        // The identity point encodes as 1 followed by zeros: small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut ring = KeyRing::new();
        assert_eq!(
            ring.register(AuthorId(1), PublicKey(identity), Role::Editor),
            Err(KeyError::Weak)
        );
    }

    #[test]
    fn entry_signing_refuses_other_domains() {
        let s = Ed25519Signer::from_seed([1; 32]);
        let mut b = body(&s, AuthorId(1));
        b.domain = Domain::JoinProof;
        assert_eq!(SignedEntry::sign(&b, &s), Err(BodyError::WrongDomain));
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let s = Ed25519Signer::from_seed([0xab; 32]);
        let shown = format!("{s:?}");
        assert!(!shown.contains("abab"), "{shown}");
    }
}
