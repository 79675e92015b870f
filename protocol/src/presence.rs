//! The client rules of presence and live previews that every client needs the same way (the
//! browser through wasm, the Quest app natively): quantizing poses and transforms for the
//! unreliable lane and back, each author's colour, and what to show of others' drags in
//! progress ([`LivePreviews`]). No clock: time comes in as milliseconds from the caller.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "every value is clamped to the wire's range before a cast; NaN maps to a default"
)]

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use glam::{Quat, Vec3};

use crate::command::{Command, Transform};
use crate::ids::{AuthorId, EntityId};
use crate::scene::Scene;
use crate::wire::{Pose, PreviewTransform, ServerMsg};

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

/// How long another member's live preview shows without an update: a preview whose release was
/// lost (or whose author went quiet) goes after this many milliseconds. Draggers repeat a preview
/// held still at least twice as often.
pub const LIVE_PREVIEW_TTL_MS: u64 = 1000;

/// Another member's drag in progress, as this client shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Live<T> {
    /// Whose drag.
    pub author: AuthorId,
    /// What it shows now: the entity's transform, or the mesh command the gesture would commit.
    pub value: T,
    /// Moves on with every change of `value` (renderers key their caches by it).
    pub serial: u64,
    /// When the last update (or the release) came, in the caller's milliseconds.
    at_ms: u64,
}

/// What the committed scene held when a preview began; once it no longer does, the preview is
/// over (its commit landed, or someone else's did).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Base {
    Transform(Transform),
    /// The entity's mesh revision (`ClientConnection::revision`).
    Revision(u64),
}

/// Others' live previews (transform drags and mesh-edit gestures), by entity: the one rule both
/// clients show them by. A preview starts and moves with each update; its release (`None`) keeps
/// the last state until the committed result lands in the replica, so the entity never jumps
/// back in between. It ends when the entity's committed state moves on from what it was when the
/// preview began, when the entity goes, when its author leaves, or [`LIVE_PREVIEW_TTL_MS`] after
/// its last update. Previews never touch the replica; one's own relayed previews are ignored.
#[derive(Clone, Debug, Default)]
pub struct LivePreviews {
    transforms: BTreeMap<EntityId, (Live<Transform>, Base)>,
    edits: BTreeMap<EntityId, (Live<Command>, Base)>,
    serial: u64,
    changed: BTreeSet<EntityId>,
}

impl LivePreviews {
    /// No previews.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes a server message: a relayed preview from another member (`me` is this client's
    /// author) or a member's departure. `scene` is the replica, `revision` gives an entity's mesh
    /// revision, `now_ms` the time it arrived.
    pub fn receive(
        &mut self,
        msg: &ServerMsg,
        me: Option<AuthorId>,
        scene: &Scene,
        revision: impl Fn(EntityId) -> u64,
        now_ms: u64,
    ) {
        match msg {
            ServerMsg::Preview(p) if Some(p.author) != me => {
                let committed = scene.entities.get(&p.preview.entity).map(|e| e.transform);
                let value = p.preview.transform.map(|t| t.transform());
                self.update(
                    p.author,
                    p.preview.entity,
                    committed.map(Base::Transform),
                    value,
                    now_ms,
                );
            }
            ServerMsg::EditPreview(p) if Some(p.author) != me => {
                let entity = p.preview.entity;
                let base = scene
                    .entities
                    .contains_key(&entity)
                    .then(|| Base::Revision(revision(entity)));
                self.update(p.author, entity, base, p.preview.command.clone(), now_ms);
            }
            ServerMsg::Left(l) => {
                retain(&mut self.transforms, &mut self.changed, |_, p, _| {
                    p.author != l.author
                });
                retain(&mut self.edits, &mut self.changed, |_, p, _| {
                    p.author != l.author
                });
            }
            _ => {}
        }
    }

    fn update<T>(
        &mut self,
        author: AuthorId,
        entity: EntityId,
        base: Option<Base>,
        value: Option<T>,
        now_ms: u64,
    ) where
        Self: Slot<T>,
    {
        let serial = self.serial.saturating_add(1);
        let map = <Self as Slot<T>>::slot(self);
        match (base, value) {
            // The entity is not (or no longer) in the replica: nothing to show it on.
            (None, _) => {
                if map.remove(&entity).is_none() {
                    return;
                }
            }
            (Some(base), Some(value)) => {
                // A preview keeps the base it began with (an update is not a new drag).
                let base = map.get(&entity).map_or(base, |(_, b)| *b);
                map.insert(
                    entity,
                    (
                        Live {
                            author,
                            value,
                            serial,
                            at_ms: now_ms,
                        },
                        base,
                    ),
                );
                self.serial = serial;
            }
            // Released: the last state stays until the commit lands (or the time runs out).
            (Some(_), None) => {
                if let Some((p, _)) = map.get_mut(&entity) {
                    p.at_ms = now_ms;
                }
                return;
            }
        }
        self.changed.insert(entity);
    }

