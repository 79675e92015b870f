//! What every transport's connection does alike (QUIC streams, WebSocket messages, WebRTC
//! `log` channel messages): bytes in, whole frames out, counted once (`FramePump`); the
//! connection gauge kept right however a connection ends (`ConnectionGauge`); `Submit`s paced
//! at the session's rate (`SubmitPacer`) and their signatures checked in the connection's own
//! task (`SubmitVerifier`).

use std::time::{Duration, Instant};

use meshwork_protocol::codec::decode_payload;
use meshwork_protocol::codec::{FRAME_HEADER_BYTES, frame_len};
use meshwork_protocol::sign::ReadyKey;
use meshwork_protocol::wire::ClientMsg;
use meshwork_protocol::{FrameError, FrameReader, PublicKey, SessionId};
use meshwork_session::{ClientId, Input};
use tokio::sync::watch;

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

/// What every stream connection is held to: its outbox, and the pace of its `Submit`s.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Frames queued for the client before it is too slow.
    pub outbox: usize,
    /// The session's commands per author per second.
    pub rate_per_s: u32,
    /// The session's burst of commands per author.
    pub burst: u32,
}

impl ConnLimits {
    /// The limits the server's settings give every stream connection.
    #[must_use]
    pub const fn of(settings: &crate::config::Settings) -> Self {
        Self {
            outbox: settings.outbox_frames,
            rate_per_s: settings.rate_per_s,
            burst: settings.burst,
        }
    }
}

/// The fewest bytes a signed entry takes in a `Submit`: its 64-byte signature and the two
/// length prefixes.
const MIN_ENTRY_BYTES: usize = 66;

/// Paces a connection's `Submit`s at the session's command rate before they reach the session:
/// the reader waits instead of passing on entries past the rate, so it stops reading and the
/// transport's flow control pushes back on the sender. A flood costs the server no decoding,
/// no refusals and no room in the session's inbox, and an honest client sending a backlog
/// (edits made offline) has it accepted at the rate instead of refused. The session's own
/// per-author bucket stays the authority.
#[derive(Debug)]
pub struct SubmitPacer {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl SubmitPacer {
    /// A full bucket.
    #[must_use]
    pub fn new(limits: ConnLimits, now: Instant) -> Self {
        let burst = f64::from(limits.burst.max(1));
        Self {
            rate: f64::from(limits.rate_per_s.max(1)),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// How long to wait before passing `payload` on: zero for anything but a `Submit`, or while
    /// the bucket holds its entries. Takes the entries' tokens (a batch larger than the burst
    /// waits for a full bucket and leaves it in debt, of at most one more burst). The count is
    /// the one the payload announces, but never more entries than its bytes can hold: a forged
    /// count buys no long wait. The longest wait is two bursts' worth.
    pub fn delay(&mut self, payload: &[u8], now: Instant) -> Duration {
        let Some(announced) = ClientMsg::submit_entry_count(payload) else {
            return Duration::ZERO;
        };
        let room = u64::try_from(payload.len() / MIN_ENTRY_BYTES).unwrap_or(u64::MAX);
        #[expect(
            clippy::cast_precision_loss,
            reason = "bounded by the frame size: far below 2^52"
        )]
        let count = announced.min(room) as f64;
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = elapsed.mul_add(self.rate, self.tokens).min(self.burst);
        self.last = now;
        let need = count.min(self.burst);
        let wait = if self.tokens >= need {
            Duration::ZERO
        } else {
            let secs = (need - self.tokens) / self.rate;
            let wait = Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO);
            self.tokens = need;
            self.last = now.checked_add(wait).unwrap_or(now);
            wait
        };
        self.tokens = (self.tokens - count).max(-self.burst);
        wait
    }
}

/// Checks the signatures of a connection's `Submit`s in the connection's own task, before the
/// session sees them: every connection's submits verify in parallel on whatever core runs its
/// task, and the session's driver, which orders every connection's entries one at a time, only
/// orders ([`Input::VerifiedSubmit`]). The key is the one the connection's first frame, its
/// `Hello`, named; the session checks that it is the submitting member's. Anything else, or a
/// `Submit` with any entry that does not verify under that key, goes to the session as it came
/// (which finds, refuses and counts what is wrong, exactly as before).
#[derive(Debug, Default)]
pub struct SubmitVerifier {
    first_seen: bool,
    /// The `Hello`'s key, decompressed once for every `Submit` of the connection, and the
    /// session its invite names (what a version-2 entry's signature binds).
    key: Option<(PublicKey, ReadyKey, SessionId)>,
}

