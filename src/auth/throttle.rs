//! Password-guessing defence: per-address failure throttling and a global cap on
//! concurrent bcrypt checks.
//!
//! Every endpoint that checks the installer password (`POST /v1/auth/token`, the OAuth2
//! password grant) calls [`Throttle::check`] first, which reserves one attempt of the
//! address's budget and a bcrypt slot, runs bcrypt, then settles the attempt with
//! [`Attempt::failed`] or [`Attempt::succeeded`]:
//!
//! ```ignore
//! let attempt = ctx.throttle.check(ip)?;         // Err: answer 429/503 with Retry-After
//! let ok = password::verify_password(pw, &hash); // at most `bcrypt_slots` at once
//! if ok { attempt.succeeded() } else { attempt.failed() }
//! ```
//!
//! Policy: [`Policy::failures`] wrong passwords from one address within
//! [`Policy::window`] lock that address out for [`Policy::lockout`], doubling with each
//! further lockout up to [`Policy::max_lockout`]; a success forgets the address. IPv6
//! clients are keyed by their /64 (one host usually owns a whole /64), IPv4-mapped IPv6
//! by the IPv4 address. Other addresses are unaffected, so the owner can still log in
//! from elsewhere while one address is locked out.
//!
//! The budget holds under bursts: an attempt is *reserved* when it is admitted, before
//! it waits for a bcrypt slot, so failures already counted plus attempts in flight never
//! exceed [`Policy::failures`]. A hundred guesses sent at once get at most that many
//! bcrypt checks; the rest are refused (429) without waiting. (Before this, every
//! request admitted while the address was not yet locked went on to bcrypt: 43 checks
//! out of 100 concurrent guesses.) An attempt dropped unsettled (the handler failed
//! before answering) gives its reservation back.
//!
//! Memory is bounded: the table has a fixed capacity and, when full, evicts an entry
//! that holds no lockout and no attempt in flight (the least recently seen), else the
//! lockout ending soonest. An attacker with more addresses than the capacity can
//! therefore shorten lockouts, but bcrypt's cost and the concurrency cap still bound the
//! guessing rate.
//!
//! Failed bearer credentials (an unknown `jnr_` API token, a made-up refresh token:
//! each can cost a Kubernetes GET) are counted per address in the same table, on their
//! own budget ([`Policy::bearer_failures`] per window, then [`Policy::bearer_lockout`]),
//! so an anonymous client cannot turn its traffic into API-server load: once over, its
//! bearer credentials are refused (429) before any lookup. Valid credentials cost
//! nothing here. ([`Throttle::bearer_allowed`], [`Throttle::bearer_failed`].)
//!
//! The bcrypt cap keeps guessing from starving everything else, etcd included on a
//! controller: at most [`Policy::bcrypt_slots`] checks run at once (half the cores, at
//! least one); a caller waits up to [`Policy::bcrypt_wait`] for a slot, then is told to
//! come back later.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::addr::share_key;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The throttling parameters.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Wrong passwords allowed from one address within `window` before a lockout.
    pub failures: u32,
    pub window: Duration,
    /// The first lockout; each further one doubles, up to `max_lockout`.
    pub lockout: Duration,
    pub max_lockout: Duration,
    /// After this long without a failure an address starts over (no lockout history).
    pub forget_after: Duration,
    /// How many addresses are tracked at most.
    pub capacity: usize,
    /// How many bcrypt checks may run at once.
    pub bcrypt_slots: usize,
    /// How long a caller waits for a bcrypt slot before being refused.
    pub bcrypt_wait: Duration,
    /// Failed bearer credentials allowed from one address within `window`.
    pub bearer_failures: u32,
    /// How long an address over its bearer budget is refused.
    pub bearer_lockout: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Policy {
            failures: 5,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
            max_lockout: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(3600),
            capacity: 4096,
            // Half the cores: a controller's etcd and API server need the rest.
            bcrypt_slots: (cores / 2).clamp(1, 8),
            bcrypt_wait: Duration::from_secs(3),
            bearer_failures: 20,
            bearer_lockout: Duration::from_secs(60),
        }
    }
}

/// Why a password check may not run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This address failed too often, or has as many attempts in flight as it has
    /// budget left; it may try again after this many seconds.
    TooManyAttempts { retry_after_secs: u64 },
    /// Every bcrypt slot stayed busy; try again after this many seconds.
    Busy { retry_after_secs: u64 },
}

