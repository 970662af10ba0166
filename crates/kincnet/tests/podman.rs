//! A real client: Debian's podman 4.3.1 (CNI backend) runs two busybox containers on
//! a kincnet network. Conflist, plugin dir and containers.conf are temp files passed
//! through CONTAINERS_CONF; the image is built FROM scratch from busybox-static.
//! Runs in the host netns (that is where rootful podman runs CNI plugins), so its
//! bridge, subnet and names are unique to this process and removed afterwards.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_kincnet");

struct Podman {
    conf: PathBuf,
}

impl Podman {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.conf).args(args);
        c
    }
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// Removes containers, image, bridge and the firewall table on drop (also on panic).
struct Cleanup<'a> {
    podman: &'a Podman,
    containers: Vec<String>,
    image: String,
    bridge: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let mut args = vec!["rm", "-f", "--ignore", "-t", "0"];
        args.extend(self.containers.iter().map(String::as_str));
        let _ = self
            .podman
            .cmd(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self
            .podman
            .cmd(&["rmi", "-f", &self.image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        // kincnet's table in the host netns exists only because of this test.
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", kincnet::firewall::TABLE])
            .stderr(Stdio::null())
            .status();
    }
}

/// busybox FROM scratch (no registry here): rootfs with applet links, `podman import`.
fn build_image(podman: &Podman, dir: &Path, name: &str) {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "root", "var/www"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    std::os::unix::fs::symlink("bin", root.join("sbin")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(root.join("var/www/index.html"), "hello from kincnet\n").unwrap();
    let tar = dir.join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    podman.ok(&[
        "import",
        "-q",
        "--change",
        "CMD [\"/bin/sh\"]",
        "--change",
        "ENV PATH=/bin",
        tar.to_str().unwrap(),
        name,
    ]);
}

#[test]
#[ignore = "needs root, podman, runc, ip, nft, tar, busybox-static"]
fn podman_runs_containers_on_a_kincnet_network() {
    kinc_testutil::require_root_and!("podman", "runc", "ip", "nft", "tar");
    kinc_testutil::require(
        Path::new("/bin/busybox").exists(),
        "busybox-static (/bin/busybox)",
    );
    let pid = std::process::id();
    let tmp = tempfile::tempdir().unwrap();
    let (net_dir, plugin_dir, data_dir) = (
        tmp.path().join("net.d"),
        tmp.path().join("plugins"),
        tmp.path().join("ipam"),
    );
    for d in [&net_dir, &plugin_dir, &data_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::copy(BIN, plugin_dir.join("kincnet")).unwrap();
    let net = format!("kincnet-t{pid}");
    let bridge = format!("knpm{}", pid % 100_000);
    let third = 100 + pid % 150;
    let subnet = format!("10.214.{third}.0/24");
    let conflist = json!({"cniVersion": "1.0.0", "name": net, "plugins": [{
        "type": "kincnet", "bridge": bridge, "isGateway": true, "ipMasq": true,
        "hairpinMode": true, "capabilities": {"portMappings": true},
        "ipam": {"subnet": subnet, "routes": [{"dst": "0.0.0.0/0"}], "dataDir": data_dir}}]});
    std::fs::write(
        net_dir.join(format!("{net}.conflist")),
        conflist.to_string(),
    )
    .unwrap();
    let conf = tmp.path().join("containers.conf");
    let mut f = std::fs::File::create(&conf).unwrap();
    // runc and the ulimits: the two host blockers of podman on this VM.
    write!(
        f,
        "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
         [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [{:?}]\nnetwork_config_dir = {:?}\n\
         [engine]\nruntime = \"runc\"\n",
        plugin_dir.to_str().unwrap(),
        net_dir.to_str().unwrap()
    )
    .unwrap();
    drop(f);
    let podman = Podman { conf };
    let image = format!("localhost/kincnet-busybox-{pid}:test");
    let (c1, c2) = (format!("kincnet-a-{pid}"), format!("kincnet-b-{pid}"));
    let _cleanup = Cleanup {
        podman: &podman,
        containers: vec![c1.clone(), c2.clone()],
        image: image.clone(),
        bridge: bridge.clone(),
    };
    build_image(&podman, tmp.path(), &image);
    let host_port = (20000 + pid % 20000).to_string();
    let publish = format!("127.0.0.1:{host_port}:80");
    for (name, extra) in [(&c1, vec!["-p", publish.as_str()]), (&c2, vec![])] {
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name.as_str(),
            "--network",
            net.as_str(),
        ];
        args.extend(extra);
        args.extend([image.as_str(), "httpd", "-f", "-p", "80", "-h", "/var/www"]);
        podman.ok(&args);
    }
    let ip_of = |c: &str| -> String {
        let v: Value = serde_json::from_str(&podman.ok(&["inspect", c])).unwrap();
        v[0]["NetworkSettings"]["Networks"][&net]["IPAddress"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let (ip1, ip2) = (ip_of(&c1), ip_of(&c2));
    assert!(
        ip1.starts_with(&format!("10.214.{third}.")),
        "c1 address {ip1:?}"
    );
    assert_ne!(ip1, ip2);
    // They reach each other.
    let get = |from: &str, url: &str| {
        // No `-T`: busybox-static 1.35 wget segfaults with it.
        podman.ok(&["exec", from, "wget", "-q", "-O", "-", url])
    };
    assert_eq!(get(&c2, &format!("http://{ip1}/")), "hello from kincnet");
    assert_eq!(get(&c1, &format!("http://{ip2}/")), "hello from kincnet");
    // The -p mapping works from the host.
    let mut body = String::new();
    for _ in 0..20 {
        if let Ok(mut s) = std::net::TcpStream::connect(format!("127.0.0.1:{host_port}")) {
            use std::io::Read;
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            let _ = s.read_to_string(&mut body);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        body.contains("hello from kincnet"),
        "127.0.0.1:{host_port} answered {body:?}"
    );
    // podman rm releases the addresses.
    let store = data_dir.join(&net).join("allocations.json");
    let held = || -> usize {
        let v: Value = serde_json::from_slice(&std::fs::read(&store).unwrap()).unwrap();
        v["allocations"].as_object().map(|m| m.len()).unwrap_or(0)
    };
    assert_eq!(held(), 2);
    podman.ok(&["rm", "-f", "-t", "0", &c1, &c2]);
    assert_eq!(held(), 0, "addresses still held after podman rm");
    // DEL hands the veth delete to a detached child: it is gone a grace period later.
    let mut left = String::new();
    for _ in 0..50 {
        let links = Command::new("ip")
            .args(["-o", "link", "show", "master", &bridge])
            .output()
            .unwrap();
        left = String::from_utf8_lossy(&links.stdout).trim().to_string();
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(left.is_empty(), "veths left on {bridge}: {left}");
}
