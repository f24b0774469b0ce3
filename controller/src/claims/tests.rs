//! The client against the server on loopback, with real TLS and an issuer that answers by
//! claim name.

use std::future::Future;
use std::sync::{Arc, Mutex};

use super::{client, server};
use crate::error::ClaimError;
use crate::token::{CertToken, ClaimToken};

const REQUESTER: &str = "0123456789abcdef";

/// Honours claim `good`, refuses `used` as used up, and is unavailable for any other.
#[derive(Debug)]
struct Issuer {
    token: CertToken,
    asked: Mutex<Vec<(String, String, String)>>,
}

impl server::Issuer for Issuer {
    fn redeem(
        &self,
        claim: &str,
        secret: &str,
        requester: &str,
    ) -> impl Future<Output = Result<CertToken, ClaimError>> + Send {
        self.asked
            .lock()
            .unwrap()
            .push((claim.into(), secret.into(), requester.into()));
        let refuse = |reason, retry| ClaimError {
            reason,
            detail: format!("{reason} here"),
            retry,
        };
        std::future::ready(match claim {
            "good" => Ok(self.token.clone()),
            "used" => Err(refuse("used-up", false)),
            _ => Err(refuse("unavailable", true)),
        })
    }
}

/// A claims endpoint on loopback, and a token for `claim` there (without its name set).
async fn endpoint() -> (Arc<Issuer>, impl Fn(&str) -> ClaimToken) {
    let certs = crate::certs::new_site_certs(
        "0123456789abcdef",
        crate::certs::server_hosts(["127.0.0.1"]),
    )
    .unwrap();
    let tls = server::server_tls(&certs.server_cert, &certs.server_key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cert, key) = crate::certs::issue_client("0123456789abcdef", &certs, "east").unwrap();
    let issuer = Arc::new(Issuer {
        token: CertToken {
            name: "good".into(),
            ca_cert: certs.ca_cert.clone(),
            cert,
            key,
            inter_router_host: "west.example".into(),
            inter_router_port: 55671,
            edge_host: "west.example".into(),
            edge_port: 45671,
            generated_by: "west-id".into(),
            site_name: "west".into(),
            cost: 3,
        },
        asked: Mutex::default(),
    });
    tokio::spawn(server::serve(
        issuer.clone(),
        tls,
        listener,
        std::future::pending(),
    ));
    let token = move |claim: &str| ClaimToken {
        name: claim.into(),
        url: format!("https://{addr}/{claim}"),
        secret: " s3cret\n".into(),
        ca_cert: certs.ca_cert.clone(),
        expires: None,
        generated_by: "west-id".into(),
        site_name: "west".into(),
        cost: 3,
    };
    (issuer, token)
}

#[tokio::test]
async fn an_honoured_claim_comes_back_as_the_issuers_cert_token() {
    let (issuer, token) = endpoint().await;
    let got = client::redeem(&token("good"), REQUESTER, "east", crate::site::now_unix()).await;
    assert_eq!(got.as_ref(), Ok(&issuer.token));
    assert_eq!(
        *issuer.asked.lock().unwrap(),
        [(
            "good".to_string(),
            "s3cret".to_string(),
            REQUESTER.to_string()
        )],
        "the issuer is asked once, with the trimmed secret and the requester's id"
    );
}

#[tokio::test]
async fn a_refusal_keeps_its_reason_and_only_an_unavailable_issuer_is_retried() {
    let (_, token) = endpoint().await;
    let used = client::redeem(&token("used"), REQUESTER, "east", crate::site::now_unix()).await;
    assert_eq!(
        used,
        Err(ClaimError {
            reason: "used-up",
            detail: "used-up here".into(),
            retry: false,
        })
    );
    let down = client::redeem(&token("other"), REQUESTER, "east", crate::site::now_unix()).await;
    assert_eq!(
        down,
        Err(ClaimError {
            reason: "refused-by-site",
            detail: "unavailable here".into(),
            retry: true,
        })
    );
}

