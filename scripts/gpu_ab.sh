#!/usr/bin/env bash
# On the GPU machine: a change measured against its base in one call (machines differ by about
# 2%, docs/performance.md, so step times of different calls do not compare). Builds `foldtron` from
# the tree (A, unless A_BINARY names a binary an earlier call brought back), then again with the
# patch B_PATCH applied (B: the base, e.g. the change switched off; the tree is restored after),
# and runs ROUNDS rounds of A then B with the same training flags, one GPU. Prints each run's mean
# step after the first and each side's median; the logs go to ab.tgz.
# B_BINARY instead of B_PATCH runs a binary an earlier call built from the base (no second build).
# TRACE_STEP=N traces step N of each side's first round with the torch profiler and summarizes it
# (bench/trace_summary.py: {a,b}_trace.txt beside ab.txt; the gzipped traces go in ab.tgz); that
# round's mean step then includes the traced step, so compare the medians of several rounds.
# Usage: B_PATCH=bench/ab/FILE.diff scripts/gpu_ab.sh OUT ROUNDS train-flags...
set -uo pipefail
cd "$(dirname "$0")/.."
out=$1 rounds=$2
shift 2
OMP_NUM_THREADS=8 source scripts/gpu_env.sh
if [[ -n ${B_BINARY:-} ]]; then
  [[ -f $B_BINARY ]] || { echo "gpu_ab.sh: B_BINARY '$B_BINARY' is not a file (a foldtron binary of the base)" >&2; exit 2; }
else
  [[ -f ${B_PATCH:-} ]] ||
    { echo "gpu_ab.sh: B_PATCH '${B_PATCH:-}' is not a file: name a patch (bench/ab/*.diff), or B_BINARY a binary" >&2; exit 2; }
fi
mkdir -p "$out/ab" build-gpu/ab
build() {  # build NAME: foldtron from the tree as it is now, copied to build-gpu/ab/NAME; a failure ends the run
  rm -f build-gpu/bin/foldtron
  BUILD_TARGETS=foldtron GPU_CMAKE_ARGS="-DFOLDTRON_WERROR=OFF" scripts/gpu_build.sh -R '^$' \
    > "$out/ab/build_$1.log" 2>&1
  local rc=$?
  echo "== build $1: rc=$rc"
  [[ $rc -eq 0 ]] || { tail -30 "$out/ab/build_$1.log"; exit 1; }
  cp build-gpu/bin/foldtron "build-gpu/ab/$1"
}
take() {  # take BINARY NAME: a binary brought along (or left by an earlier A/B of the call) as side NAME
  [[ $1 -ef build-gpu/ab/$2 ]] || cp "$1" "build-gpu/ab/$2" || exit 1
  chmod +x "build-gpu/ab/$2"
}
if [[ -n ${A_BINARY:-} ]]; then
  take "$A_BINARY" a
else
  build a
fi
if [[ -n ${B_BINARY:-} ]]; then
  take "$B_BINARY" b
else
  patch -p1 --forward < "$B_PATCH" > "$out/ab/patch.log" || { cat "$out/ab/patch.log"; exit 1; }
  trap 'patch -p1 --reverse --silent < "$B_PATCH"' EXIT  # the tree as it was, however B's build ends
  build b
  patch -p1 --reverse --silent < "$B_PATCH" && trap - EXIT
fi
: > "$out/ab.txt"
for ((i = 1; i <= rounds; ++i)); do
  for side in a b; do
    log=$out/ab/${side}_$i.log trace=()
    [[ -n ${TRACE_STEP:-} && $i -eq 1 ]] &&
      trace=(--set "logging.profile_step=$TRACE_STEP" --set "logging.profile_file=$out/ab/${side}_trace.json")
    step 240 $mpi -np 1 "build-gpu/ab/$side" train "$@" "${trace[@]}" > "$log" 2>&1 < /dev/null
    if [[ ${#trace[@]} -gt 0 && -f $out/ab/${side}_trace.json ]]; then
      python3 bench/trace_summary.py "$out/ab/${side}_trace.json" --top 25 > "$out/${side}_trace.txt" 2>&1
      gzip -f "$out/ab/${side}_trace.json"
    fi
    seconds=$(grep -o "mean step after the first: [0-9.]*" "$log" | tail -1 | grep -o "[0-9.]*$")
    echo "$side $i ${seconds:-failed}" | tee -a "$out/ab.txt"
  done
done
for side in a b; do
  median=$(awk -v s="$side" '$1 == s && $3 != "failed" {print $3}' "$out/ab.txt" | sort -n |
    awk '{v[NR] = $1} END {if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}')
  echo "$side median: ${median:-none}" | tee -a "$out/ab.txt"
done
tar czf "$out/ab.tgz" -C "$out" ab && rm -rf "$out/ab"
exit $status
