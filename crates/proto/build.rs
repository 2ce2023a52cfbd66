//! Compiles `proto/cronfleet/v1/*.proto` with protox (pure Rust: no `protoc` needed).

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let root = "../../proto";
    println!("cargo:rerun-if-changed={root}");
    let files = ["cronfleet/v1/worker.proto", "cronfleet/v1/admin.proto"];
    let descriptors = protox::compile(files, [root])?;
    // No `connect(url)` constructors on clients: the worker RPC is called `Connect`, and
    // its generated method would clash with them. Clients are built from a `Channel`.
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
