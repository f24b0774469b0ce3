//! The site controller's core: the state of one site and every operation on it. Platform
//! neutral; the platform provides a [`SiteStore`] and the sockets.
//!
//! Every change follows one path: copy the state, change the copy, validate, persist, and
//! only then make it current and recompute what follows from it (the router's desired
//! configuration and the record published to the network). A failed step changes nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::info;
use van_proto::admin as rpb;
use van_proto::controller as pb;

use crate::certs;
use crate::clock::{Clock, SystemClock};
use crate::desired::{self, PEER_SERVER_NAME, listener_name};
use crate::error::{ClaimError, ControllerError, Invalid, StoreError};
use crate::network::{self, PublishedLink, Remote, SiteRecord};
use crate::site::{
    ClaimRecord, LinkRecord, RouterMode, ServiceDef, SiteConfig, SiteState, SiteStore,
    check_service, check_target, default_protocol,
};
use crate::token::{CertToken, ClaimToken, Token};

pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(15 * 60);
/// config-sync reports at least this often while the router is up.
const OBSERVED_FRESH: Duration = Duration::from_secs(10);

/// What config-sync last reported.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub state: pb::ObservedState,
    pub at: Option<Instant>,
}

#[derive(Debug)]
pub struct Controller {
    pub cfg: SiteConfig,
    /// This controller, for the task that finishes a change (see [`Controller::change`]).
    me: Weak<Controller>,
    store: Arc<dyn SiteStore>,
    clock: Arc<dyn Clock>,
    /// The state as last saved. Held from reading it to making its successor current, so
    /// changes never interleave.
    state: Arc<tokio::sync::Mutex<SiteState>>,
    /// A copy of the current state for readers that must not wait on a change in progress.
    current: watch::Sender<Arc<SiteState>>,
    remote: watch::Sender<Arc<Remote>>,
    /// Whether `remote` has been heard from the router since start.
    remote_known: watch::Sender<bool>,
    /// What each router of the site (one per router pod) last reported, by router id.
    observed: Mutex<BTreeMap<String, Observed>>,
    desired: watch::Sender<Arc<rpb::RouterConfig>>,
    record: watch::Sender<Arc<SiteRecord>>,
    /// Set when the controller stops; API streams end on it.
    stopping: watch::Sender<bool>,
    /// Kubernetes: the Secret the router's TLS material is kept in, instead of the API.
    router_tls_secret: std::sync::OnceLock<String>,
    /// Kubernetes: the site may run several routers, linked to each other.
    router_peers: std::sync::OnceLock<()>,
}

impl Controller {
    /// Loads the site's state, creating its CA and server certificate on first start.
    pub async fn open(
        cfg: SiteConfig,
        store: Arc<dyn SiteStore>,
    ) -> Result<Arc<Controller>, ControllerError> {
        Self::open_with_clock(cfg, store, Arc::new(SystemClock)).await
    }

