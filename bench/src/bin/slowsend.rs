//! Pushes N bytes into a slow reader (`slowsink`) and samples the relays' memory meanwhile:
//! `slowsend ADDR --bytes N [--watch-pids PID,PID] [--sample-ms 100] [--samples FILE]
//! [--timeout-ms 60000]`.
//!
//! Before connecting it resets the peak-RSS mark of every watched process (writes `5` to
//! `/proc/PID/clear_refs`, so `VmHWM` then means "peak since the transfer began") and takes
//! one VmRSS sample (`rss_before`). A thread samples VmRSS of every watched process each
//! `sample-ms` until the transfer is over (one last sample after the sink's answer). The
//! transfer: an 8-byte big-endian length, then the N bytes of `van_bench::fill_pattern`,
//! written as fast as the path takes them; then it waits for the sink's line.
//!
//! Prints one line of `key=value` fields (per-process values comma-separated, in the order
//! of `--watch-pids`, `-` where unknown):
//!
//! `sent=N received=R count_ok=yes|no content=ok|bad|- send_secs=S secs=T mb_per_s=M
//! read_wait_pct=W samples=K rss_before_kib=A,B rss_peak_kib=A,B hwm_kib=A,B`
//!
//! `send_secs` is the time to write everything (shorter than the sink's `secs` by what the
//! path buffered). Exit 0 if the sink received exactly the N bytes sent, all matching;
//! 2 if it did not; 1 on a connection error (the line is still printed, `received=-`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const USAGE: &str = "ADDR --bytes N [--watch-pids PID,PID] [--sample-ms 100] [--samples FILE] \
                     [--timeout-ms 60000] [--chunk-kib 256]";

type Sample = (u64, Vec<Option<u64>>);

fn main() {
    let args = van_bench::Args::parse(USAGE);
    let addr = van_bench::resolve(&args.positional(0, "sink address"));
    let bytes: u64 = args.num("bytes", 0);
    let period = Duration::from_millis(args.num("sample-ms", 100));
    let timeout = Duration::from_millis(args.num("timeout-ms", 60_000));
    let chunk = args.num::<usize>("chunk-kib", 256) * 1024;
    if bytes == 0 || chunk == 0 || period.is_zero() {
        van_bench::die("--bytes, --chunk-kib and --sample-ms must be at least 1");
    }
    let pids: Vec<u32> = args
        .str_opt("watch-pids")
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.trim()
                .parse()
                .unwrap_or_else(|_| van_bench::die(&format!("--watch-pids: not a pid: {p}")))
        })
        .collect();

    for pid in &pids {
        if let Err(e) = std::fs::write(format!("/proc/{pid}/clear_refs"), "5") {
            eprintln!(
                "slowsend: cannot reset the peak RSS of {pid} ({e}); hwm_kib is since its start"
            );
        }
    }
    let before: Vec<Option<u64>> = pids
        .iter()
        .map(|&p| van_bench::proc_status_kib(p, "VmRSS"))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = start_sampler(pids.clone(), period, stop.clone());

    let mut sent = 0u64;
    let mut send_secs = 0.0;
    let result = transfer(addr, bytes, chunk, timeout, &mut sent, &mut send_secs);

    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap_or_default();
    let hwm: Vec<Option<u64>> = pids
        .iter()
        .map(|&p| van_bench::proc_status_kib(p, "VmHWM"))
        .collect();
    let peak: Vec<Option<u64>> = (0..pids.len())
        .map(|i| samples.iter().filter_map(|(_, v)| v[i]).max())
        .collect();
    if let Some(path) = args.str_opt("samples") {
        let mut text = String::from("ms");
        for p in &pids {
            text.push_str(&format!("\trss_kib_{p}"));
        }
        text.push('\n');
        for (ms, v) in &samples {
            text.push_str(&ms.to_string());
            for x in v {
                text.push('\t');
                text.push_str(&x.map_or_else(|| "-".into(), |x| x.to_string()));
            }
            text.push('\n');
        }
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("cannot write {path}: {e}");
        }
    }

    let field = |line: &str, key: &str| -> String {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or("-")
            .to_string()
    };
    let (received, content, secs, rate, wait, code) = match &result {
        Ok(reply) => {
            let received = field(reply, "received");
            let count_ok = received == sent.to_string() && field(reply, "expected") == received;
            let content = field(reply, "content");
            let code = if count_ok && content == "ok" { 0 } else { 2 };
            (
                received,
                content,
                field(reply, "secs"),
                field(reply, "mb_per_s"),
                field(reply, "read_wait_pct"),
                code,
            )
        }
        Err(e) => {
            eprintln!("slowsend: {e}");
            let dash = || "-".to_string();
            (dash(), dash(), dash(), dash(), dash(), 1)
        }
    };
    let list = |v: &[Option<u64>]| -> String {
        let parts: Vec<String> = v
            .iter()
            .map(|x| x.map_or_else(|| "-".into(), |x| x.to_string()))
            .collect();
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(",")
        }
    };
    println!(
        "sent={sent} received={received} count_ok={} content={content} send_secs={send_secs:.3} \
         secs={secs} mb_per_s={rate} read_wait_pct={wait} samples={} rss_before_kib={} \
         rss_peak_kib={} hwm_kib={}",
        if received == sent.to_string() && code != 1 {
            "yes"
        } else {
            "no"
        },
        samples.len(),
        list(&before),
        list(&peak),
        list(&hwm),
    );
    std::process::exit(code);
}

/// Samples VmRSS of `pids` every `period` until `stop`, then once more.
fn start_sampler(
    pids: Vec<u32>,
    period: Duration,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut samples = Vec::new();
        let mut next = started;
        loop {
            let done = stop.load(Ordering::Relaxed);
            let v = pids
                .iter()
                .map(|&p| van_bench::proc_status_kib(p, "VmRSS"))
                .collect();
            samples.push((started.elapsed().as_millis() as u64, v));
            if done {
                return samples;
            }
            next += period;
            let now = Instant::now();
            if next > now {
                // Short naps so that the last sample follows the end of the transfer closely.
                while Instant::now() < next && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep((next - Instant::now()).min(Duration::from_millis(10)));
                }
            } else {
                next = now;
            }
        }
    })
}

/// Sends the length and the pattern, then reads the sink's answer line.
fn transfer(
    addr: std::net::SocketAddr,
    bytes: u64,
    chunk: usize,
    timeout: Duration,
    sent: &mut u64,
    send_secs: &mut f64,
) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("socket options: {e}"))?;
    s.write_all(&bytes.to_be_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = vec![0u8; chunk];
    let started = Instant::now();
    while *sent < bytes {
        let len = chunk.min((bytes - *sent) as usize);
        van_bench::fill_pattern(&mut buf[..len], *sent);
        s.write_all(&buf[..len])
            .map_err(|e| format!("write after {} bytes: {e}", *sent))?;
        *sent += len as u64;
    }
    *send_secs = started.elapsed().as_secs_f64();
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| format!("waiting for the sink's answer: {e}"))?;
    if line.trim().is_empty() {
        return Err("the connection closed without the sink's answer".into());
    }
    Ok(line.trim().to_string())
}
