//! The simulated headset: a head and two controllers whose poses and buttons come from a script,
//! driving the same [`App`] loop the headset runs, rendering offscreen.
//!
//! Script: one step per line, `#` starts a comment. Angles in degrees, distances in metres,
//! hands `left` / `right`:
//!
//! | step | meaning |
//! |---|---|
//! | `head X Y Z YAW PITCH` | `stage_from_head` |
//! | `hand H X Y Z YAW PITCH` | `world_from_grip` (the aim pose is the same) |
//! | `move H DX DY DZ FRAMES` | move the hand by a delta over that many frames |
//! | `trigger H V` / `grip H V` | analog value 0–1, held until changed |
//! | `press H primary\|secondary\|trigger` | down for one frame, then up |
//! | `stick H X Y` | thumbstick |
//! | `tool cube\|pyramid\|plane\|cylinder\|sphere\|paint\|extrude\|vertex` | the panel's tool |
//! | `color N` | the panel's color index |
//! | `frames N` | run N frames as things are |
//! | `wait synced` / `wait entities N` / `wait applied` / `wait selection` | run frames until it holds: synced, N entities, this client's mesh gestures in the replica, another member's selection (fails after 2000 frames) |
//! | `grid N S` | spawn N entities on a grid, the first S spheres (benchmarks) |
//! | `measure` | start the frame-time statistics here (the report covers what follows) |
//! | `aim-panel H CONTROL` | point a hand at a panel control (`Cube` … `Vertex`, `color`, `undo`, `redo`, `subdivide`, `smooth`, `mirror`, `duplicate`) |

use std::time::{Duration, Instant};

use glam::{Mat4, Vec2, Vec3, Vec4};
use meshwork_protocol::command::Primitive;

use crate::app::{App, FrameInput, Hand, HandInput, PALETTE, Tool};
use crate::input::{Pose, Ray};
use crate::net::Net;
use crate::render::{DrawItem, Renderer};

/// A parsed script step.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Set the head pose.
    Head(Pose),
    /// Set a hand's pose.
    HandAt(Hand, Pose),
    /// Move a hand by a delta over frames.
    Move(Hand, Vec3, u32),
    /// Analog trigger.
    Trigger(Hand, f32),
    /// Analog grip.
    Grip(Hand, f32),
    /// A one-frame press.
    Press(Hand, Button),
    /// Thumbstick.
    Stick(Hand, Vec2),
    /// Panel tool.
    Tool(Tool),
    /// Panel color.
    Color(usize),
    /// Run frames.
    Frames(u32),
    /// Run until the replica is synced.
    WaitSynced,
    /// Run until the replica holds at least this many entities.
    WaitEntities(usize),
    /// Run until this client's committed mesh gestures are in the replica.
    WaitApplied,
    /// Run until another member has something selected.
    WaitOthersSelection,
    /// Spawn a grid of N entities (the first S spheres, the rest cubes): benchmarks.
    Grid(u32, u32),
    /// Reset the frame-time statistics.
    Measure,
    /// Point a hand's ray at a panel control (a tool label, or `color`) from 30 cm away.
    AimPanel(Hand, String),
}

/// Buttons a script can press.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Button {
    /// A / X.
    Primary,
    /// B / Y.
    Secondary,
    /// The trigger.
    Trigger,
}

