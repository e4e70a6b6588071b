#!/usr/bin/env bash
# Refresh ci/baseline.json on purpose: replay the sample traces with the same defaults the
# nightly gate uses and store the result. Review the diff and commit it with the change that
# justifies it (a deliberate speed-up, a new trace, a new backend).
#
# Usage: ci/update-baseline.sh [OUT_DIR]    (default: target/baseline; keeps the full report)
# Environment: RUNS (default 10), BACKENDS (default: every CPU backend available).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="${1:-target/baseline}"
runs="${RUNS:-10}"

shopt -s nullglob
traces=(workloads/traces/*.csv workloads/traces/*.csv.gz workloads/traces/*.csv.zst)
shopt -u nullglob
if (( ${#traces[@]} == 0 )); then
  echo "update-baseline: no traces in workloads/traces/" >&2
  exit 2
fi

cargo build --release --locked --bin replay
replay="${CARGO_TARGET_DIR:-target}/release/replay"

args=(--runs "$runs" --json --quiet --out "$out")
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
