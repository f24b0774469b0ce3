//! Open data connections to neighbouring routers, by peer id: where flows leave this router.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::mux::DataConn;

#[derive(Debug, Default)]
pub(crate) struct Neighbours {
    by_peer: RwLock<HashMap<String, Vec<Arc<DataConn>>>>,
}

impl Neighbours {
    pub(crate) fn add(&self, conn: Arc<DataConn>) {
        let mut n = self.by_peer.write().expect("neighbours lock");
        let v = n.entry(conn.peer.clone()).or_default();
        v.push(conn);
        v.sort_by_key(|c| c.cost);
    }

    pub(crate) fn remove(&self, conn: &Arc<DataConn>) {
        let mut n = self.by_peer.write().expect("neighbours lock");
        if let Some(v) = n.get_mut(&conn.peer) {
            v.retain(|c| !Arc::ptr_eq(c, conn));
            if v.is_empty() {
                n.remove(&conn.peer);
            }
        }
    }

    /// The data connection to use toward a neighbour: the cheapest, and among parallel links
    /// of that cost the one carrying the fewest flows, so parallel links share the load.
    pub(crate) fn best(&self, peer: &str) -> Option<Arc<DataConn>> {
        let n = self.by_peer.read().expect("neighbours lock");
        let open = n.get(peer)?.iter().filter(|c| !c.is_closed());
        let cheapest = open.clone().map(|c| c.cost).min()?;
        open.filter(|c| c.cost == cheapest)
            .min_by_key(|c| c.active_streams())
            .cloned()
    }
}
