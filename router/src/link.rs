//! Inter-router links: dialing and accepting TLS connections, the handshake, and running a
//! link (one control connection for hellos and link state, one data connection for flows,
//! so bulk data never delays routing control).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use tracing::{Instrument, debug, info, info_span, warn};
use van_proto::wire::{self, Role};

use crate::advertise::Advertiser;
use crate::config::{self, Timers};
use crate::control::{ControlEvent, ControlOut};
use crate::edge::EdgePeer;
use crate::error::{LinkError, LinkFailure};
use crate::metrics::Metrics;
use crate::mux::{self, DataConn, OpenHandler};
use crate::neighbours::Neighbours;
use crate::routing::TableRx;
use crate::shared::{Changes, Identity, Rng};
use crate::wire::{Frame, VERSION, decode};

/// Time allowed for TCP connect, the TLS handshake and our handshake frame, each.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections on one link listener still in their handshake (TLS, handshake frame, a
/// control connection waiting for its data connection). More are closed as soon as they
/// are accepted, so strangers cannot hold many sockets, tasks and buffers.
const MAX_PENDING_HANDSHAKES: usize = 128;
/// Largest first frame a peer may send: a handshake is a few hundred bytes, and a header
/// announcing more is refused before anything is buffered for it.
const MAX_HANDSHAKE_FRAME: usize = 16 * 1024;
/// Period of the throttles on warnings about refused incoming connections.
const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(60);

type Tls = TlsStream<TcpStream>;

/// What links need from the rest of the router.
#[derive(Clone)]
pub(crate) struct LinkEnv {
    pub(crate) me: Arc<Identity>,
    pub(crate) timers: Timers,
    pub(crate) rng: Arc<Rng>,
    /// The routing engine: inter-router links report hellos and link state to it.
    pub(crate) engine: mpsc::UnboundedSender<ControlEvent>,
    pub(crate) table: TableRx,
    pub(crate) neighbours: Arc<Neighbours>,
    pub(crate) links: Arc<LinkTable>,
    /// Edge links exchange served keys through it.
    pub(crate) advertiser: Arc<Advertiser>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) changes: Changes,
    /// Decides what happens to flows the peer opens.
    pub(crate) opens: Arc<dyn OpenHandler>,
}

/// The links of this router by name: configured ones, and accepted ones while they run.
#[derive(Debug, Default)]
pub(crate) struct LinkTable {
    by_name: Mutex<BTreeMap<String, Arc<LinkStatus>>>,
}

impl LinkTable {
    pub(crate) fn insert(&self, status: Arc<LinkStatus>) {
        self.by_name
            .lock()
            .expect("links lock")
            .insert(status.name.clone(), status);
    }

    pub(crate) fn remove(&self, name: &str) {
        self.by_name.lock().expect("links lock").remove(name);
    }

    pub(crate) fn list(&self) -> Vec<Arc<LinkStatus>> {
        self.by_name
            .lock()
            .expect("links lock")
            .values()
            .cloned()
            .collect()
    }
}

/// Which side opened a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Configured here: this router dials.
    Outgoing,
    /// Accepted on a link listener.
    Incoming,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outgoing => "outgoing",
            Direction::Incoming => "incoming",
        }
    }
}

/// Live state of one link, shown by the admin API.
#[derive(Debug)]
pub struct LinkStatus {
    pub name: String,
    pub role: config::LinkRole,
    pub direction: Direction,
    pub peer_address: String,
    pub cost: AtomicU64,
    pub errors: AtomicU64,
    pub inner: Mutex<LinkInner>,
}

#[derive(Debug, Default)]
pub struct LinkInner {
    pub state: &'static str,
    pub peer_router: String,
    pub last_error: String,
    /// What kind of failure `last_error` is, when the last attempt failed.
    pub failure: Option<LinkFailure>,
    pub up_since: Option<Instant>,
    pub conn: Option<Arc<DataConn>>,
}

impl LinkStatus {
    pub(crate) fn new(
        name: String,
        role: config::LinkRole,
        direction: Direction,
        peer_address: String,
        cost: u32,
    ) -> Arc<LinkStatus> {
        Arc::new(LinkStatus {
            name,
            role,
            direction,
            peer_address,
            cost: AtomicU64::new(u64::from(cost)),
            errors: AtomicU64::new(0),
            inner: Mutex::new(LinkInner {
                state: "connecting",
                ..Default::default()
            }),
        })
    }