impl SubmitVerifier {
    /// The session's input for `payload`, the connection's next whole frame.
    pub fn input(&mut self, client: ClientId, payload: Vec<u8>) -> Input {
        if !self.first_seen {
            self.first_seen = true;
            if let Ok(ClientMsg::Hello(hello)) = decode_payload::<ClientMsg>(&payload) {
                self.key = ReadyKey::new(&hello.public_key)
                    .zip(hello.invite.claimed_session())
                    .map(|(k, session)| (hello.public_key, k, session));
            }
        } else if let Some((key, ready, session)) = &self.key
            && ClientMsg::payload_is_submit(&payload)
            && let Ok(ClientMsg::Submit(submit)) = decode_payload::<ClientMsg>(&payload)
            && ready.signed_all(*session, &submit.entries)
        {
            return Input::VerifiedSubmit {
                client,
                entries: submit.entries,
                signed_by: *key,
                session: *session,
            };
        }
        Input::Payload {
            client,
            bytes: payload,
        }
    }
}

/// What a stream connection (QUIC, WebSocket) does with each whole frame before the session
/// sees it: a `Submit` waits for the session's rate ([`SubmitPacer`], counted `submit_paced`)
/// and has its signatures checked here ([`SubmitVerifier`]). WebRTC uses the verifier alone:
/// its peers' input is bounded where it is queued.
#[derive(Debug)]
pub struct SubmitGate {
    pacer: SubmitPacer,
    verifier: SubmitVerifier,
}

impl SubmitGate {
    /// For a new connection.
    #[must_use]
    pub fn new(limits: ConnLimits) -> Self {
        Self {
            pacer: SubmitPacer::new(limits, Instant::now()),
            verifier: SubmitVerifier::default(),
        }
    }

    /// The session's input for `payload`, after any wait the pace asks for; `None` when the
    /// session closed the connection meanwhile (`closing` set by the driver): nothing more of
    /// it is passed on.
    pub async fn pass(
        &mut self,
        client: ClientId,
        payload: Vec<u8>,
        closing: &mut watch::Receiver<bool>,
        metrics: &Metrics,
    ) -> Option<Input> {
        let wait = self.pacer.delay(&payload, Instant::now());
        if !wait.is_zero() {
            metrics.rejected("submit_paced");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = closing.wait_for(|c| *c) => return None,
            }
        }
        Some(self.verifier.input(client, payload))
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

    fn submit(n: usize) -> Vec<u8> {
        let entry = meshwork_protocol::SignedEntry {
            body: vec![1, 2, 3],
            signature: meshwork_protocol::sign::Signature([0; 64]),
        };
        postcard::to_allocvec(&ClientMsg::Submit(meshwork_protocol::wire::Submit {
            entries: vec![entry; n],
        }))
        .unwrap()
    }

