//! Partial replicas ([`meshwork_protocol::interest::Hold`]): which entities a client holds, the
//! spatial hash grid that finds them, and what each fan-out sends a client that holds part of
//! the scene ([`meshwork_protocol::wire::Held`]).
//!
//! A client holds the entities whose origin (translation) is inside its region. For each
//! fan-out the session walks the durable entries in order with the client's held set:
//! - an entry on the author's own state or the session (selection, tools, names, roles) goes
//!   to everyone;
//! - an entry on a held entity goes as signed; a spawn inside the region and a copy of a held
//!   entity go as signed and the new entity is held from then on; a despawn of a held entity
//!   goes and the entity is no longer held;
//! - anything else is not sent: an entry on an entity the client does not hold, and what a
//!   replica cannot apply itself (an undo or redo, an import: their result is state).
//!
//! Then every entity the entries touched is placed again: one now inside the region that the
//! client did not hold, or that changed without an entry it was sent, goes as its state; one
//! it held that is gone or now outside goes as `None` (dropped). So after each update the
//! client holds exactly the entities inside its region, each in the server's state.

use std::collections::{BTreeMap, BTreeSet};

use meshwork_protocol::command::Command;
use meshwork_protocol::interest::{Region, cell_of, point_mm};
use meshwork_protocol::scene::{Entity, Scene, Touched};
use meshwork_protocol::{AuthorId, EntityId, SignedEntry};

/// Most cells a region is looked up by before the grid is scanned whole instead.
const MAX_CELLS: usize = 4096;

/// Entities by the hash-grid cell their origin is in: finds what a region holds without
/// visiting every entity. Built when the first client asks to hold a region, then kept up to
/// date with what each fan-out touched.
#[derive(Debug, Default)]
pub(crate) struct Grid {
    cells: BTreeMap<[i32; 3], BTreeSet<EntityId>>,
    cell: BTreeMap<EntityId, [i32; 3]>,
}

/// Where an entity's origin is, in millimetres.
pub(crate) fn origin(e: &Entity) -> [i32; 3] {
    point_mm(e.transform.translation)
}

impl Grid {
    /// Every entity of `scene`, placed.
    pub(crate) fn build(scene: &Scene) -> Self {
        let mut grid = Self::default();
        for (id, e) in &scene.entities {
            grid.put(*id, Some(origin(e)));
        }
        grid
    }

    fn put(&mut self, id: EntityId, at: Option<[i32; 3]>) {
        let now = at.map(cell_of);
        let before = self.cell.get(&id).copied();
        if before == now {
            return;
        }
        if let Some(c) = before {
            if let Some(set) = self.cells.get_mut(&c) {
                set.remove(&id);
                if set.is_empty() {
                    self.cells.remove(&c);
                }
            }
            self.cell.remove(&id);
        }
        if let Some(c) = now {
            self.cells.entry(c).or_default().insert(id);
            self.cell.insert(id, c);
        }
    }

    /// Places `ids` again as `scene` has them (gone: removed).
    pub(crate) fn update(&mut self, scene: &Scene, ids: impl IntoIterator<Item = EntityId>) {
        for id in ids {
            self.put(id, scene.entities.get(&id).map(origin));
        }
    }

    /// The entities of `scene` whose origin is inside `region`.
    pub(crate) fn query(&self, scene: &Scene, region: &Region) -> BTreeSet<EntityId> {
        let inside = |id: &EntityId| {
            scene
                .entities
                .get(id)
                .is_some_and(|e| region.contains(origin(e)))
        };
        match region.cells(MAX_CELLS) {
            Some(cells) => cells
                .iter()
                .filter_map(|c| self.cells.get(c))
                .flatten()
                .copied()
                .filter(inside)
                .collect(),
            None => scene.entities.keys().copied().filter(inside).collect(),
        }
    }
}

/// What a client holding part of the scene has: its region, the entities it holds, and the
/// position and Lamport time its replica stands at (those of the last update it was sent).
#[derive(Clone, Debug)]
pub(crate) struct HoldState {
    pub(crate) region: Region,
    pub(crate) held: BTreeSet<EntityId>,
    pub(crate) position: u64,
    pub(crate) lamport: u64,
    /// Nothing sent yet (asked before the join): the next snapshot is its first.
    pub(crate) fresh: bool,
}

