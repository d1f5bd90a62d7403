//! The container image, built from the repository's Dockerfile and run in a
//! real container runtime (podman, rootful, runc) against a lab: the
//! DaemonSet's security context (only CAP_BPF, CAP_NET_ADMIN and
//! CAP_PERFMON, read-only root file system, no new privileges, uid 0), the
//! node's bpffs and the policy mounted, the lab's node namespace as its
//! network (never the machine's own: the DaemonSet's hostNetwork is the
//! node's namespace, and here the lab's node namespace plays the node).
//!
//! No base image can be pulled on the machines this runs on, so the
//! Dockerfile's builder stage (a Debian 12 toolchain and a release build) is
//! replaced through its ROOTFS argument by an image holding the same
//! /out/rootfs, laid out by the same deploy/image/rootfs.sh from the agent
//! binary built here; the runtime stage (FROM scratch) is the Dockerfile's
//! own.
//!
//! Needs root and podman (`cargo xtask setup` installs it). Without podman
//! it skips with a notice, except under CI=true, where it fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netpol_tests::netns::unique_suffix;
use netpol_tests::observe::http_get;
use netpol_tests::Family::V4;
use netpol_tests::Proto::{Tcp, Udp};
use netpol_tests::{
    agent_bin, check_all, ensure_bpffs, require_root, serve, Edge, Lab, Mode, READY_MARKER,
};

const PODMAN: &str = "/usr/bin/podman";
/// The seccomp profile podman applies by default (Debian's
/// golang-github-containers-common).
const SECCOMP_DEFAULT: &str = "/usr/share/containers/seccomp.json";

/// podman's settings for this sandbox: runc and cgroupfs (no systemd), no
/// default ulimits (raising them is refused here), events to a file.
/// Passed through CONTAINERS_CONF, so the machine's own configuration is
/// never changed.
const CONTAINERS_CONF: &str = "[containers]
default_ulimits = []
[engine]
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"
";

/// The DaemonSet's container security context as podman flags. The test
/// below checks deploy/base/daemonset.yaml still says the same.
const SECURITY: &[&str] = &[
    "--user=0:0",
    "--cap-drop=all",
    "--cap-add=CAP_BPF,CAP_NET_ADMIN,CAP_PERFMON",
    "--security-opt=no-new-privileges",
    // readOnlyRootFilesystem: true, and no tmpfs podman would add on its own.
    "--read-only",
    "--read-only-tmpfs=false",
    // The DaemonSet's emptyDir (medium: Memory, 1Mi) at /run.
    "--tmpfs=/run:rw,mode=0755,size=1m",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

/// The example policy written by address ranges, which the lab's addresses
/// match without Kubernetes objects (examples/localplus* whose groups name
/// no namespace).
fn cidr_policy() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/")
        .map(|e| e.unwrap().path())
        .filter(|d| {
            d.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("localplus"))
                && std::fs::read_to_string(d.join("groups.yaml"))
                    .is_ok_and(|g| !g.contains("namespace:"))
        })
        .collect();
    assert_eq!(dirs.len(), 1, "one address-range example policy: {dirs:?}");
    dirs.remove(0)
}

/// Everything the test made in podman and bpffs, removed on drop (also when
/// the test panics): the container, the two images, the pins.
struct Runtime {
    dir: PathBuf,
    image: String,
    rootfs_image: String,
    container: String,
    pin_path: PathBuf,
}

impl Runtime {
    fn new() -> Runtime {
        let id = unique_suffix();
        let dir = std::env::temp_dir().join(format!("netpol-container-{id}"));
        std::fs::create_dir_all(dir.join("context")).unwrap();
        std::fs::write(dir.join("containers.conf"), CONTAINERS_CONF).unwrap();
        Runtime {
            image: format!("localhost/netpol-agent:test-{id}"),
            rootfs_image: format!("localhost/netpol-agent-rootfs:test-{id}"),
            container: format!("netpol-agent-test-{id}"),
            pin_path: PathBuf::from("/sys/fs/bpf").join(format!("netpol-container-{id}")),
            dir,
        }
    }

