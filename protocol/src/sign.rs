//! Signed envelopes: what an author signs, how it is verified, and the key ring of registered
//! authors.
//!
//! Invariants:
//! - A signature covers the exact body bytes that travel on the wire; bodies are never
//!   re-encoded before verification.
//! - Every signed structure starts with a [`Domain`] tag, so a signature made for one purpose
//!   (a join proof, an invite) can never be passed off as another (a command).
//! - One acceptance rule for signatures everywhere: dalek's batch equation. Single verification
//!   is a batch of one, so integrating a batch and integrating one by one accept exactly the same
//!   entries (strict single verification would refuse some crafted signatures a batch accepts).
//! - Weak (small-order) public keys are refused at registration.

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
    /// Short fingerprint carried in every entry so a key change is detected before any curve
    /// arithmetic: the first 8 bytes of SHA-256("meshwork key id" ‖ key).
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

    /// Whether every entry of `entries` names this key and is signed by it, checked with one
    /// batch verification under the same rule as [`KeyRing::verify_batch`]. A connection task
    /// runs this on a `Submit` before the session sees it, so signature checks spread over
    /// every core while the session orders; `false` (an empty batch too) says nothing about
    /// which entry failed: the session's own checks find and name it.
    #[must_use]
    pub fn signed_all(&self, entries: &[SignedEntry]) -> bool {
        let mut messages = Vec::with_capacity(entries.len());
        let mut sigs = Vec::with_capacity(entries.len());
        for entry in entries {
            if !entry.decode_body().is_ok_and(|b| b.key_id == self.key_id) {
                return false;
            }
            messages.push(entry.body.as_slice());
            sigs.push(ed25519_dalek::Signature::from_bytes(&entry.signature.0));
        }
        let keys = vec![self.key; entries.len()];
        !entries.is_empty() && batch_holds(&messages, &sigs, &keys)
    }
}

/// [`ReadyKey::signed_all`] for a key given as bytes (made ready for this one call).
#[must_use]
pub fn all_signed_by(key: &PublicKey, entries: &[SignedEntry]) -> bool {
    ReadyKey::new(key).is_some_and(|k| k.signed_all(entries))
}

/// One item of a batch verification.
#[derive(Clone, Copy, Debug)]
pub struct SignedItem<'a> {
    /// Claimed author.
    pub author: AuthorId,
    /// Key fingerprint the signer named.
    pub key_id: KeyId,
    /// The exact signed bytes.
    pub message: &'a [u8],
    /// The signature.
    pub signature: &'a Signature,
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

    /// The key of `author` if `key_id` names it.
    fn key_for(&self, author: AuthorId, key_id: KeyId) -> Result<&VerifyingKey, SignatureError> {
        let reg = self
            .authors
            .get(&author)
            .ok_or(SignatureError::UnknownAuthor(author))?;
        if reg.key_id != key_id {
            return Err(SignatureError::KeyMismatch(author));
        }
        Ok(&reg.key)
    }
}

