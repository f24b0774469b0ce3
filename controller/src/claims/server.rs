//! The issuing site's side of the claims endpoint.
//!
//! Anyone who can reach the port may talk to it, so it is bounded the way a proxy at the edge
//! of a network would bound it ([`Limits`]): a cap on open connections (more are closed at
//! once), deadlines for the TLS handshake, the request head and the whole connection, one
//! request per connection, a small request head and body (a declared body too large is
//! answered 413 before any of it is read, so `Expect: 100-continue` gets no "100 Continue"),
//! and per-source rate limiting of failed claims: after a few failures a source is answered
//! 429 with `Retry-After`, without asking the issuer, for a time that doubles with each
//! further failure. Warnings that a stranger can cause are throttled ([`van_telemetry::Throttle`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use van_telemetry::Throttle;

use super::{SITE_ID_HEADER, SITE_NAME_HEADER, TIMEOUT, provider};
use crate::error::ClaimError;
use crate::token::CertToken;

/// How often repeated warnings are summed up, and the period of their throttles.
const LOG_PERIOD: Duration = Duration::from_secs(60);

/// What the endpoint allows one client, and all of them together.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Time to finish the TLS handshake.
    pub handshake: Duration,
    /// Time to send the request head (method, path, headers), from the end of the handshake.
    pub header_read: Duration,
    /// Time a connection may stay open in all, whatever it is doing.
    pub connection: Duration,
    /// Largest request body (a claim's secret is a few dozen bytes).
    pub max_body: usize,
    /// Largest request head, in bytes.
    pub max_head: usize,
    /// Failed claims a source may make within `failure_window` before it is held off.
    pub free_failures: u32,
    pub failure_window: Duration,
    /// How long a source is held off after its free failures: `backoff_min`, doubling with
    /// each further failure up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Sources remembered at once; the least recently seen is forgotten to make room.
    pub max_sources: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 256,
            handshake: TIMEOUT,
            header_read: TIMEOUT,
            connection: TIMEOUT * 3,
            max_body: 4096,
            max_head: 16 * 1024,
            free_failures: 5,
            failure_window: Duration::from_secs(60),
            backoff_min: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
            max_sources: 4096,
        }
    }
}

/// What the endpoint asks of the site: check a claim and, if it holds, issue a cert token for
/// the site `requester`. A refused claim must change nothing.
pub trait Issuer: Send + Sync + 'static {
    fn redeem(
        &self,
        claim: &str,
        secret: &str,
        requester: &str,
    ) -> impl Future<Output = Result<CertToken, ClaimError>> + Send;
}

/// TLS for the endpoint, from the site's server certificate.
pub fn server_tls(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves claims on `listener` with `tls` until `shutdown` completes, with the default
/// [`Limits`].
pub async fn serve<I: Issuer>(
    issuer: Arc<I>,
    tls: Arc<rustls::ServerConfig>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(issuer, tls, listener, Limits::default(), shutdown).await
}

/// Serves claims on `listener` with `tls` and `limits` until `shutdown` completes.
pub async fn serve_with<I: Issuer>(
    issuer: Arc<I>,
    tls: Arc<rustls::ServerConfig>,
    listener: TcpListener,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let tls = tokio_rustls::TlsAcceptor::from(tls);
    info!(addr = ?listener.local_addr().ok(), "Claims endpoint listening");
    let guard = Arc::new(Guard::new(limits));
    let open = Arc::new(Semaphore::new(guard.limits.max_connections));
    let mut summaries = tokio::time::interval_at(Instant::now() + LOG_PERIOD, LOG_PERIOD);
    summaries.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            _ = summaries.tick() => {
                guard.log.summarise();
                continue;
            }
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "Claims accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            drop(tcp);
            guard.log.busy(peer, guard.limits.max_connections);
            continue;
        };
        let tls = tls.clone();
        let issuer = issuer.clone();
        let guard = guard.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let limits = guard.limits.clone();
            let conn = async {
                let stream = match tokio::time::timeout(limits.handshake, tls.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "Claims TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!(%peer, "Claims TLS handshake timed out");
                        return;
                    }
                };
                let svc = hyper::service::service_fn(move |req| {
                    let (issuer, guard) = (issuer.clone(), guard.clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(handle(&*issuer, &guard, peer, req).await)
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_read)
                    .max_buf_size(limits.max_head)
                    // One claim per connection: a connection is not held open for the next.
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), svc);
                if let Err(e) = conn.await {
                    debug!(%peer, error = %e, "Claims connection failed");
                }
            };
            if tokio::time::timeout(limits.connection, conn).await.is_err() {
                debug!(%peer, "Claims connection closed: open too long");
            }
        });
    }
}

/// The endpoint's shared state: its limits, the failed-claim table and the log throttles.
struct Guard {
    limits: Limits,
    failures: Mutex<Failures>,
    log: Log,
}

