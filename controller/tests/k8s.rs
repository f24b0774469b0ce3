//! The Kubernetes reconcilers against a scripted API server: a real `kube::Client` whose
//! HTTP exchanges are answered, and checked, by the test (kube-rs' tower-test pattern).
//! Each test states the exact requests a reconciliation must make, in order, and nothing else.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::client::Body;
use van_controller::Controller;
use van_controller::k8s::{self, MANAGED_BY, MANAGER, PROXY};
use van_controller::network::{PublishedService, Remote, SiteRecord};
use van_controller::site::{RouterMode, SiteState};
use van_testkit::site::{MemStore, kube_site};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock() -> (kube::Client, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(svc, "west"), handle)
}

async fn controller() -> Arc<Controller> {
    let cfg = kube_site("west", "0123456789abcdef0123456789abcdef");
    Controller::open(cfg, Arc::new(MemStore::default()))
        .await
        .unwrap()
}

/// East publishes `reviews:9080`, `db:5432` and `ratings:9080`.
fn east() -> Remote {
    let svc = |a: &str, p: u16| PublishedService {
        address: a.into(),
        protocol: "tcp".into(),
        ports: vec![p],
        created: 1,
        targets: 1,
    };
    Remote::from([(
        "east-router".to_string(),
        SiteRecord {
            id: "fedcba9876543210fedcba9876543210".into(),
            name: "east".into(),
            mode: "interior".into(),
            version: "0.1.0".into(),
            router_id: "east-router".into(),
            services: vec![svc("reviews", 9080), svc("db", 5432), svc("ratings", 9080)],
            links: Vec::new(),
        },
    )])
}

fn owner() -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "skupper-site".into(),
        uid: "site-uid-1".into(),
        controller: Some(true),
        ..Default::default()
    }
}

fn service(
    name: &str,
    port: i32,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> Service {
    let map = |kv: &[(&str, &str)]| {
        (!kv.is_empty()).then(|| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        })
    };
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("west".into()),
            labels: map(labels),
            annotations: map(annotations),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                port,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn list(items: Vec<Service>) -> Response<Body> {
    let v = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ServiceList",
        "metadata": {"resourceVersion": "1"},
        "items": items,
    });
    Response::new(Body::from(serde_json::to_vec(&v).unwrap()))
}

async fn body_json(req: Request<Body>) -> serde_json::Value {
    let bytes = req.into_body().collect_bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Expects a list of the namespace's Services and answers `items`.
async fn expect_list(h: &mut Handle, items: Vec<Service>) {
    let (req, send) = h.next_request().await.expect("a list request");
    assert_eq!(req.method(), Method::GET);
    assert_eq!(req.uri().path(), "/api/v1/namespaces/west/services");
    send.send_response(list(items));
}

/// Expects a server-side apply of Service `name`; returns what was applied.
async fn expect_apply(h: &mut Handle, name: &str) -> serde_json::Value {
    expect_ssa(h, &format!("/api/v1/namespaces/west/services/{name}")).await
}

/// Expects a server-side apply (field manager skupper-controller, forced) to `path`; answers
/// with the applied object and returns it.
async fn expect_ssa(h: &mut Handle, path: &str) -> serde_json::Value {
    let (req, send) = h.next_request().await.expect("an apply request");
    assert_eq!(req.method(), Method::PATCH, "{}", req.uri());
    assert_eq!(req.uri().path(), path);
    let q = req.uri().query().unwrap_or_default().to_string();
    assert!(
        q.contains("fieldManager=skupper-controller") && q.contains("force=true"),
        "{q}"
    );
    assert_eq!(
        req.headers()["content-type"],
        "application/apply-patch+yaml",
        "server-side apply"
    );
    let body = body_json(req).await;
    send.send_response(Response::new(Body::from(
        serde_json::to_vec(&body).unwrap(),
    )));
    body
}

async fn expect_delete(h: &mut Handle, name: &str) {
    let (req, send) = h.next_request().await.expect("a delete request");
    assert_eq!(req.method(), Method::DELETE);
    assert_eq!(
        req.uri().path(),
        format!("/api/v1/namespaces/west/services/{name}")
    );
    let status = serde_json::json!({"apiVersion": "v1", "kind": "Status", "status": "Success"});
    send.send_response(Response::new(Body::from(
        serde_json::to_vec(&status).unwrap(),
    )));
}

#[tokio::test]
async fn annotated_services_are_exposed_and_network_services_created_owned_and_repaired() {
    let c = controller().await;
    c.set_remote(east());
    let (client, mut h) = mock();
    let managed = [(MANAGED_BY, MANAGER)];
    let server = tokio::spawn(async move {
        expect_list(
            &mut h,
            vec![
                // The user's own Service, annotated: exposed, never modified.
                service("productpage", 9080, &[], &[(PROXY, "http")]),
                // Ours, for a service the network no longer has: deleted.
                service("old", 1234, &managed, &[]),
                // Ours, drifted (wrong port): repaired.
                service("db", 1111, &managed, &[]),
                // Not ours, with a network service's name: left alone.
                service("ratings", 9080, &[], &[]),
            ],
        )
        .await;
        expect_delete(&mut h, "old").await;
        let db = expect_apply(&mut h, "db").await;
        let reviews = expect_apply(&mut h, "reviews").await;
        (db, reviews, h)
    });
    let out = k8s::reconcile(client, "west", &c, &owner()).await.unwrap();
    let (db, reviews, _h) = server.await.unwrap();
    assert_eq!(out.deleted, ["old"]);
    assert_eq!(out.applied, ["db", "reviews"]);
    assert_eq!(out.clashes, ["ratings"]);
    assert!(out.exposed_changed);
    // What was applied: our label, the site as owner, the router pods, the service's ports.
    for (v, port) in [(&db, 5432), (&reviews, 9080)] {
        assert_eq!(v["metadata"]["labels"][MANAGED_BY], MANAGER);
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "site-uid-1");
        assert_eq!(v["spec"]["selector"]["skupper.io/component"], "router");
        assert_eq!(v["spec"]["ports"][0]["port"], port);
        assert_eq!(v["spec"]["ports"][0]["targetPort"], port);
    }
    // The annotated Service is now this site's service, targeting that Service.
    let state = c.state();
    let p = &state.services["productpage"];
    assert_eq!(p.ports, [9080]);
    assert_eq!(p.targets[0].host, "productpage.west.svc");
    assert_eq!(p.source, "service/productpage");
    assert!(
        c.services()
            .iter()
            .any(|s| s.address == "productpage" && s.local)
    );
}

