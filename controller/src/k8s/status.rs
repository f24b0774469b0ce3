//! The site's status as a ConfigMap, `skupper-network-status`: what `skupper status`,
//! `link status`, `service status` and `network status` show on Kubernetes. Reading a
//! ConfigMap needs only namespace RBAC and no route to the controller's API.
//!
//! Keys `site`, `links`, `services` and `network` hold the JSON of the controller API's
//! `SiteStatus`, `LinkList`, `ServiceList` and `Network` messages (camelCase fields), and
//! `updated` the RFC 3339 time of the write. docs/kubernetes.md describes it for users.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use tokio::time::Instant;
use van_proto::controller as pb;

use super::{MANAGED_BY, MANAGER};
use crate::controller::Controller;

pub const STATUS_CONFIGMAP: &str = "skupper-network-status";

/// A change of anything but the flow count is written at once; a change of the flow count
/// alone at most this often, so busy traffic does not turn into API-server writes.
pub const FLOWS_REFRESH: Duration = Duration::from_secs(30);

/// Everything the ConfigMap shows, in the API's own types.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub site: pb::SiteStatus,
    pub links: pb::LinkList,
    pub services: pb::ServiceList,
    pub network: pb::Network,
}

impl Snapshot {
    pub fn of(c: &Controller) -> Snapshot {
        Snapshot {
            site: c.site_status(),
            links: pb::LinkList {
                links: c.link_statuses(),
            },
            services: pb::ServiceList {
                services: c.services(),
            },
            network: c.network(),
        }
    }

    /// The snapshot without what changes with traffic alone.
    fn steady(&self) -> Snapshot {
        let mut s = self.clone();
        s.site.active_flows = 0;
        s
    }

    /// The ConfigMap's data.
    pub fn data(&self, updated: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("site".to_string(), json(&self.site)),
            ("links".to_string(), json(&self.links)),
            ("services".to_string(), json(&self.services)),
            ("network".to_string(), json(&self.network)),
            ("updated".to_string(), updated.to_string()),
        ])
    }
}

/// JSON of one of the snapshot's parts (plain messages: this cannot fail).
fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Decides when the status is worth writing.
#[derive(Debug, Default)]
pub struct Writer {
    written: Option<(Snapshot, Instant)>,
}

impl Writer {
    /// Whether `now` should write `s`: first time, after a steady change, or when only the
    /// flow count moved and the last write is older than [`FLOWS_REFRESH`].
    pub fn due(&self, s: &Snapshot, now: Instant) -> bool {
        match &self.written {
            None => true,
            Some((last, _)) if last == s => false,
            Some((last, _)) if last.steady() != s.steady() => true,
            Some((_, at)) => now.duration_since(*at) >= FLOWS_REFRESH,
        }
    }

    pub fn wrote(&mut self, s: Snapshot, now: Instant) {
        self.written = Some((s, now));
    }

    /// After a failed write the next check writes again.
    pub fn forget(&mut self) {
        self.written = None;
    }
}

/// Writes the status ConfigMap with server-side apply, owned by the site.
pub async fn write(
    client: kube::Client,
    namespace: &str,
    owner: &OwnerReference,
    s: &Snapshot,
    updated: &str,
) -> Result<(), kube::Error> {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(STATUS_CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.to_string(),
                MANAGER.to_string(),
            )])),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        data: Some(s.data(updated)),
        ..Default::default()
    };
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let pp = PatchParams::apply(MANAGER).force();
    api.patch(STATUS_CONFIGMAP, &pp, &Patch::Apply(&cm)).await?;
    Ok(())
}

/// RFC 3339 (UTC, seconds) of now.
pub fn now_rfc3339() -> String {
    crate::site::rfc3339(crate::site::now_unix())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(flows: u32, links: usize) -> Snapshot {
        let mut s = Snapshot::default();
        s.site.site_name = "west".into();
        s.site.active_flows = flows;
        s.links.links = (0..links)
            .map(|i| pb::LinkStatus {
                name: format!("l{i}"),
                state: "active".into(),
                ..Default::default()
            })
            .collect();
        s
    }

    #[test]
    fn writes_steady_changes_at_once_and_flow_counts_rarely() {
        let t0 = Instant::now();
        let mut w = Writer::default();
        assert!(w.due(&snap(0, 1), t0), "the first status is written");
        w.wrote(snap(0, 1), t0);
        assert!(
            !w.due(&snap(0, 1), t0 + FLOWS_REFRESH * 2),
            "nothing changed"
        );
        assert!(w.due(&snap(0, 2), t0), "a new link is written at once");
        assert!(
            !w.due(&snap(7, 1), t0 + Duration::from_secs(5)),
            "flows alone wait"
        );
        assert!(w.due(&snap(7, 1), t0 + FLOWS_REFRESH), "…until the refresh");
        w.forget();
        assert!(w.due(&snap(0, 1), t0), "a failed write is retried");
    }

    #[test]
    fn data_round_trips_through_the_api_types() {
        let s = snap(3, 2);
        let d = s.data("2026-11-26T20:00:00Z");
        let site: pb::SiteStatus = serde_json::from_str(&d["site"]).unwrap();
        let links: pb::LinkList = serde_json::from_str(&d["links"]).unwrap();
        assert_eq!(site, s.site);
        assert_eq!(links, s.links);
        assert!(d["site"].contains("\"siteName\":\"west\""), "{}", d["site"]);
        assert_eq!(d["updated"], "2026-11-26T20:00:00Z");
    }
}
