//! Session drivers: one tokio task owns each [`Session`] (`&mut`, no locks) and is the only
//! place its inputs are fed and its outputs carried out. Connection tasks talk to it over a
//! bounded inbox; it talks to each connection over that connection's bounded outbox.
//!
//! Tick of a driver (tags in the code):
//! 1. wait for an inbox message or the session's timeout;
//! 2. feed it, plus whatever else is already queued (up to [`DRAIN_BATCH`]), to the session;
//! 3. carry out every output: sends go to outboxes with `try_send` (a full outbox is reported
//!    back as `Backpressure`, so one slow client never stalls the others), persistence batches
//!    go to the store, events go to metrics;
//! 4. feed back store acknowledgements and backpressure, and repeat 3 until nothing is left.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshwork_protocol::SessionId;
use meshwork_protocol::wire::CloseReason;
use meshwork_session::{BatchId, ClientId, Event, Input, Lane, Output, Session};
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::{Metrics, Transport};
use crate::store::writer::{StoreAck, StoreCmd, StoreHandle};
use crate::telemetry::TARGET;

/// Messages fed to the session per wake-up at most, so timers are never starved.
pub const DRAIN_BATCH: usize = 256;

/// Unix time in milliseconds: the session's notion of now.
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a connection's writer receives.
#[derive(Debug)]
pub enum Outgoing {
    /// A frame to write on the reliable stream.
    Frame(Arc<[u8]>),
    /// A frame to send as one datagram (unreliable lane).
    Datagram(Arc<[u8]>),
    /// Flush and close.
    Close(CloseReason),
}

/// A snapshot of a session for the HTTP API.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SessionInfo {
    /// Hex id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Joined clients.
    pub clients: usize,
    /// Entries in the log.
    pub log_entries: usize,
    /// Hex SHA-256 of the log's canonical state (equal on every replica, after a restart and to
    /// what `verify-log` prints); `None` once the log holds only its window
    /// (`--log-window`): the hash covers every entry or none.
    pub state_hash: Option<String>,
    /// Hex SHA-256 of the scene (what client replicas compare against).
    pub scene_hash: String,
    /// Entries applied to the scene.
    pub scene_position: u64,
}

/// Messages to a driver.
#[derive(Debug)]
pub enum DriverMsg {
    /// A new connection and its outbox.
    Connect {
        /// The connection.
        client: ClientId,
        /// Its transport, for metrics.
        transport: Transport,
        /// Where its frames go.
        outbox: mpsc::Sender<Outgoing>,
        /// Set when the session closes the connection, before its close frame is queued: the
        /// reader stops passing on (and waiting for) what the client still sends. None where
        /// the transport bounds a peer's input where it is queued (WebRTC).
        closing: Option<watch::Sender<bool>>,
    },
    /// An input from a connection.
    Input {
        /// Received when (for latency metrics).
        received: Instant,
        /// The input.
        input: Input,
    },
    /// Asks for a [`SessionInfo`].
    Info(oneshot::Sender<SessionInfo>),
    /// Asks for the members ([`meshwork_session::Session::members`]).
    Members(oneshot::Sender<Vec<meshwork_session::MemberInfo>>),
    /// Asks for the invites ([`meshwork_session::Session::invites`]).
    Invites(oneshot::Sender<Vec<meshwork_session::InviteRecord>>),
    /// A role change or removal with the admin token, signed by the server
    /// ([`meshwork_session::Session::admin_command`]): the entry's id, or why it was refused.
    Admin(
        meshwork_protocol::Command,
        oneshot::Sender<Result<meshwork_protocol::CommandId, String>>,
    ),
    /// Asks for a page of the undo history.
    History(
        meshwork_session::HistoryQuery,
        oneshot::Sender<meshwork_session::HistoryPage>,
    ),
    /// An uploaded asset is stored: imports may name it now.
    Asset(
        meshwork_protocol::command::AssetId,
        Arc<meshwork_protocol::asset::ImportAsset>,
    ),
    /// Close every client and stop.
    Shutdown,
}

/// The handle connection tasks and the API hold.
#[derive(Clone, Debug)]
pub struct SessionHandle {
    /// The session.
    pub id: SessionId,
    /// Its display name.
    pub name: String,
    tx: mpsc::Sender<DriverMsg>,
    metrics: Metrics,
}

