//! What the receiving side saw: counting XDP programs, interface counters,
//! and CPU time.
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;

use super::gen::{read_percpu, GenError};
use super::topo::link_packets;
use crate::netns::Netns;

/// `count_drop` or `count_pass` of lab-progs attached (native XDP) to one
/// interface; detached when dropped (the attachment is a bpf_link).
pub struct CountingProg {
    ebpf: Ebpf,
}

impl CountingProg {
    pub fn attach(ns: &Netns, ifname: &str, prog: &'static str) -> Result<CountingProg, GenError> {
        let mut ebpf = Ebpf::load(netpol_agent::LAB_EBPF)?;
        let xdp: &mut Xdp = ebpf
            .program_mut(prog)
            .ok_or(GenError::Missing("counting program"))?
            .try_into()
            .map_err(|e| GenError::Program(prog, e))?;
        xdp.load().map_err(|e| GenError::Program(prog, e))?;
        // Attach resolves the name and talks netlink in the current thread's
        // namespace, so do it from a thread inside `ns`.
        ns.run_in(|| xdp.attach(ifname, XdpMode::Driver).map(|_| ()))
            .map_err(|e| GenError::Program(prog, e))?;
        Ok(CountingProg { ebpf })
    }

    /// Packets the program has seen since it was loaded.
    pub fn count(&self) -> Result<u64, GenError> {
        read_percpu(&self.ebpf, "RX_COUNT")
    }
}

/// Receive counter of an interface (a veth counts every frame its XDP
/// program or NAPI handled, dropped or not).
pub struct LinkStats;

impl LinkStats {
    pub fn rx_packets(ns: &Netns, ifname: &str) -> u64 {
        link_packets(ns, ifname).0
    }
}

/// Machine-wide CPU time from /proc/stat, in clock ticks.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTimes {
    pub busy: u64,
    pub softirq: u64,
    pub total: u64,
}

impl CpuTimes {
    pub fn now() -> CpuTimes {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let Some(line) = text.lines().next() else {
            return CpuTimes::default();
        };
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let get = |i: usize| f.get(i).copied().unwrap_or(0);
        let total: u64 = f.iter().take(8).sum();
        CpuTimes {
            busy: total - get(3) - get(4),
            softirq: get(6),
            total,
        }
    }
}

/// utime + stime of one thread of this process, in clock ticks.
pub fn thread_cpu_ticks(tid: i32) -> u64 {
    let path = format!("/proc/self/task/{tid}/stat");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, utime 14.
    let Some(rest) = text.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    num(11) + num(12)
}

pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// `kernel.bpf_stats_enabled` switched on for as long as the guard lives (it
/// is machine-wide and costs two clock reads per program run, so only for
/// runs that ask where the time goes), then restored.
pub struct BpfStats {
    prev: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub fn enable() -> std::io::Result<BpfStats> {
        let prev = std::fs::read_to_string(BPF_STATS)?.trim().to_string();
        std::fs::write(BPF_STATS, "1")?;
        Ok(BpfStats { prev })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, &self.prev);
    }
}

/// The XDP program attached to `ifname` (for a libxdp dispatcher, the
/// dispatcher), from netlink.
pub fn xdp_prog_id(ns: &Netns, ifname: &str) -> Option<u64> {
    let out = ns.ip(&["-j", "link", "show", "dev", ifname]);
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v[0]["xdp"]["prog"]["id"].as_u64()
}

/// (run_time_ns, run_cnt) of a program; both stay 0 unless BpfStats is on.
pub fn prog_run_stats(id: u64) -> Option<(u64, u64)> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "prog", "show", "id", &id.to_string()])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some((
        v["run_time_ns"].as_u64().unwrap_or(0),
        v["run_cnt"].as_u64().unwrap_or(0),
    ))
}
