//! Per-author undo and redo: the steps each author made, what each changed (every touched value
//! before and after, element ids included), and the rules that revert a step against the
//! current scene ([`Command::Undo`], [`Command::Redo`]; the contract is `docs/protocol.md`,
//! "Undo and redo").
//!
//! Only the server keeps a [`History`] (a scene made with [`Scene::with_history`]); it is
//! derived from the log, so replaying the log rebuilds it and undo survives restarts. Replicas
//! keep none: the effect of an undo reaches them as a scene delta of the entities it changed.
//!
//! Rules:
//! - A step is one scene-changing entry, or the entries a [`Command::Step`] announces.
//! - Undo puts back every value the step changed, provided each still holds the value the step
//!   left (redo: the value the undo left). If one does not, someone changed it since — or built
//!   on it — and the undo is refused naming that author; nothing changes. A mesh's restored
//!   state passes the topology check like any edit, or the undo is refused.
//! - A new step of an author clears what that author may redo; others' steps clear nothing.
//! - At most [`MAX_STEPS_PER_AUTHOR`] steps per author and [`MAX_HISTORY_BYTES`] in all are
//!   kept, the oldest dropped first.

#![allow(
    clippy::arithmetic_side_effects,
    reason = "counters bounded by the history's size limits"
)]

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use glam::Vec4;

use crate::command::{Command, Material, Primitive, Transform};
use crate::editmesh::{EditError, EditMesh, IdSource, MeshChange, MeshSlot, Side};
use crate::ids::{AuthorId, CommandId, EntityId};
use crate::registry::CommandKind;
use crate::scene::{Entity, Geometry, Limits, Lww, Scene};

/// Steps kept per author (older ones can no longer be undone).
pub const MAX_STEPS_PER_AUTHOR: usize = 128;
/// Rough bytes of recorded values kept in all; beyond it the oldest steps go first.
pub const MAX_HISTORY_BYTES: usize = 128 << 20;

/// Why an undo or redo was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UndoReason {
    /// The author has no step left to undo.
    NothingToUndo,
    /// The author has nothing to redo (never undone, or a newer step of theirs cleared it).
    NothingToRedo,
    /// The named step is not one of the author's kept steps, or not in the needed state.
    NoSuchStep,
    /// Someone changed a value the step changed since.
    Changed,
    /// Someone built on what the step made (the restored mesh would not be valid).
    BuiltOn,
    /// This scene keeps no history (a replica).
    Unavailable,
}

impl UndoReason {
    /// snake_case name, for metrics labels.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NothingToUndo => "nothing_to_undo",
            Self::NothingToRedo => "nothing_to_redo",
            Self::NoSuchStep => "no_such_step",
            Self::Changed => "changed",
            Self::BuiltOn => "built_on",
            Self::Unavailable => "unavailable",
        }
    }
}

/// A refused undo or redo: why, who (when another author's edit is the reason) and a sentence
/// for the user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UndoRefusal {
    /// Why.
    pub reason: UndoReason,
    /// The author whose later edit blocks it, when known.
    pub by: Option<AuthorId>,
    /// The sentence shown to the user.
    pub message: String,
}

fn refuse<T>(reason: UndoReason, by: Option<AuthorId>, message: String) -> Result<T, EditError> {
    Err(EditError::Undo(UndoRefusal {
        reason,
        by,
        message,
    }))
}

/// An entity's absolute properties (everything but existence and geometry).
#[derive(Clone, Debug, PartialEq)]
struct Props {
    name: Lww<String>,
    color: Lww<Vec4>,
    material: Lww<Material>,
    transform: (Transform, CommandId),
}

impl Props {
    fn of(e: &Entity) -> Self {
        Self {
            name: e.name.clone(),
            color: e.color.clone(),
            material: e.material.clone(),
            transform: (e.transform, e.transform_by),
        }
    }
}

/// What a step did to one entity.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EntityChange {
    /// The entity came or went: its whole state before and after (`None`: absent). The other
    /// fields are empty then.
    pub existence: Option<Box<(Option<Entity>, Option<Entity>)>>,
    /// Display name.
    pub name: Option<(Lww<String>, Lww<String>)>,
    /// Base color.
    pub color: Option<(Lww<Vec4>, Lww<Vec4>)>,
    /// Material.
    pub material: Option<(Lww<Material>, Lww<Material>)>,
    /// Transform and the command that last set it absolutely.
    pub transform: Option<((Transform, CommandId), (Transform, CommandId))>,
    /// The mesh's changed entries.
    pub mesh: Option<MeshChange>,
    /// The primitive the entity was before the step turned it into an edited mesh.
    pub primitive: Option<Primitive>,
}

/// One value a step changed, for conflict reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The entity as a whole (it came or went).
    Entity(EntityId),
    /// Its name.
    Name(EntityId),
    /// Its color.
    Color(EntityId),
    /// Its material.
    Material(EntityId),
    /// Its transform.
    Transform(EntityId),
    /// One entry of its mesh.
    Mesh(EntityId, MeshSlot),
}

