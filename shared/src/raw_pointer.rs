//! JSON pointer lookups in raw JSON text. A rule's field condition needs one leaf of the
//! event's `detail`; walking the text to it skips every sibling without allocating, where
//! building a `serde_json::Value` of the whole detail cost more than classifying the event,
//! and a validating serde walk cost a third of it.

use std::borrow::Cow;

use serde_json::value::RawValue;

/// The value `pointer` (RFC 6901, e.g. `/resource/instanceDetails/instanceId`) addresses in
/// `doc`, parsed; `None` when it does not exist or `doc` is not valid JSON.
pub fn lookup(doc: &RawValue, pointer: &str) -> Option<serde_json::Value> {
    let leaf = find(doc, pointer)?;
    serde_json::from_str(leaf.get()).ok()
}

/// The raw text `pointer` addresses in `doc`.
pub fn find<'a>(doc: &'a RawValue, pointer: &str) -> Option<&'a RawValue> {
    if pointer.is_empty() {
        return Some(doc);
    }
    let rest = pointer.strip_prefix('/')?;
    let mut at = doc;
    for token in rest.split('/') {
        let token = unescape(token);
        at = child(at, &token)?;
    }
    Some(at)
}

fn unescape(token: &str) -> Cow<'_, str> {
    if token.contains('~') {
        Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(token)
    }
}

fn child<'a>(doc: &'a RawValue, token: &str) -> Option<&'a RawValue> {
    let text = doc.get();
    let b = text.as_bytes();
    let at = skip_ws(b, 0);
    let (start, end) = match b.get(at)? {
        b'{' => find_key(text, at, token)?,
        b'[' => {
            // RFC 6901 array indices: decimal, no leading zeros (so "01" addresses nothing).
            let valid = !token.is_empty()
                && token.bytes().all(|b| b.is_ascii_digit())
                && (token == "0" || !token.starts_with('0'));
            let index: usize = token.parse().ok().filter(|_| valid)?;
            find_index(b, at, index)?
        }
        _ => return None,
    };
    // A `RawValue` holds valid JSON, and so does every value inside it: re-borrowing the
    // slice as one re-checks only this leaf's text.
    serde_json::from_str(text.get(start..end)?).ok()
}

// The walk scans bytes and does not validate: a `RawValue` was validated when it was made.
// Every index it stops at is an ASCII structural byte, so slices fall on char boundaries.

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        i += 1;
    }
    i
}

/// Index just past the string that opens at `i`.
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    let mut i = i + 1;
    loop {
        let j = i + memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        if b.get(j) == Some(&b'\\') {
            i = j + 2;
        } else {
            return Some(j + 1);
        }
    }
}

/// Bytes a container skip stops at: a string opens, or the nesting changes.
static STRUCTURAL: [bool; 256] = {
    let mut t = [false; 256];
    t[b'"' as usize] = true;
    t[b'{' as usize] = true;
    t[b'[' as usize] = true;
    t[b'}' as usize] = true;
    t[b']' as usize] = true;
    t
};

/// Index just past the value that starts at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = i;
            loop {
                i += b
                    .get(i..)?
                    .iter()
                    .position(|&c| STRUCTURAL[usize::from(c)])?;
                match b.get(i)? {
                    b'"' => {
                        i = skip_string(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    _ => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                }
                i += 1;
            }
        }
        _ => {
            let mut j = i;
            while !matches!(
                b.get(j),
                None | Some(b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t')
            ) {
                j += 1;
            }
            Some(j)
        }
    }
}

/// The span of the value of key `token` in the object that opens at `at` (the last one, as
/// `serde_json::Value` keeps with duplicate keys).
fn find_key(text: &str, at: usize, token: &str) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, at + 1);
    if b.get(i) == Some(&b'}') {
        return None;
    }
    let mut found = None;
    loop {
        let key_end = skip_string(b, i)?;
        let quoted = text.get(i..key_end)?;
        let inner = quoted.get(1..quoted.len() - 1)?;
        let is_match = if inner.contains('\\') {
            serde_json::from_str::<String>(quoted).ok()? == token
        } else {
            inner == token
        };
        // `:` then the value.
        let start = skip_ws(b, skip_ws(b, key_end) + 1);
        let end = skip_value(b, start)?;
        if is_match {
            found = Some((start, end));
        }
        i = skip_ws(b, end);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            _ => return found,
        }
    }
}

