//! glibc's malloc gives threads that allocate at the same time arenas of
//! their own (up to 8 per core) and keeps what is freed in each. Parsing
//! runs on up to 32 blocking threads, so each scrape leaves garbage in many
//! arenas: four times the RSS of two arenas at 100 sandboxes and 2 scrapes
//! a second (docs/benchmarks.md, "allocator", has the runs, mimalloc's
//! among them, and why limiting arenas was chosen).

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
