//! Convergence on the seeded simulated network: the sans-IO host and sans-IO clients, with
//! loss, reordering, jitter and duplication after the join. At the end every replica's
//! encoded scene is byte-identical to the host's (so are the state hashes).
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::collections::BTreeMap;

use meshwork_protocol::CommandKind;
use meshwork_protocol::scene::Geometry;
use meshwork_testkit::sim::{MESH_EDIT_KINDS, NetConfig, Sim};

/// 20 ms each way with 15 ms of jitter; 5 % of frames lost, 5 % held back to overtake, 1 %
/// delivered twice.
const LOSSY: NetConfig = NetConfig {
    latency_ms: 20,
    jitter_ms: 15,
    loss: 0.05,
    reorder: 0.05,
    duplicate: 0.01,
};

/// The roadmap case: host + 2 clients, 120 frames of mixed edits, drops that force resyncs.
#[test]
fn host_and_two_clients_converge_through_resyncs() {
    let net = NetConfig {
        latency_ms: 15,
        jitter_ms: 5,
        loss: 0.08,
        reorder: 0.0,
        duplicate: 0.0,
    };
    let mut forced = 0;
    for seed in [1u64, 2, 3, 4] {
        let mut sim = Sim::new(seed, 2, net);
        for _ in 0..120 {
            sim.frame(true);
        }
        assert_eq!(sim.joined().len(), 2, "seed {seed}: both clients joined");
        assert!(sim.settle(3000), "seed {seed}: replicas did not converge");
        assert!(
            !sim.session.scene().entities.is_empty(),
            "seed {seed}: the workload spawned entities"
        );
        let host = sim.session.scene().state_hash();
        for c in &sim.clients {
            assert_eq!(c.conn.replica().scene().state_hash(), host);
            assert_eq!(
                c.conn.replica().scene().encode(),
                sim.session.scene().encode()
            );
        }
        forced += sim.clients.iter().map(|c| c.resyncs).sum::<u64>();
    }
    assert!(
        forced > 0,
        "the drops never forced a resync: the test would not exercise it"
    );
}

/// The stronger case: host + 8 clients, 1000 frames, 5% loss + reordering + jitter, 3 seeds.
/// The workload includes mesh edits naming element ids from each client's (possibly stale)
/// replica: the host refuses the stale ones, and what it accepts every replica reproduces.
#[test]
fn host_and_eight_clients_converge_under_loss_reordering_and_jitter() {
    let net = LOSSY;
    let mut accepted_kinds = BTreeMap::new();
    let mut refused = BTreeMap::new();
    for seed in [11u64, 12, 13] {
        let mut sim = Sim::new(seed, 8, net);
        for _ in 0..1000 {
            sim.frame(true);
        }
        assert_eq!(sim.joined().len(), 8, "seed {seed}");
        assert!(sim.settle(5000), "seed {seed}: replicas did not converge");
        assert!(sim.dropped > 0);
        let host = sim.session.scene().encode();
        assert!(
            sim.clients
                .iter()
                .all(|c| c.conn.replica().scene().encode() == host),
            "seed {seed}"
        );
        assert!(
            sim.session.scene().position > 500,
            "seed {seed}: a real workload"
        );
        assert!(
            sim.closed.is_empty(),
            "seed {seed}: the host closed {:?}",
            sim.closed
        );
        // The mesh edits really happened: accepted into the log and visible in the scene.
        let accepted = sim.accepted_by_kind();
        let mesh_edits: u64 = MESH_EDIT_KINDS.iter().filter_map(|k| accepted.get(k)).sum();
        assert!(
            mesh_edits >= 100,
            "seed {seed}: only {mesh_edits} mesh edits accepted ({accepted:?})"
        );
        let edited = sim
            .session
            .scene()
            .entities
            .values()
            .filter(|e| matches!(e.geometry, Geometry::Mesh(_)))
            .count();
        // How many survive to the end depends on the random deletes; that the accepted edits
        // show in the scene (and in every replica, above) does not.
        assert!(
            edited >= 1,
            "seed {seed}: no entity holds an edited mesh after {mesh_edits} accepted mesh edits"
        );
        for (kind, n) in accepted {
            *accepted_kinds.entry(kind).or_insert(0u64) += n;
        }
        for (code, n) in &sim.refused {
            *refused.entry(*code).or_insert(0u64) += n;
        }
    }
    for kind in [CommandKind::Undo, CommandKind::Redo] {
        assert!(
            accepted_kinds.get(&kind).is_some_and(|n| *n > 0),
            "no {kind:?} was ever accepted: {accepted_kinds:?}"
        );
    }
    for kind in MESH_EDIT_KINDS {
        assert!(
            accepted_kinds.get(&kind).is_some_and(|n| *n > 0),
            "no {kind:?} was ever accepted: {accepted_kinds:?}"
        );
    }
    // Stale element ids are refused with typed refusals (and reordered submits as replays);
    // anything else means the workload built an invalid command or the host broke a rule.
    assert!(
        refused
            .keys()
            .all(|c| ["conflict", "topology", "replay", "undo"].contains(c)),
        "unexpected refusals: {refused:?}"
    );
    assert!(
        refused.get("conflict").is_some_and(|n| *n > 0)
            && refused.get("topology").is_some_and(|n| *n > 0),
        "stale or invalid mesh edits were never refused: {refused:?}"
    );
}

