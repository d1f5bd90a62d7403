//! One loaded datapath, and the checks a test runs frames through.

use std::cell::{Cell, RefCell};

use agent_common::{is_pod_iface, SourceKey};

use netpol_agent::datapath::{Datapath, LoadOptions};
use netpol_agent::policy::{CompileOptions, Compiled};

use super::want::{show_counts, tc_action_name, xdp_action_name, Counts, Hook, Want};
use super::{compiled, small_maps, TC_ACT_SHOT, TC_ACT_UNSPEC, XDP_DROP, XDP_PASS};
use crate::packet::{hex, Packet};
use crate::require_root;

/// One loaded datapath and the test's name, for failure messages.
///
/// Wrong verdicts are collected rather than raised at once, so one test run
/// shows every frame judged wrongly; the test fails when the bench is dropped
/// (at the end of the test) with all of them, in order.
///
/// A test opens one with `let Some(b) = Bench::new(test, BASE) else { return };`
/// (`None`: not root, skipped), then calls `b.xdp(scenario, &packet, want)` or
/// `b.tc(...)` per frame; tests/README.md has a full example.
pub struct Bench {
    pub test: &'static str,
    pub dp: Datapath,
    failures: RefCell<Vec<String>>,
    /// The interface XDP frames enter on (`xdp_md.ingress_ifindex`); `None`:
    /// the kernel's default for test runs, loopback.
    ingress: Cell<Option<u32>>,
}

impl std::ops::Drop for Bench {
    fn drop(&mut self) {
        let failures = self.failures.take();
        if !failures.is_empty() && !std::thread::panicking() {
            panic!(
                "{}: {} check(s) failed:\n\n{}",
                self.test,
                failures.len(),
                failures.join("\n\n")
            );
        }
    }
}

impl Bench {
    /// The datapath with `yaml` applied, or `None` when not root (skip).
    pub fn new(test: &'static str, yaml: &str) -> Option<Self> {
        Self::with(test, yaml, &small_maps(), &CompileOptions::default())
    }

    /// As `new`, with the map sizes and compile options the test chooses.
    pub fn with(
        test: &'static str,
        yaml: &str,
        load: &LoadOptions,
        opts: &CompileOptions,
    ) -> Option<Self> {
        if !require_root() {
            return None;
        }
        let dp = Datapath::load(load).unwrap_or_else(|e| {
            panic!("{test}: loading the datapath: {:#}", anyhow::Error::from(e))
        });
        let mut bench = Self {
            test,
            dp,
            failures: RefCell::default(),
            ingress: Cell::new(None),
        };
        bench.apply(yaml, opts);
        Some(bench)
    }

    /// Makes `yaml` the live policy; returns the new generation.
    pub fn apply(&mut self, yaml: &str, opts: &CompileOptions) -> u32 {
        let c = compiled(self.test, yaml, opts);
        self.apply_compiled(&c)
    }

    /// Makes an already compiled policy live; returns the new generation.
    pub fn apply_compiled(&mut self, c: &Compiled) -> u32 {
        let test = self.test;
        self.dp
            .apply(c)
            .unwrap_or_else(|e| panic!("{test}: applying the policy: {:#}", anyhow::Error::from(e)))
    }

    /// Makes later XDP frames enter on `ifindex` (which must exist in the
    /// test's network namespace: loopback, 1, always does).
    pub fn ingress_on(&self, ifindex: Option<u32>) {
        self.ingress.set(ifindex);
    }

    pub fn counts(&self) -> Counts {
        let rows = self
            .dp
            .counters()
            .unwrap_or_else(|e| panic!("{}: reading counters: {e}", self.test));
        rows.into_iter()
            .map(|r| ((r.traffic, r.verdict, r.reason), (r.packets, r.bytes)))
            .collect()
    }

