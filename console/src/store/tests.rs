use std::time::Duration;

use van_proto::admin::{Connector, Link, Listener, RouterStatus, TopicSnapshot, TopicValue};
use van_proto::records::{ConnectionRecord, RecordBatch, RequestRecord, RouterState};

use super::*;
use crate::views::Range;

/// A fixed "now": 2023-11-14, on a minute boundary.
pub(crate) const T0: u64 = 1_699_999_980_000_000;
const S: u64 = 1_000_000;

pub(crate) fn state(router: &str, site: &str) -> RouterState {
    RouterState {
        status: Some(RouterStatus {
            router_id: router.into(),
            site_id: site.into(),
            mode: "interior".into(),
            version: "1.2.3".into(),
            active_flows: 1,
            flows_total: 7,
            ..Default::default()
        }),
        started_us: T0 - 3600 * S,
        hostname: format!("{router}-host"),
        ..Default::default()
    }
}

pub(crate) fn listener(name: &str, key: &str, protocol: &str) -> Listener {
    Listener {
        name: name.into(),
        host: "0.0.0.0".into(),
        port: 8080,
        routing_key: key.into(),
        state: "up".into(),
        protocol: protocol.into(),
        connections_opened: 3,
        ..Default::default()
    }
}

pub(crate) fn connector(name: &str, key: &str, protocol: &str) -> Connector {
    Connector {
        name: name.into(),
        host: "backend".into(),
        port: 9090,
        routing_key: key.into(),
        state: "up".into(),
        protocol: protocol.into(),
        ..Default::default()
    }
}

pub(crate) fn link(name: &str, peer: &str, state: &str) -> Link {
    Link {
        name: name.into(),
        role: "inter-router".into(),
        direction: "outgoing".into(),
        state: state.into(),
        peer_router: peer.into(),
        cost: 1,
        ..Default::default()
    }
}

pub(crate) fn batch(router: &str, instance: u64, time_us: u64) -> RecordBatch {
    RecordBatch {
        router_id: router.into(),
        instance,
        time_us,
        ..Default::default()
    }
}

pub(crate) fn with_state(router: &str, site: &str, time_us: u64) -> RecordBatch {
    RecordBatch {
        state: Some(state(router, site)),
        full: true,
        ..batch(router, 1, time_us)
    }
}

pub(crate) fn half(flow: u64, role: &str, key: &str, start_us: u64) -> ConnectionRecord {
    ConnectionRecord {
        flow_id: flow,
        role: role.into(),
        routing_key: key.into(),
        client_addr: "10.0.0.1:40000".into(),
        start_us,
        ..Default::default()
    }
}

pub(crate) fn ended(mut r: ConnectionRecord, end_us: u64, outcome: &str) -> ConnectionRecord {
    r.end_us = end_us;
    r.outcome = outcome.into();
    r
}

pub(crate) fn request(flow: u64, key: &str, status: u32, start_us: u64) -> RequestRecord {
    RequestRecord {
        flow_id: flow,
        routing_key: key.into(),
        method: "GET".into(),
        path: "/reviews/1".into(),
        status,
        client_addr: "10.0.0.1:40000".into(),
        dest_router: "east-r".into(),
        start_us,
        latency_us: 2_000,
        duration_us: 3_000,
        bytes_out: 10,
        bytes_in: 200,
        version: "HTTP/1.1".into(),
        ..Default::default()
    }
}

/// Two sites, west (router west-r) and east (east-r), linked.
pub(crate) fn two_sites() -> Store {
    let mut s = Store::new(Limits::default());
    let mut west = with_state("west-r", "west", T0);
    if let Some(st) = west.state.as_mut() {
        st.listeners.push(listener("web", "backend", "tcp"));
        st.links.push(link("to-east", "east-r", "up"));
    }
    s.apply_batch(west, T0);
    let mut east = with_state("east-r", "east", T0);
    if let Some(st) = east.state.as_mut() {
        st.connectors.push(connector("backend", "backend", "tcp"));
    }
    s.apply_batch(east, T0);
    s
}

