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
//! - A command on a missing entity does nothing; a spawn of an existing id does nothing.
//! - Mesh edits (vertex create, edge extrude, face subdivide) are accepted and logged but change
//!   nothing yet: their semantics arrive with the mesh-editing work.
//!
//! Meshes stay in their primitive form until an edit needs the half-edge structure, so a scene
//! of ten thousand primitives costs a few hundred bytes per entity.

#![allow(
    clippy::arithmetic_side_effects,
    reason = "glam vector arithmetic on validated payloads (finite, bounded by Command::validate)"
)]

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use glam::{Mat4, Vec3, Vec4};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::command::{Command, Material, Primitive, Transform};
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
    /// An unedited primitive (its half-edge mesh is [`Mesh::primitive`]).
    Primitive(Primitive),
    /// An edited mesh.
    Mesh(Mesh),
}

impl Geometry {
    /// The half-edge mesh.
    #[must_use]
    pub fn mesh(&self) -> Mesh {
        match self {
            Self::Primitive(p) => Mesh::primitive(*p),
            Self::Mesh(m) => m.clone(),
        }
    }
}

/// One entity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    /// Display name.
    pub name: Lww<String>,
    /// Scene-from-entity transform.
    pub transform: Transform,
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
}

/// The whole replicated state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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

    /// Applies one accepted command. Call in the server's acceptance order.
    pub fn apply(&mut self, id: CommandId, author: AuthorId, command: &Command) {
        self.position = self.position.saturating_add(1);
        self.lamport = self.lamport.max(id.lamport);
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
                self.entities.entry(*entity).or_insert_with(|| Entity {
                    name: Lww::new(String::new(), id),
                    transform: *transform,
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
                if let Some(e) = self.entities.get_mut(entity) {
                    e.transform.translation += *delta;
                }
            }
            Command::Rotate { entity, delta } => {
                if let Some(e) = self.entities.get_mut(entity) {
                    e.transform.rotation = (*delta * e.transform.rotation).normalize();
                }
            }
            Command::Scale { entity, factor } => {
                if let Some(e) = self.entities.get_mut(entity) {
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
            Command::VertexCreate { .. }
            | Command::EdgeExtrude { .. }
            | Command::FaceSubdivide { .. } => {}
            Command::SetSessionName { name } => match &mut self.session_name {
                Some(n) => n.set(name.clone(), id),
                None => self.session_name = Some(Lww::new(name.clone(), id)),
            },
        }
    }

    /// What `command` by `author` touches.
    #[must_use]
    pub const fn touched(author: AuthorId, command: &Command) -> Touched {
        match command {
            Command::Select { .. }
            | Command::ToolActivate { .. }
            | Command::ToolDeactivate { .. } => Touched::Author(author),
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
            | Command::FaceSubdivide { entity, .. } => Touched::Entity(*entity),
        }
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
                    if let Geometry::Mesh(m) = &e.geometry {
                        m.check().map_err(|err| alloc::format!("{id}: {err}"))?;
                    }
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

    /// Decodes [`Scene::encode`]'s output, checking every edited mesh's invariants.
    ///
    /// # Errors
    /// A sentence naming the problem.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let scene: Self = match postcard::take_from_bytes(bytes) {
            Ok((s, [])) => s,
            Ok(_) => return Err("trailing bytes after the scene".into()),
            Err(e) => return Err(alloc::format!("scene does not decode: {e}")),
        };
        for (id, e) in &scene.entities {
            if let Geometry::Mesh(m) = &e.geometry {
                m.check().map_err(|err| alloc::format!("{id}: {err}"))?;
            }
        }
        Ok(scene)
    }

    /// SHA-256 of the canonical encoding: equal on the server and every converged replica.
    #[must_use]
    pub fn state_hash(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
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
                mesh: e.geometry.mesh().triangulate(),
            })
            .collect()
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
