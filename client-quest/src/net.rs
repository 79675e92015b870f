//! The network thread: QUIC (quinn) to the server in the join ticket, pinned to the
//! certificate fingerprint the ticket carries (the server's certificate is self-signed by
//! default, so there is no CA to trust). The render loop never waits on the network: it hands
//! frames over and polls what arrived, through channels.
//!
//! A connection that drops is not the end: the thread reports [`NetEvent::Dropped`] and dials
//! again with backoff (0.5 s doubling to 10 s). Frames are tagged with the app's connection
//! generation ([`Net::restart`]): what was queued for a connection that dropped is never written
//! to the next one, which must start with the app's new `Hello`.

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use meshwork_protocol::codec::to_frame;
use meshwork_protocol::wire::{ClientMsg, JoinTicket, ServerMsg};
use meshwork_protocol::{FrameReader, decode_frame};
use tokio::sync::mpsc;

/// What the network thread reports.
#[derive(Debug)]
pub enum NetEvent {
    /// A message from the server (reliable stream or datagram).
    Msg(Box<ServerMsg>),
    /// The connection dropped (why); the thread is dialling again. Call [`Net::restart`] and
    /// `App::reconnect` now.
    Dropped(String),
    /// The connection is gone for good (the app left, or the thread could not run), and why.
    Closed(String),
}

/// How long one dial may wait for the server's answer.
const DIAL_TIMEOUT: Duration = Duration::from_secs(4);

/// A frame to write: the connection generation it was made for, whether it is a datagram.
type Outgoing = (u64, bool, Vec<u8>);

/// Waits before dial attempt `attempt` (1-based): 0.5 s doubling to 10 s.
#[must_use]
pub fn redial_delay(attempt: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(5));
    Duration::from_millis(ms.min(10_000))
}

/// Handle to the network thread.
#[derive(Debug)]
pub struct Net {
    out: mpsc::UnboundedSender<Outgoing>,
    events: std_mpsc::Receiver<NetEvent>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The app's connection generation: frames of older ones are dropped by the writer.
    generation: Arc<AtomicU64>,
}