    /// podman's own default seccomp profile with bpf() allowed to holders of
    /// CAP_BPF and perf_event_open() to holders of CAP_PERFMON, as the
    /// RuntimeDefault profiles of containerd and Docker allow them: Debian
    /// 12's podman predates those rules and allows both only with
    /// CAP_SYS_ADMIN, which the DaemonSet does not grant. Everything else is
    /// podman's default, so the container is as confined as under
    /// RuntimeDefault on a cluster.
    fn seccomp_profile(&self) -> PathBuf {
        let path = self.dir.join("seccomp.json");
        if path.exists() {
            return path;
        }
        let default = std::fs::read_to_string(SECCOMP_DEFAULT)
            .unwrap_or_else(|e| panic!("{SECCOMP_DEFAULT}: {e}"));
        let mut profile: serde_json::Value =
            serde_json::from_str(&default).expect("podman's seccomp profile is JSON");
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        let syscalls = profile["syscalls"]
            .as_array_mut()
            .expect("syscalls in the seccomp profile");
        let mut denied_unless_sys_admin = false;
        for rule in syscalls.iter_mut() {
            // The rule denying them unless CAP_SYS_ADMIN: without them, the
            // profile's default action (deny) applies to whoever lacks the
            // capability added below.
            if rule["action"] == "SCMP_ACT_ERRNO" {
                if let Some(names) = rule["names"].as_array_mut() {
                    let before = names.len();
                    names.retain(|n| n != "bpf" && n != "perf_event_open");
                    denied_unless_sys_admin |= names.len() != before;
                }
            }
        }
        assert!(
            denied_unless_sys_admin,
            "{SECCOMP_DEFAULT} changed: it no longer denies bpf() without CAP_SYS_ADMIN"
        );
        for (syscall, cap) in [("bpf", "CAP_BPF"), ("perf_event_open", "CAP_PERFMON")] {
            syscalls.push(serde_json::json!({
                "names": [syscall],
                "action": "SCMP_ACT_ALLOW",
                "includes": {"caps": [cap]},
            }));
        }
        std::fs::write(&path, profile.to_string()).unwrap();
        path
    }