fn conn(s: &Store, flow: u64) -> &Conn {
    s.conns.get(&flow).expect("connection is known")
}

#[test]
fn halves_join_by_flow_id() {
    let mut s = two_sites();
    let mut b = batch("west-r", 1, T0 + S);
    b.open.push(ConnectionRecord {
        dest_router: "east-r".into(),
        bytes_out: 100,
        bytes_in: 1000,
        path: vec!["west-r".into()],
        ..half(7, "ingress", "backend", T0)
    });
    s.apply_batch(b, T0 + S);
    let mut b = batch("east-r", 1, T0 + S);
    b.open.push(ConnectionRecord {
        server_addr: "10.1.0.5:9090".into(),
        path: vec!["west-r".into(), "hub-r".into(), "east-r".into()],
        bytes_out: 90,
        bytes_in: 900,
        ..half(7, "egress", "backend", T0 + 500)
    });
    s.apply_batch(b, T0 + S);
    assert_eq!(s.conns.len(), 1);
    let c = conn(&s, 7);
    assert!(!c.terminated());
    let (source, dest) = s.conn_sites(c);
    assert_eq!(
        (source.map(|s| &**s), dest.map(|s| &**s)),
        (Some("west"), Some("east"))
    );
    assert_eq!(&*c.client_addr, "10.0.0.1:40000");
    assert_eq!(&*c.server_addr, "10.1.0.5:9090");
    assert_eq!(c.path.len(), 3);
    // The client side's bytes, and the ingress half's start.
    assert_eq!((c.bytes_out, c.bytes_in, c.start_us), (100, 1000, T0));
    // The server side ending does not end the connection while its client half is open.
    let mut b = batch("east-r", 1, T0 + 2 * S);
    b.ended.push(ended(
        half(7, "egress", "backend", T0 + 500),
        T0 + 2 * S,
        "closed",
    ));
    s.apply_batch(b, T0 + 2 * S);
    assert!(!conn(&s, 7).terminated());
    let mut b = batch("west-r", 1, T0 + 3 * S);
    b.ended.push(ConnectionRecord {
        bytes_out: 150,
        bytes_in: 1500,
        ..ended(half(7, "ingress", "backend", T0), T0 + 3 * S, "closed")
    });
    s.apply_batch(b, T0 + 3 * S);
    let c = conn(&s, 7);
    assert!(c.terminated());
    assert_eq!((c.end_us, &*c.outcome), (T0 + 3 * S, "closed"));
    assert_eq!((s.open_connections(), s.ended_count), (0, 1));
    let t = &s.traffic[c.traffic as usize];
    assert_eq!((&*t.key.source_site, &*t.key.dest_site), ("west", "east"));
    assert_eq!(
        (t.opened, t.closed, t.bytes_out, t.bytes_in),
        (1, 1, 150, 1500)
    );
    // A late open record for a half that ended is stale.
    let mut b = batch("west-r", 1, T0 + 4 * S);
    b.open.push(half(7, "ingress", "backend", T0));
    s.apply_batch(b, T0 + 4 * S);
    assert!(conn(&s, 7).terminated());
}

#[test]
fn an_egress_half_alone_stands_for_the_connection() {
    let mut s = two_sites();
    let mut b = batch("east-r", 1, T0 + S);
    b.ended.push(ConnectionRecord {
        server_addr: "10.1.0.5:9090".into(),
        path: vec!["west-r".into(), "east-r".into()],
        bytes_out: 5,
        ..ended(half(9, "egress", "backend", T0), T0 + S, "refused")
    });
    s.apply_batch(b, T0 + S);
    let c = conn(&s, 9);
    assert!(c.terminated());
    assert_eq!(&*c.outcome, "refused");
    assert_eq!(s.conn_sites(c).0.map(|s| &**s), Some("west"));
    // The ingress half arrives later: it decides, and its figures replace the egress half's.
    let mut b = batch("west-r", 1, T0 + 2 * S);
    b.ended.push(ConnectionRecord {
        bytes_out: 7,
        ..ended(half(9, "ingress", "backend", T0), T0 + 2 * S, "refused")
    });
    s.apply_batch(b, T0 + 2 * S);
    let c = conn(&s, 9);
    assert_eq!((c.end_us, c.bytes_out), (T0 + 2 * S, 7));
    assert_eq!(s.ended_count, 1);
    assert_eq!(s.traffic[c.traffic as usize].bytes_out, 7);
}

