//! The deployment artefacts, checked offline: the installs of deploy/ as
//! `kubectl kustomize` renders them (deploy/base, deploy/overlays/localplus,
//! deploy/uninstall) against the Kubernetes schemas (kubernetes-validate,
//! strict), what each holds, the DaemonSet's scheduling, privileges, mounts
//! and probes, its settings against the agent's real CLI, the overlay's
//! policy against the example it copies, the monitoring bundle
//! (deploy/monitoring) with promtool, the Dockerfile against the build, the
//! Vagrantfile and tests/e2e scripts for syntax; and, on the real kernel,
//! that the DaemonSet's capabilities are exactly what the agent needs.
//!
//! Modules: `support` (repository paths, the tools the checks need, YAML read
//! as JSON) and `kustomize` (the rendered installs and the agent's settings)
//! serve the tests, grouped by artefact: `schemas`, `wiring`, `daemonset`,
//! `rbac`, `agent_cli`, `monitoring`, `dockerfile`, `vagrant` and
//! `capabilities`.

mod agent_cli;
mod capabilities;
mod daemonset;
mod dockerfile;
mod kustomize;
mod monitoring;
mod rbac;
mod schemas;
mod support;
mod vagrant;
mod wiring;

/// The Kubernetes version the manifests are validated against (the kind node
/// image of tests/e2e/kind.sh runs the same minor version).
pub const K8S_VERSION: &str = "1.33.0";
/// Where `cargo xtask setup` installs kubernetes-validate (and its PyYAML,
/// which these tests use to read YAML).
pub const VENV: &str = "/opt/netpol-agent-dev/venv";
