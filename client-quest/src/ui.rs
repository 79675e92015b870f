//! The in-headset panel on the off hand: the tool palette, the colour, and an inspector of the
//! selection, drawn on the CPU into an RGBA image (8×8 bitmap glyphs at 2×) that the renderer
//! shows as a textured quad. At 384 px across 0.24 m, text is 25 mm tall: readable at arm's
//! length.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "pixel coordinates of a 384×384 image, indices of short lists, colours clamped to 0–1"
)]

use font8x8::UnicodeFonts as _;
use glam::{Mat4, Vec3};
use meshwork_protocol::command::Primitive;

use crate::app::{App, MeshAction, PALETTE, Tool};
use crate::input::{Pose, Ray};

/// Panel image size.
pub const WIDTH: u32 = 384;
/// Panel image size.
pub const HEIGHT: u32 = 384;
/// Panel size in metres (width; height follows the image's aspect).
pub const WIDTH_M: f32 = 0.24;

/// The tools in palette order, with their labels (rows of three).
pub const TOOLS: [(Tool, &str); 8] = [
    (Tool::Add(Primitive::Cube), "Cube"),
    (Tool::Add(Primitive::Pyramid), "Pyramid"),
    (Tool::Add(Primitive::Plane), "Plane"),
    (Tool::Add(Primitive::Cylinder), "Cylinder"),
    (Tool::Add(Primitive::Sphere), "Sphere"),
    (Tool::Paint, "Paint"),
    (Tool::Extrude, "Extrude"),
    (Tool::Vertex, "Vertex"),
];

/// The mesh operations on the selection, in panel order (rows of two), with their labels.
pub const ACTIONS: [(MeshAction, &str); 4] = [
    (MeshAction::Subdivide, "Subdivide"),
    (MeshAction::Smooth, "Smooth"),
    (MeshAction::Mirror, "Mirror X"),
    (MeshAction::Duplicate, "Duplicate"),
];

/// Where the `i`-th mesh operation's button is (x, y; 182 × 32).
#[must_use]
pub const fn action_button(i: usize) -> (u32, u32) {
    #[allow(clippy::cast_possible_truncation, reason = "i < ACTIONS.len()")]
    let i = i as u32;
    (8 + (i % 2) * 186, 140 + (i / 2) * 36)
}

/// The row of the colour swatch and the Undo / Redo buttons (y, height 24).
pub const COLOR_ROW: u32 = 216;

/// Where the panel floats: above the off hand's grip, tilted towards the eye. The quad is the
/// unit square in its XY plane, scaled to the panel's size.
#[must_use]
pub fn world_from_panel(world_from_left_grip: &Pose) -> Mat4 {
    #[allow(clippy::cast_precision_loss, reason = "image sizes")]
    let aspect = HEIGHT as f32 / WIDTH as f32;
    world_from_left_grip.matrix()
        * Mat4::from_translation(Vec3::new(0.0, 0.1, -0.05))
        * Mat4::from_rotation_x(-0.6)
        * Mat4::from_scale(Vec3::new(WIDTH_M, WIDTH_M * aspect, 1.0))
}

/// What a pointer pressed on the panel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PanelHit {
    /// A tool button.
    Tool(Tool),
    /// The colour swatch (next colour).
    Color,
    /// Undo the user's last step.
    Undo,
    /// Redo it.
    Redo,
    /// A mesh operation on the selection.
    Action(MeshAction),
}

/// Where `ray` meets the panel, in panel pixels, if it does (front or back).
#[must_use]
pub fn panel_pixel(ray: &Ray, world_from_panel: &Mat4) -> Option<(u32, u32)> {
    let panel_from_world = world_from_panel.inverse();
    let o = panel_from_world.transform_point3(ray.origin);
    let d = panel_from_world.transform_vector3(ray.direction);
    if d.z.abs() < 1e-6 {
        return None;
    }
    let t = -o.z / d.z;
    if t < 0.0 {
        return None;
    }
    let p = o + d * t;
    if p.x.abs() > 0.5 || p.y.abs() > 0.5 {
        return None;
    }
    #[allow(clippy::cast_precision_loss, reason = "image sizes")]
    let (x, y) = ((p.x + 0.5) * WIDTH as f32, (0.5 - p.y) * HEIGHT as f32);
    Some((x as u32, y as u32))
}

