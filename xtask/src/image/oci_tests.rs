use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::{symlink, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use oci_spec::image::{ImageIndex, ImageManifest, MediaType};

use super::*;

/// Every entry of a tar stream: path, type, mode, uid, gid, link target, content.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TarItem {
    path: String,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<String>,
    data: Vec<u8>,
}

fn tar_items(bytes: &[u8]) -> Vec<TarItem> {
    let mut ar = tar::Archive::new(bytes);
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            TarItem {
                path: e.path().unwrap().to_string_lossy().into_owned(),
                kind: h.entry_type(),
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mtime: h.mtime().unwrap(),
                link: e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned()),
                data,
            }
        })
        .collect()
}

/// The archive's files by path.
fn archive_files(path: &Path) -> BTreeMap<String, TarItem> {
    tar_items(&fs::read(path).unwrap())
        .into_iter()
        .map(|i| (i.path.clone(), i))
        .collect()
}

fn blob<'a>(files: &'a BTreeMap<String, TarItem>, digest: &str) -> &'a [u8] {
    let hex = digest.strip_prefix("sha256:").unwrap();
    &files
        .get(&format!("blobs/sha256/{hex}"))
        .unwrap_or_else(|| panic!("no blob {digest}"))
        .data
}

/// The layers of an archive, as tar items, in manifest order.
fn layers_of(path: &Path) -> Vec<Vec<TarItem>> {
    let files = archive_files(path);
    let index = ImageIndex::from_reader(&files["index.json"].data[..]).unwrap();
    let m = &index.manifests()[0];
    let manifest = ImageManifest::from_reader(blob(&files, m.digest().as_ref())).unwrap();
    manifest
        .layers()
        .iter()
        .map(|l| tar_items(blob(&files, l.digest().as_ref())))
        .collect()
}

fn spec(name: &str) -> ImageSpec {
    ImageSpec {
        name: name.to_string(),
        entrypoint: vec!["/usr/local/bin/hello".into(), "--flag".into()],
        cmd: vec!["arg".into()],
        env: vec!["PATH=/usr/local/bin:/usr/bin".into(), "A=b c".into()],
        user: Some("65532:65532".into()),
        working_dir: Some("/work".into()),
        stop_signal: Some("SIGINT".into()),
        labels: BTreeMap::from([
            ("org.example.z".into(), "last".into()),
            ("io.kinc.component".into(), "hello".into()),
            ("a".into(), "first".into()),
        ]),
    }
}

fn sample_entries(dir: &Path) -> Vec<Entry> {
    let host = dir.join("hello-src");
    fs::write(&host, b"#!/bin/sh\necho hello\n").unwrap();
    vec![
        // Deliberately out of order and without parents.
        Entry::Symlink {
            path: "usr/bin/hi".into(),
            target: "/usr/local/bin/hello".into(),
        },
        Entry::File {
            path: "usr/local/bin/hello".into(),
            source: host,
            mode: 0o755,
        },
        Entry::Bytes {
            path: "etc/hello.conf".into(),
            data: b"greeting = hi\n".to_vec(),
            mode: 0o640,
        },
        Entry::Dir {
            path: "var/empty".into(),
            mode: 0o700,
        },
    ]
}

