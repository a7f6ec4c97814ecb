//! Where an inbox row came from, and whose word it carries: Clerk's (webhooks, and the copies of
//! Clerk's state that backfill, reconcile and replay enqueue) or the mirror's own (state it
//! produces itself), which ranks below Clerk's (docs/inbox.md, "Ranking").

/// The `source` column of an inbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A verified webhook; the key is its `svix-id`.
    Webhook,
    /// An object listed from the Backend API by `backfill`.
    Backfill,
    /// A repair enqueued by `reconcile`.
    Reconcile,
    /// A copy of an earlier row put back by `replay`; the key starts with that row's source.
    Replay,
    /// State the mirror derives from time passing (an invitation's expiry, a canceled
    /// subscription item reaching its period end). Produced by the mirror: ranks below Clerk.
    Clock,
    /// State the mirror polls from the Backend API where Clerk sends no webhooks (plans).
    /// Produced by the mirror: ranks below Clerk.
    Api,
    /// Synthetic Clerk-shaped events `clerk-mirror bench` loads into its own database.
    Bench,
}

/// Whose word a row carries. `Mirror < Clerk`: where two rows would otherwise tie, Clerk's wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// Produced by the mirror itself.
    Mirror,
    /// Sent by Clerk, or copied from what Clerk sent or answered.
    Clerk,
}

impl Source {
    /// Every source, in no particular order.
    pub const ALL: [Source; 7] = [
        Source::Webhook,
        Source::Backfill,
        Source::Reconcile,
        Source::Replay,
        Source::Clock,
        Source::Api,
        Source::Bench,
    ];

    /// The text stored in the `source` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::Backfill => "backfill",
            Source::Reconcile => "reconcile",
            Source::Replay => "replay",
            Source::Clock => "clock",
            Source::Api => "api",
            Source::Bench => "bench",
        }
    }

    /// The source a stored `source` column names; `None` for a text this binary does not know
    /// (a newer replica's).
    pub fn parse(text: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The rank of rows from this source; a replay's is that of the row it copies (see
    /// [`Rank::of`]), so here it counts as Clerk's.
    pub fn rank(self) -> Rank {
        match self {
            Source::Clock | Source::Api => Rank::Mirror,
            Source::Webhook | Source::Backfill | Source::Reconcile | Source::Replay | Source::Bench => Rank::Clerk,
        }
    }
}

impl Rank {
    /// The rank of a stored row: a replay (key `<source>:<key>@<ms>`) ranks as the row it
    /// copies, however often it was replayed; a source this binary does not know ranks as Clerk's
    /// (every row did before ranks existed).
    pub fn of(source: &str, event_key: &str) -> Rank {
        match Source::parse(source) {
            Some(Source::Replay) => match event_key.split_once(':') {
                Some((copied, rest)) => Rank::of(copied, rest),
                None => Rank::Clerk,
            },
            Some(s) => s.rank(),
            None => Rank::Clerk,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_reads_back_from_the_text_it_stores() {
        for s in Source::ALL {
            assert_eq!(Source::parse(s.as_str()), Some(s));
        }
        assert_eq!(Source::parse("newer"), None);
    }

    #[test]
    fn rows_the_mirror_produces_rank_below_every_source_clerk_speaks_through() {
        let clerk = [
            Source::Webhook,
            Source::Backfill,
            Source::Reconcile,
            Source::Replay,
            Source::Bench,
        ];
        for mirror in [Source::Clock, Source::Api] {
            for c in clerk {
                assert!(mirror.rank() < c.rank(), "{mirror} must rank below {c}");
            }
        }
    }

    #[test]
    fn a_replay_ranks_as_the_row_it_copies_however_often_replayed() {
        assert_eq!(Rank::of("replay", "webhook:msg_1@1700000000000"), Rank::Clerk);
        assert_eq!(Rank::of("replay", "clock:orginv_1:expired@1700000000000"), Rank::Mirror);
        assert_eq!(Rank::of("replay", "replay:clock:orginv_1@1@2"), Rank::Mirror);
        assert_eq!(Rank::of("replay", "replay:reconcile:users:u@1@2"), Rank::Clerk);
        assert_eq!(Rank::of("clock", "orginv_1:expired"), Rank::Mirror);
    }

    #[test]
    fn a_source_this_binary_does_not_know_ranks_as_clerks() {
        assert_eq!(Rank::of("from_a_newer_replica", "k"), Rank::Clerk);
        assert_eq!(Rank::of("replay", "no-colon"), Rank::Clerk);
    }
}