impl Refusal {
    /// The `Retry-After` value in seconds (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        match *self {
            Refusal::TooManyAttempts { retry_after_secs } | Refusal::Busy { retry_after_secs } => {
                retry_after_secs.max(1)
            }
        }
    }
}

/// One admitted password check: a reserved attempt of the address's budget and a bcrypt
/// slot. Settle it with [`Attempt::failed`] or [`Attempt::succeeded`]; dropped unsettled,
/// it gives the reservation back. The slot is released either way.
#[must_use = "settle the attempt with failed() or succeeded()"]
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    key: IpAddr,
    settled: bool,
}

impl Attempt<'_> {
    /// The password was wrong: the reservation becomes a counted failure.
    pub fn failed(mut self) {
        self.settled = true;
        self.throttle
            .settle(self.key, Outcome::Failed, Instant::now());
    }

    /// The password was right: the address's history is forgotten.
    pub fn succeeded(mut self) {
        self.settled = true;
        self.throttle
            .settle(self.key, Outcome::Succeeded, Instant::now());
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.throttle
                .settle(self.key, Outcome::Abandoned, Instant::now());
        }
        self.throttle.release_slot();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Failed,
    Succeeded,
    Abandoned,
}

struct Slots {
    busy: Mutex<usize>,
    freed: Condvar,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Failures in the current window.
    failures: u32,
    /// Attempts admitted and not yet settled (reserved against the budget).
    in_flight: u32,
    window_start: Instant,
    /// Lockouts so far (drives the doubling).
    strikes: u32,
    locked_until: Option<Instant>,
    last_seen: Instant,
    /// Failed bearer credentials in the current bearer window.
    bearer_failures: u32,
    bearer_window_start: Instant,
    bearer_locked_until: Option<Instant>,
}

/// The shared throttle: one per daemon, used by every password-checking endpoint.
pub struct Throttle {
    policy: Policy,
    table: Mutex<HashMap<IpAddr, Entry>>,
    slots: Slots,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle::new(Policy::default())
    }
}

impl Throttle {
    pub fn new(policy: Policy) -> Throttle {
        let capacity = policy.capacity.max(1);
        Throttle {
            table: Mutex::new(HashMap::with_capacity(capacity)),
            policy: Policy { capacity, ..policy },
            slots: Slots {
                busy: Mutex::new(0),
                freed: Condvar::new(),
            },
        }
    }

