//! Behaviour tests of the join bundle: real extractors (GNU tar, busybox tar, Python's
//! tarfile) on the bytes we stream, the cache across bundles, concurrent builds,
//! clients that go away and files that change under us.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};

use super::bundle::{big_files, stream, BundleStream, CHUNK};
use super::cache::{BundleCache, CACHE_THRESHOLD};
use super::entry::Entry;
use super::*;

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "joinery-bundle-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Deterministic incompressible bytes (xorshift).
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn gzipped(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn write_file(path: &Path, data: &[u8], mode: u32) {
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// name -> (content, mode) of what a bundle should extract to.
type Expected = BTreeMap<String, (Vec<u8>, u32)>;

/// Source files in `src` and the entries and expected result built from them: a 5 MB
/// random artifact, a 3 MB gzip artifact, a small executable, and in-memory files
/// (one with a name past the 100-byte ustar limit, one empty).
fn fixture(src: &Path) -> (Vec<Entry>, Expected) {
    let app = random_bytes(5_000_000, 1);
    let images = gzipped(&random_bytes(3_000_000, 2));
    assert!(images.len() > 2_900_000 && images.starts_with(&[0x1f, 0x8b]));
    let script = b"#!/bin/sh\necho joined\n".to_vec();
    write_file(&src.join("app.bin"), &app, 0o600);
    write_file(&src.join("images.tar.gz"), &images, 0o600);
    write_file(&src.join("join.sh"), &script, 0o600);
    let long_name = format!("{}/cluster-seed.json", "nested".repeat(20));
    let mut expected = Expected::new();
    expected.insert("bin/app".into(), (app, 0o755));
    expected.insert("images/images.tar.gz".into(), (images, 0o644));
    expected.insert("join.sh".into(), (script, 0o755));
    expected.insert("license.yaml".into(), (b"license: x\n".to_vec(), 0o600));
    expected.insert(long_name.clone(), (b"{\"seed\":1}\n".to_vec(), 0o644));
    expected.insert("empty".into(), (Vec::new(), 0o644));
    let entries = vec![
        Entry::file("bin/app", src.join("app.bin"), 0o755),
        Entry::file("images/images.tar.gz", src.join("images.tar.gz"), 0o644),
        Entry::file("join.sh", src.join("join.sh"), 0o755),
        Entry::bytes("license.yaml", b"license: x\n".to_vec(), 0o600),
        Entry::bytes(long_name, b"{\"seed\":1}\n".to_vec(), 0o644),
        Entry::bytes("empty", Vec::new(), 0o644),
    ];
    (entries, expected)
}

/// Read a whole bundle with a large caller buffer, checking at every step that the
/// stream's own buffers stay small.
fn read_all(mut s: BundleStream) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = s.read(&mut buf)?;
        assert!(
            s.buffered_bytes() <= 4 * CHUNK,
            "stream buffers grew to {}",
            s.buffered_bytes()
        );
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

fn bundle(entries: Vec<Entry>, cache: &BundleCache) -> Vec<u8> {
    read_all(stream(entries, cache).unwrap()).unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Tool {
    GnuTar,
    Busybox,
    Python,
}

fn extract(tool: Tool, tgz: &[u8]) -> TempDir {
    let dir = TempDir::new();
    let d = dir.path().to_str().unwrap();
    let mut cmd = match tool {
        Tool::GnuTar => {
            let mut c = Command::new("tar");
            c.args(["xzf", "-", "-C", d]);
            c
        }
        Tool::Busybox => {
            let mut c = Command::new("busybox");
            c.args(["tar", "xzf", "-", "-C", d]);
            c
        }
        Tool::Python => {
            let mut c = Command::new("python3");
            c.args([
                "-c",
                "import io,sys,tarfile\n\
                 t = tarfile.open(fileobj=io.BytesIO(sys.stdin.buffer.read()), mode='r:gz')\n\
                 t.extractall(sys.argv[1], filter='data')",
                d,
            ]);
            c
        }
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{tool:?} not runnable ({e}); busybox: `apt-get install -y busybox`")
        });
    let mut stdin = child.stdin.take().unwrap();
    let data = tgz.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{tool:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn files_under(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            files_under(root, &e.path(), out);
        } else {
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            out.push(rel);
        }
    }
}

/// The extracted tree holds exactly the expected files, byte for byte, with their modes.
fn check_tree(tool: Tool, root: &Path, expected: &Expected) {
    let mut found = Vec::new();
    files_under(root, root, &mut found);
    found.sort();
    let names: Vec<String> = expected.keys().cloned().collect();
    assert_eq!(found, names, "{tool:?}: extracted file list");
    for (name, (content, mode)) in expected {
        let p = root.join(name);
        assert!(
            fs::read(&p).unwrap() == *content,
            "{tool:?}: content of {name}"
        );
        let got = fs::metadata(&p).unwrap().mode() & 0o7777;
        assert_eq!(got, *mode, "{tool:?}: mode of {name}");
    }
}

fn extract_everywhere(tgz: &[u8], expected: &Expected) {
    for tool in [Tool::GnuTar, Tool::Busybox, Tool::Python] {
        let dir = extract(tool, tgz);
        check_tree(tool, dir.path(), expected);
    }
}

fn cache_files(cache: &BundleCache, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(cache.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(prefix) || (prefix == "tmp" && n.contains(".tmp-")))
        .collect();
    v.sort();
    v
}

fn member_path(cache: &BundleCache, entry: &Entry) -> PathBuf {
    let big = big_files(std::slice::from_ref(entry)).unwrap();
    cache
        .dir()
        .join(format!("m-{}.gz", super::cache::hex(&big[0].key)))
}

#[test]
fn bundle_extracts_with_gnu_busybox_and_python_then_comes_from_cache() {
    let src = TempDir::new();
    let cdir = TempDir::new();
    let cache = BundleCache::new(cdir.path().join("bundle-cache")).unwrap();
    let (entries, expected) = fixture(src.path());

    let first = bundle(entries.clone(), &cache);
    extract_everywhere(&first, &expected);

    // The two artifacts became cached members, and the bundle starts with exactly
    // their bytes, in entry order.
    assert_eq!(cache_files(&cache, "m-").len(), 2);
    assert!(cache_files(&cache, "tmp").is_empty());
    let m1 = fs::read(member_path(&cache, &entries[0])).unwrap();
    let m2 = fs::read(member_path(&cache, &entries[1])).unwrap();
    assert!(first.starts_with(&[&m1[..], &m2[..]].concat()));
    // The gzip artifact was stored, not compressed again: its member is barely larger.
    let images_len = expected["images/images.tar.gz"].0.len();
    assert!(
        m2.len() < images_len + images_len / 100,
        "{} vs {images_len}",
        m2.len()
    );
    // Random data fails the trial compression and is stored as well, rather than
    // growing by level 1's ~5%.
    assert!(m1.len() < 5_000_000 + 5_000_000 / 100, "{}", m1.len());

    // Second bundle: served from the cache (same files, not rebuilt), byte-identical
    // in the cached members, and extracts the same.
    let ino_before = fs::metadata(member_path(&cache, &entries[0]))
        .unwrap()
        .ino();
    let second = bundle(entries.clone(), &cache);
    let ino_after = fs::metadata(member_path(&cache, &entries[0]))
        .unwrap()
        .ino();
    assert_eq!(
        ino_before, ino_after,
        "member was rebuilt instead of reused"
    );
    let cached_len = m1.len() + m2.len();
    assert_eq!(first[..cached_len], second[..cached_len]);
    extract_everywhere(&second, &expected);
}

#[test]
fn sha256sums_verify_with_sha256sum_and_use_the_cache() {
    let src = TempDir::new();
    let cdir = TempDir::new();
    let cache = BundleCache::new(cdir.path().to_path_buf()).unwrap();
    let big = random_bytes(1_500_000, 3);
    write_file(&src.path().join("big"), &big, 0o644);
    let entries = vec![
        Entry::file("bin/big", src.path().join("big"), 0o755),
        Entry::bytes("license.yaml", b"l: 1\n".to_vec(), 0o644),
    ];

    // Uncached: one read pass, then a sidecar.
    let want: [u8; 32] = Sha256::digest(&big).into();
    assert_eq!(cache.sha256_of(&src.path().join("big")).unwrap(), want);
    assert_eq!(cache_files(&cache, "s-").len(), 1);
    assert!(cache_files(&cache, "m-").is_empty());

    let sums = cache.sha256sums(&entries).unwrap();
    let mut all = entries.clone();
    all.push(Entry::bytes("SHA256SUMS", sums.clone(), 0o644));
    let tgz = bundle(all, &cache);
    let dir = extract(Tool::GnuTar, &tgz);
    let out = Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sha256sum -c: {}{}\n{sums}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A sidecar is what sha256_of trusts: proof that it is read, not recomputed.
    let sidecar = cdir.path().join(&cache_files(&cache, "s-")[0]);
    fs::write(&sidecar, format!("{}\n", "ab".repeat(32))).unwrap();
    assert_eq!(
        cache.sha256_of(&src.path().join("big")).unwrap(),
        [0xab; 32]
    );
}

#[test]
fn prepare_builds_members_and_hashes_that_bundles_then_reuse() {
    let src = TempDir::new();
    let cdir = TempDir::new();
    let cache = BundleCache::new(cdir.path().to_path_buf()).unwrap();
    let data: Vec<u8> = (0..100_000u32)
        .flat_map(|i| format!("line {i} of a compressible file\n").into_bytes())
        .collect();
    assert!(data.len() as u64 > CACHE_THRESHOLD);
    write_file(&src.path().join("a"), &data, 0o644);
    let entries = vec![
        Entry::file("a", src.path().join("a"), 0o644),
        Entry::bytes("small", b"s".to_vec(), 0o644),
    ];
    cache.prepare(&entries, None).unwrap();
    assert_eq!(cache_files(&cache, "m-").len(), 1);
    assert_eq!(cache_files(&cache, "s-").len(), 1);
    let want: [u8; 32] = Sha256::digest(&data).into();
    assert_eq!(cache.sha256_of(&src.path().join("a")).unwrap(), want);

    let member = fs::read(member_path(&cache, &entries[0])).unwrap();
    assert!(member.len() < data.len() / 4, "text should be compressed");
    let ino = fs::metadata(member_path(&cache, &entries[0]))
        .unwrap()
        .ino();

    // A lost sidecar is restored by hashing alone; the member is left as it is.
    let sidecar = cdir.path().join(&cache_files(&cache, "s-")[0]);
    fs::remove_file(&sidecar).unwrap();
    cache.prepare(&entries, None).unwrap();
    assert!(sidecar.exists());
    assert_eq!(
        fs::metadata(member_path(&cache, &entries[0]))
            .unwrap()
            .ino(),
        ino
    );

    let tgz = bundle(entries.clone(), &cache);
    assert!(tgz.starts_with(&member));
    assert_eq!(
        fs::metadata(member_path(&cache, &entries[0]))
            .unwrap()
            .ino(),
        ino
    );
    let mut expected = Expected::new();
    expected.insert("a".into(), (data, 0o644));
    expected.insert("small".into(), (b"s".to_vec(), 0o644));
    check_tree(Tool::GnuTar, extract(Tool::GnuTar, &tgz).path(), &expected);
}

#[test]
fn changed_artifact_is_rebuilt_and_prune_drops_the_old_member() {
    let src = TempDir::new();
    let cdir = TempDir::new();
    let cache = BundleCache::new(cdir.path().to_path_buf()).unwrap();
    let path = src.path().join("app");
    let v1 = random_bytes(1_100_000, 5);
    write_file(&path, &v1, 0o644);
    let entries = vec![Entry::file("app", &path, 0o755)];
    let old_member = member_path(&cache, &entries[0]);
    bundle(entries.clone(), &cache);
    assert!(old_member.exists());

    // New content of a new size: a new key, a new member, the new bytes extracted.
    let v2 = random_bytes(1_300_000, 6);
    write_file(&path, &v2, 0o644);
    let new_member = member_path(&cache, &entries[0]);
    assert_ne!(old_member, new_member);
    let tgz = bundle(entries.clone(), &cache);
    assert!(new_member.exists());
    let mut expected = Expected::new();
    expected.insert("app".into(), (v2.clone(), 0o755));
    check_tree(Tool::GnuTar, extract(Tool::GnuTar, &tgz).path(), &expected);

    // Same size, only the mtime moves (e.g. a reinstall): also a new key.
    let f = fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
        .unwrap();
    drop(f);
    let touched_member = member_path(&cache, &entries[0]);
    assert_ne!(touched_member, new_member);
    bundle(entries.clone(), &cache);
    assert!(touched_member.exists());

    // Prune keeps only what the current artifact uses (member + hash sidecar).
    cache.sha256_of(&path).unwrap();
    fs::write(cdir.path().join("unrelated.txt"), b"x").unwrap();
    let removed = cache.prune(&entries).unwrap();
    // Two older members and their two hash sidecars.
    assert_eq!(removed, 4);
    assert_eq!(
        cache_files(&cache, "m-"),
        vec![touched_member
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()]
    );
    assert_eq!(cache_files(&cache, "s-").len(), 1);
    assert!(cdir.path().join("unrelated.txt").exists());
}

#[test]
fn concurrent_builds_of_one_member_both_produce_valid_bundles() {
    let src = TempDir::new();
    let cdir = TempDir::new();
    let cache = BundleCache::new(cdir.path().to_path_buf()).unwrap();
    let data = random_bytes(2_000_000, 7);
    write_file(&src.path().join("a"), &data, 0o644);
    let entries = vec![
        Entry::file("a", src.path().join("a"), 0o644),
        Entry::bytes("tok", b"t".to_vec(), 0o600),
    ];

    // A starts building (claims the member), B runs a whole bundle meanwhile, then A
    // finishes: both overlap for certain.
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (b_done_tx, b_done_rx) = std::sync::mpsc::channel::<()>();
    let a = {
        let cache = cache.clone();
        let entries = entries.clone();
        std::thread::spawn(move || {
            let mut s = stream(entries, &cache).unwrap();
            let mut buf = vec![0u8; 1000];
            let n = s.read(&mut buf).unwrap();
            started_tx.send(()).unwrap();
            b_done_rx.recv().unwrap();
            let mut out = buf[..n].to_vec();
            out.extend(read_all(s).unwrap());
            out
        })
    };
    let b = {
        let cache = cache.clone();
        let entries = entries.clone();
        std::thread::spawn(move || {
            started_rx.recv().unwrap();
            let out = bundle(entries, &cache);
            b_done_tx.send(()).unwrap();
            out
        })
    };
    let a_out = a.join().unwrap();
    let b_out = b.join().unwrap();
    let mut expected = Expected::new();
    expected.insert("a".into(), (data, 0o644));
    expected.insert("tok".into(), (b"t".to_vec(), 0o600));
    for out in [&a_out, &b_out] {
        check_tree(Tool::GnuTar, extract(Tool::GnuTar, out).path(), &expected);
    }
    let member = fs::read(member_path(&cache, &entries[0])).unwrap();
    assert!(a_out.starts_with(&member) && b_out.starts_with(&member));
    assert_eq!(cache_files(&cache, "m-").len(), 1);
    assert!(cache_files(&cache, "tmp").is_empty());
}

#[test]
fn reader_dropped_mid_stream_leaves_no_temp_file() {
    let src = TempDir::new();
    let cdir = TempDir::new();
    let cache = BundleCache::new(cdir.path().to_path_buf()).unwrap();
    write_file(&src.path().join("a"), &random_bytes(3_000_000, 8), 0o644);
    let mut s = stream(vec![Entry::file("a", src.path().join("a"), 0o644)], &cache).unwrap();
    let mut buf = vec![0u8; 100_000];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(
        cache_files(&cache, "tmp").len(),
        1,
        "build should be under way"
    );
    drop(s);
    assert!(cache_files(&cache, "tmp").is_empty());
    assert!(cache_files(&cache, "m-").is_empty());
}

/// Start a bundle of a 2 MB file, read into the middle of it, apply `change`, and
/// expect the rest of the read to fail, for good, leaving nothing in the cache.
fn change_mid_read(change: impl FnOnce(&Path)) -> io::Error {
    let src = TempDir::new();
    let cdir = TempDir::new();
    let cache = BundleCache::new(cdir.path().to_path_buf()).unwrap();
    let path = src.path().join("a");
    write_file(&path, &random_bytes(2_000_000, 9), 0o644);
    let mut s = stream(vec![Entry::file("a", &path, 0o644)], &cache).unwrap();
    let mut buf = vec![0u8; 200_000];
    s.read_exact(&mut buf).unwrap();
    change(&path);
    let err = read_all_err(&mut s);
    let again = s.read(&mut buf).unwrap_err();
    assert_eq!(again.kind(), err.kind());
    assert!(cache_files(&cache, "tmp").is_empty());
    assert!(cache_files(&cache, "m-").is_empty());
    err
}

fn read_all_err(s: &mut BundleStream) -> io::Error {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) => panic!("stream ended cleanly after its input changed"),
            Ok(_) => {}
            Err(e) => return e,
        }
    }
}