impl core::fmt::Display for Slot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Entity(e) => write!(f, "{e}"),
            Self::Name(e) => write!(f, "the name of {e}"),
            Self::Color(e) => write!(f, "the color of {e}"),
            Self::Material(e) => write!(f, "the material of {e}"),
            Self::Transform(e) => write!(f, "the transform of {e}"),
            Self::Mesh(e, s) => write!(f, "{s} of {e}"),
        }
    }
}

fn keep<T: PartialEq>(pair: Option<(T, T)>) -> Option<(T, T)> {
    pair.filter(|(b, a)| b != a)
}

fn then<T: PartialEq>(earlier: &mut Option<(T, T)>, later: Option<(T, T)>) {
    if let Some((b, a)) = later {
        let merged = match earlier.take() {
            Some((first, _)) => (first, a),
            None => (b, a),
        };
        *earlier = keep(Some(merged));
    }
}

impl EntityChange {
    fn is_empty(&self) -> bool {
        self.existence.is_none()
            && self.name.is_none()
            && self.color.is_none()
            && self.material.is_none()
            && self.transform.is_none()
            && self.mesh.as_ref().is_none_or(MeshChange::is_empty)
    }

    /// Whether the change names `slot`.
    fn touches(&self, entity: EntityId, slot: Slot) -> bool {
        if self.existence.is_some() {
            return matches!(slot, Slot::Entity(e) | Slot::Name(e) | Slot::Color(e)
                | Slot::Material(e) | Slot::Transform(e) | Slot::Mesh(e, _) if e == entity);
        }
        match slot {
            Slot::Entity(e) => e == entity,
            Slot::Name(e) => e == entity && self.name.is_some(),
            Slot::Color(e) => e == entity && self.color.is_some(),
            Slot::Material(e) => e == entity && self.material.is_some(),
            Slot::Transform(e) => e == entity && self.transform.is_some(),
            Slot::Mesh(e, s) => e == entity && self.mesh.as_ref().is_some_and(|m| m.touches(s)),
        }
    }

    /// The first value of `current` that does not hold `side`'s value.
    fn first_mismatch(
        &self,
        entity: EntityId,
        current: Option<&Entity>,
        side: Side,
    ) -> Option<Slot> {
        if let Some(pair) = &self.existence {
            return (side.of(pair).as_ref() != current).then_some(Slot::Entity(entity));
        }
        let Some(e) = current else {
            return Some(Slot::Entity(entity));
        };
        if self.name.as_ref().is_some_and(|p| *side.of(p) != e.name) {
            return Some(Slot::Name(entity));
        }
        if self.color.as_ref().is_some_and(|p| *side.of(p) != e.color) {
            return Some(Slot::Color(entity));
        }
        if self
            .material
            .as_ref()
            .is_some_and(|p| *side.of(p) != e.material)
        {
            return Some(Slot::Material(entity));
        }
        if self
            .transform
            .as_ref()
            .is_some_and(|p| *side.of(p) != (e.transform, e.transform_by))
        {
            return Some(Slot::Transform(entity));
        }
        let change = self.mesh.as_ref()?;
        let slot = match &e.geometry {
            Geometry::Mesh(m) => change.first_mismatch(m, side),
            Geometry::Primitive(p) => {
                change.first_mismatch(&EditMesh::from_primitive(*p, e.spawned_by), side)
            }
        };
        slot.map(|s| Slot::Mesh(entity, s))
    }

    /// Adds a later change of the same entity in the same step; `current` is the entity now.
    fn then(&mut self, later: Self, current: Option<&Entity>) {
        if let Some(pair) = &mut self.existence {
            pair.1 = current.cloned();
            if self.existence.as_ref().is_some_and(|p| p.0 == p.1) {
                self.existence = None;
            }
            return;
        }
        if let Some(pair) = later.existence {
            let (before, after) = *pair;
            // The step changed the entity, then it went (or came back): the whole entity as the
            // step found it is the one it went with, with the earlier changes put back.
            let before = before.map(|mut e| {
                self.put(&mut e, Side::Before);
                e
            });
            *self = Self {
                existence: keep(Some((before, after))).map(Box::new),
                ..Self::default()
            };
            return;
        }
        then(&mut self.name, later.name);
        then(&mut self.color, later.color);
        then(&mut self.material, later.material);
        then(&mut self.transform, later.transform);
        if let Some(m) = later.mesh {
            match &mut self.mesh {
                Some(earlier) => earlier.then(m),
                None => self.mesh = Some(m),
            }
        }
        self.primitive = self.primitive.or(later.primitive);
    }

