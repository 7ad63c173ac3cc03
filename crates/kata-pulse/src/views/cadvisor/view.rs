//! The cAdvisor view behind [`View`]: guest figures digested per body, CRI
//! containers fetched per request, series rendered per response.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use prom_text::Rendered;
use tokio::time::Instant;

use super::containers::{ContainerSnapshot, ContainerSource};
use super::cpu_unit::CpuUnit;
use super::guest::{self, GuestStats};
use super::PodInput;
use crate::families as f;
use crate::registry::Sandbox;
use crate::views::{Digest, Input, Part, Prepared, Scraped, View};

/// What the cAdvisor view keeps of one body.
#[derive(Debug)]
pub struct PodDigest {
    pub guest: GuestStats,
    /// Seconds per unit of `kata_guest_cpu_time`, once two scrapes have
    /// shown it (`None` before: pod CPU is then not emitted, rather than
    /// emitted in a unit that may jump later).
    pub cpu_scale: Option<f64>,
}

impl Digest for PodDigest {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

pub struct CadvisorView {
    containers: Arc<ContainerSource>,
    /// CPU time unit learnt per sandbox.
    units: Mutex<HashMap<String, CpuUnit>>,
}

impl CadvisorView {
    pub fn new(containers: Arc<ContainerSource>) -> CadvisorView {
        CadvisorView {
            containers,
            units: Mutex::new(HashMap::new()),
        }
    }
}

impl View for CadvisorView {
    fn digest(&self, scraped: &Scraped<'_>) -> Arc<dyn Digest> {
        let (sandbox, body, at) = (scraped.sandbox, scraped.body, scraped.at);
        let guest = guest::extract(body);
        let cpu_scale = {
            let mut units = self.units.lock().unwrap_or_else(|e| e.into_inner());
            let unit = units.entry(sandbox.id.clone()).or_default();
            match guest.per_cpu_clock {
                Some(clock) => unit.observe(at, clock),
                None => unit.current(),
            }
        };
        Arc::new(PodDigest { guest, cpu_scale })
    }

    fn prepare(
        &self,
        requested: Instant,
        sandboxes: &[Arc<Sandbox>],
    ) -> Option<BoxFuture<'static, Prepared>> {
        let ids: HashSet<String> = sandboxes.iter().map(|s| s.id.clone()).collect();
        self.units
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| ids.contains(id));
        let source = self.containers.clone();
        Some(
            async move {
                let snap: Prepared = source.snapshot(requested, &ids).await;
                snap
            }
            .boxed(),
        )
    }

    fn render(&self, input: &Input<'_>) -> Vec<Part> {
        let pods: Vec<PodInput<'_>> = input
            .sandboxes::<PodDigest>()
            .map(|(s, digest)| PodInput {
                sandbox_id: &s.sandbox.id,
                namespace: s.pod().0,
                pod: s.pod().1,
                guest: digest.map(|d| &d.guest),
                cpu_scale: digest.and_then(|d| d.cpu_scale),
            })
            .collect();
        let snap = input.prepared::<ContainerSnapshot>();
        vec![
            Part::Fresh(super::render(&pods, snap, crate::unix_now())),
            Part::Fresh(self.own_series(snap)),
        ]
    }
}

impl CadvisorView {
    /// How old the container listing is and what containerd could not
    /// give: the view's health, beside its series.
    fn own_series(&self, snap: Option<&ContainerSnapshot>) -> Rendered {
        let mut out = Rendered::default();
        if let Some(taken) = snap.and_then(|s| s.taken) {
            f::KATA_PULSE_CONTAINER_SNAPSHOT_AGE_SECONDS.begin(&mut out);
            out.sample("", &[], taken.elapsed().as_secs_f64());
        }
        let errors = self.containers.task_errors();
        f::KATA_PULSE_CONTAINERD_METRICS_ERRORS_TOTAL.begin(&mut out);
        for (reason, n) in [("call", &errors.calls), ("payload", &errors.payloads)] {
            out.sample("", &[("reason", reason)], n.load(Ordering::Relaxed) as f64);
        }
        out.finish();
        out
    }
}