impl SessionHandle {
    /// A handle on an inbox of `capacity` that no driver reads: tests read it.
    #[cfg(test)]
    pub(crate) fn detached(capacity: usize) -> (Self, mpsc::Receiver<DriverMsg>) {
        let (tx, rx) = mpsc::channel(capacity);
        let handle = Self {
            id: SessionId([0; 16]),
            name: "test".into(),
            tx,
            metrics: Metrics::new(),
        };
        (handle, rx)
    }

    /// Sends a message to the driver, waiting while its inbox is full.
    ///
    /// Returns false when the driver has stopped.
    pub async fn send(&self, msg: DriverMsg) -> bool {
        self.metrics.command_queue_depth.inc();
        let ok = self.tx.send(msg).await.is_ok();
        if !ok {
            self.metrics.command_queue_depth.dec();
        }
        ok
    }

    /// Sends without waiting; false when the inbox is full or the driver stopped.
    pub fn try_send(&self, msg: DriverMsg) -> bool {
        self.try_send_back(msg).is_ok()
    }

    /// Sends without waiting; gives the message back when the inbox is full or the driver
    /// stopped (a caller that must not lose it keeps it for later).
    ///
    /// # Errors
    /// The message, with why it was not sent.
    pub fn try_send_back(
        &self,
        msg: DriverMsg,
    ) -> Result<(), mpsc::error::TrySendError<DriverMsg>> {
        self.tx.try_send(msg)?;
        self.metrics.command_queue_depth.inc();
        Ok(())
    }

    /// Waits for room in the inbox and holds it: the returned permit sends one message without
    /// waiting. `None` when the driver has stopped. (For a task that serves many connections
    /// and must not wait on any one session.)
    pub async fn reserve(self) -> Option<SessionPermit> {
        let permit = self.tx.reserve_owned().await.ok()?;
        Some(SessionPermit {
            permit,
            metrics: self.metrics,
        })
    }
}

/// Room for one message in a session driver's inbox ([`SessionHandle::reserve`]).
#[derive(Debug)]
pub struct SessionPermit {
    permit: mpsc::OwnedPermit<DriverMsg>,
    metrics: Metrics,
}

impl SessionPermit {
    /// Sends `msg` into the reserved room.
    pub fn send(self, msg: DriverMsg) {
        self.metrics.command_queue_depth.inc();
        self.permit.send(msg);
    }
}

impl SessionHandle {
    /// A page of the session's history; `None` when the driver has stopped.
    pub async fn history(
        &self,
        query: meshwork_session::HistoryQuery,
    ) -> Option<meshwork_session::HistoryPage> {
        let (tx, rx) = oneshot::channel();
        if !self.send(DriverMsg::History(query, tx)).await {
            return None;
        }
        rx.await.ok()
    }

    /// Makes a stored asset available to the session's imports; `false` when the driver is gone.
    pub async fn provide_asset(
        &self,
        id: meshwork_protocol::command::AssetId,
        asset: Arc<meshwork_protocol::asset::ImportAsset>,
    ) -> bool {
        self.send(DriverMsg::Asset(id, asset)).await
    }

    /// An admin's change to an invite (its limit, a revocation), applied in order with the
    /// session's other input. False when the driver has stopped.
    pub async fn invite_input(&self, input: Input) -> bool {
        self.send(DriverMsg::Input {
            received: Instant::now(),
            input,
        })
        .await
    }

    /// The invites the session knows; `None` when the driver has stopped.
    pub async fn invites(&self) -> Option<Vec<meshwork_session::InviteRecord>> {
        let (tx, rx) = oneshot::channel();
        if !self.send(DriverMsg::Invites(tx)).await {
            return None;
        }
        rx.await.ok()
    }

    /// The session's members; `None` when the driver has stopped.
    pub async fn members(&self) -> Option<Vec<meshwork_session::MemberInfo>> {
        let (tx, rx) = oneshot::channel();
        if !self.send(DriverMsg::Members(tx)).await {
            return None;
        }
        rx.await.ok()
    }

    /// A role change or removal with the admin token (see [`DriverMsg::Admin`]); `None` when
    /// the driver has stopped.
    pub async fn admin_command(
        &self,
        command: meshwork_protocol::Command,
    ) -> Option<Result<meshwork_protocol::CommandId, String>> {
        let (tx, rx) = oneshot::channel();
        if !self.send(DriverMsg::Admin(command, tx)).await {
            return None;
        }
        rx.await.ok()
    }

