//! Feeds a peer's control messages through what the router does with them.
//!
//! The input is a list of messages, each `[selector][len: u16 LE][body]`: the selector picks
//! the frame type (handshake, hello, link state, address set, goaway, flow open, flow reset)
//! and the body is fuzzed protobuf. Each becomes a well-formed frame for
//! `van_router::wire::decode`, so the fuzzer spends its time on bodies, not headers.
//!
//! Checked: nothing panics; a decoded body re-encodes to the same message; advertisements and
//! topic values pass through the engine's checks (`wire::check_link_state`,
//! `wire::check_topic_values`) and an accepted advertisement really has the names the checks
//! promise; accepted advertisements go into a link-state database whose shortest-path table
//! is consistent (self at cost 0, every next hop a neighbour of ours, destinations sorted).

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tokio::time::Instant;
use van_proto::wire as pb;
use van_router::config::{valid_name, valid_routing_key};
use van_router::routing::Lsdb;
use van_router::wire::{self, Frame, WireError, header, ty};

const TYPES: [u8; 7] = [
    ty::HANDSHAKE,
    ty::HELLO,
    ty::LINK_STATE,
    ty::ADDRESS_SET,
    ty::GOAWAY,
    ty::OPEN,
    ty::RESET,
];
const SELF_ID: &str = "a";

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M) {
    let again = M::decode(m.encode_to_vec().as_slice()).expect("re-encoded message decodes");
    assert_eq!(&again, m);
}

fn check_ls(ls: &pb::LinkState) {
    let verdict = wire::check_link_state(ls);
    if let Err(e) = &verdict {
        assert!(!e.is_empty(), "an empty reason");
        return;
    }
    assert!(valid_name(&ls.origin), "accepted origin {:?}", ls.origin);
    for n in &ls.neighbors {
        assert!(
            valid_name(&n.router_id),
            "accepted neighbour {:?}",
            n.router_id
        );
    }
    for a in &ls.addresses {
        assert!(
            valid_routing_key(&a.routing_key),
            "accepted key {:?}",
            a.routing_key
        );
    }
    assert!(wire::check_topic_values(&ls.values).is_ok());
}

fuzz_target!(|data: &[u8]| {
    // Build the byte stream a peer would send.
    let mut stream = BytesMut::new();
    let mut rest = data;
    let mut sent = 0usize;
    while let [sel, lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (body, next) = tail.split_at(len);
        let t = TYPES[usize::from(*sel) % TYPES.len()];
        let flow = t == ty::OPEN || t == ty::RESET;
        let sid = if flow { u32::from(*sel / 7) + 1 } else { 0 };
        stream.extend_from_slice(&header(t, sid, body.len()));
        stream.extend_from_slice(body);
        sent += 1;
        rest = next;
    }

    let mut lsdb = Lsdb::new(SELF_ID);
    // Our own advertisement, as the engine originates it at start.
    lsdb.accept(
        pb::LinkState {
            origin: SELF_ID.into(),
            instance: 1,
            seq: 1,
            ..Default::default()
        },
        Instant::now(),
    );
    let mut decoded = 0usize;
    loop {
        let frame = match wire::decode(&mut stream) {
            Ok(Some(f)) => f,
            Ok(None) => {
                assert!(stream.is_empty(), "a complete frame was left undecoded");
                break;
            }
            Err(e) => {
                // Only a body can be wrong: the headers were built well-formed.
                assert!(matches!(e, WireError::Body { .. }), "{e:?}");
                assert!(!e.to_string().is_empty());
                break;
            }
        };
        decoded += 1;
        match &frame {
            Frame::Handshake(h) => {
                round_trip(h);
                // What the link layer looks at: the role and the peer's name.
                let role = pb::Role::try_from(h.role).unwrap_or(pb::Role::Unspecified);
                let _ = (role.as_str_name(), valid_name(&h.router_id));
            }
            Frame::Hello(h) => {
                round_trip(h);
                let _ = h.seen.iter().any(|s| s == SELF_ID);
            }
            Frame::LinkState(ls) => {
                round_trip(ls);
                check_ls(ls);
                if ls.origin != SELF_ID && wire::check_link_state(ls).is_ok() {
                    lsdb.accept(ls.clone(), Instant::now());
                }
            }
            Frame::AddressSet(set) => {
                round_trip(set);
                if let Err(e) = wire::check_topic_values(&set.values) {
                    assert!(!e.is_empty());
                }
            }
            Frame::GoAway(g) => round_trip(g),
            Frame::Open { stream, open } => {
                assert_ne!(*stream, 0);
                round_trip(open);
                let _ = pb::FlowProtocol::try_from(open.protocol);
            }
            Frame::Reset { stream, reset } => {
                assert_ne!(*stream, 0);
                round_trip(reset);
                let _ = pb::ResetCode::try_from(reset.code).unwrap_or(pb::ResetCode::Aborted);
            }
            other => panic!("built no such frame: {other:?}"),
        }
    }
    assert!(decoded <= sent);

    // Shortest paths over what was accepted.
    let table = lsdb.compute();
    let me = table
        .nodes
        .get(SELF_ID)
        .expect("self is always in the table");
    assert_eq!((me.cost, me.hops, me.next_hop.as_str()), (0, 0, ""));
    for (id, n) in &table.nodes {
        if id == SELF_ID {
            continue;
        }
        assert!(n.hops >= 1 && n.cost >= u64::from(n.hops), "{id}: {n:?}");
        let hop = table.nodes.get(&n.next_hop).expect("next hop is reachable");
        assert_eq!(
            hop.hops, 1,
            "{id} goes through {} which is no neighbour",
            n.next_hop
        );
        assert_eq!(hop.next_hop, n.next_hop);
    }
    for (key, dests) in &table.addresses {
        assert!(!dests.is_empty(), "{key}");
        assert!(
            dests.windows(2).all(|w| w[0].cost <= w[1].cost),
            "{key}: {dests:?}"
        );
        for d in dests {
            assert!(table.nodes.contains_key(&d.router) && d.connectors > 0);
        }
    }
});
