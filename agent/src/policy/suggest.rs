//! "Did you mean" hints for misspelt keys and group names.

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `; did you mean "x"?` for the closest candidate within a small edit
/// distance, or an empty string.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let limit = (word.chars().count() / 3).clamp(2, 3);
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| format!("; did you mean {c:?}?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words_only() {
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(
            did_you_mean("prots", ["name", "ports"]),
            "; did you mean \"ports\"?"
        );
        assert_eq!(
            did_you_mean("svc-legder", ["svc-ledger", "svc-wallet"]),
            "; did you mean \"svc-ledger\"?"
        );
        assert_eq!(did_you_mean("xyz", ["groups", "rules"]), "");
        assert_eq!(did_you_mean("to", ["name", "ports"]), "");
    }
}