/// Parses a script.
///
/// # Errors
/// The line number and what is wrong with it.
pub fn parse(text: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        let bad = |why: &str| format!("line {}: {why}: {raw:?}", n.saturating_add(1));
        let num = |i: usize| -> Result<f32, String> {
            w.get(i)
                .and_then(|v| v.parse::<f32>().ok())
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad("expected a number"))
        };
        let count = |i: usize| -> Result<u32, String> {
            w.get(i)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad("expected a count"))
        };
        let hand = |i: usize| match w.get(i).copied() {
            Some("left") => Ok(Hand::Left),
            Some("right") => Ok(Hand::Right),
            _ => Err(bad("expected left or right")),
        };
        let pose = |i: usize| -> Result<Pose, String> {
            Ok(Pose::looking(
                Vec3::new(num(i)?, num(i + 1)?, num(i + 2)?),
                num(i + 3)?.to_radians(),
                num(i + 4)?.to_radians(),
            ))
        };
        let step = match w.first().copied() {
            Some("head") => Step::Head(pose(1)?),
            Some("hand") => Step::HandAt(hand(1)?, pose(2)?),
            Some("move") => Step::Move(
                hand(1)?,
                Vec3::new(num(2)?, num(3)?, num(4)?),
                count(5)?.max(1),
            ),
            Some("trigger") => Step::Trigger(hand(1)?, num(2)?.clamp(0.0, 1.0)),
            Some("grip") => Step::Grip(hand(1)?, num(2)?.clamp(0.0, 1.0)),
            Some("press") => Step::Press(
                hand(1)?,
                match w.get(2).copied() {
                    Some("primary") => Button::Primary,
                    Some("secondary") => Button::Secondary,
                    Some("trigger") => Button::Trigger,
                    _ => return Err(bad("expected primary, secondary or trigger")),
                },
            ),
            Some("stick") => Step::Stick(hand(1)?, Vec2::new(num(2)?, num(3)?)),
            Some("tool") => Step::Tool(match w.get(1).copied() {
                Some("cube") => Tool::Add(Primitive::Cube),
                Some("pyramid") => Tool::Add(Primitive::Pyramid),
                Some("plane") => Tool::Add(Primitive::Plane),
                Some("cylinder") => Tool::Add(Primitive::Cylinder),
                Some("sphere") => Tool::Add(Primitive::Sphere),
                Some("paint") => Tool::Paint,
                Some("extrude") => Tool::Extrude,
                Some("vertex") => Tool::Vertex,
                _ => return Err(bad("unknown tool")),
            }),
            Some("color") => Step::Color(count(1)? as usize),
            Some("frames") => Step::Frames(count(1)?),
            Some("grid") => Step::Grid(count(1)?, count(2)?),
            Some("measure") => Step::Measure,
            Some("aim-panel") => Step::AimPanel(
                hand(1)?,
                w.get(2)
                    .map(|v| (*v).to_owned())
                    .ok_or_else(|| bad("expected a control"))?,
            ),
            Some("wait") => match w.get(1).copied() {
                Some("synced") => Step::WaitSynced,
                Some("entities") => Step::WaitEntities(count(2)? as usize),
                Some("applied") => Step::WaitApplied,
                Some("selection") => Step::WaitOthersSelection,
                _ => {
                    return Err(bad(
                        "expected `wait synced`, `wait entities N`, `wait applied` or `wait selection`",
                    ));
                }
            },
            _ => return Err(bad("unknown step")),
        };
        steps.push(step);
    }
    Ok(steps)
}

/// The simulated devices.
#[derive(Clone, Copy, Debug)]
pub struct Devices {
    /// `stage_from_head`.
    pub head: Pose,
    /// Per hand.
    pub hands: [HandInput; 2],
}

impl Default for Devices {
    fn default() -> Self {
        let hand = |x: f32| HandInput {
            world_from_grip: Pose::looking(Vec3::new(x, 1.2, -0.3), 0.0, 0.0),
            world_from_aim: Pose::looking(Vec3::new(x, 1.2, -0.3), 0.0, 0.0),
            trigger: 0.0,
            grip: 0.0,
            thumbstick: Vec2::ZERO,
            primary: false,
            secondary: false,
        };
        Self {
            head: Pose::looking(Vec3::new(0.0, 1.6, 0.4), 0.0, -15f32.to_radians()),
            hands: [hand(-0.2), hand(0.2)],
        }
    }
}

impl Devices {
    /// This frame's input.
    #[must_use]
    pub fn input(&self) -> FrameInput {
        FrameInput {
            stage_from_head: self.head,
            hands: [Some(self.hands[0]), Some(self.hands[1])],
        }
    }
}

