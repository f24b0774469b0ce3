//! The HTTP surface: the REST API of docs/console-api.md, its OpenAPI document, live updates
//! (server-sent events), `/metrics`, login, and the web page's files.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio_stream::StreamExt as _;

use crate::Console;
use crate::auth::{AuthMode, COOKIE, LoginError, session_cookie};
use crate::store::{Conn, Request as HttpRequest, SLOT_SECS, Store};
use crate::views::{Pair, PairItem, Process, ProcessItem, Range};

mod query;
#[cfg(test)]
mod tests;

use query::{Getter, Key, ListQuery, Page, contains_ci, joined, list_json, list_typed};

/// The OpenAPI document of this API.
const OPENAPI: &str = include_str!("openapi.json");
const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

/// Every failure a handler answers with, mapped to a status here and nowhere else.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{param}: {reason}")]
    BadParam { param: String, reason: String },
    #[error("{0}")]
    BadBody(String),
    #[error("{0}")]
    UnsupportedBody(String),
    #[error("not logged in")]
    NotLoggedIn,
    #[error("wrong username or password")]
    WrongCredentials,
    #[error("too many failed logins; try again later")]
    TooManyFailures { retry_after: Duration },
    #[error("{0}")]
    NotFound(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadParam { .. } | ApiError::BadBody(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedBody(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotLoggedIn | ApiError::WrongCredentials => StatusCode::UNAUTHORIZED,
            ApiError::TooManyFailures { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        };
        let mut resp = (status, json_body(&json!({ "error": self.to_string() }))).into_response();
        if let ApiError::TooManyFailures { retry_after } = self {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
}

fn bad_param(param: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::BadParam {
        param: param.into(),
        reason: reason.to_string(),
    }
}

/// A JSON response from bytes already serialized (under the store's lock, which the page
/// borrows from).
fn json_body(v: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(v) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

type ApiResult = Result<Response, ApiError>;

/// The query parameters in order; a query that does not decode is a 400 like any other.
struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map(|Query(p)| Params(p))
            .map_err(|e| bad_param("query", e.body_text()))
    }
}

impl Params {
    /// The last value of `name`.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The path's one parameter; one that does not decode is a 400 like any other.
struct Id(String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| Id(p))
            .map_err(|e| bad_param("path", e.body_text()))
    }
}

/// The whole HTTP application.
/// The REST API, metrics and page, and the same views over gRPC behind the same login.
pub(crate) fn app(console: Console) -> Router {
    let rest = rest_app(console.clone());
    let grpc = crate::grpc::routes(rest.clone()).route_layer(middleware::from_fn_with_state(
        console,
        require_session_grpc,
    ));
    rest.merge(grpc)
}

fn rest_app(console: Console) -> Router {
    let protected = Router::new()
        .route("/api/v1/user", get(user))
        .route("/api/v1/sites", get(sites))
        .route("/api/v1/sites/{id}", get(site))
        .route("/api/v1/routers", get(routers))
        .route("/api/v1/routers/{id}", get(router))
        .route("/api/v1/links", get(links))
        .route("/api/v1/services", get(services))
        .route("/api/v1/services/{address}", get(service))
        .route("/api/v1/services/{address}/series", get(series))
        .route("/api/v1/listeners", get(listeners))
        .route("/api/v1/connectors", get(connectors))
        .route("/api/v1/processes", get(processes))
        .route("/api/v1/sitepairs", get(sitepairs))
        .route("/api/v1/processpairs", get(processpairs))
        .route("/api/v1/connections", get(connections))
        .route("/api/v1/requests", get(requests))
        .route("/api/v1/topology", get(topology))
        .route("/api/v1/events", get(events))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            console.clone(),
            require_session,
        ));
    Router::new()
        .merge(protected)
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/assets/app.js", get(app_js))
        .route("/assets/style.css", get(style_css))
        .route("/", get(index))
        .fallback(fallback)
        .layer(middleware::from_fn(common_headers))
        .with_state(console)
}

/// Nothing the console serves may be framed or sniffed; API answers are not cached.
async fn common_headers(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session_cookie)
}

/// The user a request comes from, if it may look.
fn current_user(console: &Console, headers: &HeaderMap) -> Option<String> {
    if console.auth().unsecured() {
        return Some("anonymous".into());
    }
    let id = session_id(headers)?;
    console
        .auth()
        .session(id, tokio::time::Instant::now())
        .map(|u| u.to_string())
}