#[tokio::test]
async fn a_removed_annotation_withdraws_the_service_and_a_settled_namespace_needs_no_writes() {
    let c = controller().await;
    c.set_remote(east());
    let settled = |annotated: bool| {
        let mut items = vec![
            k8s::network_service("db", &[5432], "west", &owner()),
            k8s::network_service("ratings", &[9080], "west", &owner()),
            k8s::network_service("reviews", &[9080], "west", &owner()),
        ];
        let ann: &[(&str, &str)] = if annotated {
            &[
                (PROXY, "tcp"),
                ("skupper.io/address", "pp"),
                ("skupper.io/port", "80:9080"),
            ]
        } else {
            &[]
        };
        items.push(service("productpage", 9080, &[], ann));
        items
    };
    // First pass: exposed as "pp" on port 80, targeting the Service's port 9080; nothing to write.
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        expect_list(&mut h, settled(true)).await;
        h
    });
    let out = k8s::reconcile(client, "west", &c, &owner()).await.unwrap();
    let mut h = server.await.unwrap();
    assert!(out.applied.is_empty() && out.deleted.is_empty(), "{out:?}");
    assert_eq!(c.state().services["pp"].ports, [80]);
    assert_eq!(c.state().services["pp"].targets[0].ports, [9080]);
    let more = tokio::time::timeout(std::time::Duration::from_millis(50), h.next_request()).await;
    assert!(!matches!(more, Ok(Some(_))), "no further requests");
    // Second pass: the annotation is gone, and so is the service.
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        expect_list(&mut h, settled(false)).await;
    });
    let out = k8s::reconcile(client, "west", &c, &owner()).await.unwrap();
    server.await.unwrap();
    assert!(out.exposed_changed);
    assert!(!c.state().services.contains_key("pp"));
}

#[tokio::test]
async fn bad_annotations_are_reported_and_nothing_else_changes() {
    let c = controller().await;
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        expect_list(
            &mut h,
            vec![
                service("a", 80, &[], &[(PROXY, "udp")]),
                service("b", 80, &[], &[(PROXY, "tcp"), ("skupper.io/port", "http")]),
                service("Bad_Name", 80, &[], &[(PROXY, "tcp")]),
            ],
        )
        .await;
    });
    let out = k8s::reconcile(client, "west", &c, &owner()).await.unwrap();
    server.await.unwrap();
    assert_eq!(out.invalid.len(), 3, "{:?}", out.invalid);
    assert!(out.invalid[0].contains("udp"), "{:?}", out.invalid);
    assert!(
        out.invalid[1].contains("skupper.io/port"),
        "{:?}",
        out.invalid
    );
    assert!(out.invalid[2].contains("address"), "{:?}", out.invalid);
    assert!(c.state().services.is_empty());
}

