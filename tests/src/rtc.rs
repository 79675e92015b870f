//! A Rust WebRTC client (the async `webrtc` crate, 0.21) that joins a Meshwork session the way a
//! browser does: `log` (reliable, ordered) and `presence` (unordered, no retransmits) data
//! channels, a non-trickle offer POSTed to `/api/v1/sessions/{id}/rtc`, then the sans-IO
//! [`ClientConnection`] over the `log` channel's byte stream.
#![allow(
    clippy::arithmetic_side_effects,
    reason = "test-client deadlines (now + seconds) and small counters"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use meshwork_protocol::Ed25519Signer;
use meshwork_protocol::client::ClientConnection;
use meshwork_protocol::codec::{FrameReader, to_frame};
use meshwork_protocol::wire::{ClientMsg, Invite, ServerMsg};
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
pub use webrtc::peer_connection::RTCIceServer;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCIceTransportPolicy, RTCPeerConnectionState, RTCSessionDescription,
    SettingEngineBuilder,
};

/// How the client reaches the server.
#[derive(Clone, Debug, Default)]
pub struct RtcOptions {
    /// ICE servers (e.g. the TURN entry from `GET /api/v1/server`).
    pub ice_servers: Vec<RTCIceServer>,
    /// Gather and use relay candidates only (`iceTransportPolicy: 'relay'`).
    pub relay_only: bool,
}

/// What the data channels delivered.
#[derive(Debug)]
enum Lane {
    Open,
    Log(Vec<u8>),
    Presence(Vec<u8>),
    Closed(&'static str),
}

struct Handler {
    gathered: mpsc::UnboundedSender<()>,
    lanes: mpsc::UnboundedSender<Lane>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(());
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if matches!(
            state,
            RTCPeerConnectionState::Closed | RTCPeerConnectionState::Failed
        ) {
            let _ = self.lanes.send(Lane::Closed("log"));
        }
    }
}

/// Why a WebRTC join failed.
#[derive(Debug, thiserror::Error)]
pub enum RtcError {
    /// The local WebRTC stack failed.
    #[error("webrtc: {0}")]
    Local(String),
    /// Signaling was refused: HTTP status and body.
    #[error("signaling refused ({0}): {1}")]
    Signaling(u16, String),
    /// The channels did not open in time.
    #[error("the data channels did not open within {0:?}")]
    Timeout(Duration),
}

/// One browser-like WebRTC peer driving a [`ClientConnection`].
pub struct RtcClient {
    pc: Arc<dyn PeerConnection>,
    /// The reliable, ordered channel (frames as a byte stream).
    pub log: Arc<dyn DataChannel>,
    /// The unreliable channel (one frame per message).
    pub presence: Arc<dyn DataChannel>,
    lanes: mpsc::UnboundedReceiver<Lane>,
    /// The protocol client.
    pub conn: ClientConnection<Ed25519Signer>,
    reader: FrameReader,
    /// The server sent `Close`, or the channel or connection closed.
    pub closed: bool,
    /// The complete offer this client sent (its candidates included).
    pub offer_sdp: String,
    /// Presence frames received on the `presence` channel.
    pub presence_received: usize,
    /// Presence frames that came on the `log` channel (the server should never do that).
    pub presence_on_log: usize,
    /// `ServerMsg::Close` frames received.
    pub close_frames: Vec<meshwork_protocol::wire::CloseReason>,
}

impl std::fmt::Debug for RtcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtcClient")
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

fn local(e: impl std::fmt::Display) -> RtcError {
    RtcError::Local(e.to_string())
}

