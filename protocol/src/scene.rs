//! The scene: entities with name, transform, color, material and mesh, plus every author's
//! selection and tool state. The server holds the authoritative one; every client holds a
//! replica. Both change it only through [`Scene::apply`], in the server's acceptance order, so
//! equal inputs give equal bytes ([`Scene::encode`], [`Scene::state_hash`]).
//!
//! Rules of [`Scene::apply`]:
//! - Absolute values (name, color, material, selection, tool state, session name) remember the
//!   `CommandId` that set them and only yield to a later one in total order — last-write-wins by
//!   total order even when entries arrive in another order.
//! - Deltas (translate, rotate, scale) compose in acceptance order.
//! - Deltas apply only when later in total order than the last absolute `SetTransform` (which is
//!   last-write-wins per entity), so a concurrent earlier nudge cannot add itself to a typed value.
//! - Mesh edits ([`crate::editmesh`]) run on a scratch copy and replace the mesh only when the
//!   result passes the topology check and the size [`Limits`]; vertex moves are last-write-wins
//!   per vertex. [`Scene::try_apply`] says why an edit was refused (the server refuses the
//!   command); [`Scene::apply`] (replicas, replay) counts a refused edit's position and changes
//!   nothing else.
//! - A command on a missing entity does nothing; a spawn of an existing id does nothing.
//!
//! Meshes stay in their primitive form until an edit needs the half-edge structure, so a scene
//! of ten thousand primitives costs a few hundred bytes per entity. A primitive's element ids are
//! derived from its spawn ([`EditMesh::from_primitive`]).

#![allow(
    clippy::arithmetic_side_effects,
    reason = "glam vector arithmetic on validated payloads (finite, bounded by Command::validate)"
)]

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use glam::{Mat4, Vec3, Vec4};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::command::{Command, Material, Primitive, Transform};
use crate::editmesh::{EditError, EditMesh, IdSource};
use crate::ids::{AuthorId, CommandId, EntityId, ToolId};
use crate::mesh::{Mesh, RenderMesh};

/// Base color of a new entity (linear RGBA).
pub const DEFAULT_COLOR: Vec4 = Vec4::new(0.8, 0.8, 0.8, 1.0);
/// Material of a new entity.
pub const DEFAULT_MATERIAL: Material = Material {
    metallic: 0.0,
    roughness: 0.5,
};

/// An absolute value and the command that set it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lww<T> {
    /// The value.
    pub value: T,
    /// Who set it, when (total order).
    pub by: CommandId,
}

impl<T> Lww<T> {
    fn new(value: T, by: CommandId) -> Self {
        Self { value, by }
    }

    /// Takes `value` if `by` is later in total order than the current writer.
    fn set(&mut self, value: T, by: CommandId) {
        if by > self.by {
            self.value = value;
            self.by = by;
        }
    }
}

/// An entity's geometry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Geometry {
    /// An unedited primitive (its mesh is [`EditMesh::from_primitive`] with the spawn's id).
    Primitive(Primitive),
    /// An edited mesh.
    Mesh(EditMesh),
}

/// Triangles of a primitive's fan triangulation (checked against the meshes in tests).
#[must_use]
pub const fn primitive_triangles(p: Primitive) -> u64 {
    match p {
        Primitive::Cube => 12,
        Primitive::Pyramid => 6,
        Primitive::Plane => 2,
        Primitive::Cylinder => 60,
        Primitive::Sphere => 224,
    }
}

impl Geometry {
    /// The index-based half-edge mesh (for picking and index walks).
    #[must_use]
    pub fn mesh(&self) -> Mesh {
        match self {
            Self::Primitive(p) => Mesh::primitive(*p),
            Self::Mesh(m) => m.to_indexed(),
        }
    }

    /// Render triangles.
    #[must_use]
    pub fn render(&self) -> RenderMesh {
        match self {
            Self::Primitive(p) => Mesh::primitive(*p).triangulate(),
            Self::Mesh(m) => m.triangulate(),
        }
    }

    /// Triangles after fan triangulation.
    #[must_use]
    pub const fn triangle_count(&self) -> u64 {
        match self {
            Self::Primitive(p) => primitive_triangles(*p),
            Self::Mesh(m) => m.triangle_count(),
        }
    }

    /// The editable mesh with its element ids (`spawned_by` names a primitive's elements).
    #[must_use]
    pub fn edit_mesh(&self, spawned_by: CommandId) -> EditMesh {
        match self {
            Self::Primitive(p) => EditMesh::from_primitive(*p, spawned_by),
            Self::Mesh(m) => m.clone(),
        }
    }
}

/// Corner counts of the named faces that exist (for size estimates before an edit).
fn face_sizes<'a>(
    m: &'a EditMesh,
    faces: &'a [crate::editmesh::FaceKey],
) -> impl Iterator<Item = u64> + 'a {
    faces
        .iter()
        .filter_map(|f| m.faces().get(f))
        .map(|c| c.len() as u64)
}

/// Size limits the server enforces before it computes an edit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most triangles in one mesh.
    pub mesh_triangles: u64,
    /// Most triangles in the whole scene.
    pub session_triangles: u64,
}

impl Limits {
    /// The defaults: 250k triangles per mesh, 2M per session.
    pub const DEFAULT: Self = Self {
        mesh_triangles: 250_000,
        session_triangles: 2_000_000,
    };
    /// No limits (replicas follow the server, which already enforced its own).
    pub const NONE: Self = Self {
        mesh_triangles: u64::MAX,
        session_triangles: u64::MAX,
    };
}

/// One entity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    /// Display name.
    pub name: Lww<String>,
    /// Scene-from-entity transform.
    pub transform: Transform,
    /// The command that last set the transform absolutely (the spawn at first).
    pub transform_by: CommandId,
    /// Base color.
    pub color: Lww<Vec4>,
    /// Material.
    pub material: Lww<Material>,
    /// Geometry.
    pub geometry: Geometry,
    /// The spawn.
    pub spawned_by: CommandId,
}

impl Entity {
    /// `scene_from_entity` as a matrix.
    #[must_use]
    pub fn scene_from_entity(&self) -> Mat4 {
        let t = &self.transform;
        Mat4::from_scale_rotation_translation(t.scale, t.rotation, t.translation)
    }
}

