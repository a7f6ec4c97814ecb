//! The gRPC server: `DirectoryService`, `BillingService`, `WatchService`, `AdminService`, the standard health service and server reflection (v1
//! and v1alpha, with every transitive import and the `google.rpc` error details), so grpcurl,
//! `buf curl` and Kubernetes probes work out of the box, errors' details included.

pub mod access;
pub mod admin;
pub mod auth;
pub mod billing;
pub mod cursor;
pub mod destinations;
pub mod directory;
pub mod error;
pub mod invitations;
pub mod io;
pub mod limit;
pub mod list;
pub mod names;
pub mod token_file;
pub mod watch;
pub mod web;

/// Records as protobuf messages (kept with the records, re-exported for the handlers).
pub use crate::store::convert;

use std::time::Duration;

use tokio::sync::watch as signal;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::pb;
use crate::pb::admin_service_server::AdminServiceServer;
use crate::pb::billing_service_server::BillingServiceServer;
use crate::pb::served::directory_service_server::DirectoryServiceServer;
use crate::pb::served::watch_service_server::WatchServiceServer;

/// Runs one RPC inside a span naming it, mapping its error to a `Status` (the one place).
pub(crate) async fn traced<T>(
    rpc: &'static str,
    f: impl Future<Output = Result<T, error::ApiError>>,
) -> Result<tonic::Response<T>, tonic::Status> {
    use tracing::Instrument;
    f.instrument(tracing::info_span!("rpc", otel.name = rpc, otel.kind = "server", rpc))
        .await
        .map(tonic::Response::new)
        .map_err(tonic::Status::from)
}

/// Builds the gRPC routes; the returned reporter sets the health status.
pub async fn routes(
    directory: directory::Directory,
    billing: billing::Billing,
    watcher: watch::Watcher,
    admin: admin::Admin,
    max_message_bytes: usize,
) -> Result<(Routes, HealthReporter), tonic_reflection::server::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            // An error's details are `Any`s naming `google.rpc.ErrorInfo` & co.: a client that
            // resolves them by reflection prints their fields instead of raw bytes.
            .register_encoded_file_descriptor_set(pb::ERROR_DETAILS_FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let routes = Routes::new(health)
        .add_service(DirectoryServiceServer::new(directory).max_decoding_message_size(max_message_bytes))
        .add_service(BillingServiceServer::new(billing).max_decoding_message_size(max_message_bytes))
        .add_service(WatchServiceServer::new(watcher).max_decoding_message_size(max_message_bytes))
        .add_service(AdminServiceServer::new(admin).max_decoding_message_size(max_message_bytes))
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?);
    Ok((routes, reporter))
}

/// Sets the health status from one readiness check; returns the status set.
pub async fn check_health(
    reporter: &HealthReporter,
    readiness: &crate::db::Readiness,
    last: Option<ServingStatus>,
) -> ServingStatus {
    let status = match readiness.check().await {
        Ok(()) => ServingStatus::Serving,
        Err(reason) => {
            if last != Some(ServingStatus::NotServing) {
                tracing::warn!(%reason, "gRPC health: NOT_SERVING");
            }
            ServingStatus::NotServing
        }
    };
    if last != Some(status) {
        reporter.set_service_status("", status).await;
        reporter
            .set_service_status("clerkmirror.v1.DirectoryService", status)
            .await;
    }
    status
}

/// Keeps the health status current: SERVING while the database answers, every migration is
/// applied and no background task has failed, NOT_SERVING otherwise (checked every `every`).
pub async fn report_health(
    reporter: HealthReporter,
    readiness: crate::db::Readiness,
    every: Duration,
    mut stop: signal::Receiver<bool>,
) {
    let mut last = Some(check_health(&reporter, &readiness, None).await);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        last = Some(check_health(&reporter, &readiness, last).await);
    }
}
