//! HTTP services: the router terminates HTTP/1.1 and HTTP/2 at a listener and routes each
//! request on its own.
//!
//! - `codec`: the records an HTTP flow carries between routers, and heads <-> `http` types;
//! - `stream`: one exchange on a stream of a data connection, with end-to-end windows;
//! - `pool`: kept-open connections from a connector to its target;
//! - `balance`: which destination a request goes to.
//!
//! The decisions (where a request goes, retries, errors) live in `dispatch::http`.

pub(crate) mod balance;
pub(crate) mod codec;
pub(crate) mod pool;
pub(crate) mod stream;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

pub(crate) use crate::flow::Dir;
use crate::flow::FlowRecord;
pub(crate) use stream::BoxError;

/// Any body the router hands to hyper.
pub(crate) type AnyBody = UnsyncBoxBody<Bytes, BoxError>;

pub(crate) fn empty() -> AnyBody {
    http_body_util::Empty::new()
        .map_err(|e: std::convert::Infallible| match e {})
        .boxed_unsync()
}

pub(crate) fn boxed<B>(b: B) -> AnyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed_unsync()
}

/// A response the router makes itself: a short plain-text body saying what went wrong.
pub(crate) fn error_response(status: http::StatusCode, msg: String) -> http::Response<AnyBody> {
    let mut r = http::Response::new(boxed(http_body_util::Full::new(Bytes::from(msg + "\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Runs once when a body ends: `Ok` when it was read to the end, `Err` with why not.
pub(crate) struct OnEnd(Option<EndFn>);

type EndFn = Box<dyn FnOnce(Result<(), String>) + Send>;

impl OnEnd {
    pub(crate) fn new(f: impl FnOnce(Result<(), String>) + Send + 'static) -> Self {
        OnEnd(Some(Box::new(f)))
    }

    fn fire(&mut self, r: Result<(), String>) {
        if let Some(f) = self.0.take() {
            f(r);
        }
    }
}

impl Drop for OnEnd {
    fn drop(&mut self) {
        self.fire(Err("the client went away before the body ended".into()));
    }
}

/// A body that counts its bytes into a flow record and runs `OnEnd` when it ends.
pub(crate) struct Counted<B> {
    inner: B,
    rec: Arc<FlowRecord>,
    dir: Dir,
    end: Option<OnEnd>,
}

impl<B: Body> Counted<B> {
    pub(crate) fn new(inner: B, rec: Arc<FlowRecord>, dir: Dir, end: Option<OnEnd>) -> Self {
        let mut c = Counted {
            inner,
            rec,
            dir,
            end,
        };
        if c.inner.is_end_stream()
            && let Some(mut e) = c.end.take()
        {
            e.fire(Ok(()));
        }
        c
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let r = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        let end = match &r {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    self.rec.add(self.dir, d.len() as u64);
                }
                self.inner.is_end_stream().then_some(Ok(()))
            }
            Some(Err(e)) => Some(Err(e.to_string())),
            None => Some(Ok(())),
        };
        if let Some(res) = end
            && let Some(mut e) = self.end.take()
        {
            e.fire(res);
        }
        Poll::Ready(r)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
