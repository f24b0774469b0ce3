use super::*;

use std::collections::VecDeque;
use std::time::Duration;

/// An advertisement from `origin` (instance 1) listing `neighbors` with their costs.
fn ls(origin: &str, seq: u64, neighbors: &[(&str, u32)]) -> wire::LinkState {
    wire::LinkState {
        origin: origin.into(),
        site: format!("{origin}-site"),
        instance: 1,
        seq,
        neighbors: neighbors
            .iter()
            .map(|(id, cost)| wire::Neighbor {
                router_id: (*id).into(),
                cost: *cost,
            })
            .collect(),
        addresses: Vec::new(),
        topics: Vec::new(),
        values: Vec::new(),
    }
}

fn with_keys(mut l: wire::LinkState, keys: &[(&str, u32)]) -> wire::LinkState {
    l.addresses = keys
        .iter()
        .map(|(k, n)| wire::AddressEntry {
            routing_key: (*k).into(),
            connectors: *n,
        })
        .collect();
    l
}

fn lsdb(self_id: &str, all: Vec<wire::LinkState>) -> Lsdb {
    let now = Instant::now();
    let mut db = Lsdb::new(self_id);
    for l in all {
        assert!(db.accept(l, now));
    }
    db
}

/// (next hop, cost, hops) toward `to`.
fn route(t: &RoutingTable, to: &str) -> Option<(String, u64, u32)> {
    t.nodes
        .get(to)
        .map(|n| (n.next_hop.clone(), n.cost, n.hops))
}

fn r(next: &str, cost: u64, hops: u32) -> Option<(String, u64, u32)> {
    Some((next.into(), cost, hops))
}

fn dest(router: &str, cost: u64, connectors: u32) -> Destination {
    Destination {
        router: router.into(),
        cost,
        connectors,
    }
}

// === Lsdb ===

#[test]
fn newer_instance_or_seq_wins_older_ignored() {
    let now = Instant::now();
    let mut db = Lsdb::new("a");
    assert!(db.is_empty());
    assert!(db.accept(ls("b", 5, &[]), now));
    assert!(!db.accept(ls("b", 4, &[("x", 1)]), now));
    assert_eq!(db.get("b").unwrap().seq, 5);
    assert!(db.get("b").unwrap().neighbors.is_empty());
    // A duplicate is not news.
    assert!(!db.accept(ls("b", 5, &[("x", 1)]), now));
    assert!(db.get("b").unwrap().neighbors.is_empty());
    assert!(db.accept(ls("b", 6, &[("x", 1)]), now));
    assert_eq!(db.get("b").unwrap().neighbors.len(), 1);

    // A restarted router starts its sequence again; the new instance wins anyway.
    let mut restarted = ls("b", 0, &[]);
    restarted.instance = 2;
    assert!(db.accept(restarted, now));
    assert_eq!(db.get("b").unwrap().instance, 2);
    // And the old instance, however high its sequence, is ignored from then on.
    assert!(!db.accept(ls("b", u64::MAX, &[("x", 1)]), now));
    assert_eq!(db.get("b").unwrap().seq, 0);
    assert_eq!(db.len(), 1);
}

