//! Time in one place: "now", RFC 3339 and HTTP dates, all UTC (pure but for `now`).
//!
//! Formats, each byte-exact because something reads it back:
//! - RFC 3339 with whole seconds (`2026-01-15T12:00:00Z`): Kubernetes `Time`, token and
//!   join times in the API and the CLI.
//! - with microseconds (`2026-01-15T12:00:00.123456Z`): Kubernetes `MicroTime`, which
//!   Lease renewals must use.
//! - with milliseconds (`2026-01-15T12:00:00.123Z`): every log line's `time`.
//! - IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`): the HTTP `Date` header.
//!
//! [`parse_rfc3339`] reads any of the RFC 3339 forms Kubernetes writes (up to nine
//! fraction digits, `Z` or an offset). Own code rather than the `time` crate that rcgen
//! links: rcgen builds it with only `std` and `alloc` (`cargo tree -e features -i time`),
//! so using it would add its formatting and parsing code for what these few functions do.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A gate that opens at most once per period, for housekeeping that many requests may
/// trigger (the ticket and refresh-family sweeps) but that one of them should do.
pub struct AtMostEvery {
    period: Duration,
    last: Mutex<Option<Instant>>,
}

impl AtMostEvery {
    pub const fn new(period: Duration) -> AtMostEvery {
        AtMostEvery {
            period,
            last: Mutex::new(None),
        }
    }

    /// True for the first caller, then for the first caller once `period` has passed.
    pub fn due(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < self.period) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

/// Now, in whole seconds since the epoch (token, join and file times).
pub fn now() -> i64 {
    unix(SystemTime::now()).0
}

/// Now, in seconds since the epoch with the fraction (Lease renewals, drain deadlines).
pub fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `t` as (whole seconds, milliseconds) since the epoch; a clock set before 1970 reads
/// as the epoch.
fn unix(t: SystemTime) -> (i64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs() as i64, d.subsec_millis())
}

/// Unix seconds as RFC 3339 UTC with whole seconds (`2026-01-15T13:00:00Z`).
pub fn rfc3339(secs: i64) -> String {
    let (date, time) = civil(secs);
    format!("{date}T{time}Z")
}

/// `t` as RFC 3339 UTC with milliseconds (`2026-01-15T12:00:00.123Z`), as log lines carry.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let (secs, millis) = unix(t);
    let (y, m, d, hh, mm, ss) = civil_parts(secs);
    // One allocation (it is written for every request's access line): `civil`'s two
    // strings and a growing `format!` were four or five.
    let mut out = String::with_capacity(24);
    let _ = std::fmt::Write::write_fmt(
        &mut out,
        format_args!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{millis:03}Z"),
    );
    out
}

/// Appends `t` as [`rfc3339_millis`] writes it, without allocating: the text up to the
/// second is kept per thread while that second lasts (the access log writes one per
/// request).
pub fn push_rfc3339_millis(out: &mut Vec<u8>, t: SystemTime) {
    thread_local! {
        static SECOND: std::cell::Cell<(i64, [u8; 20])> =
            const { std::cell::Cell::new((i64::MIN, [0; 20])) };
    }
    let (secs, millis) = unix(t);
    let (at, mut upto) = SECOND.get();
    if at != secs {
        let text = rfc3339_millis(t);
        let Some(head) = text.as_bytes().get(..20).filter(|_| text.len() == 24) else {
            // A year past 9999: not worth a cache.
            return out.extend_from_slice(text.as_bytes());
        };
        upto.copy_from_slice(head);
        SECOND.set((secs, upto));
    }
    out.extend_from_slice(&upto);
    out.extend_from_slice(&[
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
        b'Z',
    ]);
}

/// `secs` as RFC 3339 UTC with microseconds (`MicroTime`, for Leases).
pub fn rfc3339_micros(secs: f64) -> String {
    let whole = secs.floor();
    let micros = (((secs - whole) * 1e6) as u32).min(999_999);
    let (date, time) = civil(whole as i64);
    format!("{date}T{time}.{micros:06}Z")
}

/// `t` as an IMF-fixdate (RFC 9110), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(t: SystemTime) -> String {
    let secs = unix(t).0;
    let (y, m, d, hh, mm, ss) = civil_parts(secs);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]
        [secs.div_euclid(86_400).rem_euclid(7) as usize];
    let month_names = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = month_names[(m - 1).clamp(0, 11) as usize];
    format!("{weekday}, {d:02} {month} {y:04} {hh:02}:{mm:02}:{ss:02} GMT")
}

/// Seconds since the epoch to (`YYYY-MM-DD`, `HH:MM:SS`) in UTC.
pub fn civil(secs: i64) -> (String, String) {
    let (y, m, d, hh, mm, ss) = civil_parts(secs);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{hh:02}:{mm:02}:{ss:02}"),
    )
}

