//! Input mapping, pure math: controller rays against the replica's meshes, grabbing (one hand
//! moves and rotates, two hands scale), snapping to a grid. No OpenXR, no GPU: the same code
//! serves the headset and the simulator, and is unit-tested.
//!
//! Frames are named the way transforms compose: `world_from_grip` maps points in the grip's
//! frame to world (stage) space; `grip_from_entity` is fixed while an entity is held, so
//! `world_from_entity = world_from_grip * grip_from_entity`. World space is the session's scene
//! space, metres, Y up (the OpenXR stage space with the floor at y = 0).

use glam::{Mat4, Quat, Vec3};
use meshwork_protocol::EntityId;
use meshwork_protocol::command::Transform;

/// A rigid pose: where a frame's origin is and how it is turned, in some parent frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pose {
    /// Origin in the parent frame.
    pub position: Vec3,
    /// Orientation in the parent frame.
    pub orientation: Quat,
}

impl Pose {
    /// The identity pose.
    pub const IDENTITY: Self = Self {
        position: Vec3::ZERO,
        orientation: Quat::IDENTITY,
    };

    /// A pose at `position` looking along `yaw` (radians about +Y) and `pitch` (about +X).
    #[must_use]
    pub fn looking(position: Vec3, yaw: f32, pitch: f32) -> Self {
        Self {
            position,
            orientation: Quat::from_rotation_y(yaw) * Quat::from_rotation_x(pitch),
        }
    }

    /// The pose as a matrix (`parent_from_frame`).
    #[must_use]
    pub fn matrix(&self) -> Mat4 {
        Mat4::from_rotation_translation(self.orientation, self.position)
    }

    /// The frame's forward direction (−Z, OpenXR's convention) in the parent frame.
    #[must_use]
    pub fn forward(&self) -> Vec3 {
        self.orientation * Vec3::NEG_Z
    }
}

/// A ray in world space.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ray {
    /// Start point.
    pub origin: Vec3,
    /// Unit direction.
    pub direction: Vec3,
}

impl Ray {
    /// The pointing ray of a controller's aim pose (`world_from_aim`).
    #[must_use]
    pub fn from_aim(world_from_aim: &Pose) -> Self {
        Self {
            origin: world_from_aim.position,
            direction: world_from_aim.forward().normalize_or(Vec3::NEG_Z),
        }
    }

    /// Where the ray meets the floor (y = 0), if it points down at it.
    #[must_use]
    pub fn floor_hit(&self) -> Option<Vec3> {
        if self.direction.y >= -1e-6 {
            return None;
        }
        let t = -self.origin.y / self.direction.y;
        (t >= 0.0).then(|| self.origin + self.direction * t)
    }
}

/// Triangles of one entity in its own frame, with where it is.
#[derive(Clone, Debug)]
pub struct Pickable<'a> {
    /// Which entity.
    pub id: EntityId,
    /// `world_from_entity`.
    pub world_from_entity: Mat4,
    /// Vertex positions in the entity's frame.
    pub positions: &'a [[f32; 3]],
    /// Triangle indices.
    pub indices: &'a [u32],
}

/// The nearest entity the ray hits and the hit distance along the ray (world metres).
#[must_use]
pub fn pick(ray: &Ray, entities: &[Pickable<'_>]) -> Option<(EntityId, f32)> {
    let mut best: Option<(EntityId, f32)> = None;
    for e in entities {
        let entity_from_world = e.world_from_entity.inverse();
        let origin = entity_from_world.transform_point3(ray.origin);
        let far = entity_from_world.transform_point3(ray.origin + ray.direction);
        let dir = far - origin; // one world metre along the ray, in entity units
        for tri in e.indices.chunks_exact(3) {
            let v = |i: u32| {
                e.positions
                    .get(i as usize)
                    .map_or(Vec3::ZERO, |p| Vec3::from_array(*p))
            };
            if let Some(t) = ray_triangle(origin, dir, v(tri[0]), v(tri[1]), v(tri[2]))
                && best.is_none_or(|(_, b)| t < b)
            {
                best = Some((e.id, t));
            }
        }
    }
    best
}

/// The nearest triangle of one mesh the ray hits: its index (in `indices`, by threes) and the
/// hit distance along the ray (world metres).
#[must_use]
pub fn pick_triangle(
    ray: &Ray,
    world_from_entity: Mat4,
    positions: &[[f32; 3]],
    indices: &[u32],
) -> Option<(usize, f32)> {
    let entity_from_world = world_from_entity.inverse();
    let origin = entity_from_world.transform_point3(ray.origin);
    let dir = entity_from_world.transform_point3(ray.origin + ray.direction) - origin;
    let v = |i: u32| {
        positions
            .get(i as usize)
            .map_or(Vec3::ZERO, |p| Vec3::from_array(*p))
    };
    let mut best: Option<(usize, f32)> = None;
    for (n, tri) in indices.chunks_exact(3).enumerate() {
        if let Some(t) = ray_triangle(origin, dir, v(tri[0]), v(tri[1]), v(tri[2]))
            && best.is_none_or(|(_, b)| t < b)
        {
            best = Some((n, t));
        }
    }
    best
}

/// Möller–Trumbore, both faces; `t` in units of `dir`.
fn ray_triangle(origin: Vec3, dir: Vec3, a: Vec3, b: Vec3, c: Vec3) -> Option<f32> {
    let (e1, e2) = (b - a, c - a);
    let p = dir.cross(e2);
    let det = e1.dot(p);
    if det.abs() < 1e-9 {
        return None;
    }
    let inv = 1.0 / det;
    let s = origin - a;
    let u = s.dot(p) * inv;
    if !(0.0..=1.0).contains(&u) {
        return None;
    }
    let q = s.cross(e1);
    let v = dir.dot(q) * inv;
    if v < 0.0 || u + v > 1.0 {
        return None;
    }
    let t = e2.dot(q) * inv;
    (t >= 0.0).then_some(t)
}

/// An entity held by one hand: it follows the grip rigidly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grab {
    /// Held entity.
    pub entity: EntityId,
    /// The entity in the grip's frame, fixed at grab time.
    pub grip_from_entity: Mat4,
    /// The entity's transform when grabbed.
    pub start: Transform,
}

