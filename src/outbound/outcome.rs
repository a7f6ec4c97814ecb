//! What follows one delivery attempt: delivered (any 2xx within the timeout), retried after a
//! jittered exponential backoff (other answers, timeouts, connection errors), throttled (429,
//! 502, 503, 504, and any `Retry-After`, honoured up to the longest backoff), or paused: at once
//! on `410 Gone`, and when a destination has failed for longer than the horizon (it resumes where
//! it stopped). A pause says why, with the last answer.

use std::time::Duration;

/// How a receiver answered one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP status, with its `Retry-After` header if any.
    Status { code: u16, retry_after: Option<String> },
    /// No answer within the delivery timeout.
    Timeout,
    /// No connection (refused, unreachable, TLS, DNS, or an address the policy refuses).
    Unreachable(String),
}

/// What the sender does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Acknowledged: advance the cursor.
    Delivered,
    /// Try the same delivery again after `after`; `throttled` when the receiver asked to slow down.
    Retry { after: Duration, throttled: bool },
    /// Stop delivering to this destination until it is resumed, for this reason.
    Pause(String),
}

/// The retry schedule of a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// The first retry's delay (doubling each attempt, jittered).
    pub first: Duration,
    /// The longest delay between attempts.
    pub longest: Duration,
    /// How long a destination may keep failing before it is paused.
    pub horizon: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            first: Duration::from_secs(1),
            longest: Duration::from_secs(600),
            horizon: Duration::from_secs(24 * 3600),
        }
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Status { code, .. } => write!(f, "HTTP {code}"),
            Answer::Timeout => f.write_str("no answer within the delivery timeout"),
            Answer::Unreachable(why) => write!(f, "unreachable: {why}"),
        }
    }
}

/// A `Retry-After` value (delta-seconds or an HTTP date) as a delay from `now`.
fn retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.with_timezone(&chrono::Utc) - now).to_std().unwrap_or(Duration::ZERO))
}

impl Schedule {
    /// What follows `answer` to attempt number `attempt` (1 for the first), the destination
    /// having failed since `failing_for` ago (zero on its first failure); `jitter` in 0.5..1.5.
    pub fn next(&self, answer: &Answer, attempt: u32, failing_for: Duration, jitter: f64, now: chrono::DateTime<chrono::Utc>) -> Next {
        let throttled = match answer {
            Answer::Status { code: 200..=299, .. } => return Next::Delivered,
            Answer::Status { code: 410, .. } => {
                return Next::Pause("the receiver answered 410 Gone: it asks for no more deliveries".into());
            }
            Answer::Status { code, retry_after } => {
                matches!(code, 429 | 502 | 503 | 504) || retry_after.is_some()
            }
            Answer::Timeout | Answer::Unreachable(_) => false,
        };
        if failing_for >= self.horizon {
            return Next::Pause(format!(
                "failing for {} s (longer than the {} s horizon); the last attempt: {answer}",
                failing_for.as_secs(),
                self.horizon.as_secs()
            ));
        }
        let backoff = self
            .first
            .saturating_mul(1u32.checked_shl(attempt.saturating_sub(1).min(20)).unwrap_or(u32::MAX))
            .min(self.longest)
            .mul_f64(jitter.clamp(0.5, 1.5))
            .min(self.longest);
        let asked = match answer {
            Answer::Status { retry_after: Some(v), .. } => retry_after(v, now).map(|d| d.min(self.longest)),
            _ => None,
        };
        Next::Retry {
            after: asked.unwrap_or(backoff),
            throttled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, retry_after: Option<&str>) -> Answer {
        Answer::Status {
            code,
            retry_after: retry_after.map(str::to_string),
        }
    }

    #[test]
    fn any_2xx_delivers_410_pauses_at_once_and_the_rest_retry_with_a_growing_jittered_backoff() {
        let s = Schedule::default();
        let now = chrono::Utc::now();
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(s.next(&status(code, None), 1, Duration::ZERO, 1.0, now), Next::Delivered);
        }
        assert!(matches!(s.next(&status(410, None), 1, Duration::ZERO, 1.0, now), Next::Pause(why) if why.contains("410 Gone")));
        let after = |attempt, jitter| match s.next(&status(500, None), attempt, Duration::from_secs(5), jitter, now) {
            Next::Retry { after, throttled: false } => after,
            other => panic!("{other:?}"),
        };
        assert_eq!((after(1, 1.0), after(2, 1.0), after(4, 1.0)), (Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(8)));
        assert_eq!((after(3, 0.5), after(3, 1.5)), (Duration::from_secs(2), Duration::from_secs(6)));
        assert_eq!(after(40, 1.5), Duration::from_secs(600), "never longer than the longest delay");
        for answer in [Answer::Timeout, Answer::Unreachable("connection refused".into()), status(400, None), status(301, None)] {
            assert!(matches!(s.next(&answer, 1, Duration::ZERO, 1.0, now), Next::Retry { throttled: false, .. }), "{answer:?}");
        }
    }

    #[test]
    fn throttling_answers_and_retry_after_are_honoured_up_to_the_longest_delay() {
        let s = Schedule::default();
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-07T00:00:00Z").unwrap().with_timezone(&chrono::Utc);
        for code in [429, 502, 503, 504] {
            assert!(matches!(s.next(&status(code, None), 1, Duration::ZERO, 1.0, now), Next::Retry { throttled: true, .. }), "{code}");
        }
        assert_eq!(
            s.next(&status(429, Some("30")), 1, Duration::ZERO, 1.0, now),
            Next::Retry { after: Duration::from_secs(30), throttled: true }
        );
        assert_eq!(
            s.next(&status(503, Some("Mon, 07 Dec 2026 00:02:00 GMT")), 1, Duration::ZERO, 1.0, now),
            Next::Retry { after: Duration::from_secs(120), throttled: true }
        );
        assert_eq!(
            s.next(&status(429, Some("86400")), 1, Duration::ZERO, 1.0, now),
            Next::Retry { after: Duration::from_secs(600), throttled: true }
        );
        // Nonsense falls back to the backoff.
        assert_eq!(
            s.next(&status(429, Some("soon")), 1, Duration::ZERO, 1.0, now),
            Next::Retry { after: Duration::from_secs(1), throttled: true }
        );
    }

    #[test]
    fn a_destination_failing_past_the_horizon_is_paused_with_its_last_answer() {
        let s = Schedule {
            horizon: Duration::from_secs(3600),
            ..Default::default()
        };
        let now = chrono::Utc::now();
        assert!(matches!(s.next(&status(500, None), 9, Duration::from_secs(3599), 1.0, now), Next::Retry { .. }));
        match s.next(&status(500, None), 10, Duration::from_secs(3600), 1.0, now) {
            Next::Pause(why) => assert!(why.contains("HTTP 500") && why.contains("3600 s horizon"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A success is a success whatever came before.
        assert_eq!(s.next(&status(200, None), 10, Duration::from_secs(7200), 1.0, now), Next::Delivered);
    }
}
