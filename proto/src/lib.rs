//! Protocol definitions shared by the router, config-sync, controller and CLI.
//!
//! - [`admin`]: the router's gRPC admin API (`van.admin.v1`).
//! - [`controller`]: the site controller's gRPC API (`van.controller.v1`).
//! - [`console`]: the console's views (`van.console.v1`).
//! - [`records`]: flow records for the network observer (`van.records.v1`).
//! - [`wire`]: the protobuf bodies of inter-router control frames (`van.wire.v1`);
//!   the framing itself is described in `docs/wire-protocol.md`.
//! - [`grpc`]: serving these APIs (with health and reflection) and dialling them.

pub mod grpc;
pub mod tunnel;

/// Generated code, nested as the protobuf packages are so cross-package references resolve.
pub mod van {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    pub mod admin {
        pub mod v1 {
            tonic::include_proto!("van.admin.v1");
        }
    }
    pub mod controller {
        pub mod v1 {
            tonic::include_proto!("van.controller.v1");
        }
    }
    pub mod wire {
        pub mod v1 {
            tonic::include_proto!("van.wire.v1");
        }
    }
    pub mod records {
        pub mod v1 {
            tonic::include_proto!("van.records.v1");
        }
    }
    pub mod console {
        pub mod v1 {
            tonic::include_proto!("van.console.v1");
        }
    }
}

/// Router admin API.
pub use van::admin::v1 as admin;
/// Site controller API.
pub mod controller {
    pub use crate::van::controller::v1::*;

    /// The network-wide topic on which every site controller publishes its site's record.
    pub const TOPIC_SITES: &str = "van.site.v1";

    /// The TLS profile the controller provides for links between the routers of one site
    /// (config-sync makes those links itself, one per pair of router pods).
    pub const PEER_PROFILE: &str = "site-peer";

    /// The name the routers' server certificate holds for those links (the headless
    /// Service that finds the router pods).
    pub const PEER_SERVER_NAME: &str = "skupper-router-peers";
}
/// Flow records for the network observer (`van.records.v1`).
pub mod records {
    pub use crate::van::records::v1::*;

    /// The routing key on which router `router_id` serves its records; every router
    /// advertises its own, so the keys also list every router, edges included.
    pub fn routing_key(router_id: &str) -> String {
        format!("{KEY_PREFIX}{router_id}")
    }

    /// Prefix of the records routing keys; keys starting with `$` are the router's own.
    pub const KEY_PREFIX: &str = "$van.records/";

    /// Largest record batch a records flow may carry.
    pub const MAX_BATCH: usize = 4 * 1024 * 1024;
}
/// The console's views over gRPC (`van.console.v1`).
pub use van::console::v1 as console;
/// Inter-router control message bodies.
pub use van::wire::v1 as wire;

/// Encoded `FileDescriptorSet` of every API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("van_descriptor");