/// How a run went.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    /// Frames run.
    pub frames: u64,
    /// The author id the server gave.
    pub author: Option<u32>,
    /// Entities in the replica at the end: id, translation, rotation, scale, color.
    pub entities: Vec<serde_json::Value>,
    /// The replica's state hash (hex).
    pub state_hash: String,
    /// CPU milliseconds per frame (input, app loop, draw list), p50 / p99 / max.
    pub cpu_ms: [f64; 3],
    /// Render milliseconds per frame (submit and wait for the GPU), p50 / p99 / max.
    pub render_ms: [f64; 3],
    /// The adapter that rendered.
    pub adapter: String,
    /// Haptic pulses requested.
    pub haptics: u64,
    /// Refusals the server sent.
    pub notices: Vec<String>,
    /// Markers of other members' selections drawn in the last frame.
    pub selection_markers: usize,
    /// Entities drawn in the last frame.
    pub drawn: usize,
    /// The panel's tool at the end.
    pub tool: String,
    #[serde(skip)]
    cpu: Vec<f64>,
    #[serde(skip)]
    gpu: Vec<f64>,
}

/// Runs a script against a server with rendering; returns the report.
///
/// # Errors
/// Network or rendering failures and failed waits, as sentences.
pub fn run(
    app: &mut App,
    net: &Net,
    renderer: &mut Renderer,
    steps: &[Step],
    max_frames: u64,
) -> Result<Report, String> {
    let mut dev = Devices::default();
    let mut pump = crate::pump::Pump::new();
    let mut report = Report {
        adapter: renderer.adapter.clone(),
        ..Report::default()
    };
    let mut frame = |dev: &mut Devices, report: &mut Report, app: &mut App| -> Result<(), String> {
        if report.frames >= max_frames {
            return Err(format!(
                "the script did not finish within {max_frames} frames"
            ));
        }
        report.frames = report.frames.saturating_add(1);
        let started = Instant::now();
        crate::pump::Pump::receive(app, net)?;
        let input = dev.input();
        let crate::pump::Pumped {
            out,
            clip,
            items,
            panel,
        } = pump.frame(app, net, &input, renderer.size);
        report.haptics = report.haptics.saturating_add(out.haptics.len() as u64);
        let drawn: Vec<DrawItem<'_>> = items.iter().map(OwnedItem::as_item).collect();
        if let Some(image) = panel {
            renderer.set_panel(&image);
        }
        let overlays = overlays(&input, out.vignette);
        let cpu_done = Instant::now();
        renderer.render(&[clip], &drawn, &overlays);
        report
            .cpu
            .push(cpu_done.duration_since(started).as_secs_f64() * 1000.0);
        report.gpu.push(cpu_done.elapsed().as_secs_f64() * 1000.0);
        report.drawn = items.len();
        // What was drawn: the corner markers (5 cm cubes in a selector's colour).
        let selectors: Vec<Vec4> = app
            .others_selections()
            .iter()
            .map(|(a, _)| crate::app::author_color(*a))
            .collect();
        report.selection_markers = items
            .iter()
            .filter(|i| {
                i.key == "cube"
                    && selectors.contains(&i.color)
                    && (i.world_from_model.x_axis.length() - 0.05).abs() < 1e-4
            })
            .count();
        // Headless runs as fast as it can, but never spins the network thread dry.
        std::thread::sleep(Duration::from_millis(1));
        Ok(())
    };
    for step in steps {
        match *step {
            Step::Head(p) => dev.head = p,
            Step::HandAt(h, p) => {
                dev.hands[h as usize].world_from_grip = p;
                dev.hands[h as usize].world_from_aim = p;
            }
            Step::Move(h, delta, n) => {
                let per = delta / n as f32;
                for _ in 0..n {
                    dev.hands[h as usize].world_from_grip.position += per;
                    dev.hands[h as usize].world_from_aim.position += per;
                    frame(&mut dev, &mut report, app)?;
                }
            }
            Step::Trigger(h, v) => dev.hands[h as usize].trigger = v,
            Step::Grip(h, v) => dev.hands[h as usize].grip = v,
            Step::Press(h, b) => {
                let set = |d: &mut Devices, on: bool| match b {
                    Button::Primary => d.hands[h as usize].primary = on,
                    Button::Secondary => d.hands[h as usize].secondary = on,
                    Button::Trigger => d.hands[h as usize].trigger = if on { 1.0 } else { 0.0 },
                };
                set(&mut dev, true);
                frame(&mut dev, &mut report, app)?;
                set(&mut dev, false);
                frame(&mut dev, &mut report, app)?;
            }
            Step::Stick(h, v) => dev.hands[h as usize].thumbstick = v,
            Step::Tool(t) => app.tool = t,
            Step::Grid(n, s) => app.spawn_grid(n, s),
            Step::AimPanel(h, ref control) => {
                let centre = panel_control_centre(control)
                    .ok_or_else(|| format!("no panel control {control:?}"))?;
                let panel =
                    crate::ui::world_from_panel(&dev.hands[Hand::Left as usize].world_from_grip);
                let target = panel.transform_point3(centre);
                let from = target + panel.transform_vector3(Vec3::Z).normalize() * 0.3;
                let look = glam::Quat::from_rotation_arc(Vec3::NEG_Z, (target - from).normalize());
                let pose = Pose {
                    position: from,
                    orientation: look,
                };
                dev.hands[h as usize].world_from_grip = pose;
                dev.hands[h as usize].world_from_aim = pose;
            }
            Step::Measure => {
                report.cpu.clear();
                report.gpu.clear();
            }
            Step::Color(c) => app.color = c % PALETTE.len(),
            Step::Frames(n) => {
                for _ in 0..n {
                    frame(&mut dev, &mut report, app)?;
                }
            }
            Step::WaitSynced => {
                let until = report.frames.saturating_add(2000);
                while !app.live() {
                    if report.frames >= until {
                        return Err("never joined: `wait synced` ran 2000 frames".into());
                    }
                    frame(&mut dev, &mut report, app)?;
                    std::thread::sleep(Duration::from_millis(4));
                }
            }
            Step::WaitApplied | Step::WaitOthersSelection => {
                let until = report.frames.saturating_add(2000);
                let done = |app: &App| match step {
                    Step::WaitApplied => !app.has_mesh_previews(),
                    _ => !app.others_selections().is_empty(),
                };
                while !done(app) {
                    if report.frames >= until {
                        return Err(format!("`{step:?}` ran 2000 frames"));
                    }
                    frame(&mut dev, &mut report, app)?;
                    std::thread::sleep(Duration::from_millis(4));
                }
            }
            Step::WaitEntities(n) => {
                let until = report.frames.saturating_add(2000);
                while app.connection().replica().scene().entities.len() < n {
                    if report.frames >= until {
                        return Err(format!("`wait entities {n}` ran 2000 frames"));
                    }
                    frame(&mut dev, &mut report, app)?;
                    std::thread::sleep(Duration::from_millis(4));
                }
            }
        }
    }
    let scene = app.connection().replica().scene();
    report.author = app.connection().author().map(|a| a.0);
    report.state_hash = scene
        .state_hash()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    report.entities = scene
        .entities
        .iter()
        .map(|(id, e)| {
            serde_json::json!({
                "id": id.0,
                "translation": e.transform.translation.to_array(),
                "rotation": e.transform.rotation.to_array(),
                "scale": e.transform.scale.to_array(),
                "color": e.color.value.to_array(),
            })
        })
        .collect();
    let (mut cpu, mut gpu) = (
        std::mem::take(&mut report.cpu),
        std::mem::take(&mut report.gpu),
    );
    report.cpu_ms = percentiles(&mut cpu);
    report.render_ms = percentiles(&mut gpu);
    report.notices.clone_from(&app.notices);
    report.tool = format!("{:?}", app.tool);
    Ok(report)
}

