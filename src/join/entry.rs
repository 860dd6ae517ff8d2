//! What goes into a bundle: entries, name validation, tar headers, and a reader that
//! notices when a file changes under it.
//!
//! The tar headers built here are a pure function of (name, size, mode, mtime), which
//! is what lets a cached gzip member be reused verbatim in every later bundle.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Longest entry name accepted, in bytes (GNU long names make longer ones possible,
/// but nothing we ship needs them and the limit keeps headers small).
pub const MAX_NAME_LEN: usize = 255;

/// Where an entry's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file on disk, read while streaming. `mode` is written into the tar header
    /// (permission bits only, at most `0o7777`); the file's own mode is ignored.
    /// `expect`: the file scanned at start-up; any other file at `path` is refused.
    File {
        path: PathBuf,
        mode: u32,
        expect: Option<Identity>,
    },
    /// Bytes in memory (the small per-join files).
    Bytes { data: Vec<u8>, mode: u32 },
}

/// One regular file in the bundle.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path inside the tar: relative, `/`-separated, checked by [`validate_name`].
    pub name: String,
    pub source: Source,
}

impl Entry {
    /// An entry read from `path` on disk.
    #[cfg(test)]
    pub fn file(name: impl Into<String>, path: impl Into<PathBuf>, mode: u32) -> Self {
        Entry {
            name: name.into(),
            source: Source::File {
                path: path.into(),
                mode,
                expect: None,
            },
        }
    }

    /// An entry read from `path`, which must still be the file `scanned` describes.
    pub fn scanned_file(
        name: impl Into<String>,
        path: impl Into<PathBuf>,
        mode: u32,
        scanned: Identity,
    ) -> Self {
        Entry {
            name: name.into(),
            source: Source::File {
                path: path.into(),
                mode,
                expect: Some(scanned),
            },
        }
    }

    /// An entry whose content is `data`.
    pub fn bytes(name: impl Into<String>, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        Entry {
            name: name.into(),
            source: Source::Bytes {
                data: data.into(),
                mode,
            },
        }
    }

    pub(crate) fn mode(&self) -> u32 {
        match self.source {
            Source::File { mode, .. } | Source::Bytes { mode, .. } => mode,
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Check an entry name: non-empty, at most [`MAX_NAME_LEN`] bytes, relative, made of
/// non-empty components none of which is `.` or `..`, and free of control characters
/// and backslashes (so it extracts where it says and `sha256sum -c` reads it unescaped).
pub fn validate_name(name: &str) -> io::Result<()> {
    if name.is_empty() {
        return Err(invalid("join bundle: empty entry name".into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(format!(
            "join bundle: entry name longer than {MAX_NAME_LEN} bytes"
        )));
    }
    if name.chars().any(|c| c.is_control() || c == '\\') {
        return Err(invalid(format!(
            "join bundle: entry name {name:?} contains a control character or backslash"
        )));
    }
    if name.starts_with('/') {
        return Err(invalid(format!(
            "join bundle: entry name {name:?} is absolute"
        )));
    }
    if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(invalid(format!(
            "join bundle: entry name {name:?} has an empty, `.` or `..` component"
        )));
    }
    Ok(())
}

/// Check a header mode: permission bits only.
pub(crate) fn validate_mode(name: &str, mode: u32) -> io::Result<()> {
    if mode & !0o7777 != 0 {
        return Err(invalid(format!(
            "join bundle: entry {name:?} has mode {mode:o}, beyond 0o7777"
        )));
    }
    Ok(())
}

/// Bytes of zero padding after `size` bytes of data, up to the next 512-byte block.
pub(crate) fn padding(size: u64) -> usize {
    ((512 - size % 512) % 512) as usize
}

/// The header block(s) for a regular file: a GNU long-name entry first when the name
/// does not fit in 100 bytes (the tar crate's logic), then the file header. Owner is
/// always root (0/0), so identical inputs give identical bytes on every controller.
pub(crate) fn header_bytes(name: &str, size: u64, mode: u32, mtime: u64) -> io::Result<Vec<u8>> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h.set_username("root")?;
    h.set_groupname("root")?;
    let mut b = tar::Builder::new(Vec::with_capacity(3 * 512));
    // An empty reader makes append_data write the header(s) only; the data and padding
    // are streamed by the caller.
    b.append_data(&mut h, name, io::empty())?;
    // Builder's Drop appends the two end blocks to whatever is left in it: take the
    // headers out first so those land in an empty Vec that is thrown away.
    Ok(std::mem::take(b.get_mut()))
}

/// The identity of a file as far as caching goes: if any of these change, so may the
/// content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    pub size: u64,
    pub mtime_s: i64,
    pub mtime_ns: i64,
    pub ino: u64,
    pub dev: u64,
}

impl FileId {
    pub fn of(meta: &Metadata) -> Self {
        FileId {
            size: meta.size(),
            mtime_s: meta.mtime(),
            mtime_ns: meta.mtime_nsec(),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }

    /// The mtime for the tar header (seconds, never negative).
    pub fn header_mtime(&self) -> u64 {
        self.mtime_s.max(0) as u64
    }
}

/// Which file an artifact is: device, inode and size, as the start-up scan saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
}

impl Identity {
    pub fn of(meta: &Metadata) -> Self {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
        }
    }
}

