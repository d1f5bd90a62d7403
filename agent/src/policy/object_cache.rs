//! Object files parsed once per content. A pod event rewrites one file of an
//! objects directory that may hold thousands; parsing them all again would
//! cost more than the rest of the reload. A file is parsed again only when
//! its text differs from the text last parsed under its name (compared
//! whole, so a stale result can never be returned).
use std::collections::HashMap;

use super::api_objects::parse_object_text;
use super::cluster::Cluster;
use super::error::PolicyErrors;
use super::model::PolicyFile;

/// What one object text says (see `parse_object_text`).
pub type ParsedObjects = Result<(Cluster, Option<PolicyFile>), PolicyErrors>;

/// The last parse of each file, by the name errors give it.
#[derive(Clone, Debug, Default)]
pub struct ObjectCache {
    files: HashMap<String, (String, ParsedObjects)>,
}

impl ObjectCache {
    /// `parse_object_text(name, text)`, from the cache when `name` had this
    /// text last time.
    pub fn parse(&mut self, name: &str, text: String) -> ParsedObjects {
        if let Some((seen, parsed)) = self.files.get(name) {
            if *seen == text {
                return parsed.clone();
            }
        }
        let parsed = parse_object_text(name, &text);
        self.files.insert(name.to_string(), (text, parsed.clone()));
        parsed
    }

    /// Forgets every file not in `names`: files that were removed.
    pub fn keep_only<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        let keep: std::collections::HashSet<&str> = names.into_iter().collect();
        self.files.retain(|n, _| keep.contains(n.as_str()));
    }

    /// Files currently remembered.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "kind: Pod\nmetadata: {name: a, namespace: x, labels: {app: web}}\nstatus: {podIP: 10.0.0.1}\n";

    #[test]
    fn a_changed_text_is_parsed_again_and_an_equal_one_is_not() {
        let mut cache = ObjectCache::default();
        let first = cache.parse("p.yaml", POD.to_string()).unwrap();
        assert_eq!(cache.parse("p.yaml", POD.to_string()).unwrap(), first);
        let relabelled = POD.replace("app: web", "app: db");
        let second = cache.parse("p.yaml", relabelled.clone()).unwrap();
        assert_eq!(second, parse_object_text("p.yaml", &relabelled).unwrap());
        assert_ne!(second.0, first.0);
        // The same text under another name is its own file (errors name it).
        let bad = POD.replace("10.0.0.1", "10.0.0.300");
        let e = cache.parse("q.yaml", bad).unwrap_err().to_string();
        assert!(e.contains("q.yaml"), "{e}");
        cache.keep_only(["p.yaml"]);
        assert_eq!(cache.len(), 1);
    }
}
