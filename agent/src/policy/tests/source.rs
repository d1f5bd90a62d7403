//! Policy and object directories as hostile input: what is never read, what
//! is read only up to a bound, and ConfigMap generations read whole.
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::policy::*;

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("netpol-source-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> &Self {
        fs::write(self.0.join(name), text).unwrap();
        self
    }

    fn show(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const GOOD: &str = "groups:\n  web: [10.0.0.0/8]\nrules:\n  - name: r\n    within: [web]\n";

/// Runs `f` on another thread and fails the test if it takes more than 5 s:
/// a read that blocks must show up as a failure, not as a hung test run.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("{what} did not return within 5 s"))
}

fn load_err(dir: &Path, limits: ReadLimits) -> String {
    let dir = dir.to_owned();
    match bounded("load_dir", move || load_dir(&dir, &limits)) {
        Ok(p) => panic!("loaded: {p:?}"),
        Err(e) => e.to_string(),
    }
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

#[test]
fn a_fifo_is_refused_by_name_without_blocking() {
    let d = TempDir::new();
    d.write("a.yaml", GOOD);
    mkfifo(&d.0.join("b.yaml"));
    assert_eq!(
        load_err(&d.0, ReadLimits::default()),
        format!(
            "{}: is a FIFO, not a regular file: only regular files are read",
            d.show("b.yaml")
        )
    );
    // A single file too (`check FILE`).
    let fifo = d.0.join("b.yaml");
    let e = bounded("read_file", move || {
        read_file(&fifo, &ReadLimits::default()).unwrap_err()
    });
    assert!(e.to_string().contains("is a FIFO"), "{e}");
}

#[test]
fn a_symlink_to_a_device_is_refused_by_name() {
    let d = TempDir::new();
    d.write("a.yaml", GOOD);
    symlink("/dev/zero", d.0.join("zero.yaml")).unwrap();
    symlink("/nonexistent/netpol.yaml", d.0.join("dangling.yaml")).unwrap();
    let e = load_err(&d.0, ReadLimits::default());
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 2, "{e}");
    assert!(
        lines[0].starts_with(&format!("{}: cannot read:", d.show("dangling.yaml"))),
        "{e}"
    );
    assert_eq!(
        lines[1],
        format!(
            "{}: is a character device, not a regular file: only regular files are read",
            d.show("zero.yaml")
        )
    );
}

#[test]
fn files_and_directories_over_their_limits_are_refused() {
    let limits = ReadLimits {
        file_size_max: 100,
        dir_size_max: 150,
    };
    let d = TempDir::new();
    d.write("a.yaml", GOOD).write("b.yaml", &"#".repeat(101));
    assert_eq!(
        load_err(&d.0, limits),
        format!(
            "{}: 101 bytes or more, over the limit of 100 bytes per file (--file-size-max)",
            d.show("b.yaml")
        )
    );
    // Each file fits, together they do not; the files after the one that
    // crossed the limit are not read.
    d.write("b.yaml", &"#".repeat(100)).write("c.yaml", "#\n");
    assert_eq!(
        load_err(&d.0, limits),
        format!(
            "{}: the directory's files add up to more than 150 bytes (--dir-size-max)",
            d.show("b.yaml")
        )
    );
    // Files whose size fstat does not tell (procfs says 0) are bounded by
    // the read itself.
    let e = read_file(Path::new("/proc/self/maps"), &limits).unwrap_err();
    assert!(e.to_string().contains("over the limit of 100 bytes"), "{e}");
    // The defaults.
    assert_eq!(
        ReadLimits::default(),
        ReadLimits {
            file_size_max: 1 << 20,
            dir_size_max: 16 << 20
        }
    );
}

#[test]
fn a_file_name_that_is_not_utf8_is_an_error() {
    let d = TempDir::new();
    d.write("a.yaml", GOOD);
    fs::write(d.0.join(OsStr::from_bytes(b"caf\xe9.yaml")), GOOD).unwrap();
    // Not a policy file by its extension: skipped as any other.
    fs::write(d.0.join(OsStr::from_bytes(b"notes\xe9.txt")), "x").unwrap();
    assert_eq!(
        load_err(&d.0, ReadLimits::default()),
        format!(
            "{}: file name is not UTF-8: rename the file",
            d.show("caf\\xe9.yaml")
        )
    );
}