    /// `open`, dating tokens and definitions by `clock`.
    pub async fn open_with_clock(
        cfg: SiteConfig,
        store: Arc<dyn SiteStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Controller>, ControllerError> {
        cfg.validate()?;
        let mut state = store.load().await?;
        let public = cfg.public_hosts();
        let hosts = certs::server_hosts([
            cfg.ingress_host.as_str(),
            &public.inter_router,
            &public.edge,
            &public.claims,
            PEER_SERVER_NAME,
        ]);
        let mut dirty = false;
        match &mut state.certs {
            None => {
                info!(site = %cfg.name, "Creating the site CA and server certificate");
                state.certs = Some(
                    certs::new_site_certs(&cfg.id, hosts)
                        .map_err(|e| ControllerError::Unavailable(e.to_string()))?,
                );
                dirty = true;
            }
            Some(c) if c.server_hosts != hosts => {
                info!(
                    ?hosts,
                    "Ingress host changed; reissuing the server certificate"
                );
                certs::reissue_server(&cfg.id, c, hosts)
                    .map_err(|e| ControllerError::Unavailable(e.to_string()))?;
                dirty = true;
            }
            Some(_) => {}
        }
        if let Some(c) = state.certs.as_mut().filter(|c| c.peer_cert.is_empty()) {
            let (cert, key) = certs::issue_client(&cfg.id, c, &format!("{}-peer", cfg.name))
                .map_err(|e| ControllerError::Unavailable(e.to_string()))?;
            (c.peer_cert, c.peer_key) = (cert, key);
            dirty = true;
        }
        if dirty {
            store.save(&state).await?;
        }
        let state = Arc::new(state);
        let c = Arc::new_cyclic(|me| Controller {
            me: me.clone(),
            clock,
            desired: watch::channel(Arc::new(rpb::RouterConfig::default())).0,
            record: watch::channel(Arc::new(SiteRecord::build(&cfg, &state, Vec::new()))).0,
            current: watch::channel(state.clone()).0,
            state: Arc::new(tokio::sync::Mutex::new((*state).clone())),
            remote: watch::channel(Arc::new(Remote::new())).0,
            remote_known: watch::channel(false).0,
            stopping: watch::channel(false).0,
            router_tls_secret: std::sync::OnceLock::new(),
            router_peers: std::sync::OnceLock::new(),
            observed: Mutex::new(BTreeMap::new()),
            store,
            cfg,
        });
        c.refresh();
        Ok(c)
    }

    pub fn begin_stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Completes when the controller begins to stop.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stopping.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    pub fn state(&self) -> Arc<SiteState> {
        self.current.borrow().clone()
    }

    /// From now on the router's TLS material is handed over in Secret `name` (written by the
    /// platform, see [`desired::tls_secret_data`]) and left out of `WatchRouterConfig`.
    pub fn keep_router_tls_in_secret(&self, name: &str) {
        let _ = self.router_tls_secret.set(name.to_string());
    }

    /// From now on the site may run several routers (router pods), which link to each other
    /// with the peer profile ([`desired::PEER_PROFILE`]); see config-sync's `--peers`.
    pub fn enable_router_peers(&self) {
        if self.router_peers.set(()).is_ok() {
            self.refresh();
        }
    }

    /// The ids of the site's routers that reported recently.
    pub fn own_routers(&self) -> std::collections::BTreeSet<String> {
        self.observed
            .lock()
            .expect("observed")
            .iter()
            .filter(|(_, v)| v.at.is_some_and(|t| t.elapsed() < OBSERVED_FRESH))
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn router_tls_secret(&self) -> Option<&str> {
        self.router_tls_secret.get().map(String::as_str)
    }

    pub fn desired(&self) -> watch::Receiver<Arc<rpb::RouterConfig>> {
        self.desired.subscribe()
    }

    pub fn record(&self) -> watch::Receiver<Arc<SiteRecord>> {
        self.record.subscribe()
    }

    pub fn remote(&self) -> Arc<Remote> {
        self.remote.borrow().clone()
    }

    /// Replaces the view of the other sites (from the router's topic subscription).
    /// Waits until the network view has been heard from the router, or `limit` passed.
    /// A restarted controller that handed out a configuration before that would have the
    /// router drop every other site's services for a moment.
    pub async fn network_known(&self, limit: Duration) {
        let mut rx = self.remote_known.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|k| *k)).await;
    }

    pub fn set_remote(&self, r: Remote) {
        self.remote_known.send_replace(true);
        let changed = self.remote.send_if_modified(|cur| {
            if **cur == r {
                false
            } else {
                *cur = Arc::new(r);
                true
            }
        });
        if changed {
            self.refresh();
        }
    }

    /// The topic's values as the router reports them (through config-sync).
    pub fn set_network(&self, snap: rpb::TopicSnapshot) {
        let (remote, bad) = network::decode(
            snap.values
                .into_iter()
                .map(|v| (v.origin, v.payload))
                .collect(),
            &self.cfg.id,
        );
        for b in &bad {
            tracing::warn!(problem = %b, "Ignoring a site record");
        }
        self.set_remote(remote);
    }

    /// What config-sync should publish through the router.
    pub fn publication(&self) -> watch::Receiver<Arc<SiteRecord>> {
        self.record.subscribe()
    }

    /// Takes a router's report (config-sync sends one every 2 s per router).
    pub fn report(&self, o: pb::ObservedState) {
        {
            let mut all = self.observed.lock().expect("observed");
            // A router that stopped reporting (its pod is gone) drops out.
            all.retain(|_, v| v.at.is_some_and(|t| t.elapsed() < OBSERVED_FRESH * 3));
            all.insert(
                o.router_id.clone(),
                Observed {
                    state: o,
                    at: Some(Instant::now()),
                },
            );
        }
        self.refresh();
    }

    /// The site's routers' reports as one: the first router id (a stable choice), every
    /// link (a configured link as its least healthy replica has it), errors of any, flows of
    /// all, and the newest report time. With one router, its report as it is.
    fn observed(&self) -> Observed {
        let all = self.observed.lock().expect("observed");
        let fresh: Vec<&Observed> = all
            .values()
            .filter(|v| v.at.is_some_and(|t| t.elapsed() < OBSERVED_FRESH))
            .collect();
        match fresh.as_slice() {
            [] => all
                .values()
                .max_by_key(|v| v.at)
                .cloned()
                .unwrap_or_default(),
            [one] => (*one).clone(),
            many => {
                let mut out = Observed {
                    state: pb::ObservedState {
                        router_id: many[0].state.router_id.clone(),
                        in_sync: many.iter().all(|o| o.state.in_sync),
                        ..Default::default()
                    },
                    at: many.iter().filter_map(|o| o.at).max(),
                };
                let mut links: Vec<rpb::Link> = Vec::new();
                for o in many {
                    out.state.active_flows += o.state.active_flows;
                    for (k, v) in &o.state.apply_errors {
                        out.state
                            .apply_errors
                            .entry(k.clone())
                            .or_insert_with(|| v.clone());
                    }
                    for l in o.state.links.iter().flat_map(|l| l.links.iter()) {
                        let outgoing = l.direction != "incoming";
                        match links.iter_mut().find(|x| outgoing && x.name == l.name) {
                            // Up only where every router has it up.
                            Some(x) if x.state == "up" && l.state != "up" => *x = l.clone(),
                            Some(_) => {}
                            None => links.push(l.clone()),
                        }
                    }
                }
                out.state.links = Some(rpb::LinkList { links });
                out
            }
        }
    }

