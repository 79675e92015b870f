//! glTF 2.0 export of a session's scene: one node per entity (name, transform), one mesh per
//! edited geometry and one per primitive kind (shared by every unedited entity of that kind),
//! flat-shaded triangles with normals, one PBR metallic-roughness material per distinct colour
//! and material. Provenance travels in `asset.extras.meshwork`: the session, the log position the
//! scene is at, the scene's state hash, the log's state hash (what `verify-log` prints), the hash
//! chain head, the server key and the authors whose entries the log holds up to that position.
//!
//! Pure: a scene and its provenance in, a document and its binary buffer out; the callers (the
//! `export` command, the HTTP API) load the scene from the store. The same document is written as
//! GLB (one file) or as `.gltf` JSON naming a `.bin` beside it.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use gltf::json;
use json::validation::Checked::Valid;
use json::validation::USize64;
use meshwork_protocol::command::Primitive;
use meshwork_protocol::mesh::RenderMesh;
use meshwork_protocol::scene::{Entity, Geometry, Scene};
use meshwork_protocol::{AuthorId, EntityId, PublicKey, Role, SessionId};

/// Where an exported scene comes from (see the module docs).
#[derive(Clone, Debug)]
pub struct Provenance {
    /// The session.
    pub session: SessionId,
    /// Entries applied: the scene is the state after the first `position` entries.
    pub position: u64,
    /// `Scene::state_hash` of the exported scene (the whole scene, even for a selection).
    pub scene_state_hash: [u8; 32],
    /// The log's state hash at that position (what `verify-log` prints for it); `None` when the
    /// history before it was rotated out of the store (the hash covers every entry).
    pub log_state_hash: Option<[u8; 32]>,
    /// The hash chain after entry `position`.
    pub chain_head: [u8; 32],
    /// The server key that signs the chain's checkpoints.
    pub server_key: PublicKey,
    /// Authors with at least one entry up to `position`.
    pub authors: Vec<Contributor>,
}

impl Provenance {
    /// The provenance of a scene built in memory rather than read from a store: its session,
    /// position and state hash, and nothing a log would vouch for (zero hashes, no server key,
    /// no authors).
    #[must_use]
    pub fn unrecorded(scene: &Scene, session: SessionId) -> Self {
        Self {
            session,
            position: scene.position,
            scene_state_hash: scene.state_hash(),
            log_state_hash: Some([0; 32]),
            chain_head: [0; 32],
            server_key: PublicKey([0; 32]),
            authors: Vec::new(),
        }
    }
}

/// An author who contributed to the exported state.
#[derive(Clone, Debug)]
pub struct Contributor {
    /// Author id in the session.
    pub author: AuthorId,
    /// Their signing key.
    pub public_key: PublicKey,
    /// Their role when the log was read.
    pub role: Role,
    /// Entries of theirs up to the position.
    pub entries: u64,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A selected entity is not in the scene.
    #[error("{0} is not in the scene")]
    NoSuchEntity(EntityId),
    /// The document could not be written (a bug: every value written is finite and typed).
    #[error("writing the glTF document: {0}")]
    Write(String),
}

/// An exported document: the glTF JSON and its one binary buffer.
#[derive(Debug)]
pub struct Exported {
    root: json::Root,
    bin: Vec<u8>,
}

/// Bytes of the binary buffer (written by value, little-endian, 4-byte aligned throughout).
#[derive(Default)]
struct Bin {
    bytes: Vec<u8>,
    views: Vec<json::buffer::View>,
}

impl Bin {
    fn view(
        &mut self,
        data: impl Iterator<Item = [u8; 4]>,
        target: json::buffer::Target,
    ) -> json::Index<json::buffer::View> {
        let offset = self.bytes.len();
        for chunk in data {
            self.bytes.extend_from_slice(&chunk);
        }
        let length = self.bytes.len().saturating_sub(offset);
        json::Index::push(
            &mut self.views,
            json::buffer::View {
                buffer: json::Index::new(0),
                byte_length: USize64::from(length),
                byte_offset: Some(USize64::from(offset)),
                byte_stride: None,
                name: None,
                target: Some(Valid(target)),
                extensions: None,
                extras: None,
            },
        )
    }
}

