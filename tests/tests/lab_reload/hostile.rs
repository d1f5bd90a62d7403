//! `hostile_files_are_rejected_and_the_agent_stays_responsive`: a FIFO, a
//! symlink to /dev/zero, an alias bomb, a nesting bomb, a file over the size
//! limit and a name that is not UTF-8, each dropped into the policy directory
//! of a running agent. Each reload is rejected naming the file, promptly; the
//! last good policy stays enforced; /healthz keeps answering (the agent runs
//! on one thread: a blocked reload would block it too); the agent's memory
//! stays bounded; and once the file is gone, reloads work again.

use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddrV4};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use netpol_tests::observe::http_get;
use netpol_tests::{
    require_root, tcp_exchange, AgentProcess, Lab, ALLOWED_TIMEOUT, DENIED_TIMEOUT,
};

use crate::agent::{latest_generation, reload, Outcome};
use crate::policies::{variant_a, PolicyDir};
use crate::sockets::Echo;

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"));
    kib * 1024
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

const ALIAS_BOMB: &str = r#"a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"#;

/// One hostile file: how to put it in the directory, its name, and what the
/// rejection must say about it.
struct Case {
    what: &'static str,
    name: &'static [u8],
    make: fn(&Path),
    says: &'static str,
}

const CASES: &[Case] = &[
    // First: the old reader blocked on it for good.
    Case {
        what: "a FIFO",
        name: b"zz.yaml",
        make: mkfifo,
        says: "zz.yaml: is a FIFO, not a regular file",
    },
    Case {
        what: "a symlink to /dev/zero",
        name: b"zz.yaml",
        make: |p| std::os::unix::fs::symlink("/dev/zero", p).unwrap(),
        says: "zz.yaml: is a character device, not a regular file",
    },
    Case {
        what: "an alias bomb",
        name: b"zz.yaml",
        make: |p| std::fs::write(p, ALIAS_BOMB).unwrap(),
        says: "zz.yaml:5:4: invalid YAML: anchors and aliases expand",
    },
    Case {
        what: "a nesting bomb",
        name: b"zz.yaml",
        make: |p| std::fs::write(p, format!("rules:\n{}x\n", "- ".repeat(300_000))).unwrap(),
        says: "zz.yaml:2:255: invalid YAML: nested deeper than 128 levels",
    },
    Case {
        what: "a 2 MiB file",
        name: b"zz.yaml",
        make: |p| std::fs::write(p, b"# padding\n".repeat(200_000)).unwrap(),
        says: "zz.yaml: 2000000 bytes or more, over the limit of 1048576 bytes per file",
    },
    Case {
        what: "a name that is not UTF-8",
        name: b"z\xe9.yaml",
        make: |p| std::fs::write(p, "rules: []\n").unwrap(),
        says: "z\\xe9.yaml: file name is not UTF-8",
    },
];

#[test]
fn hostile_files_are_rejected_and_the_agent_stays_responsive() {
    if !require_root() {
        return;
    }
    let a = variant_a();
    let dir = PolicyDir::new("hostile");
    dir.install(&a.files);

    let lab = Lab::localplus();
    let (gateway, ledger, world) = (lab.ep("gateway"), lab.ep("ledger-a"), lab.ep("world"));
    let ledger_http = SocketAddrV4::new(ledger.v4, 8080);
    let _ledger_srv = Echo::spawn(&ledger.ns, ledger_http.into(), None);

    let mut agent = AgentProcess::spawn(&lab, &dir.path, &[]);
    let gen0 = latest_generation(&agent.log());
    let rss_before = peak_rss(agent.pid());

    for case in CASES {
        let path = dir.path.join(OsStr::from_bytes(case.name));
        (case.make)(&path);
        let outcome = reload(&mut agent);
        let text = match &outcome {
            Ok((Outcome::Refused(text), t)) if *t < Duration::from_secs(2) => text.clone(),
            other => panic!(
                "{}: expected a prompt \"reload rejected\", got {other:?}\n--- agent log ---\n{}",
                case.what,
                agent.log()
            ),
        };
        assert!(
            text.contains("reload rejected") && text.contains(case.says),
            "{}: the rejection should say {:?}:\n{text}",
            case.what,
            case.says
        );
        let started = Instant::now();
        let (status, body) = http_get(&lab.node, "/healthz");
        assert_eq!(status, 200, "{}: /healthz: {body}", case.what);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{}: /healthz took {:?}",
            case.what,
            started.elapsed()
        );
        assert!(agent.is_running(), "{}: the agent exited", case.what);
        assert_eq!(
            latest_generation(&agent.log()),
            gen0,
            "{}: a rejected reload changed the generation",
            case.what
        );
        // The last good policy is still what is enforced.
        let from = |ep: &netpol_tests::Endpoint, timeout| {
            tcp_exchange(&ep.ns, IpAddr::V4(ep.v4), ledger_http.into(), timeout)
        };
        assert!(
            from(gateway, ALLOWED_TIMEOUT).is_ok(),
            "{}: gateway -> ledger-a 8080/tcp stopped",
            case.what
        );
        assert!(
            matches!(from(world, DENIED_TIMEOUT), Err(e) if e.is_timeout()),
            "{}: world -> ledger-a 8080/tcp got through",
            case.what
        );
        std::fs::remove_file(&path).unwrap();
    }
    let grown = peak_rss(agent.pid()).saturating_sub(rss_before);
    assert!(
        grown < 64 << 20,
        "the agent's peak RSS grew by {} MiB over the hostile reloads",
        grown >> 20
    );
    match reload(&mut agent) {
        Ok((Outcome::Enforced(g), _)) if g > gen0 => {}
        other => panic!(
            "with the hostile files gone, expected a new generation, got {other:?}\n{}",
            agent.log()
        ),
    }
    println!(
        "hostile_files: {} cases rejected, generation {gen0} kept, peak RSS grew by {} KiB",
        CASES.len(),
        grown >> 10
    );
}
