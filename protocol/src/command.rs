//! The editor vocabulary: every intent a client can submit, with typed payloads, and the value
//! guards that refuse payloads no honest client produces (non-finite numbers, absurd
//! coordinates, oversized strings).
//!
//! Variants are append-only within a protocol version: their index is their wire tag.

use glam::{Quat, Vec3, Vec4};
use serde::{Deserialize, Serialize};

use crate::editmesh::{Axis, EdgeKey, FaceKey, VertexKey};
use crate::ids::{AuthorId, CommandId, EntityId, ToolId};

/// Largest coordinate magnitude accepted anywhere in a payload, in metres. Beyond this, f32
/// precision is coarser than a millimetre and the value is a bug or an attack.
pub const MAX_COORDINATE_M: f32 = 1.0e5;
/// Longest entity or session name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest display name of a member, in bytes of UTF-8.
pub const MAX_DISPLAY_NAME_BYTES: usize = 64;
/// A display name as typed, made one [`Command::SetDisplayName`] accepts: control characters
/// dropped, trimmed, cut to [`MAX_DISPLAY_NAME_BYTES`] on a character boundary. The rule both
/// clients use (the browser through wasm).
#[must_use]
pub fn clean_display_name(typed: &str) -> String {
    let mut name = String::new();
    for c in typed.trim().chars().filter(|c| !c.is_control()) {
        if name.len().saturating_add(c.len_utf8()) > MAX_DISPLAY_NAME_BYTES {
            break;
        }
        name.push(c);
    }
    name.trim().into()
}

/// Most entities one selection command may name.
pub const MAX_SELECTION: usize = 1024;
/// Most cuts one face subdivision may ask for.
pub const MAX_SUBDIVISION_CUTS: u8 = 8;
/// Most elements one mesh command may name (a 1 MiB frame holds about 58k vertex moves).
pub const MAX_ELEMENTS: usize = 16_384;
/// Most corners of one created face.
pub const MAX_FACE_CORNERS: usize = 1024;
/// Most Catmull–Clark levels in one command.
pub const MAX_SMOOTH_LEVELS: u8 = 3;
/// Largest grid step for snapping, in metres.
pub const MAX_SNAP_M: f32 = 1.0e3;
/// Most entries one undo step may announce ([`Command::Step`]).
pub const MAX_STEP_ENTRIES: u16 = 4096;
/// Longest step label, in bytes of UTF-8.
pub const MAX_LABEL_BYTES: usize = 64;
/// Scale factors must lie within `[1/MAX_SCALE_FACTOR, MAX_SCALE_FACTOR]` per axis.
pub const MAX_SCALE_FACTOR: f32 = 1.0e3;
/// Most entities one [`Command::Import`] makes.
pub const MAX_IMPORT_ENTITIES: u32 = 10_000;

/// A primitive mesh a spawn starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Primitive {
    /// Unit cube centred on the origin.
    Cube,
    /// Square-based pyramid.
    Pyramid,
    /// Unit plane in XZ.
    Plane,
    /// Cylinder along Y.
    Cylinder,
    /// UV sphere.
    Sphere,
}

/// Translation, rotation and scale of an entity relative to the scene root
/// (`scene_from_entity`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transform {
    /// Translation in metres.
    pub translation: Vec3,
    /// Rotation, unit quaternion.
    pub rotation: Quat,
    /// Per-axis scale.
    pub scale: Vec3,
}

impl Transform {
    /// No translation, no rotation, unit scale.
    pub const IDENTITY: Self = Self {
        translation: Vec3::ZERO,
        rotation: Quat::IDENTITY,
        scale: Vec3::ONE,
    };
}

/// Surface parameters beyond the base color (PBR metallic-roughness, as glTF).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Material {
    /// 0 = dielectric, 1 = metal.
    pub metallic: f32,
    /// 0 = mirror, 1 = fully rough.
    pub roughness: f32,
}

/// A half-edge of an entity's mesh, by index (meaning arrives with the mesh model).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HalfEdgeIndex(pub u32);

/// A face of an entity's mesh, by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FaceIndex(pub u32);