impl Guard {
    fn new(limits: Limits) -> Guard {
        Guard {
            failures: Mutex::new(Failures::new(&limits)),
            limits,
            log: Log::default(),
        }
    }
}

/// The warnings strangers can cause, each kind throttled on its own: the first per source
/// per period, then a summary.
struct Log {
    refused: Mutex<Throttle<IpAddr>>,
    held_off: Mutex<Throttle<IpAddr>>,
    busy: Mutex<Throttle<()>>,
}

impl Default for Log {
    fn default() -> Log {
        Log {
            refused: Mutex::new(Throttle::new(LOG_PERIOD)),
            held_off: Mutex::new(Throttle::new(LOG_PERIOD)),
            busy: Mutex::new(Throttle::new(LOG_PERIOD)),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Log {
    fn refused(&self, source: IpAddr, claim: &str, requester: &str, reason: &str) {
        if lock(&self.refused).allow(source) {
            warn!(%source, claim = %printable(claim), requester = %printable(requester), reason,
                "Claim refused (further refusals from this source are summed up)");
        }
    }

    fn held_off(&self, source: IpAddr, retry_after: Duration) {
        if lock(&self.held_off).allow(source) {
            warn!(%source, retry_after_secs = secs(retry_after),
                "Claims from this source held off after repeated failed claims");
        }
    }

    fn busy(&self, peer: SocketAddr, max: usize) {
        if lock(&self.busy).allow(()) {
            warn!(%peer, max_connections = max,
                "Claims endpoint at its connection limit: closed a new connection");
        }
    }

    fn summarise(&self) {
        if let Some(s) = lock(&self.refused).summary() {
            warn!("{} more refused claims in the last {} s", s.count, s.secs());
        }
        if let Some(s) = lock(&self.held_off).summary() {
            warn!(
                "{} more claims held off by rate limiting in the last {} s",
                s.count,
                s.secs()
            );
        }
        if let Some(s) = lock(&self.busy).summary() {
            warn!(
                "{} more connections closed at the connection limit in the last {} s",
                s.count,
                s.secs()
            );
        }
    }
}

/// Text a stranger sent, cut short and with control characters escaped, fit for a log line.
fn printable(s: &str) -> String {
    s.chars().take(64).flat_map(char::escape_debug).collect()
}

fn secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// The source a failed claim counts against: the address, or its /64 for IPv6 (one host
/// usually holds a whole /64).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Failed claims by source.
#[derive(Debug)]
pub(super) struct Failures {
    free: u32,
    window: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    max_sources: usize,
    by_source: HashMap<IpAddr, Record>,
}

#[derive(Debug)]
struct Record {
    /// Failures in the window that began at `window_start`.
    failures: u32,
    window_start: Instant,
    /// Times this source was held off since it was last forgotten.
    strikes: u32,
    held_until: Option<Instant>,
    /// Claims from it being checked right now.
    in_flight: u32,
    last_seen: Instant,
    last_failure: Instant,
}

impl Failures {
    pub(super) fn new(l: &Limits) -> Failures {
        Failures {
            free: l.free_failures.max(1),
            window: l.failure_window,
            backoff_min: l.backoff_min,
            backoff_max: l.backoff_max.max(l.backoff_min),
            max_sources: l.max_sources.max(1),
            by_source: HashMap::new(),
        }
    }

    /// A record is forgotten once its source has been quiet, past the end of any hold-off,
    /// for longer than the failure window and the longest hold-off: a source held off for
    /// the longest time is still remembered when it comes back.
    fn stale(&self, r: &Record, now: Instant) -> bool {
        let quiet_since = r
            .held_until
            .map_or(r.last_failure, |t| t.max(r.last_failure));
        r.in_flight == 0
            && quiet_since <= now
            && now.duration_since(quiet_since) >= self.window.max(self.backoff_max)
    }

    /// A claim from `source` may be checked now (and is counted in flight until
    /// [`done`](Self::done)), or must wait this long.
    pub(super) fn admit(&mut self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        if let Some(r) = self.by_source.get(&source)
            && self.stale(r, now)
        {
            self.by_source.remove(&source);
        }
        if !self.by_source.contains_key(&source) && self.by_source.len() >= self.max_sources {
            self.make_room(now);
        }
        let free = self.free;
        let r = self.by_source.entry(source).or_insert(Record {
            failures: 0,
            window_start: now,
            strikes: 0,
            held_until: None,
            in_flight: 0,
            last_seen: now,
            last_failure: now,
        });
        r.last_seen = now;
        if let Some(until) = r.held_until
            && until > now
        {
            return Err(until - now);
        }
        // Claims sent side by side count as failures until they are answered, so a burst
        // on many connections gets no more tries than one after another.
        if r.in_flight > 0 && r.failures + r.in_flight >= free {
            return Err(Duration::from_secs(1));
        }
        r.in_flight += 1;
        Ok(())
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_source.len()
    }

    fn make_room(&mut self, now: Instant) {
        let before = self.by_source.len();
        let stale: Vec<IpAddr> = self
            .by_source
            .iter()
            .filter(|(_, r)| self.stale(r, now))
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            self.by_source.remove(&k);
        }
        if self.by_source.len() < before {
            return;
        }
        if let Some(oldest) = self
            .by_source
            .iter()
            .min_by_key(|(_, r)| r.last_seen)
            .map(|(k, _)| *k)
        {
            self.by_source.remove(&oldest);
        }
    }

    /// The claim admitted for `source` was answered; `failed` when the issuer refused it.
    /// Returns how long the source is now held off, if it is.
    pub(super) fn done(&mut self, source: IpAddr, failed: bool, now: Instant) -> Option<Duration> {
        let r = self.by_source.get_mut(&source)?;
        r.in_flight = r.in_flight.saturating_sub(1);
        if !failed {
            return None;
        }
        if r.strikes == 0 && now.duration_since(r.window_start) >= self.window {
            r.failures = 0;
            r.window_start = now;
        }
        r.failures += 1;
        r.last_failure = now;
        if r.failures < self.free {
            return None;
        }
        // Every failure past the free ones holds the source off again, twice as long.
        let hold = self
            .backoff_min
            .saturating_mul(1u32 << r.strikes.min(20))
            .min(self.backoff_max);
        r.strikes += 1;
        r.held_until = Some(now + hold);
        Some(hold)
    }
}

/// A claim in flight: counted against its source until it is answered, whichever way.
struct Attempt<'a> {
    guard: &'a Guard,
    source: IpAddr,
    failed: bool,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let held = lock(&self.guard.failures).done(self.source, self.failed, Instant::now());
        if let Some(d) = held {
            self.guard.log.held_off(self.source, d);
        }
    }
}