impl Grab {
    /// Starts holding `entity` (currently at `world_from_entity` = `start`) with the hand at
    /// `world_from_grip`.
    #[must_use]
    pub fn start(entity: EntityId, start: Transform, world_from_grip: &Pose) -> Self {
        Self {
            entity,
            grip_from_entity: world_from_grip.matrix().inverse() * matrix(&start),
            start,
        }
    }

    /// Where the entity is now that the hand is at `world_from_grip` (scale kept).
    #[must_use]
    pub fn follow(&self, world_from_grip: &Pose) -> Transform {
        let world_from_entity = world_from_grip.matrix() * self.grip_from_entity;
        let (_, rotation, translation) = world_from_entity.to_scale_rotation_translation();
        Transform {
            translation,
            rotation: rotation.normalize(),
            scale: self.start.scale,
        }
    }
}

/// Two hands on one entity: the distance between the grips scales it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TwoHandScale {
    /// Grip distance when the second hand closed.
    pub start_distance: f32,
    /// Scale then.
    pub start_scale: Vec3,
}

impl TwoHandScale {
    /// Starts from the two grip positions.
    #[must_use]
    pub fn start(left: Vec3, right: Vec3, scale: Vec3) -> Self {
        Self {
            start_distance: left.distance(right).max(0.01),
            start_scale: scale,
        }
    }

    /// The scale for the grips' current positions (clamped to 1/100 … 100× the start).
    #[must_use]
    pub fn scale(&self, left: Vec3, right: Vec3) -> Vec3 {
        let factor = (left.distance(right) / self.start_distance).clamp(0.01, 100.0);
        self.start_scale * factor
    }
}

/// Snapping positions to a grid; reports when the snapped cell changes (a haptic tick).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Snap {
    /// Grid step in metres (0 = off).
    pub step: f32,
    last: Option<[i64; 3]>,
}

impl Snap {
    /// A grid of `step` metres.
    #[must_use]
    pub const fn new(step: f32) -> Self {
        Self { step, last: None }
    }

    /// `position` on the grid, and whether that is a different cell than last time.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "cell indices of scene coordinates (≤ 100 km) at ≥ 1 mm steps fit easily"
    )]
    pub fn apply(&mut self, position: Vec3) -> (Vec3, bool) {
        if self.step <= 0.0 {
            return (position, false);
        }
        let cell = (position / self.step).round();
        let key = [cell.x as i64, cell.y as i64, cell.z as i64];
        let changed = self.last.is_some_and(|l| l != key);
        self.last = Some(key);
        (cell * self.step, changed)
    }

    /// Forgets the last cell (a new grab starts without a tick).
    pub fn reset(&mut self) {
        self.last = None;
    }
}

/// The tracked-hand joints the fallback uses, in world space.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HandJoints {
    /// `world_from_palm`.
    pub palm: Pose,
    /// Wrist position.
    pub wrist: Vec3,
    /// Index knuckle (proximal) position.
    pub index_knuckle: Vec3,
    /// Thumb tip.
    pub thumb_tip: Vec3,
    /// Index tip.
    pub index_tip: Vec3,
    /// Middle tip.
    pub middle_tip: Vec3,
    /// Ring tip.
    pub ring_tip: Vec3,
}

