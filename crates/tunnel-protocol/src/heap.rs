//! Heap settings for a process that carries tunnel traffic (server and client).
//!
//! Every data frame arrives in a buffer of its own (up to 64 KiB), freed as soon as its bytes
//! have been written on. With glibc's defaults (give memory back to the kernel once 128 KiB at
//! the top of the heap are free; an mmap threshold that moves with the workload) a transfer
//! keeps returning those pages to the kernel and faulting them in again, zero-filled, for the
//! next frames: measured, a fifth of the server's CPU time during a download. Keeping up to
//! 1 MiB of free heap, and serving every allocation below 1 MiB from the heap, took a loopback
//! download through the tunnel from about 975 to 1600 MB/s, and the server's peak RSS while
//! streaming went *down* (13 to 10 MiB), since the heap no longer shrinks and regrows.
//!
//! The environment still wins: a `MALLOC_TRIM_THRESHOLD_` or `MALLOC_MMAP_THRESHOLD_` set by
//! the operator (glibc's own tuning variables) is left alone.
//!
//! Both binaries allocate with mimalloc (glibc's malloc was a fifth of the instructions of a
//! small request, callgrind): the glibc settings then only matter for the `alloc-count`
//! benchmark build, which counts over the system allocator. mimalloc's defaults cost memory
//! we promised not to spend: it gives freed memory back 10 ms later and commits its arenas
//! eagerly, which took the server's peak RSS while streaming from 18 to 36 MiB, the client's
//! from 140 to 157 MiB and an idle tunnel on the server from 22 to 41 KiB (`tunnel-bench run
//! --quick`). Purging at once and committing on demand (`MIMALLOC_PURGE_DELAY=0`,
//! `MIMALLOC_ARENA_EAGER_COMMIT=0`) brought them back to glibc's figures (17-20 MiB, 118-137
//! MiB, 22 KiB) and kept the instructions saved. The commit default is read before `main`
//! runs, so the build sets it (`.cargo/config.toml`); [`tune`] sets the purge delay, unless the
//! environment does.
//!
//! The purge delay is the caller's: purging at once has a price per request where a process
//! allocates in bursts. The client's forwarding (current-thread runtime, a request's buffers
//! freed together) kept emptying mimalloc pages and faulting them in again: 0.85 page faults
//! per small request and the TLB shootdowns of giving them back, about 2 of its 13 µs of CPU
//! per request. [`CLIENT_PURGE_DELAY_MS`] keeps a freed page 10 ms; the server keeps purging
//! at once ([`SERVER_PURGE_DELAY_MS`]), where 10 ms cost 2.5 MiB of peak RSS while streaming
//! (15.9 to 18.4 MiB, over its 16 MiB goal) and saved no CPU that could be seen.

/// The global allocator of both binaries: mimalloc, entered by its plain functions when the
/// alignment asked for is one every mimalloc block has anyway.
///
/// The `mimalloc` crate's allocator calls `mi_malloc_aligned` for every allocation, whatever
/// the alignment; mimalloc then tries a free block of the size's page that happens to be
/// aligned, and past 1 KiB, or when it is not, takes its generic aligned path. Callgrind counted
/// 28 allocations per small request on the server at 70 instructions each, a fifth of them on
/// the generic path at 210. `mi_malloc` is mimalloc's 15-instruction fast path, and its blocks
/// are aligned to 16 bytes from 16 bytes on, to 8 below: the same rule the standard library's
/// `System` allocator applies to `malloc` (an alignment of at most 16 that is at most the
/// size), with the aligned functions for the rest.
#[derive(Debug, Clone, Copy, Default)]
pub struct MiMalloc;

/// The alignment every `mi_malloc` block of at least this size has (`MI_MAX_ALIGN_SIZE`).
const MI_MAX_ALIGN: usize = 16;

/// Whether `mi_malloc` (not the aligned variant) gives what `align` asks for `size` bytes.
fn plain(align: usize, size: usize) -> bool {
    align <= MI_MAX_ALIGN && align <= size
}

// SAFETY: every function hands mimalloc a layout's size and alignment as mimalloc's own
// GlobalAlloc did, only choosing the unaligned entry point where its blocks are aligned
// enough (see above); memory is freed with `mi_free`, which takes blocks of either kind.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: a size (non-zero, as GlobalAlloc promises) and a power-of-two alignment.
        unsafe {
            if plain(align, size) {
                libmimalloc_sys::mi_malloc(size).cast()
            } else {
                libmimalloc_sys::mi_malloc_aligned(size, align).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(align, size) {
                libmimalloc_sys::mi_zalloc(size).cast()
            } else {
                libmimalloc_sys::mi_zalloc_aligned(size, align).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from mimalloc.
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        // SAFETY: `ptr` came from this allocator with `layout`; the new size is non-zero.
        unsafe {
            if plain(align, new_size) {
                libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, align).cast()
            }
        }
    }
}

/// Bytes of free heap kept instead of returned to the kernel, and the size from which
/// allocations get their own mapping.
pub const KEEP_FREE_BYTES: i32 = 1024 * 1024;

