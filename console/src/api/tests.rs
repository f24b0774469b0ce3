//! The API through axum's test harness: no sockets.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use serde_json::Value;
use tokio_stream::StreamExt as _;
use tower::ServiceExt as _;
use van_proto::admin::{TopicSnapshot, TopicValue};
use van_proto::records::ConnectionRecord;

use super::fields;
use crate::store::tests::{batch, connector, ended, half, link, listener, request, with_state};
use crate::{AuthMode, Console, Limits, Users, users_file_line};

const S: u64 = 1_000_000;

/// Two sites with three connections (two ended, one open) and two requests, around now.
fn fixture(auth: AuthMode) -> Console {
    let console = Console::new(Limits::default(), auth, false);
    let now = crate::now_us();
    let t = now - 60 * S;
    let mut west = with_state("west-r", "west", t);
    if let Some(s) = west.state.as_mut() {
        s.listeners.push(listener("web", "backend", "tcp"));
        s.listeners.push(listener("reviews", "reviews", "http"));
        s.links.push(link("to-east", "east-r", "up"));
    }
    let mut east = with_state("east-r", "east", t);
    if let Some(s) = east.state.as_mut() {
        s.connectors.push(connector("backend", "backend", "tcp"));
        s.connectors.push(connector("reviews", "reviews", "http"));
    }
    console.apply_at(west, t);
    console.apply_at(east, t);
    let mut b = batch("west-r", 1, t + S);
    b.ended.push(ConnectionRecord {
        dest_router: "east-r".into(),
        bytes_out: 300,
        bytes_in: 3000,
        ..ended(half(1, "ingress", "backend", t), t + S, "closed")
    });
    b.ended.push(ConnectionRecord {
        dest_router: "east-r".into(),
        client_addr: "10.0.0.2:5000".into(),
        bytes_out: 100,
        error: "connection refused".into(),
        ..ended(
            half(2, "ingress", "backend", t + 10 * S),
            t + 11 * S,
            "refused",
        )
    });
    b.open.push(ConnectionRecord {
        dest_router: "east-r".into(),
        bytes_out: 200,
        ..half(3, "ingress", "reviews", t + 20 * S)
    });
    b.requests.push(request(3, "reviews", 200, t + 21 * S));
    b.requests.push(request(3, "reviews", 503, t + 22 * S));
    console.apply_at(b, t + 30 * S);
    let mut b = batch("east-r", 1, t + S);
    b.ended.push(ConnectionRecord {
        server_addr: "10.1.0.5:9090".into(),
        path: vec!["west-r".into(), "east-r".into()],
        ..ended(half(1, "egress", "backend", t), t + S, "closed")
    });
    console.apply_at(b, t + 30 * S);
    console.write().apply_sites(TopicSnapshot {
        topic: "van.site.v1".into(),
        values: vec![TopicValue {
            origin: "west-r".into(),
            payload: br#"{"id":"west","name":"West","mode":"interior","version":"1.0","router-id":"west-r","services":[],"links":[]}"#.to_vec(),
        }],
    });
    console
}

fn unsecured() -> Router {
    fixture(AuthMode::Unsecured).app()
}

fn peer(n: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, n], 40000))
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }

    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

async fn call(app: &Router, mut req: Request<Body>) -> Answer {
    if req.extensions().get::<ConnectInfo<SocketAddr>>().is_none() {
        req.extensions_mut().insert(ConnectInfo(peer(1)));
    }
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(app: &Router, uri: &str) -> Answer {
    call(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn ok_json(app: &Router, uri: &str) -> Value {
    let a = get(app, uri).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{uri}: {}",
        String::from_utf8_lossy(&a.body)
    );
    a.json()
}

fn ids(page: &Value, field: &str) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| match &i[field] {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        })
        .collect()
}

// === a small validator for the OpenAPI document's schemas ===