/// The control at a panel pixel (the layout [`draw`] paints).
#[must_use]
pub fn hit(x: u32, y: u32) -> Option<PanelHit> {
    for (i, (tool, _)) in TOOLS.iter().enumerate() {
        let (col, row) = ((i % 3) as u32, (i / 3) as u32);
        let (bx, by) = (8 + col * 124, 32 + row * 36);
        if (bx..bx + 120).contains(&x) && (by..by + 32).contains(&y) {
            return Some(PanelHit::Tool(*tool));
        }
    }
    for (i, (action, _)) in ACTIONS.iter().enumerate() {
        let (bx, by) = action_button(i);
        if (bx..bx + 182).contains(&x) && (by..by + 32).contains(&y) {
            return Some(PanelHit::Action(*action));
        }
    }
    if !(COLOR_ROW..COLOR_ROW + 24).contains(&y) {
        return None;
    }
    match x {
        104..200 => Some(PanelHit::Color),
        208..288 => Some(PanelHit::Undo),
        296..376 => Some(PanelHit::Redo),
        _ => None,
    }
}

/// An RGBA8 (sRGB) image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Pixels, rows top to bottom.
    pub rgba: Vec<u8>,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Image {
    fn new(width: u32, height: u32, fill: [u8; 4]) -> Self {
        let n = (width * height) as usize;
        Self {
            rgba: fill.repeat(n),
            width,
            height,
        }
    }

    fn rect(&mut self, x: u32, y: u32, w: u32, h: u32, c: [u8; 4]) {
        for yy in y..(y + h).min(self.height) {
            for xx in x..(x + w).min(self.width) {
                let i = ((yy * self.width + xx) * 4) as usize;
                if let Some(px) = self.rgba.get_mut(i..i + 4) {
                    px.copy_from_slice(&c);
                }
            }
        }
    }

    /// A `w` × 32 button at (x, y): `fill`, and `label` centred on it.
    fn button(&mut self, x: u32, y: u32, w: u32, fill: [u8; 4], label: &str) {
        self.rect(x, y, w, 32, fill);
        let text_w = label.len() as u32 * 16;
        self.text(
            x + w.saturating_sub(text_w) / 2,
            y + 8,
            label,
            [240, 240, 244, 255],
        );
    }

    /// Writes `text` at (x, y) with glyphs scaled 2×; returns the x after it.
    fn text(&mut self, x: u32, y: u32, text: &str, c: [u8; 4]) -> u32 {
        let mut cx = x;
        for ch in text.chars() {
            let glyph = font8x8::BASIC_FONTS.get(ch).unwrap_or([0; 8]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8u32 {
                    if bits & (1 << col) != 0 {
                        self.rect(cx + col * 2, y + row as u32 * 2, 2, 2, c);
                    }
                }
            }
            cx += 16;
        }
        cx
    }
}

/// The inspector's lines for the current state (what the panel says, testable without pixels).
#[must_use]
pub fn inspector_lines(app: &App) -> Vec<String> {
    let mut lines = Vec::new();
    let scene = app.connection().replica().scene();
    match app
        .selected
        .and_then(|id| scene.entities.get(&id).map(|e| (id, e)))
    {
        Some((id, e)) => {
            let t = app.shown(id, &e.transform);
            let name = if e.name.value.is_empty() {
                format!("#{}.{}", id.namespace().0, id.counter())
            } else {
                e.name.value.clone()
            };
            lines.push(format!("Selected {name}"));
            lines.push(format!(
                "Pos {:.2} {:.2} {:.2}",
                t.translation.x, t.translation.y, t.translation.z
            ));
            lines.push(format!(
                "Scale {:.2} {:.2} {:.2}",
                t.scale.x, t.scale.y, t.scale.z
            ));
        }
        None => lines.push("Nothing selected".to_owned()),
    }
    let others = app.others().len();
    let me = match app.connection().author() {
        Some(_) if !app.display_name().is_empty() => app.display_name().to_owned(),
        Some(a) => format!("author {}", a.0),
        None => String::new(),
    };
    let status = match app.connection().author() {
        Some(_) if !app.connection().is_joined() && app.live() => {
            format!("Offline as {me}, reconnecting")
        }
        Some(_) if app.live() && others > 0 => format!("Live as {me} + {others} here"),
        Some(_) if app.live() => format!("Live as {me}"),
        Some(_) => "Loading scene".to_owned(),
        None => "Joining".to_owned(),
    };
    lines.push(status);
    lines
}

