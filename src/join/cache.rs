//! The on-disk cache of prebuilt gzip members and artifact hashes.
//!
//! Files in the cache directory:
//! - `m-<key>.gz`: one gzip member holding one tar entry (header(s), data, padding);
//!   `key` hashes the artifact's absolute path, size, mtime (ns), inode, device, the
//!   entry name and mode, and [`FORMAT`].
//! - `s-<key>.sha256`: the artifact's SHA-256 as 64 hex digits and a newline; `key`
//!   hashes path, size, mtime, inode and device only, so [`BundleCache::sha256_checked`]
//!   needs nothing but a path.
//! - `<one of the above>.tmp-<random>`: being written. Only renamed files are ever read,
//!   so a reader never sees a torn file; a temp file is deleted when its build fails or
//!   its client goes away.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};

use super::bundle;
use super::entry::{stat_regular, CheckedFile, Entry, FileId, Identity, Source};

/// Files larger than this become cached gzip members of their own; smaller ones (and
/// in-memory entries) are compressed fresh into each bundle.
pub const CACHE_THRESHOLD: u64 = 1 << 20;

/// Bumped whenever the bytes of a member for the same inputs would change (header
/// layout, gzip settings, level choice), so old members are never reused.
pub const FORMAT: &str = "joinery-bundle-member-v1";

pub(crate) type Key = [u8; 32];

/// Handle on the cache directory; cheap to clone, shared by all streams.
#[derive(Clone, Debug)]
pub struct BundleCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// Member keys being built by this process (single flight; see [`BuildGuard`]).
    building: Mutex<HashSet<Key>>,
    /// Temp files being written by this process, which `prune` must leave alone.
    temps: Mutex<HashSet<PathBuf>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these sets inconsistent, so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks(2).enumerate() {
        let d = |c: u8| (c as char).to_digit(16);
        out[i] = (d(pair[0])? * 16 + d(pair[1])?) as u8;
    }
    Some(out)
}

fn id_fields(h: &mut Sha256, abs: &Path, id: &FileId) {
    use std::os::unix::ffi::OsStrExt;
    let p = abs.as_os_str().as_bytes();
    h.update((p.len() as u64).to_le_bytes());
    h.update(p);
    h.update(id.size.to_le_bytes());
    h.update(id.mtime_s.to_le_bytes());
    h.update(id.mtime_ns.to_le_bytes());
    h.update(id.ino.to_le_bytes());
    h.update(id.dev.to_le_bytes());
}

/// Key of the SHA-256 sidecar of a file.
pub(crate) fn content_key(abs: &Path, id: &FileId) -> Key {
    let mut h = Sha256::new();
    h.update(b"joinery-sha256-v1\0");
    id_fields(&mut h, abs, id);
    h.finalize().into()
}