impl RtcClient {
    /// Creates the peer connection and its channels and gathers candidates; returns the
    /// unsent offer. [`Self::connect`] does the rest.
    ///
    /// # Errors
    /// [`RtcError::Local`] when the stack fails.
    pub async fn prepare(
        options: &RtcOptions,
        signer: Ed25519Signer,
        invite: Invite,
    ) -> Result<Self, RtcError> {
        let (gathered_tx, mut gathered) = mpsc::unbounded_channel();
        let (tx, lanes) = mpsc::unbounded_channel();
        let mut config =
            RTCConfigurationBuilder::new().with_ice_servers(options.ice_servers.clone());
        if options.relay_only {
            config = config.with_ice_transport_policy(RTCIceTransportPolicy::Relay);
        }
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_include_loopback_candidate(true)
            .build();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config.build())
            .with_setting_engine(settings)
            .with_handler(Arc::new(Handler {
                gathered: gathered_tx,
                lanes: tx.clone(),
            }))
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await
            .map_err(local)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let log = pc.create_data_channel("log", None).await.map_err(local)?;
        let presence = pc
            .create_data_channel(
                "presence",
                Some(RTCDataChannelInit {
                    ordered: false,
                    max_retransmits: Some(0),
                    ..Default::default()
                }),
            )
            .await
            .map_err(local)?;
        for (dc, name) in [(log.clone(), "log"), (presence.clone(), "presence")] {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(event) = dc.poll().await {
                    let lane = match event {
                        DataChannelEvent::OnOpen => Lane::Open,
                        DataChannelEvent::OnMessage(m) if name == "log" => {
                            Lane::Log(m.data.to_vec())
                        }
                        DataChannelEvent::OnMessage(m) => Lane::Presence(m.data.to_vec()),
                        DataChannelEvent::OnClose => Lane::Closed(name),
                        _ => continue,
                    };
                    if tx.send(lane).is_err() {
                        return;
                    }
                }
                let _ = tx.send(Lane::Closed(name));
            });
        }
        let offer = pc.create_offer(None).await.map_err(local)?;
        pc.set_local_description(offer).await.map_err(local)?;
        // Non-trickle: the offer goes out with every candidate in it.
        let _ = tokio::time::timeout(Duration::from_secs(10), gathered.recv()).await;
        let offer_sdp = pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| RtcError::Local("no local description".into()))?;
        Ok(Self {
            pc,
            log,
            presence,
            lanes,
            conn: ClientConnection::new(signer, invite, "rtc-test"),
            reader: FrameReader::new(),
            closed: false,
            offer_sdp,
            presence_received: 0,
            presence_on_log: 0,
            close_frames: Vec::new(),
        })
    }

    /// Sends the offer to `http` for `session`, applies the answer and waits for the `log`
    /// channel to open.
    ///
    /// # Errors
    /// [`RtcError`] naming the step that failed.
    pub async fn connect(
        &mut self,
        http: SocketAddr,
        session: &str,
        within: Duration,
    ) -> Result<(), RtcError> {
        let r = self.offer(http, session).await?;
        if r.status != 200 {
            return Err(RtcError::Signaling(r.status, r.body));
        }
        let answer: serde_json::Value = serde_json::from_str(&r.body)
            .map_err(|e| RtcError::Signaling(r.status, e.to_string()))?;
        let sdp = answer["sdp"].as_str().unwrap_or_default().to_owned();
        let answer = RTCSessionDescription::answer(sdp).map_err(local)?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(local)?;
        let end = Instant::now() + within;
        let mut open = 0;
        while open < 2 {
            let left = end.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lanes.recv()).await {
                Ok(Some(Lane::Open)) => open += 1,
                Ok(Some(Lane::Closed(_)) | None) => {
                    return Err(RtcError::Local("a channel closed while opening".into()));
                }
                Ok(Some(other)) => self.lane(other),
                Err(_) => return Err(RtcError::Timeout(within)),
            }
        }
        Ok(())
    }

    /// POSTs the offer to the server's signaling endpoint and returns the raw response.
    ///
    /// # Errors
    /// [`RtcError::Local`] when the request cannot be made.
    pub async fn offer(
        &self,
        http: SocketAddr,
        session: &str,
    ) -> Result<crate::http::Response, RtcError> {
        let body = serde_json::json!({ "type": "offer", "sdp": self.offer_sdp }).to_string();
        crate::http::request(
            http,
            "POST",
            &format!("/api/v1/sessions/{session}/rtc"),
            &[("Content-Type", "application/json")],
            &body,
        )
        .await
        .map_err(RtcError::Local)
    }

    /// [`Self::prepare`] then [`Self::connect`].
    ///
    /// # Errors
    /// See both.
    pub async fn join(
        http: SocketAddr,
        options: &RtcOptions,
        signer: Ed25519Signer,
        invite: Invite,
    ) -> Result<Self, RtcError> {
        let session = invite
            .claimed_session()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let mut c = Self::prepare(options, signer, invite).await?;
        c.connect(http, &session, Duration::from_secs(15)).await?;
        Ok(c)
    }

    /// Joins with default options and a fresh key, and waits (≤ 10 s) until the replica holds
    /// the session's snapshot.
    ///
    /// # Errors
    /// As [`Self::join`], or [`RtcError::Timeout`] when the snapshot does not arrive.
    pub async fn join_synced(http: SocketAddr, invite: &Invite) -> Result<Self, RtcError> {
        let wait = Duration::from_secs(10);
        let mut c = Self::join(
            http,
            &RtcOptions::default(),
            crate::random_signer(),
            invite.clone(),
        )
        .await?;
        if c.pump_until(wait, |c| c.conn.replica().is_synced()).await? {
            Ok(c)
        } else {
            Err(RtcError::Timeout(wait))
        }
    }

    fn lane(&mut self, lane: Lane) {
        match lane {
            Lane::Log(bytes) => {
                if self.reader.push(&bytes).is_err() {
                    self.closed = true;
                    return;
                }
                while let Ok(Some(m)) = self.reader.next_msg::<ServerMsg>() {
                    if matches!(m, ServerMsg::Presence(_)) {
                        self.presence_on_log = self.presence_on_log.saturating_add(1);
                    }
                    if let ServerMsg::Close(c) = &m {
                        // The server closes the connection after this frame.
                        self.close_frames.push(c.reason);
                        self.closed = true;
                    }
                    let _ = self.conn.handle(&m);
                }
            }
            Lane::Presence(bytes) => {
                if let Ok(Some((m, _))) = meshwork_protocol::decode_frame::<ServerMsg>(&bytes) {
                    self.presence_received += 1;
                    let _ = self.conn.handle(&m);
                }
            }
            Lane::Closed("log") => self.closed = true,
            Lane::Open | Lane::Closed(_) => {}
        }
    }

    /// Sends what the protocol client has queued.
    ///
    /// # Errors
    /// [`RtcError::Local`] when the channel is gone.
    pub async fn flush(&mut self) -> Result<(), RtcError> {
        while let Some(msg) = self.conn.poll_transmit() {
            let frame = to_frame(&msg).map_err(local)?;
            self.log
                .send(BytesMut::from(&frame[..]))
                .await
                .map_err(local)?;
        }
        Ok(())
    }

    /// Sends raw bytes on the `log` channel (for bad-input tests).
    ///
    /// # Errors
    /// [`RtcError::Local`] when the channel is gone.
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<(), RtcError> {
        self.log.send(BytesMut::from(bytes)).await.map_err(local)
    }

    /// Sends a presence frame on the unreliable channel.
    ///
    /// # Errors
    /// [`RtcError::Local`] when the channel is gone.
    pub async fn send_presence(
        &self,
        presence: meshwork_protocol::wire::Presence,
    ) -> Result<(), RtcError> {
        let frame = to_frame(&ClientMsg::Presence(presence)).map_err(local)?;
        self.presence
            .send(BytesMut::from(&frame[..]))
            .await
            .map_err(local)
    }

    /// Flushes, then handles whatever arrives within `wait`.
    ///
    /// # Errors
    /// [`RtcError::Local`] when sending fails.
    pub async fn pump(&mut self, wait: Duration) -> Result<(), RtcError> {
        self.flush().await?;
        let end = Instant::now() + wait;
        while !self.closed {
            let left = end.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lanes.recv()).await {
                Ok(Some(lane)) => {
                    self.lane(lane);
                    self.flush().await?;
                }
                Ok(None) => self.closed = true,
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Pumps until `done` holds or `within` passes; returns whether it held.
    ///
    /// # Errors
    /// [`RtcError::Local`] when sending fails.
    pub async fn pump_until(
        &mut self,
        within: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Result<bool, RtcError> {
        let end = Instant::now() + within;
        while !done(self) {
            if Instant::now() >= end || self.closed {
                return Ok(done(self));
            }
            self.pump(Duration::from_millis(20)).await?;
        }
        Ok(true)
    }

    /// Closes the peer connection.
    pub async fn close(self) {
        let _ = self.pc.close().await;
    }
}
