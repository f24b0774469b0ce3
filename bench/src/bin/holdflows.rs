//! Opens many connections and holds them idle:
//! `holdflows ADDR [--count 1000] [--ready-file FILE] [--hold-secs 300]`.
//!
//! Each connection is opened and checked with one 64-byte echo (so the flow exists end
//! to end), one after another. Then the result (`opened=N errors=E ms=T`) is written to
//! the ready file and to stdout, and the connections are held until killed or until
//! `--hold-secs` have passed, whichever comes first.

use std::time::{Duration, Instant};

const USAGE: &str = "ADDR [--count 1000] [--ready-file FILE] [--hold-secs 300] [--timeout-ms 5000]";

fn main() {
    let args = van_bench::Args::parse(USAGE);
    let addr = van_bench::resolve(&args.positional(0, "server address"));
    let count: usize = args.num("count", 1_000);
    let hold = Duration::from_secs(args.num("hold-secs", 300));
    let timeout = Duration::from_millis(args.num("timeout-ms", 5_000));
    let out = [0x42u8; 64];
    let mut back = [0u8; 64];
    let mut conns = Vec::with_capacity(count);
    let mut errors = 0usize;
    let started = Instant::now();
    for i in 0..count {
        match van_bench::connect(addr, timeout)
            .and_then(|mut s| van_bench::echo_once(&mut s, &out, &mut back).map(|()| s))
        {
            Ok(s) => conns.push(s),
            Err(e) => {
                errors += 1;
                if errors <= 3 {
                    eprintln!("holdflows: connection {i}: {e}");
                }
            }
        }
    }
    let line = format!(
        "opened={} errors={errors} ms={}",
        conns.len(),
        started.elapsed().as_millis()
    );
    println!("{line}");
    if let Some(path) = args.str_opt("ready-file")
        && let Err(e) = std::fs::write(&path, format!("{line}\n"))
    {
        eprintln!("cannot write {path}: {e}");
    }
    std::thread::sleep(hold);
    drop(conns);
}
