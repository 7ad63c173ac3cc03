//! Generates the CRI message types and gRPC stubs at build time.
//!
//! protox parses the schema in pure Rust, so building needs no `protoc` on
//! the host or in CI images.

use std::error::Error;

const PROTO_DIR: &str = "proto";
const PROTO: &str = "proto/runtime_v1_subset.proto";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    println!("cargo:rerun-if-changed=build.rs");

    let fds = protox::compile([PROTO], [PROTO_DIR])?;

    tonic_prost_build::configure()
        .build_client(true)
        // Servers are only fakes (unit tests, simulators): default stubs
        // answer UNIMPLEMENTED so a fake implements just what it needs.
        .build_server(true)
        .generate_default_stubs(true)
        .build_transport(true)
        .compile_fds(fds)?;
    Ok(())
}
