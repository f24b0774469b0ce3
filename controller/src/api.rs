//! The controller's gRPC API (`van.controller.v1.SiteController`). Errors become
//! `tonic::Status` here and nowhere else.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use van_proto::admin as rpb;
use van_proto::controller::{self as pb, site_controller_server::SiteController};

use crate::controller::Controller;
use crate::error::ControllerError;

#[derive(Debug, Clone)]
pub struct Api {
    c: Arc<Controller>,
}

impl Api {
    pub fn new(c: Arc<Controller>) -> Api {
        Api { c }
    }
}

/// The bearer token every call must carry when the API is served over TCP (Kubernetes), where
/// any pod that reaches the port could otherwise issue tokens or delete links. The gRPC health
/// service is served beside it without this check, so that kubelet's probes keep working.
#[derive(Clone)]
pub struct ApiToken(Arc<[u8]>);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

/// Shortest token accepted: guessing must stay out of reach.
pub const API_TOKEN_MIN_LEN: usize = 16;

impl ApiToken {
    /// A token from the text of a file or Secret (surrounding whitespace ignored).
    pub fn new(text: &str) -> Result<ApiToken, String> {
        let t = text.trim();
        if t.len() < API_TOKEN_MIN_LEN {
            return Err(format!(
                "the API token has {} characters; at least {API_TOKEN_MIN_LEN} are required",
                t.len()
            ));
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the API token must be printable ASCII without spaces".into());
        }
        Ok(ApiToken(t.as_bytes().into()))
    }

    /// The `authorization` header value a client sends.
    pub fn header(&self) -> String {
        format!("Bearer {}", String::from_utf8_lossy(&self.0))
    }

    /// Accepts a request whose `authorization` header carries this token.
    #[allow(clippy::result_large_err)]
    pub fn check<T>(&self, req: Request<T>) -> Result<Request<T>, Status> {
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(t) if crate::controller::constant_time_eq(t.as_bytes(), &self.0) => Ok(req),
            Some(_) => Err(Status::unauthenticated(
                "wrong API token (the bearer token is in Secret skupper-api-token)",
            )),
            None => Err(Status::unauthenticated(
                "missing API token: send `authorization: Bearer <token>` \
                 (the token is in Secret skupper-api-token)",
            )),
        }
    }
}

impl From<ControllerError> for Status {
    fn from(e: ControllerError) -> Status {
        let msg = van_telemetry::Report(&e).to_string();
        match e {
            ControllerError::Invalid(_) => Status::invalid_argument(msg),
            ControllerError::NotFound { .. } => Status::not_found(msg),
            ControllerError::Conflict(_) => Status::already_exists(msg),
            ControllerError::NotAllowed(_) => Status::failed_precondition(msg),
            ControllerError::Claim(c) if c.retry => Status::unavailable(msg),
            ControllerError::Claim(_) => Status::permission_denied(msg),
            ControllerError::Store(_) => Status::internal(msg),
            ControllerError::Unavailable(_) => Status::unavailable(msg),
        }
    }
}

type ConfigStream = Pin<Box<dyn Stream<Item = Result<pb::DesiredRouterConfig, Status>> + Send>>;
type PublicationStream = Pin<Box<dyn Stream<Item = Result<rpb::PublishRequest, Status>> + Send>>;

#[tonic::async_trait]
impl SiteController for Api {
    async fn get_site(
        &self,
        _: Request<pb::GetSiteRequest>,
    ) -> Result<Response<pb::SiteStatus>, Status> {
        Ok(Response::new(self.c.site_status()))
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        Ok(Response::new(
            self.c.create_token(req.into_inner()).await?.0,
        ))
    }

    async fn create_link(
        &self,
        req: Request<pb::CreateLinkRequest>,
    ) -> Result<Response<pb::LinkStatus>, Status> {
        Ok(Response::new(self.c.create_link(req.into_inner()).await?))
    }