    fn podman(&self) -> Command {
        let mut c = Command::new(PODMAN);
        c.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str], what: &str) -> Output {
        let out = self
            .podman()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run podman for {what}: {e}"));
        assert!(
            out.status.success(),
            "{what}: podman {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The image from the Dockerfile, its builder replaced by the locally
    /// built agent laid out by deploy/image/rootfs.sh.
    fn build(&self) {
        let stage = self.dir.join("stage");
        let rootfs = stage.join("out/rootfs");
        let out = Command::new("sh")
            .arg(repo().join("deploy/image/rootfs.sh"))
            .arg(agent_bin())
            .arg(&rootfs)
            .output()
            .expect("run rootfs.sh");
        assert!(
            out.status.success(),
            "rootfs.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tar = self.dir.join("rootfs.tar");
        let out = Command::new("tar")
            .arg("-C")
            .arg(&stage)
            .arg("-cf")
            .arg(&tar)
            .arg("out")
            .output()
            .expect("run tar");
        assert!(out.status.success(), "tar: {out:?}");
        self.run(
            &["import", tar.to_str().unwrap(), &self.rootfs_image],
            "importing the root file system",
        );
        let dockerfile = repo().join("Dockerfile");
        let started = Instant::now();
        self.run(
            &[
                "build",
                "--pull=never",
                "-f",
                dockerfile.to_str().unwrap(),
                "--target",
                "runtime",
                "--build-arg",
                &format!("ROOTFS={}", self.rootfs_image),
                "-t",
                &self.image,
                self.dir.join("context").to_str().unwrap(),
            ],
            "podman build",
        );
        eprintln!(
            "built {} from the Dockerfile in {:.1?}",
            self.image,
            started.elapsed()
        );
    }

    /// The regular files of the image's root file system, as staged.
    fn files(&self) -> Vec<String> {
        let root = self.dir.join("stage/out/rootfs");
        let mut out = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else {
                    out.push(
                        p.strip_prefix(&root)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
            }
        }
        out.sort();
        out
    }

    /// `podman run` of the image with the DaemonSet's security context in
    /// the lab's node namespace, with the node's bpffs and the policy.
    fn command(&self, lab: &Lab, name: Option<&str>, args: &[String]) -> Command {
        let mut c = self.podman();
        c.args(["run", "--rm", "--pull=never"]);
        if let Some(name) = name {
            c.arg(format!("--name={name}"));
        }
        c.arg(format!("--network=ns:{}", lab.node.path().display()))
            .args(SECURITY)
            .arg(format!(
                "--security-opt=seccomp={}",
                self.seccomp_profile().display()
            ))
            // hostPath /sys/fs/bpf with mountPropagation: HostToContainer.
            .arg("--volume=/sys/fs/bpf:/sys/fs/bpf:rw,rslave")
            .arg(format!(
                "--volume={}:/etc/netpol-agent/policy:ro",
                cidr_policy().display()
            ))
            .arg(&self.image)
            .args(args);
        c
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self
            .podman()
            .args(["rm", "--force", "--time=2", &self.container])
            .output();
        if self.pin_path.exists() {
            // The container's uninstall did not run or failed: the host
            // binary removes what the test pinned.
            let _ = Command::new(agent_bin())
                .arg("uninstall")
                .arg("--pin-path")
                .arg(&self.pin_path)
                .output();
        }
        let _ = self
            .podman()
            .args(["rmi", "--force", &self.image, &self.rootfs_image])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The agent's container, its output collected as it comes.
struct Running {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start podman run");
        let log = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        Running { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(READY_MARKER) {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(300));
                panic!(
                    "the container exited ({status}) before enforcing:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the container is not enforcing after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the container did not exit within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn podman_present() -> bool {
    if Path::new(PODMAN).exists() {
        return true;
    }
    let msg = format!("{PODMAN} is missing: run `cargo xtask setup` as root");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg} (CI=true, so this fails instead of skipping)");
    }
    eprintln!("skipping the container test: {msg}");
    false
}

/// The flags above are the DaemonSet's security context: a change there
/// must be made here too.
#[test]
fn the_podman_flags_are_the_daemonsets_security_context() {
    let ds = std::fs::read_to_string(repo().join("deploy/base/daemonset.yaml")).unwrap();
    for line in [
        "runAsUser: 0",
        "privileged: false",
        "allowPrivilegeEscalation: false",
        "readOnlyRootFilesystem: true",
        "drop: [ALL]",
        "add: [BPF, NET_ADMIN, PERFMON]",
        "hostNetwork: true",
        "path: /sys/fs/bpf",
        "mountPropagation: HostToContainer",
        "mountPath: /etc/netpol-agent/policy",
        "mountPath: /run",
        "medium: Memory",
    ] {
        assert!(
            ds.contains(line),
            "deploy/base/daemonset.yaml no longer says {line:?}"
        );
    }
}

#[test]
fn the_image_enforces_survives_sigterm_and_uninstalls() {
    if !require_root() || !podman_present() {
        return;
    }
    ensure_bpffs();
    let rt = Runtime::new();
    rt.build();

    // The image is what the Dockerfile says: the agent as entrypoint, uid 0,
    // and no shell to exploit.
    let out = rt.run(
        &[
            "image",
            "inspect",
            "--format",
            "{{json .Config.Entrypoint}} {{.Config.User}}",
            &rt.image,
        ],
        "inspecting the image",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[\"/usr/local/bin/netpol-agent\"] 0:0"
    );
    // Nothing beside the agent, its libraries and root's passwd entry.
    for file in rt.files() {
        let name = file.rsplit('/').next().unwrap();
        assert!(
            file == "usr/local/bin/netpol-agent"
                || file == "etc/passwd"
                || file == "etc/group"
                || name.starts_with("lib") && name.contains(".so")
                || name.starts_with("ld-linux"),
            "the image holds {file}"
        );
    }
    let lab = Lab::localplus();

    let edges = [
        Edge::allow("gateway", "ledger-a", V4, Tcp, 8080),
        Edge::deny("world", "ledger-a", V4, Tcp, 8080),
        Edge::allow("ledger-a", "coredns", V4, Udp, 53),
        Edge::deny("ledger-a", "wallet", V4, Tcp, 8080),
    ];
    let _servers = serve(&lab, &edges);
    let failures = check_all(&lab, &edges, Mode::Open);
    assert!(
        failures.is_empty(),
        "the lab without an agent: {failures:?}"
    );

    let mut args: Vec<String> = vec!["run".into()];
    for iface in &lab.node_ifaces {
        args.push(format!("--iface={iface}"));
    }
    args.extend([
        "--policy-dir=/etc/netpol-agent/policy".to_owned(),
        format!("--pin-path={}", rt.pin_path.display()),
        "--listen=0.0.0.0:9986".into(),
        "--socket=/run/netpol-agent/agent.sock".into(),
        "--mode=enforce".into(),
    ]);
    let started = Instant::now();
    let mut agent = Running::spawn(rt.command(&lab, Some(&rt.container), &args));
    agent.wait_ready(Duration::from_secs(60));
    eprintln!("the container enforces after {:.1?}", started.elapsed());

    let failures = check_all(&lab, &edges, Mode::Enforced);
    assert!(
        failures.is_empty(),
        "in the container: {}\n--- container log ---\n{}",
        failures.join("\n"),
        agent.log()
    );
    let (status, body) = http_get(&lab.node, "/healthz");
    assert_eq!(status, 200, "/healthz: {body}");
    let (status, _) = http_get(&lab.node, "/readyz");
    assert_eq!(status, 200, "/readyz");
    eprintln!("allowed and denied edges hold; /healthz and /readyz answer 200");

    // SIGTERM, as the kubelet sends it: the process exits, the enforcement
    // stays pinned.
    rt.run(
        &["kill", "--signal", "TERM", &rt.container],
        "podman kill --signal TERM",
    );
    let status = agent.wait_exit(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit on SIGTERM: {status}\n{}",
        agent.log()
    );
    assert!(rt.pin_path.exists(), "the pins went with the container");
    let failures = check_all(&lab, &edges, Mode::Enforced);
    assert!(
        failures.is_empty(),
        "after SIGTERM: {}\n--- container log ---\n{}",
        failures.join("\n"),
        agent.log()
    );
    eprintln!("after SIGTERM ({status}): edges still enforced, pins kept");

    // Uninstall from the image, with the same security context.
    let out = rt
        .command(
            &lab,
            None,
            &[
                "uninstall".into(),
                format!("--pin-path={}", rt.pin_path.display()),
            ],
        )
        .output()
        .expect("podman run uninstall");
    assert!(
        out.status.success(),
        "uninstall in the container: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("uninstall: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!rt.pin_path.exists(), "pins left after uninstall");
    let failures = check_all(&lab, &edges, Mode::Open);
    assert!(failures.is_empty(), "after uninstall: {failures:?}");
    eprintln!("after uninstall: every edge open again");
}