/// Seconds since the epoch to year, month, day, hour, minute, second in UTC.
fn civil_parts(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Howard Hinnant's days-from-civil: days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` to seconds since the epoch; `None` for
/// anything else.
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (digits(s, 0..4)?, digits(s, 5..7)?, digits(s, 8..10)?);
    let (h, mi, sec) = (digits(s, 11..13)?, digits(s, 14..16)?, digits(s, 17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 9 {
            return None;
        }
        frac = format!("0.{}", &r[..n]).parse().ok()?;
        rest = &r[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && matches!(&o[..1], "+" | "-") && &o[3..4] == ":" => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (digits(o, 1..3)? * 3600 + digits(o, 4..6)? * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    Some((days * 86_400 + h * 3600 + mi * 60 + sec - offset) as f64 + frac)
}

/// The decimal number in `s[r]`, if that is all ASCII digits.
fn digits(s: &str, r: std::ops::Range<usize>) -> Option<i64> {
    let t = s.get(r)?;
    if !t.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn civil_dates() {
        for (secs, date, time) in [
            (0, "1970-01-01", "00:00:00"),
            (951_782_400, "2000-02-29", "00:00:00"),
            (1_768_478_400, "2026-01-15", "12:00:00"),
        ] {
            assert_eq!(civil(secs), (date.to_string(), time.to_string()));
        }
    }

    #[test]
    fn parses_kubernetes_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339("2026-01-15T12:00:00Z"), Some(1_768_478_400.0));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400.0));
        assert_eq!(
            parse_rfc3339("2026-01-15T12:00:00.500000Z"),
            Some(1_768_478_400.5)
        );
        assert_eq!(
            parse_rfc3339("2026-01-15T13:00:00+01:00"),
            Some(1_768_478_400.0)
        );
        for bad in [
            "",
            "2026-01-15",
            "2026-01-15T12:00:00",
            "2026-13-15T12:00:00Z",
            "x026-01-15T12:00:00Z",
            "2026-01-15T12:00:00.Z",
            "2026-01-15T12:00:00.1234567890Z",
            "2026-01-15T12:00:00+0100",
            "2026-01-15T24:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn fractions_as_kubernetes_writes_them() {
        // MicroTime (six digits), RFC3339Nano (up to nine, trailing zeros dropped), and
        // a lower-case separator and zone, which RFC 3339 allows.
        let t0 = 1_768_478_400.0;
        for (text, frac) in [
            ("2026-01-15T12:00:00.123456Z", 0.123456),
            ("2026-01-15T12:00:00.123456789Z", 0.123456789),
            ("2026-01-15T12:00:00.1Z", 0.1),
            ("2026-01-15t12:00:00.000001z", 0.000001),
        ] {
            let got = parse_rfc3339(text).unwrap();
            assert!((got - (t0 + frac)).abs() < 1e-6, "{text}: {got}");
        }
    }

    #[test]
    fn formats_round_trip() {
        let t = 1_768_478_400.25;
        assert_eq!(rfc3339(t as i64), "2026-01-15T12:00:00Z");
        assert_eq!(rfc3339_micros(t), "2026-01-15T12:00:00.250000Z");
        assert_eq!(parse_rfc3339(&rfc3339_micros(t)), Some(t));
        let at = UNIX_EPOCH + Duration::from_millis(1_768_478_400_123);
        assert_eq!(rfc3339_millis(at), "2026-01-15T12:00:00.123Z");
        // Leap days (2000 is a leap year, 1900 and 2100 are not), the last second of a
        // leap year, and the last second RFC 3339 can write (year 9999).
        for text in [
            "1972-02-29T00:00:00Z",
            "2000-02-29T23:59:59Z",
            "2024-02-29T12:00:00Z",
            "2024-12-31T23:59:59Z",
            "2100-03-01T00:00:00Z",
            "1900-03-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            let secs = parse_rfc3339(text).unwrap();
            assert_eq!(rfc3339(secs as i64), text);
        }
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        // Every day for ten years, through the 2028 leap day.
        for day in 0..3653 {
            let secs = 1_767_225_600 + day * 86_400 + 45_296;
            assert_eq!(parse_rfc3339(&rfc3339(secs)), Some(secs as f64));
        }
    }

    #[test]
    fn http_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            http_date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
        assert_eq!(
            http_date(UNIX_EPOCH + Duration::from_secs(253_402_300_799)),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }

    #[test]
    fn at_most_every_opens_once_per_period() {
        let gate = AtMostEvery::new(Duration::from_secs(3600));
        assert!(gate.due());
        assert!(!gate.due());
        let open = AtMostEvery::new(Duration::ZERO);
        assert!(open.due());
        assert!(open.due());
    }

    #[test]
    fn pushed_millis_time_is_the_same_text_across_seconds() {
        let mut out = Vec::new();
        for ms in [
            0u64,
            1,
            999,
            1000,
            1001,
            59_999,
            60_000,
            1_768_478_400_123,
            253_402_300_799_999,
        ] {
            let t = UNIX_EPOCH + std::time::Duration::from_millis(ms);
            out.clear();
            push_rfc3339_millis(&mut out, t);
            assert_eq!(
                String::from_utf8(out.clone()).unwrap(),
                rfc3339_millis(t),
                "{ms}"
            );
        }
    }
}