/// The span of element `index` of the array that opens at `at`.
fn find_index(b: &[u8], at: usize, index: usize) -> Option<(usize, usize)> {
    let mut i = skip_ws(b, at + 1);
    if b.get(i) == Some(&b']') {
        return None;
    }
    let mut n = 0usize;
    loop {
        let end = skip_value(b, i)?;
        if n == index {
            return Some((i, end));
        }
        n += 1;
        i = skip_ws(b, end);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    /// Every path to every node of `v`, as JSON pointers.
    fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
        out.push(at.clone());
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let k = k.replace('~', "~0").replace('/', "~1");
                    pointers(x, format!("{at}/{k}"), out);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    pointers(x, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn agrees_with_value_pointer_on_every_node_of_every_sample() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../events");
        let mut files = Vec::new();
        for d in std::fs::read_dir(dir).unwrap() {
            let d = d.unwrap().path();
            if d.is_dir() {
                for f in std::fs::read_dir(d).unwrap() {
                    files.push(f.unwrap().path());
                }
            }
        }
        let mut checked = 0;
        for f in files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
        {
            let text = std::fs::read_to_string(f).unwrap();
            let v: Value = serde_json::from_str(&text).unwrap();
            let doc = raw(&text);
            let mut all = Vec::new();
            pointers(&v, String::new(), &mut all);
            for p in all {
                assert_eq!(lookup(&doc, &p).as_ref(), v.pointer(&p), "{f:?} {p}");
                checked += 1;
            }
            for missing in ["/nope", "/detail/nope/deeper", "/resources/99", "/id/0"] {
                assert_eq!(lookup(&doc, missing), None, "{f:?} {missing}");
            }
        }
        assert!(checked > 1000, "{checked}");
    }

    #[test]
    fn edge_cases_follow_rfc_6901_and_value_pointer() {
        let text = r#"{"a/b": 1, "m~n": 2, "e\u0073c": 3, "dup": 1, "dup": 2,
                       "arr": [10, [20, 21], {"x": null}], "": {"": "empty"}}"#;
        let v: Value = serde_json::from_str(text).unwrap();
        let doc = raw(text);
        for p in [
            "/a~1b",
            "/m~0n",
            "/esc",
            "/dup",
            "/arr/0",
            "/arr/1/1",
            "/arr/2/x",
            "/arr/01",
            "/arr/-",
            "/arr/3",
            "/arr/+1",
            "//",
            "/",
            "",
            "no-slash",
            "/arr/1/1/0",
        ] {
            assert_eq!(lookup(&doc, p).as_ref(), v.pointer(p), "{p}");
        }
        assert_eq!(lookup(&doc, "/dup"), Some(Value::from(2)));
    }

    #[test]
    fn strings_holding_structure_and_odd_spacing_are_skipped_whole() {
        let text = " {\n\t\"s\" : \"}]{[,\\\"\\\\\" ,\r\n \"n\":-1.5e3 , \"t\":true,\"z\":null,
                     \"o\" : { \"k\\\"q\" : [ \"]\" , { } , [ ] ] } ,\"last\" : \"x\" } ";
        let v: Value = serde_json::from_str(text).unwrap();
        let doc = raw(text);
        let mut all = Vec::new();
        pointers(&v, String::new(), &mut all);
        assert!(all.len() > 10, "{all:?}");
        for p in all
            .iter()
            .map(String::as_str)
            .chain(["/o/k\"q/3", "/o/k/0", "/last/0"])
        {
            assert_eq!(lookup(&doc, p).as_ref(), v.pointer(p), "{p}");
        }
    }

    #[test]
    fn malformed_text_finds_nothing_and_never_panics() {
        for text in [r#"{"a": "#, r#"{"a": 1,}"#, "[1, 2", "\"str\"", "3", "null"] {
            if let Ok(doc) = RawValue::from_string(text.to_owned()) {
                assert_eq!(lookup(&doc, "/a"), None, "{text}");
            }
        }
        // RawValue cannot hold invalid JSON, but a walk below a valid prefix must still stop.
        let doc = raw(r#"{"a": {"b": [1, {"c": true}]}}"#);
        assert_eq!(lookup(&doc, "/a/b/1/c"), Some(Value::Bool(true)));
        assert_eq!(lookup(&doc, "/a/b/1/c/d"), None);
    }
}
