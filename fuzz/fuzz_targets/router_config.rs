//! Feeds arbitrary text to the router's configuration parser, `van_router::Config::from_yaml`
//! (YAML into `FileConfig`, then validation of every section and entity, TLS material
//! included).
//!
//! TLS profiles that name files (`ca_file`, `cert_file`, `key_file`) are skipped: validation
//! reads them, and a fuzzer must not read arbitrary paths (`/dev/zero`). Inline PEM is fuzzed.
//!
//! Checked: nothing panics; a refusal lists at least one problem, each with a message; an
//! accepted configuration holds what validation promises (a valid router id, a site id, sane
//! timers, entity names and routing keys a peer would accept).

#![no_main]

use libfuzzer_sys::fuzz_target;
use van_router::Config;
use van_router::config::{FileConfig, valid_name, valid_routing_key};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = serde_yaml_ng::from_str::<FileConfig>(text)
        && file
            .entities
            .tls_profiles
            .iter()
            .any(|t| t.ca_file.is_some() || t.cert_file.is_some() || t.key_file.is_some())
    {
        return;
    }
    let cfg = match Config::from_yaml(text) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.errors.is_empty(), "a refusal without a reason");
            for f in &e.errors {
                assert!(!f.message.is_empty(), "{e}");
            }
            return;
        }
    };
    assert!(valid_name(&cfg.router_id), "{:?}", cfg.router_id);
    assert!(!cfg.site_id.is_empty());
    let t = &cfg.timers;
    assert!(t.hello_interval_ms >= 10 && t.hello_max_age_ms >= 2 * t.hello_interval_ms);
    assert!(t.ls_max_age_ms > t.ls_refresh_ms && t.backoff_min_ms > 0);
    assert!(t.backoff_min_ms <= t.backoff_max_ms);
    let e = &cfg.entities;
    for name in e
        .tls_profiles
        .keys()
        .chain(e.link_listeners.keys())
        .chain(e.links.keys())
        .chain(e.tcp_listeners.keys())
        .chain(e.tcp_connectors.keys())
    {
        assert!(valid_name(name), "{name:?}");
    }
    for key in e
        .tcp_listeners
        .values()
        .map(|l| &l.routing_key)
        .chain(e.tcp_connectors.values().map(|c| &c.routing_key))
    {
        assert!(valid_routing_key(key) && !key.starts_with('$'), "{key:?}");
    }
    for l in e.links.values() {
        assert!(l.port > 0 && e.tls_profiles.contains_key(&l.tls_profile));
    }
});
