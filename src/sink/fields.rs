//! The mapped fields of a JSON value, read in one pass without building the whole document.
//!
//! ```text
//!  columns' paths ─► a trie (value.payload.id, value.payload.k ─► payload ─► {id, k})
//!  JSON text ─► serde_json's streaming deserializer, guided by the trie:
//!     a key on a path ─► descend;  any other key ─► skipped (IgnoredAny: scanned, not built)
//!     the end of a path ─► that value alone becomes a serde_json::Value ─► the column's text
//! ```
//!
//! Why: the config-only mapping used to parse every record into a `serde_json::Value`, with a
//! map and a string for every field, also the ones no column reads (a Kafka Connect envelope's
//! `schema` is most of its bytes). The benchmark in docs/BENCHMARKS.md ("Kafka into
//! PostgreSQL") measured the difference.
//!
//! Invariants: the result is the full parse's, value for value (a unit test compares them):
//! a mapped value is decoded by serde_json exactly as before ([`super::mapping`]'s `text_of`);
//! a key seen twice takes its last value (as `serde_json::Value` maps do); a step into a
//! scalar, a null or a missing key gives NULL; a number step indexes an array. The whole text
//! is still checked as JSON syntax (every skipped value is scanned, trailing characters are an
//! error). Any error returns `None`, and the caller falls back to the full parse, which
//! produces the poison message the full parse always gave. The one difference: a skipped
//! string is checked as JSON syntax but its `\u` escapes are not decoded, so a lone surrogate
//! escape in a field no column maps is no longer poison.

use std::fmt;

use serde::de::{
    Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::Value;

/// A node of the paths' trie: the columns whose path ends here, and the next steps.
#[derive(Debug, Clone, Default)]
pub(super) struct FieldTrie {
    /// Indexes of the columns whose path ends at this node.
    columns: Vec<usize>,
    /// The next step's name (a field, or an array index as text) and its node.
    children: Vec<(String, FieldTrie)>,
}

impl FieldTrie {
    /// The trie of `paths`: (column index, its path below the value).
    pub(super) fn new<'a>(paths: impl IntoIterator<Item = (usize, &'a [String])>) -> Self {
        let mut root = Self::default();
        'paths: for (column, path) in paths {
            let mut node = &mut root;
            for step in path {
                if !node.children.iter().any(|(name, _)| name == step) {
                    node.children.push((step.clone(), Self::default()));
                }
                let Some((_, next)) = node.children.iter_mut().find(|(name, _)| name == step)
                else {
                    continue 'paths; // unreachable: the step was just added
                };
                node = next;
            }
            node.columns.push(column);
        }
        root
    }

    /// The mapped values of `json` into `out` (one slot per column, the trie's indexes), or
    /// `None` if it is not valid JSON (the caller parses it in full for the error).
    pub(super) fn read(&self, json: &[u8], out: &mut [Option<String>]) -> Option<()> {
        let text = std::str::from_utf8(json).ok()?;
        let mut deserializer = serde_json::Deserializer::from_str(text);
        Node { trie: self, out }
            .deserialize(&mut deserializer)
            .ok()?;
        deserializer.end().ok()
    }

    /// Every column index in this subtree.
    fn clear(&self, out: &mut [Option<String>]) {
        for &column in &self.columns {
            if let Some(slot) = out.get_mut(column) {
                *slot = None;
            }
        }
        for (_, child) in &self.children {
            child.clear(out);
        }
    }

    /// Fills this subtree's columns from a value parsed in full (a node where a path ends).
    fn fill(&self, value: &Value, out: &mut [Option<String>]) {
        for &column in &self.columns {
            if let Some(slot) = out.get_mut(column) {
                *slot = super::mapping::text_of(value);
            }
        }
        for (name, child) in &self.children {
            match super::mapping::step(value, name) {
                Some(next) => child.fill(next, out),
                None => child.clear(out),
            }
        }
    }
}