/// A failing seed reproduces exactly: same seed, same packets at the same times, same state.
#[test]
fn a_seed_replays_exactly() {
    let net = LOSSY;
    let run = |seed| {
        let mut sim = Sim::new(seed, 4, net);
        for _ in 0..300 {
            sim.frame(true);
        }
        (
            sim.trace_hash(),
            sim.session.scene().state_hash(),
            sim.dropped,
        )
    };
    assert_eq!(run(99), run(99));
    assert_ne!(run(99).0, run(100).0, "different seeds give different runs");
}

/// A drag: bursts of nudges to one entity coalesce into scene deltas, which converge too.
#[test]
fn bursts_of_edits_go_out_as_deltas_and_still_converge() {
    use glam::Vec3;
    use meshwork_protocol::command::{Primitive, Transform};
    use meshwork_protocol::{Command, EntityId};

    let net = NetConfig {
        latency_ms: 20,
        jitter_ms: 10,
        loss: 0.03,
        reorder: 0.02,
        duplicate: 0.0,
    };
    let mut sim = Sim::new(21, 3, net);
    while sim.joined().len() < 3 {
        sim.frame(false);
    }
    let author = sim.clients[0].conn.author().unwrap();
    let e = EntityId::new(author, 1000);
    let spawn = Command::Spawn {
        entity: e,
        primitive: Primitive::Cube,
        transform: Transform::IDENTITY,
    };
    sim.clients[0].conn.submit(vec![spawn]).unwrap();
    for _ in 0..30 {
        sim.frame(false);
    }
    for _ in 0..200 {
        let nudges = (0..8)
            .map(|_| Command::Translate {
                entity: e,
                delta: Vec3::new(0.01, 0.0, 0.0),
            })
            .collect();
        sim.clients[0].conn.submit(nudges).unwrap();
        sim.frame(true);
    }
    assert!(sim.settle(3000), "replicas did not converge");
    assert!(
        sim.deltas > 0,
        "no fan-out went out as a delta: that path is untested"
    );
    let host = sim.session.scene().encode();
    assert!(
        sim.clients
            .iter()
            .all(|c| c.conn.replica().scene().encode() == host)
    );
}

/// Half the clients hold only the half of the world with x ≥ 0 (partial replicas,
/// `ClientMsg::Hold`), on a network that loses, reorders and duplicates frames, while everyone
/// edits and moves things across the boundary: each partial replica ends holding exactly the
/// host's entities on its side (checked against a scan of the host's scene), the others the
/// whole scene, through the resyncs the losses cause.
#[test]
fn partial_replicas_converge_under_loss_reordering_and_jitter() {
    use meshwork_protocol::interest::Region;
    let net = LOSSY;
    let half = Region {
        min_mm: [0, -2_000_000_000, -2_000_000_000],
        max_mm: [2_000_000_000; 3],
    };
    for seed in [41u64, 42] {
        let mut sim = Sim::new(seed, 6, net);
        for i in [1, 3, 5] {
            sim.hold(i, half);
        }
        for _ in 0..800 {
            sim.frame(true);
        }
        assert_eq!(sim.joined().len(), 6, "seed {seed}");
        assert!(sim.settle(5000), "seed {seed}: replicas did not converge");
        assert!(sim.dropped > 0);
        assert!(sim.closed.is_empty(), "seed {seed}: {:?}", sim.closed);
        let host = sim.session.scene().entities.len();
        for i in [1, 3, 5] {
            let held = sim.clients[i].conn.replica().scene().entities.len();
            assert!(
                held > 0 && held < host,
                "seed {seed}: client {i} holds {held} of {host}"
            );
        }
        assert!(
            sim.session.scene().position > 400,
            "seed {seed}: a real workload"
        );
    }
}
