//! The client rules of presence and live previews that every client needs the same way (the
//! browser through wasm, the Quest app natively): quantizing poses and transforms for the
//! unreliable lane and back, and each author's colour. Pure functions; no clock.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "every value is clamped to the wire's range before a cast; NaN maps to a default"
)]

use glam::{Quat, Vec3};

use crate::command::Transform;
use crate::ids::AuthorId;
use crate::wire::{Pose, PreviewTransform};

fn mm(metres: f32) -> i32 {
    let v = (metres * 1000.0).round();
    if v.is_nan() {
        0
    } else {
        v.clamp(-2.0e9, 2.0e9) as i32
    }
}

fn unit(v: f32) -> i16 {
    let v = (v.clamp(-1.0, 1.0) * 32767.0).round();
    if v.is_nan() { 0 } else { v as i16 }
}

fn permille(v: f32) -> u32 {
    let v = (v * 1000.0).round();
    if v.is_nan() {
        1000
    } else {
        v.clamp(1.0, 4.0e9) as u32
    }
}

impl Pose {
    /// A pose in metres and a rotation (normalized here; a zero one becomes the identity),
    /// quantized to millimetres and 1/32767.
    #[must_use]
    pub fn quantize(position_m: Vec3, rotation: Quat) -> Self {
        let q = if rotation.length_squared() > 1e-12 {
            rotation.normalize()
        } else {
            Quat::IDENTITY
        };
        Self {
            position_mm: [mm(position_m.x), mm(position_m.y), mm(position_m.z)],
            rotation: [unit(q.x), unit(q.y), unit(q.z), unit(q.w)],
        }
    }

    /// The position in metres.
    #[must_use]
    pub fn position_m(&self) -> Vec3 {
        let [x, y, z] = self.position_mm.map(|v| v as f32 / 1000.0);
        Vec3::new(x, y, z)
    }

    /// The rotation, normalized (the identity when nothing sensible was sent).
    #[must_use]
    pub fn rotation_q(&self) -> Quat {
        let [x, y, z, w] = self.rotation.map(|v| f32::from(v) / 32767.0);
        let q = Quat::from_xyzw(x, y, z, w);
        if q.length_squared() > 1e-6 {
            q.normalize()
        } else {
            Quat::IDENTITY
        }
    }
}

impl PreviewTransform {
    /// A transform as a preview carries it: pose as presence, scale in thousandths.
    #[must_use]
    pub fn quantize(t: &Transform) -> Self {
        Self {
            pose: Pose::quantize(t.translation, t.rotation),
            scale_permille: [
                permille(t.scale.x),
                permille(t.scale.y),
                permille(t.scale.z),
            ],
        }
    }

    /// The transform it carries.
    #[must_use]
    pub fn transform(&self) -> Transform {
        let [x, y, z] = self.scale_permille.map(|v| v as f32 / 1000.0);
        Transform {
            translation: self.pose.position_m(),
            rotation: self.pose.rotation_q(),
            scale: Vec3::new(x, y, z),
        }
    }
}

/// Each author's colour, as linear RGB: hue in golden-angle steps (137.508° per author id),
/// saturation 75 %, lightness 55 % in sRGB. The browser editor writes the same rule as CSS
/// (`authorColor` in `client-web/src/state.ts`: `hsl(hue, 75%, 55%)`).
#[must_use]
pub fn author_color(author: AuthorId) -> [f32; 3] {
    let hue = (author.0 as f32 * 137.508).rem_euclid(360.0).round();
    let (s, l) = (0.75f32, 0.55f32);
    let c = (1.0 - (2.0 * l - 1.0).abs()) * s;
    let h = hue / 60.0;
    let x = c * (1.0 - (h.rem_euclid(2.0) - 1.0).abs());
    let (r, g, b) = match h {
        h if h < 1.0 => (c, x, 0.0),
        h if h < 2.0 => (x, c, 0.0),
        h if h < 3.0 => (0.0, c, x),
        h if h < 4.0 => (0.0, x, c),
        h if h < 5.0 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = l - c / 2.0;
    let linear = |v: f32| {
        let v = v + m;
        if v <= 0.04045 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    [linear(r), linear(g), linear(b)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poses_and_transforms_survive_the_wire_to_a_millimetre() {
        let t = Transform {
            translation: Vec3::new(1.2345, -0.5, 3.0),
            rotation: Quat::from_rotation_y(0.7) * 1.0002, // slightly off unit, as sent
            scale: Vec3::new(0.5, 2.0, 1.0),
        };
        let back = PreviewTransform::quantize(&t).transform();
        assert!((back.translation - t.translation).length() < 1e-3);
        assert!(back.rotation.angle_between(t.rotation.normalize()) < 1e-3);
        assert!((back.rotation.length() - 1.0).abs() < 1e-6);
        assert!((back.scale - t.scale).length() < 1e-3);
        // Nonsense in, something sensible out.
        let p = Pose::quantize(
            Vec3::new(f32::NAN, 1e12, -1e12),
            Quat::from_xyzw(0.0, 0.0, 0.0, 0.0),
        );
        assert_eq!(p.position_mm, [0, 2_000_000_000, -2_000_000_000]);
        assert_eq!(p.rotation_q(), Quat::IDENTITY);
    }

    #[test]
    fn author_colours_are_the_browsers_and_distinct() {
        // The browser's authorColor(1) is hsl(138, 75%, 55%): sRGB (0.2125, 0.8875, 0.415).
        let srgb = |v: f32| {
            if v <= 0.003_130_8 {
                v * 12.92
            } else {
                1.055 * v.powf(1.0 / 2.4) - 0.055
            }
        };
        let c = author_color(AuthorId(1));
        for (g, w) in c.map(srgb).iter().zip([0.2125, 0.8875, 0.415]) {
            assert!((g - w).abs() < 1e-3, "{c:?}");
        }
        let mut seen: Vec<[u32; 3]> = (1..=8)
            .map(|a| author_color(AuthorId(a)).map(f32::to_bits))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 8);
    }
}
