//! `netpol-agent uninstall`: takes enforcement off the node.
use anyhow::{bail, Context as _};

use crate::{bpffs::layout as pin, cli::UninstallArgs};

pub fn uninstall(args: &UninstallArgs) -> anyhow::Result<()> {
    if crate::bpffs::lock::running(&args.pin_path) {
        bail!(
            "a netpol-agent is running on {}: stop it first (stopping it leaves \
             enforcement in place; uninstall then removes it)",
            args.pin_path.display()
        );
    }
    let layout = pin::PinLayout::new(&args.pin_path);
    if !layout.root().exists() {
        println!(
            "nothing pinned under {}: netpol-agent is not installed there",
            args.pin_path.display()
        );
        return Ok(());
    }
    let done = pin::uninstall(&layout)
        .with_context(|| format!("removing pins under {}", args.pin_path.display()))?;
    println!(
        "removed {} links, {} programs, {} maps from {}",
        done.links,
        done.programs,
        done.maps,
        args.pin_path.display()
    );
    if !done.still_held.is_empty() {
        bail!(
            "still attached, held by a running netpol-agent (stop it, and these go with it): {}",
            done.still_held.join(", ")
        );
    }
    Ok(())
}
