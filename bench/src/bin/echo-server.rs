//! TCP echo server: `echo-server 127.0.0.1:PORT`.
//!
//! One thread (tokio current-thread runtime), TCP_NODELAY on every accepted socket, so it
//! can hold thousands of idle connections and still answer a ping-pong without a hop
//! between threads.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const USAGE: &str = "ADDR   (e.g. 127.0.0.1:5300)";

fn main() {
    let args = van_bench::Args::parse(USAGE);
    let addr = van_bench::resolve(&args.positional(0, "listen address"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap_or_else(|e| van_bench::die(&format!("runtime: {e}")));
    rt.block_on(async move {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| van_bench::die(&format!("bind {addr}: {e}")));
        eprintln!("echo-server listening on {addr}");
        loop {
            let (mut sock, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // Out of descriptors and the like: report and keep serving the others.
                    eprintln!("accept: {e}");
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            let _ = sock.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if sock.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
}