fn openapi() -> Value {
    serde_json::from_str(super::OPENAPI).expect("openapi.json is JSON")
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// Checks `v` against `schema`: types, required and unknown properties, enums.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str) {
    let schema = resolve(doc, schema);
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        assert!(e.contains(v), "{at}: {v} not in {e:?}");
    }
    match schema["type"].as_str() {
        Some("object") => {
            let o = v
                .as_object()
                .unwrap_or_else(|| panic!("{at}: not an object: {v}"));
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                return;
            };
            for r in schema["required"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap();
                assert!(o.contains_key(r), "{at}: {r} missing from {v}");
            }
            for (k, x) in o {
                let p = props
                    .get(k)
                    .unwrap_or_else(|| panic!("{at}: {k} is not in the schema"));
                check(doc, p, x, &format!("{at}.{k}"));
            }
        }
        Some("array") => {
            for (i, x) in v.as_array().expect(at).iter().enumerate() {
                check(doc, &schema["items"], x, &format!("{at}[{i}]"));
            }
        }
        Some("string") => assert!(v.is_string(), "{at}: not a string: {v}"),
        Some("integer") => assert!(v.is_u64() || v.is_i64(), "{at}: not an integer: {v}"),
        Some("number") => assert!(v.is_number(), "{at}: not a number: {v}"),
        Some("boolean") => assert!(v.is_boolean(), "{at}: not a boolean: {v}"),
        _ => {}
    }
}

/// Checks an answer against what the document says `path` answers with that status.
fn conforms(doc: &Value, path: &str, method: &str, a: &Answer) {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not in the document");
    let mut resp = &op["responses"][a.status.as_str()];
    if let Some(r) = resp.get("$ref").and_then(Value::as_str) {
        resp = &doc["components"]["responses"][r.trim_start_matches("#/components/responses/")];
    }
    assert!(
        resp.is_object(),
        "{method} {path} answered {} which the document does not list",
        a.status
    );
    if let Some(schema) = resp.pointer("/content/application~1json/schema") {
        check(doc, schema, &a.json(), path);
    }
}

// === tests ===

#[tokio::test]
async fn every_list_answers_as_documented() {
    let app = unsecured();
    let doc = openapi();
    let lists = [
        ("/api/v1/sites", 2),
        ("/api/v1/routers", 2),
        ("/api/v1/links", 1),
        ("/api/v1/services", 2),
        ("/api/v1/listeners", 2),
        ("/api/v1/connectors", 2),
        ("/api/v1/processes", 3),
        ("/api/v1/sitepairs", 1),
        ("/api/v1/processpairs", 1),
        ("/api/v1/connections", 3),
        ("/api/v1/requests", 2),
    ];
    for (path, n) in lists {
        let a = get(&app, path).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        assert_eq!(
            a.headers[header::CONTENT_TYPE],
            "application/json",
            "{path}"
        );
        let v = a.json();
        assert_eq!(
            (v["count"].as_u64(), v["total"].as_u64()),
            (Some(n), Some(n)),
            "{path}: {v}"
        );
        conforms(&doc, path, "get", &a);
    }
    for path in [
        "/api/v1/sites/west",
        "/api/v1/routers/east-r",
        "/api/v1/services/backend",
        "/api/v1/services/reviews/series",
        "/api/v1/services/reviews/series?window=3600&step=60",
        "/api/v1/topology",
        "/api/v1/topology?address=backend",
        "/api/v1/user",
    ] {
        let a = get(&app, path).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        let template = match path.split('?').next().unwrap() {
            "/api/v1/sites/west" => "/api/v1/sites/{id}",
            "/api/v1/routers/east-r" => "/api/v1/routers/{id}",
            "/api/v1/services/backend" => "/api/v1/services/{address}",
            "/api/v1/services/reviews/series" => "/api/v1/services/{address}/series",
            p => p,
        };
        conforms(&doc, template, "get", &a);
    }
}

