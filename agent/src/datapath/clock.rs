//! The kernel clock conntrack entries are stamped with (jiffies), and its
//! rate, measured rather than assumed.
use std::time::Duration;

use agent_common::{map_names, prog_names};
use aya::{
    maps::{Array, MapData},
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};

use super::{error::*, handles::*, Datapath};

pub(super) fn to_jiffies(d: Duration, hz: u64) -> u64 {
    (d.as_secs_f64() * hz as f64).ceil() as u64
}

/// The kernel's jiffies, read by running the clock program once.
pub(super) fn read_jiffies(ebpf: &Ebpf) -> Result<u64> {
    let clock: &Xdp = program_ref(ebpf, prog_names::CLOCK)?;
    let frame = [0u8; 64];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(&frame);
    clock
        .test_run(opts)
        .map_err(|source| DatapathError::Program {
            name: prog_names::CLOCK,
            source,
        })?;
    let map: Array<&MapData, u64> = typed_map_ref(ebpf, map_names::CLOCK)?;
    map.get(&0, 0).map_err(map_err(map_names::CLOCK))
}

/// CONFIG_HZ, measured (as Cilium does): jiffies elapsed over a known
/// interval, rounded to the nearest value a kernel can be built with.
pub(super) fn measure_hz(ebpf: &Ebpf) -> Result<u64> {
    let (j0, t0) = (read_jiffies(ebpf)?, std::time::Instant::now());
    std::thread::sleep(Duration::from_millis(60));
    let (j1, dt) = (read_jiffies(ebpf)?, t0.elapsed().as_secs_f64());
    let rate = j1.saturating_sub(j0) as f64 / dt;
    Ok([100u64, 250, 300, 1000]
        .into_iter()
        .min_by(|a, b| {
            (*a as f64 - rate)
                .abs()
                .total_cmp(&(*b as f64 - rate).abs())
        })
        .unwrap_or(1000))
}

impl Datapath {
    /// The clock conntrack entries are stamped with.
    pub fn jiffies(&self) -> Result<u64> {
        read_jiffies(&self.ebpf)
    }
}
