//! Dialling through an HTTP CONNECT proxy, for sites whose only way out is a corporate
//! egress proxy: links and claim redemption open a TCP tunnel with `CONNECT host:port` and
//! then speak TLS end to end, so the proxy sees neither certificates nor traffic.

use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest proxy answer head read before the tunnel starts.
const MAX_HEAD: usize = 8 * 1024;
/// curl's default port for an `http://` proxy without one.
const DEFAULT_PORT: u16 = 1080;

/// An HTTP proxy: `http://[user[:password]@]host[:port]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
    /// `user:password`, for `Proxy-Authorization: Basic`.
    credentials: Option<String>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_string())
    }
}

/// The URL without its password, for logs and status.
impl std::fmt::Display for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = match &self.credentials {
            Some(c) => format!("{}:***@", c.split(':').next().unwrap_or_default()),
            None => String::new(),
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "http://{user}{host}:{}", self.port)
    }
}

impl Proxy {
    /// Parses a proxy URL; the error names what is wrong with it.
    pub fn parse(url: &str) -> Result<Proxy, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?} is not an http:// proxy URL"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(format!("{url:?}: a proxy URL has no path"));
        }
        let (credentials, hostport) = match rest.rsplit_once('@') {
            Some((c, h)) => (Some(percent_decode(c)?), h),
            None => (None, rest),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} names no proxy host"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{url:?}: {p:?} is not a port number"))?,
        };
        Ok(Proxy {
            host: host.to_string(),
            port,
            credentials,
        })
    }

    /// The proxy for dialling `host` from `HTTPS_PROXY` (or `https_proxy`, `ALL_PROXY`,
    /// `all_proxy`) unless `NO_PROXY` (or `no_proxy`) exempts it, as curl reads them; the URL
    /// as given.
    pub fn from_env(host: &str) -> Option<String> {
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        };
        let proxy = var(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])?;
        let exempt = var(&["NO_PROXY", "no_proxy"]).is_some_and(|n| no_proxy_matches(&n, host));
        (!exempt).then_some(proxy)
    }
}

/// Whether `NO_PROXY` exempts `host`: `*`, or a listed name that is the host or a domain it
/// belongs to (`example.com` and `.example.com` both cover `a.example.com`), or the same IP.
pub fn no_proxy_matches(no_proxy: &str, host: &str) -> bool {
    let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
    no_proxy.split(',').map(str::trim).any(|entry| {
        let entry = entry.to_ascii_lowercase();
        // An entry may carry a port; the port does not narrow the match here.
        let name = match entry.rsplit_once(':') {
            Some((n, p)) if !n.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => entry.as_str(),
        };
        let name = name.trim_matches(['[', ']']);
        let name = name.strip_prefix('.').unwrap_or(name);
        !name.is_empty() && (name == "*" || host == name || host.ends_with(&format!(".{name}")))
    })
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape in the proxy credentials")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "proxy credentials are not UTF-8".to_string())
}

/// Why a tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("cannot reach proxy {proxy}: {source}")]
    Connect {
        proxy: String,
        #[source]
        source: std::io::Error,
    },
    #[error("proxy {proxy} did not answer within {after:?}")]
    Timeout { proxy: String, after: Duration },
    #[error(
        "proxy {proxy} asks for credentials (407); give them in the URL: http://user:password@host:port"
    )]
    AuthRequired { proxy: String },
    #[error("proxy {proxy} refused CONNECT {target}: {status}")]
    Refused {
        proxy: String,
        target: String,
        status: String,
    },
    #[error("proxy {proxy} answered CONNECT with something that is not HTTP: {detail}")]
    Protocol { proxy: String, detail: String },
}

