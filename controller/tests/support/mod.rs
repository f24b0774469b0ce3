//! Helpers shared by the controller's integration tests.
#![allow(dead_code, unreachable_pub)]

use van_controller::site::{RouterMode, SiteConfig, SiteState, SiteStore, StoreFuture};

/// A site store in memory.
#[derive(Debug, Default)]
pub struct MemStore(pub std::sync::Mutex<SiteState>);

impl MemStore {
    /// What was saved last.
    pub fn saved(&self) -> SiteState {
        self.0.lock().unwrap().clone()
    }
}

impl SiteStore for MemStore {
    fn load(&self) -> StoreFuture<'_, SiteState> {
        Box::pin(std::future::ready(Ok(self.saved())))
    }
    fn save<'a>(&'a self, s: &'a SiteState) -> StoreFuture<'a, ()> {
        *self.0.lock().unwrap() = s.clone();
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Options of a Kubernetes-like site `name` with id `id` (32 hex digits).
pub fn kube_site(name: &str, id: &str) -> SiteConfig {
    SiteConfig {
        id: id.into(),
        name: name.into(),
        mode: RouterMode::Interior,
        ingress_host: format!("{name}.example"),
        ingress_bind: "0.0.0.0".into(),
        listener_host: "0.0.0.0".into(),
        inter_router_port: 55671,
        edge_port: 45671,
        claims_port: 8081,
        advertised_ports: None,
        advertised_hosts: None,
    }
}

/// A port nothing listens on right now (for sites whose listeners the router binds itself).
#[allow(dead_code)] // not every test binary uses it
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
