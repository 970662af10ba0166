//! The command line CRI-O passes (`internal/config/nsmgr/nsmgr_linux.go`), e.g.
//! `pinns -d /var/run/crio/ns -f <uuid> -s net.ipv4.ip_forward=1 --ipc --net --uts`,
//! with `--net=host` / `--ipc=host` for host namespaces and, for user-namespaced pods,
//! `--user --uid-mapping=0-100000-65536@ --gid-mapping=0-100000-65536@`.

use std::path::PathBuf;

use clap::Parser;

use crate::idmap::{self, IdRange};
use crate::ns::{Mode, Namespace};
use crate::sysctl::{self, Sysctl};
use crate::Error;

/// Arguments as clap sees them; [`Config::from_cli`] checks how they fit together.
#[derive(Parser, Debug)]
#[command(
    name = "pinns",
    version,
    about = "Create a pod's namespaces, set their sysctls and pin them with bind mounts (CRI-O's pinns)"
)]
pub struct Cli {
    /// Directory holding the pin directories (ipcns/, netns/, utsns/, ...)
    #[arg(short = 'd', long = "dir", value_name = "DIR")]
    pub dir: PathBuf,
    /// Name of the pin file in each pin directory (ipcns/, netns/, ...)
    #[arg(short = 'f', long = "filename", value_name = "NAME")]
    pub filename: String,
    /// New UTS namespace (=host: pin pinns' own)
    #[arg(short = 'u', long = "uts", num_args = 0..=1, require_equals = true, value_name = "host")]
    pub uts: Option<Option<String>>,
    /// New IPC namespace (=host: pin pinns' own)
    #[arg(short = 'i', long = "ipc", num_args = 0..=1, require_equals = true, value_name = "host")]
    pub ipc: Option<Option<String>>,
    /// New network namespace (=host: pin pinns' own)
    #[arg(short = 'n', long = "net", num_args = 0..=1, require_equals = true, value_name = "host")]
    pub net: Option<Option<String>>,
    /// New user namespace, needs --uid-mapping and --gid-mapping (=host: pin pinns' own)
    #[arg(short = 'U', long = "user", num_args = 0..=1, require_equals = true, value_name = "host")]
    pub user: Option<Option<String>>,
    /// New cgroup namespace (=host: pin pinns' own)
    #[arg(short = 'c', long = "cgroup", num_args = 0..=1, require_equals = true, value_name = "host")]
    pub cgroup: Option<Option<String>>,
    /// New mount namespace (=host: pin pinns' own)
    #[arg(short = 'm', long = "mnt", num_args = 0..=1, require_equals = true, value_name = "host")]
    pub mnt: Option<Option<String>>,
    /// Sysctl to set in the new namespaces; repeat for more
    #[arg(short = 's', long = "sysctl", value_name = "KEY=VALUE")]
    pub sysctl: Vec<String>,
    /// User namespace uid map: container-host-size@...
    #[arg(long = "uid-mapping", value_name = "MAPPINGS")]
    pub uid_mapping: Option<String>,
    /// User namespace gid map: container-host-size@...
    #[arg(long = "gid-mapping", value_name = "MAPPINGS")]
    pub gid_mapping: Option<String>,
}

/// A checked request: everything pinns will do, decided before it changes anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub dir: PathBuf,
    pub file: String,
    /// In bind order, each kind at most once.
    pub namespaces: Vec<(Namespace, Mode)>,
    pub sysctls: Vec<Sysctl>,
    pub uid_map: Option<Vec<IdRange>>,
    pub gid_map: Option<Vec<IdRange>>,
}

fn mode(flag: &str, v: &Option<String>) -> Result<Mode, Error> {
    match v.as_deref() {
        None => Ok(Mode::New),
        Some("host") => Ok(Mode::Host),
        Some(other) => Err(Error::Usage(format!(
            "--{flag}={other}: the only value is \"host\""
        ))),
    }
}

