//! The bundle as a pull-driven `Read`: a small state machine that serves cached gzip
//! members straight from disk and compresses everything else on the fly, one chunk
//! per step, so memory stays at a few hundred KiB whatever the artifacts weigh.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};

use super::cache::{
    content_key, member_key, BuildGuard, BundleCache, Key, TempFile, CACHE_THRESHOLD,
};
use super::entry::{
    header_bytes, padding, stat_regular, validate_mode, validate_name, CheckedFile, Entry, FileId,
    Identity, Source,
};

/// Bytes fed to the compressor per step, and the size of the file read buffer.
pub(crate) const CHUNK: usize = 64 * 1024;

/// Deflate level for content that compresses. Level 1 runs three to four times faster
/// than 6 for about a quarter more output (figures in the module docs).
pub const LEVEL: u32 = 1;

/// Zero bytes for padding and the end-of-archive blocks.
static ZEROS: [u8; 1024] = [0; 1024];

/// gzip, zstd and xz magic numbers: such artifacts are stored (deflate level 0)
/// rather than compressed again for nothing.
pub(crate) fn is_compressed(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
}

/// How much of an artifact is trial-compressed to choose its level.
const SAMPLE: usize = 128 * 1024;

/// Whether deflate is worth running on a file: not if it starts with a known
/// compressed format's magic, nor if its first [`SAMPLE`] bytes shrink by less than 5%
/// at [`LEVEL`] (random-looking data: deflate level 1 would run at a third of the speed
/// of a stored copy and make it about 5% larger). A function of the content only, so a
/// member's bytes stay the same for the same file.
fn worth_compressing(file: &File) -> io::Result<bool> {
    let mut sample = vec![0u8; SAMPLE];
    let mut n = 0;
    while n < SAMPLE {
        let k = file.read_at(&mut sample[n..], n as u64)?;
        if k == 0 {
            break;
        }
        n += k;
    }
    let sample = &sample[..n];
    if is_compressed(sample) {
        return Ok(false);
    }
    let mut c = flate2::Compress::new(Compression::new(LEVEL), false);
    let mut out = Vec::with_capacity(n + n / 8 + 64);
    c.compress_vec(sample, &mut out, flate2::FlushCompress::Finish)
        .map_err(io::Error::other)?;
    Ok((out.len() as u64) * 100 < (n as u64) * 95)
}

/// A file entry large enough to get a cached member of its own.
#[derive(Clone)]
pub(crate) struct BigFile {
    pub abs: PathBuf,
    pub id: FileId,
    pub header: Vec<u8>,
    pub key: Key,
    pub content_key: Key,
}

impl BigFile {
    /// The member's uncompressed length mod 2^32, as the gzip trailer records it.
    pub fn isize(&self) -> u32 {
        let len = self.header.len() as u64 + self.id.size + padding(self.id.size) as u64;
        len as u32
    }
}

/// An entry compressed fresh into each bundle.
#[derive(Clone)]
enum Small {
    File {
        abs: PathBuf,
        id: FileId,
        header: Vec<u8>,
    },
    Bytes {
        header: Vec<u8>,
        data: Vec<u8>,
    },
}

/// One gzip member of the bundle.
#[derive(Clone)]
enum Part {
    Big(BigFile),
    /// Consecutive small entries; `end` marks the last member, which carries the two
    /// zero blocks that end the archive.
    Fresh {
        items: Vec<Small>,
        end: bool,
    },
}

/// Validate a file entry, stat it, and build its header.
fn plan_file(
    name: &str,
    path: &std::path::Path,
    mode: u32,
    expect: Option<&Identity>,
) -> io::Result<(PathBuf, FileId, Vec<u8>)> {
    let abs = std::path::absolute(path)?;
    let id = stat_regular(&abs, expect)?;
    let header = header_bytes(name, id.size, mode, id.header_mtime())?;
    Ok((abs, id, header))
}

fn check_entry(e: &Entry) -> io::Result<()> {
    validate_name(&e.name)?;
    validate_mode(&e.name, e.mode())
}