/// One intent submitted by a client. Continuous manipulations are previews on the presence lane;
/// only their commit becomes a `Command`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Replace the author's selection highlight with these entities (empty clears it).
    Select {
        /// Selected entities, in the order the user picked them.
        entities: Vec<EntityId>,
    },
    /// Create an entity from a primitive. `entity` must be in the author's namespace.
    Spawn {
        /// New entity id.
        entity: EntityId,
        /// Starting mesh.
        primitive: Primitive,
        /// Starting transform.
        transform: Transform,
    },
    /// Delete an entity.
    Despawn {
        /// Entity to delete.
        entity: EntityId,
    },
    /// Move an entity by a delta, in scene space (metres).
    Translate {
        /// Target entity.
        entity: EntityId,
        /// Translation to add.
        delta: Vec3,
    },
    /// Rotate an entity by a delta rotation (applied after the current one).
    Rotate {
        /// Target entity.
        entity: EntityId,
        /// Unit quaternion to compose.
        delta: Quat,
    },
    /// Multiply an entity's scale per axis.
    Scale {
        /// Target entity.
        entity: EntityId,
        /// Per-axis factor, each positive.
        factor: Vec3,
    },
    /// Rename an entity.
    SetName {
        /// Target entity.
        entity: EntityId,
        /// New name, at most [`MAX_NAME_BYTES`].
        name: String,
    },
    /// Set an entity's base color (linear RGBA, each in `[0, 1]`).
    SetColor {
        /// Target entity.
        entity: EntityId,
        /// Linear RGBA.
        rgba: Vec4,
    },
    /// Set an entity's material parameters.
    SetMaterial {
        /// Target entity.
        entity: EntityId,
        /// New parameters.
        material: Material,
    },
    /// The author picks up a tool, optionally aimed at an entity.
    ToolActivate {
        /// Tool.
        tool: ToolId,
        /// Entity the tool acts on, if any.
        target: Option<EntityId>,
    },
    /// The author puts a tool down.
    ToolDeactivate {
        /// Tool.
        tool: ToolId,
    },
    /// Add a free vertex to an entity's mesh, in entity space.
    VertexCreate {
        /// Target entity.
        entity: EntityId,
        /// Position in entity space (metres).
        position: Vec3,
    },
    /// Extrude a boundary edge by an offset, creating a new face.
    EdgeExtrude {
        /// Target entity.
        entity: EntityId,
        /// The half-edge to extrude.
        edge: HalfEdgeIndex,
        /// Offset of the new edge, in entity space (metres).
        offset: Vec3,
    },
    /// Subdivide a face with `cuts` cuts per edge.
    FaceSubdivide {
        /// Target entity.
        entity: EntityId,
        /// The face.
        face: FaceIndex,
        /// Cuts per edge, 1..=[`MAX_SUBDIVISION_CUTS`].
        cuts: u8,
    },
    /// Rename the session (admins only).
    SetSessionName {
        /// New name, at most [`MAX_NAME_BYTES`].
        name: String,
    },
    /// Set absolute positions of vertices, in entity space (last-write-wins per vertex).
    MoveVertices {
        /// Target entity.
        entity: EntityId,
        /// Vertex and its new position, at most [`MAX_ELEMENTS`].
        moves: Vec<(VertexKey, Vec3)>,
    },
    /// Create a face over existing vertices, counter-clockwise seen from outside.
    CreateFace {
        /// Target entity.
        entity: EntityId,
        /// Corners, 3..=[`MAX_FACE_CORNERS`].
        vertices: Vec<VertexKey>,
    },
    /// Delete vertices, edges and faces, with the faces that use them.
    DeleteElements {
        /// Target entity.
        entity: EntityId,
        /// Vertices to delete.
        vertices: Vec<VertexKey>,
        /// Edges to delete.
        edges: Vec<EdgeKey>,
        /// Faces to delete.
        faces: Vec<FaceKey>,
    },
    /// Extrude faces; each edge-connected region moves as one.
    ExtrudeFaces {
        /// Target entity.
        entity: EntityId,
        /// Faces to extrude.
        faces: Vec<FaceKey>,
        /// How far, and which way.
        direction: ExtrudeDirection,
        /// Grid step the distance snaps to, metres.
        snap_m: Option<f32>,
    },
    /// Extrude border edges by an offset.
    ExtrudeEdges {
        /// Target entity.
        entity: EntityId,
        /// Border edges.
        edges: Vec<EdgeKey>,
        /// Offset of the new edges, entity space (metres).
        offset: Vec3,
        /// Grid step the offset's length snaps to, metres.
        snap_m: Option<f32>,
    },
    /// Subdivide faces with `cuts` cuts per edge.
    SubdivideFaces {
        /// Target entity.
        entity: EntityId,
        /// Faces to subdivide.
        faces: Vec<FaceKey>,
        /// Cuts per edge, 1..=[`MAX_SUBDIVISION_CUTS`].
        cuts: u8,
    },
    /// Catmull–Clark smoothing of the whole mesh (`faces` empty) or a face region.
    Smooth {
        /// Target entity.
        entity: EntityId,
        /// The region; empty for the whole mesh.
        faces: Vec<FaceKey>,
        /// Levels, 1..=[`MAX_SMOOTH_LEVELS`].
        levels: u8,
    },
    /// Merge vertices: each group into its first vertex.
    Weld {
        /// Target entity.
        entity: EntityId,
        /// Groups of at least two vertices; the first of each survives.
        groups: Vec<Vec<VertexKey>>,
        /// Place the survivor at their centroid (else it stays where it is).
        at_center: bool,
    },
    /// Deep-copy an entity (mesh with new element ids, name, color, material).
    Duplicate {
        /// The entity to copy.
        entity: EntityId,
        /// The copy's id, in the author's namespace.
        copy: EntityId,
        /// Added to the source's translation, scene space (metres).
        offset: Vec3,
    },
    /// Mirror an entity's mesh across a local axis plane.
    Mirror {
        /// Target entity.
        entity: EntityId,
        /// The plane.
        axis: Axis,
        /// Share the vertices on the plane between both halves.
        weld: bool,
    },
    /// Set an entity's transform absolutely (last-write-wins per entity).
    SetTransform {
        /// Target entity.
        entity: EntityId,
        /// The new transform.
        transform: Transform,
    },
    /// Opens one undo step: the author's next `entries` scene-changing entries (after this one)
    /// undo and redo as one, shown in the history under `label`. Without it every
    /// scene-changing entry is its own step. The author's next `Step`, `Undo` or `Redo` closes
    /// an open step early.
    Step {
        /// How many of the author's following scene-changing entries the step takes,
        /// 1..=[`MAX_STEP_ENTRIES`].
        entries: u16,
        /// What the user did ("Extrude 4 faces"), at most [`MAX_LABEL_BYTES`].
        label: String,
    },
    /// Reverts one of the author's own steps against the current scene (see `docs/protocol.md`,
    /// "Undo and redo"): refused, naming who, when someone else has since changed or built on
    /// what it changed.
    Undo {
        /// The step, by the id of its first entry; `None`: the author's latest step not undone.
        step: Option<CommandId>,
    },
    /// Applies an undone step of the author's again. A new step of the author's clears what it
    /// may redo; others' edits do not.
    Redo {
        /// The step; `None`: the author's most recently undone step.
        step: Option<CommandId>,
    },
    /// Adds the entities of an imported asset (a glTF file the server has stored and read; see
    /// `docs/protocol.md`, "Assets and import"): entity `k` of the asset becomes
    /// `first` + `k` (same namespace, counter + `k`), with the asset's name, transform, colour,
    /// material and mesh. One undo step.
    Import {
        /// SHA-256 of the uploaded file.
        asset: AssetId,
        /// The first new entity's id, in the author's namespace.
        first: EntityId,
        /// How many entities the asset holds, 1..=[`MAX_IMPORT_ENTITIES`].
        count: u32,
    },
    /// The author's display name, shown to the others in people lists, history and toasts
    /// (last-write-wins per author). Signed like every entry, so no one else — the server
    /// included — can name an author. Empty clears it.
    SetDisplayName {
        /// At most [`MAX_DISPLAY_NAME_BYTES`] of UTF-8, no control characters.
        name: String,
    },
    /// An admin changes a member's role, effective for that member's next entry (entries are
    /// checked against the role their author holds when each is accepted) and announced to
    /// everyone in the roster. A role set this way stays: a later join with another invite
    /// does not change it. No one changes their own role.
    SetRole {
        /// The member.
        author: AuthorId,
        /// The new role.
        role: crate::registry::Role,
    },
    /// An admin removes a member from the session now: their connection is closed as
    /// `Kicked` with `reason`. With `revoke_invite`, every invite that admitted them is revoked
    /// too (the others it admitted can no longer join with it either); without, they may join
    /// again while an invite of theirs is valid.
    Kick {
        /// The member.
        author: AuthorId,
        /// Shown to them, at most [`MAX_NAME_BYTES`], no control characters.
        reason: String,
        /// Revoke the invites that admitted them.
        revoke_invite: bool,
    },
}

