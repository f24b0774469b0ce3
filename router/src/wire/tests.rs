use super::*;

use proptest::prelude::*;
use van_proto::wire as pb;

fn enc(f: &Frame) -> BytesMut {
    let mut b = BytesMut::new();
    f.encode_to(&mut b);
    b
}

/// A raw frame: header fields as given, then `payload`.
fn raw(t: u8, stream: u32, payload: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_slice(&header(t, stream, payload.len()));
    b.put_slice(payload);
    b
}

/// Only a header that announces `len` payload bytes.
fn head(t: u8, stream: u32, len: usize) -> BytesMut {
    BytesMut::from(&header(t, stream, len)[..])
}

fn one_of_each() -> Vec<Frame> {
    vec![
        Frame::Handshake(pb::Handshake {
            version: VERSION,
            router_id: "west-1".into(),
            instance: 1_700_000_000_000_000_000,
            role: pb::Role::InterRouterData as i32,
            link_id: 42,
            cost: 7,
            site_id: "west".into(),
            mode: "interior".into(),
        }),
        Frame::Hello(pb::Hello {
            router_id: "west-1".into(),
            instance: 9,
            seen: vec!["east-1".into(), "north-2".into()],
        }),
        Frame::LinkState(pb::LinkState {
            origin: "west-1".into(),
            site: "west".into(),
            instance: 9,
            seq: 1234,
            neighbors: vec![
                pb::Neighbor {
                    router_id: "east-1".into(),
                    cost: 1,
                },
                pb::Neighbor {
                    router_id: "north-2".into(),
                    cost: 20,
                },
            ],
            addresses: vec![pb::AddressEntry {
                routing_key: "backend".into(),
                connectors: 3,
            }],
            topics: vec!["news".into()],
            values: vec![pb::TopicValue {
                topic: "van.site.v1".into(),
                payload: b"{}".to_vec(),
                origin: String::new(),
            }],
        }),
        Frame::AddressSet(pb::AddressSet {
            seq: 5,
            addresses: vec![pb::AddressEntry {
                routing_key: "db".into(),
                connectors: 1,
            }],
            values: Vec::new(),
        }),
        Frame::GoAway(pb::GoAway {
            reason: "shutting down".into(),
        }),
        Frame::Open {
            stream: 1,
            open: pb::FlowOpen {
                routing_key: "backend".into(),
                dest_router: "east-1".into(),
                origin_router: "west-1".into(),
                flow_id: u64::MAX,
                client_addr: "10.0.0.1:5555".into(),
                ttl: 16,
                path: vec!["west-1".into(), "mid".into()],
                protocol: pb::FlowProtocol::FlowHttp as i32,
                traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            },
        },
        Frame::Data {
            stream: 3,
            data: Bytes::from_static(b"hello, world"),
        },
        Frame::Data {
            stream: 4,
            data: Bytes::new(),
        },
        Frame::Window {
            stream: 5,
            increment: u32::MAX,
        },
        Frame::Fin { stream: u32::MAX },
        Frame::Reset {
            stream: 7,
            reset: pb::FlowReset {
                code: pb::ResetCode::ConnectFailed as i32,
                reason: "connection refused".into(),
            },
        },
        // Empty protobuf bodies encode to zero bytes and still round-trip.
        Frame::Hello(pb::Hello::default()),
        Frame::GoAway(pb::GoAway::default()),
    ]
}

fn decode_all(buf: &mut BytesMut) -> Vec<Frame> {
    let mut out = Vec::new();
    while let Some(f) = decode(buf).expect("valid frames") {
        out.push(f);
    }
    out
}

#[test]
fn every_variant_round_trips() {
    for f in one_of_each() {
        let mut b = enc(&f);
        assert_eq!(decode(&mut b), Ok(Some(f.clone())), "{f:?}");
        assert!(b.is_empty(), "{f:?} left {} bytes", b.len());
    }
}

#[test]
fn header_layout_is_big_endian() {
    let f = Frame::Data {
        stream: 0x0102_0304,
        data: Bytes::from_static(b"abc"),
    };
    let (h, p) = f.encode();
    assert_eq!(h, [ty::DATA, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 3]);
    assert_eq!(&p[..], b"abc");
}

