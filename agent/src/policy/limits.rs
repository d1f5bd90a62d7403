//! Whether a compiled policy fits the kernel maps' capacities (`--prefix-max`,
//! `--rule-max`), checked before any map is written so that `check` can answer
//! without a kernel and `run` fails with the numbers rather than half-way.

use std::fmt;

use super::compile::Compiled;

/// Map capacities, as `run` sizes the maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapLimits {
    /// Prefixes per identity trie (IPv4 and IPv6 each).
    pub prefix_max: u32,
    /// Entries of the rule trie.
    pub rule_max: u32,
}

/// One map's use against its capacity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapUsage {
    pub what: &'static str,
    pub used: usize,
    pub limit: u32,
    /// The flag that raises `limit`, without dashes.
    pub flag: &'static str,
}

impl MapUsage {
    pub fn fits(&self) -> bool {
        self.used <= self.limit as usize
    }
}

impl fmt::Display for MapUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (limit {}, --{})",
            self.used, self.what, self.limit, self.flag
        )
    }
}

/// The maps a policy fills, in a fixed order.
pub fn map_usage(compiled: &Compiled, limits: &MapLimits) -> Vec<MapUsage> {
    vec![
        MapUsage {
            what: "IPv4 prefixes",
            used: compiled.ids_v4.len(),
            limit: limits.prefix_max,
            flag: "prefix-max",
        },
        MapUsage {
            what: "IPv6 prefixes",
            used: compiled.ids_v6.len(),
            limit: limits.prefix_max,
            flag: "prefix-max",
        },
        MapUsage {
            what: "rule entries",
            used: compiled.rules.len(),
            limit: limits.rule_max,
            flag: "rule-max",
        },
    ]
}

/// A policy too big for its maps; `main` exits with 2 (invalid policy).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct CapacityError(pub Vec<MapUsage>);

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy does not fit the maps:")?;
        for (i, u) in self.0.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            write!(
                f,
                "{sep}{} {} needed, limit {} (raise --{})",
                u.used, u.what, u.limit, u.flag
            )?;
        }
        Ok(())
    }
}

/// `Err` naming every map the policy overflows.
pub fn check_capacity(compiled: &Compiled, limits: &MapLimits) -> Result<(), CapacityError> {
    let over: Vec<MapUsage> = map_usage(compiled, limits)
        .into_iter()
        .filter(|u| !u.fits())
        .collect();
    if over.is_empty() {
        Ok(())
    } else {
        Err(CapacityError(over))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{compile, merge, parse_str, CompileOptions};

    #[test]
    fn reports_every_overflow_with_numbers() {
        let text = "groups:\n  a: [10.0.1.0/24, 10.0.2.0/24, 10.0.3.0/24]\nrules:\n  - name: r\n    within: [a]\n";
        let policy = merge(vec![parse_str("p.yaml", text).unwrap()]).unwrap();
        let c = compile(&policy, &CompileOptions::default()).unwrap();
        let roomy = MapLimits {
            prefix_max: 100,
            rule_max: 100,
        };
        assert!(check_capacity(&c, &roomy).is_ok());
        let usage = map_usage(&c, &roomy);
        assert_eq!(usage[0].used, c.ids_v4.len());
        assert_eq!(
            usage[0].to_string(),
            format!("{} IPv4 prefixes (limit 100, --prefix-max)", c.ids_v4.len())
        );
        let tight = MapLimits {
            prefix_max: 2,
            rule_max: 0,
        };
        let err = check_capacity(&c, &tight).unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "policy does not fit the maps: {} IPv4 prefixes needed, limit 2 (raise --prefix-max); \
                 {} rule entries needed, limit 0 (raise --rule-max)",
                c.ids_v4.len(),
                c.rules.len()
            )
        );
    }
}