    /// Puts `side`'s values into `e` (a copy being rebuilt; best effort, used for the state
    /// an entity had when a step began).
    fn put(&self, e: &mut Entity, side: Side) {
        if let Some(p) = &self.name {
            e.name = side.of(p).clone();
        }
        if let Some(p) = &self.color {
            e.color = side.of(p).clone();
        }
        if let Some(p) = &self.material {
            e.material = side.of(p).clone();
        }
        if let Some(p) = &self.transform {
            (e.transform, e.transform_by) = *side.of(p);
        }
        if let Some(change) = &self.mesh {
            let mut m = e.geometry.edit_mesh(e.spawned_by);
            let mut ids = IdSource::new(e.spawned_by);
            if m.apply_change(&mut ids, change, side).is_ok() {
                e.geometry = settle_form(m, self.primitive, side, e.spawned_by);
            }
        }
    }

    fn weight(&self) -> usize {
        let whole = |e: &Option<Entity>| {
            e.as_ref().map_or(0, |e| match &e.geometry {
                Geometry::Mesh(m) => m.vertices().len() * 64 + m.faces().len() * 96,
                Geometry::Primitive(_) => 0,
            })
        };
        256 + self
            .existence
            .as_ref()
            .map_or(0, |p| whole(&p.0) + whole(&p.1))
            + self.mesh.as_ref().map_or(0, MeshChange::weight)
    }
}

/// The geometry a restored mesh takes: back to its primitive form when undo restored exactly
/// the primitive the step started from (so undo gives the same bytes as before the step).
fn settle_form(
    m: EditMesh,
    primitive: Option<Primitive>,
    side: Side,
    spawned_by: CommandId,
) -> Geometry {
    match primitive {
        Some(p) if side == Side::Before && m == EditMesh::from_primitive(p, spawned_by) => {
            Geometry::Primitive(p)
        }
        _ => Geometry::Mesh(m),
    }
}

/// One step of one author.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Step {
    /// The id of its first entry (its [`Command::Step`] when it had one): how undo names it.
    pub id: CommandId,
    /// Who made it.
    pub author: AuthorId,
    /// What the user did (the step's label, or the first entry's kind).
    pub label: String,
    /// Its entries, in order.
    pub entries: Vec<(CommandId, CommandKind)>,
    /// What it changed, per entity.
    /// (Boxed: a map node holds eleven, and most steps change one entity.)
    pub changes: BTreeMap<EntityId, Box<EntityChange>>,
    /// The undo that reverted it, while it is undone.
    pub undone_by: Option<CommandId>,
    /// It is undone and may be redone (a newer step of the author's clears this).
    pub redoable: bool,
    /// The latest undo or redo of it.
    pub reverted_by: Option<CommandId>,
    /// Its place among all steps ever made in this session, from 1 (a stable paging cursor).
    pub serial: u64,
    /// When (in the history's own count of changes) its values were last written: made,
    /// undone or redone. Later writers of the same values are the ones that block an undo.
    written_at: u64,
    weight: usize,
}

impl Step {
    /// Whether it changed `slot`.
    fn touches(&self, slot: Slot) -> bool {
        let entity = match slot {
            Slot::Entity(e)
            | Slot::Name(e)
            | Slot::Color(e)
            | Slot::Material(e)
            | Slot::Transform(e)
            | Slot::Mesh(e, _) => e,
        };
        self.changes
            .get(&entity)
            .is_some_and(|c| c.touches(entity, slot))
    }

    /// Whether it changed element `id` of `entity` (a vertex, a face or an edge), or the
    /// entity as a whole.
    #[must_use]
    pub fn touches_element(&self, entity: EntityId, id: crate::editmesh::ElementId) -> bool {
        let Some(c) = self.changes.get(&entity) else {
            return false;
        };
        if c.existence.is_some() {
            return true;
        }
        c.mesh.as_ref().is_some_and(|m| {
            let v = crate::editmesh::VertexKey(id);
            m.verts.contains_key(&v)
                || m.moved.contains_key(&v)
                || m.faces.contains_key(&crate::editmesh::FaceKey(id))
                || m.edges
                    .values()
                    .any(|(b, a)| b.is_some_and(|k| k.0 == id) || a.is_some_and(|k| k.0 == id))
        })
    }

    /// Count of mesh elements it named (for the history view).
    #[must_use]
    pub fn elements(&self) -> usize {
        self.changes
            .values()
            .filter_map(|c| c.mesh.as_ref())
            .map(|m| m.verts.len() + m.faces.len())
            .sum()
    }
}

/// A step being filled by the entries a [`Command::Step`] announced.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Open {
    id: CommandId,
    label: String,
    left: u16,
    /// The step record exists (its first entry arrived).
    started: bool,
}

/// Every author's steps, oldest first (see the module docs).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct History {
    /// Each author's steps, oldest first (an author's own deque: recording and bounding a step
    /// never walks the others').
    steps: BTreeMap<AuthorId, VecDeque<Step>>,
    open: BTreeMap<AuthorId, Open>,
    clock: u64,
    bytes: usize,
    made: u64,
    /// Per author, how many steps may be redone: a new step clears them, and walks the
    /// author's steps only when there are some (a replay records every entry of the log).
    redoable: BTreeMap<AuthorId, usize>,
}

/// Where a step is: its author's deque and the place in it.
type Loc = (AuthorId, usize);

