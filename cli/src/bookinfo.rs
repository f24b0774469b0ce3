//! `skupper demo --http`: Istio's Bookinfo as Skupper's walkthrough ran it, on this machine,
//! with small HTTP servers in this process standing in for its four services.
//!
//! - west (services on 127.0.0.2): productpage, which calls details and reviews;
//! - east (127.0.0.3): details, ratings, and reviews v1 (no stars);
//! - south (127.0.0.4): reviews v2 (black stars) and v3 (red stars), which call ratings.
//!
//! Every service is exposed with `--protocol http`, so each request is balanced on its own:
//! page loads over one keep-alive connection show all three reviews versions. Then south's
//! reviews stop, and every page still answers (v1 from east).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use crate::Ctx;
use crate::args::ExposeArgs;
use crate::demo::{announce, init_sites, link_sites, took};
use crate::output::Format;
use crate::{network, service};

/// Service ports in the network (one per service: on the local platform a service listens
/// on its site's listener host at its port).
const PRODUCTPAGE: u16 = 9080;
const DETAILS: u16 = 9081;
const REVIEWS: u16 = 9082;
const RATINGS: u16 = 9083;
/// Page loads over one connection, before and after south's reviews stop.
const LOADS: usize = 30;

/// Runs the scenario on sites west, east and south (already named, not yet created).
pub async fn walkthrough(
    west: &Ctx,
    east: &Ctx,
    south: &Ctx,
    home: &Path,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    init_sites(
        &[
            (west, "127.0.0.2"),
            (east, "127.0.0.3"),
            (south, "127.0.0.4"),
        ],
        out,
    )
    .await?;
    // West is the hub: east and south link to it.
    link_sites(west, east, home, out).await?;
    link_sites(west, south, home, out).await?;

    // The servers, each on a port the OS picks; reviews v2 and v3 on hosts of their own
    // so that south can bind both to one service.
    let mut east_servers = JoinSet::new();
    let mut south_servers = JoinSet::new();
    let mut west_servers = JoinSet::new();
    let details = serve(&mut east_servers, "127.0.0.1", |_| async {
        text("details: The Comedy of Errors, paperback, 200 pages, ISBN-10 1234567890")
    })
    .await?;
    let ratings = serve(&mut east_servers, "127.0.0.1", |_| async {
        text("ratings: 5 stars from Reviewer1, 4 stars from Reviewer2")
    })
    .await?;
    let v1 = serve(&mut east_servers, "127.0.0.1", |_| async {
        text("reviews-v1 (east): no stars")
    })
    .await?;
    let south_ratings = Arc::new(Upstream::new(format!("127.0.0.4:{RATINGS}")));
    let (r2, r3) = (south_ratings.clone(), south_ratings.clone());
    let v2 = serve(&mut south_servers, "127.0.0.5", move |_| {
        let r = r2.clone();
        async move { reviews("v2 (south)", "black", &r).await }
    })
    .await?;
    let v3 = serve(&mut south_servers, "127.0.0.6", move |_| {
        let r = r3.clone();
        async move { reviews("v3 (south)", "red", &r).await }
    })
    .await?;
    let page_details = Arc::new(Upstream::new(format!("127.0.0.2:{DETAILS}")));
    let page_reviews = Arc::new(Upstream::new(format!("127.0.0.2:{REVIEWS}")));
    let productpage = serve(&mut west_servers, "127.0.0.1", move |_| {
        let (d, r) = (page_details.clone(), page_reviews.clone());
        async move {
            match (d.get("/details/0").await, r.get("/reviews/0").await) {
                (Ok(d), Ok(r)) => text(&format!("Bookinfo product page | {d} | {r}")),
                (Err(e), _) | (_, Err(e)) => (503, format!("productpage: {e}")),
            }
        }
    })
    .await?;
    writeln!(
        out,
        "Servers in this process: productpage {productpage} (west); details {details}, \
         ratings {ratings}, reviews-v1 {v1} (east); reviews-v2 {v2}, reviews-v3 {v3} (south)\n"
    )?;

    expose(west, "productpage", PRODUCTPAGE, productpage, out).await?;
    expose(east, "details", DETAILS, details, out).await?;
    expose(east, "ratings", RATINGS, ratings, out).await?;
    expose(east, "reviews", REVIEWS, v1, out).await?;
    expose(south, "reviews", REVIEWS, v2, out).await?;
    expose(south, "reviews", REVIEWS, v3, out).await?;

    // Service sync: wait until each site listens for what it calls.
    let t = announce(out, "-n west service status")?;
    // West must also know that south serves reviews, or the first loads see east's only.
    let reviews_sites: &[&str] = &["east", "south"];
    wait_listening(
        west,
        &[
            ("productpage", &[]),
            ("details", &[]),
            ("reviews", reviews_sites),
        ],
        out,
    )
    .await?;
    wait_listening(south, &[("ratings", &[])], out).await?;
    took(out, t)?;

    let page = Upstream::new(format!("127.0.0.2:{PRODUCTPAGE}"));
    writeln!(
        out,
        "$ {LOADS} page loads of http://127.0.0.2:{PRODUCTPAGE}/ over one keep-alive connection"
    )?;
    let t = Instant::now();
    let seen = load_pages(&page, LOADS).await?;
    report(out, &seen)?;
    took(out, t)?;
    for v in ["v1", "v2", "v3"] {
        if !seen.keys().any(|k| k.contains(v)) {
            anyhow::bail!("reviews {v} never answered in {LOADS} page loads: {seen:?}");
        }
    }

    writeln!(
        out,
        "$ (south's reviews v2 and v3 stop) then {LOADS} more page loads on the same connection"
    )?;
    south_servers.abort_all();
    while south_servers.join_next().await.is_some() {}
    let t = Instant::now();
    let seen = load_pages(&page, LOADS).await?;
    report(out, &seen)?;
    took(out, t)?;
    if seen.keys().any(|k| !k.contains("v1")) {
        anyhow::bail!("a stopped reviews server still answered: {seen:?}");
    }

    let t = announce(out, "-n west network status")?;
    network::status(west, Format::Text, out).await?;
    took(out, t)?;
    Ok(())
}