#[test]
fn entries_archive_has_the_layout_and_a_consistent_digest_chain() {
    let d = tempfile::tempdir().unwrap();
    let entries = sample_entries(d.path());
    let out = d.path().join("img.tar");
    let info = write_archive(
        &spec("registry.k8s.io/hello:v1.0"),
        &[LayerSource::Entries(&entries)],
        &out,
    )
    .unwrap();

    let files = archive_files(&out);
    assert_eq!(
        files["oci-layout"].data,
        br#"{"imageLayoutVersion":"1.0.0"}"#
    );
    assert_eq!(files["blobs"].kind, tar::EntryType::Directory);
    assert_eq!(files["blobs/sha256"].kind, tar::EntryType::Directory);
    // Every blob is named by the sha256 of its content.
    let blobs: Vec<_> = files
        .iter()
        .filter(|(p, i)| p.starts_with("blobs/sha256/") && i.kind.is_file())
        .collect();
    assert_eq!(
        blobs.len(),
        3,
        "layer, config, manifest: {:?}",
        files.keys()
    );
    for (path, item) in &blobs {
        assert_eq!(
            path["blobs/sha256/".len()..],
            sha256_hex(&item.data),
            "{path}"
        );
    }
    for item in files.values() {
        assert_eq!(
            (item.mtime, item.uid, item.gid),
            (MTIME, 0, 0),
            "{}",
            item.path
        );
    }

    // index -> manifest -> config -> diff_ids = layer digests.
    let index = ImageIndex::from_reader(&files["index.json"].data[..]).unwrap();
    assert_eq!(index.schema_version(), 2);
    assert_eq!(index.manifests().len(), 1);
    let m = &index.manifests()[0];
    assert_eq!(*m.media_type(), MediaType::ImageManifest);
    assert_eq!(m.digest().to_string(), info.manifest_digest);
    let platform = m.platform().as_ref().unwrap();
    assert_eq!(*platform.os(), Os::Linux);
    assert_eq!(*platform.architecture(), oci_arch(std::env::consts::ARCH));
    let manifest_bytes = blob(&files, &info.manifest_digest);
    assert_eq!(m.size(), manifest_bytes.len() as u64);
    let manifest = ImageManifest::from_reader(manifest_bytes).unwrap();
    assert_eq!(*manifest.config().media_type(), MediaType::ImageConfig);
    assert_eq!(
        manifest.config().digest().to_string(),
        format!("sha256:{}", info.image_id)
    );
    let config_bytes = blob(&files, manifest.config().digest().as_ref());
    assert_eq!(manifest.config().size(), config_bytes.len() as u64);
    let config = ImageConfiguration::from_reader(config_bytes).unwrap();
    let layer_digests: Vec<String> = manifest
        .layers()
        .iter()
        .map(|l| l.digest().to_string())
        .collect();
    assert_eq!(layer_digests, info.layer_digests);
    assert_eq!(*config.rootfs().diff_ids(), info.layer_digests);
    assert_eq!(config.rootfs().typ(), "layers");
    for l in manifest.layers() {
        assert_eq!(*l.media_type(), MediaType::ImageLayer);
        assert_eq!(l.size(), blob(&files, l.digest().as_ref()).len() as u64);
    }
    assert_eq!(*config.os(), Os::Linux);
    assert_eq!(info.size, fs::metadata(&out).unwrap().len());

    // The layer: sorted, parents first and created, owned by root, modes kept.
    let layer = &layers_of(&out)[0];
    let got: Vec<(&str, tar::EntryType, u32)> = layer
        .iter()
        .map(|i| (i.path.as_str(), i.kind, i.mode))
        .collect();
    use tar::EntryType as T;
    assert_eq!(
        got,
        [
            ("etc", T::Directory, 0o755),
            ("etc/hello.conf", T::Regular, 0o640),
            ("usr", T::Directory, 0o755),
            ("usr/bin", T::Directory, 0o755),
            ("usr/bin/hi", T::Symlink, 0o777),
            ("usr/local", T::Directory, 0o755),
            ("usr/local/bin", T::Directory, 0o755),
            ("usr/local/bin/hello", T::Regular, 0o755),
            ("var", T::Directory, 0o755),
            ("var/empty", T::Directory, 0o700),
        ]
    );
    let by_path: BTreeMap<&str, &TarItem> = layer.iter().map(|i| (i.path.as_str(), i)).collect();
    assert_eq!(
        by_path["usr/local/bin/hello"].data,
        b"#!/bin/sh\necho hello\n"
    );
    assert_eq!(by_path["etc/hello.conf"].data, b"greeting = hi\n");
    assert_eq!(
        by_path["usr/bin/hi"].link.as_deref(),
        Some("/usr/local/bin/hello")
    );
    for i in layer {
        assert_eq!((i.uid, i.gid, i.mtime), (0, 0, MTIME), "{}", i.path);
    }
}