/// The big file entries among `entries` (for `prepare` and `prune`).
pub(crate) fn big_files(entries: &[Entry]) -> io::Result<Vec<BigFile>> {
    let mut out = Vec::new();
    for e in entries {
        check_entry(e)?;
        if let Source::File { path, mode, expect } = &e.source {
            let (abs, id, header) = plan_file(&e.name, path, *mode, expect.as_ref())?;
            if id.size > CACHE_THRESHOLD {
                out.push(BigFile {
                    key: member_key(&abs, &id, &e.name, *mode),
                    content_key: content_key(&abs, &id),
                    abs,
                    id,
                    header,
                });
            }
        }
    }
    Ok(out)
}

/// [`stream_at`] with in-memory entries dated now.
#[cfg(test)]
pub fn stream(entries: Vec<Entry>, cache: &BundleCache) -> io::Result<BundleStream> {
    stream_at(entries, cache, crate::time::now().max(0) as u64)
}

/// Start a bundle of `entries`, in the given order. Names, modes and files are all
/// checked here, so a bad entry or a missing artifact is an error before any byte is
/// sent; a file that changes afterwards makes a later `read` fail instead (never a
/// silently corrupt archive).
///
/// The result reads as a `.tar.gz` made of concatenated gzip members: one per file
/// over [`CACHE_THRESHOLD`] (from the cache, or built and cached on the way), one per
/// run of smaller entries, and a last one that ends the archive. In-memory entries are
/// dated `now` (Unix seconds): the same entries and time give the same bytes, which is
/// what lets a download resume.
pub fn stream_at(entries: Vec<Entry>, cache: &BundleCache, now: u64) -> io::Result<BundleStream> {
    let mut seen = std::collections::HashSet::new();
    let mut parts = VecDeque::new();
    let mut pending = Vec::new();
    for e in entries {
        check_entry(&e)?;
        if !seen.insert(e.name.clone()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("join bundle: entry name {:?} appears twice", e.name),
            ));
        }
        match e.source {
            Source::File { path, mode, expect } => {
                let (abs, id, header) = plan_file(&e.name, &path, mode, expect.as_ref())?;
                if id.size > CACHE_THRESHOLD {
                    if !pending.is_empty() {
                        parts.push_back(Part::Fresh {
                            items: std::mem::take(&mut pending),
                            end: false,
                        });
                    }
                    parts.push_back(Part::Big(BigFile {
                        key: member_key(&abs, &id, &e.name, mode),
                        content_key: content_key(&abs, &id),
                        abs,
                        id,
                        header,
                    }));
                } else {
                    pending.push(Small::File { abs, id, header });
                }
            }
            Source::Bytes { data, mode } => {
                let header = header_bytes(&e.name, data.len() as u64, mode, now)?;
                pending.push(Small::Bytes { header, data });
            }
        }
    }
    parts.push_back(Part::Fresh {
        items: pending,
        end: true,
    });
    Ok(BundleStream {
        parts,
        lens: None,
        state: State::Idle,
        pos: 0,
        buf: vec![0u8; CHUNK].into_boxed_slice(),
        cache: cache.clone(),
        ahead: Vec::new(),
        stop: Arc::new(AtomicBool::new(false)),
    })
}

/// Build `big`'s cache member (and hash sidecar) without a client, for `prepare`.
/// Does nothing if this process is already building it. Gives up (deleting its temp
/// file) at the next step once `stop` is set.
pub(crate) fn build_member_to_sink(
    big: &BigFile,
    cache: &BundleCache,
    stop: Option<&AtomicBool>,
) -> io::Result<()> {
    let Some(guard) = cache.try_claim(&big.key) else {
        return Ok(());
    };
    let tee = cache.member_temp(&big.key)?;
    let mut d = Deflater::big(big.clone(), cache, Some((guard, tee)))?;
    let mut buf = vec![0u8; CHUNK];
    while !d.finished {
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            return Err(io::Error::other("join bundle: member build cancelled"));
        }
        d.step(&mut buf)?;
        if !d.finished {
            // Part of the member is in its temp file, none of it renamed into place.
            crate::pause::point("cache-member-half-written");
        }
    }
    match d.cache_error.take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Threads compressing members at once: one per core. Members are independent gzip
