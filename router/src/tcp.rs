//! TCP listeners (ingress) and connectors (egress) of service traffic.
//!
//! A TCP listener holds its port from the start but only listens while some connector of
//! its routing key is reachable; otherwise the port is bound without listening, so clients
//! get "connection refused" at once instead of a connection that goes nowhere. An HTTP
//! listener (protocol `http` or `http2`) always listens and answers 503 naming the address
//! while no server is reachable.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::config;
use crate::flow::FlowRecord;
use crate::routing::TableRx;
use crate::shared::Changes;
use crate::web::codec::Wire;
use crate::web::pool::Pool;

/// Accept queue length of listeners (the kernel caps it at `net.core.somaxconn`). Bursts of
/// new connections are normal for a proxy; a short queue turns them into resets.
pub(crate) const LISTEN_BACKLOG: i32 = 4096;

/// Runtime state of a TCP listener.
#[derive(Debug)]
pub struct ListenerRt {
    pub cfg: config::TcpListener,
    pub state: Mutex<(&'static str, String)>,
    /// The port actually bound (differs from the configured one when that was 0).
    pub port: AtomicU16,
    pub opened: AtomicU64,
    pub closed: AtomicU64,
    pub refused: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// HTTP listeners: requests received, and those answered with an error by the router.
    pub requests: AtomicU64,
    pub request_errors: AtomicU64,
    /// Fired when the listener is deleted with `drop_flows`.
    pub drop_flows: Notify,
}

impl ListenerRt {
    pub(crate) fn new(cfg: config::TcpListener) -> Arc<ListenerRt> {
        Arc::new(ListenerRt {
            port: AtomicU16::new(cfg.port),
            cfg,
            state: Mutex::new(("down", "starting".into())),
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            request_errors: AtomicU64::new(0),
            drop_flows: Notify::new(),
        })
    }

    fn set_state(&self, state: &'static str, detail: impl Into<String>) {
        *self.state.lock().expect("listener state") = (state, detail.into());
    }

