//! AdminService's outbound webhook destinations: requests checked (the URL against the address
//! policy, what is selected in the watch's terms, the raw event types, the field mask, the
//! start), written through `outbound::destinations`, and shown with cursor, lag and last answer.
//! A secret is shown once (on create and rotate); stored sealed under the `serve` key.

use std::sync::Arc;
use std::time::Duration;

use super::convert::timestamp;
use super::cursor::{Cursor, seq_in_log};
use super::error::ApiError;
use super::list;
use super::names;
use crate::filter::selection::{Selection, entity_type_of};
use crate::outbound::address::Policy;
use crate::outbound::destinations::{self as store, Destination, Settings, Start, StoreError};
use crate::outbound::sealed::SealingKey;
use crate::outbound::sender::DESTINATIONS_CHANNEL;
use crate::outbound::sign::SigningSecret;
use crate::outbound::{body, events};
use crate::pb;

/// The longest a rotated-out secret keeps signing.
pub const MAX_TRANSITION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The default transition of a rotation.
pub const DEFAULT_TRANSITION: Duration = Duration::from_secs(24 * 3600);

/// What the destination RPCs need.
#[derive(Clone)]
pub struct Destinations {
    pub pool: sqlx::PgPool,
    pub log_id: String,
    pub policy: Policy,
    pub key: Option<Arc<SealingKey>>,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => ApiError::NotFound {
                what: "destination",
                name: format!("destinations/{id}"),
                cursor: String::new(),
            },
            StoreError::Expired { .. } => ApiError::invalid(
                "cursor",
                "CURSOR_EXPIRED",
                format!("{e}: start from the oldest retained change instead (start_from_oldest / from_oldest)"),
            ),
            StoreError::Ahead { .. } => ApiError::invalid("cursor", "CURSOR_IN_FUTURE", e.to_string()),
            StoreError::Db(e) => e.into(),
        }
    }
}

impl Destinations {
    fn key(&self) -> Result<&SealingKey, ApiError> {
        self.key.as_deref().ok_or_else(|| ApiError::FailedPrecondition {
            reason: "NO_DESTINATIONS_KEY",
            description: "this server has no destinations key to keep signing secrets with: start `serve` with \
                          --destinations-key (32 bytes of base64, e.g. `openssl rand -base64 32`)"
                .into(),
        })
    }

    /// The settings `d` asks for, checked. `field` prefixes the fields named in errors.
    fn settings(&self, d: &pb::Destination) -> Result<Settings, ApiError> {
        self.policy
            .check_url(&d.url)
            .map_err(|e| ApiError::invalid("destination.url", "INVALID_DESTINATION_URL", e.to_string()))?;
        let mut types = Vec::new();
        for t in &d.entity_types {
            let t = entity_type_of(*t)?;
            if !types.contains(&t) {
                types.push(t);
            }
        }
        // The filter is checked as a watch of these types checks it.
        Selection::new(&d.entity_types, &d.filter, "", "")?;
        if d.event_types.len() > events::MAX_EVENT_TYPES {
            return Err(ApiError::invalid(
                "destination.event_types",
                "TOO_MANY_EVENT_TYPES",
                format!("at most {}", events::MAX_EVENT_TYPES),
            ));
        }
        for t in &d.event_types {
            events::check(t).map_err(|why| ApiError::invalid("destination.event_types", "INVALID_EVENT_TYPE", why))?;
        }
        let fields = d.field_mask.as_ref().map(|m| m.paths.clone()).unwrap_or_default();
        body::check_fields(&d.entity_types, &fields)
            .map_err(|why| ApiError::invalid("destination.field_mask", "INVALID_FIELD_MASK", why))?;
        let lanes = match d.lanes {
            0 => 1,
            n @ 1..=64 => n,
            n => {
                return Err(ApiError::invalid(
                    "destination.lanes",
                    "INVALID_LANES",
                    format!("{n} lanes: between 1 and 64"),
                ));
            }
        };
        let batch_size = match d.batch_size {
            0 => 1,
            n @ 1..=100 => n,
            n => {
                return Err(ApiError::invalid(
                    "destination.batch_size",
                    "INVALID_BATCH_SIZE",
                    format!("{n} changes a delivery: between 1 and 100"),
                ));
            }
        };
        let mut event_types = d.event_types.clone();
        event_types.sort();
        event_types.dedup();
        Ok(Settings {
            url: d.url.clone(),
            entity_types: types.iter().map(|t| t.as_str().to_string()).collect(),
            filter: d.filter.clone(),
            event_types,
            fields,
            lanes,
            batch_size,
        })
    }

