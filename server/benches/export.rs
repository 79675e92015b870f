//! glTF export of a large scene: 1000 entities, each a cube subdivided to 972 triangles (972k
//! triangles in all), exported to GLB in memory — the time (median of several runs) and the peak
//! heap the export adds on top of the scene (a counting allocator); then the import of that GLB
//! (`meshwork_server::import`: parse, check, weld, manifold check), timed the same way, with the
//! peak heap it adds on top of the file.
//!
//! Run: `cargo bench -p meshwork-server --bench export` (prints a table). Under `cargo test
//! --benches` it runs a 10-entity scene once, to prove it still works.
#![allow(
    clippy::unwrap_used,
    clippy::arithmetic_side_effects,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::print_stdout,
    reason = "benchmark arithmetic and output"
)]
// A `GlobalAlloc` impl is unsafe by definition; it only forwards to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use meshwork_protocol::SessionId;
use meshwork_protocol::scene::Scene;
use meshwork_server::export::{Provenance, export};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: forwards the caller's layout to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn scene(entities: u32) -> Scene {
    meshwork_testkit::subdivided_cubes(entities, 32)
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let (entities, runs) = if measuring { (1000, 7) } else { (10, 1) };
    let s = scene(entities);
    let provenance = Provenance::unrecorded(&s, SessionId([1; 16]));
    let mut times = Vec::new();
    let mut glb = Vec::new();
    let mut bytes = 0;
    let mut peak_extra = 0;
    for _ in 0..runs {
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let t = Instant::now();
        let file = export(&s, None, &provenance).unwrap().to_glb().unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        peak_extra = PEAK.load(Ordering::Relaxed) - base;
        bytes = file.len();
        glb = file;
    }
    times.sort_by(f64::total_cmp);
    println!(
        "export of {entities} entities, {} triangles: median {:.1} ms (min {:.1}, max {:.1}, {runs} runs), GLB {:.1} MB, peak heap during the export {:.1} MB",
        s.triangle_count(),
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        bytes as f64 / 1e6,
        peak_extra as f64 / 1e6,
    );
    let limits = meshwork_server::import::ImportLimits::DEFAULT;
    let mut times = Vec::new();
    let mut peak_extra = 0;
    let mut imported = Vec::new();
    for _ in 0..runs {
        drop(std::mem::take(&mut imported));
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let t = Instant::now();
        imported = meshwork_server::import::import(&glb, &|_| None, &limits).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        peak_extra = PEAK.load(Ordering::Relaxed) - base;
    }
    assert_eq!(imported.len(), entities as usize);
    times.sort_by(f64::total_cmp);
    let faces: usize = imported.iter().map(|e| e.faces.len()).sum();
    println!(
        "import of that GLB: {} entities, {faces} faces: median {:.1} ms (min {:.1}, max {:.1}, {runs} runs), peak heap during the import {:.1} MB",
        imported.len(),
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        peak_extra as f64 / 1e6,
    );
}
