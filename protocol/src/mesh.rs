//! Half-edge meshes: the topology every mesh edit works on, the five primitives a spawn starts
//! from, an invariant checker, and triangulation for rendering.
//!
//! Representation: every edge is two half-edges (`twin`s). A half-edge on the border of the
//! surface has no face (`face: None`); border half-edges link into boundary loops through
//! `next`/`prev` like face loops do, so walking is uniform. Ids are indices; nothing is ever
//! removed in place (edits append), which keeps ids stable and encodings canonical.
//!
//! Winding: faces are counter-clockwise seen from outside (right-handed, +Y up).

#![allow(
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    reason = "geometry on glam types; index arithmetic and casts are bounded: meshes are built \
              through from_polygons (u32-checked) and decoded ones come from frames under 1 MiB"
)]

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use glam::Vec3;
use serde::{Deserialize, Serialize};

use crate::command::Primitive;

/// A vertex index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VertexId(pub u32);

/// A half-edge index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HalfEdgeId(pub u32);

/// A face index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FaceId(pub u32);

/// A vertex.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Vertex {
    /// Position in entity space, metres.
    pub position: Vec3,
    /// One half-edge starting here (`None` for an isolated vertex).
    pub half_edge: Option<HalfEdgeId>,
}

/// A half-edge: directed from `origin` to `origin` of `next`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HalfEdge {
    /// Start vertex.
    pub origin: VertexId,
    /// The opposite half-edge.
    pub twin: HalfEdgeId,
    /// Next half-edge around the face (or boundary loop).
    pub next: HalfEdgeId,
    /// Previous half-edge around the face (or boundary loop).
    pub prev: HalfEdgeId,
    /// The face on its left, `None` on the boundary.
    pub face: Option<FaceId>,
}

/// A face: one of its half-edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Face {
    /// A half-edge of the face loop.
    pub half_edge: HalfEdgeId,
}

/// Why a polygon list cannot become a half-edge mesh.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MeshError {
    /// A face has fewer than 3 corners or names a missing vertex.
    #[error("face {0} is degenerate or names a missing vertex")]
    BadFace(usize),
    /// Two faces use the same directed edge (inconsistent winding or a non-manifold edge).
    #[error("edge {0}→{1} is used twice in the same direction")]
    NonManifoldEdge(u32, u32),
    /// A vertex has more than one boundary gap (non-manifold vertex).
    #[error("vertex {0} is non-manifold")]
    NonManifoldVertex(u32),
    /// Too many elements for 32-bit ids.
    #[error("mesh too large")]
    TooLarge,
}

/// A violated invariant, found by [`Mesh::check`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("mesh invariant violated: {0}")]
pub struct InvariantError(pub String);

/// A half-edge mesh.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Mesh {
    /// Vertices.
    pub vertices: Vec<Vertex>,
    /// Half-edges.
    pub half_edges: Vec<HalfEdge>,
    /// Faces.
    pub faces: Vec<Face>,
}

fn id(n: usize) -> Result<u32, MeshError> {
    u32::try_from(n).map_err(|_| MeshError::TooLarge)
}

fn at(ids: u32) -> usize {
    ids as usize
}