    /// May `ip` have its password checked now? On `Ok`, one attempt of the address's
    /// budget is reserved and a bcrypt slot held; settle the [`Attempt`] when bcrypt is
    /// done. Waits (bounded by [`Policy::bcrypt_wait`]) when every slot is busy.
    pub fn check(&self, ip: IpAddr) -> Result<Attempt<'_>, Refusal> {
        self.check_at(ip, Instant::now())
    }

    /// May `ip` present a bearer credential that needs a lookup? `Err` while it is over
    /// its budget of failed ones.
    pub fn bearer_allowed(&self, ip: IpAddr) -> Result<(), Refusal> {
        let now = Instant::now();
        let table = lock(&self.table);
        match table
            .get(&share_key(ip))
            .and_then(|e| e.bearer_locked_until)
        {
            Some(until) if until > now => Err(Refusal::TooManyAttempts {
                retry_after_secs: ceil_secs(until - now),
            }),
            _ => Ok(()),
        }
    }

    /// Reports a bearer credential from `ip` that was refused after a lookup.
    pub fn bearer_failed(&self, ip: IpAddr) {
        let p = &self.policy;
        let now = Instant::now();
        let k = share_key(ip);
        let mut table = lock(&self.table);
        if !table.contains_key(&k) && table.len() >= p.capacity {
            evict_one(&mut table, now);
        }
        let e = table.entry(k).or_insert_with(|| Entry::new(now));
        e.last_seen = now;
        if now.saturating_duration_since(e.bearer_window_start) >= p.window {
            e.bearer_failures = 0;
            e.bearer_window_start = now;
        }
        e.bearer_failures += 1;
        if e.bearer_failures >= p.bearer_failures.max(1) {
            e.bearer_locked_until = Some(now + p.bearer_lockout);
            e.bearer_failures = 0;
            e.bearer_window_start = now;
        }
    }

    /// How many addresses are tracked now.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        lock(&self.table).len()
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<Attempt<'_>, Refusal> {
        let k = share_key(ip);
        // Reserved before the wait for a slot: waiting requests count against the budget.
        self.reserve(k, now)?;
        if let Err(r) = self.acquire_slot() {
            self.settle(k, Outcome::Abandoned, Instant::now());
            return Err(r);
        }
        Ok(Attempt {
            throttle: self,
            key: k,
            settled: false,
        })
    }

    /// Admits one attempt from `k` if its lockout is over and its failures in the window
    /// plus its attempts in flight leave room; counts it as in flight.
    fn reserve(&self, k: IpAddr, now: Instant) -> Result<(), Refusal> {
        let p = &self.policy;
        let mut table = lock(&self.table);
        if !table.contains_key(&k) && table.len() >= p.capacity {
            evict_one(&mut table, now);
        }
        let e = table.entry(k).or_insert_with(|| Entry::new(now));
        if let Some(until) = e.locked_until {
            if until > now {
                return Err(Refusal::TooManyAttempts {
                    retry_after_secs: ceil_secs(until - now),
                });
            }
        }
        if now.saturating_duration_since(e.window_start) >= p.window {
            e.failures = 0;
            e.window_start = now;
        }
        e.last_seen = now;
        if e.failures.saturating_add(e.in_flight) >= p.failures.max(1) {
            // The budget is spoken for by checks still running: come back when they end.
            return Err(Refusal::TooManyAttempts {
                retry_after_secs: 1,
            });
        }
        e.in_flight += 1;
        Ok(())
    }

    fn acquire_slot(&self) -> Result<(), Refusal> {
        let deadline = Instant::now() + self.policy.bcrypt_wait;
        let mut busy = lock(&self.slots.busy);
        while *busy >= self.policy.bcrypt_slots.max(1) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Refusal::Busy {
                    retry_after_secs: 1,
                });
            }
            busy = self
                .slots
                .freed
                .wait_timeout(busy, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        *busy += 1;
        Ok(())
    }

    fn release_slot(&self) {
        let mut busy = lock(&self.slots.busy);
        *busy = busy.saturating_sub(1);
        drop(busy);
        self.slots.freed.notify_one();
    }

    /// Ends one reserved attempt of `k` with its outcome.
    fn settle(&self, k: IpAddr, outcome: Outcome, now: Instant) {
        let p = &self.policy;
        let mut table = lock(&self.table);
        if outcome == Outcome::Succeeded {
            table.remove(&k);
            return;
        }
        // The entry may have been evicted meanwhile (only when the table was full of
        // entries with attempts in flight); a failure then starts a fresh one.
        if !table.contains_key(&k) {
            if outcome == Outcome::Abandoned {
                return;
            }
            if table.len() >= p.capacity {
                evict_one(&mut table, now);
            }
        }
        let e = table.entry(k).or_insert_with(|| Entry::new(now));
        e.in_flight = e.in_flight.saturating_sub(1);
        if outcome == Outcome::Abandoned {
            // An address with no history left is not worth a slot of the table.
            if e.failures == 0
                && e.in_flight == 0
                && e.strikes == 0
                && e.bearer_failures == 0
                && e.bearer_locked_until.is_none()
            {
                table.remove(&k);
            }
            return;
        }
        if now.saturating_duration_since(e.last_seen) >= p.forget_after {
            e.strikes = 0;
        }
        if now.saturating_duration_since(e.window_start) >= p.window {
            e.failures = 0;
            e.window_start = now;
        }
        e.last_seen = now;
        e.failures += 1;
        if e.failures >= p.failures.max(1) {
            let factor = 1u32 << e.strikes.min(16);
            let lockout = p.lockout.saturating_mul(factor).min(p.max_lockout);
            e.locked_until = Some(now + lockout);
            e.strikes = e.strikes.saturating_add(1);
            e.failures = 0;
            e.window_start = now;
        }
    }

    /// A failure from `ip` without an admitted attempt (tests drive the table directly).
    #[cfg(test)]
    fn record_failure_at(&self, ip: IpAddr, now: Instant) {
        let k = share_key(ip);
        {
            let mut table = lock(&self.table);
            if !table.contains_key(&k) && table.len() >= self.policy.capacity {
                evict_one(&mut table, now);
            }
            table.entry(k).or_insert_with(|| Entry::new(now)).in_flight += 1;
        }
        self.settle(k, Outcome::Failed, now);
    }

    #[cfg(test)]
    fn record_success(&self, ip: IpAddr) {
        self.settle(share_key(ip), Outcome::Succeeded, Instant::now());
    }
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            failures: 0,
            in_flight: 0,
            window_start: now,
            strikes: 0,
            locked_until: None,
            last_seen: now,
            bearer_failures: 0,
            bearer_window_start: now,
            bearer_locked_until: None,
        }
    }
}

