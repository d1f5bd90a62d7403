//! A seeded mutational fuzzer for the agent's hostile inputs, on stable Rust
//! and offline (cargo-fuzz needs a nightly compiler and libFuzzer, neither of
//! which the toolchain here has): policy files, Kubernetes object files, and
//! frames through the datapath's parser (`packets`).
//!
//! Each target takes bytes and returns `Err` for a finding. The driver
//! mutates a corpus (the repository's example policies and objects, and
//! crafted seeds), runs each input under `catch_unwind`, a time limit and
//! (when the binary installs [`PeakAlloc`]) a memory limit, and writes every
//! finding to a directory, minimised, so it can become a regression file
//! under `tests/fuzz/regressions/<target>/`. The same seed gives the same
//! inputs, so a run is reproducible from its report line.
//!
//! The short run is the `fuzz` test target; long runs are `cargo xtask fuzz
//! --secs N [--target policy|objects|packets]` (the `netpol-fuzz` binary).
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod inputs;
pub mod packets;

pub use inputs::{check_objects, check_policy};

/// The fuzz targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Policy,
    Objects,
    Packets,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Policy, Target::Objects, Target::Packets];

    pub fn name(self) -> &'static str {
        match self {
            Target::Policy => "policy",
            Target::Objects => "objects",
            Target::Packets => "packets",
        }
    }

    pub fn parse(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// Largest input the mutator makes: the point is malformed structure, not
/// size (the size limits are tested on their own).
pub const INPUT_MAX: usize = 64 << 10;
/// One input's time limit. The parser is linear with bounded alias
/// expansion; a second on a 64 KiB input is a bug even in a debug build.
pub const TIME_LIMIT: Duration = Duration::from_secs(2);
/// One input's memory limit, over what was allocated before it.
pub const MEMORY_LIMIT: usize = 64 << 20;

/// Counts the bytes allocated now and the peak since the last reset. A
/// binary that wants the memory limit checked installs it:
/// `#[global_allocator] static A: PeakAlloc = PeakAlloc;`
pub struct PeakAlloc;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

// SAFETY: every call is passed to the system allocator unchanged; the
// counters are only statistics.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            INSTALLED.store(true, Ordering::Relaxed);
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let grow = new_size - layout.size();
                let now = CURRENT.fetch_add(grow, Ordering::Relaxed) + grow;
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

impl PeakAlloc {
    /// Whether the running binary counts its allocations.
    pub fn installed() -> bool {
        INSTALLED.load(Ordering::Relaxed)
    }

    /// Starts a measurement: returns the bytes allocated now.
    pub fn reset() -> usize {
        let now = CURRENT.load(Ordering::Relaxed);
        PEAK.store(now, Ordering::Relaxed);
        now
    }

    /// The peak since `reset`, over `base`.
    pub fn peak_over(base: usize) -> usize {
        PEAK.load(Ordering::Relaxed).saturating_sub(base)
    }
}

/// SplitMix64: small, fast, and the same sequence for the same seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Fragments that mean something to YAML, to the policy grammar or to
/// Kubernetes objects: mutations built from them reach deeper than random
/// bytes.
const TOKENS: &[&str] = &[
    "&a ",
    "*a",
    "<<: *a",
    "!!str ",
    "!!binary ",
    "? ",
    ": ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\n",
    "\n  ",
    "\n    - ",
    "'",
    "\"",
    "\\u0000",
    "#",
    "|\n  ",
    ">-\n  ",
    "---\n",
    "...\n",
    "~",
    "null",
    "0.0.0.0/0",
    "::/0",
    "10.0.0.0/33",
    "fd00::/129",
    "1.2.3.4",
    "ffff::1",
    "65535",
    "65536",
    "-1",
    "0",
    "1-65535",
    "80/tcp",
    "icmp/3:4",
    "icmpv6/128",
    "/udp",
    "tcp/",
    "within: ",
    "from: ",
    "to: ",
    "ports: ",
    "groups:\n",
    "rules:\n",
    "name: ",
    "enforce_host: true",
    "namespace: ",
    "pods: ",
    "matchLabels: ",
    "matchExpressions: ",
    "operator: NotIn",
    "values: ",
    "kind: List",
    "items:\n",
    "kind: Pod",
    "kind: Namespace",
    "kind: NetworkPolicy",
    "apiVersion: v1",
    "podSelector: {}",
    "namespaceSelector: ",
    "ipBlock: ",
    "except: ",
    "policyTypes: [Egress]",
    "endPort: ",
    "protocol: SCTP",
    "podIP: ",
    "podIPs: ",
    "nodeName: ",
    "hostNetwork: true",
    "containerPort: ",
    "\u{feff}",
    "\u{202e}",
    "é",
];

/// One mutation of `input` (possibly spliced with `other`), at most
/// `INPUT_MAX` bytes.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = out.len();
        let at = if len == 0 { 0 } else { rng.below(len + 1) };
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = rng.next_u64() as u8;
            }
            2 => out.insert(at, rng.next_u64() as u8),
            3 if len > 0 => {
                let n = 1 + rng.below(len.min(64));
                let start = rng.below(len - n + 1);
                out.drain(start..start + n);
            }
            4 if len > 0 => {
                // Duplicate a span: repeated keys, nested structures.
                let n = 1 + rng.below(len.min(256));
                let start = rng.below(len - n + 1);
                let span = out[start..start + n].to_vec();
                out.splice(at..at, span);
            }
            5 if !other.is_empty() => {
                let n = 1 + rng.below(other.len().min(512));
                let start = rng.below(other.len() - n + 1);
                out.splice(at..at, other[start..start + n].iter().copied());
            }
            6 if len > 0 => {
                // Replace a number's digits: off-by-one and overflow values.
                let i = rng.below(len);
                if out[i].is_ascii_digit() {
                    let d = [b'0', b'9', b'1'][rng.below(3)];
                    out[i] = d;
                    if rng.chance(3) {
                        out.insert(i, b'9');
                    }
                }
            }
            7 if len > 0 => {
                out.truncate(rng.below(len));
            }
            _ => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                out.splice(at..at, t.iter().copied());
            }
        }
    }
    out.truncate(INPUT_MAX);
    out
}