impl Mesh {
    /// Builds a mesh from positions and faces (vertex index lists, counter-clockwise).
    ///
    /// # Errors
    /// [`MeshError`] for degenerate faces and non-manifold input.
    pub fn from_polygons(positions: &[Vec3], polygons: &[Vec<u32>]) -> Result<Self, MeshError> {
        let mut mesh = Self {
            vertices: positions
                .iter()
                .map(|p| Vertex {
                    position: *p,
                    half_edge: None,
                })
                .collect(),
            half_edges: Vec::new(),
            faces: Vec::new(),
        };
        let mut by_edge: BTreeMap<(u32, u32), u32> = BTreeMap::new();
        for (f, poly) in polygons.iter().enumerate() {
            let n = poly.len();
            if n < 3 || poly.iter().any(|v| at(*v) >= positions.len()) {
                return Err(MeshError::BadFace(f));
            }
            let face = FaceId(id(f)?);
            let first = id(mesh.half_edges.len())?;
            for (i, &v) in poly.iter().enumerate() {
                let w = poly[(i + 1) % n];
                if v == w {
                    return Err(MeshError::BadFace(f));
                }
                let h = first + id(i)?;
                if by_edge.insert((v, w), h).is_some() {
                    return Err(MeshError::NonManifoldEdge(v, w));
                }
                let next = first + id((i + 1) % n)?;
                let prev = first + id((i + n - 1) % n)?;
                mesh.half_edges.push(HalfEdge {
                    origin: VertexId(v),
                    twin: HalfEdgeId(u32::MAX),
                    next: HalfEdgeId(next),
                    prev: HalfEdgeId(prev),
                    face: Some(face),
                });
                mesh.vertices[at(v)].half_edge.get_or_insert(HalfEdgeId(h));
            }
            mesh.faces.push(Face {
                half_edge: HalfEdgeId(first),
            });
        }
        // Twins; missing ones become boundary half-edges.
        let mut boundary_from: BTreeMap<u32, u32> = BTreeMap::new();
        let interior = mesh.half_edges.len();
        for h in 0..interior {
            if mesh.half_edges[h].twin.0 != u32::MAX {
                continue;
            }
            let v = mesh.half_edges[h].origin.0;
            let w = mesh.half_edges[at(mesh.half_edges[h].next.0)].origin.0;
            if let Some(&t) = by_edge.get(&(w, v)) {
                mesh.half_edges[h].twin = HalfEdgeId(t);
                mesh.half_edges[at(t)].twin = HalfEdgeId(id(h)?);
            } else {
                let b = id(mesh.half_edges.len())?;
                mesh.half_edges.push(HalfEdge {
                    origin: VertexId(w),
                    twin: HalfEdgeId(id(h)?),
                    next: HalfEdgeId(u32::MAX),
                    prev: HalfEdgeId(u32::MAX),
                    face: None,
                });
                mesh.half_edges[h].twin = HalfEdgeId(b);
                if boundary_from.insert(w, b).is_some() {
                    return Err(MeshError::NonManifoldVertex(w));
                }
            }
        }
        // Link boundary loops: a boundary half-edge w→v is followed by the one leaving v.
        for (&_, &b) in &boundary_from {
            let twin = mesh.half_edges[at(b)].twin;
            let end = mesh.half_edges[at(twin.0)].origin.0;
            let next = *boundary_from
                .get(&end)
                .ok_or(MeshError::NonManifoldVertex(end))?;
            mesh.half_edges[at(b)].next = HalfEdgeId(next);
            mesh.half_edges[at(next)].prev = HalfEdgeId(b);
        }
        debug_assert!(
            mesh.check().is_ok(),
            "from_polygons built an invalid mesh: {:?}",
            mesh.check()
        );
        Ok(mesh)
    }

    /// The mesh a spawn of `primitive` starts with (unit size, centred on the origin).
    #[must_use]
    pub fn primitive(primitive: Primitive) -> Self {
        let (positions, polygons) = match primitive {
            Primitive::Cube => cube(),
            Primitive::Pyramid => pyramid(),
            Primitive::Plane => plane(),
            Primitive::Cylinder => cylinder(16),
            Primitive::Sphere => uv_sphere(16, 8),
        };
        Self::from_polygons(&positions, &polygons)
            .expect("the built-in primitives are closed or simply bounded manifolds")
    }

    /// Destination of a half-edge.
    #[must_use]
    pub fn dest(&self, h: HalfEdgeId) -> VertexId {
        self.half_edges[at(self.half_edges[at(h.0)].next.0)].origin
    }