    /// The controller's time, in seconds since the Unix epoch.
    pub fn now_unix(&self) -> u64 {
        self.clock.now_unix()
    }

    /// What the router has not taken (entity → why), as config-sync last reported.
    pub fn apply_errors(&self) -> std::collections::HashMap<String, String> {
        self.observed().state.apply_errors
    }

    /// Whether config-sync reported recently.
    pub fn router_ready(&self) -> bool {
        self.observed()
            .at
            .is_some_and(|t| t.elapsed() < OBSERVED_FRESH)
    }

    /// Applies `f` to a copy of the state, persists it, and makes it current.
    pub(crate) async fn change<T>(
        &self,
        f: impl FnOnce(&mut SiteState) -> Result<T, ControllerError>,
    ) -> Result<T, ControllerError> {
        let mut guard = self.state.clone().lock_owned().await;
        let mut next = guard.clone();
        let out = f(&mut next)?;
        if next == *guard {
            return Ok(out);
        }
        // Saving and making current run to their end even if the caller goes away (a client
        // that hangs up), so what is saved and what is in force never part.
        let me = self.me.upgrade().expect("a controller in use is alive");
        let finish = tokio::spawn(async move {
            me.store.save(&next).await?;
            *guard = next;
            me.current.send_replace(Arc::new(guard.clone()));
            drop(guard);
            me.refresh();
            Ok::<_, StoreError>(())
        });
        match finish.await {
            Ok(saved) => saved?,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => return Err(ControllerError::Unavailable(e.to_string())),
        }
        Ok(out)
    }

    /// Recomputes the router's desired configuration and this site's published record.
    fn refresh(&self) {
        let state = self.state();
        let remote = self.remote();
        let mut desired = desired::router_config(&self.cfg, &state, &remote);
        if self.router_peers.get().is_some() {
            desired
                .tls_profiles
                .extend(desired::peer_profile(&self.cfg, &state));
        }
        self.desired.send_if_modified(|cur| {
            if **cur == desired {
                false
            } else {
                *cur = Arc::new(desired);
                true
            }
        });
        // The routers' reports, merged once for the whole record.
        let obs = self.observed().state;
        let router_links = obs.links.unwrap_or_default().links;
        let router_of_link = |name: &str| {
            router_links
                .iter()
                .find(|l| l.name == name && l.state == "up")
                .map(|l| l.peer_router.clone())
                .unwrap_or_default()
        };
        let links = self
            .link_statuses()
            .into_iter()
            .filter(|l| l.direction == "outgoing")
            .map(|l| PublishedLink {
                peer_router: router_of_link(&l.name),
                name: l.name,
                state: l.state,
                cost: l.cost,
            })
            .collect();
        let mut record = SiteRecord::build(&self.cfg, &state, links);
        if !obs.router_id.is_empty() {
            record.router_id = obs.router_id;
        }
        self.record.send_if_modified(|cur| {
            if **cur == record {
                false
            } else {
                *cur = Arc::new(record);
                true
            }
        });
    }

    // --- tokens ---

