//! Accepted connections within the connection cap, each holding its place until it closes
//! and failing its reads if the HTTP/2 preface does not arrive in time.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_stream::Stream;
use tonic::transport::server::Connected;
use tracing::warn;
use van_telemetry::Throttle;

/// The client's connection preface: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".
const PREFACE_LEN: usize = 24;

/// A listener of either kind.
pub(super) trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Io, String)>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<(Self::Io, String)> {
        let (s, peer) = tokio::net::TcpListener::accept(self).await?;
        let _ = s.set_nodelay(true);
        Ok((s, peer.to_string()))
    }
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> io::Result<(Self::Io, String)> {
        let (s, _) = tokio::net::UnixListener::accept(self).await?;
        Ok((s, "unix socket".into()))
    }
}

pub(super) fn incoming<L: Accept>(
    listener: L,
    limits: super::ServerLimits,
) -> impl Stream<Item = io::Result<Prompt<L::Io>>> {
    struct State<L> {
        listener: L,
        open: Arc<Semaphore>,
        preface: Duration,
        max: usize,
        busy: Throttle<()>,
    }
    let state = State {
        listener,
        open: Arc::new(Semaphore::new(limits.max_connections)),
        preface: limits.preface,
        max: limits.max_connections,
        busy: Throttle::new(Duration::from_secs(60)),
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            let (io, peer) = match st.listener.accept().await {
                Ok(a) => a,
                Err(error) => {
                    // Out of file descriptors, usually: let some close.
                    warn!(%error, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match st.open.clone().try_acquire_owned() {
                Ok(permit) => {
                    let io = Prompt::new(io, PREFACE_LEN, st.preface).holding(permit);
                    return Some((Ok(io), st));
                }
                Err(_) => {
                    drop(io);
                    if st.busy.allow(()) {
                        warn!(%peer, max_connections = st.max,
                            "gRPC server at its connection limit: closed a new connection");
                    }
                    if let Some(s) = st.busy.summary() {
                        warn!(
                            "{} more gRPC connections closed at the connection limit in the last {} s",
                            s.count,
                            s.secs()
                        );
                    }
                }
            }
        }
    })
}

/// A connection whose first bytes must arrive in time: the reads fail once the deadline
/// passes with fewer than `first` bytes read. A protocol that must see some bytes before it
/// can set its own deadlines (HTTP/2's preface; telling HTTP/1 from HTTP/2) leaves a silent
/// client holding a task forever without it. It may hold a place under a connection cap
/// until it closes.
pub struct Prompt<T> {
    io: T,
    /// First bytes not yet read, and the time they have left.
    missing: usize,
    deadline: Option<Pin<Box<Sleep>>>,
    /// Whether writing (answering) also disarms the deadline: an HTTP/1 request can be
    /// shorter than `first`.
    disarm_on_write: bool,
    _permit: Option<OwnedSemaphorePermit>,
}

impl<T> Prompt<T> {
    /// `io`, whose first `first` bytes must arrive `within` the time from now.
    pub fn new(io: T, first: usize, within: Duration) -> Prompt<T> {
        Prompt {
            io,
            missing: first,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
            disarm_on_write: false,
            _permit: None,
        }
    }

    /// The deadline ends when this side writes, too.
    pub fn disarmed_by_answer(mut self) -> Prompt<T> {
        self.disarm_on_write = true;
        self
    }

    /// Holds `permit` (a place under a connection cap) until the connection closes.
    pub fn holding(mut self, permit: OwnedSemaphorePermit) -> Prompt<T> {
        self._permit = Some(permit);
        self
    }
}

impl<T: Connected> Connected for Prompt<T> {
    type ConnectInfo = T::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prompt<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.missing = this.missing.saturating_sub(buf.filled().len() - before);
                if this.missing == 0 {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let late = match &mut this.deadline {
                    Some(d) => d.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if late {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing in time",
                    )));
                }
                Poll::Pending
            }
            r => r,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prompt<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.disarm_on_write {
            self.deadline = None;
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.disarm_on_write {
            self.deadline = None;
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