    /// The start a cursor field names.
    fn start(&self, field: &str, cursor: &str, oldest: bool, head: bool) -> Result<Start, ApiError> {
        match (cursor.is_empty(), oldest, head) {
            (true, false, _) => Ok(Start::Head),
            (true, true, false) => Ok(Start::Oldest),
            (false, false, false) => match seq_in_log(field, cursor, &self.log_id)? {
                Some(seq) => Ok(Start::After(seq)),
                None => Err(ApiError::invalid(
                    field,
                    "CURSOR_EXPIRED",
                    "the cursor comes from another database (restored or wiped?)",
                )),
            },
            _ => Err(ApiError::invalid(
                field,
                "INVALID_START",
                "name at most one start: a cursor, the oldest, or the head",
            )),
        }
    }

    /// `row` as the API shows it (its secret never; `secret` when just made), with its lag.
    async fn shown(&self, row: &Destination, secret: Option<&SigningSecret>) -> Result<pb::Destination, ApiError> {
        let (head, oldest_after) = store::lags(&self.pool, &[row.cursor()]).await?;
        Ok(self.message(row, secret, head, oldest_after[0]))
    }

    /// `row` as the API shows it, its lag from the log's `head` and the commit time of the
    /// oldest change after its cursor.
    fn message(
        &self,
        row: &Destination,
        secret: Option<&SigningSecret>,
        head: i64,
        oldest_after: Option<chrono::DateTime<chrono::Utc>>,
    ) -> pb::Destination {
        let cursor = row.cursor();
        let lag_time = oldest_after.map(|t| {
            let d = (chrono::Utc::now() - t).to_std().unwrap_or_default();
            prost_types::Duration {
                seconds: d.as_secs() as i64,
                nanos: d.subsec_nanos() as i32,
            }
        });
        let entity_types = row.settings.wire_entity_types();
        pb::Destination {
            name: format!("destinations/{}", row.id),
            url: row.settings.url.clone(),
            entity_types,
            filter: row.settings.filter.clone(),
            event_types: row.settings.event_types.clone(),
            field_mask: (!row.settings.fields.is_empty()).then(|| prost_types::FieldMask {
                paths: row.settings.fields.clone(),
            }),
            lanes: row.settings.lanes,
            batch_size: row.settings.batch_size,
            start_cursor: String::new(),
            start_from_oldest: false,
            secret: secret.map(SigningSecret::text).unwrap_or_default(),
            state: match row.active() {
                true => pb::DestinationState::Active,
                false => pb::DestinationState::Paused,
            } as i32,
            paused_reason: row.paused_reason.clone().unwrap_or_default(),
            cursor: Cursor::new(&self.log_id, cursor).encode(),
            lag: (head - cursor).max(0),
            lag_time,
            last_status: row.last_status.unwrap_or(0),
            last_error: row.last_error.clone().unwrap_or_default(),
            last_attempt_time: timestamp(row.last_attempt_at),
            next_attempt_time: timestamp(row.next_attempt_at),
            delivered: row.delivered,
            failed_attempts: row.failed_attempts,
            create_time: timestamp(Some(row.created_at)),
            update_time: timestamp(Some(row.updated_at)),
        }
    }

    /// Tells the sender (on whichever replica) that destinations changed.
    async fn notify(&self) {
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(DESTINATIONS_CHANNEL)
            .execute(&self.pool)
            .await
        {
            tracing::warn!(error = %e, "cannot notify the sender (it looks again within a second)");
        }
    }

