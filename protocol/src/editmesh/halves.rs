//! The derived half-edges of an [`EditMesh`](super::EditMesh), grouped by origin into fans (the
//! half-edges leaving a vertex, sorted by destination).
//!
//! Two layers. The **base** is what the last full build produced: three flat arrays (origins in
//! key order, where each fan starts, every half-edge), written in one pass with three
//! allocations, so a whole-mesh operation (Catmull–Clark, mirror, a decode) pays no map entry or
//! allocation per element. The **overlay** holds the fans a local edit changed since then, each
//! copied out of the base at its first change (an empty fan hides a base fan that is gone). A
//! lookup asks the overlay first, then binary-searches the base; the next full build replaces
//! both. Between full builds the overlay holds at most the fans of the vertices edited since, so
//! the memory is bounded by twice the half-edges.
//!
//! Iteration is in `(origin, destination)` key order, as the single map this replaced, and
//! equality is equality of the half-edges, however they are split between the layers.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::cmp::Ordering;

use super::{HalfEdge, VertexKey};

type Key = (VertexKey, VertexKey);

/// The half-edges keyed by `(origin, destination)` (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct HalfEdges {
    /// Base: the origins with at least one half-edge, in key order.
    origins: Vec<VertexKey>,
    /// Base: the fan of `origins[i]` is `halves[start[i]..start[i + 1]]`.
    start: Vec<u32>,
    /// Base: every half-edge in key order.
    halves: Vec<(Key, HalfEdge)>,
    /// Fans changed since the base was built, sorted by destination; empty when gone.
    overlay: BTreeMap<VertexKey, Vec<(Key, HalfEdge)>>,
    len: usize,
}

/// Builds the base of a [`HalfEdges`] fan by fan, in origin order.
pub(super) struct Builder {
    built: HalfEdges,
}

impl Builder {
    pub fn with_capacity(origins: usize, halves: usize) -> Self {
        let mut start = Vec::with_capacity(origins + 1);
        start.push(0);
        Self {
            built: HalfEdges {
                origins: Vec::with_capacity(origins),
                start,
                halves: Vec::with_capacity(halves),
                ..HalfEdges::default()
            },
        }
    }

    /// Adds the fan of `origin` (after every smaller origin), its half-edges sorted by
    /// destination. An empty fan adds nothing.
    pub fn fan(&mut self, origin: VertexKey, fan: impl Iterator<Item = (VertexKey, HalfEdge)>) {
        let b = &mut self.built;
        debug_assert!(
            b.origins.last().is_none_or(|last| *last < origin),
            "fans out of order: {:?} then {origin:?}",
            b.origins.last()
        );
        b.halves.extend(fan.map(|(dest, h)| ((origin, dest), h)));
        let end = b.halves.len() as u32;
        if Some(&end) != b.start.last() {
            b.origins.push(origin);
            b.start.push(end);
        }
    }

    pub fn finish(self) -> HalfEdges {
        let mut built = self.built;
        built.len = built.halves.len();
        built
    }
}

impl HalfEdges {
    /// The number of half-edges.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// No half-edges.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn base_fan(&self, v: VertexKey) -> &[(Key, HalfEdge)] {
        match self.origins.binary_search(&v) {
            Ok(i) => &self.halves[self.start[i] as usize..self.start[i + 1] as usize],
            Err(_) => &[],
        }
    }

    /// The half-edges leaving `v`, sorted by destination.
    #[must_use]
    pub fn leaving(&self, v: VertexKey) -> &[(Key, HalfEdge)] {
        match self.overlay.get(&v) {
            Some(fan) => fan,
            None => self.base_fan(v),
        }
    }

    /// The half-edge `a → b`.
    #[must_use]
    pub fn get(&self, key: &Key) -> Option<&HalfEdge> {
        let fan = self.leaving(key.0);
        fan.binary_search_by(|(k, _)| k.1.cmp(&key.1))
            .ok()
            .map(|i| &fan[i].1)
    }

    /// Whether `a → b` exists.
    #[must_use]
    pub fn contains_key(&self, key: &Key) -> bool {
        self.get(key).is_some()
    }

    /// The fan of `v` in the overlay, copied from the base at its first change.
    fn fan_mut(&mut self, v: VertexKey) -> &mut Vec<(Key, HalfEdge)> {
        if !self.overlay.contains_key(&v) {
            let copy = self.base_fan(v).to_vec();
            self.overlay.insert(v, copy);
        }
        self.overlay.entry(v).or_default()
    }

    /// Sets `a → b`, returning what was there.
    pub(super) fn insert(&mut self, key: Key, h: HalfEdge) -> Option<HalfEdge> {
        let fan = self.fan_mut(key.0);
        match fan.binary_search_by(|(k, _)| k.1.cmp(&key.1)) {
            Ok(i) => Some(core::mem::replace(&mut fan[i].1, h)),
            Err(i) => {
                fan.insert(i, (key, h));
                self.len += 1;
                None
            }
        }
    }

    /// Removes `a → b`, returning it.
    pub(super) fn remove(&mut self, key: &Key) -> Option<HalfEdge> {
        self.get(key)?;
        let fan = self.fan_mut(key.0);
        let i = fan.binary_search_by(|(k, _)| k.1.cmp(&key.1)).ok()?;
        let (_, h) = fan.remove(i);
        if fan.is_empty() && self.origins.binary_search(&key.0).is_err() {
            // Nothing to hide in the base.
            self.overlay.remove(&key.0);
        }
        self.len -= 1;
        Some(h)
    }

    /// Every fan in origin order (base fans the overlay replaced are skipped).
    fn fans(&self) -> impl Iterator<Item = &[(Key, HalfEdge)]> + '_ {
        let mut base = self
            .origins
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    *v,
                    &self.halves[self.start[i] as usize..self.start[i + 1] as usize],
                )
            })
            .peekable();
        let mut over = self
            .overlay
            .iter()
            .map(|(v, f)| (*v, f.as_slice()))
            .peekable();
        core::iter::from_fn(move || {
            let next = match (base.peek(), over.peek()) {
                (None, None) => return None,
                (Some(_), None) => base.next(),
                (None, Some(_)) => over.next(),
                (Some((b, _)), Some((o, _))) => match b.cmp(o) {
                    Ordering::Less => base.next(),
                    Ordering::Greater => over.next(),
                    Ordering::Equal => {
                        base.next();
                        over.next()
                    }
                },
            };
            next.map(|(_, fan)| fan)
        })
        .filter(|fan| !fan.is_empty())
    }

    /// Every half-edge in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &HalfEdge)> + '_ {
        self.fans().flatten().map(|(k, h)| (k, h))
    }

    /// Every key in order.
    pub fn keys(&self) -> impl Iterator<Item = &Key> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// Every half-edge in key order.
    pub fn values(&self) -> impl Iterator<Item = &HalfEdge> + '_ {
        self.iter().map(|(_, h)| h)
    }
}

