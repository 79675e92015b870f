//! WebRTC data channels for browsers, on the sans-IO core of webrtc-rs (`rtc` 0.21).
//!
//! **One UDP socket for every peer.** The async `webrtc` crate binds sockets per peer
//! connection; a server behind one forwarded port needs them multiplexed, so this module owns
//! the socket and drives each [`RTCPeerConnection`] itself (`handle_read` / `poll_write` /
//! `handle_timeout`, all in one task). Datagrams are routed by source address; the first packet
//! from a new address must be a STUN binding request whose `USERNAME` names a peer's local ICE
//! username fragment (which this module chooses, so it knows it before any packet arrives).
//!
//! Signaling is one HTTP round trip (non-trickle): `POST /api/v1/sessions/{id}/rtc` with the
//! browser's offer (its candidates gathered), answered with an SDP that carries this socket's
//! host candidates. The browser opens two channels:
//! - `log` — reliable, ordered: a byte stream of the same length-prefixed frames as the QUIC
//!   stream and the WebSocket (messages may split or join frames; the reader reassembles);
//! - `presence` — unordered, no retransmits: one frame per message, like a QUIC datagram.
//!
//! The `log` channel opening is the connection: the peer then reaches its session driver with
//! the same inbox and outbox types as QUIC and WebSocket clients, labelled `transport="webrtc"`.
//! No task per peer: the endpoint task reads every peer's outbox itself (one `SelectAll`), and
//! hands input to the session without waiting: what finds the session's inbox full is queued
//! per peer, in order, and sent when a [`SessionPermit`] comes (a peer that queues more than
//! [`INBOUND_QUEUE`] meanwhile is closed as a flood).
//! Send buffers are bounded per channel ([`LOG_SEND_BUFFER`], [`PRESENCE_SEND_BUFFER`]); a peer
//! that cannot keep up is reported to the session as backpressure and closed as too slow.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::stream::{BoxStream, FuturesUnordered, SelectAll};
use futures_util::{FutureExt as _, StreamExt as _};
use meshwork_session::{ClientId, Input};
use rtc::data_channel::RTCDataChannelId;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::{RTCDataChannelEvent, RTCPeerConnectionEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::sansio::Protocol as _;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::conn::{ConnectionGauge, FramePump, SubmitVerifier};
use crate::driver::{DriverMsg, Outgoing, SessionHandle, SessionPermit};
use crate::metrics::{Metrics, Transport};
use crate::router::AddrSlot;
use crate::router::Router;

/// Bytes a peer's `log` channel may hold unacknowledged before the server stops feeding it.
pub const LOG_SEND_BUFFER: usize = 1024 * 1024;
/// Bytes a peer's `presence` channel may hold; presence beyond it is dropped (latest wins).
pub const PRESENCE_SEND_BUFFER: usize = 64 * 1024;
/// Largest data channel message the server sends (frames are split across messages on `log`).
pub const MAX_MESSAGE: usize = 16 * 1024;
/// Frames queued for one peer's `log` channel beyond its send buffer before it counts as too
/// slow.
const PENDING_FRAMES: usize = 1024;
/// Inputs one peer may have waiting for room in its session driver's inbox; a peer that sends
/// more meanwhile floods its session and is closed.
const INBOUND_QUEUE: usize = 256;
/// How long a closing peer may take to flush its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Longest SDP accepted from a browser.
pub const MAX_SDP_BYTES: usize = 32 * 1024;
/// Largest UDP datagram read.
const RECV_BUFFER: usize = 2048;

/// Why an offer was not answered.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The SDP could not be parsed or applied.
    #[error("the SDP offer was refused: {0}")]
    BadSdp(String),
    /// Too many peers are connecting or connected.
    #[error("the server has {0} WebRTC peers, its limit; try again later or use the WebSocket")]
    TooManyPeers(usize),
    /// The server is stopping.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// Something on this side failed.
    #[error("the server could not set up the connection: {0}")]
    Internal(String),
}

impl SignalError {
    /// The metric label.
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::BadSdp(_) => "bad_sdp",
            Self::TooManyPeers(_) => "too_many_peers",
            Self::ShuttingDown => "shutting_down",
            Self::Internal(_) => "internal",
        }
    }
}

