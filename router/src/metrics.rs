//! Prometheus metrics and health over HTTP (`/metrics`, `/healthz`).
//!
//! Counters and histograms live in a `prometheus_client` registry; values derived from live
//! state (links, flows open) are read at each scrape into a registry of their own. Both are
//! written in the OpenMetrics text format, every series labelled with the router's id.
//!
//! HTTP requests are also kept per (address, method, status class, client site, server
//! site) with fixed latency buckets, which the admin API and `vanstat` read.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router as Http;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the request latency buckets, in seconds (0.5 ms to ~16 s).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048,
    4.096, 8.192, 16.384,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabels {
    role: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    role: &'static str,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// One kind of HTTP request, as counted.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct RequestKey {
    pub address: String,
    pub method: Cow<'static, str>,
    /// Status class: "2xx" … "5xx".
    pub code: Cow<'static, str>,
    pub source_site: String,
    /// Empty when the router answered itself (no server was reached).
    pub dest_site: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestBytesLabels {
    address: String,
    source_site: String,
    dest_site: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestErrorLabels {
    address: String,
    kind: &'static str,
}

/// What the admin API shows for one kind of request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestStats {
    pub requests: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// Requests per latency bucket (`LATENCY_BUCKETS`, then one for slower ones).
    pub buckets: [u64; LATENCY_BUCKETS.len() + 1],
    pub latency_sum: Duration,
}

impl RequestStats {
    /// The latency under which a fraction `q` of requests fall, as a bucket's upper bound.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let want = (self.requests as f64 * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                let s = LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
                return s.is_finite().then(|| Duration::from_secs_f64(s));
            }
        }
        None
    }
}

/// One finished HTTP request, as the ingress router saw it.
#[derive(Debug)]
pub(crate) struct RequestDone {
    pub(crate) key: RequestKey,
    /// From the request's head to the response's head.
    pub(crate) latency: Duration,
    pub(crate) bytes_out: u64,
    pub(crate) bytes_in: u64,
}

/// The metrics of one kind of request, looked up once per request.
#[derive(Debug)]
struct Series {
    requests: Counter,
    latency: Histogram,
    bytes_out: Counter,
    bytes_in: Counter,
    stats: Mutex<RequestStats>,
}

/// Counters that are not derived from live state.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    router_id: String,
    flows_closed: Family<FlowLabels, Counter>,
    flow_bytes: Family<BytesLabels, Counter>,
    link_failures: Family<KindLabels, Counter>,
    requests: Family<RequestKey, Counter>,
    request_latency: Family<RequestKey, Histogram>,
    request_bytes: Family<RequestBytesLabels, Counter>,
    request_errors: Family<RequestErrorLabels, Counter>,
    series: Mutex<HashMap<RequestKey, Arc<Series>>>,
}

fn router_labels(id: &str) -> impl Iterator<Item = (Cow<'static, str>, Cow<'static, str>)> {
    std::iter::once((Cow::Borrowed("router"), Cow::Owned(id.to_string())))
}

