//! `netpol-agent status`: a running agent's `/status` document (mode,
//! readiness, policy generation, reloads, the last reload error, the
//! interfaces it enforces on), as a table or as the document itself.
use std::fmt::Write as _;

use super::{
    client::{block_on, AgentClient},
    output,
};
use crate::{cli::StatusArgs, telemetry::status::Status};

pub fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let client = AgentClient::new(&args.agent);
    let status: Status = block_on(client.get_json("/status"))??;
    print!(
        "{}",
        output::render(args.output.format(), &status, |s| table(
            &args.agent.socket.display().to_string(),
            s
        ))?
    );
    Ok(())
}

/// What `status` prints for people.
pub fn table(endpoint: &str, s: &Status) -> String {
    let mut out = String::new();
    let row = |out: &mut String, key: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(out, "{:<19}{value}", format!("{key}:"));
    };
    row(&mut out, "agent", &endpoint);
    row(&mut out, "mode", &s.mode);
    let ready = if s.ready {
        "yes"
    } else if s.policy_fallback {
        "no (policy directory rejected at start: enforcing the last good policy)"
    } else {
        "no (programs not attached or no policy loaded)"
    };
    row(&mut out, "ready", &ready);
    row(&mut out, "policy generation", &s.policy_generation);
    // The same on every node that enforces the same policy.
    let hash = if s.policy_hash.is_empty() {
        "none"
    } else {
        &s.policy_hash
    };
    row(&mut out, "policy hash", &hash);
    row(
        &mut out,
        "reloads",
        &format!(
            "{} succeeded, {} failed",
            s.reloads_succeeded, s.reloads_failed
        ),
    );
    // The error is kept until a reload succeeds, so it is the live one.
    row(
        &mut out,
        "last reload error",
        &s.last_reload_error.as_deref().unwrap_or("none"),
    );
    let _ = writeln!(out, "interfaces ({}):", s.attached.len());
    if !s.attached.is_empty() {
        let width = s
            .attached
            .iter()
            .map(|a| a.interface.len())
            .max()
            .unwrap_or(0)
            .max("INTERFACE".len());
        let _ = writeln!(out, "  {:<width$}  {:<11} EGRESS", "INTERFACE", "INGRESS");
        for a in &s.attached {
            let _ = writeln!(out, "  {:<width$}  {:<11} tcx", a.interface, a.hook);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::status::Attached;

    fn sample() -> Status {
        Status {
            mode: "audit".into(),
            ready: true,
            policy_generation: 7,
            reloads_succeeded: 5,
            reloads_failed: 1,
            last_reload_error: Some("p.yaml:3:5: rules[0].to: unknown group \"db\"".into()),
            attached: vec![
                Attached {
                    interface: "uplink0".into(),
                    hook: "xdp-native".into(),
                },
                Attached {
                    interface: "lxc-wallet-long".into(),
                    hook: "tcx".into(),
                },
            ],
            kubernetes_synced: None,
            policy_fallback: false,
            policy_hash: "3f1c0d9e2b7a4c55".into(),
        }
    }

    #[test]
    fn table_shows_every_field() {
        assert_eq!(
            table("/run/netpol-agent/agent.sock", &sample()),
            "\
agent:             /run/netpol-agent/agent.sock
mode:              audit
ready:             yes
policy generation: 7
policy hash:       3f1c0d9e2b7a4c55
reloads:           5 succeeded, 1 failed
last reload error: p.yaml:3:5: rules[0].to: unknown group \"db\"
interfaces (2):
  INTERFACE        INGRESS     EGRESS
  uplink0          xdp-native  tcx
  lxc-wallet-long  tcx         tcx
"
        );
        let idle = Status {
            mode: "enforce".into(),
            ..Status::default()
        };
        let text = table("x", &idle);
        assert!(
            text.contains("ready:             no (programs not attached"),
            "{text}"
        );
        assert!(text.contains("last reload error: none\n"), "{text}");
        let fallback = Status {
            policy_fallback: true,
            ..idle
        };
        let text = table("x", &fallback);
        assert!(
            text.contains("ready:             no (policy directory rejected at start"),
            "{text}"
        );
        assert!(text.ends_with("interfaces (0):\n"), "{text}");
    }

    #[test]
    fn the_document_round_trips_and_tolerates_missing_fields() {
        let s = sample();
        let json = output::json(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
        // An agent that sends fewer fields (an older one) still reads.
        let partial: Status = serde_json::from_str(r#"{"mode":"enforce","ready":true}"#).unwrap();
        assert_eq!(partial.mode, "enforce");
        assert!(partial.ready && partial.attached.is_empty());
    }
}