impl Net {
    /// Connects to the ticket's server in a background thread.
    ///
    /// # Errors
    /// The address cannot be resolved or the thread cannot start.
    pub fn connect(ticket: &JoinTicket) -> Result<Self, String> {
        let addr = ticket
            .quic_addr
            .to_socket_addrs()
            .map_err(|e| format!("{}: {e}", ticket.quic_addr))?
            .next()
            .ok_or_else(|| format!("{} does not resolve", ticket.quic_addr))?;
        let pin = ticket.cert_sha256;
        let (out, out_rx) = mpsc::unbounded_channel();
        let (ev_tx, events) = std_mpsc::channel();
        let generation = Arc::new(AtomicU64::new(0));
        let writer_generation = generation.clone();
        let thread = std::thread::Builder::new()
            .name("meshwork-net".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ev_tx.send(NetEvent::Closed(format!("runtime: {e}")));
                        return;
                    }
                };
                let reason = rt.block_on(dial_until_left(
                    addr,
                    pin,
                    out_rx,
                    ev_tx.clone(),
                    writer_generation,
                ));
                let _ = ev_tx.send(NetEvent::Closed(reason));
            })
            .map_err(|e| e.to_string())?;
        Ok(Self {
            out,
            events,
            thread: Some(thread),
            generation,
        })
    }

    /// After [`NetEvent::Dropped`]: what is sent from now on is for the next connection
    /// (whatever was queued for the dropped one is discarded).
    pub fn restart(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Sends a message on the reliable stream.
    pub fn send(&self, msg: &ClientMsg) {
        if let Ok(frame) = to_frame(msg) {
            let _ = self
                .out
                .send((self.generation.load(Ordering::SeqCst), false, frame));
        }
    }

    /// Sends a message as a datagram (presence: best effort).
    pub fn send_datagram(&self, msg: &ClientMsg) {
        if let Ok(frame) = to_frame(msg) {
            let _ = self
                .out
                .send((self.generation.load(Ordering::SeqCst), true, frame));
        }
    }

    /// What arrived since the last call, without waiting.
    pub fn poll(&self) -> Vec<NetEvent> {
        self.events.try_iter().collect()
    }

    /// Waits up to `wait` for the next event.
    #[must_use]
    pub fn wait(&self, wait: Duration) -> Option<NetEvent> {
        self.events.recv_timeout(wait).ok()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Closing the channel ends the writer, which closes the connection.
        let (tx, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.out, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How one connection ended.
enum Ended {
    /// The app closed the channel: leave.
    Left(String),
    /// The connection failed or dropped: dial again.
    Dropped(String),
}

/// Connects, and after every drop reports it and connects again, until the app leaves.
async fn dial_until_left(
    addr: SocketAddr,
    pin: [u8; 32],
    mut out: mpsc::UnboundedReceiver<Outgoing>,
    events: std_mpsc::Sender<NetEvent>,
    generation: Arc<AtomicU64>,
) -> String {
    let mut attempt = 0u32;
    let mut current = generation.load(Ordering::SeqCst);
    loop {
        match run(addr, pin, &mut out, &events, current, &mut attempt).await {
            Ended::Left(why) => return why,
            Ended::Dropped(why) => {
                // `run` zeroes `attempt` once a connection is up: a drop of a live connection
                // (or a first dial that failed) is reported once; further failed dials only
                // wait longer.
                if attempt == 0 {
                    if events.send(NetEvent::Dropped(why)).is_err() {
                        return "the app is gone".to_owned();
                    }
                    // The app answers with `Net::restart`: the next connection writes only
                    // frames made after it (from the app's new `Hello` on).
                    current = current.saturating_add(1);
                }
                attempt = attempt.saturating_add(1);
                // Wait, but not past the app leaving (it joins this thread when it drops `Net`).
                let until = tokio::time::Instant::now() + redial_delay(attempt);
                while tokio::time::Instant::now() < until {
                    if out.is_closed() {
                        return "left while offline".to_owned();
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                current = current.max(generation.load(Ordering::SeqCst));
            }
        }
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "one connection's life, read top to bottom"
)]
async fn run(
    addr: SocketAddr,
    pin: [u8; 32],
    out: &mut mpsc::UnboundedReceiver<Outgoing>,
    events: &std_mpsc::Sender<NetEvent>,
    generation: u64,
    attempt: &mut u32,
) -> Ended {
    let endpoint = match meshwork_quic_pin::endpoint(addr, pin) {
        Ok(e) => e,
        Err(e) => return Ended::Left(e),
    };
    let conn = match endpoint.connect(addr, "meshwork") {
        // A server that is down answers nothing: give up on this dial after a while and try
        // again, rather than wait for the whole idle timeout.
        Ok(c) => match tokio::time::timeout(DIAL_TIMEOUT, c).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Ended::Dropped(format!("QUIC connect to {addr}: {e}")),
            Err(_) => return Ended::Dropped(format!("QUIC connect to {addr}: no answer")),
        },
        Err(e) => return Ended::Left(format!("QUIC connect to {addr}: {e}")),
    };
    let (mut send, mut recv) = match conn.open_bi().await {
        Ok(s) => s,
        Err(e) => return Ended::Dropped(format!("stream: {e}")),
    };
    *attempt = 0;
    let reader_events = events.clone();
    let reader = tokio::spawn(async move {
        let mut frames = FrameReader::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match recv.read(&mut buf).await {
                Ok(Some(n)) => {
                    if frames.push(buf.get(..n).unwrap_or_default()).is_err() {
                        return "the server sent an oversized frame".to_owned();
                    }
                    loop {
                        match frames.next_msg::<ServerMsg>() {
                            Ok(Some(m)) => {
                                if reader_events.send(NetEvent::Msg(Box::new(m))).is_err() {
                                    return "closed".to_owned();
                                }
                            }
                            Ok(None) => break,
                            Err(e) => return format!("undecodable frame: {e}"),
                        }
                    }
                }
                Ok(None) => return "the server finished the stream".to_owned(),
                Err(e) => return format!("read: {e}"),
            }
        }
    });
    let datagrams_conn = conn.clone();
    let datagram_events = events.clone();
    let datagrams = tokio::spawn(async move {
        while let Ok(d) = datagrams_conn.read_datagram().await {
            if let Ok(Some((m, _))) = decode_frame::<ServerMsg>(&d) {
                let _ = datagram_events.send(NetEvent::Msg(Box::new(m)));
            }
        }
    });
    let mut reader = reader;
    let ended = loop {
        tokio::select! {
            next = out.recv() => match next {
                // Queued for a connection that dropped: the server would refuse it here.
                Some((g, _, _)) if g < generation => {}
                Some((_, false, frame)) => {
                    if let Err(e) = send.write_all(&frame).await {
                        break Ended::Dropped(format!("write: {e}"));
                    }
                }
                Some((_, true, frame)) => {
                    // Whole frames, header included, as the server's datagram lane expects.
                    let _ = conn.send_datagram(bytes::Bytes::from(frame));
                }
                None => {
                    let _ = send.finish();
                    conn.close(0u32.into(), b"leaving");
                    break Ended::Left("left".to_owned());
                }
            },
            done = &mut reader => {
                break Ended::Dropped(done.unwrap_or_else(|e| e.to_string()));
            }
        }
    };
    datagrams.abort();
    reader.abort();
    endpoint.close(0u32.into(), b"");
    ended
}

#[cfg(test)]
mod tests {
    use super::redial_delay;
    use std::time::Duration;

    #[test]
    fn redials_back_off_to_ten_seconds() {
        let waits: Vec<Duration> = (1..=8).map(redial_delay).collect();
        assert_eq!(waits[0], Duration::from_millis(500));
        assert_eq!(waits[1], Duration::from_secs(1));
        assert_eq!(waits[4], Duration::from_secs(8));
        assert!(waits[5..].iter().all(|w| *w == Duration::from_secs(10)));
    }
}