    #[test]
    fn submits_past_the_rate_wait_and_other_messages_never_do() {
        let limits = ConnLimits {
            outbox: 16,
            rate_per_s: 100,
            burst: 50,
        };
        let t0 = Instant::now();
        let mut p = SubmitPacer::new(limits, t0);
        // The burst passes at once; the next 10 entries wait 100 ms; a ping never waits.
        assert_eq!(p.delay(&submit(50), t0), Duration::ZERO);
        let wait = p.delay(&submit(10), t0);
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        let ping = postcard::to_allocvec(&ClientMsg::Ping(Ping { nonce: 1 })).unwrap();
        assert_eq!(p.delay(&ping, t0), Duration::ZERO);
        // After that wait the bucket is empty again: one more entry waits 10 ms more.
        let wait = p.delay(&submit(1), t0 + Duration::from_millis(100));
        assert!((wait.as_secs_f64() - 0.01).abs() < 1e-6, "{wait:?}");
        // A batch larger than the burst waits for a full bucket, then passes, leaving a debt of
        // at most one burst (the session refuses what is past its own bucket).
        let later = t0 + Duration::from_secs(10);
        assert_eq!(p.delay(&submit(200), later), Duration::ZERO);
        let wait = p.delay(&submit(1), later);
        assert!((wait.as_secs_f64() - 0.51).abs() < 1e-6, "{wait:?}");
        // A forged count (2^60 entries in a few bytes) is held to what the bytes can hold.
        let mut forged = vec![ClientMsg::SUBMIT_TAG];
        forged.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]);
        let mut f = SubmitPacer::new(limits, t0);
        assert_eq!(f.delay(&forged, t0), Duration::ZERO);
        assert_eq!(f.delay(&submit(1), t0), Duration::ZERO);
        // However large the (real) batch, the debt stays one burst.
        let mut h = SubmitPacer::new(limits, t0);
        assert_eq!(h.delay(&submit(10_000), t0), Duration::ZERO);
        let wait = h.delay(&submit(1), t0);
        assert!((wait.as_secs_f64() - 0.51).abs() < 1e-6, "{wait:?}");
        // Sustained at the rate: no waiting.
        let mut q = SubmitPacer::new(limits, t0);
        for i in 1..=1000u64 {
            let at = t0 + Duration::from_millis(10 * i);
            assert_eq!(q.delay(&submit(1), at), Duration::ZERO);
        }
    }

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

    #[test]
    fn submits_signed_by_the_hellos_key_are_verified_here_and_anything_else_goes_on_as_it_came() {
        use meshwork_protocol::sign::{Domain, EntryBody, Signer};
        use meshwork_protocol::wire::{Hello, Invite, InviteBody, Submit};
        use meshwork_protocol::{AuthorId, Command, Ed25519Signer, Role, SessionId, SignedEntry};

        let session = SessionId([3; 16]);
        let (key, other) = (
            Ed25519Signer::from_seed([1; 32]),
            Ed25519Signer::from_seed([2; 32]),
        );
        let server = Ed25519Signer::from_seed([9; 32]);
        let invite = Invite::mint(
            &InviteBody {
                domain: Domain::Invite,
                session,
                role: Role::Editor,
                expires_at_ms: u64::MAX,
                invite_id: [1; 16],
            },
            &server,
        )
        .unwrap();
        let hello = postcard::to_allocvec(&ClientMsg::Hello(Hello {
            protocol_version: meshwork_protocol::PROTOCOL_VERSION,
            build_id: "test".into(),
            public_key: key.public_key(),
            invite,
        }))
        .unwrap();
        let signed = |by: &Ed25519Signer, seq: u64| {
            let body = EntryBody::new(
                session,
                AuthorId(1),
                by.public_key().key_id(),
                seq,
                seq,
                0,
                Command::Select { entities: vec![] },
            );
            SignedEntry::sign(&body, by).unwrap()
        };
        let submit = |entries: Vec<SignedEntry>| {
            postcard::to_allocvec(&ClientMsg::Submit(Submit { entries })).unwrap()
        };
        let client = ClientId(1);
        let verified = |input: &Input| matches!(input, Input::VerifiedSubmit { signed_by, .. } if *signed_by == key.public_key());

        let mut v = SubmitVerifier::default();
        assert!(matches!(
            v.input(client, hello.clone()),
            Input::Payload { .. }
        ));
        let good = v.input(client, submit(vec![signed(&key, 1), signed(&key, 2)]));
        assert!(verified(&good), "{good:?}");
        let mut forged = signed(&key, 3);
        forged.signature.0[0] ^= 1;
        let bad = submit(vec![signed(&key, 3), forged]);
        assert_eq!(
            v.input(client, bad.clone()),
            Input::Payload { client, bytes: bad },
            "one bad signature: the session checks and names it"
        );
        let foreign = submit(vec![signed(&other, 4)]);
        assert!(matches!(v.input(client, foreign), Input::Payload { .. }));
        let ping = postcard::to_allocvec(&ClientMsg::Ping(Ping { nonce: 1 })).unwrap();
        assert!(matches!(v.input(client, ping), Input::Payload { .. }));

        // Only the first frame names the key: a later Hello (out of phase) changes nothing,
        // and a connection that did not start with one gets nothing verified.
        let mut late = SubmitVerifier::default();
        assert!(matches!(
            late.input(client, submit(vec![signed(&key, 1)])),
            Input::Payload { .. }
        ));
        assert!(matches!(late.input(client, hello), Input::Payload { .. }));
        assert!(matches!(
            late.input(client, submit(vec![signed(&key, 2)])),
            Input::Payload { .. }
        ));
    }
}
