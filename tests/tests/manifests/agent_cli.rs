//! The deployed command lines against the agent's real CLI, and the
//! shipped policy against `netpol-agent check`.

use std::collections::BTreeSet;
use std::process::{Command, Output};

use clap::{CommandFactory, Parser};
use netpol_agent::cli::Cli;
use netpol_tests::agent_bin;

use crate::kustomize::{args_of, flag, kustomization, render, CAPABILITIES, UNINSTALL};
use crate::support::{arr, assert_success, deploy, example_policy, read, run};

/// Arguments as the agent's CLI sees them. Flags the contract names but
/// this build's CLI does not define yet (`run --listen`, the `uninstall`
/// subcommand) are checked once the CLI has them; until then they are taken
/// out with a notice, never silently.
fn parse_with_cli(what: &str, args: &[String]) {
    let cmd = Cli::command();
    let sub = cmd.find_subcommand(&args[0]).map(|s| {
        s.get_arguments()
            .filter_map(|a| a.get_long())
            .collect::<Vec<_>>()
    });
    let Some(longs) = sub else {
        assert!(
            args[0] == "uninstall",
            "{what}: netpol-agent has no subcommand {:?}",
            args[0]
        );
        eprintln!("notice: {what}: this netpol-agent has no `uninstall` yet; not parsed");
        return;
    };
    let mut kept = vec!["netpol-agent".to_owned()];
    for a in args {
        let long = a.strip_prefix("--").map(|f| f.split('=').next().unwrap());
        match long {
            Some("listen") if !longs.contains(&"listen") => {
                eprintln!("notice: {what}: this netpol-agent has no --listen yet; not parsed");
            }
            _ => kept.push(a.clone()),
        }
    }
    if let Err(e) = Cli::try_parse_from(&kept) {
        panic!("{what}: the agent's CLI rejects {kept:?}:\n{e}");
    }
}

#[test]
fn deployed_arguments_parse_with_the_agent_cli() {
    let Some(k) = kustomization() else { return };
    // The settings file's keys as the flags they name: an unknown or
    // misspelled key fails here as an unknown flag would.
    let args = k.agent_args();
    assert_eq!(args[0], "run");
    parse_with_cli("deploy/base (DaemonSet and config.yaml)", &args);

    let Some(uninstall) = render(UNINSTALL) else {
        return;
    };
    let ds = uninstall.resource("DaemonSet");
    let init = &arr(
        &ds["spec"]["template"]["spec"]["initContainers"],
        "initContainers",
    )[0];
    let job_args = args_of(init);
    assert_eq!(job_args[0], "uninstall");
    assert_eq!(
        flag(&job_args, "--pin-path"),
        flag(&args, "--pin-path"),
        "the cleanup DaemonSet removes the agent's pins"
    );
    parse_with_cli("deploy/uninstall/daemonset.yaml", &job_args);

    // The systemd unit: its ExecStart, and the same capabilities.
    let unit = read(&deploy().join("systemd/netpol-agent.service")).replace("\\\n", " ");
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("netpol-agent.service has no {key}="))
            .to_owned()
    };
    let exec: Vec<String> = value("ExecStart")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert!(exec[0].ends_with("/netpol-agent"));
    parse_with_cli("deploy/systemd/netpol-agent.service", &exec[1..]);
    let caps: BTreeSet<String> = CAPABILITIES.iter().map(|c| format!("CAP_{c}")).collect();
    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        let set: BTreeSet<String> = value(key).split_whitespace().map(str::to_owned).collect();
        assert_eq!(set, caps, "{key}");
    }
    let check: Vec<String> = value("ExecStartPre")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(check[1], "check");
    assert_eq!(
        Some(check[2].as_str()),
        flag(&exec, "--policy-dir"),
        "ExecStartPre checks the directory ExecStart enforces"
    );
    Cli::try_parse_from(&check[..]).expect("ExecStartPre parses");
}

/// The policy the overlay ships passes `netpol-agent check`, the same
/// validation `run` does before it touches the kernel, and compiles exactly
/// as the example it copies.
#[test]
fn overlay_policy_passes_agent_check() {
    let copies = deploy().join("overlays/localplus/policy");
    let example = example_policy(true);
    let out = run(Command::new(agent_bin()).arg("check").arg(&copies));
    assert_success(&out, "netpol-agent check deploy/overlays/localplus/policy");
    let examples = run(Command::new(agent_bin()).arg("check").arg(&example));
    assert_success(
        &examples,
        &format!("netpol-agent check {}", example.display()),
    );
    let strip = |o: &Output| {
        String::from_utf8_lossy(&o.stdout)
            .replace(&copies.display().to_string(), "DIR")
            .replace(&example.display().to_string(), "DIR")
    };
    assert_eq!(strip(&out), strip(&examples));
}
