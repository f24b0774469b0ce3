//! Protocol definitions shared by the router, config-sync, controller and CLI.
//!
//! - [`admin`]: the router's gRPC admin API (`van.admin.v1`).
//! - [`wire`]: the protobuf bodies of inter-router control frames (`van.wire.v1`);
//!   the framing itself is described in `docs/wire-protocol.md`.

/// Router admin API.
pub mod admin {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    tonic::include_proto!("van.admin.v1");
}

/// Inter-router control message bodies.
pub mod wire {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    tonic::include_proto!("van.wire.v1");
}

/// Encoded `FileDescriptorSet` of every API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("van_descriptor");
