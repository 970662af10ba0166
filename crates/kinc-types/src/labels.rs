//! Labels kinc puts on every Podman resource it creates. kinc only ever lists,
//! inspects or removes resources that carry [`OWNER`] with value [`OWNER_VALUE`].

/// Marks a resource as created by kinc.
pub const OWNER: &str = "io.kinc.owner";
pub const OWNER_VALUE: &str = "kinc";
/// The cluster a resource belongs to.
pub const CLUSTER: &str = "io.kinc.cluster";
/// What the resource is for: `node`, `var-data`, `config`.
pub const ROLE: &str = "io.kinc.role";
/// The API port published on 127.0.0.1 (on the node container).
pub const API_PORT: &str = "io.kinc.api-port";
/// Pod and service CIDRs allocated to the cluster (on the node container).
pub const POD_SUBNET: &str = "io.kinc.pod-subnet";
pub const SERVICE_SUBNET: &str = "io.kinc.service-subnet";

pub const ROLE_NODE: &str = "node";
pub const ROLE_VAR: &str = "var-data";
pub const ROLE_CONFIG: &str = "config";

/// `label=value` filter strings for `podman ... --filter label=...`.
pub fn filter(key: &str, value: &str) -> String {
    format!("label={key}={value}")
}
