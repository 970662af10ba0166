//! The node's Go programs (Kubernetes, etcd, CoreDNS, local-path-provisioner), built from
//! the pinned wrapper modules under `image/go/<component>` through the Go module proxy.
//!
//! Each component's binaries are cached under `<cache>/go/<component>-<key>`, where the
//! key hashes everything the build depends on (go.mod, go.sum, packages, flags, the Go
//! version): a second build with nothing changed is a directory lookup. A build goes to a
//! temporary directory first and is renamed into place only when every binary is there.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use kinc_types::versions as v;

/// One wrapper module and what it builds.
#[derive(Debug, Clone)]
pub struct GoComponent {
    /// Directory under `image/go/`.
    pub dir: &'static str,
    /// The upstream module and the version pinned in `kinc_types::versions`.
    pub module: &'static str,
    pub version: &'static str,
    /// (import path of a main package, binary name).
    pub programs: Vec<(&'static str, &'static str)>,
    /// Symbolic links made next to the binaries: (name, binary it points to). A
    /// multi-call binary runs the program its name names.
    pub links: Vec<(&'static str, &'static str)>,
    pub ldflags: Vec<String>,
    pub tags: &'static [&'static str],
}

/// Version stamps Kubernetes reads at run time. kubeadm needs gitMajor/gitMinor: without
/// them it computes its version skew from a placeholder and refuses the kubelet.
fn kubernetes_ldflags() -> Vec<String> {
    let minor = v::minor(v::KUBERNETES).unwrap_or("0");
    let mut f = Vec::new();
    for pkg in [
        "k8s.io/client-go/pkg/version",
        "k8s.io/component-base/version",
    ] {
        for (k, val) in [
            ("gitVersion", v::KUBERNETES),
            ("gitMajor", "1"),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
            ("gitCommit", "kinc-module-build"),
            ("buildDate", "1970-01-01T00:00:00Z"),
        ] {
            f.push(format!("-X {pkg}.{k}={val}"));
        }
    }
    f
}

/// The multi-call Kubernetes binary, and the programs it runs by name.
pub const KUBE: &str = "kube";
pub const KUBE_PROGRAMS: &[&str] = &[
    "kubeadm",
    "kubelet",
    "kubectl",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
];

impl GoComponent {
    /// Every name this component's build directory holds: binaries and links.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.programs
            .iter()
            .map(|p| p.1)
            .chain(self.links.iter().map(|l| l.0))
    }
}

/// Every component the offline node image needs.
pub fn components() -> Vec<GoComponent> {
    vec![
        GoComponent {
            dir: "kubernetes",
            module: "k8s.io/kubernetes",
            version: v::KUBERNETES,
            // One multi-call binary (image/go/kubernetes/cmd/kube): one copy of the
            // libraries the seven programs share, in the node and in the images.
            programs: vec![("kinc.dev/image/kubernetes/cmd/kube", KUBE)],
            links: KUBE_PROGRAMS.iter().map(|p| (*p, KUBE)).collect(),
            ldflags: kubernetes_ldflags(),
            // No cloud providers (a kinc node has none); `notest` as upstream's release.
            tags: &["providerless", "notest"],
        },
        GoComponent {
            dir: "etcd",
            module: "go.etcd.io/etcd/server/v3",
            version: v::ETCD,
            programs: vec![("go.etcd.io/etcd/server/v3", "etcd")],
            links: vec![],
            ldflags: vec!["-X go.etcd.io/etcd/api/v3/version.GitSHA=kinc".into()],
            tags: &[],
        },
        GoComponent {
            dir: "coredns",
            module: "github.com/coredns/coredns",
            version: v::COREDNS,
            programs: vec![("github.com/coredns/coredns", "coredns")],
            links: vec![],
            ldflags: vec!["-X github.com/coredns/coredns/coremain.GitCommit=kinc".into()],
            tags: &[],
        },
        GoComponent {
            dir: "local-path",
            module: "github.com/rancher/local-path-provisioner",
            version: v::LOCAL_PATH_PROVISIONER,
            programs: vec![(
                "github.com/rancher/local-path-provisioner",
                "local-path-provisioner",
            )],
            links: vec![],
            ldflags: vec![format!("-X main.VERSION={}", v::LOCAL_PATH_PROVISIONER)],
            tags: &[],
        },
    ]
}

