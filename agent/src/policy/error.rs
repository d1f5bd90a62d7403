//! Errors of loading and compiling policy.

use std::fmt;

/// A 1-based line and column in a policy file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Where a policy element was written: kept so that errors found after parsing
/// (unknown groups, duplicate names across files) and `explain` can point at it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Origin {
    pub file: String,
    pub pos: Pos,
    /// Path of the element inside the file, e.g. `rules[2].from[0]`.
    pub field: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.pos.line, self.pos.column)
    }
}

/// One problem in a policy file.
///
/// Displays as `{file}:{line}:{column}: {field}: {message}`. Problems that belong
/// to no node (an unreadable file, a YAML syntax error) leave out the parts they
/// do not have: `{file}: {message}` or `{file}:{line}:{column}: {message}`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    pub file: String,
    /// 0 when the error is about the whole file.
    pub line: usize,
    pub column: usize,
    /// Empty when the error is not about one field.
    pub field: String,
    pub message: String,
}

impl PolicyError {
    pub fn at(origin: &Origin, message: impl Into<String>) -> Self {
        Self {
            file: origin.file.clone(),
            line: origin.pos.line,
            column: origin.pos.column,
            field: origin.field.clone(),
            message: message.into(),
        }
    }

    pub fn file(file: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: 0,
            column: 0,
            field: String::new(),
            message: message.into(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file)?;
        if self.line > 0 {
            write!(f, "{}:{}:", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, " {}:", self.field)?;
        }
        write!(f, " {}", self.message)
    }
}

/// Every problem found while loading, in file order; never empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl PolicyErrors {
    pub fn first(&self) -> &PolicyError {
        &self.0[0]
    }

    pub fn iter(&self) -> std::slice::Iter<'_, PolicyError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Err` holding `errors` unless there are none.
    pub(crate) fn check(errors: Vec<PolicyError>) -> Result<(), PolicyErrors> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(PolicyErrors(errors))
        }
    }
}

impl From<PolicyError> for PolicyErrors {
    fn from(e: PolicyError) -> Self {
        Self(vec![e])
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a PolicyErrors {
    type Item = &'a PolicyError;
    type IntoIter = std::slice::Iter<'a, PolicyError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A policy that parsed but cannot be compiled. `load_dir` already rejects these
/// with positions; they reach `compile` only from hand-built policies.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("rule {rule:?}: unknown group {group:?}")]
    UnknownGroup { rule: String, group: String },
    #[error("group {group:?}: {message}")]
    BadGroup { group: String, message: String },
    #[error("rule {rule:?}: {message}")]
    BadRule { rule: String, message: String },
}
