//! A WebSocket client for the fallback transport: the sans-IO [`ClientConnection`] over
//! tokio-tungstenite, frames in binary messages.
#![allow(
    clippy::arithmetic_side_effects,
    reason = "test-client deadlines (now + seconds)"
)]

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use meshwork_protocol::Ed25519Signer;
use meshwork_protocol::client::{ClientConnection, ClientEvent};
use meshwork_protocol::codec::{FrameReader, to_frame};
use meshwork_protocol::wire::ServerMsg;
use tokio_tungstenite::tungstenite::Message;

use crate::random_signer;

/// The socket type.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One WebSocket connection driving a [`ClientConnection`].
#[allow(missing_debug_implementations, reason = "holds a socket")]
pub struct WsClient {
    /// The socket (tests send raw messages on it).
    pub ws: Ws,
    /// The protocol client.
    pub conn: ClientConnection<Ed25519Signer>,
    reader: FrameReader,
    /// The close code, once closed.
    pub closed: Option<u16>,
}

impl WsClient {
    /// Connects to `url` (`ws://host/api/v1/sessions/{id}/ws`).
    ///
    /// # Panics
    /// If the connection fails: the calling test fails.
    pub async fn connect(url: &str, invite: meshwork_protocol::wire::Invite) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("the WebSocket connects");
        Self {
            ws,
            conn: ClientConnection::new(random_signer(), invite, "ws-test"),
            reader: FrameReader::new(),
            closed: None,
        }
    }

    /// Sends what the protocol client has queued.
    ///
    /// # Panics
    /// If the socket fails.
    pub async fn flush(&mut self) {
        while let Some(msg) = self.conn.poll_transmit() {
            self.ws
                .send(Message::Binary(
                    to_frame(&msg).expect("frames encode").into(),
                ))
                .await
                .expect("the WebSocket takes the frame");
        }
    }

    /// Handles what arrives within `wait`.
    ///
    /// # Panics
    /// If the socket fails or the server sends an undecodable frame.
    pub async fn pump(&mut self, wait: Duration) {
        self.flush().await;
        let end = Instant::now() + wait;
        while let Ok(Some(msg)) = tokio::time::timeout(
            end.saturating_duration_since(Instant::now()),
            self.ws.next(),
        )
        .await
        {
            match msg.expect("the WebSocket reads") {
                Message::Binary(b) => {
                    self.reader.push(&b).expect("server frames are valid");
                    while let Some(m) = self
                        .reader
                        .next_msg::<ServerMsg>()
                        .expect("server frames decode")
                    {
                        let _: ClientEvent = self.conn.handle(&m);
                    }
                    self.flush().await;
                }
                Message::Close(f) => {
                    self.closed = Some(f.map_or(0, |f| u16::from(f.code)));
                    return;
                }
                _ => {}
            }
        }
    }
}
