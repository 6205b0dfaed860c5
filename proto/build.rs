//! Compiles `modelops/*/v1/*.proto` with protox (pure Rust, no `protoc`) and generates the tonic
//! clients and servers, plus a file descriptor set for gRPC reflection. The etcd subset under
//! `etcd/` gives the registry an etcd client without a system `protoc`. Arrow Flight's protocol
//! (`arrow/flight/`) is only described for reflection; its code comes from `arrow-flight`.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "modelops/registry/v1/registry.proto",
    "modelops/attribution/v1/attribution.proto",
    "modelops/indexer/v1/indexer.proto",
    "etcd/mvccpb/kv.proto",
    "etcd/etcdserverpb/rpc.proto",
];

/// Described for reflection only.
const REFLECTED_ONLY: &[&str] = &["arrow/flight/flight.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS.iter().chain(REFLECTED_ONLY) {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let reflected = protox::compile(PROTOS.iter().chain(REFLECTED_ONLY), ["."])?;
    std::fs::write(out_dir.join("descriptor.bin"), prost::Message::encode_to_vec(&reflected))?;
    let descriptors = protox::compile(PROTOS, ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // A spec chunk is handed on as it arrives, never copied into a Vec.
        .bytes(".modelops.registry.v1.ReadJobSpecResponse.chunk")
        .compile_fds(descriptors)?;
    Ok(())
}
