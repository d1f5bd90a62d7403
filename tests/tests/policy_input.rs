//! Policy files as hostile input, against the real binary: an alias bomb, a
//! nesting bomb, a FIFO, a symlink to a device, files and directories over
//! their size limits and a file name that is not UTF-8 each make `check` and
//! `run` exit 2 with an error naming the file (and line and column where
//! there is one), promptly and in bounded memory. Needs no privileges: `run`
//! refuses the policy before it touches the kernel.
//!
//! Every child runs under an address-space limit and a deadline, so that a
//! regression fails the test instead of taking the machine's memory.
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netpol_tests::agent_bin;

/// What a bounded child did.
#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    signal: Option<i32>,
    stderr: String,
    /// Peak resident memory, from the kernel's accounting of the child.
    peak_rss: u64,
    elapsed: Duration,
}

const ADDRESS_SPACE_LIMIT: u64 = 1 << 30;
const DEADLINE: Duration = Duration::from_secs(10);
/// What a refusal may cost at most: the bomb expanded would take gigabytes.
const PEAK_RSS_MAX: u64 = 64 << 20;

/// Runs `netpol-agent ARGS` with at most 1 GiB of address space, killed
/// after 10 s.
fn agent(args: &[&OsStr]) -> Outcome {
    let mut cmd = Command::new(agent_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child
    // before exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: ADDRESS_SPACE_LIMIT,
                rlim_max: ADDRESS_SPACE_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    // Reaped by wait4 below, which also gives its resource usage.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd.spawn().expect("start netpol-agent");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: our own child, reaped here (not through `child`).
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert_eq!(r, 0, "wait4: {}", std::io::Error::last_os_error());
        if started.elapsed() > DEADLINE {
            // SAFETY: our own child, not reaped yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = started.elapsed();
    Outcome {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        stderr: reader.join().unwrap(),
        peak_rss: usage.ru_maxrss as u64 * 1024,
        elapsed,
    }
}

fn os<'a>(args: &'a [&'a str]) -> Vec<&'a OsStr> {
    args.iter().map(OsStr::new).collect()
}

/// `check PATH ARGS`.
fn check(path: &Path, extra: &[&str]) -> Outcome {
    let mut args = vec![OsStr::new("check"), path.as_os_str()];
    args.extend(os(extra));
    agent(&args)
}

/// `run` on a policy directory: it must refuse the policy before it looks at
/// interfaces or the kernel.
fn run(dir: &Path, extra: &[&str]) -> Outcome {
    let mut args = os(&["run", "--iface", "no-such-iface0", "--policy-dir"]);
    args.push(dir.as_os_str());
    args.extend(os(&["--pin-path", "/nonexistent/netpol-input-test"]));
    args.extend(os(&["--state-dir", "/nonexistent/netpol-state"]));
    args.extend(os(extra));
    agent(&args)
}

/// An invalid input: exit 2, promptly, in bounded memory, with `want` among
/// the error lines.
fn assert_refused(what: &str, o: &Outcome, want: &str) {
    assert_eq!(o.code, Some(2), "{what}: {o:#?}");
    assert!(
        o.stderr.contains(want),
        "{what}: no {want:?} in:\n{}",
        o.stderr
    );
    assert!(
        o.elapsed < Duration::from_secs(5),
        "{what}: took {:?}",
        o.elapsed
    );
    assert!(
        o.peak_rss < PEAK_RSS_MAX,
        "{what}: peak RSS {} MiB",
        o.peak_rss >> 20
    );
    println!(
        "{what}: exit 2 in {:?}, peak RSS {} KiB",
        o.elapsed,
        o.peak_rss >> 10
    );
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        let d = std::env::temp_dir().join(format!(
            "netpol-input-{label}-{}",
            netpol_tests::netns::unique_suffix()
        ));
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }

    fn write(&self, name: &str, text: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// 342 bytes; 9^9 strings once expanded.
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

const GOOD: &str = "groups:\n  web: [10.0.0.0/8]\nrules:\n  - name: r\n    within: [web]\n";

#[test]
fn an_alias_bomb_is_refused_in_bounded_memory_and_time() {
    let d = TempDir::new("bomb");
    let bomb = d.write("bomb.yaml", ALIAS_BOMB.as_bytes());
    let want = format!(
        "{}:5:4: invalid YAML: anchors and aliases expand to more than 100000 nodes",
        bomb.display()
    );
    assert_refused("check FILE", &check(&bomb, &[]), &want);
    assert_refused("check DIR", &check(&d.0, &[]), &want);
    assert_refused("run", &run(&d.0, &[]), &want);
    // The same bomb among Kubernetes objects.
    let objects = TempDir::new("bomb-objects");
    let netpol = objects.write("netpol.yaml", ALIAS_BOMB.as_bytes());
    let policy = TempDir::new("bomb-policy");
    policy.write("a.yaml", GOOD.as_bytes());
    let objects_dir = objects.0.to_str().unwrap();
    let want = format!("{}:5:4: invalid YAML", netpol.display());
    assert_refused(
        "check --kube-objects",
        &check(&policy.0, &["--kube-objects", objects_dir]),
        &want,
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let d = TempDir::new("deep");
    let text = format!("rules:\n{}x\n", "- ".repeat(300_000));
    let deep = d.write("deep.yaml", text.as_bytes());
    let o = check(&deep, &[]);
    assert_eq!(o.signal, None, "killed by a signal: {o:#?}");
    assert_refused(
        "600 KB of nested sequences",
        &o,
        &format!(
            "{}:2:255: invalid YAML: nested deeper than 128 levels",
            deep.display()
        ),
    );
}

#[test]
fn a_fifo_and_a_device_are_refused_by_name_without_blocking() {
    let d = TempDir::new("special");
    d.write("a.yaml", GOOD.as_bytes());
    let fifo = d.0.join("fifo.yaml");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let zero = d.0.join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let o = run(&d.0, &[]);
    assert_refused(
        "run, FIFO",
        &o,
        &format!("{}: is a FIFO, not a regular file", fifo.display()),
    );
    assert_refused(
        "run, /dev/zero",
        &o,
        &format!(
            "{}: is a character device, not a regular file",
            zero.display()
        ),
    );
    assert_refused(
        "check FIFO",
        &check(&fifo, &[]),
        &format!("{}: is a FIFO", fifo.display()),
    );
}

#[test]
fn files_over_the_size_limits_are_refused_and_the_limits_are_flags() {
    let d = TempDir::new("size");
    d.write("a.yaml", GOOD.as_bytes());
    // Comments: valid YAML of any size.
    let mut big = b"# padding\n".repeat((1 << 20) / 10 + 1);
    big.extend_from_slice(
        GOOD.replace("web", "big")
            .replace("name: r", "name: s")
            .as_bytes(),
    );
    let big = d.write("big.yaml", &big);
    let size = std::fs::metadata(&big).unwrap().len();
    assert_refused(
        "a file over the default 1 MiB",
        &run(&d.0, &[]),
        &format!(
            "{}: {size} bytes or more, over the limit of 1048576 bytes per file (--file-size-max)",
            big.display()
        ),
    );
    let ok = run(&d.0, &["--file-size-max", "2MiB"]);
    assert_eq!(ok.code, Some(1), "past the policy checks: {ok:#?}");
    assert!(ok.stderr.contains("no interface matches"), "{}", ok.stderr);
    assert_refused(
        "the directory over --dir-size-max",
        &check(&d.0, &["--file-size-max", "2MiB", "--dir-size-max", "1MiB"]),
        &format!(
            "{}: the directory's files add up to more than 1048576 bytes (--dir-size-max)",
            big.display()
        ),
    );
    let bad = check(&d.0, &["--file-size-max", "1MB"]);
    assert_eq!(bad.code, Some(2), "{bad:#?}");
    assert!(bad.stderr.contains("KiB, MiB or GiB"), "{}", bad.stderr);
}

#[test]
fn a_file_name_that_is_not_utf8_is_refused() {
    let d = TempDir::new("name");
    d.write("a.yaml", GOOD.as_bytes());
    std::fs::write(d.0.join(OsStr::from_bytes(b"caf\xe9.yaml")), GOOD).unwrap();
    assert_refused(
        "check",
        &check(&d.0, &[]),
        &format!(
            "{}: file name is not UTF-8: rename the file",
            d.0.join("caf\\xe9.yaml").display()
        ),
    );
}
