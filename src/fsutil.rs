//! Small file-system helpers shared by the certificate code and `joinery install`.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `data` to `path` through a temporary file beside it: create, write, set
/// `mode` (the umask may have narrowed it), fsync, rename, fsync the directory. A crash
/// leaves either the old file or the new one, never half of one, and replacing a running
/// binary does not fail with "text file busy".
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    // A leftover from a crash may have other permissions; start afresh.
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `path` (absolute, as on the installed system) under `root`; `..` and the leading `/`
/// are dropped, so the result never leaves `root`.
pub fn under(root: &Path, path: &Path) -> PathBuf {
    let mut p = root.to_path_buf();
    for c in path.components() {
        if let std::path::Component::Normal(n) = c {
            p.push(n);
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::{under, write_atomic};
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    #[test]
    fn replaces_whole_files_with_the_given_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Only the file itself is left behind: no temporary files.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn rooted_paths_stay_under_the_root() {
        assert_eq!(
            under(Path::new("/r"), Path::new("/etc/x")),
            PathBuf::from("/r/etc/x")
        );
        assert_eq!(
            under(Path::new("/r"), Path::new("/../etc")),
            PathBuf::from("/r/etc")
        );
        assert_eq!(
            under(Path::new("/"), Path::new("/etc/x")),
            PathBuf::from("/etc/x")
        );
    }
}
