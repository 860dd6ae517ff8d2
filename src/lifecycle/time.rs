//! RFC 3339 timestamps to and from seconds since the epoch (pure).
//!
//! Kubernetes writes `Time` as `2026-01-15T12:00:00Z` and `MicroTime` (Lease renewals)
//! as `2026-01-15T12:00:00.123456Z`; other offsets are accepted on the way in.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in seconds since the epoch (fractional).
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `secs` as RFC 3339 UTC with whole seconds (`Time`).
pub fn format(secs: f64) -> String {
    crate::log::rfc3339(secs.floor() as i64)
}

/// `secs` as RFC 3339 UTC with microseconds (`MicroTime`, for Leases).
pub fn format_micro(secs: f64) -> String {
    let whole = secs.floor();
    let micros = (((secs - whole) * 1e6) as u32).min(999_999);
    let (date, time) = crate::log::civil(whole as i64);
    format!("{date}T{time}.{micros:06}Z")
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`; `None` for anything else.
pub fn parse(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        frac = format!("0.{}", &r[..digits]).parse().ok()?;
        rest = &r[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && matches!(&o[..1], "+" | "-") && &o[3..4] == ":" => {
            let oh = num_in(o, 1..3)?;
            let om = num_in(o, 4..6)?;
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    Some((days * 86_400 + h * 3600 + mi * 60 + sec - offset) as f64 + frac)
}

fn num_in(s: &str, r: std::ops::Range<usize>) -> Option<i64> {
    let t = s.get(r)?;
    if !t.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_times() {
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse("2026-01-15T12:00:00Z"), Some(1_768_478_400.0));
        assert_eq!(parse("2000-02-29T00:00:00Z"), Some(951_782_400.0));
        assert_eq!(parse("2026-01-15T12:00:00.500000Z"), Some(1_768_478_400.5));
        assert_eq!(parse("2026-01-15T13:00:00+01:00"), Some(1_768_478_400.0));
        for bad in [
            "",
            "2026-01-15",
            "2026-01-15T12:00:00",
            "2026-13-15T12:00:00Z",
            "x026-01-15T12:00:00Z",
            "2026-01-15T12:00:00.Z",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_round_trip() {
        let t = 1_768_478_400.25;
        assert_eq!(format(t), "2026-01-15T12:00:00Z");
        assert_eq!(format_micro(t), "2026-01-15T12:00:00.250000Z");
        assert_eq!(parse(&format_micro(t)), Some(t));
    }
}