/// Settings of the WebRTC endpoint.
#[derive(Clone, Debug)]
pub struct RtcSettings {
    /// Addresses put in host candidates instead of the socket's own (a NAT'd deployment's public
    /// IP). Empty: the socket's IP, or every non-loopback interface when bound to a wildcard.
    pub public_ips: Vec<IpAddr>,
    /// Most peers at once (signaling refuses more).
    pub max_peers: usize,
    /// Frames queued per connection by the session driver.
    pub outbox_frames: usize,
    /// A peer whose `log` channel is not open this long after signaling is dropped.
    pub connect_timeout: Duration,
}

enum Command {
    Offer {
        sdp: String,
        session: SessionHandle,
        slot: AddrSlot,
        reply: oneshot::Sender<Result<String, SignalError>>,
    },
    Shutdown,
}

/// The handle HTTP signaling uses.
#[derive(Clone, Debug)]
pub struct RtcHandle {
    tx: mpsc::Sender<Command>,
    local_addr: SocketAddr,
}

impl RtcHandle {
    /// The UDP address every peer uses.
    #[must_use]
    pub const fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Answers a browser's offer for `session`; the peer holds `slot` (its place among its
    /// address's connections) for as long as it lives.
    ///
    /// # Errors
    /// [`SignalError`] with the reason.
    pub async fn answer(
        &self,
        sdp: String,
        session: SessionHandle,
        slot: AddrSlot,
    ) -> Result<String, SignalError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Offer {
                sdp,
                session,
                slot,
                reply,
            })
            .await
            .map_err(|_| SignalError::ShuttingDown)?;
        rx.await.map_err(|_| SignalError::ShuttingDown)?
    }

    /// Closes every peer and stops the endpoint task.
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown).await;
    }
}

/// Starts the endpoint task on a bound socket.
///
/// # Errors
/// [`crate::Error::Io`] when the socket cannot be registered with tokio.
pub fn spawn(
    socket: std::net::UdpSocket,
    settings: RtcSettings,
    router: Arc<Router>,
    metrics: Metrics,
) -> Result<(RtcHandle, tokio::task::JoinHandle<()>), crate::Error> {
    socket
        .set_nonblocking(true)
        .map_err(|e| crate::Error::Io(e.to_string()))?;
    let socket = UdpSocket::from_std(socket).map_err(|e| crate::Error::Io(e.to_string()))?;
    let local_addr = socket
        .local_addr()
        .map_err(|e| crate::Error::Io(e.to_string()))?;
    let candidate_ips = candidate_ips(local_addr.ip(), &settings.public_ips);
    let (tx, rx) = mpsc::channel(64);
    let endpoint = Endpoint {
        socket,
        local_addr,
        candidate_ips,
        settings,
        router,
        metrics,
        peers: HashMap::new(),
        by_ufrag: HashMap::new(),
        by_addr: HashMap::new(),
        next_peer: 0,
        outboxes: SelectAll::new(),
        permits: FuturesUnordered::new(),
    };
    let task = tokio::spawn(endpoint.run(rx));
    Ok((RtcHandle { tx, local_addr }, task))
}

/// The IPs host candidates carry.
fn candidate_ips(bound: IpAddr, public: &[IpAddr]) -> Vec<IpAddr> {
    if !public.is_empty() {
        return public.to_vec();
    }
    if !bound.is_unspecified() {
        return vec![bound];
    }
    let mut ips: Vec<IpAddr> = rtc::shared::ifaces::ifaces()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.addr.map(|a| a.ip()))
        .filter(|ip| ip.is_ipv4() == bound.is_ipv4() && !ip.is_loopback() && !ip.is_unspecified())
        .filter(|ip| match ip {
            IpAddr::V6(v6) => !v6.is_unicast_link_local(),
            IpAddr::V4(_) => true,
        })
        .collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        // Only loopback here (a test namespace): still reachable from this machine.
        ips.push(if bound.is_ipv4() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
        });
    }
    ips
}

type PeerId = u64;

