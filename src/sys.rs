//! The few system calls std has no safe way to make: poll(2), epoll(7), pipe2(2),
//! recv(2) with MSG_DONTWAIT, SO_PEERCRED, sigaction(2) and errno for the signal
//! handler, geteuid(2), getifaddrs(3).
//!
//! Invariant: every `unsafe` block of the crate lives here or in `crate::alloc` (the
//! global allocator), each with a `SAFETY:` comment saying why it is sound, behind a safe
//! function. The crate root denies `unsafe_code`; only these two modules are allowed it.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// What [`wait_readable`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The socket is readable (or hung up: the next read says which).
    Ready,
    Timeout,
    /// The shutdown pipe is readable: a shutdown was requested.
    Shutdown,
}

/// A pipe with both ends non-blocking and close-on-exec.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Write one byte to a non-blocking pipe; async-signal-safe (used from the signal
/// handler). A full pipe already holds a wake-up, so EAGAIN is ignored.
pub(crate) fn poke(fd: RawFd) {
    let byte = 1u8;
    // SAFETY: writes one byte from a live stack variable; write(2) is async-signal-safe.
    unsafe {
        libc::write(fd, (&byte as *const u8).cast(), 1);
    }
}

/// Wait until `fd` is readable, `shutdown_fd` is readable, or `timeout` passes (`None`:
/// no timeout). `fd` may be `None` to just sleep unless shut down. Shutdown wins ties.
pub(crate) fn wait_readable(
    fd: Option<RawFd>,
    shutdown_fd: RawFd,
    timeout: Option<Duration>,
) -> Wake {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Wake::Timeout;
                }
                // Round up so we never wake a hair early and spin.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
            }
        };
        let mut fds = [
            libc::pollfd {
                fd: shutdown_fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: fd.unwrap_or(-1), // poll ignores negative descriptors
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: the array is live for the call and its length is passed with it.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // poll only fails on EFAULT/EINVAL/ENOMEM; treat as ready so the read reports it.
            return Wake::Ready;
        }
        if fds[0].revents != 0 {
            return Wake::Shutdown;
        }
        if fds[1].revents != 0 {
            return Wake::Ready;
        }
        if rc == 0 && deadline.is_none() {
            continue;
        }
    }
}

/// An epoll set whose waiters take one ready descriptor at a time, each known by a
/// token. Connections are added edge-triggered: reported once each time input arrives,
/// so a connection is registered once for its life and never re-armed (one system call
/// less per request than one-shot); the pool makes sure two threads never serve it at
/// once.
pub(crate) struct Epoll(OwnedFd);

impl Epoll {
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 has no memory preconditions.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just created and is owned by nobody else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: libc::c_int, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: token,
        };
        // SAFETY: the event is a live stack value the kernel only reads during the call.
        let rc = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut ev) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Report `fd`, with `token`, each time input arrives (or it hangs up), and at once
    /// if input is already there. Input that was there at the last report and not
    /// read since is not reported again: the reader reads until the socket is empty.
    pub(crate) fn add_edge(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, Self::EDGE, token)
    }

    /// Report an `add_edge` descriptor again if input is there now: it joins the back
    /// of the ready list, as if the input had just arrived.
    pub(crate) fn recheck(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, Self::EDGE, token)
    }

    const EDGE: libc::c_int = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET;

    /// Report `fd` to every waiter for as long as it is readable (the shutdown pipe).
    pub(crate) fn add_level(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN, token)
    }

    /// Stop watching `fd`. Needed before closing a descriptor whose socket has another
    /// descriptor open (a `try_clone`): a registration belongs to the socket, not the
    /// descriptor, and would outlive the close.
    pub(crate) fn delete(&self, fd: RawFd) {
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// Waits up to `timeout` for one ready descriptor: its token, and whether its peer
    /// has hung up or shut its side (`EPOLLRDHUP`); `None` on timeout.
    pub(crate) fn wait_one(&self, timeout: Duration) -> Option<(u64, bool)> {
        let ms = whole_ms(timeout);
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        loop {
            // SAFETY: room for exactly the one event we pass as maxevents.
            let rc = unsafe { libc::epoll_wait(self.0.as_raw_fd(), &mut ev, 1, ms) };
            match rc {
                1 => {
                    let hup = ev.events & (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0;
                    return Some((ev.u64, hup));
                }
                // A signal (epoll_wait is never restarted): wait again.
                _ if rc < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                _ => return None,
            }
        }
    }
}

/// Waits up to `timeout` for any of `fds` to become readable (or hang up); returns,
/// for each, whether it is.
pub(crate) fn poll_readable(fds: &[RawFd], timeout: Duration) -> Vec<bool> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = whole_ms(timeout);
    // SAFETY: the vector is live for the call and its length is passed with it.
    let rc = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    if rc <= 0 {
        return vec![false; fds.len()];
    }
    p.iter().map(|p| p.revents != 0).collect()
}

