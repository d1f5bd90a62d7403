//! xdp-filter (Debian xdp-tools) as a peer: stateless, exact addresses and
//! ports only, so the closest it comes to the policy is an allow-list of the
//! source addresses the policy lets in, in `deny` mode.
//!
//! xdp-filter keeps its maps pinned under /sys/fs/bpf/xdp-filter, one set per
//! machine; it is run in a private mount namespace with its own bpffs so a
//! benchmark never touches anyone else's pins. The program stays attached
//! after that namespace is gone; `ip link set IFACE xdp off` removes it.
use std::net::IpAddr;
use std::process::Command;

use anyhow::{bail, Context as _};

use crate::netns::Netns;

pub struct XdpFilter<'a> {
    ns: &'a Netns,
    iface: String,
}

impl<'a> XdpFilter<'a> {
    pub fn load(
        ns: &'a Netns,
        iface: &str,
        allowed_src: &[IpAddr],
    ) -> anyhow::Result<XdpFilter<'a>> {
        let mut script = format!(
            "set -e; mount -t bpf bpf /sys/fs/bpf; xdp-filter load -m native -p deny {iface}\n"
        );
        for a in allowed_src {
            script.push_str(&format!("xdp-filter ip -m src {a}\n"));
        }
        let out = Command::new("nsenter")
            .arg(format!("--net={}", ns.path().display()))
            .args([
                "--",
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ])
            .output()
            .context("running xdp-filter")?;
        let filter = XdpFilter {
            ns,
            iface: iface.to_string(),
        };
        if !out.status.success() {
            bail!(
                "xdp-filter load failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(filter)
    }
}

impl Drop for XdpFilter<'_> {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args([
                "-n",
                self.ns.name(),
                "link",
                "set",
                &self.iface,
                "xdp",
                "off",
            ])
            .output();
    }
}
