//! A small YAML tree with a position on every node, built from saphyr-parser's
//! events. The ready-made trees of YAML crates keep mappings in hash maps, which
//! silently drop a repeated key: in a policy a repeated `ports:` or group name
//! must be an error, so mappings here keep every entry in order.

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

enum Frame {
    Seq(Node, usize),
    Map(Node, usize, Option<Node>),
}

/// Parses every document of `text`.
pub(crate) fn parse(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
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
                let node = Node {
                    pos,
                    kind: Kind::Scalar(Scalar {
                        text: value.into_owned(),
                        plain: style == ScalarStyle::Plain && !str_tag,
                    }),
                };
                Some((node, anchor))
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(n) => Some((n.clone(), 0)),
                None => {
                    return Err(SyntaxError {
                        pos,
                        message: "alias to an unknown anchor".into(),
                    })
                }
            },
            Event::SequenceStart(anchor, _) => {
                let node = Node {
                    pos,
                    kind: Kind::Seq(Vec::new()),
                };
                stack.push(Frame::Seq(node, anchor));
                None
            }
            Event::MappingStart(anchor, _) => {
                let node = Node {
                    pos,
                    kind: Kind::Map(Vec::new()),
                };
                stack.push(Frame::Map(node, anchor, None));
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq(n, a)) | Some(Frame::Map(n, a, _)) => Some((n, a)),
                None => None,
            },
            _ => None,
        };
        let Some((node, anchor)) = done else { continue };
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => docs.push(node),
            Some(Frame::Seq(parent, _)) => {
                if let Kind::Seq(items) = &mut parent.kind {
                    items.push(node);
                }
            }
            Some(Frame::Map(parent, _, key)) => match key.take() {
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
