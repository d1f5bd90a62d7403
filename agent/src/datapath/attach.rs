//! Attaching the ingress link (XDP or TCX) and the TCX egress link of each
//! interface, adopting the links an earlier agent pinned, and pinning new
//! ones.
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

use super::{error::*, handles::*, options::IngressPlan, Datapath};

/// What judges traffic entering an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum IngressLink {
    #[serde(rename = "xdp-native")]
    XdpNative,
    #[serde(rename = "xdp-generic")]
    XdpGeneric,
    #[serde(rename = "tcx")]
    Tcx,
}

impl IngressLink {
    pub fn name(self) -> &'static str {
        match self {
            IngressLink::XdpNative => "xdp-native",
            IngressLink::XdpGeneric => "xdp-generic",
            IngressLink::Tcx => "tcx",
        }
    }

    fn kind(self) -> LinkKind {
        match self {
            IngressLink::XdpNative => LinkKind::XdpDriver,
            IngressLink::XdpGeneric => LinkKind::XdpGeneric,
            IngressLink::Tcx => LinkKind::TcxIngress,
        }
    }

    fn of_kind(kind: LinkKind) -> Option<Self> {
        match kind {
            LinkKind::XdpDriver => Some(IngressLink::XdpNative),
            LinkKind::XdpGeneric => Some(IngressLink::XdpGeneric),
            LinkKind::TcxIngress => Some(IngressLink::Tcx),
            LinkKind::Tc => None,
        }
    }

    /// Whether a link an earlier agent chose may stay under `plan`.
    fn fits(self, plan: IngressPlan) -> bool {
        matches!(
            (plan, self),
            (IngressPlan::Tcx, IngressLink::Tcx)
                | (
                    IngressPlan::NativeXdpElseTcx,
                    IngressLink::XdpNative | IngressLink::Tcx
                )
                | (
                    IngressPlan::XdpElseGeneric,
                    IngressLink::XdpNative | IngressLink::XdpGeneric
                )
        )
    }
}

/// The two links enforcing one interface. Dropping them closes our handles
/// only: pinned links stay attached until their pins are removed.
pub(super) struct IfaceLinks {
    ifindex: u32,
    hook: IngressLink,
    ingress: (FdLink, Option<PathBuf>),
    egress: (FdLink, Option<PathBuf>),
    adopted: bool,
}

/// One enforced interface, as reported to the operator.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Attachment {
    pub iface: String,
    pub ifindex: u32,
    /// What judges traffic entering the interface.
    pub hook: IngressLink,
    /// The links were pinned by an earlier agent and now run this one's
    /// programs (a link update, no detach).
    pub adopted: bool,
}

