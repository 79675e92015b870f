#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap is a failed test"
)]

use super::*;
use crate::ids::AuthorId;

const A: AuthorId = AuthorId(1);

fn cmd(lamport: u64) -> CommandId {
    CommandId { lamport, author: A }
}

fn el(by: u64, index: u32) -> ElementId {
    ElementId { by: cmd(by), index }
}

fn v(by: u64, index: u32) -> VertexKey {
    VertexKey(el(by, index))
}

fn f(by: u64, index: u32) -> FaceKey {
    FaceKey(el(by, index))
}

fn cube() -> EditMesh {
    EditMesh::from_primitive(Primitive::Cube, cmd(1))
}

fn counts(m: &EditMesh) -> (usize, usize, usize) {
    (m.vertices().len(), m.edges().len(), m.faces().len())
}

fn valid(m: &EditMesh) {
    m.check().unwrap_or_else(|e| panic!("{e}"));
    // The canonical encoding round-trips to an equal, valid mesh.
    let bytes = postcard::to_allocvec(m).unwrap();
    let back: EditMesh = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(&back, m);
    back.check().unwrap();
    assert_eq!(back.half_edges(), m.half_edges());
    assert_eq!(back.triangle_count(), m.triangle_count());
}

/// The cube's top face (+y) is the fifth face of the primitive: id 1:12 (8 vertices first).
const TOP: u32 = 8 + 4;

#[test]
fn primitive_ids_come_from_the_spawn() {
    let m = cube();
    valid(&m);
    assert_eq!(counts(&m), (8, 12, 6));
    assert_eq!(m.vertices().keys().next(), Some(&v(1, 0)));
    assert_eq!(m.faces().keys().next(), Some(&f(1, 8)));
    // Edges follow the faces: 1:14 .. 1:25.
    let mut edge_ids: Vec<u32> = m.edges().values().map(|e| e.0.index).collect();
    edge_ids.sort_unstable();
    assert_eq!(edge_ids, (14..26).collect::<Vec<_>>());
    assert_eq!(
        m.faces()[&f(1, TOP)],
        vec![v(1, 7), v(1, 6), v(1, 2), v(1, 3)]
    );
    for p in [
        Primitive::Cube,
        Primitive::Pyramid,
        Primitive::Plane,
        Primitive::Cylinder,
        Primitive::Sphere,
    ] {
        let m = EditMesh::from_primitive(p, cmd(1));
        valid(&m);
        assert_eq!(
            m.triangle_count(),
            crate::scene::primitive_triangles(p),
            "{p:?}"
        );
    }
}

#[test]
fn extruding_the_top_face_of_a_cube() {
    let mut m = cube();
    let mut ids = IdSource::new(cmd(2));
    m.extrude_faces(&mut ids, cmd(2), &[f(1, TOP)], None, 0.5, None)
        .unwrap();
    valid(&m);
    assert_eq!(counts(&m), (12, 20, 10));
    // The top face keeps its id and now sits on the four new vertices 2:0..2:3, lifted by 0.5.
    let top = &m.faces()[&f(1, TOP)];
    // (New vertices in id order of the corners they lift: 2→2:0, 3→2:1, 6→2:2, 7→2:3.)
    assert_eq!(top, &vec![v(2, 3), v(2, 2), v(2, 0), v(2, 1)]);
    for c in top {
        assert!((m.vertices()[c].y - 1.0).abs() < 1e-6);
    }
    // The old corners stay where they were, with their ids.
    assert!((m.vertices()[&v(1, 7)].y - 0.5).abs() < 1e-6);
    // Side faces 2:4..2:7, then the new edges 2:8..2:15.
    for i in 4..8 {
        assert_eq!(m.faces()[&f(2, i)].len(), 4);
    }
    let new_edges = m.edges().values().filter(|e| e.0.by == cmd(2)).count();
    assert_eq!(new_edges, 8);
    // Snap: 0.37 with a 0.25 grid goes 0.25.
    let mut ids = IdSource::new(cmd(3));
    m.extrude_faces(&mut ids, cmd(3), &[f(1, TOP)], None, 0.37, Some(0.25))
        .unwrap();
    valid(&m);
    let y = m.vertices()[&m.faces()[&f(1, TOP)][0]].y;
    assert!((y - 1.25).abs() < 1e-6, "{y}");
}

#[test]
fn a_connected_region_extrudes_as_one() {
    // Two adjacent faces of a subdivided plane extrude as one block: no wall between them.
    let mut m = EditMesh::from_primitive(Primitive::Plane, cmd(1));
    m.subdivide(&mut IdSource::new(cmd(2)), &[f(1, 4)], 1)
        .unwrap();
    valid(&m);
    assert_eq!(m.faces().len(), 4);
    let two: Vec<FaceKey> = m.faces().keys().take(2).copied().collect();
    let before = m.faces().len();
    m.extrude_faces(
        &mut IdSource::new(cmd(3)),
        cmd(3),
        &two,
        Some(Vec3::Y),
        0.0,
        None,
    )
    .unwrap();
    valid(&m);
    // Two faces share one edge: their region's rim has 6 edges, so 6 side quads.
    assert_eq!(m.faces().len(), before + 6);
}

