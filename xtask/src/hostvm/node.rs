//! The node image stand-in: a Debian systemd rootfs (built by debootstrap next to the host
//! image, imported with `podman import` in the guest), plus a thin per-run layer carrying
//! the xtask binary (the fake bootstrap) and whichever real kinc binaries exist.

/// Where the per-run layer puts the xtask binary in the node.
pub const NODE_XTASK: &str = "/usr/local/lib/kinc/xtask";
/// Self-signed key and certificate of the fake API server, made at the node's first start.
pub const NODE_TLS_DIR: &str = "/var/lib/kinc/fake-apiserver";

/// Writes kinc-types' bootstrap status file the way kinc-init would, once the real
/// binaries that exist have run.
pub fn fake_bootstrap_unit() -> String {
    format!(
        "[Unit]\n\
         Description=kinc stand-in bootstrap: writes the bootstrap status file\n\
         ConditionFileIsExecutable={NODE_XTASK}\n\
         After=basic.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         ExecStart={NODE_XTASK} hostvm fake-bootstrap\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// An HTTPS listener on the API port: openssl's test server with a self-signed certificate.
pub fn fake_apiserver_unit() -> String {
    let port = kinc_types::config::NODE_API_PORT;
    format!(
        "[Unit]\n\
         Description=kinc stand-in API server: HTTPS on {port}\n\
         After=basic.target\n\
         \n\
         [Service]\n\
         ExecStartPre=/usr/bin/mkdir -p {NODE_TLS_DIR}\n\
         ExecStartPre=/usr/bin/openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
         -nodes -days 30 -subj /CN=kinc-fake-apiserver -keyout {NODE_TLS_DIR}/key.pem \
         -out {NODE_TLS_DIR}/cert.pem\n\
         ExecStart=/usr/bin/openssl s_server -quiet -www -accept {port} \
         -key {NODE_TLS_DIR}/key.pem -cert {NODE_TLS_DIR}/cert.pem\n\
         Restart=always\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// `xtask hostvm fake-bootstrap`, inside the node: the steps a real bootstrap reports,
/// marked done (or skipped with the reason), in kinc-types' status file.
pub fn fake_bootstrap() -> anyhow::Result<()> {
    use kinc_types::status::{BootstrapStatus, STATUS_PATH};
    let cluster = read_cluster_name();
    let steps = ["cgroup-setup", "kubeadm-init", "cni", "ready"];
    let mut st = match BootstrapStatus::load(std::path::Path::new(STATUS_PATH)) {
        Ok(mut prev) => {
            prev.boot += 1;
            prev
        }
        Err(_) => BootstrapStatus::new(&cluster, &steps),
    };
    let path = std::path::Path::new(STATUS_PATH);
    for step in steps {
        st.start(step)?;
        st.save(path)?;
        match step {
            "cgroup-setup" if std::path::Path::new(CGROUP_SETUP).is_file() => {
                let ok = std::process::Command::new(CGROUP_SETUP)
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ok {
                    st.finish(step)?;
                } else {
                    st.fail(step, "cgroup-setup failed")?;
                    st.save(path)?;
                    anyhow::bail!("cgroup-setup failed");
                }
            }
            "cgroup-setup" => st.skip(step, "stand-in: no cgroup-setup binary in the image")?,
            "kubeadm-init" | "cni" => st.skip(step, "stand-in: no Kubernetes in this image")?,
            _ => st.finish(step)?,
        }
        st.save(path)?;
    }
    Ok(())
}

/// Where the per-run layer puts cgroup-setup if the workspace has it.
pub const CGROUP_SETUP: &str = "/usr/local/bin/cgroup-setup";

fn read_cluster_name() -> String {
    use kinc_types::config::{ClusterConfig, BAKED_CONFIG_DIR, CONFIG_FILE, MOUNTED_CONFIG_DIR};
    for dir in [MOUNTED_CONFIG_DIR, BAKED_CONFIG_DIR] {
        let p = std::path::Path::new(dir).join(CONFIG_FILE);
        if let Ok(c) = ClusterConfig::load(&p) {
            return c.name.to_string();
        }
    }
    "standin".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostvm::config::unit_syntax::{expect, parse};

    /// Runs the stand-in once per boot, after basic.target, only where the per-run layer put
    /// the xtask binary, and stays "active" so the status file is not rewritten by a restart.
    #[test]
    fn fake_bootstrap_unit_as_systemd_reads_it() {
        let exec = format!("{NODE_XTASK} hostvm fake-bootstrap");
        assert_eq!(
            parse(&fake_bootstrap_unit()).unwrap(),
            expect(&[
                (
                    "Unit",
                    &[
                        (
                            "Description",
                            "kinc stand-in bootstrap: writes the bootstrap status file"
                        ),
                        ("ConditionFileIsExecutable", NODE_XTASK),
                        ("After", "basic.target"),
                    ]
                ),
                (
                    "Service",
                    &[
                        ("Type", "oneshot"),
                        ("RemainAfterExit", "yes"),
                        ("ExecStart", &exec),
                    ]
                ),
                ("Install", &[("WantedBy", "multi-user.target")]),
            ])
        );
    }

    /// Makes its key and certificate before it listens, on the node's API port, and comes
    /// back if it dies (the host waits for the port to answer).
    #[test]
    fn fake_apiserver_unit_as_systemd_reads_it() {
        let port = kinc_types::config::NODE_API_PORT;
        let (key, cert) = (
            format!("{NODE_TLS_DIR}/key.pem"),
            format!("{NODE_TLS_DIR}/cert.pem"),
        );
        let mkdir = format!("/usr/bin/mkdir -p {NODE_TLS_DIR}");
        let req = format!(
            "/usr/bin/openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -days 30 -subj /CN=kinc-fake-apiserver -keyout {key} -out {cert}"
        );
        let serve =
            format!("/usr/bin/openssl s_server -quiet -www -accept {port} -key {key} -cert {cert}");
        let description = format!("kinc stand-in API server: HTTPS on {port}");
        assert_eq!(
            parse(&fake_apiserver_unit()).unwrap(),
            expect(&[
                (
                    "Unit",
                    &[("Description", &description), ("After", "basic.target")]
                ),
                (
                    "Service",
                    &[
                        ("ExecStartPre", &mkdir),
                        ("ExecStartPre", &req),
                        ("ExecStart", &serve),
                        ("Restart", "always"),
                    ]
                ),
                ("Install", &[("WantedBy", "multi-user.target")]),
            ])
        );
    }

    /// Both are enabled in the image.
    #[test]
    fn the_node_enables_both_units() {
        let links = crate::hostvm::config::node_symlinks();
        for u in ["kinc-fake-bootstrap.service", "kinc-fake-apiserver.service"] {
            let l = format!("etc/systemd/system/multi-user.target.wants/{u}");
            assert!(
                links
                    .iter()
                    .any(|(a, b)| *a == l && *b == format!("/etc/systemd/system/{u}")),
                "{u}: {links:?}"
            );
        }
    }
}
