//! Cost of one shortest-path computation for networks of 128 to 2,000 interior routers:
//! `cargo run --release -p van-router --example spf`.
//!
//! Each router links to the next (cost 1) and to the one `n/16` further on (cost 3), and
//! advertises two routing keys. A router recomputes after a batch of link-state changes
//! (throttled during bursts, see docs/wire-protocol.md), so this is the price of one.

use std::time::Instant;

use van_proto::wire;
use van_router::routing::Lsdb;

fn network(n: usize) -> Lsdb {
    let chord = (n / 16).max(8);
    let id = |i: usize| format!("r{:04}", i % n);
    let mut db = Lsdb::new(id(0));
    let now = tokio::time::Instant::now();
    for i in 0..n {
        let mut neighbors = Vec::new();
        for (j, cost) in [
            (i + 1, 1),
            (i + n - 1, 1),
            (i + chord, 3),
            (i + n - chord, 3),
        ] {
            neighbors.push(wire::Neighbor {
                router_id: id(j),
                cost,
            });
        }
        db.accept(
            wire::LinkState {
                origin: id(i),
                site: id(i),
                instance: 1,
                seq: 1,
                neighbors,
                addresses: vec![
                    wire::AddressEntry {
                        routing_key: format!("svc-{i}"),
                        connectors: 1,
                    },
                    wire::AddressEntry {
                        routing_key: "shared".into(),
                        connectors: 1,
                    },
                ],
                topics: Vec::new(),
                values: Vec::new(),
            },
            now,
        );
    }
    db
}

fn main() {
    println!("| routers | links | keys | one recomputation (mean of 20) |");
    println!("| ---: | ---: | ---: | ---: |");
    for n in [128, 500, 1000, 2000] {
        let db = network(n);
        let t = db.compute();
        assert_eq!(t.nodes.len(), n, "every router reachable");
        let start = Instant::now();
        for _ in 0..20 {
            std::hint::black_box(db.compute());
        }
        let each = start.elapsed() / 20;
        println!(
            "| {n} | {} | {} | {:.2} ms |",
            n * 2,
            t.addresses.len(),
            each.as_secs_f64() * 1e3
        );
    }
}