#[tokio::test]
async fn an_api_error_is_returned_for_a_retry() {
    let c = controller().await;
    let (client, mut h) = mock();
    tokio::spawn(async move {
        let (_, send) = h.next_request().await.unwrap();
        let status = serde_json::json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "message": "services is forbidden", "reason": "Forbidden", "code": 403
        });
        send.send_response(
            Response::builder()
                .status(403)
                .body(Body::from(serde_json::to_vec(&status).unwrap()))
                .unwrap(),
        );
    });
    let err = k8s::reconcile(client, "west", &c, &owner())
        .await
        .unwrap_err();
    let err = van_telemetry::Report(&err).to_string();
    assert!(err.contains("forbidden"), "{err}");
}

// --- tokens and links as Secrets ---

use k8s_openapi::api::core::v1::Secret;

fn secret_list(items: Vec<Secret>) -> Response<Body> {
    let v = serde_json::json!({
        "apiVersion": "v1", "kind": "SecretList",
        "metadata": {"resourceVersion": "1"}, "items": items,
    });
    Response::new(Body::from(serde_json::to_vec(&v).unwrap()))
}

async fn expect_secret_list(h: &mut Handle, items: Vec<Secret>) {
    let (req, send) = h.next_request().await.expect("a list request");
    assert_eq!(req.method(), Method::GET);
    assert_eq!(req.uri().path(), "/api/v1/namespaces/west/secrets");
    let q = req.uri().query().unwrap_or_default().to_string();
    assert!(q.contains("labelSelector=skupper.io%2Ftype"), "{q}");
    send.send_response(secret_list(items));
}

/// Expects a merge patch of Secret `name`; returns the patch.
async fn expect_secret_patch(h: &mut Handle, name: &str) -> serde_json::Value {
    let (req, send) = h.next_request().await.expect("a patch request");
    assert_eq!(req.method(), Method::PATCH);
    assert_eq!(
        req.uri().path(),
        format!("/api/v1/namespaces/west/secrets/{name}")
    );
    assert_eq!(
        req.headers()["content-type"],
        "application/merge-patch+json"
    );
    let body = body_json(req).await;
    // The patched Secret has a new resourceVersion: what the controller remembers it by.
    let echo = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "resourceVersion": "patched"}});
    send.send_response(Response::new(Body::from(
        serde_json::to_vec(&echo).unwrap(),
    )));
    body
}

