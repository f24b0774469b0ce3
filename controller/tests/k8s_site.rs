//! The controller's Kubernetes platform as it runs in its pod — site opened from the
//! `skupper-site` ConfigMap, reflectors, reconcilers, status ConfigMap, TLS Secret — against
//! a stateful stand-in for the API server (van_testkit's `fake_kube_api.py`: real HTTP, real
//! watches). Only the listeners differ from the pod: port 0 on 127.0.0.1 instead of 8080 and
//! 8081.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use van_controller::k8s::platform;
use van_proto::controller as pb;
use van_testkit::eventually;
use van_testkit::kube::FakeApi;

/// The services the status ConfigMap lists.
async fn reported_services(client: &kube::Client) -> Option<Vec<pb::Service>> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), "west")
        .get_opt("skupper-network-status")
        .await
        .ok()??;
    let list: pb::ServiceList = serde_json::from_str(cm.data?.get("services")?).ok()?;
    Some(list.services)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_runs_against_the_api_server() {
    let api = FakeApi::start();
    api.put(
        "configmaps",
        "skupper-site",
        serde_json::json!({"data": {"name": "west", "ingress": "loadbalancer"}}),
    )
    .await;
    // The router Service with its load balancer's address: tokens must carry it.
    api.put(
        "services",
        "skupper-router",
        serde_json::json!({
            "spec": {"type": "LoadBalancer", "ports": [
                {"name": "inter-router", "port": 55671},
                {"name": "edge", "port": 45671},
                {"name": "claims", "port": 8081}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.9"}]}},
        }),
    )
    .await;
    let client = api.client().await;

    let (c, owner) = platform::open_site(&client, "west").await.unwrap();
    assert_eq!(c.cfg.ingress_host, "127.0.0.9");
    let site_uid = Api::<ConfigMap>::namespaced(client.clone(), "west")
        .get("skupper-site")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    assert_eq!(owner.uid, site_uid);
    assert_eq!(
        c.cfg.id,
        site_uid.replace('-', ""),
        "the ConfigMap's UID is the site id"
    );

    let sockets = van_controller::Sockets {
        api: van_controller::ApiBind::Tcp(
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ),
        claims: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
        api_token: Some(van_controller::api::ApiToken::new("0123456789abcdef-token").unwrap()),
    };
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let served = tokio::spawn(platform::serve_site(
        client.clone(),
        "west".into(),
        c.clone(),
        owner,
        sockets,
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));

    // The state, and the router's TLS material, in Secrets owned by the site.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "west");
    let state = eventually("the state Secret", async || {
        secrets.get_opt("skupper-site-state").await.ok()?
    })
    .await;
    assert_eq!(state.metadata.owner_references.unwrap()[0].uid, site_uid);
    let tls = eventually("the router's TLS Secret", async || {
        secrets.get_opt("skupper-router-tls").await.ok()?
    })
    .await;
    let keys: Vec<String> = tls.data.unwrap().into_keys().collect();
    assert!(
        keys.contains(&"site-server.tls.key".to_string()),
        "{keys:?}"
    );

    // A Service annotated by the user becomes a service of the site, shown in the status.
    let backend = |annotations: serde_json::Value| {
        serde_json::json!({
            "metadata": {"annotations": annotations},
            "spec": {"selector": {"app": "backend"}, "ports": [{"port": 8080}]},
        })
    };
    api.put(
        "services",
        "backend",
        backend(serde_json::json!({"skupper.io/proxy": "http"})),
    )
    .await;
    let services = eventually("backend in the status ConfigMap", async || {
        let s = reported_services(&client).await?;
        s.iter()
            .any(|s| s.address == "backend" && s.local)
            .then_some(s)
    })
    .await;
    let b = services.iter().find(|s| s.address == "backend").unwrap();
    assert_eq!(b.ports, [8080]);
    assert_eq!(b.protocol, "http", "the annotation's protocol");
    assert_eq!(b.targets[0].host, "backend.west.svc");

    // Another site's service, heard over the network: a Service selecting the router pods.
    c.set_remote(van_controller::network::Remote::from([(
        "east-router".to_string(),
        van_controller::network::SiteRecord {
            id: "fedcba9876543210fedcba9876543210".into(),
            name: "east".into(),
            mode: "interior".into(),
            version: "0.1.0".into(),
            router_id: "east-router".into(),
            services: vec![van_controller::network::PublishedService {
                address: "reviews".into(),
                protocol: "tcp".into(),
                ports: vec![9080],
                created: 1,
                targets: 1,
            }],
            links: Vec::new(),
        },
    )]));
    let services_api: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(client.clone(), "west");
    let reviews = eventually("the reviews Service", async || {
        services_api.get_opt("reviews").await.ok()?
    })
    .await;
    let spec = reviews.spec.unwrap();
    assert_eq!(
        spec.selector.unwrap()["skupper.io/component"],
        "router",
        "backed by the router pods"
    );
    assert_eq!(spec.ports.unwrap()[0].port, 9080);
    assert_eq!(reviews.metadata.owner_references.unwrap()[0].uid, site_uid);

    // A service defined in skupper-services (what `skupper service create|bind` write):
    // served by a Service of the user's, called through a Service selecting the routers.
    api.put(
        "configmaps",
        "skupper-services",
        serde_json::json!({"data": {
            "db": r#"{"protocol": "http2", "ports": [5432], "targets": [{"service": "postgres"}]}"#,
            "broken": "{not json",
        }}),
    )
    .await;
    let db = eventually("db in the status ConfigMap", async || {
        let s = reported_services(&client).await?;
        s.into_iter().find(|s| s.address == "db" && s.local)
    })
    .await;
    assert_eq!(db.targets[0].host, "postgres.west.svc");
    assert_eq!(db.protocol, "http2");
    // The broken entry is told as an Event on the ConfigMap; the good one was used anyway.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "west");
    let ev = eventually("an Event for the broken entry", async || {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("InvalidDefinition"))
    })
    .await;
    assert_eq!(
        ev.regarding.unwrap().name.as_deref(),
        Some("skupper-services")
    );
    assert!(ev.note.unwrap_or_default().contains("broken"));
    let db_svc = eventually("the db Service", async || {
        services_api.get_opt("db").await.ok()?
    })
    .await;
    assert_eq!(
        db_svc.spec.unwrap().selector.unwrap()["skupper.io/component"],
        "router"
    );
    api.put(
        "configmaps",
        "skupper-services",
        serde_json::json!({"data": {}}),
    )
    .await;
    eventually("db withdrawn, its Service deleted", async || {
        let gone = reported_services(&client)
            .await?
            .iter()
            .all(|s| s.address != "db");
        (gone && services_api.get_opt("db").await.ok()?.is_none()).then_some(())
    })
    .await;

    // The kubectl-only token flow: a request Secret asking for a claim is filled in.
    api.put(
        "secrets",
        "for-east",
        serde_json::json!({"metadata": {
            "labels": {"skupper.io/type": "connection-token-request"},
            "annotations": {"skupper.io/token-type": "claim", "skupper.io/token-uses": "2"},
        }}),
    )
    .await;
    let filled = eventually("the token request filled in", async || {
        let s = secrets.get("for-east").await.ok()?;
        let ty = s.metadata.labels.as_ref()?.get("skupper.io/type")?.clone();
        (ty == "token-claim").then_some(s)
    })
    .await;
    let ann: BTreeMap<String, String> = filled.metadata.annotations.unwrap();
    assert!(
        ann["skupper.io/url"].starts_with("https://127.0.0.9:8081/"),
        "the claim URL carries the load balancer's address: {ann:?}"
    );

    // The annotation removed: the service is withdrawn.
    api.put("services", "backend", backend(serde_json::json!({})))
        .await;
    eventually("backend withdrawn from the status", async || {
        let s = reported_services(&client).await?;
        (!s.iter().any(|s| s.address == "backend")).then_some(())
    })
    .await;

    // Passes follow the reflectors' watches (the resync is 30 s away): no list per pass.
    let log = api.log().await;
    assert!(
        log.lines()
            .any(|l| l.starts_with("GET /api/v1/namespaces/west/services?")
                && l.contains("watch=true")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("GET /api/v1/namespaces/west/secrets?")
                && l.contains("watch=true")
                && l.contains("labelSelector=skupper.io%2Ftype")),
        "{log}"
    );
    let lists = log
        .lines()
        .filter(|l| {
            l.starts_with("GET /api/v1/namespaces/west/services?") && !l.contains("watch=true")
        })
        .count();
    assert_eq!(lists, 1, "one initial list of Services\n{log}");

    let _ = stop.send(true);
    served.await.unwrap().unwrap();
}
