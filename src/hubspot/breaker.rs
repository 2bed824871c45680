//! A circuit breaker per client: closed → open after `threshold`
//! consecutive failures → half-open after the cool-down, letting exactly one
//! probe through → closed when the probe succeeds, open again when it fails.
//! While open, calls fail at once without any request.

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

/// The state of a client's circuit breaker, as [`HubSpotClient::breaker_state`]
/// reads it.
///
/// [`HubSpotClient::breaker_state`]: super::HubSpotClient::breaker_state
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Requests go through; `consecutive_failures` so far.
    Closed {
        /// Failures in a row since the last success.
        consecutive_failures: u32,
    },
    /// Requests fail fast until the cool-down ends.
    Open {
        /// The time left before a probe may go.
        retry_in: Duration,
    },
    /// The cool-down has ended: the next request is the one probe
    /// (`probe_in_flight` once it has gone and not come back).
    HalfOpen {
        /// True while the probe is under way; other requests fail fast.
        probe_in_flight: bool,
    },
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

/// Leave to send one request. Report how it went with [`Permit::success`]
/// or [`Permit::failure`]; dropped unreported (the call was cancelled), a
/// probe gives its place back to the next call.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err` with the time left when a request would be refused now;
    /// takes nothing (the probe stays for whoever asks for a permit).
    pub(crate) fn check(&self) -> Result<(), Duration> {
        let now = Instant::now();
        match *self.lock() {
            State::Open { until } if now < until => Err(until - now),
            State::HalfOpen { probing: true } => Err(self.cooldown.min(Duration::from_secs(1))),
            _ => Ok(()),
        }
    }

    /// A permit, or the time left before one may be had.
    pub(crate) fn try_acquire(&self) -> Result<Permit<'_>, Duration> {
        let mut state = self.lock();
        let now = Instant::now();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } if now < until => return Err(until - now),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                true
            }
            // The one probe is out: wait for its verdict.
            State::HalfOpen { probing: true } => {
                return Err(self.cooldown.min(Duration::from_secs(1)));
            }
        };
        Ok(Permit {
            breaker: self,
            probe,
            reported: false,
        })
    }

    pub(crate) fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { failures } => BreakerState::Closed {
                consecutive_failures: failures,
            },
            State::Open { until } => {
                let now = Instant::now();
                if now < until {
                    BreakerState::Open {
                        retry_in: until - now,
                    }
                } else {
                    BreakerState::HalfOpen {
                        probe_in_flight: false,
                    }
                }
            }
            State::HalfOpen { probing } => BreakerState::HalfOpen {
                probe_in_flight: probing,
            },
        }
    }
}

impl Permit<'_> {
    /// The service answered (any answer but a 5xx).
    pub(crate) fn success(mut self) {
        self.reported = true;
        *self.breaker.lock() = State::Closed { failures: 0 };
    }

    /// The service failed (5xx, timeout, no connection).
    pub(crate) fn failure(mut self) {
        self.reported = true;
        let b = self.breaker;
        let mut state = b.lock();
        let open = State::Open {
            until: Instant::now() + b.cooldown,
        };
        *state = match *state {
            _ if self.probe => open,
            State::Closed { failures } if failures + 1 >= b.threshold => open,
            State::Closed { failures } => State::Closed {
                failures: failures + 1,
            },
            // A request sent before the breaker opened: it stays as it is.
            other => other,
        };
        if matches!(*state, State::Open { .. }) {
            tracing::warn!(
                cooldown_ms = b.cooldown.as_millis() as u64,
                "HubSpot circuit breaker opened"
            );
        }
    }

    /// Neither: the answer says nothing about the service's health (a 429).
    /// A probe gives its place back.
    pub(crate) fn neutral(mut self) {
        self.reported = true;
        if self.probe {
            *self.breaker.lock() = State::HalfOpen { probing: false };
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            *self.breaker.lock() = State::HalfOpen { probing: false };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_half_opens_with_one_probe_and_closes() {
        let b = Breaker::new(2, Duration::from_secs(5));
        b.try_acquire().unwrap().failure();
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: 1
            }
        );
        b.try_acquire().unwrap().failure();
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        assert!(b.try_acquire().is_err());

        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            b.state(),
            BreakerState::HalfOpen {
                probe_in_flight: false
            }
        );
        let probe = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err(), "only one probe");
        probe.failure();
        assert!(matches!(b.state(), BreakerState::Open { .. }));

        tokio::time::advance(Duration::from_secs(5)).await;
        b.try_acquire().unwrap().success();
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: 0
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_gives_its_place_back() {
        let b = Breaker::new(1, Duration::from_secs(1));
        b.try_acquire().unwrap().failure();
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(b.try_acquire().unwrap());
        assert!(b.try_acquire().is_ok());
    }
}
