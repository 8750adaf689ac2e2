//! The global allocator: mimalloc (the default feature `mimalloc`), called the way the
//! system allocator is called, and the hook that gives freed memory back.
//!
//! Why not the `mimalloc` crate's `MiMalloc`: it sends every allocation through
//! `mi_malloc_aligned(size, align)`, and mimalloc takes its over-allocating aligned path for
//! any size it does not know to be naturally aligned (24, 80, 8,200 bytes...), even for an
//! alignment of 1. Three such allocations a proxied request (hyper's buffers among them) cost
//! more than the rest of the allocator's work. Here an alignment that every mimalloc block has
//! anyway (8 bytes: blocks are whole words in word-aligned pages) takes plain `mi_malloc`, as
//! Rust's `System` does with glibc's `malloc`; larger alignments (tokio's 128-byte task
//! cells) keep the aligned calls. Measured with callgrind, see README "Memory" and the
//! commit that made this.
//!
//! The only `unsafe` code of the project. Each call is an FFI call into mimalloc with the
//! contract `GlobalAlloc` gives us.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment of every block `mi_malloc` returns (a machine word).
const PLAIN_ALIGN: usize = std::mem::size_of::<usize>();

/// mimalloc, with plain calls for word-aligned layouts.
pub(crate) struct Mimalloc;

// SAFETY: each method returns memory from mimalloc that fits `layout` (plain calls only when
// `layout.align()` <= the word alignment every mimalloc block has; aligned calls otherwise)
// or null on failure, and frees or resizes only pointers this allocator returned, which is
// what `GlobalAlloc` requires.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: FFI with a size and a power-of-two alignment, as mimalloc requires.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract); `mi_free` frees
        // plain and aligned blocks alike.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (the caller's contract); the
        // block keeps `layout.align()` through either call.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (`mimalloc.h`; libmimalloc-sys
/// names only the options of v2's numbering).
const MI_OPTION_PURGE_DELAY: mi::mi_option_t = 15;

/// Milliseconds before mimalloc gives back pages that became free (its default: 1,000).
/// With the default, a burst of connections that closes and is followed at once by another
/// does not reuse the first one's pages: 1,000 connections by oha for a second, then 1,000 by
/// wrk 0.3 s later (the comparison harness's warm-up and run at 1,000 connections), one
/// worker: peak RSS 51.2 MiB, 40.0 with 100 ms (the first burst alone: 39.6).
const PURGE_DELAY_MS: std::ffi::c_long = 100;

/// Sets mimalloc's options; call before serving.
pub(crate) fn configure() {
    // SAFETY: `mi_option_set` takes an option number and a value, no pointer; mimalloc reads
    // options at any time, so setting one while allocating is allowed.
    unsafe { mi::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

/// Gives back to the system what this thread's connections freed (`weir serve` calls it on a
/// worker a second after connections closed; see `ProxyOptions::release_memory`). mimalloc
/// keeps freed pages until its next allocation work purges them, and an idle sidecar does
/// none.
pub(crate) fn release_memory() {
    // SAFETY: `mi_collect` takes no pointer and may be called on any thread at any time; it
    // only walks the calling thread's heap and mimalloc's own arenas.
    unsafe { mi::mi_collect(false) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every layout the proxy asks for comes back aligned, zeroed when asked, and keeps its
    /// bytes through a realloc, on the plain and on the aligned path.
    #[test]
    fn blocks_fit_their_layout_on_both_paths() {
        let alloc = Mimalloc;
        for align in [1, 2, 4, 8, 16, 64, 128, 4096] {
            for size in [1, 7, 8, 24, 80, 1000, 8200, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size; every pointer is freed with its layout.
                unsafe {
                    let p = alloc.alloc_zeroed(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "{size} bytes aligned to {align}");
                    assert!((0..size).all(|i| *p.add(i) == 0), "zeroed");
                    p.write_bytes(0xab, size);
                    let q = alloc.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "realloc kept the alignment");
                    assert!(
                        (0..size).all(|i| *q.add(i) == 0xab),
                        "realloc kept the bytes"
                    );
                    alloc.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                }
            }
        }
    }
}
