//! The gRPC server: the standard health service and server reflection (v1 and v1alpha, with
//! every transitive import), so grpcurl, `buf curl` and Kubernetes probes work out of the box.

use tonic::service::Routes;
use tonic_health::server::HealthReporter;

use crate::pb;

/// Builds the gRPC routes; the returned reporter sets the health status.
pub async fn routes() -> Result<(Routes, HealthReporter), tonic_reflection::server::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let routes = Routes::new(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?);
    Ok((routes, reporter))
}
