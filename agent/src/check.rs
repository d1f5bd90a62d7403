//! `netpol-agent check`: validate and show what a policy compiles to, without
//! privileges or a kernel.
use anyhow::Context as _;

use crate::{
    cli::CheckArgs,
    policy::{self, CompileOptions},
};

pub fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let policy = if args.path.is_dir() {
        policy::load_dir(&args.path)?
    } else {
        policy::load_file(&args.path)?
    };
    let compiled = policy::compile(
        &policy,
        &CompileOptions {
            host_addrs: args.host_addr.clone(),
            enforce_host: false,
        },
    )
    .context("compiling")?;
    println!(
        "{}: OK: {} groups, {} rules",
        args.path.display(),
        policy.groups.len(),
        policy.rules.len()
    );
    println!("identities ({}):", compiled.identities.len());
    for id in &compiled.identities {
        println!("  {:>6}  {}", id.id, id.groups.join(", "));
    }
    println!(
        "map entries: {} IPv4 prefixes, {} IPv6 prefixes, {} rule entries",
        compiled.ids_v4.len(),
        compiled.ids_v6.len(),
        compiled.rules.len()
    );
    Ok(())
}
