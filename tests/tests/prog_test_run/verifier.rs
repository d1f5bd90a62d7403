//! The verifier's budget: every attached program verifies well inside the
//! kernel's limit, so a kernel whose verifier walks the same code a little
//! differently still loads it. Inlined, the identity and rule lookups took
//! the TCX ingress program to 99% of the limit; as global functions (verified
//! once each) they cost every program a fraction of that.
use netpol_agent::datapath::{Datapath, LoadOptions, VERIFIER_LIMIT};
use netpol_tests::require_root;

/// The most a program may use, in percent of the limit.
const MAX_PERCENT: u32 = 70;

#[test]
fn every_program_verifies_well_inside_the_limit() {
    if !require_root() {
        return;
    }
    let dp = Datapath::load(&LoadOptions::default()).expect("loading the datapath");
    let mut over = Vec::new();
    for w in dp.verifier_work() {
        let n = w.instructions.unwrap_or_else(|| {
            panic!(
                "{}: the kernel does not report how many instructions it verified \
                 (bpf_prog_info.verified_insns, Linux >= 5.16)",
                w.program
            )
        });
        eprintln!("{}: {n} instructions verified", w.program);
        if n > VERIFIER_LIMIT / 100 * MAX_PERCENT {
            over.push(format!("{}: {n}", w.program));
        }
    }
    assert!(
        over.is_empty(),
        "programs past {MAX_PERCENT}% of the verifier's {VERIFIER_LIMIT}-instruction limit: {over:?}"
    );
}