/// Reads what socket `fd` holds now into `buf`, without waiting: `WouldBlock` when it
/// holds nothing, `Ok(0)` at end of stream.
pub(crate) fn recv_now(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into the live slice.
    let rc = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// `timeout` in milliseconds for poll(2) and epoll_wait(2), rounded up: a timeout under a
/// millisecond rounded down is 0, and a caller waiting for a deadline that close would
/// spin on it (the accept thread did, polling ~17,000 times a second under load).
fn whole_ms(timeout: Duration) -> libc::c_int {
    timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
}

/// The uid of the process on the other end of a Unix socket (SO_PEERCRED).
pub(crate) fn peer_uid(fd: RawFd) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the ucred we own.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize == std::mem::size_of::<libc::ucred>()).then_some(cred.uid)
}

/// This thread's errno, to save around a signal handler's system calls.
/// Async-signal-safe.
pub(crate) fn errno() -> libc::c_int {
    // SAFETY: __errno_location returns a valid pointer to this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Restores this thread's errno (see [`errno`]). Async-signal-safe.
pub(crate) fn set_errno(value: libc::c_int) {
    // SAFETY: as in `errno`; the slot belongs to this thread only.
    unsafe { *libc::__errno_location() = value };
}

/// Runs `handler` on signal `sig`, with SA_RESTART so that interrupted blocking calls
/// resume instead of failing. The handler must only make async-signal-safe calls.
pub(crate) fn on_signal(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid value (no handler, empty flags); we then set
    // the handler, an empty mask and SA_RESTART. `handler` is a plain `extern "C"` fn
    // with the signature sigaction expects for a handler without SA_SIGINFO.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sends `sig` to this process's calling thread (tests of the signal handlers).
#[cfg(test)]
pub(crate) fn raise(sig: libc::c_int) {
    // SAFETY: raise has no memory preconditions; what the signal does is the caller's test.
    unsafe { libc::raise(sig) };
}

/// The effective uid of this process.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The real uid of this process.
#[cfg(test)]
pub(crate) fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The host's interface addresses (IPv4 and global IPv6, each once); empty when unknown.
/// IPv6 link-local addresses are left out: they need a zone, which a URL cannot carry.
pub(crate) fn host_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we only read and then free once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: the pointer is non-null and points into the same live list, and
            // the family says which sockaddr type it refers to.
            let ip = unsafe {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr))))
                    }
                    libc::AF_INET6 => {
                        let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        let v6 = Ipv6Addr::from(sa.sin6_addr.s6_addr);
                        (v6.segments()[0] & 0xffc0 != 0xfe80).then_some(IpAddr::V6(v6))
                    }
                    _ => None,
                }
            };
            if let Some(ip) = ip.filter(|ip| !out.contains(ip)) {
                out.push(ip);
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed exactly once; no reference into
    // the list outlives this call.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_shorter_than_a_millisecond_still_waits() {
        // Rounded down to 0 ms, poll returned at once and a caller waiting for a
        // deadline that close spun until it passed.
        let (rx, _tx) = pipe().expect("pipe");
        let short = Duration::from_micros(300);
        let start = Instant::now();
        assert_eq!(poll_readable(&[rx.as_raw_fd()], short), vec![false]);
        assert!(
            start.elapsed() >= short,
            "returned after {:?}",
            start.elapsed()
        );
        let ep = Epoll::new().expect("epoll");
        let start = Instant::now();
        assert_eq!(ep.wait_one(short), None);
        assert!(
            start.elapsed() >= short,
            "returned after {:?}",
            start.elapsed()
        );
        assert_eq!(whole_ms(Duration::MAX), i32::MAX);
    }
}
