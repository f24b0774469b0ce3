//! config-sync's Secret watch against a scripted Kubernetes API (a real `kube::Client` over
//! kube-rs' tower-test mock): list by name, then changes and deletion from the watch.

use std::collections::BTreeMap;

use http::{Method, Request, Response};
use kube::client::Body;
use van_config_sync::k8s::KubeSecrets;
use van_config_sync::tls::{SecretData, SecretSource};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn secret(key_pem: &str, version: &str) -> serde_json::Value {
    let s = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("skupper-router-tls".into()),
            namespace: Some("west".into()),
            resource_version: Some(version.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "site-server.tls.key".to_string(),
            k8s_openapi::ByteString(key_pem.as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    serde_json::to_value(s).unwrap()
}

async fn expect(h: &mut Handle, watch: bool) -> tower_test::mock::SendResponse<Response<Body>> {
    let (req, send) = h.next_request().await.expect("a request");
    assert_eq!(req.method(), Method::GET);
    assert_eq!(req.uri().path(), "/api/v1/namespaces/west/secrets");
    let q = req.uri().query().unwrap_or_default().to_string();
    // Only the one Secret: RBAC may allow no other.
    assert!(
        q.contains("fieldSelector=metadata.name%3Dskupper-router-tls"),
        "{q}"
    );
    assert_eq!(q.contains("watch=true"), watch, "{q}");
    send
}

async fn until(rx: &mut tokio::sync::watch::Receiver<SecretData>, want: Option<&str>) {
    let want =
        want.map(|k| BTreeMap::from([("site-server.tls.key".to_string(), k.as_bytes().to_vec())]));
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        rx.wait_for(|d| *d == want),
    )
    .await
    .expect("the Secret's data in time")
    .unwrap();
}

#[tokio::test]
async fn the_tls_secret_is_listed_then_followed_until_deleted() {
    let (svc, mut h) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "west");
    let mut rx = KubeSecrets::new(client, "west").watch("skupper-router-tls");

    let list = serde_json::json!({
        "apiVersion": "v1", "kind": "SecretList", "metadata": {"resourceVersion": "10"},
        "items": [secret("KEY-1", "10")],
    });
    expect(&mut h, false)
        .await
        .send_response(Response::new(Body::from(
            serde_json::to_vec(&list).unwrap(),
        )));
    until(&mut rx, Some("KEY-1")).await;

    // A rotated key arrives through the watch.
    let modified = serde_json::json!({"type": "MODIFIED", "object": secret("KEY-2", "11")});
    let mut body = serde_json::to_vec(&modified).unwrap();
    body.push(b'\n');
    expect(&mut h, true)
        .await
        .send_response(Response::new(Body::from(body)));
    until(&mut rx, Some("KEY-2")).await;

    // The watch ends (as the API server ends them); the next one brings the deletion.
    let deleted = serde_json::json!({"type": "DELETED", "object": secret("KEY-2", "12")});
    let mut body = serde_json::to_vec(&deleted).unwrap();
    body.push(b'\n');
    expect(&mut h, true)
        .await
        .send_response(Response::new(Body::from(body)));
    until(&mut rx, None).await;
}
