//! Parser messages made safe to print: serde, serde_yaml and toml quote the offending
//! input in full (`invalid type: string "<the whole file>", expected ...`), and that may
//! be a 10 MB scalar or a `.env` file's secrets. One rule for every kinc binary: at most
//! [`EXCERPT`] characters of any quoted run or word.

/// Characters kept of one quoted run or word of a message.
pub const EXCERPT: usize = 40;
/// Characters kept of a whole message (before the location).
pub const MAX_MESSAGE: usize = 300;

/// `msg` with every `"quoted"` or `` `backticked` `` run, and every word, cut to
/// [`EXCERPT`] characters (marked `…`), control characters escaped, and the whole cut to
/// [`MAX_MESSAGE`].
pub fn bounded(msg: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    // Characters of the current run (quoted, or a word) and whether some were dropped.
    let (mut run, mut cut) = (0usize, false);
    let mut chars = msg.chars();
    while let Some(c) = chars.next() {
        let closes = quote == Some(c);
        let opens = quote.is_none() && (c == '"' || c == '`');
        let ends_word = quote.is_none() && c.is_whitespace();
        if closes || opens || ends_word {
            if cut {
                out.push('…');
            }
            out.push(c);
            (run, cut) = (0, false);
            quote = if opens {
                Some(c)
            } else {
                quote.filter(|_| !closes)
            };
            continue;
        }
        if quote == Some('"') && c == '\\' {
            // An escape (`\"`, `\n`) counts as one character and never closes the run.
            let mut pair = String::from(c);
            pair.extend(chars.next());
            keep(&mut out, &pair, &mut run, &mut cut);
        } else {
            keep(&mut out, c.encode_utf8(&mut [0; 4]), &mut run, &mut cut);
        }
    }
    if cut {
        out.push('…');
    }
    if out.chars().count() > MAX_MESSAGE {
        out = out.chars().take(MAX_MESSAGE).collect::<String>() + "…";
    }
    out
}

/// Appends `s` (one character, or an escape pair) to the current run unless the run is
/// already [`EXCERPT`] long.
fn keep(out: &mut String, s: &str, run: &mut usize, cut: &mut bool) {
    if *run < EXCERPT {
        for c in s.chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
    } else {
        *cut = true;
    }
    *run += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_quoted_runs_and_words_are_cut() {
        let secret = format!("{}SECRET=hunter2", "A".repeat(100));
        let m = bounded(&format!(
            "apiPort: invalid type: string {secret:?}, expected u16"
        ));
        assert_eq!(
            m,
            format!(
                "apiPort: invalid type: string \"{}…\", expected u16",
                "A".repeat(EXCERPT)
            )
        );
        let m = bounded(&format!("invalid address: {secret} and more"));
        assert!(!m.contains("SECRET") && m.ends_with("… and more"), "{m}");
        let m = bounded(&format!("unknown field `{secret}`, expected `kind`"));
        assert!(
            !m.contains("SECRET") && m.ends_with("…`, expected `kind`"),
            "{m}"
        );
    }

    #[test]
    fn escapes_count_as_one_and_never_close_a_quote() {
        let m = bounded(r#"string "a\"b\nc", expected u16"#);
        assert_eq!(m, r#"string "a\"b\nc", expected u16"#);
        let long = format!("{:?}", "\"".repeat(100));
        let m = bounded(&format!("string {long}, expected u16"));
        // 40 escaped quotes, two bytes each.
        assert!(m.ends_with("\\\"…\", expected u16"), "{m}");
        assert_eq!(
            m.len(),
            "string \"".len() + 80 + "…\", expected u16".len(),
            "{m}"
        );
    }

    #[test]
    fn control_characters_are_escaped_and_the_whole_is_capped() {
        assert_eq!(bounded("bad \x1b[31mred"), "bad \\u{1b}[31mred");
        let m = bounded(&"word ".repeat(200));
        assert_eq!(m.chars().count(), MAX_MESSAGE + 1);
    }
}
