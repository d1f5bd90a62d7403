//! On the real kernel: the DaemonSet's capabilities are enough, and each
//! is needed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netpol_tests::netns::unique_suffix;
use netpol_tests::Family::V4;
use netpol_tests::Proto::Tcp;
use netpol_tests::{
    agent_bin, check_all, ensure_bpffs, require_root, serve, Edge, Lab, Mode, READY_MARKER,
};

use crate::kustomize::{capabilities_added, flag, kustomization, the_container};
use crate::support::{arr, example_policy, read};

/// The agent started the way the DaemonSet's securityContext starts it: uid 0
/// holding only the given capabilities, no_new_privs, and (as a container
/// runtime does for `readOnlyRootFilesystem`) in a private mount namespace
/// where `/`, `/sys` and `/proc/sys` are read-only and only the bpffs mount
/// at /sys/fs/bpf and the DaemonSet's emptyDir (a fresh tmpfs, 0777 as the
/// kubelet makes it) are writable. Stopped and its pins removed on drop.
pub struct CappedAgent {
    pub child: Child,
    log: Arc<Mutex<Vec<String>>>,
    pub pin_path: PathBuf,
}

/// Remounts what a container sees read-only (its own mount namespace only:
/// a bind remount does not touch the submounts, so bpffs stays writable),
/// mounts the emptyDir at $1, then execs the rest of the command line:
/// nsenter, unshare, sh and setpriv all exec, so the child's pid is the
/// agent's.
const READ_ONLY_ROOT: &str = "set -e
mount -o remount,bind,ro /
mount -o remount,bind,ro /sys
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
mount -t tmpfs -o mode=0777,size=1m empty-dir \"$1\"
shift
exec \"$@\"";

/// Where the DaemonSet's agent has its socket: the `--socket` argument, and
/// the emptyDir mount it is created in.
pub struct SocketPlace {
    pub socket: String,
    pub empty_dir: String,
}

impl CappedAgent {
    pub fn spawn(lab: &Lab, caps: &[&str], place: &SocketPlace) -> CappedAgent {
        let set: String = std::iter::once("-all".to_owned())
            .chain(caps.iter().map(|c| format!("+{}", c.to_lowercase())))
            .collect::<Vec<_>>()
            .join(",");
        let pin_path =
            PathBuf::from("/sys/fs/bpf").join(format!("netpol-caps-{}", unique_suffix()));
        // The network namespace first: its path is under /run, which the
        // emptyDir then covers.
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", lab.node.path().display()))
            .args(["--", "unshare", "--mount", "--propagation", "private", "--"])
            .args(["sh", "-c", READ_ONLY_ROOT, "sh", &place.empty_dir])
            .args(["setpriv", "--no-new-privs"])
            .arg(format!("--inh-caps={set}"))
            .arg(format!("--bounding-set={set}"))
            .arg("--")
            .arg(agent_bin())
            .arg("run");
        for iface in &lab.node_ifaces {
            cmd.args(["--iface", iface]);
        }
        cmd.arg("--policy-dir")
            .arg(example_policy(false))
            .arg("--pin-path")
            .arg(&pin_path)
            .args(["--socket", &place.socket])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start nsenter/setpriv/netpol-agent");
        let log = Arc::new(Mutex::new(vec![format!("$ {cmd:?}")]));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        CappedAgent {
            child,
            log,
            pin_path,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Ok once the agent is enforcing, Err with its exit status if it exits
    /// first; panics after 20 s of neither.
    fn outcome(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.log().contains(READY_MARKER) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(200));
                return Err(format!("{status}"));
            }
            assert!(
                Instant::now() < deadline,
                "netpol-agent neither enforcing nor exited after 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether `target` is mounted read-only in the agent's mount namespace.
    fn read_only(&self, target: &str) -> bool {
        let info = read(Path::new(&format!("/proc/{}/mountinfo", self.child.id())));
        // Fields: id parent major:minor root mount-point options ...
        let opts = info
            .lines()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .rfind(|f| f.len() > 5 && f[4] == target)
            .unwrap_or_else(|| panic!("{target} is not a mount point of the agent"))[5]
            .to_owned();
        opts.split(',').any(|o| o == "ro")
    }

    /// The agent's effective capability mask, from /proc.
    fn effective_caps(&self) -> u64 {
        let status = read(Path::new(&format!("/proc/{}/status", self.child.id())));
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .expect("CapEff")
            .trim();
        u64::from_str_radix(hex, 16).expect("hex mask")
    }
}

impl Drop for CappedAgent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: signalling our own child, not yet reaped.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if self.pin_path.exists() {
            let _ = std::fs::remove_dir_all(&self.pin_path);
        }
    }
}

