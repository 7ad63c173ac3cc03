//! Test bed for end-to-end tests: a real containerd with CRI, a real
//! Prometheus and a real Alertmanager, run as private processes on the test
//! machine.
//!
//! Everything is blocking (std) so tests stay simple, except the client of
//! shim sockets ([`shim_get`]), whose simulated peers share the test's tokio
//! runtime. Every wait for a component has a timeout and errors carry the
//! tail of its log. Each component
//! lives in its own temporary folder and is cleaned up on drop, also when a
//! test panics; the machine's own containerd and its `/run/containerd`,
//! `/var/lib/containerd`, `/run/vc` and `/run/kata` are never touched.
//!
//! Needs root, `containerd`, `runc`, `prometheus`/`promtool`,
//! `prometheus-alertmanager` (Debian packages) and `gcc` with a static libc;
//! `scripts/test.sh` installs them.
//!
//! Environment: `KATA_PULSE_BIN_DIR` (where [`workspace_bin`] looks first),
//! `KATA_PULSE_TESTBED_KEEP=1` (keep temporary folders to inspect after a
//! failure), `KATA_PULSE_TESTBED_VERBOSE=1` (print start-up timings).

mod alertmanager;
mod blkio;
mod containerd;
mod cri;
mod exposition;
mod fake;
mod http;
mod image;
mod prometheus;
mod shim_http;
mod util;

pub use alertmanager::{
    rfc3339, Alertmanager, AlertmanagerBuilder, WebhookAuth, WebhookStats, ALERTMANAGER_RECEIVER,
};
pub use blkio::activate_blkio_accounting;
pub use containerd::{host_network_pod, Containerd, CRI_NAMESPACE};
pub use cri::{with_cri, with_cri_channel, CriClient, CriImageClient};
pub use exposition::{check_exposition, StrictExposition};
pub use fake::FakeBody;
pub use http::{http_get, http_get_with, http_post, http_post_with, url_encode, HttpResponse};
pub use image::{
    build_pause_image, oci_arch, oci_image_tar, pause_image_tar, LayerFile, PAUSE_IMAGE,
};
pub use prometheus::{
    promtool_check_metrics, promtool_check_rules, vector_samples, Prometheus, PrometheusBuilder,
};
pub use shim_http::{shim_get, shim_get_request, shim_raw, shim_request, RawReply};
pub use util::{
    file_tail, find_program, free_port, target_dir, wait_until, workspace_bin, ChildGuard, Daemon,
    BIN_DIR_ENV, KEEP_ENV, VERBOSE_ENV,
};
