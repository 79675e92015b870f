//! Editable half-edge meshes whose every vertex, edge and face carries a log-stable id, and the
//! mesh operations of the editor (move, create, delete, extrude, subdivide, Catmull–Clark, weld,
//! mirror, duplicate).
//!
//! Element ids: an [`ElementId`] is the [`CommandId`] of the command that created the element
//! plus an index in that command's output. Every replica applies the same commands in the same
//! order, so every replica derives the same ids; an id is never reused (a later command has a
//! later `CommandId`), and an element keeps its id through later edits for as long as it
//! exists. A primitive's elements are created by its spawn: vertices first, then faces, then
//! edges (in the order of their sorted end points).
//!
//! Representation. The canonical state is the vertices (id → position), the faces (id → corner
//! loop, counter-clockwise seen from outside, starting at the corner the operation that made the
//! face chose) and the edges (sorted end-point pair → id). From it [`EditMesh`] derives a
//! half-edge structure keyed by `(origin, destination)` and grouped by origin ([`HalfEdges`]:
//! flat arrays from the last full build under the fans changed since): every half-edge has a
//! twin (the reversed key), a face or none (the border), and `next`/`prev` links; border
//! half-edges are linked into border loops. Operations rewrite faces and then rebuild the half-edges ([`EditMesh::finish`]),
//! which is also the topology check: anything that would not be a valid manifold half-edge mesh
//! is refused with a sentence that names the element.
//!
//! Determinism: every iteration that decides an output (new ids, float sums) walks `BTreeMap`s in
//! key order, and only `+ - * /` and `sqrt` touch floats, so x86_64 and wasm32 give the same bits.

#![allow(
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "geometry on glam types of validated, finite payloads; counts are bounded by the \
              mesh limits (far below u32::MAX) checked before any work starts"
)]

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use glam::Vec3;
use serde::{Deserialize, Serialize};

use crate::command::Primitive;
use crate::ids::CommandId;
use crate::mesh::{Mesh, RenderMesh};

/// The id of one mesh element: the command that created it and an index in its output.
///
/// Ordered by `(by, index)`, that is `(lamport, author, index)`: compared as one 128-bit number
/// (the same order as the field-by-field comparison, without its branches; every id-keyed map
/// and sort of a mesh compares these).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ElementId {
    /// The creating command.
    pub by: CommandId,
    /// Index in that command's output.
    pub index: u32,
}

const _: () = assert!(size_of::<ElementId>() == 16);

impl ElementId {
    /// `(lamport, author, index)` as one number, in the same order.
    const fn rank(self) -> u128 {
        ((self.by.lamport as u128) << 64) | ((self.by.author.0 as u128) << 32) | self.index as u128
    }
}

impl Ord for ElementId {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl PartialOrd for ElementId {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl core::fmt::Display for ElementId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}:{}@{}", { self.by.author.0 }, self.index, {
            self.by.lamport
        })
    }
}

/// A vertex, by its stable id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VertexKey(pub ElementId);

/// An edge (both half-edges), by its stable id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EdgeKey(pub ElementId);

/// A face, by its stable id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FaceKey(pub ElementId);

impl core::fmt::Display for VertexKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "vertex {}", self.0)
    }
}
impl core::fmt::Display for EdgeKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "edge {}", self.0)
    }
}
impl core::fmt::Display for FaceKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "face {}", self.0)
    }
}

/// Hands out the element ids of one command's output, in order.
#[derive(Clone, Copy, Debug)]
pub struct IdSource {
    by: CommandId,
    next: u32,
}

impl IdSource {
    /// Ids for the output of command `by`, from index 0.
    #[must_use]
    pub const fn new(by: CommandId) -> Self {
        Self { by, next: 0 }
    }

    /// The next id.
    pub fn next_id(&mut self) -> ElementId {
        let id = ElementId {
            by: self.by,
            index: self.next,
        };
        self.next = self.next.saturating_add(1);
        id
    }

    fn vertex(&mut self) -> VertexKey {
        VertexKey(self.next_id())
    }

    fn face(&mut self) -> FaceKey {
        FaceKey(self.next_id())
    }
}

/// Why an edit was refused. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The command names an element the mesh does not have (deleted or replaced by an earlier
    /// command, or never there).
    #[error("{0} does not exist (deleted or replaced by an earlier edit)")]
    Missing(String),
    /// The result would not be a valid manifold mesh.
    #[error("{0}")]
    Topology(String),
    /// The result would exceed a size limit; nothing was computed.
    #[error("{0}")]
    Limit(String),
    /// An undo or redo was refused ([`crate::history`]).
    #[error("{0}")]
    Undo(crate::history::UndoRefusal),
}

fn topo<T>(s: String) -> Result<T, EditError> {
    Err(EditError::Topology(s))
}

/// `around`: the half-edges leaving `o` in key order. Rotating from the first (the half-edge
/// before `(o, w)` ends at `o`; its twin leaves `o`) must visit all of them before it returns.
fn fan_closes(o: VertexKey, around: &[(VertexKey, HalfEdge)]) -> Result<(), EditError> {
    let Some((first, _)) = around.first() else {
        return Ok(());
    };
    fan_closes_by(o, *first, around.len(), |w| {
        around.iter().find(|(d, _)| *d == w).map(|(_, h)| h.prev)
    })
}

/// [`fan_closes`] over any view of the `total` half-edges leaving `o` (`prev_of(w)`: the
/// `prev` of the half-edge `o → w`), starting at `first`.
fn fan_closes_by(
    o: VertexKey,
    first: VertexKey,
    total: usize,
    prev_of: impl Fn(VertexKey) -> Option<VertexKey>,
) -> Result<(), EditError> {
    let first = &first;
    let mut steps = 0usize;
    let mut cur = *first;
    loop {
        steps += 1;
        let Some(prev) = prev_of(cur) else {
            return topo(format!("the fan around {o} is broken"));
        };
        cur = prev;
        if cur == *first || steps > total {
            break;
        }
    }
    if steps == total {
        Ok(())
    } else {
        topo(format!(
            "{o} would be non-manifold (its faces form more than one fan)"
        ))
    }
}

/// At least 3 corners, none repeated.
fn check_shape(f: FaceKey, corners: &[VertexKey]) -> Result<(), EditError> {
    let n = corners.len();
    if n < 3 {
        return topo(format!("{f} has {n} corners; a face needs at least 3"));
    }
    let mut set = corners.to_vec();
    set.sort_unstable();
    if let Some(w) = set.windows(2).find(|w| w[0] == w[1]) {
        return topo(format!("{f} repeats {}", w[0]));
    }
    Ok(())
}

/// Names the elements of a dense build's fault.
fn fault(f: dense::Fault, vkeys: &[VertexKey], fkeys: &[FaceKey]) -> EditError {
    let v = |i: u32| vkeys[i as usize];
    let s = match f {
        dense::Fault::SameVertices { later, earlier } => format!(
            "{} has the same vertices as {}",
            fkeys[later as usize], fkeys[earlier as usize]
        ),
        dense::Fault::TwoFacesOneWay(a, b) => return two_faces_one_way(v(a), v(b)),
        dense::Fault::TwoGaps(o) => {
            format!(
                "{} would be non-manifold (two border gaps meet there)",
                v(o)
            )
        }
        dense::Fault::BorderOpen(o) => format!("the border through {} does not close", v(o)),
        dense::Fault::FanBroken(o) => format!("the fan around {} is broken", v(o)),
        dense::Fault::ManyFans(o) => format!(
            "{} would be non-manifold (its faces form more than one fan)",
            v(o)
        ),
    };
    EditError::Topology(s)
}

fn two_faces_one_way(a: VertexKey, b: VertexKey) -> EditError {
    EditError::Topology(format!(
        "{a} → {b} would be used by two faces in the same direction (non-manifold edge or \
         flipped winding)"
    ))
}

/// Positions in a sorted list of distinct vertex ids, found in O(log runs): the list is cut into
/// runs of consecutive indices of one command, and a mesh's ids come in few runs (each
/// operation numbers its output consecutively), so the search runs over a short, cached array
/// instead of the whole list.
struct Ranks {
    /// The first id of each run, ascending.
    firsts: Vec<ElementId>,
    /// Per run: its length and the position of its first id in the list.
    runs: Vec<(u32, u32)>,
}

impl Ranks {
    fn new(sorted: &[VertexKey]) -> Self {
        let mut firsts: Vec<ElementId> = Vec::new();
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for (at, k) in sorted.iter().enumerate() {
            if let (Some(first), Some((len, _))) = (firsts.last(), runs.last_mut())
                && first.by == k.0.by
                && first.index.checked_add(*len) == Some(k.0.index)
            {
                *len += 1;
                continue;
            }
            firsts.push(k.0);
            runs.push((1, at as u32));
        }
        Self { firsts, runs }
    }

    /// The position of `v` in the list, if it is there. The run that could hold it is the last
    /// one starting at or before it; it holds every index of its command from its first on.
    fn of(&self, v: VertexKey) -> Option<u32> {
        let r = self.firsts.partition_point(|f| *f <= v.0).checked_sub(1)?;
        let first = self.firsts[r];
        let (len, at) = self.runs[r];
        let offset = v.0.index.checked_sub(first.index)?;
        (first.by == v.0.by && offset < len).then_some(at + offset)
    }
}

/// The half-edges of a dense build under their keys.
fn halves_from_dense(built: &dense::Halves, vkeys: &[VertexKey], fkeys: &[FaceKey]) -> HalfEdges {
    let key = |i: u32| vkeys[i as usize];
    let mut out = halves::Builder::with_capacity(vkeys.len(), built.halves.len());
    for (v, o) in vkeys.iter().enumerate() {
        out.fan(
            *o,
            built.leaving(v).iter().map(|h| {
                let half = HalfEdge {
                    face: (h.face != dense::NONE).then(|| fkeys[h.face as usize]),
                    next: key(h.next),
                    prev: key(h.prev),
                };
                (key(h.dest), half)
            }),
        );
    }
    out.finish()
}

/// A half-edge, keyed in [`EditMesh`] by `(origin, destination)`; its twin is the reversed key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HalfEdge {
    /// The face on its left; `None` on the border.
    pub face: Option<FaceKey>,
    /// Destination of the next half-edge around the face (or border loop).
    pub next: VertexKey,
    /// Origin of the previous half-edge around the face (or border loop).
    pub prev: VertexKey,
}

/// A local axis plane to mirror across.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Axis {
    /// The YZ plane (x ↦ −x).
    X,
    /// The XZ plane (y ↦ −y).
    Y,
    /// The XY plane (z ↦ −z).
    Z,
}

/// Vertices closer than this to the mirror plane are welded onto it, in metres.
pub const MIRROR_WELD_M: f32 = 1.0e-4;

/// An editable mesh with stable element ids (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct EditMesh {
    verts: BTreeMap<VertexKey, Vec3>,
    faces: BTreeMap<FaceKey, Vec<VertexKey>>,
    edges: BTreeMap<(VertexKey, VertexKey), EdgeKey>,
    /// The command that last set each position explicitly (moves are last-write-wins per vertex
    /// by total order; an absent entry means the creating command).
    moved: BTreeMap<VertexKey, CommandId>,
    // Derived from the above by `finish` (never encoded):
    half_edges: HalfEdges,
    edge_ends: BTreeMap<EdgeKey, (VertexKey, VertexKey)>,
    triangles: u64,
    // The edit in progress (never encoded, empty between operations):
    /// Faces changed since the last `finish`, with their loops before the change.
    pending: BTreeMap<FaceKey, Option<Vec<VertexKey>>>,
    /// Vertices added, removed or moved since the last `finish`.
    pending_verts: BTreeMap<VertexKey, Pending>,
    /// The journal of the operation in progress (see [`EditMesh::transaction`]).
    undo: Option<Box<Undo>>,
    /// What changed since [`EditMesh::record`] (never encoded): the undo history's view.
    recording: Option<Box<Recording>>,
}

/// The first value of every canonical entry changed since recording began (see
/// [`EditMesh::record`]).
#[derive(Clone, Debug, Default)]
struct Recording {
    // Values in the order they were noted; a key's first note is its value before (a vector
    // and one sort at the end cost less than a map insert per change).
    verts: Vec<(VertexKey, Option<Vec3>)>,
    faces: Vec<(FaceKey, Option<Vec<VertexKey>>)>,
    moved: Vec<(VertexKey, Option<CommandId>)>,
    edges: Vec<((VertexKey, VertexKey), Option<EdgeKey>)>,
    /// The mesh as a whole-mesh operation found it: entries changed after it are found by
    /// comparing it with the result (no per-entry records are taken once it is set).
    whole: Option<Box<EditMesh>>,
}

