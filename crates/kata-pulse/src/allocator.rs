//! The agent's memory allocator: jemalloc, configured for a small, flat
//! resident size. Every scrape parses every shim body and frees it again
//! while a few long-lived pieces (the compact cache, new sandboxes' keys)
//! are made among those temporaries. glibc's malloc, even limited to two
//! arenas and trimmed every 5 s, let its heap grow by about 12% in 15
//! minutes of churn and kept growing; jemalloc keeps objects of one size
//! class together and hands freed pages back after a second. The runs and
//! the options tried are in docs/benchmarks.md ("allocator").

use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Not under `cargo fuzz`: its sanitizer watches the system allocator.
#[cfg(not(fuzzing))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main` (from the symbol the prefixed
/// build of tikv-jemalloc-sys looks up). One arena: allocation is not the
/// agent's bottleneck, and each arena keeps pages of its own. No thread
/// caches: the blocking pool has up to 32 threads and each cache holds
/// freed memory of its own (37 MiB with them, 12 without, both returning
/// pages at once). Dirty pages are returned after 1 s: at once cost about
/// 80% more CPU. An operator can still override any of them with
/// `_RJEM_MALLOC_CONF`, read after these.
pub const OPTIONS: &str = "narenas:1,tcache:false,dirty_decay_ms:1000,muzzy_decay_ms:0";

/// [`OPTIONS`] as the NUL-terminated C string jemalloc reads.
#[cfg(not(fuzzing))]
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

/// Every [`SAMPLE_EVERY`]: hands back the pages freed more than the decay
/// time ago, then refreshes [`heap`]. jemalloc only checks its decay while
/// it allocates, so an agent scraped once a minute would otherwise keep the
/// last scrape's pages until the next; and its totals are only brought up
/// to date by advancing its epoch, so not once per scrape.
pub async fn sample_periodically() {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        decay_all_arenas();
        if let Some(now) = read_heap() {
            HEAP_IN_USE.store(now.in_use, Ordering::Relaxed);
            HEAP_RESIDENT.store(now.resident, Ordering::Relaxed);
        }
    }
}

/// `arena.<all>.decay`: purges, in every arena, what decayed.
fn decay_all_arenas() {
    // 4096 is MALLCTL_ARENAS_ALL.
    // SAFETY: the name of a mallctl that reads and writes nothing (all
    // four pointers null, as it requires).
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.decay".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}

fn read_heap() -> Option<Heap> {
    // Writing any value to `epoch` brings the totals up to date.
    let mut epoch: u64 = 1;
    // SAFETY: `epoch` is a read-write uint64_t; only written here.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"epoch".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::from_mut(&mut epoch).cast(),
            std::mem::size_of::<u64>(),
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: both statistics are size_t.
    let (in_use, resident) = unsafe {
        (
            read::<usize>(c"stats.allocated")?,
            read::<usize>(c"stats.resident")?,
        )
    };
    Some(Heap {
        in_use: in_use as u64,
        resident: resident as u64,
    })
}

/// Reads the mallctl `name` into a `T`; `None` if
/// jemalloc refuses or answers with another size. A few calls of
/// tikv-jemalloc-sys instead of the tikv-jemalloc-ctl crate, whose macro
/// dependency is unmaintained.
///
/// # Safety
/// `T` must be the C type jemalloc documents for `name`.
unsafe fn read<T: Copy + Default>(name: &CStr) -> Option<T> {
    let mut value = T::default();
    let mut len = std::mem::size_of::<T>();
    // SAFETY: `value` has room for `len` bytes
    // of the type the caller vouches for; nothing is written to jemalloc.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::from_mut(&mut value).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    (rc == 0 && len == std::mem::size_of::<T>()).then_some(value)
}

#[cfg(test)]
mod tests {
    /// The options are the ones jemalloc runs with.
    #[test]
    fn jemalloc_runs_with_the_options() {
        // SAFETY: read-only options of these types (unsigned, bool,
        // ssize_t).
        let (narenas, tcache, decay) = unsafe {
            (
                super::read::<u32>(c"opt.narenas").unwrap(),
                super::read::<bool>(c"opt.tcache").unwrap(),
                super::read::<isize>(c"opt.dirty_decay_ms").unwrap(),
            )
        };
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
        assert!(
            held.in_use >= before.in_use + (48 << 20),
            "{} -> {}",
            before.in_use,
            held.in_use
        );
        assert!(held.resident >= held.in_use);
        drop(block);
        let after = super::read_heap().unwrap();
        assert!(
            after.in_use + (48 << 20) <= held.in_use,
            "{} -> {}",
            held.in_use,
            after.in_use
        );
    }

    /// The periodic decay hands back what was freed long enough ago, with
    /// no allocation to trigger it.
    #[test]
    fn decay_hands_back_freed_pages() {
        // Small blocks (each below the 8 MiB that jemalloc serves from
        // an arena of its own, purged at once), freed together.
        let blocks: Vec<Vec<u8>> = (0..32).map(|_| vec![1u8; 1 << 20]).collect();
        let held = super::read_heap().unwrap().resident;
        drop(std::hint::black_box(blocks));
        std::thread::sleep(std::time::Duration::from_millis(1200));
        super::decay_all_arenas();
        let after = super::read_heap().unwrap().resident;
        assert!(after + (16 << 20) <= held, "resident {held} -> {after}");
    }
}
