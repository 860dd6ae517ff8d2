//! The minimum transfer rate: a client that reads a response too slowly is cut off, so
//! a slow reader cannot hold a worker for ever (issue 12: the write deadline was per
//! write, and a client draining a bundle at a few bytes a second kept its thread).
//!
//! What is measured is only the time the server is *blocked on the client*: the time
//! spent inside `write`/`flush` calls on the socket, which block only when the client's
//! receive window and our send buffer are full. Time the server itself has nothing to
//! send (a watch stream between events, a long poll waiting for a change, a handler
//! building its answer) is never counted, so long-lived responses that are idle by
//! design are not cut off; only a client that does not take what is offered is.
//!
//! The rule, per response, is a leaky bucket of blocked time: each blocking call adds
//! the time it blocked to a debt and subtracts what its bytes were worth at the minimum
//! rate (`bytes / min_rate`), never going below zero (a fast start banks nothing, and
//! bytes that only filled kernel buffers buy no credit for later); past `grace` of debt
//! the connection is closed. A client that reads nothing is closed after `grace` of
//! blocking, one at a tenth of the rate after about `grace / 0.9`, one at or above the
//! rate never. The socket's write timeout is set to the debt room left, so a blocked
//! write ends on time instead of at the next per-write deadline.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use super::conn::Transport;

/// The blocked-time debt of one response. Pure arithmetic; [`RateGuard`] feeds it.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    /// Bytes per second; 0 turns the rule off.
    min_rate: u64,
    grace: Duration,
    debt: Duration,
    blocked: Duration,
    bytes: u64,
}

impl Budget {
    pub(crate) fn new(min_rate: u64, grace: Duration) -> Budget {
        Budget {
            min_rate,
            grace,
            debt: Duration::ZERO,
            blocked: Duration::ZERO,
            bytes: 0,
        }
    }

    /// `n` bytes went out in a call that blocked for `blocked`.
    pub(crate) fn record(&mut self, n: usize, blocked: Duration) {
        self.bytes = self.bytes.saturating_add(n as u64);
        self.blocked = self.blocked.saturating_add(blocked);
        if self.min_rate > 0 {
            let worth = Duration::from_secs_f64(n as f64 / self.min_rate as f64);
            self.debt = self.debt.saturating_add(blocked).saturating_sub(worth);
        }
    }

    /// Blocked time still allowed before the client is cut off; `None` when the rule
    /// is off.
    pub(crate) fn allowance(&self) -> Option<Duration> {
        (self.min_rate > 0).then(|| self.grace.saturating_sub(self.debt))
    }

    /// All the time spent blocked on this response (for the log).
    pub(crate) fn blocked(&self) -> Duration {
        self.blocked
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// The write timeout a connection keeps between responses: what [`RateGuard`] sets
/// for a response that has not blocked yet (the whole grace, capped by the write
/// timeout), so a response that never blocks costs no setsockopt to arm the rule and
/// none to restore it.
pub(crate) fn resting_write_timeout(min_rate: u64, grace: Duration, write: Duration) -> Duration {
    if min_rate > 0 {
        grace.min(write).max(Duration::from_millis(1))
    } else {
        write
    }
}

/// A writer over a connection's transport that enforces the [`Budget`]. Once the
/// allowance is spent every write fails (`TimedOut`) and [`tripped`](Self::tripped) is
/// true; the caller drops the connection and logs it. Dropping the guard restores the
/// transport's normal write timeout.
pub(crate) struct RateGuard<'a, T: Transport> {
    inner: &'a mut T,
    budget: Budget,
    write_timeout: Duration,
    /// The write timeout last set on the socket.
    current: Duration,
    tripped: bool,
}

impl<'a, T: Transport> RateGuard<'a, T> {
    pub(crate) fn new(inner: &'a mut T, budget: Budget, write_timeout: Duration) -> Self {
        RateGuard {
            inner,
            budget,
            write_timeout,
            current: write_timeout,
            tripped: false,
        }
    }

