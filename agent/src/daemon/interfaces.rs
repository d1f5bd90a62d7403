//! Which interfaces are enforced: the --iface patterns against the
//! interfaces present now, re-checked on every link event and host tick.
use anyhow::Context as _;
use log::{error, info, warn};

use crate::{
    datapath::{Datapath, IngressHook},
    host::ifaces,
    telemetry::status::Attached,
};

pub(super) fn has_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// Brings the attachments in line with --iface and the interfaces present
/// now: attaches to new matches (adopting pinned links), forgets interfaces
/// that went away or were re-created, and unpins links of interfaces no
/// longer matched. With `strict` (the first reconcile), an attach error is
/// returned, except for an interface that went away between the listing and
/// its attach: pods come and go while the agent starts, and the link events
/// bring it back if it returns. Otherwise errors are logged and retried at
/// the next event.
pub(super) fn reconcile(
    dp: &mut Datapath,
    patterns: &[String],
    hook: IngressHook,
    strict: bool,
) -> anyhow::Result<Vec<String>> {
    reconcile_with(dp, patterns, hook, strict, &mut |_| {})
}

/// `reconcile`, calling `before_attach` with each interface just before it
/// is attached: the moment a deleted interface races the agent, which a
/// test can reproduce exactly by deleting it there.
pub fn reconcile_with(
    dp: &mut Datapath,
    patterns: &[String],
    hook: IngressHook,
    strict: bool,
    before_attach: &mut dyn FnMut(&str),
) -> anyhow::Result<Vec<String>> {
    let available = ifaces::list().context("listing interfaces")?;
    let mut selected = ifaces::select(patterns, &available).context("bad --iface pattern")?;
    for iface in dp.attached() {
        if !selected.contains(&iface) {
            dp.detach(&iface);
            info!("{iface}: gone or no longer matched by --iface; forgotten");
        }
    }
    let mut vanished = Vec::new();
    for iface in &selected {
        before_attach(iface);
        let before = dp.attached_ifindex(iface);
        if before.is_some() && before == ifaces::index_of(iface) {
            // Enforced already: no need to ask what kind of interface it is.
            continue;
        }
        match dp.attach(iface, hook.plan(ifaces::is_veth(iface))) {
            Ok(a) => info!(
                "{iface}: enforced, {} ingress and tcx egress {}",
                a.hook.name(),
                if a.adopted {
                    "adopted from pinned links and switched to this agent's programs"
                } else {
                    "attached"
                }
            ),
            Err(e) if ifaces::index_of(iface).is_none() => {
                warn!("{iface}: went away before it could be attached ({e}); skipped");
                vanished.push(iface.clone());
            }
            Err(e) if strict => return Err(e).with_context(|| format!("enforcing on {iface}")),
            Err(e) => error!("{iface}: not enforced yet, will retry: {e}"),
        }
    }
    selected.retain(|i| !vanished.contains(i));
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
            hook: a.hook.name().to_owned(),
        })
        .collect()
}