#[test]
fn text_that_is_not_utf8_is_an_error_with_its_position() {
    let d = TempDir::new();
    fs::write(
        d.0.join("a.yaml"),
        b"groups:\n  web: [10.0.0.0/8] # caf\xe9\n",
    )
    .unwrap();
    assert_eq!(
        load_err(&d.0, ReadLimits::default()),
        format!("{}:2:26: not UTF-8 text (byte 0xe9)", d.show("a.yaml"))
    );
}

/// A ConfigMap volume as the kubelet leaves it for a moment during an
/// update: `..data` already points to the new generation, which dropped
/// `b.yaml` and added `c.yaml`; the visible symlinks are not updated yet.
#[test]
fn a_configmap_is_read_from_the_generation_data_points_to() {
    let d = TempDir::new();
    for (gen, files) in [
        (
            "..2024_01_01_00_00_00.1",
            &[("a.yaml", GOOD), ("b.yaml", "rules: [\n")][..],
        ),
        (
            "..2024_01_01_00_01_00.2",
            &[
                ("a.yaml", GOOD),
                ("c.yaml", "settings:\n  enforce-host: true\n"),
            ][..],
        ),
    ] {
        fs::create_dir(d.0.join(gen)).unwrap();
        for (name, text) in files {
            fs::write(d.0.join(gen).join(name), text).unwrap();
        }
    }
    symlink("..2024_01_01_00_01_00.2", d.0.join("..data")).unwrap();
    symlink("..data/a.yaml", d.0.join("a.yaml")).unwrap();
    symlink("..data/b.yaml", d.0.join("b.yaml")).unwrap();
    d.write("local.yaml", "rules:\n  - name: local\n    within: [web]\n");

    let files: Vec<String> = policy_files(&d.0)
        .unwrap()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(
        files,
        [d.show("a.yaml"), d.show("c.yaml"), d.show("local.yaml")]
    );
    let p = load_dir(&d.0, &ReadLimits::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(p.enforce_host, "c.yaml of the new generation was read");
    let names: Vec<&str> = p.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["r", "local"]);
    // Errors name the file as the user sees it, not its generation.
    fs::write(d.0.join("..2024_01_01_00_01_00.2/a.yaml"), "groups: [\n").unwrap();
    let e = load_dir(&d.0, &ReadLimits::default()).unwrap_err();
    assert_eq!(e.first().file, d.show("a.yaml"), "{e}");

    fs::remove_file(d.0.join("..data")).unwrap();
    symlink("/etc", d.0.join("..data")).unwrap();
    let e = load_dir(&d.0, &ReadLimits::default()).unwrap_err();
    assert!(
        e.to_string().contains("not to a directory beside it"),
        "{e}"
    );
}

/// Two generations whose files only make sense together: a reload that read
/// one file of each would name a group the other file does not define.
#[test]
fn a_reload_never_mixes_two_configmap_generations() {
    let d = Arc::new(TempDir::new());
    for (gen, group) in [("..g1", "one"), ("..g2", "two")] {
        fs::create_dir(d.0.join(gen)).unwrap();
        fs::write(
            d.0.join(gen).join("a.yaml"),
            format!("groups:\n  {group}: [10.0.0.0/8]\n"),
        )
        .unwrap();
        fs::write(
            d.0.join(gen).join("b.yaml"),
            format!("rules:\n  - name: r\n    within: [{group}]\n"),
        )
        .unwrap();
    }
    symlink("..g1", d.0.join("..data")).unwrap();
    symlink("..data/a.yaml", d.0.join("a.yaml")).unwrap();
    symlink("..data/b.yaml", d.0.join("b.yaml")).unwrap();

    // The kubelet's swap: a new symlink renamed over `..data`.
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (d, stop) = (d.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let tmp = d.0.join("..data_tmp");
                symlink(if n.is_multiple_of(2) { "..g1" } else { "..g2" }, &tmp).unwrap();
                fs::rename(&tmp, d.0.join("..data")).unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
            n
        })
    };
    let (mut good, mut changed, mut mixed) = (0, 0, Vec::new());
    for _ in 0..3000 {
        match load_dir(&d.0, &ReadLimits::default()) {
            Ok(_) => good += 1,
            Err(e) if e.to_string().contains("changed 3 times while it was read") => changed += 1,
            Err(e) => mixed.push(e.to_string()),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(
        mixed.is_empty(),
        "{} of 3000 reads mixed two generations ({swaps} swaps), e.g.:\n{}",
        mixed.len(),
        mixed[0]
    );
    assert!(
        good > 0,
        "no read succeeded ({changed} gave up, {swaps} swaps)"
    );
}