impl Datapath {
    /// Enforces on `iface`: `plan` on ingress, TCX on egress. A link an
    /// earlier agent pinned for this same interface is adopted and switched
    /// to this agent's programs atomically (bpf_link_update: no packet goes
    /// unenforced) when it fits `plan`; otherwise new links are attached and
    /// pinned, and an ingress link of another hook is removed only once the
    /// new one runs.
    pub fn attach(&mut self, iface: &str, plan: IngressPlan) -> Result<Attachment> {
        let ifindex = ifindex(iface)?;
        if let Some(l) = self.links.get(iface) {
            if l.ifindex == ifindex {
                return Ok(attachment(iface, l));
            }
            // Same name, new interface: the old links died with the old one.
            self.detach(iface);
        }
        let pins = self.pins.clone();
        let link_err = link_error(iface);

        let pinned_ingress = pins
            .as_ref()
            .map(|p| p.ingress_links(iface))
            .unwrap_or_default();
        let (fits, others): (Vec<_>, Vec<_>) = pinned_ingress
            .into_iter()
            .partition(|(k, _)| IngressLink::of_kind(*k).is_some_and(|h| h.fits(plan)));
        let adopted_ingress = fits.into_iter().find_map(|(kind, path)| {
            let hook = IngressLink::of_kind(kind)?;
            let link_type = match hook {
                IngressLink::Tcx => linkinfo::LINK_TYPE_TCX,
                _ => linkinfo::LINK_TYPE_XDP,
            };
            adoptable(Some((kind, path)), link_type, ifindex).map(|(_, l)| (hook, l))
        });
        let (ingress_link, hook, ingress_adopted) = match adopted_ingress {
            Some((hook, link)) => (self.adopt_ingress(iface, hook, link)?, hook, true),
            None => {
                let (link, hook) = self.attach_ingress(iface, plan)?;
                (link, hook, false)
            }
        };
        let ingress_pin = pins.as_ref().map(|p| p.link(iface, hook.kind()));
        let ingress_link = keep_pinned(ingress_link, ingress_pin.as_deref(), ingress_adopted)?;
        // The new link runs: an earlier agent's link of another hook may go.
        for (kind, path) in others {
            if Some(&path) != ingress_pin.as_ref() {
                info!("{iface}: removing the {kind:?} ingress link an earlier agent pinned");
                let _ = std::fs::remove_file(&path);
            }
        }

        let pinned_tc = pins
            .as_ref()
            .map(|p| (LinkKind::Tc, p.link(iface, LinkKind::Tc)));
        let tc: &mut SchedClassifier = program_mut(&mut self.ebpf, prog_names::TC)?;
        let attach_err = attach_error(iface);
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
            hook,
            ingress: (ingress_link, ingress_pin),
            egress: (tc_link, tc_pin),
            adopted: ingress_adopted && tc_adopted,
        };
        let a = attachment(iface, &links);
        self.links.insert(iface.to_owned(), links);
        Ok(a)
    }

    /// Switches an earlier agent's ingress link to this agent's program.
    fn adopt_ingress(&mut self, iface: &str, hook: IngressLink, link: FdLink) -> Result<FdLink> {
        let attach_err = attach_error(iface);
        let link_err = link_error(iface);
        if hook == IngressLink::Tcx {
            let tc: &mut SchedClassifier = program_mut(&mut self.ebpf, prog_names::TC_INGRESS)?;
            let link = SchedClassifierLink::try_from(link).map_err(link_err)?;
            let id = tc.attach_to_link(link).map_err(attach_err)?;
            return FdLink::try_from(tc.take_link(id).map_err(attach_err)?).map_err(link_err);
        }
        let xdp: &mut Xdp = program_mut(&mut self.ebpf, prog_names::XDP)?;
        let link = XdpLink::try_from(link).map_err(link_err)?;
        let id = xdp.attach_to_link(link).map_err(attach_err)?;
        FdLink::try_from(xdp.take_link(id).map_err(attach_err)?).map_err(link_err)
    }

    /// A new ingress link by `plan`: native XDP where it is wanted and the
    /// driver takes it, then the plan's fallback.
    fn attach_ingress(&mut self, iface: &str, plan: IngressPlan) -> Result<(FdLink, IngressLink)> {
        let attach_err = attach_error(iface);
        let link_err = link_error(iface);
        if plan != IngressPlan::Tcx {
            let xdp: &mut Xdp = program_mut(&mut self.ebpf, prog_names::XDP)?;
            let (id, hook) = match xdp.attach(iface, XdpMode::Driver) {
                Ok(id) => (id, IngressLink::XdpNative),
                Err(native) if plan == IngressPlan::XdpElseGeneric => {
                    let id = xdp.attach(iface, XdpMode::Skb).map_err(attach_err)?;
                    warn!("{iface}: native XDP refused ({native}); using generic XDP (slower)");
                    (id, IngressLink::XdpGeneric)
                }
                Err(native) => {
                    info!("{iface}: native XDP refused ({native}); judging ingress with TCX");
                    return self.attach_tcx_ingress(iface);
                }
            };
            let link =
                FdLink::try_from(xdp.take_link(id).map_err(attach_err)?).map_err(link_err)?;
            return Ok((link, hook));
        }
        self.attach_tcx_ingress(iface)
    }

    fn attach_tcx_ingress(&mut self, iface: &str) -> Result<(FdLink, IngressLink)> {
        let attach_err = attach_error(iface);
        let tc: &mut SchedClassifier = program_mut(&mut self.ebpf, prog_names::TC_INGRESS)?;
        let id = tc
            .attach(iface, TcAttachType::Ingress)
            .map_err(attach_err)?;
        let link =
            FdLink::try_from(tc.take_link(id).map_err(attach_err)?).map_err(link_error(iface))?;
        Ok((link, IngressLink::Tcx))
    }

    /// Stops enforcing on `iface` (or forgets an interface that is gone):
    /// removes its pins and drops its links.
    pub fn detach(&mut self, iface: &str) -> bool {
        let Some(l) = self.links.remove(iface) else {
            return false;
        };
        for pin in [l.ingress.1, l.egress.1].into_iter().flatten() {
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

fn attach_error(iface: &str) -> impl Fn(aya::programs::ProgramError) -> DatapathError + Copy + '_ {
    move |source| DatapathError::Attach {
        iface: iface.to_owned(),
        source,
    }
}

fn link_error(
    iface: &str,
) -> impl Fn(aya::programs::links::LinkError) -> DatapathError + Copy + '_ {
    move |source| DatapathError::Link {
        iface: iface.to_owned(),
        source,
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
        hook: l.hook,
        adopted: l.adopted,
    }
}