/// members whose bytes depend only on their artifact, so building them on several
/// threads changes no byte of any bundle.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Build every member of `bigs` missing from the cache, one scoped thread per core
/// each taking the next member, so memory is one compressor per core whatever the
/// count. Returns the first error (the other members are still built); once `stop` is
/// set, the members being built are abandoned and no more are started.
pub(crate) fn build_members(
    bigs: &[&BigFile],
    cache: &BundleCache,
    stop: Option<&AtomicBool>,
) -> io::Result<()> {
    let next = AtomicUsize::new(0);
    let first_err = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..cores().min(bigs.len()) {
            s.spawn(|| {
                while let Some(big) = bigs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if cache.open_member(&big.key, big.isize()).is_some() {
                        continue;
                    }
                    if let Err(e) = build_member_to_sink(big, cache, stop) {
                        let mut first = first_err.lock().unwrap_or_else(|p| p.into_inner());
                        first.get_or_insert(e);
                    }
                }
            });
        }
    });
    let first = first_err.into_inner().unwrap_or_else(|p| p.into_inner());
    first.map_or(Ok(()), Err)
}

/// A `.tar.gz` being produced; see [`stream_at`]. Dropping it mid-way deletes any cache
/// file it was writing. After an error every further `read` repeats the error, so a
/// consumer can never mistake a failed bundle for a complete one.
pub struct BundleStream {
    parts: VecDeque<Part>,
    /// Each remaining part's length, once [`BundleStream::measure`] ran.
    lens: Option<VecDeque<u64>>,
    state: State,
    /// Bytes of the current deflate output already handed out.
    pos: usize,
    /// File read buffer, reused for every file.
    buf: Box<[u8]>,
    cache: BundleCache,
    /// Members of later parts being built into the cache by helper threads (at most
    /// one per core but this one) while this stream serves or compresses the current
    /// part; a part whose member is being built waits for it and serves the file.
    ahead: Vec<(Key, JoinHandle<()>)>,
    /// Set on drop: the helpers give up at their next step.
    stop: Arc<AtomicBool>,
}

impl Drop for BundleStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for (_, h) in self.ahead.drain(..) {
            let _ = h.join();
        }
    }
}

enum State {
    Idle,
    /// Copying a finished cache member.
    Serve {
        file: File,
        remaining: u64,
    },
    Deflate(Box<Deflater>),
    Done,
    Failed(io::ErrorKind, String),
}

impl BundleStream {
    /// Bytes held in this stream's own buffers right now (the compressor's fixed
    /// internal state aside): at most a few 64 KiB buffers whatever the bundle's
    /// size.
    #[cfg(test)]
    pub fn buffered_bytes(&self) -> usize {
        let out = match &self.state {
            State::Deflate(d) => d.enc.get_ref().capacity(),
            _ => 0,
        };
        self.buf.len() + out
    }