#[test]
fn encode_sets_type_and_stream() {
    let expect = [
        (ty::HANDSHAKE, 0),
        (ty::HELLO, 0),
        (ty::LINK_STATE, 0),
        (ty::ADDRESS_SET, 0),
        (ty::GOAWAY, 0),
        (ty::OPEN, 1),
        (ty::DATA, 3),
        (ty::DATA, 4),
        (ty::WINDOW, 5),
        (ty::FIN, u32::MAX),
        (ty::RESET, 7),
        (ty::HELLO, 0),
        (ty::GOAWAY, 0),
    ];
    for (f, (t, stream)) in one_of_each().iter().zip(expect) {
        let (h, p) = f.encode();
        assert_eq!(h[0], t, "{f:?}");
        assert_eq!(&h[1..4], &[0, 0, 0]);
        assert_eq!(u32::from_be_bytes(h[4..8].try_into().unwrap()), stream);
        assert_eq!(f.stream(), stream);
        assert_eq!(
            u32::from_be_bytes(h[8..12].try_into().unwrap()) as usize,
            p.len()
        );
    }
}

#[test]
fn data_payload_is_not_copied() {
    let data = Bytes::from(vec![7u8; 1000]);
    let f = Frame::Data {
        stream: 1,
        data: data.clone(),
    };
    assert_eq!(f.encode().1.as_ptr(), data.as_ptr());

    let mut b = enc(&f);
    let start = b.as_ptr() as usize;
    match decode(&mut b) {
        Ok(Some(Frame::Data { data: d, .. })) => {
            assert_eq!(d.as_ptr() as usize, start + HEADER_LEN);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn frames_back_to_back_decode_in_order() {
    let frames = one_of_each();
    let mut b = BytesMut::new();
    for f in &frames {
        f.encode_to(&mut b);
    }
    assert_eq!(decode_all(&mut b), frames);
    assert!(b.is_empty());
}

#[test]
fn byte_by_byte_yields_none_until_complete() {
    let frames = one_of_each();
    let mut wire = BytesMut::new();
    for f in &frames {
        f.encode_to(&mut wire);
    }
    let mut ends = Vec::new();
    let mut total = 0;
    for f in &frames {
        total += enc(f).len();
        ends.push(total);
    }
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for (i, byte) in wire.iter().enumerate() {
        buf.put_u8(*byte);
        let fed = i + 1;
        loop {
            let before = buf.len();
            match decode(&mut buf) {
                Ok(Some(f)) => {
                    got.push(f);
                    // A frame completes exactly where its encoding ends.
                    assert_eq!(ends[got.len() - 1], fed);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                    break;
                }
                Err(e) => panic!("at byte {i}: {e}"),
            }
        }
    }
    assert_eq!(got, frames);
    assert!(buf.is_empty());
}

#[test]
fn short_header_needs_more() {
    for n in 0..HEADER_LEN {
        let mut b = BytesMut::from(&[0xffu8; 12][..n]);
        assert_eq!(decode(&mut b), Ok(None));
        assert_eq!(b.len(), n);
    }
}

#[test]
fn partial_payload_reserves_whole_frame() {
    let mut b = head(ty::DATA, 1, MAX_DATA);
    b.put_slice(b"xy");
    assert_eq!(decode(&mut b), Ok(None));
    assert_eq!(b.len(), HEADER_LEN + 2);
    assert!(b.capacity() >= HEADER_LEN + MAX_DATA);
}

#[test]
fn largest_allowed_lengths_decode() {
    let data = Bytes::from(vec![0xa5; MAX_DATA]);
    let f = Frame::Data {
        stream: 1,
        data: data.clone(),
    };
    assert_eq!(decode(&mut enc(&f)), Ok(Some(f)));

    // A large control body just under the limit: a GoAway with a long reason.
    let f = Frame::GoAway(pb::GoAway {
        reason: "r".repeat(MAX_CONTROL - 8),
    });
    let b = enc(&f);
    assert!(b.len() - HEADER_LEN <= MAX_CONTROL);
    assert_eq!(decode(&mut b.clone()), Ok(Some(f)));
}

#[test]
fn unknown_type_is_rejected() {
    for t in [0x00, 0x06, 0x0f, 0x15, 0x7f, 0xff] {
        assert_eq!(decode(&mut raw(t, 0, b"")), Err(WireError::UnknownType(t)));
        assert_eq!(decode(&mut raw(t, 1, b"")), Err(WireError::UnknownType(t)));
    }
}

#[test]
fn nonzero_flags_or_reserved_are_rejected() {
    for at in 1..4 {
        for bits in [0x01, 0x80, 0xff] {
            let mut b = raw(ty::DATA, 1, b"x");
            b[at] = bits;
            assert_eq!(
                decode(&mut b),
                Err(WireError::Reserved { ty: ty::DATA }),
                "byte {at} = {bits:#x}"
            );
        }
    }
    // Checked from the header alone, before the payload has arrived.
    let mut b = head(ty::HELLO, 0, 100);
    b[1] = 1;
    assert_eq!(decode(&mut b), Err(WireError::Reserved { ty: ty::HELLO }));
}

#[test]
fn too_long_is_rejected_from_header_alone() {
    let cases = [
        (ty::DATA, 1, MAX_DATA + 1, MAX_DATA),
        (ty::DATA, 1, u32::MAX as usize, MAX_DATA),
        (ty::OPEN, 1, 64 * 1024 + 1, 64 * 1024),
        (ty::RESET, 1, 64 * 1024 + 1, 64 * 1024),
        (ty::WINDOW, 1, 5, 4),
        (ty::FIN, 1, 1, 0),
        (ty::HANDSHAKE, 0, MAX_CONTROL + 1, MAX_CONTROL),
        (ty::HELLO, 0, MAX_CONTROL + 1, MAX_CONTROL),
        (ty::LINK_STATE, 0, MAX_CONTROL + 1, MAX_CONTROL),
        (ty::ADDRESS_SET, 0, MAX_CONTROL + 1, MAX_CONTROL),
        (ty::GOAWAY, 0, u32::MAX as usize, MAX_CONTROL),
    ];
    for (t, stream, len, max) in cases {
        let mut b = head(t, stream, len);
        assert_eq!(
            decode(&mut b),
            Err(WireError::TooLong { ty: t, len, max }),
            "type {t:#x}"
        );
        // Nothing was reserved for the announced length.
        assert!(
            b.capacity() < 1024 * 1024,
            "type {t:#x} reserved {}",
            b.capacity()
        );
    }
}

#[test]
fn fin_with_payload_is_rejected() {
    assert_eq!(
        decode(&mut raw(ty::FIN, 3, b"x")),
        Err(WireError::TooLong {
            ty: ty::FIN,
            len: 1,
            max: 0
        })
    );
}

#[test]
fn control_frame_on_a_stream_is_rejected() {
    for t in [
        ty::HANDSHAKE,
        ty::HELLO,
        ty::LINK_STATE,
        ty::ADDRESS_SET,
        ty::GOAWAY,
    ] {
        assert!(
            matches!(
                decode(&mut raw(t, 1, b"")),
                Err(WireError::BadStream { ty, stream: 1, .. }) if ty == t
            ),
            "type {t:#x}"
        );
    }
}

#[test]
fn flow_frame_on_stream_zero_is_rejected() {
    let cases: [(u8, &[u8]); 5] = [
        (ty::OPEN, b""),
        (ty::DATA, b"x"),
        (ty::WINDOW, &[0, 0, 0, 1]),
        (ty::FIN, b""),
        (ty::RESET, b""),
    ];
    for (t, payload) in cases {
        assert!(
            matches!(
                decode(&mut raw(t, 0, payload)),
                Err(WireError::BadStream { ty, stream: 0, .. }) if ty == t
            ),
            "type {t:#x}"
        );
    }
}

#[test]
fn window_of_wrong_length_is_rejected() {
    for payload in [&b""[..], &[0][..], &[0, 0, 1][..]] {
        assert_eq!(
            decode(&mut raw(ty::WINDOW, 2, payload)),
            Err(WireError::BadLength {
                ty: ty::WINDOW,
                len: payload.len()
            })
        );
    }
}

#[test]
fn window_of_zero_is_rejected() {
    assert_eq!(
        decode(&mut raw(ty::WINDOW, 9, &[0, 0, 0, 0])),
        Err(WireError::ZeroWindow(9))
    );
    assert_eq!(
        decode(&mut raw(ty::WINDOW, 9, &[0, 0, 0, 1])),
        Ok(Some(Frame::Window {
            stream: 9,
            increment: 1
        }))
    );
}

#[test]
fn undecodable_bodies_are_rejected() {
    // Field 1, length-delimited, claims 5 bytes but only 1 follows.
    let truncated: &[u8] = &[0x0a, 0x05, 0x61];
    // A varint that never ends.
    let endless: &[u8] = &[0xff; 11];
    let cases = [
        (ty::HANDSHAKE, 0),
        (ty::HELLO, 0),
        (ty::LINK_STATE, 0),
        (ty::ADDRESS_SET, 0),
        (ty::GOAWAY, 0),
        (ty::OPEN, 1),
        (ty::RESET, 1),
    ];
    for (t, stream) in cases {
        for body in [truncated, endless] {
            assert!(
                matches!(
                    decode(&mut raw(t, stream, body)),
                    Err(WireError::Body { ty, .. }) if ty == t
                ),
                "type {t:#x} body {body:?}"
            );
        }
    }
    // A string field that is not UTF-8.
    assert!(matches!(
        decode(&mut raw(ty::GOAWAY, 0, &[0x0a, 0x01, 0xff])),
        Err(WireError::Body { ty: ty::GOAWAY, .. })
    ));
}

#[test]
fn errors_display_the_frame_type() {
    let e = WireError::TooLong {
        ty: ty::DATA,
        len: 10,
        max: 5,
    };
    assert_eq!(
        e.to_string(),
        "frame type 0x11 length 10 exceeds the limit 5"
    );
    assert_eq!(
        WireError::UnknownType(0x06).to_string(),
        "unknown frame type 0x06"
    );
}

// === properties ===

fn config() -> ProptestConfig {
    ProptestConfig {
        // Do not write regression files into the source tree.
        failure_persistence: None,
        ..ProptestConfig::with_cases(256)
    }
}

/// Runs the decoder over `bytes` until it needs more or fails, checking it only ever
/// consumes what it was given and never consumes on `Ok(None)`.
fn drain(bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::from(bytes);
    let mut consumed = 0;
    loop {
        let before = buf.len();
        match decode(&mut buf) {
            Ok(Some(_)) => {
                prop_assert!(buf.len() < before, "a frame consumed nothing");
                consumed += before - buf.len();
                prop_assert!(consumed <= bytes.len());
            }
            Ok(None) => {
                prop_assert_eq!(buf.len(), before);
                return Ok(());
            }
            Err(_) => return Ok(()),
        }
    }
}

/// Bytes that start with a plausible header, so the decoder gets past the first checks.
fn near_valid() -> impl Strategy<Value = Vec<u8>> {
    let types = prop::sample::select(vec![
        ty::HANDSHAKE,
        ty::HELLO,
        ty::LINK_STATE,
        ty::ADDRESS_SET,
        ty::GOAWAY,
        ty::OPEN,
        ty::DATA,
        ty::WINDOW,
        ty::FIN,
        ty::RESET,
    ]);
    (
        types,
        prop_oneof![Just(0u32), Just(1u32), any::<u32>()],
        0usize..48,
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(t, stream, len, rest)| {
            let mut v = header(t, stream, len).to_vec();
            v.extend(rest);
            v
        })
}

fn arb_name() -> impl Strategy<Value = String> {
    "[a-z0-9.-]{0,16}"
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let stream = 1..=u32::MAX;
    prop_oneof![
        (stream.clone(), prop::collection::vec(any::<u8>(), 0..=4096)).prop_map(|(stream, d)| {
            Frame::Data {
                stream,
                data: d.into(),
            }
        }),
        (stream.clone(), 1..=u32::MAX)
            .prop_map(|(stream, increment)| Frame::Window { stream, increment }),
        stream.clone().prop_map(|stream| Frame::Fin { stream }),
        (stream.clone(), any::<i32>(), ".{0,24}").prop_map(|(stream, code, reason)| {
            Frame::Reset {
                stream,
                reset: pb::FlowReset { code, reason },
            }
        }),
        (
            stream,
            (arb_name(), arb_name(), arb_name()),
            any::<u64>(),
            any::<u32>(),
            prop::collection::vec(arb_name(), 0..4)
        )
            .prop_map(|(stream, (key, dest, origin), flow_id, ttl, path)| {
                Frame::Open {
                    stream,
                    open: pb::FlowOpen {
                        routing_key: key,
                        dest_router: dest,
                        origin_router: origin,
                        flow_id,
                        client_addr: "127.0.0.1:1".into(),
                        ttl,
                        path,
                        protocol: 0,
                        traceparent: String::new(),
                    },
                }
            }),
        (
            arb_name(),
            any::<u64>(),
            prop::collection::vec(arb_name(), 0..4)
        )
            .prop_map(|(router_id, instance, seen)| Frame::Hello(pb::Hello {
                router_id,
                instance,
                seen
            })),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        drain(&bytes)?;
    }

    #[test]
    fn near_valid_bytes_never_panic(bytes in near_valid()) {
        drain(&bytes)?;
    }

    #[test]
    fn frame_sequences_survive_any_split(
        frames in prop::collection::vec(arb_frame(), 0..12),
        at in any::<prop::sample::Index>(),
    ) {
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode_to(&mut wire);
        }
        let split = at.index(wire.len() + 1);
        let tail = wire.split_off(split);
        let mut buf = wire;
        let mut got = Vec::new();
        while let Some(f) = decode(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))? {
            got.push(f);
        }
        buf.extend_from_slice(&tail);
        while let Some(f) = decode(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))? {
            got.push(f);
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, frames);
    }
}