impl Metrics {
    pub(crate) fn new(router_id: &str) -> Metrics {
        let mut registry = Registry::with_labels(router_labels(router_id));
        let flows_closed = Family::<FlowLabels, Counter>::default();
        let flow_bytes = Family::<BytesLabels, Counter>::default();
        let link_failures = Family::<KindLabels, Counter>::default();
        let requests = Family::<RequestKey, Counter>::default();
        let request_latency = Family::<RequestKey, Histogram>::new_with_constructor(
            new_latency_histogram as fn() -> Histogram,
        );
        let request_bytes = Family::<RequestBytesLabels, Counter>::default();
        let request_errors = Family::<RequestErrorLabels, Counter>::default();
        registry.register(
            "van_link_failures",
            "Failed or refused link attempts by cause",
            link_failures.clone(),
        );
        registry.register(
            "van_flows_closed",
            "Flows ended, by role and outcome",
            flows_closed.clone(),
        );
        registry.register(
            "van_flow_bytes",
            "Bytes of ended flows (out: client to server)",
            flow_bytes.clone(),
        );
        registry.register(
            "van_requests",
            "HTTP requests answered through this router (as ingress), by status class",
            requests.clone(),
        );
        registry.register(
            "van_request_duration_seconds",
            "Time from an HTTP request's head to its response's head",
            request_latency.clone(),
        );
        registry.register(
            "van_request_bytes",
            "Body bytes of HTTP requests (out: client to server)",
            request_bytes.clone(),
        );
        registry.register(
            "van_request_errors",
            "HTTP requests the router answered itself, by cause",
            request_errors.clone(),
        );
        Metrics {
            registry,
            router_id: router_id.to_string(),
            flows_closed,
            flow_bytes,
            link_failures,
            requests,
            request_latency,
            request_bytes,
            request_errors,
            series: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn flow_closed(
        &self,
        role: &'static str,
        outcome: &'static str,
        out: u64,
        inb: u64,
    ) {
        self.flows_closed
            .get_or_create(&FlowLabels { role, outcome })
            .inc();
        for (direction, n) in [("out", out), ("in", inb)] {
            self.flow_bytes
                .get_or_create(&BytesLabels { role, direction })
                .inc_by(n);
        }
    }

    pub(crate) fn link_failures(&self, kind: &'static str) {
        self.link_failures
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    /// Link failures counted for `kind` (tests use this to see refusals counted).
    pub fn link_failure_count(&self, kind: &str) -> u64 {
        self.link_failures
            .get(&KindLabels { kind: kind.into() })
            .map_or(0, |c| c.get())
    }

    /// Counts a request the router answered itself (`kind`: no-server, bad-gateway,
    /// timeout, bad-request).
    pub(crate) fn request_error(&self, address: &str, kind: &'static str) {
        self.request_errors
            .get_or_create(&RequestErrorLabels {
                address: address.to_string(),
                kind,
            })
            .inc();
    }

    pub(crate) fn request(&self, r: RequestDone) {
        let series = {
            let mut all = self.series.lock().expect("series lock");
            match all.get(&r.key) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(self.new_series(&r.key));
                    all.insert(r.key, s.clone());
                    s
                }
            }
        };
        series.requests.inc();
        series.latency.observe(r.latency.as_secs_f64());
        series.bytes_out.inc_by(r.bytes_out);
        series.bytes_in.inc_by(r.bytes_in);
        let mut s = series.stats.lock().expect("stats lock");
        s.requests += 1;
        s.bytes_out += r.bytes_out;
        s.bytes_in += r.bytes_in;
        s.latency_sum += r.latency;
        let secs = r.latency.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        s.buckets[i] += 1;
    }

    /// The registry's metrics for a new kind of request (they share their counts with it).
    fn new_series(&self, key: &RequestKey) -> Series {
        let bytes = |direction| {
            self.request_bytes.get_or_create_owned(&RequestBytesLabels {
                address: key.address.clone(),
                source_site: key.source_site.clone(),
                dest_site: key.dest_site.clone(),
                direction,
            })
        };
        Series {
            requests: self.requests.get_or_create_owned(key),
            latency: self.request_latency.get_or_create_owned(key),
            bytes_out: bytes("out"),
            bytes_in: bytes("in"),
            stats: Mutex::new(RequestStats::default()),
        }
    }

    /// Requests so far, by kind.
    pub fn request_stats(&self) -> BTreeMap<RequestKey, RequestStats> {
        self.series
            .lock()
            .expect("series lock")
            .iter()
            .map(|(k, s)| (k.clone(), s.stats.lock().expect("stats lock").clone()))
            .collect()
    }
}

fn new_latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The status class of an HTTP status code ("2xx").
pub(crate) fn status_class(status: u16) -> Cow<'static, str> {
    const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
    match CLASSES.get(usize::from(status / 100).wrapping_sub(1)) {
        Some(c) => Cow::Borrowed(c),
        None => Cow::Owned(format!("{}xx", status / 100)),
    }
}

/// A method as a metric label: the standard ones as they are, any other as "other" (a
/// client must not be able to create series at will).
pub(crate) fn method_label(m: &http::Method) -> Cow<'static, str> {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    Cow::Borrowed(
        KNOWN
            .iter()
            .find(|k| **k == m.as_str())
            .copied()
            .unwrap_or("other"),
    )
}

