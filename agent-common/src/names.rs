//! Names both sides must spell alike: the maps and programs the agent looks up
//! in the object and pins, and the rule names it publishes for readers of the
//! pinned maps. A misspelt name fails only at run time, so each is written once.

/// Map names, shared so userspace never spells one differently.
pub mod map_names {
    pub const CONFIG: &str = "CONFIG";
    pub const IDS4: &str = "IDS4";
    pub const IDS6: &str = "IDS6";
    pub const RULES: &str = "RULES";
    pub const CT4: &str = "CT4";
    pub const CT6: &str = "CT6";
    pub const FRAG4: &str = "FRAG4";
    pub const FRAG6: &str = "FRAG6";
    pub const COUNTERS: &str = "COUNTERS";
    pub const CLOCK: &str = "CLOCK";
    pub const FLOWCACHE4: &str = "FLOWCACHE4";
    pub const FLOWCACHE6: &str = "FLOWCACHE6";
    pub const DENIED4: &str = "DENIED4";
    pub const DENIED6: &str = "DENIED6";
    pub const RULE_COUNTERS: &str = "RULE_COUNTERS";
    pub const STATS: &str = "STATS";
    pub const EVENTS: &str = "EVENTS";
    pub const BUCKETS: &str = "BUCKETS";
    pub const RULE_NAMES: &str = "RULE_NAMES";
    pub const HOSTS4: &str = "HOSTS4";
    pub const HOSTS6: &str = "HOSTS6";
    pub const HOST_FILTER: &str = "HOST_FILTER";
    pub const ID_BLOCKS: &str = "ID_BLOCKS";
    pub const SOURCE_FILTER: &str = "SOURCE_FILTER";
    pub const SOURCES: &str = "SOURCES";
    pub const IFACE_ROLES: &str = "IFACE_ROLES";
    pub const QUOTE_KEY4: &str = "QUOTE_KEY4";
    pub const QUOTE_KEY6: &str = "QUOTE_KEY6";
    pub const ID_KEY4: &str = "ID_KEY4";
    pub const ID_KEY6: &str = "ID_KEY6";
    pub const RULE_KEY: &str = "RULE_KEY";
    pub const CT_SOURCES: &str = "CT_SOURCES";
    pub const NEW_FLOW: &str = "NEW_FLOW";
}

/// Program names (the Rust function names in agent-ebpf).
pub mod prog_names {
    pub const XDP: &str = "netpol_xdp";
    pub const TC: &str = "netpol_tc";
    pub const TC_INGRESS: &str = "netpol_tc_ingress";
    /// Run (never attached) by the agent to read the kernel's jiffies.
    pub const CLOCK: &str = "netpol_clock";
}

/// Bytes of a rule name in `RULE_NAMES` (longer names are cut, NUL-padded).
pub const RULE_NAME_LEN: usize = 120;

/// A rule's name and flags, as the agent publishes them for readers of the
/// pinned maps (the datapath never reads this).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleName {
    /// `RULE_FLAG_AUDIT` for an audit-only rule.
    pub flags: u32,
    pub _pad: u32,
    pub name: [u8; RULE_NAME_LEN],
}

impl Default for RuleName {
    fn default() -> Self {
        Self {
            flags: 0,
            _pad: 0,
            name: [0; RULE_NAME_LEN],
        }
    }
}
