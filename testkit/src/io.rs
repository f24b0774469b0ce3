//! Watching a server end a connection.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Whether the server closes `io` within `within` (EOF or reset on read), and if so what it
/// sent before closing.
pub async fn closed_within(io: &mut (impl AsyncRead + Unpin), within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| String::from_utf8_lossy(&got).into_owned())
}
