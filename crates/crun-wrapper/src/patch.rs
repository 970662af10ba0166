//! Byte-exact patching of a JSON document. The rules work on a parsed copy
//! (`serde_json::Value`); only the values that differ between that copy and the original
//! are encoded again and spliced into the original bytes. Everything else stays byte for
//! byte: numbers `Value` cannot hold exactly (beyond i64/u64, `1.0e2`, `-0`), string
//! escapes, whitespace and key order.
//!
//! [`Layout`] is the byte span of every value of a document that serde_json has already
//! accepted, so it never has to judge validity, only find boundaries.

use std::borrow::Cow;
use std::ops::Range;

use serde_json::Value;

/// serde_json's own nesting limit: a document it accepted is never deeper.
const MAX_DEPTH: usize = 128;
/// Longest key quoted in an error (keys come from the input and may be huge).
const KEY_EXCERPT: usize = 40;

/// Where each value of a document lies in its bytes.
#[derive(Debug)]
pub struct Layout<'a> {
    root: Node<'a>,
}

#[derive(Debug)]
struct Node<'a> {
    span: Range<usize>,
    kind: Kind<'a>,
}

#[derive(Debug)]
enum Kind<'a> {
    Scalar,
    Array(Vec<Node<'a>>),
    Object(Vec<Member<'a>>),
}

#[derive(Debug)]
struct Member<'a> {
    key: Cow<'a, str>,
    /// From the key's opening quote to the end of its value.
    span: Range<usize>,
    value: Node<'a>,
}

