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