async fn require_session(
    State(console): State<Console>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if current_user(&console, req.headers()).is_none() {
        return Err(ApiError::NotLoggedIn);
    }
    Ok(next.run(req).await)
}

/// As `require_session`, answering as gRPC does (status in the trailers-only response).
async fn require_session_grpc(
    State(console): State<Console>,
    req: Request,
    next: Next,
) -> Response {
    if current_user(&console, req.headers()).is_none() {
        return tonic::Status::unauthenticated(
            "log in first (POST /api/v1/login) and send its session cookie as `cookie` metadata",
        )
        .into_http::<axum::body::Body>()
        .into_response();
    }
    next.run(req).await
}

// === login ===

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

fn cookie(console: &Console, value: &str, max_age: Option<u64>) -> HeaderValue {
    let secure = if console.secure_cookies() {
        "; Secure"
    } else {
        ""
    };
    let age = max_age.map_or(String::new(), |a| format!("; Max-Age={a}"));
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/{secure}{age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn login(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<axum::Json<LoginBody>, JsonRejection>,
) -> ApiResult {
    let axum::Json(body) = body.map_err(|e| match e {
        JsonRejection::MissingJsonContentType(e) => ApiError::UnsupportedBody(e.body_text()),
        e => ApiError::BadBody(e.body_text()),
    })?;
    if console.auth().unsecured() {
        return Ok(json_body(&json!({ "username": "anonymous" })));
    }
    let c = console.clone();
    let user = body.username.clone();
    let now = tokio::time::Instant::now();
    // Argon2 takes tens of milliseconds of CPU: not on the async threads.
    let result = tokio::task::spawn_blocking(move || {
        c.auth()
            .login(peer.ip(), &body.username, &body.password, now)
    })
    .await
    .unwrap_or(Err(LoginError::Wrong));
    match result {
        Ok(id) => {
            tracing::info!(%user, client = %peer.ip(), "Logged in");
            let mut resp = json_body(&json!({ "username": user }));
            resp.headers_mut()
                .insert(header::SET_COOKIE, cookie(&console, &id, None));
            Ok(resp)
        }
        Err(LoginError::Wrong) => {
            tracing::info!(%user, client = %peer.ip(), "Login refused");
            Err(ApiError::WrongCredentials)
        }
        Err(LoginError::TooMany { retry_after }) => {
            tracing::warn!(client = %peer.ip(), "Too many failed logins");
            Err(ApiError::TooManyFailures { retry_after })
        }
    }
}

async fn logout(State(console): State<Console>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        console.auth().logout(id);
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie(&console, "", Some(0)));
    resp
}

async fn user(State(console): State<Console>, headers: HeaderMap) -> ApiResult {
    let mode = match console.auth().mode {
        AuthMode::Internal(_) => "internal",
        AuthMode::Unsecured => "unsecured",
    };
    let name = current_user(&console, &headers).ok_or(ApiError::NotLoggedIn)?;
    Ok(json_body(&json!({ "username": name, "authMode": mode })))
}

// === small lists ===

/// Field names of each kind of item: what `sortBy` and filters may name.
pub(crate) mod fields {
    pub(crate) const SITE: &[&str] = &[
        "id",
        "name",
        "mode",
        "version",
        "routers",
        "up",
        "links",
        "servicesOffered",
        "servicesConsumed",
    ];
    pub(crate) const ROUTER: &[&str] = &[
        "id",
        "siteId",
        "siteName",
        "mode",
        "version",
        "hostname",
        "startTime",
        "activeFlows",
        "flowsTotal",
        "up",
    ];
    pub(crate) const LINK: &[&str] = &[
        "id",
        "routerId",
        "siteId",
        "name",
        "role",
        "direction",
        "state",
        "peerRouterId",
        "peerSiteId",
        "cost",
        "bytesOut",
        "bytesIn",
        "errors",
        "lastError",
        "upSeconds",
    ];
    pub(crate) const SERVICE: &[&str] = &[
        "address",
        "protocol",
        "servedBy",
        "reachedFrom",
        "openConnections",
        "connections",
        "requests",
        "bytesOut",
        "bytesIn",
    ];
    pub(crate) const PORT: &[&str] = &[
        "id", "routerId", "siteId", "name", "address", "protocol", "host", "port", "state",
        "opened", "closed", "bytesOut", "bytesIn",
    ];
    pub(crate) const PROCESS: &[&str] = &[
        "id",
        "siteId",
        "host",
        "role",
        "addresses",
        "connections",
        "bytesOut",
        "bytesIn",
    ];
    pub(crate) const SITEPAIR: &[&str] = &[
        "id",
        "sourceSiteId",
        "destSiteId",
        "address",
        "protocol",
        "connections",
        "openConnections",
        "requests",
        "bytesOut",
        "bytesIn",
    ];
    pub(crate) const PROCESSPAIR: &[&str] = &[
        "id",
        "sourceSiteId",
        "sourceHost",
        "destSiteId",
        "destHost",
        "address",
        "protocol",
        "connections",
        "openConnections",
        "requests",
        "bytesOut",
        "bytesIn",
    ];
    pub(crate) const CONNECTION: &[&str] = &[
        "id",
        "address",
        "protocol",
        "state",
        "sourceSiteId",
        "sourceRouterId",
        "clientAddr",
        "destSiteId",
        "destRouterId",
        "serverAddr",
        "path",
        "startTime",
        "endTime",
        "durationMs",
        "bytesOut",
        "bytesIn",
        "firstByteMs",
        "outcome",
        "error",
    ];
    pub(crate) const REQUEST: &[&str] = &[
        "id",
        "connectionId",
        "address",
        "method",
        "path",
        "status",
        "statusClass",
        "sourceSiteId",
        "clientAddr",
        "destSiteId",
        "destRouterId",
        "startTime",
        "latencyMs",
        "durationMs",
        "bytesOut",
        "bytesIn",
        "error",
        "version",
    ];
}

/// Lists items built under the read lock, with `default_sort` unless the query sorts.
fn small_list<T: serde::Serialize>(
    console: &Console,
    params: &[(String, String)],
    fields: &[&str],
    default_sort: (&str, bool),
    build: impl FnOnce(&Store, &ListQuery, u64) -> Vec<T>,
) -> ApiResult {
    let mut q = query::parse(params, fields, false)?;
    if q.sort.is_none() {
        q.sort = Some((default_sort.0.into(), default_sort.1));
    }
    let now = crate::now_us();
    let items = build(&console.read(), &q, now);
    Ok(json_body(&list_json(items, &q)))
}

async fn sites(State(c): State<Console>, Params(p): Params) -> ApiResult {
    small_list(&c, &p, fields::SITE, ("name", false), |s, _, _| {
        s.site_items()
    })
}

/// The item of `items` that `is` the one asked for, or 404 naming it.
fn one<T: serde::Serialize>(
    items: Vec<T>,
    is: impl Fn(&T) -> bool,
    what: &str,
    id: &str,
) -> ApiResult {
    items
        .into_iter()
        .find(is)
        .map(|i| json_body(&i))
        .ok_or_else(|| ApiError::NotFound(format!("no {what} {id:?}")))
}

async fn site(State(c): State<Console>, Id(id): Id) -> ApiResult {
    one(c.read().site_items(), |s| s.id == id, "site", &id)
}

async fn routers(State(c): State<Console>, Params(p): Params) -> ApiResult {
    small_list(&c, &p, fields::ROUTER, ("id", false), |s, q, _| {
        let mut items = s.router_items();
        items.retain(|r| q.range.overlaps(r.start_time * 1000, u64::MAX));
        items
    })
}

async fn router(State(c): State<Console>, Id(id): Id) -> ApiResult {
    one(c.read().router_items(), |r| r.id == id, "router", &id)
}

async fn links(State(c): State<Console>, Params(p): Params) -> ApiResult {
    small_list(&c, &p, fields::LINK, ("id", false), |s, _, _| {
        s.link_items()
    })
}

async fn services(State(c): State<Console>, Params(p): Params) -> ApiResult {
    small_list(&c, &p, fields::SERVICE, ("address", false), |s, q, now| {
        s.service_items(q.range, now)
    })
}

async fn service(State(c): State<Console>, Id(address): Id) -> ApiResult {
    let store = c.read();
    let items = if store.has_address(&address) {
        store.service_items(Range::ALL, crate::now_us())
    } else {
        Vec::new()
    };
    one(items, |s| s.address == address, "service", &address)
}

async fn series(State(c): State<Console>, Id(address): Id, p: Params) -> ApiResult {
    let num =
        |name: &str, default: u64| p.get(name).map_or(Ok(default), |v| query::number(name, v));
    let window = num("window", 300)?;
    let step = num("step", SLOT_SECS)?;
    if !(300..=86_400).contains(&window) {
        return Err(bad_param("window", "between 300 and 86400 seconds"));
    }
    if step == 0 || step % SLOT_SECS != 0 || step > window {
        return Err(bad_param(
            "step",
            format!("a multiple of {SLOT_SECS} seconds, at most the window"),
        ));
    }
    let store = c.read();
    if !store.has_address(&address) {
        return Err(ApiError::NotFound(format!("no service {address:?}")));
    }
    let now = crate::now_us();
    let points = store
        .series
        .get(address.as_str())
        .map(|s| s.points(now, window, step))
        .unwrap_or_else(|| crate::store::Series::default().points(now, window, step));
    Ok(json_body(
        &json!({ "address": address, "step": step, "points": points }),
    ))
}

async fn listeners(State(c): State<Console>, Params(p): Params) -> ApiResult {
    small_list(&c, &p, fields::PORT, ("id", false), |s, _, _| {
        s.listener_items()
    })
}

async fn connectors(State(c): State<Console>, Params(p): Params) -> ApiResult {
    small_list(&c, &p, fields::PORT, ("id", false), |s, _, _| {
        s.connector_items()
    })
}

/// Items of lists that can be as long as the connections' (one per client host): filtered
/// and sorted on their fields before they are items, and only the page made into items.
trait Keyed {
    type Item: serde::Serialize;
    fn key(&self, field: &str) -> Key<'_>;
    fn has_text(&self, needle: &str) -> bool;
    fn item(&self) -> Self::Item;
}

impl Keyed for Process<'_> {
    type Item = ProcessItem;

    fn key(&self, field: &str) -> Key<'_> {
        match field {
            "id" => joined(&self.id()),
            "siteId" => Key::Str(self.site),
            "host" => Key::Str(self.host),
            "role" => Key::Str(self.role),
            "addresses" => Key::StrRefs(&self.addresses),
            "connections" => Key::Num(self.connections),
            "bytesOut" => Key::Num(self.bytes_out),
            "bytesIn" => Key::Num(self.bytes_in),
            _ => Key::Missing,
        }
    }

    fn has_text(&self, n: &str) -> bool {
        contains_ci(&self.id().concat(), n)
            || contains_ci(self.role, n)
            || self.addresses.iter().any(|a| contains_ci(a, n))
    }

    fn item(&self) -> ProcessItem {
        Process::item(self)
    }
}

