//! The WebSocket fallback for networks that block UDP: `GET /api/v1/sessions/{id}/ws` upgrades
//! to a WebSocket whose binary messages carry the same frames as the QUIC stream (one or more
//! whole frames per message, or frames split across messages: the reader reassembles). The
//! unreliable lane has no separate channel here; presence rides the same ordered stream.
//! Connections reach the session driver through the same inbox and outbox types as QUIC.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt as _, StreamExt as _};
use meshwork_protocol::codec::{FRAME_HEADER_BYTES, MAX_FRAME_BYTES};
use meshwork_session::Input;
use tokio::sync::{mpsc, watch};

use crate::conn::{ConnLimits, ConnectionGauge, FramePump, SubmitGate};
use crate::data::parse_session_id;
use crate::driver::{DriverMsg, Outgoing, SessionHandle};
use crate::http::AppState;
use crate::metrics::{Metrics, Transport};
use crate::quic::close_code;

/// How long a closing socket waits for the client's close handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The upgrade handler.
pub async fn upgrade(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(session) = parse_session_id(&id)
        .ok()
        .and_then(|sid| s.ctx.router.get(sid))
    else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": format!("no session {id}") })),
        )
            .into_response();
    };
    if s.ctx.router.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let Some(slot) = s.ctx.router.admit(peer.ip()) else {
        s.metrics.rejected("per_address_limit");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(serde_json::json!({
                "error": "too many connections from your address",
                "code": "per_address_limit",
            })),
        )
            .into_response();
    };
    let (router, metrics) = (s.ctx.router.clone(), s.metrics.clone());
    let limits = ConnLimits::of(&s.ctx.settings);
    let idle = Duration::from_secs(s.ctx.settings.idle_timeout_s);
    ws.max_message_size(MAX_FRAME_BYTES.saturating_add(FRAME_HEADER_BYTES))
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            let client = router.next_client();
            serve(socket, session, client, metrics, limits, idle).await;
        })
}

async fn serve(
    socket: WebSocket,
    session: SessionHandle,
    client: meshwork_session::ClientId,
    metrics: Metrics,
    limits: ConnLimits,
    idle: Duration,
) {
    let transport = Transport::WebSocket;
    let _gauge = ConnectionGauge::open(&metrics, transport);
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Outgoing>(limits.outbox);
    // Set by the driver when the session closes this client: what the reader still reads after
    // it (a flood's remaining frames) is not passed on, and a paced wait ends.
    let (closing_tx, mut closing) = watch::channel(false);
    if !session
        .send(DriverMsg::Connect {
            client,
            transport,
            outbox: tx,
            closing: Some(closing_tx),
        })
        .await
    {
        return;
    }
    let writer = tokio::spawn(async move {
        let mut reason = meshwork_protocol::wire::CloseReason::ServerShutdown;
        // Pings keep a quiet but live client's input flowing (browsers answer them in the
        // network stack, also in background tabs whose timers are throttled).
        // The first after one period: a ping (and its pong) right at the start would race a
        // close of a connection refused at once.
        let period = idle.checked_div(3).unwrap_or(idle);
        let first = tokio::time::Instant::now()
            .checked_add(period)
            .unwrap_or_else(tokio::time::Instant::now);
        let mut ping = tokio::time::interval_at(first, period);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let out = tokio::select! {
                out = rx.recv() => out,
                _ = ping.tick() => {
                    if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let Some(out) = out else { break };
            match out {
                Outgoing::Frame(f) | Outgoing::Datagram(f) => {
                    if sink.send(Message::Binary(f.to_vec().into())).await.is_err() {
                        return;
                    }
                }
                Outgoing::Close(r) => {
                    reason = r;
                    break;
                }
            }
        }
        let code = u16::try_from(close_code(reason))
            .unwrap_or(0)
            .saturating_add(4000);
        let frame = CloseFrame {
            code,
            reason: format!("{reason:?}").into(),
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
    });
    let mut pump = FramePump::new(transport);
    let mut gate = SubmitGate::new(limits);
    let input = |input| DriverMsg::Input {
        received: Instant::now(),
        input,
    };
    'read: loop {
        let msg = match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(msg))) => msg,
            Ok(_) => break,
            Err(_) => {
                // Nothing, not even a pong, for the idle time: the peer is gone.
                metrics.rejected("idle_timeout");
                writer.abort();
                break;
            }
        };
        let bytes = match msg {
            Message::Binary(b) => b,
            Message::Close(_) => break,
            // Text is not part of the protocol; ping/pong are answered by the library.
            Message::Text(_) => {
                let error = meshwork_protocol::FrameError::Malformed;
                let _ = session.send(input(Input::BadFrame { client, error })).await;
                break;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        for item in pump.feed(&bytes, &metrics) {
            // The session closed this client: the rest of a flood goes nowhere.
            if *closing.borrow() {
                break 'read;
            }
            let (msg, last) = match item {
                Ok(bytes) => match gate.pass(client, bytes, &mut closing, &metrics).await {
                    Some(passed) => (passed, false),
                    None => break 'read,
                },
                Err(error) => (Input::BadFrame { client, error }, true),
            };
            if !session.send(input(msg)).await || last {
                break 'read;
            }
        }
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer).await;
    let _ = session.send(input(Input::Disconnected { client })).await;
}
