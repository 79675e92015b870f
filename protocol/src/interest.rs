//! Spatial interest: the part of the world a client wants the presence lane of. A client with
//! a [`Region`] is sent others' presence, previews and selections only where they touch it
//! (with a region of its own, nobody's avatar a kilometre away costs it a byte); a client
//! without one gets all of it, as before. Committed changes (the log) reach every member
//! whatever their interest: every replica holds the whole scene.

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

/// What part of the world this client wants the presence lane of (`ClientMsg::Interest`, on
/// the reliable lane; it holds until the next one and is sent again after a reconnect).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interest {
    /// The region; `None`: everywhere (the default).
    pub region: Option<Region>,
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
    fn a_region_follows_a_view_only_on_a_real_move() {
        let at = Vec3::new(10.0, 0.0, 0.0);
        assert!(moved_enough(None, at, 32.0), "the first one");
        assert!(!moved_enough(Some((at, 32.0)), at + Vec3::X * 7.9, 32.0));
        assert!(moved_enough(Some((at, 32.0)), at + Vec3::X * 8.1, 32.0));
        assert!(!moved_enough(Some((at, 32.0)), at, 39.0));
        assert!(moved_enough(Some((at, 32.0)), at, 41.0), "zoomed out");
    }
}
