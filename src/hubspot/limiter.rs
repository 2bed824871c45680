//! The client-side rate limiter: keeps a client inside HubSpot's rolling
//! 10-second budget, its daily budget and the search endpoints' per-second
//! limit, so that the client never causes a 429 itself.
//!
//! Each budget is a GCRA limiter (governor) on tokio's clock, so waiting
//! follows tokio's time (and a test with paused time runs fast).
//!
//! A rolling window of `n` requests per `w` is kept with a burst of 1 and
//! one request every `w / (n - 1)`: any `n + 1` consecutive requests then
//! span `n · w / (n − 1)`, more than `w`, so no window of `w` ever holds
//! more than `n` — with `w / (n − 1)` to spare (about 100 ms for 100 per
//! 10 s) for requests that reach the server closer together than they left.
//! The price is a little throughput, not correctness: sending `n` requests
//! takes `w` at the start of an idle period rather than none.

use std::{num::NonZeroU32, sync::Mutex, time::Duration};

use governor::{
    Quota, RateLimiter,
    clock::Clock,
    middleware::NoOpMiddleware,
    state::{InMemoryState, NotKeyed},
};
use tokio::time::Instant;

/// governor's clock, read from tokio's (paused in tests, real otherwise).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokioClock {
    origin: Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }
}

type Gcra = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// Which budgets a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestKind {
    /// Any request but a search.
    Standard,
    /// A CRM search request (its own per-second limit, and the others).
    Search,
}

/// The budgets of one client.
#[derive(Debug)]
pub(crate) struct Limiter {
    clock: TokioClock,
    ten_seconds: Gcra,
    daily: Gcra,
    search: Gcra,
    /// No request before this instant: set when HubSpot says the window's
    /// budget is spent (`X-HubSpot-RateLimit-Remaining: 0`), e.g. by other
    /// clients of the same app, or when it answers 429.
    hold_until: Mutex<Option<Instant>>,
}

/// A quota of `n` per `window` that no rolling window exceeds (see the module docs).
fn rolling_quota(n: u32, window: Duration) -> Quota {
    let per = if n <= 1 { window } else { window / (n - 1) };
    Quota::with_period(per.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::MIN)
}

impl Limiter {
    pub(crate) fn new(
        per_10s: u32,
        window: Duration,
        per_day: u32,
        search_per_second: u32,
    ) -> Self {
        let clock = TokioClock {
            origin: Instant::now(),
        };
        let daily_burst = NonZeroU32::new(per_day).unwrap_or(NonZeroU32::MIN);
        let daily = Quota::with_period(Duration::from_secs(86_400) / daily_burst.get())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(daily_burst);
        Limiter {
            clock,
            ten_seconds: RateLimiter::direct_with_clock(rolling_quota(per_10s, window), clock),
            daily: RateLimiter::direct_with_clock(daily, clock),
            search: RateLimiter::direct_with_clock(
                rolling_quota(search_per_second, Duration::from_secs(1)),
                clock,
            ),
            hold_until: Mutex::new(None),
        }
    }

    /// Waits until the request may go: its daily, search (for searches) and
    /// 10-second budgets, in that order, each taken once it is free.
    pub(crate) async fn acquire(&self, kind: RequestKind) {
        self.wait_for_hold().await;
        Self::take(&self.clock, &self.daily).await;
        if kind == RequestKind::Search {
            Self::take(&self.clock, &self.search).await;
        }
        Self::take(&self.clock, &self.ten_seconds).await;
    }

    async fn take(clock: &TokioClock, gcra: &Gcra) {
        loop {
            match gcra.check() {
                Ok(()) => return,
                Err(not_until) => {
                    let wait: Duration = not_until.wait_time_from(clock.now());
                    tokio::time::sleep(wait.max(Duration::from_micros(50))).await;
                }
            }
        }
    }

    async fn wait_for_hold(&self) {
        loop {
            let until = *self.hold_until.lock().unwrap_or_else(|p| p.into_inner());
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }

    /// Holds every request of this client for `wait` from now (a longer
    /// hold already set stays).
    pub(crate) fn hold_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut hold = self.hold_until.lock().unwrap_or_else(|p| p.into_inner());
        if hold.is_none_or(|t| t < until) {
            *hold = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn no_rolling_window_of_ten_seconds_holds_more_than_the_budget() {
        let limiter = Limiter::new(100, Duration::from_secs(10), 1_000_000, 5);
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..350 {
            limiter.acquire(RequestKind::Standard).await;
            at.push(Instant::now() - start);
        }
        for (i, t) in at.iter().enumerate() {
            let in_window = at[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(10))
                .count();
            assert!(
                in_window <= 100,
                "{in_window} requests in the window from {t:?}"
            );
        }
        // And the budget is used: 350 requests in about 35 s, not 70.
        assert!(at[349] < Duration::from_secs(36), "{:?}", at[349]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_delays_the_next_request() {
        let limiter = Limiter::new(100, Duration::from_secs(10), 1_000_000, 5);
        limiter.hold_for(Duration::from_secs(3));
        let start = Instant::now();
        limiter.acquire(RequestKind::Standard).await;
        assert!(Instant::now() - start >= Duration::from_secs(3));
    }
}
