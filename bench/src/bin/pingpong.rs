//! Round-trip time over one TCP connection with TCP_NODELAY:
//! `pingpong ADDR [--count 10000] [--size 64] [--warmup 1000] [--raw FILE]`.
//!
//! Sends `size` bytes, waits for the whole echo, and times each round trip on its own.
//! Prints one line of `key=value` fields (microseconds).

use std::time::{Duration, Instant};

const USAGE: &str =
    "ADDR [--count 10000] [--size 64] [--warmup 1000] [--raw FILE] [--timeout-ms 10000]";

fn main() {
    let args = van_bench::Args::parse(USAGE);
    let addr = van_bench::resolve(&args.positional(0, "server address"));
    let count: usize = args.num("count", 10_000);
    let size: usize = args.num("size", 64);
    let warmup: usize = args.num("warmup", 1_000);
    let timeout = Duration::from_millis(args.num("timeout-ms", 10_000));
    if size == 0 || count == 0 {
        van_bench::die("--size and --count must be at least 1");
    }
    let mut s = van_bench::connect(addr, timeout)
        .unwrap_or_else(|e| van_bench::die(&format!("connect {addr}: {e}")));
    let mut out = vec![0u8; size];
    let mut back = vec![0u8; size];
    let mut samples = Vec::with_capacity(count);
    for i in 0..warmup + count {
        out[0] = i as u8;
        out[size - 1] = (i >> 8) as u8;
        let t = Instant::now();
        if let Err(e) = van_bench::echo_once(&mut s, &out, &mut back) {
            van_bench::die(&format!("round trip {i}: {e}"));
        }
        let dt = t.elapsed();
        if i >= warmup {
            samples.push(dt.as_nanos() as u64);
        }
    }
    if let Some(path) = args.str_opt("raw") {
        van_bench::write_raw(&path, &samples);
    }
    println!("size={size} {}", van_bench::summary_line(&mut samples));
}