    /// A [`SessionInfo`]; `None` when the driver has stopped.
    pub async fn info(&self) -> Option<SessionInfo> {
        let (tx, rx) = oneshot::channel();
        if !self.send(DriverMsg::Info(tx)).await {
            return None;
        }
        rx.await.ok()
    }
}

/// Starts the driver task of `session`.
pub fn spawn(
    session: Session,
    name: String,
    metrics: Metrics,
    inbox: usize,
    store: StoreHandle,
    snapshot_every: u64,
) -> (SessionHandle, tokio::task::JoinHandle<()>) {
    let (acks_tx, acks_rx) = mpsc::channel(4096);
    // At most one store read per connection is outstanding (the session waits for each answer),
    // so this channel is bounded by the session's connections.
    let (reads_tx, reads_rx) = mpsc::unbounded_channel();
    let last_snapshot = session.durable_entries();
    let (tx, rx) = mpsc::channel(inbox);
    let handle = SessionHandle {
        id: session.id(),
        name: name.clone(),
        tx,
        metrics: metrics.clone(),
    };
    let driver = Driver {
        session,
        name,
        metrics,
        outboxes: HashMap::new(),
        batch_received: HashMap::new(),
        feedback: VecDeque::new(),
        pass_received: None,
        batch_spans: VecDeque::new(),
        store,
        backlog: VecDeque::new(),
        acks_tx,
        acks_rx,
        reads_tx,
        reads_rx,
        snapshot_every,
        last_snapshot,
        store_failed: false,
    };
    let task = tokio::spawn(driver.run(rx));
    (handle, task)
}

/// A connection's outbox, its transport (for metrics) and its closing mark.
type Outbox = (
    mpsc::Sender<Outgoing>,
    Transport,
    Option<watch::Sender<bool>>,
);

struct Driver {
    session: Session,
    name: String,
    metrics: Metrics,
    outboxes: HashMap<ClientId, Outbox>,
    /// When the commands of each in-flight persistence batch were received.
    batch_received: HashMap<BatchId, Instant>,
    /// Inputs produced while carrying out outputs (backpressure), fed next.
    feedback: VecDeque<Input>,
    /// Earliest receive time of the inputs fed in the current pass.
    pass_received: Option<Instant>,
    /// Root spans of the batches about to be persisted, in batch order.
    batch_spans: VecDeque<tracing::Span>,
    /// The store writer.
    store: StoreHandle,
    /// Commands for the writer that did not fit its queue yet (bounded by [`STORE_BACKLOG`]:
    /// past it the driver stops reading its inbox, which pushes back on the connections).
    backlog: VecDeque<StoreCmd>,
    acks_tx: mpsc::Sender<StoreAck>,
    acks_rx: mpsc::Receiver<StoreAck>,
    /// Answers of store reads for the session (`Input::Stored`).
    reads_tx: mpsc::UnboundedSender<Input>,
    reads_rx: mpsc::UnboundedReceiver<Input>,
    snapshot_every: u64,
    last_snapshot: u64,
    store_failed: bool,
}

/// Store commands a driver holds back at most before it stops reading its inbox.
const STORE_BACKLOG: usize = 256;