impl Keyed for Pair<'_> {
    type Item = PairItem;

    fn key(&self, field: &str) -> Key<'_> {
        let (ss, sh, ds, dh) = self.key;
        let host = |h| {
            if self.processes {
                Key::Str(h)
            } else {
                Key::Missing
            }
        };
        let t = &self.tally;
        match field {
            "id" => joined(&self.id()),
            "sourceSiteId" => Key::Str(ss),
            "destSiteId" => Key::Str(ds),
            "sourceHost" => host(sh),
            "destHost" => host(dh),
            "address" => self.address.map_or(Key::Missing, Key::Str),
            "protocol" => Key::Str(self.protocol()),
            "connections" => Key::Num(t.connections),
            "openConnections" => Key::Num(t.open),
            "requests" => Key::Num(t.requests),
            "bytesOut" => Key::Num(t.bytes_out),
            "bytesIn" => Key::Num(t.bytes_in),
            _ => Key::Missing,
        }
    }

    fn has_text(&self, n: &str) -> bool {
        contains_ci(&self.id().concat(), n) || contains_ci(self.protocol(), n)
    }

    fn item(&self) -> PairItem {
        Pair::item(self)
    }
}

fn keyed_list<T: Keyed>(items: &[T], q: &ListQuery) -> ApiResult {
    let page = list_typed(
        items.iter(),
        q,
        |f| {
            let f = f.to_string();
            Box::new(move |i: &T| i.key(&f))
        },
        |i, n| i.has_text(n),
        Keyed::item,
    );
    Ok(json_body(&page))
}

