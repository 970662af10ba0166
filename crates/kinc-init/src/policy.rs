//! The kincnet-policy controller's API access: its kubeconfig, made from the
//! ServiceAccount token that `manifests/cluster/kincnet-policy.yaml` asks for and the
//! cluster (server, CA) of kubeadm's admin kubeconfig.
//!
//! Token choice: a long-lived `kubernetes.io/service-account-token` Secret, not a
//! TokenRequest. The controller is a systemd unit outside any pod, so no kubelet rotates
//! a projected token for it; a TokenRequest token expires (one hour by default, and the
//! API server may cap any duration asked for), after which the watchers would fail until
//! someone minted a new one. The Secret's token lives as long as the Secret (deleting it
//! revokes the token), is the same on every boot, and only reaches what the ClusterRole
//! grants: list and watch of pods, namespaces and networkpolicies.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use kube_client::config::{
    AuthInfo, Context, Kubeconfig, KubeconfigError, NamedAuthInfo, NamedCluster, NamedContext,
};

/// Where kinc-init writes the controller's kubeconfig (mode 0600); the image's
/// `kincnet-policy.path` unit starts `kincnet-policy.service` once it exists.
pub const POLICY_KUBECONFIG: &str = kinc_types::node::POLICY_KUBECONFIG;
/// The ServiceAccount, its token Secret and their namespace, as the manifest names them.
pub const NAMESPACE: &str = "kube-system";
pub const SERVICE_ACCOUNT: &str = "kincnet-policy";
pub const TOKEN_SECRET: &str = "kincnet-policy-token";
/// Name of the user and the context in the written kubeconfig.
pub const KUBECONFIG_NAME: &str = "kincnet-policy";

const TOKEN_SECRET_TYPE: &str = "kubernetes.io/service-account-token";
const SA_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";

#[derive(Debug, thiserror::Error)]
pub enum PolicyAccessError {
    #[error("reading {path}: {source}")]
    ReadAdmin {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    ParseAdmin {
        path: PathBuf,
        source: KubeconfigError,
    },
    #[error("{path}: {what}")]
    AdminContent { path: PathBuf, what: String },
    #[error("`kubectl get secret {TOKEN_SECRET}` did not print a Secret as JSON: {0}")]
    SecretJson(serde_json::Error),
    #[error("Secret {NAMESPACE}/{TOKEN_SECRET}: {0}")]
    SecretContent(String),
    /// The Secret exists but kube-controller-manager has not filled in its token yet.
    #[error("Secret {NAMESPACE}/{TOKEN_SECRET} has no data.token yet (kube-controller-manager fills it in)")]
    TokenNotIssued,
}

/// The token of the Secret as `kubectl get secret -o json` prints it, after checking
/// that the Secret is the ServiceAccount token the manifest asks for.
pub fn token_from_secret_json(json: &str) -> Result<String, PolicyAccessError> {
    let secret: Secret = serde_json::from_str(json).map_err(PolicyAccessError::SecretJson)?;
    let bad = |what: String| PolicyAccessError::SecretContent(what);
    if secret.type_.as_deref() != Some(TOKEN_SECRET_TYPE) {
        return Err(bad(format!(
            "type is {:?}, expected {TOKEN_SECRET_TYPE:?}",
            secret.type_.unwrap_or_default()
        )));
    }
    let sa = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SA_NAME_ANNOTATION));
    if sa.map(String::as_str) != Some(SERVICE_ACCOUNT) {
        return Err(bad(format!(
            "annotation {SA_NAME_ANNOTATION} is {sa:?}, expected {SERVICE_ACCOUNT:?}"
        )));
    }
    let token = secret
        .data
        .as_ref()
        .and_then(|d| d.get("token"))
        .ok_or(PolicyAccessError::TokenNotIssued)?;
    let token =
        String::from_utf8(token.0.clone()).map_err(|_| bad("data.token is not UTF-8".into()))?;
    if token.trim().is_empty() {
        return Err(PolicyAccessError::TokenNotIssued);
    }
    Ok(token.trim().to_string())
}

/// Reads kubeadm's admin kubeconfig (not through `Kubeconfig::read_from`, which would
/// rewrite relative file paths against the directory it is read from).
pub fn read_admin(path: &Path) -> Result<Kubeconfig, PolicyAccessError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyAccessError::ReadAdmin {
        path: path.to_path_buf(),
        source,
    })?;
    Kubeconfig::from_yaml(&text).map_err(|source| PolicyAccessError::ParseAdmin {
        path: path.to_path_buf(),
        source,
    })
}