/// Opens a TCP tunnel to `host:port` through `proxy`; the stream then carries the
/// caller's protocol (TLS) end to end.
pub async fn connect(
    proxy: &Proxy,
    host: &str,
    port: u16,
    within: Duration,
) -> Result<TcpStream, TunnelError> {
    let name = proxy.to_string();
    let work = async {
        let mut s = TcpStream::connect((proxy.host.as_str(), proxy.port))
            .await
            .map_err(|source| TunnelError::Connect {
                proxy: name.clone(),
                source,
            })?;
        let _ = s.set_nodelay(true);
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let auth = proxy
            .credentials
            .as_ref()
            .map(|c| {
                format!(
                    "Proxy-Authorization: Basic {}\r\n",
                    base64::engine::general_purpose::STANDARD.encode(c)
                )
            })
            .unwrap_or_default();
        let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n");
        let io = |source| TunnelError::Connect {
            proxy: name.clone(),
            source,
        };
        s.write_all(req.as_bytes()).await.map_err(io)?;
        let head = read_head(&mut s)
            .await
            .map_err(|detail| TunnelError::Protocol {
                proxy: name.clone(),
                detail,
            })?;
        let status_line = head.lines().next().unwrap_or_default().trim().to_string();
        let code = status_line
            .split_whitespace()
            .nth(1)
            .filter(|_| status_line.starts_with("HTTP/1."))
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| TunnelError::Protocol {
                proxy: name.clone(),
                detail: format!(
                    "status line {:?}",
                    status_line.chars().take(80).collect::<String>()
                ),
            })?;
        match code {
            200..=299 => Ok(s),
            407 => Err(TunnelError::AuthRequired {
                proxy: name.clone(),
            }),
            _ => Err(TunnelError::Refused {
                proxy: name.clone(),
                target,
                status: status_line.chars().take(120).collect(),
            }),
        }
    };
    tokio::time::timeout(within, work)
        .await
        .map_err(|_| TunnelError::Timeout {
            proxy: name.clone(),
            after: within,
        })?
}

/// Reads the proxy's answer head, byte by byte past what it may send: nothing of the
/// tunnelled protocol may be consumed (the peer speaks only after the client's hello, but a
/// byte too many would break TLS).
async fn read_head(s: &mut TcpStream) -> Result<String, String> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return Err(format!("an answer head over {MAX_HEAD} bytes"));
        }
        match s.read(&mut byte).await {
            Ok(0) => return Err("the proxy closed the connection before answering".into()),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_are_parsed_and_named_without_passwords() {
        let p = Proxy::parse("http://alice:s%40cret@proxy.corp:3128/").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp", 3128));
        assert_eq!(p.credentials.as_deref(), Some("alice:s@cret"));
        assert_eq!(p.to_string(), "http://alice:***@proxy.corp:3128");
        assert_eq!(Proxy::parse("http://[::1]:8080").unwrap().host, "::1");
        assert_eq!(Proxy::parse("http://10.0.0.1").unwrap().port, 1080);
        for bad in [
            "https://p:1",
            "p:3128",
            "http://:3128",
            "http://p:0",
            "http://p:x",
            "http://p:1/a",
        ] {
            assert!(Proxy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_proxy_matches_hosts_domains_and_star() {
        let n = "localhost, .corp.example,10.1.2.3, internal:8443";
        assert!(no_proxy_matches(n, "localhost"));
        assert!(no_proxy_matches(n, "west.corp.example"));
        assert!(no_proxy_matches(n, "corp.example"));
        assert!(no_proxy_matches(n, "10.1.2.3"));
        assert!(no_proxy_matches(n, "internal"));
        assert!(!no_proxy_matches(n, "example"));
        assert!(!no_proxy_matches(n, "notcorp.example"));
        assert!(no_proxy_matches("*", "anything"));
    }

    #[tokio::test]
    async fn connect_answers_are_told_apart() {
        use tokio::net::TcpListener;
        async fn proxy_answering(answer: &'static str) -> Proxy {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            tokio::spawn(async move {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; 1024];
                let n = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                assert!(req.starts_with("CONNECT west:55671 HTTP/1.1\r\n"), "{req}");
                s.write_all(answer.as_bytes()).await.unwrap();
                // The tunnel: echo what follows.
                let n = s.read(&mut buf).await.unwrap_or(0);
                let _ = s.write_all(&buf[..n]).await;
            });
            Proxy::parse(&format!("http://127.0.0.1:{port}")).unwrap()
        }
        let t = Duration::from_secs(5);
        let p = proxy_answering("HTTP/1.1 200 Connection established\r\n\r\n").await;
        let mut s = connect(&p, "west", 55671, t).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello", "nothing of the tunnel was eaten");
        let p = proxy_answering("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").await;
        let e = connect(&p, "west", 55671, t).await.unwrap_err();
        assert!(matches!(e, TunnelError::AuthRequired { .. }), "{e}");
        let p = proxy_answering("HTTP/1.1 403 Forbidden\r\n\r\n").await;
        let e = connect(&p, "west", 55671, t).await.unwrap_err().to_string();
        assert!(
            e.contains("refused CONNECT west:55671: HTTP/1.1 403 Forbidden"),
            "{e}"
        );
        let p = proxy_answering("SSH-2.0-OpenSSH\r\n\r\n").await;
        let e = connect(&p, "west", 55671, t).await.unwrap_err().to_string();
        assert!(e.contains("not HTTP"), "{e}");
    }
}
