//! What the workspace's tests share, so that each thing is done one way, with a bound and a
//! clear message when it fails:
//!
//! - [`eventually`] and [`eventually_ok`]: wait for a condition that nothing announces;
//! - [`temp_dir`]: a directory removed on drop, however the test ends;
//! - [`ReservedPort`]: a port no other process can take between choosing it and binding it;
//! - [`http::exchange`]: one raw HTTP/1.1 request and its answer;
//! - [`closed_within`]: whether a server ends a connection in time, and what it sent.
//!
//! Behind features of the same names (so a crate's tests build only what they use), the parts
//! tests start: `router` (in-process routers and router processes), `site` (network namespaces as hosts, the controller's
//! in-memory store, sites run through the CLI), `kube` (a fake Kubernetes API server) and
//! `grpc` (reflection and health checks).
//!
//! A dev-dependency only: nothing here ships.

mod dir;
mod eventually;
pub mod http;
mod io;
mod port;

#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(feature = "kube")]
pub mod kube;
#[cfg(feature = "site")]
pub mod netns;
#[cfg(feature = "router")]
pub mod router;
#[cfg(feature = "site")]
pub mod site;

pub use dir::{TempDir, temp_dir};
pub use eventually::{PATIENCE, eventually, eventually_ok};
pub use io::closed_within;
pub use port::{ReservedPort, reserved_ports};