impl Driver {
    async fn run(mut self, mut rx: mpsc::Receiver<DriverMsg>) {
        self.metrics.sessions_active.inc();
        let mut shutting_down = false;
        loop {
            // 1. Wait for a message, a store acknowledgement, room in the store queue, or the
            //    session's deadline.
            let deadline = self.session.poll_timeout().map(|at_ms| {
                let wait = at_ms.saturating_sub(now_ms());
                let now = tokio::time::Instant::now();
                now.checked_add(Duration::from_millis(wait)).unwrap_or(now)
            });
            let accepting = self.backlog.len() < STORE_BACKLOG && !shutting_down;
            let store_tx = self.store.tx.clone();
            let first = tokio::select! {
                msg = rx.recv(), if accepting => msg,
                Some(read) = self.reads_rx.recv() => {
                    self.session.handle_input(now_ms(), read);
                    self.carry_out();
                    continue;
                }
                Some(ack) = self.acks_rx.recv() => {
                    self.on_ack(ack);
                    self.carry_out();
                    if shutting_down && self.drained() {
                        break;
                    }
                    continue;
                }
                permit = store_tx.reserve(), if !self.backlog.is_empty() => {
                    if let (Ok(permit), Some(cmd)) = (permit, self.backlog.pop_front()) {
                        permit.send(cmd);
                    }
                    continue;
                }
                () = sleep_until(deadline) => {
                    self.session.handle_input(now_ms(), Input::Tick);
                    self.carry_out();
                    continue;
                }
            };
            let Some(first) = first else { break };
            // 2. Feed it and whatever else is already waiting, then 3–4. carry out the outputs
            //    of all of them together (fan-out coalesces across the pass).
            let mut msg = Some(first);
            let mut fed: usize = 0;
            self.pass_received = None;
            while let Some(m) = msg.take() {
                self.metrics.command_queue_depth.dec();
                if matches!(m, DriverMsg::Shutdown) {
                    shutting_down = true;
                }
                self.feed(m);
                fed = fed.saturating_add(1);
                if fed < DRAIN_BATCH && !shutting_down {
                    msg = rx.try_recv().ok();
                }
            }
            self.carry_out();
            if shutting_down && self.drained() {
                break;
            }
        }
        // Final snapshot once everything accepted is durable.
        if !self.store_failed
            && let Some(snapshot) = self.session.snapshot()
        {
            let cmd = StoreCmd::Snapshot {
                session: self.session.id(),
                snapshot,
            };
            let _ = self.store.tx.send(cmd).await;
        }
        // Dropping the outboxes lets every writer flush and close.
        self.outboxes.clear();
        self.metrics.sessions_active.dec();
        tracing::info!(session = %self.name, "session driver stopped");
    }

    /// Nothing left for the store to acknowledge or to be sent to it.
    fn drained(&self) -> bool {
        self.store_failed || (self.backlog.is_empty() && self.session.batches_in_flight() == 0)
    }

    fn on_ack(&mut self, ack: StoreAck) {
        let _fanout =
            tracing::trace_span!(target: TARGET, parent: &ack.span, "meshwork.fanout").entered();
        match ack.result {
            Ok(()) => {
                self.session
                    .handle_input(now_ms(), Input::PersistAck { batch: ack.batch });
                // Fan-out is flushed when the outputs are drained: do it inside the span.
                self.carry_out();
                let durable = self.session.durable_entries();
                if durable.saturating_sub(self.last_snapshot) >= self.snapshot_every
                    && let Some(snapshot) = self.session.snapshot()
                {
                    self.last_snapshot = snapshot.position;
                    self.backlog.push_back(StoreCmd::Snapshot {
                        session: self.session.id(),
                        snapshot,
                    });
                }
            }
            Err(e) => {
                // Nothing more can be made durable: stop acknowledging and let clients know.
                tracing::error!(session = %self.name, "store failed, closing the session: {e}");
                self.store_failed = true;
                self.backlog.clear();
                self.session.handle_input(now_ms(), Input::Shutdown);
            }
        }
    }

