//! Slow reader: `slowsink ADDR [--rate-mbps 400] [--chunk-kib 256] [--timeout-ms 60000]`.
//!
//! Serves each connection on its own thread. The client (`slowsend`) sends an 8-byte
//! big-endian length N, then N bytes of the shared pattern (`van_bench::fill_pattern`).
//! The sink reads the N bytes at most `rate-mbps` MB/s (10^6 bytes/s, a token bucket of
//! 10 ms), checks every byte against the pattern, then answers with one line of
//! `key=value` fields (also printed on stdout):
//!
//! `expected=N received=R content=ok|bad first_bad=OFFSET|- secs=T mb_per_s=M read_wait_pct=W`
//!
//! `content` is about the bytes received (`ok`: every one matched the pattern); `secs` runs from the first payload byte to the last; `read_wait_pct` is the share of that
//! time spent in `read` waiting for data (near 0 when the path always had data queued for
//! the reader, i.e. the reader's cap was the bottleneck). If the connection ends early the
//! line is only printed (with `received` short of `expected`).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const USAGE: &str = "ADDR [--rate-mbps 400] [--chunk-kib 256] [--timeout-ms 60000]";

/// Refuses lengths that can only be garbage (a client that does not speak the protocol).
const MAX_LEN: u64 = 1 << 50;

fn main() {
    let args = van_bench::Args::parse(USAGE);
    let addr = van_bench::resolve(&args.positional(0, "listen address"));
    let rate_mbps: f64 = args.num("rate-mbps", 400.0);
    let chunk = args.num::<usize>("chunk-kib", 256) * 1024;
    let timeout = Duration::from_millis(args.num("timeout-ms", 60_000));
    if rate_mbps.is_nan() || rate_mbps <= 0.0 || chunk == 0 {
        van_bench::die("--rate-mbps and --chunk-kib must be positive");
    }
    let listener =
        TcpListener::bind(addr).unwrap_or_else(|e| van_bench::die(&format!("bind {addr}: {e}")));
    eprintln!("slowsink listening on {addr}, at most {rate_mbps} MB/s");
    for conn in listener.incoming() {
        match conn {
            Ok(s) => {
                std::thread::spawn(move || {
                    let peer = s
                        .peer_addr()
                        .map_or_else(|_| "?".to_string(), |a| a.to_string());
                    if let Err(e) = serve(s, rate_mbps * 1e6, chunk, timeout) {
                        eprintln!("slowsink: {peer}: {e}");
                    }
                });
            }
            Err(e) => {
                eprintln!("accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn serve(mut s: TcpStream, rate: f64, chunk: usize, timeout: Duration) -> std::io::Result<()> {
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut header = [0u8; 8];
    s.read_exact(&mut header)?;
    let expected = u64::from_be_bytes(header);
    if expected > MAX_LEN {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("length {expected} is not plausible"),
        ));
    }
    let mut buf = vec![0u8; chunk];
    let burst = (rate * 0.010).max(chunk as f64);
    let mut tokens = chunk as f64;
    let mut received = 0u64;
    let mut first_bad: Option<u64> = None;
    let mut waited = Duration::ZERO;
    let mut start: Option<Instant> = None;
    let mut last = Instant::now();
    let mut error = None;
    while received < expected {
        let want = chunk.min((expected - received) as usize);
        // Token bucket: at most `rate` bytes/s on average, bursts of at most 10 ms.
        if tokens < want as f64 {
            std::thread::sleep(Duration::from_secs_f64((want as f64 - tokens) / rate));
        }
        let now = Instant::now();
        tokens = (tokens + rate * now.duration_since(last).as_secs_f64()).min(burst);
        last = now;
        // The received bytes in `buf[..got]`; chunks start at multiples of `chunk`, so the
        // pattern offset stays a multiple of 8.
        let mut got = 0;
        while got < want {
            let t = Instant::now();
            let r = s.read(&mut buf[got..want]);
            if start.is_some() {
                waited += t.elapsed();
            } else {
                start = Some(t);
            }
            match r {
                Ok(0) => {
                    error = Some(format!(
                        "connection closed after {} bytes",
                        received + got as u64
                    ));
                    break;
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(format!("read after {} bytes: {e}", received + got as u64));
                    break;
                }
            }
        }
        if first_bad.is_none()
            && let Some(i) = van_bench::pattern_mismatch(&buf[..got], received)
        {
            first_bad = Some(received + i as u64);
        }
        received += got as u64;
        tokens -= got as f64;
        if error.is_some() {
            break;
        }
    }
    let secs = start.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let line = format!(
        "expected={expected} received={received} content={} first_bad={} secs={secs:.3} \
         mb_per_s={:.1} read_wait_pct={:.1}",
        if first_bad.is_none() { "ok" } else { "bad" },
        first_bad.map_or_else(|| "-".to_string(), |o| o.to_string()),
        if secs > 0.0 {
            received as f64 / 1e6 / secs
        } else {
            0.0
        },
        if secs > 0.0 {
            100.0 * waited.as_secs_f64() / secs
        } else {
            0.0
        },
    );
    println!("{line}");
    if let Some(e) = error {
        return Err(std::io::Error::other(e));
    }
    s.write_all(format!("{line}\n").as_bytes())?;
    s.flush()
}
