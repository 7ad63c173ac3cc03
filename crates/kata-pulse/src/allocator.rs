//! The agent's memory allocator: jemalloc, configured for a small, flat
//! resident size. Every scrape parses every shim body and frees it again
//! while a few long-lived pieces (the compact cache, new sandboxes' keys)
//! are made among those temporaries. glibc's malloc, even limited to two
//! arenas and trimmed every 5 s, let its heap grow by about 12% in 15
//! minutes of churn and kept growing; jemalloc keeps objects of one size
//! class together and hands freed pages back after a second. The runs and
//! the options tried are in docs/benchmarks.md ("allocator").

use std::sync::atomic::{AtomicU64, Ordering};

/// Not under `cargo fuzz`: its sanitizer watches the system allocator.
#[cfg(not(fuzzing))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main` (from the symbol the prefixed
/// build of tikv-jemalloc-sys looks up). One arena: allocation is not the
/// agent's bottleneck, and each arena keeps pages of its own. No thread
/// caches: the blocking pool has up to 32 threads and each cache holds
/// freed memory of its own (37 MiB instead of 15 with them). Dirty pages
/// are returned after 1 s: at once (0) cost 65% more CPU. An operator can
/// still override any of them with `_RJEM_MALLOC_CONF`, read after these.
pub const OPTIONS: &str = "narenas:1,tcache:false,dirty_decay_ms:1000,muzzy_decay_ms:0";

/// [`OPTIONS`] as the NUL-terminated C string jemalloc reads.
static OPTIONS_C: [u8; OPTIONS.len() + 1] = {
    let mut c = [0u8; OPTIONS.len() + 1];
    let bytes = OPTIONS.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        c[i] = bytes[i];
        i += 1;
    }
    c
};

#[cfg(not(fuzzing))]
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: Option<&u8> = Some(&OPTIONS_C[0]);

/// How often the allocator's statistics are refreshed for
/// `kata_pulse_heap_bytes`.
pub const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The heap as jemalloc counts it: what the agent has allocated, and what
/// the allocator holds resident for it (its pages, with their free space
/// and its metadata). RSS alone cannot tell the agent's data growing from
/// the allocator's fragmentation.
pub struct Heap {
    pub in_use: u64,
    pub resident: u64,
}

static HEAP_IN_USE: AtomicU64 = AtomicU64::new(0);
static HEAP_RESIDENT: AtomicU64 = AtomicU64::new(0);

/// [`Heap`] at the last sample (zero before the first).
pub fn heap() -> Heap {
    Heap {
        in_use: HEAP_IN_USE.load(Ordering::Relaxed),
        resident: HEAP_RESIDENT.load(Ordering::Relaxed),
    }
}

/// Refreshes [`heap`] every [`SAMPLE_EVERY`]. jemalloc's totals are only
/// brought up to date by advancing its epoch (a walk over its arenas'
/// counters), so not once per scrape.
pub async fn sample_periodically() {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        if let Some(now) = read_heap() {
            HEAP_IN_USE.store(now.in_use, Ordering::Relaxed);
            HEAP_RESIDENT.store(now.resident, Ordering::Relaxed);
        }
    }
}

fn read_heap() -> Option<Heap> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    Some(Heap {
        in_use: stats::allocated::read().ok()? as u64,
        resident: stats::resident::read().ok()? as u64,
    })
}

#[cfg(test)]
mod tests {
    /// The options are the ones jemalloc runs with.
    #[test]
    fn jemalloc_runs_with_the_options() {
        use tikv_jemalloc_ctl::raw;
        // SAFETY: these names are read-only jemalloc options of these types.
        let narenas: u32 = unsafe { raw::read(b"opt.narenas\0") }.unwrap();
        let tcache: bool = unsafe { raw::read(b"opt.tcache\0") }.unwrap();
        let decay: isize = unsafe { raw::read(b"opt.dirty_decay_ms\0") }.unwrap();
        if std::env::var_os("_RJEM_MALLOC_CONF").is_none() {
            assert_eq!((narenas, tcache, decay), (1, false, 1000));
        }
    }

    /// The figures follow what is allocated and freed. Margins leave room
    /// for other tests allocating in the same process meanwhile.
    #[test]
    fn heap_counts_what_is_held() {
        let before = super::read_heap().unwrap();
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let held = super::read_heap().unwrap();
        assert!(held.in_use >= before.in_use + (48 << 20));
        assert!(held.resident >= held.in_use);
        drop(block);
        let after = super::read_heap().unwrap();
        assert!(after.in_use + (48 << 20) <= held.in_use);
    }
}
