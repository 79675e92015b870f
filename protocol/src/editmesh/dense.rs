//! The half-edge build and topology check over dense indices: vertices and faces numbered in
//! key order (so sorting by index is sorting by id), half-edges in arrays grouped by origin.
//! [`EditMesh`](super::EditMesh) maps its ids to indices once, builds here, and maps back;
//! the checks, their order and so the first fault reported are those of the keyed build.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

/// A map from `n` entries already in key order: one allocation of the right size, then the
/// bulk build (collecting an iterator of unknown length grows and copies the buffer instead).
pub(super) fn sorted_map<K: Ord, V>(
    n: usize,
    entries: impl Iterator<Item = (K, V)>,
) -> BTreeMap<K, V> {
    let mut all = Vec::with_capacity(n);
    all.extend(entries);
    all.into_iter().collect()
}

/// No face (a border half-edge) or no vertex.
pub(super) const NONE: u32 = u32::MAX;

/// Face loops over vertex indices, faces in key order.
#[derive(Debug, Default)]
pub(super) struct Loops {
    /// Every face's corners, one face after the other.
    pub corners: Vec<u32>,
    /// Face `f`'s corners are `corners[starts[f]..starts[f + 1]]`.
    pub starts: Vec<u32>,
}

impl Loops {
    pub fn with_capacity(faces: usize, corners: usize) -> Self {
        let mut starts = Vec::with_capacity(faces + 1);
        starts.push(0);
        Self {
            corners: Vec::with_capacity(corners),
            starts,
        }
    }

    /// Closes the face whose corners were pushed since the last call.
    pub fn end_face(&mut self) {
        self.starts.push(self.corners.len() as u32);
    }

    pub fn faces(&self) -> usize {
        self.starts.len() - 1
    }

    pub fn range(&self, f: usize) -> core::ops::Range<usize> {
        self.starts[f] as usize..self.starts[f + 1] as usize
    }

    pub fn face(&self, f: usize) -> &[u32] {
        &self.corners[self.range(f)]
    }
}

/// One half-edge leaving the vertex whose group it is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Half {
    pub dest: u32,
    /// [`NONE`] on the border.
    pub face: u32,
    /// Destination of the next half-edge around the face or border loop.
    pub next: u32,
    /// Origin of the previous one.
    pub prev: u32,
}

/// The half-edges: those leaving vertex `v` are `halves[start[v]..start[v + 1]]`, sorted by
/// destination, so the whole array is in `(origin, destination)` key order.
#[derive(Debug)]
pub(super) struct Halves {
    pub start: Vec<u32>,
    pub halves: Vec<Half>,
    pub triangles: u64,
}

impl Halves {
    pub fn leaving(&self, v: usize) -> &[Half] {
        &self.halves[self.start[v] as usize..self.start[v + 1] as usize]
    }

    /// `(origin, half-edge)` in key order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Half)> + '_ {
        (0..self.start.len() - 1)
            .flat_map(move |v| self.leaving(v).iter().map(move |h| (v as u32, h)))
    }
}

/// The first invariant the loops break, by index (the caller names the elements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fault {
    /// Two faces with the same vertex set: the later and the earlier face.
    SameVertices { later: u32, earlier: u32 },
    /// The half-edge `a → b` is in two faces.
    TwoFacesOneWay(u32, u32),
    /// Two border gaps meet at the vertex.
    TwoGaps(u32),
    /// The border through the vertex does not close.
    BorderOpen(u32),
    /// Rotating around the vertex finds no next half-edge.
    FanBroken(u32),
    /// The vertex's faces form more than one fan.
    ManyFans(u32),
}

/// Sorts each group of `items` (delimited by `start`) by `key`; groups are small (valences).
fn sort_groups<T>(start: &[u32], items: &mut [T], key: impl Fn(&T) -> u32 + Copy) {
    for w in start.windows(2) {
        items[w[0] as usize..w[1] as usize].sort_unstable_by_key(key);
    }
}

