//! An oversized frame is refused before anything is allocated for it: a counting global
//! allocator watches the decoder and the stream reader.
#![allow(
    clippy::unwrap_used,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::panic,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]
// A `GlobalAlloc` impl is unsafe by definition; it only forwards to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use meshwork_protocol::{ClientMsg, FrameError, FrameReader, MAX_FRAME_BYTES, decode_frame};

struct Counting;

static ALLOCATED_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to `System`, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED_BYTES.fetch_add(layout.size(), Ordering::SeqCst);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED_BYTES.fetch_add(new_size, Ordering::SeqCst);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One test only in this binary, so no other thread allocates while we count.
#[test]
fn oversized_frames_are_refused_before_allocation() {
    let huge = u32::MAX.to_le_bytes();
    let just_over = u32::try_from(MAX_FRAME_BYTES + 1).unwrap().to_le_bytes();

    let before = ALLOCATED_BYTES.load(Ordering::SeqCst);
    let a = decode_frame::<ClientMsg>(&huge);
    let b = decode_frame::<ClientMsg>(&just_over);
    let after = ALLOCATED_BYTES.load(Ordering::SeqCst);
    assert!(matches!(a, Err(FrameError::TooLarge { .. })));
    assert!(matches!(b, Err(FrameError::TooLarge { .. })));
    assert_eq!(
        after - before,
        0,
        "decoding a refused header allocated {} bytes",
        after - before
    );

    // The stream reader buffers only the 4 header bytes it was given, never the announced size.
    let mut reader = FrameReader::new();
    let before = ALLOCATED_BYTES.load(Ordering::SeqCst);
    let r = reader.push(&huge);
    let after = ALLOCATED_BYTES.load(Ordering::SeqCst);
    assert!(matches!(r, Err(FrameError::TooLarge { .. })));
    assert!(
        after - before < 64,
        "reader allocated {} bytes for a refused frame",
        after - before
    );
}
