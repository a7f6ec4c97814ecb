//! `AdminService`: sync status, the inbox (never bodies), replaying dead letters through the
//! inbox and the one applier, and outbound webhook destinations (in `destinations`).

use tonic::{Request, Response, Status};

use super::convert::timestamp;
use super::cursor::Cursor;
use super::destinations::Destinations;
use super::error::ApiError;
use super::{list, traced};
use crate::inbox::{self, Replay};
use crate::pb;
use crate::pb::admin_service_server::AdminService;
use crate::store::admin;

/// Most svix-ids replayed by one request.
pub const MAX_REPLAY_IDS: usize = 1000;

#[derive(Clone)]
pub struct Admin {
    pool: sqlx::PgPool,
    destinations: Destinations,
}

impl Admin {
    pub fn new(pool: sqlx::PgPool, destinations: Destinations) -> Self {
        Admin { pool, destinations }
    }
}

fn status_name(s: i32) -> Result<Option<&'static str>, ApiError> {
    Ok(match pb::InboxStatus::try_from(s) {
        Ok(pb::InboxStatus::Unspecified) => None,
        Ok(pb::InboxStatus::Pending) => Some("pending"),
        Ok(pb::InboxStatus::Applied) => Some("applied"),
        Ok(pb::InboxStatus::Skipped) => Some("skipped"),
        Ok(pb::InboxStatus::Failed) => Some("failed"),
        Ok(pb::InboxStatus::Replayed) => Some("replayed"),
        Err(_) => {
            return Err(ApiError::invalid(
                "status",
                "INVALID_STATUS",
                format!("{s} is not an inbox status"),
            ));
        }
    })
}