/// The state of one entity before a command, to find what the command changed.
struct Before {
    entity: EntityId,
    props: Option<Props>,
    primitive: Option<Primitive>,
    /// The whole entity, when the command may remove it.
    whole: Option<Entity>,
}

impl History {
    /// The kept steps, oldest first (by serial).
    #[must_use]
    pub fn steps(&self) -> alloc::vec::IntoIter<&Step> {
        let mut all: Vec<&Step> = self.all().collect();
        all.sort_unstable_by_key(|s| s.serial);
        all.into_iter()
    }

    /// Every kept step, in no particular order.
    fn all(&self) -> impl Iterator<Item = &Step> + Clone {
        self.steps.values().flatten()
    }

    fn at(&self, (author, i): Loc) -> Option<&Step> {
        self.steps.get(&author)?.get(i)
    }

    /// The step named `id`.
    #[must_use]
    pub fn step(&self, id: CommandId) -> Option<&Step> {
        self.steps.get(&{ id.author })?.iter().find(|s| s.id == id)
    }

    /// The step an entry belongs to (its own, or the one it undid or redid).
    #[must_use]
    pub fn step_of_entry(&self, entry: CommandId) -> Option<&Step> {
        self.steps
            .get(&{ entry.author })?
            .iter()
            .rev()
            .find(|s| s.reverted_by == Some(entry) || s.entries.iter().any(|(id, _)| *id == entry))
    }

    /// The latest step, not undone, that changed `slot` (who last changed this).
    #[must_use]
    pub fn last_writer(&self, slot: Slot) -> Option<&Step> {
        self.all()
            .filter(|s| s.undone_by.is_none() && s.touches(slot))
            .max_by_key(|s| s.written_at)
    }