    pub async fn create_token(
        &self,
        req: pb::CreateTokenRequest,
    ) -> Result<(pb::Token, Token), ControllerError> {
        if self.cfg.mode == RouterMode::Edge {
            return Err(ControllerError::NotAllowed(
                "an edge site cannot accept links; create the token at an interior site".into(),
            ));
        }
        let name = if req.name.is_empty() {
            format!("{}-{}", self.cfg.name, &crate::site::random_hex(3))
        } else {
            req.name.clone()
        };
        let mut errs = Invalid::default();
        if let Some(m) = crate::site::dns_label_problem(&name, 63) {
            errs.push("name", m);
        }
        let ty = pb::TokenType::try_from(req.r#type).unwrap_or(pb::TokenType::Unspecified);
        let cert = ty == pb::TokenType::Cert;
        if cert && (req.expiry_seconds != 0 || req.uses != 0) {
            errs.push(
                "type",
                "cert tokens do not expire and have no use count; use a claim token",
            );
        }
        if req.expiry_seconds > 365 * 24 * 3600 {
            errs.push("expiry", "must be at most a year");
        }
        errs.into_result()?;
        let cost = req.cost.max(1);
        let state = self.state();
        let site_certs = state.certs.as_ref().expect("opened with certificates");
        if cert {
            let (c, k) = certs::issue_client(&self.cfg.id, site_certs, &name)
                .map_err(|e| ControllerError::Unavailable(e.to_string()))?;
            let t = self.cert_token(&name, site_certs.ca_cert.clone(), c, k, cost);
            info!(token = %name, "Issued a cert token");
            return Ok((
                pb::Token {
                    name,
                    yaml: t.to_yaml(),
                    expires: String::new(),
                },
                Token::Cert(t),
            ));
        }
        let expiry = if req.expiry_seconds == 0 {
            DEFAULT_EXPIRY.as_secs()
        } else {
            req.expiry_seconds
        };
        let record = ClaimRecord {
            name: name.clone(),
            secret: crate::site::random_secret(24),
            expires: self.now_unix() + expiry,
            uses_remaining: req.uses.max(1),
            uses_made: 0,
            cost,
        };
        let token = ClaimToken {
            name: name.clone(),
            url: format!(
                "https://{}/{}",
                host_port(
                    &self.cfg.public_hosts().claims,
                    self.cfg.public_ports().claims
                ),
                name
            ),
            secret: record.secret.clone(),
            ca_cert: site_certs.ca_cert.clone(),
            expires: Some(record.expires),
            generated_by: self.cfg.id.clone(),
            site_name: self.cfg.name.clone(),
            cost,
        };
        self.change(|s| {
            let now = self.now_unix();
            // Records a day past their expiry are of no use, not even to explain a refusal.
            s.claims.retain(|_, c| c.expires + 86_400 > now);
            if s.claims.contains_key(&name) {
                return Err(ControllerError::Conflict(format!(
                    "a token named {name:?} is already outstanding; pick another --name"
                )));
            }
            s.claims.insert(name.clone(), record);
            Ok(())
        })
        .await?;
        info!(token = %name, expiry, uses = req.uses.max(1), "Issued a claim token");
        Ok((
            pb::Token {
                name,
                yaml: token.to_yaml(),
                expires: crate::site::rfc3339(token.expires.unwrap_or(0)),
            },
            Token::Claim(token),
        ))
    }

    fn cert_token(
        &self,
        name: &str,
        ca: String,
        cert: String,
        key: String,
        cost: u32,
    ) -> CertToken {
        CertToken {
            name: name.to_string(),
            ca_cert: ca,
            cert,
            key,
            inter_router_host: self.cfg.public_hosts().inter_router,
            inter_router_port: self.cfg.public_ports().inter_router,
            edge_host: self.cfg.public_hosts().edge,
            edge_port: self.cfg.public_ports().edge,
            generated_by: self.cfg.id.clone(),
            site_name: self.cfg.name.clone(),
            cost,
        }
    }

    /// The claims endpoint: checks a claim and, if it holds, issues a cert token for the
    /// site `requester`. A refused claim changes nothing.
    pub async fn redeem(
        &self,
        claim: &str,
        secret: &str,
        requester: &str,
    ) -> Result<CertToken, ClaimError> {
        let refuse = |reason: &'static str, detail: String| ClaimError {
            reason,
            detail,
            retry: false,
        };
        let requester = if requester.is_empty() {
            "unknown-site"
        } else {
            requester
        };
        let result = self
            .change(|s| {
                let Some(rec) = s.claims.get_mut(claim) else {
                    return Ok(Err(refuse(
                        "unknown",
                        format!("no token named {claim:?} was issued by this site"),
                    )));
                };
                if !constant_time_eq(rec.secret.as_bytes(), secret.as_bytes()) {
                    return Ok(Err(refuse(
                        "tampered",
                        "the token's secret does not match; the file was altered or is not the one issued".into(),
                    )));
                }
                if rec.expires <= self.now_unix() {
                    return Ok(Err(refuse(
                        "expired",
                        format!("the token expired at {}", crate::site::rfc3339(rec.expires)),
                    )));
                }
                if rec.uses_remaining == 0 {
                    return Ok(Err(refuse(
                        "used-up",
                        format!("the token was already redeemed {} time(s)", rec.uses_made),
                    )));
                }
                rec.uses_remaining -= 1;
                rec.uses_made += 1;
                Ok(Ok(rec.cost))
            })
            .await
            .map_err(|e| ClaimError {
                reason: "unavailable",
                detail: e.to_string(),
                retry: true,
            })?;
        let cost = result?;
        let state = self.state();
        let site_certs = state.certs.as_ref().expect("opened with certificates");
        let (c, k) =
            certs::issue_client(&self.cfg.id, site_certs, requester).map_err(|e| ClaimError {
                reason: "unavailable",
                detail: e.to_string(),
                retry: true,
            })?;
        info!(claim, requester, "Token redeemed");
        Ok(self.cert_token(claim, site_certs.ca_cert.clone(), c, k, cost))
    }