struct Peer {
    pc: RTCPeerConnection,
    /// Its way into the session driver.
    inbound: Inbound,
    ufrag: String,
    addrs: Vec<SocketAddr>,
    created: Instant,
    /// Set once the `log` channel is open and the session knows the connection.
    client: Option<ClientId>,
    log: Option<RTCDataChannelId>,
    presence: Option<RTCDataChannelId>,
    pump: FramePump,
    /// Checks its `Submit`s' signatures here, off the session's driver.
    verifier: SubmitVerifier,
    /// The outbox of a connection just made, for the endpoint to listen to.
    new_outbox: Option<mpsc::Receiver<Outgoing>>,
    /// Counts the peer as a connected client while the session knows it.
    gauge: Option<ConnectionGauge>,
    /// Frames for `log` waiting for room in its send buffer.
    pending: VecDeque<Arc<[u8]>>,
    /// Flushing its last frames since then; dropped after [`CLOSE_GRACE`].
    closing: Option<Instant>,
    /// Bad input was handed to the session at this time; further input is ignored while the
    /// session sends its `Close` (then [`Outgoing::Close`] starts the closing).
    refused: Option<Instant>,
    next_timeout: Option<Instant>,
    dead: bool,
    /// Its place among the live connections of its address (freed when the peer is dropped).
    _slot: AddrSlot,
}

struct Endpoint {
    socket: UdpSocket,
    local_addr: SocketAddr,
    candidate_ips: Vec<IpAddr>,
    settings: RtcSettings,
    router: Arc<Router>,
    metrics: Metrics,
    peers: HashMap<PeerId, Peer>,
    by_ufrag: HashMap<String, PeerId>,
    by_addr: HashMap<SocketAddr, PeerId>,
    next_peer: PeerId,
    /// Every connected peer's outbox, read here directly (`None`: the session dropped it).
    outboxes: SelectAll<BoxStream<'static, (PeerId, Option<Outgoing>)>>,
    /// Room asked for in sessions' inboxes, for peers with queued input.
    permits:
        FuturesUnordered<futures_util::future::BoxFuture<'static, (PeerId, Option<SessionPermit>)>>,
}

/// A connection's outbox as a stream of `(peer, frame)`, ending with `(peer, None)` when the
/// session drops it.
fn outbox_stream(
    id: PeerId,
    rx: mpsc::Receiver<Outgoing>,
) -> BoxStream<'static, (PeerId, Option<Outgoing>)> {
    futures_util::stream::unfold(Some(rx), move |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(out) => Some(((id, Some(out)), Some(rx))),
            None => Some(((id, None), None)),
        }
    })
    .boxed()
}

