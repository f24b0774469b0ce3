//! Feeds arbitrary text to the token file parser, `van_controller::token::parse`, as `skupper
//! link create` and the controller (API, Kubernetes token Secrets) call it.
//!
//! Checked: nothing panics; a refusal names at least one field, each with a message; an
//! accepted token holds what the parser promises (a valid name, an issuer, nonzero ports and
//! valid hosts, an https:// claim URL) and survives writing and reading again unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use van_controller::site::{dns_label_problem, host_problem};
use van_controller::token::{self, Token};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let t = match token::parse(text) {
        Ok(t) => t,
        Err(e) => {
            assert!(!e.errors.is_empty(), "a refusal without a reason");
            for (field, message) in &e.errors {
                assert!(!field.is_empty() && !message.is_empty(), "{e}");
            }
            return;
        }
    };
    assert!(dns_label_problem(t.name(), 63).is_none(), "{t:?}");
    assert!(!t.generated_by().is_empty(), "{t:?}");
    let yaml = match &t {
        Token::Cert(c) => {
            assert!(c.inter_router_port > 0 && c.edge_port > 0, "{c:?}");
            assert!(host_problem(&c.inter_router_host).is_none(), "{c:?}");
            assert!(host_problem(&c.edge_host).is_none(), "{c:?}");
            c.to_yaml()
        }
        Token::Claim(c) => {
            assert!(c.url.starts_with("https://"), "{c:?}");
            c.to_yaml()
        }
    };
    match token::parse(&yaml) {
        Ok(again) => assert_eq!(again, t, "written as\n{yaml}"),
        Err(e) => panic!("a token written back does not read: {e}\n{yaml}"),
    }
});
