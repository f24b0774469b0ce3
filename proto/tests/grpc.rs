//! The shared gRPC serving: both reflection versions and health answer on TCP and on a unix
//! socket, through channels built by `grpc::channel` and `grpc::lazy_channel`.

use tonic::transport::Channel;
use tonic_health::pb::health_server::{Health, HealthServer};
use van_proto::grpc;
use van_testkit::grpc::{self as testkit, ServingStatus};

async fn health() -> HealthServer<impl Health> {
    grpc::health_for::<HealthServer<tonic_health::server::HealthService>>().await
}

async fn check(ch: Channel) {
    // Exactly what this server answers: no API it does not serve.
    testkit::assert_lists_exactly(ch.clone(), &[]).await;
    let status = testkit::health(ch, "").await.unwrap();
    assert_eq!(status, ServingStatus::Serving);
}

#[tokio::test]
async fn reflection_in_both_versions_and_health_over_tcp_and_unix() {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap().to_string();
    let dir = van_testkit::temp_dir("proto-grpc");
    let sock = dir.path().join("api.sock");
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
}

#[tokio::test]
async fn an_unreachable_target_names_itself_and_its_cause_once() {
    let e = grpc::channel("unix:/nonexistent/api.sock", None)
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
