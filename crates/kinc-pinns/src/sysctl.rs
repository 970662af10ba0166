//! `-s key=value`: parsing, the namespace a sysctl belongs to, and writing it.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::ns::Namespace;
use crate::Error;

/// One sysctl to set in the new namespaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sysctl {
    /// The argument as given, for messages.
    pub text: String,
    /// The key's components: `net.ipv4.conf.eth0/100.forwarding` is
    /// `["net", "ipv4", "conf", "eth0.100", "forwarding"]`.
    pub components: Vec<String>,
    pub value: String,
}

fn invalid(text: &str, reason: impl Into<String>) -> Error {
    Error::Sysctl {
        text: text.to_string(),
        reason: reason.into(),
    }
}

/// Parses one `key=value`. The key is dotted (`net.ipv4.ip_forward`, where a `/` stands
/// for a literal dot, as kubelet and sysctl(8) write it) or, when its first separator
/// is a slash, a path below /proc/sys (`net/ipv4/conf/eth0.100/forwarding`).
pub fn parse(text: &str) -> Result<Sysctl, Error> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(invalid(text, "missing '=' (expected key=value)"));
    };
    if key.is_empty() {
        return Err(invalid(text, "empty key"));
    }
    if value.is_empty() {
        return Err(invalid(text, "empty value"));
    }
    // CRI-O before 1.24 joined sysctls with '+' into one -s; it now passes one per -s
    // and no namespaced sysctl takes a '=' in its value.
    if value.contains('=') {
        return Err(invalid(
            text,
            format!("value {value:?} contains '=' (pass each sysctl with its own -s)"),
        ));
    }
    if let Some(c) = key.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(text, format!("key {key:?} contains {c:?}")));
    }
    let slash_form = key
        .find(['.', '/'])
        .is_some_and(|i| key.as_bytes()[i] == b'/');
    let components: Vec<String> = if slash_form {
        key.split('/').map(str::to_string).collect()
    } else {
        key.split('.').map(|c| c.replace('/', ".")).collect()
    };
    if let Some(c) = components
        .iter()
        .find(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err(invalid(
            text,
            format!("key {key:?} has an empty, '.' or '..' component {c:?}"),
        ));
    }
    Ok(Sysctl {
        text: text.to_string(),
        components,
        value: value.to_string(),
    })
}

impl Sysctl {
    /// The file below /proc/sys.
    pub fn rel_path(&self) -> PathBuf {
        self.components.iter().collect()
    }

    /// The namespace the kernel keeps this sysctl in, for the ones CRI-O lets a pod set
    /// (`pkg/config/sysctl.go`: `kernel.sem`, `kernel.shm*`, `kernel.msg*`,
    /// `fs.mqueue.*`, `net.*`); `None` for any other.
    pub fn namespace(&self) -> Option<Namespace> {
        let c: Vec<&str> = self.components.iter().map(String::as_str).collect();
        match c.as_slice() {
            ["net", _, ..] => Some(Namespace::Net),
            ["kernel", name] if *name == "sem" => Some(Namespace::Ipc),
            ["kernel", name, ..] if name.starts_with("shm") || name.starts_with("msg") => {
                Some(Namespace::Ipc)
            }
            ["fs", "mqueue", _, ..] => Some(Namespace::Ipc),
            _ => None,
        }
    }

    /// Writes the value under `proc_sys` (normally /proc/sys, which shows the sysctls
    /// of the writer's own namespaces).
    pub fn write(&self, proc_sys: &Path) -> Result<(), Error> {
        let path = proc_sys.join(self.rel_path());
        let res = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(self.value.as_bytes()));
        res.map_err(|err| Error::Io {
            context: format!("sysctl {:?}: write {}", self.text, path.display()),
            err,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(s: &Sysctl) -> Vec<&str> {
        s.components.iter().map(String::as_str).collect()
    }

    #[test]
    fn dotted_key() {
        let s = parse("net.ipv4.ip_forward=1").unwrap();
        assert_eq!(comps(&s), ["net", "ipv4", "ip_forward"]);
        assert_eq!(s.value, "1");
        assert_eq!(s.rel_path(), Path::new("net/ipv4/ip_forward"));
        assert_eq!(s.text, "net.ipv4.ip_forward=1");
    }

    #[test]
    fn slash_in_dotted_key_is_a_literal_dot() {
        let s = parse("net.ipv4.conf.eth0/100.forwarding=1").unwrap();
        assert_eq!(s.rel_path(), Path::new("net/ipv4/conf/eth0.100/forwarding"));
    }

    #[test]
    fn slashed_key_keeps_its_dots() {
        let s = parse("net/ipv4/conf/eth0.100/forwarding=0").unwrap();
        assert_eq!(comps(&s), ["net", "ipv4", "conf", "eth0.100", "forwarding"]);
        assert_eq!(s.value, "0");
    }

    #[test]
    fn value_is_kept_verbatim() {
        let s = parse("net.ipv4.ping_group_range=0 2147483647").unwrap();
        assert_eq!(s.value, "0 2147483647");
        let s = parse("net.ipv4.tcp_rmem=4096+87380").unwrap();
        assert_eq!(s.value, "4096+87380");
    }

    #[test]
    fn bad_pairs_are_refused_naming_the_text() {
        for (text, why) in [
            ("net.ipv4.ip_forward", "missing '='"),
            ("=1", "empty key"),
            ("net.ipv4.ip_forward=", "empty value"),
            ("a.b=c+d.e=f", "contains '='"),
            ("net..ip_forward=1", "component"),
            (".net.ip_forward=1", "component"),
            ("net.ipv4.=1", "component"),
            ("net/../../etc/passwd=1", "'..'"),
            ("net/./x=1", "'.'"),
            ("net.ipv4.ip forward=1", "contains ' '"),
        ] {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(&format!("{text:?}")), "{text}: {e}");
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn namespaces_follow_crio_allow_list() {
        let ns = |t: &str| parse(t).unwrap().namespace();
        assert_eq!(ns("net.ipv4.ip_forward=1"), Some(Namespace::Net));
        assert_eq!(ns("net/core/somaxconn=1024"), Some(Namespace::Net));
        assert_eq!(ns("kernel.shm_rmid_forced=1"), Some(Namespace::Ipc));
        assert_eq!(ns("kernel.shmmax=1"), Some(Namespace::Ipc));
        assert_eq!(ns("kernel.msgmax=1"), Some(Namespace::Ipc));
        assert_eq!(ns("kernel.sem=1 2 3 4"), Some(Namespace::Ipc));
        assert_eq!(ns("fs.mqueue.msg_max=10"), Some(Namespace::Ipc));
        assert_eq!(ns("kernel.sem_next_id=1"), None);
        assert_eq!(ns("kernel.hostname=x"), None);
        assert_eq!(ns("kernel.panic=1"), None);
        assert_eq!(ns("fs.mqueue=1"), None);
        assert_eq!(ns("net=1"), None);
        assert_eq!(ns("vm.swappiness=1"), None);
    }

    #[test]
    fn write_names_the_file_on_failure() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("net/ipv4")).unwrap();
        std::fs::write(d.path().join("net/ipv4/ip_forward"), "0").unwrap();
        parse("net.ipv4.ip_forward=1")
            .unwrap()
            .write(d.path())
            .unwrap();
        let got = std::fs::read_to_string(d.path().join("net/ipv4/ip_forward")).unwrap();
        assert_eq!(got, "1");
        let e = parse("net.ipv4.nope=1")
            .unwrap()
            .write(d.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("net/ipv4/nope"), "{e}");
        assert!(e.contains("\"net.ipv4.nope=1\""), "{e}");
    }
}