    /// The bundle's length in bytes, before any is read. Members missing from the
    /// cache are built into it first (so this can take as long as compressing them);
    /// fresh members are compressed once to be counted (they are small).
    pub fn measure(&mut self) -> io::Result<u64> {
        // Missing members on every core first; a failure is reported by part_len below.
        let bigs: Vec<&BigFile> = self
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Big(b) => Some(b),
                Part::Fresh { .. } => None,
            })
            .collect();
        let _ = build_members(&bigs, &self.cache, None);
        let lens = self
            .parts
            .iter()
            .map(|p| part_len(p, &self.cache))
            .collect::<io::Result<VecDeque<u64>>>()?;
        let total = lens.iter().sum();
        self.lens = Some(lens);
        Ok(total)
    }

    /// Skips the first `n` bytes (for a `Range` request): whole members without
    /// reading them, a cached member by seeking, a fresh one by compressing and
    /// discarding. Call [`measure`](Self::measure) first.
    pub fn skip(&mut self, mut n: u64) -> io::Result<()> {
        use std::io::{Seek, SeekFrom};
        let Some(lens) = self.lens.as_mut() else {
            return Err(io::Error::other("join bundle: skip before measure"));
        };
        while let Some(&len) = lens.front() {
            if n < len {
                break;
            }
            n -= len;
            lens.pop_front();
            self.parts.pop_front();
        }
        if n == 0 {
            return Ok(());
        }
        let Some(part) = self.parts.pop_front() else {
            return Err(io::Error::other("join bundle: skip beyond the end"));
        };
        lens.pop_front();
        self.pos = 0;
        self.state = self.start(part)?;
        if let State::Serve { file, remaining } = &mut self.state {
            file.seek(SeekFrom::Start(n))?;
            *remaining -= n;
            return Ok(());
        }
        let mut scratch = vec![0u8; CHUNK];
        while n > 0 {
            let want = scratch.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            let got = self.read(&mut scratch[..want])?;
            if got == 0 {
                return Err(io::Error::other("join bundle: skip beyond the end"));
            }
            n -= got as u64;
        }
        Ok(())
    }

    /// Start helpers building the members of the next parts that are not cached, up
    /// to one per core but this stream's own.
    fn build_ahead(&mut self) {
        let running = self.ahead.iter().filter(|(_, h)| !h.is_finished()).count();
        let mut room = cores().saturating_sub(1).saturating_sub(running);
        for part in &self.parts {
            if room == 0 {
                break;
            }
            let Part::Big(big) = part else { continue };
            if self.ahead.iter().any(|(k, _)| *k == big.key)
                || self.cache.open_member(&big.key, big.isize()).is_some()
            {
                continue;
            }
            let key = big.key;
            let (big, cache, stop) = (big.clone(), self.cache.clone(), self.stop.clone());
            let spawned = std::thread::Builder::new()
                .name("bundle-member".into())
                .spawn(move || {
                    // A failure leaves the member uncached: the stream compresses it
                    // itself when it gets there, and reports any error then.
                    let _ = build_member_to_sink(&big, &cache, Some(&stop));
                });
            if let Ok(h) = spawned {
                self.ahead.push((key, h));
                room -= 1;
            }
        }
    }

    fn start(&mut self, part: Part) -> io::Result<State> {
        Ok(match part {
            Part::Big(big) => {
                if let Some(i) = self.ahead.iter().position(|(k, _)| *k == big.key) {
                    let _ = self.ahead.swap_remove(i).1.join();
                }
                self.build_ahead();
                if let Some((file, len)) = self.cache.open_member(&big.key, big.isize()) {
                    return Ok(State::Serve {
                        file,
                        remaining: len,
                    });
                }
                // Single flight within the process: the first stream to need a member
                // writes it to the cache; one that finds it being built compresses its
                // own copy without caching it (same bytes, no waiting on another
                // client's pace).
                let tee = match self.cache.try_claim(&big.key) {
                    Some(guard) => match self.cache.member_temp(&big.key) {
                        Ok(t) => Some((guard, t)),
                        Err(e) => {
                            warn_cache(&e);
                            None
                        }
                    },
                    None => None,
                };
                State::Deflate(Box::new(Deflater::big(big, &self.cache, tee)?))
            }
            Part::Fresh { items, end } => {
                State::Deflate(Box::new(Deflater::fresh(items, end, &self.cache)))
            }
        })
    }

    fn fill(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            match &mut self.state {
                State::Done => return Ok(0),
                State::Failed(kind, msg) => return Err(io::Error::new(*kind, msg.clone())),
                State::Serve { file, remaining } => {
                    if *remaining == 0 {
                        self.state = State::Idle;
                        continue;
                    }
                    let want = out
                        .len()
                        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    let n = file.read(&mut out[..want])?;
                    if n == 0 {
                        return Err(io::Error::other("join bundle: cache file ended early"));
                    }
                    *remaining -= n as u64;
                    return Ok(n);
                }
                State::Deflate(d) => {
                    let pending = d.enc.get_ref().get(self.pos..).unwrap_or_default();
                    if !pending.is_empty() {
                        let n = pending.len().min(out.len());
                        out[..n].copy_from_slice(&pending[..n]);
                        self.pos += n;
                        return Ok(n);
                    }
                    if d.finished {
                        self.state = State::Idle;
                        continue;
                    }
                    self.pos = 0;
                    d.step(&mut self.buf)?;
                }
                State::Idle => {
                    self.pos = 0;
                    self.state = match self.parts.pop_front() {
                        None => State::Done,
                        Some(p) => self.start(p)?,
                    };
                }
            }
        }
    }
}

