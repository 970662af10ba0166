//! Quadlet units rendered from the templates in `quadlet/` with typed values.
//!
//! A template holds `{{key}}` placeholders. A placeholder inside a line takes a one-line
//! value; a placeholder alone on its line takes zero or more whole lines. Unknown or
//! unused placeholders and values with newlines are errors, so a unit is never
//! half-filled or split by a value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kinc_types::config::{MOUNTED_CONFIG_DIR, NODE_API_PORT};
use kinc_types::{labels, ClusterName};

use crate::node::{host_store_mount, volume_labels, NodeSpec};

pub const NODE_TEMPLATE: &str = include_str!("../../../quadlet/node.container");
pub const VOLUME_TEMPLATE: &str = include_str!("../../../quadlet/volume.volume");

/// The line every rendered unit carries; delete only removes files that have it.
pub fn owner_line() -> String {
    format!("Label={}={}", labels::OWNER, labels::OWNER_VALUE)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    One(String),
    Lines(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("template line {line}: unknown placeholder {{{{{key}}}}}")]
    Unknown { key: String, line: usize },
    #[error("template line {line}: unclosed placeholder")]
    Unclosed { line: usize },
    #[error("value for {{{{{key}}}}} must be a single line without control characters: {value:?}")]
    BadValue { key: String, value: String },
    #[error(
        "template line {line}: {{{{{key}}}}} expands to lines and must stand alone on its line"
    )]
    NotAlone { key: String, line: usize },
    #[error("value {key:?} given but the template never uses it")]
    Unused { key: String },
}

/// Fills a template.
pub fn render(template: &str, values: &BTreeMap<&str, Value>) -> Result<String, RenderError> {
    for (k, v) in values {
        let lines: Vec<&String> = match v {
            Value::One(s) => vec![s],
            Value::Lines(l) => l.iter().collect(),
        };
        if let Some(bad) = lines.iter().find(|s| s.chars().any(char::is_control)) {
            return Err(RenderError::BadValue {
                key: k.to_string(),
                value: bad.to_string(),
            });
        }
    }
    let mut used = std::collections::BTreeSet::new();
    let mut out = String::new();
    for (i, line) in template.lines().enumerate() {
        let lineno = i + 1;
        let trimmed = line.trim();
        if let Some(key) = trimmed
            .strip_prefix("{{")
            .and_then(|r| r.strip_suffix("}}"))
            .filter(|k| !k.contains('{') && !k.contains('}'))
        {
            if let Some(Value::Lines(ls)) = values.get(key) {
                used.insert(key);
                for l in ls {
                    out.push_str(l);
                    out.push('\n');
                }
                continue;
            }
        }
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or(RenderError::Unclosed { line: lineno })?;
            let key = &after[..end];
            match values.get(key) {
                Some(Value::One(v)) => out.push_str(v),
                Some(Value::Lines(_)) => {
                    return Err(RenderError::NotAlone {
                        key: key.into(),
                        line: lineno,
                    })
                }
                None => {
                    return Err(RenderError::Unknown {
                        key: key.into(),
                        line: lineno,
                    })
                }
            }
            used.insert(key);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    if let Some(k) = values.keys().find(|k| !used.contains(*k)) {
        return Err(RenderError::Unused { key: k.to_string() });
    }
    Ok(out)
}

fn one(s: impl Into<String>) -> Value {
    Value::One(s.into())
}

fn label_lines(l: &[(String, String)]) -> Value {
    Value::Lines(l.iter().map(|(k, v)| format!("Label={k}={v}")).collect())
}

/// A rendered unit: its file name in the Quadlet directory and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub file_name: String,
    pub text: String,
}

/// The three units of a cluster: two volumes and the node container.
pub fn render_cluster(spec: &NodeSpec) -> Result<Vec<Unit>, RenderError> {
    let n = spec.name();
    let mut units = Vec::new();
    for (vol, role) in [
        (n.var_volume(), labels::ROLE_VAR),
        (n.config_volume(), labels::ROLE_CONFIG),
    ] {
        let mut v = BTreeMap::new();
        v.insert("cluster", one(n.as_str()));
        v.insert("volume", one(vol.clone()));
        v.insert("labels", label_lines(&volume_labels(n, role)));
        units.push(Unit {
            file_name: format!("{vol}.volume"),
            text: render(VOLUME_TEMPLATE, &v)?,
        });
    }
    let mut v = BTreeMap::new();
    v.insert("cluster", one(n.as_str()));
    v.insert("container", one(n.container()));
    v.insert("image", one(spec.image.clone()));
    v.insert("labels", label_lines(&spec.node_labels()));
    v.insert("api_port", one(spec.config.api_port.to_string()));
    v.insert("node_api_port", one(NODE_API_PORT.to_string()));
    v.insert("var_volume_unit", one(n.var_volume()));
    v.insert("config_volume_unit", one(n.config_volume()));
    v.insert("config_dir", one(MOUNTED_CONFIG_DIR));
    let store = spec
        .host_store
        .iter()
        .map(|s| format!("Volume={}", host_store_mount(s)))
        .collect();
    v.insert("host_store", Value::Lines(store));
    let dev = if spec.fuse {
        vec!["AddDevice=/dev/fuse".to_string()]
    } else {
        vec![]
    };
    v.insert("devices", Value::Lines(dev));
    units.push(Unit {
        file_name: format!("{}.container", n.container()),
        text: render(NODE_TEMPLATE, &v)?,
    });
    Ok(units)
}