    /// Whether the client was cut off for reading below the minimum rate.
    pub(crate) fn tripped(&self) -> bool {
        self.tripped
    }

    pub(crate) fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Before a blocking call: refuse once the allowance is spent, else bound the
    /// socket's write timeout by what is left.
    fn arm(&mut self) -> io::Result<()> {
        let Some(left) = self.budget.allowance() else {
            return Ok(());
        };
        if left.is_zero() {
            self.tripped = true;
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client reads below the minimum transfer rate",
            ));
        }
        // Whole milliseconds, at least one (a zero timeout means "none" to the socket).
        let want = left.min(self.write_timeout).max(Duration::from_millis(1));
        if want != self.current {
            self.inner.set_write_timeout(Some(want))?;
            self.current = want;
        }
        Ok(())
    }

    fn settle<R>(&mut self, started: Instant, n: usize, r: &io::Result<R>) {
        self.budget.record(n, started.elapsed());
        if let Err(e) = r {
            let timed_out = matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            );
            if timed_out && self.budget.allowance().is_some_and(|l| l.is_zero()) {
                self.tripped = true;
            }
        }
    }
}

impl<T: Transport> Write for RateGuard<'_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm()?;
        let started = Instant::now();
        let r = self.inner.write(buf);
        let n = *r.as_ref().unwrap_or(&0);
        self.settle(started, n, &r);
        r
    }

    fn flush(&mut self) -> io::Result<()> {
        self.arm()?;
        let started = Instant::now();
        let r = self.inner.flush();
        self.settle(started, 0, &r);
        r
    }
}

impl<T: Transport> Drop for RateGuard<'_, T> {
    fn drop(&mut self) {
        if self.current != self.write_timeout {
            let _ = self.inner.set_write_timeout(Some(self.write_timeout));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn debt_grows_with_blocking_and_shrinks_with_bytes_but_never_banks() {
        let mut b = Budget::new(1000, S(10));
        assert_eq!(b.allowance(), Some(S(10)));
        // Buffers filled without blocking: no credit is banked for later.
        b.record(4_000_000, Duration::ZERO);
        assert_eq!(b.allowance(), Some(S(10)));
        // A client that reads nothing spends the grace and then has none.
        b.record(0, S(4));
        assert_eq!(b.allowance(), Some(S(6)));
        b.record(0, S(6));
        assert_eq!(b.allowance(), Some(Duration::ZERO));
        // At the rate or faster the debt is paid off.
        let mut b = Budget::new(1000, S(10));
        for _ in 0..1000 {
            b.record(1000, S(1));
        }
        assert_eq!(b.allowance(), Some(S(10)));
        // A tenth of the rate: 100 bytes per blocked second, cut off after ~11 s.
        let mut b = Budget::new(1000, S(10));
        let mut secs = 0;
        while b.allowance().is_some_and(|l| !l.is_zero()) {
            b.record(100, S(1));
            secs += 1;
        }
        assert_eq!(secs, 12);
        assert_eq!((b.bytes(), b.blocked()), (1200, S(12)));
    }

    #[test]
    fn a_response_that_never_blocks_sets_no_socket_timeout() {
        let rest = resting_write_timeout(1024, S(10), S(30));
        assert_eq!(rest, S(10));
        assert_eq!(resting_write_timeout(0, S(10), S(30)), S(30));
        assert_eq!(resting_write_timeout(1024, S(60), S(30)), S(30));
        // What arm() would set for a fresh budget is what the socket already has.
        let b = Budget::new(1024, S(10));
        assert_eq!(b.allowance().unwrap().min(rest), rest);
    }

    #[test]
    fn idle_time_outside_writes_costs_nothing_and_zero_turns_it_off() {
        // Only recorded (blocked) time counts: an hour between events records nothing.
        let b = Budget::new(1000, S(10));
        assert_eq!(b.allowance(), Some(S(10)));
        let mut off = Budget::new(0, S(10));
        off.record(0, S(100_000));
        assert_eq!(off.allowance(), None);
    }
}