/// Measured, not assumed: with exactly the DaemonSet's capabilities (and a
/// read-only root file system) the agent attaches and enforces the
/// ConfigMap's policy; without any one of them it cannot start. CAP_SYS_ADMIN
/// is not among them: bpffs is mounted by the node, not the agent.
#[test]
fn daemonset_capabilities_are_sufficient_and_each_is_needed() {
    if !require_root() {
        return;
    }
    assert!(
        Path::new("/usr/bin/setpriv").exists(),
        "setpriv (util-linux) is needed"
    );
    let Some(k) = kustomization() else { return };
    let ds = k.resource("DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let container = the_container(pod, "DaemonSet");
    let added = capabilities_added(&container);
    let caps: Vec<&str> = added.iter().map(String::as_str).collect();
    let place = socket_place(pod, &container, &k.agent_args());
    assert!(!caps.contains(&"SYS_ADMIN"));
    ensure_bpffs();

    let lab = Lab::localplus();
    let edges = [
        Edge::allow("gateway", "ledger-a", V4, Tcp, 8080),
        Edge::deny("world", "ledger-a", V4, Tcp, 8080),
    ];
    let _servers = serve(&lab, &edges);
    {
        let mut agent = CappedAgent::spawn(&lab, &caps, &place);
        if let Err(status) = agent.outcome() {
            panic!(
                "with only {caps:?} the agent exited ({status}):\n{}",
                agent.log()
            );
        }
        // CAP_NET_ADMIN = 12, CAP_PERFMON = 38, CAP_BPF = 39.
        let bit = |c: &str| match c {
            "NET_ADMIN" => 1u64 << 12,
            "PERFMON" => 1 << 38,
            "BPF" => 1 << 39,
            other => panic!("unexpected capability {other}"),
        };
        let want: u64 = caps.iter().map(|c| bit(c)).sum();
        assert_eq!(
            agent.effective_caps(),
            want,
            "the agent ran with other capabilities than {caps:?}"
        );
        for (target, ro) in [
            ("/", true),
            ("/sys", true),
            ("/proc/sys", true),
            ("/sys/fs/bpf", false),
            (place.empty_dir.as_str(), false),
        ] {
            assert_eq!(
                agent.read_only(target),
                ro,
                "{target} read-only in the agent's view"
            );
        }
        let failures = check_all(&lab, &edges, Mode::Enforced);
        assert!(
            failures.is_empty(),
            "with only {caps:?}: {}\n--- agent log ---\n{}",
            failures.join("\n"),
            agent.log()
        );
    }
    for missing in &caps {
        let fewer: Vec<&str> = caps.iter().copied().filter(|c| c != missing).collect();
        let mut agent = CappedAgent::spawn(&lab, &fewer, &place);
        assert!(
            agent.outcome().is_err(),
            "the agent enforces without CAP_{missing}: drop it from the DaemonSet\n{}",
            agent.log()
        );
    }
}

/// The DaemonSet's `--socket` and the emptyDir volume its directory is
/// created in (the root file system being read-only).
pub fn socket_place(
    pod: &serde_json::Value,
    container: &serde_json::Value,
    args: &[String],
) -> SocketPlace {
    let socket = flag(args, "--socket")
        .expect("the DaemonSet passes --socket")
        .to_owned();
    let dir = Path::new(&socket)
        .parent()
        .expect("a socket in a directory");
    let empty_dirs: Vec<&str> = arr(&pod["volumes"], "volumes")
        .iter()
        .filter(|v| v["emptyDir"].is_object())
        .filter_map(|v| v["name"].as_str())
        .collect();
    let empty_dir = arr(&container["volumeMounts"], "volumeMounts")
        .iter()
        .filter(|m| m["name"].as_str().is_some_and(|n| empty_dirs.contains(&n)))
        .filter_map(|m| m["mountPath"].as_str())
        // Strictly above: the agent makes the directory itself, 0700.
        .find(|p| dir.starts_with(p) && dir != Path::new(p))
        .unwrap_or_else(|| panic!("no emptyDir mounted above {} for the socket", dir.display()))
        .to_owned();
    SocketPlace { socket, empty_dir }
}
