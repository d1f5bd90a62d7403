//! "Did you mean" hints for misspelt keys and group names.

/// `; did you mean "x"?` for the closest candidate within a small edit
/// distance, or an empty string.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let limit = (word.chars().count() / 3).clamp(2, 3);
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(word, c), c))
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
