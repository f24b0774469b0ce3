//! `/metrics`: network-wide metrics in the OpenMetrics text format, named after Skupper's
//! network observer so its dashboards and alerts carry over. Everything is read from the
//! store at each scrape.

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::Console;
use crate::store::{METRIC_LATENCY_BOUNDS, Store, Traffic, TrafficKey};

#[derive(Debug)]
struct NetworkCollector(Console);

/// The text of one scrape.
pub(crate) fn render(console: &Console) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(NetworkCollector(console.clone())));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(Labels<'_>, u64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        if labels.is_empty() {
            m.encode_counter::<NoLabelSet, _, u64>(v, None)?;
        } else {
            m.encode_family(&labels.as_slice())?
                .encode_counter::<NoLabelSet, _, u64>(v, None)?;
        }
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(Labels<'_>, i64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        m.encode_family(&labels.as_slice())?.encode_gauge(v)?;
    }
    Ok(())
}

impl Collector for NetworkCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let store = self.0.read();
        traffic(&store, &mut enc)?;
        sites(&store, &mut enc)?;
        let c = store.counters;
        counter(
            &mut enc,
            "van_console_records",
            "Records the console received: router states, connections and requests",
            &[(vec![], c.records)],
        )?;
        counter(
            &mut enc,
            "van_console_records_dropped",
            "Records the routers' streams lost before the console read them",
            &[(vec![], c.dropped)],
        )
    }
}

fn traffic_labels<'a>(store: &'a Store, t: &'a TrafficKey) -> Labels<'a> {
    vec![
        ("source_site_id", &t.source_site),
        ("source_site_name", store.site_name(&t.source_site)),
        ("dest_site_id", &t.dest_site),
        ("dest_site_name", store.site_name(&t.dest_site)),
        ("routing_key", &t.address),
        ("protocol", &t.protocol),
    ]
}

fn traffic(store: &Store, enc: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    let labels = |t| traffic_labels(store, t);
    let conns = store.traffic.iter().filter(|t| t.opened > 0);
    let each = |f: fn(&Traffic) -> u64| -> Vec<(Labels<'_>, u64)> {
        conns.clone().map(|t| (labels(&t.key), f(t))).collect()
    };
    counter(
        enc,
        "skupper_connections_opened",
        "Connections opened, by source and destination site and service",
        &each(|t| t.opened),
    )?;
    counter(
        enc,
        "skupper_connections_closed",
        "Connections closed, by source and destination site and service",
        &each(|t| t.closed),
    )?;
    counter(
        enc,
        "skupper_sent_bytes",
        "Bytes from clients toward servers",
        &each(|t| t.bytes_out),
    )?;
    counter(
        enc,
        "skupper_received_bytes",
        "Bytes from servers back to clients",
        &each(|t| t.bytes_in),
    )?;
    let mut requests: Vec<(Labels<'_>, u64)> = store
        .request_totals
        .iter()
        .filter_map(|(k, n)| {
            let t = store.traffic.get(k.traffic as usize)?;
            let mut l = labels(&t.key);
            l.push(("method", &k.method));
            l.push(("code", &k.code));
            Some((l, *n))
        })
        .collect();
    requests.sort();
    counter(
        enc,
        "skupper_requests",
        "HTTP requests, by sites, service, method and status class",
        &requests,
    )?;
    let mut m = enc.encode_descriptor(
        "skupper_request_latency_seconds",
        "Time from an HTTP request to its response's head",
        None,
        MetricType::Histogram,
    )?;
    let mut latency: Vec<_> = store.latency.iter().collect();
    latency.sort_by(|a, b| a.0.cmp(b.0));
    for ((address, code), h) in latency {
        let buckets: Vec<(f64, u64)> = METRIC_LATENCY_BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(h.counts)
            .collect();
        let count = h.counts.iter().sum();
        let labels: Labels<'_> = vec![("routing_key", address), ("code", code)];
        m.encode_family(&labels.as_slice())?
            .encode_histogram::<NoLabelSet>(h.sum_seconds, count, &buckets, None)?;
    }
    Ok(())
}

fn sites(store: &Store, enc: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    let sites = store.site_items();
    let links = store.link_items();
    let listeners = store.listener_items();
    let connectors = store.connector_items();
    {
        let mut m = enc.encode_descriptor(
            "skupper_site",
            "Each site the network holds now",
            None,
            MetricType::Info,
        )?;
        for s in &sites {
            let labels: Labels<'_> = vec![
                ("site_id", &s.id),
                ("name", &s.name),
                ("version", &s.version),
                ("mode", &s.mode),
            ];
            m.encode_info(&labels.as_slice())?;
        }
    }
    let per_site = |count: &dyn Fn(&str) -> usize| -> Vec<(Labels<'_>, i64)> {
        sites
            .iter()
            .map(|s| (vec![("site_id", s.id.as_str())], count(&s.id) as i64))
            .collect()
    };
    gauge(
        enc,
        "skupper_routers_total",
        "Routers up, per site",
        &per_site(&|id| {
            sites
                .iter()
                .find(|s| s.id == id)
                .map_or(0, |s| s.routers.len())
        }),
    )?;
    let mut by_status: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for l in &links {
        *by_status.entry((&l.site_id, &l.state)).or_default() += 1;
    }
    let link_series: Vec<(Labels<'_>, i64)> = by_status
        .into_iter()
        .map(|((site, status), n)| (vec![("site_id", site), ("status", status)], n))
        .collect();
    gauge(
        enc,
        "skupper_site_links_total",
        "Links of each site's routers, by status",
        &link_series,
    )?;
    gauge(
        enc,
        "skupper_site_listeners_total",
        "Listeners of each site's routers",
        &per_site(&|id| listeners.iter().filter(|l| l.site_id == id).count()),
    )?;
    gauge(
        enc,
        "skupper_site_connectors_total",
        "Connectors of each site's routers",
        &per_site(&|id| connectors.iter().filter(|c| c.site_id == id).count()),
    )
}