/// The deserializer's seed at one node of the trie.
struct Node<'t, 'o> {
    trie: &'t FieldTrie,
    out: &'o mut [Option<String>],
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        // A new value for this node: what an earlier duplicate key filled is replaced.
        self.trie.clear(self.out);
        if !self.trie.columns.is_empty() {
            let value = Value::deserialize(deserializer)?;
            match (&self.trie.columns[..], self.trie.children.is_empty()) {
                // The common case, one column and nothing below: its text is moved out of the
                // value (a string is not copied again).
                ([column], true) => {
                    if let Some(slot) = self.out.get_mut(*column) {
                        *slot = super::mapping::text_into(value);
                    }
                }
                _ => self.trie.fill(&value, self.out),
            }
            return Ok(());
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(child) = map.next_key_seed(Key(self.trie))? {
            match child.and_then(|at| self.trie.children.get(at)) {
                Some((_, trie)) => map.next_value_seed(Node {
                    trie,
                    out: &mut *self.out,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let name = index.to_string();
            let next = match self.trie.children.iter().find(|(n, _)| *n == name) {
                Some((_, trie)) => seq
                    .next_element_seed(Node {
                        trie,
                        out: &mut *self.out,
                    })?
                    .is_some(),
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !next {
                return Ok(());
            }
            index += 1;
        }
    }

    // A scalar where the path goes on: every column below it is NULL (already cleared).
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A map key: the index of the trie's child of that name, if any (no allocation).
struct Key<'t>(&'t FieldTrie);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.children.iter().position(|(name, _)| name == key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(list: &[&str]) -> Vec<Vec<String>> {
        list.iter()
            .map(|p| p.split('.').map(String::from).collect())
            .collect()
    }

    /// The old way: parse in full, then step.
    fn full(json: &str, paths: &[Vec<String>]) -> Option<Vec<Option<String>>> {
        let value: Value = serde_json::from_str(json).ok()?;
        Some(
            paths
                .iter()
                .map(|path| {
                    path.iter()
                        .try_fold(&value, |v, p| super::super::mapping::step(v, p))
                        .and_then(super::super::mapping::text_of)
                })
                .collect(),
        )
    }

    fn streamed(json: &str, paths: &[Vec<String>]) -> Option<Vec<Option<String>>> {
        let trie = FieldTrie::new(paths.iter().enumerate().map(|(i, p)| (i, p.as_slice())));
        let mut out = vec![None; paths.len()];
        trie.read(json.as_bytes(), &mut out)?;
        Some(out)
    }

    #[test]
    fn the_streamed_fields_equal_the_full_parse() {
        let paths = paths(&[
            "payload.id",
            "payload.amount",
            "payload.note",
            "payload.items.1.sku",
            "payload.obj",
            "payload.obj.n",
            "payload.missing",
            "payload.id.deeper",
            "top",
        ]);
        let documents = [
            r#"{"schema":{"type":"struct","fields":[{"a":1}]},"payload":{"id":"x-1","amount":12.50,"note":null,"items":[{"sku":"a"},{"sku":"b\u00e9"}],"obj":{"n":7,"s":[1,2]}},"top":true}"#,
            r#"{"payload":{"id":1,"id":"second","obj":{"n":1},"obj":{"m":2}},"top":"a\"b"}"#,
            r#"{"payload":[1,2],"top":{"x":1}}"#,
            r#"{"payload":null,"top":-1e3}"#,
            r#"{"pay\u006coad":{"id":"escaped key"}}"#,
            r#"[1,2,3]"#,
            r#""just a string""#,
            r#"{"payload":{"items":[{"sku":1},{"sku":{"deep":[true]}}]}}"#,
            r#"{"payload":{"id":"first","items":[{"sku":"a"},{"sku":"b"}],"items":[]},"payload":{"amount":1}}"#,
        ];
        for json in documents {
            assert_eq!(streamed(json, &paths), full(json, &paths), "{json}");
            assert!(streamed(json, &paths).is_some(), "{json}");
        }
    }

    #[test]
    fn text_that_is_not_json_gives_none() {
        let paths = paths(&["payload.id"]);
        for bad in [
            "not json",
            r#"{"payload":{"id":1}} trailing"#,
            r#"{"schema":{"broken":},"payload":{"id":1}}"#,
            r#"{"payload":{"id":1}"#,
        ] {
            assert_eq!(streamed(bad, &paths), None, "{bad}");
            assert_eq!(full(bad, &paths), None, "{bad}");
        }
        assert_eq!(FieldTrie::default().read(b"\xff", &mut []), None);
    }
}