#[test]
fn a_local_connection_is_one_record() {
    let mut s = two_sites();
    let mut b = batch("east-r", 1, T0 + S);
    b.ended.push(ConnectionRecord {
        server_addr: "10.1.0.5:9090".into(),
        ..ended(half(3, "local", "backend", T0), T0 + S, "closed")
    });
    s.apply_batch(b, T0 + S);
    let c = conn(&s, 3);
    assert!(c.terminated());
    let (source, dest) = s.conn_sites(c);
    assert_eq!(
        (source.map(|s| &**s), dest.map(|s| &**s)),
        (Some("east"), Some("east"))
    );
    assert_eq!(&*c.path, [Str::from("east-r")]);
}

#[test]
fn a_restarted_router_replaces_its_state_and_ends_its_old_halves() {
    let mut s = two_sites();
    let mut b = batch("west-r", 1, T0 + S);
    b.open.push(half(1, "ingress", "backend", T0));
    s.apply_batch(b, T0 + S);
    assert_eq!(s.open_connections(), 1);
    let mut b = with_state("west-r", "west", T0 + 2 * S);
    b.instance = 2;
    s.apply_batch(b, T0 + 2 * S);
    let c = conn(&s, 1);
    assert!(c.terminated());
    assert_eq!(&*c.outcome, OUTCOME_UNKNOWN);
    assert!(c.error.contains("restarted"), "{}", c.error);
    assert_eq!(s.routers["west-r"].instance, 2);
    // The new instance's records never duplicate a connection.
    let mut b = batch("west-r", 2, T0 + 3 * S);
    b.open.push(half(2, "ingress", "backend", T0 + 3 * S));
    b.open.push(half(2, "ingress", "backend", T0 + 3 * S));
    s.apply_batch(b, T0 + 3 * S);
    assert_eq!(s.conns.len(), 2);
    assert_eq!(s.by_start.len(), 2);
}

#[test]
fn an_ended_stream_takes_the_router_and_its_site_away() {
    let mut s = two_sites();
    let mut b = batch("east-r", 1, T0 + S);
    b.open.push(half(4, "egress", "backend", T0));
    s.apply_batch(b, T0 + S);
    let ids = |s: &Store| s.site_items().into_iter().map(|i| i.id).collect::<Vec<_>>();
    assert_eq!(ids(&s), ["east", "west"]);
    // Its record on the topic does not keep it alive once its routers are gone.
    s.apply_sites(TopicSnapshot {
        topic: "van.site.v1".into(),
        values: vec![site_value("east-r", "east", "East")],
    });
    s.apply_batch(
        RecordBatch {
            ended_stream: true,
            ..batch("east-r", 1, 0)
        },
        T0 + 2 * S,
    );
    assert_eq!(ids(&s), ["west"]);
    assert_eq!(s.router_items().len(), 1);
    assert!(s.link_items().iter().all(|l| l.router_id == "west-r"));
    assert!(conn(&s, 4).terminated());
    // Links toward the gone site are not drawn.
    assert!(s.topology(T0 + 2 * S, None).links.is_empty());
    // It comes back with its next state.
    s.apply_batch(with_state("east-r", "east", T0 + 3 * S), T0 + 3 * S);
    assert_eq!(ids(&s), ["east", "west"]);
    assert_eq!(s.site_items()[0].name, "East");
}