/// Opens `path` without following a symlink in its last component (`O_NOFOLLOW`: a
/// file swapped for a link to a secret is refused, not read).
pub(crate) fn open_nofollow(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            let why = if e.raw_os_error() == Some(libc::ELOOP) {
                "is a symlink, which bundles never follow".to_string()
            } else {
                e.to_string()
            };
            io::Error::new(e.kind(), format!("join bundle: {}: {why}", path.display()))
        })
}

/// Opens `path` (never through a symlink), insists on a regular file and, when
/// `expect` is given, on that very file (device, inode, size): a hard link or a
/// replacement planted after the scan is refused.
pub(crate) fn stat_regular(path: &Path, expect: Option<&Identity>) -> io::Result<FileId> {
    let meta = open_nofollow(path)?.metadata()?;
    if !meta.is_file() {
        return Err(invalid(format!(
            "join bundle: {} is not a regular file",
            path.display()
        )));
    }
    if expect.is_some_and(|x| *x != Identity::of(&meta)) {
        return Err(io::Error::other(format!(
            "join bundle: {} is not the file joinery scanned at start-up (it was replaced); \
             restart joinery to serve the new file",
            path.display()
        )));
    }
    Ok(FileId::of(&meta))
}

pub(crate) fn changed(path: &Path, what: &str) -> io::Error {
    io::Error::other(format!(
        "join bundle: {} {what} while the bundle was being built",
        path.display()
    ))
}

/// Reads exactly the `size` bytes that were planned for a file, and fails, rather than
/// produce a corrupt tar, if the file turns out shorter, longer or modified.
pub(crate) struct CheckedFile {
    file: File,
    path: PathBuf,
    id: FileId,
    remaining: u64,
    done: bool,
}

impl CheckedFile {
    /// Open `path` and check that it is still the file that was planned.
    pub fn open(path: &Path, id: &FileId) -> io::Result<Self> {
        let file = open_nofollow(path)?;
        if FileId::of(&file.metadata()?) != *id {
            return Err(changed(path, "changed"));
        }
        Ok(CheckedFile {
            file,
            path: path.to_owned(),
            id: *id,
            remaining: id.size,
            done: false,
        })
    }

    /// The underlying file, for positional reads that leave the cursor alone.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Like `Read::read`; returns 0 only once all planned bytes were read and the file
    /// was seen to end there, unmodified.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            let mut probe = [0u8; 1];
            if self.file.read(&mut probe)? != 0 {
                return Err(changed(&self.path, "grew"));
            }
            let now = FileId::of(&self.file.metadata()?);
            if now != self.id {
                return Err(changed(&self.path, "was modified"));
            }
            self.done = true;
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(changed(&self.path, "shrank"));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let long_ok = "a/".repeat(127) + "b"; // 255 bytes
        assert_eq!(long_ok.len(), 255);
        for ok in [
            "license.yaml",
            "bin/joinery",
            "a/b/c.tar.gz",
            "..a",
            "a..",
            "x y",
            &long_ok,
        ] {
            assert!(validate_name(ok).is_ok(), "{ok:?} should be accepted");
        }
        let too_long = "a".repeat(256);
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/..",
            "..",
            ".",
            "./a",
            "a/./b",
            "a//b",
            "a/",
            "a\0b",
            "a\nb",
            "a\\b",
            &too_long,
        ] {
            let e = validate_name(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn modes() {
        assert!(validate_mode("x", 0o755).is_ok());
        assert!(validate_mode("x", 0o4755).is_ok());
        assert!(validate_mode("x", 0o100644).is_err());
    }

    #[test]
    fn padding_to_blocks() {
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
        assert_eq!(padding(513), 511);
    }

    #[test]
    fn headers_are_deterministic_and_long_names_use_gnu_longlink() {
        let a = header_bytes("bin/joinery", 10, 0o755, 1_700_000_000).unwrap();
        let b = header_bytes("bin/joinery", 10, 0o755, 1_700_000_000).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 512);
        let long = "d/".repeat(100) + "file";
        let h = header_bytes(&long, 10, 0o644, 0).unwrap();
        // LongLink header + name data (205 bytes + NUL, one block) + the real header.
        assert_eq!(h.len(), 3 * 512);
        assert_eq!(&h[..13], b"././@LongLink");
        assert_eq!(h[156], b'L');
    }
}