/// The systemd service Quadlet generates for the node.
pub fn node_service(name: &ClusterName) -> String {
    format!("{}.service", name.container())
}

/// `$XDG_CONFIG_HOME/containers/systemd`, else `~/.config/containers/systemd`.
pub fn unit_dir_from(env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    if let Some(d) = env("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("containers/systemd"));
    }
    env("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".config/containers/systemd"))
}

pub fn unit_dir() -> Option<PathBuf> {
    unit_dir_from(&|k| std::env::var_os(k))
}

/// The unit files of a cluster that exist in `dir` and that kinc rendered.
pub fn installed_units(dir: &Path, name: &ClusterName) -> Vec<PathBuf> {
    [
        format!("{}.container", name.container()),
        format!("{}.volume", name.var_volume()),
        format!("{}.volume", name.config_volume()),
    ]
    .into_iter()
    .map(|f| dir.join(f))
    .filter(|p| {
        std::fs::read_to_string(p)
            .map(|t| t.lines().any(|l| l.trim() == owner_line()))
            .unwrap_or(false)
    })
    .collect()
}

/// Writes the units atomically into `dir`.
pub fn install(dir: &Path, units: &[Unit]) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut paths = Vec::new();
    for u in units {
        let p = dir.join(&u.file_name);
        kinc_types::fsutil::write_atomic(&p, u.text.as_bytes(), Some(0o644))?;
        paths.push(p);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(pairs: &[(&'static str, Value)]) -> BTreeMap<&'static str, Value> {
        pairs.iter().cloned().collect()
    }

    #[test]
    fn fills_inline_and_line_placeholders() {
        let t = "A={{a}}x{{a}}\n  {{l}}\nB\n";
        let out = render(
            t,
            &vals(&[
                ("a", one("1")),
                ("l", Value::Lines(vec!["L=1".into(), "L=2".into()])),
            ]),
        )
        .unwrap();
        assert_eq!(out, "A=1x1\nL=1\nL=2\nB\n");
        let out = render("{{l}}\nB\n", &vals(&[("l", Value::Lines(vec![]))])).unwrap();
        assert_eq!(out, "B\n");
    }

    #[test]
    fn rejects_what_would_corrupt_a_unit() {
        assert_eq!(
            render("X={{nope}}\n", &BTreeMap::new()).unwrap_err(),
            RenderError::Unknown {
                key: "nope".into(),
                line: 1
            }
        );
        assert!(matches!(
            render("X={{a}}\n", &vals(&[("a", one("1\nExecStart=evil"))])),
            Err(RenderError::BadValue { .. })
        ));
        assert!(matches!(
            render("X={{l}}\n", &vals(&[("l", Value::Lines(vec![]))])),
            Err(RenderError::NotAlone { .. })
        ));
        assert!(matches!(
            render("X\n", &vals(&[("a", one("1"))])),
            Err(RenderError::Unused { .. })
        ));
        assert!(matches!(
            render("X={{a\n", &vals(&[("a", one("1"))])),
            Err(RenderError::Unclosed { line: 1 })
        ));
    }

    #[test]
    fn unit_dir_follows_xdg() {
        let env = |k: &str| (k == "HOME").then(|| std::ffi::OsString::from("/h"));
        assert_eq!(
            unit_dir_from(&env).unwrap(),
            PathBuf::from("/h/.config/containers/systemd")
        );
    }

    #[test]
    fn installed_units_only_lists_kinc_rendered_files() {
        let d = tempfile::tempdir().unwrap();
        let spec = crate::node::tests::spec();
        install(d.path(), &render_cluster(&spec).unwrap()).unwrap();
        let foreign = d.path().join("kinc-dev-var-data.volume");
        std::fs::write(&foreign, "[Volume]\n").unwrap();
        let found = installed_units(d.path(), spec.name());
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(!found.contains(&foreign));
    }
}
