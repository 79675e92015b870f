//! Spatial interest: the part of the world a client wants the presence lane of, and the part of
//! the scene it holds.
//!
//! - [`Interest`]: a client with a [`Region`] is sent others' presence, previews and selections
//!   only where they touch it (with a region of its own, nobody's avatar a kilometre away costs
//!   it a byte); a client without one gets all of it.
//! - [`Hold`]: a client with a region holds only the entities whose origin is inside it (a
//!   *partial replica*): it is sent the entries on what it holds, the state of what comes into
//!   the region and word of what leaves it ([`crate::wire::Held`]), and state hashes of what it
//!   holds. A client without one holds the whole scene and is sent every entry (the default).

#![allow(
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "float vector sums (no overflow: an infinity clamps like any far value), and \
              metres to millimetres clamped to the i32 range before the cast"
)]

use alloc::vec::Vec;

use glam::Vec3;
use serde::{Deserialize, Serialize};

/// An axis-aligned box of the scene, in millimetres (bounds included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    /// The lowest corner.
    pub min_mm: [i32; 3],
    /// The highest corner.
    pub max_mm: [i32; 3],
}

fn mm(metres: f32) -> i32 {
    let v = (metres * 1000.0).round();
    if v.is_nan() {
        0
    } else {
        v.clamp(-2.0e9, 2.0e9) as i32
    }
}

/// A position in metres as the millimetres regions are in.
#[must_use]
pub fn point_mm(position_m: Vec3) -> [i32; 3] {
    [mm(position_m.x), mm(position_m.y), mm(position_m.z)]
}

impl Region {
    /// The cube of half-edge `half_extent_m` metres around `center_m`.
    #[must_use]
    pub fn around(center_m: Vec3, half_extent_m: f32) -> Self {
        let h = half_extent_m.abs();
        let lo = center_m - Vec3::splat(h);
        let hi = center_m + Vec3::splat(h);
        Self {
            min_mm: [mm(lo.x), mm(lo.y), mm(lo.z)],
            max_mm: [mm(hi.x), mm(hi.y), mm(hi.z)],
        }
    }

    /// Whether the point (millimetres) is inside.
    #[must_use]
    pub fn contains(&self, point_mm: [i32; 3]) -> bool {
        (0..3).all(|i| self.min_mm[i] <= point_mm[i] && point_mm[i] <= self.max_mm[i])
    }
}

/// Whether a region asked for around `center` with half-edge `half_extent` should replace
/// `last` (centre and half-edge of the one asked before): when there was none, when the
/// centre has moved more than a quarter of the last half-edge, or the half-edge changed by
/// more than a quarter. Both clients follow their view by this rule, so a region is sent again
/// on a real move, not on every frame.
#[must_use]
pub fn moved_enough(last: Option<(Vec3, f32)>, center: Vec3, half_extent: f32) -> bool {
    last.is_none_or(|(c, h)| c.distance(center) > h / 4.0 || (half_extent - h).abs() > h / 4.0)
}

/// A region a client asks the server for — the presence lane's ([`Interest`]) or the part of the
/// scene it holds ([`Hold`]) — set by hand or following the view ([`moved_enough`]): one
/// mechanism for both, in `ClientConnection`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Asked {
    /// What is asked for now (`None`: everything).
    pub(crate) region: Option<Region>,
    /// Centre and half-edge of the view it last followed.
    at: Option<(Vec3, f32)>,
}

impl Asked {
    /// Set by hand (the next [`Asked::follow`] asks again whatever it asked before); whether
    /// that changed what is asked for.
    pub(crate) fn set(&mut self, region: Option<Region>) -> bool {
        self.at = None;
        self.change(region)
    }

    /// The region of half-edge `half_extent_m` around `center`, once the view moved enough
    /// from the last followed; whether that changed what is asked for.
    pub(crate) fn follow(&mut self, center: Vec3, half_extent_m: f32) -> bool {
        if !moved_enough(self.at, center, half_extent_m) {
            return false;
        }
        self.at = Some((center, half_extent_m));
        self.change(Some(Region::around(center, half_extent_m)))
    }

    fn change(&mut self, region: Option<Region>) -> bool {
        let changed = self.region != region;
        self.region = region;
        changed
    }
}

/// What part of the world this client wants the presence lane of (`ClientMsg::Interest`, on
/// the reliable lane; it holds until the next one and is sent again after a reconnect).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interest {
    /// The region; `None`: everywhere (the default).
    pub region: Option<Region>,
}

