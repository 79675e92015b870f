//! The network thread: QUIC (quinn) to the server in the join ticket, pinned to the
//! certificate fingerprint the ticket carries (the server's certificate is self-signed by
//! default, so there is no CA to trust). The render loop never waits on the network: it hands
//! frames over and polls what arrived, through channels.

use std::net::{SocketAddr, ToSocketAddrs as _};
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
    /// The connection is gone, and why.
    Closed(String),
}

/// Handle to the network thread.
#[derive(Debug)]
pub struct Net {
    out: mpsc::UnboundedSender<(bool, Vec<u8>)>,
    events: std_mpsc::Receiver<NetEvent>,
    thread: Option<std::thread::JoinHandle<()>>,
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
                let reason = rt.block_on(run(addr, pin, out_rx, ev_tx.clone()));
                let _ = ev_tx.send(NetEvent::Closed(reason));
            })
            .map_err(|e| e.to_string())?;
        Ok(Self {
            out,
            events,
            thread: Some(thread),
        })
    }

    /// Sends a message on the reliable stream.
    pub fn send(&self, msg: &ClientMsg) {
        if let Ok(frame) = to_frame(msg) {
            let _ = self.out.send((false, frame));
        }
    }

    /// Sends a message as a datagram (presence: best effort).
    pub fn send_datagram(&self, msg: &ClientMsg) {
        if let Ok(frame) = to_frame(msg) {
            let _ = self.out.send((true, frame));
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

async fn run(
    addr: SocketAddr,
    pin: [u8; 32],
    mut out: mpsc::UnboundedReceiver<(bool, Vec<u8>)>,
    events: std_mpsc::Sender<NetEvent>,
) -> String {
    let endpoint = match meshwork_quic_pin::endpoint(addr, pin) {
        Ok(e) => e,
        Err(e) => return e,
    };
    let conn = match endpoint.connect(addr, "meshwork") {
        Ok(c) => match c.await {
            Ok(c) => c,
            Err(e) => return format!("QUIC connect to {addr}: {e}"),
        },
        Err(e) => return format!("QUIC connect to {addr}: {e}"),
    };
    let (mut send, mut recv) = match conn.open_bi().await {
        Ok(s) => s,
        Err(e) => return format!("stream: {e}"),
    };
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
    let reason = loop {
        tokio::select! {
            next = out.recv() => match next {
                Some((false, frame)) => {
                    if let Err(e) = send.write_all(&frame).await {
                        break format!("write: {e}");
                    }
                }
                Some((true, frame)) => {
                    // Whole frames, header included, as the server's datagram lane expects.
                    let _ = conn.send_datagram(bytes::Bytes::from(frame));
                }
                None => {
                    let _ = send.finish();
                    conn.close(0u32.into(), b"leaving");
                    break "left".to_owned();
                }
            },
            done = &mut reader => break done.unwrap_or_else(|e| e.to_string()),
        }
    };
    datagrams.abort();
    endpoint.wait_idle().await;
    reason
}