    /// The latest step that changed anything of `entity` and is not undone.
    #[must_use]
    pub fn last_entity_writer(&self, entity: EntityId) -> Option<&Step> {
        self.all()
            .filter(|s| s.undone_by.is_none() && s.changes.contains_key(&entity))
            .max_by_key(|s| s.written_at)
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Opens a step for `author` (closing any open one).
    fn open(&mut self, author: AuthorId, id: CommandId, entries: u16, label: &str) {
        self.open.insert(
            author,
            Open {
                id,
                label: label.to_string(),
                left: entries,
                started: false,
            },
        );
    }

    /// Before one entry records `changes` entity changes (an import): they join the author's
    /// open step (which counted the entry once) or open a step of their own.
    fn open_for(&mut self, author: AuthorId, id: CommandId, changes: usize, label: &str) {
        let more = u16::try_from(changes.saturating_sub(1)).unwrap_or(u16::MAX);
        match self.open.get_mut(&author).filter(|o| o.left > 0) {
            Some(o) => o.left = o.left.saturating_add(more),
            None => self.open(author, id, more.saturating_add(1), label),
        }
    }

    /// Records what entry `id` of `author` changed.
    fn record(
        &mut self,
        author: AuthorId,
        id: CommandId,
        kind: CommandKind,
        entity: EntityId,
        change: EntityChange,
        current: Option<&Entity>,
    ) {
        let open = self.open.get_mut(&author).filter(|o| o.left > 0);
        let joins = open.as_ref().is_some_and(|o| o.started);
        let (step_id, label) = match open {
            Some(o) => {
                o.left -= 1;
                let named = (o.id, o.label.clone());
                let was_started = o.started;
                o.started = true;
                if o.left == 0 {
                    self.open.remove(&author);
                }
                if was_started {
                    (named.0, String::new())
                } else {
                    named
                }
            }
            None => (id, String::new()),
        };
        let written_at = self.tick();
        if joins
            && let Some(step) = self
                .steps
                .get_mut(&author)
                .and_then(|d| d.iter_mut().rev().find(|s| s.id == step_id))
        {
            // An import records one change per entity under one entry.
            if step.entries.last() != Some(&(id, kind)) {
                step.entries.push((id, kind));
            }
            let before = step.weight;
            if let Some(c) = step.changes.get_mut(&entity) {
                c.then(change, current);
                if c.is_empty() {
                    step.changes.remove(&entity);
                }
            } else if !change.is_empty() {
                step.changes.insert(entity, Box::new(change));
            }
            step.weight = step.changes.values().map(|c| c.weight()).sum();
            step.written_at = written_at;
            self.bytes = self.bytes - before + step.weight;
            self.bound(author);
            return;
        }
        if change.is_empty() && !joins && step_id == id {
            // Nothing happened (an edit of a missing entity): nothing to undo, no redo lost.
            return;
        }
        // A new step: what the author could redo is gone.
        let mine = self.steps.entry(author).or_default();
        if self.redoable.remove(&author).is_some_and(|n| n > 0) {
            for s in mine.iter_mut() {
                s.redoable = false;
            }
        }
        let label = if label.is_empty() {
            default_label(kind).into()
        } else {
            label
        };
        let mut changes = BTreeMap::new();
        if !change.is_empty() {
            changes.insert(entity, Box::new(change));
        }
        let weight = changes.values().map(|c| c.weight()).sum();
        self.bytes += weight;
        self.made += 1;
        mine.push_back(Step {
            serial: self.made,
            id: step_id,
            author,
            label,
            entries: alloc::vec![(id, kind)],
            changes,
            undone_by: None,
            redoable: false,
            reverted_by: None,
            written_at,
            weight,
        });
        self.bound(author);
    }

    /// Drops the oldest steps beyond the limits: the author's beyond its count, then the
    /// oldest of all (by serial) while the bytes are over.
    fn bound(&mut self, author: AuthorId) {
        if let Some(mine) = self.steps.get_mut(&author)
            && mine.len() > MAX_STEPS_PER_AUTHOR
            && let Some(s) = mine.pop_front()
        {
            self.forget(&s);
        }
        while self.bytes > MAX_HISTORY_BYTES && self.all().nth(1).is_some() {
            let oldest = self
                .steps
                .iter()
                .filter_map(|(a, d)| d.front().map(|s| (s.serial, *a)))
                .min();
            let Some((_, a)) = oldest else { break };
            if let Some(s) = self.steps.get_mut(&a).and_then(VecDeque::pop_front) {
                self.forget(&s);
            }
        }
    }

    /// Keeps the counts right for a step that leaves the history.
    fn forget(&mut self, s: &Step) {
        self.bytes -= s.weight;
        if s.redoable
            && let Some(n) = self.redoable.get_mut(&s.author)
        {
            *n = n.saturating_sub(1);
        }
    }

    /// Who wrote `slot` after step `index` last wrote it: the latest such step, another
    /// author's first.
    fn blocker(&self, index: Loc, slot: Slot) -> Option<&Step> {
        let target = self.at(index)?;
        let later = || {
            self.all()
                .filter(move |s| s.written_at > target.written_at && s.touches(slot))
        };
        later()
            .filter(|s| s.author != target.author)
            .max_by_key(|s| s.written_at)
            .or_else(|| later().max_by_key(|s| s.written_at))
    }

    /// The latest step of another author written after step `index` (made, undone or redone
    /// since) that changed one of the values it changed, and that value. Even when the value
    /// is back as the step left it (the other author undid their change), that author was the
    /// last to write it, and an undo never overwrites another author's write.
    fn later_writer(&self, index: Loc) -> Option<(&Step, Slot)> {
        let target = self.at(index)?;
        self.all()
            .filter(|s| s.written_at > target.written_at && s.author != target.author)
            .filter_map(|s| shared_slot(target, s).map(|slot| (s, slot)))
            .max_by_key(|(s, _)| s.written_at)
    }

    /// The latest other author's step written after step `index` that changed one of its
    /// entities (who built on it).
    fn builder(&self, index: Loc) -> Option<&Step> {
        let target = self.at(index)?;
        self.all()
            .filter(|s| {
                s.written_at > target.written_at
                    && s.author != target.author
                    && s.changes.keys().any(|e| target.changes.contains_key(e))
            })
            .max_by_key(|s| s.written_at)
    }
}

/// What the history calls a step of one entry of `kind` (the user's words, not the wire's).
const fn default_label(kind: CommandKind) -> &'static str {
    match kind {
        CommandKind::Spawn => "add",
        CommandKind::Despawn => "delete",
        CommandKind::Translate => "move",
        CommandKind::Rotate => "rotate",
        CommandKind::Scale => "scale",
        CommandKind::SetName => "rename",
        CommandKind::SetColor => "color",
        CommandKind::SetMaterial => "material",
        CommandKind::SetTransform => "set transform",
        CommandKind::VertexCreate => "add vertex",
        CommandKind::MoveVertices => "move vertices",
        CommandKind::CreateFace => "make face",
        CommandKind::DeleteElements => "delete elements",
        CommandKind::ExtrudeFaces => "extrude faces",
        CommandKind::ExtrudeEdges => "extrude edges",
        CommandKind::SubdivideFaces => "subdivide",
        CommandKind::Smooth => "smooth",
        CommandKind::Weld => "weld",
        CommandKind::Duplicate => "duplicate",
        CommandKind::Import => "import",
        CommandKind::Mirror => "mirror",
        other => other.as_str(),
    }
}

/// The commands of one gesture as one undo step: a [`Command::Step`] before them when two or
/// more of them change the scene (a drag that moved and turned, an add with its colour), else
/// the commands as they are. Selections and tools do not count. The one rule every client uses.
#[must_use]
pub fn one_step(commands: Vec<Command>, label: &str) -> Vec<Command> {
    let edits = commands
        .iter()
        .filter(|c| Scene::undoable(c.kind()))
        .count();
    let Ok(entries) = u16::try_from(edits) else {
        return commands;
    };
    if !(2..=crate::command::MAX_STEP_ENTRIES).contains(&entries) {
        return commands;
    }
    let mut label: String = label
        .chars()
        .take(crate::command::MAX_LABEL_BYTES / 4)
        .collect();
    label.retain(|c| !c.is_control());
    let mut out = Vec::with_capacity(commands.len().saturating_add(1));
    out.push(Command::Step { entries, label });
    out.extend(commands);
    out
}

