//! Who may look: users with argon2id password hashes, server-side sessions behind a cookie,
//! and a limit on failed logins per client address.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::time::Instant;

/// Name of the session cookie.
pub(crate) const COOKIE: &str = "van_console_session";
/// A session not used for this long ends.
const IDLE: Duration = Duration::from_secs(12 * 3600);
/// Failed logins allowed from one address within `FAILURE_WINDOW`.
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked for failed logins before the stale ones are swept.
const SWEEP_AT: usize = 4096;

/// The users of `--auth internal`, from a users file.
#[derive(Clone, Default)]
pub struct Users {
    hashes: HashMap<String, String>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the hashes.
        f.debug_struct("Users")
            .field("names", &self.hashes.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Why a user name or users file line is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsersError {
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("user name {0:?} is empty or holds ':' or white space")]
    BadName(String),
    #[error("{path}: {reason}")]
    Read { path: String, reason: String },
}

fn name_ok(name: &str) -> bool {
    !name.is_empty() && !name.contains(':') && !name.chars().any(char::is_whitespace)
}

impl Users {
    /// Parses a users file: `name:$argon2id$…` per line; blank lines and lines starting with
    /// `#` are skipped. Every bad line is reported.
    pub fn parse(text: &str) -> Result<Users, Vec<UsersError>> {
        let mut users = Users::default();
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: String| UsersError::Line {
                line: line_no,
                reason,
            };
            let Some((name, hash)) = line.split_once(':') else {
                errors.push(err("expected name:$argon2id$…".into()));
                continue;
            };
            if !name_ok(name) {
                errors.push(err(format!("bad user name {name:?}")));
                continue;
            }
            match PasswordHash::new(hash) {
                Ok(h) if h.hash.is_none() || h.salt.is_none() => {
                    errors.push(err("the hash has no salt or no digest".into()));
                    continue;
                }
                Ok(h) if h.algorithm.as_str() == "argon2id" => {}
                Ok(h) => {
                    errors.push(err(format!("{} hash; expected argon2id", h.algorithm)));
                    continue;
                }
                Err(e) => {
                    errors.push(err(format!("not a password hash: {e}")));
                    continue;
                }
            }
            if users.hashes.insert(name.into(), hash.into()).is_some() {
                errors.push(err(format!("user {name:?} is listed twice")));
            }
        }
        if errors.is_empty() {
            Ok(users)
        } else {
            Err(errors)
        }
    }

    /// Reads a directory with one file per user, named after the user, holding the password
    /// or its argon2id hash (as a Kubernetes Secret mounted as a volume). Hidden entries (the
    /// volume's own `..data` links) are skipped; plain passwords are hashed here, so the
    /// files' contents are not kept.
    pub fn from_dir(dir: &std::path::Path) -> Result<Users, UsersError> {
        let read_err = |path: &std::path::Path, e: std::io::Error| UsersError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let mut users = Users::default();
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| read_err(dir, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| read_err(dir, e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            // Following links: a mounted Secret's files are links into `..data`.
            if name.starts_with('.') || !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                continue;
            }
            if !name_ok(&name) {
                return Err(UsersError::BadName(name));
            }
            let text = crate::config::read_bounded(&path, 64 << 10)
                .and_then(|b| {
                    String::from_utf8(b).map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text")
                    })
                })
                .map_err(|e| read_err(&path, e))?;
            let secret = text.trim_end_matches(['\n', '\r']);
            let hash = match PasswordHash::new(secret) {
                Ok(h) if h.algorithm.as_str() == "argon2id" && h.hash.is_some() => secret.into(),
                _ if secret.is_empty() => {
                    return Err(UsersError::Read {
                        path: path.display().to_string(),
                        reason: "no password in it".into(),
                    });
                }
                _ => hash_password(secret),
            };
            users.hashes.insert(name, hash);
        }
        if users.is_empty() {
            return Err(UsersError::Read {
                path: dir.display().to_string(),
                reason: "no users in it".into(),
            });
        }
        Ok(users)
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

