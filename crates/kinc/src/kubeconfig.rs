//! Kubeconfig files as typed structs, and merging a cluster's entries into a user's file
//! the way kubectl does: only our cluster, user and context (all named `kinc-<name>`)
//! are replaced or removed, everything else (unknown fields included) is kept, the file
//! is written by temp file + rename with mode 0600 under a flock.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    #[serde(
        default,
        rename = "apiVersion",
        skip_serializing_if = "String::is_empty"
    )]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_vec")]
    pub clusters: Vec<Named<ClusterEntry>>,
    #[serde(default, deserialize_with = "null_vec")]
    pub users: Vec<Named<Value>>,
    #[serde(default, deserialize_with = "null_vec")]
    pub contexts: Vec<Named<ContextEntry>>,
    #[serde(default)]
    pub current_context: String,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

fn null_vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// `{name, cluster|user|context}`: the payload's key depends on the list it is in, so
/// it is kept as one flattened map entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Named<T> {
    pub name: String,
    #[serde(flatten)]
    pub item: BTreeMap<String, T>,
}

impl<T> Named<T> {
    fn new(name: &str, key: &str, item: T) -> Self {
        let mut m = BTreeMap::new();
        m.insert(key.to_string(), item);
        Self {
            name: name.to_string(),
            item: m,
        }
    }
    pub fn get(&self, key: &str) -> Option<&T> {
        self.item.get(key)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ClusterEntry {
    #[serde(default)]
    pub server: String,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ContextEntry {
    #[serde(default)]
    pub cluster: String,
    #[serde(default)]
    pub user: String,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    /// `msg` is bounded ([`crate::excerpt`]): a kubeconfig holds keys and tokens.
    #[error("parsing kubeconfig {path}: {msg}")]
    Parse { path: String, msg: String },
    #[error("kubeconfig {path} has no {what}")]
    Incomplete { path: String, what: &'static str },
    #[error("cannot find a kubeconfig path: set KUBECONFIG or HOME")]
    NoPath,
}

impl Kubeconfig {
    pub fn parse(text: &str, path: &str) -> Result<Self, KubeconfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml::from_str(text).map_err(|e| KubeconfigError::Parse {
            path: path.into(),
            msg: crate::excerpt::yaml(&e),
        })
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("kubeconfig always serializes")
    }

    /// Turns the node's admin.conf into the host's view of cluster `context`: one
    /// cluster, user and context all named `context`, the server on 127.0.0.1:port.
    pub fn for_host(
        &self,
        context: &str,
        api_port: u16,
        path: &str,
    ) -> Result<Self, KubeconfigError> {
        let inc = |what| KubeconfigError::Incomplete {
            path: path.into(),
            what,
        };
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == self.current_context)
            .or(self.contexts.first())
            .and_then(|c| c.get("context"))
            .ok_or_else(|| inc("context"))?;
        let mut cluster = self
            .clusters
            .iter()
            .find(|c| c.name == ctx.cluster)
            .or(self.clusters.first())
            .and_then(|c| c.get("cluster"))
            .cloned()
            .ok_or_else(|| inc("cluster"))?;
        let user = self
            .users
            .iter()
            .find(|u| u.name == ctx.user)
            .or(self.users.first())
            .and_then(|u| u.get("user"))
            .cloned()
            .ok_or_else(|| inc("user"))?;
        cluster.server = format!("https://127.0.0.1:{api_port}");
        let mut context_entry = ctx.clone();
        context_entry.cluster = context.into();
        context_entry.user = context.into();
        Ok(Self {
            api_version: "v1".into(),
            kind: "Config".into(),
            clusters: vec![Named::new(context, "cluster", cluster)],
            users: vec![Named::new(context, "user", user)],
            contexts: vec![Named::new(context, "context", context_entry)],
            current_context: context.into(),
            extra: BTreeMap::new(),
        })
    }

    /// Replaces or appends every entry of `ours` by name and makes its context current.
    pub fn merge(&mut self, ours: &Kubeconfig) {
        fn upsert<T: Clone>(list: &mut Vec<Named<T>>, new: &[Named<T>]) {
            for n in new {
                match list.iter_mut().find(|e| e.name == n.name) {
                    Some(e) => *e = n.clone(),
                    None => list.push(n.clone()),
                }
            }
        }
        if self.api_version.is_empty() {
            self.api_version = "v1".into();
        }
        if self.kind.is_empty() {
            self.kind = "Config".into();
        }
        upsert(&mut self.clusters, &ours.clusters);
        upsert(&mut self.users, &ours.users);
        upsert(&mut self.contexts, &ours.contexts);
        self.current_context = ours.current_context.clone();
    }

    /// Removes the cluster, user and context named `name`; true when something went.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.clusters.len() + self.users.len() + self.contexts.len();
        self.clusters.retain(|e| e.name != name);
        self.users.retain(|e| e.name != name);
        self.contexts.retain(|e| e.name != name);
        if self.current_context == name {
            self.current_context.clear();
        }
        before != self.clusters.len() + self.users.len() + self.contexts.len()
    }
}

/// The file `export kubeconfig` writes: the first `$KUBECONFIG` entry that exists (else
/// its first entry), or `~/.kube/config`.
pub fn merge_path(env: &dyn Fn(&str) -> Option<OsString>) -> Result<PathBuf, KubeconfigError> {
    if let Some(list) = env("KUBECONFIG").filter(|v| !v.is_empty()) {
        let paths: Vec<PathBuf> = std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if let Some(p) = paths.iter().find(|p| p.exists()).or(paths.first()) {
            return Ok(p.clone());
        }
    }
    env("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".kube/config"))
        .ok_or(KubeconfigError::NoPath)
}

/// Locks `<file>.kinc.lock`, reads `path`, applies `change`, writes it back atomically
/// with mode 0600. Nothing is written when `change` returns false.
pub fn update_file(
    path: &Path,
    change: impl FnOnce(&mut Kubeconfig) -> bool,
) -> Result<(), KubeconfigError> {
    let io = |what, p: &Path| {
        let path = p.display().to_string();
        move |source| KubeconfigError::Io { what, path, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy())
        .unwrap_or_default();
    let lock_path = dir.join(format!(".{file}.kinc.lock"));
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io("opening", &lock_path))?;
    lock.lock().map_err(io("locking", &lock_path))?;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io("reading", path)(e)),
    };
    let mut cfg = Kubeconfig::parse(&text, &path.display().to_string())?;
    if change(&mut cfg) {
        kinc_types::fsutil::write_atomic(path, cfg.to_yaml().as_bytes(), Some(0o600))
            .map_err(io("writing", path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const ADMIN: &str = "apiVersion: v1
kind: Config
clusters:
- name: kubernetes
  cluster:
    certificate-authority-data: Q0E=
    server: https://kinc-dev-control-plane:6443
users:
- name: kubernetes-admin
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
contexts:
- name: kubernetes-admin@kubernetes
  context:
    cluster: kubernetes
    user: kubernetes-admin
current-context: kubernetes-admin@kubernetes
preferences: {}
";

    const THEIRS: &str = "apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster:
    server: https://prod:443
    insecure-skip-tls-verify: true
users:
- name: prod
  user:
    exec:
      command: get-token
contexts:
- name: prod
  context:
    cluster: prod
    user: prod
    namespace: web
current-context: prod
preferences:
  colors: true
";

    fn ours() -> Kubeconfig {
        Kubeconfig::parse(ADMIN, "admin.conf")
            .unwrap()
            .for_host("kinc-dev", 6444, "admin.conf")
            .unwrap()
    }

    #[test]
    fn host_view_renames_and_points_at_loopback() {
        let o = ours();
        assert_eq!(o.current_context, "kinc-dev");
        let c = o.clusters[0].get("cluster").unwrap();
        assert_eq!(c.server, "https://127.0.0.1:6444");
        assert!(c.extra.contains_key("certificate-authority-data"));
        let ctx = o.contexts[0].get("context").unwrap();
        assert_eq!(
            (ctx.cluster.as_str(), ctx.user.as_str()),
            ("kinc-dev", "kinc-dev")
        );
        assert_eq!(o.users[0].name, "kinc-dev");
    }

    #[test]
    fn merge_keeps_others_and_replaces_ours() {
        let mut theirs = Kubeconfig::parse(THEIRS, "t").unwrap();
        let original_prod = theirs.clusters[0].clone();
        theirs.merge(&ours());
        theirs.merge(&ours()); // twice: replaced, not duplicated
        assert_eq!(theirs.clusters.len(), 2);
        assert_eq!(theirs.contexts.len(), 2);
        assert_eq!(theirs.clusters[0], original_prod);
        assert_eq!(theirs.current_context, "kinc-dev");
        let text = theirs.to_yaml();
        assert!(text.contains("insecure-skip-tls-verify: true"), "{text}");
        assert!(text.contains("command: get-token") && text.contains("namespace: web"));
        assert!(
            text.contains("colors: true"),
            "unknown top-level fields kept: {text}"
        );
        let back = Kubeconfig::parse(&text, "x").unwrap();
        assert_eq!(back, theirs);
        assert!(theirs.remove("kinc-dev"));
        assert!(!theirs.remove("kinc-dev"));
        assert_eq!(theirs.clusters, vec![original_prod]);
        assert_eq!(theirs.current_context, "");
    }

    #[test]
    fn update_file_writes_0600_atomically() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kube/config");
        update_file(&p, |k| {
            k.merge(&ours());
            true
        })
        .unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k = Kubeconfig::parse(&std::fs::read_to_string(&p).unwrap(), "p").unwrap();
        assert_eq!(k.current_context, "kinc-dev");
        // A parse error leaves the file as it was.
        std::fs::write(&p, "clusters: [").unwrap();
        assert!(update_file(&p, |_| true).is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "clusters: [");
    }

    #[test]
    fn merge_path_rules() {
        let d = tempfile::tempdir().unwrap();
        let exists = d.path().join("b");
        std::fs::write(&exists, "").unwrap();
        let list = format!("{}:{}", d.path().join("a").display(), exists.display());
        let env = |k: &str| (k == "KUBECONFIG").then(|| OsString::from(&list));
        assert_eq!(merge_path(&env).unwrap(), exists);
        let env = |k: &str| (k == "HOME").then(|| OsString::from("/h"));
        assert_eq!(merge_path(&env).unwrap(), PathBuf::from("/h/.kube/config"));
    }
}
