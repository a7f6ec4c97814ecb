//! Compiles `proto/` with protox (pure Rust: no `protoc` on the machine) and tonic-prost-build,
//! and the vendored `google/rpc/error_details.proto` into a descriptor set for reflection.
use protox::prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/clerkmirror/v1/resources.proto",
        "proto/clerkmirror/v1/directory.proto",
        "proto/clerkmirror/v1/watch.proto",
        "proto/clerkmirror/v1/admin.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    // compile_fds() does not write the descriptor set: reflection needs it, so write it here.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("clerkmirror_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    // The error details every error carries (tonic-types encodes them): their descriptors, with
    // their imports, for reflection only, so grpcurl and `buf curl` can decode them.
    let details = protox::compile(["google/rpc/error_details.proto"], ["third_party/googleapis"])?;
    std::fs::write(
        out.join("google_rpc_error_details_descriptor.bin"),
        details.encode_to_vec(),
    )?;
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=third_party/googleapis");
    Ok(())
}