impl<'a> Layout<'a> {
    /// Spans of a document serde_json accepted. A key that appears twice in one object
    /// is an error: readers disagree on which one counts (serde_json takes the last,
    /// others the first), so no edit of such a document can be known to mean one thing.
    pub fn parse(bytes: &'a [u8]) -> Result<Layout<'a>, String> {
        let mut s = Scanner { b: bytes, pos: 0 };
        let root = s.value(0)?;
        s.ws();
        if s.pos != bytes.len() {
            return Err(format!("trailing bytes at offset {}", s.pos));
        }
        Ok(Layout { root })
    }

    /// `bytes` (the document this layout describes, parsed as `old`) changed so that it
    /// parses as `new`, touching only the values that differ.
    pub fn patch(&self, bytes: &[u8], old: &Value, new: &Value) -> Result<Vec<u8>, String> {
        let mut edits = Vec::new();
        diff(&self.root, old, new, &mut edits);
        // An insertion (empty range) sorts before a removal that starts at the same byte.
        edits.sort_by_key(|(r, _)| (r.start, r.end));
        let mut out = Vec::with_capacity(bytes.len());
        let mut at = 0;
        for (r, text) in edits {
            if r.start < at || r.end > bytes.len() {
                return Err("internal error: overlapping edits".into());
            }
            out.extend_from_slice(&bytes[at..r.start]);
            out.extend_from_slice(&text);
            at = r.end;
        }
        out.extend_from_slice(&bytes[at..]);
        Ok(out)
    }
}

type Edit = (Range<usize>, Vec<u8>);

fn encode(v: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(v).expect("a JSON value or string always serializes")
}

fn diff(node: &Node<'_>, old: &Value, new: &Value, edits: &mut Vec<Edit>) {
    if old == new {
        return;
    }
    match (&node.kind, old, new) {
        (Kind::Object(members), Value::Object(o), Value::Object(n)) if members.len() == o.len() => {
            let removed: Vec<bool> = members.iter().map(|m| !n.contains_key(&*m.key)).collect();
            let spans: Vec<_> = members.iter().map(|m| m.span.clone()).collect();
            remove(&node.span, &spans, &removed, edits);
            for m in members {
                if let (Some(a), Some(b)) = (o.get(&*m.key), n.get(&*m.key)) {
                    diff(&m.value, a, b, edits);
                }
            }
            // New keys go after the last member kept (no rule adds one today).
            let mut at = members
                .iter()
                .zip(&removed)
                .rev()
                .find(|(_, r)| !**r)
                .map(|(m, _)| m.span.end);
            let mut text = Vec::new();
            for (k, v) in n.iter().filter(|(k, _)| !o.contains_key(*k)) {
                if at.is_some() || !text.is_empty() {
                    text.push(b',');
                }
                text.extend(encode(k));
                text.push(b':');
                text.extend(encode(v));
            }
            if !text.is_empty() {
                let p = *at.get_or_insert(node.span.start + 1);
                edits.push((p..p, text));
            }
        }
        (Kind::Array(items), Value::Array(o), Value::Array(n)) if items.len() == o.len() => {
            if o.len() == n.len() {
                for ((item, a), b) in items.iter().zip(o).zip(n) {
                    diff(item, a, b, edits);
                }
                return;
            }
            // Elements dropped, the rest kept in order (the capability rule): remove the
            // dropped ones. Anything else is written whole.
            let mut next = 0;
            let removed: Vec<bool> = o
                .iter()
                .map(|x| {
                    let keep = n.get(next) == Some(x);
                    next += usize::from(keep);
                    !keep
                })
                .collect();
            if next == n.len() {
                let spans: Vec<_> = items.iter().map(|i| i.span.clone()).collect();
                remove(&node.span, &spans, &removed, edits);
            } else {
                edits.push((node.span.clone(), encode(new)));
            }
        }
        _ => edits.push((node.span.clone(), encode(new))),
    }
}

/// Edits that remove the flagged items of a list (array elements or object members,
/// `spans` in order) from the container at `outer`, with their separating commas.
fn remove(outer: &Range<usize>, spans: &[Range<usize>], removed: &[bool], edits: &mut Vec<Edit>) {
    if !removed.contains(&true) {
        return;
    }
    if !removed.contains(&false) {
        edits.push((outer.start + 1..outer.end - 1, Vec::new()));
        return;
    }
    let mut i = 0;
    while i < spans.len() {
        if !removed[i] {
            i += 1;
            continue;
        }
        let first = i;
        while i < spans.len() && removed[i] {
            i += 1;
        }
        // A run followed by a kept item goes up to that item; a run at the end goes from
        // the end of the kept item before it. Either way one comma goes with the run.
        let range = if i < spans.len() {
            spans[first].start..spans[i].start
        } else {
            spans[first - 1].end..spans[i - 1].end
        };
        edits.push((range, Vec::new()));
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn ws(&mut self) {
        while matches!(self.b.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.b.get(self.pos) != Some(&c) {
            return Err(format!("expected `{}` at offset {}", c as char, self.pos));
        }
        self.pos += 1;
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<Node<'a>, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH}"));
        }
        self.ws();
        let start = self.pos;
        let kind = match self.b.get(start) {
            None => return Err("unexpected end".into()),
            Some(b'{') => Kind::Object(self.object(depth)?),
            Some(b'[') => Kind::Array(self.array(depth)?),
            Some(b'"') => {
                self.string()?;
                Kind::Scalar
            }
            Some(_) => {
                while !matches!(
                    self.b.get(self.pos),
                    None | Some(b',' | b']' | b'}' | b':' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.pos += 1;
                }
                if self.pos == start {
                    return Err(format!("expected a value at offset {start}"));
                }
                Kind::Scalar
            }
        };
        Ok(Node {
            span: start..self.pos,
            kind,
        })
    }

    /// Past the string that starts at `pos`.
    fn string(&mut self) -> Result<(), String> {
        let start = self.pos;
        self.pos += 1;
        loop {
            match self.b.get(self.pos) {
                None => return Err(format!("unterminated string at offset {start}")),
                Some(b'\\') => self.pos += 2,
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Vec<Node<'a>>, String> {
        self.pos += 1;
        let mut items = Vec::new();
        self.ws();
        if self.b.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(items);
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.ws();
            match self.b.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => return Err(format!("expected `,` or `]` at offset {}", self.pos)),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Vec<Member<'a>>, String> {
        let open = self.pos;
        self.pos += 1;
        let mut members = Vec::new();
        self.ws();
        if self.b.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(members);
        }
        loop {
            self.ws();
            let start = self.pos;
            if self.b.get(start) != Some(&b'"') {
                return Err(format!("expected a key at offset {start}"));
            }
            self.string()?;
            let key = decode_key(&self.b[start..self.pos])?;
            self.expect(b':')?;
            let value = self.value(depth + 1)?;
            members.push(Member {
                key,
                span: start..value.span.end,
                value,
            });
            self.ws();
            match self.b.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    // Sorting beats a hash set here: objects are small and keys borrowed.
                    let mut keys: Vec<&str> = members.iter().map(|m| &*m.key).collect();
                    keys.sort_unstable();
                    if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
                        return Err(format!(
                            "duplicate key {} in the object at offset {open}",
                            excerpt(w[0])
                        ));
                    }
                    return Ok(members);
                }
                _ => return Err(format!("expected `,` or `}}` at offset {}", self.pos)),
            }
        }
    }
}

/// A key as serde_json reads it (escapes resolved), so it matches the `Value`'s keys.
fn decode_key(raw: &[u8]) -> Result<Cow<'_, str>, String> {
    let inner = &raw[1..raw.len() - 1];
    if !inner.contains(&b'\\') {
        if let Ok(s) = std::str::from_utf8(inner) {
            return Ok(Cow::Borrowed(s));
        }
    }
    serde_json::from_slice(raw)
        .map(Cow::Owned)
        .map_err(|e| format!("bad key: {e}"))
}