/// A value before and after an edit (`None`: absent).
pub type Change<T> = (Option<T>, Option<T>);

/// The canonical entries of one mesh that an edit changed, each with its value before and
/// after (`None`: absent). Element ids included: putting back one side restores exactly those
/// elements, ids and values ([`EditMesh::apply_change`]).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MeshChange {
    /// Vertex positions.
    pub verts: BTreeMap<VertexKey, Change<Vec3>>,
    /// Face corner loops.
    pub faces: BTreeMap<FaceKey, Change<Vec<VertexKey>>>,
    /// Position stamps (the command that last placed the vertex).
    pub moved: BTreeMap<VertexKey, Change<CommandId>>,
    /// Edge ids by sorted end points.
    pub edges: BTreeMap<(VertexKey, VertexKey), Change<EdgeKey>>,
}

/// One side of a [`MeshChange`] (or of any before/after pair).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The value before the edit (what undo puts back).
    Before,
    /// The value after it (what redo puts back).
    After,
}

impl Side {
    /// The other side.
    #[must_use]
    pub const fn other(self) -> Self {
        match self {
            Self::Before => Self::After,
            Self::After => Self::Before,
        }
    }

    /// `pair`'s value on this side.
    #[must_use]
    pub const fn of<T>(self, pair: &(T, T)) -> &T {
        match self {
            Self::Before => &pair.0,
            Self::After => &pair.1,
        }
    }
}

/// A canonical entry of a mesh, as a [`MeshChange`] names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MeshSlot {
    /// A vertex's position or position stamp.
    Vertex(VertexKey),
    /// A face's corners.
    Face(FaceKey),
    /// The id of the edge between two vertices.
    Edge(VertexKey, VertexKey),
}

impl core::fmt::Display for MeshSlot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Vertex(v) => write!(f, "{v}"),
            Self::Face(k) => write!(f, "{k}"),
            Self::Edge(a, b) => write!(f, "the edge {a} – {b}"),
        }
    }
}

/// Adds to `out` every key whose value differs between `a` and `b` (one merge walk).
fn diff_maps<K: Ord + Copy, V: Clone + PartialEq>(
    a: &BTreeMap<K, V>,
    b: &BTreeMap<K, V>,
    out: &mut BTreeMap<K, (Option<V>, Option<V>)>,
) {
    let mut left = a.iter().peekable();
    let mut right = b.iter().peekable();
    loop {
        match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some((k, v)), None) => {
                out.insert(**k, (Some((*v).clone()), None));
                left.next();
            }
            (None, Some((k, v))) => {
                out.insert(**k, (None, Some((*v).clone())));
                right.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                core::cmp::Ordering::Less => {
                    out.insert(**ka, (Some((*va).clone()), None));
                    left.next();
                }
                core::cmp::Ordering::Greater => {
                    out.insert(**kb, (None, Some((*vb).clone())));
                    right.next();
                }
                core::cmp::Ordering::Equal => {
                    if va != vb {
                        out.insert(**ka, (Some((*va).clone()), Some((*vb).clone())));
                    }
                    left.next();
                    right.next();
                }
            },
        }
    }
}

/// Turns first values into (before, after) pairs against `now`, keeping real changes; a key
/// already in `out` (from a whole-mesh comparison) gives way to the earlier record.
fn settle<K: Ord + Copy, V: Clone + PartialEq>(
    mut noted: Vec<(K, Option<V>)>,
    now: &BTreeMap<K, V>,
    out: &mut BTreeMap<K, (Option<V>, Option<V>)>,
) {
    // Stable: the first note of a key stays first, and `dedup` keeps it.
    noted.sort_by_key(|(k, _)| *k);
    noted.dedup_by_key(|(k, _)| *k);
    for (k, before) in noted {
        out.remove(&k);
        let after = now.get(&k).cloned();
        if after != before {
            out.insert(k, (before, after));
        }
    }
}

impl MeshChange {
    /// Everything that differs between two meshes.
    #[must_use]
    pub fn between(before: &EditMesh, after: &EditMesh) -> Self {
        let mut c = Self::default();
        diff_maps(&before.verts, &after.verts, &mut c.verts);
        diff_maps(&before.faces, &after.faces, &mut c.faces);
        diff_maps(&before.moved, &after.moved, &mut c.moved);
        diff_maps(&before.edges, &after.edges, &mut c.edges);
        c
    }

    /// Nothing changed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.verts.is_empty()
            && self.faces.is_empty()
            && self.moved.is_empty()
            && self.edges.is_empty()
    }

    /// Adds a later change of the same mesh: the earliest value before, the latest after;
    /// entries that end where they started drop out.
    pub fn then(&mut self, later: Self) {
        fn merge<K: Ord, V: PartialEq>(
            into: &mut BTreeMap<K, (Option<V>, Option<V>)>,
            later: BTreeMap<K, (Option<V>, Option<V>)>,
        ) {
            for (k, (b, a)) in later {
                match into.entry(k) {
                    alloc::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert((b, a));
                    }
                    alloc::collections::btree_map::Entry::Occupied(mut slot) => {
                        if slot.get().0 == a {
                            slot.remove();
                        } else {
                            slot.get_mut().1 = a;
                        }
                    }
                }
            }
        }
        merge(&mut self.verts, later.verts);
        merge(&mut self.faces, later.faces);
        merge(&mut self.moved, later.moved);
        merge(&mut self.edges, later.edges);
    }

    /// Every entry it names.
    pub fn slots(&self) -> impl Iterator<Item = MeshSlot> + '_ {
        self.verts
            .keys()
            .chain(self.moved.keys())
            .map(|v| MeshSlot::Vertex(*v))
            .chain(self.faces.keys().map(|f| MeshSlot::Face(*f)))
            .chain(self.edges.keys().map(|(a, b)| MeshSlot::Edge(*a, *b)))
    }

    /// Whether it names `slot`.
    #[must_use]
    pub fn touches(&self, slot: MeshSlot) -> bool {
        match slot {
            MeshSlot::Vertex(v) => self.verts.contains_key(&v) || self.moved.contains_key(&v),
            MeshSlot::Face(f) => self.faces.contains_key(&f),
            MeshSlot::Edge(a, b) => self.edges.contains_key(&(a, b)),
        }
    }

    /// The first entry of `mesh` that does not hold `side`'s value (someone changed it since).
    #[must_use]
    pub fn first_mismatch(&self, mesh: &EditMesh, side: Side) -> Option<MeshSlot> {
        if let Some((v, _)) = self
            .verts
            .iter()
            .find(|(v, pair)| mesh.verts.get(v) != side.of(pair).as_ref())
        {
            return Some(MeshSlot::Vertex(*v));
        }
        if let Some((v, _)) = self
            .moved
            .iter()
            .find(|(v, pair)| mesh.moved.get(v) != side.of(pair).as_ref())
        {
            return Some(MeshSlot::Vertex(*v));
        }
        if let Some((f, _)) = self
            .faces
            .iter()
            .find(|(f, pair)| mesh.faces.get(f) != side.of(pair).as_ref())
        {
            return Some(MeshSlot::Face(*f));
        }
        self.edges
            .iter()
            .find(|(p, pair)| mesh.edges.get(p) != side.of(pair).as_ref())
            .map(|((a, b), _)| MeshSlot::Edge(*a, *b))
    }

    /// Rough heap bytes, for the history's memory bound.
    #[must_use]
    pub fn weight(&self) -> usize {
        let faces: usize = self
            .faces
            .values()
            .map(|(b, a)| b.as_ref().map_or(0, Vec::len) + a.as_ref().map_or(0, Vec::len) + 8)
            .sum();
        self.verts.len() * 48
            + self.moved.len() * 48
            + self.edges.len() * 72
            + faces * size_of::<VertexKey>()
    }
}

/// Every entry the operation in progress changed, with its value before the operation; a
/// failed operation puts them back, so a refused edit costs what it touched, not a copy of the
/// mesh.
#[derive(Clone, Debug, Default)]
struct Undo {
    // Logs of (key, value before the change), put back in reverse order.
    verts: Vec<(VertexKey, Option<Vec3>)>,
    faces: Vec<(FaceKey, Option<Vec<VertexKey>>)>,
    moved: Vec<(VertexKey, Option<CommandId>)>,
    halves: Vec<((VertexKey, VertexKey), Option<HalfEdge>)>,
    edges: Vec<((VertexKey, VertexKey), Option<EdgeKey>)>,
    ends: Vec<(EdgeKey, Option<(VertexKey, VertexKey)>)>,
    /// The derived maps as a whole, taken when a full rebuild replaced them (per-entry records
    /// of those maps stop then: the whole maps are restored first, the earlier entries on top).
    whole: Option<Derived>,
    triangles: u64,
    /// For an operation on much of the mesh: the mesh as it was, and no per-entry records.
    snapshot: Option<Box<EditMesh>>,
}

impl Undo {
    /// Nothing recorded yet: the mesh is as the operation found it.
    fn is_empty(&self) -> bool {
        self.snapshot.is_none()
            && self.verts.is_empty()
            && self.faces.is_empty()
            && self.moved.is_empty()
            && self.halves.is_empty()
            && self.edges.is_empty()
            && self.ends.is_empty()
            && self.whole.is_none()
    }
}

#[derive(Clone, Debug, Default)]
struct Derived {
    half_edges: HalfEdges,
    edges: BTreeMap<(VertexKey, VertexKey), EdgeKey>,
    edge_ends: BTreeMap<EdgeKey, (VertexKey, VertexKey)>,
}

/// A vertex changed since the last `finish`.
#[derive(Clone, Copy, Debug)]
struct Pending {
    /// Absent at its first change (created by the edit in progress).
    new: bool,
    /// Present now.
    exists: bool,
}

/// Above this share of changed faces (one in `FULL_REBUILD_SHARE`) `finish` rebuilds the
/// half-edges from scratch instead of patching them.
const FULL_REBUILD_SHARE: usize = 3;

impl PartialEq for EditMesh {
    fn eq(&self, other: &Self) -> bool {
        self.verts == other.verts
            && self.faces == other.faces
            && self.edges == other.edges
            && self.moved == other.moved
    }
}

fn sorted(a: VertexKey, b: VertexKey) -> (VertexKey, VertexKey) {
    if a <= b { (a, b) } else { (b, a) }
}

fn newell(points: impl Iterator<Item = Vec3> + Clone) -> Vec3 {
    let mut n = Vec3::ZERO;
    let first = points.clone().next();
    let mut it = points.peekable();
    while let Some(a) = it.next() {
        let Some(b) = it.peek().copied().or(first) else {
            break;
        };
        n += Vec3::new(
            (a.y - b.y) * (a.z + b.z),
            (a.z - b.z) * (a.x + b.x),
            (a.x - b.x) * (a.y + b.y),
        );
    }
    n
}

fn snap(value: f32, step: Option<f32>) -> f32 {
    match step {
        Some(s) if s > 0.0 => (value / s).round() * s,
        _ => value,
    }
}

impl EditMesh {
    /// The mesh of a spawned primitive, its ids derived from the spawn `by`.
    #[must_use]
    pub fn from_primitive(primitive: Primitive, by: CommandId) -> Self {
        let base = Mesh::primitive(primitive);
        let mut ids = IdSource::new(by);
        let keys: Vec<VertexKey> = base.vertices.iter().map(|_| ids.vertex()).collect();
        let mut mesh = Self::default();
        for (k, v) in keys.iter().zip(&base.vertices) {
            mesh.verts.insert(*k, v.position);
        }
        for f in 0..base.faces.len() {
            let corners = base
                .face_loop(crate::mesh::FaceId(f as u32))
                .iter()
                .map(|h| keys[base.half_edges[h.0 as usize].origin.0 as usize])
                .collect();
            mesh.faces.insert(ids.face(), corners);
        }
        mesh.finish(&mut ids)
            .expect("the built-in primitives are manifold meshes");
        mesh
    }