impl Read for BundleStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        self.fill(out).inspect_err(|e| {
            // Dropping the old state deletes any half-written cache file.
            self.state = State::Failed(e.kind(), e.to_string());
            self.parts.clear();
        })
    }
}

/// One member's length: a cached member's file size (built into the cache first if
/// needed), else the size of its output compressed and thrown away.
fn part_len(part: &Part, cache: &BundleCache) -> io::Result<u64> {
    let count = |mut d: Deflater| -> io::Result<u64> {
        let mut buf = vec![0u8; CHUNK];
        let mut n = 0;
        while !d.finished {
            d.step(&mut buf)?;
            n += d.enc.get_ref().len() as u64;
        }
        Ok(n)
    };
    match part {
        Part::Big(big) => {
            if let Some((_, len)) = cache.open_member(&big.key, big.isize()) {
                return Ok(len);
            }
            build_member_to_sink(big, cache, None)?;
            if let Some((_, len)) = cache.open_member(&big.key, big.isize()) {
                return Ok(len);
            }
            // Being built by another stream right now: count a copy.
            count(Deflater::big(big.clone(), cache, None)?)
        }
        Part::Fresh { items, end } => count(Deflater::fresh(items.clone(), *end, cache)),
    }
}

fn warn_cache(e: &io::Error) {
    crate::log::warn(
        "join bundle: cache write failed; serving without caching",
        &[("error", e.to_string().into())],
    );
}

enum Piece {
    Bytes { data: Vec<u8>, off: usize },
    Zeros(usize),
    File(FileSrc),
}

enum FileSrc {
    Pending(PathBuf, FileId),
    Open(CheckedFile),
}

/// Compresses a queue of pieces into one gzip member, at most [`CHUNK`] input bytes per
/// step, optionally copying the output to a cache temp file.
struct Deflater {
    /// The output of the current step accumulates in the encoder's Vec.
    enc: GzEncoder<Vec<u8>>,
    pieces: VecDeque<Piece>,
    /// Content hash of the file, with the key of its sidecar (cache builds only).
    hash: Option<(Sha256, Key)>,
    tee: Option<(BuildGuard, TempFile)>,
    /// Why caching was abandoned, if it was (the member itself is still fine).
    cache_error: Option<io::Error>,
    cache: BundleCache,
    finished: bool,
}

impl Deflater {
    fn new(level: u32, pieces: VecDeque<Piece>, cache: &BundleCache) -> Self {
        Deflater {
            enc: GzEncoder::new(
                Vec::with_capacity(CHUNK + CHUNK / 2),
                Compression::new(level),
            ),
            pieces,
            hash: None,
            tee: None,
            cache_error: None,
            cache: cache.clone(),
            finished: false,
        }
    }

    fn big(
        big: BigFile,
        cache: &BundleCache,
        tee: Option<(BuildGuard, TempFile)>,
    ) -> io::Result<Self> {
        let f = CheckedFile::open(&big.abs, &big.id)?;
        let level = if worth_compressing(f.file())? {
            LEVEL
        } else {
            0
        };
        let pad = padding(big.id.size);
        let pieces = VecDeque::from([
            Piece::Bytes {
                data: big.header,
                off: 0,
            },
            Piece::File(FileSrc::Open(f)),
            Piece::Zeros(pad),
        ]);
        let mut d = Deflater::new(level, pieces, cache);
        if tee.is_some() {
            d.hash = Some((Sha256::new(), big.content_key));
            d.tee = tee;
        }
        Ok(d)
    }