/// Controller-shaped input from a tracked hand (when the controllers are put down): the palm
/// is the grip, the ray runs from the wrist through the index knuckle, a thumb–index pinch is
/// the trigger, a fist (middle and ring tips at the palm) is the grip.
#[must_use]
pub fn hand_as_controller(j: &HandJoints) -> (Pose, Pose, f32, f32) {
    let along = (j.index_knuckle - j.wrist).normalize_or(j.palm.forward());
    let world_from_aim = Pose {
        position: j.index_knuckle,
        orientation: Quat::from_rotation_arc(Vec3::NEG_Z, along),
    };
    // Pinch: fully pressed at 1.5 cm apart, released beyond 4.5 cm.
    let pinch = 1.0 - ((j.thumb_tip.distance(j.index_tip) - 0.015) / 0.03).clamp(0.0, 1.0);
    // Fist: both tips within 5 cm of the palm centre; open beyond 8 cm.
    let curl = j
        .middle_tip
        .distance(j.palm.position)
        .max(j.ring_tip.distance(j.palm.position));
    let fist = 1.0 - ((curl - 0.05) / 0.03).clamp(0.0, 1.0);
    (j.palm, world_from_aim, pinch, fist)
}

/// `world_from_entity` of a transform.
#[must_use]
pub fn matrix(t: &Transform) -> Mat4 {
    Mat4::from_scale_rotation_translation(t.scale, t.rotation, t.translation)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use meshwork_protocol::ids::AuthorId;

    const EPS: f32 = 1e-4;

    fn cube() -> (Vec<[f32; 3]>, Vec<u32>) {
        let m =
            meshwork_protocol::mesh::Mesh::primitive(meshwork_protocol::command::Primitive::Cube)
                .triangulate();
        (m.positions, m.indices)
    }

    #[test]
    fn the_aim_ray_points_down_minus_z_of_world_from_aim() {
        let world_from_aim = Pose::looking(Vec3::new(0.0, 1.5, 0.0), 0.0, -0.5);
        let ray = Ray::from_aim(&world_from_aim);
        assert!((ray.direction.length() - 1.0).abs() < EPS);
        assert!(ray.direction.z < 0.0 && ray.direction.y < 0.0);
        let floor = ray.floor_hit().unwrap();
        assert!(floor.y.abs() < EPS);
        assert!((floor.z - -1.5 / 0.5f32.tan()).abs() < 1e-3);
        assert!(
            Ray::from_aim(&Pose::looking(Vec3::Y, 0.0, 0.3))
                .floor_hit()
                .is_none()
        );
    }

    #[test]
    fn picking_hits_the_nearest_entity_through_its_world_from_entity() {
        let (positions, indices) = cube();
        let a = EntityId::new(AuthorId(1), 1);
        let b = EntityId::new(AuthorId(1), 2);
        let world_from_a = matrix(&Transform {
            translation: Vec3::new(0.0, 1.0, -2.0),
            ..Transform::IDENTITY
        });
        let world_from_b = matrix(&Transform {
            translation: Vec3::new(0.0, 1.0, -5.0),
            scale: Vec3::splat(3.0),
            ..Transform::IDENTITY
        });
        let entities = [
            Pickable {
                id: b,
                world_from_entity: world_from_b,
                positions: &positions,
                indices: &indices,
            },
            Pickable {
                id: a,
                world_from_entity: world_from_a,
                positions: &positions,
                indices: &indices,
            },
        ];
        let world_from_aim = Pose::looking(Vec3::new(0.0, 1.0, 0.0), 0.0, 0.0);
        let (hit, t) = pick(&Ray::from_aim(&world_from_aim), &entities).unwrap();
        assert_eq!(hit, a, "the nearer cube");
        // The unit cube spans ±0.5: its front face is 1.5 m away.
        assert!((t - 1.5).abs() < 1e-3, "{t}");
        // Turned away: nothing.
        let away = Pose::looking(Vec3::new(0.0, 1.0, 0.0), std::f32::consts::PI, 0.0);
        assert!(pick(&Ray::from_aim(&away), &entities).is_none());
        // Aimed past `a` but within `b`'s triple size: hits `b`.
        let side = Pose::looking(Vec3::new(1.2, 1.0, 0.0), 0.0, 0.0);
        assert_eq!(pick(&Ray::from_aim(&side), &entities).unwrap().0, b);
    }

    #[test]
    fn a_grabbed_entity_follows_world_from_grip_rigidly() {
        let e = EntityId::new(AuthorId(2), 7);
        let start = Transform {
            translation: Vec3::new(0.0, 1.0, -1.0),
            rotation: Quat::IDENTITY,
            scale: Vec3::splat(0.5),
        };
        let world_from_grip = Pose::looking(Vec3::new(0.0, 1.0, -0.6), 0.0, 0.0);
        let grab = Grab::start(e, start, &world_from_grip);
        // Not moving the hand keeps the entity where it was.
        let same = grab.follow(&world_from_grip);
        assert!((same.translation - start.translation).length() < EPS);
        // Moving the hand 0.3 m right moves the entity 0.3 m right.
        let moved = Pose {
            position: world_from_grip.position + Vec3::X * 0.3,
            ..world_from_grip
        };
        assert!((grab.follow(&moved).translation - Vec3::new(0.3, 1.0, -1.0)).length() < EPS);
        // Turning the wrist 90° about +Y swings the entity (0.4 m ahead of the grip) around it
        // and turns it the same way; the scale is kept.
        let turned = Pose {
            orientation: Quat::from_rotation_y(std::f32::consts::FRAC_PI_2),
            ..world_from_grip
        };
        let t = grab.follow(&turned);
        assert!(
            (t.translation - Vec3::new(-0.4, 1.0, -0.6)).length() < EPS,
            "{t:?}"
        );
        assert!(
            t.rotation
                .angle_between(Quat::from_rotation_y(std::f32::consts::FRAC_PI_2))
                < EPS
        );
        assert_eq!(t.scale, start.scale);
    }

    #[test]
    fn two_hands_scale_by_the_change_in_grip_distance() {
        let s = TwoHandScale::start(
            Vec3::new(-0.2, 1.0, -0.5),
            Vec3::new(0.2, 1.0, -0.5),
            Vec3::ONE,
        );
        let wider = s.scale(Vec3::new(-0.4, 1.0, -0.5), Vec3::new(0.4, 1.0, -0.5));
        assert!((wider - Vec3::splat(2.0)).length() < EPS);
        let tiny = s.scale(Vec3::ZERO, Vec3::ZERO);
        assert!(
            (tiny - Vec3::splat(0.01)).length() < EPS,
            "clamped, never zero"
        );
    }

    #[test]
    fn snapping_rounds_to_the_grid_and_ticks_on_each_new_cell() {
        let mut snap = Snap::new(0.25);
        let (p, tick) = snap.apply(Vec3::new(0.13, 1.01, -0.37));
        assert!((p - Vec3::new(0.25, 1.0, -0.25)).length() < EPS, "{p}");
        assert!(!tick, "the first position is not a change");
        assert!(!snap.apply(Vec3::new(0.2, 1.05, -0.3)).1, "same cell");
        assert!(
            snap.apply(Vec3::new(0.4, 1.05, -0.3)).1,
            "next cell: haptic tick"
        );
        snap.reset();
        assert!(!snap.apply(Vec3::new(3.0, 0.0, 0.0)).1);
        let mut off = Snap::new(0.0);
        assert_eq!(
            off.apply(Vec3::new(0.13, 0.0, 0.0)),
            (Vec3::new(0.13, 0.0, 0.0), false)
        );
    }

    #[test]
    fn a_tracked_hand_pinches_to_select_and_makes_a_fist_to_grab() {
        let palm = Pose::looking(Vec3::new(0.2, 1.2, -0.3), 0.0, 0.0);
        let open = HandJoints {
            palm,
            wrist: Vec3::new(0.2, 1.2, -0.2),
            index_knuckle: Vec3::new(0.2, 1.2, -0.35),
            thumb_tip: Vec3::new(0.15, 1.2, -0.4),
            index_tip: Vec3::new(0.2, 1.2, -0.45),
            middle_tip: Vec3::new(0.22, 1.2, -0.46),
            ring_tip: Vec3::new(0.24, 1.2, -0.45),
        };
        let (grip, aim, trigger, fist) = hand_as_controller(&open);
        assert_eq!(grip, palm);
        assert!(trigger < 0.01 && fist < 0.01, "open hand: {trigger} {fist}");
        assert!(
            (Ray::from_aim(&aim).direction - Vec3::NEG_Z).length() < EPS,
            "points where the hand points"
        );
        let pinch = HandJoints {
            thumb_tip: open.index_tip + Vec3::new(0.01, 0.0, 0.0),
            ..open
        };
        assert!((hand_as_controller(&pinch).2 - 1.0).abs() < EPS);
        let closed = HandJoints {
            middle_tip: palm.position + Vec3::new(0.02, -0.02, 0.0),
            ring_tip: palm.position + Vec3::new(0.03, -0.02, 0.0),
            ..open
        };
        assert!((hand_as_controller(&closed).3 - 1.0).abs() < EPS);
    }
}
