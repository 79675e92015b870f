//! Asset uploads: a glTF file sent in chunks over HTTP, resumable after a dropped connection,
//! each chunk and the whole file checked against SHA-256, then read by [`crate::import`] and
//! stored once per session by the file's hash (tree `assets`), ready for `Command::Import`.
//!
//! The protocol (`docs/protocol.md`, "Assets and import"), for a member with an editor ticket
//! or the admin:
//! - `GET /api/v1/sessions/{id}/assets/{sha256}`: `{received, length, complete, …}`, so a client
//!   knows where to resume (404 when nothing of it is known).
//! - `PUT /api/v1/sessions/{id}/assets/{sha256}` with `Upload-Offset` (where this chunk starts:
//!   what the server said it has), `Upload-Length` (the whole file), `X-Chunk-Sha256` (this
//!   chunk's hash) and the chunk (at most [`MAX_CHUNK_BYTES`]). The last chunk makes the server
//!   check the whole file's hash, read it and store it; the answer then lists its entities.
//!
//! Partial uploads are held in memory (a dropped connection resumes; a server restart starts
//! the upload again), at most [`PARTIAL_BYTES_FACTOR`] × the file limit in all, the longest idle
//! dropped first, and dropped after [`PARTIAL_IDLE`] without a chunk.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use meshwork_protocol::asset::{AssetEntity, ImportAsset};
use meshwork_protocol::command::AssetId;
use meshwork_protocol::{AuthorId, Command, CommandId, EntityId, SessionId};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::import::{ImportError, ImportLimits, ImportedEntity};

/// Largest chunk one `PUT` may carry.
pub const MAX_CHUNK_BYTES: usize = 4 << 20;

/// Partial uploads may hold this many times the file limit in memory, in all.
pub const PARTIAL_BYTES_FACTOR: usize = 2;

/// A partial upload without a chunk for this long is dropped.
pub const PARTIAL_IDLE: Duration = Duration::from_secs(600);

/// What the server knows of one asset of a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AssetStatus {
    /// Bytes received so far (the whole length once complete).
    pub received: usize,
    /// The whole file's length.
    pub length: usize,
    /// Stored and importable.
    pub complete: bool,
    /// Once complete: the entities an import makes, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entities: Vec<EntitySummary>,
}

/// One entity of a stored asset, as the upload's answer lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EntitySummary {
    /// Its name.
    pub name: String,
    /// Vertices of its mesh.
    pub vertices: usize,
    /// Faces of its mesh.
    pub faces: usize,
}

impl UploadError {
    /// The `outcome` label of `meshwork_asset_chunks_total`.
    #[must_use]
    pub const fn outcome(&self) -> &'static str {
        match self {
            Self::Offset { .. } => "offset",
            Self::ChunkHash => "chunk_hash",
            Self::FileHash(_) => "file_hash",
            Self::TooLarge(_) => "too_large",
            Self::TooMany(_) => "too_many",
            Self::Length(_) => "length",
            Self::Import(_) | Self::Empty | Self::Entity { .. } => "unreadable",
            Self::Store(_) | Self::Busy => "store",
        }
    }
}

