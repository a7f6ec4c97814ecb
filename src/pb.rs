//! The generated protobuf and gRPC code for `clerkmirror.v1`, and its encoded descriptor set
//! (served by reflection).

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("clerkmirror.v1");

/// The encoded `FileDescriptorSet` of `proto/`, with every transitive import.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("clerkmirror_descriptor");
