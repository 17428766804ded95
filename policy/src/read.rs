//! Typed reads from the [`yaml`](crate::yaml) tree, each failing with the field's path and line.
//!
//! Every mapping of the schema goes through [`Fields`], which refuses unknown and duplicate
//! keys up front (naming the keys that are allowed), so a typo is never silently ignored.

use crate::PolicyError;
use crate::yaml::{Entry, Node, Value};

pub(crate) type Result<T> = std::result::Result<T, PolicyError>;

/// `parent.key`, or `key` at the root.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[i]`.
pub(crate) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// An error about `node` at `path`.
pub(crate) fn fail(path: &str, node: &Node, message: impl Into<String>) -> PolicyError {
    PolicyError::new(path, Some(node.line), message)
}

/// The keys of one mapping, checked against the keys the schema allows there.
pub(crate) struct Fields<'a> {
    path: &'a str,
    node: &'a Node,
    entries: &'a [Entry],
}

impl<'a> Fields<'a> {
    /// Reads `node` as a mapping whose keys are all in `allowed`.
    pub fn new(node: &'a Node, path: &'a str, allowed: &[&str]) -> Result<Self> {
        let Value::Map(entries) = &node.value else {
            return Err(fail(
                path,
                node,
                format!("expected a mapping, found {}", node.kind()),
            ));
        };
        for (i, e) in entries.iter().enumerate() {
            let at = |m: String| PolicyError::new(join(path, &e.key), Some(e.line), m);
            if !allowed.contains(&e.key.as_str()) {
                return Err(at(format!(
                    "unknown field `{}`; expected one of: {}",
                    e.key,
                    allowed.join(", ")
                )));
            }
            if entries[..i].iter().any(|p| p.key == e.key) {
                return Err(at(format!("duplicate field `{}`", e.key)));
            }
        }
        Ok(Fields {
            path,
            node,
            entries,
        })
    }

    /// The value of `key` and its path, when present and not null.
    pub fn get(&self, key: &str) -> Option<(&'a Node, String)> {
        self.entries
            .iter()
            .find(|e| e.key == key && !e.value.is_null())
            .map(|e| (&e.value, join(self.path, key)))
    }

    /// The value of `key`, which must be present.
    pub fn req(&self, key: &str) -> Result<(&'a Node, String)> {
        self.get(key)
            .ok_or_else(|| fail(self.path, self.node, format!("missing field `{key}`")))
    }
}

/// Entries of a free-form mapping (header names to values): at most `max` (checked first, so
/// the duplicate check stays cheap), duplicates refused.
pub(crate) fn map<'a>(node: &'a Node, path: &str, max: usize) -> Result<&'a [Entry]> {
    let Value::Map(entries) = &node.value else {
        return Err(fail(
            path,
            node,
            format!("expected a mapping, found {}", node.kind()),
        ));
    };
    if entries.len() > max {
        return Err(fail(
            path,
            node,
            format!("at most {max} entries are allowed, found {}", entries.len()),
        ));
    }
    for (i, e) in entries.iter().enumerate() {
        if entries[..i]
            .iter()
            .any(|p| p.key.eq_ignore_ascii_case(&e.key))
        {
            return Err(PolicyError::new(
                join(path, &e.key),
                Some(e.line),
                format!("duplicate key `{}`", e.key),
            ));
        }
    }
    Ok(entries)
}

/// A list (an empty value reads as an empty list).
pub(crate) fn seq<'a>(node: &'a Node, path: &str) -> Result<&'a [Node]> {
    match &node.value {
        Value::Seq(items) => Ok(items),
        _ => Err(fail(
            path,
            node,
            format!("expected a list, found {}", node.kind()),
        )),
    }
}

/// A string: any non-null scalar, by its text (so `x-version: 2` is the string "2").
pub(crate) fn string<'a>(node: &'a Node, path: &str) -> Result<&'a str> {
    match &node.value {
        Value::Scalar { text, .. } if !node.is_null() => Ok(text),
        _ => Err(fail(
            path,
            node,
            format!("expected a string, found {}", node.kind()),
        )),
    }
}

/// A non-negative integer written as a plain (unquoted) scalar.
pub(crate) fn uint(node: &Node, path: &str) -> Result<u64> {
    match &node.value {
        Value::Scalar { text, plain: true }
            if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) =>
        {
            text.parse()
                .map_err(|_| fail(path, node, format!("`{text}` is too large")))
        }
        Value::Scalar { text, .. } if !node.is_null() => Err(fail(
            path,
            node,
            format!("expected a non-negative integer, found `{text}`"),
        )),
        _ => Err(fail(
            path,
            node,
            format!("expected a non-negative integer, found {}", node.kind()),
        )),
    }
}

/// A list of at most `max` items, each read by `item` with its own path.
pub(crate) fn list<T>(
    node: &Node,
    path: &str,
    max: usize,
    mut item: impl FnMut(&Node, &str) -> Result<T>,
) -> Result<Vec<T>> {
    let items = seq(node, path)?;
    if items.len() > max {
        return Err(fail(
            path,
            node,
            format!("at most {max} items are allowed, found {}", items.len()),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, n)| item(n, &index(path, i)))
        .collect()
}
