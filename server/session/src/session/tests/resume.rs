//! Reconnecting: a client whose connection dropped keeps its replica and its unacknowledged
//! entries, signs edits while disconnected, and on rejoining is caught up by a sealed delta from
//! its position (no snapshot); its entries go again exactly once and are judged like any
//! concurrent entry.

use std::collections::BTreeMap;

use meshwork_protocol::client::{ClientConnection, ClientEvent};
use meshwork_protocol::{Primitive, Transform};

use super::*;

/// The session and the clients' protocol machines, wired by hand: every frame a machine queues
/// goes to the session, every frame the session sends goes to the machine of that connection,
/// and every persistence batch is acknowledged at once.
pub(super) struct World {
    pub(super) h: Harness,
    pub(super) conns: BTreeMap<ClientId, ClientConnection<Ed25519Signer>>,
    /// What each connection was sent, in order.
    pub(super) received: BTreeMap<ClientId, Vec<ServerMsg>>,
    pub(super) events: BTreeMap<ClientId, Vec<ClientEvent>>,
}

impl World {
    pub(super) fn new() -> Self {
        let mut h = Harness::new();
        h.session.config.rate_per_s = 10_000;
        h.session.config.burst = 10_000;
        Self {
            h,
            conns: BTreeMap::new(),
            received: BTreeMap::new(),
            events: BTreeMap::new(),
        }
    }

    pub(super) fn connect(&mut self, client: ClientId, conn: ClientConnection<Ed25519Signer>) {
        let out = self.h.input(Input::Connected { client });
        self.conns.insert(client, conn);
        self.deliver(out);
        self.pump();
    }

    pub(super) fn join(&mut self, client: ClientId, seed: u8) {
        let invite = self.h.invite(Role::Editor, NOW + 60_000);
        let conn = ClientConnection::new(Ed25519Signer::from_seed([seed; 32]), invite, "test");
        self.connect(client, conn);
    }

    pub(super) fn deliver(&mut self, out: Vec<Output>) {
        let mut batches = Vec::new();
        for o in &out {
            match o {
                Output::Send { client, frame, .. } => {
                    let msg = decode_frame::<ServerMsg>(frame).unwrap().unwrap().0;
                    if let Some(conn) = self.conns.get_mut(client) {
                        let event = conn.handle(&msg);
                        self.events.entry(*client).or_default().push(event);
                        self.received.entry(*client).or_default().push(msg);
                    }
                }
                Output::Persist { batch, .. } => batches.push(*batch),
                _ => {}
            }
        }
        for batch in batches {
            let out = self.h.input(Input::PersistAck { batch });
            self.deliver(out);
        }
    }

    /// Until no machine has anything to send.
    pub(super) fn pump(&mut self) {
        loop {
            let mut sent = false;
            let ids: Vec<ClientId> = self.conns.keys().copied().collect();
            for id in ids {
                while let Some(msg) = self.conns.get_mut(&id).and_then(|c| c.poll_transmit()) {
                    sent = true;
                    let out = self.h.send(id, &msg);
                    self.deliver(out);
                }
            }
            if !sent {
                return;
            }
        }
    }

    pub(super) fn submit(&mut self, client: ClientId, commands: Vec<Command>) -> Vec<u64> {
        let entries = self
            .conns
            .get_mut(&client)
            .unwrap()
            .submit(commands)
            .unwrap();
        entries
            .iter()
            .map(|e| e.decode_body().unwrap().seq)
            .collect()
    }

    pub(super) fn hash(&self, client: ClientId) -> [u8; 32] {
        self.conns[&client].replica().scene().state_hash()
    }
}

pub(super) fn cube(entity: EntityId) -> Command {
    Command::Spawn {
        entity,
        primitive: Primitive::Cube,
        transform: Transform::IDENTITY,
    }
}

