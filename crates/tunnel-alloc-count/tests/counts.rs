//! The allocator counts this test binary's own allocations, and the line format round-trips.

use tunnel_alloc_count::{Counting, Counts};

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn counts_allocations_frees_and_growth() {
    let before = Counts::now();
    let mut v: Vec<u64> = Vec::with_capacity(4);
    v.extend(0..1000);
    let boxed = std::hint::black_box(Box::new([7u8; 100]));
    drop(boxed);
    let after = Counts::now();
    drop(v);
    let d = after.since(&before);
    // Other tests may run on other threads at the same time: lower bounds only.
    assert!(d.allocs >= 2, "{d:?}");
    assert!(d.reallocs >= 1, "{d:?}");
    assert!(d.deallocs >= 1, "{d:?}");
    assert!(d.bytes >= 8 * 1000 + 100, "{d:?}");
}

#[test]
fn line_round_trips() {
    let c = Counts {
        allocs: 12,
        deallocs: 11,
        reallocs: 3,
        bytes: 4096,
    };
    assert_eq!(c.to_line(), "allocs=12 deallocs=11 reallocs=3 bytes=4096\n");
    assert_eq!(Counts::parse(&c.to_line()), Some(c));
    assert_eq!(Counts::parse("allocs=1 bytes=2"), None);
}
