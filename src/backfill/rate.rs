//! The request budget for Clerk's Backend API: at most `limit` requests in any `window` (the
//! per-instance limit is shared with the customer's own application), and a pause for every
//! request after a 429 (`Retry-After`).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// A sliding-window limiter shared by every request of a run.
pub struct RateLimiter {
    limit: usize,
    window: Duration,
    state: Mutex<State>,
}

struct State {
    sent: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

impl RateLimiter {
    pub fn new(limit: usize, window: Duration) -> Self {
        RateLimiter {
            limit: limit.max(1),
            window,
            state: Mutex::new(State {
                sent: VecDeque::new(),
                paused_until: None,
            }),
        }
    }

    /// Waits until a request may be sent, and counts it.
    pub async fn acquire(&self) {
        loop {
            let wait_until = {
                let mut s = self.state.lock().await;
                let now = Instant::now();
                while s.sent.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
                    s.sent.pop_front();
                }
                match s.paused_until {
                    Some(until) if until > now => until,
                    _ if s.sent.len() < self.limit => {
                        s.sent.push_back(now);
                        return;
                    }
                    _ => *s.sent.front().expect("full, so not empty") + self.window,
                }
            };
            tokio::time::sleep_until(wait_until).await;
        }
    }

    /// Holds every request back for `delay` (after a 429).
    pub async fn pause(&self, delay: Duration) {
        let mut s = self.state.lock().await;
        let until = Instant::now() + delay;
        s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until)));
    }
}
