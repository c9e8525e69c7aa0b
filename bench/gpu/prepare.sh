#!/usr/bin/env bash
# Run HERE (the development machine, with Debian's apt), before a device call: fetches the CPU
# backend's dependency (OpenBLAS, pthread build, and its libgfortran) as Debian .debs with
# `apt-get download` and unpacks them with `dpkg -x` into bench/gpu/deps/root (git-ignored).
# The device call then carries bench/gpu/deps (carry: ["bench/gpu/deps"]); run.sh points CMake
# and the loader at it. Nothing is installed into / here or there.
set -euo pipefail
cd "$(dirname "$0")"
pkgs=(libopenblas0-pthread libopenblas-pthread-dev libgfortran5)
rm -rf deps
mkdir -p deps/debs deps/root
(cd deps/debs && apt-get download "${pkgs[@]}" 2>&1 | grep -v "unsandboxed as root")
for f in deps/debs/*.deb; do dpkg -x "$f" deps/root; done
# keep only what the build and the run need (the carry limit is 64 MiB for the whole tree)
rm -rf deps/root/usr/share
find deps/root \( -name 'liblapack*' -o -name 'libblas*' -o -name '*.a' \) -delete
find deps/root -type d \( -name cmake -o -name pkgconfig \) -prune -exec rm -rf {} +
rm -rf deps/debs
lib=deps/root/usr/lib/x86_64-linux-gnu
test -f "$lib/openblas-pthread/libopenblas.so.0" || { echo "prepare.sh: libopenblas.so.0 missing after unpacking" >&2; exit 1; }
test -f deps/root/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h || { echo "prepare.sh: cblas.h missing" >&2; exit 1; }
# the dev package's libopenblas.so is an absolute symlink into /usr (alternatives): point it here
ln -sf libopenblas.so.0 "$lib/openblas-pthread/libopenblas.so"
du -sh deps
echo "prepare.sh: OK (${pkgs[*]}) -> bench/gpu/deps/root"
