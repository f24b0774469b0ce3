//! The shared gRPC serving: both reflection versions and health answer on TCP and on a unix
//! socket, through channels built by `grpc::channel` and `grpc::lazy_channel`.

use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use van_proto::grpc;

/// Lists services with reflection v1alpha (what grpcurl 1.8 speaks) and v1.
async fn list_services(ch: Channel) -> (Vec<String>, Vec<String>) {
    use tonic_reflection::pb::{v1, v1alpha};
    let alpha = {
        use v1alpha::server_reflection_client::ServerReflectionClient;
        use v1alpha::server_reflection_request::MessageRequest;
        use v1alpha::server_reflection_response::MessageResponse;
        let req = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut resp = ServerReflectionClient::new(ch.clone())
            .server_reflection_info(tokio_stream::iter([req]))
            .await
            .expect("v1alpha reflection answers")
            .into_inner();
        match resp.message().await.unwrap().unwrap().message_response {
            Some(MessageResponse::ListServicesResponse(l)) => {
                l.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("v1alpha: {other:?}"),
        }
    };
    let v1 = {
        use v1::server_reflection_client::ServerReflectionClient;
        use v1::server_reflection_request::MessageRequest;
        use v1::server_reflection_response::MessageResponse;
        let req = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut resp = ServerReflectionClient::new(ch)
            .server_reflection_info(tokio_stream::iter([req]))
            .await
            .expect("v1 reflection answers")
            .into_inner();
        match resp.message().await.unwrap().unwrap().message_response {
            Some(MessageResponse::ListServicesResponse(l)) => {
                l.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("v1: {other:?}"),
        }
    };
    (alpha, v1)
}

async fn health() -> HealthServer<impl Health> {
    grpc::health_for::<HealthServer<tonic_health::server::HealthService>>().await
}

async fn check(ch: Channel) {
    let (alpha, v1) = list_services(ch.clone()).await;
    // Exactly what this server answers: no API it does not serve.
    let mut want = vec![
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    want.sort();
    for mut list in [alpha, v1] {
        list.sort();
        assert_eq!(list, want);
    }
    let status = HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn reflection_in_both_versions_and_health_over_tcp_and_unix() {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap().to_string();
    let dir = std::env::temp_dir().join(format!("van-proto-grpc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("api.sock");
    let _ = std::fs::remove_file(&sock);
    let unix = tokio::net::UnixListener::bind(&sock).unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut servers = Vec::new();
    for bind in [grpc::Bind::Tcp(tcp), grpc::Bind::Unix(unix)] {
        let routes = grpc::with_reflection(tonic::service::Routes::new(health().await), &[]);
        servers.push(tokio::spawn(grpc::serve(
            routes,
            bind,
            until(stopped.clone()),
        )));
    }
    check(grpc::channel(&addr, None).await.unwrap()).await;
    check(grpc::lazy_channel(&format!("http://{addr}")).unwrap()).await;
    let unix_target = format!("unix:{}", sock.display());
    check(grpc::channel(&unix_target, None).await.unwrap()).await;
    check(grpc::lazy_channel(&unix_target).unwrap()).await;
    stop.send(true).unwrap();
    for s in servers {
        s.await.unwrap().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_unreachable_target_names_itself_and_its_cause_once() {
    // Bound but not listening: refused, and no other process can take the port meanwhile.
    let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    drop(s);
    let e = grpc::channel(&format!("unix:/nonexistent/{}", addr.port()), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/"), "{e}");
    assert!(
        !e.to_string().contains("No such file"),
        "the cause is not in the message: {e}"
    );
    let mut causes = 0;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cur {
        if c.to_string().contains("No such file") {
            causes += 1;
        }
        cur = c.source();
    }
    assert!(causes >= 1, "the OS error is in the chain");
}
