//! Live configuration: validating a batch of entity operations, binding every new port
//! before anything changes, stopping what was removed or replaced and starting what is new.
//! A batch applies whole or not at all.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{Instrument, info, info_span, warn};

use crate::advertise::Advertiser;
use crate::config::{Entities, EntityOp, Mode};
use crate::error::{AdminError, ConfigError, StartError};
use crate::link::{self, Direction, LinkEnv, LinkStatus};
use crate::tcp::{self, ConnectorTable, LISTEN_BACKLOG, ListenerEnv, ListenerRt, ListenerTable};
use crate::tls::TlsMaterial;

/// Entities in force and the tasks that serve them.
#[derive(Debug, Default)]
struct ConfigState {
    entities: Entities,
    tasks: HashMap<(&'static str, String), JoinHandle<()>>,
}

/// Applies configuration to the router's parts; the only writer of listeners, connectors
/// and configured links.
pub(crate) struct Configurator {
    mode: Mode,
    state: tokio::sync::Mutex<ConfigState>,
    /// Addresses link listeners are bound to (the port differs from the config when it was 0).
    link_listener_addrs: Mutex<BTreeMap<String, SocketAddr>>,
    listeners: Arc<ListenerTable>,
    connectors: Arc<ConnectorTable>,
    advertiser: Arc<Advertiser>,
    links: LinkEnv,
    tcp: ListenerEnv,
}

impl std::fmt::Debug for Configurator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Configurator").finish_non_exhaustive()
    }
}

enum ApplyError {
    Config(ConfigError),
    Bind {
        what: String,
        addr: String,
        source: std::io::Error,
    },
}

impl Configurator {
    pub(crate) fn new(
        mode: Mode,
        listeners: Arc<ListenerTable>,
        connectors: Arc<ConnectorTable>,
        advertiser: Arc<Advertiser>,
        links: LinkEnv,
        tcp: ListenerEnv,
    ) -> Configurator {
        Configurator {
            mode,
            state: tokio::sync::Mutex::default(),
            link_listener_addrs: Mutex::default(),
            listeners,
            connectors,
            advertiser,
            links,
            tcp,
        }
    }

    /// Applies the entities of the start-up configuration. Fails, binding nothing, when a
    /// port cannot be bound.
    pub(crate) async fn apply_initial(&self, entities: Entities) -> Result<(), StartError> {
        self.apply_entities(entities, false)
            .await
            .map_err(|e| match e {
                ApplyError::Bind { what, addr, source } => StartError::Bind { what, addr, source },
                ApplyError::Config(c) => StartError::Config(c),
            })
    }

    pub(crate) async fn entities(&self) -> Entities {
        self.state.lock().await.entities.clone()
    }

