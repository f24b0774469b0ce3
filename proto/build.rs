//! Compiles every .proto file under `van/` with protox (pure Rust), so a fresh
//! `cargo build` needs no system `protoc`.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "van/admin/v1/router_admin.proto",
    "van/wire/v1/peer.proto",
    "van/controller/v1/controller.proto",
    "van/records/v1/records.proto",
    "van/console/v1/console.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // The descriptor set is embedded for gRPC server reflection.
    std::fs::write(
        out.join("van_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The CLI prints admin views as JSON; on Kubernetes it reads the controller's views
        // back from the status ConfigMap, so they deserialise too (missing fields default).
        .type_attribute(
            ".van.admin",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .type_attribute(".van.admin", "#[serde(rename_all = \"camelCase\")]")
        .message_attribute(".van.admin", "#[serde(default)]")
        // The console's gRPC views are its REST items, read from their JSON.
        .type_attribute(
            ".van.console",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .type_attribute(".van.console", "#[serde(rename_all = \"camelCase\")]")
        .message_attribute(".van.console", "#[serde(default)]")
        .type_attribute(
            ".van.records",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .type_attribute(".van.records", "#[serde(rename_all = \"camelCase\")]")
        .message_attribute(".van.records", "#[serde(default)]")
        .type_attribute(
            ".van.controller",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .type_attribute(".van.controller", "#[serde(rename_all = \"camelCase\")]")
        .message_attribute(".van.controller", "#[serde(default)]")
        // HTTP header blocks decode as slices of the received frame, not a copy.
        .bytes(".van.wire.v1.HttpHead.headers")
        .bytes(".van.wire.v1.HttpTrailers.headers")
        .compile_fds(fds)?;
    Ok(())
}
