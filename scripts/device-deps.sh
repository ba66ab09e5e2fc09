#!/usr/bin/env bash
# Packs zgpt's host-library dependencies (PCRE2, cJSON, OpenBLAS, xxHash) from Debian packages into
# .devdeps/devdeps.tar.xz, for a GPU machine that has CUDA but cannot install packages (no network).
# Carry .devdeps to that machine and run scripts/device-build.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .devdeps && mkdir -p .devdeps/debs
(cd .devdeps/debs && apt-get download libpcre2-dev libpcre2-8-0 libpcre2-posix3 libcjson-dev libcjson1 \
   libopenblas-dev libopenblas0-pthread libopenblas-pthread-dev libopenblas0 libxxhash-dev libxxhash0 libgfortran5)
for f in .devdeps/debs/*.deb; do dpkg -x "$f" .devdeps/root; done
(cd .devdeps/root && rm -rf usr/share/doc usr/share/man usr/bin && find . \( -name '*.a' -o -name 'liblapack*' \) -delete)
tar -C .devdeps/root -cJf .devdeps/devdeps.tar.xz usr
rm -rf .devdeps/root .devdeps/debs
ls -la .devdeps/devdeps.tar.xz
