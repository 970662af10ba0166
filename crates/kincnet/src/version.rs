//! CNI spec versions kincnet speaks, and the VERSION answer.

use serde::Serialize;

use crate::error::{CniError, CniResult, Code};

/// The versions whose result format kincnet can produce (0.3.x and 0.4.0 share one).
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
pub const LATEST: &str = "1.1.0";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V030,
    V031,
    V040,
    V100,
    V110,
}

impl Version {
    pub fn parse(s: &str) -> CniResult<Version> {
        Ok(match s {
            "0.3.0" => Version::V030,
            "0.3.1" => Version::V031,
            "0.4.0" => Version::V040,
            "1.0.0" => Version::V100,
            "1.1.0" => Version::V110,
            _ => {
                return Err(CniError::new(
                    Code::IncompatibleVersion,
                    format!("incompatible CNI versions: cniVersion {s:?} is not supported"),
                )
                .with_details(format!("config is {s:?}, plugin supports {SUPPORTED:?}")))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V030 => "0.3.0",
            Version::V031 => "0.3.1",
            Version::V040 => "0.4.0",
            Version::V100 => "1.0.0",
            Version::V110 => "1.1.0",
        }
    }

    /// Results before 1.0.0 carry `"version": "4"` on every IP.
    pub fn ip_has_version_field(self) -> bool {
        self < Version::V100
    }

    /// CHECK exists from 0.4.0; STATUS and GC from 1.1.0.
    pub fn has_check(self) -> bool {
        self >= Version::V040
    }
}

/// The VERSION answer, labelled with the version asked for when kincnet speaks it.
pub fn version_info(asked: Option<&str>) -> String {
    #[derive(Serialize)]
    struct Info<'a> {
        #[serde(rename = "cniVersion")]
        cni_version: &'a str,
        #[serde(rename = "supportedVersions")]
        supported: &'a [&'a str],
    }
    let v = asked
        .and_then(|a| Version::parse(a).ok())
        .map(Version::as_str)
        .unwrap_or(LATEST);
    serde_json::to_string(&Info {
        cni_version: v,
        supported: SUPPORTED,
    })
    .expect("VERSION JSON always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_answers_in_asked_version() {
        assert_eq!(
            version_info(Some("1.0.0")),
            r#"{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
        );
        assert!(version_info(Some("7.0.0")).starts_with(r#"{"cniVersion":"1.1.0""#));
    }

    #[test]
    fn unknown_version_is_code_1() {
        let e = Version::parse("0.2.0").unwrap_err();
        assert_eq!(e.code, Code::IncompatibleVersion);
        assert!(e.details.unwrap().contains("1.1.0"));
    }
}