    /// Where a link listener is bound.
    pub(crate) fn link_listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.link_listener_addrs
            .lock()
            .expect("addrs lock")
            .get(name)
            .copied()
    }

    /// Validates and applies a batch of operations; all or nothing. Returns the generation
    /// of the views after it.
    pub(crate) async fn apply_ops(
        &self,
        ops: Vec<EntityOp>,
        dry_run: bool,
        drop_flows: bool,
    ) -> Result<u64, AdminError> {
        let current = self.state.lock().await.entities.clone();
        let next = current.with_ops(self.mode, ops)?;
        if !dry_run {
            self.apply_entities(next, drop_flows)
                .await
                .map_err(|e| match e {
                    ApplyError::Config(c) => AdminError::Invalid(c),
                    ApplyError::Bind { what, addr, source } => AdminError::Invalid(
                        ConfigError::single(what, format!("cannot bind {addr}: {source}")),
                    ),
                })?;
        }
        Ok(self.tcp.changes.generation())
    }

    async fn apply_entities(&self, next: Entities, drop_flows: bool) -> Result<(), ApplyError> {
        let mut st = self.state.lock().await;
        let old = st.entities.clone();
        let tls_changed = |name: &str| old.tls_profiles.get(name) != next.tls_profiles.get(name);

        // 1. Work out what starts and stops, and bind every new port before changing anything.
        let mut new_link_listeners = Vec::new();
        for (n, l) in &next.link_listeners {
            if old.link_listeners.get(n) != Some(l) || tls_changed(&l.tls_profile) {
                new_link_listeners.push(l.clone());
            }
        }
        let mut new_links = Vec::new();
        for (n, l) in &next.links {
            if old.links.get(n) != Some(l) || tls_changed(&l.tls_profile) {
                new_links.push(l.clone());
            }
        }
        let mut new_tcp_listeners = Vec::new();
        for (n, l) in &next.tcp_listeners {
            if old.tcp_listeners.get(n) != Some(l) {
                new_tcp_listeners.push(l.clone());
            }
        }
        // A port an entity being replaced still holds is bound after that entity stops.
        let held = |host: &str, port: u16| {
            old.link_listeners
                .values()
                .any(|o| o.host == host && o.port == port && port != 0)
                || old
                    .tcp_listeners
                    .values()
                    .any(|o| o.host == host && o.port == port && port != 0)
        };
        let mut prebound_links = HashMap::new();
        for l in &new_link_listeners {
            if held(&l.host, l.port) {
                continue;
            }
            let s = bind_listener(&l.host, l.port).map_err(|source| ApplyError::Bind {
                what: format!("link_listeners[{}]", l.name),
                addr: format!("{}:{}", l.host, l.port),
                source,
            })?;
            prebound_links.insert(l.name.clone(), s);
        }
        let mut prebound_tcp = HashMap::new();
        for l in &new_tcp_listeners {
            if held(&l.host, l.port) {
                continue;
            }
            let s = tcp::reserve(&l.host, l.port).map_err(|source| ApplyError::Bind {
                what: format!("tcp_listeners[{}]", l.name),
                addr: format!("{}:{}", l.host, l.port),
                source,
            })?;
            prebound_tcp.insert(l.name.clone(), s);
        }
        let invalid =
            |path: String, message: String| ApplyError::Config(ConfigError::single(path, message));
        // Each profile's files are read once, however many entities use it.
        let mut materials: HashMap<&str, TlsMaterial> = HashMap::new();
        let mut material = |profile: &str| -> Result<TlsMaterial, ApplyError> {
            if let Some(m) = materials.get(profile) {
                return Ok(m.clone());
            }
            let (name, p) = next
                .tls_profiles
                .get_key_value(profile)
                .expect("validated: every referenced profile exists");
            let m = TlsMaterial::load(p).map_err(|e| {
                invalid(
                    format!("tls_profiles[{profile}]"),
                    van_telemetry::Report(&e).to_string(),
                )
            })?;
            materials.insert(name, m.clone());
            Ok(m)
        };
        let mut link_tls = HashMap::new();
        for l in &new_links {
            let tls = material(&l.tls_profile)?
                .client_config()
                .map_err(|e| invalid(format!("links[{}]", l.name), e.to_string()))?;
            link_tls.insert(l.name.clone(), tls);
        }
        let mut listener_tls = HashMap::new();
        for l in &new_link_listeners {
            let tls = material(&l.tls_profile)?
                .server_config()
                .map_err(|e| invalid(format!("link_listeners[{}]", l.name), e.to_string()))?;
            listener_tls.insert(l.name.clone(), tls);
        }

        // 2. Stop what was removed or replaced.
        let mut stopped = Vec::new();
        let mut stop = |st: &mut ConfigState, kind: &'static str, name: &str| {
            if let Some(h) = st.tasks.remove(&(kind, name.to_string())) {
                h.abort();
                stopped.push(h);
            }
        };
        for (n, l) in &old.link_listeners {
            if next.link_listeners.get(n) != Some(l) || tls_changed(&l.tls_profile) {
                stop(&mut st, "link_listener", n);
                self.link_listener_addrs
                    .lock()
                    .expect("addrs lock")
                    .remove(n);
            }
        }
        for (n, l) in &old.links {
            if next.links.get(n) != Some(l) || tls_changed(&l.tls_profile) {
                stop(&mut st, "link", n);
                self.links.links.remove(n);
            }
        }
        for (n, l) in &old.tcp_listeners {
            if next.tcp_listeners.get(n) != Some(l) {
                stop(&mut st, "tcp_listener", n);
                if let Some(rt) = self.listeners.remove(n) {
                    rt.shut(drop_flows);
                }
            }
        }
        self.connectors
            .reconcile(&old.tcp_connectors, &next.tcp_connectors, drop_flows);
        // Wait until the stopped tasks are gone: their links are closed, their ports free,
        // and a deleted entity no longer shows when this call returns.
        for h in stopped {
            let _ = h.await;
        }

        // 3. Start what is new or changed.
        for l in new_link_listeners {
            let listener = match prebound_links.remove(&l.name) {
                Some(s) => s,
                None => match bind_listener_retry(&l.host, l.port).await {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(listener = %l.name, error = %e, "Cannot rebind link listener");
                        continue;
                    }
                },
            };
            if let Ok(a) = listener.local_addr() {
                self.link_listener_addrs
                    .lock()
                    .expect("addrs lock")
                    .insert(l.name.clone(), a);
            }
            let tls = listener_tls.remove(&l.name).expect("built above");
            let h = tokio::spawn(
                link::accept_loop(self.links.clone(), l.clone(), listener, tls)
                    .instrument(info_span!("link_listener", name = %l.name)),
            );
            st.tasks.insert(("link_listener", l.name.clone()), h);
        }
        for l in new_links {
            let status = LinkStatus::new(
                l.name.clone(),
                l.role,
                Direction::Outgoing,
                format!("{}:{}", l.host, l.port),
                l.cost,
            );
            self.links.links.insert(status.clone());
            let tls = link_tls.remove(&l.name).expect("built above");
            let h = tokio::spawn(
                link::dial_loop(self.links.clone(), l.clone(), tls, status)
                    .instrument(info_span!("link", name = %l.name)),
            );
            st.tasks.insert(("link", l.name.clone()), h);
        }
        for l in new_tcp_listeners {
            let rt = ListenerRt::new(l.clone());
            let reserved = prebound_tcp.remove(&l.name);
            if let Some(a) = reserved
                .as_ref()
                .and_then(|s| s.local_addr().ok())
                .and_then(|a| a.as_socket())
            {
                rt.port.store(a.port(), Ordering::Relaxed);
            }
            self.listeners.insert(rt.clone());
            let h = tokio::spawn(
                tcp::listener_task(self.tcp.clone(), rt, reserved)
                    .instrument(info_span!("tcp_listener", name = %l.name)),
            );
            st.tasks.insert(("tcp_listener", l.name.clone()), h);
        }
        st.entities = next;
        drop(st);
        self.advertiser.publish_addresses();
        self.tcp.changes.notify();
        info!("Configuration applied");
        Ok(())
    }
}

fn bind_listener(host: &str, port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let s = tcp::reserve(host, port)?;
    s.listen(LISTEN_BACKLOG)?;
    tokio::net::TcpListener::from_std(std::net::TcpListener::from(s))
}

async fn bind_listener_retry(host: &str, port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for _ in 0..20 {
        match bind_listener(host, port) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last.expect("tried"))
}