    /// Half-edges with no face: the surface's border (empty for a closed mesh).
    pub fn boundary(&self) -> impl Iterator<Item = HalfEdgeId> + '_ {
        (0..self.half_edges.len())
            .filter(|h| self.half_edges[*h].face.is_none())
            .map(|h| HalfEdgeId(h as u32))
    }

    /// The half-edges around a face, in order.
    #[must_use]
    pub fn face_loop(&self, f: FaceId) -> Vec<HalfEdgeId> {
        let start = self.faces[at(f.0)].half_edge;
        let mut out = Vec::new();
        let mut h = start;
        loop {
            out.push(h);
            h = self.half_edges[at(h.0)].next;
            if h == start || out.len() > self.half_edges.len() {
                break;
            }
        }
        out
    }

    /// Checks every structural invariant (used in tests and debug builds).
    ///
    /// # Errors
    /// The first violated invariant.
    pub fn check(&self) -> Result<(), InvariantError> {
        use alloc::format;
        let nh = self.half_edges.len();
        let bad = |s: String| Err(InvariantError(s));
        for (i, h) in self.half_edges.iter().enumerate() {
            for (what, r) in [("twin", h.twin.0), ("next", h.next.0), ("prev", h.prev.0)] {
                if at(r) >= nh {
                    return bad(format!("half-edge {i}: {what} out of range"));
                }
            }
            if at(h.origin.0) >= self.vertices.len() {
                return bad(format!("half-edge {i}: origin out of range"));
            }
            let twin = &self.half_edges[at(h.twin.0)];
            if at(twin.twin.0) != i || h.twin.0 as usize == i {
                return bad(format!("half-edge {i}: twin of twin is not itself"));
            }
            if at(self.half_edges[at(h.next.0)].prev.0) != i
                || at(self.half_edges[at(h.prev.0)].next.0) != i
            {
                return bad(format!("half-edge {i}: next/prev do not mirror"));
            }
            if self.half_edges[at(h.next.0)].origin != twin.origin {
                return bad(format!("half-edge {i}: next does not start where it ends"));
            }
            if twin.origin == h.origin {
                return bad(format!("half-edge {i}: degenerate edge"));
            }
            if self.half_edges[at(h.next.0)].face != h.face {
                return bad(format!("half-edge {i}: next lies on another face"));
            }
            if h.face.is_none() && twin.face.is_none() {
                return bad(format!(
                    "half-edge {i}: an edge with no face on either side"
                ));
            }
            if let Some(f) = h.face
                && at(f.0) >= self.faces.len()
            {
                return bad(format!("half-edge {i}: face out of range"));
            }
        }
        for (f, face) in self.faces.iter().enumerate() {
            if at(face.half_edge.0) >= nh
                || self.half_edges[at(face.half_edge.0)].face != Some(FaceId(f as u32))
            {
                return bad(format!("face {f}: its half-edge is not on it"));
            }
            let lp = self.face_loop(FaceId(f as u32));
            if lp.len() < 3 || lp.len() > nh {
                return bad(format!("face {f}: loop of {} half-edges", lp.len()));
            }
        }
        for (v, vert) in self.vertices.iter().enumerate() {
            if let Some(h) = vert.half_edge
                && (at(h.0) >= nh || at(self.half_edges[at(h.0)].origin.0) != v)
            {
                return bad(format!("vertex {v}: its half-edge does not start there"));
            }
            if !vert.position.is_finite() {
                return bad(format!("vertex {v}: non-finite position"));
            }
        }
        Ok(())
    }

    /// Triangulated, flat-shaded render data: per face corner a position and the face normal,
    /// and counter-clockwise triangles (a fan per convex face).
    #[must_use]
    pub fn triangulate(&self) -> RenderMesh {
        let mut out = RenderMesh::default();
        for f in 0..self.faces.len() {
            let corners: Vec<Vec3> = self
                .face_loop(FaceId(f as u32))
                .iter()
                .map(|h| self.vertices[at(self.half_edges[at(h.0)].origin.0)].position)
                .collect();
            // Newell's normal: robust for any planar-ish polygon.
            let mut n = Vec3::ZERO;
            for (i, a) in corners.iter().enumerate() {
                let b = corners[(i + 1) % corners.len()];
                n += Vec3::new(
                    (a.y - b.y) * (a.z + b.z),
                    (a.z - b.z) * (a.x + b.x),
                    (a.x - b.x) * (a.y + b.y),
                );
            }
            let normal = n.normalize_or_zero();
            let base = out.positions.len() as u32;
            for c in &corners {
                out.positions.push(c.to_array());
                out.normals.push(normal.to_array());
            }
            for i in 1..corners.len().saturating_sub(1) as u32 {
                out.indices
                    .extend_from_slice(&[base, base + i, base + i + 1]);
            }
        }
        out
    }
}