/// Why a chunk was not taken.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The chunk does not start where the server's copy ends.
    #[error(
        "this chunk starts at byte {offset}, but the server has {received} bytes: resume there"
    )]
    Offset {
        /// Where it started.
        offset: usize,
        /// What the server has.
        received: usize,
    },
    /// The chunk's bytes do not hash to its `X-Chunk-Sha256`.
    #[error("the chunk's bytes do not match its SHA-256 (damaged in transit); send it again")]
    ChunkHash,
    /// The whole file does not hash to its name.
    #[error(
        "the whole file's SHA-256 is {0}, not the one it was uploaded as; the upload was dropped"
    )]
    FileHash(String),
    /// Over a limit.
    #[error("{0}")]
    TooLarge(String),
    /// The session holds as many assets as it may.
    #[error("this session already holds {0} imported files, its limit")]
    TooMany(usize),
    /// `Upload-Length` changed between chunks, or the chunk runs past it.
    #[error("{0}")]
    Length(String),
    /// The file is not an importable glTF file.
    #[error("{0}")]
    Import(#[from] ImportError),
    /// The file was read but holds nothing to import.
    #[error("the file holds no triangle meshes")]
    Empty,
    /// An object of the file cannot go into this session as it is.
    #[error("the object {name:?} {why}")]
    Entity {
        /// Its name.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// The server holds as many partial uploads as it may: retry later.
    #[error("the server holds too many partial uploads; retry in a minute")]
    Busy,
    /// The store did not take it.
    #[error("storing the asset failed: {0}")]
    Store(String),
}

#[derive(Debug)]
struct Partial {
    length: usize,
    bytes: Vec<u8>,
    touched: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    partial: BTreeMap<(SessionId, AssetId), Partial>,
    stored: BTreeMap<SessionId, BTreeMap<AssetId, AssetStatus>>,
}

/// Uploads in progress and the assets each session holds.
#[derive(Debug, Default)]
pub struct Assets {
    inner: Mutex<Inner>,
}

/// What a taken chunk led to.
#[derive(Debug)]
pub enum Appended {
    /// More to come: this many bytes are in.
    More(usize),
    /// The last chunk: the whole file (no longer held as a partial upload).
    Whole(Vec<u8>),
    /// Already stored: nothing to do.
    Stored(AssetStatus),
}

impl Assets {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What is known of `asset` in `session`.
    #[must_use]
    pub fn status(&self, session: SessionId, asset: AssetId) -> Option<AssetStatus> {
        let inner = self.lock();
        if let Some(done) = inner.stored.get(&session).and_then(|m| m.get(&asset)) {
            return Some(done.clone());
        }
        inner.partial.get(&(session, asset)).map(|p| AssetStatus {
            received: p.bytes.len(),
            length: p.length,
            complete: false,
            entities: Vec::new(),
        })
    }

    /// Records a stored asset (at start-up, and when an upload completes).
    pub fn note_stored(&self, session: SessionId, id: AssetId, asset: &ImportAsset, length: usize) {
        let status = AssetStatus {
            received: length,
            length,
            complete: true,
            entities: asset
                .entities
                .iter()
                .map(|e| EntitySummary {
                    name: e.name.clone(),
                    vertices: e.positions.len(),
                    faces: e.faces.len(),
                })
                .collect(),
        };
        self.lock()
            .stored
            .entry(session)
            .or_default()
            .insert(id, status);
    }

    /// Takes one chunk of `asset` (see the module docs). `max_bytes` bounds the file,
    /// `max_assets` the session's stored assets.
    ///
    /// # Errors
    /// [`UploadError`]: the chunk changed nothing.
    #[allow(clippy::too_many_arguments, reason = "one chunk's whole context")]
    pub fn append(
        &self,
        session: SessionId,
        asset: AssetId,
        offset: usize,
        length: usize,
        chunk: &[u8],
        chunk_sha256: [u8; 32],
        max_bytes: usize,
        max_assets: usize,
    ) -> Result<Appended, UploadError> {
        let mut inner = self.lock();
        if let Some(done) = inner.stored.get(&session).and_then(|m| m.get(&asset)) {
            return Ok(Appended::Stored(done.clone()));
        }
        let held = inner.stored.get(&session).map_or(0, BTreeMap::len);
        if held >= max_assets {
            return Err(UploadError::TooMany(held));
        }
        if length > max_bytes {
            return Err(UploadError::TooLarge(format!(
                "the file is {length} bytes; this server imports at most {max_bytes}"
            )));
        }
        if chunk.len() > MAX_CHUNK_BYTES {
            return Err(UploadError::TooLarge(format!(
                "a chunk may be at most {MAX_CHUNK_BYTES} bytes"
            )));
        }
        if <[u8; 32]>::from(Sha256::digest(chunk)) != chunk_sha256 {
            return Err(UploadError::ChunkHash);
        }
        let now = Instant::now();
        inner
            .partial
            .retain(|_, p| now.duration_since(p.touched) < PARTIAL_IDLE);
        let key = (session, asset);
        let received = inner.partial.get(&key).map_or(0, |p| p.bytes.len());
        if offset != received {
            return Err(UploadError::Offset { offset, received });
        }
        if let Some(p) = inner.partial.get(&key)
            && p.length != length
        {
            return Err(UploadError::Length(format!(
                "Upload-Length was {} for the earlier chunks, now {length}",
                p.length
            )));
        }
        let end = offset.saturating_add(chunk.len());
        if end > length {
            return Err(UploadError::Length(format!(
                "the chunk ends at byte {end}, past Upload-Length {length}"
            )));
        }
        // Memory for partial uploads is bounded: the longest idle ones give way.
        let budget = max_bytes.saturating_mul(PARTIAL_BYTES_FACTOR);
        loop {
            let total: usize = inner.partial.values().map(|p| p.bytes.len()).sum();
            if total.saturating_add(chunk.len()) <= budget {
                break;
            }
            let oldest = inner
                .partial
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, p)| p.touched)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => {
                    inner.partial.remove(&k);
                }
                None => return Err(UploadError::Busy),
            }
        }
        let p = inner.partial.entry(key).or_insert_with(|| Partial {
            length,
            bytes: Vec::new(),
            touched: now,
        });
        p.bytes.extend_from_slice(chunk);
        p.touched = now;
        if p.bytes.len() < length {
            return Ok(Appended::More(p.bytes.len()));
        }
        let whole = inner
            .partial
            .remove(&key)
            .map(|p| p.bytes)
            .unwrap_or_default();
        Ok(Appended::Whole(whole))
    }
}