fn percentiles(v: &mut [f64]) -> [f64; 3] {
    if v.is_empty() {
        return [0.0; 3];
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into a short list"
        )]
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v.get(i).copied().unwrap_or(0.0)
    };
    [at(0.5), at(0.99), at(1.0)]
}

/// A panel control's centre in the panel quad's frame (unit square, Y up).
fn panel_control_centre(control: &str) -> Option<Vec3> {
    #[allow(clippy::cast_precision_loss, reason = "panel pixels")]
    let at = |x: u32, y: u32| {
        Vec3::new(
            x as f32 / crate::ui::WIDTH as f32 - 0.5,
            0.5 - y as f32 / crate::ui::HEIGHT as f32,
            0.0,
        )
    };
    let row = crate::ui::COLOR_ROW + 12;
    match control {
        "color" => return Some(at(150, row)),
        "undo" => return Some(at(248, row)),
        "redo" => return Some(at(336, row)),
        _ => {}
    }
    if let Some(i) = crate::ui::ACTIONS.iter().position(|(_, label)| {
        label
            .split_whitespace()
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case(control))
    }) {
        let (x, y) = crate::ui::action_button(i);
        return Some(at(x + 91, y + 16));
    }
    let i = crate::ui::TOOLS
        .iter()
        .position(|(_, label)| label.eq_ignore_ascii_case(control))?;
    let (col, row) = (u32::try_from(i % 3).ok()?, u32::try_from(i / 3).ok()?);
    Some(at(8 + col * 124 + 60, 32 + row * 36 + 16))
}

