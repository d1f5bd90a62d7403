#!/bin/sh
# rootfs.sh BINARY DIR: the container image's whole root file system in DIR:
# BINARY as /usr/local/bin/netpol-agent and exactly the shared libraries it
# loads (as ldd resolves them, the dynamic loader included), each at the path
# ldd names, copied as regular files. Nothing else: no shell, no package
# manager, nothing to exploit beside the agent in a process that holds CAP_BPF
# and CAP_NET_ADMIN. Used by the Dockerfile's builder stage and by the
# container test, so the image tested is the image shipped.
set -eu
bin=$1
out=$2
[ -x "$bin" ] || { echo "rootfs.sh: $bin is not an executable" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/tmp" "$out/run" "$out/proc" "$out/sys" "$out/dev" "$out/etc"
install -m 0755 "$bin" "$out/usr/local/bin/netpol-agent"
# `ldd` lines: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and
# "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file.
libs=$(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
[ -n "$libs" ] || { echo "rootfs.sh: ldd found no libraries for $bin" >&2; exit 1; }
for lib in $libs; do
	mkdir -p "$out$(dirname "$lib")"
	cp -L "$lib" "$out$lib"
done
# glibc reads these when present; an empty passwd/group would hide uid 0's
# name only, but some libraries look root up.
printf 'root:x:0:0:root:/:/usr/local/bin/netpol-agent\n' >"$out/etc/passwd"
printf 'root:x:0:\n' >"$out/etc/group"
chmod 1777 "$out/tmp"
