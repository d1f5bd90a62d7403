//! The sender: `lab_gen` run under BPF_PROG_TEST_RUN in XDP live-frames mode,
//! the way xdp-trafficgen works. The kernel builds `repeat` frames from the
//! one given, runs `lab_gen` on each (which rewrites source address and port)
//! and transmits them out of `ingress_ifindex` (XDP_TX), in batches.
//!
//! One run sends one template; a mix is several templates run in turn in
//! chunks of `SendLimits::chunk` frames.
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aya::maps::{Array, MapData, PerCpuArray, PerCpuValues};
use aya::programs::{ProgramError, TestRun, TestRunAttrs, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfError};

use super::frames::Template;

/// Frames per batch of the live-frames loop (the kernel's default is 64; the
/// veth ring holds 256).
pub const BATCH: u32 = 64;
/// Frames a veth's XDP receive ring holds (VETH_RING_SIZE in the kernel).
pub const VETH_RING: u32 = 256;
/// lab_gen restores this many 8-byte words of the template in every frame.
const TPL_WORDS: usize = 10;
/// Templates lab_gen can mix in one run.
pub const GEN_SLOTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("loading lab-progs: {0}")]
    Load(#[from] EbpfError),
    #[error("{0} templates in one run; lab_gen takes 1 to {GEN_SLOTS}")]
    Templates(usize),
    #[error("lab-progs has no {0}")]
    Missing(&'static str),
    #[error("program {0}: {1}")]
    Program(&'static str, #[source] ProgramError),
    #[error("map {0}: {1}")]
    Map(&'static str, #[source] aya::maps::MapError),
    #[error("BPF_PROG_TEST_RUN (live frames) of {template} out of ifindex {ifindex}: {source}")]
    Send {
        template: &'static str,
        ifindex: u32,
        #[source]
        source: ProgramError,
    },
}

/// How much one `Generator::run` may send: it stops at whichever bound comes
/// first (or when `stop` is set).
#[derive(Clone, Copy, Debug)]
pub struct SendLimits {
    pub max_packets: u64,
    pub max_time: Duration,
    /// Frames per BPF_PROG_TEST_RUN call (one template per call).
    pub chunk: u32,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SendReport {
    /// Frames handed to the kernel per template, in template order.
    pub per_template: Vec<(String, u64)>,
    pub total: u64,
    pub elapsed_s: f64,
}

pub struct Generator {
    ebpf: Ebpf,
}

impl Generator {
    pub fn load() -> Result<Generator, GenError> {
        let mut ebpf = Ebpf::load(netpol_agent::LAB_EBPF)?;
        let prog: &mut Xdp = ebpf
            .program_mut("lab_gen")
            .ok_or(GenError::Missing("lab_gen"))?
            .try_into()
            .map_err(|e| GenError::Program("lab_gen", e))?;
        prog.load().map_err(|e| GenError::Program("lab_gen", e))?;
        Ok(Generator { ebpf })
    }

    /// Sends `count` frames out of `ifindex`, frame `i` built from template
    /// `i % templates.len()` (so one run can be a mix; at most GEN_SLOTS).
    /// The calling thread must be in that interface's namespace.
    pub fn send(
        &mut self,
        templates: &[Template],
        ifindex: u32,
        count: u32,
    ) -> Result<Duration, GenError> {
        let name = templates.first().map(|t| t.name).unwrap_or("no template");
        if templates.is_empty() || templates.len() > GEN_SLOTS {
            return Err(GenError::Templates(templates.len()));
        }
        for (slot, t) in templates.iter().enumerate() {
            let mut words = [0u64; TPL_WORDS];
            for (w, chunk) in words.iter_mut().zip(t.frame.chunks(8)) {
                let mut b = [0u8; 8];
                b[..chunk.len()].copy_from_slice(chunk);
                *w = u64::from_ne_bytes(b);
            }
            self.set("GEN_TPL", slot as u32, words)?;
            self.set("GEN_CFG", slot as u32, t.vary)?;
        }
        self.set("GEN_COUNT", 0, templates.len() as u32)?;
        // Every frame is as long as the longest template; shorter ones are
        // padded (their IP length tells the receiver where they end).
        let frame = templates
            .iter()
            .map(|t| &t.frame)
            .max_by_key(|f| f.len())
            .expect("at least one template");
        let prog: &Xdp = self
            .ebpf
            .program("lab_gen")
            .ok_or(GenError::Missing("lab_gen"))?
            .try_into()
            .map_err(|e| GenError::Program("lab_gen", e))?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex.
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.ctx_in = Some(&ctx);
        opts.repeat = count;
        opts.attrs = TestRunAttrs::new().xdp_live_frames(BATCH);
        let r = prog.test_run(opts).map_err(|source| GenError::Send {
            template: name,
            ifindex,
            source,
        })?;
        Ok(r.duration)
    }

    /// Like `send`, but never more than VETH_RING frames ahead of the receiver:
    /// sends in runs of VETH_RING and waits (up to a second each) until
    /// `received` (a counter of the receiving interface) has grown by what was
    /// sent. Frames XDP_TX'd into a veth whose ring is full are dropped, which
    /// happens when the receiver's NAPI is deferred on a loaded machine; paced
    /// sends lose none, so tests can count exactly. Returns how many arrived.
    pub fn send_paced(
        &mut self,
        templates: &[Template],
        ifindex: u32,
        count: u32,
        received: &dyn Fn() -> u64,
    ) -> Result<u64, GenError> {
        let start = received();
        let mut sent: u64 = 0;
        while sent < count as u64 {
            let n = (count as u64 - sent).min(VETH_RING as u64) as u32;
            self.send(templates, ifindex, n)?;
            sent += n as u64;
            let deadline = Instant::now() + Duration::from_secs(1);
            while received().saturating_sub(start) < sent && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(received().saturating_sub(start))
    }

    fn set<V: aya::Pod>(
        &mut self,
        map: &'static str,
        index: u32,
        value: V,
    ) -> Result<(), GenError> {
        let m = self.ebpf.map_mut(map).ok_or(GenError::Missing(map))?;
        let mut arr: Array<&mut MapData, V> =
            Array::try_from(m).map_err(|e| GenError::Map(map, e))?;
        arr.set(index, value, 0).map_err(|e| GenError::Map(map, e))
    }

    /// Sends the templates (mixed frame by frame) in calls of `limits.chunk`
    /// frames until a bound in `limits` is reached or `stop` is set. The
    /// calling thread must be in `ifindex`'s namespace.
    pub fn run(
        &mut self,
        templates: &[Template],
        ifindex: u32,
        limits: &SendLimits,
        stop: &AtomicBool,
    ) -> Result<SendReport, GenError> {
        let start = Instant::now();
        let mut total: u64 = 0;
        while !stop.load(Ordering::Relaxed)
            && total < limits.max_packets
            && start.elapsed() < limits.max_time
        {
            let n = (limits.max_packets - total).min(limits.chunk as u64) as u32;
            self.send(templates, ifindex, n)?;
            total += n as u64;
        }
        let k = templates.len().max(1) as u64;
        Ok(SendReport {
            per_template: templates
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    (
                        t.name.to_string(),
                        total / k + u64::from((i as u64) < total % k),
                    )
                })
                .collect(),
            total,
            elapsed_s: start.elapsed().as_secs_f64(),
        })
    }
}

/// Sums a per-CPU u64 counter at slot 0.
pub fn sum_percpu(values: &PerCpuValues<u64>) -> u64 {
    values.iter().sum()
}

/// Reads slot 0 of a per-CPU u64 array map.
pub fn read_percpu(ebpf: &Ebpf, name: &'static str) -> Result<u64, GenError> {
    let map = ebpf.map(name).ok_or(GenError::Missing(name))?;
    let arr: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(map).map_err(|e| GenError::Map(name, e))?;
    let v = arr.get(&0, 0).map_err(|e| GenError::Map(name, e))?;
    Ok(sum_percpu(&v))
}
