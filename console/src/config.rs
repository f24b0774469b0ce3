//! The console's flags, and checking them all (reading the users and TLS files too) before
//! anything is bound, so one run reports every problem.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::auth::{AuthMode, Users};
use crate::store::Limits;

/// Where the console listens when not told.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// `--auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthKind {
    /// Users from `--users-file` log in.
    Internal,
    /// No login: anyone who reaches the console sees everything.
    Unsecured,
}

/// The command-line options of `van-console` (and their environment variables).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The router's admin gRPC API: host:port, http://host:port or unix:/path.
    #[arg(long, env = "VAN_CONSOLE_ROUTER")]
    pub router: String,
    /// Address and port to serve on.
    #[arg(long, env = "VAN_CONSOLE_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Who may look.
    #[arg(long, env = "VAN_CONSOLE_AUTH", value_enum, default_value_t = AuthKind::Internal)]
    pub auth: AuthKind,
    /// Users for `--auth internal`: lines of `name:$argon2id$…` (see `hash-password`).
    #[arg(long, env = "VAN_CONSOLE_USERS_FILE", conflicts_with = "users_dir")]
    pub users_file: Option<PathBuf>,
    /// Users for `--auth internal` as a directory: one file per user, named after the user,
    /// holding the password or its argon2id hash (a mounted Secret).
    #[arg(long, env = "VAN_CONSOLE_USERS_DIR")]
    pub users_dir: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "VAN_CONSOLE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "VAN_CONSOLE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Wait for --tls-cert and --tls-key to appear instead of failing when they are missing:
    /// on Kubernetes they come from a Secret that the controller in the same pod writes
    /// after the pod started. The port is held meanwhile; HTTPS is served once they are read.
    #[arg(long, env = "VAN_CONSOLE_TLS_WAIT", requires = "tls_cert")]
    pub tls_wait: bool,
    /// A file holding a bearer token to send with every call to --router (on Kubernetes:
    /// the site's API token, which config-sync asks for before it passes the records on).
    #[arg(long, env = "VAN_CONSOLE_ROUTER_TOKEN_FILE")]
    pub router_token_file: Option<PathBuf>,
    /// How long ended connections and requests are kept, e.g. 90s, 15m, 1h.
    #[arg(long, env = "VAN_CONSOLE_RETENTION", default_value = "15m")]
    pub retention: String,
    /// Log filter, e.g. info or van_console=debug.
    #[arg(long, env = "VAN_CONSOLE_LOG", default_value = "info")]
    pub log: String,
}

impl Options {
    /// The defaults, attached to `router`, with `--auth unsecured`.
    pub fn unsecured(router: &str) -> Options {
        Options {
            router: router.into(),
            listen: DEFAULT_LISTEN.into(),
            auth: AuthKind::Unsecured,
            users_file: None,
            users_dir: None,
            tls_cert: None,
            tls_key: None,
            tls_wait: false,
            router_token_file: None,
            retention: "15m".into(),
            log: "info".into(),
        }
    }
}

/// Why TLS material cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("private key: {0}")]
    Key(String),
    #[error("the certificate and key do not go together: {0}")]
    Mismatch(String),
}

/// A TLS server configuration (HTTP/2 and HTTP/1.1) from a PEM certificate chain and key.
pub fn tls_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::Certificate("no certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub router: String,
    /// Sent as `authorization: Bearer <token>` to the router.
    pub router_token: Option<String>,
    pub listen: SocketAddr,
    pub auth: AuthMode,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Certificate and key files still to appear (`--tls-wait`): HTTPS is served once they
    /// are there.
    pub tls_pending: Option<(PathBuf, PathBuf)>,
    pub limits: Limits,
    pub log: String,
}

/// Everything wrong with the options, one problem per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

fn check_router(target: &str) -> Result<(), String> {
    if let Some(path) = target.strip_prefix("unix:") {
        return if path.is_empty() {
            Err("--router unix: needs a socket path".into())
        } else {
            Ok(())
        };
    }
    let uri = if target.contains("://") {
        target.to_string()
    } else {
        format!("http://{target}")
    };
    let parsed: axum::http::Uri = uri.parse().map_err(|e| {
        format!("--router {target:?} is not host:port, http://host:port or unix:/path: {e}")
    })?;
    if parsed.scheme_str() != Some("http") {
        return Err(format!(
            "--router {target:?}: only http:// (or unix:) is supported"
        ));
    }
    if parsed.host().is_none_or(str::is_empty) || parsed.port_u16().is_none() {
        return Err(format!("--router {target:?} needs a host and a port"));
    }
    Ok(())
}

/// Reads a file the user named, at most `max` bytes (a wrong path such as /dev/zero must
/// not fill memory).
pub(crate) fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("larger than {} KiB", max >> 10),
        ));
    }
    Ok(buf)
}

/// Certificates, keys and tokens are a few KiB.
const MAX_FILE: u64 = 1 << 20;

fn read(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    read_bounded(path, MAX_FILE).map_err(|e| format!("{what} {}: {e}", path.display()))
}

