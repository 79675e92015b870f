//! Meshwork test kit. [`Client`] is a native headless client over QUIC: it pins the server
//! certificate from a join ticket, runs the join handshake, signs and submits commands, and
//! keeps every log entry the server sends, in total order.
//!
//! It holds no scene yet (that arrives with the replica work); it is what the integration tests
//! and `meshwork-loadgen` drive.

pub mod rtc;
pub mod sim;
pub mod typical;
pub mod ws;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshwork_protocol::client::{ClientConnection, ClientEvent};
use meshwork_protocol::codec::{FrameReader, encode_frame, to_frame};
use meshwork_protocol::wire::{
    ClientMsg, Close, CloseReason, JoinRefused, JoinTicket, ServerMsg, Submit, Welcome,
};
use meshwork_protocol::{
    AuthorId, Command, CommandId, Ed25519Signer, EntryBody, PROTOCOL_VERSION, Role, SignedEntry,
};
use tokio::sync::mpsc;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The ticket's address is not `host:port`.
    #[error("bad server address {0:?}")]
    Address(String),
    /// QUIC or TLS failed.
    #[error("connection: {0}")]
    Connection(String),
    /// The server refused the join.
    #[error("join refused: {0:?}")]
    Refused(JoinRefused),
    /// The server closed the connection.
    #[error("closed by the server: {0:?}")]
    Closed(Option<Close>),
    /// Nothing arrived in time.
    #[error("timed out waiting for the server")]
    Timeout,
    /// The server sent something the protocol does not allow here.
    #[error("unexpected message: {0}")]
    Unexpected(String),
}

/// A QUIC client endpoint that pins `cert_sha256`.
///
/// # Errors
/// [`ClientError::Connection`] when the socket or TLS cannot be set up.
pub fn client_endpoint(
    server: SocketAddr,
    cert_sha256: [u8; 32],
) -> Result<quinn::Endpoint, ClientError> {
    meshwork_quic_pin::endpoint(server, cert_sha256).map_err(ClientError::Connection)
}

/// What the client has seen of the session.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every log entry received, by position in the total order.
    pub entries: BTreeMap<CommandId, SignedEntry>,
    /// Acks of own entries: seq → id.
    pub acks: BTreeMap<u64, CommandId>,
    /// Refusals of own entries, in arrival order.
    pub refusals: Vec<meshwork_protocol::wire::CommandRefused>,
    /// The close message, if the server closed us.
    pub closed: Option<Close>,
    /// `History` frames received; the last one said `done`.
    pub history_done: bool,
    /// Resyncs this client asked for.
    pub resyncs: u64,
    /// Why, in order.
    pub resync_reasons: Vec<meshwork_protocol::replica::ResyncReason>,
    /// Relayed presence that came on the reliable stream (the server should never do that).
    pub presence_on_stream: u64,
    /// Relayed presence that came as a datagram.
    pub presence_by_datagram: u64,
    /// Packs of unreliable-lane messages received (their messages are handed out one by one).
    pub packs: u64,
    /// Members the server said left, in arrival order.
    /// Mesh-edit previews relayed from others, in arrival order.
    pub edit_previews: Vec<meshwork_protocol::wire::EditPreviewOf>,
    pub left: Vec<AuthorId>,
}

/// A joined headless client: the sans-IO [`ClientConnection`] (handshake, signing, replica)
/// driven over a QUIC stream, plus a record of what arrived for tests to assert on.
#[derive(Debug)]
pub struct Client {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    send: quinn::SendStream,
    inbox: mpsc::Receiver<(Arrival, ServerMsg)>,
    paused: tokio::sync::watch::Sender<bool>,
    machine: ClientConnection<Ed25519Signer>,
    /// Messages of a pack not handed out yet.
    unpacked: std::collections::VecDeque<(Arrival, ServerMsg)>,
    /// The welcome the server sent.
    pub welcome: Welcome,
    /// What arrived so far.
    pub seen: Seen,
    /// Bytes written to the server.
    pub bytes_sent: u64,
    /// Bytes read from the server.
    pub bytes_received: Arc<std::sync::atomic::AtomicU64>,
    /// Keep every received entry in [`Seen::entries`] (off for long load runs).
    pub retain_entries: bool,
    /// Keep the replica: verify and apply what the server sends (on by default). Off, the
    /// client still signs, submits and records acks, refusals and closes, and hands every
    /// message to the caller, but verifies nothing: for a test's many clients that only measure
    /// latency on the machine the server runs on (16 replicas verifying every entry take more
    /// CPU than the server does).
    pub keep_replica: bool,
}

/// An open connection: the endpoint, the connection and its bidirectional stream.
pub type Opened = (
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
);

/// Connects to `addr` (pinning `cert_sha256`) and opens the stream, without joining.
///
/// # Errors
/// [`ClientError::Connection`] on QUIC/TLS failure.
pub async fn open(addr: SocketAddr, cert_sha256: [u8; 32]) -> Result<Opened, ClientError> {
    open_with_window(addr, cert_sha256, None).await
}

/// As [`open`]; with `window`, the connection's receive windows are that many bytes (the
/// stream's) and twice that (the connection's), so a client that stops reading fills them fast.
///
/// # Errors
/// As [`open`].
pub async fn open_with_window(
    addr: SocketAddr,
    cert_sha256: [u8; 32],
    window: Option<u32>,
) -> Result<Opened, ClientError> {
    let endpoint = match window {
        None => client_endpoint(addr, cert_sha256)?,
        Some(bytes) => meshwork_quic_pin::endpoint_with(addr, cert_sha256, |t| {
            t.stream_receive_window(quinn::VarInt::from_u32(bytes));
            t.receive_window(quinn::VarInt::from_u32(bytes.saturating_mul(2)));
        })
        .map_err(ClientError::Connection)?,
    };
    let conn = endpoint
        .connect(addr, "localhost")
        .map_err(|e| ClientError::Connection(e.to_string()))?
        .await
        .map_err(|e| ClientError::Connection(e.to_string()))?;
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| ClientError::Connection(e.to_string()))?;
    Ok((endpoint, conn, send, recv))
}

