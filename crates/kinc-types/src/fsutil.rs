//! Writing files so that a reader or a crash never sees half of one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `data` to `path` atomically: a temp file in the same directory, fsync,
/// rename over the target, fsync of the directory. `mode` defaults to the existing
/// file's mode, else 0644. On error the temp file is removed and the target is intact.
pub fn write_atomic(path: &Path, data: &[u8], mode: Option<u32>) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mode = match mode {
        Some(m) => m,
        None => match fs::metadata(path) {
            Ok(m) => m.permissions().mode() & 0o7777,
            Err(_) => 0o644,
        },
    };
    let tmp = temp_name(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have cut bits off the create mode: set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn temp_name(path: &Path) -> PathBuf {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    path.with_file_name(format!(".{file}.tmp.{}.{nanos}", std::process::id()))
}

/// Copies the directory tree `from` into `to` (created), keeping the modes of files
/// (`fs::copy` keeps them) and of directories; symlinks are recreated as symlinks.
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let named = |p: &Path, e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", p.display()));
    fs::create_dir_all(to).map_err(|e| named(to, e))?;
    let perms = fs::metadata(from)
        .map_err(|e| named(from, e))?
        .permissions();
    fs::set_permissions(to, perms).map_err(|e| named(to, e))?;
    for entry in fs::read_dir(from).map_err(|e| named(from, e))? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let ft = entry.file_type()?;
        if ft.is_dir() {
            copy_tree(&src, &dst)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&src).map_err(|e| named(&src, e))?;
            std::os::unix::fs::symlink(target, &dst).map_err(|e| named(&dst, e))?;
        } else {
            fs::copy(&src, &dst).map_err(|e| named(&dst, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_keeps_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.json");
        write_atomic(&p, b"one", Some(0o600)).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        write_atomic(&p, b"two", None).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temp files left behind.
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn failure_leaves_target_intact() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("missing-dir").join("f");
        assert!(write_atomic(&p, b"x", None).is_err());
        assert!(!p.exists());
    }

    #[test]
    fn copy_tree_keeps_modes_links_and_nesting() {
        let d = tempfile::tempdir().unwrap();
        let (from, to) = (d.path().join("a"), d.path().join("b/c"));
        fs::create_dir_all(from.join("sub")).unwrap();
        fs::write(from.join("sub/key"), "k").unwrap();
        fs::set_permissions(from.join("sub/key"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(from.join("sub"), fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink("sub/key", from.join("link")).unwrap();
        copy_tree(&from, &to).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(fs::read_to_string(to.join("sub/key")).unwrap(), "k");
        assert_eq!(mode(&to.join("sub/key")), 0o600);
        assert_eq!(mode(&to.join("sub")), 0o700);
        assert_eq!(
            fs::read_link(to.join("link")).unwrap(),
            Path::new("sub/key")
        );
        let err = copy_tree(&d.path().join("missing"), &to).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