    /// A mesh of `faces` (corner loops of indices into `positions`), its element ids taken
    /// from `ids` (an import: one command's ids run on across its meshes). Checked like every
    /// edit.
    ///
    /// # Errors
    /// A face naming a missing vertex, a vertex no face uses, or a topology the mesh cannot
    /// hold.
    pub fn from_polygons(
        positions: &[Vec3],
        faces: &[Vec<u32>],
        ids: &mut IdSource,
    ) -> Result<Self, EditError> {
        let keys: Vec<VertexKey> = positions.iter().map(|_| ids.vertex()).collect();
        let mut used = alloc::vec![false; keys.len()];
        let mut mesh = Self::default();
        for (k, p) in keys.iter().zip(positions) {
            mesh.verts.insert(*k, *p);
        }
        for (f, corners) in faces.iter().enumerate() {
            let mut loop_ = Vec::with_capacity(corners.len());
            for c in corners {
                let i = *c as usize;
                let Some(k) = keys.get(i) else {
                    return topo(alloc::format!(
                        "face {f} names vertex {c}, which is missing"
                    ));
                };
                if let Some(u) = used.get_mut(i) {
                    *u = true;
                }
                loop_.push(*k);
            }
            mesh.faces.insert(ids.face(), loop_);
        }
        if let Some(v) = used.iter().position(|u| !u) {
            return topo(alloc::format!("vertex {v} is in no face"));
        }
        mesh.finish(ids)?;
        Ok(mesh)
    }

    /// Builds a mesh from its canonical parts (decoding), checking everything.
    ///
    /// # Errors
    /// The first violated invariant.
    pub fn from_parts(
        verts: BTreeMap<VertexKey, Vec3>,
        faces: BTreeMap<FaceKey, Vec<VertexKey>>,
        edges: BTreeMap<(VertexKey, VertexKey), EdgeKey>,
        moved: BTreeMap<VertexKey, CommandId>,
    ) -> Result<Self, EditError> {
        let mut mesh = Self {
            verts,
            faces,
            edges,
            moved,
            ..Self::default()
        };
        let given = mesh.edges.clone();
        mesh.build()?;
        if mesh.edges.len() != given.len()
            || mesh.edges.keys().zip(given.keys()).any(|(a, b)| a != b)
        {
            return topo("the edge list does not match the faces".into());
        }
        mesh.edges = given;
        mesh.edge_ends = mesh.edges.iter().map(|(p, k)| (*k, *p)).collect();
        if mesh.edge_ends.len() != mesh.edges.len() {
            return topo("two edges share one id".into());
        }
        if mesh.moved.keys().any(|v| !mesh.verts.contains_key(v)) {
            return topo("a position stamp names a missing vertex".into());
        }
        Ok(mesh)
    }

    /// Vertices and positions, in id order.
    #[must_use]
    pub const fn vertices(&self) -> &BTreeMap<VertexKey, Vec3> {
        &self.verts
    }

    /// Faces and their corner loops, in id order.
    #[must_use]
    pub const fn faces(&self) -> &BTreeMap<FaceKey, Vec<VertexKey>> {
        &self.faces
    }

    /// Edges by sorted end points.
    #[must_use]
    pub const fn edges(&self) -> &BTreeMap<(VertexKey, VertexKey), EdgeKey> {
        &self.edges
    }

    /// End points of an edge.
    #[must_use]
    pub fn edge_ends(&self, edge: EdgeKey) -> Option<(VertexKey, VertexKey)> {
        self.edge_ends.get(&edge).copied()
    }

    /// Position stamps (see [`EditMesh::move_vertices`]).
    #[must_use]
    pub const fn moved(&self) -> &BTreeMap<VertexKey, CommandId> {
        &self.moved
    }

    /// The half-edges, keyed by `(origin, destination)`.
    #[must_use]
    pub const fn half_edges(&self) -> &HalfEdges {
        &self.half_edges
    }

    /// Triangles after fan triangulation (a face of n corners is n − 2).
    #[must_use]
    pub const fn triangle_count(&self) -> u64 {
        self.triangles
    }