/// How a message came: on the reliable stream, or as a datagram (the unreliable lane).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The QUIC stream.
    Stream,
    /// A QUIC datagram.
    Datagram,
}

/// Reads frames from `recv` and datagrams from `conn` into one channel of messages, each
/// marked with the lane it came on, until the stream ends.
fn spawn_reader(
    mut recv: quinn::RecvStream,
    conn: quinn::Connection,
    counter: Arc<std::sync::atomic::AtomicU64>,
    paused: tokio::sync::watch::Receiver<bool>,
) -> mpsc::Receiver<(Arrival, ServerMsg)> {
    let (tx, rx) = mpsc::channel(65_536);
    // Datagrams (presence) join the same inbox; dropped when it is full (latest wins).
    let dtx = tx.clone();
    let mut datagrams_paused = paused.clone();
    let mut stream_paused = paused;
    tokio::spawn(async move {
        loop {
            // While paused, nothing is read: quinn's datagram buffer fills and drops.
            if datagrams_paused.wait_for(|p| !*p).await.is_err() {
                return;
            }
            let Ok(d) = conn.read_datagram().await else {
                return;
            };
            if let Ok(Some((msg, _))) = meshwork_protocol::decode_frame::<ServerMsg>(&d) {
                let _ = dtx.try_send((Arrival::Datagram, msg));
            }
        }
    });
    tokio::spawn(async move {
        let mut reader = FrameReader::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // While paused, the stream is not read: its flow-control window fills and the
            // server's writes to it stop.
            if stream_paused.wait_for(|p| !*p).await.is_err() {
                return;
            }
            let Ok(Some(n)) = recv.read(&mut buf).await else {
                return;
            };
            counter.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            if reader.push(buf.get(..n).unwrap_or_default()).is_err() {
                return;
            }
            loop {
                match reader.next_msg::<ServerMsg>() {
                    Ok(Some(msg)) => {
                        if tx.send((Arrival::Stream, msg)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
        }
    });
    rx
}

/// Resolves a ticket's `host:port`.
///
/// # Errors
/// [`ClientError::Address`] when it does not resolve.
pub fn resolve(addr: &str) -> Result<SocketAddr, ClientError> {
    use std::net::ToSocketAddrs as _;
    addr.to_socket_addrs()
        .map_err(|_| ClientError::Address(addr.to_owned()))?
        .next()
        .ok_or_else(|| ClientError::Address(addr.to_owned()))
}

impl Client {
    /// Joins the session the ticket opens, signing as `signer`.
    ///
    /// # Errors
    /// [`ClientError`] naming the failed step; a refusal carries the server's reason.
    pub async fn join(ticket: &JoinTicket, signer: Ed25519Signer) -> Result<Self, ClientError> {
        Self::join_as(ticket, signer, PROTOCOL_VERSION).await
    }

    /// As [`Client::join`], with small receive windows (see [`open_with_window`]): with
    /// [`Client::pause_reading`], a client that stops reading and pushes back at once.
    ///
    /// # Errors
    /// As [`Client::join`].
    pub async fn join_with_window(
        ticket: &JoinTicket,
        signer: Ed25519Signer,
        window: u32,
    ) -> Result<Self, ClientError> {
        Self::join_inner(ticket, signer, PROTOCOL_VERSION, Some(window)).await
    }

    /// Stops reading the connection (stream and datagrams) until [`Client::resume_reading`].
    pub fn pause_reading(&self) {
        self.paused.send_replace(true);
    }

    /// Reads the connection again.
    pub fn resume_reading(&self) {
        self.paused.send_replace(false);
    }

    /// As [`Client::join`], announcing `protocol_version` (tests of version refusal).
    ///
    /// # Errors
    /// As [`Client::join`].
    pub async fn join_as(
        ticket: &JoinTicket,
        signer: Ed25519Signer,
        protocol_version: u16,
    ) -> Result<Self, ClientError> {
        Self::join_inner(ticket, signer, protocol_version, None).await
    }

    /// As [`Client::join`], holding only `region` of the scene (a partial replica,
    /// `ClientMsg::Hold` sent before the join proof).
    ///
    /// # Errors
    /// As [`Client::join`].
    pub async fn join_holding(
        ticket: &JoinTicket,
        signer: Ed25519Signer,
        region: meshwork_protocol::interest::Region,
    ) -> Result<Self, ClientError> {
        Self::join_full(ticket, signer, PROTOCOL_VERSION, None, Some(region)).await
    }

    /// Holds `region` of the scene from now on (`None`: all of it): see
    /// [`ClientConnection::set_hold`].
    ///
    /// # Errors
    /// [`ClientError::Connection`] when the stream is gone.
    pub async fn hold(
        &mut self,
        region: Option<meshwork_protocol::interest::Region>,
    ) -> Result<(), ClientError> {
        self.machine.set_hold(region);
        self.flush().await
    }

    async fn join_inner(
        ticket: &JoinTicket,
        signer: Ed25519Signer,
        protocol_version: u16,
        window: Option<u32>,
    ) -> Result<Self, ClientError> {
        Self::join_full(ticket, signer, protocol_version, window, None).await
    }

    async fn join_full(
        ticket: &JoinTicket,
        signer: Ed25519Signer,
        protocol_version: u16,
        window: Option<u32>,
        hold: Option<meshwork_protocol::interest::Region>,
    ) -> Result<Self, ClientError> {
        let addr = resolve(&ticket.quic_addr)?;
        let (endpoint, conn, mut send, recv) =
            open_with_window(addr, ticket.cert_sha256, window).await?;
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (paused, paused_rx) = tokio::sync::watch::channel(false);
        let mut inbox = spawn_reader(recv, conn.clone(), counter.clone(), paused_rx);
        let build_id = format!("meshwork-testkit {}", env!("CARGO_PKG_VERSION"));
        let mut machine = ClientConnection::with_protocol_version(
            signer,
            ticket.invite.clone(),
            &build_id,
            protocol_version,
        );
        machine.set_hold(hold);
        let welcome = handshake(&mut machine, &mut send, &mut inbox).await?;
        Ok(Self {
            endpoint,
            conn,
            send,
            inbox,
            paused,
            machine,
            unpacked: std::collections::VecDeque::new(),
            welcome,
            seen: Seen::default(),
            bytes_sent: 0,
            bytes_received: counter,
            retain_entries: true,
            keep_replica: true,
        })
    }

    /// The replicated scene.
    #[must_use]
    pub const fn replica(&self) -> &meshwork_protocol::replica::Replica {
        self.machine.replica()
    }

    /// This client's author id.
    #[must_use]
    pub const fn author(&self) -> AuthorId {
        self.welcome.author
    }

    /// The role as it now stands: the one the server granted, or an admin's change since.
    #[must_use]
    pub fn role(&self) -> Role {
        self.machine.role().unwrap_or(self.welcome.role)
    }

    /// Signs `command` as the next entry without sending it (tests that alter entries).
    ///
    /// # Panics
    /// Never after a join: [`Client::join`] returns only once joined.
    pub fn sign(&mut self, command: Command) -> SignedEntry {
        self.machine
            .sign(vec![command])
            .and_then(|mut v| v.pop())
            .expect("a joined connection signs")
    }

    /// Submits `commands` and waits (until `wait` has passed) for every one to be acknowledged.
    ///
    /// # Errors
    /// [`ClientError::Timeout`] if an acknowledgement does not come in time (a refusal shows in
    /// [`Seen::refusals`]), or the connection errors.
    pub async fn submit_acked(
        &mut self,
        commands: Vec<Command>,
        wait: Duration,
    ) -> Result<Vec<SignedEntry>, ClientError> {
        let entries = self.submit(commands).await?;
        let seqs: Vec<u64> = entries
            .iter()
            .filter_map(|e| e.decode_body().ok())
            .map(|b| b.seq)
            .collect();
        let deadline = Instant::now()
            .checked_add(wait)
            .unwrap_or_else(Instant::now);
        self.until(deadline, |s| seqs.iter().all(|q| s.acks.contains_key(q)))
            .await?;
        Ok(entries)
    }

    /// Spawns a cube at the origin as this author's entity `index` and waits (until `wait` has
    /// passed) for it to be acknowledged: the one object most tests edit.
    ///
    /// # Errors
    /// As [`Client::submit_acked`].
    pub async fn spawn_cube_acked(
        &mut self,
        index: u32,
        wait: Duration,
    ) -> Result<meshwork_protocol::EntityId, ClientError> {
        let cube = meshwork_protocol::EntityId::new(self.author(), index);
        self.submit_acked(
            vec![Command::Spawn {
                entity: cube,
                primitive: meshwork_protocol::command::Primitive::Cube,
                transform: meshwork_protocol::command::Transform::IDENTITY,
            }],
            wait,
        )
        .await?;
        Ok(cube)
    }

    /// A long history quickly: `count` translations of `entity`, alternately +X and -X (so it
    /// ends where it started or one step away), submitted in chunks of 1,000, each chunk
    /// acknowledged (within `wait`) before the next. Stops at the first refusal, which stays in
    /// [`Seen::refusals`].
    ///
    /// # Errors
    /// As [`Client::submit`]; [`ClientError::Timeout`] when a chunk is not acknowledged in
    /// time.
    pub async fn translate_back_and_forth(
        &mut self,
        entity: meshwork_protocol::EntityId,
        count: usize,
        wait: Duration,
    ) -> Result<(), ClientError> {
        const CHUNK: usize = 1_000;
        let mut sent = 0usize;
        while sent < count && self.seen.refusals.is_empty() {
            let n = CHUNK.min(count.saturating_sub(sent));
            let commands = (sent..sent.saturating_add(n))
                .map(|i| Command::Translate {
                    entity,
                    delta: if i % 2 == 0 {
                        glam::Vec3::X
                    } else {
                        -glam::Vec3::X
                    },
                })
                .collect();
            let signed = self.submit(commands).await?;
            let Some(last) = signed
                .last()
                .and_then(|e| e.decode_body().ok())
                .map(|b| b.seq)
            else {
                break;
            };
            let deadline = Instant::now()
                .checked_add(wait)
                .unwrap_or_else(Instant::now);
            self.until(deadline, |s| {
                s.acks.contains_key(&last) || !s.refusals.is_empty()
            })
            .await?;
            sent = sent.saturating_add(n);
        }
        Ok(())
    }

    /// Signs and submits `commands` through the protocol machine, which keeps them until they
    /// are acknowledged or refused (and submits them again after a reconnect). While the
    /// connection is down ([`Client::dropped`]) they are only signed and kept: edits made
    /// offline. Returns the entries.
    ///
    /// # Errors
    /// [`ClientError::Unexpected`] before the first join or past the machine's bound;
    /// [`ClientError::Connection`] when the stream is gone.
    pub async fn submit_kept(
        &mut self,
        commands: Vec<Command>,
    ) -> Result<Vec<SignedEntry>, ClientError> {
        let entries = self
            .machine
            .submit(commands)
            .ok_or_else(|| ClientError::Unexpected("not joined, or too many kept".into()))?;
        if self.machine.is_joined() {
            self.flush().await?;
        }
        Ok(entries)
    }

    /// Writes everything the protocol machine has queued.
    async fn flush(&mut self) -> Result<(), ClientError> {
        while let Some(out) = self.machine.poll_transmit() {
            let frame = to_frame(&out).map_err(|e| ClientError::Unexpected(e.to_string()))?;
            self.send_raw(&frame).await?;
        }
        Ok(())
    }

    /// The network path is gone (the test cuts it): the connection is dropped without a
    /// goodbye, and the machine starts over (`ClientConnection::reconnect`), keeping its
    /// replica and unacknowledged entries.
    pub fn dropped(&mut self) {
        self.conn.close(0u8.into(), b"path cut");
        self.machine.reconnect();
    }

    /// Entries submitted with [`Client::submit_kept`] not yet acknowledged or refused.
    #[must_use]
    pub fn unacked(&self) -> usize {
        self.machine.unacked().count()
    }

    /// Connects again (to `quic_addr`, pinning `cert_sha256`: a restarted server may listen
    /// elsewhere) after [`Client::dropped`]: the machine resumes from its replica's position and
    /// submits its unacknowledged entries again once welcomed.
    ///
    /// # Errors
    /// As [`Client::join`].
    pub async fn reconnect(
        &mut self,
        quic_addr: &str,
        cert_sha256: [u8; 32],
    ) -> Result<(), ClientError> {
        let addr = resolve(quic_addr)?;
        let (endpoint, conn, send, recv) = open_with_window(addr, cert_sha256, None).await?;
        let (paused, paused_rx) = tokio::sync::watch::channel(false);
        self.inbox = spawn_reader(recv, conn.clone(), self.bytes_received.clone(), paused_rx);
        self.endpoint = endpoint;
        self.conn = conn;
        self.send = send;
        self.paused = paused;
        self.welcome = handshake(&mut self.machine, &mut self.send, &mut self.inbox).await?;
        // The resubmission of what was not acknowledged.
        self.flush().await
    }

    /// Signs an arbitrary body with this client's key (tests of replayed and malformed entries),
    /// for the session it joined when the body names none (a decoded version-2 body does not).
    ///
    /// # Panics
    /// If `body.domain` is not `Domain::Entry`, or the layout cannot hold the body.
    #[must_use]
    pub fn sign_body(&self, body: &EntryBody) -> SignedEntry {
        let mut body = body.clone();
        body.session = body.session.or(Some(self.welcome.session));
        SignedEntry::sign(&body, self.machine.signer()).expect("an entry body")
    }

    /// Signs and submits commands as one `Submit` frame. Returns the entries sent.
    ///
    /// # Errors
    /// [`ClientError::Connection`] when the stream is gone.
    pub async fn submit(
        &mut self,
        commands: Vec<Command>,
    ) -> Result<Vec<SignedEntry>, ClientError> {
        let entries = self
            .machine
            .sign(commands)
            .ok_or_else(|| ClientError::Unexpected("not joined".into()))?;
        self.submit_signed(entries.clone()).await?;
        Ok(entries)
    }

    /// Submits already signed entries (tests of forged and replayed entries).
    ///
    /// # Errors
    /// [`ClientError::Connection`] when the stream is gone.
    pub async fn submit_signed(&mut self, entries: Vec<SignedEntry>) -> Result<(), ClientError> {
        let frame = to_frame(&ClientMsg::Submit(Submit { entries }))
            .map_err(|e| ClientError::Unexpected(e.to_string()))?;
        self.send_raw(&frame).await
    }

    /// Writes raw bytes to the stream (tests of malformed input).
    ///
    /// # Errors
    /// [`ClientError::Connection`] when the stream is gone.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.bytes_sent = self.bytes_sent.saturating_add(bytes.len() as u64);
        self.send
            .write_all(bytes)
            .await
            .map_err(|e| ClientError::Connection(e.to_string()))
    }

    /// Asks for the log history since `since_lamport` (arrives as `History`, recorded in
    /// [`Seen::entries`]; [`Seen::history_done`] when complete).
    ///
    /// # Errors
    /// [`ClientError::Connection`] when the stream is gone.
    pub async fn fetch_log(&mut self, since_lamport: u64) -> Result<(), ClientError> {
        self.seen.history_done = false;
        let frame = to_frame(&ClientMsg::FetchLog(meshwork_protocol::wire::FetchLog {
            since_lamport,
        }))
        .map_err(|e| ClientError::Unexpected(e.to_string()))?;
        self.send_raw(&frame).await
    }

    /// Sends a presence update as a datagram.
    ///
    /// # Errors
    /// [`ClientError::Connection`] when datagrams cannot be sent.
    pub fn send_presence(
        &self,
        presence: meshwork_protocol::wire::Presence,
    ) -> Result<(), ClientError> {
        let frame = to_frame(&ClientMsg::Presence(presence))
            .map_err(|e| ClientError::Unexpected(e.to_string()))?;
        self.conn
            .send_datagram(frame.into())
            .map_err(|e| ClientError::Connection(e.to_string()))
    }

    /// Sends a ping.
    ///
    /// # Errors
    /// [`ClientError::Connection`] when the stream is gone.
    pub async fn ping(&mut self, nonce: u64) -> Result<(), ClientError> {
        let frame = to_frame(&ClientMsg::Ping(meshwork_protocol::wire::Ping { nonce }))
            .map_err(|e| ClientError::Unexpected(e.to_string()))?;
        self.send_raw(&frame).await
    }

    /// Takes the next message (recording it in [`Client::seen`]), waiting at most `wait`.
    ///
    /// # Errors
    /// [`ClientError::Timeout`], or [`ClientError::Closed`] when the stream has ended.
    pub async fn next(&mut self, wait: Duration) -> Result<ServerMsg, ClientError> {
        let (arrival, msg) = loop {
            let (arrival, msg) = match self.unpacked.pop_front() {
                Some(m) => m,
                None => match recv_msg(&mut self.inbox, wait).await {
                    Ok(m) => m,
                    Err(ClientError::Closed(_)) => {
                        return Err(ClientError::Closed(self.seen.closed.clone()));
                    }
                    Err(e) => return Err(e),
                },
            };
            // A pack is handed out as the messages in it, as they came.
            if let ServerMsg::Packed(p) = &msg {
                self.seen.packs = self.seen.packs.saturating_add(1);
                let parts = self.machine.unpack(p);
                self.unpacked
                    .extend(parts.into_iter().map(|m| (arrival, m)));
                continue;
            }
            break (arrival, msg);
        };
        let replica_only = matches!(
            msg,
            ServerMsg::Entries(_)
                | ServerMsg::SealedDelta(_)
                | ServerMsg::Held(_)
                | ServerMsg::Snapshot(_)
                | ServerMsg::SnapshotChunk(_)
                | ServerMsg::StateHash(_)
        );
        if (self.keep_replica || !replica_only)
            && let ClientEvent::Resyncing(reason) = self.machine.handle(&msg)
        {
            self.seen.resyncs = self.seen.resyncs.saturating_add(1);
            self.seen.resync_reasons.push(reason);
        }
        // The machine may have queued a `Resync`. A stream the server has closed fails the
        // write: the message read is still handed out (it may be the close saying why), and
        // the closing shows on the next read.
        while let Some(out) = self.machine.poll_transmit() {
            let frame = to_frame(&out).map_err(|e| ClientError::Unexpected(e.to_string()))?;
            if self.send_raw(&frame).await.is_err() {
                break;
            }
        }
        match &msg {
            ServerMsg::History(h) => {
                for entry in &h.entries {
                    if let Ok(body) = entry.decode_body() {
                        self.seen.entries.insert(body.id(), entry.clone());
                    }
                }
                self.seen.history_done = h.done;
            }
            ServerMsg::Entries(meshwork_protocol::wire::Entries { entries })
            | ServerMsg::Held(meshwork_protocol::wire::Held { entries, .. }) => {
                for entry in entries {
                    if let Ok(body) = entry.decode_body()
                        && self.retain_entries
                    {
                        self.seen.entries.insert(body.id(), entry.clone());
                    }
                }
            }
            ServerMsg::Ack(a) => {
                self.seen.acks.insert(a.seq, a.id);
            }
            ServerMsg::CommandRefused(r) => self.seen.refusals.push(r.clone()),
            ServerMsg::Close(c) => self.seen.closed = Some(c.clone()),
            ServerMsg::Left(l) => self.seen.left.push(l.author),
            ServerMsg::EditPreview(p) => self.seen.edit_previews.push(p.clone()),
            ServerMsg::Presence(_) => match arrival {
                Arrival::Stream => {
                    self.seen.presence_on_stream = self.seen.presence_on_stream.saturating_add(1);
                }
                Arrival::Datagram => {
                    self.seen.presence_by_datagram =
                        self.seen.presence_by_datagram.saturating_add(1);
                }
            },
            _ => {}
        }
        Ok(msg)
    }

    /// Reads until the replica is synced at `position` or later.
    ///
    /// # Errors
    /// [`ClientError::Timeout`] when `wait` passes first; [`ClientError::Closed`] if the server
    /// closes the connection.
    pub async fn catch_up(&mut self, position: u64, wait: Duration) -> Result<(), ClientError> {
        let end = Instant::now()
            .checked_add(wait)
            .unwrap_or_else(Instant::now);
        while !(self.replica().is_synced() && self.replica().scene().position >= position) {
            if self.seen.closed.is_some() {
                return Err(ClientError::Closed(self.seen.closed.clone()));
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout);
            }
            match self.next(left.min(Duration::from_millis(50))).await {
                Ok(_) | Err(ClientError::Timeout) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Takes messages until `done` holds for what has been seen, or `deadline` passes.
    ///
    /// # Errors
    /// [`ClientError::Timeout`] when the deadline passes first; [`ClientError::Closed`] if the
    /// server closes the connection before.
    pub async fn until(
        &mut self,
        deadline: Instant,
        done: impl Fn(&Seen) -> bool,
    ) -> Result<(), ClientError> {
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout);
            }
            self.next(left).await?;
        }
        Ok(())
    }

    /// Reads until the replica is synced at scene position `position` or later; returns its
    /// scene's state hash (what the server's API names `scene_hash`, in hex).
    ///
    /// # Errors
    /// [`ClientError::Timeout`] when the deadline passes first; [`ClientError::Closed`] if the
    /// server closes the connection before.
    pub async fn caught_up_to(
        &mut self,
        position: u64,
        deadline: Instant,
    ) -> Result<[u8; 32], ClientError> {
        while !(self.replica().is_synced() && self.replica().scene().position >= position) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout);
            }
            match self.next(left.min(Duration::from_millis(50))).await {
                Ok(_) | Err(ClientError::Timeout) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.replica().scene().state_hash())
    }

    /// The QUIC connection (close reasons, stats).
    #[must_use]
    pub const fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Leaves politely.
    pub async fn leave(mut self) {
        let bye = ClientMsg::Close(Close {
            reason: CloseReason::Leaving,
            message: "bye".into(),
        });
        let _ = write(&mut self.send, &bye).await;
        let _ = self.send.finish();
        self.conn.close(0u8.into(), b"bye");
        self.endpoint.wait_idle().await;
    }
}