/// An argon2id PHC string for `password`, with a random salt and the crate's default cost.
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .expect("the system random source must work");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt length");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 accepts any password shorter than 4 GiB")
        .to_string()
}

/// One line of a users file for `user` with `password`.
pub fn users_file_line(user: &str, password: &str) -> Result<String, UsersError> {
    if !name_ok(user) {
        return Err(UsersError::BadName(user.into()));
    }
    Ok(format!("{user}:{}", hash_password(password)))
}

fn verify(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::new(Algorithm::Argon2id, Default::default(), Default::default())
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// How the console decides who may look.
#[derive(Debug, Clone)]
pub enum AuthMode {
    /// Users from a users file log in.
    Internal(Users),
    /// Anyone may look.
    Unsecured,
}

/// Sessions and failed logins, for one console process.
#[derive(Debug)]
pub(crate) struct Auth {
    pub(crate) mode: AuthMode,
    /// Hashed once at start: unknown users cost the same time to refuse as known ones.
    dummy: String,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
    random: SystemRandom,
}

#[derive(Debug)]
struct Session {
    user: Arc<str>,
    last_seen: Instant,
}

/// Why a login was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LoginError {
    Wrong,
    TooMany { retry_after: Duration },
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Auth {
    pub(crate) fn new(mode: AuthMode) -> Auth {
        let dummy = match &mode {
            AuthMode::Internal(_) => hash_password("not a password anyone has"),
            AuthMode::Unsecured => String::new(),
        };
        Auth {
            mode,
            dummy,
            sessions: Mutex::default(),
            failures: Mutex::default(),
            random: SystemRandom::new(),
        }
    }

    pub(crate) fn unsecured(&self) -> bool {
        matches!(self.mode, AuthMode::Unsecured)
    }

    /// When `ip` may try again, if it failed too often lately.
    pub(crate) fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let mut failures = lock(&self.failures);
        let f = failures.get_mut(&ip)?;
        while f.front().is_some_and(|t| now - *t >= FAILURE_WINDOW) {
            f.pop_front();
        }
        (f.len() >= MAX_FAILURES).then(|| FAILURE_WINDOW - (now - f[0]))
    }

    fn failed(&self, ip: IpAddr, now: Instant) {
        let mut failures = lock(&self.failures);
        if failures.len() >= SWEEP_AT {
            failures.retain(|_, f| f.back().is_some_and(|t| now - *t < FAILURE_WINDOW));
        }
        failures.entry(ip).or_default().push_back(now);
    }

    /// Checks a password (slowly: run it off the async threads) and opens a session.
    pub(crate) fn login(
        &self,
        ip: IpAddr,
        user: &str,
        password: &str,
        now: Instant,
    ) -> Result<String, LoginError> {
        if let Some(retry_after) = self.blocked(ip, now) {
            return Err(LoginError::TooMany { retry_after });
        }
        let AuthMode::Internal(users) = &self.mode else {
            return Err(LoginError::Wrong);
        };
        let known = users.hashes.get(user);
        let ok = verify(known.unwrap_or(&self.dummy), password) && known.is_some();
        if !ok {
            self.failed(ip, now);
            return Err(LoginError::Wrong);
        }
        lock(&self.failures).remove(&ip);
        let mut id = [0u8; 32];
        self.random
            .fill(&mut id)
            .expect("the system random source must work");
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, s| now - s.last_seen < IDLE);
        sessions.insert(
            id.clone(),
            Session {
                user: user.into(),
                last_seen: now,
            },
        );
        Ok(id)
    }

    /// The user of a session, which counts as a use of it.
    pub(crate) fn session(&self, id: &str, now: Instant) -> Option<Arc<str>> {
        let mut sessions = lock(&self.sessions);
        let s = sessions.get_mut(id)?;
        if now - s.last_seen >= IDLE {
            sessions.remove(id);
            return None;
        }
        s.last_seen = now;
        Some(s.user.clone())
    }

    pub(crate) fn logout(&self, id: &str) {
        lock(&self.sessions).remove(id);
    }
}

