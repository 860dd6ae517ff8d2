//! Shutdown requests: the [`ShutdownHandle`] and the SIGTERM/SIGINT bridge to it.
//!
//! A shutdown is one byte written to a self-pipe that nobody ever drains, so it stays
//! readable: the accept loop polls it beside its listener, and it sits level-triggered
//! in each server's epoll set, so idle workers wake at once, with no polling interval.
//! The same pipe makes the signal handler trivial and async-signal-safe: it only calls
//! write(2). (A poll timeout loop
//! would also work but wakes every thread periodically and delays shutdown by a tick.)

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use crate::sys;

/// Asks a running [`Server`](super::Server) to stop accepting, finish in-flight requests
/// and return from `run`. Cheap to clone and send to other threads.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Inner>);

struct Inner {
    flag: AtomicBool,
    read: OwnedFd,
    write: OwnedFd,
}

impl std::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownHandle")
            .field("shutdown", &self.is_shutdown())
            .finish()
    }
}

impl ShutdownHandle {
    pub(crate) fn new() -> io::Result<ShutdownHandle> {
        let (read, write) = sys::pipe()?;
        Ok(ShutdownHandle(Arc::new(Inner {
            flag: AtomicBool::new(false),
            read,
            write,
        })))
    }

    /// Request shutdown. Idempotent; returns at once.
    pub fn shutdown(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        sys::poke(self.0.write.as_raw_fd());
    }

    /// Has shutdown been requested (by [`shutdown`](Self::shutdown) or a signal)?
    pub fn is_shutdown(&self) -> bool {
        if self.0.flag.load(Ordering::SeqCst) {
            return true;
        }
        // The signal handler cannot reach the flag, but it notes which pipe it poked:
        // checked here without a poll(2) on the pipe, since this runs per response.
        if SIGNALLED.load(Ordering::SeqCst) == self.0.write.as_raw_fd() {
            self.0.flag.store(true, Ordering::SeqCst);
            return true;
        }
        false
    }

    /// Block until shutdown is requested or `d` has passed; true when requested (a
    /// background thread's pause between retries, cut short by SIGTERM).
    pub fn wait_for(&self, d: std::time::Duration) -> bool {
        let _ = sys::wait_readable(None, self.fd(), Some(d));
        self.is_shutdown()
    }

    /// The read end of the pipe, readable once shutdown is requested.
    pub(crate) fn fd(&self) -> RawFd {
        self.0.read.as_raw_fd()
    }
}

/// The pipe the signal handler writes to; -1 until installed.
static SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);
/// The pipe the signal handler last wrote to (a lock-free store is
/// async-signal-safe); -1 until a signal arrives. Replaced handles' pipes are never
/// closed, so a descriptor number here is never reused by another handle.
static SIGNALLED: AtomicI32 = AtomicI32::new(-1);
/// Keeps the handle (and so the pipe) alive for as long as the handler may fire.
static INSTALLED: Mutex<Option<ShutdownHandle>> = Mutex::new(None);

extern "C" fn on_signal(_sig: libc::c_int) {
    let fd = SIGNAL_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // write(2) may clobber errno, which the interrupted code may be about to read.
        let saved = sys::errno();
        SIGNALLED.store(fd, Ordering::SeqCst);
        sys::poke(fd);
        sys::set_errno(saved);
    }
}

/// Route SIGTERM and SIGINT to `h.shutdown()`: the server stops accepting, lets in-flight
/// requests finish within `Limits::grace`, and `run` returns. Calling it again points the
/// signals at the new handle.
pub fn install_signal_handlers(h: ShutdownHandle) -> io::Result<()> {
    let fd = h.0.write.as_raw_fd();
    let mut slot = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    SIGNAL_FD.store(fd, Ordering::SeqCst);
    // A handler running right now may still hold the old descriptor: never close it.
    if let Some(old) = slot.replace(h) {
        std::mem::forget(old);
    }
    drop(slot);
    for sig in [libc::SIGTERM, libc::SIGINT] {
        sys::on_signal(sig, on_signal)?;
    }
    Ok(())
}
