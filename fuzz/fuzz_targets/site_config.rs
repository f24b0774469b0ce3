//! Feeds arbitrary text to the two readers of a site's options:
//!
//! - the local platform's `site.yaml`, read as `SiteDir::read_config` does:
//!   `serde_yaml_ng::from_str::<SiteConfig>` then `SiteConfig::validate`;
//! - the Kubernetes platform's `skupper-site` ConfigMap (YAML), read by
//!   `van_controller::k8s::platform::site_config`.
//!
//! The first byte picks the reader (even: site.yaml, odd: ConfigMap); the rest is the text.
//!
//! Checked: nothing panics; a refusal names its fields; accepted options are written back as
//! `SiteDir::create` writes `site.yaml` and read again unchanged (a site `skupper init`
//! made must start), and the values derived from them (router id, public hosts and ports)
//! are what the router and tokens accept.

#![no_main]

use k8s_openapi::api::core::v1::ConfigMap;
use libfuzzer_sys::fuzz_target;
use van_controller::error::Invalid;
use van_controller::site::{SiteConfig, host_problem};

fn refused(e: &Invalid) {
    assert!(!e.errors.is_empty(), "a refusal without a reason");
    for (field, message) in &e.errors {
        assert!(!field.is_empty() && !message.is_empty(), "{e}");
    }
}

fn accepted(cfg: &SiteConfig) {
    let yaml = serde_yaml_ng::to_string(cfg).expect("site options serialise");
    let again: SiteConfig = serde_yaml_ng::from_str(&yaml)
        .unwrap_or_else(|e| panic!("site.yaml as written does not read: {e}\n{yaml}"));
    assert_eq!(&again, cfg, "written as\n{yaml}");
    again.validate().expect("written options still validate");
    // The router is started with this id: it must be a valid router name.
    let id = cfg.router_id();
    assert!(van_router::config::valid_name(&id), "router id {id:?}");
    let hosts = cfg.public_hosts();
    for h in [&hosts.inter_router, &hosts.edge, &hosts.claims] {
        assert!(host_problem(h).is_none(), "{h:?}");
    }
    let _ = cfg.public_ports();
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if which % 2 == 0 {
        let Ok(cfg) = serde_yaml_ng::from_str::<SiteConfig>(text) else {
            return;
        };
        match cfg.validate() {
            Ok(()) => accepted(&cfg),
            Err(e) => refused(&e),
        }
    } else {
        let Ok(cm) = serde_yaml_ng::from_str::<ConfigMap>(text) else {
            return;
        };
        let namespace = cm
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        match van_controller::k8s::platform::site_config(&cm, &namespace) {
            Ok(cfg) => accepted(&cfg),
            Err(e) => refused(&e),
        }
    }
});