/// The live state a scrape reports, taken by the router.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub uptime_seconds: u64,
    pub routers_reachable: u64,
    pub addresses: u64,
    pub flows_active: u64,
    pub flows_total: u64,
    pub links: Vec<LinkSample>,
}

/// One link in a scrape; bytes only while its data connection is open.
#[derive(Debug)]
pub struct LinkSample {
    pub name: String,
    pub peer: String,
    pub up: bool,
    pub bytes: Option<(u64, u64)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkLabels {
    link: String,
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkBytesLabels {
    link: String,
    direction: &'static str,
}

fn gauge(r: &mut Registry, name: &str, help: &str, v: u64) {
    let g = Gauge::<i64>::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    r.register(name, help, g);
}

/// Renders the OpenMetrics text format: live state, then counters.
pub fn render(r: &Snapshot, counters: &Metrics) -> String {
    let mut live = Registry::with_labels(router_labels(&counters.router_id));
    gauge(
        &mut live,
        "van_uptime_seconds",
        "Seconds since the router started",
        r.uptime_seconds,
    );
    gauge(
        &mut live,
        "van_routers_reachable",
        "Routers reachable, this one included",
        r.routers_reachable,
    );
    gauge(
        &mut live,
        "van_addresses",
        "Routing keys with a reachable connector",
        r.addresses,
    );
    gauge(
        &mut live,
        "van_flows_active",
        "Flows open on this router",
        r.flows_active,
    );
    let total = Counter::<u64>::default();
    total.inc_by(r.flows_total);
    live.register("van_flows", "Flows started on this router", total);
    let up = Family::<LinkLabels, Gauge>::default();
    let bytes = Family::<LinkBytesLabels, Counter>::default();
    for l in &r.links {
        up.get_or_create(&LinkLabels {
            link: l.name.clone(),
            peer: l.peer.clone(),
        })
        .set(i64::from(l.up));
        if let Some((out, inb)) = l.bytes {
            for (direction, n) in [("out", out), ("in", inb)] {
                bytes
                    .get_or_create(&LinkBytesLabels {
                        link: l.name.clone(),
                        direction,
                    })
                    .inc_by(n);
            }
        }
    }
    live.register("van_link_up", "Whether a link is up", up);
    live.register("van_link_bytes", "Bytes on a link's data connection", bytes);
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = encode_registry(&mut s, &live);
    let _ = encode_registry(&mut s, &counters.registry);
    let _ = encode_eof(&mut s);
    s
}

/// The HTTP app serving `/metrics` (whatever `render` returns) and `/healthz`.
pub fn app(render: impl Fn() -> String + Clone + Send + Sync + 'static) -> Http {
    Http::new()
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    render(),
                )
                    .into_response()
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_buckets() {
        let mut s = RequestStats {
            requests: 100,
            ..Default::default()
        };
        s.buckets[1] = 90; // <= 1 ms
        s.buckets[6] = 10; // <= 32 ms
        assert_eq!(s.quantile(0.5), Some(Duration::from_millis(1)));
        assert_eq!(s.quantile(0.9), Some(Duration::from_millis(1)));
        assert_eq!(s.quantile(0.99), Some(Duration::from_millis(32)));
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&http::Method::GET), "GET");
        let odd = http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&odd), "other");
    }

    #[test]
    fn a_scrape_has_every_series_labelled_with_the_router() {
        let m = Metrics::new("west-1");
        m.flow_closed("ingress", "closed", 10, 20);
        m.request(RequestDone {
            key: RequestKey {
                address: "reviews:9080".into(),
                method: Cow::Borrowed("GET"),
                code: Cow::Borrowed("2xx"),
                source_site: "west".into(),
                dest_site: "east".into(),
            },
            latency: Duration::from_millis(3),
            bytes_out: 0,
            bytes_in: 512,
        });
        let text = render(&Snapshot::default(), &m);
        assert!(text.ends_with("# EOF\n"), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.contains("router=\"west-1\""), "{line}");
        }
        assert!(text.contains("van_requests_total{"), "{text}");
        assert!(
            text.contains("van_request_duration_seconds_bucket{"),
            "{text}"
        );
    }
}
