//! Flow spans exported over OTLP to a collector the test runs.

use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::mpsc;
use van_testkit::router::process::*;
use van_testkit::router::*;

const ROUTER: &str = env!("CARGO_BIN_EXE_van-router");

struct Collector(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            other => Some(format!("{other:?}")),
        }
    })
}

/// An OTLP trace collector on a port of its own; what it receives comes out of the channel.
async fn collector() -> (
    SocketAddr,
    mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_flow_is_exported_as_one_span_with_key_path_bytes_and_outcome() {
    let (collector, mut rx) = collector().await;

    let dir = van_testkit::temp_dir("otlp");
    let pki = Pki::new("ca");
    let echo = echo_server().await;
    let b = spawn(
        ROUTER,
        dir.path(),
        &pki,
        "b",
        &format!(
            "tracing: {{otlp_endpoint: \"http://{collector}\"}}\n{}tcp_connectors:\n  - {{name: svc, host: 127.0.0.1, port: {}, routing_key: svc}}\n",
            link_listener_yaml(),
            echo.port()
        ),
    );
    let pb = b.link_port().await;
    let a = spawn(
        ROUTER,
        dir.path(),
        &pki,
        "a",
        &format!(
            "tracing: {{otlp_endpoint: \"http://{collector}\"}}\n{}tcp_listeners:\n  - {{name: svc, host: 127.0.0.1, port: 0, routing_key: svc}}\n",
            links_yaml(&[("a-b", pb, 1)])
        ),
    );
    wait_for(&a, "listener up", listener_up).await;
    let svc = a.listener_port("svc").await;
    let data = payload(12_345);
    assert!(echo_roundtrip(SocketAddr::from(([127, 0, 0, 1], svc)), &data).await == data);

    // Both routers export the flow's span: ingress at a, egress at b, one flow id.
    let mut spans: Vec<(String, Span)> = Vec::new();
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        while spans.len() < 2 {
            let req = rx.recv().await.unwrap();
            for rs in req.resource_spans {
                let router = rs
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|a| a.key == "van.router.id"))
                    .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                        Value::StringValue(s) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    for s in ss.spans {
                        assert_eq!(s.name, "flow", "only flow spans are exported");
                        spans.push((router.clone(), s));
                    }
                }
            }
        }
    })
    .await;
    assert!(got.is_ok(), "spans received: {}", spans.len());
    let ingress = &spans.iter().find(|(r, _)| r == "a").expect("span from a").1;
    let egress = &spans.iter().find(|(r, _)| r == "b").expect("span from b").1;
    for s in [ingress, egress] {
        assert_eq!(attr(s, "routing_key").as_deref(), Some("svc"));
        assert_eq!(attr(s, "outcome").as_deref(), Some("closed"));
        assert_eq!(attr(s, "bytes_out").as_deref(), Some("12345"));
        assert_eq!(attr(s, "bytes_in").as_deref(), Some("12345"));
    }
    assert_eq!(attr(ingress, "role").as_deref(), Some("ingress"));
    assert_eq!(attr(egress, "path").as_deref(), Some("a > b"));
    assert_eq!(attr(ingress, "flow_id"), attr(egress, "flow_id"));
    // One trace: the egress span is a child of the ingress span.
    assert_eq!(ingress.trace_id, egress.trace_id);
    assert_eq!(egress.parent_span_id, ingress.span_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_request_span_continues_the_callers_trace() {
    let (collector, mut rx) = collector().await;
    // An origin that answers 200 with an empty body to anything.
    let origin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = origin.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = origin.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let dir = van_testkit::temp_dir("otlp-http");
    let pki = Pki::new("ca");
    let a = spawn(
        ROUTER,
        dir.path(),
        &pki,
        "a",
        &format!(
            "tracing: {{otlp_endpoint: \"http://{collector}\"}}\n\
             tcp_listeners:\n  - {{name: svc, host: 127.0.0.1, port: 0, routing_key: svc, protocol: http}}\n\
             tcp_connectors:\n  - {{name: svc, host: 127.0.0.1, port: {}, routing_key: svc, protocol: http}}\n",
            target.port()
        ),
    );
    wait_for(&a, "listener up", listener_up).await;
    let port = a.listener_port("svc").await;
    let resp = van_testkit::eventually("the request answered", async || {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(
            b"GET /traced HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\
              traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n",
        )
        .await
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        out.starts_with("HTTP/1.1 200").then_some(out)
    })
    .await;
    assert!(resp.ends_with("ok"), "{resp}");
    let span = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let req = rx.recv().await.unwrap();
            for rs in req.resource_spans {
                for ss in rs.scope_spans {
                    if let Some(s) = ss.spans.into_iter().find(|s| s.name == "flow") {
                        return s;
                    }
                }
            }
        }
    })
    .await
    .expect("the request's span exported");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&span.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(attr(&span, "routing_key").as_deref(), Some("svc"));
    assert_eq!(attr(&span, "outcome").as_deref(), Some("closed"));
}
