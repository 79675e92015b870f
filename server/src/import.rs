//! glTF 2.0 import: a `.glb`, or a `.gltf` with its buffers embedded as `data:` URIs or beside
//! it by relative name, read into what a session can hold — one polygon mesh per primitive,
//! coincident corners welded, with the node's world transform, name and material.
//!
//! What it decides:
//! - **Entities**: one per (node, primitive) that draws triangles. A multi-material mesh gives
//!   one entity per primitive (an entity has one material), each with the node's transform.
//! - **Transforms**: the node hierarchy is flattened: each entity's transform is its node's
//!   world transform (parents' times its own), split into translation, rotation and scale.
//! - **Faces**: triangles become faces, except in files Meshwork wrote, whose primitives declare
//!   their polygons (`extras.meshwork.faces`, face sizes run-length encoded in the fan order the
//!   export writes): those come back as the quads and n-gons they were.
//! - **Welding**: corners at bit-identical positions become one vertex (flat-shaded files repeat
//!   each position once per face).
//! - **Non-manifold input is refused**, naming the mesh and the edge or vertex: a half-edge mesh
//!   cannot hold it, and importing a part of it would change the model silently.
//! - **Materials**: the PBR metallic-roughness factors (base colour, metallic, roughness);
//!   textures are not carried.
//!
//! Bad input gets a typed [`ImportError`] naming the problem, and nothing is allocated for a
//! count before it is checked against [`ImportLimits`]: the file size first, then every buffer,
//! view and accessor range (with checked arithmetic) before any accessor is read.

#![allow(
    clippy::arithmetic_side_effects,
    reason = "float math on glam types; integer steps are checked or bounded by counts checked first"
)]

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use glam::{Mat4, Quat, Vec3, Vec4};
use gltf::accessor::{DataType, Dimensions};
use gltf::mesh::Mode;
use meshwork_protocol::command::{Material, Transform};
use meshwork_protocol::mesh::{Mesh, MeshError};

/// Bounds on what one import may hold.
#[derive(Clone, Copy, Debug)]
pub struct ImportLimits {
    /// Bytes of the file (and of each external buffer).
    pub max_bytes: usize,
    /// Triangles over all primitives.
    pub max_triangles: usize,
    /// Nodes in the document.
    pub max_nodes: usize,
    /// Entities the import makes.
    pub max_entities: usize,
}

impl ImportLimits {
    /// 256 MiB, 4 million triangles, 100,000 nodes, 10,000 entities.
    pub const DEFAULT: Self = Self {
        max_bytes: 256 << 20,
        max_triangles: 4_000_000,
        max_nodes: 100_000,
        max_entities: 10_000,
    };
}

