//! `-o table|json|yaml`: every command that reads builds one serde document
//! and prints it as the table people read or as JSON or YAML for scripts.
//! YAML is written by the YAML library the policy loader already uses
//! (saphyr), from the document's JSON value, so both formats carry the same
//! fields under the same names.
use std::borrow::Cow;

use anyhow::Context as _;
use saphyr::{Mapping, ScalarStyle, Yaml, YamlEmitter};
use serde::Serialize;

use crate::cli::OutputFormat;

/// `doc` in `format`, with `table` drawing it for people; ends with a newline.
pub fn render<T: Serialize>(
    format: OutputFormat,
    doc: &T,
    table: impl FnOnce(&T) -> String,
) -> anyhow::Result<String> {
    match format {
        OutputFormat::Table => Ok(table(doc)),
        OutputFormat::Json => json(doc),
        OutputFormat::Yaml => yaml(doc),
    }
}

/// Pretty-printed JSON and a newline.
pub fn json<T: Serialize>(doc: &T) -> anyhow::Result<String> {
    let mut out = serde_json::to_string_pretty(doc).context("writing JSON")?;
    out.push('\n');
    Ok(out)
}

/// One YAML document (starting with `---`, so that several printed one
/// after the other, as `flows --watch` does, stay separate documents).
pub fn yaml<T: Serialize>(doc: &T) -> anyhow::Result<String> {
    let value = serde_json::to_value(doc).context("writing YAML")?;
    let mut out = String::new();
    YamlEmitter::new(&mut out)
        .dump(&to_yaml(&value))
        .context("writing YAML")?;
    out.push('\n');
    Ok(out)
}

fn to_yaml(value: &serde_json::Value) -> Yaml<'static> {
    use serde_json::Value;
    match value {
        Value::Null => Yaml::Value(saphyr::Scalar::Null),
        Value::Bool(b) => Yaml::Value(saphyr::Scalar::Boolean(*b)),
        // Written as JSON writes it: exact for every u64 (a YAML integer
        // scalar has no size limit; saphyr's own integers stop at i64).
        Value::Number(n) => {
            Yaml::Representation(Cow::Owned(n.to_string()), ScalarStyle::Plain, None)
        }
        // The emitter quotes what would read back as another type ("true",
        // "10", "~") or break the syntax.
        Value::String(s) => Yaml::Value(saphyr::Scalar::String(Cow::Owned(s.clone()))),
        Value::Array(items) => Yaml::Sequence(items.iter().map(to_yaml).collect()),
        Value::Object(fields) => {
            let mut map = Mapping::new();
            for (k, v) in fields {
                map.insert(
                    Yaml::Value(saphyr::Scalar::String(Cow::Owned(k.clone()))),
                    to_yaml(v),
                );
            }
            Yaml::Mapping(map)
        }
    }
}

#[cfg(test)]
mod tests {
    use saphyr::{LoadableYamlNode as _, Scalar};
    use serde_json::{json, Value};

    use super::*;

    /// A YAML node read back, as JSON, to compare with what was written.
    fn to_json(y: &Yaml) -> Value {
        match y {
            Yaml::Value(Scalar::Null) => Value::Null,
            Yaml::Value(Scalar::Boolean(b)) => json!(b),
            Yaml::Value(Scalar::Integer(i)) => json!(i),
            Yaml::Value(Scalar::FloatingPoint(f)) => json!(f.into_inner()),
            Yaml::Value(Scalar::String(s)) => json!(s),
            Yaml::Sequence(items) => Value::Array(items.iter().map(to_json).collect()),
            Yaml::Mapping(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| {
                        let Yaml::Value(Scalar::String(k)) = k else {
                            panic!("key {k:?}")
                        };
                        (k.to_string(), to_json(v))
                    })
                    .collect(),
            ),
            other => panic!("unexpected node {other:?}"),
        }
    }

    #[test]
    fn yaml_reads_back_as_the_same_document() {
        let doc = json!({
            "name": "ledger",
            "looks_like_other_types": ["true", "no", "10", "1e3", "0x1f", "~", "null", "", " pad "],
            "syntax": ["a: b", "- x", "#c", "[1]", "{k}", "*ref", "10.0.0.0/8", "fd00::/64", "tcp/443"],
            "lines": "one\ntwo",
            "unicode": "gr\u{fc}n",
            "numbers": [0, -1, 4_294_967_295u64, u64::MAX, 1.5],
            "flags": {"ready": true, "error": null},
            "empty": {"list": [], "map": {}},
            "nested": [{"id": 1, "groups": ["a", "b"]}, {"id": 2, "groups": []}],
        });
        let text = yaml(&doc).unwrap();
        assert!(text.starts_with("---\n"), "{text}");
        let docs = Yaml::load_from_str(&text).unwrap();
        assert_eq!(docs.len(), 1, "{text}");
        let mut back = to_json(&docs[0]);
        // saphyr reads integers as i64: u64::MAX comes back as a float, so
        // check its digits in the text instead.
        assert!(text.contains(&u64::MAX.to_string()), "{text}");
        back["numbers"][3] = json!(u64::MAX);
        assert_eq!(back, doc, "{text}");
    }

    #[test]
    fn formats() {
        #[derive(Serialize)]
        struct Doc {
            mode: &'static str,
            generation: u32,
        }
        let doc = Doc {
            mode: "enforce",
            generation: 3,
        };
        let table = |d: &Doc| format!("mode {}\n", d.mode);
        assert_eq!(
            render(OutputFormat::Table, &doc, table).unwrap(),
            "mode enforce\n"
        );
        assert_eq!(
            render(OutputFormat::Json, &doc, table).unwrap(),
            "{\n  \"mode\": \"enforce\",\n  \"generation\": 3\n}\n"
        );
        assert_eq!(
            render(OutputFormat::Yaml, &doc, table).unwrap(),
            "---\nmode: enforce\ngeneration: 3\n"
        );
    }
}