    fn set(&self, f: impl FnOnce(&mut LinkInner)) {
        f(&mut self.inner.lock().expect("link status lock"));
    }
}

/// What a link is, seen from this router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkKind {
    /// Between interior routers: takes part in link-state routing.
    InterRouter,
    /// This edge router's uplink to an interior router.
    EdgeUp,
    /// An edge router attached to this interior router.
    EdgeDown,
}

/// What both ends agreed on in the handshake.
#[derive(Debug, Clone)]
struct Agreed {
    peer: String,
    link_id: u64,
    cost: u32,
    kind: LinkKind,
}

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &Frame) -> std::io::Result<()> {
    let mut b = BytesMut::new();
    f.encode_to(&mut b);
    w.write_all(&b).await?;
    w.flush().await
}

/// Reads one frame; bytes that arrive after it stay in `buf` for the connection's reader.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    peer: &str,
) -> Result<Frame, LinkError> {
    loop {
        match decode(buf) {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {}
            Err(e) => {
                return Err(LinkError::Protocol {
                    peer: peer.to_string(),
                    reason: e.to_string(),
                });
            }
        }
        let n = r.read_buf(buf).await.map_err(|source| LinkError::Io {
            peer: peer.to_string(),
            source,
        })?;
        if n == 0 {
            return Err(LinkError::Closed {
                peer: peer.to_string(),
                reason: "closed during the handshake".into(),
            });
        }
    }
}

/// Reads a peer's first frame (its handshake, or a refusal), refusing a header that
/// announces more than [`MAX_HANDSHAKE_FRAME`] bytes before buffering any of it.
async fn read_first_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    peer: &str,
) -> Result<Frame, LinkError> {
    while buf.len() < crate::wire::HEADER_LEN {
        let n = r.read_buf(buf).await.map_err(|source| LinkError::Io {
            peer: peer.to_string(),
            source,
        })?;
        if n == 0 {
            return Err(LinkError::Closed {
                peer: peer.to_string(),
                reason: "closed during the handshake".into(),
            });
        }
    }
    let len = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
    if len > MAX_HANDSHAKE_FRAME {
        return Err(LinkError::Protocol {
            peer: peer.to_string(),
            reason: format!(
                "first frame (type {:#04x}) announces {len} bytes; a handshake has at most \
                 {MAX_HANDSHAKE_FRAME}",
                buf[0]
            ),
        });
    }
    read_frame(r, buf, peer).await
}

fn set_socket_options(s: &TcpStream) {
    let _ = s.set_nodelay(true);
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    let sock = socket2::SockRef::from(s);
    let _ = sock.set_tcp_keepalive(&ka);
    // Fail writes to a vanished peer within 20 s instead of the kernel's ~15 minutes.
    let _ = sock.set_tcp_user_timeout(Some(Duration::from_secs(20)));
}

fn our_handshake(me: &Identity, role: Role, link_id: u64, cost: u32) -> Frame {
    Frame::Handshake(wire::Handshake {
        version: VERSION,
        router_id: me.id.clone(),
        instance: me.instance,
        role: role as i32,
        link_id,
        cost,
        site_id: me.site.clone(),
        mode: me.mode.as_str().to_string(),
    })
}

/// Checks the peer's handshake; returns the refusal reason if it is unacceptable.
fn check_handshake(me: &Identity, h: &wire::Handshake, want: &[Role]) -> Result<(), String> {
    if h.version != VERSION {
        return Err(format!(
            "protocol version {} not supported (this router speaks {VERSION})",
            h.version
        ));
    }
    if !config::valid_name(&h.router_id) {
        return Err(format!(
            "invalid router id {:?}",
            h.router_id.chars().take(80).collect::<String>()
        ));
    }
    if h.router_id == me.id {
        return Err(format!(
            "peer uses this router's own id {:?} (duplicate router id or a link to itself)",
            h.router_id
        ));
    }
    let role = Role::try_from(h.role).unwrap_or(Role::Unspecified);
    if !want.contains(&role) {
        return Err(format!("unexpected connection role {}", role.as_str_name()));
    }
    Ok(())
}