    /// Half-edges leaving `v`, in key order.
    fn outgoing(&self, v: VertexKey) -> impl Iterator<Item = (VertexKey, &HalfEdge)> + '_ {
        self.half_edges.leaving(v).iter().map(|((_, d), h)| (*d, h))
    }

    fn position(&self, v: VertexKey) -> Vec3 {
        self.verts.get(&v).copied().unwrap_or(Vec3::ZERO)
    }

    fn face_of(&self, a: VertexKey, b: VertexKey) -> Option<FaceKey> {
        self.half_edges.get(&(a, b)).and_then(|h| h.face)
    }

    fn face_normal(&self, corners: &[VertexKey]) -> Vec3 {
        newell(corners.iter().map(|v| self.position(*v)))
    }

    fn need_face(&self, f: FaceKey) -> Result<&Vec<VertexKey>, EditError> {
        self.faces
            .get(&f)
            .ok_or_else(|| EditError::Missing(format!("{f}")))
    }

    fn need_vertex(&self, v: VertexKey) -> Result<Vec3, EditError> {
        self.verts
            .get(&v)
            .copied()
            .ok_or_else(|| EditError::Missing(format!("{v}")))
    }

    fn need_edge(&self, e: EdgeKey) -> Result<(VertexKey, VertexKey), EditError> {
        self.edge_ends(e)
            .ok_or_else(|| EditError::Missing(format!("{e}")))
    }

    /// Starts noting what changes (a no-op when already noting): every canonical entry's first
    /// value, at the cost of a map insert per changed entry (a whole-mesh operation keeps one
    /// copy of the mesh instead). [`EditMesh::take_change`] ends it.
    pub fn record(&mut self) {
        if self.recording.is_none() {
            self.recording = Some(Box::default());
        }
    }

    /// Ends noting and returns what changed since [`EditMesh::record`] (empty if it was not
    /// called): the first value of every entry and its value now, real changes only.
    #[must_use]
    pub fn take_change(&mut self) -> MeshChange {
        let Some(r) = self.recording.take() else {
            return MeshChange::default();
        };
        let r = *r;
        let mut c = match &r.whole {
            Some(whole) => MeshChange::between(whole, self),
            None => MeshChange::default(),
        };
        settle(r.verts, &self.verts, &mut c.verts);
        settle(r.faces, &self.faces, &mut c.faces);
        settle(r.moved, &self.moved, &mut c.moved);
        settle(r.edges, &self.edges, &mut c.edges);
        c
    }

    /// Puts every entry `change` names back to its `side` value, as one checked operation:
    /// the same element ids and values, or an error and nothing changed. `ids` names edges
    /// the faces need that `change` does not (none when `change` is complete).
    ///
    /// # Errors
    /// The result would not be a valid mesh (someone built on what is being taken away), or
    /// the edges would not get back their ids.
    pub fn apply_change(
        &mut self,
        ids: &mut IdSource,
        change: &MeshChange,
        side: Side,
    ) -> Result<(), EditError> {
        self.transaction(|m| {
            if change.faces.len().saturating_mul(FULL_REBUILD_SHARE) >= m.faces.len() {
                m.bulk(change.faces.len());
            }
            for (f, pair) in &change.faces {
                match side.of(pair) {
                    Some(corners) => m.set_face(*f, corners.clone()),
                    None => {
                        m.take_face(*f);
                    }
                }
            }
            for (v, pair) in &change.verts {
                match side.of(pair) {
                    Some(p) => m.set_vert(*v, *p),
                    None => m.remove_vert(*v),
                }
            }
            for (v, pair) in &change.moved {
                if m.moved.get(v) != side.of(pair).as_ref() {
                    m.set_stamp(*v, *side.of(pair));
                }
            }
            for (p, pair) in &change.edges {
                let now = m.edges.get(p).copied();
                let want = *side.of(pair);
                if now != want {
                    if let Some(k) = now {
                        m.put_edge(*p, k, false);
                    }
                    if let Some(k) = want {
                        m.put_edge(*p, k, true);
                    }
                }
            }
            m.finish(ids)?;
            if let Some(slot) = change.first_mismatch(m, side) {
                return topo(format!(
                    "{slot} would not come back as it was (the mesh around it changed)"
                ));
            }
            Ok(())
        })
    }

    /// Runs `edit` as one operation: if it fails, every entry it changed is put back and the
    /// mesh is as before. Operations nest (the outermost one decides).
    ///
    /// # Errors
    /// The edit's error.
    pub fn transaction<T>(
        &mut self,
        edit: impl FnOnce(&mut Self) -> Result<T, EditError>,
    ) -> Result<T, EditError> {
        let outer = self.begin();
        let result = edit(self);
        self.end(outer, result)
    }

    fn begin(&mut self) -> bool {
        if self.undo.is_some() {
            return false;
        }
        self.undo = Some(Box::new(Undo {
            triangles: self.triangles,
            ..Undo::default()
        }));
        true
    }

    fn end<T>(&mut self, outer: bool, result: Result<T, EditError>) -> Result<T, EditError> {
        if !outer {
            return result;
        }
        let undo = self.undo.take();
        self.pending.clear();
        self.pending_verts.clear();
        if result.is_err()
            && let Some(u) = undo
        {
            self.rollback(*u);
        }
        result
    }

    fn rollback(&mut self, u: Undo) {
        if let Some(before) = u.snapshot {
            *self = *before;
            return;
        }
        if let Some(d) = u.whole {
            self.half_edges = d.half_edges;
            self.edges = d.edges;
            self.edge_ends = d.edge_ends;
        }
        fn put<K: Ord, V>(map: &mut BTreeMap<K, V>, log: Vec<(K, Option<V>)>) {
            for (k, v) in log.into_iter().rev() {
                match v {
                    Some(v) => map.insert(k, v),
                    None => map.remove(&k),
                };
            }
        }
        for (k, h) in u.halves.into_iter().rev() {
            match h {
                Some(h) => self.half_edges.insert(k, h),
                None => self.half_edges.remove(&k),
            };
        }
        put(&mut self.edges, u.edges);
        put(&mut self.edge_ends, u.ends);
        put(&mut self.verts, u.verts);
        put(&mut self.faces, u.faces);
        put(&mut self.moved, u.moved);
        self.triangles = u.triangles;
    }

    /// Called at the start of an operation that changes `share` of the mesh's faces: when that
    /// is at least a third and the operation is on its own, the journal keeps one copy of the
    /// mesh instead of a record per change (cheaper when most entries change).
    fn bulk(&mut self, share: usize) {
        let fresh = self.undo.as_deref().is_some_and(Undo::is_empty);
        if fresh && share.saturating_mul(FULL_REBUILD_SHARE) >= self.faces.len() {
            let mut before = self.clone();
            before.undo = None;
            if let Some(r) = &mut self.recording
                && r.whole.is_none()
            {
                let mut copy = before.clone();
                copy.recording = None;
                r.whole = Some(Box::new(copy));
            }
            if let Some(u) = &mut self.undo {
                u.snapshot = Some(Box::new(before));
            }
        }
    }

    fn bulk_mode(&self) -> bool {
        self.undo.as_ref().is_some_and(|u| u.snapshot.is_some())
    }

    // Every change of an operation goes through these, which note it for `finish` and the
    // journal (none in bulk mode: `finish` rebuilds everything and a failure restores the copy).

    fn note_face(&mut self, f: FaceKey) {
        if self.bulk_mode() {
            return;
        }
        if let Some(r) = &mut self.recording
            && r.whole.is_none()
        {
            r.faces.push((f, self.faces.get(&f).cloned()));
        }
        // The first change since the last `finish`: later ones in the same stretch need no
        // record (putting back the first value restores them too).
        if let alloc::collections::btree_map::Entry::Vacant(slot) = self.pending.entry(f) {
            let old = self.faces.get(&f).cloned();
            if let Some(u) = &mut self.undo {
                u.faces.push((f, old.clone()));
            }
            slot.insert(old);
        }
    }

    fn set_face(&mut self, f: FaceKey, corners: Vec<VertexKey>) {
        self.note_face(f);
        self.faces.insert(f, corners);
    }

    fn take_face(&mut self, f: FaceKey) -> Option<Vec<VertexKey>> {
        self.note_face(f);
        self.faces.remove(&f)
    }

    fn face_mut(&mut self, f: FaceKey) -> Option<&mut Vec<VertexKey>> {
        self.note_face(f);
        self.faces.get_mut(&f)
    }

    fn note_vert(&mut self, v: VertexKey, exists: bool) {
        if self.bulk_mode() {
            return;
        }
        self.record_vert(v);
        match self.pending_verts.entry(v) {
            alloc::collections::btree_map::Entry::Vacant(slot) => {
                let old = self.verts.get(&v).copied();
                slot.insert(Pending {
                    new: old.is_none(),
                    exists,
                });
                if let Some(u) = &mut self.undo {
                    u.verts.push((v, old));
                }
            }
            alloc::collections::btree_map::Entry::Occupied(mut slot) => {
                slot.get_mut().exists = exists;
            }
        }
    }

    fn set_vert(&mut self, v: VertexKey, p: Vec3) {
        self.note_vert(v, true);
        self.verts.insert(v, p);
    }

    fn remove_vert(&mut self, v: VertexKey) {
        self.note_vert(v, false);
        self.verts.remove(&v);
    }

    /// Notes `v`'s position and stamp as they are now, if recording and not yet noted.
    fn record_vert(&mut self, v: VertexKey) {
        if let Some(r) = &mut self.recording
            && r.whole.is_none()
        {
            r.verts.push((v, self.verts.get(&v).copied()));
            r.moved.push((v, self.moved.get(&v).copied()));
        }
    }

    fn set_stamp(&mut self, v: VertexKey, by: Option<CommandId>) {
        if let Some(r) = &mut self.recording
            && r.whole.is_none()
        {
            r.moved.push((v, self.moved.get(&v).copied()));
        }
        let old = match by {
            Some(by) => self.moved.insert(v, by),
            None => self.moved.remove(&v),
        };
        if let Some(u) = &mut self.undo
            && u.snapshot.is_none()
        {
            u.moved.push((v, old));
        }
    }

    /// Moves a vertex on behalf of `by` (the position stamp follows).
    fn place(&mut self, v: VertexKey, p: Vec3, by: CommandId) {
        self.set_vert(v, p);
        self.set_stamp(v, Some(by));
    }

    fn put_half(&mut self, key: (VertexKey, VertexKey), h: Option<HalfEdge>) -> Option<HalfEdge> {
        let old = match h {
            Some(h) => self.half_edges.insert(key, h),
            None => self.half_edges.remove(&key),
        };
        if let Some(u) = &mut self.undo
            && u.whole.is_none()
            && u.snapshot.is_none()
        {
            u.halves.push((key, old));
        }
        old
    }

    fn put_edge(&mut self, pair: (VertexKey, VertexKey), key: EdgeKey, present: bool) {
        if let Some(r) = &mut self.recording
            && r.whole.is_none()
        {
            r.edges.push((pair, self.edges.get(&pair).copied()));
        }
        let (old_key, old_pair) = if present {
            (
                self.edges.insert(pair, key),
                self.edge_ends.insert(key, pair),
            )
        } else {
            (self.edges.remove(&pair), self.edge_ends.remove(&key))
        };
        if let Some(u) = &mut self.undo
            && u.whole.is_none()
            && u.snapshot.is_none()
        {
            u.edges.push((pair, old_key));
            u.ends.push((key, old_pair));
        }
    }

    /// Brings the half-edges up to date with the faces, checking every invariant, then gives
    /// new edges their ids from `ids` (in sorted end-point order) and drops edges no face uses
    /// any more. Only the neighbourhood of what changed is rebuilt and checked (the rest of the
    /// mesh was valid and did not change), unless much of the mesh changed: then everything is
    /// rebuilt. Both give the same result.
    ///
    /// # Errors
    /// The first invariant the faces break, naming the element.
    pub fn finish(&mut self, ids: &mut IdSource) -> Result<(), EditError> {
        let changed = core::mem::take(&mut self.pending);
        let verts = core::mem::take(&mut self.pending_verts);
        if self.half_edges.is_empty()
            || self.bulk_mode()
            || changed.len().saturating_mul(FULL_REBUILD_SHARE) > self.faces.len()
            || tests::force_full()
        {
            return self.finish_full(ids);
        }
        self.finish_local(ids, &changed, &verts)
    }

    fn finish_full(&mut self, ids: &mut IdSource) -> Result<(), EditError> {
        let old = Derived {
            half_edges: core::mem::take(&mut self.half_edges),
            edges: core::mem::take(&mut self.edges),
            edge_ends: core::mem::take(&mut self.edge_ends),
        };
        let built = self.build();
        let mut edges = BTreeMap::new();
        if built.is_ok() {
            // New edges take ids in sorted end-point order (the iteration order); both maps
            // are sorted, so the old ids are found by one merge walk.
            let mut kept = old.edges.iter().peekable();
            edges = self
                .edges
                .keys()
                .map(|pair| {
                    while kept.next_if(|(p, _)| *p < pair).is_some() {}
                    let key = match kept.next_if(|(p, _)| *p == pair) {
                        Some((_, k)) => *k,
                        None => EdgeKey(ids.next_id()),
                    };
                    (*pair, key)
                })
                .collect();
        }
        if built.is_ok()
            && let Some(r) = &mut self.recording
            && r.whole.is_none()
        {
            let mut changed = BTreeMap::new();
            diff_maps(&old.edges, &edges, &mut changed);
            for (pair, (before, _)) in changed {
                r.edges.push((pair, before));
            }
        }
        match &mut self.undo {
            Some(u) if u.snapshot.is_some() => {}
            Some(u) if u.whole.is_none() => u.whole = Some(old),
            Some(_) => {}
            None if built.is_err() => {
                self.half_edges = old.half_edges;
                self.edges = old.edges;
                self.edge_ends = old.edge_ends;
            }
            None => {}
        }
        built?;
        self.edge_ends = edges.iter().map(|(p, k)| (*k, *p)).collect();
        self.edges = edges;
        let gone: Vec<VertexKey> = self
            .moved
            .keys()
            .filter(|v| !self.verts.contains_key(v))
            .copied()
            .collect();
        for v in gone {
            self.set_stamp(v, None);
        }
        Ok(())
    }

    /// The local rebuild: the old loops of changed faces leave, their new loops come in, and
    /// the vertices on either are re-linked and checked.
    fn finish_local(
        &mut self,
        ids: &mut IdSource,
        changed: &BTreeMap<FaceKey, Option<Vec<VertexKey>>>,
        verts: &BTreeMap<VertexKey, Pending>,
    ) -> Result<(), EditError> {
        // The face half-edges of the changed faces before and after, as (face, next, prev).
        type Loops = BTreeMap<(VertexKey, VertexKey), (FaceKey, VertexKey, VertexKey)>;
        let mut before: Loops = BTreeMap::new();
        let mut after: Loops = BTreeMap::new();
        let mut triangles = self.triangles;
        let mut reshaped: Vec<FaceKey> = Vec::new();
        for (f, old) in changed {
            if let Some(old) = old {
                let n = old.len();
                triangles = triangles.saturating_sub(n.saturating_sub(2) as u64);
                for i in 0..n {
                    let h = (*f, old[(i + 2) % n], old[(i + n - 1) % n]);
                    before.insert((old[i], old[(i + 1) % n]), h);
                }
            }
            let Some(corners) = self.faces.get(f) else {
                continue;
            };
            check_shape(*f, corners)?;
            // A corner exists if the edit says so, or if it was a corner before and the edit
            // did not touch it; only the others are looked up.
            for c in corners {
                let exists = match verts.get(c) {
                    Some(p) => p.exists,
                    None => {
                        old.as_ref().is_some_and(|o| o.contains(c)) || self.verts.contains_key(c)
                    }
                };
                if !exists {
                    return Err(EditError::Missing(format!("{c} (a corner of {f})")));
                }
            }
            let n = corners.len();
            triangles = triangles.saturating_add((n - 2) as u64);
            for i in 0..n {
                let key = (corners[i], corners[(i + 1) % n]);
                let h = (*f, corners[(i + 2) % n], corners[(i + n - 1) % n]);
                if after.insert(key, h).is_some() {
                    return Err(two_faces_one_way(key.0, key.1));
                }
            }
            if old.as_ref() != Some(corners) {
                reshaped.push(*f);
            }
        }
        // Only half-edges that really change are touched: the old ones no face keeps leave
        // (their side becomes border, or the edge goes), the new and changed ones come in.
        let mut touched: BTreeSet<VertexKey> = BTreeSet::new();
        // Edges that went (false) or came (true); their ids are settled at the end.
        let mut pairs: BTreeMap<(VertexKey, VertexKey), bool> = BTreeMap::new();
        for &(a, b) in before.keys() {
            if after.contains_key(&(a, b)) {
                continue;
            }
            touched.extend([a, b]);
            if self.face_of(b, a).is_some() {
                // The twin keeps its face: this side becomes border (linked below).
                let border = HalfEdge {
                    face: None,
                    next: a,
                    prev: b,
                };
                self.put_half((a, b), Some(border));
            } else {
                self.put_half((a, b), None);
                self.put_half((b, a), None);
                pairs.insert(sorted(a, b), false);
            }
        }
        for (&(a, b), &(face, next, prev)) in &after {
            if before.get(&(a, b)) == Some(&(face, next, prev)) {
                continue;
            }
            touched.extend([a, b]);
            let h = HalfEdge {
                face: Some(face),
                next,
                prev,
            };
            let old = self.put_half((a, b), Some(h));
            if !before.contains_key(&(a, b)) && old.is_some_and(|o| o.face.is_some()) {
                // An unchanged face already uses a → b (the journal puts it back).
                return Err(two_faces_one_way(a, b));
            }
            if !self.half_edges.contains_key(&(b, a)) {
                pairs.insert(sorted(a, b), true);
                let border = HalfEdge {
                    face: None,
                    next: b,
                    prev: a,
                };
                self.put_half((b, a), Some(border));
            }
        }
        // Two faces over one vertex set share every vertex. A face with a vertex new in this
        // edit can only repeat another changed face (the only faces that can use it); any
        // other is compared with the faces around its first corner.
        let mut new_sets: BTreeMap<Vec<VertexKey>, FaceKey> = BTreeMap::new();
        for f in &reshaped {
            let Some(corners) = self.faces.get(f) else {
                continue;
            };
            let mut set = corners.clone();
            set.sort_unstable();
            if corners.iter().any(|c| verts.get(c).is_some_and(|p| p.new)) {
                if let Some(g) = new_sets.insert(set, *f) {
                    return topo(format!("{f} has the same vertices as {g}"));
                }
                continue;
            }
            for (_, h) in self.outgoing(corners[0]) {
                if let Some(g) = h.face
                    && g != *f
                    && self.faces.get(&g).is_some_and(|c| {
                        c.len() == set.len() && {
                            let mut other = c.clone();
                            other.sort_unstable();
                            other == set
                        }
                    })
                {
                    return topo(format!("{f} has the same vertices as {g}"));
                }
            }
        }
        for v in &touched {
            self.relink_and_check(*v)?;
        }
        for v in verts.keys() {
            match self.verts.get(v) {
                None if self.outgoing(*v).next().is_some() => {
                    return Err(EditError::Missing(format!("{v} (a corner of a face)")));
                }
                None => {
                    if self.moved.contains_key(v) {
                        self.set_stamp(*v, None);
                    }
                }
                Some(p) if !p.is_finite() => {
                    return topo(format!("{v} has a non-finite position"));
                }
                Some(_) => {}
            }
        }
        let mut fresh = Vec::new();
        for (pair, used) in pairs {
            match (used, self.edges.get(&pair).copied()) {
                (true, None) => fresh.push(pair),
                (false, Some(key)) => self.put_edge(pair, key, false),
                _ => {}
            }
        }
        for pair in fresh {
            let key = EdgeKey(ids.next_id());
            self.put_edge(pair, key, true);
        }
        self.triangles = triangles;
        Ok(())
    }

    /// At a vertex the local rebuild touched: links the border half-edges through it (the one
    /// arriving and the one leaving; two border gaps are non-manifold), then checks that its
    /// half-edges form one fan. One scan of its outgoing half-edges.
    fn relink_and_check(&mut self, v: VertexKey) -> Result<(), EditError> {
        let around: Vec<(VertexKey, HalfEdge)> = self.outgoing(v).map(|(w, h)| (w, *h)).collect();
        let mut leaving = None;
        for (w, h) in &around {
            if h.face.is_none() && leaving.replace(*w).is_some() {
                return topo(format!(
                    "{v} would be non-manifold (two border gaps meet there)"
                ));
            }
        }
        let mut around = around;
        if let Some(y) = leaving {
            // As many border half-edges arrive as leave: one, the twin of a face half-edge.
            let Some(x) = around
                .iter()
                .filter(|(_, h)| h.face.is_some())
                .map(|(w, _)| *w)
                .find(|w| self.face_of(*w, v).is_none())
            else {
                return topo(format!("the border through {v} does not close"));
            };
            if let Some(mut h) = self.half_edges.get(&(x, v)).copied() {
                h.next = y;
                self.put_half((x, v), Some(h));
            }
            if let Some(slot) = around.iter_mut().find(|(w, _)| *w == y) {
                slot.1.prev = x;
                self.put_half((v, y), Some(slot.1));
            }
        }
        fan_closes(v, &around)
    }

    /// The half-edge build and check. Leaves `edges` holding the needed pairs (values are
    /// placeholders, fixed by the caller).
    fn build(&mut self) -> Result<(), EditError> {
        let vkeys: Vec<VertexKey> = self.verts.keys().copied().collect();
        let fkeys: Vec<FaceKey> = self.faces.keys().copied().collect();
        let corners: usize = self.faces.values().map(Vec::len).sum();
        let mut loops = dense::Loops::with_capacity(fkeys.len(), corners);
        let ranks = Ranks::new(&vkeys);
        for (f, corners) in &self.faces {
            check_shape(*f, corners)?;
            for v in corners {
                let Some(i) = ranks.of(*v) else {
                    return Err(EditError::Missing(format!("{v} (a corner of {f})")));
                };
                loops.corners.push(i);
            }
            loops.end_face();
        }
        let built = dense::build(vkeys.len(), &loops).map_err(|e| fault(e, &vkeys, &fkeys))?;
        self.install(&built, &vkeys, &fkeys);
        if let Some((v, _)) = self.verts.iter().find(|(_, p)| !p.is_finite()) {
            return topo(format!("{v} has a non-finite position"));
        }
        self.triangles = built.triangles;
        Ok(())
    }

    /// Replaces the half-edges by `built` and `edges` by its pairs (placeholder ids).
    fn install(&mut self, built: &dense::Halves, vkeys: &[VertexKey], fkeys: &[FaceKey]) {
        let key = |i: u32| vkeys[i as usize];
        self.half_edges = halves_from_dense(built, vkeys, fkeys);
        let placeholder = EdgeKey(ElementId {
            by: CommandId::first_at(0),
            index: 0,
        });
        self.edges = dense::sorted_map(
            built.halves.len() / 2,
            built
                .iter()
                .filter(|(o, h)| *o < h.dest)
                .map(|(o, h)| ((key(o), key(h.dest)), placeholder)),
        );
    }

    /// Checks the derived half-edges against the listed invariants (twins, `next`/`prev`
    /// symmetry, loops closed and equal to the faces' corners, no self-edge). Used by tests and
    /// on decode; operations are checked by [`EditMesh::finish`].
    ///
    /// # Errors
    /// The first violated invariant.
    pub fn check(&self) -> Result<(), EditError> {
        for ((a, b), h) in self.half_edges.iter() {
            if a == b {
                return topo(format!("{a} has an edge to itself"));
            }
            let Some(twin) = self.half_edges.get(&(*b, *a)) else {
                return topo(format!("half-edge {a} → {b} has no twin"));
            };
            if h.face.is_none() && twin.face.is_none() {
                return topo(format!("edge {a} – {b} has no face on either side"));
            }
            let Some(next) = self.half_edges.get(&(*b, h.next)) else {
                return topo(format!("half-edge {a} → {b}: next is missing"));
            };
            if next.prev != *a || next.face != h.face {
                return topo(format!("half-edge {a} → {b}: next/prev do not mirror"));
            }
            if !self.edges.contains_key(&sorted(*a, *b)) {
                return topo(format!("edge {a} – {b} has no id"));
            }
        }
        for (f, corners) in &self.faces {
            let n = corners.len();
            for i in 0..n {
                let (a, b) = (corners[i], corners[(i + 1) % n]);
                match self.half_edges.get(&(a, b)) {
                    Some(h) if h.face == Some(*f) && h.next == corners[(i + 2) % n] => {}
                    _ => return topo(format!("the loop of {f} is not closed at {a}")),
                }
            }
        }
        if self.edges.len() * 2 != self.half_edges.len() {
            return topo("the edge list does not match the half-edges".into());
        }
        if self.edge_ends.len() != self.edges.len()
            || self
                .edges
                .iter()
                .any(|(p, k)| self.edge_ends.get(k) != Some(p))
        {
            return topo("edge ids and edge ends disagree".into());
        }
        // What `finish` maintained piece by piece equals a rebuild from the faces.
        let mut fresh = Self {
            verts: self.verts.clone(),
            faces: self.faces.clone(),
            ..Self::default()
        };
        fresh.build()?;
        if fresh.half_edges != self.half_edges
            || !fresh.edges.keys().eq(self.edges.keys())
            || fresh.triangles != self.triangles
        {
            return topo("the half-edges differ from a rebuild from the faces".into());
        }
        Ok(())
    }

    /// Sets absolute positions. A vertex takes a position only from a command later in total
    /// order than the one that last set it (last-write-wins per vertex), so concurrent moves of
    /// one vertex end at the later one's value whatever the arrival order.
    ///
    /// # Errors
    /// [`EditError::Missing`] (before anything changes) for a vertex that does not exist.
    pub fn move_vertices(
        &mut self,
        by: CommandId,
        moves: &[(VertexKey, Vec3)],
    ) -> Result<(), EditError> {
        for (v, p) in moves {
            self.need_vertex(*v)?;
            if !p.is_finite() {
                return topo(format!("{v} would get a non-finite position"));
            }
        }
        // Nothing below can fail: on its own a move writes in place (no journal, no copy, the
        // cost of a drag is its vertices); inside a larger operation it is journaled.
        let journal = self.undo.is_some();
        for (v, p) in moves {
            let stamp = self.moved.get(v).copied().unwrap_or(v.0.by);
            if by <= stamp {
                continue;
            }
            if journal {
                self.place(*v, *p, by);
            } else if self.verts.contains_key(v) {
                self.record_vert(*v);
                let Some(pos) = self.verts.get_mut(v) else {
                    continue;
                };
                *pos = *p;
                self.moved.insert(*v, by);
            }
        }
        self.pending_verts.clear();
        Ok(())
    }

    /// Adds an isolated vertex.
    pub fn create_vertex(&mut self, ids: &mut IdSource, position: Vec3) -> VertexKey {
        let v = ids.vertex();
        self.set_vert(v, position);
        self.pending_verts.clear();
        v
    }

    /// Adds a face over existing vertices (counter-clockwise seen from outside).
    ///
    /// # Errors
    /// Missing vertices, or a face that would break the mesh.
    pub fn create_face(
        &mut self,
        ids: &mut IdSource,
        corners: &[VertexKey],
    ) -> Result<FaceKey, EditError> {
        let outer = self.begin();
        let result = (|| -> Result<FaceKey, EditError> {
            for v in corners {
                self.need_vertex(*v)?;
            }
            let f = ids.face();
            self.set_face(f, corners.to_vec());
            self.finish(ids)?;
            Ok(f)
        })();
        self.end(outer, result)
    }

    /// Deletes vertices, edges and faces, with the faces that use them; vertices left without a
    /// face by the deletion go too (isolated vertices made on purpose stay).
    ///
    /// # Errors
    /// A missing element, or a deletion that leaves a non-manifold vertex.
    pub fn delete(
        &mut self,
        ids: &mut IdSource,
        verts: &[VertexKey],
        edges: &[EdgeKey],
        faces: &[FaceKey],
    ) -> Result<(), EditError> {
        let outer = self.begin();
        let result = (|| -> Result<(), EditError> {
            let mut gone_faces: BTreeSet<FaceKey> = BTreeSet::new();
            for f in faces {
                self.need_face(*f)?;
                gone_faces.insert(*f);
            }
            for e in edges {
                let (a, b) = self.need_edge(*e)?;
                gone_faces.extend(self.face_of(a, b));
                gone_faces.extend(self.face_of(b, a));
            }
            for v in verts {
                self.need_vertex(*v)?;
                gone_faces.extend(self.outgoing(*v).filter_map(|(_, h)| h.face));
            }
            let mut orphans: BTreeSet<VertexKey> = BTreeSet::new();
            for f in &gone_faces {
                if let Some(corners) = self.take_face(*f) {
                    orphans.extend(corners);
                }
            }
            for v in verts {
                self.remove_vert(*v);
                orphans.remove(v);
            }
            // Corners of removed faces that no remaining face uses.
            for v in orphans {
                let used = self.outgoing(v).any(|(w, h)| {
                    h.face.is_some_and(|f| !gone_faces.contains(&f))
                        || self.face_of(w, v).is_some_and(|f| !gone_faces.contains(&f))
                });
                if !used {
                    self.remove_vert(v);
                }
            }
            self.finish(ids)
        })();
        self.end(outer, result)
    }

    /// Extrudes faces: each edge-connected region moves as one along its area-weighted normal
    /// (`offset = None`, by `distance`) or by `offset`, with side quads along its boundary. The
    /// distance (or the offset's length) snaps to multiples of `snap_m` when given. The faces
    /// keep their ids and move with the new vertices; the vertices left behind keep theirs.
    ///
    /// # Errors
    /// A missing face or a result that is not manifold.
    pub fn extrude_faces(
        &mut self,
        ids: &mut IdSource,
        by: CommandId,
        faces: &[FaceKey],
        offset: Option<Vec3>,
        distance: f32,
        snap_m: Option<f32>,
    ) -> Result<(), EditError> {
        let outer = self.begin();
        let result = (|| -> Result<(), EditError> {
            let selected: BTreeSet<FaceKey> = faces.iter().copied().collect();
            for f in &selected {
                self.need_face(*f)?;
            }
            // Edge-connected regions, in order of their smallest face id.
            let mut region_of: BTreeMap<FaceKey, usize> = BTreeMap::new();
            let mut regions: Vec<Vec<FaceKey>> = Vec::new();
            // Per face, its half-edges on the region's boundary (the twin's face is not
            // selected, so not in the region), in loop order.
            let mut rims: BTreeMap<FaceKey, Vec<(VertexKey, VertexKey)>> = BTreeMap::new();
            for f in &selected {
                if region_of.contains_key(f) {
                    continue;
                }
                let r = regions.len();
                let mut stack = alloc::vec![*f];
                let mut members = Vec::new();
                region_of.insert(*f, r);
                while let Some(g) = stack.pop() {
                    members.push(g);
                    let corners = &self.faces[&g];
                    let mut rim = Vec::new();
                    for i in 0..corners.len() {
                        let (a, b) = (corners[i], corners[(i + 1) % corners.len()]);
                        match self.face_of(b, a) {
                            Some(h) if selected.contains(&h) => {
                                if let alloc::collections::btree_map::Entry::Vacant(slot) =
                                    region_of.entry(h)
                                {
                                    slot.insert(r);
                                    stack.push(h);
                                }
                            }
                            _ => rim.push((a, b)),
                        }
                    }
                    rims.insert(g, rim);
                }
                members.sort_unstable();
                regions.push(members);
            }
            for members in regions {
                let normal = members
                    .iter()
                    .fold(Vec3::ZERO, |n, f| n + self.face_normal(&self.faces[f]))
                    .normalize_or_zero();
                let shift = match offset {
                    Some(v) => {
                        let len = v.length();
                        if len > 0.0 {
                            v * (snap(len, snap_m) / len)
                        } else {
                            v
                        }
                    }
                    None => normal * snap(distance, snap_m),
                };
                // Boundary half-edges of the region, in face-id then loop order.
                let mut rim: Vec<(VertexKey, VertexKey)> = Vec::new();
                let mut corners_all: BTreeSet<VertexKey> = BTreeSet::new();
                for f in &members {
                    corners_all.extend(self.faces[f].iter().copied());
                    rim.extend(rims.remove(f).unwrap_or_default());
                }
                let rim_verts: BTreeSet<VertexKey> = rim.iter().map(|(a, _)| *a).collect();
                let mut lifted: BTreeMap<VertexKey, VertexKey> = BTreeMap::new();
                for v in &rim_verts {
                    let p = self.position(*v) + shift;
                    let nv = ids.vertex();
                    self.set_vert(nv, p);
                    lifted.insert(*v, nv);
                }
                for v in corners_all.difference(&rim_verts) {
                    let p = self.position(*v) + shift;
                    self.place(*v, p, by);
                }
                for f in &members {
                    if let Some(corners) = self.face_mut(*f) {
                        for c in corners.iter_mut() {
                            if let Some(n) = lifted.get(c) {
                                *c = *n;
                            }
                        }
                    }
                }
                for (a, b) in rim {
                    let (a2, b2) = (lifted[&a], lifted[&b]);
                    let side = ids.face();
                    self.set_face(side, alloc::vec![a, b, b2, a2]);
                }
            }
            self.finish(ids)
        })();
        self.end(outer, result)
    }

    /// Extrudes border edges by `offset` (its length snapped to `snap_m`): a quad per edge,
    /// new vertices shared where selected edges meet.
    ///
    /// # Errors
    /// A missing edge, an edge that is not on the border, or a non-manifold result.
    pub fn extrude_edges(
        &mut self,
        ids: &mut IdSource,
        edges: &[EdgeKey],
        offset: Vec3,
        snap_m: Option<f32>,
    ) -> Result<(), EditError> {
        let outer = self.begin();
        let result = (|| -> Result<(), EditError> {
            let len = offset.length();
            let shift = if len > 0.0 {
                offset * (snap(len, snap_m) / len)
            } else {
                offset
            };
            let mut sides = Vec::new();
            let unique: BTreeSet<EdgeKey> = edges.iter().copied().collect();
            for e in &unique {
                let (a, b) = self.need_edge(*e)?;
                // (a, b) oriented so that a→b has the face and b→a is the border.
                let (a, b) = match (self.face_of(a, b), self.face_of(b, a)) {
                    (Some(_), None) => (a, b),
                    (None, Some(_)) => (b, a),
                    _ => {
                        return topo(format!(
                            "{e} is not on the border; only border edges extrude"
                        ));
                    }
                };
                sides.push((a, b));
            }
            let mut lifted: BTreeMap<VertexKey, VertexKey> = BTreeMap::new();
            for (a, b) in &sides {
                for v in [*a, *b] {
                    if let alloc::collections::btree_map::Entry::Vacant(slot) = lifted.entry(v) {
                        let p = self.verts.get(&v).copied().unwrap_or(Vec3::ZERO) + shift;
                        let nv = ids.vertex();
                        slot.insert(nv);
                        self.set_vert(nv, p);
                    }
                }
            }
            for (a, b) in sides {
                let side = ids.face();
                self.set_face(side, alloc::vec![b, a, lifted[&a], lifted[&b]]);
            }
            self.finish(ids)
        })();
        self.end(outer, result)
    }

    /// Points along edge a–b (`cuts` of them, from a to b); the same vertices whichever way it
    /// is asked, created on first use.
    fn cut_points(
        &mut self,
        ids: &mut IdSource,
        cache: &mut BTreeMap<(VertexKey, VertexKey), Vec<VertexKey>>,
        a: VertexKey,
        b: VertexKey,
        cuts: usize,
        at: impl Fn(Vec3, Vec3, usize) -> Vec3,
    ) -> Vec<VertexKey> {
        let key = sorted(a, b);
        let pts = if let Some(p) = cache.get(&key) {
            p.clone()
        } else {
            let (pa, pb) = (self.position(key.0), self.position(key.1));
            let p: Vec<VertexKey> = (1..=cuts)
                .map(|k| {
                    let v = ids.vertex();
                    self.set_vert(v, at(pa, pb, k));
                    v
                })
                .collect();
            cache.insert(key, p.clone());
            p
        };
        if key.0 == a {
            pts
        } else {
            pts.into_iter().rev().collect()
        }
    }

    /// Inserts the cut points of edge a–b into every face outside `skip` that uses it.
    fn insert_into_neighbours(
        &mut self,
        cache: &BTreeMap<(VertexKey, VertexKey), Vec<VertexKey>>,
        skip: &BTreeSet<FaceKey>,
    ) {
        for ((lo, hi), pts) in cache {
            for (a, b) in [(*lo, *hi), (*hi, *lo)] {
                let Some(f) = self.face_of(a, b) else {
                    continue;
                };
                if skip.contains(&f) {
                    continue;
                }
                let Some(corners) = self.face_mut(f) else {
                    continue;
                };
                if let Some(i) = corners.iter().position(|c| *c == a) {
                    let ins: Vec<VertexKey> = if a == *lo {
                        pts.clone()
                    } else {
                        pts.iter().rev().copied().collect()
                    };
                    let at = i + 1;
                    corners.splice(at..at, ins);
                }
            }
        }
    }

    /// Subdivides faces with `cuts` cuts per edge: quads into a grid, triangles into a
    /// triangular grid, larger polygons into a fan around their centre. Neighbouring faces get
    /// the new edge vertices in their loops, so the mesh stays closed.
    ///
    /// # Errors
    /// A missing face or a non-manifold result.
    #[allow(
        clippy::needless_range_loop,
        reason = "grid indices (i, j) are the math: q[i][j] is the point at (i/n, j/n)"
    )]
    pub fn subdivide(
        &mut self,
        ids: &mut IdSource,
        faces: &[FaceKey],
        cuts: u8,
    ) -> Result<(), EditError> {
        let outer = self.begin();
        let result = (|| -> Result<(), EditError> {
            let selected: BTreeSet<FaceKey> = faces.iter().copied().collect();
            self.bulk(selected.len());
            for f in &selected {
                self.need_face(*f)?;
            }
            let c = usize::from(cuts);
            let n = c + 1;
            let nf = n as f32;
            let lerp_at = move |a: Vec3, b: Vec3, k: usize| a + (b - a) * (k as f32 / nf);
            let mut cache = BTreeMap::new();
            let mut replaced: Vec<(FaceKey, Vec<Vec<VertexKey>>)> = Vec::new();
            for f in &selected {
                let corners = self.faces[f].clone();
                let m = corners.len();
                // Side points from corner i to corner i+1, corners included.
                let mut side: Vec<Vec<VertexKey>> = Vec::with_capacity(m);
                for i in 0..m {
                    let (a, b) = (corners[i], corners[(i + 1) % m]);
                    let mut s = alloc::vec![a];
                    s.extend(self.cut_points(ids, &mut cache, a, b, c, lerp_at));
                    s.push(b);
                    side.push(s);
                }
                let p: Vec<Vec3> = corners.iter().map(|v| self.position(*v)).collect();
                let mut out: Vec<Vec<VertexKey>> = Vec::new();
                if m == 4 {
                    // Grid q[i][j], i along c0→c1, j along c0→c3.
                    let mut q = alloc::vec![alloc::vec![corners[0]; n + 1]; n + 1];
                    for k in 0..=n {
                        q[k][0] = side[0][k];
                        q[n][k] = side[1][k];
                        q[n - k][n] = side[2][k];
                        q[0][n - k] = side[3][k];
                    }
                    for j in 1..n {
                        for i in 1..n {
                            let (u, v) = (i as f32 / nf, j as f32 / nf);
                            let bottom = p[0] + (p[1] - p[0]) * u;
                            let top = p[3] + (p[2] - p[3]) * u;
                            let key = ids.vertex();
                            self.set_vert(key, bottom + (top - bottom) * v);
                            q[i][j] = key;
                        }
                    }
                    for j in 0..n {
                        for i in 0..n {
                            out.push(alloc::vec![
                                q[i][j],
                                q[i + 1][j],
                                q[i + 1][j + 1],
                                q[i][j + 1]
                            ]);
                        }
                    }
                } else if m == 3 {
                    // t[i][j], i + j ≤ n: c0 + (c1 - c0) i/n + (c2 - c0) j/n.
                    let mut t = alloc::vec![alloc::vec![corners[0]; n + 1]; n + 1];
                    for k in 0..=n {
                        t[k][0] = side[0][k];
                        t[n - k][k] = side[1][k];
                        t[0][n - k] = side[2][k];
                    }
                    for i in 1..n {
                        for j in 1..n - i {
                            let key = ids.vertex();
                            self.set_vert(
                                key,
                                p[0] + (p[1] - p[0]) * (i as f32 / nf)
                                    + (p[2] - p[0]) * (j as f32 / nf),
                            );
                            t[i][j] = key;
                        }
                    }
                    for i in 0..n {
                        for j in 0..n - i {
                            out.push(alloc::vec![t[i][j], t[i + 1][j], t[i][j + 1]]);
                            if i + j + 1 < n {
                                out.push(alloc::vec![t[i + 1][j], t[i + 1][j + 1], t[i][j + 1]]);
                            }
                        }
                    }
                } else {
                    let centre = p.iter().fold(Vec3::ZERO, |s, x| s + *x) / m as f32;
                    let ck = ids.vertex();
                    self.set_vert(ck, centre);
                    for s in &side {
                        for w in s.windows(2) {
                            out.push(alloc::vec![ck, w[0], w[1]]);
                        }
                    }
                }
                replaced.push((*f, out));
            }
            self.insert_into_neighbours(&cache, &selected);
            for (f, out) in replaced {
                self.take_face(f);
                for poly in out {
                    let nf = ids.face();
                    self.set_face(nf, poly);
                }
            }
            self.finish(ids)
        })();
        self.end(outer, result)
    }

    /// Catmull–Clark subdivision, `levels` times, of the whole mesh (`faces` empty) or of a face
    /// region. Region borders are treated as creases: their edge points are midpoints, their
    /// vertices stay, and the faces outside get the midpoints in their loops. Mesh borders use
    /// the boundary rules (edge midpoints; vertices (1/8, 6/8, 1/8)). Original vertices keep
    /// their ids (and move); faces and split edges are replaced by new ones.
    ///
    /// # Errors
    /// A missing face or a non-manifold result.
    pub fn catmull_clark(
        &mut self,
        ids: &mut IdSource,
        by: CommandId,
        faces: &[FaceKey],
        levels: u8,
    ) -> Result<(), EditError> {
        let outer = self.begin();
        let result = (|| -> Result<(), EditError> {
            let chosen: BTreeSet<FaceKey> = faces.iter().copied().collect();
            for f in &chosen {
                self.need_face(*f)?;
            }
            if self.faces.is_empty() {
                return topo("there are no faces to smooth".into());
            }
            // The whole mesh (nothing or every face chosen): every level on dense indices.
            let whole = faces.is_empty() || chosen.len() == self.faces.len();
            if whole
                && self.pending.is_empty()
                && self.pending_verts.is_empty()
                && !tests::force_full()
                && let Some(journal) = self.undo.as_deref()
                && (journal.snapshot.is_some() || journal.is_empty())
            {
                for _ in 0..levels {
                    self.catmull_clark_whole(ids, by)?;
                }
                return Ok(());
            }
            let mut region = if faces.is_empty() {
                self.faces.keys().copied().collect()
            } else {
                chosen
            };
            self.bulk(region.len());
            for _ in 0..levels {
                region = self.catmull_clark_once(ids, by, &region)?;
            }
            Ok(())
        })();
        self.end(outer, result)
    }

    /// One level of Catmull–Clark of the whole mesh: the rules, ids and float operations of
    /// [`EditMesh::catmull_clark_once`] with every face in the region (the randomized tests
    /// check they agree), computed on dense indices, the result built and checked in one pass and
    /// swapped in. The journal keeps the mesh as it was (moved, not copied).
    #[allow(
        clippy::too_many_lines,
        reason = "one pass: face points, edge points, vertex points, faces, the build"
    )]
    fn catmull_clark_whole(&mut self, ids: &mut IdSource, by: CommandId) -> Result<(), EditError> {
        use dense::NONE;
        tests::count_whole_smooth();
        let vkeys: Vec<VertexKey> = self.verts.keys().copied().collect();
        let pos: Vec<Vec3> = self.verts.values().copied().collect();
        let corners: usize = self.faces.values().map(Vec::len).sum();
        let mut loops = dense::Loops::with_capacity(self.faces.len(), corners);
        let ranks = Ranks::new(&vkeys);
        for (f, corners) in &self.faces {
            for v in corners {
                let Some(i) = ranks.of(*v) else {
                    return Err(EditError::Missing(format!("{v} (a corner of {f})")));
                };
                loops.corners.push(i);
            }
            loops.end_face();
        }
        let nf = loops.faces();
        // Face points, ids first.
        let mut face_pos = Vec::with_capacity(nf);
        let mut new_keys: Vec<VertexKey> = Vec::new();
        for f in 0..nf {
            let c = loops.face(f);
            let sum = c.iter().fold(Vec3::ZERO, |s, v| s + pos[*v as usize]);
            face_pos.push(sum / c.len() as f32);
            new_keys.push(ids.vertex());
        }
        // Edges: the face half-edges (by position in `loops`) grouped by end-point pair.
        let total = loops.corners.len();
        let mut next_at = vec![0u32; total];
        let mut face_at = vec![0u32; total];
        for f in 0..nf {
            let r = loops.range(f);
            for t in r.clone() {
                next_at[t] = if t + 1 == r.end { r.start } else { t + 1 } as u32;
                face_at[t] = f as u32;
            }
        }
        let pair = |t: usize| {
            let (a, b) = (loops.corners[t], loops.corners[next_at[t] as usize]);
            (u64::from(a.min(b)) << 32) | u64::from(a.max(b))
        };
        // Sorted by (pair, position): a counting sort on the smaller end, then each (small)
        // group by the rest.
        let mut by_pair = vec![(0u64, 0u32); total];
        {
            let mut start = vec![0u32; vkeys.len() + 1];
            for t in 0..total {
                start[(pair(t) >> 32) as usize + 1] += 1;
            }
            for v in 0..vkeys.len() {
                start[v + 1] += start[v];
            }
            let mut fill = start.clone();
            for t in 0..total {
                let p = pair(t);
                let slot = &mut fill[(p >> 32) as usize];
                by_pair[*slot as usize] = (p, t as u32);
                *slot += 1;
            }
            for w in start.windows(2) {
                by_pair[w[0] as usize..w[1] as usize].sort_unstable();
            }
        }
        // Per edge: its ends, the faces on either side (lo → hi, hi → lo) and its first use.
        struct Edge {
            lo: u32,
            hi: u32,
            left: u32,
            right: u32,
            rank: u32,
        }
        let mut edges: Vec<Edge> = Vec::with_capacity(total / 2 + 1);
        let mut edge_at = vec![0u32; total];
        for group in by_pair.chunk_by(|x, y| x.0 == y.0) {
            let (lo, hi) = ((group[0].0 >> 32) as u32, group[0].0 as u32);
            let mut e = Edge {
                lo,
                hi,
                left: NONE,
                right: NONE,
                rank: NONE,
            };
            for (_, t) in group {
                let side = if loops.corners[*t as usize] == lo {
                    &mut e.left
                } else {
                    &mut e.right
                };
                if *side != NONE {
                    return topo(format!(
                        "{} → {} is used twice",
                        vkeys[lo as usize], vkeys[hi as usize]
                    ));
                }
                *side = face_at[*t as usize];
                edge_at[*t as usize] = edges.len() as u32;
            }
            edges.push(e);
        }
        drop(by_pair);
        // Edge points take ids in order of first use (face order, then loop order).
        let mut ranked: Vec<u32> = Vec::with_capacity(edges.len());
        for t in 0..total {
            let e = &mut edges[edge_at[t] as usize];
            if e.rank == NONE {
                e.rank = ranked.len() as u32;
                ranked.push(edge_at[t]);
                new_keys.push(ids.vertex());
            }
        }
        let edge_pos = |e: &Edge| {
            let (pa, pb) = (pos[e.lo as usize], pos[e.hi as usize]);
            if e.left != NONE && e.right != NONE {
                (pa + pb + face_pos[e.left as usize] + face_pos[e.right as usize]) * 0.25
            } else {
                (pa + pb) * 0.5
            }
        };
        // Vertex points: each vertex's edges as (other end, face on the way out, face on the
        // way back), sorted by the other end (the order of its outgoing half-edges).
        let nv = vkeys.len();
        let mut start = vec![0u32; nv + 1];
        for e in &edges {
            start[e.lo as usize + 1] += 1;
            start[e.hi as usize + 1] += 1;
        }
        for v in 0..nv {
            start[v + 1] += start[v];
        }
        let mut fill: Vec<u32> = start[..nv].to_vec();
        let mut around = vec![(0u32, NONE, NONE); edges.len() * 2];
        for e in &edges {
            for (v, w, out, back) in [(e.lo, e.hi, e.left, e.right), (e.hi, e.lo, e.right, e.left)]
            {
                around[fill[v as usize] as usize] = (w, out, back);
                fill[v as usize] += 1;
            }
        }
        drop(fill);
        let mut placed: Vec<Option<Vec3>> = vec![None; nv];
        for v in 0..nv {
            let out = &mut around[start[v] as usize..start[v + 1] as usize];
            if out.is_empty() {
                continue; // a loose vertex: no face uses it
            }
            out.sort_unstable_by_key(|x| x.0);
            let p = pos[v];
            let mut border = out.iter().filter(|(_, f, g)| *f == NONE || *g == NONE);
            let np = match (border.next(), border.next(), border.next()) {
                (None, _, _) => {
                    let n = out.len() as f32;
                    let mut fsum = Vec3::ZERO;
                    let mut rsum = Vec3::ZERO;
                    for (w, f, _) in out.iter() {
                        fsum += face_pos[*f as usize];
                        rsum += (p + pos[*w as usize]) * 0.5;
                    }
                    (fsum / n + rsum * (2.0 / n) + p * (n - 3.0)) / n
                }
                (Some(a), Some(b), None) => {
                    (pos[a.0 as usize] + p * 6.0 + pos[b.0 as usize]) * 0.125
                }
                _ => p,
            };
            placed[v] = Some(np);
        }
        drop(around);
        // The vertices of the result: the old ones and the new points, merged in key order.
        if new_keys.windows(2).any(|w| w[0] >= w[1]) {
            return Err(EditError::Limit("the command's element ids ran out".into()));
        }
        let mut out_keys: Vec<VertexKey> = Vec::with_capacity(nv + new_keys.len());
        let mut out_pos: Vec<Vec3> = Vec::with_capacity(nv + new_keys.len());
        let mut old_at = vec![0u32; nv];
        let mut new_at = vec![0u32; new_keys.len()];
        let new_pos = |j: usize| {
            if j < nf {
                face_pos[j]
            } else {
                edge_pos(&edges[ranked[j - nf] as usize])
            }
        };
        let (mut i, mut j) = (0, 0);
        while i < nv || j < new_keys.len() {
            if i < nv && j < new_keys.len() && vkeys[i] == new_keys[j] {
                // Only when the same command is applied to its own result again.
                return topo(format!("{} already exists", vkeys[i]));
            }
            let take_old = j == new_keys.len() || (i < nv && vkeys[i] < new_keys[j]);
            if take_old {
                old_at[i] = out_keys.len() as u32;
                out_keys.push(vkeys[i]);
                out_pos.push(placed[i].unwrap_or(pos[i]));
                i += 1;
            } else {
                new_at[j] = out_keys.len() as u32;
                out_keys.push(new_keys[j]);
                out_pos.push(new_pos(j));
                j += 1;
            }
        }
        // The faces: a quad per corner (corner, next edge point, face point, previous edge
        // point), in face then loop order.
        let mut quads = dense::Loops::with_capacity(total, total * 4);
        let mut face_keys: Vec<FaceKey> = Vec::with_capacity(total);
        let point = |e: u32| new_at[nf + edges[e as usize].rank as usize];
        for (f, centre) in new_at.iter().take(nf).enumerate() {
            let r = loops.range(f);
            for t in r.clone() {
                let before = if t == r.start { r.end - 1 } else { t - 1 };
                quads.corners.extend([
                    old_at[loops.corners[t] as usize],
                    point(edge_at[t]),
                    *centre,
                    point(edge_at[before]),
                ]);
                quads.end_face();
                face_keys.push(ids.face());
            }
        }
        drop((
            loops, next_at, face_at, edge_at, edges, ranked, old_at, new_at,
        ));
        let built =
            dense::build(out_keys.len(), &quads).map_err(|e| fault(e, &out_keys, &face_keys))?;
        if let Some(v) = out_pos.iter().position(|p| !p.is_finite()) {
            return topo(format!("{} has a non-finite position", out_keys[v]));
        }
        // Every edge of the result has a new end point: all take new ids, in sorted order.
        let key = |i: u32| out_keys[i as usize];
        let mut edges: Vec<((VertexKey, VertexKey), EdgeKey)> =
            Vec::with_capacity(built.halves.len() / 2);
        edges.extend(
            built
                .iter()
                .filter(|(o, h)| *o < h.dest)
                .map(|(o, h)| ((key(o), key(h.dest)), EdgeKey(ids.next_id()))),
        );
        let half_edges = halves_from_dense(&built, &out_keys, &face_keys);
        let faces = face_keys
            .iter()
            .enumerate()
            .map(|(q, f)| (*f, quads.face(q).iter().map(|c| key(*c)).collect()))
            .collect();
        // Moved vertices are stamped by this command; the other stamps stay.
        let mut stamps = self.moved.iter().peekable();
        let mut moved = Vec::with_capacity(nv);
        for (v, p) in vkeys.iter().zip(&placed) {
            while stamps.next_if(|(k, _)| *k < v).is_some() {}
            let old = stamps.next_if(|(k, _)| *k == v).map(|(_, c)| *c);
            if let Some(stamp) = if p.is_some() { Some(by) } else { old } {
                moved.push((*v, stamp));
            }
        }
        drop(stamps);
        let edge_ends = edges.iter().map(|(p, k)| (*k, *p)).collect();
        let was = EditMesh {
            verts: core::mem::replace(
                &mut self.verts,
                out_keys.iter().copied().zip(out_pos).collect(),
            ),
            faces: core::mem::replace(&mut self.faces, faces),
            edges: core::mem::replace(&mut self.edges, edges.into_iter().collect()),
            moved: core::mem::replace(&mut self.moved, moved.into_iter().collect()),
            half_edges: core::mem::replace(&mut self.half_edges, half_edges),
            edge_ends: core::mem::replace(&mut self.edge_ends, edge_ends),
            triangles: core::mem::replace(&mut self.triangles, built.triangles),
            ..EditMesh::default()
        };
        if let Some(r) = &mut self.recording
            && r.whole.is_none()
        {
            r.whole = Some(Box::new(was.clone()));
        }
        if let Some(journal) = &mut self.undo
            && journal.snapshot.is_none()
        {
            journal.snapshot = Some(Box::new(was));
        }
        Ok(())
    }

    fn catmull_clark_once(
        &mut self,
        ids: &mut IdSource,
        by: CommandId,
        region: &BTreeSet<FaceKey>,
    ) -> Result<BTreeSet<FaceKey>, EditError> {
        let in_region = |f: Option<FaceKey>| f.is_some_and(|f| region.contains(&f));
        // Face points.
        let mut face_point: BTreeMap<FaceKey, (VertexKey, Vec3)> = BTreeMap::new();
        for f in region {
            let corners = &self.faces[f];
            let c = corners
                .iter()
                .fold(Vec3::ZERO, |s, v| s + self.position(*v))
                / corners.len() as f32;
            face_point.insert(*f, (ids.vertex(), c));
        }
        // Edge points, for every edge of a region face, in face-id then loop order.
        let mut edge_point: BTreeMap<(VertexKey, VertexKey), (VertexKey, Vec3)> = BTreeMap::new();
        for f in region {
            let corners = &self.faces[f];
            for i in 0..corners.len() {
                let (a, b) = (corners[i], corners[(i + 1) % corners.len()]);
                let key = sorted(a, b);
                if edge_point.contains_key(&key) {
                    continue;
                }
                let (pa, pb) = (self.position(key.0), self.position(key.1));
                let left = self.face_of(key.0, key.1);
                let right = self.face_of(key.1, key.0);
                let p = match (left, right) {
                    (Some(l), Some(r)) if in_region(Some(l)) && in_region(Some(r)) => {
                        (pa + pb + face_point[&l].1 + face_point[&r].1) * 0.25
                    }
                    _ => (pa + pb) * 0.5,
                };
                edge_point.insert(key, (ids.vertex(), p));
            }
        }
        // New positions of original vertices.
        let mut corners_all: BTreeSet<VertexKey> = BTreeSet::new();
        for f in region {
            corners_all.extend(self.faces[f].iter().copied());
        }
        let mut new_pos: Vec<(VertexKey, Vec3)> = Vec::new();
        for v in &corners_all {
            let out: Vec<(VertexKey, Option<FaceKey>, Option<FaceKey>)> = self
                .outgoing(*v)
                .map(|(w, h)| (w, h.face, self.face_of(w, *v)))
                .collect();
            let p = self.position(*v);
            let all_region = out
                .iter()
                .all(|(_, f, g)| (f.is_none() || in_region(*f)) && (g.is_none() || in_region(*g)));
            if !all_region {
                continue; // on the region's border: a crease, stays put
            }
            let border: Vec<VertexKey> = out
                .iter()
                .filter(|(_, f, g)| f.is_none() || g.is_none())
                .map(|(w, _, _)| *w)
                .collect();
            let np = if border.is_empty() {
                let n = out.len() as f32;
                let mut fsum = Vec3::ZERO;
                let mut rsum = Vec3::ZERO;
                for (w, f, _) in &out {
                    if let Some(f) = f {
                        fsum += face_point[f].1;
                    }
                    rsum += (p + self.position(*w)) * 0.5;
                }
                (fsum / n + rsum * (2.0 / n) + p * (n - 3.0)) / n
            } else if border.len() == 2 {
                (self.position(border[0]) + p * 6.0 + self.position(border[1])) * 0.125
            } else {
                p
            };
            new_pos.push((*v, np));
        }
        // Faces outside the region that share an edge with it get the edge point.
        let mut cache: BTreeMap<(VertexKey, VertexKey), Vec<VertexKey>> = BTreeMap::new();
        for (key, (k, p)) in &edge_point {
            self.set_vert(*k, *p);
            cache.insert(*key, alloc::vec![*k]);
        }
        for (k, p) in face_point.values() {
            self.set_vert(*k, *p);
        }
        self.insert_into_neighbours(&cache, region);
        let mut next_region = BTreeSet::new();
        for f in region {
            let Some(corners) = self.take_face(*f) else {
                continue;
            };
            let m = corners.len();
            let fp = face_point[f].0;
            for i in 0..m {
                let v = corners[i];
                let e_next = edge_point[&sorted(v, corners[(i + 1) % m])].0;
                let e_prev = edge_point[&sorted(corners[(i + m - 1) % m], v)].0;
                let nf = ids.face();
                self.set_face(nf, alloc::vec![v, e_next, fp, e_prev]);
                next_region.insert(nf);
            }
        }
        for (v, p) in new_pos {
            self.place(v, p, by);
        }
        self.finish(ids)?;
        Ok(next_region)
    }

    /// Merges vertices: each group into its first vertex, at that vertex's position or
    /// (`at_center`) at the group's centroid. Several groups in one command weld a whole seam at
    /// once (welding it vertex by vertex would pass through non-manifold states).
    ///
    /// # Errors
    /// A missing vertex, a group of fewer than two distinct vertices, a vertex in two groups, or
    /// a result with a degenerate or non-manifold face (e.g. welding two corners of a triangle).
    pub fn weld(
        &mut self,
        ids: &mut IdSource,
        by: CommandId,
        groups: &[Vec<VertexKey>],
        at_center: bool,
    ) -> Result<(), EditError> {
        let outer = self.begin();
        let result = (|| -> Result<(), EditError> {
            let mut target: BTreeMap<VertexKey, VertexKey> = BTreeMap::new();
            let mut centres: Vec<(VertexKey, Vec3)> = Vec::new();
            let mut used: BTreeSet<VertexKey> = BTreeSet::new();
            for group in groups {
                let Some(&keep) = group.first() else {
                    return topo("a weld group needs at least two vertices".into());
                };
                let mut sum = Vec3::ZERO;
                let mut n = 0u32;
                for v in group {
                    sum += self.need_vertex(*v)?;
                    n += 1;
                    if !used.insert(*v) && *v != keep {
                        return topo(format!("{v} is in two weld groups"));
                    }
                    if *v != keep {
                        target.insert(*v, keep);
                    }
                }
                if !group.iter().any(|v| *v != keep) {
                    return topo("a weld group needs at least two distinct vertices".into());
                }
                if target.contains_key(&keep) {
                    return topo(format!("{keep} is in two weld groups"));
                }
                centres.push((keep, sum / n as f32));
            }
            let mut touched: BTreeSet<FaceKey> = BTreeSet::new();
            for v in target.keys() {
                touched.extend(self.outgoing(*v).filter_map(|(_, h)| h.face));
            }
            for f in touched {
                let Some(corners) = self.face_mut(f) else {
                    continue;
                };
                for c in corners.iter_mut() {
                    if let Some(t) = target.get(c) {
                        *c = *t;
                    }
                }
                corners.dedup();
                while corners.len() > 1 && corners.first() == corners.last() {
                    corners.pop();
                }
                if corners.len() < 3 {
                    return topo(format!(
                        "welding would collapse {f} into a degenerate face ({} corners)",
                        corners.len()
                    ));
                }
            }
            let gone: Vec<VertexKey> = target.keys().copied().collect();
            for v in gone {
                self.remove_vert(v);
            }
            if at_center {
                for (keep, c) in centres {
                    self.place(keep, c, by);
                }
            }
            self.finish(ids)
        })();
        self.end(outer, result)
    }

    /// Mirrors the mesh across a local axis plane, keeping the original half. With `weld`,
    /// vertices within [`MIRROR_WELD_M`] of the plane are snapped onto it and shared by both
    /// halves (a half model becomes one closed piece).
    ///
    /// # Errors
    /// A result that is not manifold (e.g. a face lying in the plane with `weld`).
    pub fn mirror(
        &mut self,
        ids: &mut IdSource,
        by: CommandId,
        axis: Axis,
        weld: bool,
    ) -> Result<(), EditError> {
        let outer = self.begin();
        self.bulk(self.faces.len());
        let result: Result<(), EditError> = {
            let flip = match axis {
                Axis::X => Vec3::new(-1.0, 1.0, 1.0),
                Axis::Y => Vec3::new(1.0, -1.0, 1.0),
                Axis::Z => Vec3::new(1.0, 1.0, -1.0),
            };
            let coord = |p: Vec3| match axis {
                Axis::X => p.x,
                Axis::Y => p.y,
                Axis::Z => p.z,
            };
            let mut image: BTreeMap<VertexKey, VertexKey> = BTreeMap::new();
            let originals: Vec<(VertexKey, Vec3)> =
                self.verts.iter().map(|(k, p)| (*k, *p)).collect();
            for (v, p) in originals {
                if weld && coord(p).abs() <= MIRROR_WELD_M {
                    let on_plane = p * (Vec3::ONE + flip) * 0.5;
                    if on_plane != p {
                        self.place(v, on_plane, by);
                    }
                    image.insert(v, v);
                } else {
                    let nv = ids.vertex();
                    self.set_vert(nv, p * flip);
                    image.insert(v, nv);
                }
            }
            let originals: Vec<Vec<VertexKey>> = self.faces.values().cloned().collect();
            for corners in originals {
                let mut m: Vec<VertexKey> = corners.iter().rev().map(|v| image[v]).collect();
                // Start the mirrored loop at the image of the original first corner.
                m.rotate_right(1);
                let nf = ids.face();
                self.set_face(nf, m);
            }
            self.finish(ids)
        };
        self.end(outer, result)
    }

    /// A deep copy with every element renamed to ids from `ids` (vertices in id order, then
    /// faces in id order, then edges); positions and loops are equal.
    ///
    /// # Errors
    /// Never for a valid mesh (the copy is checked like every result).
    pub fn duplicate(&self, ids: &mut IdSource) -> Result<Self, EditError> {
        let mut out = Self::default();
        let mut rename: BTreeMap<VertexKey, VertexKey> = BTreeMap::new();
        for (v, p) in &self.verts {
            let nv = ids.vertex();
            rename.insert(*v, nv);
            out.verts.insert(nv, *p);
        }
        for corners in self.faces.values() {
            let nf = ids.face();
            out.faces
                .insert(nf, corners.iter().map(|v| rename[v]).collect());
        }
        out.finish(ids)?;
        Ok(out)
    }

    /// Triangulated, flat-shaded render data (a fan per face, faces in id order).
    #[must_use]
    pub fn triangulate(&self) -> RenderMesh {
        let mut out = RenderMesh::default();
        for corners in self.faces.values() {
            let normal = self.face_normal(corners).normalize_or_zero();
            let base = out.positions.len() as u32;
            for c in corners {
                out.positions.push(self.position(*c).to_array());
                out.normals.push(normal.to_array());
            }
            for i in 1..corners.len().saturating_sub(1) as u32 {
                out.indices
                    .extend_from_slice(&[base, base + i, base + i + 1]);
            }
        }
        out
    }

    /// Each vertex's position in id order (the index the encoding and `to_indexed` use).
    fn vertex_ranks(&self) -> BTreeMap<VertexKey, u32> {
        self.verts
            .keys()
            .enumerate()
            .map(|(i, v)| (*v, i as u32))
            .collect()
    }

    /// The index-based half-edge mesh of the same faces (for code that walks indices).
    #[must_use]
    pub fn to_indexed(&self) -> Mesh {
        let rank = self.vertex_ranks();
        let positions: Vec<Vec3> = self.verts.values().copied().collect();
        let polys: Vec<Vec<u32>> = self
            .faces
            .values()
            .map(|c| c.iter().map(|v| rank[v]).collect())
            .collect();
        Mesh::from_polygons(&positions, &polys).unwrap_or_default()
    }
}