#[test]
fn artifact_that_grows_or_shrinks_mid_read_fails_the_stream() {
    let e = change_mid_read(|p| {
        let mut f = fs::OpenOptions::new().append(true).open(p).unwrap();
        f.write_all(b"more").unwrap();
    });
    assert!(e.to_string().contains("grew"), "{e}");
    let e = change_mid_read(|p| {
        fs::OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(1_000_000)
            .unwrap();
    });
    assert!(e.to_string().contains("shrank"), "{e}");
}

#[test]
fn artifact_changed_between_plan_and_read_is_refused() {
    let src = TempDir::new();
    let cdir = TempDir::new();
    let cache = BundleCache::new(cdir.path().to_path_buf()).unwrap();
    let path = src.path().join("small");
    write_file(&path, b"one", 0o644);
    let mut s = stream(vec![Entry::file("small", &path, 0o644)], &cache).unwrap();
    write_file(&path, b"three", 0o644);
    let mut out = Vec::new();
    assert!(s.read_to_end(&mut out).is_err());
}

#[test]
fn bad_entries_are_refused_before_any_byte() {
    let cdir = TempDir::new();
    let cache = BundleCache::new(cdir.path().to_path_buf()).unwrap();
    let check = |entries: Vec<Entry>, kind: io::ErrorKind| {
        let err = stream(entries, &cache).err().expect("should be refused");
        assert_eq!(err.kind(), kind, "{err}");
    };
    check(
        vec![Entry::bytes("../evil", b"x".to_vec(), 0o644)],
        io::ErrorKind::InvalidInput,
    );
    check(
        vec![Entry::bytes("/etc/x", b"x".to_vec(), 0o644)],
        io::ErrorKind::InvalidInput,
    );
    check(
        vec![Entry::bytes("a", b"x".to_vec(), 0o100644)],
        io::ErrorKind::InvalidInput,
    );
    check(
        vec![
            Entry::bytes("a", b"x".to_vec(), 0o644),
            Entry::bytes("a", b"y".to_vec(), 0o644),
        ],
        io::ErrorKind::InvalidInput,
    );
    check(
        vec![Entry::file("a", cdir.path().join("missing"), 0o644)],
        io::ErrorKind::NotFound,
    );
    check(
        vec![Entry::file("a", cdir.path(), 0o644)],
        io::ErrorKind::InvalidInput,
    );
}

