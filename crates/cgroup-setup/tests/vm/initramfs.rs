//! An initramfs built in memory: files and their directories, written as an uncompressed
//! `newc` cpio archive (the kernel unpacks it as is; no gzip, no cpio tool needed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    CharDev { major: u32, minor: u32 },
}

#[derive(Default)]
pub struct Initramfs {
    /// Path in the image without the leading `/`; BTreeMap order puts parents first.
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    pub fn new() -> Self {
        let mut me = Self::default();
        // The kernel's built-in initramfs has /dev/console too; having it here keeps PID 1's
        // stdio on the console whichever one is unpacked last.
        me.add_char_dev("/dev/console", 5, 1);
        for d in [
            "/proc",
            "/sys",
            "/tmp",
            "/run",
            "/vm",
            "/sbin",
            "/usr/sbin",
            "/usr/bin",
        ] {
            me.add_dir(d);
        }
        me
    }

    fn key(path: &str) -> String {
        path.trim_start_matches('/').to_string()
    }

    pub fn add_dir(&mut self, path: &str) {
        let key = Self::key(path);
        let mut cur = String::new();
        for comp in key.split('/').filter(|c| !c.is_empty()) {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(comp);
            self.entries.entry(cur.clone()).or_insert(Entry::Dir);
        }
    }

    fn add_parent(&mut self, path: &str) {
        if let Some(parent) = Path::new(path).parent() {
            self.add_dir(&parent.to_string_lossy());
        }
    }

    pub fn add_bytes(&mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) {
        self.add_parent(path);
        self.entries.insert(
            Self::key(path),
            Entry::File {
                data: data.into(),
                mode,
            },
        );
    }

    fn add_char_dev(&mut self, path: &str, major: u32, minor: u32) {
        self.add_parent(path);
        self.entries
            .insert(Self::key(path), Entry::CharDev { major, minor });
    }

    /// Copies a host file (following symlinks) to `dest`.
    pub fn add_host_file(&mut self, src: &Path, dest: &str, mode: u32) {
        let data = std::fs::read(src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
        self.add_bytes(dest, data, mode);
    }

    /// Copies a dynamically linked host binary to `dest` with every library `ldd` names,
    /// at the same paths (the dynamic loader included). A static binary is copied alone.
    pub fn add_binary_with_libs(&mut self, src: &Path, dest: &str) {
        self.add_host_file(src, dest, 0o755);
        for lib in shared_libs(src) {
            let p = lib.to_string_lossy().into_owned();
            if !self.entries.contains_key(&Self::key(&p)) {
                self.add_host_file(&lib, &p, 0o755);
            }
        }
    }

    /// The archive in `newc` format.
    pub fn to_cpio(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (name, e)) in self.entries.iter().enumerate() {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match e {
                Entry::Dir => (0o040_755, &[], (0, 0)),
                Entry::File { data, mode } => (0o100_000 | mode, data, (0, 0)),
                Entry::CharDev { major, minor } => (0o020_600, &[], (*major, *minor)),
            };
            header(&mut out, ino as u32 + 1, mode, data.len(), rdev, name);
            out.extend_from_slice(data);
            pad4(&mut out);
        }
        header(&mut out, 0, 0, 0, (0, 0), "TRAILER!!!");
        out
    }
}

fn header(out: &mut Vec<u8>, ino: u32, mode: u32, size: usize, rdev: (u32, u32), name: &str) {
    let nlink = if mode & 0o040_000 != 0 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Absolute library paths from `ldd`; empty for a static binary (ldd exits non-zero).
fn shared_libs(bin: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .unwrap_or_else(|e| panic!("running ldd {}: {e}", bin.display()));
    if !out.status.success() {
        return vec![];
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

/// Whether `bin` is statically linked (what the busybox in the guest must be).
pub fn is_static(bin: &Path) -> bool {
    Command::new("ldd")
        .arg(bin)
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(false)
}