impl Config {
    pub fn from_cli(cli: &Cli) -> Result<Config, Error> {
        if cli.dir.as_os_str().is_empty() {
            return Err(Error::Usage("--dir is empty".to_string()));
        }
        let f = &cli.filename;
        if f.is_empty() || f == "." || f == ".." || f.contains('/') {
            return Err(Error::Usage(format!(
                "--filename {f:?}: must be one path component"
            )));
        }
        let flags = [
            (Namespace::User, &cli.user),
            (Namespace::Uts, &cli.uts),
            (Namespace::Ipc, &cli.ipc),
            (Namespace::Net, &cli.net),
            (Namespace::Cgroup, &cli.cgroup),
            (Namespace::Mnt, &cli.mnt),
        ];
        let mut namespaces = Vec::new();
        for (ns, v) in flags {
            if let Some(v) = v {
                namespaces.push((ns, mode(ns.name(), v)?));
            }
        }
        if namespaces.is_empty() {
            return Err(Error::Usage(
                "no namespace to pin: pass one or more of --ipc, --net, --uts, --user, --cgroup, --mnt"
                    .to_string(),
            ));
        }
        let new = |ns| namespaces.contains(&(ns, Mode::New));

        let uid_map = cli
            .uid_mapping
            .as_deref()
            .map(|t| idmap::parse("--uid-mapping", t))
            .transpose()?;
        let gid_map = cli
            .gid_mapping
            .as_deref()
            .map(|t| idmap::parse("--gid-mapping", t))
            .transpose()?;
        if new(Namespace::User) {
            if uid_map.is_none() || gid_map.is_none() {
                return Err(Error::Usage(
                    "--user needs both --uid-mapping and --gid-mapping".to_string(),
                ));
            }
        } else if uid_map.is_some() || gid_map.is_some() {
            return Err(Error::Usage(
                "--uid-mapping and --gid-mapping need --user (a new user namespace)".to_string(),
            ));
        }

        let mut sysctls = Vec::new();
        for text in &cli.sysctl {
            let s = sysctl::parse(text)?;
            // Writing a sysctl of a namespace pinns does not create would change the
            // host's (or node container's) value.
            match s.namespace() {
                None => {
                    return Err(Error::Sysctl {
                        text: s.text,
                        reason: "not a namespaced sysctl (allowed: net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)".to_string(),
                    })
                }
                Some(ns) if !new(ns) => {
                    return Err(Error::Sysctl {
                        text: s.text,
                        reason: format!(
                            "belongs to the {ns} namespace, which is not being created (needs --{ns} without =host)"
                        ),
                    })
                }
                Some(_) => sysctls.push(s),
            }
        }
        Ok(Config {
            dir: cli.dir.clone(),
            file: f.clone(),
            namespaces,
            sysctls,
            uid_map,
            gid_map,
        })
    }

    /// Namespaces to create.
    pub fn new_namespaces(&self) -> impl Iterator<Item = Namespace> + '_ {
        self.namespaces
            .iter()
            .filter(|(_, m)| *m == Mode::New)
            .map(|(ns, _)| *ns)
    }

    /// Whether the namespaces must be made in a helper process: a user namespace needs
    /// its maps written from outside, and a mount namespace can only be bind-mounted
    /// from outside itself (as upstream, also for =host).
    pub fn needs_helper(&self) -> bool {
        self.namespaces
            .iter()
            .any(|(ns, _)| matches!(ns, Namespace::User | Namespace::Mnt))
    }
}

