//! One JSON object per line on stderr: the access log, the audit log and start-up notes.
//! Dates come from `crate::time`.
//!
//! Callers pass only fields they chose; nothing here ever formats a request's headers or
//! body, which is how secrets stay out of the log.

use std::io::Write;
use std::time::SystemTime;

/// The most characters of any one string field in a log line. Fields can carry client
/// text (a path, a node name from a URL); past this they are cut and end in `…`, so no
/// client can make one line (or the journal) grow with what it sends.
pub const MAX_FIELD_CHARS: usize = 512;

/// `s` cut to [`MAX_FIELD_CHARS`] characters, marked with `…` when cut.
pub fn clip(s: &str) -> std::borrow::Cow<'_, str> {
    // No more bytes than the limit in characters: nothing to count.
    if s.len() <= MAX_FIELD_CHARS {
        return std::borrow::Cow::Borrowed(s);
    }
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
    line.insert(
        "time".into(),
        crate::time::rfc3339_millis(SystemTime::now()).into(),
    );
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

#[cfg(test)]
mod tests {
    use super::{audit_fields, clip, MAX_FIELD_CHARS};

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
}
