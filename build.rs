//! Compiles `proto/` with protox (pure Rust: no `protoc` on the machine) and tonic-prost-build,
//! and the vendored `google/rpc/error_details.proto` into a descriptor set for reflection. The
//! servers of `DirectoryService` and `WatchService` are generated a second time from the same
//! descriptor, with the responses of [`SERVED`] taken from `crate::pb::served` (they carry
//! encoded entities and changes as they are, see `src/pb/served.rs`).
use protox::prost::Message as _;

/// The responses the server sends as `crate::pb::served` types.
const SERVED: [&str; 12] = [
    "WatchChangesResponse",
    "GetUserResponse",
    "GetOrganizationResponse",
    "GetMembershipResponse",
    "BatchGetUsersResponse",
    "BatchGetOrganizationsResponse",
    "LookupUserResponse",
    "LookupOrganizationResponse",
    "LookupMembershipResponse",
    "GetInvitationResponse",
    "GetRoleResponse",
    "LookupRoleResponse",
];

/// `BatchGetUsers` → `batch_get_users`.
fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The server of `name`, every method as the proto declares it, each response of [`SERVED`]
/// replaced by its `crate::pb::served` type; returns how many were.
fn served_service(fds: &prost_types::FileDescriptorSet, name: &str) -> Result<usize, Box<dyn std::error::Error>> {
    let service = fds
        .file
        .iter()
        .flat_map(|f| f.service.iter().map(move |s| (f, s)))
        .find(|(f, s)| f.package() == "clerkmirror.v1" && s.name() == name)
        .ok_or_else(|| format!("proto/ declares no clerkmirror.v1.{name}"))?;
    let local = |t: &str| -> Result<String, Box<dyn std::error::Error>> {
        t.strip_prefix(".clerkmirror.v1.")
            .map(str::to_string)
            .ok_or_else(|| format!("{name} uses a message of another package: {t}").into())
    };
    let mut builder = tonic_build::manual::Service::builder().name(name).package("clerkmirror.v1");
    let mut served = 0;
    for m in &service.1.method {
        let input = local(m.input_type())?;
        let output = local(m.output_type())?;
        let output = if SERVED.contains(&output.as_str()) {
            served += 1;
            format!("crate::pb::served::{output}")
        } else {
            format!("crate::pb::{output}")
        };
        let mut method = tonic_build::manual::Method::builder()
            .name(snake(m.name()))
            .route_name(m.name())
            .input_type(format!("crate::pb::{input}"))
            .output_type(output)
            .codec_path(match m.server_streaming() {
                // A stream holds its encode buffer while it lives: see src/pb/codec.rs.
                true => "crate::pb::codec::StreamCodec",
                false => "tonic_prost::ProstCodec",
            });
        if m.client_streaming() {
            method = method.client_streaming();
        }
        if m.server_streaming() {
            method = method.server_streaming();
        }
        builder = builder.method(method.build());
    }
    tonic_build::manual::Builder::new()
        .build_client(false)
        .compile(&[builder.build()]);
    Ok(served)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/clerkmirror/v1/resources.proto",
        "proto/clerkmirror/v1/directory.proto",
        "proto/clerkmirror/v1/watch.proto",
        "proto/clerkmirror/v1/admin.proto",
        "proto/clerkmirror/v1/billing.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    // compile_fds() does not write the descriptor set: reflection needs it, so write it here.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("clerkmirror_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds.clone())?;
    let served = served_service(&fds, "DirectoryService")? + served_service(&fds, "WatchService")?;
    if served != SERVED.len() {
        return Err(format!("only {served} of the {} served responses are the services'", SERVED.len()).into());
    }
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