/// The query of a keyed list, sorted by id unless it says otherwise.
fn keyed_query(params: &[(String, String)], fields: &[&str]) -> Result<ListQuery, ApiError> {
    let mut q = query::parse(params, fields, false)?;
    if q.sort.is_none() {
        q.sort = Some(("id".into(), false));
    }
    Ok(q)
}

async fn processes(State(c): State<Console>, Params(p): Params) -> ApiResult {
    let q = keyed_query(&p, fields::PROCESS)?;
    let store = c.read();
    keyed_list(&store.processes(q.range, crate::now_us()), &q)
}

/// `address` narrows what pairs count, rather than filtering pairs afterwards.
fn pairs(c: &Console, p: &[(String, String)], processes: bool) -> ApiResult {
    let fields = if processes {
        fields::PROCESSPAIR
    } else {
        fields::SITEPAIR
    };
    let address = p
        .iter()
        .rev()
        .find(|(k, _)| k == "address")
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty());
    let rest: Vec<(String, String)> = p.iter().filter(|(k, _)| k != "address").cloned().collect();
    let q = keyed_query(&rest, fields)?;
    let store = c.read();
    keyed_list(
        &store.pairs(q.range, crate::now_us(), address.as_deref(), processes),
        &q,
    )
}

async fn sitepairs(State(c): State<Console>, Params(p): Params) -> ApiResult {
    pairs(&c, &p, false)
}

