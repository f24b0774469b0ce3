//! Inter-router framing (see docs/wire-protocol.md).
//!
//! Every frame is a 12-byte header followed by `length` bytes of payload:
//!
//! ```text
//! 0        1        2        4                 8                 12
//! | type   | flags  | rsvd   | stream (u32 BE) | length (u32 BE) | payload ...
//! ```
//!
//! Control frames (stream 0) carry protobuf bodies from `van.wire.v1`. Flow frames name a
//! stream. The decoder never panics on peer input and bounds every length before buffering.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use van_proto::wire;

pub const HEADER_LEN: usize = 12;
/// Protocol version sent in the handshake.
pub const VERSION: u32 = 1;
/// Largest DATA payload a router sends or accepts.
pub const MAX_DATA: usize = 256 * 1024;
/// Largest control body (a link-state advertisement of a router with thousands of peers fits).
pub const MAX_CONTROL: usize = 4 * 1024 * 1024;

pub mod ty {
    pub const HANDSHAKE: u8 = 0x01;
    pub const HELLO: u8 = 0x02;
    pub const LINK_STATE: u8 = 0x03;
    pub const ADDRESS_SET: u8 = 0x04;
    pub const GOAWAY: u8 = 0x05;
    pub const OPEN: u8 = 0x10;
    pub const DATA: u8 = 0x11;
    pub const WINDOW: u8 = 0x12;
    pub const FIN: u8 = 0x13;
    pub const RESET: u8 = 0x14;
}

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Handshake(wire::Handshake),
    Hello(wire::Hello),
    LinkState(wire::LinkState),
    AddressSet(wire::AddressSet),
    GoAway(wire::GoAway),
    Open { stream: u32, open: wire::FlowOpen },
    Data { stream: u32, data: Bytes },
    Window { stream: u32, increment: u32 },
    Fin { stream: u32 },
    Reset { stream: u32, reset: wire::FlowReset },
}

/// Why bytes from a peer are not a valid frame. The connection is closed on any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    #[error("frame type {ty:#04x} has nonzero flags or reserved bits")]
    Reserved { ty: u8 },
    #[error("frame type {ty:#04x} length {len} exceeds the limit {max}")]
    TooLong { ty: u8, len: usize, max: usize },
    #[error("frame type {ty:#04x} on stream {stream}: {reason}")]
    BadStream {
        ty: u8,
        stream: u32,
        reason: &'static str,
    },
    #[error("frame type {ty:#04x}: bad length {len}")]
    BadLength { ty: u8, len: usize },
    #[error("frame type {ty:#04x}: undecodable body: {reason}")]
    Body { ty: u8, reason: String },
    #[error("window increment of zero on stream {0}")]
    ZeroWindow(u32),
}

impl Frame {
    pub fn stream(&self) -> u32 {
        match self {
            Frame::Open { stream, .. }
            | Frame::Data { stream, .. }
            | Frame::Window { stream, .. }
            | Frame::Fin { stream }
            | Frame::Reset { stream, .. } => *stream,
            _ => 0,
        }
    }

    /// Header and payload, ready to be written with vectored I/O (DATA payloads are not copied).
    pub fn encode(&self) -> ([u8; HEADER_LEN], Bytes) {
        let (t, stream, payload) = match self {
            Frame::Handshake(m) => (ty::HANDSHAKE, 0, m.encode_to_vec().into()),
            Frame::Hello(m) => (ty::HELLO, 0, m.encode_to_vec().into()),
            Frame::LinkState(m) => (ty::LINK_STATE, 0, m.encode_to_vec().into()),
            Frame::AddressSet(m) => (ty::ADDRESS_SET, 0, m.encode_to_vec().into()),
            Frame::GoAway(m) => (ty::GOAWAY, 0, m.encode_to_vec().into()),
            Frame::Open { stream, open } => (ty::OPEN, *stream, open.encode_to_vec().into()),
            Frame::Data { stream, data } => (ty::DATA, *stream, data.clone()),
            Frame::Window { stream, increment } => (
                ty::WINDOW,
                *stream,
                Bytes::copy_from_slice(&increment.to_be_bytes()),
            ),
            Frame::Fin { stream } => (ty::FIN, *stream, Bytes::new()),
            Frame::Reset { stream, reset } => (ty::RESET, *stream, reset.encode_to_vec().into()),
        };
        (header(t, stream, payload.len()), payload)
    }

