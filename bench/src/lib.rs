//! Shared helpers for the benchmark binaries: argument parsing, percentiles, the byte
//! pattern of the slow-reader transfer and `/proc` memory figures.
//!
//! The timing clients use blocking `std::net` sockets: one thread, no runtime, so the
//! measured time is the network path and the relays, not a scheduler.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::exit;
use std::time::Duration;

/// Command line: positional arguments and `--name value` (or `--name=value`) options.
pub struct Args {
    prog: String,
    pos: Vec<String>,
    opts: HashMap<String, String>,
}

impl Args {
    pub fn parse(usage: &str) -> Args {
        let mut it = std::env::args();
        let prog = it.next().unwrap_or_default();
        let mut pos = Vec::new();
        let mut opts = HashMap::new();
        while let Some(a) = it.next() {
            if a == "-h" || a == "--help" {
                println!("usage: {prog} {usage}");
                exit(0);
            }
            if let Some(name) = a.strip_prefix("--") {
                if let Some((k, v)) = name.split_once('=') {
                    opts.insert(k.to_string(), v.to_string());
                } else {
                    let Some(v) = it.next() else {
                        die(&format!(
                            "option --{name} needs a value\nusage: {prog} {usage}"
                        ));
                    };
                    opts.insert(name.to_string(), v);
                }
            } else {
                pos.push(a);
            }
        }
        Args { prog, pos, opts }
    }

    pub fn positional(&self, i: usize, what: &str) -> String {
        match self.pos.get(i) {
            Some(v) => v.clone(),
            None => die(&format!("{}: missing {what}", self.prog)),
        }
    }

    pub fn str_opt(&self, name: &str) -> Option<String> {
        self.opts.get(name).cloned()
    }

    pub fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        match self.opts.get(name) {
            None => default,
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| die(&format!("{}: --{name}: not a number: {v}", self.prog))),
        }
    }
}

pub fn die(msg: &str) -> ! {
    eprintln!("{msg}");
    exit(1)
}

/// Resolves `host:port` to one socket address.
pub fn resolve(addr: &str) -> SocketAddr {
    match addr.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(a) => a,
        None => die(&format!("cannot resolve {addr}")),
    }
}

/// Connects, sets TCP_NODELAY and a read/write timeout.
pub fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

/// Sends `out` and reads the same number of bytes back, checking they are an echo.
pub fn echo_once(s: &mut TcpStream, out: &[u8], back: &mut [u8]) -> std::io::Result<()> {
    s.write_all(out)?;
    s.read_exact(back)?;
    if out != back {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "echo differs from what was sent",
        ));
    }
    Ok(())
}

/// Nearest-rank percentile of sorted values, `p` in 0..=100.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One line of `key=value` fields from nanosecond samples, in microseconds.
pub fn summary_line(samples_ns: &mut [u64]) -> String {
    samples_ns.sort_unstable();
    let n = samples_ns.len();
    let us = |ns: u64| ns as f64 / 1000.0;
    let mean = if n == 0 {
        0.0
    } else {
        samples_ns.iter().map(|&v| v as f64).sum::<f64>() / n as f64 / 1000.0
    };
    format!(
        "n={n} min_us={:.1} p50_us={:.1} p90_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1} mean_us={mean:.1}",
        us(samples_ns.first().copied().unwrap_or(0)),
        us(percentile(samples_ns, 50.0)),
        us(percentile(samples_ns, 90.0)),
        us(percentile(samples_ns, 99.0)),
        us(percentile(samples_ns, 99.9)),
        us(samples_ns.last().copied().unwrap_or(0)),
    )
}

/// Writes one sample per line (nanoseconds), in the order measured.
pub fn write_raw(path: &str, samples_ns: &[u64]) {
    let mut text = String::with_capacity(samples_ns.len() * 8);
    for v in samples_ns {
        text.push_str(&v.to_string());
        text.push('\n');
    }
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("cannot write {path}: {e}");
    }
}

/// Word `k` of the slow-reader transfer pattern (sent little-endian): every 8-byte word
/// differs from its neighbours, so a lost, repeated, reordered or altered byte shows.
pub fn pattern_word(k: u64) -> u64 {
    (k ^ 0x5bd1_e995).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Fills `buf` with the pattern from byte offset `off` (a multiple of 8) on.
pub fn fill_pattern(buf: &mut [u8], off: u64) {
    debug_assert!(off.is_multiple_of(8));
    let first = off / 8;
    for (i, c) in buf.chunks_mut(8).enumerate() {
        let w = pattern_word(first + i as u64).to_le_bytes();
        c.copy_from_slice(&w[..c.len()]);
    }
}

/// The index in `buf` of the first byte that differs from the pattern at byte offset `off`
/// (a multiple of 8), if any.
pub fn pattern_mismatch(buf: &[u8], off: u64) -> Option<usize> {
    debug_assert!(off.is_multiple_of(8));
    let first = off / 8;
    for (i, c) in buf.chunks(8).enumerate() {
        let w = pattern_word(first + i as u64).to_le_bytes();
        if c != &w[..c.len()] {
            let j = c.iter().zip(w).position(|(a, b)| *a != b).unwrap_or(0);
            return Some(i * 8 + j);
        }
    }
    None
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::{fill_pattern, pattern_mismatch, percentile};

    #[test]
    fn pattern_round_trip() {
        let mut a = vec![0u8; 1_003];
        fill_pattern(&mut a, 4_096);
        assert_eq!(pattern_mismatch(&a, 4_096), None);
        // The same bytes at another offset do not match.
        assert_eq!(pattern_mismatch(&a, 4_104), Some(0));
        // A piece filled on its own matches the whole at its offset.
        let mut b = vec![0u8; 203];
        fill_pattern(&mut b, 4_096 + 800);
        assert_eq!(&a[800..], &b[..]);
        a[1_001] ^= 1;
        assert_eq!(pattern_mismatch(&a, 4_096), Some(1_001));
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 99.0), 7);
    }
}
