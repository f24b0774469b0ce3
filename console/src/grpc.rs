//! The views over gRPC (`van.console.v1.Console`): each call is answered by the REST route
//! of the same list, with the same query, and its JSON read into the typed message, so the
//! two APIs cannot drift apart. The routes sit behind the same login as the REST API.

use axum::body::Body;
use axum::http::{Request as HttpRequest, StatusCode, header};
use tonic::{Request, Response, Status};
use tower::ServiceExt;
use van_proto::console as pb;
use van_proto::console::console_server::{Console as ConsoleApi, ConsoleServer};

/// Answers gRPC calls from `rest`, the REST application.
#[derive(Clone)]
pub(crate) struct Views {
    rest: axum::Router,
}

impl std::fmt::Debug for Views {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Views")
    }
}

/// The gRPC routes, as an axum router to merge beside the REST ones.
pub(crate) fn routes(rest: axum::Router) -> axum::Router {
    use tonic::server::NamedService;
    let path = format!("/{}/{{*method}}", ConsoleServer::<Views>::NAME);
    axum::Router::new().route_service(&path, ConsoleServer::new(Views { rest }))
}

/// `ListQuery` as the REST API's query string.
fn query_string(q: &pb::ListQuery) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    let mut params: Vec<(String, String)> = Vec::new();
    let mut num = |k: &str, v: u64| {
        if v > 0 {
            params.push((k.into(), v.to_string()));
        }
    };
    num("offset", q.offset);
    num("limit", q.limit);
    num("start", q.start);
    num("end", q.end);
    for (k, v) in [("sortBy", &q.sort_by), ("state", &q.state), ("q", &q.q)] {
        if !v.is_empty() {
            params.push((k.into(), v.clone()));
        }
    }
    let mut filters: Vec<_> = q.filters.iter().collect();
    filters.sort();
    params.extend(filters.into_iter().map(|(k, v)| (k.clone(), v.clone())));
    params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl Views {
    /// GETs `path` with the query and the caller's cookie; the JSON answer as `T`.
    async fn list<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        req: Request<pb::ListQuery>,
    ) -> Result<Response<T>, Status> {
        let cookie = req.metadata().get("cookie").cloned();
        let uri = format!("{path}?{}", query_string(req.get_ref()));
        let mut http = HttpRequest::get(uri);
        if let Some(c) = cookie.and_then(|c| c.to_str().ok().map(str::to_string)) {
            http = http.header(header::COOKIE, c);
        }
        let http = http
            .body(Body::empty())
            .map_err(|e| Status::invalid_argument(format!("bad query: {e}")))?;
        let resp = self
            .rest
            .clone()
            .oneshot(http)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .map_err(|e| Status::internal(format!("reading the answer: {e}")))?;
        if status != StatusCode::OK {
            // The REST API's errors are {"error": "..."}.
            let msg = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| status.to_string());
            return Err(match status {
                StatusCode::BAD_REQUEST => Status::invalid_argument(msg),
                StatusCode::UNAUTHORIZED => Status::unauthenticated(msg),
                StatusCode::NOT_FOUND => Status::not_found(msg),
                _ => Status::internal(msg),
            });
        }
        serde_json::from_slice(&body)
            .map(Response::new)
            .map_err(|e| Status::internal(format!("answer does not fit the message: {e}")))
    }
}

#[tonic::async_trait]
impl ConsoleApi for Views {
    async fn list_sites(
        &self,
        r: Request<pb::ListQuery>,
    ) -> Result<Response<pb::SiteList>, Status> {
        self.list("/api/v1/sites", r).await
    }
    async fn list_routers(
        &self,
        r: Request<pb::ListQuery>,
    ) -> Result<Response<pb::RouterList>, Status> {
        self.list("/api/v1/routers", r).await
    }
    async fn list_links(
        &self,
        r: Request<pb::ListQuery>,
    ) -> Result<Response<pb::LinkList>, Status> {
        self.list("/api/v1/links", r).await
    }
    async fn list_services(
        &self,
        r: Request<pb::ListQuery>,
    ) -> Result<Response<pb::ServiceList>, Status> {
        self.list("/api/v1/services", r).await
    }
    async fn list_listeners(
        &self,
        r: Request<pb::ListQuery>,
    ) -> Result<Response<pb::PortList>, Status> {
        self.list("/api/v1/listeners", r).await
    }
    async fn list_connectors(
        &self,
        r: Request<pb::ListQuery>,
    ) -> Result<Response<pb::PortList>, Status> {
        self.list("/api/v1/connectors", r).await
    }
    async fn list_processes(
        &self,
        r: Request<pb::ListQuery>,
    ) -> Result<Response<pb::ProcessList>, Status> {
        self.list("/api/v1/processes", r).await
    }
    async fn list_site_pairs(
        &self,
        r: Request<pb::ListQuery>,
    ) -> Result<Response<pb::PairList>, Status> {
        self.list("/api/v1/sitepairs", r).await
    }
    async fn list_process_pairs(
        &self,
        r: Request<pb::ListQuery>,
    ) -> Result<Response<pb::PairList>, Status> {
        self.list("/api/v1/processpairs", r).await
    }
    async fn list_connections(
        &self,
        r: Request<pb::ListQuery>,
    ) -> Result<Response<pb::ConnectionList>, Status> {
        self.list("/api/v1/connections", r).await
    }
    async fn list_requests(
        &self,
        r: Request<pb::ListQuery>,
    ) -> Result<Response<pb::RequestList>, Status> {
        self.list("/api/v1/requests", r).await
    }
}