// === outgoing ===

/// How long a dialer waits before its next attempt: from `backoff_min`, doubling with each
/// attempt up to `backoff_max`; a link that stayed up a while reconnects quickly again.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A link up this long counts as having worked.
    const STABLE: Duration = Duration::from_secs(10);

    fn new(timers: &Timers) -> Backoff {
        Backoff {
            min: timers.backoff_min(),
            max: timers.backoff_max(),
            next: timers.backoff_min(),
        }
    }

    /// The wait after an attempt (or a link) that lasted `lasted`.
    fn after(&mut self, lasted: Duration) -> Duration {
        if lasted > Self::STABLE {
            self.next = self.min;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

/// Keeps an outgoing link up: connect, handshake, run, and reconnect with backoff.
pub(crate) async fn dial_loop(
    env: LinkEnv,
    cfg: config::Link,
    tls: Arc<rustls::ClientConfig>,
    status: Arc<LinkStatus>,
) {
    let mut backoff = Backoff::new(&env.timers);
    loop {
        let started = Instant::now();
        match dial_once(&env, &cfg, &tls, &status).await {
            Ok(reason) => {
                info!(link = %cfg.name, %reason, "Link ended; reconnecting");
                status.set(|s| {
                    s.state = "down";
                    s.last_error = reason;
                    s.failure = None;
                    s.up_since = None;
                });
            }
            Err(e) => {
                let text = van_telemetry::Report(&e).to_string();
                if e.caused_by_peer() {
                    warn!(link = %cfg.name, error = %text, "Link failed");
                } else {
                    info!(link = %cfg.name, error = %text, "Link attempt failed");
                }
                // The status first: whoever sees the failure counted finds it explained.
                status.set(|s| {
                    s.state = "failed";
                    s.last_error = text;
                    s.failure = Some(e.failure());
                    s.up_since = None;
                });
                status.errors.fetch_add(1, Ordering::Relaxed);
                env.metrics.link_failures(e.kind());
            }
        }
        // Watchers of the admin views (config-sync, the controller) see every new reason.
        env.changes.notify();
        let jitter = Duration::from_millis(u64::from(env.rng.u32() % 100));
        tokio::time::sleep(backoff.after(started.elapsed()) + jitter).await;
        status.set(|s| s.state = "connecting");
        env.changes.notify();
    }
}

async fn connect_tls(
    cfg: &config::Link,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<(Tls, SocketAddr), LinkError> {
    let target = format!("{}:{}", cfg.host, cfg.port);
    if let Some(proxy) = &cfg.proxy {
        // Validated with the configuration.
        let proxy =
            van_proto::tunnel::Proxy::parse(proxy).map_err(|reason| LinkError::Protocol {
                peer: target.clone(),
                reason,
            })?;
        let tcp =
            van_proto::tunnel::connect(&proxy, &cfg.host, cfg.port, HANDSHAKE_TIMEOUT).await?;
        let addr = tcp.peer_addr().map_err(|source| LinkError::Io {
            peer: target.clone(),
            source,
        })?;
        set_socket_options(&tcp);
        return tls_over(cfg, tls, tcp, addr, target).await;
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&target)
        .await
        .map_err(|source| LinkError::Resolve {
            host: cfg.host.clone(),
            source,
        })?
        .collect();
    let mut last = None;
    let mut tcp = None;
    for a in addrs {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                tcp = Some((s, a));
                break;
            }
            Ok(Err(e)) => {
                last = Some(LinkError::Connect {
                    addr: a.to_string(),
                    source: e,
                })
            }
            Err(_) => {
                last = Some(LinkError::ConnectTimeout {
                    addr: a.to_string(),
                })
            }
        }
    }
    let Some((tcp, addr)) = tcp else {
        return Err(last.unwrap_or_else(|| LinkError::Resolve {
            host: cfg.host.clone(),
            source: std::io::Error::other("no addresses"),
        }));
    };
    set_socket_options(&tcp);
    tls_over(cfg, tls, tcp, addr, target).await
}

/// The link's TLS handshake over an open TCP connection (direct or through a proxy).
async fn tls_over(
    cfg: &config::Link,
    tls: &Arc<rustls::ClientConfig>,
    tcp: TcpStream,
    addr: SocketAddr,
    target: String,
) -> Result<(Tls, SocketAddr), LinkError> {
    let name = cfg.server_name.clone().unwrap_or_else(|| cfg.host.clone());
    let server_name = ServerName::try_from(name).map_err(|e| LinkError::Tls {
        peer: target.clone(),
        reason: format!("invalid server name: {e}"),
        certificate: false,
    })?;
    let stream = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TlsConnector::from(tls.clone()).connect(server_name, tcp),
    )
    .await
    .map_err(|_| LinkError::ConnectTimeout {
        addr: target.clone(),
    })?
    .map_err(|e| {
        let (reason, certificate) = crate::tls::explain(&e);
        LinkError::Tls {
            peer: target.clone(),
            reason,
            certificate,
        }
    })?;
    Ok((TlsStream::Client(stream), addr))
}

