//! Parser errors made safe to print. serde quotes the offending input in full
//! (`invalid type: string "<the whole file>", expected ...`), and that input may be a
//! 10 MB scalar or a `.env` file's secrets. An error keeps what was expected, the line
//! and column, and at most [`EXCERPT`] characters of any quoted run or word.

pub use kinc_types::excerpt::{bounded, EXCERPT, MAX_MESSAGE};

/// `line L, column C: <bounded message>` for serde_yaml's `<message> at line L column C`.
pub fn yaml(e: &serde_yaml::Error) -> String {
    let text = e.to_string();
    match e.location() {
        Some(l) => located(&text, l.line(), l.column()),
        None => bounded(&text),
    }
}

/// The same for serde_json's `<message> at line L column C`.
pub fn json(e: &serde_json::Error) -> String {
    located(&e.to_string(), e.line(), e.column())
}

fn located(text: &str, line: usize, column: usize) -> String {
    if line == 0 {
        return bounded(text);
    }
    // serde_yaml leaves out "at line 1 column 1": errors from a type's own parser (a
    // CIDR, a name) carry the start of the document, not theirs.
    match text.strip_suffix(&format!(" at line {line} column {column}")) {
        Some(msg) => format!("line {line}, column {column}: {}", bounded(msg)),
        None => bounded(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_errors_lead_with_the_location() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct C {
            port: u16,
        }
        let text = format!("port: \"{}\"\n", "x".repeat(5000));
        let e = serde_yaml::from_str::<C>(&text).unwrap_err();
        let m = yaml(&e);
        assert!(
            m.starts_with("line 1, column 7: port: invalid type: string \"xxx"),
            "{m}"
        );
        assert!(m.ends_with("…\", expected u16"), "{m}");
        let e = serde_json::from_str::<C>(&format!("{{\"port\": \"{}\"}}", "x".repeat(5000)))
            .unwrap_err();
        let m = json(&e);
        assert!(
            m.starts_with("line 1, column 5011: invalid type: string"),
            "{m}"
        );
        assert!(m.len() < 120, "{m}");
    }
}