fn labelled_secret(name: &str, ty: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("west".into()),
            labels: Some(BTreeMap::from([(
                "skupper.io/type".to_string(),
                ty.to_string(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A cert token issued by another site, as the Secret a user would apply.
async fn token_from_east(name: &str) -> Secret {
    let east_cfg = kube_site("east", "fedcba9876543210fedcba9876543210");
    let east = Controller::open(east_cfg, Arc::new(MemStore::default()))
        .await
        .unwrap();
    let (t, _) = east
        .create_token(van_proto::controller::CreateTokenRequest {
            name: name.into(),
            r#type: van_proto::controller::TokenType::Cert as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    serde_yaml_ng::from_str(&t.yaml).unwrap()
}

#[tokio::test]
async fn token_requests_are_filled_and_token_secrets_become_links() {
    let c = controller().await;
    let mut to_east = token_from_east("to-east").await;
    to_east
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(k8s::COST.into(), "5".into());
    let mut garbage = labelled_secret("broken", "connection-token");
    garbage.data = Some(BTreeMap::new());
    let (client, mut h) = mock();
    let items = vec![
        labelled_secret("for-north", "connection-token-request"),
        to_east.clone(),
        garbage,
    ];
    let server = tokio::spawn(async move {
        expect_secret_list(&mut h, items).await;
        let filled = expect_secret_patch(&mut h, "for-north").await;
        let broken = expect_secret_patch(&mut h, "broken").await;
        let linked = expect_secret_patch(&mut h, "to-east").await;
        (filled, broken, linked)
    });
    let out = k8s::reconcile_secrets(client, "west", &c, &mut Default::default())
        .await
        .unwrap();
    let (filled, broken, linked) = server.await.unwrap();
    assert_eq!(out.filled, ["for-north"]);
    assert_eq!(out.linked, ["to-east"]);
    assert_eq!(out.failed.len(), 1, "{:?}", out.failed);
    // The request became a cert token of this site: label, endpoints, certificate and key.
    assert_eq!(
        filled["metadata"]["labels"]["skupper.io/type"],
        "connection-token"
    );
    assert_eq!(
        filled["metadata"]["annotations"]["inter-router-host"],
        "west.example"
    );
    assert_eq!(
        filled["metadata"]["annotations"]["skupper.io/generated-by"],
        "0123456789abcdef0123456789abcdef"
    );
    for k in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(
            filled["data"][k].as_str().is_some_and(|v| !v.is_empty()),
            "{k}"
        );
    }
    // The broken one says why on the object; the good one says it is linked.
    let why = broken["metadata"]["annotations"][k8s::STATUS]
        .as_str()
        .unwrap();
    assert!(why.contains("data.ca.crt"), "{why}");
    assert_eq!(linked["metadata"]["annotations"][k8s::STATUS], "linked");
    let links = c.link_statuses();
    assert_eq!(links.len(), 1);
    assert_eq!(
        (links[0].name.as_str(), links[0].peer_site_name.as_str()),
        ("to-east", "east")
    );
    assert_eq!(links[0].cost, 5, "the cost annotation");

    // Next pass: the filled request (now a token of this very site) is not a link; the
    // Secret of the link is gone, so is the link.
    let mut now_token = labelled_secret("for-north", "connection-token");
    now_token.metadata.annotations =
        Some(serde_json::from_value(filled["metadata"]["annotations"].clone()).unwrap());
    now_token.data = Some(serde_json::from_value(filled["data"].clone()).unwrap());
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        expect_secret_list(&mut h, vec![now_token]).await;
        h
    });
    let out = k8s::reconcile_secrets(client, "west", &c, &mut Default::default())
        .await
        .unwrap();
    let mut h = server.await.unwrap();
    assert_eq!(out.unlinked, ["to-east"]);
    assert!(out.linked.is_empty() && out.filled.is_empty(), "{out:?}");
    let more = tokio::time::timeout(std::time::Duration::from_millis(50), h.next_request()).await;
    assert!(!matches!(more, Ok(Some(_))), "no further requests");
    assert!(c.link_statuses().is_empty());
}

// --- site options and state on Kubernetes ---

use k8s_openapi::api::core::v1::ConfigMap;
use van_controller::k8s::platform::{self, KubeStore};

#[test]
fn site_options_come_from_the_skupper_site_configmap() {
    let cm = |data: &[(&str, &str)]| ConfigMap {
        metadata: ObjectMeta {
            name: Some("skupper-site".into()),
            uid: Some("6d9c1a2e-0b1f-4c57-9d0e-3f2a1b4c5d6e".into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    let cfg = platform::site_config(&cm(&[]), "west").unwrap();
    assert_eq!(
        cfg.id, "6d9c1a2e0b1f4c579d0e3f2a1b4c5d6e",
        "the UID is the site id"
    );
    assert_eq!(cfg.name, "west");
    assert_eq!(cfg.mode, RouterMode::Interior);
    assert_eq!(cfg.ingress_host, "skupper-router.west.svc.cluster.local");
    let cfg = platform::site_config(
        &cm(&[
            ("name", "w1"),
            ("router-mode", "edge"),
            ("ingress-host", "w1.example"),
        ]),
        "west",
    )
    .unwrap();
    assert_eq!((cfg.name.as_str(), cfg.mode), ("w1", RouterMode::Edge));
    assert_eq!(cfg.ingress_host, "w1.example");
    let err = platform::site_config(
        &cm(&[("router-mode", "core"), ("name", "Bad_Name")]),
        "west",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("router-mode"), "{err}");
}

#[tokio::test]
async fn the_site_state_lives_in_an_owned_secret() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        // First start: no state yet.
        let (req, send) = h.next_request().await.unwrap();
        assert_eq!(req.method(), Method::GET);
        assert_eq!(
            req.uri().path(),
            "/api/v1/namespaces/west/secrets/skupper-site-state"
        );
        let status = serde_json::json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "reason": "NotFound", "code": 404, "message": "not found"
        });
        send.send_response(
            Response::builder()
                .status(404)
                .body(Body::from(serde_json::to_vec(&status).unwrap()))
                .unwrap(),
        );
        // The new CA is saved at once, with server-side apply.
        let (req, send) = h.next_request().await.unwrap();
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(
            req.uri().path(),
            "/api/v1/namespaces/west/secrets/skupper-site-state"
        );
        assert_eq!(
            req.headers()["content-type"],
            "application/apply-patch+yaml"
        );
        let body = body_json(req).await;
        send.send_response(Response::new(Body::from(
            serde_json::to_vec(&body).unwrap(),
        )));
        body
    });
    let store = Arc::new(KubeStore::new(client, "west", owner()));
    let cfg = kube_site("west", "0123456789abcdef0123456789abcdef");
    let c = Controller::open(cfg, store).await.unwrap();
    let saved = server.await.unwrap();
    assert_eq!(saved["metadata"]["ownerReferences"][0]["uid"], "site-uid-1");
    assert_eq!(saved["metadata"]["labels"][MANAGED_BY], MANAGER);
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD
        .decode(saved["data"]["state.yaml"].as_str().unwrap())
        .unwrap();
    let state: SiteState = serde_yaml_ng::from_slice(&text).unwrap();
    assert_eq!(
        state.certs,
        c.state().certs,
        "what was saved is what is in force"
    );
}

#[tokio::test]
async fn what_could_not_be_done_is_told_as_events_on_the_objects() {
    use kube::runtime::events::{Recorder, Reporter};
    let (client, mut h) = mock();
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "skupper-controller".into(),
            instance: None,
        },
    );
    let services = k8s::Outcome {
        clashes: vec!["ratings".into()],
        ..Default::default()
    };
    let secrets = k8s::SecretsOutcome {
        failed: vec![("broken".into(), "token: data.ca.crt: is missing".into())],
        ..Default::default()
    };
    let server = tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..2 {
            let (req, send) = h.next_request().await.unwrap();
            assert_eq!(req.method(), Method::POST);
            assert_eq!(
                req.uri().path(),
                "/apis/events.k8s.io/v1/namespaces/west/events"
            );
            let body = body_json(req).await;
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&body).unwrap(),
            )));
            got.push(body);
        }
        got
    });
    k8s::report_events(&recorder, "west", &services, &secrets)
        .await
        .unwrap();
    let got = server.await.unwrap();
    assert_eq!(got[0]["reason"], "ServiceNameTaken");
    assert_eq!(got[0]["type"], "Warning");
    assert_eq!(got[0]["regarding"]["kind"], "Service");
    assert_eq!(got[0]["regarding"]["name"], "ratings");
    assert_eq!(got[1]["reason"], "TokenNotUsed");
    assert_eq!(got[1]["regarding"]["name"], "broken");
    assert!(got[1]["note"].as_str().unwrap().contains("data.ca.crt"));
}

