//! Attaching XDP and TCX links to interfaces, adopting the links an earlier
//! agent pinned, and pinning new ones.
use std::path::{Path, PathBuf};

use agent_common::prog_names;
use aya::programs::{
    links::{FdLink, PinnedLink},
    tc::SchedClassifierLink,
    xdp::XdpLink,
    SchedClassifier, TcAttachType, Xdp, XdpMode,
};
use log::{info, warn};

use crate::bpffs::{linkinfo, LinkKind};

use super::{error::*, handles::*, Datapath};

/// The two links enforcing one interface. Dropping them closes our handles
/// only: pinned links stay attached until their pins are removed.
pub(super) struct IfaceLinks {
    ifindex: u32,
    xdp_mode: XdpMode,
    xdp: (FdLink, Option<PathBuf>),
    tc: (FdLink, Option<PathBuf>),
    adopted: bool,
}

/// One enforced interface, as reported to the operator.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Attachment {
    pub iface: String,
    pub ifindex: u32,
    /// `driver` (native) or `generic` (skb) XDP.
    pub xdp_mode: &'static str,
    /// The links were pinned by an earlier agent and now run this one's
    /// programs (a link update, no detach).
    pub adopted: bool,
}

impl Datapath {
    /// Enforces on `iface`: XDP on ingress, TCX on egress. A link an earlier
    /// agent pinned for this same interface is adopted and switched to this
    /// agent's programs atomically (bpf_link_update: no packet goes
    /// unenforced); otherwise new links are attached (native XDP first,
    /// generic with a warning when the driver refuses) and pinned.
    pub fn attach(&mut self, iface: &str) -> Result<Attachment> {
        let ifindex = ifindex(iface)?;
        if let Some(l) = self.links.get(iface) {
            if l.ifindex == ifindex {
                return Ok(attachment(iface, l));
            }
            // Same name, new interface: the old links died with the old one.
            self.detach(iface);
        }
        let pins = self.pins.clone();
        let attach_err = |source| DatapathError::Attach {
            iface: iface.to_owned(),
            source,
        };
        let link_err = |source| DatapathError::Link {
            iface: iface.to_owned(),
            source,
        };

        let pinned_xdp = pins.as_ref().and_then(|p| p.xdp_link(iface));
        let xdp: &mut Xdp = program_mut(&mut self.ebpf, prog_names::XDP)?;
        let (xdp_link, xdp_mode, xdp_adopted) =
            match adoptable(pinned_xdp, linkinfo::LINK_TYPE_XDP, ifindex) {
                Some((kind, link)) => {
                    let link = XdpLink::try_from(link).map_err(link_err)?;
                    let id = xdp.attach_to_link(link).map_err(attach_err)?;
                    let link = FdLink::try_from(xdp.take_link(id).map_err(attach_err)?)
                        .map_err(link_err)?;
                    let mode = if kind == LinkKind::XdpDriver {
                        XdpMode::Driver
                    } else {
                        XdpMode::Skb
                    };
                    (link, mode, true)
                }
                None => {
                    let (id, mode) = match xdp.attach(iface, XdpMode::Driver) {
                        Ok(id) => (id, XdpMode::Driver),
                        Err(native) => {
                            let id = xdp.attach(iface, XdpMode::Skb).map_err(attach_err)?;
                            warn!(
                                "{iface}: native XDP refused ({native}); using generic XDP (slower)"
                            );
                            (id, XdpMode::Skb)
                        }
                    };
                    let link = FdLink::try_from(xdp.take_link(id).map_err(attach_err)?)
                        .map_err(link_err)?;
                    (link, mode, false)
                }
            };
        let xdp_kind = if xdp_mode == XdpMode::Driver {
            LinkKind::XdpDriver
        } else {
            LinkKind::XdpGeneric
        };
        let xdp_pin = pins.as_ref().map(|p| p.link(iface, xdp_kind));
        let xdp_link = keep_pinned(xdp_link, xdp_pin.as_deref(), xdp_adopted)?;

        let pinned_tc = pins
            .as_ref()
            .map(|p| (LinkKind::Tc, p.link(iface, LinkKind::Tc)));
        let tc: &mut SchedClassifier = program_mut(&mut self.ebpf, prog_names::TC)?;
        let (tc_link, tc_adopted) = match adoptable(
            pinned_tc.filter(|(_, p)| p.exists()),
            linkinfo::LINK_TYPE_TCX,
            ifindex,
        ) {
            Some((_, link)) => {
                let link = SchedClassifierLink::try_from(link).map_err(link_err)?;
                let id = tc.attach_to_link(link).map_err(attach_err)?;
                let link =
                    FdLink::try_from(tc.take_link(id).map_err(attach_err)?).map_err(link_err)?;
                (link, true)
            }
            None => {
                let id = tc.attach(iface, TcAttachType::Egress).map_err(attach_err)?;
                // TCX links are fd-based; the netlink fallback of older
                // kernels could not be pinned.
                let link =
                    FdLink::try_from(tc.take_link(id).map_err(attach_err)?).map_err(link_err)?;
                (link, false)
            }
        };
        let tc_pin = pins.as_ref().map(|p| p.link(iface, LinkKind::Tc));
        let tc_link = keep_pinned(tc_link, tc_pin.as_deref(), tc_adopted)?;

        let links = IfaceLinks {
            ifindex,
            xdp_mode,
            xdp: (xdp_link, xdp_pin),
            tc: (tc_link, tc_pin),
            adopted: xdp_adopted && tc_adopted,
        };
        let a = attachment(iface, &links);
        self.links.insert(iface.to_owned(), links);
        Ok(a)
    }

