//! Leader election with a `coordination.k8s.io/v1` Lease in karo's own
//! namespace, as client-go does it: a lease is taken over only after its
//! record has stayed unchanged for a whole lease duration as observed on
//! our own clock (no trust in other machines' clocks), every write is
//! guarded by the resourceVersion it was decided on, and the lease is
//! released on shutdown so a successor need not wait.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;

use crate::error::{timed, Error};

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
    pub api_timeout: Duration,
}

pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// The last record seen of someone else's lease, and when it changed.
    observed: Option<(String, Instant)>,
    /// Start of our last successful acquire or renewal.
    leading_since: Option<Instant>,
}

impl Elector {
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        let api = Api::namespaced(client, &cfg.namespace);
        Self {
            api,
            cfg,
            observed: None,
            leading_since: None,
        }
    }

    /// Runs until `stop` turns true; `leader` says whether we lead now.
    ///
    /// Leadership ends `renew_deadline` after the start of the last
    /// successful renewal, whatever the API does meanwhile (a hung call is
    /// cut there): strictly before another replica may take the lease over,
    /// which needs a whole lease duration of an unchanged record.
    pub async fn run(mut self, leader: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        let deadline = self.cfg.lease_duration * 2 / 3;
        loop {
            let started = Instant::now();
            let valid_until = self.leading_since.map(|t| t + deadline);
            let budget = valid_until.map_or(self.cfg.api_timeout, |u| {
                u.saturating_duration_since(started)
            });
            let attempt = tokio::time::timeout(budget, self.try_acquire_or_renew()).await;
            let leading = match attempt {
                Ok(Ok(true)) => {
                    self.leading_since = Some(started);
                    true
                }
                Ok(Ok(false)) => {
                    self.leading_since = None;
                    false
                }
                failed => {
                    match failed {
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, lease = %self.cfg.name, "lease update failed")
                        }
                        _ => {
                            tracing::warn!(lease = %self.cfg.name, "lease update did not answer in time")
                        }
                    }
                    let still = valid_until.is_some_and(|u| Instant::now() < u);
                    if !still {
                        self.leading_since = None;
                    }
                    still
                }
            };
            if leading != *leader.borrow() {
                tracing::info!(identity = %self.cfg.identity, leading, "leadership changed");
                let _ = leader.send(leading);
            }
            let wait = match (leading, self.leading_since) {
                // Wake up in time to stop leading if renewals keep failing.
                (true, Some(t)) => self
                    .cfg
                    .renew_every
                    .min((t + deadline).saturating_duration_since(Instant::now())),
                _ => self.cfg.renew_every / 2,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
        }
        if *leader.borrow() {
            let _ = leader.send(false);
            if let Err(e) = self.release().await {
                tracing::warn!(error = %e, "could not release the lease");
            }
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<bool, Error> {
        let t = self.cfg.api_timeout;
        let now = MicroTime(jiff::Timestamp::now());
        let existing = match timed("get Lease", t, self.api.get_opt(&self.cfg.name)).await? {
            Some(l) => l,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(now.clone(), now, 0)),
                };
                return match timed(
                    "create Lease",
                    t,
                    self.api.create(&PostParams::default(), &lease),
                )
                .await
                {
                    Ok(_) => Ok(self.won()),
                    Err(e) if e.is_conflict() => Ok(false),
                    Err(e) => Err(e),
                };
            }
        };
        let spec = existing.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.cfg.identity;
        if !ours && !holder.is_empty() && !self.expired(&existing) {
            self.leading_since = None;
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = if ours {
            spec.acquire_time.clone().unwrap_or(now.clone())
        } else {
            now.clone()
        };
        let mut lease = existing;
        lease.spec = Some(self.spec(acquired, now, transitions));
        // `replace` sends the resourceVersion we read: a concurrent taker
        // makes this a 409, and only one of us wins.
        match timed(
            "update Lease",
            t,
            self.api
                .replace(&self.cfg.name, &PostParams::default(), &lease),
        )
        .await
        {
            Ok(_) => Ok(self.won()),
            Err(e) if e.is_conflict() => {
                self.leading_since = None;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn won(&mut self) -> bool {
        self.observed = None;
        true
    }

    /// Someone else's lease counts as expired once its record has not
    /// changed for a lease duration since we first saw it so.
    fn expired(&mut self, lease: &Lease) -> bool {
        let record = format!(
            "{:?}/{:?}",
            lease.spec.as_ref().and_then(|s| s.holder_identity.clone()),
            lease
                .spec
                .as_ref()
                .and_then(|s| s.renew_time.clone())
                .map(|t| t.0)
        );
        let duration = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .map(|s| Duration::from_secs(s.max(1) as u64))
            .unwrap_or(self.cfg.lease_duration);
        match &self.observed {
            Some((r, since)) if *r == record => since.elapsed() >= duration,
            _ => {
                self.observed = Some((record, Instant::now()));
                false
            }
        }
    }

    fn spec(&self, acquired: MicroTime, renewed: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(self.cfg.lease_duration.as_secs() as i32),
            acquire_time: Some(acquired),
            renew_time: Some(renewed),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    async fn release(&self) -> Result<(), Error> {
        let t = self.cfg.api_timeout;
        let Some(mut lease) = timed("get Lease", t, self.api.get_opt(&self.cfg.name)).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        timed(
            "release Lease",
            t,
            self.api
                .replace(&self.cfg.name, &PostParams::default(), &lease),
        )
        .await?;
        tracing::info!("lease released");
        Ok(())
    }
}