#[test]
fn config_carries_the_spec_and_read_index_reads_it_back() {
    let d = tempfile::tempdir().unwrap();
    let entries = sample_entries(d.path());
    let out = d.path().join("img.tar");
    let s = spec("registry.k8s.io/kube-apiserver:v1.33.13");
    write_archive(&s, &[LayerSource::Entries(&entries)], &out).unwrap();

    let (name, config) = read_index(&out).unwrap();
    assert_eq!(name, "registry.k8s.io/kube-apiserver:v1.33.13");
    let c = config.config().as_ref().unwrap();
    assert_eq!(c.entrypoint().as_ref(), Some(&s.entrypoint));
    assert_eq!(c.cmd().as_ref(), Some(&s.cmd));
    assert_eq!(c.env().as_ref(), Some(&s.env));
    assert_eq!(c.user(), &s.user);
    assert_eq!(c.working_dir(), &s.working_dir);
    assert_eq!(c.stop_signal(), &s.stop_signal);
    let labels: BTreeMap<String, String> = c.labels().clone().unwrap().into_iter().collect();
    assert_eq!(labels, s.labels);
    assert_eq!(config.created().as_deref(), Some("1970-01-01T00:00:00Z"));

    // Empty fields are left out rather than written as empty lists.
    let bare = ImageSpec {
        name: "localhost/bare:1".into(),
        ..ImageSpec::default()
    };
    write_archive(&bare, &[LayerSource::Entries(&entries)], &out).unwrap();
    let c = read_index(&out).unwrap().1.config().clone().unwrap();
    assert_eq!((c.entrypoint(), c.env(), c.labels()), (&None, &None, &None));
}

#[test]
fn both_name_annotations_are_present() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("img.tar");
    let entries = [Entry::Bytes {
        path: "f".into(),
        data: vec![1],
        mode: 0o644,
    }];
    write_archive(
        &spec("registry.k8s.io/etcd:3.5.21-0"),
        &[LayerSource::Entries(&entries)],
        &out,
    )
    .unwrap();
    let files = archive_files(&out);
    let index = ImageIndex::from_reader(&files["index.json"].data[..]).unwrap();
    let ann = index.manifests()[0].annotations().clone().unwrap();
    assert_eq!(ann.len(), 2, "{ann:?}");
    assert_eq!(ann[ANNOTATION_REF_NAME], "registry.k8s.io/etcd:3.5.21-0");
    assert_eq!(
        ann[ANNOTATION_CONTAINERD_NAME],
        "registry.k8s.io/etcd:3.5.21-0"
    );
    assert_eq!(ANNOTATION_REF_NAME, "org.opencontainers.image.ref.name");
    assert_eq!(ANNOTATION_CONTAINERD_NAME, "io.containerd.image.name");
}

#[test]
fn same_inputs_give_byte_identical_archives() {
    let d = tempfile::tempdir().unwrap();
    let entries = sample_entries(d.path());
    let mut reversed = entries.clone();
    reversed.reverse();
    let root = d.path().join("root");
    make_tree(&root);
    let (a, b) = (d.path().join("a.tar"), d.path().join("b.tar"));
    let s = spec("registry.k8s.io/hello:v1");
    let ia = write_archive(
        &s,
        &[LayerSource::Dir(&root), LayerSource::Entries(&entries)],
        &a,
    )
    .unwrap();
    // Entry order does not matter; labels are re-inserted into fresh HashMaps.
    let ib = write_archive(
        &s,
        &[LayerSource::Dir(&root), LayerSource::Entries(&reversed)],
        &b,
    )
    .unwrap();
    assert_eq!(ia, ib);
    assert!(
        fs::read(&a).unwrap() == fs::read(&b).unwrap(),
        "archives differ"
    );
    // Labels come out sorted, whatever the HashMap order was.
    let files = archive_files(&a);
    let config =
        String::from_utf8(blob(&files, &format!("sha256:{}", ia.image_id)).to_vec()).unwrap();
    let (x, y, z) = (
        config.find("\"a\":").unwrap(),
        config.find("\"io.kinc.component\"").unwrap(),
        config.find("\"org.example.z\"").unwrap(),
    );
    assert!(x < y && y < z, "{config}");
    // A different input changes the image.
    let ic = write_archive(&s, &[LayerSource::Entries(&entries)], &b).unwrap();
    assert_ne!(ia.image_id, ic.image_id);
}