    fn fresh(items: Vec<Small>, end: bool, cache: &BundleCache) -> Self {
        let mut pieces = VecDeque::with_capacity(items.len() * 3 + 1);
        for item in items {
            match item {
                Small::File { abs, id, header } => {
                    pieces.push_back(Piece::Bytes {
                        data: header,
                        off: 0,
                    });
                    pieces.push_back(Piece::File(FileSrc::Pending(abs, id)));
                    pieces.push_back(Piece::Zeros(padding(id.size)));
                }
                Small::Bytes { header, data } => {
                    let pad = padding(data.len() as u64);
                    pieces.push_back(Piece::Bytes {
                        data: header,
                        off: 0,
                    });
                    pieces.push_back(Piece::Bytes { data, off: 0 });
                    pieces.push_back(Piece::Zeros(pad));
                }
            }
        }
        if end {
            pieces.push_back(Piece::Zeros(1024));
        }
        Deflater::new(LEVEL, pieces, cache)
    }

    /// Feed up to [`CHUNK`] bytes (finishing the member when the pieces run out),
    /// replacing the output buffer's content with what the encoder produced.
    fn step(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.enc.get_mut().clear();
        let mut fed = 0;
        while fed < CHUNK {
            let Some(piece) = self.pieces.front_mut() else {
                self.enc.try_finish()?;
                self.finished = true;
                break;
            };
            match piece {
                Piece::Bytes { data, off } => {
                    let end = (*off + CHUNK - fed).min(data.len());
                    self.enc.write_all(&data[*off..end])?;
                    fed += end - *off;
                    *off = end;
                    if *off == data.len() {
                        self.pieces.pop_front();
                    }
                }
                Piece::Zeros(n) => {
                    self.enc.write_all(&ZEROS[..*n])?;
                    fed += *n;
                    self.pieces.pop_front();
                }
                Piece::File(src) => {
                    if let FileSrc::Pending(path, id) = src {
                        *src = FileSrc::Open(CheckedFile::open(path, id)?);
                    }
                    let FileSrc::Open(f) = src else {
                        unreachable!("opened just above")
                    };
                    let want = (CHUNK - fed).min(buf.len());
                    let n = f.read(&mut buf[..want])?;
                    if n == 0 {
                        self.pieces.pop_front();
                        continue;
                    }
                    if let Some((h, _)) = &mut self.hash {
                        h.update(&buf[..n]);
                    }
                    self.enc.write_all(&buf[..n])?;
                    fed += n;
                }
            }
        }
        if let Some((_, t)) = &mut self.tee {
            if let Err(e) = t.write_all(self.enc.get_ref()) {
                self.abandon_cache(e);
            }
        }
        if self.finished {
            self.commit_cache();
        }
        Ok(())
    }

    fn abandon_cache(&mut self, e: io::Error) {
        warn_cache(&e);
        self.tee = None;
        self.hash = None;
        self.cache_error = Some(e);
    }

    /// The member is complete and the file was verified unchanged: publish the hash
    /// sidecar, then the member.
    fn commit_cache(&mut self) {
        let Some((guard, tee)) = self.tee.take() else {
            return;
        };
        if let Some((h, key)) = self.hash.take() {
            self.cache.write_sha(&key, &h.finalize().into());
        }
        if let Err(e) = tee.commit() {
            self.abandon_cache(e);
        }
        drop(guard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_magic() {
        assert!(is_compressed(&[0x1f, 0x8b, 8, 0]));
        assert!(is_compressed(&[0x28, 0xb5, 0x2f, 0xfd, 0]));
        assert!(is_compressed(&[0xfd, b'7', b'z', b'X', b'Z', 0]));
        assert!(!is_compressed(b"\x7fELF\x02\x01"));
        assert!(!is_compressed(&[0x1f]));
        assert!(!is_compressed(&[]));
    }
}