/// The people present besides the user, in author order, with their colours (sRGB bytes):
/// the squares on the panel's title row.
#[must_use]
pub fn people(app: &App) -> Vec<(meshwork_protocol::AuthorId, [u8; 3])> {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "clamped to 0..=255 first"
    )]
    let srgb = |v: f32| {
        let v = if v <= 0.003_130_8 {
            v * 12.92
        } else {
            1.055 * v.powf(1.0 / 2.4) - 0.055
        };
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    };
    app.others()
        .keys()
        .map(|a| {
            let c = crate::app::author_color(*a);
            (*a, [srgb(c.x), srgb(c.y), srgb(c.z)])
        })
        .collect()
}

/// Most people squares the title row holds.
pub const PEOPLE_SHOWN: usize = 10;

/// Where the `i`-th person's square is on the panel (x, y; 12 pixels wide).
#[must_use]
pub const fn person_square(i: usize) -> (u32, u32) {
    #[allow(clippy::cast_possible_truncation, reason = "i < PEOPLE_SHOWN")]
    let i = i as u32;
    (WIDTH - 20 - i * 16, 10)
}

/// Everything the panel shows, as plain values (drawn by [`draw`]; equal views draw equal
/// images, so the pump redraws and re-uploads only when it changes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PanelView {
    /// The active tool.
    pub tool: Tool,
    /// The colour index.
    pub color: usize,
    /// The inspector's lines.
    pub lines: Vec<String>,
    /// The last refusal, if any.
    pub notice: Option<String>,
    /// The others present and their colours (sRGB).
    pub people: Vec<(meshwork_protocol::AuthorId, [u8; 3])>,
}

impl PanelView {
    /// The panel's view of the app now.
    #[must_use]
    pub fn of(app: &App) -> Self {
        Self {
            tool: app.tool,
            color: app.color,
            lines: inspector_lines(app),
            notice: app.notices.last().cloned(),
            people: people(app),
        }
    }
}

