//! The install manifest: every file and directory `joinery install` created, with the
//! SHA-256 of each file as written, so `joinery uninstall` removes exactly those and
//! only while their content is still what install wrote.
//!
//! Plain text, one entry a line, paths as seen on the installed system (absolute, last
//! on the line so they may hold spaces):
//!
//! ```text
//! joinery-install-manifest 1
//! dir - /etc/joinery
//! file 9f86d08...  /etc/systemd/system/joinery.service
//! datadir - /var/lib/joinery
//! data 2c26b46... /var/lib/joinery/tls.key
//! ```

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where the manifest lives on the installed system: outside the data dir, so uninstall
/// finds it whatever `--data-dir` was.
pub const MANIFEST_PATH: &str = "/etc/joinery/install.manifest";

const HEADER: &str = "joinery-install-manifest 1";

/// What install did to one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory install created; removed when empty.
    Dir,
    /// A file install wrote; removed when its content still has this SHA-256 (hex).
    File(String),
    /// The data directory, when install created it: kept unless `--purge`, then removed
    /// with everything the daemon put in it.
    DataDir,
    /// A file in the data directory (the generated certificate and key): kept unless
    /// `--purge`, then removed like a `File`.
    Data(String),
}

/// One line of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub path: PathBuf,
}

/// Entries in the order install made them (uninstall walks them backwards).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub entries: Vec<Entry>,
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Manifest {
    /// Records `entry`, replacing an earlier entry for the same path (a re-install
    /// rewrites the unit: the newest checksum is the one that counts). A path keeps its
    /// first position, so parents stay before children.
    pub fn record(&mut self, entry: Entry) {
        match self.entries.iter_mut().find(|e| e.path == entry.path) {
            Some(old) => {
                // A directory created earlier stays "created by install" even when a
                // later run found it already there.
                if !(matches!(old.kind, Kind::Dir | Kind::DataDir) && entry.kind == Kind::Dir) {
                    *old = entry;
                }
            }
            None => self.entries.push(entry),
        }
    }

    /// The entry for `path`, if install wrote it.
    pub fn get(&self, path: &Path) -> Option<&Entry> {
        self.entries.iter().find(|e| e.path == path)
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "{HEADER}\n# Written by `joinery install`: what it created, for `joinery uninstall`.\n"
        );
        for e in &self.entries {
            let (kind, sum) = match &e.kind {
                Kind::Dir => ("dir", "-"),
                Kind::File(s) => ("file", s.as_str()),
                Kind::DataDir => ("datadir", "-"),
                Kind::Data(s) => ("data", s.as_str()),
            };
            out.push_str(&format!("{kind} {sum} {}\n", e.path.display()));
        }
        out
    }

    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(format!(
                "not a joinery install manifest (first line is not {HEADER:?})"
            ));
        }
        let mut m = Manifest::default();
        for (n, line) in lines.enumerate() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let bad = || format!("line {}: cannot read {line:?}", n + 2);
            let mut parts = line.splitn(3, ' ');
            let (Some(kind), Some(sum), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            let is_hex = sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit());
            let kind = match (kind, sum) {
                ("dir", "-") => Kind::Dir,
                ("datadir", "-") => Kind::DataDir,
                ("file", s) if is_hex => Kind::File(s.to_string()),
                ("data", s) if is_hex => Kind::Data(s.to_string()),
                _ => return Err(bad()),
            };
            if !path.starts_with('/') {
                return Err(bad());
            }
            m.entries.push(Entry {
                kind,
                path: PathBuf::from(path),
            });
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_including_spaces() {
        let mut m = Manifest::default();
        m.record(Entry {
            kind: Kind::Dir,
            path: "/etc/joinery".into(),
        });
        m.record(Entry {
            kind: Kind::File(sha256_hex(b"unit")),
            path: "/etc/my dir/joinery.service".into(),
        });
        m.record(Entry {
            kind: Kind::DataDir,
            path: "/var/lib/joinery".into(),
        });
        m.record(Entry {
            kind: Kind::Data(sha256_hex(b"key")),
            path: "/var/lib/joinery/tls.key".into(),
        });
        assert_eq!(Manifest::parse(&m.render()).unwrap(), m);
    }

    #[test]
    fn a_rewrite_keeps_the_position_and_takes_the_new_checksum() {
        let mut m = Manifest::default();
        let unit = PathBuf::from("/etc/systemd/system/joinery.service");
        m.record(Entry {
            kind: Kind::Dir,
            path: "/etc/joinery".into(),
        });
        m.record(Entry {
            kind: Kind::File(sha256_hex(b"old")),
            path: unit.clone(),
        });
        m.record(Entry {
            kind: Kind::Dir,
            path: "/etc/joinery".into(),
        });
        m.record(Entry {
            kind: Kind::File(sha256_hex(b"new")),
            path: unit.clone(),
        });
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.get(&unit).unwrap().kind, Kind::File(sha256_hex(b"new")));
    }

    #[test]
    fn refuses_what_it_did_not_write() {
        assert!(Manifest::parse("hello\n").is_err());
        for line in ["file abc /x", "dir - relative/path", "remove - /", "file"] {
            let text = format!("{HEADER}\n{line}\n");
            assert!(Manifest::parse(&text).is_err(), "{line}");
        }
    }
}
