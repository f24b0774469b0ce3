//! The CLI's kubernetes platform against a scripted API server: a real `kube::Client` whose
//! HTTP exchanges are answered, and checked, by the test (kube-rs' tower-test pattern, as in
//! controller/tests/k8s.rs). Each test states the requests a verb must make, in order.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use skupper::args::{
    ExposeArgs, InitArgs, LinkCreateArgs, LinkStatusArgs, OutputArgs, TokenCreateArgs, TokenType,
    UnexposeArgs,
};
use skupper::k8s::{self, manifests, site};
use skupper::output::Format;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Send = tower_test::mock::SendResponse<Response<Body>>;

fn mock() -> (kube::Client, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(svc, "west"), handle)
}

fn ok(v: Value) -> Response<Body> {
    Response::new(Body::from(serde_json::to_vec(&v).unwrap()))
}

fn status(code: u16, reason: &str, message: &str, kind: &str) -> Response<Body> {
    let v = json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code,
        "reason": reason, "message": message, "details": {"kind": kind},
    });
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .body(Body::from(serde_json::to_vec(&v).unwrap()))
        .unwrap()
}

fn not_found(plural: &str, name: &str) -> Response<Body> {
    status(
        404,
        "NotFound",
        &format!("{plural} \"{name}\" not found"),
        plural,
    )
}

async fn next(h: &mut Handle, method: Method, path: &str) -> (Request<Body>, Send) {
    let (req, send) = h.next_request().await.expect("a request");
    assert_eq!(req.method(), method, "{} {}", req.method(), req.uri());
    assert_eq!(req.uri().path(), path, "{} {}", req.method(), req.uri());
    (req, send)
}

async fn body(req: Request<Body>) -> Value {
    let bytes = req.into_body().collect_bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

const CM: &str = "/api/v1/namespaces/west/configmaps";
const SECRETS: &str = "/api/v1/namespaces/west/secrets";
const SERVICES: &str = "/api/v1/namespaces/west/services";

/// Answers the `skupper-site` lookup every verb starts with.
async fn site_exists(h: &mut Handle) {
    let (_, send) = next(h, Method::GET, &format!("{CM}/skupper-site")).await;
    send.send_response(ok(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "skupper-site", "uid": "u1"}, "data": {"name": "west"}})));
}

/// Runs `f` (a verb) on its own task; returns its result and what it printed.
macro_rules! spawn_verb {
    ($client:ident, |$c:ident, $out:ident| $body:expr) => {{
        let $c = $client.clone();
        tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::new();
            let $out: &mut (dyn std::io::Write + std::marker::Send) = &mut buf;
            let r = $body.await;
            (r, String::from_utf8(buf).unwrap())
        })
    }};
}

fn path_of(o: &Value) -> String {
    let api_version = o["apiVersion"].as_str().unwrap();
    let r = k8s::api_resource(api_version, o["kind"].as_str().unwrap()).unwrap();
    let base = if r.group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{api_version}")
    };
    format!(
        "{base}/namespaces/west/{}/{}",
        r.plural,
        o["metadata"]["name"].as_str().unwrap()
    )
}

fn assert_apply(req: &Request<Body>) {
    let q = req.uri().query().unwrap_or_default();
    assert!(
        q.contains("fieldManager=skupper-cli") && q.contains("force=true"),
        "{q}"
    );
    assert_eq!(
        req.headers()["content-type"],
        "application/apply-patch+yaml"
    );
}

