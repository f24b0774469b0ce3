//! Error types of the router library, classified by who caused them and whether a retry can help.

use std::fmt;

/// One invalid field of a configuration, named by its path (`tcp_listeners[1].port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A configuration that cannot be applied. Carries every problem found, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({} error", self.errors.len())?;
        if self.errors.len() != 1 {
            f.write_str("s")?;
        }
        f.write_str(")")?;
        for e in &self.errors {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    pub fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            errors: vec![FieldError {
                path: path.into(),
                message: message.into(),
            }],
        }
    }
}

/// What kind of failure ended a link attempt; the admin API reports it with the error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkFailure {
    /// The peer's host name does not resolve.
    Dns,
    /// Nothing listens at the peer's address.
    ConnectRefused,
    /// The peer's address cannot be reached (no route, reset while connecting).
    Unreachable,
    /// Connecting or a handshake took too long.
    Timeout,
    /// A certificate was rejected, by either side.
    Certificate,
    /// Another TLS failure.
    Tls,
    /// The peer broke the inter-router protocol.
    Protocol,
    /// The peer refused the link after the TLS handshake (version, duplicate id, role).
    HandshakeRefused,
    /// Reading or writing failed after the connection was made.
    Io,
    /// The peer closed the connection during the handshake.
    Closed,
}

/// Why a link to a peer router could not be established or was lost.
///
/// `retryable` tells the dialer whether reconnecting may succeed without a configuration change;
/// every kind is retried with backoff anyway (a peer may fix its side), but non-retryable
/// ones are logged at a higher level.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot resolve {host}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connect to {addr} failed")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connect to {addr} timed out")]
    ConnectTimeout { addr: String },
    #[error("TLS handshake with {peer} failed: {reason}")]
    Tls {
        peer: String,
        reason: String,
        /// A certificate was rejected (rather than, say, no common protocol version).
        certificate: bool,
    },
    #[error("peer {peer} broke the protocol: {reason}")]
    Protocol { peer: String, reason: String },
    #[error("peer {peer} refused: {reason}")]
    Refused { peer: String, reason: String },
    #[error("i/o with {peer}")]
    Io {
        peer: String,
        #[source]
        source: std::io::Error,
    },
    #[error("link to {peer} closed: {reason}")]
    Closed { peer: String, reason: String },
    #[error(transparent)]
    Proxy(#[from] van_proto::tunnel::TunnelError),
}

impl LinkError {
    /// Whether the fault is with the peer or its certificate rather than the network.
    pub fn caused_by_peer(&self) -> bool {
        matches!(
            self,
            LinkError::Tls { .. } | LinkError::Protocol { .. } | LinkError::Refused { .. }
        )
    }

    /// The kind of failure, for the admin API.
    pub fn failure(&self) -> LinkFailure {
        match self {
            LinkError::Resolve { .. } => LinkFailure::Dns,
            LinkError::Connect { source, .. }
                if source.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                LinkFailure::ConnectRefused
            }
            LinkError::Connect { .. } => LinkFailure::Unreachable,
            LinkError::ConnectTimeout { .. } => LinkFailure::Timeout,
            LinkError::Tls {
                certificate: true, ..
            } => LinkFailure::Certificate,
            LinkError::Tls { .. } => LinkFailure::Tls,
            LinkError::Protocol { .. } => LinkFailure::Protocol,
            LinkError::Refused { .. } => LinkFailure::HandshakeRefused,
            LinkError::Io { .. } => LinkFailure::Io,
            LinkError::Closed { .. } => LinkFailure::Closed,
            LinkError::Proxy(van_proto::tunnel::TunnelError::Timeout { .. }) => {
                LinkFailure::Timeout
            }
            LinkError::Proxy(_) => LinkFailure::Unreachable,
        }
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            LinkError::Resolve { .. } => "dns",
            LinkError::Connect { .. } => "connect",
            LinkError::ConnectTimeout { .. } => "timeout",
            LinkError::Tls { .. } => "tls",
            LinkError::Protocol { .. } => "protocol",
            LinkError::Refused { .. } => "refused",
            LinkError::Io { .. } => "io",
            LinkError::Closed { .. } => "closed",
            LinkError::Proxy(_) => "proxy",
        }
    }
}

/// Errors of the admin API, mapped to gRPC status codes in one place (`admin.rs`).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{0}")]
    Unavailable(String),
}

/// Errors that stop the router from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot bind {what} on {addr}")]
    Bind {
        what: String,
        addr: String,
        #[source]
        source: std::io::Error,
    },
}
