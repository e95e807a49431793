//! JSON pointer lookups in raw JSON text. A rule's field condition needs one leaf of the
//! event's `detail`; walking the text to it skips every sibling without allocating, where
//! building a `serde_json::Value` of the whole detail cost more than classifying the event.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
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
    let mut de = serde_json::Deserializer::from_str(text);
    match text.trim_start().as_bytes().first()? {
        b'{' => de.deserialize_map(FindKey(token)).ok().flatten(),
        b'[' => {
            // RFC 6901 array indices: decimal, no leading zeros (so "01" addresses nothing).
            let valid = !token.is_empty()
                && token.bytes().all(|b| b.is_ascii_digit())
                && (token == "0" || !token.starts_with('0'));
            let index: usize = token.parse().ok().filter(|_| valid)?;
            de.deserialize_seq(FindIndex(index)).ok().flatten()
        }
        _ => None,
    }
}

/// An object key, borrowed from the text unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Walks an object, keeping the value of one key (the last one, as `serde_json::Value` does
/// with duplicate keys) and skipping the rest.
struct FindKey<'t>(&'t str);

impl<'de> Visitor<'de> for FindKey<'_> {
    type Value = Option<&'de RawValue>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            if k == self.0 {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Walks an array, keeping one element and skipping the rest.
struct FindIndex(usize);

impl<'de> Visitor<'de> for FindIndex {
    type Value = Option<&'de RawValue>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut i = 0usize;
        loop {
            if i == self.0 {
                match seq.next_element_seed(Borrow)? {
                    Some(v) => found = Some(v),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found)
    }
}

struct Borrow;

impl<'de> DeserializeSeed<'de> for Borrow {
    type Value = &'de RawValue;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        de::Deserialize::deserialize(d)
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