#[test]
fn identical_layers_are_stored_once() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("img.tar");
    let e = [Entry::Bytes {
        path: "f".into(),
        data: vec![7; 5000],
        mode: 0o644,
    }];
    let info = write_archive(
        &spec("localhost/dup:1"),
        &[LayerSource::Entries(&e), LayerSource::Entries(&e)],
        &out,
    )
    .unwrap();
    assert_eq!(info.layer_digests[0], info.layer_digests[1]);
    let blobs = archive_files(&out)
        .keys()
        .filter(|p| p.starts_with("blobs/sha256/"))
        .count();
    assert_eq!(blobs, 3);
    assert_eq!(read_index(&out).unwrap().1.rootfs().diff_ids().len(), 2);
    // The file ends right after the end-of-archive marker: the dropped copy left no tail.
    let bytes = fs::read(&out).unwrap();
    let mut ar = tar::Archive::new(&bytes[..]);
    let last_end = ar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            e.raw_file_position() + e.size().div_ceil(512) * 512
        })
        .max()
        .unwrap();
    assert_eq!(bytes.len() as u64, last_end + 1024);
    assert!(bytes[last_end as usize..].iter().all(|b| *b == 0));
}

#[test]
fn several_images_in_one_archive_share_their_common_layer() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("imgs.tar");
    let shared = [Entry::Bytes {
        path: "usr/local/bin/kube".into(),
        data: vec![9; 70_000],
        mode: 0o755,
    }];
    let extra = [Entry::Bytes {
        path: "usr/sbin/nft".into(),
        data: vec![1; 3000],
        mode: 0o755,
    }];
    let a = spec("registry.k8s.io/kube-apiserver:v1");
    let b = spec("registry.k8s.io/kube-proxy:v1");
    let infos = write_images(
        &[
            (&a, &[LayerSource::Entries(&shared)][..]),
            (
                &b,
                &[LayerSource::Entries(&shared), LayerSource::Entries(&extra)][..],
            ),
        ],
        &out,
    )
    .unwrap();
    assert_eq!(infos.len(), 2);
    assert_eq!(infos[0].layer_digests[0], infos[1].layer_digests[0]);
    assert_ne!(infos[0].image_id, infos[1].image_id);
    let files = archive_files(&out);
    // 2 distinct layers + 2 configs + 2 manifests: the shared layer once.
    let blobs = files
        .keys()
        .filter(|p| p.starts_with("blobs/sha256/"))
        .count();
    assert_eq!(blobs, 6);
    let index = ImageIndex::from_reader(&files["index.json"].data[..]).unwrap();
    let names: Vec<&str> = index
        .manifests()
        .iter()
        .map(|m| m.annotations().as_ref().unwrap()[ANNOTATION_CONTAINERD_NAME].as_str())
        .collect();
    assert_eq!(names, [a.name.as_str(), b.name.as_str()]);
    for (m, info) in index.manifests().iter().zip(&infos) {
        assert_eq!(m.digest().to_string(), info.manifest_digest);
        let manifest = ImageManifest::from_reader(blob(&files, m.digest().as_ref())).unwrap();
        let layers: Vec<String> = manifest
            .layers()
            .iter()
            .map(|l| l.digest().to_string())
            .collect();
        assert_eq!(layers, info.layer_digests);
    }

    // One name twice is refused before anything is written.
    let out2 = d.path().join("dup.tar");
    let err = write_images(
        &[
            (&a, &[LayerSource::Entries(&shared)][..]),
            (&a, &[LayerSource::Entries(&extra)][..]),
        ],
        &out2,
    )
    .unwrap_err();
    assert!(err.to_string().contains("named twice"), "{err}");
    assert!(!out2.exists());
}