    async fn delete_link(
        &self,
        req: Request<pb::DeleteLinkRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.c.delete_link(&req.into_inner().name).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn list_links(
        &self,
        _: Request<pb::ListLinksRequest>,
    ) -> Result<Response<pb::LinkList>, Status> {
        Ok(Response::new(pb::LinkList {
            links: self.c.link_statuses(),
        }))
    }

    async fn create_service(
        &self,
        req: Request<pb::CreateServiceRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        Ok(Response::new(
            self.c.create_service(req.into_inner()).await?,
        ))
    }

    async fn delete_service(
        &self,
        req: Request<pb::DeleteServiceRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.c.delete_service(&req.into_inner().address).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn bind(&self, req: Request<pb::BindRequest>) -> Result<Response<pb::Service>, Status> {
        Ok(Response::new(self.c.bind(req.into_inner()).await?))
    }

    async fn unbind(
        &self,
        req: Request<pb::UnbindRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        let req = req.into_inner();
        let delete = req.delete_if_unbound;
        Ok(Response::new(self.c.unbind(req, delete).await?))
    }

    async fn expose(
        &self,
        req: Request<pb::ExposeRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        Ok(Response::new(self.c.expose(req.into_inner()).await?))
    }

    async fn list_services(
        &self,
        _: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ServiceList>, Status> {
        Ok(Response::new(pb::ServiceList {
            services: self.c.services(),
        }))
    }

    async fn get_network(
        &self,
        _: Request<pb::GetNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        Ok(Response::new(self.c.network()))
    }

    type WatchRouterConfigStream = ConfigStream;

    async fn watch_router_config(
        &self,
        _: Request<pb::WatchRouterConfigRequest>,
    ) -> Result<Response<Self::WatchRouterConfigStream>, Status> {
        let c = self.c.clone();
        // Until the network is known (or the router is down, then there is nothing to
        // configure anyway), a configuration would drop every other site's services.
        let ready = async move {
            c.network_known(std::time::Duration::from_secs(5)).await;
            c.desired()
        };
        let tls_secret = self.c.router_tls_secret().map(str::to_string);
        Ok(Response::new(follow(&self.c, ready, move |cfg| {
            pb::DesiredRouterConfig {
                config: Some(match &tls_secret {
                    Some(_) => crate::desired::without_tls_material((**cfg).clone()),
                    None => (**cfg).clone(),
                }),
                tls_secret: tls_secret.clone().unwrap_or_default(),
            }
        })))
    }

    type WatchPublicationStream = PublicationStream;

    async fn watch_publication(
        &self,
        _: Request<pb::WatchPublicationRequest>,
    ) -> Result<Response<Self::WatchPublicationStream>, Status> {
        let rx = self.c.publication();
        Ok(Response::new(follow(&self.c, async { rx }, |record| {
            rpb::PublishRequest {
                topic: crate::network::TOPIC.into(),
                payload: serde_json::to_vec(&**record).expect("a record serialises"),
            }
        })))
    }

    async fn report_network(
        &self,
        req: Request<rpb::TopicSnapshot>,
    ) -> Result<Response<pb::Empty>, Status> {
        let snap = req.into_inner();
        if snap.topic != crate::network::TOPIC {
            return Err(Status::invalid_argument(format!(
                "topic: expected {:?}, got {:?}",
                crate::network::TOPIC,
                snap.topic
            )));
        }
        self.c.set_network(snap);
        Ok(Response::new(pb::Empty {}))
    }

    async fn report_observed(
        &self,
        req: Request<pb::ObservedState>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.c.report(req.into_inner());
        Ok(Response::new(pb::Empty {}))
    }
}

/// A stream of `map(value)` for the watch channel `rx` (once `rx` is ready): the current value,
/// then each new one, until the client goes away or the controller stops.
fn follow<T, U>(
    c: &Arc<Controller>,
    rx: impl std::future::Future<Output = tokio::sync::watch::Receiver<T>> + Send + 'static,
    map: impl Fn(&T) -> U + Send + 'static,
) -> Pin<Box<dyn Stream<Item = Result<U, Status>> + Send>>
where
    T: Send + Sync + 'static,
    U: Send + 'static,
{
    let mut stopped = Box::pin(c.stopped());
    let (tx, out) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let mut rx = tokio::select! {
            rx = rx => rx,
            _ = &mut stopped => return,
        };
        loop {
            let item = map(&rx.borrow_and_update());
            if tx.send(Ok(item)).await.is_err() {
                return;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
                _ = &mut stopped => return,
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(out))
}

/// Largest request message the API decodes (tonic's default, set here so it is a decision).
pub const MAX_MESSAGE: usize = 4 << 20;
