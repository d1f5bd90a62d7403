//! Kubernetes label selectors (`matchLabels`, `matchExpressions`), as
//! NetworkPolicy and the native selector groups write them, with Kubernetes'
//! meaning: every requirement must hold; an empty selector selects everything.

use std::collections::BTreeMap;
use std::fmt;

use super::parse::{join, Ctx};
use super::yaml::{Kind, Node};

pub type Labels = BTreeMap<String, String>;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Sorted; empty for Exists and DoesNotExist.
    pub values: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelSelector {
    pub match_labels: Labels,
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector of `{}`: every object.
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn from_labels(labels: &[(&str, &str)]) -> Self {
        Self {
            match_labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let have = labels.get(&r.key);
                match r.operator {
                    Operator::In => have.is_some_and(|v| r.values.contains(v)),
                    // Kubernetes: NotIn also holds when the label is absent.
                    Operator::NotIn => have.is_none_or(|v| !r.values.contains(v)),
                    Operator::Exists => have.is_some(),
                    Operator::DoesNotExist => have.is_none(),
                }
            })
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.match_expressions {
            parts.push(match r.operator {
                Operator::In => format!("{} in ({})", r.key, r.values.join(",")),
                Operator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            });
        }
        if parts.is_empty() {
            f.write_str("(all)")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

const SELECTOR_KEYS: &[&str] = &["matchLabels", "matchExpressions"];
const REQUIREMENT_KEYS: &[&str] = &["key", "operator", "values"];

impl Ctx<'_> {
    /// A LabelSelector. With `plain`, a mapping without `matchLabels` or
    /// `matchExpressions` is read as the labels to match (the native short
    /// form `pods: {app: gateway}`). `None` after an error.
    pub(super) fn label_selector(
        &mut self,
        node: &Node,
        field: &str,
        plain: bool,
    ) -> Option<LabelSelector> {
        if super::parse::is_null(node) {
            return Some(LabelSelector::everything());
        }
        let what = "a label selector (matchLabels, matchExpressions)";
        let full = match &node.kind {
            Kind::Map(pairs) => pairs.iter().any(|(k, _)| {
                matches!(&k.kind, Kind::Scalar(s) if SELECTOR_KEYS.contains(&s.text.as_str()))
            }),
            _ => true,
        };
        if plain && !full {
            return self.labels(node, field).map(|match_labels| LabelSelector {
                match_labels,
                match_expressions: Vec::new(),
            });
        }
        let entries = self.mapping(node, field, Some(SELECTOR_KEYS), what)?;
        let mut out = LabelSelector::default();
        let mut ok = true;
        for e in entries {
            let f = join(field, &e.key);
            if e.key == "matchLabels" {
                match self.labels(e.value, &f) {
                    Some(l) => out.match_labels = l,
                    None => ok = false,
                }
                continue;
            }
            if super::parse::is_null(e.value) {
                continue;
            }
            let Kind::Seq(items) = &e.value.kind else {
                self.expected(e.value, &f, "a list of requirements");
                ok = false;
                continue;
            };
            for (i, item) in items.iter().enumerate() {
                match self.requirement(item, &format!("{f}[{i}]")) {
                    Some(r) => out.match_expressions.push(r),
                    None => ok = false,
                }
            }
        }
        ok.then_some(out)
    }

    /// A mapping of label keys to values (strings; numbers and booleans are
    /// read as their text, as `kubectl` would quote them).
    pub(super) fn labels(&mut self, node: &Node, field: &str) -> Option<Labels> {
        if super::parse::is_null(node) {
            return Some(Labels::new());
        }
        let entries = self.mapping(node, field, None, "a mapping of labels")?;
        let mut out = Labels::new();
        let mut ok = true;
        for e in entries {
            match &e.value.kind {
                Kind::Scalar(s) if !s.is_null() => {
                    out.insert(e.key, s.text.clone());
                }
                _ => {
                    self.expected(e.value, &join(field, &e.key), "a label value");
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn requirement(&mut self, node: &Node, field: &str) -> Option<Requirement> {
        let what = "a requirement (key, operator, values)";
        let entries = self.mapping(node, field, Some(REQUIREMENT_KEYS), what)?;
        let get = |k: &str| entries.iter().find(|e| e.key == k);
        let Some(key) = get("key") else {
            self.err(node.pos, field, "missing \"key\"");
            return None;
        };
        let key = self.string(key.value, &join(field, "key"), "a label key")?;
        let Some(op) = get("operator") else {
            self.err(node.pos, field, "missing \"operator\"");
            return None;
        };
        let f = join(field, "operator");
        let text = self.string(op.value, &f, "an operator")?;
        let operator = match text.as_str() {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => {
                let ops = ["In", "NotIn", "Exists", "DoesNotExist"];
                let hint = super::suggest::did_you_mean(other, ops);
                let msg = format!(
                    "unknown operator {other:?}{hint} (expected In, NotIn, Exists or DoesNotExist)"
                );
                self.err(op.value.pos, &f, msg);
                return None;
            }
        };
        let mut values = Vec::new();
        if let Some(v) = get("values") {
            let vf = join(field, "values");
            if !super::parse::is_null(v.value) {
                let Kind::Seq(items) = &v.value.kind else {
                    self.expected(v.value, &vf, "a list of values");
                    return None;
                };
                for (i, item) in items.iter().enumerate() {
                    match &item.kind {
                        Kind::Scalar(s) if !s.is_null() => values.push(s.text.clone()),
                        _ => {
                            self.expected(item, &format!("{vf}[{i}]"), "a label value");
                            return None;
                        }
                    }
                }
            }
        }
        let needs_values = matches!(operator, Operator::In | Operator::NotIn);
        if needs_values == values.is_empty() {
            let msg = if needs_values {
                format!("{text} needs a non-empty \"values\"")
            } else {
                format!("{text} takes no \"values\"")
            };
            self.err(node.pos, field, msg);
            return None;
        }
        values.sort();
        values.dedup();
        Some(Requirement {
            key,
            operator,
            values,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(l: &[(&str, &str)]) -> Labels {
        l.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kubernetes_meaning_of_each_operator() {
        let app = labels(&[("app", "gateway"), ("tier", "edge")]);
        let none = labels(&[]);
        let req = |key: &str, operator, values: &[&str]| LabelSelector {
            match_labels: Labels::new(),
            match_expressions: vec![Requirement {
                key: key.into(),
                operator,
                values: values.iter().map(|s| s.to_string()).collect(),
            }],
        };
        assert!(LabelSelector::everything().matches(&none));
        assert!(LabelSelector::from_labels(&[("app", "gateway")]).matches(&app));
        assert!(!LabelSelector::from_labels(&[("app", "ledger")]).matches(&app));
        assert!(req("tier", Operator::In, &["edge", "core"]).matches(&app));
        assert!(!req("tier", Operator::In, &["core"]).matches(&app));
        assert!(!req("tier", Operator::In, &["core"]).matches(&none));
        assert!(req("tier", Operator::NotIn, &["core"]).matches(&app));
        assert!(req("tier", Operator::NotIn, &["core"]).matches(&none));
        assert!(!req("tier", Operator::NotIn, &["edge"]).matches(&app));
        assert!(req("app", Operator::Exists, &[]).matches(&app));
        assert!(!req("app", Operator::Exists, &[]).matches(&none));
        assert!(req("app", Operator::DoesNotExist, &[]).matches(&none));
        assert!(!req("app", Operator::DoesNotExist, &[]).matches(&app));
    }
}