/// A deterministic hash of a sorted vertex set (to find equal sets without sorting the sets).
fn set_hash(set: &[u32]) -> u64 {
    set.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, v| {
        (h ^ u64::from(*v)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The first pair of faces (in order of their sorted vertex sets, then face order) with the same
/// vertex set.
fn same_vertices(loops: &Loops) -> Option<Fault> {
    let mut sets = loops.corners.clone();
    for f in 0..loops.faces() {
        sets[loops.range(f)].sort_unstable();
    }
    let set = |f: u32| &sets[loops.range(f as usize)];
    let mut hashed: Vec<(u64, u32)> = (0..loops.faces() as u32)
        .map(|f| (set_hash(set(f)), f))
        .collect();
    hashed.sort_unstable();
    let clash = hashed
        .windows(2)
        .any(|w| w[0].0 == w[1].0 && set(w[0].1) == set(w[1].1));
    if !clash {
        return None;
    }
    // Rare (a refusal): the exact order of the keyed check.
    let mut by_set: Vec<(&[u32], u32)> = (0..loops.faces() as u32).map(|f| (set(f), f)).collect();
    by_set.sort_unstable();
    by_set
        .windows(2)
        .find(|w| w[0].0 == w[1].0)
        .map(|w| Fault::SameVertices {
            later: w[1].1,
            earlier: w[0].1,
        })
}

/// Walks the fan around `o` (its half-edges `around`, sorted by destination) from the first;
/// it must visit all of them before it returns.
fn fan_closes(o: u32, around: &[Half]) -> Result<(), Fault> {
    let Some(first) = around.first().map(|h| h.dest) else {
        return Ok(());
    };
    let total = around.len();
    let mut steps = 0usize;
    let mut cur = first;
    loop {
        steps += 1;
        let Ok(i) = around.binary_search_by_key(&cur, |h| h.dest) else {
            return Err(Fault::FanBroken(o));
        };
        cur = around[i].prev;
        if cur == first || steps > total {
            break;
        }
    }
    if steps == total {
        Ok(())
    } else {
        Err(Fault::ManyFans(o))
    }
}

/// Builds the half-edges of `loops` over `vertices` vertices (every corner below it; shapes —
/// at least 3 distinct corners — checked by the caller) and checks them: no two faces on the
/// same vertex set, no half-edge in two faces, border gaps linked into closed border loops,
/// every vertex's half-edges one fan.
pub(super) fn build(vertices: usize, loops: &Loops) -> Result<Halves, Fault> {
    if let Some(fault) = same_vertices(loops) {
        return Err(fault);
    }
    // Face half-edges grouped by origin.
    let mut start = vec![0u32; vertices + 1];
    for c in &loops.corners {
        start[*c as usize + 1] += 1;
    }
    for v in 0..vertices {
        start[v + 1] += start[v];
    }
    let mut fill: Vec<u32> = start[..vertices].to_vec();
    let blank = Half {
        dest: NONE,
        face: NONE,
        next: NONE,
        prev: NONE,
    };
    let mut faces = vec![blank; loops.corners.len()];
    let mut triangles = 0u64;
    for f in 0..loops.faces() {
        let c = loops.face(f);
        let n = c.len();
        triangles += (n - 2) as u64;
        for i in 0..n {
            let a = c[i] as usize;
            faces[fill[a] as usize] = Half {
                dest: c[(i + 1) % n],
                face: f as u32,
                next: c[(i + 2) % n],
                prev: c[(i + n - 1) % n],
            };
            fill[a] += 1;
        }
    }
    drop(fill);
    sort_groups(&start, &mut faces, |h| h.dest);
    let leaving = |v: usize| &faces[start[v] as usize..start[v + 1] as usize];
    for v in 0..vertices {
        if let Some(w) = leaving(v).windows(2).find(|w| w[0].dest == w[1].dest) {
            return Err(Fault::TwoFacesOneWay(v as u32, w[0].dest));
        }
    }
    // Border half-edges: the missing twins. border[o] = d for the border half-edge o → d.
    let mut border = vec![NONE; vertices];
    for a in 0..vertices {
        for h in leaving(a) {
            let b = h.dest as usize;
            let twin = leaving(b)
                .binary_search_by_key(&(a as u32), |t| t.dest)
                .is_ok();
            if !twin {
                if border[b] != NONE {
                    return Err(Fault::TwoGaps(b as u32));
                }
                border[b] = a as u32;
            }
        }
    }
    let mut arriving = vec![NONE; vertices]; // destination → origin of a border half-edge
    for (o, d) in border.iter().enumerate() {
        if *d != NONE {
            arriving[*d as usize] = o as u32;
        }
    }
    let mut all_start = vec![0u32; vertices + 1];
    for v in 0..vertices {
        let here = start[v + 1] - start[v] + u32::from(border[v] != NONE);
        all_start[v + 1] = all_start[v] + here;
    }
    let mut all = Vec::with_capacity(all_start[vertices] as usize);
    for o in 0..vertices {
        let mut gap = None;
        let d = border[o];
        if d != NONE {
            let next = border[d as usize];
            let prev = arriving[o];
            if next == NONE || prev == NONE {
                return Err(Fault::BorderOpen(o as u32));
            }
            gap = Some(Half {
                dest: d,
                face: NONE,
                next,
                prev,
            });
        }
        let run = leaving(o);
        match gap {
            None => all.extend_from_slice(run),
            Some(g) => {
                let at = run.partition_point(|h| h.dest < g.dest);
                all.extend_from_slice(&run[..at]);
                all.push(g);
                all.extend_from_slice(&run[at..]);
            }
        }
    }
    drop(faces);
    let built = Halves {
        start: all_start,
        halves: all,
        triangles,
    };
    for v in 0..vertices {
        fan_closes(v as u32, built.leaving(v))?;
    }
    Ok(built)
}