#[test]
fn expire_drops_stale_but_never_self() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(60);
    let mut db = Lsdb::new("a");
    db.accept(ls("a", 1, &[]), t0);
    db.accept(ls("b", 1, &[]), t0);
    db.accept(ls("c", 1, &[]), t1);
    assert!(db.expire(t0 + Duration::from_secs(30)));
    assert!(db.get("a").is_some(), "self was expired");
    assert!(db.get("b").is_none());
    assert!(db.get("c").is_some());
    assert!(!db.expire(t0 + Duration::from_secs(30)));
    // Even far in the future, self stays.
    assert!(db.expire(t1 + Duration::from_secs(3600)));
    assert_eq!(
        db.all().map(|l| l.origin.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
}

#[test]
fn duplicate_refreshes_age() {
    let t0 = Instant::now();
    let mut db = Lsdb::new("a");
    db.accept(ls("b", 3, &[]), t0);
    // Same (instance, seq) heard again later: not news, but proves b alive.
    assert!(!db.accept(ls("b", 3, &[]), t0 + Duration::from_secs(60)));
    assert!(!db.expire(t0 + Duration::from_secs(30)));
    assert!(db.get("b").is_some());
    // An older advertisement does not refresh.
    db.accept(ls("c", 3, &[]), t0);
    assert!(!db.accept(ls("c", 2, &[]), t0 + Duration::from_secs(60)));
    assert!(db.expire(t0 + Duration::from_secs(30)));
    assert!(db.get("c").is_none());
}

// === compute ===

#[test]
fn without_own_advertisement_table_is_empty() {
    let db = lsdb("a", vec![ls("b", 1, &[("c", 1)]), ls("c", 1, &[("b", 1)])]);
    assert_eq!(db.compute(), RoutingTable::default());
}

#[test]
fn self_has_cost_zero_and_no_next_hop() {
    let db = lsdb("a", vec![ls("a", 7, &[])]);
    let t = db.compute();
    assert_eq!(
        t.nodes["a"],
        NodeRoute {
            cost: 0,
            next_hop: String::new(),
            hops: 0,
            instance: 1,
            ls_seq: 7,
            neighbors: vec![],
            site: "a-site".into(),
        }
    );
    assert_eq!(t.next_hop("a"), Some(""));
}

#[test]
fn one_sided_link_is_not_used() {
    // a lists b, b does not list a.
    let db = lsdb("a", vec![ls("a", 1, &[("b", 1)]), ls("b", 1, &[("c", 1)])]);
    let t = db.compute();
    assert_eq!(t.nodes.keys().collect::<Vec<_>>(), ["a"]);
    // Nor the other way round.
    let db = lsdb("a", vec![ls("a", 1, &[]), ls("b", 1, &[("a", 1)])]);
    assert!(!db.compute().nodes.contains_key("b"));
    // Once both list each other, it is.
    let db = lsdb("a", vec![ls("a", 1, &[("b", 1)]), ls("b", 1, &[("a", 1)])]);
    assert_eq!(route(&db.compute(), "b"), r("b", 1, 1));
}

#[test]
fn one_sided_link_does_not_shortcut_a_path() {
    // a-b-c is two-way; a lists c directly at cost 1 but c does not list a.
    let db = lsdb(
        "a",
        vec![
            ls("a", 1, &[("b", 5), ("c", 1)]),
            ls("b", 1, &[("a", 5), ("c", 5)]),
            ls("c", 1, &[("b", 5)]),
        ],
    );
    assert_eq!(route(&db.compute(), "c"), r("b", 10, 2));
}

#[test]
fn link_cost_is_the_larger_claim() {
    let db = lsdb("a", vec![ls("a", 1, &[("b", 2)]), ls("b", 1, &[("a", 9)])]);
    assert_eq!(route(&db.compute(), "b"), r("b", 9, 1));
    // And from the other end the same.
    let db = lsdb("b", vec![ls("a", 1, &[("b", 2)]), ls("b", 1, &[("a", 9)])]);
    assert_eq!(route(&db.compute(), "a"), r("a", 9, 1));
}

#[test]
fn zero_cost_counts_as_one() {
    let db = lsdb(
        "a",
        vec![
            ls("a", 1, &[("b", 0)]),
            ls("b", 1, &[("a", 0), ("c", 0)]),
            ls("c", 1, &[("b", 0)]),
        ],
    );
    assert_eq!(route(&db.compute(), "c"), r("b", 2, 2));
}

#[test]
fn self_loops_and_unknown_neighbors_are_ignored() {
    let db = lsdb(
        "a",
        vec![
            ls("a", 1, &[("a", 1), ("ghost", 1), ("b", 1)]),
            ls("b", 1, &[("b", 1), ("a", 1)]),
        ],
    );
    let t = db.compute();
    assert_eq!(t.nodes.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(route(&t, "b"), r("b", 1, 1));
    // Neighbours are reported as advertised.
    assert_eq!(t.nodes["a"].neighbors, ["a", "ghost", "b"]);
}

#[test]
fn equal_cost_paths_pick_the_lowest_first_hop() {
    // a-c-d and a-b-d both cost 2: the first hop with the smaller id wins, whatever the
    // order of the advertisements.
    let db = lsdb(
        "a",
        vec![
            ls("a", 1, &[("c", 1), ("b", 1)]),
            ls("c", 1, &[("d", 1), ("a", 1)]),
            ls("b", 1, &[("d", 1), ("a", 1)]),
            ls("d", 1, &[("c", 1), ("b", 1)]),
        ],
    );
    let t = db.compute();
    assert_eq!(route(&t, "d"), r("b", 2, 2));
}

/// The mesh of Skupper's TopologyFailover test, as seen from A.
fn skupper_mesh() -> Lsdb {
    lsdb(
        "A",
        vec![
            ls("A", 1, &[("D", 1), ("C", 50), ("B", 100)]),
            ls("B", 1, &[("C", 1), ("D", 20), ("A", 100)]),
            ls("C", 1, &[("D", 1), ("B", 1), ("A", 50)]),
            ls("D", 1, &[("A", 1), ("C", 1), ("B", 20)]),
        ],
    )
}

#[test]
fn skupper_failover_mesh() {
    let t0 = Instant::now();
    let mut db = skupper_mesh();
    let t = db.compute();
    assert_eq!(route(&t, "B"), r("D", 3, 3));
    assert_eq!(route(&t, "C"), r("D", 2, 2));
    assert_eq!(route(&t, "D"), r("D", 1, 1));

    // D-C goes down.
    db.accept(ls("D", 2, &[("A", 1), ("B", 20)]), t0);
    db.accept(ls("C", 2, &[("B", 1), ("A", 50)]), t0);
    let t = db.compute();
    assert_eq!(route(&t, "B"), r("D", 21, 2));
    // C is now reached through D and B (1 + 20 + 1) rather than directly (50).
    assert_eq!(route(&t, "C"), r("D", 22, 3));

    // D-B goes down too: D is a dead end.
    db.accept(ls("D", 3, &[("A", 1)]), t0);
    db.accept(ls("B", 2, &[("C", 1), ("A", 100)]), t0);
    let t = db.compute();
    assert_eq!(route(&t, "B"), r("C", 51, 2));
    assert_eq!(route(&t, "C"), r("C", 50, 1));

    // A-C goes down: only the direct link remains.
    db.accept(ls("A", 2, &[("D", 1), ("B", 100)]), t0);
    let t = db.compute();
    assert_eq!(route(&t, "B"), r("B", 100, 1));
    assert_eq!(route(&t, "C"), r("B", 101, 2));

    // A-B goes down: B and C are unreachable.
    db.accept(ls("A", 3, &[("D", 1)]), t0);
    let t = db.compute();
    assert_eq!(route(&t, "B"), None);
    assert_eq!(route(&t, "C"), None);
    assert_eq!(t.nodes.keys().collect::<Vec<_>>(), ["A", "D"]);
}

#[test]
fn skupper_failover_when_d_disappears() {
    let t0 = Instant::now();
    let mut db = skupper_mesh();
    // D-C is down, then D stops advertising: its entry ages out. A still lists D.
    let later = t0 + Duration::from_secs(100);
    db.accept(ls("C", 2, &[("B", 1), ("A", 50)]), later);
    db.accept(ls("B", 1, &[("C", 1), ("D", 20), ("A", 100)]), later);
    assert!(db.expire(t0 + Duration::from_secs(50)));
    assert!(db.get("D").is_none());
    let t = db.compute();
    assert_eq!(route(&t, "B"), r("C", 51, 2));
    assert_eq!(route(&t, "D"), None);
}

#[test]
fn unreachable_routers_have_no_addresses() {
    let db = lsdb(
        "a",
        vec![
            with_keys(ls("a", 1, &[("b", 1)]), &[("local", 1)]),
            with_keys(ls("b", 1, &[("a", 1)]), &[("web", 2)]),
            // c lists b, but b does not list c.
            with_keys(ls("c", 1, &[("b", 1)]), &[("web", 1), ("db", 1)]),
        ],
    );
    let t = db.compute();
    assert_eq!(t.addresses["web"], [dest("b", 1, 2)]);
    assert_eq!(t.addresses["local"], [dest("a", 0, 1)]);
    assert!(!t.addresses.contains_key("db"));
    assert!(!t.reachable("db"));
    assert!(t.reachable("web"));
}

#[test]
fn keys_without_connectors_are_not_destinations() {
    let db = lsdb(
        "a",
        vec![
            with_keys(ls("a", 1, &[("b", 1)]), &[("idle", 0)]),
            with_keys(ls("b", 1, &[("a", 1)]), &[("idle", 0), ("web", 1)]),
        ],
    );
    let t = db.compute();
    assert!(!t.reachable("idle"));
    assert!(!t.addresses.contains_key("idle"));
    assert!(t.reachable("web"));
}

#[test]
fn destinations_sorted_by_cost_then_router() {
    // a - b (5), a - c (1), a - d (5), a - e (2)
    let db = lsdb(
        "a",
        vec![
            with_keys(ls("a", 1, &[("b", 5), ("c", 1), ("d", 5), ("e", 2)]), &[]),
            with_keys(ls("d", 1, &[("a", 5)]), &[("web", 1)]),
            with_keys(ls("b", 1, &[("a", 5)]), &[("web", 3)]),
            with_keys(ls("e", 1, &[("a", 2)]), &[("web", 1)]),
            with_keys(ls("c", 1, &[("a", 1)]), &[("web", 1)]),
        ],
    );
    let t = db.compute();
    assert_eq!(
        t.addresses["web"],
        [
            dest("c", 1, 1),
            dest("e", 2, 1),
            dest("b", 5, 3),
            dest("d", 5, 1),
        ]
    );
}

#[test]
fn topics_list_only_reachable_routers() {
    let mut a = ls("a", 1, &[("b", 1)]);
    a.topics = vec!["news".into()];
    let mut b = ls("b", 1, &[("a", 1)]);
    b.topics = vec!["news".into(), "sport".into()];
    let mut c = ls("c", 1, &[]);
    c.topics = vec!["news".into(), "weather".into()];
    let t = lsdb("a", vec![a, b, c]).compute();
    assert_eq!(t.topics["news"], ["a", "b"]);
    assert_eq!(t.topics["sport"], ["b"]);
    assert!(!t.topics.contains_key("weather"));
}

/// Breadth-first hop counts over an undirected graph.
fn bfs(adj: &[Vec<usize>], from: usize) -> Vec<u32> {
    let mut d = vec![u32::MAX; adj.len()];
    let mut q = VecDeque::from([from]);
    d[from] = 0;
    while let Some(u) = q.pop_front() {
        for &v in &adj[u] {
            if d[v] == u32::MAX {
                d[v] = d[u] + 1;
                q.push_back(v);
            }
        }
    }
    d
}

#[test]
fn thousand_router_ring_with_chords() {
    const N: usize = 1000;
    let name = |i: usize| format!("r{i:04}");
    let mut adj: Vec<Vec<usize>> = vec![Vec::new(); N];
    let mut link = |a: usize, b: usize| {
        if a != b && !adj[a].contains(&b) {
            adj[a].push(b);
            adj[b].push(a);
        }
    };
    for i in 0..N {
        link(i, (i + 1) % N);
        if i % 10 == 0 {
            link(i, (i + 137) % N);
        }
        if i % 50 == 0 {
            link(i, (i + N / 2) % N);
        }
    }
    let names: Vec<String> = (0..N).map(name).collect();
    let all = (0..N)
        .map(|i| {
            let ns: Vec<(&str, u32)> = adj[i].iter().map(|&j| (names[j].as_str(), 1)).collect();
            ls(&names[i], 1, &ns)
        })
        .collect();
    let root = 3;
    let db = lsdb(&names[root], all);
    let t = db.compute();

    let want = bfs(&adj, root);
    let from_neighbor: Vec<(usize, Vec<u32>)> =
        adj[root].iter().map(|&n| (n, bfs(&adj, n))).collect();
    assert_eq!(t.nodes.len(), N);
    assert!(
        want.iter().any(|&d| d > 5),
        "the chords made the graph too small"
    );
    for i in 0..N {
        let n = &t.nodes[&names[i]];
        assert_eq!(n.hops, want[i], "hops to {}", names[i]);
        assert_eq!(n.cost, u64::from(want[i]), "cost to {}", names[i]);
        if i == root {
            continue;
        }
        // The next hop is a neighbour on some shortest path.
        let (_, d) = from_neighbor
            .iter()
            .find(|(j, _)| names[*j] == n.next_hop)
            .unwrap_or_else(|| panic!("next hop {} is not a neighbour", n.next_hop));
        assert_eq!(
            d[i] + 1,
            want[i],
            "next hop to {} is off the path",
            names[i]
        );
    }
}

// === choose ===

#[test]
fn choose_from_nothing_is_none() {
    assert_eq!(choose(&[], |_| 0, 0), None);
}

#[test]
fn choose_balances_open_flows_and_cost() {
    let ds = [dest("x", 1, 1), dest("y", 3, 1)];
    // Idle: the cheaper path.
    assert_eq!(choose(&ds, |_| 0, 0).unwrap().router, "x");
    // x carries 5 flows: 5 + 1 > 0 + 3.
    let busy_x = |r: &str| if r == "x" { 5 } else { 0 };
    assert_eq!(choose(&ds, busy_x, 0).unwrap().router, "y");
    // x carries 1 flow: 1 + 1 < 0 + 3.
    let one_x = |r: &str| if r == "x" { 1 } else { 0 };
    assert_eq!(choose(&ds, one_x, 0).unwrap().router, "x");
}

#[test]
fn choose_spreads_flows_over_connectors() {
    // x has 4 connectors and 8 flows: 2 per connector, + cost 1 = 3. y: 0 + 2.
    let ds = [dest("x", 1, 4), dest("y", 2, 1)];
    let flows = |r: &str| if r == "x" { 8 } else { 0 };
    assert_eq!(choose(&ds, flows, 0).unwrap().router, "y");
    // With 4 flows x scores 1 + 1 = 2, tied with y: the cheaper path wins.
    let flows = |r: &str| if r == "x" { 4 } else { 0 };
    for tb in 0..4 {
        assert_eq!(choose(&ds, flows, tb).unwrap().router, "x");
    }
    // Zero connectors counts as one rather than dividing by zero.
    let ds = [dest("z", 1, 0)];
    assert_eq!(choose(&ds, |_| 7, 0).unwrap().router, "z");
}

#[test]
fn choose_rotates_ties() {
    let ds = [
        dest("x", 2, 1),
        dest("y", 2, 1),
        dest("z", 2, 1),
        dest("far", 9, 1),
    ];
    let picks: Vec<&str> = (0..6)
        .map(|tb| choose(&ds, |_| 0, tb).unwrap().router.as_str())
        .collect();
    assert_eq!(picks, ["x", "y", "z", "x", "y", "z"]);
    // A busy one drops out of the rotation.
    let flows = |r: &str| if r == "y" { 1 } else { 0 };
    let picks: Vec<&str> = (0..4)
        .map(|tb| choose(&ds, flows, tb).unwrap().router.as_str())
        .collect();
    assert_eq!(picks, ["x", "z", "x", "z"]);
    // Large tiebreak values wrap.
    assert!(choose(&ds, |_| 0, usize::MAX).is_some());
}

#[test]
fn table_lookups() {
    let db = lsdb(
        "a",
        vec![
            ls("a", 1, &[("b", 1)]),
            with_keys(ls("b", 1, &[("a", 1), ("c", 1)]), &[("web", 1)]),
            ls("c", 1, &[("b", 1)]),
        ],
    );
    let t = db.compute();
    assert_eq!(t.next_hop("c"), Some("b"));
    assert_eq!(t.next_hop("b"), Some("b"));
    assert_eq!(t.next_hop("nowhere"), None);
    assert!(t.reachable("web"));
    assert!(!t.reachable("nope"));
    assert_eq!(db.self_id(), "a");
    assert_eq!(db.len(), 3);
}
