//! QUIC for native clients (quinn + rustls, TLS 1.3, ALPN `meshwork/1`).
//!
//! Per connection: the client opens one bidirectional stream that carries frames both ways
//! (the reliable lane); datagrams are the unreliable lane. A reader task turns stream bytes into
//! whole payloads for the session driver; a writer task drains the connection's bounded outbox.

use std::collections::VecDeque;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshwork_protocol::wire::{ClientMsg, CloseReason};
use meshwork_session::Input;
use tokio::sync::{mpsc, watch};

use crate::Error;
use crate::conn::{ConnLimits, ConnectionGauge, FramePump, SubmitGate};
use crate::driver::{DriverMsg, Outgoing};
use crate::metrics::{Metrics, Transport};
use crate::router::Router;

/// ALPN protocol id.
pub const ALPN: &[u8] = b"meshwork/1";
/// Keep-alive interval: well under common NAT binding timeouts.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long a client may take to open its stream.
const STREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// Queued frames written to the stream in one call, up to about this many bytes.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// How long a client may take to send its first frame (the `Hello`) on the stream.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing connection waits for the client to read the last frames.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The QUIC application error code sent with a close, per reason.
#[must_use]
pub const fn close_code(reason: CloseReason) -> u32 {
    match reason {
        CloseReason::Leaving => 0,
        CloseReason::ServerShutdown => 1,
        CloseReason::ProtocolViolation => 2,
        CloseReason::TooSlow => 3,
        CloseReason::Kicked => 4,
        CloseReason::IdleTimeout => 5,
    }
}

/// Builds the server endpoint on an already bound socket.
///
/// # Errors
/// [`Error::Tls`] for an unusable certificate, [`Error::Io`] for socket errors.
pub fn endpoint(
    socket: UdpSocket,
    cert_der: &[u8],
    key_der: &[u8],
    idle: Duration,
) -> Result<quinn::Endpoint, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = rustls::pki_types::CertificateDer::from(cert_der.to_vec());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.to_vec().into());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| Error::Tls(format!("certificate: {e}")))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| Error::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(
            idle.try_into().map_err(|_| Error::Config("idle".into()))?,
        ))
        .max_concurrent_bidi_streams(1u8.into())
        .max_concurrent_uni_streams(0u8.into())
        .datagram_receive_buffer_size(Some(64 * 1024))
        // Without segmentation offload quinn keeps a one-datagram send buffer per connection
        // instead of one for a burst of ten (about 13 KiB of every idle connection). Our
        // traffic is small frames per connection; only a bulk download (a large snapshot)
        // would batch its datagrams, and it pays one send per datagram instead.
        .enable_segmentation_offload(false);
    config.transport_config(Arc::new(transport));
    socket
        .set_nonblocking(true)
        .map_err(|e| Error::Io(e.to_string()))?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| Error::Io(format!("QUIC endpoint: {e}")))
}

/// Accepts connections until the endpoint is closed.
pub async fn accept_loop(
    endpoint: quinn::Endpoint,
    router: Arc<Router>,
    metrics: Metrics,
    limits: ConnLimits,
) {
    while let Some(incoming) = endpoint.accept().await {
        if router.is_shutting_down() {
            incoming.refuse();
            continue;
        }
        // Refused before the TLS handshake costs anything (the client sees CONNECTION_REFUSED).
        let Some(slot) = router.admit(incoming.remote_address().ip()) else {
            metrics.rejected("per_address_limit");
            incoming.refuse();
            continue;
        };
        let (router, metrics) = (router.clone(), metrics.clone());
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = serve(incoming, router, metrics, limits).await {
                tracing::debug!("QUIC connection ended: {e}");
            }
        });
    }
}