impl Endpoint {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut shutting_down = false;
        loop {
            let now = Instant::now();
            self.service_all(now).await;
            if shutting_down && self.peers.is_empty() {
                return;
            }
            let tick = now.checked_add(Duration::from_secs(1)).unwrap_or(now);
            let next = self
                .peers
                .values()
                .filter_map(|p| p.next_timeout)
                .min()
                .map_or(tick, |t| t.min(tick));
            tokio::select! {
                cmd = commands.recv(), if !shutting_down => match cmd {
                    Some(Command::Offer { sdp, session, slot, reply }) => {
                        let result = self.offer(&sdp, session, slot);
                        if let Err(e) = &result {
                            self.metrics.rtc_signaling_errors_total.with_label_values(&[e.reason()]).inc();
                        }
                        let _ = reply.send(result);
                    }
                    Some(Command::Shutdown) | None => {
                        shutting_down = true;
                        for peer in self.peers.values_mut() {
                            peer.begin_close(Instant::now());
                        }
                    }
                },
                out = self.outboxes.next(), if !self.outboxes.is_empty() => match out {
                    Some((id, Some(out))) => self.outgoing(id, out),
                    // The session let the connection go (it is stopping): flush and close.
                    Some((id, None)) => {
                        if let Some(peer) = self.peers.get_mut(&id) {
                            let now = Instant::now();
                            peer.begin_close(now);
                            peer.next_timeout = Some(now);
                        }
                    }
                    None => {}
                },
                permit = self.permits.next(), if !self.permits.is_empty() => {
                    if let Some((id, permit)) = permit {
                        self.permitted(id, permit);
                    }
                }
                recv = self.socket.recv_from(&mut buf) => match recv {
                    Ok((n, from)) => {
                        let data = buf.get(..n).unwrap_or_default();
                        self.datagram(from, data);
                    }
                    Err(e) => tracing::debug!("WebRTC socket: {e}"),
                },
                () = tokio::time::sleep_until(next.into()) => {}
            }
        }
    }

    fn offer(
        &mut self,
        sdp: &str,
        session: SessionHandle,
        slot: AddrSlot,
    ) -> Result<String, SignalError> {
        if self.router.is_shutting_down() {
            return Err(SignalError::ShuttingDown);
        }
        if self.peers.len() >= self.settings.max_peers {
            return Err(SignalError::TooManyPeers(self.peers.len()));
        }
        let bad = |e: &dyn std::fmt::Display| SignalError::BadSdp(e.to_string());
        let offer = RTCSessionDescription::offer(sdp.to_owned()).map_err(|e| bad(&e))?;
        let no_entropy = || SignalError::Internal("the OS random number generator failed".into());
        let ufrag = random_token(16).ok_or_else(no_entropy)?;
        let password = random_token(32).ok_or_else(no_entropy)?;
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .with_ice_credentials(ufrag.clone(), password)
            .build();
        let now = Instant::now();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(settings)
            .build(now)
            .map_err(|e| SignalError::BadSdp(format!("peer connection: {e}")))?;
        pc.set_remote_description(now, offer).map_err(|e| bad(&e))?;
        for ip in &self.candidate_ips {
            let host = CandidateHostConfig {
                base_config: CandidateConfig {
                    network: "udp".to_owned(),
                    address: ip.to_string(),
                    port: self.local_addr.port(),
                    component: 1,
                    ..Default::default()
                },
                ..Default::default()
            }
            .new_candidate_host()
            .map_err(|e| SignalError::BadSdp(format!("local candidate: {e}")))?;
            let init = RTCIceCandidate::from(&host)
                .to_json()
                .map_err(|e| SignalError::BadSdp(format!("local candidate: {e}")))?;
            pc.add_local_candidate(init).map_err(|e| bad(&e))?;
        }
        // End of candidates: the answer is complete (non-trickle).
        pc.add_local_candidate(RTCIceCandidateInit::default())
            .map_err(|e| bad(&e))?;
        let answer = pc.create_answer(None).map_err(|e| bad(&e))?;
        pc.set_local_description(now, answer).map_err(|e| bad(&e))?;
        let answer = pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or_else(|| SignalError::BadSdp("no local description".into()))?;
        let id = self.next_peer;
        self.next_peer = self.next_peer.wrapping_add(1);
        self.by_ufrag.insert(ufrag.clone(), id);
        self.peers.insert(
            id,
            Peer {
                pc,
                inbound: Inbound::new(session),
                ufrag,
                addrs: Vec::new(),
                created: now,
                client: None,
                log: None,
                presence: None,
                pump: FramePump::new(Transport::WebRtc),
                verifier: SubmitVerifier::default(),
                new_outbox: None,
                gauge: None,
                pending: VecDeque::new(),
                closing: None,
                refused: None,
                next_timeout: Some(now),
                dead: false,
                _slot: slot,
            },
        );
        self.metrics.rtc_peers.set(gauge(self.peers.len()));
        Ok(answer)
    }

    /// Routes one datagram to its peer connection.
    fn datagram(&mut self, from: SocketAddr, data: &[u8]) {
        let id = match self.by_addr.get(&from) {
            Some(id) => *id,
            None => match stun_local_ufrag(data).and_then(|u| self.by_ufrag.get(&u).copied()) {
                Some(id) => {
                    self.by_addr.insert(from, id);
                    if let Some(peer) = self.peers.get_mut(&id) {
                        peer.addrs.push(from);
                    }
                    id
                }
                None => {
                    self.metrics
                        .rtc_datagrams_dropped_total
                        .with_label_values(&["unknown_peer"])
                        .inc();
                    return;
                }
            },
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let now = Instant::now();
        let read = peer.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(data),
        });
        if let Err(e) = read {
            tracing::debug!("WebRTC peer {id}: {e}");
            self.metrics
                .rtc_datagrams_dropped_total
                .with_label_values(&["refused"])
                .inc();
        }
        peer.next_timeout = Some(now);
    }

    fn outgoing(&mut self, id: PeerId, out: Outgoing) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let now = Instant::now();
        match out {
            Outgoing::Frame(frame) => {
                if peer.pending.len() >= PENDING_FRAMES {
                    // The session's own outbox stays bounded; this is the channel's queue
                    // behind it. Tell the session: it closes the client as too slow.
                    if let Some(client) = peer.client {
                        peer.queue_input(now, Input::Backpressure { client });
                    }
                    peer.begin_close(now);
                } else {
                    peer.pending.push_back(frame);
                }
            }
            Outgoing::Datagram(frame) => {
                if let Some(ch) = peer.presence
                    && let Some(mut dc) = peer.pc.data_channel(ch)
                    && dc.outstanding_bytes() < PRESENCE_SEND_BUFFER
                {
                    let _ = dc.send(now, BytesMut::from(&frame[..]));
                }
            }
            Outgoing::Close(_) => peer.begin_close(now),
        }
        peer.next_timeout = Some(now);
    }

    /// Drives every peer that has something due: timers, events, reads, queued frames, writes.
    async fn service_all(&mut self, now: Instant) {
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.next_timeout.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            let _ = peer.pc.handle_timeout(now);
            peer.service(now, &self.metrics, &self.router, &self.settings);
            if let Some(rx) = peer.new_outbox.take() {
                self.outboxes.push(outbox_stream(id, rx));
            }
            if let Some(session) = peer.inbound.permit_wanted() {
                self.permits
                    .push(async move { (id, session.reserve().await) }.boxed());
            }
            while let Some(w) = peer.pc.poll_write() {
                if let Err(e) = self.socket.send_to(&w.message, w.transport.peer_addr).await {
                    tracing::debug!("WebRTC send to {}: {e}", w.transport.peer_addr);
                }
            }
            // At least once a second, so connect and close deadlines are noticed.
            let tick = now.checked_add(Duration::from_secs(1)).unwrap_or(now);
            peer.next_timeout = Some(peer.pc.poll_timeout().map_or(tick, |t| t.min(tick)));
            if peer.dead {
                self.remove(id);
            }
        }
    }

    fn remove(&mut self, id: PeerId) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        let _ = peer.pc.close();
        self.by_ufrag.remove(&peer.ufrag);
        for addr in &peer.addrs {
            self.by_addr.remove(addr);
        }
        if let Some(client) = peer.client {
            peer.inbound.finish(DriverMsg::Input {
                received: Instant::now(),
                input: Input::Disconnected { client },
            });
        }
        // Its connection gauge goes with it.
        drop(peer.gauge.take());
        self.metrics.rtc_peers.set(gauge(self.peers.len()));
    }

    /// Room in a session's inbox for a peer's queued input (`None`: the session stopped).
    fn permitted(&mut self, id: PeerId, permit: Option<SessionPermit>) {
        // A peer removed meanwhile: its input went with it, and the room is given back.
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.inbound.permitted(permit).is_err() {
            peer.dead = true;
        }
        peer.next_timeout = Some(Instant::now());
    }
}