/// Drives the machine's join (or rejoin) until the welcome.
async fn handshake(
    machine: &mut ClientConnection<Ed25519Signer>,
    send: &mut quinn::SendStream,
    inbox: &mut mpsc::Receiver<(Arrival, ServerMsg)>,
) -> Result<Welcome, ClientError> {
    loop {
        while let Some(msg) = machine.poll_transmit() {
            write(send, &msg).await?;
        }
        let (_, msg) = recv_msg(inbox, Duration::from_secs(10)).await?;
        match machine.handle(&msg) {
            ClientEvent::Joined => {
                // What joining queued (the codecs, a catch-up) goes before anything the
                // caller sends.
                while let Some(msg) = machine.poll_transmit() {
                    write(send, &msg).await?;
                }
                return machine
                    .welcome()
                    .cloned()
                    .ok_or_else(|| ClientError::Unexpected("welcome".into()));
            }
            ClientEvent::Refused(r) => return Err(ClientError::Refused(r)),
            ClientEvent::Closed | ClientEvent::Untrusted => {
                return Err(ClientError::Closed(None));
            }
            ClientEvent::None | ClientEvent::Synced | ClientEvent::Resyncing(_) => {}
        }
    }
}

async fn write(send: &mut quinn::SendStream, msg: &ClientMsg) -> Result<(), ClientError> {
    let mut frame = Vec::new();
    encode_frame(msg, &mut frame).map_err(|e| ClientError::Unexpected(e.to_string()))?;
    send.write_all(&frame)
        .await
        .map_err(|e| ClientError::Connection(e.to_string()))
}

