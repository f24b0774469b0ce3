//! One raw HTTP/1.1 exchange, for tests that look at exactly what a server sends.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Sends one request (`Connection: close`, JSON content type, `headers` given as
/// `Name: value\r\n` lines) on `io` and reads until the server closes; returns the status,
/// the head's text and the body.
pub async fn exchange(
    mut io: impl AsyncRead + AsyncWrite + Unpin,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
         Content-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    io.write_all(req.as_bytes())
        .await
        .expect("send the request");
    let mut resp = Vec::new();
    // A TLS peer may close without close_notify; what was read is the answer.
    let _ = io.read_to_end(&mut resp).await;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}