async fn processpairs(State(c): State<Console>, Params(p): Params) -> ApiResult {
    pairs(&c, &p, true)
}

async fn topology(State(c): State<Console>, p: Params) -> ApiResult {
    let store = c.read();
    let address = p.get("address").filter(|a| !a.is_empty());
    Ok(json_body(&store.topology(crate::now_us(), address)))
}

// === connections and requests ===

/// The value of one field of a connection, chosen once per query rather than per item.
fn conn_getter<'a>(s: &'a Store, field: &str, now: u64) -> Getter<'a, Conn> {
    fn text(v: Option<&crate::store::Str>) -> Key<'_> {
        Key::Str(v.map_or("", |v| v))
    }
    match field {
        "id" => Box::new(|c| Key::Hex(c.flow_id)),
        "address" => Box::new(|c| Key::Str(&c.address)),
        "protocol" => Box::new(|c| Key::Str(&c.protocol)),
        "state" => Box::new(|c| {
            Key::Str(if c.terminated() {
                "terminated"
            } else {
                "active"
            })
        }),
        "sourceSiteId" => Box::new(move |c| text(s.conn_sites(c).0)),
        "sourceRouterId" => Box::new(|c| text(c.source_router())),
        "clientAddr" => Box::new(|c| Key::Str(&c.client_addr)),
        "destSiteId" => Box::new(move |c| text(s.conn_sites(c).1)),
        "destRouterId" => Box::new(|c| text(c.dest_router.as_ref())),
        "serverAddr" => Box::new(|c| Key::Str(&c.server_addr)),
        "path" => Box::new(|c| Key::Strs(&c.path)),
        "startTime" => Box::new(|c| Key::Time(c.start_us)),
        "endTime" => Box::new(|c| {
            if c.terminated() {
                Key::Time(c.end_us)
            } else {
                Key::Missing
            }
        }),
        "durationMs" => Box::new(move |c| {
            let end = if c.terminated() {
                c.end_us
            } else {
                now.max(c.start_us)
            };
            Key::Time(end.saturating_sub(c.start_us))
        }),
        "bytesOut" => Box::new(|c| Key::Num(c.bytes_out)),
        "bytesIn" => Box::new(|c| Key::Num(c.bytes_in)),
        "firstByteMs" => Box::new(|c| {
            if c.first_byte_us > 0 {
                Key::Ms(c.first_byte_us)
            } else {
                Key::Missing
            }
        }),
        "outcome" => Box::new(|c| Key::Str(&c.outcome)),
        "error" => Box::new(|c| Key::Str(&c.error)),
        _ => Box::new(|_| Key::Missing),
    }
}

