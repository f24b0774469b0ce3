//! HTTP services: each request is a flow of its own.
//!
//! - ingress: hyper serves the client's connection (HTTP/1.1, or HTTP/2 with prior
//!   knowledge); every request picks a destination (`web::balance`) and goes there as an
//!   HTTP flow, or straight to a local connector's pool when the destination is us;
//! - egress: an HTTP flow a neighbour opened is sent to the target over the connector's
//!   pool, and the response goes back the same way.
//!
//! Errors the router answers itself: 503 when no server of the address is reachable, 502
//! when the chosen target refused or failed the request (after trying another target when
//! that is safe), 504 when the response is slower than `flow.request_timeout_ms`. Malformed
//! requests get 400 and oversized heads 431 from hyper.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tracing::{Instrument, debug};
use van_proto::records;
use van_proto::wire::{self, FlowProtocol, HttpHead, ResetCode};

use super::{Dispatch, FLOW_TTL, OpenGuard, flow_span};
use crate::config::{Mode, Protocol};
use crate::flow::{FlowRecord, Outcome};
use crate::metrics::{self, RequestDone, RequestKey};
use crate::mux::{DataConn, FlowInbound};
use crate::tcp::{ConnectorRt, ListenerRt};
use crate::web::codec;
use crate::web::pool::SendError;
use crate::web::stream::{FlowError, FlowRx, FlowTx, SendAllError, StreamHandle};
use crate::web::{self, AnyBody, Counted, Dir, OnEnd, balance};

/// Targets one request may be tried on before the client gets 502.
pub(super) const MAX_ATTEMPTS: usize = 8;
/// Largest request head hyper accepts from a client (HTTP/1.1 buffer, HTTP/2 header list).
const MAX_HEAD: usize = 64 * 1024;

pub(super) type Response = http::Response<AnyBody>;

/// Where one attempt of a request goes.
pub(super) enum Route {
    /// A connector on this router.
    Local,
    /// Over `conn` toward `dest`; `dest_field` is what the OPEN names (empty on an edge,
    /// whose interior picks the destination).
    Remote {
        dest: String,
        dest_field: String,
        conn: Arc<DataConn>,
    },
}

/// Why an attempt got no response.
pub(super) enum Failed {
    /// Nothing reached a server: another target may be tried.
    NotSent(String),
    /// The target failed the request before responding; retried only when it is safe.
    BeforeResponse(String),
    /// The response took too long.
    Timeout,
    /// The router's own error, with the status to answer.
    Answer(StatusCode, String),
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// One request's accounting; see `Dispatch::request_guard`.
pub(super) struct RequestGuard {
    dispatch: Arc<Dispatch>,
    rec: Arc<FlowRecord>,
    connector: Option<Arc<ConnectorRt>>,
    open: Option<OpenGuard>,
    /// Set once a response arrived: what the request metrics count.
    request: Option<(RequestKey, Duration)>,
    /// The response's status, once it arrived.
    status: u16,
    span: tracing::Span,
    done: bool,
}

impl RequestGuard {
    /// The response head arrived after `latency`.
    pub(super) fn answered(&mut self, key: RequestKey, latency: Duration, status: StatusCode) {
        self.request = Some((key, latency));
        self.status = status.as_u16();
    }

    /// The response body ended (`Ok`) or was abandoned.
    pub(super) fn ended(self, r: Result<(), String>) {
        self.finish(match r {
            Ok(()) => Outcome::Closed,
            Err(e) => Outcome::ResetByPeer(ResetCode::Aborted, e),
        });
    }

    pub(super) fn finish(mut self, outcome: Outcome) {
        self.finish_mut(outcome, false);
    }