async fn recv_msg(
    inbox: &mut mpsc::Receiver<(Arrival, ServerMsg)>,
    wait: Duration,
) -> Result<(Arrival, ServerMsg), ClientError> {
    match tokio::time::timeout(wait, inbox.recv()).await {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(ClientError::Closed(None)),
        Err(_) => Err(ClientError::Timeout),
    }
}

/// A loopback TCP port that was free a moment ago, for what must be told its port up front:
/// prometheus, and the container whose HEALTHCHECK dials its configured address. Everything
/// else binds `127.0.0.1:0` and reports the port it got. The port could be taken in
/// between; the window is microseconds and the test then fails loudly, it never passes wrongly.
///
/// # Panics
/// If loopback cannot be bound at all.
#[must_use]
pub fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("loopback is available")
}

/// A fresh random signing key.
///
/// A scene of `n` cubes on a grid (`per_row` to a row, 2 m apart), each subdivided to 972
/// triangles (6 × 9² quads): a large, realistic mesh load for export and import.
///
/// # Panics
/// Never for the commands it applies (they are valid by construction).
#[must_use]
pub fn subdivided_cubes(n: u32, per_row: u32) -> meshwork_protocol::scene::Scene {
    use meshwork_protocol::command::{Primitive, Transform};
    use meshwork_protocol::scene::{Limits, Scene};
    let author = AuthorId(1);
    let mut s = Scene::new();
    let mut lamport = 0u64;
    let per_row = per_row.max(1);
    for i in 0..n {
        let entity = meshwork_protocol::EntityId::new(author, i.saturating_add(1));
        let mut apply = |s: &mut Scene, c: Command| {
            lamport = lamport.saturating_add(1);
            s.try_apply(CommandId { lamport, author }, author, &c, &Limits::NONE)
                .expect("a valid command");
        };
        #[allow(clippy::cast_precision_loss, reason = "small grid coordinates")]
        let (column, row) = (
            i.checked_rem(per_row).unwrap_or(0),
            i.checked_div(per_row).unwrap_or(0),
        );
        let at = glam::Vec3::new(column as f32 * 2.0, 0.0, row as f32 * 2.0);
        apply(
            &mut s,
            Command::Spawn {
                entity,
                primitive: Primitive::Cube,
                transform: Transform {
                    translation: at,
                    ..Transform::IDENTITY
                },
            },
        );
        let e = &s.entities[&entity];
        let faces = e
            .geometry
            .edit_mesh(e.spawned_by)
            .faces()
            .keys()
            .copied()
            .collect();
        apply(
            &mut s,
            Command::SubdivideFaces {
                entity,
                faces,
                cuts: 8,
            },
        );
    }
    s
}

