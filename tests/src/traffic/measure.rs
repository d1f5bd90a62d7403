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