    /// Finishes the flow; `abandoned` when the client went away before the response.
    fn finish_mut(&mut self, outcome: Outcome, abandoned: bool) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let dest = self.open.take().map(|o| o.dest.clone());
        let _e = self.span.enter();
        if let Some(c) = &self.connector {
            c.finish(&self.rec);
        }
        // One record per request: the attempt that was answered, or the one the client
        // abandoned (attempts that failed before a response are retried or answered by
        // the router, which records that).
        if self.dispatch.recorder.active() && (self.request.is_some() || abandoned) {
            self.dispatch.recorder.request(request_record(
                &self.rec,
                self.status,
                self.request.as_ref().map(|r| r.1),
                dest.as_deref().unwrap_or_default(),
                &outcome,
            ));
        }
        if let Some((key, latency)) = self.request.take() {
            self.dispatch.metrics.request(RequestDone {
                key,
                latency,
                bytes_out: self.rec.bytes_out.load(Ordering::Relaxed),
                bytes_in: self.rec.bytes_in.load(Ordering::Relaxed),
            });
        }
        self.dispatch.finish_flow(&self.rec, &outcome);
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.finish_mut(
            Outcome::ResetByPeer(
                ResetCode::Aborted,
                "the client went away before the response".into(),
            ),
            true,
        );
    }
}

/// The record of a request whose flow `rec` ended with `outcome`.
fn request_record(
    rec: &FlowRecord,
    status: u16,
    latency: Option<Duration>,
    dest: &str,
    outcome: &Outcome,
) -> records::RequestRecord {
    let (method, target) = rec.request.split_once(' ').unwrap_or(("", &rec.request));
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    records::RequestRecord {
        flow_id: rec.id,
        routing_key: rec.routing_key.clone(),
        method: method.into(),
        path: path.into(),
        status: u32::from(status),
        client_addr: rec.client_addr.clone(),
        dest_router: dest.into(),
        start_us: crate::records::unix_us(rec.started),
        latency_us: latency.map_or(0, |l| l.as_micros() as u64),
        duration_us: rec.started.elapsed().as_micros() as u64,
        bytes_out: rec.bytes_out.load(Ordering::Relaxed),
        bytes_in: rec.bytes_in.load(Ordering::Relaxed),
        error: match outcome {
            Outcome::Closed => String::new(),
            o => o.to_string(),
        },
        version: String::new(),
    }
}

/// Marks a response the router made itself, with why, for the request's record.
#[derive(Debug, Clone)]
pub(super) struct RouterAnswer(pub(super) String);

/// The span of one request at its ingress router: a flow span that continues the trace of
/// the request's `traceparent`, if it has one.
pub(super) fn request_span(
    id: u64,
    key: &str,
    role: &str,
    origin: &str,
    dest: &str,
    head: &HttpHead,
) -> tracing::Span {
    let span = flow_span(id, key, role, origin, dest);
    // No exporter and no debug logs: nothing would carry the trace, so skip the lookup.
    if span.is_disabled() {
        return span;
    }
    van_telemetry::continue_trace(&span, |name| {
        codec::block_get(&head.headers, name).and_then(|v| String::from_utf8(v.to_vec()).ok())
    });
    span
}

