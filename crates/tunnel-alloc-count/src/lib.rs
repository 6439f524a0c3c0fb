//! A counting global allocator, for benchmark builds only.
//!
//! `tunnel-server` and `tunnel-client` install [`Counting`] with their `alloc-count` cargo
//! feature. The feature is off by default and never in a shipped build: without it this crate
//! is not compiled into them at all, so it costs nothing. With it on, and
//! `TUNNEL_ALLOC_COUNT_FILE` set, [`report_from_env`] starts a thread that writes the totals to
//! that file (one [`Counts`] line) whenever they changed, at most every 10 ms. The benchmark
//! (`tunnel-bench`) reads the file before and after a known number of requests and divides:
//! allocations per request, the first lever of issue 14 (the allocator was a quarter of the
//! server's samples in `perf`).
//!
//! What it costs when on: four relaxed atomic additions and one thread-local read per call,
//! a few nanoseconds, which is why it is a separate build and not a runtime switch.
//! The reporter thread's own allocations (formatting the line, the file's path) are not
//! counted, so the totals are those of the program alone.

// `GlobalAlloc` is an unsafe trait; every method only forwards to `System` (see SAFETY below).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Name of the environment variable that turns the reporter on and names its file.
pub const FILE_ENV: &str = "TUNNEL_ALLOC_COUNT_FILE";

/// How often the reporter looks at the counters.
const PERIOD: Duration = Duration::from_millis(10);

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static DEALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the reporter thread, whose allocations are not the program's.
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    // `try_with`: during thread teardown the slot may be gone; count then.
    !UNCOUNTED.try_with(Cell::get).unwrap_or(false)
}

/// The system allocator, counting every call.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counting;

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counting around it touches only atomics and a `const`
// thread-local without a destructor, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Relaxed);
            BYTES.fetch_add(layout.size() as u64, Relaxed);
        }
        // SAFETY: the caller's guarantees about `layout` are passed on as they are.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Relaxed);
            BYTES.fetch_add(layout.size() as u64, Relaxed);
        }
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            DEALLOCS.fetch_add(1, Relaxed);
        }
        // SAFETY: `ptr` came from this allocator, that is from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            REALLOCS.fetch_add(1, Relaxed);
            BYTES.fetch_add(new_size.saturating_sub(layout.size()) as u64, Relaxed);
        }
        // SAFETY: as in `dealloc`, and `new_size` is the caller's, unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Totals since the start of the process.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Calls to `alloc` and `alloc_zeroed`.
    pub allocs: u64,
    /// Calls to `dealloc`.
    pub deallocs: u64,
    /// Calls to `realloc` (a grown `Vec` or `String`: each one may copy).
    pub reallocs: u64,
    /// Bytes asked for by `alloc` calls, plus the growth asked for by `realloc` calls.
    pub bytes: u64,
}

impl Counts {
    /// The totals now.
    pub fn now() -> Self {
        Self {
            allocs: ALLOCS.load(Relaxed),
            deallocs: DEALLOCS.load(Relaxed),
            reallocs: REALLOCS.load(Relaxed),
            bytes: BYTES.load(Relaxed),
        }
    }

    /// The line the reporter writes: `allocs=N deallocs=N reallocs=N bytes=N`.
    pub fn to_line(&self) -> String {
        format!(
            "allocs={} deallocs={} reallocs={} bytes={}\n",
            self.allocs, self.deallocs, self.reallocs, self.bytes
        )
    }

    /// Reads a line written by [`Counts::to_line`]; `None` if a field is missing.
    pub fn parse(line: &str) -> Option<Self> {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
        };
        Some(Self {
            allocs: field("allocs")?,
            deallocs: field("deallocs")?,
            reallocs: field("reallocs")?,
            bytes: field("bytes")?,
        })
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            allocs: self.allocs.saturating_sub(earlier.allocs),
            deallocs: self.deallocs.saturating_sub(earlier.deallocs),
            reallocs: self.reallocs.saturating_sub(earlier.reallocs),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }
}

/// Starts the reporter thread if `TUNNEL_ALLOC_COUNT_FILE` is set; does nothing otherwise.
///
/// The file is replaced atomically (written beside it, then renamed), so a reader never sees a
/// half-written line.
pub fn report_from_env() -> std::io::Result<()> {
    let Some(path) = std::env::var_os(FILE_ENV).map(PathBuf::from) else {
        return Ok(());
    };
    let mut tmp = path.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::thread::Builder::new()
        .name("alloc-count".into())
        .spawn(move || {
            UNCOUNTED.with(|u| u.set(true));
            let mut last = None;
            loop {
                let now = Counts::now();
                if last != Some(now) {
                    let written = std::fs::write(&tmp, now.to_line())
                        .and_then(|()| std::fs::rename(&tmp, &path));
                    if let Err(e) = written {
                        eprintln!("alloc-count: cannot write {}: {e}", path.display());
                        return;
                    }
                    last = Some(now);
                }
                std::thread::sleep(PERIOD);
            }
        })?;
    Ok(())
}
