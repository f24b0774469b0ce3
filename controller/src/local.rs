//! The local platform: a site is a directory, `$SKUPPER_HOME/namespaces/<name>`.
//!
//! ```text
//! site.yaml            site options (written by `skupper init`)
//! state.yaml           controller state: certificates, services, links, claims (mode 0600)
//! router.yaml          the router's bootstrap configuration (id, mode, admin socket)
//! run/*.sock           admin sockets: router, controller, supervisor
//! logs/*.log           one log per process
//! supervisor.pid
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::StoreError;
use crate::site::{SiteConfig, SiteState, SiteStore, StoreFuture};

/// `$SKUPPER_HOME`, else `$XDG_DATA_HOME/skupper`, else `~/.local/share/skupper`.
pub fn skupper_home() -> PathBuf {
    if let Some(h) = std::env::var_os("SKUPPER_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(x).join("skupper");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".local/share/skupper")
}

/// The files of one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteDir {
    pub root: PathBuf,
}

impl SiteDir {
    pub fn new(root: impl Into<PathBuf>) -> SiteDir {
        SiteDir { root: root.into() }
    }

    /// The directory of namespace `ns` under `home`.
    pub fn of(home: &Path, ns: &str) -> SiteDir {
        SiteDir::new(home.join("namespaces").join(ns))
    }

    pub fn site_file(&self) -> PathBuf {
        self.root.join("site.yaml")
    }
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.yaml")
    }
    pub fn router_config(&self) -> PathBuf {
        self.root.join("router.yaml")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn router_socket(&self) -> PathBuf {
        self.run_dir().join("router.sock")
    }
    pub fn controller_socket(&self) -> PathBuf {
        self.run_dir().join("controller.sock")
    }
    pub fn supervisor_socket(&self) -> PathBuf {
        self.run_dir().join("supervisor.sock")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// Console users: one file per user, named after it, holding its password (the layout
    /// of the Kubernetes Secret skupper-console-users mounted as a volume).
    pub fn console_users_dir(&self) -> PathBuf {
        self.root.join("console-users")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.root.join("supervisor.pid")
    }

    /// `unix:` gRPC targets for the router and controller admin APIs.
    pub fn router_target(&self) -> String {
        format!("unix:{}", self.router_socket().display())
    }
    pub fn controller_target(&self) -> String {
        format!("unix:{}", self.controller_socket().display())
    }

    pub fn exists(&self) -> bool {
        self.site_file().exists()
    }

    pub fn read_config(&self) -> Result<SiteConfig, StoreError> {
        let path = self.site_file();
        let text = std::fs::read_to_string(&path).map_err(|e| StoreError {
            what: path.display().to_string(),
            message: e.to_string(),
        })?;
        let cfg: SiteConfig = serde_yaml_ng::from_str(&text).map_err(|e| StoreError {
            what: path.display().to_string(),
            message: e.to_string(),
        })?;
        cfg.validate().map_err(|e| StoreError {
            what: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(cfg)
    }

    /// Creates the directory tree and writes the site options and router bootstrap file.
    pub fn create(&self, cfg: &SiteConfig) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(self.run_dir())?;
        // The sockets in run/ grant control of the site: only its owner may reach them.
        std::fs::set_permissions(self.run_dir(), std::fs::Permissions::from_mode(0o700))?;
        std::fs::create_dir_all(self.logs_dir())?;
        let router = format!(
            "# Bootstrap configuration; config-sync applies everything else over the admin API.\n\
             router:\n  id: {}\n  site: {}\n  mode: {}\n\
             admin:\n  listen: unix:{}\n",
            cfg.router_id(),
            cfg.id,
            cfg.mode.as_str(),
            self.router_socket().display()
        );
        write_atomic(&self.router_config(), router.as_bytes(), 0o644)?;
        let site = serde_yaml_ng::to_string(cfg).map_err(std::io::Error::other)?;
        write_atomic(&self.site_file(), site.as_bytes(), 0o644)
    }
}

/// Writes `path` through a temporary file and a rename, so readers never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Keeps the state in `state.yaml` of a site directory.
#[derive(Debug)]
pub struct LocalStore {
    path: PathBuf,
}

impl LocalStore {
    pub fn new(dir: &SiteDir) -> LocalStore {
        LocalStore {
            path: dir.state_file(),
        }
    }

    fn error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError {
            what: self.path.display().to_string(),
            message: e.to_string(),
        }
    }
}

impl SiteStore for LocalStore {
    fn load(&self) -> StoreFuture<'_, SiteState> {
        Box::pin(async move {
            match tokio::fs::read_to_string(&self.path).await {
                Ok(t) => serde_yaml_ng::from_str(&t).map_err(|e| self.error(e)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SiteState::default()),
                Err(e) => Err(self.error(e)),
            }
        })
    }

    fn save<'a>(&'a self, state: &'a SiteState) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let text = serde_yaml_ng::to_string(state).map_err(|e| self.error(e))?;
            let path = self.path.clone();
            // Holds private keys and claim secrets. The write ends with an fsync: off the
            // runtime's threads.
            tokio::task::spawn_blocking(move || write_atomic(&path, text.as_bytes(), 0o600))
                .await
                .map_err(|e| self.error(e))?
                .map_err(|e| self.error(e))
        })
    }
}

/// Runs the controller of the site in `dir` until `shutdown` completes: the API on
/// `run/controller.sock`, the claims endpoint on the site's claims port (interior sites).
pub async fn run(
    dir: SiteDir,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), crate::RunError> {
    let site = dir.read_config()?;
    std::fs::create_dir_all(dir.run_dir()).map_err(|e| StoreError {
        what: dir.run_dir().display().to_string(),
        message: e.to_string(),
    })?;
    let sock = dir.controller_socket();
    // A socket left by a crashed controller would make bind fail.
    let _ = std::fs::remove_file(&sock);
    let api = tokio::net::UnixListener::bind(&sock).map_err(|source| crate::RunError::Bind {
        what: "controller API",
        addr: sock.display().to_string(),
        source,
    })?;
    let claims = match site.mode {
        crate::site::RouterMode::Interior => {
            let addr = crate::controller::host_port(&site.ingress_bind, site.claims_port);
            Some(
                tokio::net::TcpListener::bind(&addr)
                    .await
                    .map_err(|source| crate::RunError::Bind {
                        what: "claims endpoint",
                        addr,
                        source,
                    })?,
            )
        }
        crate::site::RouterMode::Edge => None,
    };
    crate::run(
        crate::Options {
            site,
            store: std::sync::Arc::new(LocalStore::new(&dir)),
            clock: std::sync::Arc::new(crate::clock::SystemClock),
        },
        crate::Sockets {
            api: crate::ApiBind::Unix(api),
            claims,
            // The socket sits in `run/` (mode 0700): only the site's owner reaches it.
            api_token: None,
        },
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests;
