//! What every transport's connection does alike (QUIC streams, WebSocket messages, WebRTC
//! `log` channel messages): bytes in, whole frames out, counted once (`FramePump`); the
//! connection gauge kept right however a connection ends (`ConnectionGauge`).

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