// ---- Canonical encoding ----------------------------------------------------------------------
//
// Ids are written as runs (one creating command, consecutive indices) because operations create
// elements in runs; corners and edge ends are written as ranks into the sorted vertex list.

#[derive(Serialize, Deserialize)]
struct Run {
    by: CommandId,
    start: u32,
    len: u32,
}

fn runs(keys: impl Iterator<Item = ElementId>) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for k in keys {
        if let Some(last) = out.last_mut()
            && last.by == k.by
            && last.start.checked_add(last.len) == Some(k.index)
        {
            last.len += 1;
            continue;
        }
        out.push(Run {
            by: k.by,
            start: k.index,
            len: 1,
        });
    }
    out
}

fn unrun(runs: &[Run], limit: usize) -> Result<Vec<ElementId>, String> {
    let mut out = Vec::new();
    for r in runs {
        if out.len().saturating_add(r.len as usize) > limit {
            return Err("more element ids than elements".into());
        }
        for i in 0..r.len {
            let index = r.start.checked_add(i).ok_or("element index overflows")?;
            out.push(ElementId { by: r.by, index });
        }
    }
    Ok(out)
}

#[derive(Serialize, Deserialize)]
struct Wire {
    vertex_ids: Vec<Run>,
    positions: Vec<Vec3>,
    face_ids: Vec<Run>,
    /// Corner counts, then all corners as vertex ranks.
    face_sizes: Vec<u32>,
    corners: Vec<u32>,
    edge_ids: Vec<Run>,
    /// Per edge, in edge-id order: its two end points as vertex ranks.
    edge_ends: Vec<(u32, u32)>,
    moved: Vec<(u32, CommandId)>,
}