impl Peer {
    fn begin_close(&mut self, now: Instant) {
        if self.closing.is_none() {
            self.closing = Some(now);
        }
    }

    /// Events, reads, queued sends, and the decision to drop the peer.
    fn service(
        &mut self,
        now: Instant,
        metrics: &Metrics,
        router: &Router,
        settings: &RtcSettings,
    ) {
        while let Some(event) = self.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed,
                ) => self.dead = true,
                RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnOpen(ch)) => {
                    let label = self
                        .pc
                        .data_channel(ch)
                        .map(|dc| dc.label().to_owned())
                        .unwrap_or_default();
                    match label.as_str() {
                        "log" if self.log.is_none() => {
                            self.log = Some(ch);
                            self.connect(now, metrics, router, settings);
                        }
                        "presence" if self.presence.is_none() => self.presence = Some(ch),
                        _ => {
                            // Not ours: close it rather than let it buffer.
                            if let Some(mut dc) = self.pc.data_channel(ch) {
                                let _ = dc.close();
                            }
                        }
                    }
                }
                RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnClose(ch))
                    if Some(ch) == self.log =>
                {
                    self.dead = true;
                }
                _ => {}
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = self.pc.poll_read() {
            if let RTCMessage::DataChannelMessage(ch, msg) = message {
                if Some(ch) == self.log {
                    self.log_message(now, msg.is_string, &msg.data, metrics);
                } else if Some(ch) == self.presence {
                    self.presence_message(now, &msg.data, metrics);
                }
            }
        }
        self.flush_log(now);
        let connect_expired = self.client.is_none()
            && now.saturating_duration_since(self.created) > settings.connect_timeout;
        let close_done = self.closing.is_some_and(|since| {
            let flushed = self.pending.is_empty()
                && self
                    .log
                    .and_then(|ch| self.pc.data_channel(ch).map(|dc| dc.outstanding_bytes()))
                    .unwrap_or(0)
                    == 0;
            flushed || now.saturating_duration_since(since) > CLOSE_GRACE
        });
        if connect_expired || close_done {
            self.dead = true;
        }
    }

    /// The `log` channel is open: the session learns of the connection, before any of its
    /// input, and the endpoint starts reading its outbox.
    fn connect(
        &mut self,
        now: Instant,
        metrics: &Metrics,
        router: &Router,
        settings: &RtcSettings,
    ) {
        let client = router.next_client();
        let (outbox, outbox_rx) = mpsc::channel::<Outgoing>(settings.outbox_frames);
        self.queue(
            now,
            DriverMsg::Connect {
                client,
                transport: Transport::WebRtc,
                outbox,
                // The peer's input is bounded where it is queued (see `Inbound`).
                closing: None,
            },
        );
        self.new_outbox = Some(outbox_rx);
        self.gauge = Some(ConnectionGauge::open(metrics, Transport::WebRtc));
        self.client = Some(client);
    }

    /// Hands `msg` to the session (see [`Inbound::push`]); a peer that floods its session, or
    /// whose session stopped, is closed.
    fn queue(&mut self, now: Instant, msg: DriverMsg) {
        if self.dead {
            return;
        }
        match self.inbound.push(msg) {
            Ok(()) => {}
            Err(InboundError::Flood) => {
                tracing::debug!("WebRTC peer floods its session; closing");
                self.begin_close(now);
                self.dead = true;
            }
            Err(InboundError::Stopped) => self.dead = true,
        }
    }

    fn queue_input(&mut self, now: Instant, input: Input) {
        self.queue(
            now,
            DriverMsg::Input {
                received: now,
                input,
            },
        );
    }

    fn log_message(&mut self, now: Instant, is_text: bool, data: &[u8], metrics: &Metrics) {
        let Some(client) = self.client else {
            return;
        };
        if self.closing.is_some() || self.refused.is_some() {
            return;
        }
        if is_text {
            // Text is not part of the protocol.
            let error = meshwork_protocol::FrameError::Malformed;
            self.refuse(now, client, error);
            return;
        }
        for item in self.pump.feed(data, metrics) {
            match item {
                Ok(bytes) => {
                    let input = self.verifier.input(client, bytes);
                    self.queue_input(now, input);
                }
                Err(error) => self.refuse(now, client, error),
            }
        }
    }

    /// Hands bad input to the session, which counts it and answers with a `Close` frame.
    fn refuse(&mut self, now: Instant, client: ClientId, error: meshwork_protocol::FrameError) {
        self.queue_input(now, Input::BadFrame { client, error });
        self.refused = Some(now);
    }

    fn presence_message(&mut self, now: Instant, data: &[u8], metrics: &Metrics) {
        let Some(client) = self.client else {
            return;
        };
        metrics.received(Transport::WebRtc, data.len());
        // The session decodes it, once. Presence never waits: behind queued input, or when the
        // session's inbox is full, it is dropped (latest wins).
        if self.inbound.is_clear() {
            let _ = self.inbound.session.try_send(DriverMsg::Input {
                received: now,
                input: Input::Datagram {
                    client,
                    bytes: crate::conn::datagram_payload(data),
                },
            });
        }
    }

    /// Moves queued frames into the `log` channel while its send buffer has room.
    fn flush_log(&mut self, now: Instant) {
        let Some(ch) = self.log else {
            return;
        };
        let Some(mut dc) = self.pc.data_channel(ch) else {
            return;
        };
        while dc.outstanding_bytes() < LOG_SEND_BUFFER {
            let Some(frame) = self.pending.pop_front() else {
                return;
            };
            for chunk in frame.chunks(MAX_MESSAGE) {
                if dc.send(now, BytesMut::from(chunk)).is_err() {
                    self.dead = true;
                    return;
                }
            }
        }
    }
}