    /// Appends the encoded frame to `out` (used for control frames and tests).
    pub fn encode_to(&self, out: &mut BytesMut) {
        let (h, p) = self.encode();
        out.put_slice(&h);
        out.put_slice(&p);
    }
}

pub fn header(t: u8, stream: u32, len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = t;
    h[4..8].copy_from_slice(&stream.to_be_bytes());
    h[8..12].copy_from_slice(&(len as u32).to_be_bytes());
    h
}

/// Decodes one frame from the front of `buf`, or returns `Ok(None)` when more bytes are needed.
/// On `Ok(Some(_))` the frame's bytes have been consumed; DATA payloads share `buf`'s memory.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let t = buf[0];
    if buf[1] != 0 || buf[2] != 0 || buf[3] != 0 {
        return Err(WireError::Reserved { ty: t });
    }
    let stream = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let len = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
    let (max, flow) = match t {
        ty::HANDSHAKE | ty::HELLO | ty::LINK_STATE | ty::ADDRESS_SET | ty::GOAWAY => {
            (MAX_CONTROL, false)
        }
        ty::OPEN | ty::RESET => (64 * 1024, true),
        ty::DATA => (MAX_DATA, true),
        ty::WINDOW => (4, true),
        ty::FIN => (0, true),
        other => return Err(WireError::UnknownType(other)),
    };
    if len > max {
        return Err(WireError::TooLong { ty: t, len, max });
    }
    if flow && stream == 0 {
        return Err(WireError::BadStream {
            ty: t,
            stream,
            reason: "flow frames need a nonzero stream",
        });
    }
    if !flow && stream != 0 {
        return Err(WireError::BadStream {
            ty: t,
            stream,
            reason: "control frames use stream 0",
        });
    }
    if buf.len() < HEADER_LEN + len {
        // Reserve up front so a large frame is read without repeated growth.
        buf.reserve(HEADER_LEN + len - buf.len());
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let payload = buf.split_to(len);
    fn body<M: Message + Default>(t: u8, p: &[u8]) -> Result<M, WireError> {
        M::decode(p).map_err(|e| WireError::Body {
            ty: t,
            reason: e.to_string(),
        })
    }
    let frame = match t {
        ty::HANDSHAKE => Frame::Handshake(body(t, &payload)?),
        ty::HELLO => Frame::Hello(body(t, &payload)?),
        ty::LINK_STATE => Frame::LinkState(body(t, &payload)?),
        ty::ADDRESS_SET => Frame::AddressSet(body(t, &payload)?),
        ty::GOAWAY => Frame::GoAway(body(t, &payload)?),
        ty::OPEN => Frame::Open {
            stream,
            open: body(t, &payload)?,
        },
        ty::DATA => Frame::Data {
            stream,
            data: payload.freeze(),
        },
        ty::WINDOW => {
            if len != 4 {
                return Err(WireError::BadLength { ty: t, len });
            }
            let increment = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
            if increment == 0 {
                return Err(WireError::ZeroWindow(stream));
            }
            Frame::Window { stream, increment }
        }
        ty::FIN => Frame::Fin { stream },
        ty::RESET => Frame::Reset {
            stream,
            reset: body(t, &payload)?,
        },
        _ => unreachable!("checked above"),
    };
    Ok(Some(frame))
}

/// Checks a peer's link-state advertisement as the routing engine does before storing or
/// flooding it: names and routing keys a router could be configured with, bounded counts and
/// sizes. The error says what is wrong. (Public so the fuzzer reaches it.)
pub fn check_link_state(ls: &wire::LinkState) -> Result<(), String> {
    crate::control::check_ls(ls)
}

/// Checks topic values from a peer (in an advertisement or an edge's address set).
pub fn check_topic_values(values: &[wire::TopicValue]) -> Result<(), String> {
    crate::control::check_values(values)
}

#[cfg(test)]
mod tests;