/// Makes room for one entry: the least recently seen entry without a running lockout
/// or an attempt in flight, or, failing that, the one whose lockout ends soonest.
fn evict_one(table: &mut HashMap<IpAddr, Entry>, now: Instant) {
    let unlocked = table
        .iter()
        .filter(|(_, e)| {
            e.in_flight == 0
                && e.locked_until.is_none_or(|u| u <= now)
                && e.bearer_locked_until.is_none_or(|u| u <= now)
        })
        .min_by_key(|(_, e)| e.last_seen)
        .map(|(k, _)| *k);
    let victim = unlocked.or_else(|| {
        table
            .iter()
            .min_by_key(|(_, e)| e.locked_until)
            .map(|(k, _)| *k)
    });
    if let Some(k) = victim {
        table.remove(&k);
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Locks, shrugging off poisoning: the table stays consistent between statements.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::Arc;

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    fn small(capacity: usize) -> Throttle {
        Throttle::new(Policy {
            capacity,
            bcrypt_slots: 2,
            bcrypt_wait: Duration::from_millis(50),
            ..Policy::default()
        })
    }

    fn locked(t: &Throttle, ip: IpAddr, now: Instant) -> Option<u64> {
        match t.check_at(ip, now) {
            Ok(_) => None,
            Err(r) => Some(r.retry_after_secs()),
        }
    }

    #[test]
    fn five_failures_lock_the_address_and_lockouts_double() {
        let t = small(16);
        let t0 = Instant::now();
        for i in 0..4 {
            t.record_failure_at(v4(1), t0 + Duration::from_secs(i));
            assert_eq!(locked(&t, v4(1), t0 + Duration::from_secs(i)), None);
        }
        t.record_failure_at(v4(1), t0 + Duration::from_secs(4));
        assert_eq!(locked(&t, v4(1), t0 + Duration::from_secs(4)), Some(60));
        // Another address is untouched.
        assert_eq!(locked(&t, v4(2), t0 + Duration::from_secs(4)), None);
        // The lockout ends; five more failures lock for twice as long.
        let t1 = t0 + Duration::from_secs(65);
        assert_eq!(locked(&t, v4(1), t1), None);
        for _ in 0..5 {
            t.record_failure_at(v4(1), t1);
        }
        assert_eq!(locked(&t, v4(1), t1), Some(120));
        // A success forgets the history.
        t.record_success(v4(1));
        assert_eq!(locked(&t, v4(1), t1), None);
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn a_burst_gets_no_more_checks_than_the_budget() {
        // 100 attempts admitted at once (none settled yet): only the budget's worth.
        let t = Throttle::new(Policy {
            bcrypt_slots: 1000,
            ..Policy::default()
        });
        let now = Instant::now();
        let admitted: Vec<Attempt> = (0..100)
            .filter_map(|_| t.check_at(v4(1), now).ok())
            .collect();
        assert_eq!(admitted.len(), 5);
        assert!(
            t.check_at(v4(2), now).map(|a| a.failed()).is_ok(),
            "another address has its own budget"
        );
        for a in admitted {
            a.failed();
        }
        // Settled a moment after `now`: the lockout runs 60 s from then.
        assert!(matches!(locked(&t, v4(1), now), Some(60 | 61)));
        // An abandoned attempt (dropped unsettled) gives its reservation back.
        let a = t.check_at(v4(3), now).unwrap();
        drop(a);
        let five: Vec<Attempt> = (0..5).filter_map(|_| t.check_at(v4(3), now).ok()).collect();
        assert_eq!(five.len(), 5);
        // A success forgets the address, attempts still in flight included.
        let mut five = five.into_iter();
        five.next().unwrap().succeeded();
        drop(five);
        assert_eq!(locked(&t, v4(3), now), None);
    }

    #[test]
    fn failed_bearer_credentials_lock_the_address_out_of_lookups() {
        let t = small(16);
        for _ in 0..19 {
            t.bearer_failed(v4(1));
            assert_eq!(t.bearer_allowed(v4(1)), Ok(()));
        }
        t.bearer_failed(v4(1));
        let r = t.bearer_allowed(v4(1)).unwrap_err();
        assert!(matches!(r.retry_after_secs(), 59..=60), "{r:?}");
        assert_eq!(t.bearer_allowed(v4(2)), Ok(()));
        // Password logins have their own budget.
        assert!(t.check(v4(1)).is_ok());
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_lock() {
        let t = small(16);
        let t0 = Instant::now();
        for i in 0..20 {
            let now = t0 + Duration::from_secs(i * 15);
            t.record_failure_at(v4(1), now);
            assert_eq!(locked(&t, v4(1), now), None, "failure {i}");
        }
    }

    #[test]
    fn lockout_is_capped() {
        let t = small(16);
        let mut now = Instant::now();
        for _ in 0..40 {
            for _ in 0..5 {
                t.record_failure_at(v4(1), now);
            }
            let secs = locked(&t, v4(1), now).unwrap();
            assert!(secs <= 15 * 60, "{secs}");
            now += Duration::from_secs(secs + 1);
        }
    }

    #[test]
    fn table_never_grows_beyond_capacity_and_keeps_lockouts() {
        let t = small(64);
        let now = Instant::now();
        // One locked-out address, then a flood of distinct addresses failing once.
        for _ in 0..5 {
            t.record_failure_at(v4(0), now);
        }
        for n in 1..100_000 {
            t.record_failure_at(v4(n), now + Duration::from_micros(u64::from(n)));
            assert!(t.tracked() <= 64);
        }
        assert_eq!(t.tracked(), 64);
        assert!(t.table.lock().unwrap().capacity() < 1024);
        // Single failures hold no lockout, so they were evicted first.
        assert!(locked(&t, v4(0), now).is_some());
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_and_mapped_v4_by_the_v4_address() {
        let t = small(16);
        let now = Instant::now();
        for i in 0..5u16 {
            let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, i, i, i, i));
            t.record_failure_at(ip, now);
        }
        let same64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 9, 9, 9, 9));
        let other64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert!(locked(&t, same64, now).is_some());
        assert!(locked(&t, other64, now).is_none());

        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 7).to_ipv6_mapped());
        for _ in 0..5 {
            t.record_failure_at(mapped, now);
        }
        assert!(locked(&t, v4(7), now).is_some());
    }

    #[test]
    fn bcrypt_slots_cap_concurrency_and_refuse_after_the_wait() {
        let t = Arc::new(small(16));
        let a = t.check(v4(1)).unwrap();
        let b = t.check(v4(2)).unwrap();
        assert_eq!(
            t.check(v4(3)).err(),
            Some(Refusal::Busy {
                retry_after_secs: 1
            })
        );
        drop(a);
        let c = t.check(v4(3)).unwrap();
        // A waiter gets the slot as soon as one is released.
        let t2 = Arc::clone(&t);
        let waiter = std::thread::spawn(move || {
            let policy_wait = Duration::from_secs(30);
            let slow = Throttle {
                policy: Policy {
                    bcrypt_wait: policy_wait,
                    ..t2.policy.clone()
                },
                table: Mutex::new(HashMap::new()),
                slots: Slots {
                    busy: Mutex::new(0),
                    freed: Condvar::new(),
                },
            };
            // Its own throttle: fill both slots, release one from another thread.
            let p1 = slow.check(v4(1)).unwrap();
            let _p2 = slow.check(v4(2)).unwrap();
            std::thread::scope(|s| {
                s.spawn(|| {
                    std::thread::sleep(Duration::from_millis(20));
                    drop(p1);
                });
                slow.check(v4(3)).is_ok()
            })
        });
        assert!(waiter.join().unwrap());
        drop((b, c));
        assert_eq!(*t.slots.busy.lock().unwrap(), 0);
    }
}
