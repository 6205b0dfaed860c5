//! Compiles `modelops/*/v1/*.proto` with protox (pure Rust, no `protoc`) and generates the tonic
//! clients and servers, plus a file descriptor set for gRPC reflection. The etcd subset under
//! `etcd/` gives the registry an etcd client without a system `protoc`.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "modelops/registry/v1/registry.proto",
    "modelops/attribution/v1/attribution.proto",
    "modelops/indexer/v1/indexer.proto",
    "etcd/mvccpb/kv.proto",
    "etcd/etcdserverpb/rpc.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
