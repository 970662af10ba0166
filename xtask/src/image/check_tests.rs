//! Context assembly and checks, with stand-in binaries (the real crates may not be in
//! the workspace yet; what is checked is the context logic).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;
use crate::image::context::{assemble, Sources, BINARIES};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Shell stand-ins answering `--version` (and `render`, like kinc-init).
fn standins(dir: &Path) -> Vec<(crate::image::Binary, PathBuf)> {
    fs::create_dir_all(dir).unwrap();
    BINARIES
        .iter()
        .map(|b| {
            let p = dir.join(b.bin);
            fs::write(
                &p,
                format!(
                    "#!/bin/sh\ncase \"$1\" in\n--version) echo '{} 0.0.0-standin' ;;\nrender) printf 'kind: InitConfiguration\\n---\\nkind: ClusterConfiguration\\n---\\nkind: KubeletConfiguration\\n---\\nkind: KubeProxyConfiguration\\n' ;;\n*) exit 2 ;;\nesac\n",
                    b.bin
                ),
            )
            .unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            (*b, p)
        })
        .collect()
}

fn assembled(d: &Path) -> PathBuf {
    let sources = Sources::of_workspace(&repo(), standins(&d.join("standins")));
    let ctx = d.join("ctx");
    assemble(&sources, BINARIES, &ctx).unwrap();
    ctx
}

#[test]
fn parses_copy_forms() {
    let cf = "FROM x\n# COPY commented/ /no\nCOPY --chmod=0755 bin/a /usr/bin/a\nCOPY a b \\\n  c/ /dst/\nADD [\"j son\", \"/d\"]\nCOPY --from=build /x /y\nRUN echo COPY\n";
    let c = parse_copies(cf);
    assert_eq!(c.len(), 3, "{c:?}");
    assert_eq!(c[0].sources, ["bin/a"]);
    assert_eq!(c[0].dest, "/usr/bin/a");
    assert_eq!(
        (c[1].line, c[1].sources.clone(), c[1].dest.as_str()),
        (4, vec!["a".to_string(), "b".into(), "c/".into()], "/dst/")
    );
    assert_eq!(c[2].sources, ["j son"]);
}

#[test]
fn the_repository_context_passes_every_check() {
    let d = tempfile::tempdir().unwrap();
    let ctx = assembled(d.path());
    for p in [
        "Containerfile",
        "repos/kubernetes.repo",
        "files/etc/crio/crio.conf.d/10-kinc.conf",
        "manifests/cluster/local-path-storage.yaml",
        "manifests/cluster/kincnet-policy.yaml",
        "bin/kinc-init",
        "bin/kincnet-policy",
    ] {
        assert!(ctx.join(p).exists(), "{p} missing");
    }
    let r = check_context(&ctx).unwrap();
    // Whether systemd-analyze is installed is the next test's business.
    assert_eq!(
        without_systemd_analyze(&r.problems),
        Vec::<&str>::new(),
        "{:#?}",
        r.problems
    );
    let all = r.checked.join("\n");
    assert!(
        all.contains("bin/kincnet --version: kincnet 0.0.0-standin"),
        "{all}"
    );
    assert!(all.contains("TOML"), "{all}");
}

/// The problems that do not come from `systemd-analyze verify` (which runs only where
/// it is installed).
fn without_systemd_analyze(problems: &[String]) -> Vec<&str> {
    problems
        .iter()
        .map(String::as_str)
        .filter(|p| !p.starts_with("systemd-analyze verify"))
        .collect()
}

#[test]
#[ignore = "needs systemd-analyze"]
fn the_repository_units_pass_systemd_analyze_verify() {
    kinc_testutil::require_tools(&["systemd-analyze"]);
    let d = tempfile::tempdir().unwrap();
    let r = check_context(&assembled(d.path())).unwrap();
    assert!(r.problems.is_empty(), "{:#?}", r.problems);
    let all = r.checked.join("\n");
    let verify = all
        .lines()
        .find(|l| l.starts_with("systemd-analyze verify: "))
        .unwrap_or_else(|| panic!("no systemd-analyze line in {all}"));
    for unit in [
        "kinc-init.service",
        "kinc-prepare.service",
        "kincnet-policy.path",
        "kincnet-policy.service",
    ] {
        assert!(verify.contains(unit), "{unit} not verified: {verify}");
    }
    assert!(all.contains("crio.service, kubelet.service"), "{all}");
}