async fn dial_handshake(
    me: &Identity,
    cfg: &config::Link,
    tls: &Arc<rustls::ClientConfig>,
    role: Role,
    link_id: u64,
) -> Result<(Tls, BytesMut, wire::Handshake), LinkError> {
    let (mut s, addr) = connect_tls(cfg, tls).await?;
    let peer = addr.to_string();
    let io = |source| LinkError::Io {
        peer: peer.clone(),
        source,
    };
    write_frame(&mut s, &our_handshake(me, role, link_id, cfg.cost))
        .await
        .map_err(io)?;
    let mut buf = BytesMut::with_capacity(4096);
    let f = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_first_frame(&mut s, &mut buf, &peer))
        .await
        .map_err(|_| LinkError::ConnectTimeout { addr: peer.clone() })??;
    match f {
        Frame::Handshake(h) => {
            // The answer repeats our role; an edge must reach an interior router.
            check_handshake(me, &h, &[role])
                .and_then(|()| {
                    if cfg.role == config::LinkRole::Edge && h.mode != "interior" {
                        Err(format!(
                            "{} is not an interior router (mode {:?})",
                            h.router_id, h.mode
                        ))
                    } else {
                        Ok(())
                    }
                })
                .map_err(|reason| LinkError::Refused { peer, reason })?;
            Ok((s, buf, h))
        }
        Frame::GoAway(g) => Err(LinkError::Refused {
            peer,
            reason: g.reason,
        }),
        other => Err(LinkError::Protocol {
            peer,
            reason: format!("expected a handshake, got {other:?}"),
        }),
    }
}

async fn dial_once(
    env: &LinkEnv,
    cfg: &config::Link,
    tls: &Arc<rustls::ClientConfig>,
    status: &Arc<LinkStatus>,
) -> Result<String, LinkError> {
    let link_id = env.rng.u64();
    let (control_role, data_role, kind) = match cfg.role {
        config::LinkRole::InterRouter => (
            Role::InterRouterControl,
            Role::InterRouterData,
            LinkKind::InterRouter,
        ),
        config::LinkRole::Edge => (Role::EdgeControl, Role::EdgeData, LinkKind::EdgeUp),
    };
    let (control, cbuf, h) = dial_handshake(&env.me, cfg, tls, control_role, link_id).await?;
    let (data, dbuf, _) = dial_handshake(&env.me, cfg, tls, data_role, link_id).await?;
    let agreed = Agreed {
        peer: h.router_id.clone(),
        link_id,
        cost: cfg.cost.max(h.cost).max(1),
        kind,
    };
    Ok(run_link(
        env.clone(),
        agreed,
        true,
        status.clone(),
        (control, cbuf),
        (data, dbuf),
    )
    .await)
}

// === incoming ===