async fn expose(
    site: &Ctx,
    address: &str,
    port: u16,
    target: SocketAddr,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let t = announce(
        out,
        &format!(
            "-n {} expose host {} --port {port} --target-port {} --address {address} --protocol http",
            site.namespace,
            target.ip(),
            target.port()
        ),
    )?;
    service::expose(
        site,
        &ExposeArgs {
            resource: "host".into(),
            name: Some(target.ip().to_string()),
            port: vec![port],
            address: Some(address.into()),
            target_port: vec![target.port()],
            protocol: "http".into(),
        },
        out,
    )
    .await?;
    took(out, t)
}

/// Waits until `site` lists a listener for each address, served by (at least) the sites
/// given with it.
async fn wait_listening(
    site: &Ctx,
    addresses: &[(&str, &[&str])],
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = service::list(site).await?;
        let ready = addresses.iter().all(|(a, sites)| {
            list.services.iter().any(|s| {
                s.address == *a
                    && !s.listeners.is_empty()
                    && sites.iter().all(|n| s.target_sites.iter().any(|t| t == n))
            })
        });
        if ready || Instant::now() >= deadline {
            write!(out, "{}", service::status_text(&list))?;
            if ready {
                return Ok(());
            }
            anyhow::bail!(
                "{} did not listen for {addresses:?} within 60s",
                site.namespace
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Loads the product page `n` times; counts the answers by reviews version.
async fn load_pages(page: &Upstream, n: usize) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut seen = BTreeMap::new();
    for i in 0..n {
        let body = page
            .get("/")
            .await
            .map_err(|e| anyhow::anyhow!("page load {}: {e}", i + 1))?;
        let version = body
            .split(" | ")
            .find(|p| p.starts_with("reviews-"))
            .unwrap_or("no reviews")
            .to_string();
        *seen.entry(version).or_default() += 1;
    }
    Ok(seen)
}

fn report(out: &mut (dyn Write + Send), seen: &BTreeMap<String, usize>) -> anyhow::Result<()> {
    for (version, n) in seen {
        writeln!(out, "  {n:>3} × {version}")?;
    }
    Ok(())
}

/// What a reviews server answers: its version and the ratings it fetched.
async fn reviews(version: &str, stars: &str, ratings: &Upstream) -> (u16, String) {
    match ratings.get("/ratings/0").await {
        Ok(r) => text(&format!("reviews-{version}: {stars} stars ({r})")),
        Err(e) => (503, format!("reviews-{version}: {e}")),
    }
}

fn text(s: &str) -> (u16, String) {
    (200, s.to_string())
}

/// Serves HTTP/1.1 on `host` at a port the OS picks; `answer` gives status and body.
async fn serve<F, Fut>(set: &mut JoinSet<()>, host: &str, answer: F) -> anyhow::Result<SocketAddr>
where
    F: Fn(hyper::Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = (u16, String)> + Send + 'static,
{
    let l = TcpListener::bind((host, 0))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {host}: {e}"))?;
    let addr = l.local_addr()?;
    let conns = Arc::new(std::sync::Mutex::new(JoinSet::new()));
    set.spawn(async move {
        // Aborting this task drops the listener and every connection it served.
        let _conns_live_here = conns.clone();
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let answer = answer.clone();
            let svc = hyper::service::service_fn(move |req| {
                let answer = answer.clone();
                async move {
                    let (status, body) = answer(req).await;
                    let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() =
                        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
                    Ok::<_, Infallible>(resp)
                }
            });
            conns.lock().expect("conns").spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// One keep-alive HTTP/1.1 connection to `addr`, reopened when it closes.
struct Upstream {
    addr: String,
    conn: Mutex<Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>>,
}

impl Upstream {
    fn new(addr: String) -> Self {
        Upstream {
            addr,
            conn: Mutex::new(None),
        }
    }

    /// GETs `path`; the body of a 2xx answer, else an error saying what came back.
    async fn get(&self, path: &str) -> anyhow::Result<String> {
        let mut conn = self.conn.lock().await;
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            let s = TcpStream::connect(&self.addr)
                .await
                .map_err(|e| anyhow::anyhow!("connect to {}: {e}", self.addr))?;
            let (tx, c) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
            tokio::spawn(c);
            *conn = Some(tx);
        }
        let tx = conn.as_mut().expect("connected");
        tx.ready().await?;
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, &self.addr)
            .body(Empty::new())?;
        let work = async {
            let resp = tx.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        };
        let (status, body) = tokio::time::timeout(Duration::from_secs(10), work)
            .await
            .map_err(|_| anyhow::anyhow!("no answer from {} within 10s", self.addr))??;
        let body = String::from_utf8_lossy(&body).trim().to_string();
        if !status.is_success() {
            anyhow::bail!("{} answered {status}: {body}", self.addr);
        }
        Ok(body)
    }
}
