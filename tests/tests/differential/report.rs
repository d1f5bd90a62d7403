//! What a disagreement is reported as: the policy files, and a ready-to-paste
//! regression test.

use crate::judges::Prepared;
use crate::packets::Pkt;
use crate::policy::GPolicy;
use crate::yaml::yaml_files;

pub fn files_text(files: &[(String, String)]) -> String {
    files
        .iter()
        .map(|(n, t)| format!("--- {n}\n{t}"))
        .collect::<Vec<_>>()
        .join("")
}

/// Rust source for a list of policy files.
fn files_source(files: &[(String, String)], indent: &str) -> String {
    let items: Vec<String> = files
        .iter()
        .map(|(n, t)| format!("{indent}    ({n:?}, r##\"\n{t}\"##),"))
        .collect();
    format!("&[\n{}\n{indent}]", items.join("\n"))
}

/// A `#[test]` reproducing a packet failure, for tests/tests/differential/regressions.rs.
pub fn regression_test(
    seed: u64,
    case: u64,
    history: &[GPolicy],
    prep: &Prepared,
    gp: &GPolicy,
    pkt: &Pkt,
    want_pass: bool,
) -> String {
    let host: Vec<String> = gp
        .host
        .iter()
        .map(|a| format!("{:?}", a.to_string()))
        .collect();
    let port = if pkt.is_icmp() {
        format!("0x{:04x}", pkt.port)
    } else {
        pkt.port.to_string()
    };
    let before: Vec<String> = history
        .iter()
        .map(|h| {
            format!(
                "            {},",
                files_source(&yaml_files(h), "            ")
            )
        })
        .collect();
    let with_nodes = if gp.nodes.is_empty() { "" } else { "_nodes" };
    let nodes: Vec<String> = gp
        .nodes
        .iter()
        .map(|n| format!("{:?}", n.to_string()))
        .collect();
    let nodes = if gp.nodes.is_empty() {
        String::new()
    } else {
        format!("        &[{}], // node prefixes\n", nodes.join(", "))
    };
    let (call, before) = if history.is_empty() {
        (format!("check_packet{with_nodes}("), String::new())
    } else {
        (
            format!("check_packet_after{with_nodes}("),
            format!(
                "        // Applied first, in this order (the bug depends on them):\n        &[\n{}\n        ],\n",
                before.join("\n")
            ),
        )
    };
    format!(
        "#[test]
fn regression_seed_{seed:x}_case_{case}() {{
    // Found by policy_vs_datapath (NETPOL_DIFF_SEED={seed:#x} NETPOL_DIFF_CASE={case}), shrunk.
    {call}
{before}        {files},
        &[{host}], // host addresses
{nodes}        {enforce}, // CompileOptions::enforce_host
        // {what}
        ({src:?}, {dst:?}, {proto}, {port}),
        {want_pass}, // it passes
    );
}}",
        files = files_source(&prep.files, "        "),
        host = host.join(", "),
        enforce = gp.enforce_opt,
        src = pkt.src.to_string(),
        dst = pkt.dst.to_string(),
        proto = pkt.proto,
        what = pkt.describe(),
    )
}