#[test]
fn a_full_state_ends_the_open_halves_it_does_not_list() {
    let mut s = two_sites();
    let mut b = batch("west-r", 1, T0 + S);
    b.open.push(half(1, "ingress", "backend", T0));
    b.open.push(half(2, "ingress", "backend", T0));
    s.apply_batch(b, T0 + S);
    let mut b = with_state("west-r", "west", T0 + 2 * S);
    b.open.push(half(1, "ingress", "backend", T0));
    s.apply_batch(b, T0 + 2 * S);
    assert!(!conn(&s, 1).terminated());
    let c = conn(&s, 2);
    assert!(c.terminated());
    assert_eq!((&*c.outcome, c.end_us), (OUTCOME_UNKNOWN, T0 + 2 * S));
    // Without `full`, nothing unlisted is ended.
    let mut b = with_state("west-r", "west", T0 + 3 * S);
    b.full = false;
    s.apply_batch(b, T0 + 3 * S);
    assert!(!conn(&s, 1).terminated());
}

#[test]
fn a_lost_stream_ends_open_halves_until_routers_list_them_again() {
    let mut s = two_sites();
    let mut b = batch("west-r", 1, T0 + S);
    b.open.push(half(1, "ingress", "backend", T0));
    s.apply_batch(b, T0 + S);
    s.stream_lost(T0 + 2 * S);
    assert!(s.site_items().is_empty());
    assert!(conn(&s, 1).terminated());
    let mut b = with_state("west-r", "west", T0 + 3 * S);
    b.open.push(half(1, "ingress", "backend", T0));
    s.apply_batch(b, T0 + 3 * S);
    let c = conn(&s, 1);
    assert!(!c.terminated());
    assert_eq!((c.end_us, &*c.outcome), (0, ""));
    assert_eq!((s.open_connections(), s.ended_count), (1, 0));
    // Counted closed once, opened once.
    let t = &s.traffic[c.traffic as usize];
    assert_eq!((t.opened, t.closed), (1, 1));
}

fn ended_conns(s: &mut Store, flows: std::ops::Range<u64>, end_us: u64) {
    let mut b = batch("west-r", 1, end_us);
    for f in flows {
        b.ended
            .push(ended(half(f, "ingress", "backend", T0), end_us, "closed"));
    }
    s.apply_batch(b, end_us);
}

#[test]
fn retention_drops_what_ended_long_ago_but_never_what_is_open() {
    let mut s = two_sites();
    s.limits.retention = Duration::from_secs(60);
    let mut b = batch("west-r", 1, T0);
    b.open.push(half(100, "ingress", "backend", T0 - 3600 * S));
    b.requests.push(request(0, "backend", 200, T0 + 10 * S));
    s.apply_batch(b, T0);
    ended_conns(&mut s, 1..3, T0 + 10 * S);
    ended_conns(&mut s, 3..4, T0 + 40 * S);
    s.evict(T0 + 69 * S);
    assert_eq!(s.conns.len(), 4);
    assert_eq!(s.requests.len(), 1);
    s.evict(T0 + 71 * S);
    assert_eq!(s.conns.len(), 2);
    assert_eq!(s.requests.len(), 0);
    assert!(s.conns.contains_key(&100) && s.conns.contains_key(&3));
    s.evict(T0 + 10_000 * S);
    assert_eq!(s.conns.keys().copied().collect::<Vec<_>>(), [100]);
    assert_eq!(s.by_start.len(), 1);
    assert_eq!((s.open_connections(), s.ended_count), (1, 0));
}

#[test]
fn caps_evict_the_oldest_first() {
    let mut s = two_sites();
    s.limits.max_connections = 3;
    s.limits.max_requests = 2;
    for f in 1..6 {
        ended_conns(&mut s, f..f + 1, T0 + f * S);
    }
    let mut kept: Vec<u64> = s.conns.keys().copied().collect();
    kept.sort();
    assert_eq!(kept, [3, 4, 5]);
    let mut b = batch("west-r", 1, T0);
    for i in 0..4 {
        b.requests.push(request(0, "backend", 200, T0 + i * S));
    }
    s.apply_batch(b, T0);
    let starts: Vec<u64> = s.requests.values().map(|r| r.start_us).collect();
    assert_eq!(starts, [T0 + 2 * S, T0 + 3 * S]);
    // Totals are not capped.
    assert_eq!(s.counters.connections_seen, 5);
    assert_eq!(s.counters.requests_seen, 4);
}