#[test]
fn damaged_cache_file_is_discarded_and_rebuilt() {
    let src = TempDir::new();
    let cdir = TempDir::new();
    let cache = BundleCache::new(cdir.path().to_path_buf()).unwrap();
    let data = random_bytes(1_100_000, 10);
    write_file(&src.path().join("a"), &data, 0o644);
    let entries = vec![Entry::file("a", src.path().join("a"), 0o644)];
    let good = bundle(entries.clone(), &cache);
    let member = member_path(&cache, &entries[0]);
    let len = fs::metadata(&member).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&member)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let again = bundle(entries.clone(), &cache);
    assert_eq!(good, again);
    assert_eq!(fs::metadata(&member).unwrap().len(), len);
}

#[test]
fn empty_bundle_is_a_valid_empty_archive() {
    let cdir = TempDir::new();
    let cache = BundleCache::new(cdir.path().to_path_buf()).unwrap();
    let tgz = bundle(Vec::new(), &cache);
    extract_everywhere(&tgz, &Expected::new());
}

#[test]
fn stream_is_a_send_static_reader_for_the_http_layer() {
    let cdir = TempDir::new();
    let cache = BundleCache::new(cdir.path().to_path_buf()).unwrap();
    let s = stream(vec![Entry::bytes("a", b"x".to_vec(), 0o644)], &cache).unwrap();
    // What the server's Body::Stream takes; read on another thread like a worker would.
    let mut body: Box<dyn Read + Send + 'static> = Box::new(s);
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        body.read_to_end(&mut v).unwrap();
        v
    })
    .join()
    .unwrap();
    let mut expected = Expected::new();
    expected.insert("a".into(), (b"x".to_vec(), 0o644));
    check_tree(Tool::GnuTar, extract(Tool::GnuTar, &out).path(), &expected);
}

