//! Counts of what each client address holds (connections, `/metrics`
//! responses in flight), so one client cannot take every slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The client address of a request (set by the server on every request).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerIp(pub IpAddr);

/// What each client address holds, up to a limit.
pub(crate) struct PerIp {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    /// Woken each time a slot is given back.
    freed: Notify,
}

impl PerIp {
    pub(crate) fn new(limit: usize) -> PerIp {
        PerIp {
            limit,
            open: Mutex::new(HashMap::new()),
            freed: Notify::new(),
        }
    }

    /// A slot for `ip`, waiting for one of its slots to be given back if
    /// it holds `limit` already (callers bound the wait).
    pub(crate) async fn acquire(self: &Arc<Self>, ip: IpAddr) -> IpSlot {
        loop {
            // Registered before the check, so a slot freed in between wakes it.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.take(ip) {
                return slot;
            }
            freed.await;
        }
    }

    /// A slot for `ip`, or `None` when it holds `limit` already.
    pub(crate) fn take(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: self.clone(),
            ip,
        })
    }
}

/// One slot of an address; given back on drop.
pub(crate) struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.give_back();
        self.table.freed.notify_waiters();
    }
}

impl IpSlot {
    fn give_back(&self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_over_its_share_waits_for_one_of_its_slots() {
        let table = Arc::new(PerIp::new(2));
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let first = table.take(a).unwrap();
        let _second = table.take(a).unwrap();
        assert!(table.take(a).is_none());
        // Another address is not held back.
        let _other = table.take(b).unwrap();
        let waiting = tokio::spawn({
            let table = table.clone();
            async move { table.acquire(a).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        let third = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken when a slot was given back")
            .unwrap();
        drop(third);
        assert!(table.take(a).is_some());
    }
}
