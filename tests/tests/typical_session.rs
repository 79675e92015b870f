//! The typical session (`meshwork_testkit::typical`) played with both encodings of the presence
//! lane: the same session (same log, every replica converged, the late joiner too), and the
//! compact `Motion` form costs at most three quarters of the bytes of `Presence` + `Preview`
//! on that lane, both ways. `meshwork-wire-budget` prints the full table for the benchmarks page.

use meshwork_testkit::typical::{Direction, PresenceForm, Workload, is_presence_lane, play};

#[test]
fn motion_carries_the_same_session_in_fewer_presence_bytes() {
    let legacy = play(&Workload::typical(6, PresenceForm::Legacy));
    let motion = play(&Workload::typical(6, PresenceForm::Motion));
    for r in [&legacy, &motion] {
        assert!(r.entries > 24, "everyone placed objects: {} entries", r.entries);
        assert_eq!(r.replica_hashes.len(), 8);
        assert!(
            r.replica_hashes.iter().all(|h| *h == r.server_hash),
            "every replica, the late joiner's too, equals the server's"
        );
    }
    assert_eq!(legacy.server_hash, motion.server_hash, "the same session");
    let others = |r: &meshwork_testkit::typical::Report, d| r.bytes(d, |k| !is_presence_lane(k));
    for d in [Direction::Up, Direction::Down] {
        assert_eq!(others(&legacy, d), others(&motion, d), "only the presence lane differs");
        let (old, new) = (
            legacy.bytes(d, is_presence_lane),
            motion.bytes(d, is_presence_lane),
        );
        assert!(old > 0 && new > 0);
        assert!(new * 4 <= old * 3, "{d:?}: {new} B with Motion vs {old} B before");
    }
    assert_eq!(motion.bytes(Direction::Up, |k| k == "Presence" || k == "Preview"), 0);
    assert_eq!(legacy.bytes(Direction::Down, |k| k == "Motion"), 0);
}