#[test]
fn open_connections_move_the_byte_rate_and_requests_fill_the_series() {
    let mut s = two_sites();
    for (i, bytes) in [100u64, 250, 600].into_iter().enumerate() {
        let t = T0 + i as u64 * 10 * S;
        let mut b = batch("west-r", 1, t);
        b.open.push(ConnectionRecord {
            dest_router: "east-r".into(),
            bytes_out: bytes,
            bytes_in: bytes * 2,
            ..half(1, "ingress", "backend", T0)
        });
        s.apply_batch(b, t);
    }
    let mut b = batch("west-r", 1, T0 + 20 * S);
    b.requests.push(request(0, "backend", 200, T0 + 20 * S));
    b.requests.push(request(0, "backend", 404, T0 + 20 * S));
    s.apply_batch(b, T0 + 20 * S);
    let points = s.series["backend"].points(T0 + 29 * S, 300, 10);
    let last3: Vec<(f64, f64)> = points[27..]
        .iter()
        .map(|p| (p.bytes_out, p.bytes_in))
        .collect();
    assert_eq!(last3, [(10.0, 20.0), (15.0, 30.0), (35.0, 70.0)]);
    assert_eq!(points[27].connections_opened, 0.1);
    assert_eq!((points[29].requests2xx, points[29].requests4xx), (0.1, 0.1));
    assert!(points[29].latency_p50_ms > 1.0);
    let rates = s.traffic[conn(&s, 1).traffic as usize].rates(T0 + 29 * S);
    assert!(rates.bytes > 0.0 && rates.connections > 0.0, "{rates:?}");
    // The topology shows the pair with its rates.
    let topo = s.topology(T0 + 29 * S, Some("backend"));
    assert_eq!(topo.traffic.len(), 1);
    let p = &topo.traffic[0];
    assert_eq!(
        (p.id.as_str(), p.requests, p.bytes_out),
        ("west>east", 2, 600)
    );
    assert!(p.bytes_per_second.unwrap() > 0.0);
    assert_eq!(topo.links.len(), 1);
    assert!(s.topology(T0 + 29 * S, Some("other")).traffic.is_empty());
    // Request metrics count per status class; latency only for answered ones.
    assert_eq!(s.request_totals.values().sum::<u64>(), 2);
    assert_eq!(s.latency.len(), 2);
}

fn site_value(origin: &str, id: &str, name: &str) -> TopicValue {
    TopicValue {
        origin: origin.into(),
        payload: serde_json::json!({
            "id": id, "name": name, "mode": "interior", "version": "9.9",
            "router-id": origin, "unknown-field": true,
            "services": [{"address": "reviews", "protocol": "http", "ports": [9080],
                          "created": 1, "targets": 2}],
            "links": [{"name": "l", "state": "up", "peer-router": "x", "cost": 1}],
        })
        .to_string()
        .into_bytes(),
    }
}

#[test]
fn site_records_name_sites_and_define_services() {
    let mut s = two_sites();
    let bad = s.apply_sites(TopicSnapshot {
        topic: "van.site.v1".into(),
        values: vec![
            site_value("west-r", "west", "West"),
            site_value("far-r", "far", "Far away"),
            TopicValue {
                origin: "junk-r".into(),
                payload: b"{not json".to_vec(),
            },
        ],
    });
    assert_eq!(bad.len(), 1);
    assert!(bad[0].contains("junk-r"), "{bad:?}");
    let sites = s.site_items();
    let names: Vec<(&str, &str)> = sites
        .iter()
        .map(|s| (s.id.as_str(), s.name.as_str()))
        .collect();
    // A site known only from its record is shown too.
    assert_eq!(
        names,
        [("east", "east"), ("far", "Far away"), ("west", "West")]
    );
    let far = &sites[1];
    assert_eq!((far.version.as_str(), far.links), ("9.9", 1));
    // Records name services; the console, as the routers, names them by routing key.
    assert_eq!(far.services_offered, ["reviews:9080"]);
    assert_eq!(s.protocol_of("reviews:9080").map(|p| &**p), Some("http"));
    assert!(!s.has_address("reviews"), "no service without its port");
    let west = &sites[2];
    assert_eq!(west.services_consumed, ["backend"]);
    assert_eq!(west.links, 1);
    assert!(s.has_address("reviews:9080"));
    let services = s.service_items(Range::ALL, T0);
    let addrs: Vec<&str> = services.iter().map(|s| s.address.as_str()).collect();
    assert_eq!(addrs, ["backend", "reviews:9080"]);
    assert_eq!(services[0].served_by.len(), 1);
    assert_eq!(services[0].reached_from.len(), 1);
    // The next snapshot replaces the last.
    s.apply_sites(TopicSnapshot::default());
    assert_eq!(s.site_items().len(), 2);
}