fn excerpt(key: &str) -> String {
    let mut s: String = key.chars().take(KEY_EXCERPT).collect();
    if s.len() < key.len() {
        s.push('…');
    }
    format!("{s:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patched(text: &str, edit: impl FnOnce(&mut Value)) -> String {
        let old: Value = serde_json::from_str(text).unwrap();
        let mut new = old.clone();
        edit(&mut new);
        let out = Layout::parse(text.as_bytes())
            .unwrap()
            .patch(text.as_bytes(), &old, &new)
            .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), new, "{out}");
        out
    }

    #[test]
    fn scalar_replaced_in_place() {
        let t = r#"{ "a" : 1.0e2, "n": -1000 , "big": 18446744073709551616 }"#;
        let out = patched(t, |v| v["n"] = 200.into());
        assert_eq!(
            out,
            r#"{ "a" : 1.0e2, "n": 200 , "big": 18446744073709551616 }"#
        );
    }

    #[test]
    fn array_elements_removed_with_their_commas() {
        let t = "[\n  \"a\",\n  \"b\",\n  \"c\",\n  \"d\"\n]";
        let drop = |keep: &'static [&'static str]| {
            move |v: &mut Value| {
                v.as_array_mut()
                    .unwrap()
                    .retain(|x| keep.contains(&x.as_str().unwrap()))
            }
        };
        assert_eq!(
            patched(t, drop(&["b", "c", "d"])),
            "[\n  \"b\",\n  \"c\",\n  \"d\"\n]"
        );
        assert_eq!(patched(t, drop(&["a", "b"])), "[\n  \"a\",\n  \"b\"\n]");
        assert_eq!(patched(t, drop(&["b", "d"])), "[\n  \"b\",\n  \"d\"\n]");
        assert_eq!(patched(t, drop(&[])), "[]");
    }

    #[test]
    fn members_removed_and_added() {
        let t = r#"{"a":1,"b":"\u0041","c":3}"#;
        let out = patched(t, |v| {
            v.as_object_mut().unwrap().shift_remove("c");
        });
        assert_eq!(out, r#"{"a":1,"b":"\u0041"}"#);
        let out = patched(t, |v| {
            v.as_object_mut().unwrap().shift_remove("a");
            v["z"] = 9.into();
        });
        assert_eq!(out, r#"{"b":"\u0041","c":3,"z":9}"#);
        let out = patched("{ }", |v| v["z"] = 9.into());
        assert_eq!(out, r#"{"z":9 }"#);
    }

    #[test]
    fn duplicate_keys_are_refused_even_when_escaped() {
        let e = Layout::parse(br#"{"a":{"k":1,"\u006b":2}}"#).unwrap_err();
        assert!(e.contains("duplicate key \"k\""), "{e}");
        let long = format!(r#"{{"{0}":1,"{0}":2}}"#, "x".repeat(10_000));
        let e = Layout::parse(long.as_bytes()).unwrap_err();
        assert!(e.len() < 120, "{e}");
    }
}
