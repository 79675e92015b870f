//! Mesh invariants under random transforms: every primitive, moved, rotated and scaled by
//! arbitrary amounts, keeps its half-edge invariants, and its triangles keep facing outwards.
#![allow(
    clippy::unwrap_used,
    clippy::arithmetic_side_effects,
    reason = "test code"
)]

use glam::{Mat4, Quat, Vec3};
use meshwork_protocol::command::Primitive;
use meshwork_protocol::mesh::Mesh;
use proptest::prelude::*;

fn primitive() -> impl Strategy<Value = Primitive> {
    prop_oneof![
        Just(Primitive::Cube),
        Just(Primitive::Pyramid),
        Just(Primitive::Plane),
        Just(Primitive::Cylinder),
        Just(Primitive::Sphere),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn invariants_hold_under_any_transform(
        p in primitive(),
        t in prop::array::uniform3(-1.0e3f32..1.0e3),
        axis in prop::array::uniform3(-1.0f32..1.0),
        angle in -6.3f32..6.3,
        s in prop::array::uniform3(0.01f32..100.0),
    ) {
        let axis = Vec3::from(axis).try_normalize().unwrap_or(Vec3::Y);
        let m = Mat4::from_scale_rotation_translation(Vec3::from(s), Quat::from_axis_angle(axis, angle), Vec3::from(t));
        let mut mesh = Mesh::primitive(p);
        for v in &mut mesh.vertices {
            v.position = m.transform_point3(v.position);
        }
        prop_assert!(mesh.check().is_ok(), "{:?}", mesh.check());
        // Positive scales keep orientation: triangles still face away from the centre.
        let centre = m.transform_point3(Vec3::ZERO);
        let r = mesh.triangulate();
        if p != Primitive::Plane {
            for tri in r.indices.chunks(3) {
                let [a, b, c] = [0, 1, 2].map(|k| Vec3::from(r.positions[tri[k] as usize]));
                let n = (b - a).cross(c - a);
                prop_assert!(n.dot((a + b + c) / 3.0 - centre) > -1e-3 * n.length() * (a - centre).length());
            }
        }
    }
}
