//! Meshwork's authoritative session core, sans-IO: no sockets, no clocks, no threads, no
//! randomness. Deterministic: the same inputs in the same order give the same state and bytes.
//!
//! Owns the command log ([`log`]): signature, permission, payload and replay checks, conflict
//! resolution and the Lamport order; and the session state machine ([`session`]): join handshake, phases, rate limits,
//! durability-gated acknowledgement and fan-out, driven by `handle_input` / `poll_output` /
//! `poll_timeout`. Must never: touch the network, the disk or the clock —
//! `meshwork-server` does that and feeds the results in.

mod held;
pub mod log;
mod pack;
pub mod session;

pub use log::{CommandLog, Integrated, LogBase, LogEntry, Mode, Refusal, ReplayKind, Status};
pub use session::{
    AuthorRecord, BatchId, ClientId, Config, Event, HistoryPage, HistoryQuery, HistoryStep, Input,
    InviteRecord, Lane, MemberInfo, Output, RestoreError, RestoreReport, Restoring, Session,
    SessionBase, SessionSnapshot,
};