/// Triangles ready for a GPU buffer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RenderMesh {
    /// Corner positions.
    pub positions: Vec<[f32; 3]>,
    /// Corner normals (unit length).
    pub normals: Vec<[f32; 3]>,
    /// Triangle list, counter-clockwise.
    pub indices: Vec<u32>,
}

type Polys = (Vec<Vec3>, Vec<Vec<u32>>);

fn cube() -> Polys {
    let p = |x: f32, y: f32, z: f32| Vec3::new(x, y, z) * 0.5;
    let positions = alloc::vec![
        p(-1.0, -1.0, -1.0),
        p(1.0, -1.0, -1.0),
        p(1.0, 1.0, -1.0),
        p(-1.0, 1.0, -1.0),
        p(-1.0, -1.0, 1.0),
        p(1.0, -1.0, 1.0),
        p(1.0, 1.0, 1.0),
        p(-1.0, 1.0, 1.0),
    ];
    let polygons = alloc::vec![
        alloc::vec![4, 5, 6, 7], // +z
        alloc::vec![1, 0, 3, 2], // -z
        alloc::vec![5, 1, 2, 6], // +x
        alloc::vec![0, 4, 7, 3], // -x
        alloc::vec![7, 6, 2, 3], // +y
        alloc::vec![0, 1, 5, 4], // -y
    ];
    (positions, polygons)
}

fn pyramid() -> Polys {
    let positions = alloc::vec![
        Vec3::new(-0.5, -0.5, -0.5),
        Vec3::new(0.5, -0.5, -0.5),
        Vec3::new(0.5, -0.5, 0.5),
        Vec3::new(-0.5, -0.5, 0.5),
        Vec3::new(0.0, 0.5, 0.0),
    ];
    let polygons = alloc::vec![
        alloc::vec![0, 1, 2, 3],
        alloc::vec![3, 2, 4],
        alloc::vec![2, 1, 4],
        alloc::vec![1, 0, 4],
        alloc::vec![0, 3, 4],
    ];
    (positions, polygons)
}

fn plane() -> Polys {
    let positions = alloc::vec![
        Vec3::new(-0.5, 0.0, 0.5),
        Vec3::new(0.5, 0.0, 0.5),
        Vec3::new(0.5, 0.0, -0.5),
        Vec3::new(-0.5, 0.0, -0.5),
    ];
    (positions, alloc::vec![alloc::vec![0, 1, 2, 3]])
}

/// cos(k·π/8) for k = 0..16, as literals: libm's `cos` may round differently on x86_64 and
/// wasm32, and edited primitives carry their positions into the state hash.
const COS_EIGHTHS: [f32; 16] = [
    1.0,
    0.923_879_5,
    0.707_106_77,
    0.382_683_43,
    0.0,
    -0.382_683_43,
    -0.707_106_77,
    -0.923_879_5,
    -1.0,
    -0.923_879_5,
    -0.707_106_77,
    -0.382_683_43,
    0.0,
    0.382_683_43,
    0.707_106_77,
    0.923_879_5,
];

/// cos and sin of k·π/8.
fn eighth(k: u32) -> (f32, f32) {
    (
        COS_EIGHTHS[(k % 16) as usize],
        COS_EIGHTHS[((k + 12) % 16) as usize],
    )
}

/// `segments` must divide 16: angles are multiples of π/8 (see [`COS_EIGHTHS`]).
fn ring(segments: u32, y: f32, radius: f32) -> impl Iterator<Item = Vec3> {
    let step = 16 / segments;
    (0..segments).map(move |i| {
        let (c, s) = eighth(i * step);
        Vec3::new(radius * c, y, -radius * s)
    })
}

fn cylinder(segments: u32) -> Polys {
    let mut positions: Vec<Vec3> = ring(segments, -0.5, 0.5).collect();
    positions.extend(ring(segments, 0.5, 0.5));
    let mut polygons = Vec::new();
    for i in 0..segments {
        let j = (i + 1) % segments;
        polygons.push(alloc::vec![i, j, segments + j, segments + i]);
    }
    polygons.push((0..segments).rev().collect()); // bottom, facing -y
    polygons.push((segments..2 * segments).collect()); // top, facing +y
    (positions, polygons)
}

