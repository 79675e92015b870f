//! Imported assets as a scene applies them: the entities the server read from an uploaded glTF
//! file (names, transforms, colours, materials, polygon meshes), stored by the file's SHA-256
//! and handed to the server's scenes ([`crate::scene::Scene::provide_asset`]) before a
//! [`crate::Command::Import`] that names it is applied. Replicas never need one: an import
//! reaches them as a scene delta.

use alloc::string::String;
use alloc::vec::Vec;

use glam::{Vec3, Vec4};
use serde::{Deserialize, Serialize};

use crate::command::{Material, Transform};

/// The entities of one imported file, in the file's node order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImportAsset {
    /// One per (node, primitive) that draws triangles.
    pub entities: Vec<AssetEntity>,
}

/// One entity of an import.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssetEntity {
    /// Display name.
    pub name: String,
    /// Scene-from-entity transform.
    pub transform: Transform,
    /// Base colour (linear RGBA).
    pub color: Vec4,
    /// Material.
    pub material: Material,
    /// Vertex positions (entity space).
    pub positions: Vec<Vec3>,
    /// Faces: corner loops of indices into `positions`, counter-clockwise.
    pub faces: Vec<Vec<u32>>,
}

impl ImportAsset {
    /// The canonical bytes (postcard), as the store keeps them.
    ///
    /// # Errors
    /// Only if postcard cannot write a value (it writes every value this type holds).
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(self)
    }

    /// Reads [`ImportAsset::encode`]'s bytes.
    ///
    /// # Errors
    /// Bytes that are not an encoded asset.
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }

    /// Triangles after fan triangulation, per entity.
    pub fn triangles(&self) -> impl Iterator<Item = u64> + '_ {
        self.entities.iter().map(|e| {
            e.faces
                .iter()
                .map(|f| f.len().saturating_sub(2) as u64)
                .fold(0, u64::saturating_add)
        })
    }
}

#[cfg(test)]
impl ImportAsset {
    /// A two-entity asset for tests: a tetrahedron and a quad-faced square pyramid.
    pub(crate) fn sample() -> Self {
        let shape = |name: &str, positions: Vec<Vec3>, faces: Vec<Vec<u32>>| AssetEntity {
            name: name.into(),
            transform: Transform {
                translation: Vec3::new(2.0, 0.0, 0.0),
                ..Transform::IDENTITY
            },
            color: Vec4::new(0.2, 0.4, 0.6, 1.0),
            material: Material {
                metallic: 0.0,
                roughness: 0.5,
            },
            positions,
            faces,
        };
        Self {
            entities: alloc::vec![
                shape(
                    "tetra",
                    alloc::vec![Vec3::ZERO, Vec3::X, Vec3::Y, Vec3::Z],
                    alloc::vec![
                        alloc::vec![0, 2, 1],
                        alloc::vec![0, 1, 3],
                        alloc::vec![0, 3, 2],
                        alloc::vec![1, 2, 3]
                    ],
                ),
                shape(
                    "pyramid",
                    alloc::vec![
                        Vec3::new(0.0, 0.0, 0.0),
                        Vec3::new(1.0, 0.0, 0.0),
                        Vec3::new(1.0, 0.0, 1.0),
                        Vec3::new(0.0, 0.0, 1.0),
                        Vec3::new(0.5, 1.0, 0.5)
                    ],
                    alloc::vec![
                        alloc::vec![0, 1, 2, 3],
                        alloc::vec![1, 0, 4],
                        alloc::vec![2, 1, 4],
                        alloc::vec![3, 2, 4],
                        alloc::vec![0, 3, 4]
                    ],
                ),
            ],
        }
    }
}
