//! A seeded simulated network on a virtual clock: the sans-IO [`Session`] as host and N sans-IO
//! [`ClientConnection`]s, with latency, jitter, loss, reordering and duplication applied to
//! every frame after the join handshake. Same seed, same run, bit for bit: a failing seed
//! replays exactly ([`Sim::trace_hash`] fingerprints everything delivered).

#![allow(
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    reason = "simulation bookkeeping on virtual milliseconds and small counters"
)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use glam::{Quat, Vec3};
use meshwork_protocol::client::{ClientConnection, ClientPhase};
use meshwork_protocol::codec::{decode_payload, to_frame};
use meshwork_protocol::command::{Primitive, Transform};
use meshwork_protocol::wire::{ClientMsg, Invite, InviteBody, ServerMsg};
use meshwork_protocol::{
    AuthorId, Command, Domain, Ed25519Signer, EntityId, Role, SessionId, Signer as _, ToolId,
};
use meshwork_session::{ClientId, Config, Input, Output, Session};
use sha2::{Digest, Sha256};

/// Network conditions.
#[derive(Clone, Copy, Debug)]
pub struct NetConfig {
    /// One-way latency, ms.
    pub latency_ms: u64,
    /// Extra uniform random delay, ms.
    pub jitter_ms: u64,
    /// Probability a frame is lost.
    pub loss: f64,
    /// Probability a frame is held back long enough to overtake (reordering).
    pub reorder: f64,
    /// Probability a frame is delivered twice.
    pub duplicate: f64,
}

impl NetConfig {
    /// A perfect network with `latency_ms`.
    #[must_use]
    pub const fn clean(latency_ms: u64) -> Self {
        Self {
            latency_ms,
            jitter_ms: 0,
            loss: 0.0,
            reorder: 0.0,
            duplicate: 0.0,
        }
    }
}