#[test]
fn tokens_carry_the_address_the_router_service_is_reachable_at() {
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};
    let cfg = kube_site("west", "0123456789abcdef0123456789abcdef");
    let port = |name: &str, port: i32, node: i32| ServicePort {
        name: Some(name.into()),
        port,
        node_port: Some(node),
        ..Default::default()
    };
    let mut svc = Service {
        spec: Some(ServiceSpec {
            ports: Some(vec![
                port("inter-router", 55671, 31001),
                port("edge", 45671, 31002),
                port("claims", 8081, 31003),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    // A load balancer without an address yet: wait.
    assert!(platform::ingress_of("loadbalancer", &svc, &cfg).is_none());
    svc.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some("203.0.113.7".into()),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    });
    let lb = platform::ingress_of("loadbalancer", &svc, &cfg).unwrap();
    assert_eq!(lb.ingress_host, "203.0.113.7");
    assert_eq!(lb.public_ports().inter_router, 55671);
    // NodePort: the node ports go into tokens; the pods keep listening on the standard ones.
    let np = platform::ingress_of("nodeport", &svc, &cfg).unwrap();
    assert_eq!(np.ingress_host, "west.example");
    assert_eq!(np.inter_router_port, 55671);
    assert_eq!(np.claims_port, 8081);
    let p = np.public_ports();
    assert_eq!((p.inter_router, p.edge, p.claims), (31001, 31002, 31003));
    // Ingress: one host per endpoint under ingress-host, all on 443 (TLS passthrough by SNI).
    let ing = platform::ingress_of("ingress", &svc, &cfg).unwrap();
    let h = ing.public_hosts();
    assert_eq!(
        (h.inter_router.as_str(), h.edge.as_str(), h.claims.as_str()),
        (
            "inter-router.west.example",
            "edge.west.example",
            "claims.west.example"
        )
    );
    let p = ing.public_ports();
    assert_eq!((p.inter_router, p.edge, p.claims), (443, 443, 443));
    assert_eq!(ing.inter_router_port, 55671, "the pods keep their ports");
    // Route and none keep what was configured (Routes are read apart: routes_of).
    assert_eq!(platform::ingress_of("route", &svc, &cfg).unwrap(), cfg);
    assert_eq!(platform::ingress_of("none", &svc, &cfg).unwrap(), cfg);
}

#[tokio::test]
async fn routes_give_each_endpoint_its_host_in_tokens_and_in_the_certificate() {
    let cfg = kube_site("west", "0123456789abcdef0123456789abcdef");
    let route = |endpoint: &str, spec_host: &str, admitted: Option<&str>| {
        let mut data = serde_json::json!({"spec": {"host": spec_host}});
        if let Some(a) = admitted {
            data["status"] = serde_json::json!({"ingress": [{"host": a}]});
        }
        kube::api::DynamicObject {
            types: None,
            metadata: ObjectMeta {
                name: Some(format!("skupper-{endpoint}")),
                ..Default::default()
            },
            data,
        }
    };
    // OpenShift has not picked the claims Route's host yet: wait.
    let pending = [
        route("inter-router", "", Some("ir-west.apps.example")),
        route("edge", "edge-west.apps.example", None),
        route("claims", "", None),
    ];
    assert!(platform::routes_of(&pending, &cfg).is_none());
    let routes = [
        route("inter-router", "", Some("ir-west.apps.example")),
        route("edge", "edge-west.apps.example", None),
        route("claims", "", Some("claims-west.apps.example")),
    ];
    let cfg = platform::routes_of(&routes, &cfg).unwrap();
    let c = Controller::open(cfg, Arc::new(MemStore::default()))
        .await
        .unwrap();
    let (claim, cert) = tokens_of(&c).await;
    assert!(
        claim.yaml.contains("https://claims-west.apps.example:443/"),
        "{}",
        claim.yaml
    );
    let t = van_controller::token::parse(&cert.yaml).unwrap();
    let van_controller::token::Token::Cert(t) = t else {
        panic!("a cert token")
    };
    assert_eq!(
        (t.inter_router_host.as_str(), t.inter_router_port),
        ("ir-west.apps.example", 443)
    );
    assert_eq!(
        (t.edge_host.as_str(), t.edge_port),
        ("edge-west.apps.example", 443)
    );
    // Other routers check the server certificate against the host they dialled.
    let hosts = c.state().certs.as_ref().unwrap().server_hosts.clone();
    for h in [
        "ir-west.apps.example",
        "edge-west.apps.example",
        "claims-west.apps.example",
    ] {
        assert!(hosts.iter().any(|x| x == h), "{h} not in {hosts:?}");
    }
}

#[tokio::test]
async fn a_nodeport_site_issues_tokens_with_node_ports() {
    let mut cfg = kube_site("west", "0123456789abcdef0123456789abcdef");
    cfg.advertised_ports = Some(van_controller::site::Ports {
        inter_router: 31001,
        edge: 31002,
        claims: 31003,
    });
    let c = Controller::open(cfg, Arc::new(MemStore::default()))
        .await
        .unwrap();
    let (claim, cert) = tokens_of(&c).await;
    assert!(
        claim.yaml.contains("https://west.example:31003/"),
        "{}",
        claim.yaml
    );
    assert!(
        cert.yaml.contains("inter-router-port: '31001'"),
        "{}",
        cert.yaml
    );
    assert!(cert.yaml.contains("edge-port: '31002'"), "{}", cert.yaml);
    // The router still listens on the standard ports in its pod.
    let d = c.desired().borrow().clone();
    let ports: Vec<u32> = d.link_listeners.iter().map(|l| l.port).collect();
    assert_eq!(ports, [55671, 45671]);
}

#[tokio::test]
async fn the_status_configmap_holds_the_api_views_and_is_owned_by_the_site() {
    use van_controller::k8s::status::{STATUS_CONFIGMAP, Snapshot, write};
    use van_proto::controller as pb;
    let c = controller().await;
    c.set_remote(east());
    let snap = Snapshot::of(&c);
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        expect_ssa(
            &mut h,
            &format!("/api/v1/namespaces/west/configmaps/{STATUS_CONFIGMAP}"),
        )
        .await
    });
    write(client, "west", &owner(), &snap, "2026-11-26T20:00:00Z")
        .await
        .unwrap();
    let body = server.await.unwrap();
    assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "site-uid-1");
    assert_eq!(body["metadata"]["labels"][MANAGED_BY], MANAGER);
    let data = &body["data"];
    assert_eq!(data["updated"], "2026-11-26T20:00:00Z");
    // What the CLI reads back: the API's own messages.
    let site: pb::SiteStatus = serde_json::from_str(data["site"].as_str().unwrap()).unwrap();
    assert_eq!(site.site_name, "west");
    let services: pb::ServiceList =
        serde_json::from_str(data["services"].as_str().unwrap()).unwrap();
    let mut addresses: Vec<_> = services
        .services
        .iter()
        .map(|s| s.address.as_str())
        .collect();
    addresses.sort();
    assert_eq!(addresses, ["db", "ratings", "reviews"]);
    let network: pb::Network = serde_json::from_str(data["network"].as_str().unwrap()).unwrap();
    assert!(
        network.sites.iter().any(|s| s.site_name == "east"),
        "{network:?}"
    );
    let _: pb::LinkList = serde_json::from_str(data["links"].as_str().unwrap()).unwrap();
}