/// Why input could not be handed on.
#[derive(Debug, PartialEq, Eq)]
enum InboundError {
    /// More than [`INBOUND_QUEUE`] inputs are waiting: the peer floods its session.
    Flood,
    /// The session driver has stopped.
    Stopped,
}

/// A peer's way into its session driver, for a task that must never wait on one session: input
/// goes straight into the driver's inbox when it has room and nothing waits before it; else it
/// waits here, in order, until a [`SessionPermit`] (asked for through [`Self::permit_wanted`])
/// makes room.
#[derive(Debug)]
struct Inbound {
    session: SessionHandle,
    queued: VecDeque<DriverMsg>,
    /// A permit has been asked for and has not come yet.
    waiting: bool,
}

impl Inbound {
    const fn new(session: SessionHandle) -> Self {
        Self {
            session,
            queued: VecDeque::new(),
            waiting: false,
        }
    }

    /// Nothing waits: what is handed on now arrives in order.
    fn is_clear(&self) -> bool {
        self.queued.is_empty()
    }

    /// Hands `msg` on, after whatever waits.
    fn push(&mut self, msg: DriverMsg) -> Result<(), InboundError> {
        if self.queued.len() >= INBOUND_QUEUE {
            return Err(InboundError::Flood);
        }
        self.queued.push_back(msg);
        self.flush()
    }

