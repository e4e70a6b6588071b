#!/usr/bin/env bash
# Refresh ci/baseline.json on purpose: replay the sample traces with the same defaults the
# nightly gate uses and store the result. Review the diff and commit it with the change that
# justifies it (a deliberate speed-up, a new trace, a new backend).
#
# The counts tier moves with every change to a pool's code (and with rustc and valgrind): after
# merging allocator work, regenerate with this one command and commit the result.
#
# Usage: ci/update-baseline.sh [OUT_DIR]    (default: target/baseline; keeps the full report)
# Environment: RUNS (default 10), BACKENDS (default: every CPU backend available),
#              COUNTS (default 1; 0 = no counts tier), MIN_SAMPLE_MS (default 200),
#              VALGRIND (path; default: found on PATH, installed with apt-get if possible).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="${1:-target/baseline}"
runs="${RUNS:-10}"
counts="${COUNTS:-1}"

shopt -s nullglob
traces=(workloads/traces/*.csv workloads/traces/*.csv.gz workloads/traces/*.csv.zst)
shopt -u nullglob
if (( ${#traces[@]} == 0 )); then
  echo "update-baseline: no traces in workloads/traces/" >&2
  exit 2
fi

if [[ "$counts" != 0 ]]; then
  # shellcheck source=ci/find-valgrind.sh
  source ci/find-valgrind.sh
  find_valgrind || exit 2
fi

cargo build --release --locked --bin replay
replay="${CARGO_TARGET_DIR:-target}/release/replay"

args=(--runs "$runs" --json --quiet --out "$out" --min-sample-ms "${MIN_SAMPLE_MS:-200}")
if [[ "$counts" != 0 ]]; then
  args+=(--counts)
fi
if [[ -n "${BACKENDS:-}" ]]; then
  args+=(--backends "$BACKENDS")
fi
tmp="$(mktemp ci/.baseline.XXXXXX.json)"
trap 'rm -f "$tmp"' EXIT
"$replay" "${args[@]}" "${traces[@]}" > "$tmp"
# A baseline must be readable by the gate: compare it with itself (exit 0 expected).
"$replay" compare "$tmp" "$tmp" > /dev/null
mv "$tmp" ci/baseline.json
trap - EXIT
echo "update-baseline: wrote ci/baseline.json (${#traces[@]} traces, $runs runs; full report in $out)"
