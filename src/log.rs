//! One JSON object per line on stderr: the access log, the audit log and start-up notes.
//!
//! Callers pass only fields they chose; nothing here ever formats a request's headers or
//! body, which is how secrets stay out of the log.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// The most characters of any one string field in a log line. Fields can carry client
/// text (a path, a node name from a URL); past this they are cut and end in `…`, so no
/// client can make one line (or the journal) grow with what it sends.
pub const MAX_FIELD_CHARS: usize = 512;

/// `s` cut to [`MAX_FIELD_CHARS`] characters, marked with `…` when cut.
pub fn clip(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(MAX_FIELD_CHARS) {
        None => std::borrow::Cow::Borrowed(s),
        Some((i, _)) => std::borrow::Cow::Owned(format!("{}…", &s[..i])),
    }
}

/// Write one log line. `fields` must be a JSON object; `time` and `level` are added.
/// String fields are clipped ([`clip`]).
pub fn emit(level: &str, mut fields: serde_json::Map<String, serde_json::Value>) {
    for v in fields.values_mut() {
        if let serde_json::Value::String(s) = v {
            if let std::borrow::Cow::Owned(c) = clip(s) {
                *s = c;
            }
        }
    }
    let mut line = serde_json::Map::new();
    line.insert("time".into(), rfc3339_now().into());
    line.insert("level".into(), level.into());
    line.append(&mut fields);
    let mut text = serde_json::Value::Object(line).to_string();
    text.push('\n');
    write_line(text.as_bytes());
}

/// Write one finished line (a JSON object and its `\n`). One write call per line so
/// lines from different threads never interleave.
///
/// Lines up to `PIPE_BUF` (4096 bytes, which covers every access line) go out with one
/// write(2) on a duplicate of stderr and no lock: such a write is atomic on a pipe or
/// socket (journald), and on a file the kernel moves the offset atomically. std's
/// stderr lock cost a lock and, under load, futex waits on every request. Longer lines
/// (or a short write) take the lock so they at least stay whole among themselves.
pub fn write_line(line: &[u8]) {
    static ERR: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    const PIPE_BUF: usize = 4096;
    let err = ERR.get_or_init(|| {
        use std::os::fd::AsFd;
        std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(std::fs::File::from)
    });
    if let (Some(mut f), true) = (err.as_ref(), line.len() <= PIPE_BUF) {
        match f.write(line) {
            Ok(n) if n == line.len() => return,
            Ok(n) => {
                let _ = std::io::stderr().lock().write_all(&line[n..]);
                return;
            }
            Err(_) => {}
        }
    }
    let _ = std::io::stderr().lock().write_all(line);
}

/// Convenience for a message with a few extra fields.
pub fn info(msg: &str, extra: &[(&str, serde_json::Value)]) {
    emit("info", with_msg(msg, extra));
}

/// Like [`info`] at level `warn`.
pub fn warn(msg: &str, extra: &[(&str, serde_json::Value)]) {
    emit("warn", with_msg(msg, extra));
}

/// Like [`info`] at level `error`.
pub fn error(msg: &str, extra: &[(&str, serde_json::Value)]) {
    emit("error", with_msg(msg, extra));
}

/// One audit line: who (`subject`) did what (`action`) to which object (`target`), and
/// how it ended (`result`), as `{"msg":"audit","action",...}` at level `info`. The
/// shape is a promise to log pipelines, documented in docs/security.md ("Audit log"):
/// `action` is `area.verb` and its area says what kind of thing `target` names; an
/// empty `subject` means no one was authenticated. `extra` adds context fields
/// (`client`, `roles`, `scope`); it cannot replace the four. Never pass a secret.
pub fn audit(
    action: &str,
    subject: &str,
    target: &str,
    result: &str,
    extra: &[(&str, serde_json::Value)],
) {
    emit("info", audit_fields(action, subject, target, result, extra));
}

fn audit_fields(
    action: &str,
    subject: &str,
    target: &str,
    result: &str,
    extra: &[(&str, serde_json::Value)],
) -> serde_json::Map<String, serde_json::Value> {
    let mut m = with_msg("audit", extra);
    for (k, v) in [
        ("msg", "audit"),
        ("action", action),
        ("subject", subject),
        ("target", target),
        ("result", result),
    ] {
        m.insert(k.into(), v.into());
    }
    m
}

fn with_msg(
    msg: &str,
    extra: &[(&str, serde_json::Value)],
) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("msg".into(), msg.into());
    for (k, v) in extra {
        m.insert((*k).into(), v.clone());
    }
    m
}

/// The current UTC time as RFC 3339 with milliseconds, e.g. `2026-01-15T12:00:00.123Z`.
pub fn rfc3339_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (y, m, day, hh, mm, ss) = civil_parts(d.as_secs() as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{hh:02}:{mm:02}:{ss:02}.{:03}Z",
        d.subsec_millis()
    )
}

/// Unix seconds as RFC 3339 UTC with whole seconds (`2026-01-15T13:00:00Z`).
pub fn rfc3339(secs: i64) -> String {
    let (date, time) = civil(secs);
    format!("{date}T{time}Z")
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
pub(crate) fn civil_parts(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-from-civil inverse.
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

#[cfg(test)]
mod tests {
    use super::{audit_fields, civil, clip, MAX_FIELD_CHARS};

    #[test]
    fn audit_lines_have_one_shape() {
        let m = audit_fields(
            "node.drain",
            "admin",
            "node-2",
            "started",
            &[("client", "10.0.0.9".into()), ("subject", "forged".into())],
        );
        assert_eq!(
            serde_json::Value::Object(m).to_string(),
            r#"{"action":"node.drain","client":"10.0.0.9","msg":"audit","result":"started","subject":"admin","target":"node-2"}"#
        );
    }

    #[test]
    fn long_fields_are_clipped_on_a_char_boundary() {
        assert_eq!(clip("/v1/nodes"), "/v1/nodes");
        let long = "é".repeat(10_000);
        let c = clip(&long);
        assert_eq!(c.chars().count(), MAX_FIELD_CHARS + 1);
        assert!(c.ends_with('…'));
    }

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
}
