//! The records of an HTTP flow and the translation between heads and `http` types.
//!
//! Each direction of an HTTP flow is a sequence of records, `[kind: u8][len: u32 BE]`
//! followed by `len` bytes: one HEAD (`HttpHead`), any number of BODY records (raw bytes),
//! at most one TRAILERS (`HttpTrailers`), then the stream's FIN. Body bytes are handed on
//! as they arrive, without waiting for the whole record, so a body never sits whole in a
//! router.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use prost::Message;
use van_proto::wire::{HttpHead, HttpTrailers};

pub(crate) const HEAD: u8 = 1;
pub(crate) const BODY: u8 = 2;
pub(crate) const TRAILERS: u8 = 3;
pub(crate) const RECORD_HEADER: usize = 5;
/// Largest HEAD or TRAILERS record; a longer one is a protocol error.
pub(crate) const MAX_META: usize = 256 * 1024;

/// A bad record from the peer router.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CodecError {
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("{0}-byte head or trailers record exceeds the {MAX_META}-byte limit")]
    TooLarge(usize),
    #[error("undecodable head or trailers: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("invalid head: {0}")]
    Head(String),
    #[error("the flow ended in the middle of a record")]
    Truncated,
}

/// One decoded record.
#[derive(Debug)]
pub(crate) enum Item {
    Head(HttpHead),
    Data(Bytes),
    Trailers(HeaderMap),
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Header,
    Body(usize),
    Meta(u8, usize),
}

/// Splits a flow's bytes into records. Body bytes are passed on without copying.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    hdr: [u8; RECORD_HEADER],
    hdr_len: usize,
    state: State,
    meta: BytesMut,
}

impl Decoder {
    pub(crate) fn push(
        &mut self,
        mut chunk: Bytes,
        out: &mut VecDeque<Item>,
    ) -> Result<(), CodecError> {
        while !chunk.is_empty() {
            match self.state {
                State::Header => {
                    let take = (RECORD_HEADER - self.hdr_len).min(chunk.len());
                    self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&chunk[..take]);
                    self.hdr_len += take;
                    chunk.advance(take);
                    if self.hdr_len < RECORD_HEADER {
                        break;
                    }
                    self.hdr_len = 0;
                    let kind = self.hdr[0];
                    let len =
                        u32::from_be_bytes([self.hdr[1], self.hdr[2], self.hdr[3], self.hdr[4]])
                            as usize;
                    self.state = match kind {
                        BODY => State::Body(len),
                        HEAD | TRAILERS if len > MAX_META => return Err(CodecError::TooLarge(len)),
                        HEAD | TRAILERS => State::Meta(kind, len),
                        k => return Err(CodecError::Kind(k)),
                    };
                    self.finish_meta(out)?;
                }
                State::Body(rest) => {
                    let take = rest.min(chunk.len());
                    out.push_back(Item::Data(chunk.split_to(take)));
                    self.state = if take == rest {
                        State::Header
                    } else {
                        State::Body(rest - take)
                    };
                }
                State::Meta(_, len) => {
                    let take = (len - self.meta.len()).min(chunk.len());
                    self.meta.extend_from_slice(&chunk[..take]);
                    chunk.advance(take);
                    self.finish_meta(out)?;
                }
            }
        }
        Ok(())
    }

    /// Emits a HEAD or TRAILERS record once all of it is in.
    fn finish_meta(&mut self, out: &mut VecDeque<Item>) -> Result<(), CodecError> {
        let State::Meta(kind, len) = self.state else {
            if let State::Body(0) = self.state {
                self.state = State::Header;
            }
            return Ok(());
        };
        if self.meta.len() < len {
            return Ok(());
        }
        let bytes = self.meta.split().freeze();
        self.state = State::Header;
        out.push_back(match kind {
            HEAD => Item::Head(HttpHead::decode(bytes)?),
            _ => Item::Trailers(to_header_map(&HttpTrailers::decode(bytes)?.headers)?),
        });
        Ok(())
    }

    /// Whether the bytes so far end on a record boundary (a FIN anywhere else truncates).
    pub(crate) fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header) && self.hdr_len == 0
    }
}

/// The 5-byte header of a record.
pub(crate) fn record_header(kind: u8, len: usize) -> [u8; RECORD_HEADER] {
    let l = (len as u32).to_be_bytes();
    [kind, l[0], l[1], l[2], l[3]]
}