/// A finding: what failed, on which input.
#[derive(Clone, Debug)]
pub struct Finding {
    pub target: Target,
    /// The kind of failure (`panic`, `slow`, `memory`, `verdict`, ...), the
    /// first word of `detail`: minimising keeps it the same.
    pub kind: String,
    pub detail: String,
    pub input: Vec<u8>,
    /// Where it was written, minimised.
    pub saved: Option<PathBuf>,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub execs: u64,
    pub elapsed: Duration,
    pub findings: Vec<Finding>,
    /// The slowest input and the largest memory peak seen.
    pub slowest: Duration,
    pub peak_bytes: usize,
}

thread_local! {
    /// Set while this thread runs a fuzz input: its panics are findings,
    /// reported once by the driver, not printed by the panic hook each time
    /// (minimising alone panics thousands of times).
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs, once, a panic hook that stays silent on fuzzing threads and
/// prints as before everywhere else.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs one input of a byte target under the limits, catching panics.
pub fn run_one(check: fn(&[u8]) -> Result<(), String>, input: &[u8]) -> Result<Stats, String> {
    quiet_panics();
    let base = PeakAlloc::reset();
    let started = Instant::now();
    QUIET.with(|q| q.set(true));
    let result = std::panic::catch_unwind(|| check(input));
    QUIET.with(|q| q.set(false));
    let took = started.elapsed();
    let peak = PeakAlloc::peak_over(base);
    match result {
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            return Err(format!("panic: {msg}"));
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(())) => {}
    }
    if took > TIME_LIMIT {
        return Err(format!("slow: {took:?} over the {TIME_LIMIT:?} limit"));
    }
    if peak > MEMORY_LIMIT {
        return Err(format!(
            "memory: {peak} bytes allocated at peak, over the {MEMORY_LIMIT} limit"
        ));
    }
    Ok(Stats { took, peak })
}

/// What one input cost.
pub struct Stats {
    pub took: Duration,
    pub peak: usize,
}

fn kind_of(detail: &str) -> String {
    detail.split(':').next().unwrap_or("").to_owned()
}