/// # Panics
/// If the OS has no randomness (a broken machine).
#[must_use]
pub fn random_signer() -> Ed25519Signer {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("the OS provides randomness");
    Ed25519Signer::from_seed(seed)
}

/// The root of the checkout whose test is running, found at run time (the directory above the
/// running package's `CARGO_MANIFEST_DIR`, which cargo and nextest set, that holds
/// `Cargo.lock`). Not `env!`: build output is shared between checkouts through
/// `~/.cache/meshwork/target`, so a path baked in at compile time may name another checkout.
///
/// # Panics
/// Outside a checkout.
#[must_use]
pub fn repo_root() -> std::path::PathBuf {
    let here = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .expect("run by cargo or nextest");
    here.ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .expect("inside a checkout")
        .to_path_buf()
}

/// Runs a Node script of `client-web/tests/` with `args` and returns the JSON object it prints
/// last on stdout.
///
/// # Panics
/// When Node fails or prints no JSON: the calling test fails with its output.
pub async fn node_json(script: &str, node_flags: &[&str], args: &[&str]) -> serde_json::Value {
    let path = repo_root().join("client-web/tests").join(script);
    let out = tokio::process::Command::new("node")
        .args(node_flags)
        .arg(&path)
        .args(args)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_default();
    let parsed = serde_json::from_str(last);
    assert!(parsed.is_ok(), "{script} printed no JSON:\n{stdout}");
    parsed.expect("checked just above")
}

