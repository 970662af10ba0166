//! The Quadlet units kinc renders, compared byte for byte with checked-in files.
//! `KINC_UPDATE_GOLDEN=1 cargo test -p kinc --test quadlet_golden` rewrites them.

use std::path::PathBuf;

use kinc::node::NodeSpec;
use kinc::quadlet::render_cluster;
use kinc_types::{ClusterConfig, ClusterName};

fn spec(name: &str, store: bool) -> NodeSpec {
    NodeSpec {
        config: ClusterConfig::new(
            ClusterName::new(name).unwrap(),
            6444,
            "10.64.32.0/20".parse().unwrap(),
            "10.64.48.0/20".parse().unwrap(),
        ),
        image: kinc_types::node::DEFAULT_NODE_IMAGE.into(),
        host_store: store.then(|| PathBuf::from("/home/alice/.local/share/containers/storage")),
        fuse: store,
    }
}

fn check(dir: &str, s: &NodeSpec) {
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(dir);
    let units = render_cluster(s).unwrap();
    assert_eq!(units.len(), 3);
    for u in units {
        let p = golden.join(&u.file_name);
        if std::env::var_os("KINC_UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(&golden).unwrap();
            std::fs::write(&p, &u.text).unwrap();
        }
        let want = std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e} (KINC_UPDATE_GOLDEN=1 writes it)", p.display()));
        assert_eq!(u.text, want, "{} differs from its golden file", u.file_name);
    }
}

#[test]
fn full_node_units_match_golden() {
    check("full", &spec("dev", true));
}

#[test]
fn minimal_node_units_match_golden() {
    check("minimal", &spec("ci-7", false));
}