/// The `require` version of `module` in a go.mod text, and whether every `k8s.io/*`
/// replace points at `staging` (None when there are none).
pub fn required_version<'a>(go_mod: &'a str, module: &str) -> Option<&'a str> {
    go_mod.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        let first = w.next()?;
        let (m, ver) = if first == "require" {
            (w.next()?, w.next()?)
        } else {
            (first, w.next()?)
        };
        (m == module && ver.starts_with('v')).then_some(ver)
    })
}

/// The `k8s.io/*` replace targets in a go.mod text: (module, version).
pub fn staging_replaces(go_mod: &str) -> Vec<(&str, &str)> {
    go_mod
        .lines()
        .filter_map(|l| {
            let (lhs, rhs) = l.split_once("=>")?;
            let lhs = lhs.trim().trim_start_matches("replace").trim();
            let mut r = rhs.split_whitespace();
            let (m, ver) = (r.next()?, r.next()?);
            (lhs == m && m.starts_with("k8s.io/")).then_some((m, ver))
        })
        .collect()
}

/// Where Go keeps its module and build caches, under kinc's cache root.
pub struct GoEnv {
    pub cache: PathBuf,
}

impl GoEnv {
    fn command(&self, module_dir: &Path) -> Command {
        let mut c = Command::new("go");
        c.current_dir(module_dir)
            .env("GOMODCACHE", self.cache.join("gomod"))
            .env("GOCACHE", self.cache.join("gobuild"))
            // go.sum is committed: a build never edits go.mod or fetches an unpinned module.
            .env("GOFLAGS", "-mod=readonly -buildvcs=false")
            .env("GOTOOLCHAIN", "local")
            .env("CGO_ENABLED", "0");
        c
    }

