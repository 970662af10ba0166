//! Running external programs: separate arguments, stderr captured, failures that name the
//! command.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Human-readable rendering of a command line for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd`, its output going to ours (long steps like debootstrap show progress).
pub fn run_visible(cmd: &mut Command) -> Result<()> {
    let what = describe(cmd);
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("starting `{what}`"))?;
    if !status.success() {
        bail!("`{what}` failed: {status}");
    }
    Ok(())
}

/// Runs `cmd` quietly; on failure the error carries its stderr.
pub fn run_quiet(cmd: &mut Command) -> Result<String> {
    let what = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting `{what}`"))?;
    if !out.status.success() {
        bail!(
            "`{what}` failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `chroot ROOT ARGS...` with a clean, predictable environment.
pub fn chroot<I, S>(root: &Path, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new("chroot");
    c.arg(root).args(args);
    c.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LC_ALL", "C");
    c
}

/// Finds `tool` on PATH or in the sbin directories a non-login shell may lack.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file());
    found
}

/// Fails with one message listing every missing tool and the Debian package that has it.
pub fn require_tools(tools: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<String> = tools
        .iter()
        .filter(|(t, _)| which(t).is_none())
        .map(|(t, pkg)| format!("`{t}` (Debian package {pkg})"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing {}; install with `apt-get install {}`",
            missing.join(", "),
            tools
                .iter()
                .filter(|(t, _)| which(t).is_none())
                .map(|(_, p)| *p)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(())
}

/// Copies a binary without its debug info (`strip --strip-debug`, binutils), else as is.
/// Debug builds are 5-10 times larger than their code: every megabyte costs time on the
/// way into the guest (9p) and into a podman layer under emulation.
pub fn copy_stripped(src: &Path, dest: &Path) -> Result<()> {
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(dest)
        .arg(src)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(src, dest)
            .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_and_missing_tools() {
        let mut c = Command::new("echo");
        c.args(["a b", "c"]);
        assert_eq!(describe(&c), "echo a b c");
        let err = require_tools(&[("sh", "dash"), ("no-such-tool-kinc", "kinc-pkg")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`no-such-tool-kinc` (Debian package kinc-pkg)"),
            "{err}"
        );
        assert!(err.contains("apt-get install kinc-pkg"), "{err}");
        assert!(!err.contains("dash"), "{err}");
        let err = run_quiet(Command::new("sh").args(["-c", "echo oops >&2; exit 3"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("oops") && err.contains("sh -c"), "{err}");
    }

    #[test]
    fn stripped_copy_still_runs() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("true");
        copy_stripped(Path::new("/bin/true"), &dest).unwrap();
        assert!(Command::new(&dest).status().unwrap().success());
        // A file strip cannot read is copied as it is.
        let text = dir.path().join("t.txt");
        std::fs::write(&text, "x").unwrap();
        copy_stripped(&text, &dir.path().join("t2")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("t2")).unwrap(), b"x");
    }
}
