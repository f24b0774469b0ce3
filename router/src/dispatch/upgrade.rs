//! Protocol switches (WebSocket, h2c upgrade): the request goes to one server, and after
//! its 101 response the connection becomes one tunnelled flow, carried as a TCP connection
//! would be. The request travels as an HTTP flow whose bodies continue as the tunnel's
//! bytes; at the target it gets a connection of its own, never a pooled one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::StatusCode;
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tracing::Instrument;
use van_proto::wire::{HttpHead, ResetCode};

use super::Dispatch;
use super::http::{Failed, MAX_ATTEMPTS, RequestGuard, Response, Route, request_span};
use crate::flow::{FlowRecord, Outcome};
use crate::tcp::{ConnectorRt, ListenerRt};
use crate::web::codec::{self, Wire};
use crate::web::pool::SendError;
use crate::web::stream::{FlowRx, FlowTx, StreamHandle, tunnel};
use crate::web::{self, Counted, Dir, OnEnd};

impl Dispatch {
    /// A client asks to switch protocols: find one server that agrees, then tunnel.
    pub(super) async fn upgrade(
        self: &Arc<Self>,
        mut req: http::Request<Incoming>,
        listener: &Arc<ListenerRt>,
        client_addr: String,
    ) -> Response {
        let key = listener.cfg.routing_key.clone();
        let mut client = Some(hyper::upgrade::on(&mut req));
        let (mut parts, _) = req.into_parts();
        codec::strip_hop_by_hop_but_upgrade(&mut parts.headers);
        let head = codec::request_head(&parts, false);
        let label = format!("{} {} (upgrade)", head.method, head.path);
        let mut tried: Vec<String> = Vec::new();
        let mut tried_local: Vec<String> = Vec::new();
        for _ in 0..MAX_ATTEMPTS {
            let Some(route) = self.http_route(&key, &tried, &tried_local) else {
                let tried_any = !(tried.is_empty() && tried_local.is_empty());
                return self.no_route_answer(listener, tried_any, "no server took the upgrade");
            };
            let id = self.rng.u64();
            let r = match route {
                Route::Local => {
                    let span = request_span(id, &key, "local", &self.me.id, &self.me.id, &head);
                    self.local_upgrade(
                        id,
                        &head,
                        &label,
                        &client_addr,
                        &key,
                        &mut tried_local,
                        &mut client,
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
                        .remote_upgrade(
                            id,
                            &head,
                            &label,
                            &client_addr,
                            &key,
                            &dest,
                            dest_field,
                            conn,
                            &mut client,
                        )
                        .instrument(span)
                        .await;
                    tried.push(dest);
                    r
                }
            };
            match r {
                Ok(resp) => return resp,
                // Nothing reached a server yet: another one may take it.
                Err(Failed::NotSent(_)) => {}
                Err(Failed::BeforeResponse(e) | Failed::Answer(_, e)) => {
                    return self.router_answer(
                        listener,
                        StatusCode::BAD_GATEWAY,
                        format!("address {key:?}: {e}"),
                    );
                }
                Err(Failed::Timeout) => {
                    return self.router_answer(
                        listener,
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("address {key:?}: no response"),
                    );
                }
            }
        }
        self.router_answer(
            listener,
            StatusCode::BAD_GATEWAY,
            format!("address {key:?}: no server took the upgrade"),
        )
    }

    #[allow(clippy::too_many_arguments)]
    async fn local_upgrade(
        self: &Arc<Self>,
        id: u64,
        head: &HttpHead,
        label: &str,
        client_addr: &str,
        key: &str,
        tried_local: &mut Vec<String>,
        client: &mut Option<OnUpgrade>,
    ) -> Result<Response, Failed> {
        let Some(connector) = self.connectors.pick_except(key, tried_local) else {
            return Err(Failed::NotSent(format!("no local connector for {key:?}")));
        };
        tried_local.push(connector.cfg.name.clone());
        let rec = self.register_local(id, key, label, client_addr, &connector);
        let guard = self.request_guard(rec.clone(), Some(connector.clone()), &self.me.id);
        let resp = match self.target_upgrade(&connector, head.clone()).await {
            Ok(r) => r,
            Err(e) => {
                let (outcome, failed) = e;
                guard.finish(outcome);
                return Err(failed);
            }
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(self.refused_upgrade(resp, rec, guard, key, head, self.me.site.clone()));
        }
        let (server, resp) = switch(resp);
        let client = client.take();
        tokio::spawn(
            async move {
                let outcome = match (upgraded(client).await, upgraded(server).await) {
                    (Ok(c), Ok(s)) => {
                        let (mut c, mut s) = (TokioIo::new(c), TokioIo::new(s));
                        match tokio::io::copy_bidirectional(&mut c, &mut s).await {
                            Ok((out, inb)) => {
                                rec.bytes_out.fetch_add(out, Ordering::Relaxed);
                                rec.bytes_in.fetch_add(inb, Ordering::Relaxed);
                                Outcome::Closed
                            }
                            Err(e) => Outcome::SocketError(e),
                        }
                    }
                    (Err(o), _) | (_, Err(o)) => o,
                };
                guard.finish(outcome);
            }
            .in_current_span(),
        );
        Ok(resp)
    }

    #[allow(clippy::too_many_arguments)]
    async fn remote_upgrade(
        self: &Arc<Self>,
        id: u64,
        head: &HttpHead,
        label: &str,
        client_addr: &str,
        key: &str,
        dest: &str,
        dest_field: String,
        conn: Arc<crate::mux::DataConn>,
        client: &mut Option<OnUpgrade>,
    ) -> Result<Response, Failed> {
        let (mut tx, mut rx, rec, mut guard) =
            self.open_http_flow(id, key, label, client_addr, dest, dest_field, conn)?;
        let started = Instant::now();
        if tx.send_head(head).await.is_err() {
            guard.finish(Outcome::LinkLost(
                "stream closed before the request was sent".into(),
            ));
            return Err(Failed::NotSent(format!("the flow toward {dest} closed")));
        }
        let rhead = match rx.head().await {
            Ok(h) => h,
            Err(e) => {
                let failed = match &e {
                    crate::web::stream::FlowError::Reset(
                        ResetCode::ConnectFailed
                        | ResetCode::NoConnector
                        | ResetCode::Unreachable
                        | ResetCode::WrongProtocol,
                        r,
                    ) => Failed::NotSent(r.clone()),
                    other => Failed::BeforeResponse(other.to_string()),
                };
                guard.finish(Outcome::ResetByPeer(ResetCode::Aborted, e.to_string()));
                return Err(failed);
            }
        };
        let status = rhead.status;
        let no_body = rhead.no_body;
        let dest_site = self
            .table()
            .nodes
            .get(dest)
            .map(|n| n.site.clone())
            .unwrap_or_default();
        if status != u32::from(StatusCode::SWITCHING_PROTOCOLS.as_u16()) {
            // Refused: an ordinary response, and our side of the flow ends.
            tx.finish();
            let body = if no_body {
                web::empty()
            } else {
                web::boxed(rx.into_body())
            };
            let resp = codec::to_response(rhead, body)
                .map_err(|e| Failed::Answer(StatusCode::BAD_GATEWAY, e.to_string()))?;
            let rk = self.request_key(key, head, resp.status(), dest_site);
            guard.answered(rk, started.elapsed(), resp.status());
            let end = OnEnd::new(move |r| guard.ended(r));
            return Ok(resp.map(|b| web::boxed(Counted::new(b, rec, Dir::In, Some(end)))));
        }
        let resp = codec::to_response(rhead, web::empty())
            .map_err(|e| Failed::Answer(StatusCode::BAD_GATEWAY, e.to_string()))?;
        let rk = self.request_key(key, head, resp.status(), dest_site);
        guard.answered(rk, started.elapsed(), resp.status());
        let client = client.take();
        tokio::spawn(
            async move { guard.finish(tunnel_after(client, tx, rx).await) }.in_current_span(),
        );
        Ok(resp)
    }

    /// The egress side: send the upgrade request to one target, then tunnel.
    pub(super) async fn egress_upgrade(
        self: &Arc<Self>,
        h: Arc<StreamHandle>,
        rx: FlowRx,
        connector: Arc<ConnectorRt>,
        head: HttpHead,
        rec: &Arc<FlowRecord>,
    ) -> (Arc<ConnectorRt>, Outcome) {
        let resp = match self.target_upgrade(&connector, head).await {
            Ok(r) => r,
            Err((outcome, failed)) => {
                let (code, reason) = match failed {
                    Failed::NotSent(r) => (ResetCode::ConnectFailed, r),
                    Failed::BeforeResponse(r) | Failed::Answer(_, r) => (ResetCode::Aborted, r),
                    Failed::Timeout => (ResetCode::Aborted, "timed out".into()),
                };
                h.reset(code, reason);
                return (connector, outcome);
            }
        };
        connector.requests.fetch_add(1, Ordering::Relaxed);
        let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let (server, resp) = if switched {
            switch(resp)
        } else {
            (None, resp.map(web::boxed))
        };
        let (mut parts, body) = resp.into_parts();
        if !switched {
            codec::strip_hop_by_hop(&mut parts.headers);
        }
        let no_body = http_body::Body::is_end_stream(&body);
        let mut tx = FlowTx::new(h.clone());
        if tx
            .send_head(&codec::response_head(&parts, no_body && !switched))
            .await
            .is_err()
        {
            return (
                connector,
                Outcome::ResetByPeer(ResetCode::Aborted, "the client went away".into()),
            );
        }
        if !switched {
            let r = tx
                .send_all(Counted::new(body, rec.clone(), Dir::In, None))
                .await;
            drop(rx);
            return (
                connector,
                match r {
                    Ok(()) => Outcome::Closed,
                    Err(_) => {
                        Outcome::ResetByPeer(ResetCode::Aborted, "response not sent whole".into())
                    }
                },
            );
        }
        let outcome = tunnel_after(server, tx, rx).await;
        (connector, outcome)
    }

    /// Sends an upgrade request to `connector`'s target on a connection of its own.
    async fn target_upgrade(
        &self,
        connector: &ConnectorRt,
        head: HttpHead,
    ) -> Result<http::Response<Incoming>, (Outcome, Failed)> {
        let Some(pool) = connector.pool.clone() else {
            let e = format!("connector {} serves its address as tcp", connector.cfg.name);
            return Err((
                Outcome::ResetByPeer(ResetCode::WrongProtocol, e.clone()),
                Failed::NotSent(e),
            ));
        };
        let req = codec::to_request(
            head,
            web::empty(),
            Wire::Http1,
            connector.cfg.host_override.as_deref(),
        )
        .map_err(|e| {
            (
                Outcome::ResetByPeer(ResetCode::Protocol, e.to_string()),
                Failed::Answer(StatusCode::BAD_REQUEST, e.to_string()),
            )
        })?;
        let timeout = self.connect_timeout();
        match pool.send_upgrade(req, || connector.connect(timeout)).await {
            Ok(r) => Ok(r),
            Err(SendError::Connect(e, _)) => Err((
                Outcome::ResetByPeer(ResetCode::ConnectFailed, e.clone()),
                Failed::NotSent(e),
            )),
            Err(e @ SendError::Request(_)) => {
                let e = e.to_string();
                Err((
                    Outcome::ResetByPeer(ResetCode::Aborted, e.clone()),
                    Failed::BeforeResponse(e),
                ))
            }
        }
    }

    /// A server that answered an upgrade request without switching: its response goes back
    /// as any other.
    fn refused_upgrade(
        &self,
        resp: http::Response<Incoming>,
        rec: Arc<FlowRecord>,
        mut guard: RequestGuard,
        key: &str,
        head: &HttpHead,
        dest_site: String,
    ) -> Response {
        let (mut parts, body) = resp.into_parts();
        codec::strip_hop_by_hop(&mut parts.headers);
        let rk = self.request_key(key, head, parts.status, dest_site);
        guard.answered(rk, std::time::Duration::ZERO, parts.status);
        let end = OnEnd::new(move |r| guard.ended(r));
        http::Response::from_parts(
            parts,
            web::boxed(Counted::new(body, rec, Dir::In, Some(end))),
        )
    }
}

/// Splits a 101 response into the server's side of the switch and the response to pass
/// on (its `Connection` and `Upgrade` kept).
fn switch(mut resp: http::Response<Incoming>) -> (Option<OnUpgrade>, http::Response<web::AnyBody>) {
    let server = Some(hyper::upgrade::on(&mut resp));
    let (mut parts, _) = resp.into_parts();
    codec::strip_hop_by_hop_but_upgrade(&mut parts.headers);
    (server, http::Response::from_parts(parts, web::empty()))
}

/// The connection a 101 handed over.
async fn upgraded(switch: Option<OnUpgrade>) -> Result<Upgraded, Outcome> {
    match switch {
        Some(s) => s
            .await
            .map_err(|e| Outcome::ResetByPeer(ResetCode::Aborted, format!("upgrade failed: {e}"))),
        None => Err(Outcome::ResetByPeer(
            ResetCode::Aborted,
            "no connection to upgrade".into(),
        )),
    }
}

/// Waits for the switch, then carries the connection over the flow until both ends close.
async fn tunnel_after(switch: Option<OnUpgrade>, tx: FlowTx, rx: FlowRx) -> Outcome {
    match upgraded(switch).await {
        Ok(io) => match tunnel(TokioIo::new(io), tx, rx).await {
            Ok(()) => Outcome::Closed,
            Err(e) => Outcome::ResetByPeer(ResetCode::Aborted, e),
        },
        Err(o) => o,
    }
}