/// What the browser tests share: the built editor and where screenshots go.
pub mod browser {
    use std::path::PathBuf;

    /// `client-web/dist`, the built editor.
    ///
    /// # Panics
    /// When it is not built (`cargo xtask ci` builds it in its wasm step).
    #[must_use]
    pub fn editor_dist() -> PathBuf {
        let dist = super::repo_root().join("client-web/dist");
        assert!(
            dist.join("index.html").is_file(),
            "build the editor first (`cargo xtask ci` does)"
        );
        dist
    }

    /// Where browser tests put screenshots: `$MESHWORK_ARTIFACTS`, else `tmp` (the calling
    /// test's `CARGO_TARGET_TMPDIR`) `/browser-artifacts`.
    #[must_use]
    pub fn artifacts(tmp: &str) -> PathBuf {
        std::env::var("MESHWORK_ARTIFACTS").map_or_else(
            |_| PathBuf::from(tmp).join("browser-artifacts"),
            PathBuf::from,
        )
    }
}

pub mod http {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// The value of the Prometheus sample `name` (with its labels, as exposed) at `addr`'s
    /// `/metrics`; 0 when absent.
    ///
    /// # Panics
    /// When `/metrics` cannot be fetched.
    pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
        let body = get(addr, "/metrics").await.expect("/metrics answers").body;
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// Status code and body of a response.
    #[derive(Debug)]
    pub struct Response {
        /// HTTP status.
        pub status: u16,
        /// Body as text.
        pub body: String,
        /// Body as bytes (as sent; not de-chunked).
        pub bytes: Vec<u8>,
    }

    /// Sends one request and reads the whole response.
    ///
    /// # Errors
    /// The I/O error as text.
    pub async fn request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Response, String> {
        request_bytes(addr, method, path, headers, body.as_bytes()).await
    }

