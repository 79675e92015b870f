//! What every transport's connection does alike (QUIC streams, WebSocket messages, WebRTC
//! `log` channel messages): bytes in, whole frames out, counted once (`FramePump`); the
//! connection gauge kept right however a connection ends (`ConnectionGauge`).

use meshwork_protocol::codec::{FRAME_HEADER_BYTES, frame_len};
use meshwork_protocol::{FrameError, FrameReader};

use crate::metrics::{Metrics, Transport};

/// Reassembles a connection's reliable byte stream into frame payloads (messages may split or
/// join frames), counting each payload in the transport's received metrics. After a bad frame
/// it takes nothing more: the connection ends.
#[derive(Debug)]
pub struct FramePump {
    reader: FrameReader,
    transport: Transport,
    failed: bool,
}

impl FramePump {
    /// A pump for a new connection of `transport`.
    #[must_use]
    pub fn new(transport: Transport) -> Self {
        Self {
            reader: FrameReader::new(),
            transport,
            failed: false,
        }
    }

    /// Feeds `bytes`; returns every payload they complete, in order, and at most one error
    /// last (a frame that ends the connection: oversized or malformed). Empty after a failure.
    pub fn feed(&mut self, bytes: &[u8], metrics: &Metrics) -> Vec<Result<Vec<u8>, FrameError>> {
        let mut out = Vec::new();
        if self.failed {
            return out;
        }
        if let Err(e) = self.reader.push(bytes) {
            self.failed = true;
            out.push(Err(e));
            return out;
        }
        loop {
            match self.reader.next_payload() {
                Ok(Some(payload)) => {
                    metrics.received(self.transport, payload.len());
                    out.push(Ok(payload));
                }
                Ok(None) => return out,
                Err(e) => {
                    self.failed = true;
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }

    /// A bad frame ended the stream.
    #[must_use]
    pub const fn failed(&self) -> bool {
        self.failed
    }
}

/// The payload of an unreliable-lane message (a QUIC datagram, a WebRTC `presence` message),
/// which must be exactly one frame, for the session to decode once. Anything else gives an
/// empty payload, which the session counts as dropped presence and otherwise ignores.
#[must_use]
pub fn datagram_payload(data: &[u8]) -> Vec<u8> {
    match frame_len(data) {
        Ok(Some(len)) if FRAME_HEADER_BYTES.checked_add(len) == Some(data.len()) => {
            data.get(FRAME_HEADER_BYTES..).unwrap_or_default().to_vec()
        }
        _ => Vec::new(),
    }
}

/// Counts an open connection in `meshwork_clients_connected{transport}` from its creation until
/// it is dropped, however the connection ends.
#[derive(Debug)]
pub struct ConnectionGauge {
    metrics: Metrics,
    transport: Transport,
}

impl ConnectionGauge {
    /// Counts one more open connection of `transport`.
    #[must_use]
    pub fn open(metrics: &Metrics, transport: Transport) -> Self {
        metrics
            .clients_connected
            .with_label_values(&[transport.as_str()])
            .inc();
        Self {
            metrics: metrics.clone(),
            transport,
        }
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.metrics
            .clients_connected
            .with_label_values(&[self.transport.as_str()])
            .dec();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use meshwork_protocol::codec::to_frame;
    use meshwork_protocol::wire::{ClientMsg, Ping};

    use super::*;

    #[test]
    fn the_pump_yields_whole_payloads_across_reads_and_stops_at_a_bad_frame() {
        let metrics = Metrics::new();
        let frame = to_frame(&ClientMsg::Ping(Ping { nonce: 7 })).unwrap();
        let two: Vec<u8> = frame.iter().chain(frame.iter()).copied().collect();
        let mut pump = FramePump::new(Transport::WebSocket);
        // Split inside the second frame: one payload now, the other with the rest.
        let cut = frame.len() + 2;
        let first = pump.feed(&two[..cut], &metrics);
        assert_eq!(first.len(), 1);
        assert!(first[0].is_ok());
        assert_eq!(pump.feed(&two[cut..], &metrics).len(), 1);
        // A header announcing more than a frame may hold ends the stream, and nothing after.
        let out = pump.feed(&u32::MAX.to_le_bytes(), &metrics);
        assert!(matches!(out.as_slice(), [Err(FrameError::TooLarge { .. })]));
        assert!(pump.failed());
        assert!(pump.feed(&frame, &metrics).is_empty());
    }

    #[test]
    fn a_datagram_is_one_frame_or_nothing() {
        let frame = to_frame(&ClientMsg::Ping(Ping { nonce: 7 })).unwrap();
        assert_eq!(
            datagram_payload(&frame),
            frame[FRAME_HEADER_BYTES..].to_vec()
        );
        let mut longer = frame.clone();
        longer.push(0);
        assert!(datagram_payload(&longer).is_empty());
        assert!(datagram_payload(&frame[..frame.len() - 1]).is_empty());
        assert!(datagram_payload(&[1, 2]).is_empty());
    }
}