/// Where the panel and the vignette go: the panel above the left grip, tilted towards the
/// eye; the vignette just in front of the head while something is being moved.
#[must_use]
pub fn overlays(input: &FrameInput, vignette: bool) -> crate::render::Overlays {
    let panel =
        input.hands[Hand::Left as usize].map(|h| crate::ui::world_from_panel(&h.world_from_grip));
    let vignette = vignette.then(|| {
        input.stage_from_head.matrix()
            * Mat4::from_translation(Vec3::new(0.0, 0.0, -0.06))
            * Mat4::from_scale(Vec3::splat(0.2))
    });
    crate::render::Overlays { panel, vignette }
}

/// Right-handed perspective projection to wgpu's clip space (depth 0 near … 1 far).
#[must_use]
pub fn perspective(fov_y: f32, aspect: f32, near: f32, far: f32) -> Mat4 {
    let f = 1.0 / (fov_y / 2.0).tan();
    let r = far / (near - far);
    Mat4::from_cols(
        Vec4::new(f / aspect, 0.0, 0.0, 0.0),
        Vec4::new(0.0, f, 0.0, 0.0),
        Vec4::new(0.0, 0.0, r, -1.0),
        Vec4::new(0.0, 0.0, r * near, 0.0),
    )
}

/// One owned draw item (the renderer borrows).
#[derive(Debug)]
pub struct OwnedItem {
    key: String,
    mesh: std::rc::Rc<crate::app::MeshData>,
    world_from_model: Mat4,
    color: Vec4,
}

impl OwnedItem {
    /// Borrowed for the renderer (and for tests of what is drawn).
    #[must_use]
    pub fn as_item(&self) -> DrawItem<'_> {
        DrawItem {
            key: &self.key,
            mesh: &self.mesh,
            world_from_model: self.world_from_model,
            color: self.color,
        }
    }
}

