//! A YAML tree that remembers where every node came from.
//!
//! serde-based YAML readers stop at the first error and forget positions
//! once a value is built. Validation here reports every problem with its
//! line and column, so configs are read into this spanned tree first (from
//! saphyr-parser events) and decoded by hand.
//!
//! Limits protect the daemon from hostile input: nesting depth and the
//! total number of nodes (alias expansion included) are capped.
//!
//! Duplicate keys are refused (version 1 is strict). Legacy files were read
//! by a loader on which the last of two equal keys silently won, so
//! [`parse_with`] can instead keep the last value, at the position of the
//! first key as that loader did, and record what it replaced.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span as PSpan};

/// A 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub start: Pos,
    pub end: Pos,
}

impl Span {
    fn from_parser(s: PSpan) -> Span {
        let pos = |m: saphyr_parser::Marker| Pos {
            line: u32::try_from(m.line()).unwrap_or(u32::MAX),
            col: u32::try_from(m.col() + 1).unwrap_or(u32::MAX),
        };
        Span {
            start: pos(s.start),
            end: pos(s.end),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null`, or nothing at all (`key:` with no value).
    Null,
    /// A scalar's text and whether it was quoted; typing happens on decode,
    /// where a quoted `"true"` stays a string.
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Entries in document order. Keys are unique (duplicates are refused,
    /// or folded into one entry by [`DuplicateKeys::LastWins`]).
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

impl Node {
    pub fn null(span: Span) -> Node {
        Node {
            value: Value::Null,
            span,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// The text of a scalar node (quoted or not).
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The value under `key` of a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// The entry (key node and value) under `key`.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(k, v)| (k, v))
    }

    /// A short name for the node's kind, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "nothing",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// A syntax error: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// What to do with a key written twice in one mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuplicateKeys {
    /// A syntax error naming both lines.
    Refuse,
    /// The later value replaces the earlier one, keeping the earlier
    /// entry's place in the mapping; each replacement is recorded.
    LastWins,
}

/// A key written again in the same mapping, under [`DuplicateKeys::LastWins`].
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateKey {
    pub key: String,
    /// Keys of the enclosing mappings, outermost first (`-` for a list item).
    pub path: Vec<String>,
    /// The previous occurrence of the key.
    pub previous: Span,
    /// This occurrence, whose value is kept.
    pub again: Span,
    /// The value that was replaced, which a reader of the tree no longer sees.
    pub replaced: Node,
}

/// A parsed document and the duplicate keys folded while reading it.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub root: Node,
    pub duplicates: Vec<DuplicateKey>,
}

pub const MAX_DEPTH: usize = 128;
pub const MAX_NODES: usize = 1_000_000;

enum Frame {
    Seq {
        items: Vec<Node>,
        start: Span,
        anchor: usize,
    },
    Map {
        entries: Vec<(Node, Node)>,
        pending_key: Option<PendingKey>,
        start: Span,
        anchor: usize,
    },
}

/// A key waiting for its value; `replaces` is the entry it folds into.
struct PendingKey {
    key: Node,
    replaces: Option<(usize, Vec<String>)>,
}

/// Parses one YAML document into a spanned tree, refusing duplicate keys.
/// An empty document is `Null`.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    parse_with(text, DuplicateKeys::Refuse).map(|doc| doc.root)
}

/// Parses one YAML document, with duplicate keys handled as `keys` says.
pub fn parse_with(text: &str, keys: DuplicateKeys) -> Result<Document, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut duplicates: Vec<DuplicateKey> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    let mut nodes = 0usize;
    let mut last_span = Span::default();

    for item in &mut parser {
        let (event, pspan) = item.map_err(|e| SyntaxError {
            pos: Pos {
                line: u32::try_from(e.marker().line()).unwrap_or(u32::MAX),
                col: u32::try_from(e.marker().col() + 1).unwrap_or(u32::MAX),
            },
            message: e.info().to_string(),
        })?;
        let span = Span::from_parser(pspan);
        last_span = span;
        let complete: Option<(Node, usize)> = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => None,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(SyntaxError {
                        pos: span.start,
                        message: "a config file holds one YAML document; found a second `---`"
                            .into(),
                    });
                }
                None
            }
            Event::Alias(id) => {
                let node = anchors.get(&id).cloned().ok_or_else(|| SyntaxError {
                    pos: span.start,
                    message: "alias to an unknown anchor".into(),
                })?;
                nodes += count_nodes(&node);
                Some((Node { span, ..node }, 0))
            }
            Event::Scalar(value, style, anchor, _tag) => {
                let quoted = !matches!(style, ScalarStyle::Plain);
                let v = if !quoted && matches!(value.as_ref(), "" | "~" | "null" | "Null" | "NULL")
                {
                    Value::Null
                } else {
                    Value::Scalar {
                        text: value.into_owned(),
                        quoted,
                    }
                };
                nodes += 1;
                Some((Node { value: v, span }, anchor))
            }
            Event::SequenceStart(anchor, _) => {
                push_frame(
                    &mut stack,
                    Frame::Seq {
                        items: Vec::new(),
                        start: span,
                        anchor,
                    },
                    span,
                )?;
                None
            }
            Event::MappingStart(anchor, _) => {
                push_frame(
                    &mut stack,
                    Frame::Map {
                        entries: Vec::new(),
                        pending_key: None,
                        start: span,
                        anchor,
                    },
                    span,
                )?;
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    items,
                    start,
                    anchor,
                }) => {
                    nodes += 1;
                    let end = items.last().map(|n| n.span.end).unwrap_or(span.end);
                    Some((
                        Node {
                            value: Value::Seq(items),
                            span: Span {
                                start: start.start,
                                end,
                            },
                        },
                        anchor,
                    ))
                }
                _ => return Err(internal(span)),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    entries,
                    start,
                    anchor,
                    ..
                }) => {
                    nodes += 1;
                    let end = entries.last().map(|(_, v)| v.span.end).unwrap_or(span.end);
                    Some((
                        Node {
                            value: Value::Map(entries),
                            span: Span {
                                start: start.start,
                                end,
                            },
                        },
                        anchor,
                    ))
                }
                _ => return Err(internal(span)),
            },
        };
        if nodes > MAX_NODES {
            return Err(SyntaxError {
                pos: span.start,
                message: format!("the document expands to more than {MAX_NODES} nodes"),
            });
        }
        let Some((node, anchor)) = complete else {
            continue;
        };
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        let Some((top, outer)) = stack.split_last_mut() else {
            root = Some(node);
            continue;
        };
        match top {
            Frame::Seq { items, .. } => items.push(node),
            Frame::Map {
                entries,
                pending_key,
                ..
            } => match pending_key.take() {
                None => {
                    if !matches!(node.value, Value::Scalar { .. } | Value::Null) {
                        return Err(SyntaxError {
                            pos: node.span.start,
                            message: "mapping keys must be plain scalars".into(),
                        });
                    }
                    let earlier = entries
                        .iter()
                        .position(|(k, _)| k.as_str().is_some() && k.as_str() == node.as_str());
                    let replaces = match (earlier, keys) {
                        (None, _) => None,
                        (Some(i), DuplicateKeys::Refuse) => {
                            return Err(SyntaxError {
                                pos: node.span.start,
                                message: format!(
                                    "duplicate key `{}` (first defined on line {})",
                                    node.as_str().unwrap_or(""),
                                    entries[i].0.span.start.line
                                ),
                            });
                        }
                        (Some(i), DuplicateKeys::LastWins) => Some((i, enclosing_keys(outer))),
                    };
                    *pending_key = Some(PendingKey {
                        key: node,
                        replaces,
                    });
                }
                Some(PendingKey {
                    key,
                    replaces: None,
                }) => entries.push((key, node)),
                Some(PendingKey {
                    key,
                    replaces: Some((i, path)),
                }) => {
                    let (previous, replaced) = std::mem::replace(&mut entries[i], (key, node));
                    duplicates.push(DuplicateKey {
                        key: entries[i].0.as_str().unwrap_or("").to_string(),
                        path,
                        previous: previous.span,
                        again: entries[i].0.span,
                        replaced,
                    });
                }
            },
        }
    }
    Ok(Document {
        root: root.unwrap_or(Node::null(last_span)),
        duplicates,
    })
}

/// The keys leading to a mapping, given the frames enclosing it.
fn enclosing_keys(outer: &[Frame]) -> Vec<String> {
    outer
        .iter()
        .map(|f| match f {
            Frame::Seq { .. } => "-".to_string(),
            Frame::Map { pending_key, .. } => pending_key
                .as_ref()
                .and_then(|p| p.key.as_str())
                .unwrap_or("~")
                .to_string(),
        })
        .collect()
}

fn push_frame(stack: &mut Vec<Frame>, frame: Frame, span: Span) -> Result<(), SyntaxError> {
    if stack.len() >= MAX_DEPTH {
        return Err(SyntaxError {
            pos: span.start,
            message: format!("nesting deeper than {MAX_DEPTH} levels"),
        });
    }
    stack.push(frame);
    Ok(())
}

fn internal(span: Span) -> SyntaxError {
    SyntaxError {
        pos: span.start,
        message: "unbalanced YAML structure".into(),
    }
}

fn count_nodes(node: &Node) -> usize {
    // Iterative: an alias may point at a large subtree.
    let mut n = 0;
    let mut todo = vec![node];
    while let Some(x) = todo.pop() {
        n += 1;
        match &x.value {
            Value::Seq(items) => todo.extend(items.iter()),
            Value::Map(entries) => {
                for (k, v) in entries {
                    todo.push(k);
                    todo.push(v);
                }
            }
            _ => {}
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_point_at_keys_and_values() {
        let doc = "a: 1\nb:\n  c: [x, \"y\"]\n  d:\n";
        let root = parse(doc).unwrap();
        let (k, v) = root.entry("b").unwrap();
        assert_eq!((k.span.start.line, k.span.start.col), (2, 1));
        let c = v.get("c").unwrap().as_seq().unwrap();
        assert_eq!(c[1].span.start, Pos { line: 3, col: 10 });
        assert_eq!(
            c[1].value,
            Value::Scalar {
                text: "y".into(),
                quoted: true
            }
        );
        assert!(v.get("d").unwrap().is_null());
    }

    #[test]
    fn duplicate_keys_are_refused_with_both_lines() {
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.pos, Pos { line: 3, col: 1 });
        assert_eq!(err.message, "duplicate key `a` (first defined on line 1)");
    }

    #[test]
    fn last_wins_keeps_the_first_place_and_the_last_value() {
        let doc = parse_with(
            "a: 1\nb:\n  x: {k: 1}\n  x: {k: 2}\na: 3\n",
            DuplicateKeys::LastWins,
        )
        .unwrap();
        let keys: Vec<_> = doc
            .root
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str().unwrap(), v.span.start.line))
            .collect();
        assert_eq!(keys, [("a", 5), ("b", 3)]);
        assert_eq!(
            doc.root
                .get("b")
                .unwrap()
                .get("x")
                .unwrap()
                .get("k")
                .unwrap()
                .as_str(),
            Some("2")
        );
        let seen: Vec<_> = doc
            .duplicates
            .iter()
            .map(|d| {
                (
                    d.key.as_str(),
                    d.path.clone(),
                    d.previous.start.line,
                    d.again.start.line,
                    d.replaced
                        .get("k")
                        .and_then(Node::as_str)
                        .or(d.replaced.as_str()),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("x", vec!["b".to_string()], 3, 4, Some("1")),
                ("a", vec![], 1, 5, Some("1")),
            ]
        );
    }

    #[test]
    fn last_wins_records_the_path_through_lists() {
        let doc = parse_with("s:\n  - {n: 1, n: 2}\n", DuplicateKeys::LastWins).unwrap();
        assert_eq!(doc.duplicates.len(), 1);
        assert_eq!(doc.duplicates[0].path, ["s", "-"]);
        assert_eq!(
            doc.root.get("s").unwrap().as_seq().unwrap()[0]
                .get("n")
                .unwrap()
                .as_str(),
            Some("2")
        );
    }

    #[test]
    fn anchors_and_aliases_expand() {
        let root = parse("x: &A {k: 1}\ny: *A\n").unwrap();
        assert_eq!(root.get("y").unwrap().get("k").unwrap().as_str(), Some("1"));
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            doc.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                std::iter::repeat_n(prev.as_str(), 10)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let err = parse(&doc).unwrap_err();
        assert!(err.message.contains("more than"), "{}", err.message);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let doc = "[".repeat(10_000);
        assert!(parse(&doc).is_err());
    }

    #[test]
    fn empty_document_is_null() {
        assert!(parse("").unwrap().is_null());
        assert!(parse("# only a comment\n").unwrap().is_null());
    }
}