#[test]
fn bad_names_are_refused_and_leave_no_file() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("img.tar");
    let e = [Entry::Bytes {
        path: "f".into(),
        data: vec![],
        mode: 0o644,
    }];
    for (name, why) in [
        ("", "is empty"),
        ("registry.k8s.io/pause", "has no tag"),
        ("localhost:5000/pause", "has no tag"),
        ("registry.k8s.io/Pause:3.10", "lower case"),
        ("registry.k8s.io/pause:3.10 ", "whitespace"),
        ("registry.k8s.io/pa use:3.10", "whitespace"),
        ("pause:3.10", "registry host"),
        ("kinc/pause:3.10", "registry host"),
        ("registry.k8s.io/pause:", "invalid tag"),
        ("registry.k8s.io/pause:-x", "invalid tag"),
        ("registry.k8s.io/pause:3.10@sha256:00", "digest"),
        ("registry.k8s.io//pause:3.10", "path component"),
        ("registry.k8s.io/pause-:3.10", "path component"),
    ] {
        let err = write_archive(&spec(name), &[LayerSource::Entries(&e)], &out).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, OciError::BadName { .. }), "{name:?}: {msg}");
        assert!(msg.contains(why), "{name:?}: {msg}");
        assert!(msg.contains("ImageSpec.name"), "{msg}");
        assert!(!out.exists());
    }
    assert_eq!(
        fs::read_dir(d.path()).unwrap().count(),
        0,
        "temp file left behind"
    );
    for good in [
        "registry.k8s.io/pause:3.10",
        "localhost/kinc/node:v1.33.13",
        "localhost:5000/a/b_c.d-e:Tag_1.x",
        "registry.k8s.io/coredns/coredns:v1.12.0",
    ] {
        validate_name(good).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
}

#[test]
fn failure_midway_keeps_the_old_archive_and_leaves_no_temp_file() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("img.tar");
    fs::write(&out, b"old").unwrap();
    let e = [Entry::File {
        path: "bin/x".into(),
        source: d.path().join("missing"),
        mode: 0o755,
    }];
    let err = write_archive(&spec("localhost/x:1"), &[LayerSource::Entries(&e)], &out).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("opening ") && msg.contains("missing"),
        "{msg}"
    );
    assert_eq!(fs::read(&out).unwrap(), b"old");
    assert_eq!(
        fs::read_dir(d.path()).unwrap().count(),
        1,
        "temp file left behind"
    );
}

#[test]
fn bad_entries_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("img.tar");
    let f = |p: &str| Entry::Bytes {
        path: p.into(),
        data: vec![],
        mode: 0o644,
    };
    for (entries, why) in [
        (vec![f("/etc/x")], "relative"),
        (vec![f("etc/../x")], "'..'"),
        (vec![f("etc//x")], "empty"),
        (vec![f("")], "empty"),
        (vec![f("a"), f("a")], "twice"),
        (vec![f("a"), f("a/b")], "not a directory"),
    ] {
        let err = write_archive(
            &spec("localhost/x:1"),
            &[LayerSource::Entries(&entries)],
            &out,
        )
        .unwrap_err();
        assert!(matches!(err, OciError::BadEntry { .. }), "{err}");
        assert!(err.to_string().contains(why), "{err}");
        assert!(!out.exists());
    }
}