fn status_of(name: &str) -> pb::InboxStatus {
    match name {
        "pending" => pb::InboxStatus::Pending,
        "applied" => pb::InboxStatus::Applied,
        "skipped" => pb::InboxStatus::Skipped,
        "failed" => pb::InboxStatus::Failed,
        "replayed" => pb::InboxStatus::Replayed,
        _ => pb::InboxStatus::Unspecified,
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn get_sync_status(
        &self,
        _: Request<pb::GetSyncStatusRequest>,
    ) -> Result<Response<pb::GetSyncStatusResponse>, Status> {
        traced("GetSyncStatus", async {
            let s = admin::sync_status(&self.pool).await?;
            let report = crate::backfill::reconcile::last_report(&self.pool).await?;
            let parse = |t: &str| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .ok()
                    .map(|t| t.with_timezone(&chrono::Utc))
            };
            let last_reconcile = report.map(|r| pb::ReconcileReport {
                start_time: timestamp(parse(&r.started_at)),
                finish_time: timestamp(parse(&r.finished_at)),
                counts: r
                    .drift
                    .iter()
                    .flat_map(|(resource, d)| {
                        [
                            ("missing", d.missing.len()),
                            ("stale", d.stale.len()),
                            ("deleted", d.deleted.len()),
                            ("unlisted_but_present", d.unlisted_but_present.len()),
                        ]
                        .map(|(kind, count)| pb::DriftCount {
                            resource: resource.clone(),
                            kind: kind.into(),
                            count: count as i64,
                        })
                    })
                    .collect(),
            });
            Ok(pb::GetSyncStatusResponse {
                head_cursor: Cursor::new(&s.log_id, s.head).encode(),
                oldest_cursor: Cursor::new(&s.log_id, s.oldest - 1).encode(),
                inbox_pending: s.pending,
                dead_letters: s.dead_letters,
                last_event_receive_time: timestamp(s.last_received),
                last_event_apply_time: timestamp(s.last_applied),
                applier: s.applier.unwrap_or_default(),
                last_reconcile,
            })
        })
        .await
    }

    async fn list_inbox_events(
        &self,
        request: Request<pb::ListInboxEventsRequest>,
    ) -> Result<Response<pb::ListInboxEventsResponse>, Status> {
        let r = request.into_inner();
        traced("ListInboxEvents", async {
            let size = list::page_size(r.page_size)?;
            let status = status_name(r.status)?;
            let event_type = (!r.event_type.is_empty()).then_some(r.event_type.as_str());
            let binding = list::binding("ListInboxEvents", status.unwrap_or(""), &r.event_type, false);
            let before: i64 = match list::decode_token(&r.page_token, &binding)? {
                t if t.is_empty() => 0,
                t => t
                    .parse()
                    .map_err(|_| ApiError::invalid("page_token", "INVALID_PAGE_TOKEN", "not a page token"))?,
            };
            let rows = inbox::list_inbox(&self.pool, status, event_type, before, size + 1).await?;
            let items = rows
                .into_iter()
                .map(|e| {
                    let event = pb::InboxEvent {
                        id: e.id,
                        source: e.source,
                        event_key: e.event_key,
                        event_type: e.event_type.unwrap_or_default(),
                        event_time: timestamp(e.event_time),
                        receive_time: timestamp(Some(e.received_at)),
                        status: status_of(&e.status) as i32,
                        error: e.error.unwrap_or_default(),
                        attempts: e.attempts,
                        process_time: timestamp(e.processed_at),
                    };
                    (e.id.to_string(), event)
                })
                .collect();
            let (events, next_page_token) = list::page(items, size, &binding);
            Ok(pb::ListInboxEventsResponse {
                events,
                next_page_token,
            })
        })
        .await
    }

    async fn replay_events(
        &self,
        request: Request<pb::ReplayEventsRequest>,
    ) -> Result<Response<pb::ReplayEventsResponse>, Status> {
        let r = request.into_inner();
        traced("ReplayEvents", async {
            let what = match (r.all_dead_letters, r.svix_ids.is_empty()) {
                (true, true) => Replay::AllDeadLetters,
                (false, false) if r.svix_ids.len() <= MAX_REPLAY_IDS => Replay::SvixIds(r.svix_ids),
                (false, false) => {
                    return Err(ApiError::invalid(
                        "svix_ids",
                        "TOO_MANY_IDS",
                        format!("at most {MAX_REPLAY_IDS} per request"),
                    ));
                }
                _ => {
                    return Err(ApiError::invalid(
                        "svix_ids",
                        "INVALID_SELECTION",
                        "set exactly one of all_dead_letters and svix_ids",
                    ));
                }
            };
            let (replayed, not_found) = inbox::replay(&self.pool, &what).await?;
            tracing::info!(replayed, not_found = not_found.len(), "replay requested");
            Ok(pb::ReplayEventsResponse { replayed, not_found })
        })
        .await
    }

    async fn create_destination(&self, request: Request<pb::CreateDestinationRequest>) -> Result<Response<pb::CreateDestinationResponse>, Status> {
        traced("CreateDestination", self.destinations.create(request.into_inner())).await
    }

    async fn get_destination(&self, request: Request<pb::GetDestinationRequest>) -> Result<Response<pb::GetDestinationResponse>, Status> {
        traced("GetDestination", self.destinations.get(request.into_inner())).await
    }

    async fn list_destinations(&self, request: Request<pb::ListDestinationsRequest>) -> Result<Response<pb::ListDestinationsResponse>, Status> {
        traced("ListDestinations", self.destinations.list(request.into_inner())).await
    }

    async fn update_destination(&self, request: Request<pb::UpdateDestinationRequest>) -> Result<Response<pb::UpdateDestinationResponse>, Status> {
        traced("UpdateDestination", self.destinations.update(request.into_inner())).await
    }

    async fn delete_destination(&self, request: Request<pb::DeleteDestinationRequest>) -> Result<Response<pb::DeleteDestinationResponse>, Status> {
        traced("DeleteDestination", self.destinations.delete(request.into_inner())).await
    }

    async fn pause_destination(&self, request: Request<pb::PauseDestinationRequest>) -> Result<Response<pb::PauseDestinationResponse>, Status> {
        traced("PauseDestination", self.destinations.pause(request.into_inner())).await
    }

    async fn resume_destination(&self, request: Request<pb::ResumeDestinationRequest>) -> Result<Response<pb::ResumeDestinationResponse>, Status> {
        traced("ResumeDestination", self.destinations.resume(request.into_inner())).await
    }

    async fn reset_destination(&self, request: Request<pb::ResetDestinationRequest>) -> Result<Response<pb::ResetDestinationResponse>, Status> {
        traced("ResetDestination", self.destinations.reset(request.into_inner())).await
    }

    async fn rotate_destination_secret(&self, request: Request<pb::RotateDestinationSecretRequest>) -> Result<Response<pb::RotateDestinationSecretResponse>, Status> {
        traced("RotateDestinationSecret", self.destinations.rotate(request.into_inner())).await
    }

    async fn list_delivery_attempts(&self, request: Request<pb::ListDeliveryAttemptsRequest>) -> Result<Response<pb::ListDeliveryAttemptsResponse>, Status> {
        traced("ListDeliveryAttempts", self.destinations.attempts(request.into_inner())).await
    }
}
