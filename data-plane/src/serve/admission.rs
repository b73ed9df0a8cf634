//! Who may hold a connection: the proxy's cap on open connections, and optionally a cap per
//! client address, so one client cannot take every slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Admission {
    slots: Arc<Semaphore>,
    per_client: Option<Arc<PerClient>>,
}

struct PerClient {
    limit: usize,
    /// Open connections by client address; an address leaves the map with its last one.
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// What a connection holds while it is open: its slot under the cap and its client's share.
/// Dropped when the connection ends, freeing both.
#[derive(Debug)]
pub struct ConnectionSlot {
    _slot: OwnedSemaphorePermit,
    _client: Option<ClientShare>,
}

/// One connection's part of its client's share.
#[derive(Debug)]
pub struct ClientShare {
    per_client: Arc<PerClient>,
    address: IpAddr,
}

impl std::fmt::Debug for PerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerClient")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its client already holds its share.
    ClientAtLimit,
}

impl Admission {
    /// `per_client` 0: no cap per address.
    pub fn new(max_connections: usize, per_client: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_connections)),
            per_client: (per_client > 0).then(|| {
                Arc::new(PerClient {
                    limit: per_client,
                    open: Mutex::new(HashMap::new()),
                })
            }),
        }
    }

    /// The client's share for one more connection, unless it holds its limit already.
    pub fn client_share(&self, address: IpAddr) -> Result<Option<ClientShare>, Refusal> {
        let Some(per_client) = &self.per_client else {
            return Ok(None);
        };
        let mut open = per_client.lock();
        let count = open.entry(address).or_insert(0);
        if *count >= per_client.limit {
            return Err(Refusal::ClientAtLimit);
        }
        *count += 1;
        Ok(Some(ClientShare {
            per_client: per_client.clone(),
            address,
        }))
    }

    /// A slot under the cap, if one is free now.
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// A slot, once one frees (the semaphore is fair: waiters are served in order).
    pub async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }
}

impl ConnectionSlot {
    pub fn new(slot: OwnedSemaphorePermit, client: Option<ClientShare>) -> Self {
        Self {
            _slot: slot,
            _client: client,
        }
    }
}

impl PerClient {
    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Counts only: nothing a panic could leave half-done.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for ClientShare {
    fn drop(&mut self) {
        let mut open = self.per_client.lock();
        if let Some(count) = open.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_share_and_no_more_and_gets_it_back() {
        let admission = Admission::new(10, 2);
        let one = IpAddr::from([127, 0, 0, 1]);
        let two = IpAddr::from([127, 0, 0, 2]);
        let first = admission.client_share(one).expect("first");
        let second = admission.client_share(one).expect("second");
        assert_eq!(
            admission.client_share(one).err(),
            Some(Refusal::ClientAtLimit)
        );
        assert!(
            admission.client_share(two).is_ok(),
            "another address has its own share"
        );
        drop(first);
        let third = admission.client_share(one).expect("a share came back");
        drop((second, third));
        let open = admission.per_client.as_ref().map(|p| p.lock().len());
        assert_eq!(open, Some(0), "addresses leave with their last connection");
    }

    #[test]
    fn without_a_limit_every_client_is_admitted() {
        let admission = Admission::new(1, 0);
        let address = IpAddr::from([127, 0, 0, 1]);
        for _ in 0..100 {
            assert!(matches!(admission.client_share(address), Ok(None)));
        }
        let slot = admission.try_slot();
        assert!(slot.is_some());
        assert!(admission.try_slot().is_none(), "the cap holds");
    }
}
