//! Benchmark builds only (`--features alloc-count`): every allocation of this process is
//! counted, and the totals go to the file named by `TUNNEL_ALLOC_COUNT_FILE` (see
//! `tunnel-alloc-count`). Kept in a file of its own so that `main.rs` carries two lines of it.

#[global_allocator]
static ALLOC: tunnel_alloc_count::Counting = tunnel_alloc_count::Counting;

/// Starts the reporter when `TUNNEL_ALLOC_COUNT_FILE` is set.
pub(crate) fn start() {
    if let Err(e) = tunnel_alloc_count::report_from_env() {
        eprintln!("tunnel-server: allocation counts not reported: {e}");
    }
}
