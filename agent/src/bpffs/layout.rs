//! bpffs: what the agent pins, where, and how `uninstall` takes it away.
//!
//! ```text
//! <pin-path>/maps-v<LAYOUT_VERSION>/<MAP>   maps (conntrack, policy, counters, ...)
//! <pin-path>/progs/<program>               the programs the links run
//! <pin-path>/links/<iface>:xdp-drv|xdp-skb XDP ingress links (the suffix is the mode)
//! <pin-path>/links/<iface>:tcx-in          TCX ingress links (instead of XDP)
//! <pin-path>/links/<iface>:tc              TCX egress links
//! ```
//!
//! bpffs refuses names with a dot, which interface names may have (VLANs:
//! `eth0.100`), so `%` and `.` are percent-encoded; `:` cannot occur in an
//! interface name, which makes it a safe separator.
//!
//! ```text
//! ```
//!
//! Pinned links keep enforcing while no agent runs; a restarted agent adopts
//! them and swaps its programs in with a link update.
use std::{
    io,
    path::{Path, PathBuf},
};

use agent_common::LAYOUT_VERSION;
use log::{info, warn};

use super::linkinfo;

const MAPS_PREFIX: &str = "maps-v";
const PROGS: &str = "progs";
const LINKS: &str = "links";

/// Which end of an interface a link enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    XdpDriver,
    XdpGeneric,
    TcxIngress,
    /// TCX egress.
    Tc,
}

impl LinkKind {
    const ALL: [LinkKind; 4] = [
        LinkKind::XdpDriver,
        LinkKind::XdpGeneric,
        LinkKind::TcxIngress,
        LinkKind::Tc,
    ];
    /// The kinds that judge traffic entering an interface (one at a time).
    const INGRESS: [LinkKind; 3] = [
        LinkKind::XdpDriver,
        LinkKind::XdpGeneric,
        LinkKind::TcxIngress,
    ];

    fn suffix(self) -> &'static str {
        match self {
            LinkKind::XdpDriver => "xdp-drv",
            LinkKind::XdpGeneric => "xdp-skb",
            LinkKind::TcxIngress => "tcx-in",
            LinkKind::Tc => "tc",
        }
    }
}

/// The pin directory of one agent.
#[derive(Clone, Debug)]
pub struct PinLayout {
    root: PathBuf,
}

impl PinLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Maps of this build's layout.
    pub fn maps_dir(&self) -> PathBuf {
        self.root.join(format!("{MAPS_PREFIX}{LAYOUT_VERSION}"))
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    pub fn prog(&self, name: &str) -> PathBuf {
        self.root.join(PROGS).join(name)
    }

    pub fn link(&self, iface: &str, kind: LinkKind) -> PathBuf {
        let escaped = iface.replace('%', "%25").replace('.', "%2E");
        self.root
            .join(LINKS)
            .join(format!("{escaped}:{}", kind.suffix()))
    }

    /// Creates the directories (bpffs must be mounted).
    pub fn create(&self) -> io::Result<()> {
        for d in [
            self.maps_dir(),
            self.root.join(PROGS),
            self.root.join(LINKS),
        ] {
            std::fs::create_dir_all(&d)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", d.display())))?;
        }
        Ok(())
    }

    /// Map directories of other layout versions (left by an older or newer
    /// build), which this build must not read.
    pub fn foreign_map_dirs(&self) -> Vec<PathBuf> {
        let own = self.maps_dir();
        list(&self.root)
            .into_iter()
            .filter(|p| {
                *p != own
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(MAPS_PREFIX))
            })
            .collect()
    }

    /// Pinned links: (interface, kind, path).
    pub fn links(&self) -> Vec<(String, LinkKind, PathBuf)> {
        list(&self.root.join(LINKS))
            .into_iter()
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?.to_owned();
                let (escaped, suffix) = name.rsplit_once(':')?;
                let kind = LinkKind::ALL.into_iter().find(|k| k.suffix() == suffix)?;
                let iface = escaped.replace("%2E", ".").replace("%25", "%");
                Some((iface, kind, p))
            })
            .collect()
    }

    /// The pinned ingress links of `iface` (XDP in either mode, or TCX): one,
    /// unless an agent stopped while it moved the interface to another hook.
    pub fn ingress_links(&self, iface: &str) -> Vec<(LinkKind, PathBuf)> {
        LinkKind::INGRESS
            .into_iter()
            .map(|k| (k, self.link(iface, k)))
            .filter(|(_, p)| p.exists())
            .collect()
    }
}