    /// Stops enforcing on `iface` (or forgets an interface that is gone):
    /// removes its pins and drops its links.
    pub fn detach(&mut self, iface: &str) -> bool {
        let Some(l) = self.links.remove(iface) else {
            return false;
        };
        for pin in [l.xdp.1, l.tc.1].into_iter().flatten() {
            if let Err(e) = std::fs::remove_file(&pin) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!("removing {}: {e}", pin.display());
                }
            }
        }
        true
    }

    /// Pinned links of interfaces this agent does not enforce (any more):
    /// gone, or no longer matched by --iface. Removing their pins detaches
    /// them.
    pub fn stale_pinned_links(&self) -> Vec<(String, PathBuf)> {
        let Some(pins) = &self.pins else {
            return Vec::new();
        };
        pins.links()
            .into_iter()
            .filter(|(iface, _, _)| !self.links.contains_key(iface))
            .map(|(iface, _, path)| (iface, path))
            .collect()
    }

    /// Finishes a start-up on pinned state, once every link runs this
    /// agent's programs: maps that were resized or rebuilt take over their
    /// pins, and map directories of another layout version go.
    pub fn commit_pins(&mut self) -> Result<()> {
        for r in std::mem::take(&mut self.repins) {
            let _ = std::fs::remove_file(&r.path);
            let map = self
                .ebpf
                .map(&r.name)
                .ok_or_else(|| DatapathError::MissingMap(r.name.clone()))?;
            map.pin(&r.path).map_err(|source| DatapathError::Pin {
                path: r.path.clone(),
                source,
            })?;
        }
        for dir in std::mem::take(&mut self.foreign) {
            info!("removing maps of another layout version: {}", dir.display());
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                warn!("removing {}: {e}", dir.display());
            }
        }
        Ok(())
    }

    /// Interfaces being enforced.
    pub fn attached(&self) -> Vec<String> {
        self.links.keys().cloned().collect()
    }

    pub fn attachments(&self) -> Vec<Attachment> {
        self.links.iter().map(|(i, l)| attachment(i, l)).collect()
    }

    /// Ifindex an interface had when it was attached.
    pub fn attached_ifindex(&self, iface: &str) -> Option<u32> {
        self.links.get(iface).map(|l| l.ifindex)
    }
}

pub(super) fn ifindex(iface: &str) -> Result<u32> {
    let err = |source| DatapathError::Iface {
        iface: iface.to_owned(),
        source,
    };
    let c = std::ffi::CString::new(iface)
        .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: valid C string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(err(std::io::Error::last_os_error())),
        i => Ok(i),
    }
}

/// The pinned link at `pinned`, if it is of `link_type` and still attached to
/// the interface with `ifindex`. Any other pin there is stale (its interface
/// went away, or was re-created) and is removed.
pub(super) fn adoptable(
    pinned: Option<(LinkKind, PathBuf)>,
    link_type: u32,
    ifindex: u32,
) -> Option<(LinkKind, FdLink)> {
    let (kind, path) = pinned?;
    match linkinfo::pinned_link_info(&path) {
        Ok(i) if i.link_type == link_type && i.ifindex == ifindex => {
            match PinnedLink::from_pin(&path) {
                Ok(p) => Some((kind, FdLink::from(p))),
                Err(e) => {
                    warn!("{}: cannot open: {e}", path.display());
                    None
                }
            }
        }
        other => {
            info!(
                "{}: stale link ({other:?}); attaching afresh",
                path.display()
            );
            let _ = std::fs::remove_file(&path);
            None
        }
    }
}

/// Pins a new link (an adopted one already is); returns our handle to it.
pub(super) fn keep_pinned(link: FdLink, pin: Option<&Path>, adopted: bool) -> Result<FdLink> {
    match pin {
        Some(path) if !adopted => {
            let _ = std::fs::remove_file(path);
            let pinned = link.pin(path).map_err(|source| DatapathError::Pin {
                path: path.to_owned(),
                source,
            })?;
            Ok(FdLink::from(pinned))
        }
        _ => Ok(link),
    }
}

pub(super) fn attachment(iface: &str, l: &IfaceLinks) -> Attachment {
    Attachment {
        iface: iface.to_owned(),
        ifindex: l.ifindex,
        xdp_mode: if l.xdp_mode == XdpMode::Driver {
            "driver"
        } else {
            "generic"
        },
        adopted: l.adopted,
    }
}
