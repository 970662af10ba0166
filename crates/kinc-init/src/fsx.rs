//! Small filesystem helpers for copying `/etc/kubernetes` to and from the `/var` volume.

use std::fs;
use std::io;
use std::path::Path;

pub use kinc_types::fsutil::copy_tree;

/// Replaces the tree at `to` with a copy of `from` so that `to` is always either the
/// old complete copy or the new complete copy: copy beside it, then swap by rename.
pub fn replace_tree(from: &Path, to: &Path) -> io::Result<()> {
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = to.with_file_name(format!(".{name}.new"));
    let old = to.with_file_name(format!(".{name}.old"));
    for leftover in [&staging, &old] {
        if leftover.exists() {
            fs::remove_dir_all(leftover)?;
        }
    }
    copy_tree(from, &staging)?;
    if to.exists() {
        fs::rename(to, &old)?;
    }
    fs::rename(&staging, to)?;
    if old.exists() {
        fs::remove_dir_all(&old)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_and_replaces_with_modes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("pki")).unwrap();
        fs::write(src.join("admin.conf"), "a").unwrap();
        fs::set_permissions(src.join("admin.conf"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(src.join("pki/ca.crt"), "c").unwrap();
        let dst = d.path().join("backup");
        fs::create_dir_all(&dst).unwrap();
        fs::write(dst.join("stale"), "x").unwrap();
        replace_tree(&src, &dst).unwrap();
        assert_eq!(fs::read_to_string(dst.join("pki/ca.crt")).unwrap(), "c");
        assert!(!dst.join("stale").exists());
        let mode = fs::metadata(dst.join("admin.conf"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Only the target is left beside the source: no staging or old copies.
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 2);
    }
}