/// Checks a whole upload against its name and reads it into an asset (CPU work: run it off the
/// async workers).
///
/// # Errors
/// [`UploadError::FileHash`], [`UploadError::Import`], [`UploadError::Empty`].
pub fn read_upload(
    asset: AssetId,
    bytes: &[u8],
    max_bytes: usize,
    scene_limits: &meshwork_protocol::scene::Limits,
) -> Result<ImportAsset, UploadError> {
    let hash: [u8; 32] = Sha256::digest(bytes).into();
    if hash != asset.0 {
        return Err(UploadError::FileHash(hex::encode(hash)));
    }
    let limits = ImportLimits {
        max_bytes,
        ..ImportLimits::DEFAULT
    };
    let entities = crate::import::import(bytes, &|_| None, &limits)?;
    if entities.is_empty() {
        return Err(UploadError::Empty);
    }
    let entities = entities
        .into_iter()
        .map(to_asset_entity)
        .collect::<Result<Vec<_>, _>>()?;
    let asset = ImportAsset { entities };
    // What an `Import` would refuse is refused now, before the file takes a slot.
    for (e, triangles) in asset.entities.iter().zip(asset.triangles()) {
        if triangles > scene_limits.mesh_triangles {
            return Err(UploadError::Entity {
                name: e.name.clone(),
                why: format!(
                    "has {triangles} triangles; a mesh in this session may have at most {}",
                    scene_limits.mesh_triangles
                ),
            });
        }
        // The very check `Import` applies: a mesh it could not build is refused now.
        let mut ids = meshwork_protocol::editmesh::IdSource::new(CommandId::default());
        if let Err(why) =
            meshwork_protocol::editmesh::EditMesh::from_polygons(&e.positions, &e.faces, &mut ids)
        {
            return Err(UploadError::Entity {
                name: e.name.clone(),
                why: format!("cannot be a mesh here: {why}"),
            });
        }
        let far = meshwork_protocol::command::MAX_COORDINATE_M;
        if e.positions.iter().any(|p| p.abs().max_element() > far) {
            return Err(UploadError::Entity {
                name: e.name.clone(),
                why: format!("has vertices more than {far} m from its origin"),
            });
        }
    }
    let total = asset.triangles().fold(0u64, u64::saturating_add);
    if total > scene_limits.session_triangles {
        return Err(UploadError::TooLarge(format!(
            "the file has {total} triangles; a session may hold at most {}",
            scene_limits.session_triangles
        )));
    }
    Ok(asset)
}