/// Accepts links on a link listener until the task is aborted.
pub(crate) async fn accept_loop(
    env: LinkEnv,
    cfg: config::LinkListener,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
) {
    let acceptor = TlsAcceptor::from(tls);
    // Control connections waiting for their data connection, by (peer router, link id).
    // Both arrive at the same address, so at this listener.
    let pending: Arc<Pending> = Arc::default();
    // Accepted links live in this set, so deleting the listener closes them too.
    let mut links = tokio::task::JoinSet::new();
    // Places for connections still in their handshake; a link gives its place back once up.
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    let refusals = Arc::new(Refusals::new(&cfg.name));
    let mut summaries =
        tokio::time::interval_at(Instant::now() + REFUSAL_LOG_PERIOD, REFUSAL_LOG_PERIOD);
    summaries.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = links.join_next() => continue,
            _ = summaries.tick() => {
                refusals.summarise();
                continue;
            }
        };
        let (tcp, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                warn!(listener = %cfg.name, error = %e, "Accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(place) = handshakes.clone().try_acquire_owned() else {
            drop(tcp);
            env.metrics.link_failures("busy");
            if refusals.allow("busy") {
                warn!(
                    listener = %cfg.name,
                    peer = %addr,
                    max = MAX_PENDING_HANDSHAKES,
                    "Too many incoming connections in their handshake: closed a new one \
                     (further ones are summed up)"
                );
            }
            continue;
        };
        set_socket_options(&tcp);
        let env = env.clone();
        let acceptor = acceptor.clone();
        let cfg = cfg.clone();
        let pending = pending.clone();
        let refusals = refusals.clone();
        links.spawn(
            async move {
                let accepted = Accepted {
                    tcp,
                    addr,
                    place: Some(place),
                };
                if let Err(e) = accept_one(&env, &cfg, &pending, acceptor, accepted).await {
                    env.metrics.link_failures(e.kind());
                    if refusals.allow(e.kind()) {
                        warn!(
                            listener = %cfg.name,
                            error = %van_telemetry::Report(&e),
                            "Refused incoming link (further refusals of this kind are summed up)"
                        );
                    }
                }
            }
            .instrument(info_span!("accept", peer = %addr)),
        );
    }
}

/// Warnings about refused incoming connections on one listener: the first of each kind per
/// period, then a summary, so strangers cannot grow the logs without bound.
struct Refusals {
    listener: String,
    throttle: Mutex<van_telemetry::Throttle<&'static str>>,
}

impl Refusals {
    fn new(listener: &str) -> Refusals {
        Refusals {
            listener: listener.to_string(),
            throttle: Mutex::new(van_telemetry::Throttle::new(REFUSAL_LOG_PERIOD)),
        }
    }

    fn allow(&self, kind: &'static str) -> bool {
        self.throttle.lock().expect("refusals lock").allow(kind)
    }

    fn summarise(&self) {
        let summary = self.throttle.lock().expect("refusals lock").summary();
        if let Some(s) = summary {
            warn!(
                listener = %self.listener,
                "{} more incoming connections refused in the last {} s",
                s.count,
                s.secs()
            );
        }
    }
}

/// An accepted connection, and its place among those in their handshake.
struct Accepted {
    tcp: TcpStream,
    addr: SocketAddr,
    place: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// What an incoming connection was doing when it failed.
#[derive(Debug, Clone, Copy)]
enum Step {
    Tls,
    Hello,
    Answer,
    Data,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Tls => "the TLS handshake",
            Step::Hello => "the handshake frame (hello)",
            Step::Answer => "our handshake answer",
            Step::Data => "the data connection of its link",
        })
    }
}

/// Why an incoming connection was refused: it was accepted here (this router did not dial
/// it), from which address, at which step.
#[derive(Debug, thiserror::Error)]
enum AcceptError {
    #[error("incoming connection from {peer}: timed out after {after:?} waiting for {step}")]
    TimedOut {
        peer: SocketAddr,
        step: Step,
        after: Duration,
    },
    #[error("incoming connection from {peer}: refused at {step}")]
    Failed {
        peer: SocketAddr,
        step: Step,
        #[source]
        source: LinkError,
    },
}

impl AcceptError {
    fn kind(&self) -> &'static str {
        match self {
            AcceptError::TimedOut { .. } => "timeout",
            AcceptError::Failed { source, .. } => source.kind(),
        }
    }
}

type Pending = Mutex<HashMap<(String, u64), oneshot::Sender<(Tls, BytesMut)>>>;

