//! `kinc` against real rootful podman, with a stand-in node image (see common/).
//! Needs root and podman; on CI a missing requirement fails the test.

mod common;

use common::scenarios;
use common::{Runner, Scratch};

/// Removes the test's image when dropped.
struct ImageGuard(String);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("podman")
            .args(["rmi", "--force", &self.0])
            .output();
    }
}

#[test]
#[ignore = "needs root, podman, busybox, runc"]
fn rootful_podman_create_list_delete_parallel_foreign_killed_interrupted() {
    kinc_testutil::require_root_and!("podman", "busybox", "runc");
    let pid = std::process::id();
    let s = Scratch::new();
    let conf = s.containers_conf();
    let image = format!("localhost/kinc-cli-standin:root{pid}");
    s.build_image(&image, &conf);
    let _img = ImageGuard(image.clone());
    let unit_dir = s.path().join("config/containers/systemd");
    let r = Runner {
        kinc: env!("CARGO_BIN_EXE_kinc").into(),
        env: vec![
            ("CONTAINERS_CONF".into(), conf.display().to_string()),
            (
                "XDG_DATA_HOME".into(),
                s.path().join("data").display().to_string(),
            ),
            (
                "XDG_CONFIG_HOME".into(),
                s.path().join("config").display().to_string(),
            ),
            (
                "KUBECONFIG".into(),
                s.path().join("kubeconfig").display().to_string(),
            ),
            // This host runs hybrid cgroups; the stand-in node does not need v2.
            ("KINC_SKIP_CHECKS".into(), "cgroup-v2".into()),
        ],
        user: None,
        cwd: s.path().to_path_buf(),
    };
    scenarios::create_list_delete(&r, &format!("kcli{pid}a"), &image);
    scenarios::foreign_untouched(&r, &format!("kcli{pid}f"), &image);
    scenarios::parallel_creates(&r, &format!("kcli{pid}p"), &image, 5);
    scenarios::killed_create_cleaned_by_delete(&r, &format!("kcli{pid}slowk"), &image, &unit_dir);
    scenarios::interrupted_create_cleans_up(&r, &format!("kcli{pid}slowi"), &image);
}