/// An imported entity as the scene takes it: its transform must pass the same guard a
/// `SetTransform` does (finite, within range, no zero scale).
fn to_asset_entity(e: ImportedEntity) -> Result<AssetEntity, UploadError> {
    let guard = Command::SetTransform {
        entity: EntityId::new(AuthorId(0), 0),
        transform: e.transform,
    };
    guard
        .validate(AuthorId(0))
        .map_err(|why| UploadError::Entity {
            name: e.name.clone(),
            why: format!("has a transform that cannot be used: {why}"),
        })?;
    let mut name = e.name;
    if name.len() > meshwork_protocol::command::MAX_NAME_BYTES {
        let mut cut = meshwork_protocol::command::MAX_NAME_BYTES;
        while !name.is_char_boundary(cut) {
            cut = cut.saturating_sub(1);
        }
        name.truncate(cut);
    }
    // glTF factors are 0..1; a file with others is clamped, not refused.
    let unit = |v: f32| {
        if v.is_finite() {
            v.clamp(0.0, 1.0)
        } else {
            1.0
        }
    };
    Ok(AssetEntity {
        name,
        color: glam::Vec4::from_array(e.color.to_array().map(unit)),
        material: meshwork_protocol::Material {
            metallic: unit(e.material.metallic),
            roughness: unit(e.material.roughness),
        },
        ..e
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

    use meshwork_protocol::command::{Primitive, Transform};
    use meshwork_protocol::scene::{Limits, Scene};
    use meshwork_protocol::{CommandId, SessionId};

    use super::*;

    /// A GLB of one sphere (224 triangles), its first vertex moved to `far` metres along X.
    fn sphere_glb(far: f32) -> Vec<u8> {
        let author = AuthorId(1);
        let e = EntityId::new(author, 1);
        let mut s = Scene::new();
        let id = |lamport| CommandId { lamport, author };
        let spawn = Command::Spawn {
            entity: e,
            primitive: Primitive::Sphere,
            transform: Transform::IDENTITY,
        };
        s.try_apply(id(1), author, &spawn, &Limits::NONE).unwrap();
        let v = *s.entities[&e]
            .geometry
            .edit_mesh(s.entities[&e].spawned_by)
            .vertices()
            .keys()
            .next()
            .unwrap();
        let moved = Command::MoveVertices {
            entity: e,
            moves: vec![(v, glam::Vec3::new(far, 0.0, 0.0))],
        };
        s.try_apply(id(2), author, &moved, &Limits::NONE).unwrap();
        let provenance = crate::export::Provenance::unrecorded(&s, SessionId([1; 16]));
        crate::export::export(&s, None, &provenance)
            .unwrap()
            .to_glb()
            .unwrap()
    }

    fn read(glb: &[u8], limits: &Limits) -> Result<ImportAsset, UploadError> {
        read_upload(AssetId(Sha256::digest(glb).into()), glb, 1 << 30, limits)
    }

    #[test]
    fn an_upload_the_session_could_not_import_is_refused_at_once() {
        let near = sphere_glb(0.6);
        assert_eq!(read(&near, &Limits::DEFAULT).unwrap().entities.len(), 1);
        let small = Limits {
            mesh_triangles: 100,
            session_triangles: 1000,
        };
        let e = read(&near, &small).unwrap_err();
        assert!(e.to_string().contains("has 224 triangles"), "{e}");
        assert_eq!(e.outcome(), "unreadable");
        let e = read(&sphere_glb(2.0e5), &Limits::DEFAULT).unwrap_err();
        assert!(e.to_string().contains("more than 100000 m"), "{e}");
        // The name it is uploaded under must be its hash.
        let e = read_upload(AssetId([0; 32]), &near, 1 << 30, &Limits::DEFAULT).unwrap_err();
        assert!(matches!(e, UploadError::FileHash(_)), "{e}");
    }
}