async fn connections(State(c): State<Console>, Params(p): Params) -> ApiResult {
    let q = query::parse(&p, fields::CONNECTION, true)?;
    let now = crate::now_us();
    let store = c.read();
    let newest_first = q.sort.is_none() || q.sort == Some(("startTime".into(), true));
    let q = ListQuery {
        sort: if newest_first { None } else { q.sort.clone() },
        ..q
    };
    let range = q.range;
    let active = q.active;
    // In start order, newest first, from the end of the range down.
    let items = store
        .by_start
        .range(..=(range.end_us, u64::MAX))
        .rev()
        .filter_map(|(_, id)| store.conns.get(id))
        .filter(|c| range.has_conn(c, now))
        .filter(|c| active.is_none_or(|a| a != c.terminated()));
    let page: Page<_> = list_typed(
        items,
        &q,
        |f| conn_getter(&store, f, now),
        |c, n| {
            [&*c.address, &c.client_addr, &c.server_addr]
                .iter()
                .any(|t| contains_ci(t, n))
        },
        |c| store.conn_item(c, now),
    );
    Ok(json_body(&page))
}

/// The value of one field of a request, chosen once per query.
fn request_getter<'a>(s: &'a Store, field: &str) -> Getter<'a, HttpRequest> {
    fn text(v: Option<&crate::store::Str>) -> Key<'_> {
        Key::Str(v.map_or("", |v| v))
    }
    match field {
        "id" => Box::new(|r| Key::Num(r.seq)),
        "connectionId" => Box::new(move |r| {
            if r.flow_id != 0 && s.conns.contains_key(&r.flow_id) {
                Key::Hex(r.flow_id)
            } else {
                Key::Missing
            }
        }),
        "address" => Box::new(|r| Key::Str(&r.address)),
        "method" => Box::new(|r| Key::Str(&r.method)),
        "path" => Box::new(|r| Key::Str(&r.path)),
        "status" => Box::new(|r| Key::Num(r.status.into())),
        "statusClass" => Box::new(|r| Key::Str(crate::store::status_class(r.status))),
        "sourceSiteId" => Box::new(move |r| text(s.request_sites(r).0)),
        "clientAddr" => Box::new(|r| Key::Str(&r.client_addr)),
        "destSiteId" => Box::new(move |r| text(s.request_sites(r).1)),
        "destRouterId" => Box::new(|r| text(r.dest_router.as_ref())),
        "startTime" => Box::new(|r| Key::Time(r.start_us)),
        "latencyMs" => Box::new(|r| Key::Ms(r.latency_us)),
        "durationMs" => Box::new(|r| Key::Ms(r.duration_us)),
        "bytesOut" => Box::new(|r| Key::Num(r.bytes_out)),
        "bytesIn" => Box::new(|r| Key::Num(r.bytes_in)),
        "error" => Box::new(|r| Key::Str(&r.error)),
        "version" => Box::new(|r| Key::Str(&r.version)),
        _ => Box::new(|_| Key::Missing),
    }
}

async fn requests(State(c): State<Console>, Params(p): Params) -> ApiResult {
    let q = query::parse(&p, fields::REQUEST, true)?;
    let store = c.read();
    let newest_first = q.sort.is_none() || q.sort == Some(("startTime".into(), true));
    let q = ListQuery {
        sort: if newest_first { None } else { q.sort.clone() },
        ..q
    };
    let range = q.range;
    // Requests are recorded when they end: none is active.
    let none_active = q.active == Some(true);
    let items = store
        .requests
        .range(..=(range.end_us, u64::MAX))
        .rev()
        .map(|(_, r)| r)
        .filter(|r| !none_active && range.has_request(r));
    let page: Page<_> = list_typed(
        items,
        &q,
        |f| request_getter(&store, f),
        |r, n| {
            [&*r.address, &r.client_addr, &r.path]
                .iter()
                .any(|t| contains_ci(t, n))
        },
        |r| store.request_item(r),
    );
    Ok(json_body(&page))
}

// === events, metrics, files ===

async fn events(
    State(c): State<Console>,
) -> Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>> {
    let ticks =
        tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(Duration::from_secs(1)));
    let stream = ticks.map(move |_| {
        let summary = c.read().summary(crate::now_us());
        Ok(Event::default()
            .event("update")
            .json_data(summary)
            .unwrap_or_else(|_| Event::default().event("update")))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn metrics(State(c): State<Console>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::render(&c),
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(OPENAPI),
    )
        .into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

/// Unknown API routes and assets are 404; any other path is one of the page's own routes
/// (`/topology`, `/services/NAME`, …), so it gets the page.
async fn fallback(req: Request) -> Response {
    let path = req.uri().path();
    if path.starts_with("/api/") || path.starts_with("/assets/") || path == "/metrics" {
        return ApiError::NotFound(format!("no such path {path}")).into_response();
    }
    index().await
}