#[test]
fn a_reconnecting_client_resumes_by_delta_and_its_offline_edits_are_judged_once() {
    let mut w = World::new();
    w.join(C1, 1);
    w.join(C2, 2);
    let a = w.conns[&C1].author().unwrap();
    let (x1, x2) = (EntityId::new(a, 1), EntityId::new(a, 2));
    w.submit(C1, vec![cube(x1), cube(x2)]);
    w.pump();
    assert_eq!(w.h.session.scene().entities.len(), 2);

    // A's connection drops; B deletes x2 meanwhile.
    let out = w.h.input(Input::Disconnected { client: C1 });
    w.deliver(out);
    let mut a_conn = w.conns.remove(&C1).unwrap();
    // The application tells its machine at once; the Hello waits for a new transport.
    a_conn.reconnect();
    w.submit(C2, vec![Command::Despawn { entity: x2 }]);
    // And adds y, which A will see only through the catch-up delta, stamped later than
    // anything A has or will send (B's clock runs on while A is away).
    let y = EntityId::new(w.conns[&C2].author().unwrap(), 1);
    w.submit(C2, vec![Command::Select { entities: vec![] }; 6]);
    w.submit(C2, vec![cube(y)]);
    w.pump();

    // Offline, A deletes x2 too (a conflict: a second delete is refused) and adds x3.
    let x3 = EntityId::new(a, 3);
    let offline = a_conn
        .submit(vec![Command::Despawn { entity: x2 }, cube(x3)])
        .expect("signed while disconnected");
    assert_eq!(a_conn.unacked().count(), 2, "kept for the reconnect");
    let seqs: Vec<u64> = offline
        .iter()
        .map(|e| e.decode_body().unwrap().seq)
        .collect();

    // A reconnects on a new connection.
    let c3 = ClientId(3);
    w.connect(c3, a_conn);
    let got = &w.received[&c3];
    assert!(
        !got.iter().any(|m| matches!(m, ServerMsg::Snapshot(_))),
        "caught up by a delta, not a snapshot: {got:?}"
    );
    assert!(got.iter().any(|m| matches!(m, ServerMsg::SealedDelta(_))));
    // Judged like any concurrent entry: the delete refused as a conflict, the add accepted.
    let refused: Vec<(u64, RefusalCode)> = got
        .iter()
        .filter_map(|m| match m {
            ServerMsg::CommandRefused(r) => Some((r.seq, r.code)),
            _ => None,
        })
        .collect();
    assert_eq!(refused, vec![(seqs[0], RefusalCode::Conflict)]);
    let acked: Vec<u64> = got
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Ack(k) => Some(k.seq),
            _ => None,
        })
        .collect();
    assert_eq!(acked, vec![seqs[1]]);
    assert_eq!(w.conns[&c3].unacked().count(), 0);
    assert!(
        !w.events[&c3]
            .iter()
            .any(|e| matches!(e, ClientEvent::Resyncing(_))),
        "{:?}",
        w.events[&c3]
    );
    // Nothing lost or doubled: one entity each, every replica at the server's state.
    let scene = w.h.session.scene();
    assert_eq!(
        scene.entities.keys().copied().collect::<Vec<_>>(),
        vec![x1, x3, y]
    );
    assert_eq!(w.hash(c3), scene.state_hash());
    assert_eq!(w.hash(C2), scene.state_hash());

    // A deletes y now: it has seen y's spawn (through the delta), so this is no conflict.
    let before = w.received[&c3].len();
    let seq = w.submit(c3, vec![Command::Despawn { entity: y }])[0];
    w.pump();
    let answers = &w.received[&c3][before..];
    assert!(
        answers
            .iter()
            .any(|m| matches!(m, ServerMsg::Ack(k) if k.seq == seq)),
        "what the catch-up delta showed counts as seen: {answers:?}"
    );
    assert!(!w.h.session.scene().entities.contains_key(&y));

    // A drop after the server made an entry durable but before its ack was read: the entry goes
    // again on the next connection and is acknowledged again, not applied twice.
    let x4 = EntityId::new(a, 4);
    let mut a_conn = w.conns.remove(&c3).unwrap();
    let entries = a_conn.submit(vec![cube(x4)]).unwrap();
    let seq = entries[0].decode_body().unwrap().seq;
    while let Some(msg) = a_conn.poll_transmit() {
        // Reaches the server; what the server answers is lost with the connection.
        let out = w.h.send(c3, &msg);
        w.deliver(out);
    }
    let out = w.h.input(Input::Disconnected { client: c3 });
    w.deliver(out);
    let position = w.h.session.scene().position;
    assert_eq!(a_conn.unacked().count(), 1);
    a_conn.reconnect();
    let c4 = ClientId(4);
    w.connect(c4, a_conn);
    let acked: Vec<u64> = w.received[&c4]
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Ack(k) => Some(k.seq),
            _ => None,
        })
        .collect();
    assert_eq!(acked, vec![seq], "acknowledged again");
    assert_eq!(w.h.session.scene().position, position, "not applied twice");
    assert_eq!(w.conns[&c4].unacked().count(), 0);
    assert_eq!(w.hash(c4), w.h.session.scene().state_hash());
}

/// More offline edits than the server's burst: they go a `Submit` at a time, those refused for
/// the rate go again (as they were signed) once the rate allows, and every one lands, in order,
/// exactly once.
#[test]
fn offline_edits_past_the_rate_limit_all_land_in_order() {
    let mut w = World::new();
    // The server's defaults: 200 commands a second, bursts of 400.
    w.h.session.config.rate_per_s = 200;
    w.h.session.config.burst = 400;
    w.join(C1, 1);
    let a = w.conns[&C1].author().unwrap();
    let out = w.h.input(Input::Disconnected { client: C1 });
    w.deliver(out);
    let mut a_conn = w.conns.remove(&C1).unwrap();
    a_conn.reconnect();
    let n = 1000;
    let spawns: Vec<Command> = (1..=n).map(|k| cube(EntityId::new(a, k))).collect();
    let seqs: Vec<u64> = a_conn
        .submit(spawns)
        .expect("kept while disconnected")
        .iter()
        .map(|e| e.decode_body().unwrap().seq)
        .collect();

    let c = ClientId(3);
    w.connect(c, a_conn);
    let start = w.h.now;
    // The application's clock runs on; each tick lets what waits for the rate go again.
    for _ in 0..20 {
        if w.conns[&c].unacked().count() == 0 {
            break;
        }
        w.h.now += 250;
        let now = w.h.now;
        w.conns.get_mut(&c).unwrap().tick(now);
        w.pump();
    }
    assert_eq!(w.conns[&c].unacked().count(), 0, "every one judged");
    let got = &w.received[&c];
    let acked: Vec<u64> = got
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Ack(k) => Some(k.seq),
            _ => None,
        })
        .collect();
    assert_eq!(acked, seqs, "each acknowledged once, in order");
    let limited = got
        .iter()
        .filter(|m| matches!(m, ServerMsg::CommandRefused(r) if r.code == RefusalCode::RateLimited))
        .count();
    assert!(limited > 0, "the burst was exceeded, and that cost nothing");
    assert!(
        !got.iter().any(
            |m| matches!(m, ServerMsg::CommandRefused(r) if r.code != RefusalCode::RateLimited)
        ),
        "no other refusal"
    );
    assert_eq!(w.h.session.scene().entities.len(), 1000);
    assert_eq!(w.hash(c), w.h.session.scene().state_hash());
    // At the rate: 400 at once, then 200 a second.
    assert!(w.h.now - start >= 3000, "paced, {} ms", w.h.now - start);
}