/// How a durable entry reaches partial replicas.
#[derive(Clone, Debug)]
pub(crate) enum Scope {
    /// Authors' state or the session's: every replica applies it.
    Everyone,
    /// A spawn that makes a new entity, its origin there: sent when that is inside.
    Spawn { target: EntityId, at: [i32; 3] },
    /// A copy of `source` as `target`: sent to those who hold the source in step.
    Copy { source: EntityId, target: EntityId },
    /// A removal: sent to those who hold it.
    Despawn { target: EntityId },
    /// Any other change of one entity (a spawn of an id that exists too: it changes
    /// nothing): sent to those who hold it.
    Edit { target: EntityId },
    /// A replica cannot apply it (`Scene::replica_applies`: undo, redo, import): what it
    /// changed goes as state. For these, `Scene::changed_by` names entities only.
    State,
}

impl Scope {
    /// The scope of `command`; `existed`: whether the entity a spawn names existed before it.
    pub(crate) fn of(author: AuthorId, command: &Command, existed: bool) -> Self {
        if !Scene::replica_applies(command) {
            return Self::State;
        }
        match command {
            Command::Spawn {
                entity, transform, ..
            } if !existed => Self::Spawn {
                target: *entity,
                at: point_mm(transform.translation),
            },
            Command::Duplicate { entity, copy, .. } => Self::Copy {
                source: *entity,
                target: *copy,
            },
            Command::Despawn { entity } => Self::Despawn { target: *entity },
            _ => match Scene::touched(author, command) {
                Touched::Entity(target) => Self::Edit { target },
                Touched::Author(_) | Touched::Session => Self::Everyone,
            },
        }
    }
}

/// What one fan-out sends one partial replica.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Entries to send, in order.
    pub(crate) entries: Vec<SignedEntry>,
    /// States to set after them (`None`: dropped).
    pub(crate) states: Vec<(EntityId, Option<Entity>)>,
    /// How what it holds changes.
    pub(crate) change: Change,
}

impl Plan {
    /// Whether there is nothing to send.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.states.is_empty()
    }
}

/// How a replica's held set changes with an update: worked out on top of the set as it is,
/// so planning costs what the fan-out touched, not what the replica holds.
#[derive(Debug, Default)]
pub(crate) struct Change {
    added: BTreeSet<EntityId>,
    removed: BTreeSet<EntityId>,
}

/// A held set as an update goes: the set it started from, and the change so far.
struct Working<'a> {
    base: &'a BTreeSet<EntityId>,
    change: Change,
}

impl Working<'_> {
    fn contains(&self, e: &EntityId) -> bool {
        self.change.added.contains(e) || (self.base.contains(e) && !self.change.removed.contains(e))
    }

    fn insert(&mut self, e: EntityId) {
        self.change.removed.remove(&e);
        if !self.base.contains(&e) {
            self.change.added.insert(e);
        }
    }

    /// Whether it was held.
    fn remove(&mut self, e: &EntityId) -> bool {
        let was = self.contains(e);
        self.change.added.remove(e);
        if self.base.contains(e) {
            self.change.removed.insert(*e);
        }
        was
    }
}

impl Change {
    /// Carries the change out on the set it was worked out on.
    pub(crate) fn apply(self, held: &mut BTreeSet<EntityId>) {
        for e in &self.removed {
            held.remove(e);
        }
        held.extend(self.added);
    }

    /// The whole set becomes `now`.
    pub(crate) fn replace(held: &BTreeSet<EntityId>, now: &BTreeSet<EntityId>) -> Self {
        Self {
            added: now.difference(held).copied().collect(),
            removed: held.difference(now).copied().collect(),
        }
    }
}

