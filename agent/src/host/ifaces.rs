//! Which interfaces `--iface` names: exact names or shell globs (`lxc*`, `eni*`).
/// Names of the interfaces in the agent's network namespace.
pub fn list() -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = nix::net::if_::if_nameindex()?
        .iter()
        .map(|i| i.name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// The ifindex of interface `name`, if it exists.
pub fn index_of(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// Interfaces matching any pattern; `lo` only when named exactly.
pub fn select(
    patterns: &[String],
    available: &[String],
) -> Result<Vec<String>, glob::PatternError> {
    let compiled = patterns
        .iter()
        .map(|p| glob::Pattern::new(p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(available
        .iter()
        .filter(|name| {
            patterns.iter().any(|p| p == *name)
                || (name.as_str() != "lo" && compiled.iter().any(|p| p.matches(name)))
        })
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::select;

    #[test]
    fn globs_and_names() {
        let avail: Vec<String> = ["lo", "eth0", "lxc1", "lxc2", "eni9"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let pats = vec!["lxc*".to_string(), "eth0".to_string()];
        assert_eq!(select(&pats, &avail).unwrap(), ["eth0", "lxc1", "lxc2"]);
        assert_eq!(select(&["*".to_string()], &avail).unwrap().len(), 4);
        assert_eq!(select(&["lo".to_string()], &avail).unwrap(), ["lo"]);
        assert!(select(&["[".to_string()], &avail).is_err());
    }
}