#[test]
fn extruding_border_edges_of_a_plane() {
    let mut m = EditMesh::from_primitive(Primitive::Plane, cmd(1));
    let edges: Vec<EdgeKey> = m.edges().values().copied().collect();
    m.extrude_edges(&mut IdSource::new(cmd(2)), &edges[..2], Vec3::Y, None)
        .unwrap();
    valid(&m);
    // Two adjacent border edges share a corner: 3 new vertices, 2 quads.
    assert_eq!(counts(&m).0, 4 + 3);
    assert_eq!(counts(&m).2, 3);
    // An interior edge cannot be extruded.
    let c = cube();
    let e = *c.edges().values().next().unwrap();
    let err = c
        .clone()
        .extrude_edges(&mut IdSource::new(cmd(2)), &[e], Vec3::Y, None)
        .unwrap_err();
    assert!(matches!(err, EditError::Topology(_)), "{err}");
    c.check().unwrap();
}

#[test]
fn subdividing_faces_keeps_the_mesh_closed() {
    for cuts in 1..=3u8 {
        let mut m = cube();
        m.subdivide(&mut IdSource::new(cmd(2)), &[f(1, TOP)], cuts)
            .unwrap();
        valid(&m);
        let n = usize::from(cuts) + 1;
        assert_eq!(m.faces().len(), 5 + n * n);
        // The four side faces gained the cut vertices of the shared edges.
        let side_corners: usize = m
            .faces()
            .iter()
            .filter(|(k, _)| k.0.by == cmd(1))
            .map(|(_, c)| c.len())
            .sum();
        assert_eq!(side_corners, 5 * 4 + 4 * usize::from(cuts));
    }
    // Triangles and larger polygons.
    let mut p = EditMesh::from_primitive(Primitive::Pyramid, cmd(1));
    let all: Vec<FaceKey> = p.faces().keys().copied().collect();
    p.subdivide(&mut IdSource::new(cmd(2)), &all, 2).unwrap();
    valid(&p);
    assert_eq!(p.faces().len(), 9 + 4 * 9);
    let mut cyl = EditMesh::from_primitive(Primitive::Cylinder, cmd(1));
    let cap = *cyl.faces().iter().find(|(_, c)| c.len() == 16).unwrap().0;
    cyl.subdivide(&mut IdSource::new(cmd(2)), &[cap], 1)
        .unwrap();
    valid(&cyl);
}

#[test]
fn catmull_clark_of_a_cube() {
    let mut m = cube();
    m.catmull_clark(&mut IdSource::new(cmd(2)), cmd(2), &[], 1)
        .unwrap();
    valid(&m);
    assert_eq!(counts(&m), (26, 48, 24));
    // Original corners keep their ids and move inwards (to ±5/18 ≈ 0.2778 per axis).
    let p = m.vertices()[&v(1, 6)];
    assert!((p.x - 5.0 / 18.0).abs() < 1e-6, "{p}");
    m.catmull_clark(&mut IdSource::new(cmd(3)), cmd(3), &[], 2)
        .unwrap();
    valid(&m);
    assert_eq!(m.faces().len(), 24 * 16);
    // A region: only the top face, whose border is a crease.
    let mut r = cube();
    r.catmull_clark(&mut IdSource::new(cmd(2)), cmd(2), &[f(1, TOP)], 1)
        .unwrap();
    valid(&r);
    assert_eq!(r.faces().len(), 5 + 4);
    assert_eq!(r.vertices()[&v(1, 6)], cube().vertices()[&v(1, 6)]);
    // Open meshes use the boundary rules.
    let mut plane = EditMesh::from_primitive(Primitive::Plane, cmd(1));
    plane
        .catmull_clark(&mut IdSource::new(cmd(2)), cmd(2), &[], 1)
        .unwrap();
    valid(&plane);
    assert_eq!(plane.faces().len(), 4);
}

#[test]
fn weld_and_degenerate_welds() {
    // Two planes side by side, welded along the shared border, become one sheet.
    let mut m = EditMesh::from_primitive(Primitive::Plane, cmd(1));
    let mut ids = IdSource::new(cmd(2));
    let a = m.create_vertex(&mut ids, Vec3::new(1.5, 0.0, 0.5));
    let b = m.create_vertex(&mut ids, Vec3::new(1.5, 0.0, -0.5));
    let c = m.create_vertex(&mut ids, Vec3::new(0.5, 0.0, -0.5));
    let d = m.create_vertex(&mut ids, Vec3::new(0.5, 0.0, 0.5));
    m.create_face(&mut ids, &[d, a, b, c]).unwrap();
    valid(&m);
    assert_eq!(counts(&m), (8, 8, 2));
    let mut ids = IdSource::new(cmd(3));
    // One vertex at a time would pass through a bowtie: refused.
    let err = m
        .clone()
        .weld(&mut ids, cmd(3), &[vec![v(1, 1), d]], false)
        .unwrap_err();
    assert!(
        matches!(err, EditError::Topology(ref s) if s.contains("non-manifold")),
        "{err}"
    );
    m.weld(
        &mut ids,
        cmd(3),
        &[vec![v(1, 1), d], vec![v(1, 2), c]],
        true,
    )
    .unwrap();
    valid(&m);
    assert_eq!(counts(&m), (6, 7, 2));
    // Welding two corners of one triangle collapses it: refused.
    let mut p = EditMesh::from_primitive(Primitive::Pyramid, cmd(1));
    let err = p
        .weld(
            &mut IdSource::new(cmd(2)),
            cmd(2),
            &[vec![v(1, 0), v(1, 4)]],
            true,
        )
        .unwrap_err();
    assert!(
        matches!(err, EditError::Topology(ref s) if s.contains("degenerate")),
        "{err}"
    );
}

