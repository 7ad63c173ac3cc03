//! Views: what the agent makes of the shims' bodies, each behind [`View`].
//!
//! The collector parses each shim body once and hands the parse to every
//! view that is switched on; each view keeps what it needs of it (its
//! *digest*), and renders its part of a response from the digests of all
//! sandboxes. The collector knows nothing of what a view does.
//!
//! | view | module | switched on by |
//! |---|---|---|
//! | raw re-export of the shims' `kata_*` families | [`raw`] | `--kata-metrics` |
//! | cAdvisor-compatible `container_*` series | [`cadvisor`] | `--cadvisor-metrics` |
//! | host cost of each pod (`kata_pulse_pod_host_*`) | [`host`] | `--cadvisor-metrics` |
//!
//! [`for_config`] is the one place that decides which views run.

pub mod cadvisor;
pub mod host;
pub mod raw;

use std::any::Any;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use prom_text::{Exposition, FamilyInfo, Rendered, Source};
use tokio::time::Instant;

use crate::collect::{Collection, SandboxScrape};
use crate::config::Config;
use crate::cri::CriStats;
use crate::cri::{CriClient, PodMeta};
use crate::registry::Sandbox;

/// What a view keeps of one shim body.
pub trait Digest: Any + Send + Sync {
    /// Heap held, for `kata_pulse_scrape_cache_bytes`.
    fn heap_bytes(&self) -> usize {
        0
    }
    /// Families of the body this view had to drop (a name collision).
    fn dropped_families(&self) -> u32 {
        0
    }
    /// Samples of the body this view had to drop (too many labels).
    fn dropped_samples(&self) -> u32 {
        0
    }
    /// The digest's families, when it is written into responses as it is.
    fn source(&self) -> Option<&(dyn Source + Send + Sync)> {
        None
    }
    fn as_any(&self) -> &dyn Any;
}

/// Per-request data a view fetches alongside the shim scrapes.
pub type Prepared = Arc<dyn Any + Send + Sync>;

/// One part of a response: a cached digest written as it is, or families
/// rendered for this response. Owned, so a response can be written after
/// the collection it came from is gone.
pub enum Part {
    Cached(Arc<dyn Digest>),
    Fresh(Rendered),
}

impl Source for Part {
    fn family_count(&self) -> usize {
        match self {
            Part::Cached(d) => d.source().map_or(0, |s| s.family_count()),
            Part::Fresh(r) => r.family_count(),
        }
    }

    fn family(&self, i: usize) -> FamilyInfo<'_> {
        match self {
            Part::Cached(d) => match d.source() {
                Some(s) => s.family(i),
                None => FamilyInfo::NONE,
            },
            Part::Fresh(r) => r.family(i),
        }
    }

    fn write_family(&self, i: usize, out: &mut Vec<u8>) {
        match self {
            Part::Cached(d) => {
                if let Some(s) = d.source() {
                    s.write_family(i, out)
                }
            }
            Part::Fresh(r) => r.write_family(i, out),
        }
    }
}

/// One way of presenting the shims' metrics.
pub trait View: Send + Sync {
    /// Keeps what this view needs of one parsed body (on a blocking
    /// thread).
    fn digest(&self, scraped: &Scraped<'_>) -> Arc<dyn Digest>;

    /// Work to run beside the shim scrapes of one request (`requested` is
    /// when it arrived), waited for with the same deadline.
    fn prepare(
        &self,
        _requested: Instant,
        _sandboxes: &[Arc<Sandbox>],
    ) -> Option<BoxFuture<'static, Prepared>> {
        None
    }

    /// This view's parts of a response.
    fn render(&self, input: &Input<'_>) -> Vec<Part>;
}

/// One parsed shim body and where it came from, as the views digest it.
pub struct Scraped<'a> {
    pub sandbox: &'a Sandbox,
    /// The pod metadata the result is cached with.
    pub meta: Option<&'a PodMeta>,
    pub body: &'a Exposition<'a>,
    /// When the body arrived.
    pub at: Instant,
}

/// What a view renders from: the collection, seen through its own index.
pub struct Input<'a> {
    pub collection: &'a Collection,
    index: usize,
}

impl<'a> Input<'a> {
    pub fn new(collection: &'a Collection, index: usize) -> Input<'a> {
        Input { collection, index }
    }

    /// This view's digest of a sandbox's usable scrape, if any.
    pub fn digest<T: 'static>(&self, s: &'a SandboxScrape) -> Option<&'a T> {
        self.shared_digest(s)?.as_any().downcast_ref()
    }

    /// The same digest, shared (to hand it on as a [`Part::Cached`]).
    pub fn shared_digest(&self, s: &'a SandboxScrape) -> Option<&'a Arc<dyn Digest>> {
        let exp = s.result.as_ref()?.outcome.as_ref().ok()?;
        exp.digests.get(self.index)
    }

    /// Every sandbox of the collection with this view's digest of it.
    pub fn sandboxes<T: 'static>(
        &self,
    ) -> impl Iterator<Item = (&'a SandboxScrape, Option<&'a T>)> + 'a {
        let view = Input::new(self.collection, self.index);
        self.collection
            .sandboxes
            .iter()
            .map(move |s| (s, view.digest(s)))
    }

    /// What this view's [`View::prepare`] produced (`None` if it did not
    /// finish within the deadline).
    pub fn prepared<T: 'static>(&self) -> Option<&'a T> {
        self.collection
            .prepared
            .get(self.index)?
            .as_ref()?
            .downcast_ref()
    }
}

/// Every view's parts of a response, in the views' order.
pub fn render(views: &[Arc<dyn View>], collection: &Collection) -> Vec<Part> {
    views
        .iter()
        .enumerate()
        .flat_map(|(i, v)| v.render(&Input::new(collection, i)))
        .collect()
}

/// The views the configuration switches on.
pub fn for_config(config: &Config, cri: &CriClient, health: &Arc<CriStats>) -> Vec<Arc<dyn View>> {
    let mut views: Vec<Arc<dyn View>> = Vec::new();
    if config.kata_metrics {
        views.push(Arc::new(raw::RawView::default()));
    }
    if config.cadvisor_metrics {
        let source = cadvisor::containers::ContainerSource::new(
            cri.clone(),
            config.metrics_interval,
            config.container_stats,
            health.clone(),
        );
        views.push(Arc::new(cadvisor::CadvisorView::new(source)));
        views.push(Arc::new(host::HostView::new(crate::process::clock_ticks())));
    }
    views
}

/// The identity labels of a sandbox's series: its id and its pod's uid,
/// name and namespace (empty while CRI has not described it).
pub fn identity<'a>(
    sandbox_id: &'a str,
    meta: Option<&'a PodMeta>,
) -> [(&'static str, &'a str); 4] {
    let (uid, name, ns) = meta
        .map(|m| (m.uid.as_str(), m.name.as_str(), m.namespace.as_str()))
        .unwrap_or(("", "", ""));
    [
        (raw::IDENTITY_LABELS[0], sandbox_id),
        (raw::IDENTITY_LABELS[1], uid),
        (raw::IDENTITY_LABELS[2], name),
        (raw::IDENTITY_LABELS[3], ns),
    ]
}