fn list(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// What `uninstall` removed.
#[derive(Debug, Default)]
pub struct Uninstalled {
    pub links: usize,
    pub programs: usize,
    pub maps: usize,
    /// Links still attached after their pins went: a running agent holds them
    /// and they go when it exits.
    pub still_held: Vec<String>,
}

fn remove(path: &Path) -> io::Result<()> {
    std::fs::remove_file(path)
        .map_err(|e| io::Error::new(e.kind(), format!("removing {}: {e}", path.display())))
}

/// Removes every link, program and map pinned under `layout`, links first so
/// enforcement stops before the state it reads goes. Only the agent's own
/// subdirectories are touched; anything else under the root is left (and the
/// root with it).
pub fn uninstall(layout: &PinLayout) -> io::Result<Uninstalled> {
    let mut done = Uninstalled::default();
    let mut ids = Vec::new();
    for (iface, kind, path) in layout.links() {
        if let Ok(info) = linkinfo::pinned_link_info(&path) {
            ids.push((format!("{iface} ({})", kind.suffix()), info.id));
        }
        remove(&path)?;
        info!("detached {}", path.display());
        done.links += 1;
    }
    for p in list(&layout.root.join(PROGS)) {
        remove(&p)?;
        done.programs += 1;
    }
    let mut map_dirs = layout.foreign_map_dirs();
    map_dirs.push(layout.maps_dir());
    for dir in &map_dirs {
        for p in list(dir) {
            remove(&p)?;
            done.maps += 1;
        }
    }
    for dir in map_dirs
        .into_iter()
        .chain([layout.root.join(PROGS), layout.root.join(LINKS)])
        .filter(|d| d.exists())
    {
        std::fs::remove_dir(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("removing {}: {e}", dir.display())))?;
    }
    if layout.root.exists() {
        if let Err(e) = std::fs::remove_dir(&layout.root) {
            warn!(
                "left {} in place (it holds files netpol-agent does not own): {e}",
                layout.root.display()
            );
        }
    }
    // The kernel frees an unpinned link from a workqueue: give it a moment
    // before calling a link held.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while ids.iter().any(|(_, id)| linkinfo::link_exists(*id))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    done.still_held = ids
        .into_iter()
        .filter(|(_, id)| linkinfo::link_exists(*id))
        .map(|(what, id)| format!("{what}: link {id}"))
        .collect();
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_round_trip_and_have_no_dots() {
        let dir = std::env::temp_dir().join(format!("netpol-pin-test-{}", std::process::id()));
        let layout = PinLayout::new(&dir);
        std::fs::create_dir_all(dir.join(LINKS)).unwrap();
        for iface in ["eth0", "eth0.100", "we%ird.x", "lxc1"] {
            for kind in LinkKind::ALL {
                let p = layout.link(iface, kind);
                assert!(!p.file_name().unwrap().to_str().unwrap().contains('.'));
                std::fs::write(&p, b"").unwrap();
            }
        }
        let mut got: Vec<(String, LinkKind)> =
            layout.links().into_iter().map(|(i, k, _)| (i, k)).collect();
        got.sort_by(|a, b| (a.0.as_str(), a.1.suffix()).cmp(&(b.0.as_str(), b.1.suffix())));
        std::fs::remove_dir_all(&dir).unwrap();
        let ifaces: Vec<&str> = got.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(ifaces.len(), 16);
        for iface in ["eth0", "eth0.100", "we%ird.x", "lxc1"] {
            assert_eq!(ifaces.iter().filter(|i| **i == iface).count(), 4, "{got:?}");
        }
    }
}