/// The controller's kubeconfig: the admin kubeconfig's current cluster (server, CA,
/// whatever else it says about the cluster) and the ServiceAccount `token`, in a single
/// context that is the current one.
pub fn controller_kubeconfig(
    admin: &Kubeconfig,
    admin_path: &Path,
    token: &str,
) -> Result<Kubeconfig, PolicyAccessError> {
    let bad = |what: String| PolicyAccessError::AdminContent {
        path: admin_path.to_path_buf(),
        what,
    };
    let current = admin
        .current_context
        .as_deref()
        .ok_or_else(|| bad("no current-context".into()))?;
    let cluster_name = admin
        .contexts
        .iter()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .ok_or_else(|| bad(format!("current-context {current:?} is not in contexts")))?;
    let cluster = admin
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| bad(format!("cluster {cluster_name:?} is not in clusters")))?;
    if cluster.server.as_deref().unwrap_or("").is_empty() {
        return Err(bad(format!("cluster {cluster_name:?} has no server")));
    }
    if cluster.certificate_authority_data.is_none() && cluster.certificate_authority.is_none() {
        return Err(bad(format!(
            "cluster {cluster_name:?} has no certificate-authority(-data)"
        )));
    }
    Ok(Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![NamedCluster {
            name: cluster_name.clone(),
            cluster: Some(cluster),
            ..NamedCluster::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: KUBECONFIG_NAME.into(),
            auth_info: Some(AuthInfo {
                token: Some(token.to_string().into()),
                ..AuthInfo::default()
            }),
            ..NamedAuthInfo::default()
        }],
        contexts: vec![NamedContext {
            name: KUBECONFIG_NAME.into(),
            context: Some(Context {
                cluster: cluster_name,
                user: Some(KUBECONFIG_NAME.into()),
                ..Context::default()
            }),
            ..NamedContext::default()
        }],
        current_context: Some(KUBECONFIG_NAME.into()),
        ..Kubeconfig::default()
    })
}

/// The kubeconfig as YAML, the form kubectl and kube-rs read.
pub fn to_yaml(kc: &Kubeconfig) -> String {
    serde_yaml::to_string(kc).expect("a kubeconfig serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test fixture: CA "CA" (Q0E=), client certificate "CERT".
    const ADMIN: &str = include_str!("../tests/fixtures/admin.conf");

    fn secret(token: Option<&str>) -> String {
        let mut s = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "type": TOKEN_SECRET_TYPE,
            "metadata": {"name": TOKEN_SECRET, "namespace": NAMESPACE,
                "annotations": {SA_NAME_ANNOTATION: SERVICE_ACCOUNT}},
        });
        if let Some(t) = token {
            // The API returns data base64-encoded; ByteString decodes it.
            s["data"] = serde_json::json!({"token": b64(t), "ca.crt": b64("CA")});
        }
        s.to_string()
    }

    fn b64(s: &str) -> String {
        use k8s_openapi::ByteString;
        serde_json::to_value(ByteString(s.as_bytes().to_vec()))
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn token_comes_from_the_service_account_secret() {
        assert_eq!(
            token_from_secret_json(&secret(Some("eyJhbGc.x.y"))).unwrap(),
            "eyJhbGc.x.y"
        );
        assert!(matches!(
            token_from_secret_json(&secret(None)),
            Err(PolicyAccessError::TokenNotIssued)
        ));
        let mut wrong: serde_json::Value = serde_json::from_str(&secret(Some("t"))).unwrap();
        wrong["type"] = "Opaque".into();
        let e = token_from_secret_json(&wrong.to_string()).unwrap_err();
        assert!(e.to_string().contains("\"Opaque\""), "{e}");
        wrong["type"] = TOKEN_SECRET_TYPE.into();
        wrong["metadata"]["annotations"][SA_NAME_ANNOTATION] = "default".into();
        let e = token_from_secret_json(&wrong.to_string()).unwrap_err();
        assert!(e.to_string().contains("\"default\""), "{e}");
        let e = token_from_secret_json("").unwrap_err();
        assert!(e.to_string().contains("did not print a Secret"), "{e}");
    }

    #[test]
    fn kubeconfig_keeps_the_admin_cluster_and_uses_only_the_token() {
        let admin = Kubeconfig::from_yaml(ADMIN).unwrap();
        let kc = controller_kubeconfig(&admin, Path::new("/a"), "tok").unwrap();
        let yaml = to_yaml(&kc);
        // What kube-rs (the controller) reads back.
        let back = Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!(back.current_context.as_deref(), Some(KUBECONFIG_NAME));
        let c = back.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(c.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(c.certificate_authority_data.as_deref(), Some("Q0E="));
        assert_eq!(back.auth_infos.len(), 1);
        let u = back.auth_infos[0].auth_info.as_ref().unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(u.token.as_ref().unwrap().expose_secret(), "tok");
        // The admin's client certificate never leaks into the controller's file.
        assert!(u.client_certificate_data.is_none() && u.client_key_data.is_none());
        assert!(!yaml.contains("Q0VSVA=="), "{yaml}");
        let ctx = back.contexts[0].context.as_ref().unwrap();
        assert_eq!(
            (ctx.cluster.as_str(), ctx.user.as_deref()),
            ("kubernetes", Some(KUBECONFIG_NAME))
        );
    }

    #[test]
    fn an_admin_kubeconfig_without_what_is_needed_is_named() {
        for (text, want) in [
            ("apiVersion: v1\nkind: Config\n", "no current-context"),
            (
                "current-context: x\ncontexts: []\n",
                "current-context \"x\" is not in contexts",
            ),
            (
                "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c}\nclusters:\n- name: c\n  cluster: {certificate-authority-data: Q0EK}\n",
                "has no server",
            ),
            (
                "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c}\nclusters:\n- name: c\n  cluster: {server: https://a}\n",
                "no certificate-authority",
            ),
        ] {
            let admin = Kubeconfig::from_yaml(text).unwrap();
            let e = controller_kubeconfig(&admin, Path::new("/etc/kubernetes/admin.conf"), "t")
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("/etc/kubernetes/admin.conf: ") && e.contains(want),
                "{e}"
            );
        }
    }
}