/// A whole HEAD or TRAILERS record.
pub(crate) fn meta_record(kind: u8, msg: &impl Message) -> Bytes {
    let len = msg.encoded_len();
    let mut b = BytesMut::with_capacity(RECORD_HEADER + len);
    b.put_slice(&record_header(kind, len));
    msg.encode(&mut b).expect("BytesMut grows");
    b.freeze()
}

pub(crate) fn trailers_record(h: &HeaderMap) -> Bytes {
    meta_record(
        TRAILERS,
        &HttpTrailers {
            headers: encode_block(h, None),
        },
    )
}

// --- heads ---

/// Removes the headers that concern one connection only (RFC 9110, section 7.6.1),
/// including those the `Connection` header names. `TE: trailers` is end to end in
/// HTTP/2 and gRPC needs it, so it stays.
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    strip(h, false)
}

/// Whether a request asks to switch protocols (WebSocket, h2c): `Connection: upgrade` with
/// an `Upgrade` header.
pub(crate) fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE) && connection_names(h).any(|n| n == header::UPGRADE)
}

/// As `strip_hop_by_hop`, keeping `Connection: upgrade` and `Upgrade`: a protocol switch
/// is passed on to the one server the tunnel goes to.
pub(crate) fn strip_hop_by_hop_but_upgrade(h: &mut HeaderMap) {
    strip(h, true)
}

fn connection_names(h: &HeaderMap) -> impl Iterator<Item = HeaderName> + '_ {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
}

fn strip(h: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = connection_names(h).collect();
    for n in named {
        if n != header::TE && !(keep_upgrade && n == header::UPGRADE) {
            h.remove(n);
        }
    }
    if keep_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    for n in [
        header::TRANSFER_ENCODING,
        header::PROXY_AUTHENTICATE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        h.remove(n);
    }
    if !keep_upgrade {
        h.remove(header::CONNECTION);
        h.remove(header::UPGRADE);
        h.remove(HeaderName::from_static("http2-settings"));
    }
    let trailers_only = h
        .get_all(header::TE)
        .iter()
        .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !trailers_only {
        h.remove(header::TE);
    }
}

fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP",
    }
}

/// The head of a request as an HTTP flow carries it. The authority comes from the URI
/// (HTTP/2) or the `Host` header (HTTP/1.1), and travels in `authority` only.
pub(crate) fn request_head(parts: &http::request::Parts, no_body: bool) -> HttpHead {
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let headers = encode_block(&parts.headers, Some(&header::HOST));
    HttpHead {
        method: parts.method.as_str().into(),
        scheme: parts.uri.scheme_str().unwrap_or("http").into(),
        authority,
        path: parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .into(),
        status: 0,
        headers,
        version: version_name(parts.version).into(),
        no_body,
    }
}

pub(crate) fn response_head(parts: &http::response::Parts, no_body: bool) -> HttpHead {
    HttpHead {
        status: u32::from(parts.status.as_u16()),
        headers: encode_block(&parts.headers, None),
        version: version_name(parts.version).into(),
        no_body,
        ..Default::default()
    }
}

/// How a request is written to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    Http1,
    Http2,
}

/// Rebuilds a request from its head for a target speaking `wire`, with `host` replacing
/// the client's authority when set (a connector's host override).
pub(crate) fn to_request<B>(
    head: HttpHead,
    body: B,
    wire: Wire,
    host: Option<&str>,
) -> Result<http::Request<B>, CodecError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| CodecError::Head(format!("{what}: {e}"));
    let method = Method::from_bytes(head.method.as_bytes()).map_err(|e| bad("method", &e))?;
    let authority = host.unwrap_or(&head.authority);
    let mut req = http::Request::builder().method(method);
    req = match wire {
        Wire::Http1 => {
            let mut r = req.version(Version::HTTP_11).uri(head.path.as_str());
            if !authority.is_empty() {
                r = r.header(header::HOST, authority);
            }
            r
        }
        Wire::Http2 => {
            let uri = http::Uri::builder()
                .scheme(if head.scheme.is_empty() {
                    "http"
                } else {
                    head.scheme.as_str()
                })
                .authority(if authority.is_empty() {
                    "localhost"
                } else {
                    authority
                })
                .path_and_query(head.path.as_str())
                .build()
                .map_err(|e| bad("uri", &e))?;
            req.version(Version::HTTP_2).uri(uri)
        }
    };
    let mut req = req.body(body).map_err(|e| bad("request", &e))?;
    *req.headers_mut() = to_header_map(&head.headers)?;
    if wire == Wire::Http1 && !authority.is_empty() {
        let v = HeaderValue::from_str(authority).map_err(|e| bad("authority", &e))?;
        req.headers_mut().insert(header::HOST, v);
    }
    Ok(req)
}

