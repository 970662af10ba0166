//! [`Host::gather`] and `kinc doctor` on the machine the tests run on: the only kinc tests
//! that read the real `/etc/passwd`, `/sys`, `/proc` and 127.0.0.1 ports. Ignored by
//! default, since what they see depends on the machine; CI runs them (`--include-ignored`).

use std::net::TcpListener;
use std::path::Path;

use kinc::host::Host;
use kinc::runner::SystemRunner;
use kinc::Kinc;

#[test]
#[ignore = "reads the real host: uid, /etc/passwd, rlimits, 127.0.0.1 ports"]
fn gather_reads_this_process_and_probes_real_ports() {
    let h = Host::gather();
    // SAFETY: getuid has no preconditions.
    assert_eq!(h.uid, unsafe { libc::getuid() });
    assert_eq!(h.root, Path::new("/"));
    assert!(!h.user.is_empty());
    assert!(h.nofile_hard > 0);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    assert!(!h.port_free(port), "{port} is bound");
    assert!(h.port_answers(port), "{port} listens");
}

#[test]
#[ignore = "reads the real host: /sys, /proc, /etc, podman and systemctl through kinc doctor"]
fn doctor_runs_every_check_on_this_host() {
    let d = tempfile::tempdir().unwrap();
    let mut k = Kinc::from_env(SystemRunner, Host::gather()).unwrap();
    k.data_dir = d.path().to_path_buf();
    let findings = k.doctor();
    assert_eq!(findings.len(), 15, "{findings:#?}");
    for f in &findings {
        assert!(!f.summary.is_empty(), "{f:?}");
        if f.level != kinc::doctor::Level::Ok {
            assert!(f.fix.as_deref().is_some_and(|x| !x.is_empty()), "{f:?}");
        }
    }
}
