//! The command registry: for every command kind, who may issue it (role), what part of the
//! state it touches (scope) and how it resolves against a concurrent command on the same scope
//! (conflict strategy).
//!
//! This table is the rulebook of the session. It is one exhaustive `match` so that adding a
//! command without deciding its rule does not compile.

use serde::{Deserialize, Serialize};

use alloc::vec::Vec;

use crate::command::{Command, FaceIndex, HalfEdgeIndex};
use crate::editmesh::{EdgeKey, FaceKey, VertexKey};
use crate::ids::{AuthorId, EntityId, ToolId};

/// What a participant may do. Ordered: `Viewer < Editor < Admin`.
///
/// Encoded by variant index on the wire; by lower-case name in JSON and TOML.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees the scene, points at things (selection highlight), edits nothing.
    Viewer,
    /// Edits the scene.
    Editor,
    /// Edits the scene and the session itself.
    Admin,
}

impl Role {
    /// Lower-case name, as used in invites, the CLI and messages.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Editor => "editor",
            Self::Admin => "admin",
        }
    }
}

impl core::str::FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "viewer" => Ok(Self::Viewer),
            "editor" => Ok(Self::Editor),
            "admin" => Ok(Self::Admin),
            _ => Err(UnknownRole),
        }
    }
}

/// A role name that is not `viewer`, `editor` or `admin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown role: use viewer, editor or admin")]
pub struct UnknownRole;

impl core::fmt::Display for Role {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How two concurrent commands on the same scope resolve. The strategy of the later command
/// (in total order) decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Strategy {
    /// Both apply, in total order (commutative or order-insensitive edits: deltas, new vertices).
    Merge,
    /// The later in total order wins; the earlier is kept in the log, marked superseded.
    LastWriteWins,
    /// The later in total order is refused with a conflict reason the client shows.
    Reject,
}

/// A part of an entity that commands touch independently, so that renaming and moving the same
/// entity at once are not a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Facet {
    /// Whether the entity exists (spawn, despawn).
    Existence,
    /// Translation, rotation, scale.
    Transform,
    /// Display name.
    Name,
    /// Base color.
    Color,
    /// Material parameters.
    Material,
    /// The mesh as a whole (element-level edits use [`Scope::MeshElement`]).
    Topology,
}

/// One element of an entity's mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MeshElement {
    /// A half-edge.
    Edge(HalfEdgeIndex),
    /// A face.
    Face(FaceIndex),
    /// A vertex, by stable id.
    Vertex(VertexKey),
    /// An edge, by stable id.
    EdgeId(EdgeKey),
    /// A face, by stable id.
    FaceId(FaceKey),
}

/// The part of the state a command touches. Two commands can only conflict when their scopes
/// are equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Session-wide state (its name, settings).
    Global,
    /// One facet of one entity.
    Entity {
        /// The entity.
        entity: EntityId,
        /// The facet.
        facet: Facet,
    },
    /// One author's state of one tool.
    Tool {
        /// Whose tool.
        author: AuthorId,
        /// Which tool.
        tool: ToolId,
    },
    /// One author's selection highlight.
    Selection {
        /// Whose selection.
        author: AuthorId,
    },
    /// One element of one entity's mesh.
    MeshElement {
        /// The entity.
        entity: EntityId,
        /// The element.
        element: MeshElement,
    },
    /// One author's undo history (steps, undo, redo).
    History {
        /// The author.
        author: AuthorId,
    },
    /// One author's profile (display name).
    Profile {
        /// The author.
        author: AuthorId,
    },
    /// One member's place in the session (role, removal).
    Membership {
        /// The member.
        author: AuthorId,
    },
}