#[test]
#[ignore = "needs systemd-analyze"]
fn a_misspelt_unit_key_is_reported_by_systemd_analyze() {
    kinc_testutil::require_tools(&["systemd-analyze"]);
    let d = tempfile::tempdir().unwrap();
    let ctx = assembled(d.path());
    let unit = ctx.join("files/etc/systemd/system/kinc-init.service");
    let text = fs::read_to_string(&unit)
        .unwrap()
        .replace("[Service]", "[Service]\nExecStratPost=/bin/true");
    fs::write(&unit, text).unwrap();
    let all = check_context(&ctx).unwrap().problems.join("\n");
    assert!(
        all.contains("systemd-analyze verify") && all.contains("ExecStratPost"),
        "{all}"
    );
}

#[test]
fn missing_binary_crates_are_named() {
    let d = tempfile::tempdir().unwrap();
    let mut bins = standins(&d.path().join("s"));
    bins.retain(|(b, _)| b.krate == "kinc-init");
    let sources = Sources::of_workspace(&repo(), bins);
    let ctx = d.path().join("ctx");
    let err = assemble(&sources, BINARIES, &ctx).unwrap_err().to_string();
    for krate in [
        "crates/kincnet",
        "crates/crun-wrapper",
        "crates/cgroup-setup",
        "crates/kincnet-policy",
    ] {
        assert!(err.contains(krate), "{err}");
    }
    assert!(!err.contains("crates/kinc-init"), "{err}");
    assert!(!ctx.exists(), "nothing is written when a binary is missing");
    // With the required set injected, the same sources assemble.
    let only_init: Vec<_> = BINARIES
        .iter()
        .copied()
        .filter(|b| b.krate == "kinc-init")
        .collect();
    assemble(&sources, &only_init, &ctx).unwrap();
    assert!(ctx.join("bin/kinc-init").exists());
}

#[test]
fn refuses_to_empty_a_foreign_directory_but_reuses_its_own() {
    let d = tempfile::tempdir().unwrap();
    let ctx = assembled(d.path());
    // A second run replaces the previous context.
    fs::write(ctx.join("bin/stale"), "x").unwrap();
    let sources = Sources::of_workspace(&repo(), standins(&d.path().join("standins")));
    assemble(&sources, BINARIES, &ctx).unwrap();
    assert!(!ctx.join("bin/stale").exists());
    let foreign = d.path().join("mine");
    fs::create_dir_all(&foreign).unwrap();
    fs::write(foreign.join("notes.txt"), "keep").unwrap();
    let err = assemble(&sources, BINARIES, &foreign)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(
        fs::read_to_string(foreign.join("notes.txt")).unwrap(),
        "keep"
    );
}

#[test]
fn broken_contexts_are_reported_by_file() {
    let d = tempfile::tempdir().unwrap();
    let ctx = assembled(d.path());
    fs::write(
        ctx.join("files/etc/crio/crio.conf.d/10-kinc.conf"),
        "[crio.runtime\n",
    )
    .unwrap();
    fs::write(ctx.join("manifests/cluster/bad.yaml"), "a: [1,\n").unwrap();
    fs::remove_dir_all(ctx.join("repos")).unwrap();
    fs::write(ctx.join("bin/crun-wrapper"), "#!/bin/sh\nexit 3\n").unwrap();
    let unit = ctx.join("files/etc/systemd/system/kinc-init.service");
    let text = fs::read_to_string(&unit)
        .unwrap()
        .replace("[Service]", "[Service]\nExecStratPost=/bin/true");
    fs::write(&unit, text).unwrap();

    let r = check_context(&ctx).unwrap();
    let all = r.problems.join("\n");
    assert!(
        all.contains("crio.conf.d/10-kinc.conf: invalid TOML"),
        "{all}"
    );
    assert!(
        all.contains("manifests/cluster/bad.yaml: document 0: invalid YAML"),
        "{all}"
    );
    assert!(
        all.contains("COPY source repos/kubernetes.repo is not in the context"),
        "{all}"
    );
    assert!(
        all.contains("bin/crun-wrapper --version: exit status: 3"),
        "{all}"
    );
}