#[tokio::test]
async fn init_applies_every_object_of_the_chart_and_waits() {
    let (client, mut h) = mock();
    let plan = site::plan(
        "west",
        &InitArgs {
            site_name: Some("west-site".into()),
            ingress: Some("route".into()),
            ingress_host: Some("sites.example.org".into()),
            router_mode: Some("edge".into()),
            image_registry: Some("registry.example.com/van".into()),
            image_tag: Some("1.2.3".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let expected = manifests::templates("route").unwrap();
    let random = manifests::random_keys(&expected);
    let task = spawn_verb!(client, |c, out| site::init(
        &c,
        "west",
        &plan,
        Duration::ZERO,
        out
    ));
    for t in &expected {
        let name = t["metadata"]["name"].as_str().unwrap();
        if t["kind"] == "Secret" && random.contains_key(name) {
            let (_, send) = next(&mut h, Method::GET, &path_of(t)).await;
            send.send_response(not_found("secrets", name));
        }
        let (req, send) = next(&mut h, Method::PATCH, &path_of(t)).await;
        assert_apply(&req);
        let applied = body(req).await;
        send.send_response(ok(applied.clone()));
        let text = applied.to_string();
        assert!(!text.contains("${"), "placeholder left in {text}");
        assert_eq!(applied["kind"], t["kind"]);
        assert_eq!(applied["metadata"]["namespace"], "west");
        assert_eq!(
            applied["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "skupper-cli"
        );
        match (applied["kind"].as_str().unwrap(), name) {
            ("ConfigMap", "skupper-site") => {
                assert_eq!(applied["data"]["name"], "west-site");
                assert_eq!(applied["data"]["router-mode"], "edge");
                assert_eq!(applied["data"]["ingress"], "route");
                assert_eq!(applied["data"]["ingress-host"], "sites.example.org");
            }
            ("Deployment", "skupper-router") => {
                let c = &applied["spec"]["template"]["spec"]["containers"][0];
                assert_eq!(c["image"], "registry.example.com/van/van-router:1.2.3");
                let sum = &applied["spec"]["template"]["metadata"]["annotations"]["checksum/router-config"];
                assert_eq!(sum.as_str().unwrap().len(), 64, "{sum}");
            }
            ("Route", "skupper-edge") => {
                assert_eq!(applied["spec"]["host"], "edge.sites.example.org")
            }
            ("Secret", _) => {
                for k in random.get(name).into_iter().flatten() {
                    assert!(applied["data"][k].as_str().unwrap().len() >= 4);
                }
            }
            _ => {}
        }
    }
    for d in site::DEPLOYMENTS {
        let (_, send) = next(
            &mut h,
            Method::GET,
            &format!("/apis/apps/v1/namespaces/west/deployments/{d}"),
        )
        .await;
        send.send_response(ok(json!({"metadata": {"name": d},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"availableReplicas": 1}})));
    }
    let (r, out) = task.await.unwrap();
    r.unwrap();
    assert!(
        out.contains("Skupper is now installed in namespace \"west\""),
        "{out}"
    );
}

fn values() -> manifests::Values {
    manifests::Values {
        namespace: "west".into(),
        site_name: "west".into(),
        ingress_host: String::new(),
        router_mode: "interior".into(),
        image_registry: "localhost".into(),
        image_tag: "0.1.0".into(),
    }
}

#[tokio::test]
async fn reapplying_keeps_the_values_of_an_existing_random_secret() {
    let (client, mut h) = mock();
    let templates = vec![json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "skupper-api-token", "namespace": "${NAMESPACE}"},
        "data": {"token": "${RANDOM_ALNUM_32}", "extra": "${RANDOM_BYTES_8}"},
    })];
    let t = templates.clone();
    let task = spawn_verb!(client, |c, _out| site::apply(&c, "west", &t, &values()));
    let (_, send) = next(&mut h, Method::GET, &format!("{SECRETS}/skupper-api-token")).await;
    send.send_response(ok(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "skupper-api-token"}, "data": {"token": "ZXhpc3Rpbmc="}})));
    let (req, send) = next(
        &mut h,
        Method::PATCH,
        &format!("{SECRETS}/skupper-api-token"),
    )
    .await;
    assert_apply(&req);
    let applied = body(req).await;
    send.send_response(ok(applied.clone()));
    task.await.unwrap().0.unwrap();
    assert_eq!(applied["data"]["token"], "ZXhpc3Rpbmc=", "kept");
    let extra = applied["data"]["extra"].as_str().unwrap();
    assert_eq!(extra.len(), 12, "8 new random bytes, base64: {extra}");
}

