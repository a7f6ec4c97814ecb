//! Compiles `proto/` with protox (pure Rust: no `protoc` on the machine) and tonic-prost-build.
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
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
