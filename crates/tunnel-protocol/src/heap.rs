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