pub(crate) fn to_response<B>(head: HttpHead, body: B) -> Result<http::Response<B>, CodecError> {
    let status = u16::try_from(head.status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| CodecError::Head(format!("status {} is not valid", head.status)))?;
    let mut resp = http::Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = to_header_map(&head.headers)?;
    Ok(resp)
}

/// Encodes header fields as a header block: for each field, the name's length (u16 BE), the
/// name (lowercase), the value's length (u32 BE) and the value. One buffer for the lot.
pub(crate) fn encode_block(h: &HeaderMap, skip: Option<&HeaderName>) -> Bytes {
    let fields = || h.iter().filter(|(n, _)| Some(*n) != skip);
    let len: usize = fields().map(|(n, v)| 6 + n.as_str().len() + v.len()).sum();
    let mut b = BytesMut::with_capacity(len);
    for (n, v) in fields() {
        b.put_u16(n.as_str().len() as u16);
        b.put_slice(n.as_str().as_bytes());
        b.put_u32(v.len() as u32);
        b.put_slice(v.as_bytes());
    }
    b.freeze()
}

/// The fields of a header block, as (name, value) slices of it.
pub(crate) fn block_fields(
    block: &Bytes,
) -> impl Iterator<Item = Result<(Bytes, Bytes), CodecError>> + '_ {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at == block.len() {
            return None;
        }
        let field = (|| {
            let take = |at: &mut usize, n: usize| -> Result<Bytes, CodecError> {
                if block.len() - *at < n {
                    return Err(CodecError::Head("header block ends inside a field".into()));
                }
                let b = block.slice(*at..*at + n);
                *at += n;
                Ok(b)
            };
            let n = take(&mut at, 2)?;
            let name = take(&mut at, usize::from(u16::from_be_bytes([n[0], n[1]])))?;
            let v = take(&mut at, 4)?;
            let value = take(
                &mut at,
                u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as usize,
            )?;
            Ok((name, value))
        })();
        if field.is_err() {
            at = block.len();
        }
        Some(field)
    })
}

/// The value of the first field named `name` (lowercase) in a header block.
pub(crate) fn block_get(block: &Bytes, name: &str) -> Option<Bytes> {
    block_fields(block)
        .filter_map(Result::ok)
        .find(|(n, _)| n.as_ref() == name.as_bytes())
        .map(|(_, v)| v)
}