/// A tool's state for one author.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolState {
    /// Picked up.
    pub active: bool,
    /// Aimed at.
    pub target: Option<EntityId>,
}

/// What one author has selected and which tools they hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthorState {
    /// Selection highlight.
    pub selection: Option<Lww<Vec<EntityId>>>,
    /// Tools.
    pub tools: BTreeMap<ToolId, Lww<ToolState>>,
    /// The display name the author chose ([`Command::SetDisplayName`]); empty or `None`: none.
    pub name: Option<Lww<String>>,
}

/// The whole replicated state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Scene {
    /// Entities by id.
    pub entities: BTreeMap<EntityId, Entity>,
    /// Per-author selection and tools.
    pub authors: BTreeMap<AuthorId, AuthorState>,
    /// The session's display name.
    pub session_name: Option<Lww<String>>,
    /// Entries applied (the replication position).
    pub position: u64,
    /// Largest Lamport time applied.
    pub lamport: u64,
    /// The undo history, on the server only ([`Scene::with_history`]): derived from the
    /// entries, never encoded, not part of the state (nor of equality).
    #[serde(skip)]
    pub(crate) history: Option<Box<crate::history::History>>,
    /// Imported assets this scene may apply ([`Scene::provide_asset`]), by id: on the server
    /// only, never encoded, not part of the state (nor of equality).
    #[serde(skip)]
    assets: BTreeMap<crate::command::AssetId, alloc::sync::Arc<crate::asset::ImportAsset>>,
    /// The triangles of every entity, once counted ([`Scene::total_triangles`]): kept up to
    /// date by each edit, forgotten by an undo, a redo or a delta (counted again when next
    /// needed), so a size check costs the edited entity, not the whole scene. Not state.
    #[serde(skip)]
    triangles: Option<u64>,
}

impl PartialEq for Scene {
    fn eq(&self, other: &Self) -> bool {
        self.entities == other.entities
            && self.authors == other.authors
            && self.session_name == other.session_name
            && self.position == other.position
            && self.lamport == other.lamport
    }
}

/// The net change of a scene over some entries: the full new state of every entity and
/// author they touched. Sent instead of the entries when it is much smaller (many edits of the
/// same entities in one tick); applying it gives the same bytes as applying the entries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SceneDelta {
    /// Position it applies to.
    pub from_position: u64,
    /// Position after it.
    pub to_position: u64,
    /// Lamport time after it.
    pub lamport: u64,
    /// Touched entities: new state, or `None` when removed.
    pub entities: Vec<(EntityId, Option<Entity>)>,
    /// Touched authors: new state.
    pub authors: Vec<(AuthorId, AuthorState)>,
    /// The session name after it.
    pub session_name: Option<Lww<String>>,
}

/// What a command touches, for delta tracking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Touched {
    /// An entity.
    Entity(EntityId),
    /// An author's selection or tools.
    Author(AuthorId),
    /// The session itself.
    Session,
}

/// Render-ready data of one entity.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderEntity {
    /// The entity.
    pub id: EntityId,
    /// `scene_from_entity`, column-major.
    pub world_from_local: [f32; 16],
    /// Base color, linear RGBA.
    pub color: [f32; 4],
    /// Triangles.
    pub mesh: RenderMesh,
}

/// The commands that take an entity from `from` to `to`, in the order and with the composition
/// [`Scene::apply`] uses: a translation delta, a rotation delta applied on the left
/// (`to.rotation = delta * from.rotation`), per-axis scale factors. Parts that do not change
/// give no command. Clients turn absolute edits (an inspector field, a released gizmo or grab)
/// into commands with this, so they compose like every other delta in the server's order.
#[must_use]
pub fn transform_commands(entity: EntityId, from: &Transform, to: &Transform) -> Vec<Command> {
    let mut out = Vec::new();
    let delta = to.translation - from.translation;
    if delta.length_squared() > 1e-12 {
        out.push(Command::Translate { entity, delta });
    }
    let r = (to.rotation * from.rotation.inverse()).normalize();
    let r = if r.w < 0.0 { -r } else { r };
    if (r.w - 1.0).abs() > 1e-6 {
        out.push(Command::Rotate { entity, delta: r });
    }
    let factor = to.scale / from.scale;
    if factor.is_finite()
        && factor.min_element() > 0.0
        && (factor - Vec3::ONE).abs().max_element() > 1e-6
    {
        out.push(Command::Scale { entity, factor });
    }
    out
}

impl Scene {
    /// An empty scene.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one accepted command. Call in the server's acceptance order. An edit the scene
    /// refuses (see [`Scene::try_apply`]) changes nothing but the position.
    pub fn apply(&mut self, id: CommandId, author: AuthorId, command: &Command) {
        // A refused edit is a no-op here by contract (the server never accepts one).
        let _ = self.edit_tracked(id, author, command, &Limits::NONE);
        self.position = self.position.saturating_add(1);
        self.lamport = self.lamport.max(id.lamport);
    }

    /// Applies one command if the scene accepts it: every mesh edit's result is checked and its
    /// size bounded by `limits` first. On `Err` nothing changed (not even the position).
    ///
    /// # Errors
    /// Why the edit would break a mesh, names an element that does not exist, or is too big.
    pub fn try_apply(
        &mut self,
        id: CommandId,
        author: AuthorId,
        command: &Command,
        limits: &Limits,
    ) -> Result<(), EditError> {
        self.edit_tracked(id, author, command, limits)?;
        self.position = self.position.saturating_add(1);
        self.lamport = self.lamport.max(id.lamport);
        Ok(())
    }

    /// What `command` by `author` would make of its entity, without changing this scene: the
    /// same operation on a copy of the entity alone (a live preview of a gesture, one's own or
    /// another member's). `None` when the entity is missing or the edit would be refused.
    #[must_use]
    pub fn preview(&self, author: AuthorId, command: &Command) -> Option<Entity> {
        let Touched::Entity(id) = Self::touched(author, command) else {
            return None;
        };
        let mut scratch = Self::new();
        scratch.entities.insert(id, self.entities.get(&id)?.clone());
        let by = CommandId {
            lamport: self.lamport.saturating_add(1),
            author,
        };
        scratch
            .try_apply(by, author, command, &Limits::DEFAULT)
            .ok()?;
        scratch.entities.remove(&id)
    }

