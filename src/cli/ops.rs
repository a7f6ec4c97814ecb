//! The one-shot operations on a mirror's database: `migrate`, `backfill`, `reconcile`, `status`
//! and `replay`. Each prints its answer on stdout.

use clap::Args;

use super::args::{DatabaseArgs, secret, with_pool};
use crate::config::{ReconcileConfig, Redacted};

#[derive(Args, Debug)]
pub(super) struct BackfillArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Clerk's Backend API.
    #[arg(long, env = "CLERK_API_URL", default_value = crate::backfill::client::DEFAULT_API_URL)]
    api_url: String,
    /// The instance's secret key (`sk_live_…` / `sk_test_…`).
    #[arg(long, env = "CLERK_SECRET_KEY", hide_env_values = true, value_parser = secret)]
    secret_key: Redacted<String>,
    /// Requests per 10 s: the instance's limit is shared with your own application.
    #[arg(long, env = "CLERK_MIRROR_API_RATE", default_value_t = ReconcileConfig::DEFAULT_RATE)]
    api_rate: usize,
}

#[derive(Args, Debug)]
pub(super) struct ReconcileArgs {
    #[command(flatten)]
    api: BackfillArgs,
    /// Allow deleting more than max(10, 1 %) of an entity type (when Clerk really lost them).
    #[arg(long)]
    allow_mass_delete: bool,
    /// List the ids of every repair, not only the counts.
    #[arg(long)]
    verbose: bool,
}

#[derive(Args, Debug)]
pub(super) struct StatusArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(super) struct ReplayArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Replay every dead letter.
    #[arg(long, conflicts_with = "id", required_unless_present = "id")]
    all_dead_letters: bool,
    /// Replay this delivery (svix-id); repeat for several.
    #[arg(long)]
    id: Vec<String>,
}

pub(super) async fn migrate(args: DatabaseArgs) -> anyhow::Result<()> {
    // Opening the pool applies the migrations.
    with_pool(&args, async |_| Ok(())).await?;
    println!("migrations applied");
    Ok(())
}

fn clerk_api(args: &BackfillArgs) -> crate::backfill::ClerkApi {
    use crate::backfill::{ClerkApi, rate::RateLimiter};
    let limiter = std::sync::Arc::new(RateLimiter::new(args.api_rate, ReconcileConfig::WINDOW));
    ClerkApi::new(&args.api_url, &args.secret_key.0, limiter)
}

pub(super) async fn reconcile(args: ReconcileArgs) -> anyhow::Result<()> {
    let api = clerk_api(&args.api);
    let options = crate::backfill::reconcile::Options {
        allow_mass_delete: args.allow_mass_delete,
    };
    let report = with_pool(&args.api.database, async |pool| {
        Ok(crate::backfill::reconcile::run(pool, &api, options).await?)
    })
    .await?;
    print!("{}", report.render(args.verbose));
    Ok(())
}

pub(super) async fn backfill(args: BackfillArgs) -> anyhow::Result<()> {
    let api = clerk_api(&args);
    let summary = with_pool(&args.database, async |pool| {
        // Progress is for a person watching: on a terminal only, never in a log file or pipe.
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut progress = |p: &crate::backfill::Progress| {
            if !tty {
                return;
            }
            let of = p.total.map(|t| format!("/{t}")).unwrap_or_default();
            let eta = match p.total {
                Some(t) if p.per_second > 0.0 && t > p.fetched => {
                    format!(", ETA {:.0} s", (t - p.fetched) as f64 / p.per_second)
                }
                _ => String::new(),
            };
            let line = format!(
                "backfill: {}: {}{of} fetched ({:.0}/s{eta})",
                p.resource, p.fetched, p.per_second
            );
            let finished = p.total.is_some_and(|t| p.fetched >= t);
            // One line per resource, redrawn in place.
            eprint!("\r\x1b[2K{line}{}", if finished { "\n" } else { "" });
        };
        Ok(crate::backfill::run(pool, &api, &mut progress).await?)
    })
    .await?;
    for (resource, s) in summary {
        if let Some(why) = &s.skipped {
            println!("{resource}: skipped: this instance does not offer it (is Clerk Billing on?): {why}");
            continue;
        }
        let resumed = if s.resumed_at > 0 {
            format!(" (resumed at {})", s.resumed_at)
        } else {
            String::new()
        };
        println!(
            "{resource}: {} fetched, {} new to apply{resumed}",
            s.fetched, s.enqueued
        );
    }
    println!("done: a running serve applies them (clerk-mirror status shows the backlog)");
    Ok(())
}

pub(super) async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let (s, report) = with_pool(&args.database, async |pool| {
        Ok((
            crate::store::admin::sync_status(pool)
                .await
                .map_err(|e| anyhow::anyhow!("cannot read the mirror's sync status: {e}"))?,
            crate::backfill::reconcile::last_report(pool)
                .await
                .map_err(|e| anyhow::anyhow!("cannot read the last drift report: {e}"))?,
        ))
    })
    .await?;
    let cursor = |seq| crate::pb::cursor::Cursor::new(&s.log_id, seq).encode();
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".into());
    if args.json {
        let value = serde_json::json!({
            "head_cursor": cursor(s.head), "oldest_cursor": cursor(s.oldest - 1),
            "inbox_pending": s.pending, "dead_letters": s.dead_letters,
            "last_event_received": s.last_received, "last_event_applied": s.last_applied,
            "applier": s.applier,
            "last_reconcile": report,
        });
        println!("{value}");
    } else {
        println!("change log head:    {} (seq {})", cursor(s.head), s.head);
        println!("oldest cursor:      {} (seq {})", cursor(s.oldest - 1), s.oldest - 1);
        println!("inbox pending:      {}", s.pending);
        println!("dead letters:       {}", s.dead_letters);
        println!("last received:      {}", time(s.last_received));
        println!("last applied:       {}", time(s.last_applied));
        println!("applier:            {}", s.applier.as_deref().unwrap_or("none running"));
        match &report {
            Some(r) => print!("last {}", r.render(false)),
            None => println!("last reconcile:     never"),
        }
    }
    Ok(())
}

pub(super) async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let what = if args.all_dead_letters {
        crate::inbox::Replay::AllDeadLetters
    } else {
        crate::inbox::Replay::SvixIds(args.id.clone())
    };
    let (replayed, not_found) = with_pool(&args.database, async |pool| {
        crate::inbox::replay(pool, &what)
            .await
            .map_err(|e| anyhow::anyhow!("cannot put the deliveries back into the inbox: {e}"))
    })
    .await?;
    println!("replayed {replayed} event(s); a running serve applies them");
    for id in &not_found {
        println!("not found: {id}");
    }
    anyhow::ensure!(
        not_found.is_empty(),
        "{} svix-id(s) not in the inbox: give the svix-id of a delivery this mirror received (the Clerk \
         Dashboard lists them under Webhooks, Message Attempts); applied rows older than serve's \
         --inbox-retention are deleted",
        not_found.len()
    );
    Ok(())
}