#[test]
fn create_and_delete() {
    let mut m = cube();
    // Deleting a face leaves a hole with a border loop of four half-edges.
    m.delete(&mut IdSource::new(cmd(2)), &[], &[], &[f(1, TOP)])
        .unwrap();
    valid(&m);
    assert_eq!(counts(&m), (8, 12, 5));
    assert_eq!(
        m.half_edges().values().filter(|h| h.face.is_none()).count(),
        4
    );
    // Filling it again gives a new face id.
    let mut ids = IdSource::new(cmd(3));
    let nf = m
        .create_face(&mut ids, &[v(1, 7), v(1, 6), v(1, 2), v(1, 3)])
        .unwrap();
    assert_eq!(nf, f(3, 0));
    valid(&m);
    // A face over the same vertices twice is refused, and so is a flipped one.
    for corners in [
        [v(1, 7), v(1, 6), v(1, 2), v(1, 3)],
        [v(1, 3), v(1, 2), v(1, 6), v(1, 7)],
    ] {
        let err = m
            .clone()
            .create_face(&mut IdSource::new(cmd(4)), &corners)
            .unwrap_err();
        assert!(matches!(err, EditError::Topology(_)), "{err}");
    }
    // Deleting a vertex takes its three faces; corners left with no face go too.
    m.delete(&mut IdSource::new(cmd(5)), &[v(1, 6)], &[], &[])
        .unwrap();
    valid(&m);
    assert_eq!(counts(&m), (7, 9, 3));
    // A face over a deleted vertex: missing.
    let err = m
        .create_face(&mut IdSource::new(cmd(6)), &[v(1, 6), v(1, 2), v(1, 3)])
        .unwrap_err();
    assert!(matches!(err, EditError::Missing(_)), "{err}");
    // Deleting an edge takes both faces beside it.
    let mut c = cube();
    let e = *c.edges().values().next().unwrap();
    c.delete(&mut IdSource::new(cmd(2)), &[], &[e], &[])
        .unwrap();
    valid(&c);
    assert_eq!(c.faces().len(), 4);
}

#[test]
fn a_bowtie_is_refused() {
    // Two triangles sharing only a vertex are a non-manifold vertex.
    let mut m = EditMesh::default();
    let mut ids = IdSource::new(cmd(1));
    let o = m.create_vertex(&mut ids, Vec3::ZERO);
    let p: Vec<VertexKey> = [Vec3::X, Vec3::Y, -Vec3::X, -Vec3::Y]
        .iter()
        .map(|q| m.create_vertex(&mut ids, *q))
        .collect();
    m.create_face(&mut ids, &[o, p[0], p[1]]).unwrap();
    let err = m.create_face(&mut ids, &[o, p[2], p[3]]).unwrap_err();
    assert!(
        matches!(err, EditError::Topology(ref s) if s.contains("non-manifold")),
        "{err}"
    );
}

#[test]
fn moves_are_last_write_wins_per_vertex() {
    let mut m = cube();
    m.move_vertices(cmd(5), &[(v(1, 0), Vec3::ONE)]).unwrap();
    // An earlier command arriving later does not overwrite it; a different vertex moves.
    m.move_vertices(cmd(4), &[(v(1, 0), Vec3::ZERO), (v(1, 1), Vec3::Y)])
        .unwrap();
    assert_eq!(m.vertices()[&v(1, 0)], Vec3::ONE);
    assert_eq!(m.vertices()[&v(1, 1)], Vec3::Y);
    // A missing vertex refuses the whole move before anything changes.
    let err = m
        .move_vertices(cmd(6), &[(v(1, 2), Vec3::X), (v(9, 0), Vec3::X)])
        .unwrap_err();
    assert!(matches!(err, EditError::Missing(_)));
    assert_ne!(m.vertices()[&v(1, 2)], Vec3::X);
    valid(&m);
}

