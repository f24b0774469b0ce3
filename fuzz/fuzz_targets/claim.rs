//! Feeds the redeeming side of a claim what the issuing site's endpoint answers:
//! `van_controller::claims::client::read_answer` on a status code and a body.
//!
//! The first two bytes are the status (big-endian, mapped into 100..=999 so every input is a
//! status code), the rest the body: a cert token (YAML) on 200, a JSON refusal otherwise.
//!
//! Checked: nothing panics; only a 200 yields a token, and that token reads back unchanged; a
//! refusal has a known reason class and a detail, and is retried only on a 5xx (the endpoint's
//! own trouble).

#![no_main]

use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use van_controller::claims::client::read_answer;
use van_controller::token::{self, Token};

const REASONS: [&str; 6] = [
    "unknown",
    "tampered",
    "expired",
    "used-up",
    "refused-by-site",
    "protocol",
];

fuzz_target!(|data: &[u8]| {
    let [hi, lo, body @ ..] = data else {
        return;
    };
    let code = 100 + u16::from_be_bytes([*hi, *lo]) % 900;
    let status = StatusCode::from_u16(code).expect("100..=999 is a status code");
    match read_answer(status, body) {
        Ok(t) => {
            assert_eq!(status, StatusCode::OK);
            match token::parse(&t.to_yaml()) {
                Ok(Token::Cert(again)) => assert_eq!(again, t),
                other => panic!("the redeemed token does not read back: {other:?}"),
            }
        }
        Err(e) => {
            assert!(REASONS.contains(&e.reason), "{e:?}");
            if status == StatusCode::OK {
                assert_eq!(e.reason, "protocol", "{e:?}");
                assert!(!e.detail.is_empty() && !e.retry, "{e:?}");
            } else {
                assert_ne!(e.reason, "protocol", "{e:?}");
                assert_eq!(e.retry, status.is_server_error(), "{e:?}");
            }
        }
    }
});