/// The session id in a `Cookie` header, if any.
pub(crate) fn session_cookie(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file_lines_parse_and_bad_lines_are_numbered() {
        let line = users_file_line("admin", "secret").unwrap();
        assert!(line.starts_with("admin:$argon2id$"), "{line}");
        let text = format!(
            "# users\n\n{line}\nnocolon\n:{}\nbob:plain\n{line}\n",
            &line[6..]
        );
        let errors = Users::parse(&text).unwrap_err();
        let lines: Vec<usize> = errors
            .iter()
            .map(|e| match e {
                UsersError::Line { line, .. } => *line,
                _ => 0,
            })
            .collect();
        assert_eq!(lines, [4, 5, 6, 7], "{errors:?}");
        let users = Users::parse(&format!("{line}\n")).unwrap();
        assert_eq!(users.len(), 1);
        assert!(verify(&users.hashes["admin"], "secret"));
        assert!(!verify(&users.hashes["admin"], "Secret"));
        assert!(users_file_line("a b", "x").is_err());
        assert!(users_file_line("a:b", "x").is_err());
    }

    #[test]
    fn a_users_directory_holds_passwords_or_hashes() {
        let dir = std::env::temp_dir().join(format!("van-console-users-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("..data")).unwrap();
        std::fs::write(dir.join("admin"), "plain-pass\n").unwrap();
        std::fs::write(dir.join("ops"), hash_password("hashed-pass")).unwrap();
        std::fs::write(dir.join(".hidden"), "x").unwrap();
        let users = Users::from_dir(&dir).unwrap();
        assert_eq!(users.len(), 2);
        assert!(verify(&users.hashes["admin"], "plain-pass"));
        assert!(verify(&users.hashes["ops"], "hashed-pass"));
        std::fs::write(dir.join("bad name"), "x").unwrap();
        assert!(matches!(Users::from_dir(&dir), Err(UsersError::BadName(_))));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            Users::from_dir(&dir),
            Err(UsersError::Read { .. })
        ));
    }

    #[test]
    fn sessions_expire_when_idle_and_failures_are_limited() {
        let users = Users::parse(&users_file_line("admin", "pw").unwrap()).unwrap();
        let auth = Auth::new(AuthMode::Internal(users));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            let e = auth.login(ip, "admin", "nope", t0).unwrap_err();
            assert_eq!(e, LoginError::Wrong, "attempt {i}");
        }
        assert!(matches!(
            auth.login(ip, "admin", "pw", t0 + Duration::from_secs(1)),
            Err(LoginError::TooMany { retry_after }) if retry_after == Duration::from_secs(59)
        ));
        // Another address is not held up, and the first may try again after a minute.
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(auth.login(other, "admin", "pw", t0).is_ok());
        let t1 = t0 + FAILURE_WINDOW;
        let id = auth.login(ip, "admin", "pw", t1).unwrap();
        assert_eq!(id.len(), 64);
        assert_eq!(auth.session(&id, t1).as_deref(), Some("admin"));
        // Use keeps it alive; twelve idle hours end it.
        let t2 = t1 + IDLE - Duration::from_secs(1);
        assert!(auth.session(&id, t2).is_some());
        assert!(auth.session(&id, t2 + IDLE).is_none());
        assert!(auth.session(&id, t2).is_none());
        assert_eq!(
            auth.login(ip, "nobody", "pw", t2).unwrap_err(),
            LoginError::Wrong
        );
    }

    #[test]
    fn finds_the_session_cookie() {
        assert_eq!(
            session_cookie("a=b; van_console_session=abc; c=d"),
            Some("abc")
        );
        assert_eq!(session_cookie("van_console_session_x=1"), None);
    }
}