async fn accept_one(
    env: &LinkEnv,
    cfg: &config::LinkListener,
    pending_links: &Pending,
    acceptor: TlsAcceptor,
    accepted: Accepted,
) -> Result<(), AcceptError> {
    let Accepted {
        tcp,
        addr,
        mut place,
    } = accepted;
    let peer = addr.to_string();
    let timed_out = |step| AcceptError::TimedOut {
        peer: addr,
        step,
        after: HANDSHAKE_TIMEOUT,
    };
    let failed = |step| {
        move |source| AcceptError::Failed {
            peer: addr,
            step,
            source,
        }
    };
    let mut s = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| timed_out(Step::Tls))?
        .map_err(|e| {
            let (reason, certificate) = crate::tls::explain(&e);
            LinkError::Tls {
                peer: peer.clone(),
                reason,
                certificate,
            }
        })
        .map(TlsStream::Server)
        .map_err(failed(Step::Tls))?;
    let mut buf = BytesMut::with_capacity(4096);
    let f = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_first_frame(&mut s, &mut buf, &peer))
        .await
        .map_err(|_| timed_out(Step::Hello))?
        .map_err(failed(Step::Hello))?;
    let Frame::Handshake(h) = f else {
        return Err(failed(Step::Hello)(LinkError::Protocol {
            peer,
            reason: "first frame is not a handshake".into(),
        }));
    };
    // A listener takes the links of its role only.
    let accepted: &[Role] = match cfg.role {
        config::LinkRole::InterRouter => &[Role::InterRouterControl, Role::InterRouterData],
        config::LinkRole::Edge => &[Role::EdgeControl, Role::EdgeData],
    };
    if let Err(reason) = check_handshake(&env.me, &h, accepted).map_err(|r| {
        format!(
            "{r} (listener {} takes {} links)",
            cfg.name,
            cfg.role.as_str()
        )
    }) {
        let _ = write_frame(
            &mut s,
            &Frame::GoAway(wire::GoAway {
                reason: reason.clone(),
            }),
        )
        .await;
        return Err(failed(Step::Hello)(LinkError::Refused { peer, reason }));
    }
    let role = Role::try_from(h.role).unwrap_or(Role::Unspecified);
    let cost = cfg.cost.max(h.cost).max(1);
    let key = (h.router_id.clone(), h.link_id);
    // Register the control connection before answering it: the dialer opens the data
    // connection as soon as it reads our answer.
    let is_data = matches!(role, Role::InterRouterData | Role::EdgeData);
    let pending = if !is_data {
        let (tx, rx) = oneshot::channel();
        pending_links
            .lock()
            .expect("pending lock")
            .insert(key.clone(), tx);
        Some(rx)
    } else {
        None
    };
    let reply = write_frame(&mut s, &our_handshake(&env.me, role, h.link_id, cost)).await;
    if let Err(source) = reply {
        pending_links.lock().expect("pending lock").remove(&key);
        return Err(failed(Step::Answer)(LinkError::Io {
            peer: peer.clone(),
            source,
        }));
    }
    if is_data {
        let waiting = pending_links.lock().expect("pending lock").remove(&key);
        return match waiting {
            Some(tx) => {
                let _ = tx.send((s, buf));
                Ok(())
            }
            None => Err(failed(Step::Hello)(LinkError::Refused {
                peer,
                reason: format!("data connection for unknown link {}", h.link_id),
            })),
        };
    }
    let rx = pending.expect("control connections register above");
    let data = tokio::time::timeout(HANDSHAKE_TIMEOUT, rx).await;
    pending_links.lock().expect("pending lock").remove(&key);
    let data = match data {
        Ok(Ok(data)) => data,
        Err(_) => return Err(timed_out(Step::Data)),
        Ok(Err(_)) => {
            return Err(failed(Step::Data)(LinkError::Closed {
                peer,
                reason: "data connection did not follow the control connection".into(),
            }));
        }
    };
    // The link is up: its place among connections in their handshake is free again.
    place.take();
    let name = format!("accepted:{}:{}", h.router_id, addr);
    let status = LinkStatus::new(
        name.clone(),
        cfg.role,
        Direction::Incoming,
        peer.clone(),
        cost,
    );
    env.links.insert(status.clone());
    // Unlisted when the link ends, or when its task is aborted.
    struct Unlist<'a>(&'a LinkEnv, String);
    impl Drop for Unlist<'_> {
        fn drop(&mut self) {
            self.0.links.remove(&self.1);
            self.0.changes.notify();
        }
    }
    let _unlist = Unlist(env, name.clone());
    let agreed = Agreed {
        peer: h.router_id.clone(),
        link_id: h.link_id,
        cost,
        kind: if cfg.role == config::LinkRole::Edge {
            LinkKind::EdgeDown
        } else {
            LinkKind::InterRouter
        },
    };
    let reason = run_link(env.clone(), agreed, false, status, (s, buf), data).await;
    info!(peer_router = %h.router_id, %reason, "Incoming link ended");
    Ok(())
}

