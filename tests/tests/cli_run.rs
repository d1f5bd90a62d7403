//! `netpol-agent run` refuses bad input before touching the kernel: an invalid
//! policy (with file, line, column and field), a policy with no rules (lockout
//! protection), and an interface pattern that matches nothing; `check` refuses
//! exactly what `run` refuses. These need no privileges: the agent exits
//! before loading anything.
use std::process::{Command, Output};

use netpol_tests::agent_bin;

fn run_agent(policy_dir: &std::path::Path, extra: &[&str]) -> Output {
    Command::new(agent_bin())
        .args(["run", "--iface", "no-such-iface0", "--policy-dir"])
        .arg(policy_dir)
        .args(["--pin-path", "/nonexistent/netpol-cli-test"])
        .args(["--state-dir", "/nonexistent/netpol-state"])
        .args(extra)
        .output()
        .expect("start netpol-agent")
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("netpol-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn invalid_policy_names_file_line_field_and_exits_2() {
    let dir = temp_dir("invalid");
    std::fs::write(
        dir.join("aiven.yaml"),
        "groups:\n  db: [10.1.0.0/24]\nrules:\n  - name: to-db\n    from: any\n    to: db\n    ports: [5432/tcp, 70000/tcp]\n",
    )
    .unwrap();
    let out = run_agent(&dir, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("aiven.yaml:7:23: rules[0].ports[1]: \"70000/tcp\": port must be 0-65535"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn empty_policy_is_refused_unless_allowed() {
    let dir = temp_dir("empty");
    let out = run_agent(&dir, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--allow-empty-policy"), "{err}");

    // Allowed: it gets past the policy checks and stops at the interface.
    let out = run_agent(&dir, &["--allow-empty-policy"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no interface matches"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `check` passes exactly the policies `run` gets past its policy checks
/// with (it then stops at the interface: exit 1), with the same flags.
#[test]
fn check_refuses_exactly_what_run_refuses() {
    // (name, policy, flags, whether run accepts it)
    let cases: [(&str, &str, &[&str], bool); 6] = [
        (
            "valid",
            "groups:\n  web: [10.0.1.0/24]\nrules:\n  - name: w\n    within: web\n",
            &[],
            true,
        ),
        (
            "invalid",
            "rules:\n  - name: r\n    from: any\n    to: any\n    ports: [tcp:53]\n",
            &[],
            false,
        ),
        ("empty", "groups:\n  web: [10.0.1.0/24]\n", &[], false),
        (
            "empty-allowed",
            "groups:\n  web: [10.0.1.0/24]\n",
            &["--allow-empty-policy"],
            true,
        ),
        (
            "too-big",
            "rules:\n  - name: r\n    from: any\n    to: any\n    ports: [1-65534/tcp]\n",
            &["--rule-max", "4"],
            false,
        ),
        (
            "nothing-allowed",
            "groups:\n  web: []\nrules:\n  - name: w\n    within: web\n",
            &[],
            false,
        ),
    ];
    for (name, text, flags, accepted) in cases {
        let dir = temp_dir(&format!("agree-{name}"));
        std::fs::write(dir.join("p.yaml"), text).unwrap();
        let run = run_agent(&dir, flags);
        let check = Command::new(agent_bin())
            .arg("check")
            .arg(&dir)
            .args(flags)
            .output()
            .expect("start netpol-agent");
        let (run_err, check_err) = (
            String::from_utf8_lossy(&run.stderr),
            String::from_utf8_lossy(&check.stderr),
        );
        let run_accepts = match run.status.code() {
            Some(1) if run_err.contains("no interface matches") => true,
            Some(2) => false,
            other => panic!("{name}: run exited {other:?}: {run_err}"),
        };
        let check_accepts = match check.status.code() {
            Some(0) => true,
            Some(2) => false,
            other => panic!("{name}: check exited {other:?}: {check_err}"),
        };
        assert_eq!(run_accepts, accepted, "{name}: run says {run_err}");
        assert_eq!(
            check_accepts, run_accepts,
            "{name}: run says {run_err}\ncheck says {check_err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
