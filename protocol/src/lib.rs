//! Meshwork's wire protocol, sans-IO: no sockets, no clocks, no threads, no randomness. Time
//! and random bytes are arguments; the same inputs always give the same bytes.
//!
//! Owns: the identities and their total order ([`ids`]), the editor vocabulary ([`command`]) and
//! its rulebook of roles, scopes and conflict strategies ([`registry`]), signed envelopes and key
//! rings ([`sign`]), the messages of the join handshake and the session ([`wire`]) and the frame
//! codec ([`codec`]). Must never: do I/O, read the clock, or decide what is true in a session —
//! that is `meshwork-session`'s job.
//!
//! Builds for `wasm32-unknown-unknown`; the browser editor uses it through wasm-bindgen.

extern crate alloc;

pub mod asset;
pub mod client;
pub mod codec;
pub mod command;
pub mod editmesh;
pub mod history;
pub mod ids;
pub mod interest;
pub mod mesh;
pub mod motion;
pub mod packed;
pub mod presence;
pub mod registry;
pub mod replica;
pub mod scene;
pub mod sign;
pub mod wire;

/// The hard protocol version. A peer speaking another version is refused in the handshake.
/// Version 2 entries bind their session and key into the signature ([`sign::EntryBody`]).
pub const PROTOCOL_VERSION: u16 = 2;

pub use codec::{FrameError, FrameReader, MAX_FRAME_BYTES, decode_frame, encode_frame, to_frame};
pub use command::{Command, Material, PayloadError, Primitive, Transform};
pub use ids::{AuthorId, CommandId, EntityId, LamportClock, SessionId, ToolId};
pub use registry::{CommandKind, Facet, MeshElement, Role, Rule, Scope, Strategy};
pub use sign::{
    Domain, Ed25519Signer, EntryBody, KeyId, KeyRing, PublicKey, SignatureError, SignedEntry,
    Signer, Verifier,
};
pub use wire::{ClientMsg, ServerMsg};
