//! kata-pulse: the node agent for Kata Containers.
//!
//! Data flows one way: `discovery` finds sandboxes, `labels` asks CRI who
//! they are, `collect` scrapes their shims through `shim_client`,
//! `exposition` parses each body once for the `views` (raw re-export,
//! cAdvisor, host cost) and `http` serves the merge.

pub mod allocator;
pub mod collect;
pub mod config;
pub mod cri;
pub mod discovery;
pub mod exposition;
pub mod families;
pub mod http;
pub mod incidents;
pub mod labels;
pub mod logging;
pub mod process;
pub mod registry;
pub mod restart;
pub mod run;
pub mod sandbox_id;
pub mod self_metrics;
pub mod shim_client;
pub mod shim_socket;
pub mod views;

/// Seconds since the Unix epoch of `t` (0 before it).
pub fn unix_seconds(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Milliseconds since the Unix epoch now.
pub fn unix_ms() -> u64 {
    let ms = unix_seconds(std::time::SystemTime::now()) * 1000.0;
    ms as u64
}

/// Seconds since the Unix epoch now.
pub fn unix_now() -> f64 {
    unix_seconds(std::time::SystemTime::now())
}
