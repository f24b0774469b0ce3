//! The claims endpoint (HTTPS) where claim tokens are redeemed: [`server`] serves it for the
//! issuing site, [`client`] redeems a token at it. Protocol: docs/token-format.md.
//!
//! `POST /<claim name>` with the token's secret as the body and the redeeming site in the
//! `skupper-site-id` / `skupper-site-name` headers. 200 returns a cert token (YAML); any
//! other status returns JSON `{"reason": ..., "message": ...}`.

pub mod client;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

/// How long one step (connect, handshake, request) may take.
const TIMEOUT: Duration = Duration::from_secs(10);
const SITE_ID_HEADER: &str = "skupper-site-id";
const SITE_NAME_HEADER: &str = "skupper-site-name";
/// The reasons for a refusal both sides know; the client reports any other as
/// `refused-by-site`.
const REFUSALS: [&str; 4] = ["unknown", "tampered", "expired", "used-up"];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests;