    fn feed(&mut self, msg: DriverMsg) {
        match msg {
            DriverMsg::Connect {
                client,
                transport,
                outbox,
                closing,
            } => {
                self.outboxes.insert(client, (outbox, transport, closing));
                self.session
                    .handle_input(now_ms(), Input::Connected { client });
            }
            DriverMsg::Input { received, input } => {
                // A `Submit`: the verify-and-order step.
                let is_submit = match &input {
                    Input::Payload { bytes, .. } => {
                        meshwork_protocol::wire::ClientMsg::payload_is_submit(bytes)
                    }
                    Input::VerifiedSubmit { .. } => true,
                    _ => false,
                };
                if let Input::Disconnected { client } = &input {
                    self.outboxes.remove(client);
                }
                self.pass_received = Some(self.pass_received.map_or(received, |r| r.min(received)));
                // The command path's root span: receive → verify/order → persist → fan-out.
                let root = if is_submit {
                    let waited_us =
                        u64::try_from(received.elapsed().as_micros()).unwrap_or(u64::MAX);
                    tracing::trace_span!(target: TARGET, "meshwork.command", session = %self.name, inbox_wait_us = waited_us)
                } else {
                    tracing::Span::none()
                };
                let before = self.session.batches_in_flight();
                let started = Instant::now();
                {
                    // Only a command has a path to trace: any other input (a ping, presence,
                    // the codecs) would make an orphan span per message.
                    let _verify = is_submit.then(|| {
                        tracing::trace_span!(target: TARGET, parent: &root, "meshwork.verify_order")
                            .entered()
                    });
                    self.session.handle_input(now_ms(), input);
                }
                if is_submit {
                    self.metrics
                        .signature_verify_seconds
                        .observe(started.elapsed().as_secs_f64());
                }
                // Persist outputs come out in the order their batches were made.
                for _ in before..self.session.batches_in_flight() {
                    self.batch_spans.push_back(root.clone());
                }
            }
            DriverMsg::Info(reply) => {
                let info = SessionInfo {
                    id: self.session.id().to_string(),
                    name: self.name.clone(),
                    clients: self.session.joined_count(),
                    log_entries: self.session.log().len(),
                    state_hash: self.session.log().state_hash().map(hex::encode),
                    scene_hash: hex::encode(self.session.scene().state_hash()),
                    scene_position: self.session.scene().position,
                };
                let _ = reply.send(info);
            }
            DriverMsg::History(query, reply) => {
                let _ = reply.send(self.session.history_page(&query));
            }
            DriverMsg::Members(reply) => {
                let _ = reply.send(self.session.members());
            }
            DriverMsg::Invites(reply) => {
                let _ = reply.send(self.session.invites());
            }
            DriverMsg::Admin(command, reply) => {
                let before = self.session.batches_in_flight();
                let _ = reply.send(self.session.admin_command(now_ms(), command));
                for _ in before..self.session.batches_in_flight() {
                    self.batch_spans.push_back(tracing::Span::none());
                }
            }
            DriverMsg::Asset(id, asset) => self.session.provide_asset(id, asset),
            DriverMsg::Shutdown => self.session.handle_input(now_ms(), Input::Shutdown),
        }
    }

    /// 3–4. Carries out outputs until the session is quiet.
    fn carry_out(&mut self) {
        loop {
            while let Some(output) = self.session.poll_output() {
                self.output(output);
            }
            if self.feedback.is_empty() {
                break;
            }
            while let Some(input) = self.feedback.pop_front() {
                self.session.handle_input(now_ms(), input);
            }
        }
    }

    fn output(&mut self, output: Output) {
        match output {
            Output::Send {
                client,
                lane,
                frame,
            } => {
                let Some((outbox, transport, _)) = self.outboxes.get(&client) else {
                    return;
                };
                let (bytes, transport) = (frame.len(), *transport);
                let out = match lane {
                    Lane::Reliable => Outgoing::Frame(frame),
                    // Latest-wins: never let it take the room the log needs. Past half full,
                    // the update is dropped (the next one supersedes it), never backpressure.
                    Lane::Unreliable => {
                        if outbox.capacity().saturating_mul(2) < outbox.max_capacity() {
                            self.metrics.presence_not_sent_total.inc();
                            return;
                        }
                        Outgoing::Datagram(frame)
                    }
                };
                match outbox.try_send(out) {
                    Ok(()) => self.metrics.sent(transport, bytes),
                    Err(mpsc::error::TrySendError::Full(_)) if lane == Lane::Unreliable => {
                        self.metrics.presence_not_sent_total.inc();
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.feedback.push_back(Input::Backpressure { client });
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        self.outboxes.remove(&client);
                        self.feedback.push_back(Input::Disconnected { client });
                    }
                }
            }
            Output::Close { client, reason } => {
                if let Some((outbox, _, closing)) = self.outboxes.remove(&client) {
                    if let Some(closing) = closing {
                        closing.send_replace(true);
                    }
                    // If the outbox is full the close frame may not fit; dropping the sender
                    // still closes the connection once queued frames are written.
                    let _ = outbox.try_send(Outgoing::Close(reason));
                }
            }
            Output::Persist {
                batch,
                authors,
                entries,
                invites,
            } => {
                if let Some(at) = self.pass_received {
                    self.batch_received.insert(batch, at);
                }
                let span = self
                    .batch_spans
                    .pop_front()
                    .unwrap_or_else(tracing::Span::none);
                let cmd = StoreCmd::Persist {
                    session: self.session.id(),
                    batch,
                    authors,
                    entries,
                    invites,
                    ack: self.acks_tx.clone(),
                    span,
                };
                self.queue_for_store(cmd);
            }
            Output::ReadStored {
                client,
                request,
                ranges,
            } => {
                let (reply, answer) = oneshot::channel();
                self.queue_for_store(StoreCmd::ReadEntries {
                    session: self.session.id(),
                    ranges,
                    reply,
                });
                let reads = self.reads_tx.clone();
                let name = self.name.clone();
                tokio::spawn(async move {
                    match answer.await {
                        Ok(Ok(entries)) => {
                            let _ = reads.send(Input::Stored {
                                client,
                                request,
                                entries,
                            });
                        }
                        Ok(Err(e)) => {
                            tracing::error!(session = %name, "reading history from the store: {e}");
                        }
                        Err(_) => {}
                    }
                });
            }
            Output::Event(event) => self.event(&event),
        }
    }