#[test]
fn a_bundle_at_a_fixed_time_measures_and_resumes_byte_identically() {
    let src = TempDir::new();
    let cache_dir = TempDir::new();
    let cache = BundleCache::new(cache_dir.path().join("c")).unwrap();
    let (entries, _) = fixture(src.path());
    // Cold cache: measuring builds the big members first.
    let mut s = stream_at(entries.clone(), &cache, 1_700_000_000).unwrap();
    let total = s.measure().unwrap();
    let full = read_all(s).unwrap();
    assert_eq!(total, full.len() as u64);
    let mut offsets = vec![0, 1, 511, full.len() as u64 - 1, full.len() as u64];
    // Inside the first (cached) member, at its end, inside the fresh member.
    offsets.extend([1_000_000, 5_000_000, 5_100_000, full.len() as u64 - 100]);
    for off in offsets {
        let mut s = stream_at(entries.clone(), &cache, 1_700_000_000).unwrap();
        assert_eq!(s.measure().unwrap(), total);
        s.skip(off).unwrap();
        let rest = read_all(s).unwrap();
        assert!(rest == full[off as usize..], "resumed at {off}");
    }
}

/// Four compressible artifacts over the cache threshold, each its own member.
fn several_members(src: &Path) -> Vec<Entry> {
    (0..4u64)
        .map(|i| {
            // Text-like and compressible, so each member really is deflated.
            let data: Vec<u8> = (0..1_500_000u64)
                .map(|j| b"joinery members "[((j * (i + 3)) % 16) as usize])
                .collect();
            let path = src.join(format!("art-{i}"));
            write_file(&path, &data, 0o644);
            Entry::file(format!("art/{i}"), path, 0o644)
        })
        .collect()
}

