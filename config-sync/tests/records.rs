//! The router's flow records passed on to callers holding the API token (the console in
//! the controller pod on Kubernetes).

use tokio_stream::StreamExt;
use van_proto::records::{WatchRecordsRequest, records_client::RecordsClient};
use van_testkit::router::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_callers_with_the_token_and_no_one_else() {
    let pki = Pki::new("ca");
    let router = start(base_config("r1", pki.profile("r1"))).await;
    let health = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = health.local_addr().unwrap();
    let token = "0123456789abcdef0123456789abcdef";
    let (_ready, ready_rx) = tokio::sync::watch::channel(true);
    tokio::spawn(van_config_sync::health::serve(
        health,
        ready_rx,
        Some(van_config_sync::records::RecordsProxy::service(
            router.admin.to_string(),
            token,
        )),
        std::future::pending(),
    ));
    let ch = van_proto::grpc::channel(&addr.to_string(), None)
        .await
        .unwrap();

    for bad in [None, Some("Bearer wrong")] {
        let mut req = tonic::Request::new(WatchRecordsRequest {});
        if let Some(v) = bad {
            req.metadata_mut()
                .insert("authorization", v.parse().unwrap());
        }
        let e = RecordsClient::new(ch.clone()).watch(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad:?}: {e}");
    }

    let mut req = tonic::Request::new(WatchRecordsRequest {});
    let bearer = format!("Bearer {token}");
    req.metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    let mut stream = RecordsClient::new(ch)
        .watch(req)
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
        .await
        .expect("a batch within seconds")
        .expect("stream open")
        .unwrap();
    assert_eq!(first.router_id, "r1");
    assert!(
        first.state.is_some(),
        "the first batch holds the router's state"
    );
}
