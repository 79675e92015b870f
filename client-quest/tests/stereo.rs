//! Stereo: both eyes in one multiview pass into a two-layer target, the way the headset draws
//! into the runtime's swapchain images, here offscreen on whatever Vulkan adapter exists
//! (lavapipe in CI). Each layer must show the scene from its own eye (parallax).
#![allow(
    clippy::unwrap_used,
    clippy::arithmetic_side_effects,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

use glam::{Mat4, Vec3, Vec4};
use meshwork_protocol::command::Primitive;
use meshwork_quest::input::Pose;
use meshwork_quest::render::{DrawItem, Overlays, Renderer};
use meshwork_quest::sim::perspective;

/// Mean x of the pixels that are the cube's red.
fn red_centroid(rgba: &[u8], width: u32) -> Option<f32> {
    let (mut sum, mut n) = (0.0f32, 0u32);
    for (i, p) in rgba.chunks_exact(4).enumerate() {
        if p[0] > 120 && p[1] < 60 && p[2] < 60 {
            sum += (i as u32 % width) as f32;
            n += 1;
        }
    }
    (n > 50).then(|| sum / n as f32)
}

#[test]
fn both_eyes_in_one_multiview_pass_see_the_scene_from_their_own_eye() {
    let (w, h) = (320, 240);
    let mut r = Renderer::headless_stereo(w, h)
        .expect("a Vulkan adapter with multiview (lavapipe: mesa-vulkan-drivers)");
    let mesh = {
        let m = meshwork_protocol::mesh::Mesh::primitive(Primitive::Cube).triangulate();
        (m.positions, m.normals, m.indices)
    };
    let cube = DrawItem {
        key: "cube",
        mesh: &mesh,
        world_from_model: Mat4::from_translation(Vec3::new(0.0, 1.6, -1.2))
            * Mat4::from_scale(Vec3::splat(0.3)),
        color: Vec4::new(0.9, 0.02, 0.02, 1.0),
    };
    // Eyes 64 mm apart at standing height, looking ahead.
    let eye = |x: f32| {
        let stage_from_eye = Pose::looking(Vec3::new(x, 1.6, 0.0), 0.0, 0.0);
        perspective(90f32.to_radians(), w as f32 / h as f32, 0.05, 100.0)
            * stage_from_eye.matrix().inverse()
    };
    r.render(&[eye(-0.032), eye(0.032)], &[cube], &Overlays::default());
    let left = r.read_layer(0).unwrap();
    let right = r.read_layer(1).unwrap();
    let (lx, rx) = (
        red_centroid(&left, w).expect("the left eye sees the cube"),
        red_centroid(&right, w).expect("the right eye sees the cube"),
    );
    // The left eye sees the cube right of where the right eye sees it.
    assert!(lx - rx > 2.0, "parallax: left {lx:.1} px, right {rx:.1} px");
    assert!(
        (lx + rx) / 2.0 - w as f32 / 2.0 < 10.0,
        "centred between the eyes"
    );
    assert!(r.read_layer(2).is_err(), "two layers only");
}