    /// Makes `asset` available to [`Command::Import`]s that name `id`.
    pub fn provide_asset(
        &mut self,
        id: crate::command::AssetId,
        asset: alloc::sync::Arc<crate::asset::ImportAsset>,
    ) {
        self.assets.insert(id, asset);
    }

    /// Triangles of every entity.
    #[must_use]
    pub fn triangle_count(&self) -> u64 {
        self.entities
            .values()
            .map(|e| e.geometry.triangle_count())
            .fold(0, u64::saturating_add)
    }

    /// Every entity's triangles: counted once, then kept up to date by [`Scene::edit`].
    pub(crate) fn total_triangles(&mut self) -> u64 {
        if let Some(t) = self.triangles {
            return t;
        }
        let t = self.triangle_count();
        self.triangles = Some(t);
        t
    }

    /// Forgets the triangle total (after a change made outside [`Scene::edit`]: an undo, a
    /// redo, a delta).
    pub(crate) const fn forget_triangles(&mut self) {
        self.triangles = None;
    }

    /// Applies one command to the scene (the rules of [`Scene::apply`]), keeping the triangle
    /// total up to date from the triangles of the entities it may change, before and after.
    pub(crate) fn edit(
        &mut self,
        id: CommandId,
        author: AuthorId,
        command: &Command,
        limits: &Limits,
    ) -> Result<(), EditError> {
        // The entities it may change, as deltas name them (an undo or redo never comes here).
        let changed: Vec<EntityId> = self
            .changed_by(author, id, command)
            .into_iter()
            .filter_map(|t| match t {
                Touched::Entity(e) => Some(e),
                Touched::Author(_) | Touched::Session => None,
            })
            .collect();
        let count = |s: &Self| -> u64 {
            changed
                .iter()
                .filter_map(|e| s.entities.get(e))
                .map(|e| e.geometry.triangle_count())
                .fold(0, u64::saturating_add)
        };
        let before = count(self);
        let result = self.edit_one(id, author, command, limits);
        if let Some(t) = self.triangles {
            self.triangles = Some(t.saturating_sub(before).saturating_add(count(self)));
        }
        result
    }

    /// Runs a mesh edit of `entity` as one mesh transaction: a failed edit puts back what it
    /// changed, so nothing changes (a primitive becomes a mesh only when the edit succeeds).
    /// `predict` bounds the result's triangles before any work starts.
    fn mesh_edit(
        &mut self,
        id: CommandId,
        entity: EntityId,
        limits: &Limits,
        predict: impl FnOnce(&EditMesh) -> u64,
        edit: impl FnOnce(&mut EditMesh, &mut IdSource) -> Result<(), EditError>,
    ) -> Result<(), EditError> {
        let total = self.total_triangles();
        let e = self
            .entities
            .get_mut(&entity)
            .ok_or_else(|| EditError::Missing(alloc::format!("{entity}")))?;
        let within = |m: &EditMesh| {
            let current = m.triangle_count();
            let predicted = predict(m);
            if predicted > limits.mesh_triangles {
                return Err(EditError::Limit(alloc::format!(
                    "the result would have about {predicted} triangles; a mesh may have {}",
                    limits.mesh_triangles
                )));
            }
            let session = total.saturating_sub(current).saturating_add(predicted);
            if session > limits.session_triangles {
                return Err(EditError::Limit(alloc::format!(
                    "the session would have about {session} triangles; it may have {}",
                    limits.session_triangles
                )));
            }
            Ok(())
        };
        let mut ids = IdSource::new(id);
        match &mut e.geometry {
            Geometry::Mesh(m) => {
                within(m)?;
                m.transaction(|m| edit(m, &mut ids))
            }
            Geometry::Primitive(p) => {
                let mut m = EditMesh::from_primitive(*p, e.spawned_by);
                within(&m)?;
                edit(&mut m, &mut ids)?;
                e.geometry = Geometry::Mesh(m);
                Ok(())
            }
        }
    }