fn annotated(mut s: Secret, annotations: &[(&str, &str)], version: &str) -> Secret {
    s.metadata.annotations = Some(
        annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    s.metadata.resource_version = Some(version.into());
    s
}

#[tokio::test]
async fn a_token_request_can_ask_for_a_claim_and_bad_annotations_are_all_named() {
    let c = controller().await;
    let request = |name: &str, ann: &[(&str, &str)]| {
        annotated(labelled_secret(name, "connection-token-request"), ann, "1")
    };
    let items = vec![
        request(
            "claim-for-north",
            &[
                (k8s::TOKEN_TYPE, "claim"),
                (k8s::TOKEN_EXPIRY, "15m"),
                (k8s::TOKEN_USES, "2"),
            ],
        ),
        request(
            "muddled",
            &[
                (k8s::TOKEN_TYPE, "password"),
                (k8s::TOKEN_EXPIRY, "soon"),
                (k8s::TOKEN_USES, "-1"),
            ],
        ),
    ];
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        expect_secret_list(&mut h, items).await;
        let claim = expect_secret_patch(&mut h, "claim-for-north").await;
        let muddled = expect_secret_patch(&mut h, "muddled").await;
        (claim, muddled)
    });
    let out = k8s::reconcile_secrets(client, "west", &c, &mut Default::default())
        .await
        .unwrap();
    let (claim, muddled) = server.await.unwrap();
    assert_eq!(out.filled, ["claim-for-north"]);
    assert_eq!(
        claim["metadata"]["labels"]["skupper.io/type"],
        "token-claim"
    );
    let ann = &claim["metadata"]["annotations"];
    assert!(
        ann["skupper.io/url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")),
        "{ann}"
    );
    let why = muddled["metadata"]["annotations"][k8s::STATUS]
        .as_str()
        .unwrap();
    for k in [k8s::TOKEN_TYPE, k8s::TOKEN_EXPIRY, k8s::TOKEN_USES] {
        assert!(why.contains(k), "{k} not named in {why}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_token_secret_that_failed_waits_unless_it_changes() {
    let c = controller().await;
    let mut broken = labelled_secret("broken", "connection-token");
    broken.data = Some(BTreeMap::new());
    let mut retries = k8s::SecretRetries::default();

    // First pass: refused, and the reason written.
    let (client, mut h) = mock();
    let first = annotated(broken.clone(), &[], "1");
    let server = tokio::spawn(async move {
        expect_secret_list(&mut h, vec![first]).await;
        expect_secret_patch(&mut h, "broken").await
    });
    let out = k8s::reconcile_secrets(client, "west", &c, &mut retries)
        .await
        .unwrap();
    assert_eq!(out.failed.len(), 1);
    let why = server.await.unwrap()["metadata"]["annotations"][k8s::STATUS].clone();

    // Next pass, unchanged (the version our patch left): not tried, nothing written.
    let same = annotated(
        broken.clone(),
        &[(k8s::STATUS, why.as_str().unwrap())],
        "patched",
    );
    let (out, mut h) = pass_listing(&c, &mut retries, same.clone()).await;
    assert!(out.failed.is_empty(), "tried again too soon: {out:?}");
    let more = tokio::time::timeout(std::time::Duration::from_millis(50), h.next_request()).await;
    assert!(!matches!(more, Ok(Some(_))), "no further requests");

    // After the backoff it is tried again; the reason is unchanged, so nothing is written.
    tokio::time::advance(k8s::RETRY_MIN).await;
    let (out, _) = pass_listing(&c, &mut retries, same).await;
    assert_eq!(out.failed.len(), 1, "retried after the backoff");

    // The user edits the Secret: tried at once (the backoff has doubled meanwhile).
    let edited = annotated(broken, &[(k8s::STATUS, why.as_str().unwrap())], "edited");
    let (out, _) = pass_listing(&c, &mut retries, edited).await;
    assert_eq!(out.failed.len(), 1, "an edited Secret is tried at once");
}

/// One pass over the token Secrets whose list holds `secret` and which writes nothing;
/// returns the outcome and the API handle (to check no other request follows).
async fn pass_listing(
    c: &Controller,
    retries: &mut k8s::SecretRetries,
    secret: Secret,
) -> (k8s::SecretsOutcome, Handle) {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        expect_secret_list(&mut h, vec![secret]).await;
        h
    });
    let out = k8s::reconcile_secrets(client, "west", c, retries)
        .await
        .unwrap();
    (out, server.await.unwrap())
}

