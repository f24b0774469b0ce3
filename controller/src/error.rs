//! Errors of the controller, classified by who caused them and whether retrying helps.
//! They become `tonic::Status` in one place (`api.rs`).

use std::fmt;

/// Problems with what a caller gave, each naming its field. All are reported at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invalid {
    pub errors: Vec<(String, String)>,
}

impl Invalid {
    pub fn one(field: &str, message: impl Into<String>) -> Invalid {
        let mut i = Invalid::default();
        i.push(field, message);
        i
    }

    pub fn push(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push((field.to_string(), message.into()));
    }

    pub fn into_result(self) -> Result<(), Invalid> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (field, m)) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{field}: {m}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Invalid {}

/// The platform could not read or write the site's state.
#[derive(Debug, thiserror::Error)]
#[error("site state {what}: {message}")]
pub struct StoreError {
    pub what: String,
    pub message: String,
}

/// Why a token could not be redeemed. `retry` tells whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct ClaimError {
    /// Short class: dns, refused, timeout, tls, certificate, expired, used-up, unknown,
    /// tampered, refused-by-site, protocol.
    pub reason: &'static str,
    pub detail: String,
    pub retry: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The caller's input is wrong; retrying the same request cannot help.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },
    /// The request contradicts what exists (e.g. another definition of a service).
    #[error("{0}")]
    Conflict(String),
    /// This site cannot do that (e.g. an edge site issuing tokens).
    #[error("{0}")]
    NotAllowed(String),
    #[error("token could not be redeemed")]
    Claim(#[from] ClaimError),
    /// Persisting failed; the change was not made.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A dependency (router) is not there yet; retrying later helps.
    #[error("{0}")]
    Unavailable(String),
}
