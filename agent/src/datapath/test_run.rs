//! BPF_PROG_TEST_RUN on the loaded programs: tests and benchmarks feed them
//! crafted frames without attaching anything.
use std::time::Duration;

use agent_common::prog_names;
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};

use super::{error::*, handles::*, Datapath};

impl Datapath {
    /// Runs the XDP program once on `frame` (BPF_PROG_TEST_RUN); returns the
    /// action. The kernel presents it as received on loopback (ifindex 1).
    pub fn xdp_test_run(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        self.xdp_test_run_on(frame, None, repeat)
    }

    /// As `xdp_test_run`, as if `frame` entered the interface `ifindex`
    /// (`xdp_md.ingress_ifindex`; it must exist in the caller's network
    /// namespace, queue 0).
    pub fn xdp_test_run_on(
        &self,
        frame: &[u8],
        ifindex: Option<u32>,
        repeat: u32,
    ) -> Result<(u32, Duration)> {
        let xdp: &Xdp = program_ref(&self.ebpf, prog_names::XDP)?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex. The kernel wants data 0 and
        // data_end the frame's length.
        let ctx: Vec<u8> = [0, frame.len() as u32, 0, ifindex.unwrap_or(0), 0, 0]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        if ifindex.is_some() {
            opts.ctx_in = Some(&ctx);
        }
        opts.repeat = repeat;
        let r = xdp
            .test_run(opts)
            .map_err(|source| DatapathError::Program {
                name: prog_names::XDP,
                source,
            })?;
        Ok((r.return_value, r.duration))
    }

    /// Runs the TC egress program once on `frame`; returns the TC action (as
    /// i32). The kernel presents it as leaving loopback (ifindex 1).
    pub fn tc_test_run(&self, frame: &[u8]) -> Result<i32> {
        self.classifier_test_run(prog_names::TC, frame)
    }

    /// Runs the TCX ingress program once on `frame`, as if it entered
    /// loopback (ifindex 1); returns the TC action (as i32).
    pub fn tc_ingress_test_run(&self, frame: &[u8]) -> Result<i32> {
        self.classifier_test_run(prog_names::TC_INGRESS, frame)
    }

    fn classifier_test_run(&self, name: &'static str, frame: &[u8]) -> Result<i32> {
        let tc: &SchedClassifier = program_ref(&self.ebpf, name)?;
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        let r = tc
            .test_run(opts)
            .map_err(|source| DatapathError::Program { name, source })?;
        Ok(r.return_value as i32)
    }
}
