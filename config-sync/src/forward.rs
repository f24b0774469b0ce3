//! A plain TCP pass-through. On Kubernetes the claims endpoint lives in the controller pod,
//! but other sites reach a site through the router Service; config-sync, in the router pod,
//! passes those connections (still TLS, not terminated here) on to the controller.

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

/// Bounds a connection to the target, so a dead target does not pile up clients.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Parses `LISTEN=TARGET`, e.g. `0.0.0.0:8081=skupper:8081`.
pub fn parse(spec: &str) -> Result<(String, String), String> {
    let (l, t) = spec
        .split_once('=')
        .ok_or_else(|| format!("{spec:?} is not LISTEN=TARGET (e.g. 0.0.0.0:8081=skupper:8081)"))?;
    for (what, v) in [("listen address", l), ("target", t)] {
        let ok = v
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(format!("{spec:?}: the {what} {v:?} is not HOST:PORT"));
        }
    }
    Ok((l.to_string(), t.to_string()))
}

/// Accepts on `listener` and splices each connection to `target` until `shutdown`.
pub async fn run(
    listener: TcpListener,
    target: String,
    shutdown: impl std::future::Future<Output = ()>,
) {
    info!(listen = ?listener.local_addr().ok(), %target, "Forwarding");
    tokio::pin!(shutdown);
    loop {
        let (mut client, peer) = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "Accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let target = target.clone();
        tokio::spawn(async move {
            let mut upstream =
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&target)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        warn!(%peer, %target, error = %e, "Cannot reach the forward target");
                        return;
                    }
                    Err(_) => {
                        warn!(%peer, %target, "Connecting to the forward target timed out");
                        return;
                    }
                };
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                debug!(%peer, error = %e, "Forwarded connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn specs_are_checked() {
        assert_eq!(
            parse("0.0.0.0:8081=skupper:8081").unwrap(),
            ("0.0.0.0:8081".into(), "skupper:8081".into())
        );
        assert!(parse("0.0.0.0:8081").unwrap_err().contains("LISTEN=TARGET"));
        assert!(
            parse("0.0.0.0:x=skupper:8081")
                .unwrap_err()
                .contains("listen address")
        );
        assert!(parse("0.0.0.0:1=skupper").unwrap_err().contains("target"));
    }

    #[tokio::test]
    async fn bytes_pass_both_ways_and_half_close_ends_it() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let fwd = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fwd_addr = fwd.local_addr().unwrap();
        tokio::spawn(run(fwd, echo_addr.to_string(), std::future::pending()));
        let mut c = TcpStream::connect(fwd_addr).await.unwrap();
        c.write_all(b"claim bytes").await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"claim bytes");
    }
}
