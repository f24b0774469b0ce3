//! The local platform: a site is a directory, `$SKUPPER_HOME/namespaces/<name>`.
//!
//! ```text
//! site.yaml            site options (written by `skupper init`)
//! state.yaml           controller state: certificates, services, links, claims
//! state.yaml.bak       the state before the last change (a hard link to the old file)
//! router.yaml          the router's bootstrap configuration (id, mode, admin socket)
//! run/*.sock           admin sockets: router, controller, supervisor
//! logs/*.log           one log per process
//! supervisor.pid
//! ```
//!
//! The directory and everything in it belong to its owner alone (0700 folders, 0600 files):
//! the logs name peers and services, the state holds private keys.

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
    /// The state as it was before the controller's last change.
    pub fn state_backup(&self) -> PathBuf {
        self.root.join("state.yaml.bak")
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
        let text = read_text(&path, MAX_CONFIG).map_err(|e| StoreError {
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
        // Folders made here (SKUPPER_HOME included) are the owner's alone; the sockets in
        // run/ grant control of the site.
        for d in [self.run_dir(), self.logs_dir()] {
            private_dir(&d)?;
        }
        private_dir(&self.root)?;
        let router = format!(
            "# Bootstrap configuration; config-sync applies everything else over the admin API.\n\
             router:\n  id: {}\n  site: {}\n  mode: {}\n\
             admin:\n  listen: unix:{}\n",
            cfg.router_id(),
            cfg.id,
            cfg.mode.as_str(),
            self.router_socket().display()
        );
        write_atomic(&self.router_config(), router.as_bytes(), 0o600)?;
        let site = serde_yaml_ng::to_string(cfg).map_err(std::io::Error::other)?;
        write_atomic(&self.site_file(), site.as_bytes(), 0o600)
    }
}

/// site.yaml and router.yaml are a few hundred bytes.
pub const MAX_CONFIG: u64 = 1 << 20;
/// state.yaml grows with services, links and claims: a few KiB each.
pub const MAX_STATE: u64 = 64 << 20;

/// Creates `dir` and any missing parent with mode 0700, and makes `dir` itself 0700.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Reads at most `max` bytes of `path`; a bigger file (or an endless one, like /dev/zero)
/// is an error, not a reason to fill memory.
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    read_limited(f, max)
}

/// [`read_bounded`] for any reader (standard input, say).
pub fn read_limited(r: impl std::io::Read, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    r.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("larger than {}", size_text(max)),
        ));
    }
    Ok(buf)
}