#[test]
fn processes_are_hosts_per_site_and_role() {
    let mut s = two_sites();
    let mut b = batch("east-r", 1, T0 + S);
    for (flow, client) in [(1, "10.0.0.1:1"), (2, "10.0.0.1:2"), (3, "[fd00::1]:3")] {
        b.ended.push(ConnectionRecord {
            client_addr: client.into(),
            server_addr: "10.1.0.5:9090".into(),
            path: vec!["west-r".into(), "east-r".into()],
            bytes_out: 1,
            ..ended(half(flow, "egress", "backend", T0), T0 + S, "closed")
        });
    }
    s.apply_batch(b, T0 + S);
    let mut procs: Vec<_> = s
        .processes(Range::ALL, T0 + S)
        .iter()
        .map(|p| p.item())
        .collect();
    procs.sort_by(|a, b| a.id.cmp(&b.id));
    let ids: Vec<(&str, &str, u64)> = procs
        .iter()
        .map(|p| (p.id.as_str(), p.role, p.connections))
        .collect();
    assert_eq!(
        ids,
        [
            ("east/10.1.0.5", "server", 3),
            ("west/10.0.0.1", "client", 2),
            ("west/fd00::1", "client", 1)
        ]
    );
    let mut pairs: Vec<_> = s
        .pairs(Range::ALL, T0 + S, None, true)
        .iter()
        .map(|p| p.item())
        .collect();
    pairs.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs[0].id, "west/10.0.0.1>east/10.1.0.5");
    assert_eq!(pairs[0].connections, 2);
    // Out of range: nothing.
    let early = Range {
        start_us: 0,
        end_us: T0 - 1,
    };
    assert!(s.processes(early, T0 + S).is_empty());
}

#[test]
fn full_states_carry_the_site_records_their_routers_published() {
    let mut s = two_sites();
    let published = |id: &str, name: &str| van_proto::records::Published {
        topic: "van.site.v1".into(),
        payload: site_value("east-r", id, name).payload,
    };
    let mut b = with_state("east-r", "east", T0 + S);
    if let Some(st) = b.state.as_mut() {
        st.published.push(published("east", "East"));
    }
    s.apply_batch(b.clone(), T0 + S);
    assert_eq!(s.site_items()[0].name, "East");
    assert_eq!(s.sites["east"].version, "9.9");
    // What routers publish wins over the topic's older snapshot.
    s.apply_sites(TopicSnapshot {
        topic: "van.site.v1".into(),
        values: vec![site_value("east-r", "east", "Old name")],
    });
    assert_eq!(s.site_items()[0].name, "East");
    // A state that is not full says nothing about it; a full one without it clears it.
    let mut partial = with_state("east-r", "east", T0 + 2 * S);
    partial.full = false;
    s.apply_batch(partial, T0 + 2 * S);
    assert!(s.published.contains_key("east-r"));
    s.apply_batch(with_state("east-r", "east", T0 + 3 * S), T0 + 3 * S);
    assert!(s.published.is_empty());
    assert_eq!(s.sites["east"].name, "Old name");
    // A router that leaves takes its record along.
    s.apply_sites(TopicSnapshot::default());
    s.apply_batch(b, T0 + 4 * S);
    s.apply_batch(
        RecordBatch {
            ended_stream: true,
            ..batch("east-r", 1, 0)
        },
        T0 + 5 * S,
    );
    assert!(!s.sites.contains_key("east"));
}
