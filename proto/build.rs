//! Compiles `proto/*.proto` with `protox` (a pure-Rust protobuf compiler), so building Burrow
//! never needs `protoc` on the machine. The encoded file descriptor set is also written to
//! `OUT_DIR` for gRPC server reflection (`burrow_proto::FILE_DESCRIPTOR_SET`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/relay_control.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(protos)?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("burrow_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    // Two passes over the one package. RelayControl (unary only) is generated with default
    // method stubs answering UNIMPLEMENTED, so adding an rpc does not break every other
    // implementation of the service (test doubles included); its pass also generates every
    // message. RelayFeed (server streaming, whose stubs would change its stream type) is
    // generated without them, into `OUT_DIR/feed`, reusing those messages.
    let without = |service: &str| {
        let mut fds = compiler.file_descriptor_set();
        for file in &mut fds.file {
            file.service.retain(|s| s.name() != service);
        }
        fds
    };
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .generate_default_stubs(true)
        .compile_fds(without("RelayFeed"))?;
    let feed_out = out.join("feed");
    std::fs::create_dir_all(&feed_out)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(&feed_out)
        .extern_path(".burrow.relay.v1", "crate::relay")
        .compile_fds(without("RelayControl"))?;
    Ok(())
}