/// [`read_bounded`] as UTF-8 text.
pub fn read_text(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read_bounded(path, max)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

fn size_text(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
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

/// Keeps the state in `state.yaml` of a site directory, and the one before the last change
/// in `state.yaml.bak`.
#[derive(Debug, Clone)]
pub struct LocalStore {
    path: PathBuf,
    backup: PathBuf,
}

impl LocalStore {
    pub fn new(dir: &SiteDir) -> LocalStore {
        LocalStore {
            path: dir.state_file(),
            backup: dir.state_backup(),
        }
    }

    fn error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError {
            what: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// A refusal to start from what `state.yaml` holds, with the way out.
    fn refuse(&self, problem: &str) -> StoreError {
        let way_out = match check_state(&self.backup) {
            Ok(_) => format!(
                "the state before the last change is in {}; `skupper system repair` puts it back \
                 (keeping this file aside)",
                self.backup.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
                "there is no backup ({} is missing): restore the file from a backup of your own, \
                 or delete the site and create it again (other sites must then be linked anew)",
                self.backup.display()
            ),
            Err(e) => format!(
                "its backup {} cannot be used either ({e}): restore the file from a backup of \
                 your own, or delete the site and create it again",
                self.backup.display()
            ),
        };
        self.error(format!(
            "{problem}; the controller will not start from it, because a new CA would cut this \
             site off from every linked site. {way_out}"
        ))
    }

    /// Keeps the current file as the backup: a hard link, so the old bytes stay where they
    /// are while the new file is renamed over `state.yaml`.
    fn keep_backup(&self) -> std::io::Result<()> {
        let tmp = self.backup.with_extension("bak.tmp");
        let _ = std::fs::remove_file(&tmp);
        match std::fs::hard_link(&self.path, &tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // A file system without hard links: copy instead.
            Err(_) => {
                std::fs::copy(&self.path, &tmp)?;
            }
        }
        std::fs::rename(&tmp, &self.backup)
    }
}

/// Reads and checks a state file (`state.yaml` or its backup): bounded in size, not empty,
/// parsed, its certificates whole.
pub fn check_state(path: &Path) -> std::io::Result<SiteState> {
    let bytes = read_bounded(path, MAX_STATE)?;
    SiteState::parse(&bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

impl LocalStore {
    /// The state as [`SiteStore::load`] gives it, read on this thread (the CLI checks a
    /// stopped site's state before starting it).
    pub fn load_now(&self) -> Result<SiteState, StoreError> {
        match check_state(&self.path) {
            Ok(s) => Ok(s),
            // A new site: the controller creates its CA. Unless a backup says the site had a
            // state before and the file was lost.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.backup.exists() {
                    Err(self.refuse("the file is missing but the site had a state"))
                } else {
                    Ok(SiteState::default())
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                Err(self.refuse(&e.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::FileTooLarge => {
                Err(self.refuse(&format!("the file is {e}")))
            }
            Err(e) => Err(self.error(e)),
        }
    }
}

impl SiteStore for LocalStore {
    fn load(&self) -> StoreFuture<'_, SiteState> {
        Box::pin(async move {
            let store = self.clone();
            tokio::task::spawn_blocking(move || store.load_now())
                .await
                .map_err(|e| self.error(e))?
        })
    }

    fn save<'a>(&'a self, state: &'a SiteState) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let text = serde_yaml_ng::to_string(state).map_err(|e| self.error(e))?;
            // Holds private keys and claim secrets. The write ends with an fsync: off the
            // runtime's threads.
            let store = self.clone();
            tokio::task::spawn_blocking(move || {
                store.keep_backup()?;
                write_atomic(&store.path, text.as_bytes(), 0o600)
            })
            .await
            .map_err(|e| self.error(e))?
            .map_err(|e| self.error(e))
        })
    }
}

/// What [`repair`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Repaired {
    /// `state.yaml` is sound; nothing was changed.
    Sound,
    /// The backup replaced `state.yaml`; the unusable file (if any) was kept at this path.
    Restored { kept: Option<PathBuf> },
}

/// Puts the backup back when `state.yaml` is unusable: the broken file is renamed to
/// `state.yaml.broken-<unix seconds>`, never deleted.
pub fn repair(dir: &SiteDir) -> Result<Repaired, StoreError> {
    let (path, backup) = (dir.state_file(), dir.state_backup());
    let err = |what: &Path, message: String| StoreError {
        what: what.display().to_string(),
        message,
    };
    let current = check_state(&path);
    match &current {
        Ok(_) => return Ok(Repaired::Sound),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !backup.exists() => {
            return Err(err(
                &path,
                "it is missing and there is no backup: the site has not started yet, or both \
                 files were removed"
                    .into(),
            ));
        }
        Err(_) => {}
    }
    let state = check_state(&backup).map_err(|e| {
        let why = current
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default();
        err(
            &backup,
            format!("the backup cannot be used either ({e}); state.yaml: {why}"),
        )
    })?;
    let text = serde_yaml_ng::to_string(&state).map_err(|e| err(&backup, e.to_string()))?;
    let kept = if path.exists() {
        let aside = path.with_extension(format!("yaml.broken-{}", crate::site::now_unix()));
        std::fs::rename(&path, &aside).map_err(|e| err(&path, e.to_string()))?;
        Some(aside)
    } else {
        None
    };
    write_atomic(&path, text.as_bytes(), 0o600).map_err(|e| err(&path, e.to_string()))?;
    Ok(Repaired::Restored { kept })
}

/// Runs the controller of the site in `dir` until `shutdown` completes: the API on
/// `run/controller.sock`, the claims endpoint on the site's claims port (interior sites).
pub async fn run(
    dir: SiteDir,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), crate::RunError> {
    let site = dir.read_config()?;
    private_dir(&dir.run_dir()).map_err(|e| StoreError {
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