#[tokio::test]
async fn init_reports_rbac_and_missing_namespace_clearly() {
    let (client, mut h) = mock();
    let templates = vec![json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "skupper-router", "namespace": "${NAMESPACE}"}})];
    let t = templates.clone();
    let task = spawn_verb!(client, |c, _out| site::apply(&c, "west", &t, &values()));
    let (_, send) = next(
        &mut h,
        Method::PATCH,
        "/api/v1/namespaces/west/serviceaccounts/skupper-router",
    )
    .await;
    send.send_response(status(
        403,
        "Forbidden",
        "serviceaccounts \"skupper-router\" is forbidden: User \"bob\" cannot patch resource",
        "serviceaccounts",
    ));
    let e = task.await.unwrap().0.unwrap_err().to_string();
    assert!(
        e.contains("cannot apply serviceaccounts \"skupper-router\" in namespace \"west\"")
            && e.contains("RBAC")
            && e.contains("User \"bob\""),
        "{e}"
    );

    let t = templates.clone();
    let task = spawn_verb!(client, |c, _out| site::apply(&c, "west", &t, &values()));
    let (_, send) = next(
        &mut h,
        Method::PATCH,
        "/api/v1/namespaces/west/serviceaccounts/skupper-router",
    )
    .await;
    send.send_response(status(
        404,
        "NotFound",
        "namespaces \"west\" not found",
        "namespaces",
    ));
    let e = task.await.unwrap().0.unwrap_err().to_string();
    assert!(e.contains("namespace \"west\" does not exist"), "{e}");
}

#[tokio::test]
async fn waiting_names_what_is_not_ready() {
    let (client, mut h) = mock();
    let task = spawn_verb!(client, |c, _out| site::wait_available(
        &c,
        "west",
        Duration::ZERO,
        Duration::ZERO
    ));
    let (_, send) = next(
        &mut h,
        Method::GET,
        "/apis/apps/v1/namespaces/west/deployments/skupper-router",
    )
    .await;
    send.send_response(ok(json!({"metadata": {"name": "skupper-router"},
        "spec": {"replicas": 2, "selector": {}, "template": {}}, "status": {}})));
    let (_, send) = next(
        &mut h,
        Method::GET,
        "/apis/apps/v1/namespaces/west/deployments/skupper-service-controller",
    )
    .await;
    send.send_response(not_found("deployments", "skupper-service-controller"));
    let e = task.await.unwrap().0.unwrap_err().to_string();
    assert!(
        e.contains("Deployment skupper-router (0/2 replicas available)")
            && e.contains("Deployment skupper-service-controller (missing)"),
        "{e}"
    );
}

#[tokio::test]
async fn delete_removes_every_object_of_the_chart() {
    let (client, mut h) = mock();
    let task = spawn_verb!(client, |c, out| site::delete(&c, "west", out));
    site_exists(&mut h).await;
    let objects = site::objects_to_delete().unwrap();
    assert!(objects.iter().any(|o| o["kind"] == "Route"));
    assert!(objects.iter().any(|o| o["kind"] == "Ingress"));
    for (i, o) in objects.iter().enumerate() {
        let (req, send) = next(&mut h, Method::DELETE, &path_of(o)).await;
        let b = body(req).await;
        assert_eq!(b["propagationPolicy"], "Background");
        if i % 2 == 0 {
            send.send_response(ok(json!({"kind": "Status", "status": "Success"})));
        } else {
            send.send_response(not_found("x", "y"));
        }
    }
    let (r, out) = task.await.unwrap();
    r.unwrap();
    assert!(out.contains("Skupper is now removed from namespace \"west\""));
}

#[tokio::test]
async fn delete_without_a_site_says_so() {
    let (client, mut h) = mock();
    let task = spawn_verb!(client, |c, out| site::delete(&c, "west", out));
    let (_, send) = next(&mut h, Method::GET, &format!("{CM}/skupper-site")).await;
    send.send_response(not_found("configmaps", "skupper-site"));
    let e = task.await.unwrap().0.unwrap_err().to_string();
    assert!(
        e.contains("Skupper is not enabled in namespace \"west\""),
        "{e}"
    );
}

fn claim_token(name: &str) -> String {
    van_controller::token::ClaimToken {
        name: name.into(),
        url: "https://west.example.org:8081/t1".into(),
        secret: "s3cret".into(),
        ca_cert: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        expires: Some(4_000_000_000),
        generated_by: "0123456789abcdef".into(),
        site_name: "west".into(),
        cost: 1,
    }
    .to_yaml()
}

