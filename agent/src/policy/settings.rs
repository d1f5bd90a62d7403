//! A settings file: one YAML mapping of names to scalars or lists of
//! scalars, read as hostile input like a policy file (regular file only,
//! bounded size, bounded aliases and nesting) and kept with the position of
//! every value, so whoever gives the names a meaning can point at the line.
//! What the names mean is not decided here.
use std::path::Path;

use super::{
    error::{PolicyError, PolicyErrors, Pos},
    parse::parse_yaml,
    source::{read_file, ReadLimits},
    yaml::{Kind, Node},
};

/// One scalar of a settings file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingScalar {
    pub pos: Pos,
    pub text: String,
    /// Unquoted: YAML may read it as a boolean, number or null.
    pub plain: bool,
    /// What YAML reads it as, for "expected X, found Y".
    pub describe: &'static str,
}

impl SettingScalar {
    /// `Some` for an unquoted `true` or `false`.
    pub fn as_bool(&self) -> Option<bool> {
        match (self.plain, self.text.as_str()) {
            (true, "true" | "True" | "TRUE") => Some(true),
            (true, "false" | "False" | "FALSE") => Some(false),
            _ => None,
        }
    }
}

/// The value of one setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettingValue {
    Scalar(SettingScalar),
    List(Vec<SettingScalar>),
    /// A mapping, or a list holding something else than scalars: no setting
    /// takes one; `describe` says what it is.
    Other {
        describe: &'static str,
    },
}

impl SettingValue {
    pub fn describe(&self) -> &'static str {
        match self {
            SettingValue::Scalar(s) => s.describe,
            SettingValue::List(_) => "a list",
            SettingValue::Other { describe } => describe,
        }
    }
}

/// One `name: value` entry, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub name: String,
    /// Where the name is written.
    pub pos: Pos,
    pub value: SettingValue,
}

/// The entries of a settings file, in order. Errors (unreadable, not YAML,
/// not one mapping, a name repeated or not a string) name the file and,
/// where there is one, the line and column.
pub fn read_settings(path: &Path, file_size_max: u64) -> Result<Vec<Setting>, PolicyErrors> {
    let name = path.display().to_string();
    let limits = ReadLimits {
        file_size_max,
        dir_size_max: file_size_max,
    };
    let text = read_file(path, &limits).map_err(|mut e| {
        // The reader names the policy flag that raises its limit; this file's
        // limit is fixed.
        e.message = e
            .message
            .replace(" (--file-size-max)", " for a settings file");
        PolicyErrors(vec![e])
    })?;
    parse_settings(&name, &text)
}

/// `read_settings` on text already read; `name` is what errors call it.
pub fn parse_settings(name: &str, text: &str) -> Result<Vec<Setting>, PolicyErrors> {
    let docs = parse_yaml(name, text).map_err(|e| PolicyErrors(vec![e]))?;
    let at = |pos: Pos, field: &str, message: String| PolicyError {
        file: name.to_owned(),
        line: pos.line,
        column: pos.column,
        field: field.to_owned(),
        message,
    };
    let root = match docs.as_slice() {
        // An empty file (or one of comments only) sets nothing.
        [] => return Ok(Vec::new()),
        [one] => one,
        [_, second, ..] => {
            return Err(PolicyErrors(vec![at(
                second.pos,
                "",
                "one YAML document expected, found several".into(),
            )]))
        }
    };
    let entries = match &root.kind {
        Kind::Map(entries) => entries,
        Kind::Scalar(s) if s.is_null() => return Ok(Vec::new()),
        _ => {
            return Err(PolicyErrors(vec![at(
                root.pos,
                "",
                format!(
                    "expected a mapping of settings (name: value), found {}",
                    root.describe()
                ),
            )]))
        }
    };
    let mut out: Vec<Setting> = Vec::new();
    let mut errors = Vec::new();
    for (k, v) in entries {
        let Kind::Scalar(key) = &k.kind else {
            errors.push(at(
                k.pos,
                "",
                format!("a setting's name must be a string, found {}", k.describe()),
            ));
            continue;
        };
        if let Some(first) = out.iter().find(|s| s.name == key.text) {
            errors.push(at(
                k.pos,
                &key.text,
                format!(
                    "set twice (first at line {}, column {})",
                    first.pos.line, first.pos.column
                ),
            ));
            continue;
        }
        out.push(Setting {
            name: key.text.clone(),
            pos: k.pos,
            value: value_of(v),
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(PolicyErrors(errors))
    }
}

fn scalar_of(n: &Node) -> Option<SettingScalar> {
    match &n.kind {
        Kind::Scalar(s) => Some(SettingScalar {
            pos: n.pos,
            text: s.text.clone(),
            plain: s.plain,
            describe: n.describe(),
        }),
        _ => None,
    }
}

fn value_of(n: &Node) -> SettingValue {
    match &n.kind {
        Kind::Scalar(_) => SettingValue::Scalar(scalar_of(n).expect("a scalar")),
        Kind::Seq(items) => match items.iter().map(scalar_of).collect::<Option<Vec<_>>>() {
            Some(list) => SettingValue::List(list),
            None => SettingValue::Other {
                describe: "a list holding lists or mappings",
            },
        },
        Kind::Map(_) => SettingValue::Other {
            describe: "a mapping",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_scalars_and_lists_with_positions() {
        let s = parse_settings(
            "c.yaml",
            "iface: [uplink0, \"lxc*\"]\npolicy-dir: /etc/netpol\nkubernetes: true\nct-max: 10\n",
        )
        .unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "iface");
        assert_eq!(s[0].pos, Pos { line: 1, column: 1 });
        let SettingValue::List(l) = &s[0].value else {
            panic!("{s:?}")
        };
        assert_eq!(l[1].text, "lxc*");
        assert!(!l[1].plain);
        assert_eq!(s[1].pos.line, 2);
        let SettingValue::Scalar(k) = &s[2].value else {
            panic!()
        };
        assert_eq!(k.as_bool(), Some(true));
        assert_eq!(s[3].value.describe(), "a number");
        assert!(parse_settings("c.yaml", "# nothing\n").unwrap().is_empty());
    }

    #[test]
    fn refuses_what_is_not_one_flat_mapping() {
        let e = parse_settings("c.yaml", "listen: a\nlisten: b\n").unwrap_err();
        assert_eq!(
            e.first().to_string(),
            "c.yaml:2:1: listen: set twice (first at line 1, column 1)"
        );
        let e = parse_settings("c.yaml", "- a\n").unwrap_err();
        assert!(e.first().to_string().contains("expected a mapping"), "{e}");
        let e = parse_settings("c.yaml", "a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e.first().to_string().contains("several"), "{e}");
        let s = parse_settings("c.yaml", "iface: {a: 1}\nuplink: [[a]]\n").unwrap();
        assert_eq!(s[0].value.describe(), "a mapping");
        assert_eq!(s[1].value.describe(), "a list holding lists or mappings");
        let e = parse_settings("c.yaml", "a: [\n").unwrap_err();
        assert!(e.first().to_string().starts_with("c.yaml:"), "{e}");
    }
}