    /// `go version`, part of every cache key.
    pub fn version(&self) -> Result<String> {
        let out = Command::new("go")
            .arg("version")
            .env("GOTOOLCHAIN", "local")
            .output()
            .context(
                "running `go version`: Go 1.24 or newer is needed to build the offline node image",
            )?;
        if !out.status.success() {
            bail!("`go version` failed ({})", out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// The text the cache key hashes.
pub fn key_material(
    c: &GoComponent,
    go_mod: &str,
    go_sum: &str,
    sources: &str,
    go_version: &str,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "go {go_version}\nmodule {} {}", c.module, c.version);
    for (pkg, bin) in &c.programs {
        let _ = writeln!(s, "program {pkg} {bin}");
    }
    for (name, to) in &c.links {
        let _ = writeln!(s, "link {name} {to}");
    }
    let _ = writeln!(
        s,
        "ldflags {}\ntags {}",
        c.ldflags.join(" "),
        c.tags.join(",")
    );
    let _ = writeln!(s, "go.mod\n{go_mod}\ngo.sum\n{go_sum}\nsources\n{sources}");
    s
}

/// The Go sources of a wrapper module (its own main packages), path and content, sorted.
fn module_sources(dir: &Path) -> Result<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) -> Result<()> {
        for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                walk(root, &p, out)?;
            } else if p.extension().is_some_and(|x| x == "go") {
                let text =
                    fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
                let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
                out.push((rel, text));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    Ok(files
        .into_iter()
        .map(|(p, t)| format!("{p}\n{t}\n"))
        .collect())
}

/// Builds `c` unless the cache has it; returns the directory holding its binaries.
pub fn ensure_built(
    env: &GoEnv,
    go_root: &Path,
    c: &GoComponent,
    go_version: &str,
) -> Result<PathBuf> {
    let dir = go_root.join(c.dir);
    let go_mod = fs::read_to_string(dir.join("go.mod"))
        .with_context(|| format!("reading {}/go.mod", dir.display()))?;
    let go_sum = fs::read_to_string(dir.join("go.sum"))
        .with_context(|| format!("reading {}/go.sum", dir.display()))?;
    match required_version(&go_mod, c.module) {
        Some(ver) if ver == c.version => {}
        found => bail!(
            "{}/go.mod requires {} {}, but kinc_types::versions pins {}: run `go get -tool {}@{}` there",
            dir.display(),
            c.module,
            found.unwrap_or("(nothing)"),
            c.version,
            c.module,
            c.version
        ),
    }
    if let Some((m, ver)) = staging_replaces(&go_mod)
        .into_iter()
        .find(|(_, ver)| c.module == "k8s.io/kubernetes" && *ver != v::KUBERNETES_STAGING)
    {
        bail!(
            "{}/go.mod replaces {m} with {ver}, but Kubernetes {} needs its staging modules at {}",
            dir.display(),
            v::KUBERNETES,
            v::KUBERNETES_STAGING
        );
    }
    let sources = module_sources(&dir)?;
    let key = crate::hostvm::config::fnv1a64(
        key_material(c, &go_mod, &go_sum, &sources, go_version).as_bytes(),
    );
    let out = env
        .cache
        .join("go")
        .join(format!("{}-{}-{key:016x}", c.dir, c.version));
    if c.names().all(|b| out.join(b).is_file()) {
        eprintln!(
            "image: go {} {}: cached in {}",
            c.module,
            c.version,
            out.display()
        );
        return Ok(out);
    }
    let tmp = env
        .cache
        .join("go")
        .join(format!(".tmp-{}-{}", c.dir, std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;

    let t = Instant::now();
    eprintln!("image: go {} {}: downloading modules", c.module, c.version);
    // `go list -deps` fetches exactly the modules the programs import (a plain `go mod
    // download` would fetch every test dependency of the whole graph too).
    let dl = env
        .command(&dir)
        .args(["list", "-deps", "-f", "{{.ImportPath}}"])
        .args(c.programs.iter().map(|p| p.0))
        .output()
        .with_context(|| format!("running go list -deps in {}", dir.display()))?;
    if !dl.status.success() {
        let _ = fs::remove_dir_all(&tmp);
        bail!(
            "stage go-download: module {} {} (in {}): fetching its modules failed ({}):\n{}",
            c.module,
            c.version,
            dir.display(),
            dl.status,
            tail(&String::from_utf8_lossy(&dl.stderr), 20)
        );
    }
    eprintln!(
        "image: go {} {}: building {} ({:.0} s so far)",
        c.module,
        c.version,
        c.programs
            .iter()
            .map(|p| p.1)
            .collect::<Vec<_>>()
            .join(", "),
        t.elapsed().as_secs_f64()
    );
    for (pkg, bin) in &c.programs {
        let tb = Instant::now();
        let mut cmd = env.command(&dir);
        cmd.args(["build", "-trimpath"]);
        if !c.tags.is_empty() {
            cmd.arg(format!("-tags={}", c.tags.join(",")));
        }
        cmd.arg(format!("-ldflags=all=-s -w {}", c.ldflags.join(" ")))
            .arg("-o")
            .arg(tmp.join(bin))
            .arg(pkg);
        let o = cmd
            .output()
            .with_context(|| format!("running go build {pkg}"))?;
        if !o.status.success() {
            let _ = fs::remove_dir_all(&tmp);
            bail!(
                "stage go-build: module {} {}: building {pkg} failed ({}):\n{}",
                c.module,
                c.version,
                o.status,
                tail(&String::from_utf8_lossy(&o.stderr), 30)
            );
        }
        eprintln!(
            "image:   {bin} built in {:.0} s",
            tb.elapsed().as_secs_f64()
        );
    }
    for (name, to) in &c.links {
        std::os::unix::fs::symlink(to, tmp.join(name))
            .with_context(|| format!("linking {name} to {to} in {}", tmp.display()))?;
    }
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    fs::rename(&tmp, &out).with_context(|| format!("moving {} into place", out.display()))?;
    eprintln!(
        "image: go {} {}: done in {:.0} s",
        c.module,
        c.version,
        t.elapsed().as_secs_f64()
    );
    Ok(out)
}

/// The last `n` lines of `s`.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go_mod(dir: &str) -> String {
        let p = crate::hostvm::build::workspace_root()
            .join("image/go")
            .join(dir)
            .join("go.mod");
        fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn wrapper_modules_pin_the_versions_of_kinc_types() {
        for c in components() {
            let m = go_mod(c.dir);
            assert_eq!(
                required_version(&m, c.module),
                Some(c.version),
                "image/go/{}/go.mod",
                c.dir
            );
            assert!(
                crate::hostvm::build::workspace_root()
                    .join("image/go")
                    .join(c.dir)
                    .join("go.sum")
                    .is_file(),
                "{}: go.sum is committed",
                c.dir
            );
        }
    }

    #[test]
    fn every_staging_module_is_replaced_at_the_matching_release() {
        let m = go_mod("kubernetes");
        let r = staging_replaces(&m);
        // k/k v1.33 requires 31 staging modules at v0.0.0.
        assert_eq!(r.len(), 31, "{r:?}");
        for (module, ver) in r {
            assert_eq!(ver, v::KUBERNETES_STAGING, "{module}");
        }
        assert!(
            m.contains("godebug default=go1.24"),
            "k/k's godebug line is kept"
        );
    }

    #[test]
    fn required_version_reads_both_go_mod_forms() {
        let m = "module x\n\nrequire a.b/c v1.2.3\n\nrequire (\n\td.e/f v0.1.0 // indirect\n\tk8s.io/kubernetes v1.33.13\n)\n";
        assert_eq!(required_version(m, "a.b/c"), Some("v1.2.3"));
        assert_eq!(required_version(m, "k8s.io/kubernetes"), Some("v1.33.13"));
        assert_eq!(required_version(m, "nope"), None);
        let r = "replace (\n\tk8s.io/api => k8s.io/api v0.33.13\n\tk8s.io/x => ./x\n)\nreplace k8s.io/b => k8s.io/b v0.1.0\n";
        assert_eq!(
            staging_replaces(r),
            vec![("k8s.io/api", "v0.33.13"), ("k8s.io/b", "v0.1.0")]
        );
    }

    #[test]
    fn kubeadm_gets_major_and_minor() {
        let f = kubernetes_ldflags().join(" ");
        for pkg in [
            "k8s.io/client-go/pkg/version",
            "k8s.io/component-base/version",
        ] {
            assert!(f.contains(&format!("-X {pkg}.gitMajor=1")), "{f}");
            assert!(f.contains(&format!("-X {pkg}.gitMinor=33")), "{f}");
            assert!(f.contains(&format!("-X {pkg}.gitVersion=v1.33.13")), "{f}");
        }
        assert!(
            !f.contains('+'),
            "no + in the version: kubeadm turns it into _ in image tags"
        );
    }

    /// A module the proxy refuses fails in the download stage, naming the module, the
    /// version and the proxy's answer, and leaves no cache entry behind. CRI-O is the real
    /// case: the proxy answers 403 for every version, which is why the offline node runs
    /// containerd.
    #[test]
    #[ignore = "needs Go and the module proxy"]
    fn a_refused_module_is_a_clear_error_and_caches_nothing() {
        kinc_testutil::require_tools(&["go"]);
        let d = tempfile::tempdir().unwrap();
        let go_root = d.path().join("go");
        let m = go_root.join("crio");
        fs::create_dir_all(&m).unwrap();
        fs::write(
            m.join("go.mod"),
            "module kinc.dev/image/crio\n\ngo 1.24\n\nrequire github.com/cri-o/cri-o v1.34.11\n",
        )
        .unwrap();
        // Sums are checked after the download, which is refused first.
        let h = "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        fs::write(
            m.join("go.sum"),
            format!(
                "github.com/cri-o/cri-o v1.34.11 {h}\ngithub.com/cri-o/cri-o v1.34.11/go.mod {h}\n"
            ),
        )
        .unwrap();
        let c = GoComponent {
            dir: "crio",
            module: "github.com/cri-o/cri-o",
            version: "v1.34.11",
            programs: vec![("github.com/cri-o/cri-o/cmd/crio", "crio")],
            links: vec![],
            ldflags: vec![],
            tags: &[],
        };
        let env = GoEnv {
            cache: d.path().join("cache"),
        };
        let err = ensure_built(&env, &go_root, &c, "go-test")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("stage go-download")
                && err.contains("github.com/cri-o/cri-o v1.34.11")
                && err.contains("403"),
            "{err}"
        );
        let left: Vec<_> = fs::read_dir(d.path().join("cache/go"))
            .map(|r| r.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "cache entries left: {left:?}");
    }

    #[test]
    fn a_go_mod_that_disagrees_with_kinc_types_is_refused_before_building() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("etcd");
        fs::create_dir_all(&m).unwrap();
        fs::write(
            m.join("go.mod"),
            "module x\n\nrequire go.etcd.io/etcd/server/v3 v3.5.21\n",
        )
        .unwrap();
        fs::write(m.join("go.sum"), "").unwrap();
        let c = components().into_iter().find(|c| c.dir == "etcd").unwrap();
        let env = GoEnv {
            cache: d.path().join("cache"),
        };
        let err = ensure_built(&env, d.path(), &c, "go-test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("v3.5.21") && err.contains("v3.5.24"), "{err}");
    }

    #[test]
    fn cache_key_tracks_inputs() {
        let c = &components()[1];
        let a = key_material(c, "m", "s", "src", "go1");
        assert_eq!(a, key_material(c, "m", "s", "src", "go1"));
        assert_ne!(a, key_material(c, "m2", "s", "src", "go1"));
        assert_ne!(a, key_material(c, "m", "s2", "src", "go1"));
        assert_ne!(a, key_material(c, "m", "s", "src2", "go1"));
        assert_ne!(a, key_material(c, "m", "s", "src", "go2"));
        let mut c2 = c.clone();
        c2.ldflags.push("-X a.b=c".into());
        assert_ne!(a, key_material(&c2, "m", "s", "src", "go1"));
        let mut c3 = c.clone();
        c3.links.push(("x", "etcd"));
        assert_ne!(a, key_material(&c3, "m", "s", "src", "go1"));
    }

    #[test]
    fn module_sources_hash_every_go_file_of_the_wrapper_module() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("cmd/kube")).unwrap();
        fs::write(d.path().join("go.mod"), "module x\n").unwrap();
        fs::write(d.path().join("cmd/kube/main.go"), "package main\n").unwrap();
        let a = module_sources(d.path()).unwrap();
        assert!(a.contains("cmd/kube/main.go\npackage main"), "{a}");
        assert!(!a.contains("module x"), "{a}");
        fs::write(
            d.path().join("cmd/kube/main.go"),
            "package main // changed\n",
        )
        .unwrap();
        assert_ne!(a, module_sources(d.path()).unwrap());
    }

    #[test]
    fn the_kubernetes_programs_are_links_to_one_binary() {
        let k = components()
            .into_iter()
            .find(|c| c.dir == "kubernetes")
            .unwrap();
        assert_eq!(k.programs.len(), 1);
        let names: Vec<&str> = k.names().collect();
        for p in KUBE_PROGRAMS {
            assert!(names.contains(p), "{p} missing from {names:?}");
        }
        assert!(k.links.iter().all(|(_, to)| *to == KUBE));
    }
}