#[test]
fn a_cold_bundle_built_on_every_core_is_byte_identical_to_one_built_alone() {
    // Issue 16: members are built by helper threads ahead of the stream (and by
    // prepare on every core). A resumed download needs the same bytes however the
    // members were built: compare a cold stream with members built one at a time.
    let src = TempDir::new();
    let entries = several_members(src.path());
    let cold_dir = TempDir::new();
    let cold = BundleCache::new(cold_dir.path().to_path_buf()).unwrap();
    let at = 1_700_000_000;
    let first = read_all(stream_at(entries.clone(), &cold, at).unwrap()).unwrap();
    assert_eq!(cache_files(&cold, "m-").len(), 4);
    assert!(cache_files(&cold, "tmp").is_empty());

    let alone_dir = TempDir::new();
    let alone = BundleCache::new(alone_dir.path().to_path_buf()).unwrap();
    for big in big_files(&entries).unwrap() {
        bundle::build_member_to_sink(&big, &alone, None).unwrap();
    }
    let second = read_all(stream_at(entries.clone(), &alone, at).unwrap()).unwrap();
    assert_eq!(first, second);
    for e in &entries {
        assert_eq!(
            fs::read(member_path(&cold, e)).unwrap(),
            fs::read(member_path(&alone, e)).unwrap()
        );
    }
    // prepare on every core makes the same members again.
    let prep_dir = TempDir::new();
    let prep = BundleCache::new(prep_dir.path().to_path_buf()).unwrap();
    prep.prepare(&entries, None).unwrap();
    let third = read_all(stream_at(entries.clone(), &prep, at).unwrap()).unwrap();
    assert_eq!(first, third);
}