#[tokio::test]
async fn the_routers_tls_material_is_written_to_an_owned_secret() {
    let c = controller().await;
    let data = van_controller::desired::tls_secret_data(&c.desired().borrow());
    let [ca, cert, key] = van_controller::desired::tls_secret_keys("site-server");
    assert!(
        data[&key].contains("PRIVATE KEY"),
        "the server key is there"
    );
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        expect_ssa(
            &mut h,
            &format!(
                "/api/v1/namespaces/west/secrets/{}",
                platform::ROUTER_TLS_SECRET
            ),
        )
        .await
    });
    platform::write_router_tls(client, "west", &owner(), &data)
        .await
        .unwrap();
    let body = server.await.unwrap();
    assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "site-uid-1");
    assert_eq!(body["type"], "Opaque");
    let secret: Secret = serde_json::from_value(body).unwrap();
    let got = secret.data.unwrap();
    for k in [&ca, &cert, &key] {
        assert_eq!(
            String::from_utf8(got[k].0.clone()).unwrap(),
            data[k],
            "{k} as the controller has it"
        );
    }
}

/// A claim token and a cert token of `c`, with the defaults.
async fn tokens_of(c: &Controller) -> (van_proto::controller::Token, van_proto::controller::Token) {
    let (claim, _) = c
        .create_token(van_proto::controller::CreateTokenRequest::default())
        .await
        .unwrap();
    let (cert, _) = c
        .create_token(van_proto::controller::CreateTokenRequest {
            r#type: van_proto::controller::TokenType::Cert as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    (claim, cert)
}

#[test]
fn services_defined_in_the_configmap_are_read_and_bad_entries_named() {
    let cm = ConfigMap {
        data: Some(BTreeMap::from([
            (
                "db".to_string(),
                r#"{"ports": [5432], "targets": [{"service": "postgres"}]}"#.to_string(),
            ),
            ("api".to_string(), r#"{"protocol": "http", "ports": [8080, 9090]}"#.to_string()),
            ("broken".to_string(), "{not json".to_string()),
            (
                "muddled".to_string(),
                r#"{"protocol": "udp", "ports": [80], "targets": [{"service": "x", "ports": [1, 2]}]}"#
                    .to_string(),
            ),
        ])),
        ..Default::default()
    };
    let (defined, invalid) = k8s::definitions(&cm, "west");
    let by: BTreeMap<&str, &k8s::Exposure> =
        defined.iter().map(|e| (e.address.as_str(), e)).collect();
    assert_eq!(by.len(), 2, "{defined:?}");
    assert_eq!(by["db"].targets[0].host, "postgres.west.svc");
    assert_eq!(
        by["db"].targets[0].ports,
        [5432],
        "target ports default to the service's"
    );
    assert!(
        by["api"].targets.is_empty(),
        "defined here, served elsewhere"
    );
    assert_eq!(by["api"].ports, [8080, 9090]);
    let all = invalid.join("\n");
    assert!(all.contains("skupper-services broken"), "{all}");
    assert!(all.contains("\"udp\" is not tcp"), "{all}");
    assert!(all.contains("2 ports for 1 service ports"), "{all}");
}