/// Why a file was not imported. Each names what was wrong and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// More bytes than the limit.
    #[error("the file is {bytes} bytes; at most {limit} may be imported")]
    TooLarge {
        /// Size given.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// Not glTF JSON nor a GLB container, or a truncated one.
    #[error("not a glTF file: {0}")]
    NotGltf(String),
    /// A URI that is neither a `data:` URI nor a plain relative file name, or a buffer that was
    /// not supplied.
    #[error("buffer {buffer}: {why}")]
    Buffer {
        /// Buffer index.
        buffer: usize,
        /// What was wrong.
        why: String,
    },
    /// A buffer view or accessor reaches past its data, or has a shape a mesh cannot use.
    #[error("accessor {accessor}: {why}")]
    Accessor {
        /// Accessor index.
        accessor: usize,
        /// What was wrong.
        why: String,
    },
    /// A count over a limit.
    #[error("{what}: {count}, at most {limit}")]
    Limit {
        /// What was counted.
        what: &'static str,
        /// How many.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The node graph is not a forest (a cycle, or a node with two parents).
    #[error("node {0} is reached twice: the node graph has a cycle or a shared child")]
    NodeGraph(usize),
    /// A primitive's data cannot become a mesh.
    #[error("mesh {mesh:?} primitive {primitive}: {why}")]
    Primitive {
        /// Mesh name (or index).
        mesh: String,
        /// Primitive index in the mesh.
        primitive: usize,
        /// What was wrong.
        why: String,
    },
}

/// One entity an import makes (one per node and primitive; the name gets the primitive's index
/// when its mesh has several): the protocol's asset entity, with welded positions.
pub use meshwork_protocol::asset::AssetEntity as ImportedEntity;

/// Reads a glTF document. `external` supplies a buffer named by a relative URI (a `.gltf`'s
/// `.bin`); `None` refuses such a buffer.
///
/// # Errors
/// See [`ImportError`].
pub fn import(
    bytes: &[u8],
    external: &dyn Fn(&str) -> Option<Vec<u8>>,
    limits: &ImportLimits,
) -> Result<Vec<ImportedEntity>, ImportError> {
    if bytes.len() > limits.max_bytes {
        return Err(ImportError::TooLarge {
            bytes: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let not_gltf = |e: gltf::Error| ImportError::NotGltf(e.to_string());
    let gltf = gltf::Gltf::from_slice_without_validation(bytes).map_err(not_gltf)?;
    // gltf-json 1.4's validation indexes the accessors by a primitive's POSITION before it has
    // checked that index (a panic on a bad file): checked here first.
    let root = gltf.document.into_json();
    let accessors = root.accessors.len();
    for (m, mesh) in root.meshes.iter().enumerate() {
        for p in &mesh.primitives {
            let position = p.attributes.get(&gltf::json::validation::Checked::Valid(
                gltf::Semantic::Positions,
            ));
            if position.is_some_and(|a| a.value() >= accessors) {
                return Err(ImportError::NotGltf(format!(
                    "mesh {m} names a POSITION accessor past the {accessors} accessors"
                )));
            }
        }
    }
    let doc = &gltf::Document::from_json(root).map_err(not_gltf)?;
    let count = doc.nodes().count();
    if count > limits.max_nodes {
        return Err(ImportError::Limit {
            what: "nodes",
            count,
            limit: limits.max_nodes,
        });
    }
    let buffers = load_buffers(doc, gltf.blob, external, limits)?;
    check_views(doc, &buffers)?;
    let roots = roots(doc)?;
    let mut out = Vec::new();
    let mut triangles = 0usize;
    // Depth first, in file order (the stack pops the last pushed).
    let mut stack: Vec<(gltf::Node<'_>, Mat4)> = roots
        .into_iter()
        .rev()
        .map(|n| (n, Mat4::IDENTITY))
        .collect();
    let mut seen = BTreeSet::new();
    while let Some((node, parent)) = stack.pop() {
        if !seen.insert(node.index()) {
            return Err(ImportError::NodeGraph(node.index()));
        }
        let world = parent * Mat4::from_cols_array_2d(&node.transform().matrix());
        let children: Vec<_> = node.children().collect();
        for child in children.into_iter().rev() {
            stack.push((child, world));
        }
        let Some(mesh) = node.mesh() else { continue };
        let several = mesh.primitives().len() > 1;
        for primitive in mesh.primitives() {
            let entity = read_primitive(
                &node,
                &mesh,
                &primitive,
                several,
                world,
                &buffers,
                limits,
                &mut triangles,
            )?;
            if let Some(e) = entity {
                if out.len() >= limits.max_entities {
                    return Err(ImportError::Limit {
                        what: "entities",
                        count: out.len().saturating_add(1),
                        limit: limits.max_entities,
                    });
                }
                out.push(e);
            }
        }
    }
    Ok(out)
}

/// A `.gltf` whose buffers are beside it (`external` supplies them by relative name) or
/// embedded as `data:` URIs, repacked as one GLB: every buffer moves into the binary chunk
/// (4-byte aligned) and the buffer views are re-pointed. A GLB is returned as it is. This is how
/// a `.gltf` with its `.bin` travels as one upload.
///
/// # Errors
/// [`ImportError`] for a file that is not glTF, a buffer that cannot be read, or sizes over the
/// limits.
pub fn pack_glb(
    bytes: &[u8],
    external: &dyn Fn(&str) -> Option<Vec<u8>>,
    limits: &ImportLimits,
) -> Result<Vec<u8>, ImportError> {
    if bytes.starts_with(b"glTF") {
        return Ok(bytes.to_vec());
    }
    if bytes.len() > limits.max_bytes {
        return Err(ImportError::TooLarge {
            bytes: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let mut root: gltf::json::Root =
        serde_json::from_slice(bytes).map_err(|e| ImportError::NotGltf(e.to_string()))?;
    let mut bin: Vec<u8> = Vec::new();
    let mut bases = Vec::with_capacity(root.buffers.len());
    for (i, buffer) in root.buffers.iter().enumerate() {
        let bad = |why: String| ImportError::Buffer { buffer: i, why };
        let uri = buffer
            .uri
            .as_deref()
            .ok_or_else(|| bad("has no URI (only a GLB may carry a buffer without one)".into()))?;
        let data = read_uri(uri, external, limits).map_err(bad)?;
        let declared = usize::try_from(buffer.byte_length.0).unwrap_or(usize::MAX);
        if data.len() < declared {
            return Err(bad(format!(
                "declares {declared} bytes but holds {} (truncated)",
                data.len()
            )));
        }
        while !bin.len().is_multiple_of(4) {
            bin.push(0);
        }
        bases.push(bin.len());
        bin.extend_from_slice(data.get(..declared).unwrap_or_default());
        if bin.len() > limits.max_bytes {
            return Err(ImportError::TooLarge {
                bytes: bin.len(),
                limit: limits.max_bytes,
            });
        }
    }
    for view in &mut root.buffer_views {
        let base = bases
            .get(view.buffer.value())
            .copied()
            .ok_or_else(|| ImportError::Buffer {
                buffer: view.buffer.value(),
                why: "a buffer view names it, but there is no such buffer".into(),
            })?;
        let offset = view
            .byte_offset
            .map_or(0, |o| usize::try_from(o.0).unwrap_or(usize::MAX));
        view.byte_offset = Some(gltf::json::validation::USize64::from(
            base.saturating_add(offset),
        ));
        view.buffer = gltf::json::Index::new(0);
    }
    root.buffers = if bin.is_empty() {
        Vec::new()
    } else {
        vec![gltf::json::Buffer {
            byte_length: gltf::json::validation::USize64::from(bin.len()),
            name: None,
            uri: None,
            extensions: None,
            extras: None,
        }]
    };
    let json = root
        .to_vec()
        .map_err(|e| ImportError::NotGltf(e.to_string()))?;
    gltf::binary::Glb {
        header: gltf::binary::Header {
            magic: *b"glTF",
            version: 2,
            length: 0,
        },
        json: std::borrow::Cow::Owned(json),
        bin: (!bin.is_empty()).then_some(std::borrow::Cow::Owned(bin)),
    }
    .to_vec()
    .map_err(|e| ImportError::NotGltf(e.to_string()))
}

/// The buffers' bytes, each checked against its declared length.
fn load_buffers(
    doc: &gltf::Document,
    mut blob: Option<Vec<u8>>,
    external: &dyn Fn(&str) -> Option<Vec<u8>>,
    limits: &ImportLimits,
) -> Result<Vec<Vec<u8>>, ImportError> {
    let mut out = Vec::new();
    for buffer in doc.buffers() {
        let i = buffer.index();
        let bad = |why: String| ImportError::Buffer { buffer: i, why };
        if buffer.length() > limits.max_bytes {
            return Err(bad(format!(
                "declares {} bytes; at most {} may be imported",
                buffer.length(),
                limits.max_bytes
            )));
        }
        let data = match buffer.source() {
            // The one binary chunk is moved, not copied (a second reference to it is refused).
            gltf::buffer::Source::Bin => blob.take().ok_or_else(|| {
                bad("refers to the GLB binary chunk, which is missing or already used".into())
            })?,
            gltf::buffer::Source::Uri(uri) => read_uri(uri, external, limits).map_err(bad)?,
        };
        if data.len() < buffer.length() {
            return Err(bad(format!(
                "declares {} bytes but holds {} (truncated)",
                buffer.length(),
                data.len()
            )));
        }
        out.push(data);
    }
    Ok(out)
}

/// A buffer URI's bytes: a base64 `data:` URI, or a plain relative file name (no scheme, no
/// absolute path, no `..`) that `external` supplies.
fn read_uri(
    uri: &str,
    external: &dyn Fn(&str) -> Option<Vec<u8>>,
    limits: &ImportLimits,
) -> Result<Vec<u8>, String> {
    if let Some(rest) = uri.strip_prefix("data:") {
        let (_, payload) = rest
            .split_once(";base64,")
            .ok_or("a data URI that is not base64")?;
        // Base64 holds 3 bytes in 4 characters: the size is known before decoding.
        if payload.len() / 4 * 3 > limits.max_bytes {
            return Err(format!("a data URI over {} bytes", limits.max_bytes));
        }
        return base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|e| format!("a data URI that does not decode: {e}"));
    }
    // A URI reference: `my%20scene.bin` names the file `my scene.bin` (checked decoded, so
    // `%2e%2e/` is `../` too).
    let name = percent_encoding::percent_decode_str(uri)
        .decode_utf8()
        .map_err(|_| format!("{uri:?} is not a UTF-8 file name"))?;
    let outside = name.contains(':')
        || name.starts_with('/')
        || name.starts_with('\\')
        || name.split(['/', '\\']).any(|part| part == "..");
    if outside {
        return Err(format!(
            "{uri:?} points outside the upload (only data: URIs and relative names beside the file)"
        ));
    }
    let data = external(&name).ok_or_else(|| format!("{uri:?} was not supplied"))?;
    if data.len() > limits.max_bytes {
        return Err(format!("{uri:?} is over {} bytes", limits.max_bytes));
    }
    Ok(data)
}

/// Every buffer view inside its buffer, and every accessor inside its view.
fn check_views(doc: &gltf::Document, buffers: &[Vec<u8>]) -> Result<(), ImportError> {
    for accessor in doc.accessors() {
        let i = accessor.index();
        let bad = |why: String| ImportError::Accessor { accessor: i, why };
        if accessor.sparse().is_some() {
            return Err(bad("sparse accessors are not supported".into()));
        }
        let Some(view) = accessor.view() else {
            return Err(bad("has no buffer view".into()));
        };
        let data = buffers.get(view.buffer().index()).map_or(0, Vec::len);
        view.offset()
            .checked_add(view.length())
            .filter(|end| *end <= data)
            .ok_or_else(|| bad(format!("its view {} reaches past the buffer", view.index())))?;
        let size = accessor.size();
        let stride = view.stride().unwrap_or(size);
        if stride < size {
            return Err(bad(format!(
                "stride {stride} is smaller than an element ({size} bytes)"
            )));
        }
        let count = accessor.count();
        if count == 0 {
            return Err(bad("is empty".into()));
        }
        let end = count
            .saturating_sub(1)
            .checked_mul(stride)
            .and_then(|v| v.checked_add(size))
            .and_then(|v| v.checked_add(accessor.offset()));
        if end.is_none_or(|end| end > view.length()) {
            return Err(bad(format!("{count} elements reach past its view")));
        }
    }
    Ok(())
}

/// The nodes to start from: the default scene's (or the first scene's), else every node that
/// is nobody's child.
fn roots(doc: &gltf::Document) -> Result<Vec<gltf::Node<'_>>, ImportError> {
    if let Some(scene) = doc.default_scene().or_else(|| doc.scenes().next()) {
        return Ok(scene.nodes().collect());
    }
    let mut children = BTreeSet::new();
    for node in doc.nodes() {
        for child in node.children() {
            if !children.insert(child.index()) {
                return Err(ImportError::NodeGraph(child.index()));
            }
        }
    }
    Ok(doc
        .nodes()
        .filter(|n| !children.contains(&n.index()))
        .collect())
}

#[allow(clippy::too_many_arguments, reason = "one primitive's whole context")]
fn read_primitive(
    node: &gltf::Node<'_>,
    mesh: &gltf::Mesh<'_>,
    primitive: &gltf::Primitive<'_>,
    several: bool,
    world: Mat4,
    buffers: &[Vec<u8>],
    limits: &ImportLimits,
    triangles: &mut usize,
) -> Result<Option<ImportedEntity>, ImportError> {
    let mesh_name = mesh
        .name()
        .map_or_else(|| format!("#{}", mesh.index()), str::to_owned);
    let bad = |why: String| ImportError::Primitive {
        mesh: mesh_name.clone(),
        primitive: primitive.index(),
        why,
    };
    let mode = primitive.mode();
    if !matches!(
        mode,
        Mode::Triangles | Mode::TriangleStrip | Mode::TriangleFan
    ) {
        // Points and lines draw no surface: nothing to edit.
        return Ok(None);
    }
    let Some(positions) = primitive.get(&gltf::Semantic::Positions) else {
        return Err(bad("has no POSITION attribute".into()));
    };
    if positions.data_type() != DataType::F32 || positions.dimensions() != Dimensions::Vec3 {
        return Err(bad("POSITION is not float VEC3".into()));
    }
    let vertex_count = positions.count();
    let index_count = match primitive.indices() {
        Some(a) => {
            if a.dimensions() != Dimensions::Scalar
                || !matches!(a.data_type(), DataType::U8 | DataType::U16 | DataType::U32)
            {
                return Err(bad("indices are not unsigned integer scalars".into()));
            }
            a.count()
        }
        None => vertex_count,
    };
    let tris = match mode {
        Mode::Triangles => index_count / 3,
        _ => index_count.saturating_sub(2),
    };
    *triangles = triangles.saturating_add(tris);
    if *triangles > limits.max_triangles {
        return Err(ImportError::Limit {
            what: "triangles",
            count: *triangles,
            limit: limits.max_triangles,
        });
    }
    let reader = primitive.reader(|b| buffers.get(b.index()).map(Vec::as_slice));
    let corners: Vec<Vec3> = reader
        .read_positions()
        .ok_or_else(|| bad("POSITION cannot be read".into()))?
        .map(Vec3::from_array)
        .collect();
    if let Some(k) = corners.iter().position(|p| !p.is_finite()) {
        return Err(bad(format!("vertex {k} is not a finite position")));
    }
    let indices: Vec<u32> = match reader.read_indices() {
        Some(i) => i.into_u32().collect(),
        None => {
            (0..u32::try_from(vertex_count).map_err(|_| bad("too many vertices".into()))?).collect()
        }
    };
    if let Some(i) = indices
        .iter()
        .find(|i| usize::try_from(**i).map_or(true, |i| i >= vertex_count))
    {
        return Err(bad(format!(
            "index {i} is past the {vertex_count} vertices"
        )));
    }
    let tri_list = triangle_list(mode, &indices);
    let polygons = match declared_faces(primitive, tri_list.len()) {
        Some(sizes) => fans_to_polygons(&tri_list, &sizes)
            .ok_or_else(|| bad("its declared faces do not match its triangles".into()))?,
        None => tri_list.iter().map(|t| t.to_vec()).collect(),
    };
    let (positions, faces) = weld(&corners, &polygons);
    // Faces that collapsed (corners welded together) go, and so do the vertices only they used.
    let faces: Vec<Vec<u32>> = faces.into_iter().filter(|f| f.len() >= 3).collect();
    let (positions, faces) = drop_unused(&positions, faces);
    if faces.is_empty() {
        return Ok(None);
    }
    Mesh::from_polygons(&positions, &faces).map_err(|e| {
        bad(match e {
            MeshError::NonManifoldEdge(a, b) => format!(
                "not manifold: the edge {} -> {} is used twice in one direction (a non-manifold edge or flipped winding)",
                positions[a as usize], positions[b as usize]
            ),
            MeshError::NonManifoldVertex(v) => format!("not manifold at the vertex {}", positions[v as usize]),
            MeshError::BadFace(f) => format!("face {f} is degenerate (its corners coincide)"),
            MeshError::TooLarge => "too large".into(),
        })
    })?;
    let pbr = primitive.material().pbr_metallic_roughness();
    // A root's own translation, rotation and scale as written (exact); below a parent, the
    // composed matrix split again.
    let (scale, rotation, translation) = match node.transform() {
        gltf::scene::Transform::Decomposed {
            translation,
            rotation,
            scale,
        } if world == Mat4::from_cols_array_2d(&node.transform().matrix()) => (
            Vec3::from_array(scale),
            Quat::from_array(rotation),
            Vec3::from_array(translation),
        ),
        _ => world.to_scale_rotation_translation(),
    };
    let name = node
        .name()
        .map_or_else(|| format!("node {}", node.index()), str::to_owned);
    Ok(Some(ImportedEntity {
        name: if several {
            format!("{name} {}", primitive.index())
        } else {
            name
        },
        transform: Transform {
            translation,
            rotation: if rotation.is_finite() {
                rotation.normalize()
            } else {
                Quat::IDENTITY
            },
            scale,
        },
        color: Vec4::from_array(pbr.base_color_factor()),
        material: Material {
            metallic: pbr.metallic_factor(),
            roughness: pbr.roughness_factor(),
        },
        positions,
        faces,
    }))
}

/// Triangles of a primitive's indices in its mode (strips alternate their winding).
fn triangle_list(mode: Mode, indices: &[u32]) -> Vec<[u32; 3]> {
    match mode {
        Mode::TriangleStrip => indices
            .windows(3)
            .enumerate()
            .map(|(k, w)| {
                if k % 2 == 0 {
                    [w[0], w[1], w[2]]
                } else {
                    [w[1], w[0], w[2]]
                }
            })
            .collect(),
        Mode::TriangleFan => indices
            .get(1..)
            .unwrap_or_default()
            .windows(2)
            .map(|w| [indices[0], w[0], w[1]])
            .collect(),
        _ => indices
            .chunks_exact(3)
            .map(|t| [t[0], t[1], t[2]])
            .collect(),
    }
}

/// The face sizes a Meshwork export declares (`extras.meshwork.faces`: `[[corners, count], …]`).
fn declared_faces(primitive: &gltf::Primitive<'_>, triangles: usize) -> Option<Vec<usize>> {
    let extras = primitive.extras().as_ref()?;
    let value: serde_json::Value = serde_json::from_str(extras.get()).ok()?;
    let runs = value.get("meshwork")?.get("faces")?.as_array()?;
    let mut sizes = Vec::new();
    for run in runs {
        let n = usize::try_from(run.get(0)?.as_u64()?).ok()?;
        let count = usize::try_from(run.get(1)?.as_u64()?).ok()?;
        // Each face has at least one triangle: never more faces than the primitive's triangles
        // (checked before anything is allocated for them).
        if n < 3 || sizes.len().saturating_add(count) > triangles {
            return None;
        }
        sizes.extend(std::iter::repeat_n(n, count));
    }
    Some(sizes)
}

/// Faces of `sizes` corners from their fan triangles (corner 0 with each next pair, as the
/// export writes them): `None` when the triangles are not such fans.
fn fans_to_polygons(triangles: &[[u32; 3]], sizes: &[usize]) -> Option<Vec<Vec<u32>>> {
    let mut out = Vec::with_capacity(sizes.len().min(triangles.len()));
    let mut at = 0usize;
    for &n in sizes {
        let fan = triangles.get(at..at.checked_add(n.checked_sub(2)?)?)?;
        let mut face = vec![fan[0][0], fan[0][1], fan[0][2]];
        for pair in fan.windows(2) {
            if pair[1][0] != fan[0][0] || pair[1][1] != pair[0][2] {
                return None;
            }
            face.push(pair[1][2]);
        }
        out.push(face);
        at = at.saturating_add(n.saturating_sub(2));
    }
    (at == triangles.len()).then_some(out)
}

/// Only the vertices some face uses, in first-use order; faces re-indexed.
fn drop_unused(positions: &[Vec3], mut faces: Vec<Vec<u32>>) -> (Vec<Vec3>, Vec<Vec<u32>>) {
    let mut remap = vec![u32::MAX; positions.len()];
    let mut kept = Vec::new();
    for face in &mut faces {
        for v in face.iter_mut() {
            let slot = &mut remap[*v as usize];
            if *slot == u32::MAX {
                kept.push(positions[*v as usize]);
                *slot = u32::try_from(kept.len().saturating_sub(1)).unwrap_or(u32::MAX);
            }
            *v = *slot;
        }
    }
    (kept, faces)
}

/// Corners at bit-identical positions become one vertex (in first-use order); faces are
/// re-indexed and consecutive repeats dropped.
fn weld(corners: &[Vec3], polygons: &[Vec<u32>]) -> (Vec<Vec3>, Vec<Vec<u32>>) {
    let mut index: BTreeMap<[u32; 3], u32> = BTreeMap::new();
    let mut positions = Vec::new();
    let mut remap = vec![u32::MAX; corners.len()];
    let faces = polygons
        .iter()
        .map(|poly| {
            let mut face: Vec<u32> = Vec::with_capacity(poly.len());
            for &c in poly {
                let slot = &mut remap[c as usize];
                if *slot == u32::MAX {
                    let p = corners[c as usize];
                    // -0.0 and 0.0 are one place.
                    let key = (p + Vec3::ZERO).to_array().map(f32::to_bits);
                    *slot = *index.entry(key).or_insert_with(|| {
                        positions.push(p);
                        u32::try_from(positions.len().saturating_sub(1)).unwrap_or(u32::MAX)
                    });
                }
                if face.last() != Some(slot) {
                    face.push(*slot);
                }
            }
            if face.len() > 1 && face.first() == face.last() {
                face.pop();
            }
            face
        })
        .collect();
    (positions, faces)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

    use serde_json::{Value, json};

    use super::*;

    /// Accessors over one base64 `data:` buffer, for building test files.
    #[derive(Default)]
    struct Bin {
        bytes: Vec<u8>,
        views: Vec<Value>,
        accessors: Vec<Value>,
    }

    impl Bin {
        fn push(&mut self, data: Vec<u8>, accessor: Value) -> usize {
            let view = self.views.len();
            self.views.push(json!({
                "buffer": 0, "byteOffset": self.bytes.len(), "byteLength": data.len()
            }));
            self.bytes.extend(data);
            let mut a = accessor;
            a["bufferView"] = json!(view);
            self.accessors.push(a);
            self.accessors.len() - 1
        }

        fn positions(&mut self, p: &[[f32; 3]]) -> usize {
            let data = p.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
            self.push(
                data,
                json!({"componentType": 5126, "count": p.len(), "type": "VEC3",
                       "min": [-10.0, -10.0, -10.0], "max": [10.0, 10.0, 10.0]}),
            )
        }

        fn indices(&mut self, i: &[u32]) -> usize {
            let data = i.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.push(
                data,
                json!({"componentType": 5125, "count": i.len(), "type": "SCALAR"}),
            )
        }

        /// The file: `doc` with this buffer, its views and accessors.
        fn file(self, mut doc: Value) -> Value {
            let uri = format!(
                "data:application/octet-stream;base64,{}",
                base64::engine::general_purpose::STANDARD.encode(&self.bytes)
            );
            doc["asset"] = json!({"version": "2.0"});
            doc["buffers"] = json!([{"byteLength": self.bytes.len(), "uri": uri}]);
            doc["bufferViews"] = Value::Array(self.views);
            doc["accessors"] = Value::Array(self.accessors);
            doc
        }
    }

    /// A `.gltf` with one node drawing `indices` over `positions`, changed by `tweak` before it
    /// is written.
    fn doc(positions: &[[f32; 3]], indices: &[u32], tweak: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut bin = Bin::default();
        let p = bin.positions(positions);
        let i = bin.indices(indices);
        let mut v = bin.file(json!({
            "scene": 0,
            "scenes": [{"nodes": [0]}],
            "nodes": [{"name": "thing", "mesh": 0}],
            "meshes": [{"name": "m", "primitives": [{"attributes": {"POSITION": p}, "indices": i}]}],
        }));
        tweak(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    /// A tetrahedron: closed, manifold, four triangles.
    const TETRA: [[f32; 3]; 4] = [
        [0.0, 0.0, 0.0],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
    ];
    const TETRA_FACES: [u32; 12] = [0, 2, 1, 0, 1, 3, 0, 3, 2, 1, 2, 3];

    fn run(bytes: &[u8]) -> Result<Vec<ImportedEntity>, ImportError> {
        import(bytes, &|_| None, &ImportLimits::DEFAULT)
    }

    #[test]
    fn a_good_file_imports() {
        let got = run(&doc(&TETRA, &TETRA_FACES, |_| {})).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, "thing");
        assert_eq!((got[0].positions.len(), got[0].faces.len()), (4, 4));
    }

    #[test]
    fn bad_input_is_refused_naming_the_problem() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("not glTF", b"hello, world".to_vec(), "not a glTF file"),
            (
                "truncated JSON",
                doc(&TETRA, &TETRA_FACES, |_| {})[..80].to_vec(),
                "not a glTF file",
            ),
            (
                "a huge accessor count",
                doc(&TETRA, &TETRA_FACES, |v| {
                    v["accessors"][1]["count"] = json!(4_000_000_000u64)
                }),
                "reach past its view",
            ),
            (
                "a view past its buffer",
                doc(&TETRA, &TETRA_FACES, |v| {
                    v["bufferViews"][1]["byteLength"] = json!(1 << 20)
                }),
                "past the buffer",
            ),
            (
                "a buffer shorter than declared",
                doc(&TETRA, &TETRA_FACES, |v| {
                    v["buffers"][0]["byteLength"] = json!(1 << 20)
                }),
                "truncated",
            ),
            (
                // gltf-json's own validation panicked on this one (found by the mutation test).
                "a POSITION accessor that does not exist",
                doc(&TETRA, &TETRA_FACES, |v| {
                    v["meshes"][0]["primitives"][0]["attributes"]["POSITION"] = json!(9);
                }),
                "POSITION accessor past the 2 accessors",
            ),
            (
                "an out-of-range index",
                doc(&TETRA, &[0, 1, 7], |_| {}),
                "index 7 is past the 4 vertices",
            ),
            (
                "a NaN position",
                doc(
                    &[[0.0, 0.0, 0.0], [f32::NAN, 0.0, 0.0], [0.0, 1.0, 0.0]],
                    &[0, 1, 2],
                    |_| {},
                ),
                "vertex 1 is not a finite position",
            ),
            (
                "a cycle in the node graph",
                doc(&TETRA, &TETRA_FACES, |v| {
                    v["nodes"] = json!([{"mesh": 0, "children": [1]}, {"children": [0]}]);
                }),
                "reached twice",
            ),
            (
                "a URI outside the upload",
                doc(&TETRA, &TETRA_FACES, |v| {
                    v["buffers"][0]["uri"] = json!("../../etc/passwd")
                }),
                "points outside the upload",
            ),
            (
                "an escaped way out",
                doc(&TETRA, &TETRA_FACES, |v| {
                    v["buffers"][0]["uri"] = json!("%2e%2e/%2E%2E/etc/passwd");
                }),
                "points outside the upload",
            ),
            (
                "a file URI",
                doc(&TETRA, &TETRA_FACES, |v| {
                    v["buffers"][0]["uri"] = json!("file:///etc/passwd")
                }),
                "points outside the upload",
            ),
            (
                "a .bin that was not supplied",
                doc(&TETRA, &TETRA_FACES, |v| {
                    v["buffers"][0]["uri"] = json!("scene.bin")
                }),
                "was not supplied",
            ),
            (
                "three faces on one edge",
                doc(
                    &[
                        [0.0, 0.0, 0.0],
                        [1.0, 0.0, 0.0],
                        [0.0, 1.0, 0.0],
                        [0.0, -1.0, 0.0],
                        [0.0, 0.0, 1.0],
                    ],
                    &[0, 1, 2, 0, 1, 3, 0, 1, 4],
                    |_| {},
                ),
                "not manifold",
            ),
            (
                "positions that are not floats",
                doc(&TETRA, &TETRA_FACES, |v| {
                    v["accessors"][0]["componentType"] = json!(5123)
                }),
                "POSITION is not float VEC3",
            ),
        ];
        for (what, bytes, says) in cases {
            match run(&bytes) {
                Ok(got) => panic!("{what}: imported {} entities", got.len()),
                Err(e) => assert!(e.to_string().contains(says), "{what}: {e}"),
            }
        }
        // Limits: the size before anything is read, then the counts.
        let small = ImportLimits {
            max_bytes: 100,
            ..ImportLimits::DEFAULT
        };
        let e = import(&doc(&TETRA, &TETRA_FACES, |_| {}), &|_| None, &small).unwrap_err();
        assert!(matches!(e, ImportError::TooLarge { limit: 100, .. }), "{e}");
        let few = ImportLimits {
            max_triangles: 3,
            ..ImportLimits::DEFAULT
        };
        let e = import(&doc(&TETRA, &TETRA_FACES, |_| {}), &|_| None, &few).unwrap_err();
        assert!(
            matches!(
                e,
                ImportError::Limit {
                    what: "triangles",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn hierarchies_compose_and_primitives_become_entities() {
        let bytes = doc(&TETRA, &TETRA_FACES, |v| {
            v["nodes"] = json!([
                {"name": "parent", "translation": [1.0, 0.0, 0.0], "children": [1]},
                {"name": "child", "mesh": 0, "translation": [0.0, 2.0, 0.0], "scale": [2.0, 2.0, 2.0]}
            ]);
            let p = v["meshes"][0]["primitives"][0].clone();
            v["meshes"][0]["primitives"] = json!([p.clone(), p]);
        });
        let got = run(&bytes).unwrap();
        assert_eq!(got.len(), 2, "one entity per primitive");
        assert_eq!(got[0].name, "child 0");
        assert!((got[0].transform.translation - Vec3::new(1.0, 2.0, 0.0)).length() < 1e-6);
        assert!((got[0].transform.scale - Vec3::splat(2.0)).length() < 1e-6);
        // A strip of two triangles over shared corners: welded, one quad's worth of faces.
        let strip = doc(
            &[
                [0.0, 0.0, 0.0],
                [1.0, 0.0, 0.0],
                [0.0, 1.0, 0.0],
                [1.0, 1.0, 0.0],
            ],
            &[0, 1, 2, 3],
            |v| {
                v["meshes"][0]["primitives"][0]["mode"] = json!(5);
            },
        );
        let got = run(&strip).unwrap();
        assert_eq!((got[0].positions.len(), got[0].faces.len()), (4, 2));
    }

    /// Three files shaped like real ones: several meshes and materials (one mesh with a
    /// primitive per material); a node hierarchy three deep with rotations and scales; meshes
    /// and accessors shared (two nodes drawing one mesh, two primitives over one POSITION).
    #[test]
    fn real_world_shaped_files_import() {
        let quad_tetra = [
            [0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],
        ];
        // 1. Multi-mesh, multi-material.
        let mut bin = Bin::default();
        let p = bin.positions(&quad_tetra);
        let all = bin.indices(&TETRA_FACES);
        let half_a = bin.indices(&TETRA_FACES[..6]);
        let half_b = bin.indices(&TETRA_FACES[6..]);
        let file = bin.file(json!({
            "scene": 0,
            "scenes": [{"nodes": [0, 1]}],
            "nodes": [{"name": "body", "mesh": 0}, {"name": "trim", "mesh": 1, "translation": [3.0, 0.0, 0.0]}],
            "materials": [
                {"pbrMetallicRoughness": {"baseColorFactor": [1.0, 0.0, 0.0, 1.0], "metallicFactor": 0.0, "roughnessFactor": 0.9}},
                {"pbrMetallicRoughness": {"baseColorFactor": [0.0, 0.0, 1.0, 1.0], "metallicFactor": 1.0, "roughnessFactor": 0.2}},
                {"pbrMetallicRoughness": {"baseColorFactor": [0.0, 1.0, 0.0, 0.5]}}
            ],
            "meshes": [
                {"name": "body", "primitives": [{"attributes": {"POSITION": p}, "indices": all, "material": 0}]},
                {"name": "trim", "primitives": [
                    {"attributes": {"POSITION": p}, "indices": half_a, "material": 1},
                    {"attributes": {"POSITION": p}, "indices": half_b, "material": 2}
                ]}
            ]
        }));
        let got = run(&serde_json::to_vec(&file).unwrap()).unwrap();
        let names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["body", "trim 0", "trim 1"]);
        assert_eq!(got[0].color, Vec4::new(1.0, 0.0, 0.0, 1.0));
        assert_eq!(
            (got[1].material.metallic, got[1].material.roughness),
            (1.0, 0.2)
        );
        assert_eq!(got[2].color.w, 0.5);
        // An open shell is a mesh too: two faces of the tetrahedron, their three corners each.
        assert_eq!((got[1].faces.len(), got[1].positions.len()), (2, 4));
        assert_eq!(got[2].transform.translation, Vec3::new(3.0, 0.0, 0.0));

        // 2. A hierarchy: base → arm (turned 90° about Y, scaled 2) → hand (moved 1 along X).
        let mut bin = Bin::default();
        let p = bin.positions(&quad_tetra);
        let i = bin.indices(&TETRA_FACES);
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let file = bin.file(json!({
            "scenes": [{"nodes": [0]}],
            "nodes": [
                {"name": "base", "translation": [0.0, 1.0, 0.0], "children": [1]},
                {"name": "arm", "rotation": [0.0, s, 0.0, s], "scale": [2.0, 2.0, 2.0], "children": [2], "mesh": 0},
                {"name": "hand", "translation": [1.0, 0.0, 0.0], "mesh": 0}
            ],
            "meshes": [{"primitives": [{"attributes": {"POSITION": p}, "indices": i}]}]
        }));
        let got = run(&serde_json::to_vec(&file).unwrap()).unwrap();
        assert_eq!(got.len(), 2);
        let hand = &got[1];
        assert_eq!(hand.name, "hand");
        // (1, 0, 0) turned 90° about Y is (0, 0, -1), scaled by 2, raised by the base.
        assert!((hand.transform.translation - Vec3::new(0.0, 1.0, -2.0)).length() < 1e-5);
        assert!((hand.transform.scale - Vec3::splat(2.0)).length() < 1e-5);
        assert!(
            hand.transform
                .rotation
                .angle_between(Quat::from_rotation_y(std::f32::consts::FRAC_PI_2))
                < 1e-5
        );

        // 3. Shared: two nodes draw one mesh; its two primitives share one POSITION accessor.
        let mut bin = Bin::default();
        let p = bin.positions(&quad_tetra);
        let all = bin.indices(&TETRA_FACES);
        let file = bin.file(json!({
            "scenes": [{"nodes": [0, 1]}],
            "nodes": [{"name": "left", "mesh": 0}, {"name": "right", "mesh": 0, "translation": [2.0, 0.0, 0.0]}],
            "meshes": [{"primitives": [
                {"attributes": {"POSITION": p}, "indices": all},
                {"attributes": {"POSITION": p}, "indices": all}
            ]}]
        }));
        let got = run(&serde_json::to_vec(&file).unwrap()).unwrap();
        assert_eq!(got.len(), 4, "two nodes × two primitives");
        assert!(
            got.iter()
                .all(|e| e.faces.len() == 4 && e.positions.len() == 4)
        );
        assert_eq!(
            got[0].positions, got[3].positions,
            "one accessor, the same mesh"
        );
    }
}