/// A value both steps changed.
fn shared_slot(a: &Step, b: &Step) -> Option<Slot> {
    for (e, ca) in &a.changes {
        let Some(cb) = b.changes.get(e) else {
            continue;
        };
        if ca.existence.is_some() || cb.existence.is_some() {
            return Some(Slot::Entity(*e));
        }
        if ca.name.is_some() && cb.name.is_some() {
            return Some(Slot::Name(*e));
        }
        if ca.color.is_some() && cb.color.is_some() {
            return Some(Slot::Color(*e));
        }
        if ca.material.is_some() && cb.material.is_some() {
            return Some(Slot::Material(*e));
        }
        if ca.transform.is_some() && cb.transform.is_some() {
            return Some(Slot::Transform(*e));
        }
        if let (Some(ma), Some(mb)) = (&ca.mesh, &cb.mesh) {
            let (small, large) = if ma.weight() <= mb.weight() {
                (ma, mb)
            } else {
                (mb, ma)
            };
            if let Some(slot) = small.slots().find(|s| large.touches(*s)) {
                return Some(Slot::Mesh(*e, slot));
            }
        }
    }
    None
}

fn describe(step: &Step) -> String {
    format!("your step \u{201c}{}\u{201d} ({})", step.label, step.id)
}

impl Scene {
    /// This scene keeps an undo history from now on (the server's scenes; see
    /// [`crate::history`]).
    #[must_use]
    pub fn with_history(mut self) -> Self {
        self.history = Some(Box::default());
        self
    }

    /// The undo history, if this scene keeps one.
    #[must_use]
    pub fn history(&self) -> Option<&History> {
        self.history.as_deref()
    }

    /// This scene keeps `history` as its undo history (a session restarting from a base that
    /// carried it: undo of the steps made before the base goes on working).
    #[must_use]
    pub fn with_history_of(mut self, history: History) -> Self {
        self.history = Some(Box::new(history));
        self
    }

    /// Whether a command kind is recorded as (part of) an undo step.
    #[must_use]
    pub const fn undoable(kind: CommandKind) -> bool {
        !matches!(
            kind,
            CommandKind::Select
                | CommandKind::ToolActivate
                | CommandKind::ToolDeactivate
                | CommandKind::SetSessionName
                | CommandKind::SetDisplayName
                | CommandKind::SetRole
                | CommandKind::Kick
                | CommandKind::EdgeExtrude
                | CommandKind::FaceSubdivide
                | CommandKind::Step
                | CommandKind::Undo
                | CommandKind::Redo
        )
    }

    /// The entities an entry changed (for deltas); an undo or redo changes those of its step.
    #[must_use]
    pub fn changed_by(
        &self,
        author: AuthorId,
        id: CommandId,
        command: &Command,
    ) -> Vec<crate::scene::Touched> {
        use crate::scene::Touched;
        match command {
            Command::Undo { .. } | Command::Redo { .. } => self
                .history()
                .and_then(|h| h.step_of_entry(id))
                .map(|s| s.changes.keys().map(|e| Touched::Entity(*e)).collect())
                .unwrap_or_default(),
            Command::Import { .. } => command
                .import_ids()
                .into_iter()
                .map(Touched::Entity)
                .collect(),
            _ => alloc::vec![Scene::touched(author, command)],
        }
    }

    /// [`Scene::edit`] with the history kept: steps opened, entries' changes recorded, undo
    /// and redo carried out.
    pub(crate) fn edit_tracked(
        &mut self,
        id: CommandId,
        author: AuthorId,
        command: &Command,
        limits: &Limits,
    ) -> Result<(), EditError> {
        match command {
            Command::Step { entries, label } => {
                if let Some(h) = &mut self.history {
                    h.open(author, id, *entries, label);
                }
                return Ok(());
            }
            Command::Undo { step } => {
                let result = self.undo(id, author, *step, Side::Before, limits);
                self.forget_triangles();
                return result;
            }
            Command::Redo { step } => {
                let result = self.undo(id, author, *step, Side::After, limits);
                self.forget_triangles();
                return result;
            }
            _ => {}
        }
        let kind = command.kind();
        if self.history.is_none() || !Self::undoable(kind) {
            return self.edit(id, author, command, limits);
        }
        if let Command::Import { .. } = command {
            // Several entities come at once: one step, a change recorded for each.
            let ids = command.import_ids();
            let befores: Vec<Before> = ids.iter().map(|e| self.before(*e, false)).collect();
            let result = self.edit(id, author, command, limits);
            let changes: Vec<EntityChange> =
                befores.into_iter().map(|b| self.change_since(b)).collect();
            result?;
            if let Some(h) = &mut self.history {
                h.open_for(author, id, ids.len(), "Import");
                for (e, change) in ids.iter().zip(changes) {
                    h.record(author, id, kind, *e, change, self.entities.get(e));
                }
            }
            return Ok(());
        }
        let entity = match Scene::touched(author, command) {
            crate::scene::Touched::Entity(e) => e,
            _ => return self.edit(id, author, command, limits),
        };
        let before = self.before(entity, matches!(command, Command::Despawn { .. }));
        let result = self.edit(id, author, command, limits);
        let change = self.change_since(before);
        result?;
        let current = self.entities.get(&entity);
        if let Some(h) = &mut self.history {
            h.record(author, id, kind, entity, change, current);
        }
        Ok(())
    }