    /// Drops the previews that are over at `now_ms`: the committed state in `scene` moved on
    /// (see [`LivePreviews`]), the entity went, or the preview went stale. Call it after the
    /// replica changed and now and then (every frame, or a few times a second).
    pub fn settle(&mut self, scene: &Scene, revision: impl Fn(EntityId) -> u64, now_ms: u64) {
        let holds = |e: &EntityId, base: &Base, at_ms: u64| {
            now_ms.saturating_sub(at_ms) <= LIVE_PREVIEW_TTL_MS
                && scene.entities.get(e).is_some_and(|entity| match base {
                    Base::Transform(t) => entity.transform == *t,
                    Base::Revision(r) => revision(*e) == *r,
                })
        };
        retain(&mut self.transforms, &mut self.changed, |e, p, base| {
            holds(e, base, p.at_ms)
        });
        retain(&mut self.edits, &mut self.changed, |e, p, base| {
            holds(e, base, p.at_ms)
        });
    }

    /// The transform another member is dragging `entity` to, if any.
    #[must_use]
    pub fn transform(&self, entity: EntityId) -> Option<&Live<Transform>> {
        self.transforms.get(&entity).map(|(p, _)| p)
    }

    /// The mesh command another member's gesture on `entity` would commit now, if any (run it
    /// on a copy with [`Scene::preview`] to show it).
    #[must_use]
    pub fn edit(&self, entity: EntityId) -> Option<&Live<Command>> {
        self.edits.get(&entity).map(|(p, _)| p)
    }

    /// Every transform preview shown now, by entity.
    pub fn transforms(&self) -> impl Iterator<Item = (EntityId, &Live<Transform>)> {
        self.transforms.iter().map(|(e, (p, _))| (*e, p))
    }

    /// Every mesh-edit preview shown now, by entity.
    pub fn edits(&self) -> impl Iterator<Item = (EntityId, &Live<Command>)> {
        self.edits.iter().map(|(e, (p, _))| (*e, p))
    }

    /// The entities whose shown preview started, moved or ended since the last call.
    pub fn take_changed(&mut self) -> Vec<EntityId> {
        core::mem::take(&mut self.changed).into_iter().collect()
    }
}

/// Keeps the previews `keep` holds, noting the entities of those dropped in `changed`.
fn retain<T>(
    map: &mut BTreeMap<EntityId, (Live<T>, Base)>,
    changed: &mut BTreeSet<EntityId>,
    keep: impl Fn(&EntityId, &Live<T>, &Base) -> bool,
) {
    map.retain(|e, (p, base)| {
        let kept = keep(e, p, base);
        if !kept {
            changed.insert(*e);
        }
        kept
    });
}

/// The map of previews of one kind (so [`LivePreviews::update`] is written once).
trait Slot<T> {
    fn slot(&mut self) -> &mut BTreeMap<EntityId, (Live<T>, Base)>;
}

impl Slot<Transform> for LivePreviews {
    fn slot(&mut self) -> &mut BTreeMap<EntityId, (Live<Transform>, Base)> {
        &mut self.transforms
    }
}

impl Slot<Command> for LivePreviews {
    fn slot(&mut self) -> &mut BTreeMap<EntityId, (Live<Command>, Base)> {
        &mut self.edits
    }
}

/// The server's default presence tick (`--presence-tick-ms`), at which each member's latest
/// reaches the others about 45 times a second: how long a client takes to move its drawing of
/// another member to their latest update until the server's `Welcome` says its own tick.
pub const PLAYOUT_MS: u64 = 22;

/// The longest presence tick a server may run with (`--presence-tick-ms`): the easing
/// ([`playout`]) counts on it.
pub const MAX_TICK_MS: u64 = 100;

/// Whether [`playout`] has reached `to` `elapsed_ms` after the update (a client that draws on
/// demand stops drawing others' moves then).
#[must_use]
pub const fn playout_over(elapsed_ms: u64, tick_ms: u64) -> bool {
    elapsed_ms >= tick_ms
}