    pub async fn create(&self, r: pb::CreateDestinationRequest) -> Result<pb::CreateDestinationResponse, ApiError> {
        let d = r
            .destination
            .ok_or_else(|| ApiError::invalid("destination", "MISSING_DESTINATION", "name a url and what to send"))?;
        let key = self.key()?;
        let settings = self.settings(&d)?;
        let start = self.start("destination.start_cursor", &d.start_cursor, d.start_from_oldest, false)?;
        let id = store::new_id();
        let secret = SigningSecret::generate();
        let row = store::create(&self.pool, &id, &settings, &key.seal(&id, &secret), start).await?;
        self.notify().await;
        tracing::info!(destination = %id, "destination created");
        Ok(pb::CreateDestinationResponse {
            destination: Some(self.shown(&row, Some(&secret)).await?),
        })
    }

    pub async fn get(&self, r: pb::GetDestinationRequest) -> Result<pb::GetDestinationResponse, ApiError> {
        let id = names::destination_id("name", &r.name)?;
        let row = store::get(&self.pool, id).await?;
        Ok(pb::GetDestinationResponse {
            destination: Some(self.shown(&row, None).await?),
        })
    }

    pub async fn list(&self, r: pb::ListDestinationsRequest) -> Result<pb::ListDestinationsResponse, ApiError> {
        let size = list::page_size(r.page_size)?;
        let binding = list::binding("ListDestinations", "", "", false);
        let after = list::decode_token(&r.page_token, &binding)?;
        let rows = store::list(&self.pool, &after, size + 1).await?;
        let cursors: Vec<i64> = rows.iter().map(Destination::cursor).collect();
        let (head, oldest_after) = store::lags(&self.pool, &cursors).await?;
        let items = rows
            .iter()
            .zip(oldest_after)
            .map(|(row, oldest)| (row.id.clone(), self.message(row, None, head, oldest)))
            .collect();
        let (destinations, next_page_token) = list::page(items, size, &binding);
        Ok(pb::ListDestinationsResponse {
            destinations,
            next_page_token,
        })
    }

