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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_flow_is_exported_as_one_span_with_key_path_bytes_and_outcome() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector: SocketAddr = l.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );

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
}
