//! A small YAML tree with a position on every node, built from saphyr-parser's
//! events. The ready-made trees of YAML crates keep mappings in hash maps, which
//! silently drop a repeated key: in a policy a repeated `ports:` or group name
//! must be an error, so mappings here keep every entry in order.
//!
//! An alias is a copy of its anchored node, so a few hundred bytes of nested
//! aliases ("billion laughs") would expand to gigabytes; and nested block
//! sequences (`- - - ...`) nest as deep as a line is long, which the
//! recursive drop of the tree would follow until the stack overflows. Both
//! are bounded here, with the position of the node that crossed the bound.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::error::Pos;

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Clone, Debug)]
pub(crate) enum Kind {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug)]
pub(crate) struct Scalar {
    pub text: String,
    /// Unquoted and not tagged `!!str`, so YAML's core schema may read it as a
    /// null, boolean or number.
    pub plain: bool,
}

impl Scalar {
    pub fn is_null(&self) -> bool {
        self.plain && matches!(self.text.as_str(), "" | "~" | "null" | "Null" | "NULL")
    }

    pub fn as_bool(&self) -> Option<bool> {
        if !self.plain {
            return None;
        }
        match self.text.as_str() {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            _ => None,
        }
    }

    /// Whether YAML reads this scalar as an integer (core schema).
    pub fn is_int(&self) -> bool {
        if !self.plain {
            return false;
        }
        let t = self.text.as_str();
        let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
        if let Some(h) = t.strip_prefix("0x") {
            return digits(h, 16);
        }
        if let Some(o) = t.strip_prefix("0o") {
            return digits(o, 8);
        }
        digits(t.strip_prefix(['-', '+']).unwrap_or(t), 10)
    }
}

impl Node {
    /// A short description of what the node is, for "expected X, found Y".
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar(s) if s.is_null() => "nothing (null)",
            Kind::Scalar(s) if s.as_bool().is_some() => "a boolean",
            Kind::Scalar(s) if s.is_int() => "a number",
            Kind::Scalar(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// A syntax error: where and what.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

fn pos_of(span: &Span) -> Pos {
    Pos {
        line: span.start.line(),
        column: span.start.col() + 1,
    }
}

/// Alias uses one file may make: policies and Kubernetes objects need a
/// handful at most.
pub(crate) const MAX_ALIASES: usize = 1_000;
/// Nodes that anchors and aliases may copy in one file, children included:
/// each anchor keeps a copy of its node, each alias makes another.
pub(crate) const MAX_COPIED_NODES: usize = 100_000;
/// Scalar text that anchors and aliases may copy in one file, in bytes.
pub(crate) const MAX_COPIED_TEXT: usize = 1 << 20;
/// Nesting of sequences and mappings: policy files and Kubernetes objects
/// nest about ten levels.
pub(crate) const MAX_DEPTH: usize = 128;

/// How much a node costs to copy: the nodes of its subtree and their text.
#[derive(Clone, Copy, Default)]
struct Size {
    nodes: usize,
    text: usize,
}

impl Size {
    fn add(&mut self, other: Size) {
        self.nodes = self.nodes.saturating_add(other.nodes);
        self.text = self.text.saturating_add(other.text);
    }
}

enum Frame {
    Seq(Node, usize, Size),
    Map(Node, usize, Size, Option<Node>),
}

impl Frame {
    fn size(&mut self) -> &mut Size {
        match self {
            Frame::Seq(_, _, s) | Frame::Map(_, _, s, _) => s,
        }
    }
}

/// What anchors and aliases have copied so far.
#[derive(Default)]
struct Copies {
    aliases: usize,
    copied: Size,
}

impl Copies {
    /// Counts one copy of a node of `size` (for an alias when `alias`), or
    /// says which bound it crosses.
    fn copy(&mut self, size: Size, alias: bool) -> Result<(), String> {
        const WHY: &str = "each alias copies its anchored node, and nested aliases multiply";
        self.aliases += usize::from(alias);
        self.copied.add(size);
        if self.aliases > MAX_ALIASES {
            return Err(format!("more than {MAX_ALIASES} aliases"));
        }
        if self.copied.nodes > MAX_COPIED_NODES {
            return Err(format!(
                "anchors and aliases expand to more than {MAX_COPIED_NODES} nodes ({WHY})"
            ));
        }
        if self.copied.text > MAX_COPIED_TEXT {
            return Err(format!(
                "anchors and aliases expand to more than {MAX_COPIED_TEXT} bytes of text ({WHY})"
            ));
        }
        Ok(())
    }
}

/// Parses every document of `text`.
pub(crate) fn parse(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, (Node, Size)> = HashMap::new();
    let mut copies = Copies::default();
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| SyntaxError {
            pos: Pos {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            },
            message: e.info().to_string(),
        })?;
        let pos = pos_of(&span);
        let done = match event {
            Event::Scalar(value, style, anchor, tag) => {
                let str_tag = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let size = Size {
                    nodes: 1,
                    text: value.len(),
                };
                let node = Node {
                    pos,
                    kind: Kind::Scalar(Scalar {
                        text: value.into_owned(),
                        plain: style == ScalarStyle::Plain && !str_tag,
                    }),
                };
                Some((node, anchor, size))
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some((n, size)) => {
                    copies
                        .copy(*size, true)
                        .map_err(|message| SyntaxError { pos, message })?;
                    Some((n.clone(), 0, *size))
                }
                None => {
                    return Err(SyntaxError {
                        pos,
                        message: "alias to an unknown anchor".into(),
                    })
                }
            },
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(SyntaxError {
                        pos,
                        message: format!("nested deeper than {MAX_DEPTH} levels"),
                    });
                }
                let size = Size { nodes: 1, text: 0 };
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    let kind = Kind::Seq(Vec::new());
                    Frame::Seq(Node { pos, kind }, anchor, size)
                } else {
                    let kind = Kind::Map(Vec::new());
                    Frame::Map(Node { pos, kind }, anchor, size, None)
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq(n, a, s)) | Some(Frame::Map(n, a, s, _)) => Some((n, a, s)),
                None => None,
            },
            _ => None,
        };
        let Some((node, anchor, size)) = done else {
            continue;
        };
        if anchor != 0 {
            copies.copy(size, false).map_err(|message| SyntaxError {
                pos: node.pos,
                message,
            })?;
            anchors.insert(anchor, (node.clone(), size));
        }
        if let Some(parent) = stack.last_mut() {
            parent.size().add(size);
        }
        match stack.last_mut() {
            None => docs.push(node),
            Some(Frame::Seq(parent, ..)) => {
                if let Kind::Seq(items) = &mut parent.kind {
                    items.push(node);
                }
            }
            Some(Frame::Map(parent, _, _, key)) => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    let mut node = node;
                    // An empty value sits past the colon; its key is what to show.
                    if matches!(&node.kind, Kind::Scalar(s) if s.plain && s.text.is_empty()) {
                        node.pos = k.pos;
                    }
                    if let Kind::Map(entries) = &mut parent.kind {
                        entries.push((k, node));
                    }
                }
            },
        }
    }
    Ok(docs)
}