    fn before(&mut self, entity: EntityId, removes: bool) -> Before {
        let Some(e) = self.entities.get_mut(&entity) else {
            return Before {
                entity,
                props: None,
                primitive: None,
                whole: None,
            };
        };
        let primitive = match &mut e.geometry {
            Geometry::Mesh(m) => {
                m.record();
                None
            }
            Geometry::Primitive(p) => Some(*p),
        };
        Before {
            entity,
            props: Some(Props::of(e)),
            primitive,
            whole: removes.then(|| e.clone()),
        }
    }

    fn change_since(&mut self, before: Before) -> EntityChange {
        let now = self.entities.get_mut(&before.entity);
        match (before.props, now) {
            (None, None) => EntityChange::default(),
            (None, Some(e)) => {
                if let Geometry::Mesh(m) = &mut e.geometry {
                    let _ = m.take_change();
                }
                EntityChange {
                    existence: Some(Box::new((None, Some(e.clone())))),
                    ..EntityChange::default()
                }
            }
            (Some(_), None) => EntityChange {
                existence: Some(Box::new((before.whole, None))),
                ..EntityChange::default()
            },
            (Some(props), Some(e)) => {
                let after = Props::of(e);
                let (mesh, primitive) = match (&mut e.geometry, before.primitive) {
                    (Geometry::Mesh(m), None) => (Some(m.take_change()), None),
                    (Geometry::Mesh(m), Some(p)) => (
                        Some(MeshChange::between(
                            &EditMesh::from_primitive(p, e.spawned_by),
                            m,
                        )),
                        Some(p),
                    ),
                    (Geometry::Primitive(_), _) => (None, None),
                };
                EntityChange {
                    existence: None,
                    name: keep(Some((props.name, after.name))),
                    color: keep(Some((props.color, after.color))),
                    material: keep(Some((props.material, after.material))),
                    transform: keep(Some((props.transform, after.transform))),
                    mesh: mesh.filter(|m| !m.is_empty()),
                    primitive,
                }
            }
        }
    }

