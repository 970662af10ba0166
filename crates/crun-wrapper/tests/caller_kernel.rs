//! [`Caller::from_kernel`] on the process running the tests: the only crun-wrapper test
//! that reads the real `/proc`. Ignored by default, since what it sees depends on the
//! machine; CI runs it (`--include-ignored`).

use crun_wrapper::caller::rlimit_key;
use crun_wrapper::Caller;
use oci_spec::runtime::PosixRlimitType;

#[test]
#[ignore = "reads the real host: /proc/self, capabilities, rlimits"]
fn reads_this_process() {
    let c = Caller::from_kernel().unwrap();
    assert!(!c.uid_map.0.is_empty());
    assert!(!c.gid_map.0.is_empty());
    assert!(c
        .rlimit_hard
        .contains_key(&rlimit_key(PosixRlimitType::RlimitNofile)));
    assert_eq!(
        c.oom_score_adj,
        std::fs::read_to_string("/proc/self/oom_score_adj")
            .unwrap()
            .trim()
            .parse::<i32>()
            .unwrap()
    );
    // CAP_SYS_RESOURCE counts only in the initial user namespace.
    if !c.uid_map.is_identity_full() {
        assert!(!c.sys_resource_in_init_ns);
    }
}
