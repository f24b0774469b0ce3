//! Short-lived connections: `connrate ADDR [--count 1000] [--size 64] [--warmup 20] [--raw FILE]`.
//!
//! Each time: open a new TCP connection (TCP_NODELAY), send `size` bytes, wait for the
//! echo, close. The sample is connect start to echo received. Prints one line of
//! `key=value` fields (microseconds). Exit 0 when every attempt worked, 2 when some
//! failed (the figures cover the ones that worked), 1 when none did.

use std::time::{Duration, Instant};

const USAGE: &str =
    "ADDR [--count 1000] [--size 64] [--warmup 20] [--raw FILE] [--timeout-ms 5000]";

fn main() {
    let args = van_bench::Args::parse(USAGE);
    let addr = van_bench::resolve(&args.positional(0, "server address"));
    let count: usize = args.num("count", 1_000);
    let size: usize = args.num("size", 64).max(1);
    let warmup: usize = args.num("warmup", 20);
    let timeout = Duration::from_millis(args.num("timeout-ms", 5_000));
    let mut out = vec![0u8; size];
    let mut back = vec![0u8; size];
    let mut samples = Vec::with_capacity(count);
    let mut errors = 0usize;
    let mut first_error = String::new();
    let started = Instant::now();
    for i in 0..warmup + count {
        out[0] = i as u8;
        let t = Instant::now();
        let r = van_bench::connect(addr, timeout)
            .and_then(|mut s| van_bench::echo_once(&mut s, &out, &mut back));
        let dt = t.elapsed();
        match r {
            Ok(()) if i >= warmup => samples.push(dt.as_nanos() as u64),
            Ok(()) => {}
            Err(e) => {
                errors += 1;
                if first_error.is_empty() {
                    first_error = format!("attempt {i}: {e}");
                }
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    if let Some(path) = args.str_opt("raw") {
        van_bench::write_raw(&path, &samples);
    }
    let ok = samples.len();
    println!(
        "size={size} errors={errors} conn_per_s={:.0} {}",
        (warmup + count - errors) as f64 / wall,
        van_bench::summary_line(&mut samples)
    );
    if errors > 0 {
        eprintln!("connrate: {errors} attempts failed, first: {first_error}");
        std::process::exit(if ok == 0 { 1 } else { 2 });
    }
}