#[tokio::test]
async fn items_carry_the_joined_records() {
    let app = unsecured();
    let site = ok_json(&app, "/api/v1/sites/west").await;
    assert_eq!(site["name"], "West");
    assert_eq!(
        site["servicesConsumed"],
        serde_json::json!(["backend", "reviews"])
    );
    assert_eq!(site["links"], 1);
    let east = ok_json(&app, "/api/v1/sites/east").await;
    assert_eq!(
        east["servicesOffered"],
        serde_json::json!(["backend", "reviews"])
    );
    let conns = ok_json(&app, "/api/v1/connections").await;
    // Newest first.
    assert_eq!(
        ids(&conns, "id"),
        ["0000000000000003", "0000000000000002", "0000000000000001"]
    );
    let c1 = &conns["items"][2];
    assert_eq!(c1["state"], "terminated");
    assert_eq!(c1["sourceSiteId"], "west");
    assert_eq!(c1["destSiteId"], "east");
    assert_eq!(c1["serverAddr"], "10.1.0.5:9090");
    assert_eq!(c1["path"], serde_json::json!(["west-r", "east-r"]));
    assert_eq!(c1["durationMs"], 1000);
    assert_eq!(c1["bytesIn"], 3000);
    let c3 = &conns["items"][0];
    assert_eq!(c3["state"], "active");
    assert!(c3.get("endTime").is_none());
    let reqs = ok_json(&app, "/api/v1/requests").await;
    let r = &reqs["items"][0];
    assert_eq!(
        (r["status"].as_u64(), r["statusClass"].as_str()),
        (Some(503), Some("5xx"))
    );
    assert_eq!(r["connectionId"], "0000000000000003");
    assert_eq!(r["destSiteId"], "east");
    assert_eq!(r["latencyMs"], 2.0);
    let svc = ok_json(&app, "/api/v1/services/reviews").await;
    assert_eq!(svc["protocol"], "http");
    assert_eq!(
        (svc["openConnections"].as_u64(), svc["requests"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(svc["servedBy"][0]["connector"], "reviews");
    assert_eq!(svc["reachedFrom"][0]["listener"], "reviews");
    let series = ok_json(&app, "/api/v1/services/reviews/series").await;
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 30);
    let requests: f64 = points
        .iter()
        .map(|p| p["requests2xx"].as_f64().unwrap() + p["requests5xx"].as_f64().unwrap())
        .sum();
    assert!((requests - 0.2).abs() < 1e-9, "{requests}");
    let topo = ok_json(&app, "/api/v1/topology").await;
    assert_eq!(topo["links"][0]["sourceSiteId"], "west");
    assert_eq!(topo["traffic"][0]["id"], "west>east");
    assert!(topo["traffic"][0]["bytesPerSecond"].is_number());
    let pairs = ok_json(&app, "/api/v1/sitepairs?address=reviews").await;
    assert_eq!(pairs["items"][0]["address"], "reviews");
    assert_eq!(pairs["items"][0]["connections"], 1);
    let user = ok_json(&app, "/api/v1/user").await;
    assert_eq!(
        user,
        serde_json::json!({"username": "anonymous", "authMode": "unsecured"})
    );
}

#[tokio::test]
async fn lists_page_sort_filter_and_take_time_ranges() {
    let app = unsecured();
    let p = ok_json(&app, "/api/v1/connections?limit=1&offset=1").await;
    assert_eq!(
        (p["count"].as_u64(), p["total"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(ids(&p, "id"), ["0000000000000002"]);
    let p = ok_json(&app, "/api/v1/connections?sortBy=bytesOut.asc").await;
    assert_eq!(ids(&p, "bytesOut"), ["100", "200", "300"]);
    let p = ok_json(&app, "/api/v1/connections?sortBy=endTime.desc").await;
    // The active one has no end: last either way.
    assert_eq!(ids(&p, "id")[2], "0000000000000003");
    let p = ok_json(&app, "/api/v1/connections?state=active").await;
    assert_eq!(ids(&p, "id"), ["0000000000000003"]);
    let p = ok_json(&app, "/api/v1/connections?state=terminated&outcome=refused").await;
    assert_eq!(ids(&p, "id"), ["0000000000000002"]);
    let p = ok_json(
        &app,
        "/api/v1/connections?address=backend&sourceSiteId=west",
    )
    .await;
    assert_eq!(p["total"], 2);
    let p = ok_json(&app, "/api/v1/connections?q=10.0.0.2").await;
    assert_eq!(ids(&p, "id"), ["0000000000000002"]);
    let p = ok_json(&app, "/api/v1/connections?path=east-r").await;
    assert_eq!(ids(&p, "id"), ["0000000000000001"]);
    // Connection 1 lived [t, t+1s]; 2 [t+10s, t+11s]; 3 from t+20s on.
    let first = ok_json(&app, "/api/v1/connections?sortBy=startTime.asc&limit=1").await;
    let t = first["items"][0]["startTime"].as_u64().unwrap();
    let range = |a: u64, b: u64| format!("/api/v1/connections?start={}&end={}", t + a, t + b);
    assert_eq!(
        ids(&ok_json(&app, &range(500, 900)).await, "id"),
        ["0000000000000001"]
    );
    assert_eq!(
        ids(&ok_json(&app, &range(2_000, 9_000)).await, "id"),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&ok_json(&app, &range(10_500, 30_000)).await, "id"),
        ["0000000000000003", "0000000000000002"]
    );
    let p = ok_json(
        &app,
        &format!("/api/v1/connections?start={}", t + 100_000_000),
    )
    .await;
    assert_eq!(p["total"], 0);
    let p = ok_json(
        &app,
        &format!("/api/v1/services?start={}&end={}", t + 10_500, t + 30_000),
    )
    .await;
    let backend = &p["items"][0];
    assert_eq!(
        (backend["address"].as_str(), backend["connections"].as_u64()),
        (Some("backend"), Some(1))
    );
    let p = ok_json(&app, "/api/v1/requests?statusClass=2xx").await;
    assert_eq!(ids(&p, "status"), ["200"]);
    let p = ok_json(&app, "/api/v1/requests?state=active").await;
    assert_eq!(p["total"], 0);
    let p = ok_json(&app, "/api/v1/requests?sortBy=status.asc&method=GET").await;
    assert_eq!(ids(&p, "status"), ["200", "503"]);
    let p = ok_json(&app, "/api/v1/links?siteId=west&state=up").await;
    assert_eq!(p["total"], 1);
    let p = ok_json(&app, "/api/v1/links?state=down").await;
    assert_eq!(p["total"], 0);
    let p = ok_json(&app, "/api/v1/sites?sortBy=name.desc").await;
    assert_eq!(ids(&p, "name"), ["east", "West"]);
    let p = ok_json(&app, "/api/v1/processes?role=server").await;
    assert_eq!(ids(&p, "id"), ["east/10.1.0.5"]);
    let p = ok_json(&app, "/api/v1/routers?siteId=east").await;
    assert_eq!(ids(&p, "id"), ["east-r"]);
}

#[tokio::test]
async fn bad_parameters_answer_400_naming_them() {
    let app = unsecured();
    let doc = openapi();
    for (uri, param) in [
        ("/api/v1/connections?limit=lots", "limit"),
        ("/api/v1/connections?limit=10001", "limit"),
        ("/api/v1/connections?offset=-1", "offset"),
        ("/api/v1/connections?sortBy=nope.asc", "sortBy"),
        ("/api/v1/requests?sortBy=status", "sortBy"),
        ("/api/v1/sites?sortBy=name.sideways", "sortBy"),
        ("/api/v1/connections?start=10&end=5", "start"),
        ("/api/v1/requests?end=yesterday", "end"),
        ("/api/v1/connections?state=open", "state"),
        ("/api/v1/services/backend/series?window=10", "window"),
        ("/api/v1/services/backend/series?window=x", "window"),
        ("/api/v1/services/backend/series?step=15", "step"),
        (
            "/api/v1/services/backend/series?window=300&step=600",
            "step",
        ),
        ("/api/v1/sites/%FF", "path"),
    ] {
        let a = get(&app, uri).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(
            a.error().starts_with(&format!("{param}:")),
            "{uri}: {}",
            a.error()
        );
        let template = if uri.contains("/series") {
            "/api/v1/services/{address}/series"
        } else if uri.contains('%') {
            "/api/v1/sites/{id}"
        } else {
            uri.split('?').next().unwrap()
        };
        conforms(&doc, template, "get", &a);
    }
}

#[tokio::test]
async fn repeated_and_empty_parameters_are_not_errors() {
    let app = unsecured();
    let p = ok_json(
        &app,
        "/api/v1/services/reviews/series?window=600&window=300&step=60",
    )
    .await;
    assert_eq!(p["points"].as_array().unwrap().len(), 5);
    let t = ok_json(&app, "/api/v1/topology?address=").await;
    assert_eq!(t["traffic"].as_array().unwrap().len(), 1);
    let p = ok_json(&app, "/api/v1/connections?offset=99999999999999999999999").await;
    assert_eq!(
        (p["count"].as_u64(), p["total"].as_u64()),
        (Some(0), Some(3))
    );
}

#[tokio::test]
async fn unknown_ids_answer_404_and_other_paths_get_the_page() {
    let app = unsecured();
    for uri in [
        "/api/v1/sites/nowhere",
        "/api/v1/routers/nobody",
        "/api/v1/services/nothing",
        "/api/v1/services/nothing/series",
        "/api/v1/nope",
        "/assets/nope.js",
    ] {
        let a = get(&app, uri).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{uri}");
        assert!(!a.error().is_empty(), "{uri}");
    }
    for uri in [
        "/",
        "/topology",
        "/services/backend",
        "/sites/west",
        "/requests",
    ] {
        let a = get(&app, uri).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}");
        assert!(
            a.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert_eq!(a.body, super::INDEX_HTML.as_bytes());
    }
    for (uri, ty) in [
        ("/assets/app.js", "text/javascript"),
        ("/assets/style.css", "text/css"),
    ] {
        let a = get(&app, uri).await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(
            a.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(ty)
        );
    }
    let a = get(&app, "/api/v1/openapi.json").await;
    assert_eq!(a.json()["openapi"], "3.0.3");
}

#[tokio::test]
async fn metrics_are_network_wide() {
    let app = unsecured();
    let a = get(&app, "/metrics").await;
    assert_eq!(a.status, StatusCode::OK);
    let text = String::from_utf8(a.body).unwrap();
    for want in [
        r#"skupper_connections_opened_total{source_site_id="west",source_site_name="West",dest_site_id="east",dest_site_name="east",routing_key="backend",protocol="tcp"} 2"#,
        r#"skupper_connections_closed_total{source_site_id="west",source_site_name="West",dest_site_id="east",dest_site_name="east",routing_key="backend",protocol="tcp"} 2"#,
        r#"skupper_sent_bytes_total{source_site_id="west",source_site_name="West",dest_site_id="east",dest_site_name="east",routing_key="reviews",protocol="http"} 200"#,
        r#"skupper_received_bytes_total{"#,
        r#"skupper_requests_total{source_site_id="west",source_site_name="West",dest_site_id="east",dest_site_name="east",routing_key="reviews",protocol="http",method="GET",code="5xx"} 1"#,
        r#"skupper_request_latency_seconds_bucket{le="0.002",routing_key="reviews",code="2xx"} 1"#,
        r#"skupper_site_info{site_id="west",name="West",version="1.0",mode="interior"} 1"#,
        r#"skupper_routers_total{site_id="east"} 1"#,
        r#"skupper_site_links_total{site_id="west",status="up"} 1"#,
        r#"skupper_site_listeners_total{site_id="west"} 2"#,
        r#"skupper_site_connectors_total{site_id="east"} 2"#,
        "van_console_records_total 8",
        "van_console_records_dropped_total 0",
        "# EOF",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
}

#[tokio::test]
async fn events_stream_updates() {
    let app = unsecured();
    let resp = app
        .oneshot(Request::get("/api/v1/events").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = resp.into_body().into_data_stream();
    let chunk = body.next().await.unwrap().unwrap();
    let text = String::from_utf8(chunk.to_vec()).unwrap();
    assert!(text.starts_with("event: update\ndata: {"), "{text}");
    let data: Value =
        serde_json::from_str(text.lines().nth(1).unwrap().trim_start_matches("data: ")).unwrap();
    let doc = openapi();
    check(
        &doc,
        &doc["components"]["schemas"]["Summary"],
        &data,
        "update",
    );
    assert_eq!(
        (data["sites"].as_u64(), data["openConnections"].as_u64()),
        (Some(2), Some(1))
    );
}

fn internal() -> Console {
    let users = Users::parse(&users_file_line("admin", "s3cret").unwrap()).unwrap();
    fixture(AuthMode::Internal(users))
}

fn login_request(user: &str, password: &str, from: SocketAddr) -> Request<Body> {
    let mut req = Request::post("/api/v1/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::json!({ "username": user, "password": password }).to_string(),
        ))
        .unwrap();
    req.extensions_mut().insert(ConnectInfo(from));
    req
}

fn with_cookie(uri: &str, cookie: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::COOKIE, format!("other=1; {cookie}"))
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn the_api_needs_a_session() {
    let console = internal();
    let app = console.app();
    let doc = openapi();
    for uri in [
        "/api/v1/sites",
        "/api/v1/user",
        "/metrics",
        "/api/v1/events",
    ] {
        let a = get(&app, uri).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(a.error(), "not logged in");
    }
    // What the page needs before logging in is open.
    for uri in ["/", "/assets/app.js", "/api/v1/openapi.json"] {
        assert_eq!(get(&app, uri).await.status, StatusCode::OK, "{uri}");
    }
    let a = call(&app, login_request("admin", "wrong", peer(7))).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.error(), "wrong username or password");
    conforms(&doc, "/api/v1/login", "post", &a);
    // Unknown users are refused the same way.
    let a = call(&app, login_request("mallory", "s3cret", peer(7))).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    let a = call(&app, login_request("admin", "s3cret", peer(8))).await;
    assert_eq!(a.status, StatusCode::OK);
    conforms(&doc, "/api/v1/login", "post", &a);
    let set = a.headers[header::SET_COOKIE].to_str().unwrap().to_string();
    assert!(
        set.ends_with("; HttpOnly; SameSite=Strict; Path=/"),
        "{set}"
    );
    assert!(!set.contains("Secure"));
    let cookie = set.split(';').next().unwrap().to_string();
    assert_eq!(cookie.len(), "van_console_session=".len() + 64);
    let a = call(&app, with_cookie("/api/v1/user", &cookie)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.json(),
        serde_json::json!({"username": "admin", "authMode": "internal"})
    );
    assert_eq!(
        call(&app, with_cookie("/metrics", &cookie)).await.status,
        StatusCode::OK
    );

    // Another console process does not know this session.
    let other = internal().app();
    let a = call(&other, with_cookie("/api/v1/sites", &cookie)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    let mut logout = Request::post("/api/v1/logout")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    logout.extensions_mut().insert(ConnectInfo(peer(8)));
    let a = call(&app, logout).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert!(
        a.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let a = call(&app, with_cookie("/api/v1/sites", &cookie)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn failed_logins_are_limited_per_address() {
    let app = internal().app();
    let doc = openapi();
    for i in 0..5 {
        let a = call(&app, login_request("admin", "guess", peer(9))).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "attempt {}", i + 1);
    }
    // The sixth is not even checked: even the right password waits.
    let a = call(&app, login_request("admin", "s3cret", peer(9))).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = a.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    conforms(&doc, "/api/v1/login", "post", &a);
    // Another address may still log in.
    let a = call(&app, login_request("admin", "s3cret", peer(10))).await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn login_takes_only_json() {
    let app = internal().app();
    let doc = openapi();
    let mut form = Request::post("/api/v1/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("username=admin&password=s3cret"))
        .unwrap();
    form.extensions_mut().insert(ConnectInfo(peer(11)));
    let a = call(&app, form).await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    conforms(&doc, "/api/v1/login", "post", &a);
    let mut bad = Request::post("/api/v1/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"username":"admin"}"#))
        .unwrap();
    bad.extensions_mut().insert(ConnectInfo(peer(11)));
    let a = call(&app, bad).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    conforms(&doc, "/api/v1/login", "post", &a);
    // Only GET reads.
    let a = call(
        &unsecured(),
        Request::post("/api/v1/sites").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn the_document_lists_every_field_the_items_have() {
    let doc = openapi();
    let schemas = &doc["components"]["schemas"];
    for (schema, fields) in [
        ("Site", fields::SITE),
        ("Router", fields::ROUTER),
        ("Link", fields::LINK),
        ("Service", fields::SERVICE),
        ("Port", fields::PORT),
        ("Process", fields::PROCESS),
        ("SitePair", fields::SITEPAIR),
        ("ProcessPair", fields::PROCESSPAIR),
        ("Connection", fields::CONNECTION),
        ("Request", fields::REQUEST),
    ] {
        let props: Vec<&str> = schemas[schema]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = fields.to_vec();
        let mut have = props.clone();
        want.sort();
        have.sort();
        assert_eq!(have, want, "{schema}");
        // Every field is something sortBy may name.
        let path = match schema {
            "Port" => "/api/v1/listeners".to_string(),
            "Process" => "/api/v1/processes".to_string(),
            "SitePair" => "/api/v1/sitepairs".to_string(),
            "ProcessPair" => "/api/v1/processpairs".to_string(),
            s => format!("/api/v1/{}s", s.to_lowercase()),
        };
        let sort = doc["paths"][&path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "sortBy")
            .unwrap_or_else(|| panic!("{path}: no sortBy"));
        assert_eq!(
            sort["schema"]["enum"].as_array().unwrap().len(),
            fields.len() * 2,
            "{path}"
        );
    }
    // Every route the app serves is in the document, and nothing else.
    let documented: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(documented.len(), 22);
}