    /// Moves waiting input into the driver's inbox while it has room.
    fn flush(&mut self) -> Result<(), InboundError> {
        while let Some(msg) = self.queued.pop_front() {
            match self.session.try_send_back(msg) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(msg)) => {
                    self.queued.push_front(msg);
                    return Ok(());
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.queued.clear();
                    return Err(InboundError::Stopped);
                }
            }
        }
        Ok(())
    }

    /// The session to ask for room in, when input waits and no permit is on its way.
    fn permit_wanted(&mut self) -> Option<SessionHandle> {
        if self.queued.is_empty() || self.waiting {
            return None;
        }
        self.waiting = true;
        Some(self.session.clone())
    }

    /// The permit asked for came (`None`: the driver stopped): the first waiting input goes
    /// into it, and as much of the rest as there is room for.
    fn permitted(&mut self, permit: Option<SessionPermit>) -> Result<(), InboundError> {
        self.waiting = false;
        let Some(permit) = permit else {
            self.queued.clear();
            return Err(InboundError::Stopped);
        };
        if let Some(msg) = self.queued.pop_front() {
            permit.send(msg);
        }
        self.flush()
    }

    /// The peer is gone: `last` (its `Disconnected`) follows whatever still waits, sent by a
    /// short-lived task when the driver has no room now.
    fn finish(mut self, last: DriverMsg) {
        self.queued.push_back(last);
        if self.flush().is_err() || self.queued.is_empty() {
            return;
        }
        let (session, queued) = (self.session, self.queued);
        tokio::spawn(async move {
            for msg in queued {
                if !session.send(msg).await {
                    return;
                }
            }
        });
    }
}

/// The local username fragment a STUN binding request is addressed to (`USERNAME` is
/// `"<receiver ufrag>:<sender ufrag>"`), or `None` for anything else.
fn stun_local_ufrag(data: &[u8]) -> Option<String> {
    // STUN: top two bits zero, magic cookie at bytes 4..8.
    if data.len() < 20 || data.first()? & 0xC0 != 0 || data.get(4..8)? != [0x21, 0x12, 0xA4, 0x42] {
        return None;
    }
    let mut msg = rtc::stun::message::Message::new();
    msg.unmarshal_binary(data).ok()?;
    let username = rtc::stun::textattrs::TextAttribute::get_from_as(
        &msg,
        rtc::stun::attributes::ATTR_USERNAME,
    )
    .ok()?;
    let text = username.text;
    text.split(':').next().map(str::to_owned)
}