impl Serialize for EditMesh {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let rank = self.vertex_ranks();
        let r = |v: &VertexKey| rank.get(v).copied().unwrap_or(u32::MAX);
        let by_id: BTreeMap<EdgeKey, (VertexKey, VertexKey)> =
            self.edges.iter().map(|(p, k)| (*k, *p)).collect();
        let wire = Wire {
            vertex_ids: runs(self.verts.keys().map(|k| k.0)),
            positions: self.verts.values().copied().collect(),
            face_ids: runs(self.faces.keys().map(|k| k.0)),
            face_sizes: self.faces.values().map(|c| c.len() as u32).collect(),
            corners: self.faces.values().flatten().map(r).collect(),
            edge_ids: runs(by_id.keys().map(|k| k.0)),
            edge_ends: by_id.values().map(|(a, b)| (r(a), r(b))).collect(),
            moved: self.moved.iter().map(|(v, c)| (r(v), *c)).collect(),
        };
        wire.serialize(s)
    }
}

impl<'de> Deserialize<'de> for EditMesh {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let w = Wire::deserialize(d)?;
        let vids = unrun(&w.vertex_ids, w.positions.len()).map_err(D::Error::custom)?;
        if vids.len() != w.positions.len() {
            return Err(D::Error::custom("vertex ids and positions differ in count"));
        }
        let keys: Vec<VertexKey> = vids.into_iter().map(VertexKey).collect();
        let at = |i: u32| {
            keys.get(i as usize)
                .copied()
                .ok_or_else(|| D::Error::custom("a vertex rank is out of range"))
        };
        let verts: BTreeMap<VertexKey, Vec3> = keys
            .iter()
            .copied()
            .zip(w.positions.iter().copied())
            .collect();
        if verts.len() != keys.len() {
            return Err(D::Error::custom("vertex ids repeat"));
        }
        let fids = unrun(&w.face_ids, w.face_sizes.len()).map_err(D::Error::custom)?;
        if fids.len() != w.face_sizes.len() {
            return Err(D::Error::custom("face ids and sizes differ in count"));
        }
        let mut faces = BTreeMap::new();
        let mut corners = w.corners.iter();
        for (id, size) in fids.into_iter().zip(&w.face_sizes) {
            let mut loop_ = Vec::new();
            for _ in 0..*size {
                let c = corners
                    .next()
                    .ok_or_else(|| D::Error::custom("fewer corners than face sizes say"))?;
                loop_.push(at(*c)?);
            }
            faces.insert(FaceKey(id), loop_);
        }
        if corners.next().is_some() {
            return Err(D::Error::custom("more corners than face sizes say"));
        }
        let eids = unrun(&w.edge_ids, w.edge_ends.len()).map_err(D::Error::custom)?;
        if eids.len() != w.edge_ends.len() {
            return Err(D::Error::custom("edge ids and ends differ in count"));
        }
        let mut edges = BTreeMap::new();
        for (id, (a, b)) in eids.into_iter().zip(&w.edge_ends) {
            edges.insert(sorted(at(*a)?, at(*b)?), EdgeKey(id));
        }
        let mut moved = BTreeMap::new();
        for (v, c) in &w.moved {
            moved.insert(at(*v)?, *c);
        }
        Self::from_parts(verts, faces, edges, moved).map_err(D::Error::custom)
    }
}

mod dense;
mod halves;

pub use halves::HalfEdges;

#[cfg(test)]
pub(crate) mod tests;

#[cfg(not(test))]
mod tests {
    pub const fn force_full() -> bool {
        false
    }
    pub const fn count_whole_smooth() {}
}
