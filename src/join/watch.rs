//! A bundle download bound to its ticket: the stream stops within
//! [`CHECK_EVERY`] of the join being revoked on any controller, and how far it got is
//! written to the ticket (for the ledger) every [`RECORD_EVERY`] and when it ends.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use super::ticket::{State, Tickets};

/// How often a running download looks at its ticket.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often a running download records its progress.
const RECORD_EVERY: Duration = Duration::from_secs(15);

/// Wraps the bundle stream of ticket `id`, whose bytes start at `offset`.
pub struct Watched<R> {
    inner: R,
    tickets: Tickets,
    id: String,
    /// Byte offset of the end of what was sent so far.
    at: u64,
    recorded: u64,
    last_check: Instant,
    last_record: Instant,
    ended: bool,
    /// The bundle's length, when this stream runs to its end (not a shorter range):
    /// reaching it completes the download.
    complete_at: Option<u64>,
}

impl<R: Read> Watched<R> {
    /// `complete_at`: the bundle's length when the stream runs to its end.
    pub fn new(
        inner: R,
        tickets: Tickets,
        id: String,
        offset: u64,
        complete_at: Option<u64>,
    ) -> Watched<R> {
        let now = Instant::now();
        Watched {
            inner,
            tickets,
            id,
            at: offset,
            recorded: offset,
            last_check: now,
            last_record: now,
            ended: false,
            complete_at,
        }
    }

    fn record(&mut self, completed: Option<i64>) {
        self.recorded = self.at;
        self.last_record = Instant::now();
        self.tickets.progress(&self.id, self.at, completed);
    }
}

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.last_check.elapsed() >= CHECK_EVERY {
            self.last_check = Instant::now();
            // Unreachable Kubernetes does not stop a download; a revocation does.
            if let Ok(t) = self.tickets.get(&self.id) {
                if t.is_none_or(|t| t.state == State::Revoked) {
                    crate::log::audit("join.bundle", "", &self.id, "stopped: revoked", &[]);
                    self.ended = true;
                    return Err(io::Error::other("join bundle: the join was revoked"));
                }
            }
        }
        let n = self.inner.read(buf)?;
        self.at += n as u64;
        // The HTTP layer stops reading at Content-Length, so the end is the offset.
        let at_end = self.complete_at == Some(self.at) || (n == 0 && !buf.is_empty());
        if at_end && !self.ended {
            self.ended = true;
            let completed = (self.complete_at == Some(self.at)).then(crate::time::now);
            self.record(completed);
        } else if self.last_record.elapsed() >= RECORD_EVERY {
            self.record(None);
        }
        Ok(n)
    }
}

impl<R> Drop for Watched<R> {
    fn drop(&mut self) {
        if !self.ended && self.at != self.recorded {
            self.tickets.progress(&self.id, self.at, None);
        }
    }
}