/// Draws the panel.
#[must_use]
pub fn draw(view: &PanelView) -> Image {
    let mut img = Image::new(WIDTH, HEIGHT, [24, 26, 32, 235]);
    img.text(12, 8, "Meshwork", [230, 232, 236, 255]);
    // Who else is here: a square in each one's colour (the colour of their head and hands).
    for (i, (_, rgb)) in view.people.iter().take(PEOPLE_SHOWN).enumerate() {
        let (x, y) = person_square(i);
        img.rect(x, y, 12, 12, [rgb[0], rgb[1], rgb[2], 255]);
    }
    // Tools: rows of three.
    for (i, (tool, label)) in TOOLS.iter().enumerate() {
        let (col, row) = ((i % 3) as u32, (i / 3) as u32);
        let (x, y) = (8 + col * 124, 32 + row * 36);
        let fill = if *tool == view.tool {
            [70, 130, 255, 255]
        } else {
            [52, 56, 66, 255]
        };
        img.button(x, y, 120, fill, label);
    }
    // Colour swatch.
    let c = PALETTE[view.color % PALETTE.len()];
    let srgb = |v: f32| (v.clamp(0.0, 1.0).powf(1.0 / 2.2) * 255.0) as u8;
    for (i, (_, label)) in ACTIONS.iter().enumerate() {
        let (x, y) = action_button(i);
        img.button(x, y, 182, [44, 60, 52, 255], label);
    }
    img.text(12, COLOR_ROW + 4, "Color", [200, 204, 212, 255]);
    img.rect(
        104,
        COLOR_ROW,
        96,
        24,
        [srgb(c.x), srgb(c.y), srgb(c.z), 255],
    );
    for (x, label) in [(208, "Undo"), (296, "Redo")] {
        img.rect(x, COLOR_ROW, 80, 24, [52, 56, 66, 255]);
        img.text(x + 8, COLOR_ROW + 4, label, [240, 240, 244, 255]);
    }
    // Inspector.
    for (i, line) in view.lines.iter().enumerate() {
        img.text(12, 250 + i as u32 * 20, line, [214, 218, 226, 255]);
    }
    if let Some(n) = &view.notice {
        let short: String = n.chars().take(23).collect();
        img.text(12, 360, &short, [255, 120, 120, 255]);
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_protocol::Ed25519Signer;

    #[test]
    fn the_panel_shows_the_tools_the_active_one_lit_and_the_state() {
        let mut app = App::new(
            Ed25519Signer::from_seed([3; 32]),
            crate::app::test_invite(),
            0.05,
        );
        app.tool = Tool::Add(Primitive::Sphere);
        let img = draw(&PanelView::of(&app));
        assert_eq!(img.rgba.len(), (WIDTH * HEIGHT * 4) as usize);
        // The active tool's button (index 4: second row, middle) is lit blue; others are grey.
        let at = |x: u32, y: u32| {
            let i = ((y * WIDTH + x) * 4) as usize;
            [img.rgba[i], img.rgba[i + 1], img.rgba[i + 2]]
        };
        assert_eq!(at(8 + 124 + 2, 32 + 36 + 2), [70, 130, 255]);
        assert_eq!(at(8 + 2, 32 + 2), [52, 56, 66]);
        // Text was drawn (light pixels in the title row).
        let title_lit = (0..WIDTH)
            .flat_map(|x| (8..24).map(move |y| (x, y)))
            .filter(|&(x, y)| at(x, y)[0] > 200)
            .count();
        assert!(title_lit > 50, "{title_lit}");
        assert_eq!(
            inspector_lines(&app),
            vec!["Nothing selected".to_owned(), "Joining".to_owned()]
        );
    }

    #[test]
    fn the_panel_shows_who_else_is_here_in_their_colours() {
        use meshwork_protocol::AuthorId;
        use meshwork_protocol::wire::{Presence, PresenceOf, ServerMsg};
        let mut app = App::new(
            Ed25519Signer::from_seed([3; 32]),
            crate::app::test_invite(),
            0.05,
        );
        for author in [9, 4] {
            app.receive(&ServerMsg::Presence(PresenceOf {
                author: AuthorId(author),
                presence: Presence {
                    seq: 1,
                    head: None,
                    hands: [None, None],
                    cursor: None,
                },
            }));
        }
        let here = people(&app);
        assert_eq!(
            here.iter().map(|(a, _)| a.0).collect::<Vec<_>>(),
            vec![4, 9]
        );
        assert_ne!(here[0].1, here[1].1, "two people, two colours");
        let img = draw(&PanelView::of(&app));
        let at = |(x, y): (u32, u32)| {
            let i = (((y + 6) * WIDTH + x + 6) * 4) as usize;
            [img.rgba[i], img.rgba[i + 1], img.rgba[i + 2]]
        };
        assert_eq!(at(person_square(0)), here[0].1);
        assert_eq!(at(person_square(1)), here[1].1);
        // Nobody third: the next square's place shows the panel's background.
        assert_eq!(at(person_square(2)), [24, 26, 32]);
    }

    #[test]
    fn a_ray_from_the_other_hand_hits_the_panel_buttons() {
        use glam::Vec3;
        let left = Pose::looking(Vec3::new(-0.2, 1.2, -0.3), 0.0, 0.0);
        let panel = world_from_panel(&left);
        // Aim at the centre of the "Sphere" button (index 4) from 40 cm in front of it.
        #[allow(clippy::cast_precision_loss, reason = "image sizes")]
        let (u, v) = (
            (8.0 + 124.0 + 60.0) / WIDTH as f32,
            (32.0 + 36.0 + 16.0) / HEIGHT as f32,
        );
        let target = panel.transform_point3(Vec3::new(u - 0.5, 0.5 - v, 0.0));
        let normal = panel.transform_vector3(Vec3::Z).normalize();
        let from = target + normal * 0.4;
        let ray = Ray {
            origin: from,
            direction: (target - from).normalize(),
        };
        let (x, y) =
            panel_pixel(&ray, &panel).unwrap_or_else(|| unreachable!("aimed at the panel"));
        assert_eq!(
            hit(x, y),
            Some(PanelHit::Tool(Tool::Add(Primitive::Sphere)))
        );
        // The swatch cycles the colour; empty panel space does nothing; away misses.
        assert_eq!(hit(150, COLOR_ROW + 12), Some(PanelHit::Color));
        assert_eq!(hit(240, COLOR_ROW + 12), Some(PanelHit::Undo));
        assert_eq!(hit(330, COLOR_ROW + 12), Some(PanelHit::Redo));
        assert_eq!(hit(100, 150), Some(PanelHit::Action(MeshAction::Subdivide)));
        assert_eq!(hit(300, 190), Some(PanelHit::Action(MeshAction::Duplicate)));
        assert_eq!(
            hit(8 + 124 * 2 + 60, 104 + 16),
            None,
            "the ninth tool slot is empty"
        );
        assert_eq!(hit(200, 300), None);
        let away = Ray {
            origin: from,
            direction: -ray.direction,
        };
        assert_eq!(panel_pixel(&away, &panel), None);
    }
}
