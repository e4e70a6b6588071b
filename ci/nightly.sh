#!/usr/bin/env bash
# Nightly performance gate: build in release, replay the sample traces now and judge them
# against ci/baseline.json in two tiers — instruction counts under valgrind (deterministic,
# exact 1% margin) and wall-clock samples of at least 200 ms (ratios to the `system` backend in
# the same run, A/A stability check first) — and write report.html, summary.md and junit.xml.
#
# Usage: ci/nightly.sh [OUT_DIR]            (default: target/nightly)
# Environment: RUNS (default 10, at least 6), BACKENDS (comma list; default: the baseline's),
#              COUNTS (default 1; 0 = wall-clock tier only), MIN_SAMPLE_MS (default 200),
#              VALGRIND (path; default: found on PATH, installed with apt-get if possible),
#              GATE_ARGS (extra `replay gate` flags, e.g. "--margin-counts 0.02").
# Exit code: the gate's own — 0 pass/inconclusive, 1 regression, 2 usage (or valgrind
# missing), 3 neither tier could decide.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="${1:-target/nightly}"
runs="${RUNS:-10}"
counts="${COUNTS:-1}"
baseline="ci/baseline.json"

if [[ ! -f "$baseline" ]]; then
  echo "nightly: $baseline is missing; create it with ci/update-baseline.sh" >&2
  exit 2
fi

shopt -s nullglob
traces=(workloads/traces/*.csv workloads/traces/*.csv.gz workloads/traces/*.csv.zst)
shopt -u nullglob
if (( ${#traces[@]} == 0 )); then
  echo "nightly: no traces in workloads/traces/" >&2
  exit 2
fi

if [[ "$counts" != 0 ]]; then
  # shellcheck source=ci/find-valgrind.sh
  source ci/find-valgrind.sh
  find_valgrind || exit 2
  echo "nightly: counts tier with $("$VALGRIND" --version)"
fi

cargo build --release --locked --bin replay
replay="${CARGO_TARGET_DIR:-target}/release/replay"

mkdir -p "$out"
args=(gate --baseline "$baseline" --runs "$runs" --out "$out" --junit "$out/junit.xml"
      --min-sample-ms "${MIN_SAMPLE_MS:-200}")
if [[ "$counts" != 0 ]]; then
  args+=(--counts)
fi
if [[ -n "${BACKENDS:-}" ]]; then
  args+=(--backends "$BACKENDS")
fi
# shellcheck disable=SC2206 # GATE_ARGS is split on purpose
extra=(${GATE_ARGS:-})

# The gate's exit code is the job's result: capture it without letting `set -e` stop us
# before the summary is published.
status=0
"$replay" "${args[@]}" "${extra[@]}" "${traces[@]}" | tee "$out/gate.txt" || status=${PIPESTATUS[0]}

if [[ -n "${GITHUB_STEP_SUMMARY:-}" && -f "$out/summary.md" ]]; then
  cat "$out/summary.md" >> "$GITHUB_STEP_SUMMARY"
fi
case "$status" in
  0) echo "nightly: pass (report: $out/report.html)" ;;
  1) echo "nightly: REGRESSION (report: $out/report.html)" >&2 ;;
  3) echo "nightly: no verdict: wall-clock tier unstable and no counts to decide (report: $out/report.html)" >&2 ;;
  *) echo "nightly: gate failed with exit code $status" >&2 ;;
esac
exit "$status"