#[tokio::test]
async fn token_create_asks_the_controller_and_writes_the_filled_secret() {
    use std::os::unix::fs::PermissionsExt;
    let (client, mut h) = mock();
    let tmp = van_testkit::temp_dir("skupper-k8s-token");
    let dir = tmp.path();
    let file = dir.join("t.yaml");
    let a = TokenCreateArgs {
        file: file.clone(),
        expiry: Some(Duration::from_secs(600)),
        uses: Some(2),
        token_type: TokenType::Claim,
        name: Some("t1".into()),
        cost: None,
    };
    let task = spawn_verb!(client, |c, out| k8s::token::create(
        &c,
        "west",
        &a,
        Duration::ZERO,
        out
    ));
    site_exists(&mut h).await;
    let (req, send) = next(&mut h, Method::POST, SECRETS).await;
    let created = body(req).await;
    assert_eq!(created["metadata"]["name"], "t1");
    assert_eq!(
        created["metadata"]["labels"],
        json!({"skupper.io/type": "connection-token-request"})
    );
    assert_eq!(
        created["metadata"]["annotations"],
        json!({"skupper.io/token-type": "claim", "skupper.io/token-expiry": "600",
               "skupper.io/token-uses": "2"})
    );
    send.send_response(ok(created.clone()));
    // Not filled in yet, then filled in.
    let (_, send) = next(&mut h, Method::GET, &format!("{SECRETS}/t1")).await;
    send.send_response(ok(created.clone()));
    let (_, send) = next(&mut h, Method::GET, &format!("{SECRETS}/t1")).await;
    let mut filled: Value = serde_yaml_ng::from_str(&claim_token("t1")).unwrap();
    filled["metadata"]["annotations"]["skupper.io/token-type"] = "claim".into();
    filled["metadata"]["annotations"]["internal.skupper.io/status"] = "issued".into();
    filled["metadata"]["uid"] = "abc".into();
    send.send_response(ok(filled));
    let (_, send) = next(&mut h, Method::DELETE, &format!("{SECRETS}/t1")).await;
    send.send_response(ok(json!({"kind": "Status", "status": "Success"})));
    let (r, out) = task.await.unwrap();
    r.unwrap();
    assert!(out.contains("Token written to"), "{out}");
    let text = std::fs::read_to_string(&file).unwrap();
    let token = van_controller::token::parse(&text).unwrap();
    assert_eq!(token.name(), "t1");
    assert!(
        !text.contains("token-type")
            && !text.contains("internal.skupper.io")
            && !text.contains("uid"),
        "{text}"
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test]
async fn token_create_reports_why_the_controller_refused() {
    let (client, mut h) = mock();
    let tmp = van_testkit::temp_dir("skupper-k8s-refused");
    let dir = tmp.path();
    let a = TokenCreateArgs {
        file: dir.join("t.yaml"),
        expiry: None,
        uses: None,
        token_type: TokenType::Cert,
        name: Some("t2".into()),
        cost: None,
    };
    let task = spawn_verb!(client, |c, out| k8s::token::create(
        &c,
        "west",
        &a,
        Duration::ZERO,
        out
    ));
    site_exists(&mut h).await;
    let (req, send) = next(&mut h, Method::POST, SECRETS).await;
    let mut created = body(req).await;
    assert_eq!(
        created["metadata"]["annotations"],
        json!({"skupper.io/token-type": "cert"})
    );
    send.send_response(ok(created.clone()));
    let (_, send) = next(&mut h, Method::GET, &format!("{SECRETS}/t2")).await;
    created["metadata"]["annotations"]["internal.skupper.io/status"] =
        "an edge site cannot issue tokens".into();
    send.send_response(ok(created));
    let (_, send) = next(&mut h, Method::DELETE, &format!("{SECRETS}/t2")).await;
    send.send_response(ok(json!({"kind": "Status", "status": "Success"})));
    let e = task.await.unwrap().0.unwrap_err().to_string();
    assert!(e.contains("an edge site cannot issue tokens"), "{e}");
    assert!(!dir.join("t.yaml").exists());
}

#[tokio::test]
async fn link_create_stores_the_token_as_a_secret_and_delete_removes_it() {
    let (client, mut h) = mock();
    let tmp = van_testkit::temp_dir("skupper-k8s-link");
    let dir = tmp.path();
    let file = dir.join("t.yaml");
    std::fs::write(&file, claim_token("west-1")).unwrap();
    let a = LinkCreateArgs {
        file,
        name: None,
        cost: Some(3),
        proxy: None,
        no_proxy: false,
    };
    let task = spawn_verb!(client, |c, out| k8s::link::create(&c, "west", &a, out));
    site_exists(&mut h).await;
    let (req, send) = next(&mut h, Method::POST, SECRETS).await;
    let created = body(req).await;
    assert_eq!(created["metadata"]["name"], "west-1");
    assert_eq!(
        created["metadata"]["labels"]["skupper.io/type"],
        "token-claim"
    );
    assert_eq!(created["metadata"]["annotations"]["skupper.io/cost"], "3");
    assert!(created["metadata"]["annotations"]["skupper.io/url"].is_string());
    assert!(created["data"]["password"].is_string());
    send.send_response(ok(created.clone()));
    let (r, out) = task.await.unwrap();
    r.unwrap();
    assert!(
        out.contains("Site configured to link to west (name=west-1)"),
        "{out}"
    );

    let task = spawn_verb!(client, |c, out| k8s::link::delete(
        &c, "west", "west-1", out
    ));
    let (_, send) = next(&mut h, Method::GET, &format!("{SECRETS}/west-1")).await;
    send.send_response(ok(created));
    let (_, send) = next(&mut h, Method::DELETE, &format!("{SECRETS}/west-1")).await;
    send.send_response(ok(json!({"kind": "Status", "status": "Success"})));
    let (r, out) = task.await.unwrap();
    r.unwrap();
    assert_eq!(out, "Link 'west-1' has been deleted\n");

    let task = spawn_verb!(client, |c, out| k8s::link::delete(&c, "west", "nope", out));
    let (_, send) = next(&mut h, Method::GET, &format!("{SECRETS}/nope")).await;
    send.send_response(not_found("secrets", "nope"));
    let e = task.await.unwrap().0.unwrap_err().to_string();
    assert!(e.contains("there is no link named \"nope\""), "{e}");

    // A bad token file is refused before any request.
    std::fs::write(dir.join("bad.yaml"), "kind: Secret\nmetadata: {name: x}\n").unwrap();
    let a = LinkCreateArgs {
        file: dir.join("bad.yaml"),
        name: None,
        cost: None,
        proxy: None,
        no_proxy: false,
    };
    let task = spawn_verb!(client, |c, out| k8s::link::create(&c, "west", &a, out));
    let e = task.await.unwrap().0.unwrap_err();
    assert!(e.downcast_ref::<skupper::UsageError>().is_some(), "{e}");
}

fn expose_args(resource: &str, name: &str, address: Option<&str>) -> ExposeArgs {
    ExposeArgs {
        resource: resource.into(),
        name: Some(name.into()),
        port: vec![8080, 9090],
        address: address.map(str::to_string),
        target_port: vec![80, 90],
        protocol: "http".into(),
    }
}

#[tokio::test]
async fn expose_deployment_makes_a_service_selecting_its_pods() {
    let (client, mut h) = mock();
    let a = expose_args("deployment", "web", Some("backend"));
    let task = spawn_verb!(client, |c, out| k8s::expose::expose(&c, "west", &a, out));
    site_exists(&mut h).await;
    let (_, send) = next(
        &mut h,
        Method::GET,
        "/apis/apps/v1/namespaces/west/deployments/web",
    )
    .await;
    send.send_response(ok(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web", "tier": "front"}}}})));
    let (_, send) = next(&mut h, Method::GET, &format!("{SERVICES}/backend")).await;
    send.send_response(not_found("services", "backend"));
    let (req, send) = next(&mut h, Method::PATCH, &format!("{SERVICES}/backend")).await;
    assert_apply(&req);
    let svc = body(req).await;
    send.send_response(ok(svc.clone()));
    let (r, out) = task.await.unwrap();
    r.unwrap();
    assert_eq!(out, "deployment web exposed as backend\n");
    assert_eq!(
        svc["spec"]["selector"],
        json!({"app": "web", "tier": "front"})
    );
    assert_eq!(
        svc["spec"]["ports"],
        json!([
            {"name": "port-8080", "port": 8080, "targetPort": 80, "protocol": "TCP"},
            {"name": "port-9090", "port": 9090, "targetPort": 90, "protocol": "TCP"},
        ])
    );
    assert_eq!(
        svc["metadata"]["labels"],
        json!({"app.kubernetes.io/managed-by": "skupper-cli"})
    );
    assert_eq!(
        svc["metadata"]["annotations"],
        json!({"skupper.io/proxy": "http", "skupper.io/exposed": "deployment/web"})
    );
}

#[tokio::test]
async fn expose_deployment_leaves_a_foreign_service_alone() {
    let (client, mut h) = mock();
    let a = expose_args("statefulset", "db", None);
    let task = spawn_verb!(client, |c, out| k8s::expose::expose(&c, "west", &a, out));
    site_exists(&mut h).await;
    let (_, send) = next(
        &mut h,
        Method::GET,
        "/apis/apps/v1/namespaces/west/statefulsets/db",
    )
    .await;
    send.send_response(ok(json!({"metadata": {"name": "db"},
        "spec": {"selector": {"matchLabels": {"app": "db"}}}})));
    let (_, send) = next(&mut h, Method::GET, &format!("{SERVICES}/db")).await;
    send.send_response(ok(json!({"metadata": {"name": "db"}, "spec": {}})));
    let e = task.await.unwrap().0.unwrap_err().to_string();
    assert!(e.contains("skupper expose service db"), "{e}");
}

#[tokio::test]
async fn expose_and_unexpose_service_annotate_the_users_service() {
    let (client, mut h) = mock();
    let a = expose_args("service", "details", Some("info"));
    let task = spawn_verb!(client, |c, out| k8s::expose::expose(&c, "west", &a, out));
    site_exists(&mut h).await;
    let (_, send) = next(&mut h, Method::GET, &format!("{SERVICES}/details")).await;
    send.send_response(ok(json!({"metadata": {"name": "details"}, "spec": {}})));
    let (req, send) = next(&mut h, Method::PATCH, &format!("{SERVICES}/details")).await;
    assert_eq!(
        req.headers()["content-type"],
        "application/merge-patch+json"
    );
    let patch = body(req).await;
    send.send_response(ok(json!({"metadata": {"name": "details"}, "spec": {}})));
    task.await.unwrap().0.unwrap();
    assert_eq!(
        patch,
        json!({"metadata": {"annotations": {"skupper.io/proxy": "http",
            "skupper.io/address": "info", "skupper.io/port": "8080:80,9090:90"}}})
    );

    let a = UnexposeArgs {
        resource: "service".into(),
        name: Some("details".into()),
        address: None,
    };
    let task = spawn_verb!(client, |c, out| k8s::expose::unexpose(&c, "west", &a, out));
    let (_, send) = next(&mut h, Method::GET, &format!("{SERVICES}/details")).await;
    send.send_response(ok(json!({"metadata": {"name": "details",
        "annotations": {"skupper.io/proxy": "http"}}, "spec": {}})));
    let (req, send) = next(&mut h, Method::PATCH, &format!("{SERVICES}/details")).await;
    let patch = body(req).await;
    send.send_response(ok(json!({"metadata": {"name": "details"}, "spec": {}})));
    task.await.unwrap().0.unwrap();
    assert_eq!(
        patch,
        json!({"metadata": {"annotations": {"skupper.io/proxy": null,
            "skupper.io/address": null, "skupper.io/port": null}}})
    );
}

#[tokio::test]
async fn unexpose_deployment_deletes_only_our_service() {
    let (client, mut h) = mock();
    let ours = json!({"metadata": {"name": "backend",
        "labels": {"app.kubernetes.io/managed-by": "skupper-cli"},
        "annotations": {"skupper.io/exposed": "deployment/web", "skupper.io/proxy": "tcp"}},
        "spec": {}});
    let a = UnexposeArgs {
        resource: "deployment/web".into(),
        name: None,
        address: Some("backend".into()),
    };
    let task = spawn_verb!(client, |c, out| k8s::expose::unexpose(&c, "west", &a, out));
    let (_, send) = next(&mut h, Method::GET, &format!("{SERVICES}/backend")).await;
    send.send_response(ok(ours));
    let (_, send) = next(&mut h, Method::DELETE, &format!("{SERVICES}/backend")).await;
    send.send_response(ok(json!({"kind": "Status", "status": "Success"})));
    let (r, out) = task.await.unwrap();
    r.unwrap();
    assert_eq!(out, "deployment web unexposed\n");

    let a = UnexposeArgs {
        resource: "deployment".into(),
        name: Some("web".into()),
        address: None,
    };
    let task = spawn_verb!(client, |c, out| k8s::expose::unexpose(&c, "west", &a, out));
    let (_, send) = next(&mut h, Method::GET, &format!("{SERVICES}/web")).await;
    send.send_response(ok(json!({"metadata": {"name": "web"}, "spec": {}})));
    let e = task.await.unwrap().0.unwrap_err().to_string();
    assert!(e.contains("unexpose service web"), "{e}");
}

fn status_configmap() -> Value {
    let site = json!({"siteName": "west", "mode": "interior", "connectedSites": 1,
        "exposedServices": 2, "routerReady": true, "version": "0.1.0"});
    let links = json!({"links": [{"name": "to-east", "state": "active", "direction": "outgoing"}]});
    let services = json!({"services": [{"address": "backend", "protocol": "tcp",
        "ports": [8080], "local": true, "originSiteName": "west"}]});
    let network = json!({"sites": [{"siteId": "aaaaaaaaaaaa", "siteName": "west",
        "mode": "interior", "version": "0.1.0", "routerId": "r1", "local": true}]});
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "skupper-network-status"},
        "data": {"site": site.to_string(), "links": links.to_string(),
                 "services": services.to_string(), "network": network.to_string(),
                 "updated": "2025-01-01T00:00:00Z"}})
}