/// For people (refusal messages): `entity#…` and `author#…` as their `Display` writes them, so
/// a client can put names in their place.
impl core::fmt::Display for Scope {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Global => f.write_str("the session's settings"),
            Self::Entity { entity, facet } => match facet {
                Facet::Existence => write!(f, "{entity}"),
                Facet::Transform => write!(f, "the placement of {entity}"),
                Facet::Name => write!(f, "the name of {entity}"),
                Facet::Color => write!(f, "the colour of {entity}"),
                Facet::Material => write!(f, "the material of {entity}"),
                Facet::Topology => write!(f, "the mesh of {entity}"),
            },
            Self::Tool { author, tool } => write!(f, "tool {} of {author}", tool.0),
            Self::Selection { author } => write!(f, "the selection of {author}"),
            Self::MeshElement { entity, element } => match element {
                MeshElement::Edge(i) => write!(f, "half-edge {} of {entity}", i.0),
                MeshElement::Face(i) => write!(f, "face #{} of {entity}", i.0),
                MeshElement::Vertex(v) => write!(f, "{v} of {entity}"),
                MeshElement::EdgeId(e) => write!(f, "{e} of {entity}"),
                MeshElement::FaceId(k) => write!(f, "{k} of {entity}"),
            },
            Self::History { author } => write!(f, "the undo history of {author}"),
            Self::Profile { author } => write!(f, "the display name of {author}"),
            Self::Membership { author } => write!(f, "the role of {author}"),
        }
    }
}

/// Payload-free name of a command variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[allow(missing_docs)] // reason: each names the `Command` variant of the same name
pub enum CommandKind {
    Select,
    Spawn,
    Despawn,
    Translate,
    Rotate,
    Scale,
    SetName,
    SetColor,
    SetMaterial,
    ToolActivate,
    ToolDeactivate,
    VertexCreate,
    EdgeExtrude,
    FaceSubdivide,
    SetSessionName,
    MoveVertices,
    CreateFace,
    DeleteElements,
    ExtrudeFaces,
    ExtrudeEdges,
    SubdivideFaces,
    Smooth,
    Weld,
    Duplicate,
    Mirror,
    SetTransform,
    Step,
    Undo,
    Redo,
    Import,
    SetDisplayName,
    SetRole,
    Kick,
}

impl CommandKind {
    /// Every kind, in wire-tag order.
    pub const ALL: [Self; 33] = [
        Self::Select,
        Self::Spawn,
        Self::Despawn,
        Self::Translate,
        Self::Rotate,
        Self::Scale,
        Self::SetName,
        Self::SetColor,
        Self::SetMaterial,
        Self::ToolActivate,
        Self::ToolDeactivate,
        Self::VertexCreate,
        Self::EdgeExtrude,
        Self::FaceSubdivide,
        Self::SetSessionName,
        Self::MoveVertices,
        Self::CreateFace,
        Self::DeleteElements,
        Self::ExtrudeFaces,
        Self::ExtrudeEdges,
        Self::SubdivideFaces,
        Self::Smooth,
        Self::Weld,
        Self::Duplicate,
        Self::Mirror,
        Self::SetTransform,
        Self::Step,
        Self::Undo,
        Self::Redo,
        Self::Import,
        Self::SetDisplayName,
        Self::SetRole,
        Self::Kick,
    ];

    /// The rule for this kind.
    #[must_use]
    pub const fn rule(self) -> Rule {
        use Role::{Admin, Editor, Viewer};
        use Strategy::{LastWriteWins as Lww, Merge, Reject};
        let (role, strategy) = match self {
            // Pointing at things is how viewers take part in a review.
            Self::Select => (Viewer, Lww),
            // Two spawns of one id, or a second delete, are refused: nothing sensible merges.
            Self::Spawn | Self::Despawn => (Editor, Reject),
            // Deltas compose: two people nudging the same object both move it.
            Self::Translate | Self::Rotate | Self::Scale => (Editor, Merge),
            // Absolute values: the later wins, the earlier author is told it was overwritten.
            Self::SetName | Self::SetColor | Self::SetMaterial => (Editor, Lww),
            Self::ToolActivate | Self::ToolDeactivate => (Editor, Lww),
            // New vertices do not touch existing elements.
            Self::VertexCreate => (Editor, Merge),
            // Two topology edits of one element cannot both be meant: the later is refused.
            Self::EdgeExtrude | Self::FaceSubdivide => (Editor, Reject),
            Self::SetSessionName => (Admin, Lww),
            // Absolute positions: concurrent moves of one vertex, the later wins; different
            // vertices are different scopes and both apply.
            Self::MoveVertices => (Editor, Lww),
            // New faces over existing vertices touch nothing that exists.
            Self::CreateFace => (Editor, Merge),
            // Topology edits of the elements they name: a concurrent second one is refused.
            Self::DeleteElements
            | Self::ExtrudeFaces
            | Self::ExtrudeEdges
            | Self::SubdivideFaces
            | Self::Smooth
            | Self::Weld
            | Self::Mirror => (Editor, Reject),
            // Like a spawn of the copy's id.
            Self::Duplicate => (Editor, Reject),
            // Two people typing into the inspector: one of the values, not their sum.
            Self::SetTransform => (Editor, Lww),
            // One author's own history: the scene-level check at apply time (has anyone else
            // since changed what the step changed?) decides, not concurrency.
            Self::Step | Self::Undo | Self::Redo => (Editor, Merge),
            // Like spawns of its ids (only its author can name them).
            Self::Import => (Editor, Reject),
            // Everyone, viewers too, is shown to the others by a name they choose.
            Self::SetDisplayName => (Viewer, Lww),
            // Membership is the admins' (two admins changing one role: the later wins).
            Self::SetRole | Self::Kick => (Admin, Lww),
        };
        Rule { role, strategy }
    }