#[test]
fn long_paths_and_link_targets_survive() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("img.tar");
    let long = format!("{}/file", "d".repeat(150));
    let target = format!("/{}", "t".repeat(200));
    let e = [
        Entry::Bytes {
            path: long.clone(),
            data: b"x".to_vec(),
            mode: 0o644,
        },
        Entry::Symlink {
            path: "l".into(),
            target: target.clone(),
        },
    ];
    write_archive(&spec("localhost/x:1"), &[LayerSource::Entries(&e)], &out).unwrap();
    let layer = &layers_of(&out)[0];
    assert!(layer.iter().any(|i| i.path == long && i.data == b"x"));
    assert!(layer
        .iter()
        .any(|i| i.path == "l" && i.link.as_deref() == Some(target.as_str())));
}

/// A small root filesystem: modes, a symlink, a hard link, a setuid file, an empty
/// directory and a fifo.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("etc/empty.d")).unwrap();
    fs::create_dir_all(root.join("run")).unwrap();
    fs::write(root.join("usr/bin/tool"), b"tool content").unwrap();
    fs::set_permissions(
        root.join("usr/bin/tool"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool2")).unwrap();
    fs::write(root.join("etc/secret"), b"s").unwrap();
    fs::set_permissions(root.join("etc/secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(root.join("etc/empty.d"), fs::Permissions::from_mode(0o750)).unwrap();
    symlink("../usr/bin/tool", root.join("etc/tool-link")).unwrap();
    symlink("usr/bin", root.join("bin")).unwrap();
    let fifo = root.join("run/fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

#[test]
fn dir_source_keeps_modes_owners_symlinks_and_hard_links_and_skips_fifos() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    make_tree(&root);
    let out = d.path().join("img.tar");
    let info = write_archive(
        &spec("localhost/kinc/node:dev"),
        &[LayerSource::Dir(&root)],
        &out,
    )
    .unwrap();
    assert_eq!(info.skipped, [PathBuf::from("run/fifo")]);

    let layer = &layers_of(&out)[0];
    let paths: Vec<&str> = layer.iter().map(|i| i.path.as_str()).collect();
    // Sorted walk, parents before children, no root entry, no fifo.
    assert_eq!(
        paths,
        [
            "bin",
            "etc",
            "etc/empty.d",
            "etc/secret",
            "etc/tool-link",
            "run",
            "usr",
            "usr/bin",
            "usr/bin/tool",
            "usr/bin/tool2",
        ]
    );
    for item in layer {
        let host = root.join(&item.path);
        let meta = fs::symlink_metadata(&host).unwrap();
        assert_eq!(item.mode, meta.mode() & 0o7777, "{}", item.path);
        assert_eq!(
            (item.uid, item.gid),
            (u64::from(meta.uid()), u64::from(meta.gid())),
            "{}",
            item.path
        );
        assert_eq!(item.mtime, MTIME);
        let ft = meta.file_type();
        if ft.is_symlink() {
            assert_eq!(item.kind, tar::EntryType::Symlink, "{}", item.path);
            assert_eq!(
                item.link.as_deref().map(PathBuf::from),
                Some(fs::read_link(&host).unwrap()),
                "{}",
                item.path
            );
        } else if ft.is_dir() {
            assert_eq!(item.kind, tar::EntryType::Directory, "{}", item.path);
        } else if item.path == "usr/bin/tool2" {
            // The second name of the inode is a hard link to the first.
            assert_eq!(item.kind, tar::EntryType::Link);
            assert_eq!(item.link.as_deref(), Some("usr/bin/tool"));
            assert!(item.data.is_empty());
        } else {
            assert_eq!(item.kind, tar::EntryType::Regular, "{}", item.path);
            assert_eq!(item.data, fs::read(&host).unwrap(), "{}", item.path);
        }
    }
    let tool = layer.iter().find(|i| i.path == "usr/bin/tool").unwrap();
    assert_eq!(tool.mode, 0o4755);
    let secret = layer.iter().find(|i| i.path == "etc/secret").unwrap();
    assert_eq!(secret.mode, 0o600);
}

#[test]
fn dir_source_must_be_a_directory() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("img.tar");
    let err = write_archive(
        &spec("localhost/x:1"),
        &[LayerSource::Dir(&d.path().join("nope"))],
        &out,
    )
    .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    assert!(!out.exists());
}

#[test]
fn read_index_refuses_a_corrupt_archive() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("img.tar");
    let e = [Entry::Bytes {
        path: "f".into(),
        data: vec![1],
        mode: 0o644,
    }];
    let info = write_archive(&spec("localhost/x:1"), &[LayerSource::Entries(&e)], &out).unwrap();
    // Flip one byte of the config blob's content.
    let mut bytes = fs::read(&out).unwrap();
    let config = blob(&archive_files(&out), &format!("sha256:{}", info.image_id)).to_vec();
    let at = bytes
        .windows(config.len())
        .position(|w| w == config)
        .unwrap();
    bytes[at + 1] ^= 0x20;
    fs::write(&out, &bytes).unwrap();
    let err = read_index(&out).unwrap_err();
    assert!(
        err.to_string().contains("does not match its digest"),
        "{err}"
    );
}

#[test]
fn arch_names_follow_go() {
    assert_eq!(oci_arch("x86_64").to_string(), "amd64");
    assert_eq!(oci_arch("aarch64").to_string(), "arm64");
}

fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .args(args)
        .output()
        .expect("run podman")
}

#[test]
#[ignore = "needs root, podman: podman load of the archive"]
fn podman_loads_the_archive_under_its_name() {
    kinc_testutil::require_root_and!("podman");
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("img.tar");
    let entries = sample_entries(d.path());
    let name = "registry.k8s.io/kinc-oci-test:v0.0.1";
    let s = spec(name);
    let info = write_archive(&s, &[LayerSource::Entries(&entries)], &out).unwrap();
    let _ = podman(&["rmi", "--force", name]);

    let load = podman(&["load", "-i", out.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&load.stdout).into_owned();
    assert!(
        load.status.success(),
        "podman load: {stdout}{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let inspect = podman(&["image", "inspect", name]);
    let _ = podman(&["rmi", "--force", name]);
    assert!(
        inspect.status.success(),
        "podman image inspect {name} after load ({stdout}): {}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let img = &v[0];
    assert_eq!(img["Id"], info.image_id.as_str());
    assert!(
        img["RepoTags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == name),
        "{}",
        img["RepoTags"]
    );
    let c = &img["Config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(s.entrypoint));
    assert_eq!(c["Cmd"], serde_json::json!(s.cmd));
    assert_eq!(c["Env"], serde_json::json!(s.env));
    assert_eq!(c["User"], "65532:65532");
    assert_eq!(c["WorkingDir"], "/work");
    assert_eq!(c["StopSignal"], "SIGINT");
    assert_eq!(c["Labels"], serde_json::json!(s.labels));
    assert_eq!(
        img["Architecture"],
        oci_arch(std::env::consts::ARCH).to_string()
    );
    assert_eq!(img["Os"], "linux");
}

#[test]
fn a_file_that_changes_size_while_read_is_an_error() {
    let read = |data: &[u8], left: u64| {
        let mut buf = Vec::new();
        ExactLen { inner: data, left }
            .read_to_end(&mut buf)
            .map(|_| buf)
    };
    assert_eq!(read(b"abc", 3).unwrap(), b"abc");
    let shrank = read(b"ab", 3).unwrap_err();
    assert!(shrank.to_string().contains("shrank"), "{shrank}");
    let grew = read(b"abcd", 3).unwrap_err();
    assert!(grew.to_string().contains("grew"), "{grew}");
}

#[test]
fn a_file_entry_must_come_from_a_regular_file() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("img.tar");
    let e = [Entry::File {
        path: "bin/x".into(),
        source: d.path().to_path_buf(),
        mode: 0o755,
    }];
    let err = write_archive(&spec("localhost/x:1"), &[LayerSource::Entries(&e)], &out).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert!(!out.exists());
}