/// The server's purge delay: at once (see the module's documentation).
pub const SERVER_PURGE_DELAY_MS: u32 = 0;
/// The client's purge delay: measured with wrk `-c50` through the tunnel to nginx, its CPU
/// per small request went from 13.4-14.7 to 11.3-11.9 µs (MIMALLOC_PURGE_DELAY=0 against 10,
/// two pairs; 14.3-15.4 to 13.6-13.7 µs in two more with a build running alongside), and its
/// peak RSS during a 1 GiB download (`--no-inspect`) stayed at 15 MiB.
pub const CLIENT_PURGE_DELAY_MS: u32 = 10;

/// Applies the settings above, with mimalloc giving freed pages back `purge_delay_ms` after
/// they empty; a no-op on other platforms and C libraries.
pub fn tune(purge_delay_ms: u32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
            set(libc::M_TRIM_THRESHOLD, KEEP_FREE_BYTES);
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            set(libc::M_MMAP_THRESHOLD, KEEP_FREE_BYTES);
        }
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        set_mimalloc(MI_OPTION_PURGE_DELAY, libc::c_long::from(purge_delay_ms));
    }
}

/// `mi_option_purge_delay` in the `mi_option_t` enum of the mimalloc (v3) that
/// libmimalloc-sys builds (its own Rust constants follow an older numbering); the test checks
/// the default behind it.
const MI_OPTION_PURGE_DELAY: libc::c_int = 15;
/// `mi_option_arena_eager_commit`, likewise (set at build time, see `.cargo/config.toml`).
#[cfg(test)]
const MI_OPTION_ARENA_EAGER_COMMIT: libc::c_int = 4;

#[allow(unsafe_code)]
mod mi {
    // The C library these are in, linked even though nothing of its Rust side is used.
    use libmimalloc_sys as _;

    extern "C" {
        /// Declared here as in mimalloc.h (libmimalloc-sys declares it only with a feature
        /// that needs another crate).
        pub(super) fn mi_option_set(option: libc::c_int, value: libc::c_long);
        #[cfg(test)]
        pub(super) fn mi_option_get(option: libc::c_int) -> libc::c_long;
    }
}

#[allow(unsafe_code)]
fn set_mimalloc(option: libc::c_int, value: libc::c_long) {
    // SAFETY: `mi_option_set` stores a value in mimalloc's option table, for an option that
    // exists (see the constants' test); it reads no memory of ours. mimalloc says it is not
    // thread safe: `tune` runs first thing in `main`, before any other thread.
    unsafe { mi::mi_option_set(option, value) }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set(param: libc::c_int, value: libc::c_int) {
    // SAFETY: `mallopt` only sets a parameter of glibc's allocator; it takes the allocator's
    // own locks, touches no memory of ours, and reports an invalid value by returning 0,
    // which leaves the default in place (harmless, so the result is not checked).
    unsafe {
        libc::mallopt(param, value);
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    use super::MiMalloc;

    /// Every size and alignment gets a block aligned as asked, usable whole, that grows and
    /// shrinks with its contents kept.
    #[test]
    #[allow(unsafe_code)]
    fn blocks_are_aligned_as_asked_and_keep_their_bytes() {
        let a = MiMalloc;
        for align in [1usize, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1usize, 3, 7, 8, 12, 15, 16, 17, 24, 100, 1024, 1025, 70_000] {
                let layout = Layout::from_size_align(size, align).expect("layout");
                // SAFETY: non-zero sizes; each block is written within its size and freed
                // once, with the layout it has at that point.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xA5, size);
                    a.dealloc(p, layout);
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed: size {size} align {align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.dealloc(z, layout);
                    for new in [size * 2 + 1, size.div_ceil(2)] {
                        let p = a.alloc(layout);
                        p.write_bytes(0xA5, size);
                        let q = a.realloc(p, layout, new);
                        assert!(!q.is_null());
                        assert_eq!(q as usize % align, 0, "realloc {size}->{new} align {align}");
                        let kept = new.min(size);
                        assert!(std::slice::from_raw_parts(q, kept)
                            .iter()
                            .all(|&b| b == 0xA5));
                        a.dealloc(q, Layout::from_size_align(new, align).expect("layout"));
                    }
                }
            }
        }
    }

    #[test]
    fn tuning_is_harmless_to_repeat() {
        super::tune(super::SERVER_PURGE_DELAY_MS);
        super::tune(super::CLIENT_PURGE_DELAY_MS);
        super::tune(super::SERVER_PURGE_DELAY_MS);
        let v: Vec<u8> = vec![7; 200 * 1024];
        assert_eq!(v.iter().map(|&b| u64::from(b)).sum::<u64>(), 7 * 200 * 1024);
    }

    #[test]
    #[allow(unsafe_code)]
    fn mimalloc_options_are_the_ones_meant() {
        use super::{mi, MI_OPTION_ARENA_EAGER_COMMIT, MI_OPTION_PURGE_DELAY};
        // SAFETY: reads an option of mimalloc's table.
        let get = |option| unsafe { mi::mi_option_get(option) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // Set by `tune` (another test) or mimalloc's default of 1,000 ms.
            let delay = get(MI_OPTION_PURGE_DELAY);
            assert!(
                [
                    super::SERVER_PURGE_DELAY_MS,
                    super::CLIENT_PURGE_DELAY_MS,
                    1000
                ]
                .iter()
                .any(|&ms| libc::c_long::from(ms) == delay),
                "{delay}"
            );
        }
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
            // The build's define (.cargo/config.toml), not mimalloc's default of 2.
            assert_eq!(get(MI_OPTION_ARENA_EAGER_COMMIT), 0);
        }
    }
}