#[tokio::test]
async fn a_requester_id_that_is_not_hex_is_turned_away_before_the_issuer() {
    let (issuer, token) = endpoint().await;
    let got = client::redeem(&token("good"), "not-hex", "east", crate::site::now_unix()).await;
    assert_eq!(
        got.map_err(|e| (e.reason, e.retry)),
        Err(("refused-by-site", false))
    );
    assert!(issuer.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_token_that_says_it_expired_is_not_sent() {
    let (issuer, token) = endpoint().await;
    let expired = ClaimToken {
        expires: Some(1),
        ..token("good")
    };
    let got = client::redeem(&expired, REQUESTER, "east", crate::site::now_unix()).await;
    assert_eq!(
        got.map_err(|e| (e.reason, e.retry)),
        Err(("expired", false))
    );
    assert!(issuer.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_claim_url_without_a_host_is_refused_before_any_lookup() {
    let (issuer, token) = endpoint().await;
    for url in ["https:///name", "not a url", ""] {
        let bad = ClaimToken {
            url: url.into(),
            ..token("good")
        };
        let got = client::redeem(&bad, REQUESTER, "east", crate::site::now_unix()).await;
        let e = got.expect_err(url);
        assert_eq!((e.reason, e.retry), ("protocol", false), "{url}: {e}");
    }
    assert!(issuer.asked.lock().unwrap().is_empty());
}

mod failures {
    use std::net::IpAddr;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::server::{Failures, Limits};

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn hold_offs_double_after_the_free_failures_up_to_the_cap() {
        let mut f = Failures::new(&Limits::default());
        let mut now = Instant::now();
        let a = ip(1);
        for _ in 0..4 {
            f.admit(a, now).unwrap();
            assert_eq!(f.done(a, true, now), None);
        }
        let mut holds = Vec::new();
        for _ in 0..10 {
            f.admit(a, now).unwrap();
            let hold = f.done(a, true, now).expect("held off");
            assert_eq!(f.admit(a, now), Err(hold), "refused while held off");
            holds.push(hold.as_secs());
            now += hold;
        }
        assert_eq!(holds, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        // Another source is not affected; successes never count.
        for _ in 0..20 {
            f.admit(ip(2), now).unwrap();
            assert_eq!(f.done(ip(2), false, now), None);
        }
        // Quiet for long enough, a source is forgotten.
        now += Duration::from_secs(600);
        f.admit(a, now).unwrap();
        assert_eq!(f.done(a, true, now), None);
    }

    #[test]
    fn claims_side_by_side_get_no_more_tries_than_one_after_another() {
        let mut f = Failures::new(&Limits::default());
        let now = Instant::now();
        let a = ip(1);
        for _ in 0..5 {
            f.admit(a, now).unwrap();
        }
        assert!(
            f.admit(a, now).is_err(),
            "five in flight fill the free tries"
        );
    }

    #[test]
    fn a_spray_of_sources_cannot_grow_the_table() {
        let mut f = Failures::new(&Limits {
            max_sources: 100,
            ..Limits::default()
        });
        let now = Instant::now();
        for n in 0..10_000 {
            f.admit(ip(n), now).unwrap();
            f.done(ip(n), true, now);
        }
        assert!(f.len() <= 100, "{}", f.len());
    }
}

#[test]
fn a_held_off_claim_is_kept_for_a_retry_and_refusals_are_final() {
    use hyper::StatusCode;
    let held = r#"{"reason":"rate-limited","message":"too many failed claims from this address; try again in 4 s"}"#;
    let e = client::read_answer(StatusCode::TOO_MANY_REQUESTS, held.as_bytes()).unwrap_err();
    assert_eq!((e.reason, e.retry), ("rate-limited", true));
    assert!(e.detail.contains("try again in 4 s"), "{}", e.detail);
    let used = r#"{"reason":"used-up","message":"no uses left"}"#;
    let e = client::read_answer(StatusCode::GONE, used.as_bytes()).unwrap_err();
    assert_eq!((e.reason, e.retry), ("used-up", false));
}