    #[allow(
        clippy::too_many_lines,
        reason = "one arm per command kind: the apply rules read best side by side"
    )]
    fn edit_one(
        &mut self,
        id: CommandId,
        author: AuthorId,
        command: &Command,
        limits: &Limits,
    ) -> Result<(), EditError> {
        match command {
            Command::Select { entities } => {
                let state = self.authors.entry(author).or_default();
                match &mut state.selection {
                    Some(s) => s.set(entities.clone(), id),
                    None => state.selection = Some(Lww::new(entities.clone(), id)),
                }
            }
            Command::Spawn {
                entity,
                primitive,
                transform,
            } => {
                if !self.entities.contains_key(entity) {
                    let own = primitive_triangles(*primitive);
                    if own > limits.mesh_triangles {
                        return Err(EditError::Limit(alloc::format!(
                            "a {primitive:?} has {own} triangles; a mesh may have {}",
                            limits.mesh_triangles
                        )));
                    }
                    let total = self.total_triangles().saturating_add(own);
                    if total > limits.session_triangles {
                        return Err(EditError::Limit(alloc::format!(
                            "the session would have {total} triangles; it may have {}",
                            limits.session_triangles
                        )));
                    }
                }
                self.entities.entry(*entity).or_insert_with(|| Entity {
                    name: Lww::new(String::new(), id),
                    transform: *transform,
                    transform_by: id,
                    color: Lww::new(DEFAULT_COLOR, id),
                    material: Lww::new(DEFAULT_MATERIAL, id),
                    geometry: Geometry::Primitive(*primitive),
                    spawned_by: id,
                });
            }
            Command::Despawn { entity } => {
                self.entities.remove(entity);
            }
            Command::Translate { entity, delta } => {
                if let Some(e) = self
                    .entities
                    .get_mut(entity)
                    .filter(|e| id > e.transform_by)
                {
                    e.transform.translation += *delta;
                }
            }
            Command::Rotate { entity, delta } => {
                if let Some(e) = self
                    .entities
                    .get_mut(entity)
                    .filter(|e| id > e.transform_by)
                {
                    e.transform.rotation = (*delta * e.transform.rotation).normalize();
                }
            }
            Command::Scale { entity, factor } => {
                if let Some(e) = self
                    .entities
                    .get_mut(entity)
                    .filter(|e| id > e.transform_by)
                {
                    e.transform.scale *= *factor;
                }
            }
            Command::SetName { entity, name } => {
                if let Some(e) = self.entities.get_mut(entity) {
                    e.name.set(name.clone(), id);
                }
            }
            Command::SetColor { entity, rgba } => {
                if let Some(e) = self.entities.get_mut(entity) {
                    e.color.set(*rgba, id);
                }
            }
            Command::SetMaterial { entity, material } => {
                if let Some(e) = self.entities.get_mut(entity) {
                    e.material.set(*material, id);
                }
            }
            Command::ToolActivate { tool, target } => {
                self.set_tool(
                    author,
                    *tool,
                    ToolState {
                        active: true,
                        target: *target,
                    },
                    id,
                );
            }
            Command::ToolDeactivate { tool } => {
                self.set_tool(
                    author,
                    *tool,
                    ToolState {
                        active: false,
                        target: None,
                    },
                    id,
                );
            }
            Command::EdgeExtrude { .. } | Command::FaceSubdivide { .. } => {
                return Err(EditError::Topology(
                    "index-based edge extrude and face subdivide are retired: use ExtrudeEdges \
                     and SubdivideFaces, which name elements by id"
                        .into(),
                ));
            }
            Command::SetSessionName { name } => match &mut self.session_name {
                Some(n) => n.set(name.clone(), id),
                None => self.session_name = Some(Lww::new(name.clone(), id)),
            },
            // Membership lives in the session's key ring and the roster, not in the scene.
            Command::SetRole { .. } | Command::Kick { .. } => {}
            Command::SetDisplayName { name } => {
                let state = self.authors.entry(author).or_default();
                match &mut state.name {
                    Some(n) => n.set(name.clone(), id),
                    None => state.name = Some(Lww::new(name.clone(), id)),
                }
            }
            Command::SetTransform { entity, transform } => {
                if let Some(e) = self.entities.get_mut(entity)
                    && id > e.transform_by
                {
                    e.transform = *transform;
                    e.transform_by = id;
                }
            }
            Command::VertexCreate { entity, position } => {
                let p = *position;
                return self.mesh_edit(id, *entity, limits, EditMesh::triangle_count, |m, ids| {
                    m.create_vertex(ids, p);
                    Ok(())
                });
            }
            Command::MoveVertices { entity, moves } => {
                // In place: the move checks every vertex before it changes one, and positions
                // were checked by the value guards; no copy of a large mesh per drag.
                let e = self
                    .entities
                    .get_mut(entity)
                    .ok_or_else(|| EditError::Missing(alloc::format!("{entity}")))?;
                match &mut e.geometry {
                    Geometry::Mesh(m) => m.move_vertices(id, moves)?,
                    Geometry::Primitive(p) => {
                        // Materialize only once the move is known to succeed: a refused move
                        // must leave even the geometry's form unchanged.
                        let mut m = EditMesh::from_primitive(*p, e.spawned_by);
                        m.move_vertices(id, moves)?;
                        e.geometry = Geometry::Mesh(m);
                    }
                }
            }
            Command::CreateFace { entity, vertices } => {
                let n = vertices.len() as u64;
                return self.mesh_edit(
                    id,
                    *entity,
                    limits,
                    |m| m.triangle_count().saturating_add(n.saturating_sub(2)),
                    |m, ids| m.create_face(ids, vertices).map(|_| ()),
                );
            }
            Command::DeleteElements {
                entity,
                vertices,
                edges,
                faces,
            } => {
                return self.mesh_edit(id, *entity, limits, EditMesh::triangle_count, |m, ids| {
                    m.delete(ids, vertices, edges, faces)
                });
            }
            Command::ExtrudeFaces {
                entity,
                faces,
                direction,
                snap_m,
            } => {
                let (offset, distance) = match direction {
                    crate::command::ExtrudeDirection::Normal { distance_m } => (None, *distance_m),
                    crate::command::ExtrudeDirection::Vector { offset } => (Some(*offset), 0.0),
                };
                return self.mesh_edit(
                    id,
                    *entity,
                    limits,
                    |m| {
                        let corners: u64 = face_sizes(m, faces).sum();
                        m.triangle_count().saturating_add(corners.saturating_mul(2))
                    },
                    |m, ids| m.extrude_faces(ids, id, faces, offset, distance, *snap_m),
                );
            }
            Command::ExtrudeEdges {
                entity,
                edges,
                offset,
                snap_m,
            } => {
                let n = edges.len() as u64;
                return self.mesh_edit(
                    id,
                    *entity,
                    limits,
                    |m| m.triangle_count().saturating_add(n.saturating_mul(2)),
                    |m, ids| m.extrude_edges(ids, edges, *offset, *snap_m),
                );
            }
            Command::SubdivideFaces {
                entity,
                faces,
                cuts,
            } => {
                let c = u64::from(*cuts);
                return self.mesh_edit(
                    id,
                    *entity,
                    limits,
                    |m| {
                        let grown: u64 = face_sizes(m, faces)
                            .map(|n| {
                                let inside = match n {
                                    3 => (c + 1) * (c + 1),
                                    4 => 2 * (c + 1) * (c + 1),
                                    _ => n * (c + 1),
                                };
                                // Neighbours gain `c` corners per shared edge.
                                inside + n * c
                            })
                            .sum();
                        m.triangle_count().saturating_add(grown)
                    },
                    |m, ids| m.subdivide(ids, faces, *cuts),
                );
            }
            Command::Smooth {
                entity,
                faces,
                levels,
            } => {
                let levels_n = u32::from(*levels);
                return self.mesh_edit(
                    id,
                    *entity,
                    limits,
                    |m| {
                        let sizes: Vec<u64> = if faces.is_empty() {
                            m.faces().values().map(|c| c.len() as u64).collect()
                        } else {
                            face_sizes(m, faces).collect()
                        };
                        let corners: u64 = sizes.iter().sum();
                        let replaced: u64 = sizes.iter().map(|n| n.saturating_sub(2)).sum();
                        // Level 1 makes one quad per corner, each further level four per quad;
                        // two triangles per quad, plus what a region's neighbours gain: a corner
                        // per region border edge and level, and each level doubles the border
                        // (at most `corners` edges at first: 1 + 2 + 4 … = 2^levels − 1).
                        let quads = corners.saturating_mul(4u64.saturating_pow(levels_n - 1));
                        let rim = if faces.is_empty() {
                            0
                        } else {
                            corners.saturating_mul(2u64.saturating_pow(levels_n) - 1)
                        };
                        m.triangle_count()
                            .saturating_sub(replaced)
                            .saturating_add(quads.saturating_mul(2))
                            .saturating_add(rim)
                    },
                    |m, ids| m.catmull_clark(ids, id, faces, *levels),
                );
            }
            Command::Weld {
                entity,
                groups,
                at_center,
            } => {
                return self.mesh_edit(id, *entity, limits, EditMesh::triangle_count, |m, ids| {
                    m.weld(ids, id, groups, *at_center)
                });
            }
            Command::Mirror { entity, axis, weld } => {
                return self.mesh_edit(
                    id,
                    *entity,
                    limits,
                    |m| m.triangle_count().saturating_mul(2),
                    |m, ids| m.mirror(ids, id, *axis, *weld),
                );
            }
            Command::Step { .. } => {}
            Command::Undo { .. } | Command::Redo { .. } => {
                return Err(EditError::Undo(crate::history::UndoRefusal {
                    reason: crate::history::UndoReason::Unavailable,
                    by: None,
                    message: "this scene keeps no undo history".into(),
                }));
            }
            Command::Import {
                asset,
                first: _,
                count,
            } => {
                let found = self
                    .assets
                    .get(asset)
                    .cloned()
                    .ok_or_else(|| EditError::Missing(alloc::format!("asset {asset}")))?;
                let ids = command.import_ids();
                if found.entities.len() != ids.len() || ids.len() != *count as usize {
                    return Err(EditError::Missing(alloc::format!(
                        "asset {asset} holds {} entities, not {count}",
                        found.entities.len()
                    )));
                }
                if let Some(taken) = ids.iter().find(|e| self.entities.contains_key(e)) {
                    return Err(EditError::Topology(alloc::format!(
                        "{taken} already exists"
                    )));
                }
                let mut total = 0u64;
                for (k, tris) in found.triangles().enumerate() {
                    if tris > limits.mesh_triangles {
                        return Err(EditError::Limit(alloc::format!(
                            "entity {k} of asset {asset} has {tris} triangles; a mesh may have {}",
                            limits.mesh_triangles
                        )));
                    }
                    total = total.saturating_add(tris);
                }
                if self.total_triangles().saturating_add(total) > limits.session_triangles {
                    return Err(EditError::Limit(alloc::format!(
                        "importing {total} triangles would exceed the session's limit of {}",
                        limits.session_triangles
                    )));
                }
                let mut element_ids = IdSource::new(id);
                let mut made = Vec::with_capacity(ids.len());
                for (e, a) in ids.iter().zip(&found.entities) {
                    let mesh = EditMesh::from_polygons(&a.positions, &a.faces, &mut element_ids)?;
                    made.push((
                        *e,
                        Entity {
                            name: Lww::new(a.name.clone(), id),
                            transform: a.transform,
                            transform_by: id,
                            color: Lww::new(a.color, id),
                            material: Lww::new(a.material, id),
                            geometry: Geometry::Mesh(mesh),
                            spawned_by: id,
                        },
                    ));
                }
                // All or nothing: the entities go in once every mesh was built.
                self.entities.extend(made);
            }
            Command::Duplicate {
                entity,
                copy,
                offset,
            } => {
                let total = self.total_triangles();
                let source = self
                    .entities
                    .get(entity)
                    .ok_or_else(|| EditError::Missing(alloc::format!("{entity}")))?;
                if self.entities.contains_key(copy) {
                    return Err(EditError::Topology(alloc::format!("{copy} already exists")));
                }
                let tris = source.geometry.triangle_count();
                if tris > limits.mesh_triangles
                    || total.saturating_add(tris) > limits.session_triangles
                {
                    return Err(EditError::Limit(alloc::format!(
                        "a copy of {entity} ({tris} triangles) would exceed the session's limit \
                         of {}",
                        limits.session_triangles
                    )));
                }
                let geometry = match &source.geometry {
                    // The copy's spawn is this command, so its element ids are new.
                    Geometry::Primitive(p) => Geometry::Primitive(*p),
                    Geometry::Mesh(m) => Geometry::Mesh(m.duplicate(&mut IdSource::new(id))?),
                };
                let mut transform = source.transform;
                transform.translation += *offset;
                let copied = Entity {
                    name: Lww::new(source.name.value.clone(), id),
                    transform,
                    transform_by: id,
                    color: Lww::new(source.color.value, id),
                    material: Lww::new(source.material.value, id),
                    geometry,
                    spawned_by: id,
                };
                self.entities.insert(*copy, copied);
            }
        }
        Ok(())
    }

    /// Whether a replica can apply `command` itself: not an undo or redo (replicas keep no
    /// undo history) nor an import (nor the assets it reads). What one of those did reaches
    /// replicas as the new state of what it changed.
    #[must_use]
    pub const fn replica_applies(command: &Command) -> bool {
        !matches!(
            command,
            Command::Undo { .. } | Command::Redo { .. } | Command::Import { .. }
        )
    }

    /// What `command` by `author` touches.
    #[must_use]
    pub const fn touched(author: AuthorId, command: &Command) -> Touched {
        match command {
            Command::Select { .. }
            | Command::ToolActivate { .. }
            | Command::ToolDeactivate { .. }
            | Command::Step { .. }
            | Command::Undo { .. }
            | Command::Redo { .. }
            | Command::SetDisplayName { .. } => Touched::Author(author),
            Command::SetRole { author: member, .. } | Command::Kick { author: member, .. } => {
                Touched::Author(*member)
            }
            Command::SetSessionName { .. } => Touched::Session,
            Command::Spawn { entity, .. }
            | Command::Despawn { entity }
            | Command::Translate { entity, .. }
            | Command::Rotate { entity, .. }
            | Command::Scale { entity, .. }
            | Command::SetName { entity, .. }
            | Command::SetColor { entity, .. }
            | Command::SetMaterial { entity, .. }
            | Command::VertexCreate { entity, .. }
            | Command::EdgeExtrude { entity, .. }
            | Command::FaceSubdivide { entity, .. }
            | Command::MoveVertices { entity, .. }
            | Command::CreateFace { entity, .. }
            | Command::DeleteElements { entity, .. }
            | Command::ExtrudeFaces { entity, .. }
            | Command::ExtrudeEdges { entity, .. }
            | Command::SubdivideFaces { entity, .. }
            | Command::Smooth { entity, .. }
            | Command::Weld { entity, .. }
            | Command::Mirror { entity, .. }
            | Command::SetTransform { entity, .. } => Touched::Entity(*entity),
            Command::Duplicate { copy, .. } => Touched::Entity(*copy),
            // Its first entity; every one is in [`Scene::changed_by`].
            Command::Import { first, .. } => Touched::Entity(*first),
        }
    }

    /// A lower bound of the encoded size of [`Scene::delta`] for `touched`, computed without
    /// building it: an edited mesh carries at least its vertex positions. Lets the server skip
    /// building a delta that cannot beat the entries (a vertex drag on a big mesh).
    #[must_use]
    pub fn delta_floor_bytes(&self, touched: &alloc::collections::BTreeSet<Touched>) -> usize {
        touched
            .iter()
            .filter_map(|t| match t {
                Touched::Entity(e) => self.entities.get(e),
                Touched::Author(_) | Touched::Session => None,
            })
            .map(|e| match &e.geometry {
                Geometry::Mesh(m) => m.vertices().len().saturating_mul(12),
                Geometry::Primitive(_) => 0,
            })
            .fold(0, usize::saturating_add)
    }

    /// The delta from `from_position` to now, given everything touched since.
    #[must_use]
    pub fn delta(
        &self,
        from_position: u64,
        touched: &alloc::collections::BTreeSet<Touched>,
    ) -> SceneDelta {
        let mut entities = Vec::new();
        let mut authors = Vec::new();
        for t in touched {
            match t {
                Touched::Entity(e) => entities.push((*e, self.entities.get(e).cloned())),
                Touched::Author(a) => {
                    authors.push((*a, self.authors.get(a).cloned().unwrap_or_default()))
                }
                Touched::Session => {}
            }
        }
        SceneDelta {
            from_position,
            to_position: self.position,
            lamport: self.lamport,
            entities,
            authors,
            session_name: self.session_name.clone(),
        }
    }

    /// Applies a delta made from this exact position.
    ///
    /// # Errors
    /// When the delta starts elsewhere (the replica missed or repeated something).
    pub fn apply_delta(&mut self, delta: &SceneDelta) -> Result<(), String> {
        self.forget_triangles();
        if delta.from_position != self.position || delta.to_position < delta.from_position {
            return Err(alloc::format!(
                "delta {}→{} does not start at {}",
                delta.from_position,
                delta.to_position,
                self.position
            ));
        }
        for (id, state) in &delta.entities {
            match state {
                Some(e) => {
                    // A mesh from the wire was checked when it decoded (`EditMesh::from_parts`).
                    self.entities.insert(*id, e.clone());
                }
                None => {
                    self.entities.remove(id);
                }
            }
        }
        for (id, state) in &delta.authors {
            self.authors.insert(*id, state.clone());
        }
        self.session_name.clone_from(&delta.session_name);
        self.position = delta.to_position;
        self.lamport = delta.lamport;
        Ok(())
    }

    fn set_tool(&mut self, author: AuthorId, tool: ToolId, state: ToolState, id: CommandId) {
        let tools = &mut self.authors.entry(author).or_default().tools;
        match tools.get_mut(&tool) {
            Some(t) => t.set(state, id),
            None => {
                tools.insert(tool, Lww::new(state, id));
            }
        }
    }

    /// The canonical encoding (postcard; maps in key order).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self)
            .expect("postcard into a Vec fails only on serde features the scene does not use")
    }

    /// Decodes [`Scene::encode`]'s output. Every edited mesh is checked as it decodes
    /// ([`EditMesh::from_parts`] rebuilds its half-edges and refuses any broken invariant).
    ///
    /// # Errors
    /// A sentence naming the problem.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        match postcard::take_from_bytes(bytes) {
            Ok((s, [])) => Ok(s),
            Ok(_) => Err("trailing bytes after the scene".into()),
            Err(e) => Err(alloc::format!("scene does not decode: {e}")),
        }
    }

    /// The display name `author` chose, if any (not empty).
    #[must_use]
    pub fn display_name(&self, author: AuthorId) -> Option<&str> {
        self.authors
            .get(&author)
            .and_then(|a| a.name.as_ref())
            .map(|n| n.value.as_str())
            .filter(|n| !n.is_empty())
    }

    /// SHA-256 of the canonical encoding: equal on the server and every converged replica.
    #[must_use]
    pub fn state_hash(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }

    /// The part of the scene a partial replica holds ([`crate::interest::Hold`]): the entities
    /// in `held` (those that exist), every author, the session name, and `position` / `lamport`
    /// as the replica stands. Its encoding is [`Scene::encode_held`]'s.
    #[must_use]
    pub fn held_copy(
        &self,
        held: &alloc::collections::BTreeSet<EntityId>,
        position: u64,
        lamport: u64,
    ) -> Self {
        Self {
            entities: held
                .iter()
                .filter_map(|id| self.entities.get(id).map(|e| (*id, e.clone())))
                .collect(),
            authors: self.authors.clone(),
            session_name: self.session_name.clone(),
            position,
            lamport,
            history: None,
            assets: BTreeMap::new(),
            triangles: None,
        }
    }

    /// The canonical encoding of [`Scene::held_copy`], written without copying an entity: what
    /// a partial replica's [`Scene::encode`] gives when it is in step.
    #[must_use]
    pub fn encode_held(
        &self,
        held: &alloc::collections::BTreeSet<EntityId>,
        position: u64,
        lamport: u64,
    ) -> Vec<u8> {
        let view = HeldView {
            entities: HeldEntities {
                all: &self.entities,
                held,
            },
            authors: &self.authors,
            session_name: &self.session_name,
            position,
            lamport,
        };
        postcard::to_allocvec(&view)
            .expect("postcard into a Vec fails only on serde features the scene does not use")
    }

    /// SHA-256 of [`Scene::encode_held`]: the state hash of a partial replica in step.
    #[must_use]
    pub fn held_state_hash(
        &self,
        held: &alloc::collections::BTreeSet<EntityId>,
        position: u64,
        lamport: u64,
    ) -> [u8; 32] {
        Sha256::digest(self.encode_held(held, position, lamport)).into()
    }

    /// Render data of every entity, in id order.
    #[must_use]
    pub fn render(&self) -> Vec<RenderEntity> {
        self.entities
            .iter()
            .map(|(id, e)| RenderEntity {
                id: *id,
                world_from_local: e.scene_from_entity().to_cols_array(),
                color: e.color.value.to_array(),
                mesh: e.geometry.render(),
            })
            .collect()
    }
}