async fn status_exists(h: &mut Handle) {
    site_exists(h).await;
    let (_, send) = next(h, Method::GET, &format!("{CM}/skupper-network-status")).await;
    send.send_response(ok(status_configmap()));
}

#[tokio::test]
async fn status_commands_read_the_controllers_report() {
    let (client, mut h) = mock();
    let task = spawn_verb!(client, |c, out| site::status(&c, "west", Format::Text, out));
    status_exists(&mut h).await;
    let (r, out) = task.await.unwrap();
    r.unwrap();
    assert!(
        out.starts_with(
            "Skupper is enabled for namespace \"west\" with site name \"west\" in interior mode. \
             It is connected to 1 other site. It has 2 exposed services."
        ),
        "{out}"
    );

    let task = spawn_verb!(client, |c, out| site::service_status(
        &c,
        "west",
        Format::Text,
        out
    ));
    status_exists(&mut h).await;
    let (r, out) = task.await.unwrap();
    r.unwrap();
    assert!(out.contains("backend:8080 (tcp)"), "{out}");

    let task = spawn_verb!(client, |c, out| site::network_status(
        &c,
        "west",
        Format::Json,
        out
    ));
    status_exists(&mut h).await;
    let (r, out) = task.await.unwrap();
    r.unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["sites"][0]["siteName"], "west");

    let task = spawn_verb!(client, |c, out| site::version(
        &c,
        "west",
        Format::Text,
        out
    ));
    status_exists(&mut h).await;
    let (r, out) = task.await.unwrap();
    r.unwrap();
    assert!(
        out.contains("controller version             0.1.0"),
        "{out}"
    );
}