impl Dispatch {
    /// Serves one client connection of an HTTP listener.
    pub(super) async fn serve_http(self: Arc<Self>, client: TcpStream, listener: Arc<ListenerRt>) {
        let client_addr = client
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        listener.opened.fetch_add(1, Ordering::Relaxed);
        let me = self.clone();
        let l = listener.clone();
        let svc = hyper::service::service_fn(move |req| {
            let (me, l, addr) = (me.clone(), l.clone(), client_addr.clone());
            async move { Ok::<_, Infallible>(me.request(req, &l, addr).await) }
        });
        let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        b.http1()
            .max_buf_size(MAX_HEAD.max(8192))
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30));
        b.http2()
            .max_header_list_size(MAX_HEAD as u32)
            .initial_stream_window_size(1024 * 1024)
            .initial_connection_window_size(4 * 1024 * 1024)
            .max_concurrent_streams(1024);
        let b = if listener.cfg.protocol == Protocol::Http2 {
            b.http2_only()
        } else {
            b
        };
        let conn = b.serve_connection_with_upgrades(TokioIo::new(client), svc);
        tokio::pin!(conn);
        let deleted = listener.drop_flows.notified();
        tokio::pin!(deleted);
        deleted.as_mut().enable();
        let r = tokio::select! {
            r = conn.as_mut() => r,
            _ = deleted => Ok(()),
        };
        if let Err(e) = r {
            // Malformed or oversized requests; hyper has answered 400 or 431 already.
            if let Some(h) = e.downcast_ref::<hyper::Error>()
                && h.is_parse()
            {
                listener.request_errors.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .request_error(&listener.cfg.routing_key, "bad-request");
            }
            debug!(error = %e, "HTTP client connection ended with an error");
        }
        listener.closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Serves one request; one the router answers by itself is recorded here (those a
    /// server answered are recorded when their flow ends).
    async fn request(
        self: &Arc<Self>,
        req: http::Request<Incoming>,
        listener: &Arc<ListenerRt>,
        client_addr: String,
    ) -> Response {
        let seen = self.recorder.active().then(|| {
            (
                req.method().to_string(),
                req.uri().path().to_string(),
                client_addr.clone(),
                Instant::now(),
            )
        });
        let resp = self.route_request(req, listener, client_addr).await;
        if let Some((method, path, client_addr, started)) = seen
            && let Some(RouterAnswer(why)) = resp.extensions().get::<RouterAnswer>()
        {
            self.recorder.request(records::RequestRecord {
                flow_id: self.rng.u64(),
                routing_key: listener.cfg.routing_key.clone(),
                method,
                path,
                status: u32::from(resp.status().as_u16()),
                client_addr,
                start_us: crate::records::unix_us(started),
                latency_us: started.elapsed().as_micros() as u64,
                duration_us: started.elapsed().as_micros() as u64,
                error: why.clone(),
                ..Default::default()
            });
        }
        resp
    }

    /// Routes one request, trying another target when the first got nothing and a retry
    /// is safe.
    async fn route_request(
        self: &Arc<Self>,
        req: http::Request<Incoming>,
        listener: &Arc<ListenerRt>,
        client_addr: String,
    ) -> Response {
        listener.requests.fetch_add(1, Ordering::Relaxed);
        if codec::is_upgrade(req.headers()) {
            return self.upgrade(req, listener, client_addr).await;
        }
        let key = listener.cfg.routing_key.clone();
        let (mut parts, body) = req.into_parts();
        codec::strip_hop_by_hop(&mut parts.headers);
        let no_body = body.is_end_stream();
        let head = codec::request_head(&parts, no_body);
        let label = format!("{} {}", head.method, head.path);
        let mut body = (!no_body).then(|| web::boxed(body));
        let retry_safe = no_body && idempotent(&parts.method);
        let mut tried: Vec<String> = Vec::new();
        let mut tried_local: Vec<String> = Vec::new();
        let mut last = String::new();
        for _ in 0..MAX_ATTEMPTS {
            let Some(route) = self.http_route(&key, &tried, &tried_local) else {
                let tried_any = !(tried.is_empty() && tried_local.is_empty());
                return self.no_route_answer(listener, tried_any, &last);
            };
            let id = self.rng.u64();
            let attempt = match route {
                Route::Local => {
                    let span = request_span(id, &key, "local", &self.me.id, &self.me.id, &head);
                    self.local_request(
                        id,
                        &head,
                        &mut body,
                        &label,
                        &client_addr,
                        &key,
                        &mut tried_local,
                    )
                    .instrument(span)
                    .await
                }
                Route::Remote {
                    dest,
                    dest_field,
                    conn,
                } => {
                    let span = request_span(id, &key, "ingress", &self.me.id, &dest, &head);
                    let r = self
                        .remote_request(
                            id,
                            &head,
                            body.take(),
                            &label,
                            &client_addr,
                            &key,
                            &dest,
                            dest_field,
                            conn,
                        )
                        .instrument(span)
                        .await;
                    tried.push(dest);
                    r
                }
            };
            match attempt {
                Ok(resp) => return resp,
                Err(Failed::NotSent(e)) if no_body || body.is_some() => last = e,
                Err(Failed::BeforeResponse(e)) if retry_safe => last = e,
                Err(Failed::NotSent(e) | Failed::BeforeResponse(e)) => {
                    return self.router_answer(
                        listener,
                        StatusCode::BAD_GATEWAY,
                        format!("address {key:?}: {e}"),
                    );
                }
                Err(Failed::Timeout) => {
                    let t = self.flow_cfg.request_timeout_ms;
                    return self.router_answer(
                        listener,
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("address {key:?}: no response within {t} ms"),
                    );
                }
                Err(Failed::Answer(status, e)) => return self.router_answer(listener, status, e),
            }
        }
        self.router_answer(
            listener,
            StatusCode::BAD_GATEWAY,
            format!("address {key:?}: {MAX_ATTEMPTS} targets tried: {last}"),
        )
    }

    /// The answer when no destination is left: 503 if none was reachable at all, else 502
    /// saying why the last one failed.
    pub(super) fn no_route_answer(
        &self,
        listener: &ListenerRt,
        tried_any: bool,
        last: &str,
    ) -> Response {
        let key = &listener.cfg.routing_key;
        if tried_any {
            let msg = format!("address {key:?}: {last}");
            self.router_answer(listener, StatusCode::BAD_GATEWAY, msg)
        } else {
            let msg = format!("no reachable server for address {key:?}");
            self.router_answer(listener, StatusCode::SERVICE_UNAVAILABLE, msg)
        }
    }

    pub(super) fn router_answer(
        &self,
        listener: &ListenerRt,
        status: StatusCode,
        msg: String,
    ) -> Response {
        listener.request_errors.fetch_add(1, Ordering::Relaxed);
        let kind = match status {
            StatusCode::SERVICE_UNAVAILABLE => "no-server",
            StatusCode::GATEWAY_TIMEOUT => "timeout",
            StatusCode::BAD_REQUEST => "bad-request",
            _ => "bad-gateway",
        };
        self.metrics.request_error(&listener.cfg.routing_key, kind);
        debug!(status = status.as_u16(), error = %msg, "Answering a request with an error");
        if self.recorder.active() {
            let mut r = web::error_response(status, msg.clone());
            r.extensions_mut().insert(RouterAnswer(msg));
            return r;
        }
        web::error_response(status, msg)
    }

    /// The metric labels of a request of `key` answered with `status` by a server in
    /// `dest_site` (empty: the router answered).
    pub(super) fn request_key(
        &self,
        key: &str,
        head: &HttpHead,
        status: StatusCode,
        dest_site: String,
    ) -> RequestKey {
        let method = Method::from_bytes(head.method.as_bytes()).unwrap_or(Method::GET);
        RequestKey {
            address: key.to_string(),
            method: metrics::method_label(&method),
            code: metrics::status_class(status.as_u16()),
            source_site: self.me.site.clone(),
            dest_site,
        }
    }

    /// Where the next attempt of a request of `key` goes.
    pub(super) fn http_route(
        &self,
        key: &str,
        tried: &[String],
        tried_local: &[String],
    ) -> Option<Route> {
        let table = self.table();
        let dests = table.addresses.get(key)?;
        let dest = {
            let open = self.open_to.lock().expect("open_to lock");
            // Local connectors already tried count as the local destination tried.
            let mut skip = tried.to_vec();
            if !tried_local.is_empty() && self.connectors.count_except(key, tried_local) == 0 {
                skip.push(self.me.id.clone());
            }
            balance::choose(
                dests,
                key,
                |r| open.get(r).copied().unwrap_or(0),
                &self.latency,
                &skip,
                self.rng.unit(),
            )?
            .router
            .clone()
        };
        if dest == self.me.id {
            if self.connectors.count(key) > 0 {
                return Some(Route::Local);
            }
            // Served by an attached edge on our behalf. The destination stays this router
            // (as the table has it), so a failed attempt is not retried on the same edge.
            let e = self.edges.edge_for(key, "")?;
            return Some(Route::Remote {
                dest_field: e.peer.clone(),
                dest: self.me.id.clone(),
                conn: e.conn.clone(),
            });
        }
        let conn = table
            .next_hop(&dest)
            .and_then(|hop| self.neighbours.best(hop))?;
        let dest_field = if self.me.mode == Mode::Edge {
            String::new()
        } else {
            dest.clone()
        };
        Some(Route::Remote {
            dest,
            dest_field,
            conn,
        })
    }

    /// Sends a request to a connector on this router.
    #[allow(clippy::too_many_arguments)]
    async fn local_request(
        self: &Arc<Self>,
        id: u64,
        head: &HttpHead,
        body: &mut Option<AnyBody>,
        label: &str,
        client_addr: &str,
        key: &str,
        tried_local: &mut Vec<String>,
    ) -> Result<Response, Failed> {
        let Some(connector) = self.connectors.pick_except(key, tried_local) else {
            return Err(Failed::NotSent(format!("no local connector for {key:?}")));
        };
        let Some(pool) = connector.pool.clone() else {
            connector.active.fetch_sub(1, Ordering::Relaxed);
            tried_local.push(connector.cfg.name.clone());
            return Err(Failed::NotSent(format!(
                "connector {} serves {key:?} as tcp, not http",
                connector.cfg.name
            )));
        };
        let rec = self.register_local(id, key, label, client_addr, &connector);
        let mut guard = self.request_guard(rec.clone(), Some(connector.clone()), &self.me.id);
        let req_body = match body.take() {
            Some(b) => web::boxed(Counted::new(b, rec.clone(), Dir::Out, None)),
            None => web::empty(),
        };
        let req = codec::to_request(
            head.clone(),
            req_body,
            pool.wire(),
            connector.cfg.host_override.as_deref(),
        )
        .map_err(|e| Failed::Answer(StatusCode::BAD_REQUEST, e.to_string()))?;
        let started = Instant::now();
        let timeout = self.connect_timeout();
        let send = pool.send(req, || connector.connect(timeout));
        let r = match self.request_timeout() {
            Some(t) => tokio::time::timeout(t, send)
                .await
                .map_err(|_| Failed::Timeout),
            None => Ok(send.await),
        };
        let fail = |g: RequestGuard, outcome: Outcome| g.finish(outcome);
        match r {
            Err(f) => {
                fail(
                    guard,
                    Outcome::ResetByPeer(ResetCode::Aborted, "response timed out".into()),
                );
                Err(f)
            }
            Ok(Err(SendError::Connect(e, req))) => {
                if !head.no_body {
                    *body = Some(req.into_body());
                }
                tried_local.push(connector.cfg.name.clone());
                fail(
                    guard,
                    Outcome::ResetByPeer(ResetCode::ConnectFailed, e.clone()),
                );
                Err(Failed::NotSent(e))
            }
            Ok(Err(e @ SendError::Request(_))) => {
                let e = e.to_string();
                fail(guard, Outcome::ResetByPeer(ResetCode::Aborted, e.clone()));
                Err(Failed::BeforeResponse(e))
            }
            Ok(Ok(resp)) => {
                let took = started.elapsed();
                self.latency.observe(key, &self.me.id, took);
                connector.requests.fetch_add(1, Ordering::Relaxed);
                let (mut parts, rbody) = resp.into_parts();
                codec::strip_hop_by_hop(&mut parts.headers);
                let rk = self.request_key(key, head, parts.status, self.me.site.clone());
                guard.answered(rk, took, parts.status);
                let end = OnEnd::new(move |r| guard.ended(r));
                Ok(http::Response::from_parts(
                    parts,
                    web::boxed(Counted::new(rbody, rec, Dir::In, Some(end))),
                ))
            }
        }
    }

    pub(super) fn request_timeout(&self) -> Option<Duration> {
        (self.flow_cfg.request_timeout_ms > 0)
            .then(|| Duration::from_millis(self.flow_cfg.request_timeout_ms))
    }

    /// Accounts one request's flow: counted open toward its destination until it ends,
    /// then finished once, however it ends. Dropped unfinished (the client went away while
    /// the request waited), it finishes the flow as aborted.
    pub(super) fn request_guard(
        self: &Arc<Self>,
        rec: Arc<FlowRecord>,
        connector: Option<Arc<ConnectorRt>>,
        dest: &str,
    ) -> RequestGuard {
        RequestGuard {
            open: Some(self.count_open(dest)),
            dispatch: self.clone(),
            rec,
            connector,
            request: None,
            status: 0,
            span: tracing::Span::current(),
            done: false,
        }
    }

    /// Registers a request served by a connector on this router.
    pub(super) fn register_local(
        &self,
        id: u64,
        key: &str,
        label: &str,
        client_addr: &str,
        connector: &ConnectorRt,
    ) -> Arc<FlowRecord> {
        self.flows.register(
            FlowRecord::new(
                id,
                key.to_string(),
                "local",
                client_addr.to_string(),
                connector.target(),
                vec![self.me.id.clone()],
            )
            .http(label.to_string()),
        )
    }

    /// Opens an HTTP flow toward `dest` over `conn` and registers it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open_http_flow(
        self: &Arc<Self>,
        id: u64,
        key: &str,
        label: &str,
        client_addr: &str,
        dest: &str,
        dest_field: String,
        conn: Arc<DataConn>,
    ) -> Result<(FlowTx, FlowRx, Arc<FlowRecord>, RequestGuard), Failed> {
        let (inbound, rx) = FlowInbound::new();
        let Some(stream) = conn.open_local(inbound.clone()) else {
            return Err(Failed::NotSent(format!("the link to {} closed", conn.peer)));
        };
        conn.send(crate::wire::Frame::Open {
            stream,
            open: wire::FlowOpen {
                routing_key: key.to_string(),
                dest_router: dest_field,
                origin_router: self.me.id.clone(),
                flow_id: id,
                client_addr: client_addr.to_string(),
                ttl: FLOW_TTL,
                path: vec![self.me.id.clone()],
                protocol: FlowProtocol::FlowHttp as i32,
                traceparent: super::current_traceparent(),
            },
        });
        let rec = self.flows.register(
            FlowRecord::new(
                id,
                key.to_string(),
                "ingress",
                client_addr.to_string(),
                dest.to_string(),
                vec![self.me.id.clone(), conn.peer.clone()],
            )
            .http(label.to_string()),
        );
        let guard = self.request_guard(rec.clone(), None, dest);
        let h = StreamHandle::new(conn, stream, inbound);
        Ok((FlowTx::new(h.clone()), FlowRx::new(h, rx), rec, guard))
    }

    /// Sends a request over the network as an HTTP flow.
    #[allow(clippy::too_many_arguments)]
    async fn remote_request(
        self: &Arc<Self>,
        id: u64,
        head: &HttpHead,
        body: Option<AnyBody>,
        label: &str,
        client_addr: &str,
        key: &str,
        dest: &str,
        dest_field: String,
        conn: Arc<DataConn>,
    ) -> Result<Response, Failed> {
        let (mut tx, mut rx, rec, mut guard) =
            self.open_http_flow(id, key, label, client_addr, dest, dest_field, conn)?;
        let started = Instant::now();
        let fail = |g: RequestGuard, outcome: Outcome| g.finish(outcome);
        if tx.send_head(head).await.is_err() {
            fail(
                guard,
                Outcome::LinkLost("stream closed before the request was sent".into()),
            );
            return Err(Failed::NotSent(format!("the flow toward {dest} closed")));
        }
        match body {
            None => tx.finish(),
            Some(b) => {
                let b = Counted::new(b, rec.clone(), Dir::Out, None);
                tokio::spawn(
                    async move {
                        match tx.send_all(b).await {
                            Ok(()) | Err(SendAllError::Flow(_)) => {}
                            Err(SendAllError::Body(e)) => {
                                tx.handle()
                                    .reset(ResetCode::Aborted, format!("client: {e}"));
                            }
                        }
                    }
                    .in_current_span(),
                );
            }
        }
        let got = match self.request_timeout() {
            Some(t) => tokio::time::timeout(t, rx.head())
                .await
                .map_err(|_| Failed::Timeout),
            None => Ok(rx.head().await),
        };
        let rhead = match got {
            Err(f) => {
                // Dropping the halves resets the flow, which cancels the request upstream.
                fail(
                    guard,
                    Outcome::ResetByPeer(ResetCode::Aborted, "response timed out".into()),
                );
                return Err(f);
            }
            Ok(Err(e)) => {
                let failed = match &e {
                    FlowError::Reset(
                        ResetCode::ConnectFailed
                        | ResetCode::NoConnector
                        | ResetCode::Unreachable
                        | ResetCode::WrongProtocol
                        | ResetCode::TtlExpired,
                        r,
                    ) => Failed::NotSent(r.clone()),
                    FlowError::Reset(_, r) => Failed::BeforeResponse(r.clone()),
                    other => Failed::BeforeResponse(other.to_string()),
                };
                fail(
                    guard,
                    match e {
                        FlowError::Reset(c, r) => Outcome::ResetByPeer(c, r),
                        other => Outcome::LinkLost(other.to_string()),
                    },
                );
                return Err(failed);
            }
            Ok(Ok(h)) => h,
        };
        let took = started.elapsed();
        self.latency.observe(key, dest, took);
        let no_body = rhead.no_body;
        let body = if no_body {
            drop(rx);
            web::empty()
        } else {
            web::boxed(rx.into_body())
        };
        let resp = match codec::to_response(rhead, body) {
            Ok(r) => r,
            Err(e) => {
                fail(
                    guard,
                    Outcome::ResetByPeer(ResetCode::Protocol, e.to_string()),
                );
                return Err(Failed::Answer(
                    StatusCode::BAD_GATEWAY,
                    format!("address {key:?}: {e}"),
                ));
            }
        };
        let dest_site = self
            .table()
            .nodes
            .get(dest)
            .map(|n| n.site.clone())
            .unwrap_or_default();
        let rk = self.request_key(key, head, resp.status(), dest_site);
        guard.answered(rk, took, resp.status());
        let end = OnEnd::new(move |r| guard.ended(r));
        Ok(resp.map(|b| web::boxed(Counted::new(b, rec, Dir::In, Some(end)))))
    }

    // --- egress ---

    /// An HTTP flow for one of our connectors arrived on `conn`.
    pub(super) fn egress_http(
        self: &Arc<Self>,
        conn: &Arc<DataConn>,
        stream: u32,
        open: wire::FlowOpen,
    ) {
        let Some(connector) = self.connectors.pick(&open.routing_key) else {
            self.no_connector(conn, stream, open);
            return;
        };
        if connector.pool.is_none() {
            connector.active.fetch_sub(1, Ordering::Relaxed);
            conn.reset(
                stream,
                ResetCode::WrongProtocol,
                format!(
                    "connector {} on router {} serves {:?} as tcp; the listener sent HTTP",
                    connector.cfg.name, self.me.id, open.routing_key
                ),
            );
            return;
        }
        let Some((inbound, rx, rec)) = self.accept_egress(conn, stream, &open, &connector, true)
        else {
            return;
        };
        let span = flow_span(
            open.flow_id,
            &open.routing_key,
            "egress",
            &open.origin_router,
            &self.me.id,
        );
        super::continue_flow_trace(&span, &open);
        let h = StreamHandle::new(conn.clone(), stream, inbound);
        let me = self.clone();
        tokio::spawn(
            async move {
                let rx = FlowRx::new(h.clone(), rx);
                let (connector, outcome) = me
                    .serve_egress(h, rx, connector, &open.routing_key, &rec)
                    .await;
                connector.finish(&rec);
                me.finish_flow(&rec, &outcome);
            }
            .instrument(span),
        );
    }

    /// Sends the flow's request to the target and the response back; returns the connector
    /// that served it (another one when the first refused) and how it went.
    async fn serve_egress(
        self: &Arc<Self>,
        h: Arc<StreamHandle>,
        mut rx: FlowRx,
        mut connector: Arc<ConnectorRt>,
        key: &str,
        rec: &Arc<FlowRecord>,
    ) -> (Arc<ConnectorRt>, Outcome) {
        let head = match rx.head().await {
            Ok(h) => h,
            Err(e) => {
                return (
                    connector,
                    Outcome::ResetByPeer(ResetCode::Aborted, e.to_string()),
                );
            }
        };
        if codec::block_get(&head.headers, "upgrade").is_some() {
            return self.egress_upgrade(h, rx, connector, head, rec).await;
        }
        let mut body = if head.no_body {
            drop(rx);
            web::empty()
        } else {
            web::boxed(Counted::new(rx.into_body(), rec.clone(), Dir::Out, None))
        };
        let mut tried: Vec<String> = Vec::new();
        let timeout = self.connect_timeout();
        let resp = loop {
            let pool = connector.pool.clone().expect("HTTP connectors have a pool");
            let req = match codec::to_request(
                head.clone(),
                body,
                pool.wire(),
                connector.cfg.host_override.as_deref(),
            ) {
                Ok(r) => r,
                Err(e) => {
                    h.reset(ResetCode::Protocol, e.to_string());
                    return (
                        connector,
                        Outcome::ResetByPeer(ResetCode::Protocol, e.to_string()),
                    );
                }
            };
            let c = connector.clone();
            let send = pool.send(req, || c.connect(timeout));
            let r = tokio::select! {
                r = send => r,
                _ = h.inbound.gone() => {
                    return (connector, Outcome::ResetByPeer(ResetCode::Aborted, "the client cancelled the request".into()));
                }
            };
            match r {
                Ok(resp) => break resp,
                Err(SendError::Connect(e, req)) => {
                    tried.push(connector.cfg.name.clone());
                    match self.connectors.pick_except(key, &tried) {
                        Some(next) => {
                            connector.finish(rec);
                            connector = next;
                            body = req.into_body();
                        }
                        None => {
                            h.reset(ResetCode::ConnectFailed, e.clone());
                            return (connector, Outcome::ResetByPeer(ResetCode::ConnectFailed, e));
                        }
                    }
                }
                Err(e @ SendError::Request(_)) => {
                    let e = format!("{}: {e}", connector.target());
                    h.reset(ResetCode::Aborted, e.clone());
                    return (connector, Outcome::ResetByPeer(ResetCode::Aborted, e));
                }
            }
        };
        connector.requests.fetch_add(1, Ordering::Relaxed);
        *rec.server_addr.lock().expect("flow lock") = connector.target();
        let (mut parts, rbody) = resp.into_parts();
        codec::strip_hop_by_hop(&mut parts.headers);
        let no_body = http_body::Body::is_end_stream(&rbody);
        let mut tx = FlowTx::new(h.clone());
        if tx
            .send_head(&codec::response_head(&parts, no_body))
            .await
            .is_err()
        {
            return (
                connector,
                Outcome::ResetByPeer(
                    ResetCode::Aborted,
                    "the client cancelled the request".into(),
                ),
            );
        }
        if no_body {
            tx.finish();
            return (connector, Outcome::Closed);
        }
        let rbody = Counted::new(rbody, rec.clone(), Dir::In, None);
        let r = tokio::select! {
            r = tx.send_all(rbody) => r,
            _ = h.inbound.gone() => Err(SendAllError::Flow(FlowError::Ended("response end"))),
        };
        let outcome = match r {
            Ok(()) => Outcome::Closed,
            Err(SendAllError::Body(e)) => {
                let e = format!("{}: {e}", connector.target());
                h.reset(ResetCode::Aborted, e.clone());
                Outcome::ResetByPeer(ResetCode::Aborted, e)
            }
            Err(SendAllError::Flow(e)) => Outcome::ResetByPeer(
                ResetCode::Aborted,
                format!("the client cancelled the request ({e})"),
            ),
        };
        (connector, outcome)
    }
}
