//! The client side of a connection, sans-IO: the join handshake, signing and submitting
//! commands, and the replica. Feed it server messages ([`ClientConnection::handle`]), take the
//! messages to send ([`ClientConnection::poll_transmit`]). Native clients, the browser (through
//! wasm) and the simulated network all drive this same machine.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use crate::PROTOCOL_VERSION;
use crate::command::Command;
use crate::ids::AuthorId;
use crate::replica::{Replica, ReplicaEvent};
use crate::sign::{Domain, EntryBody, SignedEntry, Signer};
use crate::wire::{
    ClientMsg, Hello, Invite, JoinProof, JoinProofBody, JoinRefused, Resync, ServerMsg, Submit,
    Welcome,
};

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
    /// The replica diverged; a resync was requested.
    Resyncing,
    /// The server closed the connection.
    Closed,
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

    /// The author id, once joined.
    #[must_use]
    pub const fn author(&self) -> Option<AuthorId> {
        match &self.phase {
            ClientPhase::Joined(w) => Some(w.author),
            _ => None,
        }
    }

    /// The replica.
    #[must_use]
    pub const fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<ClientMsg> {
        self.outbox.pop_front()
    }

    /// Handles one server message.
    pub fn handle(&mut self, msg: &ServerMsg) -> ClientEvent {
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
                self.outbox.push_back(ClientMsg::JoinProof(JoinProof {
                    signature: proof.sign(&self.signer),
                }));
                self.phase = ClientPhase::Proving;
                ClientEvent::None
            }
            (ServerMsg::Welcome(w), ClientPhase::Proving) => {
                self.next_seq = w.next_seq;
                self.lamport = w.log_position;
                self.seen = w.log_position;
                self.phase = ClientPhase::Joined(w.clone());
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
            (_, ClientPhase::Joined(_)) => {
                if let ServerMsg::Entries(e) = msg {
                    for entry in &e.entries {
                        if let Ok(b) = entry.decode_body() {
                            self.lamport = self.lamport.max(b.lamport);
                            self.seen = self.seen.max(b.lamport);
                        }
                    }
                }
                match self.replica.on_message(msg) {
                    ReplicaEvent::NeedsResync => {
                        let position = self.replica.scene().position;
                        self.outbox
                            .push_back(ClientMsg::Resync(Resync { position }));
                        ClientEvent::Resyncing
                    }
                    ReplicaEvent::Synced => {
                        self.lamport = self.lamport.max(self.replica.scene().lamport);
                        self.seen = self.seen.max(self.replica.scene().lamport);
                        ClientEvent::Synced
                    }
                    ReplicaEvent::Verified | ReplicaEvent::None => ClientEvent::None,
                }
            }
            _ => ClientEvent::None,
        }
    }

    /// Signs `commands` as this author's next entries without sending them (for a transport
    /// that sends them itself, or a test that alters them). `None` before the join completed.
    pub fn sign(&mut self, commands: Vec<Command>) -> Option<Vec<SignedEntry>> {
        let ClientPhase::Joined(w) = &self.phase else {
            return None;
        };
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
    /// the join completed.
    pub fn submit(&mut self, commands: Vec<Command>) -> Option<Vec<SignedEntry>> {
        let entries = self.sign(commands)?;
        self.outbox.push_back(ClientMsg::Submit(Submit {
            entries: entries.clone(),
        }));
        Some(entries)
    }
}