fn to_header_map(block: &Bytes) -> Result<HeaderMap, CodecError> {
    let mut m = HeaderMap::new();
    for f in block_fields(block) {
        let (name, value) = f?;
        let n = HeaderName::from_bytes(&name).map_err(|_| {
            CodecError::Head(format!(
                "bad header name {:?}",
                String::from_utf8_lossy(&name)
            ))
        })?;
        // Shares the received frame's bytes: no copy.
        let v = HeaderValue::from_maybe_shared(value)
            .map_err(|_| CodecError::Head(format!("bad value for header {n}")))?;
        m.append(n, v);
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(chunks: &[&[u8]]) -> Result<Vec<Item>, CodecError> {
        let mut d = Decoder::default();
        let mut out = VecDeque::new();
        for c in chunks {
            d.push(Bytes::copy_from_slice(c), &mut out)?;
        }
        assert!(d.at_boundary());
        Ok(out.into_iter().collect())
    }

    fn stream() -> Vec<u8> {
        let head = HttpHead {
            method: "POST".into(),
            path: "/x?y=1".into(),
            authority: "svc:8080".into(),
            ..Default::default()
        };
        let mut v = meta_record(HEAD, &head).to_vec();
        v.extend_from_slice(&record_header(BODY, 5));
        v.extend_from_slice(b"hello");
        v.extend_from_slice(&record_header(BODY, 0));
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        v.extend_from_slice(&trailers_record(&t));
        v
    }

    #[test]
    fn records_survive_any_split() {
        let v = stream();
        for cut in 0..v.len() {
            let items = decode_all(&[&v[..cut], &v[cut..]]).unwrap();
            let body: Vec<u8> = items
                .iter()
                .filter_map(|i| match i {
                    Item::Data(b) => Some(b.to_vec()),
                    _ => None,
                })
                .flatten()
                .collect();
            assert_eq!(body, b"hello", "cut at {cut}");
            assert!(matches!(items.first(), Some(Item::Head(h)) if h.path == "/x?y=1"));
            assert!(
                matches!(items.last(), Some(Item::Trailers(t)) if t["grpc-status"] == "0"),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_partial_record_is_not_a_boundary() {
        let v = stream();
        let mut d = Decoder::default();
        let mut out = VecDeque::new();
        d.push(Bytes::copy_from_slice(&v[..v.len() - 1]), &mut out)
            .unwrap();
        assert!(!d.at_boundary());
    }

    #[test]
    fn oversized_and_unknown_records_are_errors() {
        let mut d = Decoder::default();
        let mut out = VecDeque::new();
        let e = d
            .push(
                Bytes::copy_from_slice(&record_header(HEAD, MAX_META + 1)),
                &mut out,
            )
            .unwrap_err();
        assert!(matches!(e, CodecError::TooLarge(_)), "{e}");
        let mut d = Decoder::default();
        let e = d
            .push(Bytes::from_static(&[9, 0, 0, 0, 0]), &mut out)
            .unwrap_err();
        assert!(matches!(e, CodecError::Kind(9)), "{e}");
        let mut d = Decoder::default();
        let mut bad = record_header(HEAD, 3).to_vec();
        bad.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(d.push(Bytes::from(bad), &mut out).is_err());
    }

    #[test]
    fn header_blocks_round_trip_and_bad_ones_are_errors() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        h.insert("x-empty", HeaderValue::from_static(""));
        let block = encode_block(&h, None);
        assert_eq!(to_header_map(&block).unwrap(), h);
        assert_eq!(block_get(&block, "set-cookie").unwrap(), "a=1");
        assert!(block_get(&block, "x-none").is_none());
        // A cut between fields leaves fewer fields; one inside a field is an error.
        let mut errors = 0;
        for cut in 1..block.len() {
            match to_header_map(&block.slice(..cut)) {
                Ok(m) => assert!(m.len() < h.len(), "cut at {cut}"),
                Err(_) => errors += 1,
            }
        }
        assert_eq!(errors, block.len() - h.len());
        let mut bad = BytesMut::new();
        bad.put_u16(3);
        bad.put_slice(b"a b");
        bad.put_u32(0);
        assert!(to_header_map(&bad.freeze()).is_err());
    }

    #[test]
    fn hop_by_hop_headers_go_and_named_ones_too() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["te", "x-kept"]);
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn an_upgrade_keeps_its_two_headers_only() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, x-hop"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("sec-websocket-key", HeaderValue::from_static("k"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop_but_upgrade(&mut h);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["connection", "sec-websocket-key", "upgrade"]);
        let mut plain = HeaderMap::new();
        plain.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(
            !is_upgrade(&plain),
            "Upgrade without Connection: upgrade is no upgrade"
        );
    }

    #[test]
    fn authority_moves_between_host_and_uri() {
        let (parts, ()) = http::Request::builder()
            .uri("/a")
            .header(header::HOST, "reviews:9080")
            .body(())
            .unwrap()
            .into_parts();
        let head = request_head(&parts, true);
        assert_eq!(head.authority, "reviews:9080");
        assert!(
            head.headers.is_empty(),
            "host travels as the authority only"
        );
        let h2 = to_request(head.clone(), (), Wire::Http2, None).unwrap();
        assert_eq!(h2.uri(), "http://reviews:9080/a");
        let h1 = to_request(head, (), Wire::Http1, Some("reviews.internal")).unwrap();
        assert_eq!(h1.uri(), "/a");
        assert_eq!(h1.headers()[header::HOST], "reviews.internal");
    }
}