/// The part of the scene a client holds ([`crate::wire::ClientMsg::Hold`], reliable lane;
/// allowed before the join proof, so the first snapshot is already the held part, and after;
/// it holds until the next one and over a reconnect the client sends it again).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The region whose entities the client holds; `None`: the whole scene (the default).
    pub region: Option<Region>,
}

/// The edge of the server's spatial hash cells, in millimetres (16 m): a 40 m view looks up
/// at most 4 × 4 × 4 cells.
pub const CELL_MM: i32 = 16_000;

/// The hash-grid cell a point (millimetres) is in.
#[must_use]
pub const fn cell_of(point_mm: [i32; 3]) -> [i32; 3] {
    [
        point_mm[0].div_euclid(CELL_MM),
        point_mm[1].div_euclid(CELL_MM),
        point_mm[2].div_euclid(CELL_MM),
    ]
}

impl Region {
    /// The hash-grid cells the region overlaps, or `None` when they are more than `limit`
    /// (a region the size of the world: scan everything instead).
    #[must_use]
    pub fn cells(&self, limit: usize) -> Option<Vec<[i32; 3]>> {
        let lo = cell_of(self.min_mm);
        let hi = cell_of(self.max_mm);
        let mut count: u64 = 1;
        for i in 0..3 {
            let span = i64::from(hi[i]) - i64::from(lo[i]) + 1;
            count = count.saturating_mul(u64::try_from(span.max(0)).unwrap_or(0));
        }
        if count > limit as u64 {
            return None;
        }
        let mut out = Vec::with_capacity(count as usize);
        for x in lo[0]..=hi[0] {
            for y in lo[1]..=hi[1] {
                for z in lo[2]..=hi[2] {
                    out.push([x, y, z]);
                }
            }
        }
        Some(out)
    }
}

/// Where a relayed message is, for interest: some points, or everywhere (a message without a
/// place, such as the end of a drag, goes to every member).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// Goes to everyone.
    Everywhere,
    /// Goes to those whose region holds one of these points (millimetres).
    At(Vec<[i32; 3]>),
}

impl Place {
    /// Whether a client with `interest` is sent it.
    #[must_use]
    pub fn reaches(&self, interest: Option<&Region>) -> bool {
        match (self, interest) {
            (Self::Everywhere, _) | (_, None) => true,
            (Self::At(points), Some(region)) => points.iter().any(|p| region.contains(*p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_holds_its_bounds_and_nothing_past_them() {
        let r = Region::around(Vec3::new(100.0, 0.0, -50.0), 10.0);
        assert_eq!(r.min_mm, [90_000, -10_000, -60_000]);
        assert!(r.contains([90_000, 10_000, -40_000]));
        assert!(!r.contains([89_999, 0, -50_000]));
        assert!(!r.contains([100_000, 0, -39_999]));
        let near = Place::At(alloc::vec![[500_000, 0, 0], [95_000, 0, -50_000]]);
        assert!(near.reaches(Some(&r)), "one point inside is enough");
        assert!(!Place::At(alloc::vec![[0, 0, 0]]).reaches(Some(&r)));
        assert!(
            Place::At(alloc::vec![[0, 0, 0]]).reaches(None),
            "no region: everything"
        );
        assert!(Place::Everywhere.reaches(Some(&r)));
    }

    #[test]
    fn a_region_overlaps_the_cells_its_points_fall_in() {
        let r = Region::around(Vec3::new(-1.0, 0.0, 31.0), 20.0);
        let cells = r
            .cells(64)
            .expect("a 40 m region spans at most 4 cells per axis");
        assert_eq!(cells.len(), 4 * 4 * 4);
        for p in [
            r.min_mm,
            r.max_mm,
            [0, 0, 31_000],
            [-21_000, 20_000, 11_000],
        ] {
            assert!(r.contains(p));
            assert!(cells.contains(&cell_of(p)), "{p:?} is in a listed cell");
        }
        assert_eq!(cell_of([-1, 15_999, 16_000]), [-1, 0, 1]);
        let world = Region::around(Vec3::ZERO, 1.0e6);
        assert_eq!(world.cells(4096), None, "too many cells: scan instead");
    }

    #[test]
    fn a_region_follows_a_view_only_on_a_real_move() {
        let at = Vec3::new(10.0, 0.0, 0.0);
        assert!(moved_enough(None, at, 32.0), "the first one");
        assert!(!moved_enough(Some((at, 32.0)), at + Vec3::X * 7.9, 32.0));
        assert!(moved_enough(Some((at, 32.0)), at + Vec3::X * 8.1, 32.0));
        assert!(!moved_enough(Some((at, 32.0)), at, 39.0));
        assert!(moved_enough(Some((at, 32.0)), at, 41.0), "zoomed out");
    }
}