/// The smallest input (by deleting spans, then single bytes) that still
/// fails with the same kind; bounded by `attempts` runs.
pub fn minimise(check: fn(&[u8]) -> Result<(), String>, input: &[u8], kind: &str) -> Vec<u8> {
    let fails = |i: &[u8]| run_one(check, i).err().is_some_and(|d| kind_of(&d) == kind);
    let mut best = input.to_vec();
    let mut attempts = 4000;
    let mut chunk = best.len().div_ceil(2).max(1);
    while chunk >= 1 && attempts > 0 {
        let mut i = 0;
        let mut shrunk = false;
        while i < best.len() && attempts > 0 {
            let end = (i + chunk).min(best.len());
            let mut candidate = best.clone();
            candidate.drain(i..end);
            attempts -= 1;
            if fails(&candidate) {
                best = candidate;
                shrunk = true;
            } else {
                i += chunk;
            }
        }
        if !shrunk {
            if chunk == 1 {
                break;
            }
            chunk /= 2;
        }
    }
    best
}

/// The seeds of a byte target: the repository's files of that kind and a
/// few crafted ones.
pub fn corpus(target: Target) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    let dirs: &[&str] = match target {
        Target::Policy => &["examples/localplus", "examples/localplus-cidr"],
        Target::Objects => &["examples/localplus/objects"],
        Target::Packets => &[],
    };
    for d in dirs {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(d))
            .map(|r| r.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.sort();
        for p in entries {
            if p.extension().is_some_and(|e| e == "yaml") {
                if let Ok(bytes) = std::fs::read(&p) {
                    files.push(bytes);
                }
            }
        }
    }
    // A missing directory would silently leave a target to its crafted
    // seeds only.
    assert!(
        target == Target::Packets || !files.is_empty(),
        "no corpus for {}: {dirs:?} moved?",
        target.name()
    );
    files.extend(
        inputs::crafted(target)
            .iter()
            .map(|s| s.as_bytes().to_vec()),
    );
    files.extend(regressions(target).into_iter().map(|(_, b)| b));
    files
}

/// The committed regression inputs of a target: (file, bytes).
pub fn regressions(target: Target) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target.name());
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .map(|r| {
            r.filter_map(Result::ok)
                .map(|e| e.path())
                .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Fuzzes a byte target (policy or objects) for `budget`, from `seed`;
/// findings are minimised and written under `crash_dir/<target>/`.
pub fn run_bytes(target: Target, budget: Duration, seed: u64, crash_dir: &Path) -> Report {
    let check: fn(&[u8]) -> Result<(), String> = match target {
        Target::Policy => check_policy,
        Target::Objects => check_objects,
        Target::Packets => panic!("packets is run by fuzz::packets::run"),
    };
    run_with(target, check, corpus(target), budget, seed, crash_dir)
}

/// `run_bytes` of any check over any corpus (the fuzzer's own test plants a
/// bug this way).
pub fn run_with(
    target: Target,
    check: fn(&[u8]) -> Result<(), String>,
    mut corpus: Vec<Vec<u8>>,
    budget: Duration,
    seed: u64,
    crash_dir: &Path,
) -> Report {
    let mut rng = Rng::new(seed);
    let mut report = Report::default();
    let started = Instant::now();
    while started.elapsed() < budget {
        let a = rng.below(corpus.len());
        let b = rng.below(corpus.len());
        let input = mutate(&mut rng, &corpus[a], &corpus[b]);
        report.execs += 1;
        match run_one(check, &input) {
            Ok(s) => {
                report.slowest = report.slowest.max(s.took);
                report.peak_bytes = report.peak_bytes.max(s.peak);
                // Inputs that still parse keep their structure: mutate them
                // further (bounded pool).
                if corpus.len() < 4096 && rng.chance(64) {
                    corpus.push(input);
                }
            }
            Err(detail) => {
                let kind = kind_of(&detail);
                if report
                    .findings
                    .iter()
                    .any(|f| f.kind == kind && f.detail == detail)
                {
                    continue;
                }
                let small = minimise(check, &input, &kind);
                let saved = save(crash_dir, target, &kind, &small);
                report.findings.push(Finding {
                    target,
                    kind,
                    detail,
                    input: small,
                    saved,
                });
            }
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// Writes a finding's input, named by its kind and a hash of its bytes.
pub fn save(crash_dir: &Path, target: Target, kind: &str, input: &[u8]) -> Option<PathBuf> {
    let dir = crash_dir.join(target.name());
    std::fs::create_dir_all(&dir).ok()?;
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    let path = dir.join(format!("{kind}-{hash:016x}.bin"));
    std::fs::write(&path, input).ok()?;
    Some(path)
}
