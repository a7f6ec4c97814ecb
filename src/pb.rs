//! The generated protobuf and gRPC code for `clerkmirror.v1`, and the encoded descriptor sets
//! reflection serves (this API's, and the `google.rpc` error details every error carries).

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("clerkmirror.v1");

/// The encoded `FileDescriptorSet` of `proto/`, with every transitive import.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("clerkmirror_descriptor");

/// The encoded `FileDescriptorSet` of `google/rpc/error_details.proto` (`ErrorInfo`,
/// `BadRequest`, `RetryInfo`, …) with its import `google/protobuf/duration.proto`: the messages
/// of an error's `grpc-status-details-bin` (encoded by tonic-types), for clients that decode
/// them through reflection.
pub const ERROR_DETAILS_FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("google_rpc_error_details_descriptor");
