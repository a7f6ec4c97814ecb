//! The wire: the generated protobuf and gRPC code for `clerkmirror.v1`, the encoded descriptor
//! sets reflection serves (this API's, and the `google.rpc` error details every error carries),
//! cursor encoding ([`cursor`]) and JSON as protobuf values ([`json`]).

pub mod codec;
pub mod cursor;
pub mod encoded;
pub mod json;
pub mod served;

#[allow(clippy::all, missing_docs)]
mod generated {
    tonic::include_proto!("clerkmirror.v1");
}
pub use encoded::Encoded;
pub use generated::*;

/// The encoded `FileDescriptorSet` of `proto/`, with every transitive import.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("clerkmirror_descriptor");

/// The encoded `FileDescriptorSet` of `google/rpc/error_details.proto` (`ErrorInfo`,
/// `BadRequest`, `RetryInfo`, …) with its import `google/protobuf/duration.proto`: the messages
/// of an error's `grpc-status-details-bin` (encoded by tonic-types), for clients that decode
/// them through reflection.
pub const ERROR_DETAILS_FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("google_rpc_error_details_descriptor");
