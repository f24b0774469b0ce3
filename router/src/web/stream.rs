//! One HTTP exchange on a stream of a data connection: a sending half that respects the
//! far end's window, a receiving half that decodes records and grants window back as
//! they are consumed, and a body type that hands a flow's body to hyper.
//!
//! Both halves share a [`StreamHandle`]. When the last half goes, the stream is removed
//! from its connection, and reset unless both directions ended cleanly: a client that
//! goes away cancels the request all the way to the server.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use van_proto::wire::{HttpHead, ResetCode};

use super::codec::{self, CodecError, Decoder, Item};
use crate::mux::{DataConn, FlowInbound, INITIAL_WINDOW, Inbound, InboxRx};
use crate::wire::{Frame as WireFrame, MAX_DATA};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an HTTP flow failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FlowError {
    #[error("reset by peer ({code}): {reason}", code = .0.as_str_name(), reason = .1)]
    Reset(ResetCode, String),
    #[error("link lost: {0}")]
    LinkLost(String),
    #[error("peer router sent a bad HTTP record: {0}")]
    Codec(#[from] CodecError),
    #[error("the flow ended before the {0} arrived")]
    Ended(&'static str),
}

/// The stream both halves of an exchange use.
#[derive(Debug)]
pub(crate) struct StreamHandle {
    pub(crate) conn: Arc<DataConn>,
    pub(crate) stream: u32,
    pub(crate) inbound: Arc<FlowInbound>,
    sent_fin: AtomicBool,
    got_fin: AtomicBool,
    reset_sent: AtomicBool,
}

impl StreamHandle {
    pub(crate) fn new(conn: Arc<DataConn>, stream: u32, inbound: Arc<FlowInbound>) -> Arc<Self> {
        Arc::new(StreamHandle {
            conn,
            stream,
            inbound,
            sent_fin: AtomicBool::new(false),
            got_fin: AtomicBool::new(false),
            reset_sent: AtomicBool::new(false),
        })
    }

    /// Resets the stream toward the peer (at most once; nothing more is sent after it).
    pub(crate) fn reset(&self, code: ResetCode, reason: impl Into<String>) {
        if !self.reset_sent.swap(true, Ordering::AcqRel) && !self.inbound.is_gone() {
            self.conn.remove(self.stream);
            self.conn.reset(self.stream, code, reason);
        }
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        let clean = self.sent_fin.load(Ordering::Acquire) && self.got_fin.load(Ordering::Acquire);
        if clean {
            self.conn.remove(self.stream);
        } else {
            self.reset(
                ResetCode::Aborted,
                "the other side of the request went away",
            );
        }
    }
}

/// The sending half.
#[derive(Debug)]
pub(crate) struct FlowTx {
    h: Arc<StreamHandle>,
    /// Bytes sent, for the flow record.
    pub(crate) sent: u64,
}

impl FlowTx {
    pub(crate) fn new(h: Arc<StreamHandle>) -> Self {
        FlowTx { h, sent: 0 }
    }

    /// Sends `data` as the far end's window allows. Fails once the stream is gone.
    pub(crate) async fn send(&mut self, mut data: Bytes) -> Result<(), FlowError> {
        let fi = &self.h.inbound;
        while !data.is_empty() {
            let credit = loop {
                if fi.is_gone() {
                    return Err(FlowError::Ended("end of the exchange"));
                }
                let c = fi.credit.load(Ordering::Acquire);
                if c > 0 {
                    break c as usize;
                }
                fi.credit_notify.notified().await;
            };
            let n = data.len().min(credit).min(MAX_DATA);
            fi.credit.fetch_sub(n as i64, Ordering::AcqRel);
            self.sent += n as u64;
            self.h.conn.send(WireFrame::Data {
                stream: self.h.stream,
                data: data.split_to(n),
            });
        }
        Ok(())
    }

    pub(crate) async fn send_head(&mut self, head: &HttpHead) -> Result<(), FlowError> {
        self.send(codec::meta_record(codec::HEAD, head)).await
    }

    /// Sends body bytes as one record; small ones share a frame with the record header.
    pub(crate) async fn send_body(&mut self, data: Bytes) -> Result<(), FlowError> {
        let hdr = codec::record_header(codec::BODY, data.len());
        if data.len() <= 16 * 1024 {
            let mut b = BytesMut::with_capacity(hdr.len() + data.len());
            b.extend_from_slice(&hdr);
            b.extend_from_slice(&data);
            self.send(b.freeze()).await
        } else {
            self.send(Bytes::copy_from_slice(&hdr)).await?;
            self.send(data).await
        }
    }

    /// Ends this direction.
    pub(crate) fn finish(&self) {
        if !self.h.sent_fin.swap(true, Ordering::AcqRel) {
            self.h.conn.send(WireFrame::Fin {
                stream: self.h.stream,
            });
        }
    }

    pub(crate) fn handle(&self) -> &Arc<StreamHandle> {
        &self.h
    }

    /// Sends a whole body (data and trailers) and ends this direction.
    pub(crate) async fn send_all<B>(&mut self, body: B) -> Result<(), SendAllError>
    where
        B: Body<Data = Bytes>,
        B::Error: std::fmt::Display,
    {
        let mut body = std::pin::pin!(body);
        while let Some(f) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            let f = f.map_err(|e| SendAllError::Body(e.to_string()))?;
            match f.into_data() {
                Ok(d) if d.is_empty() => {}
                Ok(d) => self.send_body(d).await.map_err(SendAllError::Flow)?,
                Err(f) => {
                    if let Ok(t) = f.into_trailers() {
                        self.send(codec::trailers_record(&t))
                            .await
                            .map_err(SendAllError::Flow)?;
                    }
                }
            }
        }
        self.finish();
        Ok(())
    }
}

/// Why a body could not be sent whole.
#[derive(Debug)]
pub(crate) enum SendAllError {
    /// Reading it failed (the client or server went away mid-body).
    Body(String),
    /// The flow ended first.
    Flow(FlowError),
}

/// The receiving half.
#[derive(Debug)]
pub(crate) struct FlowRx {
    h: Arc<StreamHandle>,
    rx: InboxRx,
    decoder: Decoder,
    items: VecDeque<Item>,
    unacked: u32,
    done: bool,
    /// Why the flow failed, told once the records before it are taken.
    failed: Option<FlowError>,
}

impl FlowRx {
    pub(crate) fn new(h: Arc<StreamHandle>, rx: InboxRx) -> Self {
        FlowRx {
            h,
            rx,
            decoder: Decoder::default(),
            items: VecDeque::new(),
            unacked: 0,
            done: false,
            failed: None,
        }
    }

    /// The next record; `None` at the peer's FIN.
    pub(crate) fn poll_item(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Item>, FlowError>> {
        loop {
            if let Some(i) = self.items.pop_front() {
                if self.items.is_empty() {
                    // A FIN queued behind the last bytes ends the body with them, so hyper
                    // sees the end without polling again (it stops at a Content-Length).
                    self.take_ready();
                }
                return Poll::Ready(Ok(Some(i)));
            }
            if let Some(e) = self.failed.take() {
                return Poll::Ready(Err(e));
            }
            if self.done {
                return Poll::Ready(Ok(None));
            }
            let ev = ready!(self.rx.poll_recv(cx));
            self.on_event(ev);
        }
    }

    /// Takes what has already arrived, without waiting.
    fn take_ready(&mut self) {
        while !self.done && self.failed.is_none() {
            match self.rx.try_recv() {
                Some(ev) => self.on_event(Some(ev)),
                None => break,
            }
        }
    }

    fn on_event(&mut self, ev: Option<Inbound>) {
        match ev {
            Some(Inbound::Data(b)) => {
                let n = b.len() as u32;
                // Window goes back as soon as the bytes are decoded: hyper pulls a body only
                // as fast as it can write it, so this still bounds what waits here.
                self.unacked += n;
                if self.unacked >= INITIAL_WINDOW / 4 {
                    self.grant();
                }
                if let Err(e) = self.decoder.push(b, &mut self.items) {
                    self.h.reset(ResetCode::Protocol, e.to_string());
                    self.failed = Some(e.into());
                }
            }
            Some(Inbound::Fin) => {
                if self.decoder.at_boundary() {
                    self.done = true;
                    self.h.got_fin.store(true, Ordering::Release);
                } else {
                    self.h
                        .reset(ResetCode::Protocol, CodecError::Truncated.to_string());
                    self.failed = Some(CodecError::Truncated.into());
                }
            }
            Some(Inbound::Reset(ResetCode::LinkLost, r)) => {
                self.failed = Some(FlowError::LinkLost(r));
            }
            Some(Inbound::Reset(code, r)) => self.failed = Some(FlowError::Reset(code, r)),
            None => self.failed = Some(FlowError::LinkLost("connection gone".into())),
        }
    }

    fn grant(&mut self) {
        let n = std::mem::take(&mut self.unacked);
        if n > 0 && !self.done {
            self.h
                .inbound
                .budget
                .fetch_add(i64::from(n), Ordering::AcqRel);
            self.h.conn.send(WireFrame::Window {
                stream: self.h.stream,
                increment: n,
            });
        }
    }

    /// Waits for the head that starts this direction.
    pub(crate) async fn head(&mut self) -> Result<HttpHead, FlowError> {
        match std::future::poll_fn(|cx| self.poll_item(cx)).await? {
            Some(Item::Head(h)) => Ok(h),
            Some(_) => {
                let e = CodecError::Head("body before head".into());
                self.h.reset(ResetCode::Protocol, e.to_string());
                Err(e.into())
            }
            None => Err(FlowError::Ended("head")),
        }
    }

    /// Expects the FIN right after a head that said no body follows.
    pub(crate) fn into_body(self) -> FlowBody {
        FlowBody { rx: self }
    }
}

/// A body read from an HTTP flow.
#[derive(Debug)]
pub(crate) struct FlowBody {
    rx: FlowRx,
}

impl Body for FlowBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match ready!(self.rx.poll_item(cx)) {
            Ok(Some(Item::Data(d))) => Poll::Ready(Some(Ok(Frame::data(d)))),
            Ok(Some(Item::Trailers(t))) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(Some(Item::Head(_))) => {
                let e = CodecError::Head("a second head".into());
                self.rx.h.reset(ResetCode::Protocol, e.to_string());
                Poll::Ready(Some(Err(e.into())))
            }
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rx.done && self.rx.items.is_empty() && self.rx.failed.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Relays a switched protocol (after a 101 response) between `io` and the flow, as BODY
/// records both ways, until both directions have ended. An error drops the flow's halves,
/// which resets it.
pub(crate) async fn tunnel<IO>(io: IO, mut tx: FlowTx, mut rx: FlowRx) -> Result<(), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut r, mut w) = tokio::io::split(io);
    let up = async {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        loop {
            buf.reserve(16 * 1024);
            let n = r.read_buf(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                tx.finish();
                return Ok::<(), String>(());
            }
            tx.send_body(buf.split().freeze())
                .await
                .map_err(|e| e.to_string())?;
        }
    };
    let down = async {
        loop {
            match std::future::poll_fn(|cx| rx.poll_item(cx)).await {
                Ok(Some(Item::Data(d))) => w.write_all(&d).await.map_err(|e| e.to_string())?,
                Ok(Some(_)) => return Err("a head or trailers inside a tunnel".to_string()),
                Ok(None) => {
                    let _ = w.shutdown().await;
                    return Ok(());
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    tokio::try_join!(up, down).map(|_| ())
}
