//! BPF_PROG_TEST_RUN on the loaded programs: tests and benchmarks feed them
//! crafted frames without attaching anything.
use std::time::Duration;

use agent_common::prog_names;
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};

use super::{error::*, handles::*, Datapath};

impl Datapath {
    /// Runs the XDP program once on `frame` (BPF_PROG_TEST_RUN); returns the action.
    pub fn xdp_test_run(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        let xdp: &Xdp = program_ref(&self.ebpf, prog_names::XDP)?;
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = repeat;
        let r = xdp
            .test_run(opts)
            .map_err(|source| DatapathError::Program {
                name: prog_names::XDP,
                source,
            })?;
        Ok((r.return_value, r.duration))
    }

    /// Runs the TC program once on `frame`; returns the TC action (as i32).
    pub fn tc_test_run(&self, frame: &[u8]) -> Result<i32> {
        let tc: &SchedClassifier = program_ref(&self.ebpf, prog_names::TC)?;
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        let r = tc.test_run(opts).map_err(|source| DatapathError::Program {
            name: prog_names::TC,
            source,
        })?;
        Ok(r.return_value as i32)
    }
}