    // --- links ---

    pub async fn create_link(
        &self,
        req: pb::CreateLinkRequest,
    ) -> Result<pb::LinkStatus, ControllerError> {
        self.create_link_from(req, String::new()).await
    }

    /// `create_link`, recording what defined the link (`secret/<name>` on Kubernetes).
    pub async fn create_link_from(
        &self,
        req: pb::CreateLinkRequest,
        source: String,
    ) -> Result<pb::LinkStatus, ControllerError> {
        let token = crate::token::parse(&req.token_yaml)?;
        let name = if req.name.is_empty() {
            token.name().to_string()
        } else {
            req.name.clone()
        };
        let mut errs = Invalid::default();
        if let Some(m) = crate::site::dns_label_problem(&name, 40) {
            errs.push("name", m);
        }
        let proxy = match req.proxy.trim() {
            "" => None,
            p => van_proto::tunnel::Proxy::parse(p)
                .map_err(|e| errs.push("proxy", e))
                .ok(),
        };
        errs.into_result()?;
        if token.generated_by() == self.cfg.id {
            return Err(ControllerError::Conflict(
                "this token was issued by this site; a site cannot link to itself".into(),
            ));
        }
        {
            let s = self.state();
            if s.links.contains_key(&name) {
                return Err(ControllerError::Conflict(format!(
                    "a link named {name:?} already exists"
                )));
            }
            if let Some(l) = s
                .links
                .values()
                .find(|l| l.peer_id() == token.generated_by())
            {
                return Err(ControllerError::Conflict(format!(
                    "already linked to site {:?} (link {:?})",
                    l.peer_name(),
                    l.name
                )));
            }
        }
        let mut record = LinkRecord {
            name: name.clone(),
            cost: req.cost,
            token: None,
            claim: None,
            claim_error: String::new(),
            claim_refused: false,
            source,
            proxy: req.proxy.trim().to_string(),
        };
        match token {
            Token::Cert(c) => record.token = Some(c),
            Token::Claim(c) => {
                match crate::claims::client::redeem_via(
                    &c,
                    proxy.as_ref(),
                    &self.cfg.id,
                    &self.cfg.name,
                    self.now_unix(),
                )
                .await
                {
                    Ok(cert) => record.token = Some(cert),
                    // The issuer is unreachable for now: keep the claim and retry it.
                    Err(e) if e.retry => {
                        info!(link = %name, error = %e, "Claim not redeemed yet; will retry");
                        record.claim_error = e.to_string();
                        record.claim = Some(c);
                    }
                    // Refused: nothing is made.
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if record.cost == 0 {
            record.cost = match (&record.token, &record.claim) {
                (Some(t), _) => t.cost,
                (None, Some(c)) => c.cost,
                (None, None) => 1,
            }
            .max(1);
        }
        self.change(|s| {
            if s.links.contains_key(&name) {
                return Err(ControllerError::Conflict(format!(
                    "a link named {name:?} already exists"
                )));
            }
            s.links.insert(name.clone(), record);
            Ok(())
        })
        .await?;
        info!(link = %name, "Link created");
        Ok(self
            .link_statuses()
            .into_iter()
            .find(|l| l.name == name)
            .expect("just created"))
    }

    /// Tries once more to redeem every claim that could not be redeemed yet.
    pub async fn retry_claims(&self) {
        let pending: Vec<(
            String,
            crate::token::ClaimToken,
            Option<van_proto::tunnel::Proxy>,
        )> = self
            .state()
            .links
            .values()
            .filter(|l| l.token.is_none() && !l.claim_refused)
            .filter_map(|l| {
                let proxy = van_proto::tunnel::Proxy::parse(&l.proxy).ok();
                l.claim.clone().map(|c| (l.name.clone(), c, proxy))
            })
            .collect();
        for (name, claim, proxy) in pending {
            let result = crate::claims::client::redeem_via(
                &claim,
                proxy.as_ref(),
                &self.cfg.id,
                &self.cfg.name,
                self.now_unix(),
            )
            .await;
            let changed = self
                .change(|s| {
                    // Deleted (or replaced) while we were redeeming: leave it.
                    let Some(l) = s
                        .links
                        .get_mut(&name)
                        .filter(|l| l.claim.as_ref() == Some(&claim))
                    else {
                        return Ok(());
                    };
                    match &result {
                        Ok(cert) => {
                            l.token = Some(cert.clone());
                            l.claim = None;
                            l.claim_error.clear();
                        }
                        Err(e) => {
                            l.claim_error = e.to_string();
                            l.claim_refused = !e.retry;
                        }
                    }
                    Ok(())
                })
                .await;
            match (&result, changed) {
                (Ok(_), Ok(())) => info!(link = %name, "Claim redeemed; linking"),
                (Err(e), _) => info!(link = %name, error = %e, "Claim still not redeemed"),
                (_, Err(e)) => {
                    tracing::warn!(link = %name, error = %e, "Cannot store the redeemed claim")
                }
            }
        }
    }

    pub async fn delete_link(&self, name: &str) -> Result<(), ControllerError> {
        self.change(|s| {
            s.links
                .remove(name)
                .map(|_| ())
                .ok_or(ControllerError::NotFound {
                    what: "link",
                    name: name.to_string(),
                })
        })
        .await?;
        info!(link = %name, "Link deleted");
        Ok(())
    }

    /// Configured links with their observed state, then links other sites made to this one.
    pub fn link_statuses(&self) -> Vec<pb::LinkStatus> {
        let state = self.state();
        let obs = self.observed();
        let fresh = obs.at.is_some_and(|t| t.elapsed() < OBSERVED_FRESH);
        let router_links = obs.state.links.clone().unwrap_or_default().links;
        let remote = self.remote();
        let site_of = |router: &str| -> (String, String) {
            remote
                .get(router)
                .map(|r| (r.id.clone(), r.name.clone()))
                .unwrap_or_default()
        };
        let mut out = Vec::new();
        for l in state.links.values() {
            let (host, port) = match (&l.token, self.cfg.mode) {
                (Some(t), RouterMode::Interior) => {
                    (t.inter_router_host.clone(), t.inter_router_port)
                }
                (Some(t), RouterMode::Edge) => (t.edge_host.clone(), t.edge_port),
                (None, _) => (String::new(), 0),
            };
            let mut st = pb::LinkStatus {
                name: l.name.clone(),
                host,
                port: u32::from(port),
                cost: l.cost,
                peer_site_id: l.peer_id().to_string(),
                peer_site_name: l.peer_name().to_string(),
                direction: "outgoing".into(),
                ..Default::default()
            };
            if l.token.is_none() {
                st.state = if l.claim_refused {
                    "failed"
                } else {
                    "connecting"
                }
                .into();
                st.reason = "claim".into();
                st.detail = l.claim_error.clone();
                out.push(st);
                continue;
            }
            let rl = router_links.iter().find(|r| r.name == l.name);
            match (fresh, rl) {
                (false, _) => {
                    st.state = "connecting".into();
                    st.reason = "router-not-ready".into();
                    st.detail = "the router has not reported its state yet".into();
                }
                (true, None) => {
                    st.state = "connecting".into();
                    st.reason = "configuring".into();
                    st.detail = obs
                        .state
                        .apply_errors
                        .get(&l.name)
                        .cloned()
                        .unwrap_or_else(|| "not yet applied to the router".into());
                    if obs.state.apply_errors.contains_key(&l.name) {
                        st.state = "failed".into();
                        st.reason = "configuration".into();
                    }
                }
                (true, Some(r)) if r.state == "up" => st.state = "active".into(),
                (true, Some(r)) => {
                    let (state, reason) = classify(r);
                    st.state = state.into();
                    st.reason = reason.into();
                    st.detail = r.last_error.clone();
                }
            }
            out.push(st);
        }
        if fresh {
            // Links between this site's own routers are plumbing, not links of the site.
            let own = self.own_routers();
            for r in router_links
                .iter()
                .filter(|r| r.direction == "incoming" && r.state == "up")
                .filter(|r| !own.contains(&r.peer_router))
            {
                let (id, name) = site_of(&r.peer_router);
                out.push(pb::LinkStatus {
                    name: r.name.clone(),
                    state: "active".into(),
                    host: r.peer_address.clone(),
                    cost: r.cost,
                    peer_site_id: id,
                    peer_site_name: name,
                    direction: "incoming".into(),
                    ..Default::default()
                });
            }
        }
        out
    }

    // --- services ---

    pub async fn create_service(
        &self,
        req: pb::CreateServiceRequest,
    ) -> Result<pb::Service, ControllerError> {
        let protocol = default_protocol(&req.protocol);
        let ports = check_service(&req.address, &req.ports, &protocol)?;
        let address = req.address.clone();
        let remote = self.remote();
        self.change(|s| {
            if let Some(cur) = s.services.get(&address) {
                if cur.protocol == protocol && cur.ports == ports {
                    return Ok(());
                }
                return Err(ControllerError::Conflict(format!(
                    "service {address:?} is already defined here as {}",
                    cur.shape()
                )));
            }
            self.ports_free(s, &remote, &address, &ports)?;
            s.services.insert(
                address.clone(),
                ServiceDef {
                    address: address.clone(),
                    protocol,
                    ports,
                    created: self.now_unix(),
                    targets: Vec::new(),
                    source: String::new(),
                },
            );
            Ok(())
        })
        .await?;
        info!(service = %address, "Service defined");
        self.service(&address)
    }

    pub async fn delete_service(&self, address: &str) -> Result<(), ControllerError> {
        self.change(|s| {
            s.services
                .remove(address)
                .map(|_| ())
                .ok_or(ControllerError::NotFound {
                    what: "service",
                    name: address.to_string(),
                })
        })
        .await?;
        info!(service = %address, "Service deleted");
        Ok(())
    }

    pub async fn bind(&self, req: pb::BindRequest) -> Result<pb::Service, ControllerError> {
        let address = req.address.clone();
        self.change(|s| {
            let svc = s
                .services
                .get_mut(&address)
                .ok_or(ControllerError::NotFound {
                    what: "service",
                    name: address.clone(),
                })?;
            let target = check_target(svc, &req.host, &req.target_ports)?;
            svc.targets.retain(|t| t.host != target.host);
            svc.targets.push(target);
            Ok(())
        })
        .await?;
        info!(service = %address, host = %req.host, "Target bound");
        self.service(&address)
    }

    /// Removes a target; a service left with none is deleted (as `unexpose` does).
    pub async fn unbind(
        &self,
        req: pb::UnbindRequest,
        delete_empty: bool,
    ) -> Result<pb::Service, ControllerError> {
        let address = req.address.clone();
        let view = self.service(&address).ok();
        self.change(|s| {
            let svc = s
                .services
                .get_mut(&address)
                .ok_or(ControllerError::NotFound {
                    what: "service",
                    name: address.clone(),
                })?;
            let before = svc.targets.len();
            svc.targets.retain(|t| t.host != req.host);
            if svc.targets.len() == before {
                return Err(ControllerError::NotFound {
                    what: "target",
                    name: req.host.clone(),
                });
            }
            if delete_empty && svc.targets.is_empty() {
                s.services.remove(&address);
            }
            Ok(())
        })
        .await?;
        info!(service = %address, host = %req.host, "Target unbound");
        Ok(self.service(&address).ok().or(view).unwrap_or_default())
    }

    pub async fn expose(&self, req: pb::ExposeRequest) -> Result<pb::Service, ControllerError> {
        let protocol = default_protocol(&req.protocol);
        let ports = check_service(&req.address, &req.ports, &protocol)?;
        let address = req.address.clone();
        let remote = self.remote();
        self.change(|s| {
            if !s.services.contains_key(&address) {
                self.ports_free(s, &remote, &address, &ports)?;
            }
            let svc = s.services.entry(address.clone()).or_insert_with(|| ServiceDef {
                address: address.clone(),
                protocol: protocol.clone(),
                ports: ports.clone(),
                created: self.now_unix(),
                targets: Vec::new(),
                source: String::new(),
            });
            if svc.protocol != protocol || svc.ports != ports {
                return Err(ControllerError::Conflict(format!(
                    "service {address:?} is already defined here as {}; unexpose it first or use the same ports",
                    svc.shape()
                )));
            }
            let target = check_target(svc, &req.host, &req.target_ports)?;
            svc.targets.retain(|t| t.host != target.host);
            svc.targets.push(target);
            Ok(())
        })
        .await?;
        info!(service = %address, host = %req.host, "Exposed");
        self.service(&address)
    }

    /// Every service of the network gets a listener at this site on each of its ports, so a
    /// new service cannot take a port another service has.
    fn ports_free(
        &self,
        s: &SiteState,
        remote: &Remote,
        address: &str,
        ports: &[u16],
    ) -> Result<(), ControllerError> {
        for v in network::services(&self.cfg, s, remote) {
            if v.def.address == address {
                continue;
            }
            if let Some(p) = v.def.ports.iter().find(|p| ports.contains(p)) {
                let whence = if v.local {
                    "defined at this site".to_string()
                } else {
                    format!("defined at site {}", v.origin_name)
                };
                return Err(ControllerError::Conflict(format!(
                    "port {p} is already used by service {:?} ({whence}); each service needs \
                     its own ports, choose another with --port",
                    v.def.address
                )));
            }
        }
        Ok(())
    }

    pub fn services(&self) -> Vec<pb::Service> {
        let state = self.state();
        let remote = self.remote();
        let errors = self.observed().state.apply_errors;
        network::services(&self.cfg, &state, &remote)
            .into_iter()
            .map(|v| {
                let listener_error = v
                    .def
                    .ports
                    .iter()
                    .filter_map(|p| errors.get(&listener_name(&v.def.address, *p)))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ");
                pb::Service {
                    address: v.def.address.clone(),
                    protocol: v.def.protocol.clone(),
                    ports: v.def.ports.iter().map(|p| u32::from(*p)).collect(),
                    targets: state
                        .services
                        .get(&v.def.address)
                        .map(|s| {
                            s.targets
                                .iter()
                                .map(|t| pb::Target {
                                    host: t.host.clone(),
                                    ports: t.ports.iter().map(|p| u32::from(*p)).collect(),
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    origin_site_id: v.origin_id,
                    origin_site_name: v.origin_name,
                    local: v.local,
                    target_sites: v.target_sites,
                    conflicts: v.conflicts,
                    listeners: v
                        .def
                        .ports
                        .iter()
                        .map(|p| host_port(&self.cfg.listener_host, *p))
                        .collect(),
                    listener_error,
                }
            })
            .collect()
    }

    fn service(&self, address: &str) -> Result<pb::Service, ControllerError> {
        self.services()
            .into_iter()
            .find(|s| s.address == address)
            .ok_or(ControllerError::NotFound {
                what: "service",
                name: address.to_string(),
            })
    }

    // --- status ---

    pub fn site_status(&self) -> pb::SiteStatus {
        let state = self.state();
        let remote = self.remote();
        let obs = self.observed();
        pb::SiteStatus {
            site_id: self.cfg.id.clone(),
            site_name: self.cfg.name.clone(),
            mode: self.cfg.mode.as_str().into(),
            version: crate::VERSION.into(),
            // The id the router runs with (on Kubernetes, its pod's name).
            router_id: if obs.state.router_id.is_empty() {
                self.cfg.router_id()
            } else {
                obs.state.router_id
            },
            connected_sites: network::site_count(&remote) as u32,
            exposed_services: state
                .services
                .values()
                .filter(|s| !s.targets.is_empty())
                .count() as u32,
            network_services: network::services(&self.cfg, &state, &remote).len() as u32,
            router_ready: self.router_ready(),
            ingress_host: self.cfg.ingress_host.clone(),
            inter_router_port: u32::from(self.cfg.inter_router_port),
            edge_port: u32::from(self.cfg.edge_port),
            claims_port: u32::from(self.cfg.claims_port),
            listener_host: self.cfg.listener_host.clone(),
            active_flows: obs.state.active_flows,
        }
    }

    pub fn network(&self) -> pb::Network {
        let remote = self.remote();
        let own = self.record.borrow().clone();
        let router_site: BTreeMap<&str, (&str, &str)> = remote
            .values()
            .chain(std::iter::once(&*own))
            .map(|r| (r.router_id.as_str(), (r.id.as_str(), r.name.as_str())))
            .collect();
        let mut sites = vec![site_of(&own, true, &router_site)];
        // The local site's services as this site sees them (with conflicts and listeners).
        sites[0].services = self.services().into_iter().filter(|s| s.local).collect();
        sites[0].links = self.link_statuses();
        let mut seen = std::collections::BTreeSet::from([own.id.clone()]);
        for r in remote.values().filter(|r| seen.insert(r.id.clone())) {
            sites.push(site_of(r, false, &router_site));
        }
        pb::Network { sites }
    }
}

fn site_of(
    r: &SiteRecord,
    local: bool,
    router_site: &BTreeMap<&str, (&str, &str)>,
) -> pb::NetworkSite {
    pb::NetworkSite {
        site_id: r.id.clone(),
        site_name: r.name.clone(),
        mode: r.mode.clone(),
        version: r.version.clone(),
        router_id: r.router_id.clone(),
        links: r
            .links
            .iter()
            .map(|l| {
                let (id, name) = router_site
                    .get(l.peer_router.as_str())
                    .copied()
                    .unwrap_or_default();
                pb::LinkStatus {
                    name: l.name.clone(),
                    state: l.state.clone(),
                    cost: l.cost,
                    peer_site_id: id.into(),
                    peer_site_name: name.into(),
                    direction: "outgoing".into(),
                    ..Default::default()
                }
            })
            .collect(),
        services: r
            .services
            .iter()
            .map(|s| pb::Service {
                address: s.address.clone(),
                protocol: s.protocol.clone(),
                ports: s.ports.iter().map(|p| u32::from(*p)).collect(),
                origin_site_id: r.id.clone(),
                origin_site_name: r.name.clone(),
                local,
                target_sites: if s.targets > 0 {
                    vec![r.name.clone()]
                } else {
                    Vec::new()
                },
                ..Default::default()
            })
            .collect(),
        local,
    }
}

/// Compares secrets without revealing through timing how much of a guess was right.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

/// Link state and reason class from the router's view of a link.
fn classify(link: &rpb::Link) -> (&'static str, &'static str) {
    use rpb::LinkFailure as F;
    let state = if link.state == "failed" {
        "failed"
    } else {
        "connecting"
    };
    let reason = match link.failure() {
        F::None if link.last_error.is_empty() => "connecting",
        // A link that was up and ended: the text says why.
        F::None => "error",
        F::Dns => "dns",
        F::ConnectRefused => "refused",
        F::Unreachable => "unreachable",
        F::Timeout => "timeout",
        F::Certificate => "certificate",
        F::Tls => "tls",
        F::Protocol | F::HandshakeRefused | F::Io | F::Closed => "error",
    };
    (state, reason)
}

pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests;
