//! A scrape of `/metrics`: the gauges that follow the database (the log's bounds, the inbox, the
//! backfill's progress, the last reconcile's drift) read now, then every metric rendered.

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
    metrics.render()
}