    /// Undo (`side` = before) or redo (`side` = after) of one of `author`'s steps.
    fn undo(
        &mut self,
        id: CommandId,
        author: AuthorId,
        step: Option<CommandId>,
        side: Side,
        limits: &Limits,
    ) -> Result<(), EditError> {
        let redo = side == Side::After;
        let Some(history) = self.history.as_deref_mut() else {
            return refuse(
                UndoReason::Unavailable,
                None,
                "this scene keeps no undo history".into(),
            );
        };
        history.open.remove(&author);
        let mine = history.steps.get(&author);
        let candidates = mine
            .into_iter()
            .flat_map(|d| d.iter().enumerate())
            // A step that changed nothing (its edits hit nothing) is not undone or redone: that
            // would be accepted and change nothing.
            .filter(|(_, s)| !s.changes.is_empty())
            .filter(|(_, s)| {
                if redo {
                    s.undone_by.is_some() && s.redoable
                } else {
                    s.undone_by.is_none()
                }
            });
        let index: Option<Loc> = match step {
            Some(want) => candidates
                .filter(|(_, s)| s.id == want)
                .map(|(i, _)| (author, i))
                .next(),
            None => candidates
                .max_by_key(|(_, s)| s.written_at)
                .map(|(i, _)| (author, i)),
        };
        let Some(index) = index else {
            return match (step, redo) {
                (Some(s), false) => refuse(
                    UndoReason::NoSuchStep,
                    None,
                    format!(
                        "{s} is not a step of yours that can be undone (undone already, or too old)"
                    ),
                ),
                (Some(s), true) => refuse(
                    UndoReason::NoSuchStep,
                    None,
                    format!("{s} is not an undone step of yours that can be redone"),
                ),
                (None, false) => refuse(UndoReason::NothingToUndo, None, "nothing to undo".into()),
                (None, true) => refuse(UndoReason::NothingToRedo, None, "nothing to redo".into()),
            };
        };
        let what = if redo { "redo" } else { "undo" };
        // Every value must still hold what the step (or its undo) left.
        let Some(target) = history.at(index) else {
            return refuse(UndoReason::NoSuchStep, None, "the step is gone".into());
        };
        let mut mismatch = None;
        for (entity, change) in &target.changes {
            if let Some(slot) =
                change.first_mismatch(*entity, self.entities.get(entity), side.other())
            {
                mismatch = Some(slot);
                break;
            }
        }
        if let Some(slot) = mismatch {
            let label = &target.label;
            return match history.blocker(index, slot) {
                Some(b) if b.author != author => refuse(
                    UndoReason::Changed,
                    Some(b.author),
                    format!(
                        "cannot {what} \u{201c}{label}\u{201d}: {} has since changed {slot}",
                        b.author
                    ),
                ),
                Some(b) => refuse(
                    UndoReason::Changed,
                    None,
                    format!(
                        "cannot {what} \u{201c}{label}\u{201d}: {} changed {slot} later; {what} that first",
                        describe(b)
                    ),
                ),
                None => refuse(
                    UndoReason::Changed,
                    None,
                    format!("cannot {what} \u{201c}{label}\u{201d}: {slot} has changed since"),
                ),
            };
        }
        if let Some((b, slot)) = history.later_writer(index) {
            let label = &target.label;
            return refuse(
                UndoReason::Changed,
                Some(b.author),
                format!(
                    "cannot {what} \u{201c}{label}\u{201d}: {} has since changed {slot}",
                    b.author
                ),
            );
        }
        let changes: Vec<(EntityId, EntityChange)> = target
            .changes
            .iter()
            .map(|(e, c)| (*e, (**c).clone()))
            .collect();
        let label = target.label.clone();
        let mut ids = IdSource::new(id);
        let mut done: Vec<&(EntityId, EntityChange)> = Vec::new();
        let mut failure = None;
        for item in &changes {
            match self.put_change(&mut ids, item.0, &item.1, side) {
                Ok(()) => done.push(item),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() && self.triangle_count() > limits.session_triangles {
            failure = Some(EditError::Limit(format!(
                "the session would have {} triangles; it may have {}",
                self.triangle_count(),
                limits.session_triangles
            )));
        }
        if let Some(e) = failure {
            for (entity, change) in done.into_iter().rev() {
                // Back to the values just checked: cannot fail (they were a valid state).
                let _ = self.put_change(&mut ids, *entity, change, side.other());
            }
            let Some(history) = self.history.as_deref() else {
                return Err(e);
            };
            return match e {
                EditError::Limit(_) => Err(e),
                other => {
                    let by = history.builder(index).map(|b| b.author);
                    let who = by.map_or_else(
                        || "the mesh changed around it".to_string(),
                        |a| format!("{a} has since built on it"),
                    );
                    refuse(
                        UndoReason::BuiltOn,
                        by,
                        format!("cannot {what} \u{201c}{label}\u{201d}: {who} ({other})"),
                    )
                }
            };
        }
        let Some(history) = self.history.as_deref_mut() else {
            return Ok(());
        };
        let written_at = history.tick();
        let Some(step) = history
            .steps
            .get_mut(&index.0)
            .and_then(|d| d.get_mut(index.1))
        else {
            return Ok(());
        };
        step.written_at = written_at;
        step.reverted_by = Some(id);
        let was = step.redoable;
        step.redoable = !redo;
        step.undone_by = (!redo).then_some(id);
        let n = history.redoable.entry(author).or_default();
        match (was, !redo) {
            (false, true) => *n += 1,
            (true, false) => *n = n.saturating_sub(1),
            _ => {}
        }
        Ok(())
    }

    /// Puts `side`'s values of one entity's change into the scene.
    fn put_change(
        &mut self,
        ids: &mut IdSource,
        entity: EntityId,
        change: &EntityChange,
        side: Side,
    ) -> Result<(), EditError> {
        if let Some(pair) = &change.existence {
            match side.of(pair) {
                Some(e) => {
                    self.entities.insert(entity, e.clone());
                }
                None => {
                    self.entities.remove(&entity);
                }
            }
            return Ok(());
        }
        let e = self
            .entities
            .get_mut(&entity)
            .ok_or_else(|| EditError::Missing(format!("{entity}")))?;
        if let Some(m) = &change.mesh {
            let taken = core::mem::replace(&mut e.geometry, Geometry::Primitive(Primitive::Cube));
            let (mut mesh, was) = match taken {
                Geometry::Mesh(mesh) => (mesh, None),
                Geometry::Primitive(p) => (EditMesh::from_primitive(p, e.spawned_by), Some(p)),
            };
            if let Err(err) = mesh.apply_change(ids, m, side) {
                // Nothing changed: the geometry goes back in the form it had.
                e.geometry = match was {
                    Some(p) => Geometry::Primitive(p),
                    None => Geometry::Mesh(mesh),
                };
                return Err(err);
            }
            e.geometry = settle_form(mesh, change.primitive, side, e.spawned_by);
        }
        if let Some(p) = &change.name {
            e.name = side.of(p).clone();
        }
        if let Some(p) = &change.color {
            e.color = side.of(p).clone();
        }
        if let Some(p) = &change.material {
            e.material = side.of(p).clone();
        }
        if let Some(p) = &change.transform {
            (e.transform, e.transform_by) = *side.of(p);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
