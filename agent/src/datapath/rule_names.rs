//! The rule names the datapath's per-rule counters are kept by, published in
//! a pinned map so the CLI and a restarted agent read the same ids.
use agent_common::{map_names, RuleName, RULE_FLAG_AUDIT, RULE_IDS, RULE_NAME_LEN};
use anyhow::Context as _;

use crate::{bpffs::Pinned, policy::Compiled};

/// A rule as readers see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleInfo {
    pub name: String,
    pub audit: bool,
}

/// Publishes the rule names of `compiled` for readers of the pinned maps.
/// Entry 0 (never a rule) carries the number of ids in its flags.
pub fn publish_rule_names(pinned: &Pinned, compiled: &Compiled) -> anyhow::Result<()> {
    let mut map = pinned.array::<RuleName>(map_names::RULE_NAMES)?;
    let n = compiled.rule_names.len().min(RULE_IDS as usize);
    let header = RuleName {
        flags: n as u32,
        ..RuleName::default()
    };
    map.set(0, header, 0).context("writing RULE_NAMES")?;
    for (id, name) in compiled.rule_names.iter().enumerate().take(n).skip(1) {
        let mut v = RuleName::default();
        let bytes = name.as_bytes();
        let len = bytes.len().min(RULE_NAME_LEN);
        v.name[..len].copy_from_slice(&bytes[..len]);
        if compiled.rule_audit.get(id).copied().unwrap_or(false) {
            v.flags = RULE_FLAG_AUDIT;
        }
        map.set(id as u32, v, 0).context("writing RULE_NAMES")?;
    }
    Ok(())
}

/// Rule names by id (index 0 is empty).
pub fn rule_names(pinned: &Pinned) -> anyhow::Result<Vec<RuleInfo>> {
    let map = pinned.array::<RuleName>(map_names::RULE_NAMES)?;
    let n = map.get(&0, 0)?.flags.min(RULE_IDS);
    let mut out = vec![RuleInfo::default()];
    for id in 1..n {
        let v = map.get(&id, 0)?;
        let end = v.name.iter().position(|&b| b == 0).unwrap_or(RULE_NAME_LEN);
        out.push(RuleInfo {
            name: String::from_utf8_lossy(&v.name[..end]).into_owned(),
            audit: v.flags & RULE_FLAG_AUDIT != 0,
        });
    }
    Ok(out)
}