#[test]
fn mirror_and_duplicate() {
    // Half a cube (the +x half, open on x = 0) mirrored with weld becomes a closed box.
    let mut m = EditMesh::default();
    let mut ids = IdSource::new(cmd(1));
    let mut k = |p: Vec3| m.create_vertex(&mut ids, p);
    let q = [
        k(Vec3::new(0.0, 0.0, 0.0)),
        k(Vec3::new(1.0, 0.0, 0.0)),
        k(Vec3::new(1.0, 1.0, 0.0)),
        k(Vec3::new(0.0, 1.0, 0.0)),
        k(Vec3::new(0.0, 0.0, 1.0)),
        k(Vec3::new(1.0, 0.0, 1.0)),
        k(Vec3::new(1.0, 1.0, 1.0)),
        k(Vec3::new(0.0, 1.0, 1.0)),
    ];
    for face in [
        [4, 5, 6, 7],
        [1, 0, 3, 2],
        [5, 1, 2, 6],
        [7, 6, 2, 3],
        [0, 1, 5, 4],
    ] {
        m.create_face(&mut ids, &face.map(|i| q[i])).unwrap();
    }
    valid(&m);
    let mut welded = m.clone();
    welded
        .mirror(&mut IdSource::new(cmd(2)), cmd(2), Axis::X, true)
        .unwrap();
    valid(&welded);
    assert_eq!(counts(&welded), (12, 20, 10));
    assert_eq!(
        welded
            .half_edges()
            .values()
            .filter(|h| h.face.is_none())
            .count(),
        0
    );
    // New vertices are 2:0.. in id order of their originals (plane vertices are shared).
    assert_eq!(welded.vertices()[&v(2, 0)], Vec3::new(-1.0, 0.0, 0.0));
    let mut apart = m.clone();
    apart
        .mirror(&mut IdSource::new(cmd(2)), cmd(2), Axis::X, false)
        .unwrap();
    valid(&apart);
    assert_eq!(counts(&apart), (16, 24, 10));
    // Mirroring a face that lies in the plane onto itself is refused.
    let mut plane = EditMesh::from_primitive(Primitive::Plane, cmd(1));
    let err = plane
        .mirror(&mut IdSource::new(cmd(2)), cmd(2), Axis::Y, true)
        .unwrap_err();
    assert!(matches!(err, EditError::Topology(_)), "{err}");

    let copy = welded.duplicate(&mut IdSource::new(cmd(9))).unwrap();
    valid(&copy);
    assert_eq!(counts(&copy), counts(&welded));
    assert!(copy.vertices().keys().all(|k| k.0.by == cmd(9)));
    assert!(copy.faces().keys().all(|k| k.0.by == cmd(9)));
    assert!(copy.edges().values().all(|k| k.0.by == cmd(9)));
    let a: Vec<Vec3> = copy.vertices().values().copied().collect();
    let b: Vec<Vec3> = welded.vertices().values().copied().collect();
    assert_eq!(a, b);
}

#[test]
fn corrupt_encodings_are_refused() {
    let m = cube();
    let bytes = postcard::to_allocvec(&m).unwrap();
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x55;
        if let Ok(back) = postcard::from_bytes::<EditMesh>(&b) {
            back.check().unwrap();
        }
    }
}

std::thread_local! {
    static FORCE_FULL: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
    static WHOLE_SMOOTHS: core::cell::Cell<u32> = const { core::cell::Cell::new(0) };
}

/// Test hook: counts levels smoothed on the dense whole-mesh path (so a test can tell it ran).
pub(super) fn count_whole_smooth() {
    WHOLE_SMOOTHS.with(|n| n.set(n.get() + 1));
}

/// Test hook: `finish` always rebuilds everything while set (the oracle for the local path).
pub(super) fn force_full() -> bool {
    FORCE_FULL.with(core::cell::Cell::get)
}

/// Derived state too: what a successful or refused operation must leave equal.
fn same(a: &EditMesh, b: &EditMesh) -> bool {
    a == b
        && a.half_edges == b.half_edges
        && a.edge_ends == b.edge_ends
        && a.triangles == b.triangles
}

/// A deterministic generator for the randomized tests (no clock, no OS randomness).
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len())])
    }
}

/// Kinds of operation [`random_op`] knows.
const KINDS: usize = 13;