/// Key of the cached member of a file entry.
pub(crate) fn member_key(abs: &Path, id: &FileId, name: &str, mode: u32) -> Key {
    let mut h = Sha256::new();
    h.update(FORMAT.as_bytes());
    h.update([0]);
    id_fields(&mut h, abs, id);
    h.update((name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    h.update(mode.to_le_bytes());
    h.finalize().into()
}

fn member_name(key: &Key) -> String {
    format!("m-{}.gz", hex(key))
}

fn sha_name(key: &Key) -> String {
    format!("s-{}.sha256", hex(key))
}

impl BundleCache {
    /// Open (creating it, mode 0700, if needed) the cache directory, normally
    /// `<data-dir>/bundle-cache`.
    pub fn new(dir: PathBuf) -> io::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("join bundle: cache directory {}: {e}", dir.display()),
                )
            })?;
        Ok(BundleCache {
            inner: Arc::new(Inner {
                dir,
                building: Mutex::new(HashSet::new()),
                temps: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// SHA-256 of a file's content. Files over [`CACHE_THRESHOLD`] use the cached
    /// sidecar when there is one (written by [`prepare`](Self::prepare), by the first
    /// bundle that built the file's member, or by an earlier call); otherwise the file is
    /// read once, streaming, and the sidecar written. Errors if the file changes while
    /// it is being read.
    #[cfg(test)]
    pub fn sha256_of(&self, path: &Path) -> io::Result<[u8; 32]> {
        self.sha256_checked(path, None)
    }

    /// The file's SHA-256 from its sidecar, or hashed once and the sidecar written; for a
    /// file that must still be `expect` when given.
    fn sha256_checked(&self, path: &Path, expect: Option<&Identity>) -> io::Result<[u8; 32]> {
        let abs = std::path::absolute(path)?;
        let id = stat_regular(&abs, expect)?;
        if id.size <= CACHE_THRESHOLD {
            return hash_file(&abs, &id);
        }
        let key = content_key(&abs, &id);
        if let Some(h) = self.read_sha(&key) {
            return Ok(h);
        }
        let h = hash_file(&abs, &id)?;
        self.write_sha(&key, &h);
        Ok(h)
    }

    /// The `SHA256SUMS` text for `entries`, one `<hex>  <name>\n` line each in the
    /// given order (the format `sha256sum -c` reads). File hashes come from
    /// [`sha256_checked`](Self::sha256_checked).
    ///
    /// Big files with no sidecar first get their members built, on every core: a build
    /// hashes the file as it compresses it and writes both, so the bundle that follows
    /// serves every member from the cache. (Hashing them here instead read every
    /// artifact on one core before the first byte, then again to compress it: a first
    /// bundle used under half of the machine's 2 cores, and ran at 1.5x `tar | pigz -1`.)
    pub fn sha256sums(&self, entries: &[Entry]) -> io::Result<String> {
        let bigs = bundle::big_files(entries)?;
        let unhashed: Vec<&bundle::BigFile> = bigs
            .iter()
            .filter(|b| self.read_sha(&b.content_key).is_none())
            .collect();
        // A failed build leaves its file to the hashing pass below, which reports errors.
        let _ = bundle::build_members(&unhashed, self, None);
        let mut out = String::new();
        for e in entries {
            super::entry::validate_name(&e.name)?;
            let h = match &e.source {
                Source::File { path, expect, .. } => self.sha256_checked(path, expect.as_ref())?,
                Source::Bytes { data, .. } => Sha256::digest(data).into(),
            };
            out.push_str(&hex(&h));
            out.push_str("  ");
            out.push_str(&e.name);
            out.push('\n');
        }
        Ok(out)
    }

    /// Build the cached member and hash sidecar of every file entry over
    /// [`CACHE_THRESHOLD`] that lacks them. Meant for a background thread at daemon
    /// start (and after artifacts change) so that bundles and [`sha256_checked`](Self::sha256_checked)
    /// never pay for a first build. Members another thread is building right now are
    /// skipped. Every entry is tried; the first error is returned. Once `stop` is set
    /// (SIGTERM) it gives up at the next step, leaving no temp file.
    pub fn prepare(&self, entries: &[Entry], stop: Option<&AtomicBool>) -> io::Result<()> {
        let mut first_err = None;
        let bigs = bundle::big_files(entries)?;
        let mut missing = Vec::new();
        for big in &bigs {
            if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                return Err(io::Error::other("join bundle: cache warm-up cancelled"));
            }
            if self.open_member(&big.key, big.isize()).is_some() {
                // Only the sidecar may be missing: a hashing pass is cheaper than a build.
                if self.read_sha(&big.content_key).is_none() {
                    match hash_file(&big.abs, &big.id) {
                        Ok(h) => self.write_sha(&big.content_key, &h),
                        Err(e) => {
                            first_err.get_or_insert(e);
                        }
                    }
                }
                continue;
            }
            missing.push(big);
        }
        // The missing members on every core.
        if let Err(e) = bundle::build_members(&missing, self, stop) {
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Delete cache files that belong to none of `keep` (typically the artifact entries
    /// of the current release), and temp files left by a crashed process. Files being
    /// written by this process and files not named like cache files are left alone.
    /// Returns how many files were removed. Entries that are not files over
    /// [`CACHE_THRESHOLD`] are ignored; an artifact that cannot be stat'ed is an error
    /// (rather than a silent purge of its cache).
    pub fn prune(&self, keep: &[Entry]) -> io::Result<usize> {
        let mut wanted: HashSet<String> = HashSet::new();
        for big in bundle::big_files(keep)? {
            wanted.insert(member_name(&big.key));
            wanted.insert(sha_name(&big.content_key));
        }
        let mut removed = 0;
        for dirent in fs::read_dir(self.dir())? {
            let dirent = dirent?;
            let name = dirent.file_name();
            let Some(name) = name.to_str() else { continue };
            let ours = (name.starts_with("m-") || name.starts_with("s-"))
                && (name.ends_with(".gz") || name.ends_with(".sha256") || name.contains(".tmp-"));
            if !ours || wanted.contains(name) {
                continue;
            }
            let path = dirent.path();
            if lock(&self.inner.temps).contains(&path) {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Open a finished member for serving, with its length, if it exists and looks whole:
    /// gzip magic at the start and, in the trailer, the uncompressed size we expect
    /// (mod 2^32). A file that fails the check is removed so it gets rebuilt.
    pub(crate) fn open_member(&self, key: &Key, isize: u32) -> Option<(File, u64)> {
        let path = self.dir().join(member_name(key));
        let file = File::open(&path).ok()?;
        let len = file.metadata().ok()?.len();
        let ok = len >= 18 && {
            let mut head = [0u8; 2];
            let mut tail = [0u8; 4];
            file.read_exact_at(&mut head, 0).is_ok()
                && file.read_exact_at(&mut tail, len - 4).is_ok()
                && head == [0x1f, 0x8b]
                && u32::from_le_bytes(tail) == isize
        };
        if !ok {
            crate::log::warn(
                "join bundle: discarding damaged cache file",
                &[("path", path.display().to_string().into())],
            );
            let _ = fs::remove_file(&path);
            return None;
        }
        Some((file, len))
    }

    /// Claim the right to build `key`'s member; `None` if this process is already
    /// building it.
    pub(crate) fn try_claim(&self, key: &Key) -> Option<BuildGuard> {
        if lock(&self.inner.building).insert(*key) {
            Some(BuildGuard {
                cache: self.clone(),
                key: *key,
            })
        } else {
            None
        }
    }

    /// A temp file that becomes `m-<key>.gz` on commit.
    pub(crate) fn member_temp(&self, key: &Key) -> io::Result<TempFile> {
        TempFile::create(self.clone(), &member_name(key))
    }

    pub(crate) fn read_sha(&self, key: &Key) -> Option<[u8; 32]> {
        let text = fs::read_to_string(self.dir().join(sha_name(key))).ok()?;
        unhex32(text.strip_suffix('\n')?)
    }

    /// Store a hash sidecar. Failures are logged, not returned: the cache is an
    /// optimisation and the hash is already known to the caller.
    pub(crate) fn write_sha(&self, key: &Key, h: &[u8; 32]) {
        let res = TempFile::create(self.clone(), &sha_name(key)).and_then(|mut t| {
            t.write_all(format!("{}\n", hex(h)).as_bytes())?;
            t.commit()
        });
        if let Err(e) = res {
            crate::log::warn(
                "join bundle: could not store artifact hash in the cache",
                &[("error", e.to_string().into())],
            );
        }
    }
}

/// Proof that this process is the one building a key; released on drop.
pub(crate) struct BuildGuard {
    cache: BundleCache,
    key: Key,
}

impl Drop for BuildGuard {
    fn drop(&mut self) {
        lock(&self.cache.inner.building).remove(&self.key);
    }
}

/// A `<name>.tmp-<random>` file in the cache directory, renamed to `<name>` by
/// [`commit`](Self::commit) and deleted if dropped before that.
pub(crate) struct TempFile {
    cache: BundleCache,
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl TempFile {
    fn create(cache: BundleCache, dest_name: &str) -> io::Result<Self> {
        let rnd = crate::random::hex(8).map_err(io::Error::other)?;
        let tmp = cache.dir().join(format!("{dest_name}.tmp-{rnd}"));
        let dest = cache.dir().join(dest_name);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        lock(&cache.inner.temps).insert(tmp.clone());
        Ok(TempFile {
            cache,
            file,
            tmp,
            dest,
            committed: false,
        })
    }

    pub fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    /// fsync, rename into place (atomically replacing any older copy: builds of the
    /// same key produce the same bytes), fsync the directory.
    pub fn commit(mut self) -> io::Result<()> {
        self.file.sync_all()?;
        fs::rename(&self.tmp, &self.dest)?;
        self.committed = true;
        if let Ok(d) = File::open(self.cache.dir()) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
        lock(&self.cache.inner.temps).remove(&self.tmp);
    }
}

/// Hash a planned file in one streaming pass, failing if it changes meanwhile.
fn hash_file(abs: &Path, id: &FileId) -> io::Result<[u8; 32]> {
    let mut f = CheckedFile::open(abs, id)?;
    let mut buf = vec![0u8; bundle::CHUNK];
    let mut h = Sha256::new();
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let k: [u8; 32] = Sha256::digest(b"x").into();
        assert_eq!(unhex32(&hex(&k)), Some(k));
        assert_eq!(unhex32("zz"), None);
        assert_eq!(unhex32(&"g".repeat(64)), None);
    }

    #[test]
    fn keys_change_with_every_input() {
        let id = FileId {
            size: 1,
            mtime_s: 2,
            mtime_ns: 3,
            ino: 4,
            dev: 5,
        };
        let p = Path::new("/a/b");
        let base = member_key(p, &id, "n", 0o644);
        let variants = [
            member_key(Path::new("/a/c"), &id, "n", 0o644),
            member_key(p, &FileId { size: 9, ..id }, "n", 0o644),
            member_key(p, &FileId { mtime_s: 9, ..id }, "n", 0o644),
            member_key(p, &FileId { mtime_ns: 9, ..id }, "n", 0o644),
            member_key(p, &FileId { ino: 9, ..id }, "n", 0o644),
            member_key(p, &FileId { dev: 9, ..id }, "n", 0o644),
            member_key(p, &id, "m", 0o644),
            member_key(p, &id, "n", 0o755),
        ];
        for v in variants {
            assert_ne!(v, base);
        }
        assert_ne!(
            content_key(p, &id),
            content_key(p, &FileId { size: 9, ..id })
        );
        assert_ne!(content_key(p, &id), base);
    }
}
