//! kata-pulse: the node agent for Kata Containers.
//!
//! Data flows one way: `discovery` finds sandboxes, `labels` asks CRI who
//! they are, `collect` scrapes their shims through `shim_client`,
//! `exposition` relabels the bodies and `http` serves the merge.

pub mod cadvisor;
pub mod collect;
pub mod config;
pub mod cri;
pub mod discovery;
pub mod exposition;
pub mod http;
pub mod labels;
pub mod logging;
pub mod process;
pub mod registry;
pub mod run;
pub mod sandbox_id;
pub mod self_metrics;
pub mod shim_client;