fn accessor(
    view: json::Index<json::buffer::View>,
    count: usize,
    component: json::accessor::ComponentType,
    type_: json::accessor::Type,
    bounds: Option<([f32; 3], [f32; 3])>,
) -> json::Accessor {
    json::Accessor {
        buffer_view: Some(view),
        byte_offset: None,
        count: USize64::from(count),
        component_type: Valid(json::accessor::GenericComponentType(component)),
        extensions: None,
        extras: None,
        type_: Valid(type_),
        min: bounds.map(|(lo, _)| json::Value::from(lo.to_vec())),
        max: bounds.map(|(_, hi)| json::Value::from(hi.to_vec())),
        name: None,
        normalized: false,
        sparse: None,
    }
}

/// Appends one mesh of `render`'s triangles; `None` when it has none (glTF accessors may not
/// be empty, so such an entity exports as a node without a mesh).
fn push_mesh(
    root: &mut json::Root,
    bin: &mut Bin,
    render: &RenderMesh,
    material: json::Index<json::Material>,
    name: String,
) -> Option<json::Index<json::Mesh>> {
    if render.indices.is_empty() {
        return None;
    }
    let mut lo = [f32::INFINITY; 3];
    let mut hi = [f32::NEG_INFINITY; 3];
    for p in &render.positions {
        for k in 0..3 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    let floats = |v: &[[f32; 3]]| {
        v.iter()
            .flat_map(|p| p.iter().map(|x| x.to_le_bytes()))
            .collect::<Vec<_>>()
    };
    // glTF wants unit normals (the validator allows about 5e-6): renormalized here; a
    // degenerate face has none and gets +Y (it covers no area, nothing shows it).
    let normals: Vec<[f32; 3]> = render
        .normals
        .iter()
        .map(|n| {
            let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
            if len > 1e-6 {
                [n[0] / len, n[1] / len, n[2] / len]
            } else {
                [0.0, 1.0, 0.0]
            }
        })
        .collect();
    let array = json::buffer::Target::ArrayBuffer;
    let positions = bin.view(floats(&render.positions).into_iter(), array);
    let normal_view = bin.view(floats(&normals).into_iter(), array);
    let indices = bin.view(
        render.indices.iter().map(|i| i.to_le_bytes()),
        json::buffer::Target::ElementArrayBuffer,
    );
    let n = render.positions.len();
    let float = json::accessor::ComponentType::F32;
    let vec3 = json::accessor::Type::Vec3;
    let pos = root.push(accessor(positions, n, float, vec3, Some((lo, hi))));
    let nor = root.push(accessor(normal_view, n, float, vec3, None));
    let idx = root.push(accessor(
        indices,
        render.indices.len(),
        json::accessor::ComponentType::U32,
        json::accessor::Type::Scalar,
        None,
    ));
    // The polygons behind the triangles, for Meshwork's import (other tools ignore extras).
    let faces = serde_json::value::to_raw_value(&serde_json::json!({
        "meshwork": { "faces": face_runs(render) }
    }))
    .ok();
    let primitive = json::mesh::Primitive {
        attributes: BTreeMap::from([
            (Valid(json::mesh::Semantic::Positions), pos),
            (Valid(json::mesh::Semantic::Normals), nor),
        ]),
        extensions: None,
        extras: faces,
        indices: Some(idx),
        material: Some(material),
        mode: Valid(json::mesh::Mode::Triangles),
        targets: None,
    };
    Some(root.push(json::Mesh {
        extensions: None,
        extras: None,
        name: Some(name),
        primitives: vec![primitive],
        weights: None,
    }))
}

/// The face sizes of a fan-triangulated mesh (each face's corners written in a run, its
/// triangles `(b, b+i, b+i+1)`), run-length encoded: `[[corners, faces], …]` in face order.
fn face_runs(render: &RenderMesh) -> Vec<[usize; 2]> {
    let mut starts: Vec<usize> = Vec::new();
    for t in render.indices.chunks_exact(3) {
        let base = t[0] as usize;
        if starts.last() != Some(&base) {
            starts.push(base);
        }
    }
    let mut runs: Vec<[usize; 2]> = Vec::new();
    for (k, start) in starts.iter().enumerate() {
        let end = starts
            .get(k.saturating_add(1))
            .copied()
            .unwrap_or(render.positions.len());
        let n = end.saturating_sub(*start);
        match runs.last_mut() {
            Some([size, count]) if *size == n => *count = count.saturating_add(1),
            _ => runs.push([n, 1]),
        }
    }
    runs
}

/// The material of an entity, shared by every entity with the same values.
fn material_of(
    root: &mut json::Root,
    known: &mut BTreeMap<[u32; 6], json::Index<json::Material>>,
    e: &Entity,
) -> json::Index<json::Material> {
    let c = e.color.value;
    let m = e.material.value;
    let key = [
        c.x.to_bits(),
        c.y.to_bits(),
        c.z.to_bits(),
        c.w.to_bits(),
        m.metallic.to_bits(),
        m.roughness.to_bits(),
    ];
    if let Some(i) = known.get(&key) {
        return *i;
    }
    let opaque = c.w >= 1.0;
    let material = json::Material {
        alpha_mode: Valid(if opaque {
            json::material::AlphaMode::Opaque
        } else {
            json::material::AlphaMode::Blend
        }),
        name: Some(format!("material {}", known.len())),
        pbr_metallic_roughness: json::material::PbrMetallicRoughness {
            base_color_factor: json::material::PbrBaseColorFactor([c.x, c.y, c.z, c.w]),
            metallic_factor: json::material::StrengthFactor(m.metallic),
            roughness_factor: json::material::StrengthFactor(m.roughness),
            ..Default::default()
        },
        ..Default::default()
    };
    let i = root.push(material);
    known.insert(key, i);
    i
}

/// An entity id as the editor and the node extras write it: `entity#<hex>`, or the bare hex.
///
/// # Errors
/// Anything else, with the text.
pub fn parse_entity_id(text: &str) -> Result<EntityId, String> {
    let hex_id = text.trim().trim_start_matches("entity#");
    u64::from_str_radix(hex_id, 16)
        .map(EntityId)
        .map_err(|_| format!("bad entity id {text:?} (expected entity#<hex>)"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Editor => "editor",
        Role::Admin => "admin",
    }
}

/// The provenance object of `asset.extras`.
fn provenance_json(p: &Provenance) -> serde_json::Value {
    let authors: Vec<serde_json::Value> = p
        .authors
        .iter()
        .map(|a| {
            serde_json::json!({
                "author": a.author.0,
                "publicKey": hex(&a.public_key.0),
                "role": role_name(a.role),
                "entries": a.entries,
            })
        })
        .collect();
    serde_json::json!({
        "meshwork": {
            "session": p.session.to_string(),
            "position": p.position,
            "sceneStateHash": hex(&p.scene_state_hash),
            "logStateHash": p.log_state_hash.as_ref().map(|h| hex(h)),
            "chainHead": hex(&p.chain_head),
            "serverKey": hex(&p.server_key.0),
            "authors": authors,
        }
    })
}

/// Exports `scene` (or the entities in `only`, in id order) with its provenance.
///
/// # Errors
/// A selected entity that is not in the scene; a document that cannot be serialised.
pub fn export(
    scene: &Scene,
    only: Option<&[EntityId]>,
    provenance: &Provenance,
) -> Result<Exported, ExportError> {
    let chosen: Option<BTreeSet<EntityId>> = only.map(|ids| ids.iter().copied().collect());
    if let Some(ids) = &chosen
        && let Some(missing) = ids.iter().find(|id| !scene.entities.contains_key(id))
    {
        return Err(ExportError::NoSuchEntity(*missing));
    }
    let extras = serde_json::value::to_raw_value(&provenance_json(provenance))
        .map_err(|e| ExportError::Write(e.to_string()))?;
    let mut root = json::Root {
        asset: json::Asset {
            generator: Some(format!("Meshwork {}", env!("CARGO_PKG_VERSION"))),
            extras: Some(extras),
            ..json::Asset::default()
        },
        ..json::Root::default()
    };
    let mut bin = Bin::default();
    let mut materials = BTreeMap::new();
    // Unedited primitives share one mesh per kind and material.
    let mut shared: BTreeMap<(u8, usize), Option<json::Index<json::Mesh>>> = BTreeMap::new();
    let mut nodes = Vec::new();
    for (id, e) in &scene.entities {
        if chosen.as_ref().is_some_and(|c| !c.contains(id)) {
            continue;
        }
        let material = material_of(&mut root, &mut materials, e);
        let mesh = match &e.geometry {
            Geometry::Primitive(p) => *shared
                .entry((primitive_tag(*p), material.value()))
                .or_insert_with(|| {
                    push_mesh(
                        &mut root,
                        &mut bin,
                        &e.geometry.render(),
                        material,
                        format!("{p:?}"),
                    )
                }),
            Geometry::Mesh(_) => push_mesh(
                &mut root,
                &mut bin,
                &e.geometry.render(),
                material,
                format!("{id} mesh"),
            ),
        };
        let t = &e.transform;
        let name = if e.name.value.is_empty() {
            id.to_string()
        } else {
            e.name.value.clone()
        };
        let node_extras = serde_json::value::to_raw_value(&serde_json::json!({
            "meshwork": { "entity": id.to_string() }
        }))
        .map_err(|err| ExportError::Write(err.to_string()))?;
        nodes.push(root.push(json::Node {
            mesh,
            name: Some(name),
            translation: Some(t.translation.to_array()),
            // The session accepts rotations within 1e-3 of unit length; glTF wants them
            // within about 5e-6.
            rotation: Some(json::scene::UnitQuaternion(
                t.rotation.normalize().to_array(),
            )),
            scale: Some(t.scale.to_array()),
            extras: Some(node_extras),
            ..json::Node::default()
        }));
    }
    let scene_index = root.push(json::Scene {
        extensions: None,
        extras: None,
        name: Some(format!("session {}", provenance.session)),
        nodes,
    });
    root.scene = Some(scene_index);
    root.buffer_views = bin.views;
    if !bin.bytes.is_empty() {
        root.buffers.push(json::Buffer {
            byte_length: USize64::from(bin.bytes.len()),
            name: None,
            uri: None,
            extensions: None,
            extras: None,
        });
    }
    Ok(Exported {
        root,
        bin: bin.bytes,
    })
}

const fn primitive_tag(p: Primitive) -> u8 {
    match p {
        Primitive::Cube => 0,
        Primitive::Pyramid => 1,
        Primitive::Plane => 2,
        Primitive::Cylinder => 3,
        Primitive::Sphere => 4,
    }
}

/// What a relative URI reference made of one file name must escape: everything but RFC 3986's
/// unreserved characters.
const URI_ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl Exported {
    /// The document as one GLB file.
    ///
    /// # Errors
    /// A document that cannot be serialised.
    pub fn to_glb(&self) -> Result<Vec<u8>, ExportError> {
        let json = self
            .root
            .to_vec()
            .map_err(|e| ExportError::Write(e.to_string()))?;
        let glb = gltf::binary::Glb {
            header: gltf::binary::Header {
                magic: *b"glTF",
                version: 2,
                length: 0, // computed by the writer
            },
            json: Cow::Owned(json),
            bin: (!self.bin.is_empty()).then_some(Cow::Borrowed(self.bin.as_slice())),
        };
        glb.to_vec().map_err(|e| ExportError::Write(e.to_string()))
    }

    /// The document as `.gltf` JSON whose buffer is the file named `bin_uri` beside it (escaped
    /// into a URI reference), and the bytes of that file.
    ///
    /// # Errors
    /// A document that cannot be serialised.
    pub fn to_gltf(&self, bin_uri: &str) -> Result<(Vec<u8>, &[u8]), ExportError> {
        let mut root = self.root.clone();
        if let Some(b) = root.buffers.first_mut() {
            // A URI reference: `#`, `?`, spaces and the like in a file name must be escaped.
            b.uri = Some(percent_encoding::utf8_percent_encode(bin_uri, URI_ESCAPE).to_string());
        }
        let json = root
            .to_vec_pretty()
            .map_err(|e| ExportError::Write(e.to_string()))?;
        Ok((json, &self.bin))
    }
}

/// The scene of a stored session after its first `at` entries (all when `None`), with its
/// provenance: the log replayed from the newest snapshot that `at` covers (or the signed base,
/// where older history was rotated out), the chain walked to `at`. The entries stream from the
/// store into a replay holding `window` of them at most, so a long log exports in the memory
/// of its window; the provenance's log state hash is there when nothing was let go.
///
/// # Errors
/// No such session; a position past the end of the log or before its stored start; a log that
/// does not replay.
pub fn scene_at(
    store: &dyn crate::store::Store,
    session: SessionId,
    server_key: PublicKey,
    at: Option<u64>,
    window: usize,
) -> Result<(Scene, Provenance), String> {
    use crate::store::log;
    let mut loaded = log::load_meta(store, session).map_err(|e| e.to_string())?;
    let from = loaded.base.as_ref().map_or(0, |b| b.position);
    let upto = at.unwrap_or(u64::MAX);
    if upto < from {
        return Err(format!(
            "position {upto} is before entry {from}, where the history left in the store \
             starts (the older part was rotated into an archive)"
        ));
    }
    let exists = loaded.record.is_some() || loaded.base.is_some();
    let mut config = meshwork_session::Config::new(session, server_key);
    config.log_window = window;
    let mut restoring = log::start_replay(&mut loaded, config, [0; 32], 0, Some(upto));
    let mut counts: BTreeMap<AuthorId, u64> = BTreeMap::new();
    log::scan_entries_to(store, session, &mut loaded, upto, &mut |_, e| {
        if let Ok(body) = e.decode_body() {
            let n = counts.entry(body.author).or_default();
            *n = n.saturating_add(1);
        }
        restoring
            .push(e)
            .map_err(|e| format!("does not replay: {}", e.refusal))
    })
    .map_err(|e| e.to_string())?;
    if !exists && loaded.count == 0 {
        return Err(format!("no session {session} in the store"));
    }
    let position = at.unwrap_or(loaded.count);
    if position > loaded.count {
        return Err(format!(
            "position {position} is past the end of the log ({} entries)",
            loaded.count
        ));
    }
    let chain_head = loaded.head;
    let replayed = restoring
        .finish()
        .map_err(|e| format!("entry {} does not replay: {}", e.position, e.refusal))?
        .0;
    let scene = replayed.scene().clone();
    let authors = loaded
        .authors
        .iter()
        .filter_map(|a| {
            counts.get(&a.author).map(|n| Contributor {
                author: a.author,
                public_key: a.public_key,
                role: a.role,
                entries: *n,
            })
        })
        .collect();
    let provenance = Provenance {
        session,
        position,
        scene_state_hash: scene.state_hash(),
        log_state_hash: replayed.log().state_hash(),
        chain_head,
        server_key,
        authors,
    };
    Ok((scene, provenance))
}