    /// Lower-case name for messages and metrics labels.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Select => "select",
            Self::Spawn => "spawn",
            Self::Despawn => "despawn",
            Self::Translate => "translate",
            Self::Rotate => "rotate",
            Self::Scale => "scale",
            Self::SetName => "set_name",
            Self::SetColor => "set_color",
            Self::SetMaterial => "set_material",
            Self::ToolActivate => "tool_activate",
            Self::ToolDeactivate => "tool_deactivate",
            Self::VertexCreate => "vertex_create",
            Self::EdgeExtrude => "edge_extrude",
            Self::FaceSubdivide => "face_subdivide",
            Self::SetSessionName => "set_session_name",
            Self::MoveVertices => "move_vertices",
            Self::CreateFace => "create_face",
            Self::DeleteElements => "delete_elements",
            Self::ExtrudeFaces => "extrude_faces",
            Self::ExtrudeEdges => "extrude_edges",
            Self::SubdivideFaces => "subdivide_faces",
            Self::Smooth => "smooth",
            Self::Weld => "weld",
            Self::Duplicate => "duplicate",
            Self::Mirror => "mirror",
            Self::SetTransform => "set_transform",
            Self::Step => "step",
            Self::Undo => "undo",
            Self::Redo => "redo",
            Self::Import => "import",
            Self::SetDisplayName => "set_display_name",
            Self::SetRole => "set_role",
            Self::Kick => "kick",
        }
    }
}

/// What the registry says about one command kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Least role allowed to issue it.
    pub role: Role,
    /// Resolution against a concurrent command on the same scope.
    pub strategy: Strategy,
}

impl Command {
    /// The payload-free kind.
    #[must_use]
    pub const fn kind(&self) -> CommandKind {
        match self {
            Self::Select { .. } => CommandKind::Select,
            Self::Spawn { .. } => CommandKind::Spawn,
            Self::Despawn { .. } => CommandKind::Despawn,
            Self::Translate { .. } => CommandKind::Translate,
            Self::Rotate { .. } => CommandKind::Rotate,
            Self::Scale { .. } => CommandKind::Scale,
            Self::SetName { .. } => CommandKind::SetName,
            Self::SetColor { .. } => CommandKind::SetColor,
            Self::SetMaterial { .. } => CommandKind::SetMaterial,
            Self::ToolActivate { .. } => CommandKind::ToolActivate,
            Self::ToolDeactivate { .. } => CommandKind::ToolDeactivate,
            Self::VertexCreate { .. } => CommandKind::VertexCreate,
            Self::EdgeExtrude { .. } => CommandKind::EdgeExtrude,
            Self::FaceSubdivide { .. } => CommandKind::FaceSubdivide,
            Self::SetSessionName { .. } => CommandKind::SetSessionName,
            Self::MoveVertices { .. } => CommandKind::MoveVertices,
            Self::CreateFace { .. } => CommandKind::CreateFace,
            Self::DeleteElements { .. } => CommandKind::DeleteElements,
            Self::ExtrudeFaces { .. } => CommandKind::ExtrudeFaces,
            Self::ExtrudeEdges { .. } => CommandKind::ExtrudeEdges,
            Self::SubdivideFaces { .. } => CommandKind::SubdivideFaces,
            Self::Smooth { .. } => CommandKind::Smooth,
            Self::Weld { .. } => CommandKind::Weld,
            Self::Duplicate { .. } => CommandKind::Duplicate,
            Self::Mirror { .. } => CommandKind::Mirror,
            Self::SetTransform { .. } => CommandKind::SetTransform,
            Self::Step { .. } => CommandKind::Step,
            Self::Undo { .. } => CommandKind::Undo,
            Self::Redo { .. } => CommandKind::Redo,
            Self::Import { .. } => CommandKind::Import,
            Self::SetDisplayName { .. } => CommandKind::SetDisplayName,
            Self::SetRole { .. } => CommandKind::SetRole,
            Self::Kick { .. } => CommandKind::Kick,
        }
    }

