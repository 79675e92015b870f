//! The typical session (`meshwork_testkit::typical`) played with every encoding of the
//! presence lane: the same session each time (same log, every replica converged, the late
//! joiner's too), and each lever saves bytes on that lane: `Motion` against `Presence` +
//! `Preview`, one pack per tick against a frame per message, the zstd dictionary against raw
//! packs. `meshwork-wire-budget` prints the full table for the benchmarks page.

use meshwork_testkit::typical::{
    Direction, Filter, PresenceForm, Report, Workload, is_presence_lane, play,
};

fn lane(r: &Report) -> (u64, u64) {
    (
        r.bytes(Direction::Up, is_presence_lane),
        r.bytes(Direction::Down, is_presence_lane),
    )
}

#[test]
fn each_presence_lever_carries_the_same_session_in_fewer_bytes() {
    let [legacy, motion, packed, compressed] =
        PresenceForm::ALL.map(|form| play(&Workload::typical(6, form)));
    for r in [&legacy, &motion, &packed, &compressed] {
        assert!(
            r.entries > 24,
            "everyone placed objects: {} entries",
            r.entries
        );
        assert_eq!(r.replica_hashes.len(), 8);
        assert!(
            r.replica_hashes.iter().all(|h| *h == r.server_hash),
            "every replica, the late joiner's too, equals the server's"
        );
        assert_eq!(r.server_hash, legacy.server_hash, "the same session");
        let others = |r: &Report, d| r.bytes(d, |k| !is_presence_lane(k) && k != "Codecs");
        for d in [Direction::Up, Direction::Down] {
            assert_eq!(
                others(r, d),
                others(&legacy, d),
                "only the presence lane differs"
            );
        }
    }
    let (old_up, old_down) = lane(&legacy);
    let (up, down) = lane(&motion);
    assert!(
        up * 4 <= old_up * 3 && down * 4 <= old_down * 3,
        "Motion: {up}/{down} B vs {old_up}/{old_down} B"
    );
    assert_eq!(
        motion.bytes(Direction::Up, |k| k == "Presence" || k == "Preview"),
        0
    );
    let (packed_up, packed_down) = lane(&packed);
    assert_eq!(packed_up, up, "packs change only what the server sends");
    assert!(
        packed_down < down,
        "one frame per tick: {packed_down} B vs {down} B"
    );
    assert_eq!(
        packed.bytes(Direction::Down, |k| k == "Motion"),
        0,
        "all of it packed"
    );
    let (_, compressed_down) = lane(&compressed);
    assert!(
        compressed_down * 4 <= packed_down * 3,
        "the dictionary: {compressed_down} B vs {packed_down} B"
    );
    // Context binding: every signed entry carried (up and down) is at least 27 bytes lighter
    // than in protocol version 1 (26 of context, one of the signature's length prefix).
    assert!(legacy.signed_entries > 0);
    assert!(
        legacy.bound_saved >= 27 * legacy.signed_entries,
        "{} B saved over {} entries",
        legacy.bound_saved,
        legacy.signed_entries
    );
    // Issue 17's bound: at least 60 % fewer bytes than one message per frame, unpacked (with
    // version-2 entries in both: the bound holds without what binding saved).
    assert!(
        compressed.total() * 100 <= legacy.total() * 40,
        "all levers: {} B vs {} B",
        compressed.total(),
        legacy.total()
    );
}

/// Sixteen members in four groups far apart, each asking for what is within 10 m: every
/// replica still converges (the log reaches everyone), and each member is delivered only its
/// own group's presence — three others of fifteen, a fifth of what it gets without interest.
#[test]
fn interest_keeps_presence_to_who_is_near() {
    let run = |view_m| {
        play(&Workload {
            view_m,
            filter: Filter::Presence,
            ..Workload::crowd(16, 3, 3, 200.0)
        })
    };
    let (all, near) = (run(None), run(Some(10.0)));
    for r in [&all, &near] {
        assert!(r.replica_hashes.iter().all(|h| *h == r.server_hash));
        assert!(r.relayed > 0);
    }
    assert!(
        near.relayed * 100 <= all.relayed * 25,
        "{} presence-lane messages delivered with interest vs {} without",
        near.relayed,
        all.relayed
    );
    assert!(
        near.relayed * 100 >= all.relayed * 15,
        "each group still sees itself"
    );
}

/// Sixteen members over a 200 m world of 3,000 entities, each working on what is within 10 m
/// (dragging, editing meshes, placing): holding only that region, each member is sent a small
/// part of the scene updates and of the presence lane, its replica ends equal to the server's
/// entities in its region (found by scanning the server's scene, not by the server's own
/// bookkeeping), and no one had to resync. The same workload every way: the server's scene
/// ends identical.
#[test]
fn members_holding_their_region_get_a_fraction_of_the_updates_and_stay_in_step() {
    let run = |filter| {
        play(&Workload {
            view_m: Some(10.0),
            filter,
            population: 3_000,
            ..Workload::crowd(16, 3, 5, 200.0)
        })
    };
    let (all, held) = (run(Filter::Nothing), run(Filter::PresenceAndScene));
    for r in [&all, &held] {
        assert_eq!(r.in_step.len(), 16);
        assert!(r.in_step.iter().all(|ok| *ok), "{:?}", r.in_step);
        assert_eq!(r.resyncs, 0);
        assert!(r.scene_entities > 3_000);
    }
    // The same work either way (a partial replica's Lamport clock moves only with what it is
    // sent, so the ids its entries get differ, and so does the scene's hash).
    assert_eq!(
        (all.entries, all.drags, all.scene_entities),
        (held.entries, held.drags, held.scene_entities),
        "the same session"
    );
    assert!(all.scene_updates > 0 && held.scene_updates > 0);
    let (a, h) = (
        all.scene_updates + all.relayed,
        held.scene_updates + held.relayed,
    );
    assert!(
        h * 100 <= a * 25,
        "{h} updates delivered holding regions vs {a} without ({} vs {} scene updates)",
        held.scene_updates,
        all.scene_updates
    );
    let snapshots =
        |r: &Report| r.bytes(Direction::Down, |k| k == "Snapshot" || k == "SnapshotChunk");
    assert!(
        snapshots(&held) * 10 < snapshots(&all),
        "joins get the held part: {} vs {} bytes",
        snapshots(&held),
        snapshots(&all)
    );
}
