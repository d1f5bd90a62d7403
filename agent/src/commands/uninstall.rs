//! `netpol-agent uninstall`: takes enforcement off the node.
use anyhow::{bail, Context as _};

use crate::{
    bpffs::{layout as pin, lock},
    cli::UninstallArgs,
};

pub fn uninstall(args: &UninstallArgs) -> anyhow::Result<()> {
    // Held until the pins are gone: an agent starting meanwhile waits, then
    // starts on an empty directory.
    let _lock = match lock::try_acquire(&args.pin_path) {
        Ok(guard) => guard,
        Err(e @ lock::LockError::Held { .. }) => bail!(
            "{e}: stop it first (stopping it leaves enforcement in place; uninstall \
             then removes it)"
        ),
        Err(e) => return Err(e).context("taking the pin directory's lock"),
    };
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