    pub(crate) fn finish(&self, rec: &FlowRecord) {
        self.closed.fetch_add(1, Ordering::Relaxed);
        self.bytes_in
            .fetch_add(rec.bytes_out.load(Ordering::Relaxed), Ordering::Relaxed);
        self.bytes_out
            .fetch_add(rec.bytes_in.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    pub(crate) fn shut(&self, drop_flows: bool) {
        if drop_flows {
            self.drop_flows.notify_waiters();
        }
    }
}

/// Runtime state of a TCP connector.
#[derive(Debug)]
pub struct ConnectorRt {
    pub cfg: config::TcpConnector,
    pub active: AtomicU32,
    pub opened: AtomicU64,
    pub closed: AtomicU64,
    pub failures: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub last_error: Mutex<String>,
    pub drop_flows: Notify,
    /// HTTP connectors: connections to the target, reused across requests.
    pub pool: Option<Arc<Pool>>,
    pub requests: AtomicU64,
}

impl ConnectorRt {
    pub(crate) fn new(cfg: config::TcpConnector) -> Arc<ConnectorRt> {
        let pool = match cfg.protocol {
            config::Protocol::Tcp => None,
            config::Protocol::Http => Some(Pool::new(Wire::Http1)),
            config::Protocol::Http2 => Some(Pool::new(Wire::Http2)),
        };
        Arc::new(ConnectorRt {
            cfg,
            pool,
            requests: AtomicU64::new(0),
            active: AtomicU32::new(0),
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
            drop_flows: Notify::new(),
        })
    }

    pub(crate) fn target(&self) -> String {
        format!("{}:{}", self.cfg.host, self.cfg.port)
    }

    /// Connects to the target within `timeout`. The error says what went wrong.
    pub(crate) async fn connect(&self, timeout: Duration) -> Result<TcpStream, String> {
        let target = self.target();
        let r = tokio::time::timeout(timeout, TcpStream::connect(&target)).await;
        let err = match r {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                self.opened.fetch_add(1, Ordering::Relaxed);
                return Ok(s);
            }
            Ok(Err(e)) => format!("connect to {target} failed: {e}"),
            Err(_) => format!("connect to {target} timed out after {timeout:?}"),
        };
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().expect("connector lock") = err.clone();
        debug!(connector = %self.cfg.name, error = %err, "Connector target unavailable");
        Err(err)
    }

    /// Accounts a finished flow; pairs with the increment of `active` in `ConnectorTable::pick`.
    pub(crate) fn finish(&self, rec: &FlowRecord) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.closed.fetch_add(1, Ordering::Relaxed);
        self.bytes_in
            .fetch_add(rec.bytes_in.load(Ordering::Relaxed), Ordering::Relaxed);
        self.bytes_out
            .fetch_add(rec.bytes_out.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    pub(crate) fn shut(&self, drop_flows: bool) {
        if drop_flows {
            self.drop_flows.notify_waiters();
        }
    }
}

/// The TCP listeners in force, by name.
#[derive(Debug, Default)]
pub(crate) struct ListenerTable {
    by_name: Mutex<BTreeMap<String, Arc<ListenerRt>>>,
}

impl ListenerTable {
    pub(crate) fn insert(&self, rt: Arc<ListenerRt>) {
        self.by_name
            .lock()
            .expect("listeners lock")
            .insert(rt.cfg.name.clone(), rt);
    }

    pub(crate) fn remove(&self, name: &str) -> Option<Arc<ListenerRt>> {
        self.by_name.lock().expect("listeners lock").remove(name)
    }

    pub(crate) fn list(&self) -> Vec<Arc<ListenerRt>> {
        self.by_name
            .lock()
            .expect("listeners lock")
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn port(&self, name: &str) -> Option<u16> {
        self.by_name
            .lock()
            .expect("listeners lock")
            .get(name)
            .map(|l| l.port.load(Ordering::Relaxed))
    }
}

/// The TCP connectors in force, by name: where egress flows go.
#[derive(Debug, Default)]
pub(crate) struct ConnectorTable {
    by_name: RwLock<BTreeMap<String, Arc<ConnectorRt>>>,
    rotate: AtomicUsize,
}

impl ConnectorTable {
    /// Makes the table hold the connectors of `next`, given that it held those of `old`:
    /// changed ones are replaced (their flows end only with `drop_flows`).
    pub(crate) fn reconcile(
        &self,
        old: &BTreeMap<String, config::TcpConnector>,
        next: &BTreeMap<String, config::TcpConnector>,
        drop_flows: bool,
    ) {
        let mut conns = self.by_name.write().expect("connectors lock");
        for (n, c) in old {
            if next.get(n) != Some(c)
                && let Some(rt) = conns.remove(n)
            {
                rt.shut(drop_flows);
            }
        }
        for (n, c) in next {
            if old.get(n) != Some(c) {
                conns.insert(n.clone(), ConnectorRt::new(c.clone()));
            }
        }
    }

    pub(crate) fn list(&self) -> Vec<Arc<ConnectorRt>> {
        self.by_name
            .read()
            .expect("connectors lock")
            .values()
            .cloned()
            .collect()
    }

    /// Routing keys served here, with connector counts.
    pub(crate) fn keys(&self) -> BTreeMap<String, u32> {
        let mut keys: BTreeMap<String, u32> = BTreeMap::new();
        for c in self.by_name.read().expect("connectors lock").values() {
            *keys.entry(c.cfg.routing_key.clone()).or_default() += 1;
        }
        keys
    }

    /// Connectors of `key` not named in `tried`.
    pub(crate) fn count_except(&self, key: &str, tried: &[String]) -> usize {
        self.by_name
            .read()
            .expect("connectors lock")
            .values()
            .filter(|c| c.cfg.routing_key == key && !tried.contains(&c.cfg.name))
            .count()
    }

    pub(crate) fn count(&self, key: &str) -> usize {
        self.by_name
            .read()
            .expect("connectors lock")
            .values()
            .filter(|c| c.cfg.routing_key == key)
            .count()
    }

    /// The connector of `key` with the fewest open flows (rotating among equals), counted
    /// as carrying one more flow until `ConnectorRt::finish`.
    pub(crate) fn pick(&self, key: &str) -> Option<Arc<ConnectorRt>> {
        self.pick_except(key, &[])
    }

    /// As `pick`, skipping the connectors named in `tried`.
    pub(crate) fn pick_except(&self, key: &str, tried: &[String]) -> Option<Arc<ConnectorRt>> {
        let c = self.by_name.read().expect("connectors lock");
        // Snapshot the counts once: other flows change them concurrently.
        let cands: Vec<(&Arc<ConnectorRt>, u32)> = c
            .values()
            .filter(|c| c.cfg.routing_key == key && !tried.contains(&c.cfg.name))
            .map(|c| (c, c.active.load(Ordering::Relaxed)))
            .collect();
        let min = cands.iter().map(|(_, n)| *n).min()?;
        let tied: Vec<_> = cands.into_iter().filter(|(_, n)| *n == min).collect();
        let pick = tied[self.rotate.fetch_add(1, Ordering::Relaxed) % tied.len()]
            .0
            .clone();
        pick.active.fetch_add(1, Ordering::Relaxed);
        Some(pick)
    }
}

/// Takes the connections a listener accepts (the flow dispatcher).
pub(crate) trait Accept: Send + Sync + 'static {
    fn accepted(&self, client: TcpStream, listener: Arc<ListenerRt>);
}

/// What a listener task needs from the router.
#[derive(Clone)]
pub(crate) struct ListenerEnv {
    /// Whether the listener's key is reachable decides whether it listens.
    pub(crate) table: TableRx,
    pub(crate) changes: Changes,
    pub(crate) accept: Arc<dyn Accept>,
}

fn resolve(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{host} has no address")))
}

/// Binds `host:port` without listening: the port is ours, but connections are refused.
pub(crate) fn reserve(host: &str, port: u16) -> std::io::Result<Socket> {
    let addr = resolve(host, port)?;
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// Opens and closes the listening socket as the routing key becomes reachable or not, and
/// hands accepted connections to the router.
pub(crate) async fn listener_task(env: ListenerEnv, rt: Arc<ListenerRt>, reserved: Option<Socket>) {
    let key = rt.cfg.routing_key.clone();
    let mut table = env.table.clone();
    let mut reserved = reserved;
    loop {
        // Hold the port (bound, not listening).
        let sock = match reserved.take() {
            Some(s) => s,
            None => match reserve(&rt.cfg.host, rt.port.load(Ordering::Relaxed)) {
                Ok(s) => s,
                Err(e) => {
                    rt.set_state("error", format!("cannot bind: {e}"));
                    env.changes.notify();
                    warn!(error = %e, "Cannot bind listener port; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        if let Ok(a) = sock.local_addr()
            && let Some(a) = a.as_socket()
        {
            rt.port.store(a.port(), Ordering::Relaxed);
        }
        rt.set_state("down", format!("no reachable connector for {key:?}"));
        env.changes.notify();
        // Wait until some connector of the key is reachable. HTTP listeners listen anyway:
        // they answer 503 naming the address, which says more than a refused connection.
        let http = rt.cfg.protocol.is_http();
        while !http && !table.borrow_and_update().reachable(&key) {
            if table.changed().await.is_err() {
                return;
            }
        }
        if let Err(e) = sock.listen(LISTEN_BACKLOG) {
            rt.set_state("error", format!("cannot listen: {e}"));
            env.changes.notify();
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let listener = match tokio::net::TcpListener::from_std(std::net::TcpListener::from(sock)) {
            Ok(l) => l,
            Err(e) => {
                rt.set_state("error", format!("cannot listen: {e}"));
                continue;
            }
        };
        rt.set_state("up", String::new());
        env.changes.notify();
        info!(port = rt.port.load(Ordering::Relaxed), key = %key, "Listener open");
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((s, _)) => {
                        let _ = s.set_nodelay(true);
                        env.accept.accepted(s, rt.clone());
                    }
                    Err(e) => {
                        warn!(error = %e, "Accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                r = table.changed() => {
                    if r.is_err() {
                        return;
                    }
                    if !http && !table.borrow_and_update().reachable(&key) {
                        break;
                    }
                }
            }
        }
        info!(key = %key, "Listener closed: no reachable connector");
        drop(listener);
    }
}