/// The update for a replica holding `hold` after the durable `batch` (entries, their scopes and
/// what each touched), `scene` being the durable scene after all of them.
pub(crate) fn plan(
    hold: &HoldState,
    batch: &[(SignedEntry, Scope, Vec<Touched>)],
    scene: &Scene,
) -> Plan {
    let mut held = Working {
        base: &hold.held,
        change: Change::default(),
    };
    let mut entries = Vec::new();
    // Entities whose state the replica cannot reach by the entries it is sent.
    let mut stale: BTreeSet<EntityId> = BTreeSet::new();
    // Everything the entries touched: placed again at the end.
    let mut touched_all: BTreeSet<EntityId> = BTreeSet::new();
    for (entry, scope, touched) in batch {
        let entities = touched.iter().filter_map(|t| match t {
            Touched::Entity(e) => Some(*e),
            Touched::Author(_) | Touched::Session => None,
        });
        touched_all.extend(entities.clone());
        let send = match scope {
            Scope::Everyone => true,
            Scope::State => {
                stale.extend(entities);
                false
            }
            Scope::Spawn { target, at } => {
                let inside = hold.region.contains(*at);
                if inside {
                    held.insert(*target);
                }
                inside
            }
            // A copy of what changed without an entry the replica applies (an undo earlier
            // in this fan-out) would copy the replica's stale state: it goes as state instead.
            Scope::Copy { source, target } => {
                let copyable =
                    held.contains(source) && !stale.contains(source) && !held.contains(target);
                if copyable {
                    held.insert(*target);
                }
                copyable
            }
            Scope::Despawn { target } => held.remove(target),
            Scope::Edit { target } => held.contains(target),
        };
        if send {
            entries.push(entry.clone());
        }
    }
    let mut states = Vec::new();
    for e in &touched_all {
        let inside = scene
            .entities
            .get(e)
            .filter(|x| hold.region.contains(origin(x)));
        match (inside, held.contains(e)) {
            (Some(x), true) => {
                if stale.contains(e) {
                    states.push((*e, Some(x.clone())));
                }
            }
            (Some(x), false) => {
                states.push((*e, Some(x.clone())));
                held.insert(*e);
            }
            (None, true) => {
                states.push((*e, None));
                held.remove(e);
            }
            (None, false) => {}
        }
    }
    Plan {
        entries,
        states,
        change: held.change,
    }
}

/// The update for a replica whose region changed from what it holds to `now_held` (every
/// entity inside the new region): what comes in as state, what goes as `None`.
pub(crate) fn moved(
    held: &BTreeSet<EntityId>,
    now_held: &BTreeSet<EntityId>,
    scene: &Scene,
) -> Vec<(EntityId, Option<Entity>)> {
    let mut states: Vec<(EntityId, Option<Entity>)> =
        held.difference(now_held).map(|e| (*e, None)).collect();
    states.extend(
        now_held
            .difference(held)
            .filter_map(|e| scene.entities.get(e).map(|x| (*e, Some(x.clone())))),
    );
    states.sort_by_key(|(e, _)| *e);
    states
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_protocol::AuthorId;

    #[test]
    fn a_change_worked_out_on_top_of_a_set_is_what_the_same_steps_do_to_a_copy() {
        let id = |k| EntityId::new(AuthorId(1), k);
        let base: BTreeSet<EntityId> = [id(1), id(2), id(3)].into();
        let mut copy = base.clone();
        let mut w = Working {
            base: &base,
            change: Change::default(),
        };
        // Remove a held one and add it back, add a new one and remove it, remove one for good,
        // add one for good.
        let steps: [(bool, u32); 6] = [
            (false, 1),
            (true, 1),
            (true, 9),
            (false, 9),
            (false, 2),
            (true, 7),
        ];
        for (insert, k) in steps {
            if insert {
                w.insert(id(k));
                copy.insert(id(k));
            } else {
                assert_eq!(w.remove(&id(k)), copy.remove(&id(k)));
            }
            for k in 0..10 {
                assert_eq!(w.contains(&id(k)), copy.contains(&id(k)), "{k}");
            }
        }
        let mut applied = base.clone();
        w.change.apply(&mut applied);
        assert_eq!(applied, copy);
        let mut replaced = base.clone();
        Change::replace(&base, &copy).apply(&mut replaced);
        assert_eq!(replaced, copy);
    }
}