    /// The registry rule of this command's kind.
    #[must_use]
    pub const fn rule(&self) -> Rule {
        self.kind().rule()
    }

    /// The scope this command touches when issued by `author`.
    #[must_use]
    pub const fn scope(&self, author: AuthorId) -> Scope {
        const fn entity(entity: EntityId, facet: Facet) -> Scope {
            Scope::Entity { entity, facet }
        }
        match self {
            Self::Select { .. } => Scope::Selection { author },
            Self::Spawn { entity: e, .. } | Self::Despawn { entity: e } => {
                entity(*e, Facet::Existence)
            }
            Self::Translate { entity: e, .. }
            | Self::Rotate { entity: e, .. }
            | Self::Scale { entity: e, .. } => entity(*e, Facet::Transform),
            Self::SetName { entity: e, .. } => entity(*e, Facet::Name),
            Self::SetColor { entity: e, .. } => entity(*e, Facet::Color),
            Self::SetMaterial { entity: e, .. } => entity(*e, Facet::Material),
            Self::ToolActivate { tool, .. } | Self::ToolDeactivate { tool } => Scope::Tool {
                author,
                tool: *tool,
            },
            Self::VertexCreate { entity: e, .. } => entity(*e, Facet::Topology),
            Self::EdgeExtrude {
                entity: e, edge, ..
            } => Scope::MeshElement {
                entity: *e,
                element: MeshElement::Edge(*edge),
            },
            Self::FaceSubdivide {
                entity: e, face, ..
            } => Scope::MeshElement {
                entity: *e,
                element: MeshElement::Face(*face),
            },
            Self::SetSessionName { .. } => Scope::Global,
            Self::SetTransform { entity: e, .. } => entity(*e, Facet::Transform),
            Self::Duplicate { copy, .. } => entity(*copy, Facet::Existence),
            Self::Import { first, .. } => entity(*first, Facet::Existence),
            Self::SetDisplayName { .. } => Scope::Profile { author },
            Self::SetRole { author: member, .. } | Self::Kick { author: member, .. } => {
                Scope::Membership { author: *member }
            }
            Self::MoveVertices { entity: e, .. }
            | Self::CreateFace { entity: e, .. }
            | Self::DeleteElements { entity: e, .. }
            | Self::ExtrudeFaces { entity: e, .. }
            | Self::ExtrudeEdges { entity: e, .. }
            | Self::SubdivideFaces { entity: e, .. }
            | Self::Smooth { entity: e, .. }
            | Self::Weld { entity: e, .. }
            | Self::Mirror { entity: e, .. } => entity(*e, Facet::Topology),
            Self::Step { .. } | Self::Undo { .. } | Self::Redo { .. } => Scope::History { author },
        }
    }