impl PartialEq for HalfEdges {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for HalfEdges {}

impl core::ops::Index<&Key> for HalfEdges {
    type Output = HalfEdge;

    /// # Panics
    /// If `a → b` does not exist (as `BTreeMap`'s index).
    fn index(&self, key: &Key) -> &HalfEdge {
        #[allow(
            clippy::expect_used,
            reason = "indexing a missing key panics, as a map's does"
        )]
        self.get(key).expect("no such half-edge")
    }
}

impl FromIterator<(Key, HalfEdge)> for HalfEdges {
    /// One at a time, in any order (tests).
    fn from_iter<I: IntoIterator<Item = (Key, HalfEdge)>>(iter: I) -> Self {
        let mut all = Self::default();
        for (k, h) in iter {
            all.insert(k, h);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use alloc::collections::BTreeMap;

    use super::{Builder, HalfEdge, HalfEdges, Key};
    use crate::editmesh::{ElementId, FaceKey, VertexKey};
    use crate::ids::{AuthorId, CommandId};

    fn v(i: u32) -> VertexKey {
        VertexKey(ElementId {
            by: CommandId {
                lamport: 1,
                author: AuthorId(1),
            },
            index: i,
        })
    }

    fn half(tag: u32) -> HalfEdge {
        HalfEdge {
            face: (!tag.is_multiple_of(3)).then(|| FaceKey(v(tag).0)),
            next: v(tag),
            prev: v(tag + 1),
        }
    }

    /// Random inserts and removals on a built base, against a plain map: every query, the
    /// iteration order, the length and equality agree, whichever layer holds a fan.
    #[test]
    fn the_layers_behave_as_one_map() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rnd = |n: u32| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % u64::from(n)) as u32
        };
        for round in 0..40 {
            let mut model: BTreeMap<Key, HalfEdge> = BTreeMap::new();
            for _ in 0..rnd(60) {
                let (a, b) = (rnd(12), rnd(12));
                model.insert((v(a), v(b)), half(rnd(100)));
            }
            let mut built = Builder::with_capacity(12, model.len());
            for o in 0..14 {
                let fan: Vec<_> = model
                    .iter()
                    .filter(|((a, _), _)| *a == v(o))
                    .map(|((_, b), h)| (*b, *h))
                    .collect();
                built.fan(v(o), fan.into_iter());
            }
            let mut layered = built.finish();
            assert_eq!(layered.len(), model.len());
            for _ in 0..(round * 4) {
                let key = (v(rnd(14)), v(rnd(14)));
                if rnd(3) == 0 {
                    assert_eq!(layered.remove(&key), model.remove(&key));
                } else {
                    let h = half(rnd(100));
                    assert_eq!(layered.insert(key, h), model.insert(key, h));
                }
                assert_eq!(layered.len(), model.len());
            }
            assert!(layered.iter().map(|(k, h)| (*k, *h)).eq(model.clone()));
            for a in 0..14 {
                let fan: Vec<_> = layered.leaving(v(a)).iter().map(|(k, _)| *k).collect();
                let want: Vec<_> = model.keys().filter(|(o, _)| *o == v(a)).copied().collect();
                assert_eq!(fan, want);
                for b in 0..14 {
                    assert_eq!(layered.get(&(v(a), v(b))), model.get(&(v(a), v(b))));
                }
            }
            let rebuilt: HalfEdges = model.clone().into_iter().collect();
            assert_eq!(layered, rebuilt);
            assert_eq!(layered.is_empty(), model.is_empty());
        }
    }
}