/// An uploaded asset, by the SHA-256 of its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AssetId(pub [u8; 32]);

impl core::fmt::Display for AssetId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Command {
    /// The entities an [`Command::Import`] makes, in asset order (empty for other commands, and
    /// for an import whose ids would run past the namespace).
    #[must_use]
    pub fn import_ids(&self) -> Vec<EntityId> {
        match self {
            Self::Import { first, count, .. } => {
                let (author, counter) = (first.namespace(), first.counter());
                if counter.checked_add(*count).is_none() {
                    return Vec::new();
                }
                (0..*count)
                    .map(|k| EntityId::new(author, counter.saturating_add(k)))
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

/// Which way an extrusion goes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum ExtrudeDirection {
    /// Along each region's area-weighted normal, by a signed distance (metres).
    Normal {
        /// Signed distance.
        distance_m: f32,
    },
    /// By a fixed offset in entity space (metres).
    Vector {
        /// The offset.
        offset: Vec3,
    },
}

/// Why a payload was refused by the value guards.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// A float is NaN or infinite.
    #[error("{field} is not a finite number")]
    NonFinite {
        /// The offending field.
        field: &'static str,
    },
    /// A coordinate is beyond [`MAX_COORDINATE_M`].
    #[error("{field} is beyond the {MAX_COORDINATE_M} m limit")]
    OutOfRange {
        /// The offending field.
        field: &'static str,
    },
    /// A rotation is not a unit quaternion.
    #[error("{field} is not a unit quaternion")]
    NotNormalized {
        /// The offending field.
        field: &'static str,
    },
    /// A string or list is longer than allowed.
    #[error("{field} is longer than {max}")]
    TooLong {
        /// The offending field.
        field: &'static str,
        /// The limit.
        max: usize,
    },
    /// A value is outside its documented domain.
    #[error("{field} is outside its allowed range")]
    Invalid {
        /// The offending field.
        field: &'static str,
    },
    /// The entity id of a spawn is in another author's namespace.
    #[error("entity id is not in the author's namespace")]
    ForeignEntityId,
    /// A member's own role or removal: another admin decides those.
    #[error("no one changes their own role or removes themselves: ask another admin")]
    OwnMembership,
    /// An undo or redo names a step of another author (each author undoes only their own).
    #[error("the step is another author's: undo and redo act on your own steps only")]
    ForeignStep,
}

fn finite_vec(field: &'static str, v: &[f32]) -> Result<(), PayloadError> {
    if v.iter().all(|x| x.is_finite()) {
        Ok(())
    } else {
        Err(PayloadError::NonFinite { field })
    }
}

fn coordinate(field: &'static str, v: Vec3) -> Result<(), PayloadError> {
    finite_vec(field, &v.to_array())?;
    if v.abs().max_element() > MAX_COORDINATE_M {
        return Err(PayloadError::OutOfRange { field });
    }
    Ok(())
}

fn unit_quat(field: &'static str, q: Quat) -> Result<(), PayloadError> {
    finite_vec(field, &q.to_array())?;
    // Clients quantize and renormalize; allow float noise but not garbage.
    if (q.length_squared() - 1.0).abs() > 1.0e-3 {
        return Err(PayloadError::NotNormalized { field });
    }
    Ok(())
}

fn scale_factor(field: &'static str, v: Vec3) -> Result<(), PayloadError> {
    finite_vec(field, &v.to_array())?;
    let ok = v
        .to_array()
        .iter()
        .all(|x| (1.0 / MAX_SCALE_FACTOR..=MAX_SCALE_FACTOR).contains(x));
    if ok {
        Ok(())
    } else {
        Err(PayloadError::Invalid { field })
    }
}

fn name(field: &'static str, s: &str) -> Result<(), PayloadError> {
    if s.len() > MAX_NAME_BYTES {
        return Err(PayloadError::TooLong {
            field,
            max: MAX_NAME_BYTES,
        });
    }
    if s.chars().any(char::is_control) {
        return Err(PayloadError::Invalid { field });
    }
    Ok(())
}

fn unit_interval(field: &'static str, v: &[f32]) -> Result<(), PayloadError> {
    finite_vec(field, v)?;
    if v.iter().all(|x| (0.0..=1.0).contains(x)) {
        Ok(())
    } else {
        Err(PayloadError::Invalid { field })
    }
}

impl Command {
    /// Checks every value against its documented domain. `author` is the signer, needed for the
    /// spawn namespace rule.
    ///
    /// # Errors
    /// The first guard that fails.
    pub fn validate(&self, author: AuthorId) -> Result<(), PayloadError> {
        match self {
            Self::Select { entities } => {
                if entities.len() > MAX_SELECTION {
                    return Err(PayloadError::TooLong {
                        field: "entities",
                        max: MAX_SELECTION,
                    });
                }
                Ok(())
            }
            Self::Spawn {
                entity,
                primitive: _,
                transform,
            } => {
                if entity.namespace() != author {
                    return Err(PayloadError::ForeignEntityId);
                }
                transform_guard(transform)
            }
            Self::Despawn { entity: _ }
            | Self::ToolActivate { tool: _, target: _ }
            | Self::ToolDeactivate { tool: _ } => Ok(()),
            Self::Translate { entity: _, delta } => coordinate("delta", *delta),
            Self::Rotate { entity: _, delta } => unit_quat("delta", *delta),
            Self::Scale { entity: _, factor } => scale_factor("factor", *factor),
            Self::Kick {
                author: member,
                reason,
                ..
            } => {
                if *member == author {
                    return Err(PayloadError::OwnMembership);
                }
                name("reason", reason)
            }
            Self::SetRole { author: member, .. } => {
                if *member == author {
                    return Err(PayloadError::OwnMembership);
                }
                Ok(())
            }
            Self::SetName { entity: _, name: n } | Self::SetSessionName { name: n } => {
                name("name", n)
            }
            Self::SetColor { entity: _, rgba } => unit_interval("rgba", &rgba.to_array()),
            Self::SetMaterial {
                entity: _,
                material,
            } => unit_interval("material", &[material.metallic, material.roughness]),
            Self::VertexCreate {
                entity: _,
                position,
            } => coordinate("position", *position),
            Self::EdgeExtrude {
                entity: _,
                edge: _,
                offset,
            } => coordinate("offset", *offset),
            Self::FaceSubdivide {
                entity: _,
                face: _,
                cuts,
            }
            | Self::SubdivideFaces {
                entity: _,
                faces: _,
                cuts,
            } => {
                if let Self::SubdivideFaces { faces, .. } = self {
                    count("faces", faces.len(), 1)?;
                }
                if (1..=MAX_SUBDIVISION_CUTS).contains(cuts) {
                    Ok(())
                } else {
                    Err(PayloadError::Invalid { field: "cuts" })
                }
            }
            Self::MoveVertices { entity: _, moves } => {
                count("moves", moves.len(), 1)?;
                moves
                    .iter()
                    .try_for_each(|(_, p)| coordinate("moves.position", *p))
            }
            Self::CreateFace {
                entity: _,
                vertices,
            } => {
                if vertices.len() > MAX_FACE_CORNERS {
                    return Err(PayloadError::TooLong {
                        field: "vertices",
                        max: MAX_FACE_CORNERS,
                    });
                }
                if vertices.len() < 3 {
                    return Err(PayloadError::Invalid { field: "vertices" });
                }
                Ok(())
            }
            Self::DeleteElements {
                entity: _,
                vertices,
                edges,
                faces,
            } => count(
                "elements",
                vertices
                    .len()
                    .saturating_add(edges.len())
                    .saturating_add(faces.len()),
                1,
            ),
            Self::ExtrudeFaces {
                entity: _,
                faces,
                direction,
                snap_m,
            } => {
                count("faces", faces.len(), 1)?;
                match direction {
                    ExtrudeDirection::Normal { distance_m } => {
                        coordinate("distance_m", Vec3::new(*distance_m, 0.0, 0.0))?;
                    }
                    ExtrudeDirection::Vector { offset } => coordinate("offset", *offset)?,
                }
                snap("snap_m", *snap_m)
            }
            Self::ExtrudeEdges {
                entity: _,
                edges,
                offset,
                snap_m,
            } => {
                count("edges", edges.len(), 1)?;
                coordinate("offset", *offset)?;
                snap("snap_m", *snap_m)
            }
            Self::Smooth {
                entity: _,
                faces,
                levels,
            } => {
                count("faces", faces.len(), 0)?;
                if (1..=MAX_SMOOTH_LEVELS).contains(levels) {
                    Ok(())
                } else {
                    Err(PayloadError::Invalid { field: "levels" })
                }
            }
            Self::Weld {
                entity: _,
                groups,
                at_center: _,
            } => {
                count("groups", groups.len(), 1)?;
                let total = groups
                    .iter()
                    .map(Vec::len)
                    .fold(0usize, usize::saturating_add);
                count("vertices", total, 2)?;
                groups
                    .iter()
                    .try_for_each(|g| count("groups.vertices", g.len(), 2))
            }
            Self::Duplicate {
                entity: _,
                copy,
                offset,
            } => {
                if copy.namespace() != author {
                    return Err(PayloadError::ForeignEntityId);
                }
                coordinate("offset", *offset)
            }
            Self::Mirror { .. } => Ok(()),
            Self::SetTransform {
                entity: _,
                transform,
            } => transform_guard(transform),
            Self::Step { entries, label } => {
                if label.len() > MAX_LABEL_BYTES {
                    return Err(PayloadError::TooLong {
                        field: "label",
                        max: MAX_LABEL_BYTES,
                    });
                }
                name("label", label)?;
                if (1..=MAX_STEP_ENTRIES).contains(entries) {
                    Ok(())
                } else {
                    Err(PayloadError::Invalid { field: "entries" })
                }
            }
            Self::Undo { step } | Self::Redo { step } => match step {
                Some(s) if s.author != author => Err(PayloadError::ForeignStep),
                _ => Ok(()),
            },
            Self::Import { first, count, .. } => {
                if first.namespace() != author {
                    return Err(PayloadError::ForeignEntityId);
                }
                if (1..=MAX_IMPORT_ENTITIES).contains(count)
                    && first.counter().checked_add(*count).is_some()
                {
                    Ok(())
                } else {
                    Err(PayloadError::Invalid { field: "count" })
                }
            }
            Self::SetDisplayName { name: n } => {
                if n.len() > MAX_DISPLAY_NAME_BYTES {
                    return Err(PayloadError::TooLong {
                        field: "name",
                        max: MAX_DISPLAY_NAME_BYTES,
                    });
                }
                name("name", n)
            }
        }
    }
}

/// A list of `len` elements, at least `min`, at most [`MAX_ELEMENTS`].
fn count(field: &'static str, len: usize, min: usize) -> Result<(), PayloadError> {
    if len > MAX_ELEMENTS {
        return Err(PayloadError::TooLong {
            field,
            max: MAX_ELEMENTS,
        });
    }
    if len < min {
        return Err(PayloadError::Invalid { field });
    }
    Ok(())
}

fn transform_guard(transform: &Transform) -> Result<(), PayloadError> {
    coordinate("transform.translation", transform.translation)?;
    unit_quat("transform.rotation", transform.rotation)?;
    finite_vec("transform.scale", &transform.scale.to_array())?;
    if transform.scale.abs().max_element() > MAX_COORDINATE_M
        || transform.scale.min_element() <= 0.0
    {
        return Err(PayloadError::Invalid {
            field: "transform.scale",
        });
    }
    Ok(())
}

fn snap(field: &'static str, step: Option<f32>) -> Result<(), PayloadError> {
    match step {
        None => Ok(()),
        Some(s) if s.is_finite() && s > 0.0 && s <= MAX_SNAP_M => Ok(()),
        Some(_) => Err(PayloadError::Invalid { field }),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_typed_display_name_is_made_one_the_command_accepts() {
        assert_eq!(clean_display_name("  Ada\u{7} Lovelace \n"), "Ada Lovelace");
        let long = clean_display_name(&"é".repeat(40));
        assert_eq!(long, "é".repeat(32));
        assert!(
            Command::SetDisplayName { name: long }
                .validate(AuthorId(1))
                .is_ok()
        );
    }

    use super::*;

    const ME: AuthorId = AuthorId(3);

    #[test]
    fn non_finite_and_absurd_values_are_refused() {
        let e = EntityId::new(ME, 1);
        let nan = Command::Translate {
            entity: e,
            delta: Vec3::new(f32::NAN, 0.0, 0.0),
        };
        assert_eq!(
            nan.validate(ME),
            Err(PayloadError::NonFinite { field: "delta" })
        );
        let far = Command::Translate {
            entity: e,
            delta: Vec3::new(0.0, 2.0e5, 0.0),
        };
        assert_eq!(
            far.validate(ME),
            Err(PayloadError::OutOfRange { field: "delta" })
        );
        let bad_rot = Command::Rotate {
            entity: e,
            delta: Quat::from_xyzw(1.0, 1.0, 0.0, 0.0),
        };
        assert_eq!(
            bad_rot.validate(ME),
            Err(PayloadError::NotNormalized { field: "delta" })
        );
        let zero_scale = Command::Scale {
            entity: e,
            factor: Vec3::new(1.0, 0.0, 1.0),
        };
        assert_eq!(
            zero_scale.validate(ME),
            Err(PayloadError::Invalid { field: "factor" })
        );
        let inf_color = Command::SetColor {
            entity: e,
            rgba: Vec4::new(1.0, f32::INFINITY, 0.0, 1.0),
        };
        assert_eq!(
            inf_color.validate(ME),
            Err(PayloadError::NonFinite { field: "rgba" })
        );
        let long = Command::SetName {
            entity: e,
            name: "x".repeat(MAX_NAME_BYTES + 1),
        };
        assert!(matches!(
            long.validate(ME),
            Err(PayloadError::TooLong { .. })
        ));
        let cuts = Command::FaceSubdivide {
            entity: e,
            face: FaceIndex(0),
            cuts: 0,
        };
        assert_eq!(
            cuts.validate(ME),
            Err(PayloadError::Invalid { field: "cuts" })
        );
    }

    #[test]
    fn spawn_must_use_the_authors_namespace() {
        let spawn = |entity| Command::Spawn {
            entity,
            primitive: Primitive::Cube,
            transform: Transform::IDENTITY,
        };
        assert_eq!(spawn(EntityId::new(ME, 1)).validate(ME), Ok(()));
        assert_eq!(
            spawn(EntityId::new(AuthorId(4), 1)).validate(ME),
            Err(PayloadError::ForeignEntityId)
        );
    }

    #[test]
    fn ordinary_edits_pass() {
        let e = EntityId::new(ME, 1);
        for c in [
            Command::Translate {
                entity: e,
                delta: Vec3::new(1.0, -2.0, 0.5),
            },
            Command::Rotate {
                entity: e,
                delta: Quat::from_rotation_y(0.3),
            },
            Command::Scale {
                entity: e,
                factor: Vec3::splat(2.0),
            },
            Command::SetName {
                entity: e,
                name: "Chair".into(),
            },
            Command::SetColor {
                entity: e,
                rgba: Vec4::new(0.2, 0.4, 0.6, 1.0),
            },
            Command::FaceSubdivide {
                entity: e,
                face: FaceIndex(2),
                cuts: 2,
            },
        ] {
            assert_eq!(c.validate(ME), Ok(()), "{c:?}");
        }
    }
}
