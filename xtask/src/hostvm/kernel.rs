//! The uncompressed ELF `vmlinux` inside a bzImage: booting it through PVH skips the guest's
//! own decompression, a few seconds under TCG (notes/cgroup-v2-vm.md).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Xz,
    Zstd,
    Gzip,
}

impl Codec {
    fn magic(self) -> &'static [u8] {
        match self {
            Codec::Xz => b"\xfd7zXZ\x00",
            Codec::Zstd => b"\x28\xb5\x2f\xfd",
            Codec::Gzip => b"\x1f\x8b\x08",
        }
    }

    fn tool(self) -> &'static str {
        match self {
            Codec::Xz => "xz",
            Codec::Zstd => "zstd",
            Codec::Gzip => "gzip",
        }
    }
}

/// Offsets where a compressed stream may start, in file order, at most `limit` of them.
pub fn candidates(image: &[u8], limit: usize) -> Vec<(usize, Codec)> {
    let mut found = Vec::new();
    for codec in [Codec::Xz, Codec::Zstd, Codec::Gzip] {
        let m = codec.magic();
        found.extend(
            image
                .windows(m.len())
                .enumerate()
                .filter(|(_, w)| *w == m)
                .map(|(i, _)| (i, codec))
                .take(limit),
        );
    }
    found.sort_by_key(|(i, _)| *i);
    found.truncate(limit);
    found
}

pub fn is_elf(data: &[u8]) -> bool {
    data.starts_with(b"\x7fELF")
}

/// Decompresses `data` with the codec's command-line tool. Trailing garbage after the
/// stream makes the tools complain; the ELF magic of the result decides, not their status.
fn decompress(codec: Codec, data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(codec.tool())
        .args(["-dc"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting `{} -dc`", codec.tool()))?;
    let mut stdin = child.stdin.take().expect("piped");
    let owned = data.to_vec();
    let writer = std::thread::spawn(move || {
        // A broken pipe just means the tool stopped reading at the stream's end.
        let _ = stdin.write_all(&owned);
    });
    let mut out = Vec::new();
    child.stdout.take().expect("piped").read_to_end(&mut out)?;
    let _ = child.wait();
    let _ = writer.join();
    Ok(out)
}

/// Writes the ELF vmlinux found in `bzimage` to `dest`.
pub fn extract_vmlinux(bzimage: &Path, dest: &Path) -> Result<()> {
    let image = std::fs::read(bzimage).with_context(|| format!("reading {}", bzimage.display()))?;
    for (off, codec) in candidates(&image, 8) {
        let out = decompress(codec, &image[off..])?;
        if is_elf(&out) {
            kinc_types::fsutil::write_atomic(dest, &out, Some(0o644))
                .with_context(|| format!("writing {}", dest.display()))?;
            return Ok(());
        }
    }
    bail!(
        "no xz/zstd/gzip stream in {} decompresses to an ELF vmlinux",
        bzimage.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_magics_in_order() {
        let mut img = vec![0u8; 64];
        img[10..14].copy_from_slice(b"\x28\xb5\x2f\xfd");
        img[30..36].copy_from_slice(b"\xfd7zXZ\x00");
        img[50..53].copy_from_slice(b"\x1f\x8b\x08");
        assert_eq!(
            candidates(&img, 8),
            vec![(10, Codec::Zstd), (30, Codec::Xz), (50, Codec::Gzip)]
        );
        assert_eq!(candidates(&img, 1), vec![(10, Codec::Zstd)]);
        assert!(is_elf(b"\x7fELF\x02"));
        assert!(!is_elf(b"MZ"));
    }

    #[test]
    #[ignore = "needs xz"]
    fn extracts_an_elf_behind_a_header() {
        kinc_testutil::require_tools(&["xz"]);
        let dir = crate::hostvm::testdir::TestDir::new("kernel");
        let payload = b"\x7fELF\x02\x01\x01 pretend kernel".repeat(100);
        let raw = dir.path().join("payload");
        std::fs::write(&raw, &payload).unwrap();
        let xz = Command::new("xz").args(["-c"]).arg(&raw).output().unwrap();
        assert!(xz.status.success());
        // A setup header with a false positive gzip magic first, and trailing bytes.
        let mut bz = b"MZ header \x1f\x8b\x08 not really gzip ".to_vec();
        bz.extend_from_slice(&xz.stdout);
        bz.extend_from_slice(b"trailing");
        let bzimage = dir.path().join("vmlinuz");
        std::fs::write(&bzimage, &bz).unwrap();
        let out = dir.path().join("vmlinux");
        extract_vmlinux(&bzimage, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), payload);
        std::fs::write(&bzimage, b"nothing here").unwrap();
        assert!(extract_vmlinux(&bzimage, &out)
            .unwrap_err()
            .to_string()
            .contains("no xz/zstd/gzip stream"));
    }
}
