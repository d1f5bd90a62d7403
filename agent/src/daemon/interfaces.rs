//! Which interfaces are enforced: the --iface patterns against the
//! interfaces present now, re-checked on every link event and host tick.
use anyhow::Context as _;
use log::{error, info, warn};

use crate::{datapath::Datapath, host::ifaces, telemetry::status::Attached};

pub(super) fn has_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// Brings the attachments in line with --iface and the interfaces present
/// now: attaches to new matches (adopting pinned links), forgets interfaces
/// that went away or were re-created, and unpins links of interfaces no
/// longer matched. With `strict`, the first attach error is returned;
/// otherwise it is logged and retried at the next event.
pub(super) fn reconcile(
    dp: &mut Datapath,
    patterns: &[String],
    strict: bool,
) -> anyhow::Result<Vec<String>> {
    let available = ifaces::list().context("listing interfaces")?;
    let selected = ifaces::select(patterns, &available).context("bad --iface pattern")?;
    for iface in dp.attached() {
        if !selected.contains(&iface) {
            dp.detach(&iface);
            info!("{iface}: gone or no longer matched by --iface; forgotten");
        }
    }
    for iface in &selected {
        let before = dp.attached_ifindex(iface);
        match dp.attach(iface) {
            Ok(a) if before != Some(a.ifindex) => info!(
                "{iface}: XDP ({}) ingress and TC egress {}",
                a.xdp_mode,
                if a.adopted {
                    "adopted from pinned links and switched to this agent's programs"
                } else {
                    "attached"
                }
            ),
            Ok(_) => {}
            Err(e) if strict => return Err(e).with_context(|| format!("enforcing on {iface}")),
            Err(e) => error!("{iface}: not enforced yet, will retry: {e}"),
        }
    }
    for (iface, path) in dp.stale_pinned_links() {
        if !selected.contains(&iface) {
            match std::fs::remove_file(&path) {
                Ok(()) => info!("{iface}: no longer matched; removed {}", path.display()),
                Err(e) => warn!("removing {}: {e}", path.display()),
            }
        }
    }
    Ok(selected)
}

/// The interfaces enforced now, for /status and the metrics.
pub(super) fn attached_status(dp: &Datapath) -> Vec<Attached> {
    dp.attachments()
        .into_iter()
        .map(|a| Attached {
            interface: a.iface,
            xdp_mode: a.xdp_mode.to_owned(),
        })
        .collect()
}
