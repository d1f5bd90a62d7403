//! The gate every privileged test passes first.

/// True when the test may run (we are root). Off root it skips with a notice,
/// except under CI, where a silent skip would hide that nothing was tested.
pub fn require_root() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "privileged test cannot run: needs root (CI=true, so this fails instead of skipping)"
        );
    }
    eprintln!("skipping privileged test: needs root (network namespaces, eBPF)");
    false
}
