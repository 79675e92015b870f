//! Which session a connection belongs to, and the set of running sessions.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use meshwork_protocol::SessionId;
use meshwork_session::ClientId;

use crate::driver::SessionHandle;

/// The running sessions of this process.
#[derive(Debug)]
pub struct Router {
    sessions: RwLock<HashMap<SessionId, SessionHandle>>,
    default: SessionId,
    next_client: AtomicU64,
    shutting_down: AtomicBool,
    per_addr: Arc<PerAddr>,
}

/// Live connections per source IP address, over every transport and session.
#[derive(Debug)]
struct PerAddr {
    max: usize,
    live: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection from an address; dropping it (when the connection ends) frees the
/// place.
#[derive(Debug)]
pub struct AddrSlot {
    owner: Arc<PerAddr>,
    ip: IpAddr,
}

impl Drop for AddrSlot {
    fn drop(&mut self) {
        let mut live = self
            .owner
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = live.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                live.remove(&self.ip);
            }
        }
    }
}

impl Router {
    /// A router whose fallback is `default` (which must be added), admitting at most
    /// `max_per_addr` live connections from one IP address.
    #[must_use]
    pub fn new(default: SessionId, max_per_addr: usize) -> Self {
        Self {
            sessions: RwLock::new(HashMap::new()),
            default,
            next_client: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            per_addr: Arc::new(PerAddr {
                max: max_per_addr,
                live: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A place for one more connection from `ip`, or `None` when that address already has
    /// the most live connections allowed (the caller refuses it and counts
    /// `per_address_limit`).
    #[must_use]
    pub fn admit(&self, ip: IpAddr) -> Option<AddrSlot> {
        let mut live = self
            .per_addr
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = live.entry(ip).or_insert(0);
        if *n >= self.per_addr.max {
            return None;
        }
        *n = n.saturating_add(1);
        Some(AddrSlot {
            owner: self.per_addr.clone(),
            ip,
        })
    }

    /// Adds a running session.
    pub fn add(&self, handle: SessionHandle) {
        let mut map = self
            .sessions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(handle.id, handle);
    }

    /// The session a connection claiming `claimed` goes to. Unknown or unreadable claims go to
    /// the default session, which verifies the invite and refuses with a reason.
    ///
    /// # Panics
    /// Never: the default session is added before any connection is accepted.
    #[must_use]
    pub fn route(&self, claimed: Option<SessionId>) -> SessionHandle {
        let map = self
            .sessions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        claimed
            .and_then(|id| map.get(&id))
            .or_else(|| map.get(&self.default))
            .cloned()
            .expect("the default session is registered before connections are accepted")
    }

    /// One session.
    #[must_use]
    pub fn get(&self, id: SessionId) -> Option<SessionHandle> {
        let map = self
            .sessions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&id).cloned()
    }

    /// Every session.
    #[must_use]
    pub fn all(&self) -> Vec<SessionHandle> {
        let map = self
            .sessions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.values().cloned().collect()
    }

    /// A fresh connection id.
    pub fn next_client(&self) -> ClientId {
        ClientId(self.next_client.fetch_add(1, Ordering::Relaxed))
    }

    /// Stop routing new connections.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}
