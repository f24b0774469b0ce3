//! Waits until a 64-byte echo works through ADDR: `waitready ADDR [--timeout-ms 10000]`.
//!
//! Tries a new connection plus one echo every 100 ms. Exit 0 once one works, 1 on timeout
//! (printing the last error).

use std::time::{Duration, Instant};

const USAGE: &str = "ADDR [--timeout-ms 10000]";

fn main() {
    let args = van_bench::Args::parse(USAGE);
    let addr = van_bench::resolve(&args.positional(0, "address"));
    let limit = Duration::from_millis(args.num("timeout-ms", 10_000));
    let out = [0x17u8; 64];
    let mut back = [0u8; 64];
    let started = Instant::now();
    loop {
        let left = limit.saturating_sub(started.elapsed());
        let per_try = left.clamp(Duration::from_millis(10), Duration::from_secs(2));
        match van_bench::connect(addr, per_try)
            .and_then(|mut s| van_bench::echo_once(&mut s, &out, &mut back))
        {
            Ok(()) => {
                println!("ready after {} ms", started.elapsed().as_millis());
                return;
            }
            Err(e) => {
                if started.elapsed() >= limit {
                    van_bench::die(&format!(
                        "{addr} not ready after {} ms: {e}",
                        limit.as_millis()
                    ));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