/// One random operation of `kind` on `m`, naming elements it has (and now and then one it lost).
fn random_op(m: &mut EditMesh, rng: &mut Lcg, kind: usize, by: CommandId) -> Result<(), EditError> {
    let verts: Vec<VertexKey> = m.vertices().keys().copied().collect();
    let faces: Vec<FaceKey> = m.faces().keys().copied().collect();
    let edges: Vec<EdgeKey> = m.edges().values().copied().collect();
    let ghost = VertexKey(ElementId { by, index: 999 });
    let mut ids = IdSource::new(by);
    let some_faces = |rng: &mut Lcg, k: usize| -> Vec<FaceKey> {
        (0..k).filter_map(|_| rng.pick(&faces)).collect()
    };
    match kind {
        0 => {
            let n = 1 + rng.below(8);
            let mut moves: Vec<(VertexKey, Vec3)> = Vec::new();
            for _ in 0..n {
                if let Some(v) = rng.pick(&verts) {
                    moves.push((v, Vec3::new(rng.below(7) as f32 * 0.25, 0.5, -1.0)));
                }
            }
            m.move_vertices(by, &moves)
        }
        1 => {
            // Fill a hole: the face over a whole border loop (or, on a closed mesh, a face
            // over an existing face's corners reversed: refused as the same vertex set).
            let hole = m
                .half_edges()
                .iter()
                .find(|(_, h)| h.face.is_none())
                .map(|(k, _)| *k);
            let corners = match hole {
                Some((a, b)) => {
                    let mut c = alloc::vec![a, b];
                    while c.len() < 12 {
                        let last = c[c.len() - 1];
                        let next = m.half_edges()[&(c[c.len() - 2], last)].next;
                        if next == a {
                            break;
                        }
                        c.push(next);
                    }
                    c
                }
                None => {
                    let Some(f) = rng.pick(&faces) else {
                        return Ok(());
                    };
                    let mut c: Vec<VertexKey> = m.faces()[&f].iter().rev().copied().collect();
                    if rng.below(3) == 0 {
                        c.push(ghost); // a corner that does not exist
                    }
                    c
                }
            };
            m.create_face(&mut ids, &corners).map(|_| ())
        }
        2 => {
            let vs: Vec<VertexKey> = rng.pick(&verts).into_iter().collect();
            let es: Vec<EdgeKey> = rng.pick(&edges).into_iter().collect();
            let fs = {
                let k = rng.below(3);
                some_faces(rng, k)
            };
            match rng.below(3) {
                0 => m.delete(&mut ids, &vs, &[], &[]),
                1 => m.delete(&mut ids, &[], &es, &[]),
                _ => m.delete(&mut ids, &[], &[], &fs),
            }
        }
        3 => {
            let fs = {
                let k = 1 + rng.below(4);
                some_faces(rng, k)
            };
            let offset = (rng.below(2) == 0).then_some(Vec3::new(0.0, 0.3, 0.1));
            m.extrude_faces(&mut ids, by, &fs, offset, 0.4, Some(0.1))
        }
        4 => {
            let borders: Vec<EdgeKey> = m
                .edges()
                .iter()
                .filter(|((a, b), _)| m.face_of(*a, *b).is_none() || m.face_of(*b, *a).is_none())
                .map(|(_, e)| *e)
                .collect();
            let es: Vec<EdgeKey> = (0..1 + rng.below(3))
                .filter_map(|_| rng.pick(&borders).or_else(|| rng.pick(&edges)))
                .collect();
            m.extrude_edges(&mut ids, &es, Vec3::new(0.0, 0.0, 0.5), None)
        }
        5 => {
            let fs = {
                let k = 1 + rng.below(3);
                some_faces(rng, k)
            };
            m.subdivide(&mut ids, &fs, 1 + rng.below(2) as u8)
        }
        6 => {
            let fs = {
                let k = 1 + rng.below(5);
                some_faces(rng, k)
            };
            m.catmull_clark(&mut ids, by, &fs, 1)
        }
        7 => {
            // Weld the two ends of an edge (often fine) or two far vertices (often refused).
            let group: Vec<VertexKey> = match rng.pick(&edges).and_then(|e| m.edge_ends(e)) {
                Some((a, b)) if rng.below(2) == 0 => alloc::vec![a, b],
                _ => (0..2).filter_map(|_| rng.pick(&verts)).collect(),
            };
            m.weld(&mut ids, by, &[group], rng.below(2) == 0)
        }
        8 => {
            let p = Vec3::new(5.0, rng.below(3) as f32, 0.0);
            m.create_vertex(&mut ids, p);
            Ok(())
        }
        9 => {
            // An ear on a border: the triangle over two border edges in a row (a→b→c).
            let borders: Vec<(VertexKey, VertexKey)> = m
                .half_edges()
                .iter()
                .filter(|(_, h)| h.face.is_none())
                .map(|(k, _)| *k)
                .collect();
            let Some((a, b)) = rng.pick(&borders) else {
                return Ok(());
            };
            let c = m.half_edges()[&(a, b)].next;
            m.create_face(&mut ids, &[a, b, c]).map(|_| ())
        }
        11 => {
            // Whole-mesh operations (one copy of the mesh as their journal): a mirror, with a
            // weld now and then (refused when a face lies in the plane), or smoothing it all.
            if m.faces().len() > 300 {
                return Ok(());
            }
            let axis = [Axis::X, Axis::Y, Axis::Z][rng.below(3)];
            m.mirror(&mut ids, by, axis, rng.below(2) == 0)
        }
        12 => {
            if m.faces().len() > 200 {
                return Ok(());
            }
            m.catmull_clark(&mut ids, by, &[], 1)
        }
        _ => {
            let fs = {
                let k = 1;
                some_faces(rng, k)
            };
            m.delete(&mut ids, &[], &[], &fs)
        }
    }
}