/// SplitMix64.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        #[allow(
            clippy::cast_precision_loss,
            reason = "a probability needs 53 bits at most"
        )]
        let x = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        x < p
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Dest {
    Server(usize),
    Client(usize),
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Packet {
    at_ms: u64,
    order: u64,
    dest: Dest,
    payload: Vec<u8>,
}

/// One simulated client.
#[derive(Debug)]
pub struct SimClient {
    /// The sans-IO connection.
    pub conn: ClientConnection<Ed25519Signer>,
    /// Entities this client spawned and has not deleted.
    pub owned: Vec<EntityId>,
    next_entity: u32,
    /// Resyncs it asked for.
    pub resyncs: u64,
}

/// Host + clients + network.
#[derive(Debug)]
pub struct Sim {
    /// The authoritative session.
    pub session: Session,
    /// The clients.
    pub clients: Vec<SimClient>,
    net: NetConfig,
    rng: Rng,
    now_ms: u64,
    order: u64,
    queue: BinaryHeap<Reverse<Packet>>,
    trace: Sha256,
    /// Frames the network dropped.
    pub dropped: u64,
    /// Fan-outs the host sent as scene deltas.
    pub deltas: u64,
    /// Connections the host closed, with the reason (a healthy run has none).
    pub closed: Vec<(u64, String)>,
}

const FRAME_MS: u64 = 11; // 90 Hz
const SESSION: SessionId = SessionId([0x51; 16]);

impl Sim {
    /// A session with `clients` editors on `net`, everything derived from `seed`.
    #[must_use]
    pub fn new(seed: u64, clients: usize, net: NetConfig) -> Self {
        let mut rng = Rng::new(seed);
        let server_key = Ed25519Signer::from_seed(seed_bytes(&mut rng));
        let mut config = Config::new(SESSION, server_key.public_key());
        config.rate_per_s = 1000;
        config.burst = 1000;
        let now_ms = 1_800_000_000_000;
        let session = Session::new(config, seed_bytes(&mut rng), now_ms);
        let mut sim = Self {
            session,
            clients: Vec::new(),
            net,
            rng,
            now_ms,
            order: 0,
            queue: BinaryHeap::new(),
            trace: Sha256::new(),
            dropped: 0,
            closed: Vec::new(),
            deltas: 0,
        };
        for i in 0..clients {
            let body = InviteBody {
                domain: Domain::Invite,
                session: SESSION,
                role: Role::Editor,
                expires_at_ms: now_ms + 86_400_000,
                invite_id: [u8::try_from(i % 256).unwrap_or(0); 16],
            };
            let invite = Invite::mint(&body, &server_key).expect("invite domain is set");
            let signer = Ed25519Signer::from_seed(seed_bytes(&mut sim.rng));
            let conn = ClientConnection::new(signer, invite, "sim");
            sim.clients.push(SimClient {
                conn,
                owned: Vec::new(),
                next_entity: 0,
                resyncs: 0,
            });
            sim.session.handle_input(
                now_ms,
                Input::Connected {
                    client: ClientId(i as u64),
                },
            );
        }
        sim
    }

    /// The virtual time.
    #[must_use]
    pub const fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn send(&mut self, dest: Dest, payload: Vec<u8>, lossy: bool) {
        let mut at = self.now_ms + self.net.latency_ms;
        if lossy {
            if self.rng.chance(self.net.loss) {
                self.dropped += 1;
                return;
            }
            if self.net.jitter_ms > 0 {
                at += self.rng.below(self.net.jitter_ms + 1);
            }
            if self.rng.chance(self.net.reorder) {
                at += self.net.latency_ms.max(1) * 3;
            }
            if self.rng.chance(self.net.duplicate) {
                self.order += 1;
                let dup = Packet {
                    at_ms: at + 1,
                    order: self.order,
                    dest: copy(&dest),
                    payload: payload.clone(),
                };
                self.queue.push(Reverse(dup));
            }
        }
        self.order += 1;
        self.queue.push(Reverse(Packet {
            at_ms: at,
            order: self.order,
            dest,
            payload,
        }));
    }

    /// Runs one 11 ms frame: each joined client may issue commands (`workload`), the network
    /// delivers what is due, the host runs, everyone's output goes on the wire.
    pub fn frame(&mut self, workload: bool) {
        self.now_ms += FRAME_MS;
        if workload {
            for i in 0..self.clients.len() {
                if self.rng.chance(0.35) {
                    let cmds = self.random_commands(i);
                    if !cmds.is_empty() {
                        let _ = self.clients[i].conn.submit(cmds);
                    }
                }
            }
        }
        self.flush_clients();
        // Deliver everything due.
        while self
            .queue
            .peek()
            .is_some_and(|Reverse(p)| p.at_ms <= self.now_ms)
        {
            let Some(Reverse(p)) = self.queue.pop() else {
                break;
            };
            self.trace.update(p.at_ms.to_le_bytes());
            self.trace.update(&p.payload);
            match p.dest {
                Dest::Server(i) => {
                    let client = ClientId(i as u64);
                    self.session.handle_input(
                        self.now_ms,
                        Input::Payload {
                            client,
                            bytes: p.payload,
                        },
                    );
                }
                Dest::Client(i) => {
                    if let Ok(msg) = decode_payload::<ServerMsg>(&p.payload) {
                        let event = self.clients[i].conn.handle(&msg);
                        if event == meshwork_protocol::client::ClientEvent::Resyncing {
                            self.clients[i].resyncs += 1;
                        }
                    }
                }
            }
            self.pump_server();
            self.flush_clients();
        }
        if self
            .session
            .poll_timeout()
            .is_some_and(|t| t <= self.now_ms)
        {
            self.session.handle_input(self.now_ms, Input::Tick);
        }
        self.pump_server();
        self.flush_clients();
    }

    /// Carries out the host's outputs; the store acknowledges at once (in memory).
    fn pump_server(&mut self) {
        loop {
            let mut acks = Vec::new();
            while let Some(out) = self.session.poll_output() {
                match out {
                    Output::Send { client, frame, .. } => {
                        let payload = frame.get(4..).unwrap_or_default().to_vec();
                        let lossy = self.clients[client.0 as usize].conn.author().is_some()
                            && !matches!(
                                decode_payload::<ServerMsg>(&payload),
                                Ok(ServerMsg::Welcome(_))
                            );
                        self.send(Dest::Client(client.0 as usize), payload, lossy);
                    }
                    Output::Persist { batch, .. } => acks.push(batch),
                    Output::Close { client, reason } => {
                        self.closed.push((client.0, format!("{reason:?}")))
                    }
                    Output::Event(meshwork_session::Event::ProtocolViolation {
                        client,
                        reason,
                    }) => {
                        self.closed.push((client.0, reason.to_owned()));
                    }
                    Output::Event(meshwork_session::Event::DeltaSent) => self.deltas += 1,
                    Output::Event(_) => {}
                }
            }
            if acks.is_empty() {
                break;
            }
            for batch in acks {
                self.session
                    .handle_input(self.now_ms, Input::PersistAck { batch });
            }
        }
    }

    fn flush_clients(&mut self) {
        for i in 0..self.clients.len() {
            while let Some(msg) = self.clients[i].conn.poll_transmit() {
                let joined = matches!(self.clients[i].conn.phase(), ClientPhase::Joined(_));
                let lossy = joined && !matches!(msg, ClientMsg::Resync(_));
                let payload = to_frame(&msg)
                    .map(|f| f.get(4..).unwrap_or_default().to_vec())
                    .unwrap_or_default();
                self.send(Dest::Server(i), payload, lossy);
            }
        }
    }

    fn random_commands(&mut self, i: usize) -> Vec<Command> {
        let Some(author) = self.clients[i].conn.author() else {
            return Vec::new();
        };
        let pick = self.rng.below(10);
        let c = &mut self.clients[i];
        let any = |rng: &mut Rng, owned: &[EntityId]| {
            owned
                .get(usize::try_from(rng.below(owned.len() as u64)).unwrap_or(0))
                .copied()
        };
        let cmd = match pick {
            0 | 1 => {
                c.next_entity += 1;
                let entity = EntityId::new(author, c.next_entity);
                c.owned.push(entity);
                let primitive = [
                    Primitive::Cube,
                    Primitive::Pyramid,
                    Primitive::Plane,
                    Primitive::Cylinder,
                    Primitive::Sphere,
                ][usize::try_from(self.rng.below(5)).unwrap_or(0)];
                Command::Spawn {
                    entity,
                    primitive,
                    transform: Transform::IDENTITY,
                }
            }
            2 => match any(&mut self.rng, &c.owned) {
                Some(e) => {
                    c.owned.retain(|x| *x != e);
                    Command::Despawn { entity: e }
                }
                None => return Vec::new(),
            },
            3 | 4 => match any(&mut self.rng, &c.owned) {
                Some(e) => Command::Translate {
                    entity: e,
                    delta: Vec3::new(0.25, 0.0, -0.5),
                },
                None => return Vec::new(),
            },
            5 => match any(&mut self.rng, &c.owned) {
                Some(e) => Command::Rotate {
                    entity: e,
                    delta: Quat::from_rotation_y(0.3),
                },
                None => return Vec::new(),
            },
            6 => match any(&mut self.rng, &c.owned) {
                Some(e) => Command::Scale {
                    entity: e,
                    factor: Vec3::splat(1.1),
                },
                None => return Vec::new(),
            },
            7 => match any(&mut self.rng, &c.owned) {
                Some(e) => Command::Select { entities: vec![e] },
                None => Command::Select { entities: vec![] },
            },
            8 => Command::ToolActivate {
                tool: ToolId(u16::try_from(self.rng.below(3)).unwrap_or(0)),
                target: None,
            },
            _ => Command::ToolDeactivate {
                tool: ToolId(u16::try_from(self.rng.below(3)).unwrap_or(0)),
            },
        };
        vec![cmd]
    }

    /// Runs frames without new commands until every replica has loaded a snapshot and matches
    /// the host's scene, or `max_frames` pass. Returns whether they converged.
    pub fn settle(&mut self, max_frames: u32) -> bool {
        for _ in 0..max_frames {
            self.frame(false);
            if self.converged() {
                return true;
            }
        }
        false
    }

    /// Every replica's encoded scene equals the host's.
    #[must_use]
    pub fn converged(&self) -> bool {
        let host = self.session.scene().encode();
        self.clients
            .iter()
            .all(|c| c.conn.replica().is_synced() && c.conn.replica().scene().encode() == host)
    }

    /// Fingerprint of every delivered packet and its time.
    #[must_use]
    pub fn trace_hash(&self) -> [u8; 32] {
        self.trace.clone().finalize().into()
    }

    /// Authors that joined.
    #[must_use]
    pub fn joined(&self) -> Vec<AuthorId> {
        self.clients
            .iter()
            .filter_map(|c| c.conn.author())
            .collect()
    }
}

fn copy(d: &Dest) -> Dest {
    match d {
        Dest::Server(i) => Dest::Server(*i),
        Dest::Client(i) => Dest::Client(*i),
    }
}

fn seed_bytes(rng: &mut Rng) -> [u8; 32] {
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    out
}