    /// The side the aggregates count a frame of `hook` on: the hook's
    /// direction, reversed when the interface it runs on (loopback, the
    /// kernel's default for test runs, or the XDP frame's `ingress_on`) is a
    /// pod interface in `SOURCES`.
    pub fn traffic(&self, hook: Hook) -> &'static str {
        const LOOPBACK: u32 = 1;
        let ifindex = match hook {
            Hook::Xdp => self.ingress.get().unwrap_or(LOOPBACK),
            Hook::Tc | Hook::TcIngress => LOOPBACK,
        };
        let pod = self
            .dp
            .sources()
            .unwrap_or_else(|e| panic!("{}: reading SOURCES: {e}", self.test))
            .get(&SourceKey::iface(ifindex))
            .is_some_and(|v| is_pod_iface(v.kind));
        match (hook.direction(), pod) {
            ("ingress", false) | ("egress", true) => "ingress",
            _ => "egress",
        }
    }

    pub fn ct(&self) -> (usize, usize) {
        self.dp
            .ct_counts()
            .unwrap_or_else(|e| panic!("{}: reading conntrack: {e}", self.test))
    }

    /// Runs `frame` through `hook`; `Err` describes every way it differs from `want`.
    pub fn check(
        &self,
        hook: Hook,
        scenario: &str,
        frame: &[u8],
        want: Want,
    ) -> Result<(), String> {
        let before = self.counts();
        let (ok_action, got, want_name) = match hook {
            Hook::Xdp => {
                let run = self.dp.xdp_test_run_on(frame, self.ingress.get(), 1);
                let (action, _) = run.map_err(|e| {
                    format!(
                        "{}: {scenario}: XDP test run failed: {e:?}\n{}",
                        self.test,
                        hex(frame)
                    )
                })?;
                let want_action = if want.passes() { XDP_PASS } else { XDP_DROP };
                (
                    action == want_action,
                    xdp_action_name(action),
                    xdp_action_name(want_action),
                )
            }
            Hook::Tc | Hook::TcIngress => {
                let run = if hook == Hook::Tc {
                    self.dp.tc_test_run(frame)
                } else {
                    self.dp.tc_ingress_test_run(frame)
                };
                let action = run.map_err(|e| {
                    format!(
                        "{}: {scenario}: TC test run failed: {e:?}\n{}",
                        self.test,
                        hex(frame)
                    )
                })?;
                let want_action = if want.passes() {
                    TC_ACT_UNSPEC
                } else {
                    TC_ACT_SHOT
                };
                (
                    action == want_action,
                    tc_action_name(action),
                    tc_action_name(want_action),
                )
            }
        };
        let after = self.counts();
        let mut delta = Counts::new();
        for (k, &(p, b)) in &after {
            let (p0, b0) = before.get(k).copied().unwrap_or((0, 0));
            if (p, b) != (p0, b0) {
                delta.insert(*k, (p - p0, b - b0));
            }
        }
        let key = (self.traffic(hook), want.verdict(), want.reason());
        let want_delta = Counts::from([(key, (1, frame.len() as u64))]);
        if ok_action && delta == want_delta {
            return Ok(());
        }
        Err(format!(
            "{test}: {scenario}\n  want: {want_name}, counted {dir} {verdict} {why}\n  got:  {got}, counter change:\n{delta}  frame ({len} bytes):\n{frame}\n  all counters:\n{all}",
            test = self.test,
            dir = key.0,
            verdict = key.1,
            why = key.2,
            delta = show_counts(&delta),
            len = frame.len(),
            frame = hex(frame),
            all = show_counts(&after),
        ))
    }

    /// Keeps a failed check for the end of the test.
    pub fn record(&self, r: Result<(), String>) {
        if let Err(e) = r {
            self.failures.borrow_mut().push(e);
        }
    }

    pub fn xdp_bytes(&self, scenario: &str, frame: &[u8], want: Want) {
        self.record(self.check(Hook::Xdp, scenario, frame, want));
    }

    pub fn xdp(&self, scenario: &str, p: &Packet, want: Want) {
        self.xdp_bytes(scenario, &p.build(), want);
    }

    pub fn tc(&self, scenario: &str, p: &Packet, want: Want) {
        self.record(self.check(Hook::Tc, scenario, &p.build(), want));
    }

    /// `p` through the TCX ingress program, entering loopback.
    pub fn tc_ingress(&self, scenario: &str, p: &Packet, want: Want) {
        self.record(self.check(Hook::TcIngress, scenario, &p.build(), want));
    }

    pub fn assert_ct(&self, scenario: &str, want: (usize, usize)) {
        let what = format!("{scenario}: conntrack entries (IPv4, IPv6)");
        self.same(&what, self.ct(), want);
    }

    /// Records a failure unless `got == want`.
    pub fn same<T: PartialEq + std::fmt::Debug>(&self, what: &str, got: T, want: T) {
        if got != want {
            let msg = format!("{}: {what}\n  want {want:?}\n  got  {got:?}", self.test);
            self.record(Err(msg));
        }
    }
    /// Zeroes the first `words` entries of the array of words `map`, behind
    /// the agent's back (a test showing the datapath reads a filter).
    pub fn zero_words(&mut self, map: &str, words: u32) {
        let test = self.test;
        let mut array: aya::maps::Array<&mut aya::maps::MapData, u64> = aya::maps::Array::try_from(
            self.dp
                .ebpf_mut()
                .map_mut(map)
                .unwrap_or_else(|| panic!("{test}: no map {map}")),
        )
        .unwrap_or_else(|e| panic!("{test}: {map} is not an array of words: {e}"));
        for i in 0..words {
            array
                .set(i, 0, 0)
                .unwrap_or_else(|e| panic!("{test}: zeroing {map}[{i}]: {e}"));
        }
    }
}