    /// [`request`] with a binary body.
    ///
    /// # Errors
    /// The I/O error as text.
    pub async fn request_bytes(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, String> {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut raw_req = req.into_bytes();
        raw_req.extend_from_slice(body);
        stream
            .write_all(&raw_req)
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| e.to_string())?;
        let bytes = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .and_then(|at| raw.get(at.saturating_add(4)..))
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, rest) = text.split_once("\r\n\r\n").ok_or("no header end")?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or("no status")?;
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let body = if chunked {
            dechunk(rest)
        } else {
            rest.to_owned()
        };
        Ok(Response {
            status,
            body,
            bytes,
        })
    }

    fn dechunk(mut s: &str) -> String {
        let mut out = String::new();
        while let Some((size, rest)) = s.split_once("\r\n") {
            let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                break;
            };
            if n == 0 || rest.len() < n {
                break;
            }
            out.push_str(rest.get(..n).unwrap_or_default());
            s = rest.get(n..).unwrap_or_default().trim_start_matches("\r\n");
        }
        out
    }

    /// `GET path`.
    ///
    /// # Errors
    /// As [`request`].
    pub async fn get(addr: SocketAddr, path: &str) -> Result<Response, String> {
        request(addr, "GET", path, &[], "").await
    }

    /// The admin API as a test uses it: a bearer token and JSON both ways.
    #[derive(Clone, Debug)]
    pub struct Admin {
        /// The server's HTTP address.
        pub addr: SocketAddr,
        /// The admin token.
        pub token: String,
    }

    impl Admin {
        async fn call(
            &self,
            method: &str,
            path: &str,
            body: &str,
            expect: u16,
        ) -> Result<serde_json::Value, String> {
            let bearer = format!("Bearer {}", self.token);
            let headers = [
                ("Authorization", bearer.as_str()),
                ("Content-Type", "application/json"),
            ];
            let r = request(self.addr, method, path, &headers, body).await?;
            if r.status != expect {
                return Err(format!("{method} {path}: {} {}", r.status, r.body));
            }
            serde_json::from_str(&r.body).map_err(|e| format!("{method} {path}: {e}: {}", r.body))
        }

        /// `GET /api/v1/sessions`.
        ///
        /// # Errors
        /// A status other than 200 or a body that is not JSON.
        pub async fn sessions(&self) -> Result<serde_json::Value, String> {
            self.call("GET", "/api/v1/sessions", "", 200).await
        }

        /// The first listed session's scene position and hex state hash (tests with one
        /// session).
        ///
        /// # Errors
        /// As [`Admin::sessions`], or a listing without those fields.
        pub async fn scene(&self) -> Result<(u64, String), String> {
            let list = self.sessions().await?;
            let position = list[0]["scene_position"].as_u64();
            let hash = list[0]["scene_hash"].as_str().map(str::to_owned);
            position
                .zip(hash)
                .ok_or_else(|| format!("no scene position or hash in {list}"))
        }

        /// `GET /api/v1/sessions/{id}/members`.
        ///
        /// # Errors
        /// A status other than 200.
        pub async fn members(&self, session: &str) -> Result<serde_json::Value, String> {
            self.call(
                "GET",
                &format!("/api/v1/sessions/{session}/members"),
                "",
                200,
            )
            .await
        }

        /// `POST /api/v1/sessions`; returns the new session's id.
        ///
        /// # Errors
        /// A status other than 201.
        pub async fn create_session(&self, name: &str) -> Result<String, String> {
            let body = serde_json::json!({ "name": name }).to_string();
            let v = self.call("POST", "/api/v1/sessions", &body, 201).await?;
            v["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("no id in {v}"))
        }

        /// `POST /api/v1/sessions/{id}/invites`; returns the ticket text.
        ///
        /// # Errors
        /// A status other than 201.
        pub async fn invite(&self, session: &str, role: &str) -> Result<String, String> {
            self.invite_with(serde_json::json!({ "role": role }), session)
                .await
        }

        /// As [`Admin::invite`], valid for `ttl_s` seconds.
        ///
        /// # Errors
        /// As [`Admin::invite`].
        pub async fn invite_for(
            &self,
            session: &str,
            role: &str,
            ttl_s: u64,
        ) -> Result<String, String> {
            self.invite_with(serde_json::json!({ "role": role, "ttl_s": ttl_s }), session)
                .await
        }

        async fn invite_with(
            &self,
            body: serde_json::Value,
            session: &str,
        ) -> Result<String, String> {
            let v = self.mint(session, body).await?;
            v["ticket"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("no ticket in {v}"))
        }

        /// `POST /api/v1/sessions/{id}/invites` with `body` (`role`, `ttl_s`, `max_uses`):
        /// the whole answer (`ticket`, `invite_id`, ...).
        ///
        /// # Errors
        /// A status other than 201.
        pub async fn mint(
            &self,
            session: &str,
            body: serde_json::Value,
        ) -> Result<serde_json::Value, String> {
            self.call(
                "POST",
                &format!("/api/v1/sessions/{session}/invites"),
                &body.to_string(),
                201,
            )
            .await
        }

        /// `GET /api/v1/sessions/{id}/invites`.
        ///
        /// # Errors
        /// A status other than 200.
        pub async fn invites(&self, session: &str) -> Result<serde_json::Value, String> {
            self.call(
                "GET",
                &format!("/api/v1/sessions/{session}/invites"),
                "",
                200,
            )
            .await
        }

        /// `DELETE /api/v1/sessions/{id}/invites/{invite}`: the status.
        ///
        /// # Errors
        /// The I/O error as text.
        pub async fn revoke(&self, session: &str, invite: &str) -> Result<u16, String> {
            let bearer = format!("Bearer {}", self.token);
            let r = request(
                self.addr,
                "DELETE",
                &format!("/api/v1/sessions/{session}/invites/{invite}"),
                &[("Authorization", bearer.as_str())],
                "",
            )
            .await?;
            Ok(r.status)
        }
    }
}

/// The real `meshwork-server` binary as a child process, for tests that start, signal and kill
/// it (the binary's path comes from the caller: `env!("CARGO_BIN_EXE_meshwork-server")`).
#[allow(
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "test support: a server that does not start fails the test; deadlines are seconds"
)]
pub mod server_process {
    use std::io::{BufRead as _, BufReader};
    use std::net::SocketAddr;
    use std::path::Path;
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::time::{Duration, Instant};

    use meshwork_protocol::wire::JoinTicket;

    /// `serve` with every listener on a loopback port the OS picks (tests never use fixed ports).
    pub const LOOPBACK_SERVE: [&str; 7] = [
        "serve",
        "--http-addr",
        "127.0.0.1:0",
        "--quic-addr",
        "127.0.0.1:0",
        "--rtc-addr",
        "127.0.0.1:0",
    ];