/// [`Scene`]'s serialized fields in their order, with only the held entities: the same bytes as
/// the held copy's encoding, built without cloning a mesh.
#[derive(Serialize)]
struct HeldView<'a> {
    entities: HeldEntities<'a>,
    authors: &'a BTreeMap<AuthorId, AuthorState>,
    session_name: &'a Option<Lww<String>>,
    position: u64,
    lamport: u64,
}

struct HeldEntities<'a> {
    all: &'a BTreeMap<EntityId, Entity>,
    held: &'a alloc::collections::BTreeSet<EntityId>,
}

impl Serialize for HeldEntities<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        // A map's length comes first: count what exists before writing it (in id order, as the
        // BTreeMap of a held copy is).
        let present = || {
            self.held
                .iter()
                .filter_map(|id| self.all.get(id).map(|e| (id, e)))
        };
        let mut map = serializer.serialize_map(Some(present().count()))?;
        for (id, e) in present() {
            map.serialize_entry(id, e)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use glam::{Quat, Vec3};

    use super::*;

    const A: AuthorId = AuthorId(1);
    const B: AuthorId = AuthorId(2);

    fn id(lamport: u64, author: AuthorId) -> CommandId {
        CommandId { lamport, author }
    }

    fn e() -> EntityId {
        EntityId::new(A, 1)
    }

    fn spawn() -> Command {
        Command::Spawn {
            entity: e(),
            primitive: Primitive::Cube,
            transform: Transform::IDENTITY,
        }
    }

    #[test]
    fn the_held_part_encodes_as_its_copy_and_all_of_it_as_the_scene() {
        let mut s = Scene::new();
        for i in 0..5u32 {
            let entity = EntityId::new(A, i);
            let transform = Transform {
                translation: Vec3::new(i as f32, 0.0, 0.0),
                ..Transform::IDENTITY
            };
            s.apply(
                id(u64::from(i) + 1, A),
                A,
                &Command::Spawn {
                    entity,
                    primitive: Primitive::Sphere,
                    transform,
                },
            );
        }
        s.apply(
            id(9, B),
            B,
            &Command::Select {
                entities: alloc::vec![EntityId::new(A, 4)],
            },
        );
        let all: alloc::collections::BTreeSet<EntityId> = s.entities.keys().copied().collect();
        assert_eq!(s.encode_held(&all, s.position, s.lamport), s.encode());
        assert_eq!(
            s.held_state_hash(&all, s.position, s.lamport),
            s.state_hash()
        );
        // Some held, one of them gone: only what exists counts.
        let held: alloc::collections::BTreeSet<EntityId> = [
            EntityId::new(A, 1),
            EntityId::new(A, 3),
            EntityId::new(A, 99),
        ]
        .into();
        let copy = s.held_copy(&held, 40, 12);
        assert_eq!(copy.entities.len(), 2);
        assert_eq!(copy.authors, s.authors, "every author's state is held");
        assert_eq!(copy.encode(), s.encode_held(&held, 40, 12));
        assert_eq!(Scene::decode(&copy.encode()).unwrap(), copy);
        assert_ne!(
            s.held_state_hash(&held, 40, 12),
            s.held_state_hash(&held, 41, 12)
        );
    }

    #[test]
    fn an_import_adds_every_entity_of_its_asset_as_one_undo_step() {
        use crate::command::AssetId;
        let asset = AssetId([7; 32]);
        let import = Command::Import {
            asset,
            first: EntityId::new(A, 10),
            count: 2,
        };
        let mut s = Scene::new().with_history();
        let refused = s.try_apply(id(1, A), A, &import, &Limits::DEFAULT);
        assert!(matches!(refused, Err(EditError::Missing(_))), "{refused:?}");
        assert!(s.entities.is_empty(), "an unknown asset changes nothing");
        s.provide_asset(
            asset,
            alloc::sync::Arc::new(crate::asset::ImportAsset::sample()),
        );
        let wrong_count = Command::Import {
            asset,
            first: EntityId::new(A, 10),
            count: 3,
        };
        assert!(
            s.try_apply(id(2, A), A, &wrong_count, &Limits::DEFAULT)
                .is_err()
        );
        s.try_apply(id(3, A), A, &import, &Limits::DEFAULT).unwrap();
        let ids = import.import_ids();
        assert_eq!(ids, alloc::vec![EntityId::new(A, 10), EntityId::new(A, 11)]);
        let pyramid = s.entities[&ids[1]].clone();
        assert_eq!(pyramid.name.value, "pyramid");
        assert_eq!(pyramid.transform.translation, Vec3::new(2.0, 0.0, 0.0));
        let mesh = pyramid.geometry.edit_mesh(pyramid.spawned_by);
        assert_eq!((mesh.vertices().len(), mesh.faces().len()), (5, 5));
        assert!(
            mesh.faces().values().any(|f| f.len() == 4),
            "the quad stays a quad"
        );
        mesh.check().unwrap();
        // Its ids are taken now: the same import again is refused, changing nothing.
        let before = s.state_hash();
        assert!(s.try_apply(id(4, A), A, &import, &Limits::DEFAULT).is_err());
        assert_eq!(s.state_hash(), before);
        // A replica given the scene as a delta matches without ever seeing the asset.
        let mut replica = Scene::new();
        let delta = s.delta(0, &ids.iter().map(|e| Touched::Entity(*e)).collect());
        replica.apply_delta(&delta).unwrap();
        assert_eq!(replica.entities, s.entities);
        // One undo takes both away; a redo brings both back, ids and all.
        s.try_apply(id(5, A), A, &Command::Undo { step: None }, &Limits::DEFAULT)
            .unwrap();
        assert!(s.entities.is_empty());
        s.try_apply(id(6, A), A, &Command::Redo { step: None }, &Limits::DEFAULT)
            .unwrap();
        assert_eq!(s.entities.len(), 2);
        assert_eq!(
            s.entities[&ids[1]].geometry.edit_mesh(pyramid.spawned_by),
            mesh
        );
    }

    #[test]
    fn commands_change_the_scene() {
        let mut s = Scene::new();
        s.apply(id(1, A), A, &spawn());
        s.apply(
            id(2, A),
            A,
            &Command::Translate {
                entity: e(),
                delta: Vec3::X,
            },
        );
        s.apply(
            id(3, A),
            A,
            &Command::Scale {
                entity: e(),
                factor: Vec3::splat(2.0),
            },
        );
        s.apply(
            id(4, A),
            A,
            &Command::Rotate {
                entity: e(),
                delta: Quat::from_rotation_y(1.0),
            },
        );
        s.apply(
            id(5, A),
            A,
            &Command::SetName {
                entity: e(),
                name: "box".into(),
            },
        );
        s.apply(
            id(6, B),
            B,
            &Command::Select {
                entities: vec![e()],
            },
        );
        s.apply(
            id(7, B),
            B,
            &Command::ToolActivate {
                tool: ToolId(3),
                target: Some(e()),
            },
        );
        let ent = &s.entities[&e()];
        assert_eq!(ent.transform.translation, Vec3::X);
        assert_eq!(ent.transform.scale, Vec3::splat(2.0));
        assert_eq!(ent.name.value, "box");
        assert_eq!(s.authors[&B].selection.as_ref().unwrap().value, vec![e()]);
        assert!(s.authors[&B].tools[&ToolId(3)].value.active);
        assert_eq!(s.position, 7);
        s.apply(id(8, A), A, &Command::Despawn { entity: e() });
        assert!(s.entities.is_empty());
        s.apply(
            id(9, A),
            A,
            &Command::Translate {
                entity: e(),
                delta: Vec3::X,
            },
        );
        assert!(
            s.entities.is_empty(),
            "edits of a missing entity do nothing"
        );
    }

    #[test]
    fn absolute_values_follow_total_order_not_arrival_order() {
        let mut s1 = Scene::new();
        let mut s2 = Scene::new();
        for s in [&mut s1, &mut s2] {
            s.apply(id(1, A), A, &spawn());
        }
        let late = Command::SetName {
            entity: e(),
            name: "late".into(),
        };
        let early = Command::SetName {
            entity: e(),
            name: "early".into(),
        };
        s1.apply(id(5, B), B, &late);
        s1.apply(id(5, A), A, &early);
        s2.apply(id(5, A), A, &early);
        s2.apply(id(5, B), B, &late);
        assert_eq!(s1.entities[&e()].name.value, "late");
        assert_eq!(s1.encode(), s2.encode());
        assert_eq!(s1.state_hash(), s2.state_hash());
    }

    #[test]
    fn scenes_round_trip_and_render() {
        let mut s = Scene::new();
        for (i, p) in [
            Primitive::Cube,
            Primitive::Pyramid,
            Primitive::Plane,
            Primitive::Cylinder,
            Primitive::Sphere,
        ]
        .into_iter()
        .enumerate()
        {
            let entity = EntityId::new(A, u32::try_from(i).unwrap());
            let transform = Transform {
                translation: Vec3::X * i as f32,
                ..Transform::IDENTITY
            };
            s.apply(
                id(i as u64 + 1, A),
                A,
                &Command::Spawn {
                    entity,
                    primitive: p,
                    transform,
                },
            );
        }
        let back = Scene::decode(&s.encode()).unwrap();
        assert_eq!(back, s);
        let r = s.render();
        assert_eq!(r.len(), 5);
        assert!(r.iter().all(|e| !e.mesh.indices.is_empty()));
        assert_eq!(
            r[2].world_from_local[12], 2.0,
            "translation in the last column"
        );
        assert!(Scene::decode(&[1, 2, 3]).is_err());
    }

    #[test]
    fn transform_commands_reach_the_target_through_apply() {
        let author = AuthorId(3);
        let e = EntityId::new(author, 1);
        let from = Transform {
            translation: Vec3::new(1.0, 0.0, 0.0),
            rotation: Quat::from_rotation_x(0.3),
            scale: Vec3::new(1.0, 2.0, 1.0),
        };
        let to = Transform {
            translation: Vec3::new(1.5, 0.0, -2.0),
            rotation: Quat::from_rotation_y(0.5) * Quat::from_rotation_x(0.3),
            scale: Vec3::new(2.0, 2.0, 0.5),
        };
        let mut scene = Scene::new();
        let mut lamport = 1;
        let mut apply = |scene: &mut Scene, c: &Command| {
            scene.apply(CommandId { lamport, author }, author, c);
            lamport += 1;
        };
        apply(
            &mut scene,
            &Command::Spawn {
                entity: e,
                primitive: Primitive::Cube,
                transform: from,
            },
        );
        let cmds = transform_commands(e, &from, &to);
        assert_eq!(cmds.len(), 3);
        for c in &cmds {
            apply(&mut scene, c);
        }
        let got = scene.entities[&e].transform;
        assert!((got.translation - to.translation).length() < 1e-5);
        assert!(got.rotation.angle_between(to.rotation) < 1e-4);
        assert!((got.scale - to.scale).length() < 1e-5);
        assert!(
            transform_commands(e, &from, &from).is_empty(),
            "no change, no command"
        );
    }
}