    pub async fn update(&self, r: pb::UpdateDestinationRequest) -> Result<pb::UpdateDestinationResponse, ApiError> {
        let d = r
            .destination
            .ok_or_else(|| ApiError::invalid("destination", "MISSING_DESTINATION", "name the destination"))?;
        let id = names::destination_id("destination.name", &d.name)?;
        let row = store::get(&self.pool, id).await?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(ApiError::invalid(
                "update_mask",
                "MISSING_UPDATE_MASK",
                "name the fields to change: url, entity_types, filter, event_types, field_mask, lanes, batch_size",
            ));
        }
        // The stored settings as a request, with the masked fields taken from `d`.
        let mut merged = self.message(&row, None, 0, None);
        for path in &paths {
            match path.as_str() {
                "url" => merged.url = d.url.clone(),
                "entity_types" => merged.entity_types = d.entity_types.clone(),
                "filter" => merged.filter = d.filter.clone(),
                "event_types" => merged.event_types = d.event_types.clone(),
                "field_mask" => merged.field_mask = d.field_mask.clone(),
                "lanes" => merged.lanes = d.lanes,
                "batch_size" => merged.batch_size = d.batch_size,
                other => {
                    return Err(ApiError::invalid(
                        "update_mask",
                        "INVALID_UPDATE_MASK",
                        format!("`{other}` cannot be changed (url, entity_types, filter, event_types, field_mask, lanes, batch_size can)"),
                    ));
                }
            }
        }
        let settings = self.settings(&merged)?;
        let row = store::update(&self.pool, id, &settings).await?;
        self.notify().await;
        Ok(pb::UpdateDestinationResponse {
            destination: Some(self.shown(&row, None).await?),
        })
    }

    pub async fn delete(&self, r: pb::DeleteDestinationRequest) -> Result<pb::DeleteDestinationResponse, ApiError> {
        let id = names::destination_id("name", &r.name)?;
        store::delete(&self.pool, id).await?;
        self.notify().await;
        tracing::info!(destination = %id, "destination deleted");
        Ok(pb::DeleteDestinationResponse {})
    }

    pub async fn pause(&self, r: pb::PauseDestinationRequest) -> Result<pb::PauseDestinationResponse, ApiError> {
        let id = names::destination_id("name", &r.name)?;
        let reason = match r.reason.trim() {
            "" => "paused by an operator",
            reason => reason,
        };
        let row = store::set_paused(&self.pool, id, Some(reason)).await?;
        self.notify().await;
        Ok(pb::PauseDestinationResponse {
            destination: Some(self.shown(&row, None).await?),
        })
    }

    pub async fn resume(&self, r: pb::ResumeDestinationRequest) -> Result<pb::ResumeDestinationResponse, ApiError> {
        let id = names::destination_id("name", &r.name)?;
        let row = store::set_paused(&self.pool, id, None).await?;
        self.notify().await;
        Ok(pb::ResumeDestinationResponse {
            destination: Some(self.shown(&row, None).await?),
        })
    }

    pub async fn reset(&self, r: pb::ResetDestinationRequest) -> Result<pb::ResetDestinationResponse, ApiError> {
        let id = names::destination_id("name", &r.name)?;
        if r.cursor.is_empty() && !r.from_oldest && !r.to_head {
            return Err(ApiError::invalid(
                "cursor",
                "INVALID_START",
                "name where to go on: a cursor, from_oldest or to_head",
            ));
        }
        let start = self.start("cursor", &r.cursor, r.from_oldest, r.to_head)?;
        let row = store::reset(&self.pool, id, start).await?;
        self.notify().await;
        tracing::info!(destination = %id, cursor = row.cursor(), "destination reset");
        Ok(pb::ResetDestinationResponse {
            destination: Some(self.shown(&row, None).await?),
        })
    }

    pub async fn rotate(
        &self,
        r: pb::RotateDestinationSecretRequest,
    ) -> Result<pb::RotateDestinationSecretResponse, ApiError> {
        let id = names::destination_id("name", &r.name)?;
        let key = self.key()?;
        let transition = match r.transition {
            None => DEFAULT_TRANSITION,
            Some(d) if d.seconds < 0 || d.nanos < 0 || Duration::from_secs(d.seconds as u64) > MAX_TRANSITION => {
                return Err(ApiError::invalid(
                    "transition",
                    "INVALID_TRANSITION",
                    "between 0 s and 7 days",
                ));
            }
            Some(d) => Duration::new(d.seconds as u64, d.nanos as u32),
        };
        let row = store::get(&self.pool, id).await?;
        let secret = SigningSecret::generate();
        let (previous, until) = match transition.is_zero() {
            true => (None, None),
            false => (
                Some(row.secret.as_str()),
                Some(chrono::Utc::now() + chrono::Duration::from_std(transition).unwrap_or_default()),
            ),
        };
        let row = store::rotate(&self.pool, id, &key.seal(id, &secret), previous, until).await?;
        self.notify().await;
        tracing::info!(destination = %id, "destination secret rotated");
        Ok(pb::RotateDestinationSecretResponse {
            destination: Some(self.shown(&row, Some(&secret)).await?),
        })
    }

    pub async fn attempts(&self, r: pb::ListDeliveryAttemptsRequest) -> Result<pb::ListDeliveryAttemptsResponse, ApiError> {
        let id = names::destination_id("name", &r.name)?;
        store::get(&self.pool, id).await?;
        let size = list::page_size(r.page_size)?;
        let binding = list::binding("ListDeliveryAttempts", id, "", false);
        let before: i64 = match list::decode_token(&r.page_token, &binding)? {
            t if t.is_empty() => 0,
            t => t
                .parse()
                .map_err(|_| ApiError::invalid("page_token", "INVALID_PAGE_TOKEN", "not a page token"))?,
        };
        let rows = store::attempts(&self.pool, id, before, size + 1).await?;
        let items = rows
            .into_iter()
            .map(|a| {
                let attempt = pb::DeliveryAttempt {
                    cursor: Cursor::new(&self.log_id, a.seq).encode(),
                    webhook_id: a.webhook_id,
                    attempt_time: timestamp(Some(a.attempt_time)),
                    duration: Some(prost_types::Duration {
                        seconds: (a.duration_ms / 1000) as i64,
                        nanos: (a.duration_ms % 1000) * 1_000_000,
                    }),
                    delivered: a.delivered,
                    http_status: a.http_status.unwrap_or(0),
                    error: a.error.unwrap_or_default(),
                };
                (a.id.to_string(), attempt)
            })
            .collect();
        let (attempts, next_page_token) = list::page(items, size, &binding);
        Ok(pb::ListDeliveryAttemptsResponse {
            attempts,
            next_page_token,
        })
    }
}