/// What the view shows: the scene, the floor, the controllers and their rays, and the tool
/// panel on the off hand. Returns `clip_from_world` for one (centre) eye and the items.
#[must_use]
pub fn draw_list(app: &mut App, input: &FrameInput, size: (u32, u32)) -> (Mat4, Vec<OwnedItem>) {
    #[allow(clippy::cast_precision_loss, reason = "pixel sizes")]
    let aspect = size.0 as f32 / size.1.max(1) as f32;
    let clip_from_view = perspective(80f32.to_radians(), aspect, 0.05, 200.0);
    let view_from_world = input.stage_from_head.matrix().inverse();
    let mut items = Vec::new();
    let cube = std::rc::Rc::new({
        let m = meshwork_protocol::mesh::Mesh::primitive(Primitive::Cube).triangulate();
        (m.positions, m.normals, m.indices)
    });
    let primitive = |key: &str, world_from_model: Mat4, color: Vec4| OwnedItem {
        key: key.to_owned(),
        mesh: cube.clone(),
        world_from_model,
        color,
    };
    // Floor.
    items.push(primitive(
        "cube",
        Mat4::from_scale_rotation_translation(
            Vec3::new(20.0, 0.01, 20.0),
            glam::Quat::IDENTITY,
            Vec3::new(0.0, -0.005, 0.0),
        ),
        Vec4::new(0.05, 0.055, 0.065, 1.0),
    ));
    // Controllers, rays, the panel.
    for h in [Hand::Left, Hand::Right] {
        let Some(hand) = input.hands[h as usize] else {
            continue;
        };
        let grip = hand.world_from_grip.matrix();
        items.push(primitive(
            "cube",
            grip * Mat4::from_scale(Vec3::new(0.05, 0.04, 0.12)),
            Vec4::new(0.15, 0.15, 0.17, 1.0),
        ));
        let ray = Ray::from_aim(&hand.world_from_aim);
        let hovered = app.hovered[h as usize].is_some();
        let len = 3.0;
        let mid = ray.origin + ray.direction * (len / 2.0);
        let rot = glam::Quat::from_rotation_arc(Vec3::NEG_Z, ray.direction);
        let ray_color = if hovered {
            Vec4::new(0.3, 0.9, 1.0, 1.0)
        } else {
            Vec4::new(0.6, 0.6, 0.65, 1.0)
        };
        items.push(primitive(
            "cube",
            Mat4::from_scale_rotation_translation(Vec3::new(0.004, 0.004, len), rot, mid),
            ray_color,
        ));
    }
    // Others present: a head and two hands each, in the author's colour.
    for (author, other) in app.others() {
        let color = crate::app::author_color(*author);
        if let Some(head) = other.head {
            items.push(primitive(
                "cube",
                head.matrix() * Mat4::from_scale(Vec3::new(0.18, 0.22, 0.2)),
                color,
            ));
        }
        for hand in other.hands.iter().flatten() {
            items.push(primitive(
                "cube",
                hand.matrix() * Mat4::from_scale(Vec3::splat(0.06)),
                color,
            ));
        }
    }
    // The scene (the selection a little brighter).
    let selected = app.selected;
    let others_selections = app.others_selections();
    for d in app.entity_draws() {
        let mut color = d.color;
        if selected == Some(d.id) {
            color = (color + Vec4::new(0.15, 0.15, 0.15, 0.0)).min(Vec4::ONE);
        }
        let world_from_model = crate::input::matrix(&d.transform);
        // Another member's selection: a marker on each corner of its box, in their colour.
        for (author, _) in others_selections.iter().filter(|(_, e)| *e == d.id) {
            let (lo, hi) = d.mesh.0.iter().fold(
                (Vec3::splat(f32::MAX), Vec3::splat(f32::MIN)),
                |(lo, hi), p| (lo.min(Vec3::from_array(*p)), hi.max(Vec3::from_array(*p))),
            );
            for corner in 0..8u8 {
                let pick = |bit: u8, a: f32, b: f32| if corner & bit == 0 { a } else { b };
                let local = Vec3::new(
                    pick(1, lo.x, hi.x),
                    pick(2, lo.y, hi.y),
                    pick(4, lo.z, hi.z),
                );
                items.push(primitive(
                    "cube",
                    Mat4::from_translation(world_from_model.transform_point3(local))
                        * Mat4::from_scale(Vec3::splat(0.05)),
                    crate::app::author_color(*author),
                ));
            }
        }
        items.push(OwnedItem {
            key: d.key,
            mesh: d.mesh,
            world_from_model,
            color,
        });
    }
    (clip_from_view * view_from_world, items)
}