pub(crate) fn tls_config(
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, Vec<String>> {
    match (read("--tls-cert", cert), read("--tls-key", key)) {
        (Ok(c), Ok(k)) => tls_from_pem(&c, &k).map_err(|e| {
            vec![format!(
                "--tls-cert {} and --tls-key {}: {e}",
                cert.display(),
                key.display()
            )]
        }),
        (c, k) => Err(c.err().into_iter().chain(k.err()).collect()),
    }
}

impl Config {
    /// Checks every option, reading the files they name.
    pub fn from_options(o: Options) -> Result<Config, ConfigError> {
        let Options {
            router,
            listen,
            auth,
            users_file,
            users_dir,
            tls_cert,
            tls_key,
            tls_wait,
            router_token_file,
            retention,
            log,
        } = o;
        let mut problems = Vec::new();
        if let Err(p) = check_router(&router) {
            problems.push(p);
        }
        let router_token = router_token_file.and_then(|path| {
            let token = read("--router-token-file", &path)
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                .and_then(|t| {
                    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                        Err(format!(
                            "--router-token-file {}: not a token (empty, or not printable ASCII)",
                            path.display()
                        ))
                    } else {
                        Ok(t)
                    }
                });
            token.map_err(|p| problems.push(p)).ok()
        });
        let listen = listen
            .parse::<SocketAddr>()
            .map_err(|e| problems.push(format!("--listen {listen:?}: {e} (expected address:port)")))
            .ok();
        let retention = match humantime::parse_duration(&retention) {
            Ok(d) if d < Duration::from_secs(1) => {
                problems.push(format!("--retention {retention:?}: at least 1s"));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                problems.push(format!(
                    "--retention {retention:?}: {e} (expected a duration like 90s, 15m, 1h)"
                ));
                None
            }
        };
        // As van_telemetry::filter: the parser panics on some non-ASCII text and can spend
        // minutes on span field filters (found by fuzzing the router's log level).
        if !log.is_ascii() || log.contains(['{', '}']) {
            problems.push(format!(
                "--log {log:?}: use ASCII target=level directives such as info or van_console=debug"
            ));
        } else if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
            problems.push(format!("--log {log:?}: {e}"));
        }
        let auth = match (auth, users_file, users_dir) {
            (AuthKind::Unsecured, None, None) => Some(AuthMode::Unsecured),
            (AuthKind::Unsecured, _, _) => {
                problems.push("--users-file and --users-dir are for --auth internal".into());
                None
            }
            (AuthKind::Internal, None, None) => {
                problems.push("--auth internal needs --users-file or --users-dir".into());
                None
            }
            (AuthKind::Internal, _, Some(dir)) => Users::from_dir(&dir)
                .map(AuthMode::Internal)
                .map_err(|e| problems.push(format!("--users-dir: {e}")))
                .ok(),
            (AuthKind::Internal, Some(path), None) => match read("--users-file", &path) {
                Err(p) => {
                    problems.push(p);
                    None
                }
                Ok(bytes) => match Users::parse(&String::from_utf8_lossy(&bytes)) {
                    Ok(users) if users.is_empty() => {
                        problems.push(format!("--users-file {}: no users in it", path.display()));
                        None
                    }
                    Ok(users) => Some(AuthMode::Internal(users)),
                    Err(errors) => {
                        problems.extend(
                            errors
                                .into_iter()
                                .map(|e| format!("--users-file {}: {e}", path.display())),
                        );
                        None
                    }
                },
            },
        };
        let mut tls_pending = None;
        let tls = match (tls_cert, tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) if tls_wait && !(cert.exists() && key.exists()) => {
                tls_pending = Some((cert, key));
                None
            }
            (Some(cert), Some(key)) => match tls_config(&cert, &key) {
                Ok(c) => Some(c),
                Err(p) => {
                    problems.extend(p);
                    None
                }
            },
            _ => {
                problems.push("--tls-cert and --tls-key go together".into());
                None
            }
        };
        match (listen, retention, auth) {
            (Some(listen), Some(retention), Some(auth)) if problems.is_empty() => Ok(Config {
                router,
                router_token,
                listen,
                auth,
                tls,
                tls_pending,
                limits: Limits {
                    retention,
                    ..Limits::default()
                },
                log,
            }),
            _ => Err(ConfigError { problems }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options::unsecured("127.0.0.1:9000")
    }

    #[test]
    fn good_options_make_a_config() {
        let c = Config::from_options(options()).unwrap();
        assert_eq!(c.limits.retention, Duration::from_secs(900));
        assert!(matches!(c.auth, AuthMode::Unsecured));
        for router in ["http://r:1", "unix:/run/r.sock", "[::1]:5"] {
            assert_eq!(check_router(router), Ok(()), "{router}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let dir = std::env::temp_dir().join(format!("van-console-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let users = dir.join("users");
        std::fs::write(&users, "admin:$argon2id$nope\n# fine\nbob\n").unwrap();
        let e = Config::from_options(Options {
            router: "nohost".into(),
            listen: "localhost".into(),
            auth: AuthKind::Internal,
            users_file: Some(users.clone()),
            users_dir: None,
            tls_cert: Some(dir.join("missing.pem")),
            tls_key: None,
            tls_wait: false,
            router_token_file: Some(users.clone()),
            retention: "soon".into(),
            log: "info,[=".into(),
        })
        .unwrap_err();
        let text = e.to_string();
        for want in [
            "--router",
            "--listen",
            "--retention",
            "--log",
            "line 1",
            "line 3",
            "--tls-cert and --tls-key go together",
            "--router-token-file",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        let e = Config::from_options(Options {
            auth: AuthKind::Internal,
            ..options()
        })
        .unwrap_err();
        assert_eq!(
            e.problems,
            ["--auth internal needs --users-file or --users-dir"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