/// Where a drawn part of another member (a head, a hand, a cursor) is `elapsed_ms` after an
/// update that found it drawn at `from` and put it at `to`: that share of `tick_ms` (the
/// server's presence tick, `Welcome::presence_tick_ms`) of the way, in a straight line and
/// along the shorter arc, and at `to` from then on. Others move at the display's rate, one tick
/// behind, instead of in steps. Every client draws others by this rule; a part that was not
/// drawn appears at `to` at once, and so does everything when the tick is 0.
#[must_use]
pub fn playout(
    from: (Vec3, Quat),
    to: (Vec3, Quat),
    elapsed_ms: u64,
    tick_ms: u64,
) -> (Vec3, Quat) {
    if playout_over(elapsed_ms, tick_ms) {
        return to;
    }
    #[allow(
        clippy::cast_precision_loss,
        reason = "both are below the tick (at most MAX_TICK_MS), far inside f32's exact integers"
    )]
    let t = elapsed_ms as f32 / tick_ms as f32;
    (from.0.lerp(to.0, t), from.1.slerp(to.1, t).normalize())
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

    mod live {
        use alloc::vec;

        use super::super::*;
        use crate::command::Primitive;
        use crate::ids::CommandId;
        use crate::wire::{EditPreview, EditPreviewOf, Left, Preview, PreviewOf};

        const ME: AuthorId = AuthorId(1);
        const THEM: AuthorId = AuthorId(2);

        fn at(x: f32) -> Transform {
            Transform {
                translation: Vec3::new(x, 0.0, 0.0),
                ..Transform::IDENTITY
            }
        }

        fn scene_with(entity: EntityId) -> Scene {
            let mut s = Scene::new();
            s.apply(
                CommandId {
                    lamport: 1,
                    author: ME,
                },
                ME,
                &Command::Spawn {
                    entity,
                    primitive: Primitive::Cube,
                    transform: at(0.0),
                },
            );
            s
        }

        fn drag(author: AuthorId, entity: EntityId, to: Option<f32>) -> ServerMsg {
            ServerMsg::Preview(PreviewOf {
                author,
                preview: Preview {
                    seq: 1,
                    entity,
                    transform: to.map(|x| PreviewTransform::quantize(&at(x))),
                },
            })
        }

        fn gesture(author: AuthorId, entity: EntityId, on: bool) -> ServerMsg {
            ServerMsg::EditPreview(EditPreviewOf {
                author,
                preview: EditPreview {
                    seq: 1,
                    entity,
                    command: on.then(|| Command::MoveVertices {
                        entity,
                        moves: vec![],
                    }),
                },
            })
        }

        fn shown_x(live: &LivePreviews, e: EntityId) -> Option<f32> {
            live.transform(e).map(|p| p.value.translation.x)
        }

        #[test]
        fn a_drag_shows_moves_and_stays_after_release_until_its_commit_lands() {
            let e = EntityId::new(ME, 1);
            let mut scene = scene_with(e);
            let rev = |_| 0;
            let mut live = LivePreviews::new();
            live.receive(&drag(THEM, e, Some(1.0)), Some(ME), &scene, rev, 0);
            assert_eq!(shown_x(&live, e), Some(1.0));
            let first = live.transform(e).unwrap().serial;
            assert_eq!(live.take_changed(), vec![e]);
            live.receive(&drag(THEM, e, Some(2.0)), Some(ME), &scene, rev, 100);
            assert_eq!(shown_x(&live, e), Some(2.0));
            assert!(live.transform(e).unwrap().serial > first);
            assert_eq!(live.transform(e).unwrap().author, THEM);
            assert_eq!(live.take_changed(), vec![e]);
            // Released: the last place stays (no jump back) while the commit is on its way,
            // and a release is not a change to draw.
            live.receive(&drag(THEM, e, None), Some(ME), &scene, rev, 200);
            assert!(live.take_changed().is_empty());
            live.settle(&scene, rev, 900);
            assert_eq!(shown_x(&live, e), Some(2.0));
            assert!(live.take_changed().is_empty());
            // The commit lands: the replica shows it now, the preview is over.
            scene.apply(
                CommandId {
                    lamport: 2,
                    author: THEM,
                },
                THEM,
                &Command::SetTransform {
                    entity: e,
                    transform: at(2.0),
                },
            );
            live.settle(&scene, rev, 950);
            assert_eq!(shown_x(&live, e), None);
            assert_eq!(live.take_changed(), vec![e]);
        }

        #[test]
        fn a_preview_goes_when_it_goes_quiet_its_entity_goes_or_its_author_leaves() {
            let e = EntityId::new(ME, 1);
            let scene = scene_with(e);
            let rev = |_| 0;
            let mut live = LivePreviews::new();
            live.receive(&drag(THEM, e, Some(1.0)), Some(ME), &scene, rev, 0);
            // A release refreshes the clock too.
            live.receive(&drag(THEM, e, None), Some(ME), &scene, rev, 500);
            live.settle(&scene, rev, 500 + LIVE_PREVIEW_TTL_MS);
            assert_eq!(shown_x(&live, e), Some(1.0));
            live.settle(&scene, rev, 501 + LIVE_PREVIEW_TTL_MS);
            assert_eq!(shown_x(&live, e), None, "a lost release times out");

            live.receive(&drag(THEM, e, Some(1.0)), Some(ME), &scene, rev, 0);
            live.settle(&Scene::new(), rev, 0);
            assert_eq!(shown_x(&live, e), None, "its entity went");
            live.receive(&drag(THEM, e, Some(1.0)), Some(ME), &Scene::new(), rev, 0);
            assert_eq!(shown_x(&live, e), None, "nothing to show it on");

            live.receive(&drag(THEM, e, Some(1.0)), Some(ME), &scene, rev, 0);
            live.receive(&gesture(THEM, e, true), Some(ME), &scene, rev, 0);
            live.take_changed();
            live.receive(
                &ServerMsg::Left(Left { author: THEM }),
                Some(ME),
                &scene,
                rev,
                0,
            );
            assert!(live.transform(e).is_none() && live.edit(e).is_none());
            assert_eq!(live.take_changed(), vec![e]);

            // One's own previews come back relayed only by mistake: never shown.
            live.receive(&drag(ME, e, Some(1.0)), Some(ME), &scene, rev, 0);
            live.receive(&gesture(ME, e, true), Some(ME), &scene, rev, 0);
            assert_eq!(live.transforms().count() + live.edits().count(), 0);
        }

        #[test]
        fn a_mesh_gesture_shows_until_the_mesh_moves_on() {
            let e = EntityId::new(ME, 1);
            let scene = scene_with(e);
            let mut revision = 4;
            let mut live = LivePreviews::new();
            live.receive(&gesture(THEM, e, true), Some(ME), &scene, |_| revision, 0);
            assert!(matches!(
                live.edit(e).map(|p| &p.value),
                Some(Command::MoveVertices { .. })
            ));
            live.receive(&gesture(THEM, e, false), Some(ME), &scene, |_| revision, 10);
            live.settle(&scene, |_| revision, 20);
            assert!(live.edit(e).is_some(), "released, its commit not in yet");
            revision = 5;
            live.settle(&scene, |_| revision, 30);
            assert!(live.edit(e).is_none(), "the committed mesh landed");
        }
    }

    #[test]
    fn a_drawn_part_moves_to_its_update_over_one_tick() {
        let from = (Vec3::ZERO, Quat::IDENTITY);
        let to = (Vec3::new(2.0, 0.0, 0.0), Quat::from_rotation_y(0.4));
        assert_eq!(playout(from, to, 0, PLAYOUT_MS), from);
        let (p, q) = playout(from, to, PLAYOUT_MS / 2, PLAYOUT_MS);
        assert!((p - Vec3::new(1.0, 0.0, 0.0)).length() < 1e-5);
        assert!((q.angle_between(Quat::IDENTITY) - 0.2).abs() < 1e-4);
        assert_eq!(playout(from, to, PLAYOUT_MS, PLAYOUT_MS), to);
        assert_eq!(playout(from, to, 10 * PLAYOUT_MS, PLAYOUT_MS), to);
        // Over the server's own tick; a tick of 0 draws each update at once.
        assert_eq!(playout(from, to, 50, 100).0, from.0.lerp(to.0, 0.5));
        assert_eq!(playout(from, to, 0, 0), to);
        // Over exactly when it stands at `to`.
        for (elapsed, tick) in [(0, PLAYOUT_MS), (PLAYOUT_MS - 1, PLAYOUT_MS), (50, 100)] {
            assert!(!playout_over(elapsed, tick));
            assert_ne!(playout(from, to, elapsed, tick), to);
        }
        for (elapsed, tick) in [(PLAYOUT_MS, PLAYOUT_MS), (0, 0), (101, 100)] {
            assert!(playout_over(elapsed, tick));
        }
    }
}