#[tokio::test]
async fn link_status_adds_token_secrets_that_failed() {
    let (client, mut h) = mock();
    let a = LinkStatusArgs {
        name: None,
        wait: None,
        output: OutputArgs {
            output: Format::Text,
        },
    };
    let task = spawn_verb!(client, |c, out| k8s::link::status(
        &c,
        "west",
        &a,
        Duration::ZERO,
        out
    ));
    status_exists(&mut h).await;
    let (req, send) = next(&mut h, Method::GET, SECRETS).await;
    let q = req.uri().query().unwrap_or_default().to_string();
    assert!(q.contains("labelSelector=skupper.io%2Ftype"), "{q}");
    send.send_response(ok(json!({"apiVersion": "v1", "kind": "SecretList",
    "metadata": {}, "items": [
        {"metadata": {"name": "to-east", "annotations": {"internal.skupper.io/status": "linked"}}},
        {"metadata": {"name": "to-south",
            "annotations": {"internal.skupper.io/status": "claim refused: expired"}}},
    ]})));
    let (r, out) = task.await.unwrap();
    r.unwrap();
    assert_eq!(
        out,
        "Link to-east is active\nLink to-south not active (failed: claim refused: expired)\n"
    );
}

#[tokio::test]
async fn status_before_the_controller_reports() {
    let (client, mut h) = mock();
    let task = spawn_verb!(client, |c, out| site::status(&c, "west", Format::Text, out));
    site_exists(&mut h).await;
    let (_, send) = next(&mut h, Method::GET, &format!("{CM}/skupper-network-status")).await;
    send.send_response(not_found("configmaps", "skupper-network-status"));
    let e = task.await.unwrap().0.unwrap_err().to_string();
    assert!(e.contains("has not reported yet"), "{e}");
}
