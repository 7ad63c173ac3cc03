//! kata-sim: a simulated Kata Containers node.
//!
//! No Kata VM can run on a development machine or in CI, yet a node agent has to be tested
//! against shims that serve real-looking metrics, appear and disappear, and break in the
//! ways real ones do. This crate provides:
//!
//! - [`shim`]: a shim monitor server on a unix socket behaving like the Go shim or the
//!   runtime-rs shim (routes, status codes, framing, headers, pprof);
//! - [`metrics`]: `/metrics` bodies rendered from captured fixtures with values that evolve
//!   like a live VM's;
//! - [`fault`]: per-sandbox fault modes, switchable at runtime;
//! - [`node`]: many sandboxes under the Go and runtime-rs roots, with churn and events;
//! - [`cri`]: optionally backing every sandbox with a CRI pod sandbox;
//! - [`runtime`]: a simulated container runtime (an in-process CRI server) to back them;
//! - [`demo`]: running the kata-pulse agent against a simulated node.

pub mod cri;
pub mod demo;
pub mod event;
pub mod fault;
pub mod format;
pub mod ids;
pub mod metrics;
pub mod node;
pub mod runtime;
pub mod shim;
mod template;

pub use cri::CriOptions;
pub use event::Event;
pub use fault::{Fault, FaultSpec, SandboxSelector, Truncation};
pub use metrics::MetricsModel;
pub use node::{Node, NodeOptions, PodInfo, SandboxInfo};
pub use shim::{Flavour, ShimHandle, ShimOptions, ShimServer};

/// File name of the monitor socket inside a sandbox directory, for both runtimes.
pub const SOCKET_NAME: &str = "shim-monitor.sock";
/// Sandbox root of the Go runtime (`containerd-shim-kata-v2`).
pub const GO_ROOT: &str = "/run/vc/sbs";
/// Sandbox root of runtime-rs.
pub const RS_ROOT: &str = "/run/kata";