// === running a link ===

/// Undoes a running link's registrations even when its task is aborted.
struct LinkGuard {
    env: LinkEnv,
    conn: Arc<DataConn>,
    link_id: u64,
    kind: LinkKind,
    edge: Option<Arc<EdgePeer>>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for LinkGuard {
    fn drop(&mut self) {
        match (self.kind, &self.edge) {
            (LinkKind::EdgeUp, Some(e)) => self.env.advertiser.remove_uplink(e),
            (LinkKind::EdgeDown, Some(e)) => self.env.advertiser.remove_edge(e),
            _ => {
                let _ = self.env.engine.send(ControlEvent::LinkDown {
                    link_id: self.link_id,
                });
            }
        }
        self.env.neighbours.remove(&self.conn);
        self.conn.close("link closed");
        for t in &self.tasks {
            t.abort();
        }
        self.env.changes.notify();
    }
}

async fn run_link(
    env: LinkEnv,
    agreed: Agreed,
    dialer: bool,
    status: Arc<LinkStatus>,
    control: (Tls, BytesMut),
    data: (Tls, BytesMut),
) -> String {
    let span = info_span!("link", peer = %agreed.peer, link_id = agreed.link_id);
    run_link_inner(env, agreed, dialer, status, control, data)
        .instrument(span)
        .await
}

async fn run_link_inner(
    env: LinkEnv,
    agreed: Agreed,
    dialer: bool,
    status: Arc<LinkStatus>,
    control: (Tls, BytesMut),
    data: (Tls, BytesMut),
) -> String {
    let (conn, out_rx) = DataConn::new(
        agreed.peer.clone(),
        agreed.link_id,
        agreed.cost,
        dialer,
        agreed.kind == LinkKind::EdgeDown,
    );
    let (sock, tls) = mux::into_parts(data.0);
    let reader = tokio::spawn(
        mux::run_data(conn.clone(), sock, tls, data.1, out_rx, env.opens.clone()).in_current_span(),
    );
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<ControlOut>();
    let (mut cr, mut cw) = tokio::io::split(control.0);
    let ctl_writer = tokio::spawn(
        async move {
            // Whatever is queued goes out in one write: a flood of link-state
            // advertisements costs a few system calls, not one per frame.
            let mut buf = BytesMut::new();
            while let Some(first) = ctl_rx.recv().await {
                let mut next = Some(first);
                let mut closing = None;
                while let Some(out) = next.take() {
                    match out {
                        ControlOut::Frame(f) => f.encode_to(&mut buf),
                        ControlOut::Close(reason) => {
                            Frame::GoAway(wire::GoAway { reason }).encode_to(&mut buf);
                            closing = Some(());
                            break;
                        }
                    }
                    if buf.len() < 1 << 20 {
                        next = ctl_rx.try_recv().ok();
                    }
                }
                if cw.write_all(&buf).await.is_err() || cw.flush().await.is_err() {
                    return;
                }
                buf.clear();
                if closing.is_some() {
                    let _ = cw.shutdown().await;
                    return;
                }
            }
        }
        .in_current_span(),
    );
    let mut guard = LinkGuard {
        env: env.clone(),
        conn: conn.clone(),
        link_id: agreed.link_id,
        kind: agreed.kind,
        edge: None,
        tasks: vec![reader.abort_handle(), ctl_writer.abort_handle()],
    };
    env.neighbours.add(conn.clone());
    status.cost.store(u64::from(agreed.cost), Ordering::Relaxed);
    status.set(|s| {
        s.state = "up";
        s.peer_router = agreed.peer.clone();
        s.last_error.clear();
        s.failure = None;
        s.up_since = Some(Instant::now());
        s.conn = Some(conn.clone());
    });
    let edge = match agreed.kind {
        LinkKind::InterRouter => {
            let _ = env.engine.send(ControlEvent::LinkUp {
                link_id: agreed.link_id,
                peer: agreed.peer.clone(),
                cost: agreed.cost,
                tx: ctl_tx.clone(),
            });
            None
        }
        LinkKind::EdgeUp | LinkKind::EdgeDown => {
            let e = EdgePeer::new(
                status.name.clone(),
                agreed.peer.clone(),
                agreed.cost,
                conn.clone(),
                ctl_tx.clone(),
            );
            if agreed.kind == LinkKind::EdgeUp {
                env.advertiser.add_uplink(e.clone());
            } else {
                env.advertiser.add_edge(e.clone());
                let feed = env
                    .advertiser
                    .clone()
                    .feed_edge(env.table.clone(), e.clone());
                guard
                    .tasks
                    .push(tokio::spawn(feed.in_current_span()).abort_handle());
            }
            // Edge links have no routing protocol; hellos only prove the peer is alive.
            let hello_tx = ctl_tx.clone();
            let (id, instance, every) = (
                env.me.id.clone(),
                env.me.instance,
                env.timers.hello_interval(),
            );
            guard.tasks.push(
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(every);
                    loop {
                        tick.tick().await;
                        let hello = wire::Hello {
                            router_id: id.clone(),
                            instance,
                            seen: Vec::new(),
                        };
                        if hello_tx
                            .send(ControlOut::Frame(Frame::Hello(hello)))
                            .is_err()
                        {
                            return;
                        }
                    }
                })
                .abort_handle(),
            );
            guard.edge = Some(e.clone());
            Some(e)
        }
    };
    drop(ctl_tx);
    env.changes.notify();
    info!(cost = agreed.cost, kind = ?agreed.kind, "Link up");
    let mut buf = control.1;
    let peer = agreed.peer.clone();
    let link_id = agreed.link_id;
    let max_age = env.timers.hello_max_age();
    let control_env = env.clone();
    let control_loop = async move {
        loop {
            let f = match tokio::time::timeout(max_age, read_frame(&mut cr, &mut buf, &peer)).await
            {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => return van_telemetry::Report(&e).to_string(),
                // Hellos arrive every interval on a live link: silence means the peer is gone
                // (the routing engine reaches the same verdict for inter-router links).
                Err(_) => return "no hello within the max age".to_string(),
            };
            match (f, &edge) {
                (Frame::Hello(hello), None) => {
                    let _ = control_env
                        .engine
                        .send(ControlEvent::Hello { link_id, hello });
                }
                (Frame::LinkState(ls), None) => {
                    let _ = control_env
                        .engine
                        .send(ControlEvent::LinkState { link_id, ls });
                }
                (Frame::Hello(_), Some(_)) => {}
                (Frame::AddressSet(set), Some(e)) => control_env.advertiser.edge_addresses(e, set),
                (Frame::GoAway(g), _) => return format!("peer closed the link: {}", g.reason),
                (other, _) => {
                    return format!(
                        "protocol error: unexpected frame on the control connection: type {:#04x}",
                        other.encode().0[0]
                    );
                }
            }
        }
    };
    let reason = tokio::select! {
        r = control_loop => r,
        r = reader => r.unwrap_or_else(|e| format!("data connection failed: {e}")),
    };
    debug!(%reason, "Link closing");
    guard.conn.close(&reason);
    status.set(|s| {
        s.state = "down";
        s.conn = None;
        s.up_since = None;
        s.last_error = reason.clone();
    });
    drop(guard);
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redial_delays_double_up_to_the_max_and_start_over_after_a_stable_link() {
        let timers = Timers {
            backoff_min_ms: 100,
            backoff_max_ms: 1000,
            ..Timers::default()
        };
        let mut b = Backoff::new(&timers);
        let failed = Duration::from_millis(5);
        let waits: Vec<u64> = (0..6).map(|_| b.after(failed).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        // A link that stayed up longer than STABLE reconnects at once...
        assert_eq!(
            b.after(Backoff::STABLE + failed),
            Duration::from_millis(100)
        );
        // ...and backs off again if it keeps failing.
        assert_eq!(b.after(failed), Duration::from_millis(200));
        // One that dropped sooner keeps backing off.
        assert_eq!(b.after(Backoff::STABLE), Duration::from_millis(400));
    }
}