/// The local rebuild gives exactly what a full rebuild gives, for every operation on a mesh
/// large enough for the local path, and a refused operation leaves the mesh as it was.
#[test]
fn local_and_full_rebuilds_agree_and_refusals_change_nothing() {
    let cases: u64 = std::env::var("MESHWORK_MESH_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let (mut accepted, mut refused) = ([0u32; KINDS], [0u32; KINDS]);
    for seed in 0..cases {
        let mut rng = Lcg(seed);
        let mut m = cube();
        m.subdivide(
            &mut IdSource::new(cmd(2)),
            &m.faces().keys().copied().collect::<Vec<_>>(),
            4,
        )
        .unwrap();
        for step in 0..40u64 {
            let by = cmd(10 + step);
            let before = m.clone();
            let mut full = m.clone();
            let kind = rng.below(KINDS);
            let state = rng.0;
            let local = random_op(&mut m, &mut rng, kind, by);
            let mut rng_again = Lcg(state);
            FORCE_FULL.with(|f| f.set(true));
            let oracle = random_op(&mut full, &mut rng_again, kind, by);
            FORCE_FULL.with(|f| f.set(false));
            assert_eq!(
                local.is_ok(),
                oracle.is_ok(),
                "seed {seed} step {step}: local {local:?}, full {oracle:?}"
            );
            assert!(
                same(&m, &full),
                "seed {seed} step {step}: local ≠ full rebuild"
            );
            match local {
                Ok(()) => {
                    accepted[kind] += 1;
                    m.check()
                        .unwrap_or_else(|e| panic!("seed {seed} step {step}: {e}"));
                }
                Err(_) => {
                    refused[kind] += 1;
                    assert!(
                        same(&m, &before),
                        "seed {seed} step {step}: a refusal changed it"
                    );
                }
            }
            assert!(m.pending.is_empty() && m.pending_verts.is_empty() && m.undo.is_none());
        }
        valid(&m);
    }
    // Every kind of operation was accepted, and refusals happened (the test sees both paths).
    assert!(
        accepted.iter().all(|n| *n > 0) && refused.iter().sum::<u32>() > 0,
        "accepted per kind {accepted:?}, refused per kind {refused:?}"
    );
}

/// A whole-mesh operation keeps one copy of the mesh as its journal: a refusal puts all of it
/// back (here a weld-mirror of a cube whose −x side lies in the mirror plane, so the mirrored
/// side would be the same face again).
#[test]
fn a_refused_whole_mesh_operation_restores_the_mesh() {
    let mut m = cube();
    let left: Vec<(VertexKey, Vec3)> = m
        .vertices()
        .iter()
        .filter(|(_, p)| p.x < 0.0)
        .map(|(v, p)| (*v, Vec3::new(0.0, p.y, p.z)))
        .collect();
    assert_eq!(left.len(), 4);
    m.move_vertices(cmd(2), &left).unwrap();
    let before = m.clone();
    let err = m
        .mirror(&mut IdSource::new(cmd(3)), cmd(3), Axis::X, true)
        .unwrap_err();
    assert!(matches!(err, EditError::Topology(_)), "{err}");
    assert!(same(&m, &before), "the refused mirror changed the mesh");
    assert!(m.undo.is_none() && m.pending.is_empty());
    // Without the weld the halves stay apart and the mirror goes through.
    m.mirror(&mut IdSource::new(cmd(4)), cmd(4), Axis::X, false)
        .unwrap();
    valid(&m);
    assert_eq!(m.faces().len(), 12);
}

/// Smoothing a mesh with no faces would be accepted and change nothing: it is refused.
#[test]
fn smoothing_nothing_is_refused() {
    let mut m = EditMesh::default();
    let mut ids = IdSource::new(cmd(1));
    m.create_vertex(&mut ids, Vec3::ZERO);
    let before = m.clone();
    let err = m
        .catmull_clark(&mut IdSource::new(cmd(2)), cmd(2), &[], 1)
        .unwrap_err();
    assert!(matches!(err, EditError::Topology(_)), "{err}");
    assert!(same(&m, &before));
}

/// The keyed half-edge build the dense one replaced (one `BTreeMap` entry at a time), kept as
/// the reference: same half-edges, edges and triangles, or the same first fault.
struct Keyed {
    half_edges: HalfEdges,
    pairs: Vec<(VertexKey, VertexKey)>,
    triangles: u64,
}

fn keyed_build(
    verts: &BTreeMap<VertexKey, Vec3>,
    faces: &BTreeMap<FaceKey, Vec<VertexKey>>,
) -> Result<Keyed, EditError> {
    let mut halves: Vec<((VertexKey, VertexKey), HalfEdge)> = Vec::new();
    let mut triangles = 0u64;
    let mut vertex_sets: Vec<(Vec<VertexKey>, FaceKey)> = Vec::with_capacity(faces.len());
    for (f, corners) in faces {
        let n = corners.len();
        check_shape(*f, corners)?;
        if let Some(v) = corners.iter().find(|v| !verts.contains_key(v)) {
            return Err(EditError::Missing(format!("{v} (a corner of {f})")));
        }
        let mut set = corners.clone();
        set.sort_unstable();
        vertex_sets.push((set, *f));
        triangles += (n - 2) as u64;
        for i in 0..n {
            let a = corners[i];
            let b = corners[(i + 1) % n];
            let c = corners[(i + 2) % n];
            let p = corners[(i + n - 1) % n];
            halves.push((
                (a, b),
                HalfEdge {
                    face: Some(*f),
                    next: c,
                    prev: p,
                },
            ));
        }
    }
    vertex_sets.sort_unstable();
    if let Some(w) = vertex_sets.windows(2).find(|w| w[0].0 == w[1].0) {
        return topo(format!("{} has the same vertices as {}", w[1].1, w[0].1));
    }
    drop(vertex_sets);
    halves.sort_unstable_by_key(|x| x.0);
    if let Some(w) = halves.windows(2).find(|w| w[0].0 == w[1].0) {
        let (a, b) = w[0].0;
        return Err(two_faces_one_way(a, b));
    }
    // Border half-edges: the missing twins. A border half-edge b→a is followed by the border
    // half-edge leaving a; a vertex with two border gaps is non-manifold.
    let mut border: BTreeMap<VertexKey, VertexKey> = BTreeMap::new(); // origin → destination
    {
        let has =
            |k: &(VertexKey, VertexKey)| halves.binary_search_by(|(key, _)| key.cmp(k)).is_ok();
        for ((a, b), _) in &halves {
            if !has(&(*b, *a)) && border.insert(*b, *a).is_some() {
                return topo(format!(
                    "{b} would be non-manifold (two border gaps meet there)"
                ));
            }
        }
    }
    let mut prev_of: BTreeMap<VertexKey, VertexKey> = BTreeMap::new(); // dest → origin
    for (o, d) in &border {
        prev_of.insert(*d, *o);
    }
    let mut all = halves;
    for (o, d) in &border {
        let next = border.get(d).copied();
        let prev = prev_of.get(o).copied();
        let (Some(next), Some(prev)) = (next, prev) else {
            return topo(format!("the border through {o} does not close"));
        };
        all.push((
            (*o, *d),
            HalfEdge {
                face: None,
                next,
                prev,
            },
        ));
    }
    all.sort_unstable_by_key(|x| x.0);
    // Each vertex's outgoing half-edges are one run of the sorted list.
    for run in all.chunk_by(|x, y| x.0.0 == y.0.0) {
        let o = run[0].0.0;
        fan_closes_by(o, run[0].0.1, run.len(), |w| {
            run.iter().find(|((_, d), _)| *d == w).map(|(_, h)| h.prev)
        })?;
    }
    let pairs: Vec<(VertexKey, VertexKey)> = all
        .iter()
        .filter(|((a, b), _)| a < b)
        .map(|(p, _)| *p)
        .collect();
    if let Some((v, _)) = verts.iter().find(|(_, p)| !p.is_finite()) {
        return topo(format!("{v} has a non-finite position"));
    }
    Ok(Keyed {
        half_edges: all.into_iter().collect(),
        pairs,
        triangles,
    })
}

/// Builds `faces` over `verts` both ways and compares.
fn builds_agree(
    verts: &BTreeMap<VertexKey, Vec3>,
    faces: &BTreeMap<FaceKey, Vec<VertexKey>>,
) -> bool {
    let mut m = EditMesh {
        verts: verts.clone(),
        faces: faces.clone(),
        ..EditMesh::default()
    };
    let dense = m.build();
    let keyed = keyed_build(verts, faces);
    match (dense, keyed) {
        (Ok(()), Ok(k)) => {
            assert_eq!(m.half_edges, k.half_edges);
            assert!(m.edges.keys().copied().eq(k.pairs.iter().copied()));
            assert_eq!(m.triangles, k.triangles);
            true
        }
        (Err(d), Err(k)) => {
            assert_eq!(d, k);
            false
        }
        (d, k) => panic!("dense {d:?}, keyed {:?}", k.map(|_| ())),
    }
}

/// The dense build agrees with the keyed reference on valid meshes from random edits and on
/// broken face sets made from them (a face removed, flipped, doubled, rewired, a corner
/// dropped or repeated, a vertex missing, a position non-finite).
#[test]
fn the_dense_build_agrees_with_the_keyed_reference() {
    let cases: u64 = std::env::var("MESHWORK_MESH_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let (mut valid_seen, mut refused) = (0u32, [0u32; 8]);
    for seed in 0..cases {
        let mut rng = Lcg(seed ^ 0x5eed);
        let mut m = cube();
        m.subdivide(
            &mut IdSource::new(cmd(2)),
            &m.faces().keys().copied().collect::<Vec<_>>(),
            2,
        )
        .unwrap();
        for step in 0..20u64 {
            let kind = rng.below(KINDS);
            let _ = random_op(&mut m, &mut rng, kind, cmd(10 + step));
            if builds_agree(&m.verts, &m.faces) {
                valid_seen += 1;
            }
            let face_keys: Vec<FaceKey> = m.faces.keys().copied().collect();
            let vert_keys: Vec<VertexKey> = m.verts.keys().copied().collect();
            for (break_kind, count) in refused.iter_mut().enumerate() {
                let mut verts = m.verts.clone();
                let mut faces = m.faces.clone();
                let Some(f) = rng.pick(&face_keys) else {
                    continue;
                };
                let other = rng.pick(&face_keys).unwrap();
                match break_kind {
                    0 => {
                        faces.remove(&f);
                    }
                    1 => faces.get_mut(&f).unwrap().reverse(),
                    2 => {
                        let copy = faces[&f].clone();
                        faces.insert(FaceKey(el(999, step as u32)), copy);
                    }
                    3 => {
                        let v = rng.pick(&vert_keys).unwrap();
                        let c = faces.get_mut(&f).unwrap();
                        let i = rng.below(c.len());
                        c[i] = v;
                    }
                    4 => {
                        faces.get_mut(&f).unwrap().pop();
                    }
                    5 => {
                        let c = faces.get_mut(&f).unwrap();
                        c[1] = c[0];
                    }
                    6 => {
                        let v = faces[&other][0];
                        verts.remove(&v);
                    }
                    _ => {
                        let v = faces[&other][0];
                        verts.insert(v, Vec3::new(f32::NAN, 0.0, 0.0));
                    }
                }
                if !builds_agree(&verts, &faces) {
                    *count += 1;
                }
            }
        }
    }
    assert!(valid_seen > 0, "no valid mesh was compared");
    // Removing a face or rewiring a corner can leave a valid mesh (a hole, a new fan); the
    // others never do, so their faults were all compared.
    assert!(
        [1, 2, 4, 5, 6, 7].iter().all(|k| refused[*k] > 0) && refused.iter().sum::<u32>() > 100,
        "refusals compared per kind of damage: {refused:?}"
    );
}

/// Smoothing the whole mesh on dense indices gives what the general path gives (ids, positions,
/// stamps, half-edges), also at level 2, inside an enclosing transaction (as the scene runs it),
/// with every face named instead of none, on a mesh with a border and a loose vertex; an
/// overflowing result is refused and leaves the mesh as it was.
#[test]
fn whole_mesh_smoothing_matches_the_general_path() {
    let mut m = cube();
    m.delete(&mut IdSource::new(cmd(2)), &[], &[], &[f(1, TOP)])
        .unwrap();
    m.create_vertex(&mut IdSource::new(cmd(3)), Vec3::new(5.0, 0.0, 0.0));
    let corner = *m.vertices().keys().next().unwrap();
    m.move_vertices(cmd(4), &[(corner, Vec3::new(-0.7, -0.6, -0.5))])
        .unwrap();
    let all: Vec<FaceKey> = m.faces().keys().copied().collect();
    for (faces, levels) in [(&[][..], 1u8), (&[][..], 2), (&all[..], 2)] {
        let by = cmd(9);
        let smooth = |m: &mut EditMesh| {
            let mut ids = IdSource::new(by);
            let r = m.transaction(|m| m.catmull_clark(&mut ids, by, faces, levels));
            (r, ids.next_id())
        };
        let mut fast = m.clone();
        let before = WHOLE_SMOOTHS.with(core::cell::Cell::get);
        let fast_result = smooth(&mut fast);
        assert_eq!(
            WHOLE_SMOOTHS.with(core::cell::Cell::get) - before,
            u32::from(levels),
            "the dense whole-mesh path ran every level"
        );
        let mut slow = m.clone();
        FORCE_FULL.with(|f| f.set(true));
        let before = WHOLE_SMOOTHS.with(core::cell::Cell::get);
        let slow_result = smooth(&mut slow);
        assert_eq!(
            WHOLE_SMOOTHS.with(core::cell::Cell::get),
            before,
            "the oracle is the general path"
        );
        FORCE_FULL.with(|f| f.set(false));
        assert_eq!(fast_result, slow_result);
        assert!(fast_result.0.is_ok());
        assert!(
            same(&fast, &slow),
            "levels {levels}, {} faces named",
            faces.len()
        );
        assert_eq!(fast.triangle_count(), slow.triangle_count());
        valid(&fast);
    }
    let mut huge = m.clone();
    let far: Vec<(VertexKey, Vec3)> = huge
        .vertices()
        .keys()
        .map(|v| (*v, Vec3::splat(3.0e38)))
        .collect();
    huge.move_vertices(cmd(5), &far).unwrap();
    let before = huge.clone();
    let refused = huge.transaction(|m| m.catmull_clark(&mut IdSource::new(cmd(9)), cmd(9), &[], 2));
    assert!(
        matches!(&refused, Err(EditError::Topology(s)) if s.contains("non-finite")),
        "{refused:?}"
    );
    assert!(same(&huge, &before));
}

#[test]
fn element_ids_order_by_lamport_then_author_then_index() {
    // The 128-bit comparison against the field-by-field one, over values at every boundary.
    let lamports = [
        0,
        1,
        2,
        u64::from(u32::MAX),
        1 << 32,
        u64::MAX - 1,
        u64::MAX,
    ];
    let small = [0, 1, 2, 0x7fff_ffff, 0x8000_0000, u32::MAX - 1, u32::MAX];
    let mut all = Vec::new();
    for l in lamports {
        for a in small {
            for i in small {
                let by = CommandId {
                    lamport: l,
                    author: AuthorId(a),
                };
                all.push(ElementId { by, index: i });
            }
        }
    }
    for x in &all {
        for y in &all {
            let fields = ({ x.by.lamport }, x.by.author.0, x.index).cmp(&(
                { y.by.lamport },
                y.by.author.0,
                y.index,
            ));
            assert_eq!(x.cmp(y), fields, "{x} vs {y}");
            assert_eq!(x.by.cmp(&y.by).then(x.index.cmp(&y.index)), fields);
        }
    }
}

#[test]
fn ranks_find_exactly_the_listed_ids() {
    // Runs of several commands, gaps inside one command's indices, a run ending at u32::MAX.
    let mut listed: Vec<VertexKey> = Vec::new();
    for i in [0, 1, 2, 5, 6, 9] {
        listed.push(v(1, i));
    }
    for i in 0..4 {
        listed.push(v(2, i));
    }
    listed.push(v(3, 7));
    listed.extend([v(4, u32::MAX - 1), v(4, u32::MAX)]);
    listed.sort_unstable();
    let ranks = Ranks::new(&listed);
    assert_eq!(ranks.firsts.len(), 6);
    for (at, k) in listed.iter().enumerate() {
        assert_eq!(ranks.of(*k), Some(at as u32), "{k}");
    }
    for k in [
        v(0, 0),
        v(1, 3),
        v(1, 4),
        v(1, 7),
        v(1, 10),
        v(2, 4),
        v(3, 6),
        v(3, 8),
        v(5, 0),
    ] {
        assert_eq!(ranks.of(k), None, "{k}");
    }
    assert_eq!(Ranks::new(&[]).of(v(1, 0)), None);
}

#[test]
fn smoothing_again_under_the_same_command_is_refused() {
    // A replica that applies an entry twice must not build a mesh with two vertices of one id:
    // the second whole-mesh smooth names ids its first already made.
    let mut m = cube();
    m.catmull_clark(&mut IdSource::new(cmd(2)), cmd(2), &[], 1)
        .unwrap();
    let once = m.clone();
    let err = m
        .catmull_clark(&mut IdSource::new(cmd(2)), cmd(2), &[], 1)
        .unwrap_err();
    assert!(
        matches!(&err, EditError::Topology(s) if s.contains("already exists")),
        "{err}"
    );
    assert!(same(&m, &once));
    valid(&m);
}
