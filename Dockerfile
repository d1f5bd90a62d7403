# syntax=docker/dockerfile:1
#
# netpol-agent container image.
#   docker build -t ghcr.io/localplus/netpol-agent:0.1.0 .
#   docker push ghcr.io/localplus/netpol-agent:0.1.0
# The DaemonSet gets the tag from deploy/base/kustomization.yaml (`images:`).
#
# The runtime stage copies its whole root file system from the stage named by
# ROOTFS: the builder by default. The container test (tests/tests/container.rs)
# builds this file with ROOTFS set to an image holding the same /out/rootfs,
# made by the same deploy/image/rootfs.sh from a locally built binary, because
# its machines can pull no base image.
ARG ROOTFS=builder

# --- builder: the project's own toolchain setup, then a release build -------
# Debian 12, because `cargo xtask setup` installs the eBPF toolchain from
# Debian 12 packages (rustc-web with its library source, LLVM 22;
# docs/design.md section 4), exactly as on the development machines and in CI.
FROM debian:12 AS builder

# The userspace toolchain pinned in rust-toolchain.toml (the test checks they
# agree).
ARG RUST_TOOLCHAIN=1.95.0
ENV DEBIAN_FRONTEND=noninteractive \
    PATH=/root/.cargo/bin:$PATH \
    CARGO_TERM_COLOR=never

RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends ca-certificates curl build-essential \
 && curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
      | sh -s -- -y --profile minimal --default-toolchain "$RUST_TOOLCHAIN" \
      --component rustfmt --component clippy \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# Setup is idempotent: Debian packages, the bpf-debian toolchain link,
# bpf-linker. No bpffs mount: a build container may not mount, and nothing
# runs the agent here.
RUN NETPOL_SETUP_NO_BPFFS=1 cargo xtask setup

# agent/build.rs builds the eBPF programs (bpfel-unknown-none) and embeds them
# in the binary. rootfs.sh then lays out the runtime's root file system: the
# binary and exactly the libraries ldd says it loads.
RUN cargo build --release --locked -p netpol-agent \
 && install -D -m 0755 target/release/netpol-agent /out/netpol-agent \
 && /out/netpol-agent --version \
 && sh deploy/image/rootfs.sh /out/netpol-agent /out/rootfs

FROM ${ROOTFS} AS rootfs

# --- runtime: from scratch ----------------------------------------------------
# The binary, glibc's libraries it links (ldd: libc, libm, libgcc_s and the
# loader) from the builder's Debian 12, and nothing else: no shell, no
# package manager, the least to exploit in a process that holds CAP_BPF and
# CAP_NET_ADMIN in the host network namespace. Debug with `kubectl debug`
# and another image.
FROM scratch AS runtime

COPY --from=rootfs /out/rootfs/ /

# Root, on purpose: BPF needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON in the
# effective set, which Kubernetes (no ambient capabilities) grants only to
# uid 0; the pins under /sys/fs/bpf are root-owned 0700 too. The DaemonSet
# drops every other capability.
USER 0:0
ENTRYPOINT ["/usr/local/bin/netpol-agent"]
CMD ["--help"]

LABEL org.opencontainers.image.title="netpol-agent" \
      org.opencontainers.image.description="eBPF network policy enforcement agent for LOCAL-PLUS" \
      org.opencontainers.image.licenses="Apache-2.0"
