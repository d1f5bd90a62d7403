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

/// `run --config FILE` with `vars` in its environment (and no other
/// NETPOL_ setting inherited), from a directory of its own.
fn run_configured(config: &std::path::Path, vars: &[(&str, &str)], extra: &[&str]) -> Output {
    let mut cmd = Command::new(agent_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("NETPOL_") || k == "NODE_NAME" {
            cmd.env_remove(k);
        }
    }
    cmd.args(["run", "--config"])
        .arg(config)
        .args(extra)
        .envs(vars.iter().copied())
        .output()
        .expect("start netpol-agent")
}

/// Every line of `stderr` as a JSON log record: exactly ts, level, target,
/// msg.
fn json_records(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"));
            let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(keys, ["ts", "level", "target", "msg"], "{l}");
            assert!(v["ts"].as_str().unwrap().ends_with('Z'), "UTC: {l}");
            v
        })
        .collect()
}

/// The file, the environment and the command line each set a list flag
/// (`iface`) and a scalar (`log-format`); the agent gets past its policy
/// checks (the file allows the empty policy) and stops at the interface,
/// whose error says which list won. JSON logs are one record per line.
#[test]
fn settings_come_from_the_command_line_then_the_environment_then_the_file() {
    let dir = temp_dir("settings");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "# as the ConfigMap mounts it\niface: [file0, \"file1\"]\npolicy-dir: {}\n\
             allow-empty-policy: true\nlog-format: json\npin-path: /nonexistent/netpol-cli-test\n",
            dir.join("policies").display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("policies")).unwrap();

    // The file alone: its list, and JSON records.
    let out = run_configured(&config, &[], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let records = json_records(&err);
    let last = records.last().unwrap();
    assert_eq!(last["level"], "ERROR", "{err}");
    assert!(
        last["msg"]
            .as_str()
            .unwrap()
            .contains("no interface matches --iface [\"file0\", \"file1\"]"),
        "{err}"
    );

    // The environment over the file, for both.
    let env = [("NETPOL_IFACE", "env0,env1"), ("NETPOL_LOG_FORMAT", "text")];
    let out = run_configured(&config, &env, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("netpol-agent: error: no interface matches --iface [\"env0\", \"env1\"]"),
        "{err}"
    );

    // The command line over both.
    let out = run_configured(&config, &env, &["--iface", "cli0", "--log-format", "json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let records = json_records(&err);
    assert!(
        records.last().unwrap()["msg"]
            .as_str()
            .unwrap()
            .contains("--iface [\"cli0\"]"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_settings_name_file_line_and_key_and_exit_2() {
    let dir = temp_dir("bad-settings");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "iface: [eth0]\npolicy-dir: /etc/netpol\nlog-fromat: json\nct-max: [1]\n",
    )
    .unwrap();
    let out = run_configured(&config, &[], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let c = config.display();
    assert!(
        err.contains(&format!(
            "{c}:3:1: log-fromat: unknown setting \"log-fromat\""
        )) && err.contains("did you mean \"log-format\"?"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{c}:4:1: ct-max: expected a whole number, found a list"
        )),
        "{err}"
    );
    let out = run_configured(
        &config,
        &[("NETPOL_CONFIG", "/nonexistent/other.yaml")],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("log-fromat") && !err.contains("other.yaml"),
        "--config wins over NETPOL_CONFIG: {err}"
    );
    let out = run_configured(&dir, &[], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not a regular file"), "a directory: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}