fn uv_sphere(segments: u32, rings: u32) -> Polys {
    let mut positions = alloc::vec![Vec3::new(0.0, 0.5, 0.0)];
    for r in 1..rings {
        // phi = π·r/rings, a multiple of π/8 for rings dividing 8.
        let (c, s) = eighth(r * (8 / rings));
        positions.extend(ring(segments, 0.5 * c, 0.5 * s));
    }
    let south = positions.len() as u32;
    positions.push(Vec3::new(0.0, -0.5, 0.0));
    let at_ring = |r: u32, i: u32| 1 + (r - 1) * segments + i % segments;
    let mut polygons = Vec::new();
    for i in 0..segments {
        polygons.push(alloc::vec![0, at_ring(1, i), at_ring(1, i + 1)]);
    }
    for r in 1..rings - 1 {
        for i in 0..segments {
            polygons.push(alloc::vec![
                at_ring(r, i),
                at_ring(r + 1, i),
                at_ring(r + 1, i + 1),
                at_ring(r, i + 1)
            ]);
        }
    }
    for i in 0..segments {
        polygons.push(alloc::vec![
            south,
            at_ring(rings - 1, i + 1),
            at_ring(rings - 1, i)
        ]);
    }
    (positions, polygons)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Primitive; 5] = [
        Primitive::Cube,
        Primitive::Pyramid,
        Primitive::Plane,
        Primitive::Cylinder,
        Primitive::Sphere,
    ];

    #[test]
    fn every_primitive_satisfies_the_invariants() {
        for p in ALL {
            let m = Mesh::primitive(p);
            m.check().unwrap_or_else(|e| panic!("{p:?}: {e}"));
            // Euler characteristic: closed genus-0 surfaces have V - E + F = 2, a disc 1.
            let (v, e, f) = (
                m.vertices.len() as i64,
                (m.half_edges.len() / 2) as i64,
                m.faces.len() as i64,
            );
            let expected = if p == Primitive::Plane { 1 } else { 2 };
            assert_eq!(v - e + f, expected, "{p:?}");
            assert_eq!(
                m.boundary().count() > 0,
                p == Primitive::Plane,
                "{p:?} boundary"
            );
        }
    }

    #[test]
    fn triangles_face_outwards() {
        for p in [
            Primitive::Cube,
            Primitive::Pyramid,
            Primitive::Cylinder,
            Primitive::Sphere,
        ] {
            let r = Mesh::primitive(p).triangulate();
            assert_eq!(r.indices.len() % 3, 0);
            for tri in r.indices.chunks(3) {
                let [a, b, c] = [0, 1, 2].map(|k| Vec3::from(r.positions[tri[k] as usize]));
                let n = (b - a).cross(c - a);
                let centre = (a + b + c) / 3.0;
                assert!(n.dot(centre) > 0.0, "{p:?}: a triangle faces inwards");
                let stored = Vec3::from(r.normals[tri[0] as usize]);
                assert!(
                    (stored.length() - 1.0).abs() < 1e-4 && stored.dot(n) > 0.0,
                    "{p:?}: normal"
                );
            }
        }
    }

    #[test]
    fn broken_meshes_are_caught() {
        let mut m = Mesh::primitive(Primitive::Cube);
        m.half_edges[3].next = HalfEdgeId(7);
        assert!(m.check().is_err());
        let mut m = Mesh::primitive(Primitive::Cube);
        m.half_edges[0].twin = HalfEdgeId(0);
        assert!(m.check().is_err());
        let square = [Vec3::ZERO, Vec3::X, Vec3::ONE, Vec3::Y];
        assert!(matches!(
            Mesh::from_polygons(&square, &[alloc::vec![0, 1, 2, 3], alloc::vec![0, 1, 2, 3]]),
            Err(MeshError::NonManifoldEdge(0, 1))
        ));
        assert!(matches!(
            Mesh::from_polygons(&square, &[alloc::vec![0, 1]]),
            Err(MeshError::BadFace(0))
        ));
    }
}
