//! The operator-facing commands as a person or a script runs them: the
//! real `netpol-agent` binary, without privileges. `-o table|json|yaml` and
//! the `--json` alias, `check` answering what `run` would do (exit codes,
//! one-pass errors, the files it reads, `--policy-dir`), the messages of
//! common mistakes, `explain`'s document, `status` against an endpoint that
//! serves the agent's `/status` document, `version` against the kernel and
//! the embedded object, and the completion scripts.
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use netpol_agent::telemetry::status::{Attached, Status};
use netpol_tests::agent_bin;
use serde_json::{json, Value};

fn agent(args: &[&str]) -> Output {
    Command::new(agent_bin())
        .args(args)
        .output()
        .expect("start netpol-agent")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The exit code, with both streams for the failure message.
fn code(out: &Output) -> (Option<i32>, String, String) {
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// A YAML document read back as JSON, to compare with `-o json`.
fn yaml_as_json(out: &Output) -> Value {
    use saphyr::{LoadableYamlNode as _, Scalar, Yaml};
    fn conv(y: &Yaml) -> Value {
        match y {
            Yaml::Value(Scalar::Null) => Value::Null,
            Yaml::Value(Scalar::Boolean(b)) => json!(b),
            Yaml::Value(Scalar::Integer(i)) => json!(i),
            Yaml::Value(Scalar::FloatingPoint(f)) => json!(f.into_inner()),
            Yaml::Value(Scalar::String(s)) => json!(s),
            Yaml::Sequence(v) => Value::Array(v.iter().map(conv).collect()),
            Yaml::Mapping(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.as_str().expect("string key").to_string(), conv(v)))
                    .collect(),
            ),
            other => panic!("unexpected YAML node {other:?}"),
        }
    }
    let docs = Yaml::load_from_str(&text(&out.stdout))
        .unwrap_or_else(|e| panic!("not YAML ({e}):\n{}", text(&out.stdout)));
    assert_eq!(docs.len(), 1, "{}", text(&out.stdout));
    conv(&docs[0])
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A scratch policy directory removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("netpol-cli-out-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn write(&self, name: &str, text: &str) -> &Self {
        std::fs::write(self.0.join(name), text).unwrap();
        self
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const WEB_DB: &str = "groups:
  web: [10.0.1.0/24]
  db: [10.0.2.0/24]
rules:
  - name: ping
    from: web
    to: db
    ports: [icmp/8]
  - name: web-to-db
    from: web
    to: db
    ports: [tcp/5432]
";

#[test]
fn check_prints_a_document_in_every_format() {
    let dir = repo().join("examples/localplus-cidr");
    let dir = dir.to_str().unwrap();
    let table = agent(&["check", dir]);
    let (c, stdout, stderr) = code(&table);
    assert_eq!(c, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.starts_with(&format!("{dir}: OK: 14 groups, 12 rules\ngroups (14):\n")),
        "{stdout}"
    );

    let json_out = agent(&["check", dir, "-o", "json"]);
    assert_eq!(json_out.status.code(), Some(0));
    let doc = json_of(&json_out);
    assert_eq!(doc["path"], dir);
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["groups"].as_array().unwrap().len(), 14);
    assert_eq!(doc["errors"], json!([]));
    // Every rule with its entries, as the table counts them.
    let rules = doc["rules"].as_array().unwrap();
    for r in rules {
        let line = format!(
            "  {:>4}  {}: {}: {} entr",
            r["id"],
            r["name"].as_str().unwrap(),
            r["summary"].as_str().unwrap(),
            r["entries"]
        );
        assert!(stdout.contains(&line), "{line} not in the table:\n{stdout}");
    }
    let rule_entries = doc["maps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["map"] == "rule entries")
        .unwrap();
    let total: u64 = rules.iter().map(|r| r["entries"].as_u64().unwrap()).sum();
    assert_eq!(rule_entries["used"], total);
    assert_eq!(rule_entries["limit"], 1_048_576);
    assert_eq!(rule_entries["flag"], "--rule-max");
    // The example keeps a group no rule names; the warning is in both forms.
    let warnings = doc["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{doc}");
    assert!(
        stdout.contains(&format!("warning: {}", warnings[0].as_str().unwrap())),
        "{stdout}"
    );

    // The same document in YAML, and through the --json alias.
    assert_eq!(yaml_as_json(&agent(&["check", dir, "-o", "yaml"])), doc);
    assert_eq!(json_of(&agent(&["check", dir, "--json"])), doc);
    // --policy-dir is the same as the argument.
    let by_flag = agent(&["check", "--policy-dir", dir]);
    assert_eq!(code(&by_flag), code(&table));
}

#[test]
fn check_refuses_what_run_refuses() {
    let d = Dir::new("refuse");
    d.write("web.yaml", "groups:\n  web: [10.0.1.0/24]\n");
    let out = agent(&["check", d.arg()]);
    let (c, stdout, stderr) = code(&out);
    assert_eq!(c, Some(2), "{stdout}{stderr}");
    assert!(
        stdout.starts_with(&format!("{}: REFUSED: 1 group, 0 rules\n", d.arg())),
        "{stdout}"
    );
    assert!(
        stderr.starts_with(&format!(
            "netpol-agent: error: run would refuse {}:\n  - the policy has no rules",
            d.arg()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-empty-policy"), "{stderr}");
    let doc = json_of(&agent(&["check", d.arg(), "-o", "json"]));
    assert_eq!(doc["valid"], false);
    assert_eq!(doc["lockout"][0]["kind"], "empty-policy");
    assert!(doc["errors"][0]["message"]
        .as_str()
        .unwrap()
        .starts_with("the policy has no rules"));

    let out = agent(&["check", d.arg(), "--allow-empty-policy"]);
    let (c, stdout, stderr) = code(&out);
    assert_eq!(c, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("warning: allowed by --allow-empty-policy: the policy has no rules"),
        "{stdout}"
    );

    // The node cut off, with its address given.
    let d = Dir::new("host");
    d.write("p.yaml", "settings:\n  enforce-host: true\ngroups:\n  web: [10.0.1.0/24]\nrules:\n  - name: w\n    within: web\n");
    let out = agent(&["check", d.arg(), "--host-addr", "192.0.2.5"]);
    let (c, stdout, stderr) = code(&out);
    assert_eq!(c, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("no rule allows any traffic from the node's own addresses (192.0.2.5)"),
        "{stderr}"
    );
    let out = agent(&[
        "check",
        d.arg(),
        "--host-addr",
        "192.0.2.5",
        "--allow-host-lockout",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // Too big for the maps `run` would size.
    let out = agent(&[
        "check",
        repo().join("examples/localplus-cidr").to_str().unwrap(),
        "--rule-max",
        "10",
    ]);
    let (c, _, stderr) = code(&out);
    assert_eq!(c, Some(2), "{stderr}");
    assert!(stderr.contains("raise --rule-max"), "{stderr}");
}

#[test]
fn check_reports_every_error_of_a_directory_at_once() {
    let d = Dir::new("errors");
    d.write("a.yaml", "groups:\n  db: [10.0.2.0/24]\nrules:\n  - name: a\n    from: any\n    to: db\n    ports: [tcp:53]\n")
        .write("b.yaml", "rules:\n  - name: b\n    from: frontend\n    to: db\n    ports: [tcp/443]\n");
    let out = agent(&["check", d.arg()]);
    let (c, stdout, stderr) = code(&out);
    assert_eq!(c, Some(2), "{stdout}{stderr}");
    let a = d.0.join("a.yaml").display().to_string();
    let b = d.0.join("b.yaml").display().to_string();
    assert_eq!(
        stderr,
        format!(
            "{a}:7:13: rules[0].ports[0]: \"tcp:53\": write 53/tcp\n\
             {b}:3:11: rules[0].from: unknown group \"frontend\"\n"
        )
    );
    assert_eq!(stdout, "", "nothing compiled, nothing shown");
    // As a document: the same errors with their positions.
    let doc = json_of(&agent(&["check", d.arg(), "-o", "json"]));
    assert_eq!(doc["valid"], false);
    assert_eq!(
        doc["errors"],
        json!([
            {"file": a, "line": 7, "column": 13, "field": "rules[0].ports[0]", "message": "\"tcp:53\": write 53/tcp"},
            {"file": b, "line": 3, "column": 11, "field": "rules[0].from", "message": "unknown group \"frontend\""},
        ])
    );
}

#[test]
fn check_reads_only_the_files_run_reads() {
    let d = Dir::new("ext");
    d.write("p.json", "{\"rules\": []}").write("p.yaml", WEB_DB);
    let json_file = d.0.join("p.json");
    let out = agent(&["check", json_file.to_str().unwrap()]);
    let (c, stdout, stderr) = code(&out);
    assert_eq!(c, Some(2), "{stdout}{stderr}");
    assert_eq!(
        stderr,
        format!(
            "netpol-agent: error: {}: run would not read this file from a policy directory (it reads only *.yaml and *.yml files); rename it\n",
            json_file.display()
        )
    );
    // The directory is checked without the .json file.
    let out = agent(&["check", d.arg()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(": OK: 2 groups, 2 rules\n"));
}

#[test]
fn explain_prints_a_document_and_ranks_the_packets_protocol_first() {
    let d = Dir::new("explain");
    d.write("p.yaml", WEB_DB);
    let base = ["explain", "--policy-dir", d.arg(), "10.0.1.5", "10.0.2.7"];
    let run = |target: &str, extra: &[&str]| agent(&[&base[..], &[target], extra].concat());

    let out = run("tcp/80", &[]);
    let (c, stdout, stderr) = code(&out);
    assert_eq!(c, Some(3), "{stdout}{stderr}");
    let nearest = stdout.lines().nth(4).unwrap_or_default();
    assert!(
        nearest.starts_with("  web-to-db: from web to db ports 5432/tcp"),
        "{stdout}"
    );

    let out = run("tcp/80", &["-o", "json"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "the exit code does not depend on the format"
    );
    let doc = json_of(&out);
    assert_eq!(doc["verdict"], "denied");
    assert_eq!(doc["packet"]["target"], "tcp/80");
    assert_eq!(doc["source"]["groups"], json!(["web"]));
    assert_eq!(doc["destination"]["groups"], json!(["db"]));
    let near: Vec<&str> = doc["near_misses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(near, ["web-to-db", "ping"]);
    assert_eq!(doc["near_misses"][0]["failed"], json!(["ports"]));
    assert_eq!(yaml_as_json(&run("tcp/80", &["-o", "yaml"])), doc);

    let out = run("tcp/5432", &["--json"]);
    assert_eq!(out.status.code(), Some(0));
    let doc = json_of(&out);
    assert_eq!(doc["verdict"], "allowed");
    assert_eq!(doc["allowing"][0]["name"], "web-to-db");
    assert_eq!(doc["datapath_rule"], "web-to-db");

    // A port written the Docker way.
    let out = run("tcp:53", &[]);
    let (c, _, stderr) = code(&out);
    assert_eq!(c, Some(2));
    assert!(stderr.contains("write 53/tcp"), "{stderr}");

    // Nor does it answer for a file `run` would not read.
    d.write("p.json", "{}");
    let json_file = d.0.join("p.json");
    let out = agent(&[
        "explain",
        "--policy-dir",
        json_file.to_str().unwrap(),
        "10.0.1.5",
        "10.0.2.7",
        "tcp/80",
    ]);
    let (c, _, stderr) = code(&out);
    assert_eq!(c, Some(2), "{stderr}");
    assert!(stderr.contains("run would not read this file"), "{stderr}");
}

#[test]
fn explain_names_the_refusal_of_a_tunnel_to_the_node() {
    let d = Dir::new("explain-tunnel");
    d.write("p.yaml", WEB_DB);
    let node = ["--host-addr", "192.0.2.5", "--node-cidr", "192.0.2.0/28"];
    let run = |src: &str, target: &str, extra: &[&str]| {
        let base = ["explain", "--policy-dir", d.arg(), src, "192.0.2.5", target];
        agent(&[&base[..], &node[..], extra].concat())
    };

    let out = run("203.0.113.9", "udp/4789", &[]);
    let (c, stdout, stderr) = code(&out);
    assert_eq!(c, Some(3), "{stdout}{stderr}");
    assert!(
        stdout.starts_with(
            "denied by builtin:host-ingress (encapsulation only from nodes): 203.0.113.9 -> 192.0.2.5 udp/4789\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("only from nodes (--node-cidr"), "{stdout}");
    let doc = json_of(&run("203.0.113.9", "47", &["-o", "json"]));
    assert_eq!(doc["verdict"], "denied");
    assert_eq!(
        doc["refused_by"],
        "builtin:host-ingress (encapsulation only from nodes)"
    );
    assert_eq!(doc["datapath_rule"], serde_json::Value::Null);

    // From a node prefix: the built-in for the cluster's tunnels.
    let doc = json_of(&run("192.0.2.9", "udp/8472", &["-o", "json"]));
    assert_eq!(doc["verdict"], "allowed", "{doc}");
    assert_eq!(doc["datapath_rule"], "builtin:node-encap");
    assert_eq!(doc["source"]["groups"], json!(["nodes", "world"]));
    assert_eq!(doc["refused_by"], serde_json::Value::Null);
    // Other ports of the node are not concerned.
    let doc = json_of(&run("203.0.113.9", "udp/53", &["-o", "json"]));
    assert_eq!(doc["datapath_rule"], "builtin:host-ingress");

    // `check` counts the refusing entries; a bad prefix names the flag.
    let out = agent(&[
        "check",
        d.arg(),
        "--host-addr",
        "192.0.2.5",
        "--node-cidr",
        "192.0.2.0/28",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("refusing: encapsulation only from nodes)"),
        "{stdout}"
    );
    let out = agent(&["check", d.arg(), "--node-cidr", "192.0.2.1/28"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--node-cidr") && stderr.contains("write that, or 192.0.2.1/32"),
        "{stderr}"
    );
}

/// Serves `/status` with `doc` to every connection until dropped.
struct FakeAgent {
    addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FakeAgent {
    fn serve(doc: &Status) -> FakeAgent {
        let body = serde_json::to_string(doc).unwrap();
        // The agent serves /status on its unix socket only.
        let dir = std::env::temp_dir().join(format!("netpol-fake-agent-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = path.display().to_string();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = stop.clone();
        std::thread::spawn(move || {
            // Bounded: the test ends well before this.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !done.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < deadline
            {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.ends_with(b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let response = if req.starts_with(b"GET /status ") {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        .into()
                };
                let _ = s.write_all(response.as_bytes());
            }
        });
        FakeAgent { addr, stop }
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn status_reads_the_agents_document() {
    let doc = Status {
        mode: "enforce".into(),
        ready: true,
        policy_generation: 4,
        reloads_succeeded: 3,
        reloads_failed: 1,
        last_reload_error: Some("p.yaml:5:13: rules[0].ports[0]: \"tcp:53\": write 53/tcp".into()),
        attached: vec![Attached {
            interface: "uplink0".into(),
            hook: "xdp-native".into(),
        }],
        kubernetes_synced: None,
        policy_fallback: false,
        policy_hash: "0123456789abcdef".into(),
    };
    let fake = FakeAgent::serve(&doc);
    let out = agent(&["status", "--socket", &fake.addr]);
    let (c, stdout, stderr) = code(&out);
    assert_eq!(c, Some(0), "{stdout}{stderr}");
    for line in [
        format!("agent:             {}", fake.addr),
        "mode:              enforce".into(),
        "ready:             yes".into(),
        "policy generation: 4".into(),
        "policy hash:       0123456789abcdef".into(),
        "reloads:           3 succeeded, 1 failed".into(),
        "last reload error: p.yaml:5:13: rules[0].ports[0]: \"tcp:53\": write 53/tcp".into(),
        "  uplink0    xdp-native  tcx".into(),
    ] {
        assert!(stdout.contains(&line), "{line:?} not in:\n{stdout}");
    }
    let expected = serde_json::to_value(&doc).unwrap();
    assert_eq!(
        json_of(&agent(&["status", "--socket", &fake.addr, "-o", "json"])),
        expected
    );
    assert_eq!(
        yaml_as_json(&agent(&["status", "--socket", &fake.addr, "-o", "yaml"])),
        expected
    );
    drop(fake);

    // No agent there: a runtime error that says where it looked.
    let free = std::env::temp_dir()
        .join(format!("netpol-no-agent-{}", std::process::id()))
        .join("agent.sock")
        .display()
        .to_string();
    let out = agent(&["status", "--socket", &free]);
    let (c, _, stderr) = code(&out);
    assert_eq!(c, Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("netpol-agent: error: connecting to {free} (is the agent running with --socket {free}, and are you root?)")),
        "{stderr}"
    );
}

#[test]
fn version_names_the_build_and_the_kernel() {
    let out = agent(&["version", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc = json_of(&out);
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    let rev = doc["git_revision"].as_str().unwrap();
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(repo())
        .output();
    match head {
        // Built from this checkout: the revision it was built at is an
        // ancestor of (or is) HEAD.
        Ok(h) if h.status.success() => {
            let ok = Command::new("git")
                .args(["merge-base", "--is-ancestor", rev, "HEAD"])
                .current_dir(repo())
                .status()
                .unwrap();
            assert!(ok.success(), "{rev} is not in this checkout's history");
        }
        _ => assert_eq!(rev, "unknown"),
    }
    assert!(
        doc["rustc"].as_str().unwrap().starts_with("rustc "),
        "{doc}"
    );
    // The object's hash, computed by sha256sum on the bytes the library embeds.
    let mut sum = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    sum.stdin
        .take()
        .unwrap()
        .write_all(netpol_agent::NETPOL_EBPF)
        .unwrap();
    let sum = sum.wait_with_output().unwrap();
    let expected = text(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(doc["ebpf_object"]["sha256"], expected);
    assert_eq!(doc["ebpf_object"]["bytes"], netpol_agent::NETPOL_EBPF.len());
    // The kernel as uname and /sys see it.
    let uname = Command::new("uname").arg("-r").output().unwrap();
    assert_eq!(doc["kernel"]["release"], text(&uname.stdout).trim());
    assert_eq!(
        doc["kernel"]["btf"],
        Path::new("/sys/kernel/btf/vmlinux").exists()
    );

    let table = agent(&["version"]);
    let t = text(&table.stdout);
    assert!(
        t.starts_with(&format!("netpol-agent {}\n", env!("CARGO_PKG_VERSION"))),
        "{t}"
    );
    assert!(t.contains(&format!("sha256:{expected}")), "{t}");
    assert_eq!(yaml_as_json(&agent(&["version", "-o", "yaml"])), doc);
    // The flags still answer as before.
    assert_eq!(
        text(&agent(&["-V"]).stdout),
        format!("netpol-agent {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn completion_scripts_load() {
    let out = agent(&["completion", "bash"]);
    assert_eq!(out.status.code(), Some(0));
    let script = text(&out.stdout);
    assert!(script.contains("complete -F _netpol__agent "), "{script}");
    // bash accepts it and, once sourced, completes the subcommands.
    let dir = Dir::new("completion");
    dir.write("netpol-agent.bash", &script);
    let probe = format!(
        "source {}/netpol-agent.bash && COMP_WORDS=(netpol-agent sta) && COMP_CWORD=1 && \
         _netpol__agent netpol-agent sta netpol-agent && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        dir.arg()
    );
    let out = Command::new("bash")
        .args(["-c", &probe])
        .output()
        .expect("bash");
    let (c, stdout, stderr) = code(&out);
    assert_eq!(c, Some(0), "{stdout}{stderr}");
    let words: Vec<&str> = stdout.lines().collect();
    assert_eq!(words, ["stats", "status"], "{stderr}");
    for shell in ["zsh", "fish"] {
        let out = agent(&["completion", shell]);
        assert_eq!(out.status.code(), Some(0));
        assert!(text(&out.stdout).contains("netpol-agent"), "{shell}");
    }
    let out = agent(&["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}