async fn serve(
    incoming: quinn::Incoming,
    router: Arc<Router>,
    metrics: Metrics,
    limits: ConnLimits,
) -> Result<(), String> {
    let conn = incoming.await.map_err(|e| e.to_string())?;
    let Ok(stream) = tokio::time::timeout(STREAM_TIMEOUT, conn.accept_bi()).await else {
        metrics.rejected("handshake_timeout");
        conn.close(
            close_code(CloseReason::IdleTimeout).into(),
            b"no stream opened in time",
        );
        return Err("no stream opened in time".into());
    };
    let (send, mut recv) = stream.map_err(|e| e.to_string())?;
    let transport = Transport::Quic;
    let _gauge = ConnectionGauge::open(&metrics, transport);

    // Read until the first whole frame: it names the session (through the invite). A client
    // that sends none in time is closed (the session's own handshake deadline starts after).
    let mut pump = FramePump::new(transport);
    let mut pending: VecDeque<Result<Vec<u8>, meshwork_protocol::FrameError>> = VecDeque::new();
    // Chunks are read as quinn holds them (`read_chunk`): no read buffer of our own is kept
    // per connection, most of what an idle connection would cost.
    let first = tokio::time::timeout(FIRST_FRAME_TIMEOUT, async {
        loop {
            if let Some(item) = pending.pop_front() {
                break Ok(Some(item));
            }
            let Some(chunk) = recv
                .read_chunk(usize::MAX, true)
                .await
                .map_err(|e| e.to_string())?
            else {
                break Ok(None);
            };
            pending.extend(pump.feed(&chunk.bytes, &metrics));
        }
    })
    .await;
    let first = match first {
        Err(_) => {
            metrics.rejected("handshake_timeout");
            conn.close(
                close_code(CloseReason::IdleTimeout).into(),
                b"no hello in time",
            );
            return Err("no first frame in time".into());
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(None)) => return Ok(()),
        Ok(Ok(Some(first))) => first,
    };
    let (hello, claimed) = match &first {
        Ok(payload) => match postcard::from_bytes::<ClientMsg>(payload) {
            Ok(ClientMsg::Hello(h)) => (true, h.invite.claimed_session()),
            _ => (false, None),
        },
        Err(_) => (false, None),
    };
    let session = router.route(claimed);
    let client = router.next_client();
    let (out_tx, out_rx) = mpsc::channel(limits.outbox);
    // Set by the driver when the session closes this client: what the reader still holds or
    // reads after it (a flood's remaining frames) is not passed on, and a paced wait ends.
    let (closing_tx, mut closing) = watch::channel(false);
    if !session
        .send(DriverMsg::Connect {
            client,
            transport,
            outbox: out_tx,
            closing: Some(closing_tx),
        })
        .await
    {
        return Err("session stopped".into());
    }
    let writer = tokio::spawn(write_loop(conn.clone(), send, out_rx));
    let datagrams = tokio::spawn(datagram_loop(
        conn.clone(),
        metrics.clone(),
        session.clone(),
        client,
    ));

    let input = |input| DriverMsg::Input {
        received: Instant::now(),
        input,
    };
    let mut next = first;
    let mut gate = SubmitGate::new(limits);
    loop {
        if *closing.borrow() {
            break;
        }
        match next {
            Ok(bytes) => {
                let Some(passed) = gate.pass(client, bytes, &mut closing, &metrics).await else {
                    break;
                };
                if !session.send(input(passed)).await {
                    break;
                }
                // A first frame that is not a `Hello` ends the connection (the session closes
                // it, saying why): nothing after it is read or passed on.
                if !hello {
                    break;
                }
            }
            Err(error) => {
                let _ = session.send(input(Input::BadFrame { client, error })).await;
                break;
            }
        }
        next = loop {
            if let Some(item) = pending.pop_front() {
                break item;
            }
            match recv.read_chunk(usize::MAX, true).await {
                Ok(Some(chunk)) => pending.extend(pump.feed(&chunk.bytes, &metrics)),
                // End of stream or connection lost: the client is gone.
                Ok(None) | Err(_) => {
                    let _ = session.send(input(Input::Disconnected { client })).await;
                    datagrams.abort();
                    let _ = writer.await;
                    return Ok(());
                }
            }
        };
    }
    datagrams.abort();
    let _ = writer.await;
    let _ = session.send(input(Input::Disconnected { client })).await;
    Ok(())
}

async fn write_loop(
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut rx: mpsc::Receiver<Outgoing>,
) {
    let mut reason = CloseReason::ServerShutdown;
    // Frames already queued go out in one write (acks, refusals and fan-out pile up while the
    // stream is busy): one pass through the connection's state per batch, not per frame. The
    // frames are handed to quinn as they are (shared, not copied), and nothing is kept between
    // writes: an idle connection holds no buffer of ours.
    let mut batch: Vec<bytes::Bytes> = Vec::new();
    let mut batched = 0usize;
    let mut closed = false;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(out) = next.take() {
            match out {
                Outgoing::Frame(frame) => {
                    batched = batched.saturating_add(frame.len());
                    batch.push(bytes::Bytes::from_owner(frame));
                }
                Outgoing::Datagram(frame) => {
                    // In order: what was queued before it goes first (a new member's roster
                    // before their presence).
                    if !batch.is_empty() {
                        if send.write_all_chunks(&mut batch).await.is_err() {
                            return;
                        }
                        batch = Vec::new();
                        batched = 0;
                    }
                    // Too large or datagrams unsupported by the peer: presence is best-effort.
                    let _ = conn.send_datagram(bytes::Bytes::from_owner(frame));
                }
                Outgoing::Close(r) => {
                    reason = r;
                    closed = true;
                    break;
                }
            }
            if batched < WRITE_BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if send.write_all_chunks(&mut batch).await.is_err() {
                return;
            }
            batch = Vec::new();
            batched = 0;
        }
        if closed {
            break;
        }
    }
    // Let the client read everything (the close frame included) before the connection goes.
    let _ = send.finish();
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, send.stopped()).await;
    conn.close(close_code(reason).into(), format!("{reason:?}").as_bytes());
}

/// Datagrams carry one frame each (presence); they go to the session as unreliable input.
async fn datagram_loop(
    conn: quinn::Connection,
    metrics: Metrics,
    session: crate::driver::SessionHandle,
    client: meshwork_session::ClientId,
) {
    while let Ok(d) = conn.read_datagram().await {
        metrics.received(Transport::Quic, d.len());
        // The session decodes it, once.
        let input = DriverMsg::Input {
            received: Instant::now(),
            input: Input::Datagram {
                client,
                bytes: crate::conn::datagram_payload(&d),
            },
        };
        // Never wait for room: presence that cannot be queued is dropped (latest wins).
        let _ = session.try_send(input);
    }
}
