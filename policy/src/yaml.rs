//! The submitted text as a tree of nodes that remember their line.
//!
//! `saphyr-parser`'s event stream is folded into [`Node`]s so that every later error (an
//! unknown key, a bad CIDR, a missing field) can name the 1-based line it came from, in YAML
//! and in JSON alike (JSON is YAML). Scalars keep their source text; whether `10` is a number
//! or a string is decided by the reader that knows what the field means, the way YAML's core
//! schema would (quoted scalars are always strings). Anchors may be declared but aliases are
//! refused, which also rules out "billion laughs" documents; nesting is capped so that no
//! input can exhaust the stack when the tree is walked or dropped.

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError};

use crate::PolicyError;

/// Deepest nesting of sequences and mappings a document may use (the schema needs 6).
const MAX_DEPTH: usize = 24;

/// One value of the document and the line it starts on.
#[derive(Debug)]
pub(crate) struct Node {
    /// 1-based line of the node's first character.
    pub line: usize,
    pub value: Value,
}

/// The shape of a node.
#[derive(Debug)]
pub(crate) enum Value {
    /// A scalar's text; `plain` is false for quoted and block scalars (always strings).
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// One `key: value` pair of a mapping.
#[derive(Debug)]
pub(crate) struct Entry {
    pub key: String,
    /// Line of the key (what an "unknown field" error points at).
    pub line: usize,
    pub value: Node,
}

/// A container being filled while events arrive.
enum Frame {
    Seq {
        line: usize,
        items: Vec<Node>,
        path: String,
    },
    Map {
        line: usize,
        entries: Vec<Entry>,
        key: Option<(String, usize)>,
        path: String,
    },
}

impl Frame {
    /// Path of the child about to be added (used for errors raised while it is parsed).
    fn child_path(&self) -> String {
        match self {
            Frame::Seq { items, path, .. } => format!("{path}[{}]", items.len()),
            Frame::Map {
                key: Some((k, _)),
                path,
                ..
            } => crate::read::join(path, k),
            Frame::Map { path, .. } => path.clone(),
        }
    }
}

/// Parses `text` into a single document's root node.
pub(crate) fn parse(text: &str) -> Result<Node, PolicyError> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    let current_path = |stack: &[Frame]| stack.last().map(Frame::child_path).unwrap_or_default();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| scan_error(&e, &current_path(&stack), text))?;
        let line = span.start.line().max(1);
        let fail = |stack: &[Frame], message: &str| {
            PolicyError::new(current_path(stack), Some(line), message)
        };
        let node = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(fail(&stack, "only one YAML document is allowed"));
                }
                continue;
            }
            Event::Alias(_) => return Err(fail(&stack, "aliases (*name) are not supported")),
            Event::Scalar(text, style, _, tag) => {
                let plain = style == ScalarStyle::Plain;
                if let Some(tag) = tag {
                    let core = matches!(tag.handle.as_str(), "tag:yaml.org,2002:" | "!!");
                    if !(core && tag.suffix == "str") {
                        return Err(fail(&stack, "YAML tags are not supported (except !!str)"));
                    }
                    Node {
                        line,
                        value: Value::Scalar {
                            text: text.into_owned(),
                            plain: false,
                        },
                    }
                } else {
                    Node {
                        line,
                        value: Value::Scalar {
                            text: text.into_owned(),
                            plain,
                        },
                    }
                }
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(fail(
                        &stack,
                        &format!("nested deeper than {MAX_DEPTH} levels"),
                    ));
                }
                let path = current_path(&stack);
                if let Some(Frame::Map { key: None, .. }) = stack.last() {
                    return Err(fail(&stack, "mapping keys must be strings"));
                }
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq {
                        line,
                        items: Vec::new(),
                        path,
                    }
                } else {
                    Frame::Map {
                        line,
                        entries: Vec::new(),
                        key: None,
                        path,
                    }
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq { line, items, .. }) => Node {
                    line,
                    value: Value::Seq(items),
                },
                Some(Frame::Map { line, entries, .. }) => Node {
                    line,
                    value: Value::Map(entries),
                },
                None => continue,
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => continue,
        };
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                Some((key, line)) => entries.push(Entry {
                    key,
                    line,
                    value: node,
                }),
                None => match node.value {
                    Value::Scalar { text, .. } => *key = Some((text, node.line)),
                    _ => {
                        return Err(PolicyError::new(
                            current_path(&stack),
                            Some(line),
                            "mapping keys must be strings",
                        ));
                    }
                },
            },
        }
    }
    root.ok_or_else(|| PolicyError::new("", Some(1), "the document is empty"))
}

fn scan_error(e: &ScanError, path: &str, text: &str) -> PolicyError {
    // At the end of input the scanner may point one line past the last one.
    let line = e.marker().line().clamp(1, text.lines().count().max(1));
    PolicyError::new(path, Some(line), format!("invalid YAML/JSON: {}", e.info()))
}

impl Node {
    /// True for `null`, `~` and an absent value (`key:` with nothing after it).
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// A short name of the node's type for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            _ if self.is_null() => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_based_for_yaml_and_json() {
        let n = parse("a: 1\nb:\n  - x\n  - y\n").unwrap();
        let Value::Map(e) = &n.value else { panic!() };
        assert_eq!((e[0].line, e[1].line), (1, 2));
        let Value::Seq(items) = &e[1].value.value else {
            panic!()
        };
        assert_eq!(items[1].line, 4);
        let n = parse("{\n \"a\": [1,\n 2]\n}").unwrap();
        let Value::Map(e) = &n.value else { panic!() };
        let Value::Seq(items) = &e[0].value.value else {
            panic!()
        };
        assert_eq!((e[0].line, items[1].line), (2, 3));
    }

    #[test]
    fn syntax_errors_carry_line_and_path() {
        let e = parse("a:\n  b: [1, 2\nc: 3\n").unwrap_err();
        assert!(e.line.is_some());
        assert!(e.message.starts_with("invalid YAML/JSON"), "{e}");
        let e = parse("a: &x 1\nb: *x\n").unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("b", Some(2)));
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert_eq!(parse("").unwrap_err().line, Some(1));
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(parse(&deep).unwrap_err().message.contains("nested deeper"));
    }

    #[test]
    fn quoted_scalars_are_not_plain() {
        let n = parse("a: '1'\nb: 1\nc:\n").unwrap();
        let Value::Map(e) = &n.value else { panic!() };
        assert!(matches!(
            &e[0].value.value,
            Value::Scalar { plain: false, .. }
        ));
        assert!(matches!(
            &e[1].value.value,
            Value::Scalar { plain: true, .. }
        ));
        assert!(e[2].value.is_null());
    }
}
