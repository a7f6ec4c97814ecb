//! A scrape of `/metrics`: the gauges that follow the database (the log's bounds, the inbox, the
//! backfill's progress, the last reconcile's drift, the outbound destinations) read now, then
//! every metric rendered.

use crate::metrics::Metrics;

/// Reads the database-backed gauges into `metrics`, then renders the text exposition format. A
/// database that does not answer leaves those gauges at their last values.
pub async fn render(metrics: &Metrics, pool: &sqlx::PgPool) -> String {
    let row: Result<(i64, i64, i64, i64), _> = sqlx::query_as(
        "SELECT head_seq, oldest_seq,
                (SELECT count(*) FROM inbox WHERE status = 'pending'),
                (SELECT count(*) FROM inbox WHERE status = 'failed')
           FROM log_head",
    )
    .fetch_one(pool)
    .await;
    if let Ok((head, oldest, pending, failed)) = row {
        metrics.set_log(head, oldest, pending, failed);
    }
    if let Ok(progress) = sqlx::query_as::<_, (String, i64)>("SELECT resource, fetched FROM backfill_checkpoints")
        .fetch_all(pool)
        .await
    {
        metrics.set_backfill_fetched(&progress);
    }
    if let Ok(Some(report)) = crate::backfill::reconcile::last_report(pool).await {
        for (resource, d) in &report.drift {
            for (kind, ids) in [("missing", &d.missing), ("stale", &d.stale), ("deleted", &d.deleted)] {
                metrics.set_drift(resource, kind, ids.len());
            }
        }
    }
    let destinations = sqlx::query_as::<_, (String, i64, i64, i64, i64, i64)>(
        "SELECT d.id, d.delivered, d.failed_attempts, (d.state = 'paused')::int::int8, greatest(h.head_seq - m.cursor, 0),
                coalesce(extract(epoch FROM now() - (SELECT commit_time FROM changes c WHERE c.seq > m.cursor
                                                     ORDER BY c.seq LIMIT 1)), 0)::int8
           FROM destinations d CROSS JOIN log_head h
          CROSS JOIN LATERAL (SELECT min(x) AS cursor FROM unnest(d.lane_cursors) x) m",
    )
    .fetch_all(pool)
    .await;
    if let Err(e) = &destinations {
        tracing::warn!(error = %e, "cannot read the destinations for /metrics");
    }
    if let Ok(rows) = destinations {
        let rows: Vec<_> = rows
            .into_iter()
            .map(|(id, delivered, failed, paused, lag, lag_seconds)| {
                let values = [
                    ("delivered", delivered),
                    ("failed_attempts", failed),
                    ("paused", paused),
                    ("lag_changes", lag),
                    ("lag_seconds", lag_seconds),
                ];
                (id, values)
            })
            .collect();
        metrics.set_destinations(&rows);
    }
    metrics.render()
}
