//! karo: Alertmanager calls its webhook; alerts that match an
//! `AlertReaction` become Kubernetes Jobs, once per firing episode.
//!
//! The flow, one module each: `webhook` (authenticate, parse, queue) ->
//! `trigger` (match with `matching`, decide, claim in status, create the
//! Jobs `job` builds from the `reaction` compiled from `api`) ->
//! `controller` (leader only: Ready condition, Job counts and outcomes).

pub mod alert;
pub mod api;
pub mod auth;
pub mod claim;
pub mod config;
pub mod controller;
pub mod error;
pub mod events;
pub mod health;
pub mod job;
pub mod leader;
pub mod matching;
pub mod metrics;
pub mod reaction;
pub mod run;
pub mod server;
pub mod tls;
pub mod trigger;
pub mod webhook;