    /// Every scope this command touches: [`Command::scope`] for most kinds; one scope per named
    /// element for element-level mesh edits (so edits of different vertices of one mesh never
    /// meet, and edits of the same one do), in element order without repeats. A whole-mesh edit
    /// (smoothing everything, mirror) holds the mesh's topology facet.
    #[must_use]
    pub fn scopes(&self, author: AuthorId) -> Vec<Scope> {
        let el = |entity: EntityId, element: MeshElement| Scope::MeshElement { entity, element };
        let mut out: Vec<Scope> = match self {
            Self::MoveVertices { entity, moves } => moves
                .iter()
                .map(|(v, _)| el(*entity, MeshElement::Vertex(*v)))
                .collect(),
            Self::Weld { entity, groups, .. } => groups
                .iter()
                .flatten()
                .map(|v| el(*entity, MeshElement::Vertex(*v)))
                .collect(),
            Self::DeleteElements {
                entity,
                vertices,
                edges,
                faces,
            } => vertices
                .iter()
                .map(|v| el(*entity, MeshElement::Vertex(*v)))
                .chain(edges.iter().map(|e| el(*entity, MeshElement::EdgeId(*e))))
                .chain(faces.iter().map(|f| el(*entity, MeshElement::FaceId(*f))))
                .collect(),
            Self::ExtrudeFaces { entity, faces, .. }
            | Self::SubdivideFaces { entity, faces, .. } => faces
                .iter()
                .map(|f| el(*entity, MeshElement::FaceId(*f)))
                .collect(),
            Self::Smooth { entity, faces, .. } if !faces.is_empty() => faces
                .iter()
                .map(|f| el(*entity, MeshElement::FaceId(*f)))
                .collect(),
            Self::ExtrudeEdges { entity, edges, .. } => edges
                .iter()
                .map(|e| el(*entity, MeshElement::EdgeId(*e)))
                .collect(),
            _ => alloc::vec![self.scope(author)],
        };
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// A role too low for a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?} needs the {required} role, the author is {actual}")]
pub struct PermissionDenied {
    /// The command kind.
    pub kind: CommandKind,
    /// The least role it needs.
    pub required: Role,
    /// The author's role.
    pub actual: Role,
}

/// The permission check: may `role` issue `kind`?
///
/// # Errors
/// [`PermissionDenied`] when the role is below the kind's required role.
pub const fn check_permission(role: Role, kind: CommandKind) -> Result<(), PermissionDenied> {
    let required = kind.rule().role;
    if (role as u8) >= (required as u8) {
        Ok(())
    } else {
        Err(PermissionDenied {
            kind,
            required,
            actual: role,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_read_as_what_people_call_them() {
        let e = EntityId::new(AuthorId(1), 4);
        let whole = Scope::Entity {
            entity: e,
            facet: Facet::Existence,
        };
        assert_eq!(whole.to_string(), "entity#100000004");
        let name = Scope::Entity {
            entity: e,
            facet: Facet::Name,
        };
        assert_eq!(name.to_string(), "the name of entity#100000004");
        let profile = Scope::Profile {
            author: AuthorId(3),
        };
        assert_eq!(profile.to_string(), "the display name of author#3");
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Editor && Role::Editor < Role::Admin);
    }

    /// The full permission matrix: every kind against every role.
    #[test]
    fn permissions_per_command_and_role() {
        for kind in CommandKind::ALL {
            let expected_min = match kind {
                CommandKind::Select | CommandKind::SetDisplayName => Role::Viewer,
                CommandKind::SetSessionName | CommandKind::SetRole | CommandKind::Kick => {
                    Role::Admin
                }
                _ => Role::Editor,
            };
            for role in [Role::Viewer, Role::Editor, Role::Admin] {
                let res = check_permission(role, kind);
                if role >= expected_min {
                    assert_eq!(res, Ok(()), "{role} may issue {kind:?}");
                } else {
                    assert_eq!(
                        res,
                        Err(PermissionDenied {
                            kind,
                            required: expected_min,
                            actual: role
                        }),
                        "{role} may not issue {kind:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn scopes_separate_facets_and_authors() {
        let e = EntityId::new(AuthorId(1), 1);
        let name = Command::SetName {
            entity: e,
            name: "a".into(),
        };
        let mv = Command::Translate {
            entity: e,
            delta: glam::Vec3::X,
        };
        assert_ne!(name.scope(AuthorId(1)), mv.scope(AuthorId(1)));
        let sel = Command::Select { entities: vec![e] };
        assert_ne!(sel.scope(AuthorId(1)), sel.scope(AuthorId(2)));
        let ext = |edge| Command::EdgeExtrude {
            entity: e,
            edge: HalfEdgeIndex(edge),
            offset: glam::Vec3::Y,
        };
        assert_eq!(ext(4).scope(AuthorId(1)), ext(4).scope(AuthorId(2)));
        assert_ne!(ext(4).scope(AuthorId(1)), ext(5).scope(AuthorId(1)));
    }

    #[test]
    fn kinds_list_is_complete_and_in_tag_order() {
        for (i, k) in CommandKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
    }
}