    /// A running server process; killed and reaped on drop.
    #[derive(Debug)]
    pub struct ServerProcess {
        /// The process.
        pub child: Child,
        /// HTTP address it printed.
        pub http: SocketAddr,
        /// QUIC address it printed (`host:port`).
        pub quic: String,
        /// WebRTC UDP address it printed.
        pub rtc: SocketAddr,
        /// Everything it printed up to the `listening:` line.
        pub banner: String,
    }

    impl ServerProcess {
        /// `serve` on loopback `:0` ports with `data` and `extra` flags; waits (≤ 60 s) for the
        /// `listening:` line.
        ///
        /// # Panics
        /// If the server does not start: the calling test fails with the reason.
        #[must_use]
        pub fn start(bin: &str, data: &Path, extra: &[&str]) -> Self {
            Self::start_with_env(bin, data, extra, &[])
        }

        /// As [`ServerProcess::start`], with extra environment variables.
        ///
        /// # Panics
        /// If the server does not start.
        #[must_use]
        pub fn start_with_env(
            bin: &str,
            data: &Path,
            extra: &[&str],
            env: &[(&str, &str)],
        ) -> Self {
            Self::spawn(bin, data, &LOOPBACK_SERVE, extra, env)
                .unwrap_or_else(|banner| panic!("the server exited before listening:\n{banner}"))
        }

        /// A new server on this one's addresses (after it was killed: a restart as an operator
        /// or a supervisor does it, same ports, so clients holding the old addresses find it).
        /// Retries for up to 10 s while the old sockets are being released.
        ///
        /// # Panics
        /// If no server starts on those addresses within 10 s.
        #[must_use]
        pub fn restart_at_same_addresses(&self, bin: &str, data: &Path, extra: &[&str]) -> Self {
            let (http, quic, rtc) = (
                self.http.to_string(),
                self.quic.clone(),
                self.rtc.to_string(),
            );
            let serve = [
                "serve",
                "--http-addr",
                &http,
                "--quic-addr",
                &quic,
                "--rtc-addr",
                &rtc,
            ];
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match Self::spawn(bin, data, &serve, extra, &[]) {
                    Ok(server) => return server,
                    Err(banner) => {
                        assert!(
                            Instant::now() < deadline,
                            "no restart on {http}/{quic}/{rtc} within 10 s:\n{banner}"
                        );
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }

        /// Starts `bin` with `serve` (the subcommand and its listener flags), `extra` and
        /// `data`; waits (≤ 60 s) for the `listening:` line. `Err` with what it printed when it
        /// exits first.
        fn spawn(
            bin: &str,
            data: &Path,
            serve: &[&str],
            extra: &[&str],
            env: &[(&str, &str)],
        ) -> Result<Self, String> {
            let mut child = Command::new(bin)
                .args(serve)
                .args(extra)
                .arg("--data-dir")
                .arg(data)
                .env("MESHWORK_LOG", "warn")
                .envs(env.iter().copied())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("the server binary starts");
            let stdout = child.stdout.take().expect("stdout is piped");
            let mut lines = BufReader::new(stdout).lines();
            let mut banner = String::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                assert!(
                    Instant::now() < deadline,
                    "the server did not start within 60 s"
                );
                let Some(Ok(line)) = lines.next() else {
                    let _ = child.kill();
                    let status = child.wait();
                    return Err(format!("({status:?})\n{banner}"));
                };
                banner.push_str(&line);
                banner.push('\n');
                if let Some(rest) = line.strip_prefix("listening: ") {
                    let field = |name: &str| {
                        rest.split_whitespace()
                            .find_map(|kv| kv.strip_prefix(name))
                            .map(str::to_owned)
                    };
                    let http = field("http=")
                        .and_then(|v| v.parse().ok())
                        .expect("http= address");
                    let quic = field("quic=").expect("quic= address");
                    let rtc = field("rtc=")
                        .and_then(|v| v.parse().ok())
                        .expect("rtc= address");
                    // Keep reading so the server never blocks on a full pipe.
                    std::thread::spawn(move || for _ in lines.by_ref() {});
                    return Ok(Self {
                        child,
                        http,
                        quic,
                        rtc,
                        banner,
                    });
                }
            }
        }

        /// The admin token from a first start's banner.
        #[must_use]
        pub fn admin_token(&self) -> Option<String> {
            self.banner
                .lines()
                .find_map(|l| {
                    l.trim()
                        .strip_prefix("admin token:")
                        .map(|t| t.trim().to_owned())
                })
                .filter(|t| t.starts_with("mwa_"))
        }

        /// A ticket minted offline with the `invite` command from the same data dir.
        ///
        /// # Panics
        /// If `invite` fails.
        #[must_use]
        pub fn ticket(&self, bin: &str, data: &Path, role: &str) -> JoinTicket {
            let out = Command::new(bin)
                .args([
                    "invite",
                    "--role",
                    role,
                    "--ttl",
                    "1h",
                    "--quic-addr",
                    &self.quic,
                    "--data-dir",
                ])
                .arg(data)
                .output()
                .expect("invite runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            JoinTicket::from_text(&String::from_utf8_lossy(&out.stdout)).expect("a ticket")
        }

        /// The process's resident memory, in KiB (`VmRSS` in `/proc/<pid>/status`).
        ///
        /// # Panics
        /// If the process is gone.
        #[must_use]
        pub fn rss_kib(&self) -> u64 {
            let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
                .expect("the server is running");
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .expect("a VmRSS line")
        }

        /// Sends SIGTERM.
        ///
        /// # Panics
        /// If `kill` cannot be run.
        pub fn signal_term(&self) {
            let pid = self.child.id().to_string();
            let sent = Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill runs");
            assert!(sent.success());
        }

        /// SIGTERM, then the exit status (waiting at most `within`).
        ///
        /// # Panics
        /// If it does not exit in time.
        pub fn terminate(&mut self, within: Duration) -> ExitStatus {
            self.signal_term();
            self.wait_exit(within)
        }

        /// Polls for the exit status until `within` has passed.
        ///
        /// # Panics
        /// If it does not exit in time.
        pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
            let deadline = Instant::now() + within;
            loop {
                if let Some(status) = self.child.try_wait().expect("wait works") {
                    return status;
                }
                assert!(
                    Instant::now() < deadline,
                    "the server did not exit within {within:?} of SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    impl Drop for ServerProcess {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