/// Parses a full command line (program name first).
pub fn parse<I, T>(args: I) -> Result<Config, Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args).map_err(|e| Error::Usage(e.to_string()))?;
    Config::from_cli(&cli)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> Result<Config, Error> {
        parse(std::iter::once("pinns").chain(args.iter().copied()))
    }

    fn err(args: &[&str]) -> String {
        cfg(args).expect_err(&format!("{args:?}")).to_string()
    }

    #[test]
    fn crio_command_line() {
        let c = cfg(&[
            "-d",
            "/var/run/crio/ns",
            "-f",
            "0b7c1e0e-9d2a",
            "-s",
            "net.ipv4.ip_forward=1",
            "-s",
            "kernel.shm_rmid_forced=1",
            "--ipc",
            "--net",
            "--uts",
        ])
        .unwrap();
        assert_eq!(c.dir, PathBuf::from("/var/run/crio/ns"));
        assert_eq!(c.file, "0b7c1e0e-9d2a");
        assert_eq!(
            c.namespaces,
            [
                (Namespace::Uts, Mode::New),
                (Namespace::Ipc, Mode::New),
                (Namespace::Net, Mode::New)
            ]
        );
        let texts: Vec<_> = c.sysctls.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["net.ipv4.ip_forward=1", "kernel.shm_rmid_forced=1"]);
        assert!(!c.needs_helper());
        assert_eq!(c.uid_map, None);
    }

    #[test]
    fn host_namespaces_and_long_forms() {
        let c = cfg(&[
            "--dir=/ns",
            "--filename",
            "x",
            "--ipc=host",
            "--net=host",
            "--uts",
        ])
        .unwrap();
        assert_eq!(
            c.namespaces,
            [
                (Namespace::Uts, Mode::New),
                (Namespace::Ipc, Mode::Host),
                (Namespace::Net, Mode::Host)
            ]
        );
        assert_eq!(c.new_namespaces().collect::<Vec<_>>(), [Namespace::Uts]);
    }

    #[test]
    fn short_flags() {
        let c = cfg(&["-d", "/ns", "-f", "x", "-i", "-n", "-u", "-c", "-m"]).unwrap();
        let kinds: Vec<_> = c.namespaces.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            kinds,
            [
                Namespace::Uts,
                Namespace::Ipc,
                Namespace::Net,
                Namespace::Cgroup,
                Namespace::Mnt
            ]
        );
        assert!(c.needs_helper());
    }

    #[test]
    fn user_namespace_with_crio_mappings() {
        let c = cfg(&[
            "-d",
            "/ns",
            "-f",
            "x",
            "--ipc",
            "--net",
            "--uts",
            "--user",
            "--uid-mapping=0-100000-65536@",
            "--gid-mapping=0-200000-65536@",
        ])
        .unwrap();
        assert!(c.needs_helper());
        assert_eq!(c.uid_map.unwrap()[0].host, 100000);
        assert_eq!(c.gid_map.unwrap()[0].host, 200000);
    }

    #[test]
    fn missing_and_unknown_arguments() {
        assert!(err(&["-f", "x", "--net"]).contains("--dir <DIR>"));
        assert!(err(&["-d", "/ns", "--net"]).contains("--filename <NAME>"));
        assert!(err(&["-d", "/ns", "-f", "x"]).contains("no namespace to pin"));
        assert!(err(&["-d", "/ns", "-f", "x", "--net", "--pid"]).contains("'--pid'"));
        assert!(err(&["-d", "/ns", "-f", "x", "--net", "-p"]).contains("'-p'"));
        assert!(err(&["-d", "/ns", "-f", "x", "--net", "extra"]).contains("'extra'"));
        assert!(err(&["-d", "/ns", "-f", "x", "-s"]).contains("--sysctl"));
    }

    #[test]
    fn bad_values() {
        let e = err(&["-d", "/ns", "-f", "x", "--net=none"]);
        assert!(e.contains("--net=none"), "{e}");
        for f in ["", ".", "..", "a/b"] {
            let e = err(&["-d", "/ns", "-f", f, "--net"]);
            assert!(e.contains(&format!("--filename {f:?}")), "{e}");
        }
        let e = err(&["-d", "", "-f", "x", "--net"]);
        assert!(e.contains("a value is required for '--dir <DIR>'"), "{e}");
    }

    #[test]
    fn mappings_go_with_a_new_user_namespace() {
        let e = err(&["-d", "/ns", "-f", "x", "--user", "--uid-mapping=0-1-1@"]);
        assert!(e.contains("--gid-mapping"), "{e}");
        let e = err(&["-d", "/ns", "-f", "x", "--net", "--uid-mapping=0-1-1@"]);
        assert!(e.contains("need --user"), "{e}");
        let e = err(&[
            "-d",
            "/ns",
            "-f",
            "x",
            "--user=host",
            "--uid-mapping=0-1-1@",
            "--gid-mapping=0-1-1@",
        ]);
        assert!(e.contains("need --user"), "{e}");
        let e = err(&[
            "-d",
            "/ns",
            "-f",
            "x",
            "--user",
            "--uid-mapping=0-1@",
            "--gid-mapping=0-1-1@",
        ]);
        assert!(e.contains("--uid-mapping \"0-1@\""), "{e}");
    }

    #[test]
    fn sysctls_must_belong_to_a_new_namespace() {
        let base = ["-d", "/ns", "-f", "x", "--ipc", "--uts"];
        let with = |extra: &[&str]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            err(&v)
        };
        let e = with(&["-s", "net.ipv4.ip_forward=1"]);
        assert!(e.contains("\"net.ipv4.ip_forward=1\""), "{e}");
        assert!(e.contains("net namespace"), "{e}");
        let e = with(&["--net=host", "-s", "net.ipv4.ip_forward=1"]);
        assert!(e.contains("needs --net without =host"), "{e}");
        let e = with(&["--net", "-s", "kernel.panic=1"]);
        assert!(
            e.contains("\"kernel.panic=1\": not a namespaced sysctl"),
            "{e}"
        );
        let e = with(&["--net", "-s", "a.b=c+d.e=f"]);
        assert!(e.contains("\"a.b=c+d.e=f\""), "{e}");
        // The IPC ones are fine with a new IPC namespace.
        let mut v = base.to_vec();
        v.extend_from_slice(&[
            "-s",
            "kernel.shm_rmid_forced=1",
            "--sysctl=fs.mqueue.msg_max=20",
        ]);
        assert_eq!(cfg(&v).unwrap().sysctls.len(), 2);
    }
}
