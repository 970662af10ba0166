//! The built `pinns` refusing bad command lines (no root needed: nothing happens).

mod common;

use common::*;

#[test]
fn help_exits_0_and_lists_crio_flags() {
    let out = pinns(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--dir",
        "--filename",
        "--ipc",
        "--net",
        "--uts",
        "--user",
        "--sysctl",
        "--uid-mapping",
        "--gid-mapping",
    ] {
        assert!(text.contains(flag), "{flag} missing from help:\n{text}");
    }
}

#[test]
fn unknown_or_missing_arguments_exit_2_naming_them() {
    for (args, want) in [
        (&["-d", "/x", "-f", "p", "--net", "--pid"][..], "'--pid'"),
        (&["-d", "/x", "-f", "p", "--net", "-l", "info"], "'-l'"),
        (&["-f", "p", "--net"], "--dir <DIR>"),
        (&["-d", "/x", "--net"], "--filename <NAME>"),
        (&["-d", "/x", "-f", "p"], "no namespace to pin"),
        (&["-d", "/x", "-f", "p", "--net=private"], "--net=private"),
    ] {
        let out = pinns(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn refused_sysctls_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ns");
    let d = dir.to_str().unwrap();
    for (args, want) in [
        (
            &["-d", d, "-f", "p", "--net", "-s", "a.b=c+d.e=f"][..],
            "sysctl \"a.b=c+d.e=f\": value \"c+d.e=f\" contains '='",
        ),
        (
            &[
                "-d",
                d,
                "-f",
                "p",
                "--net=host",
                "-s",
                "net.ipv4.ip_forward=1",
            ],
            "sysctl \"net.ipv4.ip_forward=1\": belongs to the net namespace",
        ),
        (
            &["-d", d, "-f", "p", "--ipc", "-s", "net.core.somaxconn=1"],
            "needs --net without =host",
        ),
        (
            &["-d", d, "-f", "p", "--net", "-s", "vm.swappiness=1"],
            "not a namespaced sysctl",
        ),
    ] {
        let out = pinns(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!dir.exists(), "{args:?} created {}", dir.display());
    }
}
