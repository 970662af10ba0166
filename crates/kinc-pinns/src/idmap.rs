//! `--uid-mapping` / `--gid-mapping`: CRI-O's `container-host-size@` lists.

use crate::Error;

/// One line of a uid_map or gid_map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// Parses `0-100000-65536@65536-200000-10@` (CRI-O ends every entry with '@').
pub fn parse(flag: &str, text: &str) -> Result<Vec<IdRange>, Error> {
    let bad = |why: String| Error::Usage(format!("{flag} {text:?}: {why}"));
    let mut out = Vec::new();
    for entry in text.split('@').filter(|e| !e.is_empty()) {
        let nums: Vec<&str> = entry.split('-').collect();
        let [c, h, s] = nums.as_slice() else {
            return Err(bad(format!("entry {entry:?} is not container-host-size")));
        };
        let num = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| bad(format!("entry {entry:?}: {v:?} is not an id")))
        };
        let r = IdRange {
            container: num(c)?,
            host: num(h)?,
            size: num(s)?,
        };
        if r.size == 0 {
            return Err(bad(format!("entry {entry:?} has size 0")));
        }
        out.push(r);
    }
    if out.is_empty() {
        return Err(bad("no mapping".to_string()));
    }
    Ok(out)
}

/// The text written, in one write, to `/proc/<pid>/uid_map` or gid_map.
pub fn map_file_text(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.container, r.host, r.size))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crio_format() {
        let r = parse("--uid-mapping", "0-100000-65536@65536-200000-10@").unwrap();
        assert_eq!(
            r,
            [
                IdRange {
                    container: 0,
                    host: 100000,
                    size: 65536
                },
                IdRange {
                    container: 65536,
                    host: 200000,
                    size: 10
                }
            ]
        );
        assert_eq!(map_file_text(&r), "0 100000 65536\n65536 200000 10\n");
        // The trailing '@' is optional.
        assert_eq!(parse("--gid-mapping", "0-1-2").unwrap().len(), 1);
    }

    #[test]
    fn bad_mappings_name_flag_and_entry() {
        for (text, why) in [
            ("", "no mapping"),
            ("@", "no mapping"),
            ("0-1@", "\"0-1\" is not container-host-size"),
            ("0-1-2-3", "is not container-host-size"),
            ("0-x-2@", "\"x\" is not an id"),
            ("0--1-2@", "is not container-host-size"),
            ("0-1-0@", "size 0"),
        ] {
            let e = parse("--uid-mapping", text).expect_err(text).to_string();
            assert!(e.starts_with(&format!("--uid-mapping {text:?}")), "{e}");
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
