//! Generates the containerd task metrics types and gRPC stubs at build time.
//!
//! protox parses the schema in pure Rust (well-known types included), so
//! building needs no `protoc` on the host or in CI images.

use std::error::Error;

const PROTO_DIR: &str = "proto";
const PROTOS: &[&str] = &[
    "proto/containerd/services/tasks/v1/tasks.proto",
    "proto/containerd/types/metrics.proto",
    "proto/cgroups/v1/metrics.proto",
    "proto/cgroups/v2/metrics.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    println!("cargo:rerun-if-changed=build.rs");

    let fds = protox::compile(PROTOS, [PROTO_DIR])?;

    // Server stubs only serve fakes in tests; default stubs answer
    // UNIMPLEMENTED. Client, server and transport are on by default.
    tonic_prost_build::configure()
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
