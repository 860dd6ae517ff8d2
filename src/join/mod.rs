//! The join bundle: the `.tar.gz` a joining node fetches from `GET /v1/join-bundle`
//! and unpacks with `curl ... | tar xzf -`. This module produces it as a stream; the
//! HTTP layer only pulls bytes from it.
//!
//! # Layout
//!
//! A gzip file may hold several members back to back, and every `gunzip`/`tar xz` reads
//! them as one stream. The bundle uses that:
//!
//! ```text
//! [member: tar entry of artifact 1]      <- m-<key>.gz from the cache, copied verbatim
//! [member: tar entry of artifact 2]      <- idem
//! [member: small entries ... + 2 zero blocks]  <- compressed fresh for this join
//! ```
//!
//! Each file over [`CACHE_THRESHOLD`](cache::CACHE_THRESHOLD) (1 MiB) is a member of its own holding exactly
//! its tar header(s), data and padding to 512 bytes: no end-of-archive blocks and no
//! record padding, so members can be concatenated in any number. Runs of smaller
//! entries (license, seed, join token, `SHA256SUMS`) share a member compressed for
//! each request; the last member ends with the two zero blocks. Entries keep the order
//! the caller gave. Headers are GNU format with owner root (0/0), the mode the caller
//! gave, and the file's mtime (in-memory entries: the time of the request), so a
//! member's bytes depend only on the artifact and its name and mode. Directories have
//! no entries of their own; tar creates them.
//!
//! Artifacts that are already gzip, zstd or xz, and any whose first 128 KiB do not
//! shrink by 5% at level 1 (random-looking data), are stored (deflate level 0); the
//! rest use level [`LEVEL`](bundle::LEVEL) (1). Measured on the 2-vCPU build machine (load 3-4 from
//! other builds, so ranges), single thread, 271 MB of x86-64 shared libraries:
//! level 1 compresses 105-150 MB/s to 46% of the size, level 6 45-55 MB/s to 36%; a
//! 1 Gbit/s link carries 119 MB/s, so level 6 would make the controller the
//! bottleneck. A whole first bundle build (read, hash, compress, write and fsync the
//! cache file) ran at 113 MB/s for those libraries and about 290 MB/s for a gzip
//! artifact or random data (stored); a cached bundle streams at 1.5-3.6 GB/s from
//! the page cache, in kernel time only.
//!
//! # Cache
//!
//! [`BundleCache`](cache::BundleCache) lives in `<data-dir>/bundle-cache`. A member is built the first time
//! a bundle (or [`BundleCache::prepare`](cache::BundleCache::prepare)) needs it: the compressed output goes to the
//! client and to `m-<key>.gz.tmp-<random>`, which is fsynced and renamed to
//! `m-<key>.gz` once the whole file was read and seen unchanged; a failed build or a
//! client that goes away deletes the temp file. Only renamed files are read, and their
//! gzip magic and trailer size are checked on open, so a torn file is never served.
//! The key covers the absolute path, size, mtime (ns), inode, device, entry name and
//! mode, so replacing an artifact simply makes a new key; [`BundleCache::prune`](cache::BundleCache::prune)
//! removes what the current artifacts no longer use.
//!
//! Cores: `SHA256SUMS` (computed before a bundle's first byte) builds the members of
//! artifacts that have no hash yet on a scoped pool of one thread per core, which hashes
//! them on the way, so a first bundle then serves them from the cache. Otherwise a
//! stream missing a member compresses its current member itself while helper threads
//! (one per other core, owned by the stream, stopped and joined when it is dropped)
//! build the next missing members into the cache; the stream waits for such a member
//! when it gets there and serves the file. `prepare` and `measure` build missing
//! members on a scoped pool of one thread per core.
//!
//! Concurrent builds: within the process the first stream to need a member builds and
//! caches it; others needing it meanwhile compress their own copy without caching it
//! (identical bytes; nobody waits on another client's download speed). Across
//! processes each build has its own temp file and the last rename wins, which is
//! harmless since the bytes are identical.
//!
//! # Hashes
//!
//! The first build of a member also hashes the artifact and stores `s-<key>.sha256`.
//! [`BundleCache::sha256_checked`](cache::BundleCache::sha256_checked) reads that, or hashes the file in one streaming pass
//! and stores it. The daemon should call [`BundleCache::prepare`](cache::BundleCache::prepare) on its artifacts from a
//! background thread at start-up (and [`BundleCache::prune`](cache::BundleCache::prune) after it), so every bundle
//! is served from cache and `SHA256SUMS` ([`BundleCache::sha256sums`](cache::BundleCache::sha256sums)) costs no reads.
//!
//! # Invariants
//!
//! - Memory per stream is bounded by a few 64 KiB buffers (`BundleStream::buffered_bytes`,
//!   which a test checks),
//!   plus, while members are missing from the cache, one compressor per other core in
//!   the helper threads that build the next members ahead of the stream.
//! - Members are built on every core (by `prepare`, `measure` and those helpers) but
//!   each member's bytes depend only on its artifact, so a bundle's bytes do not depend
//!   on how it was built, and a resumed download stays byte-identical.
//! - A file that shrinks, grows or is modified while read fails the stream; after an
//!   error every `read` fails, so a corrupt archive never ends cleanly.
//! - Entry names are validated ([`validate_name`](entry::validate_name)) before any byte is produced.

pub mod assemble;
mod bundle;
mod cache;
pub mod command;
mod entry;
pub mod inputs;
pub mod k0s;
pub mod seed;
mod service;
#[cfg(test)]
mod tests;
pub mod ticket;
pub mod watch;

pub use bundle::stream_at;
pub use service::JoinService;