fn reply(status: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "reason": reason, "message": message }).to_string();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

async fn handle(
    issuer: &impl Issuer,
    guard: &Guard,
    peer: SocketAddr,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let max_body = guard.limits.max_body;
    if req.method() != hyper::Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "protocol",
            "use POST /<claim name>",
        );
    }
    // Refused before any of the body is read: hyper sends "100 Continue" only when the body
    // is polled, so a client that asked for it is told 413 instead.
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            "protocol",
            &format!("a claim body has at most {max_body} bytes"),
        );
    }
    let source = source_of(peer.ip());
    let admitted = lock(&guard.failures).admit(source, Instant::now());
    if let Err(wait) = admitted {
        guard.log.held_off(source, wait);
        let mut r = reply(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            &format!(
                "too many failed claims from this address; try again in {} s",
                secs(wait)
            ),
        );
        r.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from(secs(wait)),
        );
        return r;
    }
    let mut attempt = Attempt {
        guard,
        source,
        failed: false,
    };
    let claim = req.uri().path().trim_start_matches('/').to_string();
    let header = |k: &str| {
        req.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let site_id = header(SITE_ID_HEADER);
    let site_name = header(SITE_NAME_HEADER);
    let body = match Limited::new(req.into_body(), max_body).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "protocol",
                &format!("a claim body has at most {max_body} bytes"),
            );
        }
        Err(_) => return reply(StatusCode::BAD_REQUEST, "protocol", "unreadable body"),
    };
    let Ok(secret) = std::str::from_utf8(&body) else {
        return reply(
            StatusCode::BAD_REQUEST,
            "protocol",
            "the secret is not text",
        );
    };
    // The certificate names the requesting site; only characters a site id may hold.
    if !site_id.bytes().all(|b| b.is_ascii_hexdigit()) || site_id.len() > 64 {
        return reply(
            StatusCode::BAD_REQUEST,
            "protocol",
            "bad skupper-site-id header",
        );
    }
    match issuer.redeem(&claim, secret.trim(), &site_id).await {
        Ok(t) => {
            info!(claim = %printable(&claim), requester = %printable(&site_name), "Claim redeemed");
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/yaml")
                .body(Full::new(Bytes::from(t.to_yaml())))
                .expect("valid response")
        }
        Err(e) => {
            // An unavailable issuer is this site's fault, not the client's.
            attempt.failed = e.reason != "unavailable" && !e.retry;
            guard.log.refused(source, &claim, &site_name, e.reason);
            let status = match e.reason {
                "unknown" => StatusCode::NOT_FOUND,
                "tampered" => StatusCode::FORBIDDEN,
                "expired" | "used-up" => StatusCode::GONE,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            reply(status, e.reason, &e.detail)
        }
    }
}