/// A random alphanumeric token (ICE ufrag / password), or `None` when the OS has no entropy.
fn random_token(len: usize) -> Option<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).ok()?;
    Some(
        bytes
            .iter()
            .map(|b| {
                let i = usize::from(*b).checked_rem(ALPHABET.len()).unwrap_or(0);
                char::from(ALPHABET.get(i).copied().unwrap_or(b'a'))
            })
            .collect(),
    )
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_username_routes_to_the_local_ufrag() {
        let mut msg = rtc::stun::message::Message::new();
        msg.build(&[
            Box::new(rtc::stun::message::BINDING_REQUEST),
            Box::new(rtc::stun::textattrs::TextAttribute::new(
                rtc::stun::attributes::ATTR_USERNAME,
                "serverFrag:browserFrag".to_owned(),
            )),
        ])
        .unwrap();
        assert_eq!(
            stun_local_ufrag(&msg.raw).as_deref(),
            Some("serverFrag"),
            "the receiver's fragment comes first"
        );
        assert_eq!(
            stun_local_ufrag(b"\x17\xfe\xfd not stun at all, DTLS"),
            None
        );
        assert_eq!(stun_local_ufrag(&[]), None);
        let mut truncated = msg.raw.clone();
        truncated.truncate(24);
        assert_eq!(stun_local_ufrag(&truncated), None);
    }

    fn ping(n: u64) -> DriverMsg {
        DriverMsg::Input {
            received: Instant::now(),
            input: Input::Payload {
                client: ClientId(n),
                bytes: vec![],
            },
        }
    }

    fn client_of(msg: &DriverMsg) -> u64 {
        match msg {
            DriverMsg::Input {
                input: Input::Payload { client, .. } | Input::Disconnected { client },
                ..
            } => client.0,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn input_the_session_cannot_take_now_waits_in_order_for_a_permit_and_floods_are_refused()
    {
        // A driver inbox of 2 that nobody reads yet.
        let (session, mut driver) = SessionHandle::detached(2);
        let mut inbound = Inbound::new(session);
        for n in 0..5 {
            inbound.push(ping(n)).unwrap();
        }
        assert!(!inbound.is_clear(), "3 wait behind a full inbox");
        let session = inbound.permit_wanted().expect("room is asked for");
        assert!(inbound.permit_wanted().is_none(), "once");
        // The driver reads two; the permit comes; the rest follows in order.
        let mut got = vec![client_of(&driver.recv().await.unwrap())];
        got.push(client_of(&driver.recv().await.unwrap()));
        inbound.permitted(session.reserve().await).unwrap();
        while let Ok(msg) = driver.try_recv() {
            got.push(client_of(&msg));
        }
        assert_eq!(got, vec![0, 1, 2, 3], "in order, as room allows");
        assert!(!inbound.is_clear(), "4 still waits (the inbox held 2)");
        // The peer goes: its Disconnected comes after what waits, from a task.
        inbound.finish(DriverMsg::Input {
            received: Instant::now(),
            input: Input::Disconnected {
                client: ClientId(99),
            },
        });
        assert_eq!(client_of(&driver.recv().await.unwrap()), 4);
        assert_eq!(client_of(&driver.recv().await.unwrap()), 99);

        // A peer that queues more than the bound floods its session.
        let (session, _driver) = SessionHandle::detached(1);
        let mut inbound = Inbound::new(session);
        let sent = (0..).take_while(|n| inbound.push(ping(*n)).is_ok()).count();
        assert_eq!(sent, INBOUND_QUEUE + 1, "the inbox's one, then the bound");
        assert_eq!(inbound.push(ping(0)), Err(InboundError::Flood));
        // A stopped driver is told apart.
        let (session, driver) = SessionHandle::detached(1);
        drop(driver);
        assert_eq!(
            Inbound::new(session).push(ping(0)),
            Err(InboundError::Stopped)
        );
    }

    #[test]
    fn public_ips_replace_the_socket_address() {
        let public: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(
            candidate_ips("0.0.0.0".parse().unwrap(), &[public]),
            vec![public]
        );
        let bound: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(candidate_ips(bound, &[]), vec![bound]);
        let any = candidate_ips("0.0.0.0".parse().unwrap(), &[]);
        assert!(!any.is_empty() && any.iter().all(|ip| !ip.is_unspecified()));
    }
}
