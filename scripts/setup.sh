#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages foldtron builds and tests with (DESIGN.md's dependency
# table). Idempotent and quiet: packages already installed are skipped. Works as root or through
# sudo. Usage: scripts/setup.sh
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev            # LibTorch (CPU) for tensors and autograd
  libopenblas0-openmp     # an optimized BLAS for it (Debian defaults to the slow reference BLAS)
  libopenmpi-dev openmpi-bin  # processes and CPU collectives (mpirun)
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libfmt-dev
  libsentencepiece-dev sentencepiece  # tokenizers; spm_encode checks ours in the tests
  libicu-dev              # Unicode categories and case mapping (BLEU's intl tokenizer, lowercasing)
  gettext                 # msgfmt: the .mo reader's test compiles a catalog with it
  python3                 # the fault trials (scripts/fault_trials.py) that CTest runs
  libgtest-dev libgmock-dev libbenchmark-dev
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup: all ${#packages[@]} packages are installed"
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  sudo=()
elif command -v sudo >/dev/null; then
  sudo=(sudo)
else
  echo "setup: need root or sudo to install: ${missing[*]}" >&2
  exit 1
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