    /// Queues a command for the store writer: straight to it when it has room (so a lone
    /// command is not delayed), else behind the backlog, in order.
    fn queue_for_store(&mut self, cmd: StoreCmd) {
        if self.backlog.is_empty() {
            match self.store.tx.try_send(cmd) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(cmd)) => self.backlog.push_back(cmd),
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.store_failed = true;
                    self.session.handle_input(now_ms(), Input::Shutdown);
                }
            }
        } else {
            self.backlog.push_back(cmd);
        }
    }

    fn event(&mut self, event: &Event) {
        match event {
            Event::Accepted { kind } => {
                self.metrics
                    .commands_appended_total
                    .with_label_values(&[kind.as_str()])
                    .inc();
            }
            Event::Refused { code } => self.metrics.rejected(code.as_str()),
            Event::JoinRefused { reason, .. } => self.metrics.rejected(reason.as_str()),
            Event::ProtocolViolation { reason, .. } => self.metrics.rejected(reason),
            Event::Conflict { strategy } => {
                let label = match strategy {
                    meshwork_protocol::Strategy::Merge => "merge",
                    meshwork_protocol::Strategy::LastWriteWins => "last_write_wins",
                    meshwork_protocol::Strategy::Reject => "reject",
                };
                self.metrics
                    .conflicts_total
                    .with_label_values(&[label])
                    .inc();
            }
            Event::Joined { .. } => self.metrics.joins_total.inc(),
            Event::PresenceDropped => self.metrics.rejected("presence_dropped"),
            Event::OutOfInterest => self.metrics.presence_out_of_interest_total.inc(),
            Event::HeldUpdate {
                sent,
                not_sent,
                states,
            } => {
                let count = |n: &usize| u64::try_from(*n).unwrap_or(u64::MAX);
                let entries = &self.metrics.held_entries_total;
                entries.with_label_values(&["sent"]).inc_by(count(sent));
                entries
                    .with_label_values(&["not_sent"])
                    .inc_by(count(not_sent));
                self.metrics.held_states_total.inc_by(count(states));
            }
            Event::Packed { client, raw, sent } => {
                if let Some((_, transport, _)) = self.outboxes.get(client) {
                    self.metrics.compressed("presence", *transport, *raw, *sent);
                }
            }
            Event::SnapshotSent {
                client,
                scene,
                sent,
            } => {
                if let Some((_, transport, _)) = self.outboxes.get(client) {
                    self.metrics
                        .compressed("snapshot", *transport, *scene, *sent);
                }
            }
            Event::Throttled { reason, .. } => self.metrics.rejected(reason),
            Event::DeltaSent => self.metrics.deltas_total.inc(),
            Event::Resumed { .. } => self.metrics.resumes_total.inc(),
            Event::TooSlow { .. } => self.metrics.rejected("too_slow"),
            Event::HandshakeTimeout { .. } => self.metrics.rejected("handshake_timeout"),
            Event::Membership { change } => self
                .metrics
                .membership_changes_total
                .with_label_values(&[change])
                .inc(),
            Event::Undo { redo, outcome } => {
                let op = if *redo { "redo" } else { "undo" };
                self.metrics
                    .undo_total
                    .with_label_values(&[op, outcome])
                    .inc();
            }
            Event::FannedOut { batches, .. } => {
                for batch in batches {
                    if let Some(at) = self.batch_received.remove(batch) {
                        let secs = at.elapsed().as_secs_f64();
                        self.metrics.command_apply_seconds.observe(secs);
                    }
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
