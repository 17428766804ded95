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
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // A method a server does not implement answers UNIMPLEMENTED, so adding an rpc does not
        // break every other implementation of the service (test doubles included).
        .generate_default_stubs(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
