//! `van-console`: attaches to one router, joins every router's flow records and every site's
//! record into one in-memory model, and serves it as the REST API of docs/console-api.md,
//! Prometheus metrics, live updates and the web page.
//!
//! - `store`: the joined model (what records mean, retention, time series).
//! - `views`: the API's items built from it.
//! - `api`: the HTTP routes, errors and list queries; `metrics`: `/metrics`.
//! - `auth`: users, sessions, failed-login limits.
//! - `ingest`: the router's streams, with reconnects; `serve`: HTTP and HTTPS.

use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use van_proto::records::RecordBatch;

mod api;
mod auth;
mod config;
mod grpc;
mod ingest;
mod metrics;
mod serve;
mod store;
mod views;

pub use auth::{AuthMode, Users, UsersError, hash_password, users_file_line};
pub use config::{AuthKind, Config, ConfigError, DEFAULT_LISTEN, Options, TlsError, tls_from_pem};
pub use store::{Limits, Store};

/// How often ended connections and requests past the retention are dropped.
const EVICT_EVERY: Duration = Duration::from_secs(1);

/// The console's shared state: the store behind a lock, and the sessions.
#[derive(Clone, Debug)]
pub struct Console {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: RwLock<Store>,
    auth: auth::Auth,
    secure_cookies: bool,
}

/// Unix time now, in microseconds.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

// === impl Console ===

impl Console {
    /// A console with no records yet. `secure_cookies` when it is served over TLS.
    pub fn new(limits: Limits, auth: AuthMode, secure_cookies: bool) -> Console {
        Console {
            inner: Arc::new(Inner {
                store: RwLock::new(Store::new(limits)),
                auth: auth::Auth::new(auth),
                secure_cookies,
            }),
        }
    }

    /// Applies one batch of records, now.
    pub fn apply(&self, batch: RecordBatch) {
        self.apply_at(batch, now_us());
    }

    /// Applies one batch of records at `now_us` (Unix µs).
    pub fn apply_at(&self, batch: RecordBatch, now_us: u64) {
        self.write().apply_batch(batch, now_us);
    }

    /// Drops what is past the retention at `now_us`.
    pub fn evict_at(&self, now_us: u64) {
        self.write().evict(now_us);
    }

    /// The HTTP application: API, metrics and page.
    pub fn app(&self) -> axum::Router {
        api::app(self.clone())
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Store> {
        self.inner
            .store
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Store> {
        self.inner
            .store
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn auth(&self) -> &auth::Auth {
        &self.inner.auth
    }

    pub(crate) fn secure_cookies(&self) -> bool {
        self.inner.secure_cookies
    }
}

/// Reads the certificate and key once both files exist and go together (`--tls-wait`),
/// looking again every two seconds.
async fn wait_for_tls(cert: &std::path::Path, key: &std::path::Path) -> Arc<rustls::ServerConfig> {
    let mut said = String::new();
    loop {
        match config::tls_config(cert, key) {
            Ok(t) => return t,
            Err(problems) => {
                let now = problems.join("; ");
                if now != said {
                    tracing::info!(problem = %now, "Waiting for the TLS certificate and key");
                    said = now;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Why the console could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Router(#[from] van_proto::grpc::ConnectError),
}

/// Serves the console on `listener` (HTTPS when the config has TLS) and reads the network
/// through the router of `config`, until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future,
) -> Result<(), RunError> {
    let Config {
        router,
        router_token,
        listen: _,
        auth,
        tls,
        tls_pending,
        limits,
        log: _,
    } = config;
    if matches!(auth, AuthMode::Unsecured) {
        tracing::warn!(
            "Authentication is off (--auth unsecured): anyone who reaches the console sees the whole network"
        );
    }
    let console = Console::new(limits, auth, tls.is_some() || tls_pending.is_some());
    let channel = van_proto::grpc::lazy_channel(&router)?;
    let bearer = ingest::Bearer::new(router_token.as_deref());
    let tasks = [
        tokio::spawn(ingest::records(
            channel.clone(),
            bearer.clone(),
            console.clone(),
        )),
        tokio::spawn(ingest::sites(channel, bearer, console.clone())),
        tokio::spawn({
            let console = console.clone();
            async move {
                let mut tick = tokio::time::interval(EVICT_EVERY);
                loop {
                    tick.tick().await;
                    console.evict_at(now_us());
                }
            }
        }),
    ];
    let mut shutdown = std::pin::pin!(shutdown);
    let tls = match (tls, tls_pending) {
        (None, Some((cert, key))) => tokio::select! {
            t = wait_for_tls(&cert, &key) => Some(Some(t)),
            _ = &mut shutdown => None,
        },
        (tls, _) => Some(tls),
    };
    // `None`: asked to stop while waiting for the TLS files.
    if let Some(tls) = tls {
        if let Ok(addr) = listener.local_addr() {
            let scheme = if tls.is_some() { "https" } else { "http" };
            tracing::info!(%router, "Console serving on {scheme}://{addr}");
        }
        serve::serve(listener, console.app(), tls, shutdown).await;
    }
    for t in tasks {
        t.abort();
    }
    Ok(())
}