impl Verifier for KeyRing {
    fn verify(&self, item: &SignedItem<'_>) -> Result<(), SignatureError> {
        let key = self.key_for(item.author, item.key_id)?;
        if verify_one(key, item.message, item.signature) {
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
                Ok(key) => {
                    messages.push(item.message);
                    sigs.push(ed25519_dalek::Signature::from_bytes(&item.signature.0));
                    keys.push(*key);
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
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

/// The signed part of a log entry. Field order is the wire order and the signed order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntryBody {
    /// Always [`Domain::Entry`].
    pub domain: Domain,
    /// Protocol version the author spoke.
    pub version: u16,
    /// The session this entry belongs to (replay across sessions is refused).
    pub session: SessionId,
    /// The author.
    pub author: AuthorId,
    /// Fingerprint of the key the author signed with.
    pub key_id: KeyId,
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
            session,
            author,
            key_id,
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
}

/// A log entry as it travels: the encoded body and the author's signature over those bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEntry {
    /// Canonical postcard encoding of an [`EntryBody`].
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Signature over `body`.
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
    /// Encodes `body` once and signs those bytes.
    ///
    /// # Errors
    /// [`BodyError::WrongDomain`] if `body.domain` is not [`Domain::Entry`].
    pub fn sign(body: &EntryBody, signer: &dyn Signer) -> Result<Self, BodyError> {
        if body.domain != Domain::Entry {
            return Err(BodyError::WrongDomain);
        }
        let bytes = postcard::to_allocvec(body).map_err(|_| BodyError::Malformed("encode"))?;
        let signature = signer.sign(&bytes);
        Ok(Self {
            body: bytes,
            signature,
        })
    }

    /// Decodes the body without checking the signature.
    ///
    /// # Errors
    /// [`BodyError`] for bytes that are not exactly one entry body.
    pub fn decode_body(&self) -> Result<EntryBody, BodyError> {
        let body: EntryBody = decode_exact(&self.body)?;
        if body.domain != Domain::Entry {
            return Err(BodyError::WrongDomain);
        }
        Ok(body)
    }

    /// The item to hand a [`Verifier`] for this entry with its decoded body.
    #[must_use]
    pub fn signed_item<'a>(&'a self, body: &EntryBody) -> SignedItem<'a> {
        SignedItem {
            author: body.author,
            key_id: body.key_id,
            message: &self.body,
            signature: &self.signature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PROTOCOL_VERSION;

    fn body(signer: &Ed25519Signer, author: AuthorId) -> EntryBody {
        EntryBody {
            domain: Domain::Entry,
            version: PROTOCOL_VERSION,
            session: SessionId([7; 16]),
            author,
            key_id: signer.public_key().key_id(),
            seq: 1,
            lamport: 1,
            seen_lamport: 0,
            command: Command::Select { entities: vec![] },
        }
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let s = Ed25519Signer::from_seed([1; 32]);
        let mut ring = KeyRing::new();
        ring.register(AuthorId(1), s.public_key(), Role::Editor)
            .unwrap();
        let e = SignedEntry::sign(&body(&s, AuthorId(1)), &s).unwrap();
        let b = e.decode_body().unwrap();
        assert_eq!(ring.verify(&e.signed_item(&b)), Ok(()));
    }

    #[test]
    fn all_signed_by_holds_only_when_every_entry_verifies_under_that_key() {
        let (s, other) = (
            Ed25519Signer::from_seed([1; 32]),
            Ed25519Signer::from_seed([2; 32]),
        );
        let entries: Vec<SignedEntry> = (1..=5)
            .map(|seq| {
                let mut b = body(&s, AuthorId(1));
                b.seq = seq;
                SignedEntry::sign(&b, &s).unwrap()
            })
            .collect();
        assert!(all_signed_by(&s.public_key(), &entries));
        assert!(!all_signed_by(&other.public_key(), &entries), "another key");
        assert!(!all_signed_by(&s.public_key(), &[]), "nothing to vouch for");
        let mut tampered = entries.clone();
        tampered[3].signature.0[5] ^= 1;
        assert!(!all_signed_by(&s.public_key(), &tampered));
        // Signed by the key but naming another: the ring would refuse it, so must this.
        let mut named = body(&s, AuthorId(1));
        named.key_id = other.public_key().key_id();
        let mut mixed = entries;
        mixed.push(SignedEntry::sign(&named, &s).unwrap());
        assert!(!all_signed_by(&s.public_key(), &mixed));
    }

    #[test]
    fn batch_reports_exactly_the_bad_items() {
        let s = Ed25519Signer::from_seed([1; 32]);
        let mut ring = KeyRing::new();
        ring.register(AuthorId(1), s.public_key(), Role::Editor)
            .unwrap();
        let mut entries: Vec<SignedEntry> = (0..8)
            .map(|i| {
                let mut b = body(&s, AuthorId(1));
                b.seq = i;
                SignedEntry::sign(&b, &s).unwrap()
            })
            .collect();
        entries[3].signature.0[10] ^= 1;
        let bodies: Vec<EntryBody> = entries.iter().map(|e| e.decode_body().unwrap()).collect();
        let items: Vec<SignedItem<'_>> = entries
            .iter()
            .zip(&bodies)
            .map(|(e, b)| e.signed_item(b))
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
