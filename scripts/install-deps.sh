#!/usr/bin/env bash
# Installs what zgpt needs to build and test on a fresh Debian/Ubuntu machine (idempotent: a
# second run only checks). Needs root or sudo for apt-get. Node packages for the tokenizer
# reference tests (js-tiktoken, tiktoken) go into tests/js/node_modules.
set -euo pipefail
cd "$(dirname "$0")/.."

# slurmctld slurmd slurm-client munge: the Slurm tests (tests/cli/slurm_*.sh) start a cluster of their own
# from these; with systemd, installing them may start Debian's default services, which the tests do not use.
pkgs=(build-essential cmake pkg-config libpcre2-dev libcjson-dev libopenblas-dev libxxhash-dev
      libcurl4-openssl-dev libopenmpi-dev openmpi-bin nodejs npm slurmctld slurmd slurm-client munge
      xxhash clang-format)  # clang-format: tests/style; xxhsum: the tests edit checkpoints as a careful user would (manifest checksums)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm may come with nodejs from another source (e.g. NodeSource): do not ask apt for it then.
if command -v npm >/dev/null 2>&1; then
  missing=("${missing[@]/npm}"); missing=("${missing[@]/nodejs}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -f tests/js/package.json ] && [ ! -d tests/js/node_modules/js-tiktoken ]; then
  echo "install-deps: installing the tokenizer reference packages (npm)"
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
fi
