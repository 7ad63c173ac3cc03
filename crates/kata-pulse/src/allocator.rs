//! glibc's malloc gives threads that allocate at the same time arenas of
//! their own (up to 8 per core) and keeps what is freed in each. Parsing
//! runs on up to 32 blocking threads, so each scrape leaves garbage in many
//! arenas: four times the RSS of two arenas at 100 sandboxes and 2 scrapes
//! a second (docs/benchmarks.md, "allocator", has the runs, mimalloc's
//! among them, and why limiting arenas was chosen).

use std::sync::atomic::{AtomicU64, Ordering};

/// Arenas glibc may create.
pub const ARENA_MAX: i32 = 2;

/// Limits glibc's arenas to [`ARENA_MAX`] unless `MALLOC_ARENA_MAX` is set
/// (an operator's own choice wins). Call first in `main`, before any
/// thread exists; holds in the static (crt-static) image as well.
pub fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only sets a malloc parameter; no other thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
    }
}

/// How often memory freed since is handed back to the kernel.
pub const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Hands the free pages of glibc's heaps back to the kernel every
/// [`TRIM_EVERY`]: a scrape parses every body and frees it all again, and
/// without this the peak of the last scrape stays in RSS until the next.
/// Then samples the heap for [`heap`].
pub async fn trim_periodically() {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        // Both walk the heaps (about a millisecond, holding each arena's
        // lock): off the async workers, and not once per scrape.
        let _ = tokio::task::spawn_blocking(|| {
            // SAFETY: malloc_trim only returns free memory to the kernel.
            unsafe { libc::malloc_trim(0) };
            let now = read_heap();
            HEAP_IN_USE.store(now.in_use, Ordering::Relaxed);
            HEAP_FREE.store(now.free, Ordering::Relaxed);
        })
        .await;
    }
}

/// The malloc heap as glibc sees it, for `kata_pulse_heap_bytes`: what the
/// agent holds (chunks cached per thread count as held), and the free
/// chunks between and at the top (their pages may already be trimmed, so
/// this is address space, not RSS). RSS alone cannot tell the agent's data
/// growing from the allocator's fragmentation.
pub struct Heap {
    pub in_use: u64,
    pub free: u64,
}

static HEAP_IN_USE: AtomicU64 = AtomicU64::new(0);
static HEAP_FREE: AtomicU64 = AtomicU64::new(0);

/// [`Heap`] at the last trim (zero before the first).
pub fn heap() -> Heap {
    Heap {
        in_use: HEAP_IN_USE.load(Ordering::Relaxed),
        free: HEAP_FREE.load(Ordering::Relaxed),
    }
}

fn read_heap() -> Heap {
    // SAFETY: mallinfo2 only reads malloc's statistics.
    let m = unsafe { libc::mallinfo2() };
    Heap {
        in_use: (m.uordblks + m.hblkhd) as u64,
        free: m.fordblks as u64,
    }
}

#[cfg(test)]
mod tests {
    /// The figures follow what is allocated and freed (here mmapped, as a
    /// block this large is, which counts as in use). Margins leave room for
    /// other tests allocating in the same process meanwhile.
    #[test]
    fn heap_counts_what_is_held() {
        let before = super::read_heap().in_use;
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let held = super::read_heap().in_use;
        assert!(held >= before + (48 << 20), "{before} -> {held}");
        drop(block);
        let after = super::read_heap().in_use;
        assert!(after + (48 << 20) <= held, "{held} -> {after}");
    }
}