#[test]
fn a_cold_bundle_dropped_early_stops_its_helpers_and_leaves_no_temp_file() {
    let src = TempDir::new();
    let entries = several_members(src.path());
    let cdir = TempDir::new();
    let cache = BundleCache::new(cdir.path().to_path_buf()).unwrap();
    let mut s = stream(entries, &cache).unwrap();
    let mut buf = vec![0u8; 10_000];
    s.read_exact(&mut buf).unwrap();
    // Dropping joins the helpers: afterwards no thread is writing into the cache.
    drop(s);
    assert!(cache_files(&cache, "tmp").is_empty());
    // What was finished is whole (open_member checks each file's gzip trailer).
    for name in cache_files(&cache, "m-") {
        let data = fs::read(cdir.path().join(&name)).unwrap();
        assert!(data.starts_with(&[0x1f, 0x8b]), "{name}");
    }
}

#[test]
fn the_sums_of_a_cold_bundle_build_its_members_and_the_bytes_stay_the_same() {
    // Issue 16: SHA256SUMS used to hash every cold artifact on one core before the
    // first byte, then the stream read it again to compress it. Now the sums build the
    // missing members (on every core), which hashes them on the way.
    let src = TempDir::new();
    let entries = several_members(src.path());
    let at = 1_700_000_000;
    let alone_dir = TempDir::new();
    let alone = BundleCache::new(alone_dir.path().to_path_buf()).unwrap();
    let want = read_all(stream_at(entries.clone(), &alone, at).unwrap()).unwrap();

    let cdir = TempDir::new();
    let cache = BundleCache::new(cdir.path().to_path_buf()).unwrap();
    let sums = cache.sha256sums(&entries).unwrap();
    assert_eq!(
        cache_files(&cache, "m-").len(),
        4,
        "members built by the sums"
    );
    assert_eq!(cache_files(&cache, "s-").len(), 4);
    assert!(cache_files(&cache, "tmp").is_empty());
    for (line, e) in sums.lines().zip(&entries) {
        let super::entry::Source::File { path, .. } = &e.source else {
            unreachable!("several_members makes files")
        };
        let h: [u8; 32] = Sha256::digest(fs::read(path).unwrap()).into();
        assert_eq!(line, format!("{}  {}", super::cache::hex(&h), e.name));
    }
    assert_eq!(
        read_all(stream_at(entries.clone(), &cache, at).unwrap()).unwrap(),
        want
    );
}
