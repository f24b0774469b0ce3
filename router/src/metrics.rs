//! Prometheus metrics and health over HTTP (`/metrics`, `/healthz`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use axum::Router as Http;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// Counters that are not derived from live state.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    /// (role, outcome) -> count
    flows_closed: BTreeMap<(&'static str, &'static str), u64>,
    /// (role, direction) -> bytes
    flow_bytes: BTreeMap<(&'static str, &'static str), u64>,
    /// failure kind -> count
    link_failures: BTreeMap<&'static str, u64>,
}

impl Metrics {
    pub(crate) fn flow_closed(
        &self,
        role: &'static str,
        outcome: &'static str,
        out: u64,
        inb: u64,
    ) {
        let mut c = self.inner.lock().expect("metrics lock");
        *c.flows_closed.entry((role, outcome)).or_default() += 1;
        *c.flow_bytes.entry((role, "out")).or_default() += out;
        *c.flow_bytes.entry((role, "in")).or_default() += inb;
    }

    pub(crate) fn link_failures(&self, kind: &'static str) {
        *self
            .inner
            .lock()
            .expect("metrics lock")
            .link_failures
            .entry(kind)
            .or_default() += 1;
    }

    /// Link failures counted for `kind` (tests use this to see refusals counted).
    pub fn link_failure_count(&self, kind: &str) -> u64 {
        self.inner
            .lock()
            .expect("metrics lock")
            .link_failures
            .get(kind)
            .copied()
            .unwrap_or(0)
    }
}

/// The live state a scrape reports, taken by the router.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub router_id: String,
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

/// Renders the Prometheus text exposition format.
pub fn render(r: &Snapshot, counters: &Metrics) -> String {
    let mut s = String::new();
    let id = &r.router_id;
    let g = |s: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(
            s,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{router=\"{id}\"}} {v}"
        );
    };
    g(
        &mut s,
        "van_uptime_seconds",
        "Seconds since the router started.",
        r.uptime_seconds,
    );
    g(
        &mut s,
        "van_routers_reachable",
        "Routers reachable, this one included.",
        r.routers_reachable,
    );
    g(
        &mut s,
        "van_addresses",
        "Routing keys with a reachable connector.",
        r.addresses,
    );
    g(
        &mut s,
        "van_flows_active",
        "Flows open on this router.",
        r.flows_active,
    );
    let _ = writeln!(
        s,
        "# HELP van_flows_total Flows started on this router.\n# TYPE van_flows_total counter\nvan_flows_total{{router=\"{id}\"}} {}",
        r.flows_total
    );
    let _ = writeln!(
        s,
        "# HELP van_link_up Whether a link is up.\n# TYPE van_link_up gauge"
    );
    for l in &r.links {
        let _ = writeln!(
            s,
            "van_link_up{{router=\"{id}\",link=\"{}\",peer=\"{}\"}} {}",
            l.name,
            l.peer,
            u8::from(l.up)
        );
    }
    let _ = writeln!(
        s,
        "# HELP van_link_bytes_total Bytes on a link's data connection.\n# TYPE van_link_bytes_total counter"
    );
    for l in &r.links {
        if let Some((out, inb)) = l.bytes {
            let _ = writeln!(
                s,
                "van_link_bytes_total{{router=\"{id}\",link=\"{}\",direction=\"out\"}} {out}",
                l.name,
            );
            let _ = writeln!(
                s,
                "van_link_bytes_total{{router=\"{id}\",link=\"{}\",direction=\"in\"}} {inb}",
                l.name,
            );
        }
    }
    let c = counters.inner.lock().expect("metrics lock");
    let _ = writeln!(
        s,
        "# HELP van_link_failures_total Failed or refused link attempts by cause.\n# TYPE van_link_failures_total counter"
    );
    for (k, v) in &c.link_failures {
        let _ = writeln!(
            s,
            "van_link_failures_total{{router=\"{id}\",kind=\"{k}\"}} {v}"
        );
    }
    let _ = writeln!(
        s,
        "# HELP van_flows_closed_total Flows ended, by role and outcome.\n# TYPE van_flows_closed_total counter"
    );
    for ((role, outcome), v) in &c.flows_closed {
        let _ = writeln!(
            s,
            "van_flows_closed_total{{router=\"{id}\",role=\"{role}\",outcome=\"{outcome}\"}} {v}"
        );
    }
    let _ = writeln!(
        s,
        "# HELP van_flow_bytes_total Bytes of ended flows (out: client to server).\n# TYPE van_flow_bytes_total counter"
    );
    for ((role, dir), v) in &c.flow_bytes {
        let _ = writeln!(
            s,
            "van_flow_bytes_total{{router=\"{id}\",role=\"{role}\",direction=\"{dir}\"}} {v}"
        );
    }
    s
}

/// The HTTP app serving `/metrics` (whatever `render` returns) and `/healthz`.
pub fn app(render: impl Fn() -> String + Clone + Send + Sync + 'static) -> Http {
    Http::new()
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    render(),
                )
                    .into_response()
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
}
